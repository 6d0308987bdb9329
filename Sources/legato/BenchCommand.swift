import ArgumentParser
import Foundation
import Glibc
import LegatoClients
import LegatoCore
import LegatoSegmentLog
import LegatoSystem

/// Drivers for Tools/bench (not part of the product's surface).
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Benchmark drivers used by Tools/bench.",
                                                    shouldDisplay: false, subcommands: [LogAppend.self, LogRead.self])

    struct LogAppend: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "log-append", abstract: "Append to a replicated log; print MB/s.")
        @Option var coordinator: CoordinatorOption
        @Option var replicas: Int = 3
        @Option var total: ByteSize = ByteSize(bytes: 512 << 20)
        @Option var entry: ByteSize = ByteSize(bytes: 4096)
        @Option var batch: Int = 256
        @Option(help: "Segment size.") var segment: ByteSize = ByteSize(bytes: 8 << 20)
        @Option var writer: UInt64 = UInt64.random(in: 1...UInt64.max)
        @Flag var sync = false
        @Flag(help: "Rewrite each batch's payloads before its append.") var freshPayloads = false
        @OptionGroup var secret: SecretOptions

        func run() throws {
            let log = try LogWriter(config: .init(writer: writer, replicas: replicas, segmentBytes: Int(segment.bytes), secret: try secret.load(),
                                                  token: Sys.randomBytes(32), coordinator: coordinator.endpoint))
            defer { log.close() }
            // By default every entry carries one 4 KiB array, hot in the cache like the loopback floor's
            // buffer. With --fresh-payloads each batch's payloads are rewritten before its append
            // (distinct bytes, warm as a checkpoint's freshly read pages are); only appends are timed.
            let size = Int(entry.bytes)
            let shared = [UInt8]((0..<size).map { UInt8(truncatingIfNeeded: $0 * 7) })
            var entries = (0..<batch).map { i in LogEntry(epoch: 1, slab: UInt64(i % 16), payload: shared) }
            let rounds = max(1, Int(total.bytes) / (batch * size))
            var nanos: UInt64 = 0
            for r in 0..<rounds {
                if freshPayloads {
                    for i in entries.indices {
                        entries[i].payload.withUnsafeMutableBytes { p in
                            memset(p.baseAddress!, Int32(truncatingIfNeeded: r &* 31 &+ i), size)
                            if size >= 8 { p.storeBytes(of: UInt64(r * batch + i), as: UInt64.self) }
                        }
                    }
                }
                let t0 = monotonicNanos()
                try log.append(entries)
                nanos += monotonicNanos() - t0
            }
            let t0 = monotonicNanos()
            if sync { try log.sync() }
            nanos += monotonicNanos() - t0
            let seconds = Double(nanos) / 1e9
            try log.closeOpenSegment()
            let bytes = Double(rounds * batch * size)
            print(String(format: "log_append_mbps=%.1f bytes=%.0f seconds=%.3f replicas=%d writer=%llu", bytes / seconds / 1e6, bytes, seconds, replicas, writer))
        }
    }

    struct LogRead: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "log-read",
                                                        abstract: "Read a writer's whole log, every segment from a different replica in parallel; print MB/s.")
        @Option var coordinator: CoordinatorOption
        @Option var writer: UInt64
        @Option var threads: Int = 4
        @OptionGroup var secret: SecretOptions

        func run() throws {
            let s = try secret.load()
            let log = try LogWriter(config: .init(writer: writer, secret: s, token: Sys.randomBytes(32), coordinator: coordinator.endpoint))
            let placement = log.placement
            log.close()
            // The reader restores use: segments spread over threads and replicas (RAMCloud's partitioned
            // recovery reads), each node told which segment it will be asked for next.
            let segments = placement.map { LogReplay.SegmentReplicas(writer: writer, segment: $0.segment, replicas: $0.nodes, epochs: nil) }
            let replay = LogReplay(secret: s, threads: threads)
            let counts = UnsafeMutableBufferPointer<Int>.allocate(capacity: threads)  // per thread: each counts its own
            defer { counts.deallocate() }
            counts.initialize(repeating: 0)
            let started = monotonicNanos()
            try replay.run(segments) { t, _, payload in counts[t] += payload.count }
            let seconds = Double(monotonicNanos() - started) / 1e9
            let bytes = counts.reduce(0, +)
            print(String(format: "log_read_mbps=%.1f bytes=%d seconds=%.3f segments=%d", Double(bytes) / seconds / 1e6, bytes, seconds, segments.count))
        }
    }
}

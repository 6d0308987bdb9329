import ArgumentParser
import Foundation
import Glibc
import LegatoCoordinator
import LegatoCore
import LegatoLog
import LegatoSystem

/// Drivers for Tools/bench (not part of the product's surface).
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "bench", abstract: "Benchmark drivers used by Tools/bench.",
                                                    shouldDisplay: false, subcommands: [LogAppend.self, LogRead.self])

    struct LogAppend: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "log-append", abstract: "Append to a replicated log; print MB/s.")
        @Option var coordinator: Endpoint
        @Option var replicas: Int = 3
        @Option var total: ByteSize = ByteSize(bytes: 512 << 20)
        @Option var entry: ByteSize = ByteSize(bytes: 4096)
        @Option var batch: Int = 256
        @Option var writer: UInt64 = UInt64.random(in: 1...UInt64.max)
        @Flag var sync = false
        @OptionGroup var secret: SecretOptions

        func run() throws {
            let log = try LogWriter(config: .init(writer: writer, replicas: replicas, segmentBytes: 8 << 20, secret: try secret.load(),
                                                  token: Sys.randomBytes(32), coordinator: coordinator))
            defer { log.close() }
            let payload = [UInt8]((0..<Int(entry.bytes)).map { UInt8(truncatingIfNeeded: $0 * 7) })
            let batchEntries = (0..<batch).map { ReplicaStore.Entry(epoch: 1, slab: UInt64($0 % 16), payload: payload) }
            let rounds = max(1, Int(total.bytes) / (batch * payload.count))
            let started = monotonicNanos()
            for _ in 0..<rounds { try log.append(batchEntries) }
            if sync { try log.sync() }
            let seconds = Double(monotonicNanos() - started) / 1e9
            try log.closeOpenSegment()
            let bytes = Double(rounds * batch * payload.count)
            print(String(format: "log_append_mbps=%.1f bytes=%.0f seconds=%.3f replicas=%d writer=%llu", bytes / seconds / 1e6, bytes, seconds, replicas, writer))
        }
    }

    struct LogRead: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "log-read",
                                                        abstract: "Read a writer's whole log, every segment from a different replica in parallel; print MB/s.")
        @Option var coordinator: Endpoint
        @Option var writer: UInt64
        @Option var threads: Int = 4
        @OptionGroup var secret: SecretOptions

        func run() throws {
            let s = try secret.load()
            let log = try LogWriter(config: .init(writer: writer, secret: s, token: Sys.randomBytes(32), coordinator: coordinator))
            let placement = log.placement
            log.close()
            // Spread the segments over their replicas (RAMCloud's partitioned recovery reads).
            var work: [(UInt64, Endpoint)] = []
            for (i, p) in placement.enumerated() where !p.nodes.isEmpty { work.append((p.segment, p.nodes[i % p.nodes.count])) }
            // Each reader takes every `threads`-th segment and tells each node which of its segments it
            // will ask for next (the node reads it ahead).
            let lock = Lock()
            var bytes = 0, failures: [String] = []
            var done = 0
            let started = monotonicNanos()
            for t in 0..<threads {
                let mine = stride(from: t, to: work.count, by: threads).map { work[$0] }
                startThread(name: "reader") {
                    var clients: [Endpoint: LogNodeClient] = [:]
                    for (k, (seg, ep)) in mine.enumerated() {
                        let ahead = mine[(k + 1)...].first { $0.1 == ep }?.0
                        do {
                            let c = try clients[ep] ?? LogNodeClient(endpoint: ep, secret: s, token: Sys.randomBytes(32))
                            clients[ep] = c
                            var got = 0
                            try c.forEachEntry(writer: writer, segment: seg, readAhead: ahead) { got += $0.payload.count }
                            lock.withLock { bytes += got }
                        } catch {
                            lock.withLock { failures.append("segment \(seg): \(error)") }
                        }
                    }
                    lock.withLock {
                        done += 1
                        lock.broadcast()
                    }
                }
            }
            lock.withLock { while done < threads { lock.wait() } }
            let seconds = Double(monotonicNanos() - started) / 1e9
            if !failures.isEmpty { throw LegatoError(failures.joined(separator: "; ")) }
            print(String(format: "log_read_mbps=%.1f bytes=%d seconds=%.3f segments=%d", Double(bytes) / seconds / 1e6, bytes, seconds, work.count))
        }
    }
}

import Foundation
import LegatoCore
import LegatoSystem
import LegatoWire

/// Reads replicated logs whole (a checkpoint chain at restore, a recovery read), segments in parallel: each of a
/// few threads takes every n-th segment and reads it from one of its replicas (spread over them,
/// the next segment named to the node so it reads it ahead), falling over to another replica if
/// one fails. Entries are visited in place in the receive buffer, by the thread that read them; a
/// replica failing half way means the segment's first entries are visited twice (the same bytes).
public final class LogReplay {
    public struct SegmentReplicas {
        public var writer: UInt64
        public var segment: UInt64
        public var replicas: [Endpoint]
        public var epochs: Set<UInt32>?   // the entries of these epochs (nil: all)
        /// Only the entries of these slabs, chosen by the log node (empty: all).
        public var slabs: [UInt64]
        public init(writer: UInt64, segment: UInt64, replicas: [Endpoint], epochs: Set<UInt32>?, slabs: [UInt64] = []) {
            self.writer = writer
            self.segment = segment
            self.replicas = replicas
            self.epochs = epochs
            self.slabs = slabs
        }
    }

    public let secret: ClusterSecret
    public let threads: Int

    public init(secret: ClusterSecret, threads: Int = 4) {
        self.secret = secret
        self.threads = threads
    }

    /// Visits every entry of `segments` whose epoch the segment wants: `visit(thread, epoch, payload)`,
    /// concurrently from threads 0..<threads (each thread's calls in order; the payload valid only
    /// during the call).
    public func run(_ segments: [SegmentReplicas], visit: @escaping (Int, UInt32, UnsafeRawBufferPointer) throws -> Void) throws {
        let lock = Lock()
        var failure: Error?
        var done = 0
        let per = (0..<threads).map { t in stride(from: t, to: segments.count, by: threads).map { (index: $0, item: segments[$0]) } }
        for (t, mine) in per.enumerated() {
            startThread(name: "log-replay") { [secret] in
                var clients: [Endpoint: LogNodeClient] = [:]
                defer { for c in clients.values { c.close() } }
                for (k, (index, s)) in mine.enumerated() {
                    if lock.withLock({ failure != nil }) { break }
                    var why = "no replica"
                    var read = false
                    // Start at a different replica per segment: the reads spread over the nodes.
                    for r in 0..<s.replicas.count where !read {
                        let ep = s.replicas[(index + r) % s.replicas.count]
                        // The next segment this thread will ask `ep` for first: that one it reads ahead.
                        let next = mine[(k + 1)...].first {
                            $0.item.writer == s.writer && !$0.item.replicas.isEmpty && $0.item.replicas[$0.index % $0.item.replicas.count] == ep
                        }?.item.segment
                        do {
                            let c = try clients[ep] ?? LogNodeClient(endpoint: ep, secret: secret, token: Sys.randomBytes(32))
                            clients[ep] = c
                            let r = try c.forEachEntry(writer: s.writer, segment: s.segment, slabs: s.slabs, readAhead: next) { e in
                                if s.epochs?.contains(e.epoch) ?? true { try visit(t, e.epoch, e.payload) }
                            }
                            if r.corrupt == 0 { read = true } else { why = "\(r.corrupt) corrupt entries on \(ep)" }
                        } catch let e where !isTransportFailure(e) {
                            lock.withLock { if failure == nil { failure = e } }  // the entry itself is bad: no use trying elsewhere
                            break
                        } catch {
                            why = "\(ep): \(error)"
                            clients[ep]?.close()
                            clients[ep] = nil
                        }
                    }
                    if !read {
                        lock.withLock {
                            if failure == nil { failure = LogWriter.LogError.unreadableLog(writer: s.writer, segment: s.segment, why) }
                        }
                    }
                }
                lock.withLock {
                    done += 1
                    lock.broadcast()
                }
            }
        }
        lock.withLock { while done < per.count { _ = lock.wait() } }
        if let failure { throw failure }
    }
}

import Foundation
import LegatoCore
import LegatoLog
import LegatoSystem

/// Reads the entries of a checkpoint chain out of replicated logs, segments in parallel: each of a
/// few threads takes the next segment and reads it from one of its replicas (spread over them, the
/// next segment named to the node so it reads it ahead), falling over to another replica if one
/// fails. A segment's entries are gathered apart and handed over whole, so a replica that fails
/// half way leaves nothing behind.
final class LogReplay {
    struct Segment {
        var writer: UInt64
        var segment: UInt64
        var replicas: [Endpoint]
        var epochs: Set<UInt32>
    }

    let secret: ClusterSecret
    let threads: Int

    init(secret: ClusterSecret, threads: Int = 4) {
        self.secret = secret
        self.threads = threads
    }

    /// Every entry of `segments` whose epoch the segment wants, as (epoch, payload); `sink` runs
    /// under a lock, once per segment, with that segment's entries.
    func run(_ segments: [Segment], sink: @escaping ([(UInt32, [UInt8])]) throws -> Void) throws {
        let lock = Lock()
        var failure: Error?
        var done = 0
        let per = (0..<threads).map { t in stride(from: t, to: segments.count, by: threads).map { (index: $0, item: segments[$0]) } }
        for mine in per {
            startThread(name: "log-replay") { [secret] in
                var clients: [Endpoint: LogNodeClient] = [:]
                defer { for c in clients.values { c.close() } }
                for (k, (index, s)) in mine.enumerated() {
                    if lock.withLock({ failure != nil }) { break }
                    var why = "no replica"
                    var got: [(UInt32, [UInt8])]?
                    // Start at a different replica per segment: the reads spread over the nodes.
                    for r in 0..<s.replicas.count {
                        let ep = s.replicas[(index + r) % s.replicas.count]
                        let next = mine[(k + 1)...].first { $0.item.writer == s.writer && $0.item.replicas.contains(ep) }?.item.segment
                        do {
                            let c = try clients[ep] ?? LogNodeClient(endpoint: ep, secret: secret, token: Sys.randomBytes(32))
                            clients[ep] = c
                            var entries: [(UInt32, [UInt8])] = []
                            let r = try c.forEachEntry(writer: s.writer, segment: s.segment, readAhead: next) { e in
                                if s.epochs.contains(e.epoch) { entries.append((e.epoch, Array(e.payload))) }
                            }
                            guard r.corrupt == 0 else {
                                why = "\(r.corrupt) corrupt entries on \(ep)"
                                continue
                            }
                            got = entries
                            break
                        } catch {
                            why = "\(ep): \(error)"
                            clients[ep]?.close()
                            clients[ep] = nil
                        }
                    }
                    lock.withLock {
                        do {
                            guard let got else { throw LegatoError("segment \(s.segment) of log \(String(s.writer, radix: 16)) is unreadable: \(why)") }
                            try sink(got)
                        } catch {
                            if failure == nil { failure = error }
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

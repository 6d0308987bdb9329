import LegatoClients
import LegatoCore
import LegatoSystem
import LegatoWire

/// Reads single entries of one writer's log by position, from whichever replica answers (the
/// index and context of a checkpoint, a run a fault needs before the replay brings it).
/// Thread-safe (one request at a time).
final class EntryReader {
    let writer: UInt64
    let placement: [UInt64: [Endpoint]]
    let secret: ClusterSecret
    private let lock = Lock()
    private var clients: [Endpoint: LogNodeClient] = [:]

    init(writer: UInt64, placement: [UInt64: [Endpoint]], secret: ClusterSecret) {
        self.writer = writer
        self.placement = placement
        self.secret = secret
    }

    deinit { for c in clients.values { c.close() } }

    /// Hands the payload of the entry at `at` to body (valid during the call).
    func visit(_ at: LogWriter.Position, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        try lock.withLock {
            guard let nodes = placement[at.segment], !nodes.isEmpty else {
                throw CheckpointStoreError.segmentWithoutReplica(writer: writer, segment: at.segment)
            }
            var why = ""
            for ep in nodes {
                do {
                    let c = try client(ep)
                    if try take(at, from: c, try c.startReadPage(writer: writer, segment: at.segment, first: at.index, maxEntries: 1), body) {
                        return
                    }
                    why = "\(ep) does not have it"
                } catch let e where !isTransportFailure(e) {
                    throw e
                } catch {
                    why = "\(ep): \(error)"
                    clients[ep]?.close()
                    clients[ep] = nil
                }
            }
            throw CheckpointStoreError.entryUnreadable(writer: writer, segment: at.segment, index: at.index, why)
        }
    }

    /// Reads several entries at once: the requests to each node are all sent before the answers are
    /// taken (one round trip and the node's disk working on them together, not one after the other).
    /// Entries a node cannot give are read one by one with `visit` (from the other replicas).
    func visitAll(_ positions: [LogWriter.Position], _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        var leftover: [LogWriter.Position] = []
        try lock.withLock {
            var byNode: [Endpoint: [LogWriter.Position]] = [:]
            for p in positions {
                if let ep = placement[p.segment]?.first { byNode[ep, default: []].append(p) } else { leftover.append(p) }
            }
            for (ep, list) in byNode {
                do {
                    let c = try client(ep)
                    let ids = try list.map { try c.startReadPage(writer: writer, segment: $0.segment, first: $0.index, maxEntries: 1) }
                    for (p, id) in zip(list, ids) where try !take(p, from: c, id, body) { leftover.append(p) }
                } catch let e where !isTransportFailure(e) {
                    throw e
                } catch {
                    clients[ep]?.close()
                    clients[ep] = nil
                    leftover += list
                }
            }
        }
        for p in leftover { try visit(p, body) }
    }

    /// The connection to `ep` (lock held).
    private func client(_ ep: Endpoint) throws -> LogNodeClient {
        if let c = clients[ep] { return c }
        let c = try LogNodeClient(endpoint: ep, secret: secret, token: Sys.randomBytes(32))
        clients[ep] = c
        return c
    }

    /// Takes the answer to read `id` and hands the entry at `at` to body; false if the answer did not
    /// hold it. An error body throws goes to the caller as it is.
    private func take(_ at: LogWriter.Position, from c: LogNodeClient, _ id: UInt32, _ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Bool {
        var found = false
        var failure: Error?
        _ = try c.finishReadPage(id) { e in
            guard e.index == at.index else { return }
            found = true
            do { try body(e.payload) } catch { failure = error }
        }
        if let failure { throw failure }
        return found
    }
}

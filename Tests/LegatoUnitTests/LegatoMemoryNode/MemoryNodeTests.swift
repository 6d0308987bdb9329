import Foundation
import Glibc
import LegatoClients
import LegatoCore
@testable import LegatoMemoryNode
import LegatoSystem
import LegatoTestSupport
@testable import LegatoWire
import Testing

/// A memory node on loopback in this process, against real TCP clients.
@Suite(.serialized) struct MemoryNodeTests {
    let secret = ClusterSecret(bytes: Array("test-secret-0123456789".utf8))
    let tokenA = [UInt8](repeating: 0xa, count: 32)
    let tokenB = [UInt8](repeating: 0xb, count: 32)

    func startNode(capacity: UInt64 = 64 << 20, retainIdleSeconds: Double? = nil) throws -> MemoryNode {
        var config = MemoryNode.Config(listen: Endpoint(host: "127.0.0.1", port: 0), capacityBytes: capacity, segmentBytes: 1 << 20, secret: secret)
        if let retainIdleSeconds { config.retainIdleSeconds = retainIdleSeconds }
        let node = try MemoryNode(config: config)
        try node.start()
        return node
    }

    func pages(_ n: Int, seed: UInt8) -> [UInt8] { (0..<n * Page.size).map { UInt8(truncatingIfNeeded: $0 / 7) &+ seed } }

    /// An ephemeral space lives while any connection with its owner's token is open; other spaces
    /// outlive their connections.
    @Test func dropsAnEphemeralSpaceWithItsOwnersLastConnection() throws {
        let node = try startNode()
        defer { node.stop() }
        let first = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenA)
        try first.createSpace(7, ephemeral: true)
        let second = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenA)
        let keys: [UInt64] = [1, 2]
        let data = pages(2, seed: 3)
        try keys.withUnsafeBufferPointer { k in try data.withUnsafeBytes { try second.store(space: 7, vpns: k, pages: $0.baseAddress!) } }
        let keeper = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenB)
        try keeper.createSpace(8)
        keeper.close()
        first.close()
        func spaces() -> Int { node.service.store.stats.spaces }
        func waitFor(_ n: Int) { for _ in 0..<200 where spaces() != n { usleep(10_000) } }
        waitFor(2)
        #expect(spaces() == 2, "the owner still has a connection open; the other space is not ephemeral")
        var present = [UInt8](repeating: 0, count: 2)
        var out = [UInt8](repeating: 0, count: 2 * Page.size)
        #expect(try keys.withUnsafeBufferPointer { k in try out.withUnsafeMutableBytes { try second.fetch(space: 7, vpns: k, present: &present, out: $0.baseAddress!) } } == 2)
        second.close()
        waitFor(1)
        #expect(spaces() == 1, "the ephemeral space goes with its owner's last connection")
        #expect(node.service.store.stats.livePages == 0)
        let again = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenA)
        defer { again.close() }
        #expect(throws: RemoteError.self) {
            _ = try keys.withUnsafeBufferPointer { k in try out.withUnsafeMutableBytes { try again.fetch(space: 7, vpns: k, present: &present, out: $0.baseAddress!) } }
        }
    }

    @Test func dropsASpaceWhoseOwnerIsGonePastTheRetention() throws {
        let node = try startNode(retainIdleSeconds: 2)
        defer { node.stop() }
        func spaces() -> Int { node.service.store.stats.spaces }
        let data = pages(2, seed: 5)
        let keys: [UInt64] = [3, 4]
        func fill(_ c: MemoryClient, _ space: UInt64) throws {
            try c.createSpace(space)
            try keys.withUnsafeBufferPointer { k in try data.withUnsafeBytes { try c.store(space: space, vpns: k, pages: $0.baseAddress!) } }
        }
        var stayer = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenA)
        try fill(stayer, 9)
        let leaver = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenB)
        try fill(leaver, 10)
        leaver.close()
        // The owner of 9 stays connected past the retention, then leaves and comes back well within it.
        usleep(3_000_000)
        stayer.close()
        usleep(300_000)
        stayer = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenA)
        _ = try stayer.describe(space: 9)
        usleep(2_500_000)
        #expect(spaces() == 1, "space 10's owner is gone past the retention; 9's is back")
        #expect(node.service.store.stats.livePages == 2)
        var present = [UInt8](repeating: 0, count: 2)
        var out = [UInt8](repeating: 0, count: 2 * Page.size)
        #expect(try keys.withUnsafeBufferPointer { k in try out.withUnsafeMutableBytes { try stayer.fetch(space: 9, vpns: k, present: &present, out: $0.baseAddress!) } } == 2)
        #expect(out == data)
        stayer.close()
        for _ in 0..<200 where spaces() != 0 { usleep(50_000) }
        #expect(spaces() == 0, "space 9 goes too once its owner has been gone past the retention")
    }

    @Test func storesAndFetchesOverTCP() throws {
        let node = try startNode()
        defer { node.stop() }
        let c = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenA)
        try c.createSpace(42)
        let keys: [UInt64] = [5, 6, 100]
        let data = pages(3, seed: 1)
        try keys.withUnsafeBufferPointer { k in try data.withUnsafeBytes { try c.store(space: 42, vpns: k, pages: $0.baseAddress!) } }
        let want: [UInt64] = [100, 7, 5]
        var present = [UInt8](repeating: 0, count: 3)
        var out = [UInt8](repeating: 0, count: 3 * Page.size)
        let found = try want.withUnsafeBufferPointer { k in try out.withUnsafeMutableBytes { try c.fetch(space: 42, vpns: k, present: &present, out: $0.baseAddress!) } }
        #expect(found == 2)
        #expect(present == [1, 0, 1])
        #expect(Array(out[0..<Page.size]) == Array(data[2 * Page.size..<3 * Page.size]))
        #expect(Array(out[2 * Page.size..<3 * Page.size]) == Array(data[0..<Page.size]))
        #expect(try c.discard(space: 42, ranges: [(5, 2)]) == 2)
        let stats = try c.rpc.stats()
        #expect(stats.contains("\"live_pages\":1"))
        try c.dropSpace(42)
    }

    /// A second freeze of a frozen space is refused with its own status (the agent then releases the
    /// freeze a failed checkpoint left and freezes again), not a message to match.
    @Test func aSecondFreezeIsRefusedAsFrozen() throws {
        let node = try startNode()
        defer { node.stop() }
        let c = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenA)
        try c.createSpace(43)
        try c.freeze(space: 43)
        #expect(throws: RemoteError.self) { try c.freeze(space: 43) }
        do { try c.freeze(space: 43) } catch let e as RemoteError { #expect(e.status == .frozen, "\(e)") }
        _ = try c.release(space: 43)
        try c.freeze(space: 43)
        try c.dropSpace(43)
    }

    /// A committed freeze stays readable over the wire after its client is gone, by a new client
    /// with the same credential (a restore after kill -9 of the run), and by no other.
    @Test func retainsACommittedCheckpointForTheNextClient() throws {
        let node = try startNode()
        defer { node.stop() }
        let keys: [UInt64] = [1, 2, 3]
        let before = pages(3, seed: 1), after = pages(3, seed: 9)
        func store(_ c: MemoryClient, _ data: [UInt8]) throws {
            try keys.withUnsafeBufferPointer { k in try data.withUnsafeBytes { try c.store(space: 7, vpns: k, pages: $0.baseAddress!) } }
        }
        func fetch(_ c: MemoryClient, _ version: MemoryClient.PageVersion) throws -> [UInt8] {
            var present = [UInt8](repeating: 0, count: 3)
            var out = [UInt8](repeating: 0, count: 3 * Page.size)
            let found = try keys.withUnsafeBufferPointer { k in
                try out.withUnsafeMutableBytes { try c.fetch(space: 7, vpns: k, present: &present, out: $0.baseAddress!, version: version) }
            }
            #expect(found == 3)
            return out
        }
        let first = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenA)
        try first.createSpace(7)
        try store(first, before)
        try first.freeze(space: 7)
        try store(first, after)   // while checkpoint 4 commits
        #expect(try first.commit(space: 7, epoch: 4) == 0)
        first.close()             // the run is killed

        let again = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenA)
        defer { again.close() }
        let d = try again.describe(space: 7)
        #expect(d.retainedEpoch == 4 && !d.frozen && d.pages == 3)
        #expect(try fetch(again, .checkpoint(4)) == before)
        #expect(try fetch(again, .current) == after)
        #expect(throws: RemoteError.self) { _ = try fetch(again, .checkpoint(3)) }
        let other = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenB)
        defer { other.close() }
        #expect(throws: RemoteError.self) { _ = try other.describe(space: 7) }
        try again.dropSpace(7)
        #expect(throws: RemoteError.self) { _ = try again.describe(space: 7) }
    }

    @Test func refusesAWrongSecret() throws {
        let node = try startNode()
        defer { node.stop() }
        let wrong = ClusterSecret(bytes: Array("another-secret-xyz".utf8))
        #expect(throws: WireError.self) { _ = try MemoryClient(endpoint: node.endpoint, secret: wrong, token: tokenA) }
        // and the node goes on serving the right one
        let c = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenA)
        try c.rpc.ping()
        // The server counts the refusal on its own thread, just after telling the client.
        let deadline = Date().addingTimeInterval(5)
        while node.server.connectionsRejected < 1 && Date() < deadline { usleep(10_000) }
        #expect(node.server.connectionsRejected >= 1)
    }

    @Test func keepsClientsOutOfEachOthersSpaces() throws {
        let node = try startNode()
        defer { node.stop() }
        let a = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenA)
        let b = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenB)
        try a.createSpace(1)
        #expect(throws: RemoteError.self) { try b.createSpace(1) }
        let k: [UInt64] = [1]
        var present: [UInt8] = [0]
        var out = [UInt8](repeating: 0, count: Page.size)
        do {
            _ = try k.withUnsafeBufferPointer { kk in try out.withUnsafeMutableBytes { try b.fetch(space: 1, vpns: kk, present: &present, out: $0.baseAddress!) } }
            Issue.record("fetch of another client's space succeeded")
        } catch let e as RemoteError {
            #expect(e.status == .notOwner)
        }
        #expect(throws: RemoteError.self) { try b.dropSpace(1) }
        try a.rpc.ping()
    }

    @Test func refusesStoresOverCapacity() throws {
        let node = try startNode(capacity: 4 << 20)
        defer { node.stop() }
        let c = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenA)
        try c.createSpace(3)
        let n = 1200
        let keys = (0..<UInt64(n)).map { $0 }
        let data = pages(n, seed: 3)
        do {
            try keys.withUnsafeBufferPointer { k in try data.withUnsafeBytes { try c.store(space: 3, vpns: k, pages: $0.baseAddress!) } }
            Issue.record("a store over capacity succeeded")
        } catch let e as RemoteError {
            #expect(e.status == .capacityExceeded)
            #expect(e.message.contains("capacity"))
        }
        try c.rpc.ping()
    }

    /// Sends raw bytes after a proper handshake; returns what the server answered (nil if it closed).
    func hostile(_ node: MemoryNode, authenticate: Bool = true, _ bytes: [UInt8]) throws -> Frame? {
        try sendHostile(to: node.endpoint, secret: secret, authenticate: authenticate, bytes)
    }

    @Test func survivesMalformedTruncatedAndHostileMessages() throws {
        let node = try startNode()
        defer { node.stop() }
        // garbage instead of AUTH
        _ = try hostile(node, authenticate: false, Array("GET / HTTP/1.1\r\n\r\n".utf8))
        // a frame that announces a gigabyte
        _ = try hostile(node, frame(Opcode.storePages.rawValue, [], length: 1 << 30))
        // bad magic
        _ = try hostile(node, [UInt8](repeating: 0x41, count: 64))
        // unknown opcode: answered as a bad request
        let unknown = try hostile(node, frame(0x7e, []))
        #expect(unknown?.status == .badRequest)
        // STORE whose count claims more pages than the payload holds
        var w = WireWriter()
        w.u64(1); w.u32(0); w.u32(1000); w.u64(5)
        let store = try hostile(node, frame(Opcode.storePages.rawValue, w.bytes))
        #expect(store?.status == .badRequest)
        // FETCH with a huge count
        var f = WireWriter()
        f.u64(1); f.u32(0xffff_ffff)
        #expect(try hostile(node, frame(Opcode.fetchPages.rawValue, f.bytes))?.status == .badRequest)
        // DISCARD with a range of 2^60 pages
        var d = WireWriter()
        d.u64(1); d.u32(1); d.u64(0); d.u64(1 << 60)
        #expect(try hostile(node, frame(Opcode.discardPages.rawValue, d.bytes))?.status == .badRequest)
        // FETCH_FROZEN of a space never frozen, RELEASE of one not frozen, FREEZE with trailing bytes
        #expect(try hostile(node, frame(Opcode.fetchFrozen.rawValue, f.bytes))?.status == .badRequest)
        var sp = WireWriter()
        sp.u64(424242)
        #expect(try hostile(node, frame(Opcode.releaseSpace.rawValue, sp.bytes))?.status != nil)
        #expect(try hostile(node, frame(Opcode.freezeSpace.rawValue, sp.bytes + [1]))?.status == .badRequest)
        // FETCH_CHECKPOINTED with a huge count, COMMIT_SPACE without its epoch, DESCRIBE_SPACE with
        // trailing bytes, and of a space that does not exist
        var fc = WireWriter()
        fc.u64(1); fc.u32(5); fc.u32(0xffff_ffff)
        #expect(try hostile(node, frame(Opcode.fetchCheckpointed.rawValue, fc.bytes))?.status == .badRequest)
        #expect(try hostile(node, frame(Opcode.commitSpace.rawValue, sp.bytes))?.status == .badRequest)
        #expect(try hostile(node, frame(Opcode.describeSpace.rawValue, sp.bytes + [0]))?.status == .badRequest)
        #expect(try hostile(node, frame(Opcode.describeSpace.rawValue, sp.bytes))?.status == .noSuchSpace)
        // PREPARE with a run of 2^32-1 pages, with vpns missing, and (well formed) to a node started
        // without a coordinator: refused, it takes no part in checkpoints
        var pr = WireWriter()
        pr.u64(1); pr.u32(1); pr.u64(9); pr.u32(1); pr.u64(0x10000); pr.u32(0xffff_ffff)
        #expect(try hostile(node, frame(Opcode.prepareSpace.rawValue, pr.bytes))?.status == .badRequest)
        var pm = WireWriter()
        pm.u64(1); pm.u32(1); pm.u64(9); pm.u32(1); pm.u64(0x10000); pm.u32(4); pm.u64(16)
        #expect(try hostile(node, frame(Opcode.prepareSpace.rawValue, pm.bytes))?.status == .badRequest)
        var pw = WireWriter()
        pw.u64(1); pw.u32(1); pw.u64(9); pw.u32(1); pw.u64(0x10000); pw.u32(1); pw.u64(16)
        let refusal = try hostile(node, frame(Opcode.prepareSpace.rawValue, pw.bytes))
        #expect(refusal?.status == .badRequest)
        #expect(refusal.map { String(decoding: $0.payload.dropFirst(2), as: UTF8.self) }?.contains("without --coordinator") == true)
        // a frame cut short
        _ = try hostile(node, Array(frame(Opcode.createSpace.rawValue, [1, 2, 3, 4, 5, 6, 7, 8]).prefix(20)))
        // random bytes after a valid header
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20 {
            let n = Int.random(in: 0..<200, using: &rng)
            let junk = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let op = [Opcode.createSpace, .storePages, .fetchPages, .discardPages, .dropSpace, .freezeSpace, .fetchFrozen,
                      .releaseSpace, .prepareSpace].randomElement(using: &rng)!
            _ = try hostile(node, frame(op.rawValue, junk))
        }
        // the node is still there for an honest client
        let c = try MemoryClient(endpoint: node.endpoint, secret: secret, token: tokenA)
        try c.rpc.ping()
        try c.createSpace(77)
    }
}

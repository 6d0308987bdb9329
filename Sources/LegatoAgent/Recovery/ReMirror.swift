import Glibc
import LegatoClients
import LegatoCore
import LegatoSystem

/// Work the event loop waits on after a memory node's death: a NodeRecovery or a ReMirror. `doneFD`
/// (an eventfd) is signalled when it is done.
protocol RecoveryTask: AnyObject {
    var doneFD: Int32 { get }
    var deadEndpoint: Endpoint { get }
}

extension NodeRecovery: RecoveryTask {}

/// Gives pages left with one copy by a memory node's death (`--memory-replication mirror`) a second
/// copy again, on a thread of its own: each group's pages are read from the node holding them and
/// stored on another, 256 at a time. A group whose target is its source (adaptive, while memory is
/// short) is stored back where it is, logged: its pages' copy can then be rebuilt from the log. Meanwhile new stores of these pages wait (RemotePool.awaitingRecovery):
/// stored on the target after the copy, a newer version would be overwritten by it.
final class ReMirror: RecoveryTask {
    struct Group {
        let source: Int
        let sourceEndpoint: Endpoint
        let target: Int
        let targetEndpoint: Endpoint
        let keys: [UInt64]
    }

    struct Outcome {
        /// Per group: the keys now on its target.
        var copied: [[UInt64]]
        var failures: [String]
    }

    let dead: Int
    let deadEndpoint: Endpoint
    let generation: UInt64
    let groups: [Group]
    let doneFD: Int32
    let started = monotonicNanos()
    private let lock = Lock()
    private var result: Outcome?

    init(dead: Int, endpoint: Endpoint, generation: UInt64, groups: [Group], space: UInt64, secret: ClusterSecret, token: [UInt8]) throws {
        self.dead = dead
        deadEndpoint = endpoint
        self.generation = generation
        self.groups = groups
        doneFD = try Sys.eventFD()
        startThread(name: "remirror") { [self] in
            var out = Outcome(copied: [], failures: [])
            for g in groups {
                do { out.copied.append(try Self.copy(g, space: space, secret: secret, token: token)) } catch {
                    out.copied.append([])
                    out.failures.append("copying \(g.keys.count) pages from \(g.sourceEndpoint) to \(g.targetEndpoint): \(error)")
                }
            }
            lock.withLock { result = out }
            var one: UInt64 = 1
            _ = write(doneFD, &one, 8)
        }
    }

    deinit { close(doneFD) }

    var outcome: Outcome? { lock.withLock { result } }

    private static func copy(_ g: Group, space: UInt64, secret: ClusterSecret, token: [UInt8]) throws -> [UInt64] {
        let from = try MemoryClient(endpoint: g.sourceEndpoint, secret: secret, token: token)
        defer { from.close() }
        let relog = g.target == g.source
        let to = relog ? from : try MemoryClient(endpoint: g.targetEndpoint, secret: secret, token: token)
        defer { if !relog { to.close() } }
        let chunk = 256
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk * Page.size, alignment: Page.size)
        let present = UnsafeMutablePointer<UInt8>.allocate(capacity: chunk)
        defer {
            buffer.deallocate()
            present.deallocate()
        }
        let sorted = g.keys.sorted()
        var copied: [UInt64] = []
        var at = 0
        while at < sorted.count {
            let keys = Array(sorted[at..<min(sorted.count, at + chunk)])
            at += keys.count
            _ = try keys.withUnsafeBufferPointer { try from.fetch(space: space, vpns: $0, present: present, out: buffer) }
            // Pages the source no longer holds were discarded meanwhile: nothing to copy.
            var held: [UInt64] = []
            for (k, key) in keys.enumerated() where present[k] != 0 {
                if held.count != k { (buffer + held.count * Page.size).copyMemory(from: buffer + k * Page.size, byteCount: Page.size) }
                held.append(key)
            }
            guard !held.isEmpty else { continue }
            try held.withUnsafeBufferPointer { try to.store(space: space, flags: relog ? .logged : [], vpns: $0, pages: buffer) }
            copied += held
        }
        return copied
    }
}

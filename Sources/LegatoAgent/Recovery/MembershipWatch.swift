import Glibc
import LegatoClients
import LegatoCore
import LegatoSystem
import LegatoWire

/// The coordinator's word on which memory nodes are dead (its failure detector: silent past
/// `--dead-after-ms`), for deaths no connection of the agent has seen yet: a host that lost power
/// or was cut off sends no reset, and a fetch or a store to it would wait out its I/O timeout.
/// A thread of its own long-polls WAIT_MEMBERSHIP; `wakeFD` (an eventfd) is signalled when memory
/// nodes were declared dead, which `takeDead` then names. A node declared dead that still answers a
/// ping within a second is not named (its heartbeats were late: a loaded host, not a dead one).
/// Each answer also gives the live memory nodes' free share (`freePercent`), from the room their
/// heartbeats report; it is asked for at least every `refreshMillis`.
final class MembershipWatch {
    let wakeFD: Int32
    private let lock = Lock()
    private var dead: Set<String> = []
    private var stopped = false
    private var free: Double?

    /// Called on the watch's thread with the nodes about to be named dead, before `wakeFD` is
    /// signalled (the agent cuts their fetch connections: the event loop may be in a read from one).
    private let onDeclaredDead: (Set<String>) -> Void

    init(coordinator: Endpoint, secret: ClusterSecret, refreshMillis: UInt32 = 5000, log: Logger,
         onDeclaredDead: @escaping (Set<String>) -> Void = { _ in }) throws {
        self.onDeclaredDead = onDeclaredDead
        wakeFD = try Sys.eventFD()
        startThread(name: "membership") { [self] in watch(coordinator, secret, refreshMillis, log) }
    }

    /// The live memory nodes' free memory as a share of their capacity, in percent (nil until the
    /// coordinator first answered).
    var freePercent: Double? { lock.withLock { free } }

    static func freePercent(_ nodes: [NodeStatus]) -> Double? {
        let live = nodes.filter { $0.role == .memory && $0.alive && $0.capacity > 0 }
        let capacity = live.reduce(0.0) { $0 + Double($1.capacity) }
        guard capacity > 0 else { return nil }
        return 100 * live.reduce(0.0) { $0 + Double($1.capacity - min($1.capacity, $1.used)) } / capacity
    }

    deinit { close(wakeFD) }

    /// The addresses of memory nodes declared dead since the last call.
    func takeDead() -> Set<String> {
        var v: UInt64 = 0
        _ = read(wakeFD, &v, 8)
        return lock.withLock {
            defer { dead.removeAll() }
            return dead
        }
    }

    func stop() { lock.withLock { stopped = true } }

    /// Whether the node at `address` answers a ping within a second.
    private static func answers(_ address: String, _ secret: ClusterSecret) -> Bool {
        guard let ep = Endpoint(parsing: address),
              let c = try? RPCClient(endpoint: ep, secret: secret, token: Sys.randomBytes(32), timeoutSeconds: 1, ioTimeoutSeconds: 1) else { return false }
        defer { c.close() }
        return (try? c.ping()) != nil
    }

    private func watch(_ coordinator: Endpoint, _ secret: ClusterSecret, _ refreshMillis: UInt32, _ log: Logger) {
        Sys.blockSignalInThisThread(SIGCHLD)
        var version: UInt64 = 0
        var known: Set<String> = []  // dead already when last seen: told once
        var client: CoordinatorClient?
        while !lock.withLock({ stopped }) {
            do {
                if client == nil { client = try CoordinatorClient(endpoint: coordinator, secret: secret, ioTimeoutSeconds: 30) }
                let m = try client!.waitMembership(after: version, timeoutMillis: refreshMillis)
                let share = Self.freePercent(m.nodes)
                lock.withLock { free = share }
                let first = version == 0
                version = m.version
                let now = Set(m.nodes.filter { $0.role == .memory && !$0.alive }.map { $0.address })
                let newly = now.subtracting(known)
                known = now
                // (Those dead before the run started are not the run's.)
                guard !first, !newly.isEmpty else { continue }
                let silent = newly.filter { !Self.answers($0, secret) }
                guard !silent.isEmpty else { continue }
                onDeclaredDead(silent)
                lock.withLock { dead.formUnion(silent) }
                var one: UInt64 = 1
                _ = write(wakeFD, &one, 8)
            } catch {
                client?.close()
                client = nil
                log.debug("watching the coordinator's membership: \(error)")
                usleep(500_000)
            }
        }
        client?.close()
    }
}

import Foundation
import LegatoCore
import LegatoSystem
import LegatoWire

/// A daemon's membership in the cluster: registers with the coordinator and heartbeats on its own
/// thread; registers again after the coordinator restarts or declared it dead; logs (and keeps
/// trying) while the coordinator is unreachable.
public final class ClusterMember {
    public let coordinator: Endpoint
    public let role: NodeRole
    public let address: String
    private let secret: ClusterSecret
    private let uuid: String
    private let capacity: () -> UInt64
    private let used: () -> UInt64
    private let log: Logger
    private let lock = Lock()
    private var stopped = false
    public private(set) var nodeID: UInt64 = 0

    public init(coordinator: Endpoint, role: NodeRole, address: String, uuid: String, secret: ClusterSecret,
                capacity: @escaping () -> UInt64, used: @escaping () -> UInt64, log: Logger) {
        self.coordinator = coordinator
        self.role = role
        self.address = address
        self.uuid = uuid
        self.secret = secret
        self.capacity = capacity
        self.used = used
        self.log = log
    }

    /// Registers once (throws if the coordinator cannot be reached), then heartbeats in the background.
    public func start() throws {
        let client = try CoordinatorClient(endpoint: coordinator, secret: secret, ioTimeoutSeconds: 10)
        let reg = try client.register(role: role, address: address, capacity: capacity(), uuid: uuid)
        nodeID = reg.id
        log.info("registered with the coordinator at \(coordinator) as \(role.rawValue) node \(reg.id)")
        startThread(name: "heartbeat") { [self] in beat(client, reg) }
    }

    public func stop() { lock.withLock { stopped = true } }

    private func beat(_ first: CoordinatorClient, _ firstReg: Registration) {
        var client: CoordinatorClient? = first
        var interval = firstReg.heartbeatMillis
        var complained = false
        while !lock.withLock({ stopped }) {
            usleep(max(10, interval) * 1000)
            do {
                if client == nil { client = try CoordinatorClient(endpoint: coordinator, secret: secret, ioTimeoutSeconds: 10) }
                do {
                    try client!.heartbeat(id: nodeID, used: used(), capacity: capacity())
                } catch let e as RemoteError where e.status == .notFound {
                    let reg = try client!.register(role: role, address: address, capacity: capacity(), uuid: uuid)
                    nodeID = reg.id
                    interval = reg.heartbeatMillis
                    log.warning("the coordinator did not know us (\(e.message)); registered again as node \(reg.id)")
                }
                if complained { log.info("the coordinator at \(coordinator) answers again") }
                complained = false
            } catch {
                client?.close()
                client = nil
                if !complained { log.warning("heartbeat to the coordinator at \(coordinator) failed: \(error); retrying") }
                complained = true
            }
        }
        client?.close()
    }
}

/// A daemon's identity across restarts: a uuid kept in its state directory.
public func nodeUUID(directory: String) throws -> String {
    let path = directory + "/node.uuid"
    if let s = try? String(contentsOfFile: path, encoding: .utf8), !s.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
        return s.trimmingCharacters(in: .whitespacesAndNewlines)
    }
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let uuid = UUID().uuidString.lowercased()
    try (uuid + "\n").write(toFile: path, atomically: true, encoding: .utf8)
    return uuid
}


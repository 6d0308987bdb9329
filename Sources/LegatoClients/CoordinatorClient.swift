import Foundation
import LegatoCore
import LegatoSystem
import LegatoWire

/// The caller's side of the coordinator (messages in Messages/CoordinatorMessages.swift). Not thread-safe:
/// one client per thread.
public final class CoordinatorClient {
    public let rpc: RPCClient
    public var endpoint: Endpoint { rpc.endpoint }

    public init(endpoint: Endpoint, secret: ClusterSecret, token: [UInt8] = Sys.randomBytes(32), ioTimeoutSeconds: Double = 90) throws {
        do {
            rpc = try RPCClient(endpoint: endpoint, secret: secret, token: token, ioTimeoutSeconds: ioTimeoutSeconds)
        } catch let e as WireError {
            throw LegatoError("cannot talk to the coordinator at \(endpoint): \(e)")
        } catch {
            throw LegatoError("cannot reach the coordinator at \(endpoint): \(error)")
        }
    }

    public func close() { rpc.close() }

    public func register(role: NodeRole, address: String, capacity: UInt64, uuid: String) throws -> Registration {
        try rpc.call(RegisterNode(role: role, address: address, capacity: capacity, uuid: uuid))
    }

    public func heartbeat(id: UInt64, used: UInt64, capacity: UInt64) throws {
        _ = try rpc.call(Heartbeat(id: id, used: used, capacity: capacity))
    }

    public func nodes() throws -> (version: UInt64, nodes: [NodeStatus]) {
        let m = try rpc.call(ListNodes())
        return (m.version, m.nodes)
    }

    /// Returns when the membership is newer than `known`, or after `timeoutMillis`.
    public func waitMembership(after known: UInt64, timeoutMillis: UInt32) throws -> (version: UInt64, nodes: [NodeStatus]) {
        let m = try rpc.call(WaitMembership(known: known, timeoutMillis: timeoutMillis))
        return (m.version, m.nodes)
    }

    public func assignSlab(space: UInt64, slab: UInt64, slabBytes: UInt64) throws -> (id: UInt64, address: String) {
        let p = try rpc.call(AssignSlab(space: space, slab: slab, slabBytes: slabBytes))
        return (p.node, p.address)
    }

    public func slabs(space: UInt64) throws -> [(slab: UInt64, node: UInt64)] {
        try rpc.call(ListSlabs(space: space)).slabs.map { ($0.slab, $0.node) }
    }

    public func dropSlabs(space: UInt64) throws { _ = try rpc.call(DropSlabs(space: space)) }

    public func beginCheckpoint(name: String, epoch: UInt64, record: [UInt8]) throws {
        _ = try rpc.call(BeginCheckpoint(name: name, epoch: epoch, record: record))
    }

    public func commitCheckpoint(name: String, epoch: UInt64, record: [UInt8]) throws {
        _ = try rpc.call(CommitCheckpoint(name: name, epoch: epoch, record: record))
    }

    public func abortCheckpoint(name: String, epoch: UInt64, reason: String) throws {
        _ = try rpc.call(AbortCheckpoint(name: name, epoch: epoch, reason: reason))
    }

    public func checkpoints(name: String = "") throws -> [CheckpointRecord] { try rpc.call(ListCheckpoints(name: name)).records }

    public func deleteCheckpoint(name: String, epoch: UInt64) throws {
        _ = try rpc.call(DeleteCheckpoint(name: name, epoch: epoch))
    }
}

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


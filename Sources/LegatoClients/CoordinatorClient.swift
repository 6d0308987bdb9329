import Foundation
import LegatoCore
import LegatoSystem
import LegatoWire

/// The caller's side of the coordinator (see CoordinatorService for layouts). Not thread-safe:
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

    public struct Registration {
        public let id: UInt64
        public let heartbeatMillis: UInt32
        public let deadAfterMillis: UInt32
    }

    public func register(role: NodeRole, address: String, capacity: UInt64, uuid: String) throws -> Registration {
        var w = WireWriter()
        w.u8(role.wire)
        w.string(address)
        w.u64(capacity)
        w.string(uuid)
        var r = WireReader(try rpc.call(.registerNode, w.bytes))
        return Registration(id: try r.u64(), heartbeatMillis: try r.u32(), deadAfterMillis: try r.u32())
    }

    public func heartbeat(id: UInt64, used: UInt64, capacity: UInt64) throws {
        var w = WireWriter()
        w.u64(id)
        w.u64(used)
        w.u64(capacity)
        _ = try rpc.call(.heartbeat, w.bytes)
    }

    public func nodes() throws -> (version: UInt64, nodes: [NodeStatus]) {
        try decodeMembership(try rpc.call(.listNodes))
    }

    /// Returns when the membership is newer than `known`, or after `timeoutMillis`.
    public func waitMembership(after known: UInt64, timeoutMillis: UInt32) throws -> (version: UInt64, nodes: [NodeStatus]) {
        var w = WireWriter()
        w.u64(known)
        w.u32(timeoutMillis)
        return try decodeMembership(try rpc.call(.waitMembership, w.bytes))
    }

    private func decodeMembership(_ b: [UInt8]) throws -> (version: UInt64, nodes: [NodeStatus]) {
        var r = WireReader(b)
        let version = try r.u64("version")
        let n = try r.count(itemSize: 1 + 8 + 2 + 1 + 24, limit: 1 << 20, "nodes")
        var out: [NodeStatus] = []
        for _ in 0..<n {
            let id = try r.u64("id")
            guard let role = NodeRole(wire: try r.u8("role")) else { throw WireError.malformed("unknown role") }
            out.append(NodeStatus(id: id, role: role, address: try r.string("address"), alive: try r.u8("alive") == 1,
                                  capacity: try r.u64("capacity"), used: try r.u64("used"), silentMillis: try r.u64("silent")))
        }
        return (version, out)
    }

    public func assignSlab(space: UInt64, slab: UInt64, slabBytes: UInt64) throws -> (id: UInt64, address: String) {
        var w = WireWriter()
        w.u64(space)
        w.u64(slab)
        w.u64(slabBytes)
        var r = WireReader(try rpc.call(.assignSlab, w.bytes))
        return (try r.u64("node"), try r.string("address"))
    }

    public func slabs(space: UInt64) throws -> [(slab: UInt64, node: UInt64)] {
        var w = WireWriter()
        w.u64(space)
        var r = WireReader(try rpc.call(.listSlabs, w.bytes))
        let n = try r.count(itemSize: 16, limit: 1 << 24, "slabs")
        return try (0..<n).map { _ in (try r.u64(), try r.u64()) }
    }

    public func dropSlabs(space: UInt64) throws {
        var w = WireWriter()
        w.u64(space)
        _ = try rpc.call(.dropSlabs, w.bytes)
    }

    public func beginCheckpoint(name: String, epoch: UInt64, record: [UInt8]) throws {
        try decision(.beginCheckpoint, name: name, epoch: epoch, record: record)
    }

    public func commitCheckpoint(name: String, epoch: UInt64, record: [UInt8]) throws {
        try decision(.commitCheckpoint, name: name, epoch: epoch, record: record)
    }

    private func decision(_ op: Opcode, name: String, epoch: UInt64, record: [UInt8]) throws {
        var w = WireWriter()
        w.string(name)
        w.u64(epoch)
        w.blob(record)
        _ = try rpc.call(op, w.bytes)
    }

    public func abortCheckpoint(name: String, epoch: UInt64, reason: String) throws {
        var w = WireWriter()
        w.string(name)
        w.u64(epoch)
        w.string(reason)
        _ = try rpc.call(.abortCheckpoint, w.bytes)
    }

    public func checkpoints(name: String = "") throws -> [CheckpointRecord] {
        var w = WireWriter()
        w.string(name)
        var r = WireReader(try rpc.call(.listCheckpoints, w.bytes))
        let n = try r.count(itemSize: 2 + 8 + 1 + 16 + 4 + 2, limit: 1 << 20, "checkpoints")
        return try (0..<n).map { _ in
            let name = try r.string("name"), epoch = try r.u64("epoch")
            guard let state = CheckpointState(wire: try r.u8("state")) else { throw WireError.malformed("checkpoint state") }
            let begun = Double(try r.u64("begun")) / 1000, decided = Double(try r.u64("decided")) / 1000
            let record = try r.blob(limit: Int(WireLimits.maxFramePayload), "record")
            let reason = try r.string("reason")
            return CheckpointRecord(name: name, epoch: epoch, state: state, begunAt: begun, decidedAt: decided > 0 ? decided : nil,
                                    record: Data(record), reason: reason.isEmpty ? nil : reason)
        }
    }

    public func deleteCheckpoint(name: String, epoch: UInt64) throws {
        var w = WireWriter()
        w.string(name)
        w.u64(epoch)
        _ = try rpc.call(.deleteCheckpoint, w.bytes)
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

    private func beat(_ first: CoordinatorClient, _ firstReg: CoordinatorClient.Registration) {
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


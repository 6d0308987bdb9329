import Foundation
import LegatoClients
import LegatoCore
import LegatoSystem
import LegatoWire

/// Requests the coordinator answers (payload layouts; integers little-endian, strings u16 length + UTF-8,
/// blobs u32 length + bytes):
///
///     REGISTER_NODE     u8 role (1 memory, 2 log), string address, u64 capacity, string uuid
///                       -> u64 node id, u32 heartbeat ms, u32 dead-after ms
///     HEARTBEAT         u64 node id, u64 used bytes, u64 capacity -> (empty); notFound: register again
///     LIST_NODES        -> membership (below)
///     WAIT_MEMBERSHIP   u64 known version, u32 timeout ms -> membership, once it is newer or at the timeout
///       membership:     u64 version, u32 n, n × (u64 id, u8 role, string address, u8 alive, u64 capacity,
///                       u64 used, u64 silent ms)
///     ASSIGN_SLAB       u64 space, u64 slab, u64 slab bytes -> u64 node id, string address
///     LIST_SLABS        u64 space -> u32 n, n × (u64 slab, u64 node id)
///     DROP_SLABS        u64 space
///     BEGIN_CHECKPOINT  string name, u64 epoch, blob record
///     COMMIT_CHECKPOINT string name, u64 epoch, blob record
///     ABORT_CHECKPOINT  string name, u64 epoch, string reason
///     LIST_CHECKPOINTS  string name ("" for all) -> u32 n, n × (string name, u64 epoch, u8 state,
///                       u64 begun ms, u64 decided ms (0: none), blob record, string reason)
///     DELETE_CHECKPOINT string name, u64 epoch
public final class CoordinatorService: RPCService {
    public let coordinator: Coordinator
    private let log: Logger

    public init(coordinator: Coordinator, log: Logger) {
        self.coordinator = coordinator
        self.log = log
    }

    public func handle(opcode: Opcode, payload: [UInt8], session: Session) throws -> Reply {
        var r = WireReader(payload)
        do {
            switch opcode {
            case .registerNode:
                guard let role = NodeRole(wire: try r.u8("role")) else { throw WireError.malformed("unknown node role") }
                let address = try r.string("address")
                let capacity = try r.u64("capacity")
                let uuid = try r.string("uuid")
                try r.expectEnd("REGISTER_NODE")
                guard Endpoint(parsing: address) != nil else { throw ServiceError(.badRequest, "address '\(address)' is not HOST:PORT") }
                guard !uuid.isEmpty, uuid.count <= 128 else { throw ServiceError(.badRequest, "node uuid must be 1-128 bytes") }
                let id = try coordinator.register(role: role, address: address, capacity: capacity, uuid: uuid)
                var w = WireWriter()
                w.u64(id)
                w.u32(coordinator.timing.heartbeatMillis)
                w.u32(coordinator.timing.deadAfterMillis)
                return Reply([w.bytes])

            case .heartbeat:
                let id = try r.u64("node id"), used = try r.u64("used"), capacity = try r.u64("capacity")
                try r.expectEnd("HEARTBEAT")
                try coordinator.heartbeat(id: id, used: used, capacity: capacity)
                return .empty

            case .listNodes:
                try r.expectEnd("LIST_NODES")
                return Reply([encodeMembership(coordinator.membership())])

            case .waitMembership:
                let known = try r.u64("version")
                let timeout = min(try r.u32("timeout"), 60_000)
                try r.expectEnd("WAIT_MEMBERSHIP")
                return Reply([encodeMembership(coordinator.waitMembership(after: known, timeoutMillis: timeout))])

            case .assignSlab:
                let space = try r.u64("space"), slab = try r.u64("slab"), bytes = try r.u64("slab bytes")
                try r.expectEnd("ASSIGN_SLAB")
                let n = try coordinator.assignSlab(space: space, slab: slab, slabBytes: bytes)
                var w = WireWriter()
                w.u64(n.id)
                w.string(n.address)
                return Reply([w.bytes])

            case .listSlabs:
                let space = try r.u64("space")
                try r.expectEnd("LIST_SLABS")
                let slabs = try coordinator.slabs(space: space)
                var w = WireWriter()
                w.u32(UInt32(slabs.count))
                for s in slabs { w.u64(s.slab); w.u64(s.node) }
                return Reply([w.bytes])

            case .dropSlabs:
                let space = try r.u64("space")
                try r.expectEnd("DROP_SLABS")
                try coordinator.dropSlabs(space: space)
                return .empty

            case .beginCheckpoint, .commitCheckpoint:
                let name = try r.string("name"), epoch = try r.u64("epoch")
                let record = try r.blob(limit: Int(WireLimits.maxFramePayload), "record")
                try r.expectEnd("checkpoint decision")
                if opcode == .beginCheckpoint {
                    try coordinator.beginCheckpoint(name: name, epoch: epoch, record: Data(record))
                } else {
                    try coordinator.commitCheckpoint(name: name, epoch: epoch, record: Data(record))
                }
                return .empty

            case .abortCheckpoint:
                let name = try r.string("name"), epoch = try r.u64("epoch"), reason = try r.string("reason")
                try r.expectEnd("ABORT_CHECKPOINT")
                try coordinator.abortCheckpoint(name: name, epoch: epoch, reason: reason)
                return .empty

            case .listCheckpoints:
                let name = try r.string("name")
                try r.expectEnd("LIST_CHECKPOINTS")
                let list = try coordinator.checkpoints(name: name)
                var w = WireWriter()
                w.u32(UInt32(list.count))
                for c in list {
                    w.string(c.name)
                    w.u64(c.epoch)
                    w.u8(c.state.wire)
                    w.u64(UInt64(c.begunAt * 1000))
                    w.u64(UInt64((c.decidedAt ?? 0) * 1000))
                    w.blob([UInt8](c.record))
                    w.string(c.reason ?? "")
                }
                return Reply([w.bytes])

            case .deleteCheckpoint:
                let name = try r.string("name"), epoch = try r.u64("epoch")
                try r.expectEnd("DELETE_CHECKPOINT")
                try coordinator.deleteCheckpoint(name: name, epoch: epoch)
                return .empty

            default:
                throw WireError.unknownOpcode(opcode.rawValue)
            }
        } catch let e as Coordinator.CoordinatorError {
            switch e {
            case .unknownNode, .noSuchCheckpoint: throw ServiceError(.notFound, e.description)
            case .badName, .epochNotNew, .notBegun: throw ServiceError(.badRequest, e.description)
            case .noMemoryNodes: throw ServiceError(.capacityExceeded, e.description)
            }
        } catch let e as LegatoError {
            log.error("store: \(e)")
            throw ServiceError(.internalError, "the coordinator's store failed: \(e)")
        } catch let e as SystemError {
            log.error("store: \(e)")
            throw ServiceError(.internalError, "the coordinator's store failed: \(e)")
        }
    }

    private func encodeMembership(_ m: (version: UInt64, nodes: [NodeStatus])) -> [UInt8] {
        var w = WireWriter()
        w.u64(m.version)
        w.u32(UInt32(m.nodes.count))
        for n in m.nodes {
            w.u64(n.id)
            w.u8(n.role.wire)
            w.string(n.address)
            w.u8(n.alive ? 1 : 0)
            w.u64(n.capacity)
            w.u64(n.used)
            w.u64(n.silentMillis)
        }
        return w.bytes
    }

    public func sessionClosed(_ session: Session) {}

    public func stats() -> String { StatsJSON.encode(statsRecord()) }

    public func statsRecord() -> CoordinatorStats {
        let m = coordinator.membership()
        return CoordinatorStats(store: coordinator.store.description, membershipVersion: m.version, nodes: m.nodes.count,
                                alive: m.nodes.filter { $0.alive }.count)
    }
}

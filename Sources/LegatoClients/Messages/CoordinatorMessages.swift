import Foundation
import LegatoWire

// The coordinator's requests (Docs/wire-protocol.md, "Coordinator"). Strings are u16 length + UTF-8,
// blobs u32 length + bytes.

/// REGISTER_NODE: a daemon joins (or, with the same uuid, rejoins) the cluster.
public struct RegisterNode: WireRequest, Equatable {
    public typealias Response = Registration
    public static let opcode = Opcode.registerNode
    public var role: NodeRole
    public var address: String
    public var capacity: UInt64
    public var uuid: String
    public init(role: NodeRole, address: String, capacity: UInt64, uuid: String) {
        self.role = role
        self.address = address
        self.capacity = capacity
        self.uuid = uuid
    }
    public func encode(to w: inout WireWriter) {
        w.u8(role.wire)
        w.string(address)
        w.u64(capacity)
        w.string(uuid)
    }
    public init(from r: inout WireReader) throws {
        role = try NodeRole(from: &r)
        address = try r.string("address")
        capacity = try r.u64("capacity")
        uuid = try r.string("uuid")
    }
}

/// The node's id and the heartbeat timing the coordinator holds it to.
public struct Registration: WireMessage, Equatable {
    public var id: UInt64
    public var heartbeatMillis: UInt32
    public var deadAfterMillis: UInt32
    public init(id: UInt64, heartbeatMillis: UInt32, deadAfterMillis: UInt32) {
        self.id = id
        self.heartbeatMillis = heartbeatMillis
        self.deadAfterMillis = deadAfterMillis
    }
    public func encode(to w: inout WireWriter) {
        w.u64(id)
        w.u32(heartbeatMillis)
        w.u32(deadAfterMillis)
    }
    public init(from r: inout WireReader) throws {
        id = try r.u64("node id")
        heartbeatMillis = try r.u32("heartbeat ms")
        deadAfterMillis = try r.u32("dead-after ms")
    }
}

/// HEARTBEAT: `notFound` once the node was declared dead (it registers again).
public struct Heartbeat: WireRequest, Equatable {
    public typealias Response = NoPayload
    public static let opcode = Opcode.heartbeat
    public var id: UInt64
    public var used: UInt64
    public var capacity: UInt64
    public init(id: UInt64, used: UInt64, capacity: UInt64) {
        self.id = id
        self.used = used
        self.capacity = capacity
    }
    public func encode(to w: inout WireWriter) {
        w.u64(id)
        w.u64(used)
        w.u64(capacity)
    }
    public init(from r: inout WireReader) throws {
        id = try r.u64("node id")
        used = try r.u64("used")
        capacity = try r.u64("capacity")
    }
}

public struct ListNodes: WireRequest, EmptyMessage, Equatable {
    public typealias Response = Membership
    public static let opcode = Opcode.listNodes
    public init() {}
}

/// WAIT_MEMBERSHIP: answered once the membership is newer than `known`, or at the timeout (≤ 60 s).
public struct WaitMembership: WireRequest, Equatable {
    public typealias Response = Membership
    public static let opcode = Opcode.waitMembership
    public static let maxTimeoutMillis: UInt32 = 60_000
    public var known: UInt64
    public var timeoutMillis: UInt32
    public init(known: UInt64, timeoutMillis: UInt32) {
        self.known = known
        self.timeoutMillis = timeoutMillis
    }
    public func encode(to w: inout WireWriter) {
        w.u64(known)
        w.u32(timeoutMillis)
    }
    public init(from r: inout WireReader) throws {
        known = try r.u64("known version")
        timeoutMillis = min(try r.u32("timeout ms"), Self.maxTimeoutMillis)
    }
}

/// Every node the coordinator knows, and the version of that list.
public struct Membership: WireMessage, Equatable {
    public var version: UInt64
    public var nodes: [NodeStatus]
    public init(version: UInt64, nodes: [NodeStatus]) {
        self.version = version
        self.nodes = nodes
    }
    public func encode(to w: inout WireWriter) {
        w.u64(version)
        w.u32(UInt32(nodes.count))
        for n in nodes {
            w.u64(n.id)
            w.u8(n.role.wire)
            w.string(n.address)
            w.u8(n.alive ? 1 : 0)
            w.u64(n.capacity)
            w.u64(n.used)
            w.u64(n.silentMillis)
        }
    }
    public init(from r: inout WireReader) throws {
        version = try r.u64("version")
        let n = try r.count(itemSize: 8 + 1 + 2 + 1 + 24, limit: 1 << 20, "nodes")
        nodes = try (0..<n).map { _ in
            NodeStatus(id: try r.u64("id"), role: try NodeRole(from: &r), address: try r.string("address"), alive: try r.bool("alive"),
                       capacity: try r.u64("capacity"), used: try r.u64("used"), silentMillis: try r.u64("silent ms"))
        }
    }
}

/// ASSIGN_SLAB: the memory node that holds a slab of a space (placed now if new).
public struct AssignSlab: WireRequest, Equatable {
    public typealias Response = SlabPlacement
    public static let opcode = Opcode.assignSlab
    public var space: UInt64
    public var slab: UInt64
    public var slabBytes: UInt64
    public init(space: UInt64, slab: UInt64, slabBytes: UInt64) {
        self.space = space
        self.slab = slab
        self.slabBytes = slabBytes
    }
    public func encode(to w: inout WireWriter) {
        w.u64(space)
        w.u64(slab)
        w.u64(slabBytes)
    }
    public init(from r: inout WireReader) throws {
        space = try r.u64("space")
        slab = try r.u64("slab")
        slabBytes = try r.u64("slab bytes")
    }
}

public struct SlabPlacement: WireMessage, Equatable {
    public var node: UInt64
    public var address: String
    public init(node: UInt64, address: String) {
        self.node = node
        self.address = address
    }
    public func encode(to w: inout WireWriter) {
        w.u64(node)
        w.string(address)
    }
    public init(from r: inout WireReader) throws {
        node = try r.u64("node id")
        address = try r.string("address")
    }
}

/// LIST_SLABS: where each placed slab of a space lives.
public struct ListSlabs: WireRequest, Equatable {
    public typealias Response = SlabList
    public static let opcode = Opcode.listSlabs
    public var space: UInt64
    public init(space: UInt64) { self.space = space }
    public func encode(to w: inout WireWriter) { w.u64(space) }
    public init(from r: inout WireReader) throws { space = try r.u64("space") }
}

public struct SlabList: WireMessage, Equatable {
    public struct Slab: Equatable, Sendable {
        public var slab: UInt64
        public var node: UInt64
        public init(slab: UInt64, node: UInt64) {
            self.slab = slab
            self.node = node
        }
    }
    public var slabs: [Slab]
    public init(_ slabs: [Slab]) { self.slabs = slabs }
    public func encode(to w: inout WireWriter) {
        w.u32(UInt32(slabs.count))
        for s in slabs {
            w.u64(s.slab)
            w.u64(s.node)
        }
    }
    public init(from r: inout WireReader) throws {
        let n = try r.count(itemSize: 16, limit: 1 << 24, "slabs")
        slabs = try (0..<n).map { _ in Slab(slab: try r.u64("slab"), node: try r.u64("node id")) }
    }
}

/// DROP_SLABS: forgets every slab placement of a space.
public struct DropSlabs: WireRequest, Equatable {
    public typealias Response = NoPayload
    public static let opcode = Opcode.dropSlabs
    public var space: UInt64
    public init(space: UInt64) { self.space = space }
    public func encode(to w: inout WireWriter) { w.u64(space) }
    public init(from r: inout WireReader) throws { space = try r.u64("space") }
}

/// BEGIN_CHECKPOINT and COMMIT_CHECKPOINT: one layout, a decision of the two-phase commit with the
/// agent's record of the checkpoint (opaque to the coordinator).
public protocol CheckpointDecision: WireRequest where Response == NoPayload {
    var name: String { get }
    var epoch: UInt64 { get }
    var record: [UInt8] { get }
    init(name: String, epoch: UInt64, record: [UInt8])
}

extension CheckpointDecision {
    public func encode(to w: inout WireWriter) {
        w.string(name)
        w.u64(epoch)
        w.blob(record)
    }
    public init(from r: inout WireReader) throws {
        self.init(name: try r.string("name"), epoch: try r.u64("epoch"),
                  record: try r.blob(limit: Int(WireLimits.maxFramePayload), "record"))
    }
}

public struct BeginCheckpoint: CheckpointDecision, Equatable {
    public static let opcode = Opcode.beginCheckpoint
    public var name: String
    public var epoch: UInt64
    public var record: [UInt8]
    public init(name: String, epoch: UInt64, record: [UInt8]) {
        self.name = name
        self.epoch = epoch
        self.record = record
    }
}

/// COMMIT_CHECKPOINT: the commit point of a checkpoint.
public struct CommitCheckpoint: CheckpointDecision, Equatable {
    public static let opcode = Opcode.commitCheckpoint
    public var name: String
    public var epoch: UInt64
    public var record: [UInt8]
    public init(name: String, epoch: UInt64, record: [UInt8]) {
        self.name = name
        self.epoch = epoch
        self.record = record
    }
}

public struct AbortCheckpoint: WireRequest, Equatable {
    public typealias Response = NoPayload
    public static let opcode = Opcode.abortCheckpoint
    public var name: String
    public var epoch: UInt64
    public var reason: String
    public init(name: String, epoch: UInt64, reason: String) {
        self.name = name
        self.epoch = epoch
        self.reason = reason
    }
    public func encode(to w: inout WireWriter) {
        w.string(name)
        w.u64(epoch)
        w.string(reason)
    }
    public init(from r: inout WireReader) throws {
        name = try r.string("name")
        epoch = try r.u64("epoch")
        reason = try r.string("reason")
    }
}

/// LIST_CHECKPOINTS: the decision records of a named run ("" for every run).
public struct ListCheckpoints: WireRequest, Equatable {
    public typealias Response = CheckpointList
    public static let opcode = Opcode.listCheckpoints
    public var name: String
    public init(name: String) { self.name = name }
    public func encode(to w: inout WireWriter) { w.string(name) }
    public init(from r: inout WireReader) throws { name = try r.string("name") }
}

/// Decision records; times travel as whole milliseconds (0: not decided).
public struct CheckpointList: WireMessage, Equatable {
    public var records: [CheckpointRecord]
    public init(_ records: [CheckpointRecord]) { self.records = records }
    public func encode(to w: inout WireWriter) {
        w.u32(UInt32(records.count))
        for c in records {
            w.string(c.name)
            w.u64(c.epoch)
            w.u8(c.state.wire)
            w.u64(UInt64(c.begunAt * 1000))
            w.u64(UInt64((c.decidedAt ?? 0) * 1000))
            w.blob([UInt8](c.record))
            w.string(c.reason ?? "")
        }
    }
    public init(from r: inout WireReader) throws {
        let n = try r.count(itemSize: 2 + 8 + 1 + 16 + 4 + 2, limit: 1 << 20, "checkpoints")
        records = try (0..<n).map { _ in
            let name = try r.string("name"), epoch = try r.u64("epoch")
            guard let state = CheckpointState(wire: try r.u8("state")) else { throw WireError.malformed("checkpoint state") }
            let begun = Double(try r.u64("begun ms")) / 1000, decided = Double(try r.u64("decided ms")) / 1000
            let record = try r.blob(limit: Int(WireLimits.maxFramePayload), "record")
            let reason = try r.string("reason")
            return CheckpointRecord(name: name, epoch: epoch, state: state, begunAt: begun, decidedAt: decided > 0 ? decided : nil,
                                    record: Data(record), reason: reason.isEmpty ? nil : reason)
        }
    }
}

public struct DeleteCheckpoint: WireRequest, Equatable {
    public typealias Response = NoPayload
    public static let opcode = Opcode.deleteCheckpoint
    public var name: String
    public var epoch: UInt64
    public init(name: String, epoch: UInt64) {
        self.name = name
        self.epoch = epoch
    }
    public func encode(to w: inout WireWriter) {
        w.string(name)
        w.u64(epoch)
    }
    public init(from r: inout WireReader) throws {
        name = try r.string("name")
        epoch = try r.u64("epoch")
    }
}

/// PLAN_RECOVERY: a memory node holding slabs of `space` died; the coordinator splits them into
/// partitions over the live memory nodes (but the dead one), sized by each node's free room, records
/// the new placement and answers which node recovers which slabs.
public struct PlanRecovery: WireRequest, Equatable {
    public typealias Response = RecoveryPlan
    public static let opcode = Opcode.planRecovery
    public struct Slab: Equatable, Sendable {
        public var slab: UInt64
        public var pages: UInt64
        public init(slab: UInt64, pages: UInt64) {
            self.slab = slab
            self.pages = pages
        }
    }
    public var space: UInt64
    /// The dead node's address as the coordinator lists it.
    public var deadAddress: String
    /// Other memory nodes the asker knows dead (the coordinator may not have noticed yet).
    public var alsoDead: [String]
    public var slabs: [Slab]
    public init(space: UInt64, deadAddress: String, alsoDead: [String] = [], slabs: [Slab]) {
        self.space = space
        self.deadAddress = deadAddress
        self.alsoDead = alsoDead
        self.slabs = slabs
    }
    public func encode(to w: inout WireWriter) {
        w.u64(space)
        w.string(deadAddress)
        w.u32(UInt32(alsoDead.count))
        for a in alsoDead { w.string(a) }
        w.u32(UInt32(slabs.count))
        for s in slabs {
            w.u64(s.slab)
            w.u64(s.pages)
        }
    }
    public init(from r: inout WireReader) throws {
        space = try r.u64("space")
        deadAddress = try r.string("dead address")
        let k = try r.count(itemSize: 2, limit: 1 << 16, "other dead nodes")
        alsoDead = try (0..<k).map { _ in try r.string("dead address") }
        let n = try r.count(itemSize: 16, limit: 1 << 20, "slabs")
        slabs = try (0..<n).map { _ in Slab(slab: try r.u64("slab"), pages: try r.u64("pages")) }
    }
}

public struct RecoveryPlan: WireMessage, Equatable {
    public struct Partition: Equatable, Sendable {
        public var node: UInt64
        public var address: String
        public var slabs: [UInt64]
        public init(node: UInt64, address: String, slabs: [UInt64]) {
            self.node = node
            self.address = address
            self.slabs = slabs
        }
    }
    public var partitions: [Partition]
    public init(partitions: [Partition]) { self.partitions = partitions }
    public func encode(to w: inout WireWriter) {
        w.u32(UInt32(partitions.count))
        for p in partitions {
            w.u64(p.node)
            w.string(p.address)
            w.u32(UInt32(p.slabs.count))
            for s in p.slabs { w.u64(s) }
        }
    }
    public init(from r: inout WireReader) throws {
        let n = try r.count(itemSize: 8 + 2 + 4, limit: 1 << 16, "partitions")
        partitions = try (0..<n).map { _ in
            let node = try r.u64("node id"), address = try r.string("address")
            let k = try r.count(itemSize: 8, limit: 1 << 20, "slabs")
            return Partition(node: node, address: address, slabs: try r.u64Array(k, "slabs"))
        }
    }
}

extension NodeRole {
    init(from r: inout WireReader) throws {
        let v = try r.u8("role")
        guard let role = NodeRole(wire: v) else { throw WireError.malformed("unknown node role \(v)") }
        self = role
    }
}

extension Membership {
    public init(_ m: (version: UInt64, nodes: [NodeStatus])) { self.init(version: m.version, nodes: m.nodes) }
}

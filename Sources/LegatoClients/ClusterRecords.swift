import Foundation

/// What the coordinator keeps in its store, one JSON document per key.
///
///     meta/next-node-id                       {"value": N}
///     nodes/<id, 16 hex>                      NodeRecord
///     slabs/<space, 16 hex>/<slab, 16 hex>    SlabRecord
///     checkpoints/<name>/<epoch, 16 hex>      CheckpointRecord
public enum NodeRole: String, Codable, CaseIterable, Sendable {
    case memory, log

    public var wire: UInt8 { self == .memory ? 1 : 2 }
    public init?(wire: UInt8) {
        switch wire {
        case 1: self = .memory
        case 2: self = .log
        default: return nil
        }
    }
}

public struct NodeRecord: Codable, Equatable, Sendable {
    public var id: UInt64
    public var role: NodeRole
    public var address: String
    public var capacity: UInt64
    public var uuid: String
    public var registeredAt: Double
    public var dead: Bool

    public init(id: UInt64, role: NodeRole, address: String, capacity: UInt64, uuid: String, registeredAt: Double, dead: Bool) {
        self.id = id
        self.role = role
        self.address = address
        self.capacity = capacity
        self.uuid = uuid
        self.registeredAt = registeredAt
        self.dead = dead
    }
}

public struct SlabRecord: Codable, Equatable, Sendable {
    public var space: UInt64
    public var slab: UInt64
    public var node: UInt64

    public init(space: UInt64, slab: UInt64, node: UInt64) {
        self.space = space
        self.slab = slab
        self.node = node
    }
}

public enum CheckpointState: String, Codable, Sendable {
    case begun, committed, aborted
    public var wire: UInt8 { switch self { case .begun: return 1; case .committed: return 2; case .aborted: return 3 } }
    public init?(wire: UInt8) {
        switch wire {
        case 1: self = .begun
        case 2: self = .committed
        case 3: self = .aborted
        default: return nil
        }
    }
}

/// The decision record of one checkpoint's two-phase commit. `record` is the agent's own
/// description of the checkpoint (opaque here); it is restorable iff `state` is committed.
public struct CheckpointRecord: Codable, Equatable, Sendable {
    public var name: String
    public var epoch: UInt64
    public var state: CheckpointState
    public var begunAt: Double
    public var decidedAt: Double?
    public var record: Data
    public var reason: String?

    public init(name: String, epoch: UInt64, state: CheckpointState, begunAt: Double, decidedAt: Double? = nil, record: Data, reason: String? = nil) {
        self.name = name
        self.epoch = epoch
        self.state = state
        self.begunAt = begunAt
        self.decidedAt = decidedAt
        self.record = record
        self.reason = reason
    }
}

/// A node as the coordinator sees it now (membership).
public struct NodeStatus: Equatable, Sendable {
    public var id: UInt64
    public var role: NodeRole
    public var address: String
    public var alive: Bool
    public var capacity: UInt64
    public var used: UInt64
    public var silentMillis: UInt64

    public init(id: UInt64, role: NodeRole, address: String, alive: Bool, capacity: UInt64, used: UInt64, silentMillis: UInt64) {
        self.id = id
        self.role = role
        self.address = address
        self.alive = alive
        self.capacity = capacity
        self.used = used
        self.silentMillis = silentMillis
    }
}

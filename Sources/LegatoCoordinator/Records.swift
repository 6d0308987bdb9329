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
}

public struct SlabRecord: Codable, Equatable, Sendable {
    public var space: UInt64
    public var slab: UInt64
    public var node: UInt64
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
}

enum StoreKeys {
    static let nextNodeID = "meta/next-node-id"
    static func node(_ id: UInt64) -> String { "nodes/" + hex(id) }
    static func slab(_ space: UInt64, _ slab: UInt64) -> String { "slabs/" + hex(space) + "/" + hex(slab) }
    static func slabs(_ space: UInt64) -> String { "slabs/" + hex(space) + "/" }
    static func checkpoint(_ name: String, _ epoch: UInt64) -> String { "checkpoints/" + name + "/" + hex(epoch) }
    static func checkpoints(_ name: String) -> String { name.isEmpty ? "checkpoints/" : "checkpoints/" + name + "/" }

    static func hex(_ v: UInt64) -> String {
        let s = String(v, radix: 16)
        return String(repeating: "0", count: max(0, 16 - s.count)) + s
    }
}

extension CoordinatorStore {
    func getJSON<T: Decodable>(_ type: T.Type, _ key: String) throws -> T? {
        guard let b = try get(key) else { return nil }
        return try JSONDecoder().decode(T.self, from: Data(b))
    }

    func putJSON<T: Encodable>(_ key: String, _ value: T) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        try put(key, [UInt8](try enc.encode(value)))
    }
}

import Foundation

/// Where the coordinator keeps each record in its key-value store, and JSON records over it.
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

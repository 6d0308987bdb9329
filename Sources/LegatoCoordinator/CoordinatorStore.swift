import Foundation
import LegatoCore
import LegatoSystem
import LegatoWire

/// Where the coordinator keeps its state: a key-value store it does not implement itself.
/// SQLite (one file) by default; etcd (its v3 API) for real clusters. Keys are paths
/// (`nodes/0000000000000001`), values JSON documents.
public protocol CoordinatorStore: AnyObject {
    var description: String { get }
    func get(_ key: String) throws -> [UInt8]?
    func put(_ key: String, _ value: [UInt8]) throws
    func delete(_ key: String) throws
    func list(prefix: String) throws -> [(key: String, value: [UInt8])]
}

/// Parses `--store sqlite:PATH` or `--store etcd:http://HOST:PORT`.
public func openCoordinatorStore(_ spec: String) throws -> CoordinatorStore {
    if spec.hasPrefix("sqlite:") { return try SQLiteStore(path: String(spec.dropFirst("sqlite:".count))) }
    if spec.hasPrefix("etcd:") {
        var url = String(spec.dropFirst("etcd:".count))
        if url.hasPrefix("http://") { url.removeFirst("http://".count) }
        var prefix = "/legato/"
        if let slash = url.firstIndex(of: "/") {
            let p = String(url[slash...])
            if p.count > 1 { prefix = p.hasSuffix("/") ? p : p + "/" }
            url = String(url[..<slash])
        }
        guard let ep = Endpoint(parsing: url) else {
            throw CoordinatorStoreError.badSpec("--store etcd:http://HOST:PORT[/PREFIX] expected, got '\(spec)'")
        }
        return try EtcdStore(endpoint: ep, prefix: prefix)
    }
    throw CoordinatorStoreError.badSpec("--store must be sqlite:PATH or etcd:http://HOST:PORT[/PREFIX], got '\(spec)'")
}

public final class SQLiteStore: CoordinatorStore {
    private let kv: Sys.SQLiteKV
    public var description: String { "sqlite:\(kv.path)" }

    public init(path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        kv = try Sys.SQLiteKV(path: path)
    }

    public func get(_ key: String) throws -> [UInt8]? { try kv.get(key) }
    public func put(_ key: String, _ value: [UInt8]) throws { try kv.put(key, value) }
    public func delete(_ key: String) throws { try kv.delete(key) }
    public func list(prefix: String) throws -> [(key: String, value: [UInt8])] { try kv.list(prefix: prefix).map { ($0.0, $0.1) } }
}

/// etcd through its v3 JSON gateway (`/v3/kv/...`, base64 keys and values). Every call goes to
/// etcd, which replicates it; the coordinator keeps nothing of its own on disk.
///
/// Several coordinators share one etcd and one leads (LeaderElection): once `fence` is set, every
/// write is a transaction that succeeds only while the leader key is still the one this coordinator
/// created, so a coordinator that lost its lease cannot write over its successor's decisions.
public final class EtcdStore: CoordinatorStore {
    public let endpoint: Endpoint
    let prefix: String
    public var description: String { "etcd:http://\(endpoint)\(prefix)" }
    private let fenceLock = Lock()
    private var fenceKey: (key: String, createRevision: String)?

    /// From now on writes succeed only while `key` (under the prefix) has this create revision.
    func fence(key: String, createRevision: String) { fenceLock.withLock { fenceKey = (prefix + key, createRevision) } }

    /// Every key lives under `prefix` (several clusters can share one etcd).
    public init(endpoint: Endpoint, prefix: String = "/legato/") throws {
        self.endpoint = endpoint
        self.prefix = prefix
        _ = try call("/v3/kv/range", ["key": b64(prefix + "probe")])
    }

    func b64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }

    func call(_ path: String, _ body: [String: Any]) throws -> [String: Any] {
        let r: HTTPClient.Response
        do { r = try HTTPClient.post(host: endpoint.host, port: endpoint.port, path: path, json: body) } catch {
            throw CoordinatorStoreError.etcd("etcd at \(endpoint) unreachable: \(error)")
        }
        guard let obj = try? JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any] else {
            throw CoordinatorStoreError.etcd("etcd at \(endpoint) answered \(path) with HTTP \(r.status) and no JSON")
        }
        guard r.status == 200 else { throw CoordinatorStoreError.etcd("etcd at \(endpoint) refused \(path): HTTP \(r.status) \(obj["error"] ?? obj["message"] ?? "")") }
        return obj
    }

    public func get(_ key: String) throws -> [UInt8]? {
        let r = try call("/v3/kv/range", ["key": b64(prefix + key)])
        guard let kvs = r["kvs"] as? [[String: Any]], let v = kvs.first?["value"] as? String else { return nil }
        return Data(base64Encoded: v).map { [UInt8]($0) } ?? []
    }

    public func put(_ key: String, _ value: [UInt8]) throws {
        try write(["request_put": ["key": b64(prefix + key), "value": Data(value).base64EncodedString()]], "/v3/kv/put")
    }

    public func delete(_ key: String) throws {
        try write(["request_delete_range": ["key": b64(prefix + key)]], "/v3/kv/deleterange")
    }

    /// One write: plain, or under the fence as a transaction (request `op`, or its plain `path`).
    private func write(_ op: [String: [String: String]], _ path: String) throws {
        guard let fence = fenceLock.withLock({ fenceKey }) else {
            _ = try call(path, op.first!.value)
            return
        }
        let r = try call("/v3/kv/txn", [
            "compare": [["key": b64(fence.key), "result": "EQUAL", "target": "CREATE", "create_revision": fence.createRevision]],
            "success": [op],
        ])
        guard r["succeeded"] as? Bool == true else { throw CoordinatorStoreError.notLeader("this coordinator's leadership in \(description) has ended") }
    }

    public func list(prefix p: String) throws -> [(key: String, value: [UInt8])] {
        let start = prefix + p
        var end = Array(start.utf8)
        end[end.count - 1] += 1  // the range end of a prefix: its last byte plus one
        let r = try call("/v3/kv/range", ["key": b64(start), "range_end": Data(end).base64EncodedString(), "sort_order": "ASCEND", "sort_target": "KEY"])
        let kvs = r["kvs"] as? [[String: Any]] ?? []
        return kvs.compactMap { kv in
            guard let k = (kv["key"] as? String).flatMap({ Data(base64Encoded: $0) }),
                  let key = String(data: k, encoding: .utf8), key.hasPrefix(prefix) else { return nil }
            let v = (kv["value"] as? String).flatMap { Data(base64Encoded: $0) }.map { [UInt8]($0) } ?? []
            return (String(key.dropFirst(prefix.count)), v)
        }
    }
}

/// The coordinator's store refused or failed (answered to peers as internalError).
public enum CoordinatorStoreError: Error, CustomStringConvertible, Equatable {
    /// A --store argument that names no store.
    case badSpec(String)
    /// etcd unreachable or refusing.
    case etcd(String)
    /// A write refused because another coordinator leads now.
    case notLeader(String)
    public var description: String {
        switch self {
        case .badSpec(let why), .etcd(let why), .notLeader(let why): return why
        }
    }
}

import Foundation
import LegatoCore
import LegatoSystem

/// Which of several coordinators sharing one etcd leads: the one whose lease holds the leader key
/// (`leader` under the store's prefix, its value the leader's address). Each coordinator keeps a
/// lease of `ttl` alive and tries to create the key under it; the one that does leads until its
/// lease ends (etcd then deletes the key, and a follower's next try takes it). A leader that cannot
/// renew its lease within the ttl has lost it: it must stop deciding at once (`onLost`), and its
/// store's writes are fenced on the key meanwhile.
public final class LeaderElection {
    public static let key = "leader"

    private let store: EtcdStore
    private let address: String
    private let ttlSeconds: Int
    private let log: Logger
    private let lock = Lock()
    private var knownLeader: String?
    private var leading = false

    /// `address`: where this coordinator serves (what followers tell clients to use).
    public init(store: EtcdStore, address: String, ttlSeconds: Int, log: Logger) {
        self.store = store
        self.address = address
        self.ttlSeconds = max(2, ttlSeconds)
        self.log = log
    }

    /// The leader's address as last seen (nil: none known yet); this one's own once it leads.
    public var leader: String? { lock.withLock { knownLeader } }
    public var isLeader: Bool { lock.withLock { leading } }

    /// Campaigns on a thread of its own: `onElected` runs (on that thread) once this coordinator
    /// leads, with the store fenced on its leadership; `onLost` once it no longer does.
    public func start(onElected: @escaping () -> Void, onLost: @escaping (String) -> Void) {
        startThread(name: "election") { [self] in
            var lease: String?
            var renewed = monotonicNanos()
            while true {
                do {
                    if lease == nil {
                        lease = try store.grantLease(ttlSeconds: ttlSeconds)
                        renewed = monotonicNanos()
                    }
                    let c = try store.campaign(key: Self.key, value: address, lease: lease!)
                    lock.withLock { knownLeader = c.holder }
                    if c.won {
                        store.fence(key: Self.key, createRevision: c.createRevision)
                        lock.withLock { leading = true }
                        log.info("leading the cluster (lease \(lease!), \(ttlSeconds) s)")
                        onElected()
                        onLost(hold(lease: lease!))
                        return
                    }
                    // Following: keep our lease alive for the next try.
                    if try store.keepAlive(lease: lease!) <= 0 { lease = nil } else { renewed = monotonicNanos() }
                } catch {
                    if monotonicNanos() - renewed > UInt64(ttlSeconds) * 1_000_000_000 { lease = nil }
                    log.warning("campaigning for the lead in \(store.description): \(error)")
                }
                usleep(UInt32(min(500_000, ttlSeconds * 1_000_000 / 6)))
            }
        }
    }

    /// Renews the lease every third of its ttl while it can; returns why leadership ended.
    private func hold(lease: String) -> String {
        var renewed = monotonicNanos()
        let ttl = UInt64(ttlSeconds) * 1_000_000_000
        while true {
            usleep(UInt32(ttlSeconds * 1_000_000 / 3))
            do {
                if try store.keepAlive(lease: lease) <= 0 { return "the lease \(lease) expired in etcd" }
                renewed = monotonicNanos()
            } catch {
                // Past the ttl etcd has ended the lease: another coordinator may lead already.
                if monotonicNanos() - renewed >= ttl * 9 / 10 { return "the lease \(lease) could not be renewed for \(ttlSeconds) s: \(error)" }
                log.warning("renewing the leadership lease: \(error)")
            }
        }
    }
}

extension EtcdStore {
    /// A new lease of `ttlSeconds`; its id.
    func grantLease(ttlSeconds: Int) throws -> String {
        let r = try call("/v3/lease/grant", ["TTL": String(ttlSeconds)])
        guard let id = r["ID"] as? String, !id.isEmpty else { throw CoordinatorStoreError.etcd("etcd at \(endpoint) granted no lease: \(r)") }
        return id
    }

    /// Renews the lease; its ttl left (0: it has expired).
    func keepAlive(lease: String) throws -> Int {
        let r = try call("/v3/lease/keepalive", ["ID": lease])
        let result = r["result"] as? [String: Any] ?? [:]
        return Int(result["TTL"] as? String ?? "0") ?? 0
    }

    /// Creates `key` with `value` under `lease` unless it exists: whether this call created it, the
    /// value it holds (the leader's address) and its create revision.
    func campaign(key: String, value: String, lease: String) throws -> (won: Bool, holder: String?, createRevision: String) {
        let k = b64(prefix + key)
        let r = try call("/v3/kv/txn", [
            "compare": [["key": k, "result": "EQUAL", "target": "CREATE", "create_revision": "0"]],
            "success": [["request_put": ["key": k, "value": b64(value), "lease": lease]], ["request_range": ["key": k]]],
            "failure": [["request_range": ["key": k]]],
        ])
        let won = r["succeeded"] as? Bool == true
        let responses = r["responses"] as? [[String: Any]] ?? []
        let range = responses.compactMap { $0["response_range"] as? [String: Any] }.first
        let kv = (range?["kvs"] as? [[String: Any]])?.first
        let holder = (kv?["value"] as? String).flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) }
        guard let revision = kv?["create_revision"] as? String else {
            // (The key vanished between the compare and the read: its lease ended. Try again.)
            throw CoordinatorStoreError.etcd("etcd at \(endpoint): the leader key vanished during the election")
        }
        return (won, holder, revision)
    }
}

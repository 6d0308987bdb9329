import Foundation
import LegatoCore
import LegatoSystem
import LegatoWire

/// The caller's side of the coordinator (messages in Messages/CoordinatorMessages.swift). Not thread-safe:
/// one client per thread.
///
/// A cluster may have several coordinators (one leads, on etcd): `endpoint` names the cluster's
/// coordinators as registered in CoordinatorPeers (`--coordinator A,B`). The client connects to the
/// leader and, when its connection fails or it answers NOT_LEADER, finds the leader again and
/// retries the call (for up to `failoverSeconds`): every coordinator request is safe to repeat.
public final class CoordinatorClient {
    public private(set) var rpc: RPCClient
    public var endpoint: Endpoint { rpc.endpoint }
    /// The name the caller knows the coordinators by (the first of their list).
    public let cluster: Endpoint
    private let secret: ClusterSecret
    private let token: [UInt8]
    private let ioTimeoutSeconds: Double
    /// How long a call looks for a leader when there are several coordinators.
    public static let failoverSeconds = 30.0

    public init(endpoint: Endpoint, secret: ClusterSecret, token: [UInt8] = Sys.randomBytes(32), ioTimeoutSeconds: Double = 90) throws {
        cluster = endpoint
        self.secret = secret
        self.token = token
        self.ioTimeoutSeconds = ioTimeoutSeconds
        rpc = try Self.connectToLeader(cluster: endpoint, secret: secret, token: token, ioTimeoutSeconds: ioTimeoutSeconds)
    }

    public func close() { rpc.close() }

    private static func connect(_ ep: Endpoint, secret: ClusterSecret, token: [UInt8], ioTimeoutSeconds: Double) throws -> RPCClient {
        do {
            return try RPCClient(endpoint: ep, secret: secret, token: token, ioTimeoutSeconds: ioTimeoutSeconds)
        } catch let e as WireError {
            throw CoordinatorConnectionError.cannotTalk(ep, "\(e)")
        } catch {
            throw CoordinatorConnectionError.cannotReach(ep, "\(error)")
        }
    }

    /// A connection to the first of the cluster's coordinators that answers and leads (with one
    /// coordinator, to it: it leads). Several: tried in turn, the last leader named first, for up to
    /// `failoverSeconds`.
    private static func connectToLeader(cluster: Endpoint, secret: ClusterSecret, token: [UInt8], ioTimeoutSeconds: Double) throws -> RPCClient {
        let candidates = CoordinatorPeers.candidates(for: cluster)
        if candidates.count == 1 { return try connect(candidates[0], secret: secret, token: token, ioTimeoutSeconds: ioTimeoutSeconds) }
        let deadline = monotonicNanos() + UInt64(failoverSeconds * 1e9)
        var lastError: Error = CoordinatorConnectionError.cannotReach(cluster, "no coordinator leads")
        while true {
            for ep in CoordinatorPeers.candidates(for: cluster) {
                do {
                    let c = try connect(ep, secret: secret, token: token, ioTimeoutSeconds: ioTimeoutSeconds)
                    do {
                        try c.ping()
                        _ = try c.call(ListNodes())
                        CoordinatorPeers.noteLeader(ep, of: cluster)
                        return c
                    } catch {
                        c.close()
                        throw error
                    }
                } catch let e as RemoteError where e.status == .notLeader {
                    if let leader = Endpoint(parsing: e.message) { CoordinatorPeers.noteLeader(leader, of: cluster) }
                    lastError = e
                } catch {
                    lastError = error
                }
            }
            if monotonicNanos() > deadline { throw lastError }
            usleep(100_000)
        }
    }

    /// Whether the last call was sent again after a connection failed (its first may have been done).
    private var sentAgain = false

    /// `request` to the leader. Answered NOT_LEADER (an election is under way), it is sent again
    /// once a leader answers; with several coordinators, also when the connection failed.
    private func call<R: WireRequest>(_ request: R) throws -> R.Response {
        let several = CoordinatorPeers.candidates(for: cluster).count > 1
        let deadline = monotonicNanos() + UInt64(Self.failoverSeconds * 1e9)
        sentAgain = false
        while true {
            do { return try rpc.call(request) } catch let e as RemoteError {
                guard e.status == .notLeader, monotonicNanos() < deadline else { throw e }
                if let leader = Endpoint(parsing: e.message) { CoordinatorPeers.noteLeader(leader, of: cluster) }
                if !several {
                    usleep(100_000)
                    continue
                }
            } catch {
                guard several, monotonicNanos() < deadline else { throw error }
                sentAgain = true
            }
            rpc.close()
            usleep(50_000)
            if let c = try? Self.connectToLeader(cluster: cluster, secret: secret, token: token, ioTimeoutSeconds: ioTimeoutSeconds) { rpc = c }
        }
    }

    public func register(role: NodeRole, address: String, capacity: UInt64, uuid: String) throws -> Registration {
        try call(RegisterNode(role: role, address: address, capacity: capacity, uuid: uuid))
    }

    public func heartbeat(id: UInt64, used: UInt64, capacity: UInt64) throws {
        _ = try call(Heartbeat(id: id, used: used, capacity: capacity))
    }

    public func nodes() throws -> (version: UInt64, nodes: [NodeStatus]) {
        let m = try call(ListNodes())
        return (m.version, m.nodes)
    }

    /// Returns when the membership is newer than `known`, or after `timeoutMillis`.
    public func waitMembership(after known: UInt64, timeoutMillis: UInt32) throws -> (version: UInt64, nodes: [NodeStatus]) {
        let m = try call(WaitMembership(known: known, timeoutMillis: timeoutMillis))
        return (m.version, m.nodes)
    }

    public func assignSlab(space: UInt64, slab: UInt64, slabBytes: UInt64) throws -> (id: UInt64, address: String) {
        let p = try call(AssignSlab(space: space, slab: slab, slabBytes: slabBytes))
        return (p.node, p.address)
    }

    public func slabs(space: UInt64) throws -> [(slab: UInt64, node: UInt64)] {
        try call(ListSlabs(space: space)).slabs.map { ($0.slab, $0.node) }
    }

    public func dropSlabs(space: UInt64) throws { _ = try call(DropSlabs(space: space)) }

    /// Which live memory node recovers which of `slabs` (see PlanRecovery).
    public func planRecovery(space: UInt64, deadAddress: String, alsoDead: [String], slabs: [PlanRecovery.Slab]) throws -> [RecoveryPlan.Partition] {
        try call(PlanRecovery(space: space, deadAddress: deadAddress, alsoDead: alsoDead, slabs: slabs)).partitions
    }

    public func beginCheckpoint(name: String, epoch: UInt64, record: [UInt8]) throws {
        do { _ = try call(BeginCheckpoint(name: name, epoch: epoch, record: record)) } catch let e as RemoteError where e.status == .badRequest && sentAgain {
            // Sent again after a failover: refused as "not new" if the first one was recorded.
            guard try checkpoints(name: name).contains(where: { $0.epoch == epoch && $0.state == .begun && $0.record == Data(record) }) else { throw e }
        }
    }

    public func commitCheckpoint(name: String, epoch: UInt64, record: [UInt8]) throws {
        _ = try call(CommitCheckpoint(name: name, epoch: epoch, record: record))
    }

    public func abortCheckpoint(name: String, epoch: UInt64, reason: String) throws {
        _ = try call(AbortCheckpoint(name: name, epoch: epoch, reason: reason))
    }

    public func checkpoints(name: String = "") throws -> [CheckpointRecord] { try call(ListCheckpoints(name: name)).records }

    public func deleteCheckpoint(name: String, epoch: UInt64) throws {
        _ = try call(DeleteCheckpoint(name: name, epoch: epoch))
    }
}

/// A coordinator that could not be connected to.
public enum CoordinatorConnectionError: Error, CustomStringConvertible, Equatable {
    /// It answered, but the handshake failed (another cluster's secret, another protocol).
    case cannotTalk(Endpoint, String)
    case cannotReach(Endpoint, String)
    public var description: String {
        switch self {
        case .cannotTalk(let ep, let why): return "cannot talk to the coordinator at \(ep): \(why)"
        case .cannotReach(let ep, let why): return "cannot reach the coordinator at \(ep): \(why)"
        }
    }
}

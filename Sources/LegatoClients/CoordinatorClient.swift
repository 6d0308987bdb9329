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
            throw CoordinatorConnectionError.cannotTalk(endpoint, "\(e)")
        } catch {
            throw CoordinatorConnectionError.cannotReach(endpoint, "\(error)")
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

    /// Which live memory node recovers which of `slabs` (see PlanRecovery).
    public func planRecovery(space: UInt64, deadAddress: String, alsoDead: [String], slabs: [PlanRecovery.Slab]) throws -> [RecoveryPlan.Partition] {
        try rpc.call(PlanRecovery(space: space, deadAddress: deadAddress, alsoDead: alsoDead, slabs: slabs)).partitions
    }

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

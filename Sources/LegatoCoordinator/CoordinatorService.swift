import Foundation
import LegatoClients
import LegatoCore
import LegatoSystem
import LegatoWire

/// The coordinator's requests (messages in LegatoClients/Messages/CoordinatorMessages.swift, layouts
/// in Docs/wire-protocol.md), each answered by the Coordinator.
///
/// One of several coordinators sharing an etcd store serves only while it leads: until then (and
/// once it no longer does) every request is answered NOT_LEADER with the leader's address, if known.
public final class CoordinatorService: RPCService {
    private let lock = Lock()
    private var leading: Coordinator?
    private let leaderHint: () -> String?
    private let log: Logger
    private let requests = CoordinatorService.dispatchTable()

    /// A coordinator that leads from the start (its store is its own).
    public convenience init(coordinator: Coordinator, log: Logger) {
        self.init(log: log, leaderHint: { nil })
        lead(coordinator)
    }

    /// A coordinator that follows until `lead`; `leaderHint` names the leader meanwhile.
    public init(log: Logger, leaderHint: @escaping () -> String?) {
        self.log = log
        self.leaderHint = leaderHint
    }

    /// From now on requests are answered by `coordinator`.
    public func lead(_ coordinator: Coordinator) { lock.withLock { leading = coordinator } }

    /// Leadership ended: requests are answered NOT_LEADER again.
    public func follow() { lock.withLock { leading = nil } }

    /// The coordinator while this one leads.
    public var coordinator: Coordinator? { lock.withLock { leading } }

    private func leader() throws -> Coordinator {
        guard let c = coordinator else { throw ServiceError(.notLeader, leaderHint() ?? "") }
        return c
    }

    private static func dispatchTable() -> DispatchTable<CoordinatorService> {
        var t = DispatchTable<CoordinatorService>()
        t.on(RegisterNode.self, CoordinatorService.register)
        t.on(Heartbeat.self) { s in { r, _ in try s.leader().heartbeat(id: r.id, used: r.used, capacity: r.capacity); return NoPayload() } }
        t.on(ListNodes.self) { s in { _, _ in Membership(try s.leader().membership()) } }
        t.on(WaitMembership.self) { s in
            { r, _ in Membership(try s.leader().waitMembership(after: r.known, timeoutMillis: r.timeoutMillis)) }
        }
        t.on(AssignSlab.self) { s in
            { r, _ in
                let n = try s.leader().assignSlab(space: r.space, slab: r.slab, slabBytes: r.slabBytes)
                return SlabPlacement(node: n.id, address: n.address)
            }
        }
        t.on(ListSlabs.self) { s in { r, _ in SlabList(try s.leader().slabs(space: r.space).map { .init(slab: $0.slab, node: $0.node) }) } }
        t.on(PlanRecovery.self) { s in
            { r, _ in
                let plan = try s.leader().planRecovery(space: r.space, deadAddress: r.deadAddress, alsoDead: r.alsoDead, slabs: r.slabs.map { ($0.slab, $0.pages) })
                return RecoveryPlan(partitions: plan.map { .init(node: $0.node.id, address: $0.node.address, slabs: $0.slabs) })
            }
        }
        t.on(DropSlabs.self) { s in { r, _ in try s.leader().dropSlabs(space: r.space); return NoPayload() } }
        t.on(BeginCheckpoint.self) { s in
            { r, _ in try s.leader().beginCheckpoint(name: r.name, epoch: r.epoch, record: Data(r.record)); return NoPayload() }
        }
        t.on(CommitCheckpoint.self) { s in
            { r, _ in try s.leader().commitCheckpoint(name: r.name, epoch: r.epoch, record: Data(r.record)); return NoPayload() }
        }
        t.on(AbortCheckpoint.self) { s in
            { r, _ in try s.leader().abortCheckpoint(name: r.name, epoch: r.epoch, reason: r.reason); return NoPayload() }
        }
        t.on(ListCheckpoints.self) { s in { r, _ in CheckpointList(try s.leader().checkpoints(name: r.name)) } }
        t.on(DeleteCheckpoint.self) { s in { r, _ in try s.leader().deleteCheckpoint(name: r.name, epoch: r.epoch); return NoPayload() } }
        return t
    }

    public func handle(opcode: Opcode, payload: [UInt8], session: Session) throws -> Reply {
        do {
            return try requests.handle(self, opcode: opcode, payload: payload, session: session)
        } catch let e as Coordinator.CoordinatorError {
            switch e {
            case .unknownNode, .noSuchCheckpoint: throw ServiceError(.notFound, e.description)
            case .badName, .epochNotNew, .notBegun: throw ServiceError(.badRequest, e.description)
            case .noMemoryNodes: throw ServiceError(.capacityExceeded, e.description)
            }
        } catch let e as CoordinatorStoreError {
            if case .notLeader = e { throw ServiceError(.notLeader, leaderHint() ?? "") }
            log.error("store: \(e)")
            throw ServiceError(.internalError, "the coordinator's store failed: \(e)")
        } catch let e as SystemError {
            log.error("store: \(e)")
            throw ServiceError(.internalError, "the coordinator's store failed: \(e)")
        }
    }

    func register(_ r: RegisterNode, _ session: Session) throws -> Registration {
        guard Endpoint(parsing: r.address) != nil else { throw ServiceError(.badRequest, "address '\(r.address)' is not HOST:PORT") }
        guard !r.uuid.isEmpty, r.uuid.count <= 128 else { throw ServiceError(.badRequest, "node uuid must be 1-128 bytes") }
        let c = try leader()
        let id = try c.register(role: r.role, address: r.address, capacity: r.capacity, uuid: r.uuid)
        return Registration(id: id, heartbeatMillis: c.timing.heartbeatMillis, deadAfterMillis: c.timing.deadAfterMillis)
    }

    public func sessionClosed(_ session: Session) {}

    public func stats() -> String { StatsJSON.encode(statsRecord()) }

    public func statsRecord() -> CoordinatorStats {
        guard let c = coordinator else { return CoordinatorStats(store: "", membershipVersion: 0, nodes: 0, alive: 0, leading: false) }
        let m = c.membership()
        return CoordinatorStats(store: c.store.description, membershipVersion: m.version, nodes: m.nodes.count,
                                alive: m.nodes.filter { $0.alive }.count, leading: true)
    }
}

import Foundation
import LegatoClients
import LegatoCore
import LegatoSystem
import LegatoWire

/// The coordinator's requests (messages in LegatoClients/Messages/CoordinatorMessages.swift, layouts
/// in Docs/wire-protocol.md), each answered by the Coordinator.
public final class CoordinatorService: RPCService {
    public let coordinator: Coordinator
    private let log: Logger
    private let requests = CoordinatorService.dispatchTable()

    public init(coordinator: Coordinator, log: Logger) {
        self.coordinator = coordinator
        self.log = log
    }

    private static func dispatchTable() -> DispatchTable<CoordinatorService> {
        var t = DispatchTable<CoordinatorService>()
        t.on(RegisterNode.self, CoordinatorService.register)
        t.on(Heartbeat.self) { s in { r, _ in try s.coordinator.heartbeat(id: r.id, used: r.used, capacity: r.capacity); return NoPayload() } }
        t.on(ListNodes.self) { s in { _, _ in Membership(s.coordinator.membership()) } }
        t.on(WaitMembership.self) { s in
            { r, _ in Membership(s.coordinator.waitMembership(after: r.known, timeoutMillis: r.timeoutMillis)) }
        }
        t.on(AssignSlab.self) { s in
            { r, _ in
                let n = try s.coordinator.assignSlab(space: r.space, slab: r.slab, slabBytes: r.slabBytes)
                return SlabPlacement(node: n.id, address: n.address)
            }
        }
        t.on(ListSlabs.self) { s in { r, _ in SlabList(try s.coordinator.slabs(space: r.space).map { .init(slab: $0.slab, node: $0.node) }) } }
        t.on(PlanRecovery.self) { s in
            { r, _ in
                let plan = try s.coordinator.planRecovery(space: r.space, deadAddress: r.deadAddress, alsoDead: r.alsoDead, slabs: r.slabs.map { ($0.slab, $0.pages) })
                return RecoveryPlan(partitions: plan.map { .init(node: $0.node.id, address: $0.node.address, slabs: $0.slabs) })
            }
        }
        t.on(DropSlabs.self) { s in { r, _ in try s.coordinator.dropSlabs(space: r.space); return NoPayload() } }
        t.on(BeginCheckpoint.self) { s in
            { r, _ in try s.coordinator.beginCheckpoint(name: r.name, epoch: r.epoch, record: Data(r.record)); return NoPayload() }
        }
        t.on(CommitCheckpoint.self) { s in
            { r, _ in try s.coordinator.commitCheckpoint(name: r.name, epoch: r.epoch, record: Data(r.record)); return NoPayload() }
        }
        t.on(AbortCheckpoint.self) { s in
            { r, _ in try s.coordinator.abortCheckpoint(name: r.name, epoch: r.epoch, reason: r.reason); return NoPayload() }
        }
        t.on(ListCheckpoints.self) { s in { r, _ in CheckpointList(try s.coordinator.checkpoints(name: r.name)) } }
        t.on(DeleteCheckpoint.self) { s in { r, _ in try s.coordinator.deleteCheckpoint(name: r.name, epoch: r.epoch); return NoPayload() } }
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
        let id = try coordinator.register(role: r.role, address: r.address, capacity: r.capacity, uuid: r.uuid)
        return Registration(id: id, heartbeatMillis: coordinator.timing.heartbeatMillis, deadAfterMillis: coordinator.timing.deadAfterMillis)
    }

    public func sessionClosed(_ session: Session) {}

    public func stats() -> String { StatsJSON.encode(statsRecord()) }

    public func statsRecord() -> CoordinatorStats {
        let m = coordinator.membership()
        return CoordinatorStats(store: coordinator.store.description, membershipVersion: m.version, nodes: m.nodes.count,
                                alive: m.nodes.filter { $0.alive }.count)
    }
}

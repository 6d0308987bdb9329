import Foundation
import LegatoClients
@testable import LegatoCoordinator
import LegatoCore
import LegatoTestSupport
import Testing

/// The coordinator's split of a dead memory node's slabs over the live ones.
struct RecoveryPlanTests {
    @Test func slabsGoByFreeRoomAndAreRecorded() throws {
        let dir = TestDirectory.make("recovery-plan")
        let c = try Coordinator(store: try SQLiteStore(path: dir + "/c.db"), timing: .init(), log: LegatoLogging.logger("test"))
        defer { c.stop() }
        let dead = try c.register(role: NodeRole.memory, address: "10.0.0.1:1", capacity: 1 << 30, uuid: "a")
        let big = try c.register(role: NodeRole.memory, address: "10.0.0.2:1", capacity: 3 << 30, uuid: "b")
        let small = try c.register(role: NodeRole.memory, address: "10.0.0.3:1", capacity: 1 << 30, uuid: "c")
        _ = try c.register(role: NodeRole.memory, address: "10.0.0.4:1", capacity: 8 << 30, uuid: "d")  // dead too, as the asker knows
        _ = try c.register(role: NodeRole.log, address: "10.0.0.5:1", capacity: 8 << 30, uuid: "e")
        _ = dead
        // Eight slabs of 64 MiB each: the node with three times the room takes three times as many.
        let slabs = (0..<8).map { (slab: UInt64($0), pages: UInt64(16384)) }
        let plan = try c.planRecovery(space: 7, deadAddress: "10.0.0.1:1", alsoDead: ["10.0.0.4:1"], slabs: slabs)
        let byNode = Dictionary(uniqueKeysWithValues: plan.map { ($0.node.id, $0.slabs) })
        #expect(Set(byNode.keys) == [big, small], "only live nodes the asker does not know dead: \(plan)")
        #expect(byNode[big]!.count == 6 && byNode[small]!.count == 2, "\(plan)")
        #expect(Set(byNode.values.flatMap { $0 }) == Set(0..<8))
        let recorded = Dictionary(uniqueKeysWithValues: try c.slabs(space: 7).map { ($0.slab, $0.node) })
        for (node, slabs) in byNode { for s in slabs { #expect(recorded[s] == node) } }
        #expect(throws: (any Error).self) { try c.planRecovery(space: 7, deadAddress: "10.0.0.2:1", alsoDead: ["10.0.0.1:1", "10.0.0.3:1", "10.0.0.4:1"], slabs: slabs) }
    }
}

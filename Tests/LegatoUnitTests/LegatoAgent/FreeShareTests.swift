import LegatoClients
import Testing
@testable import LegatoAgent

/// The free share adaptive replication goes by: the live memory nodes' room over their capacity.
@Suite struct FreeShareTests {
    func node(_ role: NodeRole, alive: Bool = true, capacity: UInt64, used: UInt64) -> NodeStatus {
        NodeStatus(id: 1, role: role, address: "10.0.0.1:7000", alive: alive, capacity: capacity, used: used, silentMillis: 0)
    }

    @Test func onlyLiveMemoryNodesCount() {
        let nodes = [node(.memory, capacity: 100, used: 30), node(.memory, capacity: 300, used: 10),
                     node(.memory, alive: false, capacity: 1000, used: 0), node(.log, capacity: 1000, used: 0)]
        #expect(MembershipWatch.freePercent(nodes) == 100 * 360.0 / 400)
    }

    @Test func aNodeReportingMoreUsedThanItHoldsIsFull() {
        #expect(MembershipWatch.freePercent([node(.memory, capacity: 100, used: 250), node(.memory, capacity: 100, used: 0)]) == 50)
    }

    @Test func noMemoryNodeGivesNoShare() {
        #expect(MembershipWatch.freePercent([node(.log, capacity: 100, used: 0)]) == nil)
        #expect(MembershipWatch.freePercent([]) == nil)
    }
}

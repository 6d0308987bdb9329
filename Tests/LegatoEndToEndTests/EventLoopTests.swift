import Foundation
import Glibc
import Testing

/// Programs built on an event loop — epoll sets, eventfds, timers, signal handlers, worker threads —
/// checkpointed mid-work, killed with kill -9, restored and compared with plain runs.
@Suite(.serialized) struct EventLoopTests {
    init() throws { try requireAgentCapabilities() }

    /// The descriptors of kind `kind` in a checkpoint's image.
    func descriptors(_ image: [String: Any], kind: String) -> [[String: Any]] {
        (image["fds"] as? [[String: Any]] ?? []).filter { $0["kind"] as? String == kind }
    }

    @Test func nodeWithTimersPromisesAndItsWorkerPool() throws {
        // node's loop: an epoll set watching its eventfds and signal pipe, timers, the libuv worker
        // threads hashing and writing a file, caught between two ticks.
        let dir = TestEnvironment.temporaryDirectory("node-timers")
        let image = try checkpointKillRestore(["node", Workloads.script("nodetimers.js"), "40", dir + "/scratch"], name: "node-timers",
                                              localMem: "64M", afterLines: 10, dir: dir)
        let sets = descriptors(image, kind: "epoll")
        #expect(sets.contains { ($0["epoll"] as? [Any])?.isEmpty == false }, "node's epoll sets and their entries are saved: \(sets)")
        #expect(!descriptors(image, kind: "eventfd").isEmpty, "node's eventfds are saved")
    }
}

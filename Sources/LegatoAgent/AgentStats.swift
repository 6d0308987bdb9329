/// The agent's own counters (the fault handlers', the fetcher's, the evictor's, the write-back
/// buffer's and the budget's are theirs);
/// RunStatsRecord puts them all together.
struct AgentStats {
    var materializedPages = 0  // pages only the agent held, brought back before a fork
    var addressSpaces = 0      // address spaces taken over (at an exec of any process of the tree, or at a fork)
    var managedForks = 0       // forks whose child was taken over with its parent's pages where they were
    var checkpoints = 0
    var restoreResumeNanos: UInt64 = 0  // agent start to the restored PROG resuming
    var restoreCompleteNanos: UInt64 = 0  // agent start to every restored page back (in PROG or on memory nodes)
    var restoreReadMillis: Double = 0     // reading the checkpoint before the agent started
    var restoredByFault = 0             // restored pages brought back by PROG's faults
    var restoredByFill = 0              // ... by the background fill
    var nodeFailures = 0                // memory nodes that died holding pages and were recovered from
    var recoveredPages = 0              // pages rebuilt on other nodes from dead nodes' write-back logs
    var promotedPages = 0               // mirrored pages read from their mirror since their node died
    var remirroredPages = 0             // pages given a second copy again after a node's death
    var recoveryNanos: UInt64 = 0       // death noticed to pages served again, summed over recoveries
}

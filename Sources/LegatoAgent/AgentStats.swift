/// The agent's own counters (the fault handlers', the fetcher's and the budget's are theirs);
/// RunStatsRecord puts them all together.
struct AgentStats {
    var storedPages = 0        // pages acknowledged by memory nodes
    var evictedPages = 0       // pages dropped from the program (clean or dirty)
    var evictions = 0          // eviction rounds (freeze, scan, read, discard, thaw)
    var cleanEvictions = 0     // evicted pages that needed no transfer
    var materializedPages = 0  // remote pages brought back before a fork
    var keptLocalPages = 0     // pages kept local because every memory node was full
    var checkpoints = 0
    var lostFaultWakes = 0             // times the liveness guard had to wake a forgotten fault
    var restoreResumeNanos: UInt64 = 0  // agent start to the restored PROG resuming
    var restoreCompleteNanos: UInt64 = 0  // agent start to every restored page back (in PROG or on memory nodes)
    var restoreReadMillis: Double = 0     // reading the checkpoint before the agent started
    var restoredByFault = 0             // restored pages brought back by PROG's faults
    var restoredByFill = 0              // ... by the background fill
    var freezeNanos: UInt64 = 0
    var evictionPhaseNanos: [UInt64] = [0, 0, 0, 0]  // freeze, scan, read, discard
    var evictionsDeferred = 0  // eviction rounds given up: no thread in a stop fit for injection
}

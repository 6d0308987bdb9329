import Foundation

/// The agent's counters, written as JSON by `--stats-json` at exit.
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

    /// The JSON `--stats-json` writes: these counters with the fault handlers', the fetcher's and the budget's.
    func json(exitStatus: Int32?, faults: FaultHandler.Counters, fetches: Fetcher.Counters, budget: LocalBudget, extra: [String: Any] = [:]) -> String {
        var d: [String: Any] = [
            "faults": faults.faults,
            "restore_resume_ms": Double(restoreResumeNanos) / 1e6,
            "lost_fault_wakes": lostFaultWakes,
            "restore_complete_ms": Double(restoreCompleteNanos) / 1e6,
            "restore_read_ms": restoreReadMillis,
            "restored_by_fault": restoredByFault,
            "restored_by_fill": restoredByFill,
            "zero_fills": faults.zeroFills,
            "fetched_pages": fetches.fetchedPages,
            "stored_pages": storedPages,
            "evicted_pages": evictedPages,
            "prefetched_pages": fetches.prefetchedPages,
            "fetch_requests": fetches.fetchRequests,
            "peak_resident_bytes": budget.peakResidentPages * 4096,
            "local_budget_bytes": budget.pages * 4096,
            "fault_latency_us": ["p50": fetches.remoteLatency.quantile(0.5), "p99": fetches.remoteLatency.quantile(0.99),
                                 "count": fetches.remoteLatency.count],
            "buffer_hits": faults.bufferHits,
            "inbound_hits": faults.inboundHits,
            "evictions": evictions,
            "clean_evictions": cleanEvictions,
            "resident_bytes_at_exit": budget.residentPages * 4096,
            "stale_faults": faults.staleFaults,
            "materialized_pages": materializedPages,
            "kept_local_pages": keptLocalPages,
            "checkpoints": checkpoints,
            "freeze_ms_total": Double(freezeNanos) / 1e6,
            "eviction_ms": ["freeze": Double(evictionPhaseNanos[0]) / 1e6, "scan": Double(evictionPhaseNanos[1]) / 1e6,
                            "read": Double(evictionPhaseNanos[2]) / 1e6, "discard": Double(evictionPhaseNanos[3]) / 1e6],
            "evictions_deferred": evictionsDeferred,
        ]
        if let s = exitStatus { d["exit_status"] = s }
        for (k, v) in extra { d[k] = v }
        let data = (try? JSONSerialization.data(withJSONObject: d, options: [.sortedKeys, .prettyPrinted])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}

import LegatoClients
import LegatoMetrics

/// A run's numbers: what `--stats-json` writes at exit (snake_case keys), and what `--metrics`
/// serves while it runs (`legato_run_...`), taken from the agent's parts.
struct RunStatsRecord: Codable {
    struct Quantiles: Codable {
        var p50: Double
        var p99: Double
        var count: UInt64
    }

    /// Milliseconds spent in each phase of the evictions.
    struct EvictionPhases: Codable {
        var freeze: Double
        var scan: Double
        var read: Double
        var discard: Double
    }

    var faults: Int
    var zeroFills: Int
    var fetchedPages: Int
    var prefetchedPages: Int
    var fetchRequests: Int
    var storedPages: Int
    var mirroredPages: Int
    var evictedPages: Int
    var evictions: Int
    var cleanEvictions: Int
    var evictionsDeferred: Int
    var bufferHits: Int
    var inboundHits: Int
    var staleFaults: Int
    var materializedPages: Int
    var addressSpaces: Int
    var managedForks: Int
    var keptLocalPages: Int
    var checkpoints: Int
    var lostFaultWakes: Int
    var peakResidentBytes: Int
    var localBudgetBytes: Int
    var residentBytesAtExit: Int
    /// Faults served from a memory node.
    var faultLatencyUs: Quantiles
    var freezeMsTotal: Double
    var evictionMs: EvictionPhases
    var restoreResumeMs: Double
    var restoreCompleteMs: Double
    var restoreReadMs: Double
    var restoredByFault: Int
    var restoredByFill: Int
    var memoryNodeFailures: Int
    var recoveredPages: Int
    var promotedPages: Int
    var remirroredPages: Int
    var recoveryMs: Double
    /// The longest a fault waited for its dead node's pages to be recovered.
    var longestRecoveryWaitMs: Double
    var memoryNodes: [String]
    var exitStatus: Int32?

    init(stats s: AgentStats, liveness: LivenessGuard, faults f: FaultHandler.Counters, fetches: Fetcher.Counters, writeBacks w: WriteBackBuffer.Counters,
         evictions e: Evictor.Counters, budget: LocalBudget,
         memoryNodes: [String], exitStatus: Int32?) {
        faults = f.faults
        zeroFills = f.zeroFills
        fetchedPages = fetches.fetchedPages
        prefetchedPages = fetches.prefetchedPages
        fetchRequests = fetches.fetchRequests
        storedPages = w.storedPages
        mirroredPages = w.mirroredPages
        evictedPages = e.evictedPages
        evictions = e.evictions
        cleanEvictions = e.cleanEvictions
        evictionsDeferred = e.evictionsDeferred
        bufferHits = f.bufferHits
        inboundHits = f.inboundHits
        staleFaults = f.staleFaults
        materializedPages = s.materializedPages
        addressSpaces = s.addressSpaces
        managedForks = s.managedForks
        keptLocalPages = w.keptLocalPages
        checkpoints = s.checkpoints
        lostFaultWakes = liveness.wakes
        peakResidentBytes = budget.peakResidentPages * 4096
        localBudgetBytes = budget.pages * 4096
        residentBytesAtExit = budget.residentPages * 4096
        faultLatencyUs = Quantiles(p50: fetches.remoteLatency.quantile(0.5), p99: fetches.remoteLatency.quantile(0.99),
                                   count: fetches.remoteLatency.count)
        freezeMsTotal = Double(e.freezeNanos) / 1e6
        let phase = e.phaseNanos.map { Double($0) / 1e6 }
        evictionMs = EvictionPhases(freeze: phase[0], scan: phase[1], read: phase[2], discard: phase[3])
        restoreResumeMs = Double(s.restoreResumeNanos) / 1e6
        restoreCompleteMs = Double(s.restoreCompleteNanos) / 1e6
        restoreReadMs = s.restoreReadMillis
        restoredByFault = s.restoredByFault
        restoredByFill = s.restoredByFill
        memoryNodeFailures = s.nodeFailures
        recoveredPages = s.recoveredPages
        promotedPages = s.promotedPages
        remirroredPages = s.remirroredPages
        recoveryMs = Double(s.recoveryNanos) / 1e6
        longestRecoveryWaitMs = Double(fetches.longestParkNanos) / 1e6
        self.memoryNodes = memoryNodes
        self.exitStatus = exitStatus
    }

    var json: String { StatsJSON.encode(self, pretty: true) + "\n" }
}

extension RunStatsRecord: MetricsReporting {
    func report(into r: inout MetricsReport) {
        r.counter("faults_total", faults, help: "Page faults served")
        r.counter("zero_fills_total", zeroFills, help: "Pages installed as zeros without a round trip")
        r.counter("pages_fetched_total", fetchedPages, help: "Pages brought from memory nodes")
        r.counter("pages_prefetched_total", prefetchedPages, help: "Of those, pages fetched ahead of a fault")
        r.counter("fetch_requests_total", fetchRequests, help: "FETCH_PAGES requests sent")
        r.counter("pages_stored_total", storedPages, help: "Pages acknowledged by memory nodes")
        r.counter("pages_mirrored_total", mirroredPages, help: "Of those, pages acknowledged by two memory nodes")
        r.counter("pages_evicted_total", evictedPages, help: "Pages dropped from the program to keep the budget")
        r.counter("evictions_total", evictions, help: "Eviction rounds")
        r.counter("clean_evictions_total", cleanEvictions, help: "Evicted pages that needed no transfer")
        r.counter("evictions_deferred_total", evictionsDeferred, help: "Eviction rounds given up: no thread fit for injection")
        r.counter("buffer_hits_total", bufferHits, help: "Faults served from the write-back buffer")
        r.counter("inbound_hits_total", inboundHits, help: "Faults on pages already on their way")
        r.counter("stale_faults_total", staleFaults, help: "Faults on pages already present")
        r.counter("pages_materialized_total", materializedPages, help: "Pages only the agent held, brought back before a fork")
        r.counter("address_spaces_total", addressSpaces, help: "Address spaces taken over (execs and forks of the program's tree)")
        r.counter("managed_forks_total", managedForks, help: "Forks whose child was managed from its first instruction")
        r.counter("pages_kept_local_total", keptLocalPages, help: "Pages kept local because every memory node was full")
        r.counter("checkpoints_total", checkpoints, help: "Checkpoints committed")
        r.counter("lost_fault_wakes_total", lostFaultWakes, help: "Times the liveness guard woke a forgotten fault (a bug)")
        r.gauge("peak_resident_bytes", peakResidentBytes, help: "Most managed memory resident at once")
        r.gauge("local_budget_bytes", localBudgetBytes, help: "The --local-mem budget")
        r.gauge("resident_bytes", residentBytesAtExit, help: "Managed memory resident now")
        r.gauge("fault_latency_p50_seconds", faultLatencyUs.p50 / 1e6, help: "Median wait of a fault served from a memory node")
        r.gauge("fault_latency_p99_seconds", faultLatencyUs.p99 / 1e6, help: "99th percentile of that wait")
        r.counter("remote_faults_total", faultLatencyUs.count, help: "Faults served from a memory node")
        r.gauge("freeze_seconds", freezeMsTotal / 1e3, help: "Time the program spent frozen for evictions")
        r.gauge("restore_resume_seconds", restoreResumeMs / 1e3, help: "Agent start to the restored program resuming")
        r.gauge("restore_complete_seconds", restoreCompleteMs / 1e3, help: "Agent start to every restored page back")
        r.counter("pages_restored_by_fault_total", restoredByFault, help: "Restored pages brought back by the program's faults")
        r.counter("pages_restored_by_fill_total", restoredByFill, help: "Restored pages brought back by the background fill")
        r.counter("memory_node_failures_total", memoryNodeFailures, help: "Memory nodes that died holding pages of the run and were recovered from")
        r.counter("pages_recovered_total", recoveredPages, help: "Pages rebuilt on other memory nodes from dead nodes' write-back logs")
        r.counter("pages_promoted_total", promotedPages, help: "Mirrored pages read from their mirror since their memory node died")
        r.counter("pages_remirrored_total", remirroredPages, help: "Pages given a second copy again after a memory node's death")
        r.gauge("recovery_seconds", recoveryMs / 1e3, help: "Time from a memory node's death to its pages being served again, summed")
        r.gauge("longest_recovery_wait_seconds", longestRecoveryWaitMs / 1e3, help: "The longest a fault waited for a recovery")
    }
}

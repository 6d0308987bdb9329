import LegatoClients
import LegatoMetrics

/// A memory node's STATS as Prometheus samples (`legato_memd_...` at `legato memd --metrics`).
extension MemoryNodeStats: MetricsReporting {
    public func report(into r: inout MetricsReport) {
        r.gauge("spaces", spaces, help: "Address spaces held")
        r.gauge("live_pages", livePages, help: "Pages held (newest versions and retained ones)")
        r.gauge("live_page_limit", livePageLimit, help: "Most pages the capacity allows")
        r.gauge("capacity_bytes", capacityBytes, help: "The page store's capacity")
        r.gauge("used_bytes", usedBytes, help: "Bytes of segments allocated")
        r.gauge("segments", segments, help: "Segments allocated")
        r.gauge("spare_segments", spareSegments, help: "Segments made ahead for the next log head")
        r.gauge("max_segments", maxSegments, help: "Most segments the capacity allows")
        r.gauge("segment_bytes", segmentBytes, help: "Size of one segment")
        r.counter("pages_stored_total", storedPages, help: "Pages stored by agents")
        r.counter("pages_fetched_total", fetchedPages, help: "Pages served to agents")
        r.counter("pages_missed_total", missedPages, help: "Pages asked for that the node did not hold")
        r.counter("pages_discarded_total", discardedPages, help: "Pages discarded by agents")
        r.counter("cleaner_runs_total", cleanerRuns, help: "Segments the cleaner compacted")
        r.counter("pages_cleaned_total", cleanedPages, help: "Live pages the cleaner moved")
        r.counter("stores_refused_total", refusedStores, help: "Stores refused for lack of room")
        r.gauge("retaining_spaces", retainingSpaces, help: "Spaces retaining a committed checkpoint")
        r.gauge("retained_versions", retainedVersions, help: "Old page versions kept for a retained checkpoint")
        r.gauge("frozen_versions", frozenVersions, help: "Old page versions kept for a checkpoint being taken")
        r.gauge("checkpoint_participant", checkpointParticipant ? 1 : 0, help: "1 when the node persists checkpoints into its own log")
        r.counter("prepares_total", prepares, help: "Checkpoint PREPAREs answered")
        r.counter("pages_persisted_total", persistedPages, help: "Checkpoint pages written into the node's log")
        r.counter("pages_logged_total", loggedPages, help: "Stored pages appended to write-back logs first")
        r.gauge("log_live_keys", logLiveKeys, help: "Keys whose current version the write-back logs hold")
        r.gauge("log_bytes", logBytes, help: "Payload bytes of the write-back logs' segments")
        r.counter("log_segments_freed_total", logFreedSegments, help: "Write-back log segments freed by cleaning")
        r.counter("log_pages_rewritten_total", logRewrittenPages, help: "Live pages cleaning appended anew")
        r.counter("log_appends_refused_total", refusedLogAppends, help: "Stores refused because their write-back log append failed")
        r.counter("recoveries_total", recoveries, help: "RECOVER_SPACE requests served")
        r.counter("pages_recovered_total", recoveredPages, help: "Pages rebuilt here from dead nodes' write-back logs")
    }
}

import LegatoClients
import LegatoMetrics

/// A log node's STATS as Prometheus samples (`legato_logd_...` at `legato logd --metrics`).
extension LogNodeStats: MetricsReporting {
    public func report(into r: inout MetricsReport) {
        r.gauge("replicas", replicas, help: "Segment replicas held")
        r.gauge("open_replicas", openReplicas, help: "Replicas still taking appends")
        r.gauge("buffered_bytes", bufferedBytes, help: "Appended bytes not yet written to disk")
        r.gauge("buffered_peak_bytes", bufferedPeakBytes, help: "Most bytes buffered at once")
        r.counter("append_waits_total", appendWaits, help: "Appends that waited for the flusher to make room")
        r.gauge("spare_buffer_bytes", spareBufferBytes, help: "Buffer memory kept for replicas to come")
        r.counter("fresh_buffers_total", freshBuffers, help: "Replica buffers allocated anew (no spare was free)")
        r.gauge("buffer_storage_bytes", bufferStorageBytes, help: "Memory the replicas' buffers hold")
        r.gauge("disk_bytes", diskBytes, help: "Bytes of replica files on disk")
        r.gauge("free_disk_bytes", freeDiskBytes, help: "Free bytes on the replicas' file system")
        r.counter("torn_tails_total", tornTails, help: "Replica files found with a torn last entry at recovery")
        r.counter("corrupt_entries_total", corruptEntries, help: "Entries whose checksum failed")
        r.counter("quarantined_files_total", quarantinedFiles, help: "Replica files set aside as unreadable")
        r.counter("flushes_total", flushes, help: "Buffer write-outs")
        r.counter("written_bytes_total", bytesWritten, help: "Bytes written to disk")
        r.counter("io_errors_total", ioErrors, help: "Disk I/O errors")
    }
}

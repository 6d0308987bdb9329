import Foundation
import LegatoClients
import LegatoCoordinator
import LegatoLogNode
import LegatoMemoryNode
import LegatoMetrics
import Testing

/// Each service's STATS record: the JSON keys operators and scripts read, and one Prometheus
/// sample for every number in it (so /metrics, STATS and `status --counters` cannot drift apart).
@Suite struct ServiceStatsTests {
    static let memory = MemoryNodeStats(spaces: 1, livePages: 2, livePageLimit: 3, capacityBytes: 4, usedBytes: 5, segments: 6,
                                        spareSegments: 7, maxSegments: 8, segmentBytes: 9, storedPages: 10, fetchedPages: 11,
                                        missedPages: 12, discardedPages: 13, cleanerRuns: 14, cleanedPages: 15, refusedStores: 16,
                                        retainingSpaces: 17, retainedVersions: 18, frozenVersions: 19, checkpointParticipant: true,
                                        prepares: 20, persistedPages: 21)
    static let log = LogNodeStats(replicas: 1, openReplicas: 2, bufferedBytes: 3, bufferedPeakBytes: 4, appendWaits: 5, spareBufferBytes: 6,
                                  freshBuffers: 7, bufferStorageBytes: 8, diskBytes: 9, freeDiskBytes: 10, tornTails: 11, corruptEntries: 12,
                                  quarantinedFiles: 13, flushes: 14, bytesWritten: 15, ioErrors: 16)
    static let coordinator = CoordinatorStats(store: "sqlite:/tmp/x.db", membershipVersion: 1, nodes: 2, alive: 3, leading: true)

    func object(_ json: String) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
    }

    /// The numbers (and flags) of a JSON object, by key.
    func numbers(_ o: [String: Any]) -> [String: Double] {
        o.compactMapValues { ($0 as? NSNumber)?.doubleValue }
    }

    func check<T: Codable & MetricsReporting & Equatable>(_ record: T, keys: [String]) throws {
        let json = StatsJSON.encode(record)
        let o = try object(json)
        for k in keys { #expect(o[k] != nil, "STATS lost the key \(k): \(json)") }
        #expect(try StatsJSON.decode(T.self, from: json) == record, "STATS does not read back as written")
        let samples = record.metricsReport.samples
        #expect(Set(samples.map(\.name)).count == samples.count, "a metric name is used twice")
        // Every number in STATS is a sample with the same value, and no sample is made up.
        #expect(samples.map(\.value).sorted() == numbers(o).values.sorted(),
                "STATS numbers \(numbers(o).sorted { $0.key < $1.key }) against samples \(samples.map { "\($0.name)=\($0.value)" })")
        for s in samples where s.kind == .counter { #expect(s.name.hasSuffix("_total"), "\(s.name)") }
    }

    @Test func memoryNodeStats() throws {
        try check(Self.memory, keys: ["role", "live_pages", "live_page_limit", "capacity_bytes", "used_bytes", "stored_pages",
                                      "fetched_pages", "checkpoint_participant", "persisted_pages"])
        #expect(Self.memory.metricsReport.samples.contains { $0.name == "pages_stored_total" && $0.value == 10 })
        #expect(Self.memory.freePages == 1)
    }

    @Test func logNodeStats() throws {
        try check(Self.log, keys: ["role", "replicas", "buffered_bytes", "spare_buffer_bytes", "free_disk_bytes", "quarantined_files",
                                   "bytes_written", "io_errors"])
    }

    @Test func coordinatorStats() throws {
        try check(Self.coordinator, keys: ["role", "store", "membership_version", "nodes", "alive"])
    }
}

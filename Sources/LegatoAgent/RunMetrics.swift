import LegatoCore
import LegatoMetrics
import LegatoSystem

/// `--metrics HOST:PORT` of `legato run` and `restore`: serves the run's numbers at /metrics. The
/// event loop publishes them (at most twice a second); the endpoint's thread serves the last ones.
final class RunMetrics {
    private let endpoint: MetricsEndpoint
    private let report = PublishedReport()
    private var publishedAt: UInt64 = 0

    /// Makes swift-metrics' instruments land in the endpoint's registry (so make this before the
    /// Fetcher, whose fault-latency timer is one), and starts serving.
    init(listen: Endpoint, log: Logger, first: MetricsReport) throws {
        endpoint = try MetricsEndpoint(listen: listen, role: "run", log: log) { [report] in report.current }
        endpoint.bootstrapMetricsSystem(timerBuckets: [Fetcher.faultTimerLabel: Fetcher.faultTimerBuckets])
        report.publish(first)
        publishedAt = monotonicNanos()
        endpoint.start()
    }

    /// Publishes `current()` if the last publication is half a second old.
    func publishIfDue(_ current: () -> MetricsReport) {
        let now = monotonicNanos()
        guard now - publishedAt >= 500_000_000 else { return }
        publishedAt = now
        report.publish(current())
    }

    func stop() { endpoint.stop() }
}

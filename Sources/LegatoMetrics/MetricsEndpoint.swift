import Glibc
import LegatoCore
import LegatoSystem
import Metrics
import Prometheus

/// Serves a process's metrics in Prometheus text format at `GET /metrics` (`--metrics HOST:PORT`).
///
/// Each scrape asks `collect` for the service's numbers (a `MetricsReport`), names them
/// `legato_<role>_<name>`, and adds what swift-metrics instruments recorded into `registry` (a
/// latency histogram) and `legato_build_info`. Scrapes are answered one at a time on the
/// endpoint's own thread; `collect` runs there, so it must be safe to call from any thread.
/// Anything but a GET of /metrics gets a 404 or 405; a peer that sends nothing for 5 s is dropped.
public final class MetricsEndpoint: @unchecked Sendable {
    public let registry = PrometheusCollectorRegistry()
    /// Where it listens (the bound port when asked for port 0).
    public let endpoint: Endpoint
    private let prefix: String
    private let collect: @Sendable () -> MetricsReport
    private let log: Logger
    private let listener: Int32
    private let lock = Lock()
    private var counters: [String: Prometheus.Counter] = [:]
    private var gauges: [String: Prometheus.Gauge] = [:]
    private var started = false
    private var stopped = false
    private var running = false

    public static let requestLimit = 8192

    /// Listens on `listen` for a process of `role` ("memd", "logd", "coord", "run").
    public init(listen: Endpoint, role: String, log: Logger, collect: @escaping @Sendable () -> MetricsReport) throws {
        let (fd, port) = try Socket.listen(host: listen.host, port: listen.port, backlog: 16)
        listener = fd
        endpoint = Endpoint(host: listen.host, port: port)
        prefix = "legato_\(role)_"
        self.collect = collect
        self.log = log
        let build = registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "legato", metricName: "build", unitName: "info",
                                                                        helpText: "Always 1; the labels say which build and role answer"),
                                       labels: [("version", LegatoBuild.version), ("role", role)])
        build.set(1.0)
    }

    /// Makes swift-metrics instruments (`Metrics.Timer`, `Counter`...) made from now on in this
    /// process land in this endpoint's registry. `timerBuckets` sets a timer's histogram buckets by
    /// label (Prometheus's defaults start at 5 ms). Call once per process, before making them.
    public func bootstrapMetricsSystem(timerBuckets: [String: [Duration]] = [:]) {
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = timerBuckets
        MetricsSystem.bootstrap(factory)
    }

    public func start() {
        lock.withLock {
            started = true
            running = true
        }
        startThread(name: "metrics") { [self] in serve() }
        log.info("metrics at http://\(endpoint)/metrics")
    }

    /// Stops serving and gives the port back (once; later calls do nothing).
    public func stop() {
        let first = lock.withLock { () -> Bool in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        shutdown(listener, Int32(SHUT_RDWR))
        lock.withLock {
            // Never served: nobody else closes the listener. Else the accept thread sees it shut
            // down, closes it and says so.
            guard started else { close(listener); return }
            while running { _ = lock.wait(seconds: 1) }
        }
    }

    /// The page a scrape gets: the service's samples, then the registry's own instruments.
    public func render() -> String {
        let report = collect()
        return lock.withLock {
            for s in report.samples {
                let name = prefix + s.name
                switch s.kind {
                case .counter:
                    let c = counters[name] ?? registry.makeCounter(descriptor: Self.descriptor(name, s.help))
                    counters[name] = c
                    // The service counts; the counter is set to its total (reset, then the total).
                    c.reset()
                    if s.value == s.value.rounded(), abs(s.value) < 9e15 { c.increment(by: Int64(s.value)) } else { c.increment(by: s.value) }
                case .gauge:
                    let g = gauges[name] ?? registry.makeGauge(descriptor: Self.descriptor(name, s.help))
                    gauges[name] = g
                    g.set(s.value)
                }
            }
            return registry.emitToString()
        }
    }

    /// A full metric name as the registry takes it (its parts are joined with underscores).
    private static func descriptor(_ name: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
    }

    private func serve() {
        defer {
            close(listener)
            lock.withLock {
                running = false
                lock.broadcast()
            }
        }
        while !lock.withLock({ stopped }) {
            let accepted: (fd: Int32, peer: String)?
            do { accepted = try Socket.accept(listener) } catch {
                log.warning("metrics endpoint \(endpoint): \(error)")
                usleep(100_000)
                continue
            }
            guard let (fd, peer) = accepted else { return }
            answer(fd, peer: peer)
            close(fd)
        }
    }

    /// The request has come up to the blank line that ends its headers.
    static func endsHeaders(_ b: [UInt8]) -> Bool {
        guard b.count >= 2 else { return false }
        for i in 1..<b.count where b[i] == 10 && (b[i - 1] == 10 || (i >= 3 && b[i - 1] == 13 && b[i - 2] == 10 && b[i - 3] == 13)) {
            return true
        }
        return false
    }

    /// Reads one request (up to its blank line) and answers it.
    private func answer(_ fd: Int32, peer: String) {
        Socket.setTimeout(fd, seconds: 5)
        var request: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 2048)
        while request.count < Self.requestLimit {
            let n = Sys.retryingEINTR { recv(fd, &chunk, chunk.count, 0) }
            if n <= 0 { return }
            request += chunk[0..<n]
            if Self.endsHeaders(request) { break }
        }
        let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = line.split(separator: " ")
        let (status, body): (String, String)
        if parts.count < 2 {
            (status, body) = ("400 Bad Request", "not an HTTP request\n")
        } else if parts[0] != "GET" && parts[0] != "HEAD" {
            (status, body) = ("405 Method Not Allowed", "only GET /metrics is served here\n")
        } else if parts[1] != "/metrics" && !parts[1].hasPrefix("/metrics?") {
            (status, body) = ("404 Not Found", "only /metrics is served here\n")
        } else {
            (status, body) = ("200 OK", render())
        }
        let contentType = status.hasPrefix("200") ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8"
        let payload = Array(body.utf8)
        let head = "HTTP/1.1 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(payload.count)\r\nConnection: close\r\n\r\n"
        let headBytes = Array(head.utf8)
        do {
            try headBytes.withUnsafeBytes { h in
                try payload.withUnsafeBytes { p in
                    try Socket.writeFully(fd, parts.first == "HEAD" ? [h] : [h, p])
                }
            }
        } catch {
            log.debug("metrics answer to \(peer): \(error)")
        }
    }
}

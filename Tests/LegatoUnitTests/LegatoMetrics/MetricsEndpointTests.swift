import Foundation
import LegatoCore
import LegatoSystem
import LegatoTestSupport
import Testing
@testable import LegatoMetrics

/// The /metrics endpoint against a real HTTP client on loopback.
@Suite(.serialized) struct MetricsEndpointTests {
    final class Numbers: @unchecked Sendable {
        let lock = Lock()
        var things = 3
        var level = 2.5
        var report: MetricsReport {
            lock.withLock {
                var r = MetricsReport()
                r.counter("things_total", things, help: "Things counted")
                r.gauge("level_bytes", level, help: "A level")
                r.secondsCounter("busy_seconds_total", nanos: 1_500_000_000, help: "Time busy")
                return r
            }
        }
    }

    func start(_ numbers: Numbers) throws -> MetricsEndpoint {
        let e = try MetricsEndpoint(listen: Endpoint(host: "127.0.0.1", port: 0), role: "test",
                                    log: LegatoLogging.logger("test.metrics")) { numbers.report }
        e.start()
        return e
    }

    func lines(_ body: String) -> [String] { body.split(separator: "\n").map(String.init) }

    @Test func servesTheServicesNumbersInPrometheusTextFormat() throws {
        let numbers = Numbers()
        let e = try start(numbers)
        defer { e.stop() }
        let a = try httpRequest(e.endpoint, path: "/metrics")
        #expect(a.status == 200)
        #expect(a.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
        let l = lines(a.body)
        #expect(l.contains("# TYPE legato_test_things_total counter"))
        #expect(l.contains("legato_test_things_total 3"))
        #expect(l.contains("# TYPE legato_test_level_bytes gauge"))
        #expect(l.contains("legato_test_level_bytes 2.5"))
        #expect(l.contains("legato_test_busy_seconds_total 1.5"))
        #expect(l.contains("# HELP legato_test_things_total Things counted"))
        #expect(l.contains { $0.hasPrefix("legato_build_info{") && $0.contains("version=\"\(LegatoBuild.version)\"") && $0.contains("role=\"test\"") })

        // A counter follows the service's total from one scrape to the next.
        numbers.lock.withLock { numbers.things = 10 }
        #expect(lines(try httpRequest(e.endpoint, path: "/metrics").body).contains("legato_test_things_total 10"))
    }

    @Test func answersOnlyAGetOfMetrics() throws {
        let e = try start(Numbers())
        defer { e.stop() }
        #expect(try httpRequest(e.endpoint, path: "/").status == 404)
        #expect(try httpRequest(e.endpoint, path: "/metricsx").status == 404)
        #expect(try httpRequest(e.endpoint, method: "POST", path: "/metrics").status == 405)
        // Garbage, then a good request: the endpoint is still there.
        let fd = try Socket.connect(host: "127.0.0.1", port: e.endpoint.port)
        let junk = [UInt8](repeating: 0x41, count: 20000)
        try? junk.withUnsafeBytes { try Socket.writeFully(fd, [$0]) }
        close(fd)
        #expect(try httpRequest(e.endpoint, path: "/metrics").status == 200)
    }

    @Test func stopsAndGivesThePortBack() throws {
        let e = try start(Numbers())
        let port = e.endpoint.port
        e.stop()
        e.stop()  // a second stop does nothing (the port is not closed twice)
        #expect(throws: (any Error).self) { _ = try httpRequest(Endpoint(host: "127.0.0.1", port: port), path: "/metrics") }
        // The port can be listened on again at once.
        let again = try MetricsEndpoint(listen: Endpoint(host: "127.0.0.1", port: port), role: "test",
                                        log: LegatoLogging.logger("test.metrics")) { MetricsReport() }
        again.stop()  // never started: stop gives the port back too
        again.stop()
    }

    @Test func reportsPublishedFromAnotherThreadAreServedWhole() throws {
        let published = PublishedReport()
        var r = MetricsReport()
        r.counter("events_total", 42, help: "Events")
        published.publish(r)
        let e = try MetricsEndpoint(listen: Endpoint(host: "127.0.0.1", port: 0), role: "run",
                                    log: LegatoLogging.logger("test.metrics")) { published.current }
        e.start()
        defer { e.stop() }
        #expect(lines(try httpRequest(e.endpoint, path: "/metrics").body).contains("legato_run_events_total 42"))
    }
}

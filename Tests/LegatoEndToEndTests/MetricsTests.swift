import Foundation
import Glibc
import LegatoCore
import LegatoSystem
import Testing

/// `--metrics HOST:PORT` on every daemon and on a running `legato run`: `curl .../metrics`
/// answers Prometheus text with the process's own numbers.
@Suite(.serialized) struct MetricsTests {
    /// `curl -sS -i` of a metrics page: the status line must be 200 with Prometheus's content type.
    func scrape(_ port: UInt16) throws -> [String] {
        let r = try runCommand(["curl", "-sS", "-i", "--max-time", "10", "http://127.0.0.1:\(port)/metrics"], timeoutSeconds: 20)
        guard r.status == 0 else { throw TestFailure("curl of port \(port) failed (\(r.status)): \(r.stderr)") }
        let (head, body) = r.stdout.range(of: "\r\n\r\n").map { (String(r.stdout[..<$0.lowerBound]), String(r.stdout[$0.upperBound...])) }
            ?? (r.stdout, "")
        #expect(head.hasPrefix("HTTP/1.1 200"), "\(head)")
        #expect(head.lowercased().contains("content-type: text/plain; version=0.0.4"), "\(head)")
        return body.split(separator: "\n").map(String.init)
    }

    /// The value of an unlabelled sample, or nil if the page has none.
    func value(_ name: String, in lines: [String]) -> Double? {
        for l in lines where l.hasPrefix(name + " ") { return Double(l.dropFirst(name.count + 1)) }
        return nil
    }

    func hasBuildInfo(_ lines: [String], role: String) -> Bool {
        lines.contains { $0.hasPrefix("legato_build_info{") && $0.contains("role=\"\(role)\"") && $0.hasSuffix(" 1.0") }
    }

    func startDaemon(_ argv: [String], _ what: String) throws -> SpawnedCommand {
        let c = try SpawnedCommand(argv)
        guard c.waitForOutput(timeoutSeconds: 15, { _, e in e.contains("metrics at http://") }) else {
            c.signal(SIGKILL)
            throw TestFailure("\(what) did not start its metrics endpoint: \(c.stderrSoFar)")
        }
        return c
    }

    @Test func everyDaemonAndARunningProgramServeTheirMetrics() throws {
        try requireAgentCapabilities()
        let dir = TestEnvironment.temporaryDirectory("metrics")
        let secretFile = dir + "/secret"
        try "metrics-test-secret-\(UInt64.random(in: 0...UInt64.max))\n".write(toFile: secretFile, atomically: true, encoding: .utf8)
        let coordPort = try freePort(), memdPort = try freePort(), logdPort = try freePort()
        let m = (coord: try freePort(), memd: try freePort(), logd: try freePort(), run: try freePort())
        let coordinator = "127.0.0.1:\(coordPort)"
        let legato = TestEnvironment.legato

        let coord = try startDaemon([legato, "coord", "--listen", coordinator, "--store", "sqlite:\(dir)/coordinator.db",
                                     "--secret-file", secretFile, "--metrics", "127.0.0.1:\(m.coord)"], "legato coord")
        defer { coord.signal(SIGTERM); _ = try? coord.wait(timeoutSeconds: 10) }
        let memd = try startDaemon([legato, "memd", "--listen", "127.0.0.1:\(memdPort)", "--capacity", "256M", "--coordinator", coordinator,
                                    "--dir", dir + "/memd", "--secret-file", secretFile, "--metrics", "127.0.0.1:\(m.memd)"], "legato memd")
        defer { memd.signal(SIGTERM); _ = try? memd.wait(timeoutSeconds: 10) }
        let logd = try startDaemon([legato, "logd", "--listen", "127.0.0.1:\(logdPort)", "--dir", dir + "/logd", "--coordinator", coordinator,
                                    "--secret-file", secretFile, "--metrics", "127.0.0.1:\(m.logd)"], "legato logd")
        defer { logd.signal(SIGTERM); _ = try? logd.wait(timeoutSeconds: 10) }

        let c = try scrape(m.coord)
        #expect(hasBuildInfo(c, role: "coord"))
        try waitFor("both nodes registered with the coordinator") { value("legato_coord_nodes_alive", in: try scrape(m.coord)) == 2 }
        let l = try scrape(m.logd)
        #expect(hasBuildInfo(l, role: "logd"))
        #expect(value("legato_logd_replicas", in: l) == 0)
        #expect(value("legato_logd_free_disk_bytes", in: l).map { $0 > 0 } == true)
        let before = try scrape(m.memd)
        #expect(hasBuildInfo(before, role: "memd"))
        #expect(value("legato_memd_capacity_bytes", in: before) == Double(256 << 20))
        #expect(value("legato_memd_pages_stored_total", in: before) == 0)

        // A program a few times larger than its budget, paused half-way so it is scraped while it runs.
        let script = "import sys, time\nd = bytearray(48 << 20)\nfor i in range(0, len(d), 4096): d[i] = 1\n"
            + "print('filled', flush=True)\ntime.sleep(4)\nprint(sum(d[::4096]))\n"
        let run = try SpawnedCommand([legato, "run", "--coordinator", coordinator, "--secret-file", secretFile, "--local-mem", "8M",
                                      "--metrics", "127.0.0.1:\(m.run)", "--", "python3", "-c", script])
        guard run.waitForOutput(timeoutSeconds: 60, { out, _ in out.contains("filled") }) else {
            run.signal(SIGKILL)
            throw TestFailure("the program did not get going: \(run.stderrSoFar)")
        }
        var r: [String] = []
        try waitFor("the run's metrics to show its stored pages") {
            r = try scrape(m.run)
            return (value("legato_run_pages_stored_total", in: r) ?? 0) > 1000
        }
        #expect(hasBuildInfo(r, role: "run"))
        #expect((value("legato_run_faults_total", in: r) ?? 0) > 0)
        #expect(value("legato_run_local_budget_bytes", in: r) == Double(8 << 20))
        #expect((value("legato_run_resident_bytes", in: r) ?? .infinity) <= Double(8 << 20))
        #expect(r.contains("# TYPE legato_run_fault_seconds histogram"), "the fault-latency histogram is missing")
        let result = try run.wait(timeoutSeconds: 120)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.hasSuffix("\(48 << 8)\n"), "\(result.stdout)")

        // The memory node counted the same stores.
        #expect((value("legato_memd_pages_stored_total", in: try scrape(m.memd)) ?? 0) > 1000)
    }

    func waitFor(_ what: String, timeoutSeconds: Double = 20, _ condition: () throws -> Bool) throws {
        let deadline = monotonicNanos() + UInt64(timeoutSeconds * 1e9)
        while monotonicNanos() < deadline {
            if try condition() { return }
            usleep(100_000)
        }
        throw TestFailure("timed out waiting for \(what)")
    }
}

import Foundation
import Glibc
import LegatoCore
import LegatoSystem
import Testing

/// Running `legato` as a user would, and comparing with a plain run.
enum Legato {
    /// `legato run --local-mem BUDGET --stats-json F [extra] -- argv`; returns the result and the stats.
    static func run(_ argv: [String], localMem: UInt64, extra: [String] = [], stdin: String? = nil,
                    environment: [String: String] = [:], timeoutSeconds: Double = 600) throws -> (CommandResult, RunStats) {
        let dir = TestEnvironment.temporaryDirectory("run")
        let statsPath = dir + "/stats.json"
        let r = try runCommand([TestEnvironment.legato, "run", "--local-mem", String(localMem), "--stats-json", statsPath] + extra + ["--"] + argv,
                               environment: environment, stdin: stdin, timeoutSeconds: timeoutSeconds)
        let stats = try RunStats(path: statsPath)
        return (r, stats)
    }

    /// Runs argv plainly and under legato at `fraction` of `footprintBytes`; checks identical
    /// output and status, and that pages really went remote and came back within the budget.
    @discardableResult
    static func compareWithPlainRun(_ argv: [String], footprintBytes: UInt64, fraction: UInt64 = 8,
                                    extra: [String] = [], checkPeak: Bool = true, sourceLocation: SourceLocation = #_sourceLocation) throws -> RunStats {
        let plain = try runCommand(argv)
        #expect(plain.status == 0, "plain run of \(argv) failed: \(plain.stdout) \(plain.stderr)", sourceLocation: sourceLocation)
        let budget = footprintBytes / fraction
        let (r, stats) = try run(argv, localMem: budget, extra: extra)
        #expect(r.status == plain.status, "legato run exited \(r.status); stderr:\n\(r.stderr)", sourceLocation: sourceLocation)
        #expect(r.stdout == plain.stdout, "output differs from a plain run", sourceLocation: sourceLocation)
        #expect(!r.stdout.contains("FAIL"), sourceLocation: sourceLocation)
        // The agent's liveness guard never had to wake a fault that was dropped.
        #expect(!r.stderr.contains("waited for a page"), "a fault was lost:\n\(r.stderr)", sourceLocation: sourceLocation)
        #expect(stats.storedPages > 0, "no page was stored on a memory node", sourceLocation: sourceLocation)
        #expect(stats.fetchedPages > 0, "no page came back from a memory node", sourceLocation: sourceLocation)
        #expect(stats.evictedPages > 0, sourceLocation: sourceLocation)
        #expect(stats.localBudgetBytes == Int(budget), sourceLocation: sourceLocation)
        #expect(!checkPeak || stats.peakResidentBytes <= Int(budget), "peak resident \(stats.peakResidentBytes) over the budget \(budget)",
                sourceLocation: sourceLocation)
        return stats
    }

    /// A `legato memd` process on a free loopback port, with a secret file.
    final class MemoryNodeProcess {
        let command: SpawnedCommand
        let endpoint: Endpoint
        let secretFile: String

        init(capacity: String = "1G", secretFile: String? = nil) throws {
            let dir = TestEnvironment.temporaryDirectory("memd")
            self.secretFile = secretFile ?? dir + "/secret"
            if secretFile == nil {
                try "memd-test-secret-\(UInt64.random(in: 0...UInt64.max))\n".write(toFile: self.secretFile, atomically: true, encoding: .utf8)
            }
            let port = try freePort()
            command = try SpawnedCommand([TestEnvironment.legato, "memd", "--listen", "127.0.0.1:\(port)", "--capacity", capacity,
                                          "--segment-size", "1M", "--secret-file", self.secretFile])
            endpoint = Endpoint(host: "127.0.0.1", port: port)
            guard command.waitForOutput(timeoutSeconds: 10, { _, err in err.contains("listening on") }) else {
                throw TestFailure("memd did not start: \(command.stderrSoFar)")
            }
        }

        func kill9() {
            command.signal(SIGKILL)
            _ = try? command.wait(timeoutSeconds: 10)
        }

        func stop() {
            command.signal(SIGTERM)
            _ = try? command.wait(timeoutSeconds: 10)
        }
    }
}

/// A loopback port nobody listens on right now.
func freePort() throws -> UInt16 {
    let (fd, port) = try Socket.listen(host: "127.0.0.1", port: 0)
    close(fd)
    return port
}

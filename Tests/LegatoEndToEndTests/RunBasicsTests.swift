import Foundation
import Glibc
import Testing
import LegatoSystem

/// `legato run` behaves like a plain run: output, exit status, signals, stdin, environment.
@Suite(.serialized) struct RunBasicsTests {
    init() throws { try requireAgentCapabilities() }

    @Test func passesOutputAndExitStatus() throws {
        let (r, stats) = try Legato.run(["sh", "-c", "echo out; echo err >&2; exit 7"], localMem: 8 << 20)
        #expect(r.status == 7)
        #expect(r.stdout == "out\n")
        #expect(r.stderr.contains("err\n"))
        #expect(stats.raw["exit_status"] != nil)
    }

    @Test func reportsDeathBySignalAs128PlusN() throws {
        let (r, _) = try Legato.run(["sh", "-c", "kill -TERM $$"], localMem: 8 << 20)
        #expect(r.status == 128 + SIGTERM)
        let (r2, _) = try Legato.run(["sh", "-c", "kill -SEGV $$"], localMem: 8 << 20)
        #expect(r2.status == 128 + SIGSEGV)
    }

    @Test func passesStdinEnvironmentAndWorkingDirectory() throws {
        let (r, _) = try Legato.run(["sh", "-c", "cat; echo \"$LEGATO_TEST_VAR\"; pwd"], localMem: 8 << 20,
                                    stdin: "line one\nline two\n", environment: ["LEGATO_TEST_VAR": "value 42"])
        #expect(r.status == 0)
        #expect(r.stdout == "line one\nline two\nvalue 42\n\(FileManager.default.currentDirectoryPath)\n")
    }

    @Test func explainsAProgramThatCannotRun() throws {
        let r = try runCommand([TestEnvironment.legato, "run", "--", "/nonexistent/prog"])
        #expect(r.status == 127)
        #expect(r.stderr.contains("/nonexistent/prog"))
        let r2 = try runCommand([TestEnvironment.legato, "run", "--", "no-such-command-xyz"])
        #expect(r2.status == 127)
        #expect(r2.stderr.contains("command not found"))
        let r3 = try runCommand([TestEnvironment.legato, "run", "--local-mem", "lots", "--", "true"])
        #expect(r3.status != 0)
        #expect(r3.stderr.contains("local-mem"))
    }

    @Test func forwardsTerminationToTheProgram() throws {
        let dir = TestEnvironment.temporaryDirectory("term")
        let cmd = try SpawnedCommand([TestEnvironment.legato, "run", "--stats-json", dir + "/s.json", "--", "sh", "-c",
                                      "trap 'echo got-term; exit 3' TERM; echo ready; while :; do sleep 0.05; done"])
        #expect(cmd.waitForOutput { out, _ in out.contains("ready") })
        cmd.signal(SIGTERM)
        let r = try cmd.wait(timeoutSeconds: 20)
        #expect(r.status == 3, "stderr: \(r.stderr)")
        #expect(r.stdout.contains("got-term"))
    }

    @Test func runsThreadsAndChildProcesses() throws {
        let (r, _) = try Legato.run(["python3", "-c", """
            import threading, subprocess, os
            out = []
            def work(i):
                out.append(sum(range(i * 100000)))
            ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
            [t.start() for t in ts]; [t.join() for t in ts]
            print(sorted(out))
            print(subprocess.run(['sh', '-c', 'echo from-child'], capture_output=True, text=True).stdout.strip())
            pid = os.fork()
            if pid == 0:
                os._exit(5)
            print(os.waitpid(pid, 0)[1] >> 8)
            """], localMem: 16 << 20)
        #expect(r.status == 0, "stderr: \(r.stderr)")
        #expect(r.stdout == "[0, 4999950000, 19999900000, 44999850000]\nfrom-child\n5\n")
    }
}

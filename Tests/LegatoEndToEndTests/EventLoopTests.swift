import Foundation
import Glibc
import LegatoSystem
import Testing

/// Programs built on an event loop — epoll sets, eventfds, timers, signal handlers, worker threads —
/// checkpointed mid-work, killed with kill -9, restored and compared with plain runs.
@Suite(.serialized) struct EventLoopTests {
    init() throws { try requireAgentCapabilities() }

    /// The descriptors of kind `kind` in a checkpoint's image.
    func descriptors(_ image: [String: Any], kind: String) -> [[String: Any]] {
        (image["fds"] as? [[String: Any]] ?? []).filter { $0["kind"] as? String == kind }
    }

    @Test func nodeWithTimersPromisesAndItsWorkerPool() throws {
        // node's loop: an epoll set watching its eventfds and signal pipe, timers, the libuv worker
        // threads hashing and writing a file, caught between two ticks.
        let dir = TestEnvironment.temporaryDirectory("node-timers")
        let image = try checkpointKillRestore(["node", Workloads.script("nodetimers.js"), "40", dir + "/scratch"], name: "node-timers",
                                              localMem: "64M", afterLines: 10, dir: dir)
        let sets = descriptors(image, kind: "epoll")
        #expect(sets.contains { ($0["epoll"] as? [Any])?.isEmpty == false }, "node's epoll sets and their entries are saved: \(sets)")
        #expect(!descriptors(image, kind: "eventfd").isEmpty, "node's eventfds are saved")
    }

    @Test func pythonAsyncioWithQueuesThreadsAndASocketPair() throws {
        // asyncio's loop: its epoll set, its self-pipe (a socket pair), a socket pair of the
        // program's own with a line in flight either way, the executor's threads.
        let image = try checkpointKillRestore(["python3", Workloads.script("pyasync.py"), "60"], name: "asyncio", localMem: "64M", afterLines: 15)
        let sockets = descriptors(image, kind: "unixSocket")
        #expect(sockets.count >= 4, "asyncio's socket pairs are saved: \(sockets)")
        #expect(!descriptors(image, kind: "epoll").isEmpty, "asyncio's epoll set is saved")
    }

    @Test func pythonAsyncioTCPServerAndItsClientsGoOnOverTheirConnections() throws {
        // An asyncio server and three clients in one program, caught mid-conversation: each
        // connection (both of its ends) comes back with TCP_REPAIR, with the bytes in flight.
        let image = try checkpointKillRestore(["python3", Workloads.script("pyasyncserver.py"), "40"], name: "asyncio-tcp", localMem: "64M",
                                              afterLines: 30)
        let connections = descriptors(image, kind: "inetSocket").filter { $0["inetSocket"].flatMap { ($0 as? [String: Any])?["connection"] } != nil }
        #expect(connections.count == 6, "three connections, both ends of each, are saved: \(connections.count)")
        #expect(descriptors(image, kind: "inetSocket").contains { ($0["inetSocket"] as? [String: Any])?["backlog"] != nil }, "the listener is saved")
    }

    @Test func nodeTCPServerAndItsClientsGoOnOverTheirConnections() throws {
        // A node server and three clients in one program, with timers, caught mid-conversation.
        let image = try checkpointKillRestore(["node", Workloads.script("nodeserver.js"), "40"], name: "node-tcp", localMem: "64M", afterLines: 30)
        let connections = descriptors(image, kind: "inetSocket").filter { ($0["inetSocket"] as? [String: Any])?["connection"] != nil }
        #expect(connections.count == 6, "three connections, both ends of each, are saved: \(connections.count)")
    }

    @Test func javaWithAThreadBlockedInAccept() throws {
        // The JVM: its many threads, one blocked in ServerSocket.accept(), workers on long arrays,
        // a connection each step; caught while the acceptor waits.
        let dir = TestEnvironment.temporaryDirectory("java-accept")
        let compiled = try runCommand(["javac", "-d", dir + "/classes", Workloads.script("JavaAccept.java")], timeoutSeconds: 120)
        #expect(compiled.status == 0, "\(compiled.stderr)")
        let image = try checkpointKillRestore(["java", "-Xmx256m", "-cp", dir + "/classes", "JavaAccept", "40"], name: "java-accept",
                                              localMem: "256M", afterLines: 15, dir: dir)
        #expect(descriptors(image, kind: "inetSocket").contains { ($0["inetSocket"] as? [String: Any])?["backlog"] != nil }, "the listener is saved")
        #expect((image["threads"] as? [Any])?.count ?? 0 > 5, "the JVM's threads are saved")
    }

    /// redis-cli against host:port: its output, or nil if it fails.
    func redis(_ host: String, _ port: Int, _ args: [String], stdin: String? = nil) throws -> String? {
        let r = try runCommand(["redis-cli", "-h", host, "-p", "\(port)"] + args, stdin: stdin)
        return r.status == 0 && !r.stdout.hasPrefix("Could not connect") ? r.stdout : nil
    }

    /// One inline command on an open connection to redis, its answer line (nil: the connection
    /// failed — reset, closed or timed out).
    func ask(_ fd: Int32, _ command: String) -> String? {
        let line = Array((command + "\r\n").utf8)
        guard line.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == line.count else { return nil }
        var answer = [UInt8](repeating: 0, count: 512)
        let n = read(fd, &answer, answer.count)
        return n > 0 ? String(decoding: answer[..<n], as: UTF8.self) : nil
    }

    @Test func redisServerKeepsEveryKeyAndItsConnectionsAcrossKillAndRestore() throws {
        // redis-server (epoll, its listening socket, background threads, jemalloc) on a machine of
        // its own (a network namespace), loaded by a client before the checkpoint, with one more
        // client connected across it. The machine dies (cut off, then kill -9: the FIN the kill
        // makes never reaches the client, as from a dead machine) and the run is restored on
        // another with the same address: the connection goes on where it was (TCP_REPAIR), and
        // a new client reads every key back. Again from the same checkpoint with --tcp-close:
        // the connection is reset, the keys are back.
        let dir = TestEnvironment.temporaryDirectory("redis")
        let host = try ServerHost()
        let port = 21000 + Int(getpid() % 20000)
        let run = try NamedRun(name: "redis", stateDir: dir + "/state", output: dir + "/out", localMem: "64M",
                               argv: ["redis-server", "--port", "\(port)", "--bind", host.address, "--protected-mode", "no",
                                      "--save", "", "--appendonly", "no", "--dir", dir],
                               wrapper: host.inside([]))
        let deadline = monotonicNanos() + 20_000_000_000
        while try redis(host.address, port, ["PING"]) != "PONG\n" && monotonicNanos() < deadline { usleep(100_000) }
        let keys = 2000
        let load = (1...keys).map { "SET key:\($0) value-\($0)-\(String(repeating: "x", count: $0 % 50))" }.joined(separator: "\n") + "\n"
        _ = try redis(host.address, port, [], stdin: load)
        #expect(try redis(host.address, port, ["DBSIZE"]) == "\(keys)\n", "the client loaded the keys")
        let across = try Socket.connect(host: host.address, port: UInt16(port))
        defer { close(across) }
        Socket.setTimeout(across, seconds: 10)
        #expect(ask(across, "SET across 41") == "+OK\r\n")
        let ck = try run.checkpoint()
        #expect(ck.status == 0, "\(ck.stderr)")
        try host.crash()
        run.killHard()
        let reads = (1...keys).map { "GET key:\($0)" }.joined(separator: "\n") + "\n"
        let expected = (1...keys).map { "value-\($0)-\(String(repeating: "x", count: $0 % 50))" }.joined(separator: "\n") + "\n"
        for extra in [[], ["--tcp-close"]] {
            try host.replace()
            let restore = try SpawnedCommand(host.inside([TestEnvironment.legato, "restore", "redis", "--epoch", "1", "--state-dir", dir + "/state", "--local-mem", "64M"] + extra))
            let ready = monotonicNanos() + 20_000_000_000
            while try runCommand(host.inside(["redis-cli", "-h", host.address, "-p", "\(port)", "PING"])).stdout != "PONG\n" && monotonicNanos() < ready { usleep(100_000) }
            #expect(try redis(host.address, port, ["DBSIZE"]) == "\(keys + 1)\n", "every key is back, and only those (\(extra))")
            #expect(try redis(host.address, port, ["GET", "across"]) == "41\n", "the connection's write is back, the next run's INCR not (\(extra))")
            if extra.isEmpty {
                #expect(ask(across, "INCR across") == ":42\r\n", "the connection held across the checkpoint goes on")
            } else {
                #expect(ask(across, "GET across") == nil, "with --tcp-close the connection held across is reset")
            }
            #expect(try redis(host.address, port, [], stdin: reads) == expected, "every value is back (\(extra))")
            try host.crash()
            restore.signal(SIGKILL)
            _ = try? restore.wait(timeoutSeconds: 20)
            let gone = monotonicNanos() + 10_000_000_000
            while try runCommand(host.inside(["redis-cli", "-h", host.address, "-p", "\(port)", "PING"])).status == 0 && monotonicNanos() < gone { usleep(100_000) }
        }
    }

    @Test func aUNIXSocketConnectedOutsideIsRefusedByNameAndRunsOn() throws {
        // The program connects to a listener the test holds: its peer is outside, refused.
        let dir = TestEnvironment.temporaryDirectory("unix-outside")
        let path = dir + "/listener.sock"
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8) + [0]) }
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        #expect(bound == 0 && listen(listener, 4) == 0, "the test's listener: errno \(errno)")
        let script = "import socket, time\ns = socket.socket(socket.AF_UNIX)\ns.connect(\"\(path)\")\nprint(\"ready\", flush=True)\ntime.sleep(2)\nprint(\"done\")"
        let run = try NamedRun(name: "unix-outside", stateDir: dir + "/state", output: dir + "/out", localMem: "32M", argv: ["python3", "-c", script])
        try run.waitForLines(1)
        let ck = try run.checkpoint()
        #expect(ck.status != 0, "\(ck.stdout)")
        #expect(ck.stderr.contains("a UNIX stream socket whose peer is outside the program"), "the refusal names it: \(ck.stderr)")
        let r = try run.command.wait(timeoutSeconds: 60)
        #expect(r.status == 0, "the program runs on: \(r.stderr)")
        #expect(try String(contentsOfFile: run.output, encoding: .utf8) == "ready\ndone\n")
    }

    /// `curl` against 127.0.0.1:port until it answers (or `seconds` pass): the body, or nil.
    func fetch(_ port: Int, _ path: String, seconds: Double = 20) throws -> String? {
        let deadline = monotonicNanos() + UInt64(seconds * 1e9)
        while monotonicNanos() < deadline {
            let r = try runCommand(["curl", "-s", "--max-time", "2", "http://127.0.0.1:\(port)/\(path)"])
            if r.status == 0 { return r.stdout }
            usleep(100_000)
        }
        return nil
    }

    @Test func pythonHttpServerServesCurlBeforeAndAfter() throws {
        // python3 -m http.server: its listening TCP socket (SO_REUSEADDR, its backlog) listens again
        // on the same address after kill -9 and restore, and serves the same file.
        let dir = TestEnvironment.temporaryDirectory("http-server")
        try FileManager.default.createDirectory(atPath: dir + "/www", withIntermediateDirectories: true)
        let body = (0..<200).map { "line \($0) of the served file" }.joined(separator: "\n") + "\n"
        try body.write(toFile: dir + "/www/served.txt", atomically: true, encoding: .utf8)
        let port = 20000 + Int(getpid() % 20000)
        let run = try NamedRun(name: "http", stateDir: dir + "/state", output: dir + "/out", localMem: "64M",
                               argv: ["python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir + "/www", "\(port)"])
        #expect(try fetch(port, "served.txt") == body, "the server serves before the checkpoint")
        let ck = try run.checkpoint()
        #expect(ck.status == 0, "\(ck.stderr)")
        run.killHard()
        #expect(try fetch(port, "served.txt", seconds: 0.5) == nil, "the killed server no longer answers")
        let restore = try SpawnedCommand([TestEnvironment.legato, "restore", "http", "--state-dir", dir + "/state", "--local-mem", "64M"])
        defer {
            restore.signal(SIGKILL)
            _ = try? restore.wait(timeoutSeconds: 20)
        }
        #expect(try fetch(port, "served.txt") == body, "the restored server serves the file on the same port")
        #expect(try fetch(port, "served.txt") == body, "and again, on a second connection")
    }
}

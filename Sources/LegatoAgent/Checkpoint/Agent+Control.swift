import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// The control socket of a named run (`<state dir>/processes/<name>/control.sock`), through which
/// `legato checkpoint NAME` asks for a checkpoint. One request per connection, one JSON line each way.
extension Agent {
    var processDirectory: String? { config.name.map { config.stateDirectory + "/processes/" + $0 } }

    func openControlSocket() throws {
        guard let dir = processDirectory else { return }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        // Checkpoints a crash left half-written never committed: they go.
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where entry.hasPrefix("epoch-") && entry.hasSuffix(".tmp") {
            try? FileManager.default.removeItem(atPath: dir + "/" + entry)
        }
        controlFD = try Socket.listenUnix(path: dir + "/control.sock")
        try writeProcessRecord(state: "running", status: nil)
    }

    func closeControlSocket(exitStatus: Int32?) {
        guard let dir = processDirectory, controlFD >= 0 else { return }
        close(controlFD)
        controlFD = -1
        unlink(dir + "/control.sock")
        try? writeProcessRecord(state: "exited", status: exitStatus)
    }

    func writeProcessRecord(state: String, status: Int32?) throws {
        guard let dir = processDirectory else { return }
        var d: [String: Any] = ["name": config.name!, "program": config.program, "arguments": config.arguments,
                                "agent_pid": getpid(), "state": state, "updated_at": Date().timeIntervalSince1970]
        if let status { d["exit_status"] = status }
        try JSONSerialization.data(withJSONObject: d, options: [.sortedKeys]).write(to: URL(fileURLWithPath: dir + "/process.json"))
    }

    /// Serves one control connection (the event loop saw the listening socket readable).
    func handleControl() {
        var st = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = Sys.accept(controlFD, &st, &len)
        guard fd >= 0 else { return }
        defer { close(fd) }
        Socket.setTimeout(fd, seconds: 5)
        var request = [UInt8]()
        var byte: UInt8 = 0
        while request.count < 4096, recv(fd, &byte, 1, 0) == 1, byte != 10 { request.append(byte) }
        let op = (try? JSONSerialization.jsonObject(with: Data(request)) as? [String: Any])?["op"] as? String
        var reply: [String: Any]
        switch op {
        case "checkpoint":
            let crash = (try? JSONSerialization.jsonObject(with: Data(request)) as? [String: Any])?["crash_at"] as? String
            reply = checkpointNow(crashAt: crash.flatMap { CrashPoint(rawValue: $0) })
        case "ping": reply = ["ok": true, "pid": mainPID]
        default: reply = ["ok": false, "error": "unknown request"]
        }
        var out = (try? JSONSerialization.data(withJSONObject: reply, options: [.sortedKeys])) ?? Data("{}".utf8)
        out.append(10)
        _ = out.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// When the next periodic checkpoint is due (monotonic milliseconds), with --checkpoint-every.
    var periodicCheckpointDue: UInt64? {
        guard let every = config.checkpointEverySeconds, config.name != nil, controlFD >= 0 else { return nil }
        if lastPeriodicCheckpoint == 0 { lastPeriodicCheckpoint = monotonicNanos() / 1_000_000 }
        return lastPeriodicCheckpoint + UInt64(every * 1000)
    }

    /// Takes the periodic checkpoint if it is due; a refused one is logged and tried again next period.
    func takePeriodicCheckpoint() {
        guard !checkpointing, programStatus == nil, uffd >= 0, let due = periodicCheckpointDue, monotonicNanos() / 1_000_000 >= due else { return }
        lastPeriodicCheckpoint = monotonicNanos() / 1_000_000
        _ = checkpointNow()
    }

    /// Where a test can make the agent die (SIGKILL, as `kill -9` would) in the middle of a checkpoint.
    enum CrashPoint: String {
        case captured   // pages and context written, nothing durable yet
        case prepared   // phase one done: all durable under the temporary name
        case committed  // committed, the requester not told yet
    }

    private func crash(at point: CrashPoint, if wanted: CrashPoint?) {
        guard point == wanted else { return }
        log.warning("crash injected at \(point.rawValue)")
        kill(getpid(), SIGKILL)
        pause()
    }

    /// Takes and commits a checkpoint of the named run; PROG runs on whatever happens.
    func checkpointNow(crashAt: CrashPoint? = nil) -> [String: Any] {
        guard let name = config.name else { return ["ok": false, "error": "this run has no name"] }
        let store = LocalImageStore(stateDirectory: config.stateDirectory, name: name)
        let epoch = (store.epochs.max() ?? 0) + 1
        checkpointing = true
        defer { checkpointing = false }
        do {
            let sink = try store.begin(epoch: epoch)
            do {
                let r = try capture(name: name, epoch: epoch, into: sink)
                let pause = Double(r.pauseNanos) / 1e6
                crash(at: .captured, if: crashAt)
                do {
                    try persistStaged(into: sink)
                    try sink.finish(r.image)
                    try sink.prepare(pauseMillis: pause)
                    crash(at: .prepared, if: crashAt)
                    try sink.commit()
                } catch {
                    forgetAllSaved()
                    throw error
                }
                crash(at: .committed, if: crashAt)
                checkpointBase = epoch
                stats.checkpoints += 1
                log.info("checkpoint \(name) epoch \(epoch) committed (\(r.parent.map { "increment of \($0)" } ?? "full")): \(r.pages) pages, paused \(String(format: "%.1f", pause)) ms")
                var reply: [String: Any] = ["ok": true, "epoch": epoch, "pause_ms": pause, "pages": r.pages, "bytes": r.bytes]
                if let p = r.parent { reply["parent"] = p }
                return reply
            } catch {
                sink.abandon()
                forgetAllSaved()
                throw error
            }
        } catch {
            log.warning("checkpoint \(name) epoch \(epoch) refused: \(error)")
            return ["ok": false, "error": "\(error)"]
        }
    }
}

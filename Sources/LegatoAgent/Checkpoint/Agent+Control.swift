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
        try writeProcessRecord(state: .running, status: nil)
    }

    func closeControlSocket(exitStatus: Int32?) {
        guard let dir = processDirectory, controlFD >= 0 else { return }
        close(controlFD)
        controlFD = -1
        unlink(dir + "/control.sock")
        try? writeProcessRecord(state: .exited, status: exitStatus)
    }

    func writeProcessRecord(state: ProcessRecord.State, status: Int32?) throws {
        guard let dir = processDirectory else { return }
        let record = ProcessRecord(name: config.name!, program: config.program, arguments: config.arguments, agentPid: getpid(),
                                   state: state, exitStatus: status, updatedAt: Date().timeIntervalSince1970)
        try ControlJSON.encoder.encode(record).write(to: URL(fileURLWithPath: dir + "/process.json"))
    }

    /// Serves one control connection (the event loop saw the listening socket readable).
    func handleControl() {
        var st = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let fd = Sys.accept(controlFD, &st, &len)
        guard fd >= 0 else { return }
        Socket.setTimeout(fd, seconds: 5)
        var request = [UInt8]()
        var byte: UInt8 = 0
        while request.count < 4096, recv(fd, &byte, 1, 0) == 1, byte != 10 { request.append(byte) }
        guard let r = try? ControlJSON.decoder.decode(ControlRequest.self, from: Data(request)) else {
            return reply(to: fd, .refused("unknown request"))
        }
        switch r.op {
        case .checkpoint: startCheckpoint(replyTo: fd, crashAt: r.crashAt.flatMap { CrashPoint(rawValue: $0) })
        case .ping: reply(to: fd, ControlReply(ok: true, pid: mainPID))
        }
    }

    /// Sends one JSON line and closes the control connection.
    func reply(to fd: Int32?, _ r: ControlReply) {
        guard let fd else { return }
        let out = ControlJSON.line(r)
        _ = out.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        close(fd)
    }

    /// When the next periodic checkpoint is due (monotonic milliseconds), with --checkpoint-every.
    var periodicCheckpointDue: UInt64? {
        guard let every = config.checkpointEverySeconds, config.name != nil, controlFD >= 0 else { return nil }
        if lastPeriodicCheckpoint == 0 { lastPeriodicCheckpoint = monotonicNanos() / 1_000_000 }
        return lastPeriodicCheckpoint + UInt64(every * 1000)
    }

    /// Takes the periodic checkpoint if it is due; a refused one is logged and tried again next period.
    func takePeriodicCheckpoint() {
        guard !checkpointing, tracer.programStatus == nil, mm.isManaged, let due = periodicCheckpointDue, monotonicNanos() / 1_000_000 >= due else { return }
        lastPeriodicCheckpoint = monotonicNanos() / 1_000_000
        startCheckpoint(replyTo: nil, crashAt: nil)
    }

    /// Where a test can make the agent die (SIGKILL, as `kill -9` would) in the middle of a checkpoint.
    enum CrashPoint: String {
        case captured   // paused and thawed, nothing durable yet
        case prepared   // phase one done: all durable, no decision
        case committed  // committed, the requester not told yet
    }

    private func crash(at point: CrashPoint, if wanted: CrashPoint?) {
        guard point == wanted else { return }
        log.warning("crash injected at \(point.rawValue)")
        kill(getpid(), SIGKILL)
        pause()
    }

    /// The store this run's checkpoints go to: the cluster's log and coordinator, or the state directory.
    func checkpointStore(name: String) throws -> CheckpointStore {
        if let s = store { return s }
        let s: CheckpointStore
        if let c = config.coordinator {
            s = try ClusterCheckpointStore(name: name, coordinator: c, secret: config.secret)
        } else {
            s = LocalImageStore(stateDirectory: config.stateDirectory, name: name)
        }
        store = s
        return s
    }

    /// Takes a checkpoint of the named run: the pause happens here, the two-phase commit on a thread
    /// of its own while PROG runs; `finishCheckpoint` replies once it is decided. PROG runs on whatever happens.
    func startCheckpoint(replyTo fd: Int32?, crashAt: CrashPoint?) {
        guard let name = config.name else { return reply(to: fd, .refused("this run has no name")) }
        guard !checkpointing else { return reply(to: fd, .refused("a checkpoint is in progress")) }
        checkpointing = true
        let tx: CheckpointTransaction
        let r: CheckpointResult
        do {
            tx = try checkpointStore(name: name).begin()
            do { r = try capture(name: name, epoch: tx.epoch) } catch {
                if let child = staging.snapshot { dropSnapshot(child) }
                for p in staging.endFreezes(committedEpoch: nil) { log.warning("\(p)") }
                tx.abort(reason: "\(error)")
                throw error
            }
        } catch {
            forgetAllSaved()
            checkpointing = false
            log.warning("checkpoint \(name) refused: \(error)")
            return reply(to: fd, .refused("\(error)"))
        }
        let pause = Double(r.pauseNanos) / 1e6
        crash(at: .captured, if: crashAt)
        let inFlight = CheckpointInFlight(result: r, pauseMillis: pause, replyFD: fd)
        pendingCheckpoint = inFlight
        let staging = self.staging, doneFD = checkpointDoneFD, log = self.log
        let retains = store?.retainsOnMemoryNodes == true
        // Tests hold the commit back to make PROG exit while its checkpoint is written.
        let delay = ProcessInfo.processInfo.environment["LEGATO_TEST_COMMIT_DELAY_MS"].flatMap { UInt32($0) } ?? 0
        startThread(name: "checkpoint") { [self] in
            var committed = false
            if delay > 0 { usleep(delay * 1000) }
            do {
                try tx.prepare(staging: staging, image: r.image, pauseMillis: pause)
                crash(at: .prepared, if: crashAt)
                try tx.commit()
                committed = true
                crash(at: .committed, if: crashAt)
            } catch {
                tx.abort(reason: "\(error)")
                log.warning("checkpoint \(name) epoch \(tx.epoch) aborted: \(error)")
                inFlight.failure = "\(error)"
            }
            let retained = committed && retains ? UInt32(truncatingIfNeeded: tx.epoch) : nil
            for p in staging.endFreezes(committedEpoch: retained) { log.warning("checkpoint \(name) epoch \(tx.epoch): \(p)") }
            var one: UInt64 = 1
            _ = write(doneFD, &one, 8)
        }
    }

    /// The event loop's side of a finished two-phase commit.
    func finishCheckpoint() {
        var n: UInt64 = 0
        _ = read(checkpointDoneFD, &n, 8)
        guard let c = pendingCheckpoint else { return }
        pendingCheckpoint = nil
        checkpointing = false
        if let child = staging.snapshot { dropSnapshot(child) }
        staging.reset()
        let r = c.result
        if let failure = c.failure {
            forgetAllSaved()
            return reply(to: c.replyFD, .refused("aborted: \(failure)"))
        }
        checkpointBase = r.epoch
        stats.checkpoints += 1
        if restoreBacking == nil { dropEarlierSpaces() }
        log.info("checkpoint \(r.image.name) epoch \(r.epoch) committed (\(r.parent.map { "increment of \($0)" } ?? "full")): \(r.pages) pages, paused \(String(format: "%.1f", c.pauseMillis)) ms")
        reply(to: c.replyFD, ControlReply(ok: true, epoch: r.epoch, parent: r.parent, pauseMs: c.pauseMillis, pages: r.pages,
                                          bytes: r.bytes, snapshot: r.snapshot))
    }

    /// Waits for a checkpoint in flight to be decided (before the agent exits).
    func waitForCheckpoint() {
        while pendingCheckpoint != nil {
            var p = pollfd(fd: checkpointDoneFD, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 1000)
            if p.revents != 0 { finishCheckpoint() }
        }
    }
}

/// A checkpoint whose two-phase commit runs on its own thread.
final class CheckpointInFlight {
    let result: Agent.CheckpointResult
    let pauseMillis: Double
    let replyFD: Int32?
    /// Set by the commit thread before it signals completion.
    var failure: String?

    init(result: Agent.CheckpointResult, pauseMillis: Double, replyFD: Int32?) {
        self.result = result
        self.pauseMillis = pauseMillis
        self.replyFD = replyFD
    }
}

import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// A named run's checkpoints: at most one at a time; the pause happens on the event loop (the
/// capture the agent hands in), the two-phase commit into the store on a thread of its own while
/// PROG runs, and the event loop hears of the decision through `doneFD`.
///
/// Contract: a checkpoint is answered (to its control connection, if any) exactly once, when it is
/// refused, aborted or committed; PROG runs on whatever happens.
final class Checkpointer {
    let name: String
    private let config: Agent.Config
    private let log: Logger
    /// Where the checkpoints go (made at the first checkpoint).
    private(set) var store: CheckpointStore?
    /// The pages of the checkpoint being taken, from the pause to the end of its commit.
    let staging = CheckpointStaging()
    /// Readable once the commit thread has decided the checkpoint in flight.
    let doneFD: Int32
    private(set) var inFlight: CheckpointInFlight?
    /// From a checkpoint's start to its decision; the control socket is not served meanwhile.
    private(set) var busy = false
    /// The committed checkpoint the next one is an increment of (nil: the next is full).
    var base: UInt64?
    private var lastPeriodic: UInt64 = 0

    init(name: String, config: Agent.Config, log: Logger) throws {
        self.name = name
        self.config = config
        self.log = log
        doneFD = try Sys.eventFD()
    }

    /// Whether the memory nodes keep each committed checkpoint's versions (see CheckpointStore).
    var retainsOnMemoryNodes: Bool { store?.retainsOnMemoryNodes == true }
    /// The base's processes besides PROG, by namespace pid: which incarnation each was.
    var baseMembers: [Int32: ProcessImage.TreeLinks] = [:]

    /// The store this run's checkpoints go to: the cluster's log and coordinator, or the state directory.
    func checkpointStore() throws -> CheckpointStore {
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

    /// When the next periodic checkpoint is due (monotonic milliseconds), with --checkpoint-every.
    var periodicDue: UInt64? {
        guard let every = config.checkpointEverySeconds else { return nil }
        if lastPeriodic == 0 { lastPeriodic = monotonicNanos() / 1_000_000 }
        return lastPeriodic + UInt64(every * 1000)
    }

    /// Whether a periodic checkpoint is due now (and, if so, counts the period from now).
    func takePeriodicNow() -> Bool {
        guard !busy, let due = periodicDue, monotonicNanos() / 1_000_000 >= due else { return false }
        lastPeriodic = monotonicNanos() / 1_000_000
        return true
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

    /// Takes a checkpoint: `capture` pauses PROG and stages it as the epoch it is given; then the
    /// two-phase commit runs on its own thread. If the capture fails, `refused` undoes what it marked
    /// (every page counts as changed again) and the requester is told why.
    func start(replyTo conn: Int32?, crashAt: CrashPoint?, capture: (UInt64) throws -> CheckpointResult, refused: () -> Void) {
        guard !busy else { return ControlSocket.reply(to: conn, .refused("a checkpoint is in progress")) }
        busy = true
        let tx: CheckpointTransaction
        let r: CheckpointResult
        do {
            tx = try checkpointStore().begin()
            do { r = try capture(tx.epoch) } catch {
                staging.dropSnapshot()
                for p in staging.endFreezes(committedEpoch: nil) { log.warning("\(p)") }
                tx.abort(reason: "\(error)")
                throw error
            }
        } catch {
            refused()
            busy = false
            log.warning("checkpoint \(name) refused: \(error)")
            return ControlSocket.reply(to: conn, .refused("\(error)"))
        }
        let pause = Double(r.pauseNanos) / 1e6
        crash(at: .captured, if: crashAt)
        let inFlight = CheckpointInFlight(result: r, pauseMillis: pause, replyFD: conn)
        self.inFlight = inFlight
        let staging = self.staging, doneFD = self.doneFD, log = self.log, name = self.name
        let retains = retainsOnMemoryNodes
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

    /// The checkpoint the commit thread has decided (`doneFD` was readable): its staging is let go,
    /// and a committed one becomes the base of the next. The caller answers the requester.
    func finish() -> CheckpointInFlight? {
        var n: UInt64 = 0
        _ = read(doneFD, &n, 8)
        guard let c = inFlight else { return nil }
        inFlight = nil
        busy = false
        staging.reset()  // (ends the snapshot too)
        if c.failure == nil {
            base = c.result.epoch
            baseMembers = Dictionary((c.result.image.members ?? []).compactMap { m in m.links.map { (m.pid, $0) } }, uniquingKeysWith: { a, _ in a })
        }
        return c
    }

    /// Waits for the checkpoint in flight to be decided (before the agent exits); `finished` is
    /// called with it.
    func waitForInFlight(_ finished: (CheckpointInFlight) -> Void) {
        while inFlight != nil {
            var p = pollfd(fd: doneFD, events: Int16(POLLIN), revents: 0)
            _ = poll(&p, 1, 1000)
            if p.revents != 0, let c = finish() { finished(c) }
        }
    }
}

/// A checkpoint whose two-phase commit runs on its own thread.
final class CheckpointInFlight {
    let result: CheckpointResult
    let pauseMillis: Double
    let replyFD: Int32?
    /// Set by the commit thread before it signals completion.
    var failure: String?

    init(result: CheckpointResult, pauseMillis: Double, replyFD: Int32?) {
        self.result = result
        self.pauseMillis = pauseMillis
        self.replyFD = replyFD
    }
}

import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// The agent's side of a named run's control socket and checkpoints: requests come in through the
/// ControlSocket, the Checkpointer runs them, the agent captures PROG (Agent+Capture) in the pause.
extension Agent {
    /// Serves one control connection (the event loop saw the listening socket readable).
    func handleControl() {
        guard let (conn, r) = control?.accept() else { return }
        switch r.op {
        case .checkpoint: startCheckpoint(replyTo: conn, crashAt: r.crashAt.flatMap { Checkpointer.CrashPoint(rawValue: $0) })
        case .ping: ControlSocket.reply(to: conn, ControlReply(ok: true, pid: mainPID))
        }
    }

    /// When the next periodic checkpoint is due (monotonic milliseconds), with --checkpoint-every.
    var periodicCheckpointDue: UInt64? {
        guard control?.isOpen == true else { return nil }
        return checkpointer?.periodicDue
    }

    /// Takes the periodic checkpoint if it is due; a refused one is logged and tried again next period.
    func takePeriodicCheckpoint() {
        guard recoveries.isEmpty, tracer.programStatus == nil, mm.isManaged, control?.isOpen == true, checkpointer?.takePeriodicNow() == true else { return }
        startCheckpoint(replyTo: nil, crashAt: nil)
    }

    /// Takes a checkpoint of the named run: the pause happens here, the two-phase commit on a thread
    /// of its own while PROG runs; `finishCheckpoint` replies once it is decided.
    func startCheckpoint(replyTo conn: Int32?, crashAt: Checkpointer.CrashPoint?) {
        guard let checkpointer else { return ControlSocket.reply(to: conn, .refused("this run has no name")) }
        if let r = recoveries.values.first {
            return ControlSocket.reply(to: conn, .refused("memory node \(r.deadEndpoint) died and its pages are being recovered; try again once they are"))
        }
        checkpointer.start(replyTo: conn, crashAt: crashAt,
                           capture: { try capture(into: checkpointer, epoch: $0) },
                           refused: { forgetAllSaved() })
    }

    /// The event loop's side of a finished two-phase commit.
    func finishCheckpoint() {
        guard let c = checkpointer?.finish() else { return }
        answer(c)
    }

    private func answer(_ c: CheckpointInFlight) {
        let r = c.result
        if let failure = c.failure {
            forgetAllSaved()
            return ControlSocket.reply(to: c.replyFD, .refused("aborted: \(failure)"))
        }
        stats.checkpoints += 1
        if restore.backing == nil { dropEarlierSpaces() }
        log.info("checkpoint \(r.image.name) epoch \(r.epoch) committed (\(r.parent.map { "increment of \($0)" } ?? "full")): \(r.pages) pages, paused \(String(format: "%.1f", c.pauseMillis)) ms")
        ControlSocket.reply(to: c.replyFD, ControlReply(ok: true, epoch: r.epoch, parent: r.parent, pauseMs: c.pauseMillis, pages: r.pages,
                                                        bytes: r.bytes, snapshot: r.snapshot))
    }

    /// Waits for a checkpoint in flight to be decided (before the agent exits).
    func waitForCheckpoint() {
        checkpointer?.waitForInFlight { answer($0) }
    }
}

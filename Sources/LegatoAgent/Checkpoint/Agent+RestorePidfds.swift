import Foundation
import Glibc
import LegatoSystem

/// Restoring pidfds. A pidfd can only be made once the process (or thread) it refers to exists —
/// a parent's pidfd of its child, a process's of its own threads — so every pidfd of the tree is
/// made after the whole tree is back, each process in restore order: pidfd_open of the same pid
/// (in PROG's namespace) with PIDFD_NONBLOCK and PIDFD_THREAD as it had them, its dups and the
/// descriptions later processes share taken as the others are. An epoll set that watches a pidfd
/// is filled then too.
extension Agent {
    /// Whether `image` fills its epoll sets only once its pidfds exist.
    func epollWaitsForPidfds(_ image: ProcessImage) -> Bool {
        let pidfds = Set(image.fds.filter { $0.kind == .pidfd }.map { $0.fd })
        return !pidfds.isEmpty && image.fds.contains { $0.kind == .epoll && ($0.epoll ?? []).contains { pidfds.contains($0.fd) } }
    }

    /// Makes the pidfds of PROG (injected into through `progCalls`) and of each restored member.
    func finishPidfds(_ prog: ProcessImage, progCalls: RestoreCalls, members: [RestoredMember], _ tree: TreeRestore?) throws {
        try makePidfds(prog, progCalls, tree)
        for m in members where m.image.fds.contains(where: { $0.kind == .pidfd }) {
            let calls = try RestoreCalls(tid: m.leader.tid, scratch: m.space.scratch, context: "restoring \(m.image.name) pid \(m.image.pid)")
            try makePidfds(m.image, calls, tree)
            try calls.inj.cure()
        }
    }

    private func makePidfds(_ image: ProcessImage, _ calls: RestoreCalls, _ tree: TreeRestore?) throws {
        for f in image.fds where f.kind == .pidfd {
            if try !restoreAsShared(f, calls, tree) {
                guard let target = f.pidfdTarget else { throw RestoreError.descriptorUnrestorable(name: image.name, epoch: image.epoch, fd: f.fd, path: f.path) }
                let flags = UInt64(f.flags) & (0o4000 | 0o200)  // PIDFD_NONBLOCK (O_NONBLOCK), PIDFD_THREAD (O_EXCL)
                let fd = try calls.call("pidfd_open(\(target)) for fd \(f.fd)", .pidfdOpen, UInt64(target), flags)
                try placeCloseOnExec(fd, at: f, calls)  // (pidfd_open sets close-on-exec)
            }
        }
        if epollWaitsForPidfds(image) { try fillEpollSets(image, calls) }
    }
}

import Foundation
import Glibc
import LegatoSystem

/// Restoring pseudo-terminals whose master the tree held (PtyDescriptors). The pair is made by the
/// first process of the tree that held either end (or that had it for controlling terminal), by
/// opening /dev/ptmx until it comes at its old index (the ones below, which the devpts instance
/// hands out first, are closed again; one above means the index is taken: the restore fails,
/// naming it); the agent sets the slave's termios and window size through its own opening of the
/// slave, and the master is kept in that process (parked) for the others. A slave is opened again
/// at its path, never as a controlling terminal; a session leader takes its terminal by opening it
/// right after its setsid, and its foreground process group is set once the whole tree is back.
extension Agent {
    func restorePtyMaster(_ f: ProcessImage.FileDescriptor, _ image: ProcessImage, _ calls: RestoreCalls, _ tree: TreeRestore?) throws {
        guard let tree, let index = f.ptyIndex else { throw RestoreError.descriptorUnrestorable(name: image.name, epoch: image.epoch, fd: f.fd, path: f.path) }
        let made = try ensurePty(index, image, calls, tree)
        if made.holder == image.pid {
            _ = try calls.call("dup3 the master of /dev/pts/\(index) to fd \(f.fd)", .dup3, UInt64(made.fd), UInt64(f.fd), f.flags & 0o2000000 != 0 ? 0o2000000 : 0)
        } else {
            try takeDescriptor(from: made.holder, fd: made.fd, to: f, calls, tree)
        }
        _ = try calls.call("fcntl(F_SETFL) fd \(f.fd)", .fcntl, UInt64(f.fd), 4, UInt64(f.flags & 0o4000))  // O_NONBLOCK
    }

    func restorePtySlave(_ f: ProcessImage.FileDescriptor, _ image: ProcessImage, _ calls: RestoreCalls, _ tree: TreeRestore?) throws {
        guard let tree, let index = f.ptyIndex else { throw RestoreError.descriptorUnrestorable(name: image.name, epoch: image.epoch, fd: f.fd, path: f.path) }
        _ = try ensurePty(index, image, calls, tree)
        let flags = UInt64(f.flags) & (0o3 | 0o4000 | 0o2000 | 0o2000000) | UInt64(O_NOCTTY)  // access, O_NONBLOCK, O_APPEND, O_CLOEXEC
        let fd = try calls.call("open /dev/pts/\(index) for fd \(f.fd)", .open, try calls.args.string("/dev/pts/\(index)"), flags, 0)
        calls.args.reset()
        try place(fd, at: f, calls)
    }

    /// A session leader (just after its setsid) takes /dev/pts/`index` for controlling terminal.
    func takeTerminal(_ index: Int32, _ image: ProcessImage, _ calls: RestoreCalls, _ tree: TreeRestore) throws {
        _ = try ensurePty(index, image, calls, tree)
        let fd = try calls.call("open /dev/pts/\(index) as the controlling terminal of pid \(image.pid)", .open,
                                try calls.args.string("/dev/pts/\(index)"), UInt64(O_RDWR | O_CLOEXEC), 0)
        calls.args.reset()
        _ = try calls.call("close", .close, UInt64(fd))
    }

    /// Each restored session leader's terminal gets its foreground process group back, set from the
    /// leader with SIGTTOU blocked (a background group's tcsetpgrp would be stopped by it).
    func finishTerminals(_ members: [RestoredMember]) throws {
        for m in members {
            guard let links = m.image.links, let index = links.terminal, let group = links.foregroundGroup, group != m.image.pid else { continue }
            let calls = try RestoreCalls(tid: m.leader.tid, scratch: m.space.scratch, context: "restoring \(m.image.name) pid \(m.image.pid)")
            let masks = try calls.args.bytes(withUnsafeBytes(of: UInt64(1) << (UInt64(SIGTTOU) - 1)) { Array($0) } + [UInt8](repeating: 0, count: 8))
            _ = try calls.call("rt_sigprocmask(SIG_BLOCK, SIGTTOU)", .rtSigprocmask, 0, masks, masks + 8, 8)
            let fd = try calls.call("open /dev/pts/\(index)", .open, try calls.args.string("/dev/pts/\(index)"), UInt64(O_RDWR | O_NOCTTY | O_CLOEXEC), 0)
            let pgrp = try calls.args.bytes(withUnsafeBytes(of: group) { Array($0) })
            _ = try calls.call("tcsetpgrp(/dev/pts/\(index), \(group))", .ioctl, UInt64(fd), 0x5410, pgrp)  // TIOCSPGRP
            _ = try calls.call("close", .close, UInt64(fd))
            _ = try calls.call("rt_sigprocmask(SIG_SETMASK)", .rtSigprocmask, 2, masks + 8, 0, 8)
            calls.args.reset()
            try calls.inj.cure()
        }
    }

    /// The pair at `index`, made here (kept above every descriptor, parked) if no process made it yet.
    private func ensurePty(_ index: Int32, _ image: ProcessImage, _ calls: RestoreCalls, _ tree: TreeRestore) throws -> (holder: Int32, fd: Int32) {
        if let made = tree.ptys[index] { return made }
        guard let state = tree.ptyStates[index] else { throw RestoreError.descriptorUnrestorable(name: image.name, epoch: image.epoch, fd: -1, path: "/dev/pts/\(index)") }
        let slot = try calls.args.bytes([UInt8](repeating: 0, count: 4))
        var opened: [Int64] = []
        var master: Int64?
        var got: UInt32 = 0
        while master == nil && opened.count <= Int(index) {
            let fd = try calls.call("open /dev/ptmx for /dev/pts/\(index)", .open, try calls.args.string("/dev/ptmx"), UInt64(O_RDWR | O_NOCTTY | O_CLOEXEC), 0)
            _ = try calls.call("ioctl(TIOCGPTN) for /dev/pts/\(index)", .ioctl, UInt64(fd), 0x8004_5430, slot)
            try withUnsafeMutableBytes(of: &got) { try Sys.readProcessMemory(pid: calls.tid, address: slot, length: 4, into: $0.baseAddress!) }
            if got == UInt32(index) { master = fd } else { opened.append(fd) }
            if got > UInt32(index) { break }
        }
        for fd in opened { _ = try calls.call("close", .close, UInt64(fd)) }
        calls.args.reset()
        guard let master else { throw RestoreError.ptyTaken(index: index, got: Int32(bitPattern: got)) }
        let kept = try calls.call("fcntl(F_DUPFD_CLOEXEC) for the master of /dev/pts/\(index)", .fcntl, UInt64(master), 1030, tree.high)
        _ = try calls.call("close", .close, UInt64(master))
        let zero = try calls.args.bytes([0, 0, 0, 0])
        _ = try calls.call("ioctl(TIOCSPTLCK, 0) on /dev/pts/\(index)", .ioctl, UInt64(kept), 0x4004_5431, zero)
        calls.args.reset()
        // The slave's settings, through the agent's own opening of it.
        let path = "/proc/\(calls.tid)/root/dev/pts/\(index)"
        let slave = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
        guard slave >= 0 else { throw SystemError.fromErrno("open \(path) to set its termios") }
        defer { close(slave) }
        if var t = state.termios.map({ Array($0) }), t.count == 44, ioctl(slave, 0x402C_542B, &t) != 0 {  // TCSETS2
            throw SystemError.fromErrno("set the termios of /dev/pts/\(index)")
        }
        var size = winsize(ws_row: state.window[0], ws_col: state.window[1], ws_xpixel: state.window[2], ws_ypixel: state.window[3])
        if state.window.count == 4, ioctl(slave, UInt(TIOCSWINSZ), &size) != 0 { throw SystemError.fromErrno("set the window size of /dev/pts/\(index)") }
        if state.packetMode {
            let one = try calls.args.bytes([1, 0, 0, 0])
            _ = try calls.call("ioctl(TIOCPKT, 1) on the master of /dev/pts/\(index)", .ioctl, UInt64(kept), 0x5420, one)
            calls.args.reset()
        }
        if state.locked && !tree.ptySlaves.contains(index) {  // (locked again only where no slave is to be opened)
            let one = try calls.args.bytes([1, 0, 0, 0])
            _ = try calls.call("ioctl(TIOCSPTLCK, 1) on /dev/pts/\(index)", .ioctl, UInt64(kept), 0x4004_5431, one)
            calls.args.reset()
        }
        let made = (holder: image.pid, fd: Int32(kept))
        tree.ptys[index] = made
        tree.parked[image.pid, default: []].append(Int32(kept))
        return made
    }
}

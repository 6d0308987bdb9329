import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Pseudo-terminals whose master the tree holds (a terminal emulator, `script`, a program driving
/// a shell through a pty): the pair is saved — its index, the slave's termios, the window size,
/// the lock and packet mode — and each slave descriptor of the tree becomes a `ptySlave`; a restore
/// makes the pair again at the same index (Agent+RestorePtys). A session leader of the tree whose
/// controlling terminal is such a pty gets it back, with its foreground process group.
///
/// Refused: bytes waiting in either direction (a tty's queues can only be read, which consumes
/// them), and a session leader whose controlling terminal is a pty whose master is outside.
/// A slave whose master is outside (the terminal `legato run` was started from) stays a `tty`.
enum PtyDescriptors {
    /// fdinfo's "tty-index:" of a pty master.
    static func masterIndex(fdinfo: String) -> Int32? {
        for line in fdinfo.split(separator: "\n") where line.hasPrefix("tty-index:") {
            return Int32(line.dropFirst("tty-index:".count).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }

    /// The pty index of a controlling terminal, from /proc/PID/stat's tty_nr (the Unix 98 pty
    /// slaves are majors 136-143); nil for any other terminal.
    static func ptyIndex(ttyNumber tty: Int) -> Int32? {
        let major = tty >> 8 & 0xfff, minor = tty & 0xff | tty >> 12 & 0xfff00
        guard (136...143).contains(major) else { return nil }
        return Int32((major - 136) * 256 + minor)
    }

    /// Saves each pty of `images` whose master the tree holds (PROG first; `pids` as the agent
    /// sees them) and turns the slaves of those into ptySlaves; returns the refusals, each named.
    static func resolve(_ images: inout [ProcessImage], pids: [pid_t]) throws -> [String] {
        var masters: [Int32: (process: Int, fd: Int)] = [:]
        for (k, image) in images.enumerated() {
            for (i, f) in image.fds.enumerated() where f.kind == .ptyMaster && f.dupOf == nil {
                if let index = f.ptyIndex, masters[index] == nil { masters[index] = (k, i) }
            }
        }
        var refused: [String] = []
        for (k, image) in images.enumerated() {
            if let index = image.links?.terminal, masters[index] == nil {
                refused.append("pid \(image.pid) leads a session whose controlling terminal /dev/pts/\(index) is a pty whose master is outside the program")
            }
        }
        for (index, at) in masters.sorted(by: { $0.key < $1.key }) {
            let holder = images[at.process].fds[at.fd]
            do {
                images[at.process].fds[at.fd].pty = try read(index: index, masterFD: holder.fd, pid: pids[at.process])
            } catch let e as CheckpointRefused {
                refused.append("pid \(images[at.process].pid): fd \(holder.fd) is \(holder.path) (the pty /dev/pts/\(index)) \(e.description)")
            }
            for k in images.indices {
                for i in images[k].fds.indices where images[k].fds[i].kind == .tty && images[k].fds[i].ptyIndex == index {
                    images[k].fds[i].kind = .ptySlave
                }
            }
        }
        for k in images.indices { try ProcessCapture.markDuplicates(&images[k].fds, pid: pids[k], among: [.ptySlave]) }
        return refused
    }

    /// The pair's state, read through the agent's copy of the master (pidfd_getfd) and its own
    /// opening of the slave (no controlling terminal taken).
    private static func read(index: Int32, masterFD: Int32, pid: pid_t) throws -> ProcessImage.PtyState {
        let master = try Sys.copyDescriptor(masterFD, of: pid)
        defer { close(master) }
        var size = winsize()
        var locked: Int32 = 0, packet: Int32 = 0, toRead: Int32 = 0
        guard ioctl(master, UInt(TIOCGWINSZ), &size) == 0, ioctl(master, 0x8004_5439, &locked) == 0,  // TIOCGPTLCK
              ioctl(master, 0x8004_5438, &packet) == 0, ioctl(master, UInt(FIONREAD), &toRead) == 0 else {  // TIOCGPKT
            throw SystemError.fromErrno("read the state of the pty /dev/pts/\(index) through fd \(masterFD) of pid \(pid)")
        }
        if toRead > 0 { throw CheckpointRefused(description: "with \(toRead) bytes of output its master has not read yet") }
        var termios: Data?
        if locked == 0 {
            let path = "/proc/\(pid)/root/dev/pts/\(index)"
            let slave = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
            guard slave >= 0 else { throw SystemError.fromErrno("open \(path) to read its termios") }
            defer { close(slave) }
            var t = [UInt8](repeating: 0, count: 44)  // struct termios2
            var input: Int32 = 0
            guard ioctl(slave, 0x802C_542A, &t) == 0, ioctl(slave, UInt(FIONREAD), &input) == 0 else {  // TCGETS2
                throw SystemError.fromErrno("read the termios of /dev/pts/\(index)")
            }
            if input > 0 { throw CheckpointRefused(description: "with \(input) bytes of input its slave side has not read yet") }
            termios = Data(t)
        }
        return ProcessImage.PtyState(index: index, termios: termios, window: [size.ws_row, size.ws_col, size.ws_xpixel, size.ws_ypixel],
                                     locked: locked != 0, packetMode: packet != 0)
    }
}

import Foundation
import Glibc
import LegatoSystem

/// UNIX sockets, read while the tree is frozen: what sock_diag says of each (type, state, peer,
/// bound name, shutdown), what waits in its receive queue (peeked through the agent's own copy of
/// the descriptor, taken with pidfd_getfd, so nothing is consumed) and its buffer sizes and
/// options. Kept exactly and restored (Agent+RestoreSockets): a connected pair both of whose ends
/// are in the tree, unnamed (a socketpair) or, for streams and seqpackets, connected through a
/// name (accepted from a listener), with what each end holds; a datagram socket connected to a
/// named one, in the tree or outside it (a syslog's /dev/log), connected to that name again; a listening socket bound to
/// a path or an abstract name, none waiting to be accepted; an unconnected one.
///
/// A stream or seqpacket socket whose peer has closed is kept too (made again as a pair whose other
/// end is closed after the refill), unless an error from that close waits to be read.
///
/// Refused, by name: a socket whose peer is outside the tree, or waits in a listener's queue (a
/// connection not accepted yet: its peer has no inode until it is); a datagram socket whose peer
/// closed, or connected to an unnamed one; messages in flight that
/// carry credentials, or descriptors (SCM_RIGHTS) that are neither held by a process of the tree
/// nor regular files; messages queued on an unconnected datagram
/// socket (their senders' addresses are not kept); a name relative to some directory.
enum UnixSocketDescriptors {
    /// The state of `fd` of `pid`, the UNIX socket `info` (`table`: all of them, by inode); throws a
    /// CheckpointRefused naming what cannot be kept (`describe` words the fd).
    static func read(fd: Int32, pid: pid_t, info: UnixSocketInfo, table: [UInt64: UnixSocketInfo], tree: Set<pid_t>,
                     describe: (String) -> String) throws -> ProcessImage.UnixSocketState {
        let kind = typeName(info.type)
        let named = info.name.isEmpty ? "" : " on \(display(info.name))"
        func refuse(_ what: String, transient: Bool = false) -> CheckpointRefused {
            CheckpointRefused(description: describe("a UNIX \(kind) socket\(named) \(what)"), transient: transient)
        }
        if let first = info.name.first, first != 0, first != UInt8(ascii: "/") { throw refuse("(a name relative to some directory)") }
        var state = ProcessImage.UnixSocketState(inode: info.inode, type: info.type, name: info.name.isEmpty ? nil : Data(info.name),
                                                 shutdown: info.shutdown, sendBuffer: 0, receiveBuffer: 0)
        if info.name.first == UInt8(ascii: "/") {
            var st = stat()
            let directory = (display(info.name) as NSString).deletingLastPathComponent
            if stat("/proc/\(pid)/root" + directory, &st) == 0 { state.directory = [UInt32(st.st_mode) & 0o7777, st.st_uid, st.st_gid] }
        }
        if info.state == 10 {  // TCP_LISTEN
            if info.pendingConnections > 0 {
                throw refuse("with \(info.pendingConnections) connection(s) waiting to be accepted; try again", transient: true)
            }
            state.backlog = Int32(info.backlog)
        } else if info.peer != 0, let peer = table[info.peer], info.type == Int32(SOCK_DGRAM.rawValue), !info.name.isEmpty || !peer.name.isEmpty {
            // A datagram socket connected by name: made unconnected (bound to its own name, if it
            // has one), connected to the peer's name again at the end of the restore.
            guard !peer.name.isEmpty else { throw refuse("connected to an unnamed datagram socket") }
            if let first = peer.name.first, first != 0, first != UInt8(ascii: "/") { throw refuse("connected to \(display(peer.name)) (a name relative to some directory)") }
            state.connectTo = Data(peer.name)
        } else if info.peer != 0, let peer = table[info.peer] {
            state.peer = info.peer
        } else if info.state == 1, let listener = table.values.first(where: { $0.waiting.contains(info.inode) }) {
            // TCP_ESTABLISHED with no peer inode: its peer waits in a listener's queue.
            state.waitingOn = listener.inode  // refused by checkPeers, by where that listener is
            state.name = listener.name.isEmpty ? nil : Data(listener.name)
            return state
        } else if info.state == 1 && info.type == Int32(SOCK_DGRAM.rawValue) && info.peer == 0 {
            // A datagram socket another one connected to (the kernel marks both ESTABLISHED): it is
            // itself unconnected.
        } else if info.state == 1 {
            // Connected, and the other end is gone (a closed end has no inode left).
            guard info.type != Int32(SOCK_DGRAM.rawValue) else { throw refuse("whose peer has closed") }
            state.peerClosed = true
        }
        let own = try Sys.copyDescriptor(fd, of: pid)
        defer { close(own) }
        let what = "the UNIX socket at fd \(fd) of pid \(pid)"
        state.sendBuffer = try Sys.socketOption(own, SOL_SOCKET, SO_SNDBUF, of: what)
        state.receiveBuffer = try Sys.socketOption(own, SOL_SOCKET, SO_RCVBUF, of: what)
        if try Sys.socketOption(own, SOL_SOCKET, SO_PASSCRED, of: what) != 0 { state.passCredentials = true }
        let peek = try Sys.socketOption(own, SOL_SOCKET, SO_PEEK_OFF, of: what)
        if peek >= 0 { state.peekOffset = peek }
        if state.peerClosed == true {
            // A peer that closed with bytes unread leaves an error (ECONNRESET) for this end's next
            // read; poll shows it without clearing it.
            var p = pollfd(fd: own, events: 0, revents: 0)
            if poll(&p, 1, 0) > 0 && p.revents & Int16(POLLERR) != 0 {
                throw refuse("holding an error from its peer's close (ECONNRESET); try again once the program has read it", transient: true)
            }
        }
        if state.backlog == nil {
            let queued = try Sys.peekSocketQueue(own, stream: info.type == Int32(SOCK_STREAM.rawValue), what: "fd \(fd) of pid \(pid)")
            defer { for fds in queued.inFlight { for d in fds { close(d) } } }
            if queued.inFlight.contains(where: { !$0.isEmpty }) {
                state.queueRights = try queued.inFlight.map { try $0.map { try inFlight($0, tree: tree, refuse: refuse) } }
            }
            if !queued.messages.isEmpty {
                if state.peer == nil && info.type != Int32(SOCK_STREAM.rawValue) { throw refuse("holding messages from other sockets, whose addresses are not kept; try again", transient: true) }
                if state.passCredentials == true { throw refuse("holding messages with their senders' credentials (SO_PASSCRED)") }
                state.queue = queued.messages
            }
        }
        return state
    }

    /// What the descriptor `agentFD` (installed in the agent by a peek of a queued message) is: the
    /// same open file description as a descriptor of a process of `tree` (kcmp), or else a regular
    /// file that has a path; anything else refuses.
    private static func inFlight(_ agentFD: Int32, tree: Set<pid_t>, refuse: (String, Bool) -> CheckpointRefused) throws -> ProcessImage.InFlightDescriptor {
        let me = getpid()
        for p in tree.sorted() {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(p)/fd")) ?? [] {
                guard let n = Int32(name), (try? Sys.sameOpenFile(me, agentFD, p, n)) == true else { continue }
                return ProcessImage.InFlightDescriptor(pid: Sys.namespaceTID(p), fd: n)
            }
        }
        let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(agentFD)")) ?? "?"
        var st = stat()
        guard fstat(agentFD, &st) == 0, st.st_mode & S_IFMT == S_IFREG, target.hasPrefix("/"), !target.hasSuffix(SharedObjects.deletedSuffix) else {
            throw refuse("with \(target) in flight (SCM_RIGHTS), which no process of the program holds and is not a regular file", false)
        }
        var flags: UInt32 = 0, offset: Int64 = 0
        for line in (ProcFile.text("/proc/self/fdinfo/\(agentFD)") ?? "").split(separator: "\n") {
            if line.hasPrefix("flags:") { flags = UInt32(line.dropFirst(6).trimmingCharacters(in: .whitespaces), radix: 8) ?? 0 }
            if line.hasPrefix("pos:") { offset = Int64(line.dropFirst(4).trimmingCharacters(in: .whitespaces)) ?? 0 }
        }
        return ProcessImage.InFlightDescriptor(path: target, flags: flags & ~UInt32(0o2000000), offset: offset)  // (MSG_CMSG_CLOEXEC's, not the sender's)
    }

    /// Each connected socket's peer must be a socket of the tree too; throws the refusals, named.
    static func checkPeers(_ images: [ProcessImage], kept: KeptDescriptors) throws {
        let inodes = Set(images.flatMap { $0.fds.compactMap { $0.unixSocket?.inode } })
        var refused: [String] = []
        for (k, image) in images.enumerated() {
            for f in image.fds {
                guard let s = f.unixSocket else { continue }
                let what: String
                if let listener = s.waitingOn {
                    let name = s.name.map { display(Array($0)) } ?? "an unnamed listener"
                    what = inodes.contains(listener) ? "a UNIX \(typeName(s.type)) socket connected to the program's listener on \(name), which has not accepted it yet; try again"
                                                     : "a UNIX \(typeName(s.type)) socket whose peer is outside the program (\(name), which has not accepted it yet)"
                } else if let peer = s.peer, !inodes.contains(peer) {
                    what = "a UNIX \(typeName(s.type)) socket whose peer is outside the program"
                } else {
                    continue
                }
                refused.append(k == 0 ? kept.describe(f.fd, what) : "pid \(image.pid): fd \(f.fd) is \(what)")
            }
        }
        if !refused.isEmpty {
            throw CheckpointRefused(description: refused.sorted().joined(separator: "; ") + "; cannot checkpoint \(refused.count == 1 ? "it" : "them")")
        }
    }

    static func typeName(_ type: Int32) -> String {
        switch type {
        case Int32(SOCK_STREAM.rawValue): return "stream"
        case Int32(SOCK_DGRAM.rawValue): return "datagram"
        case Int32(SOCK_SEQPACKET.rawValue): return "seqpacket"
        default: return "type-\(type)"
        }
    }

    /// A bound name as people write it: the path, or "@name" for an abstract one.
    static func display(_ name: [UInt8]) -> String {
        if name.first == 0 { return "@" + String(decoding: name.dropFirst(), as: UTF8.self) }
        return String(decoding: name.prefix { $0 != 0 }, as: UTF8.self)
    }
}

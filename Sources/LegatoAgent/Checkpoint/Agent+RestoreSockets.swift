import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Restoring UNIX sockets (UnixSocketDescriptors). A connected pair is made with socketpair by the
/// first process of the tree that holds either end; both ends are kept there above every restored
/// descriptor (TreeRestore.parked) for the processes restored after it, which take theirs with
/// pidfd_getfd. The agent, through copies of its own of both ends, gives them their buffer sizes,
/// refills each end's receive queue by sending what it held from the other end (message by
/// message), then shuts them down as they were and sets their options. A pair connected through a
/// name is made by a connect and an accept on that name (makeNamedPair). A listening socket is bound
/// to its name again (a stale socket file left there by the killed run is removed first) and
/// listens with its backlog; an unconnected one is made and bound.
extension Agent {
    func restoreUnixSocket(_ f: ProcessImage.FileDescriptor, _ image: ProcessImage, _ calls: RestoreCalls, _ tree: TreeRestore) throws {
        guard let s = f.unixSocket else { throw RestoreError.descriptorUnrestorable(name: image.name, epoch: image.epoch, fd: f.fd, path: f.path) }
        let kind = UnixSocketDescriptors.typeName(s.type)
        if s.peerClosed == true {
            // A pair: this end refilled from the other, which then closes (SHUTDOWN_MASK here).
            let (mine, other) = try makePair(s, f, kind, calls, tree, holder: image.pid)
            let own = try [mine, other].map { try Sys.copyDescriptor($0, of: calls.tid) }
            defer { for fd in own { close(fd) } }
            try configurePair(own[0], s, own[1], nil, what: "the UNIX \(kind) socket of fd \(f.fd), whose peer closed")
            tree.parked[image.pid]?.removeAll { $0 == other }
            _ = try calls.call("close the closed peer of fd \(f.fd)", .close, UInt64(other))
            _ = try calls.call("dup3 a UNIX \(kind) socket to fd \(f.fd)", .dup3, UInt64(mine), UInt64(f.fd), f.flags & 0o2000000 != 0 ? 0o2000000 : 0)
        } else if let peer = s.peer {
            if let made = tree.sockets[s.inode] {
                try takeDescriptor(from: made.holder, fd: made.fd, to: f, calls, tree)
            } else {
                let peerState = tree.socketStates[peer]
                let named = s.name != nil || peerState?.name != nil
                let (mine, other) = named ? try makeNamedPair(s, peerState, f, kind, calls, tree, holder: image.pid)
                                          : try makePair(s, f, kind, calls, tree, holder: image.pid)
                let moved = [mine, other]
                tree.sockets[s.inode] = (image.pid, mine)
                tree.sockets[peer] = (image.pid, other)
                let own = try moved.map { try Sys.copyDescriptor($0, of: calls.tid) }
                defer { for fd in own { close(fd) } }
                try configurePair(own[0], s, own[1], tree.socketStates[peer], what: "the UNIX \(kind) socket pair of fd \(f.fd)")
                _ = try calls.call("dup3 a UNIX \(kind) socket to fd \(f.fd)", .dup3, UInt64(moved[0]), UInt64(f.fd), f.flags & 0o2000000 != 0 ? 0o2000000 : 0)
            }
        } else {
            let fd = try calls.call("socket(AF_UNIX, \(kind)) for fd \(f.fd)", .socket, 1, UInt64(s.type) | UInt64(f.flags & 0o2000000), 0)
            if let name = s.name {
                let display = UnixSocketDescriptors.display(Array(name))
                try makeSocketDirectory(display, s.directory)
                try removeStaleSocketFile(name, display)
                let address = try calls.args.bytes([1, 0] + Array(name))  // sockaddr_un: AF_UNIX, then the name
                _ = try calls.call("bind fd \(f.fd) to \(display)", .bind, UInt64(fd), address, UInt64(2 + name.count))
                calls.args.reset()
            }
            if let backlog = s.backlog {
                _ = try calls.call("listen(\(backlog)) on fd \(f.fd)", .listen, UInt64(fd), UInt64(backlog))
                if let name = s.name { tree.unixListeners[name] = (image.pid, f.fd) }
            }
            let own = try Sys.copyDescriptor(Int32(fd), of: calls.tid)
            try setBuffers(own, s, what: "fd \(f.fd)")
            try setOptions(own, s, what: "fd \(f.fd)")
            if let name = s.connectTo {
                restore.datagramConnects.append((own, name, "the UNIX datagram socket of fd \(f.fd) of pid \(image.pid)"))
            } else {
                close(own)
            }
            try place(fd, at: f, calls)
        }
        if f.flags & 0o4000 != 0 { _ = try calls.call("fcntl(F_SETFL, O_NONBLOCK) fd \(f.fd)", .fcntl, UInt64(f.fd), 4, 0o4000) }
    }

    /// A socketpair of `s`'s type, both ends moved above every restored descriptor and parked
    /// in this process (closed once the tree is restored); returns them.
    private func makePair(_ s: ProcessImage.UnixSocketState, _ f: ProcessImage.FileDescriptor, _ kind: String, _ calls: RestoreCalls,
                          _ tree: TreeRestore, holder: Int32) throws -> (Int32, Int32) {
        let slot = try calls.args.bytes([UInt8](repeating: 0, count: 8))
        _ = try calls.call("socketpair(AF_UNIX, \(kind)) for fd \(f.fd)", .socketpair, 1, UInt64(s.type) | 0o2000000, 0, slot)
        var ends = [Int32](repeating: 0, count: 2)
        try ends.withUnsafeMutableBytes { try Sys.readProcessMemory(pid: calls.tid, address: slot, length: 8, into: $0.baseAddress!) }
        calls.args.reset()
        var moved: [Int32] = []
        for e in ends {
            moved.append(Int32(try calls.call("fcntl(F_DUPFD_CLOEXEC) for a UNIX \(kind) socket", .fcntl, UInt64(e), 1030, tree.high)))
            _ = try calls.call("close", .close, UInt64(e))
        }
        tree.parked[holder, default: []] += moved
        return (moved[0], moved[1])
    }

    /// A pair connected through a name (one end accepted from a listener): made the same way, so
    /// each end has its name and its peer's again. The end `s` (bound to its name, the listener's)
    /// is accepted from a listener on that name: the tree's own if it is back already (taken into
    /// this process for the accept; the program never sees the connection), else one made for the
    /// moment (its socket file left, as the killed run's was); the other end is made, bound to its
    /// own name if it had one, and connects. Both are parked here as socketpair's are.
    private func makeNamedPair(_ s: ProcessImage.UnixSocketState, _ peer: ProcessImage.UnixSocketState?, _ f: ProcessImage.FileDescriptor,
                               _ kind: String, _ calls: RestoreCalls, _ tree: TreeRestore, holder: Int32) throws -> (Int32, Int32) {
        // The accepted end: `s`, unless only its peer is named, or only its peer's name is a
        // listener's. (Either way round, each end gets its name and its peer's back.)
        func isListenerName(_ name: Data?) -> Bool { name.map { tree.listenerNames.contains($0) } ?? false }
        let swapped = s.name == nil || (isListenerName(peer?.name) && !isListenerName(s.name))
        guard let listenName = swapped ? peer?.name : s.name else { return try makePair(s, f, kind, calls, tree, holder: holder) }
        let clientName = swapped ? s.name : peer?.name
        let display = UnixSocketDescriptors.display(Array(listenName))
        func address(_ name: Data) throws -> UInt64 { try calls.args.bytes([1, 0] + Array(name)) }  // sockaddr_un
        var listener: Int64
        var temporary = true
        if let real = tree.unixListeners[listenName] {
            listener = real.holder == holder ? Int64(real.fd) : try takeFromProcess(real.holder, fd: real.fd, calls, for: "the listener on \(display)")
            temporary = real.holder != holder
        } else {
            listener = try calls.call("socket(AF_UNIX, \(kind)) to listen on \(display) for fd \(f.fd)", .socket, 1, UInt64(s.type) | 0o2000000, 0)
            try makeSocketDirectory(display, (swapped ? peer : s)?.directory)
            try removeStaleSocketFile(listenName, display)
            _ = try calls.call("bind a listener to \(display) for fd \(f.fd)", .bind, UInt64(listener), try address(listenName), UInt64(2 + listenName.count))
            _ = try calls.call("listen on \(display) for fd \(f.fd)", .listen, UInt64(listener), 1)
        }
        let client = try calls.call("socket(AF_UNIX, \(kind)) for a connection to \(display)", .socket, 1, UInt64(s.type) | 0o2000000, 0)
        if let clientName {
            let shown = UnixSocketDescriptors.display(Array(clientName))
            try makeSocketDirectory(shown, (swapped ? s : peer)?.directory)
            try removeStaleSocketFile(clientName, shown)
            _ = try calls.call("bind to \(shown) for a connection to \(display)", .bind, UInt64(client), try address(clientName), UInt64(2 + clientName.count))
        }
        _ = try calls.call("connect to \(display) for fd \(f.fd)", .connect, UInt64(client), try address(listenName), UInt64(2 + listenName.count))
        let accepted = try calls.call("accept4 on \(display) for fd \(f.fd)", .accept4, UInt64(listener), 0, 0, 0o2000000)
        calls.args.reset()
        if temporary { _ = try calls.call("close the listener used for fd \(f.fd)", .close, UInt64(listener)) }
        var moved: [Int32] = []
        for e in swapped ? [client, accepted] : [accepted, client] {
            moved.append(Int32(try calls.call("fcntl(F_DUPFD_CLOEXEC) for a UNIX \(kind) socket", .fcntl, UInt64(e), 1030, tree.high)))
            _ = try calls.call("close", .close, UInt64(e))
        }
        tree.parked[holder, default: []] += moved
        return (moved[0], moved[1])
    }

    /// A TCP or UDP socket (InetSocketDescriptors) made again at `f`'s number: its options set
    /// through the agent's own copy before it is bound (SO_REUSEADDR must be), bound to its
    /// address, listening with its backlog or connected to its peer.
    func restoreInetSocket(_ f: ProcessImage.FileDescriptor, _ image: ProcessImage, _ calls: RestoreCalls) throws {
        guard let s = f.inetSocket else { throw RestoreError.descriptorUnrestorable(name: image.name, epoch: image.epoch, fd: f.fd, path: f.path) }
        let what = "\(s.proto == Int32(IPPROTO_TCP) ? "TCP" : "UDP") socket for fd \(f.fd)"
        let fd = try calls.call("socket(\(s.family), \(s.type), \(s.proto)) " + what, .socket, UInt64(s.family), UInt64(s.type) | UInt64(f.flags & 0o2000000), UInt64(s.proto))
        let own = try Sys.copyDescriptor(Int32(fd), of: calls.tid)
        var keep = false  // a connection in repair mode stays open here until finishConnections
        defer { if !keep { close(own) } }
        func set(_ level: Int32, _ name: Int32, _ v: Int32) throws { try Sys.setSocketOption(own, level, name, v, on: "the " + what) }
        for o in s.options where o.count == 3 { try set(o[0], o[1], o[2]) }
        if let c = s.connection, let local = s.address, let peer = s.peer {
            // (--tcp-close: made without what it held, to be aborted: nothing is left to read.)
            var state = c
            if config.restoreTCPClosed { (state.unsent, state.sendQueue, state.receiveQueue) = (0, Data(), Data()) }
            // The dead run's socket on the same four-tuple may linger closing (a FIN that never
            // reached the peer: its host died, or its network was cut): ended first.
            try Sys.endOrphanedConnections(family: s.family, local: local, peer: peer)
            let named = "the TCP connection of fd \(f.fd) of pid \(image.pid) from \(InetSocketDescriptors.display(local)) to \(InetSocketDescriptors.display(peer))"
            try Sys.restoreTcpRepair(own, state, local: local, peer: peer, what: named)
            restore.connectionsInRepair.append((own, c.sendQueue.suffix(c.unsent), named))
            keep = true
            try place(fd, at: f, calls)
            if f.flags & 0o4000 != 0 { _ = try calls.call("fcntl(F_SETFL, O_NONBLOCK) fd \(f.fd)", .fcntl, UInt64(f.fd), 4, 0o4000) }
            return
        }
        let tcp = s.proto == Int32(IPPROTO_TCP)
        if let address = s.address {
            // The killed run's connections may linger on the address closing (TIME_WAIT, FIN_WAIT...),
            // which even SO_REUSEADDR does not pass unless they had it too: they are ended first
            // (no file holds them: they are the dead run's); the socket binds (and listens) with
            // SO_REUSEADDR, which then gets its own value back.
            if tcp { try Sys.endOrphanedConnections(family: s.family, local: address, peer: nil) }
            try set(SOL_SOCKET, SO_REUSEADDR, 1)
            let arg = try calls.args.bytes(Array(address))
            _ = try calls.call("bind the \(what) to \(InetSocketDescriptors.display(address))", .bind, UInt64(fd), arg, UInt64(address.count))
            calls.args.reset()
        }
        if let backlog = s.backlog { _ = try calls.call("listen(\(backlog)) on the " + what, .listen, UInt64(fd), UInt64(backlog)) }
        if s.address != nil {  // (listen checks the address again)
            try set(SOL_SOCKET, SO_REUSEADDR, s.options.first { $0.count == 3 && $0[0] == SOL_SOCKET && $0[1] == SO_REUSEADDR }?[2] ?? 0)
        }
        if let peer = s.peer {
            let arg = try calls.args.bytes(Array(peer))
            _ = try calls.call("connect the \(what) to \(InetSocketDescriptors.display(peer))", .connect, UInt64(fd), arg, UInt64(peer.count))
            calls.args.reset()
        }
        try place(fd, at: f, calls)
        if f.flags & 0o4000 != 0 { _ = try calls.call("fcntl(F_SETFL, O_NONBLOCK) fd \(f.fd)", .fcntl, UInt64(f.fd), 4, 0o4000) }
    }

    /// Connects each datagram socket that was connected by name to that name again (through the
    /// agent's copy), once every socket of the tree is bound where it was.
    func finishDatagramConnects() throws {
        defer {
            for c in restore.datagramConnects { close(c.fd) }
            restore.datagramConnects = []
        }
        for c in restore.datagramConnects {
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let length = min(c.name.count, MemoryLayout.size(ofValue: address.sun_path))
            withUnsafeMutableBytes(of: &address.sun_path) { p in c.name.prefix(length).withUnsafeBytes { p.copyMemory(from: $0) } }
            let size = socklen_t(MemoryLayout<sa_family_t>.size + length)
            let r = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(c.fd, $0, size) } }
            if r != 0 { throw SystemError.fromErrno("connect \(c.what) to \(UnixSocketDescriptors.display(Array(c.name))) again") }
        }
    }

    /// Takes every TCP connection the restore made out of repair mode, once all of them exist (with
    /// `restoreTCPClosed`, aborts each).
    func finishConnections() throws {
        defer {
            for c in restore.connectionsInRepair { close(c.fd) }
            restore.connectionsInRepair = []
        }
        for c in restore.connectionsInRepair {
            try Sys.finishTcpRepair(c.fd, unsent: config.restoreTCPClosed ? Data() : c.unsent, what: c.what)
            // --tcp-close: aborted (sock_diag SOCK_DESTROY): a reset to its peer, ECONNABORTED to the program.
            if config.restoreTCPClosed { try Sys.abortTcp(c.fd, what: c.what) }
        }
    }

    /// Both ends of a pair made again (`a` is `sa`'s end, `b` its peer's, whose state `sb` is
    /// unknown if no process of the checkpoint held it: then it has the defaults).
    ///
    /// Where a queued message carries descriptors, the refill (and what follows it) waits until the
    /// whole tree is back (`finishInFlight`): they are the tree's own, or files opened again.
    private func configurePair(_ a: Int32, _ sa: ProcessImage.UnixSocketState, _ b: Int32, _ sb: ProcessImage.UnixSocketState?, what: String) throws {
        try setBuffers(a, sa, what: what)
        if let sb { try setBuffers(b, sb, what: what) }
        if sa.queueRights != nil || sb?.queueRights != nil {
            let (ownA, ownB) = (dup(a), dup(b))
            guard ownA >= 0, ownB >= 0 else { throw SystemError.fromErrno("keep the agent's copies of \(what) until the tree is back") }
            restore.pairsWithRights.append((ownA, sa, ownB, sb, what))
            return
        }
        try finishPair(a, sa, b, sb, what: what, rights: { _ in throw SystemError("refill \(what): a descriptor in flight not kept", code: EINVAL) })
    }

    /// The refill, shutdowns and options of a pair made again (`rights` gives the descriptors in
    /// flight of a message, opened for the agent, closed after the send).
    private func finishPair(_ a: Int32, _ sa: ProcessImage.UnixSocketState, _ b: Int32, _ sb: ProcessImage.UnixSocketState?, what: String,
                            rights: (ProcessImage.InFlightDescriptor) throws -> Int32) throws {
        try refill(sa.queue ?? [], sa.queueRights, into: what, sending: b, stream: sa.type == Int32(SOCK_STREAM.rawValue), rights)
        if let sb { try refill(sb.queue ?? [], sb.queueRights, into: what, sending: a, stream: sb.type == Int32(SOCK_STREAM.rawValue), rights) }
        // shutdown(SHUT_WR) on one end is SEND_SHUTDOWN there and RCV_SHUTDOWN on the other; a
        // SHUT_RD is the other way round.
        let peerShutdown = sb?.shutdown ?? 0
        for (fd, mine, theirs) in [(a, sa.shutdown, peerShutdown), (b, peerShutdown, sa.shutdown)] {
            if mine & 2 != 0 && Glibc.shutdown(fd, Int32(SHUT_WR)) != 0 { throw SystemError.fromErrno("shutdown(SHUT_WR) \(what)") }
            if mine & 1 != 0 && theirs & 2 == 0 && Glibc.shutdown(fd, Int32(SHUT_RD)) != 0 { throw SystemError.fromErrno("shutdown(SHUT_RD) \(what)") }
        }
        try setOptions(a, sa, what: what)
        if let sb { try setOptions(b, sb, what: what) }
    }

    /// Sends `messages` from `fd` (a stream's bytes in as many sends as it takes), not waiting: what
    /// fitted when it was queued fits again. Message i carries `inFlight[i]`, opened by `rights`.
    private func refill(_ messages: [Data], _ inFlight: [[ProcessImage.InFlightDescriptor]]?, into what: String, sending fd: Int32, stream: Bool,
                        _ rights: (ProcessImage.InFlightDescriptor) throws -> Int32) throws {
        for (i, m) in messages.enumerated() {
            var carried: [Int32] = []
            defer { for d in carried { close(d) } }
            for d in inFlight.flatMap({ i < $0.count ? $0[i] : nil }) ?? [] { carried.append(try rights(d)) }
            try Sys.sendWithRights(fd, m, rights: carried, stream: stream, what: "\(what) (a refill of \(m.count) byte(s) it held)")
        }
    }

    /// Refills the pairs whose queues carried descriptors, once the whole tree is back: each one
    /// the tree's (taken from where it is now, by its pid in PROG's namespace: `hostPID`) or a
    /// regular file opened again (through PROG's root, `root`) at its offset.
    func finishInFlight(hostPID: [Int32: pid_t], root: String) throws {
        defer {
            for p in restore.pairsWithRights { close(p.a); close(p.b) }
            restore.pairsWithRights = []
        }
        for p in restore.pairsWithRights {
            try finishPair(p.a, p.sa, p.b, p.sb, what: p.what) { d in
                if let pid = d.pid, let fd = d.fd {
                    guard let host = hostPID[pid] else { throw SystemError("refill \(p.what): a descriptor in flight was pid \(pid)'s, which is not restored", code: ESRCH) }
                    return try Sys.copyDescriptor(fd, of: host)
                }
                guard let path = d.path else { throw SystemError("refill \(p.what): a descriptor in flight has nothing to be made from", code: EINVAL) }
                let opened = open(root + path, Int32(bitPattern: (d.flags ?? 0) & ~UInt32(0o100 | 0o200 | 0o1000)) | O_CLOEXEC | O_NOCTTY)
                guard opened >= 0 else { throw SystemError.fromErrno("open \(path) again, in flight in \(p.what)") }
                if let offset = d.offset, lseek(opened, off_t(offset), SEEK_SET) < 0 {
                    close(opened)
                    throw SystemError.fromErrno("lseek \(path), in flight in \(p.what), to \(offset)")
                }
                return opened
            }
        }
    }

    /// SO_SNDBUF and SO_RCVBUF (getsockopt's values are twice what was set; root may pass the limits).
    private func setBuffers(_ fd: Int32, _ s: ProcessImage.UnixSocketState, what: String) throws {
        for (option, value) in [(SO_SNDBUFFORCE, s.sendBuffer), (SO_RCVBUFFORCE, s.receiveBuffer)] where value > 0 {
            try Sys.setSocketOption(fd, SOL_SOCKET, option, value / 2, on: what)
        }
    }

    private func setOptions(_ fd: Int32, _ s: ProcessImage.UnixSocketState, what: String) throws {
        var options: [(Int32, Int32)] = []
        if s.passCredentials == true { options.append((SO_PASSCRED, 1)) }
        if let peek = s.peekOffset { options.append((SO_PEEK_OFF, peek)) }
        for (option, value) in options { try Sys.setSocketOption(fd, SOL_SOCKET, option, value, on: what) }
    }

    /// The directory of the socket path `path`, if it went since the checkpoint (a program's
    /// temporary directory, removed once it was done): made again with the mode, owner and group
    /// it had (`directory`), its parent being there.
    private func makeSocketDirectory(_ path: String, _ directory: [UInt32]?) throws {
        guard path.hasPrefix("/"), let directory, directory.count == 3 else { return }
        let dir = (path as NSString).deletingLastPathComponent
        var st = stat()
        guard stat(dir, &st) != 0 && errno == ENOENT else { return }
        guard mkdir(dir, mode_t(directory[0])) == 0, chown(dir, directory[1], directory[2]) == 0, chmod(dir, mode_t(directory[0])) == 0 else {
            throw SystemError.fromErrno("make the directory \(dir) again for the UNIX socket \(path)")
        }
        log.info("restore: made the directory \(dir) of the UNIX socket \(path) again (it went since the checkpoint)")
    }

    /// A socket file left at `name` by the killed run is removed so the name can be bound again;
    /// anything else there stops the restore.
    private func removeStaleSocketFile(_ name: Data, _ display: String) throws {
        guard name.first != 0 else { return }  // an abstract name: no file
        let path = display
        var st = stat()
        guard lstat(path, &st) == 0 else { return }
        guard st.st_mode & S_IFMT == S_IFSOCK else {
            throw SystemError("bind a UNIX socket to \(path) again: something that is not a socket is there", code: EADDRINUSE)
        }
        if unlink(path) != 0 { throw SystemError.fromErrno("remove the stale socket file \(path) to bind it again") }
    }
}

import Glibc

/// Blocking TCP sockets. Every descriptor is close-on-exec so traced programs never inherit one.
public enum Socket {
    /// Resolves HOST and opens a listening socket; returns the fd and the bound port (useful for port 0).
    public static func listen(host: String, port: UInt16, backlog: Int32 = 128) throws -> (fd: Int32, port: UInt16) {
        let addrs = try resolve(host: host, port: port, passive: true)
        var lastError = SystemError("listen on \(host):\(port)", code: EADDRNOTAVAIL)
        for (family, storage, len) in addrs {
            let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            if fd < 0 { lastError = .fromErrno("socket() for \(host):\(port)"); continue }
            var one: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
            var st = storage
            let ok = withUnsafePointer(to: &st) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) } }
            if ok != 0 { lastError = .fromErrno("bind \(host):\(port)"); close(fd); continue }
            if Glibc.listen(fd, backlog) != 0 { lastError = .fromErrno("listen \(host):\(port)"); close(fd); continue }
            return (fd, try localPort(fd))
        }
        throw lastError
    }

    public static func localPort(_ fd: Int32) throws -> UInt16 {
        var st = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = withUnsafeMutablePointer(to: &st) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) } }
        if r != 0 { throw SystemError.fromErrno("getsockname") }
        if st.ss_family == sa_family_t(AF_INET) {
            return withUnsafePointer(to: &st) { $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) } }
        }
        return withUnsafePointer(to: &st) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) } }
    }

    /// accept(); returns the connected fd and the peer as text, or nil if the listener was closed.
    public static func accept(_ listener: Int32) throws -> (fd: Int32, peer: String)? {
        while true {
            var st = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let fd = Sys.accept(listener, &st, &len)
            if fd >= 0 {
                setNoDelay(fd)
                return (fd, describePeer(&st))
            }
            switch -fd {
            case EINTR, ECONNABORTED: continue
            case EBADF, EINVAL: return nil
            case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                usleep(10_000)
                continue
            default: throw SystemError("accept", code: -fd)
            }
        }
    }

    /// Connects with a timeout; the socket is returned blocking with TCP_NODELAY.
    public static func connect(host: String, port: UInt16, timeoutSeconds: Double = 5) throws -> Int32 {
        let addrs = try resolve(host: host, port: port, passive: false)
        var lastError = SystemError("connect to \(host):\(port)", code: EHOSTUNREACH)
        for (family, storage, len) in addrs {
            let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            if fd < 0 { lastError = .fromErrno("socket() for \(host):\(port)"); continue }
            var st = storage
            var r = withUnsafePointer(to: &st) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, len) } }
            if r != 0 && errno == EINPROGRESS {
                var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                let pr = poll(&pfd, 1, Int32(timeoutSeconds * 1000))
                if pr == 1 {
                    var err: Int32 = 0
                    var elen = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen)
                    r = err == 0 ? 0 : -1
                    errno = err
                } else {
                    r = -1
                    errno = pr == 0 ? ETIMEDOUT : errno
                }
            }
            if r != 0 { lastError = .fromErrno("connect to \(host):\(port)"); close(fd); continue }
            let flags = fcntl(fd, F_GETFL)
            _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK)
            setNoDelay(fd)
            return fd
        }
        throw lastError
    }

    /// A listening Unix stream socket at `path` (an old socket file there is replaced).
    public static func listenUnix(path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SystemError.fromErrno("socket(AF_UNIX)") }
        unlink(path)
        var addr = try unixAddress(path)
        let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        if r != 0 || Glibc.listen(fd, 16) != 0 {
            let e = SystemError.fromErrno("listen on \(path)")
            close(fd)
            throw e
        }
        return fd
    }

    public static func connectUnix(path: String) throws -> Int32 {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        if fd < 0 { throw SystemError.fromErrno("socket(AF_UNIX)") }
        var addr = try unixAddress(path)
        let r = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
        if r != 0 {
            let e = SystemError.fromErrno("connect to \(path)")
            close(fd)
            throw e
        }
        return fd
    }

    private static func unixAddress(_ path: String) throws -> sockaddr_un {
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: addr.sun_path) else { throw SystemError("socket path \(path) is too long", code: ENAMETOOLONG) }
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in bytes.enumerated() { raw[i] = b } }
        return addr
    }

    public static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Sets SO_RCVTIMEO/SO_SNDTIMEO (0 clears).
    public static func setTimeout(_ fd: Int32, seconds: Double) {
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1e6))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }

    public static func setBuffers(_ fd: Int32, bytes: Int32) {
        var b = bytes
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &b, socklen_t(MemoryLayout<Int32>.size))
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &b, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Reads exactly `count` bytes; false on a clean EOF before the first byte, throws on errors and on EOF mid-way.
    /// With `spinNanos` > 0 it polls without sleeping for that long first: on a VM, waking a halted
    /// vCPU costs more than a short spin when the answer is due within microseconds.
    public static func readFully(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, spinNanos: UInt64 = 0) throws -> Bool {
        try read(fd, buffer, atLeast: count, upTo: count, spinNanos: spinNanos) > 0
    }

    /// Reads at least `atLeast` (> 0) and at most `upTo` bytes into `buffer`, taking whatever has
    /// arrived once the minimum is in; returns how many, 0 on a clean EOF before the first byte.
    /// Throws on errors and on EOF mid-way. `spinNanos` as in readFully.
    public static func read(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, atLeast: Int, upTo: Int, spinNanos: UInt64 = 0) throws -> Int {
        var done = 0
        let until = spinNanos > 0 ? monotonicNanos() + spinNanos : 0
        while done < atLeast {
            let spinning = until > 0 && monotonicNanos() < until
            let r = recv(fd, buffer + done, upTo - done, spinning ? Int32(MSG_DONTWAIT) : 0)
            if r > 0 { done += r; continue }
            if r == 0 {
                if done == 0 { return 0 }
                throw SystemError("read from peer (closed after \(done) of \(atLeast) bytes)", code: ECONNRESET)
            }
            if errno == EINTR || (spinning && errno == EAGAIN) { continue }
            if errno == EAGAIN {  // SO_RCVTIMEO ran out
                throw SystemError("read from peer (nothing arrived within the receive timeout; \(done) of \(atLeast) bytes in)", code: ETIMEDOUT)
            }
            throw SystemError.fromErrno("read from peer")
        }
        return done
    }

    /// Writes all of the buffers (gathered with sendmsg).
    public static func writeFully(_ fd: Int32, _ parts: [UnsafeRawBufferPointer]) throws {
        var iovs = parts.filter { $0.count > 0 }.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
        var index = 0
        while index < iovs.count {
            let r = iovs.withUnsafeMutableBufferPointer { buf -> Int in
                var msg = msghdr()
                msg.msg_iov = buf.baseAddress! + index
                msg.msg_iovlen = min(buf.count - index, 1024)  // IOV_MAX
                return sendmsg(fd, &msg, Int32(MSG_NOSIGNAL))
            }
            if r < 0 {
                if errno == EINTR { continue }
                throw SystemError.fromErrno("write to peer")
            }
            var left = r
            while left > 0 && index < iovs.count {
                if left >= iovs[index].iov_len {
                    left -= iovs[index].iov_len
                    index += 1
                } else {
                    iovs[index].iov_base += left
                    iovs[index].iov_len -= left
                    left = 0
                }
            }
        }
    }

    private static func resolve(host: String, port: UInt16, passive: Bool) throws -> [(Int32, sockaddr_storage, socklen_t)] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        if passive { hints.ai_flags = AI_PASSIVE }
        var res: UnsafeMutablePointer<addrinfo>?
        let h = host == "*" || host.isEmpty ? nil : host
        let rc = getaddrinfo(h, String(port), &hints, &res)
        guard rc == 0, let first = res else {
            throw SystemError("resolve \(host): \(String(cString: gai_strerror(rc)))", code: EINVAL)
        }
        defer { freeaddrinfo(first) }
        var out: [(Int32, sockaddr_storage, socklen_t)] = []
        var p: UnsafeMutablePointer<addrinfo>? = first
        while let ai = p {
            var st = sockaddr_storage()
            memcpy(&st, ai.pointee.ai_addr, Int(ai.pointee.ai_addrlen))
            out.append((ai.pointee.ai_family, st, ai.pointee.ai_addrlen))
            p = ai.pointee.ai_next
        }
        return out
    }

    private static func describePeer(_ st: inout sockaddr_storage) -> String {
        var host = [CChar](repeating: 0, count: 128)
        var serv = [CChar](repeating: 0, count: 16)
        let len = socklen_t(st.ss_family == sa_family_t(AF_INET) ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
        let r = withUnsafePointer(to: &st) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getnameinfo($0, len, &host, 128, &serv, 16, NI_NUMERICHOST | NI_NUMERICSERV)
            }
        }
        return r == 0 ? "\(String(cString: host)):\(String(cString: serv))" : "?"
    }
}

import Foundation
import Glibc
import LegatoSystem

/// TCP and UDP sockets, read while the tree is frozen through the agent's own copy of each
/// descriptor (pidfd_getfd): family, type and protocol, the bound address, a UDP socket's peer, a
/// listener's backlog (sock_diag) and the integer options a program sets (InetSocketDescriptors.options).
/// Kept and restored (Agent+RestoreSockets): a listening TCP socket with no connection waiting to
/// be accepted (it listens again on the same address, which the killed run no longer holds), a
/// TCP socket not connected, an established TCP connection (TCP_REPAIR: its sequence numbers,
/// queues, options and windows, read in repair mode and left without a window probe, so the
/// connection goes on as it was), a UDP socket with nothing queued. Refused, by name: a
/// connection in another state (closing, half-open), a listener with connections waiting, a UDP socket holding datagrams
/// (their senders are not kept), any other protocol. Buffer sizes are not kept: setting them
/// would turn off the kernel's autotuning for every connection a listener accepts.
enum InetSocketDescriptors {
    /// The options read and set again: SO_REUSEADDR, SO_REUSEPORT, SO_KEEPALIVE, SO_BROADCAST,
    /// SO_PRIORITY; TCP_NODELAY, TCP_DEFER_ACCEPT, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT,
    /// TCP_FASTOPEN (listeners); IP_TOS, IP_TTL, IP_FREEBIND, IP_TRANSPARENT; IPV6_V6ONLY.
    static func options(family: Int32, proto: Int32) -> [(Int32, Int32)] {
        var out: [(Int32, Int32)] = [(SOL_SOCKET, SO_REUSEADDR), (SOL_SOCKET, SO_REUSEPORT), (SOL_SOCKET, SO_KEEPALIVE),
                                     (SOL_SOCKET, SO_BROADCAST), (SOL_SOCKET, SO_PRIORITY)]
        if proto == Int32(IPPROTO_TCP) {
            out += [(Int32(IPPROTO_TCP), TCP_NODELAY), (Int32(IPPROTO_TCP), TCP_DEFER_ACCEPT), (Int32(IPPROTO_TCP), TCP_KEEPIDLE),
                    (Int32(IPPROTO_TCP), TCP_KEEPINTVL), (Int32(IPPROTO_TCP), TCP_KEEPCNT)]
        }
        if family == AF_INET {
            out += [(Int32(IPPROTO_IP), IP_TOS), (Int32(IPPROTO_IP), IP_TTL), (Int32(IPPROTO_IP), IP_FREEBIND), (Int32(IPPROTO_IP), IP_TRANSPARENT)]
        } else {
            out += [(Int32(IPPROTO_IPV6), IPV6_V6ONLY)]
        }
        return out
    }

    /// The state of `fd` of `pid`, a socket not in the UNIX table; throws a CheckpointRefused naming
    /// what cannot be kept (`describe` words the fd).
    static func read(fd: Int32, pid: pid_t, inode: UInt64, describe: (String) -> String) throws -> ProcessImage.InetSocketState {
        let own = try Sys.copyDescriptor(fd, of: pid)
        defer { close(own) }
        let what = "the socket at fd \(fd) of pid \(pid)"
        let family = try Sys.socketOption(own, SOL_SOCKET, SO_DOMAIN, of: what), type = try Sys.socketOption(own, SOL_SOCKET, SO_TYPE, of: what),
            proto = try Sys.socketOption(own, SOL_SOCKET, SO_PROTOCOL, of: what)
        guard family == AF_INET || family == AF_INET6, (type == Int32(SOCK_STREAM.rawValue) && proto == Int32(IPPROTO_TCP)) || (type == Int32(SOCK_DGRAM.rawValue) && proto == Int32(IPPROTO_UDP)) else {
            let name = [AF_NETLINK: "a netlink socket", AF_PACKET: "a packet socket", AF_INET: "an IPv4 socket", AF_INET6: "an IPv6 socket"][family] ?? "a socket of family \(family)"
            throw CheckpointRefused(description: describe("\(name) (type \(type), protocol \(proto); only UNIX, TCP and UDP sockets are kept)"))
        }
        let tcp = proto == Int32(IPPROTO_TCP)
        let local = address(own, getsockname), remote = address(own, getpeername)
        let at = local.map { " on \(display($0))" } ?? ""
        var state = ProcessImage.InetSocketState(family: family, type: type, proto: proto, address: local.flatMap { port(of: $0) != 0 ? $0 : nil },
                                                 options: [])
        var ready = pollfd(fd: own, events: Int16(POLLIN), revents: 0)
        let readable = poll(&ready, 1, 0) > 0
        if tcp {
            if try Sys.socketOption(own, SOL_SOCKET, SO_ACCEPTCONN, of: what) != 0 {
                if readable { throw CheckpointRefused(description: describe("a TCP socket listening\(at) with connections waiting to be accepted; try again"), transient: true) }
                state.backlog = try Sys.tcpListenBacklog(family: family, inode: inode)
            } else if let remote {
                let r = try Sys.readTcpRepair(own, what: "fd \(fd) of pid \(pid)")
                guard r.state == 1 else {  // TCP_ESTABLISHED
                    let names: [UInt8: String] = [2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 11: "CLOSING"]
                    throw CheckpointRefused(description: describe("a TCP connection\(at) to \(display(remote)) in state \(names[r.state] ?? "\(r.state)") (only established ones are kept); try again"),
                                            transient: true)
                }
                state.address = local
                state.peer = remote
                state.connection = r
            }
        } else {
            if readable { throw CheckpointRefused(description: describe("a UDP socket\(at) holding datagrams, whose senders are not kept; try again"), transient: true) }
            state.peer = remote
        }
        state.options = try options(family: family, proto: proto).map { [$0.0, $0.1, try Sys.socketOption(own, $0.0, $0.1, of: what)] }
        // Buffer sizes the program set (SO_BUF_LOCK tells: the kernel tunes the others itself),
        // set again as asked (getsockopt gives twice what was set), which locks them again.
        let locks = try Sys.socketOption(own, SOL_SOCKET, 72, of: what)  // SO_BUF_LOCK: SOCK_SNDBUF_LOCK 1, SOCK_RCVBUF_LOCK 2
        for (bit, option, force) in [(Int32(1), SO_SNDBUF, SO_SNDBUFFORCE), (2, SO_RCVBUF, SO_RCVBUFFORCE)] where locks & bit != 0 {
            state.options.append([SOL_SOCKET, force, try Sys.socketOption(own, SOL_SOCKET, option, of: what) / 2])
        }
        return state
    }

    /// "127.0.0.1:8080", "[::1]:8080".
    static func display(_ a: Data) -> String {
        a.withUnsafeBytes { raw -> String in
            var text = [CChar](repeating: 0, count: 64)
            if raw.load(as: UInt16.self) == UInt16(AF_INET6), raw.count >= MemoryLayout<sockaddr_in6>.size {
                var six = raw.loadUnaligned(as: sockaddr_in6.self)
                inet_ntop(AF_INET6, &six.sin6_addr, &text, 64)
                return "[\(String(cString: text))]:\(UInt16(bigEndian: six.sin6_port))"
            }
            guard raw.count >= MemoryLayout<sockaddr_in>.size else { return "?" }
            var four = raw.loadUnaligned(as: sockaddr_in.self)
            inet_ntop(AF_INET, &four.sin_addr, &text, 64)
            return "\(String(cString: text)):\(UInt16(bigEndian: four.sin_port))"
        }
    }

    static func port(of a: Data) -> UInt16 {
        a.withUnsafeBytes { raw in raw.count >= 4 ? UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: 2, as: UInt16.self)) : 0 }
    }

    private static func address(_ fd: Int32, _ call: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32) -> Data? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let r = withUnsafeMutablePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call(fd, $0, &len) } }
        guard r == 0 else { return nil }
        return withUnsafeBytes(of: &storage) { Data($0.prefix(Int(len))) }
    }
}

import CShims
import Foundation
import Glibc

extension Sys {
    /// An integer socket option of `fd` (getsockopt); `what` names the socket for the error.
    public static func socketOption(_ fd: Int32, _ level: Int32, _ name: Int32, of what: @autoclosure () -> String) throws -> Int32 {
        var v: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, level, name, &v, &len) == 0 else { throw SystemError.fromErrno("getsockopt(\(level), \(name)) of \(what())") }
        return v
    }

    /// Sets an integer socket option of `fd` (setsockopt).
    public static func setSocketOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32, on what: @autoclosure () -> String) throws {
        var v = value
        guard setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
            throw SystemError.fromErrno("setsockopt(\(level), \(name), \(value)) on \(what())")
        }
    }

    /// Ends the closing TCP sockets no file holds (TIME_WAIT, FIN_WAIT...) on `local` (to `peer`,
    /// if given), sockaddr bytes; returns how many.
    @discardableResult
    public static func endOrphanedConnections(family: Int32, local: Data, peer: Data?) throws -> Int {
        let r = local.withUnsafeBytes { l in
            if let peer { return peer.withUnsafeBytes { p in lg_tcp_destroy_orphans(family, l.baseAddress, p.baseAddress) } }
            return lg_tcp_destroy_orphans(family, l.baseAddress, nil)
        }
        if r < 0 { throw SystemError("end the closing sockets no one holds on an address to bind it again (sock_diag SOCK_DESTROY)", code: Int32(-r)) }
        return Int(r)
    }

    /// The backlog of the listening TCP socket with inode `inode` (family AF_INET or AF_INET6), from sock_diag.
    public static func tcpListenBacklog(family: Int32, inode: UInt64) throws -> Int32 {
        let r = lg_tcp_listen_backlog(family, inode)
        if r < 0 { throw SystemError("read the backlog of TCP listener socket:[\(inode)] (sock_diag)", code: Int32(-r)) }
        return Int32(r)
    }
}

/// An established TCP connection as TCP_REPAIR reads it (lg_tcp_state): the sequence numbers after
/// its send and receive queues, what the queues hold (of the send queue, the last `unsent` bytes
/// were not sent yet), MSS, window scales, TCPI_OPT_* options, the timestamp and the windows
/// (snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup); `state` is tcpi_state. A checkpoint keeps it as
/// it is read (ProcessImage.InetSocketState.connection).
public struct TcpRepairState: Codable, Sendable, Equatable {
    public var sendSeq: UInt32
    public var receiveSeq: UInt32
    public var unsent: Int
    public var mss: UInt32
    public var timestamp: UInt32
    public var sendWscale: UInt8
    public var receiveWscale: UInt8
    public var options: UInt8
    public var state: UInt8
    public var window: [UInt32]
    public var sendQueue: Data
    public var receiveQueue: Data

    public init(sendSeq: UInt32, receiveSeq: UInt32, unsent: Int, mss: UInt32, timestamp: UInt32, sendWscale: UInt8, receiveWscale: UInt8,
                options: UInt8, state: UInt8, window: [UInt32], sendQueue: Data, receiveQueue: Data) {
        (self.sendSeq, self.receiveSeq, self.unsent, self.mss, self.timestamp) = (sendSeq, receiveSeq, unsent, mss, timestamp)
        (self.sendWscale, self.receiveWscale, self.options, self.state, self.window) = (sendWscale, receiveWscale, options, state, window)
        (self.sendQueue, self.receiveQueue) = (sendQueue, receiveQueue)
    }
}

extension Sys {
    /// The state of connected TCP socket `fd` (repair mode on for the time of it, then off with no
    /// window probe, so the connection goes on as it was).
    public static func readTcpRepair(_ fd: Int32, what: @autoclosure () -> String) throws -> TcpRepairState {
        var st = lg_tcp_state()
        // Room for what the queues hold now, and some more (a peer may still send meanwhile).
        var queued: (Int32, Int32) = (0, 0)
        _ = ioctl(fd, UInt(TIOCOUTQ), &queued.0)
        _ = ioctl(fd, UInt(FIONREAD), &queued.1)
        var capacity = (Int(max(queued.0, 0)) + 65536, Int(max(queued.1, 0)) + 65536)
        var send = Data(), receive = Data()
        var r: Int32 = -E2BIG
        for _ in 0..<4 where r == -E2BIG {
            send = Data(count: capacity.0)
            receive = Data(count: capacity.1)
            r = send.withUnsafeMutableBytes { s in receive.withUnsafeMutableBytes { q in
                lg_tcp_repair_read(fd, &st, s.baseAddress, UInt32(capacity.0), q.baseAddress, UInt32(capacity.1))
            } }
            capacity = (Int(st.send_queue_length) + 1 << 20, Int(st.receive_queue_length) + 1 << 20)
        }
        if r < 0 { throw SystemError("read the TCP state (TCP_REPAIR) of \(what())", code: -r) }
        let window = withUnsafeBytes(of: &st.window) { Array($0.bindMemory(to: UInt32.self)) }
        return TcpRepairState(sendSeq: st.send_seq, receiveSeq: st.receive_seq, unsent: Int(st.unsent_length), mss: st.mss, timestamp: st.timestamp,
                              sendWscale: st.send_wscale, receiveWscale: st.receive_wscale, options: st.options, state: st.state, window: window,
                              sendQueue: send.prefix(Int(st.send_queue_length)), receiveQueue: receive.prefix(Int(st.receive_queue_length)))
    }

    /// Makes fresh TCP socket `fd` the connection `s` from `local` to `peer` (sockaddr bytes), in
    /// repair mode until `finishTcpRepair` (with the unsent bytes, `s.sendQueue.suffix(s.unsent)`).
    public static func restoreTcpRepair(_ fd: Int32, _ s: TcpRepairState, local: Data, peer: Data, what: @autoclosure () -> String) throws {
        var st = lg_tcp_state()
        (st.send_seq, st.receive_seq, st.mss, st.timestamp) = (s.sendSeq, s.receiveSeq, s.mss, s.timestamp)
        (st.send_queue_length, st.unsent_length, st.receive_queue_length) = (UInt32(s.sendQueue.count), UInt32(s.unsent), UInt32(s.receiveQueue.count))
        (st.send_wscale, st.receive_wscale, st.options) = (s.sendWscale, s.receiveWscale, s.options)
        withUnsafeMutableBytes(of: &st.window) { w in for (k, v) in s.window.prefix(5).enumerated() { w.storeBytes(of: v, toByteOffset: 4 * k, as: UInt32.self) } }
        var stage: Int32 = 0
        let r = local.withUnsafeBytes { l in peer.withUnsafeBytes { p in s.sendQueue.withUnsafeBytes { sq in s.receiveQueue.withUnsafeBytes { rq in
            lg_tcp_repair_restore(fd, &st, l.baseAddress, UInt32(local.count), p.baseAddress, UInt32(peer.count), sq.baseAddress, rq.baseAddress, &stage)
        } } } }
        if r < 0 { throw SystemError("restore \(what()) with TCP_REPAIR: \(repairSteps[min(Int(stage), repairSteps.count - 1)])", code: -r) }
    }

    /// Aborts connected TCP socket `fd`: a reset to its peer, ECONNABORTED to whoever holds it.
    public static func abortTcp(_ fd: Int32, what: @autoclosure () -> String) throws {
        let r = lg_tcp_abort(fd)
        if r < 0 { throw SystemError("abort \(what()) (sock_diag SOCK_DESTROY)", code: -r) }
    }

    /// Takes `fd` out of repair mode and sends `unsent`.
    public static func finishTcpRepair(_ fd: Int32, unsent: Data, what: @autoclosure () -> String) throws {
        var stage: Int32 = 0
        let r = unsent.withUnsafeBytes { lg_tcp_repair_finish(fd, $0.baseAddress, UInt32(unsent.count), &stage) }
        if r < 0 { throw SystemError("restore \(what()) with TCP_REPAIR: \(repairSteps[min(Int(stage), repairSteps.count - 1)])", code: -r) }
    }

    private static let repairSteps = ["enter repair mode", "set the sequence numbers", "bind", "connect", "set the options", "refill the queues",
                                      "set the windows", "leave repair mode", "send the unsent bytes"]
}

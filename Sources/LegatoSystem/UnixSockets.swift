import CShims
import Foundation
import Glibc

/// A UNIX socket as sock_diag shows it (lg_unix_sockets).
public struct UnixSocketInfo: Sendable, Equatable {
    public var inode: UInt64
    /// The inode of the socket it is connected to; 0 for none.
    public var peer: UInt64
    /// SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5.
    public var type: Int32
    /// TCP_ESTABLISHED 1, TCP_LISTEN 10, TCP_CLOSE 7 (unconnected).
    public var state: Int32
    /// RCV_SHUTDOWN 1, SEND_SHUTDOWN 2.
    public var shutdown: UInt8
    /// The address it is bound to: a path, or a 0 byte then an abstract name; empty if unnamed.
    public var name: [UInt8]
    /// Connections waiting to be accepted, and the backlog (a listening socket).
    public var pendingConnections: Int
    public var backlog: Int
    /// A listener's: the inodes of (the first 32 of) the sockets that connected and wait to be accepted.
    public var waiting: [UInt64]
}

extension Sys {
    /// Every UNIX socket of the caller's network namespace, by inode.
    public static func unixSockets() throws -> [UInt64: UnixSocketInfo] {
        var capacity = 1024
        while true {
            var buf = [lg_unix_socket](repeating: lg_unix_socket(), count: capacity)
            let n = Int(buf.withUnsafeMutableBufferPointer { lg_unix_sockets($0.baseAddress, Int32(capacity)) })
            if n < 0 { throw SystemError("list the UNIX sockets (sock_diag)", code: Int32(-n)) }
            if n > capacity {
                capacity = n + 256
                continue
            }
            var out: [UInt64: UnixSocketInfo] = [:]
            for var s in buf[0..<n] {
                let name = withUnsafeBytes(of: &s.name) { Array($0.prefix(Int(s.name_length))) }
                out[UInt64(s.inode)] = UnixSocketInfo(inode: UInt64(s.inode), peer: UInt64(s.peer), type: Int32(s.type), state: Int32(s.state),
                                                      shutdown: s.shutdown, name: name, pendingConnections: Int(s.pending_connections),
                                                      backlog: s.state == 10 ? Int(s.send_queue) : 0,
                                                      waiting: withUnsafeBytes(of: &s.icons) { Array($0.bindMemory(to: UInt32.self).prefix(min(32, Int(s.pending_connections)))) }.map { UInt64($0) })
            }
            return out
        }
    }

    /// What is queued to be read on socket `fd`, not consumed: each message (a stream's bytes as one).
    /// Throws for a queue past `capacity` bytes. `inFlight[i]`: the descriptors message i carries
    /// (SCM_RIGHTS), installed in the caller by the peek — the caller closes them.
    public static func peekSocketQueue(_ fd: Int32, stream: Bool, capacity: Int = 16 << 20, what: @autoclosure () -> String) throws
        -> (messages: [Data], inFlight: [[Int32]]) {
        let maxMessages = 65536, maxInFlight = 4096
        let buf = UnsafeMutableRawPointer.allocate(byteCount: max(capacity, 1), alignment: 16)
        defer { buf.deallocate() }
        var lengths = [UInt32](repeating: 0, count: maxMessages)
        var counts = [UInt32](repeating: 0, count: maxMessages)
        var installed = [Int32](repeating: -1, count: maxInFlight)
        var total: Int32 = 0
        let n = lengths.withUnsafeMutableBufferPointer { l in
            counts.withUnsafeMutableBufferPointer { c in
                installed.withUnsafeMutableBufferPointer { lg_socket_peek_queue(fd, buf, capacity, l.baseAddress, Int32(maxMessages), $0.baseAddress, c.baseAddress, Int32(maxInFlight), &total) }
            }
        }
        if n < 0 {
            for k in 0..<Int(total) { close(installed[k]) }
            throw SystemError("copy what is queued on \(what())", code: Int32(-n))
        }
        var messages: [Data] = [], inFlight: [[Int32]] = []
        var at = 0, next = 0
        for k in 0..<n {
            let len = Int(lengths[k])
            messages.append(Data(bytes: buf + at, count: len))
            inFlight.append(Array(installed[next..<next + Int(counts[k])]))
            at += len
            next += Int(counts[k])
        }
        // A stream's bytes as one message, unless descriptors ride at some of its boundaries.
        if stream && inFlight.allSatisfy({ $0.isEmpty }) {
            messages = messages.isEmpty ? [] : [messages.reduce(Data(), +)]
            inFlight = messages.map { _ in [] }
        }
        return (messages, inFlight)
    }

    /// Sends `data` on `fd` without waiting, `rights` riding with its first byte (SCM_RIGHTS); a
    /// stream's bytes in as many sends as it takes. Throws if the socket cannot take it now.
    public static func sendWithRights(_ fd: Int32, _ data: Data, rights: [Int32], stream: Bool, what: @autoclosure () -> String) throws {
        var done = 0
        repeat {
            let n = data.withUnsafeBytes { bytes in
                rights.withUnsafeBufferPointer { lg_send_with_rights(fd, bytes.baseAddress! + done, data.count - done, done == 0 ? $0.baseAddress : nil, done == 0 ? Int32(rights.count) : 0) }
            }
            if n < 0 { throw SystemError("send \(data.count) byte(s)\(rights.isEmpty ? "" : " with \(rights.count) descriptor(s)") into \(what())", code: Int32(-n)) }
            done += Int(n)
        } while stream && done < data.count
    }
}

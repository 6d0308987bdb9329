import CShims
import Glibc

extension Sys {
    /// The backlog of the listening TCP socket with inode `inode` (family AF_INET or AF_INET6), from sock_diag.
    public static func tcpListenBacklog(family: Int32, inode: UInt64) throws -> Int32 {
        let r = lg_tcp_listen_backlog(family, inode)
        if r < 0 { throw SystemError("read the backlog of TCP listener socket:[\(inode)] (sock_diag)", code: Int32(-r)) }
        return Int32(r)
    }
}

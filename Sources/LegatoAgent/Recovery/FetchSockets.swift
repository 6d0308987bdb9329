import Glibc
import LegatoSystem

/// The fetch connections' descriptors by memory node address, for another thread to cut: the
/// event loop reads a fetch's reply once its header is in, and a host cut off in the middle of
/// the reply leaves that read waiting out the 60 s I/O timeout, the coordinator's word on the
/// death unheard meanwhile. MembershipWatch's thread shuts down the connections of a node it
/// declares dead, so the read fails at once; the reason is kept for the failure's message.
/// Thread-safe.
final class FetchSockets {
    private let lock = Lock()
    private var fds: [String: Int32] = [:]
    private var cut: [String: String] = [:]

    /// `fd` is the fetch connection to `address` from now on.
    func register(_ address: String, fd: Int32) { lock.withLock { fds[address] = fd } }

    /// The connection to `address` is about to be closed (its descriptor may be another's after).
    func unregister(_ address: String) { lock.withLock { _ = fds.removeValue(forKey: address) } }

    /// Shuts down the connections to `addresses`, because `why`.
    func shutDown(_ addresses: Set<String>, why: String) {
        lock.withLock {
            for a in addresses {
                guard let fd = fds[a] else { continue }
                cut[a] = why
                shutdown(fd, Int32(SHUT_RDWR))
            }
        }
    }

    /// Why the connection to `address` was shut down from here, if it was.
    func reason(_ address: String) -> String? { lock.withLock { cut[address] } }
}

import Glibc

/// How daemons stop: SIGTERM/SIGINT are blocked in every thread and awaited with sigwait.
enum DaemonSignals {
    /// Blocks SIGTERM, SIGINT and SIGHUP in this thread (threads started later inherit it).
    static func blockTermination() -> sigset_t {
        var set = sigset_t()
        sigemptyset(&set)
        sigaddset(&set, SIGTERM)
        sigaddset(&set, SIGINT)
        sigaddset(&set, SIGHUP)
        pthread_sigmask(SIG_BLOCK, &set, nil)
        signal(SIGPIPE, SIG_IGN)
        return set
    }

    /// Waits for one of the blocked termination signals.
    @discardableResult
    static func wait(_ set: sigset_t) -> Int32 {
        var s = set
        var sig: Int32 = 0
        sigwait(&s, &sig)
        return sig
    }

    /// Tells a parent that started us with --ready-fd which port we listen on.
    static func announceReady(fd: Int32, port: UInt16) {
        let line = "\(port)\n"
        _ = line.withCString { write(fd, $0, strlen($0)) }
        close(fd)
    }
}

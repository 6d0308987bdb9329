import Glibc

/// A mutex with a condition variable. `withLock` is the only way in; `wait` must be called inside it.
public final class Lock: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var cond = pthread_cond_t()

    public init() {
        pthread_mutex_init(&mutex, nil)
        var attr = pthread_condattr_t()
        pthread_condattr_init(&attr)
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC)
        pthread_cond_init(&cond, &attr)
        pthread_condattr_destroy(&attr)
    }

    deinit {
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&mutex)
    }

    @inline(__always)
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }

    /// Runs `body` under the lock if it is free now; nil (body not run) if another thread holds it.
    @inline(__always)
    public func withLockIfFree<T>(_ body: () throws -> T) rethrows -> T? {
        guard pthread_mutex_trylock(&mutex) == 0 else { return nil }
        defer { pthread_mutex_unlock(&mutex) }
        return try body()
    }

    /// Waits (inside `withLock`) until signalled or `seconds` pass; returns false on timeout.
    @discardableResult
    public func wait(seconds: Double? = nil) -> Bool {
        guard let seconds else {
            pthread_cond_wait(&cond, &mutex)
            return true
        }
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let ns = Int(seconds * 1e9) + ts.tv_nsec
        ts.tv_sec += ns / 1_000_000_000
        ts.tv_nsec = ns % 1_000_000_000
        return pthread_cond_timedwait(&cond, &mutex, &ts) == 0
    }

    public func broadcast() { pthread_cond_broadcast(&cond) }
}

/// Starts a named detached OS thread (the agent needs real threads: ptrace binds to one), 8 MiB
/// stack, with the process's asynchronous signals blocked.
public func startThread(name: String, _ body: @escaping () -> Void) {
    final class Box { let body: () -> Void; let name: String; init(_ b: @escaping () -> Void, _ n: String) { body = b; name = n } }
    let box = Unmanaged.passRetained(Box(body, name)).toOpaque()
    var tid = pthread_t()
    var attr = pthread_attr_t()
    pthread_attr_init(&attr)
    pthread_attr_setdetachstate(&attr, Int32(PTHREAD_CREATE_DETACHED))
    pthread_attr_setstacksize(&attr, 8 << 20)
    let rc = pthread_create(&tid, &attr, { raw in
        let b = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
        Sys.setThreadName(b.name)
        // A helper thread never takes the process's signals: an agent's SIGCHLD must reach its
        // signalfd, a daemon's SIGTERM its handler thread, whoever started this thread first.
        var set = sigset_t()
        sigemptyset(&set)
        for sig in [SIGCHLD, SIGTERM, SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM] { sigaddset(&set, sig) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        b.body()
        return nil
    }, box)
    pthread_attr_destroy(&attr)
    precondition(rc == 0, "pthread_create(\(name)) failed: \(rc)")
}

/// Monotonic clock in nanoseconds.
@inline(__always)
public func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

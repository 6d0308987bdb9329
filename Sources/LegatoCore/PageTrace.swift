import Glibc

/// A debugging trace of page events, off unless `LEGATO_PAGE_TRACE=DIR` is set: each process
/// (agent, memory node) writes DIR/pagetrace.PID, one line per event — microseconds on the
/// monotonic clock, then the event: the agent's batches (HOLD, SEND, WAIT, UNWAIT, ACK with the
/// pages it no longer holds newest, REFUSED, FAILED, RESEND, FRESH), fetches (FETCH, FETCHNOW,
/// PARK, PARKREQ, BUF for a fault served from a batch), clean evictions (CLEAN), a node's death
/// (DEAD with the keys to recover), where pages moved (STORED, MOVE) and the eviction's regions
/// (REGION address key pages, to map addresses to keys); a memory node's write-back log (LOG,
/// REWRITE, FREE) and recovery (REPLAY). For finding which page went wrong and why; every line is
/// flushed, so it is slow.
public enum PageTrace {
    nonisolated(unsafe) private static let file: UnsafeMutablePointer<FILE>? = {
        guard let dir = getenv("LEGATO_PAGE_TRACE") else { return nil }
        return fopen(String(cString: dir) + "/pagetrace.\(getpid())", "w")
    }()
    private static let lock = PageTraceLock()

    /// Whether tracing is on (check before building an expensive line).
    public static var on: Bool { file != nil }

    public static func note(_ line: @autoclosure () -> String) {
        guard let f = file else { return }
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        let text = "\(ts.tv_sec * 1_000_000 + ts.tv_nsec / 1000) \(line())\n"
        lock.locked {
            fputs(text, f)
            fflush(f)
        }
    }

    /// Keys in hex, comma-separated.
    public static func keys<S: Sequence<UInt64>>(_ k: S) -> String { k.map { String($0, radix: 16) }.joined(separator: ",") }
}

private final class PageTraceLock: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    init() { pthread_mutex_init(&mutex, nil) }
    func locked(_ body: () -> Void) {
        pthread_mutex_lock(&mutex)
        body()
        pthread_mutex_unlock(&mutex)
    }
}

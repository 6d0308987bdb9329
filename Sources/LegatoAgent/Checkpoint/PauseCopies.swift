import Dispatch
import Glibc
import LegatoCore
import LegatoSystem

/// The resident pages a pause copies into staging. Copying is the largest cost of a tree's pause
/// (only PROG gets a snapshot), so it starts as early as it can: the managed pages of every process
/// are gathered right after the freeze and a helper thread starts copying them (`start`) while the
/// pause's own thread captures the processes' contexts; what is added later (file mappings'
/// written pages) joins the same queue, and `finish` has the pause's thread take copies from it
/// too until none is left. The tree is frozen, so nothing read changes while it is copied, and the
/// contexts' injected calls touch only the scratch area, which is never copied.
///
/// Contract: every destination is reserved by the caller before `add`; `finish` (or `abandon`)
/// returns only when no thread writes to any destination any more. One pause's thread calls
/// everything; the helper only takes copies.
final class PauseCopies: @unchecked Sendable {
    struct Copy {
        let pid: pid_t
        let address: UInt64
        let pages: Int
        let into: UnsafeMutableRawPointer
    }
    private let lock = Lock()
    private var queue: [Copy] = []
    private var next = 0
    private var failure: Error?
    private var helper: DispatchSemaphore?
    private(set) var pages = 0
    /// Below this many pages a helper is not worth its wake-up.
    static let helperAbovePages = 1024

    func add(pid: pid_t, address: UInt64, pages n: Int, into dst: UnsafeMutableRawPointer) {
        lock.withLock { queue.append(Copy(pid: pid, address: address, pages: n, into: dst)) }
        pages += n
    }

    /// Starts the helper on what is queued and what will be (if there is enough to copy).
    func start() {
        guard helper == nil, pages >= Self.helperAbovePages else { return }
        let done = DispatchSemaphore(value: 0)
        helper = done
        startThread(name: "pause-copy") { [self] in
            drain()
            done.signal()
        }
    }

    /// Copies what is left, with the helper (started now if it was not), and waits for it; the
    /// first failure is thrown.
    func finish() throws {
        start()
        drain()
        join()
        let e = lock.withLock { failure }
        reset()
        if let e { throw e }
    }

    /// Stops taking copies and waits for the helper's last one (the pause failed).
    func abandon() {
        lock.withLock { next = queue.count }
        join()
        reset()
    }

    private func join() {
        helper?.wait()
        helper = nil
    }

    private func reset() {
        lock.withLock {
            queue.removeAll()
            next = 0
            failure = nil
        }
        pages = 0
    }

    /// Takes and copies queued copies until none is left (or one failed). Copies of one process
    /// whose destinations follow one another (staging reserves them so) go in one
    /// process_vm_readv of up to `batch` ranges: scattered pages cost a call each otherwise.
    private func drain() {
        var addresses = [UInt64](repeating: 0, count: Self.batch), lengths = [UInt64](repeating: 0, count: Self.batch)
        while true {
            let run = take()
            guard let first = run.first else { return }
            do {
                var bytes = 0
                for (k, c) in run.enumerated() {
                    addresses[k] = c.address
                    lengths[k] = UInt64(c.pages * Page.size)
                    bytes += c.pages * Page.size
                }
                let got = run.count == 1 ? -1 : (try? Sys.processRead(pid: first.pid, into: first.into, capacity: bytes, addresses: addresses, lengths: lengths, count: run.count)) ?? -1
                if got != bytes {  // one at a time, each with its own fallback (PROT_NONE pages: /proc/PID/mem)
                    for c in run { try Sys.readProcessMemory(pid: c.pid, address: c.address, length: c.pages * Page.size, into: c.into) }
                }
            } catch {
                lock.withLock {
                    if failure == nil { failure = error }
                    next = queue.count
                }
            }
        }
    }

    static let batch = 512

    /// The next copies: one, and those after it of the same process whose destinations follow on.
    private func take() -> [Copy] {
        lock.withLock {
            guard next < queue.count else { return [] }
            var run = [queue[next]]
            next += 1
            while next < queue.count && run.count < Self.batch {
                let last = run[run.count - 1], c = queue[next]
                guard c.pid == last.pid && c.into == last.into + last.pages * Page.size else { break }
                run.append(c)
                next += 1
            }
            return run
        }
    }
}

import Glibc
import LegatoCore
import LegatoSystem

/// Liveness guard, checked once a second while the agent is idle: a thread of PROG asleep in a
/// userfault twice in a row while nothing is on its way for it means its fault was dropped (a
/// bug). Waking the whole address range makes every waiting thread fault again and the new
/// message is served; waking a thread that does not wait is harmless. Logged and counted, never silent.
final class LivenessGuard {
    private var lastCheck: UInt64 = 0
    /// Threads seen waiting at the last check.
    private var suspects: Set<Int32> = []
    /// Times it had to wake a forgotten fault.
    private(set) var wakes = 0
    private let log: Logger

    init(log: Logger) { self.log = log }

    /// Checks the threads of `tracer` in each of `spaces`; `nothingOnItsWay` says no fetch is due.
    func check(_ spaces: [AddressSpace], tracer: Tracer, nothingOnItsWay: Bool) {
        let now = monotonicNanos()
        guard !spaces.isEmpty, now - lastCheck >= 1_000_000_000 else { return }
        lastCheck = now
        guard nothingOnItsWay, !spaces.contains(where: { $0.faults.hasPending }) else { suspects = []; return }
        var seen: Set<Int32> = []
        for mm in spaces {
            let waiting = Set(tracer.threads(in: mm).filter { ProcFile.text("/proc/\($0.tid)/wchan") == "handle_userfault" }.map { $0.tid })
            // A thread that faulted after the loop's last poll is waiting too, with its message queued:
            // only a thread seen waiting while the uffd has nothing for us, at two checks running, is stuck.
            // (Without this, threads faulting at the moment of each check were taken for a lost fault
            // now and then in busy runs.)
            var pending = pollfd(fd: mm.pollFD, events: Int16(POLLIN), revents: 0)
            guard !waiting.isEmpty, poll(&pending, 1, 0) == 0 else { continue }
            let still = waiting.intersection(suspects)
            seen.formUnion(waiting.subtracting(still))
            if !still.isEmpty { wake(mm, threads: still) }
        }
        suspects = seen
    }

    private func wake(_ mm: AddressSpace, threads still: Set<Int32>) {
        wakes += 1
        // Nothing is on its way, so no page can be waiting for a fetch answer: a `fetching` bit left
        // behind (an answer dropped while its range changed) would make every refault wait forever.
        var stale = 0
        for r in mm.table.regions.regions {
            for i in 0..<r.pageCount where r.state(i).contains(.fetching) {
                r.remove(i, .fetching)
                stale += 1
            }
        }
        let report = "\(stale) pages marked as being fetched with no fetch under way, cleared; \(registrationReport(mm))"
        log.warning("thread(s) \(still.sorted()) of pid \(mm.pid) have waited for a page for 2 s with nothing on its way; waking its faults again (\(report))")
        // The whole user address range: the lost fault may be on a page the table no longer holds
        // (a wake needs no registration); the refault then comes back as a new message.
        mm.faults.kernel.wake(start: 0x10000, length: 0x7fff_ffff_0000 - 0x10000)
    }

    /// For the warning: mappings the kernel has registered with a userfaultfd that the region table
    /// does not cover (a fault there reaches no one who knows the page).
    private func registrationReport(_ mm: AddressSpace) -> String {
        let smaps = ProcFile.text("/proc/\(mm.pid)/smaps") ?? ""
        var unknown: [String] = []
        var current: (UInt64, UInt64, String)?
        for line in smaps.split(separator: "\n") {
            if let dash = line.firstIndex(of: "-"), let space = line.firstIndex(of: " "), dash < space,
               let a = UInt64(line[..<dash], radix: 16), let b = UInt64(line[line.index(after: dash)..<space], radix: 16) {
                current = (a, b, String(line.split(separator: " ").dropFirst(5).joined(separator: " ")))
            } else if line.hasPrefix("VmFlags:"), let (a, b, path) = current, line.contains(" um") || line.contains(" uw") {
                var covered = a
                while covered < b, let r = mm.table.regions.find(covered) { covered = r.end }
                if covered < b { unknown.append("\(describeRange(a, b - a)) \(path) [\(line.dropFirst(9))] unknown from 0x\(String(covered, radix: 16))") }
            }
        }
        return unknown.isEmpty ? "every registered mapping is known" : "registered but not in the table: " + unknown.prefix(6).joined(separator: "; ")
    }
}

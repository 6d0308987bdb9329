import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// PROG discarding its own memory: madvise(MADV_DONTNEED / FREE / REMOVE / DONTNEED_LOCKED) and
/// process_madvise on itself.
///
/// The agent does not take uffd REMOVE events: its own eviction discards with process_madvise, and
/// each REMOVE event would block that call until read — one round trip per discarded range. Instead
/// the seccomp filter stops PROG's discards at entry, where the range is marked untouched *before*
/// the kernel zaps it (a fault in the range from then on gets zeros, as after the zap). Remote copies
/// are discarded once the call has succeeded; if it fails on a locked mapping, the pages from that
/// mapping on are restored.
extension Agent {
    struct PendingDiscard {
        struct Saved {
            let address: UInt64
            /// Where its remote copy was (a fork's shared key, or its own).
            let key: UInt64
            /// Its own key: tells the page's region from one mapped at its address since.
            let storeKey: UInt64
            let state: UInt8
        }
        var ranges: [(UInt64, UInt64)]
        var saved: [Saved]
    }

    static let discardAdvice: Set<UInt64> = [4, 8, 9, 24, 102]  // DONTNEED, FREE, REMOVE, DONTNEED_LOCKED, GUARD_INSTALL (zaps)

    /// madvise entry: rewrite MADV_FREE to MADV_DONTNEED (Linux may always free at once) and mark the range.
    func madviseEntry(_ t: Tracee, _ regs: Registers) throws {
        guard let mm = t.space, Agent.discardAdvice.contains(regs.rdx) else { return }
        if regs.rdx == 8 {
            var r = regs
            r.rdx = 4
            try Sys.setRegisters(t.tid, r)
        }
        let start = regs.rdi, length = Page.alignUp(regs.rsi)
        guard start & Page.mask == 0, length > 0, start &+ length > start else { return }  // the kernel refuses these
        t.pendingDiscard = markDiscarded([(start, start + length)], in: mm)
        t.awaitingExit = .madvise
    }

    /// process_madvise entry: only calls aimed at PROG itself discard PROG's memory.
    func processMadviseEntry(_ t: Tracee, _ regs: Registers) throws {
        guard let mm = t.space, Agent.discardAdvice.contains(regs.r10), regs.rdx > 0, regs.rdx <= 1024 else { return }
        let pidfd = Int64(bitPattern: regs.rdi)
        let target: pid_t? = pidfd == Agent.pidfdSelfThreadGroup || pidfd == -10000 ? t.tgid : pidOfPidfd(t.tid, Int32(truncatingIfNeeded: pidfd))
        // (A process aimed at another's memory: process_madvise allows no discard of another process.)
        guard target == t.tgid || (target == mm.pid && mm.pid != 0) else { return }
        var ranges: [(UInt64, UInt64)] = []
        for k in 0..<regs.rdx {
            let base = try readProgramWord(at: regs.rsi + k * 16, tid: t.tid, in: mm)
            let len = try readProgramWord(at: regs.rsi + k * 16 + 8, tid: t.tid, in: mm)
            let start = Page.alignDown(base), end = Page.alignUp(base &+ len)
            if end > start { ranges.append((start, end)) }
        }
        t.pendingDiscard = markDiscarded(ranges, in: mm)
        t.awaitingExit = .processMadvise
    }

    /// At the exit stop: commit (discard the remote copies) or restore what the kernel did not zap.
    func discardExit(_ t: Tracee, result: Int64) {
        guard let pending = t.pendingDiscard, let mm = t.space else { return }
        t.pendingDiscard = nil
        if result >= 0 || result == -Int64(ENOMEM) {
            commitDiscard(pending.saved)
            return
        }
        // Failed: madvise stops at the first mapping it may not discard (mlock'd ...). Pages before it are gone.
        let firstRefused = firstLockedMapping(in: pending.ranges, of: t.tgid) ?? 0
        var gone: [PendingDiscard.Saved] = []
        var restored = 0
        for s in pending.saved {
            guard s.address >= firstRefused, let r = mm.table.regions.find(s.address), r.storeKey(at: r.index(of: s.address)) == s.storeKey else {
                gone.append(s)
                continue
            }
            let i = r.index(of: s.address)
            // A fetch that was on its way has been answered and dropped meanwhile: the page is remote again.
            r.setState(i, PageState(rawValue: s.state).subtracting(.fetching).union(r.state(i).intersection(.queued)))
            r.setInherited(i, key: s.key)
            if PageState(rawValue: s.state).contains(.resident) { restored += 1 }
        }
        mm.table.noteResident(restored)
        commitDiscard(gone)
    }

    /// Marks every page of `ranges` untouched (keeping what is needed to undo it).
    private func markDiscarded(_ ranges: [(UInt64, UInt64)], in mm: AddressSpace) -> PendingDiscard {
        var saved: [PendingDiscard.Saved] = []
        var wasResident = 0
        let keep = PageState.queued.rawValue
        for (start, end) in ranges {
            var k = mm.table.regions.firstIndex(atOrAbove: start)
            while k < mm.table.regions.regions.count && mm.table.regions.regions[k].start < end {
                let r = mm.table.regions.regions[k]
                let from = r.index(of: max(r.start, start)), to = r.index(of: min(r.end, end))
                for i in from..<to where r.states[i] & ~keep != 0 {
                    saved.append(.init(address: r.address(at: i), key: r.key(at: i), storeKey: r.storeKey(at: i), state: r.states[i] & ~keep))
                    if r.state(i).contains(.resident) { wasResident += 1 }
                    r.setState(i, PageState(rawValue: r.states[i] & keep))
                    _ = r.dropInherited(i)  // released in commitDiscard
                }
                k += 1
            }
        }
        mm.table.noteResident(-wasResident)
        return PendingDiscard(ranges: ranges, saved: saved)
    }

    /// Discards the remote copies of pages PROG threw away.
    private func commitDiscard(_ saved: [PendingDiscard.Saved]) {
        var discards = RemoteDiscards()
        for s in saved {
            let st = PageState(rawValue: s.state)
            guard st.contains(.remote) || st.contains(.inFlight), sharedKeys.release(s.key), pool.location(s.key) != nil else { continue }
            for node in pool.holders(s.key) { discards.add(s.key, on: node) }
            pool.recordDiscarded(key: s.key)
        }
        discards.send(through: writeBack)
    }

    /// The start of the first locked mapping overlapping `ranges` (from /proc/PID/smaps), if any.
    private func firstLockedMapping(in ranges: [(UInt64, UInt64)], of pid: pid_t) -> UInt64? {
        guard let text = ProcFile.text("/proc/\(pid)/smaps") else { return nil }
        var current: UInt64?
        var best: UInt64?
        for line in text.split(separator: "\n") {
            if let dash = line.firstIndex(of: "-"), line.first?.isHexDigit == true, let s = UInt64(line[..<dash], radix: 16) {
                let rest = line[line.index(after: dash)...]
                let e = UInt64(rest.prefix { $0.isHexDigit }, radix: 16) ?? s
                current = ranges.contains { $0.0 < e && s < $0.1 } ? s : nil
            } else if line.hasPrefix("VmFlags:"), let s = current {
                let flags = line.split(separator: " ")
                if flags.contains("lo") || flags.contains("pf") || flags.contains("ht") { best = min(best ?? s, s) }
            }
        }
        return best
    }

    /// The pid a pidfd of thread `tid` refers to (fdinfo's Pid line).
    private func pidOfPidfd(_ tid: pid_t, _ fd: Int32) -> pid_t? {
        guard let text = ProcFile.text("/proc/\(tid)/fdinfo/\(fd)") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("Pid:") {
            return pid_t(line.dropFirst(4).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}

import Glibc
import LegatoCore
import LegatoSystem

/// Restoring event descriptors (EventDescriptors) by injection: an eventfd with its counter, a
/// timerfd armed with the time it had left and its unread expirations (TFD_IOC_SET_TICKS), a
/// signalfd with its mask, an inotify instance with its watches at their numbers, an epoll set made empty at its number and filled once every descriptor
/// of the process is back (`fillEpollSets`: its entries name other descriptors, epoll sets too).
extension Agent {
    /// Makes event descriptor `f` again at its number, with its status and close-on-exec flags.
    func restoreEventDescriptor(_ f: ProcessImage.FileDescriptor, _ image: ProcessImage, _ calls: RestoreCalls) throws {
        let unrestorable = RestoreError.descriptorUnrestorable(name: image.name, epoch: image.epoch, fd: f.fd, path: f.path)
        let flags = UInt64(f.flags & (0o4000 | 0o2000000))  // O_NONBLOCK, O_CLOEXEC: EFD_, TFD_, SFD_ alike
        let what = "\(f.kind.rawValue) for fd \(f.fd)"
        let fd: Int64
        switch f.kind {
        case .eventfd:
            guard let c = f.eventfd else { throw unrestorable }
            fd = try calls.call("eventfd2 " + what, .eventfd2, 0, flags | (c.semaphore ? 1 : 0))  // EFD_SEMAPHORE
            if c.count > 0 {
                let value = try calls.args.bytes(withUnsafeBytes(of: c.count) { Array($0) })
                _ = try calls.call("write the counter \(c.count) to the " + what, .write, UInt64(fd), value, 8)
                calls.args.reset()
            }
        case .timerfd:
            guard let t = f.timerfd else { throw unrestorable }
            fd = try calls.call("timerfd_create(clock \(t.clock)) " + what, .timerfdCreate, UInt64(bitPattern: Int64(t.clock)), flags)
            if t.value != [0, 0] {
                try armTimer(UInt64(fd), t, what, calls)
            }
            if t.ticks > 0 {
                let ticks = try calls.args.bytes(withUnsafeBytes(of: t.ticks) { Array($0) })
                _ = try calls.call("ioctl(TFD_IOC_SET_TICKS, \(t.ticks)) " + what, .ioctl, UInt64(fd), 0x4008_5400, ticks)
                calls.args.reset()
            }
        case .signalfd:
            let mask = try calls.args.bytes(withUnsafeBytes(of: f.signalMask ?? 0) { Array($0) })
            fd = try calls.call("signalfd4 " + what, .signalfd4, UInt64.max, mask, 8, flags)
            calls.args.reset()
        case .epoll:
            fd = try calls.call("epoll_create1 " + what, .epollCreate1, flags & 0o2000000)
            if f.flags & 0o4000 != 0 { _ = try calls.call("fcntl(F_SETFL, O_NONBLOCK) " + what, .fcntl, UInt64(fd), 4, 0o4000) }
        case .inotify:
            fd = try calls.call("inotify_init1 " + what, .inotifyInit1, flags)  // IN_NONBLOCK, IN_CLOEXEC
            try addWatches(f.inotify ?? [], to: fd, what, calls)
        default:
            throw unrestorable
        }
        try place(fd, at: f, calls)
    }

    /// Each watch at its number. Numbers come from a counter that only goes up (idr_alloc_cyclic
    /// from 1): one added below the number it needs is removed and added again until it gets it
    /// (as CRIU does). Each removal queues an IN_IGNORED event for the number passed, which the
    /// agent reads off the instance before the program can: any other event read then is a
    /// watched file that changed while the restore ran, which fails the restore rather than lose it.
    private func addWatches(_ watches: [ProcessImage.InotifyWatch], to fd: Int64, _ what: String, _ calls: RestoreCalls) throws {
        var passed = 0
        for w in watches.sorted(by: { $0.wd < $1.wd }) {
            while true {
                let got = try calls.call("inotify_add_watch(\(w.path), 0x\(String(w.mask, radix: 16))) on the " + what, .inotifyAddWatch,
                                         UInt64(fd), try calls.args.string(w.path), UInt64(w.mask))
                calls.args.reset()
                if got == Int64(w.wd) { break }
                guard got < Int64(w.wd) else {
                    throw SystemError("restoring the \(what): the watch on \(w.path) came back as \(got), not \(w.wd) (the instance's numbers went past it)", code: EEXIST)
                }
                _ = try calls.call("inotify_rm_watch(\(got)) on the " + what, .inotifyRmWatch, UInt64(fd), UInt64(got))
                passed += 1
            }
        }
        guard passed > 0 else { return }
        let own = try Sys.copyDescriptor(Int32(fd), of: calls.tid)
        defer { close(own) }
        // (The copy is the program's open file description: O_NONBLOCK goes back as it was.)
        let flags = Glibc.fcntl(own, F_GETFL)
        if flags & O_NONBLOCK == 0 { _ = Glibc.fcntl(own, F_SETFL, flags | O_NONBLOCK) }
        defer { if flags & O_NONBLOCK == 0 { _ = Glibc.fcntl(own, F_SETFL, flags) } }
        var buffer = [UInt8](repeating: 0, count: 4096)
        var ignored = 0
        while ignored < passed {
            let n = read(own, &buffer, buffer.count)
            guard n > 0 else { break }
            var at = 0
            while at + 16 <= n {
                let mask = buffer.withUnsafeBytes { $0.load(fromByteOffset: at + 4, as: UInt32.self) }
                let length = Int(buffer.withUnsafeBytes { $0.load(fromByteOffset: at + 12, as: UInt32.self) })
                guard mask == 0x8000 else {  // IN_IGNORED
                    throw SystemError("restoring the \(what): a watched file changed while the restore ran (event 0x\(String(mask, radix: 16))); restore again", code: EAGAIN)
                }
                ignored += 1
                at += 16 + length
            }
        }
    }

    /// timerfd_settime with the time left, relative; a timer that is cancelled when the clock is set
    /// (TFD_TIMER_CANCEL_ON_SET, which needs an absolute time) at now + the time left.
    private func armTimer(_ fd: UInt64, _ t: ProcessImage.TimerSetting, _ what: String, _ calls: RestoreCalls) throws {
        var value = t.value
        var flags: UInt64 = 0
        if t.flags & 2 != 0 {  // TFD_TIMER_CANCEL_ON_SET (with TFD_TIMER_ABSTIME)
            var now = timespec()
            guard clock_gettime(clockid_t(t.clock), &now) == 0 else { throw SystemError.fromErrno("clock_gettime(\(t.clock)) to arm the \(what)") }
            let nanos = Int64(now.tv_nsec) + value[1]
            value = [Int64(now.tv_sec) + value[0] + nanos / 1_000_000_000, nanos % 1_000_000_000]
            flags = 3
        }
        let spec = try calls.args.bytes((t.interval + value).withUnsafeBytes { Array($0) })
        _ = try calls.call("timerfd_settime(\(value[0]).\(value[1]) s, every \(t.interval[0]).\(t.interval[1]) s) " + what, .timerfdSettime, fd, flags, spec, 0)
        calls.args.reset()
    }

    /// Adds every entry of the epoll sets this process made (not dups, not descriptions taken from
    /// an earlier process of the tree, which that one filled).
    ///
    /// A one-shot entry that fired holds only its flags, but EPOLL_CTL_ADD always adds EPOLLERR and
    /// EPOLLHUP: so each is added first, alone in the set but for those before it, asking every
    /// event, and a zero-timeout epoll_wait fires it, which leaves it as it was. One whose file is
    /// not ready at all stays armed for EPOLLERR and EPOLLHUP only (the closest the kernel allows).
    func fillEpollSets(_ image: ProcessImage, _ calls: RestoreCalls) throws {
        let privateBits: UInt32 = 1 << 28 | 1 << 29 | 1 << 30 | 1 << 31  // EPOLLEXCLUSIVE, EPOLLWAKEUP, EPOLLONESHOT, EPOLLET
        let everyEvent: UInt32 = 0x3fff  // EPOLLIN ... EPOLLRDHUP and the rest of the poll bits
        for f in image.fds where f.kind == .epoll && f.dupOf == nil && f.sharedWith == nil {
            let entries = f.epoll ?? []
            let fired = entries.filter { $0.events & ~privateBits == 0 }
            for e in fired {
                try epollAdd(f.fd, e, events: e.events | everyEvent, calls)
                let slot = try calls.args.bytes([UInt8](repeating: 0, count: 12))
                let n = try calls.call("epoll_wait on the epoll set at fd \(f.fd) to fire its one-shot entry for fd \(e.fd)", .epollWait, UInt64(f.fd), slot, 1, 0)
                calls.args.reset()
                if n == 0 { try epollAdd(f.fd, e, events: e.events, calls, modify: true) }
            }
            for e in entries where !fired.contains(e) { try epollAdd(f.fd, e, events: e.events, calls) }
        }
    }

    private func epollAdd(_ epfd: Int32, _ e: ProcessImage.EpollEntry, events: UInt32, _ calls: RestoreCalls, modify: Bool = false) throws {
        var event = [UInt8](repeating: 0, count: 12)  // struct epoll_event, packed on x86-64
        withUnsafeBytes(of: events) { event.replaceSubrange(0..<4, with: $0) }
        withUnsafeBytes(of: e.data) { event.replaceSubrange(4..<12, with: $0) }
        let arg = try calls.args.bytes(event)
        _ = try calls.call("epoll_ctl(\(modify ? "MOD" : "ADD") fd \(e.fd), events 0x\(String(events, radix: 16))) on the epoll set at fd \(epfd)",
                           .epollCtl, UInt64(epfd), modify ? 3 : 1, UInt64(e.fd), arg)
        calls.args.reset()
    }
}

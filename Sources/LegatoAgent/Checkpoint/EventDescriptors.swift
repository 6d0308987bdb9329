import Foundation
import Glibc
import LegatoSystem

/// Event descriptors — eventfd, timerfd, signalfd and epoll sets — read from /proc/PID/fdinfo while
/// the process is frozen; a restore makes each again by injection (Agent+RestoreEvents).
///
/// An epoll set's entries are kept as the process's fds that are the files it watches, each checked
/// (checkEpollSets, once the tree's shared descriptors are known) with kcmp(KCMP_EPOLL_TFD): an entry whose file no longer sits at the fd number it was added under
/// (closed or replaced since), or one number added as several files, refuses the checkpoint.
/// Readiness is not saved: the kernel finds it again as each entry is added back, so a
/// level-triggered entry reports what it would have, and an edge-triggered one whose file is still
/// ready reports it once more (a spurious edge, which edge-triggered readers must take anyway).
enum EventDescriptors {
    static func kind(of target: String) -> ProcessImage.FileDescriptor.Kind? {
        switch target {
        case "anon_inode:[eventfd]": return .eventfd
        case "anon_inode:[timerfd]": return .timerfd
        case "anon_inode:[signalfd]": return .signalfd
        case "anon_inode:[eventpoll]": return .epoll
        default: return nil
        }
    }

    /// Fills in the state of event descriptor `entry` of `pid` from its fdinfo; throws a
    /// CheckpointRefused naming what cannot be kept, a SystemError if fdinfo cannot be read as expected.
    static func read(_ entry: inout ProcessImage.FileDescriptor, fdinfo: String, pid: pid_t) throws {
        let fields = fdinfoFields(fdinfo)
        func field(_ name: String) throws -> String {
            guard let v = fields[name] else { throw SystemError("read the \(entry.kind.rawValue) at fd \(entry.fd) of pid \(pid): fdinfo has no \(name)", code: EINVAL) }
            return v
        }
        switch entry.kind {
        case .eventfd:
            guard let count = UInt64(try field("eventfd-count"), radix: 16) else { throw malformed(entry, pid, "eventfd-count") }
            entry.eventfd = ProcessImage.EventCounter(count: count, semaphore: fields["eventfd-semaphore"] == "1")
        case .timerfd:
            guard let clock = Int32(try field("clockid")), let ticks = UInt64(try field("ticks")),
                  let flags = Int32(try field("settime flags"), radix: 8),
                  let value = pair(try field("it_value")), let interval = pair(try field("it_interval")) else {
                throw malformed(entry, pid, "the timer's setting")
            }
            entry.timerfd = ProcessImage.TimerSetting(clock: clock, ticks: ticks, flags: flags, value: value, interval: interval)
        case .signalfd:
            guard let mask = UInt64(try field("sigmask"), radix: 16) else { throw malformed(entry, pid, "sigmask") }
            entry.signalMask = mask
        case .epoll:
            entry.epoll = try epollEntries(fdinfo, epfd: entry.fd, pid: pid)
        default:
            break
        }
    }

    /// "tfd:        3 events: 80000019 data: 1122334455667788  pos:0 ino:1a sdev:10", one line an entry.
    private static func epollEntries(_ fdinfo: String, epfd: Int32, pid: pid_t) throws -> [ProcessImage.EpollEntry] {
        var entries: [ProcessImage.EpollEntry] = []
        for line in fdinfo.split(separator: "\n") where line.hasPrefix("tfd:") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard words.count >= 6, words[2] == "events:", words[4] == "data:", let tfd = Int32(words[1]),
                  let events = UInt32(words[3], radix: 16), let data = UInt64(words[5], radix: 16) else {
                throw SystemError("read the epoll set at fd \(epfd) of pid \(pid): an entry reads \"\(line)\"", code: EINVAL)
            }
            entries.append(ProcessImage.EpollEntry(fd: tfd, events: events, data: data))
        }
        return entries
    }

    /// Checks each epoll set of the tree where it is restored (its first holder: not a dup, not
    /// taken from an earlier process), whose fd table the entries' numbers refer to: each entry's
    /// file must be the one at its number now, and no number may be added as two files. `pids` as
    /// the agent sees the images' processes; throws the refusals, each named.
    static func checkEpollSets(_ images: [ProcessImage], pids: [pid_t]) throws {
        var refused: [String] = []
        for (k, image) in images.enumerated() {
            let whose = images.count > 1 ? "pid \(image.pid): " : ""
            for f in image.fds where f.kind == .epoll && f.dupOf == nil && f.sharedWith == nil {
                var seen = Set<Int32>()
                for e in f.epoll ?? [] {
                    if !seen.insert(e.fd).inserted {
                        refused.append(whose + "fd \(f.fd) is an epoll set that watches two files added as fd \(e.fd)")
                    } else if !(try Sys.epollWatches(pid: pids[k], epfd: f.fd, tfd: e.fd, isFD: e.fd)) {
                        refused.append(whose + "fd \(f.fd) is an epoll set that watches a file added as fd \(e.fd), which fd \(e.fd) no longer is")
                    }
                }
            }
        }
        if !refused.isEmpty {
            throw CheckpointRefused(description: refused.joined(separator: "; ") + "; cannot checkpoint \(refused.count == 1 ? "it" : "them")")
        }
    }

    /// fdinfo's "name: value" lines (the name may hold a space: "settime flags").
    private static func fdinfoFields(_ text: String) -> [String: String] {
        var out: [String: String] = [:]
        for line in text.split(separator: "\n") {
            guard let colon = line.firstIndex(of: ":") else { continue }
            let name = String(line[..<colon])
            if out[name] == nil { out[name] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces) }
        }
        return out
    }

    /// "(99, 980461716)" as [99, 980461716].
    private static func pair(_ text: String) -> [Int64]? {
        let parts = text.trimmingCharacters(in: CharacterSet(charactersIn: "()")).split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        guard parts.count == 2, let a = Int64(parts[0]), let b = Int64(parts[1]) else { return nil }
        return [a, b]
    }

    private static func malformed(_ entry: ProcessImage.FileDescriptor, _ pid: pid_t, _ what: String) -> SystemError {
        SystemError("read the \(entry.kind.rawValue) at fd \(entry.fd) of pid \(pid): fdinfo's \(what) cannot be parsed", code: EINVAL)
    }
}

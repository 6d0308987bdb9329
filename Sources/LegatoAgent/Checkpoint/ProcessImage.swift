import Foundation
import LegatoSystem

/// Everything about a process a checkpoint holds besides its page contents (the context record).
/// Stored as JSON beside the pages; see Docs/checkpoint-format.md.
public struct ProcessImage: Codable, Equatable {
    public static let version = 2

    public var version = ProcessImage.version
    public var name: String
    public var epoch: UInt64
    /// PROG's PID in its own PID namespace (2: the reaper is 1); thread ids are in that namespace too.
    public var pid: Int32
    /// The checkpoint this one is an increment of (its pages are the ones changed since); nil: full.
    public var parentEpoch: UInt64?
    public var createdAt: Double
    public var exe: String
    public var cwd: String
    public var umask: UInt32
    public var mm: MMFields
    public var auxv: [UInt64]
    public var vmas: [VMA]
    public var threads: [ThreadState]
    public var sigactions: [SigAction]
    public var fds: [FileDescriptor]
    public var rlimits: [RLimit]
    /// getitimer(ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF): interval and value, seconds and microseconds.
    public var itimers: [[UInt64]]
    /// Seccomp filters the process installed itself (beyond what `legato run` inherited and the
    /// agent's own), oldest first, as BPF programs (8-byte instructions); all its threads run under them.
    public var seccompFilters: [Data]?
    /// POSIX timers (timer_create) with their ids, clocks, notification and setting.
    public var posixTimers: [PosixTimer]?

    public struct PosixTimer: Codable, Equatable {
        public var id: Int32
        public var clock: Int32
        /// sigev_notify (SIGEV_SIGNAL 0, SIGEV_NONE 1, SIGEV_THREAD_ID 4), the signal, its
        /// sigev_value, and for SIGEV_THREAD_ID the thread (a tid in PROG's namespace).
        public var notify: Int32
        public var signal: Int32
        public var value: UInt64
        public var thread: Int32
        /// timer_gettime: interval (s, ns), time left (s, ns); all 0 when disarmed.
        public var setting: [UInt64]
    }
    /// Signals pending for the whole process: raw siginfo records, oldest first.
    public var pendingSignals: [Data]?
    /// Process-wide attributes (nil in checkpoints written before they were kept).
    public var attributes: Attributes?
    /// membarrier registration commands the process had made (MEMBARRIER_CMD_REGISTER_*).
    public var membarrierRegistrations: [UInt64]?
    /// The process's aio contexts (io_setup), each with its ring as it was; none had a request in
    /// flight (AioRings).
    public var aioRings: [AioRing]?

    public struct AioRing: Codable, Equatable {
        /// The ring's address (the context's id, what io_submit names) and length.
        public var start: UInt64
        public var length: UInt64
        /// The kernel's index of the context in the process (the ring header's id).
        public var index: UInt32
        /// What io_setup was asked for; the ring's capacity (its header's nr), head and tail.
        public var requested: UInt32
        public var capacity: UInt32
        public var head: UInt32
        public var tail: UInt32
        /// The ring's bytes after its header: the events (those from head to tail not reaped yet).
        public var events: Data
    }
    /// Where the process sits in PROG's tree (nil for PROG in checkpoints of one process).
    public var links: TreeLinks?
    /// PROG's image only: every other process of its tree, parents before their children (the
    /// order they are restored in). Their pages are the checkpoint's runs tagged with their pid
    /// (TreePages); nil or empty: PROG alone.
    public var members: [ProcessImage]?
    /// Children that have exited and whose status the process has not collected yet: made again
    /// at restore (forked with their pid, then exiting with their status) for it to collect.
    public var zombies: [Zombie]?

    public struct Zombie: Codable, Equatable {
        /// Its pid in PROG's namespace, its name, and what wait() will say (a wait status).
        public var pid: Int32
        public var command: String
        public var status: Int32
        /// The signal its parent gets when it exits (SIGCHLD for a fork).
        public var exitSignal: Int32
    }

    /// PROG's image only: the memory objects of the tree that no path maps again (SharedObjects),
    /// their pages saved with the checkpoint; mappings name them by `VMA.object`.
    public var sharedObjects: [SharedObject]?

    /// PROG's image only: the regular files the tree held open (OpenFiles), their content saved with
    /// the checkpoint; a restore puts back each one that changed or went since.
    public var openFiles: [OpenFile]?

    /// A regular file a process of the tree held open: its content is saved as pages tagged
    /// TreePages.objectAddress(id, offset) (ids after the shared objects').
    public struct OpenFile: Codable, Equatable {
        public var id: Int
        public var path: String
        public var size: UInt64
        /// Permission bits, owner and group (a file that went is made again with them).
        public var mode: UInt32
        public var uid: UInt32
        public var gid: UInt32
    }

    /// A shared memory object or an unlinked file that mappings of the tree map: its content is
    /// saved (tagged pages, TreePages.objectAddress) and it is made again at restore.
    public struct SharedObject: Codable, Equatable {
        public enum Kind: String, Codable {
            case anonymous     // MAP_SHARED|MAP_ANONYMOUS (maps shows "/dev/zero (deleted)")
            case memfd         // memfd_create ("/memfd:NAME (deleted)")
            case unlinkedFile  // a file unlinked while mapped (e.g. a POSIX semaphore's /dev/shm/sem.*)
            case sysv          // a SysV shared memory segment ("/SYSV<key> (deleted)")
            case unlinkedDirectory  // a directory removed while a descriptor holds it (empty: no content)
        }
        public var id: Int
        public var kind: Kind
        /// The path maps shows, without " (deleted)".
        public var name: String
        public var size: UInt64
        /// Permission bits (an unlinked file is made again with them), memfd seals (F_GET_SEALS).
        public var mode: UInt32
        public var seals: Int32?
        /// SysV segments: the key, the id (made again with the same one), and whether it was marked
        /// for removal (IPC_RMID: it goes when the last process detaches it).
        public var key: Int32?
        public var shmid: Int32?
        public var removed: Bool?
    }

    /// A process's place in the tree, ids in PROG's PID namespace.
    public struct TreeLinks: Codable, Equatable {
        public var parent: Int32
        /// 0: PROG's group (which came from outside its namespace).
        public var processGroup: Int32
        /// 0: PROG's session; else its leader's pid (the process itself after a setsid).
        public var session: Int32
        /// /proc/PID/stat's start time (clock ticks after boot): one incarnation of a pid.
        public var startTime: UInt64
        /// The signal its parent gets when it exits (stat's exit_signal; SIGCHLD for a fork).
        public var exitSignal: Int32
        /// A session leader whose controlling terminal is a pty of the tree: its index, and the
        /// terminal's foreground process group (a pid in PROG's namespace).
        public var terminal: Int32? = nil
        public var foregroundGroup: Int32? = nil
        /// The first epoch of the chain that holds this incarnation: older layers hold another
        /// process's pages under the same pid, if any.
        public var since: UInt64
    }

    /// What prctl, personality and /proc/PID/oom_score_adj set for the whole process (the
    /// per-thread ones are in ThreadState).
    public struct Attributes: Codable, Equatable {
        public var personality: UInt64
        public var oomScoreAdj: Int32
        public var childSubreaper: Bool
        public var dumpable: Int32
        /// The audit login uid (/proc/PID/loginuid; 4294967295: not set), nil in older checkpoints.
        public var loginuid: UInt32? = nil
    }

    /// The mm fields prctl(PR_SET_MM_MAP) restores.
    public struct MMFields: Codable, Equatable {
        public var startCode: UInt64, endCode: UInt64, startData: UInt64, endData: UInt64
        public var startBrk: UInt64, brk: UInt64, startStack: UInt64
        public var argStart: UInt64, argEnd: UInt64, envStart: UInt64, envEnd: UInt64
    }

    public struct VMA: Codable, Equatable {
        public enum Kind: String, Codable { case anonymous, file, heap, stack, vdso, vvar, vsyscall, shared }
        public var start: UInt64
        public var end: UInt64
        public var prot: UInt32       // PROT_READ 1 | PROT_WRITE 2 | PROT_EXEC 4
        public var kind: Kind
        public var path: String?
        public var offset: UInt64
        /// For file mappings: the file's identity when the checkpoint was taken (checked at restore).
        public var inode: UInt64?
        public var device: String?
        public var size: UInt64?
        public var mtime: Double?
        /// smaps' VmFlags when the checkpoint was taken (nil in checkpoints written before they were
        /// kept): the advice and MAP_NORESERVE come back (MappingFlags), "mw" reopens a shared
        /// file for writing.
        public var vmFlags: [String]?
        /// Guard regions inside the mapping (VmFlags "gu"), as [start, end) ranges; installed again.
        public var guardRanges: [[UInt64]]?
        /// The shared object (SharedObject.id) this mapping maps, where no path can map it again.
        public var object: Int?
    }

    public struct ThreadState: Codable, Equatable {
        /// The thread id in PROG's PID namespace (what the program itself knows).
        public var tid: Int32
        public var registers: [UInt64]   // user_regs_struct, field by field
        public var xstate: Data          // the XSAVE area (NT_X86_XSTATE)
        public var sigmask: UInt64
        public var rseq: RSeq?
        public var tidAddress: UInt64
        public var robustList: UInt64
        public var robustListLength: UInt64
        public var sigaltstack: [UInt64]? // ss_sp, ss_flags, ss_size
        /// The thread's name (/proc/TID/comm, PR_SET_NAME) and its own prctl settings.
        public var name: String?
        public var parentDeathSignal: Int32?
        public var timerSlackNanos: UInt64?
        public var noNewPrivileges: Bool?
        /// Signals pending for this thread only: raw siginfo records (128 bytes), oldest first.
        public var pendingSignals: [Data]?
    }

    public struct RSeq: Codable, Equatable {
        public var address: UInt64
        public var size: UInt32
        public var signature: UInt32
    }

    public struct SigAction: Codable, Equatable {
        public var signal: Int32
        public var handler: UInt64
        public var flags: UInt64
        public var restorer: UInt64
        public var mask: UInt64
    }

    public struct FileDescriptor: Codable, Equatable {
        public enum Kind: String, Codable {
            case regular, directory, path, tty, pipe, devnull, devzero, devurandom, eventfd, timerfd, signalfd, epoll, unixSocket, inetSocket, other
            /// A named pipe (FIFO), its path as it was; a memfd; a file or directory unlinked while
            /// open (a "ghost", its content saved as a shared object's).
            case fifo, memfd, unlinked
            /// A pidfd of a process (or thread) of the tree; an inotify instance.
            case pidfd, inotify
            /// A pseudo-terminal's master (/dev/ptmx) and a slave whose master the tree holds (a
            /// slave whose master is outside is a `tty`).
            case ptyMaster, ptySlave
        }
        public var fd: Int32
        public var kind: Kind
        public var path: String
        public var flags: UInt32          // as /proc/PID/fdinfo shows them: O_CLOEXEC stands for FD_CLOEXEC
        public var offset: Int64
        /// Pipes and FIFOs: the pipe's inode (fds on one pipe share it) and, on one fd of each pipe,
        /// what it held.
        public var pipeInode: UInt64?
        public var pipeData: Data?
        /// Pipes with both ends in the program, and FIFOs: the pipe's capacity (F_GETPIPE_SZ).
        public var pipeSize: Int?
        /// The lowest fd that is the same open file description as this one (a dup), if another is.
        public var dupOf: Int32?
        /// Locks this open file description holds (fdinfo's `lock:` lines), taken again at restore.
        public var locks: [FileLock]?
        /// The same open file description as fd [1] of process [0] (a pid in PROG's namespace),
        /// restored before this one (a descriptor a fork shared): taken from there at restore.
        public var sharedWith: [Int32]?
        /// Pipes: both ends are within PROG's tree (nil in checkpoints of one process: then
        /// both ends within the process).
        public var pipeInTree: Bool?
        /// Pipes: the other end is closed everywhere (a read end nobody can write to, or a write
        /// end nobody reads); restored as a pipe whose other end is closed.
        public var pipeOtherEndClosed: Bool?
        /// The signal F_SETSIG set (sent for a lease's break, or for O_ASYNC), where one was asked for.
        public var signal: Int32?
        /// Event descriptors (EventDescriptors), each kind its own: an eventfd's counter, a
        /// timerfd's setting, a signalfd's mask, an epoll set's entries.
        public var eventfd: EventCounter?
        public var timerfd: TimerSetting?
        public var signalMask: UInt64?
        public var epoll: [EpollEntry]?
        /// A UNIX socket (UnixSocketDescriptors).
        public var unixSocket: UnixSocketState?
        /// A TCP or UDP socket (InetSocketDescriptors).
        public var inetSocket: InetSocketState?
        /// A memfd or an unlinked file: the shared object (`sharedObjects`) it is a descriptor of,
        /// reopened from it at restore with its flags and offset.
        public var object: Int?
        /// A pidfd: the pid (or, with PIDFD_THREAD, the tid) in PROG's namespace it refers to.
        public var pidfdTarget: Int32?
        /// An inotify instance's watches, by wd.
        public var inotify: [InotifyWatch]?
        /// A pty's master or slave: its index (/dev/pts/N); on the master's first holder, its state.
        public var ptyIndex: Int32?
        public var pty: PtyState?
    }

    /// A pseudo-terminal pair as its master's first holder saw it.
    public struct PtyState: Codable, Equatable {
        public var index: Int32
        /// The slave's struct termios2 (TCGETS2; nil while it is locked, never opened).
        public var termios: Data?
        /// TIOCGWINSZ: rows, columns, x and y pixels.
        public var window: [UInt16]
        /// Locked (TIOCSPTLCK: the slave cannot be opened yet); packet mode (TIOCPKT).
        public var locked: Bool
        public var packetMode: Bool
    }

    /// One inotify watch: its descriptor number, its mask (IN_MODIFY, IN_ONESHOT...) and the path
    /// of what it watches.
    public struct InotifyWatch: Codable, Equatable {
        public var wd: Int32
        public var mask: UInt32
        public var path: String
    }

    /// A TCP socket that listens or is not connected, or a UDP socket with nothing queued.
    public struct InetSocketState: Codable, Equatable {
        /// AF_INET 2 or AF_INET6 10; SOCK_STREAM 1 or SOCK_DGRAM 2; IPPROTO_TCP 6 or IPPROTO_UDP 17.
        public var family: Int32
        public var type: Int32
        public var proto: Int32
        /// The bound address (a sockaddr_in or sockaddr_in6's bytes), if bound; a UDP socket's peer, if connected.
        public var address: Data?
        public var peer: Data?
        /// Listening, with this backlog.
        public var backlog: Int32?
        /// [level, name, value] of each integer option read (SO_REUSEADDR, TCP_NODELAY, IPV6_V6ONLY...).
        public var options: [[Int32]]
        /// An established TCP connection (from `address` to `peer`), as TCP_REPAIR reads it.
        public var connection: TcpRepairState?
    }

    /// A UNIX socket: one end of a connected pair both of whose ends are in the tree, a listening
    /// socket, or an unconnected one.
    public struct UnixSocketState: Codable, Equatable {
        public var inode: UInt64
        /// SOCK_STREAM 1, SOCK_DGRAM 2, SOCK_SEQPACKET 5.
        public var type: Int32
        /// Connected: the other end's inode.
        public var peer: UInt64?
        /// A datagram socket connected to a named one (the tree's, or outside it: a syslog's
        /// /dev/log): connected to that name again once the whole tree's sockets exist.
        public var connectTo: Data?
        /// Connected to an end that has closed (a stream or seqpacket socket): made again as a pair
        /// whose other end is closed once this one's queue is refilled.
        public var peerClosed: Bool?
        /// The address it is bound to (sun_path's bytes; a leading 0: an abstract name).
        public var name: Data?
        /// A name that is a path: its directory's mode, owner and group (made again at restore if it
        /// went, as a program's temporary directory does once it is done).
        public var directory: [UInt32]?
        /// Listening, with this backlog.
        public var backlog: Int32?
        /// RCV_SHUTDOWN 1, SEND_SHUTDOWN 2.
        public var shutdown: UInt8
        /// What waits to be read on this end, oldest first (a stream's bytes as one message,
        /// unless descriptors ride in it: then in the runs they ride with).
        public var queue: [Data]?
        /// The descriptors each message of `queue` carries (SCM_RIGHTS), where any does.
        public var queueRights: [[InFlightDescriptor]]?
        /// SO_SNDBUF and SO_RCVBUF as getsockopt gives them (twice what was set), SO_PASSCRED, SO_PEEK_OFF (where not -1).
        public var sendBuffer: Int32
        public var receiveBuffer: Int32
        public var passCredentials: Bool?
        public var peekOffset: Int32?
        /// (Never saved: such a socket refuses the checkpoint.) Connected to a listener, this one's
        /// inode, that has not accepted it yet.
        public var waitingOn: UInt64?
    }

    /// A descriptor in flight (SCM_RIGHTS in a queued message): the same open file description as
    /// fd `fd` of process `pid` (in PROG's namespace) of the tree, or, where no process holds it
    /// any more, a regular file, reopened at `path` with its flags at its offset.
    public struct InFlightDescriptor: Codable, Equatable {
        public var pid: Int32?
        public var fd: Int32?
        public var path: String?
        public var flags: UInt32?
        public var offset: Int64?
    }

    public struct EventCounter: Codable, Equatable {
        public var count: UInt64
        public var semaphore: Bool
    }

    /// A timerfd: its clock, the expirations not read yet, timerfd_settime's flags (TFD_TIMER_ABSTIME,
    /// TFD_TIMER_CANCEL_ON_SET) and the time left and interval as [seconds, nanoseconds].
    public struct TimerSetting: Codable, Equatable {
        public var clock: Int32
        public var ticks: UInt64
        public var flags: Int32
        public var value: [Int64]
        public var interval: [Int64]
    }

    /// One file an epoll set watches: the process's fd that is it, the events asked for (with
    /// EPOLLET, EPOLLONESHOT...; a one-shot entry that fired keeps only those flags) and the data.
    public struct EpollEntry: Codable, Equatable {
        public var fd: Int32
        public var events: UInt32
        public var data: UInt64
    }

    /// A flock, an open-file-description lock or a POSIX record lock.
    public struct FileLock: Codable, Equatable {
        public enum Kind: String, Codable { case flock = "FLOCK", openFileDescription = "OFDLCK", posix = "POSIX", lease = "LEASE" }
        public var kind: Kind
        public var write: Bool
        /// Byte range; `end` nil: to the end of the file, however long.
        public var start: UInt64
        public var end: UInt64?

        /// Parses fdinfo's "lock:\t1: FLOCK  ADVISORY  WRITE 812 08:01:1234 0 EOF" (a lease:
        /// "LEASE  ACTIVE  READ ..."). Throws a refusal for what has no exact restore (a lease being
        /// broken, delegations, mandatory locks).
        static func parse(_ line: Substring, fd: Int32) throws -> FileLock? {
            let f = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            // lock:, id:, kind, ADVISORY, READ|WRITE, pid, dev:inode, start, end|EOF
            guard f.count >= 9, f[0] == "lock:" else { return nil }
            guard let kind = Kind(rawValue: String(f[2])) else {
                throw CheckpointRefused(description: "fd \(fd) holds a \(String(f[2]).lowercased()), which cannot be checkpointed yet")
            }
            if kind == .lease {
                guard f[3] == "ACTIVE" else { throw CheckpointRefused(description: "fd \(fd) holds a lease being broken (\(f[3])), which cannot be checkpointed") }
                guard f[4] == "READ" || f[4] == "WRITE" else { return nil }
                return FileLock(kind: kind, write: f[4] == "WRITE", start: 0, end: nil)
            }
            guard f[3] == "ADVISORY" else { throw CheckpointRefused(description: "fd \(fd) holds a mandatory lock, which cannot be checkpointed") }
            guard f[4] == "READ" || f[4] == "WRITE", let start = UInt64(f[7]) else { return nil }
            return FileLock(kind: kind, write: f[4] == "WRITE", start: start, end: f[8] == "EOF" ? nil : UInt64(f[8]))
        }
    }

    public struct RLimit: Codable, Equatable {
        public var resource: Int32
        public var soft: UInt64
        public var hard: UInt64
    }
}

extension Registers {
    /// The registers as 27 words, in user_regs_struct order.
    var words: [UInt64] {
        var copy = self
        return withUnsafeBytes(of: &copy) { Array($0.bindMemory(to: UInt64.self)) }
    }

    init(words: [UInt64]) {
        self.init()
        withUnsafeMutableBytes(of: &self) { raw in
            let w = raw.bindMemory(to: UInt64.self)
            for i in 0..<min(w.count, words.count) { w[i] = words[i] }
        }
    }
}

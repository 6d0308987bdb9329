import Glibc
import LegatoSystem

/// Why a checkpoint's pages or context could not be captured: the checkpoint aborts, PROG runs on.
/// (What PROG holds that cannot be restored exactly is a CheckpointRefused instead.)
public enum CaptureError: Error, CustomStringConvertible, Equatable {
    case pageWithoutNode(address: UInt64)
    case unreadableProcFile(String)
    case snapshotNotFound(pid: pid_t, namespacePID: Int64, parent: pid_t)
    case snapshotNotTraced(pid_t)
    case snapshotDied(pid_t)
    case nodeLostPages(node: String, count: Int)

    public var description: String {
        switch self {
        case .pageWithoutNode(let a): return "page 0x\(String(a, radix: 16)) has no memory node"
        case .unreadableProcFile(let path): return "cannot read \(path)"
        case .snapshotNotFound(let pid, let ns, let parent):
            return "the snapshot of pid \(pid) (pid \(ns) in its namespace) is not among pid \(parent)'s children"
        case .snapshotNotTraced(let pid): return "the snapshot pid \(pid) is not traced"
        case .snapshotDied(let pid): return "the snapshot pid \(pid) died at birth"
        case .nodeLostPages(let node, let n): return "memory node \(node) lost \(n) of PROG's pages"
        }
    }
}

/// Why a checkpoint could not be found, read or committed in its store.
public enum CheckpointStoreError: Error, CustomStringConvertible, Equatable {
    case noSuchCheckpoint(name: String, epoch: UInt64, place: String)
    case parentNotCommitted(name: String, epoch: UInt64, parent: UInt64)
    case contextMissing(name: String, epoch: UInt64, String)
    case unsupportedVersion(epoch: UInt64, version: Int)
    case parentChainLoops(name: String, epoch: UInt64)
    case badParticipant(name: String, epoch: UInt64, log: String)
    case segmentWithoutReplica(writer: UInt64, segment: UInt64)
    case entryUnreadable(writer: UInt64, segment: UInt64, index: UInt32, String)
    case committedBeforePrepared(name: String, epoch: UInt64)
    case pagesNeverArrived(address: UInt64, epoch: UInt64, why: String?)
    case retainedPagesMissing(node: String, found: Int, pages: Int, key: UInt64, checkpoint: UInt32)

    public var description: String {
        switch self {
        case .noSuchCheckpoint(let name, let e, let place): return "no committed checkpoint \(e) of \(name) \(place)"
        case .parentNotCommitted(let name, let e, let p): return "checkpoint \(e) of \(name) builds on \(p), which is not committed"
        case .contextMissing(let name, let e, let why): return "checkpoint \(e) of \(name): \(why)"
        case .unsupportedVersion(let e, let v): return "checkpoint \(e) has format version \(v)"
        case .parentChainLoops(let name, let e): return "checkpoint \(e) of \(name): its parent chain loops"
        case .badParticipant(let name, let e, let log): return "checkpoint \(e) of \(name) names participant log \(log)"
        case .segmentWithoutReplica(let w, let s): return "segment \(s) of log \(String(w, radix: 16)) has no replica"
        case .entryUnreadable(let w, let s, let i, let why): return "entry \(i) of segment \(s) of log \(String(w, radix: 16)) is unreadable: \(why)"
        case .committedBeforePrepared(let name, let e): return "checkpoint \(e) of \(name) committed before it was prepared"
        case .pagesNeverArrived(let a, let e, let why):
            return "pages at 0x\(String(a, radix: 16)) of epoch \(e) never arrived from the log nodes" + (why.map { ": \($0)" } ?? "")
        case .retainedPagesMissing(let node, let found, let n, let key, let c):
            return "memory node \(node) retains \(found) of the \(n) pages from key \(key) of checkpoint \(c)"
        }
    }
}

/// Why a restore stopped before PROG ran on (nothing of the checkpoint changes).
public enum RestoreError: Error, CustomStringConvertible, Equatable {
    case mainThreadMissing(name: String, epoch: UInt64, pid: Int32)
    case pidMismatch(name: String, epoch: UInt64, checkpointed: Int32, restored: Int32)
    case sharedAnonymous(name: String, epoch: UInt64, range: String)
    case sharedObjectMissing(id: Int)
    case timerNotRestored(name: String, id: Int32, got: Int32)
    case segmentNotRestored(name: String, shmid: Int32, got: Int32)
    case loginuidNotRestored(uid: UInt32, current: UInt32, errno: Int32)
    case fileGone(name: String, path: String)
    case fileChanged(name: String, path: String, epoch: UInt64)
    case openFileReplaced(name: String, path: String)
    case noScratchRoom
    case argumentsTooLarge(Int)
    case threadNotRestored(name: String, tid: Int32, String)
    case processNotRestored(name: String, pid: Int32, String)
    case descriptorLeadsOutside(name: String, epoch: UInt64, fd: Int32, path: String)
    case descriptorUnrestorable(name: String, epoch: UInt64, fd: Int32, path: String)
    case pageMissing(offset: Int, layer: UInt64)
    case lockTaken(name: String, lock: String, errno: Int32)
    case ptyTaken(index: Int32, got: Int32)

    public var description: String {
        switch self {
        case .mainThreadMissing(let name, let e, let pid):
            return "checkpoint \(e) of \(name) has no thread \(pid) (its main thread had exited)"
        case .pidMismatch(let name, let e, let want, let got):
            return "checkpoint \(e) of \(name) was PID \(want) in its namespace; the restore got PID \(got)"
        case .sharedAnonymous(let name, let e, let range): return "checkpoint \(e) of \(name) has a shared anonymous mapping at \(range); not supported"
        case .sharedObjectMissing(let id): return "a mapping names shared object \(id), which the checkpoint does not hold"
        case .loginuidNotRestored(let uid, let current, let e):
            return "the checkpoint's audit login uid is \(uid), this session's \(current), and it cannot be set here: \(String(cString: strerror(e))) (it needs CAP_AUDIT_CONTROL, and no audit=loginuid_immutable)"
        case .segmentNotRestored(let name, let shmid, let got):
            switch got {
            case -1: return "SysV shared memory \(shmid) (\(name)) could not be attached where it was"
            case -2: return "SysV shared memory \(shmid) (\(name)): a segment with its key or id exists and is another one, or attached"
            default: return "SysV shared memory \(shmid) (\(name)) came back as \(got) (another segment has the id)"
            }
        case .timerNotRestored(let name, let id, let got):
            return "restoring \(name): POSIX timer \(id) came back as timer \(got) (this kernel does not take a timer's id: PR_TIMER_CREATE_RESTORE_IDS)"
        case .fileGone(let name, let path): return "cannot restore \(name): \(path) is gone"
        case .fileChanged(let name, let path, let e): return "cannot restore \(name): \(path) changed since checkpoint \(e)"
        case .openFileReplaced(let name, let path): return "cannot restore \(name): \(path), a regular file it had open, is now something else"
        case .noScratchRoom: return "no room for the injection scratch area"
        case .argumentsTooLarge(let n): return "injection arguments of \(n) bytes do not fit the scratch area"
        case .threadNotRestored(let name, let tid, let why): return "restoring \(name): thread \(tid) \(why)"
        case .processNotRestored(let name, let pid, let why): return "restoring \(name): process \(pid) \(why)"
        case .descriptorLeadsOutside(let name, let e, let fd, let path):
            return "checkpoint \(e) of \(name): fd \(fd) (\(path)) leads outside the program"
        case .descriptorUnrestorable(let name, let e, let fd, let path): return "checkpoint \(e) of \(name): fd \(fd) (\(path)) cannot be restored"
        case .pageMissing(let offset, let layer): return "the restored page at \(offset) of layer \(layer) is missing"
        case .lockTaken(let name, let lock, let e):
            return "cannot restore \(name): its \(lock) cannot be taken again (\(Errno.name(e)): another process holds it now)"
        case .ptyTaken(let index, let got):
            return "cannot make the pty /dev/pts/\(index) again: another program holds that index (/dev/ptmx gave /dev/pts/\(got)); restore where it is free"
        }
    }
}

import Glibc

/// A failed system call, with what was attempted on what: `UFFDIO_REGISTER [0x7f..+64K) in pid 812: EINVAL`.
public struct SystemError: Error, CustomStringConvertible, Equatable {
    public let operation: String
    public let code: Int32

    public init(_ operation: String, code: Int32) {
        self.operation = operation
        self.code = code
    }

    /// Builds the error from the current `errno`.
    public static func fromErrno(_ operation: String) -> SystemError {
        SystemError(operation, code: errno)
    }

    public var description: String { "\(operation): \(Errno.name(code))" }

    public var isNoSuchProcess: Bool { code == ESRCH }
}

/// Names of errno values, as the kernel headers spell them.
public enum Errno {
    public static func name(_ code: Int32) -> String {
        switch code {
        case EPERM: return "EPERM"
        case ENOENT: return "ENOENT"
        case ESRCH: return "ESRCH"
        case EINTR: return "EINTR"
        case EIO: return "EIO"
        case EBADF: return "EBADF"
        case ECHILD: return "ECHILD"
        case EAGAIN: return "EAGAIN"
        case ENOMEM: return "ENOMEM"
        case EACCES: return "EACCES"
        case EFAULT: return "EFAULT"
        case EBUSY: return "EBUSY"
        case EEXIST: return "EEXIST"
        case EINVAL: return "EINVAL"
        case ENOSPC: return "ENOSPC"
        case EPIPE: return "EPIPE"
        case ENOSYS: return "ENOSYS"
        case ECONNREFUSED: return "ECONNREFUSED"
        case ECONNRESET: return "ECONNRESET"
        case ETIMEDOUT: return "ETIMEDOUT"
        case EADDRINUSE: return "EADDRINUSE"
        case ENOTCONN: return "ENOTCONN"
        case EMSGSIZE: return "EMSGSIZE"
        case ENOTTY: return "ENOTTY"
        case EOPNOTSUPP: return "EOPNOTSUPP"
        case EROFS: return "EROFS"
        case EDQUOT: return "EDQUOT"
        default:
            return "errno \(code) (\(String(cString: strerror(code))))"
        }
    }
}

/// Formats an address range the way error messages print it: `[0x7f12..0x7f13)`.
public func describeRange(_ start: UInt64, _ length: UInt64) -> String {
    "[0x\(String(start, radix: 16))+\(formatBytes(length)))"
}

/// `4096` → `4K`, `67108864` → `64M`; exact multiples only, else bytes.
public func formatBytes(_ bytes: UInt64) -> String {
    let units: [(UInt64, String)] = [(1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")]
    for (size, suffix) in units where bytes >= size && bytes % size == 0 {
        return "\(bytes / size)\(suffix)"
    }
    return "\(bytes)"
}

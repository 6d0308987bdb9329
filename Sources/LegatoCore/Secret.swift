import Foundation
import LegatoSystem

/// The cluster secret every peer proves knowledge of (never sent on the wire).
public struct ClusterSecret: Sendable {
    public let bytes: [UInt8]

    public init(bytes: [UInt8]) { self.bytes = bytes }

    public static func random() -> ClusterSecret { ClusterSecret(bytes: Sys.randomBytes(32)) }

    /// Reads a secret file (any bytes; surrounding whitespace ignored). Refuses empty files.
    public static func load(path: String) throws -> ClusterSecret {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SecretError.unreadable(path)
        }
        var bytes = [UInt8](data)
        while let l = bytes.last, l == 10 || l == 13 || l == 32 || l == 9 { bytes.removeLast() }
        guard bytes.count >= 8 else { throw SecretError.tooShort(path, bytes: bytes.count) }
        return ClusterSecret(bytes: bytes)
    }

    /// The default secret of this machine's user: `<state dir>/cluster.secret`, created (0600) on first use.
    public static func loadOrCreateDefault(stateDirectory: String) throws -> ClusterSecret {
        let path = stateDirectory + "/cluster.secret"
        if FileManager.default.fileExists(atPath: path) { return try load(path: path) }
        try FileManager.default.createDirectory(atPath: stateDirectory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let hex = Sys.randomBytes(32).map { String(format: "%02x", $0) }.joined()
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        if fd < 0 {
            if errno == EEXIST { return try load(path: path) }
            throw SecretError.cannotCreate(path, Errno.name(errno))
        }
        defer { close(fd) }
        let line = hex + "\n"
        _ = line.withCString { write(fd, $0, strlen($0)) }
        return try load(path: path)
    }
}

/// The per-user state directory: `$XDG_STATE_HOME/legato`, else `~/.local/state/legato`.
public func defaultStateDirectory() -> String {
    let env = ProcessInfo.processInfo.environment
    if let x = env["XDG_STATE_HOME"], !x.isEmpty { return x + "/legato" }
    let home = env["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
    return home + "/.local/state/legato"
}

/// An error for people: says what was attempted, on what, and why.
/// Why a cluster secret could not be had.
public enum SecretError: Error, CustomStringConvertible, Equatable {
    case unreadable(String)
    case tooShort(String, bytes: Int)
    case cannotCreate(String, String)
    case notOnDescriptor(Int32, bytes: Int)

    public var description: String {
        switch self {
        case .unreadable(let path): return "cannot read secret file \(path)"
        case .tooShort(let path, let n): return "secret file \(path) holds \(n) bytes; it needs at least 8"
        case .cannotCreate(let path, let why): return "cannot create secret file \(path): \(why)"
        case .notOnDescriptor(let fd, let n): return "no cluster secret on fd \(fd) (\(n) bytes; at least 8 needed)"
        }
    }
}

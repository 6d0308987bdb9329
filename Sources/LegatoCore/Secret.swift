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
            throw LegatoError("cannot read secret file \(path)")
        }
        var bytes = [UInt8](data)
        while let l = bytes.last, l == 10 || l == 13 || l == 32 || l == 9 { bytes.removeLast() }
        guard bytes.count >= 8 else { throw LegatoError("secret file \(path) holds \(bytes.count) bytes; it needs at least 8") }
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
            throw LegatoError("cannot create secret file \(path): \(Errno.name(errno))")
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
public struct LegatoError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

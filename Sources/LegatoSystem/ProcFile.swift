import Glibc

/// Reads a /proc file whole. (/proc files report size 0, and a large one — the maps of a process
/// with hundreds of mappings — must be read until EOF, not in one buffer sized from its length.)
public enum ProcFile {
    public static func bytes(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 { return nil }
        defer { close(fd) }
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = Sys.retryingEINTR { read(fd, &buf, buf.count) }
            if n > 0 { out += buf[0..<n]; continue }
            return n < 0 ? nil : out
        }
    }

    public static func text(_ path: String) -> String? {
        bytes(path).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The children of every thread of process `pid` (/proc/PID/task/*/children), as pids the
    /// reader's /proc sees.
    public static func children(of pid: pid_t) -> [pid_t] {
        guard let dir = opendir("/proc/\(pid)/task") else { return [] }
        defer { closedir(dir) }
        var out: [pid_t] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard let tid = pid_t(name) else { continue }
            out += (text("/proc/\(pid)/task/\(tid)/children") ?? "").split(whereSeparator: { $0 == " " || $0 == "\n" }).compactMap { pid_t($0) }
        }
        return out
    }

    /// Writes `text` to a /proc (or /sys) file in one write: "value\n" to a sysctl, a PID's setting.
    public static func write(_ path: String, _ text: String) throws {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError.fromErrno("open \(path)") }
        defer { close(fd) }
        let bytes = Array(text.utf8)
        try Sys.writeFully(fd, bytes, count: bytes.count, "write \(text.split(separator: "\n").first ?? "") to \(path)")
    }

    /// A field of /proc/PID/status (PID a number or "self"), its value trimmed: ("812", "Umask") -> "0022".
    public static func statusField(_ pid: String, _ name: String) -> String? {
        for line in (text("/proc/\(pid)/status") ?? "").split(separator: "\n") where line.hasPrefix(name + ":") {
            let value = line.dropFirst(name.count + 1).drop { $0 == " " || $0 == "\t" }
            return String(value.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
        }
        return nil
    }

    /// /proc/PID/stat's fields after "(comm)": [0] is field 3 (state), [1] field 4 (ppid)...
    public static func statFields(_ pid: Int32) -> [Substring]? {
        guard let stat = text("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(whereSeparator: { $0 == " " || $0 == "\n" })
    }
}

import Glibc

/// The descriptors above stderr that PROG keeps from what `legato run` inherited, each with what
/// asked for it: `--keep-fd N`, or systemd's socket activation (LISTEN_FDS, for this process's pid).
/// Every other inherited descriptor is closed at PROG's exec.
public struct KeptDescriptors: Equatable, Sendable {
    /// fd -> the flag or protocol that kept it, for messages ("--keep-fd 7", "LISTEN_FDS").
    public private(set) var reasons: [Int32: String] = [:]
    /// LISTEN_FDS was honoured: PROG's LISTEN_PID is set to PROG's own pid.
    public private(set) var socketActivation = false

    public init() {}

    /// `--keep-fd` values, and the descriptors socket activation passes if LISTEN_PID names `pid`.
    public init(keep: [Int32], environment: [String: String], pid: pid_t = getpid()) {
        for fd in keep where fd > 2 { reasons[fd] = "--keep-fd \(fd)" }
        if let n = environment["LISTEN_FDS"].flatMap({ Int32($0) }), n > 0, n <= 64,
           environment["LISTEN_PID"].flatMap({ pid_t($0) }) == pid {
            for fd in 3..<(3 + n) where reasons[fd] == nil { reasons[fd] = "LISTEN_FDS" }
            socketActivation = true
        }
    }

    /// What kept `fd`, if it was kept.
    public func reason(_ fd: Int32) -> String? { reasons[fd] }

    /// "fd 5 is WHAT", with the flag that kept it if PROG inherited it from `legato run`.
    public func describe(_ fd: Int32, _ what: String) -> String {
        "fd \(fd) is \(what)" + (reason(fd).map { ", kept open by \($0)" } ?? "")
    }
}

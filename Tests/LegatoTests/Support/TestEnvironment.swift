import Foundation
import Glibc
import LegatoSystem

/// Where things are, and what this machine can do.
enum TestEnvironment {
    /// The directory of the built products (the test binary sits beside `legato`).
    static let binDirectory: String = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = (exe as NSString).deletingLastPathComponent
        // .build/debug/LegatoPackageTests.xctest when XCTest bundles are files
        while !FileManager.default.isExecutableFile(atPath: dir + "/legato") && dir.count > 1 {
            dir = (dir as NSString).deletingLastPathComponent
        }
        return dir
    }()

    static var legato: String { binDirectory + "/legato" }

    static let repositoryRoot: String = {
        var dir = (#filePath as NSString).deletingLastPathComponent
        while !FileManager.default.fileExists(atPath: dir + "/Package.swift") && dir.count > 1 {
            dir = (dir as NSString).deletingLastPathComponent
        }
        return dir
    }()

    static var isCI: Bool { ProcessInfo.processInfo.environment["CI"] == "true" }

    /// ptrace, userfaultfd and seccomp as the agent uses them: root, /dev/userfaultfd or the syscall.
    /// Returns why not, or nil. Where CI=true a missing capability is a failure, not a skip.
    static let missingCapability: String? = {
        if geteuid() != 0 { return "the agent's tests need root (ptrace of a seccomp-filtered child, userfaultfd of another process)" }
        if access("/dev/userfaultfd", F_OK) != 0 && access("/proc/sys/vm/unprivileged_userfaultfd", F_OK) != 0 {
            return "this kernel has no userfaultfd"
        }
        return nil
    }()

    /// Directories left by earlier test processes that are gone (a run's files stay for inspection
    /// until the next run; without this they pile up at several hundred MB a run).
    private static let removeStaleRuns: Void = {
        let tmp = NSTemporaryDirectory()
        for name in (try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? [] where name.hasPrefix("legato-tests-") {
            guard let pid = Int32(name.dropFirst("legato-tests-".count)), pid != getpid(), kill(pid, 0) != 0 else { continue }
            try? FileManager.default.removeItem(atPath: tmp + name)
        }
    }()

    /// A fresh private directory for one test.
    static func temporaryDirectory(_ name: String) -> String {
        _ = removeStaleRuns
        let base = NSTemporaryDirectory() + "legato-tests-\(getpid())"
        let dir = base + "/" + name + "-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }
}

/// Checks the machine can run agent tests; throws (fails the test) where it can't, so nothing is silently skipped.
func requireAgentCapabilities() throws {
    if let why = TestEnvironment.missingCapability {
        throw TestFailure("cannot run agent tests: \(why)")
    }
}

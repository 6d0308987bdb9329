import Foundation
import Glibc
import LegatoSystem
import LegatoTestSupport

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

    /// A fresh private directory for one test.
    static func temporaryDirectory(_ name: String) -> String { TestDirectory.make(name) }
}

/// Checks the machine can run agent tests; throws (fails the test) where it can't, so nothing is silently skipped.
func requireAgentCapabilities() throws {
    if let why = TestEnvironment.missingCapability {
        throw TestFailure("cannot run agent tests: \(why)")
    }
}

import Foundation
import Glibc

/// Scratch directories for tests: one per test under `$TMPDIR/legato-tests-<pid>`, left for
/// inspection until a later test process removes those of processes that are gone.
public enum TestDirectory {
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
    public static func make(_ name: String) -> String {
        _ = removeStaleRuns
        let base = NSTemporaryDirectory() + "legato-tests-\(getpid())"
        let dir = base + "/" + name + "-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }
}

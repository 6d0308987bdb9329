import Foundation
import Glibc
import LegatoSystem

/// The C workloads under Tools/workloads, compiled once per test run with the system's cc.
enum Workloads {
    private static let lock = Lock()
    private static var built: [String: String] = [:]
    private static let outputDirectory = TestEnvironment.temporaryDirectory("workloads")

    static func path(_ name: String, directory: String = "workloads") throws -> String {
        try lock.withLock {
            if let p = built[name] { return p }
            let source = TestEnvironment.repositoryRoot + "/Tools/\(directory)/\(name).c"
            let output = outputDirectory + "/" + name
            let r = try runCommand(["cc", "-O2", "-pthread", "-Wall", "-o", output, source, "-lm"])
            guard r.status == 0 else { throw TestFailure("cc \(source) failed:\n\(r.stderr)") }
            built[name] = output
            return output
        }
    }

    /// A state program of Tools/state (sets one kind of state up, waits, checks it: PASS or FAIL).
    static func stateProgram(_ name: String) throws -> String { try path(name, directory: "state") }

    static func script(_ name: String) -> String {
        TestEnvironment.repositoryRoot + "/Tools/workloads/\(name)"
    }
}

/// The stats JSON `legato run --stats-json` writes.
struct RunStats {
    let raw: [String: Any]
    init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path),
              let d = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw TestFailure("no stats JSON at \(path)")
        }
        raw = d
    }
    func int(_ key: String) -> Int { (raw[key] as? Int) ?? (raw[key] as? NSNumber)?.intValue ?? -1 }
    var faults: Int { int("faults") }
    var zeroFills: Int { int("zero_fills") }
    var fetchedPages: Int { int("fetched_pages") }
    var storedPages: Int { int("stored_pages") }
    var evictedPages: Int { int("evicted_pages") }
    var prefetchedPages: Int { int("prefetched_pages") }
    var peakResidentBytes: Int { int("peak_resident_bytes") }
    var localBudgetBytes: Int { int("local_budget_bytes") }
    var faultLatency: [String: Double] { (raw["fault_latency_us"] as? [String: Any])?.compactMapValues { ($0 as? NSNumber)?.doubleValue } ?? [:] }
}

import Foundation
import Glibc

/// Hosts on this machine made by `Tools/testbed` (each a network namespace with an address of its
/// own on one bridge), removed again when this goes. One test bed at a time (one bridge).
final class TestBed {
    let dir: String
    private let script = TestEnvironment.repositoryRoot + "/Tools/testbed"
    private var environment: [String: String] { ["LEGATO_TESTBED_DIR": dir + "/state"] }

    init(hosts: [String], dir: String) throws {
        self.dir = dir
        _ = try? runCommand([script, "down"], environment: environment)
        let r = try runCommand([script, "up"] + hosts, environment: environment, timeoutSeconds: 60)
        guard r.status == 0 else { throw TestFailure("Tools/testbed up failed (\(r.status)): \(r.stderr)") }
    }

    deinit { _ = try? runCommand([script, "down"], environment: environment, timeoutSeconds: 60) }

    func address(_ host: String) throws -> String {
        let r = try runCommand([script, "addr", host], environment: environment)
        guard r.status == 0 else { throw TestFailure("Tools/testbed addr \(host): \(r.stderr)") }
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// argv run on `host`.
    func on(_ host: String, _ argv: [String]) -> [String] { ["env", "LEGATO_TESTBED_DIR=\(dir)/state", script, "exec", host] + argv }

    /// A daemon started on `host`, its output in dir/NAME.log; killed with the host or the bed.
    func start(_ host: String, _ argv: [String], name: String) throws -> SpawnedCommand {
        try SpawnedCommand(["sh", "-c", "exec \(on(host, argv).map { "'\($0)'" }.joined(separator: " ")) > '\(dir)/\(name).log' 2>&1"])
    }

    /// Nothing passes between `host` and the others any more (its processes live on, silent).
    func cut(_ host: String) throws {
        let r = try runCommand([script, "cut", host], environment: environment)
        guard r.status == 0 else { throw TestFailure("Tools/testbed cut \(host): \(r.stderr)") }
    }

    /// Every process on `host` killed with kill -9, as when the machine dies.
    func kill(_ host: String) throws {
        let r = try runCommand([script, "kill", host], environment: environment)
        guard r.status == 0 else { throw TestFailure("Tools/testbed kill \(host): \(r.stderr)") }
    }
}

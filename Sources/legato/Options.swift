import ArgumentParser
import LegatoCore

extension ByteSize: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
}

extension Endpoint: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
}

/// Options every command that talks to a cluster shares.
struct SecretOptions: ParsableArguments {
    @Option(name: .customLong("secret-file"), help: "File holding the cluster secret (default: <state dir>/cluster.secret, created on first use).")
    var secretFile: String?

    func load() throws -> ClusterSecret {
        if let f = secretFile { return try ClusterSecret.load(path: f) }
        return try ClusterSecret.loadOrCreateDefault(stateDirectory: defaultStateDirectory())
    }
}

/// A duration on the command line: a number with ms, s, m or h (seconds without a unit).
struct Duration: ExpressibleByArgument {
    let seconds: Double

    init(seconds: Double) { self.seconds = seconds }

    var defaultValueDescription: String {
        seconds >= 3600 && seconds.truncatingRemainder(dividingBy: 3600) == 0 ? "\(Int(seconds / 3600))h" : "\(seconds)s"
    }

    init?(argument: String) {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        var text = argument, scale = 1.0
        for (suffix, factor) in units where argument.hasSuffix(suffix) {
            text = String(argument.dropLast(suffix.count))
            scale = factor
            break
        }
        guard let v = Double(text), v > 0, v.isFinite else { return nil }
        seconds = v * scale
    }
}

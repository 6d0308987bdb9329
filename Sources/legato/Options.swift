import ArgumentParser
import LegatoClients
import LegatoMetrics
import LegatoCore

extension ByteSize: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
}

extension Endpoint: ExpressibleByArgument {
    public init?(argument: String) { self.init(parsing: argument) }
}

/// `--coordinator HOST:PORT[,HOST:PORT...]`: a cluster's coordinators (several share an etcd store,
/// one leads), registered in CoordinatorPeers under the first, which names them from then on.
struct CoordinatorOption: ExpressibleByArgument, CustomStringConvertible {
    let endpoint: Endpoint
    let all: [Endpoint]

    init?(argument: String) {
        guard let all = CoordinatorPeers.parse(argument) else { return nil }
        self.all = all
        endpoint = CoordinatorPeers.register(all)
    }

    var description: String { all.map { $0.description }.joined(separator: ",") }
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

/// `--metrics HOST:PORT`: serve Prometheus metrics at http://HOST:PORT/metrics.
struct MetricsOptions: ParsableArguments {
    @Option(help: "Serve Prometheus metrics at http://HOST:PORT/metrics (e.g. 127.0.0.1:9301).")
    var metrics: Endpoint?

    /// Starts the endpoint of a daemon of `role`, if asked for; `collect` is called on its thread.
    func serve(role: String, log: Logger, collect: @escaping @Sendable () -> MetricsReport) throws -> MetricsEndpoint? {
        guard let listen = metrics else { return nil }
        let endpoint = try MetricsEndpoint(listen: listen, role: role, log: log, collect: collect)
        endpoint.start()
        return endpoint
    }
}

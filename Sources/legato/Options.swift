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

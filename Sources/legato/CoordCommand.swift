import ArgumentParser
import LegatoCoordinator
import LegatoCore
import LegatoMetrics
import LegatoWire

struct CoordCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "coord",
        abstract: "Run the coordinator: membership, failure detection, slab placement, checkpoint records."
    )

    @Option(help: "Address to listen on.")
    var listen: Endpoint = Endpoint(host: "127.0.0.1", port: 7300)

    @Option(help: "Where the state lives: sqlite:PATH (default <state dir>/coordinator.db) or etcd:http://HOST:PORT[/PREFIX].")
    var store: String?

    @Option(name: .customLong("heartbeat-ms"), help: "How often nodes heartbeat.")
    var heartbeatMillis: UInt32 = 500

    @Option(name: .customLong("dead-after-ms"), help: "Silence after which a node is declared dead.")
    var deadAfterMillis: UInt32 = 3000

    @OptionGroup var secret: SecretOptions
    @OptionGroup var metrics: MetricsOptions
    @OptionGroup var embedding: EmbeddingOptions

    func validate() throws {
        guard heartbeatMillis >= 10, deadAfterMillis > heartbeatMillis else {
            throw ValidationError("--dead-after-ms must be longer than --heartbeat-ms (at least 10)")
        }
    }

    func run() throws {
        let stopSignals = DaemonSignals.blockTermination()
        embedding.watchParent()
        let log = LegatoLogging.logger("legato.coord")
        let backing = try openCoordinatorStore(store ?? "sqlite:" + defaultStateDirectory() + "/coordinator.db")
        let coordinator = try Coordinator(store: backing, timing: .init(heartbeatMillis: heartbeatMillis, deadAfterMillis: deadAfterMillis), log: log)
        let service = CoordinatorService(coordinator: coordinator, log: log)
        let server = try RPCServer(endpoint: listen, service: service,
                                   secret: try embedding.secret(or: secret), role: .coordinator, name: "coord", log: log)
        server.start()
        let endpoint = try metrics.serve(role: "coord", log: log) { service.statsRecord().metricsReport }
        log.info("coordinator listening on \(listen.host):\(server.port), state in \(backing.description)")
        embedding.announceReady(port: server.port)
        DaemonSignals.wait(stopSignals)
        endpoint?.stop()
        coordinator.stop()
        server.stop()
        log.info("coordinator stopped")
    }
}

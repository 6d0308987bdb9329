import ArgumentParser
import LegatoCore
import LegatoMetrics
import LegatoLogNode

struct LogdCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logd",
        abstract: "Run a log node: segment replicas buffered in memory, written to disk in batches."
    )

    @Option(help: "Address to listen on.")
    var listen: Endpoint = Endpoint(host: "127.0.0.1", port: 7302)

    @Option(help: "Directory for the replicas (created if missing).")
    var dir: String

    @Option(help: "The coordinator, HOST:PORT, or the cluster's coordinators HOST:PORT,HOST:PORT....")
    var coordinator: CoordinatorOption?

    @Option(help: ArgumentHelp("Memory for buffered appends before they are written to disk.",
                               discussion: "Past it the node writes its largest buffers out; past twice it appends wait for the disk. Under load the node's buffer memory, spare buffers included, stays near twice this; an idle node gives the spares back after 10 s."))
    var buffer: ByteSize = ByteSize(bytes: 256 << 20)

    @OptionGroup var secret: SecretOptions
    @OptionGroup var metrics: MetricsOptions
    @OptionGroup var embedding: EmbeddingOptions

    func validate() throws {
        guard buffer.bytes >= 1 << 20 else { throw ValidationError("--buffer must be at least 1M") }
    }

    func run() throws {
        let stopSignals = DaemonSignals.blockTermination()
        embedding.watchParent()
        let node = try LogNode(config: .init(listen: listen, directory: dir, coordinator: coordinator?.endpoint,
                                             bufferBytes: Int(buffer.bytes), secret: try embedding.secret(or: secret)))
        try node.start()
        let service = node.service
        let endpoint = try metrics.serve(role: "logd", log: LegatoLogging.logger("legato.logd")) { service.statsRecord().metricsReport }
        embedding.announceReady(port: node.endpoint.port)
        DaemonSignals.wait(stopSignals)
        endpoint?.stop()
        node.stop()
    }
}

import ArgumentParser
import Glibc
import LegatoCore
import LegatoMetrics
import LegatoMemoryNode
import LegatoSystem

struct MemdCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memd",
        abstract: "Run a memory node: a log-structured in-DRAM page store served over TCP."
    )

    @Option(help: "Address to listen on (loopback unless told otherwise).")
    var listen: Endpoint = Endpoint(host: "127.0.0.1", port: 7301)

    @Option(help: "Most memory the page store may use (e.g. 4G). Default: a quarter of physical memory.")
    var capacity: ByteSize?

    @Option(name: .customLong("segment-size"), help: "Size of a log segment.")
    var segmentSize: ByteSize = ByteSize(bytes: 8 << 20)

    @Option(help: "The coordinator to join, HOST:PORT, or a cluster's coordinators HOST:PORT,HOST:PORT... (default: none, a standalone node).")
    var coordinator: CoordinatorOption?

    @Option(help: "Directory for the node's identity (default: <state dir>/memd-PORT).")
    var dir: String?

    @Option(name: .customLong("retain-idle"),
            help: "Drop an address space whose owner has had no connection this long (a named run killed and never restored; its checkpoints stay in the logs).")
    var retainIdle: Duration = Duration(seconds: 24 * 3600)

    @OptionGroup var secret: SecretOptions

    @Option(help: .hidden)
    var name: String = "memd"

    @OptionGroup var metrics: MetricsOptions
    @OptionGroup var embedding: EmbeddingOptions

    func validate() throws {
        guard segmentSize.bytes >= 1 << 20, segmentSize.bytes <= 1 << 30 else {
            throw ValidationError("--segment-size must be between 1M and 1G")
        }
        if let c = capacity, c.bytes < 2 * segmentSize.bytes {
            throw ValidationError("--capacity \(c) is less than two segments of \(segmentSize)")
        }
    }

    func run() throws {
        let stopSignals = DaemonSignals.blockTermination()
        embedding.watchParent()
        let capacityBytes = capacity?.bytes ?? UInt64(sysconf(Int32(_SC_PHYS_PAGES))) * UInt64(Page.size) / 4
        var config = MemoryNode.Config(listen: listen, capacityBytes: capacityBytes,
                                       segmentBytes: Int(segmentSize.bytes), secret: try embedding.secret(or: secret), name: name)
        config.coordinator = coordinator?.endpoint
        config.directory = dir
        config.retainIdleSeconds = retainIdle.seconds
        let node = try MemoryNode(config: config)
        try node.start()
        let service = node.service
        let endpoint = try metrics.serve(role: "memd", log: LegatoLogging.logger("legato.memd")) { service.statsRecord().metricsReport }
        embedding.announceReady(port: node.endpoint.port)
        DaemonSignals.wait(stopSignals)
        endpoint?.stop()
        node.stop()
    }
}

import ArgumentParser
import Glibc
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

    @Option(name: .customLong("lease-ms"), help: ArgumentHelp("With an etcd store: the leadership lease.",
            discussion: "Several coordinators may share one etcd store; the one holding the lease leads and the others answer NOT_LEADER, naming it. A leader that cannot renew its lease stops; a follower takes over within about this long."))
    var leaseMillis: UInt32 = 3000

    @Option(help: "The address clients are told to use for this coordinator (default: the listen address).")
    var advertise: Endpoint?

    @OptionGroup var secret: SecretOptions
    @OptionGroup var metrics: MetricsOptions
    @OptionGroup var embedding: EmbeddingOptions

    func validate() throws {
        guard heartbeatMillis >= 10, deadAfterMillis > heartbeatMillis else {
            throw ValidationError("--dead-after-ms must be longer than --heartbeat-ms (at least 10)")
        }
        guard leaseMillis >= 2000 else { throw ValidationError("--lease-ms must be at least 2000 (etcd's shortest lease)") }
    }

    func run() throws {
        let stopSignals = DaemonSignals.blockTermination()
        embedding.watchParent()
        let log = LegatoLogging.logger("legato.coord")
        let backing = try openCoordinatorStore(store ?? "sqlite:" + defaultStateDirectory() + "/coordinator.db")
        let timing = Coordinator.Timing(heartbeatMillis: heartbeatMillis, deadAfterMillis: deadAfterMillis)
        // On etcd, coordinators elect a leader; the state is read when this one starts to lead.
        var election: LeaderElection?
        let service = CoordinatorService(log: log, leaderHint: { election?.leader })
        let server = try RPCServer(endpoint: listen, service: service,
                                   secret: try embedding.secret(or: secret), role: .coordinator, name: "coord", log: log)
        let me = advertise ?? Endpoint(host: listen.host, port: server.port)
        if let etcd = backing as? EtcdStore {
            let e = LeaderElection(store: etcd, address: me.description, ttlSeconds: Int((leaseMillis + 999) / 1000), log: log)
            election = e
            e.start(onElected: {
                do { service.lead(try Coordinator(store: backing, timing: timing, log: log)) } catch {
                    log.critical("leading, but the state in \(backing.description) cannot be read: \(error)")
                    Glibc.exit(1)
                }
            }, onLost: { why in
                // Another coordinator may lead by now: this one must not decide anything more.
                service.follow()
                log.critical("the leadership ended (\(why)); stopping")
                Glibc.exit(1)
            })
        } else {
            service.lead(try Coordinator(store: backing, timing: timing, log: log))
        }
        server.start()
        let endpoint = try metrics.serve(role: "coord", log: log) { service.statsRecord().metricsReport }
        log.info("coordinator listening on \(listen.host):\(server.port), state in \(backing.description)\(election == nil ? "" : ", leading once elected")")
        embedding.announceReady(port: server.port)
        DaemonSignals.wait(stopSignals)
        endpoint?.stop()
        service.coordinator?.stop()
        server.stop()
        log.info("coordinator stopped")
    }
}

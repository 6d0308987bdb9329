import LegatoClients
import LegatoCore
import LegatoSystem
import LegatoWire

/// A running memory node: the page store behind an authenticated RPC server.
public final class MemoryNode {
    public struct Config {
        public var listen: Endpoint
        public var capacityBytes: UInt64
        public var segmentBytes: Int
        public var secret: ClusterSecret
        public var name: String
        public var coordinator: Endpoint?
        public var directory: String?
        /// An address space whose owner has had no connection this long is dropped (see
        /// MemoryService.dropAbandonedSpaces).
        public var retainIdleSeconds: Double = 24 * 3600
        public init(listen: Endpoint, capacityBytes: UInt64, segmentBytes: Int = 8 << 20, secret: ClusterSecret, name: String = "memd") {
            self.listen = listen
            self.capacityBytes = capacityBytes
            self.segmentBytes = segmentBytes
            self.secret = secret
            self.name = name
        }
    }

    public let service: MemoryService
    public let server: RPCServer
    public let endpoint: Endpoint
    public private(set) var member: ClusterMember?
    private let config: Config
    private let log: Logger
    private let janitorLock = Lock()
    private var stopping = false

    public init(config: Config) throws {
        self.config = config
        log = LegatoLogging.logger("legato.memd")
        let store = PageStore(limits: .init(capacityBytes: config.capacityBytes, segmentBytes: config.segmentBytes))
        service = MemoryService(store: store, log: log, coordinator: config.coordinator, secret: config.secret)
        server = try RPCServer(endpoint: config.listen, service: service, secret: config.secret,
                               role: .memoryNode, name: config.name, log: log)
        endpoint = Endpoint(host: config.listen.host, port: server.port)
    }

    public func start() throws {
        server.start()
        startThread(name: "janitor") { [self] in
            // Checks a few times per retention period (at least once a minute) until the node stops.
            let every = min(60, max(0.05, config.retainIdleSeconds / 4))
            func stopped() -> Bool {
                janitorLock.withLock {
                    if !stopping { janitorLock.wait(seconds: every) }
                    return stopping
                }
            }
            while !stopped() { service.dropAbandonedSpaces(olderThan: config.retainIdleSeconds) }
        }
        log.info("memory node listening on \(endpoint), capacity \(formatSize(service.store.limits.capacityBytes)), \(service.store.maxSegments) segments of \(formatSize(UInt64(service.store.limits.segmentBytes)))")
        if let c = config.coordinator {
            // Receive buffers for a recovery's replay clients (see ScratchBuffer.prewarm).
            ScratchBuffer.prewarm(count: SpaceRecovery.replayThreads * 3, capacity: 4 << 20)
            let dir = config.directory ?? defaultStateDirectory() + "/memd-\(endpoint.port)"
            let store = service.store
            let m = ClusterMember(coordinator: c, role: .memory, address: endpoint.description, uuid: try nodeUUID(directory: dir),
                                  secret: config.secret, capacity: { store.limits.capacityBytes },
                                  used: { UInt64(store.stats.livePages) * 4096 }, log: log)
            try m.start()
            member = m
        }
    }

    public func stop() {
        janitorLock.withLock {
            stopping = true
            janitorLock.broadcast()
        }
        member?.stop()
        server.stop()
        log.info("memory node on \(endpoint) stopped")
    }
}

import Foundation
import Glibc
import LegatoClients
import LegatoCore
import LegatoSystem
import LegatoWire

/// A running log node: the replica store behind an authenticated RPC server, a member of a cluster.
public final class LogNode {
    public struct Config {
        public var listen: Endpoint
        public var directory: String
        public var coordinator: Endpoint?
        public var bufferBytes: Int
        public var secret: ClusterSecret
        public init(listen: Endpoint, directory: String, coordinator: Endpoint?, bufferBytes: Int, secret: ClusterSecret) {
            self.listen = listen
            self.directory = directory
            self.coordinator = coordinator
            self.bufferBytes = bufferBytes
            self.secret = secret
        }
    }

    public let store: ReplicaStore
    public let service: LogService
    public let server: RPCServer
    public let endpoint: Endpoint
    public private(set) var member: ClusterMember?
    private let config: Config
    private let log: Logger

    public init(config: Config) throws {
        self.config = config
        log = LegatoLogging.logger("legato.logd")
        store = try ReplicaStore(directory: config.directory, bufferLimit: config.bufferBytes, log: log)
        service = LogService(store: store, log: log)
        server = try RPCServer(endpoint: config.listen, service: service, secret: config.secret, role: .logNode, name: "logd", log: log)
        endpoint = Endpoint(host: config.listen.host, port: server.port)
    }

    /// Read buffers kept ready (see ScratchBuffer.prewarm): two per session reading, for the eight
    /// sessions two recovery nodes' replays open at once.
    static let warmReadBuffers = 16

    public func start() throws {
        ScratchBuffer.prewarm(count: Self.warmReadBuffers, capacity: 4 << 20)
        server.start()
        log.info("log node listening on \(endpoint), replicas in \(config.directory), buffer \(formatSize(UInt64(config.bufferBytes)))")
        if let c = config.coordinator {
            let uuid = try nodeUUID(directory: config.directory)
            let store = self.store
            let dir = config.directory
            let m = ClusterMember(coordinator: c, role: .log, address: endpoint.description, uuid: uuid, secret: config.secret,
                                  capacity: { fileSystemBytes(dir) }, used: { store.stats.diskBytes }, log: log)
            try m.start()
            member = m
        }
    }

    public func stop() {
        member?.stop()
        server.stop()
        store.shutdown()
        log.info("log node on \(endpoint) stopped")
    }
}

func fileSystemBytes(_ dir: String) -> UInt64 {
    var s = statvfs()
    guard statvfs(dir, &s) == 0 else { return 0 }
    return UInt64(s.f_blocks) * UInt64(s.f_frsize)
}

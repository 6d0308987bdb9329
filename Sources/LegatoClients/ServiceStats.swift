import Foundation

/// What each service answers to STATS: a JSON object with snake_case keys (`StatsJSON`), the same
/// numbers its /metrics endpoint serves and `legato status --counters` shows.

/// A memory node's counters (MemoryService).
public struct MemoryNodeStats: Codable, Equatable, Sendable {
    public var role = "memory"
    public var spaces: Int
    public var livePages: Int
    public var livePageLimit: Int
    public var capacityBytes: UInt64
    public var usedBytes: UInt64
    public var segments: Int
    /// A segment made ahead for the next head (0 or 1); it counts against the capacity too.
    public var spareSegments: Int
    public var maxSegments: Int
    public var segmentBytes: Int
    public var storedPages: Int
    public var fetchedPages: Int
    public var missedPages: Int
    public var discardedPages: Int
    public var cleanerRuns: Int
    public var cleanedPages: Int
    public var refusedStores: Int
    /// Spaces that retain a committed checkpoint, and the pages changed since a retained checkpoint
    /// or a freeze, whose old versions (if they had one) are kept.
    public var retainingSpaces: Int
    public var retainedVersions: Int
    public var frozenVersions: Int
    public var checkpointParticipant: Bool
    public var prepares: Int
    public var persistedPages: Int
    /// Write-back logs (logged stores): pages appended, the logs' live keys and payload bytes,
    /// segments freed by cleaning, pages rewritten by it, stores refused because the append failed.
    public var loggedPages = 0
    public var logLiveKeys = 0
    public var logBytes = 0
    public var logFreedSegments = 0
    public var logRewrittenPages = 0
    public var refusedLogAppends = 0
    /// RECOVER_SPACE requests served, and the pages they rebuilt here.
    public var recoveries = 0
    public var recoveredPages = 0

    public init(spaces: Int, livePages: Int, livePageLimit: Int, capacityBytes: UInt64, usedBytes: UInt64, segments: Int,
                spareSegments: Int, maxSegments: Int, segmentBytes: Int, storedPages: Int, fetchedPages: Int, missedPages: Int,
                discardedPages: Int, cleanerRuns: Int, cleanedPages: Int, refusedStores: Int, retainingSpaces: Int,
                retainedVersions: Int, frozenVersions: Int, checkpointParticipant: Bool, prepares: Int, persistedPages: Int) {
        self.spaces = spaces
        self.livePages = livePages
        self.livePageLimit = livePageLimit
        self.capacityBytes = capacityBytes
        self.usedBytes = usedBytes
        self.segments = segments
        self.spareSegments = spareSegments
        self.maxSegments = maxSegments
        self.segmentBytes = segmentBytes
        self.storedPages = storedPages
        self.fetchedPages = fetchedPages
        self.missedPages = missedPages
        self.discardedPages = discardedPages
        self.cleanerRuns = cleanerRuns
        self.cleanedPages = cleanedPages
        self.refusedStores = refusedStores
        self.retainingSpaces = retainingSpaces
        self.retainedVersions = retainedVersions
        self.frozenVersions = frozenVersions
        self.checkpointParticipant = checkpointParticipant
        self.prepares = prepares
        self.persistedPages = persistedPages
    }

    /// Pages the node can still take (the placement's estimate of its room).
    public var freePages: Int { max(0, livePageLimit - livePages) }
}

/// A log node's counters (LogService over its ReplicaStore).
public struct LogNodeStats: Codable, Equatable, Sendable {
    public var role = "log"
    public var replicas: Int
    public var openReplicas: Int
    public var bufferedBytes: Int
    public var bufferedPeakBytes: Int
    public var appendWaits: Int
    public var spareBufferBytes: Int
    public var freshBuffers: Int
    /// Memory the replicas' buffers hold (capacity, written out or not; spares not included).
    public var bufferStorageBytes: Int
    public var diskBytes: UInt64
    public var freeDiskBytes: UInt64
    public var tornTails: Int
    public var corruptEntries: Int
    public var quarantinedFiles: Int
    public var flushes: Int
    public var bytesWritten: UInt64
    public var ioErrors: Int

    public init(replicas: Int, openReplicas: Int, bufferedBytes: Int, bufferedPeakBytes: Int, appendWaits: Int, spareBufferBytes: Int,
                freshBuffers: Int, bufferStorageBytes: Int, diskBytes: UInt64, freeDiskBytes: UInt64, tornTails: Int, corruptEntries: Int,
                quarantinedFiles: Int, flushes: Int, bytesWritten: UInt64, ioErrors: Int) {
        self.replicas = replicas
        self.openReplicas = openReplicas
        self.bufferedBytes = bufferedBytes
        self.bufferedPeakBytes = bufferedPeakBytes
        self.appendWaits = appendWaits
        self.spareBufferBytes = spareBufferBytes
        self.freshBuffers = freshBuffers
        self.bufferStorageBytes = bufferStorageBytes
        self.diskBytes = diskBytes
        self.freeDiskBytes = freeDiskBytes
        self.tornTails = tornTails
        self.corruptEntries = corruptEntries
        self.quarantinedFiles = quarantinedFiles
        self.flushes = flushes
        self.bytesWritten = bytesWritten
        self.ioErrors = ioErrors
    }
}

/// The coordinator's view (CoordinatorService).
public struct CoordinatorStats: Codable, Equatable, Sendable {
    public var role = "coordinator"
    public var store: String
    public var membershipVersion: UInt64
    public var nodes: Int
    public var alive: Int
    /// Whether this coordinator leads (one of several sharing an etcd store may only follow).
    public var leading: Bool

    public init(store: String, membershipVersion: UInt64, nodes: Int, alive: Int, leading: Bool) {
        self.store = store
        self.membershipVersion = membershipVersion
        self.nodes = nodes
        self.alive = alive
        self.leading = leading
    }
}

/// The JSON form of stats records: snake_case keys, sorted.
public enum StatsJSON {
    public static func encode<T: Encodable>(_ value: T, pretty: Bool = false) -> String {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted] : [.sortedKeys]
        // Every stats record is plain numbers, strings and booleans: encoding cannot fail.
        let data = (try? e.encode(value)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    public static func decode<T: Decodable>(_ type: T.Type, from text: String) throws -> T {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return try d.decode(T.self, from: Data(text.utf8))
    }
}

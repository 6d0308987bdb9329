import Foundation

/// What an agent writes as the decision record of a committed cluster checkpoint (the coordinator
/// keeps it, opaque, with COMMIT_CHECKPOINT): JSON with snake_case keys, Docs/on-disk-format.md.
/// Writer ids are hex; positions are [segment, entry] in the run's own log. Fields a record written
/// by an earlier version lacks are nil.
public struct CommitRecord: Codable, Equatable {
    /// The run's log (writer id, hex).
    public var writer: String
    /// The checkpoint this one is an increment of.
    public var parent: UInt64?
    public var pages: Int
    public var pauseMs: Double
    public var committedAt: Double
    /// The memory nodes' participant logs holding pages of this epoch (writer ids, hex).
    public var participants: [String]?
    /// Where the epoch's index and context entries are (nil before indexes existed).
    public var indexAt: [UInt64]?
    public var contextAt: [UInt64]?
    /// The address space memory nodes retain the checkpoint under (hex), and those nodes by index.
    public var space: String?
    public var memoryNodes: [String]?

    public init(writer: String, parent: UInt64?, pages: Int, pauseMs: Double, committedAt: Double, participants: [String]?,
                indexAt: [UInt64]?, contextAt: [UInt64]?, space: String?, memoryNodes: [String]?) {
        self.writer = writer
        self.parent = parent
        self.pages = pages
        self.pauseMs = pauseMs
        self.committedAt = committedAt
        self.participants = participants
        self.indexAt = indexAt
        self.contextAt = contextAt
        self.space = space
        self.memoryNodes = memoryNodes
    }

    public func encoded() throws -> [UInt8] {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys]
        return [UInt8](try e.encode(self))
    }

    public static func decode(_ bytes: Data) throws -> CommitRecord {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return try d.decode(CommitRecord.self, from: bytes)
    }
}

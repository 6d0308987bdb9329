import Foundation
import LegatoCore

/// Where a named run's checkpoints are committed and found again: the local state directory
/// (`LocalImageStore`) or a cluster's replicated log and coordinator (`ClusterCheckpointStore`).
///
/// A checkpoint is a two-phase transaction: `begin` reserves the next epoch; `prepare` makes the
/// pages, zero runs and context durable but not yet restorable; `commit` writes the decision, after
/// which it is restorable; `abort` gives up (the previous checkpoint stays the newest).
public protocol CheckpointStore: AnyObject {
    func begin() throws -> CheckpointTransaction
    /// Committed checkpoints, oldest first.
    func committed() throws -> [CheckpointSummary]
    /// Committed checkpoint `epoch` ready to restore, with the chain of layers it builds on.
    func load(epoch: UInt64) throws -> RestoreSource
    /// Whether the memory nodes keep each committed checkpoint's versions of PROG's pages (a
    /// restore may fetch them from there): then every node is frozen at each pause, and the
    /// freezes of a committed checkpoint become the nodes' retained checkpoint.
    var retainsOnMemoryNodes: Bool { get }
}

public protocol CheckpointTransaction: AnyObject {
    var epoch: UInt64 { get }
    func prepare(staging: CheckpointStaging, image: ProcessImage, pauseMillis: Double) throws
    func commit() throws
    func abort(reason: String)
}

/// What `legato ls` shows of one committed checkpoint.
public struct CheckpointSummary {
    public let epoch: UInt64
    public let committedAt: Double
    public let pauseMillis: Double
    public let pages: Int
    public let parent: UInt64?
}

extension CheckpointStore {
    /// The newest committed checkpoint's epoch.
    public func newestEpoch() throws -> UInt64? { try committed().last?.epoch }
}

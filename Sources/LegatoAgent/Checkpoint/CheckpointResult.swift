import Foundation

/// A checkpoint refused because PROG holds something that cannot be checkpointed and restored
/// exactly (named in `description`); PROG runs on.
public struct CheckpointRefused: Error, CustomStringConvertible {
    public let description: String
    /// A passing state (a process in the middle of an exec, none of its threads at a stop fit for
    /// injection): the capture is tried again a few times before it is refused.
    public let transient: Bool
    public init(description: String, transient: Bool = false) {
        self.description = description
        self.transient = transient
    }
}

/// What capturing a checkpoint gives (Agent+Capture).
public struct CheckpointResult {
    public let epoch: UInt64
    public let parent: UInt64?
    public let pauseNanos: UInt64
    public let pages: Int
    public let bytes: Int
    /// The changed resident pages were kept in a copy-on-write snapshot.
    public let snapshot: Bool
    /// The context record, for the sink once PROG runs again (with the pages in `staging`).
    public let image: ProcessImage
}

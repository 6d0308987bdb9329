/// How a run's pages on memory nodes survive a node's death (`legato run --memory-replication`).
public enum MemoryReplication: String, CaseIterable, Sendable {
    /// One copy: a memory node's death stops the run (a restore replays its last checkpoint).
    case none
    /// Every store is appended to the memory node's write-back log on log nodes before it is
    /// acknowledged; a dead node's pages are rebuilt on the others from it while the run goes on.
    case log
    /// Every store goes to two different memory nodes before it is acknowledged; a dead node's
    /// pages are read from their other copy at once, and copied to a third node in the background.
    case mirror
}

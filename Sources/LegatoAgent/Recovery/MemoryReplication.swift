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
    /// Each batch is mirrored while the cluster's free memory is above `--mirror-above`, and logged
    /// when it is below (LegoOS's policy: pessimistic while memory is plentiful, optimistic when it
    /// is tight); a slab's pages move between the two as they are stored again. A dead node's
    /// mirrored pages are read from their mirrors, its logged ones rebuilt from its log.
    case adaptive

    /// Whether stores may be logged (the memory nodes need a write-back log for the space).
    public var logs: Bool { self == .log || self == .adaptive }
    /// Whether stores may go to two nodes.
    public var mirrors: Bool { self == .mirror || self == .adaptive }
}

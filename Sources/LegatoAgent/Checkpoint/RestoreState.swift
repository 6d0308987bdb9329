import Foundation

/// A restore's progress through the run: the checkpoint to restore at PROG's first stop, the backing
/// its pages come back from until every one is in, and the earlier incarnation's spaces to drop.
struct RestoreState {
    /// Restored at PROG's first stop (then nil).
    var pending: RestoreSource?
    /// A restored checkpoint's pages still to come back (lazy restore); nil once all are in.
    var backing: RestoreBacking?
    /// The fill waits for pages still streaming in: the event loop sleeps 1 ms at a time meanwhile.
    var fillStalled = false
    /// Drops the spaces the earlier incarnation left on memory nodes. Called when the restore is
    /// complete and this run has a committed checkpoint of its own, or when PROG exits (a later
    /// restore then reads those pages from the logs).
    var releaseEarlierSpaces: (() -> Void)?
    /// TCP connections made again in repair mode, left there until every socket of the tree is back
    /// (two ends of one connection must both exist before either speaks): the agent's copy of each,
    /// the bytes it had not sent yet, and its words for errors.
    var connectionsInRepair: [(fd: Int32, unsent: Data, what: String)] = []
    /// The agent's own descriptor of each FIFO the restore opens (by inode), open for reading and
    /// writing until every process of the tree has its own.
    var fifos: [UInt64: Int32] = [:]
    /// Datagram sockets to connect to a name again once the tree is back: the agent's copy, the name.
    var datagramConnects: [(fd: Int32, name: Data, what: String)] = []
    /// UNIX socket pairs whose queues carried descriptors: the agent's copies of both ends and their
    /// saved states, refilled once the whole tree is back (Agent+RestoreSockets.finishInFlight).
    var pairsWithRights: [(a: Int32, sa: ProcessImage.UnixSocketState, b: Int32, sb: ProcessImage.UnixSocketState?, what: String)] = []
}

import Foundation
import Glibc

/// A process tree's restore in progress (PROG first, then each member forked from its restored
/// parent): where every open file description and shared object restored so far can be taken from
/// by the processes restored after it. Event-loop thread only.
final class TreeRestore {
    /// A pipe made by its first holder (a namespace pid), with the fds there of its two ends: ones it
    /// holds, or ones it keeps for the others (`parked`).
    var pipes: [UInt64: (holder: Int32, read: Int32, write: Int32)] = [:]
    /// UNIX socket pairs made by the first holder of either end: where each end (by inode) is
    /// there (parked); and every socket's saved state, by inode, for the end made with its peer.
    var sockets: [UInt64: (holder: Int32, fd: Int32)] = [:]
    let socketStates: [UInt64: ProcessImage.UnixSocketState]
    /// UNIX listeners restored so far, by name: where each is (a namespace pid and its fd there);
    /// and the names every UNIX listener of the checkpoint had.
    var unixListeners: [Data: (holder: Int32, fd: Int32)] = [:]
    let listenerNames: Set<Data>
    /// Descriptors kept in a process for later ones, closed once every process has its own.
    var parked: [Int32: [Int32]] = [:]
    /// Shared objects (SharedObjects) made again in PROG: their fds there, and the agent's own
    /// descriptors of them (open until their seals are set).
    var objects: [Int: Int32] = [:]
    var objectFiles: [Int: Int32] = [:]
    /// SysV segments made again: their ids, by object id.
    var segments: [Int: Int32] = [:]
    /// Ptys (by index) made by their first holder, with the master's fd there (parked); every
    /// pty's saved state, and the indexes some process opens a slave of.
    var ptys: [Int32: (holder: Int32, fd: Int32)] = [:]
    let ptyStates: [Int32: ProcessImage.PtyState]
    let ptySlaves: Set<Int32>
    /// Above every descriptor number of any of the tree's tables: room for temporaries.
    let high: UInt64
    /// PROG's pid in its namespace (where the shared objects are made).
    let prog: Int32

    deinit { for fd in objectFiles.values { close(fd) } }

    init(images: [ProcessImage]) {
        high = UInt64((images.flatMap { $0.fds.map { $0.fd } }.max() ?? 2) + 1)
        prog = images.first?.pid ?? 0
        var states: [UInt64: ProcessImage.UnixSocketState] = [:]
        for f in images.flatMap({ $0.fds }) { if let s = f.unixSocket { states[s.inode] = s } }
        socketStates = states
        let fds = images.flatMap { $0.fds }
        listenerNames = Set(fds.compactMap { f in f.unixSocket.flatMap { $0.backlog != nil ? $0.name : nil } })
        ptyStates = Dictionary(fds.compactMap { f in f.pty.map { ($0.index, $0) } }, uniquingKeysWith: { a, _ in a })
        ptySlaves = Set(fds.filter { $0.kind == .ptySlave }.compactMap { $0.ptyIndex } + images.compactMap { $0.links?.terminal })
    }
}

import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// One process of PROG's tree, as a checkpoint captures it.
struct TreeProcess {
    /// Its pid as the agent sees it, and in PROG's namespace.
    let pid: pid_t
    let nsPID: Int32
    let space: AddressSpace
    /// What its pages' addresses are tagged with (TreePages): 0 for PROG, its namespace pid otherwise.
    let tag: Int32
    let links: ProcessImage.TreeLinks?
    let command: String
}

/// Which processes a checkpoint holds: PROG, then every process of its tree, parents before their
/// children (the order a restore recreates them in); what keeps a tree from being checkpointed is
/// refused by name.
extension Agent {
    func treeProcesses() throws -> [TreeProcess] {
        func command(_ pid: pid_t) -> String {
            ProcFile.text("/proc/\(pid)/comm")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
        }
        let prog = TreeProcess(pid: mainPID, nsPID: Sys.namespaceTID(mainPID), space: mm, tag: 0, links: nil, command: command(mainPID))
        let others = spaces.filter { $0.value !== mm }.sorted { $0.key < $1.key }
        if others.isEmpty { return [prog] }
        guard let progStat = ProcFile.statFields(mainPID), progStat.count > 3 else { throw CaptureError.unreadableProcFile("/proc/\(mainPID)/stat") }
        let session = progStat[3]
        var refusals: [String] = []
        var passing = 0  // refusals of a passing state
        var members: [pid_t: TreeProcess] = [:]
        var parentOf: [pid_t: pid_t] = [:]
        var groupOf: [pid_t: pid_t] = [:]
        var sessionOf: [pid_t: pid_t] = [:]
        let progGroup = pid_t(progStat[2]) ?? 0
        for (pid, space) in others {
            let ns = Sys.namespaceTID(pid)
            let name = "pid \(ns) (\(command(pid)))"
            guard space.isManaged, space.pid == pid else { refusals.append("\(name) is starting a program (exec); try again"); passing += 1; continue }
            guard let f = ProcFile.statFields(pid), f.count > 35, let ppid = pid_t(f[1]), let pgrp = pid_t(f[2]),
                  let start = UInt64(f[19]), let exitSignal = Int32(f[35]) else {
                refusals.append("\(name): its /proc/PID/stat cannot be read"); continue
            }
            // A session of its own (setsid) comes back with a setsid; its controlling terminal, if
            // it has one, must be a pty (whose master the tree must hold: PtyDescriptors).
            guard let sid = pid_t(f[3]), let tty = Int(f[4]), let foreground = pid_t(f[5]) else { refusals.append("\(name): its /proc/PID/stat cannot be read"); continue }
            var terminal: Int32?
            if f[3] != session && sid == pid && tty != 0 {
                guard let index = PtyDescriptors.ptyIndex(ttyNumber: tty) else {
                    refusals.append("\(name) leads a session of its own with a controlling terminal that is not a pty (device \(tty >> 8 & 0xfff):\(tty & 0xff | tty >> 12 & 0xfff00))"); continue
                }
                terminal = index
            }
            guard ns > 0, ns <= TreePages.largestPID else { refusals.append("\(name) has a pid a checkpoint cannot tag its pages with"); continue }
            parentOf[pid] = ppid
            groupOf[pid] = pgrp
            sessionOf[pid] = f[3] == session ? 0 : sid
            // processGroup 0: PROG's, which came from outside the namespace (the shell's job).
            let links = ProcessImage.TreeLinks(parent: Sys.namespaceTID(ppid), processGroup: pgrp == progGroup ? 0 : Sys.namespaceTID(pgrp),
                                               session: f[3] == session ? 0 : Sys.namespaceTID(sid),
                                               startTime: start, exitSignal: exitSignal,
                                               terminal: terminal, foregroundGroup: terminal == nil || foreground <= 0 ? nil : Sys.namespaceTID(foreground), since: 0)
            members[pid] = TreeProcess(pid: pid, nsPID: ns, space: space, tag: ns, links: links, command: command(pid))
        }
        // A process group led by a process outside the tree, or a parent outside it (an orphan the
        // reaper took), cannot be made again.
        // PROG's own group comes from outside: a process can be put back into it only by being
        // forked from a parent still in it.
        let treePIDs = Set(members.keys).union([mainPID])
        for (pid, m) in members {
            guard let ppid = parentOf[pid], let group = groupOf[pid] else { continue }
            if !treePIDs.contains(ppid) {
                refusals.append("pid \(m.nsPID) (\(m.command)) lost its parent (it was reparented to pid \(Sys.namespaceTID(ppid)))")
            }
            if group != progGroup && !treePIDs.contains(group) {
                refusals.append("pid \(m.nsPID) (\(m.command)) is in a process group whose leader is outside the program")
            }
            // A session is made by its leader's setsid: every other process of it must be forked
            // from one in it.
            if let sid = sessionOf[pid], sid != 0 && sid != pid && sessionOf[ppid] != sid {
                refusals.append("pid \(m.nsPID) (\(m.command)) is in a session its parent is not in")
            }
            let parentGroup = ppid == mainPID ? progGroup : groupOf[ppid]
            if group == progGroup && parentGroup != progGroup {
                refusals.append("pid \(m.nsPID) (\(m.command)) went back into the program's own process group from another one")
            }
        }
        if !refusals.isEmpty { throw CheckpointRefused(description: refusals.sorted().joined(separator: "; "), transient: passing == refusals.count) }
        // Parents before children: depth first from PROG, siblings by pid.
        var ordered = [prog]
        func visit(_ parent: pid_t) {
            for (pid, m) in members.sorted(by: { $0.key < $1.key }) where parentOf[pid] == parent {
                ordered.append(m)
                visit(pid)
            }
        }
        visit(mainPID)
        return ordered
    }
}

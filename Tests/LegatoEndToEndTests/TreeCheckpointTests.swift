import Foundation
import Glibc
import Testing

/// A checkpoint holds every process of PROG's tree, taken in one pause: each is restored with its
/// pid, its parent, its process group, its memory and descriptors, the pipes between them connected
/// and holding what they held. Real programs, checkpointed mid-work, killed with kill -9 and
/// restored, compared with plain runs.
@Suite(.serialized) struct TreeCheckpointTests {
    init() throws { try requireAgentCapabilities() }

    /// The members of a checkpoint's tree, from PROG's image.
    func members(_ image: [String: Any]) -> [[String: Any]] { image["members"] as? [[String: Any]] ?? [] }

    func exe(_ member: [String: Any]) -> String { member["exe"] as? String ?? "" }

    @Test func aShellWaitingForItsChild() throws {
        // Caught while bash waits for a sleep: both come back, the sleep goes on sleeping, bash
        // collects its exit status and goes on.
        let script = "echo started; for i in 1 2 3 4 5 6 7 8; do sleep 0.4; echo tick $i; done; echo done"
        let image = try checkpointKillRestore(["bash", "-c", script], name: "shell-child", localMem: "16M", afterLines: 3)
        let m = members(image)
        #expect(m.count == 1 && exe(m[0]).hasSuffix("/sleep"), "the sleep is in the checkpoint: \(m.map(exe))")
        #expect((m.first?["links"] as? [String: Any])?["parent"] as? Int == image["pid"] as? Int, "its parent is PROG")
    }

    @Test func aPipelineWithDataInItsPipe() throws {
        // seq fills the pipe and blocks; the reader (a subshell of bash) sleeps, then reads it all.
        // Checkpointed while the pipe is full: it comes back holding the same bytes.
        let script = "echo start; seq 1 300000 | (sleep 1; echo reading; sleep 1.5; md5sum); echo end"
        let image = try checkpointKillRestore(["bash", "-c", script], name: "pipeline", localMem: "16M", afterLines: 2)
        let m = members(image)
        #expect(m.contains { exe($0).hasSuffix("/seq") }, "seq is in the checkpoint: \(m.map(exe))")
        let held = ([image] + m).flatMap { ($0["fds"] as? [[String: Any]]) ?? [] }.compactMap { $0["pipeData"] as? String }
        #expect(held.contains { (Data(base64Encoded: $0)?.count ?? 0) >= 4096 }, "the full pipe's bytes are saved with the checkpoint")
    }

    @Test func aPipelineOfStreamingStages() throws {
        // Three stages streaming through two pipes, each a fork of bash.
        let script = "for i in $(seq 1 60); do echo line $i; sleep 0.05; done | while read l; do echo \"got $l\"; done | cat -n"
        let image = try checkpointKillRestore(["bash", "-c", script], name: "stream", localMem: "16M", afterLines: 10)
        #expect(members(image).count >= 2, "every stage is in the checkpoint: \(members(image).map(exe))")
    }
}

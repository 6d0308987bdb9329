import Foundation
import Testing
@testable import LegatoAgent

/// The control socket's lines and process.json keep the keys scripts and `legato` read
/// (Docs/on-disk-format.md): snake_case, optional fields absent rather than null.
@Suite struct ControlMessagesTests {
    func object(_ bytes: [UInt8]) throws -> [String: Any] {
        #expect(bytes.last == 10, "one line, newline-terminated")
        return try #require(try JSONSerialization.jsonObject(with: Data(bytes.dropLast())) as? [String: Any])
    }

    @Test func requestsAndRepliesUseTheDocumentedKeys() throws {
        let req = try object(ControlJSON.line(ControlRequest(op: .checkpoint, crashAt: "after-prepare")))
        #expect(req["op"] as? String == "checkpoint" && req["crash_at"] as? String == "after-prepare")
        #expect(try object(ControlJSON.line(ControlRequest(op: .ping))).keys.sorted() == ["op"])

        let ok = try object(ControlJSON.line(ControlReply(ok: true, epoch: 3, parent: 2, pauseMs: 1.5, pages: 10, bytes: 40960, snapshot: false)))
        #expect(Set(ok.keys) == ["ok", "epoch", "parent", "pause_ms", "pages", "bytes", "snapshot"])
        #expect((ok["pause_ms"] as? NSNumber)?.doubleValue == 1.5)
        let refused = try object(ControlJSON.line(ControlReply.refused("a checkpoint is in progress")))
        #expect(Set(refused.keys) == ["ok", "error"] && refused["ok"] as? Bool == false)

        // What an older `legato checkpoint` would send still reads; nonsense is refused.
        let old = try ControlJSON.decoder.decode(ControlRequest.self, from: Data(#"{"op":"checkpoint","crash_at":"x"}"#.utf8))
        #expect(old == ControlRequest(op: .checkpoint, crashAt: "x"))
        #expect(throws: (any Error).self) { try ControlJSON.decoder.decode(ControlRequest.self, from: Data(#"{"op":"format-disk"}"#.utf8)) }
    }

    @Test func theProcessRecordKeepsItsKeys() throws {
        let r = ProcessRecord(name: "job", program: "/bin/sleep", arguments: ["5"], agentPid: 812, state: .exited, exitStatus: 0, updatedAt: 1.0)
        let o = try object(ControlJSON.line(r))
        #expect(Set(o.keys) == ["name", "program", "arguments", "agent_pid", "state", "exit_status", "updated_at"])
        #expect(o["state"] as? String == "exited")
        let running = ProcessRecord(name: "job", program: "p", arguments: [], agentPid: 1, state: .running, exitStatus: nil, updatedAt: 2)
        #expect(try object(ControlJSON.line(running))["exit_status"] == nil)
        #expect(try ControlJSON.decoder.decode(ProcessRecord.self, from: Data(ControlJSON.line(r).dropLast())) == r)
    }
}

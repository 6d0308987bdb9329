import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// The control socket of a named run (`<state dir>/processes/<name>/control.sock`), through which
/// `legato checkpoint NAME` asks for a checkpoint, and the run's `process.json` record beside it.
/// One request per connection, one JSON line each way (Docs/wire-protocol.md).
final class ControlSocket {
    let directory: String
    private let name: String
    private let program: String
    private let arguments: [String]
    /// The listening socket (-1 until `open`, and after `close`).
    private(set) var fd: Int32 = -1

    init(stateDirectory: String, name: String, program: String, arguments: [String]) {
        directory = stateDirectory + "/processes/" + name
        self.name = name
        self.program = program
        self.arguments = arguments
    }

    var isOpen: Bool { fd >= 0 }

    /// Creates the run's directory (mode 0700), removes what a crashed checkpoint left half-written
    /// (it never committed), listens, and records the run as running.
    func open() throws {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [] where entry.hasPrefix("epoch-") && entry.hasSuffix(".tmp") {
            try? FileManager.default.removeItem(atPath: directory + "/" + entry)
        }
        fd = try Socket.listenUnix(path: directory + "/control.sock")
        try writeRecord(state: .running, status: nil)
    }

    /// Stops listening and records how the run ended.
    func close(exitStatus: Int32?) {
        guard fd >= 0 else { return }
        Glibc.close(fd)
        fd = -1
        unlink(directory + "/control.sock")
        try? writeRecord(state: .exited, status: exitStatus)
    }

    func writeRecord(state: ProcessRecord.State, status: Int32?) throws {
        let record = ProcessRecord(name: name, program: program, arguments: arguments, agentPid: getpid(),
                                   state: state, exitStatus: status, updatedAt: Date().timeIntervalSince1970)
        try ControlJSON.encoder.encode(record).write(to: URL(fileURLWithPath: directory + "/process.json"))
    }

    /// Accepts one connection (the listening socket was readable) and reads its request line:
    /// the connection and the request, or nil for a request that does not parse (answered here).
    func accept() -> (connection: Int32, request: ControlRequest)? {
        var st = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let conn = Sys.accept(fd, &st, &len)
        guard conn >= 0 else { return nil }
        Socket.setTimeout(conn, seconds: 5)
        var line = [UInt8]()
        var byte: UInt8 = 0
        while line.count < 4096, recv(conn, &byte, 1, 0) == 1, byte != 10 { line.append(byte) }
        guard let request = try? ControlJSON.decoder.decode(ControlRequest.self, from: Data(line)) else {
            Self.reply(to: conn, .refused("unknown request"))
            return nil
        }
        return (conn, request)
    }

    /// Sends one JSON line and closes the connection (nil: a checkpoint nobody asked for by socket).
    static func reply(to conn: Int32?, _ r: ControlReply) {
        guard let conn else { return }
        let out = ControlJSON.line(r)
        _ = out.withUnsafeBytes { send(conn, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        Glibc.close(conn)
    }
}

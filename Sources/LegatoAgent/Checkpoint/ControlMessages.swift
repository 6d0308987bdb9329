import Foundation

/// What `legato checkpoint` and a named run's agent say over its control socket
/// (`<state dir>/processes/NAME/control.sock`): one JSON line each way, snake_case keys.
public struct ControlRequest: Codable, Equatable {
    public enum Op: String, Codable { case checkpoint, ping }
    public var op: Op
    /// Testing: the agent dies at this point of the checkpoint (Agent.CrashPoint).
    public var crashAt: String?

    public init(op: Op, crashAt: String? = nil) {
        self.op = op
        self.crashAt = crashAt
    }
}

/// The agent's answer: `ok`, and the committed checkpoint's figures, or why it was refused.
public struct ControlReply: Codable, Equatable {
    public var ok: Bool
    public var error: String?
    /// ping: the program's pid.
    public var pid: Int32?
    public var epoch: UInt64?
    public var parent: UInt64?
    public var pauseMs: Double?
    public var pages: Int?
    public var bytes: Int?
    /// The changed resident pages were kept in a copy-on-write snapshot.
    public var snapshot: Bool?

    public init(ok: Bool, error: String? = nil, pid: Int32? = nil, epoch: UInt64? = nil, parent: UInt64? = nil, pauseMs: Double? = nil,
                pages: Int? = nil, bytes: Int? = nil, snapshot: Bool? = nil) {
        self.ok = ok
        self.error = error
        self.pid = pid
        self.epoch = epoch
        self.parent = parent
        self.pauseMs = pauseMs
        self.pages = pages
        self.bytes = bytes
        self.snapshot = snapshot
    }

    public static func refused(_ why: String) -> ControlReply { ControlReply(ok: false, error: why) }
}

/// `<state dir>/processes/NAME/process.json`: which program a named run is, which agent serves it,
/// and whether it is still going on.
public struct ProcessRecord: Codable, Equatable {
    public enum State: String, Codable { case running, exited }
    public var name: String
    public var program: String
    public var arguments: [String]
    public var agentPid: Int32
    public var state: State
    public var exitStatus: Int32?
    public var updatedAt: Double

    public init(name: String, program: String, arguments: [String], agentPid: Int32, state: State, exitStatus: Int32?, updatedAt: Double) {
        self.name = name
        self.program = program
        self.arguments = arguments
        self.agentPid = agentPid
        self.state = state
        self.exitStatus = exitStatus
        self.updatedAt = updatedAt
    }

    public static func path(stateDirectory: String, name: String) -> String { stateDirectory + "/processes/" + name + "/process.json" }

    /// The record of run `name`, if it has one that reads.
    public static func load(stateDirectory: String, name: String) -> ProcessRecord? {
        guard let data = FileManager.default.contents(atPath: path(stateDirectory: stateDirectory, name: name)) else { return nil }
        return try? ControlJSON.decoder.decode(ProcessRecord.self, from: data)
    }
}

/// The control socket's and process.json's JSON: snake_case keys. (Keys are not sorted: sorting
/// loads ICU's collation data, 40 ms from a cold disk inside a restore's resume.)
public enum ControlJSON {
    public static var encoder: JSONEncoder {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        return e
    }

    public static var decoder: JSONDecoder {
        let d = JSONDecoder()
        d.keyDecodingStrategy = .convertFromSnakeCase
        return d
    }

    /// One line: the JSON and a newline.
    public static func line<T: Encodable>(_ value: T) -> [UInt8] {
        ((try? encoder.encode(value)).map { [UInt8]($0) } ?? Array("{}".utf8)) + [10]
    }
}

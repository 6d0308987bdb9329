import ArgumentParser
import Foundation
import Glibc
import LegatoAgent
import LegatoCore
import LegatoSystem

struct CheckpointCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Checkpoint a named run now; exits 0 once the checkpoint is committed."
    )

    @Argument(help: "The run's name (legato run --name NAME).")
    var name: String

    @Option(name: .customLong("state-dir"), help: "The state directory of the run.")
    var stateDir: String?

    @Option(help: "The cluster's coordinator (the run itself must be on this machine: its control socket is in the state directory).")
    var coordinator: CoordinatorOption?

    @Option(name: .customLong("crash-at"), help: .hidden)
    var crashAt: String?

    func run() throws {
        guard validProcessName(name) else { throw ValidationError("invalid name '\(name)'") }
        let dir = (stateDir ?? defaultStateDirectory()) + "/processes/" + name
        let fd: Int32
        do { fd = try Socket.connectUnix(path: dir + "/control.sock") } catch {
            writeError("legato: no run named \(name) is going on (\(dir)/control.sock: \(error))")
            throw ExitCode(1)
        }
        defer { close(fd) }
        Socket.setTimeout(fd, seconds: 600)
        // (crash_at, for tests: the agent dies there.)
        let request = ControlJSON.line(ControlRequest(op: .checkpoint, crashAt: crashAt))
        try request.withUnsafeBytes { try Socket.writeFully(fd, [$0]) }
        var reply = [UInt8]()
        var byte: UInt8 = 0
        while recv(fd, &byte, 1, 0) == 1, byte != 10 { reply.append(byte) }
        guard let d = try? ControlJSON.decoder.decode(ControlReply.self, from: Data(reply)) else {
            writeError("legato: the run \(name) did not answer the checkpoint request")
            throw ExitCode(1)
        }
        guard d.ok else {
            writeError("legato: checkpoint of \(name) refused: \(d.error ?? "unknown reason")")
            throw ExitCode(1)
        }
        let pause = d.pauseMs ?? 0
        let pages = d.pages ?? 0
        let cow = d.snapshot == true ? ", copy-on-write" : ""
        print("checkpoint \(name) epoch \(d.epoch.map(String.init) ?? "?") committed: paused \(String(format: "%.1f", pause)) ms, \(pages) pages (\(formatSize(UInt64(pages) * 4096))\(cow))")
    }
}

struct RestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Bring a named run back from its newest committed checkpoint (or --epoch N) and run it in the foreground."
    )

    @Argument(help: "The run's name.")
    var name: String

    @Option(help: "The checkpoint to restore (default: the newest committed one).")
    var epoch: UInt64?

    @Flag(name: .customLong("tcp-close"),
          help: "Bring TCP connections back reset (the program's next call on one fails, its peer gets a reset) instead of going on with TCP_REPAIR.")
    var tcpClose = false

    @OptionGroup var options: MemoryOptions

    func run() throws {
        guard validProcessName(name) else { throw ValidationError("invalid name '\(name)'") }
        if let busy = runningAgent(stateDirectory: options.stateDirectory, name: name) {
            writeError("legato: the run \(name) is going on (legato run pid \(busy)); stop it before restoring")
            throw ExitCode(1)
        }
        let store: CheckpointStore
        let where_: String
        if let c = options.coordinator?.endpoint {
            store = try ClusterCheckpointStore(name: name, coordinator: c, secret: try options.secret.load())
            where_ = "on the coordinator at \(c)"
        } else {
            store = LocalImageStore(stateDirectory: options.stateDirectory, name: name)
            where_ = "in \(options.stateDirectory)"
        }
        guard let e = try epoch ?? store.newestEpoch() else {
            writeError("legato: no committed checkpoint of \(name) \(where_)")
            throw ExitCode(1)
        }
        var source: RestoreSource
        let reading = monotonicNanos()
        do {
            source = try store.load(epoch: e)
            source.readMillis = Double(monotonicNanos() - reading) / 1e6
        } catch {
            writeError("legato: cannot restore \(name) epoch \(e): \(error)")
            throw ExitCode(1)
        }
        let code = try options.runAgent(program: source.image.exe, arguments: [], noPIDNamespace: false) { c in
            c.name = name
            c.restore = source
            c.restoreTCPClosed = tcpClose
        }
        throw ExitCode(code)
    }
}

struct LsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ls", abstract: "List named runs and their checkpoints.")

    @Flag(help: "Print JSON: {\"processes\":[{\"name\",\"state\",\"checkpoints\":[{\"epoch\",\"committed_at\",\"pause_ms\",\"pages\",\"bytes\"}]}]}.")
    var json = false

    @Option(name: .customLong("state-dir"), help: "The state directory.")
    var stateDir: String?

    @Option(help: "The cluster's coordinator: list the checkpoints it has committed.")
    var coordinator: CoordinatorOption?

    @OptionGroup var secret: SecretOptions

    func run() throws {
        let state = stateDir ?? defaultStateDirectory()
        var list: [ListedProcess] = []
        let names = try coordinator.map { try ClusterCheckpointStore.names(coordinator: $0.endpoint, secret: try secret.load()) }
            ?? LocalImageStore.names(stateDirectory: state)
        for name in names where validProcessName(name) {
            let store: CheckpointStore = try coordinator.map { try ClusterCheckpointStore(name: name, coordinator: $0.endpoint, secret: try secret.load()) }
                ?? LocalImageStore(stateDirectory: state, name: name)
            let running = runningAgent(stateDirectory: state, name: name) != nil
            let record = ProcessRecord.load(stateDirectory: state, name: name)
            let stateText = running ? "running" : (record?.state == .exited ? "exited" : "stopped")
            let checkpoints = try store.committed().map {
                ListedCheckpoint(epoch: $0.epoch, committedAt: $0.committedAt, pauseMs: $0.pauseMillis, pages: $0.pages,
                                 bytes: $0.pages * 4096, parent: $0.parent)
            }
            list.append(ListedProcess(name: name, state: stateText, checkpoints: checkpoints))
        }
        if json {
            let e = JSONEncoder()
            e.keyEncodingStrategy = .convertToSnakeCase
            e.outputFormatting = [.sortedKeys]
            print(String(decoding: try e.encode(ProcessListing(processes: list)), as: UTF8.self))
            return
        }
        if list.isEmpty { print("no named runs in \(state)"); return }
        for p in list {
            print("\(p.name)  \(p.state)  \(p.checkpoints.count) checkpoint(s)")
            for c in p.checkpoints {
                let when = Date(timeIntervalSince1970: c.committedAt)
                print("  epoch \(c.epoch)  \(when)  paused \(String(format: "%.1f", c.pauseMs)) ms  \(formatSize(UInt64(c.bytes)))")
            }
        }
    }
}

/// What `legato ls --json` prints: `{"processes":[{"name","state","checkpoints":[{"epoch","committed_at",
/// "pause_ms","pages","bytes","parent"}]}]}` ("parent" only for an increment).
struct ProcessListing: Encodable {
    var processes: [ListedProcess]
}

struct ListedProcess: Encodable {
    var name: String
    /// running, exited or stopped (killed, or its agent died).
    var state: String
    var checkpoints: [ListedCheckpoint]
}

struct ListedCheckpoint: Encodable {
    var epoch: UInt64
    var committedAt: Double
    var pauseMs: Double
    var pages: Int
    var bytes: Int
    var parent: UInt64?
}

import ArgumentParser
import Foundation
import Glibc
import LegatoAgent
import LegatoClients
import LegatoCore
import LegatoSystem

/// Options `legato run` and `legato restore` share: where memory lives and how much stays local.
struct MemoryOptions: ParsableArguments {
    @Option(help: "Memory nodes, HOST:PORT[,HOST:PORT...]. Default: an embedded node on loopback.")
    var memory: String?

    @Option(help: "Join a cluster: its coordinator, HOST:PORT, or its coordinators HOST:PORT,HOST:PORT... (instead of --memory).")
    var coordinator: CoordinatorOption?

    @Option(name: .customLong("local-mem"), help: "Most of PROG's managed memory kept resident locally (e.g. 64M). Default: half of physical memory.")
    var localMem: ByteSize?

    @OptionGroup var secret: SecretOptions

    @Option(name: .customLong("stats-json"), help: "Write the run's counters as JSON to FILE when PROG exits.")
    var statsJSON: String?

    @OptionGroup var metrics: MetricsOptions

    @Option(help: "Most pages fetched ahead on a sequential fault stream.")
    var prefetch: Int = 128

    @Option(name: .customLong("embedded-capacity"), help: "Capacity of the embedded memory node. Default: half of physical memory.")
    var embeddedCapacity: ByteSize?

    @Option(name: .customLong("state-dir"), help: "Where named runs keep their checkpoints (default $XDG_STATE_HOME/legato, else ~/.local/state/legato).")
    var stateDir: String?

    @Option(name: .customLong("checkpoint-every"), help: "With a name: checkpoint every DURATION (e.g. 30s, 5m, 500ms, 1h).")
    var checkpointEvery: Duration?

    @Option(name: .customLong("snapshot-above"), help: .hidden)
    var snapshotAbovePages: Int?

    @Option(name: .customLong("memory-replication"),
            help: "How the run's pages outlive a memory node: log (with --coordinator, the default on a cluster with log nodes: each store is logged on log nodes first, and a dead node's pages are rebuilt on the others while the run goes on), mirror (two or more memory nodes: each store goes to two of them, and a dead node's pages are read from their other copy at once), adaptive (with --coordinator: mirror while the memory nodes' free memory is above --mirror-above, log below it) or none (its death stops the run; the default without log nodes).")
    var memoryReplication: MemoryReplication?

    @Option(name: .customLong("mirror-above"), help: "With --memory-replication adaptive: mirror stores while the memory nodes' free memory is at least PERCENT of their capacity, log them below (default 50).")
    var mirrorAbove: Double?

    func validate() throws {
        if let m = memory, Endpoint.list(m) == nil { throw ValidationError("--memory wants HOST:PORT[,HOST:PORT...], got '\(m)'") }
        if memory != nil && coordinator != nil { throw ValidationError("give --memory or --coordinator, not both") }
        if let l = localMem, l.bytes < 64 * 1024 { throw ValidationError("--local-mem \(l) is below the 64K minimum") }
        if prefetch < 1 || prefetch > 256 { throw ValidationError("--prefetch must be between 1 and 256") }
        if let m = memoryReplication, m.logs && coordinator == nil {
            throw ValidationError("--memory-replication \(m) needs --coordinator: the memory nodes find log nodes through it")
        }
        if let p = mirrorAbove {
            if memoryReplication != .adaptive { throw ValidationError("--mirror-above goes with --memory-replication adaptive") }
            if !(0...100).contains(p) { throw ValidationError("--mirror-above wants a percentage from 0 to 100, got \(p)") }
        }
        if memoryReplication == .mirror && coordinator == nil && (memory.flatMap { Endpoint.list($0) }?.count ?? 0) < 2 {
            throw ValidationError("--memory-replication mirror needs two or more memory nodes: --coordinator, or --memory HOST:PORT,HOST:PORT")
        }
    }

    var stateDirectory: String { stateDir ?? defaultStateDirectory() }

    /// Log on a cluster with a live log node (the memory nodes log there), else none.
    func defaultReplication(_ secret: ClusterSecret) throws -> MemoryReplication {
        guard let c = coordinator?.endpoint else { return .none }
        let client = try CoordinatorClient(endpoint: c, secret: secret, ioTimeoutSeconds: 10)
        defer { client.close() }
        return try client.nodes().nodes.contains { $0.role == .log && $0.alive } ? .log : .none
    }

    /// Runs an agent with `configure` applied; starts and stops the embedded memory node if needed.
    /// Returns the exit code for `legato` (PROG's status, 125 for the agent's own failures).
    func runAgent(program: String, arguments: [String], noPIDNamespace: Bool, configure: (inout Agent.Config) -> Void) throws -> Int32 {
        let inherited = Agent.InheritedSignalState.capture()
        Agent.blockAgentSignals()
        let physical = UInt64(sysconf(Int32(_SC_PHYS_PAGES))) * UInt64(sysconf(Int32(_SC_PAGESIZE)))
        var embedded: ChildDaemon?
        let nodes: [Endpoint]
        let clusterSecret: ClusterSecret
        if let m = memory {
            nodes = Endpoint.list(m)!
            clusterSecret = try secret.load()
        } else if coordinator != nil {
            nodes = []
            clusterSecret = try secret.load()
        } else {
            clusterSecret = ClusterSecret.random()
            let capacity = embeddedCapacity?.bytes ?? physical / 2
            do {
                embedded = try ChildDaemon(name: "memory node", arguments: ["memd", "--capacity", String(capacity), "--name", "embedded-memd"],
                                           secret: .pipe(clusterSecret))
            } catch {
                writeError("legato: cannot start the embedded memory node: \(error)")
                return 125
            }
            nodes = [embedded!.endpoint]
        }
        defer { embedded?.stop() }
        var config = Agent.Config(program: program, arguments: arguments, environment: currentEnvironment(),
                                  memoryNodes: nodes, localBudgetBytes: localMem?.bytes ?? physical / 2,
                                  secret: clusterSecret, statsJSONPath: statsJSON)
        config.prefetchMaxPages = prefetch
        config.metrics = metrics.metrics
        config.coordinator = coordinator?.endpoint
        config.memoryReplication = try memoryReplication ?? defaultReplication(clusterSecret)
        if let p = mirrorAbove { config.mirrorAbovePercent = p }
        config.newPIDNamespace = !noPIDNamespace
        config.stateDirectory = stateDirectory
        config.checkpointEverySeconds = checkpointEvery?.seconds
        if let n = snapshotAbovePages {  // (for tests: the count alone decides)
            config.snapshotAbovePages = max(1, n)
            config.snapshotCopyRatio = 0
        }
        configure(&config)
        if config.checkpointEverySeconds != nil && config.name == nil {
            writeError("legato: --checkpoint-every needs --name")
            return 125
        }
        do {
            return try Agent(config: config).run(inheritedSignals: inherited)
        } catch {
            writeError("legato: \(error)")
            return 125
        }
    }
}

extension MemoryReplication: ExpressibleByArgument {}

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a program with its memory on memory nodes, within a local memory budget.",
        discussion: """
        With no --memory, an embedded memory node is started on loopback for the run.
        With --name, the run can be checkpointed (legato checkpoint NAME) and restored (legato restore NAME).
        Example: legato run --local-mem 64M -- python3 -c 'print(sum(range(10**7)))'
        """
    )

    @OptionGroup var options: MemoryOptions

    @Option(help: "Name the run, so that it can be checkpointed and restored.")
    var name: String?

    @Flag(name: .customLong("no-pid-namespace"), help: .hidden)
    var noPIDNamespace = false

    @Option(name: .customLong("keep-fd"), help: ArgumentHelp("Give PROG this inherited descriptor too (repeatable). PROG gets stdin, stdout and stderr; other descriptors legato run inherited are closed, but those systemd passes (LISTEN_FDS).", valueName: "N"))
    var keepFD: [Int32] = []

    @Argument(parsing: .captureForPassthrough, help: "The program and its arguments (after --).")
    var command: [String] = []

    func validate() throws {
        if command.first == "--" && command.count == 1 || command.isEmpty { throw ValidationError("no program given: legato run [options] -- PROG [ARGS...]") }
        if let n = name, !validProcessName(n) { throw ValidationError("--name must be 1-64 of A-Z a-z 0-9 . _ -") }
        for fd in keepFD {
            guard fd > 2 else { throw ValidationError("--keep-fd \(fd): stdin, stdout and stderr are always PROG's") }
            guard fcntl(fd, F_GETFD) >= 0 else { throw ValidationError("--keep-fd \(fd): legato run has no descriptor \(fd)") }
        }
    }

    func run() throws {
        let argv = command.first == "--" ? Array(command.dropFirst()) : command
        if let n = name, let busy = runningAgent(stateDirectory: options.stateDirectory, name: n) {
            writeError("legato: a run named \(n) is going on already (legato run pid \(busy))")
            throw ExitCode(125)
        }
        let code = try options.runAgent(program: argv[0], arguments: Array(argv.dropFirst()), noPIDNamespace: noPIDNamespace) { c in
            c.name = name
            c.keptDescriptors = KeptDescriptors(keep: keepFD, environment: ProcessInfo.processInfo.environment)
        }
        throw ExitCode(code)
    }
}

func validProcessName(_ n: String) -> Bool {
    !n.isEmpty && n.count <= 64 && n.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "_" || $0 == "-") }
}

/// The pid of the `legato run` serving NAME's control socket, if one answers.
func runningAgent(stateDirectory: String, name: String) -> Int32? {
    let dir = stateDirectory + "/processes/" + name
    guard let fd = try? Socket.connectUnix(path: dir + "/control.sock") else { return nil }
    close(fd)
    return ProcessRecord.load(stateDirectory: stateDirectory, name: name)?.agentPid ?? 0
}

func writeError(_ s: String) {
    FileHandle.standardError.write(Data((s + "\n").utf8))
}

/// The environment exactly as we got it (order and all).
func currentEnvironment() -> [String] {
    var out: [String] = []
    var p = environ
    while let entry = p.pointee {
        out.append(String(cString: entry))
        p += 1
    }
    return out
}

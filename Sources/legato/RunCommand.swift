import ArgumentParser
import Foundation
import Glibc
import LegatoAgent
import LegatoCore

struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a program with its memory on memory nodes, within a local memory budget.",
        discussion: """
        With no --memory, an embedded memory node is started on loopback for the run.
        Example: legato run --local-mem 64M -- python3 -c 'print(sum(range(10**7)))'
        """
    )

    @Option(help: "Memory nodes, HOST:PORT[,HOST:PORT...]. Default: an embedded node on loopback.")
    var memory: String?

    @Option(help: "Join a cluster: its coordinator, HOST:PORT (instead of --memory).")
    var coordinator: Endpoint?

    @Option(name: .customLong("local-mem"), help: "Most of PROG's managed memory kept resident locally (e.g. 64M). Default: half of physical memory.")
    var localMem: ByteSize?

    @OptionGroup var secret: SecretOptions

    @Option(name: .customLong("stats-json"), help: "Write the run's counters as JSON to FILE when PROG exits.")
    var statsJSON: String?

    @Option(help: "Most pages fetched ahead on a sequential fault stream.")
    var prefetch: Int = 128

    @Option(name: .customLong("embedded-capacity"), help: "Capacity of the embedded memory node. Default: half of physical memory.")
    var embeddedCapacity: ByteSize?

    @Flag(name: .customLong("no-pid-namespace"), help: .hidden)
    var noPIDNamespace = false

    @Argument(parsing: .captureForPassthrough, help: "The program and its arguments (after --).")
    var command: [String] = []

    func validate() throws {
        if command.first == "--" && command.count == 1 || command.isEmpty { throw ValidationError("no program given: legato run [options] -- PROG [ARGS...]") }
        if let m = memory, Endpoint.list(m) == nil { throw ValidationError("--memory wants HOST:PORT[,HOST:PORT...], got '\(m)'") }
        if memory != nil && coordinator != nil { throw ValidationError("give --memory or --coordinator, not both") }
        if let l = localMem, l.bytes < 64 * 1024 { throw ValidationError("--local-mem \(l) is below the 64K minimum") }
        if prefetch < 1 || prefetch > 256 { throw ValidationError("--prefetch must be between 1 and 256") }
    }

    func run() throws {
        let inherited = Agent.InheritedSignalState.capture()
        Agent.blockAgentSignals()
        let argv = command.first == "--" ? Array(command.dropFirst()) : command
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
                throw ExitCode(125)
            }
            nodes = [embedded!.endpoint]
        }
        var config = Agent.Config(program: argv[0], arguments: Array(argv.dropFirst()),
                                  environment: currentEnvironment(),
                                  memoryNodes: nodes, localBudgetBytes: localMem?.bytes ?? physical / 2,
                                  secret: clusterSecret, statsJSONPath: statsJSON)
        config.prefetchMaxPages = prefetch
        config.coordinator = coordinator
        config.newPIDNamespace = !noPIDNamespace
        let code: Int32
        do {
            let agent = try Agent(config: config)
            code = try agent.run(inheritedSignals: inherited)
        } catch {
            writeError("legato: \(error)")
            embedded?.stop()
            throw ExitCode(125)
        }
        embedded?.stop()
        throw ExitCode(code)
    }
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

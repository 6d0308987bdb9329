import Foundation
import Glibc
import LegatoCore
import LegatoMetrics
import LegatoSystem
import LegatoWire

/// The processor-side agent: launches PROG under ptrace + seccomp, takes its userfaultfd, serves
/// its page faults from memory nodes, and evicts to keep the resident set within the local budget.
///
/// Threads: everything that touches PROG (ptrace, uffd, injection, the page table) runs on the
/// thread that calls `run()` — ptrace binds a tracee to one tracer thread. Dirty pages go to memory
/// nodes on the write-back thread.
public final class Agent {
    public struct Config {
        public var program: String
        public var arguments: [String]
        public var environment: [String]
        public var memoryNodes: [Endpoint]
        public var coordinator: Endpoint?
        /// A name makes the run checkpointable (`legato checkpoint NAME`); its state lives under `stateDirectory`.
        public var name: String?
        public var stateDirectory = defaultStateDirectory()
        /// With a name: take a checkpoint this often.
        public var checkpointEverySeconds: Double?
        /// Changed resident pages above which a checkpoint keeps them in a copy-on-write snapshot
        /// (a fork's page-table copy, ~80 ns a resident page) rather than copying them in the pause
        /// (0.7-2 µs a page, more where evictions left the resident pages scattered).
        public var snapshotAbovePages = 4096
        /// ... and only when they are at least 1/this of all resident pages (the fork copies every
        /// resident page's table entry, about a fifth of a page copy each); 0: the count alone decides.
        public var snapshotCopyRatio = 5
        /// Restore this checkpoint instead of starting PROG afresh.
        public var restore: RestoreSource?
        /// Its TCP connections come back reset (aborted once made again), not going on.
        public var restoreTCPClosed = false
        public var localBudgetBytes: UInt64
        public var secret: ClusterSecret
        public var statsJSONPath: String?
        public var newPIDNamespace = true
        public var prefetchMaxPages = 128
        public var evictionBatchPages: Int?
        /// Serve Prometheus metrics at http://HOST:PORT/metrics while the run lasts.
        public var metrics: Endpoint?
        /// Inherited descriptors above stderr that PROG keeps (the rest are closed at its exec).
        public var keptDescriptors = KeptDescriptors()
        /// How the run's pages survive a memory node's death.
        public var memoryReplication = MemoryReplication.none
        /// Adaptive replication mirrors while the memory nodes' free share is at least this (percent).
        public var mirrorAbovePercent: Double = 50

        public init(program: String, arguments: [String], environment: [String], memoryNodes: [Endpoint],
                    localBudgetBytes: UInt64, secret: ClusterSecret, statsJSONPath: String?) {
            self.program = program
            self.arguments = arguments
            self.environment = environment
            self.memoryNodes = memoryNodes
            self.localBudgetBytes = localBudgetBytes
            self.secret = secret
            self.statsJSONPath = statsJSONPath
        }
    }

    let config: Config
    let log: Logger

    // The program
    var program = ProgramProcess()
    /// PROG's main thread (its pid, as the agent sees it).
    var mainPID: pid_t { program.pid }
    /// Every thread of PROG (and what it forks), their stops, freeze and thaw.
    let tracer: Tracer
    /// A restore's progress (a run that is not a restore leaves it empty).
    var restore = RestoreState()

    // Its managed memory
    /// The run's local memory budget, over every address space it manages.
    let budget: LocalBudget
    /// The program's address space (its mm): page table, userfaultfd and fault handler.
    let mm: AddressSpace
    /// Every managed address space of the run by the pid of its process: PROG's (`mm`) and those
    /// of the processes it forked.
    var spaces: [pid_t: AddressSpace] = [:]
    /// The keys pages are stored under, for every address space of the run.
    let keys = KeyAllocator()
    /// Remote copies a fork left to more than one address space.
    let sharedKeys = SharedKeys()
    /// Keeps the resident set within the budget (made once the pool is).
    var evictor: Evictor!
    /// Most pages one fault installs (prefetch or zero-fill ahead), kept below a quarter of the budget.
    let prefetchWindow: Int

    // Remote memory and write-back
    let space: UInt64
    let token: [UInt8]
    var pool: RemotePool!
    /// Evicted pages on their way to memory nodes, and the write-back thread that stores them.
    var writeBack: WriteBackBuffer!

    // Event loop
    var signalFD: Int32 = -1
    var pollFDs: [pollfd] = []
    /// A named run's control socket and checkpoints (nil for a run without a name).
    let control: ControlSocket?
    let checkpointer: Checkpointer?
    /// When the agent was created (restore timing).
    let createdAt = monotonicNanos()
    /// Wakes a fault that was dropped (a bug; logged and counted).
    let liveness: LivenessGuard
    var stopsPending = false  // SIGCHLD seen; waitpid not yet drained
    var fatalError: String?

    /// Pages of zeros, as many as one fault installs ahead at most.
    let zeroPages: UnsafeMutableRawPointer
    /// Brings the program's remote pages in (made once the pool is).
    var fetcher: Fetcher!
    /// Work under way after memory nodes' deaths (rebuilding their pages, giving pages a mirror again).
    var recoveries: [ObjectIdentifier: any RecoveryTask] = [:]
    /// Recoveries done whose nodes are still logging what they rebuilt (their dead logs are the
    /// fallbacks of a recovery of those nodes).
    var loggingBehind: [NodeRecovery] = []
    /// With a coordinator: the memory nodes its failure detector declares dead.
    var membership: MembershipWatch?
    /// Promotion is never `awaitingRecovery`'s: faults parked on a node found dead while its pages
    /// moved to their mirrors fault again at the next round of the event loop.
    var resumeParkedSoon = false
    /// Counts promotions (RemotePool.singleCopy).
    var promotions: UInt64 = 0

    var stats = AgentStats()
    /// With `--metrics`: the run's /metrics endpoint.
    var metrics: RunMetrics?
    let faultCounters = FaultHandler.Counters()

    public init(config: Config) throws {
        self.config = config
        log = LegatoLogging.logger("legato.run")
        budget = LocalBudget(pages: max(16, Int(config.localBudgetBytes / UInt64(Page.size))))
        mm = AddressSpace(budget: budget, keys: keys)
        tracer = Tracer(log: log)
        liveness = LivenessGuard(log: log)
        prefetchWindow = max(1, min(config.prefetchMaxPages, budget.pages / 4))
        space = Sys.randomBytes(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) } | 1
        token = config.name.map { ClusterCheckpointStore.agentToken(name: $0, secret: config.secret) } ?? Sys.randomBytes(Handshake.tokenSize)
        if let name = config.name {
            control = ControlSocket(stateDirectory: config.stateDirectory, name: name, program: config.program, arguments: config.arguments)
            checkpointer = try Checkpointer(name: name, config: config, log: log)
        } else {
            control = nil
            checkpointer = nil
        }
        zeroPages = UnsafeMutableRawPointer.allocate(byteCount: prefetchWindow * Page.size, alignment: Page.size)
        memset(zeroPages, 0, prefetchWindow * Page.size)
        tracer.events = self
        tracer.isStopping = { [unowned self] in fatalError != nil }
        tracer.onFreezingChange = { space, frozen in space.faults?.singlePagesOnly = frozen }
    }

    deinit {
        zeroPages.deallocate()
    }

    /// How long the event loop polls before it sleeps (LEGATO_UFFD_SPIN_US, 50 µs by default).
    static let uffdSpinNanos = Agent.spinNanos("LEGATO_UFFD_SPIN_US", 50)

    static func spinNanos(_ env: String, _ defaultMicros: UInt64) -> UInt64 {
        (getenv(env).flatMap { UInt64(String(cString: $0)) } ?? defaultMicros) * 1000
    }

    /// The signals the agent handles itself; block them in every thread before starting any.
    public static func blockAgentSignals() {
        var set = sigset_t()
        sigemptyset(&set)
        for s in [SIGCHLD, SIGTERM, SIGHUP, SIGINT, SIGQUIT] { sigaddset(&set, s) }
        pthread_sigmask(SIG_BLOCK, &set, nil)
        signal(SIGPIPE, SIG_IGN)
    }

    /// Runs PROG to completion. Returns the exit code `legato run` should exit with
    /// (PROG's status, 128+N if a signal killed it).
    public func run(inheritedSignals: InheritedSignalState) throws -> Int32 {
        signalFD = try makeSignalFD()
        try startMetrics()
        pool = try RemotePool(endpoints: config.memoryNodes, coordinator: config.coordinator, secret: config.secret, token: token, space: space,
                              ephemeral: config.name == nil, replication: config.memoryReplication, log: log)
        let thread = try WriteBack(endpoints: pool.endpoints, secret: config.secret, token: token, space: space,
                                   logged: config.memoryReplication.logs)
        pool.onNewNode = { [thread] ep in thread.addEndpoint(ep) }
        writeBack = WriteBackBuffer(thread: thread, pool: pool, log: log)
        writeBack.onNodeFailure = { [unowned self] in memoryNodeFailed($0, why: $1) }
        if let c = config.coordinator {
            let adaptive = config.memoryReplication == .adaptive
            let sockets = pool.sockets
            let watch = try MembershipWatch(coordinator: c, secret: config.secret, refreshMillis: adaptive ? 1000 : 5000, log: log) {
                sockets.shutDown($0, why: Agent.declaredDead)
            }
            membership = watch
            if adaptive {
                let threshold = config.mirrorAbovePercent
                pool.mirrorNow = { (watch.freePercent ?? 100) >= threshold }
            }
            writeBack.alsoServe = (watch.wakeFD, { [unowned self] in memoryNodesDeclaredDead(watch.takeDead()) })
        }
        evictor = Evictor(spaces: { [unowned self] in managedSpaces }, budget: budget, pool: pool, writeBack: writeBack, tracer: tracer,
                          batchPages: config.evictionBatchPages ?? min(1024, max(16, budget.pages / 16)), prefetchWindow: prefetchWindow, log: log)
        evictor.serve = { [unowned self] in try loop(until: $0) }
        evictor.serveWhileInjecting = { [unowned self] in
            do { try pollOnce(reapStops: false, sleepMillis: 5) } catch { fail("serving faults during eviction: \(error)") }
        }
        evictor.isStopping = { [unowned self] in fatalError != nil }
        evictor.releaseShared = { [unowned self] in releaseRemoteCopies(keys: $0) }
        fetcher = Fetcher(pool: pool, budget: budget, prefetchWindow: prefetchWindow,
                          maxPrefetchPages: config.prefetchMaxPages, log: log)
        fetcher.onFailure = { [unowned self] in fail($0) }
        fetcher.onNodeFailure = { [unowned self] node, why in
            // (A read cut short by the watch: the coordinator's word is why.)
            memoryNodeFailed(node, why: pool.sockets.reason(pool.nodes[node].endpoint.description) ?? why)
        }
        fetcher.isStopping = { [unowned self] in fatalError != nil }

        let path: String
        let spawned: Sys.Spawned
        do {
            path = try Launcher.resolve(config.program)
            spawned = try Launcher.launch(path: path, arguments: [config.program] + config.arguments,
                                          environment: config.environment, signals: inheritedSignals.state,
                                          newPIDNamespace: config.newPIDNamespace, kept: config.keptDescriptors)
        } catch let e as Launcher.LaunchError {
            writeStderr("legato: \(e.description)\n")
            shutdownRemote()
            return e.exitCode
        }
        program = ProgramProcess(spawned)
        restore.pending = config.restore
        try control?.open()
        spaces[mainPID] = mm
        tracer.adopt(program: mainPID, space: mm)
        log.debug("started \(path) as pid \(mainPID) (reaper \(program.reaperPID)), budget \(formatSize(UInt64(budget.pages * Page.size)))")

        do {
            try loop(until: { self.tracer.programStatus != nil || self.fatalError != nil })
        } catch {
            fatalError = fatalError ?? "\(error)"
        }
        if let why = fatalError {
            waitForCheckpoint()
            releaseReaper()
            control?.close(exitStatus: nil)
            kill(mainPID, SIGKILL)
            if program.reaperPID > 0 { kill(program.reaperPID, SIGKILL) }
            writeStderr("legato: stopped \(config.program) (pid \(mainPID)): \(why)\n")
            drainChildren()
            finish(exitStatus: nil)
            return 125
        }
        let status = tracer.programStatus!
        waitForCheckpoint()
        releaseReaper()
        dropEarlierSpaces()
        control?.close(exitStatus: status.exited ? status.exitCode : 128 + status.terminationSignal)
        finish(exitStatus: status.raw)
        drainChildren()
        if status.exited { return status.exitCode }
        return 128 + status.terminationSignal
    }

    /// A snapshot of the signal state PROG inherits, taken before the agent changes its own.
    public struct InheritedSignalState {
        let state: Launcher.InheritedSignals
        public static func capture() -> InheritedSignalState { InheritedSignalState(state: .capture()) }
    }

    // MARK: the event loop

    /// Serves uffd events, ptrace stops and write-back completions until `done()` holds.
    func loop(until done: () -> Bool) throws {
        while !done() {
            try pollOnce(reapStops: true, sleepMillis: restore.backing != nil ? (restore.fillStalled ? 1 : 0) : periodicCheckpointDue.map { Int32(clamping: max(1, min(1000, Int64($0) - Int64(monotonicNanos() / 1_000_000)))) } ?? 1000)
            if fatalError != nil { return }
            if !tracer.freezing { try maybeEvict() }
            if !tracer.freezing { takePeriodicCheckpoint() }
            if !tracer.freezing && restore.backing != nil { try fillFromRestore() }
            publishMetricsIfDue()
        }
    }

    /// One round of the event loop: waits for something to do (polling briefly before it sleeps),
    /// then serves fetch answers, uffd events, write-back completions and, if `reapStops`, ptrace stops.
    /// Without `reapStops` (while a syscall is injected) ptrace stops are left to the injector.
    func pollOnce(reapStops reap: Bool, sleepMillis: Int32 = 1000) throws {
        if resumeParkedSoon {
            resumeParkedSoon = false
            fetcher.resumeParked()
        }
        let nodes = fetcher.connections
        pollFDs.removeAll(keepingCapacity: true)
        pollFDs.append(pollfd(fd: signalFD, events: Int16(POLLIN), revents: 0))
        pollFDs.append(pollfd(fd: writeBack.thread.wakeFD, events: Int16(POLLIN), revents: 0))
        let managed = managedSpaces
        for s in managed { pollFDs.append(pollfd(fd: s.pollFD, events: Int16(POLLIN), revents: 0)) }
        let firstNode = pollFDs.count
        for n in nodes { pollFDs.append(pollfd(fd: n.connection.fd, events: Int16(POLLIN), revents: 0)) }
        let firstRecovery = pollFDs.count
        let recovering = Array(recoveries.values)
        for r in recovering { pollFDs.append(pollfd(fd: r.doneFD, events: Int16(POLLIN), revents: 0)) }
        let watching = pollFDs.count
        pollFDs.append(pollfd(fd: membership?.wakeFD ?? -1, events: Int16(POLLIN), revents: 0))
        let serveControl = reap && checkpointer?.busy == false && !tracer.freezing && control?.isOpen == true
        let decided = reap && checkpointer?.inFlight != nil
        pollFDs.append(pollfd(fd: decided ? checkpointer!.doneFD : -1, events: Int16(POLLIN), revents: 0))
        pollFDs.append(pollfd(fd: serveControl ? control!.fd : -1, events: Int16(POLLIN), revents: 0))
        // Answers already received into a connection's buffer do not make its socket readable.
        let buffered = nodes.contains { $0.connection.hasBufferedInput }
        let busy = managed.contains { $0.faults.hasPending } || buffered
        // Poll without sleeping for a little first: on a VM, waking a halted vCPU costs more than
        // the wait for a fault or an answer that is due within microseconds.
        var n = pollFDs.withUnsafeMutableBufferPointer { poll($0.baseAddress, nfds_t($0.count), 0) }
        if n == 0 && !busy && Agent.uffdSpinNanos > 0 && !managed.isEmpty {
            let until = monotonicNanos() + Agent.uffdSpinNanos
            repeat {
                n = pollFDs.withUnsafeMutableBufferPointer { poll($0.baseAddress, nfds_t($0.count), 0) }
            } while n == 0 && monotonicNanos() < until
        }
        if n == 0 && !busy {
            n = pollFDs.withUnsafeMutableBufferPointer { poll($0.baseAddress, nfds_t($0.count), sleepMillis) }
        }
        if n < 0 && errno != EINTR { throw SystemError.fromErrno("poll") }
        let revents = pollFDs.map { $0.revents }
        for (k, node) in nodes.enumerated() where revents[firstNode + k] != 0 || node.connection.hasBufferedInput {
            try fetcher.receive(node: node.node)
            if fatalError != nil { return }
        }
        for (k, s) in managed.enumerated() where s.isManaged && (revents[2 + k] != 0 || s.faults.hasPending) {
            try handleUffd(s)
            if fatalError != nil { return }
        }
        if revents[1] != 0 { writeBack.processCompletions() }
        for (k, r) in recovering.enumerated() where revents[firstRecovery + k] != 0 { finishRecovery(r) }
        if revents[watching] != 0, let watch = membership { memoryNodesDeclaredDead(watch.takeDead()) }
        if revents[0] != 0 || n == 0 {
            readSignals()
            stopsPending = true
        }
        if n == 0 && reap && !tracer.freezing {
            liveness.check(managed, tracer: tracer, nothingOnItsWay: fetcher.inboundPages == 0 && fetcher.parkedPages == 0)
        }
        if reap && stopsPending {
            stopsPending = false
            try tracer.reapStops()
        }
        if reap && revents[revents.count - 2] != 0 { finishCheckpoint() }
        if serveControl && revents[revents.count - 1] != 0 { handleControl() }
    }

    /// The address spaces whose faults the agent serves now.
    var managedSpaces: [AddressSpace] {
        if spaces.count == 1 { return mm.isManaged ? [mm] : [] }
        return spaces.keys.sorted().compactMap { spaces[$0]!.isManaged ? spaces[$0] : nil }
    }

    func makeSignalFD() throws -> Int32 {
        try Sys.signalFD([SIGCHLD, SIGTERM, SIGHUP, SIGINT, SIGQUIT])
    }

    /// Reads pending signals: SIGCHLD only wakes us; termination signals go on to PROG.
    func readSignals() {
        while let (sig, code, _) = Sys.readSignalFD(signalFD) {
            if sig == SIGCHLD { continue }
            // SIGINT/SIGQUIT from the terminal reach PROG's process group directly; forward only what was sent to us.
            let fromTerminal = (sig == SIGINT || sig == SIGQUIT) && code == SI_KERNEL
            if !fromTerminal && mainPID > 0 {
                log.debug("forwarding signal \(sig) to pid \(mainPID)")
                kill(mainPID, sig)
            }
        }
    }

    // MARK: metrics

    func startMetrics() throws {
        guard let listen = config.metrics else { return }
        metrics = try RunMetrics(listen: listen, log: log, first: statsRecord(exitStatus: nil).metricsReport)
    }

    func publishMetricsIfDue() {
        metrics?.publishIfDue { statsRecord(exitStatus: nil).metricsReport }
    }

    // MARK: finishing

    func finish(exitStatus: Int32?) {
        writeBack?.thread.stop()
        membership?.stop()
        if let path = config.statsJSONPath {
            let json = statsRecord(exitStatus: exitStatus).json
            if !FileManager.default.createFile(atPath: path, contents: Data(json.utf8)) {
                writeStderr("legato: cannot write stats to \(path)\n")
            }
        }
        shutdownRemote()
        for s in spaces.values { s.reset() }
        metrics?.stop()
    }

    /// The run's numbers now, from every part.
    func statsRecord(exitStatus: Int32?) -> RunStatsRecord {
        RunStatsRecord(stats: stats, liveness: liveness, faults: faultCounters, fetches: fetcher?.counters ?? Fetcher.Counters(),
                       writeBacks: writeBack?.counters ?? WriteBackBuffer.Counters(), evictions: evictor?.counters ?? Evictor.Counters(),
                       budget: budget,
                       memoryNodes: pool?.endpoints.map { $0.description } ?? [], exitStatus: exitStatus)
    }

    func shutdownRemote() {
        writeBack?.thread.stop()
        pool?.dropEverywhere()
    }

    func releaseReaper() { program.releaseReaper() }

    /// Drops the spaces a restored run's earlier incarnation left on memory nodes (once).
    func dropEarlierSpaces() {
        restore.releaseEarlierSpaces?()
        restore.releaseEarlierSpaces = nil
    }

    /// Reaps what is left of PROG's namespace (children PROG left behind die with the namespace).
    func drainChildren() {
        releaseReaper()
        tracer.killAndReapAll()
        if program.reaperPID > 0 {
            kill(program.reaperPID, SIGKILL)
            _ = try? Sys.wait(program.reaperPID, nohang: false)
        }
    }

    func fail(_ message: String) {
        if fatalError == nil { fatalError = message }
    }
}

func writeStderr(_ s: String) {
    _ = s.withCString { write(2, $0, strlen($0)) }
}

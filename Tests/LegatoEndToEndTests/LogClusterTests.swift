import Foundation
import Glibc
import LegatoClients
import LegatoCore
import LegatoLogNode
import LegatoSegmentLog
import LegatoSystem
import LegatoTestSupport
import LegatoWire
import Testing

/// Log nodes as real daemons on loopback: replication through failures, restarts over damaged
/// files, a full disk, hostile peers.
@Suite(.serialized) struct LogClusterTests {
    func entries(_ n: Int, size: Int = 1024, seed: Int = 0) -> [LogEntry] {
        (0..<n).map { (i: Int) -> LogEntry in
            let payload: [UInt8] = (0..<size).map { (k: Int) -> UInt8 in UInt8(truncatingIfNeeded: k &* 7 &+ i &* 13 &+ seed) }
            return LogEntry(epoch: UInt32(i / 100), slab: UInt64(i % 4), payload: payload)
        }
    }

    /// Which alive log nodes hold each segment of `writer`, asked of the nodes themselves.
    func holders(_ cluster: TestCluster, writer: UInt64) throws -> [UInt64: [String]] {
        var out: [UInt64: [String]] = [:]
        for n in try cluster.status() where n["role"] as? String == "log" && n["state"] as? String == "alive" {
            let addr = n["address"] as! String
            let c = try LogNodeClient(endpoint: Endpoint(parsing: addr)!, secret: cluster.secret, token: [UInt8](repeating: 3, count: 32))
            for r in try c.list(writer: writer) { out[r.segment, default: []].append(addr) }
            c.close()
        }
        return out
    }

    @Test func appendsSurviveTheDeathOfALogNode() throws {
        let cluster = try TestCluster(memory: 0, log: 4)
        defer { cluster.down() }
        let writer: UInt64 = 0x5eed
        let log = try LogWriter(config: .init(writer: writer, replicas: 3, segmentBytes: 64 << 10, secret: cluster.secret,
                                              token: Sys.randomBytes(32), coordinator: cluster.coordinator))
        defer { log.close() }
        log.startMonitoring()
        let first = entries(150)
        try log.append(first)
        try log.sync()
        // Kill a node that holds replicas, while the log is open.
        let victim = log.placement.first!.nodes.first!.description
        cluster.kill9(address: victim)
        // Appends go on while the coordinator has not noticed yet (the failed replica is replaced).
        let second = entries(150, seed: 1)
        try log.append(second)
        try log.closeOpenSegment()
        try cluster.waitUntil("the coordinator declares \(victim) dead") {
            try cluster.status().contains { $0["address"] as? String == victim && $0["state"] as? String == "dead" }
        }
        try cluster.waitUntil("three live replicas of every segment") {
            _ = try log.ensureReplication()
            let h = try holders(cluster, writer: writer)
            return log.segmentIDs.allSatisfy { h[$0]?.count == 3 } && h.values.allSatisfy { !$0.contains(victim) }
        }
        #expect(log.segmentIDs.count >= 5)
        var got: [LogEntry] = []
        for s in log.segmentIDs { got += try log.read(segment: s) }
        #expect(got == first + second, "every acknowledged entry is readable after the failure")
        // A new writer for the same log finds every segment again.
        let again = try LogWriter(config: .init(writer: writer, secret: cluster.secret, token: Sys.randomBytes(32), coordinator: cluster.coordinator))
        #expect(again.segmentIDs == log.segmentIDs)
        again.close()
    }

    /// A standalone log node process with its own directory.
    final class LogNodeProcess {
        let dir: String
        let port: UInt16
        let secretFile: String
        var command: SpawnedCommand?
        var endpoint: Endpoint { Endpoint(host: "127.0.0.1", port: port) }

        init(dir: String? = nil, buffer: String = "64M") throws {
            self.dir = dir ?? TestEnvironment.temporaryDirectory("logd")
            secretFile = TestEnvironment.temporaryDirectory("secret") + "/s"
            try "log-node-test-secret\n".write(toFile: secretFile, atomically: true, encoding: .utf8)
            port = try freePort()
            try start(buffer: buffer)
        }

        func start(buffer: String = "64M") throws {
            command = try SpawnedCommand([TestEnvironment.legato, "logd", "--listen", endpoint.description, "--dir", dir,
                                          "--buffer", buffer, "--secret-file", secretFile])
            guard command!.waitForOutput(timeoutSeconds: 10, { _, e in e.contains("listening on") }) else {
                throw TestFailure("logd did not start: \(command!.stderrSoFar)")
            }
        }

        func stop() {
            command?.signal(SIGTERM)
            _ = try? command?.wait(timeoutSeconds: 10)
        }

        var secret: ClusterSecret { try! ClusterSecret.load(path: secretFile) }
    }

    @Test func restartsOverATornTailAndAFlippedByte() throws {
        let node = try LogNodeProcess()
        let token = Sys.randomBytes(32)
        let c = try LogNodeClient(endpoint: node.endpoint, secret: node.secret, token: token)
        let es = entries(40, size: 2000)
        try c.open(writer: 1, segment: 1)
        _ = try c.append(writer: 1, segment: 1, first: 0, entries: es[0..<40])
        try c.close(writer: 1, segment: 1)
        try c.open(writer: 1, segment: 2)
        _ = try c.append(writer: 1, segment: 2, first: 0, entries: es[0..<20])
        try c.sync(writer: 1, segment: 2)
        c.close()
        node.stop()

        let base = node.dir + "/replicas/" + String(repeating: "0", count: 15) + "1/"
        // Segment 1: flip one byte in entry 7's payload.
        let seg1 = base + String(repeating: "0", count: 15) + "1.seg"
        let fd = open(seg1, O_RDWR)
        let off = off_t(SegmentFormat.headerSize + 7 * (SegmentFormat.entryHeaderSize + 2000) + SegmentFormat.entryHeaderSize + 99)
        var b: UInt8 = 0
        pread(fd, &b, 1, off)
        b ^= 1
        pwrite(fd, &b, 1, off)
        close(fd)
        // Segment 2: cut its last entry short.
        let seg2 = base + String(repeating: "0", count: 15) + "2.seg"
        let size = (try FileManager.default.attributesOfItem(atPath: seg2)[.size] as! NSNumber).intValue
        truncate(seg2, off_t(size - 700))

        try node.start()
        defer { node.stop() }
        #expect(node.command!.waitForOutput { _, e in e.contains("torn tail") && e.contains("corrupt entry") })
        let r = try LogNodeClient(endpoint: node.endpoint, secret: node.secret, token: Sys.randomBytes(32))
        let one = try r.readAll(writer: 1, segment: 1)
        var expected = Array(es[0..<40])
        expected.remove(at: 7)
        #expect(one.entries.map { $0.1 } == expected, "the corrupt entry is skipped, never returned")
        #expect(one.closed)
        let two = try r.readAll(writer: 1, segment: 2)
        #expect(two.entries.map { $0.1 } == Array(es[0..<19]), "the torn entry is cut off")
        let stats = try JSONSerialization.jsonObject(with: Data(try r.rpc.stats().utf8)) as! [String: Any]
        #expect(stats["torn_tails"] as? Int == 1)
        #expect(stats["corrupt_entries"] as? Int == 1)
        // The writer can go on appending after the cut.
        let w = try LogNodeClient(endpoint: node.endpoint, secret: node.secret, token: token)
        #expect(try w.append(writer: 1, segment: 2, first: 19, entries: es[19..<20]) == 20)
    }

    /// Reads page by page with read-ahead (the next page of a closed replica, the segment named next):
    /// every page equals what was appended, a page read ahead never hides entries appended since, and
    /// a damaged entry in a page read ahead is skipped like any other.
    @Test func pagedReadsWithReadAheadReturnExactlyWhatIsThere() throws {
        let node = try LogNodeProcess()
        defer { node.stop() }
        let token = Sys.randomBytes(32)
        let w = try LogNodeClient(endpoint: node.endpoint, secret: node.secret, token: token)
        let es = entries(300, size: 3000)
        for s: UInt64 in 1...3 {
            try w.open(writer: 7, segment: s)
            _ = try w.append(writer: 7, segment: s, first: 0, entries: es[0..<100])
            if s < 3 { try w.close(writer: 7, segment: s) }
        }
        let r = try LogNodeClient(endpoint: node.endpoint, secret: node.secret, token: Sys.randomBytes(32))
        func pages(_ segment: UInt64, ahead: UInt64?) throws -> [LogEntry] {
            var got: [LogEntry] = []
            var next: UInt32 = 0
            while true {
                let p = try r.readPage(writer: 7, segment: segment, first: next, maxBytes: 40_000, readAhead: ahead) {
                    got.append(.init(type: $0.type, epoch: $0.epoch, slab: $0.slab, payload: Array($0.payload)))
                }
                next = p.next
                if p.end { return got }
            }
        }
        #expect(try pages(1, ahead: 2) == Array(es[0..<100]))
        #expect(try pages(2, ahead: 3) == Array(es[0..<100]))
        // Segment 3 is open: its first page was read ahead; entries appended now must show too.
        _ = try w.append(writer: 7, segment: 3, first: 100, entries: es[100..<300])
        #expect(try pages(3, ahead: nil) == es)
        // Slab filters apply to pages read ahead as well.
        var slab2: [LogEntry] = []
        var next: UInt32 = 0
        while true {
            let p = try r.readPage(writer: 7, segment: 1, first: next, maxBytes: 40_000, slabs: [2], readAhead: 2) {
                slab2.append(.init(type: $0.type, epoch: $0.epoch, slab: $0.slab, payload: Array($0.payload)))
            }
            next = p.next
            if p.end { break }
        }
        #expect(slab2 == es[0..<100].filter { $0.slab == 2 })
    }

    /// Large appends are received straight into the replica's buffer and checked there: a damaged
    /// entry refuses the whole append (nothing of it kept, the connection goes on), a retried append
    /// is accepted once, and an append cut off mid-way leaves nothing behind.
    @Test func largeAppendsAreCheckedWhereTheyLand() throws {
        let node = try LogNodeProcess()
        defer { node.stop() }
        let token = Sys.randomBytes(32)
        let c = try LogNodeClient(endpoint: node.endpoint, secret: node.secret, token: token)
        try c.open(writer: 9, segment: 1)
        let es = entries(120, size: 4000)  // 480 KB a request: past the direct-receive threshold
        #expect(try c.append(writer: 9, segment: 1, first: 0, entries: es[0..<40]) == 40)

        // One flipped payload byte in the 10th entry of the next append.
        var bad = LogNodeClient.encodeAppend(writer: 9, segment: 1, first: 40, entries: es[40..<80])
        bad[24 + 9 * (SegmentFormat.entryHeaderSize + 4000) + SegmentFormat.entryHeaderSize + 17] ^= 0x40
        #expect(throws: RemoteError.self) { _ = try c.rpc.call(.appendEntries, bad) }
        #expect(try c.list(writer: 9).first?.entries == 40, "nothing of the refused append is kept")
        // The same append, sound, twice (a writer retrying after a lost answer).
        #expect(try c.append(writer: 9, segment: 1, first: 40, entries: es[40..<80]) == 80)
        #expect(try c.append(writer: 9, segment: 1, first: 40, entries: es[40..<80]) == 80)

        // Cut off mid-way: half a request, then the connection drops.
        let cut = LogNodeClient.encodeAppend(writer: 9, segment: 1, first: 80, entries: es[80..<120])
        let raw = try Connection.connect(node.endpoint.description, host: node.endpoint.host, port: node.endpoint.port)
        _ = try Handshake.connect(raw, secret: node.secret, token: token)
        let header = FrameHeader(opcode: Opcode.appendEntries.rawValue, status: 0, requestID: 5, length: UInt32(cut.count)).encoded()
        try header.withUnsafeBytes { h in try cut[0..<cut.count / 2].withUnsafeBytes { try Socket.writeFully(raw.fd, [h, $0]) } }
        raw.close()
        // The node lets the cut-off append go when it sees the connection end; until then the
        // replica answers "still arriving".
        let deadline = monotonicNanos() + 10_000_000_000
        var appended = false
        while !appended && monotonicNanos() < deadline {
            appended = (try? c.append(writer: 9, segment: 1, first: 80, entries: es[80..<120])) == 120
            if !appended { usleep(20_000) }
        }
        #expect(appended, "the replica takes appends again once the cut-off one is let go")
        #expect(try c.readAll(writer: 9, segment: 1).entries.map { $0.1 } == es, "every entry once, in order")
    }

    /// A writer that goes silent in the middle of a large append (its host dead, the network cut:
    /// no FIN ever comes) does not pin the replica: past the receive timeout the node drops the
    /// connection and lets the append go, and the writer's retry on a new connection is taken.
    @Test func aWriterSilentMidAppendDoesNotPinItsReplica() throws {
        let secret = ClusterSecret(bytes: Array("silent-writer-secret".utf8))
        let node = try LogNode(config: LogNode.Config(listen: Endpoint(host: "127.0.0.1", port: 0),
                                                      directory: TestEnvironment.temporaryDirectory("silent"),
                                                      coordinator: nil, bufferBytes: 64 << 20, secret: secret))
        node.server.directPayloadTimeoutSeconds = 1
        try node.start()
        defer { node.stop() }
        let token = Sys.randomBytes(32)
        let c = try LogNodeClient(endpoint: node.endpoint, secret: secret, token: token)
        try c.open(writer: 4, segment: 1)
        let es = entries(40, size: 4000)  // 160 KB: past the direct-receive threshold
        let request = LogNodeClient.encodeAppend(writer: 4, segment: 1, first: 0, entries: es[...])
        let silent = try Connection.connect(node.endpoint.description, host: "127.0.0.1", port: node.endpoint.port)
        defer { silent.close() }
        _ = try Handshake.connect(silent, secret: secret, token: token)
        let header = FrameHeader(opcode: Opcode.appendEntries.rawValue, status: 0, requestID: 1, length: UInt32(request.count)).encoded()
        try header.withUnsafeBytes { h in try request[0..<request.count / 2].withUnsafeBytes { try Socket.writeFully(silent.fd, [h, $0]) } }
        usleep(200_000)
        #expect(throws: RemoteError.self, "the replica is still receiving the silent append") {
            _ = try c.append(writer: 4, segment: 1, first: 0, entries: es[...])
        }
        let deadline = monotonicNanos() + 10_000_000_000
        var appended = false
        while !appended && monotonicNanos() < deadline {
            appended = (try? c.append(writer: 4, segment: 1, first: 0, entries: es[...])) == 40
            if !appended { usleep(100_000) }
        }
        #expect(appended, "past the receive timeout the silent append is let go")
        #expect(try c.readAll(writer: 4, segment: 1).entries.map { $0.1 } == es)
    }

    @Test func refusesWhatTheDiskCannotHoldAndKeepsServingReads() throws {
        try requireAgentCapabilities()  // root, to mount a small tmpfs
        let dir = TestEnvironment.temporaryDirectory("full")
        guard runCommandStatus(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir]) == 0 else {
            throw TestFailure("cannot mount a tmpfs on \(dir)")
        }
        defer { _ = runCommandStatus(["umount", "-l", dir]) }
        let node = try LogNodeProcess(dir: dir, buffer: "1M")
        defer { node.stop() }
        let c = try LogNodeClient(endpoint: node.endpoint, secret: node.secret, token: Sys.randomBytes(32))
        try c.open(writer: 2, segment: 1)
        let es = entries(2000, size: 4000)
        var durable = 0
        var refusal: RemoteError?
        for i in 0..<es.count {
            do {
                _ = try c.append(writer: 2, segment: 1, first: UInt32(i), entries: es[i..<i + 1])
                try c.sync(writer: 2, segment: 1)
                durable = i + 1
            } catch let e as RemoteError {
                refusal = e
                break
            }
        }
        #expect(refusal?.status == .capacityExceeded, "a full disk is refused with a clear error")
        #expect(refusal?.message.contains("ENOSPC") == true || refusal?.message.contains("disk full") == true, "\(String(describing: refusal))")
        #expect(durable > 50)
        // Everything acknowledged as durable is there, and reads go on.
        let r = try c.readAll(writer: 2, segment: 1)
        #expect(Array(r.entries.map { $0.1 }.prefix(durable)) == Array(es.prefix(durable)))
        try c.rpc.ping()
    }

    /// A writer faster than the disk: appends wait for the flusher instead of growing the node's
    /// memory past twice --buffer, and every one of them is stored. The disk is slowed for the log
    /// node alone with the blkio controller (cgroup v1), which throttles its O_DIRECT writes.
    @Test func holdsAppendsBackWhenTheDiskIsSlow() throws {
        try requireAgentCapabilities()  // root, for the cgroup
        let dir = TestEnvironment.temporaryDirectory("slowdisk")
        let throttle = try BlkioThrottle(writeBytesPerSecond: 4 << 20, on: dir)
        defer { throttle.remove() }
        let node = try LogNodeProcess(dir: dir, buffer: "2M")
        defer { node.stop() }
        try throttle.add(pid: node.command!.pid)
        let c = try LogNodeClient(endpoint: node.endpoint, secret: node.secret, token: Sys.randomBytes(32))
        let segments: UInt64 = 16
        let es = entries(64, size: 16 << 10)  // 1 MiB a segment, in 4 appends of 256 KiB
        let started = monotonicNanos()
        for seg in 1...segments {
            try c.open(writer: 5, segment: seg)
            for k in stride(from: 0, to: es.count, by: 16) {
                _ = try c.append(writer: 5, segment: seg, first: UInt32(k), entries: es[k..<k + 16])
            }
            try c.close(writer: 5, segment: seg)
        }
        let seconds = Double(monotonicNanos() - started) / 1e9
        let stats = try JSONSerialization.jsonObject(with: Data(try c.rpc.stats().utf8)) as! [String: Any]
        let peak = stats["buffered_peak_bytes"] as! Int, waits = stats["append_waits"] as! Int
        // 16 MiB at 4 MB/s: without the wait everything would have been buffered within a second.
        #expect(waits > 0 && seconds > 1.5, "appends waited \(waits) times, \(seconds) s for 16 MiB")
        #expect(peak <= (4 << 20) + (1 << 20), "at most twice --buffer (plus one append) buffered, not \(peak) bytes")
        for seg in 1...segments {
            try c.sync(writer: 5, segment: seg)
            let got = try c.readAll(writer: 5, segment: seg).entries.map { $0.1 }
            #expect(got == es, "segment \(seg) whole")
        }
    }

    @Test func survivesHostileMessages() throws {
        let node = try LogNodeProcess()
        defer { node.stop() }
        try barrageOfHostileMessages(node.endpoint, secret: node.secret,
                                     opcodes: [.openReplica, .appendEntries, .syncReplica, .closeReplica, .freeReplica, .listReplicas, .readReplica])
        // APPEND whose entry claims a payload longer than the frame
        var w = WireWriter()
        w.u64(1); w.u64(1); w.u32(0); w.u32(1); w.u8(1); w.u32(0); w.u64(0); w.u32(1 << 24)
        #expect(try sendHostile(to: node.endpoint, secret: node.secret, frame(Opcode.appendEntries.rawValue, w.bytes))?.status == .badRequest)
    }
}

/// A blkio cgroup (v1) that throttles writes to the disk holding `path`, for the processes added.
struct BlkioThrottle {
    let group: String

    init(writeBytesPerSecond: Int, on path: String) throws {
        let root = "/sys/fs/cgroup/blkio"
        guard FileManager.default.fileExists(atPath: root + "/blkio.throttle.write_bps_device") else {
            throw TestFailure("the blkio cgroup controller (v1) with throttling is needed at \(root)")
        }
        var st = stat()
        guard stat(path, &st) == 0 else { throw TestFailure("stat \(path): \(String(cString: strerror(errno)))") }
        let dev = UInt64(st.st_dev)
        var device = "\((dev >> 8) & 0xfff | (dev >> 32) & ~0xfff):\(dev & 0xff | (dev >> 12) & ~0xff)"
        // Throttling applies to whole disks: a partition's parent is the one to throttle.
        let sysfs = "/sys/dev/block/\(device)"
        guard FileManager.default.fileExists(atPath: sysfs) else {
            throw TestFailure("\(path) is not on a block device (device \(device)): the throttled-disk test needs one")
        }
        if FileManager.default.fileExists(atPath: sysfs + "/partition"),
           let parent = try? String(contentsOfFile: sysfs + "/../dev", encoding: .utf8) {
            device = String(parent.filter { $0 != "\n" })
        }
        group = root + "/legato-test-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: group, withIntermediateDirectories: false)
        do {
            try "\(device) \(writeBytesPerSecond)\n".write(toFile: group + "/blkio.throttle.write_bps_device", atomically: false, encoding: .utf8)
        } catch {
            remove()
            throw TestFailure("cannot throttle device \(device) (holding \(path)): \(error)")
        }
    }

    func add(pid: pid_t) throws {
        try "\(pid)\n".write(toFile: group + "/cgroup.procs", atomically: false, encoding: .utf8)
    }

    /// Moves whatever is left to the root group and removes the group.
    func remove() {
        if let procs = try? String(contentsOfFile: group + "/cgroup.procs", encoding: .utf8) {
            for p in procs.split(separator: "\n") { try? "\(p)\n".write(toFile: "/sys/fs/cgroup/blkio/cgroup.procs", atomically: false, encoding: .utf8) }
        }
        if rmdir(group) != 0 { print("warning: could not remove the test cgroup \(group): \(String(cString: strerror(errno)))") }
    }
}

func runCommandStatus(_ argv: [String]) -> Int32 {
    (try? runCommand(argv, timeoutSeconds: 30))?.status ?? -1
}

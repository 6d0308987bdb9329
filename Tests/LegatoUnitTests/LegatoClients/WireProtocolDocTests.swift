import Foundation
import Testing
import LegatoClients
import LegatoCore
import LegatoSegmentLog
import LegatoWire

/// Docs/wire-protocol.md is the contract: every message type is encoded here and read back by the
/// layout the document gives it, so the document cannot drift from the code.
@Suite struct WireProtocolDocTests {
    @Test func everyMessageMatchesItsDocumentedLayout() throws {
        let doc = try WireDoc.load()
        for sample in Self.samples {
            let layout = try #require(doc.layouts[sample.key], "Docs/wire-protocol.md has no layout for \(sample.key)")
            let fields: [(String, LayoutValue)]
            do {
                fields = try LayoutReader.read(layout, bytes: sample.bytes, doc: doc, context: sample.context)
            } catch {
                Issue.record("\(sample.key): the encoding does not follow `\(layout)`: \(error)")
                continue
            }
            for (name, want) in sample.expect {
                let got = fields.filter { $0.0 == name }.map { $0.1 }
                #expect(got == want, "\(sample.key): field '\(name)' of `\(layout)` reads \(got), the message holds \(want)")
            }
            #expect(try sample.decodesBack(), "\(sample.key): decoding the encoding does not give the message back")
        }
    }

    @Test func everyOpcodeIsDocumentedAndSampled() throws {
        let doc = try WireDoc.load()
        let sampled = Set(Self.samples.map(\.key))
        for op in Opcode.allCases {
            #expect(doc.opcodes[op.wireName] == op.rawValue,
                    "Docs/wire-protocol.md gives \(op.wireName) \(doc.opcodes[op.wireName].map { "0x" + String($0, radix: 16) } ?? "no row"), the code 0x\(String(op.rawValue, radix: 16))")
            #expect(sampled.contains(op.wireName), "no sample encodes \(op.wireName)")
            if op != .hello { #expect(sampled.contains(op.wireName + " reply"), "no sample encodes the answer to \(op.wireName)") }
        }
        for key in doc.layouts.keys where key != "membership" {
            #expect(sampled.contains(key), "Docs/wire-protocol.md documents \(key), which no sample encodes")
        }
    }

    @Test func theLayoutReaderCatchesAnEncodingThatDrifted() throws {
        let doc = try WireDoc.load()
        // Writer and segment swapped: same size, wrong order.
        var w = WireWriter()
        w.u64(9)
        w.u64(0xAB)
        let fields = try LayoutReader.read(try #require(doc.layouts["OPEN_REPLICA"]), bytes: w.bytes, doc: doc, context: [:])
        #expect(fields.first { $0.0 == "writer" }?.1 != .int(0xAB))
        // A field left out: the layout runs out of bytes.
        #expect(throws: LayoutError.self) {
            try LayoutReader.read(try #require(doc.layouts["COMMIT_SPACE"]), bytes: Array(CommitSpace(space: 1, epoch: 2).encoded.dropLast(4)),
                                  doc: doc, context: [:])
        }
        // A field too many: bytes are left.
        #expect(throws: LayoutError.self) {
            try LayoutReader.read(try #require(doc.layouts["DROP_SPACE"]), bytes: DropSpace(space: 1).encoded + [0], doc: doc, context: [:])
        }
    }

    // MARK: samples: every message with distinct values, and what its documented fields must read

    struct Sample {
        var key: String
        var bytes: [UInt8]
        var context: [String: UInt64]
        var expect: [String: [LayoutValue]]
        var decodesBack: () throws -> Bool
    }

    static func request<R: WireRequest & Equatable>(_ m: R, _ expect: [String: [LayoutValue]]) -> Sample {
        Sample(key: R.opcode.wireName, bytes: m.encoded, context: [:], expect: expect) { try R(decoding: m.encoded) == m }
    }

    static func reply<M: WireMessage & Equatable>(_ key: String, _ m: M, context: [String: UInt64] = [:], _ expect: [String: [LayoutValue]]) -> Sample {
        Sample(key: key, bytes: m.encoded, context: context, expect: expect) { try M(decoding: m.encoded, what: key) == m }
    }

    static let page = { (b: UInt8) in [UInt8](repeating: b, count: Page.size) }
    static let entries: [LogEntry] = [LogEntry(epoch: 3, slab: 5, payload: [1, 2, 3]), LogEntry(epoch: 3, slab: 6, payload: Array(repeating: 9, count: 70))]
    static let encodedEntries = LogEntry.encode(entries[...], first: 40)
    static let node = NodeStatus(id: 7, role: .log, address: "10.0.0.2:7000", alive: true, capacity: 1 << 30, used: 4096, silentMillis: 250)
    static let record = CheckpointRecord(name: "job", epoch: 12, state: .committed, begunAt: 1000.5, decidedAt: 1001.25,
                                         record: Data([4, 5, 6]), reason: nil)

    static var samples: [Sample] {
        let key = ReplicaKey(writer: 0xA1, segment: 0xB2)
        let fetched = FetchedPages(present: [1, 0, 1], pages: page(1) + page(2))
        let fetchedSample = { (k: String) in
            Sample(key: k, bytes: fetched.encoded, context: ["n": 3], expect: ["present": [1, 0, 1], "page": [.bytes(page(1)), .bytes(page(2))]]) {
                try FetchedPages(decoding: fetched.encoded, asked: 3) == fetched
            }
        }
        return [
            reply("HELLO", Hello(minVersion: 1, maxVersion: 2, serverNonce: Array(repeating: 7, count: 32), role: 3, name: "memd-a"),
                  ["min version": [1], "max version": [2], "role": [3], "name": ["memd-a"], "server nonce": [.bytes(Array(repeating: 7, count: 32))]]),
            request(Auth(clientNonce: Array(repeating: 1, count: 32), clientToken: Array(repeating: 2, count: 32), proof: Array(repeating: 3, count: 32)),
                    ["client nonce": [.bytes(Array(repeating: 1, count: 32))], "client token": [.bytes(Array(repeating: 2, count: 32))],
                     "client proof": [.bytes(Array(repeating: 3, count: 32))]]),
            reply("AUTH reply", AuthProof(proof: Array(repeating: 4, count: 32)), ["server proof": [.bytes(Array(repeating: 4, count: 32))]]),
            reply("error reply", ErrorMessage("no such space"), ["message": ["no such space"]]),
            request(Ping(), [:]),
            reply("PING reply", NoPayload(), [:]),
            request(Stats(), [:]),
            reply("STATS reply", StatsText(json: #"{"role":"memory"}"#), ["json": [.bytes(Array(#"{"role":"memory"}"#.utf8))]]),

            request(CreateSpace(space: 0x1122, ephemeral: true), ["space": [0x1122], "flags": [1]]),
            request(CreateSpace(space: 0x1123, ephemeral: false), ["space": [0x1123], "flags": []]),
            reply("CREATE_SPACE reply", SpaceCreated(logWriter: 0xabc), ["log writer": [0xabc]]),
            request(StorePages(space: 0x33, flags: .logged, vpns: [10, 11], pages: page(5) + page(6)),
                    ["space": [0x33], "flags": [1], "n": [2], "key": [10, 11], "page": [.bytes(page(5)), .bytes(page(6))]]),
            reply("STORE_PAGES reply", NoPayload(), [:]),
            request(FetchPages(space: 0x44, vpns: [1, 2, 3]), ["space": [0x44], "n": [3], "key": [1, 2, 3]]),
            fetchedSample("FETCH_PAGES reply"),
            request(DiscardPages(space: 0x55, runs: [PageRun(first: 100, count: 8), PageRun(first: 300, count: 1)]),
                    ["space": [0x55], "n": [2], "first key": [100, 300], "count": [8, 1]]),
            reply("DISCARD_PAGES reply", Count64(9), ["discarded": [9]]),
            request(DropSpace(space: 0x66), ["space": [0x66]]),
            reply("DROP_SPACE reply", NoPayload(), [:]),
            request(FreezeSpace(space: 0x77), ["space": [0x77]]),
            reply("FREEZE_SPACE reply", NoPayload(), [:]),
            request(FetchFrozen(space: 0x88, vpns: [4, 5, 6]), ["space": [0x88], "n": [3], "key": [4, 5, 6]]),
            fetchedSample("FETCH_FROZEN reply"),
            request(ReleaseSpace(space: 0x99), ["space": [0x99]]),
            reply("RELEASE_SPACE reply", Count64(17), ["released": [17]]),
            request(PrepareSpace(space: 0xAA, epoch: 5, writer: 0xBB, runs: [.init(address: 0x7000, vpns: [1, 2]), .init(address: 0x9000, vpns: [8])]),
                    ["space": [0xAA], "epoch": [5], "log writer": [0xBB], "n": [2], "address": [0x7000, 0x9000], "pages": [2, 1], "vpn": [1, 2, 8]]),
            reply("PREPARE_SPACE reply", Count64(3), ["persisted": [3]]),
            request(CommitSpace(space: 0xCC, epoch: 6), ["space": [0xCC], "epoch": [6]]),
            reply("COMMIT_SPACE reply", Count64(21), ["released": [21]]),
            request(FetchCheckpointed(space: 0xDD, epoch: 7, vpns: [7, 8, 9]), ["space": [0xDD], "epoch": [7], "n": [3], "key": [7, 8, 9]]),
            fetchedSample("FETCH_CHECKPOINTED reply"),
            request(DescribeSpace(space: 0xEE), ["space": [0xEE]]),
            request(RecoverSpace(space: 0x99, ephemeral: true, logged: true, logBehind: true, deadLog: 0x1234, slabs: [5, 6],
                                 runs: [PageRun(first: 0x5000, count: 3)],
                                 fallbacks: [RecoveryFallback(log: 0x4321, after: 77, runs: [PageRun(first: 0x5001, count: 1)])]),
                    ["space": [0x99], "flags": [7], "dead log": [0x1234], "k": [2], "slab": [5, 6], "n": [1], "f": [1], "log": [0x4321],
                     "mark": [77], "m": [1], "first key": [0x5000, 0x5001], "count": [3, 1]]),
            reply("RECOVER_SPACE reply", RecoveredSpace(pages: 3, mark: 41), ["recovered": [3], "mark": [41]]),
            request(AwaitRecoveryLogged(space: 0x99, deadLog: 0x1234), ["space": [0x99], "dead log": [0x1234]]),
            reply("AWAIT_RECOVERY_LOGGED reply", NoPayload(), [:]),
            reply("DESCRIBE_SPACE reply", SpaceDescription(retainedEpoch: 8, frozen: true, pages: 1234),
                  ["retained epoch": [8], "frozen": [1], "pages": [1234]]),

            request(OpenReplica(key: key), ["writer": [0xA1], "segment": [0xB2]]),
            reply("OPEN_REPLICA reply", NoPayload(), [:]),
            Sample(key: "APPEND_ENTRIES", bytes: AppendEntries.encode(key: key, first: 40, entries: entries[...]), context: [:],
                   expect: ["writer": [0xA1], "segment": [0xB2], "first index": [40], "n": [2],
                            "entries": [.bytes(Array(encodedEntries[0..<35])), .bytes(Array(encodedEntries[35...]))]]) {
                let bytes = AppendEntries.encode(key: key, first: 40, entries: entries[...])
                let m = try AppendEntries(decoding: bytes)
                return m.head.key == key && m.head.first == 40 && m.head.count == 2 && m.entries == encodedEntries && m.encoded == bytes
            },
            reply("APPEND_ENTRIES reply", AppendResult(entries: 42, fileBytes: 8192), ["entries": [42], "file bytes": [8192]]),
            request(SyncReplica(key: key), ["writer": [0xA1], "segment": [0xB2]]),
            reply("SYNC_REPLICA reply", NoPayload(), [:]),
            request(CloseReplica(key: key), ["writer": [0xA1], "segment": [0xB2]]),
            reply("CLOSE_REPLICA reply", NoPayload(), [:]),
            request(FreeReplica(key: key), ["writer": [0xA1], "segment": [0xB2]]),
            reply("FREE_REPLICA reply", NoPayload(), [:]),
            request(ListReplicas(writer: 0xA1), ["writer": [0xA1]]),
            reply("LIST_REPLICAS reply", ReplicaList([ReplicaInfo(segment: 3, entries: 10, bytes: 5000, closed: true, corrupt: 1),
                                                     ReplicaInfo(segment: 4, entries: 2, bytes: 80, closed: false, corrupt: 0)]),
                  ["n": [2], "segment": [3, 4], "entries": [10, 2], "payload bytes": [5000, 80], "closed": [1, 0], "corrupt": [1, 0]]),
            request(ReadReplica(key: key, first: 5, maxEntries: 100, maxBytes: 1 << 20, slabs: [3, 4], readAhead: 0xB3),
                    ["writer": [0xA1], "segment": [0xB2], "first": [5], "max entries": [100], "max bytes": [.int(1 << 20)], "k": [2],
                     "slab": [3, 4], "read-ahead segment": [0xB3]]),
            request(ReadReplica(key: key, first: 0, maxEntries: 1, maxBytes: 2, slabs: [], readAhead: nil),
                    ["k": [0], "slab": [], "read-ahead segment": []]),
            reply("READ_REPLICA reply", ReplicaPage(head: .init(next: 42, end: true, closed: false, corrupt: 1, count: 2), entries: encodedEntries),
                  ["next": [42], "end": [1], "closed": [0], "corrupt": [1], "n": [2],
                   "entries": [.bytes(Array(encodedEntries[0..<35])), .bytes(Array(encodedEntries[35...]))]]),

            request(RegisterNode(role: .memory, address: "10.0.0.1:7000", capacity: 1 << 32, uuid: "u-1"),
                    ["role": [1], "address": ["10.0.0.1:7000"], "capacity": [.int(1 << 32)], "uuid": ["u-1"]]),
            reply("REGISTER_NODE reply", Registration(id: 3, heartbeatMillis: 500, deadAfterMillis: 5000),
                  ["node id": [3], "heartbeat ms": [500], "dead-after ms": [5000]]),
            request(Heartbeat(id: 3, used: 100, capacity: 200), ["node id": [3], "used": [100], "capacity": [200]]),
            reply("HEARTBEAT reply", NoPayload(), [:]),
            request(ListNodes(), [:]),
            reply("LIST_NODES reply", Membership(version: 9, nodes: [node]),
                  ["version": [9], "n": [1], "id": [7], "role": [2], "address": ["10.0.0.2:7000"], "alive": [1], "capacity": [.int(1 << 30)],
                   "used": [4096], "silent ms": [250]]),
            request(WaitMembership(known: 8, timeoutMillis: 1500), ["known version": [8], "timeout ms": [1500]]),
            reply("WAIT_MEMBERSHIP reply", Membership(version: 10, nodes: []), ["version": [10], "n": [0]]),
            request(AssignSlab(space: 0x12, slab: 0x34, slabBytes: 1 << 26), ["space": [0x12], "slab": [0x34], "slab bytes": [.int(1 << 26)]]),
            reply("ASSIGN_SLAB reply", SlabPlacement(node: 5, address: "10.0.0.3:7000"), ["node id": [5], "address": ["10.0.0.3:7000"]]),
            request(ListSlabs(space: 0x12), ["space": [0x12]]),
            reply("LIST_SLABS reply", SlabList([.init(slab: 1, node: 5), .init(slab: 2, node: 6)]), ["n": [2], "slab": [1, 2], "node id": [5, 6]]),
            request(DropSlabs(space: 0x13), ["space": [0x13]]),
            reply("DROP_SLABS reply", NoPayload(), [:]),
            request(BeginCheckpoint(name: "job", epoch: 12, record: [1, 2]), ["name": ["job"], "epoch": [12], "record": [.bytes([1, 2])]]),
            reply("BEGIN_CHECKPOINT reply", NoPayload(), [:]),
            request(CommitCheckpoint(name: "job", epoch: 12, record: [3]), ["name": ["job"], "epoch": [12], "record": [.bytes([3])]]),
            reply("COMMIT_CHECKPOINT reply", NoPayload(), [:]),
            request(AbortCheckpoint(name: "job", epoch: 13, reason: "memory node died"), ["name": ["job"], "epoch": [13], "reason": ["memory node died"]]),
            reply("ABORT_CHECKPOINT reply", NoPayload(), [:]),
            request(ListCheckpoints(name: "job"), ["name": ["job"]]),
            reply("LIST_CHECKPOINTS reply", CheckpointList([record]),
                  ["n": [1], "name": ["job"], "epoch": [12], "state": [2], "begun ms": [1_000_500], "decided ms": [1_001_250],
                   "record": [.bytes([4, 5, 6])], "reason": [""]]),
            request(DeleteCheckpoint(name: "job", epoch: 12), ["name": ["job"], "epoch": [12]]),
            reply("DELETE_CHECKPOINT reply", NoPayload(), [:]),
            request(PlanRecovery(space: 0x21, deadAddress: "10.0.0.5:7000", alsoDead: ["10.0.0.6:7000"], slabs: [.init(slab: 3, pages: 100), .init(slab: 4, pages: 7)]),
                    ["space": [0x21], "dead address": ["10.0.0.5:7000"], "k": [1], "also dead": ["10.0.0.6:7000"], "n": [2], "slab": [3, 4], "pages": [100, 7]]),
            reply("PLAN_RECOVERY reply", RecoveryPlan(partitions: [.init(node: 2, address: "10.0.0.7:7000", slabs: [3, 4])]),
                  ["m": [1], "node id": [2], "address": ["10.0.0.7:7000"], "j": [2], "recovered slab": [3, 4]]),
        ]
    }
}

// MARK: reading the document

/// The layouts of Docs/wire-protocol.md: each table row's first cell names a message (`NAME 0xHH`, or a
/// name such as `AUTH reply`); the code spans of its next cells are its request and its answer.
struct WireDoc {
    var layouts: [String: String] = [:]
    var opcodes: [String: UInt8] = [:]

    static func load() throws -> WireDoc {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../../Docs/wire-protocol.md")
        let text = try String(contentsOf: url.standardizedFileURL, encoding: .utf8)
        var doc = WireDoc()
        // The control socket's JSON lines (the last section) are not frames.
        let frames = text.components(separatedBy: "## The control socket")[0]
        for line in frames.split(separator: "\n") where line.hasPrefix("| ") {
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count >= 2 else { continue }
            let spans = cells[1..<min(cells.count, 3)].compactMap(Self.codeSpan)
            guard !spans.isEmpty else { continue }
            let words = cells[0].split(separator: " ")
            let name: String
            if words.count >= 2, words[1].hasPrefix("0x"), let hex = UInt8(words[1].dropFirst(2), radix: 16) {
                name = String(words[0])
                doc.opcodes[name] = hex
            } else {
                name = cells[0].split(separator: "(")[0].trimmingCharacters(in: .whitespaces)
            }
            doc.layouts[name] = spans[0]
            if spans.count > 1 { doc.layouts[name + " reply"] = spans[1] }
        }
        return doc
    }

    private static func codeSpan(_ cell: String) -> String? {
        guard cell.hasPrefix("`"), cell.hasSuffix("`"), cell.count >= 2 else { return nil }
        return String(cell.dropFirst().dropLast())
    }
}

enum LayoutValue: Equatable, CustomStringConvertible, ExpressibleByIntegerLiteral, ExpressibleByStringLiteral {
    case int(UInt64)
    case text(String)
    case bytes([UInt8])
    init(integerLiteral v: UInt64) { self = .int(v) }
    init(stringLiteral v: String) { self = .text(v) }
    var description: String {
        switch self {
        case .int(let v): return "\(v)"
        case .text(let s): return "\"\(s)\""
        case .bytes(let b): return "\(b.count) bytes"
        }
    }
}

struct LayoutError: Error, CustomStringConvertible {
    let description: String
    init(_ d: String) { description = d }
}

/// Reads bytes by a layout of the document's notation, naming every field it reads.
struct LayoutReader {
    let bytes: [UInt8]
    let doc: WireDoc
    var at = 0
    var fields: [(String, LayoutValue)] = []
    var numbers: [String: UInt64]
    var sums: [String: UInt64] = [:]

    init(bytes: [UInt8], doc: WireDoc, context: [String: UInt64]) {
        self.bytes = bytes
        self.doc = doc
        numbers = context
    }

    /// The fields of `bytes` read by `layout`, which must take every byte.
    static func read(_ layout: String, bytes: [UInt8], doc: WireDoc, context: [String: UInt64]) throws -> [(String, LayoutValue)] {
        var r = LayoutReader(bytes: bytes, doc: doc, context: context)
        try r.readFields(layout)
        guard r.at == bytes.count else { throw LayoutError("\(bytes.count - r.at) bytes left after `\(layout)`") }
        return r.fields
    }

    private mutating func readFields(_ layout: String) throws {
        var main = layout.trimmingCharacters(in: .whitespaces)
        var optional: String?
        if main.hasSuffix("]"), let open = main.range(of: " [, ") {
            optional = String(main[open.upperBound..<main.index(before: main.endIndex)])
            main = String(main[..<open.lowerBound])
        }
        if main == "(empty)" { main = "" }
        for item in Self.split(main) { try readItem(item) }
        if let optional, at < bytes.count { for item in Self.split(optional) { try readItem(item) } }
    }

    /// Splits on top-level commas.
    static func split(_ s: String) -> [String] {
        var out: [String] = [], depth = 0, current = ""
        for c in s {
            if c == "(" { depth += 1 }
            if c == ")" { depth -= 1 }
            if c == ",", depth == 0 {
                out.append(current.trimmingCharacters(in: .whitespaces))
                current = ""
            } else {
                current.append(c)
            }
        }
        let last = current.trimmingCharacters(in: .whitespaces)
        if !last.isEmpty { out.append(last) }
        return out
    }

    private mutating func readItem(_ item: String) throws {
        if item == "membership" || doc.layouts[item] != nil && !item.contains(" ") {
            return try readFields(try doc.layouts[item].orThrow("no layout named \(item)"))
        }
        if let times = item.range(of: " × ") {
            let countName = String(item[..<times.lowerBound])
            let count: UInt64
            if countName.hasPrefix("Σ") {
                count = sums[String(countName.dropFirst())] ?? 0
            } else {
                count = try numbers[countName].orThrow("count '\(countName)' of `\(item)` was not read before it")
            }
            var body = String(item[times.upperBound...])
            if body.hasPrefix("("), body.hasSuffix(")") { body = String(body.dropFirst().dropLast()) }
            guard count <= 1 << 20 else { throw LayoutError("count \(count) of `\(item)`") }
            for _ in 0..<count { try readFields(body) }
            return
        }
        let words = item.split(separator: " ", maxSplits: 1).map(String.init)
        guard words.count == 2 else { throw LayoutError("cannot read the field `\(item)`") }
        let (type, name) = (words[0], words[1])
        switch type {
        case "u8", "bool": try number(name, 1, bool: type == "bool")
        case "u16": try number(name, 2)
        case "u32": try number(name, 4)
        case "u64": try number(name, 8)
        case "string":
            let n = Int(try take(2, name).reversed().reduce(0) { $0 << 8 | UInt64($1) })
            let b = try take(n, name)
            fields.append((name, .text(try String(validating: b, as: UTF8.self).orThrow("\(name) is not UTF-8"))))
        case "blob":
            let n = Int(try take(4, name).reversed().reduce(0) { $0 << 8 | UInt64($1) })
            fields.append((name, .bytes(try take(n, name))))
        case "rest":
            fields.append((name, .bytes(try take(bytes.count - at, name))))
        case "entry":
            let header = try take(32, name)
            let length = Int(header[4..<8].reversed().reduce(0) { $0 << 8 | UInt64($1) })
            fields.append((name, .bytes(header + (try take(length, name)))))
        default:
            guard type.hasPrefix("["), type.hasSuffix("]"), let n = Int(type.dropFirst().dropLast()) else {
                throw LayoutError("unknown type '\(type)' in `\(item)`")
            }
            fields.append((name, .bytes(try take(n, name))))
        }
    }

    private mutating func number(_ name: String, _ size: Int, bool: Bool = false) throws {
        let v = try take(size, name).reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        if bool, v > 1 { throw LayoutError("\(name) is \(v), not a bool") }
        numbers[name] = v
        sums[name, default: 0] += v
        fields.append((name, .int(v)))
    }

    private mutating func take(_ n: Int, _ what: String) throws -> [UInt8] {
        guard n >= 0, bytes.count - at >= n else { throw LayoutError("the bytes end inside '\(what)' (at \(at) of \(bytes.count))") }
        defer { at += n }
        return Array(bytes[at..<at + n])
    }
}

extension Optional {
    func orThrow(_ why: String) throws -> Wrapped {
        guard let v = self else { throw LayoutError(why) }
        return v
    }
}

import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// A process's aio contexts (io_setup), each seen as its ring: a shared mapping "/[aio] (deleted)"
/// whose address is the context's id, with a 32-byte header (index, capacity, head, tail...) and
/// the completed events not reaped yet.
///
/// A checkpoint keeps a context whose requests have all completed (AioContexts counts them): the
/// ring's header and bytes as they are. One with a request in flight is refused by name, since a
/// restore cannot carry an unfinished request over.
///
/// A restore makes the contexts again in the kernel's index order (io_setup with what was asked
/// for, so the ring has the same capacity), brings each ring's tail to where it was by completing
/// that many one-byte writes to /dev/null (reaping them by moving the head, as a program may), then
/// writes the events back and moves the ring to its address with mremap, which moves the id too.
enum AioRings {
    static let path = "/[aio] (deleted)"
    static let headerBytes = 32
    static let magic: UInt32 = 0xa10a10a1

    static func isRing(_ v: ProcessImage.VMA) -> Bool { v.kind == .shared && v.path == path }

    /// A ring's header words: id (index), nr (capacity), head, tail, magic, compat and incompat
    /// features, header length.
    static func header(pid: pid_t, at address: UInt64) throws -> [UInt32] {
        var words = [UInt32](repeating: 0, count: 8)
        try words.withUnsafeMutableBytes { try Sys.readProcessMemory(pid: pid, address: address, length: headerBytes, into: $0.baseAddress!) }
        return words
    }

    /// The rings of the frozen process `pid` among `vmas`, and why any cannot be kept.
    static func capture(_ vmas: [ProcessImage.VMA], pid: pid_t, contexts: AioContexts) throws -> (rings: [ProcessImage.AioRing], refused: [String]) {
        var rings: [ProcessImage.AioRing] = []
        var refused: [String] = []
        var seen = Set<UInt64>()
        for v in vmas where isRing(v) {
            let length = v.end - v.start
            let at = "an aio ring at \(describeRange(v.start, length))"
            seen.insert(v.start)
            let h = try header(pid: pid, at: v.start)
            let (index, capacity, head, tail) = (h[0], h[1], h[2], h[3])
            guard h[4] == magic, h[7] == UInt32(headerBytes), capacity > 0, UInt64(capacity) == (length - UInt64(headerBytes)) / 32,
                  head < capacity, tail < capacity else {
                refused.append("\(at) whose header is not one the kernel writes (nr \(capacity), head \(head), tail \(tail), magic 0x\(String(h[4], radix: 16)))")
                continue
            }
            guard v.prot == 3 else { refused.append("\(at) not mapped read-write"); continue }
            let inRing = (tail &+ capacity &- head) % capacity
            guard let context = contexts[v.start], let inFlight = contexts.inFlight(v.start, eventsInRing: inRing) else {
                refused.append("\(at) set up where the agent did not see it")
                continue
            }
            guard inFlight == 0 else {
                refused.append(inFlight > 0 ? "\(at) with \(inFlight) request(s) in flight (or reaped without io_getevents); try again once they complete"
                                            : "\(at) whose events were not all counted")
                continue
            }
            var events = Data(count: Int(length) - headerBytes)
            try events.withUnsafeMutableBytes {
                try Sys.readProcessMemory(pid: pid, address: v.start + UInt64(headerBytes), length: $0.count, into: $0.baseAddress!)
            }
            rings.append(.init(start: v.start, length: length, index: index, requested: context.requested, capacity: capacity,
                               head: head, tail: tail, events: events))
        }
        for id in contexts.contexts.keys.sorted() where !seen.contains(id) {
            refused.append("an aio context (0x\(String(id, radix: 16))) whose ring was unmapped")
        }
        return (rings, refused)
    }

    /// What a restored process's contexts hold: each ring's unreaped events, nothing in flight.
    static func contexts(of rings: [ProcessImage.AioRing]?) -> AioContexts {
        var c = AioContexts()
        for r in rings ?? [] { c.restored(r.start, requested: r.requested, events: (r.tail &+ r.capacity &- r.head) % r.capacity) }
        return c
    }
}

extension Agent {
    /// The image's aio contexts, made again in the process `calls` injects into, after its mappings
    /// (each ring's address is free then). An index no ring had gets a filler context, destroyed
    /// once the others are made, so every context keeps its index.
    func restoreAioRings(_ image: ProcessImage, _ calls: RestoreCalls) throws {
        guard let rings = image.aioRings, let top = rings.map(\.index).max() else { return }
        var byIndex: [UInt32: ProcessImage.AioRing] = [:]
        for r in rings { byIndex[r.index] = r }
        let pid = calls.tid
        func fail(_ why: String) -> RestoreError { .processNotRestored(name: image.name, pid: image.pid, why) }
        var fillers: [UInt64] = []
        let slot = try calls.args.bytes([UInt8](repeating: 0, count: 8))
        defer { calls.args.reset() }
        for index in 0...top {
            let ring = byIndex[index]
            var zero: UInt64 = 0
            try Sys.processWrite(pid: pid, from: &zero, length: 8, to: slot)  // io_setup wants *ctxp == 0
            let what = ring.map { "io_setup(\($0.requested)) for the aio ring at \(describeRange($0.start, $0.length))" } ?? "io_setup(1) (a filler for aio index \(index))"
            _ = try calls.call(what, .ioSetup, UInt64(ring?.requested ?? 1), slot)
            var ctx: UInt64 = 0
            try Sys.readProcessMemory(pid: pid, address: slot, length: 8, into: &ctx)
            let h = try AioRings.header(pid: pid, at: ctx)
            guard h[0] == index else { throw fail("got aio index \(h[0]) where it had \(index)") }
            guard let ring else { fillers.append(ctx); continue }
            guard h[1] == ring.capacity, Page.alignUp(UInt64(AioRings.headerBytes) + UInt64(h[1]) * 32) == ring.length else {
                throw fail("got an aio ring of \(h[1]) events for the one of \(ring.capacity) at \(describeRange(ring.start, ring.length))")
            }
            try advanceRing(ctx, to: ring, calls)
            try ring.events.withUnsafeBytes {
                try Sys.processWrite(pid: pid, from: $0.baseAddress!, length: $0.count, to: ctx + UInt64(AioRings.headerBytes))
            }
            if ctx != ring.start {
                _ = try calls.call("mremap the aio ring to \(describeRange(ring.start, ring.length))", .mremap, ctx, ring.length, ring.length, 3, ring.start)  // MREMAP_MAYMOVE|MREMAP_FIXED
            }
        }
        for f in fillers { _ = try calls.call("io_destroy(0x\(String(f, radix: 16))) (a filler)", .ioDestroy, f) }
    }

    /// Brings the new context `ctx`'s ring to `ring`'s head and tail: as many one-byte writes to
    /// /dev/null as the tail moved from 0 (a lap more if it wrapped past the head), which complete
    /// at once, each batch reaped by moving the head (up to `ring.head`).
    private func advanceRing(_ ctx: UInt64, to ring: ProcessImage.AioRing, _ calls: RestoreCalls) throws {
        guard ring.head != 0 || ring.tail != 0 else { return }
        let count = Int(ring.tail < ring.head ? ring.capacity + ring.tail : ring.tail)
        let batch = max(1, min(count, Int(ring.capacity) - 1, 1024))
        let null = try calls.call("open /dev/null for the aio ring's requests", .open, try calls.args.string("/dev/null"), UInt64(O_WRONLY | O_CLOEXEC), 0)
        defer { _ = try? calls.call("close", .close, UInt64(null)) }
        // struct iocb: aio_lio_opcode at 16 (IOCB_CMD_PWRITE 1), aio_fildes at 20, aio_buf at 24, aio_nbytes at 32.
        var iocb = [UInt8](repeating: 0, count: 64)
        let iocbAt = try calls.args.bytes(iocb)
        iocb.withUnsafeMutableBytes { b in
            b.storeBytes(of: UInt16(1), toByteOffset: 16, as: UInt16.self)
            b.storeBytes(of: UInt32(truncatingIfNeeded: null), toByteOffset: 20, as: UInt32.self)
            b.storeBytes(of: iocbAt, toByteOffset: 24, as: UInt64.self)
            b.storeBytes(of: UInt64(1), toByteOffset: 32, as: UInt64.self)
        }
        try iocb.withUnsafeBytes { try Sys.processWrite(pid: calls.tid, from: $0.baseAddress!, length: 64, to: iocbAt) }
        let pointers = try calls.args.bytes([UInt64](repeating: iocbAt, count: batch).withUnsafeBytes { Array($0) })
        var done = 0
        while done < count {
            let n = min(count - done, batch)
            let r = try calls.call("io_submit(\(n)) to move the aio ring's tail", .ioSubmit, ctx, UInt64(n), pointers)
            guard r > 0 else { throw SystemError("\(calls.context): io_submit of \(n) requests to move the aio ring's tail took none", code: EAGAIN) }
            done += Int(r)
            var head = UInt32(min(done, Int(ring.head)))
            try Sys.processWrite(pid: calls.tid, from: &head, length: 4, to: ctx + 8)
        }
    }
}

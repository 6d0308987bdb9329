import Foundation
import Glibc
import Testing
import LegatoSystem
@testable import LegatoWire

@Suite struct FrameTests {
    @Test func headerRoundTrips() throws {
        let h = FrameHeader(opcode: 0x11, status: 5, requestID: 77, length: 4096)
        #expect(try FrameHeader.decode(h.encoded(), maxLength: 1 << 20) == h)
    }

    @Test func rejectsBadHeaders() {
        var bytes = FrameHeader(opcode: 1, requestID: 1, length: 10).encoded()
        bytes[0] ^= 0xff
        #expect(throws: WireError.self) { try FrameHeader.decode(bytes, maxLength: 100) }
        var v = FrameHeader(opcode: 1, requestID: 1, length: 10).encoded()
        v[4] = 99
        #expect(throws: WireError.unsupportedVersion(99)) { try FrameHeader.decode(v, maxLength: 100) }
        let big = FrameHeader(opcode: 1, requestID: 1, length: 1000).encoded()
        #expect(throws: WireError.frameTooLarge(1000, limit: 100)) { try FrameHeader.decode(big, maxLength: 100) }
        #expect(throws: WireError.self) { try FrameHeader.decode(Array(big.prefix(9)), maxLength: 100) }
    }

    @Test func readerNeverReadsPastTheEnd() throws {
        var w = WireWriter()
        w.u64(1)
        w.u32(3)
        var r = WireReader(w.bytes)
        #expect(try r.u64() == 1)
        #expect(throws: WireError.self) { try r.u64() }
        var r2 = WireReader(w.bytes)
        _ = try r2.u64()
        // a count that claims more items than the bytes left
        #expect(throws: WireError.self) { try r2.count(itemSize: 8, limit: 10, "items") }
        var r3 = WireReader([0xff, 0xff, 0xff, 0x7f])
        #expect(throws: WireError.self) { try r3.count(itemSize: 4096, limit: Int.max, "pages") }
        var r4 = WireReader([5, 0, 0xc3, 0x28, 0x41, 0x41, 0x41])
        #expect(throws: WireError.self) { try r4.string() }  // invalid UTF-8
    }

    /// A connection that buffers its reads hands out exactly the frames sent, whatever the sizes
    /// (payloads smaller and larger than its buffer) and however the bytes trickle in; a close
    /// between frames is a clean end, a close inside one an error.
    @Test func bufferedReadsHandOutExactlyTheFramesSent() throws {
        var fds: [Int32] = [0, 0]
        #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0)
        let reader = Connection(fd: fds[0], peer: "test")
        reader.bufferReads(upTo: 4096)
        let sizes = [0, 1, 15, 16, 2000, 2047, 2048, 2049, 4095, 4096, 10_000, 70_000, 3]
        var wire: [UInt8] = []
        for (k, n) in sizes.enumerated() {
            wire += FrameHeader(opcode: 9, requestID: UInt32(k), length: UInt32(n)).encoded()
            wire += (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ k) }
        }
        wire += FrameHeader(opcode: 9, requestID: 99, length: 100).encoded() + [1, 2, 3]  // cut short
        let bytes = wire, sendFD = fds[1]
        let writer = Thread {
            var at = 0, step = 1
            while at < bytes.count {  // pieces of growing size: frames split at every kind of boundary
                let n = min(step, bytes.count - at)
                _ = bytes[at..<at + n].withUnsafeBytes { send(sendFD, $0.baseAddress, n, Int32(MSG_NOSIGNAL)) }
                at += n
                step = step % 5000 + 7
            }
            shutdown(sendFD, Int32(SHUT_WR))
        }
        writer.start()
        for (k, n) in sizes.enumerated() {
            let frame = try #require(try reader.receive())
            #expect(frame.header.requestID == UInt32(k))
            #expect(frame.payload == (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ k) }, "frame \(k) of \(n) bytes")
        }
        #expect(throws: (any Error).self) { _ = try reader.receive() }
        Glibc.close(fds[1])
        // A clean close between frames: nil, after what was buffered.
        let (a, b) = try pairOfConnections()
        b.bufferReads(upTo: 64)
        try a.send(opcode: 3, requestID: 1, payload: [7, 7])
        try a.send(opcode: 3, requestID: 2, payload: [])
        a.close()
        #expect(try b.receive()?.payload == [7, 7])
        #expect(b.hasBufferedInput, "the second frame came with the first")
        #expect(try b.receive()?.header.requestID == 2)
        #expect(try b.receive() == nil)
    }

    private func pairOfConnections() throws -> (Connection, Connection) {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { throw SystemError.fromErrno("socketpair") }
        return (Connection(fd: fds[0], peer: "a"), Connection(fd: fds[1], peer: "b"))
    }

    @Test func hmacMatchesRFC4231() {
        // RFC 4231 test case 2
        let mac = Sys.hmacSHA256(key: Array("Jefe".utf8), data: Array("what do ya want for nothing?".utf8))
        let hex = mac.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
        #expect(hex == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    @Test func crc32cMatchesTheCheckValue() {
        let v = Array("123456789".utf8).withUnsafeBytes { Sys.crc32c(0, $0) }
        #expect(v == 0xE306_9283)
        // split computation equals one pass
        let data = (0..<1000).map { UInt8(truncatingIfNeeded: $0 * 7) }
        let whole = data.withUnsafeBytes { Sys.crc32c(0, $0) }
        let a = data[0..<333].withUnsafeBytes { Sys.crc32c(0, $0) }
        let ab = data[333...].withUnsafeBytes { Sys.crc32c(a, $0) }
        #expect(whole == ab)
    }

    /// Long buffers take the three-stream path; each length must agree with a bit-at-a-time CRC32C.
    @Test func crc32cThreeStreamsAgreeWithTheBitwiseDefinition() {
        func bitwise(_ bytes: ArraySlice<UInt8>) -> UInt32 {
            var c: UInt32 = ~0
            for b in bytes {
                c ^= UInt32(b)
                for _ in 0..<8 { c = (c >> 1) ^ (0x82F6_3B78 & (0 &- (c & 1))) }
            }
            return ~c
        }
        var rng = SystemRandomNumberGenerator()
        let data = (0..<40000).map { _ in UInt8.random(in: 0...255, using: &rng) }
        for length in [4079, 4080, 4081, 4096, 4128, 8160, 8161, 12240, 39999] {
            let fast = data[0..<length].withUnsafeBytes { Sys.crc32c(0, $0) }
            #expect(fast == bitwise(data[0..<length]), "length \(length)")
            let head = data[0..<100].withUnsafeBytes { Sys.crc32c(0, $0) }
            let chained = data[100..<length].withUnsafeBytes { Sys.crc32c(head, $0) }
            #expect(chained == fast, "length \(length), chained after 100 bytes")
        }
    }
}

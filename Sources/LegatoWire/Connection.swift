import Glibc
import LegatoSystem

/// One framed, blocking TCP connection. Not thread-safe: one reader and one writer at a time
/// (a reader thread and a writer thread may work at once).
public final class Connection {
    public let fd: Int32
    public let peer: String
    public let maxPayload: UInt32
    /// How long a read polls before it sleeps (see Socket.readFully); 0 never polls.
    public var spinNanos: UInt64 = 0
    private var closed = false
    private let closeLock = Lock()
    /// Bytes received ahead of what was asked for (see bufferReads): [rxStart, rxEnd) of rx.
    private var rx: UnsafeMutableRawPointer?
    private var rxCapacity = 0
    private var rxStart = 0
    private var rxEnd = 0

    public init(fd: Int32, peer: String, maxPayload: UInt32 = 64 << 20) {
        self.fd = fd
        self.peer = peer
        self.maxPayload = maxPayload
    }

    deinit {
        close()
        rx?.deallocate()
    }

    /// From now on a read takes whatever has arrived, up to `capacity` bytes, and later reads are
    /// served from it first: a header, a small payload and the frames behind them cost one recv
    /// instead of one each. A caller that polls the descriptor must check `hasBufferedInput` first:
    /// what is buffered here no longer makes the socket readable.
    public func bufferReads(upTo capacity: Int) {
        guard rx == nil, capacity >= FrameHeader.size else { return }
        rx = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 16)
        rxCapacity = capacity
    }

    /// Received bytes not yet handed out (see bufferReads).
    public var hasBufferedInput: Bool { rxEnd > rxStart }

    public static func connect(_ endpoint: String, host: String, port: UInt16, maxPayload: UInt32 = 64 << 20,
                               timeoutSeconds: Double = 5) throws -> Connection {
        let fd = try Socket.connect(host: host, port: port, timeoutSeconds: timeoutSeconds)
        return Connection(fd: fd, peer: endpoint, maxPayload: maxPayload)
    }

    /// Sends one frame whose payload is the concatenation of `parts`.
    public func send(opcode: UInt8, status: UInt16 = 0, requestID: UInt32, parts: [UnsafeRawBufferPointer]) throws {
        let length = parts.reduce(0) { $0 + $1.count }
        guard length <= Int(maxPayload) else { throw WireError.frameTooLarge(UInt32(clamping: length), limit: maxPayload) }
        let header = FrameHeader(opcode: opcode, status: status, requestID: requestID, length: UInt32(length)).encoded()
        try header.withUnsafeBytes { h in try Socket.writeFully(fd, [h] + parts) }
    }

    public func send(opcode: UInt8, status: UInt16 = 0, requestID: UInt32, payload: [UInt8]) throws {
        try payload.withUnsafeBytes { try send(opcode: opcode, status: status, requestID: requestID, parts: [$0]) }
    }

    /// Receives one frame; nil on a clean close between frames. Malformed headers throw WireError.
    public func receive() throws -> Frame? {
        guard let header = try receiveHeader() else { return nil }
        let n = Int(header.length)
        var failure: Error?
        let payload = [UInt8](unsafeUninitializedCapacity: n) { buf, count in
            count = 0
            guard n > 0 else { return }
            do {
                try receivePayload(into: buf.baseAddress!, count: n)
                count = n
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        return Frame(header: header, payload: payload)
    }

    /// Receives one frame into `payload`, reusing its storage (no allocation once it is big enough).
    public func receive(reusing payload: inout [UInt8]) throws -> FrameHeader? {
        guard let header = try receiveHeader() else { return nil }
        try receivePayload(reusing: &payload, count: Int(header.length))
        return header
    }

    /// Receives `count` payload bytes into `payload`, reusing its storage.
    public func receivePayload(reusing payload: inout [UInt8], count n: Int) throws {
        if payload.count < n {
            // Fresh storage, not zeroed: every byte is received over. (Growing in place zeroed the
            // difference, and built a temporary array of it: a 4 MiB store after a small request
            // cost a 4 MiB allocation, its page faults and a memset.)
            payload = [UInt8](unsafeUninitializedCapacity: n) { _, count in count = n }
        } else if payload.count > n {
            payload.removeSubrange(n...)
        }
        if n > 0 { try payload.withUnsafeMutableBytes { try receivePayload(into: $0.baseAddress!, count: n) } }
    }

    /// Reads and drops `count` payload bytes (a request refused before its body was read).
    public func discardPayload(count: Int) throws {
        var scratch = [UInt8](repeating: 0, count: min(count, 1 << 16))
        var left = count
        while left > 0 {
            let n = min(left, scratch.count)
            try scratch.withUnsafeMutableBytes { try receivePayload(into: $0.baseAddress!, count: n) }
            left -= n
        }
    }

    /// Receives a header only; the caller then reads exactly `length` payload bytes with `receivePayload`.
    public func receiveHeader() throws -> FrameHeader? {
        if let rx {
            guard try fill(atLeast: FrameHeader.size) else { return nil }
            let raw = [UInt8](UnsafeRawBufferPointer(start: rx + rxStart, count: FrameHeader.size))
            rxStart += FrameHeader.size
            return try FrameHeader.decode(raw, maxLength: maxPayload)
        }
        var raw = [UInt8](repeating: 0, count: FrameHeader.size)
        let got = try raw.withUnsafeMutableBytes { try Socket.readFully(fd, $0.baseAddress!, FrameHeader.size, spinNanos: spinNanos) }
        if !got { return nil }
        return try FrameHeader.decode(raw, maxLength: maxPayload)
    }

    public func receivePayload(into buffer: UnsafeMutableRawPointer, count: Int) throws {
        if count == 0 { return }
        var done = 0
        if let rx {
            done = min(count, rxEnd - rxStart)
            if done > 0 {
                buffer.copyMemory(from: rx + rxStart, byteCount: done)
                rxStart += done
            }
            // A short rest comes through the buffer (with what follows it); a long one straight in.
            if count - done > 0 && count - done <= rxCapacity / 2 {
                guard try fill(atLeast: count - done) else { throw WireError.truncated("payload of \(count) bytes") }
                (buffer + done).copyMemory(from: rx + rxStart, byteCount: count - done)
                rxStart += count - done
                return
            }
        }
        if done < count, !(try Socket.readFully(fd, buffer + done, count - done)) {
            throw WireError.truncated("payload of \(count) bytes")
        }
    }

    /// Receives `count` payload bytes in pieces through `staging` (a small buffer the caller reuses,
    /// so it stays in the cache): `take` gets each piece in order, while it is still hot.
    public func receivePayload(count: Int, through staging: UnsafeMutableRawBufferPointer,
                               _ take: (UnsafeRawBufferPointer) throws -> Void) throws {
        var left = count
        if let rx, rxEnd > rxStart, left > 0 {
            let n = min(left, rxEnd - rxStart)
            try take(UnsafeRawBufferPointer(start: rx + rxStart, count: n))
            rxStart += n
            left -= n
        }
        while left > 0 {
            let got = try Socket.read(fd, staging.baseAddress!, atLeast: 1, upTo: min(left, staging.count), spinNanos: spinNanos)
            guard got > 0 else { throw WireError.truncated("payload of \(count) bytes") }
            try take(UnsafeRawBufferPointer(start: staging.baseAddress!, count: got))
            left -= got
        }
    }

    /// Receives until at least `n` bytes are buffered (n <= rxCapacity), polling `spinNanos` first
    /// like Socket.readFully. False on a clean close with nothing buffered.
    private func fill(atLeast n: Int) throws -> Bool {
        guard let rx else { return false }
        if rxEnd - rxStart >= n { return true }
        if rxStart > 0 {
            if rxEnd > rxStart { memmove(rx, rx + rxStart, rxEnd - rxStart) }
            rxEnd -= rxStart
            rxStart = 0
        }
        let got = try Socket.read(fd, rx + rxEnd, atLeast: n - rxEnd, upTo: rxCapacity - rxEnd, spinNanos: spinNanos)
        if got == 0 {
            if rxEnd == 0 { return false }
            throw SystemError("read from peer (closed after \(rxEnd) of \(n) bytes)", code: ECONNRESET)
        }
        rxEnd += got
        return true
    }

    /// Shuts the socket down (wakes a blocked reader) and closes it once.
    public func close() {
        closeLock.withLock {
            guard !closed else { return }
            closed = true
            shutdown(fd, Int32(SHUT_RDWR))
            Glibc.close(fd)
        }
    }

    /// Wakes any blocked reader without closing the descriptor.
    public func shutdownBoth() {
        closeLock.withLock { if !closed { shutdown(fd, Int32(SHUT_RDWR)) } }
    }
}

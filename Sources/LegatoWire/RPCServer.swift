import Glibc
import LegatoCore
import LegatoSystem

/// A request handler's verdict on a bad request: answered with `status`, the connection stays open.
public struct ServiceError: Error, CustomStringConvertible {
    public let status: WireStatus
    public let message: String
    public init(_ status: WireStatus, _ message: String) {
        self.status = status
        self.message = message
    }
    public var description: String { "\(status): \(message)" }
}

/// What a service answers with: payload parts sent back to back (no copy into one buffer), then
/// `borrowed`: memory the service owns, gathered into the send without being copied into an array
/// first. It stays valid until the reply is sent: either the service keeps it until its next call
/// for the same session (a per-session read buffer), or `keepAlive` holds it (the server drops that
/// reference once the reply is out).
public struct Reply {
    public var parts: [[UInt8]]
    public var borrowed: [UnsafeRawBufferPointer]
    public var keepAlive: AnyObject?
    public init(_ parts: [[UInt8]] = [], borrowed: [UnsafeRawBufferPointer] = [], keepAlive: AnyObject? = nil) {
        self.parts = parts
        self.borrowed = borrowed
        self.keepAlive = keepAlive
    }
    public static let empty = Reply()
}

/// Per-connection state a service keeps (the peer's credential, its own bookkeeping).
public final class Session {
    public let peer: String
    public let token: [UInt8]
    public var attachment: AnyObject?
    init(peer: String, token: [UInt8]) {
        self.peer = peer
        self.token = token
    }
}

/// A service behind an RPCServer. `handle` may throw ServiceError (answered, connection kept)
/// or WireError (answered as bad request, connection closed).
public protocol RPCService: AnyObject {
    func handle(opcode: Opcode, payload: [UInt8], session: Session) throws -> Reply
    func stats() -> String
    func sessionClosed(_ session: Session)

    /// Direct receive, for requests whose bulk the service keeps as it arrives (a log append lands
    /// straight in its replica's buffer): how many leading bytes of an `opcode` request the service
    /// must see first (0, the default: never).
    func directPrefix(for opcode: Opcode) -> Int
    /// Where the `count` bytes that follow `prefix` go, or nil to receive the request as usual.
    /// A sink given out always gets one `finish` call.
    func directSink(opcode: Opcode, prefix: [UInt8], count: Int, session: Session) throws -> DirectSink?
}

extension RPCService {
    public func directPrefix(for opcode: Opcode) -> Int { 0 }
    public func directSink(opcode: Opcode, prefix: [UInt8], count: Int, session: Session) throws -> DirectSink? { nil }
}

/// Takes the bulk of one direct request as it arrives.
public protocol DirectSink: AnyObject {
    /// The next piece of the payload, in order. It was received a moment ago into a small buffer
    /// the connection reuses, so it is hot in the cache; it is valid only during the call.
    func take(_ piece: UnsafeRawBufferPointer)
    /// Handles the request once all its bytes are taken (`received` false: the receive broke off,
    /// and the sink only lets go of what it holds; the reply is not sent).
    func finish(received: Bool) throws -> Reply
}

/// Accepts authenticated connections and serves each on its own thread, in request order.
/// A malformed or hostile message closes only that connection, with a log line.
public final class RPCServer {
    public let listenFD: Int32
    public let port: UInt16
    private let service: RPCService
    private let secret: ClusterSecret
    private let role: Handshake.Role
    private let name: String
    private let log: Logger
    private let lock = Lock()
    private var connections: [Int32: Connection] = [:]
    private var stopping = false
    private var accepted = 0
    private var rejected = 0
    public var connectionsAccepted: Int { lock.withLock { accepted } }
    public var connectionsRejected: Int { lock.withLock { rejected } }

    public init(endpoint: Endpoint, service: RPCService, secret: ClusterSecret, role: Handshake.Role, name: String, log: Logger) throws {
        (listenFD, port) = try Socket.listen(host: endpoint.host, port: endpoint.port)
        self.service = service
        self.secret = secret
        self.role = role
        self.name = name
        self.log = log
    }

    public func start() {
        startThread(name: "accept") { [self] in acceptLoop() }
    }

    /// Stops accepting and closes every connection.
    public func stop() {
        let conns: [Connection] = lock.withLock {
            stopping = true
            return Array(connections.values)
        }
        shutdown(listenFD, Int32(SHUT_RDWR))
        close(listenFD)
        for c in conns { c.shutdownBoth() }
    }

    public var openConnections: Int { lock.withLock { connections.count } }

    private func acceptLoop() {
        while true {
            let accepted: (fd: Int32, peer: String)?
            do { accepted = try Socket.accept(listenFD) } catch {
                if lock.withLock({ stopping }) { return }
                log.error("accept failed: \(error)")
                usleep(100_000)
                continue
            }
            guard let (fd, peer) = accepted else { return }
            let conn = Connection(fd: fd, peer: peer, maxPayload: WireLimits.maxFramePayload)
            let admitted: Bool = lock.withLock {
                if stopping { return false }
                connections[fd] = conn
                self.accepted += 1
                return true
            }
            if !admitted { conn.close(); return }
            startThread(name: "conn") { [self] in serve(conn) }
        }
    }

    private func serve(_ conn: Connection) {
        defer {
            lock.withLock { _ = connections.removeValue(forKey: conn.fd) }
            conn.close()
        }
        Socket.setTimeout(conn.fd, seconds: 10)
        let token: [UInt8]
        do {
            token = try Handshake.accept(conn, secret: secret, role: role, name: name)
        } catch {
            lock.withLock { rejected += 1 }
            log.warning("rejected connection from \(conn.peer): \(error)")
            return
        }
        Socket.setTimeout(conn.fd, seconds: 0)
        let session = Session(peer: conn.peer, token: token)
        defer { service.sessionClosed(session) }
        var payload: [UInt8] = []  // reused from request to request
        var staging: UnsafeMutableRawBufferPointer?  // for direct receives, made at the first
        defer { staging?.deallocate() }
        while true {
            let header: FrameHeader
            do {
                guard let h = try conn.receiveHeader() else { return }
                header = h
            } catch {
                if !lock.withLock({ stopping }) { log.warning("closing connection from \(conn.peer): \(error)") }
                return
            }
            let id = header.requestID
            let responseOp = header.opcode | FrameHeader.responseBit
            do {
                guard let op = Opcode(rawValue: header.opcode), header.opcode != Opcode.hello.rawValue,
                      header.opcode != Opcode.auth.rawValue else {
                    throw WireError.unknownOpcode(header.opcode)
                }
                let reply: Reply
                if let direct = try receiveDirect(conn, op, Int(header.length), session, &staging) {
                    reply = direct
                } else {
                    try conn.receivePayload(reusing: &payload, count: Int(header.length))
                    switch op {
                    case .ping: reply = .empty
                    case .stats: reply = Reply([StatsText(json: service.stats()).encoded])
                    default: reply = try service.handle(opcode: op, payload: payload, session: session)
                    }
                }
                let total = reply.parts.reduce(0) { $0 + $1.count } + reply.borrowed.reduce(0) { $0 + $1.count }
                if total > Int(WireLimits.maxFramePayload) { throw ServiceError(.tooLarge, "reply of \(total) bytes") }
                try withExtendedLifetime(reply.keepAlive) {
                    try sendParts(conn, responseOp, .ok, id, reply.parts, then: reply.borrowed)
                }
            } catch let e as ServiceError {
                if !answer(conn, responseOp, e.status, id, e.message) { return }
            } catch let e as WireError {
                log.warning("closing connection from \(conn.peer): \(e)")
                _ = answer(conn, responseOp, .badRequest, id, e.description)
                return
            } catch {
                if !lock.withLock({ stopping }) { log.warning("closing connection from \(conn.peer): \(error)") }
                return
            }
        }
    }

    /// How long a direct receive waits for more of its payload before it gives up on the connection:
    /// the sink holds state (a log replica's room, which blocks the replica's next append) that a peer
    /// gone silent mid-request, its host dead or cut off, must not pin for good.
    public var directPayloadTimeoutSeconds = 30.0

    /// Requests at least this large may be received straight into the service's memory.
    static let directMinimum = 64 << 10
    /// The size of a connection's staging buffer for direct receives: small enough to stay in the
    /// cache, large enough that a recv takes what a loopback or network burst delivers.
    static let stagingSize = 64 << 10

    /// Receives and handles a request the direct way if the service takes it so; nil (nothing of the
    /// payload read) if the request is not one for the direct way.
    private func receiveDirect(_ conn: Connection, _ op: Opcode, _ length: Int, _ session: Session,
                               _ staging: inout UnsafeMutableRawBufferPointer?) throws -> Reply? {
        let prefixLength = service.directPrefix(for: op)
        guard prefixLength > 0, length >= max(prefixLength, Self.directMinimum) else { return nil }
        var prefix = [UInt8](repeating: 0, count: prefixLength)
        try prefix.withUnsafeMutableBytes { try conn.receivePayload(into: $0.baseAddress!, count: prefixLength) }
        let rest = length - prefixLength
        let sink: DirectSink?
        do {
            sink = try service.directSink(opcode: op, prefix: prefix, count: rest, session: session)
        } catch let e as ServiceError {
            try conn.discardPayload(count: rest)  // keep the stream in step, then answer the refusal
            throw e
        }
        guard let sink else {
            // Not taken directly after all: the request as usual, prefix included.
            var tail: [UInt8] = []
            try conn.receivePayload(reusing: &tail, count: rest)
            return try service.handle(opcode: op, payload: prefix + tail, session: session)
        }
        if staging == nil {
            staging = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.stagingSize, alignment: 4096)
        }
        Socket.setTimeout(conn.fd, seconds: directPayloadTimeoutSeconds)
        defer { Socket.setTimeout(conn.fd, seconds: 0) }
        do {
            try conn.receivePayload(count: rest, through: staging!) { sink.take($0) }
        } catch {
            _ = try? sink.finish(received: false)
            throw error
        }
        return try sink.finish(received: true)
    }

    private func sendParts(_ conn: Connection, _ op: UInt8, _ status: WireStatus, _ id: UInt32, _ parts: [[UInt8]],
                           then borrowed: [UnsafeRawBufferPointer]) throws {
        func go(_ i: Int, _ acc: [UnsafeRawBufferPointer]) throws {
            if i == parts.count {
                try conn.send(opcode: op, status: status.rawValue, requestID: id, parts: acc + borrowed)
                return
            }
            try parts[i].withUnsafeBytes { try go(i + 1, acc + [$0]) }
        }
        try go(0, [])
    }

    private func answer(_ conn: Connection, _ op: UInt8, _ status: WireStatus, _ id: UInt32, _ message: String) -> Bool {
        let w = ErrorMessage(message).encoded
        do {
            try conn.send(opcode: op, status: status.rawValue, requestID: id, payload: w)
            return true
        } catch {
            return false
        }
    }
}

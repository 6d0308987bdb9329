import LegatoCore
import LegatoSystem

/// The caller's side of a Legato connection: handshake, request ids, pipelined calls.
/// Not thread-safe; give each thread its own client.
public final class RPCClient {
    public let endpoint: Endpoint
    public let connection: Connection
    public private(set) var serverName = ""
    private var nextID: UInt32 = 2

    /// Connects and authenticates; `token` is this client's credential (see Handshake).
    /// `ioTimeoutSeconds` bounds every later read and write (0: none): a peer that stops answering
    /// becomes an error rather than a hang.
    public init(endpoint: Endpoint, secret: ClusterSecret, token: [UInt8], timeoutSeconds: Double = 5,
                ioTimeoutSeconds: Double = 60) throws {
        self.endpoint = endpoint
        connection = try Connection.connect(endpoint.description, host: endpoint.host, port: endpoint.port,
                                            maxPayload: WireLimits.maxFramePayload, timeoutSeconds: timeoutSeconds)
        Socket.setTimeout(connection.fd, seconds: timeoutSeconds)
        serverName = try Handshake.connect(connection, secret: secret, token: token).name
        Socket.setTimeout(connection.fd, seconds: ioTimeoutSeconds)
    }

    public func close() { connection.close() }

    /// Sends a request without waiting; returns its id for `receive`.
    @discardableResult
    public func send(_ opcode: Opcode, parts: [UnsafeRawBufferPointer]) throws -> UInt32 {
        let id = nextID
        nextID &+= 1
        if nextID < 2 { nextID = 2 }
        try connection.send(opcode: opcode.rawValue, requestID: id, parts: parts)
        return id
    }

    @discardableResult
    public func send(_ opcode: Opcode, _ payload: [UInt8]) throws -> UInt32 {
        try payload.withUnsafeBytes { try send(opcode, parts: [$0]) }
    }

    /// Receives the response to request `id` (responses arrive in request order); throws RemoteError if not ok.
    public func receive(_ opcode: Opcode, id: UInt32) throws -> [UInt8] {
        let header = try receiveHeader(opcode, id: id)
        var payload = [UInt8](repeating: 0, count: Int(header.length))
        try payload.withUnsafeMutableBytes { try connection.receivePayload(into: $0.baseAddress!, count: Int(header.length)) }
        return payload
    }

    /// Receives a response header and checks it; for a non-ok status reads the message and throws.
    public func receiveHeader(_ opcode: Opcode, id: UInt32) throws -> FrameHeader {
        guard let header = try connection.receiveHeader() else { throw WireError.closed }
        guard header.opcode == opcode.rawValue | FrameHeader.responseBit, header.requestID == id else {
            throw WireError.unexpectedOpcode(header.opcode, expected: opcode.rawValue | FrameHeader.responseBit)
        }
        if header.status != WireStatus.ok.rawValue {
            var payload = [UInt8](repeating: 0, count: Int(header.length))
            try payload.withUnsafeMutableBytes { try connection.receivePayload(into: $0.baseAddress!, count: Int(header.length)) }
            let message = (try? ErrorMessage(decoding: payload, what: "error message").message) ?? ""
            throw RemoteError(status: WireStatus(rawValue: header.status) ?? .internalError, message: message, peer: endpoint.description)
        }
        return header
    }

    /// One request, one response.
    public func call(_ opcode: Opcode, _ payload: [UInt8] = []) throws -> [UInt8] {
        let id = try send(opcode, payload)
        return try receive(opcode, id: id)
    }

    public func ping() throws { _ = try call(Ping()) }

    /// The service's counters as JSON text.
    public func stats() throws -> String { try call(Stats()).json }
}

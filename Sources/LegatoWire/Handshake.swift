import LegatoCore
import LegatoSystem

/// Mutual authentication with the cluster secret; the secret never crosses the wire.
///
/// The messages are Hello, Auth and AuthProof (layouts in Docs/wire-protocol.md, "Handshake").
///
/// `clientToken` is the client's credential: address spaces belong to the token that created them.
public enum Handshake {
    public static let nonceSize = 32
    public static let tokenSize = 32

    public enum Role: UInt8, CustomStringConvertible {
        case memoryNode = 1, logNode = 2, coordinator = 3, agent = 4, tool = 5
        public var description: String {
            switch self {
            case .memoryNode: return "memory node"
            case .logNode: return "log node"
            case .coordinator: return "coordinator"
            case .agent: return "agent"
            case .tool: return "tool"
            }
        }
    }

    static func clientProof(_ secret: ClusterSecret, serverNonce: [UInt8], clientNonce: [UInt8], token: [UInt8]) -> [UInt8] {
        Sys.hmacSHA256(key: secret.bytes, data: Array("legato-client".utf8) + serverNonce + clientNonce + token)
    }

    static func serverProof(_ secret: ClusterSecret, serverNonce: [UInt8], clientNonce: [UInt8]) -> [UInt8] {
        Sys.hmacSHA256(key: secret.bytes, data: Array("legato-server".utf8) + clientNonce + serverNonce)
    }

    /// Server side. Returns the client's token; throws (after telling the client) if the proof is wrong.
    public static func accept(_ conn: Connection, secret: ClusterSecret, role: Role, name: String) throws -> [UInt8] {
        let serverNonce = Sys.randomBytes(nonceSize)
        let hello = Hello(minVersion: FrameHeader.version, maxVersion: FrameHeader.version, serverNonce: serverNonce,
                          role: role.rawValue, name: name)
        try conn.send(opcode: Opcode.hello.rawValue, requestID: 0, payload: hello.encoded)
        guard let frame = try conn.receive() else { throw WireError.closed }
        guard frame.opcode == Opcode.auth.rawValue else {
            throw WireError.unexpectedOpcode(frame.opcode, expected: Opcode.auth.rawValue)
        }
        let auth = try Auth(decoding: frame.payload)
        let clientNonce = auth.clientNonce, token = auth.clientToken
        guard constantTimeEqual(auth.proof, clientProof(secret, serverNonce: serverNonce, clientNonce: clientNonce, token: token)) else {
            try? conn.send(opcode: Opcode.auth.rawValue | FrameHeader.responseBit, status: WireStatus.notAuthenticated.rawValue,
                           requestID: frame.header.requestID, payload: ErrorMessage("wrong cluster secret").encoded)
            throw WireError.authenticationFailed("peer \(conn.peer) proved a different cluster secret")
        }
        try conn.send(opcode: Opcode.auth.rawValue | FrameHeader.responseBit, requestID: frame.header.requestID,
                      payload: AuthProof(proof: serverProof(secret, serverNonce: serverNonce, clientNonce: clientNonce)).encoded)
        return token
    }

    /// Client side. Returns the server's role and name; throws if either side's proof fails.
    @discardableResult
    public static func connect(_ conn: Connection, secret: ClusterSecret, token: [UInt8]) throws -> (role: UInt8, name: String) {
        precondition(token.count == tokenSize)
        guard let hello = try conn.receive() else { throw WireError.closed }
        guard hello.opcode == Opcode.hello.rawValue else { throw WireError.unexpectedOpcode(hello.opcode, expected: Opcode.hello.rawValue) }
        let greeting = try Hello(decoding: hello.payload, what: "HELLO")
        guard greeting.minVersion <= FrameHeader.version && FrameHeader.version <= greeting.maxVersion else {
            throw WireError.unsupportedVersion(greeting.minVersion)
        }
        let serverNonce = greeting.serverNonce
        let clientNonce = Sys.randomBytes(nonceSize)
        let proof = clientProof(secret, serverNonce: serverNonce, clientNonce: clientNonce, token: token)
        try conn.send(opcode: Opcode.auth.rawValue, requestID: 1,
                      payload: Auth(clientNonce: clientNonce, clientToken: token, proof: proof).encoded)
        guard let reply = try conn.receive() else {
            throw WireError.authenticationFailed("\(conn.peer) closed the connection during authentication")
        }
        guard reply.status == .ok else {
            throw WireError.authenticationFailed("\(conn.peer) refused our cluster secret")
        }
        let answer = try AuthProof(decoding: reply.payload, what: "AUTH reply")
        guard constantTimeEqual(answer.proof, serverProof(secret, serverNonce: serverNonce, clientNonce: clientNonce)) else {
            throw WireError.authenticationFailed("\(conn.peer) does not know the cluster secret")
        }
        return (greeting.role, greeting.name)
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}

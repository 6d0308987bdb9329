import LegatoCore
import LegatoSystem

/// Mutual authentication with the cluster secret; the secret never crosses the wire.
///
///     server -> HELLO  { u8 minVersion, u8 maxVersion, [32] serverNonce, u8 role, string name }
///     client -> AUTH   { [32] clientNonce, [32] clientToken, [32] HMAC(secret, "legato-client" | serverNonce | clientNonce | clientToken) }
///     server -> AUTH|0x80 ok { [32] HMAC(secret, "legato-server" | clientNonce | serverNonce) }
///               or status notAuthenticated, then the server closes.
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
        var w = WireWriter()
        w.u8(FrameHeader.version)
        w.u8(FrameHeader.version)
        w.raw(serverNonce)
        w.u8(role.rawValue)
        w.string(name)
        try conn.send(opcode: Opcode.hello.rawValue, requestID: 0, payload: w.bytes)
        guard let frame = try conn.receive() else { throw WireError.closed }
        guard frame.opcode == Opcode.auth.rawValue else {
            throw WireError.unexpectedOpcode(frame.opcode, expected: Opcode.auth.rawValue)
        }
        var r = WireReader(frame.payload)
        let clientNonce = try r.raw(nonceSize, "client nonce")
        let token = try r.raw(tokenSize, "client token")
        let proof = try r.raw(32, "client proof")
        try r.expectEnd("AUTH")
        guard constantTimeEqual(proof, clientProof(secret, serverNonce: serverNonce, clientNonce: clientNonce, token: token)) else {
            var e = WireWriter()
            e.string("wrong cluster secret")
            try? conn.send(opcode: Opcode.auth.rawValue | FrameHeader.responseBit,
                           status: WireStatus.notAuthenticated.rawValue, requestID: frame.header.requestID, payload: e.bytes)
            throw WireError.authenticationFailed("peer \(conn.peer) proved a different cluster secret")
        }
        try conn.send(opcode: Opcode.auth.rawValue | FrameHeader.responseBit, requestID: frame.header.requestID,
                      payload: serverProof(secret, serverNonce: serverNonce, clientNonce: clientNonce))
        return token
    }

    /// Client side. Returns the server's role and name; throws if either side's proof fails.
    @discardableResult
    public static func connect(_ conn: Connection, secret: ClusterSecret, token: [UInt8]) throws -> (role: UInt8, name: String) {
        precondition(token.count == tokenSize)
        guard let hello = try conn.receive() else { throw WireError.closed }
        guard hello.opcode == Opcode.hello.rawValue else { throw WireError.unexpectedOpcode(hello.opcode, expected: Opcode.hello.rawValue) }
        var r = WireReader(hello.payload)
        let minV = try r.u8("min version"), maxV = try r.u8("max version")
        guard minV <= FrameHeader.version && FrameHeader.version <= maxV else { throw WireError.unsupportedVersion(minV) }
        let serverNonce = try r.raw(nonceSize, "server nonce")
        let role = try r.u8("role")
        let name = try r.string("name")
        let clientNonce = Sys.randomBytes(nonceSize)
        let proof = clientProof(secret, serverNonce: serverNonce, clientNonce: clientNonce, token: token)
        try conn.send(opcode: Opcode.auth.rawValue, requestID: 1, payload: clientNonce + token + proof)
        guard let reply = try conn.receive() else {
            throw WireError.authenticationFailed("\(conn.peer) closed the connection during authentication")
        }
        guard reply.status == .ok else {
            throw WireError.authenticationFailed("\(conn.peer) refused our cluster secret")
        }
        guard constantTimeEqual(reply.payload, serverProof(secret, serverNonce: serverNonce, clientNonce: clientNonce)) else {
            throw WireError.authenticationFailed("\(conn.peer) does not know the cluster secret")
        }
        return (role, name)
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var diff: UInt8 = 0
        for i in 0..<a.count { diff |= a[i] ^ b[i] }
        return diff == 0
    }
}

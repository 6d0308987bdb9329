// The messages of every connection (Docs/wire-protocol.md, "Handshake" and "Requests of every service").

/// HELLO: the server's greeting, sent as soon as a connection is accepted.
public struct Hello: WireMessage, Equatable {
    public var minVersion: UInt8
    public var maxVersion: UInt8
    public var serverNonce: [UInt8]
    public var role: UInt8
    public var name: String
    public init(minVersion: UInt8, maxVersion: UInt8, serverNonce: [UInt8], role: UInt8, name: String) {
        self.minVersion = minVersion
        self.maxVersion = maxVersion
        self.serverNonce = serverNonce
        self.role = role
        self.name = name
    }
    public func encode(to w: inout WireWriter) {
        w.u8(minVersion)
        w.u8(maxVersion)
        w.raw(serverNonce)
        w.u8(role)
        w.string(name)
    }
    public init(from r: inout WireReader) throws {
        minVersion = try r.u8("min version")
        maxVersion = try r.u8("max version")
        serverNonce = try r.raw(Handshake.nonceSize, "server nonce")
        role = try r.u8("role")
        name = try r.string("name")
    }
}

/// AUTH: the client's proof that it knows the cluster secret, with its credential.
public struct Auth: WireRequest, Equatable {
    public typealias Response = AuthProof
    public static let opcode = Opcode.auth
    public var clientNonce: [UInt8]
    public var clientToken: [UInt8]
    public var proof: [UInt8]
    public init(clientNonce: [UInt8], clientToken: [UInt8], proof: [UInt8]) {
        self.clientNonce = clientNonce
        self.clientToken = clientToken
        self.proof = proof
    }
    public func encode(to w: inout WireWriter) {
        w.raw(clientNonce)
        w.raw(clientToken)
        w.raw(proof)
    }
    public init(from r: inout WireReader) throws {
        clientNonce = try r.raw(Handshake.nonceSize, "client nonce")
        clientToken = try r.raw(Handshake.tokenSize, "client token")
        proof = try r.raw(32, "client proof")
    }
}

/// The server's proof that it knows the secret too.
public struct AuthProof: WireMessage, Equatable {
    public var proof: [UInt8]
    public init(proof: [UInt8]) { self.proof = proof }
    public func encode(to w: inout WireWriter) { w.raw(proof) }
    public init(from r: inout WireReader) throws { proof = try r.raw(32, "server proof") }
}

public struct Ping: WireRequest, EmptyMessage, Equatable {
    public typealias Response = NoPayload
    public static let opcode = Opcode.ping
    public init() {}
}

/// STATS: the service's counters as one JSON object.
public struct Stats: WireRequest, EmptyMessage, Equatable {
    public typealias Response = StatsText
    public static let opcode = Opcode.stats
    public init() {}
}

public struct StatsText: WireMessage, Equatable {
    public var json: String
    public init(json: String) { self.json = json }
    public func encode(to w: inout WireWriter) { w.raw(Array(json.utf8)) }
    public init(from r: inout WireReader) throws { json = String(decoding: try r.raw(r.remaining, "stats"), as: UTF8.self) }
}

/// A non-ok answer's message.
public struct ErrorMessage: WireMessage, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public func encode(to w: inout WireWriter) { w.string(message) }
    public init(from r: inout WireReader) throws { message = try r.string("error message") }
}

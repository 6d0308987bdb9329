/// One message body with one layout on the wire (Docs/wire-protocol.md, which a test checks against
/// these encodings): written by one side, read back by the other, bounds-checked.
public protocol WireMessage {
    func encode(to w: inout WireWriter)
    /// Reads the message from `r`; the caller checks that nothing trails it.
    init(from r: inout WireReader) throws
}

extension WireMessage {
    public var encoded: [UInt8] {
        var w = WireWriter()
        encode(to: &w)
        return w.bytes
    }

    /// Decodes `bytes`, which must hold exactly this message (`what` names it in errors).
    public init(decoding bytes: [UInt8], what: @autoclosure () -> String) throws {
        var r = WireReader(bytes)
        try self.init(from: &r)
        try r.expectEnd(what())
    }
}

/// A request: its opcode and the message its answer carries. Both the client and the service
/// use the same type, so the layout is written once.
public protocol WireRequest: WireMessage {
    associatedtype Response: WireMessage
    static var opcode: Opcode { get }
}

extension WireRequest {
    public init(decoding bytes: [UInt8]) throws { try self.init(decoding: bytes, what: Self.opcode.wireName) }
}

/// A message with no bytes (a request that names nothing, an answer that says only "ok").
public protocol EmptyMessage: WireMessage {
    init()
}

extension EmptyMessage {
    public func encode(to w: inout WireWriter) {}
    public init(from r: inout WireReader) throws { self.init() }
}

public struct NoPayload: EmptyMessage, Equatable {
    public init() {}
}

/// Requests and answers that carry only a count (`u64 n`).
public struct Count64: WireMessage, Equatable {
    public var value: UInt64
    public init(_ value: UInt64) { self.value = value }
    public func encode(to w: inout WireWriter) { w.u64(value) }
    public init(from r: inout WireReader) throws { value = try r.u64("count") }
}

extension RPCClient {
    /// Sends a typed request without waiting; returns its id for `receive`.
    @discardableResult
    public func send<R: WireRequest>(_ request: R) throws -> UInt32 { try send(R.opcode, request.encoded) }

    /// The answer to request `id` of type `R`, decoded (trailing bytes are an error).
    public func receive<R: WireRequest>(_ type: R.Type, id: UInt32) throws -> R.Response {
        try R.Response(decoding: try receive(R.opcode, id: id), what: "\(R.opcode.wireName) reply from \(endpoint)")
    }

    /// One typed request, one typed answer.
    public func call<R: WireRequest>(_ request: R) throws -> R.Response {
        try receive(R.self, id: try send(request))
    }
}

extension Opcode {
    /// The name Docs/wire-protocol.md gives the opcode: `storePages` is STORE_PAGES.
    public var wireName: String { Opcode.wireNames[self]! }

    private static let wireNames: [Opcode: String] = Dictionary(uniqueKeysWithValues: allCases.map { op in
        var out = ""
        for c in "\(op)" {
            if c.isUppercase { out.append("_") }
            out.append(contentsOf: c.uppercased())
        }
        return (op, out)
    })
}

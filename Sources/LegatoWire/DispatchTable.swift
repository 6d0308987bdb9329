/// A service's requests by opcode: each decoded by its message type and answered by a method of the
/// service. Built once per service; handlers are unapplied methods, so the table holds no service.
public struct DispatchTable<Service: AnyObject> {
    public typealias RawHandler = (_ service: Service, _ payload: [UInt8], _ session: Session) throws -> Reply
    /// By opcode value (an array: looked up on every request).
    private var handlers = [RawHandler?](repeating: nil, count: 256)

    public init() {}

    /// `R` answered by `method`, whose answer is encoded as the reply.
    public mutating func on<R: WireRequest>(_ type: R.Type, _ method: @escaping (Service) -> (R, Session) throws -> R.Response) {
        add(R.opcode) { service, payload, session in
            let request = try R(decoding: payload)
            return Reply([try method(service)(request, session).encoded])
        }
    }

    /// A request on a hot path, handled from its payload in place (`R`'s layout helpers decode it)
    /// and answered with memory the service owns, gathered into the send without a copy.
    public mutating func onPayload<R: WireRequest>(_ type: R.Type, _ method: @escaping RawHandler) {
        add(R.opcode, method)
    }

    private mutating func add(_ opcode: Opcode, _ handler: @escaping RawHandler) {
        precondition(handlers[Int(opcode.rawValue)] == nil, "\(opcode.wireName) has two handlers")
        handlers[Int(opcode.rawValue)] = handler
    }

    public func handle(_ service: Service, opcode: Opcode, payload: [UInt8], session: Session) throws -> Reply {
        guard let handler = handlers[Int(opcode.rawValue)] else { throw WireError.unknownOpcode(opcode.rawValue) }
        return try handler(service, payload, session)
    }
}

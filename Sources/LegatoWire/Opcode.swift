/// Every request opcode of every Legato service, in one place. Responses set bit 7.
/// Layouts are in Docs/wire-protocol.md and in the `...Request` types beside each service.
public enum Opcode: UInt8, CaseIterable {
    // session (all services)
    case hello = 0x01
    case auth = 0x02
    case ping = 0x03
    case stats = 0x04

    // memory node
    case createSpace = 0x10
    case storePages = 0x11
    case fetchPages = 0x12
    case discardPages = 0x13
    case dropSpace = 0x14
}

/// Limits every service enforces on what a peer sends.
public enum WireLimits {
    public static let maxPagesPerRequest = 4096
    public static let maxRangesPerRequest = 65536
    public static let maxFramePayload: UInt32 = 64 << 20
}

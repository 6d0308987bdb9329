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
    case freezeSpace = 0x15
    case fetchFrozen = 0x16
    case releaseSpace = 0x17
    case prepareSpace = 0x18
    case commitSpace = 0x19
    case fetchCheckpointed = 0x1A
    case describeSpace = 0x1B
    case recoverSpace = 0x1C
    case awaitRecoveryLogged = 0x1D

    // log node
    case openReplica = 0x30
    case appendEntries = 0x31
    case syncReplica = 0x32
    case closeReplica = 0x33
    case freeReplica = 0x34
    case listReplicas = 0x35
    case readReplica = 0x36

    // coordinator
    case registerNode = 0x50
    case heartbeat = 0x51
    case listNodes = 0x52
    case waitMembership = 0x53
    case assignSlab = 0x54
    case listSlabs = 0x55
    case beginCheckpoint = 0x56
    case commitCheckpoint = 0x57
    case abortCheckpoint = 0x58
    case listCheckpoints = 0x59
    case dropSlabs = 0x5A
    case deleteCheckpoint = 0x5B
    case planRecovery = 0x5C
}

/// Limits every service enforces on what a peer sends.
public enum WireLimits {
    public static let maxPagesPerRequest = 4096
    public static let maxRangesPerRequest = 65536
    public static let maxFramePayload: UInt32 = 64 << 20
    public static let maxEntriesPerRequest = 65536
    public static let maxNameLength = 256
}

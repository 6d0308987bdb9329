/// Page geometry and the identifiers every part of Legato shares.
public enum Page {
    public static let size = 4096
    public static let shift: UInt64 = 12
    public static let mask: UInt64 = 4095

    @inline(__always) public static func number(_ address: UInt64) -> UInt64 { address >> shift }
    @inline(__always) public static func address(_ number: UInt64) -> UInt64 { number << shift }
    @inline(__always) public static func alignDown(_ address: UInt64) -> UInt64 { address & ~mask }
    @inline(__always) public static func alignUp(_ address: UInt64) -> UInt64 { (address &+ mask) & ~mask }
}

/// The id of one wrapped process's address space, the first half of every page key.
public struct AddressSpaceID: Hashable, CustomStringConvertible, Sendable {
    public let raw: UInt64
    public init(_ raw: UInt64) { self.raw = raw }
    public var description: String { String(raw, radix: 16) }
}

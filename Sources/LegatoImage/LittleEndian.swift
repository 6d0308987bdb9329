/// Fixed-width integers in and out of byte arrays, little-endian: the checkpoint files' byte order.
enum LittleEndian {
    static func bytes<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }

    static func put<T: FixedWidthInteger>(_ b: inout [UInt8], _ at: Int, _ v: T) {
        withUnsafeBytes(of: v.littleEndian) { for (i, x) in $0.enumerated() { b[at + i] = x } }
    }

    static func get<T: FixedWidthInteger>(_ b: [UInt8], _ at: Int, as: T.Type) -> T {
        b.withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: at, as: T.self)) }
    }
}

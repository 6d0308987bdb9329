import LegatoCore
import LegatoSystem

/// The payloads of checkpoint entries in a replicated log (Docs/on-disk-format.md), written by an
/// agent into its run's log and by memory nodes into their participant logs. The log entry header
/// carries the epoch; the payload starts with a kind byte.
public enum CheckpointLogEntry {
    public enum Kind: UInt8 {
        case pages = 1     // [kind, 0, 0, 0, count u32, address u64] + count pages
        case zeros = 2     // [kind, 0, 0, 0, runs u32] + runs x [address u64, count u64]
        case context = 3   // [kind, 0 x 7] + the ProcessImage as JSON
    }

    /// A pages entry: `count` pages from `address`, copied from `data`.
    public static func pages(address: UInt64, count: Int, data: UnsafeRawPointer) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: 16 + count * Page.size) { buf, n in
            let p = UnsafeMutableRawPointer(buf.baseAddress!)
            p.storeBytes(of: UInt32(Kind.pages.rawValue).littleEndian, toByteOffset: 0, as: UInt32.self)
            p.storeBytes(of: UInt32(count).littleEndian, toByteOffset: 4, as: UInt32.self)
            p.storeBytes(of: address.littleEndian, toByteOffset: 8, as: UInt64.self)
            (p + 16).copyMemory(from: data, byteCount: count * Page.size)
            n = 16 + count * Page.size
        }
    }

    /// The log writer id of memory node `node`'s participant log for run `name` (FNV-1a, top bit set).
    public static func participantWriter(name: String, node: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in "legato-participant:\(name):\(node)".utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h | (1 << 63)
    }

    /// The token that owns participant log `writer` (derived from the cluster secret: the memory
    /// node writing it and a restore reading it both know it).
    public static func participantToken(writer: UInt64, secret: ClusterSecret) -> [UInt8] {
        Sys.hmacSHA256(key: secret.bytes, data: Array("legato participant log \(writer)".utf8))
    }
}

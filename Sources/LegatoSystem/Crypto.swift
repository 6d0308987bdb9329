import CShims
import Glibc

/// HMAC-SHA256, random bytes, CRC32C and non-temporal copies (libcrypto and the C layer).
extension Sys {
    // MARK: crypto

    public static func hmacSHA256(key: [UInt8], data: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        _ = lg_hmac_sha256(key, key.count, data, data.count, &out)
        return out
    }

    public static func randomBytes(_ count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        if lg_random_bytes(&out, count) != 0 {
            for i in 0..<count { out[i] = UInt8.random(in: 0...255) }
        }
        return out
    }

    public static func crc32c(_ crc: UInt32 = 0, _ data: UnsafeRawBufferPointer) -> UInt32 {
        lg_crc32c(crc, data.baseAddress, data.count)
    }

    /// Copies `source` to `destination` with non-temporal stores (lg_copy_nontemporal): for bulk data
    /// kept in memory but not read again soon.
    public static func copyNontemporal(to destination: UnsafeMutableRawPointer, from source: UnsafeRawBufferPointer) {
        if source.count > 0 { lg_copy_nontemporal(destination, source.baseAddress, source.count) }
    }
}

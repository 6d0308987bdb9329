/// Sizes as operators write them: `64M`, `1G`, `512K`, `4096`, `1.5G` (binary units; a trailing `B`/`iB` is allowed).
public struct ByteSize: Equatable, Comparable, CustomStringConvertible, Sendable {
    public let bytes: UInt64

    public init(bytes: UInt64) { self.bytes = bytes }

    public init?(parsing text: String) {
        var s = text.trimmingCharacters(in: " \t").uppercased()
        if s.hasSuffix("IB") { s.removeLast(2) } else if s.hasSuffix("B") { s.removeLast() }
        var multiplier: Double = 1
        if let last = s.last, let shift = ["K": 10, "M": 20, "G": 30, "T": 40][String(last)] {
            multiplier = Double(UInt64(1) << UInt64(shift))
            s.removeLast()
        }
        guard !s.isEmpty, let value = Double(s), value >= 0, value.isFinite else { return nil }
        let total = value * multiplier
        guard total < 1.8e19 else { return nil }
        bytes = UInt64(total.rounded())
    }

    public static func < (a: ByteSize, b: ByteSize) -> Bool { a.bytes < b.bytes }

    public var description: String { formatSize(bytes) }
}

/// `67108864` → `64M`, `1610612736` → `1.5G`: short, for logs and tables.
public func formatSize(_ bytes: UInt64) -> String {
    let units: [(UInt64, String)] = [(1 << 40, "T"), (1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")]
    for (size, suffix) in units where bytes >= size {
        if bytes % size == 0 { return "\(bytes / size)\(suffix)" }
        let v = Double(bytes) / Double(size)
        return v >= 100 ? "\(Int(v.rounded()))\(suffix)" : String(format1(v)) + suffix
    }
    return "\(bytes)B"
}

private func format1(_ v: Double) -> String {
    let tenths = Int((v * 10).rounded())
    return "\(tenths / 10).\(tenths % 10)"
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        var s = Substring(self)
        while let f = s.first, set.contains(f) { s.removeFirst() }
        while let l = s.last, set.contains(l) { s.removeLast() }
        return String(s)
    }
}

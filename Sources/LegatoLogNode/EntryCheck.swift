import LegatoSegmentLog
import LegatoSystem

/// Checks the entries of one append (on-disk form, back to back) as their bytes arrive, in pieces
/// of any size: each header well formed, entry i indexed first+i and of type data, its CRC right
/// (over header bytes 0..<28 and the payload), and exactly `count` of them. Each piece is read once,
/// while it is still hot from the receive. The first problem found is kept; the rest is not looked at.
struct EntryCheck {
    let first: UInt32
    let count: Int
    /// The entries checked so far; offsets from the start of the append.
    private(set) var refs: [ReplicaStore.EntryRef] = []
    private var problem: String?
    private var fed = 0                    // bytes fed so far
    private var entryStart = 0             // offset of the current entry's header
    private var header = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))  // a header that arrives split
    private var headerHave = 0
    private var current: SegmentFormat.EntryHeader?  // parsed; its payload still arriving
    private var payloadLeft = 0
    private var crc: UInt32 = 0
    private var trailingFrom: Int?         // offset of bytes after the last entry

    init(first: UInt32, count: Int) {
        self.first = first
        self.count = count
        refs.reserveCapacity(count)
    }

    mutating func feed(_ piece: UnsafeRawBufferPointer) {
        var at = 0
        while at < piece.count, problem == nil, trailingFrom == nil {
            if current == nil {
                if refs.count == count {
                    trailingFrom = fed + at
                    break
                }
                let n = min(SegmentFormat.entryHeaderSize - headerHave, piece.count - at)
                if headerHave == 0 && n == SegmentFormat.entryHeaderSize {
                    begin(UnsafeRawBufferPointer(rebasing: piece[at..<at + n]))
                } else {
                    withUnsafeMutableBytes(of: &header) { h in
                        (h.baseAddress! + headerHave).copyMemory(from: piece.baseAddress! + at, byteCount: n)
                    }
                    headerHave += n
                    if headerHave == SegmentFormat.entryHeaderSize {
                        let copy = header
                        withUnsafeBytes(of: copy) { begin($0) }
                    }
                }
                at += n
            } else {
                let n = min(payloadLeft, piece.count - at)
                crc = Sys.crc32c(crc, UnsafeRawBufferPointer(rebasing: piece[at..<at + n]))
                payloadLeft -= n
                at += n
            }
            if current != nil && payloadLeft == 0 { end() }
        }
        fed += piece.count
    }

    /// The checked entries once all `total` bytes are fed, or what is wrong with them.
    func result(total: Int) -> Result<[ReplicaStore.EntryRef], CheckFailure> {
        if let problem { return .failure(CheckFailure(problem)) }
        if let trailingFrom { return .failure(CheckFailure("\(SegmentFormat.FormatError.trailingBytes(total - trailingFrom))")) }
        guard fed == total else { return .failure(CheckFailure("\(fed) of \(total) bytes arrived")) }
        guard refs.count == count else {
            return .failure(CheckFailure("\(SegmentFormat.FormatError.badEntry(refs.count, at: entryStart))"))
        }
        return .success(refs)
    }

    struct CheckFailure: Error, CustomStringConvertible {
        let description: String
        init(_ d: String) { description = d }
    }

    /// A whole header is in: parse it, check what it claims, start its CRC.
    private mutating func begin(_ raw: UnsafeRawBufferPointer) {
        let i = refs.count
        guard let h = SegmentFormat.parseEntryHeader(raw) else {
            problem = "\(SegmentFormat.FormatError.badEntry(i, at: entryStart))"
            return
        }
        guard h.index == first + UInt32(i) else {
            problem = "entry \(i) carries index \(h.index), not \(first + UInt32(i))"
            return
        }
        guard h.type == SegmentFormat.EntryType.data.rawValue else {
            problem = "entry \(i) has type \(h.type)"
            return
        }
        current = h
        payloadLeft = Int(h.length)
        crc = Sys.crc32c(0, UnsafeRawBufferPointer(rebasing: raw[0..<28]))
    }

    /// The current entry's payload is in: its CRC decides.
    private mutating func end() {
        guard let h = current else { return }
        guard crc == h.crc else {
            problem = "entry \(first + UInt32(refs.count)) fails its checksum"
            return
        }
        refs.append(ReplicaStore.EntryRef(offset: UInt64(entryStart), header: h))
        entryStart += SegmentFormat.entryHeaderSize + Int(h.length)
        current = nil
        headerHave = 0
    }
}

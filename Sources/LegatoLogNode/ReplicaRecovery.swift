import Foundation
import Glibc
import LegatoCore
import LegatoSegmentLog
import LegatoSystem

/// Rebuilding the catalogue from disk at start: each file's entries checked, a torn tail cut off,
/// a file that cannot be read quarantined.
extension ReplicaStore {
    // MARK: recovery

    /// Rebuilds the catalogue from the directory: torn tails are cut off, corrupt entries skipped;
    /// files whose header is unreadable are set aside as `.bad`.
    func recover() throws {
        let root = directory + "/replicas"
        for writerDir in (try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [] {
            guard let writer = UInt64(writerDir, radix: 16) else { continue }
            for name in (try? FileManager.default.contentsOfDirectory(atPath: root + "/" + writerDir)) ?? [] where name.hasSuffix(".seg") {
                guard let segment = UInt64(name.dropLast(4), radix: 16) else { continue }
                let p = root + "/" + writerDir + "/" + name
                do {
                    let r = try load(path: p, key: Key(writer: writer, segment: segment))
                    replicas[r.key] = r
                } catch {
                    quarantinedFiles += 1
                    log.error("setting aside \(p): \(error)")
                    rename(p, p + ".bad")
                }
            }
        }
        if !replicas.isEmpty {
            log.info("recovered \(replicas.count) replicas (\(tornTails) torn tails cut, \(corruptEntries) corrupt entries skipped)")
        }
    }

    func load(path p: String, key: Key) throws -> Replica {
        let fd = Glibc.open(p, O_RDWR | O_CLOEXEC)
        if fd < 0 { throw SystemError.fromErrno("open \(p)") }
        defer { Glibc.close(fd) }
        var st = stat()
        fstat(fd, &st)
        let size = Int(st.st_size)
        var data = [UInt8](repeating: 0, count: size)
        let n = data.withUnsafeMutableBytes { pread(fd, $0.baseAddress, size, 0) }
        guard n == size else { throw SystemError.fromErrno("read \(p)") }
        let hdr = try SegmentFormat.decodeHeader(data)
        guard hdr.writer == key.writer, hdr.segment == key.segment else {
            throw SegmentFormat.FormatError.identityMismatch(writer: hdr.writer, segment: hdr.segment)
        }
        let r = Replica(key: key, path: p, owner: Array(data[32..<48]))
        var pos = SegmentFormat.headerSize
        var validEnd = pos
        data.withUnsafeBytes { raw in
            while pos + SegmentFormat.entryHeaderSize <= size {
                if let (h, next) = validEntry(raw, at: pos, size: size) {
                    if h.type == SegmentFormat.EntryType.footer.rawValue {
                        r.closed = true
                    } else {
                        r.entries.append(EntryRef(offset: UInt64(pos), header: h))
                        r.digest = Sys.crc32c(r.digest, withUnsafeBytes(of: h.crc.littleEndian) { $0 })
                        r.dataBytes += UInt64(h.length)
                    }
                    pos = next
                    validEnd = next
                    continue
                }
                // Not a valid entry here: a corrupt entry if a valid one follows, else a torn tail.
                var q = pos + 1
                var found = false
                while q + SegmentFormat.entryHeaderSize <= size {
                    if validEntry(raw, at: q, size: size) != nil { found = true; break }
                    q += 1
                }
                if !found { break }
                r.corrupt += 1
                corruptEntries += 1
                log.error("\(p): corrupt entry at offset \(pos), skipped up to \(q)")
                pos = q
            }
        }
        if validEnd < size {
            tornTails += 1
            log.warning("\(p): torn tail of \(size - validEnd) bytes at \(validEnd) cut off")
            _ = ftruncate(fd, off_t(validEnd))
            fdatasync(fd)
        }
        r.fileLength = UInt64(validEnd)
        r.syncedLength = r.fileLength
        if !r.closed { r.fd = Glibc.dup(fd) }
        return r
    }

    func validEntry(_ raw: UnsafeRawBufferPointer, at pos: Int, size: Int) -> (SegmentFormat.EntryHeader, Int)? {
        guard let h = SegmentFormat.parseEntryHeader(UnsafeRawBufferPointer(rebasing: raw[pos..<pos + SegmentFormat.entryHeaderSize])) else { return nil }
        let end = pos + SegmentFormat.entryHeaderSize + Int(h.length)
        guard end <= size else { return nil }
        let ok = SegmentFormat.verify(header: UnsafeRawBufferPointer(rebasing: raw[pos..<pos + SegmentFormat.entryHeaderSize]),
                                      payload: UnsafeRawBufferPointer(rebasing: raw[pos + SegmentFormat.entryHeaderSize..<end]), claimed: h.crc)
        return ok ? (h, end) : nil
    }
}

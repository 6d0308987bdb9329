import Glibc
import LegatoCore
import LegatoSystem

/// Restoring the files the tree held open (OpenFiles): before any process reopens one, each file
/// the checkpoint saved is compared with what is at its path now; one that changed gets the saved
/// content and size back, one that went is made again with its mode and owner, one that is as it
/// was is not touched (nor its mtime).
extension Agent {
    /// Puts back every saved file of `image` (PROG's) that differs from the checkpoint; returns each
    /// one put back, with why ("/tmp/x (changed)", "/tmp/y (gone)").
    func putOpenFilesBack(_ image: ProcessImage, from source: RestoreSource) throws -> [String] {
        let files = image.openFiles ?? []
        guard !files.isEmpty else { return [] }
        let reader = try RestoreBacking(layers: source.layers, areas: [])
        var putBack: [String] = []
        for f in files {
            let size = Int(f.size)
            let saved = UnsafeMutableRawPointer.allocate(byteCount: max(size, 1), alignment: Page.size)
            defer { saved.deallocate() }
            memset(saved, 0, size)  // holes were not saved
            try writeContent(id: f.id, size: f.size, from: source, reader) { offset, page, bytes in memcpy(saved + Int(offset), page, bytes) }
            var fd = open(f.path, O_RDWR | O_CLOEXEC | O_NOCTTY)
            var why = "changed"
            if fd < 0 && errno == ENOENT {
                fd = open(f.path, O_RDWR | O_CLOEXEC | O_CREAT | O_EXCL, mode_t(f.mode))
                guard fd >= 0 else { throw SystemError.fromErrno("make \(f.path) again, as it was at checkpoint \(image.epoch)") }
                guard fchown(fd, f.uid, f.gid) == 0, fchmod(fd, mode_t(f.mode)) == 0 else {
                    let e = SystemError.fromErrno("give \(f.path), made again, owner \(f.uid):\(f.gid) and mode 0\(String(f.mode, radix: 8))")
                    close(fd)
                    throw e
                }
                why = "gone"
            } else if fd < 0 {
                throw SystemError.fromErrno("open \(f.path) to compare it with checkpoint \(image.epoch)")
            }
            defer { close(fd) }
            if why == "changed" {
                var st = stat()
                guard fstat(fd, &st) == 0 else { throw SystemError.fromErrno("fstat \(f.path)") }
                guard st.st_mode & S_IFMT == S_IFREG else { throw RestoreError.openFileReplaced(name: image.name, path: f.path) }
                if UInt64(st.st_size) == f.size, try sameContent(fd, saved, size, f.path) { continue }
            }
            try Sys.pwriteFully(fd, saved, count: size, at: 0, "put \(f.path) back as it was at checkpoint \(image.epoch)")
            guard ftruncate(fd, off_t(size)) == 0 else { throw SystemError.fromErrno("truncate \(f.path) to its size at checkpoint \(image.epoch) (\(size) bytes)") }
            putBack.append("\(f.path) (\(why))")
        }
        return putBack
    }

    /// Whether the first `count` bytes of `fd` are those of `saved`.
    private func sameContent(_ fd: Int32, _ saved: UnsafeRawPointer, _ count: Int, _ path: String) throws -> Bool {
        let chunk = 1 << 20
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: Page.size)
        defer { buffer.deallocate() }
        var at = 0
        while at < count {
            let n = min(chunk, count - at)
            try Sys.preadFully(fd, buffer, count: n, at: at, "read \(path) to compare it with the checkpoint")
            if memcmp(buffer, saved + at, n) != 0 { return false }
            at += n
        }
        return true
    }
}

import Foundation
import Glibc
import LegatoCore
import LegatoImage
import LegatoSystem

/// The pages of a restored checkpoint that are not back yet (lazy restore): where each managed
/// page's content is in the checkpoint's layers. PROG's faults on such pages (state `restoring`)
/// are served from here; a background fill brings the rest back into PROG, or, past the local
/// budget, onto memory nodes. Owned by the event loop.
///
/// While the restore builds the address space, locations are kept per anonymous mapping of the
/// checkpoint, one slot per page; `bindKeys` then hands them to the regions' keys (which stay with
/// the pages through mremap), as ranges sorted by key.
final class RestoreBacking {
    /// A page's place: layer and page index within the layer's pages.
    struct Location {
        let layer: Int
        let page: Int64
        init(layer: Int, page: Int64) { self.layer = layer; self.page = page }
        init?(slot: UInt64) {
            guard slot != 0 else { return nil }
            layer = Int(slot >> 48) - 1
            page = Int64(slot & 0xFFFF_FFFF_FFFF)
        }
        var slot: UInt64 { UInt64(layer + 1) << 48 | UInt64(page) }
    }

    /// One anonymous mapping of the checkpoint: a slot per page (0: zero, or nothing to restore).
    final class Area {
        let start: UInt64
        let end: UInt64
        var slots: [UInt64]
        init(start: UInt64, end: UInt64) {
            self.start = start
            self.end = end
            slots = [UInt64](repeating: 0, count: Int((end - start) >> Page.shift))
        }
    }

    /// Keys [keyBase, keyBase + count) of a region and their slots.
    struct KeyRange {
        let keyBase: UInt64
        let area: Area
        let first: Int   // index of keyBase's page in area.slots
        let count: Int
    }

    static let runPages = 256
    let layers: [RestoreSource.Layer]
    private let stopReading = Lock()
    private var stopped = false
    private var fds: [Int32]
    /// Per layer: its checked pages file (format 2), or nil.
    private var pagesFiles: [PagesFileReader?]
    private var memory: [Data?]
    private(set) var areas: [Area]
    private(set) var ranges: [KeyRange] = []
    private var cursorRange = 0, cursorPage = 0
    /// Pages still `restoring` when bound (the fill counts them down only roughly: faults take some).
    private(set) var bound = 0
    /// Where pages are read to before they are installed (a run at most).
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: RestoreBacking.runPages * Page.size, alignment: Page.size)

    init(layers: [RestoreSource.Layer], areas: [(UInt64, UInt64)]) throws {
        self.layers = layers
        self.areas = areas.sorted { $0.0 < $1.0 }.map { Area(start: $0.0, end: $0.1) }
        fds = []
        memory = []
        pagesFiles = []
        for l in layers {
            if case .pagesFile(let path) = l.pages {
                let reader: PagesFileReader
                do { reader = try PagesFileReader(path: path) } catch {
                    for f in fds where f >= 0 { close(f) }
                    throw error
                }
                _ = posix_fadvise(reader.fd, 0, 0, POSIX_FADV_SEQUENTIAL)  // the fill reads in address order
                pagesFiles.append(reader)
                fds.append(-1)
                memory.append(nil)
                continue
            }
            pagesFiles.append(nil)
            switch l.pages {
            case .pagesFile:
                break
            case .file(let path):
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                if fd < 0 {
                    for f in fds where f >= 0 { close(f) }
                    throw SystemError.fromErrno("open \(path)")
                }
                _ = posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL)  // the fill reads in address order
                fds.append(fd)
                memory.append(nil)
            case .memory(let d):
                fds.append(-1)
                memory.append(d)
            case .streamed:
                fds.append(-1)
                memory.append(nil)
            }
        }
    }

    deinit {
        stopReading.withLock { stopped = true }
        for f in fds where f >= 0 { close(f) }
        buffer.deallocate()
    }

    /// Reads the layers' files front to back on a thread of its own, so that the disk works while
    /// the event loop installs: the fill's reads then mostly come from the page cache. Stops when
    /// the backing goes.
    func startReadAhead() {
        let files = (fds.filter { $0 >= 0 } + pagesFiles.compactMap { $0?.fd }).map { dup($0) }.filter { $0 >= 0 }
        guard !files.isEmpty else { return }
        startThread(name: "restore-readahead") { [weak self] in
            let chunk = 1 << 20
            let buf = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: Page.size)
            defer {
                buf.deallocate()
                for f in files { close(f) }
            }
            for f in files {
                var offset: off_t = 0
                while true {
                    guard let me = self, !me.stopReading.withLock({ me.stopped }) else { return }
                    let n = pread(f, buf, chunk, offset)
                    if n <= 0 { break }
                    offset += off_t(n)
                }
            }
        }
    }

    /// The area holding `address`.
    func area(_ address: UInt64) -> Area? {
        var lo = 0, hi = areas.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if areas[mid].end <= address { lo = mid + 1 } else { hi = mid }
        }
        return lo < areas.count && areas[lo].start <= address ? areas[lo] : nil
    }

    /// Hands the slots to the regions' keys and marks their pages `restoring`; returns the pages no
    /// region holds (a mapping the uffd refused), to be written at once.
    func bindKeys(_ regions: RegionTable) -> [(UInt64, Location)] {
        var unmanaged: [(UInt64, Location)] = []
        for a in areas {
            var covered = a.start
            var k = regions.firstIndex(atOrAbove: a.start)
            while covered < a.end {
                let r = k < regions.regions.count && regions.regions[k].start < a.end ? regions.regions[k] : nil
                let next = r.map { max($0.start, a.start) } ?? a.end
                // [covered, next) has no region.
                var p = covered
                while p < next {
                    if let loc = Location(slot: a.slots[Int((p - a.start) >> Page.shift)]) { unmanaged.append((p, loc)) }
                    p += Page.size.u64
                }
                guard let r else { break }
                let from = max(r.start, a.start), to = min(r.end, a.end)
                let first = Int((from - a.start) >> Page.shift), count = Int((to - from) >> Page.shift)
                let i0 = r.index(of: from)
                var any = false
                for j in 0..<count where a.slots[first + j] != 0 {
                    r.insert(i0 + j, .restoring)
                    bound += 1
                    any = true
                }
                if any { ranges.append(KeyRange(keyBase: r.key(at: i0), area: a, first: first, count: count)) }
                covered = to
                k += 1
            }
        }
        ranges.sort { $0.keyBase < $1.keyBase }
        return unmanaged
    }

    func location(key: UInt64) -> Location? {
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].keyBase + UInt64(ranges[mid].count) <= key { lo = mid + 1 } else { hi = mid }
        }
        guard lo < ranges.count, ranges[lo].keyBase <= key else { return nil }
        let r = ranges[lo]
        return Location(slot: r.area.slots[r.first + Int(key - r.keyBase)])
    }

    /// The fill's next key with a location, nil once past the last.
    func currentKey() -> UInt64? {
        while cursorRange < ranges.count {
            let r = ranges[cursorRange]
            while cursorPage < r.count {
                if r.area.slots[r.first + cursorPage] != 0 { return r.keyBase + UInt64(cursorPage) }
                cursorPage += 1
            }
            cursorRange += 1
            cursorPage = 0
        }
        return nil
    }

    /// Moves the fill past `n` pages from the current key (all in its range).
    func advance(_ n: Int) { cursorPage += n }

    /// Copies the pages at `locs` to dst, dst + 4096, ...: consecutive pages of one layer in one read.
    func read(_ locs: [Location], into dst: UnsafeMutableRawPointer) throws {
        var k = 0
        while k < locs.count {
            var n = 1
            while k + n < locs.count && locs[k + n].layer == locs[k].layer && locs[k + n].page == locs[k].page + Int64(n) { n += 1 }
            let l = locs[k].layer, offset = Int(locs[k].page) * Page.size, bytes = n * Page.size
            if let file = pagesFiles[l] {
                try file.read(first: Int(locs[k].page), count: n, into: dst + k * Page.size)
            } else if fds[l] >= 0 {
                var done = 0
                while done < bytes {
                    let got = pread(fds[l], dst + k * Page.size + done, bytes - done, off_t(offset + done))
                    if got <= 0 { throw SystemError("read \(n) restored pages at \(offset) of layer \(layers[l].epoch)", code: got < 0 ? errno : EIO) }
                    done += got
                }
            } else {
                for j in 0..<n { try read(locs[k + j], into: dst + (k + j) * Page.size) }
            }
            k += n
        }
    }

    /// The pages at `locs` where they already lie in memory, if they are consecutive pages of one
    /// streamed layer that have arrived: installed from there, they skip a copy.
    func inPlace(_ locs: [Location]) -> UnsafeRawPointer? {
        guard let first = locs.first, case .streamed(let s) = layers[first.layer].pages else { return nil }
        for (k, l) in locs.enumerated() where l.layer != first.layer || l.page != first.page + Int64(k) { return nil }
        return s.arrivedPages(Int(first.page), locs.count)
    }

    /// The runs of streamed layers that arrived since the last call, in arrival order.
    func takeArrivals() -> [(layer: Int, address: UInt64, page: Int, pages: Int)] {
        layers.indices.flatMap { l -> [(layer: Int, address: UInt64, page: Int, pages: Int)] in
            guard case .streamed(let s) = layers[l].pages else { return [] }
            return s.takeArrivals().map { (l, $0.address, $0.page, $0.pages) }
        }
    }

    /// Asks a streamed layer to bring the page runs `runs` (indices into its pageRuns) in one go.
    func prefetch(layer: Int, runs: [Int]) {
        if case .streamed(let s) = layers[layer].pages, !runs.isEmpty { s.prefetch(runs: runs) }
    }

    /// Whether reading `loc` would not wait for pages still on their way (a streamed layer).
    func available(_ loc: Location) -> Bool {
        if case .streamed(let s) = layers[loc.layer].pages { return s.available(page: Int(loc.page)) }
        return true
    }

    /// Copies the page at `loc` to `dst`.
    func read(_ loc: Location, into dst: UnsafeMutableRawPointer) throws {
        let offset = Int(loc.page) * Page.size
        if let file = pagesFiles[loc.layer] {
            try file.read(first: Int(loc.page), count: 1, into: dst)
        } else if fds[loc.layer] >= 0 {
            let n = pread(fds[loc.layer], dst, Page.size, off_t(offset))
            if n != Page.size { throw SystemError("read the restored page at \(offset) of layer \(layers[loc.layer].epoch)", code: n < 0 ? errno : EIO) }
        } else if case .streamed(let s) = layers[loc.layer].pages {
            try s.copy(page: Int(loc.page), into: dst)
        } else if let d = memory[loc.layer], offset + Page.size <= d.count {
            d.withUnsafeBytes { _ = memcpy(dst, $0.baseAddress! + offset, Page.size) }
        } else {
            throw RestoreError.pageMissing(offset: offset, layer: layers[loc.layer].epoch)
        }
    }
}

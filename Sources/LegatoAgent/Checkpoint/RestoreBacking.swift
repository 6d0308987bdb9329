import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// The pages of a restored checkpoint that are not back yet (lazy restore): where each managed
/// page's content is in the checkpoint's layers, by page key. PROG's faults on such pages (state
/// `restoring`) are served from here; a background fill brings the rest back into PROG, or, past
/// the local budget, onto memory nodes. Owned by the event loop.
final class RestoreBacking {
    struct Location {
        let layer: Int32
        let offset: Int64   // byte offset of the page in the layer's pages
    }

    let layers: [RestoreSource.Layer]
    private var fds: [Int32]
    private var memory: [Data?]
    /// By page address while the restore builds the address space; by key once regions exist.
    private(set) var byAddress: [UInt64: Location] = [:]
    private(set) var byKey: [UInt64: Location] = [:]
    /// Keys in address order, and how far the fill has come.
    private(set) var fillOrder: [UInt64] = []
    var fillCursor = 0
    /// Where pages are read to before they are installed (a run at most).
    static let runPages = 64
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: RestoreBacking.runPages * Page.size, alignment: Page.size)

    init(layers: [RestoreSource.Layer]) throws {
        self.layers = layers
        fds = []
        memory = []
        for l in layers {
            switch l.pages {
            case .file(let path):
                let fd = open(path, O_RDONLY | O_CLOEXEC)
                if fd < 0 {
                    for f in fds where f >= 0 { close(f) }
                    throw SystemError.fromErrno("open \(path)")
                }
                fds.append(fd)
                memory.append(nil)
            case .memory(let d):
                fds.append(-1)
                memory.append(d)
            }
        }
    }

    deinit {
        for f in fds where f >= 0 { close(f) }
        buffer.deallocate()
    }

    func note(address: UInt64, _ loc: Location?) { byAddress[address] = loc }

    /// Takes a page out of the lazy set (it is written now instead); nil: it is zero.
    func take(address: UInt64) -> Location? { byAddress.removeValue(forKey: address) ?? nil }

    /// Moves the addresses' locations to their regions' keys; returns the addresses no region holds.
    func bindKeys(_ regions: RegionTable) -> [(UInt64, Location)] {
        var unmanaged: [(UInt64, Location)] = []
        for (address, loc) in byAddress.sorted(by: { $0.key < $1.key }) {
            guard let r = regions.find(address) else { unmanaged.append((address, loc)); continue }
            let i = r.index(of: address)
            byKey[r.key(at: i)] = loc
            fillOrder.append(r.key(at: i))
            r.insert(i, .restoring)
        }
        byAddress.removeAll()
        return unmanaged
    }

    /// Copies the page at `loc` to `dst`.
    func read(_ loc: Location, into dst: UnsafeMutableRawPointer) throws {
        let l = Int(loc.layer)
        if fds[l] >= 0 {
            let n = pread(fds[l], dst, Page.size, off_t(loc.offset))
            if n != Page.size { throw SystemError("read the restored page at \(loc.offset) of layer \(layers[l].epoch)", code: n < 0 ? errno : EIO) }
        } else if let d = memory[l], Int(loc.offset) + Page.size <= d.count {
            d.withUnsafeBytes { _ = memcpy(dst, $0.baseAddress! + Int(loc.offset), Page.size) }
        } else {
            throw LegatoError("the restored page at \(loc.offset) of layer \(layers[l].epoch) is missing")
        }
    }

    func location(key: UInt64) -> Location? { byKey[key] }

    var remaining: Int { fillOrder.count - fillCursor }
}

import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Checkpoints of a named process in the local state directory:
///
///     <state dir>/processes/<name>/epoch-<N>/context.json   the ProcessImage (parentEpoch: an increment of)
///                                           pages.bin      page contents, back to back
///                                           pages.json     {"data": [[address, pages], ...] in pages.bin order,
///                                                           "zeros": [[address, pages], ...] pages now zero}
///                                           meta.json      {"committed_at", "pause_ms"}
///
/// A checkpoint is written into `epoch-<N>.tmp`, fsync'd, and renamed into place: it exists
/// (committed) or it does not. (The replicated log and the coordinator's two-phase commit take
/// this role on a cluster.)
public final class LocalImageStore: CheckpointStore {
    public let root: String

    public init(stateDirectory: String, name: String) {
        root = stateDirectory + "/processes/" + name
    }

    public static func names(stateDirectory: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: stateDirectory + "/processes")) ?? []).sorted()
    }

    public var epochs: [UInt64] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap {
            $0.hasPrefix("epoch-") && !$0.hasSuffix(".tmp") ? UInt64($0.dropFirst(6)) : nil
        }.sorted()
    }

    public func directory(_ epoch: UInt64) -> String { root + "/epoch-\(epoch)" }

    public func begin() throws -> CheckpointTransaction {
        let epoch = (epochs.max() ?? 0) + 1
        let tmp = directory(epoch) + ".tmp"
        try? FileManager.default.removeItem(atPath: tmp)
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        return try LocalTransaction(epoch: epoch, directory: tmp, final: directory(epoch))
    }

    public func committed() throws -> [CheckpointSummary] {
        epochs.map { e in
            let s = summary(epoch: e)
            return CheckpointSummary(epoch: e, committedAt: s.committedAt, pauseMillis: s.pauseMillis, pages: s.pages, parent: s.parent)
        }
    }

    /// One checkpoint's own part: its context, its pages and zero runs.
    public func layer(epoch: UInt64) throws -> (ProcessImage, RestoreSource.Layer) {
        let dir = directory(epoch)
        guard let ctx = FileManager.default.contents(atPath: dir + "/context.json") else {
            throw LegatoError("no checkpoint \(epoch) in \(root)")
        }
        let image = try JSONDecoder().decode(ProcessImage.self, from: ctx)
        guard image.version == ProcessImage.version else { throw LegatoError("checkpoint \(epoch) has format version \(image.version)") }
        let index = try JSONDecoder().decode(PageIndex.self, from: FileManager.default.contents(atPath: dir + "/pages.json") ?? Data())
        return (image, .init(epoch: epoch, pageRuns: index.data.map { ($0[0], Int($0[1])) }, zeroRuns: index.zeros.map { ($0[0], Int($0[1])) },
                             pages: .file(dir + "/pages.bin")))
    }

    /// Checkpoint `epoch` ready to restore: its context and its layers, from the full one it builds on.
    public var retainsOnMemoryNodes: Bool { false }  // the embedded memory node dies with the run

    public func load(epoch: UInt64) throws -> RestoreSource {
        let (image, top) = try layer(epoch: epoch)
        var layers = [top]
        var parent = image.parentEpoch
        while let p = parent {
            guard layers.count < 100_000 else { throw LegatoError("checkpoint \(epoch) of \(image.name): its parent chain loops") }
            let (older, l) = try layer(epoch: p)
            layers.insert(l, at: 0)
            parent = older.parentEpoch
        }
        return RestoreSource(image: image, layers: layers)
    }

    /// Size and time of a committed checkpoint.
    func summary(epoch: UInt64) -> (pages: Int, committedAt: Double, pauseMillis: Double, parent: UInt64?) {
        let dir = directory(epoch)
        let size = (try? FileManager.default.attributesOfItem(atPath: dir + "/pages.bin")[.size] as? NSNumber)?.intValue ?? 0
        let meta = (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/meta.json")))) as? [String: Any]
        return (size / Page.size, meta?["committed_at"] as? Double ?? 0, meta?["pause_ms"] as? Double ?? 0,
                (meta?["parent"] as? NSNumber).map { $0.uint64Value })
    }
}

/// One checkpoint being written into `epoch-N.tmp`.
final class LocalTransaction: CheckpointTransaction {
    let epoch: UInt64
    let directory: String
    let final: String

    init(epoch: UInt64, directory: String, final: String) throws {
        self.epoch = epoch
        self.directory = directory
        self.final = final
    }

    /// Phase one: pages, index, context and meta written and fsync'd under the temporary name.
    func prepare(staging: CheckpointStaging, image: ProcessImage, pauseMillis: Double) throws {
        let pagesFD = open(directory + "/pages.bin", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        if pagesFD < 0 { throw SystemError.fromErrno("create \(directory)/pages.bin") }
        defer { close(pagesFD) }
        var index = PageIndex()
        try staging.forEachRun { address, count, data in
            let bytes = count * Page.size
            var done = 0
            while done < bytes {
                let n = write(pagesFD, data + done, bytes - done)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { throw SystemError("write \(directory)/pages.bin", code: n < 0 ? errno : ENOSPC) }
                done += n
            }
            index.data.appendRun(address, count)
        }
        index.zeros = staging.zeroRuns
        if fsync(pagesFD) != 0 { throw SystemError.fromErrno("fsync \(directory)/pages.bin") }
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        try enc.encode(image).write(to: URL(fileURLWithPath: directory + "/context.json"))
        try enc.encode(index).write(to: URL(fileURLWithPath: directory + "/pages.json"))
        var meta: [String: Any] = ["committed_at": Date().timeIntervalSince1970, "pause_ms": pauseMillis]
        if let p = image.parentEpoch { meta["parent"] = p }
        try JSONSerialization.data(withJSONObject: meta).write(to: URL(fileURLWithPath: directory + "/meta.json"))
        for f in ["context.json", "pages.json", "meta.json"] {
            let fd = open(directory + "/" + f, O_RDONLY | O_CLOEXEC)
            if fd < 0 || fsync(fd) != 0 {
                let e = SystemError.fromErrno("fsync \(directory)/\(f)")
                if fd >= 0 { close(fd) }
                throw e
            }
            close(fd)
        }
    }

    /// Phase two, the commit point: the directory gets its final name.
    func commit() throws {
        guard rename(directory, final) == 0 else { throw SystemError.fromErrno("rename \(directory) to \(final)") }
        let parent = open((final as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if parent >= 0 { fsync(parent); close(parent) }
    }

    func abort(reason: String) { try? FileManager.default.removeItem(atPath: directory) }
}

/// The page runs of one checkpoint (pages.json).
struct PageIndex: Codable {
    var data: [[UInt64]] = []
    var zeros: [[UInt64]] = []
}

extension Array where Element == [UInt64] {
    /// Appends [address, count], merged into the last run when contiguous.
    mutating func appendRun(_ address: UInt64, _ count: Int) {
        if let last = self.last, last[0] + last[1] * UInt64(Page.size) == address {
            self[self.count - 1][1] += UInt64(count)
        } else {
            append([address, UInt64(count)])
        }
    }
}

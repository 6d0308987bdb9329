import Foundation
import Glibc
import LegatoCore
import LegatoImage
import LegatoSystem

/// Checkpoints of a named process in the local state directory (format 2, Docs/on-disk-format.md):
///
///     <state dir>/processes/<name>/epoch-<N>/context.rec   the ProcessImage (parentEpoch: an increment of)  RecordFile
///                                           pages.bin     page contents, each with its CRC32C            PagesFile
///                                           index.rec     PageIndex: [address, pages] runs in pages.bin
///                                                         order, and the runs now zero                   RecordFile
///                                           summary.rec   LocalCheckpointSummary                         RecordFile
///
/// Checkpoints written in format 1 (context.json, pages.json, meta.json, pages.bin without header
/// or checksums) are still read.
///
/// A checkpoint is written into `epoch-<N>.tmp`, fsync'd, and renamed into place: it exists
/// (committed) or it does not. (The replicated log and the coordinator's two-phase commit take
/// this role on a cluster.)
public final class LocalImageStore: CheckpointStore {
    public let root: String
    public let name: String

    public init(stateDirectory: String, name: String) {
        root = stateDirectory + "/processes/" + name
        self.name = name
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
        if FileManager.default.fileExists(atPath: dir + "/context.rec") {
            let image = try RecordFile.read(ProcessImage.self, kind: .context, from: dir + "/context.rec")
            guard image.version == ProcessImage.version else { throw CheckpointStoreError.unsupportedVersion(epoch: epoch, version: image.version) }
            let index = try RecordFile.read(PageIndex.self, kind: .pageIndex, from: dir + "/index.rec")
            return (image, .init(epoch: epoch, pageRuns: index.data.map { ($0[0], Int($0[1])) }, zeroRuns: index.zeros.map { ($0[0], Int($0[1])) },
                                 pages: .pagesFile(dir + "/pages.bin")))
        }
        return try legacyLayer(epoch: epoch)
    }

    /// A checkpoint written in format 1.
    private func legacyLayer(epoch: UInt64) throws -> (ProcessImage, RestoreSource.Layer) {
        let dir = directory(epoch)
        guard let ctx = FileManager.default.contents(atPath: dir + "/context.json") else {
            throw CheckpointStoreError.noSuchCheckpoint(name: name, epoch: epoch, place: "in \(root)")
        }
        let image = try JSONDecoder().decode(ProcessImage.self, from: ctx)
        guard image.version == ProcessImage.version else { throw CheckpointStoreError.unsupportedVersion(epoch: epoch, version: image.version) }
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
            guard layers.count < 100_000 else { throw CheckpointStoreError.parentChainLoops(name: image.name, epoch: epoch) }
            let (older, l) = try layer(epoch: p)
            layers.insert(l, at: 0)
            parent = older.parentEpoch
        }
        return RestoreSource(image: image, layers: layers)
    }

    /// Size and time of a committed checkpoint.
    func summary(epoch: UInt64) -> (pages: Int, committedAt: Double, pauseMillis: Double, parent: UInt64?) {
        let dir = directory(epoch)
        if let s = try? RecordFile.read(LocalCheckpointSummary.self, kind: .summary, from: dir + "/summary.rec") {
            return (s.pages, s.committedAt, s.pauseMillis, s.parent)
        }
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

    /// Phase one: pages, index, context and summary written and fsync'd under the temporary name.
    func prepare(staging: CheckpointStaging, image: ProcessImage, pauseMillis: Double) throws {
        let pages = try PagesFileWriter(path: directory + "/pages.bin", epoch: epoch)
        var index = PageIndex()
        try staging.forEachRun { address, count, data in
            try pages.append(data, count: count)
            index.data.appendRun(address, count)
        }
        index.zeros = staging.zeroRuns
        try pages.finish()
        try RecordFile.write(image, kind: .context, to: directory + "/context.rec")
        try RecordFile.write(index, kind: .pageIndex, to: directory + "/index.rec")
        let summary = LocalCheckpointSummary(committedAt: Date().timeIntervalSince1970, pauseMillis: pauseMillis,
                                             parent: image.parentEpoch, pages: pages.pages)
        try RecordFile.write(summary, kind: .summary, to: directory + "/summary.rec")
    }

    /// Phase two, the commit point: the directory gets its final name.
    func commit() throws {
        guard rename(directory, final) == 0 else { throw SystemError.fromErrno("rename \(directory) to \(final)") }
        let parent = open((final as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if parent >= 0 { fsync(parent); close(parent) }
    }

    func abort(reason: String) { try? FileManager.default.removeItem(atPath: directory) }
}

/// What `summary.rec` holds: when the checkpoint committed, its pause, what it is an increment of,
/// and how many pages its pages file holds.
struct LocalCheckpointSummary: Codable {
    var committedAt: Double
    var pauseMillis: Double
    var parent: UInt64?
    var pages: Int
}

/// The page runs of one checkpoint (index.rec; pages.json in format 1).
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

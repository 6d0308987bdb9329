import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// Checkpoints of a named process in the local state directory:
///
///     <state dir>/processes/<name>/epoch-<N>/context.json   the ProcessImage
///                                           pages.bin      page contents, back to back
///                                           pages.json     [[address, pages], ...] in pages.bin order
///
/// A checkpoint is written into `epoch-<N>.tmp`, fsync'd, and renamed into place: it exists
/// (committed) or it does not. (The replicated log and the coordinator's two-phase commit take
/// this role on a cluster.)
public final class LocalImageStore {
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

    func begin(epoch: UInt64) throws -> LocalImageSink {
        let tmp = directory(epoch) + ".tmp"
        try? FileManager.default.removeItem(atPath: tmp)
        try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
        return try LocalImageSink(directory: tmp, final: directory(epoch))
    }

    public func load(epoch: UInt64) throws -> (ProcessImage, [(UInt64, Int)], String) {
        let dir = directory(epoch)
        guard let ctx = FileManager.default.contents(atPath: dir + "/context.json") else {
            throw LegatoError("no checkpoint \(epoch) in \(root)")
        }
        let image = try JSONDecoder().decode(ProcessImage.self, from: ctx)
        guard image.version == ProcessImage.version else { throw LegatoError("checkpoint \(epoch) has format version \(image.version)") }
        let idx = try JSONDecoder().decode([[UInt64]].self, from: FileManager.default.contents(atPath: dir + "/pages.json") ?? Data("[]".utf8))
        return (image, idx.map { ($0[0], Int($0[1])) }, dir + "/pages.bin")
    }

    /// Size and time of a committed checkpoint.
    public func summary(epoch: UInt64) -> (pages: Int, committedAt: Double, pauseMillis: Double) {
        let dir = directory(epoch)
        let size = (try? FileManager.default.attributesOfItem(atPath: dir + "/pages.bin")[.size] as? NSNumber)?.intValue ?? 0
        let meta = (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: dir + "/meta.json")))) as? [String: Any]
        return (size / Page.size, meta?["committed_at"] as? Double ?? 0, meta?["pause_ms"] as? Double ?? 0)
    }
}

final class LocalImageSink: ImageSink {
    let directory: String
    let final: String
    private let pagesFD: Int32
    private var index: [[UInt64]] = []
    var pauseMillis: Double = 0

    init(directory: String, final: String) throws {
        self.directory = directory
        self.final = final
        pagesFD = open(directory + "/pages.bin", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        if pagesFD < 0 { throw SystemError.fromErrno("create \(directory)/pages.bin") }
    }

    deinit { close(pagesFD) }

    func pages(at address: UInt64, count: Int, _ data: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < data.count {
            let n = write(pagesFD, data.baseAddress! + done, data.count - done)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { throw SystemError("write \(directory)/pages.bin", code: n < 0 ? errno : ENOSPC) }
            done += n
        }
        if let last = index.last, last[0] + last[1] * UInt64(Page.size) == address {
            index[index.count - 1][1] += UInt64(count)
        } else {
            index.append([address, UInt64(count)])
        }
    }

    func finish(_ image: ProcessImage) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.sortedKeys]
        try enc.encode(image).write(to: URL(fileURLWithPath: directory + "/context.json"))
        try enc.encode(index).write(to: URL(fileURLWithPath: directory + "/pages.json"))
        if fsync(pagesFD) != 0 { throw SystemError.fromErrno("fsync \(directory)/pages.bin") }
    }

    /// The commit point: the directory gets its final name.
    func commit(pauseMillis: Double) throws {
        let meta: [String: Any] = ["committed_at": Date().timeIntervalSince1970, "pause_ms": pauseMillis]
        try JSONSerialization.data(withJSONObject: meta).write(to: URL(fileURLWithPath: directory + "/meta.json"))
        for f in ["context.json", "pages.json", "meta.json"] {
            let fd = open(directory + "/" + f, O_RDONLY | O_CLOEXEC)
            if fd >= 0 { fsync(fd); close(fd) }
        }
        guard rename(directory, final) == 0 else { throw SystemError.fromErrno("rename \(directory) to \(final)") }
        let parent = open((final as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if parent >= 0 { fsync(parent); close(parent) }
    }

    func abandon() { try? FileManager.default.removeItem(atPath: directory) }
}

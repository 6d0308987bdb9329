import Foundation
import LegatoClients
import LegatoCore
import LegatoImage
import LegatoSegmentLog
import LegatoSystem

/// One epoch's entries gathered from the log.
final class CheckpointLayerBuilder {
    let epoch: UInt64
    var runs: [(UInt64, Int)] = []
    var zeros: [(UInt64, Int)] = []
    var data = Data()

    init(epoch: UInt64) { self.epoch = epoch }

    /// Adds an entry; true if it was the context.
    func add(_ p: UnsafeRawBufferPointer) throws -> Bool {
        guard p.count >= 8, let kind = CheckpointLogEntry.Kind(rawValue: p[0]) else { throw CheckpointLogEntry.FormatError.unknownKind(epoch: epoch) }
        func u64(_ at: Int) -> UInt64 { UInt64(littleEndian: p.loadUnaligned(fromByteOffset: at, as: UInt64.self)) }
        let n = Int(UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        switch kind {
        case .pages:
            guard let run = try CheckpointLogEntry.parsePages(p) else { return false }
            runs.append((run.address, run.count))
            data.append(contentsOf: run.data)
        case .zeros:
            guard p.count == 8 + n * 16 else { throw CheckpointLogEntry.FormatError.zerosSize(epoch: epoch, runs: n, bytes: p.count) }
            for k in 0..<n { zeros.append((u64(8 + k * 16), Int(u64(16 + k * 16)))) }
        case .context:
            return true
        case .index:
            break
        }
        return false
    }

    var layer: RestoreSource.Layer { .init(epoch: epoch, pageRuns: runs, zeroRuns: zeros, pages: .memory(data)) }
}

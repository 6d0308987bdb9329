import Foundation
import LegatoSystem

/// Named steps of an operation, timed from a start: "freeze 0.1, context 2.8, scan 5.1 ms".
struct PhaseTimer {
    private let start: UInt64
    private var marks: [(String, UInt64)] = []

    init(since start: UInt64 = monotonicNanos()) { self.start = start }

    /// Ends the step called `name` now.
    mutating func mark(_ name: String) { marks.append((name, monotonicNanos())) }

    var description: String {
        var last = start
        return marks.map { name, t in
            defer { last = t }
            return "\(name) \(String(format: "%.1f", Double(t - last) / 1e6))"
        }.joined(separator: ", ") + " ms"
    }
}

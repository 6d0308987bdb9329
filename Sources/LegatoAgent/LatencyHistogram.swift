/// Latencies in microseconds: 0.1 µs buckets to 1 ms, 10 µs buckets to 100 ms, then one overflow bucket.
struct LatencyHistogram {
    private var fine = [UInt64](repeating: 0, count: 10_000)   // 0.1 µs each, 0..1000 µs
    private var coarse = [UInt64](repeating: 0, count: 9_900)  // 10 µs each, 1 ms..100 ms
    private var overflow: UInt64 = 0
    private(set) var count: UInt64 = 0

    mutating func record(nanos: UInt64) {
        count += 1
        if nanos < 1_000_000 { fine[Int(nanos / 100)] += 1 } else if nanos < 100_000_000 {
            coarse[Int((nanos - 1_000_000) / 10_000)] += 1
        } else { overflow += 1 }
    }

    /// The q-quantile in microseconds (0 when empty).
    func quantile(_ q: Double) -> Double {
        guard count > 0 else { return 0 }
        let target = UInt64((Double(count) * q).rounded(.up))
        var seen: UInt64 = 0
        for (i, c) in fine.enumerated() where c > 0 {
            seen += c
            if seen >= target { return Double(i) / 10 + 0.05 }
        }
        for (i, c) in coarse.enumerated() where c > 0 {
            seen += c
            if seen >= target { return 1000 + Double(i) * 10 + 5 }
        }
        return 100_000
    }
}

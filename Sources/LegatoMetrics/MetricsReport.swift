import LegatoSystem

/// A service's numbers as Prometheus samples: counters (only go up; names end in `_total`) and
/// gauges (a value now). Names are given without the `legato_<role>_` prefix, which the endpoint
/// adds; units go in the name as Prometheus asks (`_bytes`, `_seconds`).
public struct MetricsReport: Sendable {
    public enum Kind: Sendable { case counter, gauge }

    public struct Sample: Sendable, Equatable {
        public var name: String
        public var kind: Kind
        public var value: Double
        public var help: String
    }

    public private(set) var samples: [Sample] = []

    public init() {}

    public mutating func counter<V: BinaryInteger>(_ name: String, _ value: V, help: String) {
        precondition(name.hasSuffix("_total"), "a counter's name ends in _total: \(name)")
        samples.append(Sample(name: name, kind: .counter, value: Double(value), help: help))
    }

    public mutating func gauge<V: BinaryInteger>(_ name: String, _ value: V, help: String) {
        samples.append(Sample(name: name, kind: .gauge, value: Double(value), help: help))
    }

    public mutating func gauge(_ name: String, _ value: Double, help: String) {
        samples.append(Sample(name: name, kind: .gauge, value: value, help: help))
    }

    /// Seconds counted up, from a total in nanoseconds.
    public mutating func secondsCounter(_ name: String, nanos: UInt64, help: String) {
        precondition(name.hasSuffix("_seconds_total"), "a seconds counter's name ends in _seconds_total: \(name)")
        samples.append(Sample(name: name, kind: .counter, value: Double(nanos) / 1e9, help: help))
    }
}

/// A record that can report itself as Prometheus samples (a service's stats).
public protocol MetricsReporting {
    func report(into report: inout MetricsReport)
}

extension MetricsReporting {
    public var metricsReport: MetricsReport {
        var r = MetricsReport()
        report(into: &r)
        return r
    }
}

/// The latest report of a part whose numbers only its own thread may read (the agent's event
/// loop publishes; the metrics endpoint's thread collects).
public final class PublishedReport: @unchecked Sendable {
    private let lock = Lock()
    private var latest = MetricsReport()

    public init() {}

    public func publish(_ report: MetricsReport) { lock.withLock { latest = report } }

    public var current: MetricsReport { lock.withLock { latest } }
}

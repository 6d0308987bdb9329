/// The aio contexts (io_setup) of one address space, counted from the calls the seccomp filter
/// traps, so a checkpoint can tell whether any request is still in flight: the kernel shows only
/// the ring, whose events are the completed requests not yet reaped.
///
/// Requests in flight = submitted - reaped by io_getevents/io_pgetevents - events in the ring.
/// A program that reaps by moving the ring's head itself is seen as having requests in flight
/// (a refusal, never a wrong checkpoint).
struct AioContexts {
    struct Context: Equatable {
        /// What io_setup was asked for (the kernel sizes the ring from it).
        var requested: UInt32
        var submitted: UInt64 = 0
        var reaped: UInt64 = 0
    }

    /// By context id (the address of its ring).
    private(set) var contexts: [UInt64: Context] = [:]

    var isEmpty: Bool { contexts.isEmpty }

    subscript(id: UInt64) -> Context? { contexts[id] }

    mutating func setUp(_ id: UInt64, requested: UInt32) { contexts[id] = Context(requested: requested) }

    /// A context brought back by a restore, holding `events` completed requests and none in flight.
    mutating func restored(_ id: UInt64, requested: UInt32, events: UInt32) {
        contexts[id] = Context(requested: requested, submitted: UInt64(events))
    }

    mutating func submitted(_ id: UInt64, _ count: Int64) {
        guard count > 0 else { return }
        contexts[id]?.submitted &+= UInt64(count)
    }

    mutating func reaped(_ id: UInt64, _ count: Int64) {
        guard count > 0 else { return }
        contexts[id]?.reaped &+= UInt64(count)
    }

    /// The ring of context `id` was moved by mremap (nothing happens for an address that is no ring).
    mutating func moved(_ id: UInt64, to newID: UInt64) {
        guard let c = contexts.removeValue(forKey: id) else { return }
        contexts[newID] = c
    }

    mutating func destroyed(_ id: UInt64) { contexts[id] = nil }

    mutating func removeAll() { contexts = [:] }

    /// Requests of context `id` not completed yet, given the events now in its ring; nil for a
    /// context the agent did not see set up.
    func inFlight(_ id: UInt64, eventsInRing: UInt32) -> Int64? {
        guard let c = contexts[id] else { return nil }
        return Int64(bitPattern: c.submitted &- c.reaped) - Int64(eventsInRing)
    }
}

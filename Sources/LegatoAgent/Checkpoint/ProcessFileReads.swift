import Dispatch
import LegatoSystem

/// The /proc side of every frozen process of a pause (ProcessCapture.Files), read on a helper
/// thread while the pause's own thread, to which ptrace ties the tracees, takes their registers
/// and injects. Nothing it reads changes while the tree is frozen.
///
/// Contract: `wait` must be called before the pause ends (it returns the same results each time).
final class ProcessFileReads: @unchecked Sendable {
    private var results: [Result<ProcessCapture.Files, Error>] = []
    private let done = DispatchSemaphore(value: 0)
    private var finished = false

    /// Starts reading; `captures[k]` reads with `early[k]`, `tracedCalls[k]` and `aio[k]`.
    init(_ captures: [ProcessCapture], early: [MappingFlags.Reading], tracedCalls: [UInt64], aio: [AioContexts]) {
        startThread(name: "pause-proc") { [self] in
            let sockets = Result { try Sys.unixSockets() }
            results = captures.indices.map { k in Result { try captures[k].files(early: early[k], tracedCalls: tracedCalls[k], aio: aio[k], sockets: sockets) } }
            done.signal()
        }
    }

    @discardableResult
    func wait() -> [Result<ProcessCapture.Files, Error>] {
        if !finished {
            done.wait()
            finished = true
        }
        return results
    }
}

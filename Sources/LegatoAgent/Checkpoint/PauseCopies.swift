import Dispatch
import Glibc
import LegatoCore
import LegatoSystem

/// The resident pages a pause copies into staging, gathered while it decides what each process
/// stages and then copied by two threads at once: the pause's own and a helper. Copying is the
/// largest cost of a tree's pause (only PROG gets a snapshot), and the tree is frozen, so its
/// pages do not change while they are read.
///
/// Contract: `run` returns (or throws) only when both threads are done with every destination.
final class PauseCopies {
    struct Copy {
        let pid: pid_t
        let address: UInt64
        let pages: Int
        let into: UnsafeMutableRawPointer
    }
    private var copies: [Copy] = []
    private(set) var pages = 0
    /// Below this many pages the helper is not worth its wake-up.
    static let helperAbovePages = 1024

    func add(pid: pid_t, address: UInt64, pages n: Int, into dst: UnsafeMutableRawPointer) {
        copies.append(Copy(pid: pid, address: address, pages: n, into: dst))
        pages += n
    }

    /// Copies everything added; the first failure is thrown.
    func run() throws {
        defer { copies.removeAll(); pages = 0 }
        guard pages >= Self.helperAbovePages else { return try Self.copy(copies[...]) }
        // The helper takes the second half by pages.
        var split = 0, first = 0
        while split < copies.count && first < pages / 2 { first += copies[split].pages; split += 1 }
        final class Outcome: @unchecked Sendable { var error: Error? }
        let helper = Outcome(), done = DispatchSemaphore(value: 0)
        let second = copies[split...]
        startThread(name: "pause-copy") {
            do { try PauseCopies.copy(second) } catch { helper.error = error }
            done.signal()
        }
        var mine: Error?
        do { try Self.copy(copies[..<split]) } catch { mine = error }
        done.wait()
        if let e = mine ?? helper.error { throw e }
    }

    private static func copy(_ copies: ArraySlice<Copy>) throws {
        for c in copies { try Sys.readProcessMemory(pid: c.pid, address: c.address, length: c.pages * Page.size, into: c.into) }
    }
}

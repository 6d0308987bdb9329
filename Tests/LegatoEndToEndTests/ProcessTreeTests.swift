import Foundation
import Testing

/// Every process PROG starts runs managed like PROG: its memory on memory nodes within the run's one
/// budget, a fork sharing its parent's remote pages instead of bringing them back. Real programs
/// that fork, exec and pipe, each compared with a plain run.
@Suite(.serialized) struct ProcessTreeTests {
    init() throws { try requireAgentCapabilities() }

    @Test func forkSystemSpawnAndVforkRunManaged() throws {
        // forksys: a fork whose parent and child both rewrite a 64 MiB region copy-on-write and
        // check each other's writes stay theirs; then system(), posix_spawn and vfork + exec.
        let budget: UInt64 = 8 << 20
        let stats = try Legato.compareWithPlainRun([try Workloads.path("forksys"), "64"], footprintBytes: 64 << 20, checkPeak: false)
        #expect(stats.int("materialized_pages") == 0, "a fork should leave remote pages where they are")
        #expect(stats.int("managed_forks") >= 1, "the forked child should have been taken over")
        #expect(stats.int("address_spaces") >= 4, "forksys, its child and the programs system/posix_spawn/vfork exec")
        // The child counts the pages it shares with its parent as its own: at the fork the count may
        // reach twice the budget, never the 64 MiB footprint a fork used to bring back.
        #expect(stats.peakResidentBytes <= Int(2 * budget + (1 << 20)), "peak \(stats.peakResidentBytes)")
        #expect(stats.int("resident_bytes_at_exit") <= Int(budget))
    }

    @Test func pythonMultiprocessingPool() throws {
        // Workers hash what they inherited from the parent (copy-on-write, remote under the budget).
        let stats = try Legato.compareWithPlainRun(["python3", Workloads.script("pypool.py"), "24"], footprintBytes: 48 << 20, fraction: 4,
                                                   checkPeak: false)
        #expect(stats.int("managed_forks") >= 2, "both pool workers should have been managed")
        #expect(stats.int("materialized_pages") == 0)
        #expect(stats.int("resident_bytes_at_exit") <= 12 << 20)
    }

    @Test func shellPipelineOfStandardUtilities() throws {
        // bash forks each stage; sort holds its input in memory under the budget.
        let script = "seq 1 400000 | awk '{ print ($1 * 7919) % 1000003 }' | sort -n -S 64M | md5sum; " +
                     "seq 1 200000 | sort -rn | head -3 | tr '\\n' ' '; echo; echo status ${PIPESTATUS[*]}"
        let stats = try Legato.compareWithPlainRun(["bash", "-c", script], footprintBytes: 64 << 20, fraction: 8, checkPeak: false)
        #expect(stats.int("address_spaces") >= 6, "every stage of the pipelines runs managed")
    }
}

import CShims
import Glibc

/// userfaultfd ioctls and the PAGEMAP_SCAN ioctl over /proc/PID/pagemap.
extension Sys {
    // MARK: userfaultfd

    public static func uffdAPI(_ fd: Int32, features: UInt64) throws -> (features: UInt64, ioctls: UInt64) {
        var f: UInt64 = 0, i: UInt64 = 0
        let r = lg_uffd_api(fd, features, &f, &i)
        if r < 0 { throw SystemError("UFFDIO_API features 0x\(String(features, radix: 16))", code: -r) }
        return (f, i)
    }

    public static func uffdRegister(_ fd: Int32, start: UInt64, length: UInt64, mode: UInt64, pid: pid_t) throws {
        var ioctls: UInt64 = 0
        let r = lg_uffd_register(fd, start, length, mode, &ioctls)
        if r < 0 { throw SystemError("UFFDIO_REGISTER \(describeRange(start, length)) in pid \(pid)", code: -r) }
    }

    public static func uffdUnregister(_ fd: Int32, start: UInt64, length: UInt64) -> Int32 {
        -lg_uffd_unregister(fd, start, length)
    }

    /// UFFDIO_COPY; returns 0 or the errno (EEXIST, EAGAIN, ENOENT are the caller's to interpret).
    @inline(__always)
    public static func uffdCopy(_ fd: Int32, to dst: UInt64, from src: UnsafeRawPointer, length: UInt64,
                                writeProtect: Bool, wake: Bool = true) -> (errno: Int32, copied: Int64) {
        var copied: Int64 = 0
        var mode: UInt64 = 0
        if writeProtect { mode |= UInt64(UFFDIO_COPY_MODE_WP) }
        if !wake { mode |= UInt64(UFFDIO_COPY_MODE_DONTWAKE) }
        let r = lg_uffd_copy(fd, dst, src, length, mode, &copied)
        return (-r, copied)
    }

    public static func uffdWake(_ fd: Int32, start: UInt64, length: UInt64) -> Int32 {
        -lg_uffd_wake(fd, start, length)
    }

    public static func uffdWriteProtect(_ fd: Int32, start: UInt64, length: UInt64, protect: Bool, pid: pid_t) throws {
        let r = lg_uffd_writeprotect(fd, start, length, protect ? UInt64(UFFDIO_WRITEPROTECT_MODE_WP) : 0)
        if r < 0 { throw SystemError("UFFDIO_WRITEPROTECT \(describeRange(start, length)) in pid \(pid)", code: -r) }
    }

    public typealias UffdEvent = lg_uffd_event

    public enum UffdEventKind: UInt32 {
        case pageFault = 1, fork = 2, remap = 3, remove = 4, unmap = 5, other = 99
    }

    /// Reads pending uffd messages into `buffer`; returns how many (0 when none are pending).
    public static func uffdReadEvents(_ fd: Int32, into buffer: UnsafeMutablePointer<UffdEvent>, max: Int) throws -> Int {
        let r = lg_uffd_read_events(fd, buffer, Int32(max))
        if r < 0 { throw SystemError("read(userfaultfd)", code: -r) }
        return Int(r)
    }

    public static let uffdPageFaultFlagWrite: UInt32 = UInt32(UFFD_PAGEFAULT_FLAG_WRITE)
    public static let uffdPageFaultFlagWP: UInt32 = UInt32(UFFD_PAGEFAULT_FLAG_WP)
    public static let uffdRegisterMissing: UInt64 = UInt64(UFFDIO_REGISTER_MODE_MISSING)
    public static let uffdRegisterWP: UInt64 = UInt64(UFFDIO_REGISTER_MODE_WP)

    public struct UffdFeatures: OptionSet, Sendable {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        public static let eventFork = UffdFeatures(rawValue: UInt64(UFFD_FEATURE_EVENT_FORK))
        public static let eventRemap = UffdFeatures(rawValue: UInt64(UFFD_FEATURE_EVENT_REMAP))
        public static let eventRemove = UffdFeatures(rawValue: UInt64(UFFD_FEATURE_EVENT_REMOVE))
        public static let eventUnmap = UffdFeatures(rawValue: UInt64(UFFD_FEATURE_EVENT_UNMAP))
        public static let threadID = UffdFeatures(rawValue: UInt64(UFFD_FEATURE_THREAD_ID))
        public static let wpUnpopulated = UffdFeatures(rawValue: UInt64(UFFD_FEATURE_WP_UNPOPULATED))
        public static let wpAsync = UffdFeatures(rawValue: UInt64(UFFD_FEATURE_WP_ASYNC))
        public static let pageFaultFlagWP = UffdFeatures(rawValue: UInt64(UFFD_FEATURE_PAGEFAULT_FLAG_WP))
    }

    // MARK: PAGEMAP_SCAN

    public typealias PageRegion = page_region

    public struct PageCategory: OptionSet, Sendable {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        public static let wpAllowed = PageCategory(rawValue: UInt64(PAGE_IS_WPALLOWED))
        public static let written = PageCategory(rawValue: UInt64(PAGE_IS_WRITTEN))
        public static let file = PageCategory(rawValue: UInt64(PAGE_IS_FILE))
        public static let present = PageCategory(rawValue: UInt64(PAGE_IS_PRESENT))
        public static let swapped = PageCategory(rawValue: UInt64(PAGE_IS_SWAPPED))
        public static let pfnZero = PageCategory(rawValue: UInt64(PAGE_IS_PFNZERO))
        public static let guardRegion = PageCategory(rawValue: UInt64(PAGE_IS_GUARD))
    }

    public struct ScanFlags: OptionSet, Sendable {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        public static let writeProtectMatching = ScanFlags(rawValue: UInt64(PM_SCAN_WP_MATCHING))
        public static let checkWPAsync = ScanFlags(rawValue: UInt64(PM_SCAN_CHECK_WPASYNC))
    }

    /// One PAGEMAP_SCAN call: pages with every `required` category and none of `absent`; returns
    /// the regions found and where the walk ended.
    public static func pagemapScan(fd: Int32, pid: pid_t, start: UInt64, end: UInt64, flags: ScanFlags,
                                   required: PageCategory, absent: PageCategory = [], anyOf: PageCategory = [], returned: PageCategory,
                                   into vec: UnsafeMutablePointer<PageRegion>, capacity: Int,
                                   maxPages: UInt64 = 0) throws -> (count: Int, walkEnd: UInt64) {
        var walkEnd: UInt64 = 0
        let r = lg_pagemap_scan(fd, start, end, flags.rawValue, required.rawValue | absent.rawValue, absent.rawValue, anyOf.rawValue,
                                returned.rawValue, vec, UInt64(capacity), maxPages, &walkEnd)
        if r < 0 {
            throw SystemError("PAGEMAP_SCAN [0x\(String(start, radix: 16))-0x\(String(end, radix: 16))) in pid \(pid)", code: -r)
        }
        return (Int(r), walkEnd)
    }
}

import Foundation
import Glibc
import LegatoCore
import LegatoSystem

/// A checkpoint to restore: its context and where its pages are.
public struct RestoreSource {
    public let image: ProcessImage
    public let pageRuns: [(UInt64, Int)]
    public let pagesFile: String

    public init(image: ProcessImage, pageRuns: [(UInt64, Int)], pagesFile: String) {
        self.image = image
        self.pageRuns = pageRuns
        self.pagesFile = pagesFile
    }
}

/// Restoring: the checkpoint's executable is started (traced, in a fresh PID namespace, so PROG is
/// PID 2 again) and stopped right after its exec. Through injected syscalls its address space is
/// replaced by the checkpoint's — every mapping at its original address, the vDSO moved to where it
/// was, the pages written back, the mm fields, signal handlers, files, cwd, umask, limits, the
/// thread's rseq/robust-list/tid-address — and the registers are set. Then the agent takes its
/// userfaultfd as after any exec, and PROG goes on from the checkpoint.
extension Agent {
    func restoreAddressSpace(_ t: Tracee, from source: RestoreSource) throws {
        let pid = t.tid
        let image = source.image
        guard image.threads.count == 1, let thread = image.threads.first else {
            throw LegatoError("checkpoint \(image.epoch) of \(image.name) has \(image.threads.count) threads; restoring threads is not supported yet")
        }
        try checkFilesUnchanged(image)
        let current = try ProcMaps.read(pid: pid)
        let hole = try findHole(size: Agent.scratchBytes, avoiding: image.vmas.map { ($0.start, $0.end) } + current.map { ($0.start, $0.end) })
        try makeScratch(pid, at: hole)
        let inj = try Sys.Injection(tid: pid, stub: scratch, whileWaiting: nil)
        var args = ScratchArguments(pid: pid, base: scratch + 4096, size: Int(Agent.scratchBytes) - 4096)
        func call(_ what: String, _ nr: Int, _ a: UInt64...) throws -> Int64 {
            var padded = a + Array(repeating: 0, count: 6 - a.count)
            let r = try padded.withUnsafeMutableBufferPointer { p in
                try inj.syscall(nr, p[0], p[1], p[2], p[3], p[4], p[5])
            }
            if r < 0 && r > -4096 { throw SystemError("restoring \(image.name): \(what) in pid \(pid)", code: Int32(-r)) }
            return r
        }

        // 1. Everything of the fresh exec goes, but the scratch area (and the vsyscall page).
        for m in current where m.start != scratch && m.path != "[vsyscall]" {
            _ = try call("munmap \(describeRange(m.start, m.end - m.start))", Syscall.munmap, m.start, m.end - m.start)
        }
        // 2. The checkpoint's mappings, each at its address.
        for v in image.vmas {
            let len = v.end - v.start
            switch v.kind {
            case .vsyscall, .vvar:
                continue
            case .vdso:
                let vvar = image.vmas.filter { $0.kind == .vvar && $0.end <= v.start }.map { $0.start }.min() ?? v.start
                _ = try call("arch_prctl(ARCH_MAP_VDSO_64, 0x\(String(vvar, radix: 16)))", 158, 0x2003, vvar)
            case .file:
                let path = try args.string(v.path ?? "")
                let fd = try call("open \(v.path ?? "")", 2, path, 0, 0)  // O_RDONLY
                _ = try call("mmap \(v.path ?? "") at \(describeRange(v.start, len))", Syscall.mmap, v.start, len, UInt64(v.prot), 0x12, UInt64(fd), v.offset)  // MAP_PRIVATE|MAP_FIXED
                _ = try call("close", Syscall.close, UInt64(fd))
                args.reset()
            case .anonymous, .heap, .stack:
                let flags: UInt64 = 0x32 | (v.kind == .stack ? 0x100 : 0)  // MAP_PRIVATE|MAP_FIXED|MAP_ANONYMOUS [|MAP_GROWSDOWN]
                _ = try call("mmap anonymous \(describeRange(v.start, len))", Syscall.mmap, v.start, len, UInt64(v.prot), flags, UInt64(bitPattern: -1), 0)
            case .shared:
                // A shared file mapping: the file holds its pages; map it again.
                guard let p = v.path, p.hasPrefix("/") else {
                    throw LegatoError("checkpoint \(image.epoch) of \(image.name) has a shared anonymous mapping at \(describeRange(v.start, len)); not supported")
                }
                let path = try args.string(p)
                let fd = try call("open \(p)", 2, path, v.prot & 2 != 0 ? 2 : 0, 0)  // O_RDWR or O_RDONLY
                _ = try call("mmap shared \(p) at \(describeRange(v.start, len))", Syscall.mmap, v.start, len, UInt64(v.prot), 0x11, UInt64(fd), v.offset)  // MAP_SHARED|MAP_FIXED
                _ = try call("close", Syscall.close, UInt64(fd))
                args.reset()
            }
        }
        // 3. The pages, through /proc/PID/mem (which writes read-only mappings too).
        try writePages(pid, source)
        // 4. mm fields (brk, arg/env areas, auxv). The exe link is already right: we exec'd the same file.
        let m = image.mm
        var mmap: [UInt64] = [m.startCode, m.endCode, m.startData, m.endData, m.startBrk, m.brk, m.startStack, m.argStart, m.argEnd,
                              m.envStart, m.envEnd]
        let auxv = try args.bytes(image.auxv.withUnsafeBytes { Array($0) })
        mmap.append(auxv)
        mmap.append(UInt64(image.auxv.count * 8) | UInt64(UInt32.max) << 32)  // exe_fd -1: unchanged
        let mapAddr = try args.bytes(mmap.withUnsafeBytes { Array($0) })
        _ = try call("prctl(PR_SET_MM_MAP)", 157, 35, 14, mapAddr, 104)
        args.reset()
        // 5. Signal handlers.
        for a in image.sigactions {
            let act = try args.bytes([a.handler, a.flags, a.restorer, a.mask].withUnsafeBytes { Array($0) })
            _ = try call("rt_sigaction(\(a.signal))", 13, UInt64(a.signal), act, 0, 8)
            args.reset()
        }
        // 6. Files: terminals and pipes on 0-2 stay what `legato restore` has; files reopen at their offsets.
        for f in image.fds {
            switch f.kind {
            case .tty, .pipe where f.fd <= 2:
                continue
            case .regular, .devnull, .devzero, .devurandom:
                let path = try args.string(f.path)
                let flags = UInt64(f.flags) & ~UInt64(0o100 | 0o200 | 0o1000)  // no O_CREAT, O_EXCL, O_TRUNC
                let fd = try call("open \(f.path)", 2, path, flags, 0o644)
                if fd != Int64(f.fd) {
                    _ = try call("dup2 to \(f.fd)", 33, UInt64(fd), UInt64(f.fd))
                    _ = try call("close", Syscall.close, UInt64(fd))
                }
                if f.kind == .regular && f.flags & 0o2000 == 0 {  // not O_APPEND
                    _ = try call("lseek fd \(f.fd)", 8, UInt64(f.fd), UInt64(bitPattern: f.offset), 0)
                }
                args.reset()
            default:
                throw LegatoError("checkpoint \(image.epoch) of \(image.name): fd \(f.fd) (\(f.path)) cannot be restored")
            }
        }
        // 7. cwd, umask, limits.
        _ = try call("chdir \(image.cwd)", 80, try args.string(image.cwd))
        args.reset()
        _ = try call("umask", 95, UInt64(image.umask))
        for l in image.rlimits { try? Sys.setResourceLimit(pid, l.resource, soft: l.soft, hard: l.hard) }
        // 8. The thread's kernel-side registrations.
        _ = try call("set_tid_address", 218, thread.tidAddress)
        if thread.robustList != 0 { _ = try call("set_robust_list", 273, thread.robustList, thread.robustListLength) }
        if let r = thread.rseq { _ = try call("rseq", 334, r.address, UInt64(r.size), 0, UInt64(r.signature)) }
        if let ss = thread.sigaltstack, ss.count == 3, ss[1] & 0x2 == 0 {  // not SS_DISABLE
            let stack = try args.bytes([ss[0], ss[1], ss[2]].withUnsafeBytes { Array($0) })
            _ = try call("sigaltstack", 131, stack, 0)
            args.reset()
        }
        try inj.cure()

        // 9. Registers, FPU/SSE/AVX state, signal mask.
        var regs = Registers(words: thread.registers)
        regs.orig_rax = UInt64.max  // no syscall restart at this stop: the registers say where to go
        try Sys.setRegisters(pid, regs)
        try Sys.setRegisterSet(pid, type: Sys.ntX86XState, [UInt8](thread.xstate))
        try Sys.setSignalMask(pid, thread.sigmask)

        // 10. From here PROG is a managed process like any other.
        try takeUserfaultfd(pid)
        try manageExistingMappings(pid)
        log.info("restored \(image.name) epoch \(image.epoch) into pid \(pid): \(image.vmas.count) mappings, \(source.pageRuns.reduce(0) { $0 + $1.1 }) pages")
    }

    /// A checkpoint maps files by path: they must still be the files it saw.
    private func checkFilesUnchanged(_ image: ProcessImage) throws {
        var checked = Set<String>()
        for v in image.vmas where v.kind == .file {
            guard let path = v.path, checked.insert(path).inserted else { continue }
            var st = stat()
            guard stat(path, &st) == 0 else { throw LegatoError("cannot restore \(image.name): \(path) is gone") }
            let mtime = Double(st.st_mtim.tv_sec) + Double(st.st_mtim.tv_nsec) / 1e9
            if let size = v.size, size != UInt64(st.st_size) || (v.mtime.map { abs($0 - mtime) > 1e-6 } ?? false) {
                throw LegatoError("cannot restore \(image.name): \(path) changed since checkpoint \(image.epoch)")
            }
        }
    }

    private func writePages(_ pid: pid_t, _ source: RestoreSource) throws {
        let src = open(source.pagesFile, O_RDONLY | O_CLOEXEC)
        if src < 0 { throw SystemError.fromErrno("open \(source.pagesFile)") }
        defer { close(src) }
        let mem = open("/proc/\(pid)/mem", O_RDWR | O_CLOEXEC)
        if mem < 0 { throw SystemError.fromErrno("open /proc/\(pid)/mem") }
        defer { close(mem) }
        let chunk = 1 << 20
        let buf = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: Page.size)
        defer { buf.deallocate() }
        var fileOffset: off_t = 0
        for (address, count) in source.pageRuns {
            var done = 0
            let total = count * Page.size
            while done < total {
                let n = min(chunk, total - done)
                guard pread(src, buf, n, fileOffset) == n else { throw SystemError("read \(source.pagesFile)", code: EIO) }
                guard pwrite(mem, buf, n, off_t(Int64(bitPattern: address)) + off_t(done)) == n else {
                    throw SystemError.fromErrno("write \(describeRange(address + UInt64(done), UInt64(n))) of pid \(pid)")
                }
                done += n
                fileOffset += off_t(n)
            }
        }
    }

    /// An address range of `size` bytes clear of every range given (in the usual user-space area).
    private func findHole(size: UInt64, avoiding ranges: [(UInt64, UInt64)]) throws -> UInt64 {
        let sorted = ranges.sorted { $0.0 < $1.0 }
        var candidate: UInt64 = 0x10_0000_0000  // 64 GiB: above a non-PIE executable's usual place
        for (s, e) in sorted {
            if e <= candidate { continue }
            if s >= candidate + size { break }
            candidate = Page.alignUp(e)
        }
        guard candidate + size < 0x7fff_0000_0000 else { throw LegatoError("no room for the injection scratch area") }
        return candidate
    }
}

/// Small arguments (paths, structs) written into the scratch area for injected syscalls.
struct ScratchArguments {
    let pid: pid_t
    let base: UInt64
    let size: Int
    private var used = 0

    init(pid: pid_t, base: UInt64, size: Int) {
        self.pid = pid
        self.base = base
        self.size = size
    }

    mutating func reset() { used = 0 }

    mutating func bytes(_ b: [UInt8]) throws -> UInt64 {
        let aligned = (used + 15) & ~15
        guard aligned + b.count <= size else { throw LegatoError("injection arguments of \(b.count) bytes do not fit the scratch area") }
        let addr = base + UInt64(aligned)
        if !b.isEmpty { try b.withUnsafeBytes { try Sys.processWrite(pid: pid, from: $0.baseAddress!, length: $0.count, to: addr) } }
        used = aligned + b.count
        return addr
    }

    mutating func string(_ s: String) throws -> UInt64 { try bytes(Array(s.utf8) + [0]) }
}

// LegatoSystem is the only Swift module that calls CShims: everything above it uses these typed
// wrappers, one file per kernel mechanism (Ptrace, Injection, UserfaultfdCalls, ProcessMemory,
// Signals, Spawn, Crypto, FileIO, Socket, SQLiteKV). Each wrapper throws SystemError naming what was
// attempted; EINTR is retried once, in C or by Sys.retryingEINTR, never twice.
import CShims
import Glibc

public typealias Registers = user_regs_struct

/// The namespace of the system wrappers (extended per mechanism).
public enum Sys {}

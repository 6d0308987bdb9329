/*
 * Syscall injection into a ptrace-stopped thread: prepare / syscall / cure.
 *
 * The thread runs a `syscall; int3` stub (in a scratch page of the target, or
 * poked over the word at its RIP) with the registers we choose, single-stepped,
 * then gets its own registers back. orig_rax is set to -1 while injecting so the
 * kernel does not apply syscall-restart logic to our call; cure() restores the
 * saved orig_rax so an interrupted syscall of the thread restarts as it would have.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

#include "CShims.h"

#define LG_PTRACE_EVENT_STOP 128

int lg_inject_prepare(struct lg_inject *s, pid_t tid, uint64_t stub) {
    s->tid = tid;
    s->poked = 0;
    s->deferred_count = 0;
    s->exited = 0;
    s->exit_status = 0;
    s->fault_signal = 0;
    if (ptrace(PTRACE_GETREGS, tid, 0, &s->saved) == -1) return -errno;
    if (stub == 0) {
        stub = s->saved.rip;
        errno = 0;
        long word = ptrace(PTRACE_PEEKTEXT, tid, (void *)stub, 0);
        if (word == -1 && errno != 0) return -errno;
        s->poked_word = (uint64_t)word;
        uint64_t patched = ((uint64_t)word & ~0xffffffULL) | 0xcc050fULL; /* syscall; int3 */
        if (ptrace(PTRACE_POKETEXT, tid, (void *)stub, (void *)patched) == -1) return -errno;
        s->poked = 1;
    }
    s->stub = stub;
    return 0;
}

/* Waits for the next stop (or death) of s->tid, calling the hook while it runs. */
static int wait_for_stop(struct lg_inject *s, int *status) {
    for (;;) {
        pid_t r = waitpid(s->tid, status, __WALL | (s->hook ? WNOHANG : 0));
        if (r == s->tid) return 0;
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        s->hook(s->hook_ctx);
    }
}

/* Whether the signal the thread stopped with came from the kernel (a fault), not from kill(). */
static int kernel_sent(pid_t tid) {
    siginfo_t si;
    if (ptrace(PTRACE_GETSIGINFO, tid, 0, &si) == -1) return 0;
    return si.si_code > 0;
}

static void defer_signal(struct lg_inject *s, int sig) {
    for (int i = 0; i < s->deferred_count; i++)
        if (s->deferred_signals[i] == sig) return; /* standard signals coalesce anyway */
    if (s->deferred_count < (int)(sizeof s->deferred_signals / sizeof s->deferred_signals[0]))
        s->deferred_signals[s->deferred_count++] = sig;
}

int lg_inject_syscall(struct lg_inject *s, long nr, const uint64_t args[6], int64_t *ret) {
    struct user_regs_struct r = s->saved;
    r.rax = (uint64_t)nr;
    r.orig_rax = (uint64_t)-1;
    r.rdi = args[0];
    r.rsi = args[1];
    r.rdx = args[2];
    r.r10 = args[3];
    r.r8 = args[4];
    r.r9 = args[5];
    r.rip = s->stub;
    if (ptrace(PTRACE_SETREGS, s->tid, 0, &r) == -1) return -errno;
    if (ptrace(PTRACE_SINGLESTEP, s->tid, 0, 0) == -1) return -errno;
    for (;;) {
        int status = 0;
        int w = wait_for_stop(s, &status);
        if (w < 0) return w;
        if (WIFEXITED(status) || WIFSIGNALED(status)) {
            s->exited = 1;
            s->exit_status = status;
            return -ESRCH;
        }
        if (!WIFSTOPPED(status)) continue;
        int sig = WSTOPSIG(status);
        int event = status >> 16;
        if (sig == SIGTRAP && event == 0) {
            if (ptrace(PTRACE_GETREGS, s->tid, 0, &r) == -1) return -errno;
            if (r.rip == s->stub + 2 || r.rip == s->stub + 3) {
                *ret = (int64_t)r.rax;
                return 0;
            }
            /* A SIGTRAP that is not our step (e.g. sent by someone): keep it for later. */
            defer_signal(s, SIGTRAP);
        } else if ((sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE) && event == 0 && kernel_sent(s->tid)) {
            /* The thread faults where we run it (an unmapped stub, an rseq area gone): stepping it
               again would fault again, forever. The injected call failed. */
            s->fault_signal = sig;
            return -EFAULT;
        } else if (event != 0 || sig == (SIGTRAP | 0x80)) {
            /* ptrace-event stop (seccomp trap of the injected call, interrupt, group-stop): go on. */
        } else {
            defer_signal(s, sig);
        }
        if (ptrace(PTRACE_SINGLESTEP, s->tid, 0, 0) == -1) return -errno;
    }
}

int lg_inject_cure(struct lg_inject *s) {
    int rc = 0;
    if (s->poked) {
        if (ptrace(PTRACE_POKETEXT, s->tid, (void *)s->stub, (void *)s->poked_word) == -1) rc = -errno;
        s->poked = 0;
    }
    if (ptrace(PTRACE_SETREGS, s->tid, 0, &s->saved) == -1 && rc == 0) rc = -errno;
    return rc;
}

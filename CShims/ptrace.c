/* ptrace, waitpid and signal helpers for Swift (variadic and macro-heavy APIs). */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sys/uio.h>
#include <pthread.h>
#include <unistd.h>

#include "CShims.h"

#define LG_IOV_MAX 1024

long lg_ptrace(int request, pid_t pid, uint64_t addr, uint64_t data) {
    errno = 0;
    long r = ptrace((enum __ptrace_request)request, pid, (void *)addr, (void *)data);
    if (r == -1 && errno != 0) return -errno;
    return r;
}

int lg_ptrace_getregs(pid_t tid, struct user_regs_struct *regs) {
    return ptrace(PTRACE_GETREGS, tid, 0, regs) == -1 ? -errno : 0;
}

int lg_ptrace_setregs(pid_t tid, const struct user_regs_struct *regs) {
    return ptrace(PTRACE_SETREGS, tid, 0, (void *)regs) == -1 ? -errno : 0;
}

int lg_ptrace_getsiginfo(pid_t tid, int *signo, int *code, int *sender_pid) {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (ptrace(PTRACE_GETSIGINFO, tid, 0, &si) == -1) return -errno;
    *signo = si.si_signo;
    *code = si.si_code;
    *sender_pid = si.si_pid;
    return 0;
}

int lg_ptrace_geteventmsg(pid_t tid, uint64_t *msg) {
    unsigned long m = 0;
    if (ptrace(PTRACE_GETEVENTMSG, tid, 0, &m) == -1) return -errno;
    *msg = m;
    return 0;
}

pid_t lg_waitpid(pid_t pid, int *status, int options) {
    for (;;) {
        pid_t r = waitpid(pid, status, options);
        if (r >= 0) return r;
        if (errno != EINTR) return -errno;
    }
}

int lg_sigchld_fd(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) return -EINVAL;
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int lg_signalfd_drain(int fd) {
    struct signalfd_siginfo si[16];
    int n = 0;
    for (;;) {
        ssize_t r = read(fd, si, sizeof si);
        if (r <= 0) break;
        n += (int)(r / (ssize_t)sizeof si[0]);
    }
    return n;
}

int lg_block_signal(int sig) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    return pthread_sigmask(SIG_BLOCK, &set, NULL) == 0 ? 0 : -EINVAL;
}

int lg_thread_id(void) { return (int)syscall(SYS_gettid); }

int lg_pidfd_open(pid_t pid) {
    long r = syscall(SYS_pidfd_open, pid, 0);
    return r < 0 ? -errno : (int)r;
}

int lg_pidfd_getfd(int pidfd, int targetfd) {
    long r = syscall(SYS_pidfd_getfd, pidfd, targetfd, 0);
    return r < 0 ? -errno : (int)r;
}

int lg_kcmp_file(pid_t pid1, int fd1, pid_t pid2, int fd2) {
    long r = syscall(SYS_kcmp, pid1, pid2, 0 /* KCMP_FILE */, fd1, fd2);
    return r < 0 ? -errno : (int)r;
}

int lg_kcmp_epoll_target(pid_t pid, int epfd, int tfd, unsigned toff, int fd) {
    struct { uint32_t efd, tfd, toff; } slot = { (uint32_t)epfd, (uint32_t)tfd, toff };
    long r = syscall(SYS_kcmp, pid, pid, 7 /* KCMP_EPOLL_TFD */, fd, (unsigned long)&slot);
    return r < 0 ? -errno : (int)r;
}

int lg_pidfd_send_signal(int pidfd, int sig) {
    long r = syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
    return r < 0 ? -errno : 0;
}

int64_t lg_process_vm_read(pid_t pid, void *local, uint64_t local_len,
                           const uint64_t *remote_addrs, const uint64_t *remote_lens, int count) {
    struct iovec liov = {local, local_len};
    struct iovec riov[LG_IOV_MAX];
    int64_t total = 0;
    int done = 0;
    char *dst = local;
    while (done < count) {
        int n = count - done < LG_IOV_MAX ? count - done : LG_IOV_MAX;
        uint64_t bytes = 0;
        for (int i = 0; i < n; i++) {
            riov[i].iov_base = (void *)remote_addrs[done + i];
            riov[i].iov_len = remote_lens[done + i];
            bytes += remote_lens[done + i];
        }
        liov.iov_base = dst;
        liov.iov_len = bytes;
        ssize_t r = process_vm_readv(pid, &liov, 1, riov, (unsigned long)n, 0);
        if (r < 0) return -errno;
        total += r;
        if ((uint64_t)r != bytes) return total; /* partial: caller checks */
        dst += bytes;
        done += n;
    }
    (void)local_len;
    return total;
}

int64_t lg_process_vm_write(pid_t pid, const void *local, uint64_t len, uint64_t remote_addr) {
    struct iovec l = {(void *)local, len};
    struct iovec r = {(void *)remote_addr, len};
    ssize_t n = process_vm_writev(pid, &l, 1, &r, 1, 0);
    return n < 0 ? -errno : n;
}

int lg_signal_fd(const int *sigs, int count) {
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < count; i++) sigaddset(&set, sigs[i]);
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int lg_signal_fd_read(int fd, int *signo, int *code, int *sender) {
    struct signalfd_siginfo si;
    ssize_t r = read(fd, &si, sizeof si);
    if (r != (ssize_t)sizeof si) return 0;
    *signo = (int)si.ssi_signo;
    *code = si.ssi_code;
    *sender = (int)si.ssi_pid;
    return 1;
}

int lg_tgkill(pid_t tgid, pid_t tid, int sig) {
    return syscall(SYS_tgkill, tgid, tid, sig) == 0 ? 0 : -errno;
}

#include <sys/eventfd.h>
int lg_eventfd(void) {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

#include <sys/uio.h>
/* PTRACE_GETREGSET into buf; returns the bytes filled or -errno. */
int64_t lg_ptrace_getregset(pid_t tid, int type, void *buf, uint64_t len) {
    struct iovec iov = {buf, len};
    if (ptrace(PTRACE_GETREGSET, tid, (void *)(long)type, &iov) == -1) return -errno;
    return (int64_t)iov.iov_len;
}

int lg_ptrace_setregset(pid_t tid, int type, const void *buf, uint64_t len) {
    struct iovec iov = {(void *)buf, len};
    return ptrace(PTRACE_SETREGSET, tid, (void *)(long)type, &iov) == -1 ? -errno : 0;
}

int lg_ptrace_getsigmask(pid_t tid, uint64_t *mask) {
    return ptrace(PTRACE_GETSIGMASK, tid, (void *)8, mask) == -1 ? -errno : 0;
}

int lg_ptrace_setsigmask(pid_t tid, uint64_t mask) {
    return ptrace(PTRACE_SETSIGMASK, tid, (void *)8, &mask) == -1 ? -errno : 0;
}

int lg_ptrace_get_rseq(pid_t tid, uint64_t *addr, uint32_t *size, uint32_t *sig) {
    struct { uint64_t ptr; uint32_t size; uint32_t sig; uint32_t flags; uint32_t pad; } c;
    memset(&c, 0, sizeof c);
    if (ptrace(0x420f, tid, (void *)sizeof c, &c) == -1) return -errno;
    *addr = c.ptr;
    *size = c.size;
    *sig = c.sig;
    return 0;
}

long lg_ptrace_seccomp_filter(pid_t tid, unsigned long index, void *insns) {
    long n = ptrace(0x420c /* PTRACE_SECCOMP_GET_FILTER */, tid, (void *)index, insns);
    return n < 0 ? -errno : n;
}

int lg_get_robust_list(pid_t tid, uint64_t *head, uint64_t *len) {
    void *h = NULL;
    size_t l = 0;
    if (syscall(SYS_get_robust_list, tid, &h, &l) != 0) return -errno;
    *head = (uint64_t)h;
    *len = l;
    return 0;
}

#include <sys/resource.h>
int lg_prlimit(pid_t pid, int resource, const uint64_t *set_cur, const uint64_t *set_max, uint64_t *cur, uint64_t *max) {
    struct rlimit nl, ol;
    struct rlimit *np = NULL;
    if (set_cur && set_max) {
        nl.rlim_cur = *set_cur;
        nl.rlim_max = *set_max;
        np = &nl;
    }
    if (syscall(SYS_prlimit64, pid, resource, np, &ol) != 0) return -errno;
    if (cur) *cur = ol.rlim_cur;
    if (max) *max = ol.rlim_max;
    return 0;
}

/* Pending signals of a thread (shared=0) or of its process (shared=1), without dequeuing them:
 * up to max siginfo_t records (128 bytes each) into buf. Returns how many, or -errno. */
int lg_ptrace_peek_siginfo(pid_t tid, int shared, void *buf, int max) {
    struct { uint64_t off; uint32_t flags; int32_t nr; } args = { 0, shared ? 1u : 0u, max };
    long r = ptrace(0x4209 /* PTRACE_PEEKSIGINFO */, tid, &args, buf);
    return r < 0 ? -errno : (int)r;
}

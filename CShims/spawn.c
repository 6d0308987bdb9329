/*
 * Launching the program the agent will trace.
 *
 * new_pidns: the agent clone()s a reaper R with CLONE_NEWPID (R is PID 1 of the new
 * namespace); R forks PROG (PID 2) and reaps until PROG exits, then exits with PROG's
 * status. PROG does not run as PID 1: PID 1 ignores signals it has no handler for, so
 * PROG would survive a SIGTERM that kills it in a plain run. Once PROG has exited, R waits
 * for the agent to close `hold_fd` before it exits (its exit ends the namespace and kills
 * everything in it, a copy-on-write snapshot a checkpoint still reads included).
 *
 * PROG waits on `release_fd` until the agent has PTRACE_SEIZEd it, then installs the
 * seccomp filter (built by the parent: the child may not allocate) and execs. Everything
 * between fork and exec is async-signal-safe.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "CShims.h"

enum { STAGE_RELEASE = 1, STAGE_SECCOMP = 2, STAGE_EXEC = 3, STAGE_FORK = 4, STAGE_FDS = 5 };

static void report(int fd, int stage, int err) {
    int32_t msg[2] = {stage, err};
    ssize_t r = write(fd, msg, sizeof msg);
    (void)r;
}

static void reset_signals(const struct lg_spawn_args *a) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    for (int sig = 1; sig < _NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        sa.sa_handler = (a->ignored && sigismember(a->ignored, sig) == 1) ? SIG_IGN : SIG_DFL;
        sigaction(sig, &sa, NULL);
    }
    sigset_t empty;
    sigemptyset(&empty);
    sigprocmask(SIG_SETMASK, a->sigmask ? a->sigmask : &empty, NULL);
}

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

/* Every descriptor above 2 but the kept ones closes at exec (kept ones keep their own FD_CLOEXEC):
 * PROG starts with what it was given, not with whatever its caller's shell left open. */
static int close_inherited_at_exec(const struct lg_spawn_args *a) {
    int flags[64];
    int n = a->keep_count < 64 ? a->keep_count : 64;
    for (int i = 0; i < n; i++) flags[i] = fcntl(a->keep_fds[i], F_GETFD);
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0) return errno;
    for (int i = 0; i < n; i++) {
        if (flags[i] >= 0) fcntl(a->keep_fds[i], F_SETFD, flags[i]);
    }
    return 0;
}

/* Writes PROG's pid into "LISTEN_PID=" + 10 spaces (async-signal-safe). */
static void set_listen_pid(char *entry) {
    char *digits = entry + 11;
    char tmp[12];
    int len = 0;
    for (pid_t v = getpid(); v > 0 && len < 10; v /= 10) tmp[len++] = (char)('0' + v % 10);
    for (int i = 0; i < len; i++) digits[i] = tmp[len - 1 - i];
    digits[len] = 0;
}

static _Noreturn void run_prog(const struct lg_spawn_args *a, int release_rd, int err_wr) {
    reset_signals(a);
    prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    char b;
    ssize_t n;
    do {
        n = read(release_rd, &b, 1);
    } while (n < 0 && errno == EINTR);
    if (n != 1) {
        report(err_wr, STAGE_RELEASE, n == 0 ? EPIPE : errno);
        _exit(127);
    }
    close(release_rd);
    int e = close_inherited_at_exec(a);
    if (e != 0) {
        report(err_wr, STAGE_FDS, e);
        _exit(127);
    }
    if (a->listen_pid_env) set_listen_pid(a->listen_pid_env);
    if (a->filter) {
        struct sock_fprog prog = {.len = (unsigned short)a->filter_len, .filter = (struct sock_filter *)a->filter};
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
            if (errno == EACCES) {
                prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
                    report(err_wr, STAGE_SECCOMP, errno);
                    _exit(127);
                }
            } else {
                report(err_wr, STAGE_SECCOMP, errno);
                _exit(127);
            }
        }
    }
    execve(a->path, a->argv, a->envp);
    report(err_wr, STAGE_EXEC, errno);
    _exit(127);
}

/* Blocks until the agent closes the write end of the hold pipe (or dies). */
static void await_release(int hold_rd) {
    char b;
    while (read(hold_rd, &b, 1) != 0 && errno == EINTR) {}
}

/* The namespace's own /proc: a mount namespace of its own whose mounts follow the host's (slave
 * propagation: the rest of the file system stays shared) and whose /proc shows this PID namespace,
 * so what PROG reads there is about itself. Without it (no CAP_SYS_ADMIN) PROG sees the host's. */
static void mount_own_proc(void) {
    if (unshare(CLONE_NEWNS) != 0) return;
    if (mount(NULL, "/", NULL, MS_REC | MS_SLAVE, NULL) != 0) return;
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
}

static _Noreturn void run_reaper(const struct lg_spawn_args *a, int release_rd, int err_wr, int ready_wr, int hold_rd) {
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    mount_own_proc();
    pid_t prog = (pid_t)syscall(SYS_fork);
    if (prog < 0) {
        report(err_wr, STAGE_FORK, errno);
        _exit(127);
    }
    if (prog == 0) {
        close(ready_wr);
        close(hold_rd);
        run_prog(a, release_rd, err_wr);
    }
    close(release_rd);
    close(err_wr);
    char one = 1;
    ssize_t w = write(ready_wr, &one, 1);
    (void)w;
    close(ready_wr);
    /* PID 1 of the namespace: reap everyone, leave with PROG's status. */
    for (;;) {
        int st = 0;
        pid_t r = waitpid(-1, &st, __WALL);
        if (r == prog) {
            if (WIFEXITED(st) || WIFSIGNALED(st)) {
                await_release(hold_rd);
                _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
            }
        } else if (r < 0 && errno == ECHILD) {
            await_release(hold_rd);
            _exit(0);
        }
    }
}

/* The only child of `pid` (reading /proc/PID/task/PID/children). */
static pid_t only_child_of(pid_t pid) {
    char path[64];
    int len = 0;
    const char *prefix = "/proc/";
    for (const char *p = prefix; *p; p++) path[len++] = *p;
    char num[16];
    int nl = 0;
    for (pid_t v = pid; v > 0; v /= 10) num[nl++] = (char)('0' + v % 10);
    for (int rep = 0; rep < 2; rep++) {
        for (int i = nl - 1; i >= 0; i--) path[len++] = num[i];
        const char *mid = rep == 0 ? "/task/" : "/children";
        for (const char *p = mid; *p; p++) path[len++] = *p;
    }
    path[len] = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -ESRCH;
    buf[n] = 0;
    pid_t child = 0;
    for (char *p = buf; *p >= '0' && *p <= '9'; p++) child = child * 10 + (*p - '0');
    return child > 0 ? child : -ESRCH;
}

int lg_spawn(const struct lg_spawn_args *a, struct lg_spawn_result *r) {
    int release[2], err[2], ready[2] = {-1, -1}, hold[2] = {-1, -1};
    if (pipe2(release, O_CLOEXEC) != 0) return -errno;
    if (pipe2(err, O_CLOEXEC) != 0) {
        int e = errno;
        close(release[0]);
        close(release[1]);
        return -e;
    }
    if (a->new_pidns && (pipe2(ready, O_CLOEXEC) != 0 || pipe2(hold, O_CLOEXEC) != 0)) {
        int e = errno;
        close(release[0]); close(release[1]); close(err[0]); close(err[1]);
        if (ready[0] >= 0) { close(ready[0]); close(ready[1]); }
        return -e;
    }
    long flags = SIGCHLD | (a->new_pidns ? CLONE_NEWPID : 0);
    pid_t pid = (pid_t)syscall(SYS_clone, flags, 0, 0, 0, 0);
    if (pid < 0) {
        int e = errno;
        close(release[0]); close(release[1]); close(err[0]); close(err[1]);
        if (ready[0] >= 0) { close(ready[0]); close(ready[1]); }
        if (hold[0] >= 0) { close(hold[0]); close(hold[1]); }
        return -e;
    }
    if (pid == 0) {
        close(release[1]);
        close(err[0]);
        if (a->new_pidns) {
            close(ready[0]);
            close(hold[1]);
            run_reaper(a, release[0], err[1], ready[1], hold[0]);
        }
        run_prog(a, release[0], err[1]);
    }
    close(release[0]);
    close(err[1]);
    r->release_fd = release[1];
    r->error_fd = err[0];
    r->hold_fd = hold[1];
    if (!a->new_pidns) {
        r->prog_pid = pid;
        r->reaper_pid = 0;
        return 0;
    }
    close(hold[0]);
    close(ready[1]);
    char b;
    ssize_t n;
    do {
        n = read(ready[0], &b, 1);
    } while (n < 0 && errno == EINTR);
    close(ready[0]);
    r->reaper_pid = pid;
    pid_t prog = n == 1 ? only_child_of(pid) : -ECHILD;
    if (prog < 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(r->release_fd);
        close(r->error_fd);
        close(r->hold_fd);
        return prog;
    }
    r->prog_pid = prog;
    return 0;
}

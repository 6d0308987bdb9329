/*
 * CShims — Legato's thin C layer. Swift reaches it from LegatoSystem only:
 * Sources/LegatoSystem/Syscalls.swift, and SQLiteKV.swift for the SQLite store.
 *
 * Conventions: every function is prefixed `lg_`; a function that can fail
 * returns a negative errno (-EINVAL) and never touches `errno` for the caller.
 * Kernel ABI missing from Debian's 6.1 headers is in lg_compat.h.
 *
 * Never define _GNU_SOURCE here: Swift imports this header (see SWIFT-NOTES).
 */
#ifndef LG_CSHIMS_H
#define LG_CSHIMS_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/user.h>
#include <signal.h>

#include <sqlite3.h>

#include "lg_compat.h"

/* ------------------------------------------------------------------ */
/* ioctl numbers Swift cannot import (function-like macros)            */
/* ------------------------------------------------------------------ */
static const unsigned long LG_UFFDIO_API = UFFDIO_API;
static const unsigned long LG_UFFDIO_REGISTER = UFFDIO_REGISTER;
static const unsigned long LG_UFFDIO_UNREGISTER = UFFDIO_UNREGISTER;
static const unsigned long LG_UFFDIO_WAKE = UFFDIO_WAKE;
static const unsigned long LG_UFFDIO_COPY = UFFDIO_COPY;
static const unsigned long LG_UFFDIO_ZEROPAGE = UFFDIO_ZEROPAGE;
static const unsigned long LG_UFFDIO_WRITEPROTECT = UFFDIO_WRITEPROTECT;
static const unsigned long LG_PAGEMAP_SCAN = PAGEMAP_SCAN;

/* ------------------------------------------------------------------ */
/* ptrace                                                              */
/* ------------------------------------------------------------------ */
long lg_ptrace(int request, pid_t pid, uint64_t addr, uint64_t data);
int lg_ptrace_getregs(pid_t tid, struct user_regs_struct *regs);
int lg_ptrace_setregs(pid_t tid, const struct user_regs_struct *regs);
/* The signal number and si_code of the signal that caused a stop; -EINVAL in a group-stop. */
int lg_ptrace_getsiginfo(pid_t tid, int *signo, int *code, int *sender_pid);
int lg_ptrace_geteventmsg(pid_t tid, uint64_t *msg);
int64_t lg_ptrace_getregset(pid_t tid, int type, void *buf, uint64_t len);
int lg_ptrace_setregset(pid_t tid, int type, const void *buf, uint64_t len);
int lg_ptrace_getsigmask(pid_t tid, uint64_t *mask);
int lg_ptrace_setsigmask(pid_t tid, uint64_t mask);
/* The thread's registered rseq area (PTRACE_GET_RSEQ_CONFIGURATION); addr 0 when none. */
int lg_ptrace_get_rseq(pid_t tid, uint64_t *addr, uint32_t *size, uint32_t *sig);
/* The `index`-th seccomp filter of stopped `tid` (0: the oldest): its instruction count, and with
   `insns` (room for that many 8-byte sock_filter) the instructions; -errno on failure. */
long lg_ptrace_seccomp_filter(pid_t tid, unsigned long index, void *insns);
int lg_get_robust_list(pid_t tid, uint64_t *head, uint64_t *len);
int lg_ptrace_peek_siginfo(pid_t tid, int shared, void *buf, int max);
/* prlimit64 on another process: reads the limit into cur/max, sets it first if set_* are given. */
int lg_prlimit(pid_t pid, int resource, const uint64_t *set_cur, const uint64_t *set_max, uint64_t *cur, uint64_t *max);

/* waitpid(2) that returns -errno; `status` is the raw wait status. */
pid_t lg_waitpid(pid_t pid, int *status, int options);
static const int LG_WALL = 0x40000000;  /* __WALL */
static const int LG_WNOHANG = 1;

/* ------------------------------------------------------------------ */
/* syscall injection into a ptrace-stopped thread (prepare/syscall/cure) */
/* ------------------------------------------------------------------ */
/* Called while an injected syscall is in flight, so the caller can keep serving
 * the target's userfaults (an injected madvise waits for its REMOVE event to be read). */
typedef void (*lg_wait_hook)(void *ctx);

struct lg_inject {
    pid_t tid;
    struct user_regs_struct saved;   /* the thread's registers at prepare() */
    uint64_t stub;                   /* address of `syscall; int3` in the target */
    uint64_t poked_word;             /* original word at `stub` if we wrote it */
    int poked;                       /* 1 when cure() must restore poked_word */
    int deferred_signals[8];         /* signals that arrived while injecting */
    int deferred_count;
    lg_wait_hook hook;
    void *hook_ctx;
    int exited;                      /* the thread died during injection */
    int exit_status;
    int fault_signal;                /* the fault (SIGSEGV...) an injected call stopped with, or 0 */
};

/* Save the registers of stopped thread `tid`. If `stub` is 0, write a
 * `syscall; int3` stub at the thread's RIP (the word is restored by cure). */
int lg_inject_prepare(struct lg_inject *s, pid_t tid, uint64_t stub);
/* Run one syscall in the thread; *ret gets the raw return value (negative errno on failure). */
int lg_inject_syscall(struct lg_inject *s, long nr, const uint64_t args[6], int64_t *ret);
/* Restore the thread's registers (and the stub word if it was poked). */
int lg_inject_cure(struct lg_inject *s);
/* Bytes of the stub written into a scratch page: `syscall; int3; int3...` */
static const uint64_t LG_INJECT_STUB_WORD = 0xcccccccccccc050fULL;

/* ------------------------------------------------------------------ */
/* userfaultfd                                                         */
/* ------------------------------------------------------------------ */
int lg_uffd_api(int fd, uint64_t features, uint64_t *out_features, uint64_t *out_ioctls);
int lg_uffd_register(int fd, uint64_t start, uint64_t len, uint64_t mode, uint64_t *out_ioctls);
int lg_uffd_unregister(int fd, uint64_t start, uint64_t len);
/* Copies `len` bytes; returns 0, or -errno with *copied the bytes done before the failure. */
int lg_uffd_copy(int fd, uint64_t dst, const void *src, uint64_t len, uint64_t mode, int64_t *copied);
int lg_uffd_zeropage(int fd, uint64_t start, uint64_t len, uint64_t mode, int64_t *zeroed);
int lg_uffd_wake(int fd, uint64_t start, uint64_t len);
int lg_uffd_writeprotect(int fd, uint64_t start, uint64_t len, uint64_t mode);

enum lg_uffd_event_kind {
    LG_UFFD_PAGEFAULT = 1,
    LG_UFFD_FORK = 2,
    LG_UFFD_REMAP = 3,
    LG_UFFD_REMOVE = 4,
    LG_UFFD_UNMAP = 5,
    LG_UFFD_OTHER = 99,
};

/* A decoded uffd_msg. pagefault: addr, flags, tid. remap: addr=from, a2=to, a3=len.
 * remove/unmap: addr=start, a2=end. fork: a2=new uffd. */
struct lg_uffd_event {
    uint32_t kind;
    uint32_t flags;
    uint64_t addr;
    uint64_t a2;
    uint64_t a3;
    uint32_t tid;
    uint32_t pad;
};
/* Reads up to `max` messages from a non-blocking uffd; returns the count (0 when none) or -errno. */
int lg_uffd_read_events(int fd, struct lg_uffd_event *out, int max);

/* PAGEMAP_SCAN on an open /proc/PID/pagemap. Returns the number of regions written to `vec`,
 * or -errno; *walk_end gets the address where the walk stopped. */
int lg_pagemap_scan(int pagemap_fd, uint64_t start, uint64_t end, uint64_t flags,
                    uint64_t category_mask, uint64_t category_inverted, uint64_t category_anyof,
                    uint64_t return_mask, struct page_region *vec, uint64_t vec_len,
                    uint64_t max_pages, uint64_t *walk_end);

/* ------------------------------------------------------------------ */
/* process memory and pidfds                                           */
/* ------------------------------------------------------------------ */
/* sendmsg(fd, buf, len) not waiting, with the `count` descriptors fds as SCM_RIGHTS (none: a plain
   send); the bytes sent, or -errno. */
int64_t lg_send_with_rights(int fd, const void *buf, size_t len, const int *fds, int count);

/* open_by_handle_at(mount_fd, {length, type, bytes}, O_PATH|O_CLOEXEC): the file a handle
   (name_to_handle_at, or an inotify watch's fdinfo) names; its fd, or -errno. */
int lg_open_by_handle(int mount_fd, int type, const void *bytes, uint32_t length);

/* Reads `count` ranges of the target into one contiguous local buffer. Returns bytes or -errno. */
int64_t lg_process_vm_read(pid_t pid, void *local, uint64_t local_len,
                           const uint64_t *remote_addrs, const uint64_t *remote_lens, int count);
int64_t lg_process_vm_write(pid_t pid, const void *local, uint64_t len, uint64_t remote_addr);
int lg_pidfd_open(pid_t pid);
int lg_pidfd_getfd(int pidfd, int targetfd);
/* kcmp(KCMP_FILE): 0 if fds fd1 and fd2 of pid are one open file description; -errno. */
/* kcmp(KCMP_FILE): 0 when fd1 of pid1 and fd2 of pid2 are one open file description. */
int lg_kcmp_file(pid_t pid1, int fd1, pid_t pid2, int fd2);
/* 0 if fd of pid is the file epoll set epfd of pid watches as its toff-th entry for fd number tfd
   (kcmp KCMP_EPOLL_TFD), 1-3 if not, -errno on failure (ENOENT: no such entry). */
int lg_kcmp_epoll_target(pid_t pid, int epfd, int tfd, unsigned toff, int fd);

/* A UNIX socket as sock_diag shows it. name: the address's path (a leading 0 byte: abstract),
   name_length 0 for an unnamed socket; peer: the inode of the socket it is connected to (0: none);
   shutdown: SHUT_RD/SHUT_WR bits (RCV_SHUTDOWN 1, SEND_SHUTDOWN 2); pending_connections: of a
   listening one (and icons, the first of the sockets that connected to it). */
struct lg_unix_socket {
    uint32_t inode, peer;
    uint8_t type, state, shutdown, pad;
    uint32_t receive_queue, send_queue, pending_connections;
    int32_t name_length;
    char name[108];
    uint32_t icons[32];  /* a listener's: the inodes of the first sockets waiting to be accepted */
};

/* Every UNIX socket of the caller's network namespace, up to capacity of them into out; returns
   how many there are (more than capacity: call again with more room), or -errno. */
int lg_unix_sockets(struct lg_unix_socket *out, int capacity);

/* Peeks every message queued on socket fd without consuming any (SO_PEEK_OFF, put back after):
   their bytes back to back into buf and each one's length into lengths (a stream socket's bytes
   come in runs of whatever the kernel hands at once); returns how many, or -errno (E2BIG: more
   than capacity or max_messages). The descriptors messages carry (SCM_RIGHTS), which a peek
   installs in the caller, go into in_flight (up to in_flight_capacity; *in_flight_total of them,
   close-on-exec, the caller's to close), in_flight_counts[i] of them for message i. */
long lg_socket_peek_queue(int fd, void *buf, size_t capacity, uint32_t *lengths, int max_messages,
                          int *in_flight, uint32_t *in_flight_counts, int in_flight_capacity, int *in_flight_total);

/* The backlog of the listening TCP socket with this inode (family AF_INET or AF_INET6), from
   sock_diag; -ENOENT if there is no such listener. */
long lg_tcp_listen_backlog(int family, uint64_t inode);

/* Ends the TCP sockets on local (a sockaddr_in or _in6 of family), and to peer if not NULL, that
   no file holds and that are closing (FIN_WAIT1/2, TIME_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING):
   what a killed run's connections left on an address it binds again (sock_diag SOCK_DESTROY).
   Returns how many, or -errno. */
long lg_tcp_destroy_orphans(int family, const void *local, const void *peer);

/* Aborts the connected TCP socket sock (sock_diag SOCK_DESTROY on its four-tuple: a reset to its
   peer, ECONNABORTED to its holder); 0 (also if it was reset already) or -errno. */
int lg_tcp_abort(int sock);

/* An established TCP connection as TCP_REPAIR reads it: the sequence numbers after the send and
   receive queues (write_seq, rcv_nxt), the queues' lengths (of the send queue, the bytes not sent
   yet), MSS, window scales, tcpi_options (TCPI_OPT_*), the timestamp, and tcp_repair_window's
   snd_wl1, snd_wnd, max_window, rcv_wnd, rcv_wup. */
struct lg_tcp_state {
    uint32_t send_seq, receive_seq;
    uint32_t send_queue_length, unsent_length, receive_queue_length;
    uint32_t mss, timestamp;
    uint8_t send_wscale, receive_wscale, options, state;  /* state: tcpi_state (TCP_ESTABLISHED 1...) */
    uint32_t window[5];
};

/* Reads the state and both queues of connected TCP socket fd (in repair mode for the time of it,
   left without a window probe); -errno on failure (E2BIG: a queue past its capacity). */
int lg_tcp_repair_read(int fd, struct lg_tcp_state *st, void *send_queue, uint32_t send_capacity, void *receive_queue, uint32_t receive_capacity);

/* Makes fresh TCP socket fd the connection st from local to peer, in repair mode: sequence
   numbers, bind, connect, options, the queues but the unsent bytes, windows. -errno on failure,
   with *stage telling how far it got (for the error's words). */
int lg_tcp_repair_restore(int fd, const struct lg_tcp_state *st, const void *local, uint32_t local_length, const void *peer, uint32_t peer_length,
                          const void *send_queue, const void *receive_queue, int *stage);

/* Takes a restored connection out of repair mode (a window probe tells the peer) and sends the
   bytes it had not sent: once both ends of a connection between two restored sockets exist. */
int lg_tcp_repair_finish(int fd, const void *unsent, uint32_t length, int *stage);
int lg_pidfd_send_signal(int pidfd, int sig);

/* A signalfd for SIGCHLD (blocks SIGCHLD in the calling thread's mask). */
int lg_sigchld_fd(void);
/* Drain a signalfd; returns the number of siginfos read. */
int lg_signalfd_drain(int fd);
/* A non-blocking signalfd for `sigs` (the caller blocks them). */
int lg_signal_fd(const int *sigs, int count);
/* Reads one siginfo; returns 1 if one was read, 0 if none was pending. */
int lg_signal_fd_read(int fd, int *signo, int *code, int *sender);
int lg_tgkill(pid_t tgid, pid_t tid, int sig);
int lg_eventfd(void);
/* Block `sig` in the calling thread. */
int lg_block_signal(int sig);
int lg_thread_id(void);

/* ------------------------------------------------------------------ */
/* seccomp                                                             */
/* ------------------------------------------------------------------ */
/* Builds a BPF filter (via libseccomp) that returns SECCOMP_RET_TRACE for each syscall
 * in `nrs` and allows everything else. *prog receives malloc'd sock_filter[]; free with free(). */
int lg_seccomp_build_trace_filter(const int *nrs, int count, void **prog, uint32_t *len);

/* ------------------------------------------------------------------ */
/* launching the traced program                                        */
/* ------------------------------------------------------------------ */
struct lg_spawn_args {
    const char *path;          /* absolute path of the program */
    char *const *argv;
    char *const *envp;
    const void *filter;        /* BPF program from lg_seccomp_build_trace_filter, or NULL */
    uint32_t filter_len;
    int new_pidns;             /* 1: PROG is PID 2 of a fresh PID namespace, under a reaper at PID 1 */
    const sigset_t *sigmask;   /* signal mask PROG starts with */
    const sigset_t *ignored;   /* signals PROG starts with set to SIG_IGN (the rest SIG_DFL) */
    const int *keep_fds;       /* descriptors above 2 PROG keeps (the rest are closed at its exec) */
    int keep_count;
    char *listen_pid_env;      /* an envp entry "LISTEN_PID=" with room for 10 digits, set to PROG's
                                  own pid (as it sees it) before exec; or NULL */
};
struct lg_spawn_result {
    pid_t prog_pid;            /* PROG's pid as the agent sees it */
    pid_t reaper_pid;          /* the namespace's PID 1, or 0 */
    int release_fd;            /* write a byte to let PROG install its filter and exec */
    int error_fd;              /* read: EOF once exec succeeded, else "stage errno" as two int32 */
    int hold_fd;               /* with a reaper: close it to let the reaper exit once PROG has; else -1 */
};
int lg_spawn(const struct lg_spawn_args *a, struct lg_spawn_result *r);

/* ------------------------------------------------------------------ */
/* misc glibc calls hidden behind _GNU_SOURCE                          */
/* ------------------------------------------------------------------ */
void lg_set_thread_name(const char *name);
int lg_accept(int fd, void *addr, uint32_t *len);
int lg_signal_is_ignored(int sig);
int lg_sqlite_bind_blob(sqlite3_stmt *st, int idx, const void *p, int n);
int lg_sqlite_bind_text(sqlite3_stmt *st, int idx, const char *s);
int lg_spawn_close_from(void *actions, int from);
int64_t lg_pipe_peek(int fd, void *buf, uint64_t cap);
void lg_copy_nontemporal(void *dst, const void *src, size_t n);
/* The statfs f_type of the file system fd is on; -1 with errno set on failure. */
long lg_fs_type(int fd);

/* ------------------------------------------------------------------ */
/* checksums and MACs                                                  */
/* ------------------------------------------------------------------ */
int lg_hmac_sha256(const void *key, size_t key_len, const void *data, size_t data_len, uint8_t out[32]);
int lg_random_bytes(void *buf, size_t len);
uint32_t lg_crc32c(uint32_t crc, const void *data, size_t len);

#endif

/*
 * statecheck: sets up one kind of process state, waits, then checks that the state is exactly as
 * it set it up, for checkpoint/restore tests (checkpointed, killed and restored while it waits).
 *
 *   statecheck MODE TRIGGER
 *
 * Prints "ready" once the state is set up, then waits until the file TRIGGER exists (or SIGUSR1
 * arrives), checks, and prints "PASS MODE" or "FAIL MODE: what differs" (exit status 0 or 1).
 *
 * Modes:
 *   advice   madvise advice (random, sequential, dontfork, dontdump, wipeonfork), MAP_NORESERVE and
 *            an anonymous mapping's name (PR_SET_VMA_ANON_NAME), each on a mapping whose contents
 *            are checked too (a fork-based snapshot would lose dontfork and wipeonfork pages)
 *   fdflags  descriptors' status flags (O_APPEND, O_NONBLOCK), FD_CLOEXEC, access modes, a dup
 *            sharing its offset, a pipe's size (F_SETPIPE_SZ) with what it holds, O_NONBLOCK on a pipe end
 *   attrs    thread names (PR_SET_NAME, pthread_setname_np), personality, oom_score_adj, and prctl's
 *            child subreaper, parent-death signal, timer slack, no_new_privs and dumpable
 *   guard    guard regions (MADV_GUARD_INSTALL) inside a mapping whose other pages hold data: a
 *            guard page must still fault (SIGSEGV), the others keep their contents
 *   membarrier  a MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED registration (the command it allows
 *            fails with EPERM without one)
 *   locks    a flock, an open-file-description read lock and a POSIX write lock on a range, each
 *            checked from another open file description (which they must block)
 *   unlinked a file unlinked while mapped privately (some pages copied on write) and shared
 *            (written through): each page's contents, and that both still map one file
 *   zombies  three children that exited (3, 0, killed by SIGTERM) and are not collected yet: each
 *            is collected after the restore with its pid and status, and no child is left
 *   timers   POSIX timers: periodic, one-shot, disarmed, one signalling a thread: /proc/self/timers
 *            reads the same, the time left is no more than before, the periodic one still fires
 *   sysv     SysV shared memory: a private segment marked for removal and a keyed one attached
 *            read-only: ids, keys, sizes, modes, attachments, contents
 *   seccomp  two seccomp filters of its own (each failing one call with its errno): both hold
 *   loginuid the audit login uid it set itself (4242)
 *   lease    a read lease with its own break signal: held, it holds an open for writing back and
 *            its break arrives as that signal
 *   aio      aio contexts: one whose ring has wrapped, holding 3 unreaped reads; one of several
 *            pages holding 3; a destroyed one between them: rings' headers (index, capacity, head,
 *            tail), the events and what they read, then new requests and a new context (which must
 *            get the freed index)
 *   openfiles regular files it holds open (read-write, read-only, O_APPEND, one left alone), which
 *            the test changes, deletes and appends to between the kill and the restore: each is
 *            back as at the checkpoint, with its offset, mode and (the one left alone) mtime
 *   events   eventfds (a semaphore one with a dup, one above 32 bits), timerfds (periodic, fired
 *            one-shot, disarmed), a signalfd with a signal pending, an epoll set of them (edge,
 *            one-shot, level) and of a pipe, and an epoll set of that set
 *   unix     UNIX sockets: stream, datagram and seqpacket pairs holding data (one end shut for
 *            writing, one non-blocking, one with a small SO_SNDBUF), listeners on a path and on an
 *            abstract name, a pair whose other end closed after sending, and a pair shared with a
 *            child that answers over it after the restore
 *   inet     TCP listeners (IPv4 and IPv6, with options), a TCP socket not connected, UDP sockets
 *            (bound and connected, unbound): addresses, peers, options, flags; both listeners accept
 *   tcp      established TCP connections over loopback, both ends its own, holding a request not
 *            read and 200000 bytes not received: every byte comes, both carry more, and close
 *   tcp-closed  a TCP connection to be restored with --tcp-close: both ends then fail, the listener
 *            accepts (a plain run prints FAIL)
 *   dirs     a directory read part way (at its getdents offset), O_PATH descriptors of a file and a
 *            directory: the directory reads on as a plain run would, the O_PATH ones lead there
 *   aio-inflight, epoll-moved, iouring, inotify, mlock, mseal
 *            state a checkpoint must refuse (an aio request in flight: a poll on an empty pipe;
 *            an epoll entry whose file moved to another fd number; an io_uring instance; an
 *            inotify watch; locked memory, sealed memory):
 *            set up, then "done" once triggered (the test checks the refusal names it)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <stddef.h>
#include <sys/timerfd.h>
#include <sys/prctl.h>
#include <linux/aio_abi.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <sys/ipc.h>
#include <termios.h>
#include <sys/personality.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

static volatile sig_atomic_t poked;
static void on_usr1(int sig) { (void)sig; poked = 1; }

static char failures[4096];
static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t len = strlen(failures);
    if (len) { strncat(failures, "; ", sizeof failures - len - 1); len += 2; }
    if (len < sizeof failures) vsnprintf(failures + len, sizeof failures - len, fmt, ap);
    va_end(ap);
}

static void wait_for(const char *trigger) {
    struct stat st;
    while (!poked && stat(trigger, &st) != 0) usleep(10000);
}

/* The VmFlags of the mapping that starts at `addr`, from /proc/self/smaps. */
static int vmflags_of(void *addr, char *out, size_t cap) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[512];
    int in = 0;
    unsigned long want = (unsigned long)addr;
    while (fgets(line, sizeof line, f)) {
        unsigned long start, end;
        if (sscanf(line, "%lx-%lx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' ')) in = start == want;
        else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(out, cap, "%s", line + 8);
            fclose(f);
            return 0;
        }
    }
    fclose(f);
    return -1;
}

static int has_flag(const char *flags, const char *flag) {
    char pad[520];
    snprintf(pad, sizeof pad, " %s", flags);
    char want[8];
    snprintf(want, sizeof want, " %s", flag);
    char *p = strstr(pad, want);
    return p && (p[3] == ' ' || p[3] == '\n' || p[3] == 0);
}

/* The name /proc/self/maps gives the mapping at `addr`. */
static int maps_name_of(void *addr, char *out, size_t cap) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return -1;
    char line[512];
    unsigned long want = (unsigned long)addr;
    while (fgets(line, sizeof line, f)) {
        unsigned long start;
        if (sscanf(line, "%lx-", &start) == 1 && start == want) {
            char *name = strchr(line, '[');
            snprintf(out, cap, "%s", name ? name : "");
            out[strcspn(out, "\n")] = 0;
            fclose(f);
            return 0;
        }
    }
    fclose(f);
    return -1;
}

enum { PAGES = 16 };

static void fill(char *p, int seed) {
    for (int i = 0; i < PAGES * 4096; i += 64) p[i] = (char)(seed * 31 + i / 4096);
}
static int filled(const char *p, int seed) {
    for (int i = 0; i < PAGES * 4096; i += 64) if (p[i] != (char)(seed * 31 + i / 4096)) return 0;
    return 1;
}

static int advice(const char *trigger) {
    struct { const char *name; int advice; const char *flag; } kinds[] = {
        {"random", MADV_RANDOM, "rr"}, {"sequential", MADV_SEQUENTIAL, "sr"}, {"dontfork", MADV_DONTFORK, "dc"},
        {"dontdump", MADV_DONTDUMP, "dd"}, {"wipeonfork", MADV_WIPEONFORK, "wf"},
    };
    enum { N = sizeof kinds / sizeof kinds[0] };
    char *maps[N + 2];
    /* A gap page between mappings keeps the kernel from merging them. */
    char *base = mmap(NULL, (N + 2) * (PAGES + 1) * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) { perror("mmap"); return 2; }
    for (int i = 0; i < N + 2; i++) {
        int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | (i == N ? MAP_NORESERVE : 0);
        maps[i] = mmap(base + i * (PAGES + 1) * 4096, PAGES * 4096, PROT_READ | PROT_WRITE, flags, -1, 0);
        if (maps[i] == MAP_FAILED) { perror("mmap"); return 2; }
        if (i < N && madvise(maps[i], PAGES * 4096, kinds[i].advice) != 0) { perror(kinds[i].name); return 2; }
        fill(maps[i], i + 1);
    }
    /* Named anonymous mappings need CONFIG_ANON_VMA_NAME (EINVAL without it: nothing to check). */
    int named = prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)maps[N + 1], PAGES * 4096, "legato-test") == 0;
    if (!named && errno != EINVAL) { perror("PR_SET_VMA"); return 2; }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    char flags[512];
    for (int i = 0; i < N + 1; i++) {
        const char *name = i < N ? kinds[i].name : "noreserve";
        const char *flag = i < N ? kinds[i].flag : "nr";
        if (vmflags_of(maps[i], flags, sizeof flags) != 0) fail("no mapping at %p (%s)", (void *)maps[i], name);
        else if (!has_flag(flags, flag)) fail("%s mapping lacks %s (VmFlags:%.*s)", name, flag, (int)strcspn(flags, "\n"), flags);
    }
    for (int i = 0; i < N + 2; i++) if (!filled(maps[i], i + 1)) fail("mapping %d lost its contents", i);
    char name[128];
    if (named && (maps_name_of(maps[N + 1], name, sizeof name) != 0 || strcmp(name, "[anon:legato-test]") != 0))
        fail("the named mapping is called '%s'", name);
    return 0;
}

static int fdflags(const char *trigger) {
    char path[4096];
    snprintf(path, sizeof path, "%s.data", trigger);
    int app = open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int nb = open(path, O_RDONLY | O_NONBLOCK);
    int wo = open(path, O_WRONLY);
    if (app < 0 || nb < 0 || wo < 0) { perror("open"); return 2; }
    if (write(app, "abc", 3) != 3) { perror("write"); return 2; }
    int dupped = dup(wo);  /* one open file description under two numbers: one offset */
    if (dupped < 0 || write(wo, "xy", 2) != 2) { perror("dup"); return 2; }
    int small[2], big[2];
    if (pipe(small) != 0 || pipe2(big, O_NONBLOCK) != 0) { perror("pipe"); return 2; }
    fcntl(small[0], F_SETFL, O_NONBLOCK);
    fcntl(small[1], F_SETFD, FD_CLOEXEC);
    if (fcntl(big[1], F_SETPIPE_SZ, 1 << 20) < 0) { perror("F_SETPIPE_SZ"); return 2; }
    static char chunk[200000];
    for (size_t i = 0; i < sizeof chunk; i++) chunk[i] = (char)(i * 7);
    if (write(big[1], chunk, sizeof chunk) != (ssize_t)sizeof chunk) { perror("fill the pipe"); return 2; }
    if (write(small[1], "xyz", 3) != 3) { perror("write"); return 2; }
    int want_big = fcntl(big[1], F_GETPIPE_SZ);
    struct { int fd; const char *name; int fl; int fd_flags; } fds[] = {
        {app, "O_APPEND file", O_RDWR | O_APPEND, FD_CLOEXEC}, {nb, "O_NONBLOCK file", O_RDONLY | O_NONBLOCK, 0},
        {wo, "write-only file", O_WRONLY, 0}, {small[0], "non-blocking pipe end", O_RDONLY | O_NONBLOCK, 0},
        {small[1], "close-on-exec pipe end", O_WRONLY, FD_CLOEXEC}, {big[0], "O_NONBLOCK pipe (read)", O_RDONLY | O_NONBLOCK, 0},
        {big[1], "O_NONBLOCK pipe (write)", O_WRONLY | O_NONBLOCK, 0},
    };
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    int mask = O_ACCMODE | O_APPEND | O_NONBLOCK;
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        int fl = fcntl(fds[i].fd, F_GETFL), fdf = fcntl(fds[i].fd, F_GETFD);
        if (fl < 0) { fail("%s (fd %d) is gone", fds[i].name, fds[i].fd); continue; }
        if ((fl & mask) != fds[i].fl) fail("%s (fd %d) has status flags 0%o, not 0%o", fds[i].name, fds[i].fd, fl & mask, fds[i].fl);
        if (fdf != fds[i].fd_flags) fail("%s (fd %d) has fd flags %d, not %d", fds[i].name, fds[i].fd, fdf, fds[i].fd_flags);
    }
    int got_big = fcntl(big[1], F_GETPIPE_SZ);
    if (got_big != want_big) fail("the big pipe holds %d bytes at most, not %d", got_big, want_big);
    static char back[200000];
    ssize_t n = read(big[0], back, sizeof back);
    if (n != (ssize_t)sizeof back || memcmp(back, chunk, sizeof back) != 0) fail("the big pipe gave back %zd bytes, not its 200000", n);
    char three[4] = {0};
    if (read(small[0], three, 3) != 3 || strcmp(three, "xyz") != 0) fail("the small pipe gave back '%s'", three);
    if (write(app, "d", 1) != 1 || lseek(app, 0, SEEK_CUR) != 4) fail("the O_APPEND file did not append (offset %ld)", (long)lseek(app, 0, SEEK_CUR));
    if (write(dupped, "z", 1) != 1 || lseek(wo, 0, SEEK_CUR) != 3 || lseek(dupped, 0, SEEK_CUR) != 3)
        fail("a dup does not share its offset (%ld and %ld, not 3)", (long)lseek(wo, 0, SEEK_CUR), (long)lseek(dupped, 0, SEEK_CUR));
    return 0;
}

static void *worker(void *arg) {
    (void)arg;
    pthread_setname_np(pthread_self(), "sc-worker");
    for (;;) pause();
    return NULL;
}

static int read_int_file(const char *path) {
    FILE *f = fopen(path, "r");
    int v = -99999;
    if (f) { if (fscanf(f, "%d", &v) != 1) v = -99999; fclose(f); }
    return v;
}

static void read_comm(pid_t tid, char *out, size_t cap) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/comm", (int)tid);
    FILE *f = fopen(path, "r");
    out[0] = 0;
    if (f) { if (!fgets(out, (int)cap, f)) out[0] = 0; fclose(f); }
    out[strcspn(out, "\n")] = 0;
}

static int attrs(const char *trigger) {
    prctl(PR_SET_NAME, "sc-main", 0, 0, 0);
    pthread_t th;
    if (pthread_create(&th, NULL, worker, NULL) != 0) { perror("pthread_create"); return 2; }
    if (personality(PER_LINUX | ADDR_NO_RANDOMIZE) < 0) { perror("personality"); return 2; }
    FILE *f = fopen("/proc/self/oom_score_adj", "w");
    if (!f || fprintf(f, "321\n") < 0 || fclose(f) != 0) { perror("oom_score_adj"); return 2; }
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 || prctl(PR_SET_PDEATHSIG, SIGUSR2, 0, 0, 0) != 0 ||
        prctl(PR_SET_TIMERSLACK, 123456, 0, 0, 0) != 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) { perror("prctl"); return 2; }
    usleep(50000);  /* the worker names itself */
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    int per = personality(0xffffffff);
    if (per != (PER_LINUX | ADDR_NO_RANDOMIZE)) fail("personality 0x%x", per);
    int oom = read_int_file("/proc/self/oom_score_adj");
    if (oom != 321) fail("oom_score_adj %d", oom);
    int v = 0;
    if (prctl(PR_GET_CHILD_SUBREAPER, &v, 0, 0, 0) != 0 || v != 1) fail("child subreaper %d", v);
    v = 0;
    if (prctl(PR_GET_PDEATHSIG, &v, 0, 0, 0) != 0 || v != SIGUSR2) fail("parent-death signal %d", v);
    long slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    if (slack != 123456) fail("timer slack %ld", slack);
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1) fail("no_new_privs off");
    if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != 0) fail("dumpable on");
    char name[32];
    read_comm(getpid(), name, sizeof name);
    if (strcmp(name, "sc-main") != 0) fail("main thread named '%s'", name);
    int workers = 0;
    DIR *tasks = opendir("/proc/self/task");
    struct dirent *e;
    while (tasks && (e = readdir(tasks))) {
        pid_t t = (pid_t)atoi(e->d_name);
        if (t <= 0 || t == getpid()) continue;
        read_comm(t, name, sizeof name);
        if (strcmp(name, "sc-worker") == 0) workers++;
        else fail("thread %d named '%s'", (int)t, name);
    }
    if (tasks) closedir(tasks);
    if (workers != 1) fail("%d threads named sc-worker", workers);
    return 0;
}

static int ofd_lock(int fd, short type, off_t start, off_t len, int cmd) {
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len};
    return fcntl(fd, cmd, &fl);
}

static int locks(const char *trigger) {
    char a[4096], b[4096], c[4096];
    snprintf(a, sizeof a, "%s.flock", trigger);
    snprintf(b, sizeof b, "%s.ofd", trigger);
    snprintf(c, sizeof c, "%s.posix", trigger);
    int fa = open(a, O_RDWR | O_CREAT, 0644), fb = open(b, O_RDWR | O_CREAT, 0644), fc = open(c, O_RDWR | O_CREAT, 0644);
    if (fa < 0 || fb < 0 || fc < 0) { perror("open"); return 2; }
    if (flock(fa, LOCK_EX) != 0 || ofd_lock(fb, F_RDLCK, 0, 0, F_OFD_SETLK) != 0 || ofd_lock(fc, F_WRLCK, 100, 50, F_SETLK) != 0) {
        perror("lock");
        return 2;
    }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    /* Other open file descriptions of the same files: each lock must block them. */
    int oa = open(a, O_RDWR), ob = open(b, O_RDWR), oc = open(c, O_RDWR);
    if (flock(oa, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK) fail("the flock is gone");
    if (ofd_lock(ob, F_WRLCK, 0, 0, F_OFD_SETLK) == 0) fail("the OFD read lock is gone");
    if (ofd_lock(ob, F_RDLCK, 0, 0, F_OFD_SETLK) != 0) fail("the OFD lock became a write lock");
    struct flock q = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(oc, F_OFD_GETLK, &q) != 0 || q.l_type != F_WRLCK || q.l_start != 100 || q.l_len != 50)
        fail("the POSIX lock is not a write lock on [100, 150) (type %d, %ld+%ld)", q.l_type, (long)q.l_start, (long)q.l_len);
    return 0;
}

static sigjmp_buf guard_jump;
static void on_guard_fault(int sig) { (void)sig; siglongjmp(guard_jump, 1); }

static int faults(volatile char *p) {
    struct sigaction sa = {.sa_handler = on_guard_fault}, old;
    sigaction(SIGSEGV, &sa, &old);
    int faulted = 0;
    if (sigsetjmp(guard_jump, 1) == 0) { char c = *p; (void)c; } else faulted = 1;
    sigaction(SIGSEGV, &old, NULL);
    return faulted;
}

static int guard(const char *trigger) {
    enum { N = 64 };
    char *p = mmap(NULL, N * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 2; }
    for (int i = 0; i < N; i++) memset(p + i * 4096, 'a' + i % 26, 4096);
    if (madvise(p + 8 * 4096, 4 * 4096, 102 /* MADV_GUARD_INSTALL */) != 0 || madvise(p + 40 * 4096, 4096, 102) != 0) {
        perror("MADV_GUARD_INSTALL");
        return 2;
    }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    for (int i = 0; i < N; i++) {
        int is_guard = (i >= 8 && i < 12) || i == 40;
        if (is_guard && !faults(p + i * 4096)) fail("page %d is no longer a guard page", i);
        if (!is_guard && (faults(p + i * 4096) || p[i * 4096] != 'a' + i % 26)) fail("page %d lost its contents", i);
    }
    return 0;
}

static int membarrier_registered(const char *trigger) {
    enum { QUERY = 0, PRIVATE_EXPEDITED = 1 << 3, REGISTER_PRIVATE_EXPEDITED = 1 << 4 };
    long supported = syscall(SYS_membarrier, QUERY, 0, 0);
    if (supported < 0 || !(supported & REGISTER_PRIVATE_EXPEDITED)) { fprintf(stderr, "no membarrier here\n"); return 2; }
    if (syscall(SYS_membarrier, REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0) { perror("membarrier register"); return 2; }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    if (syscall(SYS_membarrier, PRIVATE_EXPEDITED, 0, 0) != 0) fail("MEMBARRIER_CMD_PRIVATE_EXPEDITED: %s (not registered)", strerror(errno));
    return 0;
}

/* A file unlinked while mapped, twice: privately (some pages then written: copy-on-write, the
   rest still the file's) and shared (written through the mapping: the file holds it). Both map
   the same file, so a write through the shared mapping shows in the private one's unwritten pages. */
static int unlinked(const char *trigger) {
    enum { N = 16 };
    char path[4096];
    snprintf(path, sizeof path, "%s.mapped", trigger);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0640);
    if (fd < 0) { perror("open"); return 2; }
    for (int i = 0; i < N; i++) {
        char page[4096];
        memset(page, 'A' + i, sizeof page);
        if (write(fd, page, sizeof page) != (ssize_t)sizeof page) { perror("write"); return 2; }
    }
    char *priv = mmap(NULL, N * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    char *shared = mmap(NULL, N * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (priv == MAP_FAILED || shared == MAP_FAILED) { perror("mmap"); return 2; }
    close(fd);
    unlink(path);
    for (int i = 0; i < N; i += 4) memset(priv + i * 4096, 'p', 4096);  /* private copies */
    memset(shared + 1 * 4096, 's', 4096);                                 /* into the file */
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    for (int i = 0; i < N; i++) {
        char want = i % 4 == 0 ? 'p' : i == 1 ? 's' : 'A' + i;
        if (priv[i * 4096] != want || priv[i * 4096 + 4095] != want) fail("private page %d holds '%c', not '%c'", i, priv[i * 4096], want);
        char file = i == 1 ? 's' : 'A' + i;
        if (shared[i * 4096] != file) fail("shared page %d holds '%c', not '%c'", i, shared[i * 4096], file);
    }
    memset(shared + 2 * 4096, 't', 4096);
    if (priv[2 * 4096] != 't') fail("the two mappings no longer map one file");
    return 0;
}

/* POSIX timers (raw syscalls: the kernel's ids): a periodic one signalling the process, a one-shot
   far off with no signal, a disarmed one, one signalling the main thread with a value. After the
   restore /proc/self/timers reads the same (ids, signals, values, notification, clocks), the
   one-shot has no more time left than before, the disarmed one stays so, and the periodic one
   goes on firing. */
static volatile sig_atomic_t ticks;
static void on_tick(int sig) { (void)sig; ticks++; }

static int posix_timers(const char *trigger) {
    signal(SIGUSR2, on_tick);
    signal(SIGRTMIN + 1, on_tick);
    int ids[4];
    struct sigevent ev[4] = {
        {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR2},
        {.sigev_notify = SIGEV_NONE},
        {.sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR2, .sigev_value.sival_ptr = (void *)0x5eed},
        {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGRTMIN + 1, .sigev_value.sival_ptr = (void *)0xdeadbeef},
    };
    ev[3]._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    clockid_t clocks[4] = {CLOCK_MONOTONIC, CLOCK_BOOTTIME, CLOCK_REALTIME, CLOCK_MONOTONIC};
    for (int k = 0; k < 4; k++)
        if (syscall(SYS_timer_create, clocks[k], &ev[k], &ids[k]) != 0) { perror("timer_create"); return 2; }
    struct itimerspec periodic = {.it_interval = {0, 20 * 1000 * 1000}, .it_value = {0, 20 * 1000 * 1000}};
    struct itimerspec far = {.it_value = {3600, 0}}, hourly = {.it_interval = {3600, 0}, .it_value = {1800, 0}};
    if (syscall(SYS_timer_settime, ids[0], 0, &periodic, NULL) != 0 || syscall(SYS_timer_settime, ids[1], 0, &far, NULL) != 0 ||
        syscall(SYS_timer_settime, ids[3], 0, &hourly, NULL) != 0) { perror("timer_settime"); return 2; }
    char before[4096] = "", after[4096] = "";
    FILE *f = fopen("/proc/self/timers", "r");
    if (!f || fread(before, 1, sizeof before - 1, f) == 0) { perror("/proc/self/timers"); return 2; }
    fclose(f);
    struct itimerspec left0;
    syscall(SYS_timer_gettime, ids[1], &left0);
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    f = fopen("/proc/self/timers", "r");
    if (!f || fread(after, 1, sizeof after - 1, f) == 0) fail("/proc/self/timers cannot be read");
    if (f) fclose(f);
    if (strcmp(before, after) != 0) fail("/proc/self/timers was:\n%s\nand is:\n%s", before, after);
    struct itimerspec left, off, hour;
    if (syscall(SYS_timer_gettime, ids[1], &left) != 0) fail("timer %d is gone", ids[1]);
    else if (left.it_value.tv_sec == 0 || left.it_value.tv_sec > left0.it_value.tv_sec) fail("the one-shot timer has %lds left, had %lds", (long)left.it_value.tv_sec, (long)left0.it_value.tv_sec);
    if (syscall(SYS_timer_gettime, ids[2], &off) != 0 || off.it_value.tv_sec != 0 || off.it_value.tv_nsec != 0) fail("the disarmed timer is armed");
    if (syscall(SYS_timer_gettime, ids[3], &hour) != 0 || hour.it_interval.tv_sec != 3600) fail("the thread's timer lost its interval");
    sig_atomic_t seen = ticks;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {  /* (each tick cuts a sleep short) */
        usleep(10 * 1000);
        clock_gettime(CLOCK_MONOTONIC, &t1);
    } while ((t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec) < 200 * 1000000L);
    if (ticks < seen + 3) fail("the periodic timer fired %d times in 200 ms", (int)(ticks - seen));
    return 0;
}

/* Two seccomp filters of its own over the agent's: one makes uname fail with errno 42, the next
   getppid with 43. After the restore both still hold, in their order, everything else runs, and
   the process has as many filters as before. */
static int filter_failing(int nr, int err) {
    struct sock_filter insns[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, 0),  /* seccomp_data.nr */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)err),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = 4, .filter = insns};
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

static int seccomp_filters(const char *trigger) {
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    if (filter_failing(SYS_uname, 42) != 0 || filter_failing(SYS_getppid, 43) != 0) { perror("seccomp"); return 2; }
    char before[256] = "", after[256] = "";
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) if (strncmp(line, "Seccomp_filters:", 16) == 0) snprintf(before, sizeof before, "%s", line);
    if (f) fclose(f);
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f)) if (strncmp(line, "Seccomp_filters:", 16) == 0) snprintf(after, sizeof after, "%s", line);
    if (f) fclose(f);
    if (strcmp(before, after) != 0) fail("seccomp filters: %s before, %s now", before, after);
    errno = 0;
    if (syscall(SYS_uname, NULL) != -1 || errno != 42) fail("uname is no longer refused with 42 (errno %d)", errno);
    errno = 0;
    if (syscall(SYS_getppid) != -1 || errno != 43) fail("getppid is no longer refused with 43 (errno %d)", errno);
    if (getpid() <= 0) fail("getpid fails");
    return 0;
}

/* A read lease with its own break signal (F_SETSIG): after the restore the lease is held, an
   open for writing from another process is refused while it breaks (O_NONBLOCK: EWOULDBLOCK),
   and the break arrives as that signal. */
static int lease(const char *trigger) {
    char path[4096];
    snprintf(path, sizeof path, "%s.lease", trigger);
    int fd = open(path, O_RDONLY | O_CREAT, 0644);
    int sig = SIGRTMIN + 2;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_BLOCK, &set, NULL);
    if (fd < 0 || fcntl(fd, F_SETSIG, sig) != 0 || fcntl(fd, F_SETLEASE, F_RDLCK) != 0) { perror("F_SETLEASE"); return 2; }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    if (fcntl(fd, F_GETLEASE) != F_RDLCK) fail("the read lease is gone (F_GETLEASE %d)", fcntl(fd, F_GETLEASE));
    if (fcntl(fd, F_GETSIG) != sig) fail("the break signal is %d, not %d", fcntl(fd, F_GETSIG), sig);
    pid_t child = fork();
    if (child == 0) {
        int w = open(path, O_WRONLY | O_NONBLOCK);
        _exit(w < 0 && errno == EWOULDBLOCK ? 0 : 1);
    }
    int st = 0;
    waitpid(child, &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) fail("an open for writing was not held back by the lease");
    struct timespec wait = {2, 0};
    siginfo_t si;
    if (sigtimedwait(&set, &si, &wait) != sig) fail("no lease-break signal");
    else if (si.si_fd != fd) fail("the lease-break signal names fd %d, not %d", si.si_fd, fd);
    fcntl(fd, F_SETLEASE, F_UNLCK);
    return 0;
}

/* The audit login uid, set by the process itself (as a login does): it reads the same after the
   restore, which starts from whatever `legato restore`'s caller has. */
static int loginuid(const char *trigger) {
    int fd = open("/proc/self/loginuid", O_WRONLY);
    if (fd < 0 || write(fd, "4242", 4) != 4) { perror("/proc/self/loginuid"); return 2; }
    close(fd);
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    char buf[32] = "";
    fd = open("/proc/self/loginuid", O_RDONLY);
    if (fd < 0 || read(fd, buf, sizeof buf - 1) <= 0) fail("/proc/self/loginuid cannot be read");
    else if (strcmp(buf, "4242") != 0) fail("loginuid is %s, not 4242", buf);
    if (fd >= 0) close(fd);
    return 0;
}

/* SysV shared memory: a private segment marked for removal (gone once detached), attached
   read-write, and a keyed one attached read-only, each holding a pattern. After the restore both
   have their ids, keys, sizes, modes and contents, the first is still marked for removal, each has
   one attachment, and a write through the first lands. The keyed one is removed at the end. */
static int sysv(const char *trigger) {
    key_t key = (key_t)(0x4c470000 | (getpid() & 0xffff));
    int priv = shmget(IPC_PRIVATE, 65536, IPC_CREAT | 0600), keyed = shmget(key, 3 * 4096, IPC_CREAT | IPC_EXCL | 0640);
    if (priv < 0 || keyed < 0) { perror("shmget"); return 2; }
    unsigned char *a = shmat(priv, NULL, 0), *b = shmat(keyed, NULL, 0);
    if (a == (void *)-1 || b == (void *)-1) { perror("shmat"); return 2; }
    for (int i = 0; i < 65536; i++) a[i] = (unsigned char)(i * 7);
    for (int i = 0; i < 3 * 4096; i++) b[i] = (unsigned char)(i * 13 + 1);
    shmdt(b);
    b = shmat(keyed, NULL, SHM_RDONLY);
    if (b == (void *)-1) { perror("shmat"); return 2; }
    shmctl(priv, IPC_RMID, NULL);
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    struct shmid_ds ds;
    if (shmctl(priv, IPC_STAT, &ds) != 0) fail("the private segment %d is gone", priv);
    else {
        if (ds.shm_segsz != 65536 || (ds.shm_perm.mode & 0777) != 0600 || ds.shm_nattch != 1) fail("the private segment: size %zu mode %o nattch %lu", ds.shm_segsz, ds.shm_perm.mode, (unsigned long)ds.shm_nattch);
        if (!(ds.shm_perm.mode & SHM_DEST)) fail("the private segment is no longer marked for removal");
    }
    if (shmget(key, 0, 0) != keyed) fail("key 0x%x no longer names segment %d", key, keyed);
    if (shmctl(keyed, IPC_STAT, &ds) != 0) fail("the keyed segment %d is gone", keyed);
    else if (ds.shm_segsz != 3 * 4096 || (ds.shm_perm.mode & 0777) != 0640 || ds.shm_nattch != 1) fail("the keyed segment: size %zu mode %o nattch %lu", ds.shm_segsz, ds.shm_perm.mode, (unsigned long)ds.shm_nattch);
    for (int i = 0; i < 65536; i++) if (a[i] != (unsigned char)(i * 7)) { fail("private byte %d differs", i); break; }
    for (int i = 0; i < 3 * 4096; i++) if (b[i] != (unsigned char)(i * 13 + 1)) { fail("keyed byte %d differs", i); break; }
    a[5] = 0xAB;
    if (a[5] != 0xAB) fail("the private segment is not writable");
    shmctl(keyed, IPC_RMID, NULL);
    return 0;
}

/* Children that exited, their statuses not collected yet: one exited 3, one 0, one was killed by
   SIGTERM. After the restore each is still there to collect, with its pid and its status, and
   then there is no child left. */
static int zombies(const char *trigger) {
    pid_t pids[3];
    for (int k = 0; k < 3; k++) {
        pids[k] = fork();
        if (pids[k] < 0) { perror("fork"); return 2; }
        if (pids[k] == 0) {
            if (k == 2) {
                signal(SIGTERM, SIG_DFL);
                raise(SIGTERM);
            }
            _exit(k == 0 ? 3 : 0);
        }
    }
    /* Until all three are zombies: waitid with WNOWAIT leaves them so. */
    for (int k = 0; k < 3; k++) {
        siginfo_t si;
        if (waitid(P_PID, pids[k], &si, WEXITED | WNOWAIT) != 0) { perror("waitid"); return 2; }
    }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    for (int k = 0; k < 3; k++) {
        int st = 0;
        pid_t got = waitpid(pids[k], &st, WNOHANG);
        if (got != pids[k]) { fail("child %d (pid %d) is not there to collect (waitpid: %d)", k, pids[k], got); continue; }
        if (k == 0 && !(WIFEXITED(st) && WEXITSTATUS(st) == 3)) fail("child 0: status 0x%x, not exit 3", st);
        if (k == 1 && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) fail("child 1: status 0x%x, not exit 0", st);
        if (k == 2 && !(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM && !WCOREDUMP(st))) fail("child 2: status 0x%x, not killed by SIGTERM", st);
    }
    if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD) fail("a child is left over");
    return 0;
}

/* The kernel's aio ring header (fs/aio.c), followed by its io_events. */
struct aio_ring_header {
    unsigned id, nr, head, tail, magic, compat_features, incompat_features, header_length;
};

static long aio_read_at(aio_context_t ctx, int fd, char *buf, long offset, unsigned long tag) {
    struct iocb cb = {0};
    struct iocb *list[1] = {&cb};
    cb.aio_data = tag;
    cb.aio_lio_opcode = IOCB_CMD_PREAD;
    cb.aio_fildes = (unsigned)fd;
    cb.aio_buf = (unsigned long)buf;
    cb.aio_nbytes = 16;
    cb.aio_offset = offset;
    return syscall(SYS_io_submit, ctx, 1L, list);
}

static char aio_expected(long offset, int i) { return (char)('a' + (offset / 4096 + i) % 26); }

/* Reaps exactly `n` events of ctx, each a 16-byte read: their tags in order must be first_tag..,
 * each buffer (buffers[tag - first_tag]) what the file holds at its offset (offsets[...]). */
static void aio_expect(const char *which, aio_context_t ctx, int n, unsigned long first_tag, char bufs[][16], const long *offsets) {
    struct io_event ev[8];
    struct timespec wait = {2, 0};
    long got = syscall(SYS_io_getevents, ctx, (long)n, 8L, ev, &wait);
    if (got != n) { fail("%s: io_getevents got %ld events, not %d", which, got, n); return; }
    for (int k = 0; k < n; k++) {
        unsigned long i = ev[k].data - first_tag;
        if (ev[k].data != first_tag + (unsigned long)k) fail("%s: event %d has tag %llu, not %lu", which, k, (unsigned long long)ev[k].data, first_tag + k);
        if (ev[k].res != 16) fail("%s: event %d read %lld bytes", which, k, (long long)ev[k].res);
        if (i < 8)
            for (int b = 0; b < 16; b++)
                if (bufs[i][b] != aio_expected(offsets[i], b)) { fail("%s: event %d's buffer differs at %d", which, k, b); break; }
    }
    struct timespec none = {0, 0};
    if ((got = syscall(SYS_io_getevents, ctx, 0L, 8L, ev, &none)) != 0) fail("%s: %ld more events", which, got);
}

static int aio_rings(const char *trigger) {
    char path[4096];
    snprintf(path, sizeof path, "%s.aio-data", trigger);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) { perror(path); return 2; }
    static char data[16 * 4096];
    for (long off = 0; off < (long)sizeof data; off += 4096)
        for (int i = 0; i < 4096; i++) data[off + i] = aio_expected(off, i);
    if (write(fd, data, sizeof data) != (ssize_t)sizeof data) { perror("write"); return 2; }
    aio_context_t a = 0, gone = 0, b = 0;
    if (syscall(SYS_io_setup, 8L, &a) != 0 || syscall(SYS_io_setup, 4L, &gone) != 0 || syscall(SYS_io_setup, 700L, &b) != 0) { perror("io_setup"); return 2; }
    if (syscall(SYS_io_destroy, gone) != 0) { perror("io_destroy"); return 2; }
    struct aio_ring_header *ra = (struct aio_ring_header *)a, *rb = (struct aio_ring_header *)b;
    /* Ring a: requests reaped one by one until its head is at its last slot, then 3 not reaped (its tail wraps). */
    static char scratch[16], abufs[3][16], bbufs[5][16];
    struct io_event ev[8];
    for (unsigned k = 0; k + 1 < ra->nr; k++) {
        if (aio_read_at(a, fd, scratch, 0, 1) != 1 || syscall(SYS_io_getevents, a, 1L, 1L, ev, NULL) != 1) { perror("aio cycle"); return 2; }
    }
    long aoff[3] = {4096, 3 * 4096, 5 * 4096}, boff[5] = {0, 2 * 4096, 4 * 4096, 6 * 4096, 8 * 4096};
    for (int k = 0; k < 3; k++) if (aio_read_at(a, fd, abufs[k], aoff[k], 100 + k) != 1) { perror("io_submit a"); return 2; }
    for (int k = 0; k < 5; k++) if (aio_read_at(b, fd, bbufs[k], boff[k], 200 + k) != 1) { perror("io_submit b"); return 2; }
    if (syscall(SYS_io_getevents, b, 2L, 2L, ev, NULL) != 2 || ev[0].data != 200 || ev[1].data != 201) { perror("io_getevents b"); return 2; }
    struct aio_ring_header ha = *ra, hb = *rb;
    if (ha.tail >= ha.head) { fprintf(stderr, "ring a did not wrap (head %u tail %u)\n", ha.head, ha.tail); return 2; }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    if (memcmp(ra, &ha, sizeof ha) != 0) fail("ring a's header: index %u nr %u head %u tail %u, was %u %u %u %u", ra->id, ra->nr, ra->head, ra->tail, ha.id, ha.nr, ha.head, ha.tail);
    if (memcmp(rb, &hb, sizeof hb) != 0) fail("ring b's header: index %u nr %u head %u tail %u, was %u %u %u %u", rb->id, rb->nr, rb->head, rb->tail, hb.id, hb.nr, hb.head, hb.tail);
    aio_expect("ring a", a, 3, 100, abufs, aoff);
    aio_expect("ring b", b, 3, 202, bbufs + 2, boff + 2);
    /* Both contexts take new requests (ring a past its full lap). */
    long more[2] = {7 * 4096, 9 * 4096};
    char mbufs[2][16];
    for (int k = 0; k < 2; k++) if (aio_read_at(k ? b : a, fd, mbufs[k], more[k], 300) != 1) fail("io_submit to ring %c after the restore: %s", k ? 'b' : 'a', strerror(errno));
    aio_expect("ring a, new request", a, 1, 300, mbufs, more);
    aio_expect("ring b, new request", b, 1, 300, mbufs + 1, more + 1);
    aio_context_t c = 0;
    if (syscall(SYS_io_setup, 4L, &c) != 0) fail("io_setup after the restore: %s", strerror(errno));
    else if (((struct aio_ring_header *)c)->id != 1) fail("a new context got index %u, not the freed 1", ((struct aio_ring_header *)c)->id);
    if (syscall(SYS_io_destroy, a) != 0 || syscall(SYS_io_destroy, b) != 0 || (c && syscall(SYS_io_destroy, c) != 0)) fail("io_destroy: %s", strerror(errno));
    close(fd);
    unlink(path);
    return 0;
}

/* State with no exact restore yet: a checkpoint must refuse it (by name) and let the program run on. */
static int send_with_fds(int sock, const char *text, const int *fds, int count);
static int refused(const char *mode, const char *trigger) {
    aio_context_t ctx = 0;
    int pipefd[2] = {-1, -1};
    if (strcmp(mode, "aio-inflight") == 0) {
        /* A poll of an empty pipe: in flight until the pipe has data. */
        struct iocb cb = {0};
        struct iocb *list[1] = {&cb};
        if (syscall(SYS_io_setup, 8L, &ctx) != 0 || pipe2(pipefd, O_CLOEXEC) != 0) { perror("io_setup"); return 2; }
        cb.aio_lio_opcode = IOCB_CMD_POLL;
        cb.aio_fildes = (unsigned)pipefd[0];
        cb.aio_buf = POLLIN;
        if (syscall(SYS_io_submit, ctx, 1L, list) != 1) { perror("io_submit"); return 2; }
    } else if (strcmp(mode, "iouring") == 0) {
        char params[120] = {0};  /* struct io_uring_params */
        if (syscall(425 /* io_uring_setup */, 4, params) < 0) { perror("io_uring_setup"); return 2; }
    } else if (strcmp(mode, "epoll-moved") == 0) {
        /* An epoll entry added as fd A, whose file then moved to fd B (dup2, close A). */
        int ep = epoll_create1(0), e = eventfd(0, 0);
        struct epoll_event ev = {EPOLLIN, {.u64 = 1}};
        if (ep < 0 || e < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, e, &ev) != 0 || dup2(e, 40) != 40 || close(e) != 0) { perror("epoll-moved"); return 2; }
    } else if (strcmp(mode, "rights-unkept") == 0) {
        /* A socket pair holding a message that carries an eventfd nobody else holds. */
        int sp[2], e = eventfd(0, 0);
        if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sp) || e < 0 || send_with_fds(sp[0], "x", &e, 1) || close(e)) { perror("rights"); return 2; }
    } else if (strcmp(mode, "device") == 0) {
        /* A character device with no exact restore: /dev/full. */
        if (open("/dev/full", O_WRONLY) < 0) { perror("/dev/full"); return 2; }
    } else if (strcmp(mode, "pty-unread") == 0) {
        /* A pty whose slave printed what its master has not read. */
        int m = posix_openpt(O_RDWR | O_NOCTTY);
        int sl = m < 0 || grantpt(m) || unlockpt(m) ? -1 : open(ptsname(m), O_RDWR | O_NOCTTY);
        if (sl < 0 || write(sl, "pending\n", 8) != 8) { perror("pty"); return 2; }
    } else if (strcmp(mode, "pidfd-outside") == 0) {
        /* A pidfd of pid 1 of its namespace, which is not one of the program's processes. */
        if (syscall(SYS_pidfd_open, 1, 0) < 0) { perror("pidfd_open(1)"); return 2; }
    } else if (strcmp(mode, "fifo-outside") == 0) {
        /* A FIFO the test made and holds open (outside the program), opened for reading. */
        char path[4096];
        snprintf(path, sizeof path, "%s.outside-fifo", trigger);
        if (open(path, O_RDONLY | O_NONBLOCK) < 0) { perror(path); return 2; }
    } else if (strcmp(mode, "mlock") == 0 || strcmp(mode, "mseal") == 0) {
        char *p = mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) { perror("mmap"); return 2; }
        p[0] = 1;
        int r = strcmp(mode, "mlock") == 0 ? mlock(p, 65536) : (int)syscall(462 /* mseal */, p, 65536, 0);
        if (r != 0) { perror(mode); return 2; }
    }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    if (ctx) {
        struct io_event ev;
        if (write(pipefd[1], "x", 1) != 1 || syscall(SYS_io_getevents, ctx, 1L, 1L, &ev, NULL) != 1) { perror("aio poll"); return 2; }
    }
    printf("done\n");
    return 0;
}

/* Regular files it holds open, beside TRIGGER, which the test changes between the kill and the
   restore (the run "went on"): .scratch (read-write, at offset 5000) it rewrites shorter, .input
   (read-only, mode 0640, read up to 3000) it deletes, .log (O_APPEND) it appends to, .same
   (read-only) it leaves alone. After the restore each holds what it held at the checkpoint, its
   descriptor is on the file at its path at the same offset, .input is back with its mode, the log
   appends after the checkpoint's end, and .same was not touched (its mtime). */
static void pattern(char *p, size_t n, int seed) { for (size_t i = 0; i < n; i++) p[i] = (char)(seed * 7 + i * 13 + i / 4096); }

static int check_file(int fd, const char *path, size_t size, int seed, off_t offset, const char *what) {
    struct stat a, b;
    if (fstat(fd, &a) != 0 || stat(path, &b) != 0) { fail("%s: %s is gone", what, path); return 1; }
    if (a.st_ino != b.st_ino || a.st_dev != b.st_dev) fail("%s: its descriptor is not on the file at %s", what, path);
    if ((size_t)a.st_size != size) fail("%s: %ld bytes, not %zu", what, (long)a.st_size, size);
    if (lseek(fd, 0, SEEK_CUR) != offset) fail("%s: at offset %ld, not %ld", what, (long)lseek(fd, 0, SEEK_CUR), (long)offset);
    if (seed >= 0) {
        char *want = malloc(size), *got = malloc(size);
        pattern(want, size, seed);
        if (pread(fd, got, size, 0) != (ssize_t)size || memcmp(want, got, size) != 0) fail("%s: its content differs", what);
        free(want);
        free(got);
    }
    return 0;
}

static int open_files(const char *trigger) {
    char scratch[4096], input[4096], logp[4096], same[4096];
    snprintf(scratch, sizeof scratch, "%s.scratch", trigger);
    snprintf(input, sizeof input, "%s.input", trigger);
    snprintf(logp, sizeof logp, "%s.log", trigger);
    snprintf(same, sizeof same, "%s.same", trigger);
    enum { SCRATCH = 3 * 4096 + 100, INPUT = 10000, SAME = 5000 };
    static char buf[SCRATCH + INPUT];
    int w = open(scratch, O_RDWR | O_CREAT | O_TRUNC, 0600);
    pattern(buf, SCRATCH, 1);
    if (w < 0 || write(w, buf, SCRATCH) != SCRATCH || lseek(w, 5000, SEEK_SET) != 5000) { perror(scratch); return 2; }
    int c = open(input, O_WRONLY | O_CREAT | O_TRUNC, 0640);
    pattern(buf, INPUT, 2);
    if (c < 0 || fchmod(c, 0640) != 0 || write(c, buf, INPUT) != INPUT) { perror(input); return 2; }
    close(c);
    int r = open(input, O_RDONLY);
    if (r < 0 || read(r, buf, 3000) != 3000) { perror(input); return 2; }
    int l = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (l < 0 || write(l, "line 1\n", 7) != 7 || write(l, "line 2\n", 7) != 7) { perror(logp); return 2; }
    c = open(same, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pattern(buf, SAME, 3);
    if (c < 0 || write(c, buf, SAME) != SAME) { perror(same); return 2; }
    close(c);
    int s = open(same, O_RDONLY);
    struct stat before;
    if (s < 0 || fstat(s, &before) != 0) { perror(same); return 2; }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    check_file(w, scratch, SCRATCH, 1, 5000, "the read-write file");
    check_file(r, input, INPUT, 2, 3000, "the read-only file");
    struct stat st;
    if (stat(input, &st) == 0 && (st.st_mode & 07777) != 0640) fail("the read-only file has mode 0%o, not 0640", st.st_mode & 07777);
    check_file(s, same, SAME, 3, 0, "the untouched file");
    struct stat after;
    if (fstat(s, &after) == 0 && (after.st_mtim.tv_sec != before.st_mtim.tv_sec || after.st_mtim.tv_nsec != before.st_mtim.tv_nsec))
        fail("the untouched file was written (its mtime moved)");
    check_file(l, logp, 14, -1, 14, "the log");
    char text[64] = "";
    int lr = open(logp, O_RDONLY);
    if (write(l, "line 3\n", 7) != 7 || lr < 0 || read(lr, text, sizeof text - 1) != 21 || strcmp(text, "line 1\nline 2\nline 3\n") != 0)
        fail("the log holds \"%s\" after one more line", text);
    if (read(r, buf, 100) != 100) fail("the read-only file cannot be read on");
    else {
        char want[3100];
        pattern(want, sizeof want, 2);
        if (memcmp(buf, want + 3000, 100) != 0) fail("the read-only file reads on with other bytes");
    }
    return 0;
}

/* The "tfd N events E data D" triples of an epoll set's fdinfo, one per line by fd, into out
   (fdinfo lists them in the kernel's order, by file address). */
static int by_fd(const void *a, const void *b) { return atoi(*(char *const *)a) - atoi(*(char *const *)b); }
static void epoll_entries(int epfd, char *out, size_t cap) {
    char path[64], line[512], *lines[64];
    int n = 0;
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", epfd);
    FILE *f = fopen(path, "r");
    out[0] = 0;
    if (!f) return;
    while (n < 64 && fgets(line, sizeof line, f)) {
        int tfd;
        unsigned events;
        unsigned long long data;
        if (sscanf(line, "tfd: %d events: %x data: %llx", &tfd, &events, &data) == 3) {
            lines[n] = malloc(64);
            snprintf(lines[n++], 64, "%d %x %llx\n", tfd, events, data);
        }
    }
    fclose(f);
    qsort(lines, n, sizeof *lines, by_fd);
    for (int i = 0; i < n; i++) {
        strncat(out, lines[i], cap - strlen(out) - 1);
        free(lines[i]);
    }
}

/* Event descriptors: a semaphore eventfd holding 5 (non-blocking) and a dup of it, an eventfd
   holding more than 32 bits, a periodic timerfd, a one-shot timerfd that fired unread, a disarmed
   one, a signalfd for SIGUSR2 and SIGRTMIN+1 with SIGUSR2 pending, an epoll set watching them
   (edge-triggered, one-shot that fired, level) and a pipe with data, and an epoll set watching
   that set. After the restore: counters, settings, unread expirations, the mask and the pending
   signal, each set's entries (events and data) and what a level-triggered wait reports. */
static int events(const char *trigger) {
    int sem = eventfd(5, EFD_NONBLOCK | EFD_SEMAPHORE), big = eventfd(0, EFD_CLOEXEC);
    uint64_t v = 0x100000003ULL;
    if (sem < 0 || big < 0 || write(big, &v, 8) != 8) { perror("eventfd"); return 2; }
    int semdup = dup(sem);
    int periodic = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK), once = timerfd_create(CLOCK_BOOTTIME, 0), idle = timerfd_create(CLOCK_REALTIME, TFD_CLOEXEC);
    struct itimerspec every = {{2, 500000000}, {100, 0}}, soon = {{0, 0}, {0, 1000000}};
    if (periodic < 0 || once < 0 || idle < 0 || timerfd_settime(periodic, 0, &every, NULL) != 0 || timerfd_settime(once, 0, &soon, NULL) != 0) {
        perror("timerfd");
        return 2;
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGUSR2);
    sigaddset(&mask, SIGRTMIN + 1);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK);
    if (sfd < 0) { perror("signalfd"); return 2; }
    kill(getpid(), SIGUSR2);
    int pipefd[2];
    if (pipe(pipefd) != 0 || write(pipefd[1], "xyz", 3) != 3) { perror("pipe"); return 2; }
    int ep = epoll_create1(EPOLL_CLOEXEC), outer = epoll_create1(0);
    struct epoll_event e1 = {EPOLLIN | EPOLLET, {.u64 = 0x1122334455667788ULL}}, e2 = {EPOLLIN | EPOLLONESHOT, {.u64 = 42}},
                       e3 = {EPOLLIN, {.u64 = 7}}, e4 = {EPOLLOUT, {.u64 = 8}}, e5 = {EPOLLIN, {.u64 = 9}}, e6 = {EPOLLIN, {.u64 = 10}};
    if (ep < 0 || outer < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, sem, &e1) || epoll_ctl(ep, EPOLL_CTL_ADD, once, &e2) ||
        epoll_ctl(ep, EPOLL_CTL_ADD, pipefd[0], &e3) || epoll_ctl(ep, EPOLL_CTL_ADD, pipefd[1], &e4) ||
        epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &e5) || epoll_ctl(outer, EPOLL_CTL_ADD, ep, &e6)) {
        perror("epoll_ctl");
        return 2;
    }
    usleep(20000);  /* the one-shot timer fires */
    struct epoll_event got[8];
    int n = epoll_wait(ep, got, 8, 1000);  /* takes the edge and the one-shot: both quiet from now */
    if (n < 1) { fprintf(stderr, "epoll_wait: %d\n", n); return 2; }
    char before[1024], before_outer[256];
    epoll_entries(ep, before, sizeof before);
    epoll_entries(outer, before_outer, sizeof before_outer);
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);

    char after[1024], after_outer[256];
    epoll_entries(ep, after, sizeof after);
    epoll_entries(outer, after_outer, sizeof after_outer);
    if (strcmp(before, after) != 0) fail("the epoll set's entries are\n%s, not\n%s", after, before);
    if (strcmp(before_outer, after_outer) != 0) fail("the outer epoll set's entries are %s, not %s", after_outer, before_outer);
    /* Level-triggered: the pipe's read end (data), its write end, the signalfd (SIGUSR2 pending). */
    n = epoll_wait(ep, got, 8, 0);
    int seen7 = 0, seen8 = 0, seen9 = 0, seen42 = 0;
    for (int i = 0; i < n; i++) {
        if (got[i].data.u64 == 7) seen7 = 1;
        if (got[i].data.u64 == 8) seen8 = 1;
        if (got[i].data.u64 == 9) seen9 = 1;
        if (got[i].data.u64 == 42) seen42 = 1;
    }
    if (!seen7 || !seen8 || !seen9) fail("a level-triggered wait misses the pipe (%d, %d) or the signalfd (%d)", seen7, seen8, seen9);
    if (seen42) fail("the one-shot entry that fired reports again");
    if (epoll_wait(outer, got, 8, 0) != 1 || got[0].data.u64 != 10) fail("the outer set does not report the inner one");
    int fl = fcntl(sem, F_GETFL);
    if (!(fl & O_NONBLOCK)) fail("the semaphore eventfd lost O_NONBLOCK");
    if (!(fcntl(big, F_GETFD) & FD_CLOEXEC) || (fcntl(sem, F_GETFD) & FD_CLOEXEC)) fail("an eventfd's close-on-exec flag differs");
    uint64_t one = 1;
    if (write(semdup, &one, 8) != 8) fail("the dup of the eventfd cannot be written");
    int reads = 0;
    while (read(sem, &v, 8) == 8) { if (v != 1) fail("a semaphore read gives %llu", (unsigned long long)v); if (++reads > 10) break; }
    if (reads != 6) fail("the semaphore eventfd (5, plus 1 through its dup) gave %d reads, not 6", reads);
    if (read(big, &v, 8) != 8 || v != 0x100000003ULL) fail("the large eventfd holds %llx", (unsigned long long)v);
    struct itimerspec now;
    if (timerfd_gettime(periodic, &now) != 0 || now.it_interval.tv_sec != 2 || now.it_interval.tv_nsec != 500000000 ||
        now.it_value.tv_sec > 100 || now.it_value.tv_sec < 50)
        fail("the periodic timer is at %ld.%09ld every %ld.%09ld", (long)now.it_value.tv_sec, now.it_value.tv_nsec,
             (long)now.it_interval.tv_sec, now.it_interval.tv_nsec);
    if (!(fcntl(periodic, F_GETFL) & O_NONBLOCK)) fail("the periodic timer lost TFD_NONBLOCK");
    uint64_t ticks = 0;
    if (read(once, &ticks, 8) != 8 || ticks != 1) fail("the fired one-shot timer reads %llu expirations, not 1", (unsigned long long)ticks);
    if (timerfd_gettime(once, &now) != 0 || now.it_value.tv_sec || now.it_value.tv_nsec) fail("the one-shot timer is armed again");
    if (timerfd_gettime(idle, &now) != 0 || now.it_value.tv_sec || now.it_value.tv_nsec) fail("the disarmed timer is armed");
    struct signalfd_siginfo si;
    if (read(sfd, &si, sizeof si) != sizeof si || si.ssi_signo != SIGUSR2) fail("the signalfd does not give the pending SIGUSR2");
    if (read(sfd, &si, sizeof si) >= 0 || errno != EAGAIN) fail("the signalfd gives a second signal or blocks");
    char mbuf[1024];
    snprintf(mbuf, sizeof mbuf, "/proc/self/fdinfo/%d", sfd);
    FILE *f = fopen(mbuf, "r");
    unsigned long long m = 0;
    while (f && fgets(mbuf, sizeof mbuf, f)) sscanf(mbuf, "sigmask: %llx", &m);
    if (f) fclose(f);
    if (m != ((1ULL << (SIGUSR2 - 1)) | (1ULL << (SIGRTMIN + 1 - 1)))) fail("the signalfd's mask is %llx", m);
    char data[8];
    if (read(pipefd[0], data, 8) != 3 || memcmp(data, "xyz", 3) != 0) fail("the watched pipe lost its data");
    return 0;
}

/* Reads everything queued on fd, not waiting, into buf: returns how many bytes (-1 on error but EAGAIN). */
static ssize_t drain(int fd, char *buf, size_t cap) {
    size_t got = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + got, cap - got, MSG_DONTWAIT);
        if (n > 0) { got += (size_t)n; continue; }
        if (n == 0 || errno == EAGAIN) return (ssize_t)got;
        return -1;
    }
}

/* UNIX sockets: a stream pair holding data each way (70000 bytes one way) with one end shut for
   writing; a datagram pair and a seqpacket pair holding messages; a small SO_SNDBUF; a
   non-blocking end; listening sockets on a path and on an abstract name; a stream pair shared
   with a child, which answers over it once told to. After the restore: every byte and message
   boundary, the end of stream where it was, the buffer size, the flags, the names, connections
   accepted, and the child's answer. */
static int unix_sockets(const char *trigger) {
    int st[2], dg[2], sp[2], ch[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK, 0, sp) || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ch)) {
        perror("socketpair");
        return 2;
    }
    static char big[70000], buf[80000];
    pattern(big, sizeof big, 4);
    int small = 16384;
    if (setsockopt(dg[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small)) { perror("SO_SNDBUF"); return 2; }
    if (write(st[0], "hello", 5) != 5 || write(st[1], big, sizeof big) != (ssize_t)sizeof big || shutdown(st[1], SHUT_WR)) { perror("stream"); return 2; }
    if (send(dg[0], "one", 3, 0) != 3 || send(dg[0], "two2", 4, 0) != 4 || send(dg[1], "back", 4, 0) != 4) { perror("dgram"); return 2; }
    if (send(sp[1], "first", 5, 0) != 5 || send(sp[1], "second!", 7, 0) != 7) { perror("seqpacket"); return 2; }
    char path[4096];
    snprintf(path, sizeof path, "%s.sock", trigger);
    unlink(path);
    int lp = socket(AF_UNIX, SOCK_STREAM, 0), la = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    struct sockaddr_un ap = {AF_UNIX, {0}}, aa = {AF_UNIX, {0}};
    if (strlen(path) >= sizeof ap.sun_path) { fprintf(stderr, "%s: too long for a socket's name\n", path); return 2; }
    memcpy(ap.sun_path, path, strlen(path) + 1);
    int alen = snprintf(aa.sun_path + 1, sizeof aa.sun_path - 1, "legato-statecheck-%d", getpid()) + 1;
    if (lp < 0 || la < 0 || bind(lp, (struct sockaddr *)&ap, sizeof ap) || listen(lp, 7) ||
        bind(la, (struct sockaddr *)&aa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + alen)) || listen(la, 3)) {
        perror("listen");
        return 2;
    }
    int gone[2];  /* a stream pair whose other end sent "bye" and closed */
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, gone) || write(gone[1], "bye", 3) != 3 || close(gone[1])) { perror("closed peer"); return 2; }
    pid_t child = fork();
    if (child == 0) {
        close(ch[0]);
        char go[8];
        if (read(ch[1], go, 2) != 2 || memcmp(go, "go", 2) != 0) _exit(3);
        _exit(write(ch[1], "ack", 3) == 3 ? 0 : 4);
    }
    close(ch[1]);
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);

    ssize_t n = drain(st[0], buf, sizeof buf);
    if (n != (ssize_t)sizeof big || memcmp(buf, big, sizeof big) != 0) fail("the stream end got %zd bytes back, not its 70000", n);
    if (recv(st[0], buf, 1, MSG_DONTWAIT) != 0) fail("the stream end does not see the end of stream after its data");
    if (recv(st[1], buf, 16, MSG_DONTWAIT) != 5 || memcmp(buf, "hello", 5) != 0) fail("the other stream end lost its 5 bytes");
    if (send(st[1], "x", 1, MSG_NOSIGNAL) >= 0 || errno != EPIPE) fail("the end shut for writing can write");
    const char *want[] = {"one", "two2"};
    for (int i = 0; i < 2; i++) {
        n = recv(dg[1], buf, sizeof buf, MSG_DONTWAIT);
        if (n != (ssize_t)strlen(want[i]) || memcmp(buf, want[i], (size_t)n) != 0) fail("datagram %d is %zd bytes, not \"%s\"", i, n, want[i]);
    }
    if (recv(dg[1], buf, sizeof buf, MSG_DONTWAIT) >= 0) fail("a third datagram came");
    if (recv(dg[0], buf, sizeof buf, MSG_DONTWAIT) != 4 || memcmp(buf, "back", 4) != 0) fail("the datagram sent back is lost");
    int v = 0;
    socklen_t vl = sizeof v;
    if (getsockopt(dg[0], SOL_SOCKET, SO_SNDBUF, &v, &vl) || v != 2 * small) fail("SO_SNDBUF is %d, not %d", v, 2 * small);
    if (!(fcntl(sp[0], F_GETFL) & O_NONBLOCK)) fail("the seqpacket end lost O_NONBLOCK");
    if (recv(sp[0], buf, sizeof buf, 0) != 5 || recv(sp[0], buf + 5, sizeof buf, 0) != 7 || memcmp(buf, "firstsecond!", 12) != 0)
        fail("the seqpacket messages differ");
    if (recv(sp[0], buf, sizeof buf, 0) >= 0 || errno != EAGAIN) fail("the non-blocking seqpacket end blocks or has more");
    if (!(fcntl(ch[0], F_GETFD) & FD_CLOEXEC)) fail("the child's pair lost close-on-exec");
    struct sockaddr_un got;
    socklen_t gl = sizeof got;
    if (getsockname(lp, (struct sockaddr *)&got, &gl) || strcmp(got.sun_path, path) != 0) fail("the listener is not on %s", path);
    int c1 = socket(AF_UNIX, SOCK_STREAM, 0), c2 = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    if (connect(c1, (struct sockaddr *)&ap, sizeof ap) || connect(c2, (struct sockaddr *)&aa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + alen)))
        fail("cannot connect to the listeners: %s", strerror(errno));
    int s1 = accept(lp, NULL, NULL), s2 = accept(la, NULL, NULL);
    if (s1 < 0 || s2 < 0 || write(c1, "hi", 2) != 2 || read(s1, buf, 2) != 2) fail("the listeners do not accept");
    if (recv(gone[0], buf, 8, MSG_DONTWAIT) != 3 || memcmp(buf, "bye", 3) != 0) fail("the socket whose peer closed lost its \"bye\"");
    if (recv(gone[0], buf, 8, MSG_DONTWAIT) != 0) fail("the socket whose peer closed does not see the end of stream");
    if (send(gone[0], "x", 1, MSG_NOSIGNAL) >= 0 || errno != EPIPE) fail("the socket whose peer closed can still send");
    if (write(ch[0], "go", 2) != 2 || read(ch[0], buf, 3) != 3 || memcmp(buf, "ack", 3) != 0) fail("the child does not answer over its pair");
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("the child ended with status %x", status);
    unlink(path);
    return 0;
}

static int int_option(int fd, int level, int name) {
    int v = -1;
    socklen_t l = sizeof v;
    getsockopt(fd, level, name, &v, &l);
    return v;
}

/* TCP and UDP sockets: an IPv4 listener (SO_REUSEADDR, TCP_NODELAY, non-blocking, backlog 5), an
   IPv6 one (IPV6_V6ONLY, SO_REUSEPORT, TCP_DEFER_ACCEPT), a TCP socket not connected (keepalive
   settings, SO_SNDBUF), a UDP socket bound and connected (IP_TOS, SO_RCVBUF), one unbound. After the restore: every
   address, peer, option and flag, and both listeners accept connections. */
static int inet_sockets(const char *trigger) {
    int l4 = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), l6 = socket(AF_INET6, SOCK_STREAM, 0), t = socket(AF_INET, SOCK_STREAM, 0);
    int u = socket(AF_INET, SOCK_DGRAM, 0), u0 = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int one = 1, three = 3, idle = 77, tos = 0x10, sndbuf = 65536, rcvbuf = 32768;
    struct sockaddr_in a4 = {AF_INET, 0, {htonl(INADDR_LOOPBACK)}, {0}}, discard = {AF_INET, htons(9), {htonl(INADDR_LOOPBACK)}, {0}};
    struct sockaddr_in6 a6 = {AF_INET6, 0, 0, IN6ADDR_LOOPBACK_INIT, 0};
    if (l4 < 0 || l6 < 0 || t < 0 || u < 0 || u0 < 0 ||
        setsockopt(l4, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) || setsockopt(l4, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) ||
        bind(l4, (struct sockaddr *)&a4, sizeof a4) || listen(l4, 5) ||
        setsockopt(l6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one) || setsockopt(l6, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) ||
        setsockopt(l6, IPPROTO_TCP, TCP_DEFER_ACCEPT, &three, sizeof three) || bind(l6, (struct sockaddr *)&a6, sizeof a6) || listen(l6, 9) ||
        setsockopt(t, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) || setsockopt(t, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) ||
        setsockopt(t, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) || setsockopt(u, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf) ||
        setsockopt(u, IPPROTO_IP, IP_TOS, &tos, sizeof tos) || bind(u, (struct sockaddr *)&a4, sizeof a4) ||
        connect(u, (struct sockaddr *)&discard, sizeof discard)) {
        perror("inet");
        return 2;
    }
    struct sockaddr_storage n4, n6, nu, pu, got;
    socklen_t len = sizeof n4;
    getsockname(l4, (struct sockaddr *)&n4, &len);
    len = sizeof n6;
    getsockname(l6, (struct sockaddr *)&n6, &len);
    len = sizeof nu;
    getsockname(u, (struct sockaddr *)&nu, &len);
    len = sizeof pu;
    getpeername(u, (struct sockaddr *)&pu, &len);
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);

    len = sizeof got;
    if (getsockname(l4, (struct sockaddr *)&got, &len) || memcmp(&got, &n4, sizeof(struct sockaddr_in))) fail("the IPv4 listener moved");
    len = sizeof got;
    if (getsockname(l6, (struct sockaddr *)&got, &len) || memcmp(&got, &n6, sizeof(struct sockaddr_in6))) fail("the IPv6 listener moved");
    len = sizeof got;
    if (getsockname(u, (struct sockaddr *)&got, &len) || memcmp(&got, &nu, sizeof(struct sockaddr_in))) fail("the UDP socket's address differs");
    len = sizeof got;
    if (getpeername(u, (struct sockaddr *)&got, &len) || memcmp(&got, &pu, sizeof(struct sockaddr_in))) fail("the UDP socket's peer differs");
    if (int_option(l4, SOL_SOCKET, SO_ACCEPTCONN) != 1 || int_option(l6, SOL_SOCKET, SO_ACCEPTCONN) != 1) fail("a listener does not listen");
    if (int_option(l4, SOL_SOCKET, SO_REUSEADDR) != 1 || int_option(l4, IPPROTO_TCP, TCP_NODELAY) != 1) fail("the IPv4 listener's options differ");
    if (!(fcntl(l4, F_GETFL) & O_NONBLOCK)) fail("the IPv4 listener lost O_NONBLOCK");
    if (int_option(l6, IPPROTO_IPV6, IPV6_V6ONLY) != 1 || int_option(l6, SOL_SOCKET, SO_REUSEPORT) != 1 ||
        int_option(l6, IPPROTO_TCP, TCP_DEFER_ACCEPT) != 3)
        fail("the IPv6 listener's options differ (v6only %d, reuseport %d, defer %d)", int_option(l6, IPPROTO_IPV6, IPV6_V6ONLY),
             int_option(l6, SOL_SOCKET, SO_REUSEPORT), int_option(l6, IPPROTO_TCP, TCP_DEFER_ACCEPT));
    if (int_option(t, SOL_SOCKET, SO_KEEPALIVE) != 1 || int_option(t, IPPROTO_TCP, TCP_KEEPIDLE) != 77) fail("the TCP socket's keepalive differs");
    if (int_option(u, IPPROTO_IP, IP_TOS) != 0x10) fail("the UDP socket's IP_TOS is %d", int_option(u, IPPROTO_IP, IP_TOS));
    /* Buffers set by the program come back set (and locked: SO_BUF_LOCK); the others the kernel's to tune. */
    if (int_option(t, SOL_SOCKET, SO_SNDBUF) != 2 * sndbuf || int_option(t, SOL_SOCKET, 72 /* SO_BUF_LOCK */) != 1) fail("the TCP socket's SO_SNDBUF is %d (lock %d)", int_option(t, SOL_SOCKET, SO_SNDBUF), int_option(t, SOL_SOCKET, 72));
    if (int_option(u, SOL_SOCKET, SO_RCVBUF) != 2 * rcvbuf || int_option(u, SOL_SOCKET, 72) != 2) fail("the UDP socket's SO_RCVBUF is %d (lock %d)", int_option(u, SOL_SOCKET, SO_RCVBUF), int_option(u, SOL_SOCKET, 72));
    if (int_option(l4, SOL_SOCKET, 72) != 0) fail("the listener's buffers were locked");
    if (int_option(u0, SOL_SOCKET, SO_TYPE) != SOCK_DGRAM || int_option(u0, SOL_SOCKET, SO_DOMAIN) != AF_INET6 || !(fcntl(u0, F_GETFD) & FD_CLOEXEC))
        fail("the unbound UDP socket differs");
    int c4 = socket(AF_INET, SOCK_STREAM, 0), c6 = socket(AF_INET6, SOCK_STREAM, 0);
    if (connect(c4, (struct sockaddr *)&n4, sizeof(struct sockaddr_in)) || connect(c6, (struct sockaddr *)&n6, sizeof(struct sockaddr_in6)))
        fail("cannot connect to the listeners: %s", strerror(errno));
    if (write(c6, "x", 1) != 1) fail("cannot write to the IPv6 listener's connection");
    struct pollfd p = {l4, POLLIN, 0};
    poll(&p, 1, 2000);
    if (accept(l4, NULL, NULL) < 0 || accept(l6, NULL, NULL) < 0) fail("a listener does not accept: %s", strerror(errno));
    if (send(u, "ping", 4, 0) != 4) fail("the connected UDP socket cannot send");
    return 0;
}

/* Established TCP connections over loopback, both ends its own: a request the server has not read,
   200000 bytes the server sent that the client has not read (some in the client's receive queue,
   the rest in the server's send queue), TCP_NODELAY on the client, the server's end non-blocking,
   and an IPv6 connection that is idle. After the restore: both ends' addresses, every byte in
   order, both connections carry more data each way, and close cleanly. */
static int tcp_connections(const char *trigger) {
    int l = socket(AF_INET, SOCK_STREAM, 0), l6 = socket(AF_INET6, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {AF_INET, 0, {htonl(INADDR_LOOPBACK)}, {0}};
    struct sockaddr_in6 a6 = {AF_INET6, 0, 0, IN6ADDR_LOOPBACK_INIT, 0};
    socklen_t len = sizeof a;
    if (l < 0 || l6 < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4) || getsockname(l, (struct sockaddr *)&a, &len) ||
        bind(l6, (struct sockaddr *)&a6, sizeof a6) || listen(l6, 4) || (len = sizeof a6, getsockname(l6, (struct sockaddr *)&a6, &len))) {
        perror("listen");
        return 2;
    }
    int c = socket(AF_INET, SOCK_STREAM, 0), c6 = socket(AF_INET6, SOCK_STREAM, 0);
    if (c < 0 || c6 < 0 || setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) || connect(c, (struct sockaddr *)&a, sizeof a) ||
        connect(c6, (struct sockaddr *)&a6, sizeof a6)) {
        perror("connect");
        return 2;
    }
    int s = accept4(l, NULL, NULL, SOCK_NONBLOCK), s6 = accept(l6, NULL, NULL);
    static char big[200000], got[200000];
    pattern(big, sizeof big, 5);
    if (s < 0 || s6 < 0 || write(c, "request-1", 9) != 9) { perror("accept"); return 2; }
    size_t sent = 0;
    while (sent < sizeof big) {
        ssize_t n = send(s, big + sent, sizeof big - sent, MSG_DONTWAIT);
        if (n <= 0) break;
        sent += (size_t)n;
    }
    if (sent < 50000) { fprintf(stderr, "only %zu bytes went into the connection\n", sent); return 2; }
    usleep(50000);  /* what can be sent is sent: the rest waits in the server's send queue */
    struct sockaddr_storage cl, cp, sl, sp, x;
    socklen_t xl;
    len = sizeof cl; getsockname(c, (struct sockaddr *)&cl, &len);
    len = sizeof cp; getpeername(c, (struct sockaddr *)&cp, &len);
    len = sizeof sl; getsockname(s, (struct sockaddr *)&sl, &len);
    len = sizeof sp; getpeername(s, (struct sockaddr *)&sp, &len);
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);

    xl = sizeof x;
    if (getsockname(c, (struct sockaddr *)&x, &xl) || memcmp(&x, &cl, sizeof(struct sockaddr_in))) fail("the client's address differs");
    xl = sizeof x;
    if (getpeername(c, (struct sockaddr *)&x, &xl) || memcmp(&x, &cp, sizeof(struct sockaddr_in))) fail("the client's peer differs");
    xl = sizeof x;
    if (getsockname(s, (struct sockaddr *)&x, &xl) || memcmp(&x, &sl, sizeof(struct sockaddr_in))) fail("the server end's address differs");
    xl = sizeof x;
    if (getpeername(s, (struct sockaddr *)&x, &xl) || memcmp(&x, &sp, sizeof(struct sockaddr_in))) fail("the server end's peer differs");
    if (int_option(c, IPPROTO_TCP, TCP_NODELAY) != 1) fail("the client lost TCP_NODELAY");
    if (!(fcntl(s, F_GETFL) & O_NONBLOCK)) fail("the server end lost O_NONBLOCK");
    char req[16] = "";
    struct pollfd p = {s, POLLIN, 0};
    poll(&p, 1, 2000);
    if (recv(s, req, sizeof req, 0) != 9 || memcmp(req, "request-1", 9) != 0) fail("the server end lost the request (%s)", req);
    if (sent < sizeof big) {  /* the rest of it, now */
        int flags = fcntl(s, F_GETFL);
        fcntl(s, F_SETFL, flags & ~O_NONBLOCK);
        if (write(s, big + sent, sizeof big - sent) != (ssize_t)(sizeof big - sent)) fail("the server end cannot send the rest");
        fcntl(s, F_SETFL, flags);
    }
    size_t have = 0;
    while (have < sizeof big) {
        ssize_t n = recv(c, got + have, sizeof got - have, 0);
        if (n <= 0) { fail("the client's stream ended after %zu bytes: %s", have, n < 0 ? strerror(errno) : "EOF"); break; }
        have += (size_t)n;
    }
    if (have == sizeof big && memcmp(got, big, sizeof big) != 0) fail("the client got the 200000 bytes out of order or changed");
    if (write(c, "request-2", 9) != 9) fail("the client cannot write on");
    poll(&p, 1, 2000);
    if (recv(s, req, sizeof req, 0) != 9 || memcmp(req, "request-2", 9) != 0) fail("the second request did not arrive");
    if (write(s6, "six", 3) != 3 || read(c6, req, 3) != 3 || memcmp(req, "six", 3) != 0) fail("the IPv6 connection does not carry data");
    close(c);
    p.revents = 0;
    poll(&p, 1, 2000);
    if (recv(s, req, sizeof req, 0) != 0) fail("the server end does not see the client close");
    return 0;
}

/* An established TCP connection over loopback, both ends its own, with a request not read; to be
   restored with --tcp-close: both ends then fail (reset or aborted) where a plain run's would go
   on, and the listener accepts a new connection. Prints "PASS tcp-closed" only if they failed
   (a plain run prints "FAIL": the connection was not closed). */
static int tcp_closed(const char *trigger) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {AF_INET, 0, {htonl(INADDR_LOOPBACK)}, {0}};
    socklen_t len = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 4) || getsockname(l, (struct sockaddr *)&a, &len)) { perror("listen"); return 2; }
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a)) { perror("connect"); return 2; }
    int s = accept(l, NULL, NULL);
    if (s < 0 || write(c, "request", 7) != 7) { perror("accept"); return 2; }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    char buf[16];
    errno = 0;
    ssize_t n = recv(c, buf, sizeof buf, MSG_DONTWAIT);
    if (n >= 0 || (errno != ECONNABORTED && errno != ECONNRESET)) fail("the client end was not closed (recv %zd: %s)", n, strerror(errno));
    errno = 0;
    n = recv(s, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0 || (n < 0 && errno != ECONNABORTED && errno != ECONNRESET)) fail("the server end was not closed (recv %zd: %s)", n, strerror(errno));
    int c2 = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c2, (struct sockaddr *)&a, sizeof a) || accept(l, NULL, NULL) < 0) fail("the listener does not accept after the restore");
    return 0;
}

/* The names getdents64 gives from fd's offset on, one per line, into out. */
static void dir_names(int fd, char *out, size_t cap) {
    char buf[8192];
    out[0] = 0;
    for (;;) {
        long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
        if (n <= 0) return;
        for (long at = 0; at < n;) {
            struct { unsigned long long ino; long long off; unsigned short reclen; unsigned char type; char name[]; } *d = (void *)(buf + at);
            strncat(out, d->name, cap - strlen(out) - 2);
            strcat(out, "\n");
            at += d->reclen;
        }
    }
}

/* Directories and O_PATH descriptors: a directory read part way (getdents64) at its offset, an
   O_PATH descriptor of a file and one of a directory. After the restore: the directory reads on
   with the entries a plain run would get, the O_PATH ones keep O_PATH and lead where they led. */
static int directories(const char *trigger) {
    char dir[4096], file[4200];
    snprintf(dir, sizeof dir, "%s.dir", trigger);
    mkdir(dir, 0755);
    for (int i = 0; i < 40; i++) {
        snprintf(file, sizeof file, "%s/entry-%02d", dir, i);
        int f = open(file, O_WRONLY | O_CREAT, 0644);
        if (f < 0) { perror(file); return 2; }
        close(f);
    }
    int d = open(dir, O_RDONLY | O_DIRECTORY);
    char small[160];
    if (d < 0 || syscall(SYS_getdents64, d, small, sizeof small) <= 0) { perror("getdents64"); return 2; }
    off_t at = lseek(d, 0, SEEK_CUR);
    int twin = open(dir, O_RDONLY | O_DIRECTORY);
    static char rest[8192], got[8192];
    if (twin < 0 || lseek(twin, at, SEEK_SET) != at) { perror("twin"); return 2; }
    dir_names(twin, rest, sizeof rest);
    close(twin);
    snprintf(file, sizeof file, "%s/entry-07", dir);
    int pf = open(file, O_PATH), pd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (pf < 0 || pd < 0) { perror("O_PATH"); return 2; }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    if (lseek(d, 0, SEEK_CUR) != at) fail("the directory is at offset %ld, not %ld", (long)lseek(d, 0, SEEK_CUR), (long)at);
    dir_names(d, got, sizeof got);
    if (strcmp(got, rest) != 0) fail("the directory reads on with other entries");
    if (!(fcntl(pf, F_GETFL) & O_PATH) || !(fcntl(pd, F_GETFL) & O_PATH)) fail("an O_PATH descriptor lost O_PATH");
    if (!(fcntl(pd, F_GETFD) & FD_CLOEXEC) || (fcntl(pf, F_GETFD) & FD_CLOEXEC)) fail("an O_PATH descriptor's close-on-exec differs");
    struct stat st, want;
    if (fstat(pf, &st) || stat(file, &want) || st.st_ino != want.st_ino) fail("the O_PATH file descriptor leads elsewhere");
    int in = openat(pd, "entry-03", O_RDONLY);
    if (in < 0) fail("openat through the O_PATH directory fails: %s", strerror(errno));
    return 0;
}


/* memfds: one held by descriptors only (its content, a second description of it at its own
   offset, seals SHRINK|GROW), one both mapped shared and held (one object: a write through the
   descriptor shows in the mapping), one made without MFD_ALLOW_SEALING (sealed shut). After the
   restore each reads as set, at its offset, with its flags, seals and name. */
static int memfds(const char *trigger) {
    (void)trigger;
    enum { HELD = 20000 };
    int held = memfd_create("statecheck-held", MFD_ALLOW_SEALING);
    int mapped = memfd_create("statecheck-mapped", MFD_CLOEXEC);
    int plain = memfd_create("statecheck-plain", 0);
    if (held < 0 || mapped < 0 || plain < 0) { perror("memfd_create"); return 2; }
    static char buf[HELD], got[HELD];
    pattern(buf, HELD, 3);
    if (write(held, buf, HELD) != HELD || lseek(held, 7000, SEEK_SET) != 7000) { perror("write held"); return 2; }
    if (fcntl(held, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) { perror("F_ADD_SEALS"); return 2; }
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", held);
    int twin = open(self, O_RDONLY);
    if (twin < 0 || lseek(twin, 123, SEEK_SET) != 123) { perror("twin"); return 2; }
    if (ftruncate(mapped, 3 * 4096) != 0) { perror("ftruncate"); return 2; }
    char *map = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mapped, 0);
    if (map == MAP_FAILED) { perror("mmap"); return 2; }
    memset(map + 4096, 'm', 4096);
    if (lseek(mapped, 100, SEEK_SET) != 100 || write(plain, "plain", 5) != 5) { perror("mapped"); return 2; }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    char link[256];
    ssize_t n = readlink(self, link, sizeof link - 1);
    link[n > 0 ? n : 0] = 0;
    if (strcmp(link, "/memfd:statecheck-held (deleted)") != 0) fail("the held memfd is now %s", link);
    if (lseek(held, 0, SEEK_CUR) != 7000 || lseek(twin, 0, SEEK_CUR) != 123) fail("offsets are %ld and %ld, not 7000 and 123", (long)lseek(held, 0, SEEK_CUR), (long)lseek(twin, 0, SEEK_CUR));
    if (pread(held, got, HELD, 0) != HELD || memcmp(got, buf, HELD) != 0) fail("the held memfd's content differs");
    struct stat a, b;
    if (fstat(held, &a) || fstat(twin, &b) || a.st_ino != b.st_ino || a.st_size != HELD) fail("the two descriptions are not of one memfd of %d bytes", HELD);
    if (fcntl(held, F_GET_SEALS) != (F_SEAL_SHRINK | F_SEAL_GROW)) fail("the held memfd's seals are 0x%x", fcntl(held, F_GET_SEALS));
    if (ftruncate(held, 10) == 0) fail("a sealed memfd shrank");
    if ((fcntl(twin, F_GETFL) & O_ACCMODE) != O_RDONLY || (fcntl(held, F_GETFL) & O_ACCMODE) != O_RDWR) fail("access modes differ");
    if (fcntl(plain, F_GET_SEALS) != F_SEAL_SEAL) fail("the memfd made without sealing has seals 0x%x", fcntl(plain, F_GET_SEALS));
    if (!(fcntl(mapped, F_GETFD) & FD_CLOEXEC) || (fcntl(held, F_GETFD) & FD_CLOEXEC)) fail("close-on-exec differs");
    if (map[4096] != 'm' || map[0] != 0 || lseek(mapped, 0, SEEK_CUR) != 100) fail("the mapped memfd differs");
    if (pwrite(mapped, "w", 1, 2 * 4096) != 1 || map[2 * 4096] != 'w') fail("the mapping and the descriptor are no longer one memfd");
    char p[8] = {0};
    if (pread(plain, p, 5, 0) != 5 || strcmp(p, "plain") != 0) fail("the plain memfd holds '%s'", p);
    return 0;
}

/* Ghosts: a file unlinked while open (its content, two descriptions of it at their offsets, one
   O_APPEND) and a directory removed while open. After the restore: still unlinked (no links, the
   name says deleted), the content and offsets as set, a write through one description reads back
   through the other; the directory is one, empty and removed. */
static int ghosts(const char *trigger) {
    enum { SIZE = 50000 };
    char path[4096], dir[4096];
    snprintf(path, sizeof path, "%s.ghost", trigger);
    snprintf(dir, sizeof dir, "%s.ghostdir", trigger);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    int app = open(path, O_WRONLY | O_APPEND);
    if (fd < 0 || app < 0 || mkdir(dir, 0700) != 0) { perror(path); return 2; }
    static char buf[SIZE], got[SIZE];
    pattern(buf, SIZE, 5);
    if (write(fd, buf, SIZE) != SIZE || lseek(fd, 1234, SEEK_SET) != 1234) { perror("write"); return 2; }
    int d = open(dir, O_RDONLY | O_DIRECTORY);
    if (d < 0 || unlink(path) != 0 || rmdir(dir) != 0) { perror("unlink"); return 2; }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    char self[64], link[4200], want[4200];
    snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(self, link, sizeof link - 1);
    link[n > 0 ? n : 0] = 0;
    snprintf(want, sizeof want, "%s (deleted)", path);
    if (strcmp(link, want) != 0) fail("the ghost is now %s", link);
    struct stat st, st2;
    if (fstat(fd, &st) || st.st_nlink != 0 || st.st_size != SIZE || (st.st_mode & 0777) != 0600) fail("the ghost has %ld links, %ld bytes, mode 0%o", (long)st.st_nlink, (long)st.st_size, st.st_mode & 0777);
    if (lseek(fd, 0, SEEK_CUR) != 1234) fail("the ghost's offset is %ld", (long)lseek(fd, 0, SEEK_CUR));
    if (pread(fd, got, SIZE, 0) != SIZE || memcmp(got, buf, SIZE) != 0) fail("the ghost's content differs");
    if (!(fcntl(app, F_GETFL) & O_APPEND)) fail("the O_APPEND description lost it");
    if (write(app, "tail", 4) != 4 || pread(fd, got, 4, SIZE) != 4 || memcmp(got, "tail", 4) != 0) fail("the two descriptions are not of one file");
    if (fstat(d, &st) || !S_ISDIR(st.st_mode) || st.st_nlink != 0) fail("the removed directory has %ld links", (long)st.st_nlink);
    if (openat(d, "new", O_WRONLY | O_CREAT, 0600) >= 0 || errno != ENOENT) fail("a file could be made in the removed directory");
    if (stat(path, &st2) == 0 || stat(dir, &st2) == 0) fail("the ghost or the directory has a name again");
    return 0;
}

/* FIFOs: one with a reader (O_NONBLOCK) and a writer, bytes queued, a capacity of 256 KiB, the
   writer also held by a child; one held only open for reading and writing, with bytes queued.
   After the restore: the same paths, flags and capacity, what was queued reads back, and a write
   through each writer (the child's too) reaches the reader. */
static int fifos(const char *trigger) {
    char path[4096], rw[4096];
    snprintf(path, sizeof path, "%s.fifo", trigger);
    snprintf(rw, sizeof rw, "%s.fifo-rw", trigger);
    if (mkfifo(path, 0600) != 0 || mkfifo(rw, 0600) != 0) { perror("mkfifo"); return 2; }
    int r = open(path, O_RDONLY | O_NONBLOCK);
    int w = open(path, O_WRONLY);
    int both = open(rw, O_RDWR | O_CLOEXEC);
    if (r < 0 || w < 0 || both < 0) { perror("open fifo"); return 2; }
    if (fcntl(w, F_SETPIPE_SZ, 256 << 10) < 0) { perror("F_SETPIPE_SZ"); return 2; }
    static char queued[3000];
    pattern(queued, sizeof queued, 9);
    if (write(w, queued, sizeof queued) != sizeof queued || write(both, "held", 4) != 4) { perror("write fifo"); return 2; }
    pid_t child = fork();
    if (child == 0) {
        close(r);
        close(both);
        wait_for(trigger);
        _exit(write(w, "child", 5) == 5 ? 0 : 1);
    }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("the child holding the writer failed (status 0x%x)", status);
    struct stat st;
    if (fstat(r, &st) || !S_ISFIFO(st.st_mode)) fail("the reader is not a FIFO");
    char self[64], link[4200];
    snprintf(self, sizeof self, "/proc/self/fd/%d", w);
    ssize_t n = readlink(self, link, sizeof link - 1);
    link[n > 0 ? n : 0] = 0;
    if (strcmp(link, path) != 0) fail("the writer is now %s", link);
    if (!(fcntl(r, F_GETFL) & O_NONBLOCK) || (fcntl(w, F_GETFL) & O_NONBLOCK)) fail("O_NONBLOCK differs");
    if ((fcntl(both, F_GETFL) & O_ACCMODE) != O_RDWR || !(fcntl(both, F_GETFD) & FD_CLOEXEC)) fail("the read-write FIFO's flags differ");
    if (fcntl(r, F_GETPIPE_SZ) != 256 << 10) fail("the capacity is %d", fcntl(r, F_GETPIPE_SZ));
    static char got[4096];
    if (write(w, "after", 5) != 5) fail("the writer cannot write");
    ssize_t got_n = read(r, got, sizeof got);
    if (got_n != (ssize_t)sizeof queued + 10 || memcmp(got, queued, sizeof queued) != 0 ||
        memcmp(got + sizeof queued, "childafter", 10) != 0) fail("the reader read %ld bytes, not the %zu queued and 10 written", (long)got_n, sizeof queued);
    char held[8] = {0};
    if (read(both, held, 4) != 4 || strcmp(held, "held") != 0) fail("the read-write FIFO holds '%s'", held);
    return 0;
}

/* pidfds: of itself, of a child (PIDFD_NONBLOCK, with a dup and watched by an epoll set), and of
   one of its threads (PIDFD_THREAD). After the restore each names the same pid (fdinfo NSpid),
   keeps its flags, and works: a signal through its own, the child's exit seen through the epoll
   set and collected with waitid(P_PIDFD). */
static void *sleeper(void *arg) { (void)arg; for (;;) pause(); return NULL; }
static long nspid_of(int fd) {
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    long pid = -2;
    if (!f) return -3;
    while (fgets(text, sizeof text, f)) {
        if (strncmp(text, "NSpid:", 6) == 0) {
            char *last = strrchr(text, '\t');
            pid = strtol(last ? last + 1 : text + 6, NULL, 10);
        }
    }
    fclose(f);
    return pid;
}
static int pidfds(const char *trigger) {
    pthread_t t;
    if (pthread_create(&t, NULL, sleeper, NULL) != 0) return 2;
    usleep(20000);
    pid_t tid = 0;
    DIR *d = opendir("/proc/self/task");
    for (struct dirent *e; d && (e = readdir(d));) if (atoi(e->d_name) > 0 && atoi(e->d_name) != getpid()) tid = atoi(e->d_name);
    if (d) closedir(d);
    pid_t child = fork();
    if (child == 0) {
        wait_for(trigger);
        _exit(7);
    }
    int self = (int)syscall(SYS_pidfd_open, getpid(), 0);
    int kid = (int)syscall(SYS_pidfd_open, child, O_NONBLOCK /* PIDFD_NONBLOCK */);
    int thread = (int)syscall(SYS_pidfd_open, tid, O_EXCL /* PIDFD_THREAD */);
    int ep = epoll_create1(0);
    struct epoll_event ev = {EPOLLIN, {.u64 = 77}};
    if (self < 0 || kid < 0 || thread < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, kid, &ev) != 0 || dup2(kid, 20) != 20) { perror("pidfd"); return 2; }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    if (nspid_of(self) != getpid() || nspid_of(kid) != child || nspid_of(20) != child || nspid_of(thread) != tid)
        fail("the pidfds name %ld %ld %ld %ld, not %d %d %d %d", nspid_of(self), nspid_of(kid), nspid_of(20), nspid_of(thread), getpid(), child, child, tid);
    if (!(fcntl(kid, F_GETFL) & O_NONBLOCK) || (fcntl(self, F_GETFL) & O_NONBLOCK)) fail("PIDFD_NONBLOCK differs");
    if (!(fcntl(thread, F_GETFL) & O_EXCL)) fail("the thread's pidfd lost PIDFD_THREAD");
    if (syscall(SYS_pidfd_send_signal, self, 0, NULL, 0) != 0) fail("pidfd_send_signal through its own pidfd: %s", strerror(errno));
    struct epoll_event got;
    if (epoll_wait(ep, &got, 1, 10000) != 1 || got.data.u64 != 77) fail("the epoll set did not see the child exit");
    siginfo_t info = {0};
    fcntl(kid, F_SETFL, 0);  /* (a blocking wait: a traced child is waitable a moment after its pidfd says it exited) */
    if (waitid((idtype_t)3 /* P_PIDFD */, (id_t)kid, &info, WEXITED) != 0 || info.si_pid != child || info.si_status != 7)
        fail("waitid(P_PIDFD) gives pid %d status %d", info.si_pid, info.si_status);
    return 0;
}

/* inotify: an instance (IN_NONBLOCK) watching a directory (IN_CREATE|IN_DELETE), a file
   (IN_ATTRIB) and another one-shot (IN_MODIFY|IN_ONESHOT), a watch removed between them (so the
   numbers have a gap) and its IN_IGNORED read. After the restore fdinfo shows the same watches
   and masks at the same numbers, and changes to the watched files give exactly their events. */
static void watch_list(int fd, char *out, size_t cap) {
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    FILE *f = fopen(path, "r");
    out[0] = 0;
    while (f && fgets(line, sizeof line, f)) {
        int wd;
        unsigned mask;
        char *at = strstr(line, "inotify wd:");
        if (at && sscanf(at, "inotify wd:%d", &wd) == 1 && (at = strstr(line, " mask:")) && sscanf(at, " mask:%x", &mask) == 1) {
            char one[64];
            snprintf(one, sizeof one, "%d:%x ", wd, mask);
            strncat(out, one, cap - strlen(out) - 1);
        }
    }
    if (f) fclose(f);
}
static int inotify_watches(const char *trigger) {
    char dir[4096], file[4200], other[4200], gone[4200], created[4200];
    snprintf(dir, sizeof dir, "%s.watched", trigger);
    snprintf(file, sizeof file, "%s/attrs", dir);
    snprintf(other, sizeof other, "%s/once", dir);
    snprintf(gone, sizeof gone, "%s/gone", dir);
    snprintf(created, sizeof created, "%s/created", dir);
    mkdir(dir, 0755);
    int fds[3] = {open(file, O_WRONLY | O_CREAT, 0644), open(other, O_WRONLY | O_CREAT, 0644), open(gone, O_WRONLY | O_CREAT, 0644)};
    for (int i = 0; i < 3; i++) if (fds[i] < 0) { perror("create"); return 2; } else close(fds[i]);
    int in = inotify_init1(IN_NONBLOCK);
    int w1 = inotify_add_watch(in, dir, IN_CREATE | IN_DELETE);
    int w2 = inotify_add_watch(in, gone, IN_MODIFY);
    int w3 = inotify_add_watch(in, file, IN_ATTRIB);
    int w4 = inotify_add_watch(in, other, IN_MODIFY | IN_ONESHOT);
    char buf[4096] __attribute__((aligned(8)));
    if (in < 0 || w1 < 0 || w2 < 0 || w3 < 0 || w4 < 0 || inotify_rm_watch(in, w2) != 0 || read(in, buf, sizeof buf) <= 0) { perror("inotify"); return 2; }
    char before[512], after[512];
    watch_list(in, before, sizeof before);
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    watch_list(in, after, sizeof after);
    if (strcmp(before, after) != 0) fail("the watches were %s and are %s", before, after);
    if (!(fcntl(in, F_GETFL) & O_NONBLOCK)) fail("IN_NONBLOCK is gone");
    if (read(in, buf, sizeof buf) >= 0 || errno != EAGAIN) fail("events were waiting after the restore");
    int c = open(created, O_WRONLY | O_CREAT, 0644);
    if (c < 0 || chmod(file, 0600) != 0) { perror("change"); return 2; }
    int o = open(other, O_WRONLY);
    if (o < 0 || write(o, "x", 1) != 1 || write(o, "y", 1) != 1) { perror("modify"); return 2; }
    char seen[512] = "";
    ssize_t n = read(in, buf, sizeof buf);
    for (ssize_t at = 0; at < n;) {
        struct inotify_event *e = (struct inotify_event *)(buf + at);
        char one[128];
        snprintf(one, sizeof one, "%d:%x:%s ", e->wd, e->mask, e->len ? e->name : "");
        strncat(seen, one, sizeof seen - strlen(seen) - 1);
        at += (ssize_t)sizeof *e + e->len;
    }
    char want[512];
    snprintf(want, sizeof want, "%d:%x:created %d:%x: %d:%x: %d:%x: ", w1, IN_CREATE, w3, IN_ATTRIB, w4, IN_MODIFY, w4, IN_IGNORED);
    if (strcmp(seen, want) != 0) fail("the events were \"%s\", not \"%s\"", seen, want);
    return 0;
}

/* A pty the program drives: the master (O_NONBLOCK) and a slave with its termios (no echo, raw
   input with VMIN 3, 9600 baud) and window size (33x101), and a child that made the pty its
   controlling terminal (setsid, open) with a grandchild's process group in the foreground. After
   the restore: the same /dev/pts/N, termios and window size, bytes pass both ways through the line
   discipline as set, and the child still has its terminal and its foreground group. */
static int pty_pair(const char *trigger) {
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK);
    if (master < 0 || grantpt(master) != 0 || unlockpt(master) != 0) { perror("posix_openpt"); return 2; }
    char name[64];
    snprintf(name, sizeof name, "%s", ptsname(master));
    int slave = open(name, O_RDWR | O_NOCTTY);
    struct termios t;
    if (slave < 0 || tcgetattr(slave, &t) != 0) { perror(name); return 2; }
    t.c_lflag &= ~(ECHO | ICANON);
    t.c_cc[VMIN] = 3;
    t.c_cc[VTIME] = 0;
    cfsetospeed(&t, B9600);
    cfsetispeed(&t, B9600);
    struct winsize ws = {33, 101, 640, 480};
    if (tcsetattr(slave, TCSANOW, &t) != 0 || ioctl(master, TIOCSWINSZ, &ws) != 0) { perror("tcsetattr"); return 2; }
    int sync[2];
    if (pipe(sync) != 0) return 2;
    pid_t child = fork();
    if (child == 0) {
        close(master);
        close(sync[0]);
        setsid();
        int tty = open(name, O_RDWR);  /* a session leader's first terminal: its controlling one */
        pid_t job = fork();
        if (job == 0) {
            setpgid(0, 0);
            wait_for(trigger);
            _exit(0);
        }
        setpgid(job, job);
        signal(SIGTTOU, SIG_IGN);
        if (tty < 0 || tcsetpgrp(tty, job) != 0) _exit(3);
        if (write(sync[1], "k", 1) != 1) _exit(3);
        wait_for(trigger);
        int code = 0;
        /* Its controlling terminal (stat's tty_nr) is the pty's slave, and /dev/tty opens. */
        struct stat b;
        char line[1024];
        int tty_nr = -1;
        FILE *st = fopen("/proc/self/stat", "r");
        if (st && fgets(line, sizeof line, st)) sscanf(strrchr(line, ')') + 2, "%*c %*d %*d %*d %d", &tty_nr);
        if (st) fclose(st);
        if (open("/dev/tty", O_RDWR) < 0 || fstat(tty, &b) || (unsigned)(tty_nr >> 8 & 0xfff) != major(b.st_rdev) ||
            (unsigned)(tty_nr & 0xff) != (minor(b.st_rdev) & 0xff)) code |= 4;
        if (tcgetpgrp(tty) != job) code |= 8;
        if (getsid(0) != getpid() || tcgetsid(tty) != getpid()) code |= 16;
        waitpid(job, NULL, 0);
        _exit(code);
    }
    char k;
    close(sync[1]);
    if (read(sync[0], &k, 1) != 1) { fprintf(stderr, "the child failed to take the pty\n"); return 2; }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    if (strcmp(ptsname(master), name) != 0) fail("the master's slave is %s, not %s", ptsname(master), name);
    struct termios now;
    struct winsize wnow;
    if (tcgetattr(slave, &now) != 0 || (now.c_lflag & (ECHO | ICANON)) || now.c_cc[VMIN] != 3 || cfgetospeed(&now) != B9600 || !(now.c_oflag & ONLCR))
        fail("the slave's termios differ (lflag 0%o, VMIN %d)", now.c_lflag, now.c_cc[VMIN]);
    if (ioctl(slave, TIOCGWINSZ, &wnow) != 0 || wnow.ws_row != 33 || wnow.ws_col != 101 || wnow.ws_xpixel != 640) fail("the window is %dx%d", wnow.ws_row, wnow.ws_col);
    if (!(fcntl(master, F_GETFL) & O_NONBLOCK) || (fcntl(slave, F_GETFL) & O_NONBLOCK)) fail("O_NONBLOCK differs");
    char got[64] = {0};
    if (write(slave, "out\n", 4) != 4) fail("the slave cannot write");
    usleep(50000);
    ssize_t n = read(master, got, sizeof got - 1);
    if (n != 5 || memcmp(got, "out\r\n", 5) != 0) fail("the master read %ld bytes '%s', not \"out\\r\\n\"", (long)n, got);
    if (write(master, "xyz", 3) != 3) fail("the master cannot write");
    memset(got, 0, sizeof got);
    n = read(slave, got, sizeof got - 1);
    if (n != 3 || memcmp(got, "xyz", 3) != 0) fail("the slave read '%s'", got);
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("the child's terminal differs (status 0x%x)", status);
    return 0;
}

/* Sleeps the kernel restarts through a restart block (poll with a timeout, clock_nanosleep,
   nanosleep, futex waits with a timeout), each in a thread of its own, all stopped and continued
   once before the checkpoint (so they sit in restart_syscall). After the restore each ends as
   its call would — by its timeout, never EINTR. */
enum { SLEEP_MS = 2500 };
static int sleep_results[4];
static volatile int futex_word;
static void *poller(void *arg) {
    (void)arg;
    int p[2];
    if (pipe(p) != 0) return NULL;
    struct pollfd f = {p[0], POLLIN, 0};
    sleep_results[0] = poll(&f, 1, SLEEP_MS) == 0 ? 0 : errno;
    return NULL;
}
static void *clock_sleeper(void *arg) {
    (void)arg;
    struct timespec ts = {SLEEP_MS / 1000, (SLEEP_MS % 1000) * 1000000L};
    sleep_results[1] = (int)syscall(SYS_clock_nanosleep, CLOCK_MONOTONIC, 0, &ts, NULL) == 0 ? 0 : errno;
    return NULL;
}
static void *nano_sleeper(void *arg) {
    (void)arg;
    struct timespec ts = {SLEEP_MS / 1000, (SLEEP_MS % 1000) * 1000000L};
    sleep_results[2] = (int)syscall(SYS_nanosleep, &ts, NULL) == 0 ? 0 : errno;
    return NULL;
}
static void *futex_waiter(void *arg) {
    (void)arg;
    struct timespec ts = {SLEEP_MS / 1000, (SLEEP_MS % 1000) * 1000000L};
    long r = syscall(SYS_futex, &futex_word, 0 /* FUTEX_WAIT */, 0, &ts, NULL, 0);
    sleep_results[3] = r == -1 && errno == ETIMEDOUT ? 0 : r == 0 ? -1 : errno;
    return NULL;
}
static int restarts(const char *trigger) {
    void *(*bodies[4])(void *) = {poller, clock_sleeper, nano_sleeper, futex_waiter};
    const char *names[4] = {"poll", "clock_nanosleep", "nanosleep", "futex"};
    pthread_t t[4];
    for (int i = 0; i < 4; i++) if (pthread_create(&t[i], NULL, bodies[i], NULL) != 0) return 2;
    usleep(100000);
    pid_t helper = fork();
    if (helper == 0) {
        kill(getppid(), SIGSTOP);
        usleep(50000);
        kill(getppid(), SIGCONT);
        _exit(0);
    }
    waitpid(helper, NULL, 0);
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        if (sleep_results[i] != 0) fail("%s ended with %s", names[i], sleep_results[i] < 0 ? "a wake-up" : strerror(sleep_results[i]));
    }
    return 0;
}

/* UNIX connections made through a name: a stream listener on a path with one connection
   accepted (its client in this process, bound to a name of its own, bytes queued both ways), and
   a seqpacket listener on an abstract name whose accepted connection's client is a child's.
   After the restore every end has its name and its peer's, the queues read as they were, both
   connections carry messages both ways, and the listeners still accept. */
static socklen_t unix_name(struct sockaddr_un *a, const char *path, int abstract) {
    memset(a, 0, sizeof *a);
    a->sun_family = AF_UNIX;
    if (abstract) return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "%.100s", path));
    snprintf(a->sun_path, sizeof a->sun_path, "%.107s", path);
    return sizeof *a;
}
static int same_name(int fd, int peer, const struct sockaddr_un *want, socklen_t len) {
    struct sockaddr_un got;
    socklen_t n = sizeof got;
    memset(&got, 0, sizeof got);
    int r = peer ? getpeername(fd, (struct sockaddr *)&got, &n) : getsockname(fd, (struct sockaddr *)&got, &n);
    if (r != 0) return 0;
    if (want->sun_path[0] == 0) return n == len && memcmp(got.sun_path, want->sun_path, len - offsetof(struct sockaddr_un, sun_path)) == 0;
    return strcmp(got.sun_path, want->sun_path) == 0;
}
static int unix_named(const char *trigger) {
    char path[4096], own[4096], abstract[128];
    snprintf(path, sizeof path, "%s.listen", trigger);
    snprintf(own, sizeof own, "%s.client", trigger);
    snprintf(abstract, sizeof abstract, "legato-named-%d", getpid());
    unlink(path);
    unlink(own);
    struct sockaddr_un lp, cp, la;
    socklen_t lpn = unix_name(&lp, path, 0), cpn = unix_name(&cp, own, 0), lan = unix_name(&la, abstract, 1);
    int L = socket(AF_UNIX, SOCK_STREAM, 0), LA = socket(AF_UNIX, SOCK_SEQPACKET, 0), C = socket(AF_UNIX, SOCK_STREAM, 0);
    if (L < 0 || LA < 0 || C < 0 || bind(L, (struct sockaddr *)&lp, lpn) || listen(L, 4) || bind(LA, (struct sockaddr *)&la, lan) || listen(LA, 2) ||
        bind(C, (struct sockaddr *)&cp, cpn) || connect(C, (struct sockaddr *)&lp, lpn)) { perror("listen/connect"); return 2; }
    int S = accept(L, NULL, NULL);
    if (S < 0 || write(C, "to server", 9) != 9 || write(S, "to client!", 10) != 10) { perror("accept"); return 2; }
    int sync[2];
    if (pipe(sync)) return 2;
    pid_t child = fork();
    if (child == 0) {
        int c = socket(AF_UNIX, SOCK_SEQPACKET, 0);
        if (c < 0 || connect(c, (struct sockaddr *)&la, lan) || send(c, "queued", 6, 0) != 6 || write(sync[1], "k", 1) != 1) _exit(3);
        wait_for(trigger);
        char got[32] = {0};
        if (!same_name(c, 1, &la, lan)) _exit(4);
        if (send(c, "after", 5, 0) != 5 || recv(c, got, sizeof got, 0) != 5 || strcmp(got, "reply") != 0) _exit(5);
        _exit(0);
    }
    char k;
    if (read(sync[0], &k, 1) != 1) return 2;
    int SA = accept(LA, NULL, NULL);
    if (SA < 0) { perror("accept seqpacket"); return 2; }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    if (!same_name(S, 0, &lp, lpn) || !same_name(S, 1, &cp, cpn) || !same_name(C, 0, &cp, cpn) || !same_name(C, 1, &lp, lpn))
        fail("the path connection's ends lost their names");
    if (!same_name(SA, 0, &la, lan)) fail("the accepted seqpacket end lost its abstract name");
    char got[64] = {0};
    if (read(S, got, sizeof got) != 9 || strcmp(got, "to server") != 0) fail("the server end holds '%s'", got);
    memset(got, 0, sizeof got);
    if (read(C, got, sizeof got) != 10 || strcmp(got, "to client!") != 0) fail("the client end holds '%s'", got);
    memset(got, 0, sizeof got);
    if (recv(SA, got, sizeof got, 0) != 6 || strcmp(got, "queued") != 0) fail("the seqpacket end holds '%s'", got);
    memset(got, 0, sizeof got);
    if (recv(SA, got, sizeof got, 0) != 5 || strcmp(got, "after") != 0 || send(SA, "reply", 5, 0) != 5) fail("the child's connection does not carry '%s'", got);
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("the child's end failed (status 0x%x)", status);
    int again = socket(AF_UNIX, SOCK_STREAM, 0);
    if (again < 0 || connect(again, (struct sockaddr *)&lp, lpn) != 0 || accept(L, NULL, NULL) < 0) fail("the path listener no longer accepts: %s", strerror(errno));
    return 0;
}

/* Descriptors in flight (SCM_RIGHTS): a stream pair holding a message that carries a pipe's read
   end (which the process keeps too, with the write end) and a regular file it closed after
   sending (at offset 5); a datagram pair holding a plain message, then one from a child carrying the child's
   eventfd. After the restore the messages come out in order with their descriptors: the pipe is
   the same pipe, the file at its offset, the eventfd the child's (it reads what is written). */
static int recv_with_fds(int sock, char *buf, size_t cap, int *fds, int max) {
    union { char b[CMSG_SPACE(sizeof(int) * 8)]; struct cmsghdr align; } control;
    struct iovec iov = {buf, cap};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.b, .msg_controllen = sizeof control.b};
    ssize_t n = recvmsg(sock, &m, MSG_DONTWAIT);
    if (n < 0) return -1;
    buf[n] = 0;
    int got = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
            for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int) && got < max; i++) fds[got++] = ((int *)CMSG_DATA(c))[i];
    return got;
}
static int send_with_fds(int sock, const char *text, const int *fds, int count) {
    union { char b[CMSG_SPACE(sizeof(int) * 8)]; struct cmsghdr align; } control;
    memset(&control, 0, sizeof control);
    struct iovec iov = {(void *)text, strlen(text)};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.b, .msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)count)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)count);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)count);
    return sendmsg(sock, &m, 0) == (ssize_t)strlen(text) ? 0 : -1;
}
static int unix_rights(const char *trigger) {
    int st[2], dg[2], pp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, st) || socketpair(AF_UNIX, SOCK_DGRAM, 0, dg) || pipe(pp)) { perror("socketpair"); return 2; }
    char path[4096];
    snprintf(path, sizeof path, "%s.sent", trigger);
    int file = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (file < 0 || write(file, "0123456789", 10) != 10 || lseek(file, 5, SEEK_SET) != 5) { perror(path); return 2; }
    int carried[2] = {pp[0], file};
    if (send_with_fds(st[0], "with-fds", carried, 2) || close(file)) { perror("send"); return 2; }
    if (send(dg[0], "plain", 5, 0) != 5) { perror("send plain"); return 2; }
    int sync[2];
    if (pipe(sync)) return 2;
    pid_t child = fork();
    if (child == 0) {
        int e = eventfd(0, 0);
        if (e < 0 || send_with_fds(dg[0], "fd", &e, 1) || write(sync[1], "k", 1) != 1) _exit(3);
        wait_for(trigger);
        uint64_t v = 0;
        _exit(read(e, &v, 8) == 8 && v == 7 ? 0 : 4);
    }
    char k;
    if (read(sync[0], &k, 1) != 1) return 2;
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    char buf[64];
    int fds[8];
    int n = recv_with_fds(st[1], buf, sizeof buf - 1, fds, 8);
    if (n != 2 || strcmp(buf, "with-fds") != 0) fail("the stream message is '%s' with %d descriptors", buf, n);
    else {
        char got[16] = {0};
        if (write(pp[1], "piped", 5) != 5 || read(fds[0], got, 5) != 5 || strcmp(got, "piped") != 0) fail("the pipe in flight is not the pipe ('%s')", got);
        memset(got, 0, sizeof got);
        if (lseek(fds[1], 0, SEEK_CUR) != 5 || read(fds[1], got, 5) != 5 || strcmp(got, "56789") != 0) fail("the file in flight reads '%s'", got);
    }
    n = recv_with_fds(dg[1], buf, sizeof buf - 1, fds, 8);
    if (n != 0 || strcmp(buf, "plain") != 0) fail("the first datagram is '%s' with %d descriptors", buf, n);
    n = recv_with_fds(dg[1], buf, sizeof buf - 1, fds, 8);
    uint64_t seven = 7;
    if (n != 1 || strcmp(buf, "fd") != 0 || write(fds[0], &seven, 8) != 8) fail("the second datagram is '%s' with %d descriptors", buf, n);
    int status = 0;
    if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) fail("the child's eventfd is not the one in flight (status 0x%x)", status);
    return 0;
}

/* Datagram sockets connected by name: a server bound to a path and a client bound to one of its own,
   connected to each other, and an unbound socket connected to a second, unconnected server. After
   the restore each has its name and peer, and datagrams pass with their senders' names. */
static int unix_dgram_named(const char *trigger) {
    char p1[4096], p2[4096], p3[4096];
    snprintf(p1, sizeof p1, "%s.dg-server", trigger);
    snprintf(p2, sizeof p2, "%s.dg-client", trigger);
    snprintf(p3, sizeof p3, "%s.dg-other", trigger);
    unlink(p1); unlink(p2); unlink(p3);
    struct sockaddr_un a1, a2, a3;
    socklen_t n1 = unix_name(&a1, p1, 0), n2 = unix_name(&a2, p2, 0), n3 = unix_name(&a3, p3, 0);
    int S = socket(AF_UNIX, SOCK_DGRAM, 0), C = socket(AF_UNIX, SOCK_DGRAM, 0), T = socket(AF_UNIX, SOCK_DGRAM, 0), U = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (S < 0 || C < 0 || T < 0 || U < 0 || bind(S, (struct sockaddr *)&a1, n1) || bind(C, (struct sockaddr *)&a2, n2) || bind(T, (struct sockaddr *)&a3, n3) ||
        connect(C, (struct sockaddr *)&a1, n1) || connect(S, (struct sockaddr *)&a2, n2) || connect(U, (struct sockaddr *)&a3, n3)) { perror("dgram"); return 2; }
    printf("ready\n");
    fflush(stdout);
    wait_for(trigger);
    if (!same_name(C, 1, &a1, n1) || !same_name(S, 1, &a2, n2) || !same_name(U, 1, &a3, n3)) fail("a datagram socket's peer differs");
    if (!same_name(S, 0, &a1, n1) || !same_name(C, 0, &a2, n2) || !same_name(T, 0, &a3, n3)) fail("a datagram socket's name differs");
    char got[32] = {0};
    struct sockaddr_un from;
    socklen_t fl = sizeof from;
    if (send(C, "c1", 2, 0) != 2 || recvfrom(S, got, sizeof got, MSG_DONTWAIT, (struct sockaddr *)&from, &fl) != 2 || strcmp(got, "c1") != 0 ||
        strcmp(from.sun_path, p2) != 0) fail("the client's datagram reached the server as '%s' from %s", got, from.sun_path);
    memset(got, 0, sizeof got);
    if (send(S, "s1", 2, 0) != 2 || recv(C, got, sizeof got, MSG_DONTWAIT) != 2 || strcmp(got, "s1") != 0) fail("the server's datagram reached the client as '%s'", got);
    memset(got, 0, sizeof got);
    fl = sizeof from;
    if (send(U, "u1", 2, 0) != 2 || recvfrom(T, got, sizeof got, MSG_DONTWAIT, (struct sockaddr *)&from, &fl) != 2 || strcmp(got, "u1") != 0 || fl > sizeof(sa_family_t))
        fail("the unbound socket's datagram reached the other server as '%s' (address of %u bytes)", got, (unsigned)fl);
    if (!(fcntl(U, F_GETFD) & FD_CLOEXEC)) fail("close-on-exec differs");
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: statecheck advice|fdflags|attrs|locks|membarrier|guard|unlinked|zombies|timers|sysv|seccomp|loginuid|lease|aio|openfiles|events|unix|inet|tcp|tcp-closed|dirs|memfd|ghost|fifo|pidfd|inotify|pty|restarts|unix-named|unix-rights|unix-dgram|aio-inflight|fifo-outside|pidfd-outside|pty-unread|device|rights-unkept|epoll-moved|iouring|mlock|mseal TRIGGER\n");
        return 2;
    }
    signal(SIGUSR1, on_usr1);
    int r;
    if (strcmp(argv[1], "advice") == 0) r = advice(argv[2]);
    else if (strcmp(argv[1], "fdflags") == 0) r = fdflags(argv[2]);
    else if (strcmp(argv[1], "attrs") == 0) r = attrs(argv[2]);
    else if (strcmp(argv[1], "locks") == 0) r = locks(argv[2]);
    else if (strcmp(argv[1], "membarrier") == 0) r = membarrier_registered(argv[2]);
    else if (strcmp(argv[1], "guard") == 0) r = guard(argv[2]);
    else if (strcmp(argv[1], "unlinked") == 0) r = unlinked(argv[2]);
    else if (strcmp(argv[1], "zombies") == 0) r = zombies(argv[2]);
    else if (strcmp(argv[1], "timers") == 0) r = posix_timers(argv[2]);
    else if (strcmp(argv[1], "sysv") == 0) r = sysv(argv[2]);
    else if (strcmp(argv[1], "seccomp") == 0) r = seccomp_filters(argv[2]);
    else if (strcmp(argv[1], "loginuid") == 0) r = loginuid(argv[2]);
    else if (strcmp(argv[1], "lease") == 0) r = lease(argv[2]);
    else if (strcmp(argv[1], "aio") == 0) r = aio_rings(argv[2]);
    else if (strcmp(argv[1], "openfiles") == 0) r = open_files(argv[2]);
    else if (strcmp(argv[1], "events") == 0) r = events(argv[2]);
    else if (strcmp(argv[1], "unix") == 0) r = unix_sockets(argv[2]);
    else if (strcmp(argv[1], "inet") == 0) r = inet_sockets(argv[2]);
    else if (strcmp(argv[1], "tcp") == 0) r = tcp_connections(argv[2]);
    else if (strcmp(argv[1], "tcp-closed") == 0) r = tcp_closed(argv[2]);
    else if (strcmp(argv[1], "dirs") == 0) r = directories(argv[2]);
    else if (strcmp(argv[1], "memfd") == 0) r = memfds(argv[2]);
    else if (strcmp(argv[1], "ghost") == 0) r = ghosts(argv[2]);
    else if (strcmp(argv[1], "fifo") == 0) r = fifos(argv[2]);
    else if (strcmp(argv[1], "pidfd") == 0) r = pidfds(argv[2]);
    else if (strcmp(argv[1], "inotify") == 0) r = inotify_watches(argv[2]);
    else if (strcmp(argv[1], "pty") == 0) r = pty_pair(argv[2]);
    else if (strcmp(argv[1], "restarts") == 0) r = restarts(argv[2]);
    else if (strcmp(argv[1], "unix-named") == 0) r = unix_named(argv[2]);
    else if (strcmp(argv[1], "unix-rights") == 0) r = unix_rights(argv[2]);
    else if (strcmp(argv[1], "unix-dgram") == 0) r = unix_dgram_named(argv[2]);
    else if (strcmp(argv[1], "aio-inflight") == 0 || strcmp(argv[1], "epoll-moved") == 0 || strcmp(argv[1], "iouring") == 0 ||
             strcmp(argv[1], "fifo-outside") == 0 || strcmp(argv[1], "pidfd-outside") == 0 || strcmp(argv[1], "pty-unread") == 0 || strcmp(argv[1], "device") == 0 || strcmp(argv[1], "rights-unkept") == 0 ||
             strcmp(argv[1], "mlock") == 0 || strcmp(argv[1], "mseal") == 0) return refused(argv[1], argv[2]);
    else {
        fprintf(stderr, "statecheck: unknown mode %s\n", argv[1]);
        return 2;
    }
    if (r != 0) return r;
    if (failures[0]) {
        printf("FAIL %s: %s\n", argv[1], failures);
        return 1;
    }
    printf("PASS %s\n", argv[1]);
    return 0;
}

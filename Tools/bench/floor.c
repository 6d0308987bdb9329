/*
 * floor — the machine's own floors for the remote-fault path, measured in the benchmark's run.
 *
 *   floor uffd  [N]   a page fault served from a local buffer by another process (userfaultfd,
 *                     UFFDIO_COPY), as seen by the faulting thread
 *   floor tcp   [N]   a loopback TCP round trip: 16-byte request, 4096-byte response
 *   floor tcpbw [MiB] loopback TCP bandwidth, 1 MiB writes one way
 *
 * Prints one line: `floor_<what>_us p50=X p99=Y n=N` (tcpbw: `floor_tcpbw_mbps=X`).
 *   floor copy  [MIB] copying MIB MiB out of another process (process_vm_readv), per GiB
 *   floor uffdscan MIB LOCAL PASSES
 *                     seqscan's work (fill MIB MiB, scan it PASSES times) with LOCAL MiB resident, paged
 *                     by userfaultfd inside the process itself: a server thread installs 1 MiB runs
 *                     (UFFDIO_COPY, four runs ahead of a fault) from an in-memory backing, and the
 *                     scanning thread copies out and drops (MADV_DONTNEED) what lies LOCAL behind it,
 *                     4 MiB at a time. No second process, no ptrace, no network: what uffd paging alone
 *                     costs. Prints `floor_uffdscan_s=X` (X: fill plus scans).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    printf("floor_%s_us p50=%.2f p99=%.2f n=%d\n", what, v[n / 2], v[(int)(n * 0.99)], n);
}

static void die(const char *m) {
    perror(m);
    exit(1);
}

static int uffd_floor(int n) {
    size_t len = (size_t)n * 4096;
    char *region = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) die("mmap");
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
    if (uffd < 0) die("userfaultfd");
    struct uffdio_api api = {.api = UFFD_API};
    if (ioctl(uffd, UFFDIO_API, &api)) die("UFFDIO_API");
    struct uffdio_register reg = {.range = {.start = (uint64_t)region, .len = len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg)) die("UFFDIO_REGISTER");
    pid_t child = fork();
    if (child == 0) {
        static char page[4096];
        memset(page, 7, sizeof page);
        struct pollfd p = {.fd = uffd, .events = POLLIN};
        for (;;) {
            if (poll(&p, 1, -1) < 0) continue;
            struct uffd_msg m;
            if (read(uffd, &m, sizeof m) != sizeof m) continue;
            if (m.event != UFFD_EVENT_PAGEFAULT) continue;
            struct uffdio_copy c = {.dst = m.arg.pagefault.address & ~4095ULL, .src = (uint64_t)page, .len = 4096};
            ioctl(uffd, UFFDIO_COPY, &c);
        }
    }
    double *v = malloc(sizeof(double) * (size_t)n);
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        volatile char *p = region + (size_t)i * 4096;
        double t0 = now_us();
        (void)*p;
        v[i] = now_us() - t0;
    }
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    report("uffd", v, n);
    return 0;
}

static int tcp_floor(int n) {
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1) || getsockname(ls, (struct sockaddr *)&a, &al)) die("listen");
    pid_t child = fork();
    if (child == 0) {
        int c = accept(ls, NULL, NULL);
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char req[16], resp[4096];
        memset(resp, 1, sizeof resp);
        for (;;) {
            size_t got = 0;
            while (got < sizeof req) {
                ssize_t r = read(c, req + got, sizeof req - got);
                if (r <= 0) _exit(0);
                got += (size_t)r;
            }
            if (write(c, resp, sizeof resp) != (ssize_t)sizeof resp) _exit(0);
        }
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) die("connect");
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    double *v = malloc(sizeof(double) * (size_t)n);
    char req[16] = {0}, resp[4096];
    for (int i = -100; i < n; i++) {
        double t0 = now_us();
        if (write(s, req, sizeof req) != (ssize_t)sizeof req) die("write");
        size_t got = 0;
        while (got < sizeof resp) {
            ssize_t r = read(s, resp + got, sizeof resp - got);
            if (r <= 0) die("read");
            got += (size_t)r;
        }
        if (i >= 0) v[i] = now_us() - t0;
    }
    close(s);
    waitpid(child, NULL, 0);
    report("tcp", v, n);
    return 0;
}

static int tcpbw_floor(int mib) {
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 1) || getsockname(ls, (struct sockaddr *)&a, &al)) die("listen");
    pid_t child = fork();
    if (child == 0) {
        int c = accept(ls, NULL, NULL);
        static char buf[1 << 20];
        while (read(c, buf, sizeof buf) > 0) {}
        _exit(0);
    }
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (struct sockaddr *)&a, sizeof a)) die("connect");
    static char buf[1 << 20];
    memset(buf, 3, sizeof buf);
    double t0 = now_us();
    for (int i = 0; i < mib; i++) {
        size_t done = 0;
        while (done < sizeof buf) {
            ssize_t w = write(s, buf + done, sizeof buf - done);
            if (w <= 0) die("write");
            done += (size_t)w;
        }
    }
    close(s);
    waitpid(child, NULL, 0);
    double secs = (now_us() - t0) / 1e6;
    printf("floor_tcpbw_mbps=%.1f\n", mib * 1048576.0 / secs / 1e6);
    return 0;
}

/* Copying MIB MiB from one process to another (process_vm_readv into a buffer already faulted in):
 * the least a pause that copies dirty pages out can cost. */
static int copy_floor(int mib) {
    size_t bytes = (size_t)mib << 20;
    char *src = malloc(bytes), *dst = malloc(bytes);
    if (!src || !dst) die("malloc");
    memset(src, 5, bytes);
    memset(dst, 0, bytes);
    int go[2];
    if (pipe(go) != 0) die("pipe");
    pid_t child = fork();
    if (child == 0) { char c; close(go[1]); if (read(go[0], &c, 1) < 0) _exit(1); _exit(0); }
    double best = 1e18;
    for (int round = 0; round < 3; round++) {
        double t0 = now_us();
        for (size_t off = 0; off < bytes; off += 1 << 20) {
            struct iovec local = { dst + off, 1 << 20 }, remote = { src + off, 1 << 20 };
            if (process_vm_readv(child, &local, 1, &remote, 1, 0) != 1 << 20) die("process_vm_readv");
        }
        double t = now_us() - t0;
        if (t < best) best = t;
    }
    close(go[1]);
    waitpid(child, NULL, 0);
    printf("floor_copy_ms_per_gib=%.1f\n", best / 1000.0 * 1024.0 / mib);
    return 0;
}

/* ---- floor uffdscan */
#define SCAN_MIB ((size_t)1 << 20)
#define SCAN_RUN SCAN_MIB         /* what the server installs at a time */
#define SCAN_AHEAD 4              /* runs installed from a fault on */
#define SCAN_DROP (4 * SCAN_MIB)  /* what the scanner drops at a time */
static char *scan_region, *scan_backing;
static size_t scan_len, scan_local, scan_dropped;
static int scan_uffd;

static void *scan_server(void *arg) {
    (void)arg;
    struct pollfd p = {.fd = scan_uffd, .events = POLLIN};
    for (;;) {
        struct uffd_msg m;
        if (read(scan_uffd, &m, sizeof m) != (ssize_t)sizeof m) {
            if (poll(&p, 1, -1) < 0 && errno != EINTR) die("poll");
            continue;
        }
        if (m.event != UFFD_EVENT_PAGEFAULT) continue;
        size_t start = (m.arg.pagefault.address - (uint64_t)scan_region) & ~(SCAN_RUN - 1);
        for (size_t o = start; o < start + SCAN_AHEAD * SCAN_RUN && o < scan_len; o += 4096) {
            /* Page by page past what is there (EEXIST): a run may hold pages not dropped yet. */
            struct uffdio_copy c = {.dst = (uint64_t)scan_region + o, .src = (uint64_t)scan_backing + o,
                                    .len = SCAN_RUN - (o & (SCAN_RUN - 1))};
            if (ioctl(scan_uffd, UFFDIO_COPY, &c) == 0) { o += c.len - 4096; continue; }
            if (errno != EEXIST && errno != EAGAIN) die("UFFDIO_COPY");
            if (c.copy > 0) o += (size_t)c.copy - 4096;
        }
    }
    return NULL;
}

/* Keeps [pos - local, pos) resident: copies out and drops what lies further behind. */
static void scan_drop_behind(size_t pos) {
    if (pos < scan_dropped) scan_dropped = 0;  /* a new pass */
    while (pos >= scan_local && pos - scan_local >= scan_dropped + SCAN_DROP) {
        memcpy(scan_backing + scan_dropped, scan_region + scan_dropped, SCAN_DROP);
        if (madvise(scan_region + scan_dropped, SCAN_DROP, MADV_DONTNEED)) die("madvise");
        scan_dropped += SCAN_DROP;
    }
}

static int uffdscan_floor(size_t mib, size_t local_mib, int passes) {
    scan_len = mib * SCAN_MIB;
    scan_local = local_mib * SCAN_MIB;
    scan_region = mmap(NULL, scan_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    scan_backing = mmap(NULL, scan_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (scan_region == MAP_FAILED || scan_backing == MAP_FAILED) die("mmap");
    scan_uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (scan_uffd < 0) die("userfaultfd");
    struct uffdio_api api = {.api = UFFD_API};
    if (ioctl(scan_uffd, UFFDIO_API, &api)) die("UFFDIO_API");
    struct uffdio_register reg = {.range = {.start = (uint64_t)scan_region, .len = scan_len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(scan_uffd, UFFDIO_REGISTER, &reg)) die("UFFDIO_REGISTER");
    pthread_t server;
    if (pthread_create(&server, NULL, scan_server, NULL)) die("pthread_create");
    const uint64_t k = 0x9E3779B97F4A7C15ull;  /* seqscan's fill */
    const size_t words = scan_len / 8, every = SCAN_DROP / 8;
    uint64_t *a = (uint64_t *)scan_region, v = 0, sum = 0;
    double t0 = now_us();
    for (size_t i = 0; i < words; i++, v += k) {
        a[i] = v;
        if (i % every == 0) scan_drop_behind(i * 8);
    }
    for (int p = 0; p < passes; p++)
        for (size_t i = 0; i < words; i++) {
            sum += a[i];
            if (i % every == 0) scan_drop_behind(i * 8);
        }
    double secs = (now_us() - t0) / 1e6;
    uint64_t n = words, want = (uint64_t)passes * (k * (n % 2 ? (n - 1) / 2 * n : n / 2 * (n - 1)));
    if (sum != want) { fprintf(stderr, "uffdscan: wrong sum\n"); return 1; }
    printf("floor_uffdscan_s=%.3f\n", secs);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: floor uffd|tcp|tcpbw|copy [N] | floor uffdscan MIB LOCAL PASSES\n");
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 20000;
    if (!strcmp(argv[1], "uffd")) return uffd_floor(n);
    if (!strcmp(argv[1], "tcp")) return tcp_floor(n);
    if (!strcmp(argv[1], "copy")) return copy_floor(argc > 2 ? atoi(argv[2]) : 1024);
    if (!strcmp(argv[1], "uffdscan") && argc == 5) return uffdscan_floor((size_t)atol(argv[2]), (size_t)atol(argv[3]), atoi(argv[4]));
    if (!strcmp(argv[1], "tcpbw")) return tcpbw_floor(argc > 2 ? atoi(argv[2]) : 2048);
    fprintf(stderr, "unknown floor %s\n", argv[1]);
    return 2;
}

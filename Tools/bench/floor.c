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
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
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

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: floor uffd|tcp|tcpbw|copy [N]\n");
        return 2;
    }
    int n = argc > 2 ? atoi(argv[2]) : 20000;
    if (!strcmp(argv[1], "uffd")) return uffd_floor(n);
    if (!strcmp(argv[1], "tcp")) return tcp_floor(n);
    if (!strcmp(argv[1], "copy")) return copy_floor(argc > 2 ? atoi(argv[2]) : 1024);
    if (!strcmp(argv[1], "tcpbw")) return tcpbw_floor(argc > 2 ? atoi(argv[2]) : 2048);
    fprintf(stderr, "unknown floor %s\n", argv[1]);
    return 2;
}

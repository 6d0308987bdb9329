/*
 * treedirtier — a tree of processes that each write a known number of pages per step, for the
 * process-tree pause benchmark.
 *
 *   treedirtier PROCESSES MIB PAGES_PER_STEP STEPS [SLEEP_MS]     (SLEEP_MS default 100)
 *
 * The parent forks PROCESSES-1 children; each of the PROCESSES processes fills its own MIB /
 * PROCESSES MiB of private memory. Once all are filled the parent prints "ready"; then each step it
 * tells every process (through a pipe each way) to rewrite its next PAGES_PER_STEP / PROCESSES
 * pages, waits for all, prints one line and sleeps SLEEP_MS. Between two lines exactly
 * PAGES_PER_STEP pages of the tree are written. At the end each child reports a digest of its area
 * and exits; the parent prints them and a digest of its own, which depend only on the arguments.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAXP 64

static void io(int fd, void *p, size_t n, int writing) {
    char *c = p;
    while (n > 0) {
        ssize_t r = writing ? write(fd, c, n) : read(fd, c, n);
        if (r <= 0) { perror(writing ? "write" : "read"); exit(1); }
        c += r;
        n -= (size_t)r;
    }
}

/* One process's area: fill, then per step `per_step` pages rewritten, cycling. */
struct area {
    uint64_t *a;
    size_t pages, cursor;
};

static void fill(struct area *w, size_t pages, uint64_t seed) {
    w->pages = pages;
    w->cursor = 0;
    w->a = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (w->a == MAP_FAILED) { perror("mmap"); exit(1); }
    for (size_t i = 0; i < pages * 512; i++) w->a[i] = (i + seed) * 0x9E3779B97F4A7C15ULL;
}

static void step(struct area *w, size_t per_step, int s) {
    for (size_t k = 0; k < per_step; k++) {
        uint64_t *p = w->a + (w->cursor % w->pages) * 512;
        for (int i = 0; i < 512; i += 64) p[i] = p[i] * 31 + (uint64_t)s;
        w->cursor++;
    }
}

static uint64_t digest(const struct area *w) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < w->pages * 512; i += 64) h = (h ^ w->a[i]) * 1099511628211ULL;
    return h;
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: treedirtier PROCESSES MIB PAGES_PER_STEP STEPS [SLEEP_MS]\n"); return 2; }
    int procs = atoi(argv[1]);
    size_t pages = (size_t)atoi(argv[2]) * 256 / (size_t)(procs > 0 ? procs : 1);
    size_t per_step = (size_t)atol(argv[3]) / (size_t)(procs > 0 ? procs : 1);
    int steps = atoi(argv[4]);
    int sleep_ms = argc > 5 ? atoi(argv[5]) : 100;
    if (procs < 1 || procs > MAXP) { fprintf(stderr, "treedirtier: 1 to %d processes\n", MAXP); return 2; }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int down[MAXP][2], up[MAXP][2];
    pid_t pids[MAXP];
    for (int k = 1; k < procs; k++) {
        if (pipe(down[k]) != 0 || pipe(up[k]) != 0) { perror("pipe"); return 1; }
        pids[k] = fork();
        if (pids[k] < 0) { perror("fork"); return 1; }
        if (pids[k] == 0) {
            struct area w;
            fill(&w, pages, (uint64_t)k << 40);
            int s = -1;
            io(up[k][1], &s, sizeof s, 1);  /* filled */
            for (;;) {
                io(down[k][0], &s, sizeof s, 0);
                if (s < 0) break;
                step(&w, per_step, s);
                io(up[k][1], &s, sizeof s, 1);
            }
            uint64_t d = digest(&w);
            io(up[k][1], &d, sizeof d, 1);
            _exit(0);
        }
        close(down[k][0]);
        close(up[k][1]);
    }
    struct area own;
    fill(&own, pages, 0);
    for (int k = 1; k < procs; k++) {
        int s;
        io(up[k][0], &s, sizeof s, 0);
    }
    printf("ready %d processes, %zu pages each\n", procs, pages);
    if (sleep_ms > 0) usleep((useconds_t)sleep_ms * 1000);
    for (int s = 0; s < steps; s++) {
        for (int k = 1; k < procs; k++) io(down[k][1], &s, sizeof s, 1);
        step(&own, per_step, s);
        for (int k = 1; k < procs; k++) {
            int r;
            io(up[k][0], &r, sizeof r, 0);
        }
        printf("step %d: %zu pages written\n", s, per_step * (size_t)procs);
        if (sleep_ms > 0) usleep((useconds_t)sleep_ms * 1000);
    }
    int stop = -1;
    for (int k = 1; k < procs; k++) {
        uint64_t d;
        io(down[k][1], &stop, sizeof stop, 1);
        io(up[k][0], &d, sizeof d, 0);
        int st;
        if (waitpid(pids[k], &st, 0) != pids[k] || !WIFEXITED(st) || WEXITSTATUS(st) != 0) { printf("FAIL: child %d\n", k); return 1; }
        printf("process %d digest %016" PRIx64 "\n", k, d);
    }
    printf("process 0 digest %016" PRIx64 "\n", digest(&own));
    return 0;
}

/*
 * dirtier — writes a known number of pages per step, for incremental-checkpoint tests and the
 * pause benchmark.
 *
 *   dirtier MIB PAGES_PER_STEP STEPS [SLEEP_MS [DISCARD_PAGES]]     (SLEEP_MS default 100)
 *
 * Fills MIB MiB, prints "ready", then each step rewrites the next PAGES_PER_STEP pages (cycling
 * through the area), prints one line and sleeps SLEEP_MS. Between two lines exactly
 * PAGES_PER_STEP pages of the area are written. With DISCARD_PAGES, each step also drops that many
 * pages from the far end of the area (madvise MADV_DONTNEED: they read as zeros), moving down
 * step by step. It ends with a digest of the whole area, which depends only on the arguments.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) { fprintf(stderr, "usage: dirtier MIB PAGES_PER_STEP STEPS [SLEEP_MS]\n"); return 2; }
    size_t pages = (size_t)atoi(argv[1]) * 256;
    size_t per_step = (size_t)atol(argv[2]);
    int steps = atoi(argv[3]);
    int sleep_ms = argc > 4 ? atoi(argv[4]) : 100;
    size_t discard = argc > 5 ? (size_t)atol(argv[5]) : 0;
    uint64_t *a = mmap(NULL, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED) { perror("mmap"); return 1; }
    for (size_t i = 0; i < pages * 512; i++) a[i] = i * 0x9E3779B97F4A7C15ULL;
    printf("ready %zu pages\n", pages);
    fflush(stdout);
    if (sleep_ms > 0) usleep((useconds_t)sleep_ms * 1000);
    size_t cursor = 0;
    for (int s = 0; s < steps; s++) {
        for (size_t k = 0; k < per_step; k++) {
            uint64_t *p = a + (cursor % pages) * 512;
            for (int w = 0; w < 512; w += 64) p[w] = p[w] * 31 + (uint64_t)s;
            cursor++;
        }
        if (discard > 0 && (size_t)(s + 1) * discard <= pages) {
            size_t first = pages - (size_t)(s + 1) * discard;
            if (madvise(a + first * 512, discard * 4096, MADV_DONTNEED) != 0) { perror("madvise"); return 1; }
        }
        printf("step %d dirtied %zu pages\n", s, per_step);
        fflush(stdout);
        if (sleep_ms > 0) usleep((useconds_t)sleep_ms * 1000);
    }
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < pages * 512; i++) h = (h ^ a[i]) * 1099511628211ULL;
    printf("done digest %016llx\n", (unsigned long long)h);
    printf("PASS dirtier\n");
    return 0;
}

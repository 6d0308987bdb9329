/*
 * fillwait.c - fill a region, wait to be told, then read it back timing every page (for the
 * recovery benchmark: the wait is when a memory node holding the region is killed).
 *
 * Usage: fillwait MIB
 *
 * Fills MIB MiB with word i = i * K (K odd), prints "filled" (stdout, flushed), then waits for a
 * line on stdin. Then reads the region once in order, checking every word, and prints
 * "PASS fillwait" or "FAIL: ...". On stderr: "fillwait read_seconds=X slowest_page_ms=Y
 * slowest_offset=Z", the slowest page being the longest any one first touch took (a fault that
 * waited for a recovery).
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define K 0x9E3779B97F4A7C15ull
#define PAGE_WORDS 512

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    char *end;
    if (argc != 2)
        goto usage;
    unsigned long long mib = strtoull(argv[1], &end, 10);
    if (*end || !*argv[1] || argv[1][0] == '-' || mib < 1 || mib > (1u << 20))
        goto usage;

    size_t n = ((size_t)mib << 20) / 8;
    uint64_t *a = aligned_alloc(4096, n * 8);
    if (!a) {
        printf("FAIL: out of memory allocating %llu MiB\n", mib);
        return 1;
    }
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++, v += K)
        a[i] = v;
    printf("filled\n");
    fflush(stdout);

    char line[64];
    if (!fgets(line, sizeof line, stdin)) {
        printf("FAIL: stdin closed before the go\n");
        return 1;
    }

    double t0 = now(), slowest = 0;
    size_t slowestAt = 0;
    v = 0;
    for (size_t p = 0; p < n; p += PAGE_WORDS) {
        double s = now();
        volatile uint64_t first = a[p];
        double took = now() - s;
        (void)first;
        if (took > slowest) {
            slowest = took;
            slowestAt = p * 8;
        }
        size_t e = p + PAGE_WORDS < n ? p + PAGE_WORDS : n;
        for (size_t i = p; i < e; i++, v += K)
            if (a[i] != v) {
                printf("FAIL: offset %zu: expected 0x%016" PRIx64 " got 0x%016" PRIx64 "\n", i * 8, v, a[i]);
                return 1;
            }
    }
    double t1 = now();
    printf("PASS fillwait\n");
    fflush(stdout);
    fprintf(stderr, "fillwait read_seconds=%.3f slowest_page_ms=%.1f slowest_offset=%zu\n", t1 - t0, slowest * 1e3, slowestAt);
    free(a);
    return 0;

usage:
    fprintf(stderr, "usage: fillwait MIB\n");
    return 2;
}

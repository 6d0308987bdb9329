/*
 * seqscan.c - sequential fill + scan throughput workload (for benchmarks).
 *
 * Usage: seqscan [MIB [PASSES]]   (defaults: 256 3)
 *
 * Allocates a page-aligned region of MIB MiB, fills 8-byte word i with
 * i * K (K odd), then scans the whole region sequentially PASSES times,
 * summing the words and checking every word against its expected value.
 * Each pass's sum must equal the closed-form K * n(n-1)/2 (mod 2^64).
 *
 * Output (stdout, deterministic): words, the per-pass sum, then
 * "PASS seqscan".  On stderr only, fill and scan throughput in MiB/s as
 * "seqscan_mibps fill=X scan=Y".  Any mismatch prints "FAIL: ..." and exits 1.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define K 0x9E3779B97F4A7C15ull
#define BLOCK_WORDS ((size_t)1 << 17) /* 1 MiB */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    unsigned long long mib = 256, passes = 3;
    char *end;
    if (argc > 3)
        goto usage;
    if (argc > 1) {
        mib = strtoull(argv[1], &end, 10);
        if (*end || !*argv[1] || argv[1][0] == '-')
            goto usage;
    }
    if (argc > 2) {
        passes = strtoull(argv[2], &end, 10);
        if (*end || !*argv[2] || argv[2][0] == '-')
            goto usage;
    }
    if (mib < 1 || mib > (1u << 20))
        goto usage;

    size_t n = ((size_t)mib << 20) / 8;
    uint64_t *a = aligned_alloc(4096, n * 8);
    if (!a) {
        printf("FAIL: out of memory allocating %llu MiB\n", mib);
        return 1;
    }
    double t0 = now();
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++, v += K)
        a[i] = v;
    double t1 = now();

    /* sum_{i<n} i*K mod 2^64 */
    uint64_t tri = (n % 2 == 0) ? (uint64_t)(n / 2) * (uint64_t)(n - 1) : (uint64_t)n * (uint64_t)((n - 1) / 2);
    uint64_t expect = tri * K, sum = 0;
    for (unsigned long long pass = 0; pass < passes; pass++) {
        sum = 0;
        v = 0;
        for (size_t b = 0; b < n; b += BLOCK_WORDS) {
            size_t e = b + BLOCK_WORDS < n ? b + BLOCK_WORDS : n;
            uint64_t bad = 0, vb = v;
            for (size_t i = b; i < e; i++, v += K) {
                sum += a[i];
                bad |= a[i] ^ v;
            }
            if (bad) {
                for (size_t i = b; i < e; i++, vb += K)
                    if (a[i] != vb) {
                        printf("FAIL: pass %llu: offset %zu: expected 0x%016" PRIx64 " got 0x%016" PRIx64 "\n",
                               pass, i * 8, vb, a[i]);
                        return 1;
                    }
            }
        }
        if (sum != expect) {
            printf("FAIL: pass %llu: sum 0x%016" PRIx64 ", expected 0x%016" PRIx64 "\n", pass, sum, expect);
            return 1;
        }
    }
    double t2 = now();
    printf("seqscan mib=%llu passes=%llu words=%zu\n", mib, passes, n);
    printf("sum=0x%016" PRIx64 "\n", expect);
    printf("PASS seqscan\n");
    fflush(stdout);
    double m = (double)mib;
    fprintf(stderr, "seqscan_mibps fill=%.0f scan=%.0f\n", m / (t1 - t0 > 0 ? t1 - t0 : 1e-9),
            passes ? m * (double)passes / (t2 - t1 > 0 ? t2 - t1 : 1e-9) : 0.0);
    free(a);
    return 0;

usage:
    fprintf(stderr, "usage: seqscan [MIB [PASSES]]  (defaults: 256 3)\n");
    return 2;
}

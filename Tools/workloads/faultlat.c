/*
 * faultlat.c - random single-byte access latency probe (for benchmarks).
 *
 * Usage: faultlat [MIB [ROUNDS]]   (defaults: 64 2000)
 *
 * Allocates a page-aligned region of MIB MiB and writes every word of every
 * page (page p, word w holds splitmix64(p) + w * K).  Then ROUNDS times it
 * picks a random page and byte offset (xorshift64*, seed 1), reads that one
 * byte through a volatile pointer with clock_gettime(CLOCK_MONOTONIC) taken
 * right before and after, and checks the byte's value.  Under a
 * memory-disaggregation runtime with a small local budget most of these
 * reads fault and fetch the page remotely.
 *
 * Output (stdout, deterministic): pages, rounds, sum of the bytes read, then
 * "PASS faultlat".  On stderr only (timings vary):
 *     faultlat_us p50=X p99=Y n=Z
 * Any mismatch prints "FAIL: ..." and exits 1.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE 4096u
#define WORDS (PAGE / 8u)
#define WORD_STEP 0xD6E8FEB86659FD93ull

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    unsigned long long mib = 64, rounds = 2000;
    char *end;
    if (argc > 3)
        goto usage;
    if (argc > 1) {
        mib = strtoull(argv[1], &end, 10);
        if (*end || !*argv[1] || argv[1][0] == '-')
            goto usage;
    }
    if (argc > 2) {
        rounds = strtoull(argv[2], &end, 10);
        if (*end || !*argv[2] || argv[2][0] == '-')
            goto usage;
    }
    if (mib < 1 || mib > (1u << 20) || rounds > (1ull << 32))
        goto usage;

    size_t npages = ((size_t)mib << 20) / PAGE;
    unsigned char *mem = aligned_alloc(PAGE, npages * PAGE);
    uint64_t *lat = malloc((rounds ? rounds : 1) * sizeof *lat);
    if (!mem || !lat) {
        printf("FAIL: out of memory\n");
        return 1;
    }
    for (size_t p = 0; p < npages; p++) {
        uint64_t *q = (uint64_t *)(mem + p * PAGE), x = splitmix64(p);
        for (unsigned w = 0; w < WORDS; w++, x += WORD_STEP)
            q[w] = x;
    }

    uint64_t s = 1, bytesum = 0;
    for (unsigned long long r = 0; r < rounds; r++) {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        uint64_t a = s * 0x2545F4914F6CDD1Dull;
        size_t p = (size_t)((a >> 12) % npages), off = (size_t)(a & (PAGE - 1));
        volatile const unsigned char *ptr = mem + p * PAGE + off;
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        unsigned char got = *ptr;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        lat[r] = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000ull + (uint64_t)t1.tv_nsec - (uint64_t)t0.tv_nsec;

        uint64_t word = splitmix64(p) + (uint64_t)(off / 8) * WORD_STEP;
        unsigned char bytes[8];
        memcpy(bytes, &word, 8);
        if (got != bytes[off % 8]) {
            printf("FAIL: round %llu: page %zu offset %zu: expected 0x%02x got 0x%02x\n", r, p, p * PAGE + off,
                   bytes[off % 8], got);
            return 1;
        }
        bytesum += got;
    }

    printf("faultlat mib=%llu rounds=%llu pages=%zu bytesum=%" PRIu64 "\n", mib, rounds, npages, bytesum);
    printf("PASS faultlat\n");
    fflush(stdout);
    if (rounds) {
        qsort(lat, rounds, sizeof *lat, cmp_u64);
        size_t i50 = (size_t)(rounds / 2), i99 = (size_t)((rounds * 99 + 99) / 100) - 1;
        if (i99 >= rounds)
            i99 = rounds - 1;
        fprintf(stderr, "faultlat_us p50=%.3f p99=%.3f n=%llu\n", (double)lat[i50] / 1000.0,
                (double)lat[i99] / 1000.0, rounds);
    }
    free(lat);
    free(mem);
    return 0;

usage:
    fprintf(stderr, "usage: faultlat [MIB [ROUNDS]]  (defaults: 64 2000)\n");
    return 2;
}

/*
 * dontneed.c - discarding memory: MADV_DONTNEED, MADV_FREE, munmap + MAP_FIXED
 * remap, fresh calloc, with verification.
 *
 * Usage: dontneed [MIB]   (default: 64, minimum 8)
 *
 * Regions: A = anonymous mmap of MIB/2 MiB, B = malloc of MIB/4 MiB (only its
 * page-aligned interior is used), plus a calloc of MIB/4 MiB in step 6, so
 * about MIB MiB in all.  The program keeps a per-page model of what each page
 * must hold (zeros, or pattern generation 0..3 derived from region/page/word)
 * and verifies the regions against it after every step:
 *   1. fill A and B with generation 0;
 *   2. MADV_DONTNEED every other 1 MiB chunk (odd chunks) of A and B: those
 *      must read as zeros, the others keep their pattern;
 *   3. rewrite discarded chunks: chunks 1 mod 4 fully (generation 1), chunks
 *      3 mod 4 on every 4th page only;
 *   4. MADV_FREE the last quarter of A and the first quarter of B, then write
 *      generation 2 to every 3rd page there.  Written pages must hold the new
 *      data; each unwritten page must read either as all zeros or as its old
 *      contents (Linux allows both), checked per page;
 *   5. munmap 1.5 MiB of A starting at its first quarter (crossing chunk
 *      boundaries) and mmap MAP_FIXED anonymous at the same address: must read
 *      as zeros; then write generation 3 to its first half;
 *   6. calloc MIB/4 MiB: must be zeros; fill, verify, free; calloc again the
 *      same size: zeros again.
 * Output: page counts by state, a checksum over A and B that excludes the
 * MADV_FREE'd pages left unwritten (so it doesn't depend on whether the kernel
 * reclaimed them), then "PASS dontneed".  Any mismatch prints "FAIL: ..." and
 * exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_FREE
#define MADV_FREE 8
#endif

#define WORD_STEP 0xD6E8FEB86659FD93ull
#define ST_ZERO 0
#define ST_GEN(g) (1 + (g)) /* pattern generation g = 0..3 */
#define ST_MAYBE 0x80       /* MADV_FREE'd and not rewritten: zero or (state & 0x7f) */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

struct region {
    const char *name;
    unsigned tag;
    unsigned char *base; /* page aligned */
    size_t np;
    unsigned char *state;
};

static size_t PG, WPP, CH; /* page size, words per page, pages per 1 MiB chunk */
static const char *g_step = "init";

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL: %s: ", g_step);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    exit(1);
}

static inline uint64_t page_base(const struct region *r, size_t p, unsigned st)
{
    return splitmix64(((uint64_t)r->tag << 56) ^ ((uint64_t)st << 48) ^ p);
}

static void write_page(struct region *r, size_t p, unsigned gen)
{
    uint64_t *q = (uint64_t *)(r->base + p * PG), x = page_base(r, p, ST_GEN(gen));
    for (size_t w = 0; w < WPP; w++, x += WORD_STEP)
        q[w] = x;
    r->state[p] = (unsigned char)ST_GEN(gen);
}

/* 1 if page p holds exactly state st (not MAYBE) */
static int page_is(const struct region *r, size_t p, unsigned st)
{
    const uint64_t *q = (const uint64_t *)(r->base + p * PG);
    uint64_t bad = 0;
    if (st == ST_ZERO) {
        for (size_t w = 0; w < WPP; w++)
            bad |= q[w];
    } else {
        uint64_t x = page_base(r, p, st);
        for (size_t w = 0; w < WPP; w++, x += WORD_STEP)
            bad |= q[w] ^ x;
    }
    return bad == 0;
}

static void report_page(const struct region *r, size_t p, unsigned st, const char *note)
{
    const uint64_t *q = (const uint64_t *)(r->base + p * PG);
    uint64_t x = st == ST_ZERO ? 0 : page_base(r, p, st);
    for (size_t w = 0; w < WPP; w++, x += (st == ST_ZERO ? 0 : WORD_STEP))
        if (q[w] != x)
            fail("region %s page %zu offset %zu (state %u%s): expected 0x%016" PRIx64 " got 0x%016" PRIx64,
                 r->name, p, p * PG + w * 8, st, note, x, q[w]);
    fail("region %s page %zu: mismatch vanished on re-read", r->name, p);
}

static void verify_region(const struct region *r)
{
    for (size_t p = 0; p < r->np; p++) {
        unsigned st = r->state[p];
        if (st & ST_MAYBE) {
            unsigned old = st & 0x7f;
            if (!page_is(r, p, ST_ZERO) && !page_is(r, p, old)) {
                /* judge by the first word which of the two it was meant to be */
                const uint64_t *q = (const uint64_t *)(r->base + p * PG);
                if (q[0] == 0)
                    report_page(r, p, ST_ZERO, ", MADV_FREE'd: neither all zeros nor old contents");
                report_page(r, p, old, ", MADV_FREE'd: neither old contents nor all zeros");
            }
        } else if (!page_is(r, p, st)) {
            report_page(r, p, st, "");
        }
    }
}

static void xmadvise(struct region *r, size_t from, size_t to, int advice, const char *what)
{
    if (to <= from)
        return;
    if (madvise(r->base + from * PG, (to - from) * PG, advice) != 0)
        fail("madvise(%s) on region %s pages %zu..%zu: %s", what, r->name, from, to, strerror(errno));
}

static uint64_t checksum_region(const struct region *r, uint64_t cs, size_t *counted)
{
    for (size_t p = 0; p < r->np; p++) {
        if (r->state[p] & ST_MAYBE)
            continue;
        const uint64_t *q = (const uint64_t *)(r->base + p * PG);
        uint64_t s = 0;
        for (size_t w = 0; w < WPP; w++)
            s += q[w] * (2 * w + 1);
        cs = splitmix64(cs ^ s ^ ((uint64_t)r->state[p] << 56) ^ p);
        ++*counted;
    }
    return cs;
}

static void check_zero_bytes(const unsigned char *a, size_t n, const char *what)
{
    const uint64_t *q = (const uint64_t *)a;
    size_t nw = n / 8;
    for (size_t i = 0; i < nw; i++)
        if (q[i])
            fail("%s: offset %zu: expected 0 got 0x%016" PRIx64, what, i * 8, q[i]);
    for (size_t i = nw * 8; i < n; i++)
        if (a[i])
            fail("%s: offset %zu: expected 0 got 0x%02x", what, i, a[i]);
}

int main(int argc, char **argv)
{
    unsigned long long mib = 64;
    char *end = NULL;
    if (argc > 2 || (argc == 2 && (mib = strtoull(argv[1], &end, 10), *end || argv[1][0] == '-' || !*argv[1])) ||
        mib < 8 || mib > (1u << 20)) {
        fprintf(stderr, "usage: dontneed [MIB]  (default: 64, minimum 8)\n");
        return 2;
    }
    PG = (size_t)sysconf(_SC_PAGESIZE);
    WPP = PG / 8;
    CH = ((size_t)1 << 20) / PG;

    /* region A: anonymous mmap */
    struct region A = {.name = "A(mmap)", .tag = 0xA};
    size_t szA = (size_t)(mib / 2) << 20;
    A.base = mmap(NULL, szA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (A.base == MAP_FAILED)
        fail("mmap region A (%zu bytes): %s", szA, strerror(errno));
    A.np = szA / PG;

    /* region B: malloc, use the page-aligned interior */
    struct region B = {.name = "B(malloc)", .tag = 0xB};
    size_t szB = (size_t)(mib / 4) << 20;
    unsigned char *rawB = malloc(szB);
    if (!rawB)
        fail("malloc region B (%zu bytes)", szB);
    uintptr_t b0 = ((uintptr_t)rawB + PG - 1) & ~(uintptr_t)(PG - 1);
    B.base = (unsigned char *)b0;
    B.np = ((uintptr_t)rawB + szB - b0) / PG;

    A.state = calloc(A.np, 1);
    B.state = calloc(B.np, 1);
    if (!A.state || !B.state)
        fail("out of memory");
    struct region *R[2] = {&A, &B};

    g_step = "1 fill";
    for (int i = 0; i < 2; i++) {
        for (size_t p = 0; p < R[i]->np; p++)
            write_page(R[i], p, 0);
        verify_region(R[i]);
    }

    g_step = "2 MADV_DONTNEED odd chunks";
    for (int i = 0; i < 2; i++) {
        struct region *r = R[i];
        for (size_t c = 1; c * CH < r->np; c += 2) {
            size_t to = (c + 1) * CH < r->np ? (c + 1) * CH : r->np;
            xmadvise(r, c * CH, to, MADV_DONTNEED, "MADV_DONTNEED");
            memset(r->state + c * CH, ST_ZERO, to - c * CH);
        }
        verify_region(r);
    }

    g_step = "3 rewrite discarded chunks";
    for (int i = 0; i < 2; i++) {
        struct region *r = R[i];
        for (size_t c = 1; c * CH < r->np; c += 2)
            for (size_t p = c * CH; p < (c + 1) * CH && p < r->np; p++)
                if (c % 4 == 1 || p % 4 == 0)
                    write_page(r, p, 1);
        verify_region(r);
    }

    g_step = "4 MADV_FREE then partial rewrite";
    {
        size_t range[2][2] = {{A.np - A.np / 4, A.np}, {0, B.np / 4}};
        for (int i = 0; i < 2; i++) {
            struct region *r = R[i];
            size_t from = range[i][0], to = range[i][1];
            xmadvise(r, from, to, MADV_FREE, "MADV_FREE");
            for (size_t p = from; p < to; p++)
                r->state[p] |= ST_MAYBE;
            for (size_t p = from; p < to; p++)
                if (p % 3 == 0)
                    write_page(r, p, 2);
            verify_region(r);
        }
    }

    g_step = "5 munmap + mmap MAP_FIXED";
    {
        size_t from = A.np / 4, n = CH + CH / 2;
        unsigned char *want = A.base + from * PG;
        if (munmap(want, n * PG) != 0)
            fail("munmap: %s", strerror(errno));
        void *got = mmap(want, n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (got == MAP_FAILED)
            fail("mmap MAP_FIXED: %s", strerror(errno));
        if (got != want)
            fail("mmap MAP_FIXED returned a different address");
        memset(A.state + from, ST_ZERO, n);
        verify_region(&A);
        for (size_t p = from; p < from + n / 2; p++)
            write_page(&A, p, 3);
        verify_region(&A);
        verify_region(&B);
    }

    g_step = "6 calloc";
    {
        size_t szC = (size_t)(mib / 4) << 20;
        uint64_t *c = calloc(szC / 8, 8);
        if (!c)
            fail("calloc(%zu bytes)", szC);
        check_zero_bytes((const unsigned char *)c, szC, "first calloc");
        for (size_t i = 0; i < szC / 8; i++)
            c[i] = splitmix64(0xC000000000000000ull ^ i);
        for (size_t i = 0; i < szC / 8; i++)
            if (c[i] != splitmix64(0xC000000000000000ull ^ i))
                fail("calloc'd block after fill: offset %zu: expected 0x%016" PRIx64 " got 0x%016" PRIx64, i * 8,
                     splitmix64(0xC000000000000000ull ^ i), c[i]);
        free(c);
        c = calloc(szC / 8, 8);
        if (!c)
            fail("second calloc(%zu bytes)", szC);
        check_zero_bytes((const unsigned char *)c, szC, "second calloc");
        free(c);
    }

    g_step = "final";
    verify_region(&A);
    verify_region(&B);
    size_t counted = 0, cnt[2][6] = {{0}};
    uint64_t cs = checksum_region(&A, 0, &counted);
    cs = checksum_region(&B, cs, &counted);
    for (int i = 0; i < 2; i++)
        for (size_t p = 0; p < R[i]->np; p++) {
            unsigned st = R[i]->state[p];
            cnt[i][st & ST_MAYBE ? 5 : st]++;
        }

    printf("dontneed mib=%llu pages_A=%zu pages_B=%zu\n", mib, A.np, B.np);
    for (int i = 0; i < 2; i++)
        printf("%s: zero=%zu gen0=%zu gen1=%zu gen2=%zu gen3=%zu free_unwritten=%zu\n", R[i]->name, cnt[i][0],
               cnt[i][1], cnt[i][2], cnt[i][3], cnt[i][4], cnt[i][5]);
    printf("checksum=0x%016" PRIx64 " over %zu pages\n", cs, counted);
    munmap(A.base, szA);
    free(rawB);
    free(A.state);
    free(B.state);
    printf("PASS dontneed\n");
    return 0;
}

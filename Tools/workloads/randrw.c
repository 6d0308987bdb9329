/*
 * randrw.c - multi-threaded random page read/write with verification.
 *
 * Usage: randrw [MIB [THREADS [OPS_PER_THREAD [SEED]]]]   (defaults: 64 4 200000 1)
 *
 * One shared, page-aligned malloc'd (aligned_alloc) array of MIB MiB is split
 * into 4096-byte pages.  Every page has a 16-bit version (kept in a separate
 * array); the 8-byte word w of page p at version v holds
 *     base(p, v) + w * K        with base = splitmix64(seed, p, v).
 *
 * Phases, separated by a barrier built from a pthread mutex + condition
 * variable (not pthread_barrier):
 *   0. each thread writes its pages at version 0;
 *   1. OPS/2 random ops per thread, page p owned by thread p % THREADS;
 *   2. ownership rotates: page p now belongs to thread (p + 1) % THREADS, so
 *      each thread reads and rewrites pages last written by another thread
 *      (handed over through the mutex/condvar barrier); remaining ops;
 *   3. each thread verifies and checksums the pages it owns in phase 2.
 * An op picks a random owned page (per-thread xorshift64* seeded from SEED
 * and the thread index) and either reads it, checking every word, or bumps
 * its version and rewrites the whole page (half of the writes verify the old
 * contents first).  Owned page sets are disjoint within a phase, so the final
 * memory state - and the output - is independent of thread interleaving.
 * It does depend on THREADS (ownership changes with it).
 *
 * Output: totals of reads/writes, the checksum combined in thread order,
 * then "PASS randrw".  Any mismatch prints "FAIL: ..." and exits 1.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS (PAGE / 8u)
#define WORD_STEP 0xD6E8FEB86659FD93ull
#define MAX_THREADS 256

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t xorshift64s(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static uint64_t g_seed;
static size_t g_npages;
static unsigned g_threads;
static uint64_t g_ops;
static unsigned char *g_mem;
static uint16_t *g_ver;

static pthread_mutex_t g_print_mu = PTHREAD_MUTEX_INITIALIZER;

/* barrier: mutex + condition variable, generation counted */
static pthread_mutex_t g_bar_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_bar_cv = PTHREAD_COND_INITIALIZER;
static unsigned g_bar_arrived;
static unsigned g_bar_generation;
static unsigned g_phase; /* protected by g_bar_mu */

struct result {
    uint64_t reads, writes, checksum, pages;
};
static struct result g_res[MAX_THREADS];

static void phase_barrier(unsigned next_phase)
{
    pthread_mutex_lock(&g_bar_mu);
    unsigned gen = g_bar_generation;
    if (++g_bar_arrived == g_threads) {
        g_bar_arrived = 0;
        g_bar_generation++;
        g_phase = next_phase;
        pthread_cond_broadcast(&g_bar_cv);
    } else {
        while (gen == g_bar_generation)
            pthread_cond_wait(&g_bar_cv, &g_bar_mu);
    }
    if (g_phase != next_phase) {
        pthread_mutex_lock(&g_print_mu);
        printf("FAIL: barrier: phase is %u, expected %u\n", g_phase, next_phase);
        fflush(stdout);
        _exit(1);
    }
    pthread_mutex_unlock(&g_bar_mu);
}

static inline uint64_t page_base(size_t p, uint16_t v)
{
    return splitmix64((g_seed * 0x9E3779B97F4A7C15ull) ^ (((uint64_t)p << 16) | v));
}

static void write_page(size_t p, uint16_t v)
{
    uint64_t *q = (uint64_t *)(g_mem + p * PAGE);
    uint64_t x = page_base(p, v);
    for (unsigned w = 0; w < WORDS; w++, x += WORD_STEP)
        q[w] = x;
}

static void fail_page(unsigned t, const char *what, size_t p, uint16_t v)
{
    const uint64_t *q = (const uint64_t *)(g_mem + p * PAGE);
    uint64_t x = page_base(p, v);
    unsigned w = 0;
    for (; w < WORDS; w++, x += WORD_STEP)
        if (q[w] != x)
            break;
    pthread_mutex_lock(&g_print_mu);
    printf("FAIL: %s: thread %u page %zu version %u offset %zu: expected 0x%016" PRIx64
           " got 0x%016" PRIx64 "\n",
           what, t, p, (unsigned)v, p * PAGE + (size_t)w * 8, x, w < WORDS ? q[w] : 0);
    fflush(stdout);
    _exit(1);
}

/* verifies page p at version v; returns the page's word sum */
static uint64_t check_page(unsigned t, const char *what, size_t p, uint16_t v)
{
    const uint64_t *q = (const uint64_t *)(g_mem + p * PAGE);
    uint64_t x = page_base(p, v), bad = 0, sum = 0;
    for (unsigned w = 0; w < WORDS; w++, x += WORD_STEP) {
        bad |= q[w] ^ x;
        sum += q[w];
    }
    if (bad)
        fail_page(t, what, p, v);
    return sum;
}

/* pages owned by thread t when page p belongs to (p + shift) % threads */
static size_t owned_first(unsigned t, unsigned shift)
{
    return (size_t)((t + g_threads - shift % g_threads) % g_threads);
}

static size_t owned_count(size_t first)
{
    return first < g_npages ? (g_npages - first + g_threads - 1) / g_threads : 0;
}

static void run_ops(unsigned t, unsigned shift, uint64_t nops, uint64_t *rng, struct result *r)
{
    size_t first = owned_first(t, shift), cnt = owned_count(first);
    if (cnt == 0)
        return;
    for (uint64_t i = 0; i < nops; i++) {
        uint64_t a = xorshift64s(rng);
        size_t p = first + (size_t)(a % cnt) * g_threads;
        unsigned kind = (unsigned)(a >> 59); /* 0..31 */
        if (kind < 18) {
            check_page(t, "read", p, g_ver[p]);
            r->reads++;
        } else {
            if (kind & 1)
                check_page(t, "read-before-write", p, g_ver[p]);
            uint16_t v = (uint16_t)(g_ver[p] + 1);
            g_ver[p] = v;
            write_page(p, v);
            r->writes++;
        }
    }
}

static void *worker(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg;
    struct result *r = &g_res[t];
    uint64_t rng = splitmix64(g_seed ^ splitmix64(t + 1)) | 1;

    /* phase 0: initial contents of phase-1 pages */
    size_t first = owned_first(t, 0), cnt = owned_count(first);
    for (size_t k = 0; k < cnt; k++) {
        size_t p = first + k * g_threads;
        g_ver[p] = 0;
        write_page(p, 0);
    }
    phase_barrier(1);
    run_ops(t, 0, g_ops / 2, &rng, r);
    phase_barrier(2);
    run_ops(t, 1, g_ops - g_ops / 2, &rng, r);
    phase_barrier(3);

    first = owned_first(t, 1);
    cnt = owned_count(first);
    uint64_t cs = splitmix64(0x5EED0000ull + t);
    for (size_t k = 0; k < cnt; k++) {
        size_t p = first + k * g_threads;
        uint64_t s = check_page(t, "final", p, g_ver[p]);
        cs = splitmix64(cs ^ s ^ ((uint64_t)g_ver[p] << 48) ^ p);
    }
    r->checksum = cs;
    r->pages = cnt;
    return NULL;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !*s)
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: randrw [MIB [THREADS [OPS_PER_THREAD [SEED]]]]  (defaults: 64 4 200000 1)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    uint64_t mib = 64, threads = 4, ops = 200000, seed = 1;
    if (argc > 5 || (argc > 1 && parse_u64(argv[1], &mib)) || (argc > 2 && parse_u64(argv[2], &threads)) ||
        (argc > 3 && parse_u64(argv[3], &ops)) || (argc > 4 && parse_u64(argv[4], &seed)))
        usage();
    if (mib < 1 || mib > (1u << 20) || threads < 1 || threads > MAX_THREADS)
        usage(); /* MIB >= 1 gives >= 256 pages, so every thread owns pages */

    size_t bytes = (size_t)mib << 20;
    g_seed = seed;
    g_threads = (unsigned)threads;
    g_ops = ops;
    g_npages = bytes / PAGE;
    g_mem = aligned_alloc(PAGE, bytes);
    g_ver = malloc(g_npages * sizeof *g_ver);
    if (!g_mem || !g_ver) {
        printf("FAIL: out of memory allocating %zu bytes\n", bytes);
        return 1;
    }

    pthread_t tid[MAX_THREADS];
    for (unsigned t = 0; t < g_threads; t++) {
        int e = pthread_create(&tid[t], NULL, worker, (void *)(uintptr_t)t);
        if (e) {
            printf("FAIL: pthread_create: %s\n", strerror(e));
            return 1;
        }
    }
    for (unsigned t = 0; t < g_threads; t++)
        pthread_join(tid[t], NULL);

    uint64_t reads = 0, writes = 0, pages = 0, cs = 0;
    for (unsigned t = 0; t < g_threads; t++) {
        reads += g_res[t].reads;
        writes += g_res[t].writes;
        pages += g_res[t].pages;
        cs = splitmix64(cs ^ g_res[t].checksum);
    }
    if (pages != g_npages || reads + writes != ops * threads) {
        printf("FAIL: accounting: pages %" PRIu64 " of %zu, ops %" PRIu64 "\n", pages, g_npages, reads + writes);
        return 1;
    }
    printf("randrw mib=%" PRIu64 " threads=%" PRIu64 " ops_per_thread=%" PRIu64 " seed=%" PRIu64 "\n", mib,
           threads, ops, seed);
    printf("ops=%" PRIu64 " reads=%" PRIu64 " writes=%" PRIu64 " phases=%u\n", reads + writes, reads, writes,
           g_phase);
    printf("checksum=0x%016" PRIx64 "\n", cs);
    printf("PASS randrw\n");
    free(g_ver);
    free(g_mem);
    return 0;
}

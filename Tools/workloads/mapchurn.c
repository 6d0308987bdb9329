/*
 * mapchurn.c - churn of anonymous private mappings: mmap, partial munmap
 * (splitting), mremap grow/shrink, MAP_FIXED overlays, with verification.
 *
 * Usage: mapchurn [MIB [ROUNDS [SEED]]]   (defaults: 64 200 1)
 *
 * Keeps a table of up to 32 anonymous private mappings, each 1 page .. MIB/8
 * in size, whose total never exceeds MIB MiB.  Every page of a mapping has a
 * 32-bit key (kept in a malloc'd side array); word w of a page with key k
 * holds splitmix64(seed, k) + w * K.  Keys come from a global counter, so a
 * page rewritten later gets a fresh key.  Each round does one of:
 *   new        mmap a fresh mapping, check it reads as zeros, fill it;
 *   unmap      munmap a whole mapping;
 *   unmap-tail munmap the tail part of one (shrinks it);
 *   unmap-head munmap the head part of one (mapping now starts later);
 *   unmap-mid  munmap a middle part, splitting it into two table entries;
 *   grow       mremap bigger with MREMAP_MAYMOVE (mappings never overlaid): the old contents must be
 *              intact at the (possibly new) address, the new tail must read
 *              as zeros; then the tail is filled;
 *   shrink     mremap smaller in place (mappings never overlaid, since
 *              mremap of a range spanning several VMAs is EFAULT);
 *   overlay    mmap MAP_FIXED anonymous over part of a mapping: that part
 *              must read as zeros, then it is refilled with fresh keys;
 *   verify     verify one random mapping fully.
 * The mapping(s) touched by a structural op are verified in full afterwards,
 * and every 50 rounds all mappings are.  Decisions never depend on
 * addresses, so the output is deterministic.
 *
 * Output: the count of each op kind, live mappings/pages, a checksum over
 * all live mappings in table order, then "PASS mapchurn".  Any mismatch
 * prints "FAIL: ..." and exits 1.
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

#define MAXSLOTS 32
#define WORD_STEP 0xD6E8FEB86659FD93ull

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t g_rng;
static uint64_t rnd(void)
{
    uint64_t x = g_rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    g_rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}
static size_t rnd_below(size_t n) { return (size_t)(rnd() % n); }

struct slot {
    int live;
    uint32_t id;
    unsigned char *addr;
    size_t np;
    uint32_t *keys;
    int fragmented; /* had a MAP_FIXED overlay: may span several VMAs */
};

static struct slot g_slot[MAXSLOTS];
static size_t PG, WPP; /* page size, words per page */
static size_t g_limit_pages, g_max_pages, g_total_pages;
static uint64_t g_seed;
static uint32_t g_next_key = 1, g_next_id = 1;
static int g_round = -1;

enum { OP_NEW, OP_UNMAP, OP_UNMAP_TAIL, OP_UNMAP_HEAD, OP_UNMAP_MID, OP_GROW, OP_SHRINK, OP_OVERLAY, OP_VERIFY, OP_N };
static const char *op_name[OP_N] = {"new", "unmap", "unmap-tail", "unmap-head", "unmap-mid",
                                     "grow", "shrink", "overlay", "verify"};
static uint64_t g_count[OP_N];

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("FAIL: round %d: ", g_round);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
    exit(1);
}

static inline uint64_t key_base(uint32_t key) { return splitmix64((g_seed << 32) ^ key); }

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        fail("out of memory (%zu bytes)", n);
    return p;
}

static void fill_pages(struct slot *s, size_t from, size_t to)
{
    for (size_t p = from; p < to; p++) {
        uint32_t key = g_next_key++;
        s->keys[p] = key;
        uint64_t *q = (uint64_t *)(s->addr + p * PG), x = key_base(key);
        for (size_t w = 0; w < WPP; w++, x += WORD_STEP)
            q[w] = x;
    }
}

/* verifies pages [from, to) of s, returns a checksum of them */
static uint64_t verify_pages(const struct slot *s, size_t from, size_t to, const char *what)
{
    uint64_t cs = 0;
    for (size_t p = from; p < to; p++) {
        const uint64_t *q = (const uint64_t *)(s->addr + p * PG);
        uint64_t x = key_base(s->keys[p]), bad = 0, sum = 0;
        for (size_t w = 0; w < WPP; w++, x += WORD_STEP) {
            bad |= q[w] ^ x;
            sum += q[w];
        }
        if (bad) {
            x = key_base(s->keys[p]);
            for (size_t w = 0; w < WPP; w++, x += WORD_STEP)
                if (q[w] != x)
                    fail("%s: mapping %u (%zu pages) page %zu word offset %zu: expected 0x%016" PRIx64
                         " got 0x%016" PRIx64,
                         what, s->id, s->np, p, w * 8, x, q[w]);
        }
        cs = splitmix64(cs ^ sum ^ ((uint64_t)s->keys[p] << 32));
    }
    return cs;
}

static void verify_zero(const struct slot *s, size_t from, size_t to, const char *what)
{
    for (size_t p = from; p < to; p++) {
        const uint64_t *q = (const uint64_t *)(s->addr + p * PG);
        uint64_t bad = 0;
        for (size_t w = 0; w < WPP; w++)
            bad |= q[w];
        if (bad)
            for (size_t w = 0; w < WPP; w++)
                if (q[w])
                    fail("%s: mapping %u page %zu word offset %zu: expected 0 got 0x%016" PRIx64, what, s->id,
                         p, w * 8, q[w]);
    }
}

static struct slot *free_slot(void)
{
    for (int i = 0; i < MAXSLOTS; i++)
        if (!g_slot[i].live)
            return &g_slot[i];
    return NULL;
}

static int live_count(void)
{
    int n = 0;
    for (int i = 0; i < MAXSLOTS; i++)
        n += g_slot[i].live;
    return n;
}

static int eligible(const struct slot *s, size_t minpages, size_t maxpages, int whole)
{
    return s->live && s->np >= minpages && s->np <= maxpages && !(whole && s->fragmented);
}

/* random live slot with minpages..maxpages pages (and, if whole, a single
   VMA as far as we know), or NULL */
static struct slot *pick_slot_where(size_t minpages, size_t maxpages, int whole)
{
    int n = 0;
    for (int i = 0; i < MAXSLOTS; i++)
        n += eligible(&g_slot[i], minpages, maxpages, whole);
    if (!n)
        return NULL;
    int k = (int)rnd_below((size_t)n);
    for (int i = 0; i < MAXSLOTS; i++)
        if (eligible(&g_slot[i], minpages, maxpages, whole) && k-- == 0)
            return &g_slot[i];
    return NULL;
}

static struct slot *pick_slot(size_t minpages) { return pick_slot_where(minpages, SIZE_MAX, 0); }

static void xmunmap(void *a, size_t len, const char *what)
{
    if (munmap(a, len) != 0)
        fail("%s: munmap(%zu bytes): %s", what, len, strerror(errno));
}

static int op_new(void)
{
    struct slot *s = free_slot();
    size_t room = g_limit_pages - g_total_pages;
    if (!s || room == 0)
        return 0;
    size_t cap = g_max_pages < room ? g_max_pages : room;
    size_t small = cap < 16 ? cap : 16;
    size_t np = (rnd() & 1) ? 1 + rnd_below(small) : 1 + rnd_below(cap);
    void *a = mmap(NULL, np * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        fail("new: mmap(%zu bytes): %s", np * PG, strerror(errno));
    s->live = 1;
    s->id = g_next_id++;
    s->addr = a;
    s->np = np;
    s->keys = xmalloc(np * sizeof *s->keys);
    g_total_pages += np;
    verify_zero(s, 0, np, "new: fresh mapping");
    fill_pages(s, 0, np);
    verify_pages(s, 0, np, "new: after fill");
    return 1;
}

static void drop_slot(struct slot *s)
{
    xmunmap(s->addr, s->np * PG, "unmap");
    g_total_pages -= s->np;
    free(s->keys);
    memset(s, 0, sizeof *s);
}

static int op_unmap(void)
{
    struct slot *s = pick_slot(1);
    if (!s)
        return 0;
    drop_slot(s);
    return 1;
}

static int op_unmap_tail(void)
{
    struct slot *s = pick_slot(2);
    if (!s)
        return 0;
    size_t k = 1 + rnd_below(s->np - 1);
    xmunmap(s->addr + (s->np - k) * PG, k * PG, "unmap-tail");
    s->np -= k;
    g_total_pages -= k;
    verify_pages(s, 0, s->np, "unmap-tail: remaining part");
    return 1;
}

static int op_unmap_head(void)
{
    struct slot *s = pick_slot(2);
    if (!s)
        return 0;
    size_t k = 1 + rnd_below(s->np - 1);
    xmunmap(s->addr, k * PG, "unmap-head");
    s->addr += k * PG;
    s->np -= k;
    memmove(s->keys, s->keys + k, s->np * sizeof *s->keys);
    g_total_pages -= k;
    verify_pages(s, 0, s->np, "unmap-head: remaining part");
    return 1;
}

static int op_unmap_mid(void)
{
    struct slot *t = free_slot();
    struct slot *s = pick_slot(3);
    if (!s || !t)
        return 0;
    size_t a = 1 + rnd_below(s->np - 2);      /* first unmapped page, >= 1 */
    size_t k = 1 + rnd_below(s->np - 1 - a);  /* leaves >= 1 page after */
    size_t rest = s->np - a - k;
    xmunmap(s->addr + a * PG, k * PG, "unmap-mid");
    t->live = 1;
    t->id = g_next_id++;
    t->addr = s->addr + (a + k) * PG;
    t->np = rest;
    t->keys = xmalloc(rest * sizeof *t->keys);
    t->fragmented = s->fragmented;
    memcpy(t->keys, s->keys + a + k, rest * sizeof *t->keys);
    s->np = a;
    g_total_pages -= k;
    verify_pages(s, 0, s->np, "unmap-mid: head part");
    verify_pages(t, 0, t->np, "unmap-mid: tail part");
    return 1;
}

static int op_grow(void)
{
    size_t room = g_limit_pages - g_total_pages;
    if (room == 0)
        return 0;
    /* mremap of a range spanning several VMAs fails with EFAULT, so only
       grow mappings that never had an overlay */
    struct slot *s = pick_slot_where(1, g_max_pages - 1, 1);
    if (!s)
        return 0;
    size_t cap = g_max_pages - s->np;
    if (cap > room)
        cap = room;
    size_t k = 1 + rnd_below(cap), old = s->np, np = old + k;
    void *a = mremap(s->addr, old * PG, np * PG, MREMAP_MAYMOVE);
    if (a == MAP_FAILED)
        fail("grow: mremap(%zu -> %zu bytes): %s", old * PG, np * PG, strerror(errno));
    s->addr = a;
    s->np = np;
    uint32_t *nk = realloc(s->keys, np * sizeof *nk);
    if (!nk)
        fail("out of memory");
    s->keys = nk;
    g_total_pages += k;
    verify_pages(s, 0, old, "grow: old contents after mremap");
    verify_zero(s, old, np, "grow: new tail");
    fill_pages(s, old, np);
    verify_pages(s, 0, np, "grow: after filling tail");
    return 1;
}

static int op_shrink(void)
{
    struct slot *s = pick_slot_where(2, SIZE_MAX, 1);
    if (!s)
        return 0;
    size_t np = 1 + rnd_below(s->np - 1), k = s->np - np;
    void *a = mremap(s->addr, s->np * PG, np * PG, 0);
    if (a == MAP_FAILED)
        fail("shrink: mremap(%zu -> %zu bytes): %s", s->np * PG, np * PG, strerror(errno));
    if (a != (void *)s->addr)
        fail("shrink: mremap without MAYMOVE moved the mapping");
    s->np = np;
    g_total_pages -= k;
    verify_pages(s, 0, np, "shrink: remaining part");
    return 1;
}

static int op_overlay(void)
{
    struct slot *s = pick_slot(1);
    if (!s)
        return 0;
    size_t a = rnd_below(s->np), k = 1 + rnd_below(s->np - a);
    void *want = s->addr + a * PG;
    void *got = mmap(want, k * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    if (got == MAP_FAILED)
        fail("overlay: mmap MAP_FIXED (%zu bytes): %s", k * PG, strerror(errno));
    if (got != want)
        fail("overlay: mmap MAP_FIXED returned a different address");
    s->fragmented = 1;
    verify_zero(s, a, a + k, "overlay: replaced part");
    fill_pages(s, a, a + k);
    verify_pages(s, 0, s->np, "overlay: whole mapping after refill");
    return 1;
}

static int op_verify(void)
{
    struct slot *s = pick_slot(1);
    if (!s)
        return 0;
    verify_pages(s, 0, s->np, "verify");
    return 1;
}

static int (*const op_fn[OP_N])(void) = {op_new,  op_unmap,  op_unmap_tail, op_unmap_head, op_unmap_mid,
                                         op_grow, op_shrink, op_overlay,    op_verify};

static uint64_t verify_all(const char *what)
{
    uint64_t cs = 0;
    for (int i = 0; i < MAXSLOTS; i++)
        if (g_slot[i].live)
            cs = splitmix64(cs ^ verify_pages(&g_slot[i], 0, g_slot[i].np, what) ^ g_slot[i].np);
    return cs;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !*s || s[0] == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end)
        return -1;
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t mib = 64, rounds = 200, seed = 1;
    if (argc > 4 || (argc > 1 && parse_u64(argv[1], &mib)) || (argc > 2 && parse_u64(argv[2], &rounds)) ||
        (argc > 3 && parse_u64(argv[3], &seed)) || mib < 1 || mib > (1u << 20)) {
        fprintf(stderr, "usage: mapchurn [MIB [ROUNDS [SEED]]]  (defaults: 64 200 1)\n");
        return 2;
    }
    PG = (size_t)sysconf(_SC_PAGESIZE);
    WPP = PG / 8;
    g_seed = seed;
    g_rng = splitmix64(seed ^ 0x6D617063ull) | 1;
    g_limit_pages = ((size_t)mib << 20) / PG;
    g_max_pages = g_limit_pages / 8 ? g_limit_pages / 8 : 1;

    for (uint64_t r = 0; r < rounds; r++) {
        g_round = (int)r;
        /* weights; while below half the budget, favour growth */
        static const unsigned w_normal[OP_N] = {20, 6, 8, 6, 8, 14, 8, 12, 10};
        static const unsigned w_low[OP_N] = {36, 2, 6, 4, 8, 20, 4, 10, 6};
        const unsigned *w = g_total_pages * 2 < g_limit_pages ? w_low : w_normal;
        unsigned sum = 0;
        for (int i = 0; i < OP_N; i++)
            sum += w[i];
        unsigned x = (unsigned)rnd_below(sum);
        int op = 0;
        while (x >= w[op])
            x -= w[op++];
        /* if infeasible, try the following kinds in order */
        int done = 0;
        for (int i = 0; i < OP_N && !done; i++) {
            int o = (op + i) % OP_N;
            if (op_fn[o]()) {
                g_count[o]++;
                done = 1;
            }
        }
        if (!done)
            fail("no operation possible");
        if (g_total_pages > g_limit_pages)
            fail("accounting: %zu pages live, limit %zu", g_total_pages, g_limit_pages);
        if ((r + 1) % 50 == 0)
            verify_all("periodic verify");
    }
    g_round = -1;
    uint64_t cs = verify_all("final verify");

    printf("mapchurn mib=%" PRIu64 " rounds=%" PRIu64 " seed=%" PRIu64 "\n", mib, rounds, seed);
    for (int i = 0; i < OP_N; i++)
        printf("%s=%" PRIu64 "%s", op_name[i], g_count[i], i + 1 < OP_N ? " " : "\n");
    printf("live_mappings=%d live_pages=%zu keys_used=%" PRIu32 "\n", live_count(), g_total_pages,
           g_next_key - 1);
    printf("checksum=0x%016" PRIx64 "\n", cs);
    for (int i = 0; i < MAXSLOTS; i++)
        if (g_slot[i].live)
            drop_slot(&g_slot[i]);
    printf("PASS mapchurn\n");
    return 0;
}

/*
 * forksys.c - process creation while holding a large private region: fork
 * (copy-on-write in both directions), system(), posix_spawn, vfork + exec.
 *
 * Usage: forksys [MIB]   (default: 64)
 *
 * Fills a page-aligned malloc'd region of MIB MiB with a per-page pattern
 * (generation 0), then:
 *   (a) fork(): the child verifies the whole region (generation 0 everywhere,
 *       even while the parent is concurrently rewriting its own copy), then
 *       rewrites every page p with p % 8 == 0 (generation 1) and verifies
 *       its whole copy again; it exits 0 if all is fine, 3 otherwise.  The
 *       parent meanwhile rewrites pages p % 8 == 4 (generation 2), waitpid's,
 *       requires exit status 0, and verifies its copy: the child's writes must
 *       not be visible, its own must be;
 *   (b) system("echo child-says-hello") must return exit status 0 (stdout is
 *       flushed first, so the line lands at a fixed place in the output);
 *   (c) posix_spawn("/bin/sh", "-c", "exit 7") must exit with status 7;
 *   (d) vfork() + execv("/bin/true") must exit with status 0.
 * The region is verified after each step.  Output: one line per step, a
 * checksum of the region, then "PASS forksys".  Any mismatch prints
 * "FAIL: ..." and exits 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS (PAGE / 8u)
#define WORD_STEP 0xD6E8FEB86659FD93ull

extern char **environ;

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static unsigned char *g_mem;
static size_t g_npages;

static inline uint64_t page_base(size_t p, unsigned gen) { return splitmix64(((uint64_t)gen << 48) ^ p); }

static void write_page(size_t p, unsigned gen)
{
    uint64_t *q = (uint64_t *)(g_mem + p * PAGE), x = page_base(p, gen);
    for (unsigned w = 0; w < WORDS; w++, x += WORD_STEP)
        q[w] = x;
}

/* expected generation of page p: gens[p % 8] */
typedef unsigned gens_t[8];

/* returns 0 if the region matches; otherwise prints FAIL (with who) and returns -1 */
static int verify(const char *who, const gens_t gens, uint64_t *checksum)
{
    uint64_t cs = 0;
    for (size_t p = 0; p < g_npages; p++) {
        const uint64_t *q = (const uint64_t *)(g_mem + p * PAGE);
        uint64_t x = page_base(p, gens[p % 8]), bad = 0, sum = 0;
        for (unsigned w = 0; w < WORDS; w++, x += WORD_STEP) {
            bad |= q[w] ^ x;
            sum += q[w];
        }
        if (bad) {
            x = page_base(p, gens[p % 8]);
            unsigned w = 0;
            while (w < WORDS && q[w] == x)
                w++, x += WORD_STEP;
            printf("FAIL: %s: page %zu offset %zu (generation %u): expected 0x%016" PRIx64 " got 0x%016" PRIx64
                   "\n",
                   who, p, p * PAGE + (size_t)w * 8, gens[p % 8], x, w < WORDS ? q[w] : 0);
            fflush(stdout);
            return -1;
        }
        cs = splitmix64(cs ^ sum ^ p);
    }
    if (checksum)
        *checksum = cs;
    return 0;
}

static void die(const char *fmt, const char *arg)
{
    printf("FAIL: ");
    printf(fmt, arg);
    printf("\n");
    fflush(stdout);
    exit(1);
}

static void check_status(const char *what, int st, int want)
{
    if (!WIFEXITED(st) || WEXITSTATUS(st) != want) {
        if (WIFSIGNALED(st))
            printf("FAIL: %s: killed by signal %d, expected exit %d\n", what, WTERMSIG(st), want);
        else
            printf("FAIL: %s: status 0x%x, expected exit %d\n", what, (unsigned)st, want);
        fflush(stdout);
        exit(1);
    }
}

static pid_t xwaitpid(pid_t pid, int *st)
{
    pid_t r;
    do
        r = waitpid(pid, st, 0);
    while (r < 0 && errno == EINTR);
    if (r != pid)
        die("waitpid: %s", strerror(errno));
    return r;
}

/* kept small and separate: nothing but exec/_exit may happen in a vfork child */
static pid_t vfork_exec_true(void)
{
    static char *const args[] = {"/bin/true", NULL};
    pid_t pid = vfork();
    if (pid == 0) {
        execv("/bin/true", args);
        _exit(127);
    }
    return pid;
}

int main(int argc, char **argv)
{
    unsigned long long mib = 64;
    char *end = NULL;
    if (argc > 2 || (argc == 2 && (mib = strtoull(argv[1], &end, 10), *end || argv[1][0] == '-' || !*argv[1])) ||
        mib < 1 || mib > (1u << 20)) {
        fprintf(stderr, "usage: forksys [MIB]  (default: 64)\n");
        return 2;
    }
    size_t bytes = (size_t)mib << 20;
    g_npages = bytes / PAGE;
    g_mem = aligned_alloc(PAGE, bytes);
    if (!g_mem) {
        printf("FAIL: out of memory allocating %zu bytes\n", bytes);
        return 1;
    }
    for (size_t p = 0; p < g_npages; p++)
        write_page(p, 0);
    const gens_t all0 = {0, 0, 0, 0, 0, 0, 0, 0};
    if (verify("after fill", all0, NULL))
        return 1;
    printf("forksys mib=%llu pages=%zu\n", mib, g_npages);

    /* (a) fork */
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork: %s", strerror(errno));
    if (pid == 0) {
        if (verify("fork child: inherited region", all0, NULL))
            _exit(3);
        for (size_t p = 0; p < g_npages; p += 8)
            write_page(p, 1);
        const gens_t child = {1, 0, 0, 0, 0, 0, 0, 0};
        if (verify("fork child: after its own writes", child, NULL))
            _exit(3);
        _exit(0);
    }
    for (size_t p = 4; p < g_npages; p += 8)
        write_page(p, 2);
    int st;
    xwaitpid(pid, &st);
    check_status("fork child", st, 0);
    const gens_t parent = {0, 0, 0, 0, 2, 0, 0, 0};
    if (verify("parent after fork child exited", parent, NULL))
        return 1;
    printf("fork: child verified and exited 0; parent copy intact\n");

    /* (b) system() */
    fflush(stdout);
    int rc = system("echo child-says-hello");
    if (rc == -1)
        die("system: %s", strerror(errno));
    check_status("system(\"echo child-says-hello\")", rc, 0);
    if (verify("after system()", parent, NULL))
        return 1;
    printf("system: exit 0\n");

    /* (c) posix_spawn */
    fflush(stdout);
    char *const sh_args[] = {"/bin/sh", "-c", "exit 7", NULL};
    int e = posix_spawn(&pid, "/bin/sh", NULL, NULL, sh_args, environ);
    if (e)
        die("posix_spawn /bin/sh: %s", strerror(e));
    xwaitpid(pid, &st);
    check_status("posix_spawn /bin/sh -c 'exit 7'", st, 7);
    if (verify("after posix_spawn", parent, NULL))
        return 1;
    printf("posix_spawn: exit 7\n");

    /* (d) vfork + exec */
    fflush(stdout);
    pid = vfork_exec_true();
    if (pid < 0)
        die("vfork: %s", strerror(errno));
    xwaitpid(pid, &st);
    check_status("vfork+exec /bin/true", st, 0);
    printf("vfork+exec: exit 0\n");

    uint64_t cs;
    if (verify("final", parent, &cs))
        return 1;
    printf("checksum=0x%016" PRIx64 "\n", cs);
    free(g_mem);
    printf("PASS forksys\n");
    return 0;
}

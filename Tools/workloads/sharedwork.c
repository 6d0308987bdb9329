/*
 * sharedwork.c - forked workers that share memory and talk through pipes.
 *
 * Usage: sharedwork [ROUNDS [WORKERS [MIB]]]   (defaults: 40, 3, 8)
 *
 * The parent maps, before it forks:
 *   - MIB MiB of MAP_SHARED|MAP_ANONYMOUS memory (the workers' slots),
 *   - a 64 KiB memfd, mapped shared (a round counter and a log of digests),
 *   - a 16 KiB file it unlinks right after mapping it shared (a scoreboard),
 * and one pipe to and one pipe from each of WORKERS forked workers. Each round
 * it sends every worker the round number; worker k rewrites its own slice of
 * the shared memory from the round and the last round's digest (which the
 * parent logged into the memfd after the fork), adds to its scoreboard entry and answers with a
 * digest of its slice. The parent checks each answer against the memory it
 * sees itself, logs the round's digest into the memfd and prints it; a round
 * takes a short sleep so that a checkpoint lands in the middle. At the end the
 * workers exit with a status the parent checks, and it prints the scoreboard
 * and PASS. The output depends only on the arguments: a plain run and one
 * checkpointed, killed and restored mid-way must print the same.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXW 16

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static void fail(const char *what) {
    printf("FAIL: %s\n", what);
    exit(1);
}

static void readAll(int fd, void *p, size_t n) {
    char *c = p;
    while (n > 0) {
        ssize_t r = read(fd, c, n);
        if (r <= 0) fail("read from a pipe");
        c += r;
        n -= (size_t)r;
    }
}

static void writeAll(int fd, const void *p, size_t n) {
    if (write(fd, p, n) != (ssize_t)n) fail("write to a pipe");
}

static uint64_t sliceDigest(const uint64_t *slice, size_t words) {
    uint64_t h = 0;
    for (size_t i = 0; i < words; i++) h = mix(h ^ slice[i]);
    return h;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 40;
    int workers = argc > 2 ? atoi(argv[2]) : 3;
    size_t mib = argc > 3 ? (size_t)atoi(argv[3]) : 8;
    if (workers < 1 || workers > MAXW || rounds < 1 || mib < 1) fail("arguments");
    setvbuf(stdout, NULL, _IOLBF, 0);

    size_t bytes = mib << 20, words = bytes / 8, sliceWords = words / (size_t)workers;
    uint64_t *shared = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) fail("mmap shared anonymous");
    for (size_t i = 0; i < words; i++) shared[i] = mix(i);

    int mfd = memfd_create("sharedwork-log", MFD_CLOEXEC);
    if (mfd < 0 || ftruncate(mfd, 64 << 10) != 0) fail("memfd");
    uint64_t *log = mmap(NULL, 64 << 10, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    if (log == MAP_FAILED) fail("mmap memfd");
    close(mfd);

    char path[] = "/tmp/sharedwork-board-XXXXXX";
    int bfd = mkstemp(path);
    if (bfd < 0 || ftruncate(bfd, 16 << 10) != 0) fail("scoreboard file");
    uint64_t *board = mmap(NULL, 16 << 10, PROT_READ | PROT_WRITE, MAP_SHARED, bfd, 0);
    if (board == MAP_FAILED) fail("mmap scoreboard");
    unlink(path);
    close(bfd);

    int toWorker[MAXW][2], fromWorker[MAXW][2];
    pid_t pids[MAXW];
    for (int k = 0; k < workers; k++) {
        if (pipe(toWorker[k]) != 0 || pipe(fromWorker[k]) != 0) fail("pipe");
        pids[k] = fork();
        if (pids[k] < 0) fail("fork");
        if (pids[k] == 0) {
            uint64_t *mine = shared + (size_t)k * sliceWords;
            for (;;) {
                int32_t r;
                readAll(toWorker[k][0], &r, sizeof r);
                if (r < 0) _exit(10 + k);
                // Each word from the round, its old value and the last round's digest, which the
                // parent wrote into the memfd after this worker was forked.
                uint64_t other = r > 0 ? log[1 + (r - 1) % 8000] : 0;
                for (size_t i = 0; i < sliceWords; i++) mine[i] = mix(mine[i] ^ (uint64_t)r ^ other);
                board[k] += (uint64_t)r + 1;
                uint64_t d = sliceDigest(mine, sliceWords);
                writeAll(fromWorker[k][1], &d, sizeof d);
            }
        }
        close(toWorker[k][0]);
        close(fromWorker[k][1]);
    }

    struct timespec pause = {0, 60 * 1000 * 1000};
    for (int32_t r = 0; r < rounds; r++) {
        for (int k = 0; k < workers; k++) writeAll(toWorker[k][1], &r, sizeof r);
        uint64_t roundDigest = 0;
        for (int k = 0; k < workers; k++) {
            uint64_t d;
            readAll(fromWorker[k][0], &d, sizeof d);
            if (d != sliceDigest(shared + (size_t)k * sliceWords, sliceWords)) fail("a worker's digest differs from the shared memory");
            roundDigest = mix(roundDigest ^ d);
        }
        log[0] = (uint64_t)r + 1;
        log[1 + r % 8000] = roundDigest;
        printf("round %d %016" PRIx64 "\n", r, roundDigest);
        nanosleep(&pause, NULL);
    }
    int32_t stop = -1;
    for (int k = 0; k < workers; k++) writeAll(toWorker[k][1], &stop, sizeof stop);
    for (int k = 0; k < workers; k++) {
        int status;
        if (waitpid(pids[k], &status, 0) != pids[k] || !WIFEXITED(status) || WEXITSTATUS(status) != 10 + k) fail("a worker's exit status");
    }
    if (log[0] != (uint64_t)rounds) fail("the memfd's round counter");
    for (int k = 0; k < workers; k++) printf("worker %d score %" PRIu64 "\n", k, board[k]);
    printf("PASS sharedwork\n");
    return 0;
}

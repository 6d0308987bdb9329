/*
 * teamwork — a multi-threaded computation with shared state, for checkpoint/restore tests.
 *
 *   teamwork ROUNDS THREADS MIB DATAFILE [SLEEP_MS]     (SLEEP_MS default 100)
 *
 * THREADS workers share MIB MiB. Each round the main thread hands out work under a mutex and
 * condition variable; each worker rewrites its slice, folding it into integer and floating-point
 * state it keeps in registers across rounds, and reports back. The main thread then
 *   - prints a line with the round's hashes,
 *   - appends a record to DATAFILE (a regular file it keeps open),
 *   - writes a record into a pipe, whose reader thread drains it every fourth round up to the
 *     round before, so the pipe always holds data (a restore that lost it shows in the reader's totals).
 * At the end it reads DATAFILE back and prints its digest and the reader's totals. The output
 * depends only on the arguments: a run checkpointed, killed and restored prints what a plain run does.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_ready = PTHREAD_COND_INITIALIZER;
static pthread_cond_t work_done = PTHREAD_COND_INITIALIZER;
static pthread_cond_t drain_now = PTHREAD_COND_INITIALIZER;
static int round_no = -1, finished = 0, stop = 0, drain_round = -1;
static uint64_t round_hash;
static double *energies;   /* per worker, summed by main in worker order */

static uint64_t *memory;
static size_t words_per_thread;
static int threads;
static int pipe_fds[2];
static uint64_t reader_records, reader_sum;

struct record { uint64_t round, hash; };

static void *worker(void *arg) {
    int id = (int)(intptr_t)arg;
    uint64_t *mine = memory + (size_t)id * words_per_thread;
    double energy = 1.0 + id;   /* lives in an SSE register across rounds */
    int seen = -1;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (round_no == seen && !stop) pthread_cond_wait(&work_ready, &lock);
        if (stop) { pthread_mutex_unlock(&lock); return NULL; }
        seen = round_no;
        pthread_mutex_unlock(&lock);

        uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)id;
        for (size_t i = (size_t)seen % 13; i < words_per_thread; i += 13) {
            mine[i] = mine[i] * 6364136223846793005ULL + (uint64_t)seen;
            h = (h ^ mine[i]) * 1099511628211ULL;
        }
        energy = energy * 0.999 + cos((double)seen + id) * 0.25;

        pthread_mutex_lock(&lock);
        round_hash ^= h;
        energies[id] = energy;
        finished++;
        pthread_cond_signal(&work_done);
        pthread_mutex_unlock(&lock);
    }
}

static void *reader(void *arg) {
    (void)arg;
    int last = -1;
    for (;;) {
        pthread_mutex_lock(&lock);
        while (drain_round == last && !stop) pthread_cond_wait(&drain_now, &lock);
        int until = drain_round, ending = stop;
        pthread_mutex_unlock(&lock);
        /* Drain exactly the records of rounds up to `until` (or everything, at the end). */
        struct record r;
        while (ending || last < until) {
            ssize_t n = read(pipe_fds[0], &r, sizeof r);
            if (n == 0) return NULL;
            if (n != sizeof r) { perror("read pipe"); exit(2); }
            reader_records++;
            reader_sum = reader_sum * 31 + r.hash + r.round;
            last = (int)r.round;
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 5) { fprintf(stderr, "usage: teamwork ROUNDS THREADS MIB DATAFILE [SLEEP_MS]\n"); return 2; }
    int rounds = atoi(argv[1]);
    threads = atoi(argv[2]);
    size_t bytes = (size_t)atoi(argv[3]) << 20;
    int sleep_ms = argc > 5 ? atoi(argv[5]) : 100;
    memory = malloc(bytes);
    if (!memory) { perror("malloc"); return 1; }
    words_per_thread = bytes / 8 / (size_t)threads;
    for (size_t i = 0; i < bytes / 8; i++) memory[i] = i * 0x9E3779B97F4A7C15ULL;
    int data = open(argv[4], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (data < 0) { perror(argv[4]); return 1; }
    if (pipe2(pipe_fds, O_CLOEXEC) != 0) { perror("pipe"); return 1; }

    energies = calloc((size_t)threads, sizeof *energies);
    pthread_t *tids = calloc((size_t)threads + 1, sizeof *tids);
    for (int i = 0; i < threads; i++) pthread_create(&tids[i], NULL, worker, (void *)(intptr_t)i);
    pthread_create(&tids[threads], NULL, reader, NULL);

    double total = 0.0;
    for (int r = 0; r < rounds; r++) {
        pthread_mutex_lock(&lock);
        round_hash = 0;
        finished = 0;
        round_no = r;
        pthread_cond_broadcast(&work_ready);
        while (finished < threads) pthread_cond_wait(&work_done, &lock);
        uint64_t h = round_hash;
        for (int i = 0; i < threads; i++) total += energies[i];
        pthread_mutex_unlock(&lock);

        printf("round %d hash %016llx total %.17g\n", r, (unsigned long long)h, total);
        fflush(stdout);
        char line[64];
        int len = snprintf(line, sizeof line, "%d %016llx\n", r, (unsigned long long)h);
        if (write(data, line, (size_t)len) != len) { perror("write data"); return 1; }
        struct record rec = { (uint64_t)r, h };
        if (write(pipe_fds[1], &rec, sizeof rec) != sizeof rec) { perror("write pipe"); return 1; }
        if (r % 4 == 3) {
            pthread_mutex_lock(&lock);
            drain_round = r - 1;   /* the newest record stays in the pipe */
            pthread_cond_signal(&drain_now);
            pthread_mutex_unlock(&lock);
        }
        if (sleep_ms > 0) usleep((useconds_t)sleep_ms * 1000);
    }
    pthread_mutex_lock(&lock);
    stop = 1;
    pthread_cond_broadcast(&work_ready);
    pthread_cond_broadcast(&drain_now);
    pthread_mutex_unlock(&lock);
    close(pipe_fds[1]);
    for (int i = 0; i <= threads; i++) pthread_join(tids[i], NULL);

    /* The data file, read back whole. */
    uint64_t digest = 1469598103934665603ULL;
    char buf[4096];
    ssize_t n;
    lseek(data, 0, SEEK_SET);
    while ((n = read(data, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++) digest = (digest ^ (uint8_t)buf[i]) * 1099511628211ULL;
    printf("data digest %016llx, pipe records %llu sum %016llx\n", (unsigned long long)digest,
           (unsigned long long)reader_records, (unsigned long long)reader_sum);
    printf("PASS teamwork\n");
    return 0;
}

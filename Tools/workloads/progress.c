/*
 * progress — a long computation that reports as it goes, for checkpoint/restore tests.
 *
 *   progress STEPS MIB [SLEEP_MS]     (defaults 40 16 100)
 *
 * Fills MIB MiB, then for STEPS steps rewrites a strided part of it, folds it into an integer hash
 * and into floating-point sums (kept in SSE/AVX registers across the loop, so a restore that lost
 * the FPU state shows), prints one line per step and sleeps SLEEP_MS. The output depends only on the
 * arguments: a run checkpointed, killed and restored must print exactly what a plain run prints.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 40;
    size_t bytes = (size_t)(argc > 2 ? atoi(argv[2]) : 16) << 20;
    int sleep_ms = argc > 3 ? atoi(argv[3]) : 100;
    uint64_t *a = malloc(bytes);
    if (!a) { perror("malloc"); return 1; }
    size_t words = bytes / 8;
    for (size_t i = 0; i < words; i++) a[i] = i * 0x9E3779B97F4A7C15ULL;
    uint64_t h = 1469598103934665603ULL;
    double sum = 0.0, wave = 1.0;
    for (int s = 0; s < steps; s++) {
        for (size_t i = (size_t)s % 97; i < words; i += 97) {
            a[i] = a[i] * 31 + (uint64_t)s;
            h = (h ^ a[i]) * 1099511628211ULL;
            sum += (double)(a[i] & 0xffff) * 1e-3;
        }
        wave = wave * 1.0001 + sin((double)s) * 0.5;
        printf("step %d hash %016llx sum %.17g wave %.17g\n", s, (unsigned long long)h, sum, wave);
        fflush(stdout);
        if (sleep_ms > 0) usleep((useconds_t)sleep_ms * 1000);
    }
    uint64_t check = 0;
    for (size_t i = 0; i < words; i++) check = (check ^ a[i]) * 1099511628211ULL;
    printf("done hash %016llx check %016llx sum %.17g\n", (unsigned long long)h, (unsigned long long)check, sum);
    printf("PASS progress\n");
    return 0;
}

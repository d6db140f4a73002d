/* loop.c: the benchmark workload. Pinned to one CPU, it calls close(-1) N times
 * (an invalid descriptor: the syscall does almost nothing, so the hook's cost
 * dominates), optionally paced to a target rate, and prints the elapsed
 * nanoseconds per call. Usage: loop CPU N [RATE_PER_SECOND] */
#define _GNU_SOURCE
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s CPU N [RATE]\n", argv[0]);
        return 2;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(atoi(argv[1]), &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
        perror("sched_setaffinity");
        return 1;
    }
    long n = atol(argv[2]);
    double rate = argc > 3 ? atof(argv[3]) : 0;
    long long start = now_ns();
    for (long i = 0; i < n; i++) {
        syscall(SYS_close, -1);
        if (rate > 0 && (i & 63) == 63) {
            long long due = start + (long long)((i + 1) * 1e9 / rate);
            while (now_ns() < due)
                ;
        }
    }
    long long elapsed = now_ns() - start;
    printf("%.3f\n", (double)elapsed / n);
    return 0;
}

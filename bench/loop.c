/* loop.c: the benchmark workload. Pinned to one CPU, it calls close(-1) N times
 * (an invalid descriptor: the syscall does almost nothing, so the hook's cost
 * dominates), optionally paced to a target rate, and prints the elapsed
 * nanoseconds per call. Usage: loop CPU N [RATE_PER_SECOND] */
#include "pinned.h"
#include <unistd.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s CPU N [RATE]\n", argv[0]);
        return 2;
    }
    if (pin(argv[1]) != 0)
        return 1;
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

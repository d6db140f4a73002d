/* pack.c: the container-metrics pack's workloads. Pinned to one CPU, it does N events of
 * one kind and prints the elapsed nanoseconds per event:
 *   pack CPU N switch          two processes pass a byte back and forth through pipes:
 *                              each pass is a context switch (sched_switch)
 *   pack CPU N pread FILE      pread(2) of one byte of FILE (read/pread64's enter and exit)
 *   pack CPU N send ADDR       a one-byte UDP datagram to a socket of its own bound to
 *                              ADDR (sock_send_length); never read, so once its buffer is
 *                              full the datagrams are dropped on arrival
 *   pack CPU N files F...      open, read and close each file F (cpu.stat, io.stat): what
 *                              reading a container's numbers from its cgroup costs */
#include "pinned.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s CPU N switch|pread FILE|send ADDR\n", argv[0]);
        return 2;
    }
    if (pin(argv[1]) != 0)
        return 1;
    long n = atol(argv[2]);
    const char *mode = argv[3];
    char byte = 'x';
    long long start = 0, events = n;
    if (strcmp(mode, "switch") == 0) {
        int there[2], back[2];
        if (pipe(there) || pipe(back))
            return 1;
        pid_t child = fork();
        if (child == 0) {
            for (long i = 0; i < n; i++) {
                if (read(there[0], &byte, 1) != 1 || write(back[1], &byte, 1) != 1)
                    _exit(1);
            }
            _exit(0);
        }
        start = now_ns();
        for (long i = 0; i < n; i++) {
            if (write(there[1], &byte, 1) != 1 || read(back[0], &byte, 1) != 1)
                return 1;
        }
        events = 2 * n; /* two switches per round trip */
        long long elapsed = now_ns() - start;
        waitpid(child, NULL, 0);
        printf("%.2f\n", (double)elapsed / events);
        return 0;
    } else if (strcmp(mode, "pread") == 0 && argc > 4) {
        int fd = open(argv[4], O_RDONLY);
        if (fd < 0)
            return 1;
        start = now_ns();
        for (long i = 0; i < n; i++)
            if (pread(fd, &byte, 1, 0) != 1)
                return 1;
    } else if (strcmp(mode, "send") == 0 && argc > 4) {
        int fd = socket(AF_INET, SOCK_DGRAM, 0), sink = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in to = {.sin_family = AF_INET};
        socklen_t size = sizeof(to);
        if (fd < 0 || sink < 0 || inet_pton(AF_INET, argv[4], &to.sin_addr) != 1 ||
            bind(sink, (struct sockaddr *)&to, sizeof(to)) != 0 ||
            getsockname(sink, (struct sockaddr *)&to, &size) != 0)
            return 1;
        start = now_ns();
        for (long i = 0; i < n; i++)
            if (sendto(fd, &byte, 1, 0, (struct sockaddr *)&to, sizeof(to)) != 1)
                return 1;
    } else if (strcmp(mode, "files") == 0 && argc > 4) {
        char buf[8192];
        start = now_ns();
        for (long i = 0; i < n; i++) {
            for (int f = 4; f < argc; f++) {
                int fd = open(argv[f], O_RDONLY);
                if (fd < 0 || read(fd, buf, sizeof(buf)) < 0)
                    return 1;
                close(fd);
            }
        }
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    printf("%.2f\n", (double)(now_ns() - start) / events);
    return 0;
}

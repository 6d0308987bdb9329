/*
 * withseccomp: runs a command under an allow-all seccomp filter, as a container runtime or a
 * systemd unit's SystemCallFilter would start it (the filter is inherited by everything it runs).
 *
 *   withseccomp COMMAND [ARGS...]
 */
#define _GNU_SOURCE
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: withseccomp COMMAND [ARGS...]\n");
        return 2;
    }
    struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
    struct sock_fprog prog = {.len = 1, .filter = allow};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
            perror("seccomp");
            return 2;
        }
    }
    execvp(argv[1], argv + 1);
    perror(argv[1]);
    return 127;
}

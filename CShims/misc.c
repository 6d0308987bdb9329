/* Small glibc calls that are hidden from Swift behind _GNU_SOURCE. */
#define _GNU_SOURCE
#include <errno.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include "CShims.h"

void lg_set_thread_name(const char *name) { prctl(PR_SET_NAME, name, 0, 0, 0); }

int lg_accept(int fd, void *addr, uint32_t *len) {
    int r = accept4(fd, (struct sockaddr *)addr, (socklen_t *)len, SOCK_CLOEXEC);
    return r < 0 ? -errno : r;
}

#include <signal.h>
int lg_signal_is_ignored(int sig) {
    struct sigaction sa;
    if (sigaction(sig, NULL, &sa) != 0) return 0;
    return sa.sa_handler == SIG_IGN;
}

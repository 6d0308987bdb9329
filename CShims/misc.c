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

#include <sqlite3.h>
int lg_sqlite_bind_blob(sqlite3_stmt *st, int idx, const void *p, int n) {
    return sqlite3_bind_blob(st, idx, p, n, SQLITE_TRANSIENT);
}
int lg_sqlite_bind_text(sqlite3_stmt *st, int idx, const char *s) {
    return sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT);
}

#include <spawn.h>
/* posix_spawn_file_actions_addclosefrom_np is a GNU extension, hidden from Swift. */
int lg_spawn_close_from(void *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np((posix_spawn_file_actions_t *)actions, from);
}

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

#include <fcntl.h>
#include <unistd.h>
/* Copies what a pipe holds into buf without consuming it: tee() into a private pipe of the same
 * capacity, then read that. `fd` is an fd on the pipe (e.g. /proc/PID/fd/N opened O_RDONLY|O_NONBLOCK).
 * Returns the bytes copied, -E2BIG if the pipe holds more than cap, or -errno. */
int64_t lg_pipe_peek(int fd, void *buf, uint64_t cap) {
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) return -errno;
    int64_t rc = 0;
    int size = fcntl(fd, F_GETPIPE_SZ);
    if (size > 0 && fcntl(p[1], F_SETPIPE_SZ, size) < 0) { rc = -errno; goto out; }
    ssize_t n = tee(fd, p[1], (size_t)(size > 0 ? size : 1 << 20), SPLICE_F_NONBLOCK);
    if (n < 0) { rc = errno == EAGAIN ? 0 : -errno; goto out; }
    if ((uint64_t)n > cap) { rc = -E2BIG; goto out; }
    uint64_t done = 0;
    while (done < (uint64_t)n) {
        ssize_t r = read(p[0], (char *)buf + done, (size_t)n - done);
        if (r <= 0) { rc = r < 0 ? -errno : -EIO; goto out; }
        done += (uint64_t)r;
    }
    rc = (int64_t)done;
out:
    close(p[0]);
    close(p[1]);
    return rc;
}

/* Copies n bytes with non-temporal stores: the destination's lines go to memory without being read
 * first and without displacing the cache. For bulk data that is kept but not touched again soon
 * (a log node's replica buffer, written to disk later): the copy runs from a small hot buffer at
 * memory bandwidth, where copying into cold memory the usual way reads every line first. */
#include <string.h>
#if defined(__x86_64__)
#include <emmintrin.h>
void lg_copy_nontemporal(void *dst, const void *src, size_t n) {
    char *d = dst;
    const char *s = src;
    size_t head = (64 - ((uintptr_t)d & 63)) & 63;  /* whole lines streamed: the write-combining unit */
    if (head > n) head = n;
    memcpy(d, s, head);
    d += head, s += head, n -= head;
    for (; n >= 64; d += 64, s += 64, n -= 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)s), b = _mm_loadu_si128((const __m128i *)(s + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + 32)), e = _mm_loadu_si128((const __m128i *)(s + 48));
        _mm_stream_si128((__m128i *)d, a);
        _mm_stream_si128((__m128i *)(d + 16), b);
        _mm_stream_si128((__m128i *)(d + 32), c);
        _mm_stream_si128((__m128i *)(d + 48), e);
    }
    memcpy(d, s, n);
    _mm_sfence();  /* the streamed stores are weakly ordered: make them visible before returning */
}
#else
void lg_copy_nontemporal(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }
#endif

#include <sys/vfs.h>

long lg_fs_type(int fd) {
    struct statfs fs;
    return fstatfs(fd, &fs) == 0 ? (long)fs.f_type : -1;
}

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
int lg_open_by_handle(int mount_fd, int type, const void *bytes, uint32_t length) {
    struct file_handle *h = malloc(sizeof *h + length);
    if (!h) return -ENOMEM;
    h->handle_bytes = length;
    h->handle_type = type;
    memcpy(h->f_handle, bytes, length);
    int fd = open_by_handle_at(mount_fd, h, O_PATH | O_CLOEXEC);
    int e = errno;
    free(h);
    return fd < 0 ? -e : fd;
}

int64_t lg_send_with_rights(int fd, const void *buf, size_t len, const int *fds, int count) {
    struct iovec iov = { (void *)buf, len };
    union { char bytes[CMSG_SPACE(sizeof(int) * 253)]; struct cmsghdr align; } control;
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (count > 253) return -E2BIG;  /* SCM_MAX_FD */
    if (count > 0) {
        memset(&control, 0, sizeof control);
        m.msg_control = control.bytes;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)count);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)count);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)count);
    }
    ssize_t n;
    do { n = sendmsg(fd, &m, MSG_DONTWAIT | MSG_NOSIGNAL); } while (n < 0 && errno == EINTR);
    return n < 0 ? -errno : n;
}

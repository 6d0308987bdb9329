/* The seccomp filter that makes the mapping syscalls stop for the tracer. */
#define _GNU_SOURCE
#include <errno.h>
#include <seccomp.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "CShims.h"

int lg_seccomp_build_trace_filter(const int *nrs, int count, void **prog, uint32_t *len) {
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx) return -ENOMEM;
    int rc = 0;
    for (int i = 0; i < count && rc == 0; i++) rc = seccomp_rule_add(ctx, SCMP_ACT_TRACE(0), nrs[i], 0);
    int fd = -1;
    if (rc == 0) {
        fd = memfd_create("legato-seccomp", MFD_CLOEXEC);
        if (fd < 0) rc = -errno;
    }
    if (rc == 0) rc = seccomp_export_bpf(ctx, fd);
    seccomp_release(ctx);
    if (rc != 0) {
        if (fd >= 0) close(fd);
        return rc < 0 ? rc : -EINVAL;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    if (size <= 0 || size % 8 != 0) {
        close(fd);
        return -EINVAL;
    }
    void *buf = malloc((size_t)size);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    ssize_t n = pread(fd, buf, (size_t)size, 0);
    close(fd);
    if (n != size) {
        free(buf);
        return -EIO;
    }
    *prog = buf;
    *len = (uint32_t)(size / 8);
    return 0;
}

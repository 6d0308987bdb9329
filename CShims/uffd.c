/* userfaultfd ioctls and message decoding. */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "CShims.h"

static int xioctl(int fd, unsigned long req, void *arg) {
    for (;;) {
        if (ioctl(fd, req, arg) == 0) return 0;
        if (errno != EINTR) return -errno;
    }
}

int lg_uffd_api(int fd, uint64_t features, uint64_t *out_features, uint64_t *out_ioctls) {
    struct uffdio_api api = {.api = UFFD_API, .features = features};
    int r = xioctl(fd, UFFDIO_API, &api);
    if (r == 0) {
        *out_features = api.features;
        *out_ioctls = api.ioctls;
    }
    return r;
}

int lg_uffd_register(int fd, uint64_t start, uint64_t len, uint64_t mode, uint64_t *out_ioctls) {
    struct uffdio_register reg = {.range = {.start = start, .len = len}, .mode = mode};
    int r = xioctl(fd, UFFDIO_REGISTER, &reg);
    if (r == 0 && out_ioctls) *out_ioctls = reg.ioctls;
    return r;
}

int lg_uffd_unregister(int fd, uint64_t start, uint64_t len) {
    struct uffdio_range range = {.start = start, .len = len};
    return xioctl(fd, UFFDIO_UNREGISTER, &range);
}

int lg_uffd_copy(int fd, uint64_t dst, const void *src, uint64_t len, uint64_t mode, int64_t *copied) {
    struct uffdio_copy c = {.dst = dst, .src = (uint64_t)src, .len = len, .mode = mode, .copy = 0};
    int r = ioctl(fd, UFFDIO_COPY, &c) == 0 ? 0 : -errno;
    *copied = c.copy > 0 ? c.copy : 0;
    return r;
}

int lg_uffd_zeropage(int fd, uint64_t start, uint64_t len, uint64_t mode, int64_t *zeroed) {
    struct uffdio_zeropage z = {.range = {.start = start, .len = len}, .mode = mode, .zeropage = 0};
    int r = ioctl(fd, UFFDIO_ZEROPAGE, &z) == 0 ? 0 : -errno;
    *zeroed = z.zeropage > 0 ? z.zeropage : 0;
    return r;
}

int lg_uffd_wake(int fd, uint64_t start, uint64_t len) {
    struct uffdio_range range = {.start = start, .len = len};
    return xioctl(fd, UFFDIO_WAKE, &range);
}

int lg_uffd_writeprotect(int fd, uint64_t start, uint64_t len, uint64_t mode) {
    struct uffdio_writeprotect wp = {.range = {.start = start, .len = len}, .mode = mode};
    return xioctl(fd, UFFDIO_WRITEPROTECT, &wp);
}

int lg_uffd_read_events(int fd, struct lg_uffd_event *out, int max) {
    struct uffd_msg msgs[64];
    if (max > 64) max = 64;
    ssize_t r;
    do {
        r = read(fd, msgs, sizeof(struct uffd_msg) * (size_t)max);
    } while (r < 0 && errno == EINTR);
    if (r < 0) return errno == EAGAIN ? 0 : -errno;
    int n = (int)(r / (ssize_t)sizeof(struct uffd_msg));
    for (int i = 0; i < n; i++) {
        struct uffd_msg *m = &msgs[i];
        struct lg_uffd_event *e = &out[i];
        memset(e, 0, sizeof *e);
        switch (m->event) {
        case UFFD_EVENT_PAGEFAULT:
            e->kind = LG_UFFD_PAGEFAULT;
            e->flags = (uint32_t)m->arg.pagefault.flags;
            e->addr = m->arg.pagefault.address;
            e->tid = m->arg.pagefault.feat.ptid;
            break;
        case UFFD_EVENT_FORK:
            e->kind = LG_UFFD_FORK;
            e->a2 = m->arg.fork.ufd;
            break;
        case UFFD_EVENT_REMAP:
            e->kind = LG_UFFD_REMAP;
            e->addr = m->arg.remap.from;
            e->a2 = m->arg.remap.to;
            e->a3 = m->arg.remap.len;
            break;
        case UFFD_EVENT_REMOVE:
            e->kind = LG_UFFD_REMOVE;
            e->addr = m->arg.remove.start;
            e->a2 = m->arg.remove.end;
            break;
        case UFFD_EVENT_UNMAP:
            e->kind = LG_UFFD_UNMAP;
            e->addr = m->arg.remove.start;
            e->a2 = m->arg.remove.end;
            break;
        default:
            e->kind = LG_UFFD_OTHER;
            e->flags = m->event;
        }
    }
    return n;
}

int lg_pagemap_scan(int pagemap_fd, uint64_t start, uint64_t end, uint64_t flags,
                    uint64_t category_mask, uint64_t category_inverted, uint64_t category_anyof,
                    uint64_t return_mask, struct page_region *vec, uint64_t vec_len,
                    uint64_t max_pages, uint64_t *walk_end) {
    struct pm_scan_arg arg;
    memset(&arg, 0, sizeof arg);
    arg.size = sizeof arg;
    arg.flags = flags;
    arg.start = start;
    arg.end = end;
    arg.vec = (uint64_t)vec;
    arg.vec_len = vec_len;
    arg.max_pages = max_pages;
    arg.category_mask = category_mask;
    arg.category_inverted = category_inverted;
    arg.category_anyof_mask = category_anyof;
    arg.return_mask = return_mask;
    int r;
    do {
        r = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);
    } while (r < 0 && errno == EINTR);
    if (walk_end) *walk_end = arg.walk_end;
    return r < 0 ? -errno : r;
}

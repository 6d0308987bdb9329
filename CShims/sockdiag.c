/* The UNIX sockets of the network namespace, from sock_diag (NETLINK_SOCK_DIAG, UNIX_DIAG). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include "CShims.h"

static void fill_unix(struct lg_unix_socket *s, struct unix_diag_msg *m, int len) {
    memset(s, 0, sizeof *s);
    s->inode = m->udiag_ino;
    s->type = m->udiag_type;
    s->state = m->udiag_state;
    struct rtattr *a = (struct rtattr *)(m + 1);
    int left = len - (int)NLMSG_LENGTH(sizeof *m);
    for (; RTA_OK(a, left); a = RTA_NEXT(a, left)) {
        void *v = RTA_DATA(a);
        int n = (int)RTA_PAYLOAD(a);
        switch (a->rta_type) {
        case UNIX_DIAG_NAME:
            s->name_length = n > (int)sizeof s->name ? (int)sizeof s->name : n;
            memcpy(s->name, v, (size_t)s->name_length);
            break;
        case UNIX_DIAG_PEER:
            if (n >= 4) memcpy(&s->peer, v, 4);
            break;
        case UNIX_DIAG_RQLEN:
            if (n >= (int)sizeof(struct unix_diag_rqlen)) {
                struct unix_diag_rqlen *q = v;
                s->receive_queue = q->udiag_rqueue;
                s->send_queue = q->udiag_wqueue;
            }
            break;
        case UNIX_DIAG_ICONS:
            s->pending_connections = (uint32_t)(n / 4);
            memcpy(s->icons, v, (size_t)(n / 4 < 32 ? n / 4 : 32) * 4);
            break;
        case UNIX_DIAG_SHUTDOWN:
            if (n >= 1) s->shutdown = *(uint8_t *)v;
            break;
        }
    }
}

int lg_unix_sockets(struct lg_unix_socket *out, int capacity) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) return -errno;
    struct {
        struct nlmsghdr h;
        struct unix_diag_req r;
    } req;
    memset(&req, 0, sizeof req);
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.r.sdiag_family = AF_UNIX;
    req.r.udiag_states = ~0u;
    req.r.udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_ICONS;
    if (send(fd, &req, sizeof req, 0) != (ssize_t)sizeof req) {
        int e = errno;
        close(fd);
        return -e;
    }
    enum { BUFFER = 65536 };
    char *buf = malloc(BUFFER);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    int count = 0;
    for (;;) {
        ssize_t n = recv(fd, buf, BUFFER, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            free(buf);
            close(fd);
            return -e;
        }
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type == NLMSG_DONE) {
                free(buf);
                close(fd);
                return count;
            }
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *err = NLMSG_DATA(h);
                int e = err->error ? err->error : -EIO;
                free(buf);
                close(fd);
                return e;
            }
            if (count < capacity) fill_unix(&out[count], NLMSG_DATA(h), (int)h->nlmsg_len);
            count++;
        }
    }
}

long lg_socket_peek_queue(int fd, void *buf, size_t capacity, uint32_t *lengths, int max_messages, int *descriptors_in_flight) {
    int old = -1, zero = 0;
    socklen_t len = sizeof old;
    *descriptors_in_flight = 0;
    if (getsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &old, &len) != 0) return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof zero) != 0) return -errno;
    size_t used = 0;
    long count = 0, result = 0;
    for (;;) {
        if (count == max_messages) { result = -E2BIG; break; }
        char control[512] __attribute__((aligned(8)));
        struct iovec iov = { (char *)buf + used, capacity - used };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof control };
        ssize_t n = recvmsg(fd, &m, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno != EAGAIN) result = -errno;
            break;
        }
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int *fds = (int *)CMSG_DATA(c);
                size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < k; i++) close(fds[i]);  /* the peek installed them here */
                *descriptors_in_flight = 1;
            }
        }
        if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) { result = -E2BIG; break; }
        if (n == 0 && used == capacity) { result = -E2BIG; break; }
        int type = 0;
        socklen_t tl = sizeof type;
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl);
        if (n == 0 && type == SOCK_STREAM) break;  /* the end of the stream: the peer shut down */
        lengths[count++] = (uint32_t)n;
        used += (size_t)n;
    }
    setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &old, sizeof old);
    return result < 0 ? result : count;
}

#include <linux/inet_diag.h>

long lg_tcp_listen_backlog(int family, uint64_t inode) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) return -errno;
    struct {
        struct nlmsghdr h;
        struct inet_diag_req_v2 r;
    } req;
    memset(&req, 0, sizeof req);
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.r.sdiag_family = (uint8_t)family;
    req.r.sdiag_protocol = IPPROTO_TCP;
    req.r.idiag_states = 1u << 10;  /* TCP_LISTEN */
    if (send(fd, &req, sizeof req, 0) != (ssize_t)sizeof req) {
        int e = errno;
        close(fd);
        return -e;
    }
    enum { BUFFER = 65536 };
    char *buf = malloc(BUFFER);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    long found = -ENOENT;
    for (;;) {
        ssize_t n = recv(fd, buf, BUFFER, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            found = -errno;
            break;
        }
        int done = 0;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type == NLMSG_DONE) { done = 1; break; }
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *err = NLMSG_DATA(h);
                found = err->error ? err->error : -EIO;
                done = 1;
                break;
            }
            struct inet_diag_msg *m = NLMSG_DATA(h);
            if (m->idiag_inode == inode) found = (long)m->idiag_wqueue;
        }
        if (done) break;
    }
    free(buf);
    close(fd);
    return found;
}

/* Whether diag id's source (and, with peer, destination) is the sockaddr given. */
static int id_matches(const struct inet_diag_sockid *id, int family, const void *local, const void *peer) {
    if (family == AF_INET) {
        const struct sockaddr_in *l = local, *p = peer;
        if (id->idiag_sport != l->sin_port || memcmp(id->idiag_src, &l->sin_addr, 4) != 0) return 0;
        return !p || (id->idiag_dport == p->sin_port && memcmp(id->idiag_dst, &p->sin_addr, 4) == 0);
    }
    const struct sockaddr_in6 *l = local, *p = peer;
    if (id->idiag_sport != l->sin6_port || memcmp(id->idiag_src, &l->sin6_addr, 16) != 0) return 0;
    return !p || (id->idiag_dport == p->sin6_port && memcmp(id->idiag_dst, &p->sin6_addr, 16) == 0);
}

long lg_tcp_destroy_time_wait(int family, const void *local, const void *peer) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) return -errno;
    struct {
        struct nlmsghdr h;
        struct inet_diag_req_v2 r;
    } req;
    memset(&req, 0, sizeof req);
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    req.r.sdiag_family = (uint8_t)family;
    req.r.sdiag_protocol = IPPROTO_TCP;
    req.r.idiag_states = 1u << 6;  /* TCP_TIME_WAIT */
    if (send(fd, &req, sizeof req, 0) != (ssize_t)sizeof req) {
        int e = errno;
        close(fd);
        return -e;
    }
    enum { BUFFER = 65536, MAX = 256 };
    char *buf = malloc(BUFFER);
    struct inet_diag_sockid *ids = malloc(MAX * sizeof *ids);
    if (!buf || !ids) {
        free(buf);
        free(ids);
        close(fd);
        return -ENOMEM;
    }
    int count = 0, done = 0;
    long r = 0;
    while (!done) {
        ssize_t n = recv(fd, buf, BUFFER, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            r = -errno;
            break;
        }
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (unsigned)n); h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_type == NLMSG_DONE) { done = 1; break; }
            if (h->nlmsg_type == NLMSG_ERROR) {
                struct nlmsgerr *err = NLMSG_DATA(h);
                r = err->error ? err->error : -EIO;
                done = 1;
                break;
            }
            struct inet_diag_msg *m = NLMSG_DATA(h);
            if (count < MAX && id_matches(&m->id, family, local, peer)) ids[count++] = m->id;
        }
    }
    free(buf);
    for (int i = 0; r == 0 && i < count; i++) {
        memset(&req, 0, sizeof req);
        req.h.nlmsg_len = sizeof req;
        req.h.nlmsg_type = SOCK_DESTROY;
        req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
        req.r.sdiag_family = (uint8_t)family;
        req.r.sdiag_protocol = IPPROTO_TCP;
        req.r.idiag_states = 1u << 6;
        req.r.id = ids[i];
        if (send(fd, &req, sizeof req, 0) != (ssize_t)sizeof req) { r = -errno; break; }
        char ack[512] __attribute__((aligned(8)));
        ssize_t n = recv(fd, ack, sizeof ack, 0);
        struct nlmsghdr *h = (struct nlmsghdr *)ack;
        if (n > 0 && h->nlmsg_type == NLMSG_ERROR) {
            struct nlmsgerr *err = NLMSG_DATA(h);
            if (err->error && err->error != -ENOENT) r = err->error;
        }
    }
    free(ids);
    close(fd);
    return r < 0 ? r : count;
}

int lg_tcp_abort(int sock) {
    struct sockaddr_storage l, p;
    socklen_t ll = sizeof l, pl = sizeof p;
    if (getsockname(sock, (struct sockaddr *)&l, &ll)) return -errno;
    if (getpeername(sock, (struct sockaddr *)&p, &pl)) return errno == ENOTCONN ? 0 : -errno;  /* reset already (its peer was aborted) */
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) return -errno;
    struct {
        struct nlmsghdr h;
        struct inet_diag_req_v2 r;
    } req;
    memset(&req, 0, sizeof req);
    req.h.nlmsg_len = sizeof req;
    req.h.nlmsg_type = SOCK_DESTROY;
    req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
    req.r.sdiag_family = (uint8_t)l.ss_family;
    req.r.sdiag_protocol = IPPROTO_TCP;
    req.r.idiag_states = ~0u;
    req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    if (l.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&l, *b = (struct sockaddr_in *)&p;
        req.r.id.idiag_sport = a->sin_port;
        req.r.id.idiag_dport = b->sin_port;
        memcpy(req.r.id.idiag_src, &a->sin_addr, 4);
        memcpy(req.r.id.idiag_dst, &b->sin_addr, 4);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&l, *b = (struct sockaddr_in6 *)&p;
        req.r.id.idiag_sport = a->sin6_port;
        req.r.id.idiag_dport = b->sin6_port;
        memcpy(req.r.id.idiag_src, &a->sin6_addr, 16);
        memcpy(req.r.id.idiag_dst, &b->sin6_addr, 16);
    }
    int r = 0;
    if (send(fd, &req, sizeof req, 0) != (ssize_t)sizeof req) r = -errno;
    else {
        char ack[512] __attribute__((aligned(8)));
        ssize_t n = recv(fd, ack, sizeof ack, 0);
        struct nlmsghdr *h = (struct nlmsghdr *)ack;
        if (n < 0) r = -errno;
        else if (h->nlmsg_type == NLMSG_ERROR) r = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
    }
    close(fd);
    return r;
}

/* Sockets through sock_diag (NETLINK_SOCK_DIAG): the UNIX sockets of the network namespace, a TCP
   listener's backlog, TIME_WAIT sockets ended and connections aborted (SOCK_DESTROY); and a
   socket's queue peeked. */
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
#include <linux/inet_diag.h>
#include "CShims.h"

/* Sends sock_diag request req (len bytes) and hands each message of the answer to each(h, ctx),
   until the dump's end; 0, -errno, or the first nonzero each() returns. */
static int diag_dump(const void *req, size_t len, int (*each)(struct nlmsghdr *h, void *ctx), void *ctx) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) return -errno;
    if (send(fd, req, len, 0) != (ssize_t)len) {
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
    int r = 0, done = 0;
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
            if ((r = each(h, ctx)) != 0) { done = 1; break; }
        }
    }
    free(buf);
    close(fd);
    return r;
}

struct inet_request {
    struct nlmsghdr h;
    struct inet_diag_req_v2 r;
};

/* A TCP sock_diag request of type (SOCK_DIAG_BY_FAMILY: a dump; SOCK_DESTROY) for family and states. */
static void inet_request(struct inet_request *req, int type, int family, uint32_t states) {
    memset(req, 0, sizeof *req);
    req->h.nlmsg_len = sizeof *req;
    req->h.nlmsg_type = (uint16_t)type;
    req->h.nlmsg_flags = NLM_F_REQUEST | (type == SOCK_DESTROY ? NLM_F_ACK : NLM_F_DUMP);
    req->r.sdiag_family = (uint8_t)family;
    req->r.sdiag_protocol = IPPROTO_TCP;
    req->r.idiag_states = states;
}

/* Destroys the TCP socket id names (SOCK_DESTROY: tcp_abort); 0 or the kernel's -errno. */
static int diag_destroy(int family, uint32_t states, const struct inet_diag_sockid *id) {
    int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
    if (fd < 0) return -errno;
    struct inet_request req;
    inet_request(&req, SOCK_DESTROY, family, states);
    req.r.id = *id;
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

struct unix_fill {
    struct lg_unix_socket *out;
    int capacity, count;
};

static int unix_each(struct nlmsghdr *h, void *ctx) {
    struct unix_fill *f = ctx;
    if (f->count < f->capacity) fill_unix(&f->out[f->count], NLMSG_DATA(h), (int)h->nlmsg_len);
    f->count++;
    return 0;
}

int lg_unix_sockets(struct lg_unix_socket *out, int capacity) {
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
    struct unix_fill f = { out, capacity, 0 };
    int r = diag_dump(&req, sizeof req, unix_each, &f);
    return r < 0 ? r : f.count;
}

long lg_socket_peek_queue(int fd, void *buf, size_t capacity, uint32_t *lengths, int max_messages,
                          int *in_flight, uint32_t *in_flight_counts, int in_flight_capacity, int *in_flight_total) {
    int old = -1, zero = 0;
    socklen_t len = sizeof old;
    *in_flight_total = 0;
    if (getsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &old, &len) != 0) return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof zero) != 0) return -errno;
    int type = 0;
    socklen_t tl = sizeof type;
    getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl);
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
        uint32_t carried = 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int *fds = (int *)CMSG_DATA(c);
                size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
                for (size_t i = 0; i < k; i++) {  /* the peek installed them here: handed to the caller */
                    if (*in_flight_total < in_flight_capacity) {
                        in_flight[(*in_flight_total)++] = fds[i];
                        carried++;
                    } else {
                        close(fds[i]);
                        result = -E2BIG;
                    }
                }
            }
        }
        in_flight_counts[count] = carried;
        if (result < 0) break;
        if (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) { result = -E2BIG; break; }
        if (n == 0 && used == capacity) { result = -E2BIG; break; }
        if (n == 0 && type == SOCK_STREAM) break;  /* the end of the stream: the peer shut down */
        lengths[count++] = (uint32_t)n;
        used += (size_t)n;
    }
    setsockopt(fd, SOL_SOCKET, SO_PEEK_OFF, &old, sizeof old);
    return result < 0 ? result : count;
}

struct backlog_find {
    uint64_t inode;
    long found;
};

static int backlog_each(struct nlmsghdr *h, void *ctx) {
    struct backlog_find *b = ctx;
    struct inet_diag_msg *m = NLMSG_DATA(h);
    if (m->idiag_inode == b->inode) b->found = (long)m->idiag_wqueue;
    return 0;
}

long lg_tcp_listen_backlog(int family, uint64_t inode) {
    struct inet_request req;
    inet_request(&req, SOCK_DIAG_BY_FAMILY, family, 1u << 10);  /* TCP_LISTEN */
    struct backlog_find b = { inode, -ENOENT };
    int r = diag_dump(&req, sizeof req, backlog_each, &b);
    return r < 0 ? r : b.found;
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

/* The closing states a killed process's connections linger in: FIN_WAIT1, FIN_WAIT2, TIME_WAIT,
   CLOSE, CLOSE_WAIT, LAST_ACK, CLOSING. */
#define ORPHAN_STATES ((1u << 4) | (1u << 5) | (1u << 6) | (1u << 7) | (1u << 8) | (1u << 9) | (1u << 11))

struct orphan_find {
    int family;
    const void *local, *peer;
    struct inet_diag_sockid ids[256];
    int count;
};

static int orphan_each(struct nlmsghdr *h, void *ctx) {
    struct orphan_find *t = ctx;
    struct inet_diag_msg *m = NLMSG_DATA(h);
    /* (idiag_inode 0: no file holds it; a socket a live process holds is left alone) */
    if (t->count < 256 && m->idiag_inode == 0 && id_matches(&m->id, t->family, t->local, t->peer)) t->ids[t->count++] = m->id;
    return 0;
}

long lg_tcp_destroy_orphans(int family, const void *local, const void *peer) {
    struct inet_request req;
    inet_request(&req, SOCK_DIAG_BY_FAMILY, family, ORPHAN_STATES);
    struct orphan_find *t = calloc(1, sizeof *t);
    if (!t) return -ENOMEM;
    t->family = family;
    t->local = local;
    t->peer = peer;
    long r = diag_dump(&req, sizeof req, orphan_each, t);
    for (int i = 0; r == 0 && i < t->count; i++) {
        int e = diag_destroy(family, ORPHAN_STATES, &t->ids[i]);
        if (e && e != -ENOENT) r = e;  /* (one gone meanwhile is as good as ended) */
    }
    int count = t->count;
    free(t);
    return r < 0 ? r : count;
}

int lg_tcp_abort(int sock) {
    struct sockaddr_storage l, p;
    socklen_t ll = sizeof l, pl = sizeof p;
    if (getsockname(sock, (struct sockaddr *)&l, &ll)) return -errno;
    if (getpeername(sock, (struct sockaddr *)&p, &pl)) return errno == ENOTCONN ? 0 : -errno;  /* reset already (its peer was aborted) */
    struct inet_diag_sockid id;
    memset(&id, 0, sizeof id);
    id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    if (l.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&l, *b = (struct sockaddr_in *)&p;
        id.idiag_sport = a->sin_port;
        id.idiag_dport = b->sin_port;
        memcpy(id.idiag_src, &a->sin_addr, 4);
        memcpy(id.idiag_dst, &b->sin_addr, 4);
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&l, *b = (struct sockaddr_in6 *)&p;
        id.idiag_sport = a->sin6_port;
        id.idiag_dport = b->sin6_port;
        memcpy(id.idiag_src, &a->sin6_addr, 16);
        memcpy(id.idiag_dst, &b->sin6_addr, 16);
    }
    return diag_destroy(l.ss_family, ~0u, &id);
}

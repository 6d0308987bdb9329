/* TCP_REPAIR: an established connection's state read from, and put into, a socket (the kernel's
   Documentation/networking/tcp-repair and the TCP_REPAIR_* options of linux/tcp.h). */
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include "CShims.h"

/* From netinet/tcp.h, which linux/tcp.h (for the repair structs) cannot be included with. */
#ifndef SOL_TCP
#define SOL_TCP IPPROTO_TCP
#endif
#define TCPOPT_MSS 2
#define TCPOPT_WINDOW 3
#define TCPOPT_SACK_PERM 4
#define TCPOPT_TIMESTAMP 8

#ifndef TCP_REPAIR_OFF_NO_WP
#define TCP_REPAIR_OFF_NO_WP -1
#endif

static int set_int(int fd, int name, int v) { return setsockopt(fd, SOL_TCP, name, &v, sizeof v) == 0 ? 0 : -errno; }

static int peek_queue(int fd, int queue, uint32_t *seq, void *buf, uint32_t len) {
    int r = set_int(fd, TCP_REPAIR_QUEUE, queue);
    if (r) return r;
    socklen_t l = sizeof *seq;
    if (getsockopt(fd, SOL_TCP, TCP_QUEUE_SEQ, seq, &l) != 0) return -errno;
    if (len == 0) return 0;
    ssize_t n = recv(fd, buf, len, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0) return -errno;
    return n == (ssize_t)len ? 0 : -EAGAIN;
}

int lg_tcp_repair_read(int fd, struct lg_tcp_state *st, void *send_queue, uint32_t send_capacity, void *receive_queue, uint32_t receive_capacity) {
    memset(st, 0, sizeof *st);
    int r = set_int(fd, TCP_REPAIR, 1);
    if (r) return r;
    int outq = 0, unsent = 0, inq = 0;
    if (ioctl(fd, SIOCOUTQ, &outq) || ioctl(fd, SIOCOUTQNSD, &unsent) || ioctl(fd, SIOCINQ, &inq)) { r = -errno; goto off; }
    st->send_queue_length = (uint32_t)outq;
    st->unsent_length = (uint32_t)unsent;
    st->receive_queue_length = (uint32_t)inq;
    if ((uint32_t)outq > send_capacity || (uint32_t)inq > receive_capacity) { r = -E2BIG; goto off; }
    if ((r = peek_queue(fd, TCP_SEND_QUEUE, &st->send_seq, send_queue, (uint32_t)outq))) goto off;
    if ((r = peek_queue(fd, TCP_RECV_QUEUE, &st->receive_seq, receive_queue, (uint32_t)inq))) goto off;
    struct tcp_info info;
    socklen_t l = sizeof info;
    memset(&info, 0, sizeof info);
    if (getsockopt(fd, SOL_TCP, TCP_INFO, &info, &l)) { r = -errno; goto off; }
    st->options = info.tcpi_options;
    st->state = info.tcpi_state;
    st->send_wscale = info.tcpi_snd_wscale;
    st->receive_wscale = info.tcpi_rcv_wscale;
    l = sizeof st->mss;
    if (getsockopt(fd, SOL_TCP, TCP_MAXSEG, &st->mss, &l)) { r = -errno; goto off; }
    l = sizeof st->timestamp;
    if (getsockopt(fd, SOL_TCP, TCP_TIMESTAMP, &st->timestamp, &l)) { r = -errno; goto off; }
    struct tcp_repair_window w;
    l = sizeof w;
    if (getsockopt(fd, SOL_TCP, TCP_REPAIR_WINDOW, &w, &l)) { r = -errno; goto off; }
    st->window[0] = w.snd_wl1;
    st->window[1] = w.snd_wnd;
    st->window[2] = w.max_window;
    st->window[3] = w.rcv_wnd;
    st->window[4] = w.rcv_wup;
off:;
    int e = set_int(fd, TCP_REPAIR_QUEUE, TCP_NO_QUEUE);
    (void)e;
    int left = set_int(fd, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP);  /* no window probe: the connection goes on as it was */
    return r ? r : left;
}

static int send_all(int fd, const char *p, uint32_t len) {
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        p += n;
        len -= (uint32_t)n;
    }
    return 0;
}

int lg_tcp_repair_restore(int fd, const struct lg_tcp_state *st, const void *local, uint32_t local_length, const void *peer, uint32_t peer_length,
                          const void *send_queue, const void *receive_queue, int *stage) {
    int r;
    *stage = 0;
    if ((r = set_int(fd, TCP_REPAIR, 1))) return r;
    *stage = 1;
    if ((r = set_int(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)) || (r = set_int(fd, TCP_QUEUE_SEQ, (int)(st->send_seq - st->send_queue_length)))) return r;
    if ((r = set_int(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)) || (r = set_int(fd, TCP_QUEUE_SEQ, (int)(st->receive_seq - st->receive_queue_length)))) return r;
    *stage = 2;
    if (bind(fd, local, local_length)) return -errno;
    *stage = 3;
    if (connect(fd, peer, peer_length)) return -errno;
    *stage = 4;
    struct tcp_repair_opt opts[4];
    int n = 0;
    opts[n].opt_code = TCPOPT_MSS;
    opts[n++].opt_val = st->mss;
    if (st->options & TCPI_OPT_WSCALE) {
        opts[n].opt_code = TCPOPT_WINDOW;
        opts[n++].opt_val = (uint32_t)st->send_wscale | ((uint32_t)st->receive_wscale << 16);
    }
    if (st->options & TCPI_OPT_SACK) {
        opts[n].opt_code = TCPOPT_SACK_PERM;
        opts[n++].opt_val = 0;
    }
    if (st->options & TCPI_OPT_TIMESTAMPS) {
        opts[n].opt_code = TCPOPT_TIMESTAMP;
        opts[n++].opt_val = 0;
    }
    if (setsockopt(fd, SOL_TCP, TCP_REPAIR_OPTIONS, opts, (socklen_t)(n * sizeof opts[0]))) return -errno;
    if ((st->options & TCPI_OPT_TIMESTAMPS) && (r = set_int(fd, TCP_TIMESTAMP, (int)st->timestamp))) return r;
    *stage = 5;
    uint32_t sent = st->send_queue_length - st->unsent_length;  /* the unsent rest goes by lg_tcp_repair_finish */
    if ((r = set_int(fd, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)) || (r = send_all(fd, send_queue, sent))) return r;
    if ((r = set_int(fd, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)) || (r = send_all(fd, receive_queue, st->receive_queue_length))) return r;
    if ((r = set_int(fd, TCP_REPAIR_QUEUE, TCP_NO_QUEUE))) return r;
    *stage = 6;
    struct tcp_repair_window w = { st->window[0], st->window[1], st->window[2], st->window[3], st->window[4] };
    if (setsockopt(fd, SOL_TCP, TCP_REPAIR_WINDOW, &w, sizeof w)) return -errno;
    return 0;
}

int lg_tcp_repair_finish(int fd, const void *unsent, uint32_t length, int *stage) {
    *stage = 7;
    int r = set_int(fd, TCP_REPAIR, 0);  /* off, with a window probe: the peer hears from us */
    if (r) return r;
    *stage = 8;
    return send_all(fd, unsent, length);
}

/*
 * peer.c - see peer.h.
 */
#include "peer.h"

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/clock.h"
#include "../common/log.h"

struct peer {
    uint64_t id;
    nng_socket sock;
    nng_dialer dialer;
    /* For net_peer_stats(): pipes is the number of connections the dialer
     * holds (0 or 1), kept by pipe_cb on NNG's threads. */
    atomic_int pipes;
    atomic_uint_fast64_t sent, recv, dropped, last_recv_ms;
};

struct net {
    uint64_t cluster_id;
    uint64_t self_id;
    nng_socket pull;
    nng_listener listener;
    pthread_t thread;
    net_recv_cb cb;
    void *cb_ctx;
    net_chunk_cb chunk_cb; /* set before the first peer is added */
    net_ack_cb ack_cb;
    void *chunk_ctx;
    struct peer peers[NET_PEERS_MAX];
    /* Peers [0, n_peers) are ready: net_add_peer() fills an entry, then
     * publishes it with a release store, so the receive thread may read
     * the list while the raft thread adds to it. */
    _Atomic size_t n_peers;
    atomic_uint_fast64_t sent_frames, dropped_full, dropped_encode,
        recv_frames, dropped_bad;
};

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint32_t get_le32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

static bool known_peer(const struct net *n, uint64_t id)
{
    size_t k = atomic_load_explicit(&n->n_peers, memory_order_acquire);
    for (size_t i = 0; i < k; i++) {
        if (n->peers[i].id == id) {
            return true;
        }
    }
    return false;
}

static struct peer *peer_of(struct net *n, uint64_t id)
{
    size_t k = atomic_load_explicit(&n->n_peers, memory_order_acquire);
    for (size_t i = 0; i < k; i++) {
        if (n->peers[i].id == id) {
            return &n->peers[i];
        }
    }
    return NULL;
}

static void drop_bad(struct net *n, uint64_t from, const char *why)
{
    atomic_fetch_add(&n->dropped_bad, 1);
    LOGW("peer: dropped a frame from node %llu: %s", (unsigned long long)from,
         why);
}

/* A snapshot chunk: validated, then handed to the chunk callback. */
static void on_chunk(struct net *n, uint64_t from, const uint8_t *p,
                     size_t len)
{
    if (len < NET_CHUNK_HEADER_BYTES || n->chunk_cb == NULL) {
        drop_bad(n, from, "short snapshot chunk");
        return;
    }
    struct net_chunk c = {
        .group = get_le64(p),
        .index = get_le64(p + 8),
        .term = get_le64(p + 16),
        .offset = get_le64(p + 24),
        .total = get_le64(p + 32),
        .crc = get_le32(p + 40),
        .head_len = get_le32(p + 44),
        .len = get_le32(p + 48),
    };
    if (get_le32(p + 52) != 0 || c.head_len > NET_CHUNK_HEAD_BYTES_MAX ||
        c.len > NET_CHUNK_DATA_BYTES_MAX ||
        len != NET_CHUNK_HEADER_BYTES + c.head_len + c.len ||
        c.offset > c.total || c.len > c.total - c.offset ||
        (c.head_len > 0 && c.offset != 0)) {
        drop_bad(n, from, "malformed snapshot chunk");
        return;
    }
    c.head = c.head_len > 0 ? p + NET_CHUNK_HEADER_BYTES : NULL;
    c.data = p + NET_CHUNK_HEADER_BYTES + c.head_len;
    n->chunk_cb(n->chunk_ctx, from, &c);
}

static void on_ack(struct net *n, uint64_t from, const uint8_t *p, size_t len)
{
    if (len != NET_ACK_BYTES || n->ack_cb == NULL) {
        drop_bad(n, from, "malformed snapshot chunk acknowledgement");
        return;
    }
    struct net_chunk_ack a = {.group = get_le64(p),
                              .index = get_le64(p + 8),
                              .term = get_le64(p + 16),
                              .have = get_le64(p + 24)};
    n->ack_cb(n->chunk_ctx, from, &a);
}

/* Validates one frame and hands its batch (or chunk, or acknowledgement)
 * to the callback. */
static void on_frame(struct net *n, const uint8_t *p, size_t len)
{
    uint32_t magic = len >= NET_FRAME_HEADER_BYTES ? get_le32(p) : 0;
    if (len < NET_FRAME_HEADER_BYTES ||
        (magic != NET_MAGIC && magic != NET_MAGIC_CHUNK &&
         magic != NET_MAGIC_ACK && magic != NET_MAGIC_BEACON) ||
        get_le32(p + 4) != NET_VERSION) {
        atomic_fetch_add(&n->dropped_bad, 1);
        LOGW("peer: dropped a frame of %zu bytes: bad header", len);
        return;
    }
    uint64_t cluster = get_le64(p + 8), from = get_le64(p + 16);
    if (cluster != n->cluster_id || from == n->self_id ||
        !known_peer(n, from)) {
        atomic_fetch_add(&n->dropped_bad, 1);
        LOGW("peer: dropped a frame from node %llu of cluster %016llx "
             "(ours: %016llx)",
             (unsigned long long)from, (unsigned long long)cluster,
             (unsigned long long)n->cluster_id);
        return;
    }
    struct peer *src = peer_of(n, from);
    if (src != NULL && magic != NET_MAGIC) {
        atomic_fetch_add(&src->recv, 1);
        atomic_store(&src->last_recv_ms, clock_mono_ms());
    }
    if (magic == NET_MAGIC_BEACON) {
        return; /* its arrival is all it says */
    }
    if (magic == NET_MAGIC_CHUNK) {
        on_chunk(n, from, p + NET_FRAME_HEADER_BYTES,
                 len - NET_FRAME_HEADER_BYTES);
        return;
    }
    if (magic == NET_MAGIC_ACK) {
        on_ack(n, from, p + NET_FRAME_HEADER_BYTES,
               len - NET_FRAME_HEADER_BYTES);
        return;
    }
    struct codec_batch b;
    const char *why = NULL;
    if (codec_batch_decode(p + NET_FRAME_HEADER_BYTES,
                           len - NET_FRAME_HEADER_BYTES, &b, &why) != KHO_OK) {
        codec_batch_free(&b);
        atomic_fetch_add(&n->dropped_bad, 1);
        LOGW("peer: dropped a frame from node %llu: %s",
             (unsigned long long)from, why != NULL ? why : "undecodable");
        return;
    }
    /* Messages must claim the sender they came from. */
    for (size_t i = 0; i < b.n; i++) {
        if (b.msgs[i].from != from || b.msgs[i].to != n->self_id) {
            codec_batch_free(&b);
            atomic_fetch_add(&n->dropped_bad, 1);
            LOGW("peer: dropped a frame from node %llu: message for "
                 "%llu from %llu",
                 (unsigned long long)from, (unsigned long long)b.msgs[i].to,
                 (unsigned long long)b.msgs[i].from);
            return;
        }
    }
    atomic_fetch_add(&n->recv_frames, 1);
    if (src != NULL) {
        atomic_fetch_add(&src->recv, 1);
        atomic_store(&src->last_recv_ms, clock_mono_ms());
    }
    n->cb(n->cb_ctx, from, &b);
}

static void *recv_main(void *arg)
{
    struct net *n = arg;
    for (;;) {
        nng_msg *m = NULL;
        int rv = nng_recvmsg(n->pull, &m, 0);
        if (rv == NNG_ECLOSED) {
            return NULL;
        }
        if (rv != 0) {
            continue;
        }
        on_frame(n, nng_msg_body(m), nng_msg_len(m));
        nng_msg_free(m);
    }
}

static int nng_to_kho(int rv)
{
    switch (rv) {
    case NNG_EADDRINUSE:
        return KHO_EBUSY;
    case NNG_EADDRINVAL:
    case NNG_EINVAL:
    case NNG_ENOTSUP:
        return KHO_EINVAL;
    case NNG_ENOMEM:
        return KHO_ENOMEM;
    default:
        return KHO_EIO;
    }
}

int net_open(uint64_t cluster_id, uint64_t self_id, const char *listen_url,
             net_recv_cb cb, void *cb_ctx, struct net **out, char *err,
             size_t err_len)
{
    struct net *n = calloc(1, sizeof(*n));
    if (n == NULL) {
        snprintf(err, err_len, "out of memory");
        return KHO_ENOMEM;
    }
    n->cluster_id = cluster_id;
    n->self_id = self_id;
    n->cb = cb;
    n->cb_ctx = cb_ctx;
    int rv = nng_pull0_open(&n->pull);
    if (rv == 0) {
        rv = nng_listener_create(&n->listener, n->pull, listen_url);
    }
    if (rv == 0) {
        rv = nng_listener_set_size(n->listener, NNG_OPT_RECVMAXSZ,
                                   NET_FRAME_BYTES_MAX);
    }
    if (rv == 0) {
        rv = nng_listener_start(n->listener, 0);
    }
    if (rv != 0) {
        snprintf(err, err_len, "peer listener on %s: %s", listen_url,
                 nng_strerror(rv));
        nng_close(n->pull);
        free(n);
        return nng_to_kho(rv);
    }
    if (pthread_create(&n->thread, NULL, recv_main, n) != 0) {
        snprintf(err, err_len, "cannot start the peer receive thread");
        nng_close(n->pull);
        free(n);
        return KHO_EIO;
    }
    *out = n;
    return KHO_OK;
}

/* Keeps p->pipes: the dialer connected (ADD_POST) or lost (REM_POST) its
 * connection. */
static void pipe_cb(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
    struct peer *p = arg;
    atomic_fetch_add(&p->pipes, ev == NNG_PIPE_EV_ADD_POST ? 1 : -1);
}

int net_add_peer(struct net *n, uint64_t id, const char *url)
{
    if (id == 0 || id == n->self_id || known_peer(n, id)) {
        return KHO_EINVAL;
    }
    if (n->n_peers >= NET_PEERS_MAX) {
        return KHO_EBUSY;
    }
    struct peer *p = &n->peers[n->n_peers];
    atomic_store(&p->pipes, 0);
    atomic_store(&p->sent, 0);
    atomic_store(&p->recv, 0);
    atomic_store(&p->dropped, 0);
    atomic_store(&p->last_recv_ms, 0);
    int rv = nng_push0_open(&p->sock);
    if (rv == 0) {
        rv = nng_socket_set_int(p->sock, NNG_OPT_SENDBUF, NET_SEND_QUEUE_MSGS);
    }
    if (rv == 0) {
        rv = nng_pipe_notify(p->sock, NNG_PIPE_EV_ADD_POST, pipe_cb, p);
    }
    if (rv == 0) {
        rv = nng_pipe_notify(p->sock, NNG_PIPE_EV_REM_POST, pipe_cb, p);
    }
    if (rv == 0) {
        rv = nng_dialer_create(&p->dialer, p->sock, url);
    }
    if (rv == 0) {
        rv = nng_dialer_set_size(p->dialer, NNG_OPT_RECVMAXSZ,
                                 NET_FRAME_BYTES_MAX);
    }
    if (rv == 0) {
        rv = nng_dialer_set_ms(p->dialer, NNG_OPT_RECONNMINT,
                               NET_RECONNECT_MIN_MS);
    }
    if (rv == 0) {
        rv = nng_dialer_set_ms(p->dialer, NNG_OPT_RECONNMAXT,
                               NET_RECONNECT_MAX_MS);
    }
    if (rv == 0) {
        /* Non-blocking: a peer that is down now is dialed again later. */
        rv = nng_dialer_start(p->dialer, NNG_FLAG_NONBLOCK);
    }
    if (rv != 0) {
        LOGE("peer: cannot dial node %llu at %s: %s", (unsigned long long)id,
             url, nng_strerror(rv));
        nng_close(p->sock);
        return nng_to_kho(rv);
    }
    p->id = id;
    atomic_store_explicit(&n->n_peers, n->n_peers + 1, memory_order_release);
    return KHO_OK;
}

/* Sends a frame of kind `magic` with body parts a, b and c, without blocking
 * (a full queue drops it, counted). Every frame this node sends is built here;
 * tests/lsan.supp names this function, so it is never inlined. */
__attribute__((noinline)) static int
send_frame(struct net *n, uint64_t to, uint32_t magic, const uint8_t *a,
           size_t a_len, const uint8_t *b, size_t b_len, const uint8_t *c,
           size_t c_len)
{
    struct peer *p = peer_of(n, to);
    if (p == NULL) {
        return KHO_ENOTFOUND;
    }
    nng_msg *m = NULL;
    if (nng_msg_alloc(&m, NET_FRAME_HEADER_BYTES + a_len + b_len + c_len) !=
        0) {
        atomic_fetch_add(&n->dropped_full, 1);
        return KHO_OK;
    }
    uint8_t *body = nng_msg_body(m);
    put_le32(body, magic);
    put_le32(body + 4, NET_VERSION);
    put_le64(body + 8, n->cluster_id);
    put_le64(body + 16, n->self_id);
    uint8_t *w = body + NET_FRAME_HEADER_BYTES;
    if (a_len > 0) {
        memcpy(w, a, a_len);
    }
    if (b_len > 0) {
        memcpy(w + a_len, b, b_len);
    }
    if (c_len > 0) {
        memcpy(w + a_len + b_len, c, c_len);
    }
    if (nng_sendmsg(p->sock, m, NNG_FLAG_NONBLOCK) != 0) {
        nng_msg_free(m);
        atomic_fetch_add(&n->dropped_full, 1);
        atomic_fetch_add(&p->dropped, 1);
        return KHO_OK;
    }
    atomic_fetch_add(&n->sent_frames, 1);
    atomic_fetch_add(&p->sent, 1);
    return KHO_OK;
}

int net_send(struct net *n, uint64_t to, const struct raft_msg *msgs,
             size_t count)
{
    if (peer_of(n, to) == NULL) {
        return KHO_ENOTFOUND;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = codec_batch_encode(msgs, count, &buf, &len);
    if (rc != KHO_OK) {
        atomic_fetch_add(&n->dropped_encode, 1);
        LOGW("peer: cannot encode %zu messages for node %llu: %s", count,
             (unsigned long long)to, kho_strerror(rc));
        return KHO_OK;
    }
    rc = send_frame(n, to, NET_MAGIC, buf, len, NULL, 0, NULL, 0);
    free(buf);
    return rc;
}

void net_get_stats(struct net *n, struct net_stats *out)
{
    out->sent_frames = atomic_load(&n->sent_frames);
    out->dropped_full = atomic_load(&n->dropped_full);
    out->dropped_encode = atomic_load(&n->dropped_encode);
    out->recv_frames = atomic_load(&n->recv_frames);
    out->dropped_bad = atomic_load(&n->dropped_bad);
}

size_t net_peer_stats(struct net *n, struct net_peer_stats *out, size_t cap)
{
    size_t k = atomic_load_explicit(&n->n_peers, memory_order_acquire);
    uint64_t now = clock_mono_ms();
    for (size_t i = 0; i < k && i < cap; i++) {
        struct peer *p = &n->peers[i];
        uint64_t last = atomic_load(&p->last_recv_ms);
        out[i] = (struct net_peer_stats){
            .id = p->id,
            .connected = atomic_load(&p->pipes) > 0,
            .sent_frames = atomic_load(&p->sent),
            .recv_frames = atomic_load(&p->recv),
            .dropped_frames = atomic_load(&p->dropped),
            .recv_age_ms = last != 0 && now >= last ? now - last : UINT64_MAX,
        };
    }
    return k;
}

void net_close(struct net *n)
{
    if (n == NULL) {
        return;
    }
    nng_close(n->pull);
    pthread_join(n->thread, NULL);
    for (size_t i = 0; i < n->n_peers; i++) {
        nng_close(n->peers[i].sock);
    }
    free(n);
}

/* --- Snapshot chunks --------------------------------------------------------- */

void net_set_chunk_handlers(struct net *n, net_chunk_cb chunk, net_ack_cb ack,
                            void *ctx)
{
    n->chunk_cb = chunk;
    n->ack_cb = ack;
    n->chunk_ctx = ctx;
}

int net_send_chunk(struct net *n, uint64_t to, const struct net_chunk *c)
{
    if (c->head_len > NET_CHUNK_HEAD_BYTES_MAX ||
        c->len > NET_CHUNK_DATA_BYTES_MAX) {
        return KHO_EINVAL;
    }
    uint8_t h[NET_CHUNK_HEADER_BYTES];
    put_le64(h, c->group);
    put_le64(h + 8, c->index);
    put_le64(h + 16, c->term);
    put_le64(h + 24, c->offset);
    put_le64(h + 32, c->total);
    put_le32(h + 40, c->crc);
    put_le32(h + 44, (uint32_t)c->head_len);
    put_le32(h + 48, (uint32_t)c->len);
    put_le32(h + 52, 0);
    return send_frame(n, to, NET_MAGIC_CHUNK, h, sizeof(h), c->head,
                      c->head_len, c->data, c->len);
}

int net_send_beacon(struct net *n, uint64_t to)
{
    return send_frame(n, to, NET_MAGIC_BEACON, NULL, 0, NULL, 0, NULL, 0);
}

int net_send_chunk_ack(struct net *n, uint64_t to,
                       const struct net_chunk_ack *a)
{
    uint8_t b[NET_ACK_BYTES];
    put_le64(b, a->group);
    put_le64(b + 8, a->index);
    put_le64(b + 16, a->term);
    put_le64(b + 24, a->have);
    return send_frame(n, to, NET_MAGIC_ACK, b, sizeof(b), NULL, 0, NULL, 0);
}

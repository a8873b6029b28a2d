/*
 * snapxfer.c - see snapxfer.h.
 */
#include "snapxfer.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../common/clock.h"
#include "../store/store.h"

struct xfer_out {
    bool used;
    uint64_t to, group, index, term;
    uint8_t *data; /* a copy of the payload */
    size_t len;
    uint8_t *head; /* the SNAPSHOT message without payload, encoded */
    size_t head_len;
    uint32_t crc;
    uint64_t sent, acked; /* bytes sent / held by the receiver */
    uint64_t progress_ms; /* last start, ack or rewind */
    uint64_t stall_ms;    /* last time an ack moved `acked` */
};

struct xfer_in {
    bool used;
    uint64_t from, group, index, term;
    uint8_t *data;
    size_t total, have;
    uint32_t crc;
    uint8_t *head;
    size_t head_len;
    uint64_t progress_ms;
};

struct xfer {
    struct net *net;
    xfer_deliver_fn deliver;
    void *ctx;
    struct xfer_out out[XFER_SENDS_MAX];
    pthread_mutex_t in_mu;
    struct xfer_in in[XFER_RECVS_MAX];
};

int xfer_create(struct net *net, xfer_deliver_fn deliver, void *ctx,
                struct xfer **out)
{
    struct xfer *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        return KHO_ENOMEM;
    }
    x->net = net;
    x->deliver = deliver;
    x->ctx = ctx;
    pthread_mutex_init(&x->in_mu, NULL);
    *out = x;
    return KHO_OK;
}

static void out_free(struct xfer_out *o)
{
    free(o->data);
    free(o->head);
    memset(o, 0, sizeof(*o));
}

static void in_free(struct xfer_in *t)
{
    free(t->data);
    free(t->head);
    memset(t, 0, sizeof(*t));
}

void xfer_destroy(struct xfer *x)
{
    if (x == NULL) {
        return;
    }
    for (size_t i = 0; i < XFER_SENDS_MAX; i++) {
        out_free(&x->out[i]);
    }
    for (size_t i = 0; i < XFER_RECVS_MAX; i++) {
        in_free(&x->in[i]);
    }
    pthread_mutex_destroy(&x->in_mu);
    free(x);
}

/* --- Sending (raft thread) ------------------------------------------------ */

static bool same_out(const struct xfer_out *o, const struct raft_msg *m)
{
    return o->used && o->to == m->to && o->group == m->group_id &&
           o->index == m->snapshot.meta.index &&
           o->term == m->snapshot.meta.term;
}

/* A slot for a new transfer to m->to of m's group: the one it replaces (an
 * older snapshot of the same group for the same node), a free one, or the
 * one idle the longest once it passed XFER_STALL_MS. */
static struct xfer_out *out_slot(struct xfer *x, const struct raft_msg *m,
                                 uint64_t now)
{
    struct xfer_out *free_slot = NULL, *idle = NULL;
    for (size_t i = 0; i < XFER_SENDS_MAX; i++) {
        struct xfer_out *o = &x->out[i];
        if (o->used && o->to == m->to && o->group == m->group_id) {
            return o;
        }
        if (!o->used && free_slot == NULL) {
            free_slot = o;
        }
        if (o->used && now - o->stall_ms >= XFER_STALL_MS &&
            (idle == NULL || o->stall_ms < idle->stall_ms)) {
            idle = o;
        }
    }
    return free_slot != NULL ? free_slot : idle;
}

int xfer_send(struct xfer *x, const struct raft_msg *m, uint64_t now_ms)
{
    for (size_t i = 0; i < XFER_SENDS_MAX; i++) {
        if (same_out(&x->out[i], m)) {
            return KHO_OK; /* raft resent it: the transfer goes on */
        }
    }
    struct xfer_out *o = out_slot(x, m, now_ms);
    if (o == NULL) {
        return KHO_EBUSY;
    }
    out_free(o);
    struct raft_msg head = *m;
    head.snapshot.data = NULL;
    head.snapshot.len = 0;
    int rc = codec_msg_encode(&head, &o->head, &o->head_len);
    if (rc != KHO_OK) {
        return rc;
    }
    o->data = malloc(m->snapshot.len > 0 ? m->snapshot.len : 1);
    if (o->data == NULL) {
        out_free(o);
        return KHO_ENOMEM;
    }
    memcpy(o->data, m->snapshot.data, m->snapshot.len);
    o->len = m->snapshot.len;
    o->crc = store_crc32c(o->data, o->len);
    o->used = true;
    o->to = m->to;
    o->group = m->group_id;
    o->index = m->snapshot.meta.index;
    o->term = m->snapshot.meta.term;
    o->progress_ms = o->stall_ms = now_ms;
    LOGI("group %llu: sending a snapshot at index %llu (%zu bytes) to node "
         "%llu in chunks of %u bytes",
         (unsigned long long)o->group, (unsigned long long)o->index, o->len,
         (unsigned long long)o->to, XFER_CHUNK_BYTES);
    return KHO_OK;
}

static void send_chunk(struct xfer *x, struct xfer_out *o)
{
    size_t n = o->len - o->sent;
    n = n < XFER_CHUNK_BYTES ? n : XFER_CHUNK_BYTES;
    struct net_chunk c = {
        .group = o->group,
        .index = o->index,
        .term = o->term,
        .offset = o->sent,
        .total = o->len,
        .crc = o->crc,
        .data = o->data + o->sent,
        .len = n,
        .head = o->sent == 0 ? o->head : NULL,
        .head_len = o->sent == 0 ? o->head_len : 0,
    };
    net_send_chunk(x->net, o->to, &c);
    o->sent += n;
}

void xfer_pump(struct xfer *x, uint64_t now_ms)
{
    for (size_t i = 0; i < XFER_SENDS_MAX; i++) {
        struct xfer_out *o = &x->out[i];
        if (!o->used) {
            continue;
        }
        if (now_ms - o->stall_ms >= XFER_IDLE_MS) {
            LOGW("group %llu: snapshot transfer to node %llu made no progress "
                 "for %u ms; dropped (raft sends it again)",
                 (unsigned long long)o->group, (unsigned long long)o->to,
                 XFER_IDLE_MS);
            out_free(o);
            continue;
        }
        if (o->sent > o->acked && now_ms - o->progress_ms >= XFER_STALL_MS) {
            /* Chunks or acks were lost: resume from what the receiver
             * holds. */
            LOGI("group %llu: snapshot transfer to node %llu stalled; "
                 "resuming at byte %llu of %zu",
                 (unsigned long long)o->group, (unsigned long long)o->to,
                 (unsigned long long)o->acked, o->len);
            o->sent = o->acked;
            o->progress_ms = now_ms;
        }
        bool first = o->sent == 0;
        for (unsigned k = 0; k < XFER_CHUNKS_PER_PUMP &&
                             (o->sent < o->len || first) &&
                             o->sent - o->acked < XFER_WINDOW_BYTES;
             k++) {
            send_chunk(x, o);
            first = false;
        }
    }
}

void xfer_on_ack(struct xfer *x, uint64_t from, const struct net_chunk_ack *a,
                 uint64_t now_ms)
{
    for (size_t i = 0; i < XFER_SENDS_MAX; i++) {
        struct xfer_out *o = &x->out[i];
        if (!o->used || o->to != from || o->group != a->group ||
            o->index != a->index || o->term != a->term) {
            continue;
        }
        if (a->have > o->len) {
            return;
        }
        if (a->have == 0 && o->acked > 0) {
            LOGW("group %llu: node %llu refused the snapshot at index %llu "
                 "(corrupt on arrival); sending it again",
                 (unsigned long long)o->group, (unsigned long long)o->to,
                 (unsigned long long)o->index);
            o->sent = o->acked = 0;
            o->progress_ms = o->stall_ms = now_ms;
            return;
        }
        if (a->have > o->acked) {
            o->acked = a->have;
            o->stall_ms = o->progress_ms = now_ms;
        }
        if (a->have < o->sent && a->have == o->acked &&
            now_ms - o->progress_ms >= XFER_STALL_MS) {
            o->sent = o->acked;
        }
        if (o->acked == o->len) {
            LOGI("group %llu: snapshot at index %llu delivered to node %llu",
                 (unsigned long long)o->group, (unsigned long long)o->index,
                 (unsigned long long)o->to);
            out_free(o);
        }
        return;
    }
}

void xfer_cancel(struct xfer *x, uint64_t group)
{
    for (size_t i = 0; i < XFER_SENDS_MAX; i++) {
        if (x->out[i].used && x->out[i].group == group) {
            LOGI("group %llu: snapshot transfer to node %llu cancelled: no "
                 "longer the leader",
                 (unsigned long long)group,
                 (unsigned long long)x->out[i].to);
            out_free(&x->out[i]);
        }
    }
}

bool xfer_sending(const struct xfer *x, uint64_t group)
{
    for (size_t i = 0; i < XFER_SENDS_MAX; i++) {
        if (x->out[i].used && x->out[i].group == group) {
            return true;
        }
    }
    return false;
}

/* --- Receiving (receive thread) ------------------------------------------- */

static bool same_in(const struct xfer_in *t, uint64_t from,
                    const struct net_chunk *c)
{
    return t->used && t->from == from && t->group == c->group &&
           t->index == c->index && t->term == c->term &&
           t->total == c->total && t->crc == c->crc;
}

/* The transfer chunk c belongs to, or a new one when c starts one. */
static struct xfer_in *in_find(struct xfer *x, uint64_t from,
                               const struct net_chunk *c, uint64_t now)
{
    struct xfer_in *slot = NULL;
    for (size_t i = 0; i < XFER_RECVS_MAX; i++) {
        struct xfer_in *t = &x->in[i];
        if (same_in(t, from, c)) {
            return t;
        }
        bool stale = t->used && ((t->from == from && t->group == c->group) ||
                                 now - t->progress_ms >= XFER_IDLE_MS);
        if ((!t->used || stale) && slot == NULL) {
            slot = t;
        }
    }
    if (c->offset != 0 || c->head_len == 0 || slot == NULL ||
        c->total > STORE_SNAP_BYTES_MAX) {
        return NULL;
    }
    in_free(slot);
    slot->data = malloc(c->total > 0 ? c->total : 1);
    slot->head = malloc(c->head_len);
    if (slot->data == NULL || slot->head == NULL) {
        in_free(slot);
        return NULL;
    }
    memcpy(slot->head, c->head, c->head_len);
    slot->head_len = c->head_len;
    slot->used = true;
    slot->from = from;
    slot->group = c->group;
    slot->index = c->index;
    slot->term = c->term;
    slot->total = c->total;
    slot->crc = c->crc;
    slot->progress_ms = now;
    return slot;
}

/* Decodes the head and hands the complete snapshot on; false when the
 * payload or head is corrupt (the transfer is then dropped). */
static bool in_complete(struct xfer *x, struct xfer_in *t)
{
    struct codec_batch b;
    const char *why = NULL;
    bool ok = store_crc32c(t->data, t->total) == t->crc;
    if (ok && codec_batch_decode(t->head, t->head_len, &b, &why) == KHO_OK &&
        b.n == 1 && b.msgs[0].type == RAFT_MSG_SNAPSHOT &&
        b.msgs[0].group_id == t->group &&
        b.msgs[0].snapshot.meta.index == t->index &&
        b.msgs[0].snapshot.meta.term == t->term) {
        b.msgs[0].snapshot.data = t->data;
        b.msgs[0].snapshot.len = t->total;
        uint8_t *data = t->data;
        t->data = NULL;
        LOGI("group %llu: received a snapshot at index %llu (%zu bytes) from "
             "node %llu",
             (unsigned long long)t->group, (unsigned long long)t->index,
             t->total, (unsigned long long)t->from);
        x->deliver(x->ctx, t->from, &b, data);
        in_free(t);
        return true;
    }
    {
        if (ok) {
            codec_batch_free(&b);
        }
        LOGW("group %llu: snapshot from node %llu at index %llu is corrupt "
             "(%s); dropped",
             (unsigned long long)t->group, (unsigned long long)t->from,
             (unsigned long long)t->index,
             ok ? (why != NULL ? why : "bad head") : "checksum mismatch");
    }
    in_free(t);
    return false;
}

void xfer_on_chunk(struct xfer *x, uint64_t from, const struct net_chunk *c)
{
    uint64_t now = clock_mono_ms();
    struct net_chunk_ack ack = {
        .group = c->group, .index = c->index, .term = c->term};
    pthread_mutex_lock(&x->in_mu);
    struct xfer_in *t = in_find(x, from, c, now);
    if (t == NULL) {
        pthread_mutex_unlock(&x->in_mu);
        return;
    }
    if (c->offset == t->have && c->len <= t->total - t->have) {
        memcpy(t->data + t->have, c->data, c->len);
        t->have += c->len;
        t->progress_ms = now;
    }
    ack.have = t->have;
    if (t->have == t->total && !in_complete(x, t)) {
        ack.have = 0; /* start over: what arrived is corrupt */
    }
    pthread_mutex_unlock(&x->in_mu);
    net_send_chunk_ack(x->net, from, &ack);
}

/*
 * snapxfer.c - see snapxfer.h.
 */
#include "snapxfer.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../common/clock.h"
#include "../common/log.h"

/* How long an idle thread sleeps before looking at its transfers again
 * (stalls and idle transfers are timed, not signalled). */
#define XFER_POLL_MS 20u

struct xfer_out {
    bool used;
    bool cancelled; /* the raft thread gave it up; the sender frees it */
    bool busy;      /* the sender works on it outside the lock */
    bool opened, done;
    uint64_t to, group, msg_term;
    struct raft_msg tmpl; /* the core's message, payload-less */
    void *src;
    struct raft_snapshot_meta meta; /* the source's */
    uint64_t total;
    uint32_t crc;
    uint8_t *head; /* tmpl with the source's meta, encoded */
    size_t head_len;
    uint64_t sent, acked; /* bytes sent / held by the receiver */
    uint64_t gen;         /* bumped when `sent` is rewound */
    uint64_t progress_ms; /* last start, ack or rewind */
    uint64_t stall_ms;    /* last time an ack moved `acked` */
};

struct chunk {
    struct chunk *next;
    size_t len;
    uint8_t data[];
};

struct xfer_in {
    bool used;
    bool busy;   /* the receiver thread works on it outside the lock */
    bool dead;   /* replaced or dropped; freed by the receiver thread */
    bool begun;  /* the sink is open */
    bool failed; /* refused: waits for the sender to start over */
    uint64_t from, group, index, term, total;
    uint32_t crc;
    uint8_t *head;
    size_t head_len;
    void *sink;
    struct chunk *q_head, *q_tail; /* bytes [written, have) */
    size_t q_bytes;
    uint64_t have, written;
    uint64_t progress_ms;
};

struct worker {
    pthread_t th;
    bool started;
    pthread_cond_t cv;
    bool kicked; /* work arrived since the last pass */
};

struct xfer {
    struct net *net;
    struct xfer_store st;
    xfer_deliver_fn deliver;
    void *ctx;
    pthread_mutex_t mu; /* guards everything below */
    bool stopping;
    struct xfer_out out[XFER_SENDS_MAX];
    struct xfer_in in[XFER_RECVS_MAX];
    struct worker snd, rcv;
    uint8_t *buf; /* the sender's read buffer (XFER_CHUNK_BYTES) */
};

static void kick(struct worker *w)
{
    w->kicked = true;
    pthread_cond_signal(&w->cv);
}

/* --- Slots --------------------------------------------------------------- */

static void out_clear(struct xfer_out *o)
{
    free(o->head);
    memset(o, 0, sizeof(*o));
}

static void queue_drop(struct xfer_in *t)
{
    while (t->q_head != NULL) {
        struct chunk *c = t->q_head;
        t->q_head = c->next;
        free(c);
    }
    t->q_tail = NULL;
    t->q_bytes = 0;
}

static void in_clear(struct xfer_in *t)
{
    queue_drop(t);
    free(t->head);
    memset(t, 0, sizeof(*t));
}

/* --- Threads ------------------------------------------------------------- */

static void worker_loop(struct xfer *x, struct worker *w,
                        bool (*pass)(struct xfer *, uint64_t))
{
    pthread_mutex_lock(&x->mu);
    while (!x->stopping) {
        w->kicked = false;
        pthread_mutex_unlock(&x->mu);
        bool did = pass(x, clock_mono_ms());
        pthread_mutex_lock(&x->mu);
        if (!did && !w->kicked && !x->stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += (long)XFER_POLL_MS * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&w->cv, &x->mu, &ts);
        }
    }
    pthread_mutex_unlock(&x->mu);
}

static void *send_main(void *arg)
{
    struct xfer *x = arg;
    worker_loop(x, &x->snd, xfer_run_send);
    return NULL;
}

static void *recv_main(void *arg)
{
    struct xfer *x = arg;
    worker_loop(x, &x->rcv, xfer_run_recv);
    return NULL;
}

static int worker_init(struct worker *w)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    return rc == 0 ? KHO_OK : KHO_ENOMEM;
}

int xfer_create(struct net *net, const struct xfer_store *st,
                xfer_deliver_fn deliver, void *ctx, bool threads,
                struct xfer **out)
{
    struct xfer *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        return KHO_ENOMEM;
    }
    x->buf = malloc(XFER_CHUNK_BYTES);
    if (x->buf == NULL || worker_init(&x->snd) != KHO_OK) {
        free(x->buf);
        free(x);
        return KHO_ENOMEM;
    }
    if (worker_init(&x->rcv) != KHO_OK) {
        pthread_cond_destroy(&x->snd.cv);
        free(x->buf);
        free(x);
        return KHO_ENOMEM;
    }
    x->net = net;
    x->st = *st;
    x->deliver = deliver;
    x->ctx = ctx;
    pthread_mutex_init(&x->mu, NULL);
    if (threads) {
        x->snd.started = pthread_create(&x->snd.th, NULL, send_main, x) == 0;
        x->rcv.started = pthread_create(&x->rcv.th, NULL, recv_main, x) == 0;
        if (!x->snd.started || !x->rcv.started) {
            xfer_destroy(x);
            return KHO_EIO;
        }
    }
    *out = x;
    return KHO_OK;
}

void xfer_stop(struct xfer *x)
{
    if (x == NULL) {
        return;
    }
    pthread_mutex_lock(&x->mu);
    x->stopping = true;
    kick(&x->snd);
    kick(&x->rcv);
    pthread_mutex_unlock(&x->mu);
    if (x->snd.started) {
        pthread_join(x->snd.th, NULL);
        x->snd.started = false;
    }
    if (x->rcv.started) {
        pthread_join(x->rcv.th, NULL);
        x->rcv.started = false;
    }
}

void xfer_destroy(struct xfer *x)
{
    if (x == NULL) {
        return;
    }
    xfer_stop(x);
    for (size_t i = 0; i < XFER_SENDS_MAX; i++) {
        if (x->out[i].src != NULL) {
            x->st.src_close(x->out[i].src);
        }
        out_clear(&x->out[i]);
    }
    for (size_t i = 0; i < XFER_RECVS_MAX; i++) {
        if (x->in[i].sink != NULL) {
            x->st.sink_close(x->in[i].sink);
        }
        in_clear(&x->in[i]);
    }
    pthread_cond_destroy(&x->snd.cv);
    pthread_cond_destroy(&x->rcv.cv);
    pthread_mutex_destroy(&x->mu);
    free(x->buf);
    free(x);
}

/* --- Sending: the raft thread's side ------------------------------------- */

static bool live_out(const struct xfer_out *o)
{
    return o->used && !o->cancelled && !o->done;
}

int xfer_send(struct xfer *x, const struct raft_msg *m, uint64_t now_ms)
{
    pthread_mutex_lock(&x->mu);
    struct xfer_out *slot = NULL;
    for (size_t i = 0; i < XFER_SENDS_MAX; i++) {
        struct xfer_out *o = &x->out[i];
        if (live_out(o) && o->to == m->to && o->group == m->group_id) {
            if (o->msg_term == m->term) {
                pthread_mutex_unlock(&x->mu);
                return KHO_OK; /* raft resent it: the transfer goes on */
            }
            o->cancelled = true; /* an older term's transfer */
        }
        if (!o->used && slot == NULL) {
            slot = o;
        }
    }
    if (slot == NULL) {
        /* Give up the transfer idle the longest, past XFER_STALL_MS: its
         * slot is free once the sender has closed it. */
        struct xfer_out *idle = NULL;
        for (size_t i = 0; i < XFER_SENDS_MAX; i++) {
            struct xfer_out *o = &x->out[i];
            if (live_out(o) && now_ms - o->stall_ms >= XFER_STALL_MS &&
                (idle == NULL || o->stall_ms < idle->stall_ms)) {
                idle = o;
            }
        }
        if (idle != NULL) {
            idle->cancelled = true;
            kick(&x->snd);
        }
        pthread_mutex_unlock(&x->mu);
        return KHO_EBUSY;
    }
    out_clear(slot);
    slot->used = true;
    slot->to = m->to;
    slot->group = m->group_id;
    slot->msg_term = m->term;
    slot->tmpl = *m;
    slot->tmpl.snapshot.data = NULL;
    slot->tmpl.snapshot.len = 0;
    slot->progress_ms = slot->stall_ms = now_ms;
    kick(&x->snd);
    pthread_mutex_unlock(&x->mu);
    return KHO_OK;
}

void xfer_cancel(struct xfer *x, uint64_t group)
{
    pthread_mutex_lock(&x->mu);
    for (size_t i = 0; i < XFER_SENDS_MAX; i++) {
        struct xfer_out *o = &x->out[i];
        if (live_out(o) && o->group == group) {
            LOGI("group %llu: snapshot transfer to node %llu cancelled: no "
                 "longer the leader",
                 (unsigned long long)group, (unsigned long long)o->to);
            o->cancelled = true;
            kick(&x->snd);
        }
    }
    pthread_mutex_unlock(&x->mu);
}

bool xfer_sending(struct xfer *x, uint64_t group)
{
    bool yes = false;
    pthread_mutex_lock(&x->mu);
    for (size_t i = 0; i < XFER_SENDS_MAX && !yes; i++) {
        yes = live_out(&x->out[i]) && x->out[i].group == group;
    }
    pthread_mutex_unlock(&x->mu);
    return yes;
}

void xfer_on_ack(struct xfer *x, uint64_t from, const struct net_chunk_ack *a,
                 uint64_t now_ms)
{
    pthread_mutex_lock(&x->mu);
    for (size_t i = 0; i < XFER_SENDS_MAX; i++) {
        struct xfer_out *o = &x->out[i];
        if (!live_out(o) || !o->opened || o->to != from ||
            o->group != a->group || o->meta.index != a->index ||
            o->meta.term != a->term || a->have > o->total) {
            continue;
        }
        if (a->have == 0 && (o->acked > 0 || o->sent > 0)) {
            LOGW("group %llu: node %llu refused the snapshot at index %llu; "
                 "sending it again from the start",
                 (unsigned long long)o->group, (unsigned long long)o->to,
                 (unsigned long long)o->meta.index);
            o->sent = o->acked = 0;
            o->gen++;
            o->progress_ms = o->stall_ms = now_ms;
        } else if (a->have > o->acked) {
            o->acked = a->have;
            o->stall_ms = o->progress_ms = now_ms;
            if (o->acked > o->sent) {
                o->sent = o->acked;
                o->gen++;
            }
        }
        if (o->acked == o->total) {
            LOGI("group %llu: snapshot at index %llu (%llu bytes) delivered "
                 "to node %llu",
                 (unsigned long long)o->group,
                 (unsigned long long)o->meta.index,
                 (unsigned long long)o->total, (unsigned long long)o->to);
            o->done = true;
        }
        kick(&x->snd);
        break;
    }
    pthread_mutex_unlock(&x->mu);
}

/* --- Sending: the sender thread ------------------------------------------ */

/* Opens o's source and encodes its head (lock held on entry and exit,
 * dropped meanwhile). False when the transfer was dropped. */
static bool out_open(struct xfer *x, struct xfer_out *o, uint64_t now_ms)
{
    o->busy = true;
    uint64_t group = o->group;
    struct raft_msg head = o->tmpl;
    pthread_mutex_unlock(&x->mu);
    void *src = NULL;
    uint64_t total = 0;
    uint32_t crc = 0;
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    int rc = x->st.src_open(x->st.ctx, group, &src, &head.snapshot.meta,
                            &total, &crc);
    if (rc == KHO_OK) {
        rc = codec_msg_encode(&head, &enc, &enc_len);
    }
    pthread_mutex_lock(&x->mu);
    o->busy = false;
    if (rc != KHO_OK || o->cancelled) {
        if (rc != KHO_OK) {
            LOGW("group %llu: cannot read a snapshot for node %llu: %s (raft "
                 "asks again)",
                 (unsigned long long)group, (unsigned long long)o->to,
                 kho_strerror(rc));
        }
        free(enc);
        if (src != NULL) {
            x->st.src_close(src);
        }
        out_clear(o);
        return false;
    }
    o->src = src;
    o->meta = head.snapshot.meta;
    o->total = total;
    o->crc = crc;
    o->head = enc;
    o->head_len = enc_len;
    o->opened = true;
    o->progress_ms = o->stall_ms = now_ms;
    LOGI("group %llu: sending a snapshot at index %llu (%llu bytes) to node "
         "%llu in chunks of %u bytes",
         (unsigned long long)group, (unsigned long long)o->meta.index,
         (unsigned long long)total, (unsigned long long)o->to,
         XFER_CHUNK_BYTES);
    return true;
}

/* Reads and sends the chunk at o->sent (lock held on entry and exit). */
static bool out_chunk(struct xfer *x, struct xfer_out *o)
{
    uint64_t off = o->sent, gen = o->gen;
    size_t want = o->total - off < XFER_CHUNK_BYTES ? (size_t)(o->total - off)
                                                    : XFER_CHUNK_BYTES;
    struct net_chunk c = {
        .group = o->group,
        .index = o->meta.index,
        .term = o->meta.term,
        .offset = off,
        .total = o->total,
        .crc = o->crc,
        .head = off == 0 ? o->head : NULL,
        .head_len = off == 0 ? o->head_len : 0,
        .data = x->buf,
    };
    uint64_t to = o->to;
    o->busy = true;
    pthread_mutex_unlock(&x->mu);
    size_t got = 0;
    int rc = x->st.src_read(o->src, off, x->buf, want, &got);
    if (rc == KHO_OK && got == want) {
        c.len = got;
        net_send_chunk(x->net, to, &c);
    }
    pthread_mutex_lock(&x->mu);
    o->busy = false;
    if (rc != KHO_OK || got != want) {
        LOGW("group %llu: reading the snapshot for node %llu failed at byte "
             "%llu: %s; transfer dropped",
             (unsigned long long)o->group, (unsigned long long)to,
             (unsigned long long)off,
             kho_strerror(rc != KHO_OK ? rc : KHO_ECORRUPT));
        o->cancelled = true;
        return false;
    }
    if (o->gen == gen && o->sent == off) {
        o->sent = off + got;
    }
    return true;
}

bool xfer_run_send(struct xfer *x, uint64_t now_ms)
{
    bool did = false;
    pthread_mutex_lock(&x->mu);
    for (size_t i = 0; i < XFER_SENDS_MAX && !x->stopping; i++) {
        struct xfer_out *o = &x->out[i];
        if (!o->used || o->busy) {
            continue;
        }
        if (o->cancelled || o->done) {
            void *src = o->src;
            o->src = NULL;
            if (src != NULL) {
                o->busy = true;
                pthread_mutex_unlock(&x->mu);
                x->st.src_close(src);
                pthread_mutex_lock(&x->mu);
            }
            out_clear(o);
            did = true;
            continue;
        }
        if (!o->opened) {
            did = true;
            if (!out_open(x, o, now_ms)) {
                continue;
            }
        }
        if (now_ms - o->stall_ms >= XFER_IDLE_MS) {
            LOGW("group %llu: snapshot transfer to node %llu made no progress "
                 "for %u ms; dropped (raft sends it again)",
                 (unsigned long long)o->group, (unsigned long long)o->to,
                 XFER_IDLE_MS);
            o->cancelled = true;
            continue;
        }
        if (o->sent > o->acked && now_ms - o->progress_ms >= XFER_STALL_MS) {
            /* Chunks or acks were lost: resume from what the receiver
             * holds. */
            LOGI("group %llu: snapshot transfer to node %llu stalled; "
                 "resuming at byte %llu of %llu",
                 (unsigned long long)o->group, (unsigned long long)o->to,
                 (unsigned long long)o->acked,
                 (unsigned long long)o->total);
            o->sent = o->acked;
            o->gen++;
            o->progress_ms = now_ms;
        }
        for (unsigned k = 0; k < XFER_CHUNKS_PER_PASS && o->used &&
                             !o->cancelled && o->sent < o->total &&
                             o->sent - o->acked < XFER_WINDOW_BYTES;
             k++) {
            did = true;
            if (!out_chunk(x, o)) {
                break;
            }
        }
    }
    pthread_mutex_unlock(&x->mu);
    return did;
}

/* --- Receiving: the receive thread's side -------------------------------- */

static bool same_in(const struct xfer_in *t, uint64_t from,
                    const struct net_chunk *c)
{
    return t->used && !t->dead && t->from == from && t->group == c->group &&
           t->index == c->index && t->term == c->term &&
           t->total == c->total && t->crc == c->crc;
}

/* Whether a head is the SNAPSHOT message the chunk says it is. */
static bool head_ok(const struct net_chunk *c)
{
    struct codec_batch b;
    const char *why = NULL;
    if (codec_batch_decode(c->head, c->head_len, &b, &why) != KHO_OK) {
        return false;
    }
    bool ok = b.n == 1 && b.msgs[0].type == RAFT_MSG_SNAPSHOT &&
              b.msgs[0].group_id == c->group &&
              b.msgs[0].snapshot.meta.index == c->index &&
              b.msgs[0].snapshot.meta.term == c->term &&
              b.msgs[0].snapshot.len == 0;
    codec_batch_free(&b);
    return ok;
}

/* A slot for a transfer that chunk c (offset 0, with its head) starts:
 * replaces an older transfer of the group from the same node, or one idle
 * for XFER_IDLE_MS, else a free slot. */
static struct xfer_in *in_start(struct xfer *x, uint64_t from,
                                const struct net_chunk *c, uint64_t now)
{
    struct xfer_in *slot = NULL;
    for (size_t i = 0; i < XFER_RECVS_MAX; i++) {
        struct xfer_in *t = &x->in[i];
        bool stale = t->used && !t->dead &&
                     ((t->from == from && t->group == c->group) ||
                      now - t->progress_ms >= XFER_IDLE_MS);
        if (stale) {
            t->dead = true; /* the receiver thread frees it */
            kick(&x->rcv);
        }
        if (!t->used && slot == NULL) {
            slot = t;
        }
    }
    if (slot == NULL) {
        return NULL;
    }
    uint8_t *head = malloc(c->head_len);
    if (head == NULL) {
        return NULL;
    }
    memcpy(head, c->head, c->head_len);
    in_clear(slot);
    slot->used = true;
    slot->from = from;
    slot->group = c->group;
    slot->index = c->index;
    slot->term = c->term;
    slot->total = c->total;
    slot->crc = c->crc;
    slot->head = head;
    slot->head_len = c->head_len;
    slot->progress_ms = now;
    return slot;
}

void xfer_on_chunk(struct xfer *x, uint64_t from, const struct net_chunk *c,
                   uint64_t now_ms)
{
    bool starts = c->offset == 0 && c->head_len > 0;
    if (starts && !head_ok(c)) {
        LOGW("group %llu: snapshot from node %llu has a malformed head; "
             "dropped",
             (unsigned long long)c->group, (unsigned long long)from);
        return;
    }
    bool ack = false;
    struct net_chunk_ack a = {
        .group = c->group, .index = c->index, .term = c->term};
    pthread_mutex_lock(&x->mu);
    struct xfer_in *t = NULL;
    for (size_t i = 0; i < XFER_RECVS_MAX && t == NULL; i++) {
        t = same_in(&x->in[i], from, c) ? &x->in[i] : NULL;
    }
    if (t != NULL && t->failed && starts && !t->busy) {
        /* The sender starts over after our refusal. */
        queue_drop(t);
        t->failed = false;
        t->have = t->written = 0;
    }
    if (t == NULL && starts) {
        t = in_start(x, from, c, now_ms);
    }
    if (t != NULL && !t->failed) {
        if (c->offset == t->have && c->len > 0 &&
            c->len <= t->total - t->have &&
            t->q_bytes + c->len <= XFER_WINDOW_BYTES + XFER_CHUNK_BYTES) {
            struct chunk *k = malloc(sizeof(*k) + c->len);
            if (k != NULL) {
                k->next = NULL;
                k->len = c->len;
                memcpy(k->data, c->data, c->len);
                if (t->q_tail != NULL) {
                    t->q_tail->next = k;
                } else {
                    t->q_head = k;
                }
                t->q_tail = k;
                t->q_bytes += c->len;
                t->have += c->len;
                t->progress_ms = now_ms;
                kick(&x->rcv);
            }
        } else if (c->offset < t->have) {
            /* A resent chunk we hold: tell the sender where we are. */
            ack = true;
            a.have = t->written;
        }
    }
    pthread_mutex_unlock(&x->mu);
    if (ack) {
        net_send_chunk_ack(x->net, from, &a);
    }
}

/* --- Receiving: the receiver thread -------------------------------------- */

/* Hands the complete snapshot on (no lock held). */
static void in_deliver(struct xfer *x, uint64_t from, uint64_t group,
                       const uint8_t *head, size_t head_len,
                       const uint8_t *desc, size_t desc_len)
{
    struct codec_batch b;
    const char *why = NULL;
    uint8_t *copy = malloc(desc_len > 0 ? desc_len : 1);
    if (copy == NULL ||
        codec_batch_decode(head, head_len, &b, &why) != KHO_OK) {
        LOGW("group %llu: cannot hand on the snapshot from node %llu (%s)",
             (unsigned long long)group, (unsigned long long)from,
             copy == NULL ? "no memory" : why);
        free(copy);
        return;
    }
    memcpy(copy, desc, desc_len);
    b.msgs[0].snapshot.data = copy;
    b.msgs[0].snapshot.len = desc_len;
    x->deliver(x->ctx, from, &b, copy);
}

/* One step of transfer t (lock held on entry and exit, dropped while the
 * sink works). */
static void in_step(struct xfer *x, struct xfer_in *t)
{
    struct net_chunk_ack a = {
        .group = t->group, .index = t->index, .term = t->term};
    uint64_t from = t->from;
    t->busy = true;
    if (!t->begun) {
        pthread_mutex_unlock(&x->mu);
        void *sink = NULL;
        int rc = x->st.sink_begin(x->st.ctx, t->group, t->index, t->term,
                                  t->total, t->crc, &sink);
        pthread_mutex_lock(&x->mu);
        t->busy = false;
        if (rc != KHO_OK) {
            LOGW("group %llu: cannot take the snapshot from node %llu: %s; "
                 "dropped",
                 (unsigned long long)t->group, (unsigned long long)from,
                 kho_strerror(rc));
            t->dead = true;
            return;
        }
        t->sink = sink;
        t->begun = true;
        return;
    }
    struct chunk *k = t->q_head;
    t->q_head = k->next;
    if (t->q_head == NULL) {
        t->q_tail = NULL;
    }
    t->q_bytes -= k->len;
    bool last = t->written + k->len == t->total;
    void *sink = t->sink;
    pthread_mutex_unlock(&x->mu);
    int rc = x->st.sink_write(sink, k->data, k->len);
    uint8_t desc[XFER_DESC_BYTES_MAX];
    size_t desc_len = 0;
    if (rc == KHO_OK && last) {
        rc = x->st.sink_finish(sink, desc, sizeof(desc), &desc_len);
    }
    if (rc != KHO_OK || last) {
        x->st.sink_close(sink); /* never under the lock: it may write */
    }
    pthread_mutex_lock(&x->mu);
    t->busy = false;
    size_t len = k->len;
    free(k);
    if (rc != KHO_OK) {
        LOGW("group %llu: snapshot from node %llu at index %llu refused at "
             "byte %llu: %s; asking for it again",
             (unsigned long long)t->group, (unsigned long long)from,
             (unsigned long long)t->index, (unsigned long long)t->written,
             kho_strerror(rc));
        t->sink = NULL;
        t->begun = false;
        t->failed = true;
        queue_drop(t);
        a.have = 0;
    } else {
        t->written += len;
        a.have = t->written;
    }
    if (rc == KHO_OK && last) {
        LOGI("group %llu: received a snapshot at index %llu (%llu bytes) "
             "from node %llu",
             (unsigned long long)t->group, (unsigned long long)t->index,
             (unsigned long long)t->total, (unsigned long long)from);
        uint8_t *head = t->head;
        size_t head_len = t->head_len;
        uint64_t group = t->group;
        t->head = NULL;
        t->sink = NULL;
        in_clear(t);
        pthread_mutex_unlock(&x->mu);
        net_send_chunk_ack(x->net, from, &a);
        in_deliver(x, from, group, head, head_len, desc, desc_len);
        free(head);
        pthread_mutex_lock(&x->mu);
        return;
    }
    pthread_mutex_unlock(&x->mu);
    net_send_chunk_ack(x->net, from, &a);
    pthread_mutex_lock(&x->mu);
}

bool xfer_run_recv(struct xfer *x, uint64_t now_ms)
{
    bool did = false;
    pthread_mutex_lock(&x->mu);
    for (size_t i = 0; i < XFER_RECVS_MAX && !x->stopping; i++) {
        struct xfer_in *t = &x->in[i];
        if (!t->used || t->busy) {
            continue;
        }
        if (!t->dead && now_ms - t->progress_ms >= XFER_IDLE_MS) {
            LOGW("group %llu: snapshot from node %llu made no progress for "
                 "%u ms; dropped",
                 (unsigned long long)t->group, (unsigned long long)t->from,
                 XFER_IDLE_MS);
            t->dead = true;
        }
        if (t->dead) {
            void *sink = t->sink;
            in_clear(t);
            if (sink != NULL) {
                t->used = t->busy = true; /* nobody takes it meanwhile */
                pthread_mutex_unlock(&x->mu);
                x->st.sink_close(sink); /* never under the lock */
                pthread_mutex_lock(&x->mu);
                t->used = t->busy = false;
            }
            did = true;
            continue;
        }
        if (!t->failed && (!t->begun || t->q_head != NULL)) {
            in_step(x, t);
            did = true;
        }
    }
    pthread_mutex_unlock(&x->mu);
    return did;
}

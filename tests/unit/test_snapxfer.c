/*
 * test_snapxfer.c - snapshots streamed between two nodes in chunks
 * (server/node/snapxfer.c), from a source to a sink held in memory, over a
 * fake transport that can lose frames. Built without the transfer threads:
 * the test runs each side's passes itself, so every run is the same.
 *
 *   - a 5 MiB snapshot arrives whole, with the source's meta (which may be
 *     past what the core asked for), in 1 MiB chunks, and the SNAPSHOT
 *     message handed on carries the sink's descriptor;
 *   - a transfer whose link breaks mid-way resumes from what the receiver
 *     holds: no chunk before that offset is sent again;
 *   - raft re-sending the same snapshot does not restart the transfer;
 *   - a corrupted chunk is caught by the sink's checksum: nothing is
 *     delivered, the receiver asks for the stream again and the second
 *     copy arrives intact;
 *   - the sender keeps at most XFER_WINDOW_BYTES unacknowledged;
 *   - a cancelled transfer closes its source; a sink that cannot begin
 *     drops the transfer without delivering anything.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "server/node/snapxfer.h"
#include "server/store/store.h"

/* --- A fake transport: frames queue up until the test delivers them. ---- */

#define FRAMES_MAX 256

struct frame {
    bool ack;
    uint64_t to;
    struct net_chunk c; /* data and head copied */
    struct net_chunk_ack a;
};

static struct frame frames[FRAMES_MAX];
static size_t n_frames;
static bool link_up = true;

int net_send_chunk(struct net *n, uint64_t to, const struct net_chunk *c)
{
    (void)n;
    if (!link_up) {
        return KHO_OK; /* lost, as a broken link loses it */
    }
    assert_true(n_frames < FRAMES_MAX);
    struct frame *f = &frames[n_frames++];
    memset(f, 0, sizeof(*f));
    f->to = to;
    f->c = *c;
    uint8_t *d = malloc(c->len + 1), *h = malloc(c->head_len + 1);
    memcpy(d, c->data, c->len);
    if (c->head_len > 0) {
        memcpy(h, c->head, c->head_len);
    }
    f->c.data = d;
    f->c.head = c->head_len > 0 ? h : NULL;
    if (c->head_len == 0) {
        free(h);
    }
    return KHO_OK;
}

int net_send_chunk_ack(struct net *n, uint64_t to,
                       const struct net_chunk_ack *a)
{
    (void)n;
    if (!link_up) {
        return KHO_OK;
    }
    assert_true(n_frames < FRAMES_MAX);
    struct frame *f = &frames[n_frames++];
    memset(f, 0, sizeof(*f));
    f->ack = true;
    f->to = to;
    f->a = *a;
    return KHO_OK;
}

static void frame_free(struct frame *f)
{
    if (!f->ack) {
        free((void *)f->c.data);
        free((void *)f->c.head);
    }
}

/* --- A source and a sink in memory ---------------------------------------- */

#define LEADER 1
#define FOLLOWER 2
#define GROUP 7
#define SNAP_BYTES (5u << 20)
#define SNAP_INDEX 500u
#define SNAP_TERM 2u

static uint8_t *payload;
static int opens, closes, sink_begins, sink_closes;
static int refuse_begin;

static int src_open(void *ctx, uint64_t group, void **h,
                    struct raft_snapshot_meta *meta, uint64_t *total,
                    uint32_t *crc)
{
    (void)ctx;
    assert_int_equal(group, GROUP);
    *meta = (struct raft_snapshot_meta){
        .index = SNAP_INDEX,
        .term = SNAP_TERM,
        .conf = {.n = 2,
                 .members = {{LEADER, RAFT_VOTER}, {FOLLOWER, RAFT_VOTER}}}};
    *total = SNAP_BYTES;
    *crc = store_crc32c(payload, SNAP_BYTES);
    *h = payload;
    opens++;
    return KHO_OK;
}

static int src_read(void *h, uint64_t offset, uint8_t *buf, size_t cap,
                    size_t *n)
{
    assert_ptr_equal(h, payload);
    assert_true(offset <= SNAP_BYTES);
    size_t k = SNAP_BYTES - offset < cap ? SNAP_BYTES - offset : cap;
    memcpy(buf, payload + offset, k);
    *n = k;
    return KHO_OK;
}

static void src_close(void *h)
{
    assert_ptr_equal(h, payload);
    closes++;
}

struct sink {
    uint8_t *data;
    uint64_t total, have;
    uint32_t crc;
};

static uint8_t *sunk; /* what the last finished sink held */

static int sink_begin(void *ctx, uint64_t group, uint64_t index,
                      uint64_t term, uint64_t total, uint32_t crc, void **h)
{
    (void)ctx;
    assert_int_equal(group, GROUP);
    assert_int_equal(index, SNAP_INDEX);
    assert_int_equal(term, SNAP_TERM);
    if (refuse_begin) {
        return KHO_ENOTFOUND;
    }
    struct sink *k = calloc(1, sizeof(*k));
    k->data = malloc(total);
    k->total = total;
    k->crc = crc;
    sink_begins++;
    *h = k;
    return KHO_OK;
}

static int sink_write(void *h, const uint8_t *buf, size_t len)
{
    struct sink *k = h;
    assert_true(len <= k->total - k->have);
    memcpy(k->data + k->have, buf, len);
    k->have += len;
    return KHO_OK;
}

static int sink_finish(void *h, uint8_t *desc, size_t cap, size_t *len)
{
    struct sink *k = h;
    assert_int_equal(k->have, k->total);
    if (store_crc32c(k->data, k->total) != k->crc) {
        return KHO_ECORRUPT;
    }
    assert_true(cap >= 8);
    memcpy(desc, "STAGED!!", 8);
    *len = 8;
    free(sunk);
    sunk = k->data;
    k->data = NULL;
    return KHO_OK;
}

static void sink_close(void *h)
{
    struct sink *k = h;
    free(k->data);
    free(k);
    sink_closes++;
}

static const struct xfer_store mem_store = {
    .src_open = src_open,
    .src_read = src_read,
    .src_close = src_close,
    .sink_begin = sink_begin,
    .sink_write = sink_write,
    .sink_finish = sink_finish,
    .sink_close = sink_close,
};

/* --- Two nodes -------------------------------------------------------------- */

static struct codec_batch got;
static uint8_t *got_desc;
static int delivered;

static void deliver(void *ctx, uint64_t from, struct codec_batch *b,
                    uint8_t *desc)
{
    (void)ctx;
    assert_int_equal(from, LEADER);
    got = *b;
    got_desc = desc;
    delivered++;
}

struct pair {
    struct xfer *snd, *rcv;
    struct raft_msg msg;
    uint64_t now;
};

static int setup(void **state)
{
    static struct pair p;
    memset(&p, 0, sizeof(p));
    n_frames = 0;
    link_up = true;
    delivered = opens = closes = sink_begins = sink_closes = 0;
    refuse_begin = 0;
    got_desc = NULL;
    sunk = NULL;
    assert_int_equal(
        xfer_create(NULL, &mem_store, deliver, NULL, false, &p.snd), KHO_OK);
    assert_int_equal(
        xfer_create(NULL, &mem_store, deliver, NULL, false, &p.rcv), KHO_OK);
    payload = malloc(SNAP_BYTES);
    for (size_t i = 0; i < SNAP_BYTES; i++) {
        payload[i] = (uint8_t)(i * 2654435761u >> 13);
    }
    /* What the core asks for: an older index than the source will give. */
    p.msg = (struct raft_msg){
        .group_id = GROUP,
        .type = RAFT_MSG_SNAPSHOT,
        .from = LEADER,
        .to = FOLLOWER,
        .term = 3,
        .snapshot = {.meta = {.index = 400, .term = 2,
                              .conf = {.n = 2,
                                       .members = {{LEADER, RAFT_VOTER},
                                                   {FOLLOWER, RAFT_VOTER}}}}},
    };
    p.now = 1000;
    *state = &p;
    return 0;
}

static int teardown(void **state)
{
    struct pair *p = *state;
    for (size_t i = 0; i < n_frames; i++) {
        frame_free(&frames[i]);
    }
    xfer_destroy(p->snd);
    xfer_destroy(p->rcv);
    assert_int_equal(opens, closes);
    assert_int_equal(sink_begins, sink_closes);
    free(payload);
    free(sunk);
    if (delivered > 0) {
        codec_batch_free(&got);
        free(got_desc);
    }
    return 0;
}

/* Delivers every queued frame (chunks to the receiver, acks to the
 * sender); returns the lowest chunk offset seen (UINT64_MAX: none). */
static uint64_t deliver_all(struct pair *p, bool corrupt_first)
{
    uint64_t lowest = UINT64_MAX;
    for (size_t i = 0; i < n_frames; i++) {
        struct frame *f = &frames[i];
        if (f->ack) {
            xfer_on_ack(p->snd, FOLLOWER, &f->a, p->now);
        } else {
            lowest = f->c.offset < lowest ? f->c.offset : lowest;
            if (corrupt_first && f->c.len > 0) {
                ((uint8_t *)f->c.data)[0] ^= 1;
                corrupt_first = false;
            }
            xfer_on_chunk(p->rcv, LEADER, &f->c, p->now);
        }
        frame_free(f);
    }
    n_frames = 0;
    return lowest;
}

/* The receiver's thread, run until it has nothing left to write. */
static void drain_recv(struct pair *p)
{
    while (xfer_run_recv(p->rcv, p->now)) {
    }
}

static void run(struct pair *p, int rounds)
{
    for (int r = 0; r < rounds && delivered == 0; r++) {
        xfer_run_send(p->snd, p->now);
        deliver_all(p, false);
        drain_recv(p);
        deliver_all(p, false);
        p->now += 10;
    }
}

static void check_delivered(void)
{
    assert_int_equal(delivered, 1);
    assert_int_equal(got.n, 1);
    const struct raft_msg *m = &got.msgs[0];
    assert_int_equal(m->type, RAFT_MSG_SNAPSHOT);
    assert_int_equal(m->group_id, GROUP);
    assert_int_equal(m->term, 3);
    assert_int_equal(m->snapshot.meta.index, SNAP_INDEX);
    assert_int_equal(m->snapshot.meta.term, SNAP_TERM);
    assert_int_equal(m->snapshot.meta.conf.n, 2);
    assert_int_equal(m->snapshot.len, 8);
    assert_ptr_equal(m->snapshot.data, got_desc);
    assert_memory_equal(got_desc, "STAGED!!", 8);
    assert_non_null(sunk);
    assert_memory_equal(sunk, payload, SNAP_BYTES);
}

static void test_whole_snapshot_arrives(void **state)
{
    struct pair *p = *state;
    assert_int_equal(xfer_send(p->snd, &p->msg, p->now), KHO_OK);
    assert_true(xfer_sending(p->snd, GROUP));
    run(p, 50);
    check_delivered();
    /* The last ack reached the sender: the transfer is over. */
    assert_false(xfer_sending(p->snd, GROUP));
    xfer_run_send(p->snd, p->now);
    assert_int_equal(opens, 1);
    assert_int_equal(closes, 1);
}

static void test_window_bounds_unacked_bytes(void **state)
{
    struct pair *p = *state;
    assert_int_equal(xfer_send(p->snd, &p->msg, p->now), KHO_OK);
    for (int r = 0; r < 5; r++) {
        xfer_run_send(p->snd, p->now); /* no acks come back */
    }
    size_t bytes = 0;
    for (size_t i = 0; i < n_frames; i++) {
        bytes += frames[i].c.len;
    }
    assert_true(bytes > 0);
    assert_true(bytes <= XFER_WINDOW_BYTES);
}

static void test_broken_link_resumes(void **state)
{
    struct pair *p = *state;
    assert_int_equal(xfer_send(p->snd, &p->msg, p->now), KHO_OK);
    /* Two chunks make it, then the link breaks. */
    xfer_run_send(p->snd, p->now);
    for (size_t i = 2; i < n_frames; i++) {
        frame_free(&frames[i]);
    }
    n_frames = 2;
    deliver_all(p, false);
    drain_recv(p);
    deliver_all(p, false); /* their acks */
    link_up = false;
    for (int r = 0; r < 20; r++) {
        p->now += 10;
        xfer_run_send(p->snd, p->now);
    }
    /* Raft re-sends the same snapshot meanwhile: not a new transfer. */
    assert_int_equal(xfer_send(p->snd, &p->msg, p->now), KHO_OK);
    link_up = true;
    p->now += XFER_STALL_MS;
    xfer_run_send(p->snd, p->now);
    uint64_t lowest = deliver_all(p, false);
    assert_int_equal(lowest, 2u * XFER_CHUNK_BYTES);
    run(p, 50);
    check_delivered();
    assert_int_equal(opens, 1);
}

static void test_corrupt_chunk_never_delivered(void **state)
{
    struct pair *p = *state;
    assert_int_equal(xfer_send(p->snd, &p->msg, p->now), KHO_OK);
    xfer_run_send(p->snd, p->now);
    deliver_all(p, true);
    /* The sink refuses the corrupt stream at its end; the receiver asks
     * for it again and the sender starts over - the second copy arrives
     * intact. */
    run(p, 200);
    check_delivered();
    assert_int_equal(sink_begins, 2);
}

static void test_cancel_closes_source(void **state)
{
    struct pair *p = *state;
    assert_int_equal(xfer_send(p->snd, &p->msg, p->now), KHO_OK);
    xfer_run_send(p->snd, p->now);
    assert_int_equal(opens, 1);
    xfer_cancel(p->snd, GROUP);
    assert_false(xfer_sending(p->snd, GROUP));
    xfer_run_send(p->snd, p->now);
    assert_int_equal(closes, 1);
}

static void test_sink_refusal_delivers_nothing(void **state)
{
    struct pair *p = *state;
    refuse_begin = 1;
    assert_int_equal(xfer_send(p->snd, &p->msg, p->now), KHO_OK);
    run(p, 20);
    assert_int_equal(delivered, 0);
    assert_int_equal(sink_begins, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_whole_snapshot_arrives, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_window_bounds_unacked_bytes,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_broken_link_resumes, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_chunk_never_delivered,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_closes_source, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sink_refusal_delivers_nothing,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

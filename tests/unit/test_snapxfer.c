/*
 * test_snapxfer.c - snapshots streamed between two nodes in chunks
 * (server/node/snapxfer.c), over a fake transport that can lose frames:
 *
 *   - a 5 MiB snapshot arrives whole, as the SNAPSHOT message it was, with
 *     every byte and its metadata intact, in 1 MiB chunks;
 *   - a transfer whose link breaks mid-way resumes from what the receiver
 *     holds: no chunk before that offset is sent again;
 *   - raft re-sending the same snapshot does not restart the transfer;
 *   - a corrupted chunk is caught by the whole-payload checksum: the
 *     corrupt copy is never delivered, the receiver asks for it again and
 *     the second copy arrives intact;
 *   - the sender keeps at most XFER_WINDOW_BYTES unacknowledged.
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

/* --- Two nodes -------------------------------------------------------------- */

#define LEADER 1
#define FOLLOWER 2
#define GROUP 7
#define SNAP_BYTES (5u << 20)

static struct codec_batch got;
static uint8_t *got_data;
static int delivered;

static void deliver(void *ctx, uint64_t from, struct codec_batch *b,
                    uint8_t *data)
{
    (void)ctx;
    assert_int_equal(from, LEADER);
    got = *b;
    got_data = data;
    delivered++;
}

struct pair {
    struct xfer *snd, *rcv;
    uint8_t *payload;
    struct raft_msg msg;
    uint64_t now;
};

static int setup(void **state)
{
    static struct pair p;
    memset(&p, 0, sizeof(p));
    n_frames = 0;
    link_up = true;
    delivered = 0;
    got_data = NULL;
    assert_int_equal(xfer_create(NULL, deliver, NULL, &p.snd), KHO_OK);
    assert_int_equal(xfer_create(NULL, deliver, NULL, &p.rcv), KHO_OK);
    p.payload = malloc(SNAP_BYTES);
    for (size_t i = 0; i < SNAP_BYTES; i++) {
        p.payload[i] = (uint8_t)(i * 2654435761u >> 13);
    }
    p.msg = (struct raft_msg){
        .group_id = GROUP,
        .type = RAFT_MSG_SNAPSHOT,
        .from = LEADER,
        .to = FOLLOWER,
        .term = 3,
        .snapshot = {.meta = {.index = 500, .term = 2,
                              .conf = {.n = 2,
                                       .members = {{LEADER, RAFT_VOTER},
                                                   {FOLLOWER, RAFT_VOTER}}}},
                     .data = p.payload,
                     .len = SNAP_BYTES},
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
    free(p->payload);
    if (delivered > 0) {
        codec_batch_free(&got);
        free(got_data);
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
            xfer_on_chunk(p->rcv, LEADER, &f->c);
        }
        frame_free(f);
    }
    n_frames = 0;
    return lowest;
}

static void run(struct pair *p, int rounds)
{
    for (int r = 0; r < rounds && delivered == 0; r++) {
        xfer_pump(p->snd, p->now);
        deliver_all(p, false);
        p->now += 10;
    }
}

static void check_delivered(struct pair *p)
{
    assert_int_equal(delivered, 1);
    assert_int_equal(got.n, 1);
    const struct raft_msg *m = &got.msgs[0];
    assert_int_equal(m->type, RAFT_MSG_SNAPSHOT);
    assert_int_equal(m->group_id, GROUP);
    assert_int_equal(m->term, 3);
    assert_int_equal(m->snapshot.meta.index, 500);
    assert_int_equal(m->snapshot.meta.term, 2);
    assert_int_equal(m->snapshot.meta.conf.n, 2);
    assert_int_equal(m->snapshot.len, SNAP_BYTES);
    assert_ptr_equal(m->snapshot.data, got_data);
    assert_memory_equal(got_data, p->payload, SNAP_BYTES);
}

static void test_whole_snapshot_arrives(void **state)
{
    struct pair *p = *state;
    assert_int_equal(xfer_send(p->snd, &p->msg, p->now), KHO_OK);
    assert_true(xfer_sending(p->snd, GROUP));
    run(p, 50);
    check_delivered(p);
    /* The last ack reaches the sender in the next round. */
    xfer_pump(p->snd, p->now);
    deliver_all(p, false);
    assert_false(xfer_sending(p->snd, GROUP));
}

static void test_window_bounds_unacked_bytes(void **state)
{
    struct pair *p = *state;
    assert_int_equal(xfer_send(p->snd, &p->msg, p->now), KHO_OK);
    for (int r = 0; r < 5; r++) {
        xfer_pump(p->snd, p->now); /* no acks come back */
    }
    size_t bytes = 0;
    for (size_t i = 0; i < n_frames; i++) {
        bytes += frames[i].c.len;
    }
    assert_true(bytes <= XFER_WINDOW_BYTES);
}

static void test_broken_link_resumes(void **state)
{
    struct pair *p = *state;
    assert_int_equal(xfer_send(p->snd, &p->msg, p->now), KHO_OK);
    /* Two chunks make it, then the link breaks. */
    xfer_pump(p->snd, p->now);
    for (size_t i = 2; i < n_frames; i++) {
        frame_free(&frames[i]);
    }
    n_frames = 2;
    deliver_all(p, false);
    link_up = false;
    for (int r = 0; r < 20; r++) {
        p->now += 10;
        xfer_pump(p->snd, p->now);
    }
    /* Raft re-sends the same snapshot meanwhile: not a new transfer. */
    assert_int_equal(xfer_send(p->snd, &p->msg, p->now), KHO_OK);
    link_up = true;
    p->now += XFER_STALL_MS;
    xfer_pump(p->snd, p->now);
    uint64_t lowest = deliver_all(p, false);
    assert_int_equal(lowest, 2u * XFER_CHUNK_BYTES);
    run(p, 50);
    check_delivered(p);
}

static void test_corrupt_chunk_never_delivered(void **state)
{
    struct pair *p = *state;
    assert_int_equal(xfer_send(p->snd, &p->msg, p->now), KHO_OK);
    xfer_pump(p->snd, p->now);
    deliver_all(p, true);
    /* The corrupt payload was refused; the receiver asked for it again and
     * the sender starts over - the second copy arrives intact. */
    run(p, 100);
    check_delivered(p);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_raft_propose.c - proves that client-facing calls refuse what they
 * must with the documented kho_err and leave no trace when they do:
 * proposals on a non-leader (KHO_ENOTLEADER, with the leader as hint),
 * over max_entry_bytes (KHO_ETOOLARGE), past max_uncommitted_bytes or
 * during a leadership transfer (KHO_EBUSY); read_index past
 * max_pending_reads (KHO_EBUSY); membership changes past RAFT_MEMBERS_MAX
 * (KHO_EINVAL). It also checks the output bounds: a ready never carries
 * more than max_ready_msgs messages (the rest are counted as dropped_overflow
 * and the cluster recovers), nor more than max_apply_bytes of committed
 * payload unless one entry alone is bigger; and that leases answer reads
 * without a round only while a quorum-acknowledged round is recent.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net_fixture.h"

struct tune {
    uint32_t max_entry_bytes;
    uint64_t max_uncommitted_bytes;
    uint32_t max_pending_reads;
    uint32_t max_ready_msgs;
    uint64_t max_apply_bytes;
    bool lease;
};

static void tune_cb(struct raft_config *c, void *arg)
{
    const struct tune *t = arg;
    if (t->max_entry_bytes) {
        c->max_entry_bytes = t->max_entry_bytes;
    }
    if (t->max_uncommitted_bytes) {
        c->max_uncommitted_bytes = t->max_uncommitted_bytes;
    }
    if (t->max_pending_reads) {
        c->max_pending_reads = t->max_pending_reads;
    }
    if (t->max_ready_msgs) {
        c->max_ready_msgs = t->max_ready_msgs;
    }
    if (t->max_apply_bytes) {
        c->max_apply_bytes = t->max_apply_bytes;
    }
    if (t->lease) {
        c->check_quorum = true;
        c->lease_reads = true;
        c->lease_drift_ticks = 2;
    }
}


/* A cluster of `count` nodes with node 1 elected. */
static struct net *cluster(uint32_t count, struct tune *t)
{
    struct net *n = new_net(3);
    struct net_opts o = {.tune_cb = tune_cb, .tune_arg = t};
    assert_int_equal(net_add_nodes(n, count, &o, NULL), KHO_OK);
    assert_int_equal(net_elect(n, 1), KHO_OK);
    return n;
}


static int propose(struct net *n, raft_id id, size_t len)
{
    static uint8_t buf[RAFT_ENTRY_BYTES_MAX / 1024];
    uint64_t index = 0, term = 0;
    memset(buf, 'p', sizeof(buf));
    assert_true(len <= sizeof(buf));
    return raft_propose(n->nodes[id].r, buf, len, &index, &term);
}

/* Heartbeat rounds until everyone is caught up. */
static void settle(struct net *n)
{
    raft_id l = net_leader(n);
    for (int i = 0; i < 4; i++) {
        net_tick(n, l, n->nodes[l].cfg.heartbeat_ticks);
        net_stabilize(n);
    }
}

static void test_not_leader(void **state)
{
    struct net *n = cluster(3, &(struct tune){0});
    uint64_t index, term;
    for (raft_id id = 2; id <= 3; id++) {
        struct raft *r = n->nodes[id].r;
        assert_int_equal(propose(n, id, 3), KHO_ENOTLEADER);
        assert_int_equal(status_of(n, id).leader, 1);
        assert_int_equal(raft_propose_conf(r, RAFT_CONF_ADD_LEARNER, 9,
                                           &index, &term),
                         KHO_ENOTLEADER);
        assert_int_equal(raft_read_index(r, 1), KHO_ENOTLEADER);
        assert_int_equal(raft_transfer_leader(r, 1), KHO_ENOTLEADER);
        assert_false(raft_has_ready(r));
    }
    /* A candidate is not a leader either. */
    net_isolate(n, 2);
    assert_int_equal(net_campaign(n, 2), KHO_OK);
    assert_int_equal(status_of(n, 2).role, RAFT_CANDIDATE);
    assert_int_equal(propose(n, 2, 3), KHO_ENOTLEADER);
    assert_int_equal(raft_read_index(n->nodes[2].r, 1), KHO_ENOTLEADER);
    net_heal(n);
    net_stabilize(n);
    done(n);
}

static void test_too_large(void **state)
{
    struct tune t = {.max_entry_bytes = 1024};
    struct net *n = cluster(3, &t);
    uint64_t last = status_of(n, 1).last_index;
    assert_int_equal(propose(n, 1, 1025), KHO_ETOOLARGE);
    assert_int_equal(propose(n, 1, 4096), KHO_ETOOLARGE);
    assert_int_equal(status_of(n, 1).last_index, last);
    assert_int_equal(propose(n, 1, 1024), KHO_OK);
    assert_int_equal(status_of(n, 1).last_index, last + 1);
    net_stabilize(n);
    settle(n);
    assert_int_equal(status_of(n, 3).commit, last + 1);
    done(n);
}

static void test_uncommitted_limit(void **state)
{
    /* The smallest limits allowed (an entry must hold a configuration):
     * two proposals of `size` fit, a third does not. */
    const size_t size = RAFT_CONF_ENCODED_MAX * 2 / 5;
    struct tune t = {.max_entry_bytes = RAFT_CONF_ENCODED_MAX,
                     .max_uncommitted_bytes = RAFT_CONF_ENCODED_MAX};
    struct net *n = cluster(3, &t);
    net_isolate(n, 2);
    net_isolate(n, 3);
    int accepted = 0, rc = KHO_OK;
    for (int i = 0; i < 10 && rc == KHO_OK; i++) {
        rc = propose(n, 1, size);
        accepted += rc == KHO_OK;
        net_stabilize(n);
    }
    assert_int_equal(rc, KHO_EBUSY);
    /* 2 * size fit in the limit; a third would not. */
    assert_int_equal(accepted, 2);
    uint64_t last = status_of(n, 1).last_index;
    assert_int_equal(propose(n, 1, size), KHO_EBUSY);
    assert_int_equal(status_of(n, 1).last_index, last);
    /* Once they commit there is room again. */
    net_heal(n);
    settle(n);
    assert_int_equal(status_of(n, 1).commit, last);
    assert_int_equal(propose(n, 1, size), KHO_OK);
    net_stabilize(n);
    done(n);
}

static void test_transfer_refuses_proposals(void **state)
{
    struct net *n = cluster(3, &(struct tune){0});
    uint64_t index, term;
    struct raft *r = n->nodes[1].r;
    net_stabilize(n);
    net_isolate(n, 2);
    assert_int_equal(raft_transfer_leader(r, 1), KHO_EINVAL);
    assert_int_equal(raft_transfer_leader(r, 9), KHO_EINVAL);
    assert_int_equal(raft_transfer_leader(r, 0), KHO_EINVAL);
    assert_int_equal(raft_transfer_leader(r, 2), KHO_OK);
    assert_int_equal(status_of(n, 1).transferee, 2);
    assert_int_equal(propose(n, 1, 3), KHO_EBUSY);
    assert_int_equal(
        raft_propose_conf(r, RAFT_CONF_ADD_LEARNER, 9, &index, &term),
        KHO_EBUSY);
    net_stabilize(n);
    /* The transfer times out after an election timeout. */
    net_tick(n, 1, n->nodes[1].cfg.election_ticks);
    net_stabilize(n);
    assert_int_equal(status_of(n, 1).role, RAFT_LEADER);
    assert_int_equal(status_of(n, 1).transferee, 0);
    assert_int_equal(propose(n, 1, 3), KHO_OK);
    net_heal(n);
    net_stabilize(n);
    done(n);
}

static void test_read_limit(void **state)
{
    struct tune t = {.max_pending_reads = 4};
    struct net *n = cluster(3, &t);
    struct raft *r = n->nodes[1].r;
    settle(n);
    net_isolate(n, 1);
    for (uint64_t ctx = 1; ctx <= 4; ctx++) {
        assert_int_equal(raft_read_index(r, ctx), KHO_OK);
    }
    assert_int_equal(raft_read_index(r, 5), KHO_EBUSY);
    net_stabilize(n);
    net_tick(n, 1, 3);
    net_stabilize(n);
    assert_int_equal(n->nodes[1].reads_served, 0);
    assert_int_equal(raft_read_index(r, 6), KHO_EBUSY);
    net_heal(n);
    settle(n);
    assert_int_equal(n->nodes[1].reads_served, 4);
    assert_int_equal(raft_read_index(r, 7), KHO_OK);
    net_stabilize(n);
    settle(n);
    assert_int_equal(n->nodes[1].reads_served, 5);
    done(n);
}

/* Pending reads are failed, not silently forgotten, when leadership is
 * lost. */
static void test_reads_fail_on_step_down(void **state)
{
    struct net *n = cluster(3, &(struct tune){0});
    settle(n);
    net_isolate(n, 1);
    assert_int_equal(raft_read_index(n->nodes[1].r, 42), KHO_OK);
    net_stabilize(n);
    assert_int_equal(net_elect(n, 2), KHO_OK);
    net_heal(n);
    settle(n);
    assert_int_equal(status_of(n, 1).role, RAFT_FOLLOWER);
    assert_int_equal(n->nodes[1].reads_served, 0);
    assert_int_equal(n->nodes[1].reads_failed, 1);
    done(n);
}

/* Messages beyond max_ready_msgs are dropped and counted; the cluster
 * recovers by the usual retries. */
static void test_ready_msgs_overflow(void **state)
{
    struct tune t = {.max_ready_msgs = 2 * RAFT_MEMBERS_MAX};
    struct net *n = cluster(5, &t);
    struct raft *r = n->nodes[1].r;
    settle(n);
    uint64_t before = raft_stats(r)->dropped_overflow;
    /* 4 heartbeats per tick, and a proposal's appends; ticks until
     * max_ready_msgs overflows, no ready processed in between. */
    for (int i = 0; i < (int)RAFT_MEMBERS_MAX; i++) {
        assert_int_equal(raft_tick(r), KHO_OK);
        assert_int_equal(propose(n, 1, 10), KHO_OK);
    }
    assert_true(raft_stats(r)->dropped_overflow > before);
    uint64_t sent = n->msgs_sent;
    assert_true(net_process_ready(n, 1));
    assert_true(n->msgs_sent - sent <= t.max_ready_msgs);
    uint64_t last = status_of(n, 1).last_index;
    settle(n);
    for (raft_id id = 1; id <= 5; id++) {
        assert_int_equal(status_of(n, id).commit, last);
    }
    done(n);
}

/* A ready's committed entries stay within max_apply_bytes (or are a
 * single entry). */
static void test_apply_bytes_limit(void **state)
{
    struct net *n = new_net(1);
    struct tune t = {.max_apply_bytes = 300};
    struct net_opts o = {.tune_cb = tune_cb, .tune_arg = &t};
    assert_int_equal(net_add_nodes(n, 1, &o, NULL), KHO_OK);
    assert_int_equal(net_elect(n, 1), KHO_OK);
    struct raft *r = n->nodes[1].r;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(propose(n, 1, 100), KHO_OK);
    }
    assert_int_equal(propose(n, 1, 500), KHO_OK);
    uint64_t last = status_of(n, 1).last_index;
    uint64_t applied = status_of(n, 1).applied;
    for (int guard = 0; guard < 100 && applied < last; guard++) {
        struct raft_ready rd;
        if (!raft_has_ready(r)) {
            break;
        }
        assert_int_equal(raft_ready(r, &rd), KHO_OK);
        size_t bytes = 0;
        for (size_t i = 0; i < rd.n_committed; i++) {
            bytes += rd.committed[i].len;
            assert_int_equal(rd.committed[i].index, applied + 1);
            applied = rd.committed[i].index;
        }
        if (rd.n_committed > 1 && bytes > t.max_apply_bytes) {
            fail_msg("a ready committed %zu bytes in %zu entries", bytes,
                     rd.n_committed);
        }
        assert_int_equal(memstore_persist(&n->nodes[1].store, &rd), KHO_OK);
        raft_advance(r);
    }
    assert_int_equal(applied, last);
}

static void test_too_many_members(void **state)
{
    struct net *n = new_net(1);
    struct net_opts o = {.voters = {1}, .n_voters = 1};
    for (raft_id id = 2; id <= RAFT_MEMBERS_MAX; id++) {
        o.learners[o.n_learners++] = id;
    }
    assert_int_equal(net_add_nodes(n, 1, &o, NULL), KHO_OK);
    assert_int_equal(net_elect(n, 1), KHO_OK);
    uint64_t index, term;
    struct raft *r = n->nodes[1].r;
    assert_int_equal(
        raft_propose_conf(r, RAFT_CONF_ADD_LEARNER, 99, &index, &term),
        KHO_EINVAL);
    assert_int_equal(
        raft_propose_conf(r, RAFT_CONF_ADD_VOTER, 99, &index, &term),
        KHO_EINVAL);
    assert_int_equal(raft_propose_conf(r, RAFT_CONF_REMOVE, 16, &index,
                                       &term),
                     KHO_OK);
    net_stabilize(n);
    assert_int_equal(status_of(n, 1).conf.n, RAFT_MEMBERS_MAX - 1);
    assert_int_equal(
        raft_propose_conf(r, RAFT_CONF_ADD_LEARNER, 99, &index, &term),
        KHO_OK);
    net_stabilize(n);
    assert_int_equal(status_of(n, 1).conf.n, RAFT_MEMBERS_MAX);
    done(n);
}

/* Leases (raft.h, lease_reads): right after a quorum-acknowledged round the
 * leader answers a read in its next ready with no message at all; once
 * the lease has run out, an isolated leader answers none. */
static void test_lease_reads(void **state)
{
    struct tune t = {.lease = true};
    struct net *n = new_net(3);
    struct net_opts o = {.tune_cb = tune_cb, .tune_arg = &t};
    assert_int_equal(net_add_nodes(n, 3, &o, NULL), KHO_OK);
    /* Nodes that start with leases on hold their votes for a while (a
     * previous leader's lease may still run), so let the clock run. */
    net_run(n, 200, true);
    raft_id l = net_leader(n);
    assert_int_not_equal(l, 0);
    struct raft *r = n->nodes[l].r;
    settle(n);
    assert_int_equal(raft_read_index(r, 1), KHO_OK);
    uint64_t sent = n->msgs_sent;
    assert_true(net_process_ready(n, l));
    assert_int_equal(n->msgs_sent, sent);
    assert_int_equal(n->nodes[l].reads_served, 1);
    /* Cut off: past the lease it may not answer alone. */
    net_isolate(n, l);
    net_tick(n, l, n->nodes[l].cfg.election_ticks);
    net_stabilize(n);
    if (status_of(n, l).role == RAFT_LEADER) {
        assert_int_equal(raft_read_index(r, 2), KHO_OK);
        net_stabilize(n);
        assert_int_equal(n->nodes[l].reads_served, 1);
    }
    net_heal(n);
    done(n);
}

#define T(test, down) cmocka_unit_test_teardown(test, down)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_not_leader, teardown),
        T(test_too_large, teardown),
        T(test_uncommitted_limit, teardown),
        T(test_transfer_refuses_proposals, teardown),
        T(test_read_limit, teardown),
        T(test_reads_fail_on_step_down, teardown),
        T(test_ready_msgs_overflow, teardown),
        T(test_apply_bytes_limit, teardown),
        T(test_too_many_members, teardown),
        T(test_lease_reads, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

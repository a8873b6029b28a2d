/*
 * test_raft_quiesce.c - proves quiescence (raft.h, "Quiescence"): an idle
 * group stops costing anything and wakes up whenever it is needed.
 *
 *   - A 3-node group quiesces after quiesce_ticks idle ticks: every node is
 *     quiet and hundreds of ticks later not one message has been sent.
 *   - A proposal, a read and a leadership transfer each wake it and are
 *     served; then the group quiesces again.
 *   - Quiet followers whose leader is gone do not notice by themselves; once
 *     the host reports it down (raft_peer_down) they elect a new leader.
 *   - A follower restarted from storage while the group is quiet wakes the
 *     leader with its pre-vote and learns who leads, without an election
 *     (with and without check-quorum).
 *   - A quiet follower refuses a pre-vote, and grants it once its leader is
 *     reported down (without check-quorum, where nothing else holds votes).
 *   - A report that comes just before the quiesce heartbeat keeps the
 *     follower awake (its answer wakes the leader) until the leader speaks
 *     again, and then the group quiesces.
 *   - With leases, a quiet leader its host stopped ticking does not answer
 *     a read from the lease it held when it quiesced.
 *   - Answers to heartbeats sent before quiescing, and messages from
 *     non-members, do not wake a quiet group.
 *   - A lagging learner keeps the leader awake; quiesce_ticks = 0 never
 *     quiesces; a single-node group quiesces and wakes on a proposal.
 *
 * The harness checks Raft's safety properties throughout (net.h).
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

#define QUIESCE_TICKS 5u
#define ELECTION_TICKS 10u
/* Ticks within which an idle group must have quiesced. */
#define SETTLE_TICKS_MAX (QUIESCE_TICKS + 4u * ELECTION_TICKS)

static struct net_opts opts(bool check_quorum, uint32_t quiesce_ticks)
{
    struct net_opts o = {.pre_vote = true,
                         .check_quorum = check_quorum,
                         .election_ticks = ELECTION_TICKS,
                         .heartbeat_ticks = 2,
                         .quiesce_ticks = quiesce_ticks};
    return o;
}

static int propose(struct net *n, raft_id id, const char *data)
{
    uint64_t index = 0, term = 0;
    return raft_propose(n->nodes[id].r, (const uint8_t *)data, strlen(data),
                        &index, &term);
}

/* `count` voters with node 1 elected and one entry committed. */
static struct net *cluster_with(uint32_t count, const struct net_opts *o)
{
    struct net *n = new_net(5);
    assert_int_equal(net_add_nodes(n, count, o, NULL), KHO_OK);
    assert_int_equal(net_elect(n, 1), KHO_OK);
    assert_int_equal(propose(n, 1, "first"), KHO_OK);
    assert_int_equal(net_stabilize(n), KHO_OK);
    return n;
}

static struct net *cluster(bool check_quorum)
{
    struct net_opts o = opts(check_quorum, QUIESCE_TICKS);
    return cluster_with(3, &o);
}

static bool quiet(struct net *n, raft_id id)
{
    return raft_quiet(n->nodes[id].r);
}

static bool all_quiet(struct net *n)
{
    for (raft_id id = 1; id <= n->max_id; id++) {
        if (!quiet(n, id) || !status_of(n, id).quiet) {
            return false;
        }
    }
    return true;
}

/* Ticks every node (net_run: one tick each, then stabilize) until all are
 * quiet; fails after SETTLE_TICKS_MAX. Returns the ticks it took. */
static uint32_t run_until_quiet(struct net *n)
{
    for (uint32_t t = 0; t < SETTLE_TICKS_MAX; t++) {
        if (all_quiet(n)) {
            return t;
        }
        net_run(n, 1, false);
    }
    fprintf(stderr, "trace:\n%s\n", n->out.p ? n->out.p : "");
    fail_msg("the group did not quiesce within %u ticks", SETTLE_TICKS_MAX);
    return 0;
}

/* Every node has committed and applied its whole log, which is `last`. */
static void expect_converged(struct net *n, uint64_t last)
{
    for (raft_id id = 1; id <= n->max_id; id++) {
        struct raft_status st = status_of(n, id);
        assert_int_equal(st.last_index, last);
        assert_int_equal(st.commit, last);
        assert_int_equal(n->nodes[id].applied, last);
    }
}

/* Many ticks of a quiet group: not one message, nobody wakes. */
static void expect_silence(struct net *n, uint32_t ticks)
{
    uint64_t sent = n->msgs_sent;
    net_run(n, ticks, false);
    assert_int_equal(n->msgs_sent, sent);
    assert_true(all_quiet(n));
}

static void test_idle_group_quiesces(void **state)
{
    struct net *n = cluster(true);
    uint64_t last = status_of(n, 1).last_index;
    uint32_t took = run_until_quiet(n);
    assert_true(took >= QUIESCE_TICKS);
    expect_converged(n, last);
    for (raft_id id = 1; id <= 3; id++) {
        assert_int_equal(raft_stats(n->nodes[id].r)->quiesced, 1);
    }
    expect_silence(n, 50 * ELECTION_TICKS);
    assert_int_equal(status_of(n, 1).role, RAFT_LEADER);
    assert_int_equal(status_of(n, 2).leader, 1);
    assert_int_equal(status_of(n, 3).leader, 1);
    /* The host may as well not tick it at all. */
    uint64_t sent = n->msgs_sent;
    assert_int_equal(net_stabilize(n), KHO_OK);
    assert_int_equal(n->msgs_sent, sent);
    done(n);
}

static void test_proposal_wakes_then_quiesces_again(void **state)
{
    struct net *n = cluster(true);
    run_until_quiet(n);
    assert_int_equal(propose(n, 1, "wake"), KHO_OK);
    assert_false(quiet(n, 1));
    assert_true(quiet(n, 2)); /* until the leader's messages arrive */
    assert_int_equal(net_stabilize(n), KHO_OK);
    assert_false(quiet(n, 2));
    assert_false(quiet(n, 3));
    uint64_t last = status_of(n, 1).last_index;
    /* The followers learn the new commit index from heartbeats. */
    run_until_quiet(n);
    expect_converged(n, last);
    expect_silence(n, 20 * ELECTION_TICKS);
    assert_int_equal(raft_stats(n->nodes[1].r)->quiesced, 2);
    assert_int_equal(raft_stats(n->nodes[1].r)->woken, 1);
    done(n);
}

static void test_read_and_transfer_wake(void **state)
{
    struct net *n = cluster(true);
    run_until_quiet(n);
    /* A read needs a quorum round: the leader wakes to run one. */
    assert_int_equal(raft_read_index(n->nodes[1].r, 42), KHO_OK);
    assert_false(quiet(n, 1));
    assert_int_equal(net_stabilize(n), KHO_OK);
    assert_int_equal(n->nodes[1].reads_served, 1);
    run_until_quiet(n);
    /* A transfer wakes it too; the new leader quiesces in its turn. */
    assert_int_equal(raft_transfer_leader(n->nodes[1].r, 2), KHO_OK);
    assert_false(quiet(n, 1));
    assert_int_equal(net_stabilize(n), KHO_OK);
    assert_int_equal(net_leader(n), 2);
    uint64_t last = status_of(n, 2).last_index;
    run_until_quiet(n);
    expect_converged(n, last);
    assert_int_equal(status_of(n, 1).leader, 2);
    done(n);
}

static void test_peer_down_elects_new_leader(void **state)
{
    struct net *n = cluster(true);
    run_until_quiet(n);
    uint64_t term = status_of(n, 1).term;
    /* The leader dies. Quiet followers cannot tell by themselves. */
    net_isolate(n, 1);
    net_run(n, 20 * ELECTION_TICKS, false);
    assert_true(quiet(n, 2));
    assert_true(quiet(n, 3));
    assert_int_equal(status_of(n, 2).term, term);
    /* The failure detector can. */
    assert_int_equal(net_peer_down(n, 2, 1), KHO_OK);
    assert_int_equal(net_peer_down(n, 3, 1), KHO_OK);
    assert_false(quiet(n, 2));
    assert_false(quiet(n, 3));
    net_run(n, 10 * ELECTION_TICKS, true);
    raft_id l = net_leader(n);
    assert_true(l == 2 || l == 3);
    assert_true(status_of(n, l).term > term);
    assert_int_equal(propose(n, l, "after failover"), KHO_OK);
    assert_int_equal(net_stabilize(n), KHO_OK);
    raft_id other = l == 2 ? 3 : 2;
    assert_int_equal(status_of(n, other).commit, status_of(n, l).last_index);
    /* A voter that does not answer keeps the new leader awake. */
    net_run(n, 5 * ELECTION_TICKS, false);
    assert_false(quiet(n, l));
    /* Back in touch, the old leader steps down and the group settles. */
    net_heal(n);
    uint64_t last = status_of(n, l).last_index;
    run_until_quiet(n);
    assert_int_equal(status_of(n, 1).role, RAFT_FOLLOWER);
    assert_int_equal(status_of(n, 1).leader, l);
    expect_converged(n, last);
    done(n);
}

static void restarted_follower(bool check_quorum)
{
    struct net *n = cluster(check_quorum);
    run_until_quiet(n);
    uint64_t term = status_of(n, 1).term;
    assert_int_equal(net_restart(n, 3), KHO_OK);
    assert_false(quiet(n, 3));
    assert_int_equal(status_of(n, 3).leader, 0);
    uint32_t t = 0;
    for (; t < 4 * ELECTION_TICKS && status_of(n, 3).leader == 0; t++) {
        net_run(n, 1, false);
    }
    assert_int_equal(status_of(n, 3).leader, 1);
    /* It woke the leader with its pre-vote, not by an election. */
    assert_int_equal(raft_stats(n->nodes[1].r)->woken, 1);
    assert_int_equal(net_leader(n), 1);
    for (raft_id id = 1; id <= 3; id++) {
        assert_int_equal(status_of(n, id).term, term);
    }
    assert_int_equal(raft_stats(n->nodes[3].r)->elections, 0);
    uint64_t last = status_of(n, 1).last_index;
    run_until_quiet(n);
    expect_converged(n, last);
    done(n);
}

static void test_restarted_follower_wakes_leader(void **state)
{
    restarted_follower(true);
}

static void test_restarted_follower_wakes_leader_no_cq(void **state)
{
    restarted_follower(false);
}

/* A pre-vote from node 3 (not the leader) to node 2 for the next term, with
 * an up-to-date log. */
static struct raft_msg prevote(struct net *n)
{
    struct raft_status st = status_of(n, 3);
    struct raft_msg m;
    memset(&m, 0, sizeof(m));
    m.group_id = n->group_id;
    m.type = RAFT_MSG_PREVOTE;
    m.from = 3;
    m.to = 2;
    m.term = st.term + 1;
    m.index = st.last_index;
    m.log_term = st.term;
    return m;
}

/* Steps `m` into node 2 and returns whether it granted it. */
static bool granted(struct net *n, const struct raft_msg *m)
{
    struct raft *r = n->nodes[2].r;
    assert_int_equal(raft_step(r, m), KHO_OK);
    struct raft_ready rd;
    bool yes = false;
    if (!raft_has_ready(r)) {
        return false;
    }
    assert_int_equal(raft_ready(r, &rd), KHO_OK);
    for (size_t i = 0; i < rd.n_msgs; i++) {
        yes |= rd.msgs[i].type == RAFT_MSG_PREVOTE_RESP && !rd.msgs[i].reject;
    }
    raft_advance(r);
    return yes;
}

static void quiet_refuses_prevote(bool check_quorum)
{
    struct net *n = cluster(check_quorum);
    run_until_quiet(n);
    struct raft_msg m = prevote(n);
    uint64_t stale = raft_stats(n->nodes[2].r)->dropped_stale;
    assert_false(granted(n, &m));
    assert_int_equal(raft_stats(n->nodes[2].r)->dropped_stale, stale + 1);
    assert_true(quiet(n, 2));
    assert_int_equal(status_of(n, 2).leader, 1);
    if (!check_quorum) {
        /* Once its leader is reported down, the usual rules apply: without
         * check-quorum a pre-vote for an up-to-date log is granted. */
        assert_int_equal(net_peer_down(n, 2, 1), KHO_OK);
        assert_false(quiet(n, 2));
        assert_true(granted(n, &m));
    }
    done(n);
}

static void test_quiet_follower_refuses_prevote(void **state)
{
    quiet_refuses_prevote(true);
}

static void test_quiet_follower_refuses_prevote_no_cq(void **state)
{
    quiet_refuses_prevote(false);
}

/* What does not wake a quiet group: an answer to a heartbeat sent before
 * the leader quiesced, and anything from a node outside the configuration
 * (a removed node that missed its removal campaigns forever, and the
 * leader's heartbeats would never reach it anyway). */
static void test_what_does_not_wake(void **state)
{
    struct net *n = cluster(true);
    run_until_quiet(n);
    struct raft_status st = status_of(n, 1);
    struct raft_msg m;
    memset(&m, 0, sizeof(m));
    m.group_id = n->group_id;
    m.type = RAFT_MSG_PREVOTE;
    m.from = 9;
    m.to = 1;
    m.term = st.term + 1;
    m.index = st.last_index;
    m.log_term = st.term;
    assert_int_equal(raft_step(n->nodes[1].r, &m), KHO_OK);
    m.to = 2;
    assert_int_equal(raft_step(n->nodes[2].r, &m), KHO_OK);
    memset(&m, 0, sizeof(m));
    m.group_id = n->group_id;
    m.type = RAFT_MSG_HEARTBEAT_RESP;
    m.from = 2;
    m.to = 1;
    m.term = st.term;
    m.ctx = 1; /* an early round */
    assert_int_equal(raft_step(n->nodes[1].r, &m), KHO_OK);
    assert_true(all_quiet(n));
    assert_false(raft_has_ready(n->nodes[1].r));
    assert_false(raft_has_ready(n->nodes[2].r));
    /* An answer not older than the quiesce round is news (a follower that
     * refused to go quiet answers that round): it wakes the leader. */
    m.ctx = UINT64_MAX;
    assert_int_equal(raft_step(n->nodes[1].r, &m), KHO_OK);
    assert_false(quiet(n, 1));
    done(n);
}

/* Whether a quiesce heartbeat to `to` waits in the queue. */
static bool quiesce_queued(const struct net *n, raft_id to)
{
    for (size_t i = 0; i < n->q_len; i++) {
        const struct raft_msg *m = &n->q[i].m;
        if (m->type == RAFT_MSG_HEARTBEAT && m->quiesce && m->to == to) {
            return true;
        }
    }
    return false;
}

/* raft_peer_down() for a leader that is in fact alive, reported just as
 * its quiesce heartbeat is on the way: the follower refuses to go quiet on
 * that leader's word and answers, which wakes the leader; the leader's next
 * regular heartbeat shows it alive, and the group quiesces after all. */
static void test_report_before_quiesce(void **state)
{
    struct net *n = cluster(true);
    for (uint32_t t = 0; !quiesce_queued(n, 2); t++) {
        assert_true(t < SETTLE_TICKS_MAX);
        for (raft_id id = 1; id <= 3; id++) {
            net_tick(n, id, 1);
            net_process_ready(n, id);
        }
        if (!quiesce_queued(n, 2)) {
            assert_int_equal(net_stabilize(n), KHO_OK);
        }
    }
    assert_true(quiet(n, 1));
    assert_int_equal(net_peer_down(n, 2, 1), KHO_OK);
    assert_int_equal(net_stabilize(n), KHO_OK);
    assert_false(quiet(n, 2));
    assert_false(quiet(n, 1)); /* node 2's answer woke it, and its */
    assert_false(quiet(n, 3)); /* heartbeat woke node 3 */
    assert_int_equal(raft_stats(n->nodes[1].r)->woken, 1);
    run_until_quiet(n);
    assert_int_equal(net_leader(n), 1);
    assert_int_equal(raft_stats(n->nodes[1].r)->quiesced, 2);
    /* Reports for anyone but its leader, or at a leader, change nothing. */
    assert_int_equal(net_peer_down(n, 2, 3), KHO_OK);
    assert_int_equal(net_peer_down(n, 1, 2), KHO_OK);
    assert_true(all_quiet(n));
    done(n);
}

static void lease_cb(struct raft_config *c, void *arg)
{
    (void)arg;
    c->lease_reads = true;
    c->lease_drift_ticks = 2;
}

/* With leases, a quiet leader that its host stopped ticking must not trust
 * the lease it held when it quiesced: its clock stood still while the
 * others elected a new leader and committed a write. A read it is asked
 * for later needs a quorum round, which it cannot get. */
static void test_quiet_leader_forgets_lease(void **state)
{
    struct net_opts o = opts(true, QUIESCE_TICKS);
    o.tune_cb = lease_cb;
    struct net *n = new_net(5);
    assert_int_equal(net_add_nodes(n, 3, &o, NULL), KHO_OK);
    net_run(n, 10 * ELECTION_TICKS, true); /* votes wait out the lease */
    raft_id old = net_leader(n);
    assert_int_not_equal(old, 0);
    /* Awake, it answers a read from its lease, with no round. */
    net_run(n, 2, false);
    uint64_t sent = n->msgs_sent;
    assert_int_equal(raft_read_index(n->nodes[old].r, 1), KHO_OK);
    assert_true(net_process_ready(n, old));
    assert_int_equal(n->msgs_sent, sent);
    assert_int_equal(n->nodes[old].reads_served, 1);
    run_until_quiet(n);
    net_isolate(n, old);
    for (raft_id id = 1; id <= 3; id++) {
        if (id != old) {
            assert_int_equal(net_peer_down(n, id, old), KHO_OK);
        }
    }
    raft_id l = 0;
    for (uint32_t t = 0; t < 10 * ELECTION_TICKS && (l == 0 || l == old); t++) {
        for (raft_id id = 1; id <= 3; id++) {
            if (id != old) {
                net_tick(n, id, 1);
            }
        }
        net_stabilize(n);
        l = net_leader(n);
    }
    assert_true(l != 0 && l != old);
    assert_int_equal(propose(n, l, "newer"), KHO_OK);
    assert_int_equal(net_stabilize(n), KHO_OK);
    assert_true(quiet(n, old));
    assert_int_equal(raft_read_index(n->nodes[old].r, 2), KHO_OK);
    assert_false(quiet(n, old));
    assert_int_equal(net_stabilize(n), KHO_OK);
    assert_int_equal(n->nodes[old].reads_served, 1); /* not the stale one */
    net_heal(n);
    done(n);
}

static void test_lagging_learner_prevents_quiescence(void **state)
{
    struct net_opts o = opts(true, QUIESCE_TICKS);
    o.voters[0] = 1;
    o.voters[1] = 2;
    o.voters[2] = 3;
    o.n_voters = 3;
    o.learners[0] = 4;
    o.n_learners = 1;
    struct net *n = cluster_with(4, &o);
    net_cut(n, 1, 4);
    assert_int_equal(propose(n, 1, "the learner misses this"), KHO_OK);
    assert_int_equal(net_stabilize(n), KHO_OK);
    uint64_t sent = n->msgs_sent;
    net_run(n, 20 * ELECTION_TICKS, false);
    assert_false(quiet(n, 1));
    assert_true(n->msgs_sent > sent); /* heartbeats go on */
    assert_int_equal(raft_stats(n->nodes[1].r)->quiesced, 0);
    net_heal(n);
    uint64_t last = status_of(n, 1).last_index;
    run_until_quiet(n);
    expect_converged(n, last);
    done(n);
}

static void test_zero_never_quiesces(void **state)
{
    struct net_opts o = opts(true, 0);
    struct net *n = cluster_with(3, &o);
    for (int i = 0; i < 10; i++) {
        uint64_t sent = n->msgs_sent;
        net_run(n, 10 * ELECTION_TICKS, false);
        assert_true(n->msgs_sent > sent);
        for (raft_id id = 1; id <= 3; id++) {
            assert_false(quiet(n, id));
            assert_int_equal(raft_stats(n->nodes[id].r)->quiesced, 0);
        }
    }
    done(n);
}

static void test_single_node(void **state)
{
    struct net_opts o = opts(true, QUIESCE_TICKS);
    struct net *n = cluster_with(1, &o);
    run_until_quiet(n);
    assert_int_equal(propose(n, 1, "alone"), KHO_OK);
    assert_false(quiet(n, 1));
    assert_int_equal(net_stabilize(n), KHO_OK);
    uint64_t last = status_of(n, 1).last_index;
    run_until_quiet(n);
    expect_converged(n, last);
    done(n);
}

#define T(test) cmocka_unit_test_teardown(test, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_idle_group_quiesces),
        T(test_proposal_wakes_then_quiesces_again),
        T(test_read_and_transfer_wake),
        T(test_peer_down_elects_new_leader),
        T(test_restarted_follower_wakes_leader),
        T(test_restarted_follower_wakes_leader_no_cq),
        T(test_quiet_follower_refuses_prevote),
        T(test_quiet_follower_refuses_prevote_no_cq),
        T(test_report_before_quiesce),
        T(test_what_does_not_wake),
        T(test_quiet_leader_forgets_lease),
        T(test_lagging_learner_prevents_quiescence),
        T(test_zero_never_quiesces),
        T(test_single_node),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

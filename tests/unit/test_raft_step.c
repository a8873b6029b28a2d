/*
 * test_raft_step.c - proves that bad input from peers never crashes the
 * core or corrupts its state (TESTING.md P6, "Bad inputs every public
 * surface must survive"). Each malformed or misdirected message is
 * stepped into a live 3-node cluster: raft_step() returns KHO_OK, the
 * matching raft_stats counter goes up, the node's term, commit, role and
 * log are unchanged, and the cluster still commits a proposal afterwards
 * with no safety violation. Valid but awkward messages (prevLogIndex past
 * the end or before the snapshot, commit beyond the last index) are
 * answered correctly instead: a rejection with a hint, or a commit index
 * capped at what the follower holds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness/net.h"

struct fx {
    struct net *net;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->net = net_new(11);
    assert_int_equal(net_add_nodes(f->net, 3, NULL, NULL), KHO_OK);
    assert_int_equal(net_elect(f->net, 1), KHO_OK);
    uint64_t idx, term;
    assert_int_equal(raft_propose(f->net->nodes[1].r, (const uint8_t *)"a", 1,
                                  &idx, &term),
                     KHO_OK);
    assert_int_equal(net_stabilize(f->net), KHO_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    if (f->net->violations > 0 || f->net->errors > 0) {
        fprintf(stderr, "trace:\n%s\n", f->net->out.p ? f->net->out.p : "");
    }
    net_free(f->net);
    free(f);
    return 0;
}

static struct raft *R(struct fx *f, raft_id id)
{
    return f->net->nodes[id].r;
}

static struct raft_status st_of(struct fx *f, raft_id id)
{
    struct raft_status st;
    raft_status(R(f, id), &st);
    return st;
}

/* A well-formed message from `from` to `to` at the current term. */
static struct raft_msg msg(struct fx *f, uint32_t type, raft_id from,
                           raft_id to)
{
    struct raft_msg m;
    struct raft_status st = st_of(f, to);
    memset(&m, 0, sizeof(m));
    m.group_id = f->net->group_id;
    m.type = type;
    m.from = from;
    m.to = to;
    m.term = st.term;
    m.index = st.last_index;
    m.log_term = st.term;
    m.commit = st.commit;
    return m;
}

static uint64_t drops(const struct raft_stats *s)
{
    return s->dropped_group + s->dropped_invalid + s->dropped_unknown +
           s->dropped_stale + s->dropped_overflow + s->dropped_conflict;
}

/* Steps `m` into `to` and checks it was dropped: `counter` (an offset in
 * struct raft_stats) went up by one and nothing else changed. */
static void expect_dropped(struct fx *f, const struct raft_msg *m,
                           size_t counter, const char *what)
{
    struct raft *r = R(f, m->to);
    struct raft_stats before = *raft_stats(r);
    struct raft_status st0 = st_of(f, m->to);
    assert_int_equal(raft_step(r, m), KHO_OK);
    struct raft_stats after = *raft_stats(r);
    struct raft_status st1 = st_of(f, m->to);
    uint64_t b, a;
    memcpy(&b, (const char *)&before + counter, sizeof(b));
    memcpy(&a, (const char *)&after + counter, sizeof(a));
    if (a != b + 1) {
        fail_msg("%s: counter went %llu -> %llu", what,
                 (unsigned long long)b, (unsigned long long)a);
    }
    if (drops(&after) != drops(&before) + 1) {
        fail_msg("%s: more than one drop counted", what);
    }
    if (st1.term != st0.term || st1.commit != st0.commit ||
        st1.role != st0.role || st1.last_index != st0.last_index ||
        st1.vote != st0.vote) {
        fail_msg("%s: state changed (term %llu->%llu commit %llu->%llu "
                 "last %llu->%llu role %d->%d)",
                 what, (unsigned long long)st0.term,
                 (unsigned long long)st1.term,
                 (unsigned long long)st0.commit,
                 (unsigned long long)st1.commit,
                 (unsigned long long)st0.last_index,
                 (unsigned long long)st1.last_index, st0.role, st1.role);
    }
}

#define DROPPED(f, m, field, what)                                             \
    expect_dropped((f), (m), offsetof(struct raft_stats, field), (what))

/* The cluster still commits a new proposal on every node. */
static void expect_cluster_works(struct fx *f)
{
    uint64_t idx = 0, term = 0;
    raft_id l = net_leader(f->net);
    assert_int_not_equal(l, 0);
    assert_int_equal(
        raft_propose(R(f, l), (const uint8_t *)"after", 5, &idx, &term),
        KHO_OK);
    assert_int_equal(net_stabilize(f->net), KHO_OK);
    for (raft_id id = 1; id <= 3; id++) {
        net_tick(f->net, l, f->net->nodes[l].cfg.heartbeat_ticks);
        net_stabilize(f->net);
    }
    for (raft_id id = 1; id <= 3; id++) {
        struct raft_status st = st_of(f, id);
        if (st.commit < idx) {
            fail_msg("node %llu commit %llu < %llu", (unsigned long long)id,
                     (unsigned long long)st.commit, (unsigned long long)idx);
        }
    }
    assert_int_equal(f->net->violations, 0);
    assert_int_equal(f->net->errors, 0);
}

static void test_wrong_group(void **state)
{
    struct fx *f = *state;
    struct raft_msg m = msg(f, RAFT_MSG_HEARTBEAT, 1, 2);
    m.group_id = f->net->group_id + 1;
    DROPPED(f, &m, dropped_group, "heartbeat from another group");
    m = msg(f, RAFT_MSG_VOTE, 3, 2);
    m.group_id = 0;
    m.term += 5;
    DROPPED(f, &m, dropped_group, "vote from group 0");
    expect_cluster_works(f);
}

static void test_unknown_type(void **state)
{
    struct fx *f = *state;
    static const uint32_t types[] = {0, RAFT_MSG_TYPE_MAX_ + 1, 999,
                                     UINT32_MAX};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        struct raft_msg m = msg(f, types[i], 1, 2);
        DROPPED(f, &m, dropped_invalid, "unknown message type");
    }
    /* The quiesce flag belongs to heartbeats only, and a quiesce heartbeat
     * naming a last entry of a later term than its own is corrupt. */
    static const uint32_t flagged[] = {
        RAFT_MSG_APPEND, RAFT_MSG_VOTE, RAFT_MSG_PREVOTE,
        RAFT_MSG_HEARTBEAT_RESP, RAFT_MSG_TIMEOUT_NOW};
    for (size_t i = 0; i < sizeof(flagged) / sizeof(flagged[0]); i++) {
        struct raft_msg m = msg(f, flagged[i], 1, 2);
        m.quiesce = true;
        DROPPED(f, &m, dropped_invalid, "quiesce flag on a non-heartbeat");
    }
    struct raft_msg q = msg(f, RAFT_MSG_HEARTBEAT, 1, 2);
    q.quiesce = true;
    q.log_term = q.term + 1;
    DROPPED(f, &q, dropped_invalid, "quiesce heartbeat with a future term");
    expect_cluster_works(f);
}

static void test_huge_terms(void **state)
{
    struct fx *f = *state;
    static const uint32_t types[] = {RAFT_MSG_APPEND, RAFT_MSG_VOTE,
                                     RAFT_MSG_PREVOTE, RAFT_MSG_HEARTBEAT,
                                     RAFT_MSG_APPEND_RESP};
    static const uint64_t terms[] = {UINT64_MAX, RAFT_TERM_MAX + 1};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        for (size_t k = 0; k < 2; k++) {
            raft_id to = types[i] == RAFT_MSG_APPEND_RESP ? 1 : 2;
            raft_id from = types[i] == RAFT_MSG_APPEND_RESP ? 2 : 1;
            struct raft_msg m = msg(f, types[i], from, to);
            m.term = terms[k];
            DROPPED(f, &m, dropped_invalid, "huge term");
        }
    }
    /* A huge log term in a vote request or a huge index is corrupt too. */
    struct raft_msg m = msg(f, RAFT_MSG_VOTE, 3, 2);
    m.term += 1;
    m.log_term = UINT64_MAX;
    m.index = UINT64_MAX;
    DROPPED(f, &m, dropped_invalid, "vote with index 2^64-1");
    m = msg(f, RAFT_MSG_APPEND, 1, 2);
    m.index = UINT64_MAX;
    DROPPED(f, &m, dropped_invalid, "append with prev index 2^64-1");
    m = msg(f, RAFT_MSG_APPEND, 1, 2);
    m.commit = UINT64_MAX;
    DROPPED(f, &m, dropped_invalid, "append with commit 2^64-1");
    expect_cluster_works(f);
}

static void test_prev_index_past_end(void **state)
{
    struct fx *f = *state;
    struct raft_status st0 = st_of(f, 2);
    struct raft_entry e = {.term = st0.term, .index = st0.last_index + 6};
    struct raft_msg m = msg(f, RAFT_MSG_APPEND, 1, 2);
    m.index = st0.last_index + 5;
    m.entries = &e;
    m.n_entries = 1;
    assert_int_equal(raft_step(R(f, 2), &m), KHO_OK);
    struct raft_ready rd;
    assert_true(raft_has_ready(R(f, 2)));
    assert_int_equal(raft_ready(R(f, 2), &rd), KHO_OK);
    bool rejected = false;
    for (size_t i = 0; i < rd.n_msgs; i++) {
        const struct raft_msg *o = &rd.msgs[i];
        if (o->type == RAFT_MSG_APPEND_RESP && o->to == 1) {
            assert_true(o->reject);
            assert_int_equal(o->index, m.index);
            assert_true(o->hint_index <= st0.last_index);
            rejected = true;
        }
    }
    assert_true(rejected);
    assert_int_equal(rd.n_entries, 0);
    assert_int_equal(memstore_persist(&f->net->nodes[2].store, &rd), KHO_OK);
    raft_advance(R(f, 2));
    assert_int_equal(st_of(f, 2).last_index, st0.last_index);
    expect_cluster_works(f);
}

/* Figure 2: commitIndex = min(leaderCommit, index of last new entry). */
static void test_commit_beyond_last(void **state)
{
    struct fx *f = *state;
    struct raft_status st0 = st_of(f, 2);
    struct raft_msg m = msg(f, RAFT_MSG_APPEND, 1, 2);
    m.commit = st0.last_index + 100;
    assert_int_equal(raft_step(R(f, 2), &m), KHO_OK);
    assert_true(st_of(f, 2).commit <= st0.last_index);
    m = msg(f, RAFT_MSG_HEARTBEAT, 1, 2);
    m.commit = st0.last_index + 100;
    assert_int_equal(raft_step(R(f, 2), &m), KHO_OK);
    assert_true(st_of(f, 2).commit <= st0.last_index);
    /* An append carrying one new entry: commit may not pass the last entry
     * the message proves. (The entry is the one the leader will propose
     * there next, so the logs still match.) */
    struct raft_entry e = {.term = st0.term,
                           .index = st0.last_index + 1,
                           .type = RAFT_ENTRY_NORMAL,
                           .len = 5,
                           .data = (uint8_t *)"after"};
    m = msg(f, RAFT_MSG_APPEND, 1, 2);
    m.entries = &e;
    m.n_entries = 1;
    m.commit = st0.last_index + 50;
    assert_int_equal(raft_step(R(f, 2), &m), KHO_OK);
    assert_true(st_of(f, 2).commit <= st0.last_index + 1);
    net_process_ready(f->net, 2);
    assert_int_equal(f->net->violations, 0);
    expect_cluster_works(f);
}

static void test_bad_entries(void **state)
{
    struct fx *f = *state;
    struct raft_status st = st_of(f, 2);
    struct raft_entry e[3];
    struct raft_msg m;
    memset(e, 0, sizeof(e));

    /* Non-consecutive indexes. */
    m = msg(f, RAFT_MSG_APPEND, 1, 2);
    e[0] = (struct raft_entry){.term = st.term, .index = st.last_index + 1};
    e[1] = (struct raft_entry){.term = st.term, .index = st.last_index + 3};
    m.entries = e;
    m.n_entries = 2;
    DROPPED(f, &m, dropped_invalid, "non-consecutive indexes");

    /* First entry not right after prev. */
    e[0].index = st.last_index + 2;
    m.n_entries = 1;
    DROPPED(f, &m, dropped_invalid, "entry not after prev");

    /* A term above the message's term. */
    e[0] = (struct raft_entry){.term = st.term + 1, .index = st.last_index + 1};
    DROPPED(f, &m, dropped_invalid, "entry term above message term");

    /* Terms going down inside one message. */
    e[0] = (struct raft_entry){.term = st.term, .index = st.last_index + 1};
    e[1] = (struct raft_entry){.term = st.term - 1,
                               .index = st.last_index + 2};
    m.n_entries = 2;
    DROPPED(f, &m, dropped_invalid, "decreasing entry terms");

    /* An entry term below prev's term. */
    m = msg(f, RAFT_MSG_APPEND, 1, 2);
    e[0] = (struct raft_entry){.term = st.term - 1, .index = st.last_index + 1};
    m.entries = e;
    m.n_entries = 1;
    DROPPED(f, &m, dropped_invalid, "entry term below prev term");

    /* An unknown entry type. */
    e[0] = (struct raft_entry){.term = st.term, .index = st.last_index + 1,
                               .type = 77};
    DROPPED(f, &m, dropped_invalid, "unknown entry type");

    /* A payload length with no data. */
    e[0] = (struct raft_entry){.term = st.term, .index = st.last_index + 1,
                               .len = 10, .data = NULL};
    DROPPED(f, &m, dropped_invalid, "length without data");

    /* A conf entry that does not decode. */
    uint8_t junk[5] = {1, 2, 3, 4, 5};
    e[0] = (struct raft_entry){.term = st.term, .index = st.last_index + 1,
                               .type = RAFT_ENTRY_CONF, .len = 5,
                               .data = junk};
    DROPPED(f, &m, dropped_invalid, "corrupt conf entry");

    /* More entries than any message may carry. */
    uint32_t n = RAFT_MSG_ENTRIES_MAX + 1;
    struct raft_entry *many = calloc(n, sizeof(*many));
    for (uint32_t i = 0; i < n; i++) {
        many[i].term = st.term;
        many[i].index = st.last_index + 1 + i;
    }
    m = msg(f, RAFT_MSG_APPEND, 1, 2);
    m.entries = many;
    m.n_entries = n;
    DROPPED(f, &m, dropped_invalid, "too many entries");
    /* A count with no array. */
    m.entries = NULL;
    m.n_entries = 3;
    DROPPED(f, &m, dropped_invalid, "entries count without entries");
    free(many);
    expect_cluster_works(f);
}

static void test_unknown_and_self_senders(void **state)
{
    struct fx *f = *state;
    /* (Vote responses from unknown ids go to a candidate: see
     * test_votes_from_non_voters.) */
    static const uint32_t resp[] = {RAFT_MSG_APPEND_RESP,
                                    RAFT_MSG_HEARTBEAT_RESP};
    for (size_t i = 0; i < sizeof(resp) / sizeof(resp[0]); i++) {
        struct raft_msg m = msg(f, resp[i], 9, 1);
        DROPPED(f, &m, dropped_unknown, "response from an unknown id");
        m = msg(f, resp[i], 1, 1);
        DROPPED(f, &m, dropped_unknown, "response from self");
    }
    /* A leader's message from self would be a loop. */
    struct raft_msg m = msg(f, RAFT_MSG_APPEND, 2, 2);
    struct raft_stats before = *raft_stats(R(f, 2));
    assert_int_equal(raft_step(R(f, 2), &m), KHO_OK);
    assert_int_equal(drops(raft_stats(R(f, 2))), drops(&before) + 1);
    /* Id 0 is "none" and never a sender. */
    m = msg(f, RAFT_MSG_HEARTBEAT, 0, 2);
    before = *raft_stats(R(f, 2));
    assert_int_equal(raft_step(R(f, 2), &m), KHO_OK);
    assert_int_equal(drops(raft_stats(R(f, 2))), drops(&before) + 1);
    expect_cluster_works(f);
}

static void test_bad_snapshots(void **state)
{
    struct fx *f = *state;
    struct raft_status st = st_of(f, 2);
    uint8_t payload[16] = {0};
    struct raft_msg m = msg(f, RAFT_MSG_SNAPSHOT, 1, 2);
    m.snapshot.data = payload;
    m.snapshot.len = sizeof(payload);
    m.snapshot.meta.conf.n = 3;
    for (uint32_t i = 0; i < 3; i++) {
        m.snapshot.meta.conf.members[i].id = i + 1;
        m.snapshot.meta.conf.members[i].role = RAFT_VOTER;
    }
    m.snapshot.meta.index = 0;
    m.snapshot.meta.term = 0;
    DROPPED(f, &m, dropped_invalid, "snapshot with index 0");

    m.snapshot.meta.index = st.last_index + 10;
    m.snapshot.meta.term = st.term;
    m.snapshot.meta.conf.members[2].id = 2;
    DROPPED(f, &m, dropped_invalid, "snapshot conf with duplicate ids");

    m.snapshot.meta.conf.members[2].id = 3;
    m.snapshot.meta.conf.members[2].role = 9;
    DROPPED(f, &m, dropped_invalid, "snapshot conf with a bad role");

    m.snapshot.meta.conf.members[2].role = RAFT_VOTER;
    m.snapshot.meta.conf.members[1].id = 0;
    DROPPED(f, &m, dropped_invalid, "snapshot conf with id 0");

    m.snapshot.meta.conf.members[1].id = 2;
    m.snapshot.meta.conf.n = RAFT_MEMBERS_MAX + 1;
    DROPPED(f, &m, dropped_invalid, "snapshot conf too large");

    m.snapshot.meta.conf.n = 0;
    DROPPED(f, &m, dropped_invalid, "snapshot with an empty conf");

    m.snapshot.meta.conf.n = 3;
    m.snapshot.meta.term = st.term + 1;
    DROPPED(f, &m, dropped_invalid, "snapshot term above message term");

    m.snapshot.meta.term = st.term;
    m.snapshot.meta.index = UINT64_MAX;
    DROPPED(f, &m, dropped_invalid, "snapshot index 2^64-1");

    m.snapshot.meta.index = st.last_index + 10;
    m.snapshot.data = NULL;
    DROPPED(f, &m, dropped_invalid, "snapshot length without data");
    expect_cluster_works(f);
}

/* A learner's vote must never count: with voters {1,2,3} and learner 4,
 * node 1's own vote plus the learner's would be "two" but is one voter.
 * Votes from unknown ids and from self are dropped and counted too. */
static void test_votes_from_non_voters(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    *state = f;
    struct net *n = f->net = net_new(5);
    struct net_opts o = {.voters = {1, 2, 3}, .n_voters = 3,
                         .learners = {4}, .n_learners = 1};
    assert_int_equal(net_add_nodes(n, 4, &o, NULL), KHO_OK);
    assert_int_equal(net_campaign(n, 1), KHO_OK);
    struct raft_status st;
    raft_status(n->nodes[1].r, &st);
    assert_int_equal(st.role, RAFT_CANDIDATE);
    struct raft_msg m;
    memset(&m, 0, sizeof(m));
    m.group_id = n->group_id;
    m.type = RAFT_MSG_VOTE_RESP;
    m.from = 4;
    m.to = 1;
    m.term = st.term;
    const struct raft_stats *s = raft_stats(n->nodes[1].r);
    static const raft_id senders[] = {9, 1, 0};
    for (size_t i = 0; i < 3; i++) {
        uint64_t u0 = s->dropped_unknown;
        m.from = senders[i];
        assert_int_equal(raft_step(n->nodes[1].r, &m), KHO_OK);
        assert_int_equal(s->dropped_unknown, u0 + 1);
    }
    m.from = 4;
    uint64_t d0 = drops(s);
    assert_int_equal(raft_step(n->nodes[1].r, &m), KHO_OK);
    raft_status(n->nodes[1].r, &st);
    assert_int_equal(st.role, RAFT_CANDIDATE);
    if (drops(s) != d0 + 1) {
        fail_msg("a learner's granted vote was ignored but not counted as "
                 "dropped (raft_stats unchanged)");
    }
    /* And a learner never campaigns. */
    net_tick(n, 4, 100);
    raft_status(n->nodes[4].r, &st);
    assert_int_equal(st.role, RAFT_FOLLOWER);
    assert_int_equal(raft_stats(n->nodes[4].r)->elections, 0);
    assert_int_equal(n->violations, 0);
}

/* prevLogIndex before the follower's snapshot: answered, not a crash. */
static void test_prev_before_snapshot(void **state)
{
    struct fx *f = *state;
    uint64_t idx, term;
    for (int i = 0; i < 5; i++) {
        raft_propose(R(f, 1), (const uint8_t *)"x", 1, &idx, &term);
    }
    assert_int_equal(net_stabilize(f->net), KHO_OK);
    net_tick(f->net, 1, 1);
    assert_int_equal(net_stabilize(f->net), KHO_OK);
    struct raft_status st = st_of(f, 2);
    assert_int_equal(net_compact(f->net, 2, st.applied), KHO_OK);
    struct raft_msg m = msg(f, RAFT_MSG_APPEND, 1, 2);
    m.index = 1;
    m.log_term = 1;
    m.commit = 1;
    assert_int_equal(raft_step(R(f, 2), &m), KHO_OK);
    net_process_ready(f->net, 2);
    assert_int_equal(st_of(f, 2).last_index, st.last_index);
    assert_int_equal(f->net->violations, 0);
    expect_cluster_works(f);
}

/* Stale messages from an old term are dropped as stale, and do not
 * move a node back. */
static void test_stale_term(void **state)
{
    struct fx *f = *state;
    net_campaign(f->net, 2);
    net_stabilize(f->net);
    raft_id l = net_leader(f->net);
    raft_id fol = l == 1 ? 3 : 1;
    struct raft_msg m = msg(f, RAFT_MSG_VOTE_RESP, fol, l);
    m.term -= 1;
    DROPPED(f, &m, dropped_stale, "vote response of an old term");
    expect_cluster_works(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_wrong_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_type, setup, teardown),
        cmocka_unit_test_setup_teardown(test_huge_terms, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prev_index_past_end, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_commit_beyond_last, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_entries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_and_self_senders, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_snapshots, setup, teardown),
        cmocka_unit_test_teardown(test_votes_from_non_voters, teardown),
        cmocka_unit_test_setup_teardown(test_prev_before_snapshot, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stale_term, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_http.c - proves the pieces of khod's HTTP endpoints that need no
 * network (server/http/ready.c, buf.c; server/common/metrics.c):
 *
 *   - /ready's verdict: ready only when every group has a leader, has
 *     applied to within HTTP_READY_APPLY_LAG_MAX of its commit and, where
 *     this node leads, hears from a quorum of voters (learners do not
 *     count); each failing group gets a line naming it and why, at most
 *     HTTP_READY_LINES_MAX lines and then a count; no groups is not ready;
 *   - answer buffers never pass their limit: a write that does not fit is
 *     refused whole with KHO_ETOOLARGE and later writes are ignored; label
 *     values escape backslash, quote and newline as Prometheus wants;
 *   - latency histograms put each observation in the first bucket whose
 *     bound holds it (bounds inclusive), read back cumulatively with the
 *     +Inf bucket equal to the count; request counters keep op and outcome
 *     apart and send out-of-range values to op 0 and the "other" outcome.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "client/kho_err.h"
#include "server/common/metrics.h"
#include "server/http/internal.h"

/* A group of 3 voters on node 1, led by `leader`, all caught up. */
static struct node_group_status group(uint64_t gid, const char *reg,
                                      uint64_t leader)
{
    struct node_group_status g = {
        .group_id = gid,
        .role = leader == 1 ? RAFT_LEADER : RAFT_FOLLOWER,
        .term = 4,
        .leader = leader,
        .commit = 1000,
        .applied = 1000,
        .last_index = 1000,
        .n_replicas = 3,
    };
    snprintf(g.registry, sizeof(g.registry), "%s", reg);
    for (uint32_t k = 0; k < 3; k++) {
        g.replicas[k] = (struct node_replica_status){
            .id = k + 1, .voter = true, .active = true, .match = 1000};
    }
    return g;
}

static bool verdict(const struct node_group_status *st, size_t n,
                    struct hbuf *b)
{
    hbuf_free(b);
    hbuf_init(b, HTTP_METRICS_BYTES_MAX);
    bool ok = http_ready_check(st, n, 1, b);
    assert_int_equal(b->err, KHO_OK);
    return ok;
}

static void test_ready_healthy_groups(void **state)
{
    (void)state;
    struct node_group_status st[2] = {group(0, "(meta)", 1),
                                      group(3, "citizens", 2)};
    struct hbuf b;
    hbuf_init(&b, HTTP_METRICS_BYTES_MAX);
    assert_true(verdict(st, 2, &b));
    assert_int_equal(b.len, 0);
    /* Applied exactly at the limit still counts as caught up. */
    st[1].applied = st[1].commit - HTTP_READY_APPLY_LAG_MAX;
    assert_true(verdict(st, 2, &b));
    hbuf_free(&b);
}

static void test_ready_failing_groups(void **state)
{
    (void)state;
    struct hbuf b;
    hbuf_init(&b, HTTP_METRICS_BYTES_MAX);
    assert_false(verdict(NULL, 0, &b));
    assert_non_null(strstr(b.p, "no raft groups"));

    struct node_group_status st[2] = {group(0, "(meta)", 0),
                                      group(3, "citizens", 2)};
    st[0].role = RAFT_PRECANDIDATE;
    assert_false(verdict(st, 2, &b));
    assert_non_null(strstr(b.p, "group 0 ((meta)): no leader known "
                                "(pre-candidate, term 4)"));
    assert_null(strstr(b.p, "citizens"));

    st[0] = group(0, "(meta)", 2);
    st[1].applied = st[1].commit - HTTP_READY_APPLY_LAG_MAX - 1;
    assert_false(verdict(st, 2, &b));
    assert_non_null(strstr(b.p, "group 3 (citizens): applied 899 is 101 "
                                "entries behind commit 1000"));
    assert_null(strstr(b.p, "(meta)"));
    hbuf_free(&b);
}

static void test_ready_leader_needs_quorum(void **state)
{
    (void)state;
    struct hbuf b;
    hbuf_init(&b, HTTP_METRICS_BYTES_MAX);
    struct node_group_status g = group(0, "(meta)", 1);
    g.replicas[1].active = false;
    assert_true(verdict(&g, 1, &b)); /* 2 of 3 */
    g.replicas[2].active = false;
    assert_false(verdict(&g, 1, &b));
    assert_non_null(strstr(b.p, "1 of 3 voters"));
    /* An active learner is no voter. */
    g.replicas[3] =
        (struct node_replica_status){.id = 4, .voter = false, .active = true};
    g.n_replicas = 4;
    assert_false(verdict(&g, 1, &b));
    /* A follower's view of activity is not its business. */
    g = group(0, "(meta)", 2);
    g.replicas[1].active = g.replicas[2].active = false;
    assert_true(verdict(&g, 1, &b));
    hbuf_free(&b);
}

static void test_ready_lines_bounded(void **state)
{
    (void)state;
    enum { N = HTTP_READY_LINES_MAX + 5 };
    static struct node_group_status st[N];
    for (size_t i = 0; i < N; i++) {
        st[i] = group(i, "r", 0);
    }
    struct hbuf b;
    hbuf_init(&b, HTTP_METRICS_BYTES_MAX);
    assert_false(verdict(st, N, &b));
    size_t lines = 0;
    for (size_t i = 0; i < b.len; i++) {
        lines += b.p[i] == '\n';
    }
    assert_int_equal(lines, HTTP_READY_LINES_MAX + 1);
    assert_non_null(strstr(b.p, "... and 5 more groups\n"));
    hbuf_free(&b);
}

static void test_hbuf_limit(void **state)
{
    (void)state;
    struct hbuf b;
    hbuf_init(&b, 16);
    hbuf_printf(&b, "%s", "0123456789");
    assert_int_equal(b.err, KHO_OK);
    hbuf_printf(&b, "%s", "abcdef"); /* 16 bytes and a NUL: too many */
    assert_int_equal(b.err, KHO_ETOOLARGE);
    assert_int_equal(b.len, 10);
    assert_string_equal(b.p, "0123456789");
    hbuf_printf(&b, "x");
    assert_int_equal(b.len, 10);
    hbuf_free(&b);

    /* Growth past the first allocation keeps every byte. */
    hbuf_init(&b, HTTP_METRICS_BYTES_MAX);
    for (int i = 0; i < 10000; i++) {
        hbuf_printf(&b, "%04d\n", i % 10000);
    }
    assert_int_equal(b.err, KHO_OK);
    assert_int_equal(b.len, 50000);
    assert_memory_equal(b.p + 5 * 9999, "9999\n", 5);
    hbuf_free(&b);
}

static void test_hbuf_label_escapes(void **state)
{
    (void)state;
    struct hbuf b;
    hbuf_init(&b, 256);
    hbuf_label(&b, "a\\b\"c\nd");
    assert_int_equal(b.err, KHO_OK);
    assert_string_equal(b.p, "a\\\\b\\\"c\\nd");
    hbuf_free(&b);
}

static void test_histogram_buckets(void **state)
{
    (void)state;
    static struct metrics_hist h; /* zeroed */
    metrics_hist_observe(&h, 0);
    metrics_hist_observe(&h, metrics_latency_bounds_us[0]);
    metrics_hist_observe(&h, metrics_latency_bounds_us[0] + 1);
    metrics_hist_observe(&h, UINT32_MAX);
    struct metrics_hist_snap s;
    metrics_hist_read(&h, &s);
    assert_int_equal(s.count, 4);
    assert_int_equal(s.buckets[0], 2);
    assert_int_equal(s.buckets[1], 3);
    assert_int_equal(s.buckets[METRICS_LATENCY_BUCKETS - 1], 3);
    assert_int_equal(s.buckets[METRICS_LATENCY_BUCKETS], 4);
    assert_int_equal(s.sum_us, 2 * metrics_latency_bounds_us[0] + 1 +
                                   (uint64_t)UINT32_MAX);
    for (uint32_t i = 1; i < METRICS_LATENCY_BUCKETS; i++) {
        assert_true(metrics_latency_bounds_us[i] >
                    metrics_latency_bounds_us[i - 1]);
    }
}

static void test_request_counters(void **state)
{
    (void)state;
    metrics_request(1, KHO_OK, 10);
    metrics_request(1, KHO_OK, 20);
    metrics_request(1, KHO_ENOTFOUND, 30);
    metrics_request(METRICS_OPS_MAX + 7, 999, 40);
    metrics_request(2, -1, 50);
    assert_int_equal(metrics_requests(1, KHO_OK), 2);
    assert_int_equal(metrics_requests(1, KHO_ENOTFOUND), 1);
    assert_int_equal(metrics_requests(0, METRICS_ERR_OTHER), 1);
    assert_int_equal(metrics_requests(2, METRICS_ERR_OTHER), 1);
    assert_true(metrics_op_seen(1));
    assert_false(metrics_op_seen(3));
    assert_string_equal(metrics_err_name(KHO_ENOTFOUND), "KHO_ENOTFOUND");
    assert_string_equal(metrics_err_name(METRICS_ERR_OTHER), "other");
    struct metrics_hist_snap s;
    metrics_request_latency(1, &s);
    assert_int_equal(s.count, 3);
    assert_int_equal(s.sum_us, 60);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ready_healthy_groups),
        cmocka_unit_test(test_ready_failing_groups),
        cmocka_unit_test(test_ready_leader_needs_quorum),
        cmocka_unit_test(test_ready_lines_bounded),
        cmocka_unit_test(test_hbuf_limit),
        cmocka_unit_test(test_hbuf_label_escapes),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_request_counters),
    };
    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}

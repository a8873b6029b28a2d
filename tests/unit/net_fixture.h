/*
 * net_fixture.h - the one-cluster-per-test fixture shared by the unit tests
 * that drive tests/harness/net: the net of the running test is kept here so
 * teardown frees it even when an assertion fails half-way. Include it
 * after <cmocka.h> and <stdio.h>.
 */
#ifndef KHO_TEST_NET_FIXTURE_H
#define KHO_TEST_NET_FIXTURE_H

#include "../harness/net.h"

static struct net *g_net;

static inline struct net *new_net(uint64_t seed)
{
    g_net = net_new(seed);
    return g_net;
}

static inline int teardown(void **state)
{
    (void)state;
    net_free(g_net);
    g_net = NULL;
    return 0;
}

/* Ends a test: no safety violation and no error in the run (the trace is
 * printed otherwise), then frees the net. */
static inline void done(struct net *n)
{
    if (n->violations > 0 || n->errors > 0) {
        fprintf(stderr, "trace:\n%s\n", n->out.p ? n->out.p : "");
    }
    assert_int_equal(n->violations, 0);
    assert_int_equal(n->errors, 0);
    net_free(n);
    g_net = NULL;
}

static inline struct raft_status status_of(struct net *n, raft_id id)
{
    struct raft_status st;
    raft_status(n->nodes[id].r, &st);
    return st;
}

#endif

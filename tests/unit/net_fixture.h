/*
 * net_fixture.h - the one-cluster-per-test fixture shared by the unit tests
 * that drive tests/harness/net: the net of the running test is kept here so
 * teardown frees it even when an assertion fails half-way.
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

static inline struct raft_status status_of(struct net *n, raft_id id)
{
    struct raft_status st;
    raft_status(n->nodes[id].r, &st);
    return st;
}

#endif

/*
 * shard.c - sharded registries as operators and clients see them:
 *
 *   OP_SHARD_MAP    a registry's shards, their replicas and the leaders this
 *                   node knows (any node answers from its registry table: a
 *                   client's map is a routing hint, never a correctness
 *                   matter, since every node routes by key itself);
 *   OP_SHARD_MOVE   one replica of one shard to another node;
 *   OP_REBALANCE    placement's plan (server/node/placement.c): replicas
 *                   off removed nodes, then even counts per node.
 *
 * Moves are one meta-group transaction writing every changed registry
 * record under a compare on its mod revision (server/node/plan.h); the
 * shards' leaders then reconcile (learner, catch up, voter, remove the old
 * replica), one change at a time.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../node/meta.h"
#include "../node/plan.h"
#include "internal.h"

size_t api_members(struct api *a, uint64_t *out, size_t cap)
{
    struct node_peer *nodes = calloc(NODE_NODES_MAX, sizeof(*nodes));
    size_t n = 0, k = 0;
    if (nodes != NULL &&
        node_load_nodes(a->node, nodes, NODE_NODES_MAX, &n) == KHO_OK) {
        for (size_t i = 0; i < n && k < cap; i++) {
            if (nodes[i].state == META_NODE_MEMBER) {
                out[k++] = nodes[i].id;
            }
        }
    }
    free(nodes);
    if (k == 0) {
        /* Before the meta group recorded any node: the start-up list. */
        struct raft_conf c;
        node_member_conf(a->node, &c);
        for (uint32_t i = 0; i < c.n && k < cap; i++) {
            out[k++] = c.members[i].id;
        }
    }
    return k;
}

struct plan *api_plan_load(struct worker *w, struct node_registry *regs,
                           size_t *n_regs)
{
    struct api *a = w->api;
    int rc = node_load_registries(a->node, regs, NODE_SHARD_ENTRIES_MAX,
                                  n_regs);
    if (rc != KHO_OK) {
        api_reply_err(w, rc, store_errmsg(a->st), 0);
        return NULL;
    }
    struct plan *p = NULL;
    rc = plan_create(regs, *n_regs, &p);
    if (rc != KHO_OK) {
        api_reply_err(w, rc, "the registry table is inconsistent", 0);
        return NULL;
    }
    return p;
}

uint64_t api_member_named(struct api *a, const uint64_t *ids, size_t n,
                          const char *name)
{
    struct node_peer p;
    for (size_t i = 0; i < n; i++) {
        if (node_peer_info(a->node, ids[i], &p) == KHO_OK &&
            strcmp(p.name, name) == 0) {
            return ids[i];
        }
    }
    return 0;
}

static bool is_shard_op(const Kho__Api__Request *q)
{
    return q->op == KHO__API__OP__OP_SHARD_MAP ||
           q->op == KHO__API__OP__OP_SHARD_MOVE ||
           q->op == KHO__API__OP__OP_REBALANCE;
}

/* --- The map --------------------------------------------------------------- */

struct map_buf {
    struct node_registry regs[KHO_SHARDS_MAX];
    Kho__Api__ShardInfo si[KHO_SHARDS_MAX];
    Kho__Api__ShardInfo *sp[KHO_SHARDS_MAX];
    char urls[KHO_SHARDS_MAX][NODE_URL_BYTES];
    struct node_group_status st[NODE_GROUPS_MAX];
    struct node_peer peers[NODE_NODES_MAX];
    Kho__Api__NodeInfo ni[NODE_NODES_MAX];
    Kho__Api__NodeInfo *np[NODE_NODES_MAX];
    char home[NODE_NAME_BYTES];
};

static void add_node(struct api *a, struct map_buf *b, Kho__Api__ShardMap *m,
                     uint64_t id)
{
    for (size_t i = 0; i < m->n_nodes; i++) {
        if (b->ni[i].id == id) {
            return;
        }
    }
    size_t k = m->n_nodes;
    if (k >= NODE_NODES_MAX || node_peer_info(a->node, id, &b->peers[k]) !=
                                   KHO_OK) {
        return;
    }
    kho__api__node_info__init(&b->ni[k]);
    b->ni[k].id = id;
    b->ni[k].name = b->peers[k].name;
    b->ni[k].client_url = b->peers[k].client_url;
    b->ni[k].peer_url = b->peers[k].peer_url;
    b->ni[k].state =
        b->peers[k].state == META_NODE_REMOVED ? "removed" : "member";
    b->np[k] = &b->ni[k];
    m->n_nodes++;
}

static void serve_map(struct worker *w)
{
    struct api *a = w->api;
    const Kho__Api__Request *q = w->rq;
    struct map_buf *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        api_reply_err(w, KHO_ENOMEM, NULL, 0);
        return;
    }
    w->op_state = b;
    if (node_registry(a->node, q->registry, &b->regs[0]) != KHO_OK) {
        uint64_t meta = node_leader_of(a->node, NODE_META_GROUP);
        if (meta != 0 && meta != node_id(a->node)) {
            api_reply_errf(w, KHO_ENOTLEADER, meta,
                           "registry '%s' is unknown here; the meta leader "
                           "knows every registry",
                           q->registry);
        } else {
            api_reply_errf(w, KHO_ENOTFOUND, 0, "unknown registry '%s'",
                           q->registry);
        }
        return;
    }
    uint32_t n = b->regs[0].n_shards;
    for (uint32_t s = 1; s < n; s++) {
        if (node_shard(a->node, q->registry, s, &b->regs[s]) != KHO_OK) {
            api_reply_err(w, KHO_EUNAVAILABLE,
                          "the registry table changed meanwhile; retry", 0);
            return;
        }
    }
    size_t n_st = node_status(a->node, b->st, NODE_GROUPS_MAX);
    Kho__Api__ShardMap m = KHO__API__SHARD_MAP__INIT;
    m.registry = q->registry;
    m.shards = n;
    m.replicas = b->regs[0].want;
    m.revision = b->regs[0].mod_rev;
    struct node_peer hp;
    if (b->regs[0].home != 0 &&
        node_peer_info(a->node, b->regs[0].home, &hp) == KHO_OK) {
        snprintf(b->home, sizeof(b->home), "%s", hp.name);
    }
    m.home = b->home;
    m.nodes = b->np;
    for (uint32_t s = 0; s < n; s++) {
        const struct node_registry *r = &b->regs[s];
        Kho__Api__ShardInfo *si = &b->si[s];
        kho__api__shard_info__init(si);
        si->shard = s;
        si->group_id = r->group_id;
        si->n_replicas = r->n_replicas;
        si->replicas = (uint64_t *)r->replicas;
        si->leader_url = b->urls[s];
        for (size_t i = 0; i < n_st; i++) {
            if (b->st[i].group_id == r->group_id) {
                si->leader = b->st[i].leader;
                si->term = b->st[i].term;
                si->commit = b->st[i].commit;
                si->applied = b->st[i].applied;
            }
        }
        if (si->leader != 0) {
            api_client_url(a, si->leader, b->urls[s], sizeof(b->urls[s]));
            add_node(a, b, &m, si->leader);
        }
        for (uint32_t k = 0; k < r->n_replicas; k++) {
            add_node(a, b, &m, r->replicas[k]);
        }
        b->sp[s] = si;
    }
    m.n_shard_list = n;
    m.shard_list = b->sp;
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    rs.shard_map = &m;
    rs.shards = n;
    api_reply(w, &rs);
}

/* --- Moves ------------------------------------------------------------------ */

/* Everything a move or rebalance needs until its answer. */
struct move_op {
    struct node_registry regs[NODE_SHARD_ENTRIES_MAX];
    uint64_t members[NODE_NODES_MAX];
    struct place_node place[NODE_NODES_MAX];
    struct store_compare cmps[STORE_TXN_OPS_MAX];
    struct store_op ops[STORE_TXN_OPS_MAX];
    struct meta_move moves[PLAN_MOVES_MAX];
    char names[PLAN_MOVES_MAX][NODE_REGISTRY_BYTES];
    size_t n_moves;
    /* The answer. */
    Kho__Api__ShardMove sm[PLAN_MOVES_MAX];
    Kho__Api__ShardMove *smp[PLAN_MOVES_MAX];
    struct node_peer from[PLAN_MOVES_MAX], to[PLAN_MOVES_MAX];
};

static void reply_moves(struct worker *w, struct move_op *x, uint64_t rev)
{
    struct api *a = w->api;
    for (size_t i = 0; i < x->n_moves; i++) {
        const struct meta_move *mv = &x->moves[i];
        Kho__Api__ShardMove *sm = &x->sm[i];
        kho__api__shard_move__init(sm);
        sm->registry = x->names[i];
        sm->shard = mv->shard;
        sm->from = mv->from;
        sm->to = mv->to;
        sm->from_name = "";
        sm->to_name = "";
        if (node_peer_info(a->node, mv->from, &x->from[i]) == KHO_OK) {
            sm->from_name = x->from[i].name;
        }
        if (node_peer_info(a->node, mv->to, &x->to[i]) == KHO_OK) {
            sm->to_name = x->to[i].name;
        }
        x->smp[i] = sm;
    }
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    rs.n_moves = x->n_moves;
    rs.moves = x->smp;
    rs.revision = rev;
    api_reply(w, &rs);
}

/* Plans a move or a rebalance into x and proposes it (or answers a dry
 * run). Replies on every path but a proposal's. */
static void plan_and_propose(struct worker *w, struct move_op *x)
{
    struct api *a = w->api;
    const Kho__Api__Request *q = w->rq;
    size_t n_regs = 0;
    size_t n_members = api_members(a, x->members, NODE_NODES_MAX);
    struct plan *p = api_plan_load(w, x->regs, &n_regs);
    if (p == NULL) {
        return;
    }
    int rc;
    if (q->op == KHO__API__OP__OP_SHARD_MOVE) {
        uint64_t from = api_member_named(a, x->members, n_members,
                                         q->node_name);
        uint64_t to = api_member_named(a, x->members, n_members,
                                       q->target_name);
        char why[256];
        if (from == 0 || to == 0) {
            api_reply_errf(w, KHO_ENOTFOUND, 0, "no member named '%s'",
                           from == 0 ? q->node_name : q->target_name);
            plan_free(p);
            return;
        }
        if (q->shard == 0) {
            api_reply_err(w, KHO_EINVAL, "which shard? (1-based on the wire)",
                          0);
            plan_free(p);
            return;
        }
        rc = plan_move(p, q->registry, q->shard - 1, from, to, why,
                       sizeof(why));
        if (rc != KHO_OK) {
            api_reply_err(w, rc, why, 0);
            plan_free(p);
            return;
        }
    } else {
        plan_nodes(p, x->members, n_members, x->place);
        plan_rebalance(p, x->place, n_members);
    }
    const struct meta_move *mv = plan_moves(p, &x->n_moves);
    memcpy(x->moves, mv, x->n_moves * sizeof(*mv));
    for (size_t i = 0; i < x->n_moves; i++) {
        snprintf(x->names[i], sizeof(x->names[i]), "%s",
                 plan_reg_name(p, mv[i].reg));
    }
    size_t k = 0;
    rc = plan_ops(p, x->cmps, x->ops, STORE_TXN_OPS_MAX, &k);
    if (rc != KHO_OK || q->dry_run || k == 0) {
        if (rc != KHO_OK) {
            api_reply_err(w, rc, "the plan cannot be written", 0);
        } else {
            reply_moves(w, x, 0);
        }
        plan_free(p);
        return;
    }
    for (size_t i = 0; i < x->n_moves; i++) {
        LOGI("%s: shard %u of registry %s moves from node %llu to node %llu",
             q->op == KHO__API__OP__OP_SHARD_MOVE ? "shard move" : "rebalance",
             x->moves[i].shard, x->names[i],
             (unsigned long long)x->moves[i].from,
             (unsigned long long)x->moves[i].to);
    }
    api_propose_txn(w, NODE_META_GROUP, 0, x->cmps, k, x->ops, k);
    plan_free(p); /* the proposal is encoded */
}

bool api_shard_serve(struct worker *w)
{
    const Kho__Api__Request *q = w->rq;
    if (!is_shard_op(q)) {
        return false;
    }
    if (q->op == KHO__API__OP__OP_SHARD_MAP) {
        serve_map(w);
        return true;
    }
    struct move_op *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        api_reply_err(w, KHO_ENOMEM, NULL, 0);
        return true;
    }
    w->op_state = x;
    plan_and_propose(w, x);
    return true;
}

bool api_shard_answered(struct worker *w)
{
    const Kho__Api__Request *q = w->rq;
    if (!is_shard_op(q) || q->op == KHO__API__OP__OP_SHARD_MAP) {
        return false;
    }
    const struct node_req *r = &w->req;
    if (r->err != KHO_OK) {
        api_reply_err(w, r->err, NULL, r->leader);
    } else if (r->res.result == KHO_ECONFLICT) {
        api_reply_err(w, KHO_ECONFLICT,
                      "the cluster map changed meanwhile; retry", 0);
    } else if (r->res.result != KHO_OK) {
        api_reply_err(w, r->res.result, NULL, 0);
    } else {
        reply_moves(w, w->op_state, r->res.revision);
    }
    return true;
}

/*
 * member.c - membership and leadership (see internal.h).
 *
 * Adding and removing nodes are writes to the meta group (its leader
 * answers; other nodes redirect there), so they are linearizable, applied
 * once, and checked against concurrent changes by compares on the records
 * they read:
 *   member add     a node record (state member) with an id above every id
 *                  ever recorded; the meta leader then adds the node to the
 *                  meta group as a learner, and promotes it once caught up;
 *   member remove  the node's record turns removed, and every registry that
 *                  lives on it gets another replica (the member with the
 *                  fewest) in its place; each group's leader then adds the
 *                  new replica, promotes it, and removes the old one;
 *   member list    the node records;
 *   leader transfer  asks a group's leader to hand over, or a node to hand
 *                  over every group it leads (--drain).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "../node/meta.h"
#include "../node/plan.h"
#include "internal.h"

/* Registries one member remove may move in one transaction (one op each,
 * plus the node record). */

static bool is_member_op(const Kho__Api__Request *q)
{
    return q->op == KHO__API__OP__OP_MEMBER_ADD ||
           q->op == KHO__API__OP__OP_MEMBER_REMOVE ||
           q->op == KHO__API__OP__OP_MEMBER_LIST ||
           q->op == KHO__API__OP__OP_LEADER_TRANSFER;
}

/* The meta group's node records; replies and returns NULL on failure. */
static struct node_peer *load_nodes(struct worker *w, size_t *n)
{
    struct node_peer *nodes = calloc(NODE_NODES_MAX, sizeof(*nodes));
    int rc = nodes != NULL ? node_load_nodes(w->api->node, nodes,
                                             NODE_NODES_MAX, n)
                           : KHO_ENOMEM;
    if (rc != KHO_OK) {
        api_reply_err(w, rc, rc == KHO_ENOMEM ? NULL : store_errmsg(w->api->st),
                      0);
        free(nodes);
        return NULL;
    }
    return nodes;
}

static const struct node_peer *find_member(const struct node_peer *nodes,
                                           size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++) {
        if (nodes[i].state == META_NODE_MEMBER &&
            strcmp(nodes[i].name, name) == 0) {
            return &nodes[i];
        }
    }
    return NULL;
}

static void reply_member(struct worker *w, const struct node_peer *p,
                         uint64_t revision)
{
    Kho__Api__MemberInfo mi = KHO__API__MEMBER_INFO__INIT;
    Kho__Api__MemberInfo *mp = &mi;
    mi.id = p->id;
    mi.name = (char *)p->name;
    mi.peer_url = (char *)p->peer_url;
    mi.client_url = (char *)p->client_url;
    mi.state = p->state == META_NODE_REMOVED ? "removed" : "member";
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    rs.revision = revision;
    rs.n_members = 1;
    rs.members = &mp;
    api_reply(w, &rs);
}

/* --- member add ------------------------------------------------------------ */

static const char *check_add(const Kho__Api__Request *q)
{
    if (meta_reg_name_check(q->node_name) != NULL) {
        return "a node name is 1-64 lower-case letters, digits, '_', '.' "
               "and '-', starting with a letter or digit";
    }
    size_t pl = strlen(q->peer_url), cl = strlen(q->client_url);
    if (pl == 0 || cl == 0 || pl > META_NODE_FIELD_BYTES_MAX ||
        cl > META_NODE_FIELD_BYTES_MAX) {
        return "a node needs a peer URL and a client URL (at most 255 "
               "bytes each)";
    }
    return NULL;
}

static void member_add(struct worker *w)
{
    const Kho__Api__Request *q = w->rq;
    const char *why = check_add(q);
    if (why != NULL) {
        api_reply_err(w, KHO_EINVAL, why, 0);
        return;
    }
    size_t n = 0;
    struct node_peer *nodes = load_nodes(w, &n);
    if (nodes == NULL) {
        return;
    }
    uint64_t max_id = 0;
    size_t members = 0;
    for (size_t i = 0; i < n; i++) {
        max_id = nodes[i].id > max_id ? nodes[i].id : max_id;
        members += nodes[i].state == META_NODE_MEMBER;
    }
    const struct raft_conf *init = node_members(w->api->node);
    for (uint32_t i = 0; i < init->n; i++) {
        max_id = init->members[i].id > max_id ? init->members[i].id : max_id;
    }
    bool taken = find_member(nodes, n, q->node_name) != NULL;
    free(nodes);
    if (taken) {
        api_reply_errf(w, KHO_EEXIST, 0, "the cluster has a node named '%s'",
                       q->node_name);
        return;
    }
    if (members >= RAFT_MEMBERS_MAX || n >= NODE_NODES_MAX) {
        api_reply_errf(w, KHO_ENOSPC, 0,
                       "the cluster holds %zu nodes (%zu records); at most "
                       "%u nodes and %u records",
                       members, n, RAFT_MEMBERS_MAX, NODE_NODES_MAX);
        return;
    }
    struct node_peer *p = calloc(1, sizeof(*p) + META_NODE_VALUE_BYTES_MAX +
                                        META_NODE_KEY_BYTES);
    if (p == NULL) {
        api_reply_err(w, KHO_ENOMEM, NULL, 0);
        return;
    }
    w->op_state = p; /* freed with the request */
    p->id = max_id + 1;
    p->state = META_NODE_MEMBER;
    snprintf(p->name, sizeof(p->name), "%s", q->node_name);
    snprintf(p->peer_url, sizeof(p->peer_url), "%s", q->peer_url);
    snprintf(p->client_url, sizeof(p->client_url), "%s", q->client_url);
    uint8_t *key = (uint8_t *)(p + 1), *val = key + META_NODE_KEY_BYTES;
    meta_node_key(p->id, key);
    struct store_compare cmp = {.target = STORE_CMP_VERSION,
                                .op = STORE_CMP_EQ,
                                .key = key,
                                .key_len = META_NODE_KEY_BYTES};
    struct store_op op = {.op = STORE_OP_PUT,
                          .key = key,
                          .key_len = META_NODE_KEY_BYTES,
                          .value = val,
                          .value_len = meta_node_encode(p->name, p->peer_url,
                                                        p->client_url,
                                                        p->state, val)};
    api_propose_txn(w, NODE_META_GROUP, STORE_REQ_SINGLE, &cmp, 1, &op, 1);
}

/* --- member remove ----------------------------------------------------------- */

/* Everything one member remove proposes, in one allocation. */
struct removal {
    struct node_peer nodes[NODE_NODES_MAX];
    struct node_registry regs[NODE_SHARD_ENTRIES_MAX];
    struct place_node place[NODE_NODES_MAX];
    uint64_t members[NODE_NODES_MAX];
    struct store_compare cmps[STORE_TXN_OPS_MAX];
    struct store_op ops[STORE_TXN_OPS_MAX];
    uint8_t node_key[META_NODE_KEY_BYTES];
    uint8_t node_val[META_NODE_VALUE_BYTES_MAX];
    struct plan *plan;
};

/*
 * member remove: in one meta transaction, every shard replica on the node
 * moves to the members that hold the fewest (placement, meta.h: the plan
 * also evens the counts out), and the node's record says removed. The
 * shards' leaders then add the new replicas and take the node out; the
 * meta leader takes it out of the meta group.
 */
static void remove_planned(struct worker *w, struct removal *x);

static void member_remove(struct worker *w)
{
    struct removal *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        api_reply_err(w, KHO_ENOMEM, NULL, 0);
        return;
    }
    w->op_state = x;
    remove_planned(w, x);
    plan_free(x->plan); /* the proposal was encoded, or never made */
    x->plan = NULL;
}

static void remove_planned(struct worker *w, struct removal *x)
{
    const Kho__Api__Request *q = w->rq;
    size_t n_nodes = 0, n_regs = 0, n_members = 0;
    int rc = node_load_nodes(w->api->node, x->nodes, NODE_NODES_MAX, &n_nodes);
    if (rc != KHO_OK) {
        api_reply_err(w, rc, store_errmsg(w->api->st), 0);
        return;
    }
    x->plan = api_plan_load(w, x->regs, &n_regs);
    if (x->plan == NULL) {
        return;
    }
    const struct node_peer *gone = find_member(x->nodes, n_nodes, q->node_name);
    if (gone == NULL) {
        api_reply_errf(w, KHO_ENOTFOUND, 0, "no member named '%s'",
                       q->node_name);
        return;
    }
    for (size_t i = 0; i < n_nodes; i++) {
        if (x->nodes[i].state == META_NODE_MEMBER && &x->nodes[i] != gone) {
            x->members[n_members++] = x->nodes[i].id;
        }
    }
    if (n_members == 0) {
        api_reply_err(w, KHO_EINVAL, "the last member cannot be removed", 0);
        return;
    }
    plan_nodes(x->plan, x->members, n_members, x->place);
    plan_rebalance(x->plan, x->place, n_members);
    for (size_t i = 0; i < n_regs; i++) {
        for (uint32_t k = 0; k < x->regs[i].n_replicas; k++) {
            if (x->regs[i].replicas[k] == gone->id &&
                x->regs[i].home == gone->id) {
                api_reply_errf(w, KHO_EINVAL, 0,
                               "node '%s' is the home of registry '%s'; it "
                               "cannot leave while the registry lives there",
                               gone->name, x->regs[i].name);
                return;
            }
        }
    }
    size_t k = 0;
    rc = plan_ops(x->plan, x->cmps, x->ops, STORE_TXN_OPS_MAX - 1, &k);
    if (rc != KHO_OK) {
        api_reply_errf(w, rc, 0,
                       "the moves off node '%s' touch more than %u "
                       "registries at once",
                       gone->name, STORE_TXN_OPS_MAX - 1);
        return;
    }
    size_t n_moves = 0;
    const struct meta_move *mv = plan_moves(x->plan, &n_moves);
    for (size_t i = 0; i < n_moves; i++) {
        LOGI("member remove: shard %u of registry %s moves from node %llu "
             "to node %llu",
             mv[i].shard, plan_reg_name(x->plan, mv[i].reg),
             (unsigned long long)mv[i].from, (unsigned long long)mv[i].to);
    }
    meta_node_key(gone->id, x->node_key);
    x->cmps[k] = (struct store_compare){.target = STORE_CMP_VERSION,
                                        .op = STORE_CMP_GT,
                                        .key = x->node_key,
                                        .key_len = META_NODE_KEY_BYTES};
    x->ops[k] = (struct store_op){
        .op = STORE_OP_PUT,
        .key = x->node_key,
        .key_len = META_NODE_KEY_BYTES,
        .value = x->node_val,
        .value_len = meta_node_encode(gone->name, gone->peer_url,
                                      gone->client_url, META_NODE_REMOVED,
                                      x->node_val)};
    k++;
    api_propose_txn(w, NODE_META_GROUP, 0, x->cmps, k, x->ops, k);
}

/* --- member list, leader transfer ------------------------------------------ */

static void member_list(struct worker *w)
{
    size_t n = 0;
    struct node_peer *nodes = load_nodes(w, &n);
    Kho__Api__MemberInfo *mi = calloc(n + 1, sizeof(*mi));
    Kho__Api__MemberInfo **mp = calloc(n + 1, sizeof(*mp));
    if (nodes == NULL || mi == NULL || mp == NULL) {
        if (nodes != NULL) {
            api_reply_err(w, KHO_ENOMEM, NULL, 0);
        }
        free(nodes);
        free(mi);
        free(mp);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        kho__api__member_info__init(&mi[i]);
        mi[i].id = nodes[i].id;
        mi[i].name = nodes[i].name;
        mi[i].peer_url = nodes[i].peer_url;
        mi[i].client_url = nodes[i].client_url;
        mi[i].state =
            nodes[i].state == META_NODE_REMOVED ? "removed" : "member";
        mp[i] = &mi[i];
    }
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    rs.n_members = n;
    rs.members = mp;
    api_reply(w, &rs);
    free(nodes);
    free(mi);
    free(mp);
}

static void leader_transfer(struct worker *w)
{
    const Kho__Api__Request *q = w->rq;
    struct node *node = w->api->node;
    uint64_t self = node_id(node);
    if (q->drain_node != 0) {
        if (q->drain_node != self) {
            api_reply_errf(w, KHO_ENOTLEADER, q->drain_node,
                           "ask node %llu itself to hand its groups over",
                           (unsigned long long)q->drain_node);
            return;
        }
        api_submit(w, NODE_REQ_DRAIN, 0, NULL, 0);
        return;
    }
    if (q->target_node == 0) {
        api_reply_err(w, KHO_EINVAL, "leader transfer needs a target node or "
                                     "a node to drain", 0);
        return;
    }
    uint64_t leader = node_leader_of(node, q->group_id);
    if (leader != self) {
        api_reply_errf(w, leader != 0 ? KHO_ENOTLEADER : KHO_EUNAVAILABLE,
                       leader, "node %llu does not lead group %llu",
                       (unsigned long long)self,
                       (unsigned long long)q->group_id);
        return;
    }
    w->req.target = q->target_node;
    api_submit(w, NODE_REQ_TRANSFER, q->group_id, NULL, 0);
}

bool api_member_serve(struct worker *w)
{
    const Kho__Api__Request *q = w->rq;
    if (!is_member_op(q)) {
        return false;
    }
    switch (q->op) {
    case KHO__API__OP__OP_MEMBER_ADD:
        member_add(w);
        break;
    case KHO__API__OP__OP_MEMBER_REMOVE:
        member_remove(w);
        break;
    case KHO__API__OP__OP_MEMBER_LIST:
        member_list(w);
        break;
    default:
        leader_transfer(w);
        break;
    }
    return true;
}

bool api_member_answered(struct worker *w)
{
    const Kho__Api__Request *q = w->rq;
    if (!is_member_op(q)) {
        return false;
    }
    const struct node_req *r = &w->req;
    if (r->err != KHO_OK) {
        api_reply_err(w, r->err, NULL, r->leader);
        return true;
    }
    int res = r->res.result;
    if (q->op == KHO__API__OP__OP_MEMBER_ADD && res == KHO_OK) {
        reply_member(w, w->op_state, r->res.revision);
    } else if (res == KHO_ECONFLICT) {
        api_reply_err(w, KHO_ECONFLICT,
                      "the cluster map changed meanwhile; retry", 0);
    } else if (res != KHO_OK) {
        api_reply_err(w, res, NULL, 0);
    } else {
        Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
        rs.revision = r->res.revision;
        api_reply(w, &rs);
    }
    return true;
}

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
#include "internal.h"

/* Registries one member remove may move in one transaction (one op each,
 * plus the node record). */
#define MEMBER_MOVES_MAX (STORE_TXN_OPS_MAX - 1u)

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
    struct store_request sr;
    api_fill_request(w, &sr);
    sr.flags = STORE_REQ_SINGLE;
    sr.cmps = &cmp;
    sr.n_cmp = 1;
    sr.ops = &op;
    sr.n_ops = 1;
    api_propose(w, NODE_META_GROUP, &sr);
}

/* --- member remove ----------------------------------------------------------- */

/* A replacement replica for registry r: the member not already a replica
 * (nor `gone`) that holds the fewest replicas; 0 when there is none. */
static uint64_t pick_replacement(const struct node_peer *nodes, size_t n,
                                 const struct node_registry *regs,
                                 size_t n_regs, const struct node_registry *r,
                                 uint64_t gone)
{
    uint64_t best = 0;
    size_t best_load = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        uint64_t id = nodes[i].id;
        bool taken = id == gone || nodes[i].state != META_NODE_MEMBER;
        for (uint32_t k = 0; k < r->n_replicas && !taken; k++) {
            taken = r->replicas[k] == id;
        }
        if (taken) {
            continue;
        }
        size_t load = 0;
        for (size_t j = 0; j < n_regs; j++) {
            for (uint32_t k = 0; k < regs[j].n_replicas; k++) {
                load += regs[j].replicas[k] == id;
            }
        }
        if (load < best_load) {
            best = id;
            best_load = load;
        }
    }
    return best;
}

/* Everything one member remove proposes, in one allocation. */
struct removal {
    struct node_peer nodes[NODE_NODES_MAX];
    struct node_registry regs[NODE_REGISTRIES_MAX];
    struct store_compare cmps[STORE_TXN_OPS_MAX];
    struct store_op ops[STORE_TXN_OPS_MAX];
    uint8_t keys[STORE_TXN_OPS_MAX][META_REG_PREFIX_BYTES +
                                    META_REG_NAME_BYTES_MAX];
    uint8_t vals[STORE_TXN_OPS_MAX][META_REG_VALUE_BYTES_MAX];
    uint8_t node_key[META_NODE_KEY_BYTES];
    uint8_t node_val[META_NODE_VALUE_BYTES_MAX];
    size_t n;
};

/* Adds the compare-and-put moving registry r off node `gone`. Returns an
 * error (after replying) when it cannot. */
static int move_registry(struct worker *w, struct removal *x,
                         const struct node_registry *r, size_t n_regs,
                         size_t n_nodes, uint64_t gone)
{
    struct meta_reg mr = {.n_initial = r->n_initial, .n_replicas = 0};
    memcpy(mr.initial, r->initial, r->n_initial * sizeof(r->initial[0]));
    uint64_t repl = pick_replacement(x->nodes, n_nodes, x->regs, n_regs, r,
                                     gone);
    for (uint32_t k = 0; k < r->n_replicas; k++) {
        if (r->replicas[k] != gone) {
            mr.replicas[mr.n_replicas++] = r->replicas[k];
        } else if (repl != 0) {
            mr.replicas[mr.n_replicas++] = repl;
        }
    }
    if (mr.n_replicas == 0) {
        api_reply_errf(w, KHO_EINVAL, 0,
                       "registry '%s' has its only replica on node %llu and "
                       "no other node can take it",
                       r->name, (unsigned long long)gone);
        return KHO_EINVAL;
    }
    if (x->n >= MEMBER_MOVES_MAX) {
        api_reply_errf(w, KHO_ETOOLARGE, 0,
                       "more than %u registries live on node %llu; one "
                       "removal moves at most that many",
                       MEMBER_MOVES_MAX, (unsigned long long)gone);
        return KHO_ETOOLARGE;
    }
    size_t name_len = strlen(r->name);
    uint8_t *key = x->keys[x->n];
    memcpy(key, META_REG_PREFIX, META_REG_PREFIX_BYTES);
    memcpy(key + META_REG_PREFIX_BYTES, r->name, name_len);
    size_t key_len = META_REG_PREFIX_BYTES + name_len;
    x->cmps[x->n] = (struct store_compare){.target = STORE_CMP_MOD_REV,
                                           .op = STORE_CMP_EQ,
                                           .key = key,
                                           .key_len = key_len,
                                           .number = r->mod_rev};
    x->ops[x->n] = (struct store_op){.op = STORE_OP_PUT,
                                     .key = key,
                                     .key_len = key_len,
                                     .value = x->vals[x->n],
                                     .value_len =
                                         meta_reg_encode(&mr, x->vals[x->n])};
    LOGI("member remove: registry %s moves from node %llu to node %llu",
         r->name, (unsigned long long)gone, (unsigned long long)repl);
    x->n++;
    return KHO_OK;
}

static void member_remove(struct worker *w)
{
    const Kho__Api__Request *q = w->rq;
    struct removal *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        api_reply_err(w, KHO_ENOMEM, NULL, 0);
        return;
    }
    w->op_state = x;
    size_t n_nodes = 0, n_regs = 0, members = 0;
    int rc = node_load_nodes(w->api->node, x->nodes, NODE_NODES_MAX, &n_nodes);
    if (rc == KHO_OK) {
        rc = node_load_registries(w->api->node, x->regs, NODE_REGISTRIES_MAX,
                                  &n_regs);
    }
    if (rc != KHO_OK) {
        api_reply_err(w, rc, store_errmsg(w->api->st), 0);
        return;
    }
    const struct node_peer *gone = find_member(x->nodes, n_nodes, q->node_name);
    for (size_t i = 0; i < n_nodes; i++) {
        members += x->nodes[i].state == META_NODE_MEMBER;
    }
    if (gone == NULL) {
        api_reply_errf(w, KHO_ENOTFOUND, 0, "no member named '%s'",
                       q->node_name);
        return;
    }
    if (members <= 1) {
        api_reply_err(w, KHO_EINVAL, "the last member cannot be removed", 0);
        return;
    }
    for (size_t i = 0; i < n_regs; i++) {
        bool here = false;
        for (uint32_t k = 0; k < x->regs[i].n_replicas; k++) {
            here = here || x->regs[i].replicas[k] == gone->id;
        }
        if (here && move_registry(w, x, &x->regs[i], n_regs, n_nodes,
                                  gone->id) != KHO_OK) {
            return;
        }
    }
    meta_node_key(gone->id, x->node_key);
    x->cmps[x->n] = (struct store_compare){.target = STORE_CMP_VERSION,
                                           .op = STORE_CMP_GT,
                                           .key = x->node_key,
                                           .key_len = META_NODE_KEY_BYTES};
    x->ops[x->n] = (struct store_op){
        .op = STORE_OP_PUT,
        .key = x->node_key,
        .key_len = META_NODE_KEY_BYTES,
        .value = x->node_val,
        .value_len = meta_node_encode(gone->name, gone->peer_url,
                                      gone->client_url, META_NODE_REMOVED,
                                      x->node_val)};
    x->n++;
    struct store_request sr;
    api_fill_request(w, &sr);
    sr.cmps = x->cmps;
    sr.n_cmp = x->n;
    sr.ops = x->ops;
    sr.n_ops = x->n;
    api_propose(w, NODE_META_GROUP, &sr);
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

/*
 * internal.h - what the files of server/api share: the service and worker
 * structures and the reply helpers. Nothing here leaves server/api.
 *
 * api.c       lifecycle, the worker state machine, dispatch, data requests
 * member.c    membership and leadership (OP_MEMBER_*, OP_LEADER_TRANSFER)
 * admin.c     consistency checks and backups
 * shard.c     shard maps, moves and rebalancing (OP_SHARD_*, OP_REBALANCE)
 *
 * A handler either replies (reply*()) or hands the request to the raft
 * thread (api_submit()/api_propose()); when the raft thread answers, the
 * worker calls the answered-hook of the file that owns the op.
 */
#ifndef KHO_API_INTERNAL_H
#define KHO_API_INTERNAL_H

#include <nng/nng.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "../common/clock.h"
#include "api.h"
#include "proto/api.pb-c.h"

enum wstate { W_RECV = 1, W_NODE = 2, W_SEND = 3 };

struct worker {
    struct api *api;
    nng_aio *aio;
    nng_ctx ctx;
    enum wstate state;
    struct node_req req;
    uint8_t *prop;         /* the proposal's encoded request */
    Kho__Api__Request *rq; /* the request being served */
    void *op_state;        /* a handler's own state, freed with free() */
    uint64_t start_us;     /* when the request arrived (metrics_now_us) */
    uint32_t shards;       /* the routed registry's shard count (answers
                              carry it; 0: not a data request) */
};

struct api {
    nng_socket sock;
    nng_listener listener;
    struct node *node;
    struct store *st;
    struct node_peer *peers;
    size_t n_peers;
    uint64_t quota_bytes;
    pthread_mutex_t space_mu;
    uint64_t space_at_ms, space_used;
    atomic_bool closing;
    struct worker workers[API_WORKERS];
    size_t n_workers;
};

/* Packs and sends the answer; everything rs points to may be freed once
 * this returns. */
void api_reply(struct worker *w, Kho__Api__Response *rs);
/* An error answer; `redirect` (a node id, 0: none) becomes the client URL
 * hint of a KHO_ENOTLEADER answer. */
void api_reply_err(struct worker *w, int err, const char *msg,
                   uint64_t redirect);
void api_reply_errf(struct worker *w, int err, uint64_t redirect,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Hands a request to the raft thread (node_submit); the answer comes back
 * through the owning file's answered-hook. Replies on failure. */
void api_submit(struct worker *w, uint32_t kind, uint64_t gid,
                const uint8_t *data, size_t len);
/* Encodes a state-machine request and proposes it to group gid (the space
 * quota applies to requests with a put). Replies on failure. */
void api_propose(struct worker *w, uint64_t gid,
                 const struct store_request *sr);
/* api_propose() of the request of w's session with these flags, compares
 * and ops (pointers used only during the call: the proposal is encoded). */
void api_propose_txn(struct worker *w, uint64_t gid, uint32_t flags,
                     const struct store_compare *cmps, size_t n_cmp,
                     const struct store_op *ops, size_t n_ops);
/* The client URL of node id into buf ("" when unknown). */
void api_client_url(struct api *a, uint64_t id, char *buf, size_t cap);

/* member.c: serves OP_MEMBER_* and OP_LEADER_TRANSFER (returns false for
 * other ops); member_answered() takes the raft thread's answer. */
bool api_member_serve(struct worker *w);
bool api_member_answered(struct worker *w);

/* shard.c: the same for the shard and rebalance ops. */
bool api_shard_serve(struct worker *w);
bool api_shard_answered(struct worker *w);
/* shard.c: the member nodes (ids) as the meta group records them. */
size_t api_members(struct api *a, uint64_t *out, size_t cap);
/* shard.c: the meta group's committed registry records as table entries
 * in regs (NODE_SHARD_ENTRIES_MAX of them; *n_regs filled) and the plan
 * over them (plan_free() it); replies and returns NULL on failure. */
struct plan *api_plan_load(struct worker *w, struct node_registry *regs,
                           size_t *n_regs);
/* shard.c: the id among ids[0..n) of the node named `name` (0: none). */
uint64_t api_member_named(struct api *a, const uint64_t *ids, size_t n,
                          const char *name);
/* admin.c: the same for the consistency-check and backup ops. */
bool api_admin_serve(struct worker *w);
bool api_admin_answered(struct worker *w);
/* admin.c: replies to OP_STATUS with rs, each group's check alarm added. */
void api_admin_reply_status(struct worker *w, Kho__Api__Response *rs);
/* admin.c: ends a backup session in progress (from api_close, once no
 * worker runs). */
void api_admin_close(struct api *a);

#endif /* KHO_API_INTERNAL_H */

/*
 * api.c - see api.h.
 *
 * A worker serves one request at a time:
 *   W_RECV  waiting for a request;
 *   W_NODE  waiting for the raft thread (a proposal, or the read barrier of
 *           a linearizable read);
 *   W_SEND  the reply is on its way.
 * Replies are packed into an NNG message at once, so everything a Response
 * points to may be freed right after api_reply().
 */
#include "internal.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/log.h"
#include "../common/clock.h"
#include "../common/metrics.h"
#include "../node/meta.h"
#include "../node/plan.h"
#include "proto/api.pb-c.h"

static void worker_cb(void *arg);

void api_client_url(struct api *a, uint64_t id, char *buf, size_t cap)
{
    struct node_peer p;
    if (id != 0 && node_peer_info(a->node, id, &p) == KHO_OK) {
        snprintf(buf, cap, "%s", p.client_url);
    } else {
        snprintf(buf, cap, "%s", "");
    }
}

/* --- Replies ------------------------------------------------------------ */

void api_reply(struct worker *w, Kho__Api__Response *rs)
{
    metrics_request(w->rq != NULL ? (uint32_t)w->rq->op : 0, (int)rs->err,
                    metrics_now_us() - w->start_us);
    if (rs->message == NULL) {
        rs->message = "";
    }
    if (rs->leader_hint == NULL) {
        rs->leader_hint = "";
    }
    if (rs->shards == 0) {
        rs->shards = w->shards;
    }
    size_t len = kho__api__response__get_packed_size(rs);
    nng_msg *m = NULL;
    if (nng_msg_alloc(&m, len) != 0) {
        LOGW("no memory for a %zu-byte reply; dropped", len);
        w->state = W_RECV;
        nng_ctx_recv(w->ctx, w->aio);
        return;
    }
    kho__api__response__pack(rs, nng_msg_body(m));
    nng_aio_set_msg(w->aio, m);
    w->state = W_SEND;
    nng_ctx_send(w->ctx, w->aio);
}

/* Replies with an error; `redirect` (a node id, 0: none) becomes the hint
 * of a KHO_ENOTLEADER answer. */
void api_reply_err(struct worker *w, int err, const char *msg,
                      uint64_t redirect)
{
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    rs.err = (uint32_t)err;
    rs.message = (char *)(msg != NULL ? msg : kho_strerror(err));
    char hint[NODE_URL_BYTES];
    api_client_url(w->api, redirect, hint, sizeof(hint));
    rs.leader_hint = hint;
    api_reply(w, &rs);
}

void api_reply_errf(struct worker *w, int err, uint64_t redirect,
                       const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    api_reply_err(w, err, msg, redirect);
}

/* --- Pages of records --------------------------------------------------- */

struct page {
    Kho__Api__Record **recs;
    size_t n, cap;
    uint64_t last_rev; /* history: mod_rev of the last record */
};

/* Copies a record (its pointers die with the read transaction) into one
 * allocation. */
static Kho__Api__Record *record_copy(const struct store_record *r)
{
    size_t size = sizeof(Kho__Api__Record) + r->key_len + r->value_len +
                  r->writer_len + 1;
    uint8_t *p = malloc(size);
    if (p == NULL) {
        return NULL;
    }
    Kho__Api__Record *o = (Kho__Api__Record *)p;
    kho__api__record__init(o);
    uint8_t *key = p + sizeof(*o), *val = key + r->key_len;
    char *writer = (char *)(val + r->value_len);
    memcpy(key, r->key, r->key_len);
    if (r->value_len > 0) {
        memcpy(val, r->value, r->value_len);
    }
    if (r->writer_len > 0) {
        memcpy(writer, r->writer, r->writer_len);
    }
    writer[r->writer_len] = '\0';
    o->key = (ProtobufCBinaryData){.len = r->key_len, .data = key};
    o->value = (ProtobufCBinaryData){.len = r->value_len, .data = val};
    o->version = r->version;
    o->create_revision = r->create_rev;
    o->modify_revision = r->mod_rev;
    o->writer = writer;
    o->time_ms = r->time_ms;
    o->deleted = r->deleted;
    return o;
}

static int page_add(void *ctx, const struct store_record *r)
{
    struct page *pg = ctx;
    if (pg->n == pg->cap) {
        size_t cap = pg->cap == 0 ? 16 : pg->cap * 2;
        void *p = realloc(pg->recs, cap * sizeof(*pg->recs));
        if (p == NULL) {
            return KHO_ENOMEM;
        }
        pg->recs = p;
        pg->cap = cap;
    }
    Kho__Api__Record *o = record_copy(r);
    if (o == NULL) {
        return KHO_ENOMEM;
    }
    pg->recs[pg->n++] = o;
    pg->last_rev = r->mod_rev;
    return KHO_OK;
}

static void page_free(struct page *pg)
{
    for (size_t i = 0; i < pg->n; i++) {
        free(pg->recs[i]);
    }
    free(pg->recs);
}

static void reply_read_err(struct worker *w, int rc)
{
    if (rc == KHO_ENOTFOUND) {
        api_reply_err(w, rc, "key not found", 0);
    } else {
        api_reply_err(w, rc, rc == KHO_ENOMEM ? NULL : store_errmsg(w->api->st),
                  0);
    }
}

/* Answers a get from the store; with floor > 0 (a leased read,
 * serve_data()) only if the store has applied the group up to floor:
 * otherwise it answers nothing and returns false. */
static bool serve_get_from(struct worker *w, uint64_t gid, uint64_t floor)
{
    const Kho__Api__Request *q = w->rq;
    struct page pg = {0};
    uint64_t applied = 0;
    int rc = store_kv_read(w->api->st, gid, q->key.data, q->key.len, page_add,
                           &pg, &applied);
    /* applied is known once the group was found (a missing key too). */
    if (floor > 0 &&
        ((rc != KHO_OK && rc != KHO_ENOTFOUND) || applied < floor)) {
        page_free(&pg);
        return false;
    }
    if (rc == KHO_OK && pg.n == 1) {
        Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
        Kho__Api__Record *r = pg.recs[0];
        rs.record = r;
        rs.value = r->value;
        rs.version = r->version;
        rs.revision = r->modify_revision;
        api_reply(w, &rs);
    } else {
        reply_read_err(w, rc == KHO_OK ? KHO_ECORRUPT : rc);
    }
    page_free(&pg);
    return true;
}

static void serve_get(struct worker *w, uint64_t gid)
{
    serve_get_from(w, gid, 0);
}

/* The first key after every key starting with p, or 0 when there is none
 * (p is all 0xff): p with its trailing 0xff bytes dropped and the last one
 * left incremented. */
static size_t prefix_end(const uint8_t *p, size_t len, uint8_t *out)
{
    while (len > 0 && p[len - 1] == 0xff) {
        len--;
    }
    if (len == 0) {
        return 0;
    }
    memcpy(out, p, len);
    out[len - 1]++;
    return len;
}

static uint32_t page_limit(const Kho__Api__Request *q)
{
    if (q->limit == 0) {
        return API_SCAN_LIMIT_DEFAULT;
    }
    return q->limit < STORE_SCAN_LIMIT_MAX ? q->limit : STORE_SCAN_LIMIT_MAX;
}

static void reply_page(struct worker *w, struct page *pg, const uint8_t *token,
                       size_t token_len)
{
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    rs.records = pg->recs;
    rs.n_records = pg->n;
    rs.token = (ProtobufCBinaryData){.len = token_len, .data = (uint8_t *)token};
    api_reply(w, &rs);
}

static void serve_scan(struct worker *w, uint64_t gid)
{
    const Kho__Api__Request *q = w->rq;
    uint8_t end[STORE_KEY_BYTES_MAX];
    struct store_scan sc = {
        .start = q->key.data,
        .start_len = q->key.len,
        .end = q->range_end.len > 0 ? q->range_end.data : NULL,
        .end_len = q->range_end.len,
        .after = q->token.data,
        .after_len = q->token.len,
        .limit = page_limit(q),
        .max_bytes = API_PAGE_BYTES_MAX,
    };
    if (q->prefix.len > 0) {
        sc.start = q->prefix.data;
        sc.start_len = q->prefix.len;
        sc.end_len = prefix_end(q->prefix.data, q->prefix.len, end);
        sc.end = sc.end_len > 0 ? end : NULL;
    }
    struct page pg = {0};
    bool more = false;
    int rc = store_kv_scan(w->api->st, gid, &sc, page_add, &pg, &more, NULL);
    if (rc != KHO_OK) {
        reply_read_err(w, rc == KHO_ENOTFOUND ? KHO_EIO : rc);
    } else if (more && pg.n > 0) {
        const Kho__Api__Record *last = pg.recs[pg.n - 1];
        reply_page(w, &pg, last->key.data, last->key.len);
    } else {
        reply_page(w, &pg, NULL, 0);
    }
    page_free(&pg);
}

static void serve_history(struct worker *w, uint64_t gid)
{
    const Kho__Api__Request *q = w->rq;
    uint64_t after = 0;
    if (q->token.len != 0 && q->token.len != 8) {
        api_reply_err(w, KHO_EINVAL, "malformed history token", 0);
        return;
    }
    for (size_t i = q->token.len; i > 0; i--) {
        after = (after << 8) | q->token.data[i - 1];
    }
    struct page pg = {0};
    bool more = false;
    int rc = store_kv_history(w->api->st, gid, q->key.data, q->key.len, after,
                              page_limit(q), page_add, &pg, &more, NULL);
    uint8_t token[8];
    for (int i = 0; i < 8; i++) {
        token[i] = (uint8_t)(pg.last_rev >> (8 * i));
    }
    if (rc != KHO_OK) {
        reply_read_err(w, rc);
    } else {
        reply_page(w, &pg, more && pg.n > 0 ? token : NULL,
                   more && pg.n > 0 ? sizeof(token) : 0);
    }
    page_free(&pg);
}

/* --- Registries ---------------------------------------------------------- */

static void fill_info(struct api *a, Kho__Api__RegistryInfo *ri,
                      struct node_registry *r,
                      const struct node_group_status *gs, char *home,
                      size_t home_cap)
{
    kho__api__registry_info__init(ri);
    ri->name = r->name;
    ri->group_id = r->group_id;
    ri->n_replicas = r->n_replicas;
    ri->replicas = r->replicas;
    ri->created_ms = r->created_ms;
    ri->creator = r->creator;
    ri->shards = r->n_shards;
    struct node_peer hp;
    home[0] = '\0';
    if (r->home != 0 && node_peer_info(a->node, r->home, &hp) == KHO_OK) {
        snprintf(home, home_cap, "%s", hp.name);
    }
    ri->home = home;
    if (gs != NULL) {
        ri->leader = gs->leader;
        ri->term = gs->term;
        ri->commit = gs->commit;
        ri->applied = gs->applied;
    }
}

/* Everything one registry listing points to, in one allocation. */
struct reg_list {
    struct node_registry regs[NODE_SHARD_ENTRIES_MAX];
    Kho__Api__RegistryInfo infos[NODE_REGISTRIES_MAX];
    Kho__Api__RegistryInfo *ptrs[NODE_REGISTRIES_MAX];
    char homes[NODE_REGISTRIES_MAX][NODE_NAME_BYTES];
    struct node_group_status gs[NODE_GROUPS_MAX];
};

/* Registry list and describe: one entry per registry (its shard 0; shard
 * maps come with OP_SHARD_MAP). */
static void serve_registries(struct worker *w)
{
    struct api *a = w->api;
    const Kho__Api__Request *q = w->rq;
    struct reg_list *x = calloc(1, sizeof(*x));
    size_t n = 0;
    int rc = x != NULL ? KHO_OK : KHO_ENOMEM;
    if (rc == KHO_OK) {
        w->op_state = x;
        rc = node_load_registries(a->node, x->regs, NODE_SHARD_ENTRIES_MAX,
                                  &n);
    }
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    bool describe = q->op == KHO__API__OP__OP_REGISTRY_DESCRIBE;
    size_t k = describe && rc == KHO_OK
                   ? node_status(a->node, x->gs, NODE_GROUPS_MAX)
                   : 0;
    for (size_t i = 0; rc == KHO_OK && i < n; i++) {
        struct node_registry *r = &x->regs[i];
        if (r->shard != 0 || rs.n_registries >= NODE_REGISTRIES_MAX ||
            (describe && strcmp(r->name, q->registry) != 0)) {
            continue;
        }
        const struct node_group_status *mine = NULL;
        for (size_t j = 0; j < k; j++) {
            if (x->gs[j].group_id == r->group_id) {
                mine = &x->gs[j];
            }
        }
        size_t at = rs.n_registries++;
        fill_info(a, &x->infos[at], r, mine, x->homes[at],
                  sizeof(x->homes[at]));
        x->ptrs[at] = &x->infos[at];
    }
    if (rc != KHO_OK) {
        api_reply_err(w, rc, rc == KHO_ENOMEM ? NULL : store_errmsg(a->st), 0);
    } else if (describe && rs.n_registries == 0) {
        api_reply_errf(w, KHO_ENOTFOUND, 0, "no registry named '%s'", q->registry);
    } else {
        rs.registries = x->ptrs;
        api_reply(w, &rs);
    }
}

/* --- Status ---------------------------------------------------------------- */

/* Everything one status answer points to, in one allocation. */
struct status_buf {
    struct node_group_status st[NODE_GROUPS_MAX];
    Kho__Api__GroupStatus gs[NODE_GROUPS_MAX];
    Kho__Api__GroupStatus *gp[NODE_GROUPS_MAX];
    Kho__Api__ReplicaInfo ri[NODE_GROUPS_MAX][RAFT_MEMBERS_MAX];
    Kho__Api__ReplicaInfo *rp[NODE_GROUPS_MAX][RAFT_MEMBERS_MAX];
    struct node_peer peers[NODE_NODES_MAX];
    Kho__Api__NodeInfo ni[NODE_NODES_MAX];
    Kho__Api__NodeInfo *np[NODE_NODES_MAX];
};

static void fill_replicas(struct status_buf *b, size_t i)
{
    const struct node_group_status *st = &b->st[i];
    for (uint32_t k = 0; k < st->n_replicas; k++) {
        const struct node_replica_status *r = &st->replicas[k];
        Kho__Api__ReplicaInfo *ri = &b->ri[i][k];
        kho__api__replica_info__init(ri);
        ri->group_id = st->group_id;
        ri->registry = b->gs[i].registry;
        ri->shard = st->shard;
        ri->role = r->voter ? "voter" : "learner";
        ri->match = r->match;
        ri->lag = st->last_index > r->match ? st->last_index - r->match : 0;
        ri->leader = r->id == st->leader;
        ri->node = r->id;
        ri->active = r->active;
        b->rp[i][k] = ri;
    }
    b->gs[i].n_replicas = st->n_replicas;
    b->gs[i].replicas = b->rp[i];
}

static size_t fill_nodes(struct api *a, struct status_buf *b)
{
    /* The nodes as the meta group records them; the start-up list until
     * it has. */
    size_t k = 0;
    if (node_load_nodes(a->node, b->peers, NODE_NODES_MAX, &k) != KHO_OK ||
        k == 0) {
        k = a->n_peers < RAFT_MEMBERS_MAX ? a->n_peers : RAFT_MEMBERS_MAX;
        memcpy(b->peers, a->peers, k * sizeof(b->peers[0]));
        for (size_t i = 0; i < k; i++) {
            b->peers[i].state = META_NODE_MEMBER;
        }
    }
    for (size_t i = 0; i < k; i++) {
        kho__api__node_info__init(&b->ni[i]);
        b->ni[i].id = b->peers[i].id;
        b->ni[i].name = b->peers[i].name;
        b->ni[i].client_url = b->peers[i].client_url;
        b->ni[i].peer_url = b->peers[i].peer_url;
        b->ni[i].state =
            b->peers[i].state == META_NODE_REMOVED ? "removed" : "member";
        b->np[i] = &b->ni[i];
    }
    return k;
}

static void reply_status(struct worker *w)
{
    struct api *a = w->api;
    struct status_buf *b = malloc(sizeof(*b));
    if (b == NULL) {
        api_reply_err(w, KHO_ENOMEM, NULL, 0);
        return;
    }
    size_t n = node_status(a->node, b->st, NODE_GROUPS_MAX);
    for (size_t i = 0; i < n; i++) {
        Kho__Api__GroupStatus *gs = &b->gs[i];
        kho__api__group_status__init(gs);
        gs->group_id = b->st[i].group_id;
        gs->registry = b->st[i].registry;
        gs->role = (char *)raft_role_name(b->st[i].role);
        gs->term = b->st[i].term;
        gs->leader = b->st[i].leader;
        gs->commit = b->st[i].commit;
        gs->applied = b->st[i].applied;
        gs->last_index = b->st[i].last_index;
        gs->shard = b->st[i].shard;
        fill_replicas(b, i);
        b->gp[i] = gs;
    }
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    rs.node_id = node_id(a->node);
    rs.node_name = (char *)node_name(a->node);
    rs.n_groups = n;
    rs.groups = b->gp;
    rs.n_nodes = fill_nodes(a, b);
    rs.nodes = b->np;
    api_admin_reply_status(w, &rs);
    free(b);
}

/* --- Proposals ------------------------------------------------------------- */

static void node_answered(struct worker *w);

/* Whether the answer to w's request is only packing a small reply: then
 * the raft thread sends it itself (an async send), sparing two thread
 * hand-offs per write (NNG's timer thread, then a task thread). */
static bool answers_inline(const struct worker *w)
{
    const Kho__Api__Request *q = w->rq;
    if (w->req.kind == NODE_REQ_READ) {
        /* A get is one short LMDB read of at most one value. */
        return q->op == KHO__API__OP__OP_GET;
    }
    return w->req.kind == NODE_REQ_PROPOSE &&
           (q->op == KHO__API__OP__OP_PUT || q->op == KHO__API__OP__OP_DELETE ||
            q->op == KHO__API__OP__OP_TXN);
}

static void node_done_cb(struct node_req *r)
{
    struct worker *w = r->ctx;
    if (answers_inline(w)) {
        node_answered(w);
        return;
    }
    /* Back to an NNG thread: reads touch LMDB, and other answers may do
     * more work; the raft thread must not. */
    nng_sleep_aio(0, w->aio);
}

void api_submit(struct worker *w, uint32_t kind, uint64_t gid,
                   const uint8_t *data, size_t len)
{
    w->req = (struct node_req){
        .kind = kind,
        .group_id = gid,
        .data = data,
        .len = len,
        .target = w->req.target, /* set by the caller for a transfer */
        .done_cb = node_done_cb,
        .ctx = w,
    };
    w->state = W_NODE;
    int rc = node_submit(w->api->node, &w->req);
    if (rc != KHO_OK) {
        api_reply_err(w, rc, rc == KHO_EBUSY ? "node queue full" : NULL, 0);
    }
}

/* Whether the store holds more than the quota (re-read at most every
 * API_SPACE_CHECK_MS). */
static bool over_quota(struct api *a, uint64_t *used)
{
    uint64_t now = clock_mono_ms();
    pthread_mutex_lock(&a->space_mu);
    if (now - a->space_at_ms >= API_SPACE_CHECK_MS || a->space_at_ms == 0) {
        uint64_t u = 0, map = 0;
        if (store_space(a->st, &u, &map) == KHO_OK) {
            a->space_used = u;
        }
        a->space_at_ms = now;
    }
    *used = a->space_used;
    pthread_mutex_unlock(&a->space_mu);
    return *used > a->quota_bytes;
}

void api_propose(struct worker *w, uint64_t gid,
                    const struct store_request *sr)
{
    bool adds = false;
    for (size_t i = 0; i < sr->n_ops; i++) {
        adds = adds || sr->ops[i].op == STORE_OP_PUT;
    }
    uint64_t used = 0;
    if (adds && over_quota(w->api, &used)) {
        api_reply_errf(w, KHO_ENOSPC, 0,
                   "the store holds %llu MiB, over its quota of %llu MiB: "
                   "writes that add data are refused; deletes and reads "
                   "still work",
                   (unsigned long long)(used >> 20),
                   (unsigned long long)(w->api->quota_bytes >> 20));
        return;
    }
    size_t cap = store_request_size(sr), len = 0;
    if (cap == 0) {
        api_reply_err(w, KHO_ETOOLARGE, "request over a size limit", 0);
        return;
    }
    w->prop = malloc(cap);
    if (w->prop == NULL) {
        api_reply_err(w, KHO_ENOMEM, NULL, 0);
        return;
    }
    int rc = store_request_encode(sr, w->prop, cap, &len);
    if (rc != KHO_OK) {
        api_reply_err(w, rc,
                  rc == KHO_EINVAL ? "malformed request (bad compare or op, "
                                     "empty key, or two ops on one key)"
                                   : "request over a size limit",
                  0);
        return;
    }
    api_submit(w, NODE_REQ_PROPOSE, gid, w->prop, len);
}

/* A store request with the session, seq, time and writer of w's request. */
static void api_fill_request(struct worker *w, struct store_request *sr)
{
    const Kho__Api__Request *q = w->rq;
    size_t wl = strlen(q->client_name);
    *sr = (struct store_request){
        .session = q->session,
        .seq = q->seq,
        .time_ms = clock_wall_ms(),
        .writer = q->client_name,
        .writer_len = wl < STORE_WRITER_BYTES_MAX ? wl : STORE_WRITER_BYTES_MAX,
    };
}

void api_propose_txn(struct worker *w, uint64_t gid, uint32_t flags,
                     const struct store_compare *cmps, size_t n_cmp,
                     const struct store_op *ops, size_t n_ops)
{
    struct store_request sr;
    api_fill_request(w, &sr);
    sr.flags = flags;
    sr.cmps = cmps;
    sr.n_cmp = n_cmp;
    sr.ops = ops;
    sr.n_ops = n_ops;
    api_propose(w, gid, &sr);
}

static void propose_single(struct worker *w, uint64_t gid)
{
    const Kho__Api__Request *q = w->rq;
    struct store_compare cmp = {.key = q->key.data, .key_len = q->key.len};
    bool put = q->op == KHO__API__OP__OP_PUT;
    struct store_op op = {
        .op = put ? STORE_OP_PUT : STORE_OP_DELETE,
        .key = q->key.data,
        .key_len = q->key.len,
        .value = put ? q->value.data : NULL,
        .value_len = put ? q->value.len : 0,
    };
    struct store_request sr;
    api_fill_request(w, &sr);
    sr.flags = STORE_REQ_SINGLE;
    sr.ops = &op;
    sr.n_ops = 1;
    switch (q->cond) {
    case KHO__API__COND__COND_IF_ABSENT:
        cmp.target = STORE_CMP_VERSION;
        break;
    case KHO__API__COND__COND_IF_VERSION:
        cmp.target = STORE_CMP_VERSION;
        cmp.number = q->expected_version;
        break;
    case KHO__API__COND__COND_IF_REVISION:
        cmp.target = STORE_CMP_MOD_REV;
        cmp.number = q->expected_version;
        break;
    default:
        break;
    }
    if (q->cond != KHO__API__COND__COND_NONE) {
        sr.cmps = &cmp;
        sr.n_cmp = 1;
    }
    api_propose(w, gid, &sr);
}

static void propose_txn(struct worker *w, uint64_t gid)
{
    const Kho__Api__Request *q = w->rq;
    struct store_compare cmps[STORE_TXN_CMPS_MAX];
    struct store_op ops[STORE_TXN_OPS_MAX];
    for (size_t i = 0; i < q->n_compares; i++) {
        const Kho__Api__Compare *c = q->compares[i];
        bool by_value = c->target == KHO__API__COMPARE_TARGET__TARGET_VALUE;
        cmps[i] = (struct store_compare){
            .target = (uint32_t)c->target,
            .op = (uint32_t)c->op,
            .key = c->key.data,
            .key_len = c->key.len,
            .number = by_value ? 0 : c->number,
            .value = by_value ? c->value.data : NULL,
            .value_len = by_value ? c->value.len : 0,
        };
    }
    for (size_t i = 0; i < q->n_ops; i++) {
        const Kho__Api__TxnOp *o = q->ops[i];
        ops[i] = (struct store_op){
            .op = o->is_delete ? STORE_OP_DELETE : STORE_OP_PUT,
            .key = o->key.data,
            .key_len = o->key.len,
            .value = o->is_delete ? NULL : o->value.data,
            .value_len = o->is_delete ? 0 : o->value.len,
        };
    }
    api_propose_txn(w, gid, 0, cmps, q->n_compares, ops, q->n_ops);
}

/* What a registry create proposes, in one allocation. */
struct reg_create {
    struct node_registry regs[NODE_SHARD_ENTRIES_MAX];
    struct place_node nodes[NODE_NODES_MAX];
    uint64_t members[NODE_NODES_MAX];
    struct meta_reg mr;
    uint8_t key[META_REG_PREFIX_BYTES + META_REG_NAME_BYTES_MAX];
    uint8_t val[META_REG_VALUE_BYTES_MAX];
};

static void propose_registry(struct worker *w)
{
    struct api *a = w->api;
    const Kho__Api__Request *q = w->rq;
    const char *why = meta_reg_name_check(q->registry);
    if (why != NULL) {
        api_reply_err(w, KHO_EINVAL, why, 0);
        return;
    }
    uint32_t want = q->replicas != 0 ? q->replicas : NODE_REPLICAS_DEFAULT;
    uint32_t shards = q->shards != 0 ? q->shards : 1;
    if (want > NODE_REPLICAS_MAX) {
        api_reply_errf(w, KHO_EINVAL, 0, "at most %u replicas", NODE_REPLICAS_MAX);
        return;
    }
    if (shards > KHO_SHARDS_MAX) {
        api_reply_errf(w, KHO_EINVAL, 0, "at most %u shards", KHO_SHARDS_MAX);
        return;
    }
    struct reg_create *x = calloc(1, sizeof(*x));
    if (x == NULL) {
        api_reply_err(w, KHO_ENOMEM, NULL, 0);
        return;
    }
    w->op_state = x;
    size_t n_members = api_members(a, x->members, NODE_NODES_MAX);
    if (q->replicas != 0 && want > n_members) {
        api_reply_errf(w, KHO_EINVAL, 0,
                   "%u replicas asked for, the cluster has %zu nodes", want,
                   n_members);
        return;
    }
    want = want < n_members ? want : (uint32_t)n_members;
    uint64_t home = 0;
    if (q->home != NULL && q->home[0] != '\0') {
        home = api_member_named(a, x->members, n_members, q->home);
        if (home == 0) {
            api_reply_errf(w, KHO_ENOTFOUND, 0,
                           "no member named '%s' to be the home node",
                           q->home);
            return;
        }
    }
    size_t n_regs = 0;
    struct plan *p = api_plan_load(w, x->regs, &n_regs);
    if (p == NULL) {
        return;
    }
    size_t n_names = 0;
    for (size_t i = 0; i < n_regs; i++) {
        n_names += x->regs[i].shard == 0;
    }
    if (n_names >= NODE_REGISTRIES_MAX ||
        n_regs + shards > NODE_SHARD_ENTRIES_MAX) {
        api_reply_errf(w, KHO_ENOSPC, 0,
                   "the cluster holds %zu registries of %zu shards in all; "
                   "at most %u registries and %u shards fit",
                   n_names, n_regs, NODE_REGISTRIES_MAX,
                   NODE_SHARD_ENTRIES_MAX);
        plan_free(p);
        return;
    }
    /* Today's load of every member, then the new shards placed on it. */
    plan_nodes(p, x->members, n_members, x->nodes);
    plan_free(p);
    x->mr.want = want;
    x->mr.n_shards = shards;
    x->mr.home = home;
    int rc = meta_place(x->nodes, n_members, q->registry, &x->mr);
    if (rc != KHO_OK) {
        api_reply_err(w, rc, "cannot place the shards on the members", 0);
        return;
    }
    size_t name_len = strlen(q->registry);
    memcpy(x->key, META_REG_PREFIX, META_REG_PREFIX_BYTES);
    memcpy(x->key + META_REG_PREFIX_BYTES, q->registry, name_len);
    struct store_compare cmp = {
        .target = STORE_CMP_VERSION,
        .op = STORE_CMP_EQ,
        .key = x->key,
        .key_len = META_REG_PREFIX_BYTES + name_len,
    };
    struct store_op op = {
        .op = STORE_OP_PUT,
        .key = x->key,
        .key_len = cmp.key_len,
        .value = x->val,
        .value_len = meta_reg_encode(&x->mr, x->val),
    };
    api_propose_txn(w, NODE_META_GROUP, STORE_REQ_SINGLE, &cmp, 1, &op, 1);
}

/* --- Validation and routing --------------------------------------------- */

static int check_key(const ProtobufCBinaryData *k, bool may_be_empty,
                     const char *what, char *why, size_t why_len)
{
    if (k->len == 0 && !may_be_empty) {
        snprintf(why, why_len, "empty %s", what);
        return KHO_EINVAL;
    }
    if (k->len > STORE_KEY_BYTES_MAX) {
        snprintf(why, why_len, "%s longer than %u bytes", what,
                 STORE_KEY_BYTES_MAX);
        return KHO_ETOOLARGE;
    }
    return KHO_OK;
}

static int check_value(size_t len, char *why, size_t why_len)
{
    if (len > STORE_VALUE_BYTES_MAX) {
        snprintf(why, why_len, "value of %zu bytes, over the %u-byte limit",
                 len, STORE_VALUE_BYTES_MAX);
        return KHO_ETOOLARGE;
    }
    return KHO_OK;
}

static int validate_txn(const Kho__Api__Request *q, char *why, size_t why_len)
{
    if (q->n_compares > STORE_TXN_CMPS_MAX || q->n_ops > STORE_TXN_OPS_MAX) {
        snprintf(why, why_len, "a transaction holds at most %u compares and "
                 "%u ops", STORE_TXN_CMPS_MAX, STORE_TXN_OPS_MAX);
        return KHO_ETOOLARGE;
    }
    if (q->n_ops == 0 && q->n_compares == 0) {
        snprintf(why, why_len, "empty transaction");
        return KHO_EINVAL;
    }
    int rc = KHO_OK;
    for (size_t i = 0; rc == KHO_OK && i < q->n_compares; i++) {
        const Kho__Api__Compare *c = q->compares[i];
        rc = check_key(&c->key, false, "compare key", why, why_len);
        if (rc == KHO_OK) {
            rc = check_value(c->value.len, why, why_len);
        }
        if (rc == KHO_OK && ((unsigned)c->target > STORE_CMP_VALUE ||
                             (unsigned)c->op > STORE_CMP_GT)) {
            snprintf(why, why_len, "compare %zu: unknown target or operator",
                     i + 1);
            rc = KHO_EINVAL;
        }
    }
    for (size_t i = 0; rc == KHO_OK && i < q->n_ops; i++) {
        rc = check_key(&q->ops[i]->key, false, "op key", why, why_len);
        if (rc == KHO_OK) {
            rc = check_value(q->ops[i]->value.len, why, why_len);
        }
    }
    return rc;
}

static int validate(const Kho__Api__Request *q, char *why, size_t why_len)
{
    switch (q->op) {
    case KHO__API__OP__OP_PUT:
    case KHO__API__OP__OP_DELETE:
        if ((unsigned)q->cond > KHO__API__COND__COND_IF_REVISION) {
            snprintf(why, why_len, "unknown precondition");
            return KHO_EINVAL;
        }
        if (q->op == KHO__API__OP__OP_DELETE &&
            q->cond == KHO__API__COND__COND_IF_ABSENT) {
            snprintf(why, why_len, "delete with if-absent makes no sense");
            return KHO_EINVAL;
        }
        int rc = check_value(q->value.len, why, why_len);
        if (rc != KHO_OK) {
            return rc;
        }
        return check_key(&q->key, false, "key", why, why_len);
    case KHO__API__OP__OP_GET:
    case KHO__API__OP__OP_HISTORY:
        return check_key(&q->key, false, "key", why, why_len);
    case KHO__API__OP__OP_SCAN: {
        int r = check_key(&q->key, true, "range start", why, why_len);
        if (r == KHO_OK) {
            r = check_key(&q->range_end, true, "range end", why, why_len);
        }
        if (r == KHO_OK) {
            r = check_key(&q->prefix, true, "prefix", why, why_len);
        }
        if (r == KHO_OK) {
            r = check_key(&q->token, true, "token", why, why_len);
        }
        if (r == KHO_OK && q->prefix.len > 0 &&
            (q->key.len > 0 || q->range_end.len > 0)) {
            snprintf(why, why_len, "a scan takes a prefix or a range, not "
                                   "both");
            r = KHO_EINVAL;
        }
        return r;
    }
    case KHO__API__OP__OP_TXN:
        return validate_txn(q, why, why_len);
    default:
        snprintf(why, why_len, "unknown operation %d", (int)q->op);
        return KHO_EINVAL;
    }
}

/* The shard of a transaction: every compare's and op's key must map to the
 * same one. Replies and returns false when they do not. */
static bool txn_shard(struct worker *w, uint32_t shards, uint32_t *out)
{
    const Kho__Api__Request *q = w->rq;
    bool any = false;
    for (size_t i = 0; i < q->n_compares + q->n_ops; i++) {
        const ProtobufCBinaryData *k = i < q->n_compares
                                           ? &q->compares[i]->key
                                           : &q->ops[i - q->n_compares]->key;
        uint32_t s = kho_shard_of(k->data, k->len, shards);
        if (any && s != *out) {
            api_reply_errf(w, KHO_EINVAL, 0,
                           "transaction spans shards %u and %u of registry "
                           "'%s'; a transaction's keys must all be in one "
                           "shard",
                           *out < s ? *out : s, *out < s ? s : *out,
                           q->registry);
            return false;
        }
        *out = s;
        any = true;
    }
    return true;
}

/* Finds the shard a data request goes to - by its key, the shard a scan
 * names, or the one shard of a transaction's keys - and checks it lives
 * here; replies (redirecting when it can) and returns false otherwise. */
static bool route(struct worker *w, struct node_registry *reg)
{
    struct api *a = w->api;
    const Kho__Api__Request *q = w->rq;
    const char *name = q->registry;
    struct node_registry r0;
    if (node_registry(a->node, name, &r0) != KHO_OK) {
        uint64_t meta = node_leader_of(a->node, NODE_META_GROUP);
        if (meta == node_id(a->node)) {
            api_reply_errf(w, KHO_ENOTFOUND, 0, "unknown registry '%s'", name);
        } else if (meta != 0) {
            api_reply_errf(w, KHO_ENOTLEADER, meta,
                       "registry '%s' is unknown here; the meta leader "
                       "knows every registry",
                       name);
        } else {
            api_reply_errf(w, KHO_EUNAVAILABLE, 0,
                       "registry '%s' is unknown here and the meta group "
                       "has no leader to ask",
                       name);
        }
        return false;
    }
    w->shards = r0.n_shards;
    uint32_t shard = 0;
    if (q->op == KHO__API__OP__OP_SCAN) {
        if (q->shard == 0 && r0.n_shards > 1) {
            api_reply_errf(w, KHO_EINVAL, 0,
                           "registry '%s' has %u shards: a scan names one "
                           "(libkho merges them)",
                           name, r0.n_shards);
            return false;
        }
        shard = q->shard > 0 ? q->shard - 1 : 0;
        if (shard >= r0.n_shards) {
            api_reply_errf(w, KHO_EINVAL, 0,
                           "registry '%s' has %u shards (1 to %u on the "
                           "wire)",
                           name, r0.n_shards, r0.n_shards);
            return false;
        }
    } else if (q->op == KHO__API__OP__OP_TXN) {
        if (!txn_shard(w, r0.n_shards, &shard)) {
            return false;
        }
    } else {
        shard = kho_shard_of(q->key.data, q->key.len, r0.n_shards);
    }
    if (shard == 0) {
        *reg = r0;
    } else if (node_shard(a->node, name, shard, reg) != KHO_OK) {
        api_reply_errf(w, KHO_EUNAVAILABLE, 0,
                       "shard %u of registry '%s' is missing from this "
                       "node's table",
                       shard, name);
        return false;
    }
    if (!reg->local) {
        api_reply_errf(w, KHO_ENOTLEADER, reg->replicas[0],
                       "shard %u of registry '%s' is not hosted on this node",
                       shard, name);
        return false;
    }
    return true;
}

static void serve_read(struct worker *w, uint64_t gid)
{
    switch (w->rq->op) {
    case KHO__API__OP__OP_GET:
        serve_get(w, gid);
        break;
    case KHO__API__OP__OP_SCAN:
        serve_scan(w, gid);
        break;
    case KHO__API__OP__OP_HISTORY:
        serve_history(w, gid);
        break;
    default:
        serve_registries(w);
        break;
    }
}

static bool is_read(const Kho__Api__Request *q)
{
    return q->op == KHO__API__OP__OP_GET || q->op == KHO__API__OP__OP_SCAN ||
           q->op == KHO__API__OP__OP_HISTORY ||
           q->op == KHO__API__OP__OP_REGISTRY_LIST ||
           q->op == KHO__API__OP__OP_REGISTRY_DESCRIBE;
}

static void serve_data(struct worker *w)
{
    const Kho__Api__Request *q = w->rq;
    char why[256];
    int rc = validate(q, why, sizeof(why));
    if (rc != KHO_OK) {
        api_reply_err(w, rc, why, 0);
        return;
    }
    struct node_registry reg;
    if (!route(w, &reg)) {
        return;
    }
    uint64_t floor = 0;
    if (is_read(q) && q->serializable) {
        serve_read(w, reg.group_id);
    } else if (q->op == KHO__API__OP__OP_GET &&
               node_lease_floor(w->api->node, reg.group_id, &floor) &&
               serve_get_from(w, reg.group_id, floor)) {
        /* Answered here from the leader's lease, as the raft thread would
         * have (a get with the store behind the floor goes to it). */
    } else if (is_read(q)) {
        api_submit(w, NODE_REQ_READ, reg.group_id, NULL, 0);
    } else if (q->op == KHO__API__OP__OP_TXN) {
        propose_txn(w, reg.group_id);
    } else {
        propose_single(w, reg.group_id);
    }
}

static void serve(struct worker *w, nng_msg *m)
{
    w->rq = kho__api__request__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
    nng_msg_free(m);
    if (w->rq == NULL) {
        api_reply_err(w, KHO_EINVAL, "malformed request", 0);
        return;
    }
    const Kho__Api__Request *q = w->rq;
    switch (q->op) {
    case KHO__API__OP__OP_STATUS:
        reply_status(w);
        break;
    case KHO__API__OP__OP_REGISTRY_CREATE:
        propose_registry(w);
        break;
    case KHO__API__OP__OP_REGISTRY_LIST:
    case KHO__API__OP__OP_REGISTRY_DESCRIBE:
        if (q->serializable) {
            serve_registries(w);
        } else {
            api_submit(w, NODE_REQ_READ, NODE_META_GROUP, NULL, 0);
        }
        break;
    default:
        if (!api_member_serve(w) && !api_admin_serve(w) &&
            !api_shard_serve(w)) {
            serve_data(w);
        }
        break;
    }
}

/* --- Answers from the raft thread ----------------------------------------- */

static void answer_registry_create(struct worker *w,
                                   const struct store_apply_result *res)
{
    const Kho__Api__Request *q = w->rq;
    if (res->result == KHO_ECONFLICT) {
        api_reply_errf(w, KHO_EEXIST, 0, "registry '%s' already exists",
                   q->registry);
        return;
    }
    if (res->result != KHO_OK) {
        api_reply_err(w, res->result, NULL, 0);
        return;
    }
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    rs.revision = res->revision;
    api_reply(w, &rs);
}

static const char *result_message(const Kho__Api__Request *q, int result)
{
    switch (result) {
    case KHO_ECONFLICT:
        return q->op == KHO__API__OP__OP_TXN ? "a compare failed"
                                             : "precondition failed";
    case KHO_ENOTFOUND:
        return "key not found";
    case KHO_ESTALE:
        return "a newer request of this session was applied";
    case KHO_EBUSY:
        return "too many client sessions on this registry; retry later";
    default:
        return NULL;
    }
}

static void node_answered(struct worker *w)
{
    struct node_req *r = &w->req;
    const Kho__Api__Request *q = w->rq;
    if (api_member_answered(w) || api_admin_answered(w) ||
        api_shard_answered(w)) {
        return;
    }
    if (r->err != KHO_OK) {
        api_reply_err(w, r->err,
                  r->err == KHO_ENOTLEADER && r->leader == 0
                      ? "no leader known for this group yet"
                      : NULL,
                  r->leader);
        return;
    }
    if (r->kind == NODE_REQ_READ) {
        serve_read(w, r->group_id);
        return;
    }
    if (q->op == KHO__API__OP__OP_REGISTRY_CREATE) {
        answer_registry_create(w, &r->res);
        return;
    }
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    rs.err = (uint32_t)r->res.result;
    rs.message = (char *)result_message(q, r->res.result);
    if (rs.message == NULL) {
        rs.message = (char *)kho_strerror(r->res.result);
    }
    rs.version = r->res.version;
    rs.revision = r->res.revision;
    rs.failed_compare = r->res.failed_cmp;
    api_reply(w, &rs);
}

static void release(struct worker *w)
{
    if (w->rq != NULL) {
        kho__api__request__free_unpacked(w->rq, NULL);
        w->rq = NULL;
    }
    free(w->prop);
    w->prop = NULL;
    free(w->op_state);
    w->op_state = NULL;
    w->req.target = 0;
    w->shards = 0;
}

static void worker_cb(void *arg)
{
    struct worker *w = arg;
    int rv = nng_aio_result(w->aio);
    if (atomic_load(&w->api->closing)) {
        if (w->state == W_SEND && rv != 0) {
            nng_msg_free(nng_aio_get_msg(w->aio));
        }
        release(w);
        return;
    }
    switch (w->state) {
    case W_RECV:
        if (rv != 0) {
            nng_ctx_recv(w->ctx, w->aio);
            return;
        }
        w->start_us = metrics_now_us();
        serve(w, nng_aio_get_msg(w->aio));
        break;
    case W_NODE:
        node_answered(w);
        break;
    case W_SEND:
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(w->aio));
        }
        release(w);
        w->state = W_RECV;
        nng_ctx_recv(w->ctx, w->aio);
        break;
    }
}

/* --- Lifecycle ---------------------------------------------------------- */

static int listen_on(struct api *a, const char *url)
{
    int rv = nng_rep0_open(&a->sock);
    if (rv == 0) {
        rv = nng_listener_create(&a->listener, a->sock, url);
    }
    if (rv == 0) {
        rv = nng_listener_set_size(a->listener, NNG_OPT_RECVMAXSZ,
                                   API_REQUEST_BYTES_MAX);
    }
    if (rv == 0) {
        rv = nng_listener_start(a->listener, 0);
    }
    for (size_t i = 0; rv == 0 && i < API_WORKERS; i++) {
        struct worker *w = &a->workers[i];
        w->api = a;
        rv = nng_aio_alloc(&w->aio, worker_cb, w);
        if (rv == 0) {
            rv = nng_ctx_open(&w->ctx, a->sock);
            if (rv != 0) {
                nng_aio_free(w->aio);
            }
        }
        if (rv == 0) {
            a->n_workers++;
        }
    }
    return rv;
}

int api_open(const struct api_config *c, struct api **out, char *err,
             size_t err_len)
{
    struct api *a = calloc(1, sizeof(*a));
    struct node_peer *peers = calloc(c->n_peers, sizeof(*peers));
    if (a == NULL || peers == NULL) {
        free(a);
        free(peers);
        snprintf(err, err_len, "out of memory");
        return KHO_ENOMEM;
    }
    memcpy(peers, c->peers, c->n_peers * sizeof(*peers));
    a->node = c->node;
    a->st = c->st;
    a->peers = peers;
    a->n_peers = c->n_peers;
    a->quota_bytes = c->quota_bytes;
    pthread_mutex_init(&a->space_mu, NULL);
    int rv = listen_on(a, c->url);
    if (rv != 0) {
        snprintf(err, err_len, "client listener on %s: %s", c->url,
                 nng_strerror(rv));
        api_close(a);
        return rv == NNG_EADDRINUSE ? KHO_EBUSY
               : rv == NNG_EADDRINVAL || rv == NNG_EINVAL ||
                       rv == NNG_ENOTSUP
                   ? KHO_EINVAL
                   : KHO_EIO;
    }
    for (size_t i = 0; i < a->n_workers; i++) {
        a->workers[i].state = W_RECV;
        nng_ctx_recv(a->workers[i].ctx, a->workers[i].aio);
    }
    *out = a;
    return KHO_OK;
}

void api_close(struct api *a)
{
    if (a == NULL) {
        return;
    }
    atomic_store(&a->closing, true);
    nng_close(a->sock);
    for (size_t i = 0; i < a->n_workers; i++) {
        nng_aio_stop(a->workers[i].aio);
    }
    for (size_t i = 0; i < a->n_workers; i++) {
        release(&a->workers[i]);
        nng_ctx_close(a->workers[i].ctx);
        nng_aio_free(a->workers[i].aio);
    }
    api_admin_close(a);
    pthread_mutex_destroy(&a->space_mu);
    free(a->peers);
    free(a);
}

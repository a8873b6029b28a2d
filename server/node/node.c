/*
 * node.c - see node.h.
 */
#include "node.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/log.h"
#include "../common/clock.h"
#include "meta.h"
#include "snapxfer.h"

/* An assertion that stays on in release builds: a failed invariant here is
 * a bug in kho, never bad input. */
#define NODE_ASSERT(cond)                                                      \
    do {                                                                       \
        if (!(cond)) {                                                         \
            LOGE("assertion failed at %s:%d: %s", __FILE__, __LINE__, #cond); \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* What the transport hands the raft thread: a batch of raft messages (with
 * the payload of a snapshot that arrived in chunks, owned here), or an
 * acknowledgement of snapshot chunks. */
struct inbatch {
    struct codec_batch b;
    uint8_t *owned;
    bool is_ack;
    uint64_t from;
    struct net_chunk_ack ack;
    struct inbatch *next;
};

static void inbatch_free(struct inbatch *ib)
{
    if (!ib->is_ack) {
        codec_batch_free(&ib->b);
    }
    free(ib->owned);
    free(ib);
}

struct group {
    uint64_t id;
    char registry[NODE_REGISTRY_BYTES];
    struct raft *raft;
    struct store_group *sg;
    struct node_req *props; /* pending proposals */
    struct node_req *reads; /* pending reads */
    size_t n_pending;
    uint64_t applied;
    uint64_t compact_retry; /* after a failed compaction: not before this */
    uint64_t log_bytes;     /* entry bytes appended since the last snapshot
                               (counted from this process's start) */
    /* Per loop: the ready batch and the apply outcomes. */
    bool has_rd;
    struct raft_ready rd;
    struct store_apply_result *results;
    size_t results_cap;
    /* For node_group_metrics(): the leader last published. */
    uint64_t seen_leader, leader_changes;
    /* When the core last reported each member active (NODE_ACTIVE_HOLD_MS;
     * id 0: a free slot). */
    struct {
        uint64_t id, ms;
    } seen_active[RAFT_MEMBERS_MAX];
};

/* Counters of the raft thread (node_metrics()): written by it alone,
 * atomics so that the HTTP server reads them without a lock. */
struct node_counters {
    atomic_uint_fast64_t proposals, proposals_refused, reads, entries_applied;
    struct metrics_hist commit_latency, apply_latency;
};

struct node {
    uint64_t id;
    char name[NODE_NAME_BYTES];
    struct store *st;
    struct net *net;
    struct group groups[NODE_GROUPS_MAX]; /* [0] is the meta group */
    size_t n_groups;                      /* changed by the raft thread only */
    struct raft_conf initial;
    uint64_t meta_seen; /* meta applied index the registry table reflects */
    struct node_peer peers[RAFT_MEMBERS_MAX]; /* the initial cluster */
    size_t n_peers;
    /* The meta leader's own proposal recording the nodes (raft thread). */
    struct node_req meta_req;
    uint8_t *meta_buf;
    bool meta_busy;
    uint64_t nodes_term; /* the term in which node records were checked */

    /* The registry and node tables, read by request threads. */
    pthread_rwlock_t reg_mu;
    struct node_registry regs[NODE_REGISTRIES_MAX];
    size_t n_regs;
    struct node_peer nodes[NODE_NODES_MAX];
    size_t n_nodes;
    /* Nodes the transport knows (raft thread only). */
    uint64_t net_ids[NET_PEERS_MAX];
    size_t n_net_ids;
    uint64_t next_reconcile_ms;
    uint32_t compact_entries;
    uint64_t compact_bytes;
    struct xfer *xfer; /* snapshots streamed to and from peers */

    pthread_t thread;
    bool started;

    pthread_mutex_t mu; /* guards the fields below */
    pthread_cond_t cv;
    bool stopping;
    struct inbatch *in_head, *in_tail;
    struct node_req *req_head, *req_tail;
    size_t queued;
    uint64_t next_req_id;

    pthread_mutex_t status_mu;
    struct node_group_status status[NODE_GROUPS_MAX];
    size_t n_status;
    struct node_group_metrics gmetrics[NODE_GROUPS_MAX]; /* under status_mu */
    struct node_counters counters;

    /* Scratch for grouping outgoing messages by peer. */
    struct raft_msg *out;
    size_t out_cap;
};

static void raft_panic_cb(void *ctx, const char *what, uint64_t group_id,
                          raft_id id, uint64_t term, uint64_t index)
{
    LOGE("raft invariant failed: %s (group %llu node %llu term %llu index "
         "%llu)",
         what, (unsigned long long)group_id, (unsigned long long)id,
         (unsigned long long)term, (unsigned long long)index);
}

/* --- Set-up ------------------------------------------------------------- */

static int bootstrap_group(struct node *n, uint64_t gid,
                           const struct raft_conf *conf, char *err,
                           size_t err_len)
{
    struct store_batch *b = NULL;
    int rc = store_write_begin(n->st, &b);
    if (rc == KHO_OK) {
        rc = store_batch_group_create(b, gid, conf);
    }
    if (rc == KHO_OK) {
        rc = store_write_commit(b);
    } else {
        store_write_abort(b);
    }
    if (rc != KHO_OK) {
        snprintf(err, err_len, "creating group %llu: %s",
                 (unsigned long long)gid, store_errmsg(n->st));
    }
    return rc;
}

/* Opens group g->id, bootstrapping it with `conf` on first use. */
static int open_group(struct node *n, struct group *g,
                      const struct raft_conf *conf, char *err, size_t err_len)
{
    struct raft_config c;
    raft_config_defaults(&c);
    int rc = store_group_load(n->st, g->id, &c.hs, &c.applied);
    if (rc == KHO_ENOTFOUND) {
        LOGI("bootstrapping group %llu (%s) with %u voters",
             (unsigned long long)g->id, g->registry, conf->n);
        rc = bootstrap_group(n, g->id, conf, err, err_len);
        if (rc != KHO_OK) {
            return rc;
        }
        rc = store_group_load(n->st, g->id, &c.hs, &c.applied);
    }
    if (rc == KHO_OK) {
        rc = store_group_open(n->st, g->id, &g->sg);
    }
    if (rc != KHO_OK) {
        snprintf(err, err_len, "loading group %llu: %s",
                 (unsigned long long)g->id, store_errmsg(n->st));
        return rc;
    }
    c.id = n->id;
    c.group_id = g->id;
    c.election_ticks = NODE_ELECTION_TICKS;
    c.heartbeat_ticks = NODE_HEARTBEAT_TICKS;
    c.seed = clock_mono_ms() ^ (n->id * UINT64_C(0x9e3779b97f4a7c15)) ^ g->id;
    c.storage = store_raft_storage(g->sg);
    c.panic = raft_panic_cb;
    c.panic_ctx = n;
    g->applied = c.applied;
    const char *why = NULL;
    rc = raft_create(&c, &g->raft, &why);
    if (rc != KHO_OK) {
        snprintf(err, err_len, "starting raft for group %llu: %s",
                 (unsigned long long)g->id,
                 why != NULL ? why : kho_strerror(rc));
        return rc;
    }
    LOGI("group %llu (%s): term %llu, commit %llu, applied %llu",
         (unsigned long long)g->id, g->registry,
         (unsigned long long)c.hs.term, (unsigned long long)c.hs.commit,
         (unsigned long long)c.applied);
    return KHO_OK;
}

/* --- The registry table ------------------------------------------------ */

struct reg_scan {
    struct node_registry *out;
    size_t n, cap;
    size_t bad;
};

static int reg_scan_cb(void *ctx, const struct store_record *r)
{
    struct reg_scan *rs = ctx;
    if (rs->n >= rs->cap) {
        return KHO_ETOOLARGE;
    }
    struct node_registry *g = &rs->out[rs->n];
    memset(g, 0, sizeof(*g));
    size_t name_len = r->key_len - META_REG_PREFIX_BYTES;
    struct meta_reg mr;
    if (name_len == 0 || name_len >= sizeof(g->name) ||
        meta_reg_decode(r->value, r->value_len, &mr) != KHO_OK ||
        mr.n_initial > NODE_REPLICAS_MAX || mr.n_replicas > NODE_REPLICAS_MAX) {
        rs->bad++;
        return KHO_OK;
    }
    g->n_initial = mr.n_initial;
    memcpy(g->initial, mr.initial, mr.n_initial * sizeof(mr.initial[0]));
    g->n_replicas = mr.n_replicas;
    memcpy(g->replicas, mr.replicas, mr.n_replicas * sizeof(mr.replicas[0]));
    g->mod_rev = r->mod_rev;
    memcpy(g->name, r->key + META_REG_PREFIX_BYTES, name_len);
    size_t wl = r->writer_len < sizeof(g->creator) - 1 ? r->writer_len
                                                        : sizeof(g->creator) - 1;
    memcpy(g->creator, r->writer, wl);
    g->group_id = r->create_rev;
    g->created_ms = r->time_ms;
    rs->n++;
    return KHO_OK;
}

/* Walks the meta group's committed records whose keys start with `prefix`
 * (a short prefix ending in '/'), at most `limit` of them. */
static int scan_meta(struct node *n, const char *prefix, uint32_t limit,
                     store_record_cb cb, void *ctx, bool *more)
{
    uint8_t end[META_PREFIX_BYTES_MAX];
    size_t len = strlen(prefix);
    NODE_ASSERT(len > 0 && len <= sizeof(end) && prefix[len - 1] == '/');
    memcpy(end, prefix, len);
    end[len - 1] = '/' + 1; /* the first key after every "prefix..." */
    struct store_scan q = {
        .start = (const uint8_t *)prefix,
        .start_len = len,
        .end = end,
        .end_len = len,
        .limit = limit,
        .max_bytes = SIZE_MAX,
    };
    return store_kv_scan(n->st, NODE_META_GROUP, &q, cb, ctx, more, NULL);
}

/* Reads every registry record of the meta group from the store. */
static int load_registries(struct node *n, struct node_registry *out,
                           size_t cap, size_t *count)
{
    struct reg_scan rs = {.out = out, .cap = cap};
    bool more = false;
    int rc = scan_meta(n, META_REG_PREFIX, (uint32_t)cap, reg_scan_cb, &rs,
                       &more);
    if (rc != KHO_OK) {
        return rc;
    }
    if (rs.bad > 0) {
        LOGE("meta group: %zu malformed registry records ignored", rs.bad);
    }
    if (more) {
        LOGE("meta group: more than %zu registries; the rest are ignored",
             cap);
    }
    *count = rs.n;
    return KHO_OK;
}

static bool is_replica(const struct node *n, const struct node_registry *r)
{
    for (uint32_t i = 0; i < r->n_replicas; i++) {
        if (r->replicas[i] == n->id) {
            return true;
        }
    }
    return false;
}

static struct group *find_group(struct node *n, uint64_t gid);

/* Creates the local replica of registry r (raft thread or start-up). */
static int add_group(struct node *n, const struct node_registry *r)
{
    if (n->n_groups >= NODE_GROUPS_MAX) {
        LOGE("registry %s: this node already hosts %u groups; not hosted",
             r->name, NODE_GROUPS_MAX);
        return KHO_ETOOLARGE;
    }
    /* The initial replicas bootstrap the group; a later one starts empty
     * and waits for the group's leader to add it. */
    struct raft_conf conf = {.n = 0};
    for (uint32_t i = 0; i < r->n_initial; i++) {
        if (r->initial[i] == n->id) {
            conf.n = r->n_initial;
        }
    }
    for (uint32_t i = 0; i < conf.n; i++) {
        conf.members[i].id = r->initial[i];
        conf.members[i].role = RAFT_VOTER;
    }
    struct group *g = &n->groups[n->n_groups];
    memset(g, 0, sizeof(*g));
    g->id = r->group_id;
    snprintf(g->registry, sizeof(g->registry), "%s", r->name);
    char err[256] = "";
    int rc = open_group(n, g, &conf, err, sizeof(err));
    if (rc != KHO_OK) {
        LOGE("registry %s: %s", r->name, err);
        if (g->raft != NULL) {
            raft_destroy(g->raft);
        }
        if (g->sg != NULL) {
            store_group_close(g->sg);
        }
        memset(g, 0, sizeof(*g));
        return rc;
    }
    n->n_groups++;
    return KHO_OK;
}

static bool net_knows(const struct node *n, uint64_t id)
{
    for (size_t i = 0; i < n->n_net_ids; i++) {
        if (n->net_ids[i] == id) {
            return true;
        }
    }
    return false;
}

/* Makes the transport dial every node it does not know yet. */
static void net_learn(struct node *n, const struct node_peer *p, size_t k)
{
    for (size_t i = 0; n->net != NULL && i < k; i++) {
        if (p[i].id == n->id || net_knows(n, p[i].id) ||
            p[i].state == META_NODE_REMOVED ||
            n->n_net_ids >= NET_PEERS_MAX) {
            continue;
        }
        int rc = net_add_peer(n->net, p[i].id, p[i].peer_url);
        if (rc != KHO_OK) {
            LOGE("cannot reach node %llu (%s) at %s: %s",
                 (unsigned long long)p[i].id, p[i].name, p[i].peer_url,
                 kho_strerror(rc));
            continue;
        }
        LOGI("peer node %llu (%s) at %s", (unsigned long long)p[i].id,
             p[i].name, p[i].peer_url);
        n->net_ids[n->n_net_ids++] = p[i].id;
    }
}

/* Refreshes the node table from the meta group and dials new nodes. */
static void sync_nodes(struct node *n)
{
    static struct node_peer fresh[NODE_NODES_MAX];
    size_t k = 0;
    if (node_load_nodes(n, fresh, NODE_NODES_MAX, &k) != KHO_OK) {
        return;
    }
    net_learn(n, fresh, k);
    pthread_rwlock_wrlock(&n->reg_mu);
    memcpy(n->nodes, fresh, k * sizeof(fresh[0]));
    n->n_nodes = k;
    pthread_rwlock_unlock(&n->reg_mu);
}

/* Brings the registry table and the local groups up to the meta group's
 * state in the store. */
static void sync_registries(struct node *n)
{
    sync_nodes(n);
    static struct node_registry fresh[NODE_REGISTRIES_MAX];
    size_t count = 0;
    int rc = load_registries(n, fresh, NODE_REGISTRIES_MAX, &count);
    if (rc != KHO_OK) {
        LOGE("reading the registries of the meta group: %s (%s)",
             kho_strerror(rc), store_errmsg(n->st));
        return;
    }
    for (size_t i = 0; i < count; i++) {
        struct node_registry *r = &fresh[i];
        if (!is_replica(n, r)) {
            continue;
        }
        if (find_group(n, r->group_id) == NULL) {
            LOGI("registry %s: hosting group %llu (%u replicas)", r->name,
                 (unsigned long long)r->group_id, r->n_replicas);
            if (add_group(n, r) != KHO_OK) {
                continue;
            }
        }
        r->local = true;
    }
    pthread_rwlock_wrlock(&n->reg_mu);
    memcpy(n->regs, fresh, count * sizeof(fresh[0]));
    n->n_regs = count;
    pthread_rwlock_unlock(&n->reg_mu);
}

struct node_scan {
    struct node_peer *out;
    size_t n, cap;
};

static int node_scan_cb(void *ctx, const struct store_record *r)
{
    struct node_scan *ns = ctx;
    if (ns->n >= ns->cap) {
        LOGE("meta group: more than %zu node records; the rest are ignored",
             ns->cap);
        return KHO_ETOOLARGE;
    }
    struct node_peer *p = &ns->out[ns->n];
    p->id = meta_node_key_id(r->key, r->key_len);
    if (p->id == 0 ||
        meta_node_decode(r->value, r->value_len, p->name, sizeof(p->name),
                         p->peer_url, p->client_url, sizeof(p->peer_url),
                         &p->state) != KHO_OK) {
        LOGE("meta group: a malformed node record is ignored");
        return KHO_OK;
    }
    ns->n++;
    return KHO_OK;
}

int node_load_nodes(struct node *n, struct node_peer *out, size_t cap,
                    size_t *count)
{
    struct node_scan ns = {.out = out, .cap = cap};
    bool more = false;
    int rc = scan_meta(n, META_NODE_PREFIX, STORE_SCAN_LIMIT_MAX, node_scan_cb,
                       &ns, &more);
    *count = ns.n;
    return rc == KHO_ENOTFOUND || rc == KHO_ETOOLARGE ? KHO_OK : rc;
}

int node_load_registries(struct node *n, struct node_registry *out,
                         size_t cap, size_t *count)
{
    int rc = load_registries(n, out, cap, count);
    for (size_t i = 0; rc == KHO_OK && i < *count; i++) {
        out[i].local = is_replica(n, &out[i]);
    }
    return rc;
}

uint64_t node_leader_of(struct node *n, uint64_t group_id)
{
    uint64_t leader = 0;
    pthread_mutex_lock(&n->status_mu);
    for (size_t i = 0; i < n->n_status; i++) {
        if (n->status[i].group_id == group_id) {
            leader = n->status[i].leader;
            break;
        }
    }
    pthread_mutex_unlock(&n->status_mu);
    return leader;
}

int node_registry(struct node *n, const char *name, struct node_registry *out)
{
    int rc = KHO_ENOTFOUND;
    pthread_rwlock_rdlock(&n->reg_mu);
    for (size_t i = 0; i < n->n_regs; i++) {
        if (strcmp(n->regs[i].name, name) == 0) {
            *out = n->regs[i];
            rc = KHO_OK;
            break;
        }
    }
    pthread_rwlock_unlock(&n->reg_mu);
    return rc;
}

size_t node_registries(struct node *n, struct node_registry *out, size_t cap)
{
    pthread_rwlock_rdlock(&n->reg_mu);
    size_t total = n->n_regs;
    memcpy(out, n->regs, (total < cap ? total : cap) * sizeof(*out));
    pthread_rwlock_unlock(&n->reg_mu);
    return total;
}

const struct raft_conf *node_members(const struct node *n)
{
    return &n->initial;
}

int node_create(const struct node_config *c, struct store *st,
                struct node **out, char *err, size_t err_len)
{
    if (!c->join && !raft_conf_is_voter(&c->initial, c->id)) {
        snprintf(err, err_len, "bad node configuration: node %llu is not "
                               "among the initial voters",
                 (unsigned long long)c->id);
        return KHO_EINVAL;
    }
    struct node *n = calloc(1, sizeof(*n));
    if (n == NULL) {
        snprintf(err, err_len, "out of memory");
        return KHO_ENOMEM;
    }
    n->id = c->id;
    snprintf(n->name, sizeof(n->name), "%s", c->name);
    n->st = st;
    n->initial = c->initial;
    n->compact_entries =
        c->compact_entries != 0 ? c->compact_entries : NODE_COMPACT_ENTRIES;
    n->compact_bytes =
        c->compact_bytes != 0 ? c->compact_bytes : NODE_COMPACT_BYTES;
    n->n_peers = c->n_peers < RAFT_MEMBERS_MAX ? c->n_peers : RAFT_MEMBERS_MAX;
    memcpy(n->peers, c->peers, n->n_peers * sizeof(n->peers[0]));
    pthread_mutex_init(&n->mu, NULL);
    pthread_mutex_init(&n->status_mu, NULL);
    pthread_rwlock_init(&n->reg_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&n->cv, &ca);
    pthread_condattr_destroy(&ca);
    struct group *meta = &n->groups[0];
    meta->id = NODE_META_GROUP;
    snprintf(meta->registry, sizeof(meta->registry), "(meta)");
    n->n_groups = 1;
    /* A joining node starts its meta group empty: the meta leader adds it
     * as a learner and sends it the log or a snapshot. */
    struct raft_conf none = {.n = 0};
    int rc = open_group(n, meta, c->join ? &none : &n->initial, err, err_len);
    if (rc != KHO_OK) {
        node_destroy(n);
        return rc;
    }
    n->meta_seen = meta->applied;
    sync_registries(n);
    *out = n;
    return KHO_OK;
}

static void on_snapshot(void *ctx, uint64_t from, struct codec_batch *b,
                        uint8_t *data);
static void on_chunk(void *ctx, uint64_t from, const struct net_chunk *c);
static void on_chunk_ack(void *ctx, uint64_t from,
                         const struct net_chunk_ack *a);

void node_set_net(struct node *n, struct net *net)
{
    n->net = net;
    if (xfer_create(net, on_snapshot, n, &n->xfer) != KHO_OK) {
        LOGE("no memory for snapshot transfers; snapshots will not reach "
             "lagging followers");
    } else {
        /* Before the first peer: no chunk can arrive earlier. */
        net_set_chunk_handlers(net, on_chunk, on_chunk_ack, n);
    }
    net_learn(n, n->peers, n->n_peers);
    sync_nodes(n);
}

void node_member_conf(struct node *n, struct raft_conf *out)
{
    memset(out, 0, sizeof(*out));
    pthread_rwlock_rdlock(&n->reg_mu);
    for (size_t i = 0; i < n->n_nodes; i++) {
        if (n->nodes[i].state == META_NODE_MEMBER) {
            out->members[out->n].id = n->nodes[i].id;
            out->members[out->n].role = RAFT_VOTER;
            out->n++;
        }
    }
    pthread_rwlock_unlock(&n->reg_mu);
    if (out->n == 0) {
        *out = n->initial;
    }
}

int node_peer_info(struct node *n, uint64_t id, struct node_peer *out)
{
    int rc = KHO_ENOTFOUND;
    pthread_rwlock_rdlock(&n->reg_mu);
    for (size_t i = 0; i < n->n_nodes; i++) {
        if (n->nodes[i].id == id) {
            *out = n->nodes[i];
            rc = KHO_OK;
        }
    }
    pthread_rwlock_unlock(&n->reg_mu);
    for (size_t i = 0; rc != KHO_OK && i < n->n_peers; i++) {
        if (n->peers[i].id == id) {
            *out = n->peers[i];
            rc = KHO_OK;
        }
    }
    return rc;
}

uint64_t node_id(const struct node *n)
{
    return n->id;
}

const char *node_name(const struct node *n)
{
    return n->name;
}

size_t node_status(struct node *n, struct node_group_status *out, size_t cap)
{
    pthread_mutex_lock(&n->status_mu);
    size_t k = n->n_status < cap ? n->n_status : cap;
    memcpy(out, n->status, k * sizeof(*out));
    pthread_mutex_unlock(&n->status_mu);
    return k;
}

size_t node_group_metrics(struct node *n, struct node_group_metrics *out,
                          size_t cap)
{
    pthread_mutex_lock(&n->status_mu);
    size_t k = n->n_status < cap ? n->n_status : cap;
    memcpy(out, n->gmetrics, k * sizeof(*out));
    pthread_mutex_unlock(&n->status_mu);
    return k;
}

void node_metrics(struct node *n, struct node_metrics *out)
{
    struct node_counters *c = &n->counters;
    out->proposals = atomic_load_explicit(&c->proposals, memory_order_relaxed);
    out->proposals_refused =
        atomic_load_explicit(&c->proposals_refused, memory_order_relaxed);
    out->reads = atomic_load_explicit(&c->reads, memory_order_relaxed);
    out->entries_applied =
        atomic_load_explicit(&c->entries_applied, memory_order_relaxed);
    metrics_hist_read(&c->commit_latency, &out->commit_latency);
    metrics_hist_read(&c->apply_latency, &out->apply_latency);
}

/* --- Inbound queue ------------------------------------------------------ */

static void enqueue_in(struct node *n, struct inbatch *ib)
{
    ib->next = NULL;
    pthread_mutex_lock(&n->mu);
    if (n->stopping || n->queued >= NODE_QUEUE_MAX) {
        pthread_mutex_unlock(&n->mu);
        inbatch_free(ib);
        return; /* Raft tolerates a lost message. */
    }
    if (n->in_tail != NULL) {
        n->in_tail->next = ib;
    } else {
        n->in_head = ib;
    }
    n->in_tail = ib;
    n->queued++;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

void node_on_batch(void *ctx, uint64_t from, struct codec_batch *b)
{
    struct inbatch *ib = calloc(1, sizeof(*ib));
    if (ib == NULL) {
        codec_batch_free(b);
        return;
    }
    ib->b = *b;
    ib->from = from;
    enqueue_in(ctx, ib);
}

/* A snapshot that arrived in chunks (receive thread). */
static void on_snapshot(void *ctx, uint64_t from, struct codec_batch *b,
                        uint8_t *data)
{
    struct inbatch *ib = calloc(1, sizeof(*ib));
    if (ib == NULL) {
        codec_batch_free(b);
        free(data);
        return;
    }
    ib->b = *b;
    ib->owned = data;
    ib->from = from;
    enqueue_in(ctx, ib);
}

static void on_chunk(void *ctx, uint64_t from, const struct net_chunk *c)
{
    struct node *n = ctx;
    xfer_on_chunk(n->xfer, from, c);
}

static void on_chunk_ack(void *ctx, uint64_t from,
                         const struct net_chunk_ack *a)
{
    struct inbatch *ib = calloc(1, sizeof(*ib));
    if (ib == NULL) {
        return;
    }
    ib->is_ack = true;
    ib->from = from;
    ib->ack = *a;
    enqueue_in(ctx, ib);
}

int node_submit(struct node *n, struct node_req *r)
{
    r->next_ = NULL;
    r->err = KHO_OK;
    r->leader = 0;
    memset(&r->res, 0, sizeof(r->res));
    pthread_mutex_lock(&n->mu);
    if (n->stopping) {
        pthread_mutex_unlock(&n->mu);
        return KHO_EUNAVAILABLE;
    }
    if (n->queued >= NODE_QUEUE_MAX) {
        pthread_mutex_unlock(&n->mu);
        return KHO_EBUSY;
    }
    r->id_ = ++n->next_req_id;
    r->deadline_ms_ = clock_mono_ms() + NODE_REQ_TIMEOUT_MS;
    if (n->req_tail != NULL) {
        n->req_tail->next_ = r;
    } else {
        n->req_head = r;
    }
    n->req_tail = r;
    n->queued++;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
    return KHO_OK;
}

/* --- Answering ---------------------------------------------------------- */

static void finish(struct node_req *r, int err, uint64_t leader)
{
    r->err = err;
    r->leader = leader;
    r->next_ = NULL;
    r->done_cb(r);
}

static uint64_t leader_of(const struct group *g)
{
    struct raft_status st;
    raft_status(g->raft, &st);
    return st.leader;
}

static struct group *find_group(struct node *n, uint64_t gid)
{
    for (size_t i = 0; i < n->n_groups; i++) {
        if (n->groups[i].id == gid) {
            return &n->groups[i];
        }
    }
    return NULL;
}

static void push(struct node_req **list, struct node_req *r)
{
    r->next_ = *list;
    *list = r;
}

static void transfer_away(struct group *g, uint64_t self);

static void handle_req(struct node *n, struct node_req *r)
{
    if (r->kind == NODE_REQ_DRAIN) {
        for (size_t i = 0; i < n->n_groups; i++) {
            transfer_away(&n->groups[i], n->id);
        }
        finish(r, KHO_OK, 0);
        return;
    }
    struct group *g = find_group(n, r->group_id);
    if (g == NULL) {
        finish(r, KHO_ENOTFOUND, 0);
        return;
    }
    if (g->n_pending >= NODE_PENDING_MAX) {
        finish(r, KHO_EBUSY, 0);
        return;
    }
    int rc;
    if (r->kind == NODE_REQ_TRANSFER) {
        rc = raft_transfer_leader(g->raft, r->target);
        finish(r, rc, rc == KHO_ENOTLEADER ? leader_of(g) : 0);
        return;
    }
    if (r->kind == NODE_REQ_PROPOSE) {
        rc = raft_propose(g->raft, r->data, r->len, &r->index_, &r->term_);
        if (rc == KHO_OK) {
            push(&g->props, r);
        }
        atomic_fetch_add_explicit(rc == KHO_OK
                                      ? &n->counters.proposals
                                      : &n->counters.proposals_refused,
                                  1, memory_order_relaxed);
    } else {
        r->index_ = 0;
        rc = raft_read_index(g->raft, r->id_);
        if (rc == KHO_OK) {
            push(&g->reads, r);
            atomic_fetch_add_explicit(&n->counters.reads, 1,
                                      memory_order_relaxed);
        }
    }
    if (rc == KHO_OK) {
        g->n_pending++;
        return;
    }
    finish(r, rc, rc == KHO_ENOTLEADER ? leader_of(g) : 0);
}

static void step_batch(struct node *n, struct codec_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        struct group *g = find_group(n, b->msgs[i].group_id);
        if (g == NULL) {
            LOGD("dropped a message for unknown group %llu",
                 (unsigned long long)b->msgs[i].group_id);
            continue;
        }
        int rc = raft_step(g->raft, &b->msgs[i]);
        if (rc != KHO_OK) {
            LOGE("group %llu: raft_step failed: %s; stopping",
                 (unsigned long long)g->id, kho_strerror(rc));
            abort();
        }
    }
}

/* Answers the proposals whose entries this loop applied, or whose index was
 * taken by another term's entry (the command was lost: the client retries
 * with the same session and seq). Cost: O(pending). */
static void answer_props(struct group *g)
{
    const struct raft_ready *rd = &g->rd;
    uint64_t lo = rd->n_committed > 0 ? rd->committed[0].index : 0;
    uint64_t hi = rd->n_committed > 0 ? lo + rd->n_committed : 0;
    struct node_req **pp = &g->props;
    while (*pp != NULL) {
        struct node_req *r = *pp;
        bool done = false;
        if (r->index_ >= lo && r->index_ < hi) {
            size_t k = (size_t)(r->index_ - lo);
            done = true;
            if (rd->committed[k].term == r->term_) {
                r->res = g->results[k];
                *pp = r->next_;
                g->n_pending--;
                finish(r, KHO_OK, 0);
                continue;
            }
        } else if (r->index_ <= g->applied) {
            done = true;
        }
        if (done) {
            *pp = r->next_;
            g->n_pending--;
            finish(r, KHO_ENOTLEADER, leader_of(g));
            continue;
        }
        pp = &r->next_;
    }
}

static void answer_reads(struct group *g)
{
    for (size_t i = 0; i < g->rd.n_reads; i++) {
        const struct raft_read_state *rs = &g->rd.reads[i];
        for (struct node_req *r = g->reads; r != NULL; r = r->next_) {
            if (r->id_ == rs->ctx && r->index_ == 0) {
                r->index_ = rs->index;
                r->err = rs->status;
                if (rs->status != KHO_OK) {
                    r->index_ = UINT64_MAX; /* answer below */
                }
            }
        }
    }
    struct node_req **pp = &g->reads;
    while (*pp != NULL) {
        struct node_req *r = *pp;
        if (r->index_ != 0 && (r->index_ == UINT64_MAX || r->index_ <= g->applied)) {
            *pp = r->next_;
            g->n_pending--;
            int err = r->index_ == UINT64_MAX ? r->err : KHO_OK;
            finish(r, err, err == KHO_ENOTLEADER ? leader_of(g) : 0);
            continue;
        }
        pp = &r->next_;
    }
}

static void expire_list(struct group *g, struct node_req **pp, uint64_t now)
{
    while (*pp != NULL) {
        struct node_req *r = *pp;
        if (now >= r->deadline_ms_) {
            *pp = r->next_;
            g->n_pending--;
            finish(r, KHO_ETIMEOUT, leader_of(g));
            continue;
        }
        pp = &r->next_;
    }
}

static void fail_all(struct group *g, int err)
{
    struct node_req *lists[2] = {g->props, g->reads};
    g->props = g->reads = NULL;
    for (int i = 0; i < 2; i++) {
        while (lists[i] != NULL) {
            struct node_req *r = lists[i];
            lists[i] = r->next_;
            finish(r, err, 0);
        }
    }
    g->n_pending = 0;
}

/* --- The ready cycle ------------------------------------------------------ */

static int reserve_results(struct group *g, size_t n)
{
    if (n <= g->results_cap) {
        return KHO_OK;
    }
    void *p = realloc(g->results, n * sizeof(*g->results));
    if (p == NULL) {
        return KHO_ENOMEM;
    }
    g->results = p;
    g->results_cap = n;
    return KHO_OK;
}

/* Step 4 of the loop up to, not including, the commit: every group's
 * persist and apply in batch *out (left open on success). */
static int persist_and_apply(struct node *n, struct store_batch **out,
                             uint64_t *applied_out)
{
    struct store_batch *b = NULL;
    uint64_t apply_us = 0, applied = 0;
    int rc = store_write_begin(n->st, &b);
    for (size_t i = 0; rc == KHO_OK && i < n->n_groups; i++) {
        struct group *g = &n->groups[i];
        if (!g->has_rd) {
            continue;
        }
        if (g->rd.snapshot != NULL) {
            LOGI("group %llu: installing a snapshot at index %llu (%zu "
                 "bytes) from the leader",
                 (unsigned long long)g->id,
                 (unsigned long long)g->rd.snapshot->meta.index,
                 g->rd.snapshot->len);
        }
        rc = store_batch_persist_ready(b, g->id, &g->rd);
        if (g->rd.snapshot != NULL) {
            g->log_bytes = 0;
        }
        for (size_t k = 0; k < g->rd.n_entries; k++) {
            g->log_bytes += g->rd.entries[k].len;
        }
        if (rc == KHO_OK) {
            rc = reserve_results(g, g->rd.n_committed);
        }
        uint64_t t0 = g->rd.n_committed > 0 ? metrics_now_us() : 0;
        for (size_t k = 0; rc == KHO_OK && k < g->rd.n_committed; k++) {
            rc = store_batch_apply(b, g->id, &g->rd.committed[k],
                                      &g->results[k]);
        }
        if (g->rd.n_committed > 0) {
            apply_us += metrics_now_us() - t0;
            applied += g->rd.n_committed;
        }
    }
    if (rc != KHO_OK) {
        store_write_abort(b);
        return rc;
    }
    if (applied > 0) {
        metrics_hist_observe(&n->counters.apply_latency, apply_us);
    }
    *out = b;
    *applied_out = applied;
    return KHO_OK;
}

/* Commits (one fsync for every group) the batch persist_and_apply() left. */
static int commit_batch(struct node *n, struct store_batch *b,
                        uint64_t applied)
{
    uint64_t t1 = metrics_now_us();
    int rc = store_write_commit(b);
    metrics_hist_observe(&n->counters.commit_latency, metrics_now_us() - t1);
    if (applied > 0) {
        atomic_fetch_add_explicit(&n->counters.entries_applied, applied,
                                  memory_order_relaxed);
    }
    return rc;
}

static int reserve_out(struct node *n, size_t cap)
{
    if (cap <= n->out_cap) {
        return KHO_OK;
    }
    void *p = realloc(n->out, cap * sizeof(*n->out));
    if (p == NULL) {
        return KHO_ENOMEM;
    }
    n->out = p;
    n->out_cap = cap;
    return KHO_OK;
}

static bool xfer_sending_group(const struct node *n, uint64_t group)
{
    return n->xfer != NULL && xfer_sending(n->xfer, group);
}

/* A snapshot never travels in one frame: it is streamed in chunks
 * (snapxfer.h). */
static void stream_snapshot(struct node *n, const struct raft_msg *m)
{
    if (n->xfer == NULL) {
        return;
    }
    int rc = xfer_send(n->xfer, m, clock_mono_ms());
    if (rc != KHO_OK) {
        LOGW("group %llu: cannot start a snapshot transfer to node %llu: %s "
             "(raft sends it again)",
             (unsigned long long)m->group_id, (unsigned long long)m->to,
             kho_strerror(rc));
    }
}

/* Whether a message may leave before this loop's fsync. A leader's
 * appends, heartbeats and snapshots may (§10.2.1 of the Raft dissertation:
 * the leader counts itself towards a commit only for entries it has
 * persisted - leader_self_ack() uses the stable index - so followers can
 * write in parallel with it). Votes and acknowledgements promise durable
 * state and must wait for it. */
static bool sends_early(const struct raft_msg *m)
{
    return m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT ||
           m->type == RAFT_MSG_SNAPSHOT;
}

/* Sends the groups' messages that may go `early` (or the others): one
 * frame per destination node. */
static void send_all(struct node *n, bool early)
{
    size_t total = 0;
    for (size_t i = 0; i < n->n_groups; i++) {
        total += n->groups[i].has_rd ? n->groups[i].rd.n_msgs : 0;
    }
    if (total == 0 || n->net == NULL || reserve_out(n, total) != KHO_OK) {
        return;
    }
    for (size_t p = 0; p < n->n_net_ids; p++) {
        uint64_t to = n->net_ids[p];
        size_t k = 0;
        for (size_t i = 0; i < n->n_groups; i++) {
            struct group *g = &n->groups[i];
            for (size_t m = 0; g->has_rd && m < g->rd.n_msgs; m++) {
                const struct raft_msg *msg = &g->rd.msgs[m];
                if (msg->to == to && msg->type == RAFT_MSG_SNAPSHOT) {
                    if (early) {
                        stream_snapshot(n, msg);
                    }
                    continue;
                }
                if (g->rd.msgs[m].to == to &&
                    sends_early(&g->rd.msgs[m]) == early) {
                    n->out[k++] = g->rd.msgs[m];
                }
            }
        }
        if (k > 0 && to != n->id) {
            net_send(n->net, to, n->out, k);
        }
    }
}

/* Counts a change of g's known leader to another node (raft thread). */
static void group_metrics(struct group *g, uint64_t leader,
                          struct node_group_metrics *out)
{
    if (leader != 0 && leader != g->seen_leader) {
        if (g->seen_leader != 0) {
            g->leader_changes++;
        }
        g->seen_leader = leader;
    }
    *out = (struct node_group_metrics){
        .group_id = g->id,
        .leader_changes = g->leader_changes,
        .elections = raft_stats(g->raft)->elections,
    };
}

/* Whether member id of g was reported active within NODE_ACTIVE_HOLD_MS,
 * `active` being the core's word now (raft thread). */
static bool recently_active(struct group *g, uint64_t id, bool active,
                            uint64_t now)
{
    size_t slot = 0;
    for (size_t k = 0; k < RAFT_MEMBERS_MAX; k++) {
        if (g->seen_active[k].id == id) {
            slot = k;
            break;
        }
        /* Otherwise the free or the longest-unseen slot. */
        if (g->seen_active[k].ms < g->seen_active[slot].ms ||
            g->seen_active[k].id == 0) {
            slot = k;
        }
    }
    if (g->seen_active[slot].id != id) {
        g->seen_active[slot].id = id;
        g->seen_active[slot].ms = 0;
    }
    if (active) {
        g->seen_active[slot].ms = now;
    }
    return g->seen_active[slot].ms != 0 &&
           now - g->seen_active[slot].ms <= NODE_ACTIVE_HOLD_MS;
}

static void publish_status(struct node *n)
{
    static struct node_group_status st[NODE_GROUPS_MAX]; /* raft thread */
    static struct node_group_metrics gm[NODE_GROUPS_MAX];
    uint64_t now = clock_mono_ms();
    for (size_t i = 0; i < n->n_groups; i++) {
        struct raft_status rs;
        raft_status(n->groups[i].raft, &rs);
        st[i] = (struct node_group_status){
            .group_id = n->groups[i].id,
            .role = rs.role,
            .term = rs.term,
            .leader = rs.leader,
            .commit = rs.commit,
            .applied = n->groups[i].applied,
            .last_index = rs.last_index,
            .first_index = rs.first_index,
            .n_replicas = rs.conf.n,
        };
        for (uint32_t k = 0; k < rs.conf.n; k++) {
            struct node_replica_status *rp = &st[i].replicas[k];
            rp->id = rs.conf.members[k].id;
            rp->voter = rs.conf.members[k].role == RAFT_VOTER;
            raft_progress(n->groups[i].raft, rp->id, &rp->match, &rp->active);
            rp->active = recently_active(&n->groups[i], rp->id, rp->active,
                                         now);
        }
        memcpy(st[i].registry, n->groups[i].registry, NODE_REGISTRY_BYTES);
        group_metrics(&n->groups[i], rs.leader, &gm[i]);
    }
    pthread_mutex_lock(&n->status_mu);
    memcpy(n->status, st, n->n_groups * sizeof(st[0]));
    memcpy(n->gmetrics, gm, n->n_groups * sizeof(gm[0]));
    n->n_status = n->n_groups;
    pthread_mutex_unlock(&n->status_mu);
}

static bool ready_cycle(struct node *n)
{
    bool any = false;
    for (size_t i = 0; i < n->n_groups; i++) {
        struct group *g = &n->groups[i];
        g->has_rd = raft_has_ready(g->raft);
        if (!g->has_rd) {
            continue;
        }
        int rc = raft_ready(g->raft, &g->rd);
        if (rc != KHO_OK) {
            LOGE("group %llu: raft_ready failed: %s; stopping",
                 (unsigned long long)g->id, kho_strerror(rc));
            abort();
        }
        any = true;
    }
    if (!any) {
        return false;
    }
    send_all(n, true);
    struct store_batch *b = NULL;
    uint64_t applied = 0;
    int rc = persist_and_apply(n, &b, &applied);
    if (rc == KHO_OK) {
        /* Committed entries are durable on a majority already (the core
         * counts each node only up to what it persisted), so their answers
         * need not wait for this batch's fsync: were it lost, a restart
         * applies them again from the log, with the same outcome. Reads
         * still wait for it (answer_reads() below, after g->applied moves
         * past the commit). */
        for (size_t i = 0; i < n->n_groups; i++) {
            if (n->groups[i].has_rd) {
                answer_props(&n->groups[i]);
            }
        }
        rc = commit_batch(n, b, applied);
    }
    if (rc != KHO_OK) {
        /* The core believes nothing of this ready is durable yet and may
         * not be told otherwise; restarting from the store is the safe way
         * out. Writes answered above are in the log of a majority, so the
         * restart applies them again; no vote or acknowledgement promised
         * this batch's state (they are sent after the commit). */
        LOGE("store write failed: %s (%s); stopping", kho_strerror(rc),
             store_errmsg(n->st));
        abort();
    }
    send_all(n, false);
    for (size_t i = 0; i < n->n_groups; i++) {
        struct group *g = &n->groups[i];
        if (!g->has_rd) {
            continue;
        }
        if (g->rd.n_committed > 0) {
            g->applied = g->rd.committed[g->rd.n_committed - 1].index;
        }
        answer_reads(g);
        raft_advance(g->raft);
        g->has_rd = false;
    }
    return true;
}

/* --- Node records in the meta group -------------------------------------- */

static void meta_req_done(struct node_req *r)
{
    struct node *n = r->ctx;
    int err = r->err != KHO_OK ? r->err : r->res.result;
    if (err != KHO_OK) {
        LOGW("meta group: recording the cluster's nodes failed: %s; next "
             "term tries again",
             kho_strerror(err));
    } else {
        LOGI("meta group: the cluster's nodes are recorded");
    }
    free(n->meta_buf);
    n->meta_buf = NULL;
    n->meta_busy = false;
}

static bool has_node(const struct node_peer *have, size_t n, uint64_t id)
{
    for (size_t i = 0; i < n; i++) {
        if (have[i].id == id) {
            return true;
        }
    }
    return false;
}

static void handle_req(struct node *n, struct node_req *r);

/* Proposes the records of the initial cluster's nodes that the meta group
 * lacks: once per term, by the meta leader, once it has applied its log. */
static void record_nodes(struct node *n)
{
    struct group *meta = &n->groups[0];
    struct raft_status rs;
    raft_status(meta->raft, &rs);
    if (rs.role != RAFT_LEADER || n->meta_busy || n->nodes_term == rs.term ||
        meta->applied < rs.commit) {
        return;
    }
    n->nodes_term = rs.term;
    static struct node_peer have[NODE_NODES_MAX];
    static uint8_t keys[RAFT_MEMBERS_MAX][META_NODE_KEY_BYTES];
    static uint8_t vals[RAFT_MEMBERS_MAX][META_NODE_VALUE_BYTES_MAX];
    struct store_compare cmps[RAFT_MEMBERS_MAX];
    struct store_op ops[RAFT_MEMBERS_MAX];
    size_t nh = 0, k = 0;
    if (node_load_nodes(n, have, NODE_NODES_MAX, &nh) != KHO_OK) {
        return;
    }
    for (size_t i = 0; i < n->n_peers; i++) {
        const struct node_peer *p = &n->peers[i];
        size_t len = meta_node_encode(p->name, p->peer_url, p->client_url,
                                      META_NODE_MEMBER, vals[k]);
        if (has_node(have, nh, p->id) || len == 0) {
            continue;
        }
        meta_node_key(p->id, keys[k]);
        cmps[k] = (struct store_compare){.target = STORE_CMP_VERSION,
                                         .op = STORE_CMP_EQ,
                                         .key = keys[k],
                                         .key_len = META_NODE_KEY_BYTES};
        ops[k] = (struct store_op){.op = STORE_OP_PUT,
                                   .key = keys[k],
                                   .key_len = META_NODE_KEY_BYTES,
                                   .value = vals[k],
                                   .value_len = len};
        k++;
    }
    if (k == 0) {
        return;
    }
    struct store_request sr = {.time_ms = clock_wall_ms(),
                               .writer = n->name,
                               .writer_len = strlen(n->name),
                               .cmps = cmps,
                               .n_cmp = k,
                               .ops = ops,
                               .n_ops = k};
    size_t cap = store_request_size(&sr), len = 0;
    n->meta_buf = cap > 0 ? malloc(cap) : NULL;
    if (n->meta_buf == NULL ||
        store_request_encode(&sr, n->meta_buf, cap, &len) != KHO_OK) {
        free(n->meta_buf);
        n->meta_buf = NULL;
        return;
    }
    n->meta_req = (struct node_req){.kind = NODE_REQ_PROPOSE,
                                    .group_id = NODE_META_GROUP,
                                    .data = n->meta_buf,
                                    .len = len,
                                    .done_cb = meta_req_done,
                                    .ctx = n};
    n->meta_req.id_ = ++n->next_req_id;
    n->meta_req.deadline_ms_ = clock_mono_ms() + NODE_REQ_TIMEOUT_MS;
    n->meta_busy = true;
    handle_req(n, &n->meta_req);
}

/* --- Where groups should live --------------------------------------------- */

/* Hands g's leadership to its most caught-up other voter, if this node
 * leads it. */
static void transfer_away(struct group *g, uint64_t self)
{
    struct raft_status rs;
    raft_status(g->raft, &rs);
    if (rs.role != RAFT_LEADER) {
        return;
    }
    uint64_t best = 0, best_match = 0;
    for (uint32_t i = 0; i < rs.conf.n; i++) {
        uint64_t id = rs.conf.members[i].id, match = 0;
        bool active = false;
        if (id == self || rs.conf.members[i].role != RAFT_VOTER ||
            raft_progress(g->raft, id, &match, &active) != KHO_OK || !active) {
            continue;
        }
        if (best == 0 || match > best_match) {
            best = id;
            best_match = match;
        }
    }
    if (best != 0) {
        LOGI("group %llu: handing leadership to node %llu",
             (unsigned long long)g->id, (unsigned long long)best);
        raft_transfer_leader(g->raft, best);
    }
}

static bool conf_has(const struct raft_conf *c, uint64_t id)
{
    for (uint32_t i = 0; i < c->n; i++) {
        if (c->members[i].id == id) {
            return true;
        }
    }
    return false;
}

static bool in_list(const uint64_t *ids, uint32_t n, uint64_t id)
{
    for (uint32_t i = 0; i < n; i++) {
        if (ids[i] == id) {
            return true;
        }
    }
    return false;
}

/* Where group g should live, from the meta group: *known false when the
 * meta group does not say (yet). `removed` lists nodes that must leave. */
static bool desired_members(struct node *n, const struct group *g,
                            uint64_t *want, uint32_t *n_want,
                            uint64_t *removed, uint32_t *n_removed)
{
    *n_want = *n_removed = 0;
    bool known = false;
    pthread_rwlock_rdlock(&n->reg_mu);
    if (g->id == NODE_META_GROUP) {
        for (size_t i = 0; i < n->n_nodes; i++) {
            if (n->nodes[i].state == META_NODE_MEMBER) {
                want[(*n_want)++] = n->nodes[i].id;
            } else {
                removed[(*n_removed)++] = n->nodes[i].id;
            }
        }
        known = n->n_nodes > 0;
    } else {
        for (size_t i = 0; i < n->n_regs && !known; i++) {
            if (n->regs[i].group_id == g->id) {
                *n_want = n->regs[i].n_replicas;
                memcpy(want, n->regs[i].replicas, *n_want * sizeof(*want));
                known = true;
            }
        }
    }
    pthread_rwlock_unlock(&n->reg_mu);
    return known;
}

/*
 * One step towards where the meta group says g should live, if this node
 * leads g: add a missing replica as a learner, promote a caught-up learner,
 * or remove a member that should leave - one change at a time (the core
 * refuses a second while one is pending). In the meta group only members
 * whose record says removed are removed, so a node the meta group has not
 * recorded yet is never taken out.
 */
static void reconcile_group(struct node *n, struct group *g)
{
    struct raft_status rs;
    raft_status(g->raft, &rs);
    uint64_t want[NODE_NODES_MAX], removed[NODE_NODES_MAX];
    uint32_t nw = 0, nr = 0;
    if (rs.role != RAFT_LEADER || rs.transferee != 0 ||
        !desired_members(n, g, want, &nw, removed, &nr)) {
        return;
    }
    uint64_t idx = 0, term = 0;
    for (uint32_t i = 0; i < nw; i++) {
        if (!conf_has(&rs.conf, want[i])) {
            int rc = raft_propose_conf(g->raft, RAFT_CONF_ADD_LEARNER, want[i],
                                       &idx, &term);
            LOGI("group %llu: adding node %llu as a learner: %s",
                 (unsigned long long)g->id, (unsigned long long)want[i],
                 kho_strerror(rc));
            return;
        }
    }
    for (uint32_t i = 0; i < rs.conf.n; i++) {
        const struct raft_member *m = &rs.conf.members[i];
        uint64_t match = 0;
        bool active = false;
        if (m->role == RAFT_VOTER || !in_list(want, nw, m->id) ||
            raft_progress(g->raft, m->id, &match, &active) != KHO_OK ||
            match + NODE_CATCHUP_ENTRIES < rs.last_index) {
            continue;
        }
        int rc = raft_propose_conf(g->raft, RAFT_CONF_PROMOTE, m->id, &idx,
                                   &term);
        LOGI("group %llu: node %llu caught up (match %llu of %llu); "
             "promoting it to voter: %s",
             (unsigned long long)g->id, (unsigned long long)m->id,
             (unsigned long long)match, (unsigned long long)rs.last_index,
             kho_strerror(rc));
        return;
    }
    bool meta = g->id == NODE_META_GROUP;
    for (uint32_t i = 0; i < rs.conf.n; i++) {
        uint64_t id = rs.conf.members[i].id;
        bool leave = meta ? in_list(removed, nr, id) : !in_list(want, nw, id);
        if (!leave) {
            continue;
        }
        int rc = raft_propose_conf(g->raft, RAFT_CONF_REMOVE, id, &idx, &term);
        LOGI("group %llu: removing node %llu: %s", (unsigned long long)g->id,
             (unsigned long long)id, kho_strerror(rc));
        return;
    }
}

/* After a loop: registries the meta group just created get their local
 * groups, the meta leader records missing nodes, leaders move their groups
 * towards where the meta group says they live, and long logs are compacted
 * into snapshots. */
static void after_cycle(struct node *n)
{
    record_nodes(n);
    uint64_t now = clock_mono_ms();
    if (now >= n->next_reconcile_ms) {
        n->next_reconcile_ms = now + NODE_RECONCILE_MS;
        for (size_t i = 0; i < n->n_groups; i++) {
            reconcile_group(n, &n->groups[i]);
        }
    }
    if (n->groups[0].applied != n->meta_seen) {
        n->meta_seen = n->groups[0].applied;
        sync_registries(n);
    }
    for (size_t i = 0; i < n->n_groups; i++) {
        struct group *g = &n->groups[i];
        struct raft_status rs;
        raft_status(g->raft, &rs);
        if (rs.role != RAFT_LEADER && xfer_sending_group(n, g->id)) {
            xfer_cancel(n->xfer, g->id);
        }
        bool due = g->applied >= rs.first_index + n->compact_entries ||
                   (g->log_bytes >= n->compact_bytes &&
                    g->applied >= rs.first_index);
        if (xfer_sending_group(n, g->id) || !due ||
            g->applied < g->compact_retry) {
            continue;
        }
        struct raft_conf conf;
        raft_applied_conf(g->raft, &conf);
        int rc = store_compact(n->st, g->id, g->applied, &conf);
        if (rc != KHO_OK) {
            LOGW("group %llu: compaction at %llu failed: %s (%s); the log "
                 "keeps growing",
                 (unsigned long long)g->id, (unsigned long long)g->applied,
                 kho_strerror(rc), store_errmsg(n->st));
            g->compact_retry = g->applied + n->compact_entries / 4;
        } else {
            LOGI("group %llu: log compacted up to %llu (%llu bytes of "
                 "entries since the last compaction)",
                 (unsigned long long)g->id, (unsigned long long)g->applied,
                 (unsigned long long)g->log_bytes);
            g->log_bytes = 0;
        }
    }
}

/* --- The raft thread ---------------------------------------------------- */

static void *raft_main(void *arg)
{
    struct node *n = arg;
    uint64_t next_tick = clock_mono_ms() + NODE_TICK_MS;
    uint64_t next_status = 0;
    for (;;) {
        pthread_mutex_lock(&n->mu);
        while (!n->stopping && n->queued == 0 && clock_mono_ms() < next_tick) {
            struct timespec ts;
            ts.tv_sec = (time_t)(next_tick / 1000u);
            ts.tv_nsec = (long)(next_tick % 1000u) * 1000000L;
            pthread_cond_timedwait(&n->cv, &n->mu, &ts);
        }
        if (n->stopping) {
            pthread_mutex_unlock(&n->mu);
            return NULL;
        }
        struct inbatch *ib = n->in_head;
        struct node_req *rq = n->req_head;
        n->in_head = n->in_tail = NULL;
        n->req_head = n->req_tail = NULL;
        n->queued = 0;
        pthread_mutex_unlock(&n->mu);

        while (ib != NULL) {
            struct inbatch *next = ib->next;
            if (ib->is_ack) {
                xfer_on_ack(n->xfer, ib->from, &ib->ack, clock_mono_ms());
            } else {
                step_batch(n, &ib->b);
            }
            inbatch_free(ib);
            ib = next;
        }
        while (rq != NULL) {
            struct node_req *next = rq->next_;
            handle_req(n, rq);
            rq = next;
        }
        uint64_t now = clock_mono_ms();
        if (now >= next_tick) {
            for (size_t i = 0; i < n->n_groups; i++) {
                raft_tick(n->groups[i].raft);
                expire_list(&n->groups[i], &n->groups[i].props, now);
                expire_list(&n->groups[i], &n->groups[i].reads, now);
            }
            next_tick += NODE_TICK_MS;
            if (now > next_tick + 10u * NODE_TICK_MS) {
                next_tick = now + NODE_TICK_MS; /* do not burst after a stall */
            }
        }
        bool worked = ready_cycle(n);
        if (n->xfer != NULL) {
            xfer_pump(n->xfer, clock_mono_ms());
        }
        if (worked || now >= next_status) {
            after_cycle(n);
        }
        if (worked || now >= next_status) {
            publish_status(n);
            next_status = now + 50u;
        }
    }
}

int node_start(struct node *n)
{
    publish_status(n);
    if (pthread_create(&n->thread, NULL, raft_main, n) != 0) {
        return KHO_EIO;
    }
    n->started = true;
    return KHO_OK;
}

void node_stop(struct node *n)
{
    pthread_mutex_lock(&n->mu);
    n->stopping = true;
    pthread_cond_signal(&n->cv);
    pthread_mutex_unlock(&n->mu);
    if (n->started) {
        pthread_join(n->thread, NULL);
        n->started = false;
    }
    /* The thread is gone: what it left is ours to answer. */
    struct node_req *rq = n->req_head;
    struct inbatch *ib = n->in_head;
    n->req_head = n->req_tail = NULL;
    n->in_head = n->in_tail = NULL;
    while (rq != NULL) {
        struct node_req *next = rq->next_;
        finish(rq, KHO_EUNAVAILABLE, 0);
        rq = next;
    }
    while (ib != NULL) {
        struct inbatch *next = ib->next;
        inbatch_free(ib);
        ib = next;
    }
    for (size_t i = 0; i < n->n_groups; i++) {
        fail_all(&n->groups[i], KHO_EUNAVAILABLE);
    }
}

void node_destroy(struct node *n)
{
    if (n == NULL) {
        return;
    }
    NODE_ASSERT(!n->started);
    for (size_t i = 0; i < n->n_groups; i++) {
        struct group *g = &n->groups[i];
        if (g->raft != NULL) {
            raft_destroy(g->raft);
        }
        if (g->sg != NULL) {
            store_group_close(g->sg);
        }
        free(g->results);
    }
    free(n->out);
    xfer_destroy(n->xfer);
    pthread_mutex_destroy(&n->mu);
    pthread_mutex_destroy(&n->status_mu);
    pthread_rwlock_destroy(&n->reg_mu);
    pthread_cond_destroy(&n->cv);
    free(n);
}

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

#include <urcu-bp.h> /* liburcu, bulletproof flavour: no thread registration */

#include "../common/clock.h"
#include "../common/log.h"
#include "meta.h"
#include "plan.h"
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

/* What the transport hands the raft thread: a batch of raft messages, or
 * a snapshot that arrived in chunks (its payload, the store's stage
 * descriptor, owned here). */
struct inbatch {
    struct codec_batch b;
    uint8_t *owned;
    uint64_t from;
    struct inbatch *next;
};

static void inbatch_free(struct inbatch *ib)
{
    codec_batch_free(&ib->b);
    free(ib->owned);
    free(ib);
}

/* Staged snapshots stepped into a core in this loop (raft thread): one the
 * core does not install is dropped from the store in the loop's batch. */
#define NODE_STAGED_MAX 8u
struct staged {
    uint8_t desc[STORE_STAGE_DESC_BYTES];
};
/* Keys of discarded data (moved replicas, replaced snapshots) the raft
 * thread deletes per loop while there are some: bounds the loop's work. */
#define NODE_GC_KEYS_PER_LOOP 4096u

struct group {
    uint64_t id;
    char registry[NODE_REGISTRY_BYTES];
    struct raft *raft;
    struct store_group *sg;
    struct node_req *props; /* pending proposals */
    struct node_req *reads; /* pending reads */
    uint32_t shard;
    /* Where the meta group says it should live (raft thread; refreshed by
     * sync_registries): want[0] is where it should lead. */
    bool want_known;
    uint32_t n_want;
    uint64_t want[NODE_REPLICAS_MAX];
    uint64_t want_rev;     /* mod revision of the record they came from */
    uint64_t led_rev;      /* want_rev whose leader preference was met */
    size_t n_pending;
    uint64_t applied;         /* as committed in the store: reads see it */
    uint64_t applied_pending; /* applied in n->open, not committed yet */
    uint64_t synced_term, synced_vote; /* hard state as last persisted */
    /* Its slot in node.leases (+1; 0: none) and what was last put there. */
    uint32_t lease_slot;
    uint64_t pub_until_ms, pub_commit;
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
    atomic_uint_fast64_t proposals, proposals_refused, reads, entries_applied,
        lease_reads;
    struct metrics_hist commit_latency, apply_latency;
};

/* A leader lease as request threads read it (node_lease_floor): a
 * seqlock, written by the raft thread only. key = group id + 1 (0: free). */
struct lease_slot {
    atomic_uint_fast64_t seq, key, until_ms, commit;
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
    const char *meta_what; /* what meta_req does, for its log line */
    uint64_t balanced_sig;      /* members the placement was last even for */
    uint64_t next_rebalance_ms;
    uint64_t nodes_term; /* the term in which node records were checked */

    /* The registry and node tables, read by request threads without a
     * lock (RCU; replaced by the raft thread only). */
    struct node_map *map;
    /* Nodes the transport knows (raft thread only). */
    uint64_t net_ids[NET_PEERS_MAX];
    size_t n_net_ids;
    uint64_t next_reconcile_ms;
    uint32_t compact_entries;
    uint64_t compact_bytes;
    bool lease_reads;
    /* A batch that only applied committed entries, left open for the next
     * loop to add to (NODE_APPLY_DEFER_MS; raft thread). */
    struct store_batch *open;
    uint64_t open_applied; /* entries applied in it */
    uint64_t open_until_ms;
    struct lease_slot leases[NODE_LEASE_SLOTS];
    bool lease_used[NODE_LEASE_SLOTS]; /* raft thread */
    /* When the last tick given to the groups was due (raft thread): how
     * far the groups' ticks trail the clock (NODE_LEASE_LAG_MAX_MS). */
    uint64_t tick_due_ms;
    struct xfer *xfer; /* snapshots streamed to and from peers */
    /* Peer links' ages at the last liveness() (raft thread). */
    struct peer_age {
        uint64_t id, ms;
    } ages[NET_PEERS_MAX];
    size_t n_ages;
    struct staged staged[NODE_STAGED_MAX]; /* raft thread */
    size_t n_staged;

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

static void flush_open(struct node *n);

static void raft_panic_cb(void *ctx, const char *what, uint64_t group_id,
                          raft_id id, uint64_t term, uint64_t index)
{
    LOGE("raft invariant failed: %s (group %llu node %llu term %llu index "
         "%llu)",
         what, (unsigned long long)group_id, (unsigned long long)id,
         (unsigned long long)term, (unsigned long long)index);
}

/* --- Leases for request threads ----------------------------------------- */

static uint32_t lease_home(uint64_t gid)
{
    return (uint32_t)((gid * UINT64_C(0x9E3779B97F4A7C15)) >> 32) %
           NODE_LEASE_SLOTS;
}

static void lease_write(struct lease_slot *sl, uint64_t key, uint64_t until,
                        uint64_t commit)
{
    uint64_t seq = atomic_load_explicit(&sl->seq, memory_order_relaxed);
    atomic_store_explicit(&sl->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&sl->key, key, memory_order_relaxed);
    atomic_store_explicit(&sl->until_ms, until, memory_order_relaxed);
    atomic_store_explicit(&sl->commit, commit, memory_order_relaxed);
    atomic_store_explicit(&sl->seq, seq + 2, memory_order_release);
}

/* Publishes g's lease as of now: until when (monotonic ms) it lasts, and
 * the commit index a read under it must have applied. The core's lease
 * lasts while its tick count is below now_ticks + left; tick k comes due
 * (k - now_ticks) ticks after the last one given, which was due at
 * n->tick_due_ms - the same bound the core applies, on the clock. */
static void publish_lease(struct node *n, struct group *g)
{
    uint64_t commit = 0;
    uint64_t left = raft_lease_left(g->raft, &commit);
    uint64_t until = n->lease_reads && left > 0
                         ? n->tick_due_ms + left * NODE_TICK_MS
                         : 0;
    if (g->lease_slot == 0) {
        for (uint32_t k = 0; until != 0 && k < NODE_LEASE_PROBES; k++) {
            uint32_t i = (lease_home(g->id) + k) % NODE_LEASE_SLOTS;
            if (!n->lease_used[i]) {
                n->lease_used[i] = true;
                g->lease_slot = i + 1;
                g->pub_until_ms = g->pub_commit = 0;
                break;
            }
        }
        if (g->lease_slot == 0) {
            return;
        }
    }
    if (until != g->pub_until_ms || commit != g->pub_commit) {
        lease_write(&n->leases[g->lease_slot - 1], g->id + 1, until, commit);
        g->pub_until_ms = until;
        g->pub_commit = commit;
    }
}

static void publish_leases(struct node *n)
{
    for (size_t i = 0; i < n->n_groups; i++) {
        publish_lease(n, &n->groups[i]);
    }
}

/* Frees g's slot (its group goes). */
static void unpublish_lease(struct node *n, struct group *g)
{
    if (g->lease_slot != 0) {
        lease_write(&n->leases[g->lease_slot - 1], 0, 0, 0);
        n->lease_used[g->lease_slot - 1] = false;
        g->lease_slot = 0;
    }
}

bool node_lease_floor(struct node *n, uint64_t group_id, uint64_t *floor)
{
    uint32_t home = lease_home(group_id);
    for (uint32_t k = 0; k < NODE_LEASE_PROBES; k++) {
        struct lease_slot *sl = &n->leases[(home + k) % NODE_LEASE_SLOTS];
        uint64_t s1 = atomic_load_explicit(&sl->seq, memory_order_acquire);
        uint64_t key = atomic_load_explicit(&sl->key, memory_order_relaxed);
        uint64_t until =
            atomic_load_explicit(&sl->until_ms, memory_order_relaxed);
        uint64_t commit =
            atomic_load_explicit(&sl->commit, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        uint64_t s2 = atomic_load_explicit(&sl->seq, memory_order_relaxed);
        if ((s1 & 1u) != 0 || s1 != s2) {
            return false; /* being written: the raft thread decides */
        }
        if (key == group_id + 1) {
            *floor = commit;
            if (until == 0 || clock_mono_ms() >= until) {
                return false;
            }
            atomic_fetch_add_explicit(&n->counters.lease_reads, 1,
                                      memory_order_relaxed);
            return true;
        }
    }
    return false;
}

/* --- Set-up ------------------------------------------------------------- */

static int bootstrap_group(struct node *n, uint64_t gid,
                           const struct raft_conf *conf, char *err,
                           size_t err_len)
{
    struct store_batch *b = NULL;
    flush_open(n);
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
    c.quiesce_ticks = NODE_QUIESCE_TICKS;
    /* Leases on in the core whatever --reads says: a node then holds its
     * votes after a restart as other nodes' leases need (raft.h), so nodes
     * may differ in --reads. Without leases, handle_req() drops the lease
     * before every read. */
    c.lease_reads = true;
    c.lease_drift_ticks = NODE_LEASE_DRIFT_TICKS;
    c.seed = clock_mono_ms() ^ (n->id * UINT64_C(0x9e3779b97f4a7c15)) ^ g->id;
    c.storage = store_raft_storage(g->sg);
    c.panic = raft_panic_cb;
    c.panic_ctx = n;
    g->applied = c.applied;
    g->synced_term = c.hs.term;
    g->synced_vote = c.hs.vote;
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

/* The immutable table request threads read (node.h). */
struct node_map {
    struct node_registry *regs; /* by name, then shard */
    size_t n_regs;
    struct node_peer *nodes; /* by id */
    size_t n_nodes;
    struct rcu_head rcu;
};

struct reg_scan {
    struct node_registry *out;
    size_t n, cap;
    size_t bad;
    struct meta_reg *mr; /* decoding space */
};

/* One registry record: an entry per shard. */
static int reg_scan_cb(void *ctx, const struct store_record *r)
{
    struct reg_scan *rs = ctx;
    size_t name_len = r->key_len - META_REG_PREFIX_BYTES;
    struct meta_reg *mr = rs->mr;
    if (name_len == 0 || name_len >= NODE_REGISTRY_BYTES ||
        meta_reg_decode(r->value, r->value_len, mr) != KHO_OK) {
        rs->bad++;
        return KHO_OK;
    }
    if (rs->n + mr->n_shards > rs->cap) {
        return KHO_ETOOLARGE;
    }
    for (uint32_t s = 0; s < mr->n_shards; s++) {
        const struct meta_shard *sh = &mr->shards[s];
        struct node_registry *g = &rs->out[rs->n++];
        memset(g, 0, sizeof(*g));
        memcpy(g->name, r->key + META_REG_PREFIX_BYTES, name_len);
        g->base_id = r->create_rev;
        g->group_id = meta_shard_group(r->create_rev, s);
        g->shard = s;
        g->n_shards = mr->n_shards;
        g->want = mr->want;
        g->home = mr->home;
        g->n_initial = sh->n_initial;
        memcpy(g->initial, sh->initial, sh->n_initial * sizeof(sh->initial[0]));
        g->n_replicas = sh->n_replicas;
        memcpy(g->replicas, sh->replicas,
               sh->n_replicas * sizeof(sh->replicas[0]));
        g->mod_rev = r->mod_rev;
        size_t wl = r->writer_len < sizeof(g->creator) - 1
                        ? r->writer_len
                        : sizeof(g->creator) - 1;
        memcpy(g->creator, r->writer, wl);
        g->created_ms = r->time_ms;
    }
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
    rs.mr = malloc(sizeof(*rs.mr));
    if (rs.mr == NULL) {
        return KHO_ENOMEM;
    }
    bool more = false;
    int rc = scan_meta(n, META_REG_PREFIX, NODE_REGISTRIES_MAX, reg_scan_cb,
                       &rs, &more);
    free(rs.mr);
    if (rc == KHO_ETOOLARGE) {
        LOGE("meta group: more than %zu shards in all; the registries "
             "beyond are ignored",
             cap);
        more = false;
        rc = KHO_OK;
    }
    if (rc != KHO_OK) {
        return rc;
    }
    if (rs.bad > 0) {
        LOGE("meta group: %zu malformed registry records ignored", rs.bad);
    }
    if (more) {
        LOGE("meta group: more than %u registries; the rest are ignored",
             NODE_REGISTRIES_MAX);
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

/* Creates the local replica of shard r (raft thread or start-up). */
static int add_group(struct node *n, const struct node_registry *r)
{
    if (n->n_groups >= NODE_GROUPS_MAX) {
        LOGE("registry %s shard %u: this node already hosts %u groups; not "
             "hosted",
             r->name, r->shard, NODE_GROUPS_MAX);
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
    g->shard = r->shard;
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

static void map_free(struct node_map *m)
{
    if (m != NULL) {
        free(m->regs);
        free(m->nodes);
        free(m);
    }
}

static void map_free_rcu(struct rcu_head *h)
{
    map_free(caa_container_of(h, struct node_map, rcu));
}

/* Publishes a new table (raft thread or start-up); the old one is freed
 * once no reader can hold it. */
static void publish_map(struct node *n, const struct node_registry *regs,
                        size_t n_regs, const struct node_peer *nodes,
                        size_t n_nodes)
{
    struct node_map *m = calloc(1, sizeof(*m));
    if (m != NULL) {
        m->regs = malloc((n_regs > 0 ? n_regs : 1) * sizeof(*regs));
        m->nodes = malloc((n_nodes > 0 ? n_nodes : 1) * sizeof(*nodes));
    }
    if (m == NULL || m->regs == NULL || m->nodes == NULL) {
        LOGE("no memory for the registry table; keeping the old one");
        map_free(m);
        return;
    }
    memcpy(m->regs, regs, n_regs * sizeof(*regs));
    m->n_regs = n_regs;
    memcpy(m->nodes, nodes, n_nodes * sizeof(*nodes));
    m->n_nodes = n_nodes;
    struct node_map *old = rcu_xchg_pointer(&n->map, m);
    if (old != NULL) {
        call_rcu(&old->rcu, map_free_rcu);
    }
}

/* The group's placement from a fresh table (raft thread). */
static void group_want(struct group *g, const struct node_registry *regs,
                       size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (regs[i].group_id == g->id) {
            g->want_known = true;
            g->n_want = regs[i].n_replicas;
            memcpy(g->want, regs[i].replicas, g->n_want * sizeof(g->want[0]));
            g->want_rev = regs[i].mod_rev;
            return;
        }
    }
}

/* Brings the node and registry tables and the local groups up to the meta
 * group's state in the store, and dials new nodes. */
static void sync_registries(struct node *n)
{
    static struct node_peer nodes[NODE_NODES_MAX];
    static struct node_registry fresh[NODE_SHARD_ENTRIES_MAX];
    size_t n_nodes = 0, count = 0;
    if (node_load_nodes(n, nodes, NODE_NODES_MAX, &n_nodes) != KHO_OK) {
        return;
    }
    net_learn(n, nodes, n_nodes);
    int rc = load_registries(n, fresh, NODE_SHARD_ENTRIES_MAX, &count);
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
            LOGI("registry %s shard %u: hosting group %llu (%u replicas)",
                 r->name, r->shard, (unsigned long long)r->group_id,
                 r->n_replicas);
            if (add_group(n, r) != KHO_OK) {
                continue;
            }
        }
        r->local = true;
    }
    for (size_t i = 1; i < n->n_groups; i++) {
        group_want(&n->groups[i], fresh, count);
    }
    publish_map(n, fresh, count, nodes, n_nodes);
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

/* The first entry of registry `name` in m (SIZE_MAX: none); entries are
 * sorted by name. */
static size_t map_find(const struct node_map *m, const char *name)
{
    size_t lo = 0, hi = m->n_regs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(m->regs[mid].name, name) < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo < m->n_regs && strcmp(m->regs[lo].name, name) == 0 ? lo
                                                                 : SIZE_MAX;
}

/* Copies the entry of `name` for `shard`, or for the key's shard when
 * key != NULL. */
static int map_lookup(struct node *n, const char *name, uint32_t shard,
                      const void *key, size_t key_len,
                      struct node_registry *out)
{
    int rc = KHO_ENOTFOUND;
    rcu_read_lock();
    const struct node_map *m = rcu_dereference(n->map);
    size_t i = m != NULL ? map_find(m, name) : SIZE_MAX;
    if (i != SIZE_MAX) {
        uint32_t count = m->regs[i].n_shards;
        if (key != NULL) {
            shard = kho_shard_of(key, key_len, count);
        }
        if (shard < count && i + shard < m->n_regs &&
            m->regs[i + shard].shard == shard &&
            strcmp(m->regs[i + shard].name, name) == 0) {
            *out = m->regs[i + shard];
            rc = KHO_OK;
        }
    }
    rcu_read_unlock();
    return rc;
}

int node_shard(struct node *n, const char *name, uint32_t shard,
               struct node_registry *out)
{
    return map_lookup(n, name, shard, NULL, 0, out);
}

int node_registry(struct node *n, const char *name, struct node_registry *out)
{
    return map_lookup(n, name, 0, NULL, 0, out);
}

int node_route(struct node *n, const char *name, const void *key,
               size_t key_len, struct node_registry *out)
{
    static const uint8_t none;
    return map_lookup(n, name, 0, key != NULL ? key : &none, key_len, out);
}

size_t node_registries(struct node *n, struct node_registry *out, size_t cap)
{
    rcu_read_lock();
    const struct node_map *m = rcu_dereference(n->map);
    size_t total = m != NULL ? m->n_regs : 0;
    if (total > 0) {
        memcpy(out, m->regs, (total < cap ? total : cap) * sizeof(*out));
    }
    rcu_read_unlock();
    return total;
}

const struct raft_conf *node_members(const struct node *n)
{
    return &n->initial;
}

int node_create(const struct node_config *c, struct store *st,
                struct node **out, char *err, size_t err_len)
{
    if (!c->join && raft_conf_find(&c->initial, c->id) == NULL) {
        snprintf(err, err_len, "bad node configuration: node %llu is not "
                               "among the initial nodes",
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
    /* The meta group: the META_VOTERS_MAX lowest ids vote, the others
     * follow as learners (meta.h). */
    uint64_t ids[RAFT_MEMBERS_MAX];
    for (uint32_t i = 0; i < c->initial.n; i++) {
        ids[i] = c->initial.members[i].id;
    }
    meta_group_conf(ids, c->initial.n, &n->initial);
    n->compact_entries =
        c->compact_entries != 0 ? c->compact_entries : NODE_COMPACT_ENTRIES;
    n->lease_reads = c->lease_reads;
    n->compact_bytes =
        c->compact_bytes != 0 ? c->compact_bytes : NODE_COMPACT_BYTES;
    n->n_peers = c->n_peers < RAFT_MEMBERS_MAX ? c->n_peers : RAFT_MEMBERS_MAX;
    memcpy(n->peers, c->peers, n->n_peers * sizeof(n->peers[0]));
    pthread_mutex_init(&n->mu, NULL);
    pthread_mutex_init(&n->status_mu, NULL);
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

/* --- Snapshots as the transfers see the store ---------------------------- */

_Static_assert(STORE_STAGE_DESC_BYTES <= XFER_DESC_BYTES_MAX,
               "a stage descriptor must fit a transfer's");

static int src_open(void *ctx, uint64_t group, void **h,
                    struct raft_snapshot_meta *meta, uint64_t *total,
                    uint32_t *crc)
{
    struct node *n = ctx;
    struct store_snap_reader *r = NULL;
    int rc = store_snap_reader_open(n->st, group, &r, meta, total, crc);
    if (rc != KHO_OK) {
        LOGW("group %llu: %s", (unsigned long long)group,
             store_errmsg(n->st));
        return rc;
    }
    *h = r;
    return KHO_OK;
}

static int src_read(void *h, uint64_t offset, uint8_t *buf, size_t cap,
                    size_t *n)
{
    return store_snap_reader_read(h, offset, buf, cap, n);
}

static void src_close(void *h)
{
    store_snap_reader_close(h);
}

static int sink_begin(void *ctx, uint64_t group, uint64_t index,
                      uint64_t term, uint64_t total, uint32_t crc, void **h)
{
    struct node *n = ctx;
    struct store_stage *st = NULL;
    int rc = store_stage_begin(n->st, group, index, term, total, crc, &st);
    if (rc != KHO_OK) {
        LOGW("group %llu: %s", (unsigned long long)group,
             store_errmsg(n->st));
        return rc;
    }
    *h = st;
    return KHO_OK;
}

static int sink_write(void *h, const uint8_t *buf, size_t len)
{
    return store_stage_write(h, buf, len);
}

static int sink_finish(void *h, uint8_t *desc, size_t cap, size_t *len)
{
    if (cap < STORE_STAGE_DESC_BYTES) {
        return KHO_EINVAL;
    }
    *len = STORE_STAGE_DESC_BYTES;
    return store_stage_finish(h, desc);
}

static void sink_close(void *h)
{
    store_stage_close(h);
}

void node_set_net(struct node *n, struct net *net)
{
    n->net = net;
    struct xfer_store xs = {
        .ctx = n,
        .src_open = src_open,
        .src_read = src_read,
        .src_close = src_close,
        .sink_begin = sink_begin,
        .sink_write = sink_write,
        .sink_finish = sink_finish,
        .sink_close = sink_close,
    };
    if (xfer_create(net, &xs, on_snapshot, n, true, &n->xfer) != KHO_OK) {
        LOGE("no memory for snapshot transfers; snapshots will not reach "
             "lagging followers");
    } else {
        /* Before the first peer: no chunk can arrive earlier. */
        net_set_chunk_handlers(net, on_chunk, on_chunk_ack, n);
    }
    net_learn(n, n->peers, n->n_peers);
    sync_registries(n);
}

void node_member_conf(struct node *n, struct raft_conf *out)
{
    memset(out, 0, sizeof(*out));
    rcu_read_lock();
    const struct node_map *m = rcu_dereference(n->map);
    for (size_t i = 0; m != NULL && i < m->n_nodes; i++) {
        if (m->nodes[i].state == META_NODE_MEMBER &&
            out->n < RAFT_MEMBERS_MAX) {
            out->members[out->n].id = m->nodes[i].id;
            out->members[out->n].role = RAFT_VOTER;
            out->n++;
        }
    }
    rcu_read_unlock();
    if (out->n == 0) {
        *out = n->initial;
        for (uint32_t i = 0; i < out->n; i++) {
            out->members[i].role = RAFT_VOTER; /* placement: every node */
        }
    }
}

int node_peer_info(struct node *n, uint64_t id, struct node_peer *out)
{
    int rc = KHO_ENOTFOUND;
    rcu_read_lock();
    const struct node_map *m = rcu_dereference(n->map);
    for (size_t i = 0; m != NULL && i < m->n_nodes; i++) {
        if (m->nodes[i].id == id) {
            *out = m->nodes[i];
            rc = KHO_OK;
        }
    }
    rcu_read_unlock();
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
    out->lease_reads =
        atomic_load_explicit(&c->lease_reads, memory_order_relaxed);
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
    xfer_on_chunk(n->xfer, from, c, clock_mono_ms());
}

static void on_chunk_ack(void *ctx, uint64_t from,
                         const struct net_chunk_ack *a)
{
    struct node *n = ctx;
    xfer_on_ack(n->xfer, from, a, clock_mono_ms());
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
        if (!n->lease_reads ||
            clock_mono_ms() > n->tick_due_ms + NODE_LEASE_LAG_MAX_MS) {
            raft_lease_drop(g->raft); /* off, or our ticks trail the clock */
        }
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

/* Steps a peer's messages into their groups. A SNAPSHOT is taken only
 * from a completed transfer (`streamed`), whose payload names data the
 * store staged; one in an ordinary frame is dropped. */
static void step_batch(struct node *n, struct codec_batch *b, bool streamed)
{
    for (size_t i = 0; i < b->n; i++) {
        if ((b->msgs[i].type == RAFT_MSG_SNAPSHOT) != streamed) {
            LOGW("group %llu: dropped a %s from node %llu",
                 (unsigned long long)b->msgs[i].group_id,
                 streamed ? "non-snapshot message in a snapshot transfer"
                          : "snapshot outside a snapshot transfer",
                 (unsigned long long)b->msgs[i].from);
            continue;
        }
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

static void finish_applied_reads(struct group *g);

/* The batch holding g's pending applies was committed: reads may see them. */
static void applied_committed(struct group *g)
{
    if (g->applied_pending > g->applied) {
        g->applied = g->applied_pending;
    }
    g->applied_pending = 0;
}

/* Gives the pending reads their read index from the ready batch, then
 * answers those it allows. */
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
    finish_applied_reads(g);
}

/* Answers the reads whose read index the store's applied state reached
 * (or that failed). */
static void finish_applied_reads(struct group *g)
{
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

/* A staged snapshot about to be stepped (raft thread). */
static void note_staged(struct node *n, const uint8_t *desc)
{
    if (n->n_staged < NODE_STAGED_MAX) {
        memcpy(n->staged[n->n_staged++].desc, desc, STORE_STAGE_DESC_BYTES);
    } else {
        LOGW("more than %u snapshots arrived in one loop; the store "
             "collects the extra staged data at its next start",
             NODE_STAGED_MAX);
    }
}

/* The core installs `sn`: its stage is no longer to be dropped. */
static void forget_staged(struct node *n, const struct raft_snapshot *sn)
{
    for (size_t i = 0; i < n->n_staged; i++) {
        if (sn->len == STORE_STAGE_DESC_BYTES &&
            memcmp(n->staged[i].desc, sn->data, sn->len) == 0) {
            n->staged[i] = n->staged[--n->n_staged];
            return;
        }
    }
}

/* Deletes a bounded share of discarded data (raft thread, a transaction
 * of its own, only while there is some). */
static void collect_garbage(struct node *n)
{
    if (!store_gc_pending(n->st)) {
        return;
    }
    struct store_batch *b = NULL;
    bool more = false;
    flush_open(n);
    int rc = store_write_begin(n->st, &b);
    if (rc == KHO_OK) {
        rc = store_batch_gc(b, NODE_GC_KEYS_PER_LOOP, &more);
        if (rc == KHO_OK) {
            rc = store_write_commit(b);
        } else {
            store_write_abort(b);
        }
    }
    if (rc != KHO_OK) {
        LOGW("collecting discarded data failed: %s (%s); retried later",
             kho_strerror(rc), store_errmsg(n->st));
    }
}

/* Whether g's ready batch must be committed before the loop goes on: it
 * persists something (raft.h: entries, a snapshot, a term or vote - a
 * changed commit index alone can wait, since it is only ever learnt
 * again), or reads wait for its apply, or it applies to the meta group
 * (whose records the loop reads back from the store). */
static bool ready_needs_commit(const struct group *g)
{
    const struct raft_ready *rd = &g->rd;
    return rd->snapshot != NULL || rd->n_entries > 0 ||
           (rd->hs_changed && (rd->hs.term != g->synced_term ||
                               rd->hs.vote != g->synced_vote)) ||
           rd->n_reads > 0 || g->reads != NULL ||
           (g->id == NODE_META_GROUP && rd->n_committed > 0);
}

/* Step 4 of the loop up to, not including, the commit: every group's
 * persist and apply in batch *out (left open on success), added to the
 * batch a previous loop left open if there is one. *must_commit: some
 * group's ready needs the commit before the loop goes on. */
static int persist_and_apply(struct node *n, struct store_batch **out,
                             uint64_t *applied_out, bool *must_commit)
{
    struct store_batch *b = n->open;
    uint64_t apply_us = 0, applied = 0;
    int rc = KHO_OK;
    if (b == NULL) {
        rc = store_write_begin(n->st, &b);
    }
    n->open = NULL;
    *must_commit = n->n_staged > 0;
    for (size_t i = 0; rc == KHO_OK && i < n->n_groups; i++) {
        struct group *g = &n->groups[i];
        if (!g->has_rd) {
            continue;
        }
        if (ready_needs_commit(g)) {
            *must_commit = true;
        }
        if (g->rd.hs_changed) {
            g->synced_term = g->rd.hs.term;
            g->synced_vote = g->rd.hs.vote;
        }
        if (g->rd.snapshot != NULL) {
            LOGI("group %llu: installing a snapshot at index %llu (staged "
                 "from the leader's stream)",
                 (unsigned long long)g->id,
                 (unsigned long long)g->rd.snapshot->meta.index);
            forget_staged(n, g->rd.snapshot);
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
    /* Snapshots stepped but not installed (the core had their index
     * already): their staged data goes. */
    for (size_t i = 0; rc == KHO_OK && i < n->n_staged; i++) {
        rc = store_batch_stage_drop(b, n->staged[i].desc,
                                    STORE_STAGE_DESC_BYTES);
    }
    n->n_staged = 0;
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

static bool link_alive(const struct node *n, uint64_t id);

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
            .quiet = rs.quiet,
        };
        for (uint32_t k = 0; k < rs.conf.n; k++) {
            struct node_replica_status *rp = &st[i].replicas[k];
            rp->id = rs.conf.members[k].id;
            rp->voter = rs.conf.members[k].role == RAFT_VOTER;
            raft_progress(n->groups[i].raft, rp->id, &rp->match, &rp->active);
            rp->active = recently_active(&n->groups[i], rp->id, rp->active,
                                         now);
            if (rs.quiet && rs.role == RAFT_LEADER) {
                /* A quiet group exchanges nothing: its members are as
                 * alive as their nodes' links (beacons). */
                rp->active = link_alive(n, rp->id);
            }
        }
        memcpy(st[i].registry, n->groups[i].registry, NODE_REGISTRY_BYTES);
        st[i].shard = n->groups[i].shard;
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
    uint64_t applied = 0, carried = n->open_applied;
    bool was_open = n->open != NULL, must_commit = false;
    int rc = persist_and_apply(n, &b, &applied, &must_commit);
    uint64_t now = clock_mono_ms();
    bool defer = rc == KHO_OK && !must_commit &&
                 (!was_open || now < n->open_until_ms);
    if (rc == KHO_OK) {
        /* Committed entries are durable on a majority already (the core
         * counts each node only up to what it persisted), so their answers
         * need not wait for this batch's fsync: were it lost, a restart
         * applies them again from the log, with the same outcome. Reads
         * still wait for it (answer_reads() below, after g->applied moves
         * past the commit). */
        /* Request threads learn the commit index before any write up to
         * it is answered (node_lease_floor), and a transfer's end of the
         * lease before its message leaves (send_all below). */
        publish_leases(n);
        for (size_t i = 0; i < n->n_groups; i++) {
            if (n->groups[i].has_rd) {
                answer_props(&n->groups[i]);
            }
        }
        if (defer) {
            /* Nothing here needs the fsync before the loop goes on: leave
             * the batch open for the next loop's persist to share one
             * commit with it (flush_open() bounds how long). */
            n->open = b;
            n->open_applied = carried + applied;
            if (!was_open) {
                n->open_until_ms = now + NODE_APPLY_DEFER_MS;
            }
        } else {
            n->open_applied = 0;
            rc = commit_batch(n, b, carried + applied);
        }
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
            if (!defer) {
                applied_committed(g);
                finish_applied_reads(g);
            }
            continue;
        }
        if (g->rd.snapshot != NULL &&
            g->rd.snapshot->meta.index > g->applied) {
            /* An install moves the applied index too (a snapshot may come
             * with no entry after it). */
            g->applied = g->rd.snapshot->meta.index;
        }
        if (g->rd.n_committed > 0) {
            g->applied_pending = g->rd.committed[g->rd.n_committed - 1].index;
        }
        if (!defer) {
            applied_committed(g);
        }
        answer_reads(g);
        raft_advance(g->raft);
        g->has_rd = false;
    }
    return true;
}

/* Commits the batch a loop left open, if any; every later store write of
 * the raft thread must come after this (LMDB has one writer). */
static void flush_open(struct node *n)
{
    if (n->open == NULL) {
        return;
    }
    int rc = commit_batch(n, n->open, n->open_applied);
    n->open = NULL;
    n->open_applied = 0;
    if (rc != KHO_OK) {
        /* As in ready_cycle(): the applies are in the log of a majority,
         * and a restart applies them again. */
        LOGE("store write failed: %s (%s); stopping", kho_strerror(rc),
             store_errmsg(n->st));
        abort();
    }
    for (size_t i = 0; i < n->n_groups; i++) {
        applied_committed(&n->groups[i]);
        finish_applied_reads(&n->groups[i]);
    }
}

/* --- Node records in the meta group -------------------------------------- */

static void meta_req_done(struct node_req *r)
{
    struct node *n = r->ctx;
    int err = r->err != KHO_OK ? r->err : r->res.result;
    if (err != KHO_OK) {
        LOGW("meta group: %s failed: %s; tried again later", n->meta_what,
             kho_strerror(err));
    } else {
        LOGI("meta group: %s: done", n->meta_what);
    }
    free(n->meta_buf);
    n->meta_buf = NULL;
    n->meta_busy = false;
}

/* The meta leader's own proposal (one at a time): encodes sr and submits
 * it to the meta group; meta_req_done() logs the outcome. */
static void meta_propose(struct node *n, struct store_request *sr,
                         const char *what)
{
    sr->time_ms = clock_wall_ms();
    sr->writer = n->name;
    sr->writer_len = strlen(n->name);
    size_t cap = store_request_size(sr), len = 0;
    n->meta_buf = cap > 0 ? malloc(cap) : NULL;
    if (n->meta_buf == NULL ||
        store_request_encode(sr, n->meta_buf, cap, &len) != KHO_OK) {
        free(n->meta_buf);
        n->meta_buf = NULL;
        LOGW("meta group: %s: the request cannot be made", what);
        return;
    }
    n->meta_what = what;
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
    struct store_request sr = {
        .cmps = cmps, .n_cmp = k, .ops = ops, .n_ops = k};
    meta_propose(n, &sr, "recording the cluster's nodes");
}

/*
 * Placement follows membership: when the meta leader sees the set of
 * member nodes change (a node added or removed), it plans moves (meta.h:
 * replicas off nodes that left, then even counts per node) and records
 * them, PLAN_MOVES_MAX at a time, until the plan is empty. The shards'
 * leaders then move their replicas (reconcile_group()).
 */
static void auto_rebalance(struct node *n)
{
    struct group *meta = &n->groups[0];
    struct raft_status rs;
    raft_status(meta->raft, &rs);
    uint64_t now = clock_mono_ms();
    const struct node_map *m = n->map;
    if (rs.role != RAFT_LEADER || n->meta_busy || meta->applied < rs.commit ||
        m == NULL || now < n->next_rebalance_ms) {
        return;
    }
    uint64_t members[NODE_NODES_MAX], sig = UINT64_C(0xcbf29ce484222325);
    size_t k = 0;
    for (size_t i = 0; i < m->n_nodes; i++) {
        if (m->nodes[i].state == META_NODE_MEMBER) {
            members[k++] = m->nodes[i].id;
            sig = (sig ^ m->nodes[i].id) * UINT64_C(0x100000001b3);
        }
    }
    if (k == 0 || sig == n->balanced_sig) {
        return;
    }
    n->next_rebalance_ms = now + NODE_REBALANCE_MS;
    static struct place_node place[NODE_NODES_MAX];
    static struct store_compare cmps[STORE_TXN_OPS_MAX];
    static struct store_op ops[STORE_TXN_OPS_MAX];
    struct plan *p = NULL;
    size_t n_ops = 0;
    if (plan_create(m->regs, m->n_regs, &p) != KHO_OK) {
        return;
    }
    plan_nodes(p, members, k, place);
    size_t moves = plan_rebalance(p, place, k);
    moves += plan_leader_swaps(p);
    if (moves == 0) {
        n->balanced_sig = sig; /* placement fits these members */
    } else if (plan_ops(p, cmps, ops, STORE_TXN_OPS_MAX, &n_ops) == KHO_OK &&
               n_ops > 0) {
        LOGI("meta group: the members changed; moving %zu shard replicas "
             "or leaderships to even the load",
             moves);
        struct store_request sr = {
            .cmps = cmps, .n_cmp = n_ops, .ops = ops, .n_ops = n_ops};
        meta_propose(n, &sr, "moving shard replicas after a membership "
                             "change");
    }
    plan_free(p);
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
    if (g->id != NODE_META_GROUP) {
        *n_want = g->n_want;
        memcpy(want, g->want, g->n_want * sizeof(*want));
        return g->want_known;
    }
    /* The raft thread is the table's only writer: no read lock needed. */
    const struct node_map *m = n->map;
    for (size_t i = 0; m != NULL && i < m->n_nodes; i++) {
        if (m->nodes[i].state == META_NODE_MEMBER) {
            want[(*n_want)++] = m->nodes[i].id;
        } else {
            removed[(*n_removed)++] = m->nodes[i].id;
        }
    }
    return m != NULL && m->n_nodes > 0;
}

/*
 * Leadership follows placement: once per version of the shard's record,
 * the leader hands the group to the shard's first replica (meta.h) when
 * that one is a caught-up, active voter. Only a new record version
 * triggers it, so an operator's `leader transfer` or a drain stays until
 * the placement changes again.
 */
static void prefer_leader(struct node *n, struct group *g,
                          const struct raft_status *rs)
{
    if (!g->want_known || g->n_want == 0 || g->led_rev == g->want_rev) {
        return;
    }
    uint64_t pref = g->want[0], match = 0;
    bool active = false;
    if (pref == n->id) {
        g->led_rev = g->want_rev;
        return;
    }
    if (!raft_conf_is_voter(&rs->conf, pref) ||
        raft_progress(g->raft, pref, &match, &active) != KHO_OK ||
        match < rs->last_index) {
        return; /* not yet: looked at again at the next reconcile */
    }
    if (!active && !(rs->quiet && link_alive(n, pref))) {
        return; /* a quiet group hears nothing: its node's link tells */
    }
    int rc = raft_transfer_leader(g->raft, pref);
    LOGI("group %llu: handing leadership to node %llu, where placement puts "
         "it: %s",
         (unsigned long long)g->id, (unsigned long long)pref,
         kho_strerror(rc));
    g->led_rev = g->want_rev;
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
    /* The meta group keeps META_VOTERS_MAX voters; its other members are
     * learners. */
    bool room = g->id != NODE_META_GROUP ||
                raft_conf_voters(&rs.conf) < META_VOTERS_MAX;
    for (uint32_t i = 0; room && i < rs.conf.n; i++) {
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
    if (!meta) {
        prefer_leader(n, g, &rs);
    }
}

/*
 * A replica that moved away: the meta group no longer places the group
 * here and the group's own configuration (as this node applied it) no
 * longer holds this node - its leader has taken it out. The group is
 * closed and deleted: its log and raft state at once, its data through the
 * store's garbage collection (a bounded share per loop), so dropping a
 * large replica costs the raft thread nothing noticeable. A node cut off
 * before it applied its own removal keeps the replica until it catches up.
 */
static void drop_moved_groups(struct node *n)
{
    for (size_t i = n->n_groups; i-- > 1;) {
        struct group *g = &n->groups[i];
        struct raft_conf conf;
        raft_applied_conf(g->raft, &conf);
        if (!g->want_known || in_list(g->want, g->n_want, n->id) ||
            conf_has(&conf, n->id) || conf.n == 0) {
            continue;
        }
        uint64_t gid = g->id;
        flush_open(n);
        unpublish_lease(n, g);
        if (n->xfer != NULL) {
            xfer_cancel(n->xfer, gid);
        }
        fail_all(g, KHO_ENOTLEADER);
        raft_destroy(g->raft);
        store_group_close(g->sg);
        free(g->results);
        struct store_batch *b = NULL;
        int rc = store_write_begin(n->st, &b);
        if (rc == KHO_OK) {
            rc = store_batch_group_delete(b, gid);
            if (rc == KHO_OK) {
                rc = store_write_commit(b);
            } else {
                store_write_abort(b);
            }
        }
        memmove(g, g + 1, (n->n_groups - i - 1) * sizeof(*g));
        n->n_groups--;
        memset(&n->groups[n->n_groups], 0, sizeof(n->groups[0]));
        if (rc != KHO_OK) {
            LOGW("group %llu moved away; deleting its data failed: %s (%s)",
                 (unsigned long long)gid, kho_strerror(rc),
                 store_errmsg(n->st));
        } else {
            LOGI("group %llu moved away from this node; its replica is "
                 "deleted",
                 (unsigned long long)gid);
        }
    }
}

/* After a loop: registries the meta group just created get their local
 * groups, the meta leader records missing nodes, leaders move their groups
 * towards where the meta group says they live, and long logs are compacted
 * into snapshots. */
static void after_cycle(struct node *n)
{
    record_nodes(n);
    auto_rebalance(n);
    uint64_t now = clock_mono_ms();
    if (now >= n->next_reconcile_ms) {
        n->next_reconcile_ms = now + NODE_RECONCILE_MS;
        for (size_t i = 0; i < n->n_groups; i++) {
            reconcile_group(n, &n->groups[i]);
        }
        drop_moved_groups(n);
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
        flush_open(n);
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

/* --- Quiet groups ---------------------------------------------------------- */

static bool all_quiet(const struct node *n)
{
    for (size_t i = 0; i < n->n_groups; i++) {
        if (!raft_quiet(n->groups[i].raft)) {
            return false;
        }
    }
    return true;
}

/* Whether node id's link is alive: a frame of any kind from it within
 * NODE_PEER_DEAD_MS, as of the last liveness() (raft thread). */
static bool link_alive(const struct node *n, uint64_t id)
{
    if (id == n->id) {
        return true;
    }
    for (size_t p = 0; p < n->n_ages; p++) {
        if (n->ages[p].id == id) {
            return n->ages[p].ms <= NODE_PEER_DEAD_MS;
        }
    }
    return false;
}

/*
 * Failure detection for quiet groups (raft.h, "Quiescence"), every
 * NODE_BEACON_MS: this node sends a beacon to the voters of the quiet
 * groups it leads and to the leaders of the quiet groups it votes in - one
 * frame per node pair, whatever the number of groups - and a quiet group
 * it follows whose leader's node has been silent (no frame of any kind)
 * for NODE_PEER_DEAD_MS is told that the leader is down, so it wakes and
 * may elect another. The links' ages also stand for the members' activity
 * in a quiet group's status (publish_status()).
 */
static void liveness(struct node *n)
{
    if (n->net == NULL) {
        return;
    }
    static struct net_peer_stats st[NET_PEERS_MAX];
    size_t ns = net_peer_stats(n->net, st, NET_PEERS_MAX);
    n->n_ages = 0;
    for (size_t p = 0; p < ns && p < NET_PEERS_MAX; p++) {
        n->ages[n->n_ages++] = (struct peer_age){st[p].id, st[p].recv_age_ms};
    }
    uint64_t to[NET_PEERS_MAX];
    size_t k = 0;
    for (size_t i = 0; i < n->n_groups; i++) {
        struct group *g = &n->groups[i];
        if (!raft_quiet(g->raft)) {
            continue;
        }
        struct raft_status rs;
        raft_status(g->raft, &rs);
        /* A leader beacons its voters; a voter its leader (learners never
         * campaign, and nobody counts them in a quorum). */
        bool voter = raft_conf_is_voter(&rs.conf, n->id);
        for (uint32_t m = 0; voter && m < rs.conf.n; m++) {
            uint64_t id = rs.conf.members[m].id;
            bool want = rs.role == RAFT_LEADER
                            ? rs.conf.members[m].role == RAFT_VOTER
                            : id == rs.leader;
            if (want && id != n->id && !in_list(to, (uint32_t)k, id) &&
                k < NET_PEERS_MAX) {
                to[k++] = id;
            }
        }
        if (rs.role != RAFT_LEADER && rs.leader != 0 &&
            rs.leader != n->id && !link_alive(n, rs.leader)) {
            LOGI("group %llu: leader node %llu silent for over %u ms; "
                 "waking the quiet group",
                 (unsigned long long)g->id, (unsigned long long)rs.leader,
                 NODE_PEER_DEAD_MS);
            raft_peer_down(g->raft, rs.leader);
        }
    }
    for (size_t i = 0; i < k; i++) {
        net_send_beacon(n->net, to[i]);
    }
}

/* --- The raft thread ---------------------------------------------------- */

/* Gives every group that is not quiet the ticks that fell due by `now`
 * (at least one): up to NODE_TICK_CATCHUP_MAX, so the groups' clocks keep
 * up with a loop slowed by a long commit. After a longer stall it gives
 * one and counts afresh from now, as if the ticks in between never came
 * due: election timers do not all fire at once after a pause, and since
 * the groups' clocks then fall behind real time, every lease goes (the
 * bound in node.h). */
static void tick_groups(struct node *n, uint64_t now, uint64_t *next_tick)
{
    uint64_t due = (now - *next_tick) / NODE_TICK_MS + 1u;
    bool stalled = due > NODE_TICK_CATCHUP_MAX;
    if (stalled) {
        due = 1;
    }
    for (size_t i = 0; i < n->n_groups; i++) {
        struct group *g = &n->groups[i];
        if (stalled) {
            raft_lease_drop(g->raft);
        }
        for (uint64_t t = 0; t < due && !raft_quiet(g->raft); t++) {
            raft_tick(g->raft);
        }
        expire_list(g, &g->props, now);
        expire_list(g, &g->reads, now);
    }
    if (stalled) {
        *next_tick = now + NODE_TICK_MS;
        n->tick_due_ms = now;
    } else {
        n->tick_due_ms = *next_tick + (due - 1u) * NODE_TICK_MS;
        *next_tick = n->tick_due_ms + NODE_TICK_MS;
    }
}

static void *raft_main(void *arg)
{
    struct node *n = arg;
    n->tick_due_ms = clock_mono_ms();
    uint64_t next_tick = n->tick_due_ms + NODE_TICK_MS;
    uint64_t next_status = 0, next_beacon = 0;
    for (;;) {
        /* Nothing to tick while every group is quiet: sleep until the next
         * beacon (any message or request wakes the thread at once). */
        uint64_t wake = next_tick;
        if (all_quiet(n) && !store_gc_pending(n->st) && wake < next_beacon) {
            wake = next_beacon;
        }
        if (n->open != NULL && n->open_until_ms < wake) {
            wake = n->open_until_ms;
        }
        pthread_mutex_lock(&n->mu);
        while (!n->stopping && n->queued == 0 && clock_mono_ms() < wake) {
            struct timespec ts;
            ts.tv_sec = (time_t)(wake / 1000u);
            ts.tv_nsec = (long)(wake % 1000u) * 1000000L;
            pthread_cond_timedwait(&n->cv, &n->mu, &ts);
        }
        if (n->stopping) {
            pthread_mutex_unlock(&n->mu);
            flush_open(n);
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
            if (ib->owned != NULL) {
                note_staged(n, ib->owned);
            }
            step_batch(n, &ib->b, ib->owned != NULL);
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
            tick_groups(n, now, &next_tick);
        }
        bool worked = ready_cycle(n);
        publish_leases(n);
        if (n->open != NULL && clock_mono_ms() >= n->open_until_ms) {
            flush_open(n);
        }
        collect_garbage(n);
        if (worked || now >= next_status) {
            after_cycle(n);
        }
        if (worked || now >= next_status) {
            publish_status(n);
            next_status = now + 50u;
        }
        if (now >= next_beacon) {
            liveness(n);
            next_beacon = now + NODE_BEACON_MS;
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
    xfer_stop(n->xfer); /* its threads send on the transport */
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
    rcu_barrier(); /* tables handed to call_rcu() are freed */
    map_free(n->map);
    pthread_cond_destroy(&n->cv);
    free(n);
}

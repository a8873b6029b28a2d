/*
 * node.h - the multi-raft host: one raft thread drives every local group.
 *
 * Each loop of the raft thread (raft.h, "Driving a group"):
 *   1. drain the bounded inbound queue: peer batches (stepped into their
 *      groups), client proposals (raft_propose) and linearizable reads
 *      (raft_read_index);
 *   2. tick every group when the tick timer (NODE_TICK_MS) is due;
 *   3. send the leaders' appends, heartbeats and snapshots at once (a
 *      leader counts itself towards a commit only for what it persisted,
 *      so followers write in parallel with it);
 *   4. for every group with a ready batch: persist its snapshot, entries and
 *      hard state and apply its committed entries, all groups in ONE store
 *      write transaction committed once (group commit: one fsync); then
 *      send the other messages (votes, acknowledgements), one NNG frame per
 *      peer; registries the meta group created get their local groups, and
 *      logs longer than node_config.compact_entries are compacted;
 *   5. answer proposals whose entry applied (same index and term) and reads
 *      whose read index is applied; raft_advance() every group.
 *
 * Client requests are `struct node_req`s owned by the caller; the raft
 * thread fills in the outcome and calls req->done_cb exactly once, on the
 * raft thread (the callback must not block: the API hands the request back
 * to an NNG worker). Requests not answered within NODE_REQ_TIMEOUT_MS get
 * KHO_ETIMEOUT: the outcome of a proposal is then unknown.
 */
#ifndef KHO_NODE_H
#define KHO_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../client/kho_err.h"
#include "../common/metrics.h"
#include "../raft/raft.h"
#include "../store/store.h"
#include "../transport/peer.h"

/* Raft groups on one node: the meta group and the registries it hosts. */
#define NODE_GROUPS_MAX 256u
/* Registries in the cluster (hosted here or not), and their shards in all
 * (each shard is one raft group and one entry of the registry table). */
#define NODE_REGISTRIES_MAX 255u
#define NODE_SHARD_ENTRIES_MAX 4096u
#define NODE_NAME_BYTES 65u
#define NODE_REGISTRY_BYTES 65u
/* Node records the meta group keeps (members and removed nodes: ids are
 * never reused); at most RAFT_MEMBERS_MAX are members at once. */
#define NODE_NODES_MAX 64u
/* Replicas of one registry shard. */
#define NODE_REPLICAS_MAX 7u
#define NODE_REPLICAS_DEFAULT 3u
/* The meta group: nodes and registries (ARCHITECTURE.md, "Data model"). */
#define NODE_META_GROUP 0u
/* Log compaction: a group's log is compacted into a snapshot once this many
 * entries were applied since the last one. */
#define NODE_COMPACT_ENTRIES 20000u
#define NODE_COMPACT_ENTRIES_MIN 16u
#define NODE_COMPACT_ENTRIES_MAX 10000000u
/* ... or once the entries appended since then hold this many bytes: a
 * restart reads the log back to its last configuration entry, so the log's
 * size bounds restart time as much as the number of entries does. */
#define NODE_COMPACT_BYTES (UINT64_C(256) << 20)
#define NODE_COMPACT_BYTES_MIN (UINT64_C(1) << 20)
#define NODE_COMPACT_BYTES_MAX (UINT64_C(1) << 40)
/* How often a leader compares its group's configuration with where the
 * meta group says the group should live, and how close to the leader's log
 * a learner must be to become a voter. */
#define NODE_RECONCILE_MS 100u
/* How often the meta leader may record a rebalancing plan after the
 * members changed (one plan moves at most PLAN_MOVES_MAX replicas). */
#define NODE_REBALANCE_MS 1000u
#define NODE_CATCHUP_ENTRIES 64u
#define NODE_TICK_MS 10u
#define NODE_ELECTION_TICKS 15u
#define NODE_HEARTBEAT_TICKS 3u
/* Leader leases (raft.h, lease_reads). A leader answers a linearizable
 * read from its own state while its tick count is below T + 15 - 6, where
 * T is the tick at which it sent a heartbeat round a quorum acknowledged.
 * The raft thread keeps every node's tick count close to its monotonic
 * clock: it delivers overdue ticks, at most NODE_TICK_CATCHUP_MAX in one
 * loop, and after a longer stall starts counting afresh and drops every
 * lease; and a leader whose ticks trail its clock by more than
 * NODE_LEASE_LAG_MAX_MS when a read arrives drops its lease and asks a
 * quorum instead (a paused process, or a loop stuck in a long fsync, never
 * answers from a lease that may have run out meanwhile). So a lease ends at
 * most (15 - 6 - 1) ticks + 20 ms = 100 ms of real time after its round
 * was sent, while a follower that acknowledged the round refuses votes for
 * 15 of its own ticks, at least (15 - 1 - 3) ticks = 110 ms of real time,
 * since its ticks may be caught up; the 10 ms left over absorb clocks that
 * run at different rates. `khod --reads quorum` turns leases off. */
#define NODE_LEASE_DRIFT_TICKS 6u
#define NODE_TICK_CATCHUP_MAX 3u
#define NODE_LEASE_LAG_MAX_MS 20u
/* Leases are published to request threads in a table of this many slots
 * (group id hashed, at most NODE_LEASE_PROBES slots probed); a group that
 * finds no free slot has its leased reads go through the raft thread. */
#define NODE_LEASE_SLOTS 1024u
#define NODE_LEASE_PROBES 8u
/* Quiet groups (raft.h, "Quiescence"): a leader with nothing to do for
 * this many ticks quiets its group - no ticks, no heartbeats. Every
 * NODE_BEACON_MS a node sends a beacon to the voters of the quiet groups it
 * leads and to the leaders of those it votes in (one frame per node pair);
 * a quiet follower whose leader's node has been silent for
 * NODE_PEER_DEAD_MS wakes (and elects another leader if it must), so an
 * idle group fails over in about that time plus an election. */
#define NODE_QUIESCE_TICKS 60u
#define NODE_BEACON_MS 1000u
#define NODE_PEER_DEAD_MS 3000u
/* A leader's status shows a member active when the core reported it
 * active within this long: the core clears its flags every election
 * timeout (check-quorum), so one reading right after that would show a
 * healthy member inactive until its next heartbeat answer. */
#define NODE_ACTIVE_HOLD_MS (2u * NODE_ELECTION_TICKS * NODE_TICK_MS)
/* A loop whose store batch only applied committed entries (no entries,
 * snapshot, term or vote to persist; no read waiting for it) leaves the
 * batch open, so that the next loop's persist - a single client's next
 * write, typically - shares one commit and fsync with it; it is committed
 * at the latest this long after it was opened. Linearizable reads wait for
 * that commit (they read what is committed). */
#define NODE_APPLY_DEFER_MS 2u
/* Inbound queue bound (peer frames and client requests together). */
#define NODE_QUEUE_MAX 16384u
/* Proposals and reads waiting for an answer, per group. */
#define NODE_PENDING_MAX 16384u
#define NODE_REQ_TIMEOUT_MS 3000u

enum node_req_kind {
    NODE_REQ_PROPOSE = 1,  /* data: a store request */
    NODE_REQ_READ = 2,     /* linearizable read barrier (ReadIndex) */
    NODE_REQ_TRANSFER = 3, /* hand the group's leadership to `target` */
    NODE_REQ_DRAIN = 4,    /* hand every leadership of this node away */
};

struct node_req {
    /* Set by the caller. */
    uint32_t kind;
    uint64_t group_id;
    const uint8_t *data; /* stays valid until done_cb */
    size_t len;
    uint64_t target;     /* NODE_REQ_TRANSFER */
    void (*done_cb)(struct node_req *r);
    void *ctx;
    /* Set by the node before done_cb. */
    int err;          /* KHO_OK or why the request failed */
    uint64_t leader;  /* leader id hint with KHO_ENOTLEADER (0: unknown) */
    struct store_apply_result res; /* NODE_REQ_PROPOSE on KHO_OK */
    /* Private to the node. */
    uint64_t id_, index_, term_, deadline_ms_;
    struct node_req *next_;
};

#define NODE_URL_BYTES 256u

/* A node of the cluster: what the meta group records of it. */
struct node_peer {
    uint64_t id;
    uint32_t state; /* enum meta_node_state (server/node/meta.h) */
    char name[NODE_NAME_BYTES];
    char peer_url[NODE_URL_BYTES];
    char client_url[NODE_URL_BYTES];
};

struct node_config {
    uint64_t id;
    char name[NODE_NAME_BYTES];
    /* Joining a running cluster: the meta group starts empty here and the
     * meta leader adds this node (khoctl member add). */
    bool join;
    /* Compact a group's log once this many entries were applied since its
     * snapshot (0: NODE_COMPACT_ENTRIES). */
    uint32_t compact_entries;
    /* ... or this many bytes of entries (0: NODE_COMPACT_BYTES). */
    uint64_t compact_bytes;
    /* Linearizable reads from leader leases (NODE_LEASE_DRIFT_TICKS);
     * false: every read waits for a quorum heartbeat round. */
    bool lease_reads;
    /* Every node of the initial cluster, this one included: the meta
     * group's leader records each in the meta group. */
    struct node_peer peers[RAFT_MEMBERS_MAX];
    size_t n_peers;
    struct raft_conf initial; /* the meta group's voters at bootstrap: every
                                 node of the initial cluster */
};

/* One shard of a registry as the meta group records it (the registry
 * table holds one entry per shard; registry-wide fields are repeated). */
struct node_registry {
    char name[NODE_REGISTRY_BYTES];
    uint64_t group_id;   /* the shard's group (meta.h: meta_shard_group) */
    uint64_t base_id;    /* the registry's: the meta revision that created it */
    uint32_t shard;      /* 0-based */
    uint32_t n_shards;
    uint32_t want;       /* replicas per shard */
    uint64_t home;       /* node id, 0: none */
    uint32_t n_replicas;
    uint64_t replicas[NODE_REPLICAS_MAX]; /* where it should live now;
                                             [0]: where it should lead */
    uint32_t n_initial;
    uint64_t initial[NODE_REPLICAS_MAX];  /* who bootstrapped its group */
    uint64_t mod_rev;                     /* of its meta record */
    uint64_t created_ms;
    char creator[NODE_NAME_BYTES];
    bool local;          /* a replica lives on this node */
};

/* A member of a group, as the group's leader sees it. */
struct node_replica_status {
    uint64_t id;
    bool voter;
    bool active;    /* heard from within an election timeout */
    uint64_t match; /* its durable log index, as last acknowledged */
};

struct node_group_status {
    uint64_t group_id;
    char registry[NODE_REGISTRY_BYTES];
    uint32_t shard;
    enum raft_role role;
    bool quiet; /* idle: no ticks, no heartbeats (raft.h, "Quiescence") */
    uint64_t term, leader, commit, applied, last_index, first_index;
    /* Members of the configuration in force; match and active only when
     * this node leads the group. */
    struct node_replica_status replicas[RAFT_MEMBERS_MAX];
    uint32_t n_replicas;
};

struct node;

/*
 * Creates the node: opens (bootstrapping on first start) every configured
 * group in `st`. Does not start the thread. Errors: KHO_EINVAL, KHO_ENOMEM,
 * store errors; a message in err.
 */
int node_create(const struct node_config *c, struct store *st,
                struct node **out, char *err, size_t err_len);
/* Attaches the transport (before node_start). */
void node_set_net(struct node *n, struct net *net);
int node_start(struct node *n);
/* Stops the raft thread; every queued or pending request is answered
 * KHO_EUNAVAILABLE and later submissions fail at once. */
void node_stop(struct node *n);
void node_destroy(struct node *n);

/* The transport's receive callback (net_recv_cb). */
void node_on_batch(void *ctx, uint64_t from, struct codec_batch *b);

/* Queues a request. Errors (done_cb is then NOT called): KHO_EBUSY (queue
 * full), KHO_EUNAVAILABLE (node stopping). */
int node_submit(struct node *n, struct node_req *r);

/* Whether a linearizable read of group_id may be answered by the calling
 * thread from the store, without the raft thread: this node leads the
 * group under a lease that lasts beyond now (node.h, "Leader leases"). The
 * read must then see the store applied up to *floor (the group's commit
 * index when the lease was published, which is published before any write
 * up to it is answered); if it does not, it goes through node_submit().
 * Lock-free; any thread. */
bool node_lease_floor(struct node *n, uint64_t group_id, uint64_t *floor);

/*
 * The registry table is an immutable map (registries by name, then shard,
 * and the nodes) that the raft thread replaces whenever the meta group
 * changes and publishes with RCU (liburcu, bulletproof flavour): the
 * lookups below never take a lock, and never see a half-built table.
 */
/* Looks shard `shard` of a registry up by name (any thread).
 * Errors: KHO_ENOTFOUND (no such registry, or no such shard). */
int node_shard(struct node *n, const char *name, uint32_t shard,
               struct node_registry *out);
/* Shard 0 of a registry: what describes the registry as a whole. */
int node_registry(struct node *n, const char *name, struct node_registry *out);
/* The shard that holds `key` (kho_shard_of()). Errors: KHO_ENOTFOUND. */
int node_route(struct node *n, const char *name, const void *key,
               size_t key_len, struct node_registry *out);
/* Copies up to cap table entries (one per shard, in name and shard
 * order); returns how many exist. */
size_t node_registries(struct node *n, struct node_registry *out, size_t cap);
/* Reads the registries from the meta group's committed state in the store
 * (not the cached table): what a linearizable listing needs, one entry per
 * shard. `local` says whether this node is one of the shard's replicas.
 * Errors: store errors. */
int node_load_registries(struct node *n, struct node_registry *out,
                         size_t cap, size_t *count);
/* Reads the nodes the meta group records, in id order (committed state).
 * Errors: store errors. */
int node_load_nodes(struct node *n, struct node_peer *out, size_t cap,
                    size_t *count);
/* Leader of a local group as last published (0: unknown or not hosted). */
uint64_t node_leader_of(struct node *n, uint64_t group_id);
/* The nodes that are members of the cluster now (meta records in state
 * member; the start-up list until the meta group has recorded them), as
 * voters of a configuration: where registries may be placed. */
void node_member_conf(struct node *n, struct raft_conf *out);
/* What the meta group (or the start-up list) says of node id.
 * Errors: KHO_ENOTFOUND. */
int node_peer_info(struct node *n, uint64_t id, struct node_peer *out);
/* The meta group's voters at bootstrap (the nodes of the cluster). */
const struct raft_conf *node_members(const struct node *n);
/* Latest published status of the groups (copied); returns the count. */
size_t node_status(struct node *n, struct node_group_status *out, size_t cap);
uint64_t node_id(const struct node *n);
const char *node_name(const struct node *n);

/* What the raft thread counted since start-up (node_metrics()). */
struct node_metrics {
    uint64_t proposals;         /* accepted by a local leader */
    uint64_t proposals_refused; /* not leader, no room, too large */
    uint64_t reads;             /* read-index rounds started */
    uint64_t lease_reads;       /* node_lease_floor() found a lease */
    uint64_t entries_applied;
    /* One write transaction per loop: its commit (the fsync) and the part
     * spent applying committed entries before it. */
    struct metrics_hist_snap commit_latency;
    struct metrics_hist_snap apply_latency;
};

/* Counters of one local group, published with its status. */
struct node_group_metrics {
    uint64_t group_id;
    /* Times the group's known leader became another node (an unknown
     * leader in between is not counted), as this node saw it. */
    uint64_t leader_changes;
    uint64_t elections; /* campaigns this node started */
};

void node_metrics(struct node *n, struct node_metrics *out);
/* Latest published counters of the groups (copied); returns the count. */
size_t node_group_metrics(struct node *n, struct node_group_metrics *out,
                          size_t cap);

#endif /* KHO_NODE_H */

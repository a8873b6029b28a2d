/*
 * net.h - a tiny deterministic in-memory cluster for the raft core's unit
 * tests and the scenario runner (tests/scenarios/khoscen).
 *
 * Each node is a `struct raft` over a memstore (its durable state) plus a
 * toy state machine (a running hash of what it applied). Messages wait in
 * one FIFO queue until a test delivers them; links can be cut. Ready
 * batches are handled exactly in raft.h's driving order: install the
 * snapshot, persist entries and hard state, send messages, apply committed
 * entries and serve reads, advance. No wall clock and no randomness of its
 * own: the same calls always give the same trace.
 *
 * While it drives the cluster the harness checks Raft's safety properties
 * and reports every breach as a "VIOLATION" line in the trace (and in
 * net.violations): at most one leader per term, leader completeness, log
 * matching, state-machine safety (every node's applied hash at an index is
 * the same), commit never beyond the durable log, and that a granted vote
 * or an append acknowledgement only leaves once what it promises is
 * durable.
 */
#ifndef KHO_NET_H
#define KHO_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memstore.h"

/* Node ids run from 1 to NET_NODES_MAX. */
#define NET_NODES_MAX RAFT_MEMBERS_MAX
/* Messages in flight; more is a core bug (a message storm). */
#define NET_QUEUE_MAX 65536u
/* Read answers a node's host holds until its state machine catches up. */
#define NET_READS_MAX 4096u
/* Configurations a node remembers applying (to compact at any index). */
#define NET_CONFS_MAX 64u
/* Rounds of (process every ready, deliver every message) in a stabilize. */
#define NET_ROUNDS_MAX 10000u
/* Highest log index the safety checker tracks. */
#define NET_INDEX_MAX (UINT64_C(1) << 20)
/* Terms the one-leader-per-term checker remembers. */
#define NET_TERMS_MAX 4096u

/* A growing text buffer: the trace. */
struct net_buf {
    char *p;
    size_t len, cap;
};

void net_buf_printf(struct net_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void net_buf_reset(struct net_buf *b);
void net_buf_free(struct net_buf *b);

/* Options for net_add_nodes(). Zero values mean the defaults noted. */
struct net_opts {
    /* Initial configuration. With no voters given, the new nodes are the
     * voters of a new cluster when the cluster is empty, and otherwise
     * join with an empty configuration (to be added by a conf change). */
    raft_id voters[NET_NODES_MAX];
    uint32_t n_voters;
    raft_id learners[NET_NODES_MAX];
    uint32_t n_learners;
    bool pre_vote;
    bool check_quorum;
    uint32_t election_ticks;  /* 10 */
    uint32_t heartbeat_ticks; /* 1 */
    uint32_t quiesce_ticks;   /* 0: never quiesce */
    /* Called on each new node's config after the harness filled it. */
    void (*tune_cb)(struct raft_config *c, void *arg);
    void *tune_arg;
};

/* What a node's host holds: durable store, core, toy state machine. */
struct net_node {
    bool exists;
    raft_id id;
    struct memstore store;
    struct raft *r;
    struct raft_config cfg; /* as created; hs/applied/storage refreshed */
    /* Last role and term printed to the trace. */
    enum raft_role role;
    uint64_t term;
    /* The state machine: applied index/term and a hash of its history. */
    uint64_t applied;
    uint64_t applied_term;
    uint64_t sm_hash;
    uint64_t n_applied_entries; /* entries applied since creation */
    /* Configurations applied, oldest first (confs[0] from the snapshot). */
    uint64_t conf_index[NET_CONFS_MAX];
    struct raft_conf confs[NET_CONFS_MAX];
    uint32_t n_confs;
    /* Read answers waiting for the state machine to reach their index. */
    struct raft_read_state reads[NET_READS_MAX];
    uint32_t n_reads;
    uint64_t reads_served;
    uint64_t reads_failed;
};

/* A queued message owns copies of its entries and snapshot payload. */
struct net_msg {
    struct raft_msg m;
};

struct net_hist {
    bool set;
    uint64_t term;
    uint64_t hash; /* state-machine hash after applying this index */
};

struct net {
    uint64_t seed;
    uint64_t group_id;
    struct net_node nodes[NET_NODES_MAX + 1]; /* by id; [0] unused */
    raft_id max_id;
    /* Link state: cut[a][b] drops messages from a to b. */
    bool cut[NET_NODES_MAX + 1][NET_NODES_MAX + 1];
    struct net_msg *q;
    size_t q_len, q_cap;
    /* Messages held back (delayed or duplicated) until net_unstash(). */
    struct net_msg *stash;
    size_t stash_len, stash_cap;
    /* Safety checker state. */
    struct net_hist *hist; /* by index */
    size_t hist_cap;
    uint64_t hist_max; /* highest index any node applied */
    uint64_t leader_term[NET_TERMS_MAX];
    raft_id leader_id[NET_TERMS_MAX];
    uint32_t n_leader_terms;
    /* Printing: quiet suppresses message lines (role changes and
     * violations are always printed). */
    bool quiet;
    struct net_buf out;
    uint64_t violations;
    uint64_t errors; /* raft_* calls that failed unexpectedly */
    uint64_t msgs_sent;
    uint64_t msgs_dropped;
};

/* Filter for net_deliver(); 0 fields match anything. */
struct net_filter {
    raft_id from;
    raft_id to;
    uint32_t type; /* enum raft_msg_type */
    bool drop;     /* drop the matching messages instead of delivering */
    bool stash;    /* hold them back (net_unstash() releases them) */
    bool dup;      /* deliver them and hold back a copy of each */
};

struct net *net_new(uint64_t seed);
void net_free(struct net *n);

/* Creates `count` nodes with the next free ids (*first gets the first).
 * Returns KHO_OK, KHO_EINVAL (too many nodes, bad options) or whatever
 * raft_create() returned (the reason is in the trace). */
int net_add_nodes(struct net *n, uint32_t count, const struct net_opts *o,
                  raft_id *first);

/* Replaces a node's durable log with entries of the given terms at
 * indexes 1..count (empty normal entries), sets its stored term to
 * max(hs_term, last term) with no vote and commit 0, and restarts it.
 * The Raft paper's Figures 7 and 8 start from such logs. */
int net_set_log(struct net *n, raft_id id, const uint64_t *terms,
                size_t count, uint64_t hs_term);

/* A crash and restart: the core and the state machine are rebuilt from
 * the memstore (so whatever was not persisted is lost); messages in flight
 * to the node are lost too. */
int net_restart(struct net *n, raft_id id);

/* The host's failure detector at `id` reports node `down` unreachable
 * (raft_peer_down). KHO_EINVAL if `id` does not run. */
int net_peer_down(struct net *n, raft_id id, raft_id down);

/* raft_tick() `ticks` times, printing role changes. */
int net_tick(struct net *n, raft_id id, uint32_t ticks);
/* Ticks `id` until it starts an election: a follower leaves its role, a
 * candidate moves to a new term, a pre-candidate starts a new round (at
 * most 2 election timeouts). KHO_ETIMEOUT if it never does. */
int net_campaign(struct net *n, raft_id id);

/* net_campaign() then net_stabilize(); KHO_OK if `id` ends up leader. */
int net_elect(struct net *n, raft_id id);

/* Handles one ready batch of `id` (if it has one) in raft.h's order.
 * Returns true if there was one. */
bool net_process_ready(struct net *n, raft_id id);
/* Steps (or drops) the queued messages that match `f`, in queue order.
 * Messages sent meanwhile are queued behind. Returns how many matched. */
size_t net_deliver(struct net *n, const struct net_filter *f);
/* Puts the held-back messages at the end of the queue: they arrive after
 * everything sent so far (reordering, late duplicates). */
size_t net_unstash(struct net *n);
/* Processes every ready and delivers every message until nothing is left.
 * Returns KHO_OK or KHO_ETIMEOUT after NET_ROUNDS_MAX rounds. */
int net_stabilize(struct net *n);
/* `ticks` times: tick every node once, then stabilize. Stops early once
 * a leader is known to every node it can reach if until_leader is set.
 * Returns the number of ticks done. */
uint32_t net_run(struct net *n, uint32_t ticks, bool until_leader);

/* Links. */
void net_cut(struct net *n, raft_id a, raft_id b); /* both directions */
void net_isolate(struct net *n, raft_id id);
void net_heal(struct net *n);
bool net_link_up(const struct net *n, raft_id from, raft_id to);

/* Compacts `id`'s stored log at `index` (<= its applied index) with the
 * state machine's snapshot at that index. */
int net_compact(struct net *n, raft_id id, uint64_t index);

/* The node that is leader at the highest term, or 0. */
raft_id net_leader(const struct net *n);

/* Raises a safety violation (printed and counted). */
void net_violation(struct net *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Trace formatting, shared with khoscen. */
const char *net_role_name(enum raft_role role);
const char *net_msg_type_name(uint32_t type);
void net_format_msg(struct net_buf *b, const struct raft_msg *m);
void net_format_conf(struct net_buf *b, const struct raft_conf *c);
/* "2: LEADER term=3 vote=2 leader=2 commit=5 applied=5 last=5 ..." */
void net_format_status(struct net *n, struct net_buf *b, raft_id id);
/* Stored log: "snap=3@1 4@2 5..6@2" */
void net_format_log(struct net_buf *b, const struct memstore *s);

#endif /* KHO_NET_H */

/*
 * sim.h - khosim, the deterministic cluster simulator (TESTING.md layer 2).
 *
 * One process runs a whole Raft group on virtual time: nodes driven exactly
 * the way raft.h's "Driving a group" says, a network that loses, duplicates,
 * delays, reorders and partitions messages, disks that are slow and lose
 * what was not yet synced when a node crashes, clients that write and read,
 * and membership changes, leadership transfers and compactions. Every step
 * is checked against the Raft safety properties and linearizability. A
 * seed number fixes every choice, so a failing seed replays exactly.
 *
 * Files: sim.c (CLI and sweeps), run.c (one seed: parameters, the tick loop,
 * faults, idle spells and the failure detector of seeds with quiescence,
 * the liveness phase), net.c (network and event queue), node.c (host
 * model), client.c (clients), sm.c (the replicated state machine), check.c
 * (invariants), trace.c (event trace).
 */
#ifndef KHO_SIM_H
#define KHO_SIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../../server/raft/raft.h"
#include "../harness/memstore.h"
#include "rng.h"

/* --- Limits ------------------------------------------------------------ */

/* Virtual time units per tick; network and disk delays are in these units so
 * messages can interleave within one tick. */
#define SIM_TICK_UNITS 100u
/* Nodes ever created in one seed (initial members plus joiners). Ids are
 * 1..SIM_NODES_MAX and never reused. */
#define SIM_NODES_MAX 32u
/* Most members in one configuration the membership driver aims for. */
#define SIM_CONF_MEMBERS_MAX 9u
#define SIM_CLIENTS_MAX 4u
/* Registers of the replicated state machine (keys of the written values). */
#define SIM_REGS 8u
/* Messages in flight in the network; beyond this a send is dropped. */
#define SIM_NET_INFLIGHT_MAX 50000u
/* Inputs (messages and tick runs) a busy node queues; beyond this a message
 * is dropped, like a full socket buffer. */
#define SIM_INBOX_MAX 4096u
/* Confirmed reads a node holds until its state machine catches up. */
#define SIM_WAIT_READS_MAX 256u
/* Events (deliveries, disk completions, inputs) per seed. */
#define SIM_EVENTS_MAX 5000000u
/* Terms and log indexes the checker can track. */
#define SIM_TERM_LIMIT (1u << 22)
#define SIM_INDEX_LIMIT (1u << 24)
/* Size of a client write payload: header plus padding. */
#define SIM_WRITE_HDR_BYTES 22u
#define SIM_PAYLOAD_MAX 2048u
/* Trace lines kept for a violation report. */
#define SIM_TRACE_LINES 40u
#define SIM_TRACE_LINE_BYTES 240u
/* The liveness phase must finish within this many election timeouts. */
#define SIM_LIVENESS_ELECTIONS 50u

#define SIM_GROUP_ID UINT64_C(0x6b686f73696d) /* "khosim" */

/* --- Per-seed parameters -------------------------------------------------- */

struct sim_params {
    uint32_t level; /* 0 calm, 1 mild, 2 harsh, 3 brutal */
    uint32_t n_nodes;
    uint32_t n_clients;
    uint64_t fault_ticks;

    uint32_t election_ticks;
    uint32_t heartbeat_ticks;
    bool pre_vote;
    bool check_quorum;
    bool lease_reads;
    uint32_t lease_drift_ticks;
    uint32_t max_msg_bytes;
    uint32_t max_msg_entries;
    uint32_t max_inflight_msgs;
    uint64_t max_inflight_bytes;
    uint64_t max_uncommitted_bytes;
    uint64_t max_apply_bytes;
    uint32_t max_pending_reads;

    /* Network (delays in time units). */
    uint32_t delay_min;
    uint32_t delay_max;
    uint32_t spike_ppm; /* a message delayed by several ticks */
    uint32_t loss_ppm;
    uint32_t dup_ppm;
    uint32_t partition_ppm; /* per tick, while no partition is active */
    uint32_t partition_ticks_max;
    uint32_t stall_ppm; /* per tick: stall one link */
    uint32_t stall_ticks_max;
    bool churn; /* frequent short partitions and crash-restarts */

    /* Nodes and disks. */
    uint32_t crash_ppm;     /* per tick: crash one node */
    uint32_t crash_all_ppm; /* per tick: crash every node */
    uint32_t crash_mid_ppm; /* per disk write: crash after persist */
    uint32_t down_ticks_max;
    uint32_t disk_min; /* disk write latency, time units */
    uint32_t disk_max;
    uint32_t slow_disk_ppm; /* per tick: one disk becomes slow */
    uint32_t slow_factor;

    /* Cluster operations, per tick. */
    uint32_t member_ppm;
    uint32_t transfer_ppm;
    uint32_t compact_ppm;     /* per node */
    uint32_t compact_log_max; /* compact when the log grows past this */

    /* Clients, per tick and client. */
    uint32_t write_ppm;
    uint32_t read_ppm;
    uint32_t payload_max;

    /* Quiescence (raft.h, "Quiescence"), in half the seeds; drawn from a
     * stream of its own so seeds without it run exactly as before. */
    uint32_t quiesce_ticks;  /* 0: off */
    bool skip_quiet;         /* the host does not tick quiet nodes */
    uint32_t detect_ticks;   /* failure detector delay */
    uint32_t report_ticks;   /* then it reports again this often */
    uint32_t false_down_ppm; /* per tick: a false "peer down" report */
    uint32_t idle_ppm;       /* per tick: clients pause for a while */
    uint32_t idle_ticks_max;
};

/* --- The replicated state machine (sm.c) --------------------------------- */

/* Durable together with the node's log: updated in the same simulated
 * transaction as the batch it applies (khod does this with LMDB). */
struct sim_sm {
    uint64_t applied;
    uint64_t hash; /* rolling hash of entries 1..applied == prefix hash */
    uint64_t applied_term;
    uint64_t writes; /* effective (non-duplicate) writes */
    uint64_t last_seq[SIM_CLIENTS_MAX];
    uint64_t reg[SIM_REGS];
};

/* magic, applied, hash, applied_term, writes, last_seq[], reg[] */
#define SIM_SM_PAYLOAD_BYTES (8u * (5u + SIM_CLIENTS_MAX + SIM_REGS))

/* A decoded client write. */
struct sim_write {
    uint32_t client;
    uint64_t seq;
    uint32_t key;
    uint64_t value;
};

uint64_t sim_entry_hash(uint64_t prev, const struct raft_entry *e);
size_t sim_write_encode(const struct sim_write *w, uint8_t *buf, size_t len,
                        uint64_t pad_seed);
bool sim_write_decode(const uint8_t *buf, size_t len, struct sim_write *out);
size_t sim_sm_encode(const struct sim_sm *sm, uint8_t *buf, size_t cap);
bool sim_sm_decode(const uint8_t *buf, size_t len, struct sim_sm *out);

/* --- Nodes (node.c) ------------------------------------------------------ */

enum sim_node_state {
    SIM_NODE_NONE = 0, /* slot never used */
    SIM_NODE_UP,
    SIM_NODE_DOWN, /* crashed; its disk and state machine survive */
    SIM_NODE_GONE, /* removed from the group (or an orphaned joiner) */
};

/* Inputs a busy node queues, in arrival order. Requests (client
 * operations, membership changes, transfers, compactions) wait like
 * messages do: a host busy writing to disk serves them afterwards. */
enum sim_input_kind {
    SIM_IN_TICKS = 1,
    SIM_IN_MSG,
    SIM_IN_WRITE,    /* a = client, b = attempt */
    SIM_IN_READ,     /* a = client, b = attempt */
    SIM_IN_CONF,     /* choose and propose a membership change */
    SIM_IN_TRANSFER, /* hand leadership to a random voter */
    SIM_IN_COMPACT,
};

struct sim_input {
    uint32_t kind;
    uint32_t ticks;       /* SIM_IN_TICKS: how many */
    uint64_t a, b;        /* request arguments */
    struct raft_msg *msg; /* SIM_IN_MSG: owned deep copy */
};

struct sim_wait_read {
    uint64_t ctx;
    uint64_t index;
};

struct sim_node {
    raft_id id;
    enum sim_node_state state;
    uint64_t incarnation;
    struct raft *r;
    struct memstore disk; /* what is durable */
    struct sim_sm sm;     /* durable too */

    /* Disk write in progress (between raft_ready and raft_advance). */
    bool busy;
    struct raft_ready rd;
    uint64_t busy_since;
    uint64_t slow_until_tick;

    struct sim_input inbox[SIM_INBOX_MAX];
    uint32_t inbox_head, inbox_n;

    struct sim_wait_read wait_reads[SIM_WAIT_READS_MAX];
    uint32_t n_wait_reads;

    bool quiet; /* as the checker last saw it */

    /* Prefix hash of the durable log by index, valid on
     * [disk.snap.meta.index, last index]. */
    uint64_t *phash;
    size_t phash_cap;

    /* What the checker last saw of this incarnation. */
    enum raft_role role;
    uint64_t term;
    uint64_t commit;
    struct raft_conf conf; /* in force, as last seen at rest */
    /* The latest configuration in the durable log (what the node would
     * campaign with after a restart). */
    struct raft_conf disk_conf;
    uint64_t disk_conf_index;
    uint64_t leader_checked_term; /* leader completeness done for it */
    uint64_t disk_term;           /* highest hs.term ever made durable */

    bool compact_queued;
    bool conf_queued;

    uint64_t restart_tick; /* when DOWN: tick to come back */
    bool removed;          /* its removal is committed */
    uint64_t removed_index;
    uint64_t removed_tick;
};

/* --- Clients (client.c) -------------------------------------------------- */

enum sim_op_state {
    SIM_OP_IDLE = 0,
    SIM_OP_WAIT,    /* to (re)send at retry_tick */
    SIM_OP_SENT,    /* queued at a node, not yet handled */
    SIM_OP_PENDING, /* accepted: proposed at (index, term), or read round */
};

struct sim_client {
    uint32_t id;
    raft_id hint; /* believed leader, 0 = unknown */

    /* The one write in progress (retried until acknowledged). */
    enum sim_op_state w_state;
    bool w_final;
    struct sim_write w;
    uint32_t w_len;
    uint64_t w_pad_seed;
    uint64_t w_attempt;
    raft_id w_node;
    uint64_t w_index, w_term;
    uint64_t w_deadline_tick;
    uint64_t w_retry_tick;
    uint64_t acked_seq;

    /* The one read in progress. */
    enum sim_op_state r_state;
    bool r_final;
    uint64_t r_attempt;
    uint64_t r_ctx;
    raft_id r_node;
    uint64_t r_floor;
    uint64_t r_deadline_tick;
    uint64_t r_retry_tick;

    /* Liveness phase: the final write and read are done. */
    bool final_write_done;
    bool final_read_done;
};

/* --- Network (net.c) ----------------------------------------------------- */

enum sim_event_kind { SIM_EV_MSG = 1, SIM_EV_DISK = 2 };

struct sim_event {
    uint64_t time;
    uint64_t seq; /* tie-breaker: insertion order */
    uint32_t kind;
    uint32_t node; /* slot */
    uint64_t incarnation;
    struct raft_msg *msg;
};

struct sim_heap {
    struct sim_event *ev;
    size_t n, cap;
};

/* --- The checker's global state (check.c) -------------------------------- */

struct sim_pmap_slot {
    uint64_t index; /* 0 = empty */
    uint64_t term;
    uint64_t hash;
};

struct sim_check {
    /* term -> leader id (0 = none seen) and term -> highest commit index a
     * node reported while in that term. */
    raft_id *term_leader;
    uint64_t *term_commit;
    size_t term_cap;
    uint64_t max_term;
    /* The committed log as far as anyone has seen it: prefix hash and term
     * by index, contiguous on [1, canon_n]. */
    uint64_t *canon_hash;
    uint64_t *canon_term;
    size_t canon_cap;
    uint64_t canon_n;
    /* (index, term) -> prefix hash of every entry ever made durable. */
    struct sim_pmap_slot *pmap;
    size_t pmap_cap, pmap_n;
    /* Linearizability: the highest index a completed operation observed. */
    uint64_t floor;
    /* A durable log or the committed history changed since the last
     * electability check. */
    bool dirty;
};

/* --- Statistics, violations, trace -------------------------------------- */

struct sim_stats {
    uint64_t seeds;
    uint64_t ticks;
    uint64_t events;
    uint64_t msgs_sent;
    uint64_t msgs_dropped;
    uint64_t writes_acked;
    uint64_t reads_done;
    uint64_t elections; /* distinct (term, leader) pairs */
    uint64_t crashes;
    uint64_t crashes_mid;
    uint64_t partitions;
    uint64_t conf_changes;
    uint64_t transfers;
    uint64_t compactions;
    uint64_t snapshots_installed;
    uint64_t liveness_ticks;
    uint64_t quiesces;    /* a node went quiet */
    uint64_t quiet_ticks; /* node-ticks spent quiet */
    uint64_t down_wakes;  /* quiet nodes a failure report woke */
};

struct sim_failure {
    bool failed;
    char invariant[48];
    char detail[400];
};

enum sim_trace_mode {
    SIM_TRACE_OFF = 0,
    SIM_TRACE_STREAM = 1, /* print every event to stdout */
    SIM_TRACE_RING = 2,   /* keep the last lines for a violation report */
};

struct sim_opts {
    int trace; /* bitmask of SIM_TRACE_STREAM and SIM_TRACE_RING */
    int planted_bug;
};

/* --- One simulated world ------------------------------------------------- */

struct sim {
    uint64_t seed;
    struct sim_rng rng;
    struct sim_params p;
    const struct sim_opts *opts;

    uint64_t now; /* virtual time units */
    uint64_t tick;
    bool healed; /* liveness phase */

    struct sim_node *nodes; /* SIM_NODES_MAX slots, id == slot + 1 */
    uint32_t n_slots;       /* slots ever used */

    struct sim_heap heap;
    uint64_t ev_seq;
    uint64_t net_inflight;
    bool cut[SIM_NODES_MAX][SIM_NODES_MAX];             /* from, to */
    uint64_t stall_until[SIM_NODES_MAX][SIM_NODES_MAX]; /* time units */
    uint64_t partition_end_tick;                        /* 0 = no partition */
    /* Failure detector: the tick since which node x has not heard node d
     * ([x][d], slots; 0 = it hears d). */
    uint64_t unheard_since[SIM_NODES_MAX][SIM_NODES_MAX];
    uint64_t idle_until_tick; /* clients pause until then */

    struct sim_client clients[SIM_CLIENTS_MAX];

    /* Membership change in flight: committed or lost once the canonical log
     * reaches its index. */
    bool conf_pending;
    uint32_t conf_op;
    raft_id conf_target;
    uint64_t conf_index, conf_term;

    struct sim_check chk;
    struct sim_stats st;
    struct sim_failure fail;

    /* Trace ring. */
    char (*ring)[SIM_TRACE_LINE_BYTES];
    uint32_t ring_head, ring_n;
};

/* sim.c */
void sim_core_panic(void *ctx, const char *what, uint64_t group_id, raft_id id,
                    uint64_t term, uint64_t index);

/* run.c */
void sim_exec_conf(struct sim *s, struct sim_node *n);
void sim_exec_transfer(struct sim *s, struct sim_node *n);
void sim_params_pick(struct sim_rng *rng, struct sim_params *p);
void sim_params_pick_quiesce(uint64_t seed, struct sim_params *p);
bool sim_idle(const struct sim *s);
int sim_run_seed(uint64_t seed, const struct sim_opts *o, struct sim_stats *st,
                 struct sim_failure *f);
void sim_print_params(const struct sim_params *p, uint64_t seed);

/* net.c */
void sim_heap_push(struct sim *s, const struct sim_event *ev);
bool sim_heap_pop_before(struct sim *s, uint64_t limit, struct sim_event *out);
void sim_heap_free(struct sim *s);
struct raft_msg *sim_msg_clone(const struct raft_msg *m);
void sim_msg_free(struct raft_msg *m);
void sim_net_send(struct sim *s, const struct raft_msg *m);
void sim_net_deliver(struct sim *s, struct sim_event *ev);
void sim_net_heal(struct sim *s);
void sim_net_faults(struct sim *s);
const char *sim_msg_describe(const struct raft_msg *m, char *buf, size_t cap);

/* node.c */
struct sim_node *sim_node_by_id(struct sim *s, raft_id id);
bool sim_node_at_rest(const struct sim_node *n);
struct sim_node *sim_find_leader(struct sim *s);
void sim_node_create(struct sim *s, raft_id id, const struct raft_conf *conf);
void sim_node_crash(struct sim *s, struct sim_node *n, const char *why);
void sim_node_restart(struct sim *s, struct sim_node *n);
void sim_node_stop(struct sim *s, struct sim_node *n, const char *why);
void sim_node_free(struct sim_node *n);
void sim_node_tick(struct sim *s, struct sim_node *n);
void sim_node_receive(struct sim *s, struct sim_node *n, struct raft_msg *m);
void sim_node_disk_done(struct sim *s, struct sim_node *n);
void sim_node_pump(struct sim *s, struct sim_node *n);
void sim_node_observe(struct sim *s, struct sim_node *n);
void sim_node_compact(struct sim *s, struct sim_node *n);
void sim_node_request(struct sim *s, struct sim_node *n, uint32_t kind,
                      uint64_t a, uint64_t b);

/* client.c */
void sim_clients_init(struct sim *s);
void sim_clients_tick(struct sim *s);
void sim_client_exec_write(struct sim *s, struct sim_node *n, uint64_t client,
                           uint64_t attempt);
void sim_client_exec_read(struct sim *s, struct sim_node *n, uint64_t client,
                          uint64_t attempt);
void sim_client_read_state(struct sim *s, struct sim_node *n,
                           const struct raft_read_state *rs);
void sim_client_read_served(struct sim *s, struct sim_node *n, uint64_t ctx,
                            uint64_t applied);
bool sim_clients_final_done(const struct sim *s);

/* check.c */
void sim_check_init(struct sim_check *c);
void sim_check_free(struct sim_check *c);
bool sim_check_status(struct sim *s, struct sim_node *n,
                      const struct raft_status *st);
void sim_check_at_rest(struct sim *s, struct sim_node *n);
void sim_check_persisted(struct sim *s, struct sim_node *n,
                         uint64_t first_index);
void sim_check_snapshot(struct sim *s, struct sim_node *n,
                        const struct sim_sm *payload);
void sim_check_sent(struct sim *s, struct sim_node *n,
                    const struct raft_msg *m);
void sim_check_applied(struct sim *s, struct sim_node *n,
                       const struct raft_entry *e);
void sim_check_disk_conf(struct sim *s, struct sim_node *n);
void sim_check_electable(struct sim *s);
void sim_check_read(struct sim *s, uint32_t client, uint64_t floor_inv,
                    uint64_t applied);
bool sim_check_canon_term(const struct sim *s, uint64_t index, uint64_t *term);
uint64_t *sim_grow_u64(uint64_t *a, size_t *cap, size_t need);

/* trace.c */
#if defined(__GNUC__)
#define SIM_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define SIM_PRINTF(a, b)
#endif
void sim_trace_emit(struct sim *s, const char *fmt, ...) SIM_PRINTF(2, 3);
void sim_trace_dump(const struct sim *s, FILE *out);
void sim_fail(struct sim *s, const char *invariant, const char *fmt, ...)
    SIM_PRINTF(3, 4);

/* Formats only when tracing, so sweeps pay nothing for it. */
#define SIM_TRACE(s, ...)                                                      \
    do {                                                                       \
        if ((s)->opts->trace != 0) {                                           \
            sim_trace_emit((s), __VA_ARGS__);                                  \
        }                                                                      \
    } while (0)

static inline bool sim_failed(const struct sim *s)
{
    return s->fail.failed;
}

#endif /* KHO_SIM_H */

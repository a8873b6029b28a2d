/*
 * internal.h - the core's private state, shared by its .c files only.
 */
#ifndef KHO_RAFT_INTERNAL_H
#define KHO_RAFT_INTERNAL_H

#include "raft.h"

/* Assertions stay on in release builds: they guard the core's own
 * invariants (never input from peers, clients or disk, which is validated).
 * The failure path reports group, node, term and index before aborting. */
#define RAFT_ASSERT(r, cond)                                                   \
    do {                                                                       \
        if (!(cond)) {                                                         \
            raft_assert_fail((r), #cond, __FILE__, __LINE__);                  \
        }                                                                      \
    } while (0)

/* True when this build plants `bug` (make sim-planted); false otherwise. */
#ifdef KHO_PLANTED_BUGS
#define PLANTED(bug) (raft_planted_bug == (bug))
#else
#define PLANTED(bug) false
#endif

struct raft;
_Noreturn void raft_assert_fail(const struct raft *r, const char *expr,
                                const char *file, int line);

int raft_conf_check(const struct raft_conf *c);
int raft_conf_apply_op(struct raft_conf *c, enum raft_conf_op op, raft_id id);

enum progress_state { PR_PROBE = 0, PR_REPLICATE, PR_SNAPSHOT };

/* A leader's view of one member (etcd's Progress, TLA+'s matchIndex and
 * nextIndex), with a ring of in-flight appends for flow control. */
struct progress {
    raft_id id;
    bool voter;
    enum progress_state state;
    uint64_t match;
    uint64_t next;
    bool probe_sent;          /* PROBE: one append per heartbeat interval */
    uint64_t pending_snapshot; /* SNAPSHOT: index of the snapshot sent */
    uint32_t snapshot_elapsed; /* ticks since that snapshot was sent */
    bool recent_active;       /* heard from within an election timeout */
    uint64_t read_ack;        /* highest heartbeat round acknowledged */
    uint64_t commit_sent;     /* highest commit index told to this member */
    /* Quiescence. heard_at: now_ticks + 1 when it last answered, 0 when not
     * since this leader took over or woke. Every heartbeat round from
     * hb_commit_round on carried hb_commit; commit_acked is the highest
     * commit a heartbeat it answered carried. */
    uint64_t heard_at;
    uint64_t hb_commit;
    uint64_t hb_commit_round;
    uint64_t commit_acked;
    /* In-flight appends: last index and payload bytes of each. */
    uint64_t *infl_index;
    uint64_t *infl_bytes;
    uint32_t infl_start, infl_count;
    uint64_t infl_bytes_total;
};

struct pending_read {
    uint64_t ctx;
    uint64_t index;
    uint64_t round; /* heartbeat round that confirms it; 0 = not started */
};

/* Owned byte buffers handed out in one ready batch, freed by advance. */
struct ready_mem {
    struct raft_entry *committed;
    size_t n_committed, cap_committed;
};

struct raft {
    struct raft_config cfg;
    struct raft_storage st;

    /* Persistent state (Figure 2) and volatile state. */
    uint64_t term;
    raft_id vote;
    uint64_t commit;
    uint64_t applied;
    struct raft_hard_state prev_hs; /* last hard state handed to the host */

    enum raft_role role;
    raft_id lead;
    uint32_t election_elapsed;
    uint32_t heartbeat_elapsed;
    uint32_t randomized_timeout;
    uint64_t now_ticks;
    uint64_t rng;

    /* Entries not yet persisted: u[i].index == u_offset + i. Every index
     * below u_offset is in storage (or compacted). Each ready hands all of
     * them to the host, so after advance u_n is 0. */
    struct raft_entry *u;
    size_t u_n, u_cap;
    uint64_t u_offset;
    struct raft_snapshot *u_snap; /* received, to install */

    /* Membership: the latest configuration in the log is in force. */
    struct raft_conf conf;
    uint64_t conf_index;
    struct raft_conf applied_conf;

    /* Elections. */
    int8_t votes[RAFT_MEMBERS_MAX]; /* by conf position: 1 yes, -1 no */
    bool transfer_campaign;

    /* Leader state. */
    struct progress prs[RAFT_MEMBERS_MAX]; /* by conf position */
    uint64_t *infl_pool;
    bool committed_in_term;
    bool bcast_pending;
    uint64_t uncommitted_bytes;
    raft_id transferee;

    /* Quiescence (quiesce.c). quiet: a quiesced leader or a quiet
     * follower. idle_ticks: a leader's consecutive idle ticks. quiesce_round:
     * the heartbeat round that quiesced it. lead_down: the leader the host
     * reported down and that has not sent a regular message since. */
    bool quiet;
    uint32_t idle_ticks;
    uint64_t quiesce_round;
    raft_id lead_down;

    /* Reads and leases. */
    struct pending_read *reads;
    uint32_t reads_n;
    struct raft_read_state *read_states;
    uint32_t read_states_n;
    uint64_t round;
    uint64_t round_tick[RAFT_LEASE_ROUNDS];
    uint64_t lease_until;
    uint64_t lease_min_round;
    uint64_t vote_hold_until; /* no votes before this tick (restart+lease) */

    /* Output. */
    struct raft_msg *msgs;
    uint32_t msgs_n;
    struct ready_mem rm;
    bool in_ready;
    uint64_t ready_applied; /* applied index after the pending ready */

    struct raft_stats stats;
    int err; /* sticky: a storage failure or KHO_ENOMEM breaks the group */
#ifdef KHO_PLANTED_BUGS
    bool bug_vote_unpersisted;
#endif
};

/* log.c: the log as one sequence over storage and the unstable suffix. */
uint64_t log_last_index(const struct raft *r);
uint64_t log_stable_index(const struct raft *r);
int log_first_index(struct raft *r, uint64_t *out);
/* KHO_OK; KHO_ENOTFOUND when the entry is compacted or beyond the end. */
int log_term(struct raft *r, uint64_t index, uint64_t *term);
uint64_t log_term_or0(struct raft *r, uint64_t index);
/* Deep-copies entries [lo, hi) into out (at most cap, at least one unless
 * KHO_ENOTFOUND, stopping before max_bytes). Caller frees data. */
int log_copy(struct raft *r, uint64_t lo, uint64_t hi, size_t max_bytes,
             struct raft_entry *out, size_t cap, size_t *n_out,
             size_t *bytes_out);
/* Appends to the unstable suffix, cutting everything from e[0].index on. */
int log_append(struct raft *r, const struct raft_entry *e, size_t n);
void log_free_entries(struct raft_entry *e, size_t n);
int log_find_conf(struct raft *r, uint64_t hi, struct raft_conf *conf,
                  uint64_t *index);
int log_find_conflict_by_term(struct raft *r, uint64_t index, uint64_t term,
                              uint64_t *out_index, uint64_t *out_term);
bool log_is_up_to_date(struct raft *r, uint64_t last_index,
                       uint64_t last_term);

#endif

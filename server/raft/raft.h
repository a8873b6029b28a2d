/*
 * raft.h - kho's Raft consensus core.
 *
 * The core is a pure, deterministic state machine (the shape of etcd's raft
 * and canonical/raft's step/event design). It performs no I/O, reads no
 * clock and keeps no globals: time is `raft_tick()`, randomness comes from a
 * seeded PRNG in the config, and everything the outside world must do is
 * returned in a *ready* batch. The same config, seed and inputs always give
 * the same outputs, which is what lets tests/sim replay any failure.
 *
 * Driving a group (the host's loop; the order matters):
 *
 *   1. Feed inputs: raft_step() for peer messages, raft_tick() every tick,
 *      raft_propose()/raft_propose_conf() for writes, raft_read_index() for
 *      linearizable reads, raft_transfer_leader().
 *   2. If raft_has_ready(), call raft_ready() and then, in this order:
 *      a. if rd.snapshot is set, install it: replace the state machine with
 *         its payload and make the log start after rd.snapshot->meta.index;
 *      b. delete every stored entry with index >= rd.entries[0].index (a
 *         conflicting suffix), append rd.entries, and store rd.hs when
 *         rd.hs_changed - all in one durable (fsynced) write;
 *      c. send rd.msgs (only now: a vote or an append acknowledgement must
 *         never leave before the state it promises is durable). APPEND,
 *         HEARTBEAT and SNAPSHOT messages - a leader's - may leave before
 *         step b: the leader counts itself towards a commit only up to its
 *         stable index, so followers may persist in parallel with it;
 *      d. apply rd.committed in order, then serve rd.reads whose index is
 *         applied;
 *      e. call raft_advance(). No other raft_* call is allowed between
 *         raft_ready() and raft_advance().
 *
 * The log the core reads lives behind `struct raft_storage` (memory in the
 * simulator, LMDB in khod). The core only reads it; the host writes it in
 * step 2b above and by compaction (raft_storage.snapshot_meta moves forward,
 * entries up to it disappear; only entries <= the applied index may go).
 *
 * Inputs from peers are validated: wrong group ids, out-of-range terms and
 * indexes, malformed entries and responses from unknown peers are counted in
 * `struct raft_stats` and dropped. They are never asserted on. Requests
 * (APPEND, VOTE, ...) from ids outside our configuration are accepted: a
 * node that lags or is joining does not know its newest peers yet.
 *
 * Errors: a storage failure or KHO_ENOMEM inside the core is sticky. Every
 * later call returns it and raft_has_ready() is false; the host must drop
 * the group and recreate it from storage.
 *
 * Semantics worth knowing when reading traces:
 *   - A HEARTBEAT carries min(follower's match, commit), so a follower never
 *     learns a commit index for entries it may not share with the leader.
 *   - A SNAPSHOT whose last entry the follower already holds (same term) is
 *     not installed; the log after it is kept and the commit moves up. When
 *     rd.snapshot is set, every stored entry is discarded.
 *   - A (pre-)vote request of an older term is refused with our term, so
 *     the candidate catches up (Figure 2).
 *   - A ReadIndex request made before the new leader's no-op commits waits
 *     for it (§6.4) and is then confirmed by one heartbeat round.
 *   - With lease_reads, a node refuses votes for election_ticks after
 *     raft_create(), so a first election takes that long at least.
 *   - Every pointer in a raft_ready stays valid until raft_advance().
 *
 * Quiescence (raft_config.quiesce_ticks; the shape CockroachDB uses:
 * quiesce plus node liveness). It only stops timers and heartbeats; every
 * message is still handled by the rules above, so safety is untouched.
 *   - A leader quiesces after quiesce_ticks consecutive ticks in which the
 *     group was idle: no proposal, read, transfer or configuration change
 *     pending; commit == last index; every member (voters and learners) at
 *     match == last index; every follower acknowledged a heartbeat that
 *     carried that commit; every voter answered within the last election
 *     timeout. It then sends each follower a HEARTBEAT with `quiesce` set
 *     (index/log_term = its last entry, == commit) and stops heartbeats and
 *     check-quorum: its ticks do nothing.
 *   - A follower goes quiet on such a heartbeat from the leader of its term
 *     if its own quiesce_ticks is not 0, its log ends at that commit with
 *     the same term, and the host has not reported that leader down since
 *     it last heard a regular message from it. It then does not answer and
 *     its ticks do nothing (the election timer stops). Otherwise it treats
 *     the heartbeat as a normal one and answers, which wakes the leader.
 *   - raft_quiet() tells the host it may stop ticking the group (ticking it
 *     is harmless). A quiet group still needs its messages stepped and its
 *     ready batches handled.
 *   - A quiet follower wakes on any message from its leader (of its term or
 *     newer), its timer restarting as usual, and on raft_peer_down() for its
 *     leader, after which it campaigns (with pre-vote if configured) once a
 *     randomized election timeout passes without word from the leader.
 *   - A quiet follower or leader refuses pre-votes (leader stickiness, with
 *     or without check_quorum); with check_quorum it refuses votes too, as
 *     a node that has just heard from its leader does. A transfer's vote is
 *     exempt. After raft_peer_down() for its leader the usual rules apply.
 *   - A quiet leader wakes on raft_propose(), raft_propose_conf(),
 *     raft_read_index() and raft_transfer_leader() when they succeed, and on
 *     any message of its term or newer from a member, except a heartbeat
 *     answer older than its quiesce round. Waking resumes heartbeats (a round goes out at once,
 *     or the proposal's appends or the read's round do, and wakes the
 *     followers), restarts check-quorum as after an election and forgets
 *     the lease: the leader was perhaps not ticked while quiet, so no lease
 *     from a round sent before it woke is trusted. A newer term still makes
 *     it step down. raft_peer_down() never wakes a leader.
 *   - Messages lost on the way are repaired by the same rules: a follower
 *     that missed the quiesce heartbeat times out and its pre-vote wakes the
 *     leader; a follower that restarts while its group is quiet does the
 *     same. Use quiescence with pre_vote: without it such a follower
 *     campaigns for real and forces an election.
 */
#ifndef KHO_RAFT_H
#define KHO_RAFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../client/kho_err.h"

/* --- Limits ------------------------------------------------------------ */

/* Members (voters and learners) of one group's configuration. */
#define RAFT_MEMBERS_MAX 64
/* Terms and indexes above this are refused as corrupt input. Keeping a wide
 * margin below 2^64 means `index + count` never overflows after validation. */
#define RAFT_TERM_MAX (UINT64_C(1) << 62)
#define RAFT_INDEX_MAX (UINT64_C(1) << 62)
/* Hard ceilings for the tunables in struct raft_config (validate() checks). */
#define RAFT_ENTRY_BYTES_MAX (64u << 20)
#define RAFT_MSG_ENTRIES_MAX 4096u
#define RAFT_INFLIGHT_MSGS_MAX 1024u
#define RAFT_READS_MAX 65536u
#define RAFT_READY_MSGS_MAX 65536u
/* Entries appended but not yet handed to the host in a ready batch; a
 * host that steps many messages between two readies meets this bound. */
#define RAFT_UNSTABLE_ENTRIES_MAX 65536u
/* Lease rounds remembered by a leader (a ring of heartbeat send times). */
#define RAFT_LEASE_ROUNDS 64u
/* Ceiling of raft_config.quiesce_ticks (0 there means "never quiesce"). */
#define RAFT_QUIESCE_TICKS_MAX 1000000u

typedef uint64_t raft_id; /* node id; 0 means "none" */

/* --- Log entries --------------------------------------------------------- */

enum raft_entry_type {
    RAFT_ENTRY_NORMAL = 0, /* opaque client command */
    RAFT_ENTRY_NOOP = 1,   /* appended by each new leader (Raft §8) */
    RAFT_ENTRY_CONF = 2,   /* a full new configuration, raft_conf_encode() */
};

struct raft_entry {
    uint64_t term;
    uint64_t index;
    uint32_t type; /* enum raft_entry_type */
    uint32_t len;
    uint8_t *data; /* len bytes; owner depends on where the entry lives */
};

/* --- Configuration (membership) ------------------------------------------ */

enum raft_role_in_conf {
    RAFT_VOTER = 1,
    RAFT_LEARNER = 2, /* receives the log, never votes or counts in quorums */
};

struct raft_member {
    raft_id id;
    uint32_t role; /* enum raft_role_in_conf */
};

struct raft_conf {
    uint32_t n;
    struct raft_member members[RAFT_MEMBERS_MAX];
};

/* Single-server membership changes (dissertation §4.1). */
enum raft_conf_op {
    RAFT_CONF_ADD_LEARNER = 1, /* add a new node as a learner */
    RAFT_CONF_PROMOTE = 2,     /* turn a learner into a voter */
    RAFT_CONF_ADD_VOTER = 3,   /* add a new node directly as a voter */
    RAFT_CONF_REMOVE = 4,      /* remove a voter or learner (may be self) */
};

/* Encoded size of a configuration entry: u32 count, then per member u64 id
 * and u32 role, all little-endian: 4 + n * 12 bytes. raft_conf_encode()
 * returns the bytes written, or 0 if `cap` is too small (nothing written). */
#define RAFT_CONF_ENCODED_MAX (4u + RAFT_MEMBERS_MAX * 12u)
size_t raft_conf_encode(const struct raft_conf *c, uint8_t *buf, size_t cap);
/* Returns KHO_OK or KHO_ECORRUPT (bad length, zero or duplicate id, bad role,
 * too many members). */
int raft_conf_decode(const uint8_t *buf, size_t len, struct raft_conf *out);
const struct raft_member *raft_conf_find(const struct raft_conf *c, raft_id id);
bool raft_conf_is_voter(const struct raft_conf *c, raft_id id);
uint32_t raft_conf_voters(const struct raft_conf *c);

/* --- Persistent state ----------------------------------------------------- */

struct raft_hard_state {
    uint64_t term;
    raft_id vote;
    uint64_t commit;
};

struct raft_snapshot_meta {
    uint64_t index; /* last index the snapshot covers; 0 = none */
    uint64_t term;  /* term of that entry */
    struct raft_conf conf; /* configuration as of `index` */
};

struct raft_snapshot {
    struct raft_snapshot_meta meta;
    uint8_t *data; /* opaque state-machine payload; the core never reads it */
    size_t len;
};

/*
 * The log as the host stores it. All callbacks are synchronous and must not
 * call back into the core. Any callback may fail with KHO_EIO or
 * KHO_ECORRUPT; the core then fails the API call with that error and leaves
 * its state as it was before the call where it can.
 */
struct raft_storage {
    void *ctx;
    /* The snapshot the stored log starts after: entries are
     * (meta.index, last_index]. A fresh member of a new cluster reports
     * index 0, term 0 and the initial configuration; a node that will join
     * an existing cluster reports an empty configuration. */
    int (*snapshot_meta)(void *ctx, struct raft_snapshot_meta *out);
    /* Index of the last stored entry (meta.index when the log is empty). */
    int (*last_index)(void *ctx, uint64_t *out);
    /* Term of the entry at `index`, meta.index <= index <= last_index. */
    int (*term)(void *ctx, uint64_t index, uint64_t *out);
    /* Entries [lo, hi), meta.index < lo < hi <= last_index + 1, stopping
     * before `max_bytes` of payload is exceeded but always at least one,
     * and at most `cap`. Data pointers stay valid until the next callback;
     * the core copies what it keeps. */
    int (*entries)(void *ctx, uint64_t lo, uint64_t hi, size_t max_bytes,
                   struct raft_entry *out, size_t cap, size_t *n_out);
    /* The latest snapshot with its payload, to send to a follower that is
     * behind the compaction point. The payload stays valid until the next
     * callback; the core copies it into the message. */
    int (*snapshot)(void *ctx, struct raft_snapshot *out);
};

/* --- Messages ------------------------------------------------------------- */

enum raft_msg_type {
    RAFT_MSG_APPEND = 1,      /* AppendEntries (Figure 2) */
    RAFT_MSG_APPEND_RESP = 2, /* also answers SNAPSHOT */
    RAFT_MSG_VOTE = 3,        /* RequestVote */
    RAFT_MSG_VOTE_RESP = 4,
    RAFT_MSG_PREVOTE = 5, /* dissertation §9.6 */
    RAFT_MSG_PREVOTE_RESP = 6,
    RAFT_MSG_HEARTBEAT = 7, /* empty append carrying commit and a read round */
    RAFT_MSG_HEARTBEAT_RESP = 8,
    RAFT_MSG_SNAPSHOT = 9,     /* InstallSnapshot (Figure 5.3) */
    RAFT_MSG_TIMEOUT_NOW = 10, /* leadership transfer (§3.10) */
    RAFT_MSG_TYPE_MAX_ = 10,
};

/* Vote request sent because of a leadership transfer: voters grant it even
 * if they heard from a leader recently. */
#define RAFT_MSGF_TRANSFER 1u

/*
 * One message. Field use by type:
 *   APPEND:        index/log_term = previous entry, entries, commit
 *   APPEND_RESP:   reject=0: index = last index now matching the leader;
 *                  reject=1: index = the rejected prev index,
 *                            hint_index/hint_term = fast back-tracking hint
 *   VOTE, PREVOTE: index/log_term = candidate's last entry; term is the
 *                  election's term (current + 1 for PREVOTE)
 *   *_RESP votes:  reject
 *   HEARTBEAT:     commit, ctx = read/lease round; with quiesce set (the
 *                  leader goes quiet, see "Quiescence" above), index and
 *                  log_term = the leader's last entry, which is the commit
 *   HEARTBEAT_RESP: ctx echoed
 *   SNAPSHOT:      snapshot (meta and opaque payload)
 */
struct raft_msg {
    uint64_t group_id;
    uint32_t type; /* enum raft_msg_type */
    uint32_t flags;
    raft_id from;
    raft_id to;
    uint64_t term;
    uint64_t log_term;
    uint64_t index;
    uint64_t commit;
    uint64_t ctx;
    uint64_t hint_index;
    uint64_t hint_term;
    bool reject;
    bool quiesce; /* HEARTBEAT only: the leader is going quiet */
    uint32_t n_entries;
    struct raft_entry *entries; /* owned by whoever owns the message */
    struct raft_snapshot snapshot;
};

/* --- Config -------------------------------------------------------------- */

struct raft_config {
    raft_id id;        /* this node, != 0 */
    uint64_t group_id; /* every message must carry it */
    /* A follower starts an election after a random number of ticks in
     * [election_ticks, 2 * election_ticks). Leaders send heartbeats every
     * heartbeat_ticks (< election_ticks). */
    uint32_t election_ticks;
    uint32_t heartbeat_ticks;
    uint64_t seed; /* PRNG seed for election timeouts */
    /* State as persisted: the hard state and the index the state machine
     * has applied (>= the storage snapshot's index). */
    struct raft_hard_state hs;
    uint64_t applied;
    struct raft_storage storage;

    bool pre_vote;     /* §9.6: do not disrupt a cluster from a partition */
    bool check_quorum; /* leader steps down without a quorum; followers
                          ignore votes soon after hearing a leader */
    /* Leader leases (off by default). A leader answers reads without a
     * quorum round while `now < round_sent + election_ticks -
     * lease_drift_ticks` for a round a quorum acknowledged. The assumption
     * this rests on: every node's tick rate differs from every other's by
     * at most lease_drift_ticks per election_ticks, and no node pauses
     * longer than that without catching its ticks up. Requires
     * check_quorum. */
    bool lease_reads;
    uint32_t lease_drift_ticks;

    /* Bounds (all required, all > 0). raft_config_validate() also wants
     * election_ticks in [2, 100000], max_entry_bytes >=
     * RAFT_CONF_ENCODED_MAX, max_uncommitted_bytes >= max_entry_bytes and
     * max_ready_msgs >= 2 * RAFT_MEMBERS_MAX. */
    uint32_t max_msg_bytes;       /* entry payload per append message */
    uint32_t max_msg_entries;     /* entries per append message */
    uint32_t max_inflight_msgs;   /* unacknowledged appends per follower */
    uint64_t max_inflight_bytes;  /* unacknowledged bytes per follower */
    uint64_t max_uncommitted_bytes; /* leader's appended-but-uncommitted */
    uint32_t max_entry_bytes;     /* one proposal */
    uint32_t max_pending_reads;   /* read_index requests waiting */
    uint32_t max_ready_msgs;      /* messages buffered for one ready */
    uint64_t max_apply_bytes;     /* committed payload per ready */
    uint32_t snapshot_timeout_ticks; /* resend a snapshot not answered */

    /* Quiescence (see "Quiescence" at the top). 0: this node never
     * quiesces a group it leads and never goes quiet as a follower (its
     * host need not call raft_peer_down()). Otherwise, in [1,
     * RAFT_QUIESCE_TICKS_MAX]: a leader quiesces after this many
     * consecutive idle ticks; a few election timeouts is a good choice,
     * since every wake-up costs a heartbeat round. Give every member the
     * same setting: a follower with 0 answers each quiesce heartbeat, which
     * wakes its leader again. Default 0. */
    uint32_t quiesce_ticks;

    /* Called when an internal invariant fails (a core bug, never bad
     * input), with where and what; the core then aborts. NULL: abort only. */
    void (*panic)(void *ctx, const char *what, uint64_t group_id, raft_id id,
                  uint64_t term, uint64_t index);
    void *panic_ctx;
};

/* Fills `c` with sane defaults for every field but id, group_id, seed, hs,
 * applied and storage. */
void raft_config_defaults(struct raft_config *c);
/* KHO_OK or KHO_EINVAL with a static reason in *why. */
int raft_config_validate(const struct raft_config *c, const char **why);

/* --- Output -------------------------------------------------------------- */

struct raft_read_state {
    uint64_t ctx;   /* as given to raft_read_index() */
    uint64_t index; /* serve once the state machine has applied this */
    int status;     /* KHO_OK, or KHO_ENOTLEADER if leadership was lost */
};

enum raft_role { RAFT_FOLLOWER = 0, RAFT_PRECANDIDATE, RAFT_CANDIDATE,
                 RAFT_LEADER };

struct raft_ready {
    bool hs_changed;
    struct raft_hard_state hs;
    const struct raft_snapshot *snapshot; /* to install, or NULL */
    const struct raft_entry *entries;     /* to persist; entries[0].index is
                                             where the stored log is cut */
    size_t n_entries;
    const struct raft_msg *msgs; /* to send after persisting */
    size_t n_msgs;
    const struct raft_entry *committed; /* to apply, in order */
    size_t n_committed;
    const struct raft_read_state *reads;
    size_t n_reads;
};

/* Counters for dropped or refused input; for metrics and tests. */
struct raft_stats {
    uint64_t dropped_group;    /* wrong group id */
    uint64_t dropped_invalid;  /* malformed: bad type, term, index, entries */
    uint64_t dropped_unknown;  /* response from a non-member or self */
    uint64_t dropped_stale;    /* lower term, or stale response */
    uint64_t dropped_overflow; /* ready message buffer or log buffer full */
    uint64_t dropped_conflict; /* append conflicting with committed entries */
    uint64_t lost_tail;        /* a follower refused what it had acked */
    uint64_t elections;        /* campaigns started (not pre-vote rounds) */
    uint64_t leader_changes;   /* times this node became leader */
    uint64_t quiesced;         /* times this node went quiet */
    uint64_t woken;            /* times it woke from quiet */
};

struct raft_status {
    raft_id id;
    enum raft_role role;
    uint64_t term;
    raft_id vote;
    raft_id leader; /* 0 when unknown */
    uint64_t commit;
    uint64_t applied;
    uint64_t last_index;   /* including entries not yet persisted */
    uint64_t stable_index; /* last index known to be persisted */
    uint64_t first_index;  /* first entry still in the log */
    uint64_t conf_index;   /* index of the configuration in force */
    struct raft_conf conf;
    raft_id transferee;    /* leadership transfer in progress, or 0 */
    bool quiet;            /* raft_quiet() */
};

/* --- API ----------------------------------------------------------------- */

struct raft;

/* Creates a group from persisted state. Errors: KHO_EINVAL (config, with
 * the reason in *why), KHO_ENOMEM, any storage error. */
int raft_create(const struct raft_config *c, struct raft **out,
                const char **why);
void raft_destroy(struct raft *r);

/* Advances logical time by one tick. On a quiet group it does nothing. */
int raft_tick(struct raft *r);

/* True while the group is quiet at this node (a quiesced leader, or a
 * follower its leader quiesced): ticks do nothing until something wakes it,
 * so the host may stop ticking it. Messages and ready batches must still be
 * handled. */
bool raft_quiet(const struct raft *r);

/* The host's failure detector says node `id` is unreachable from here. A
 * quiet follower whose leader is `id` wakes and starts its election timer
 * from zero; any follower whose leader is `id` also refuses to go quiet for
 * it until it hears a regular (non-quiesce) message from it again. Anything
 * else is ignored, so a false alarm costs at most an election timeout of
 * ticking and a pre-vote round (which wakes the leader, whose heartbeat
 * ends it). A stale quiesce heartbeat that arrives after a report can
 * quiet a follower again, so the host must keep reporting a peer while it
 * stays unreachable (at least each time it finds a quiet group whose
 * raft_status().leader is that peer). Like every raft_* call, not between
 * raft_ready() and raft_advance(). Cost: O(1). */
void raft_peer_down(struct raft *r, raft_id id);

/* Feeds one message from a peer. The core copies what it keeps. Invalid
 * input returns KHO_OK after counting it (it is a peer's fault, not the
 * caller's); only storage failures and KHO_ENOMEM are returned. */
int raft_step(struct raft *r, const struct raft_msg *m);

/* Appends a client command. On KHO_OK, *index and *term say where; the
 * command is committed when an applied entry has that index and term (an
 * entry at that index with another term means the command was lost).
 * Errors: KHO_ENOTLEADER (raft_status().leader is the hint), KHO_EBUSY
 * (leadership transfer in progress, or max_uncommitted_bytes reached),
 * KHO_ETOOLARGE (> max_entry_bytes). */
int raft_propose(struct raft *r, const uint8_t *data, size_t len,
                 uint64_t *index, uint64_t *term);

/* Proposes a single-server membership change (dissertation §4.1): only one
 * at a time, only once this leader has committed an entry of its term; the
 * new configuration is in force as soon as it is appended.
 * Errors: KHO_ENOTLEADER; KHO_EBUSY (a change is pending, the leader has
 * not committed in its term yet, or a transfer is in progress); KHO_EINVAL
 * (id 0, adding an existing member, promoting a non-learner, removing a
 * non-member or the last voter, too many members). */
int raft_propose_conf(struct raft *r, enum raft_conf_op op, raft_id id,
                      uint64_t *index, uint64_t *term);

/* Requests a linearizable read (ReadIndex, dissertation §6.4). Requests
 * made between two ready batches share one quorum round. The answer comes
 * back in raft_ready.reads with the same ctx. Errors: KHO_ENOTLEADER,
 * KHO_EBUSY (max_pending_reads waiting). */
int raft_read_index(struct raft *r, uint64_t ctx);

/* Forgets the leader's lease, and every lease a heartbeat round sent so far
 * could still give: the next read waits for a new round. For a host whose
 * ticks fell behind its clock (a paused process, a stall it does not catch
 * up), which would otherwise break the assumption leases rest on. */
void raft_lease_drop(struct raft *r);

/* For a host that serves lease reads outside the core: the ticks left of
 * the leader's lease (0: none - not leader, no entry of this term committed
 * yet, a transfer under way, quiet, or no round acknowledged recently), and
 * the commit index, which such a read must have applied before it answers.
 * A read answered while the host's clock is short of the moment the core
 * reaches now + ticks left is as safe as one raft_read_index() answers. */
uint64_t raft_lease_left(const struct raft *r, uint64_t *commit);

/* Hands leadership to `to` (§3.10): proposals are refused until the
 * transfer completes or times out after election_ticks. A second call for
 * the same target is KHO_OK; for another target it retargets. Errors:
 * KHO_ENOTLEADER, KHO_EINVAL (not a voter, or self). */
int raft_transfer_leader(struct raft *r, raft_id to);

bool raft_has_ready(const struct raft *r);
/* Collects the ready batch. Errors: storage errors, KHO_ENOMEM. */
int raft_ready(struct raft *r, struct raft_ready *rd);
/* Acknowledges that the host acted on the last ready batch. */
void raft_advance(struct raft *r);

void raft_status(const struct raft *r, struct raft_status *out);
const struct raft_stats *raft_stats(const struct raft *r);
/* The configuration in force at the applied index: what a snapshot taken
 * at raft_status().applied must record. */
void raft_applied_conf(const struct raft *r, struct raft_conf *out);

/* A leader's view of member `id`: its durable log index as last
 * acknowledged (*match) and whether it was heard from within an election
 * timeout (*active). Errors: KHO_ENOTLEADER, KHO_ENOTFOUND (not a member). */
int raft_progress(const struct raft *r, raft_id id, uint64_t *match,
                  bool *active);

const char *raft_role_name(enum raft_role role);
const char *raft_msg_type_name(uint32_t type);

/*
 * Planted bugs, for proving that tests/sim catches them (make sim-planted).
 * Compiled in only with -DKHO_PLANTED_BUGS; a normal build has none.
 */
enum raft_planted_bug {
    RAFT_BUG_NONE = 0,
    RAFT_BUG_COMMIT_OLD_TERM = 1,  /* Figure 8: count replicas of old terms */
    RAFT_BUG_VOTE_NOT_PERSISTED = 2, /* grant a vote, do not persist it */
    RAFT_BUG_READ_NO_QUORUM = 3,   /* answer ReadIndex with no quorum round */
    RAFT_BUG_TRUNCATE_ON_MATCH = 4, /* cut the log on a matching append */
    RAFT_BUG_COUNT_ = 5,
};
#ifdef KHO_PLANTED_BUGS
extern int raft_planted_bug; /* the one global, and only in planted builds */
#endif

#endif /* KHO_RAFT_H */

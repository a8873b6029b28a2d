/*
 * raft.c - roles, elections and the public entry points of the core.
 *
 * Section numbers cite Ongaro's dissertation ("Consensus: Bridging Theory
 * and Practice", 2014); "Figure 2" is the Raft paper's summary figure.
 * Replication and reads are in replication.c, ready batches in ready.c.
 */
#include "internal.h"
#include "step.h"

#include <stdlib.h>
#include <string.h>

#ifdef KHO_PLANTED_BUGS
int raft_planted_bug;
#endif

_Noreturn void raft_assert_fail(const struct raft *r, const char *expr,
                                const char *file, int line)
{
    (void)file;
    (void)line;
    if (r != NULL && r->cfg.panic != NULL) {
        r->cfg.panic(r->cfg.panic_ctx, expr, r->cfg.group_id, r->cfg.id,
                     r->term, r->commit);
    }
    abort();
}

/* splitmix64: small, fast, and good enough to spread election timeouts. */
static uint64_t rng_next(struct raft *r)
{
    uint64_t z = (r->rng += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

void raft_config_defaults(struct raft_config *c)
{
    c->election_ticks = 10;
    c->heartbeat_ticks = 1;
    c->pre_vote = true;
    c->check_quorum = true;
    c->lease_reads = false;
    c->lease_drift_ticks = 2;
    c->max_msg_bytes = 1u << 20;
    c->max_msg_entries = 256;
    c->max_inflight_msgs = 64;
    c->max_inflight_bytes = UINT64_C(32) << 20;
    c->max_uncommitted_bytes = UINT64_C(64) << 20;
    c->max_entry_bytes = (1u << 20) + 4096u;
    c->max_pending_reads = 4096;
    c->max_ready_msgs = 4096;
    c->max_apply_bytes = UINT64_C(16) << 20;
    c->snapshot_timeout_ticks = 50;
    c->quiesce_ticks = 0;
}

int raft_config_validate(const struct raft_config *c, const char **why)
{
    const char *w = NULL;
    if (c->id == 0) {
        w = "id must not be 0";
    } else if (c->election_ticks < 2 || c->election_ticks > 100000) {
        w = "election_ticks must be in [2, 100000]";
    } else if (c->heartbeat_ticks == 0 ||
               c->heartbeat_ticks >= c->election_ticks) {
        w = "heartbeat_ticks must be in [1, election_ticks)";
    } else if (c->lease_reads && !c->check_quorum) {
        w = "lease_reads requires check_quorum";
    } else if (c->lease_reads && c->lease_drift_ticks >= c->election_ticks) {
        w = "lease_drift_ticks must be below election_ticks";
    } else if (c->max_msg_bytes == 0 ||
               c->max_msg_bytes > RAFT_ENTRY_BYTES_MAX) {
        w = "max_msg_bytes out of range";
    } else if (c->max_msg_entries == 0 ||
               c->max_msg_entries > RAFT_MSG_ENTRIES_MAX) {
        w = "max_msg_entries out of range";
    } else if (c->max_inflight_msgs == 0 ||
               c->max_inflight_msgs > RAFT_INFLIGHT_MSGS_MAX) {
        w = "max_inflight_msgs out of range";
    } else if (c->max_inflight_bytes == 0) {
        w = "max_inflight_bytes must be > 0";
    } else if (c->max_entry_bytes < RAFT_CONF_ENCODED_MAX ||
               c->max_entry_bytes > RAFT_ENTRY_BYTES_MAX) {
        w = "max_entry_bytes out of range";
    } else if (c->max_uncommitted_bytes < c->max_entry_bytes) {
        w = "max_uncommitted_bytes must hold one entry";
    } else if (c->max_pending_reads == 0 ||
               c->max_pending_reads > RAFT_READS_MAX) {
        w = "max_pending_reads out of range";
    } else if (c->max_ready_msgs < 2 * RAFT_MEMBERS_MAX ||
               c->max_ready_msgs > RAFT_READY_MSGS_MAX) {
        w = "max_ready_msgs out of range";
    } else if (c->max_apply_bytes == 0) {
        w = "max_apply_bytes must be > 0";
    } else if (c->snapshot_timeout_ticks == 0) {
        w = "snapshot_timeout_ticks must be > 0";
    } else if (c->quiesce_ticks > RAFT_QUIESCE_TICKS_MAX) {
        w = "quiesce_ticks must be 0 or in [1, RAFT_QUIESCE_TICKS_MAX]";
    } else if (c->storage.snapshot_meta == NULL ||
               c->storage.last_index == NULL || c->storage.term == NULL ||
               c->storage.entries == NULL || c->storage.snapshot == NULL) {
        w = "storage callbacks missing";
    } else if (c->hs.term > RAFT_TERM_MAX || c->hs.commit > RAFT_INDEX_MAX) {
        w = "hard state out of range";
    }
    if (why != NULL) {
        *why = w;
    }
    return w == NULL ? KHO_OK : KHO_EINVAL;
}

/* --- Roles ----------------------------------------------------------------
 */

static void reset_randomized_timeout(struct raft *r)
{
    uint32_t et = r->cfg.election_ticks;
    r->randomized_timeout = et + (uint32_t)(rng_next(r) % et);
}

/* The election timeout starts now, with a fresh random length (§5.2). */
void restart_election_timer(struct raft *r)
{
    r->election_elapsed = 0;
    reset_randomized_timeout(r);
}

int conf_pos(const struct raft *r, raft_id id)
{
    for (uint32_t i = 0; i < r->conf.n; i++) {
        if (r->conf.members[i].id == id) {
            return (int)i;
        }
    }
    return -1;
}

bool raft_promotable(const struct raft *r)
{
    return raft_conf_is_voter(&r->conf, r->cfg.id);
}

static void reset(struct raft *r, uint64_t term)
{
    if (r->term != term) {
        r->term = term;
        r->vote = 0;
#ifdef KHO_PLANTED_BUGS
        r->bug_vote_unpersisted = false;
#endif
    }
    r->lead = 0;
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    r->quiet = false;
    r->idle_ticks = 0;
    reset_randomized_timeout(r);
    memset(r->votes, 0, sizeof(r->votes));
    r->transferee = 0;
    r->transfer_campaign = false;
    r->committed_in_term = false;
    r->bcast_pending = false;
    r->uncommitted_bytes = 0;
    r->lease_until = 0;
}

void become_follower(struct raft *r, uint64_t term, raft_id lead)
{
    if (r->role == RAFT_LEADER) {
        reads_fail_all(r);
    }
    reset(r, term);
    r->role = RAFT_FOLLOWER;
    r->lead = lead;
}

static void become_precandidate(struct raft *r)
{
    RAFT_ASSERT(r, r->role != RAFT_LEADER);
    /* §9.6: a pre-candidate neither increments its term nor votes. */
    memset(r->votes, 0, sizeof(r->votes));
    r->role = RAFT_PRECANDIDATE;
    r->lead = 0;
}

static void become_candidate(struct raft *r)
{
    RAFT_ASSERT(r, r->role != RAFT_LEADER);
    reset(r, r->term + 1);
    r->vote = r->cfg.id;
    r->role = RAFT_CANDIDATE;
}

void become_leader(struct raft *r)
{
    RAFT_ASSERT(r, r->role == RAFT_CANDIDATE);
    reset(r, r->term);
    r->role = RAFT_LEADER;
    r->lead = r->cfg.id;
    r->stats.leader_changes++;
    progress_reset_all(r);
    /* §8: a no-op entry of the new term lets the leader learn which of its
     * entries are committed; reads wait for it (committed_in_term). */
    struct raft_entry noop = {.term = r->term,
                              .index = log_last_index(r) + 1,
                              .type = RAFT_ENTRY_NOOP};
    int rc = leader_append(r, &noop);
    RAFT_ASSERT(r, rc == KHO_OK || rc == KHO_ENOMEM);
}

/* §3.4 and §9.6: start an election, or the pre-vote round before it. */
void campaign(struct raft *r, bool pre, bool transfer)
{
    if (!raft_promotable(r)) {
        return;
    }
    uint64_t term;
    if (pre) {
        become_precandidate(r);
        term = r->term + 1;
    } else {
        become_candidate(r);
        term = r->term;
        r->transfer_campaign = transfer;
        r->stats.elections++;
    }
    int me = conf_pos(r, r->cfg.id);
    r->votes[me] = 1;
    if (tally_won(r)) {
        campaign_won(r);
        return;
    }
    uint64_t last = log_last_index(r);
    for (uint32_t i = 0; i < r->conf.n; i++) {
        const struct raft_member *m = &r->conf.members[i];
        if (m->role != RAFT_VOTER || m->id == r->cfg.id) {
            continue;
        }
        struct raft_msg *out = msg_new(r, pre ? RAFT_MSG_PREVOTE : RAFT_MSG_VOTE,
                                       m->id);
        if (out == NULL) {
            continue;
        }
        out->term = term;
        out->index = last;
        out->log_term = log_term_or0(r, last);
        out->flags = transfer ? RAFT_MSGF_TRANSFER : 0;
    }
}

/* Returns true once a quorum of voters granted; sets *lost when a quorum
 * refused. */
static bool tally(const struct raft *r, bool *lost)
{
    uint32_t voters = raft_conf_voters(&r->conf), yes = 0, no = 0;
    for (uint32_t i = 0; i < r->conf.n; i++) {
        if (r->conf.members[i].role != RAFT_VOTER) {
            continue;
        }
        yes += r->votes[i] == 1;
        no += r->votes[i] == -1;
    }
    uint32_t quorum = voters / 2 + 1;
    if (lost != NULL) {
        *lost = no > voters - quorum; /* the rest cannot make a quorum */
    }
    return voters > 0 && yes >= quorum;
}

bool tally_won(const struct raft *r)
{
    return tally(r, NULL);
}

void campaign_won(struct raft *r)
{
    if (r->role == RAFT_PRECANDIDATE) {
        campaign(r, false, false);
    } else {
        become_leader(r);
    }
}

static void handle_vote_resp(struct raft *r, const struct raft_msg *m)
{
    bool pre = m->type == RAFT_MSG_PREVOTE_RESP;
    if ((pre && r->role != RAFT_PRECANDIDATE) ||
        (!pre && r->role != RAFT_CANDIDATE)) {
        r->stats.dropped_stale++;
        return;
    }
    int pos = conf_pos(r, m->from);
    if (pos < 0) {
        r->stats.dropped_unknown++;
        return;
    }
    if (r->conf.members[pos].role != RAFT_VOTER) {
        r->stats.dropped_unknown++; /* a learner's vote does not count */
        return;
    }
    if (r->votes[pos] == 0) {
        r->votes[pos] = m->reject ? -1 : 1;
    }
    bool lost = false;
    if (tally(r, &lost)) {
        campaign_won(r);
    } else if (lost) {
        become_follower(r, r->term, 0);
    }
}

/* §5.2, §5.4.1, §9.6: answer a (pre-)vote request. */
static void handle_vote(struct raft *r, const struct raft_msg *m)
{
    bool pre = m->type == RAFT_MSG_PREVOTE;
    bool can_vote = r->vote == m->from || (r->vote == 0 && r->lead == 0) ||
                    (pre && m->term > r->term);
    bool grant = can_vote && log_is_up_to_date(r, m->index, m->log_term);
    struct raft_msg *out =
        msg_new(r, pre ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP, m->from);
    if (out == NULL) {
        return;
    }
    out->reject = !grant;
    /* A granted pre-vote answers in the election's term, so the
     * pre-candidate counts it; a refusal carries ours. */
    out->term = grant && pre ? m->term : r->term;
    if (grant && !pre) {
        r->election_elapsed = 0;
        r->vote = m->from;
#ifdef KHO_PLANTED_BUGS
        if (raft_planted_bug == RAFT_BUG_VOTE_NOT_PERSISTED) {
            r->bug_vote_unpersisted = true;
        }
#endif
    }
}

/* Leader stickiness (§4.2.3 / §9.6 with check-quorum): a voter that heard
 * from a leader within the minimum election timeout ignores vote requests,
 * so a server that was cut off cannot depose a working leader. A quiet node
 * counts as having just heard from its leader, and refuses pre-votes even
 * without check-quorum: its leader sends nothing while the group is idle,
 * so a node that merely never heard it must not win a pre-vote (raft.h,
 * "Quiescence"). A request made on behalf of a leadership transfer is
 * exempt. */
static bool in_lease(const struct raft *r, const struct raft_msg *m)
{
    if ((m->flags & RAFT_MSGF_TRANSFER) != 0) {
        return false;
    }
    if (r->quiet && m->type == RAFT_MSG_PREVOTE) {
        return true;
    }
    bool heard = r->lead != 0 &&
                 (r->quiet || r->election_elapsed < r->cfg.election_ticks);
    return r->cfg.check_quorum && (heard || r->now_ticks < r->vote_hold_until);
}

/* Handles the term of an incoming message (Figure 2, "all servers").
 * Returns false if the message is consumed. */
static bool step_term(struct raft *r, const struct raft_msg *m)
{
    bool is_vote = m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE;
    bool from_leader = m->type == RAFT_MSG_APPEND ||
                       m->type == RAFT_MSG_HEARTBEAT ||
                       m->type == RAFT_MSG_SNAPSHOT;
    if (m->term > r->term) {
        if (is_vote && in_lease(r, m)) {
            r->stats.dropped_stale++;
            return false;
        }
        if (m->type == RAFT_MSG_PREVOTE ||
            (m->type == RAFT_MSG_PREVOTE_RESP && !m->reject)) {
            return true; /* pre-vote traffic never moves terms */
        }
        become_follower(r, m->term, from_leader ? m->from : 0);
        return true;
    }
    if (m->term < r->term) {
        if (from_leader && (r->cfg.check_quorum || r->cfg.pre_vote)) {
            /* Tell a stale leader about the new term, or it may never
             * learn of it when pre-vote keeps us from campaigning. */
            struct raft_msg *out = msg_new(r, RAFT_MSG_APPEND_RESP, m->from);
            if (out != NULL) {
                out->term = r->term;
            }
        } else if (is_vote) {
            /* Figure 2: the reply carries our term, so a candidate stuck in
             * an old term learns of the newer one even when nobody it can
             * hear from would otherwise contact it (khosim seed 1719). */
            uint32_t type = m->type == RAFT_MSG_PREVOTE ? RAFT_MSG_PREVOTE_RESP
                                                        : RAFT_MSG_VOTE_RESP;
            struct raft_msg *out = msg_new(r, type, m->from);
            if (out != NULL) {
                out->term = r->term;
                out->reject = true;
            }
        }
        r->stats.dropped_stale++;
        return false;
    }
    return true;
}

static void step_follower(struct raft *r, const struct raft_msg *m)
{
    switch (m->type) {
    case RAFT_MSG_APPEND:
    case RAFT_MSG_HEARTBEAT:
    case RAFT_MSG_SNAPSHOT:
        if (r->role != RAFT_FOLLOWER) {
            /* §5.2: a candidate that hears from a leader of its term
             * returns to follower. */
            become_follower(r, r->term, m->from);
        }
        r->election_elapsed = 0;
        r->lead = m->from;
        if (!m->quiesce && r->lead_down == m->from) {
            r->lead_down = 0; /* it is back: it may quiesce us again */
        }
        if (m->type == RAFT_MSG_APPEND) {
            handle_append(r, m);
        } else if (m->type == RAFT_MSG_HEARTBEAT) {
            handle_heartbeat(r, m);
        } else {
            handle_snapshot(r, m);
        }
        return;
    case RAFT_MSG_TIMEOUT_NOW:
        if (r->role == RAFT_FOLLOWER && m->from == r->lead) {
            campaign(r, false, true);
        } else {
            r->stats.dropped_stale++;
        }
        return;
    case RAFT_MSG_VOTE_RESP:
    case RAFT_MSG_PREVOTE_RESP:
        handle_vote_resp(r, m);
        return;
    default:
        r->stats.dropped_stale++; /* responses meant for a leader */
        return;
    }
}

int raft_step(struct raft *r, const struct raft_msg *m)
{
    RAFT_ASSERT(r, !r->in_ready);
    if (!msg_validate(r, m)) {
        return KHO_OK;
    }
    follower_wake_on(r, m);
    if (!step_term(r, m)) {
        /* Dropped, but a quiet leader may still be needed (a vote request
         * it refused from a node that never heard from it). */
        leader_wake_on(r, m);
        return KHO_OK;
    }
    if (m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE) {
        handle_vote(r, m);
        leader_wake_on(r, m);
        return KHO_OK;
    }
    if (r->role == RAFT_LEADER) {
        step_leader(r, m);
    } else {
        step_follower(r, m);
    }
    leader_wake_on(r, m);
    return r->err;
}

/* --- Ticks ----------------------------------------------------------------
 */

static void tick_election(struct raft *r)
{
    r->election_elapsed++;
    if (raft_promotable(r) && r->election_elapsed >= r->randomized_timeout) {
        r->election_elapsed = 0;
        campaign(r, r->cfg.pre_vote, false);
    }
}

int raft_tick(struct raft *r)
{
    RAFT_ASSERT(r, !r->in_ready);
    r->now_ticks++;
    if (r->quiet) {
        return r->err; /* the election timer and heartbeats are stopped */
    }
    if (r->role == RAFT_LEADER) {
        tick_leader(r);
    } else {
        tick_election(r);
    }
    return r->err;
}

/* --- Lifecycle ------------------------------------------------------------
 */

static int load_confs(struct raft *r)
{
    int rc = log_find_conf(r, log_last_index(r), &r->conf, &r->conf_index);
    if (rc != KHO_OK) {
        return rc;
    }
    if (r->conf_index <= r->applied) {
        r->applied_conf = r->conf;
        return KHO_OK;
    }
    uint64_t idx = 0;
    return log_find_conf(r, r->applied, &r->applied_conf, &idx);
}

static int load_state(struct raft *r, const char **why)
{
    struct raft_snapshot_meta meta;
    uint64_t last = 0;
    int rc = r->st.snapshot_meta(r->st.ctx, &meta);
    if (rc == KHO_OK) {
        rc = r->st.last_index(r->st.ctx, &last);
    }
    if (rc != KHO_OK) {
        *why = "storage failed while loading";
        return rc;
    }
    if (last < meta.index || last > RAFT_INDEX_MAX) {
        *why = "stored log ends before its snapshot";
        return KHO_ECORRUPT;
    }
    r->u_offset = last + 1;
    r->term = r->cfg.hs.term;
    r->vote = r->cfg.hs.vote;
    r->commit = r->cfg.hs.commit;
    r->applied = r->cfg.applied;
    if (r->applied < meta.index || r->applied > last) {
        *why = "applied index outside the stored log";
        return KHO_EINVAL;
    }
    /* The state machine proves what it applied was committed. */
    if (r->commit < r->applied) {
        r->commit = r->applied;
    }
    if (r->commit > last) {
        *why = "commit index beyond the stored log";
        return KHO_ECORRUPT;
    }
    /* Every stored entry was appended in a term the hard state reached
     * first (both are written in one batch): a lower term means the hard
     * state is stale, and trusting it could grant a second vote. */
    uint64_t last_term = 0;
    rc = log_term(r, last, &last_term);
    if (rc != KHO_OK || last_term > r->term) {
        *why = "hard state term below the stored log's last term";
        return rc != KHO_OK ? rc : KHO_ECORRUPT;
    }
    r->prev_hs = (struct raft_hard_state){r->term, r->vote, r->commit};
    rc = load_confs(r);
    if (rc != KHO_OK) {
        *why = "cannot read the configuration from the log";
    }
    return rc;
}

int raft_create(const struct raft_config *c, struct raft **out,
                const char **why)
{
    const char *w = NULL;
    int rc = raft_config_validate(c, &w);
    if (rc != KHO_OK) {
        goto fail_early;
    }
    struct raft *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        rc = KHO_ENOMEM;
        w = "out of memory";
        goto fail_early;
    }
    r->cfg = *c;
    r->st = c->storage;
    r->rng = c->seed ^ (c->id * UINT64_C(0x9E3779B97F4A7C15));
    rc = alloc_buffers(r);
    if (rc != KHO_OK) {
        w = "out of memory";
        goto fail;
    }
    rc = load_state(r, &w);
    if (rc != KHO_OK) {
        goto fail;
    }
    r->role = RAFT_FOLLOWER;
    reset_randomized_timeout(r);
    /* With leases, a restarted voter must not vote before any lease it may
     * have backed expires: it forgot when it last heard from a leader. */
    if (c->lease_reads) {
        r->vote_hold_until = c->election_ticks;
    }
    *out = r;
    return KHO_OK;
fail:
    raft_destroy(r);
fail_early:
    if (why != NULL) {
        *why = w;
    }
    return rc;
}

void raft_destroy(struct raft *r)
{
    if (r == NULL) {
        return;
    }
    ready_release(r);
    log_free_entries(r->u, r->u_n);
    free(r->u);
    snapshot_free(r->u_snap);
    free(r->infl_pool);
    free(r->reads);
    free(r->read_states);
    free(r->msgs);
    free(r->rm.committed);
    free(r);
}

void raft_status(const struct raft *r, struct raft_status *out)
{
    memset(out, 0, sizeof(*out));
    out->id = r->cfg.id;
    out->role = r->role;
    out->term = r->term;
    out->vote = r->vote;
    out->leader = r->lead;
    out->commit = r->commit;
    out->applied = r->applied;
    out->last_index = log_last_index(r);
    out->stable_index = log_stable_index(r);
    struct raft_snapshot_meta meta;
    if (r->u_snap != NULL) {
        out->first_index = r->u_snap->meta.index + 1;
    } else if (r->st.snapshot_meta(r->st.ctx, &meta) == KHO_OK) {
        out->first_index = meta.index + 1;
    }
    out->conf_index = r->conf_index;
    out->conf = r->conf;
    out->transferee = r->transferee;
    out->quiet = r->quiet;
}

const struct raft_stats *raft_stats(const struct raft *r)
{
    return &r->stats;
}

void raft_applied_conf(const struct raft *r, struct raft_conf *out)
{
    *out = r->applied_conf;
}

int raft_progress(const struct raft *r, raft_id id, uint64_t *match,
                  bool *active)
{
    if (r->role != RAFT_LEADER) {
        return KHO_ENOTLEADER;
    }
    int pos = conf_pos(r, id);
    if (pos < 0) {
        return KHO_ENOTFOUND;
    }
    *match = r->prs[pos].match;
    *active = id == r->cfg.id || r->prs[pos].recent_active;
    return KHO_OK;
}

const char *raft_role_name(enum raft_role role)
{
    switch (role) {
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_PRECANDIDATE:
        return "pre-candidate";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_LEADER:
        return "leader";
    }
    return "?";
}

const char *raft_msg_type_name(uint32_t type)
{
    static const char *const names[] = {
        "?",         "APPEND",         "APPEND_RESP", "VOTE",
        "VOTE_RESP", "PREVOTE",        "PREVOTE_RESP", "HEARTBEAT",
        "HEARTBEAT_RESP", "SNAPSHOT", "TIMEOUT_NOW",
    };
    if (type > RAFT_MSG_TYPE_MAX_) {
        return "?";
    }
    return names[type];
}

/*
 * quiesce.c - quiescent (hibernating) groups, the shape CockroachDB uses:
 * a leader whose group has been idle for quiesce_ticks tells its followers
 * with a quiesce heartbeat and stops heartbeating; the followers stop their
 * election timers. The host's failure detector (raft_peer_down) then takes
 * over from the missing heartbeats in telling a follower that its leader is
 * gone. The contract is in raft.h ("Quiescence").
 *
 * Nothing here decides what is committed or who may vote for whom beyond
 * refusing votes, so Raft's safety argument is untouched: quiescence only
 * stops timers (leader stickiness for longer) and heartbeats (which carry
 * nothing a later message does not carry again). Liveness rests on three
 * rules: every message from the leader wakes its followers, every message
 * that may need the leader's attention wakes the leader, and the host
 * reports a leader it cannot reach.
 */
#include "step.h"

/* --- Leader ---------------------------------------------------------------
 */

void pr_heard(const struct raft *r, struct progress *pr)
{
    pr->recent_active = true;
    pr->heard_at = r->now_ticks + 1;
}

/* Whether member `pr` lets the leader quiesce: it holds the whole log, it
 * answered a heartbeat that carried the commit index (so it applies
 * everything even if the quiesce heartbeat is lost), and a voter answered
 * within the last election timeout (it is up, so it will hear the quiesce
 * heartbeat or wake us). */
static bool member_idle(const struct raft *r, const struct progress *pr,
                        uint64_t last)
{
    if (pr->match != last) {
        return false;
    }
    if (pr->id == r->cfg.id) {
        return true;
    }
    if (pr->commit_acked < r->commit) {
        return false;
    }
    if (!pr->voter) {
        return true;
    }
    return pr->heard_at != 0 &&
           r->now_ticks + 1 - pr->heard_at < r->cfg.election_ticks;
}

/* Nothing pending: no proposal or configuration change (commit == last),
 * no read, no transfer, no appends waiting for a ready batch; and every
 * member idle. O(members), once per tick of an awake leader. */
static bool leader_idle(const struct raft *r)
{
    uint64_t last = log_last_index(r);
    if (r->commit != last || r->reads_n > 0 || r->transferee != 0 ||
        r->bcast_pending) {
        return false;
    }
    for (uint32_t i = 0; i < r->conf.n; i++) {
        if (!member_idle(r, &r->prs[i], last)) {
            return false;
        }
    }
    return true;
}

/* Called once per leader tick, before its heartbeat. Returns true if the
 * leader went quiet, having sent the quiesce heartbeat round instead. */
bool leader_maybe_quiesce(struct raft *r)
{
    if (r->cfg.quiesce_ticks == 0 || !leader_idle(r)) {
        r->idle_ticks = 0;
        return false;
    }
    if (++r->idle_ticks < r->cfg.quiesce_ticks) {
        return false;
    }
    r->idle_ticks = 0;
    r->quiet = true;
    r->stats.quiesced++;
    heartbeat_round(r, true);
    r->quiesce_round = r->round;
    /* No lease survives a quiet spell: the host may stop ticking us, and
     * our clock would then lag behind the followers' (raft.h,
     * lease_reads). No round sent so far may extend one again. */
    raft_lease_drop(r);
    return true;
}

/* Resumes heartbeats and check-quorum as a new leader would: everyone
 * counts as active for the first election timeout and nobody as having
 * answered for quiescence. With `heartbeat`, a heartbeat round goes out at
 * once, so the followers wake and a node that campaigned learns who leads;
 * callers whose own messages reach every follower in the same ready batch
 * (proposals, reads) skip it. */
void leader_wake(struct raft *r, bool heartbeat)
{
    if (!r->quiet) {
        return;
    }
    r->quiet = false;
    r->idle_ticks = 0;
    r->election_elapsed = 0;
    r->heartbeat_elapsed = 0;
    r->stats.woken++;
    for (uint32_t i = 0; i < r->conf.n; i++) {
        struct progress *pr = &r->prs[i];
        pr->recent_active = true;
        pr->heard_at = pr->id == r->cfg.id ? r->now_ticks + 1 : 0;
    }
    raft_lease_drop(r);
    if (heartbeat) {
        heartbeat_round(r, false);
    }
}

/* After a quiet leader handled `m`: any message of its term or newer from
 * a member may need it awake (a vote request from a node that never heard
 * it, an append answer, a refused quiesce), except an answer to a heartbeat
 * sent before it quiesced, which asks for nothing. A non-member (a removed
 * node that missed its removal and campaigns forever) gets no heartbeat
 * from us anyway, so waking for it would only keep the group awake. */
void leader_wake_on(struct raft *r, const struct raft_msg *m)
{
    if (r->role != RAFT_LEADER || !r->quiet || m->term < r->term ||
        conf_pos(r, m->from) < 0) {
        return;
    }
    if (m->type == RAFT_MSG_HEARTBEAT_RESP && m->ctx < r->quiesce_round) {
        return;
    }
    leader_wake(r, true);
}

/* --- Follower -------------------------------------------------------------
 */

/* Before a quiet follower handles `m`: a message from its leader wakes it,
 * whatever it is (a heartbeat, an append, or a vote request from a leader
 * that restarted and lost its role). The election timer restarts. */
void follower_wake_on(struct raft *r, const struct raft_msg *m)
{
    if (!r->quiet || r->role == RAFT_LEADER || m->from != r->lead ||
        m->term < r->term) {
        return;
    }
    r->quiet = false;
    r->election_elapsed = 0;
    r->stats.woken++;
}

/* A quiesce heartbeat from the leader of our term (already stepped as a
 * heartbeat: the commit is applied). Goes quiet and returns true if the log
 * ends at the leader's commit with the same term and the host has not
 * reported this leader down; the caller then sends no answer. */
bool follower_quiesce(struct raft *r, const struct raft_msg *m)
{
    uint64_t last = log_last_index(r);
    if (r->cfg.quiesce_ticks == 0 || r->lead_down == m->from ||
        m->index != m->commit || last != m->commit || r->commit != last ||
        log_term_or0(r, last) != m->log_term) {
        return false;
    }
    r->quiet = true;
    r->stats.quiesced++;
    return true;
}

/* --- Public ---------------------------------------------------------------
 */

bool raft_quiet(const struct raft *r)
{
    return r->quiet;
}

void raft_peer_down(struct raft *r, raft_id id)
{
    RAFT_ASSERT(r, !r->in_ready);
    if (r->err != KHO_OK || id == 0 || r->role != RAFT_FOLLOWER ||
        r->lead != id) {
        return;
    }
    r->lead_down = id;
    if (!r->quiet) {
        return; /* its election timer runs already */
    }
    r->quiet = false;
    r->stats.woken++;
    restart_election_timer(r);
}

/*
 * read.c - linearizable reads without log writes: ReadIndex with a quorum
 * heartbeat round (§6.4), batched across requests, and optional leader
 * leases (§6.4.1) under the clock assumption stated in raft.h.
 */
#include "step.h"

#include <string.h>

static void push_read_state(struct raft *r, uint64_t ctx, uint64_t index,
                            int status)
{
    /* raft_read_index() admits a request only if both queues together stay
     * under max_pending_reads, so this cannot overflow. */
    RAFT_ASSERT(r, r->read_states_n < r->cfg.max_pending_reads);
    struct raft_read_state *rs = &r->read_states[r->read_states_n++];
    rs->ctx = ctx;
    rs->index = index;
    rs->status = status;
}

void reads_fail_all(struct raft *r)
{
    for (uint32_t i = 0; i < r->reads_n; i++) {
        push_read_state(r, r->reads[i].ctx, 0, KHO_ENOTLEADER);
    }
    r->reads_n = 0;
}

static bool lease_valid(const struct raft *r)
{
    return r->cfg.lease_reads && r->transferee == 0 &&
           r->now_ticks < r->lease_until;
}

void raft_lease_drop(struct raft *r)
{
    r->lease_until = 0;
    r->lease_min_round = r->round + 1;
}

uint64_t raft_lease_left(const struct raft *r, uint64_t *commit)
{
    *commit = r->commit;
    if (r->err != KHO_OK || r->role != RAFT_LEADER || !r->committed_in_term || r->quiet ||
        !lease_valid(r)) {
        return 0;
    }
    return r->lease_until - r->now_ticks;
}

static bool voters_only_self(const struct raft *r)
{
    return raft_conf_voters(&r->conf) == 1 &&
           raft_conf_is_voter(&r->conf, r->cfg.id);
}

int raft_read_index(struct raft *r, uint64_t ctx)
{
    RAFT_ASSERT(r, !r->in_ready);
    if (r->err != KHO_OK) {
        return r->err;
    }
    if (r->role != RAFT_LEADER) {
        return KHO_ENOTLEADER;
    }
    if (r->reads_n + r->read_states_n >= r->cfg.max_pending_reads) {
        return KHO_EBUSY;
    }
    /* A quiet leader has no lease to answer from: the read waits for the
     * round reads_flush() sends, which also wakes the followers. */
    leader_wake(r, false);
    if (PLANTED(RAFT_BUG_READ_NO_QUORUM)) {
        /* Planted bug 3: trust our commit index without asking anyone. */
        push_read_state(r, ctx, r->commit, KHO_OK);
        return KHO_OK;
    }
    /* Until the no-op of this term commits, our commit index may be
     * behind the group's (§6.4 step 1): such reads wait for it. */
    if (r->committed_in_term && (voters_only_self(r) || lease_valid(r))) {
        push_read_state(r, ctx, r->commit, KHO_OK);
        return KHO_OK;
    }
    struct pending_read *pr = &r->reads[r->reads_n++];
    pr->ctx = ctx;
    pr->index = 0;
    pr->round = 0;
    return KHO_OK;
}

bool reads_need_flush(const struct raft *r)
{
    return r->role == RAFT_LEADER && r->committed_in_term && r->reads_n > 0 &&
           r->reads[r->reads_n - 1].round == 0;
}

/* One heartbeat round to every member. Its number travels as ctx and comes
 * back in the answers; a round a quorum answered proves we were leader
 * when it was sent. With `quiesce`, it is the round that quiesces the group
 * (quiesce.c): it names our last entry, which is also the commit. */
void heartbeat_round(struct raft *r, bool quiesce)
{
    r->round++;
    r->round_tick[r->round % RAFT_LEASE_ROUNDS] = r->now_ticks;
    uint64_t last = log_last_index(r);
    uint64_t last_term = quiesce ? log_term_or0(r, last) : 0;
    for (uint32_t i = 0; i < r->conf.n; i++) {
        struct progress *pr = &r->prs[i];
        if (pr->id == r->cfg.id) {
            pr->read_ack = r->round;
            continue;
        }
        struct raft_msg *m = msg_new(r, RAFT_MSG_HEARTBEAT, pr->id);
        if (m == NULL) {
            continue;
        }
        m->commit = pr->match < r->commit ? pr->match : r->commit;
        m->ctx = r->round;
        if (m->commit != pr->hb_commit || pr->hb_commit_round == 0) {
            pr->hb_commit = m->commit;
            pr->hb_commit_round = r->round;
        }
        if (quiesce) {
            m->quiesce = true;
            m->index = last;
            m->log_term = last_term;
        }
    }
}

/* Starts one round for every read that arrived since the last ready: they
 * share it, which is the batching. Their index is the commit index now,
 * which is at least the commit index when each was requested. */
void reads_flush(struct raft *r)
{
    heartbeat_round(r, false);
    for (uint32_t i = 0; i < r->reads_n; i++) {
        if (r->reads[i].round == 0) {
            r->reads[i].round = r->round;
            r->reads[i].index = r->commit;
        }
    }
    reads_on_ack(r);
}

static void extend_lease(struct raft *r, uint64_t acked)
{
    if (!r->cfg.lease_reads || acked < r->lease_min_round || acked == 0 ||
        acked + RAFT_LEASE_ROUNDS <= r->round) {
        return;
    }
    /* Followers that answered round `acked` refuse votes for at least
     * election_ticks after they received it, which is after it was sent;
     * the drift allowance covers clocks that run at different rates. */
    uint64_t until = r->round_tick[acked % RAFT_LEASE_ROUNDS] +
                     r->cfg.election_ticks - r->cfg.lease_drift_ticks;
    if (until > r->lease_until) {
        r->lease_until = until;
    }
}

void reads_on_ack(struct raft *r)
{
    /* The newest round a quorum of voters has acknowledged. */
    uint64_t acked = quorum_value(r, QUORUM_READ_ACK);
    extend_lease(r, acked);
    uint32_t done = 0;
    while (done < r->reads_n && r->reads[done].round != 0 &&
           r->reads[done].round <= acked) {
        push_read_state(r, r->reads[done].ctx, r->reads[done].index, KHO_OK);
        done++;
    }
    if (done > 0) {
        memmove(r->reads, r->reads + done,
                sizeof(r->reads[0]) * (r->reads_n - done));
        r->reads_n -= done;
    }
}

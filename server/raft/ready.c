/*
 * ready.c - the ready batch: what the host must persist, send and apply,
 * and raft_advance() once it has.
 */
#include "step.h"

#include <stdlib.h>
#include <string.h>

int alloc_buffers(struct raft *r)
{
    const struct raft_config *c = &r->cfg;
    r->infl_pool = calloc((size_t)RAFT_MEMBERS_MAX * c->max_inflight_msgs * 2,
                          sizeof(uint64_t));
    r->reads = calloc(c->max_pending_reads, sizeof(*r->reads));
    r->read_states = calloc(c->max_pending_reads, sizeof(*r->read_states));
    r->msgs = calloc(c->max_ready_msgs, sizeof(*r->msgs));
    if (r->infl_pool == NULL || r->reads == NULL || r->read_states == NULL ||
        r->msgs == NULL) {
        return KHO_ENOMEM;
    }
    return KHO_OK;
}

static struct raft_hard_state hard_state(const struct raft *r)
{
    struct raft_hard_state hs = {r->term, r->vote, r->commit};
#ifdef KHO_PLANTED_BUGS
    if (r->bug_vote_unpersisted && raft_planted_bug == RAFT_BUG_VOTE_NOT_PERSISTED) {
        hs.vote = 0; /* planted bug 2: the granted vote never hits disk */
    }
#endif
    return hs;
}

static bool hs_equal(const struct raft_hard_state *a,
                     const struct raft_hard_state *b)
{
    return a->term == b->term && a->vote == b->vote && a->commit == b->commit;
}

static uint64_t apply_from(const struct raft *r)
{
    return (r->u_snap != NULL ? r->u_snap->meta.index : r->applied) + 1;
}

bool raft_has_ready(const struct raft *r)
{
    if (r->err != KHO_OK) {
        return false;
    }
    struct raft_hard_state hs = hard_state(r);
    if (r->msgs_n > 0 || r->u_n > 0 || r->u_snap != NULL ||
        r->read_states_n > 0 || !hs_equal(&hs, &r->prev_hs) ||
        r->commit >= apply_from(r)) {
        return true;
    }
    return r->role == RAFT_LEADER && (r->bcast_pending || reads_need_flush(r));
}

/* Copies committed entries (applied, commit] into the ready, bounded by
 * max_apply_bytes and RAFT_MSG_ENTRIES_MAX entries per batch. */
static int collect_committed(struct raft *r)
{
    uint64_t lo = apply_from(r), hi = r->commit + 1;
    r->ready_applied = lo - 1;
    if (lo >= hi) {
        return KHO_OK;
    }
    uint64_t want = hi - lo;
    size_t cap = want < RAFT_MSG_ENTRIES_MAX ? (size_t)want
                                             : RAFT_MSG_ENTRIES_MAX;
    if (cap > r->rm.cap_committed) {
        struct raft_entry *c = realloc(r->rm.committed, cap * sizeof(*c));
        if (c == NULL) {
            return KHO_ENOMEM;
        }
        r->rm.committed = c;
        r->rm.cap_committed = cap;
    }
    size_t n = 0;
    int rc = log_copy(r, lo, hi, r->cfg.max_apply_bytes, r->rm.committed, cap,
                      &n, NULL);
    if (rc != KHO_OK) {
        return rc;
    }
    r->rm.n_committed = n;
    r->ready_applied = lo + n - 1;
    for (size_t i = 0; i < n; i++) {
        const struct raft_entry *e = &r->rm.committed[i];
        if (r->role == RAFT_LEADER && e->term == r->term) {
            r->uncommitted_bytes -= e->len < r->uncommitted_bytes
                                        ? e->len
                                        : r->uncommitted_bytes;
        }
    }
    return KHO_OK;
}

int raft_ready(struct raft *r, struct raft_ready *rd)
{
    RAFT_ASSERT(r, !r->in_ready);
    if (r->err != KHO_OK) {
        return r->err;
    }
    if (r->role == RAFT_LEADER) {
        if (reads_need_flush(r)) {
            reads_flush(r);
        }
        if (r->bcast_pending) {
            r->bcast_pending = false;
            bcast_append(r);
        }
    }
    int rc = collect_committed(r);
    if (rc == KHO_OK) {
        rc = r->err;
    }
    if (rc != KHO_OK) {
        set_err(r, rc);
        return rc;
    }
    memset(rd, 0, sizeof(*rd));
    rd->hs = hard_state(r);
    rd->hs_changed = !hs_equal(&rd->hs, &r->prev_hs);
    rd->snapshot = r->u_snap;
    rd->entries = r->u;
    rd->n_entries = r->u_n;
    rd->msgs = r->msgs;
    rd->n_msgs = r->msgs_n;
    rd->committed = r->rm.committed;
    rd->n_committed = r->rm.n_committed;
    rd->reads = r->read_states;
    rd->n_reads = r->read_states_n;
    r->in_ready = true;
    return KHO_OK;
}

/* Frees what the last ready handed out (messages and applied copies). */
void ready_release(struct raft *r)
{
    for (uint32_t i = 0; i < r->msgs_n; i++) {
        msg_free(&r->msgs[i]);
    }
    r->msgs_n = 0;
    r->read_states_n = 0;
    log_free_entries(r->rm.committed, r->rm.n_committed);
    r->rm.n_committed = 0;
}

void raft_advance(struct raft *r)
{
    RAFT_ASSERT(r, r->in_ready);
    r->in_ready = false;
    if (r->u_snap != NULL) {
        r->applied = r->u_snap->meta.index;
        r->applied_conf = r->u_snap->meta.conf;
        snapshot_free(r->u_snap);
        r->u_snap = NULL;
    }
    for (size_t i = 0; i < r->rm.n_committed; i++) {
        const struct raft_entry *e = &r->rm.committed[i];
        if (e->type == RAFT_ENTRY_CONF &&
            raft_conf_decode(e->data, e->len, &r->applied_conf) != KHO_OK) {
            set_err(r, KHO_ECORRUPT);
        }
    }
    if (r->ready_applied > r->applied) {
        r->applied = r->ready_applied;
    }
    ready_release(r);
    log_free_entries(r->u, r->u_n);
    r->u_offset += r->u_n;
    r->u_n = 0;
    r->prev_hs = hard_state(r);
    if (r->role == RAFT_LEADER) {
        leader_self_ack(r);
    }
}

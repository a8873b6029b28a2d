/*
 * replication.c - log replication (§3.5), flow control, snapshots (§5),
 * proposals, membership changes (§4.1) and leadership transfer (§3.10).
 */
#include "step.h"

#include <stdlib.h>
#include <string.h>

void set_err(struct raft *r, int err)
{
    if (r->err == KHO_OK) {
        r->err = err;
    }
}

/* --- Messages -------------------------------------------------------------
 */

struct raft_msg *msg_new(struct raft *r, uint32_t type, raft_id to)
{
    if (r->msgs_n >= r->cfg.max_ready_msgs) {
        /* Dropping is safe: Raft tolerates message loss; it is counted. */
        r->stats.dropped_overflow++;
        return NULL;
    }
    struct raft_msg *m = &r->msgs[r->msgs_n++];
    memset(m, 0, sizeof(*m));
    m->group_id = r->cfg.group_id;
    m->type = type;
    m->from = r->cfg.id;
    m->to = to;
    m->term = r->term;
    return m;
}

void msg_free(struct raft_msg *m)
{
    if (m->entries != NULL) {
        log_free_entries(m->entries, m->n_entries);
        free(m->entries);
        m->entries = NULL;
    }
    free(m->snapshot.data);
    m->snapshot.data = NULL;
}

static bool entries_valid(const struct raft *r, const struct raft_msg *m)
{
    uint64_t prev_term = m->log_term;
    for (uint32_t i = 0; i < m->n_entries; i++) {
        const struct raft_entry *e = &m->entries[i];
        struct raft_conf c;
        if (e->index != m->index + 1 + i || e->term < prev_term ||
            e->term == 0 || e->term > m->term ||
            e->type > RAFT_ENTRY_CONF || e->len > r->cfg.max_entry_bytes ||
            (e->len > 0 && e->data == NULL)) {
            return false;
        }
        if (e->type == RAFT_ENTRY_CONF &&
            raft_conf_decode(e->data, e->len, &c) != KHO_OK) {
            return false;
        }
        prev_term = e->term;
    }
    return true;
}

static bool snapshot_valid(const struct raft_msg *m)
{
    const struct raft_snapshot_meta *s = &m->snapshot.meta;
    return s->index > 0 && s->index <= RAFT_INDEX_MAX && s->term > 0 &&
           s->term <= m->term && raft_conf_check(&s->conf) == KHO_OK &&
           raft_conf_voters(&s->conf) > 0 &&
           (m->snapshot.len == 0 || m->snapshot.data != NULL);
}

/* Everything a peer sends is checked before it can touch state (P6). */
static bool msg_fields_valid(const struct raft *r, const struct raft_msg *m)
{
    if (m->type < RAFT_MSG_APPEND || m->type > RAFT_MSG_TYPE_MAX_ ||
        m->to != r->cfg.id) {
        return false;
    }
    if (m->term > RAFT_TERM_MAX || m->log_term > RAFT_TERM_MAX ||
        m->hint_term > RAFT_TERM_MAX || m->index > RAFT_INDEX_MAX ||
        m->commit > RAFT_INDEX_MAX || m->hint_index > RAFT_INDEX_MAX) {
        return false;
    }
    if (m->n_entries > 0 &&
        (m->type != RAFT_MSG_APPEND || m->entries == NULL ||
         m->n_entries > r->cfg.max_msg_entries)) {
        return false;
    }
    if (m->quiesce &&
        (m->type != RAFT_MSG_HEARTBEAT || m->log_term > m->term)) {
        return false;
    }
    switch (m->type) {
    case RAFT_MSG_APPEND:
    case RAFT_MSG_VOTE:
    case RAFT_MSG_PREVOTE:
        if (m->log_term > m->term || (m->index == 0 && m->log_term != 0)) {
            return false;
        }
        return m->type != RAFT_MSG_APPEND || entries_valid(r, m);
    case RAFT_MSG_SNAPSHOT:
        return snapshot_valid(m);
    default:
        return true;
    }
}

bool msg_validate(struct raft *r, const struct raft_msg *m)
{
    if (m->group_id != r->cfg.group_id) {
        r->stats.dropped_group++;
        return false;
    }
    if (m->from == 0 || m->from == r->cfg.id) {
        r->stats.dropped_unknown++;
        return false;
    }
    if (!msg_fields_valid(r, m)) {
        r->stats.dropped_invalid++;
        return false;
    }
    return true;
}

/* --- Progress and flow control ------------------------------------------
 */

static void infl_reset(struct progress *pr)
{
    pr->infl_start = 0;
    pr->infl_count = 0;
    pr->infl_bytes_total = 0;
}

static bool infl_full(const struct raft *r, const struct progress *pr)
{
    return pr->infl_count >= r->cfg.max_inflight_msgs ||
           pr->infl_bytes_total >= r->cfg.max_inflight_bytes;
}

static void infl_add(const struct raft *r, struct progress *pr,
                     uint64_t index, uint64_t bytes)
{
    uint32_t cap = r->cfg.max_inflight_msgs;
    RAFT_ASSERT(r, pr->infl_count < cap);
    uint32_t slot = (pr->infl_start + pr->infl_count) % cap;
    pr->infl_index[slot] = index;
    pr->infl_bytes[slot] = bytes;
    pr->infl_count++;
    pr->infl_bytes_total += bytes;
}

/* Frees the in-flight appends acknowledged by an ack of `index`. */
static void infl_free_le(const struct raft *r, struct progress *pr,
                         uint64_t index)
{
    uint32_t cap = r->cfg.max_inflight_msgs;
    while (pr->infl_count > 0 && pr->infl_index[pr->infl_start] <= index) {
        pr->infl_bytes_total -= pr->infl_bytes[pr->infl_start];
        pr->infl_start = (pr->infl_start + 1) % cap;
        pr->infl_count--;
    }
}

static void infl_free_first(const struct raft *r, struct progress *pr)
{
    if (pr->infl_count > 0) {
        infl_free_le(r, pr, pr->infl_index[pr->infl_start]);
    }
}

static void pr_become_probe(struct progress *pr)
{
    pr->state = PR_PROBE;
    pr->next = pr->match + 1;
    pr->probe_sent = false;
    pr->pending_snapshot = 0;
    infl_reset(pr);
}

static void pr_become_replicate(struct progress *pr)
{
    pr->state = PR_REPLICATE;
    pr->next = pr->match + 1;
    infl_reset(pr);
}

static void pr_init(struct raft *r, struct progress *pr, uint32_t pos)
{
    const struct raft_member *m = &r->conf.members[pos];
    uint32_t cap = r->cfg.max_inflight_msgs;
    memset(pr, 0, sizeof(*pr));
    pr->id = m->id;
    pr->voter = m->role == RAFT_VOTER;
    pr->next = log_last_index(r) + 1;
    pr->recent_active = true;
    pr->infl_index = r->infl_pool + (size_t)pos * cap * 2;
    pr->infl_bytes = pr->infl_index + cap;
    if (m->id == r->cfg.id) {
        pr->match = log_stable_index(r);
    }
}

void progress_reset_all(struct raft *r)
{
    for (uint32_t i = 0; i < r->conf.n; i++) {
        pr_init(r, &r->prs[i], i);
    }
}

/* After a configuration change: members that stay keep their progress;
 * one whose position moved restarts probing (its in-flight ring belongs to
 * the slot), new members start probing at the end of the log. */
static void progress_rebuild(struct raft *r, const struct raft_conf *old)
{
    struct progress prev[RAFT_MEMBERS_MAX];
    memcpy(prev, r->prs, sizeof(prev));
    for (uint32_t i = 0; i < r->conf.n; i++) {
        struct progress *pr = &r->prs[i];
        pr_init(r, pr, i);
        for (uint32_t j = 0; j < old->n; j++) {
            if (old->members[j].id != pr->id) {
                continue;
            }
            uint64_t *ii = pr->infl_index, *ib = pr->infl_bytes;
            *pr = prev[j];
            pr->voter = r->conf.members[i].role == RAFT_VOTER;
            if (i != j) {
                pr->infl_index = ii;
                pr->infl_bytes = ib;
                if (pr->state == PR_REPLICATE) {
                    pr_become_probe(pr);
                }
                infl_reset(pr);
            }
        }
    }
}

static bool pr_paused(const struct raft *r, const struct progress *pr)
{
    switch (pr->state) {
    case PR_PROBE:
        return pr->probe_sent;
    case PR_REPLICATE:
        return infl_full(r, pr);
    default:
        return true;
    }
}

static struct progress *pr_of(struct raft *r, raft_id id)
{
    int pos = conf_pos(r, id);
    if (pos < 0 || id == r->cfg.id) {
        return NULL;
    }
    return &r->prs[pos];
}

/* --- Sending --------------------------------------------------------------
 */

void snapshot_free(struct raft_snapshot *s)
{
    if (s != NULL) {
        free(s->data);
        free(s);
    }
}

static int copy_snapshot(struct raft_snapshot *dst,
                         const struct raft_snapshot *src)
{
    *dst = *src;
    dst->data = NULL;
    if (src->len > 0) {
        dst->data = malloc(src->len);
        if (dst->data == NULL) {
            return KHO_ENOMEM;
        }
        memcpy(dst->data, src->data, src->len);
    }
    return KHO_OK;
}

/* §5.3 / Figure 5.3: the follower needs entries we compacted. */
static bool send_snapshot(struct raft *r, struct progress *pr)
{
    struct raft_snapshot snap;
    int rc = r->st.snapshot(r->st.ctx, &snap);
    if (rc != KHO_OK) {
        set_err(r, rc);
        return false;
    }
    if (snap.meta.index == 0) {
        set_err(r, KHO_ECORRUPT); /* log compacted without a snapshot */
        return false;
    }
    struct raft_msg *m = msg_new(r, RAFT_MSG_SNAPSHOT, pr->id);
    if (m == NULL) {
        return false;
    }
    if (copy_snapshot(&m->snapshot, &snap) != KHO_OK) {
        r->msgs_n--;
        set_err(r, KHO_ENOMEM);
        return false;
    }
    pr->state = PR_SNAPSHOT;
    pr->pending_snapshot = snap.meta.index;
    pr->snapshot_elapsed = 0;
    infl_reset(pr);
    return true;
}

static int copy_for_append(struct raft *r, struct progress *pr,
                           struct raft_entry **ents, uint32_t *n,
                           size_t *bytes)
{
    uint64_t last = log_last_index(r);
    *ents = NULL;
    *n = 0;
    *bytes = 0;
    if (pr->next > last) {
        return KHO_OK;
    }
    uint64_t want = last - pr->next + 1;
    size_t cap = want < r->cfg.max_msg_entries ? (size_t)want
                                               : r->cfg.max_msg_entries;
    *ents = calloc(cap, sizeof(**ents));
    if (*ents == NULL) {
        return KHO_ENOMEM;
    }
    size_t got = 0;
    int rc = log_copy(r, pr->next, last + 1, r->cfg.max_msg_bytes, *ents, cap,
                      &got, bytes);
    if (rc != KHO_OK) {
        free(*ents);
        *ents = NULL;
        return rc;
    }
    *n = (uint32_t)got;
    return KHO_OK;
}

/* Sends the next append to `pr` if flow control allows. With `empty`,
 * sends even without entries (a probe, or news of the commit index).
 * Returns true if a message was queued. */
static bool send_append(struct raft *r, struct progress *pr, bool empty)
{
    if (pr_paused(r, pr)) {
        return false;
    }
    uint64_t prev = pr->next - 1, prev_term = 0;
    int rc = log_term(r, prev, &prev_term);
    struct raft_entry *ents = NULL;
    uint32_t n = 0;
    size_t bytes = 0;
    if (rc == KHO_OK) {
        rc = copy_for_append(r, pr, &ents, &n, &bytes);
    }
    if (rc == KHO_ENOTFOUND) {
        return send_snapshot(r, pr);
    }
    if (rc != KHO_OK) {
        set_err(r, rc);
        return false;
    }
    if (n == 0 && !empty) {
        free(ents);
        return false;
    }
    struct raft_msg *m = msg_new(r, RAFT_MSG_APPEND, pr->id);
    if (m == NULL) {
        log_free_entries(ents, n);
        free(ents);
        return false;
    }
    m->index = prev;
    m->log_term = prev_term;
    m->commit = r->commit;
    m->entries = ents;
    m->n_entries = n;
    pr->commit_sent = r->commit;
    if (pr->state == PR_REPLICATE && n > 0) {
        pr->next = prev + n + 1;
        infl_add(r, pr, prev + n, bytes);
    } else if (pr->state == PR_PROBE) {
        pr->probe_sent = true;
    }
    return true;
}

/* Pipelines appends to `pr` until flow control or the log stops it. */
static void send_appends(struct raft *r, struct progress *pr, bool empty)
{
    uint32_t bound = r->cfg.max_inflight_msgs + 1;
    if (!send_append(r, pr, empty)) {
        return;
    }
    while (--bound > 0 && pr->state == PR_REPLICATE &&
           pr->next <= log_last_index(r) && send_append(r, pr, false)) {
    }
}

void bcast_append(struct raft *r)
{
    for (uint32_t i = 0; i < r->conf.n; i++) {
        struct progress *pr = &r->prs[i];
        if (pr->id != r->cfg.id) {
            send_appends(r, pr, pr->commit_sent < r->commit);
        }
    }
}

static void send_timeout_now(struct raft *r, raft_id to)
{
    struct raft_msg *m = msg_new(r, RAFT_MSG_TIMEOUT_NOW, to);
    (void)m;
    /* The transferee may win an election at once, ignoring stickiness:
     * no lease granted by rounds sent before now may be trusted. */
    r->lease_until = 0;
    r->lease_min_round = r->round + 1;
}

/* --- Commit ---------------------------------------------------------------
 */

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : (x > y ? -1 : 0);
}

/* The largest value that a quorum of voters has reached, for `what` of
 * each voter's progress; 0 without voters. Sorting at most
 * RAFT_MEMBERS_MAX values is cheaper than anything cleverer. */
uint64_t quorum_value(const struct raft *r, enum quorum_of what)
{
    uint64_t v[RAFT_MEMBERS_MAX];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->conf.n; i++) {
        const struct progress *pr = &r->prs[i];
        if (pr->voter) {
            v[n++] = what == QUORUM_MATCH ? pr->match : pr->read_ack;
        }
    }
    if (n == 0) {
        return 0;
    }
    qsort(v, n, sizeof(v[0]), cmp_desc);
    return v[n / 2];
}

/* Once a leader has committed its removal it steps down (§4.2.2); it hands
 * leadership to the most up-to-date voter first so the group does not
 * wait for an election timeout. */
static void maybe_step_down_removed(struct raft *r)
{
    if (r->role != RAFT_LEADER || r->commit < r->conf_index ||
        raft_conf_is_voter(&r->conf, r->cfg.id)) {
        return;
    }
    struct progress *best = NULL;
    for (uint32_t i = 0; i < r->conf.n; i++) {
        struct progress *pr = &r->prs[i];
        if (pr->voter && pr->id != r->cfg.id &&
            (best == NULL || pr->match > best->match)) {
            best = pr;
        }
    }
    if (best != NULL && best->match == log_last_index(r)) {
        send_timeout_now(r, best->id);
    }
    become_follower(r, r->term, 0);
}

static void commit_to(struct raft *r, uint64_t index)
{
    r->commit = index;
    if (!r->committed_in_term && log_term_or0(r, index) == r->term) {
        r->committed_in_term = true;
    }
    r->bcast_pending = true;
    maybe_step_down_removed(r);
}

/* Figure 2, rules for leaders: advance commit to the highest index stored
 * on a quorum of voters, but only by counting replicas of an entry of the
 * current term (§3.6.2, Figure 3.7): older entries commit with it. */
static bool maybe_commit(struct raft *r)
{
    uint64_t mci = quorum_value(r, QUORUM_MATCH);
    if (mci <= r->commit) {
        return false;
    }
    if (log_term_or0(r, mci) != r->term &&
        !PLANTED(RAFT_BUG_COMMIT_OLD_TERM)) {
        return false;
    }
    commit_to(r, mci);
    return true;
}

void leader_self_ack(struct raft *r)
{
    int pos = conf_pos(r, r->cfg.id);
    if (pos >= 0) {
        r->prs[pos].match = log_stable_index(r);
        r->prs[pos].next = r->prs[pos].match + 1;
    }
    maybe_commit(r);
}

/* --- Leader ---------------------------------------------------------------
 */

void apply_conf_entry(struct raft *r, const struct raft_entry *e)
{
    struct raft_conf c, old = r->conf;
    if (raft_conf_decode(e->data, e->len, &c) != KHO_OK) {
        set_err(r, KHO_ECORRUPT); /* validated on arrival; a core bug */
        return;
    }
    r->conf = c;
    r->conf_index = e->index;
    if (r->role == RAFT_LEADER) {
        progress_rebuild(r, &old);
        if (r->transferee != 0 && !raft_conf_is_voter(&c, r->transferee)) {
            r->transferee = 0;
        }
    }
}

int leader_append(struct raft *r, const struct raft_entry *e)
{
    int rc = log_append(r, e, 1);
    if (rc != KHO_OK) {
        set_err(r, rc);
        return rc;
    }
    r->uncommitted_bytes += e->len;
    if (e->type == RAFT_ENTRY_CONF) {
        apply_conf_entry(r, e);
    }
    r->bcast_pending = true; /* proposals between readies share appends */
    return KHO_OK;
}

static void handle_append_reject(struct raft *r, struct progress *pr,
                                 const struct raft_msg *m)
{
    uint64_t hint = m->hint_index, t = 0;
    if (m->hint_term > 0 &&
        log_find_conflict_by_term(r, m->hint_index, m->hint_term, &hint,
                                  &t) != KHO_OK) {
        hint = m->hint_index;
    }
    if (pr->state == PR_REPLICATE) {
        if (m->index <= pr->match) {
            r->stats.dropped_stale++;
            return;
        }
        pr_become_probe(pr);
    } else if (pr->state == PR_PROBE && pr->next - 1 == m->index) {
        if (m->index <= pr->match) {
            /* It refuses an entry it acknowledged: its disk lost the tail,
             * which Raft's fault model excludes. Count it and repair from
             * its hint rather than probing the same index forever. */
            r->stats.lost_tail++;
            pr->match = hint < m->index ? hint : m->index - 1;
        }
        uint64_t next = m->index < hint + 1 ? m->index : hint + 1;
        pr->next = next > pr->match + 1 ? next : pr->match + 1;
        pr->probe_sent = false;
    } else {
        r->stats.dropped_stale++;
        return;
    }
    send_appends(r, pr, true);
}

static void handle_append_resp(struct raft *r, struct progress *pr,
                               const struct raft_msg *m)
{
    pr_heard(r, pr);
    if (m->reject) {
        handle_append_reject(r, pr, m);
        return;
    }
    if (m->index > log_last_index(r)) {
        r->stats.dropped_invalid++; /* acknowledges what we never sent */
        return;
    }
    bool advanced = m->index > pr->match;
    if (advanced) {
        pr->match = m->index;
    }
    if (pr->next < m->index + 1) {
        pr->next = m->index + 1;
    }
    if (pr->state == PR_PROBE && advanced) {
        pr_become_replicate(pr);
    } else if (pr->state == PR_SNAPSHOT &&
               pr->match >= pr->pending_snapshot) {
        pr_become_replicate(pr);
    } else if (pr->state == PR_REPLICATE) {
        infl_free_le(r, pr, m->index);
    } else if (pr->state == PR_PROBE) {
        pr->probe_sent = false;
    }
    if (advanced) {
        maybe_commit(r);
    }
    if (r->role != RAFT_LEADER) {
        return; /* committed our own removal */
    }
    send_appends(r, pr, false);
    if (r->transferee == pr->id && pr->match == log_last_index(r)) {
        send_timeout_now(r, pr->id);
    }
}

static void handle_heartbeat_resp(struct raft *r, struct progress *pr,
                                  const struct raft_msg *m)
{
    pr_heard(r, pr);
    pr->probe_sent = false;
    /* Every round from hb_commit_round on carried hb_commit. */
    if (m->ctx >= pr->hb_commit_round && m->ctx <= r->round &&
        pr->hb_commit > pr->commit_acked) {
        pr->commit_acked = pr->hb_commit;
    }
    if (pr->state == PR_REPLICATE && infl_full(r, pr)) {
        /* Appends or their answers may have been lost, which would hold
         * the window shut for good. Letting one more append through makes
         * the follower answer: with a rejection if it has a gap. */
        infl_free_first(r, pr);
    }
    if (m->ctx > pr->read_ack && m->ctx <= r->round) {
        pr->read_ack = m->ctx;
        reads_on_ack(r);
    }
    if (pr->match < log_last_index(r)) {
        send_appends(r, pr, true);
    }
}

void step_leader(struct raft *r, const struct raft_msg *m)
{
    if (m->type != RAFT_MSG_APPEND_RESP &&
        m->type != RAFT_MSG_HEARTBEAT_RESP) {
        if (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT ||
            m->type == RAFT_MSG_SNAPSHOT) {
            r->stats.dropped_invalid++; /* a second leader in our term */
        } else {
            r->stats.dropped_stale++;
        }
        return;
    }
    struct progress *pr = pr_of(r, m->from);
    if (pr == NULL) {
        r->stats.dropped_unknown++;
        return;
    }
    if (m->type == RAFT_MSG_APPEND_RESP) {
        handle_append_resp(r, pr, m);
    } else {
        handle_heartbeat_resp(r, pr, m);
    }
}

static bool quorum_active(const struct raft *r)
{
    uint32_t voters = 0, active = 0;
    for (uint32_t i = 0; i < r->conf.n; i++) {
        const struct progress *pr = &r->prs[i];
        if (!pr->voter) {
            continue;
        }
        voters++;
        active += pr->id == r->cfg.id || pr->recent_active;
    }
    return voters > 0 && active >= voters / 2 + 1;
}

void tick_leader(struct raft *r)
{
    r->heartbeat_elapsed++;
    r->election_elapsed++;
    if (r->election_elapsed >= r->cfg.election_ticks) {
        r->election_elapsed = 0;
        /* §6.2 check-quorum: a leader that cannot reach a quorum within an
         * election timeout steps down, so clients look elsewhere. */
        if (r->cfg.check_quorum && !quorum_active(r)) {
            become_follower(r, r->term, 0);
            return;
        }
        for (uint32_t i = 0; i < r->conf.n; i++) {
            r->prs[i].recent_active = r->prs[i].id == r->cfg.id;
        }
        r->transferee = 0; /* §3.10: abort a transfer that took too long */
    }
    for (uint32_t i = 0; i < r->conf.n; i++) {
        struct progress *pr = &r->prs[i];
        if (pr->state == PR_SNAPSHOT &&
            ++pr->snapshot_elapsed >= r->cfg.snapshot_timeout_ticks) {
            pr_become_probe(pr); /* the snapshot or its answer was lost */
        }
    }
    if (leader_maybe_quiesce(r)) {
        return; /* the quiesce round replaces this tick's heartbeat */
    }
    if (r->heartbeat_elapsed >= r->cfg.heartbeat_ticks) {
        r->heartbeat_elapsed = 0;
        heartbeat_round(r, false);
    }
}

/* --- Follower -------------------------------------------------------------
 */

static void respond_append(struct raft *r, const struct raft_msg *m,
                           uint64_t index)
{
    struct raft_msg *out = msg_new(r, RAFT_MSG_APPEND_RESP, m->from);
    if (out != NULL) {
        out->index = index;
    }
}

static void follower_commit(struct raft *r, uint64_t commit)
{
    if (commit > r->commit) {
        r->commit = commit;
    }
}

/* Index of the first entry of `m` that is not already in our log with the
 * same term, or m->n_entries if all match. */
static uint32_t first_conflict(struct raft *r, const struct raft_msg *m)
{
    uint64_t last = log_last_index(r);
    for (uint32_t i = 0; i < m->n_entries; i++) {
        const struct raft_entry *e = &m->entries[i];
        if (e->index > last || log_term_or0(r, e->index) != e->term) {
            return i;
        }
    }
    return m->n_entries;
}

/* Appends m->entries from position k on, cutting a conflicting suffix. */
static bool append_from(struct raft *r, const struct raft_msg *m, uint32_t k)
{
    uint64_t at = m->entries[k].index;
    if (at <= r->commit) {
        /* Figure 2 guarantees committed entries never conflict; a peer
         * that says otherwise is broken or malicious. */
        r->stats.dropped_conflict++;
        return false;
    }
    if (r->u_n + (m->n_entries - k) > RAFT_UNSTABLE_ENTRIES_MAX) {
        r->stats.dropped_overflow++; /* the leader will send it again */
        return false;
    }
    bool conf_cut = r->conf_index >= at;
    int rc = log_append(r, &m->entries[k], m->n_entries - k);
    if (rc == KHO_OK && conf_cut) {
        rc = log_find_conf(r, at - 1, &r->conf, &r->conf_index);
    }
    if (rc != KHO_OK) {
        set_err(r, rc);
        return false;
    }
    for (uint32_t i = k; i < m->n_entries; i++) {
        if (m->entries[i].type == RAFT_ENTRY_CONF) {
            apply_conf_entry(r, &m->entries[i]);
        }
    }
    return true;
}

/* Figure 2, AppendEntries RPC, receiver implementation. */
void handle_append(struct raft *r, const struct raft_msg *m)
{
    if (m->index < r->commit) {
        respond_append(r, m, r->commit);
        return;
    }
    uint64_t t = 0;
    int rc = log_term(r, m->index, &t);
    if (rc != KHO_OK && rc != KHO_ENOTFOUND) {
        set_err(r, rc);
        return;
    }
    if (rc != KHO_OK || t != m->log_term) {
        uint64_t last = log_last_index(r);
        uint64_t hint = m->index < last ? m->index : last, ht = 0;
        if (log_find_conflict_by_term(r, hint, m->log_term, &hint, &ht) !=
            KHO_OK) {
            ht = 0;
        }
        struct raft_msg *out = msg_new(r, RAFT_MSG_APPEND_RESP, m->from);
        if (out != NULL) {
            out->reject = true;
            out->index = m->index;
            out->hint_index = hint;
            out->hint_term = ht;
        }
        return;
    }
    uint32_t k = first_conflict(r, m);
    if (k < m->n_entries) {
        if (!append_from(r, m, k)) {
            return;
        }
    } else if (PLANTED(RAFT_BUG_TRUNCATE_ON_MATCH) && m->n_entries > 0 &&
               m->index + m->n_entries < log_last_index(r)) {
        /* Planted bug 4: a stale or duplicated append cuts our tail. */
        append_from(r, m, m->n_entries - 1);
    }
    uint64_t last_new = m->index + m->n_entries;
    follower_commit(r, m->commit < last_new ? m->commit : last_new);
    respond_append(r, m, last_new);
}

void handle_heartbeat(struct raft *r, const struct raft_msg *m)
{
    /* The leader sends min(match, commit); capping at our last index keeps
     * a follower that lost its tail from committing what it lacks. */
    uint64_t last = log_last_index(r);
    follower_commit(r, m->commit < last ? m->commit : last);
    if (m->quiesce && follower_quiesce(r, m)) {
        return; /* quiet: an answer would only wake the leader again */
    }
    struct raft_msg *out = msg_new(r, RAFT_MSG_HEARTBEAT_RESP, m->from);
    if (out != NULL) {
        out->ctx = m->ctx;
    }
}

/* §5.3 / Figure 5.3, InstallSnapshot receiver. A snapshot whose last entry
 * we already hold keeps the log after it; otherwise the log is replaced. */
void handle_snapshot(struct raft *r, const struct raft_msg *m)
{
    const struct raft_snapshot_meta *s = &m->snapshot.meta;
    if (s->index <= r->commit) {
        respond_append(r, m, r->commit);
        return;
    }
    if (log_term_or0(r, s->index) == s->term) {
        follower_commit(r, s->index);
        respond_append(r, m, r->commit);
        return;
    }
    struct raft_snapshot *snap = malloc(sizeof(*snap));
    if (snap == NULL || copy_snapshot(snap, &m->snapshot) != KHO_OK) {
        free(snap);
        set_err(r, KHO_ENOMEM);
        return;
    }
    snapshot_free(r->u_snap);
    r->u_snap = snap;
    log_free_entries(r->u, r->u_n);
    r->u_n = 0;
    r->u_offset = s->index + 1;
    r->commit = s->index;
    r->conf = s->conf;
    r->conf_index = s->index;
    respond_append(r, m, s->index);
}

/* --- Proposals ------------------------------------------------------------
 */

static int check_proposer(struct raft *r)
{
    RAFT_ASSERT(r, !r->in_ready);
    if (r->err != KHO_OK) {
        return r->err;
    }
    if (r->role != RAFT_LEADER) {
        return KHO_ENOTLEADER;
    }
    if (r->transferee != 0 || r->u_n >= RAFT_UNSTABLE_ENTRIES_MAX) {
        return KHO_EBUSY;
    }
    return KHO_OK;
}

static int append_proposal(struct raft *r, uint32_t type, const uint8_t *data,
                           size_t len, uint64_t *index, uint64_t *term)
{
    leader_wake(r, false); /* the appends wake the followers */
    struct raft_entry e = {.term = r->term,
                           .index = log_last_index(r) + 1,
                           .type = type,
                           .len = (uint32_t)len,
                           .data = (uint8_t *)data};
    int rc = leader_append(r, &e);
    if (rc == KHO_OK) {
        if (index != NULL) {
            *index = e.index;
        }
        if (term != NULL) {
            *term = e.term;
        }
    }
    return rc;
}

int raft_propose(struct raft *r, const uint8_t *data, size_t len,
                 uint64_t *index, uint64_t *term)
{
    int rc = check_proposer(r);
    if (rc != KHO_OK) {
        return rc;
    }
    if (len > r->cfg.max_entry_bytes || (len > 0 && data == NULL)) {
        return len > r->cfg.max_entry_bytes ? KHO_ETOOLARGE : KHO_EINVAL;
    }
    /* Bound the memory a slow quorum lets a leader accumulate; a lone
     * proposal is always admitted so a large entry cannot wedge. */
    if (r->uncommitted_bytes > 0 &&
        r->uncommitted_bytes + len > r->cfg.max_uncommitted_bytes) {
        return KHO_EBUSY;
    }
    return append_proposal(r, RAFT_ENTRY_NORMAL, data, len, index, term);
}

int raft_propose_conf(struct raft *r, enum raft_conf_op op, raft_id id,
                      uint64_t *index, uint64_t *term)
{
    int rc = check_proposer(r);
    if (rc != KHO_OK) {
        return rc;
    }
    /* §4.1: one change at a time, and (the fix in §4.1's errata) only
     * after the leader has committed an entry of its own term. */
    if (r->conf_index > r->commit || !r->committed_in_term) {
        return KHO_EBUSY;
    }
    struct raft_conf c = r->conf;
    rc = raft_conf_apply_op(&c, op, id);
    if (rc != KHO_OK) {
        return rc;
    }
    uint8_t buf[RAFT_CONF_ENCODED_MAX];
    size_t len = raft_conf_encode(&c, buf, sizeof(buf));
    RAFT_ASSERT(r, len > 0);
    return append_proposal(r, RAFT_ENTRY_CONF, buf, len, index, term);
}

int raft_transfer_leader(struct raft *r, raft_id to)
{
    RAFT_ASSERT(r, !r->in_ready);
    if (r->err != KHO_OK) {
        return r->err;
    }
    if (r->role != RAFT_LEADER) {
        return KHO_ENOTLEADER;
    }
    struct progress *pr = pr_of(r, to);
    if (pr == NULL || !pr->voter) {
        return KHO_EINVAL;
    }
    if (r->transferee == to) {
        return KHO_OK;
    }
    leader_wake(r, true);
    r->transferee = to;
    r->election_elapsed = 0; /* the transfer times out after one timeout */
    if (pr->match == log_last_index(r)) {
        send_timeout_now(r, to);
    } else {
        send_appends(r, pr, true);
    }
    return KHO_OK;
}

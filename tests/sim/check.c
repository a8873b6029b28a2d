/*
 * check.c - the safety invariants, checked at the moment of each event.
 *
 *   election-safety       at most one leader per term
 *   log-matching          entries with the same index and term have the same
 *                         prefix (a prefix hash per durable entry, and one
 *                         global (index, term) -> prefix hash map)
 *   leader-completeness   a leader of term T holds every entry committed in
 *                         a term before T
 *   state-machine-safety  every node applies the same entry at each index
 *                         (rolling hashes against one canonical history);
 *                         snapshots match that history
 *   commit-durable        the commit index never passes the durable log
 *   term-monotonic        terms never go down, in memory or on disk
 *   persist-before-send   a message never promises state that is not durable
 *                         (its term, a granted vote)
 *   commit-safety         no node that could still win an election (its
 *                         durable log at least as up to date as those of a
 *                         majority of its configuration's voters) lacks a
 *                         committed entry; this catches an unsafe commit
 *                         (Figure 8) the moment it happens, before a
 *                         later leader overwrites it
 *   linearizability       a read returns a state at least as new as every
 *                         write acknowledged and read completed before it
 *                         started
 *
 * The canonical history is the committed log as far as anyone has seen it:
 * extended when a node applies the next index or reports a commit index
 * past it, and compared whenever a node applies, commits or installs a
 * snapshot at an index it already covers.
 */
#include "sim.h"

#include <stdlib.h>
#include <string.h>

uint64_t *sim_grow_u64(uint64_t *a, size_t *cap, size_t need)
{
    if (need <= *cap) {
        return a;
    }
    size_t c = *cap ? *cap : 1024;
    while (c < need) {
        c *= 2;
    }
    uint64_t *p = realloc(a, c * sizeof(*p));
    if (p == NULL) {
        abort();
    }
    memset(p + *cap, 0, (c - *cap) * sizeof(*p));
    *cap = c;
    return p;
}

void sim_check_init(struct sim_check *c)
{
    memset(c, 0, sizeof(*c));
}

void sim_check_free(struct sim_check *c)
{
    free(c->term_leader);
    free(c->term_commit);
    free(c->canon_hash);
    free(c->canon_term);
    free(c->pmap);
    memset(c, 0, sizeof(*c));
}

static unsigned long long ull(uint64_t v)
{
    return (unsigned long long)v;
}

/* --- Per-term records --------------------------------------------------- */

static bool term_room(struct sim *s, uint64_t term)
{
    struct sim_check *c = &s->chk;
    if (term >= SIM_TERM_LIMIT) {
        sim_fail(s, "sim-bound", "term %llu beyond what the checker tracks",
                 ull(term));
        return false;
    }
    if (term >= c->term_cap) {
        size_t cap = c->term_cap;
        c->term_commit = sim_grow_u64(c->term_commit, &cap, term + 1);
        cap = c->term_cap;
        c->term_leader = sim_grow_u64(c->term_leader, &cap, term + 1);
        c->term_cap = cap;
    }
    if (term > c->max_term) {
        c->max_term = term;
    }
    return true;
}

bool sim_check_status(struct sim *s, struct sim_node *n,
                      const struct raft_status *st)
{
    if (st->term < n->term) {
        sim_fail(s, "term-monotonic", "n%llu term went from %llu to %llu",
                 ull(n->id), ull(n->term), ull(st->term));
        return false;
    }
    if (st->role != n->role || st->term != n->term) {
        SIM_TRACE(s, "n%llu %s term %llu (leader n%llu)", ull(n->id),
                  raft_role_name(st->role), ull(st->term), ull(st->leader));
    }
    if (st->quiet != n->quiet) {
        SIM_TRACE(s, "n%llu %s (%s, leader n%llu)", ull(n->id),
                  st->quiet ? "QUIET" : "awake", raft_role_name(st->role),
                  ull(st->leader));
        s->st.quiesces += st->quiet;
        n->quiet = st->quiet;
    }
    n->term = st->term;
    n->role = st->role;
    if (st->role != RAFT_LEADER || !term_room(s, st->term)) {
        return !sim_failed(s);
    }
    raft_id *who = &s->chk.term_leader[st->term];
    if (*who == 0) {
        *who = n->id;
        s->st.elections++;
    } else if (*who != n->id) {
        sim_fail(s, "election-safety", "n%llu and n%llu both lead term %llu",
                 ull(*who), ull(n->id), ull(st->term));
        return false;
    }
    return true;
}

/* --- The (index, term) -> prefix hash map -------------------------------- */

static size_t pmap_slot(const struct sim_check *c, uint64_t index,
                        uint64_t term)
{
    uint64_t h = index * UINT64_C(0x9e3779b97f4a7c15) ^
                 term * UINT64_C(0xc2b2ae3d27d4eb4f);
    h ^= h >> 29;
    size_t i = (size_t)h & (c->pmap_cap - 1);
    while (c->pmap[i].index != 0 &&
           (c->pmap[i].index != index || c->pmap[i].term != term)) {
        i = (i + 1) & (c->pmap_cap - 1);
    }
    return i;
}

static void pmap_grow(struct sim_check *c)
{
    struct sim_pmap_slot *old = c->pmap;
    size_t old_cap = c->pmap_cap;
    c->pmap_cap = old_cap ? old_cap * 2 : 4096;
    c->pmap = calloc(c->pmap_cap, sizeof(*c->pmap));
    if (c->pmap == NULL) {
        abort();
    }
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].index != 0) {
            c->pmap[pmap_slot(c, old[i].index, old[i].term)] = old[i];
        }
    }
    free(old);
}

/* Records the prefix hash of (index, term), or compares it with the one
 * recorded. False on a mismatch: two logs share an entry but not the
 * prefix before it. */
static bool pmap_check(struct sim *s, uint64_t index, uint64_t term,
                       uint64_t hash)
{
    struct sim_check *c = &s->chk;
    if (2 * (c->pmap_n + 1) > c->pmap_cap) {
        pmap_grow(c);
    }
    size_t i = pmap_slot(c, index, term);
    if (c->pmap[i].index == 0) {
        c->pmap[i] = (struct sim_pmap_slot){index, term, hash};
        c->pmap_n++;
        return true;
    }
    return c->pmap[i].hash == hash;
}

/* --- Node prefix hashes ----------------------------------------------------
 */

static bool phash_set(struct sim *s, struct sim_node *n, uint64_t index,
                      uint64_t hash)
{
    if (index >= SIM_INDEX_LIMIT) {
        sim_fail(s, "sim-bound", "index %llu beyond what the checker tracks",
                 ull(index));
        return false;
    }
    n->phash = sim_grow_u64(n->phash, &n->phash_cap, index + 1);
    n->phash[index] = hash;
    return true;
}

void sim_check_persisted(struct sim *s, struct sim_node *n,
                         uint64_t first_index)
{
    const struct raft_ready *rd = &n->rd;
    for (size_t i = 0; i < rd->n_entries; i++) {
        const struct raft_entry *e = &rd->entries[i];
        uint64_t h = sim_entry_hash(n->phash[e->index - 1], e);
        if (!phash_set(s, n, e->index, h)) {
            return;
        }
        if (!pmap_check(s, e->index, e->term, h)) {
            sim_fail(s, "log-matching",
                     "n%llu stored %llu/%llu with a prefix no other log with "
                     "that entry has",
                     ull(n->id), ull(e->index), ull(e->term));
            return;
        }
    }
    bool conf_changed =
        rd->snapshot != NULL ||
        (rd->n_entries > 0 && first_index <= n->disk_conf_index);
    for (size_t i = 0; i < rd->n_entries && !conf_changed; i++) {
        conf_changed = rd->entries[i].type == RAFT_ENTRY_CONF;
    }
    if (conf_changed) {
        sim_check_disk_conf(s, n);
    }
    s->chk.dirty = true;
    const struct raft_hard_state *hs = &n->disk.hs;
    if (hs->term < n->disk_term) {
        sim_fail(s, "term-monotonic",
                 "n%llu durable term went from %llu to "
                 "%llu",
                 ull(n->id), ull(n->disk_term), ull(hs->term));
        return;
    }
    n->disk_term = hs->term;
    if (hs->commit > memstore_last_index(&n->disk)) {
        sim_fail(s, "commit-durable",
                 "n%llu durable commit %llu beyond its durable log %llu",
                 ull(n->id), ull(hs->commit),
                 ull(memstore_last_index(&n->disk)));
    }
}

/* --- The canonical committed history ---------------------------------------
 */

static bool canon_push(struct sim *s, uint64_t index, uint64_t term,
                       uint64_t hash)
{
    struct sim_check *c = &s->chk;
    if (index >= SIM_INDEX_LIMIT) {
        sim_fail(s, "sim-bound", "index %llu beyond what the checker tracks",
                 ull(index));
        return false;
    }
    if (index > 1 && term < c->canon_term[index - 1]) {
        sim_fail(s, "log-matching",
                 "committed entry %llu has term %llu below the term %llu of "
                 "the entry before it",
                 ull(index), ull(term), ull(c->canon_term[index - 1]));
        return false;
    }
    size_t cap = c->canon_cap;
    c->canon_hash = sim_grow_u64(c->canon_hash, &cap, index + 1);
    cap = c->canon_cap;
    c->canon_term = sim_grow_u64(c->canon_term, &cap, index + 1);
    c->canon_cap = cap;
    c->canon_hash[index] = hash;
    c->canon_term[index] = term;
    c->canon_n = index;
    c->dirty = true;
    return true;
}

bool sim_check_canon_term(const struct sim *s, uint64_t index, uint64_t *term)
{
    if (index == 0 || index > s->chk.canon_n) {
        return false;
    }
    *term = s->chk.canon_term[index];
    return true;
}

void sim_check_applied(struct sim *s, struct sim_node *n,
                       const struct raft_entry *e)
{
    struct sim_check *c = &s->chk;
    uint64_t i = e->index;
    if (i > memstore_last_index(&n->disk) ||
        (i > n->disk.snap.meta.index && n->phash[i] != n->sm.hash)) {
        sim_fail(s, "apply-durable",
                 "n%llu applies %llu/%llu which is not the entry in its "
                 "durable log (last %llu)",
                 ull(n->id), ull(i), ull(e->term),
                 ull(memstore_last_index(&n->disk)));
        return;
    }
    if (i <= c->canon_n) {
        if (c->canon_hash[i] != n->sm.hash) {
            sim_fail(s, "state-machine-safety",
                     "n%llu applies %llu/%llu but %llu/%llu was committed "
                     "there (or the histories before it differ)",
                     ull(n->id), ull(i), ull(e->term), ull(i),
                     ull(c->canon_term[i]));
        }
        return;
    }
    if (i != c->canon_n + 1) {
        sim_fail(s, "sim-internal",
                 "n%llu applies %llu, history known to "
                 "%llu only",
                 ull(n->id), ull(i), ull(c->canon_n));
        return;
    }
    canon_push(s, i, e->term, n->sm.hash);
}

void sim_check_snapshot(struct sim *s, struct sim_node *n,
                        const struct sim_sm *payload)
{
    struct sim_check *c = &s->chk;
    uint64_t i = payload->applied;
    if (i > c->canon_n || c->canon_hash[i] != payload->hash ||
        c->canon_term[i] != payload->applied_term) {
        sim_fail(s, "state-machine-safety",
                 "n%llu installs a snapshot at %llu/%llu that is not the "
                 "committed history (known to %llu)",
                 ull(n->id), ull(i), ull(payload->applied_term),
                 ull(c->canon_n));
        return;
    }
    if (!pmap_check(s, i, payload->applied_term, payload->hash)) {
        sim_fail(s, "log-matching",
                 "n%llu snapshot %llu/%llu differs from "
                 "the log entry there",
                 ull(n->id), ull(i), ull(payload->applied_term));
        return;
    }
    phash_set(s, n, i, payload->hash);
}

/* A node at rest reports commit index `commit`: every entry up to it is
 * committed. Extend the canonical history from its log, or compare. */
static void observe_commit(struct sim *s, struct sim_node *n, uint64_t commit)
{
    struct sim_check *c = &s->chk;
    uint64_t snap = n->disk.snap.meta.index;
    while (c->canon_n < commit && c->canon_n >= snap) {
        uint64_t i = c->canon_n + 1;
        const struct raft_entry *e = memstore_entry(&n->disk, i);
        if (e == NULL || !canon_push(s, i, e->term, n->phash[i])) {
            return;
        }
    }
    if (commit > snap && commit <= c->canon_n &&
        n->phash[commit] != c->canon_hash[commit]) {
        sim_fail(s, "state-machine-safety",
                 "n%llu has committed %llu/%llu but another entry (term "
                 "%llu) or prefix was committed there",
                 ull(n->id), ull(commit),
                 ull(memstore_entry(&n->disk, commit)->term),
                 ull(c->canon_term[commit]));
    }
}

/* Raft §5.4.1: a leader of term T holds every entry committed in a term
 * before T. Entries committed in T or later by other leaders need not be
 * in it (a stale leader of T may win its election late), so the bound is
 * the highest commit index any node reported while in a term below T. */
static void check_leader_completeness(struct sim *s, struct sim_node *n,
                                      uint64_t term)
{
    struct sim_check *c = &s->chk;
    uint64_t need = 0;
    for (uint64_t t = 0; t < term && t < c->term_cap; t++) {
        if (c->term_commit[t] > need) {
            need = c->term_commit[t];
        }
    }
    if (need > c->canon_n) {
        need = c->canon_n;
    }
    if (need <= n->disk.snap.meta.index) {
        return; /* its snapshot came from committed state */
    }
    uint64_t last = memstore_last_index(&n->disk);
    if (need > last || n->phash[need] != c->canon_hash[need]) {
        sim_fail(s, "leader-completeness",
                 "n%llu leads term %llu without committed entry %llu/%llu "
                 "(its log ends at %llu)",
                 ull(n->id), ull(term), ull(need), ull(c->canon_term[need]),
                 ull(last));
    }
}

void sim_check_at_rest(struct sim *s, struct sim_node *n)
{
    struct raft_status st;
    raft_status(n->r, &st);
    if (!sim_check_status(s, n, &st)) {
        return;
    }
    uint64_t last = memstore_last_index(&n->disk);
    if (st.applied != n->sm.applied) {
        sim_fail(s, "applied-mismatch",
                 "n%llu core says applied %llu, state machine %llu", ull(n->id),
                 ull(st.applied), ull(n->sm.applied));
        return;
    }
    if (st.stable_index != last) {
        sim_fail(s, "storage-view",
                 "n%llu at rest: core's stable index %llu, durable log ends "
                 "at %llu",
                 ull(n->id), ull(st.stable_index), ull(last));
        return;
    }
    if (st.commit > last || st.commit > st.stable_index) {
        sim_fail(s, "commit-durable",
                 "n%llu (%s) commit %llu beyond its durable log %llu",
                 ull(n->id), raft_role_name(st.role), ull(st.commit),
                 ull(last));
        return;
    }
    if (st.commit < n->commit) {
        sim_fail(s, "commit-monotonic", "n%llu commit went from %llu to %llu",
                 ull(n->id), ull(n->commit), ull(st.commit));
        return;
    }
    if (st.commit != n->commit) {
        SIM_TRACE(s, "n%llu commit %llu", ull(n->id), ull(st.commit));
    }
    n->commit = st.commit;
    n->conf = st.conf;
    if (!term_room(s, st.term)) {
        return;
    }
    if (st.commit > s->chk.term_commit[st.term]) {
        s->chk.term_commit[st.term] = st.commit;
    }
    observe_commit(s, n, st.commit);
    if (st.role == RAFT_LEADER && n->leader_checked_term != st.term &&
        !sim_failed(s)) {
        n->leader_checked_term = st.term;
        check_leader_completeness(s, n, st.term);
    }
    sim_check_electable(s);
}

/* Raft §5.1 and Figure 2: persist currentTerm and votedFor before answering
 * an RPC; and an append acknowledgement (same term) must be durable. */
void sim_check_sent(struct sim *s, struct sim_node *n, const struct raft_msg *m)
{
    const struct raft_hard_state *hs = &n->disk.hs;
    if (m->type == RAFT_MSG_PREVOTE || m->type == RAFT_MSG_PREVOTE_RESP) {
        return; /* pre-vote terms are hypothetical by design */
    }
    if (m->term > hs->term) {
        sim_fail(s, "persist-before-send",
                 "n%llu sends %s in term %llu, durable term is %llu",
                 ull(n->id), raft_msg_type_name(m->type), ull(m->term),
                 ull(hs->term));
        return;
    }
    if (m->type == RAFT_MSG_VOTE_RESP && !m->reject && hs->term == m->term &&
        hs->vote != m->to) {
        sim_fail(s, "persist-before-send",
                 "n%llu grants its term-%llu vote to n%llu, durable vote is "
                 "n%llu",
                 ull(n->id), ull(m->term), ull(m->to), ull(hs->vote));
        return;
    }
    if (m->type == RAFT_MSG_APPEND_RESP && !m->reject && hs->term == m->term &&
        m->index > memstore_last_index(&n->disk)) {
        sim_fail(s, "persist-before-send",
                 "n%llu acknowledges index %llu in term %llu, durable log "
                 "ends at %llu",
                 ull(n->id), ull(m->index), ull(m->term),
                 ull(memstore_last_index(&n->disk)));
    }
}

void sim_check_read(struct sim *s, uint32_t client, uint64_t floor_inv,
                    uint64_t applied)
{
    if (applied < floor_inv) {
        sim_fail(s, "linearizability",
                 "c%u read served at applied index %llu, but index %llu was "
                 "acknowledged or read before the read started",
                 client, ull(applied), ull(floor_inv));
        return;
    }
    if (applied > s->chk.floor) {
        s->chk.floor = applied;
    }
}

/* --- Commit safety ------------------------------------------------------ */

/* Recomputes the latest configuration in n's durable log: the last CONF
 * entry, or the snapshot's configuration. O(log length); runs only when a
 * batch carried a configuration, a snapshot, or cut the log below the
 * last one. */
void sim_check_disk_conf(struct sim *s, struct sim_node *n)
{
    const struct memstore *d = &n->disk;
    for (uint64_t i = memstore_last_index(d); i > d->snap.meta.index; i--) {
        const struct raft_entry *e = memstore_entry(d, i);
        if (e->type != RAFT_ENTRY_CONF) {
            continue;
        }
        if (raft_conf_decode(e->data, e->len, &n->disk_conf) != KHO_OK) {
            sim_fail(s, "corrupt-entry",
                     "n%llu stores a bad configuration "
                     "entry at %llu",
                     ull(n->id), ull(i));
        }
        n->disk_conf_index = i;
        return;
    }
    n->disk_conf = d->snap.meta.conf;
    n->disk_conf_index = d->snap.meta.index;
}

static uint64_t disk_last_term(const struct memstore *d)
{
    const struct raft_entry *e = memstore_entry(d, memstore_last_index(d));
    return e != NULL ? e->term : d->snap.meta.term;
}

/* Raft §5.4.1's election restriction: v votes for x only if x's log is at
 * least as up to date. */
static bool log_le(const struct memstore *v, const struct memstore *x)
{
    uint64_t vt = disk_last_term(v), xt = disk_last_term(x);
    return vt < xt ||
           (vt == xt && memstore_last_index(v) <= memstore_last_index(x));
}

static bool exists(const struct sim_node *n)
{
    return n->state == SIM_NODE_UP || n->state == SIM_NODE_DOWN;
}

/* Could x win an election if every node crashed and restarted from its
 * disk now? It needs the votes of a majority of its configuration's
 * voters, each of whose durable log is no more up to date than x's. */
static bool electable(struct sim *s, const struct sim_node *x)
{
    if (!exists(x) || !raft_conf_is_voter(&x->disk_conf, x->id)) {
        return false;
    }
    uint32_t voters = 0, grant = 0;
    for (uint32_t i = 0; i < x->disk_conf.n; i++) {
        const struct raft_member *m = &x->disk_conf.members[i];
        if (m->role != RAFT_VOTER) {
            continue;
        }
        voters++;
        const struct sim_node *v = sim_node_by_id(s, m->id);
        grant += v != NULL && exists(v) && log_le(&v->disk, &x->disk);
    }
    return grant > voters / 2;
}

static bool holds_committed(const struct sim *s, const struct sim_node *x)
{
    const struct sim_check *c = &s->chk;
    uint64_t need = c->canon_n;
    if (need <= x->disk.snap.meta.index) {
        return true;
    }
    return need <= memstore_last_index(&x->disk) &&
           x->phash[need] == c->canon_hash[need];
}

/* The state-based form of leader completeness: checked whenever a durable
 * log or the committed history changed. An unsafe commit shows up here at
 * once, while the plain leader-completeness check needs the lacking node
 * to actually win. */
void sim_check_electable(struct sim *s)
{
    if (!s->chk.dirty || sim_failed(s)) {
        return;
    }
    s->chk.dirty = false;
    for (uint32_t i = 0; i < s->n_slots; i++) {
        const struct sim_node *x = &s->nodes[i];
        if (holds_committed(s, x) || !electable(s, x)) {
            continue;
        }
        uint64_t need = s->chk.canon_n;
        sim_fail(s, "commit-safety",
                 "%llu/%llu is committed, but n%llu (log ends %llu/%llu) "
                 "lacks it and could still win an election",
                 ull(need), ull(s->chk.canon_term[need]), ull(x->id),
                 ull(memstore_last_index(&x->disk)),
                 ull(disk_last_term(&x->disk)));
        return;
    }
}

/* net.c - deterministic in-memory cluster for raft tests; see net.h. */
#include "net.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SNAP_PAYLOAD_LEN 16u
#define FNV_OFFSET UINT64_C(14695981039346656037)
#define FNV_PRIME UINT64_C(1099511628211)

typedef unsigned long long ull;

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) {
        abort();
    }
    return q;
}

/* --- Text buffer --------------------------------------------------------- */

static void buf_vprintf(struct net_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int need = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (need < 0) {
        return;
    }
    if (b->len + (size_t)need + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + (size_t)need + 1) {
            cap *= 2;
        }
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    b->len += (size_t)need;
}

void net_buf_printf(struct net_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    buf_vprintf(b, fmt, ap);
    va_end(ap);
}

void net_buf_reset(struct net_buf *b)
{
    b->len = 0;
    if (b->p != NULL) {
        b->p[0] = '\0';
    }
}

void net_buf_free(struct net_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

void net_violation(struct net *n, const char *fmt, ...)
{
    va_list ap;
    net_buf_printf(&n->out, "VIOLATION: ");
    va_start(ap, fmt);
    buf_vprintf(&n->out, fmt, ap);
    va_end(ap);
    net_buf_printf(&n->out, "\n");
    n->violations++;
}

static void net_error(struct net *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void net_error(struct net *n, const char *fmt, ...)
{
    va_list ap;
    net_buf_printf(&n->out, "ERROR: ");
    va_start(ap, fmt);
    buf_vprintf(&n->out, fmt, ap);
    va_end(ap);
    net_buf_printf(&n->out, "\n");
    n->errors++;
}

/* --- Formatting ---------------------------------------------------------- */

const char *net_role_name(enum raft_role role)
{
    switch (role) {
    case RAFT_FOLLOWER:
        return "FOLLOWER";
    case RAFT_PRECANDIDATE:
        return "PRECANDIDATE";
    case RAFT_CANDIDATE:
        return "CANDIDATE";
    case RAFT_LEADER:
        return "LEADER";
    }
    return "ROLE?";
}

const char *net_msg_type_name(uint32_t type)
{
    static const char *const names[] = {
        [RAFT_MSG_APPEND] = "APPEND",
        [RAFT_MSG_APPEND_RESP] = "APPEND_RESP",
        [RAFT_MSG_VOTE] = "VOTE",
        [RAFT_MSG_VOTE_RESP] = "VOTE_RESP",
        [RAFT_MSG_PREVOTE] = "PREVOTE",
        [RAFT_MSG_PREVOTE_RESP] = "PREVOTE_RESP",
        [RAFT_MSG_HEARTBEAT] = "HEARTBEAT",
        [RAFT_MSG_HEARTBEAT_RESP] = "HEARTBEAT_RESP",
        [RAFT_MSG_SNAPSHOT] = "SNAPSHOT",
        [RAFT_MSG_TIMEOUT_NOW] = "TIMEOUT_NOW",
    };
    if (type == 0 || type > RAFT_MSG_TYPE_MAX_) {
        return "TYPE?";
    }
    return names[type];
}

static void format_ids(struct net_buf *b, const struct raft_conf *c,
                       uint32_t role)
{
    /* Sorted by id so the trace does not depend on member order. */
    raft_id last = 0;
    bool first = true;
    for (;;) {
        raft_id next = 0;
        for (uint32_t i = 0; i < c->n && i < RAFT_MEMBERS_MAX; i++) {
            raft_id id = c->members[i].id;
            if (c->members[i].role == role && id > last &&
                (next == 0 || id < next)) {
                next = id;
            }
        }
        if (next == 0) {
            return;
        }
        net_buf_printf(b, "%s%llu", first ? "" : ",", (ull)next);
        first = false;
        last = next;
    }
}

void net_format_conf(struct net_buf *b, const struct raft_conf *c)
{
    net_buf_printf(b, "voters=");
    if (raft_conf_voters(c) == 0) {
        net_buf_printf(b, "none");
    }
    format_ids(b, c, RAFT_VOTER);
    for (uint32_t i = 0; i < c->n && i < RAFT_MEMBERS_MAX; i++) {
        if (c->members[i].role == RAFT_LEARNER) {
            net_buf_printf(b, " learners=");
            format_ids(b, c, RAFT_LEARNER);
            break;
        }
    }
}

static const char *entry_suffix(uint32_t type)
{
    switch (type) {
    case RAFT_ENTRY_NORMAL:
        return "";
    case RAFT_ENTRY_NOOP:
        return ":noop";
    case RAFT_ENTRY_CONF:
        return ":conf";
    }
    return ":type?";
}

/* Entries as "index@term", runs of normal entries of one term as
 * "lo..hi@term". */
static void format_entries(struct net_buf *b, const struct raft_entry *e,
                           size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (e[i].type == RAFT_ENTRY_NORMAL && j + 1 < n &&
               e[j + 1].type == RAFT_ENTRY_NORMAL &&
               e[j + 1].term == e[i].term &&
               e[j + 1].index == e[j].index + 1) {
            j++;
        }
        if (i > 0) {
            net_buf_printf(b, " ");
        }
        if (j > i) {
            net_buf_printf(b, "%llu..%llu@%llu", (ull)e[i].index,
                           (ull)e[j].index, (ull)e[i].term);
        } else {
            net_buf_printf(b, "%llu@%llu%s", (ull)e[i].index, (ull)e[i].term,
                           entry_suffix(e[i].type));
        }
        i = j + 1;
    }
}

void net_format_msg(struct net_buf *b, const struct raft_msg *m)
{
    net_buf_printf(b, "%llu->%llu %s term=%llu", (ull)m->from, (ull)m->to,
                   net_msg_type_name(m->type), (ull)m->term);
    switch (m->type) {
    case RAFT_MSG_APPEND:
        net_buf_printf(b, " prev=%llu@%llu commit=%llu", (ull)m->index,
                       (ull)m->log_term, (ull)m->commit);
        if (m->n_entries > 0) {
            net_buf_printf(b, " entries=[");
            format_entries(b, m->entries, m->n_entries);
            net_buf_printf(b, "]");
        }
        break;
    case RAFT_MSG_APPEND_RESP:
        if (m->reject) {
            net_buf_printf(b, " reject index=%llu hint=%llu@%llu",
                           (ull)m->index, (ull)m->hint_index,
                           (ull)m->hint_term);
        } else {
            net_buf_printf(b, " index=%llu", (ull)m->index);
        }
        break;
    case RAFT_MSG_VOTE:
    case RAFT_MSG_PREVOTE:
        net_buf_printf(b, " last=%llu@%llu", (ull)m->index,
                       (ull)m->log_term);
        break;
    case RAFT_MSG_VOTE_RESP:
    case RAFT_MSG_PREVOTE_RESP:
        net_buf_printf(b, m->reject ? " rejected" : " granted");
        break;
    case RAFT_MSG_HEARTBEAT:
        net_buf_printf(b, " commit=%llu ctx=%llu", (ull)m->commit,
                       (ull)m->ctx);
        if (m->quiesce) {
            net_buf_printf(b, " quiesce last=%llu@%llu", (ull)m->index,
                           (ull)m->log_term);
        }
        break;
    case RAFT_MSG_HEARTBEAT_RESP:
        net_buf_printf(b, " ctx=%llu", (ull)m->ctx);
        break;
    case RAFT_MSG_SNAPSHOT:
        net_buf_printf(b, " snap=%llu@%llu ",
                       (ull)m->snapshot.meta.index,
                       (ull)m->snapshot.meta.term);
        net_format_conf(b, &m->snapshot.meta.conf);
        break;
    default:
        break;
    }
    if (m->flags & RAFT_MSGF_TRANSFER) {
        net_buf_printf(b, " transfer");
    }
    if (m->flags & ~RAFT_MSGF_TRANSFER) {
        net_buf_printf(b, " flags=%#x", (unsigned)m->flags);
    }
}

void net_format_log(struct net_buf *b, const struct memstore *s)
{
    bool sep = false;
    if (s->snap.meta.index > 0) {
        net_buf_printf(b, "snap=%llu@%llu", (ull)s->snap.meta.index,
                       (ull)s->snap.meta.term);
        sep = true;
    }
    if (s->n > 0) {
        net_buf_printf(b, "%s", sep ? " " : "");
        format_entries(b, s->ents, s->n);
    } else if (!sep) {
        net_buf_printf(b, "empty");
    }
}

void net_format_status(struct net *n, struct net_buf *b, raft_id id)
{
    struct raft_status st;
    if (id == 0 || id > n->max_id || !n->nodes[id].exists ||
        n->nodes[id].r == NULL) {
        net_buf_printf(b, "%llu: no such node", (ull)id);
        return;
    }
    raft_status(n->nodes[id].r, &st);
    net_buf_printf(b,
                   "%llu: %s term=%llu vote=%llu leader=%llu commit=%llu "
                   "applied=%llu last=%llu ",
                   (ull)id, net_role_name(st.role), (ull)st.term,
                   (ull)st.vote, (ull)st.leader, (ull)st.commit,
                   (ull)st.applied, (ull)st.last_index);
    net_format_conf(b, &st.conf);
    if (st.transferee != 0) {
        net_buf_printf(b, " transferee=%llu", (ull)st.transferee);
    }
    if (st.quiet) {
        net_buf_printf(b, " quiet");
    }
}

/* --- Node helpers -------------------------------------------------------- */

static struct net_node *node_of(struct net *n, raft_id id)
{
    if (id == 0 || id > n->max_id || !n->nodes[id].exists) {
        return NULL;
    }
    return &n->nodes[id];
}

static uint64_t fnv(uint64_t h, const void *p, size_t len)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < len; i++) {
        h ^= b[i];
        h *= FNV_PRIME;
    }
    return h;
}

static uint64_t entry_hash(uint64_t h, const struct raft_entry *e)
{
    h = fnv(h, &e->index, sizeof(e->index));
    h = fnv(h, &e->term, sizeof(e->term));
    h = fnv(h, &e->type, sizeof(e->type));
    if (e->len > 0 && e->data != NULL) {
        h = fnv(h, e->data, e->len);
    }
    return h;
}

static bool conf_equal(const struct raft_conf *a, const struct raft_conf *b)
{
    if (a->n != b->n) {
        return false;
    }
    for (uint32_t i = 0; i < a->n && i < RAFT_MEMBERS_MAX; i++) {
        const struct raft_member *m = raft_conf_find(b, a->members[i].id);
        if (m == NULL || m->role != a->members[i].role) {
            return false;
        }
    }
    return true;
}

/* Resets the state machine to what the stored snapshot holds. */
static void sm_reset_to_snapshot(struct net *n, struct net_node *nd)
{
    const struct raft_snapshot *s = &nd->store.snap;
    nd->applied = s->meta.index;
    nd->applied_term = s->meta.term;
    nd->sm_hash = FNV_OFFSET;
    if (s->meta.index > 0) {
        if (s->len != SNAP_PAYLOAD_LEN) {
            net_violation(n, "%llu: snapshot payload of %zu bytes",
                          (ull)nd->id, s->len);
        } else {
            memcpy(&nd->sm_hash, s->data, sizeof(nd->sm_hash));
        }
    }
    nd->n_confs = 1;
    nd->conf_index[0] = s->meta.index;
    nd->confs[0] = s->meta.conf;
    nd->n_reads = 0;
}

static void observe_init(struct net_node *nd)
{
    struct raft_status st;
    raft_status(nd->r, &st);
    nd->role = st.role;
    nd->term = st.term;
}

/* A failed assertion inside the core: show what led to it before the core
 * aborts. */
static void panic_cb(void *ctx, const char *what, uint64_t group_id,
                     raft_id id, uint64_t term, uint64_t index)
{
    struct net *n = ctx;
    fprintf(stderr,
            "raft panic: %s (group %llu node %llu term %llu index %llu)\n"
            "--- trace since the last command:\n%s\n",
            what, (ull)group_id, (ull)id, (ull)term, (ull)index,
            n->out.p ? n->out.p : "");
}

static int create_raft(struct net *n, struct net_node *nd)
{
    struct raft_config c = nd->cfg;
    const char *why = NULL;
    c.hs = nd->store.hs;
    c.applied = nd->store.snap.meta.index;
    c.storage = memstore_storage(&nd->store);
    if (c.panic == NULL) {
        c.panic = panic_cb;
        c.panic_ctx = n;
    }
    int rc = raft_create(&c, &nd->r, &why);
    if (rc != KHO_OK) {
        nd->r = NULL;
        net_error(n, "%llu: raft_create: %s (%s)", (ull)nd->id,
                  kho_errname(rc), why ? why : "no reason");
        return rc;
    }
    observe_init(nd);
    return KHO_OK;
}

/* --- Safety checks ------------------------------------------------------- */

static struct net_hist *hist_at(struct net *n, uint64_t index)
{
    if (index == 0 || index > NET_INDEX_MAX) {
        return NULL;
    }
    if (index >= n->hist_cap) {
        size_t cap = n->hist_cap ? n->hist_cap : 1024;
        while (cap <= index) {
            cap *= 2;
        }
        n->hist = xrealloc(n->hist, cap * sizeof(*n->hist));
        memset(n->hist + n->hist_cap, 0,
               (cap - n->hist_cap) * sizeof(*n->hist));
        n->hist_cap = cap;
    }
    return &n->hist[index];
}

/* State-machine safety: every node's state after applying `index` is the
 * same. */
static void record_hist(struct net *n, struct net_node *nd, uint64_t index,
                        uint64_t term, uint64_t hash)
{
    struct net_hist *h = hist_at(n, index);
    if (h == NULL) {
        net_violation(n, "%llu: applied index %llu out of range",
                      (ull)nd->id, (ull)index);
        return;
    }
    if (!h->set) {
        h->set = true;
        h->term = term;
        h->hash = hash;
        if (index > n->hist_max) {
            n->hist_max = index;
        }
        return;
    }
    if (h->term != term || h->hash != hash) {
        net_violation(n,
                      "%llu: state machine diverged at index %llu (term "
                      "%llu, first applied with term %llu)",
                      (ull)nd->id, (ull)index, (ull)term, (ull)h->term);
    }
}

/* At most one leader per term; leader completeness. */
static void check_new_leader(struct net *n, struct net_node *nd,
                             const struct raft_status *st)
{
    for (uint32_t i = 0; i < n->n_leader_terms; i++) {
        if (n->leader_term[i] == st->term && n->leader_id[i] != nd->id) {
            net_violation(n, "two leaders in term %llu: %llu and %llu",
                          (ull)st->term, (ull)n->leader_id[i], (ull)nd->id);
            return;
        }
    }
    if (n->n_leader_terms < NET_TERMS_MAX) {
        n->leader_term[n->n_leader_terms] = st->term;
        n->leader_id[n->n_leader_terms] = nd->id;
        n->n_leader_terms++;
    }
    if (st->last_index < n->hist_max) {
        net_violation(n,
                      "leader %llu of term %llu lacks committed index %llu "
                      "(last %llu)",
                      (ull)nd->id, (ull)st->term, (ull)n->hist_max,
                      (ull)st->last_index);
        return;
    }
    for (uint64_t i = 1; i <= n->hist_max; i++) {
        const struct net_hist *h = &n->hist[i];
        const struct raft_entry *e = memstore_entry(&nd->store, i);
        if (h->set && e != NULL && e->term != h->term) {
            net_violation(n,
                          "leader %llu of term %llu has %llu@%llu but "
                          "%llu@%llu was committed",
                          (ull)nd->id, (ull)st->term, (ull)i, (ull)e->term,
                          (ull)i, (ull)h->term);
            return;
        }
    }
}

/* Prints role changes (and new terms of candidates and leaders). */
static void observe(struct net *n, struct net_node *nd)
{
    struct raft_status st;
    if (nd->r == NULL) {
        return;
    }
    raft_status(nd->r, &st);
    bool changed = st.role != nd->role ||
                   (st.role != RAFT_FOLLOWER && st.term != nd->term);
    if (changed) {
        net_buf_printf(&n->out, "%llu became %s at term %llu\n",
                       (ull)nd->id, net_role_name(st.role), (ull)st.term);
        if (st.role == RAFT_LEADER) {
            check_new_leader(n, nd, &st);
        }
    }
    if (st.commit > st.last_index) {
        net_violation(n, "%llu: commit %llu beyond last index %llu",
                      (ull)nd->id, (ull)st.commit, (ull)st.last_index);
    }
    nd->role = st.role;
    nd->term = st.term;
}

/* Log matching: if two stored logs hold an entry with the same index and
 * term, they are identical up to it. */
static void check_log_matching(struct net *n)
{
    for (raft_id a = 1; a <= n->max_id; a++) {
        for (raft_id b = a + 1; b <= n->max_id; b++) {
            const struct memstore *sa = &n->nodes[a].store;
            const struct memstore *sb = &n->nodes[b].store;
            if (!n->nodes[a].exists || !n->nodes[b].exists) {
                continue;
            }
            uint64_t hi = memstore_last_index(sa);
            if (memstore_last_index(sb) < hi) {
                hi = memstore_last_index(sb);
            }
            uint64_t match = 0;
            for (uint64_t i = hi; i > 0; i--) {
                const struct raft_entry *ea = memstore_entry(sa, i);
                const struct raft_entry *eb = memstore_entry(sb, i);
                if (ea == NULL || eb == NULL) {
                    break;
                }
                if (ea->term == eb->term) {
                    match = i;
                    break;
                }
            }
            for (uint64_t i = match; i > 0; i--) {
                const struct raft_entry *ea = memstore_entry(sa, i);
                const struct raft_entry *eb = memstore_entry(sb, i);
                if (ea == NULL || eb == NULL) {
                    break;
                }
                if (ea->term != eb->term || ea->type != eb->type ||
                    ea->len != eb->len ||
                    (ea->len > 0 && memcmp(ea->data, eb->data, ea->len))) {
                    net_violation(n,
                                  "log matching: %llu and %llu agree at "
                                  "%llu but differ at %llu",
                                  (ull)a, (ull)b, (ull)match, (ull)i);
                    return;
                }
            }
        }
    }
}

/* What a message promises must be durable before it leaves. */
static void check_msg_durable(struct net *n, struct net_node *nd,
                              const struct raft_msg *m)
{
    const struct memstore *s = &nd->store;
    if (m->type != RAFT_MSG_PREVOTE && m->type != RAFT_MSG_PREVOTE_RESP &&
        m->term > s->hs.term) {
        net_violation(n, "%llu: sends term %llu before persisting it",
                      (ull)nd->id, (ull)m->term);
    }
    if (m->type == RAFT_MSG_VOTE_RESP && !m->reject &&
        (s->hs.term != m->term || s->hs.vote != m->to)) {
        net_violation(n,
                      "%llu: grants its vote to %llu in term %llu before "
                      "persisting it (stored term %llu vote %llu)",
                      (ull)nd->id, (ull)m->to, (ull)m->term,
                      (ull)s->hs.term, (ull)s->hs.vote);
    }
    if (m->type == RAFT_MSG_APPEND_RESP && !m->reject &&
        m->index > memstore_last_index(s)) {
        net_violation(n,
                      "%llu: acknowledges index %llu with only %llu stored",
                      (ull)nd->id, (ull)m->index,
                      (ull)memstore_last_index(s));
    }
}

/* --- Messages ------------------------------------------------------------ */

static void msg_free(struct raft_msg *m)
{
    for (uint32_t i = 0; i < m->n_entries; i++) {
        free(m->entries[i].data);
    }
    free(m->entries);
    free(m->snapshot.data);
    memset(m, 0, sizeof(*m));
}

static void msg_copy(struct raft_msg *dst, const struct raft_msg *src)
{
    *dst = *src;
    dst->entries = NULL;
    dst->snapshot.data = NULL;
    if (src->n_entries > 0) {
        dst->entries = xrealloc(NULL, src->n_entries * sizeof(*dst->entries));
        for (uint32_t i = 0; i < src->n_entries; i++) {
            dst->entries[i] = src->entries[i];
            dst->entries[i].data = xrealloc(NULL, src->entries[i].len);
            if (src->entries[i].len > 0) {
                memcpy(dst->entries[i].data, src->entries[i].data,
                       src->entries[i].len);
            }
        }
    }
    if (src->snapshot.len > 0) {
        dst->snapshot.data = xrealloc(NULL, src->snapshot.len);
        memcpy(dst->snapshot.data, src->snapshot.data, src->snapshot.len);
    }
}

static void push_copy(struct net *n, struct net_msg **q, size_t *len,
                      size_t *cap, const struct raft_msg *m)
{
    if (*len >= NET_QUEUE_MAX) {
        net_violation(n, "more than %u messages in flight", NET_QUEUE_MAX);
        return;
    }
    if (*len == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *q = xrealloc(*q, *cap * sizeof(**q));
    }
    msg_copy(&(*q)[*len].m, m);
    (*len)++;
}

static void enqueue(struct net *n, const struct raft_msg *m)
{
    push_copy(n, &n->q, &n->q_len, &n->q_cap, m);
}

static void stash_copy(struct net *n, const struct raft_msg *m)
{
    push_copy(n, &n->stash, &n->stash_len, &n->stash_cap, m);
}

size_t net_unstash(struct net *n)
{
    size_t count = n->stash_len;
    for (size_t i = 0; i < n->stash_len; i++) {
        enqueue(n, &n->stash[i].m);
        msg_free(&n->stash[i].m);
    }
    n->stash_len = 0;
    return count;
}

bool net_link_up(const struct net *n, raft_id from, raft_id to)
{
    if (from == 0 || to == 0 || from > NET_NODES_MAX || to > NET_NODES_MAX) {
        return false;
    }
    return !n->cut[from][to];
}

static void send_msg(struct net *n, struct net_node *nd,
                     const struct raft_msg *m)
{
    const char *why = NULL;
    if (m->from != nd->id || m->group_id != n->group_id) {
        net_violation(n, "%llu: sends a message from %llu in group %llu",
                      (ull)nd->id, (ull)m->from, (ull)m->group_id);
        return;
    }
    if (m->to == nd->id) {
        net_violation(n, "%llu: sends a message to itself", (ull)nd->id);
        return;
    }
    if (node_of(n, m->to) == NULL) {
        why = " DROP (no such node)";
    } else if (!net_link_up(n, m->from, m->to)) {
        why = " DROP";
    }
    if (!n->quiet) {
        net_format_msg(&n->out, m);
        net_buf_printf(&n->out, "%s\n", why ? why : "");
    }
    n->msgs_sent++;
    if (why != NULL) {
        n->msgs_dropped++;
        return;
    }
    enqueue(n, m);
}

/* --- Ready handling ------------------------------------------------------ */

static void install_snapshot(struct net *n, struct net_node *nd,
                             const struct raft_snapshot *s)
{
    uint64_t hash = 0, index = 0;
    if (s->len != SNAP_PAYLOAD_LEN || s->data == NULL) {
        net_violation(n, "%llu: snapshot payload of %zu bytes", (ull)nd->id,
                      s->len);
        return;
    }
    memcpy(&hash, s->data, sizeof(hash));
    memcpy(&index, s->data + sizeof(hash), sizeof(index));
    if (index != s->meta.index) {
        net_violation(n, "%llu: snapshot meta index %llu, payload %llu",
                      (ull)nd->id, (ull)s->meta.index, (ull)index);
    }
    if (s->meta.index < nd->applied) {
        net_violation(n, "%llu: snapshot %llu behind applied %llu",
                      (ull)nd->id, (ull)s->meta.index, (ull)nd->applied);
    }
    if (!n->quiet) {
        net_buf_printf(&n->out, "%llu installs snapshot %llu@%llu\n",
                       (ull)nd->id, (ull)s->meta.index, (ull)s->meta.term);
    }
    nd->sm_hash = hash;
    nd->applied = s->meta.index;
    nd->applied_term = s->meta.term;
    nd->n_confs = 1;
    nd->conf_index[0] = s->meta.index;
    nd->confs[0] = s->meta.conf;
    record_hist(n, nd, s->meta.index, s->meta.term, hash);
}

static void push_conf(struct net *n, struct net_node *nd,
                      const struct raft_entry *e)
{
    struct raft_conf c;
    if (raft_conf_decode(e->data, e->len, &c) != KHO_OK) {
        net_violation(n, "%llu: committed conf entry %llu does not decode",
                      (ull)nd->id, (ull)e->index);
        return;
    }
    if (nd->n_confs == NET_CONFS_MAX) {
        memmove(nd->confs, nd->confs + 1,
                (NET_CONFS_MAX - 1) * sizeof(nd->confs[0]));
        memmove(nd->conf_index, nd->conf_index + 1,
                (NET_CONFS_MAX - 1) * sizeof(nd->conf_index[0]));
        nd->n_confs--;
    }
    nd->confs[nd->n_confs] = c;
    nd->conf_index[nd->n_confs] = e->index;
    nd->n_confs++;
}

static void apply_entry(struct net *n, struct net_node *nd,
                        const struct raft_entry *e)
{
    const struct raft_entry *stored = memstore_entry(&nd->store, e->index);
    if (e->index != nd->applied + 1) {
        net_violation(n, "%llu: applies %llu after %llu", (ull)nd->id,
                      (ull)e->index, (ull)nd->applied);
    }
    if (stored == NULL || stored->term != e->term) {
        net_violation(n, "%llu: applies %llu@%llu, not in its durable log",
                      (ull)nd->id, (ull)e->index, (ull)e->term);
    }
    nd->sm_hash = entry_hash(nd->sm_hash, e);
    nd->applied = e->index;
    nd->applied_term = e->term;
    nd->n_applied_entries++;
    record_hist(n, nd, e->index, e->term, nd->sm_hash);
    if (e->type == RAFT_ENTRY_CONF) {
        push_conf(n, nd, e);
    }
}

static void serve_reads(struct net *n, struct net_node *nd)
{
    uint32_t keep = 0;
    for (uint32_t i = 0; i < nd->n_reads; i++) {
        const struct raft_read_state *rs = &nd->reads[i];
        if (rs->index > nd->applied) {
            nd->reads[keep++] = *rs;
            continue;
        }
        net_buf_printf(&n->out, "%llu read ctx=%llu served at index %llu\n",
                       (ull)nd->id, (ull)rs->ctx, (ull)rs->index);
        nd->reads_served++;
    }
    nd->n_reads = keep;
}

static void take_reads(struct net *n, struct net_node *nd,
                       const struct raft_ready *rd)
{
    for (size_t i = 0; i < rd->n_reads; i++) {
        const struct raft_read_state *rs = &rd->reads[i];
        if (rs->status != KHO_OK) {
            net_buf_printf(&n->out, "%llu read ctx=%llu failed: %s\n",
                           (ull)nd->id, (ull)rs->ctx,
                           kho_errname(rs->status));
            nd->reads_failed++;
            continue;
        }
        if (nd->n_reads == NET_READS_MAX) {
            net_error(n, "%llu: more than %u reads waiting", (ull)nd->id,
                      NET_READS_MAX);
            continue;
        }
        nd->reads[nd->n_reads++] = *rs;
    }
    serve_reads(n, nd);
}

static void check_applied_conf(struct net *n, struct net_node *nd)
{
    struct raft_conf c;
    raft_applied_conf(nd->r, &c);
    if (!conf_equal(&c, &nd->confs[nd->n_confs - 1])) {
        struct net_buf b = {0};
        net_format_conf(&b, &c);
        net_buf_printf(&b, " but the host applied ");
        net_format_conf(&b, &nd->confs[nd->n_confs - 1]);
        net_violation(n, "%llu: raft_applied_conf says %s", (ull)nd->id,
                      b.p);
        net_buf_free(&b);
    }
}

bool net_process_ready(struct net *n, raft_id id)
{
    struct net_node *nd = node_of(n, id);
    struct raft_ready rd;
    if (nd == NULL || nd->r == NULL || !raft_has_ready(nd->r)) {
        return false;
    }
    int rc = raft_ready(nd->r, &rd);
    if (rc != KHO_OK) {
        net_error(n, "%llu: raft_ready: %s", (ull)id, kho_errname(rc));
        return false;
    }
    uint64_t applied_before = nd->applied;
    /* a. Install the snapshot (state machine). */
    if (rd.snapshot != NULL) {
        install_snapshot(n, nd, rd.snapshot);
    }
    /* b. One durable write: snapshot, cut + append, hard state. */
    rc = memstore_persist(&nd->store, &rd);
    if (rc != KHO_OK) {
        net_violation(n, "%llu: ready does not fit the stored log (%s)",
                      (ull)id, kho_errname(rc));
    }
    if (nd->store.hs.commit > memstore_last_index(&nd->store)) {
        net_violation(n, "%llu: durable commit %llu beyond durable log %llu",
                      (ull)id, (ull)nd->store.hs.commit,
                      (ull)memstore_last_index(&nd->store));
    }
    /* c. Send. */
    for (size_t i = 0; i < rd.n_msgs; i++) {
        check_msg_durable(n, nd, &rd.msgs[i]);
        send_msg(n, nd, &rd.msgs[i]);
    }
    /* d. Apply, then serve reads. */
    for (size_t i = 0; i < rd.n_committed; i++) {
        apply_entry(n, nd, &rd.committed[i]);
    }
    if (nd->applied != applied_before && !n->quiet) {
        net_buf_printf(&n->out, "%llu applied up to %llu@%llu\n", (ull)id,
                       (ull)nd->applied, (ull)nd->applied_term);
    }
    take_reads(n, nd, &rd);
    /* e. Advance. */
    raft_advance(nd->r);
    observe(n, nd);
    check_applied_conf(n, nd);
    return true;
}

static bool match(const struct net_filter *f, const struct raft_msg *m)
{
    return (f->from == 0 || f->from == m->from) &&
           (f->to == 0 || f->to == m->to) &&
           (f->type == 0 || f->type == m->type);
}

size_t net_deliver(struct net *n, const struct net_filter *f)
{
    struct net_msg *q = n->q;
    size_t len = n->q_len, matched = 0;
    n->q = NULL;
    n->q_len = 0;
    n->q_cap = 0;
    for (size_t i = 0; i < len; i++) {
        struct raft_msg *m = &q[i].m;
        if (!match(f, m)) {
            enqueue(n, m);
            msg_free(m);
            continue;
        }
        matched++;
        if (f->stash || f->dup) {
            stash_copy(n, m);
        }
        if (f->stash) {
            msg_free(m);
            continue;
        }
        struct net_node *to = node_of(n, m->to);
        if (f->drop || to == NULL || to->r == NULL ||
            !net_link_up(n, m->from, m->to)) {
            if (!n->quiet) {
                net_buf_printf(&n->out, "dropped ");
                net_format_msg(&n->out, m);
                net_buf_printf(&n->out, "\n");
            }
            n->msgs_dropped++;
            msg_free(m);
            continue;
        }
        int rc = raft_step(to->r, m);
        if (rc != KHO_OK) {
            net_error(n, "%llu: raft_step: %s", (ull)m->to, kho_errname(rc));
        }
        observe(n, to);
        msg_free(m);
    }
    free(q);
    return matched;
}

int net_stabilize(struct net *n)
{
    for (uint32_t round = 0; round < NET_ROUNDS_MAX; round++) {
        bool any = false;
        for (raft_id id = 1; id <= n->max_id; id++) {
            any |= net_process_ready(n, id);
        }
        if (n->q_len > 0) {
            struct net_filter all = {0};
            net_deliver(n, &all);
            any = true;
        }
        if (!any) {
            check_log_matching(n);
            return KHO_OK;
        }
    }
    net_error(n, "stabilize: still busy after %u rounds", NET_ROUNDS_MAX);
    return KHO_ETIMEOUT;
}

/* --- Time ---------------------------------------------------------------- */

int net_tick(struct net *n, raft_id id, uint32_t ticks)
{
    struct net_node *nd = node_of(n, id);
    if (nd == NULL || nd->r == NULL) {
        return KHO_EINVAL;
    }
    for (uint32_t i = 0; i < ticks; i++) {
        int rc = raft_tick(nd->r);
        if (rc != KHO_OK) {
            net_error(n, "%llu: raft_tick: %s", (ull)id, kho_errname(rc));
            return rc;
        }
        observe(n, nd);
    }
    return KHO_OK;
}

int net_peer_down(struct net *n, raft_id id, raft_id down)
{
    struct net_node *nd = node_of(n, id);
    if (nd == NULL || nd->r == NULL) {
        return KHO_EINVAL;
    }
    raft_peer_down(nd->r, down);
    observe(n, nd);
    return KHO_OK;
}

int net_campaign(struct net *n, raft_id id)
{
    struct net_node *nd = node_of(n, id);
    if (nd == NULL || nd->r == NULL) {
        return KHO_EINVAL;
    }
    /* A follower campaigns when it changes role; a candidate when it
     * starts a new term; a pre-candidate when it sends new pre-votes (a
     * non-leader has nothing else to send on a tick). */
    uint64_t elections = raft_stats(nd->r)->elections;
    bool had_ready = raft_has_ready(nd->r);
    enum raft_role role = nd->role;
    uint64_t term = nd->term;
    uint32_t max = 2 * nd->cfg.election_ticks + 1;
    for (uint32_t i = 0; i < max; i++) {
        int rc = net_tick(n, id, 1);
        if (rc != KHO_OK) {
            return rc;
        }
        if (nd->role != role || nd->term != term ||
            raft_stats(nd->r)->elections != elections ||
            (!had_ready && raft_has_ready(nd->r))) {
            return KHO_OK;
        }
    }
    return KHO_ETIMEOUT;
}

int net_elect(struct net *n, raft_id id)
{
    int rc = net_campaign(n, id);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = net_stabilize(n);
    if (rc != KHO_OK) {
        return rc;
    }
    return n->nodes[id].role == RAFT_LEADER ? KHO_OK : KHO_EUNAVAILABLE;
}

raft_id net_leader(const struct net *n)
{
    raft_id best = 0;
    uint64_t term = 0;
    for (raft_id id = 1; id <= n->max_id; id++) {
        const struct net_node *nd = &n->nodes[id];
        struct raft_status st;
        if (!nd->exists || nd->r == NULL) {
            continue;
        }
        raft_status(nd->r, &st);
        if (st.role == RAFT_LEADER && (best == 0 || st.term > term)) {
            best = id;
            term = st.term;
        }
    }
    return best;
}

/* A leader exists that reaches a quorum of its voters, and every member it
 * can reach follows it. */
static bool leader_settled(const struct net *n)
{
    raft_id l = net_leader(n);
    struct raft_status ls;
    uint32_t reached = 0;
    if (l == 0) {
        return false;
    }
    raft_status(n->nodes[l].r, &ls);
    for (uint32_t i = 0; i < ls.conf.n; i++) {
        raft_id id = ls.conf.members[i].id;
        bool voter = ls.conf.members[i].role == RAFT_VOTER;
        struct raft_status st;
        if (id == l) {
            reached += voter;
            continue;
        }
        if (id > n->max_id || !n->nodes[id].exists ||
            n->nodes[id].r == NULL || !net_link_up(n, l, id) ||
            !net_link_up(n, id, l)) {
            continue;
        }
        raft_status(n->nodes[id].r, &st);
        if (st.leader != l || st.term != ls.term) {
            return false;
        }
        reached += voter;
    }
    return reached > raft_conf_voters(&ls.conf) / 2;
}

uint32_t net_run(struct net *n, uint32_t ticks, bool until_leader)
{
    for (uint32_t t = 0; t < ticks; t++) {
        if (until_leader && leader_settled(n)) {
            return t;
        }
        for (raft_id id = 1; id <= n->max_id; id++) {
            if (n->nodes[id].exists && n->nodes[id].r != NULL) {
                net_tick(n, id, 1);
            }
        }
        net_stabilize(n);
    }
    return ticks;
}

/* --- Links --------------------------------------------------------------- */

void net_cut(struct net *n, raft_id a, raft_id b)
{
    if (a == 0 || b == 0 || a > NET_NODES_MAX || b > NET_NODES_MAX) {
        return;
    }
    n->cut[a][b] = true;
    n->cut[b][a] = true;
}

void net_isolate(struct net *n, raft_id id)
{
    for (raft_id o = 1; o <= NET_NODES_MAX; o++) {
        if (o != id) {
            net_cut(n, id, o);
        }
    }
}

void net_heal(struct net *n)
{
    memset(n->cut, 0, sizeof(n->cut));
}

/* --- Lifecycle ----------------------------------------------------------- */

struct net *net_new(uint64_t seed)
{
    struct net *n = calloc(1, sizeof(*n));
    if (n == NULL) {
        abort();
    }
    n->seed = seed;
    n->group_id = 1;
    return n;
}

void net_free(struct net *n)
{
    if (n == NULL) {
        return;
    }
    for (raft_id id = 1; id <= n->max_id; id++) {
        if (n->nodes[id].r != NULL) {
            raft_destroy(n->nodes[id].r);
        }
        memstore_free(&n->nodes[id].store);
    }
    for (size_t i = 0; i < n->q_len; i++) {
        msg_free(&n->q[i].m);
    }
    free(n->q);
    for (size_t i = 0; i < n->stash_len; i++) {
        msg_free(&n->stash[i].m);
    }
    free(n->stash);
    free(n->hist);
    net_buf_free(&n->out);
    free(n);
}

/* SplitMix64: distinct, well-mixed seeds for each node. */
static uint64_t mix_seed(uint64_t seed, raft_id id)
{
    uint64_t z = seed + id * UINT64_C(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static void initial_conf(const struct net *n, uint32_t count,
                         const struct net_opts *o, struct raft_conf *c)
{
    memset(c, 0, sizeof(*c));
    if (o->n_voters == 0 && n->max_id > 0) {
        return; /* joining an existing cluster */
    }
    if (o->n_voters == 0) {
        for (uint32_t i = 0; i < count; i++) {
            c->members[c->n].id = n->max_id + 1 + i;
            c->members[c->n].role = RAFT_VOTER;
            c->n++;
        }
    }
    for (uint32_t i = 0; i < o->n_voters && c->n < RAFT_MEMBERS_MAX; i++) {
        c->members[c->n].id = o->voters[i];
        c->members[c->n].role = RAFT_VOTER;
        c->n++;
    }
    for (uint32_t i = 0; i < o->n_learners && c->n < RAFT_MEMBERS_MAX; i++) {
        c->members[c->n].id = o->learners[i];
        c->members[c->n].role = RAFT_LEARNER;
        c->n++;
    }
}

int net_add_nodes(struct net *n, uint32_t count, const struct net_opts *o,
                  raft_id *first)
{
    struct net_opts none = {0};
    struct raft_conf conf;
    if (o == NULL) {
        o = &none;
    }
    if (count == 0 || n->max_id + count > NET_NODES_MAX ||
        o->n_voters > NET_NODES_MAX || o->n_learners > NET_NODES_MAX) {
        return KHO_EINVAL;
    }
    initial_conf(n, count, o, &conf);
    if (first != NULL) {
        *first = n->max_id + 1;
    }
    for (uint32_t i = 0; i < count; i++) {
        raft_id id = ++n->max_id;
        struct net_node *nd = &n->nodes[id];
        memset(nd, 0, sizeof(*nd));
        nd->exists = true;
        nd->id = id;
        memstore_init(&nd->store, &conf);
        raft_config_defaults(&nd->cfg);
        nd->cfg.id = id;
        nd->cfg.group_id = n->group_id;
        nd->cfg.seed = mix_seed(n->seed, id);
        nd->cfg.election_ticks = o->election_ticks ? o->election_ticks : 10;
        nd->cfg.heartbeat_ticks = o->heartbeat_ticks ? o->heartbeat_ticks : 1;
        nd->cfg.quiesce_ticks = o->quiesce_ticks;
        nd->cfg.pre_vote = o->pre_vote;
        nd->cfg.check_quorum = o->check_quorum;
        if (o->tune_cb != NULL) {
            o->tune_cb(&nd->cfg, o->tune_arg);
        }
        sm_reset_to_snapshot(n, nd);
        int rc = create_raft(n, nd);
        if (rc != KHO_OK) {
            return rc;
        }
    }
    return KHO_OK;
}

int net_restart(struct net *n, raft_id id)
{
    struct net_node *nd = node_of(n, id);
    if (nd == NULL) {
        return KHO_EINVAL;
    }
    if (nd->r != NULL) {
        raft_destroy(nd->r);
        nd->r = NULL;
    }
    /* Messages in flight to a crashed node are lost. */
    size_t keep = 0;
    for (size_t i = 0; i < n->q_len; i++) {
        if (n->q[i].m.to == id) {
            msg_free(&n->q[i].m);
            n->msgs_dropped++;
        } else {
            n->q[keep++] = n->q[i];
        }
    }
    n->q_len = keep;
    sm_reset_to_snapshot(n, nd);
    return create_raft(n, nd);
}

int net_set_log(struct net *n, raft_id id, const uint64_t *terms,
                size_t count, uint64_t hs_term)
{
    struct net_node *nd = node_of(n, id);
    if (nd == NULL) {
        return KHO_EINVAL;
    }
    for (size_t i = 0; i < count; i++) {
        if (terms[i] == 0 || (i > 0 && terms[i] < terms[i - 1])) {
            return KHO_EINVAL;
        }
    }
    struct raft_conf conf = nd->store.snap.meta.conf;
    memstore_free(&nd->store);
    memstore_init(&nd->store, &conf);
    for (size_t i = 0; i < count; i++) {
        struct raft_entry e = {
            .term = terms[i], .index = i + 1, .type = RAFT_ENTRY_NORMAL};
        memstore_append(&nd->store, &e);
    }
    nd->store.hs.term = hs_term;
    if (count > 0 && terms[count - 1] > hs_term) {
        nd->store.hs.term = terms[count - 1];
    }
    nd->store.hs.vote = 0;
    nd->store.hs.commit = 0;
    return net_restart(n, id);
}

int net_compact(struct net *n, raft_id id, uint64_t index)
{
    struct net_node *nd = node_of(n, id);
    uint8_t payload[SNAP_PAYLOAD_LEN];
    if (nd == NULL || index > nd->applied ||
        index <= nd->store.snap.meta.index) {
        return KHO_EINVAL;
    }
    const struct net_hist *h = hist_at(n, index);
    if (h == NULL || !h->set) {
        return KHO_EINVAL;
    }
    const struct raft_conf *conf = NULL;
    for (uint32_t i = 0; i < nd->n_confs; i++) {
        if (nd->conf_index[i] <= index) {
            conf = &nd->confs[i];
        }
    }
    if (conf == NULL) {
        return KHO_EINVAL;
    }
    memcpy(payload, &h->hash, sizeof(h->hash));
    memcpy(payload + sizeof(h->hash), &index, sizeof(index));
    return memstore_compact(&nd->store, index, conf, payload,
                            sizeof(payload));
}

/*
 * net.c - the simulated network and the event queue.
 *
 * Every message is deep-copied when it is sent, because the core frees a
 * ready batch's memory in raft_advance(). A send may be dropped (cut link,
 * random loss, full network), duplicated, or delayed by a random amount,
 * which reorders messages; a delivery may be dropped by a partition that
 * started while the message was in flight, or held back by a stalled link
 * and released in a burst. Partitions are symmetric or one-way.
 */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- Event queue: a binary min-heap on (time, seq) ---------------------- */

static bool ev_less(const struct sim_event *a, const struct sim_event *b)
{
    if (a->time != b->time) {
        return a->time < b->time;
    }
    return a->seq < b->seq;
}

void sim_heap_push(struct sim *s, const struct sim_event *ev)
{
    struct sim_heap *h = &s->heap;
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 1024;
        h->ev = realloc(h->ev, h->cap * sizeof(*h->ev));
        if (h->ev == NULL) {
            abort();
        }
    }
    struct sim_event e = *ev;
    e.seq = s->ev_seq++;
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!ev_less(&e, &h->ev[parent])) {
            break;
        }
        h->ev[i] = h->ev[parent];
        i = parent;
    }
    h->ev[i] = e;
}

bool sim_heap_pop_before(struct sim *s, uint64_t limit, struct sim_event *out)
{
    struct sim_heap *h = &s->heap;
    if (h->n == 0 || h->ev[0].time >= limit) {
        return false;
    }
    *out = h->ev[0];
    struct sim_event last = h->ev[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) {
            break;
        }
        if (c + 1 < h->n && ev_less(&h->ev[c + 1], &h->ev[c])) {
            c++;
        }
        if (!ev_less(&h->ev[c], &last)) {
            break;
        }
        h->ev[i] = h->ev[c];
        i = c;
    }
    if (h->n > 0) {
        h->ev[i] = last;
    }
    return true;
}

void sim_heap_free(struct sim *s)
{
    for (size_t i = 0; i < s->heap.n; i++) {
        sim_msg_free(s->heap.ev[i].msg);
    }
    free(s->heap.ev);
    memset(&s->heap, 0, sizeof(s->heap));
}

/* --- Messages ------------------------------------------------------------ */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        abort();
    }
    return p;
}

struct raft_msg *sim_msg_clone(const struct raft_msg *m)
{
    struct raft_msg *c = xmalloc(sizeof(*c));
    *c = *m;
    c->entries = NULL;
    if (m->n_entries > 0) {
        c->entries = xmalloc(sizeof(*c->entries) * m->n_entries);
        for (uint32_t i = 0; i < m->n_entries; i++) {
            c->entries[i] = m->entries[i];
            c->entries[i].data = xmalloc(m->entries[i].len);
            if (m->entries[i].len > 0) {
                memcpy(c->entries[i].data, m->entries[i].data,
                       m->entries[i].len);
            }
        }
    }
    c->snapshot.data = NULL;
    if (m->snapshot.len > 0 && m->snapshot.data != NULL) {
        c->snapshot.data = xmalloc(m->snapshot.len);
        memcpy(c->snapshot.data, m->snapshot.data, m->snapshot.len);
    }
    return c;
}

void sim_msg_free(struct raft_msg *m)
{
    if (m == NULL) {
        return;
    }
    for (uint32_t i = 0; i < m->n_entries && m->entries != NULL; i++) {
        free(m->entries[i].data);
    }
    free(m->entries);
    free(m->snapshot.data);
    free(m);
}

const char *sim_msg_describe(const struct raft_msg *m, char *buf, size_t cap)
{
    const char *name = raft_msg_type_name(m->type);
    switch (m->type) {
    case RAFT_MSG_APPEND:
        snprintf(buf, cap, "%s n%llu->n%llu t=%llu prev=%llu/%llu n=%u c=%llu",
                 name, (unsigned long long)m->from, (unsigned long long)m->to,
                 (unsigned long long)m->term, (unsigned long long)m->index,
                 (unsigned long long)m->log_term, m->n_entries,
                 (unsigned long long)m->commit);
        break;
    case RAFT_MSG_APPEND_RESP:
        snprintf(buf, cap, "%s n%llu->n%llu t=%llu i=%llu%s hint=%llu/%llu",
                 name, (unsigned long long)m->from, (unsigned long long)m->to,
                 (unsigned long long)m->term, (unsigned long long)m->index,
                 m->reject ? " REJECT" : "", (unsigned long long)m->hint_index,
                 (unsigned long long)m->hint_term);
        break;
    case RAFT_MSG_VOTE:
    case RAFT_MSG_PREVOTE:
        snprintf(buf, cap, "%s n%llu->n%llu t=%llu last=%llu/%llu%s", name,
                 (unsigned long long)m->from, (unsigned long long)m->to,
                 (unsigned long long)m->term, (unsigned long long)m->index,
                 (unsigned long long)m->log_term,
                 (m->flags & RAFT_MSGF_TRANSFER) ? " transfer" : "");
        break;
    case RAFT_MSG_VOTE_RESP:
    case RAFT_MSG_PREVOTE_RESP:
        snprintf(buf, cap, "%s n%llu->n%llu t=%llu %s", name,
                 (unsigned long long)m->from, (unsigned long long)m->to,
                 (unsigned long long)m->term, m->reject ? "REJECT" : "granted");
        break;
    case RAFT_MSG_SNAPSHOT:
        snprintf(buf, cap, "%s n%llu->n%llu t=%llu snap=%llu/%llu", name,
                 (unsigned long long)m->from, (unsigned long long)m->to,
                 (unsigned long long)m->term,
                 (unsigned long long)m->snapshot.meta.index,
                 (unsigned long long)m->snapshot.meta.term);
        break;
    default:
        snprintf(buf, cap, "%s n%llu->n%llu t=%llu c=%llu ctx=%llu%s", name,
                 (unsigned long long)m->from, (unsigned long long)m->to,
                 (unsigned long long)m->term, (unsigned long long)m->commit,
                 (unsigned long long)m->ctx, m->quiesce ? " QUIESCE" : "");
        break;
    }
    return buf;
}

/* --- Sending and delivering ---------------------------------------------- */

static void trace_msg(struct sim *s, const char *what, const struct raft_msg *m)
{
    if (s->opts->trace == 0) {
        return;
    }
    char buf[160];
    sim_trace_emit(s, "net %s %s", what, sim_msg_describe(m, buf, sizeof(buf)));
}

static bool slot_ok(raft_id id)
{
    return id >= 1 && id <= SIM_NODES_MAX;
}

static uint64_t msg_delay(struct sim *s)
{
    uint64_t d = sim_rng_range(&s->rng, s->p.delay_min, s->p.delay_max);
    if (sim_rng_chance(&s->rng, s->p.spike_ppm)) {
        d += sim_rng_range(&s->rng, 1, 6) * SIM_TICK_UNITS;
    }
    return d;
}

static void enqueue(struct sim *s, const struct raft_msg *m)
{
    if (s->net_inflight >= SIM_NET_INFLIGHT_MAX) {
        s->st.msgs_dropped++;
        trace_msg(s, "drop(net-full)", m);
        return;
    }
    struct sim_event ev = {
        .time = s->now + msg_delay(s),
        .kind = SIM_EV_MSG,
        .node = (uint32_t)(m->to - 1),
        .msg = sim_msg_clone(m),
    };
    s->net_inflight++;
    sim_heap_push(s, &ev);
}

void sim_net_send(struct sim *s, const struct raft_msg *m)
{
    s->st.msgs_sent++;
    if (!slot_ok(m->from) || !slot_ok(m->to) || m->from == m->to) {
        s->st.msgs_dropped++;
        trace_msg(s, "drop(bad-address)", m);
        return;
    }
    if (s->cut[m->from - 1][m->to - 1]) {
        s->st.msgs_dropped++;
        trace_msg(s, "drop(cut)", m);
        return;
    }
    if (sim_rng_chance(&s->rng, s->p.loss_ppm)) {
        s->st.msgs_dropped++;
        trace_msg(s, "drop(loss)", m);
        return;
    }
    trace_msg(s, "send", m);
    enqueue(s, m);
    if (sim_rng_chance(&s->rng, s->p.dup_ppm)) {
        trace_msg(s, "dup", m);
        enqueue(s, m);
    }
}

/* Takes ownership of ev->msg. */
void sim_net_deliver(struct sim *s, struct sim_event *ev)
{
    struct raft_msg *m = ev->msg;
    uint32_t from = (uint32_t)(m->from - 1), to = (uint32_t)(m->to - 1);
    struct sim_node *n = &s->nodes[to];
    if (s->stall_until[from][to] > s->now) {
        /* A stalled link holds its messages and releases them together. */
        ev->time = s->stall_until[from][to] +
                   sim_rng_range(&s->rng, 0, s->p.delay_max);
        sim_heap_push(s, ev);
        return;
    }
    s->net_inflight--;
    if (n->state != SIM_NODE_UP || s->cut[from][to]) {
        s->st.msgs_dropped++;
        trace_msg(s, n->state != SIM_NODE_UP ? "drop(down)" : "drop(cut)", m);
        sim_msg_free(m);
        return;
    }
    trace_msg(s, "recv", m);
    sim_node_receive(s, n, m);
}

/* --- Partitions and stalls ------------------------------------------------ */

/* Slots of nodes that exist (up or crashed), in slot order. */
static uint32_t live_slots(const struct sim *s, uint32_t *out)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < s->n_slots; i++) {
        if (s->nodes[i].state == SIM_NODE_UP ||
            s->nodes[i].state == SIM_NODE_DOWN) {
            out[k++] = i;
        }
    }
    return k;
}

static void shuffle(struct sim *s, uint32_t *a, uint32_t n)
{
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = (uint32_t)sim_rng_below(&s->rng, i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

static void cut_both(struct sim *s, uint32_t a, uint32_t b)
{
    s->cut[a][b] = true;
    s->cut[b][a] = true;
}

static void trace_cuts(struct sim *s, const char *kind)
{
    if (s->opts->trace == 0) {
        return;
    }
    char buf[SIM_TRACE_LINE_BYTES - 40];
    size_t off = 0;
    buf[0] = 0;
    for (uint32_t a = 0; a < s->n_slots && off + 12 < sizeof(buf); a++) {
        for (uint32_t b = 0; b < s->n_slots && off + 12 < sizeof(buf); b++) {
            if (s->cut[a][b] && (!s->cut[b][a] || a < b)) {
                off +=
                    (size_t)snprintf(buf + off, sizeof(buf) - off, " %u%s%u",
                                     a + 1, s->cut[b][a] ? "x" : "/>", b + 1);
            }
        }
    }
    sim_trace_emit(s, "net partition %s cut:%s", kind, buf);
}

/* A random node, or the leader half the time (the interesting case). */
static uint32_t pick_victim(struct sim *s, const uint32_t *live, uint32_t n)
{
    bool leader = sim_rng_chance(&s->rng, SIM_PPM / 2);
    uint32_t x = live[sim_rng_below(&s->rng, n)];
    struct sim_node *l = leader ? sim_find_leader(s) : NULL;
    return l != NULL ? (uint32_t)(l->id - 1) : x;
}

static void part_isolate(struct sim *s, const uint32_t *live, uint32_t n)
{
    uint32_t x = pick_victim(s, live, n);
    for (uint32_t i = 0; i < n; i++) {
        if (live[i] != x) {
            cut_both(s, x, live[i]);
        }
    }
}

static void part_halves(struct sim *s, uint32_t *live, uint32_t n)
{
    shuffle(s, live, n);
    uint32_t k = (uint32_t)sim_rng_range(&s->rng, 1, n - 1);
    for (uint32_t i = 0; i < k; i++) {
        for (uint32_t j = k; j < n; j++) {
            cut_both(s, live[i], live[j]);
        }
    }
}

/* Jepsen's "majorities ring": every node sees a majority, but no two nodes
 * see the same one. */
static void part_ring(struct sim *s, uint32_t *live, uint32_t n)
{
    shuffle(s, live, n);
    uint32_t reach = (n / 2 + 1) / 2;
    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t j = i + 1; j < n; j++) {
            uint32_t d = j - i;
            if (n - d < d) {
                d = n - d;
            }
            if (d > reach) {
                cut_both(s, live[i], live[j]);
            }
        }
    }
}

/* One node hears nobody (deaf) or nobody hears it (mute). */
static void part_oneway_node(struct sim *s, const uint32_t *live, uint32_t n)
{
    uint32_t x = pick_victim(s, live, n);
    bool deaf = sim_rng_chance(&s->rng, SIM_PPM / 2);
    for (uint32_t i = 0; i < n; i++) {
        if (live[i] == x) {
            continue;
        }
        if (deaf) {
            s->cut[live[i]][x] = true;
        } else {
            s->cut[x][live[i]] = true;
        }
    }
}

static void part_oneway_links(struct sim *s, const uint32_t *live, uint32_t n)
{
    uint32_t k = (uint32_t)sim_rng_range(&s->rng, 1, n);
    for (uint32_t i = 0; i < k; i++) {
        uint32_t a = live[sim_rng_below(&s->rng, n)];
        uint32_t b = live[sim_rng_below(&s->rng, n)];
        if (a != b) {
            s->cut[a][b] = true;
        }
    }
}

static void start_partition(struct sim *s)
{
    uint32_t live[SIM_NODES_MAX];
    uint32_t n = live_slots(s, live);
    if (n < 2) {
        return;
    }
    static const char *const kinds[] = {"isolate", "halves", "ring",
                                        "oneway-node", "oneway-links"};
    uint32_t kind = (uint32_t)sim_rng_below(&s->rng, 5);
    if (kind == 2 && n < 4) {
        kind = 1;
    }
    switch (kind) {
    case 0:
        part_isolate(s, live, n);
        break;
    case 1:
        part_halves(s, live, n);
        break;
    case 2:
        part_ring(s, live, n);
        break;
    case 3:
        part_oneway_node(s, live, n);
        break;
    default:
        part_oneway_links(s, live, n);
        break;
    }
    uint64_t len = sim_rng_range(&s->rng, s->p.election_ticks / 2 + 1,
                                 s->p.partition_ticks_max);
    s->partition_end_tick = s->tick + len;
    s->st.partitions++;
    trace_cuts(s, kinds[kind]);
}

static void clear_cuts(struct sim *s)
{
    memset(s->cut, 0, sizeof(s->cut));
    s->partition_end_tick = 0;
}

static void stall_link(struct sim *s)
{
    uint32_t live[SIM_NODES_MAX];
    uint32_t n = live_slots(s, live);
    if (n < 2) {
        return;
    }
    uint32_t a = live[sim_rng_below(&s->rng, n)];
    uint32_t b = live[sim_rng_below(&s->rng, n)];
    if (a == b) {
        return;
    }
    uint64_t until =
        s->now +
        SIM_TICK_UNITS * sim_rng_range(&s->rng, 1, s->p.stall_ticks_max);
    bool both = sim_rng_chance(&s->rng, SIM_PPM / 2);
    s->stall_until[a][b] = until;
    if (both) {
        s->stall_until[b][a] = until;
    }
    SIM_TRACE(s, "net stall n%u%sn%u until %llu", a + 1, both ? "<->" : "->",
              b + 1, (unsigned long long)(until / SIM_TICK_UNITS));
}

/* Called once per tick during the fault phase. */
void sim_net_faults(struct sim *s)
{
    if (s->partition_end_tick != 0 && s->tick >= s->partition_end_tick) {
        clear_cuts(s);
        SIM_TRACE(s, "net partition healed");
    }
    if (s->partition_end_tick == 0 &&
        sim_rng_chance(&s->rng, s->p.partition_ppm)) {
        start_partition(s);
    }
    if (sim_rng_chance(&s->rng, s->p.stall_ppm)) {
        stall_link(s);
    }
}

/* The liveness phase: every link up, nothing lost, duplicated or stalled.
 * Messages already held by a stalled link are released right away. */
void sim_net_heal(struct sim *s)
{
    clear_cuts(s);
    memset(s->stall_until, 0, sizeof(s->stall_until));
    s->p.loss_ppm = 0;
    s->p.dup_ppm = 0;
    s->p.spike_ppm = 0;
    s->p.partition_ppm = 0;
    s->p.stall_ppm = 0;
    SIM_TRACE(s, "net healed: no partitions, loss, duplication or stalls");
}

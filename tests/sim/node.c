/*
 * node.c - the host around one raft core, following raft.h's "Driving a
 * group" order exactly: feed inputs; if raft_has_ready(), take the batch,
 * write it to the simulated disk (the node is busy for the disk's latency,
 * and inputs that arrive meanwhile wait in an inbox, ticks included, so the
 * node's clock catches up in order when the write completes), then send the
 * messages, apply the committed entries, serve the reads and call
 * raft_advance().
 *
 * What is durable: the memstore (log, hard state, snapshot) and the state
 * machine, which is updated in the same simulated transaction as the batch
 * it applies. A crash throws away the core, the inbox and a write still in
 * progress; a restart rebuilds the core from a copy of the durable store.
 */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sim_node *sim_node_by_id(struct sim *s, raft_id id)
{
    if (id < 1 || id > s->n_slots) {
        return NULL;
    }
    return &s->nodes[id - 1];
}

/* The running node that believes it leads the highest term (as the checker
 * last saw it), or NULL. */
struct sim_node *sim_find_leader(struct sim *s)
{
    struct sim_node *best = NULL;
    for (uint32_t i = 0; i < s->n_slots; i++) {
        struct sim_node *n = &s->nodes[i];
        if (n->state == SIM_NODE_UP && n->role == RAFT_LEADER &&
            (best == NULL || n->term > best->term)) {
            best = n;
        }
    }
    return best;
}

bool sim_node_at_rest(const struct sim_node *n)
{
    return n->state == SIM_NODE_UP && !n->busy;
}

/* --- Lifecycle ------------------------------------------------------------ */

static void node_config(struct sim *s, struct sim_node *n,
                        struct raft_config *c)
{
    const struct sim_params *p = &s->p;
    raft_config_defaults(c);
    c->id = n->id;
    c->group_id = SIM_GROUP_ID;
    c->seed = sim_rng_next(&s->rng);
    c->hs = n->disk.hs;
    c->applied = n->sm.applied;
    c->storage = memstore_storage(&n->disk);
    c->election_ticks = p->election_ticks;
    c->heartbeat_ticks = p->heartbeat_ticks;
    c->pre_vote = p->pre_vote;
    c->check_quorum = p->check_quorum;
    c->lease_reads = p->lease_reads;
    c->lease_drift_ticks = p->lease_drift_ticks;
    c->quiesce_ticks = p->quiesce_ticks;
    c->panic = sim_core_panic;
    c->panic_ctx = s;
    /* Zero means "keep the default" for the flow-control knobs. */
    if (p->max_msg_bytes) {
        c->max_msg_bytes = p->max_msg_bytes;
    }
    if (p->max_msg_entries) {
        c->max_msg_entries = p->max_msg_entries;
    }
    if (p->max_inflight_msgs) {
        c->max_inflight_msgs = p->max_inflight_msgs;
    }
    if (p->max_inflight_bytes) {
        c->max_inflight_bytes = p->max_inflight_bytes;
    }
    if (p->max_uncommitted_bytes) {
        /* The core requires room for one largest entry. */
        c->max_uncommitted_bytes = p->max_uncommitted_bytes;
        c->max_entry_bytes = SIM_PAYLOAD_MAX;
    }
    if (p->max_apply_bytes) {
        c->max_apply_bytes = p->max_apply_bytes;
    }
    if (p->max_pending_reads) {
        c->max_pending_reads = p->max_pending_reads;
    }
    if (c->max_entry_bytes < SIM_PAYLOAD_MAX) {
        c->max_entry_bytes = SIM_PAYLOAD_MAX;
    }
}

static void node_start(struct sim *s, struct sim_node *n)
{
    struct raft_config c;
    const char *why = NULL;
    node_config(s, n, &c);
    int rc = raft_create(&c, &n->r, &why);
    if (rc != KHO_OK) {
        n->r = NULL;
        sim_fail(s, "api", "n%llu raft_create: %s (%s)",
                 (unsigned long long)n->id, kho_errname(rc), why ? why : "-");
        return;
    }
    n->state = SIM_NODE_UP;
    n->busy = false;
    n->quiet = false;
    n->role = RAFT_FOLLOWER;
    n->term = 0;
    n->commit = 0;
    n->leader_checked_term = 0;
    struct raft_status st;
    raft_status(n->r, &st);
    if (st.term != n->disk.hs.term) {
        sim_fail(s, "term-monotonic",
                 "n%llu restarted with term %llu but its disk says %llu",
                 (unsigned long long)n->id, (unsigned long long)st.term,
                 (unsigned long long)n->disk.hs.term);
    }
    sim_node_observe(s, n);
}

static void phash_init(struct sim_node *n)
{
    n->phash_cap = 1024;
    n->phash = calloc(n->phash_cap, sizeof(*n->phash));
    if (n->phash == NULL) {
        abort();
    }
}

void sim_node_create(struct sim *s, raft_id id, const struct raft_conf *conf)
{
    struct sim_node *n = &s->nodes[id - 1];
    memset(n, 0, sizeof(*n));
    n->id = id;
    if (id > s->n_slots) {
        s->n_slots = (uint32_t)id;
    }
    memstore_init(&n->disk, conf);
    phash_init(n);
    n->disk_conf = *conf;
    SIM_TRACE(s, "n%llu create (%s, %u members)", (unsigned long long)id,
              conf->n ? "initial member" : "joining", conf->n);
    node_start(s, n);
}

static void inbox_clear(struct sim_node *n)
{
    for (uint32_t i = 0; i < n->inbox_n; i++) {
        struct sim_input *in = &n->inbox[(n->inbox_head + i) % SIM_INBOX_MAX];
        sim_msg_free(in->msg);
        in->msg = NULL;
    }
    n->inbox_head = 0;
    n->inbox_n = 0;
}

/* Throws away everything that is not durable: the core, a write still in
 * progress (the whole batch), queued inputs and reads waiting to be served
 * (their clients time out). */
static void node_down(struct sim_node *n)
{
    raft_destroy(n->r);
    n->r = NULL;
    n->busy = false;
    memset(&n->rd, 0, sizeof(n->rd));
    inbox_clear(n);
    n->n_wait_reads = 0;
    n->compact_queued = false;
    n->conf_queued = false;
    n->incarnation++;
}

void sim_node_crash(struct sim *s, struct sim_node *n, const char *why)
{
    if (n->state != SIM_NODE_UP) {
        return;
    }
    SIM_TRACE(s, "n%llu CRASH (%s)%s%s", (unsigned long long)n->id, why,
              n->busy ? " during a disk write: batch lost" : "",
              n->inbox_n ? ", inbox lost" : "");
    node_down(n);
    n->state = SIM_NODE_DOWN;
    n->restart_tick = s->tick + sim_rng_range(&s->rng, 1, s->p.down_ticks_max);
    s->st.crashes++;
}

void sim_node_restart(struct sim *s, struct sim_node *n)
{
    if (n->state != SIM_NODE_DOWN) {
        return;
    }
    /* A fresh copy, so a core that kept pointers into the old store's
     * memory is caught by ASan. */
    struct memstore fresh;
    memstore_copy(&fresh, &n->disk);
    memstore_free(&n->disk);
    n->disk = fresh;
    SIM_TRACE(s,
              "n%llu RESTART hs=(t%llu v%llu c%llu) snap=%llu last=%llu "
              "applied=%llu",
              (unsigned long long)n->id, (unsigned long long)n->disk.hs.term,
              (unsigned long long)n->disk.hs.vote,
              (unsigned long long)n->disk.hs.commit,
              (unsigned long long)n->disk.snap.meta.index,
              (unsigned long long)memstore_last_index(&n->disk),
              (unsigned long long)n->sm.applied);
    node_start(s, n);
}

void sim_node_stop(struct sim *s, struct sim_node *n, const char *why)
{
    if (n->state != SIM_NODE_UP && n->state != SIM_NODE_DOWN) {
        return;
    }
    SIM_TRACE(s, "n%llu STOP (%s)", (unsigned long long)n->id, why);
    if (n->state == SIM_NODE_UP) {
        node_down(n);
    }
    n->state = SIM_NODE_GONE;
}

void sim_node_free(struct sim_node *n)
{
    if (n->r != NULL) {
        raft_destroy(n->r);
        n->r = NULL;
    }
    inbox_clear(n);
    memstore_free(&n->disk);
    free(n->phash);
    n->phash = NULL;
}

/* --- Inputs ----------------------------------------------------------------
 */

void sim_node_observe(struct sim *s, struct sim_node *n)
{
    struct raft_status st;
    raft_status(n->r, &st);
    sim_check_status(s, n, &st);
}

static void feed_ticks(struct sim *s, struct sim_node *n, uint32_t k)
{
    for (uint32_t i = 0; i < k && !sim_failed(s); i++) {
        if (raft_quiet(n->r)) {
            s->st.quiet_ticks++;
            if (s->p.skip_quiet) {
                continue; /* a host may leave a quiet group alone */
            }
        }
        s->st.events++;
        int rc = raft_tick(n->r);
        if (rc != KHO_OK) {
            sim_fail(s, "api", "n%llu raft_tick: %s", (unsigned long long)n->id,
                     kho_errname(rc));
            return;
        }
        sim_node_observe(s, n);
    }
}

/* Takes ownership of m. */
static void feed_msg(struct sim *s, struct sim_node *n, struct raft_msg *m)
{
    s->st.events++;
    int rc = raft_step(n->r, m);
    if (rc != KHO_OK) {
        char buf[160];
        sim_fail(s, "api", "n%llu raft_step(%s): %s", (unsigned long long)n->id,
                 sim_msg_describe(m, buf, sizeof(buf)), kho_errname(rc));
    }
    sim_msg_free(m);
    if (!sim_failed(s)) {
        sim_node_observe(s, n);
    }
}

/* Messages and requests may use all but the last inbox slot; ticks
 * coalesce into the last run, so a node never loses a tick however long its
 * disk stalls (the lease assumption in raft.h needs that). */
static bool inbox_push(struct sim_node *n, const struct sim_input *in)
{
    if (n->inbox_n > 0) {
        struct sim_input *last =
            &n->inbox[(n->inbox_head + n->inbox_n - 1) % SIM_INBOX_MAX];
        if (in->kind == SIM_IN_TICKS && last->kind == SIM_IN_TICKS) {
            last->ticks++;
            return true;
        }
    }
    uint32_t limit =
        in->kind == SIM_IN_TICKS ? SIM_INBOX_MAX : SIM_INBOX_MAX - 1;
    if (n->inbox_n >= limit) {
        return false;
    }
    n->inbox[(n->inbox_head + n->inbox_n) % SIM_INBOX_MAX] = *in;
    n->inbox_n++;
    return true;
}

/* Runs a request at a node at rest (outside a ready cycle). */
static void exec_request(struct sim *s, struct sim_node *n,
                         const struct sim_input *in)
{
    s->st.events++;
    switch (in->kind) {
    case SIM_IN_WRITE:
        sim_client_exec_write(s, n, in->a, in->b);
        break;
    case SIM_IN_READ:
        sim_client_exec_read(s, n, in->a, in->b);
        break;
    case SIM_IN_CONF:
        n->conf_queued = false;
        sim_exec_conf(s, n);
        break;
    case SIM_IN_TRANSFER:
        sim_exec_transfer(s, n);
        break;
    case SIM_IN_COMPACT:
        n->compact_queued = false;
        sim_node_compact(s, n);
        break;
    default:
        break;
    }
}

static void drain_inbox(struct sim *s, struct sim_node *n)
{
    while (n->inbox_n > 0 && !sim_failed(s)) {
        struct sim_input in = n->inbox[n->inbox_head];
        n->inbox[n->inbox_head].msg = NULL;
        n->inbox_head = (n->inbox_head + 1) % SIM_INBOX_MAX;
        n->inbox_n--;
        if (in.kind == SIM_IN_TICKS) {
            feed_ticks(s, n, in.ticks);
        } else if (in.kind == SIM_IN_MSG) {
            feed_msg(s, n, in.msg);
        } else {
            exec_request(s, n, &in);
        }
    }
}

void sim_node_tick(struct sim *s, struct sim_node *n)
{
    if (n->state != SIM_NODE_UP) {
        return;
    }
    if (n->busy) {
        struct sim_input in = {.kind = SIM_IN_TICKS, .ticks = 1};
        inbox_push(n, &in);
        return;
    }
    feed_ticks(s, n, 1);
    sim_node_pump(s, n);
}

void sim_node_receive(struct sim *s, struct sim_node *n, struct raft_msg *m)
{
    if (n->busy) {
        struct sim_input in = {.kind = SIM_IN_MSG, .msg = m};
        if (!inbox_push(n, &in)) {
            s->st.msgs_dropped++;
            SIM_TRACE(s, "n%llu drop(inbox-full)", (unsigned long long)n->id);
            sim_msg_free(m);
        }
        return;
    }
    feed_msg(s, n, m);
    sim_node_pump(s, n);
}

/* A request to a node: served now if the node is at rest, after its disk
 * write otherwise; lost if the node crashes first (the requester times
 * out). */
void sim_node_request(struct sim *s, struct sim_node *n, uint32_t kind,
                      uint64_t a, uint64_t b)
{
    struct sim_input in = {.kind = kind, .a = a, .b = b};
    if (n->state != SIM_NODE_UP) {
        return;
    }
    if (n->busy) {
        if (!inbox_push(n, &in)) {
            n->conf_queued &= kind != SIM_IN_CONF;
            n->compact_queued &= kind != SIM_IN_COMPACT;
        }
        return;
    }
    exec_request(s, n, &in);
    sim_node_pump(s, n);
}

/* --- The ready cycle ------------------------------------------------------ */

static uint64_t disk_latency(struct sim *s, struct sim_node *n)
{
    uint64_t lat = sim_rng_range(&s->rng, s->p.disk_min, s->p.disk_max);
    if (s->tick < n->slow_until_tick) {
        lat = lat * s->p.slow_factor + SIM_TICK_UNITS;
    }
    return lat;
}

static void install_snapshot(struct sim *s, struct sim_node *n,
                             const struct raft_snapshot *snap)
{
    struct sim_sm sm;
    if (!sim_sm_decode(snap->data, snap->len, &sm) ||
        sm.applied != snap->meta.index) {
        sim_fail(s, "snapshot-payload",
                 "n%llu snapshot %llu/%llu carries a bad payload (%zu bytes)",
                 (unsigned long long)n->id,
                 (unsigned long long)snap->meta.index,
                 (unsigned long long)snap->meta.term, snap->len);
        return;
    }
    if (sm.applied < n->sm.applied) {
        sim_fail(s, "state-machine-safety",
                 "n%llu told to install snapshot %llu below its applied "
                 "index %llu (the state machine would go back in time)",
                 (unsigned long long)n->id, (unsigned long long)sm.applied,
                 (unsigned long long)n->sm.applied);
        return;
    }
    sim_check_snapshot(s, n, &sm);
    n->sm = sm;
    s->st.snapshots_installed++;
    SIM_TRACE(s, "n%llu install snapshot %llu/%llu", (unsigned long long)n->id,
              (unsigned long long)snap->meta.index,
              (unsigned long long)snap->meta.term);
}

static void apply_entry(struct sim *s, struct sim_node *n,
                        const struct raft_entry *e)
{
    struct sim_sm *sm = &n->sm;
    if (e->index != sm->applied + 1) {
        sim_fail(s, "apply-order", "n%llu asked to apply %llu after %llu",
                 (unsigned long long)n->id, (unsigned long long)e->index,
                 (unsigned long long)sm->applied);
        return;
    }
    sm->hash = sim_entry_hash(sm->hash, e);
    sm->applied = e->index;
    sm->applied_term = e->term;
    sim_check_applied(s, n, e);
    if (e->type != RAFT_ENTRY_NORMAL) {
        return;
    }
    struct sim_write w;
    if (!sim_write_decode(e->data, e->len, &w)) {
        sim_fail(s, "corrupt-entry",
                 "n%llu applies %llu/%llu: not a write this simulator made",
                 (unsigned long long)n->id, (unsigned long long)e->index,
                 (unsigned long long)e->term);
        return;
    }
    if (w.seq <= sm->last_seq[w.client]) {
        return; /* a retried write that already took effect */
    }
    if (w.seq != sm->last_seq[w.client] + 1) {
        sim_fail(s, "durability",
                 "n%llu applies c%u seq %llu at %llu but seq %llu never took "
                 "effect (an acknowledged write was lost)",
                 (unsigned long long)n->id, w.client, (unsigned long long)w.seq,
                 (unsigned long long)e->index,
                 (unsigned long long)(sm->last_seq[w.client] + 1));
        return;
    }
    sm->last_seq[w.client] = w.seq;
    sm->reg[w.key] = w.value;
    sm->writes++;
}

static void serve_waiting_reads(struct sim *s, struct sim_node *n)
{
    uint32_t keep = 0;
    for (uint32_t i = 0; i < n->n_wait_reads; i++) {
        struct sim_wait_read wr = n->wait_reads[i];
        if (wr.index <= n->sm.applied) {
            sim_client_read_served(s, n, wr.ctx, n->sm.applied);
        } else {
            n->wait_reads[keep++] = wr;
        }
    }
    n->n_wait_reads = keep;
}

static void handle_reads(struct sim *s, struct sim_node *n)
{
    for (size_t i = 0; i < n->rd.n_reads && !sim_failed(s); i++) {
        const struct raft_read_state *rs = &n->rd.reads[i];
        if (rs->status != KHO_OK) {
            sim_client_read_state(s, n, rs);
            continue;
        }
        if (n->n_wait_reads < SIM_WAIT_READS_MAX) {
            n->wait_reads[n->n_wait_reads++] =
                (struct sim_wait_read){.ctx = rs->ctx, .index = rs->index};
        }
    }
    serve_waiting_reads(s, n);
}

static void trace_batch(struct sim *s, const struct sim_node *n)
{
    const struct raft_ready *rd = &n->rd;
    if (s->opts->trace == 0) {
        return;
    }
    if (rd->n_entries > 0 || rd->hs_changed || rd->snapshot != NULL) {
        char ents[64] = "none";
        if (rd->n_entries > 0) {
            snprintf(ents, sizeof(ents), "[%llu..%llu]",
                     (unsigned long long)rd->entries[0].index,
                     (unsigned long long)rd->entries[rd->n_entries - 1].index);
        }
        sim_trace_emit(
            s, "n%llu persist ents=%s hs%s=(t%llu v%llu c%llu)%s",
            (unsigned long long)n->id, ents, rd->hs_changed ? "" : "(same)",
            (unsigned long long)rd->hs.term, (unsigned long long)rd->hs.vote,
            (unsigned long long)rd->hs.commit,
            rd->snapshot ? " +snapshot" : "");
    }
    if (rd->n_committed > 0) {
        sim_trace_emit(
            s, "n%llu apply [%llu..%llu]", (unsigned long long)n->id,
            (unsigned long long)rd->committed[0].index,
            (unsigned long long)rd->committed[rd->n_committed - 1].index);
    }
}

/* Step 2b: snapshot install and log write, one durable transaction. */
static bool persist_batch(struct sim *s, struct sim_node *n)
{
    const struct raft_ready *rd = &n->rd;
    if (rd->snapshot != NULL) {
        install_snapshot(s, n, rd->snapshot);
        if (sim_failed(s)) {
            return false;
        }
    }
    int rc = memstore_persist(&n->disk, rd);
    if (rc != KHO_OK) {
        sim_fail(s, "storage",
                 "n%llu batch does not fit its stored log (%s): first=%llu "
                 "snap=%llu last=%llu",
                 (unsigned long long)n->id, kho_errname(rc),
                 (unsigned long long)(rd->n_entries ? rd->entries[0].index : 0),
                 (unsigned long long)n->disk.snap.meta.index,
                 (unsigned long long)memstore_last_index(&n->disk));
        return false;
    }
    sim_check_persisted(s, n, rd->n_entries ? rd->entries[0].index : 0);
    return !sim_failed(s);
}

static void send_batch(struct sim *s, struct sim_node *n)
{
    for (size_t i = 0; i < n->rd.n_msgs && !sim_failed(s); i++) {
        sim_check_sent(s, n, &n->rd.msgs[i]);
        sim_net_send(s, &n->rd.msgs[i]);
    }
}

/* A crash right after the log write: the batch is durable, its messages
 * may or may not have left, and the state machine has not applied it. */
static bool maybe_crash_mid(struct sim *s, struct sim_node *n)
{
    if (!sim_rng_chance(&s->rng, s->p.crash_mid_ppm)) {
        return false;
    }
    if (sim_rng_chance(&s->rng, SIM_PPM / 2)) {
        send_batch(s, n);
    }
    s->st.crashes_mid++;
    sim_node_crash(s, n, "after persist, before apply");
    return true;
}

static void complete_batch(struct sim *s, struct sim_node *n)
{
    trace_batch(s, n);
    if (!persist_batch(s, n) || maybe_crash_mid(s, n)) {
        return;
    }
    send_batch(s, n);
    for (size_t i = 0; i < n->rd.n_committed && !sim_failed(s); i++) {
        apply_entry(s, n, &n->rd.committed[i]);
    }
    handle_reads(s, n);
    if (sim_failed(s)) {
        return;
    }
    raft_advance(n->r);
    n->busy = false;
    memset(&n->rd, 0, sizeof(n->rd));
    sim_check_at_rest(s, n);
}

void sim_node_disk_done(struct sim *s, struct sim_node *n)
{
    s->st.events++;
    complete_batch(s, n);
    sim_node_pump(s, n);
}

/* Runs ready cycles until the node has nothing to do or waits for its
 * disk. Zero-latency writes complete inline (a loop, not recursion). */
void sim_node_pump(struct sim *s, struct sim_node *n)
{
    for (;;) {
        if (sim_failed(s) || n->state != SIM_NODE_UP || n->busy) {
            return;
        }
        drain_inbox(s, n);
        if (sim_failed(s) || !raft_has_ready(n->r)) {
            return;
        }
        int rc = raft_ready(n->r, &n->rd);
        if (rc != KHO_OK) {
            sim_fail(s, "api", "n%llu raft_ready: %s",
                     (unsigned long long)n->id, kho_errname(rc));
            return;
        }
        n->busy = true;
        n->busy_since = s->now;
        uint64_t lat = disk_latency(s, n);
        if (lat > 0) {
            struct sim_event ev = {.time = s->now + lat,
                                   .kind = SIM_EV_DISK,
                                   .node = (uint32_t)(n->id - 1),
                                   .incarnation = n->incarnation};
            sim_heap_push(s, &ev);
            return;
        }
        complete_batch(s, n);
    }
}

/* Compacts at the applied index with the state machine as the payload and
 * the configuration raft_applied_conf() reports, as raft.h asks. */
void sim_node_compact(struct sim *s, struct sim_node *n)
{
    if (!sim_node_at_rest(n) || n->sm.applied <= n->disk.snap.meta.index) {
        return;
    }
    struct raft_status st;
    raft_status(n->r, &st);
    if (st.applied != n->sm.applied) {
        sim_fail(s, "applied-mismatch",
                 "n%llu core says applied %llu, state machine %llu",
                 (unsigned long long)n->id, (unsigned long long)st.applied,
                 (unsigned long long)n->sm.applied);
        return;
    }
    struct raft_conf conf;
    raft_applied_conf(n->r, &conf);
    uint8_t payload[SIM_SM_PAYLOAD_BYTES];
    size_t len = sim_sm_encode(&n->sm, payload, sizeof(payload));
    int rc = memstore_compact(&n->disk, n->sm.applied, &conf, payload, len);
    if (rc != KHO_OK) {
        sim_fail(s, "storage", "n%llu compact at %llu: %s",
                 (unsigned long long)n->id, (unsigned long long)n->sm.applied,
                 kho_errname(rc));
        return;
    }
    s->st.compactions++;
    SIM_TRACE(s, "n%llu compact at %llu (conf %u members)",
              (unsigned long long)n->id, (unsigned long long)n->sm.applied,
              conf.n);
}

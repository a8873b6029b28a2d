/*
 * client.c - clients that write and read through whichever node they
 * believe leads.
 *
 * Each client has at most one write and one read in progress. A request is
 * queued at a node like a message (a node busy writing to disk serves it
 * afterwards). A write is (client, seq, key, value); it is acknowledged
 * only once the committed history holds it at the index and term the
 * leader returned, and retried (same seq, same bytes) when that entry was
 * overwritten, the node was not the leader, or nothing was heard in time:
 * the outcome is then unknown, and the state machine's per-client sequence
 * table makes the retry exactly-once.
 *
 * Linearizability, modelling the state as the applied log prefix: `floor`
 * is the highest index any acknowledged write or completed read reached.
 * A read remembers the floor when the client sends it and must be served
 * at an applied index at least that high; then it raises the floor.
 */
#include "sim.h"

#include <string.h>

static unsigned long long ull(uint64_t v)
{
    return (unsigned long long)v;
}

void sim_clients_init(struct sim *s)
{
    for (uint32_t i = 0; i < s->p.n_clients; i++) {
        memset(&s->clients[i], 0, sizeof(s->clients[i]));
        s->clients[i].id = i;
    }
}

/* Waiting this long for an answer means "outcome unknown": retry. Slow
 * disks stretch every round trip, so they stretch the wait too. */
static uint64_t op_timeout_ticks(const struct sim *s)
{
    return 4u * s->p.election_ticks +
           (4u * s->p.disk_max * s->p.slow_factor) / SIM_TICK_UNITS;
}

static struct sim_node *random_up_node(struct sim *s)
{
    uint32_t up[SIM_NODES_MAX], k = 0;
    for (uint32_t i = 0; i < s->n_slots; i++) {
        if (s->nodes[i].state == SIM_NODE_UP) {
            up[k++] = i;
        }
    }
    if (k == 0) {
        return NULL;
    }
    return &s->nodes[up[sim_rng_below(&s->rng, k)]];
}

static struct sim_node *pick_target(struct sim *s, struct sim_client *c)
{
    struct sim_node *n = sim_node_by_id(s, c->hint);
    if (n == NULL || n->state != SIM_NODE_UP) {
        n = random_up_node(s);
        c->hint = n ? n->id : 0;
    }
    return n;
}

/* After KHO_ENOTLEADER: follow the node's hint, or guess. */
static void follow_hint(struct sim *s, struct sim_client *c, struct sim_node *n)
{
    struct raft_status st;
    raft_status(n->r, &st);
    c->hint = (st.leader != 0 && st.leader != n->id) ? st.leader : 0;
    for (int i = 0; i < 3 && (c->hint == 0 || c->hint == n->id); i++) {
        struct sim_node *g = random_up_node(s);
        c->hint = g ? g->id : 0;
    }
}

static struct sim_client *client_at(struct sim *s, uint64_t id)
{
    return id < s->p.n_clients ? &s->clients[id] : NULL;
}

/* --- Writes -----------------------------------------------------------------
 */

static void write_start(struct sim *s, struct sim_client *c, bool final)
{
    c->w_state = SIM_OP_WAIT;
    c->w_final = final;
    c->w.client = c->id;
    c->w.seq = c->acked_seq + 1;
    c->w.key = (uint32_t)sim_rng_below(&s->rng, SIM_REGS);
    c->w.value = ((uint64_t)(c->id + 1) << 48) | c->w.seq;
    c->w_len =
        (uint32_t)sim_rng_range(&s->rng, SIM_WRITE_HDR_BYTES, s->p.payload_max);
    c->w_pad_seed = sim_rng_next(&s->rng);
    c->w_retry_tick = s->tick;
}

static void write_send(struct sim *s, struct sim_client *c)
{
    struct sim_node *n = pick_target(s, c);
    if (n == NULL) {
        c->w_retry_tick = s->tick + 1;
        return;
    }
    c->w_state = SIM_OP_SENT;
    c->w_attempt++;
    c->w_node = n->id;
    c->w_deadline_tick = s->tick + op_timeout_ticks(s);
    sim_node_request(s, n, SIM_IN_WRITE, c->id, c->w_attempt);
}

/* The node handles the write request (at rest, outside a ready cycle). */
void sim_client_exec_write(struct sim *s, struct sim_node *n, uint64_t client,
                           uint64_t attempt)
{
    struct sim_client *c = client_at(s, client);
    if (c == NULL || c->w_state != SIM_OP_SENT || c->w_attempt != attempt) {
        return; /* the client gave up on this attempt */
    }
    uint8_t buf[SIM_PAYLOAD_MAX];
    size_t len = sim_write_encode(&c->w, buf, c->w_len, c->w_pad_seed);
    uint64_t index = 0, term = 0;
    int rc = raft_propose(n->r, buf, len, &index, &term);
    sim_node_observe(s, n);
    if (rc == KHO_OK) {
        c->w_state = SIM_OP_PENDING;
        c->w_index = index;
        c->w_term = term;
        SIM_TRACE(s, "c%u write seq=%llu -> n%llu at %llu/%llu", c->id,
                  ull(c->w.seq), ull(n->id), ull(index), ull(term));
        return;
    }
    c->w_state = SIM_OP_WAIT;
    if (rc == KHO_ENOTLEADER) {
        follow_hint(s, c, n);
        c->w_retry_tick = s->tick + 1;
        SIM_TRACE(s, "c%u write seq=%llu -> n%llu: not leader, try n%llu",
                  c->id, ull(c->w.seq), ull(n->id), ull(c->hint));
    } else if (rc == KHO_EBUSY) {
        c->w_retry_tick = s->tick + sim_rng_range(&s->rng, 1, 3);
        SIM_TRACE(s, "c%u write seq=%llu -> n%llu: busy", c->id, ull(c->w.seq),
                  ull(n->id));
    } else {
        sim_fail(s, "api", "n%llu raft_propose(%zu bytes): %s", ull(n->id), len,
                 kho_errname(rc));
    }
}

static void write_ack(struct sim *s, struct sim_client *c)
{
    SIM_TRACE(s, "c%u ACK write seq=%llu at %llu/%llu", c->id, ull(c->w.seq),
              ull(c->w_index), ull(c->w_term));
    c->acked_seq = c->w.seq;
    c->w_state = SIM_OP_IDLE;
    if (c->w_index > s->chk.floor) {
        s->chk.floor = c->w_index;
    }
    s->st.writes_acked++;
    if (c->w_final) {
        c->final_write_done = true;
    }
}

/* The committed history decides the outcome once it reaches the index;
 * silence until the deadline means the outcome is unknown. */
static void write_resolve(struct sim *s, struct sim_client *c)
{
    uint64_t term = 0;
    if (c->w_state == SIM_OP_PENDING &&
        sim_check_canon_term(s, c->w_index, &term)) {
        if (term == c->w_term) {
            write_ack(s, c);
            return;
        }
        SIM_TRACE(s,
                  "c%u write seq=%llu lost at %llu/%llu (term %llu "
                  "committed there): retry",
                  c->id, ull(c->w.seq), ull(c->w_index), ull(c->w_term),
                  ull(term));
        c->w_state = SIM_OP_WAIT;
        c->w_retry_tick = s->tick;
        return;
    }
    if (s->tick >= c->w_deadline_tick) {
        SIM_TRACE(s, "c%u write seq=%llu timed out (outcome unknown): retry",
                  c->id, ull(c->w.seq));
        c->w_state = SIM_OP_WAIT;
        c->w_retry_tick = s->tick;
        c->hint = 0;
    }
}

/* --- Reads ------------------------------------------------------------------
 */

static void read_send(struct sim *s, struct sim_client *c)
{
    struct sim_node *n = pick_target(s, c);
    if (n == NULL) {
        c->r_retry_tick = s->tick + 1;
        return;
    }
    c->r_state = SIM_OP_SENT;
    c->r_attempt++;
    /* Linearizability: the read must see everything completed before it
     * was invoked, which is now (it may wait in a busy node's inbox). */
    c->r_floor = s->chk.floor;
    c->r_node = n->id;
    c->r_deadline_tick = s->tick + op_timeout_ticks(s);
    sim_node_request(s, n, SIM_IN_READ, c->id, c->r_attempt);
}

void sim_client_exec_read(struct sim *s, struct sim_node *n, uint64_t client,
                          uint64_t attempt)
{
    struct sim_client *c = client_at(s, client);
    if (c == NULL || c->r_state != SIM_OP_SENT || c->r_attempt != attempt) {
        return;
    }
    c->r_ctx = ((uint64_t)(c->id + 1) << 48) | c->r_attempt;
    int rc = raft_read_index(n->r, c->r_ctx);
    sim_node_observe(s, n);
    if (rc == KHO_OK) {
        c->r_state = SIM_OP_PENDING;
        SIM_TRACE(s, "c%u read ctx=%llx -> n%llu floor=%llu", c->id,
                  ull(c->r_ctx), ull(n->id), ull(c->r_floor));
        return;
    }
    c->r_state = SIM_OP_WAIT;
    if (rc == KHO_ENOTLEADER) {
        follow_hint(s, c, n);
        c->r_retry_tick = s->tick + 1;
        SIM_TRACE(s, "c%u read -> n%llu: not leader, try n%llu", c->id,
                  ull(n->id), ull(c->hint));
    } else if (rc == KHO_EBUSY) {
        c->r_retry_tick = s->tick + sim_rng_range(&s->rng, 1, 3);
        SIM_TRACE(s, "c%u read -> n%llu: busy", c->id, ull(n->id));
    } else {
        sim_fail(s, "api", "n%llu raft_read_index: %s", ull(n->id),
                 kho_errname(rc));
    }
}

static struct sim_client *client_of_ctx(struct sim *s, uint64_t ctx)
{
    struct sim_client *c = client_at(s, (ctx >> 48) - 1);
    if (c == NULL || c->r_state != SIM_OP_PENDING || c->r_ctx != ctx) {
        return NULL; /* an answer to a read the client gave up on */
    }
    return c;
}

/* Called between raft_ready() and raft_advance(): no raft_* calls here. */
void sim_client_read_state(struct sim *s, struct sim_node *n,
                           const struct raft_read_state *rs)
{
    if (rs->status != KHO_ENOTLEADER) {
        sim_fail(s, "api", "n%llu read state ctx=%llx with status %s",
                 ull(n->id), ull(rs->ctx), kho_errname(rs->status));
        return;
    }
    struct sim_client *c = client_of_ctx(s, rs->ctx);
    if (c == NULL) {
        return;
    }
    SIM_TRACE(s, "c%u read ctx=%llx refused by n%llu: retry", c->id,
              ull(rs->ctx), ull(n->id));
    c->r_state = SIM_OP_WAIT;
    c->r_retry_tick = s->tick + 1;
    c->hint = 0;
}

void sim_client_read_served(struct sim *s, struct sim_node *n, uint64_t ctx,
                            uint64_t applied)
{
    struct sim_client *c = client_of_ctx(s, ctx);
    if (c == NULL) {
        return;
    }
    SIM_TRACE(s,
              "c%u READ done ctx=%llx by n%llu at applied %llu "
              "(floor at start %llu)",
              c->id, ull(ctx), ull(n->id), ull(applied), ull(c->r_floor));
    sim_check_read(s, c->id, c->r_floor, applied);
    c->r_state = SIM_OP_IDLE;
    s->st.reads_done++;
    if (c->r_final) {
        c->final_read_done = true;
    }
}

/* --- Per tick
 * ------------------------------------------------------------------ */

static void client_writes(struct sim *s, struct sim_client *c)
{
    if (c->w_state == SIM_OP_SENT || c->w_state == SIM_OP_PENDING) {
        write_resolve(s, c);
    }
    if (c->w_state == SIM_OP_IDLE) {
        if (s->healed) {
            if (!c->final_write_done) {
                write_start(s, c, true);
            }
        } else if (!sim_idle(s) && sim_rng_chance(&s->rng, s->p.write_ppm)) {
            write_start(s, c, false);
        }
    }
    if (c->w_state == SIM_OP_WAIT && s->tick >= c->w_retry_tick) {
        write_send(s, c);
    }
}

static void client_reads(struct sim *s, struct sim_client *c)
{
    if ((c->r_state == SIM_OP_SENT || c->r_state == SIM_OP_PENDING) &&
        s->tick >= c->r_deadline_tick) {
        SIM_TRACE(s, "c%u read attempt %llu timed out: retry", c->id,
                  ull(c->r_attempt));
        c->r_state = SIM_OP_WAIT;
        c->r_retry_tick = s->tick;
        c->hint = 0;
    }
    if (c->r_state == SIM_OP_IDLE) {
        bool start =
            s->healed ? c->final_write_done && !c->final_read_done
                      : !sim_idle(s) && sim_rng_chance(&s->rng, s->p.read_ppm);
        if (start) {
            c->r_state = SIM_OP_WAIT;
            c->r_final = s->healed;
            c->r_retry_tick = s->tick;
        }
    }
    if (c->r_state == SIM_OP_WAIT && s->tick >= c->r_retry_tick) {
        read_send(s, c);
    }
}

void sim_clients_tick(struct sim *s)
{
    for (uint32_t i = 0; i < s->p.n_clients && !sim_failed(s); i++) {
        client_writes(s, &s->clients[i]);
        if (!sim_failed(s)) {
            client_reads(s, &s->clients[i]);
        }
    }
}

bool sim_clients_final_done(const struct sim *s)
{
    for (uint32_t i = 0; i < s->p.n_clients; i++) {
        const struct sim_client *c = &s->clients[i];
        if (!c->final_write_done || !c->final_read_done) {
            return false;
        }
    }
    return true;
}

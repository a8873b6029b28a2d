/*
 * run.c - one seed: pick the seed's parameters, run the fault phase, heal,
 * and require progress in the liveness phase.
 *
 * Each tick, in a fixed order: faults (network, crashes, slow disks),
 * restarts and stops, failure-detector reports (seeds with quiescence), one
 * raft tick per running node, client actions, membership changes and
 * leadership transfers, compactions, and then every network delivery and
 * disk completion due before the next tick, in time order. Nothing here
 * reads a clock; everything random comes from the seed's one PRNG.
 */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned long long ull(uint64_t v)
{
    return (unsigned long long)v;
}

/* --- Parameters ----------------------------------------------------------- */

static uint32_t by_level(uint32_t level, uint32_t calm, uint32_t mild,
                         uint32_t harsh, uint32_t brutal)
{
    const uint32_t v[4] = {calm, mild, harsh, brutal};
    return v[level];
}

static uint32_t rnd(struct sim_rng *r, uint32_t lo, uint32_t hi)
{
    return (uint32_t)sim_rng_range(r, lo, hi);
}

static void pick_raft(struct sim_rng *r, struct sim_params *p)
{
    p->election_ticks = rnd(r, 8, 20);
    p->heartbeat_ticks = rnd(r, 1, p->election_ticks / 4);
    p->pre_vote = sim_rng_chance(r, SIM_PPM / 2);
    p->check_quorum = sim_rng_chance(r, SIM_PPM / 2);
    p->lease_reads = p->check_quorum && sim_rng_chance(r, SIM_PPM / 3);
    p->lease_drift_ticks = rnd(r, 1, 3);
    p->payload_max = sim_rng_chance(r, SIM_PPM / 5)
                         ? rnd(r, 256, SIM_PAYLOAD_MAX)
                         : rnd(r, 32, 200);
    /* Tight flow control in some seeds: tiny messages, one or two appends
     * in flight, chunked applies, few pending reads. */
    if (sim_rng_chance(r, SIM_PPM / 2)) {
        p->max_msg_bytes = rnd(r, 32, 512);
        p->max_msg_entries = rnd(r, 1, 4);
        p->max_inflight_msgs = rnd(r, 1, 4);
        p->max_inflight_bytes = rnd(r, 256, 8192);
        p->max_apply_bytes = rnd(r, 32, 1024);
        p->max_pending_reads = rnd(r, 1, 8);
        /* Must hold a few payloads, or a leader refuses writes forever. */
        p->max_uncommitted_bytes = 4u * p->payload_max + rnd(r, 0, 16384);
        if (p->max_uncommitted_bytes < SIM_PAYLOAD_MAX) {
            p->max_uncommitted_bytes = SIM_PAYLOAD_MAX;
        }
    }
}

static void pick_faults(struct sim_rng *r, struct sim_params *p)
{
    uint32_t l = p->level, e = p->election_ticks;
    p->delay_min = rnd(r, 1, 20);
    p->delay_max = p->delay_min + rnd(r, 5, by_level(l, 60, 100, 200, 400));
    p->spike_ppm = rnd(r, 0, by_level(l, 0, 2000, 10000, 30000));
    p->loss_ppm = rnd(r, 0, by_level(l, 0, 10000, 50000, 200000));
    p->dup_ppm = rnd(r, 0, by_level(l, 0, 5000, 20000, 50000));
    p->partition_ppm = rnd(r, 0, by_level(l, 300, 1500, 4000, 10000));
    p->partition_ticks_max = e * by_level(l, 2, 5, 10, 20);
    p->stall_ppm = rnd(r, 0, by_level(l, 0, 500, 2000, 8000));
    p->stall_ticks_max = e * by_level(l, 1, 2, 3, 4);
    p->crash_ppm = rnd(r, 0, by_level(l, 200, 800, 2500, 6000));
    p->crash_all_ppm = rnd(r, 0, by_level(l, 0, 50, 200, 500));
    p->crash_mid_ppm = rnd(r, 0, by_level(l, 0, 200, 1000, 3000));
    p->down_ticks_max = e * by_level(l, 2, 5, 10, 20);
    bool sync_disk = l == 0 && sim_rng_chance(r, SIM_PPM / 2);
    p->disk_min = 0;
    p->disk_max = sync_disk ? 0 : rnd(r, 0, by_level(l, 50, 100, 200, 300));
    p->slow_disk_ppm = rnd(r, 0, by_level(l, 0, 500, 2000, 5000));
    p->slow_factor = rnd(r, 3, 20);
    /* Churn: leaders lose their majority every few election timeouts, by
     * short partitions and quick crash-restarts. Logs then diverge on
     * minorities over and over, which is what the Figure 8 case (and
     * most log-repair bugs) needs. */
    p->churn = l > 0 && sim_rng_chance(r, SIM_PPM / 2);
    if (p->churn) {
        p->partition_ppm = rnd(r, 30000, 150000);
        p->partition_ticks_max = rnd(r, e, 3 * e);
        p->crash_ppm = rnd(r, 2000, 10000);
        p->down_ticks_max = rnd(r, e, 3 * e);
    }
}

static void pick_ops(struct sim_rng *r, struct sim_params *p)
{
    p->member_ppm =
        sim_rng_chance(r, SIM_PPM * 3 / 4) ? rnd(r, 1000, 15000) : 0;
    p->transfer_ppm = sim_rng_chance(r, SIM_PPM / 2) ? rnd(r, 500, 5000) : 0;
    p->compact_ppm = rnd(r, 1000, 20000);
    p->compact_log_max =
        sim_rng_chance(r, SIM_PPM / 3) ? rnd(r, 5, 50) : rnd(r, 100, 1000);
    p->write_ppm = rnd(r, 50000, 500000);
    p->read_ppm = rnd(r, 20000, 300000);
}

void sim_params_pick(struct sim_rng *r, struct sim_params *p)
{
    memset(p, 0, sizeof(*p));
    static const uint32_t levels[10] = {0, 0, 1, 1, 1, 2, 2, 2, 3, 3};
    p->level = levels[sim_rng_below(r, 10)];
    static const uint32_t sizes[3] = {3, 5, 7};
    p->n_nodes = sizes[sim_rng_below(r, 3)];
    p->n_clients = rnd(r, 1, SIM_CLIENTS_MAX);
    p->fault_ticks = rnd(r, 2000, 6000);
    pick_raft(r, p);
    pick_faults(r, p);
    pick_ops(r, p);
}

/* Seeds of tests/sim/regression-seeds that were found before quiescence
 * existed: they must replay the schedule that caught their bug, so they
 * run without it. */
static const uint64_t pre_quiesce_seeds[] = {5, 35, 1719, 2206, 2698};

/* Quiescence, in half the seeds, from a PRNG stream of its own: a seed that
 * draws it off runs exactly as it did before quiescence existed. Idle
 * spells let groups go quiet; a failure detector reports unreachable peers
 * after a delay, and sometimes reports a reachable one. */
void sim_params_pick_quiesce(uint64_t seed, struct sim_params *p)
{
    for (size_t i = 0; i < sizeof(pre_quiesce_seeds) / sizeof(uint64_t); i++) {
        if (seed == pre_quiesce_seeds[i]) {
            return;
        }
    }
    struct sim_rng r;
    sim_rng_seed(&r, seed ^ UINT64_C(0x9a1e5ce9a1e5ce00));
    if (!sim_rng_chance(&r, SIM_PPM / 2)) {
        return;
    }
    uint32_t e = p->election_ticks;
    p->quiesce_ticks =
        sim_rng_chance(&r, SIM_PPM / 4) ? rnd(&r, 1, 3) : rnd(&r, 1, 3 * e);
    p->skip_quiet = sim_rng_chance(&r, SIM_PPM / 2);
    p->detect_ticks = rnd(&r, 1, 2 * e);
    p->report_ticks = sim_rng_chance(&r, SIM_PPM / 2) ? 1 : rnd(&r, 2, 2 * e);
    p->false_down_ppm =
        sim_rng_chance(&r, SIM_PPM / 3) ? rnd(&r, 100, 5000) : 0;
    p->idle_ppm = rnd(&r, 2000, 20000);
    p->idle_ticks_max = rnd(&r, 3 * e + p->quiesce_ticks, 30 * e);
    /* Leases and quiet spells interact (a quiet leader's clock may stand
     * still), so with check-quorum half of these seeds use leases. */
    if (p->check_quorum && sim_rng_chance(&r, SIM_PPM / 2)) {
        p->lease_reads = true;
    }
}

void sim_print_params(const struct sim_params *p, uint64_t seed)
{
    static const char *const names[4] = {"calm", "mild", "harsh", "brutal"};
    printf("seed %llu: %s, %u nodes, %u clients, %llu fault ticks, "
           "election %u heartbeat %u, pre_vote %d check_quorum %d lease %d, "
           "msg_bytes %u inflight %u, delay %u-%u loss %u dup %u ppm, "
           "disk 0-%u, crash %u ppm%s",
           ull(seed), names[p->level], p->n_nodes, p->n_clients,
           ull(p->fault_ticks), p->election_ticks, p->heartbeat_ticks,
           p->pre_vote, p->check_quorum, p->lease_reads, p->max_msg_bytes,
           p->max_inflight_msgs, p->delay_min, p->delay_max, p->loss_ppm,
           p->dup_ppm, p->disk_max, p->crash_ppm, p->churn ? ", churn" : "");
    if (p->quiesce_ticks != 0) {
        printf(", quiesce %u%s detect %u every %u false-down %u ppm",
               p->quiesce_ticks, p->skip_quiet ? " (quiet not ticked)" : "",
               p->detect_ticks, p->report_ticks, p->false_down_ppm);
    }
    printf("\n");
}

/* --- Node faults ------------------------------------------------------------
 */

static struct sim_node *random_node(struct sim *s, enum sim_node_state state)
{
    uint32_t pick[SIM_NODES_MAX], k = 0;
    for (uint32_t i = 0; i < s->n_slots; i++) {
        if (s->nodes[i].state == state) {
            pick[k++] = i;
        }
    }
    return k ? &s->nodes[pick[sim_rng_below(&s->rng, k)]] : NULL;
}

static void node_faults(struct sim *s)
{
    if (sim_rng_chance(&s->rng, s->p.crash_ppm)) {
        /* Leaders half the time: crashing a leader with uncommitted
         * entries is what makes logs diverge (Figure 8 needs it). */
        bool leader = sim_rng_chance(&s->rng, SIM_PPM / 2);
        struct sim_node *n = leader ? sim_find_leader(s) : NULL;
        if (n == NULL) {
            n = random_node(s, SIM_NODE_UP);
        }
        if (n != NULL) {
            sim_node_crash(s, n, leader ? "leader" : "random");
        }
    }
    if (sim_rng_chance(&s->rng, s->p.crash_all_ppm)) {
        for (uint32_t i = 0; i < s->n_slots; i++) {
            sim_node_crash(s, &s->nodes[i], "all nodes");
        }
    }
    if (sim_rng_chance(&s->rng, s->p.slow_disk_ppm)) {
        struct sim_node *n = random_node(s, SIM_NODE_UP);
        if (n != NULL) {
            uint32_t e = s->p.election_ticks;
            n->slow_until_tick = s->tick + sim_rng_range(&s->rng, e, 10 * e);
            SIM_TRACE(s, "n%llu disk slow until tick %llu", ull(n->id),
                      ull(n->slow_until_tick));
        }
    }
}

/* Restarts crashed nodes that are due, and stops removed nodes once they
 * applied their removal (or had time to). */
static void lifecycle(struct sim *s)
{
    for (uint32_t i = 0; i < s->n_slots && !sim_failed(s); i++) {
        struct sim_node *n = &s->nodes[i];
        if (n->removed && n->state == SIM_NODE_DOWN) {
            sim_node_stop(s, n, "removed while down");
        } else if (n->removed && n->state == SIM_NODE_UP &&
                   (n->sm.applied >= n->removed_index ||
                    s->tick >= n->removed_tick + 10u * s->p.election_ticks ||
                    s->healed)) {
            sim_node_stop(s, n, "removed");
        } else if (n->state == SIM_NODE_DOWN &&
                   (s->tick >= n->restart_tick || s->healed)) {
            sim_node_restart(s, n);
        }
    }
}

/* --- Membership, transfers, compaction ------------------------------------ */

static const char *conf_op_name(uint32_t op)
{
    switch (op) {
    case RAFT_CONF_ADD_LEARNER:
        return "ADD_LEARNER";
    case RAFT_CONF_PROMOTE:
        return "PROMOTE";
    case RAFT_CONF_ADD_VOTER:
        return "ADD_VOTER";
    case RAFT_CONF_REMOVE:
        return "REMOVE";
    default:
        return "?";
    }
}

static raft_id random_member(struct sim *s, const struct raft_conf *c,
                             uint32_t role)
{
    raft_id ids[RAFT_MEMBERS_MAX];
    uint32_t k = 0;
    for (uint32_t i = 0; i < c->n; i++) {
        if (c->members[i].role == role) {
            ids[k++] = c->members[i].id;
        }
    }
    return k ? ids[sim_rng_below(&s->rng, k)] : 0;
}

/* Chooses a change that is valid for conf; 0 when none fits. */
static uint32_t choose_conf_op(struct sim *s, const struct sim_node *leader,
                               const struct raft_conf *conf, raft_id *id)
{
    uint32_t voters = raft_conf_voters(conf);
    raft_id learner = random_member(s, conf, RAFT_LEARNER);
    if (learner != 0 && sim_rng_chance(&s->rng, SIM_PPM * 7 / 10)) {
        *id = learner;
        return sim_rng_chance(&s->rng, SIM_PPM * 4 / 5) ? RAFT_CONF_PROMOTE
                                                        : RAFT_CONF_REMOVE;
    }
    bool room = conf->n < SIM_CONF_MEMBERS_MAX && s->n_slots < SIM_NODES_MAX;
    if (room && (voters <= 2 || sim_rng_chance(&s->rng, SIM_PPM / 2))) {
        *id = s->n_slots + 1;
        return sim_rng_chance(&s->rng, SIM_PPM / 10) ? RAFT_CONF_ADD_VOTER
                                                     : RAFT_CONF_ADD_LEARNER;
    }
    /* Removing down to one voter is allowed but rare: it is the
     * "remove from a two-node cluster" case. */
    if (voters < 2 || (voters == 2 && !sim_rng_chance(&s->rng, SIM_PPM / 10))) {
        return 0;
    }
    *id = sim_rng_chance(&s->rng, SIM_PPM / 4)
              ? leader->id
              : random_member(s, conf, RAFT_VOTER);
    return RAFT_CONF_REMOVE;
}

/* Runs at the leader when it is at rest. The change is chosen now, from
 * the configuration in force at this leader. */
void sim_exec_conf(struct sim *s, struct sim_node *l)
{
    if (s->conf_pending || s->healed || l->role != RAFT_LEADER) {
        return;
    }
    struct raft_status st;
    raft_status(l->r, &st);
    raft_id id = 0;
    uint32_t op = choose_conf_op(s, l, &st.conf, &id);
    if (op == 0) {
        return;
    }
    uint64_t index = 0, term = 0;
    int rc = raft_propose_conf(l->r, (enum raft_conf_op)op, id, &index, &term);
    sim_node_observe(s, l);
    SIM_TRACE(s, "n%llu propose_conf %s n%llu: %s %llu/%llu", ull(l->id),
              conf_op_name(op), ull(id), kho_errname(rc), ull(index),
              ull(term));
    if (rc == KHO_OK) {
        s->conf_pending = true;
        s->conf_op = op;
        s->conf_target = id;
        s->conf_index = index;
        s->conf_term = term;
        if (op == RAFT_CONF_ADD_LEARNER || op == RAFT_CONF_ADD_VOTER) {
            struct raft_conf empty = {.n = 0};
            sim_node_create(s, id, &empty);
        }
    } else if (rc != KHO_EBUSY && rc != KHO_ENOTLEADER) {
        sim_fail(s, "api",
                 "n%llu raft_propose_conf(%s, n%llu) with %u "
                 "members, %u voters: %s",
                 ull(l->id), conf_op_name(op), ull(id), st.conf.n,
                 raft_conf_voters(&st.conf), kho_errname(rc));
    }
}

static void member_change(struct sim *s)
{
    struct sim_node *l = sim_find_leader(s);
    if (s->conf_pending || l == NULL || l->conf_queued || sim_idle(s)) {
        return;
    }
    l->conf_queued = true;
    sim_node_request(s, l, SIM_IN_CONF, 0, 0);
}

/* A pending change is decided once the committed history reaches it. */
static void member_resolve(struct sim *s)
{
    uint64_t term = 0;
    if (!s->conf_pending || !sim_check_canon_term(s, s->conf_index, &term)) {
        return;
    }
    s->conf_pending = false;
    struct sim_node *t = sim_node_by_id(s, s->conf_target);
    bool add = s->conf_op == RAFT_CONF_ADD_LEARNER ||
               s->conf_op == RAFT_CONF_ADD_VOTER;
    if (term != s->conf_term) {
        SIM_TRACE(s, "conf %s n%llu lost at %llu/%llu",
                  conf_op_name(s->conf_op), ull(s->conf_target),
                  ull(s->conf_index), ull(s->conf_term));
        if (add && t != NULL) {
            sim_node_stop(s, t, "its addition was lost");
        }
        return;
    }
    s->st.conf_changes++;
    SIM_TRACE(s, "conf %s n%llu committed at %llu/%llu",
              conf_op_name(s->conf_op), ull(s->conf_target), ull(s->conf_index),
              ull(s->conf_term));
    if (s->conf_op == RAFT_CONF_REMOVE && t != NULL) {
        t->removed = true;
        t->removed_index = s->conf_index;
        t->removed_tick = s->tick;
    }
}

void sim_exec_transfer(struct sim *s, struct sim_node *l)
{
    if (s->healed || l->role != RAFT_LEADER) {
        return;
    }
    struct raft_status st;
    raft_status(l->r, &st);
    raft_id to = random_member(s, &st.conf, RAFT_VOTER);
    if (to == 0 || to == l->id) {
        return;
    }
    int rc = raft_transfer_leader(l->r, to);
    sim_node_observe(s, l);
    SIM_TRACE(s, "n%llu transfer leadership to n%llu: %s", ull(l->id), ull(to),
              kho_errname(rc));
    if (rc == KHO_OK) {
        s->st.transfers++;
    } else if (rc != KHO_ENOTLEADER) {
        sim_fail(s, "api", "n%llu raft_transfer_leader(n%llu): %s", ull(l->id),
                 ull(to), kho_errname(rc));
    }
}

static void transfer(struct sim *s)
{
    struct sim_node *l = sim_find_leader(s);
    if (l != NULL) {
        sim_node_request(s, l, SIM_IN_TRANSFER, 0, 0);
    }
}

static void compactions(struct sim *s)
{
    for (uint32_t i = 0; i < s->n_slots && !sim_failed(s); i++) {
        struct sim_node *n = &s->nodes[i];
        bool chance = sim_rng_chance(&s->rng, s->p.compact_ppm);
        if (n->state != SIM_NODE_UP || n->compact_queued) {
            continue;
        }
        uint64_t len = memstore_last_index(&n->disk) - n->disk.snap.meta.index;
        if (chance || len > s->p.compact_log_max) {
            n->compact_queued = true;
            sim_node_request(s, n, SIM_IN_COMPACT, 0, 0);
        }
    }
}

/* --- Quiescence: idle spells and the failure detector ---------------------
 */

/* Whether clients and membership changes pause (an idle spell). */
bool sim_idle(const struct sim *s)
{
    return s->tick < s->idle_until_tick && !s->healed;
}

static void idle_spells(struct sim *s)
{
    if (s->healed || sim_idle(s) || !sim_rng_chance(&s->rng, s->p.idle_ppm)) {
        return;
    }
    s->idle_until_tick =
        s->tick + sim_rng_range(&s->rng, 1, s->p.idle_ticks_max);
    SIM_TRACE(s, "idle until tick %llu", ull(s->idle_until_tick));
}

/* What a per-node-pair liveness signal would see: node x hears from node d
 * (slots) unless d is not running or the link is cut or stalled. */
static bool hears(const struct sim *s, uint32_t x, uint32_t d)
{
    return s->nodes[d].state == SIM_NODE_UP && !s->cut[d][x] &&
           s->stall_until[d][x] <= s->now;
}

/* A report is made at a node at rest (raft_peer_down() must not come
 * between raft_ready() and raft_advance()); a busy node gets it on a later
 * tick, as the detector keeps reporting while the peer stays unreachable. */
static void report_down(struct sim *s, struct sim_node *n, raft_id down,
                        const char *why)
{
    if (!sim_node_at_rest(n)) {
        return;
    }
    bool was_quiet = raft_quiet(n->r);
    raft_peer_down(n->r, down);
    sim_node_observe(s, n);
    if (was_quiet && !raft_quiet(n->r)) {
        s->st.down_wakes++;
        SIM_TRACE(s, "n%llu woken: n%llu reported down (%s)", ull(n->id),
                  ull(down), why);
    }
}

static void false_report(struct sim *s)
{
    if (!sim_rng_chance(&s->rng, s->p.false_down_ppm) || s->n_slots < 2) {
        return;
    }
    uint32_t x = (uint32_t)sim_rng_below(&s->rng, s->n_slots);
    uint32_t d = (uint32_t)sim_rng_below(&s->rng, s->n_slots);
    if (x != d && s->nodes[x].state == SIM_NODE_UP) {
        report_down(s, &s->nodes[x], d + 1, "false alarm");
    }
}

/* Every running node reports each peer it has not heard for detect_ticks,
 * and again every report_ticks while that lasts (raft.h asks hosts to keep
 * reporting). */
static void failure_detector(struct sim *s)
{
    if (s->p.quiesce_ticks == 0) {
        return;
    }
    for (uint32_t x = 0; x < s->n_slots && !sim_failed(s); x++) {
        struct sim_node *n = &s->nodes[x];
        for (uint32_t d = 0; d < s->n_slots; d++) {
            uint64_t *since = &s->unheard_since[x][d];
            if (n->state != SIM_NODE_UP || d == x || hears(s, x, d)) {
                *since = 0;
                continue;
            }
            if (*since == 0) {
                *since = s->tick;
            }
            uint64_t late = s->tick - *since;
            if (late >= s->p.detect_ticks &&
                (late - s->p.detect_ticks) % s->p.report_ticks == 0) {
                report_down(s, n, d + 1, "unreachable");
            }
        }
    }
    if (!s->healed && !sim_failed(s)) {
        false_report(s);
    }
}

/* --- The tick loop -----------------------------------------------------------
 */

static void run_events(struct sim *s)
{
    struct sim_event ev;
    uint64_t end = s->tick * SIM_TICK_UNITS + SIM_TICK_UNITS;
    while (!sim_failed(s) && sim_heap_pop_before(s, end, &ev)) {
        s->now = ev.time;
        if (ev.kind == SIM_EV_MSG) {
            sim_net_deliver(s, &ev);
            continue;
        }
        struct sim_node *n = &s->nodes[ev.node];
        if (n->state == SIM_NODE_UP && n->busy &&
            n->incarnation == ev.incarnation) {
            sim_node_disk_done(s, n);
        }
    }
}

static void sim_tick(struct sim *s)
{
    s->tick++;
    s->now = s->tick * SIM_TICK_UNITS;
    s->st.ticks++;
    if (!s->healed) {
        sim_net_faults(s);
        node_faults(s);
    }
    lifecycle(s);
    if (s->p.quiesce_ticks != 0) {
        idle_spells(s);
        failure_detector(s);
    }
    for (uint32_t i = 0; i < s->n_slots && !sim_failed(s); i++) {
        sim_node_tick(s, &s->nodes[i]);
    }
    sim_clients_tick(s);
    if (!s->healed && !sim_failed(s)) {
        if (sim_rng_chance(&s->rng, s->p.member_ppm)) {
            member_change(s);
        }
        if (sim_rng_chance(&s->rng, s->p.transfer_ppm) && !sim_failed(s)) {
            transfer(s);
        }
    }
    member_resolve(s);
    compactions(s);
    run_events(s);
    if (s->st.events > SIM_EVENTS_MAX && !sim_failed(s)) {
        sim_fail(s, "sim-bound", "more than %u events in one seed",
                 SIM_EVENTS_MAX);
    }
}

/* --- Liveness --------------------------------------------------------------
 */

static void heal(struct sim *s)
{
    s->healed = true;
    sim_net_heal(s);
    s->p.crash_mid_ppm = 0;
    for (uint32_t i = 0; i < s->n_slots; i++) {
        s->nodes[i].slow_until_tick = 0;
    }
    SIM_TRACE(s, "HEAL: liveness phase starts");
}

/* Why the cluster has not converged yet, or NULL when it has. Uses what
 * the checker last saw of each node at rest, so busy nodes count too. */
static const char *not_done(struct sim *s, char *why, size_t cap)
{
    struct sim_node *l = sim_find_leader(s);
    if (l == NULL) {
        return "no leader";
    }
    if (!sim_clients_final_done(s)) {
        for (uint32_t i = 0; i < s->p.n_clients; i++) {
            const struct sim_client *c = &s->clients[i];
            if (!c->final_write_done || !c->final_read_done) {
                snprintf(why, cap, "c%u: write seq %llu %s, final read %s",
                         c->id, ull(c->w.seq),
                         c->w_state != SIM_OP_IDLE ? "pending" : "acked",
                         c->final_read_done ? "done" : "pending");
                return why;
            }
        }
    }
    if (s->conf_pending) {
        snprintf(why, cap, "membership change at %llu/%llu undecided",
                 ull(s->conf_index), ull(s->conf_term));
        return why;
    }
    for (uint32_t i = 0; i < l->conf.n; i++) {
        struct sim_node *m = sim_node_by_id(s, l->conf.members[i].id);
        if (m == NULL || m->state != SIM_NODE_UP ||
            m->sm.applied != l->commit || m->term != l->term) {
            snprintf(why, cap,
                     "leader n%llu (term %llu, commit %llu): member "
                     "n%llu %s, term %llu, applied %llu",
                     ull(l->id), ull(l->term), ull(l->commit),
                     ull(l->conf.members[i].id),
                     m == NULL                 ? "missing"
                     : m->state != SIM_NODE_UP ? "not running"
                     : m->busy                 ? "busy"
                                               : "up",
                     ull(m ? m->term : 0), ull(m ? m->sm.applied : 0));
            return why;
        }
    }
    return NULL;
}

/* Every acknowledged write took effect exactly once. */
static void final_checks(struct sim *s)
{
    struct sim_node *l = sim_find_leader(s);
    uint64_t acked = 0;
    for (uint32_t i = 0; i < s->p.n_clients; i++) {
        const struct sim_client *c = &s->clients[i];
        acked += c->acked_seq;
        if (l->sm.last_seq[i] != c->acked_seq) {
            sim_fail(s, "durability",
                     "c%u acked seq %llu, state machine "
                     "holds seq %llu",
                     c->id, ull(c->acked_seq), ull(l->sm.last_seq[i]));
            return;
        }
    }
    if (l->sm.writes != acked) {
        sim_fail(s, "durability", "%llu writes acked, %llu took effect",
                 ull(acked), ull(l->sm.writes));
    }
}

static void liveness(struct sim *s)
{
    heal(s);
    uint64_t bound = (uint64_t)SIM_LIVENESS_ELECTIONS * s->p.election_ticks +
                     (20u * s->p.disk_max) / SIM_TICK_UNITS;
    char why[256];
    const char *missing = "not started";
    for (uint64_t t = 0; t <= bound && !sim_failed(s); t++) {
        sim_tick(s);
        s->st.liveness_ticks++;
        missing = not_done(s, why, sizeof(why));
        if (missing == NULL) {
            SIM_TRACE(s, "converged %llu ticks after healing", ull(t + 1));
            final_checks(s);
            return;
        }
    }
    if (!sim_failed(s)) {
        sim_fail(s, "liveness", "not converged %llu ticks after healing: %s",
                 ull(bound), missing);
    }
}

/* --- One seed ------------------------------------------------------------ */

static void sim_init(struct sim *s, uint64_t seed, const struct sim_opts *o)
{
    memset(s, 0, sizeof(*s));
    s->seed = seed;
    s->opts = o;
    sim_rng_seed(&s->rng, seed ^ UINT64_C(0x5eed5eed5eed5eed));
    sim_params_pick(&s->rng, &s->p);
    sim_params_pick_quiesce(seed, &s->p);
    s->nodes = calloc(SIM_NODES_MAX, sizeof(*s->nodes));
    if (s->nodes == NULL) {
        abort();
    }
    if (o->trace & SIM_TRACE_RING) {
        s->ring = calloc(SIM_TRACE_LINES, sizeof(*s->ring));
    }
    sim_check_init(&s->chk);
    const struct sim_params *p = &s->p;
    SIM_TRACE(s,
              "params: level %u, %u nodes, %u clients, %llu fault ticks, "
              "election %u heartbeat %u, pre_vote %d check_quorum %d "
              "lease %d, msg bytes %u entries %u inflight %u%s, "
              "quiesce %u (skip %d, detect %u, false-down %u ppm)",
              p->level, p->n_nodes, p->n_clients, ull(p->fault_ticks),
              p->election_ticks, p->heartbeat_ticks, p->pre_vote,
              p->check_quorum, p->lease_reads, p->max_msg_bytes,
              p->max_msg_entries, p->max_inflight_msgs,
              p->churn ? ", churn" : "", p->quiesce_ticks, p->skip_quiet,
              p->detect_ticks, p->false_down_ppm);
    struct raft_conf conf = {.n = s->p.n_nodes};
    for (uint32_t i = 0; i < s->p.n_nodes; i++) {
        conf.members[i].id = i + 1;
        conf.members[i].role = RAFT_VOTER;
    }
    for (uint32_t i = 0; i < s->p.n_nodes && !sim_failed(s); i++) {
        sim_node_create(s, i + 1, &conf);
    }
    sim_clients_init(s);
}

static void sim_destroy(struct sim *s)
{
    for (uint32_t i = 0; i < s->n_slots; i++) {
        sim_node_free(&s->nodes[i]);
    }
    free(s->nodes);
    sim_heap_free(s);
    sim_check_free(&s->chk);
    free(s->ring);
}

static void add_stats(struct sim_stats *to, const struct sim_stats *from)
{
    to->seeds += 1;
    to->ticks += from->ticks;
    to->events += from->events;
    to->msgs_sent += from->msgs_sent;
    to->msgs_dropped += from->msgs_dropped;
    to->writes_acked += from->writes_acked;
    to->reads_done += from->reads_done;
    to->elections += from->elections;
    to->crashes += from->crashes;
    to->crashes_mid += from->crashes_mid;
    to->partitions += from->partitions;
    to->conf_changes += from->conf_changes;
    to->transfers += from->transfers;
    to->compactions += from->compactions;
    to->snapshots_installed += from->snapshots_installed;
    to->liveness_ticks += from->liveness_ticks;
    to->quiesces += from->quiesces;
    to->quiet_ticks += from->quiet_ticks;
    to->down_wakes += from->down_wakes;
}

/* Runs one seed. Returns 0, or 1 with *f describing the first violation.
 * Adds the seed's counters to *st. With SIM_TRACE_RING the last trace
 * lines are printed to stderr on a violation. */
int sim_run_seed(uint64_t seed, const struct sim_opts *o, struct sim_stats *st,
                 struct sim_failure *f)
{
    struct sim *s = malloc(sizeof(*s));
    if (s == NULL) {
        abort();
    }
    sim_init(s, seed, o);
    while (s->tick < s->p.fault_ticks && !sim_failed(s)) {
        sim_tick(s);
    }
    if (!sim_failed(s)) {
        liveness(s);
    }
    *f = s->fail;
    if (s->fail.failed && (o->trace & SIM_TRACE_RING)) {
        fprintf(stderr, "last trace lines of seed %llu:\n", ull(seed));
        sim_trace_dump(s, stderr);
    }
    add_stats(st, &s->st);
    sim_destroy(s);
    free(s);
    return f->failed ? 1 : 0;
}

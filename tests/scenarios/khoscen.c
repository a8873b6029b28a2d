/*
 * khoscen - runs the raft core's scenario scripts (tests/scenarios/NAME.txt).
 *
 * A script is a list of blocks separated by blank lines. Each block is one
 * command, a line "----", and the output the command must print (possibly
 * none). Lines starting with '#' between blocks are comments. The runner
 * executes every command against a tests/harness/net cluster and compares
 * what it printed with the expected text; the first mismatch in a file is
 * reported with file:line and a line diff, and the exit status is 1.
 *
 *   khoscen FILE...            check
 *   khoscen --rewrite FILE...  replace every expected output with what the
 *                              core prints now (for authoring: read every
 *                              rewritten block before keeping it)
 *   khoscen --planted N FILE...  (builds with -DKHO_PLANTED_BUGS only) run
 *                              with planted bug N; some script must fail
 *
 * A harness safety violation (two leaders in a term, divergent state
 * machines, a vote sent before it was persisted...) fails the run even in
 * --rewrite mode: it can never become expected output.
 *
 * Commands (ids are node ids; [x] is optional; lists are comma-separated):
 *   add-nodes N [voters=..] [learners=..] [pre-vote=true]
 *       [check-quorum=true] [election=T] [heartbeat=T] [log=TERMS] [term=T]
 *       [seed=S] [max-msg-entries=N] [max-inflight=N] [max-uncommitted=B]
 *       [max-entry-bytes=B] [max-pending-reads=N] [lease=true] [drift=T]
 *       [quiesce=T]
 *                           N new nodes with the next ids; without voters=
 *                           they form a new cluster if none exists, else
 *                           they join with an empty configuration. log=
 *                           pre-seeds every new node's durable log.
 *   set-log ID log=TERMS [term=T]   rewrite ID's durable log and restart it
 *   campaign ID             tick ID until it starts an election
 *   tick ID [N]             tick ID N times (ID may be "all")
 *   tick-heartbeat ID       tick ID heartbeat_ticks times
 *   tick-election ID        tick ID election_ticks times
 *   run N [until-leader=true] [quiet=true]
 *                           N times: tick every node once, then stabilize
 *   process-ready [ID...]   handle one ready batch of each ID (default all)
 *   deliver [from=X] [to=Y] [type=T] [drop=true] [dup=true]
 *                           step (or drop) the matching queued messages;
 *                           dup also holds back a copy of each
 *   stash [from=X] [to=Y] [type=T]   hold the matching messages back
 *   unstash                 release held messages to the end of the queue
 *   stabilize [quiet=true]  process readies and deliver until quiet
 *   queue                   list the messages in flight
 *   propose ID DATA
 *   propose-conf ID add-learner|promote|add-voter|remove NODE
 *   read-index ID CTX
 *   transfer-leader FROM TO
 *   partition 1,2 / 3,4,5   cut every link between the groups; nodes in
 *                           no group are isolated
 *   isolate ID | cut A B | heal
 *   crash ID                restart ID from its durable state
 *   peer-down ID DOWN       ID's failure detector reports DOWN unreachable
 *   compact ID [INDEX]      compact ID's log (default: at its applied index)
 *   status ID | log ID | stats ID | raft-state
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../harness/net.h"

#define LINE_MAX_ 4096
#define ARGS_MAX 32
#define LINES_MAX 200000u
#define DIFF_MAX 2000u

typedef unsigned long long ull;

struct args {
    int n;
    char *v[ARGS_MAX];
};

struct ctx {
    struct net *net;
    uint64_t seed;
    struct net_buf *out; /* command output (besides the net trace) */
    const char *file;
    int line;
};

/* --- Argument helpers ---------------------------------------------------- */

static const char *arg_kv(const struct args *a, const char *key)
{
    size_t klen = strlen(key);
    for (int i = 1; i < a->n; i++) {
        if (strncmp(a->v[i], key, klen) == 0 && a->v[i][klen] == '=') {
            return a->v[i] + klen + 1;
        }
    }
    return NULL;
}

/* The i-th argument that is not key=value (0 = first after the command). */
static const char *arg_pos(const struct args *a, int i)
{
    for (int k = 1; k < a->n; k++) {
        if (strchr(a->v[k], '=') != NULL) {
            continue;
        }
        if (i-- == 0) {
            return a->v[k];
        }
    }
    return NULL;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    if (s == NULL || *s == '\0' || *s == '-') {
        return false;
    }
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

static bool parse_list(const char *s, uint64_t *out, uint32_t cap,
                       uint32_t *n)
{
    char tmp[LINE_MAX_];
    *n = 0;
    if (s == NULL || strlen(s) >= sizeof(tmp)) {
        return false;
    }
    strcpy(tmp, s);
    for (char *save = NULL, *tok = strtok_r(tmp, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        if (*n == cap || !parse_u64(tok, &out[*n])) {
            return false;
        }
        (*n)++;
    }
    return *n > 0;
}

static bool kv_bool(const struct args *a, const char *key)
{
    const char *v = arg_kv(a, key);
    return v != NULL && strcmp(v, "true") == 0;
}

/* Reads key=value as a u64 into *out if present; false on a bad value. */
static bool kv_u64(struct ctx *c, const struct args *a, const char *key,
                   uint64_t *out)
{
    const char *v = arg_kv(a, key);
    if (v == NULL) {
        return true;
    }
    if (!parse_u64(v, out)) {
        net_buf_printf(c->out, "bad %s=%s\n", key, v);
        return false;
    }
    return true;
}

static bool pos_id(struct ctx *c, const struct args *a, int i, raft_id *id)
{
    const char *s = arg_pos(a, i);
    if (!parse_u64(s, id) || *id == 0 || *id > c->net->max_id) {
        net_buf_printf(c->out, "bad node id %s\n", s ? s : "(missing)");
        return false;
    }
    return true;
}

static struct raft *node_raft(struct ctx *c, raft_id id)
{
    return c->net->nodes[id].r;
}

static void print_rc(struct ctx *c, int rc)
{
    net_buf_printf(c->out, "%s\n", rc == KHO_OK ? "ok" : kho_errname(rc));
}

static void print_state(struct ctx *c)
{
    for (raft_id id = 1; id <= c->net->max_id; id++) {
        net_format_status(c->net, c->out, id);
        net_buf_printf(c->out, "\n");
    }
}

/* --- Commands ------------------------------------------------------------ */

struct tune {
    uint64_t max_msg_entries, max_inflight, max_uncommitted, max_entry_bytes,
        max_pending_reads, drift;
    bool lease;
};

static void tune_cb(struct raft_config *cfg, void *arg)
{
    const struct tune *t = arg;
    if (t->max_msg_entries) {
        cfg->max_msg_entries = (uint32_t)t->max_msg_entries;
    }
    if (t->max_inflight) {
        cfg->max_inflight_msgs = (uint32_t)t->max_inflight;
    }
    if (t->max_uncommitted) {
        cfg->max_uncommitted_bytes = t->max_uncommitted;
    }
    if (t->max_entry_bytes) {
        cfg->max_entry_bytes = (uint32_t)t->max_entry_bytes;
    }
    if (t->max_pending_reads) {
        cfg->max_pending_reads = (uint32_t)t->max_pending_reads;
    }
    if (t->lease) {
        cfg->lease_reads = true;
        cfg->lease_drift_ticks = (uint32_t)t->drift;
    }
}

static int cmd_add_nodes(struct ctx *c, const struct args *a)
{
    struct net_opts o = {0};
    struct tune t = {0};
    uint64_t count = 0, ids[NET_NODES_MAX], terms[LINE_MAX_];
    uint64_t term = 0, v = 0;
    uint32_t n = 0, n_terms = 0;
    raft_id first = 0;
    if (!parse_u64(arg_pos(a, 0), &count) || count == 0) {
        net_buf_printf(c->out, "usage: add-nodes N [options]\n");
        return 1;
    }
    if (arg_kv(a, "voters") != NULL) {
        if (!parse_list(arg_kv(a, "voters"), ids, NET_NODES_MAX, &n)) {
            return 1;
        }
        for (uint32_t i = 0; i < n; i++) {
            o.voters[o.n_voters++] = ids[i];
        }
    }
    if (arg_kv(a, "learners") != NULL) {
        if (!parse_list(arg_kv(a, "learners"), ids, NET_NODES_MAX, &n)) {
            return 1;
        }
        for (uint32_t i = 0; i < n; i++) {
            o.learners[o.n_learners++] = ids[i];
        }
    }
    if (arg_kv(a, "log") != NULL &&
        !parse_list(arg_kv(a, "log"), terms, LINE_MAX_, &n_terms)) {
        return 1;
    }
    o.pre_vote = kv_bool(a, "pre-vote");
    o.check_quorum = kv_bool(a, "check-quorum");
    t.lease = kv_bool(a, "lease");
    if (!kv_u64(c, a, "election", &v)) {
        return 1;
    }
    o.election_ticks = (uint32_t)v;
    v = 0;
    if (!kv_u64(c, a, "heartbeat", &v)) {
        return 1;
    }
    o.heartbeat_ticks = (uint32_t)v;
    v = 0;
    if (!kv_u64(c, a, "quiesce", &v)) {
        return 1;
    }
    o.quiesce_ticks = (uint32_t)v;
    if (!kv_u64(c, a, "term", &term) || !kv_u64(c, a, "seed", &c->seed) ||
        !kv_u64(c, a, "max-msg-entries", &t.max_msg_entries) ||
        !kv_u64(c, a, "max-inflight", &t.max_inflight) ||
        !kv_u64(c, a, "max-uncommitted", &t.max_uncommitted) ||
        !kv_u64(c, a, "max-entry-bytes", &t.max_entry_bytes) ||
        !kv_u64(c, a, "max-pending-reads", &t.max_pending_reads) ||
        !kv_u64(c, a, "drift", &t.drift)) {
        return 1;
    }
    c->net->seed = c->seed;
    o.tune_cb = tune_cb;
    o.tune_arg = &t;
    int rc = net_add_nodes(c->net, (uint32_t)count, &o, &first);
    if (rc != KHO_OK) {
        print_rc(c, rc);
        return 1;
    }
    for (raft_id id = first; id < first + count; id++) {
        if (n_terms > 0 || term > 0) {
            rc = net_set_log(c->net, id, terms, n_terms, term);
            if (rc != KHO_OK) {
                print_rc(c, rc);
                return 1;
            }
        }
        net_format_status(c->net, c->out, id);
        net_buf_printf(c->out, "\n");
    }
    return 0;
}

static int cmd_set_log(struct ctx *c, const struct args *a)
{
    uint64_t terms[LINE_MAX_], term = 0;
    uint32_t n_terms = 0;
    raft_id id;
    if (!pos_id(c, a, 0, &id) || !kv_u64(c, a, "term", &term)) {
        return 1;
    }
    if (arg_kv(a, "log") != NULL &&
        !parse_list(arg_kv(a, "log"), terms, LINE_MAX_, &n_terms)) {
        net_buf_printf(c->out, "bad log=\n");
        return 1;
    }
    int rc = net_set_log(c->net, id, terms, n_terms, term);
    if (rc != KHO_OK) {
        print_rc(c, rc);
        return 1;
    }
    net_buf_printf(c->out, "%llu: ", (ull)id);
    net_format_log(c->out, &c->net->nodes[id].store);
    net_buf_printf(c->out, "\n");
    return 0;
}

static int cmd_tick(struct ctx *c, const struct args *a, uint32_t which)
{
    uint64_t ticks = 1;
    raft_id id;
    const char *who = arg_pos(a, 0);
    if (which == 0 && arg_pos(a, 1) != NULL &&
        !parse_u64(arg_pos(a, 1), &ticks)) {
        net_buf_printf(c->out, "bad tick count\n");
        return 1;
    }
    if (who != NULL && strcmp(who, "all") == 0) {
        for (uint64_t t = 0; t < ticks; t++) {
            for (id = 1; id <= c->net->max_id; id++) {
                net_tick(c->net, id, 1);
            }
        }
        return 0;
    }
    if (!pos_id(c, a, 0, &id)) {
        return 1;
    }
    if (which == 1) {
        ticks = c->net->nodes[id].cfg.heartbeat_ticks;
    } else if (which == 2) {
        ticks = c->net->nodes[id].cfg.election_ticks;
    }
    return net_tick(c->net, id, (uint32_t)ticks) == KHO_OK ? 0 : 1;
}

static int cmd_campaign(struct ctx *c, const struct args *a)
{
    raft_id id;
    if (!pos_id(c, a, 0, &id)) {
        return 1;
    }
    int rc = net_campaign(c->net, id);
    if (rc != KHO_OK) {
        net_buf_printf(c->out, "%llu did not campaign: %s\n", (ull)id,
                       kho_errname(rc));
    }
    return 0;
}

static int cmd_run(struct ctx *c, const struct args *a)
{
    uint64_t ticks = 0;
    if (!parse_u64(arg_pos(a, 0), &ticks)) {
        net_buf_printf(c->out, "usage: run N\n");
        return 1;
    }
    bool quiet = c->net->quiet;
    c->net->quiet = kv_bool(a, "quiet");
    bool until = kv_bool(a, "until-leader");
    uint32_t done = net_run(c->net, (uint32_t)ticks, until);
    c->net->quiet = quiet;
    if (until) {
        raft_id l = net_leader(c->net);
        if (done == ticks && l == 0) {
            net_buf_printf(c->out, "no leader after %u ticks\n", done);
        } else {
            net_buf_printf(c->out, "leader %llu after %u ticks\n", (ull)l,
                           done);
        }
    }
    return 0;
}

static int cmd_process_ready(struct ctx *c, const struct args *a)
{
    if (arg_pos(a, 0) == NULL) {
        for (raft_id id = 1; id <= c->net->max_id; id++) {
            net_process_ready(c->net, id);
        }
        return 0;
    }
    for (int i = 0; arg_pos(a, i) != NULL; i++) {
        raft_id id;
        if (!pos_id(c, a, i, &id)) {
            return 1;
        }
        net_process_ready(c->net, id);
    }
    return 0;
}

static uint32_t type_of(const char *s)
{
    for (uint32_t t = 1; t <= RAFT_MSG_TYPE_MAX_; t++) {
        if (strcmp(s, net_msg_type_name(t)) == 0) {
            return t;
        }
    }
    return 0;
}

static int cmd_deliver(struct ctx *c, const struct args *a)
{
    struct net_filter f = {0};
    if (!kv_u64(c, a, "from", &f.from) || !kv_u64(c, a, "to", &f.to)) {
        return 1;
    }
    if (arg_kv(a, "type") != NULL) {
        f.type = type_of(arg_kv(a, "type"));
        if (f.type == 0) {
            net_buf_printf(c->out, "bad type=%s\n", arg_kv(a, "type"));
            return 1;
        }
    }
    f.drop = kv_bool(a, "drop");
    f.dup = kv_bool(a, "dup");
    f.stash = strcmp(a->v[0], "stash") == 0;
    if (net_deliver(c->net, &f) == 0) {
        net_buf_printf(c->out, "no message matched\n");
    }
    return 0;
}

static int cmd_stabilize(struct ctx *c, const struct args *a)
{
    bool quiet = c->net->quiet;
    c->net->quiet = kv_bool(a, "quiet");
    net_stabilize(c->net);
    c->net->quiet = quiet;
    return 0;
}

static int cmd_queue(struct ctx *c)
{
    if (c->net->q_len == 0) {
        net_buf_printf(c->out, "empty\n");
    }
    for (size_t i = 0; i < c->net->q_len; i++) {
        net_format_msg(c->out, &c->net->q[i].m);
        net_buf_printf(c->out, "\n");
    }
    return 0;
}

static int cmd_propose(struct ctx *c, const struct args *a)
{
    raft_id id;
    uint64_t index = 0, term = 0;
    const char *data = arg_pos(a, 1);
    if (!pos_id(c, a, 0, &id) || data == NULL) {
        net_buf_printf(c->out, "usage: propose ID DATA\n");
        return 1;
    }
    int rc = raft_propose(node_raft(c, id), (const uint8_t *)data,
                          strlen(data), &index, &term);
    if (rc == KHO_OK) {
        net_buf_printf(c->out, "ok index=%llu term=%llu\n", (ull)index,
                       (ull)term);
    } else {
        print_rc(c, rc);
    }
    return 0;
}

static int cmd_propose_conf(struct ctx *c, const struct args *a)
{
    static const char *const ops[] = {
        [RAFT_CONF_ADD_LEARNER] = "add-learner",
        [RAFT_CONF_PROMOTE] = "promote",
        [RAFT_CONF_ADD_VOTER] = "add-voter",
        [RAFT_CONF_REMOVE] = "remove",
    };
    raft_id id;
    uint64_t target = 0, index = 0, term = 0;
    const char *op = arg_pos(a, 1);
    int which = 0;
    for (int i = RAFT_CONF_ADD_LEARNER; i <= RAFT_CONF_REMOVE; i++) {
        if (op != NULL && strcmp(op, ops[i]) == 0) {
            which = i;
        }
    }
    if (!pos_id(c, a, 0, &id) || which == 0 ||
        !parse_u64(arg_pos(a, 2), &target)) {
        net_buf_printf(c->out, "usage: propose-conf ID OP NODE\n");
        return 1;
    }
    int rc = raft_propose_conf(node_raft(c, id), (enum raft_conf_op)which,
                               target, &index, &term);
    if (rc == KHO_OK) {
        net_buf_printf(c->out, "ok index=%llu term=%llu\n", (ull)index,
                       (ull)term);
    } else {
        print_rc(c, rc);
    }
    return 0;
}

static int cmd_read_index(struct ctx *c, const struct args *a)
{
    raft_id id;
    uint64_t ctx = 0;
    if (!pos_id(c, a, 0, &id) || !parse_u64(arg_pos(a, 1), &ctx)) {
        net_buf_printf(c->out, "usage: read-index ID CTX\n");
        return 1;
    }
    print_rc(c, raft_read_index(node_raft(c, id), ctx));
    return 0;
}

static int cmd_transfer(struct ctx *c, const struct args *a)
{
    raft_id from, to = 0;
    if (!pos_id(c, a, 0, &from) || !parse_u64(arg_pos(a, 1), &to)) {
        net_buf_printf(c->out, "usage: transfer-leader FROM TO\n");
        return 1;
    }
    print_rc(c, raft_transfer_leader(node_raft(c, from), to));
    return 0;
}

static int cmd_partition(struct ctx *c, const struct args *a)
{
    int group[NET_NODES_MAX + 1] = {0};
    int g = 1;
    for (int i = 1; i < a->n; i++) {
        uint64_t ids[NET_NODES_MAX];
        uint32_t n = 0;
        if (strcmp(a->v[i], "/") == 0) {
            g++;
            continue;
        }
        if (!parse_list(a->v[i], ids, NET_NODES_MAX, &n)) {
            net_buf_printf(c->out, "bad group %s\n", a->v[i]);
            return 1;
        }
        for (uint32_t k = 0; k < n; k++) {
            if (ids[k] == 0 || ids[k] > NET_NODES_MAX) {
                net_buf_printf(c->out, "bad node id %llu\n", (ull)ids[k]);
                return 1;
            }
            group[ids[k]] = g;
        }
    }
    net_heal(c->net);
    for (raft_id x = 1; x <= NET_NODES_MAX; x++) {
        for (raft_id y = x + 1; y <= NET_NODES_MAX; y++) {
            if (group[x] == 0 || group[x] != group[y]) {
                net_cut(c->net, x, y);
            }
        }
    }
    return 0;
}

static int cmd_cut(struct ctx *c, const struct args *a)
{
    raft_id x, y;
    if (!pos_id(c, a, 0, &x) || !pos_id(c, a, 1, &y)) {
        return 1;
    }
    net_cut(c->net, x, y);
    return 0;
}

static int cmd_peer_down(struct ctx *c, const struct args *a)
{
    raft_id id, down;
    if (!pos_id(c, a, 0, &id) || !pos_id(c, a, 1, &down)) {
        return 1;
    }
    net_peer_down(c->net, id, down);
    return 0;
}

static int cmd_crash(struct ctx *c, const struct args *a)
{
    raft_id id;
    if (!pos_id(c, a, 0, &id)) {
        return 1;
    }
    if (net_restart(c->net, id) == KHO_OK) {
        net_format_status(c->net, c->out, id);
        net_buf_printf(c->out, "\n");
    }
    return 0;
}

static int cmd_compact(struct ctx *c, const struct args *a)
{
    raft_id id;
    uint64_t index = 0;
    if (!pos_id(c, a, 0, &id)) {
        return 1;
    }
    index = c->net->nodes[id].applied;
    if (arg_pos(a, 1) != NULL && !parse_u64(arg_pos(a, 1), &index)) {
        net_buf_printf(c->out, "bad index\n");
        return 1;
    }
    int rc = net_compact(c->net, id, index);
    if (rc != KHO_OK) {
        print_rc(c, rc);
        return 0;
    }
    net_buf_printf(c->out, "%llu: ", (ull)id);
    net_format_log(c->out, &c->net->nodes[id].store);
    net_buf_printf(c->out, "\n");
    return 0;
}

static int cmd_log(struct ctx *c, const struct args *a)
{
    raft_id id;
    if (!pos_id(c, a, 0, &id)) {
        return 1;
    }
    net_buf_printf(c->out, "%llu: ", (ull)id);
    net_format_log(c->out, &c->net->nodes[id].store);
    net_buf_printf(c->out, "\n");
    return 0;
}

static int cmd_stats(struct ctx *c, const struct args *a)
{
    raft_id id;
    if (!pos_id(c, a, 0, &id)) {
        return 1;
    }
    const struct raft_stats *s = raft_stats(node_raft(c, id));
    net_buf_printf(c->out,
                   "%llu: elections=%llu leader_changes=%llu "
                   "dropped: group=%llu invalid=%llu unknown=%llu stale=%llu "
                   "overflow=%llu conflict=%llu\n",
                   (ull)id, (ull)s->elections, (ull)s->leader_changes,
                   (ull)s->dropped_group, (ull)s->dropped_invalid,
                   (ull)s->dropped_unknown, (ull)s->dropped_stale,
                   (ull)s->dropped_overflow, (ull)s->dropped_conflict);
    return 0;
}

static int cmd_status(struct ctx *c, const struct args *a)
{
    raft_id id;
    if (!pos_id(c, a, 0, &id)) {
        return 1;
    }
    net_format_status(c->net, c->out, id);
    net_buf_printf(c->out, "\n");
    return 0;
}

/* Needs a node to exist before it runs. */
static bool needs_nodes(const char *cmd)
{
    return strcmp(cmd, "add-nodes") != 0 && strcmp(cmd, "raft-state") != 0 &&
           strcmp(cmd, "queue") != 0 && strcmp(cmd, "heal") != 0 &&
           strcmp(cmd, "unstash") != 0;
}

static int run_command(struct ctx *c, const struct args *a)
{
    const char *cmd = a->v[0];
    if (needs_nodes(cmd) && c->net->max_id == 0) {
        net_buf_printf(c->out, "no nodes yet\n");
        return 1;
    }
    if (strcmp(cmd, "add-nodes") == 0) {
        return cmd_add_nodes(c, a);
    } else if (strcmp(cmd, "set-log") == 0) {
        return cmd_set_log(c, a);
    } else if (strcmp(cmd, "campaign") == 0) {
        return cmd_campaign(c, a);
    } else if (strcmp(cmd, "tick") == 0) {
        return cmd_tick(c, a, 0);
    } else if (strcmp(cmd, "tick-heartbeat") == 0) {
        return cmd_tick(c, a, 1);
    } else if (strcmp(cmd, "tick-election") == 0) {
        return cmd_tick(c, a, 2);
    } else if (strcmp(cmd, "run") == 0) {
        return cmd_run(c, a);
    } else if (strcmp(cmd, "process-ready") == 0) {
        return cmd_process_ready(c, a);
    } else if (strcmp(cmd, "deliver") == 0 || strcmp(cmd, "stash") == 0) {
        return cmd_deliver(c, a);
    } else if (strcmp(cmd, "unstash") == 0) {
        net_buf_printf(c->out, "%zu released\n", net_unstash(c->net));
        return 0;
    } else if (strcmp(cmd, "stabilize") == 0) {
        return cmd_stabilize(c, a);
    } else if (strcmp(cmd, "queue") == 0) {
        return cmd_queue(c);
    } else if (strcmp(cmd, "propose") == 0) {
        return cmd_propose(c, a);
    } else if (strcmp(cmd, "propose-conf") == 0) {
        return cmd_propose_conf(c, a);
    } else if (strcmp(cmd, "read-index") == 0) {
        return cmd_read_index(c, a);
    } else if (strcmp(cmd, "transfer-leader") == 0) {
        return cmd_transfer(c, a);
    } else if (strcmp(cmd, "partition") == 0) {
        return cmd_partition(c, a);
    } else if (strcmp(cmd, "isolate") == 0) {
        raft_id id;
        if (!pos_id(c, a, 0, &id)) {
            return 1;
        }
        net_isolate(c->net, id);
        return 0;
    } else if (strcmp(cmd, "cut") == 0) {
        return cmd_cut(c, a);
    } else if (strcmp(cmd, "heal") == 0) {
        net_heal(c->net);
        return 0;
    } else if (strcmp(cmd, "crash") == 0) {
        return cmd_crash(c, a);
    } else if (strcmp(cmd, "peer-down") == 0) {
        return cmd_peer_down(c, a);
    } else if (strcmp(cmd, "compact") == 0) {
        return cmd_compact(c, a);
    } else if (strcmp(cmd, "status") == 0) {
        return cmd_status(c, a);
    } else if (strcmp(cmd, "log") == 0) {
        return cmd_log(c, a);
    } else if (strcmp(cmd, "stats") == 0) {
        return cmd_stats(c, a);
    } else if (strcmp(cmd, "raft-state") == 0) {
        print_state(c);
        return 0;
    }
    net_buf_printf(c->out, "unknown command %s\n", cmd);
    return 1;
}

/* --- Script files -------------------------------------------------------- */

struct lines {
    char **v;
    size_t n, cap;
};

static void lines_push(struct lines *l, const char *s, size_t len)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 256;
        l->v = realloc(l->v, l->cap * sizeof(*l->v));
        if (l->v == NULL) {
            abort();
        }
    }
    l->v[l->n] = strndup(s, len);
    if (l->v[l->n] == NULL) {
        abort();
    }
    l->n++;
}

static void lines_free(struct lines *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i]);
    }
    free(l->v);
    memset(l, 0, sizeof(*l));
}

static void split_lines(struct lines *l, const char *text, size_t len)
{
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n') {
            lines_push(l, text + start, i - start);
            start = i + 1;
        }
    }
    if (start < len) {
        lines_push(l, text + start, len - start);
    }
}

static bool read_file(const char *path, struct lines *l)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return false;
    }
    char buf[LINE_MAX_];
    while (fgets(buf, sizeof(buf), f) != NULL) {
        size_t len = strlen(buf);
        if (len > 0 && buf[len - 1] == '\n') {
            len--;
        }
        lines_push(l, buf, len);
        if (l->n > LINES_MAX) {
            fprintf(stderr, "%s: more than %u lines\n", path, LINES_MAX);
            fclose(f);
            return false;
        }
    }
    fclose(f);
    return true;
}

static bool is_blank(const char *s)
{
    return s[strspn(s, " \t\r")] == '\0';
}

static void tokenize(char *s, struct args *a)
{
    a->n = 0;
    for (char *save = NULL, *tok = strtok_r(s, " \t", &save);
         tok != NULL && a->n < ARGS_MAX; tok = strtok_r(NULL, " \t", &save)) {
        a->v[a->n++] = tok;
    }
}

/* A plain LCS line diff ("-" expected, "+" actual). */
static void print_diff(char **exp, size_t ne, char **act, size_t na)
{
    if (ne > DIFF_MAX || na > DIFF_MAX) {
        for (size_t i = 0; i < ne; i++) {
            fprintf(stderr, "-%s\n", exp[i]);
        }
        for (size_t i = 0; i < na; i++) {
            fprintf(stderr, "+%s\n", act[i]);
        }
        return;
    }
    size_t w = na + 1;
    unsigned *t = calloc((ne + 1) * w, sizeof(*t));
    if (t == NULL) {
        abort();
    }
    for (size_t i = ne; i-- > 0;) {
        for (size_t j = na; j-- > 0;) {
            if (strcmp(exp[i], act[j]) == 0) {
                t[i * w + j] = t[(i + 1) * w + j + 1] + 1;
            } else {
                unsigned x = t[(i + 1) * w + j], y = t[i * w + j + 1];
                t[i * w + j] = x > y ? x : y;
            }
        }
    }
    size_t i = 0, j = 0;
    while (i < ne || j < na) {
        if (i < ne && j < na && strcmp(exp[i], act[j]) == 0) {
            fprintf(stderr, " %s\n", exp[i]);
            i++;
            j++;
        } else if (i < ne &&
                   (j == na || t[(i + 1) * w + j] >= t[i * w + j + 1])) {
            fprintf(stderr, "-%s\n", exp[i++]);
        } else {
            fprintf(stderr, "+%s\n", act[j++]);
        }
    }
    free(t);
}

static bool has_violation(const struct lines *l)
{
    for (size_t i = 0; i < l->n; i++) {
        if (strncmp(l->v[i], "VIOLATION", 9) == 0) {
            return true;
        }
    }
    return false;
}

/* Runs one script. Returns 0 if it passed. */
static int run_file(const char *path, bool rewrite)
{
    struct lines in = {0}, outl = {0};
    struct net_buf out = {0}, cmdout = {0};
    struct ctx c = {.seed = 1, .out = &cmdout, .file = path};
    int failed = 0, blocks = 0;
    if (!read_file(path, &in)) {
        return 1;
    }
    c.net = net_new(c.seed);
    size_t i = 0;
    while (i < in.n && !failed) {
        if (is_blank(in.v[i]) || in.v[i][0] == '#') {
            lines_push(&outl, in.v[i], strlen(in.v[i]));
            i++;
            continue;
        }
        size_t cmd_line = i;
        if (i + 1 >= in.n || strcmp(in.v[i + 1], "----") != 0) {
            fprintf(stderr, "%s:%zu: command without a ---- line\n", path,
                    cmd_line + 1);
            failed = 1;
            break;
        }
        size_t exp_start = i + 2, exp_end = exp_start;
        while (exp_end < in.n && !is_blank(in.v[exp_end])) {
            exp_end++;
        }
        i = exp_end;
        char cmd[LINE_MAX_];
        snprintf(cmd, sizeof(cmd), "%s", in.v[cmd_line]);
        struct args a;
        tokenize(cmd, &a);
        c.line = (int)cmd_line + 1;
        net_buf_reset(&cmdout);
        net_buf_reset(&c.net->out);
        int bad = run_command(&c, &a);
        /* Trace first (what happened), then what the command reports. */
        net_buf_reset(&out);
        if (c.net->out.len > 0) {
            net_buf_printf(&out, "%s", c.net->out.p);
        }
        if (cmdout.len > 0) {
            net_buf_printf(&out, "%s", cmdout.p);
        }
        struct lines act = {0};
        split_lines(&act, out.p ? out.p : "", out.len);
        blocks++;
        if (bad) {
            fprintf(stderr, "%s:%zu: bad command: %s\n", path, cmd_line + 1,
                    in.v[cmd_line]);
        }
        if (has_violation(&act)) {
            fprintf(stderr, "%s:%zu: safety violation after: %s\n", path,
                    cmd_line + 1, in.v[cmd_line]);
            print_diff(in.v + exp_start, exp_end - exp_start, act.v, act.n);
            failed = 1;
        }
        bool same = act.n == exp_end - exp_start;
        for (size_t k = 0; same && k < act.n; k++) {
            same = strcmp(act.v[k], in.v[exp_start + k]) == 0;
        }
        if (!same && !rewrite && !failed) {
            fprintf(stderr, "%s:%zu: output differs for: %s\n", path,
                    cmd_line + 1, in.v[cmd_line]);
            print_diff(in.v + exp_start, exp_end - exp_start, act.v, act.n);
            failed = 1;
        }
        if (bad) {
            failed = 1;
        }
        lines_push(&outl, in.v[cmd_line], strlen(in.v[cmd_line]));
        lines_push(&outl, "----", 4);
        for (size_t k = 0; k < act.n; k++) {
            lines_push(&outl, act.v[k], strlen(act.v[k]));
        }
        lines_free(&act);
    }
    if (rewrite && !failed) {
        FILE *f = fopen(path, "w");
        if (f == NULL) {
            fprintf(stderr, "%s: %s\n", path, strerror(errno));
            failed = 1;
        } else {
            for (size_t k = 0; k < outl.n; k++) {
                fprintf(f, "%s\n", outl.v[k]);
            }
            fclose(f);
        }
    }
    printf("%s %s (%d commands)\n", failed ? "FAIL" : "ok  ", path, blocks);
    net_free(c.net);
    net_buf_free(&out);
    net_buf_free(&cmdout);
    lines_free(&in);
    lines_free(&outl);
    return failed;
}

int main(int argc, char **argv)
{
    bool rewrite = false;
    int failed = 0, files = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--rewrite") == 0) {
            rewrite = true;
            continue;
        }
#ifdef KHO_PLANTED_BUGS
        if (strcmp(argv[i], "--planted") == 0 && i + 1 < argc) {
            raft_planted_bug = atoi(argv[++i]);
            continue;
        }
#endif
        files++;
        failed += run_file(argv[i], rewrite);
    }
    if (files == 0) {
        fprintf(stderr, "usage: khoscen [--rewrite] FILE...\n");
        return 2;
    }
    if (failed > 0) {
        fprintf(stderr, "khoscen: %d of %d scripts failed\n", failed, files);
        return 1;
    }
    return 0;
}

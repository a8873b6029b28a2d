/*
 * prom.c - GET /metrics in the Prometheus text exposition format 0.0.4:
 * for each metric a "# HELP" and a "# TYPE" line, then its samples
 * "name{label="value",...} number", the samples of one metric together.
 *
 * Per group (labels group, registry):
 *   kho_raft_term, kho_raft_commit_index, kho_raft_applied_index,
 *   kho_raft_last_index, kho_raft_first_index, kho_raft_is_leader,
 *   kho_raft_leader_id, kho_raft_quiet (gauges);
 *   kho_raft_leader_changes_total,
 *   kho_raft_elections_total (counters); kho_check_alarm (1 when
 *   `khoctl check` found this replica different); where this node leads, per
 *   replica (label replica): kho_raft_replica_match_index,
 *   kho_raft_replica_lag_entries, kho_raft_replica_active.
 * Per node:
 *   kho_node_info{node,name} 1, kho_groups, kho_groups_quiet;
 *   kho_proposals_total, kho_proposals_refused_total, kho_read_index_total,
 *   kho_lease_reads_total,
 *   kho_entries_applied_total; histograms kho_apply_duration_seconds and
 *   kho_store_commit_duration_seconds (one LMDB commit, the fsync);
 *   kho_store_used_bytes, kho_store_map_bytes, kho_store_quota_bytes;
 *   per peer (label peer): kho_peer_connected,
 *   kho_peer_frames_sent_total, kho_peer_frames_received_total,
 *   kho_peer_frames_dropped_total, kho_peer_last_receive_seconds; and
 *   kho_peer_frames_rejected_total (bad frames from anyone);
 *   client requests: kho_requests_total{op,err} and the histogram
 *   kho_request_duration_seconds{op}.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../client/kho_err.h"
#include "../common/metrics.h"
#include "internal.h"
#include "proto/api.pb-c.h"

/* Everything one scrape copies out of the node, kept off the stack. */
struct scrape {
    struct node_group_status st[NODE_GROUPS_MAX];
    struct node_group_metrics gm[NODE_GROUPS_MAX];
    size_t n, n_gm;
    struct node_metrics nm;
    struct net_peer_stats peers[NET_PEERS_MAX];
    size_t n_peers;
};

static void family(struct hbuf *b, const char *name, const char *type,
                   const char *help)
{
    hbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void group_labels(struct hbuf *b, const struct node_group_status *g)
{
    hbuf_printf(b, "group=\"%llu\",registry=\"",
                (unsigned long long)g->group_id);
    hbuf_label(b, g->registry);
    hbuf_printf(b, "\"");
}

/* The counters of group gid, or NULL. */
static const struct node_group_metrics *gm_of(const struct scrape *s,
                                              uint64_t gid)
{
    for (size_t i = 0; i < s->n_gm; i++) {
        if (s->gm[i].group_id == gid) {
            return &s->gm[i];
        }
    }
    return NULL;
}

enum gfield {
    G_TERM,
    G_COMMIT,
    G_APPLIED,
    G_LAST,
    G_FIRST,
    G_IS_LEADER,
    G_LEADER,
    G_LEADER_CHANGES,
    G_ELECTIONS,
    G_QUIET,
    G_COUNT
};

static const struct {
    const char *name, *type, *help;
} gfields[G_COUNT] = {
    [G_TERM] = {"kho_raft_term", "gauge", "Current raft term of the group."},
    [G_COMMIT] = {"kho_raft_commit_index", "gauge",
                  "Highest log index this node knows committed."},
    [G_APPLIED] = {"kho_raft_applied_index", "gauge",
                   "Highest log index applied to this node's state."},
    [G_LAST] = {"kho_raft_last_index", "gauge",
                "Last index in this node's log of the group."},
    [G_FIRST] = {"kho_raft_first_index", "gauge",
                 "First index still in the log (older ones are compacted)."},
    [G_IS_LEADER] = {"kho_raft_is_leader", "gauge",
                     "1 when this node leads the group."},
    [G_LEADER] = {"kho_raft_leader_id", "gauge",
                  "Node id of the group's known leader (0: none known)."},
    [G_LEADER_CHANGES] = {"kho_raft_leader_changes_total", "counter",
                          "Times the group's known leader became another "
                          "node."},
    [G_ELECTIONS] = {"kho_raft_elections_total", "counter",
                     "Elections this node started for the group."},
    [G_QUIET] = {"kho_raft_quiet", "gauge",
                 "1 while the group is quiet: idle, no ticks, no "
                 "heartbeats."},
};

static uint64_t gvalue(const struct scrape *s,
                       const struct node_group_status *g, enum gfield f)
{
    const struct node_group_metrics *m = gm_of(s, g->group_id);
    switch (f) {
    case G_TERM:
        return g->term;
    case G_COMMIT:
        return g->commit;
    case G_APPLIED:
        return g->applied;
    case G_LAST:
        return g->last_index;
    case G_FIRST:
        return g->first_index;
    case G_IS_LEADER:
        return g->role == RAFT_LEADER;
    case G_LEADER:
        return g->leader;
    case G_LEADER_CHANGES:
        return m != NULL ? m->leader_changes : 0;
    case G_ELECTIONS:
        return m != NULL ? m->elections : 0;
    case G_QUIET:
        return g->quiet;
    case G_COUNT:
        break;
    }
    return 0;
}

static void render_groups(const struct scrape *s, struct hbuf *b)
{
    for (int f = 0; f < G_COUNT; f++) {
        family(b, gfields[f].name, gfields[f].type, gfields[f].help);
        for (size_t i = 0; i < s->n; i++) {
            hbuf_printf(b, "%s{", gfields[f].name);
            group_labels(b, &s->st[i]);
            hbuf_printf(b, "} %llu\n",
                        (unsigned long long)gvalue(s, &s->st[i], f));
        }
    }
}

/* kho_check_alarm: 1 for a group whose replica here differed from the
 * others at the last `khoctl check` (a store read per group). */
static void render_alarms(const struct http_sources *src,
                          const struct scrape *s, struct hbuf *b)
{
    family(b, "kho_check_alarm", "gauge",
           "1 when khoctl check found this replica's data different from "
           "the group's other replicas.");
    for (size_t i = 0; i < s->n; i++) {
        struct store_check_alarm a;
        bool on = store_check_alarm(src->st, s->st[i].group_id, &a) == KHO_OK;
        hbuf_printf(b, "kho_check_alarm{");
        group_labels(b, &s->st[i]);
        hbuf_printf(b, "} %d\n", on ? 1 : 0);
    }
}

enum rfield { R_MATCH, R_LAG, R_ACTIVE, R_COUNT };

static void render_replicas(const struct scrape *s, struct hbuf *b)
{
    static const struct {
        const char *name, *help;
    } rf[R_COUNT] = {
        [R_MATCH] = {"kho_raft_replica_match_index",
                     "Replica's durable log index as its leader (this node) "
                     "last heard."},
        [R_LAG] = {"kho_raft_replica_lag_entries",
                   "Leader's last index minus the replica's match index."},
        [R_ACTIVE] = {"kho_raft_replica_active",
                      "1 when the leader heard from the replica within an "
                      "election timeout."},
    };
    for (int f = 0; f < R_COUNT; f++) {
        family(b, rf[f].name, "gauge", rf[f].help);
        for (size_t i = 0; i < s->n; i++) {
            const struct node_group_status *g = &s->st[i];
            for (uint32_t k = 0; g->role == RAFT_LEADER && k < g->n_replicas;
                 k++) {
                const struct node_replica_status *r = &g->replicas[k];
                uint64_t lag =
                    g->last_index > r->match ? g->last_index - r->match : 0;
                uint64_t v = f == R_MATCH ? r->match
                             : f == R_LAG ? lag
                                          : (uint64_t)r->active;
                hbuf_printf(b, "%s{", rf[f].name);
                group_labels(b, g);
                hbuf_printf(b, ",replica=\"%llu\"} %llu\n",
                            (unsigned long long)r->id, (unsigned long long)v);
            }
        }
    }
}

/* One histogram; `labels` is "" or `key="value",` pairs ending in a comma
 * (already escaped). Bucket bounds and the sum are in seconds. */
static void histogram(struct hbuf *b, const char *name, const char *labels,
                      const struct metrics_hist_snap *h)
{
    for (uint32_t i = 0; i < METRICS_LATENCY_BUCKETS; i++) {
        hbuf_printf(b, "%s_bucket{%sle=\"%g\"} %llu\n", name, labels,
                    (double)metrics_latency_bounds_us[i] / 1e6,
                    (unsigned long long)h->buckets[i]);
    }
    size_t n = strlen(labels);
    hbuf_printf(b, "%s_bucket{%sle=\"+Inf\"} %llu\n", name, labels,
                (unsigned long long)h->count);
    /* Without labels, no braces at all; with them, drop the last comma. */
    if (n == 0) {
        hbuf_printf(b, "%s_sum %.6f\n%s_count %llu\n", name,
                    (double)h->sum_us / 1e6, name,
                    (unsigned long long)h->count);
    } else {
        hbuf_printf(b, "%s_sum{%.*s} %.6f\n%s_count{%.*s} %llu\n", name,
                    (int)n - 1, labels, (double)h->sum_us / 1e6, name,
                    (int)n - 1, labels, (unsigned long long)h->count);
    }
}

static void counter(struct hbuf *b, const char *name, const char *help,
                    uint64_t v)
{
    family(b, name, "counter", help);
    hbuf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

static void gauge(struct hbuf *b, const char *name, const char *help,
                  uint64_t v)
{
    family(b, name, "gauge", help);
    hbuf_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

static void render_node(const struct http_sources *src, const struct scrape *s,
                        struct hbuf *b)
{
    family(b, "kho_node_info", "gauge", "This node's id and name.");
    hbuf_printf(b, "kho_node_info{node=\"%llu\",name=\"",
                (unsigned long long)node_id(src->node));
    hbuf_label(b, node_name(src->node));
    hbuf_printf(b, "\"} 1\n");
    gauge(b, "kho_groups", "Raft groups hosted on this node.", s->n);
    uint64_t quiet = 0;
    for (size_t i = 0; i < s->n; i++) {
        quiet += s->st[i].quiet;
    }
    gauge(b, "kho_groups_quiet",
          "Groups hosted here that are quiet (idle: no ticks, no "
          "heartbeats).",
          quiet);
    const struct node_metrics *m = &s->nm;
    counter(b, "kho_proposals_total",
            "Proposals accepted by a raft group this node leads.",
            m->proposals);
    counter(b, "kho_proposals_refused_total",
            "Proposals refused (not the leader, no room, too large).",
            m->proposals_refused);
    counter(b, "kho_read_index_total",
            "Read-index rounds started for linearizable reads.", m->reads);
    counter(b, "kho_lease_reads_total",
            "Linearizable gets a request thread found a leader lease for "
            "(answered there, unless the store was behind the lease's "
            "commit index).",
            m->lease_reads);
    counter(b, "kho_entries_applied_total",
            "Log entries applied to the state machine.", m->entries_applied);
    family(b, "kho_apply_duration_seconds", "histogram",
           "Time one raft loop spent applying committed entries.");
    histogram(b, "kho_apply_duration_seconds", "", &m->apply_latency);
    family(b, "kho_store_commit_duration_seconds", "histogram",
           "Time one LMDB write transaction took to commit (the fsync).");
    histogram(b, "kho_store_commit_duration_seconds", "", &m->commit_latency);
    uint64_t used = 0, map = 0;
    if (store_space(src->st, &used, &map) == KHO_OK) {
        gauge(b, "kho_store_used_bytes", "Bytes LMDB holds in its map.", used);
        gauge(b, "kho_store_map_bytes", "Size of the LMDB map.", map);
    }
    gauge(b, "kho_store_quota_bytes",
          "Store size above which writes adding data are refused.",
          src->quota_bytes);
}

enum pfield { P_CONNECTED, P_SENT, P_RECV, P_DROPPED, P_AGE, P_COUNT };

static void render_peers(const struct http_sources *src, const struct scrape *s,
                         struct hbuf *b)
{
    static const struct {
        const char *name, *type, *help;
    } pf[P_COUNT] = {
        [P_CONNECTED] = {"kho_peer_connected", "gauge",
                         "1 while this node holds a connection to the peer."},
        [P_SENT] = {"kho_peer_frames_sent_total", "counter",
                    "Frames queued for the peer."},
        [P_RECV] = {"kho_peer_frames_received_total", "counter",
                    "Good frames received from the peer."},
        [P_DROPPED] = {"kho_peer_frames_dropped_total", "counter",
                       "Frames for the peer dropped: queue full or link "
                       "down."},
        [P_AGE] = {"kho_peer_last_receive_seconds", "gauge",
                   "Seconds since the last good frame from the peer."},
    };
    if (src->net == NULL) {
        return;
    }
    for (int f = 0; f < P_COUNT; f++) {
        family(b, pf[f].name, pf[f].type, pf[f].help);
        for (size_t i = 0; i < s->n_peers; i++) {
            const struct net_peer_stats *p = &s->peers[i];
            if (f == P_AGE && p->recv_age_ms == UINT64_MAX) {
                continue; /* never heard from: no sample */
            }
            hbuf_printf(b, "%s{peer=\"%llu\"} ", pf[f].name,
                        (unsigned long long)p->id);
            if (f == P_AGE) {
                hbuf_printf(b, "%.3f\n", (double)p->recv_age_ms / 1e3);
            } else {
                uint64_t v = f == P_CONNECTED ? (uint64_t)p->connected
                             : f == P_SENT    ? p->sent_frames
                             : f == P_RECV    ? p->recv_frames
                                              : p->dropped_frames;
                hbuf_printf(b, "%llu\n", (unsigned long long)v);
            }
        }
    }
    struct net_stats ns;
    net_get_stats(src->net, &ns);
    counter(b, "kho_peer_frames_rejected_total",
            "Frames received and dropped: bad header, cluster, sender or "
            "batch.",
            ns.dropped_bad);
}

/* "put", "registry_create": the proto name of op without OP_, in lower
 * case; "op_N" for a value the schema does not name. */
static void op_name(uint32_t op, char *out, size_t len)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
        &kho__api__op__descriptor, (int)op);
    if (v == NULL) {
        snprintf(out, len, "op_%u", op);
        return;
    }
    const char *name = strncmp(v->name, "OP_", 3) == 0 ? v->name + 3 : v->name;
    size_t i = 0;
    for (; name[i] != '\0' && i + 1 < len; i++) {
        out[i] = (char)tolower((unsigned char)name[i]);
    }
    out[i] = '\0';
}

static void render_requests(struct hbuf *b)
{
    family(b, "kho_requests_total", "counter",
           "Client requests answered, by op and outcome (a kho_err name).");
    for (uint32_t op = 0; op < METRICS_OPS_MAX; op++) {
        char name[64];
        op_name(op, name, sizeof(name));
        for (uint32_t e = 0; e < METRICS_ERRS_MAX; e++) {
            uint64_t v = metrics_requests(op, e);
            if (v != 0) {
                hbuf_printf(b,
                            "kho_requests_total{op=\"%s\",err=\"%s\"} %llu\n",
                            name, metrics_err_name(e), (unsigned long long)v);
            }
        }
    }
    family(b, "kho_request_duration_seconds", "histogram",
           "Time from a client request's arrival to its answer, by op.");
    for (uint32_t op = 0; op < METRICS_OPS_MAX; op++) {
        if (!metrics_op_seen(op)) {
            continue;
        }
        char name[64], labels[80];
        op_name(op, name, sizeof(name));
        snprintf(labels, sizeof(labels), "op=\"%s\",", name);
        struct metrics_hist_snap h;
        metrics_request_latency(op, &h);
        histogram(b, "kho_request_duration_seconds", labels, &h);
    }
}

void http_metrics_render(const struct http_sources *src, struct hbuf *b)
{
    struct scrape *s = malloc(sizeof(*s));
    if (s == NULL) {
        b->err = KHO_ENOMEM;
        return;
    }
    s->n = node_status(src->node, s->st, NODE_GROUPS_MAX);
    s->n_gm = node_group_metrics(src->node, s->gm, NODE_GROUPS_MAX);
    node_metrics(src->node, &s->nm);
    s->n_peers = 0;
    if (src->net != NULL) {
        size_t k = net_peer_stats(src->net, s->peers, NET_PEERS_MAX);
        s->n_peers = k < NET_PEERS_MAX ? k : NET_PEERS_MAX;
    }
    render_groups(s, b);
    render_alarms(src, s, b);
    render_replicas(s, b);
    render_node(src, s, b);
    render_peers(src, s, b);
    render_requests(b);
    free(s);
}

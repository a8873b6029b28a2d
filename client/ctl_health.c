/*
 * ctl_health.c - khoctl cluster health [--json].
 *
 * Asks every endpoint for its status (kho_node_status) and judges each raft
 * group - the meta group and every registry's group - by its leader's
 * report: the group is healthy when some node reports leading it and, in
 * that leader's view, a quorum of the group's voters is active (heard from
 * within an election timeout). When two nodes claim the lead (an old
 * leader cut off from the rest), the one of the higher term counts. When
 * the meta group is healthy, the registry list shows registries whose
 * group no endpoint reported.
 *
 * Exit 0 when every group is healthy and every endpoint answered; 3
 * otherwise, with one line per problem on stderr.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_cmd.h"

/* Distinct groups one check judges: the meta group and every registry. */
#define HEALTH_GROUPS_MAX (KHO_REGISTRIES_MAX + 1u)
#define HEALTH_REASON_BYTES 96u

struct group_health {
    uint64_t group_id;
    char registry[KHO_NAME_BYTES_MAX + 1];
    uint64_t leader, term; /* of the highest-term leader report; 0: none */
    uint32_t voters, active;
    bool healthy;
    char reason[HEALTH_REASON_BYTES];
};

struct health {
    struct group_health groups[HEALTH_GROUPS_MAX];
    size_t n_groups;
    bool truncated;      /* more groups than HEALTH_GROUPS_MAX */
    json_t *unreachable; /* --json */
    size_t n_unreachable;
};

static struct group_health *group_of(struct health *h, uint64_t gid,
                                     const char *registry)
{
    for (size_t i = 0; i < h->n_groups; i++) {
        if (h->groups[i].group_id == gid) {
            return &h->groups[i];
        }
    }
    if (h->n_groups == HEALTH_GROUPS_MAX) {
        h->truncated = true;
        return NULL;
    }
    struct group_health *g = &h->groups[h->n_groups++];
    memset(g, 0, sizeof(*g));
    g->group_id = gid;
    snprintf(g->registry, sizeof(g->registry), "%s", registry);
    return g;
}

/* Takes what one node reported of group s. */
static void add_group(struct health *h, const struct kho_node_status *st,
                      const struct kho_group_status *s)
{
    struct group_health *g = group_of(h, s->group_id, s->registry);
    if (g == NULL || strcmp(s->role, "leader") != 0 ||
        (g->leader != 0 && s->term <= g->term)) {
        return;
    }
    g->leader = st->node_id;
    g->term = s->term;
    g->voters = g->active = 0;
    for (size_t k = 0; k < s->n_replicas; k++) {
        const struct kho_replica_status *r = &s->replicas[k];
        bool voter = strcmp(r->role, "voter") == 0;
        g->voters += voter;
        g->active += voter && r->active;
    }
}

static void judge(struct group_health *g)
{
    g->healthy = false;
    if (g->leader == 0) {
        snprintf(g->reason, sizeof(g->reason), "no node reports leading it");
    } else if (g->voters == 0) {
        snprintf(g->reason, sizeof(g->reason), "its leader reports no voters");
    } else if (g->active < g->voters / 2 + 1) {
        snprintf(g->reason, sizeof(g->reason),
                 "%u of %u voters active, a quorum needs %u", g->active,
                 g->voters, g->voters / 2 + 1);
    } else {
        g->healthy = true;
    }
}

static void note_unreachable(struct health *h, struct kho_client *c,
                             const char *url, int err)
{
    fprintf(stderr, "khoctl: cluster health: %s: %s (%s)%s%s\n", url,
            kho_strerror(err), kho_errname(err),
            kho_client_errmsg(c)[0] != '\0' ? ": " : "", kho_client_errmsg(c));
    h->n_unreachable++;
    if (h->unreachable == NULL) {
        return;
    }
    json_t *u = json_object();
    if (u != NULL &&
        (json_object_set_new(u, "endpoint", json_string(url)) |
         json_object_set_new(u, "error", json_string(kho_errname(err)))) != 0) {
        json_decref(u);
        u = NULL;
    }
    json_array_append_new(h->unreachable, u);
}

/* With a healthy meta group: registry shards whose group nobody
 * reported. */
static void add_registries(struct health *h, struct kho_client *c)
{
    struct kho_registry_info *regs = NULL;
    size_t n = 0;
    int err = kho_registry_list(c, &regs, &n);
    if (err != KHO_OK) {
        struct group_health *meta = group_of(h, 0, "(meta)");
        if (meta != NULL && meta->healthy) {
            meta->healthy = false;
            snprintf(meta->reason, sizeof(meta->reason),
                     "listing the registries failed: %s", kho_errname(err));
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        group_of(h, regs[i].group_id, regs[i].name);
        struct kho_shard_map *m = NULL;
        if (regs[i].shards <= 1 ||
            kho_shard_map(c, regs[i].name, &m) != KHO_OK) {
            continue; /* its other shards: as the nodes report them */
        }
        for (uint32_t s = 1; s < m->shards; s++) {
            group_of(h, m->shard_list[s].group_id, regs[i].name);
        }
        kho_shard_map_free(m);
    }
    free(regs);
}

static json_t *group_json(const struct group_health *g)
{
    json_t *o = json_object();
    if (o == NULL) {
        return NULL;
    }
    int rc = ctl_json_set_u64(o, "group", g->group_id);
    rc |= ctl_json_set_bytes(o, "registry", g->registry, strlen(g->registry));
    rc |= ctl_json_set_u64(o, "leader", g->leader);
    rc |= ctl_json_set_u64(o, "term", g->term);
    rc |= ctl_json_set_u64(o, "voters", g->voters);
    rc |= ctl_json_set_u64(o, "active", g->active);
    rc |= json_object_set_new(o, "healthy", json_boolean(g->healthy));
    if (!g->healthy) {
        rc |= json_object_set_new(o, "reason", json_string(g->reason));
    }
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int print_json(struct health *h, bool healthy)
{
    json_t *o = json_object();
    json_t *groups = json_array();
    int rc = o == NULL || groups == NULL;
    for (size_t i = 0; rc == 0 && i < h->n_groups; i++) {
        rc |= json_array_append_new(groups, group_json(&h->groups[i]));
    }
    rc |= json_object_set_new(o, "healthy", json_boolean(healthy));
    rc |= json_object_set_new(o, "unreachable", h->unreachable);
    rc |= json_object_set_new(o, "groups", groups);
    h->unreachable = NULL;
    if (rc != 0) {
        json_decref(o);
        o = NULL;
    }
    return ctl_print_json(o);
}

static int print_table(const struct health *h)
{
    struct ctl_table *t =
        ctl_table_new("GROUP> REGISTRY LEADER> VOTERS> ACTIVE> HEALTHY");
    for (size_t i = 0; t != NULL && i < h->n_groups; i++) {
        const struct group_health *g = &h->groups[i];
        ctl_table_add_u64(t, g->group_id);
        ctl_table_add_bytes(t, g->registry, strlen(g->registry),
                            CTL_KEY_CHARS_MAX);
        if (g->leader != 0) {
            ctl_table_add_u64(t, g->leader);
        } else {
            ctl_table_add(t, "-");
        }
        ctl_table_add_u64(t, g->voters);
        ctl_table_add_u64(t, g->active);
        ctl_table_add(t, g->healthy ? "yes" : "no");
    }
    return ctl_print_table(t);
}

static int group_cmp(const void *a, const void *b)
{
    const struct group_health *x = a, *y = b;
    return x->group_id < y->group_id ? -1 : x->group_id > y->group_id;
}

/* Asks every endpoint and judges every group; returns whether the cluster
 * is healthy (problems are on stderr). */
static bool check(struct health *h, struct kho_client *c)
{
    static struct kho_node_status st; /* about 280 KiB */
    for (size_t i = 0; i < kho_client_endpoints(c); i++) {
        const char *url = kho_client_endpoint(c, i);
        int err = kho_node_status(c, i, &st);
        if (err != KHO_OK) {
            note_unreachable(h, c, url, err);
            continue;
        }
        for (size_t k = 0; k < st.n_groups; k++) {
            add_group(h, &st, &st.groups[k]);
        }
    }
    struct group_health *meta =
        h->n_groups > 0 ? group_of(h, 0, "(meta)") : NULL;
    if (meta != NULL) {
        judge(meta);
        if (meta->healthy) {
            add_registries(h, c);
        }
    }
    qsort(h->groups, h->n_groups, sizeof(h->groups[0]), group_cmp);
    bool healthy = h->n_groups > 0 && h->n_unreachable == 0 && !h->truncated;
    for (size_t i = 0; i < h->n_groups; i++) {
        struct group_health *g = &h->groups[i];
        if (g->group_id != 0) {
            judge(g);
        }
        if (!g->healthy) {
            fprintf(stderr, "khoctl: cluster health: group %llu (%s): %s\n",
                    (unsigned long long)g->group_id, g->registry, g->reason);
            healthy = false;
        }
    }
    if (h->n_groups == 0) {
        fprintf(stderr, "khoctl: cluster health: no node answered\n");
    }
    if (h->truncated) {
        fprintf(stderr,
                "khoctl: cluster health: more than %u groups; the "
                "rest were not checked\n",
                HEALTH_GROUPS_MAX);
    }
    return healthy;
}

int ctl_cmd_cluster_health(struct ctl *x, const struct command *cmd, int argc,
                           char **argv)
{
    bool json = false;
    const struct opt opts[] = {
        {"--json", OPT_FLAG, &json, NULL, NULL, 0, 0},
    };
    struct kho_client *c = NULL;
    int code = 0;
    if (!ctl_start(x, cmd, argc, argv, opts, 1, NULL, 0, 0, &c, &code)) {
        return code;
    }
    static struct health h; /* about 800 KiB */
    memset(&h, 0, sizeof(h));
    if (json && (h.unreachable = json_array()) == NULL) {
        return ctl_fail(NULL, "cluster health", KHO_ENOMEM);
    }
    bool healthy = check(&h, c);
    int rc = 0;
    if (json) {
        rc = print_json(&h, healthy);
    } else if (h.n_groups > 0) {
        rc = print_table(&h);
    }
    if (rc != 0) {
        return rc;
    }
    return healthy ? 0 : EXIT_UNAVAILABLE;
}

/*
 * ctl_shard.c - khoctl shard list|describe|move and cluster rebalance, and
 * the shard table `registry describe` shows.
 *
 *   shard list [REG]         every shard of REG (of every registry when
 *                            omitted): its group, replicas and leader
 *   shard describe REG N     shard N (0-based, as kho_shard_of() numbers
 *                            them): its leader's view and every replica
 *   shard move REG N FROM TO moves shard N's replica on node FROM to TO
 *   cluster rebalance        evens out the replicas over the nodes;
 *                            --dry-run only shows the plan
 *
 * Nodes are shown by name (the map names every node it mentions), ids go
 * in the JSON beside the names.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_cmd.h"

/* "hanoi,hue,danang": a shard's replicas by name. */
#define SHARD_REPLICAS_TEXT_BYTES                                              \
    (KHO_REPLICAS_MAX * (KHO_NAME_BYTES_MAX + 1) + 1)

/* The name of node id in m ("" unknown). */
static const char *node_name(const struct kho_shard_map *m, uint64_t id)
{
    for (size_t i = 0; i < m->n_nodes; i++) {
        if (m->nodes[i].id == id) {
            return m->nodes[i].name;
        }
    }
    return "";
}

static const struct kho_node_info *node_info(const struct kho_shard_map *m,
                                             uint64_t id)
{
    for (size_t i = 0; i < m->n_nodes; i++) {
        if (m->nodes[i].id == id) {
            return &m->nodes[i];
        }
    }
    return NULL;
}

/* A node for people: its name, else its id, else "-". */
static void node_text(const struct kho_shard_map *m, uint64_t id, char *buf,
                      size_t cap)
{
    const char *name = node_name(m, id);
    if (id == 0) {
        snprintf(buf, cap, "-");
    } else if (name[0] != '\0') {
        snprintf(buf, cap, "%s", name);
    } else {
        snprintf(buf, cap, "%llu", (unsigned long long)id);
    }
}

static void replicas_text(const struct kho_shard_map *m,
                          const struct kho_shard_info *s, char *buf, size_t cap)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t k = 0; k < s->n_replicas && o < cap; k++) {
        char one[KHO_NAME_BYTES_MAX + 1];
        node_text(m, s->replicas[k], one, sizeof(one));
        int n = snprintf(buf + o, cap - o, "%s%s", k > 0 ? "," : "", one);
        o += n > 0 ? (size_t)n : 0;
    }
    if (buf[0] == '\0') {
        snprintf(buf, cap, "-");
    }
}

void ctl_shard_rows(struct ctl_table *t, const struct kho_shard_map *m,
                    bool with_registry)
{
    for (uint32_t i = 0; t != NULL && i < m->shards; i++) {
        const struct kho_shard_info *s = &m->shard_list[i];
        char reps[SHARD_REPLICAS_TEXT_BYTES], leader[KHO_NAME_BYTES_MAX + 1];
        replicas_text(m, s, reps, sizeof(reps));
        node_text(m, s->leader, leader, sizeof(leader));
        if (with_registry) {
            ctl_table_add_bytes(t, m->registry, strlen(m->registry),
                                CTL_KEY_CHARS_MAX);
        }
        ctl_table_add_u64(t, s->shard);
        ctl_table_add_u64(t, s->group_id);
        ctl_table_add_bytes(t, reps, strlen(reps), CTL_CELL_CHARS_MAX);
        ctl_table_add_bytes(t, leader, strlen(leader), CTL_KEY_CHARS_MAX);
    }
}

/* One shard: registry, shard, group, replicas (ids), replica_names,
 * leader (id, 0 unknown), leader_name, leader_url, term, commit, applied. */
static json_t *shard_json(const struct kho_shard_map *m,
                          const struct kho_shard_info *s)
{
    json_t *o = json_object();
    json_t *ids = json_array();
    json_t *names = json_array();
    int rc = o == NULL || ids == NULL || names == NULL;
    for (size_t k = 0; rc == 0 && k < s->n_replicas; k++) {
        const char *name = node_name(m, s->replicas[k]);
        rc |= json_array_append_new(ids, ctl_json_u64(s->replicas[k]));
        rc |= json_array_append_new(names, json_string(name));
    }
    const char *leader = node_name(m, s->leader);
    rc |= o == NULL ||
          ctl_json_set_bytes(o, "registry", m->registry, strlen(m->registry));
    rc |= o == NULL || ctl_json_set_u64(o, "shard", s->shard);
    rc |= o == NULL || ctl_json_set_u64(o, "group", s->group_id);
    rc |= o == NULL || json_object_set(o, "replicas", ids);
    rc |= o == NULL || json_object_set(o, "replica_names", names);
    rc |= o == NULL || ctl_json_set_u64(o, "leader", s->leader);
    rc |=
        o == NULL || json_object_set_new(o, "leader_name", json_string(leader));
    rc |= o == NULL || ctl_json_set_bytes(o, "leader_url", s->leader_url,
                                          strlen(s->leader_url));
    rc |= o == NULL || ctl_json_set_u64(o, "term", s->term);
    rc |= o == NULL || ctl_json_set_u64(o, "commit", s->commit);
    rc |= o == NULL || ctl_json_set_u64(o, "applied", s->applied);
    json_decref(ids);
    json_decref(names);
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *ctl_json_shards(const struct kho_shard_map *m)
{
    json_t *a = json_array();
    for (uint32_t i = 0; a != NULL && i < m->shards; i++) {
        if (json_array_append_new(a, shard_json(m, &m->shard_list[i])) != 0) {
            json_decref(a);
            a = NULL;
        }
    }
    return a;
}

bool ctl_shards_unknown(struct kho_client *c, int err)
{
    return err == KHO_EINVAL &&
           strstr(kho_client_errmsg(c), "does not know shard maps") != NULL;
}

/* --- shard list ---------------------------------------------------------- */

/* Adds the shards of one registry to the table or the JSON array; returns
 * KHO_OK or the error (KHO_ENOTFOUND: it went away meanwhile, skipped). */
static int list_one(struct kho_client *c, const char *registry,
                    struct ctl_table *t, json_t *arr)
{
    struct kho_shard_map *m = NULL;
    int err = kho_shard_map(c, registry, &m);
    if (err != KHO_OK) {
        return err;
    }
    if (arr != NULL) {
        for (uint32_t i = 0; err == KHO_OK && i < m->shards; i++) {
            if (json_array_append_new(arr, shard_json(m, &m->shard_list[i])) !=
                0) {
                err = KHO_ENOMEM;
            }
        }
    } else {
        ctl_shard_rows(t, m, true);
    }
    kho_shard_map_free(m);
    return err;
}

/* The registries to list: the one named, or all of them. */
static int list_names(struct kho_client *c, const char *named,
                      struct kho_registry_info **regs, size_t *n)
{
    if (named != NULL) {
        *regs = calloc(1, sizeof(**regs));
        if (*regs == NULL) {
            return KHO_ENOMEM;
        }
        snprintf((*regs)[0].name, sizeof((*regs)[0].name), "%s", named);
        *n = 1;
        return KHO_OK;
    }
    return kho_registry_list(c, regs, n);
}

int ctl_cmd_shard_list(struct ctl *x, const struct command *cmd, int argc,
                       char **argv)
{
    bool json = false;
    const struct opt opts[] = {
        {"--json", OPT_FLAG, &json, NULL, NULL, 0, 0},
    };
    char *pos[1] = {NULL};
    struct kho_client *c = NULL;
    int code = 0;
    if (!ctl_start(x, cmd, argc, argv, opts, 1, pos, 0, 1, &c, &code)) {
        return code;
    }
    struct kho_registry_info *regs = NULL;
    size_t n = 0;
    int err = list_names(c, pos[0], &regs, &n);
    if (err != KHO_OK) {
        return ctl_fail(c, "shard list: registry list", err);
    }
    json_t *arr = json ? json_array() : NULL;
    struct ctl_table *t =
        json ? NULL : ctl_table_new("REGISTRY SHARD> GROUP> REPLICAS LEADER");
    err = (json ? arr == NULL : t == NULL) ? KHO_ENOMEM : KHO_OK;
    for (size_t i = 0; err == KHO_OK && i < n; i++) {
        err = list_one(c, regs[i].name, t, arr);
        if (err == KHO_ENOTFOUND && pos[0] == NULL) {
            err = KHO_OK; /* dropped since the list */
        }
    }
    free(regs);
    if (err != KHO_OK) {
        json_decref(arr);
        ctl_table_free(t);
        return ctl_fail(c, "shard list", err);
    }
    return json ? ctl_print_json(json_pack("{s:o}", "shards", arr))
                : ctl_print_table(t);
}

/* --- shard describe ------------------------------------------------------ */

static int describe_json(const struct kho_shard_map *m,
                         const struct kho_shard_info *s)
{
    json_t *o = shard_json(m, s);
    json_t *nodes = json_array();
    int rc = o == NULL || nodes == NULL;
    for (size_t k = 0; rc == 0 && k < s->n_replicas; k++) {
        const struct kho_node_info *n = node_info(m, s->replicas[k]);
        json_t *r = json_object();
        rc |= r == NULL || ctl_json_set_u64(r, "id", s->replicas[k]);
        rc |= r == NULL ||
              json_object_set_new(r, "name", json_string(n ? n->name : ""));
        rc |= r == NULL ||
              json_object_set_new(r, "client_url",
                                  json_string(n ? n->client_url : ""));
        rc |= r == NULL ||
              json_object_set_new(r, "leader",
                                  json_boolean(s->replicas[k] == s->leader));
        rc |= json_array_append_new(nodes, r);
    }
    rc |= o == NULL || json_object_set(o, "nodes", nodes);
    json_decref(nodes);
    if (rc != 0) {
        json_decref(o);
        o = NULL;
    }
    return ctl_print_json(o);
}

static int describe_tables(const struct kho_shard_map *m,
                           const struct kho_shard_info *s)
{
    char leader[KHO_NAME_BYTES_MAX + 1];
    node_text(m, s->leader, leader, sizeof(leader));
    struct ctl_table *t = ctl_table_new(
        "REGISTRY SHARD> GROUP> LEADER TERM> COMMIT> APPLIED> HOME");
    if (t != NULL) {
        ctl_table_add_bytes(t, m->registry, strlen(m->registry),
                            CTL_KEY_CHARS_MAX);
        ctl_table_add_u64(t, s->shard);
        ctl_table_add_u64(t, s->group_id);
        ctl_table_add_bytes(t, leader, strlen(leader), CTL_KEY_CHARS_MAX);
        ctl_table_add_u64(t, s->term);
        ctl_table_add_u64(t, s->commit);
        ctl_table_add_u64(t, s->applied);
        ctl_table_add(t, m->home[0] != '\0' ? m->home : "-");
    }
    int rc = ctl_print_table(t);
    if (rc != 0) {
        return rc;
    }
    putchar('\n');
    t = ctl_table_new("NODE> NAME ROLE CLIENT_URL");
    for (size_t k = 0; t != NULL && k < s->n_replicas; k++) {
        const struct kho_node_info *n = node_info(m, s->replicas[k]);
        ctl_table_add_u64(t, s->replicas[k]);
        ctl_table_add(t, n != NULL && n->name[0] != '\0' ? n->name : "-");
        ctl_table_add(t, s->replicas[k] == s->leader ? "leader" : "replica");
        ctl_table_add(t, n != NULL && n->client_url[0] != '\0' ? n->client_url
                                                               : "-");
    }
    return ctl_print_table(t);
}

int ctl_cmd_shard_describe(struct ctl *x, const struct command *cmd, int argc,
                           char **argv)
{
    bool json = false;
    const struct opt opts[] = {
        {"--json", OPT_FLAG, &json, NULL, NULL, 0, 0},
    };
    char *pos[2] = {NULL};
    uint64_t shard = 0;
    int rc = ctl_parse_args(cmd, argc, argv, opts, 1, pos, 2, 2);
    if (rc == 0 &&
        (!ctl_parse_u64(pos[1], &shard) || shard >= KHO_SHARDS_MAX)) {
        rc = ctl_usage_error(cmd, "SHARD '%s' is not a number from 0 to 255",
                             pos[1]);
    }
    struct kho_client *c = NULL;
    if (rc == 0) {
        rc = ctl_client_of(x, &c);
    }
    if (rc != 0) {
        return ctl_parsed_code(rc);
    }
    struct kho_shard_map *m = NULL;
    int err = kho_shard_map(c, pos[0], &m);
    if (err != KHO_OK) {
        return ctl_fail(c, "shard describe", err);
    }
    if (shard >= m->shards) {
        fprintf(stderr,
                "khoctl: shard describe: %s (%s): registry '%s' has %u "
                "shards, 0 to %u\n",
                kho_strerror(KHO_ENOTFOUND), kho_errname(KHO_ENOTFOUND),
                m->registry, m->shards, m->shards - 1);
        kho_shard_map_free(m);
        return EXIT_NOT_FOUND;
    }
    const struct kho_shard_info *s = &m->shard_list[shard];
    rc = json ? describe_json(m, s) : describe_tables(m, s);
    kho_shard_map_free(m);
    return rc;
}

/* --- shard move, cluster rebalance -------------------------------------- */

static json_t *move_json(const struct kho_shard_move *v)
{
    json_t *o = json_object();
    int rc = o == NULL;
    rc |= rc ||
          ctl_json_set_bytes(o, "registry", v->registry, strlen(v->registry));
    rc |= rc || ctl_json_set_u64(o, "shard", v->shard);
    rc |= rc || ctl_json_set_u64(o, "from", v->from);
    rc |= rc || ctl_json_set_bytes(o, "from_name", v->from_name,
                                   strlen(v->from_name));
    rc |= rc || ctl_json_set_u64(o, "to", v->to);
    rc |=
        rc || ctl_json_set_bytes(o, "to_name", v->to_name, strlen(v->to_name));
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Prints moves: {"moves":[...],"dry_run":B} or a table (nothing when
 * there are none); returns an exit code. */
static int print_moves(const struct kho_shard_move *v, size_t n, bool json,
                       bool dry_run)
{
    if (json) {
        json_t *a = json_array();
        for (size_t i = 0; a != NULL && i < n; i++) {
            if (json_array_append_new(a, move_json(&v[i])) != 0) {
                json_decref(a);
                a = NULL;
            }
        }
        return ctl_print_json(a == NULL ? NULL
                                        : json_pack("{s:o, s:b}", "moves", a,
                                                    "dry_run", dry_run));
    }
    if (n == 0) {
        return 0;
    }
    struct ctl_table *t = ctl_table_new("REGISTRY SHARD> FROM TO");
    for (size_t i = 0; t != NULL && i < n; i++) {
        ctl_table_add_bytes(t, v[i].registry, strlen(v[i].registry),
                            CTL_KEY_CHARS_MAX);
        ctl_table_add_u64(t, v[i].shard);
        ctl_table_add_bytes(t, v[i].from_name, strlen(v[i].from_name),
                            CTL_KEY_CHARS_MAX);
        ctl_table_add_bytes(t, v[i].to_name, strlen(v[i].to_name),
                            CTL_KEY_CHARS_MAX);
    }
    return ctl_print_table(t);
}

int ctl_cmd_shard_move(struct ctl *x, const struct command *cmd, int argc,
                       char **argv)
{
    bool json = false;
    const struct opt opts[] = {
        {"--json", OPT_FLAG, &json, NULL, NULL, 0, 0},
    };
    char *pos[4] = {NULL};
    uint64_t shard = 0;
    int rc = ctl_parse_args(cmd, argc, argv, opts, 1, pos, 4, 4);
    if (rc == 0 &&
        (!ctl_parse_u64(pos[1], &shard) || shard >= KHO_SHARDS_MAX)) {
        rc = ctl_usage_error(cmd, "SHARD '%s' is not a number from 0 to 255",
                             pos[1]);
    }
    if (rc == 0 && strcmp(pos[2], pos[3]) == 0) {
        rc = ctl_usage_error(cmd, "%s", "FROM_NODE and TO_NODE are the same");
    }
    struct kho_client *c = NULL;
    if (rc == 0) {
        rc = ctl_client_of(x, &c);
    }
    if (rc != 0) {
        return ctl_parsed_code(rc);
    }
    struct kho_shard_move *v = NULL;
    size_t n = 0;
    int err =
        kho_shard_move(c, pos[0], (uint32_t)shard, pos[2], pos[3], &v, &n);
    if (err != KHO_OK) {
        return ctl_fail(c, "shard move", err);
    }
    rc = print_moves(v, n, json, false);
    free(v);
    if (rc == 0 && !json) {
        fprintf(stderr,
                "ok: shard %llu of %s moves from %s to %s; its leader adds "
                "%s as a learner, promotes it once caught up and removes %s "
                "(watch khoctl shard describe %s %llu)\n",
                (unsigned long long)shard, pos[0], pos[2], pos[3], pos[3],
                pos[2], pos[0], (unsigned long long)shard);
    }
    return rc;
}

int ctl_cmd_cluster_rebalance(struct ctl *x, const struct command *cmd,
                              int argc, char **argv)
{
    bool json = false, dry_run = false;
    const struct opt opts[] = {
        {"--dry-run", OPT_FLAG, &dry_run, NULL, NULL, 0, 0},
        {"--json", OPT_FLAG, &json, NULL, NULL, 0, 0},
    };
    struct kho_client *c = NULL;
    int code = 0;
    if (!ctl_start(x, cmd, argc, argv, opts, 2, NULL, 0, 0, &c, &code)) {
        return code;
    }
    struct kho_shard_move *v = NULL;
    size_t n = 0;
    int err = kho_rebalance(c, dry_run, &v, &n);
    if (err != KHO_OK) {
        return ctl_fail(c, "cluster rebalance", err);
    }
    int rc = print_moves(v, n, json, dry_run);
    free(v);
    if (rc != 0 || json) {
        return rc;
    }
    if (n == 0) {
        fprintf(stderr, "ok: the replicas are even; nothing to move\n");
    } else if (dry_run) {
        fprintf(stderr, "dry run: %zu move%s planned, none recorded\n", n,
                n == 1 ? "" : "s");
    } else {
        fprintf(stderr,
                "ok: %zu move%s recorded; the shards' leaders carry them out "
                "(watch khoctl shard list)\n",
                n, n == 1 ? "" : "s");
    }
    return 0;
}

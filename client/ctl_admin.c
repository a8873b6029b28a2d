/*
 * ctl_admin.c - khoctl check and backup.
 *
 *   check [REG]   for every group (the meta group and each registry), or
 *                 only REG's: places a check marker through the group's
 *                 leader, asks every replica for its state hash at that
 *                 marker, and compares. A replica whose hash differs from
 *                 the majority's gets a check alarm (kept by its node,
 *                 shown by `cluster status`); a check that finds a group
 *                 consistent clears its replicas' alarms. Exit 0 when all
 *                 agree, 1 on a mismatch, 3 when a replica could not be
 *                 asked.
 *   backup FILE   a checked backup of the whole cluster from one node
 *                 (or, when none hosts every registry shard, merged from
 *                 several: kho_backup()), written to FILE atomically (a
 *                 temporary file, fsync, rename, fsync of the directory).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl_cmd.h"

/* Markers one group may take: a replica that skipped a marker (it got a
 * snapshot instead) is asked again at a new one. */
#define CHECK_TRIES 3
#define CHECK_MSG_BYTES 256u

/* --- check ------------------------------------------------------------------
 */

/* The cluster as one node sees it. */
struct view {
    struct kho_node_status st; /* about 280 KiB: kept off the stack */
    struct kho_registry_info *regs;
    size_t n_regs;
};

struct replica {
    uint64_t node;
    char name[KHO_NAME_BYTES_MAX + 1];
    const char *url; /* NULL: the node is unknown */
    struct kho_check_hash h;
    int err;
    char msg[CHECK_MSG_BYTES];
    bool ok; /* agrees with the majority */
};

struct group_check {
    uint64_t group_id;
    const char *registry; /* NULL: the meta group */
    uint64_t index;       /* the marker */
    int err;              /* placing the marker */
    char msg[CHECK_MSG_BYTES];
    size_t n;
    struct replica r[KHO_GROUP_MEMBERS_MAX];
    uint64_t majority; /* the hash most replicas hold */
    bool has_majority;
    size_t mismatches, unreachable;
};

static int load_view(struct kho_client *c, struct view *v)
{
    int err = KHO_EUNAVAILABLE;
    for (size_t i = 0; err != KHO_OK && i < kho_client_endpoints(c); i++) {
        err = kho_node_status(c, i, &v->st);
    }
    if (err != KHO_OK) {
        return ctl_fail(c, "check: cluster status", err);
    }
    err = kho_registry_list(c, &v->regs, &v->n_regs);
    return err == KHO_OK ? 0 : ctl_fail(c, "check: registry list", err);
}

static const struct kho_node_info *node_of(const struct view *v, uint64_t id)
{
    for (size_t i = 0; i < v->st.n_nodes; i++) {
        if (v->st.nodes[i].id == id) {
            return &v->st.nodes[i];
        }
    }
    return NULL;
}

/* The replicas of a group: a registry's placement, or the meta group's
 * members as the answering node knows them (every node still a member
 * when it does not say). */
static size_t replicas_of(const struct view *v, const struct group_check *g,
                          const struct kho_registry_info *reg, uint64_t *ids)
{
    size_t n = 0;
    if (reg != NULL) {
        for (size_t i = 0; i < reg->n_replicas && n < KHO_GROUP_MEMBERS_MAX;
             i++) {
            ids[n++] = reg->replicas[i];
        }
        return n;
    }
    for (size_t i = 0; i < v->st.n_groups; i++) {
        const struct kho_group_status *gs = &v->st.groups[i];
        for (size_t k = 0; gs->group_id == g->group_id && k < gs->n_replicas &&
                           n < KHO_GROUP_MEMBERS_MAX;
             k++) {
            ids[n++] = gs->replicas[k].node;
        }
    }
    if (n > 0) {
        return n;
    }
    for (size_t i = 0; i < v->st.n_nodes && n < KHO_GROUP_MEMBERS_MAX; i++) {
        if (!v->st.nodes[i].removed) {
            ids[n++] = v->st.nodes[i].id;
        }
    }
    return n;
}

static void ask_replica(struct kho_client *c, const struct group_check *g,
                        struct replica *r)
{
    if (r->url == NULL) {
        r->err = KHO_EUNAVAILABLE;
        snprintf(r->msg, sizeof(r->msg), "node %" PRIu64 " is unknown",
                 r->node);
        return;
    }
    r->err = kho_check_hash(c, r->url, g->group_id, g->index, &r->h);
    r->msg[0] = '\0';
    if (r->err != KHO_OK) {
        snprintf(r->msg, sizeof(r->msg), "%s", kho_client_errmsg(c));
    }
}

/* Places a marker and asks every replica; again at a new marker when a
 * replica skipped it. */
static void run_group(struct kho_client *c, struct group_check *g)
{
    for (int t = 0; t < CHECK_TRIES; t++) {
        g->err = kho_check_mark(c, g->registry, g->group_id, &g->index);
        if (g->err != KHO_OK) {
            snprintf(g->msg, sizeof(g->msg), "%s", kho_client_errmsg(c));
            return;
        }
        bool skipped = false;
        for (size_t i = 0; i < g->n; i++) {
            ask_replica(c, g, &g->r[i]);
            skipped = skipped || g->r[i].err == KHO_ESTALE;
        }
        if (!skipped) {
            return;
        }
    }
}

/* The hash more than half of the answering replicas hold, if any; every
 * replica not holding it disagrees. */
static void judge(struct group_check *g)
{
    size_t answered = 0, best = 0;
    for (size_t i = 0; i < g->n; i++) {
        size_t same = 0;
        if (g->r[i].err != KHO_OK) {
            g->unreachable++;
            continue;
        }
        answered++;
        for (size_t k = 0; k < g->n; k++) {
            same += g->r[k].err == KHO_OK && g->r[k].h.hash == g->r[i].h.hash;
        }
        if (same > best) {
            best = same;
            g->majority = g->r[i].h.hash;
        }
    }
    g->has_majority = answered > 0 && best * 2 > answered;
    for (size_t i = 0; i < g->n; i++) {
        struct replica *r = &g->r[i];
        r->ok = r->err == KHO_OK && g->has_majority && r->h.hash == g->majority;
        g->mismatches += r->err == KHO_OK && !r->ok;
    }
}

static const char *group_name(const struct group_check *g)
{
    return g->registry != NULL ? g->registry : "(meta)";
}

/* Tells each disagreeing replica's node; clears the alarms of a group
 * found consistent. */
static void alarms(struct kho_client *c, const struct group_check *g)
{
    for (size_t i = 0; i < g->n; i++) {
        const struct replica *r = &g->r[i];
        int err = KHO_OK;
        if (r->err != KHO_OK) {
            continue;
        }
        if (!r->ok) {
            fprintf(stderr,
                    "khoctl: check: MISMATCH in group %" PRIu64 " (%s): node "
                    "%" PRIu64 " (%s) has hash %016" PRIx64 " at index %" PRIu64
                    ", %s%016" PRIx64 "; raising its check alarm\n",
                    g->group_id, group_name(g), r->node, r->name, r->h.hash,
                    g->index,
                    g->has_majority ? "the other replicas have "
                                    : "no majority; the most common is ",
                    g->majority);
            err = kho_check_alarm(c, r->url, g->group_id, g->index, r->h.hash,
                                  g->majority);
        } else if (r->h.alarm && g->mismatches == 0) {
            fprintf(stderr,
                    "khoctl: check: group %" PRIu64 " (%s) is consistent "
                    "again; clearing node %" PRIu64 " (%s)'s alarm\n",
                    g->group_id, group_name(g), r->node, r->name);
            err = kho_check_alarm_clear(c, r->url, g->group_id);
        }
        if (err != KHO_OK) {
            ctl_fail(c, "check: alarm", err);
        }
    }
}

static void report_errors(const struct group_check *g)
{
    if (g->err != KHO_OK) {
        fprintf(stderr,
                "khoctl: check: group %" PRIu64 " (%s): cannot place a "
                "marker: %s (%s)%s%s\n",
                g->group_id, group_name(g), kho_strerror(g->err),
                kho_errname(g->err), g->msg[0] != '\0' ? ": " : "", g->msg);
        return;
    }
    for (size_t i = 0; i < g->n; i++) {
        const struct replica *r = &g->r[i];
        if (r->err != KHO_OK) {
            fprintf(stderr,
                    "khoctl: check: group %" PRIu64 " (%s): node %" PRIu64
                    " (%s) cannot be asked: %s (%s)%s%s\n",
                    g->group_id, group_name(g), r->node, r->name,
                    kho_strerror(r->err), kho_errname(r->err),
                    r->msg[0] != '\0' ? ": " : "", r->msg);
        }
    }
}

static void hex64(uint64_t v, char out[17])
{
    snprintf(out, 17, "%016" PRIx64, v);
}

static void rows(struct ctl_table *t, const struct group_check *g)
{
    char hx[17];
    for (size_t i = 0; i < g->n; i++) {
        const struct replica *r = &g->r[i];
        ctl_table_add_u64(t, g->group_id);
        ctl_table_add_bytes(t, group_name(g), strlen(group_name(g)),
                            CTL_KEY_CHARS_MAX);
        char node[KHO_NAME_BYTES_MAX + 32];
        snprintf(node, sizeof(node), "%" PRIu64 " (%s)", r->node, r->name);
        ctl_table_add_bytes(t, node, strlen(node), CTL_KEY_CHARS_MAX);
        ctl_table_add_u64(t, g->index);
        hex64(r->h.hash, hx);
        ctl_table_add(t, r->err == KHO_OK ? hx : kho_errname(r->err));
        ctl_table_add(t, r->err != KHO_OK ? "?" : r->ok ? "yes" : "NO");
    }
    if (g->n == 0 || g->err != KHO_OK) {
        ctl_table_add_u64(t, g->group_id);
        ctl_table_add_bytes(t, group_name(g), strlen(group_name(g)),
                            CTL_KEY_CHARS_MAX);
        ctl_table_add(t, "-");
        ctl_table_add(t, "-");
        ctl_table_add(t, g->err != KHO_OK ? kho_errname(g->err) : "-");
        ctl_table_add(t, "?");
    }
}

static json_t *replica_json(const struct group_check *g,
                            const struct replica *r)
{
    char hx[17];
    json_t *o = json_object();
    if (o == NULL) {
        return NULL;
    }
    int rc = ctl_json_set_u64(o, "node", r->node);
    rc |= ctl_json_set_bytes(o, "name", r->name, strlen(r->name));
    if (r->err == KHO_OK) {
        hex64(r->h.hash, hx);
        rc |= json_object_set_new(o, "hash", json_string(hx));
        rc |= ctl_json_set_u64(o, "applied", r->h.applied);
        rc |= json_object_set_new(o, "ok", json_boolean(r->ok));
    } else {
        rc |= json_object_set_new(o, "error", json_string(kho_errname(r->err)));
        rc |= ctl_json_set_bytes(o, "message", r->msg, strlen(r->msg));
    }
    (void)g;
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *group_json(const struct group_check *g)
{
    char hx[17];
    json_t *o = json_object();
    json_t *arr = json_array();
    int rc = o == NULL || arr == NULL;
    for (size_t i = 0; rc == 0 && i < g->n; i++) {
        rc |= json_array_append_new(arr, replica_json(g, &g->r[i]));
    }
    rc |= ctl_json_set_u64(o, "group", g->group_id);
    rc |=
        ctl_json_set_bytes(o, "registry", group_name(g), strlen(group_name(g)));
    rc |= ctl_json_set_u64(o, "index", g->index);
    if (g->has_majority) {
        hex64(g->majority, hx);
        rc |= json_object_set_new(o, "hash", json_string(hx));
    }
    rc |= json_object_set_new(o, "ok",
                              json_boolean(g->err == KHO_OK &&
                                           g->mismatches == 0 &&
                                           g->unreachable == 0));
    if (g->err != KHO_OK) {
        rc |= json_object_set_new(o, "error", json_string(kho_errname(g->err)));
        rc |= ctl_json_set_bytes(o, "message", g->msg, strlen(g->msg));
    }
    rc |= json_object_set_new(o, "replicas", arr);
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Checks one group; adds its rows; returns its exit status. */
static int check_one(struct kho_client *c, const struct view *v,
                     const struct kho_registry_info *reg, uint64_t gid,
                     struct ctl_table *t, json_t *arr)
{
    static struct group_check g;
    uint64_t ids[KHO_GROUP_MEMBERS_MAX];
    memset(&g, 0, sizeof(g));
    g.group_id = gid;
    g.registry = reg != NULL ? reg->name : NULL;
    g.n = replicas_of(v, &g, reg, ids);
    for (size_t i = 0; i < g.n; i++) {
        const struct kho_node_info *ni = node_of(v, ids[i]);
        g.r[i].node = ids[i];
        g.r[i].url = ni != NULL ? ni->client_url : NULL;
        snprintf(g.r[i].name, sizeof(g.r[i].name), "%s",
                 ni != NULL ? ni->name : "?");
    }
    run_group(c, &g);
    if (g.err == KHO_OK) {
        judge(&g);
        alarms(c, &g);
    }
    report_errors(&g);
    if (arr != NULL) {
        json_array_append_new(arr, group_json(&g));
    } else {
        rows(t, &g);
    }
    if (g.mismatches > 0) {
        return EXIT_NOT_FOUND; /* 1: a mismatch */
    }
    if (g.err != KHO_OK) {
        int code = ctl_exit_code(g.err);
        return code == EXIT_NOT_FOUND ? EXIT_OTHER : code;
    }
    return g.unreachable > 0 || g.n == 0 ? EXIT_UNAVAILABLE : 0;
}

/* 1 (a mismatch) outranks 3 (could not ask), which outranks 4. */
static int worse(int a, int b)
{
    static const int rank[] = {[0] = 0,
                               [EXIT_OTHER] = 1,
                               [EXIT_UNAVAILABLE] = 2,
                               [EXIT_NOT_FOUND] = 3,
                               [EXIT_USAGE] = 1};
    return rank[b] > rank[a] ? b : a;
}

/* Checks every shard of a registry (each its own group, on its own
 * replicas); returns the worst exit status. */
static int check_registry(struct kho_client *c, const struct view *v,
                          const struct kho_registry_info *reg,
                          struct ctl_table *t, json_t *arr)
{
    if (reg->shards <= 1) {
        return check_one(c, v, reg, reg->group_id, t, arr);
    }
    struct kho_shard_map *m = NULL;
    int err = kho_shard_map(c, reg->name, &m);
    if (err != KHO_OK) {
        fprintf(stderr, "khoctl: check: the shards of '%s': %s\n", reg->name,
                kho_client_errmsg(c));
        int code = ctl_exit_code(err);
        return code == EXIT_NOT_FOUND ? EXIT_OTHER : code;
    }
    int worst = 0;
    static struct kho_registry_info sreg;
    for (uint32_t s = 0; s < m->shards; s++) {
        const struct kho_shard_info *sh = &m->shard_list[s];
        sreg = *reg;
        sreg.group_id = sh->group_id;
        sreg.n_replicas = sh->n_replicas < KHO_REPLICAS_MAX
                              ? sh->n_replicas
                              : KHO_REPLICAS_MAX;
        memcpy(sreg.replicas, sh->replicas,
               sreg.n_replicas * sizeof(sreg.replicas[0]));
        worst = worse(worst, check_one(c, v, &sreg, sh->group_id, t, arr));
    }
    kho_shard_map_free(m);
    return worst;
}

int ctl_cmd_check(struct ctl *x, const struct command *cmd, int argc,
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
    static struct view v;
    memset(&v, 0, sizeof(v));
    int rc = load_view(c, &v);
    const struct kho_registry_info *only = NULL;
    for (size_t i = 0; rc == 0 && pos[0] != NULL && i < v.n_regs; i++) {
        only = strcmp(v.regs[i].name, pos[0]) == 0 ? &v.regs[i] : only;
    }
    if (rc == 0 && pos[0] != NULL && only == NULL) {
        fprintf(stderr, "khoctl: check: no registry named '%s'\n", pos[0]);
        rc = EXIT_NOT_FOUND;
    }
    if (rc != 0) {
        free(v.regs);
        return rc;
    }
    json_t *arr = json ? json_array() : NULL;
    struct ctl_table *t =
        json ? NULL : ctl_table_new("GROUP> REGISTRY NODE INDEX> HASH OK");
    if (json ? arr == NULL : t == NULL) {
        free(v.regs);
        return ctl_fail(NULL, "check", KHO_ENOMEM);
    }
    int worst = 0;
    if (only != NULL) {
        worst = check_registry(c, &v, only, t, arr);
    } else {
        worst = check_one(c, &v, NULL, 0, t, arr);
        for (size_t i = 0; i < v.n_regs; i++) {
            worst = worse(worst, check_registry(c, &v, &v.regs[i], t, arr));
        }
    }
    free(v.regs);
    if (json) {
        json_t *o = json_object();
        if (o == NULL ||
            json_object_set_new(o, "ok", json_boolean(worst == 0)) ||
            json_object_set_new(o, "groups", arr) != 0) {
            json_decref(o);
            o = NULL;
        }
        rc = ctl_print_json(o);
    } else {
        rc = ctl_print_table(t);
    }
    if (worst == 0 && rc == 0) {
        fprintf(stderr, "khoctl: check: every replica agrees\n");
    }
    return worst != 0 ? worst : rc;
}

/* --- backup -----------------------------------------------------------------
 */

/* Makes the rename durable: fsync of the directory holding path. */
static int sync_parent(const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    int fd = open(dirname(buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int backup_print(const char *file, const struct kho_backup_info *b,
                        bool json)
{
    char id[17];
    hex64(b->backup_id, id);
    if (!json) {
        printf("backup %s: %" PRIu64 " bytes, %u groups, from node %" PRIu64
               " (%s), id %s\n",
               file, b->bytes, b->groups, b->node_id, b->node_name, id);
        return 0;
    }
    json_t *o = json_object();
    int bad = o == NULL;
    bad = bad || ctl_json_set_bytes(o, "file", file, strlen(file)) != 0;
    bad = bad || ctl_json_set_u64(o, "bytes", b->bytes) != 0;
    bad = bad || ctl_json_set_u64(o, "groups", b->groups) != 0;
    bad = bad || ctl_json_set_u64(o, "node", b->node_id) != 0;
    bad = bad || ctl_json_set_bytes(o, "name", b->node_name,
                                    strlen(b->node_name)) != 0;
    bad = bad || json_object_set_new(o, "backup_id", json_string(id)) != 0;
    if (bad) {
        json_decref(o);
        o = NULL;
    }
    return ctl_print_json(o);
}

int ctl_cmd_backup(struct ctl *x, const struct command *cmd, int argc,
                   char **argv)
{
    bool json = false;
    const struct opt opts[] = {
        {"--json", OPT_FLAG, &json, NULL, NULL, 0, 0},
    };
    char *pos[1] = {NULL};
    int rc = ctl_parse_args(cmd, argc, argv, opts, 1, pos, 1, 1);
    if (rc == 0 && (pos[0][0] == '\0' || strlen(pos[0]) > PATH_MAX - 32)) {
        rc = ctl_usage_error(cmd, "%s", "bad file name");
    }
    struct kho_client *c = NULL;
    if (rc == 0) {
        rc = ctl_client_of(x, &c);
    }
    if (rc != 0) {
        return ctl_parsed_code(rc);
    }
    const char *file = pos[0];
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", file, (long)getpid());
    int fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0640);
    if (fd < 0) {
        fprintf(stderr, "khoctl: backup: cannot create %s: %s\n", tmp,
                strerror(errno));
        return EXIT_OTHER;
    }
    struct kho_backup_info info;
    int err = kho_backup(c, fd, &info);
    if (err == KHO_OK && fsync(fd) != 0) {
        fprintf(stderr, "khoctl: backup: fsync %s: %s\n", tmp, strerror(errno));
        err = KHO_EIO;
        rc = EXIT_OTHER;
    }
    if (close(fd) != 0 && err == KHO_OK) {
        fprintf(stderr, "khoctl: backup: close %s: %s\n", tmp, strerror(errno));
        err = KHO_EIO;
        rc = EXIT_OTHER;
    }
    if (err == KHO_OK && rename(tmp, file) != 0) {
        fprintf(stderr, "khoctl: backup: rename to %s: %s\n", file,
                strerror(errno));
        err = KHO_EIO;
        rc = EXIT_OTHER;
    }
    if (err != KHO_OK) {
        unlink(tmp);
        return rc != 0 ? rc : ctl_fail(c, "backup", err);
    }
    if (sync_parent(file) != 0) {
        fprintf(stderr, "khoctl: backup: fsync of %s's directory: %s\n", file,
                strerror(errno));
        return EXIT_OTHER;
    }
    return backup_print(file, &info, json);
}

/*
 * restore.c - see restore.h.
 */
#include "restore.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "meta.h"

_Static_assert(NODE_GROUPS_MAX <= STORE_BACKUP_GROUPS_MAX,
               "a backup holds every group one node may host");

/* The registries the backed-up meta group records. */
struct regs {
    struct reg {
        char name[NODE_REGISTRY_BYTES];
        uint64_t group_id; /* shard 0's: the registry's base id */
        struct meta_reg mr;
    } r[NODE_REGISTRIES_MAX];
    size_t n;
    char *err;
    size_t err_len;
};

static int reg_cb(void *ctx, const struct store_record *r)
{
    struct regs *rs = ctx;
    if (r->key_len <= META_REG_PREFIX_BYTES ||
        memcmp(r->key, META_REG_PREFIX, META_REG_PREFIX_BYTES) != 0) {
        return KHO_OK;
    }
    size_t name_len = r->key_len - META_REG_PREFIX_BYTES;
    if (rs->n >= NODE_REGISTRIES_MAX || name_len >= NODE_REGISTRY_BYTES) {
        snprintf(rs->err, rs->err_len,
                 "the backup holds more than %u registries, or a name over "
                 "%u bytes",
                 NODE_REGISTRIES_MAX, NODE_REGISTRY_BYTES - 1);
        return KHO_ETOOLARGE;
    }
    struct reg *g = &rs->r[rs->n];
    memcpy(g->name, r->key + META_REG_PREFIX_BYTES, name_len);
    g->name[name_len] = '\0';
    g->group_id = r->create_rev;
    if (meta_reg_decode(r->value, r->value_len, &g->mr) != KHO_OK) {
        snprintf(rs->err, rs->err_len,
                 "the backup's record of registry '%s' is malformed", g->name);
        return KHO_EINVAL;
    }
    rs->n++;
    return KHO_OK;
}

static bool in_cluster(const struct node_config *c, uint64_t id)
{
    for (size_t i = 0; i < c->n_peers; i++) {
        if (c->peers[i].id == id) {
            return true;
        }
    }
    return false;
}

static bool in_backup(const struct store_backup_info *info, uint64_t gid)
{
    for (uint32_t i = 0; i < info->n_groups; i++) {
        if (info->groups[i].group_id == gid) {
            return true;
        }
    }
    return false;
}

static void peer_ids(const struct node_config *c, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < c->n_peers && o < cap; i++) {
        int k = snprintf(out + o, cap - o, "%s%llu", i > 0 ? "," : "",
                         (unsigned long long)c->peers[i].id);
        o += k > 0 ? (size_t)k : 0;
    }
}

/* Every replica of every registry is a node of the new cluster, and the
 * backup holds every registry's group. */
static int check_regs(const struct regs *rs, const struct node_config *c,
                      const struct store_backup_info *info, char *err,
                      size_t err_len)
{
    char ids[256];
    peer_ids(c, ids, sizeof(ids));
    for (size_t i = 0; i < rs->n; i++) {
        const struct reg *g = &rs->r[i];
        for (uint32_t s = 0; s < g->mr.n_shards; s++) {
            const struct meta_shard *sh = &g->mr.shards[s];
            uint64_t gid = meta_shard_group(g->group_id, s);
            for (uint32_t k = 0; k < sh->n_replicas; k++) {
                if (!in_cluster(c, sh->replicas[k])) {
                    snprintf(err, err_len,
                             "shard %u of registry '%s' lives on node %llu, "
                             "which is not a node of the new cluster "
                             "(--peers has %s): start the new cluster with "
                             "the same node ids",
                             s, g->name, (unsigned long long)sh->replicas[k],
                             ids);
                    return KHO_EINVAL;
                }
            }
            if (!in_backup(info, gid)) {
                snprintf(err, err_len,
                         "the backup lacks shard %u of registry '%s' (group "
                         "%llu): it is incomplete",
                         s, g->name, (unsigned long long)gid);
                return KHO_ENOTFOUND;
            }
        }
    }
    return KHO_OK;
}

static struct raft_conf voters(const uint64_t *ids, size_t n)
{
    struct raft_conf conf = {.n = (uint32_t)n};
    for (size_t i = 0; i < n; i++) {
        conf.members[i].id = ids[i];
        conf.members[i].role = RAFT_VOTER;
    }
    return conf;
}

static bool hosts(const struct meta_shard *sh, uint64_t self)
{
    for (uint32_t k = 0; k < sh->n_replicas; k++) {
        if (sh->replicas[k] == self) {
            return true;
        }
    }
    return false;
}

static int by_group(const void *a, const void *b)
{
    const struct store_restore_group *x = a, *y = b;
    return x->group_id < y->group_id ? -1 : x->group_id > y->group_id;
}

/* The groups this node restores: the meta group, and each registry it is
 * a replica of. */
static size_t plan_groups(const struct regs *rs, const struct node_config *c,
                          struct store_restore_group *plan)
{
    uint64_t ids[RAFT_MEMBERS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < c->n_peers && i < RAFT_MEMBERS_MAX; i++) {
        ids[i] = c->peers[i].id;
    }
    plan[n] = (struct store_restore_group){.group_id = NODE_META_GROUP};
    meta_group_conf(ids,
                    c->n_peers < RAFT_MEMBERS_MAX ? c->n_peers : RAFT_MEMBERS_MAX,
                    &plan[n].conf);
    n++;
    for (size_t i = 0; i < rs->n; i++) {
        const struct reg *g = &rs->r[i];
        for (uint32_t s = 0; s < g->mr.n_shards && n < NODE_GROUPS_MAX; s++) {
            const struct meta_shard *sh = &g->mr.shards[s];
            if (hosts(sh, c->id)) {
                plan[n++] = (struct store_restore_group){
                    .group_id = meta_shard_group(g->group_id, s),
                    .conf = voters(sh->replicas, sh->n_replicas)};
            }
        }
    }
    qsort(plan, n, sizeof(plan[0]), by_group);
    return n;
}

/* The old cluster's node records stay behind. */
static bool keep_cb(void *ctx, uint64_t group_id, const uint8_t *key,
                    size_t key_len)
{
    (void)ctx;
    return group_id != NODE_META_GROUP || key_len < META_NODE_PREFIX_BYTES ||
           memcmp(key, META_NODE_PREFIX, META_NODE_PREFIX_BYTES) != 0;
}

int node_restore_check(const char *path, struct store_backup_info *info,
                       char *err, size_t err_len)
{
    char why[256] = "";
    int rc = store_backup_check(path, info, why, sizeof(why));
    if (rc != KHO_OK) {
        snprintf(err, err_len, "backup %s is refused: %s (%s)", path, why,
                 kho_errname(rc));
        return rc;
    }
    if (!in_backup(info, NODE_META_GROUP)) {
        snprintf(err, err_len,
                 "backup %s is refused: it holds no meta group (group 0)",
                 path);
        return KHO_ECORRUPT;
    }
    return KHO_OK;
}

/* KHO_OK to go on (*again: restored before from this same backup), or an
 * error when st holds anything else. */
static int check_empty(struct store *st, const struct store_backup_info *info,
                       bool *again, char *err, size_t err_len)
{
    struct store_restore_mark mark;
    bool empty = false, marked = false;
    *again = false;
    int rc = store_restore_state(st, &empty, &marked, &mark);
    if (rc != KHO_OK) {
        snprintf(err, err_len, "reading the store: %s", store_errmsg(st));
        return rc;
    }
    if (marked && mark.backup_id == info->backup_id &&
        mark.file_bytes == info->file_bytes &&
        mark.file_crc == info->file_crc) {
        *again = true;
        return KHO_OK;
    }
    if (marked) {
        snprintf(err, err_len,
                 "the data directory was restored from another backup (id "
                 "%016llx, this one %016llx); --restore needs an empty data "
                 "directory",
                 (unsigned long long)mark.backup_id,
                 (unsigned long long)info->backup_id);
        return KHO_ECONFLICT;
    }
    if (!empty) {
        snprintf(err, err_len,
                 "the data directory already holds data; --restore needs an "
                 "empty one (a new node of a new cluster)");
        return KHO_ECONFLICT;
    }
    return KHO_OK;
}

int node_restore(const char *path, const struct store_backup_info *info,
                 struct store *st, const struct node_config *c, bool *done,
                 char *err, size_t err_len)
{
    bool again = false;
    *done = false;
    int rc = check_empty(st, info, &again, err, err_len);
    if (rc != KHO_OK || again) {
        if (again) {
            LOGI("restore: the store already came from backup %016llx; "
                 "starting from it",
                 (unsigned long long)info->backup_id);
        }
        return rc;
    }
    struct regs *rs = calloc(1, sizeof(*rs));
    struct store_restore_group *plan = calloc(NODE_GROUPS_MAX, sizeof(*plan));
    if (rs == NULL || plan == NULL) {
        snprintf(err, err_len, "out of memory");
        rc = KHO_ENOMEM;
        goto out;
    }
    rs->err = err;
    rs->err_len = err_len;
    err[0] = '\0';
    rc = store_backup_kv(st, path, info, NODE_META_GROUP, reg_cb, rs);
    if (rc != KHO_OK) {
        if (err[0] == '\0') {
            snprintf(err, err_len, "reading the backup's registries: %s",
                     store_errmsg(st));
        }
        goto out;
    }
    rc = check_regs(rs, c, info, err, err_len);
    if (rc != KHO_OK) {
        goto out;
    }
    size_t n = plan_groups(rs, c, plan);
    rc = store_restore(st, path, info, plan, n, keep_cb, NULL);
    if (rc != KHO_OK) {
        snprintf(err, err_len, "restoring: %s", store_errmsg(st));
        goto out;
    }
    LOGI("restore: %zu groups from backup %016llx (node %llu, %zu "
         "registries); meta group at index %llu",
         n, (unsigned long long)info->backup_id,
         (unsigned long long)info->node_id, rs->n,
         (unsigned long long)info->groups[0].index);
    *done = true;
out:
    free(rs);
    free(plan);
    return rc;
}

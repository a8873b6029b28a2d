/*
 * plan.c - see plan.h.
 */
#include "plan.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct plan_reg {
    char name[NODE_REGISTRY_BYTES];
    uint64_t mod_rev;
    bool changed;
    struct meta_reg *reg;
    uint8_t key[META_REG_PREFIX_BYTES + META_REG_NAME_BYTES_MAX];
    size_t key_len;
    uint8_t *val; /* the encoded record, once plan_ops() made it */
};

struct plan {
    struct plan_reg regs[NODE_REGISTRIES_MAX];
    size_t n;
    struct meta_reg *view[NODE_REGISTRIES_MAX]; /* regs[i].reg */
    struct meta_move moves[PLAN_MOVES_MAX];
    size_t n_moves;
    size_t n_swaps; /* shards whose preferred leader changed place */
};

void plan_free(struct plan *p)
{
    if (p == NULL) {
        return;
    }
    for (size_t i = 0; i < p->n; i++) {
        free(p->regs[i].reg);
        free(p->regs[i].val);
    }
    free(p);
}

int plan_create(const struct node_registry *e, size_t n, struct plan **out)
{
    struct plan *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return KHO_ENOMEM;
    }
    for (size_t i = 0; i < n;) {
        const struct node_registry *first = &e[i];
        if (first->shard != 0 || first->n_shards == 0 ||
            first->n_shards > KHO_SHARDS_MAX || i + first->n_shards > n ||
            p->n >= NODE_REGISTRIES_MAX) {
            plan_free(p);
            return KHO_ECORRUPT;
        }
        struct plan_reg *pr = &p->regs[p->n];
        pr->reg = calloc(1, sizeof(*pr->reg));
        if (pr->reg == NULL) {
            plan_free(p);
            return KHO_ENOMEM;
        }
        p->view[p->n++] = pr->reg;
        snprintf(pr->name, sizeof(pr->name), "%s", first->name);
        pr->mod_rev = first->mod_rev;
        pr->reg->want = first->want;
        pr->reg->n_shards = first->n_shards;
        pr->reg->home = first->home;
        for (uint32_t s = 0; s < first->n_shards; s++) {
            const struct node_registry *x = &e[i + s];
            struct meta_shard *sh = &pr->reg->shards[s];
            if (x->shard != s || strcmp(x->name, first->name) != 0) {
                plan_free(p);
                return KHO_ECORRUPT;
            }
            sh->n_initial = x->n_initial;
            memcpy(sh->initial, x->initial, x->n_initial * sizeof(x->initial[0]));
            sh->n_replicas = x->n_replicas;
            memcpy(sh->replicas, x->replicas,
                   x->n_replicas * sizeof(x->replicas[0]));
        }
        size_t name_len = strlen(pr->name);
        memcpy(pr->key, META_REG_PREFIX, META_REG_PREFIX_BYTES);
        memcpy(pr->key + META_REG_PREFIX_BYTES, pr->name, name_len);
        pr->key_len = META_REG_PREFIX_BYTES + name_len;
        i += first->n_shards;
    }
    *out = p;
    return KHO_OK;
}

void plan_nodes(const struct plan *p, const uint64_t *members,
                size_t n_members, struct place_node *out)
{
    for (size_t i = 0; i < n_members; i++) {
        out[i] = (struct place_node){.id = members[i]};
    }
    meta_count_load(out, n_members, p->view, p->n);
}

size_t plan_rebalance(struct plan *p, struct place_node *nodes, size_t n)
{
    size_t k = meta_plan(nodes, n, p->view, p->n, p->moves + p->n_moves,
                         PLAN_MOVES_MAX - p->n_moves);
    for (size_t i = 0; i < k; i++) {
        p->regs[p->moves[p->n_moves + i].reg].changed = true;
    }
    p->n_moves += k;
    bool changed[NODE_REGISTRIES_MAX] = {false};
    p->n_swaps += meta_even_leaders(nodes, n, p->view, p->n, changed);
    for (size_t r = 0; r < p->n; r++) {
        p->regs[r].changed = p->regs[r].changed || changed[r];
    }
    return k;
}

size_t plan_leader_swaps(const struct plan *p)
{
    return p->n_swaps;
}

int plan_move(struct plan *p, const char *registry, uint32_t shard,
              uint64_t from, uint64_t to, char *why, size_t why_len)
{
    size_t r = 0;
    while (r < p->n && strcmp(p->regs[r].name, registry) != 0) {
        r++;
    }
    if (r == p->n) {
        snprintf(why, why_len, "no registry named '%s'", registry);
        return KHO_ENOTFOUND;
    }
    struct meta_reg *mr = p->regs[r].reg;
    if (shard >= mr->n_shards) {
        snprintf(why, why_len, "registry '%s' has %u shards (0 to %u)",
                 registry, mr->n_shards, mr->n_shards - 1);
        return KHO_EINVAL;
    }
    struct meta_shard *sh = &mr->shards[shard];
    uint32_t pos = UINT32_MAX;
    for (uint32_t j = 0; j < sh->n_replicas; j++) {
        if (sh->replicas[j] == to) {
            snprintf(why, why_len, "node %llu already holds shard %u of '%s'",
                     (unsigned long long)to, shard, registry);
            return KHO_EINVAL;
        }
        pos = sh->replicas[j] == from ? j : pos;
    }
    if (pos == UINT32_MAX) {
        snprintf(why, why_len, "node %llu holds no replica of shard %u of '%s'",
                 (unsigned long long)from, shard, registry);
        return KHO_EINVAL;
    }
    if (mr->home == from) {
        snprintf(why, why_len,
                 "node %llu is the home of '%s': it keeps a replica of every "
                 "shard",
                 (unsigned long long)from, registry);
        return KHO_EINVAL;
    }
    if (p->n_moves >= PLAN_MOVES_MAX) {
        snprintf(why, why_len, "more than %u moves in one plan",
                 PLAN_MOVES_MAX);
        return KHO_ETOOLARGE;
    }
    sh->replicas[pos] = to;
    p->regs[r].changed = true;
    p->moves[p->n_moves++] = (struct meta_move){
        .reg = (uint32_t)r, .shard = shard, .from = from, .to = to};
    return KHO_OK;
}

const struct meta_move *plan_moves(const struct plan *p, size_t *n)
{
    *n = p->n_moves;
    return p->moves;
}

const char *plan_reg_name(const struct plan *p, uint32_t reg)
{
    return reg < p->n ? p->regs[reg].name : "";
}

int plan_ops(struct plan *p, struct store_compare *cmps, struct store_op *ops,
             size_t cap, size_t *n)
{
    size_t k = 0;
    for (size_t i = 0; i < p->n; i++) {
        struct plan_reg *pr = &p->regs[i];
        if (!pr->changed) {
            continue;
        }
        if (k >= cap) {
            return KHO_ETOOLARGE;
        }
        if (pr->val == NULL) {
            pr->val = malloc(META_REG_VALUE_BYTES_MAX);
            if (pr->val == NULL) {
                return KHO_ENOMEM;
            }
        }
        size_t len = meta_reg_encode(pr->reg, pr->val);
        if (len == 0) {
            return KHO_EINVAL;
        }
        cmps[k] = (struct store_compare){.target = STORE_CMP_MOD_REV,
                                         .op = STORE_CMP_EQ,
                                         .key = pr->key,
                                         .key_len = pr->key_len,
                                         .number = pr->mod_rev};
        ops[k] = (struct store_op){.op = STORE_OP_PUT,
                                   .key = pr->key,
                                   .key_len = pr->key_len,
                                   .value = pr->val,
                                   .value_len = len};
        k++;
    }
    *n = k;
    return KHO_OK;
}

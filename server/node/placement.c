/*
 * placement.c - where registry shards live (meta.h, "Placement"): pure
 * functions over the meta group's records, used when a registry is created,
 * when a member is removed and when the cluster is rebalanced.
 */
#include <stdbool.h>
#include <string.h>

#include "../../client/kho_err.h"
#include "meta.h"

static bool holds(const struct meta_shard *sh, uint64_t id)
{
    for (uint32_t j = 0; j < sh->n_replicas; j++) {
        if (sh->replicas[j] == id) {
            return true;
        }
    }
    return false;
}

static size_t node_index(const struct place_node *nodes, size_t n, uint64_t id)
{
    for (size_t i = 0; i < n; i++) {
        if (nodes[i].id == id) {
            return i;
        }
    }
    return SIZE_MAX;
}

/* The least loaded node not holding sh (SIZE_MAX: none); ties go to the
 * first after position `rot` in the nodes' order, so that equal loads
 * spread instead of piling on the first node. */
static size_t least_loaded(const struct place_node *nodes, size_t n,
                           const struct meta_shard *sh, uint64_t rot)
{
    size_t best = SIZE_MAX;
    for (size_t k = 0; k < n; k++) {
        size_t i = (size_t)((rot + k) % n);
        if (holds(sh, nodes[i].id)) {
            continue;
        }
        if (best == SIZE_MAX || nodes[i].load < nodes[best].load) {
            best = i;
        }
    }
    return best;
}

void meta_count_load(struct place_node *nodes, size_t n,
                     struct meta_reg *const *regs, size_t n_regs)
{
    for (size_t i = 0; i < n; i++) {
        nodes[i].load = nodes[i].leads = 0;
    }
    for (size_t r = 0; r < n_regs; r++) {
        for (uint32_t s = 0; s < regs[r]->n_shards; s++) {
            const struct meta_shard *sh = &regs[r]->shards[s];
            for (uint32_t j = 0; j < sh->n_replicas; j++) {
                size_t i = node_index(nodes, n, sh->replicas[j]);
                if (i != SIZE_MAX) {
                    nodes[i].load++;
                    nodes[i].leads += j == 0;
                }
            }
        }
    }
}

int meta_place(struct place_node *nodes, size_t n, const char *name,
               struct meta_reg *r)
{
    if (r->want == 0 || r->want > META_REPLICAS_MAX || r->want > n ||
        r->n_shards == 0 || r->n_shards > KHO_SHARDS_MAX) {
        return KHO_EINVAL;
    }
    size_t home = SIZE_MAX;
    if (r->home != 0) {
        home = node_index(nodes, n, r->home);
        if (home == SIZE_MAX) {
            return KHO_EINVAL;
        }
    }
    uint64_t rot = meta_name_hash(name);
    for (uint32_t s = 0; s < r->n_shards; s++) {
        struct meta_shard *sh = &r->shards[s];
        memset(sh, 0, sizeof(*sh));
        size_t chosen[META_REPLICAS_MAX];
        if (home != SIZE_MAX) {
            chosen[sh->n_replicas] = home;
            sh->replicas[sh->n_replicas++] = nodes[home].id;
            nodes[home].load++;
        }
        while (sh->n_replicas < r->want) {
            size_t i = least_loaded(nodes, n, sh, rot + s);
            if (i == SIZE_MAX) {
                return KHO_EINVAL;
            }
            chosen[sh->n_replicas] = i;
            sh->replicas[sh->n_replicas++] = nodes[i].id;
            nodes[i].load++;
        }
        /* The shard's leader: the home node, else the chosen node leading
         * the fewest shards. */
        uint32_t lead = 0;
        for (uint32_t j = 1; home == SIZE_MAX && j < sh->n_replicas; j++) {
            if (nodes[chosen[j]].leads < nodes[chosen[lead]].leads) {
                lead = j;
            }
        }
        uint64_t t = sh->replicas[0];
        sh->replicas[0] = sh->replicas[lead];
        sh->replicas[lead] = t;
        nodes[chosen[lead]].leads++;
        sh->n_initial = sh->n_replicas;
        memcpy(sh->initial, sh->replicas, sizeof(sh->initial));
    }
    return KHO_OK;
}

static void move_replica(struct place_node *nodes, size_t n,
                         struct meta_reg *r, uint32_t s, uint32_t j,
                         size_t to, struct meta_move *m, uint32_t reg)
{
    struct meta_shard *sh = &r->shards[s];
    size_t from = node_index(nodes, n, sh->replicas[j]);
    *m = (struct meta_move){
        .reg = reg, .shard = s, .from = sh->replicas[j], .to = nodes[to].id};
    if (from != SIZE_MAX) {
        nodes[from].load--;
        nodes[from].leads -= j == 0;
    }
    nodes[to].load++;
    nodes[to].leads += j == 0;
    sh->replicas[j] = nodes[to].id;
}

/* A replica on node `from` that may move to node `to`: not the home's, on
 * a shard `to` does not hold; followers before preferred leaders, so
 * leaderships move only when nothing else can. */
static bool find_movable(struct meta_reg **regs, size_t n_regs,
                         uint64_t from, uint64_t to, uint32_t *reg,
                         uint32_t *shard, uint32_t *pos)
{
    for (int pass = 0; pass < 2; pass++) {
        for (size_t r = 0; r < n_regs; r++) {
            if (regs[r]->home == from) {
                continue;
            }
            for (uint32_t s = 0; s < regs[r]->n_shards; s++) {
                const struct meta_shard *sh = &regs[r]->shards[s];
                if (holds(sh, to)) {
                    continue;
                }
                for (uint32_t j = pass == 0 ? 1 : 0;
                     j < (pass == 0 ? sh->n_replicas : 1); j++) {
                    if (sh->replicas[j] == from) {
                        *reg = (uint32_t)r;
                        *shard = s;
                        *pos = j;
                        return true;
                    }
                }
            }
        }
    }
    return false;
}

size_t meta_plan(struct place_node *nodes, size_t n, struct meta_reg **regs,
                 size_t n_regs, struct meta_move *moves, size_t cap)
{
    size_t k = 0;
    if (n == 0) {
        return 0;
    }
    /* Replicas on nodes that are not members any more go first. */
    for (size_t r = 0; r < n_regs && k < cap; r++) {
        for (uint32_t s = 0; s < regs[r]->n_shards && k < cap; s++) {
            struct meta_shard *sh = &regs[r]->shards[s];
            for (uint32_t j = 0; j < sh->n_replicas && k < cap; j++) {
                if (node_index(nodes, n, sh->replicas[j]) != SIZE_MAX) {
                    continue;
                }
                size_t to = least_loaded(nodes, n, sh, s);
                if (to != SIZE_MAX) {
                    move_replica(nodes, n, regs[r], s, j, to, &moves[k++],
                                 (uint32_t)r);
                }
            }
        }
    }
    /* Then even the counts out: most loaded to least loaded, one replica
     * at a time, until they differ by one at most. */
    while (k < cap) {
        size_t hi = 0, lo = 0;
        for (size_t i = 1; i < n; i++) {
            hi = nodes[i].load > nodes[hi].load ? i : hi;
            lo = nodes[i].load < nodes[lo].load ? i : lo;
        }
        if (nodes[hi].load <= nodes[lo].load + 1) {
            break;
        }
        uint32_t r = 0, s = 0, j = 0;
        if (!find_movable(regs, n_regs, nodes[hi].id, nodes[lo].id, &r, &s,
                          &j)) {
            break;
        }
        move_replica(nodes, n, regs[r], s, j, lo, &moves[k++], r);
    }
    return k;
}

size_t meta_even_leaders(struct place_node *nodes, size_t n,
                         struct meta_reg **regs, size_t n_regs, bool *changed)
{
    size_t swaps = 0;
    if (n == 0) {
        return 0;
    }
    for (size_t guard = 0; guard < KHO_SHARDS_MAX * NODE_PLACE_REGS_MAX;
         guard++) {
        size_t hi = 0, lo = 0;
        for (size_t i = 1; i < n; i++) {
            hi = nodes[i].leads > nodes[hi].leads ? i : hi;
            lo = nodes[i].leads < nodes[lo].leads ? i : lo;
        }
        if (nodes[hi].leads <= nodes[lo].leads + 1) {
            break;
        }
        /* A shard `hi` leads that `lo` holds, not pinned to a home: the
         * two swap places in its replica list (no data moves). */
        bool done = false;
        for (size_t r = 0; r < n_regs && !done; r++) {
            if (regs[r]->home == nodes[hi].id) {
                continue;
            }
            for (uint32_t s = 0; s < regs[r]->n_shards && !done; s++) {
                struct meta_shard *sh = &regs[r]->shards[s];
                if (sh->replicas[0] != nodes[hi].id) {
                    continue;
                }
                for (uint32_t j = 1; j < sh->n_replicas && !done; j++) {
                    if (sh->replicas[j] == nodes[lo].id) {
                        sh->replicas[j] = nodes[hi].id;
                        sh->replicas[0] = nodes[lo].id;
                        nodes[hi].leads--;
                        nodes[lo].leads++;
                        changed[r] = true;
                        swaps++;
                        done = true;
                    }
                }
            }
        }
        if (!done) {
            break;
        }
    }
    return swaps;
}

/*
 * plan.h - changing where registry shards live: the meta group's registry
 * records rebuilt from the registry table, moved by placement (meta.h) or
 * by hand, and turned into one meta-group transaction that writes every
 * changed record under a compare on its mod revision (so two plans made
 * from the same table cannot both apply). Used by khoctl's `shard move`,
 * `cluster rebalance` and `member remove` (server/api) and by the meta
 * leader when the cluster's members change (node.c).
 */
#ifndef KHO_NODE_PLAN_H
#define KHO_NODE_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "meta.h"
#include "node.h"

/* Moves one plan holds at most: a rebalance moves at most this many
 * replicas at once (run it again for more). */
#define PLAN_MOVES_MAX 64u

struct plan;

/* The records behind table entries e[0..n) (by name, then shard, as
 * node_registries() and node_load_registries() give them).
 * Errors: KHO_ENOMEM, KHO_ECORRUPT (entries out of order). */
int plan_create(const struct node_registry *e, size_t n, struct plan **out);
void plan_free(struct plan *p);

/* Fills out[0..n_members) with the member nodes and their current loads. */
void plan_nodes(const struct plan *p, const uint64_t *members,
                size_t n_members, struct place_node *out);

/* meta_plan() over every record: evacuate non-members, then even out the
 * replicas, then where shards lead (meta_even_leaders()). Returns the
 * number of replica moves added. */
size_t plan_rebalance(struct plan *p, struct place_node *nodes, size_t n);
/* Shards whose preferred leader the rebalance changed (no data moves). */
size_t plan_leader_swaps(const struct plan *p);

/* Moves shard `shard` of `registry` from node `from` to node `to` (a
 * member, not already holding it). Errors (a message in why):
 * KHO_ENOTFOUND, KHO_EINVAL, KHO_ETOOLARGE (PLAN_MOVES_MAX). */
int plan_move(struct plan *p, const char *registry, uint32_t shard,
              uint64_t from, uint64_t to, char *why, size_t why_len);

/* The moves made so far, and the registry name of a move. */
const struct meta_move *plan_moves(const struct plan *p, size_t *n);
const char *plan_reg_name(const struct plan *p, uint32_t reg);

/* The compare-and-put pairs writing every changed record, into cmps/ops
 * (pointers into p: valid until plan_free). Errors: KHO_ETOOLARGE (more
 * than cap changed records), KHO_EINVAL (a record cannot be encoded). */
int plan_ops(struct plan *p, struct store_compare *cmps, struct store_op *ops,
             size_t cap, size_t *n);

#endif /* KHO_NODE_PLAN_H */

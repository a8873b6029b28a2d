/*
 * meta.h - what the meta group (group 0) stores, and how.
 *
 * The meta group is an ordinary kv state machine replicated on every node
 * of the cluster; its keys are:
 *
 *   "reg/" NAME  -> a registry (format 3): u8 META_REG_VERSION, u8
 *                   replicas per shard, u16 n_shards, u64 home node id
 *                   (0: none), then per shard: u8 n_initial, u8
 *                   n_replicas, u16 0, n_initial x u64 node id, then
 *                   n_replicas x u64 node id (little-endian)
 *
 * (Format 2, still read: u8 2, u8 n_initial, u8 n_replicas, u8 0 and the
 * ids - one shard, no home.) A registry is split into n_shards shards by
 * kho_shard_of() (client/kho_shard.h); each shard is its own raft group.
 * A shard's initial replicas bootstrap its group (each creates it with
 * them as its configuration); its replicas are where it should live now,
 * the first of them being where its leadership should be (leaders spread
 * with the placement; the home node, when given, holds a replica of every
 * shard and leads them). A node that becomes a replica later creates the
 * group empty and is added by the group's leader (learner, then voter
 * once caught up).
 *
 * Group ids: the registry's base id is the create revision of its record -
 * the meta log index that created it - so ids are unique and chosen by the
 * log itself, the same on every node, with no counter to race on; shard i
 * has group id base + i << META_SHARD_GROUP_SHIFT (shard 0's is the base,
 * as format 2's single group was). Its creator and creation time are the
 * record's writer and time.
 */
#ifndef KHO_NODE_META_H
#define KHO_NODE_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../client/kho_shard.h"
#include "../raft/raft.h"

#define META_REG_PREFIX "reg/"
#define META_REG_PREFIX_BYTES 4u
#define META_REG_VERSION 3u
#define META_REG_V2 2u
#define META_REG_V2_HEADER_BYTES 4u
#define META_REG_HEADER_BYTES 12u
#define META_SHARD_HEADER_BYTES 4u
#define META_REG_NAME_BYTES_MAX 64u
/* Replicas of one shard (NODE_REPLICAS_MAX is the same). */
#define META_REPLICAS_MAX 7u
#define META_REG_VALUE_BYTES_MAX                                               \
    (META_REG_HEADER_BYTES +                                                   \
     KHO_SHARDS_MAX * (META_SHARD_HEADER_BYTES + 16u * META_REPLICAS_MAX))
/* Shard i of a registry with base id b is group b + (i << 40): meta log
 * indexes stay far below 2^40. */
#define META_SHARD_GROUP_SHIFT 40u

static inline uint64_t meta_shard_group(uint64_t base, uint32_t shard)
{
    return base + ((uint64_t)shard << META_SHARD_GROUP_SHIFT);
}

/*
 *   "node/" 16 hex digits of the id -> a node: u8 META_NODE_VERSION,
 *                   u8 name_len, u8 peer_url_len, u8 state, u8
 *                   client_url_len, u8 0, u16 0, name, peer URL,
 *                   client URL
 *
 * The meta leader writes the record of every node of the initial cluster
 * that has none (once per term, in one transaction); `khoctl member add`
 * writes a new node's, with an id above every id ever recorded (records of
 * removed nodes stay, so ids are never reused).
 */
enum meta_node_state {
    META_NODE_MEMBER = 1,  /* should be in the meta group */
    META_NODE_REMOVED = 2, /* removed: in no group, id never reused */
};
#define META_NODE_PREFIX "node/"
#define META_NODE_PREFIX_BYTES 5u
#define META_NODE_KEY_BYTES (META_NODE_PREFIX_BYTES + 16u)
/* The longest key prefix of the meta group's record kinds. */
#define META_PREFIX_BYTES_MAX META_NODE_PREFIX_BYTES
_Static_assert(META_REG_PREFIX_BYTES <= META_PREFIX_BYTES_MAX,
               "every meta key prefix fits META_PREFIX_BYTES_MAX");
#define META_NODE_VERSION 1u
#define META_NODE_HEADER_BYTES 8u
#define META_NODE_FIELD_BYTES_MAX 255u
#define META_NODE_VALUE_BYTES_MAX                                              \
    (META_NODE_HEADER_BYTES + 3u * META_NODE_FIELD_BYTES_MAX)

/* The record key of node `id` (META_NODE_KEY_BYTES, no NUL). */
void meta_node_key(uint64_t id, uint8_t *key);
/* Parses a node record key; 0 when it is not one. */
uint64_t meta_node_key_id(const uint8_t *key, size_t len);
/* Encodes a node record; returns its length, 0 when a field is longer than
 * META_NODE_FIELD_BYTES_MAX. buf holds META_NODE_VALUE_BYTES_MAX. */
size_t meta_node_encode(const char *name, const char *peer_url,
                        const char *client_url, uint32_t state, uint8_t *buf);
/* Decodes one into NUL-terminated fields: name of name_cap bytes, the URLs
 * of url_cap bytes each. Errors: KHO_ECORRUPT (malformed, or a field that
 * does not fit). */
int meta_node_decode(const uint8_t *v, size_t len, char *name,
                     size_t name_cap, char *peer_url, char *client_url,
                     size_t url_cap, uint32_t *state);

/* A registry name: 1..64 bytes of [a-z0-9_.-], starting with a letter or
 * digit. Returns a reason, or NULL when the name is good. */
const char *meta_reg_name_check(const char *name);

struct meta_shard {
    uint32_t n_initial, n_replicas;
    uint64_t initial[META_REPLICAS_MAX];
    uint64_t replicas[META_REPLICAS_MAX]; /* [0]: where it should lead */
};

/* A registry record (about 30 KiB with every shard: allocate it). */
struct meta_reg {
    uint32_t want;     /* replicas per shard */
    uint32_t n_shards; /* 1..KHO_SHARDS_MAX */
    uint64_t home;     /* node id, 0: none */
    struct meta_shard shards[KHO_SHARDS_MAX];
};

/* Encodes a registry record value; returns its length (0: a count is 0 or
 * over its limit). buf holds META_REG_VALUE_BYTES_MAX. */
size_t meta_reg_encode(const struct meta_reg *r, uint8_t *buf);

/* Decodes one (format 3, or format 2 as one shard). Errors: KHO_ECORRUPT. */
int meta_reg_decode(const uint8_t *v, size_t len, struct meta_reg *out);

/* FNV-1a of a NUL-terminated name: stable across builds and machines, as
 * placement and the cluster id on every peer frame need. */
uint64_t meta_name_hash(const char *s);

/* Voters of the meta group at most: the other nodes follow it as learners
 * (they get its log, so every node knows the cluster map, but a meta write
 * waits for a majority of META_VOTERS_MAX, not of every node). */
#define META_VOTERS_MAX 5u

/* The meta group's bootstrap configuration for nodes ids[0..n): the
 * META_VOTERS_MAX lowest ids vote, the rest are learners (at most
 * RAFT_MEMBERS_MAX in all). Every node computes the same from the same
 * list. */
void meta_group_conf(const uint64_t *ids, size_t n, struct raft_conf *out);

/* --- Placement (placement.c) ---------------------------------------------- */

/* A member node as placement sees it. */
struct place_node {
    uint64_t id;
    uint32_t load;  /* replicas it holds */
    uint32_t leads; /* shards it should lead (first replica) */
};

/*
 * Places a new registry of r->n_shards shards with r->want replicas each
 * (r->home, when set, must be one of the nodes: it gets a replica of every
 * shard and leads them): every shard on distinct nodes, each taking the
 * least loaded nodes first (ties broken by a rotation from the name's hash,
 * so registries spread), and each shard's first replica on the node leading
 * the fewest. Fills initial = replicas and updates the nodes' load and
 * leads. Errors: KHO_EINVAL (fewer nodes than want, or an unknown home).
 */
int meta_place(struct place_node *nodes, size_t n, const char *name,
               struct meta_reg *r);

/* One replica of one shard moving between nodes. */
struct meta_move {
    uint32_t reg;   /* index into the caller's registry array */
    uint32_t shard;
    uint64_t from, to;
};

/*
 * Plans moves for regs[0..n_regs) so that no shard keeps a replica on a
 * node that is not in nodes[] (removed, or being removed), and then so
 * that replica counts per node differ by at most one (the home node's
 * replicas stay). Applies each move to regs in place (the moved replica
 * keeps its position, so a shard's preferred leader moves with it) and to
 * the nodes' loads. Returns the number of moves (at most cap); a shard
 * that no node can take is left as it is.
 */
size_t meta_plan(struct place_node *nodes, size_t n, struct meta_reg **regs,
                 size_t n_regs, struct meta_move *moves, size_t cap);

/* Registries placement looks at, at most (NODE_REGISTRIES_MAX). */
#define NODE_PLACE_REGS_MAX 255u

/*
 * Evens out where shards should lead: while one node should lead two more
 * shards than another that holds a replica of one of them, the two swap
 * places in that shard's replica list (the first replica is where the
 * shard should lead; no data moves, the leader hands over). Sets
 * changed[r] for every registry touched; returns the number of swaps.
 */
size_t meta_even_leaders(struct place_node *nodes, size_t n,
                         struct meta_reg **regs, size_t n_regs, bool *changed);

/* Counts, into nodes[].load and .leads, the replicas and preferred
 * leaderships of regs[0..n_regs) (nodes not listed are not counted). */
void meta_count_load(struct place_node *nodes, size_t n,
                     struct meta_reg *const *regs, size_t n_regs);

#endif /* KHO_NODE_META_H */

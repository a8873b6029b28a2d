/*
 * meta.h - what the meta group (group 0) stores, and how.
 *
 * The meta group is an ordinary kv state machine replicated on every node
 * of the cluster; its keys are:
 *
 *   "reg/" NAME  -> a registry: u8 META_REG_VERSION, u8 n_initial,
 *                   u8 n_replicas, u8 0, n_initial x u64 node id, then
 *                   n_replicas x u64 node id (little-endian)
 *
 * The initial replicas bootstrap the group (each creates it with them as
 * its configuration); the replicas are where it should live now. A node
 * that becomes a replica later creates the group empty and is added by the
 * group's leader (learner, then voter once caught up).
 *
 * A registry's raft group id is the create revision of its record - the
 * meta log index that created it - so ids are unique and chosen by the log
 * itself, the same on every node, with no counter to race on. Its creator
 * and creation time are the record's writer and time.
 */
#ifndef KHO_NODE_META_H
#define KHO_NODE_META_H

#include <stddef.h>
#include <stdint.h>

#include "../raft/raft.h"

#define META_REG_PREFIX "reg/"
#define META_REG_PREFIX_BYTES 4u
#define META_REG_VERSION 2u
#define META_REG_HEADER_BYTES 4u
#define META_REG_NAME_BYTES_MAX 64u
#define META_REG_VALUE_BYTES_MAX                                               \
    (META_REG_HEADER_BYTES + 16u * RAFT_MEMBERS_MAX)

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

struct meta_reg {
    uint64_t initial[RAFT_MEMBERS_MAX];
    uint32_t n_initial;
    uint64_t replicas[RAFT_MEMBERS_MAX];
    uint32_t n_replicas;
};

/* Encodes a registry record value; returns its length (0: a count is 0 or
 * over RAFT_MEMBERS_MAX). buf holds META_REG_VALUE_BYTES_MAX. */
size_t meta_reg_encode(const struct meta_reg *r, uint8_t *buf);

/* Decodes one. Errors: KHO_ECORRUPT. */
int meta_reg_decode(const uint8_t *v, size_t len, struct meta_reg *out);

/* FNV-1a of a NUL-terminated name: stable across builds and machines, as
 * placement and the cluster id on every peer frame need. */
uint64_t meta_name_hash(const char *s);

/*
 * Chooses `want` distinct replicas among the voters of `members` for the
 * registry `name`: consecutive nodes in id order starting at a hash of the
 * name, so registries spread over the nodes. Returns the count chosen
 * (min(want, voters)).
 */
uint32_t meta_pick_replicas(const struct raft_conf *members, const char *name,
                            uint32_t want, uint64_t *out);

#endif /* KHO_NODE_META_H */

/*
 * memstore.h - an in-memory `struct raft_storage` for tests and the
 * simulator. It holds what a node has made durable: hard state, the
 * snapshot the log starts after (with its payload) and the log entries.
 * Whatever the simulator has not written here is what a crash loses.
 */
#ifndef KHO_MEMSTORE_H
#define KHO_MEMSTORE_H

#include "../../server/raft/raft.h"

struct memstore {
    struct raft_hard_state hs;
    struct raft_snapshot snap; /* meta + owned payload */
    struct raft_entry *ents;   /* ents[i].index == snap.meta.index + 1 + i */
    size_t n, cap;
    /* Test hooks: when non-zero, callbacks fail with this error. */
    int fail_err;
};

/* A member of a new cluster (conf = initial configuration) or a node that
 * will join an existing one (conf with n == 0). */
void memstore_init(struct memstore *s, const struct raft_conf *conf);
void memstore_free(struct memstore *s);
/* Deep copy (used to model a restart from what is durable). */
void memstore_copy(struct memstore *dst, const struct memstore *src);

/* The raft_storage view of `s`. */
struct raft_storage memstore_storage(struct memstore *s);

uint64_t memstore_last_index(const struct memstore *s);
/* Entry at index, or NULL if compacted or beyond the end. */
const struct raft_entry *memstore_entry(const struct memstore *s,
                                        uint64_t index);

/* Persists a ready batch the way raft.h's contract says (snapshot, cut,
 * append, hard state). Returns KHO_OK or KHO_ECORRUPT if the batch does not
 * fit the stored log (a core bug the tests want to see). */
int memstore_persist(struct memstore *s, const struct raft_ready *rd);

/* Appends one entry (copying its payload) at the end of the stored log; it
 * must have index memstore_last_index(s) + 1. Returns KHO_OK or KHO_EINVAL.
 * Used to pre-seed a node's durable log (the Raft paper's Figures 7 and 8). */
int memstore_append(struct memstore *s, const struct raft_entry *e);

/* Drops every stored entry with index >= from (> the snapshot index): a
 * disk that lost its tail. Returns KHO_OK or KHO_EINVAL. */
int memstore_truncate(struct memstore *s, uint64_t from);

/* Compacts the log: a snapshot at `index` (<= last index) with the given
 * configuration and payload; entries <= index are dropped. */
int memstore_compact(struct memstore *s, uint64_t index,
                     const struct raft_conf *conf, const uint8_t *data,
                     size_t len);

#endif

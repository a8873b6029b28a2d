/*
 * check.h - what check.c, backup.c and snapshot.c share inside
 * server/store: walking and checking a group's state machine (snapshot.c),
 * applying a check marker, and the
 * raft_meta records of checks (store.h, "Consistency checks"). Nothing
 * here leaves server/store.
 */
#ifndef KHO_STORE_CHECK_H
#define KHO_STORE_CHECK_H

#include "internal.h"

/* raft_meta tags of this file's records (store.h, "Consistency checks"),
 * well apart from enum meta_tag's. */
#define META_TAG_CHECK 16u
#define META_TAG_ALARM 17u
#define CHECK_MARK_BYTES 16u
#define CHECK_MARKS_BYTES_MAX                                                  \
    (META_HEADER_BYTES + 8u + STORE_CHECK_KEEP * CHECK_MARK_BYTES)
#define CHECK_ALARM_BYTES (META_HEADER_BYTES + 32u)

/* The LMDB database holding a snapshot database's records. */
MDB_dbi store_sm_dbi(const struct store *s, enum snap_db db);

/* Called for every record of a group's state machine. */
typedef int (*store_sm_fn)(void *ctx, enum snap_db db, const MDB_val *k,
                           const MDB_val *v);

/* Walks the group's key ranges of kv, hist, sess and sess_lru, in that
 * order (the snapshot order), each in LMDB key order; a non-KHO_OK return
 * of f stops the walk and is returned. */
int store_sm_walk(struct store *s, MDB_txn *txn, uint64_t group, store_sm_fn f,
                  void *ctx);

/* Checks one record of a state-machine database (its checksum and its
 * layout) as it must be before it leaves the node in a snapshot or a
 * backup. Returns KHO_OK or KHO_ECORRUPT; the caller writes the message. */
int store_sm_record_check(struct store *s, uint64_t group, enum snap_db db,
                          const MDB_val *k, const MDB_val *v);

/* Applies a check marker at `index`: hashes the group's state machine in
 * txn and records the mark. */
int store_check_apply(struct store *s, MDB_txn *txn, uint64_t group,
                      uint64_t index);

#endif /* KHO_STORE_CHECK_H */

/*
 * check.h - what check.c, backup.c, stream.c and stage.c share inside
 * server/store: walking, checking and resealing a group's state-machine
 * records (snapshot.c), applying a check marker, and the raft_meta records
 * of checks (store.h, "Consistency checks"). Nothing here leaves
 * server/store. Every function takes the group's data id where it touches
 * state-machine records.
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

/* The databases of a snapshot, in stream order, and their count. */
extern const enum snap_db store_sm_dbs[4];
#define SNAP_DB_COUNT 4u

/* Walks the key ranges of data id `data` in kv, hist, sess and sess_lru,
 * in that order (the stream order), each in LMDB key order; a non-KHO_OK
 * return of f stops the walk and is returned. */
int store_sm_walk(struct store *s, MDB_txn *txn, uint64_t data, store_sm_fn f,
                  void *ctx);

/* Whether a record of database `db` (a tag of the stream; anything else
 * is false) may have a key (without its data id) and value of these
 * lengths. */
bool store_sm_shape_ok(uint8_t db, size_t key_len, size_t value_len);

/* Checks one record of a state-machine database (its checksum under data
 * id `data` and its layout). Returns KHO_OK or KHO_ECORRUPT; the caller
 * writes the message. */
int store_sm_record_check(struct store *s, uint64_t data, enum snap_db db,
                          const MDB_val *k, const MDB_val *v);
/* store_sm_shape_ok() and store_sm_record_check() on a stored record,
 * with the message written, as a record must pass before it leaves the
 * node in a snapshot or a backup. */
int store_sm_verify(struct store *s, uint64_t group, uint64_t data,
                    enum snap_db db, const MDB_val *k, const MDB_val *v);
/* Recomputes the checksum of a record already checked for another data id
 * so that it is right under `data` (key: without its data id). */
void store_sm_reseal(enum snap_db db, uint64_t data, const uint8_t *key,
                     size_t key_len, uint8_t *v, size_t len);

/* Applies a check marker at `index`: hashes the group's state machine
 * (data id `data`) in txn and records the mark under the group. */
int store_check_apply(struct store *s, MDB_txn *txn, uint64_t group,
                      uint64_t data, uint64_t index);

#endif /* KHO_STORE_CHECK_H */

/*
 * internal.h - what the store's files share: the handles, the on-disk
 * record codecs and error helpers. Nothing here leaves server/store.
 */
#ifndef KHO_STORE_INTERNAL_H
#define KHO_STORE_INTERNAL_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

#include "store.h"

/* Always on, release builds included: a failed invariant is a bug in kho,
 * never bad input (which is validated and answered with an error). */
#define STORE_ASSERT(cond)                                                     \
    do {                                                                       \
        if (!(cond)) {                                                         \
            store_panic(__FILE__, __LINE__, #cond);                            \
        }                                                                      \
    } while (0)

_Noreturn void store_panic(const char *file, int line, const char *what);

struct store {
    MDB_env *env;
    MDB_dbi dbi_info, dbi_log, dbi_meta, dbi_snap, dbi_kv, dbi_sess;
    MDB_dbi dbi_hist, dbi_lru;
    struct store_opts opts;
    uint64_t hash_mask; /* from opts.test_key_hash_bits */
    char *path; /* as given, for messages */
    dev_t dev;  /* identity of the directory in the open registry */
    ino_t ino;
    int lock_fd;        /* flock()ed against other processes */
    unsigned fork_gen;  /* fork generation at open */
    pthread_mutex_t mu; /* guards errmsg, the handle counts, abandoned
                           and the writer */
    uint32_t n_groups;  /* open group handles */
    uint32_t n_readers; /* open snapshot readers */
    uint32_t n_stages;  /* open stage handles */
    /* Data ids of stages closed unfinished, for the next store_batch_gc()
     * to turn into garbage (a write the closing thread cannot make: it
     * may be any thread). */
    uint64_t abandoned[STORE_STAGES_MAX];
    uint32_t n_abandoned;
    /* Set whenever garbage may exist (store_gc_pending()); cleared by a
     * store_batch_gc() that finds none. */
    atomic_bool gc_pending;
    bool writing;       /* a write transaction is open ... */
    pthread_t writer;   /* ... in this thread */
    /* The raft thread's read transaction, reset between callbacks: it
     * keeps its reader slot, so request threads filling the reader table
     * can never make a raft_storage callback fail (the core treats any
     * storage error as fatal for the group). */
    pthread_mutex_t raft_mu;
    MDB_txn *raft_txn;
    /* Reset read transactions for store_rtxn_begin() to renew: a stack,
     * so the one used last (its pages likeliest in cache) goes out
     * first. Each keeps its reader slot while it waits here. */
    pthread_mutex_t rtxn_mu; /* guards the four fields below */
    MDB_txn *rtxn_pool[STORE_RTXN_POOL_MAX];
    uint32_t rtxn_n;   /* idle transactions in rtxn_pool */
    uint32_t rtxn_cap; /* min(STORE_RTXN_POOL_MAX, max_readers / 2) */
    uint32_t rtxn_out; /* begun by store_rtxn_begin(), not yet ended */
    char errmsg[STORE_ERRMSG_BYTES];
};

struct store_group {
    struct store *s;
    uint64_t id;
    uint8_t *scratch; /* what the last callback handed the core */
    size_t scratch_cap;
};

struct store_batch {
    struct store *s;
    MDB_txn *txn; /* NULL once failed (aborted) */
    int err;      /* first error; the batch stays failed */
};

/* Records that the calling thread opened / ended the write transaction. */
void store_writer_set(struct store *s, bool writing);

/* --- Errors (store.c) ---------------------------------------------------- */

/* Records a message on `s` and returns err. */
int store_fail(struct store *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Translates an LMDB or errno code met while doing `what` into kho_err,
 * recording a message on `s`. */
int store_mdb_err(struct store *s, int rc, const char *what);
/* Marks the batch failed (aborting its transaction) and returns err. */
int store_batch_fail(struct store_batch *b, int err);
/* KHO_EINVAL if the process forked since `s` was opened. */
int store_check_fork(struct store *s);

/* A read transaction on the latest commit, or an error with the message
 * recorded: a pooled one renewed, else a fresh one. End it with
 * store_rtxn_end(), not mdb_txn_abort(): store_close() asserts that every
 * one was ended. Close its cursors first. */
int store_rtxn_begin(struct store *s, MDB_txn **txn);
/* Resets txn and keeps it in the pool, or aborts it when the pool is
 * full. In a forked child it does nothing: the transaction and its reader
 * slot are the parent's. */
void store_rtxn_end(struct store *s, MDB_txn *txn);
/* The same for raft_storage callbacks: the reserved transaction when it is
 * free (*reserved set), else one of store_rtxn_begin(). End it with
 * store_rtxn_raft_end(), passing *reserved back. */
int store_rtxn_raft_begin(struct store *s, MDB_txn **txn, bool *reserved);
void store_rtxn_raft_end(struct store *s, MDB_txn *txn, bool reserved);

/* --- Byte order ---------------------------------------------------------- */

static inline void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (56 - 8 * i));
    }
}

static inline uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static inline void put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static inline uint16_t get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static inline void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline uint32_t get_le32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

static inline void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static inline uint64_t get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

/* --- Checksums (crc32c.c) ------------------------------------------------ */

/* CRC-32C (Castagnoli). Start with store_crc32c_init(), feed, end with
 * store_crc32c_final(). */
static inline uint32_t store_crc32c_init(void)
{
    return 0xFFFFFFFFu;
}

static inline uint32_t store_crc32c_final(uint32_t crc)
{
    return crc ^ 0xFFFFFFFFu;
}

uint32_t store_crc32c_update(uint32_t crc, const void *buf, size_t len);

/* 64-bit hash of a user key (codec.c). */
uint64_t store_key_hash(const uint8_t *key, size_t len);
/* The same, narrowed by the store's test knob (store_opts). */
static inline uint64_t store_hash(const struct store *s, const uint8_t *key,
                                  size_t len)
{
    return store_key_hash(key, len) & s->hash_mask;
}

/* --- Records (codec.c) --------------------------------------------------- */

#define LOG_KEY_BYTES 16u
#define META_KEY_BYTES 9u
#define GROUP_KEY_BYTES 8u
#define ENTRY_HEADER_BYTES 16u
#define RECORD_VERSION 1u
#define META_HEADER_BYTES 8u
#define META_HS_BYTES (META_HEADER_BYTES + 24u)
#define META_U64_BYTES (META_HEADER_BYTES + 8u)
#define META_SNAP_BYTES_MAX (META_HEADER_BYTES + 16u + RAFT_CONF_ENCODED_MAX)
#define META_CONF_BYTES_MAX (META_HEADER_BYTES + 8u + RAFT_CONF_ENCODED_MAX)
/* Fresh data ids have the top bit set; group ids (raft indexes, at most
 * RAFT_INDEX_MAX) never do. */
#define DATA_ID_FRESH (UINT64_C(1) << 63)

/* The record fields after a kv or hist value's header (store.h top):
 * version, create_rev, mod_rev, time_ms, writer_len. */
#define BODY_FIXED_BYTES 33u
#define BODY_BYTES_MAX                                                         \
    (BODY_FIXED_BYTES + STORE_WRITER_BYTES_MAX + STORE_VALUE_BYTES_MAX)

#define KV_HEADER_BYTES 8u
#define KV_LMDB_KEY_BYTES_MAX (GROUP_KEY_BYTES + STORE_KV_INLINE_KEY_BYTES + 8u)
#define KV_VALUE_BYTES_MAX (KV_HEADER_BYTES + STORE_KEY_BYTES_MAX + BODY_BYTES_MAX)

#define HIST_KEY_BYTES 26u /* group, hash, mod_rev, u16 slot */
#define HIST_HEADER_BYTES 8u
#define HIST_VALUE_BYTES_MAX                                                   \
    (HIST_HEADER_BYTES + STORE_KEY_BYTES_MAX + BODY_BYTES_MAX)
#define HIST_DELETED 0x01u
/* Slots under one hash and revision: every version with mod_rev R was
 * written by an op of request R, one version per op, so at most this many
 * share a revision (and a hash). */
#define HIST_SLOTS STORE_TXN_OPS_MAX

#define SESS_KEY_BYTES 16u
#define SESS_VALUE_BYTES 48u
#define LRU_KEY_BYTES 24u
#define LRU_VALUE_BYTES 4u

/* The snapshot stream (store.h, "Snapshot stream"). */
#define STREAM_HEADER_BYTES 40u
#define STREAM_RECORD_HEADER_BYTES 7u
#define STREAM_TRAILER_BYTES 13u /* u8 0, u64 count, u32 crc */
#define STREAM_KEY_BYTES_MAX (KV_LMDB_KEY_BYTES_MAX - GROUP_KEY_BYTES)
#define STREAM_VALUE_BYTES_MAX                                                 \
    (KV_VALUE_BYTES_MAX > HIST_VALUE_BYTES_MAX ? KV_VALUE_BYTES_MAX            \
                                               : HIST_VALUE_BYTES_MAX)
#define STREAM_RECORD_BYTES_MAX                                                \
    (STREAM_RECORD_HEADER_BYTES + STREAM_KEY_BYTES_MAX + STREAM_VALUE_BYTES_MAX)

_Static_assert(KV_LMDB_KEY_BYTES_MAX <= STORE_LMDB_KEY_BYTES_MAX,
               "a kv key must fit LMDB's key limit");
_Static_assert(GROUP_KEY_BYTES + STORE_KV_INLINE_KEY_BYTES <
                   KV_LMDB_KEY_BYTES_MAX,
               "inline and long kv keys must be told apart by length");
_Static_assert(STORE_KEY_BYTES_MAX <= UINT16_MAX,
               "key lengths are stored in 16 bits");
_Static_assert(STORE_WRITER_BYTES_MAX <= UINT8_MAX,
               "writer lengths are stored in 8 bits");
_Static_assert(STORE_TXN_CMPS_MAX <= UINT16_MAX &&
                   STORE_TXN_OPS_MAX <= UINT16_MAX,
               "counts and op slots are stored in 16 bits");
_Static_assert(STORE_HISTORY_VERSIONS >= 2u,
               "a delete adds two versions at once: the record it removes "
               "and its tombstone");
_Static_assert(STORE_VALUE_BYTES_MAX <= UINT32_MAX,
               "value lengths are stored in 32 bits");
_Static_assert(STORE_REQ_HEADER_BYTES +
                       (uint64_t)STORE_TXN_OPS_MAX *
                           (STORE_OP_HEADER_BYTES + STORE_KEY_BYTES_MAX) <
                   STORE_ENTRY_BYTES_MAX,
               "a request of many small ops must fit one raft entry");
_Static_assert(STREAM_RECORD_BYTES_MAX <= STORE_STAGE_TXN_BYTES,
               "one record must fit a stage's transaction");
_Static_assert(STREAM_RECORD_BYTES_MAX <= STORE_BACKUP_CHUNK_BYTES * 2u,
               "a record spans at most a few backup chunks");
_Static_assert(STORE_STAGE_DESC_BYTES >= 40u,
               "a stage descriptor holds magic, crc, data id, group, index "
               "and term");

/* raft_meta tags (store.h top). META_SESSIONS is keyed by the data id,
 * the others by the group id. */
enum meta_tag {
    META_HS = 1,
    META_SNAP = 2,
    META_APPLIED = 3,
    META_SESSIONS = 4,
    META_DATA = 5,
    META_CONF = 6,
};

/* The databases a snapshot carries, by their tag in the stream. */
enum snap_db {
    SNAP_DB_KV = 1,
    SNAP_DB_HIST = 2,
    SNAP_DB_SESS = 3,
    SNAP_DB_LRU = 4,
};

void store_log_key(uint8_t k[LOG_KEY_BYTES], uint64_t group, uint64_t index);
void store_meta_key(uint8_t k[META_KEY_BYTES], uint64_t group,
                    enum meta_tag tag);

/* Encodes an entry value (ENTRY_HEADER_BYTES + e->len bytes) into v. */
void store_entry_encode(uint8_t *v, uint64_t group, const struct raft_entry *e);
/* Decodes and verifies a stored entry; out->data points into v.
 * KHO_ECORRUPT on any mismatch. */
int store_entry_decode(const uint8_t *v, size_t len, uint64_t group,
                       uint64_t index, struct raft_entry *out);

size_t store_meta_hs_encode(uint8_t *v, uint64_t group,
                            const struct raft_hard_state *hs);
int store_meta_hs_decode(const uint8_t *v, size_t len, uint64_t group,
                         struct raft_hard_state *hs);
/* The records holding one u64 (applied index, session count). */
size_t store_meta_u64_encode(uint8_t *v, uint64_t group, enum meta_tag tag,
                             uint64_t x);
int store_meta_u64_decode(const uint8_t *v, size_t len, uint64_t group,
                          enum meta_tag tag, uint64_t *x);
/* 0 if the configuration cannot be encoded. */
size_t store_meta_snap_encode(uint8_t *v, uint64_t group,
                              const struct raft_snapshot_meta *m);
int store_meta_snap_decode(const uint8_t *v, size_t len, uint64_t group,
                           struct raft_snapshot_meta *m);
/* The CONF record (tag 6): index and configuration. */
size_t store_meta_conf_encode(uint8_t *v, uint64_t group, uint64_t index,
                              const struct raft_conf *c);
int store_meta_conf_decode(const uint8_t *v, size_t len, uint64_t group,
                           uint64_t *index, struct raft_conf *c);

/* The record fields of a kv or hist value (store.h top): BODY_FIXED_BYTES
 * + writer + value bytes. Decoding fills every field of r but key and
 * deleted; writer and value point into p. */
size_t store_body_size(const struct store_record *r);
void store_body_encode(uint8_t *p, const struct store_record *r);
int store_body_decode(const uint8_t *p, size_t len, struct store_record *r);

/* --- Reading records in a transaction (records.c) ------------------------ */

/* Each returns KHO_OK, KHO_ENOTFOUND or another error with a message. */
int store_rec_get_hs(struct store *s, MDB_txn *txn, uint64_t group,
                     struct raft_hard_state *hs);
int store_rec_get_applied(struct store *s, MDB_txn *txn, uint64_t group,
                          uint64_t *applied);
int store_rec_get_snap_meta(struct store *s, MDB_txn *txn, uint64_t group,
                            struct raft_snapshot_meta *m);
/* The session count of a data id; KHO_OK with 0 when none is stored. */
int store_rec_get_sessions(struct store *s, MDB_txn *txn, uint64_t data,
                           uint64_t *n);
/* The group's data id (tag 5; the group id itself when absent). Does not
 * check that the group exists. */
int store_rec_get_data(struct store *s, MDB_txn *txn, uint64_t group,
                       uint64_t *data);
/* The CONF record (tag 6); KHO_ENOTFOUND when absent. */
int store_rec_get_conf(struct store *s, MDB_txn *txn, uint64_t group,
                       uint64_t *index, struct raft_conf *c);
/* The stored entry at index (data points into the map). */
int store_rec_get_entry(struct store *s, MDB_txn *txn, uint64_t group,
                        uint64_t index, struct raft_entry *e);
/* Last stored log index of the group; *found false when it has none. */
int store_rec_last_index(struct store *s, MDB_txn *txn, uint64_t group,
                         uint64_t *last, bool *found);
/*
 * What a snapshot of the group taken now is: {applied index A, term of
 * entry A (the snapshot meta's when A is its index), configuration at A
 * (CONF, else the snapshot meta's)}, and the group's data id. KHO_ENOTFOUND
 * (with a message) when the group does not exist; A may be 0.
 */
int store_rec_applied_meta(struct store *s, MDB_txn *txn, uint64_t group,
                           struct raft_snapshot_meta *m, uint64_t *data);
/* The group's applied index and data id, KHO_ENOTFOUND with a message when
 * it does not exist: what every read of the state machine starts with. */
int store_rec_group_data(struct store *s, MDB_txn *txn, uint64_t group,
                         uint64_t *applied, uint64_t *data);

int store_rec_put_hs(struct store *s, MDB_txn *txn, uint64_t group,
                     const struct raft_hard_state *hs);
int store_rec_put_applied(struct store *s, MDB_txn *txn, uint64_t group,
                          uint64_t applied);
int store_rec_put_snap_meta(struct store *s, MDB_txn *txn, uint64_t group,
                            const struct raft_snapshot_meta *m);
int store_rec_put_sessions(struct store *s, MDB_txn *txn, uint64_t data,
                           uint64_t n);
int store_rec_put_data(struct store *s, MDB_txn *txn, uint64_t group,
                       uint64_t data);
int store_rec_put_conf(struct store *s, MDB_txn *txn, uint64_t group,
                       uint64_t index, const struct raft_conf *c);
int store_rec_put_entry(struct store *s, MDB_txn *txn, uint64_t group,
                        const struct raft_entry *e);
/* Deletes one raft_meta record if present. */
int store_rec_del_meta(struct store *s, MDB_txn *txn, uint64_t key,
                       enum meta_tag tag);

/* Deletes keys k with lo <= k < hi (hi NULL: to the end of the database). */
int store_rec_del_range(struct store *s, MDB_txn *txn, MDB_dbi dbi,
                        const uint8_t *lo, size_t lo_len, const uint8_t *hi,
                        size_t hi_len);
/* Deletes every key of a group (or data id) in `dbi`: keys starting with
 * it. */
int store_rec_del_group(struct store *s, MDB_txn *txn, MDB_dbi dbi,
                        uint64_t group);
/* True when an LMDB key belongs to `group` (starts with its id; for the
 * state-machine databases, the data id). */
static inline bool store_in_group(const MDB_val *k, uint64_t group)
{
    return k->mv_size >= GROUP_KEY_BYTES && get_be64(k->mv_data) == group;
}

/* --- The kv database (kv.c) ---------------------------------------------- */

/* Every function here takes the data id (store.h top) of the group. */

/* The LMDB key of a user key; returns its length. */
size_t store_kv_key(const struct store *s, uint8_t k[KV_LMDB_KEY_BYTES_MAX],
                    uint64_t data, const uint8_t *key, size_t len);
/* Decodes and verifies one stored kv record under `data` (checksum, and
 * that the LMDB key is the one its full key maps to). KHO_ECORRUPT
 * without a message. */
int store_kv_decode(const struct store *s, uint64_t data, const MDB_val *k,
                    const MDB_val *v, struct store_record *r);
/* The message for a corrupt kv record; returns KHO_ECORRUPT. */
int store_kv_corrupt(struct store *s, uint64_t data);
/* Finds a user key: KHO_OK with r set (r->key is `key`; writer and value
 * point into the map, valid until the next write in txn), or KHO_ENOTFOUND
 * (no message); *other is set when a different long key holds its LMDB
 * key. */
int store_kv_find(struct store *s, MDB_txn *txn, uint64_t data,
                  const uint8_t *key, size_t key_len, struct store_record *r,
                  bool *other);
/* Writes r (key, value and every field) under its LMDB key. */
int store_kv_put(struct store *s, MDB_txn *txn, uint64_t data,
                 const struct store_record *r);
int store_kv_del(struct store *s, MDB_txn *txn, uint64_t data,
                 const uint8_t *key, size_t key_len);
/* Recomputes the checksum of a well-formed kv value (key: the LMDB key
 * without its data id) for data id `data`. */
void store_kv_reseal(uint64_t data, const uint8_t *key, size_t key_len,
                     uint8_t *v, size_t len);

/* --- The history database (hist.c) --------------------------------------- */

/* Each takes the data id of the group and keeps the rules of store.h top,
 * "History". */

/* Drops the key's oldest versions in hist while it has more than `keep`
 * there: what an op calls before it adds versions to the key, so that
 * with the current record counted the key keeps at most
 * STORE_HISTORY_VERSIONS. O(versions sharing the key's hash). */
int store_hist_prune(struct store *s, MDB_txn *txn, uint64_t data,
                     const uint8_t *key, size_t key_len, uint32_t keep);
/* Appends the key's current record cur (as store_kv_find() gave it; only
 * its key, mod_rev and sizes are used, so writes since are fine, and the
 * key must not point into the map) as a superseded version, under its own
 * mod_rev and the lowest free slot. Call it before the put or delete that
 * replaces the record. */
int store_hist_supersede(struct store *s, MDB_txn *txn, uint64_t data,
                         const struct store_record *cur);
/* Appends tombstone t (deleted set; no pointer into the map) under its
 * mod_rev and `slot`, the delete's index in its request. */
int store_hist_tombstone(struct store *s, MDB_txn *txn, uint64_t data,
                         const struct store_record *t, uint32_t slot);
/* Decodes and verifies one stored version. KHO_ECORRUPT without a
 * message. */
int store_hist_decode(uint64_t data, const MDB_val *k, const MDB_val *v,
                      struct store_record *r);
/* store_kv_history() inside a transaction: the key's versions in hist,
 * then its current kv record. */
int store_hist_walk(struct store *s, MDB_txn *txn, uint64_t data,
                    const uint8_t *key, size_t key_len, uint64_t after_rev,
                    uint32_t limit, store_record_cb cb, void *ctx, bool *more);

/* What format 4 makes of a version stored by format 3, which kept every
 * key's current record in hist too and put every version at its op's
 * slot (convert.c, and restores of KHOSNAP 3 streams in backup.c). */
enum hist_v3_fate {
    HIST_V3_KEEP = 1, /* as it is */
    HIST_V3_DROP,     /* its key's current kv record: kv holds it */
    HIST_V3_PLACE,    /* superseded, at a slot other than 0: it belongs at
                         the lowest free slot (store_hist_place()) */
};
/* The fate of version r (decoded, LMDB key k) of a group whose kv records
 * are under data id `data`. Errors: those of store_kv_find(). */
int store_hist_v3_fate(struct store *s, MDB_txn *txn, uint64_t data,
                       const uint8_t k[HIST_KEY_BYTES],
                       const struct store_record *r, enum hist_v3_fate *fate);
/* Writes the checked stored version v (len bytes) under data id `data`,
 * key's hash and revision (key: its LMDB key without the data id) and the
 * lowest free slot up to key's own, which must be free; resealed. *slot:
 * the slot it took. */
int store_hist_place(struct store *s, MDB_txn *txn, uint64_t data,
                     const uint8_t *key, const uint8_t *v, size_t len,
                     uint32_t *slot);

/* --- Store format (store.c, convert.c) ----------------------------------- */

/* The format before STORE_FORMAT_VERSION, which store_open() converts. */
#define STORE_FORMAT_V3 3u
/* Records STORE_FORMAT_VERSION in `info`. */
int store_format_put(struct store *s, MDB_txn *txn);
/* Converts a format-3 store to the current format in bounded write
 * transactions of its own (convert.c), the last one recording the format;
 * logs what it did. Idempotent: an interrupted run leaves format 3, and
 * the next one starts over. */
int store_convert_v3(struct store *s);

/* --- Sessions (session.c) ------------------------------------------------ */

/* Forgets up to STORE_SESSION_EVICT_PER_APPLY sessions idle for
 * STORE_SESSION_IDLE_MS at now_ms. */
int store_sess_evict(struct store *s, MDB_txn *txn, uint64_t data,
                     uint64_t now_ms);
/* Looks a session up: KHO_OK with *seq, *time_ms and *res (the recorded
 * answer), or KHO_ENOTFOUND (no message). */
int store_sess_get(struct store *s, MDB_txn *txn, uint64_t data,
                   uint64_t session, uint64_t *seq, uint64_t *time_ms,
                   struct store_apply_result *res);
/* KHO_OK when there is room for one more session, else KHO_EBUSY (no
 * message: it is the client's answer, not a store failure). */
int store_sess_room(struct store *s, MDB_txn *txn, uint64_t data);
/* Records `res` as the answer to (session, seq) at time now_ms, creating
 * the session when `fresh` (counted), else moving it in the idle index
 * from its old time. */
int store_sess_put(struct store *s, MDB_txn *txn, uint64_t data,
                   uint64_t session, uint64_t seq, uint64_t now_ms,
                   bool fresh, uint64_t old_time_ms,
                   const struct store_apply_result *res);
/* Verify one stored record (for snapshots). KHO_ECORRUPT, no message. */
int store_sess_check(const MDB_val *k, const MDB_val *v);
int store_lru_check(const MDB_val *k, const MDB_val *v);

/* --- Applying requests (apply.c) ----------------------------------------- */

/* Applies the request in a NORMAL entry's data at raft index `index` to
 * the group's state machine (under its data id `data`); *out is the
 * client's answer (a malformed request is a no-op answered KHO_EINVAL /
 * KHO_ETOOLARGE). Errors are the store's own. */
int store_apply_request(struct store *s, MDB_txn *txn, uint64_t group,
                        uint64_t data, uint64_t index, const uint8_t *bytes,
                        size_t len, struct store_apply_result *out);

/* --- Data ids, garbage and stages (data.c, stage.c) ---------------------- */

/* A fresh data id ((1 << 63) | counter, the counter in `info`). */
int store_data_alloc(struct store *s, MDB_txn *txn, uint64_t *data);
/* Records `data` as garbage for store_batch_gc() (idempotent). */
int store_gc_add(struct store *s, MDB_txn *txn, uint64_t data);
/* Deletes a data id's records at once and forgets it as garbage: for a
 * restore, which may reuse an id that an earlier life left as garbage. */
int store_gc_clear_now(struct store *s, MDB_txn *txn, uint64_t data);
/* At store_open: every stage marker left over becomes garbage; sets
 * gc_pending when garbage is waiting. */
int store_gc_open(struct store *s, MDB_txn *txn);
/* Every stage marker of the group that is finished (all_states: any)
 * becomes garbage, but `keep` (0: none). */
int store_stage_markers_drop(struct store *s, MDB_txn *txn, uint64_t group,
                             bool all_states, uint64_t keep);

/* A stage marker (store.h top, `info` "stage"). */
enum stage_state {
    STAGE_RECEIVING = 1,
    STAGE_FINISHED = 2,
};
struct stage_marker {
    uint32_t state; /* enum stage_state */
    uint64_t group, index, term;
};
int store_stage_marker_get(struct store *s, MDB_txn *txn, uint64_t data,
                           struct stage_marker *m);
int store_stage_marker_put(struct store *s, MDB_txn *txn, uint64_t data,
                           const struct stage_marker *m);
int store_stage_marker_del(struct store *s, MDB_txn *txn, uint64_t data);

/* raft.h step 2a with a stage descriptor (stage.c): swaps the group's data
 * id for the staged one, in the batch. */
int store_stage_install(struct store_batch *b, uint64_t group,
                        const struct raft_snapshot *sn, uint64_t applied);

#endif /* KHO_STORE_INTERNAL_H */

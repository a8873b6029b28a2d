/*
 * internal.h - what the store's files share: the handles, the on-disk
 * record codecs and error helpers. Nothing here leaves server/store.
 */
#ifndef KHO_STORE_INTERNAL_H
#define KHO_STORE_INTERNAL_H

#include <lmdb.h>
#include <pthread.h>
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
    struct store_opts opts;
    char *path; /* as given, for messages */
    dev_t dev;  /* identity of the directory in the open registry */
    ino_t ino;
    int lock_fd;        /* flock()ed against other processes */
    unsigned fork_gen;  /* fork generation at open */
    pthread_mutex_t mu; /* guards errmsg, n_groups and the writer */
    uint32_t n_groups;  /* open group handles */
    bool writing;       /* a write transaction is open ... */
    pthread_t writer;   /* ... in this thread */
    /* The raft thread's read transaction, reset between callbacks: it
     * keeps its reader slot, so request threads filling the reader table
     * can never make a raft_storage callback fail (the core treats any
     * storage error as fatal for the group). */
    pthread_mutex_t raft_mu;
    MDB_txn *raft_txn;
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

/* A read transaction, or an error with the message recorded. */
int store_rtxn_begin(struct store *s, MDB_txn **txn);
/* The same for raft_storage callbacks: the reserved transaction when it is
 * free (*reserved set), else a fresh one. End it with
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

/* 64-bit hash of a long user key (codec.c). */
uint64_t store_key_hash(const uint8_t *key, size_t len);

/* --- Records (codec.c) --------------------------------------------------- */

#define LOG_KEY_BYTES 16u
#define META_KEY_BYTES 9u
#define GROUP_KEY_BYTES 8u
#define ENTRY_HEADER_BYTES 16u
#define RECORD_VERSION 1u
#define META_HEADER_BYTES 8u
#define META_HS_BYTES (META_HEADER_BYTES + 24u)
#define META_APPLIED_BYTES (META_HEADER_BYTES + 8u)
#define META_SNAP_BYTES_MAX (META_HEADER_BYTES + 16u + RAFT_CONF_ENCODED_MAX)
#define KV_HEADER_BYTES 8u
#define KV_LMDB_KEY_BYTES_MAX (GROUP_KEY_BYTES + STORE_KV_INLINE_KEY_BYTES + 8u)
#define SNAP_HEADER_BYTES 32u
#define SNAP_RECORD_HEADER_BYTES 6u
#define SNAP_TRAILER_BYTES 4u

_Static_assert(KV_LMDB_KEY_BYTES_MAX <= STORE_LMDB_KEY_BYTES_MAX,
               "a kv key must fit LMDB's key limit");
_Static_assert(GROUP_KEY_BYTES + STORE_KV_INLINE_KEY_BYTES <
                   KV_LMDB_KEY_BYTES_MAX,
               "inline and long kv keys must be told apart by length");
_Static_assert(STORE_KEY_BYTES_MAX <= UINT16_MAX,
               "key lengths are stored in 16 bits");
_Static_assert(STORE_CMD_BYTES_MAX <= RAFT_ENTRY_BYTES_MAX,
               "a command must fit one raft entry");
_Static_assert(STORE_SNAP_BYTES_MAX <= UINT32_MAX,
               "LMDB keeps a value's size in 32 bits");

enum meta_tag {
    META_HS = 1,
    META_SNAP = 2,
    META_APPLIED = 3,
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
size_t store_meta_applied_encode(uint8_t *v, uint64_t group, uint64_t applied);
int store_meta_applied_decode(const uint8_t *v, size_t len, uint64_t group,
                              uint64_t *applied);
/* 0 if the configuration cannot be encoded. */
size_t store_meta_snap_encode(uint8_t *v, uint64_t group,
                              const struct raft_snapshot_meta *m);
int store_meta_snap_decode(const uint8_t *v, size_t len, uint64_t group,
                           struct raft_snapshot_meta *m);

/* --- Reading records in a transaction (records.c) ------------------------ */

/* Each returns KHO_OK, KHO_ENOTFOUND or another error with a message. */
int store_rec_get_hs(struct store *s, MDB_txn *txn, uint64_t group,
                     struct raft_hard_state *hs);
int store_rec_get_applied(struct store *s, MDB_txn *txn, uint64_t group,
                          uint64_t *applied);
int store_rec_get_snap_meta(struct store *s, MDB_txn *txn, uint64_t group,
                            struct raft_snapshot_meta *m);
/* The stored entry at index (data points into the map). */
int store_rec_get_entry(struct store *s, MDB_txn *txn, uint64_t group,
                        uint64_t index, struct raft_entry *e);
/* Last stored log index of the group; *found false when it has none. */
int store_rec_last_index(struct store *s, MDB_txn *txn, uint64_t group,
                         uint64_t *last, bool *found);

int store_rec_put_hs(struct store *s, MDB_txn *txn, uint64_t group,
                     const struct raft_hard_state *hs);
int store_rec_put_applied(struct store *s, MDB_txn *txn, uint64_t group,
                          uint64_t applied);
int store_rec_put_snap_meta(struct store *s, MDB_txn *txn, uint64_t group,
                            const struct raft_snapshot_meta *m);
int store_rec_put_entry(struct store *s, MDB_txn *txn, uint64_t group,
                        const struct raft_entry *e);

/* Deletes keys k with lo <= k < hi (hi NULL: to the end of the database). */
int store_rec_del_range(struct store *s, MDB_txn *txn, MDB_dbi dbi,
                        const uint8_t *lo, size_t lo_len, const uint8_t *hi,
                        size_t hi_len);
/* Deletes every key of a group in `dbi` (keys starting with the group). */
int store_rec_del_group(struct store *s, MDB_txn *txn, MDB_dbi dbi,
                        uint64_t group);

/* --- The state machine (kv.c) -------------------------------------------- */

/* Applies a decoded command; *result is the client's answer. */
int store_kv_apply_cmd(struct store *s, MDB_txn *txn, uint64_t group,
                       const struct store_cmd *c, int *result);
/* Applies a session envelope at raft index `index` (store.h). */
int store_kv_apply_envelope(struct store *s, MDB_txn *txn, uint64_t group,
                            uint64_t index, const struct store_envelope *e,
                            struct store_apply_result *out);
/* Reads one key in txn; value points into the map. */
int store_kv_lookup(struct store *s, MDB_txn *txn, uint64_t group,
                    const uint8_t *key, size_t key_len, const uint8_t **value,
                    size_t *value_len);
/* Writes the group's kv range as a snapshot payload at `index` into the
 * snap database. */
int store_kv_snapshot_write(struct store *s, MDB_txn *txn, uint64_t group,
                            uint64_t index);
/* Replaces the group's kv range with a (checked) payload. */
int store_kv_snapshot_install(struct store *s, MDB_txn *txn, uint64_t group,
                              uint64_t index, const uint8_t *data, size_t len);

#endif /* KHO_STORE_INTERNAL_H */

/*
 * store.h - kho's durable storage: one LMDB environment per node holding
 * every local Raft group's log, hard state and snapshot, and the registry
 * state machine those logs drive.
 *
 * Why one environment: the raft thread writes the new entries, hard states
 * and applies of *all* groups in one LMDB write transaction (group commit:
 * one fsync per loop), and the applied index of a group is written in the
 * same transaction as the state-machine changes it covers, so a restart
 * never re-applies or skips an entry (ARCHITECTURE.md, "A node").
 *
 * Threads. The write path (store_write_begin .. store_write_commit,
 * store_compact) belongs to one thread, the raft thread; LMDB serialises
 * writers anyway. A `struct store_group` and the `struct raft_storage` made
 * from it are used by that thread only. Reads (store_kv_get,
 * store_group_load) may come from any thread at any time: each runs on its
 * own short LMDB read transaction (MDB_NOTLS), which never blocks the writer
 * and is never blocked by it.
 *
 * On disk (named LMDB databases; all integers inside keys are big-endian so
 * that LMDB's byte order is numeric order; integers inside values are
 * little-endian like raft_conf_encode(); every value carries a CRC-32C over
 * its key and its bytes, so a flipped bit or a value moved under another key
 * reads as KHO_ECORRUPT and is never served):
 *
 *   info      "format"                   -> u32 STORE_FORMAT_VERSION
 *   raft_log  group u64 | index u64      -> u8 version, u8 type, u16 0,
 *                                           u32 crc, u64 term, data
 *   raft_meta group u64 | u8 tag         -> u8 version, u8 tag, u16 0,
 *                                           u32 crc, body:
 *             tag 1 hard state           -> u64 term, u64 vote, u64 commit
 *             tag 2 snapshot meta        -> u64 index, u64 term,
 *                                           raft_conf_encode() bytes
 *             tag 3 applied index        -> u64 applied
 *   snap      group u64                  -> snapshot payload (below)
 *   kv        group u64 | user key       -> u32 crc, u16 long_key_len, u16 0,
 *                                           [full user key], value
 *
 * The entry crc covers the 16-byte key, the version/type/reserved bytes, the
 * term and the data; the meta crc covers its key, header and body; the kv
 * crc covers the group id, the full user key and everything after the crc.
 *
 * LMDB keys are at most 511 bytes (mdb_env_get_maxkeysize), less than the
 * 1 KiB user-key limit. A user key longer than STORE_KV_INLINE_KEY_BYTES is
 * stored under group | its first STORE_KV_INLINE_KEY_BYTES bytes | a 64-bit
 * hash of the whole key, with the full key in the value (long_key_len != 0).
 * Order is exact except among long keys sharing those first bytes, which
 * sort by hash. Two long keys with the same prefix and hash cannot both
 * exist: the second put is refused with KHO_ECONFLICT (deterministically,
 * on every replica).
 *
 * Snapshot payload (what store_compact() writes, raft_storage.snapshot
 * serves and store_batch_persist_ready() installs):
 *   "KHOSNAP" 0x01, u64 group, u64 index, u64 count,
 *   count x (u16 key_len, u32 value_len, key, value), u32 crc of all before.
 */
#ifndef KHO_STORE_H
#define KHO_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../client/kho_err.h"
#include "../raft/raft.h"

/* --- Limits -------------------------------------------------------------- */

/* Registry records (ARCHITECTURE.md, "Data model"). */
#define STORE_KEY_BYTES_MAX 1024u
#define STORE_VALUE_BYTES_MAX (1u << 20)
/* One stored log entry's payload. */
#define STORE_ENTRY_BYTES_MAX RAFT_ENTRY_BYTES_MAX
/* One snapshot payload: the whole of one group's state machine in one LMDB
 * value (LMDB keeps a value's size in 32 bits). Streaming snapshots in
 * chunks will lift this. */
#define STORE_SNAP_BYTES_MAX (UINT64_C(1) << 30)
/* LMDB map size: the most the data file may grow to. */
#define STORE_MAP_BYTES_DEFAULT (UINT64_C(1) << 30)
#define STORE_MAP_BYTES_MIN (UINT64_C(64) << 10)
#define STORE_MAP_BYTES_MAX (UINT64_C(1) << 44)
/* Concurrent read transactions (reader-table slots). */
#define STORE_READERS_DEFAULT 512u
#define STORE_READERS_MAX 8192u
/* Named databases the environment may hold (5 used today). */
#define STORE_DBS_MAX 16u
/* Environments open at once in one process. */
#define STORE_OPEN_MAX 64u
/* Length of the last-error message kept per store. */
#define STORE_ERRMSG_BYTES 256u
/* A group's scratch buffer for raft_storage callbacks is given back when a
 * callback finds it above this size (one huge entry must not pin memory). */
#define STORE_SCRATCH_KEEP_BYTES (4u << 20)
/* User keys up to this length are stored inline in the LMDB key (see the
 * comment at the top). 8 + 495 + 8 = 511, LMDB's key limit. */
#define STORE_KV_INLINE_KEY_BYTES 495u
#define STORE_LMDB_KEY_BYTES_MAX 511u
/* Version of the on-disk layout above; a store with another refuses to
 * open. */
#define STORE_FORMAT_VERSION 1u

/* --- State-machine commands ---------------------------------------------- */

/*
 * The data of a RAFT_ENTRY_NORMAL entry (little-endian):
 *   u8 op, u8 0, u16 key_len, u32 value_len, key, value
 * key_len in [1, STORE_KEY_BYTES_MAX], value_len <= STORE_VALUE_BYTES_MAX,
 * value_len == 0 for a delete, and the entry is exactly that long.
 */
enum store_cmd_op {
    STORE_CMD_PUT = 1,
    STORE_CMD_DELETE = 2,
};

#define STORE_CMD_HEADER_BYTES 8u
#define STORE_CMD_BYTES_MAX                                                    \
    (STORE_CMD_HEADER_BYTES + STORE_KEY_BYTES_MAX + STORE_VALUE_BYTES_MAX)

struct store_cmd {
    uint32_t op; /* enum store_cmd_op */
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value; /* NULL for a delete */
    size_t value_len;
};

/* Encodes `c` into buf. Errors: KHO_EINVAL (bad op, empty key, a delete
 * with a value), KHO_ETOOLARGE (key or value over its limit, or cap too
 * small: *len_out then says how much is needed). */
int store_cmd_encode(const struct store_cmd *c, uint8_t *buf, size_t cap,
                     size_t *len_out);
/* Decodes a command; key and value point into buf. Errors: KHO_EINVAL
 * (malformed), KHO_ETOOLARGE (over a limit). */
int store_cmd_decode(const uint8_t *buf, size_t len, struct store_cmd *out);

/*
 * Client sessions (exactly-once). khod wraps each client command in an
 * envelope (little-endian):
 *   u8 STORE_CMD_SESSION, u8 cond, u16 0, u32 0, u64 session, u64 seq,
 *   u64 expected_version, then a store_cmd
 * Applying it checks the `sess` database (group u64 | session u64 -> u32
 * crc, u32 result, u64 seq, u64 version, u64 revision): a seq equal to the
 * session's last one is a retry and gets the recorded answer without being
 * applied again; an older seq gets KHO_ESTALE. The session record is written
 * in the same transaction as the command it covers. Session 0 means "no
 * session" (no deduplication).
 *
 * Records written through envelopes carry STORE_REC_META_BYTES before the
 * user value in the kv database: u64 version (1 on create, +1 per put),
 * u64 modify revision (the raft index that wrote it). store_kv_get returns
 * them with the value; store_rec_meta_decode() splits them off.
 */
#define STORE_CMD_SESSION 0x10u
#define STORE_ENVELOPE_HEADER_BYTES 32u
#define STORE_REC_META_BYTES 16u
#define STORE_STORED_VALUE_BYTES_MAX (STORE_VALUE_BYTES_MAX + STORE_REC_META_BYTES)

enum store_cond {
    STORE_COND_NONE = 0,
    STORE_COND_ABSENT = 1,  /* put only if the key does not exist */
    STORE_COND_VERSION = 2, /* only if the version matches (0 = absent) */
};

struct store_envelope {
    uint64_t session;
    uint64_t seq;
    uint32_t cond; /* enum store_cond */
    uint64_t expected_version;
    struct store_cmd cmd;
};

/* The outcome of applying one entry, for the client that proposed it. */
struct store_apply_result {
    int result;         /* as store_batch_apply's *result, plus KHO_ECONFLICT
                           (precondition failed) and KHO_ESTALE (old seq) */
    uint64_t version;   /* of the record after a put */
    uint64_t revision;  /* raft index that applied the command */
    bool duplicate;     /* a retry answered from the session table */
};

/* Encodes an envelope. Errors: those of store_cmd_encode(), KHO_EINVAL (bad
 * cond). */
int store_envelope_encode(const struct store_envelope *e, uint8_t *buf,
                          size_t cap, size_t *len_out);
/* Errors: KHO_EINVAL (malformed), KHO_ETOOLARGE. */
int store_envelope_decode(const uint8_t *buf, size_t len,
                          struct store_envelope *out);

/* Splits a stored record into version, revision and user value. Errors:
 * KHO_ECORRUPT (shorter than the meta). */
int store_rec_meta_decode(const uint8_t *v, size_t len, uint64_t *version,
                          uint64_t *revision, const uint8_t **value,
                          size_t *value_len);

/* Checks that `data` is a well-formed snapshot payload for `group_id` at
 * `index` with an intact checksum, without installing it: for the host to
 * call before handing a peer's snapshot to the core. Errors: KHO_ECORRUPT. */
int store_snap_check(const uint8_t *data, size_t len, uint64_t group_id,
                     uint64_t index);

/* --- Opening ------------------------------------------------------------- */

struct store_opts {
    uint64_t map_size_bytes; /* [STORE_MAP_BYTES_MIN, STORE_MAP_BYTES_MAX] */
    uint32_t max_readers;    /* [1, STORE_READERS_MAX] */
    /* Benchmarks only: MDB_NOSYNC, so a crash may lose or tear the last
     * transactions - a forgotten vote is a double vote. Logged loudly. */
    bool bench_unsafe_nosync;
};

struct store;
struct store_group;
struct store_batch;

void store_opts_defaults(struct store_opts *o);

/*
 * Opens (creating if missing) the store in directory `dir`, which is
 * created (one level, mode 0750) if it does not exist. `o` may be NULL for
 * the defaults. Durable: every commit is fsynced. Clears reader slots that
 * dead processes left behind (mdb_reader_check).
 * Errors: KHO_EINVAL (options out of range, not a directory, unknown format
 * version), KHO_EBUSY (already open in this process, or locked by another
 * process, or STORE_OPEN_MAX stores open), KHO_EDENIED, KHO_ENOMEM,
 * KHO_ECORRUPT, KHO_EIO. On failure store_errmsg(NULL) says why, in the
 * calling thread.
 */
int store_open(const char *dir, const struct store_opts *o, struct store **out);
/* Closes the store; every group handle must be closed first and no batch
 * may be open. NULL is allowed. */
void store_close(struct store *s);

/* The message of the last error on `s` (from any thread), or with s ==
 * NULL the last store_open() failure of the calling thread. The returned
 * string belongs to the calling thread and stays valid until its next
 * store_errmsg() call. */
const char *store_errmsg(const struct store *s);

/* --- Groups -------------------------------------------------------------- */

/* Loads what raft_create() needs: hard state and applied index.
 * Errors: KHO_ENOTFOUND (no such group), KHO_ECORRUPT, KHO_EIO, KHO_EBUSY
 * (reader table full). */
int store_group_load(struct store *s, uint64_t group_id,
                     struct raft_hard_state *hs, uint64_t *applied);

/* A handle on an existing group for its raft_storage.
 * Errors: KHO_ENOTFOUND, KHO_ENOMEM, plus those of store_group_load. */
int store_group_open(struct store *s, uint64_t group_id,
                     struct store_group **out);
void store_group_close(struct store_group *g);

/*
 * The raft_storage view of a group (raft.h). Each callback runs on a read
 * transaction that ends before it returns (the raft thread reuses one
 * reserved transaction, so busy readers elsewhere can never exhaust the
 * reader table under it), and copies what it hands the core (entry data,
 * snapshot payload) into the group's scratch buffer; those pointers stay
 * valid until the next callback on the same group or store_group_close(). Every
 * entry and snapshot is checksummed as it is read: a mismatch is KHO_ECORRUPT
 * (with the group and index in store_errmsg) and the data is not served.
 * Out-of-range requests are KHO_EINVAL, as in the memstore; a hole inside the
 * stored range is KHO_ECORRUPT.
 *
 * The callbacks see committed LMDB state only: the host must not call into
 * the core while a batch holding this group's changes is uncommitted.
 */
struct raft_storage store_raft_storage(struct store_group *g);

/* --- Writing: one transaction per raft-thread loop ----------------------- */

/*
 * Starts a write transaction. All batch calls on it fail once one has
 * failed (the first error is kept and the transaction already aborted);
 * store_write_commit() or store_write_abort() then ends it. A thread must
 * end its batch before it begins another (asserted: LMDB would deadlock);
 * another thread's begin waits for the open batch to end.
 * Errors: KHO_EINVAL (used after fork()), KHO_ENOMEM, KHO_EIO.
 */
int store_write_begin(struct store *s, struct store_batch **b);

/* Creates a group: snapshot meta (index 0, term 0, `conf`: the initial
 * configuration, or n == 0 for a node that will join an existing cluster),
 * zero hard state, applied 0. Errors: KHO_ECONFLICT (group exists),
 * KHO_EINVAL (bad configuration), KHO_ENOSPC, KHO_EIO. */
int store_batch_group_create(struct store_batch *b, uint64_t group_id,
                             const struct raft_conf *conf);

/* Deletes everything stored for a group (a replica moved away). Its group
 * handle must be closed. Errors: KHO_ENOTFOUND, KHO_ENOSPC, KHO_EIO. */
int store_batch_group_delete(struct store_batch *b, uint64_t group_id);

/*
 * Step 2a-b of raft.h for one group: installs rd->snapshot if set (checks
 * the payload, replaces the group's kv range with it, sets the applied index
 * to its index, records its meta and payload, drops the whole stored log),
 * deletes stored entries >= rd->entries[0].index, appends rd->entries, and
 * stores rd->hs when rd->hs_changed.
 * Errors: KHO_ENOTFOUND (no such group), KHO_ECORRUPT (the entries do not
 * fit the stored log, or a corrupt snapshot or stored record), KHO_EINVAL
 * (a cut or snapshot that would undo applied entries, malformed entries),
 * KHO_ENOSPC (map full: the transaction is aborted, reads still work),
 * KHO_EIO.
 */
int store_batch_persist_ready(struct store_batch *b, uint64_t group_id,
                              const struct raft_ready *rd);

/*
 * Applies one committed entry (step 2d) and records its index as applied,
 * in the batch's transaction. NORMAL entries are store_cmd commands; NOOP
 * and CONF entries only advance the applied index. An entry at or below the
 * applied index is skipped (nothing is applied twice). The command's own
 * outcome - the answer for the client - goes to *result (may be NULL):
 * KHO_OK; KHO_ENOTFOUND (delete of a missing key); KHO_EINVAL or
 * KHO_ETOOLARGE (malformed command: a no-op on every replica alike);
 * KHO_ECONFLICT (long-key hash collision, see the top).
 * Errors (the batch fails): KHO_ENOTFOUND (no group), KHO_EINVAL (index not
 * applied + 1, unknown entry type), KHO_ECORRUPT, KHO_ENOSPC, KHO_EIO.
 */
int store_batch_apply(struct store_batch *b, uint64_t group_id,
                      const struct raft_entry *e, int *result);

/* store_batch_apply() with the full outcome (version, revision, whether
 * the entry was a retried session request). Same errors. */
int store_batch_apply_ex(struct store_batch *b, uint64_t group_id,
                         const struct raft_entry *e,
                         struct store_apply_result *out);

/*
 * Log compaction in the batch: snapshots the group's kv range into `snap`
 * as of `index` with configuration `conf` (raft_applied_conf()), and drops
 * stored entries <= index. The kv state has no history, so `index` must be
 * the applied index exactly (raft.h only allows compaction up to it);
 * an index at or below the current snapshot is a no-op.
 * Errors: KHO_EINVAL (index != applied, bad conf), KHO_ETOOLARGE (payload
 * over STORE_SNAP_BYTES_MAX), KHO_ENOTFOUND, KHO_ECORRUPT, KHO_ENOSPC,
 * KHO_EIO.
 */
int store_batch_compact(struct store_batch *b, uint64_t group_id,
                        uint64_t index, const struct raft_conf *conf);

/* Commits (one fsync for every group in the batch) and frees the batch.
 * Returns the batch's first error if an earlier call failed (nothing was
 * written), else KHO_OK, KHO_ENOSPC or KHO_EIO. */
int store_write_commit(struct store_batch *b);
/* Discards the batch. NULL is allowed. */
void store_write_abort(struct store_batch *b);

/* store_batch_compact() in a transaction of its own. */
int store_compact(struct store *s, uint64_t group_id, uint64_t index,
                  const struct raft_conf *conf);

/* --- Reading the state machine ------------------------------------------- */

/*
 * Reads a key of a group's state machine on a read transaction. The value
 * is copied into buf when it fits; *value_len is its length either way.
 * *applied (may be NULL) is the group's applied index in the same snapshot
 * of the database, for a linearizable read to check against its read index.
 * Errors: KHO_ENOTFOUND (no such key, or no such group), KHO_ETOOLARGE
 * (buf too small), KHO_EINVAL (key length), KHO_ECORRUPT, KHO_EBUSY
 * (reader table full), KHO_EIO.
 */
int store_kv_get(struct store *s, uint64_t group_id, const void *key,
                 size_t key_len, void *buf, size_t cap, size_t *value_len,
                 uint64_t *applied);

#endif /* KHO_STORE_H */

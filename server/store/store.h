/*
 * store.h - kho's durable storage: one LMDB environment per node holding
 * every local Raft group's log, hard state and snapshot meta, and the
 * registry state machine those logs drive.
 *
 * Why one environment: the raft thread writes the new entries, hard states
 * and applies of *all* groups in one LMDB write transaction (group commit:
 * one fsync per loop), and the applied index of a group is written in the
 * same transaction as the state-machine changes it covers, so a restart
 * never re-applies or skips an entry (ARCHITECTURE.md, "A node").
 *
 * LMDB is the snapshot. A group's state machine lives under its *data id*
 * (raft_meta tag 5), not under its group id. Compaction records meta and
 * drops log entries, nothing else. A snapshot is streamed on demand from
 * one LMDB read transaction (store_snap_reader_*, any thread); a receiver
 * stages the stream under a fresh data id in small write transactions of
 * its own (store_stage_*, off the raft thread), and installing it on the
 * raft thread is an atomic swap of the group's data id, O(log length). The
 * data id it replaced becomes *garbage*, deleted a bounded number of keys
 * at a time by store_batch_gc().
 *
 * Threads. The write path (store_write_begin .. store_write_commit,
 * store_compact, store_batch_gc) belongs to one thread, the raft thread;
 * LMDB serialises writers anyway. A `struct store_group` and the `struct
 * raft_storage` made from it are used by that thread only. Reads
 * (store_kv_read, store_kv_scan, store_kv_history, store_space,
 * store_group_load, store_check_*) may come from any thread at any time:
 * each runs on its own short LMDB read transaction (MDB_NOTLS; a reset
 * one from a small pool, renewed, which sees the latest commit just as a
 * fresh one would: STORE_RTXN_POOL_MAX), which never blocks the writer
 * and is never blocked by it, and maps the group to its data id inside
 * that transaction, so a read running during an install sees either the
 * old or the new state machine, whole. A snapshot reader or a stage is
 * used by one thread at a time, never the raft thread for a stage (its
 * transactions wait for the raft thread's batch).
 *
 * On disk, format 4 (named LMDB databases; all integers inside keys are
 * big-endian so that LMDB's byte order is numeric order; integers inside
 * values are little-endian like raft_conf_encode(); every value but
 * info's "format" carries a CRC-32C over its key and its bytes, so a
 * flipped bit or a value moved under another key reads as KHO_ECORRUPT and
 * is never served). G is a group id, D a data id:
 *
 *   info      "format"                   -> u32 STORE_FORMAT_VERSION
 *             "restore"                  -> the backup restored from
 *                                           (backup.c)
 *             "data_next"                -> u32 crc, u32 0, u64 counter:
 *                                           the next fresh data id is
 *                                           (1 << 63) | counter (absent: 1)
 *             "gc" | D u64               -> u32 crc: D is garbage
 *             "stage" | D u64            -> u32 crc, u8 state (1 receiving,
 *                                           2 finished), u8 0, u16 0,
 *                                           u64 group, u64 index, u64 term:
 *                                           a stage under D
 *   raft_log  G u64 | index u64          -> u8 version, u8 type, u16 0,
 *                                           u32 crc, u64 term, data
 *   raft_meta G u64 | u8 tag             -> u8 version, u8 tag, u16 0,
 *                                           u32 crc, body:
 *             tag 1 hard state           -> u64 term, u64 vote, u64 commit
 *             tag 2 snapshot meta        -> u64 index, u64 term,
 *                                           raft_conf_encode() bytes
 *             tag 3 applied index        -> u64 applied
 *             tag 5 data id              -> u64 D (absent: D = G)
 *             tag 6 conf at applied      -> u64 index, raft_conf_encode()
 *                                           bytes: the configuration of
 *                                           the latest applied CONF entry
 *                                           (or of creation, compaction,
 *                                           install or restore at index)
 *   raft_meta D u64 | u8 4               -> (same header) u64 sessions in
 *                                           `sess` under D (absent: 0)
 *   snap      (unused since format 3; kept so that old keys can go)
 *   kv        D u64 | user key           -> u32 crc, u16 long_key_len, u16 0,
 *                                           [full user key], record
 *   hist      D u64 | key hash u64 |     -> u32 crc, u16 key_len, u8 flags
 *             mod_rev u64 | u16 slot        (bit 0: a delete), u8 0,
 *                                           full user key, record: a
 *                                           version that is not current
 *                                           (see "History")
 *   sess      D u64 | session u64        -> u32 crc, u32 result, u64 seq,
 *                                           u64 version, u64 revision,
 *                                           u64 time_ms, u32 failed_cmp,
 *                                           u32 0
 *   sess_lru  D u64 | time_ms u64 |      -> u32 crc
 *             session u64
 *
 * where a record is (struct store_record):
 *   u64 version, u64 create_rev, u64 mod_rev, u64 time_ms, u8 writer_len,
 *   writer bytes, user value.
 *
 * The entry crc covers the 16-byte key, the version/type/reserved bytes, the
 * term and the data; the meta crc covers its key, header and body; the kv
 * crc covers the data id, the full user key and everything after the crc;
 * the hist, sess and sess_lru crcs cover the whole LMDB key (data id
 * included) and everything after the crc; info's crcs cover the info key
 * and everything after the crc. A record moved under another data id
 * therefore fails its crc: a stream carries the sender's data id so the
 * receiver can check every record before it rewrites the crc for its own.
 *
 * Data ids. A group created by store_batch_group_create() gets a fresh
 * data id; a restored group keeps D = G (tag 5 absent) unless G has the
 * top bit set. Fresh ids have the top bit set and kho's group ids (raft
 * indexes, at most RAFT_INDEX_MAX) never do, and the counter only grows,
 * so no two groups, stages or garbage ever share a data id: a group
 * deleted while its data is still being collected and created again gets
 * a fresh id, and its new records never mix with the old ones (a restore,
 * which keeps D = G, first deletes whatever garbage an earlier life left
 * under G). (The store takes any u64 group id, but one with the top bit
 * set shares raft_meta's key space with fresh data ids' session counts:
 * keep group ids below 2^63.) Raft-level records (the log and raft_meta
 * tags 1, 2, 3, 5, 6, 16, 17) stay under G.
 *
 * Garbage. A data id becomes garbage when an install replaces it, when its
 * group is deleted, when its stage is dropped, closed unfinished, or left
 * over at store_open, or when another stage of its group is installed.
 * store_batch_gc() deletes its kv, hist, sess and sess_lru keys and its
 * session count, then forgets it.
 *
 * LMDB keys are at most 511 bytes (mdb_env_get_maxkeysize), less than the
 * 1 KiB user-key limit. A user key longer than STORE_KV_INLINE_KEY_BYTES is
 * stored under D | its first STORE_KV_INLINE_KEY_BYTES bytes | a 64-bit
 * hash of the whole key, with the full key in the value (long_key_len != 0).
 * Order is exact except among long keys sharing those first bytes, which
 * sort by hash. Two long keys with the same prefix and hash cannot both
 * exist: the second put is refused with KHO_ECONFLICT (deterministically,
 * on every replica).
 *
 * History. kv holds a key's current record and hist holds only the
 * versions before it: a put of a key without a current record writes kv
 * alone; a put over a record first moves that record to hist, under its
 * own mod_rev, then writes kv; a delete moves the record to hist, then
 * writes a tombstone there (flags bit 0, version 0, the deleted record's
 * create_rev, mod_rev = the delete's revision, no value), and removes the
 * key from kv. So hist never holds a copy of a current record, and a
 * key's history (store_kv_history()) is its versions in hist followed by
 * its kv record if it has one. Versions of one key sit together under
 * the 64-bit hash of the key (of every key, short ones included), oldest
 * first; readers filter on the full key, since keys may share a hash.
 * `slot` keeps apart versions that share hash and revision (keys written
 * by one request): a tombstone takes its delete's index in the request;
 * a replaced record, moved by a later request that cannot know the index
 * of the op that wrote it, takes the lowest slot free under its hash and
 * revision when it is moved, never one in use (a revision has at most
 * STORE_TXN_OPS_MAX versions, one per op of its request, so a slot is
 * always free). Both depend only on the requests applied, so replicas
 * hold the same bytes. A key keeps at most
 * STORE_HISTORY_VERSIONS versions, its current record counted: an op
 * first drops the key's oldest versions in hist until what it adds fits
 * (a key whose versions share a hash with another key's are counted
 * apart). The history outlives a delete of its key.
 *
 * Format 3 differed only in hist: it also held every key's current record,
 * and every version sat at the slot of the op that wrote it. store_open()
 * converts a format-3 store (convert.c): it drops from hist every version
 * that is its key's current kv record and moves the other replaced records
 * to the lowest free slot, in bounded write transactions, then records
 * format 4. A restore converts a backup of format 3 the same way. With
 * 64-bit hashes (no two keys share one) a converted replica then holds the
 * bytes of one that ran format 4 all along, wherever in the log each
 * converted: consistency checks agree across a rolling upgrade.
 *
 * Sessions. `sess` holds one record per client session: the answer to its
 * last seq (store.h, "State-machine requests"). `sess_lru` indexes the
 * sessions by the time_ms of their last request, so that applying a
 * request first forgets, oldest first, up to STORE_SESSION_EVICT_PER_APPLY
 * sessions idle for STORE_SESSION_IDLE_MS by that request's time_ms. The
 * session count (raft_meta D | tag 4) caps a group at
 * store_opts.sessions_max.
 *
 * Snapshot stream ("KHOSNAP" version 4; what store_snap_reader_read()
 * produces, store_stage_write() takes and a backup holds per group): the
 * group's whole state machine, i.e. its data id's key ranges of kv, hist,
 * sess and sess_lru, as stored:
 *   header   "KHOSNAP" 0x04, u64 group, u64 index, u64 term,
 *            u64 data id (the sender's)                        (40 bytes)
 *   records  u8 db, u16 key_len, u32 value_len, key, value
 *   trailer  u8 0, u64 record count, u32 crc of every byte before it
 *                                                              (13 bytes)
 * where db is 1 kv, 2 hist, 3 sess, 4 sess_lru, key is the LMDB key
 * without its data id and value is the stored value, its crc covering the
 * sender's data id. Records come database by database in that order, keys
 * strictly increasing (LMDB's order) within one, and every session has
 * exactly one sess_lru entry; a stream breaking any of this, or a size
 * limit of its database, is corrupt. Every record is checked (crc and
 * layout) when the stream is made - a damaged one is refused, never sent -
 * and again by the receiver, under the sender's data id, before its crc is
 * rewritten for the receiver's own. The session count is not shipped: the
 * receiver counts the sessions. index is the applied index the stream was
 * taken at, term the term of that entry. The CRC-32C of the whole stream,
 * trailer included, travels beside it (store_snap_reader_open(),
 * store_stage_begin()). Version 3, made by store format 3, has the same
 * layout but hist in format 3's shape ("History"): a stage refuses it (nodes
 * of the two formats do not exchange snapshots), a restore converts it.
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
/* One snapshot stream (a group's whole state machine): no bigger than
 * the largest map. */
#define STORE_STREAM_BYTES_MAX STORE_MAP_BYTES_MAX
/* A stage commits a write transaction of its own whenever this many
 * stream bytes have been checked and converted (bounding both the memory
 * a stage holds and how long its transaction keeps the raft thread's
 * batch waiting). */
#define STORE_STAGE_TXN_BYTES (UINT64_C(8) << 20)
/* Converting a format-3 store at store_open() (convert.c) commits a write
 * transaction whenever it has looked at this many history versions or
 * this many bytes of them, so that no transaction grows with the store. */
#define STORE_CONVERT_TXN_VERSIONS 4096u
#define STORE_CONVERT_TXN_BYTES (UINT64_C(8) << 20)
/* Stages open at once, or closed unfinished and not yet collected. */
#define STORE_STAGES_MAX 64u
/* A stage descriptor: what store_stage_finish() gives the host for its
 * SNAPSHOT message (magic, crc, data id, group, index, term). */
#define STORE_STAGE_DESC_BYTES 40u
/* LMDB map size: the most the data file may grow to. */
#define STORE_MAP_BYTES_DEFAULT (UINT64_C(1) << 30)
#define STORE_MAP_BYTES_MIN (UINT64_C(64) << 10)
#define STORE_MAP_BYTES_MAX (UINT64_C(1) << 44)
/* Concurrent read transactions (reader-table slots). */
#define STORE_READERS_DEFAULT 512u
#define STORE_READERS_MAX 8192u
/* Idle read transactions the store keeps for reuse: a read takes one and
 * renews it (mdb_txn_renew: no malloc, no reader-table mutex) instead of
 * beginning a fresh one, and gives it back reset. An idle one keeps its
 * reader slot, so the pool holds at most this many and never more than
 * half of max_readers. It never makes the table fuller than the reads
 * alone would: a transaction is only created when the pool is empty, so
 * pooled plus busy ones never outnumber the most reads ever in flight at
 * once. With the default max_readers, 512 slots leave room for the pool
 * (32), the raft thread's reserved transaction (1), every API worker
 * context (64), snapshot senders (4), a backup and the checks, with
 * several times that to spare. */
#define STORE_RTXN_POOL_MAX 32u
/* Named databases the environment may hold (8 used today). */
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
/* Version of the on-disk layout above. store_open() converts a format-3
 * store in place (its hist also held every current record: see
 * "History"); a store of any other version refuses to open (restore it
 * from a backup, or let the node catch up from its peers into an empty
 * directory). */
#define STORE_FORMAT_VERSION 4u

/* --- State-machine requests ------------------------------------------------ */

/*
 * Every NORMAL entry of a group carries one request (little-endian):
 *
 *   u8 STORE_REQ_MAGIC, u8 flags, u16 n_cmp, u16 n_ops, u16 writer_len,
 *   u64 session, u64 seq, u64 time_ms, writer bytes,
 *   n_cmp x (u8 target, u8 op, u16 key_len, u32 value_len, u64 number,
 *            key, value),
 *   n_ops x (u8 op, u8 0, u16 key_len, u32 value_len, key, value)
 *
 * and the entry is exactly that long. A request is a transaction: if every
 * compare holds, its ops are applied in order, all at revision = the entry's
 * raft index; otherwise nothing is applied and the answer is KHO_ECONFLICT
 * with the 1-based index of the first compare that failed. A plain put or
 * delete is a request with one op (and one compare for its precondition)
 * and STORE_REQ_SINGLE set: then a delete of a missing key answers
 * KHO_ENOTFOUND (inside a multi-op transaction it is a no-op).
 *
 * Limits: n_cmp <= STORE_TXN_CMPS_MAX, n_ops <= STORE_TXN_OPS_MAX, every
 * key in [1, STORE_KEY_BYTES_MAX], every value <= STORE_VALUE_BYTES_MAX, a
 * delete op has no value, writer_len <= STORE_WRITER_BYTES_MAX, the whole
 * entry <= STORE_ENTRY_BYTES_MAX, no two ops on the same key. The encoding
 * is canonical: flags holds nothing but STORE_REQ_SINGLE (which needs
 * exactly one op), reserved bytes are 0, a VALUE compare has number 0 and
 * the other targets have no value.
 *
 * Exactly-once (session != 0): the `sess` database holds, per group and
 * session, the last seq applied and its answer. A seq equal to the last one
 * is a retry and gets the recorded answer without being applied again
 * (duplicate = true); an older seq gets KHO_ESTALE. The session record is
 * written in the same transaction as the request it covers. A session idle
 * for STORE_SESSION_IDLE_MS (by the requests' time_ms) is forgotten; a
 * group holds at most STORE_SESSIONS_MAX sessions and refuses a request of
 * a new session beyond that with KHO_EBUSY (deterministically: same answer
 * on every replica). Sessions travel in snapshots.
 *
 * time_ms and writer are chosen by the proposer (the leader's wall clock
 * and the client's name) and stored with every record the request writes,
 * so every replica stores the same bytes.
 */
#define STORE_REQ_MAGIC 0x11u
#define STORE_REQ_SINGLE 0x01u /* flags: a plain put or delete */
#define STORE_REQ_HEADER_BYTES 32u
#define STORE_CMP_HEADER_BYTES 16u
#define STORE_OP_HEADER_BYTES 8u
#define STORE_TXN_CMPS_MAX 64u
#define STORE_TXN_OPS_MAX 128u
#define STORE_WRITER_BYTES_MAX 64u
#define STORE_SESSIONS_MAX 100000u
#define STORE_SESSION_IDLE_MS (UINT64_C(3600) * 1000u)
/* Versions of one key kept in its history, its current record included
 * (a delete is a version too). Older ones are dropped as new ones come. */
#define STORE_HISTORY_VERSIONS 32u
/* Most records one scan or history call returns. */
#define STORE_SCAN_LIMIT_MAX 10000u
/* Idle sessions forgotten per applied request, at most: this bounds the
 * work of one apply, and keeps up as long as sessions go idle no faster
 * than this many per request. */
#define STORE_SESSION_EVICT_PER_APPLY 8u

enum store_op_kind {
    STORE_OP_PUT = 1,
    STORE_OP_DELETE = 2,
};

enum store_cmp_target {
    STORE_CMP_VERSION = 0,
    STORE_CMP_CREATE_REV = 1,
    STORE_CMP_MOD_REV = 2,
    STORE_CMP_VALUE = 3, /* bytewise, memcmp then length */
};

enum store_cmp_op {
    STORE_CMP_EQ = 0,
    STORE_CMP_NE = 1,
    STORE_CMP_LT = 2,
    STORE_CMP_GT = 3,
};

struct store_compare {
    uint32_t target; /* enum store_cmp_target */
    uint32_t op;     /* enum store_cmp_op */
    const uint8_t *key;
    size_t key_len;
    uint64_t number; /* VERSION, CREATE_REV, MOD_REV */
    const uint8_t *value;
    size_t value_len;
};

struct store_op {
    uint32_t op; /* enum store_op_kind */
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value; /* NULL/0 for a delete */
    size_t value_len;
};

struct store_request {
    uint32_t flags; /* STORE_REQ_SINGLE */
    uint64_t session, seq, time_ms;
    const char *writer; /* not NUL-terminated; may be NULL when len 0 */
    size_t writer_len;
    const struct store_compare *cmps;
    size_t n_cmp;
    const struct store_op *ops;
    size_t n_ops;
};

/* Size of the encoded request, or 0 when it breaks a limit above. */
size_t store_request_size(const struct store_request *r);
/* Encodes r into buf. Errors: KHO_EINVAL (bad op, target or cmp op, empty
 * key, a delete with a value, two ops on one key, no op and no compare),
 * KHO_ETOOLARGE (a limit; or cap too small: *len_out then says how much is
 * needed). */
int store_request_encode(const struct store_request *r, uint8_t *buf,
                         size_t cap, size_t *len_out);
/* Decodes a request. cmps and ops are filled into the caller's arrays
 * (cap STORE_TXN_CMPS_MAX / STORE_TXN_OPS_MAX) and point into buf.
 * Errors: KHO_EINVAL (malformed), KHO_ETOOLARGE (over a limit). */
int store_request_decode(const uint8_t *buf, size_t len,
                         struct store_request *out,
                         struct store_compare *cmps, struct store_op *ops);

/* The outcome of applying one entry, for the client that proposed it. */
struct store_apply_result {
    int result;         /* KHO_OK; KHO_ECONFLICT (a compare failed, or a
                           long-key hash collision, store.h top);
                           KHO_ENOTFOUND (single delete of a missing key);
                           KHO_ESTALE (old seq); KHO_EBUSY (session table
                           full); KHO_EINVAL / KHO_ETOOLARGE (malformed
                           entry: a no-op on every replica alike) */
    uint64_t version;   /* of the record after a single put; of the last
                           put of a transaction; 0 otherwise */
    uint64_t revision;  /* raft index that applied the request */
    uint32_t failed_cmp;/* KHO_ECONFLICT from a compare: its 1-based index */
    bool duplicate;     /* a retry answered from the session table */
};

/* --- Records, as reads return them ---------------------------------------- */

/*
 * A record of the kv database, or a version in the history database (a
 * replaced record or a tombstone). In the kv value, after the crc header
 * and the long key, come:
 *   u64 version, u64 create_rev, u64 mod_rev, u64 time_ms, u8 writer_len,
 *   writer bytes, user value.
 * Pointers are valid only inside the read callback that received them.
 */
struct store_record {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    uint64_t version;    /* 1 on create, +1 per put */
    uint64_t create_rev; /* revision (raft index) that created the key */
    uint64_t mod_rev;    /* revision of the last change */
    uint64_t time_ms;
    const char *writer;
    size_t writer_len;
    bool deleted; /* history only: this version is a delete */
};

/* Called once per record on the reader's transaction; a non-KHO_OK return
 * stops the walk and is returned by the read function. */
typedef int (*store_record_cb)(void *ctx, const struct store_record *r);

/* CRC-32C (Castagnoli) of buf: what the store checksums with, for callers
 * that check payloads in transit. */
uint32_t store_crc32c(const void *buf, size_t len);


/* --- Opening ------------------------------------------------------------- */

struct store_opts {
    uint64_t map_size_bytes; /* [STORE_MAP_BYTES_MIN, STORE_MAP_BYTES_MAX] */
    uint32_t max_readers;    /* [1, STORE_READERS_MAX] */
    /* Benchmarks only: MDB_NOSYNC, so a crash may lose or tear the last
     * transactions - a forgotten vote is a double vote. Logged loudly. */
    bool bench_unsafe_nosync;
    /* Sessions one group may hold, [1, STORE_SESSIONS_MAX]; the default is
     * STORE_SESSIONS_MAX. Must be the same on every replica: it decides
     * which requests are refused with KHO_EBUSY. */
    uint32_t sessions_max;
    /* Tests only: when in [1, 63], key hashes (long kv keys, hist keys)
     * keep only that many low bits, so that tests can force collisions.
     * 0 (the default) keeps all 64. It shapes keys on disk: it must be the
     * same for the life of the data and on every replica. */
    uint32_t test_key_hash_bits;
};

struct store;
struct store_group;
struct store_batch;

void store_opts_defaults(struct store_opts *o);

/*
 * Opens (creating if missing) the store in directory `dir`, which is
 * created (one level, mode 0750) if it does not exist. `o` may be NULL for
 * the defaults. Durable: every commit is fsynced. Clears reader slots that
 * dead processes left behind (mdb_reader_check). A store of format 3 is
 * converted first (store.h top, "History"; it walks the whole history once,
 * in write transactions bounded by STORE_CONVERT_TXN_VERSIONS and
 * STORE_CONVERT_TXN_BYTES, and logs what it did); its test_key_hash_bits
 * must be what the store was written with.
 * Errors: KHO_EINVAL (options out of range, not a directory, a format
 * version other than STORE_FORMAT_VERSION and 3), KHO_EBUSY (already open
 * in this process, or locked by another process, or STORE_OPEN_MAX stores
 * open), KHO_EDENIED, KHO_ENOMEM, KHO_ECORRUPT, KHO_ENOSPC (converting),
 * KHO_EIO. On failure store_errmsg(NULL) says why, in the calling thread.
 */
int store_open(const char *dir, const struct store_opts *o, struct store **out);
/* Closes the store; every group handle, snapshot reader and stage must be
 * closed first and no batch may be open. NULL is allowed. */
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

/* The group's data id (store.h top), for tests and tools that look at
 * the stored bytes. Errors: KHO_ENOTFOUND, KHO_ECORRUPT, KHO_EBUSY,
 * KHO_EIO. */
int store_group_data_id(struct store *s, uint64_t group_id, uint64_t *data_id);

/*
 * The raft_storage view of a group (raft.h). Each callback runs on a read
 * transaction that ends before it returns (the raft thread reuses one
 * reserved transaction, so busy readers elsewhere can never exhaust the
 * reader table under it), and copies the entry data it hands the core into
 * the group's scratch buffer; those pointers stay valid until the next
 * callback on the same group or store_group_close(). Every entry is
 * checksummed as it is read: a mismatch is KHO_ECORRUPT (with the group
 * and index in store_errmsg) and the data is not served. Out-of-range
 * requests are KHO_EINVAL, as in the memstore; a hole inside the stored
 * range is KHO_ECORRUPT.
 *
 * The snapshot callback returns no payload (data NULL, len 0): only the
 * meta of a snapshot taken now, {applied index A, term of entry A,
 * configuration at A} (all from one read transaction). The bytes are
 * streamed by a store_snap_reader opened on another thread; it reads the
 * group at its applied index then, which may be past A: a stage installs
 * at the index its stream says.
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

/* Creates a group: a fresh data id, snapshot meta and CONF (index 0,
 * term 0, `conf`: the initial configuration, or n == 0 for a node that
 * will join an existing cluster), zero hard state, applied 0.
 * Errors: KHO_ECONFLICT (group exists), KHO_EINVAL (bad configuration),
 * KHO_ENOSPC, KHO_EIO. */
int store_batch_group_create(struct store_batch *b, uint64_t group_id,
                             const struct raft_conf *conf);

/* Deletes a group (a replica moved away): its raft_meta records and log
 * at once (the log is bounded by compaction), while its state machine and
 * every stage of the group become garbage for store_batch_gc(), so that
 * removing a big replica is cheap. A stage of the group still receiving
 * fails from its next transaction on. The group id may be created again
 * at once (with a fresh data id). Its group handle must be closed.
 * Errors: KHO_ENOTFOUND, KHO_ECORRUPT, KHO_ENOSPC, KHO_EIO. */
int store_batch_group_delete(struct store_batch *b, uint64_t group_id);

/*
 * Step 2a-b of raft.h for one group: installs rd->snapshot if set, deletes
 * stored entries >= rd->entries[0].index, appends rd->entries, and stores
 * rd->hs when rd->hs_changed.
 *
 * Installing: rd->snapshot->data/len must be a descriptor from
 * store_stage_finish() naming a finished stage of this group at
 * rd->snapshot->meta's index and term. The group's data id becomes the
 * staged one (its state machine is replaced whole, atomically for every
 * reader), applied := index, snapshot meta := rd->snapshot->meta, CONF :=
 * (index, its conf), the whole stored log is dropped; the previous data id
 * and every other finished stage of the group become garbage. Cost:
 * O(stored log + stages), never O(state size).
 *
 * Errors: KHO_ENOTFOUND (no such group), KHO_ECORRUPT (the entries do not
 * fit the stored log, a descriptor that names no finished stage of this
 * group at that index and term, a corrupt stored record), KHO_EINVAL (a
 * cut or snapshot that would undo applied entries, malformed entries or
 * meta), KHO_ENOSPC (map full: the transaction is aborted, reads still
 * work), KHO_EIO.
 */
int store_batch_persist_ready(struct store_batch *b, uint64_t group_id,
                              const struct raft_ready *rd);

/*
 * Applies one committed entry (step 2d) and records its index as applied,
 * in the batch's transaction. NORMAL entries are store requests (above);
 * a CONF entry records its configuration as CONF (store.h top); NOOP
 * entries only advance the applied index. An entry at or below the
 * applied index is skipped (nothing is applied twice). The request's own
 * outcome - the answer for the client - goes to *out (may be NULL; see
 * struct store_apply_result).
 * Errors (the batch fails): KHO_ENOTFOUND (no group), KHO_EINVAL (index not
 * applied + 1, unknown entry type), KHO_ECORRUPT (a CONF entry that does
 * not decode, a corrupt stored record), KHO_ENOSPC, KHO_EIO.
 */
int store_batch_apply(struct store_batch *b, uint64_t group_id,
                      const struct raft_entry *e,
                      struct store_apply_result *out);

/*
 * Log compaction in the batch: records the snapshot meta {index, term of
 * entry index, conf} and CONF (index, conf), with `conf` from
 * raft_applied_conf(), and drops stored entries <= index. No state is
 * copied (the state machine in LMDB is the snapshot; a reader streams it
 * on demand), so the cost is O(entries dropped) and no size limit applies.
 * The state machine cannot be rewound to an older revision, so `index`
 * must be the applied index exactly (raft.h only allows compaction up to
 * it); an index at or below the current snapshot is a no-op.
 * Errors: KHO_EINVAL (index != applied, bad conf), KHO_ENOTFOUND,
 * KHO_ECORRUPT, KHO_ENOSPC, KHO_EIO.
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

/* --- Snapshot streams (stream.c, stage.c, data.c) ------------------------- */

/*
 * A snapshot reader: one group's snapshot stream (store.h top) produced
 * from one LMDB read transaction, which it keeps until closed (MDB_NOTLS:
 * the reader may be used from any ONE thread at a time, not necessarily
 * the one that opened it). Keeping it pins the pages it reads: the map
 * grows by what is rewritten meanwhile, so close it when the transfer
 * ends or stalls.
 */
struct store_snap_reader;

/*
 * Opens a reader on group_id and computes, with a first pass over its
 * records (each checked: crc and layout), the stream's exact size *total
 * and CRC-32C *crc. *meta = {applied index, term of that entry, conf at
 * it}. Cost: O(state size) on the calling thread.
 * Errors: KHO_ENOTFOUND (no such group), KHO_EINVAL (nothing applied yet),
 * KHO_ECORRUPT (a damaged record: refused, never sent), KHO_EBUSY (reader
 * table full), KHO_ENOMEM, KHO_EIO; a message in store_errmsg(s).
 */
int store_snap_reader_open(struct store *s, uint64_t group_id,
                           struct store_snap_reader **out,
                           struct raft_snapshot_meta *meta, uint64_t *total,
                           uint32_t *crc);

/*
 * Copies stream bytes [offset, offset + cap) (clipped at total) into buf;
 * *n is how many (0 at or past the end). Sequential reads continue where
 * the last stopped in O(bytes); an offset before the current position
 * re-walks from the start (rare: a resumed transfer). Memory is bounded:
 * the reader holds a cursor and a few dozen bytes, never a record.
 * Errors: KHO_EIO (with a message).
 */
int store_snap_reader_read(struct store_snap_reader *r, uint64_t offset,
                           uint8_t *buf, size_t cap, size_t *n);

/* Ends the reader's transaction and frees it. NULL is allowed. */
void store_snap_reader_close(struct store_snap_reader *r);

/*
 * A stage: a snapshot stream received for one group, written under a
 * fresh data id of its own while the group keeps serving from its current
 * one. Not for the raft thread (or any thread holding a batch): every
 * stage call that writes takes a write transaction of its own, which
 * waits for the raft thread's batch.
 */
struct store_stage;

/*
 * Starts receiving a stream for group_id at (index, term), `total` bytes
 * with CRC-32C `crc`: allocates a fresh data id and records a stage marker
 * (group, index, term, data id, receiving) in a write transaction of its
 * own. The group must exist.
 * Errors: KHO_ENOTFOUND (no such group), KHO_EINVAL (index or term 0 or
 * out of range, total outside [header + trailer, STORE_STREAM_BYTES_MAX]),
 * KHO_EBUSY (STORE_STAGES_MAX stages open or awaiting collection),
 * KHO_ENOSPC, KHO_EIO, KHO_ENOMEM.
 */
int store_stage_begin(struct store *s, uint64_t group_id, uint64_t index,
                      uint64_t term, uint64_t total, uint32_t crc,
                      struct store_stage **out);

/*
 * Feeds the next len bytes of the stream (any split; records may straddle
 * calls). Every record is checked (layout, order, its crc under the
 * sender's data id), its crc rewritten for the staged data id, and written
 * in a write transaction of its own whenever STORE_STAGE_TXN_BYTES have
 * accumulated (so the stage holds at most that much plus a record or two
 * in memory, and never the writer lock between calls). A failed stage stays
 * failed: every later call returns the first error.
 * Errors: KHO_ECORRUPT (a malformed stream or record, or more than total
 * bytes), KHO_ENOTFOUND (the group was deleted meanwhile), KHO_ENOSPC,
 * KHO_EIO, KHO_ENOMEM.
 */
int store_stage_write(struct store_stage *st, const uint8_t *buf, size_t len);

/*
 * After exactly total bytes: checks the trailer (record count, crc) and
 * the whole stream's crc, writes what remains with the session count, and
 * marks the stage finished, in one write transaction. desc is then the
 * payload the host puts in the SNAPSHOT message it steps into the core
 * (the core copies it; store_batch_persist_ready() installs it).
 * Errors: KHO_ECORRUPT (short stream, bad trailer or crc), KHO_ENOTFOUND
 * (the group was deleted meanwhile), KHO_EINVAL (already finished),
 * KHO_ENOSPC, KHO_EIO, or the stage's earlier error.
 */
int store_stage_finish(struct store_stage *st,
                       uint8_t desc[STORE_STAGE_DESC_BYTES]);

/* Frees the handle (any thread, cheap: it writes nothing). A stage not
 * finished becomes garbage at the next store_batch_gc() (or the next
 * store_open()); a finished one waits for its install or drop. NULL is
 * allowed. */
void store_stage_close(struct store_stage *st);

/* A finished stage the core did not install (it already had that index,
 * or it was replaced by a newer one): its data becomes garbage, in the
 * batch. Descriptors naming no finished stage are ignored (KHO_OK).
 * Errors: KHO_ENOSPC, KHO_EIO, KHO_ECORRUPT. */
int store_batch_stage_drop(struct store_batch *b, const uint8_t *desc,
                           size_t len);

/*
 * Deletes up to max_keys (>= 1) keys of garbage data (kv, hist, sess,
 * sess_lru and its session count) in the batch, one garbage data id after
 * another in id order, and forgets a garbage data id once it is empty
 * (which counts as a key); first turns the stages closed unfinished since
 * the last call into garbage (if the batch then fails, the next
 * store_open() does). *more: garbage remains.
 * Cost: O(max_keys) LMDB deletes. The raft thread calls it in its loop
 * while store_gc_pending(). Errors: KHO_EINVAL (max_keys 0), KHO_ECORRUPT,
 * KHO_ENOSPC, KHO_EIO.
 */
int store_batch_gc(struct store_batch *b, uint32_t max_keys, bool *more);

/* Whether garbage may be waiting for store_batch_gc() (an atomic flag:
 * any thread, no transaction). */
bool store_gc_pending(struct store *s);

/* --- Reading the state machine ------------------------------------------- */

/*
 * Every read runs on its own LMDB read transaction (any thread) and reports
 * the group's applied index in that same snapshot of the database through
 * *applied (may be NULL), so a linearizable read can check it against its
 * read index.
 */

/* Reads one key: cb is called once with the record.
 * Errors: KHO_ENOTFOUND (no such key, or no such group), KHO_EINVAL (key
 * length), KHO_ECORRUPT, KHO_EBUSY (reader table full), KHO_EIO, or what cb
 * returned. */
int store_kv_read(struct store *s, uint64_t group_id, const void *key,
                  size_t key_len, store_record_cb cb, void *ctx,
                  uint64_t *applied);

struct store_scan {
    /* Range [start, end): start may be empty (from the first key); end
     * NULL/0 means to the last key of the group. */
    const uint8_t *start;
    size_t start_len;
    const uint8_t *end;
    size_t end_len;
    /* Continuation: when after_len > 0, resume strictly after this key
     * (the last key of the previous page). */
    const uint8_t *after;
    size_t after_len;
    uint32_t limit;     /* records, 1..STORE_SCAN_LIMIT_MAX */
    size_t max_bytes;   /* stop before the keys+values returned exceed it
                           (at least one record is always returned) */
};

/*
 * Walks the group's records in key order (byte order of the keys; among
 * long keys sharing their first STORE_KV_INLINE_KEY_BYTES bytes, hash
 * order). *more is set when records remain in the range after the last one
 * given to cb. Errors: KHO_EINVAL (limit 0 or too big, a key too long),
 * KHO_ECORRUPT, KHO_EBUSY, KHO_EIO, or what cb returned.
 */
int store_kv_scan(struct store *s, uint64_t group_id,
                  const struct store_scan *q, store_record_cb cb, void *ctx,
                  bool *more, uint64_t *applied);

/*
 * The kept versions of one key, oldest first, starting after revision
 * `after_rev` (0: from the oldest kept), at most `limit`
 * (1..STORE_SCAN_LIMIT_MAX): its versions in hist, then its current
 * record if it has one (store.h top, "History"); deletes come as records
 * with deleted set and no value. *more as for scans. A key never written
 * has no versions (KHO_OK, cb never called). Errors: KHO_EINVAL,
 * KHO_ECORRUPT, KHO_EBUSY, KHO_EIO, or what cb returned.
 */
int store_kv_history(struct store *s, uint64_t group_id, const void *key,
                     size_t key_len, uint64_t after_rev, uint32_t limit,
                     store_record_cb cb, void *ctx, bool *more,
                     uint64_t *applied);

/*
 * Space in the map: *used_bytes is what LMDB holds (pages in use, the free
 * list's pages excluded), *map_bytes the map size. For admission control:
 * khod refuses new writes with KHO_ENOSPC above its quota, so that deletes,
 * log appends and compaction still find room. Errors: KHO_EBUSY, KHO_EIO.
 */
int store_space(struct store *s, uint64_t *used_bytes, uint64_t *map_bytes);

/* --- Consistency checks (check.c) ----------------------------------------- */

/*
 * A check marker is a request (above) with flags STORE_REQ_CHECK and no
 * compare, no op and no session (session and seq 0; writer and time_ms are
 * ignored). Every replica that applies it hashes the group's state machine
 * at that index, inside the apply transaction, and records (index, hash) in
 * raft_meta; replicas that applied the same log hold the same hash, so
 * comparing the hashes of one marker across replicas finds a replica whose
 * stored bytes went astray (a disk or a bug that the per-record checksums
 * cannot see). The answer is KHO_OK with revision = the marker's index; the
 * state machine itself does not change.
 *
 * The hash (64 bits) covers the group's key ranges of kv, hist, sess and
 * sess_lru, in that order and in LMDB key order inside each: for every
 * record its database, its key without the data id and its stored value
 * without the 4-byte crc at its start, with their lengths. It is a
 * function of the stored bytes alone but for the data id, which differs
 * between replicas (and so do the crcs covering it, which the hash
 * leaves out: they add nothing the other bytes do not say). Cost: O(size
 * of the group's state), on the raft thread, in the apply transaction: a
 * check of a large group stalls the node's other groups for as long.
 *
 * raft_meta tags (store.h top) added here:
 *   tag 16 check marks  -> u32 count, u32 0, count x (u64 index, u64 hash),
 *                          oldest first, the last STORE_CHECK_KEEP kept
 *   tag 17 check alarm  -> u64 index, u64 hash, u64 expected, u64 time_ms
 * Both are keyed by the group id, are this replica's own (never
 * replicated, not in snapshots) and go with the group.
 */
#define STORE_REQ_CHECK 0x02u /* flags: a check marker */
/* Check marks a group keeps: checks running at once each find theirs. */
#define STORE_CHECK_KEEP 8u

struct store_check_mark {
    uint64_t index; /* the marker's raft index (0: none) */
    uint64_t hash;
};

/*
 * The hash the group recorded at marker `index` (then out->index ==
 * index), else the latest mark it recorded (out->index != index; 0 when it
 * has none), and the group's applied index, from one read transaction: a
 * replica with *applied >= index and no mark at index skipped the marker
 * (it received a snapshot past it) and cannot be compared.
 * Errors: KHO_ENOTFOUND (no such group), KHO_ECORRUPT, KHO_EBUSY, KHO_EIO.
 */
int store_check_get(struct store *s, uint64_t group_id, uint64_t index,
                    struct store_check_mark *out, uint64_t *applied);

/* Hashes the group's state machine as it is now, the way applying a marker
 * does (a read transaction; O(size of the group)). For tests and tools.
 * Errors: KHO_ENOTFOUND, KHO_EBUSY, KHO_EIO. */
int store_check_hash(struct store *s, uint64_t group_id, uint64_t *hash,
                     uint64_t *applied);

/* A check found this replica's hash different from the others'. */
struct store_check_alarm {
    uint64_t index;    /* the marker */
    uint64_t hash;     /* this replica's hash there */
    uint64_t expected; /* the other replicas' */
    uint64_t time_ms;  /* when it was raised */
};

/* This node's check alarm for the group (any thread; for status answers
 * and metrics). Errors: KHO_ENOTFOUND (no alarm, or no such group),
 * KHO_ECORRUPT, KHO_EBUSY, KHO_EIO. */
int store_check_alarm(struct store *s, uint64_t group_id,
                      struct store_check_alarm *out);

/* Raises (a != NULL) or clears (a == NULL) the group's check alarm, in a
 * write transaction of its own (it waits for the raft thread's batch).
 * The alarm is local: it survives restarts, is never replicated, and goes
 * when the group is deleted. Errors: KHO_ENOTFOUND (no such group),
 * KHO_ENOSPC, KHO_EIO. */
int store_check_alarm_set(struct store *s, uint64_t group_id,
                          const struct store_check_alarm *a);

/* Tests only: replaces the value of an existing key of a group in place,
 * bypassing raft (metadata kept, checksum recomputed), so that a replica
 * differs from the others in a way its checksums cannot see. Never on a
 * running node. Errors: KHO_ENOTFOUND, KHO_EINVAL, KHO_ETOOLARGE,
 * KHO_ECORRUPT, KHO_ENOSPC, KHO_EIO. */
int store_test_rewrite(struct store *s, uint64_t group_id, const void *key,
                       size_t key_len, const void *value, size_t value_len);

/* --- Backups (backup.c) --------------------------------------------------- */

/*
 * A backup file holds the state machines of several groups, each at its
 * applied index, taken in ONE read transaction (little-endian):
 *
 *   header  "KHOBACK" 0x01, u32 STORE_BACKUP_VERSION, u32 chunk bytes max,
 *           u64 backup id, u64 node id, u64 created_ms, u32 n_groups,
 *           u32 crc of the 44 bytes before                     (48 bytes)
 *   frames  u32 type, u32 body_len, u32 crc of type, body_len and body,
 *           body:
 *     1 GROUP  u64 group, u64 index, u64 term (of the entry at index),
 *              u64 payload bytes; then DATA frames carrying exactly that
 *              many bytes of the group's snapshot stream (store.h top,
 *              "Snapshot stream": its own header, count and crc), made by
 *              a snapshot reader, so no group is ever held in memory
 *     2 DATA   1..STORE_BACKUP_CHUNK_BYTES bytes
 *     3 END    u64 bytes before this frame, u32 n_groups, u32 crc of every
 *              byte before this frame
 *
 * Groups come in increasing id order, each once, n_groups of them, then
 * END, then nothing. Every frame and the whole file are checksummed, so a
 * flipped bit, a truncation or a spliced file is refused before anything
 * is restored.
 */
/* The file's framing; libkho checks it too (and merges backups of
 * several nodes under its own header), so it says nothing of the
 * payload: each group's snapshot stream names its own version. Since
 * store format 4 that is "KHOSNAP" 4. A backup of format 3 (KHOSNAP 3:
 * hist also holds the current records) is still checked, listed and
 * restored, converted as it is restored; one made by an older kho
 * (payload version 2) passes the framing checks and is then refused as
 * "a snapshot stream of another version". */
#define STORE_BACKUP_VERSION 1u
#define STORE_BACKUP_HEADER_BYTES 48u
#define STORE_BACKUP_FRAME_HEADER_BYTES 12u
#define STORE_BACKUP_CHUNK_BYTES (1u << 20)
/* Groups one backup may hold. */
#define STORE_BACKUP_GROUPS_MAX 256u

struct store_backup_group {
    uint64_t group_id, index, term;
    uint64_t payload_bytes;
    uint64_t offset; /* of its first DATA frame in the file */
};

struct store_backup_info {
    uint64_t backup_id, node_id, created_ms;
    uint64_t file_bytes;
    uint32_t file_crc; /* END's crc */
    uint32_t n_groups;
    struct store_backup_group groups[STORE_BACKUP_GROUPS_MAX];
};

/* Progress of store_backup_write(): the file's bytes so far; returning
 * false cancels the backup. */
typedef bool (*store_backup_progress_cb)(void *ctx, uint64_t bytes);

/*
 * Writes a backup of groups[0..n) (increasing ids, each existing and
 * having applied at least one entry) to fd from one read transaction,
 * checking every record's checksum on the way (a damaged record is
 * refused, never copied). Stores nothing: the cluster keeps serving while
 * it runs. cb (may be NULL) sees every chunk written. *info (may be NULL)
 * describes the file. Errors: KHO_EINVAL (n 0 or over
 * STORE_BACKUP_GROUPS_MAX, ids not increasing, a group with nothing
 * applied), KHO_ENOTFOUND (no such group), KHO_ECORRUPT, KHO_EUNAVAILABLE
 * (cancelled), KHO_EBUSY, KHO_ENOSPC, KHO_EIO, KHO_ENOMEM; a message in
 * store_errmsg(s).
 */
int store_backup_write(struct store *s, const uint64_t *groups, size_t n,
                       uint64_t backup_id, uint64_t node_id,
                       uint64_t created_ms, int fd, store_backup_progress_cb cb,
                       void *ctx, struct store_backup_info *info);

/* An unlinked temporary file in the store's directory (gone when closed or
 * when the process dies), for a backup being served. Errors: KHO_EIO,
 * KHO_ENOSPC, KHO_EDENIED. */
int store_backup_tmpfile(struct store *s, int *fd);

/* CRC-32C of p[0..len) (the backup's checksum), for a chunk on the wire. */
uint32_t store_backup_crc(const void *p, size_t len);

/*
 * Reads a whole backup file and checks it: header, every frame's checksum,
 * the structure above, each group's stream (header, records' layout and
 * order, count and checksum), the END frame and the file's checksum. Needs
 * no store (records' own crcs are checked by store_backup_kv() and
 * store_restore()). Memory: a chunk and one record. Errors (a message in
 * err): KHO_ECORRUPT (damaged, truncated, or not a backup), KHO_EINVAL
 * (another format version), KHO_ETOOLARGE (a limit), KHO_EIO, KHO_ENOMEM.
 */
int store_backup_check(const char *path, struct store_backup_info *info,
                       char *err, size_t err_len);

/* Calls cb with every kv record of group_id in the backup at path
 * (described by info, from store_backup_check()), in key order, decoded
 * and checked. Errors: KHO_ENOTFOUND (no such group in the backup),
 * KHO_ECORRUPT, KHO_EIO, KHO_ENOMEM, or what cb returned. */
int store_backup_kv(struct store *s, const char *path,
                    const struct store_backup_info *info, uint64_t group_id,
                    store_record_cb cb, void *ctx);

/* A group to restore and the configuration it starts with. */
struct store_restore_group {
    uint64_t group_id;
    struct raft_conf conf;
};

/* Whether a record (a kv record or a version in the history, by its full
 * user key) of a restored group is kept. */
typedef bool (*store_restore_keep_cb)(void *ctx, uint64_t group_id,
                                      const uint8_t *key, size_t key_len);

/*
 * Restores groups[0..n) from the backup at path (described by info) into
 * an empty store, in one write transaction: each group is created with its
 * backed-up state machine under data id = its group id (store.h top,
 * "Data ids"), as a snapshot at the backup's index and term (so its log
 * continues after it), the configuration given (snapshot meta and CONF),
 * hard state (term, no vote, commit = index) and applied = index. Records
 * that keep (may be NULL: keep all) refuses are left out. A group of a
 * format-3 backup (KHOSNAP 3) is converted on the way (store.h top,
 * "History"), and a line on stderr says so. Every record's
 * crc is checked under the backup's data id and rewritten. The store then
 * records the backup as its origin (store_restore_state()). Nothing is
 * written unless everything is. Memory: a chunk and one record per group,
 * streamed from the file. Errors: KHO_ECONFLICT (the store is not empty),
 * KHO_ENOTFOUND (a group not in the backup), KHO_EINVAL (a bad
 * configuration), KHO_ECORRUPT, KHO_ETOOLARGE, KHO_ENOSPC, KHO_EIO,
 * KHO_ENOMEM; a message in store_errmsg(s).
 */
int store_restore(struct store *s, const char *path,
                  const struct store_backup_info *info,
                  const struct store_restore_group *groups, size_t n,
                  store_restore_keep_cb keep, void *ctx);

/* The backup a store was restored from. */
struct store_restore_mark {
    uint64_t backup_id;
    uint64_t file_bytes;
    uint32_t file_crc;
};

/* *empty: the store holds no group; *marked: it came from a restore,
 * described by *mark. Errors: KHO_ECORRUPT, KHO_EBUSY, KHO_EIO. */
int store_restore_state(struct store *s, bool *empty, bool *marked,
                        struct store_restore_mark *mark);

#endif /* KHO_STORE_H */

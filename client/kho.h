/*
 * kho.h - libkho, the C client of kho.
 *
 * A client talks to the nodes listed at open time, follows NOT_LEADER hints
 * to the leader of each registry (also to a node that was not listed), and
 * retries a request - with the same
 * session id and sequence number, so the cluster applies it once - until it
 * succeeds, fails for good, or the client's timeout passes. A timeout is
 * KHO_ETIMEOUT: the outcome is UNKNOWN (the write may or may not have been
 * applied), never "failed".
 *
 * Sharded registries: a registry is split into shards, each its own raft
 * group; kho_shard.h says which shard holds a key (kho_shard_of(), the
 * function the nodes use: include it to keep a transaction's keys in one
 * shard) and bounds a registry's shards (KHO_SHARDS_MAX). The first data
 * request (put, get, delete, txn, scan, history) on a registry fetches its
 * shard map from any node and caches it; from then on every request goes
 * straight to the leader of its key's shard. The map is only a shortcut -
 * every node finds a key's shard itself and redirects - so a stale map
 * costs a redirect, never a wrong answer. A client caches the maps of
 * KHO_SHARD_MAPS_MAX registries (the least recently used is dropped) and
 * fetches one registry's map again at most every KHO_SHARD_MAP_REFRESH_MS,
 * when a node is unreachable, a NOT_LEADER names no leader, or an answer
 * reports another shard count. Against a cluster that predates sharding
 * requests go the old way (one map request per KHO_SHARD_MAP_RETRY_MS).
 *
 * Every call is blocking and safe to call from several threads on one
 * client (calls on one client are serialised by a mutex; open one client
 * per thread for parallelism).
 *
 * Arguments are checked before anything is sent: a NULL pointer where data
 * is needed, an empty key or a name out of bounds is KHO_EINVAL; a key over
 * KHO_KEY_BYTES_MAX or a value over KHO_VALUE_BYTES_MAX is KHO_ETOOLARGE. An
 * answer that breaks the protocol (a record without a key, more records
 * than asked for, a field over its limit) is KHO_ECORRUPT. After a failed
 * call kho_client_errmsg() says more.
 *
 * Memory: what a call hands back (values, records, tokens, arrays) is
 * malloc'd and owned by the caller; each function says how to free it. On
 * an error every output pointer is set to NULL and every count to 0.
 *
 * Link with -lkho (pkg-config kho).
 */
#ifndef KHO_H
#define KHO_H

#include <stddef.h>
#include <stdint.h>

#include "kho_err.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KHO_KEY_BYTES_MAX 1024u
#define KHO_VALUE_BYTES_MAX (1u << 20)
#define KHO_ENDPOINTS_MAX 16u
/* Client (writer) names and registry names, in bytes of UTF-8. */
#define KHO_NAME_BYTES_MAX 64u
/* A node URL, terminating NUL included. */
#define KHO_URL_BYTES_MAX 256u
/* Compares and ops of one transaction, and the bytes of all their keys and
 * values together. */
#define KHO_TXN_CMPS_MAX 64u
#define KHO_TXN_OPS_MAX 128u
#define KHO_TXN_BYTES_MAX (4u << 20)
/* Most records one scan or history page may ask for. */
#define KHO_SCAN_LIMIT_MAX 10000u
/* Longest continuation token (it names the last key of a page). */
#define KHO_TOKEN_BYTES_MAX (KHO_KEY_BYTES_MAX + 256u)
/* Replicas of one registry; registries one list answer may hold. */
#define KHO_REPLICAS_MAX 7u
#define KHO_REGISTRIES_MAX 4096u
/* What one status answer may describe (see struct kho_node_status). */
#define KHO_NODES_MAX 128u
#define KHO_GROUPS_MAX 256u
/* Members of one group a status answer describes (a group's voters and
 * learners; the server's RAFT_MEMBERS_MAX). */
#define KHO_GROUP_MEMBERS_MAX 16u
/* Registries whose shard map one client caches, and how often it fetches
 * one registry's map again at most (see the top of this file). The most
 * shards of a registry is KHO_SHARDS_MAX, in kho_shard.h. */
#define KHO_SHARD_MAPS_MAX 64u
#define KHO_SHARD_MAP_REFRESH_MS 500u
/* After a node answered that it does not know shard maps, how long the
 * client routes the old way before it asks again. */
#define KHO_SHARD_MAP_RETRY_MS 60000u
/* Records one page of a scan of a registry of several shards holds when
 * kho_scan_opts.limit is 0 (the server's own default for one shard). */
#define KHO_SCAN_LIMIT_DEFAULT 1000u
/* Moves one shard move or rebalance answer may list. */
#define KHO_SHARD_MOVES_MAX 65536u

struct kho_client;

/* Metadata of a record. */
struct kho_record_meta {
    uint64_t version;  /* 1 when created, +1 per put */
    uint64_t revision; /* the log index of the last change */
};

/* Options of one put or delete. */
enum kho_cond {
    KHO_COND_NONE = 0,
    KHO_COND_IF_ABSENT = 1,   /* put only if the key does not exist */
    KHO_COND_IF_VERSION = 2,  /* only if the version is `expected_version`
                                 (0: the key must not exist) */
    KHO_COND_IF_REVISION = 3, /* only if the modify revision is
                                 `expected_version` (0: the key must not
                                 exist) */
};

/*
 * A record with its metadata, as kho_get_record(), kho_scan() and
 * kho_history() return it. key and value are malloc'd and never NULL (an
 * empty value is a 1-byte allocation with value_len 0).
 */
struct kho_record {
    void *key;
    size_t key_len;
    void *value;
    size_t value_len;
    uint64_t version;         /* 1 when created, +1 per put */
    uint64_t create_revision; /* the revision that created the key */
    uint64_t modify_revision; /* the revision of this version */
    uint64_t time_ms;         /* when it was written (ms since the epoch) */
    char writer[KHO_NAME_BYTES_MAX + 1]; /* client name of the writer */
    int deleted; /* history: this version is a delete (no value) */
};

/* Frees the keys and values of r[0..n) and then the array. NULL is
 * allowed. */
KHO_EXPORT void kho_records_free(struct kho_record *r, size_t n);

/* Frees the key and value of one record (not r itself) and zeroes it. NULL
 * is allowed. */
KHO_EXPORT void kho_record_clear(struct kho_record *r);

/*
 * Opens a client on a comma-separated list of node client URLs
 * ("tcp://127.0.0.1:7101,tcp://127.0.0.1:7102"). `timeout_ms` bounds each
 * call, retries included (0: 5000). No connection is made yet. The client
 * name (see kho_client_set_name) starts as $KHO_CLIENT_NAME, else
 * "user@host", cut to KHO_NAME_BYTES_MAX bytes.
 * Errors: KHO_EINVAL (no endpoint, more than KHO_ENDPOINTS_MAX, a URL too
 * long, out NULL), KHO_ENOMEM.
 */
KHO_EXPORT int kho_client_open(const char *endpoints, uint32_t timeout_ms,
                               struct kho_client **out);

/* Closes the client. NULL is allowed. */
KHO_EXPORT void kho_client_close(struct kho_client *c);

/*
 * Sets the name stored as the writer of every record this client writes
 * from now on. Errors: KHO_EINVAL (NULL, empty, over KHO_NAME_BYTES_MAX
 * bytes, or not valid UTF-8).
 */
KHO_EXPORT int kho_client_set_name(struct kho_client *c, const char *name);

/*
 * Writes `value` under `key` in `registry`. `cond` and `expected_version`
 * make it conditional; `meta` (may be NULL) receives the new version.
 * Errors: KHO_EINVAL (empty key, bad cond, bad registry name),
 * KHO_ETOOLARGE (key > 1 KiB or value > 1 MiB), KHO_ENOTFOUND (unknown
 * registry), KHO_ECONFLICT (precondition failed), KHO_ETIMEOUT (outcome
 * unknown), KHO_EUNAVAILABLE, KHO_ENOSPC, KHO_ENOMEM, KHO_EIO, KHO_ESTALE
 * (a newer request of this client superseded it), KHO_EDENIED.
 */
KHO_EXPORT int kho_put(struct kho_client *c, const char *registry,
                       const void *key, size_t key_len, const void *value,
                       size_t value_len, enum kho_cond cond,
                       uint64_t expected_version, struct kho_record_meta *meta);

/*
 * Reads `key`. Linearizable unless `serializable` is non-zero (then any
 * node answers from its replica, possibly stale). On KHO_OK *value is a
 * malloc'd copy (free it) of *value_len bytes; `meta` may be NULL.
 * Errors: KHO_ENOTFOUND (no such key or registry), KHO_EINVAL,
 * KHO_ETOOLARGE (key), KHO_ETIMEOUT, KHO_EUNAVAILABLE, KHO_ECORRUPT,
 * KHO_ENOMEM, KHO_EIO, KHO_EDENIED.
 */
KHO_EXPORT int kho_get(struct kho_client *c, const char *registry,
                       const void *key, size_t key_len, int serializable,
                       void **value, size_t *value_len,
                       struct kho_record_meta *meta);

/*
 * Reads `key` with all its metadata into *out (free its key and value with
 * kho_record_clear). Same consistency as kho_get(). Errors: those of
 * kho_get().
 */
KHO_EXPORT int kho_get_record(struct kho_client *c, const char *registry,
                              const void *key, size_t key_len, int serializable,
                              struct kho_record *out);

/*
 * Deletes `key`. `cond` may be KHO_COND_NONE, KHO_COND_IF_VERSION or
 * KHO_COND_IF_REVISION. Errors: KHO_ENOTFOUND (no such key or registry),
 * KHO_ECONFLICT (precondition failed), KHO_EINVAL (also for
 * KHO_COND_IF_ABSENT), and those of kho_put().
 */
KHO_EXPORT int kho_del(struct kho_client *c, const char *registry,
                       const void *key, size_t key_len, enum kho_cond cond,
                       uint64_t expected_version);

/* --- Transactions ------------------------------------------------------- */

/* What a compare looks at. A key that does not exist has version, create
 * and modify revision 0, and every KHO_CMP_VALUE compare on it is false. */
enum kho_cmp_target {
    KHO_CMP_VERSION = 0,
    KHO_CMP_CREATE_REVISION = 1,
    KHO_CMP_MODIFY_REVISION = 2,
    KHO_CMP_VALUE = 3, /* bytewise, like memcmp, a prefix sorts first */
};

enum kho_cmp_op {
    KHO_CMP_EQUAL = 0,
    KHO_CMP_NOT_EQUAL = 1,
    KHO_CMP_LESS = 2,
    KHO_CMP_GREATER = 3,
};

/* "the record's <target> <op> <number or value>" */
struct kho_compare {
    const void *key;
    size_t key_len;
    enum kho_cmp_target target;
    enum kho_cmp_op op;
    uint64_t number;   /* VERSION, CREATE_REVISION, MODIFY_REVISION */
    const void *value; /* VALUE */
    size_t value_len;
};

/* A put (is_delete 0) or a delete of one key. */
struct kho_op {
    int is_delete;
    const void *key;
    size_t key_len;
    const void *value; /* put only */
    size_t value_len;
};

/*
 * Applies `ops` in order, atomically, on one registry if every compare in
 * `cmps` holds; otherwise applies nothing. A delete of a missing key inside
 * a transaction is not an error. *revision (may be NULL) receives the
 * revision the transaction was applied at. *failed_compare (may be NULL)
 * receives, with KHO_ECONFLICT, the 1-based index of the first compare
 * that failed (0 when the conflict was not a compare's), else 0.
 * Every key of a transaction (compares and ops) must lie in one shard of
 * the registry (kho_shard_of() with the registry's shard count, see
 * kho_shard_map()): a transaction across shards is refused before anything
 * is sent, its message naming two of the shards.
 * Errors: KHO_EINVAL (no compare and no op, NULL arrays with a count, an
 * empty key, a bad target or op, a delete with a value, two ops on one
 * key, keys in more than one shard), KHO_ETOOLARGE (over KHO_TXN_CMPS_MAX
 * compares or KHO_TXN_OPS_MAX ops, a key or value over its limit, keys and
 * values together over KHO_TXN_BYTES_MAX), KHO_ECONFLICT (a compare failed:
 * nothing applied), KHO_ENOTFOUND (unknown registry), KHO_ECORRUPT (failed
 * compare index out of range), and KHO_ETIMEOUT (outcome unknown),
 * KHO_EUNAVAILABLE, KHO_ENOSPC, KHO_ENOMEM, KHO_EIO, KHO_ESTALE, KHO_EDENIED as
 * for kho_put().
 */
KHO_EXPORT int kho_txn(struct kho_client *c, const char *registry,
                       const struct kho_compare *cmps, size_t n_cmps,
                       const struct kho_op *ops, size_t n_ops,
                       uint64_t *revision, uint32_t *failed_compare);

/* --- Scans and history ---------------------------------------------------- */

/*
 * What a scan reads: the keys in [start, end) in key order (start empty:
 * from the first key; end empty: to the last), or instead every key that
 * begins with `prefix` (then start and end must be empty). `limit` is the
 * most records of one page (0: the server's default; at most
 * KHO_SCAN_LIMIT_MAX). `token` (empty for the first page) is the
 * continuation token of the previous page.
 */
struct kho_scan_opts {
    const void *start;
    size_t start_len;
    const void *end;
    size_t end_len;
    const void *prefix;
    size_t prefix_len;
    uint32_t limit;
    int serializable; /* as for kho_get() */
    const void *token;
    size_t token_len;
};

/*
 * Reads one page of a scan. On KHO_OK *recs (free with kho_records_free)
 * holds *n records (possibly none) in key order, and *token / *token_len
 * a malloc'd continuation token (free it), or NULL / 0 when the range is
 * exhausted: pass it back in opts.token, with the same range, for the next
 * page. A page may hold fewer than `limit` records and still have a token
 * (the server bounds a page's bytes, about 4 MiB).
 *
 * On a registry of several shards one page asks every shard in turn for up
 * to `limit` records (KHO_SCAN_LIMIT_DEFAULT when 0) after the token, with
 * the same consistency, and merges them in key order: O(shards) round
 * trips, all within the client's timeout. The page holds the first `limit`
 * of them (and at most about 4 MiB of keys and values), never a key past
 * what a shard with more records has shown; its token is its last key and
 * serves the whole registry. Each shard is read at its own point in time:
 * a page is not a snapshot of the registry.
 * Errors: KHO_EINVAL (NULL outputs or opts, a NULL pointer with a length,
 * a prefix together with start or end, limit over KHO_SCAN_LIMIT_MAX, a
 * token over KHO_TOKEN_BYTES_MAX or one the server does not accept, a bad
 * registry name), KHO_ETOOLARGE (start, end or prefix over
 * KHO_KEY_BYTES_MAX), KHO_ENOTFOUND (unknown registry), KHO_ECORRUPT (a
 * malformed answer: a record without a key, outside the range or over a
 * limit, more records than asked for, a token over its limit; of a shard:
 * a key of another shard, keys out of order or not after the token, a
 * token without records), KHO_ETIMEOUT, KHO_EUNAVAILABLE (also: the
 * registry's shard count changed during the page), KHO_ENOMEM, KHO_EIO,
 * KHO_EDENIED.
 */
KHO_EXPORT int kho_scan(struct kho_client *c, const char *registry,
                        const struct kho_scan_opts *o, struct kho_record **recs,
                        size_t *n, void **token, size_t *token_len);

/*
 * Reads one page of the kept versions of `key`, oldest first (a delete is
 * a version with `deleted` set), at most `limit` of them (0: the server's
 * default; at most KHO_SCAN_LIMIT_MAX). Paging through `token` as for
 * kho_scan(). A key never written has no versions (KHO_OK, *n == 0).
 * Errors: those of kho_scan(); also KHO_EINVAL / KHO_ETOOLARGE for the key
 * as for kho_get(), and KHO_ECORRUPT for a record of another key.
 */
KHO_EXPORT int kho_history(struct kho_client *c, const char *registry,
                           const void *key, size_t key_len, uint32_t limit,
                           const void *token, size_t token_len,
                           struct kho_record **recs, size_t *n,
                           void **token_out, size_t *token_out_len);

/* --- Registries ------------------------------------------------------------
 */

struct kho_registry_info {
    char name[KHO_NAME_BYTES_MAX + 1];
    uint64_t group_id; /* the group of shard 0 */
    size_t n_replicas;
    uint64_t replicas[KHO_REPLICAS_MAX];  /* node ids (of shard 0) */
    uint64_t created_ms;                  /* ms since the epoch */
    char creator[KHO_NAME_BYTES_MAX + 1]; /* client name of the creator */
    /* kho_registry_describe only (0 otherwise): the leader's view. */
    uint64_t leader, term, commit, applied;
    /* Its shards (1 from a server that predates sharding), and the node
     * that holds a replica of every shard ("" none). Where each shard
     * lives: kho_shard_map(). */
    uint32_t shards;
    char home[KHO_NAME_BYTES_MAX + 1];
};

/* How to create a registry (kho_registry_create_opts()). Zeroed: the
 * cluster's defaults. */
struct kho_registry_opts {
    uint32_t replicas; /* replicas of each shard (0: 3; at most
                          KHO_REPLICAS_MAX) */
    uint32_t shards;   /* shards (0: 1; at most KHO_SHARDS_MAX) */
    const char *home;  /* a node that holds a replica of every shard
                          (NULL or "": none) */
};

/*
 * Creates registry `name` with `replicas` replicas (0: the cluster's
 * default, 3; at most KHO_REPLICAS_MAX), of one shard (more, and a home
 * node: kho_registry_create_opts()). Retried with the same session and
 * seq like a put, so it is created once. `out` (may be NULL) receives the
 * new registry as the server describes it (when the create answer does not
 * describe it, libkho asks with kho_registry_describe()).
 * Errors: KHO_EINVAL (NULL, empty, over KHO_NAME_BYTES_MAX bytes or not
 * UTF-8 name, replicas over KHO_REPLICAS_MAX, a name the server refuses),
 * KHO_EEXIST (a registry of that name exists), KHO_EUNAVAILABLE (fewer
 * nodes than replicas, or no quorum), KHO_ETIMEOUT (outcome unknown),
 * KHO_ECORRUPT, KHO_ENOSPC, KHO_ENOMEM, KHO_EIO, KHO_ESTALE, KHO_EDENIED.
 */
KHO_EXPORT int kho_registry_create(struct kho_client *c, const char *name,
                                   uint32_t replicas,
                                   struct kho_registry_info *out);

/*
 * Creates registry `name` as `opts` says (NULL: the defaults): `shards`
 * shards, each a raft group of `replicas` replicas, one of them on node
 * `home` when given. kho_registry_create(c, name, r, out) is this with
 * opts {.replicas = r}. Errors: those of kho_registry_create(), and
 * KHO_EINVAL for shards over KHO_SHARDS_MAX or a home that is not a
 * 1..KHO_NAME_BYTES_MAX byte UTF-8 name, or one the server does not know
 * (KHO_ENOTFOUND when it says so).
 */
KHO_EXPORT int kho_registry_create_opts(struct kho_client *c, const char *name,
                                        const struct kho_registry_opts *opts,
                                        struct kho_registry_info *out);

/*
 * Lists the registries: on KHO_OK *out is a malloc'd array (free it) of *n
 * entries, NULL when there are none. Errors: KHO_EINVAL (NULL outputs),
 * KHO_ECORRUPT (more than KHO_REGISTRIES_MAX, a field over its limit),
 * KHO_ETIMEOUT, KHO_EUNAVAILABLE, KHO_ENOMEM, KHO_EIO, KHO_EDENIED.
 */
KHO_EXPORT int kho_registry_list(struct kho_client *c,
                                 struct kho_registry_info **out, size_t *n);

/*
 * Describes registry `name`, with its group's leader, term, commit and
 * applied index. Errors: KHO_ENOTFOUND (no such registry), KHO_EINVAL (bad
 * name, out NULL), KHO_ECORRUPT (no or another registry in the answer, a
 * field over its limit), KHO_ETIMEOUT, KHO_EUNAVAILABLE, KHO_ENOMEM,
 * KHO_EIO, KHO_EDENIED.
 */
KHO_EXPORT int kho_registry_describe(struct kho_client *c, const char *name,
                                     struct kho_registry_info *out);

/* --- Shards ----------------------------------------------------------------
 */

/* One shard of a registry, as kho_shard_map() found it. */
struct kho_shard_info {
    uint32_t shard; /* 0-based: kho_shard_of() of its keys */
    uint64_t group_id;
    size_t n_replicas;
    uint64_t replicas[KHO_REPLICAS_MAX]; /* node ids, as the meta group
                                            places them */
    uint64_t leader;                     /* node id, 0 unknown */
    char leader_url[KHO_URL_BYTES_MAX];  /* its client URL ("" unknown) */
    /* The view of the node that named the leader, when it hosts a
     * replica (0 otherwise). */
    uint64_t term, commit, applied;
};

/* Where the shards of a registry live. */
struct kho_shard_map {
    char registry[KHO_NAME_BYTES_MAX + 1];
    uint32_t shards;                   /* 1..KHO_SHARDS_MAX */
    uint32_t replicas;                 /* replicas per shard */
    char home[KHO_NAME_BYTES_MAX + 1]; /* "" none */
    uint64_t revision; /* meta revision of the registry's record */
    struct kho_shard_info *shard_list; /* shards entries, [i].shard == i */
    size_t n_nodes;
    struct kho_node_info *nodes; /* every node named above, with its URLs */
};

/*
 * Fetches where the shards of `registry` live: *out (free it with
 * kho_shard_map_free) from any node, the leaders filled in by asking the
 * nodes of the shards whose leader that node did not know (a node knows
 * the leaders of the shards it hosts): at most one request per node. It
 * also refreshes the client's cached map. Errors: KHO_EINVAL (bad registry
 * name, out NULL; or the cluster predates sharding: "does not know shard
 * maps"), KHO_ENOTFOUND (no such registry), KHO_ECORRUPT (a malformed map:
 * another registry, a shard missing or twice, over a limit), KHO_ETIMEOUT,
 * KHO_EUNAVAILABLE, KHO_ENOMEM, KHO_EIO, KHO_EDENIED.
 */
KHO_EXPORT int kho_shard_map(struct kho_client *c, const char *registry,
                             struct kho_shard_map **out);

/* Frees a map of kho_shard_map(). NULL is allowed. */
KHO_EXPORT void kho_shard_map_free(struct kho_shard_map *m);

/* A replica of a shard moved (or planned to move) from one node to
 * another. */
struct kho_shard_move {
    char registry[KHO_NAME_BYTES_MAX + 1];
    uint32_t shard;    /* 0-based */
    uint64_t from, to; /* node ids */
    char from_name[KHO_NAME_BYTES_MAX + 1];
    char to_name[KHO_NAME_BYTES_MAX + 1];
};

/*
 * Moves the replica of shard `shard` (0-based) of `registry` from node
 * `from_name` to node `to_name`: the meta group records it at once, then
 * the shard's leader adds the target as a learner, promotes it once caught
 * up and removes the source (follow it with kho_shard_map()). Retried with
 * the same session and seq, so it is recorded once. *moves (free() it)
 * receives the *n_moves moves the cluster recorded (NULL when none);
 * moves and n_moves may both be NULL.
 * Errors: KHO_EINVAL (bad registry or node name, from and to the same,
 * shard out of range, a target that already holds the shard),
 * KHO_ENOTFOUND (no such registry or node), KHO_ECONFLICT (the shard is
 * moving already, or the map changed meanwhile), KHO_ECORRUPT (more than
 * KHO_SHARD_MOVES_MAX moves, a field over its limit), KHO_ETIMEOUT (outcome
 * unknown), KHO_EUNAVAILABLE, KHO_ENOSPC, KHO_ENOMEM, KHO_EIO, KHO_ESTALE,
 * KHO_EDENIED.
 */
KHO_EXPORT int kho_shard_move(struct kho_client *c, const char *registry,
                              uint32_t shard, const char *from_name,
                              const char *to_name,
                              struct kho_shard_move **moves, size_t *n_moves);

/*
 * Asks the meta group's leader to even out the replicas over the nodes:
 * it plans moves so that every node holds an even share and records them
 * (only plans them when `dry_run` is non-zero; a plan is not retried
 * with a seq, it writes nothing). *moves / *n_moves receive them as for
 * kho_shard_move(); none when the cluster is balanced. Errors: those of
 * kho_shard_move() but KHO_ENOTFOUND, and KHO_ETOOLARGE (more moves than
 * the cluster plans at once: rebalance again after these).
 */
KHO_EXPORT int kho_rebalance(struct kho_client *c, int dry_run,
                             struct kho_shard_move **moves, size_t *n_moves);

/* --- Membership and leadership -------------------------------------------- */

struct kho_node_info;

/*
 * Adds a node to the cluster under `name` (1-64 bytes of [a-z0-9_.-]),
 * reachable by its peers at `peer_url` and by clients at `client_url`.
 * *id (may be NULL) receives its node id, above every id the cluster ever
 * used. Then start it: khod --name NAME --join ENDPOINTS ...; the meta
 * group's leader adds it as a learner and makes it a voter once caught up.
 * Errors: KHO_EINVAL (bad name or URL), KHO_EEXIST (a member has that
 * name), KHO_ENOSPC (the cluster holds the most nodes it can),
 * KHO_ECONFLICT (the cluster map changed meanwhile: retry), KHO_ETIMEOUT
 * (outcome unknown), KHO_EUNAVAILABLE, KHO_ENOMEM, KHO_EIO.
 */
KHO_EXPORT int kho_member_add(struct kho_client *c, const char *name,
                              const char *peer_url, const char *client_url,
                              uint64_t *id);

/*
 * Removes member `name`: every registry living on it gets another replica
 * in its place first (when another node can take it), then each group's
 * leader moves the data and takes the node out; follow it with
 * kho_node_status(). Errors: KHO_ENOTFOUND (no such member), KHO_EINVAL
 * (the last member, or a registry whose only replica it holds),
 * KHO_ETOOLARGE (too many registries to move at once), KHO_ECONFLICT,
 * KHO_ETIMEOUT, KHO_EUNAVAILABLE, KHO_ENOMEM, KHO_EIO.
 */
KHO_EXPORT int kho_member_remove(struct kho_client *c, const char *name);

/*
 * The nodes the cluster recorded, removed ones included (ids are never
 * reused). *out is malloc'd (free() it). Errors: KHO_ETIMEOUT,
 * KHO_EUNAVAILABLE, KHO_ECORRUPT, KHO_ENOMEM, KHO_EIO.
 */
KHO_EXPORT int kho_member_list(struct kho_client *c,
                               struct kho_node_info **out, size_t *n);

/*
 * Asks the leader of group `group_id` to hand leadership to node `target`
 * (a caught-up voter). Returns once the leader accepted; the transfer
 * itself takes about one round trip (watch kho_node_status()). Errors:
 * KHO_EINVAL (target not a voter, or already the leader), KHO_EUNAVAILABLE
 * (no leader), KHO_ETIMEOUT, KHO_ENOMEM, KHO_EIO.
 */
KHO_EXPORT int kho_leader_transfer(struct kho_client *c, uint64_t group_id,
                                   uint64_t target);

/*
 * Asks node `node` to hand every group it leads to another voter (before
 * maintenance). Errors: as kho_leader_transfer().
 */
KHO_EXPORT int kho_leader_drain(struct kho_client *c, uint64_t node);

/* --- Status -----------------------------------------------------------------
 */

/* A member of a group as the group's leader sees it. */
struct kho_replica_status {
    uint64_t node;  /* its node id */
    char role[8];   /* "voter" or "learner" */
    uint64_t match; /* its durable log index, as last acknowledged */
    uint64_t lag;   /* the leader's last index - match */
    int leader;     /* it is the leader */
    int active;     /* heard from within an election timeout */
};

/* Status of one group on one node. */
struct kho_group_status {
    uint64_t group_id;
    char registry[KHO_NAME_BYTES_MAX + 1]; /* "" the meta group */
    uint32_t shard; /* the registry's shard it holds (0-based) */
    char role[16];
    uint64_t term, leader, commit, applied, last_index;
    /* The members of the configuration in force. match, lag and active
     * mean something only in the leader's answer (role "leader"). A
     * group of more than KHO_GROUP_MEMBERS_MAX members is cut. */
    size_t n_replicas;
    struct kho_replica_status replicas[KHO_GROUP_MEMBERS_MAX];
    /* This node's check alarm for the group (kho_check_alarm()):
     * check_alarm is non-zero when a consistency check found this
     * replica's state hash at marker check_alarm_index different from the
     * other replicas'. */
    int check_alarm;
    uint64_t check_alarm_index, check_alarm_hash, check_alarm_expected;
    uint64_t check_alarm_time_ms;
};

/* One node of the cluster, as the answering node knows it. */
struct kho_node_info {
    uint64_t id;
    char name[KHO_NAME_BYTES_MAX + 1];
    char client_url[KHO_URL_BYTES_MAX];
    char peer_url[KHO_URL_BYTES_MAX];
    int removed; /* removed from the cluster (its id is never reused) */
};

/*
 * What one node reports: itself, its groups and the cluster's nodes. A
 * node with more than KHO_GROUPS_MAX groups or a cluster of more than
 * KHO_NODES_MAX nodes is cut to that many; n_groups_total and n_nodes_total
 * say how many the node reported. About 280 KiB: do not put it on a small
 * stack.
 */
struct kho_node_status {
    uint64_t node_id;
    char name[KHO_NAME_BYTES_MAX + 1];
    size_t n_groups, n_groups_total;
    struct kho_group_status groups[KHO_GROUPS_MAX];
    size_t n_nodes, n_nodes_total;
    struct kho_node_info nodes[KHO_NODES_MAX];
};

/* Number of endpoints the client was opened with. */
KHO_EXPORT size_t kho_client_endpoints(const struct kho_client *c);

/* The URL of endpoint number `i` (0-based), or NULL when i is out of
 * range. Valid until the client is closed. */
KHO_EXPORT const char *kho_client_endpoint(const struct kho_client *c,
                                           size_t i);

/*
 * Asks endpoint number `i` (0-based) for its status. One try, no
 * redirection. Errors: KHO_EINVAL (i out of range, out NULL),
 * KHO_EUNAVAILABLE (cannot reach it, or no answer in time), KHO_ECORRUPT
 * (bad answer), KHO_ENOMEM, KHO_EIO.
 */
KHO_EXPORT int kho_node_status(struct kho_client *c, size_t i,
                               struct kho_node_status *out);

/* The server's message for the last failed call on this client ("" if
 * none); valid until the next call. */
KHO_EXPORT const char *kho_client_errmsg(struct kho_client *c);

/* --- Consistency checks ----------------------------------------------------
 */

/*
 * Proposes a check marker in a group of `registry` - the shard whose
 * group is `group_id`, or shard 0 when group_id is 0 - or, when registry
 * is NULL or "", in group `group_id` (0: the meta group). Every replica of the
 * group hashes its state machine when it applies the marker, so replicas
 * that hold the same data answer kho_check_hash() with the same hash.
 * *index receives the marker's index. Follows NOT_LEADER hints and retries
 * like a write (a retry may place a second marker: harmless).
 * Errors: KHO_EINVAL (bad registry name, index NULL), KHO_ENOTFOUND (no
 * such registry or shard, or no such group where it was sent), KHO_ETIMEOUT,
 * KHO_EUNAVAILABLE, KHO_ECORRUPT (no index in the answer), KHO_ENOMEM,
 * KHO_EIO.
 */
KHO_EXPORT int kho_check_mark(struct kho_client *c, const char *registry,
                              uint64_t group_id, uint64_t *index);

/* One replica's answer about a check marker (kho_check_hash()). */
struct kho_check_hash {
    uint64_t node_id;
    char node_name[KHO_NAME_BYTES_MAX + 1];
    uint64_t index;   /* the marker's index */
    uint64_t hash;    /* the replica's state hash there */
    uint64_t applied; /* the replica's applied index when it answered */
    /* The node's check alarm for the group, if it has one. */
    int alarm;
    uint64_t alarm_index, alarm_hash, alarm_expected, alarm_time_ms;
};

/*
 * Asks the node at client URL `url` (any node, not only an endpoint of the
 * client) for the hash its replica of group `group_id` recorded at check
 * marker `index`, waiting up to the client's timeout for it to apply the
 * marker. No redirection. Errors: KHO_EINVAL (url NULL, empty or too long,
 * index 0, out NULL), KHO_ENOTFOUND (the node hosts no such group),
 * KHO_ESTALE (the replica applied past the marker without hashing it - it
 * received a snapshot instead - or forgot it: place a new marker),
 * KHO_EUNAVAILABLE (the node does not answer), KHO_ETIMEOUT (it answers
 * but did not apply the marker in time), KHO_ENOMEM, KHO_EIO.
 */
KHO_EXPORT int kho_check_hash(struct kho_client *c, const char *url,
                              uint64_t group_id, uint64_t index,
                              struct kho_check_hash *out);

/*
 * Raises the check alarm of group `group_id` on the node at `url`: its
 * hash `hash` at marker `index` differs from `expected`, the other
 * replicas'. The node keeps it (across restarts) and shows it in its
 * status until kho_check_alarm_clear(). Errors: KHO_EINVAL (bad url),
 * KHO_ENOTFOUND (no such group there), KHO_EUNAVAILABLE, KHO_ENOSPC,
 * KHO_ENOMEM, KHO_EIO.
 */
KHO_EXPORT int kho_check_alarm(struct kho_client *c, const char *url,
                               uint64_t group_id, uint64_t index, uint64_t hash,
                               uint64_t expected);

/* Clears it. Errors: those of kho_check_alarm(). */
KHO_EXPORT int kho_check_alarm_clear(struct kho_client *c, const char *url,
                                     uint64_t group_id);

/* --- Backups ---------------------------------------------------------------
 */

/* Most bytes one backup exchange carries. */
#define KHO_BACKUP_CHUNK_BYTES_MAX (1u << 20)
/* Most nodes one backup of a sharded cluster is taken from (see
 * kho_backup()). */
#define KHO_BACKUP_PARTS_MAX 64u

struct kho_backup_info {
    uint64_t backup_id;
    uint64_t node_id; /* the node it was taken from (from several nodes:
                         the one that gave the meta group) */
    char node_name[KHO_NAME_BYTES_MAX + 1];
    uint64_t bytes;  /* of the file */
    uint32_t groups; /* the meta group and every registry shard */
};

/*
 * Takes a backup of the whole cluster - the meta group (the cluster map)
 * and every registry, each at its applied index - while the cluster keeps
 * serving, and writes the backup file to fd from its current position.
 *
 * From one node when one hosts every group: the client's endpoints are
 * tried in order, and the first that hosts every registry shard gives it,
 * from one consistent read of its store. When none does (a sharded
 * cluster: every endpoint that answered refused for lacking groups), the
 * backup is taken from several nodes: libkho lists the registries, their
 * shard maps and the nodes, chooses for every group a node that hosts it
 * (greedily, the node hosting the most groups not yet chosen first, so few
 * nodes give parts; a node that does not take its part is passed over for
 * the others hosting its groups), asks each chosen node for exactly its
 * groups, and merges the parts into one file of the same format, with a
 * new backup id; *info then names the node that gave the meta group. Such
 * a backup is consistent per group - each group at its own applied index,
 * from one read of its node's store - but NOT across groups: a write to
 * one shard may be in the file while an earlier write to another shard is
 * not (a transaction stays within one shard, so none is cut in half).
 * The registries are listed again once the meta group is taken, so every
 * registry the backed-up cluster map records is in the file. Each part is
 * staged whole in an unlinked temporary file in $TMPDIR (default /tmp),
 * which needs room for it; the files go when the call returns, whatever
 * happens. At most KHO_BACKUP_PARTS_MAX nodes give parts.
 *
 * Everything received is checked before it is written: each chunk's
 * checksum, and the file's own frames, checksums and end record (for a
 * backup from several nodes: every part's, then the merged file's); fd
 * then holds a complete, checked backup (khod --restore reads it). On an
 * error fd may hold a partial file. Making it durable and naming it is the
 * caller's part. Each exchange is bounded by the client's timeout; the
 * backup as a whole takes what the data needs. *info (may be NULL)
 * describes it. Errors: KHO_EINVAL (fd < 0; or no node takes some group:
 * it refused for lacking it, kho_client_errmsg() says what each lacks),
 * KHO_EEXIST (a backup is running on the node), KHO_ECORRUPT (the stream
 * failed a check), KHO_ETOOLARGE (the cluster has more groups than one
 * backup holds, 256, or the parts would come from more than
 * KHO_BACKUP_PARTS_MAX nodes), KHO_EIO or KHO_ENOSPC (writing fd or a
 * temporary file, or on the node), KHO_ETIMEOUT, KHO_EUNAVAILABLE,
 * KHO_ENOMEM; from several nodes, also the errors of kho_registry_list(),
 * kho_shard_map() and kho_node_status().
 */
KHO_EXPORT int kho_backup(struct kho_client *c, int fd,
                          struct kho_backup_info *info);

#ifdef __cplusplus
}
#endif

#endif /* KHO_H */

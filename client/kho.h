/*
 * kho.h - libkho, the C client of kho.
 *
 * A client talks to the nodes listed at open time, follows NOT_LEADER hints
 * to the leader of each registry, and retries a request - with the same
 * session id and sequence number, so the cluster applies it once - until it
 * succeeds, fails for good, or the client's timeout passes. A timeout is
 * KHO_ETIMEOUT: the outcome is UNKNOWN (the write may or may not have been
 * applied), never "failed".
 *
 * Every call is blocking and safe to call from several threads on one
 * client (calls on one client are serialised by a mutex; open one client
 * per thread for parallelism).
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

struct kho_client;

/* Metadata of a record. */
struct kho_record_meta {
    uint64_t version;  /* 1 when created, +1 per put */
    uint64_t revision; /* the log index of the last change */
};

/* Options of one put or delete. */
enum kho_cond {
    KHO_COND_NONE = 0,
    KHO_COND_IF_ABSENT = 1,  /* put only if the key does not exist */
    KHO_COND_IF_VERSION = 2, /* only if the version is `expected_version`
                                (0: the key must not exist) */
};

/*
 * Opens a client on a comma-separated list of node client URLs
 * ("tcp://127.0.0.1:7101,tcp://127.0.0.1:7102"). `timeout_ms` bounds each
 * call, retries included (0: 5000). No connection is made yet.
 * Errors: KHO_EINVAL (no endpoint, more than KHO_ENDPOINTS_MAX, a URL too
 * long), KHO_ENOMEM.
 */
KHO_EXPORT int kho_client_open(const char *endpoints, uint32_t timeout_ms,
                               struct kho_client **out);

/* Closes the client. NULL is allowed. */
KHO_EXPORT void kho_client_close(struct kho_client *c);

/*
 * Writes `value` under `key` in `registry`. `cond` and `expected_version`
 * make it conditional; `meta` (may be NULL) receives the new version.
 * Errors: KHO_EINVAL (empty key, bad cond), KHO_ETOOLARGE (key > 1 KiB or
 * value > 1 MiB), KHO_ENOTFOUND (unknown registry), KHO_ECONFLICT
 * (precondition failed), KHO_ETIMEOUT (outcome unknown), KHO_EUNAVAILABLE,
 * KHO_ENOSPC, KHO_ENOMEM, KHO_EIO, KHO_ESTALE (a newer request of this
 * client superseded it).
 */
KHO_EXPORT int kho_put(struct kho_client *c, const char *registry,
                       const void *key, size_t key_len, const void *value,
                       size_t value_len, enum kho_cond cond,
                       uint64_t expected_version,
                       struct kho_record_meta *meta);

/*
 * Reads `key`. Linearizable unless `serializable` is non-zero (then any
 * node answers from its replica, possibly stale). On KHO_OK *value is a
 * malloc'd copy (free it) of *value_len bytes; `meta` may be NULL.
 * Errors: KHO_ENOTFOUND (no such key or registry), KHO_EINVAL,
 * KHO_ETOOLARGE (key), KHO_ETIMEOUT, KHO_EUNAVAILABLE, KHO_ECORRUPT,
 * KHO_ENOMEM, KHO_EIO.
 */
KHO_EXPORT int kho_get(struct kho_client *c, const char *registry,
                       const void *key, size_t key_len, int serializable,
                       void **value, size_t *value_len,
                       struct kho_record_meta *meta);

/*
 * Deletes `key`. Errors: KHO_ENOTFOUND (no such key or registry),
 * KHO_ECONFLICT (precondition failed), and those of kho_put().
 */
KHO_EXPORT int kho_del(struct kho_client *c, const char *registry,
                       const void *key, size_t key_len, enum kho_cond cond,
                       uint64_t expected_version);

/* Status of one group on one node. */
struct kho_group_status {
    uint64_t group_id;
    char registry[64];
    char role[16];
    uint64_t term, leader, commit, applied, last_index;
};

struct kho_node_status {
    uint64_t node_id;
    char name[64];
    size_t n_groups;
    struct kho_group_status groups[64];
};

/* Number of endpoints the client was opened with. */
KHO_EXPORT size_t kho_client_endpoints(const struct kho_client *c);

/*
 * Asks endpoint number `i` (0-based) for its status. One try, no
 * redirection. Errors: KHO_EINVAL (i out of range), KHO_ETIMEOUT,
 * KHO_EUNAVAILABLE (cannot reach it), KHO_ECORRUPT (bad answer), KHO_EIO.
 */
KHO_EXPORT int kho_node_status(struct kho_client *c, size_t i,
                               struct kho_node_status *out);

/* The server's message for the last failed call on this client ("" if
 * none); valid until the next call. */
KHO_EXPORT const char *kho_client_errmsg(struct kho_client *c);

#ifdef __cplusplus
}
#endif

#endif /* KHO_H */

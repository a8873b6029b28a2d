/*
 * api.h - the client-facing NNG service of khod.
 *
 * A REP socket on the client URL with API_WORKERS contexts, each an
 * nng_ctx + nng_aio state machine: receive a Request (proto/api.proto),
 * validate it (sizes: key <= 1 KiB, value <= 1 MiB, else KHO_ETOOLARGE),
 * serve it, reply. Writes and linearizable reads go through the raft thread
 * (node_submit); its completion wakes the worker with nng_sleep_aio(0), so
 * the LMDB reads of a linearizable get or scan run on an NNG thread, never
 * on the raft thread. Serializable reads are served from the local store at
 * once.
 *
 * Routing: a node answers KHO_ENOTLEADER with a client URL to try instead
 * when it does not lead the group (the group's leader), does not host the
 * registry (one of its replicas) or does not know the registry yet (the meta
 * group's leader, which knows every registry that exists).
 *
 * Space: writes that add data (puts, registry creation) are refused with
 * KHO_ENOSPC while the store holds more than the quota, so that deletes,
 * log appends and compaction always find room in the LMDB map.
 */
#ifndef KHO_API_H
#define KHO_API_H

#include <stddef.h>
#include <stdint.h>

#include "../node/node.h"
#include "../store/store.h"

#define API_WORKERS 64
/* Largest request accepted: a transaction of STORE_ENTRY_BYTES_MAX plus
 * framing. */
#define API_REQUEST_BYTES_MAX (STORE_ENTRY_BYTES_MAX + 65536u)
/* Keys and values one scan or history page returns at most. */
#define API_PAGE_BYTES_MAX (4u << 20)
#define API_SCAN_LIMIT_DEFAULT 1000u
#define API_URL_BYTES_MAX 256u
/* How often the store's space use is re-read for the quota check. */
#define API_SPACE_CHECK_MS 100u

struct api;

struct api_config {
    const char *url;
    struct node *node;
    struct store *st;
    /* Every node of the initial cluster, this one included: where to send
     * clients until the meta group has recorded the nodes. */
    const struct node_peer *peers;
    size_t n_peers;
    uint64_t quota_bytes; /* writes adding data are refused above it */
};

/* Starts listening on c->url. Errors: KHO_EBUSY (address in use),
 * KHO_EINVAL (bad URL), KHO_ENOMEM, KHO_EIO; a message in err. */
int api_open(const struct api_config *c, struct api **out, char *err,
             size_t err_len);
/* Closes the socket and waits for every worker. The node must already be
 * stopped (node_stop), so no completion is outstanding. NULL is allowed. */
void api_close(struct api *a);

#endif /* KHO_API_H */

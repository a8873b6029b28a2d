/*
 * api.h - the client-facing NNG service of khod.
 *
 * A REP socket on the client URL with API_WORKERS contexts, each an
 * nng_ctx + nng_aio state machine: receive a Request (proto/api.proto),
 * validate it (sizes: key <= 1 KiB, value <= 1 MiB, else KHO_ETOOLARGE),
 * serve it, reply. Writes and linearizable reads go through the raft thread
 * (node_submit); its completion wakes the worker with nng_sleep_aio(0), so
 * the LMDB read of a linearizable get runs on an NNG thread, never on the
 * raft thread. Serializable gets are served from the local store at once.
 * A node that does not lead the group answers KHO_ENOTLEADER with the
 * leader's client URL as a hint.
 */
#ifndef KHO_API_H
#define KHO_API_H

#include <stddef.h>
#include <stdint.h>

#include "../node/node.h"
#include "../store/store.h"

#define API_WORKERS 64
/* Largest request accepted (a maximal key and value plus framing). */
#define API_REQUEST_BYTES_MAX (STORE_KEY_BYTES_MAX + STORE_VALUE_BYTES_MAX + 4096u)
#define API_URL_BYTES_MAX 256u

struct api;

/* Maps a node id to its client URL for leader hints ("" if unknown). */
typedef const char *(*api_peer_url_fn)(void *ctx, uint64_t node_id);

/* Starts listening on `url`. Errors: KHO_EBUSY (address in use),
 * KHO_EINVAL (bad URL), KHO_ENOMEM, KHO_EIO; a message in err. */
int api_open(const char *url, struct node *node, struct store *st,
             api_peer_url_fn peer_url, void *peer_ctx, struct api **out,
             char *err, size_t err_len);
/* Closes the socket and waits for every worker. The node must already be
 * stopped (node_stop), so no completion is outstanding. NULL is allowed. */
void api_close(struct api *a);

#endif /* KHO_API_H */

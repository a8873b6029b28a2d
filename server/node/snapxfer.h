/*
 * snapxfer.h - snapshots between nodes, streamed in bounded chunks.
 *
 * A raft SNAPSHOT message can carry a whole group's state machine (up to
 * STORE_SNAP_BYTES_MAX), far more than one peer frame may hold. The node
 * never sends one whole: when the core emits it, the sender copies the
 * payload and streams it in XFER_CHUNK_BYTES chunks (net_send_chunk), each
 * with the transfer's identity (group, snapshot index and term), its
 * offset, the total size and the CRC-32C of the whole payload; the first
 * chunk also carries the message itself without its payload (its "head").
 *
 * The receiver appends chunks that continue what it has and acknowledges
 * every chunk with how much it holds (net_send_chunk_ack). The sender keeps
 * at most XFER_WINDOW_BYTES unacknowledged; when acknowledgements stop for
 * XFER_STALL_MS it rewinds to what the receiver holds, so a transfer
 * interrupted by a broken link resumes where it stopped instead of starting
 * over. A transfer the receiver completes (size and CRC-32C right) becomes
 * the original SNAPSHOT message again, stepped into the group's core, which
 * installs it in one store transaction (data and applied index swap
 * atomically). While a group's snapshot is being sent, the node does not
 * compact that group's log, so the entries after the snapshot stay for the
 * follower to catch up from.
 *
 * Bounds: XFER_SENDS_MAX transfers out and XFER_RECVS_MAX in at once (a
 * new one takes the slot of the oldest idle one or is dropped - raft sends
 * the snapshot again); a transfer without progress for XFER_IDLE_MS is
 * dropped.
 *
 * Threads: the sending side (xfer_send, xfer_pump, xfer_on_ack,
 * xfer_sending) runs on the raft thread; the receiving side
 * (xfer_on_chunk) on the transport's receive thread, under its own lock.
 */
#ifndef KHO_NODE_SNAPXFER_H
#define KHO_NODE_SNAPXFER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../raft/raft.h"
#include "../transport/peer.h"

#define XFER_CHUNK_BYTES (1u << 20)
#define XFER_WINDOW_BYTES (8u << 20)
#define XFER_STALL_MS 1000u
#define XFER_IDLE_MS 30000u
#define XFER_SENDS_MAX 4u
#define XFER_RECVS_MAX 2u
/* Chunks one xfer_pump() call sends at most (per transfer). */
#define XFER_CHUNKS_PER_PUMP 8u

struct xfer;

/* Called on the receive thread with a completed snapshot: `b` holds the
 * SNAPSHOT message, whose payload `data` (len bytes, malloc'd) the callee
 * now owns. */
typedef void (*xfer_deliver_fn)(void *ctx, uint64_t from,
                                struct codec_batch *b, uint8_t *data);

int xfer_create(struct net *net, xfer_deliver_fn deliver, void *ctx,
                struct xfer **out);
void xfer_destroy(struct xfer *x);

/* Raft thread: starts (or continues, when the same transfer runs already)
 * sending SNAPSHOT message m. Errors: KHO_EBUSY (every slot busy),
 * KHO_ENOMEM, codec errors. */
int xfer_send(struct xfer *x, const struct raft_msg *m, uint64_t now_ms);
/* Raft thread: sends due chunks, rewinds stalled transfers, drops idle
 * ones. */
void xfer_pump(struct xfer *x, uint64_t now_ms);
/* Raft thread: an acknowledgement from node `from`. */
void xfer_on_ack(struct xfer *x, uint64_t from, const struct net_chunk_ack *a,
                 uint64_t now_ms);
/* Raft thread: drops the transfers of `group` (this node no longer leads
 * it: the new leader sends its own). */
void xfer_cancel(struct xfer *x, uint64_t group);
/* Raft thread: whether a snapshot of `group` is being sent. */
bool xfer_sending(const struct xfer *x, uint64_t group);

/* Receive thread: one chunk from node `from`. */
void xfer_on_chunk(struct xfer *x, uint64_t from, const struct net_chunk *c);

#endif /* KHO_NODE_SNAPXFER_H */

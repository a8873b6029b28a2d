/*
 * snapxfer.h - snapshots between nodes, streamed from LMDB in bounded
 * chunks.
 *
 * A group's snapshot is never a blob in memory. When the core emits a
 * SNAPSHOT message (whose payload is empty: the store's raft_storage gives
 * only its meta), xfer_send() hands it to the sender thread, which opens a
 * *source* on the group - in khod a store_snap_reader: one LMDB read
 * transaction, the group's state as of its applied index, with the stream's
 * exact size and CRC-32C computed by a first pass - and streams it in
 * XFER_CHUNK_BYTES chunks (net_send_chunk). Each chunk carries the
 * transfer's identity (group, snapshot index and term - those of the read
 * transaction, which may be past what the core asked for), its offset, the
 * total size and the CRC-32C; the first also carries the SNAPSHOT message
 * with the source's meta and no payload (its "head").
 *
 * The receiver queues chunks that continue what it has (at most
 * XFER_WINDOW_BYTES + one chunk per transfer) and a receiver thread feeds
 * them to a *sink* - in khod a store_stage, which writes the records under a
 * fresh data id in write transactions of its own - and acknowledges the
 * bytes written (net_send_chunk_ack). The sender keeps at most
 * XFER_WINDOW_BYTES unacknowledged; when acknowledgements stop for
 * XFER_STALL_MS it rewinds to what the receiver holds, so a transfer
 * interrupted by a broken link resumes where it stopped. When the sink has
 * the whole stream (size and CRC right) it gives a small descriptor, which
 * becomes the payload of the SNAPSHOT message delivered to the raft thread:
 * installing it is a swap of the group's data id in the store (O(1) in the
 * data size). A corrupt stream is refused (acknowledged with have = 0) and
 * sent again from the start. While a group's snapshot is being sent the
 * node does not compact that group's log.
 *
 * Bounds: XFER_SENDS_MAX transfers out and XFER_RECVS_MAX in at once (a new
 * one takes the slot of an older one of the same group, or of one idle for
 * XFER_STALL_MS, or is dropped - raft sends the snapshot again); a transfer
 * without progress for XFER_IDLE_MS is dropped.
 *
 * Threads: xfer_send, xfer_cancel and xfer_sending are for the raft thread;
 * xfer_on_ack and xfer_on_chunk for the transport's receive thread. The
 * sender thread does every source call, the receiver thread every sink
 * call, so neither reading a large group nor writing one ever runs on the
 * raft thread.
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
/* The most a sink's descriptor (the delivered SNAPSHOT's payload) holds. */
#define XFER_DESC_BYTES_MAX 64u
/* Chunks one pass of the sender sends at most per transfer, so that one
 * transfer cannot starve the others. */
#define XFER_CHUNKS_PER_PASS 8u

struct xfer;

/* Where snapshots come from and go to (the store in khod). Every call may
 * fail with a kho_err; the transfer is then dropped (source) or refused and
 * restarted (sink). */
struct xfer_store {
    void *ctx;
    /* Opens the current snapshot of `group`: its meta, stream size and
     * CRC-32C. Sender thread. */
    int (*src_open)(void *ctx, uint64_t group, void **h,
                    struct raft_snapshot_meta *meta, uint64_t *total,
                    uint32_t *crc);
    /* Stream bytes [offset, offset + cap) clipped at the total. */
    int (*src_read)(void *h, uint64_t offset, uint8_t *buf, size_t cap,
                    size_t *n);
    void (*src_close)(void *h);
    /* Receiver thread: starts taking a stream of `total` bytes. */
    int (*sink_begin)(void *ctx, uint64_t group, uint64_t index, uint64_t term,
                      uint64_t total, uint32_t crc, void **h);
    int (*sink_write)(void *h, const uint8_t *buf, size_t len);
    /* After the last byte: checks it and fills the descriptor. */
    int (*sink_finish)(void *h, uint8_t *desc, size_t cap, size_t *len);
    /* Frees the handle; an unfinished stream is discarded. */
    void (*sink_close)(void *h);
};

/* Called on the receiver thread with a complete snapshot: `b` holds the
 * SNAPSHOT message whose payload is the sink's descriptor (`desc`,
 * malloc'd, owned by the callee from now on). */
typedef void (*xfer_deliver_fn)(void *ctx, uint64_t from,
                                struct codec_batch *b, uint8_t *desc);

/*
 * Creates the transfers and, when `threads`, starts the sender and
 * receiver threads. Without threads (unit tests) nothing moves until the
 * caller calls xfer_run_send() / xfer_run_recv().
 * Errors: KHO_ENOMEM, KHO_EIO (a thread could not start).
 */
int xfer_create(struct net *net, const struct xfer_store *st,
                xfer_deliver_fn deliver, void *ctx, bool threads,
                struct xfer **out);
/* Stops the threads (before the transport closes: they send on it); the
 * receive-side calls stay safe and do nothing useful afterwards. NULL is
 * allowed. */
void xfer_stop(struct xfer *x);
/* Stops the threads and drops every transfer. NULL is allowed. */
void xfer_destroy(struct xfer *x);

/* Raft thread: starts sending SNAPSHOT message m (or lets the running
 * transfer of the same group to the same node, in the same term, go on).
 * Errors: KHO_EBUSY (every slot busy). */
int xfer_send(struct xfer *x, const struct raft_msg *m, uint64_t now_ms);
/* Raft thread: drops the transfers of `group` (this node no longer leads
 * it: the new leader sends its own). */
void xfer_cancel(struct xfer *x, uint64_t group);
/* Raft thread: whether a snapshot of `group` is being sent. */
bool xfer_sending(struct xfer *x, uint64_t group);

/* Receive thread: an acknowledgement from node `from`. */
void xfer_on_ack(struct xfer *x, uint64_t from, const struct net_chunk_ack *a,
                 uint64_t now_ms);
/* Receive thread: one chunk from node `from`. */
void xfer_on_chunk(struct xfer *x, uint64_t from, const struct net_chunk *c,
                   uint64_t now_ms);

/* One pass of each thread's work (what the threads loop on); returns
 * whether anything was done. For tests built without threads. */
bool xfer_run_send(struct xfer *x, uint64_t now_ms);
bool xfer_run_recv(struct xfer *x, uint64_t now_ms);

#endif /* KHO_NODE_SNAPXFER_H */

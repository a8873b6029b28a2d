/*
 * peer.h - NNG links between kho nodes.
 *
 * Each node listens on one PULL socket (its peer URL) and keeps one PUSH
 * socket per peer, dialing that peer's URL with NNG's own reconnect and
 * back-off. One NNG message carries a frame header and a raft_codec batch
 * holding the messages of every group for that peer (batched per node
 * pair). The PUSH socket's send buffer is the bounded outbound queue:
 * a send that would block is dropped and counted - Raft tolerates loss, and
 * a slow peer must never stall the raft thread.
 *
 * Frame (little-endian): u32 NET_MAGIC, u32 NET_VERSION, u64 cluster id,
 * u64 sender node id, then the codec batch. Frames from another cluster,
 * from ourselves, from an unknown node, or that fail decoding are dropped,
 * counted and logged; they never reach the raft core.
 */
#ifndef KHO_PEER_H
#define KHO_PEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../client/kho_err.h"
#include "../raft/raft.h"
#include "raft_codec.h"

#define NET_PEERS_MAX RAFT_MEMBERS_MAX
#define NET_URL_BYTES_MAX 256u
#define NET_MAGIC 0x50484b4bu /* "KKHP" */
#define NET_VERSION 1u
#define NET_FRAME_HEADER_BYTES 24u
/* Messages queued per peer before sends are dropped. */
#define NET_SEND_QUEUE_MSGS 256
/* Largest frame accepted (NNG_OPT_RECVMAXSZ on every listener and dialer). */
#define NET_FRAME_BYTES_MAX (CODEC_BATCH_BYTES_MAX + NET_FRAME_HEADER_BYTES)
/* Reconnect back-off bounds. */
#define NET_RECONNECT_MIN_MS 50
#define NET_RECONNECT_MAX_MS 1000

struct net;

struct net_stats {
    uint64_t sent_frames;
    uint64_t dropped_full;     /* outbound queue full or peer unreachable */
    uint64_t dropped_encode;   /* batch refused by the codec */
    uint64_t recv_frames;
    uint64_t dropped_bad;      /* bad header, cluster, sender or batch */
};

/* Called on the receive thread for every good frame; takes ownership of
 * `b` (release it with codec_batch_free()). */
typedef void (*net_recv_cb)(void *ctx, uint64_t from, struct codec_batch *b);

/*
 * Opens the listener on `listen_url` and starts the receive thread.
 * Errors: KHO_EINVAL (bad URL), KHO_EBUSY (address in use), KHO_EIO,
 * KHO_ENOMEM; a message in err.
 */
int net_open(uint64_t cluster_id, uint64_t self_id, const char *listen_url,
             net_recv_cb cb, void *cb_ctx, struct net **out, char *err,
             size_t err_len);

/* Adds a peer and starts dialing it in the background. Call it from the
 * thread that calls net_send (the receive thread may run meanwhile).
 * Errors: KHO_EINVAL, KHO_EBUSY
 * (NET_PEERS_MAX), KHO_EIO. */
int net_add_peer(struct net *n, uint64_t id, const char *url);

/* Encodes `count` messages (all to peer `to`) as one frame and queues it
 * without blocking. Errors: KHO_ENOTFOUND (unknown peer); a full queue or
 * an unreachable peer is KHO_OK with the frame counted as dropped. */
int net_send(struct net *n, uint64_t to, const struct raft_msg *msgs,
             size_t count);

void net_get_stats(struct net *n, struct net_stats *out);

/*
 * Snapshot chunks (server/node/snapxfer.h) travel in frames of their own:
 * the same header with NET_MAGIC_CHUNK, then (little-endian) u64 group,
 * u64 snapshot index, u64 snapshot term, u64 offset, u64 total, u32 crc of
 * the whole payload, u32 head_len, u32 len, u32 0, the head (only at
 * offset 0) and the chunk's bytes; their acknowledgements with
 * NET_MAGIC_ACK carry u64 group, index, term and the bytes held. Like
 * batches, they are checked (sizes, a known sender of our cluster) before
 * a callback sees them.
 */
#define NET_MAGIC_CHUNK 0x43484b4bu /* "KKHC" */
#define NET_MAGIC_ACK 0x41484b4bu   /* "KKHA" */
/* A beacon: the header alone. It says "this node is alive" to a node whose
 * quiet groups it leads (they send no heartbeats); receiving it only
 * refreshes the sender's recv_age_ms (net_peer_stats()). */
#define NET_MAGIC_BEACON 0x42484b4bu /* "KKHB" */
#define NET_CHUNK_HEADER_BYTES 56u
#define NET_CHUNK_HEAD_BYTES_MAX 4096u
#define NET_CHUNK_DATA_BYTES_MAX (2u << 20)
#define NET_ACK_BYTES 32u

struct net_chunk {
    uint64_t group, index, term, offset, total;
    uint32_t crc;
    const uint8_t *head; /* the message without payload; offset 0 only */
    size_t head_len;
    const uint8_t *data;
    size_t len;
};

struct net_chunk_ack {
    uint64_t group, index, term, have;
};

/* Called on the receive thread; the pointers live until they return. */
typedef void (*net_chunk_cb)(void *ctx, uint64_t from,
                             const struct net_chunk *c);
typedef void (*net_ack_cb)(void *ctx, uint64_t from,
                           const struct net_chunk_ack *a);

/* Sets the chunk callbacks: before the first net_add_peer() (frames from
 * unknown nodes are dropped, so none reaches a callback earlier). */
void net_set_chunk_handlers(struct net *n, net_chunk_cb chunk, net_ack_cb ack,
                            void *ctx);
/* Queue one chunk / acknowledgement without blocking (thread-safe: NNG
 * sockets are). Errors: KHO_ENOTFOUND (unknown peer), KHO_EINVAL (sizes). */
int net_send_chunk(struct net *n, uint64_t to, const struct net_chunk *c);
int net_send_chunk_ack(struct net *n, uint64_t to,
                       const struct net_chunk_ack *a);

/* Queues a beacon to node `to` without blocking (thread-safe).
 * Errors: KHO_ENOTFOUND (unknown peer). */
int net_send_beacon(struct net *n, uint64_t to);

/* One peer link, as this node sees it. */
struct net_peer_stats {
    uint64_t id;
    bool connected;          /* our dialer holds a connection to it */
    uint64_t sent_frames;    /* queued for it */
    uint64_t recv_frames;    /* good frames from it */
    uint64_t dropped_frames; /* not sent: queue full or link down */
    uint64_t recv_age_ms;    /* since its last good frame (UINT64_MAX: none) */
};

/* Copies the links of up to cap peers, in the order they were added;
 * returns how many peers there are. Thread-safe. */
size_t net_peer_stats(struct net *n, struct net_peer_stats *out, size_t cap);

/* Stops the receive thread and closes every socket. NULL is allowed. */
void net_close(struct net *n);

#endif /* KHO_PEER_H */

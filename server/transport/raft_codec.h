/*
 * raft_codec.h - the wire and storage encoding of raft messages and state.
 *
 * This is the only module that knows the protobuf schema in proto/raft.proto
 * (its .c file is the only one that includes the generated protobuf-c
 * header). Everything else works with the C structs of server/raft/raft.h.
 *
 * Decoding treats its input as hostile: it comes from a peer or from the
 * disk. The input size is capped before protobuf-c sees it, repeated-field
 * counts are checked by a wire-level pre-scan before anything is allocated,
 * and the unpacked messages are validated (enum values, term and index
 * ranges, node ids, limits) before they are handed out. Every failure is
 * KHO_ECORRUPT with a static reason in the optional `why` out-parameter;
 * no input can crash the decoder.
 *
 * Encoding validates with the same rules and refuses (KHO_EINVAL) what the
 * decoder would reject, so a kho node never sends what a kho node refuses.
 */
#ifndef KHO_RAFT_CODEC_H
#define KHO_RAFT_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "../../client/kho_err.h"
#include "../raft/raft.h"

/* --- Limits ------------------------------------------------------------ */

/* Largest encoded batch accepted or produced. It must hold one maximal
 * entry plus framing; the transport sets NNG_OPT_RECVMAXSZ to this. */
#define CODEC_BATCH_BYTES_MAX (96u << 20)
/* Messages in one batch (one batch may carry many groups' messages). */
#define CODEC_BATCH_MSGS_MAX 65536u
/* Entries across all messages of one batch. Together with the byte cap this
 * bounds what decoding allocates, whatever the input claims. */
#define CODEC_BATCH_ENTRIES_MAX (1u << 18)
/* Message flags the codec knows; any other bit is refused. */
#define CODEC_MSG_FLAGS_KNOWN (RAFT_MSGF_TRANSFER)
/* Encoded sizes of the stored records: three varints for a hard state;
 * two varints and a full configuration for snapshot metadata. */
#define CODEC_HARD_STATE_BYTES_MAX 64u
#define CODEC_SNAPSHOT_META_BYTES_MAX 2048u

_Static_assert(RAFT_ENTRY_BYTES_MAX + (1u << 20) <= CODEC_BATCH_BYTES_MAX,
               "a batch must fit one maximal entry and its framing");
_Static_assert(RAFT_MSG_ENTRIES_MAX <= CODEC_BATCH_ENTRIES_MAX,
               "a batch must fit one maximal append");
_Static_assert(CODEC_BATCH_BYTES_MAX <= UINT32_MAX,
               "batch sizes fit in 32 bits");

/* --- Messages ------------------------------------------------------------ */

/*
 * A decoded batch. It owns its messages, their entry arrays and every byte
 * their data pointers point at; codec_batch_free() releases all of it.
 */
struct codec_batch {
    struct raft_msg *msgs;
    size_t n;
    /* Private: the storage msgs point into. */
    struct raft_entry *entries_;
    uint8_t *bytes_;
};

/*
 * Encodes one message as a batch of one (the unit codec_batch_decode()
 * reads) into a malloc'd buffer that the caller frees.
 * Errors: KHO_EINVAL (the message would be refused by the decoder),
 * KHO_ETOOLARGE (over CODEC_BATCH_BYTES_MAX), KHO_ENOMEM.
 */
int codec_msg_encode(const struct raft_msg *m, uint8_t **out, size_t *len);

/*
 * Encodes `n` messages, possibly of many groups, as one batch into a
 * malloc'd buffer that the caller frees. Cost: O(n + entries), one pass
 * over the payload bytes.
 * Errors: KHO_EINVAL (n == 0, or a message the decoder would refuse),
 * KHO_ETOOLARGE (over CODEC_BATCH_MSGS_MAX messages,
 * CODEC_BATCH_ENTRIES_MAX entries or CODEC_BATCH_BYTES_MAX bytes),
 * KHO_ENOMEM.
 */
int codec_batch_encode(const struct raft_msg *msgs, size_t n, uint8_t **out,
                       size_t *len);

/*
 * Decodes a batch into `out`, which owns everything it points at (release
 * with codec_batch_free(), also safe after a failure). `buf` need not stay
 * valid afterwards. A batch has at least one message.
 * Errors: KHO_ECORRUPT (empty, oversized, malformed or invalid input; the
 * reason in *why when why != NULL), KHO_ENOMEM.
 */
int codec_batch_decode(const uint8_t *buf, size_t len, struct codec_batch *out,
                       const char **why);

void codec_batch_free(struct codec_batch *b);

/* --- Stored records ------------------------------------------------------ */

/*
 * Encodes a hard state into `buf` (cap bytes; CODEC_HARD_STATE_BYTES_MAX
 * always suffices) and sets *len. An all-zero hard state encodes to zero
 * bytes, and zero bytes decode to it.
 * Errors: KHO_EINVAL (term or commit out of range), KHO_ETOOLARGE (cap).
 */
int codec_hard_state_encode(const struct raft_hard_state *hs, uint8_t *buf,
                            size_t cap, size_t *len);

/* Errors: KHO_ECORRUPT (malformed, over CODEC_HARD_STATE_BYTES_MAX, or
 * term/commit out of range), KHO_ENOMEM. */
int codec_hard_state_decode(const uint8_t *buf, size_t len,
                            struct raft_hard_state *out, const char **why);

/*
 * Encodes snapshot metadata into `buf` (cap bytes;
 * CODEC_SNAPSHOT_META_BYTES_MAX always suffices) and sets *len.
 * Errors: KHO_EINVAL (index/term out of range, a bad configuration: too
 * many members, id 0, duplicate id, unknown role), KHO_ETOOLARGE (cap).
 */
int codec_snapshot_meta_encode(const struct raft_snapshot_meta *m, uint8_t *buf,
                               size_t cap, size_t *len);

/* Errors: KHO_ECORRUPT (malformed, over CODEC_SNAPSHOT_META_BYTES_MAX, or
 * invalid as for encoding), KHO_ENOMEM. */
int codec_snapshot_meta_decode(const uint8_t *buf, size_t len,
                               struct raft_snapshot_meta *out,
                               const char **why);

#endif /* KHO_RAFT_CODEC_H */

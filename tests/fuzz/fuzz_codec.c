/*
 * fuzz_codec.c - libFuzzer target for server/transport/raft_codec.
 *
 * Feeds arbitrary bytes to every decoder (batch, hard state, snapshot
 * metadata). Besides "never crash, leak or read out of bounds" (ASan and
 * UBSan watch), it checks that whatever decodes is valid by the encoder's
 * rules: it must re-encode, and decoding that encoding must give the same
 * values back. Run with `make fuzz`.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/kho_err.h"
#include "server/raft/raft.h"
#include "server/transport/raft_codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_codec: check failed: %s\n", #cond);          \
            abort();                                                           \
        }                                                                      \
    } while (0)

static bool bytes_equal(const uint8_t *a, const uint8_t *b, size_t len)
{
    return len == 0 || memcmp(a, b, len) == 0;
}

static bool meta_equal(const struct raft_snapshot_meta *a,
                       const struct raft_snapshot_meta *b)
{
    if (a->index != b->index || a->term != b->term || a->conf.n != b->conf.n) {
        return false;
    }
    for (uint32_t i = 0; i < a->conf.n; i++) {
        if (a->conf.members[i].id != b->conf.members[i].id ||
            a->conf.members[i].role != b->conf.members[i].role) {
            return false;
        }
    }
    return true;
}

static bool entry_equal(const struct raft_entry *a, const struct raft_entry *b)
{
    return a->term == b->term && a->index == b->index && a->type == b->type &&
           a->len == b->len && bytes_equal(a->data, b->data, a->len);
}

static bool msg_equal(const struct raft_msg *a, const struct raft_msg *b)
{
    if (a->group_id != b->group_id || a->type != b->type ||
        a->flags != b->flags || a->from != b->from || a->to != b->to ||
        a->term != b->term || a->log_term != b->log_term ||
        a->index != b->index || a->commit != b->commit || a->ctx != b->ctx ||
        a->hint_index != b->hint_index || a->hint_term != b->hint_term ||
        a->reject != b->reject || a->n_entries != b->n_entries) {
        return false;
    }
    for (uint32_t i = 0; i < a->n_entries; i++) {
        if (!entry_equal(&a->entries[i], &b->entries[i])) {
            return false;
        }
    }
    return meta_equal(&a->snapshot.meta, &b->snapshot.meta) &&
           a->snapshot.len == b->snapshot.len &&
           bytes_equal(a->snapshot.data, b->snapshot.data, a->snapshot.len);
}

static void fuzz_batch(const uint8_t *data, size_t size)
{
    struct codec_batch b;
    struct codec_batch again;
    uint8_t *enc = NULL;
    size_t len = 0;
    const char *why = NULL;
    int rc = codec_batch_decode(data, size, &b, &why);
    if (rc != KHO_OK) {
        FUZZ_CHECK(rc == KHO_ECORRUPT && why != NULL);
        codec_batch_free(&b);
        return;
    }
    FUZZ_CHECK(b.n > 0);
    FUZZ_CHECK(codec_batch_encode(b.msgs, b.n, &enc, &len) == KHO_OK);
    FUZZ_CHECK(codec_batch_decode(enc, len, &again, NULL) == KHO_OK);
    FUZZ_CHECK(again.n == b.n);
    for (size_t i = 0; i < b.n; i++) {
        FUZZ_CHECK(msg_equal(&b.msgs[i], &again.msgs[i]));
    }
    codec_batch_free(&again);
    codec_batch_free(&b);
    free(enc);
}

static void fuzz_hard_state(const uint8_t *data, size_t size)
{
    struct raft_hard_state hs;
    struct raft_hard_state again;
    uint8_t buf[CODEC_HARD_STATE_BYTES_MAX];
    size_t len;
    if (codec_hard_state_decode(data, size, &hs, NULL) != KHO_OK) {
        return;
    }
    FUZZ_CHECK(codec_hard_state_encode(&hs, buf, sizeof(buf), &len) == KHO_OK);
    FUZZ_CHECK(codec_hard_state_decode(buf, len, &again, NULL) == KHO_OK);
    FUZZ_CHECK(hs.term == again.term && hs.vote == again.vote &&
               hs.commit == again.commit);
}

static void fuzz_snapshot_meta(const uint8_t *data, size_t size)
{
    struct raft_snapshot_meta m;
    struct raft_snapshot_meta again;
    uint8_t buf[CODEC_SNAPSHOT_META_BYTES_MAX];
    size_t len;
    if (codec_snapshot_meta_decode(data, size, &m, NULL) != KHO_OK) {
        return;
    }
    FUZZ_CHECK(codec_snapshot_meta_encode(&m, buf, sizeof(buf), &len) ==
               KHO_OK);
    FUZZ_CHECK(codec_snapshot_meta_decode(buf, len, &again, NULL) == KHO_OK);
    FUZZ_CHECK(meta_equal(&m, &again));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_batch(data, size);
    fuzz_hard_state(data, size);
    fuzz_snapshot_meta(data, size);
    return 0;
}

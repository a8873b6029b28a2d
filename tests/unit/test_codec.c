/*
 * test_codec.c - proves that server/transport/raft_codec is a faithful and
 * hostile-input-safe translation between raft structs and bytes:
 *
 *   - every message type, with entries and a snapshot, and batches of many
 *     groups' messages survive encode/decode unchanged, as do hard states
 *     and snapshot metadata, including values at their limits;
 *   - zero-length, truncated, wrongly typed, garbage, oversized and
 *     out-of-range input (huge repeated counts, terms of 2^64-1, unknown
 *     enum values, too many members, node id 0) is refused with
 *     KHO_ECORRUPT and a reason, and never crashes (run under ASan/UBSan by
 *     `make test`);
 *   - the encoder refuses what the decoder would refuse (KHO_EINVAL);
 *   - the quiesce flag of a heartbeat round-trips, is false when a sender
 *     that predates it leaves it out, and is refused on any other type.
 *
 * Malformed input is written by hand with the small protobuf writer below,
 * so the tests do not depend on the generated code they are checking.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "client/kho_err.h"
#include "server/raft/raft.h"
#include "server/transport/raft_codec.h"

/* Field numbers from proto/raft.proto, for hand-written input. */
enum {
    F_BATCH_MSGS = 1,
    F_MSG_GROUP = 1,
    F_MSG_TYPE = 2,
    F_MSG_FLAGS = 3,
    F_MSG_FROM = 4,
    F_MSG_TO = 5,
    F_MSG_TERM = 6,
    F_MSG_LOG_TERM = 7,
    F_MSG_INDEX = 8,
    F_MSG_COMMIT = 9,
    F_MSG_HINT_INDEX = 11,
    F_MSG_HINT_TERM = 12,
    F_MSG_ENTRIES = 14,
    F_MSG_META = 15,
    F_MSG_QUIESCE = 17,
    F_ENTRY_TERM = 1,
    F_ENTRY_INDEX = 2,
    F_ENTRY_TYPE = 3,
    F_META_INDEX = 1,
    F_META_TERM = 2,
    F_META_CONF = 3,
    F_CONF_MEMBERS = 1,
    F_MEMBER_ID = 1,
    F_MEMBER_ROLE = 2,
    F_HS_TERM = 1,
    F_HS_COMMIT = 3,
};

enum { WT_VARINT = 0, WT_64 = 1, WT_LEN = 2, WT_START_GROUP = 3, WT_32 = 5 };

/* --- A minimal protobuf writer ------------------------------------------- */

struct wbuf {
    uint8_t *b;
    size_t n;
    size_t cap;
};

static void w_byte(struct wbuf *w, uint8_t v)
{
    if (w->n == w->cap) {
        w->cap = w->cap ? w->cap * 2 : 256;
        w->b = realloc(w->b, w->cap);
        assert_non_null(w->b);
    }
    w->b[w->n++] = v;
}

static void w_varint(struct wbuf *w, uint64_t v)
{
    while (v >= 0x80) {
        w_byte(w, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    w_byte(w, (uint8_t)v);
}

static void w_key(struct wbuf *w, uint32_t field, uint32_t wire)
{
    w_varint(w, ((uint64_t)field << 3) | wire);
}

static void w_u64(struct wbuf *w, uint32_t field, uint64_t v)
{
    w_key(w, field, WT_VARINT);
    w_varint(w, v);
}

static void w_raw(struct wbuf *w, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        w_byte(w, p[i]);
    }
}

/* Appends `sub` as a length-delimited field and frees it. */
static void w_sub(struct wbuf *w, uint32_t field, struct wbuf *sub)
{
    w_key(w, field, WT_LEN);
    w_varint(w, sub->n);
    w_raw(w, sub->b, sub->n);
    free(sub->b);
    memset(sub, 0, sizeof(*sub));
}

static void w_free(struct wbuf *w)
{
    free(w->b);
    memset(w, 0, sizeof(*w));
}

/* A valid heartbeat, to which a test appends the field it wants to break:
 * for a scalar field, protobuf keeps the last value seen. */
static void w_base_msg(struct wbuf *m)
{
    w_u64(m, F_MSG_GROUP, 7);
    w_u64(m, F_MSG_TYPE, RAFT_MSG_HEARTBEAT);
    w_u64(m, F_MSG_FROM, 1);
    w_u64(m, F_MSG_TO, 2);
    w_u64(m, F_MSG_TERM, 3);
}

/* Wraps one message body into a batch. */
static void w_batch_of(struct wbuf *batch, struct wbuf *msg)
{
    w_sub(batch, F_BATCH_MSGS, msg);
}

/* --- Helpers ------------------------------------------------------------- */

/* Expects KHO_ECORRUPT with a reason containing `want` (any if NULL), so
 * each test proves the input was refused for the reason it was built for. */
static void expect_corrupt(const uint8_t *buf, size_t len, const char *want)
{
    struct codec_batch b;
    const char *why = NULL;
    int rc = codec_batch_decode(buf, len, &b, &why);
    if (rc != KHO_ECORRUPT) {
        fail_msg("decode of %zu bytes returned %s, expected KHO_ECORRUPT", len,
                 kho_errname(rc));
    }
    assert_non_null(why);
    if (want != NULL && strstr(why, want) == NULL) {
        fail_msg("refused because \"%s\", expected \"%s\"", why, want);
    }
    assert_null(b.msgs); /* nothing is left owned */
    assert_int_equal(b.n, 0);
    codec_batch_free(&b);
}

static void expect_corrupt_wbuf(struct wbuf *w, const char *want)
{
    expect_corrupt(w->b, w->n, want);
    w_free(w);
}

/* Breaks a valid base message with one extra field and expects rejection. */
static void expect_corrupt_with_field(uint32_t field, uint64_t v,
                                      const char *want)
{
    struct wbuf msg = {0};
    struct wbuf batch = {0};
    w_base_msg(&msg);
    w_u64(&msg, field, v);
    w_batch_of(&batch, &msg);
    expect_corrupt_wbuf(&batch, want);
}

static void assert_entry_equal(const struct raft_entry *a,
                               const struct raft_entry *b)
{
    assert_int_equal(a->term, b->term);
    assert_int_equal(a->index, b->index);
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->len, b->len);
    if (a->len > 0) {
        assert_memory_equal(a->data, b->data, a->len);
    }
}

static void assert_meta_equal(const struct raft_snapshot_meta *a,
                              const struct raft_snapshot_meta *b)
{
    assert_int_equal(a->index, b->index);
    assert_int_equal(a->term, b->term);
    assert_int_equal(a->conf.n, b->conf.n);
    for (uint32_t i = 0; i < a->conf.n; i++) {
        assert_int_equal(a->conf.members[i].id, b->conf.members[i].id);
        assert_int_equal(a->conf.members[i].role, b->conf.members[i].role);
    }
}

static void assert_msg_equal(const struct raft_msg *a, const struct raft_msg *b)
{
    assert_int_equal(a->group_id, b->group_id);
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->flags, b->flags);
    assert_int_equal(a->from, b->from);
    assert_int_equal(a->to, b->to);
    assert_int_equal(a->term, b->term);
    assert_int_equal(a->log_term, b->log_term);
    assert_int_equal(a->index, b->index);
    assert_int_equal(a->commit, b->commit);
    assert_int_equal(a->ctx, b->ctx);
    assert_int_equal(a->hint_index, b->hint_index);
    assert_int_equal(a->hint_term, b->hint_term);
    assert_int_equal(a->reject, b->reject);
    assert_int_equal(a->quiesce, b->quiesce);
    assert_int_equal(a->n_entries, b->n_entries);
    for (uint32_t i = 0; i < a->n_entries; i++) {
        assert_entry_equal(&a->entries[i], &b->entries[i]);
    }
    assert_meta_equal(&a->snapshot.meta, &b->snapshot.meta);
    assert_int_equal(a->snapshot.len, b->snapshot.len);
    if (a->snapshot.len > 0) {
        assert_memory_equal(a->snapshot.data, b->snapshot.data,
                            a->snapshot.len);
    }
}

static uint8_t payload_a[] = "put citizen/079123456789 {\"name\":\"Nguyen\"}";
static uint8_t payload_b[] = {0x00, 0xff, 0x80, 0x01};
static uint8_t snap_data[] = "state machine bytes of group 7";

/* Fills a message of `type` using every field, with values distinct per
 * field so a swapped field shows. */
static void make_msg(struct raft_msg *m, uint32_t type,
                     struct raft_entry ents[3])
{
    memset(m, 0, sizeof(*m));
    m->group_id = 0x1122334455667788u;
    m->type = type;
    m->flags = type == RAFT_MSG_VOTE ? RAFT_MSGF_TRANSFER : 0;
    m->from = 3;
    m->to = 5;
    m->term = 9;
    m->log_term = 8;
    m->index = 100 + type;
    m->commit = 99;
    m->ctx = UINT64_MAX; /* opaque: the whole range is legal */
    m->hint_index = 41;
    m->hint_term = 4;
    m->reject = (type % 2) == 0;
    m->quiesce = type == RAFT_MSG_HEARTBEAT; /* the only type allowed it */
    ents[0] = (struct raft_entry){9, 101, RAFT_ENTRY_NORMAL,
                                  sizeof(payload_a) - 1, payload_a};
    ents[1] = (struct raft_entry){9, 102, RAFT_ENTRY_NOOP, 0, NULL};
    ents[2] = (struct raft_entry){9, 103, RAFT_ENTRY_CONF, sizeof(payload_b),
                                  payload_b};
    m->n_entries = 3;
    m->entries = ents;
    m->snapshot.meta.index = 50;
    m->snapshot.meta.term = 6;
    m->snapshot.meta.conf.n = 3;
    m->snapshot.meta.conf.members[0] = (struct raft_member){3, RAFT_VOTER};
    m->snapshot.meta.conf.members[1] = (struct raft_member){5, RAFT_VOTER};
    m->snapshot.meta.conf.members[2] = (struct raft_member){9, RAFT_LEARNER};
    m->snapshot.data = snap_data;
    m->snapshot.len = sizeof(snap_data);
}

static void roundtrip_batch(const struct raft_msg *msgs, size_t n)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    struct codec_batch b;
    const char *why = NULL;
    if (n == 1) {
        assert_int_equal(codec_msg_encode(msgs, &buf, &len), KHO_OK);
    } else {
        assert_int_equal(codec_batch_encode(msgs, n, &buf, &len), KHO_OK);
    }
    int rc = codec_batch_decode(buf, len, &b, &why);
    if (rc != KHO_OK) {
        fail_msg("decode: %s (%s)", kho_errname(rc), why);
    }
    assert_int_equal(b.n, n);
    for (size_t i = 0; i < n; i++) {
        assert_msg_equal(&msgs[i], &b.msgs[i]);
    }
    codec_batch_free(&b);
    free(buf);
}

/* A deterministic PRNG (xorshift64*) for the garbage tests. */
static uint64_t prng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

/* --- Round trips -----------------------------------------------------------
 */

static void test_roundtrip_every_type(void **state)
{
    for (uint32_t t = RAFT_MSG_APPEND; t <= RAFT_MSG_TYPE_MAX_; t++) {
        struct raft_msg m;
        struct raft_entry ents[3];
        make_msg(&m, t, ents);
        roundtrip_batch(&m, 1);
        /* And bare: no entries, no snapshot, zero optional fields. */
        memset(&m, 0, sizeof(m));
        m.type = t;
        m.from = 1;
        m.to = 2;
        roundtrip_batch(&m, 1);
    }
}

static void test_roundtrip_batch_of_groups(void **state)
{
    enum { N = 64 };
    struct raft_msg msgs[N];
    struct raft_entry ents[N][3];
    for (size_t i = 0; i < N; i++) {
        make_msg(&msgs[i], RAFT_MSG_APPEND + (uint32_t)(i % 10), ents[i]);
        msgs[i].group_id = i;
        msgs[i].n_entries = (uint32_t)(i % 4);
    }
    roundtrip_batch(msgs, N);
}

static void test_roundtrip_limits(void **state)
{
    struct raft_msg m;
    struct raft_entry one[3];
    make_msg(&m, RAFT_MSG_APPEND, one);
    struct raft_entry *ents = calloc(RAFT_MSG_ENTRIES_MAX, sizeof(*ents));
    assert_non_null(ents);
    for (uint32_t i = 0; i < RAFT_MSG_ENTRIES_MAX; i++) {
        ents[i] = (struct raft_entry){RAFT_TERM_MAX, RAFT_INDEX_MAX,
                                      RAFT_ENTRY_NORMAL, 1, payload_b};
    }
    m.entries = ents;
    m.n_entries = RAFT_MSG_ENTRIES_MAX;
    m.term = m.log_term = m.hint_term = RAFT_TERM_MAX;
    m.index = m.commit = m.hint_index = RAFT_INDEX_MAX;
    m.from = m.to = UINT64_MAX;
    m.snapshot.meta.index = RAFT_INDEX_MAX;
    m.snapshot.meta.term = RAFT_TERM_MAX;
    m.snapshot.meta.conf.n = RAFT_MEMBERS_MAX;
    for (uint32_t i = 0; i < RAFT_MEMBERS_MAX; i++) {
        m.snapshot.meta.conf.members[i] =
            (struct raft_member){UINT64_MAX - i, RAFT_LEARNER};
    }
    roundtrip_batch(&m, 1);
    free(ents);
}

static void test_roundtrip_hard_state(void **state)
{
    const struct raft_hard_state cases[] = {
        {0, 0, 0},
        {1, 2, 3},
        {RAFT_TERM_MAX, UINT64_MAX, RAFT_INDEX_MAX},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t buf[CODEC_HARD_STATE_BYTES_MAX];
        size_t len;
        struct raft_hard_state out;
        assert_int_equal(
            codec_hard_state_encode(&cases[i], buf, sizeof(buf), &len), KHO_OK);
        assert_int_equal(codec_hard_state_decode(buf, len, &out, NULL), KHO_OK);
        assert_int_equal(out.term, cases[i].term);
        assert_int_equal(out.vote, cases[i].vote);
        assert_int_equal(out.commit, cases[i].commit);
    }
}

static void test_roundtrip_snapshot_meta(void **state)
{
    struct raft_snapshot_meta m = {0};
    struct raft_snapshot_meta out;
    uint8_t buf[CODEC_SNAPSHOT_META_BYTES_MAX];
    size_t len;
    /* Empty (no snapshot yet) and maximal. */
    assert_int_equal(codec_snapshot_meta_encode(&m, buf, sizeof(buf), &len),
                     KHO_OK);
    assert_int_equal(codec_snapshot_meta_decode(buf, len, &out, NULL), KHO_OK);
    assert_meta_equal(&m, &out);
    m.index = RAFT_INDEX_MAX;
    m.term = RAFT_TERM_MAX;
    m.conf.n = RAFT_MEMBERS_MAX;
    for (uint32_t i = 0; i < RAFT_MEMBERS_MAX; i++) {
        m.conf.members[i] = (struct raft_member){UINT64_MAX - i, RAFT_VOTER};
    }
    assert_int_equal(codec_snapshot_meta_encode(&m, buf, sizeof(buf), &len),
                     KHO_OK);
    assert_int_equal(codec_snapshot_meta_decode(buf, len, &out, NULL), KHO_OK);
    assert_meta_equal(&m, &out);
    /* A buffer one byte short is refused, not overrun. */
    assert_int_equal(codec_snapshot_meta_encode(&m, buf, len - 1, &len),
                     KHO_ETOOLARGE);
}

/* Fields a newer version might add are skipped, as protobuf intends. */
static void test_unknown_fields_skipped(void **state)
{
    struct wbuf msg = {0};
    struct wbuf batch = {0};
    struct codec_batch b;
    w_base_msg(&msg);
    w_u64(&msg, 100, 12345);
    w_key(&msg, 101, WT_32);
    w_raw(&msg, (const uint8_t *)"abcd", 4);
    w_batch_of(&batch, &msg);
    w_u64(&batch, 2, 1); /* unknown batch-level field */
    assert_int_equal(codec_batch_decode(batch.b, batch.n, &b, NULL), KHO_OK);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.msgs[0].term, 3);
    codec_batch_free(&b);
    w_free(&batch);
}

/* --- Rejections ------------------------------------------------------------
 */

static void test_reject_zero_length(void **state)
{
    static const uint8_t one = 0;
    expect_corrupt(&one, 0, "empty batch");
    expect_corrupt(NULL, 0, "empty batch");
}

static void test_reject_every_truncation(void **state)
{
    struct raft_msg m;
    struct raft_entry ents[3];
    uint8_t *buf;
    size_t len;
    make_msg(&m, RAFT_MSG_SNAPSHOT, ents);
    assert_int_equal(codec_msg_encode(&m, &buf, &len), KHO_OK);
    /* A batch of one message is one field spanning the whole buffer, so
     * every proper prefix is truncated somewhere. */
    for (size_t cut = 1; cut < len; cut++) {
        uint8_t *copy = malloc(cut); /* exact size: ASan sees any overread */
        assert_non_null(copy);
        memcpy(copy, buf, cut);
        expect_corrupt(copy, cut, "malformed");
        free(copy);
    }
    free(buf);
}

static void test_reject_truncated_varint(void **state)
{
    /* Top level: a length prefix cut short. */
    static const uint8_t top[] = {0x0a, 0x80};
    expect_corrupt(top, sizeof(top), "malformed");
    /* Inside a message: the term's varint never ends. */
    struct wbuf msg = {0};
    struct wbuf batch = {0};
    w_base_msg(&msg);
    w_key(&msg, F_MSG_TERM, WT_VARINT);
    w_byte(&msg, 0xff);
    w_byte(&msg, 0xff);
    w_batch_of(&batch, &msg);
    expect_corrupt_wbuf(&batch, "malformed protobuf in a message");
    /* An eleven-byte varint (more than 64 bits). */
    static const uint8_t wide[] = {0x0a, 0x0c, 0x08, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    expect_corrupt(wide, sizeof(wide), "malformed");
}

static void test_reject_wrong_wire_type(void **state)
{
    struct wbuf w = {0};
    /* Batch.msgs as a varint. */
    w_u64(&w, F_BATCH_MSGS, 5);
    expect_corrupt_wbuf(&w, "wrong wire type for messages");
    /* Message.term as a length-delimited field. */
    struct wbuf msg = {0};
    struct wbuf sub = {0};
    w_base_msg(&msg);
    w_byte(&sub, 1);
    w_sub(&msg, F_MSG_TERM, &sub);
    w_batch_of(&w, &msg);
    expect_corrupt_wbuf(&w, "malformed protobuf");
    /* Message.entries as a fixed64. */
    w_base_msg(&msg);
    w_key(&msg, F_MSG_ENTRIES, WT_64);
    w_raw(&msg, (const uint8_t *)"12345678", 8);
    w_batch_of(&w, &msg);
    expect_corrupt_wbuf(&w, "wrong wire type for entries");
    /* The deprecated group wire type, and the undefined types 6 and 7. */
    for (uint32_t wt = WT_START_GROUP; wt <= 7; wt++) {
        if (wt == WT_32) {
            continue;
        }
        w_key(&w, F_BATCH_MSGS, wt);
        w_byte(&w, 0);
        expect_corrupt_wbuf(&w, "malformed protobuf in a batch");
    }
    /* Field number 0. */
    w_byte(&w, 0x00);
    w_byte(&w, 0x00);
    expect_corrupt_wbuf(&w, "malformed protobuf in a batch");
}

static void test_reject_garbage(void **state)
{
    static const uint8_t ff[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0xff};
    static const char text[] = "GET / HTTP/1.1\r\nHost: kho\r\n\r\n";
    expect_corrupt(ff, sizeof(ff), "malformed");
    expect_corrupt((const uint8_t *)text, sizeof(text) - 1, NULL);

    /* Random buffers may decode by chance, but only into valid messages. */
    const uint64_t seed = 0x6b686f; /* fixed, so a failure replays */
    uint64_t s = seed;
    size_t accepted = 0;
    for (int i = 0; i < 20000; i++) {
        uint8_t buf[256];
        size_t len = 1 + prng_next(&s) % sizeof(buf);
        for (size_t j = 0; j < len; j++) {
            buf[j] = (uint8_t)prng_next(&s);
        }
        struct codec_batch b;
        int rc = codec_batch_decode(buf, len, &b, NULL);
        if (rc != KHO_OK && rc != KHO_ECORRUPT) {
            fail_msg("seed %llu iteration %d: %s", (unsigned long long)seed, i,
                     kho_errname(rc));
        }
        if (rc == KHO_OK) {
            uint8_t *enc;
            size_t enc_len;
            assert_int_equal(codec_batch_encode(b.msgs, b.n, &enc, &enc_len),
                             KHO_OK);
            free(enc);
            accepted++;
        }
        codec_batch_free(&b);
    }
    print_message("garbage: seed %llu, %zu of 20000 decoded as valid\n",
                  (unsigned long long)seed, accepted);
}

/* Every single-byte corruption of a valid batch is refused or decodes into
 * something valid: no corruption reaches the core unvalidated. */
static void test_reject_or_accept_every_byte_flip(void **state)
{
    struct raft_msg m;
    struct raft_entry ents[3];
    uint8_t *buf;
    size_t len;
    make_msg(&m, RAFT_MSG_APPEND, ents);
    assert_int_equal(codec_msg_encode(&m, &buf, &len), KHO_OK);
    for (size_t i = 0; i < len; i++) {
        static const uint8_t xors[] = {0x01, 0x80, 0xff};
        for (size_t k = 0; k < sizeof(xors); k++) {
            struct codec_batch b;
            buf[i] ^= xors[k];
            int rc = codec_batch_decode(buf, len, &b, NULL);
            assert_true(rc == KHO_OK || rc == KHO_ECORRUPT);
            if (rc == KHO_OK) {
                uint8_t *enc;
                size_t enc_len;
                assert_int_equal(
                    codec_batch_encode(b.msgs, b.n, &enc, &enc_len), KHO_OK);
                free(enc);
            }
            codec_batch_free(&b);
            buf[i] ^= xors[k];
        }
    }
    free(buf);
}

static void test_reject_huge_counts_and_sizes(void **state)
{
    struct wbuf w = {0};
    struct wbuf msg = {0};

    /* One message more than a batch may carry (each an empty body). */
    for (uint32_t i = 0; i <= CODEC_BATCH_MSGS_MAX; i++) {
        w_key(&w, F_BATCH_MSGS, WT_LEN);
        w_varint(&w, 0);
    }
    expect_corrupt_wbuf(&w, "too many messages in a batch");

    /* One entry more than a message may carry. */
    w_base_msg(&msg);
    for (uint32_t i = 0; i <= RAFT_MSG_ENTRIES_MAX; i++) {
        w_key(&msg, F_MSG_ENTRIES, WT_LEN);
        w_varint(&msg, 0);
    }
    w_batch_of(&w, &msg);
    expect_corrupt_wbuf(&w, "too many entries in a message");

    /* More entries in a batch than CODEC_BATCH_ENTRIES_MAX, each message
     * within its own limit. */
    for (uint32_t k = 0; k <= CODEC_BATCH_ENTRIES_MAX / RAFT_MSG_ENTRIES_MAX;
         k++) {
        w_base_msg(&msg);
        for (uint32_t i = 0; i < RAFT_MSG_ENTRIES_MAX; i++) {
            w_key(&msg, F_MSG_ENTRIES, WT_LEN);
            w_varint(&msg, 0);
        }
        w_batch_of(&w, &msg);
    }
    expect_corrupt_wbuf(&w, "too many entries in a batch");

    /* A length prefix claiming far more bytes than there are. */
    w_key(&w, F_BATCH_MSGS, WT_LEN);
    w_varint(&w, UINT64_C(1) << 40);
    w_raw(&w, (const uint8_t *)"short", 5);
    expect_corrupt_wbuf(&w, "malformed protobuf in a batch");

    /* A bytes field claiming 2^63 bytes inside a message. */
    w_base_msg(&msg);
    w_key(&msg, 16, WT_LEN);
    w_varint(&msg, UINT64_C(1) << 63);
    w_batch_of(&w, &msg);
    expect_corrupt_wbuf(&w, "malformed protobuf in a message");

    /* Input over CODEC_BATCH_BYTES_MAX is refused before it is parsed. */
    size_t big = (size_t)CODEC_BATCH_BYTES_MAX + 1;
    uint8_t *huge = calloc(big, 1);
    assert_non_null(huge);
    expect_corrupt(huge, big, "over CODEC_BATCH_BYTES_MAX");
    free(huge);
}

static void test_reject_out_of_range_terms_and_indexes(void **state)
{
    const uint64_t bad[] = {UINT64_MAX, RAFT_TERM_MAX + 1};
    const uint32_t fields[] = {F_MSG_TERM,  F_MSG_LOG_TERM, F_MSG_HINT_TERM,
                               F_MSG_INDEX, F_MSG_COMMIT,   F_MSG_HINT_INDEX};
    _Static_assert(RAFT_TERM_MAX == RAFT_INDEX_MAX, "one bound for both");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        for (size_t f = 0; f < sizeof(fields) / sizeof(fields[0]); f++) {
            expect_corrupt_with_field(fields[f], bad[i], "out of range");
        }
        /* In an entry. */
        for (uint32_t ef = F_ENTRY_TERM; ef <= F_ENTRY_INDEX; ef++) {
            struct wbuf entry = {0};
            struct wbuf msg = {0};
            struct wbuf batch = {0};
            w_u64(&entry, ef, bad[i]);
            w_base_msg(&msg);
            w_sub(&msg, F_MSG_ENTRIES, &entry);
            w_batch_of(&batch, &msg);
            expect_corrupt_wbuf(&batch, ef == F_ENTRY_TERM
                                            ? "entry term out of range"
                                            : "entry index out of range");
        }
        /* In snapshot metadata. */
        for (uint32_t mf = F_META_INDEX; mf <= F_META_TERM; mf++) {
            struct wbuf meta = {0};
            struct wbuf msg = {0};
            struct wbuf batch = {0};
            w_u64(&meta, mf, bad[i]);
            w_base_msg(&msg);
            w_sub(&msg, F_MSG_META, &meta);
            w_batch_of(&batch, &msg);
            expect_corrupt_wbuf(&batch, mf == F_META_TERM
                                            ? "snapshot term out of range"
                                            : "snapshot index out of range");
        }
    }
}

static void test_reject_unknown_enums_and_flags(void **state)
{
    /* Message type: UNSPECIFIED, one past the last, negative, huge. */
    expect_corrupt_with_field(F_MSG_TYPE, 0, "unknown message type");
    expect_corrupt_with_field(F_MSG_TYPE, RAFT_MSG_TYPE_MAX_ + 1,
                              "unknown message type");
    expect_corrupt_with_field(F_MSG_TYPE, UINT64_MAX,
                              "unknown message type"); /* int32 -1 */
    expect_corrupt_with_field(F_MSG_TYPE, UINT64_C(1) << 35,
                              "unknown message type");
    /* A flag bit nobody defined. */
    expect_corrupt_with_field(F_MSG_FLAGS, 1u << 31, "unknown message flags");

    /* Entry type. */
    const uint64_t entry_types[] = {RAFT_ENTRY_CONF + 1, UINT64_MAX};
    for (size_t i = 0; i < 2; i++) {
        struct wbuf entry = {0};
        struct wbuf msg = {0};
        struct wbuf batch = {0};
        w_u64(&entry, F_ENTRY_TYPE, entry_types[i]);
        w_base_msg(&msg);
        w_sub(&msg, F_MSG_ENTRIES, &entry);
        w_batch_of(&batch, &msg);
        expect_corrupt_wbuf(&batch, "unknown entry type");
    }

    /* Member role: UNSPECIFIED and unknown. */
    const uint64_t roles[] = {0, RAFT_LEARNER + 1, UINT64_MAX};
    for (size_t i = 0; i < 3; i++) {
        struct wbuf member = {0};
        struct wbuf conf = {0};
        struct wbuf meta = {0};
        struct wbuf msg = {0};
        struct wbuf batch = {0};
        w_u64(&member, F_MEMBER_ID, 4);
        w_u64(&member, F_MEMBER_ROLE, roles[i]);
        w_sub(&conf, F_CONF_MEMBERS, &member);
        w_sub(&meta, F_META_CONF, &conf);
        w_base_msg(&msg);
        w_sub(&msg, F_MSG_META, &meta);
        w_batch_of(&batch, &msg);
        expect_corrupt_wbuf(&batch, "unknown member role");
    }
}

/* Builds a batch whose snapshot configuration has `n` voters with the ids
 * given by id_of(i). */
static void w_batch_with_members(struct wbuf *batch, uint32_t n,
                                 uint64_t (*id_of)(uint32_t))
{
    struct wbuf conf = {0};
    struct wbuf meta = {0};
    struct wbuf msg = {0};
    for (uint32_t i = 0; i < n; i++) {
        struct wbuf member = {0};
        w_u64(&member, F_MEMBER_ID, id_of(i));
        w_u64(&member, F_MEMBER_ROLE, RAFT_VOTER);
        w_sub(&conf, F_CONF_MEMBERS, &member);
    }
    w_sub(&meta, F_META_CONF, &conf);
    w_base_msg(&msg);
    w_sub(&msg, F_MSG_META, &meta);
    w_batch_of(batch, &msg);
}

static uint64_t id_plus_one(uint32_t i)
{
    return i + 1;
}

static uint64_t id_zero_at_3(uint32_t i)
{
    return i == 3 ? 0 : i + 1;
}

static uint64_t id_same(uint32_t i)
{
    return 42;
}

static void test_reject_bad_members(void **state)
{
    struct wbuf batch = {0};
    struct codec_batch b;
    /* The limit itself is fine... */
    w_batch_with_members(&batch, RAFT_MEMBERS_MAX, id_plus_one);
    assert_int_equal(codec_batch_decode(batch.b, batch.n, &b, NULL), KHO_OK);
    assert_int_equal(b.msgs[0].snapshot.meta.conf.n, RAFT_MEMBERS_MAX);
    codec_batch_free(&b);
    w_free(&batch);
    /* ...one more is not, nor a huge count, nor id 0, nor duplicates. */
    w_batch_with_members(&batch, RAFT_MEMBERS_MAX + 1, id_plus_one);
    expect_corrupt_wbuf(&batch, "too many members");
    w_batch_with_members(&batch, 10000, id_plus_one);
    expect_corrupt_wbuf(&batch, "too many members");
    w_batch_with_members(&batch, 5, id_zero_at_3);
    expect_corrupt_wbuf(&batch, "member id 0");
    w_batch_with_members(&batch, 2, id_same);
    expect_corrupt_wbuf(&batch, "duplicate member id");
    /* Members spread over two occurrences of the metadata are merged by
     * protobuf, and counted together. */
    struct wbuf msg = {0};
    for (int k = 0; k < 2; k++) {
        struct wbuf conf = {0};
        struct wbuf meta = {0};
        for (uint32_t i = 0; i < RAFT_MEMBERS_MAX; i++) {
            struct wbuf member = {0};
            w_u64(&member, F_MEMBER_ID, 100 * (uint64_t)k + i + 1);
            w_u64(&member, F_MEMBER_ROLE, RAFT_VOTER);
            w_sub(&conf, F_CONF_MEMBERS, &member);
        }
        w_sub(&meta, F_META_CONF, &conf);
        if (k == 0) {
            w_base_msg(&msg);
        }
        w_sub(&msg, F_MSG_META, &meta);
    }
    w_batch_of(&batch, &msg);
    expect_corrupt_wbuf(&batch, "too many members");
}

static void test_reject_zero_node_ids(void **state)
{
    expect_corrupt_with_field(F_MSG_FROM, 0, "node 0");
    expect_corrupt_with_field(F_MSG_TO, 0, "node 0");
    /* And a message with no fields at all (type UNSPECIFIED, ids 0). */
    static const uint8_t empty_msg[] = {0x0a, 0x00};
    expect_corrupt(empty_msg, sizeof(empty_msg), "unknown message type");
    /* A batch of only unknown fields has no messages. */
    static const uint8_t no_msgs[] = {0x10, 0x01};
    expect_corrupt(no_msgs, sizeof(no_msgs), "batch without messages");
}

static void test_reject_bad_stored_records(void **state)
{
    struct raft_hard_state hs;
    struct raft_snapshot_meta meta;
    const char *why = NULL;
    struct wbuf w = {0};

    w_u64(&w, F_HS_TERM, UINT64_MAX);
    assert_int_equal(codec_hard_state_decode(w.b, w.n, &hs, &why),
                     KHO_ECORRUPT);
    assert_non_null(why);
    w_free(&w);
    w_u64(&w, F_HS_COMMIT, RAFT_INDEX_MAX + 1);
    assert_int_equal(codec_hard_state_decode(w.b, w.n, &hs, NULL),
                     KHO_ECORRUPT);
    w_free(&w);
    static const uint8_t trunc[] = {0x08, 0x80};
    assert_int_equal(codec_hard_state_decode(trunc, sizeof(trunc), &hs, NULL),
                     KHO_ECORRUPT);
    static uint8_t big[CODEC_HARD_STATE_BYTES_MAX + 1];
    assert_int_equal(codec_hard_state_decode(big, sizeof(big), &hs, NULL),
                     KHO_ECORRUPT);

    /* Snapshot metadata with too many members, and a truncated one. */
    struct wbuf conf = {0};
    for (uint32_t i = 0; i <= RAFT_MEMBERS_MAX; i++) {
        struct wbuf member = {0};
        w_u64(&member, F_MEMBER_ID, i + 1);
        w_u64(&member, F_MEMBER_ROLE, RAFT_VOTER);
        w_sub(&conf, F_CONF_MEMBERS, &member);
    }
    w_sub(&w, F_META_CONF, &conf);
    assert_int_equal(codec_snapshot_meta_decode(w.b, w.n, &meta, &why),
                     KHO_ECORRUPT);
    assert_int_equal(codec_snapshot_meta_decode(w.b, w.n - 1, &meta, NULL),
                     KHO_ECORRUPT);
    w_free(&w);
    static const uint8_t wrong[] = {0x1d, 1, 2, 3, 4}; /* conf as fixed32 */
    assert_int_equal(
        codec_snapshot_meta_decode(wrong, sizeof(wrong), &meta, NULL),
        KHO_ECORRUPT);
}

/* Decodes a batch of exactly one message into *out (freed by the caller
 * with codec_batch_free). */
static void decode_one(struct wbuf *batch, struct codec_batch *out)
{
    const char *why = NULL;
    int rc = codec_batch_decode(batch->b, batch->n, out, &why);
    if (rc != KHO_OK) {
        fail_msg("decode: %s (%s)", kho_errname(rc), why);
    }
    assert_int_equal(out->n, 1);
    w_free(batch);
}

static void test_quiesce_flag(void **state)
{
    /* A quiesce heartbeat (raft.h, "Quiescence") names the leader's last
     * entry in index/log_term; all of it survives. */
    struct raft_msg m;
    memset(&m, 0, sizeof(m));
    m.group_id = 7;
    m.type = RAFT_MSG_HEARTBEAT;
    m.from = 1;
    m.to = 2;
    m.term = 3;
    m.commit = 40;
    m.index = 40;
    m.log_term = 3;
    m.ctx = 12;
    m.quiesce = true;
    roundtrip_batch(&m, 1);

    /* Written by hand: field 17 set to true, and left out, as a node that
     * predates quiescence sends it. */
    struct wbuf msg = {0};
    struct wbuf batch = {0};
    struct codec_batch b;
    w_base_msg(&msg);
    w_u64(&msg, F_MSG_QUIESCE, 1);
    w_batch_of(&batch, &msg);
    decode_one(&batch, &b);
    assert_true(b.msgs[0].quiesce);
    codec_batch_free(&b);
    w_base_msg(&msg);
    w_batch_of(&batch, &msg);
    decode_one(&batch, &b);
    assert_false(b.msgs[0].quiesce);
    codec_batch_free(&b);

    /* On any other type it means nothing a kho node would send. */
    for (uint32_t t = RAFT_MSG_APPEND; t <= RAFT_MSG_TYPE_MAX_; t++) {
        if (t == RAFT_MSG_HEARTBEAT) {
            continue;
        }
        w_base_msg(&msg);
        w_u64(&msg, F_MSG_TYPE, t);
        w_u64(&msg, F_MSG_QUIESCE, 1);
        w_batch_of(&batch, &msg);
        expect_corrupt_wbuf(&batch, "quiesce flag");
        uint8_t *buf = NULL;
        size_t len = 0;
        m.type = t;
        assert_int_equal(codec_msg_encode(&m, &buf, &len), KHO_EINVAL);
        assert_null(buf);
    }
}

static void test_encoder_refuses_invalid(void **state)
{
    struct raft_msg m;
    struct raft_entry ents[3];
    uint8_t *buf = (uint8_t *)&m; /* must be reset to NULL on failure */
    size_t len = 1;

    make_msg(&m, RAFT_MSG_APPEND, ents);
    m.term = UINT64_MAX;
    assert_int_equal(codec_msg_encode(&m, &buf, &len), KHO_EINVAL);
    assert_null(buf);
    assert_int_equal(len, 0);

    make_msg(&m, RAFT_MSG_APPEND, ents);
    m.type = 0;
    assert_int_equal(codec_msg_encode(&m, &buf, &len), KHO_EINVAL);
    make_msg(&m, RAFT_MSG_APPEND, ents);
    m.to = 0;
    assert_int_equal(codec_msg_encode(&m, &buf, &len), KHO_EINVAL);
    make_msg(&m, RAFT_MSG_APPEND, ents);
    ents[1].type = 7;
    assert_int_equal(codec_msg_encode(&m, &buf, &len), KHO_EINVAL);
    make_msg(&m, RAFT_MSG_APPEND, ents);
    m.snapshot.meta.conf.members[1].id = 3; /* duplicate */
    assert_int_equal(codec_msg_encode(&m, &buf, &len), KHO_EINVAL);
    make_msg(&m, RAFT_MSG_APPEND, ents);
    m.n_entries = RAFT_MSG_ENTRIES_MAX + 1;
    assert_int_equal(codec_msg_encode(&m, &buf, &len), KHO_EINVAL);
    assert_int_equal(codec_batch_encode(&m, 0, &buf, &len), KHO_EINVAL);

    struct raft_hard_state hs = {RAFT_TERM_MAX + 1, 1, 1};
    uint8_t small[CODEC_HARD_STATE_BYTES_MAX];
    assert_int_equal(codec_hard_state_encode(&hs, small, sizeof(small), &len),
                     KHO_EINVAL);
    struct raft_snapshot_meta meta = {0};
    meta.conf.n = RAFT_MEMBERS_MAX + 1;
    uint8_t mbuf[CODEC_SNAPSHOT_META_BYTES_MAX];
    assert_int_equal(
        codec_snapshot_meta_encode(&meta, mbuf, sizeof(mbuf), &len),
        KHO_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_every_type),
        cmocka_unit_test(test_roundtrip_batch_of_groups),
        cmocka_unit_test(test_roundtrip_limits),
        cmocka_unit_test(test_roundtrip_hard_state),
        cmocka_unit_test(test_roundtrip_snapshot_meta),
        cmocka_unit_test(test_unknown_fields_skipped),
        cmocka_unit_test(test_reject_zero_length),
        cmocka_unit_test(test_reject_every_truncation),
        cmocka_unit_test(test_reject_truncated_varint),
        cmocka_unit_test(test_reject_wrong_wire_type),
        cmocka_unit_test(test_reject_garbage),
        cmocka_unit_test(test_reject_or_accept_every_byte_flip),
        cmocka_unit_test(test_reject_huge_counts_and_sizes),
        cmocka_unit_test(test_reject_out_of_range_terms_and_indexes),
        cmocka_unit_test(test_reject_unknown_enums_and_flags),
        cmocka_unit_test(test_reject_bad_members),
        cmocka_unit_test(test_reject_zero_node_ids),
        cmocka_unit_test(test_reject_bad_stored_records),
        cmocka_unit_test(test_encoder_refuses_invalid),
        cmocka_unit_test(test_quiesce_flag),
    };
    return cmocka_run_group_tests_name("codec", tests, NULL, NULL);
}

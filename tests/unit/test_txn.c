/*
 * test_txn.c - proves the registry state machine of server/store (store.h,
 * "State-machine requests", "Records", "Reading the state machine"):
 *
 *   - the request codec round-trips, and refuses every malformed or
 *     over-limit request with the documented error;
 *   - every compare target x operator holds exactly when it should, on
 *     present and absent keys (absent: numbers 0, VALUE compares false);
 *   - a request is atomic: a failing compare (or a long-key collision)
 *     applies nothing and names the first failed compare; otherwise every
 *     op lands at revision = the entry's index;
 *   - records carry version, create_rev, mod_rev, time_ms and writer as
 *     specified, across puts, deletes and re-creations;
 *   - history is oldest first with tombstones, bounded per key at
 *     STORE_HISTORY_VERSIONS with the current record counted, pages by
 *     after_rev, and keeps keys apart when their hashes collide (forced
 *     with store_opts.test_key_hash_bits), also when keys written by one
 *     request are replaced later; `hist` (walked with raw LMDB) holds only
 *     replaced records and tombstones, never a current record;
 *   - a store left by format 3 (current records in hist too) is converted
 *     when opened into the bytes format 4 would hold;
 *   - scans honour ranges, prefix-like ranges, continuation, limit and
 *     max_bytes, long keys included, and report *more truthfully;
 *   - malformed or mutated entry bytes never crash, and two replicas
 *     applying the same bytes answer and store exactly alike (random: the
 *     seed is printed and `--seed N` replays it);
 *   - a snapshot stream carries kv, history and sessions to a second
 *     store, and a corrupt or tampered stream is refused without touching
 *     what the group serves;
 *   - store_space reports sane numbers that grow with the data.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <time.h>

#include "../../server/store/internal.h" /* crc32c and key hashes */
#include "store_fixture.h"

static uint64_t g_seed;

/* xorshift64*: small, seeded, reproducible. */
static uint64_t rnd_state;

static uint64_t rnd(void)
{
    rnd_state ^= rnd_state >> 12;
    rnd_state ^= rnd_state << 25;
    rnd_state ^= rnd_state >> 27;
    return rnd_state * UINT64_C(2685821657736338717);
}

/* --- The request codec --------------------------------------------------- */

static void expect_encode(const struct store_request *r, int want)
{
    static uint8_t buf[1 << 16];
    size_t len = 0;
    assert_int_equal(store_request_encode(r, buf, sizeof(buf), &len), want);
    if (want != KHO_OK) {
        assert_int_equal(store_request_size(r), 0);
    }
}

static void test_codec_roundtrip(void **state)
{
    (void)state;
    struct req q;
    req_init(&q, 123456789, "agency-7");
    q.r.session = 99;
    q.r.seq = 5;
    req_cmp(&q, "a", STORE_CMP_VERSION, STORE_CMP_EQ, 3);
    req_cmp(&q, "b", STORE_CMP_CREATE_REV, STORE_CMP_NE, 4);
    req_cmp(&q, "c", STORE_CMP_MOD_REV, STORE_CMP_LT, 5);
    req_cmp_value(&q, "d", STORE_CMP_GT, "val");
    req_put(&q, "a", "one");
    req_del(&q, "b");
    req_put(&q, "e", "");
    size_t len = 0;
    uint8_t *buf = req_encode(&q, &len);
    assert_int_equal(len, STORE_REQ_HEADER_BYTES + 8 +
                              4 * STORE_CMP_HEADER_BYTES + 4 + 3 +
                              3 * STORE_OP_HEADER_BYTES + 3 + 3);

    struct store_request d;
    struct store_compare cmps[STORE_TXN_CMPS_MAX];
    struct store_op ops[STORE_TXN_OPS_MAX];
    assert_int_equal(store_request_decode(buf, len, &d, cmps, ops), KHO_OK);
    assert_int_equal(d.flags, 0);
    assert_int_equal(d.session, 99);
    assert_int_equal(d.seq, 5);
    assert_int_equal(d.time_ms, 123456789);
    assert_int_equal(d.writer_len, 8);
    assert_memory_equal(d.writer, "agency-7", 8);
    assert_int_equal(d.n_cmp, 4);
    assert_int_equal(d.n_ops, 3);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(cmps[i].target, q.cmps[i].target);
        assert_int_equal(cmps[i].op, q.cmps[i].op);
        assert_int_equal(cmps[i].number, q.cmps[i].number);
        assert_int_equal(cmps[i].key_len, 1);
        assert_int_equal(cmps[i].key[0], q.cmps[i].key[0]);
    }
    assert_int_equal(cmps[3].value_len, 3);
    assert_memory_equal(cmps[3].value, "val", 3);
    assert_int_equal(ops[0].op, STORE_OP_PUT);
    assert_memory_equal(ops[0].value, "one", 3);
    assert_int_equal(ops[1].op, STORE_OP_DELETE);
    assert_int_equal(ops[1].value_len, 0);
    assert_int_equal(ops[2].value_len, 0);

    /* Every strict prefix and any extension are malformed. */
    for (size_t n = 0; n < len; n++) {
        assert_int_equal(store_request_decode(buf, n, &d, cmps, ops),
                         KHO_EINVAL);
    }
    uint8_t *longer = malloc(len + 1);
    assert_non_null(longer);
    memcpy(longer, buf, len);
    longer[len] = 0;
    assert_int_equal(store_request_decode(longer, len + 1, &d, cmps, ops),
                     KHO_EINVAL);
    free(longer);
    assert_int_equal(store_request_decode(NULL, 0, &d, cmps, ops), KHO_EINVAL);

    /* Bytes the layout fixes. */
    const size_t op0 = len - (3 * STORE_OP_HEADER_BYTES + 3 + 3);
    struct {
        size_t at;
        uint8_t value;
        int want;
    } pokes[] = {
        {0, 0x12, KHO_EINVAL},                       /* magic */
        {1, 0x02, KHO_EINVAL},                       /* unknown flag */
        {STORE_REQ_HEADER_BYTES + 8, 4, KHO_EINVAL}, /* target */
        {STORE_REQ_HEADER_BYTES + 9, 4, KHO_EINVAL}, /* cmp op */
        {op0, 3, KHO_EINVAL},                        /* op */
        {op0 + 1, 1, KHO_EINVAL},                    /* reserved */
        {op0 + 2, 0, KHO_EINVAL},                    /* empty key */
    };
    for (size_t i = 0; i < sizeof(pokes) / sizeof(pokes[0]); i++) {
        uint8_t keep = buf[pokes[i].at];
        buf[pokes[i].at] = pokes[i].value;
        assert_int_equal(store_request_decode(buf, len, &d, cmps, ops),
                         pokes[i].want);
        buf[pokes[i].at] = keep;
    }
    assert_int_equal(store_request_decode(buf, len, &d, cmps, ops), KHO_OK);

    /* cap too small: the size needed comes back. */
    size_t need = 0;
    assert_int_equal(store_request_encode(&q.r, buf, 10, &need), KHO_ETOOLARGE);
    assert_int_equal(need, len);
    free(buf);
}

static void test_codec_limits(void **state)
{
    (void)state;
    static uint8_t big[STORE_VALUE_BYTES_MAX + 1];
    static uint8_t key[STORE_KEY_BYTES_MAX + 1];
    static char writer[STORE_WRITER_BYTES_MAX + 2];
    struct req q;
    memset(key, 'k', sizeof(key));
    memset(writer, 'w', sizeof(writer) - 1);

    req_init(&q, 0, NULL);
    expect_encode(&q.r, KHO_EINVAL); /* no op and no compare */
    req_cmp(&q, "a", STORE_CMP_VERSION, STORE_CMP_EQ, 0);
    expect_encode(&q.r, KHO_OK); /* compares alone are a request */

    /* Keys, values and writers. */
    req_init(&q, 0, NULL);
    req_put_n(&q, key, 0, "v", 1);
    expect_encode(&q.r, KHO_EINVAL);
    q.ops[0].key_len = STORE_KEY_BYTES_MAX + 1;
    expect_encode(&q.r, KHO_ETOOLARGE);
    q.ops[0].key_len = STORE_KEY_BYTES_MAX;
    q.ops[0].value = big;
    q.ops[0].value_len = STORE_VALUE_BYTES_MAX + 1;
    expect_encode(&q.r, KHO_ETOOLARGE);
    q.ops[0].value_len = STORE_VALUE_BYTES_MAX;
    assert_int_equal(store_request_size(&q.r),
                     STORE_REQ_HEADER_BYTES + STORE_OP_HEADER_BYTES +
                         STORE_KEY_BYTES_MAX + STORE_VALUE_BYTES_MAX);
    q.r.writer = writer;
    q.r.writer_len = STORE_WRITER_BYTES_MAX + 1;
    expect_encode(&q.r, KHO_ETOOLARGE);
    q.r.writer_len = STORE_WRITER_BYTES_MAX;
    assert_true(store_request_size(&q.r) > 0);
    q.r.writer = NULL;
    expect_encode(&q.r, KHO_EINVAL); /* a length without bytes */

    /* Ops: kinds, a delete with a value, two ops on one key. */
    req_init(&q, 0, NULL);
    req_del(&q, "d");
    q.ops[0].value = big;
    q.ops[0].value_len = 1;
    expect_encode(&q.r, KHO_EINVAL);
    q.ops[0].value_len = 0;
    q.ops[0].op = 3;
    expect_encode(&q.r, KHO_EINVAL);
    req_init(&q, 0, NULL);
    req_put(&q, "same", "1");
    req_put(&q, "other", "2");
    req_del(&q, "same");
    expect_encode(&q.r, KHO_EINVAL);

    /* STORE_REQ_SINGLE takes exactly one op; no other flag exists. */
    req_init(&q, 0, NULL);
    q.r.flags = STORE_REQ_SINGLE;
    req_put(&q, "a", "1");
    expect_encode(&q.r, KHO_OK);
    req_put(&q, "b", "1");
    expect_encode(&q.r, KHO_EINVAL);
    q.r.flags = 0x80;
    expect_encode(&q.r, KHO_EINVAL);

    /* Compares: targets, operators, the field a target does not use. */
    req_init(&q, 0, NULL);
    req_cmp(&q, "a", 4, STORE_CMP_EQ, 0);
    expect_encode(&q.r, KHO_EINVAL);
    q.cmps[0].target = STORE_CMP_VERSION;
    q.cmps[0].op = 4;
    expect_encode(&q.r, KHO_EINVAL);
    q.cmps[0].op = STORE_CMP_GT;
    q.cmps[0].value = big;
    q.cmps[0].value_len = 1;
    expect_encode(&q.r, KHO_EINVAL);
    req_init(&q, 0, NULL);
    req_cmp_value(&q, "a", STORE_CMP_EQ, "x");
    q.cmps[0].number = 1;
    expect_encode(&q.r, KHO_EINVAL);
    q.cmps[0].number = 0;
    q.cmps[0].value = big;
    q.cmps[0].value_len = STORE_VALUE_BYTES_MAX + 1;
    expect_encode(&q.r, KHO_ETOOLARGE);

    /* Counts and the whole entry. */
    req_init(&q, 0, NULL);
    for (size_t i = 0; i < STORE_TXN_CMPS_MAX; i++) {
        req_cmp(&q, "a", STORE_CMP_VERSION, STORE_CMP_EQ, 0);
    }
    expect_encode(&q.r, KHO_OK);
    q.r.n_cmp++;
    expect_encode(&q.r, KHO_ETOOLARGE);
    static char names[STORE_TXN_OPS_MAX + 1][8];
    static struct store_op many[STORE_TXN_OPS_MAX + 1];
    req_init(&q, 0, NULL);
    q.r.ops = many;
    for (size_t i = 0; i <= STORE_TXN_OPS_MAX; i++) {
        snprintf(names[i], sizeof(names[i]), "k%zu", i);
        many[i] = (struct store_op){.op = STORE_OP_PUT,
                                    .key = (const uint8_t *)names[i],
                                    .key_len = strlen(names[i]),
                                    .value = big,
                                    .value_len = 1};
    }
    q.r.n_ops = STORE_TXN_OPS_MAX;
    expect_encode(&q.r, KHO_OK);
    q.r.n_ops++;
    expect_encode(&q.r, KHO_ETOOLARGE);
    q.r.n_ops--;
    for (size_t i = 0; i < STORE_TXN_OPS_MAX; i++) {
        many[i].value_len = STORE_VALUE_BYTES_MAX; /* 128 MiB in all */
    }
    expect_encode(&q.r, KHO_ETOOLARGE);
    assert_int_equal(store_request_size(&q.r), 0);

    /* A decoder meeting counts over the limits says so. */
    uint8_t hdr[STORE_REQ_HEADER_BYTES] = {STORE_REQ_MAGIC};
    struct store_request d;
    struct store_compare cmps[STORE_TXN_CMPS_MAX];
    struct store_op ops[STORE_TXN_OPS_MAX];
    hdr[2] = STORE_TXN_CMPS_MAX + 1;
    assert_int_equal(store_request_decode(hdr, sizeof(hdr), &d, cmps, ops),
                     KHO_ETOOLARGE);
    hdr[2] = 0;
    hdr[4] = (uint8_t)(STORE_TXN_OPS_MAX + 1);
    assert_int_equal(store_request_decode(hdr, sizeof(hdr), &d, cmps, ops),
                     KHO_ETOOLARGE);
    hdr[4] = 0;
    hdr[6] = STORE_WRITER_BYTES_MAX + 1;
    assert_int_equal(store_request_decode(hdr, sizeof(hdr), &d, cmps, ops),
                     KHO_ETOOLARGE);
}

/* --- Compares ------------------------------------------------------------ */

/* Applies a compare-only request: whether its one compare held. */
static bool holds(struct fx *f, const struct store_compare *c)
{
    struct req q;
    req_init(&q, 0, NULL);
    q.cmps[q.r.n_cmp++] = *c;
    struct store_apply_result r = fx_apply(f, &q);
    if (r.result == KHO_OK) {
        assert_int_equal(r.failed_cmp, 0);
        return true;
    }
    assert_int_equal(r.result, KHO_ECONFLICT);
    assert_int_equal(r.failed_cmp, 1);
    return false;
}

static bool expect_op(uint32_t op, int c)
{
    switch (op) {
    case STORE_CMP_EQ:
        return c == 0;
    case STORE_CMP_NE:
        return c != 0;
    case STORE_CMP_LT:
        return c < 0;
    default:
        return c > 0;
    }
}

static void test_compare_numbers(void **state)
{
    struct fx *f = *state;
    fx_start(f);
    uint64_t created = fx_put(f, "k", "v1", 1).revision;
    fx_put(f, "x", "other", 1);
    fx_put(f, "x", "other", 1);
    uint64_t modified = fx_put(f, "k", "v2", 1).revision;
    /* k: version 2, create_rev `created`, mod_rev `modified`; "nope" is
     * absent: 0, 0, 0. */
    const struct {
        const char *key;
        uint32_t target;
        uint64_t actual;
    } cases[] = {
        {"k", STORE_CMP_VERSION, 2},
        {"k", STORE_CMP_CREATE_REV, created},
        {"k", STORE_CMP_MOD_REV, modified},
        {"nope", STORE_CMP_VERSION, 0},
        {"nope", STORE_CMP_CREATE_REV, 0},
        {"nope", STORE_CMP_MOD_REV, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t a = cases[i].actual;
        uint64_t numbers[3] = {a > 0 ? a - 1 : 0, a, a + 1};
        for (uint32_t op = STORE_CMP_EQ; op <= STORE_CMP_GT; op++) {
            for (size_t j = 0; j < 3; j++) {
                struct store_compare c = {.target = cases[i].target,
                                          .op = op,
                                          .key = (const uint8_t *)cases[i].key,
                                          .key_len = strlen(cases[i].key),
                                          .number = numbers[j]};
                int order = a < numbers[j] ? -1 : a > numbers[j];
                if (holds(f, &c) != expect_op(op, order)) {
                    fail_msg("key %s target %u op %u number %llu: wrong",
                             cases[i].key, cases[i].target, op,
                             (unsigned long long)numbers[j]);
                }
            }
        }
    }
}

static void test_compare_values(void **state)
{
    struct fx *f = *state;
    fx_start(f);
    fx_put(f, "k", "mid", 1);
    fx_put(f, "empty", "", 1);
    /* Bytewise: memcmp over the common length, then the shorter first. */
    const struct {
        const char *key, *against;
        int order; /* stored value vs `against` */
    } cases[] = {
        {"k", "mid", 0},  {"k", "mic", 1},    {"k", "mie", -1},
        {"k", "mi", 1},   {"k", "midd", -1},  {"k", "", 1},
        {"empty", "", 0}, {"empty", "a", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (uint32_t op = STORE_CMP_EQ; op <= STORE_CMP_GT; op++) {
            struct store_compare c = {.target = STORE_CMP_VALUE,
                                      .op = op,
                                      .key = (const uint8_t *)cases[i].key,
                                      .key_len = strlen(cases[i].key),
                                      .value =
                                          (const uint8_t *)cases[i].against,
                                      .value_len = strlen(cases[i].against)};
            if (holds(f, &c) != expect_op(op, cases[i].order)) {
                fail_msg("%s vs \"%s\" op %u: wrong", cases[i].key,
                         cases[i].against, op);
            }
        }
    }
    /* On an absent key every VALUE compare is false, NE included. */
    const char *against[] = {"", "x"};
    for (size_t i = 0; i < 2; i++) {
        for (uint32_t op = STORE_CMP_EQ; op <= STORE_CMP_GT; op++) {
            struct store_compare c = {.target = STORE_CMP_VALUE,
                                      .op = op,
                                      .key = (const uint8_t *)"nope",
                                      .key_len = 4,
                                      .value = (const uint8_t *)against[i],
                                      .value_len = strlen(against[i])};
            assert_false(holds(f, &c));
        }
    }
}

/* --- Transactions -------------------------------------------------------- */

static void test_txn_atomic(void **state)
{
    struct fx *f = *state;
    struct rec r;
    fx_start(f);
    fx_put(f, "a", "a0", 1);
    fx_put(f, "c", "c0", 1);

    /* The third compare fails: nothing of the request lands. */
    struct req q;
    req_init(&q, 50, "w");
    req_cmp(&q, "a", STORE_CMP_VERSION, STORE_CMP_EQ, 1);
    req_cmp_value(&q, "c", STORE_CMP_EQ, "c0");
    req_cmp(&q, "b", STORE_CMP_VERSION, STORE_CMP_GT, 0);
    req_put(&q, "a", "a1");
    req_put(&q, "b", "b1");
    req_del(&q, "c");
    struct store_apply_result res = fx_apply(f, &q);
    assert_int_equal(res.result, KHO_ECONFLICT);
    assert_int_equal(res.failed_cmp, 3);
    assert_int_equal(res.version, 0);
    assert_false(res.duplicate);
    fx_expect(f, "a", "a0");
    fx_expect(f, "b", NULL);
    fx_expect(f, "c", "c0");

    /* All hold: every op at one revision, in order. */
    q.cmps[2].op = STORE_CMP_EQ;
    res = fx_apply(f, &q);
    assert_int_equal(res.result, KHO_OK);
    assert_int_equal(res.failed_cmp, 0);
    assert_int_equal(res.version, 1); /* the last put: b's first version */
    uint64_t rev = res.revision;
    assert_int_equal(fx_read(f, "a", &r), KHO_OK);
    assert_true(rec_is(&r, "a", "a1"));
    assert_int_equal(r.version, 2);
    assert_int_equal(r.mod_rev, rev);
    free(r.value);
    assert_int_equal(fx_read(f, "b", &r), KHO_OK);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.create_rev, rev);
    assert_int_equal(r.mod_rev, rev);
    free(r.value);
    fx_expect(f, "c", NULL);

    /* Inside a transaction a delete of a missing key is a no-op; alone
     * (STORE_REQ_SINGLE) it is KHO_ENOTFOUND. */
    req_init(&q, 60, "w");
    req_del(&q, "c");
    req_put(&q, "d", "d1");
    res = fx_apply(f, &q);
    assert_int_equal(res.result, KHO_OK);
    assert_int_equal(res.version, 1);
    fx_expect(f, "d", "d1");
    res = fx_del(f, "c", 61);
    assert_int_equal(res.result, KHO_ENOTFOUND);
    assert_int_equal(fx_del(f, "d", 62).result, KHO_OK);
    fx_expect(f, "d", NULL);

    /* A put then a delete of another key in one request, the put's
     * version reported. */
    req_init(&q, 70, "w");
    req_put(&q, "a", "a2");
    req_del(&q, "b");
    res = fx_apply(f, &q);
    assert_int_equal(res.version, 3);
    fx_expect(f, "b", NULL);
}

static void test_record_fields(void **state)
{
    struct fx *f = *state;
    struct rec r;
    uint64_t applied = 0;
    fx_start(f);
    struct req q;
    req_init(&q, 1234, "alice");
    q.r.flags = STORE_REQ_SINGLE;
    req_put(&q, "k", "v1");
    uint64_t r1 = fx_apply(f, &q).revision;
    assert_int_equal(fx_read(f, "k", &r), KHO_OK);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.create_rev, r1);
    assert_int_equal(r.mod_rev, r1);
    assert_int_equal(r.time_ms, 1234);
    assert_string_equal(r.writer, "alice");
    free(r.value);

    req_init(&q, 2000, NULL); /* no writer */
    q.r.flags = STORE_REQ_SINGLE;
    req_put(&q, "k", "");
    struct store_apply_result res = fx_apply(f, &q);
    assert_int_equal(res.version, 2);
    assert_int_equal(fx_read(f, "k", &r), KHO_OK);
    assert_int_equal(r.version, 2);
    assert_int_equal(r.create_rev, r1);
    assert_int_equal(r.mod_rev, res.revision);
    assert_int_equal(r.time_ms, 2000);
    assert_string_equal(r.writer, "");
    assert_int_equal(r.value_len, 0);

    /* Deleted and created again: a new life from version 1. */
    fx_del(f, "k", 3000);
    uint64_t r3 = fx_put(f, "k", "again", 4000).revision;
    assert_int_equal(fx_read(f, "k", &r), KHO_OK);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.create_rev, r3);
    assert_int_equal(r.mod_rev, r3);
    assert_string_equal(r.writer, "tester");
    free(r.value);

    /* The applied index comes from the read's own transaction. */
    struct recs *l = calloc(1, sizeof(*l));
    assert_non_null(l);
    assert_int_equal(
        store_kv_read(f->s, FX_GROUP, "k", 1, recs_cb, l, &applied), KHO_OK);
    assert_int_equal(applied, r3);
    recs_free(l);
    /* Errors: key lengths, missing group or key, the callback's own. */
    assert_int_equal(store_kv_read(f->s, FX_GROUP, "k", 0, recs_cb, l, NULL),
                     KHO_EINVAL);
    assert_int_equal(store_kv_read(f->s, FX_GROUP, "k", STORE_KEY_BYTES_MAX + 1,
                                   recs_cb, l, NULL),
                     KHO_EINVAL);
    assert_int_equal(
        store_kv_read(f->s, FX_GROUP + 1, "k", 1, recs_cb, l, NULL),
        KHO_ENOTFOUND);
    assert_int_equal(store_kv_read(f->s, FX_GROUP, "zz", 2, recs_cb, l, NULL),
                     KHO_ENOTFOUND);
    l->stop_after = 1;
    l->n = 1;
    assert_int_equal(store_kv_read(f->s, FX_GROUP, "k", 1, recs_cb, l, NULL),
                     KHO_EBUSY);
    free(l);
}

/* --- History ------------------------------------------------------------- */

static void history(struct fx *f, const void *key, size_t key_len,
                    uint64_t after, uint32_t limit, struct recs *l, bool *more)
{
    l->n = 0;
    int rc = store_kv_history(f->s, FX_GROUP, key, key_len, after, limit,
                              recs_cb, l, more, NULL);
    if (rc != KHO_OK) {
        fail_msg("history: %s: %s", kho_errname(rc), store_errmsg(f->s));
    }
}

static void test_history(void **state)
{
    struct fx *f = *state;
    struct recs *l = calloc(1, sizeof(*l));
    bool more = true;
    assert_non_null(l);
    fx_start(f);
    uint64_t rev[5];
    rev[0] = fx_put(f, "h", "v1", 10).revision;
    rev[1] = fx_put(f, "h", "v2", 20).revision;
    fx_put(f, "other", "x", 25);
    rev[2] = fx_put(f, "h", "v3", 30).revision;
    rev[3] = fx_del(f, "h", 40).revision;
    rev[4] = fx_put(f, "h", "v5", 50).revision;

    history(f, "h", 1, 0, 100, l, &more);
    assert_false(more);
    assert_int_equal(l->n, 5);
    const char *vals[5] = {"v1", "v2", "v3", NULL, "v5"};
    const uint64_t versions[5] = {1, 2, 3, 0, 1};
    for (size_t i = 0; i < 5; i++) {
        assert_true(rec_is(&l->r[i], "h", vals[i]));
        assert_int_equal(l->r[i].mod_rev, rev[i]);
        assert_int_equal(l->r[i].version, versions[i]);
        assert_int_equal(l->r[i].time_ms, (i + 1) * 10);
        assert_int_equal(l->r[i].deleted, i == 3);
    }
    /* The tombstone keeps the life it ended; the next life starts anew. */
    assert_int_equal(l->r[3].create_rev, rev[0]);
    assert_int_equal(l->r[4].create_rev, rev[4]);
    recs_free(l);

    /* Paging by after_rev, two at a time. */
    uint64_t after = 0;
    size_t seen = 0;
    for (int page = 0; page < 10; page++) {
        history(f, "h", 1, after, 2, l, &more);
        for (size_t i = 0; i < l->n; i++) {
            assert_int_equal(l->r[i].mod_rev, rev[seen + i]);
        }
        seen += l->n;
        after = l->n > 0 ? l->r[l->n - 1].mod_rev : after;
        recs_free(l);
        assert_int_equal(more, seen < 5);
        if (!more) {
            break;
        }
    }
    assert_int_equal(seen, 5);
    history(f, "h", 1, rev[4], 10, l, &more);
    assert_int_equal(l->n, 0);
    history(f, "h", 1, UINT64_MAX, 10, l, &more);
    assert_int_equal(l->n, 0);
    assert_false(more);

    /* A key never written has no versions; errors are checked. */
    history(f, "never", 5, 0, 10, l, &more);
    assert_int_equal(l->n, 0);
    assert_false(more);
    assert_int_equal(
        store_kv_history(f->s, FX_GROUP, "h", 1, 0, 0, recs_cb, l, &more, NULL),
        KHO_EINVAL);
    assert_int_equal(store_kv_history(f->s, FX_GROUP, "h", 1, 0,
                                      STORE_SCAN_LIMIT_MAX + 1, recs_cb, l,
                                      &more, NULL),
                     KHO_EINVAL);
    assert_int_equal(
        store_kv_history(f->s, FX_GROUP, "h", 0, 0, 1, recs_cb, l, &more, NULL),
        KHO_EINVAL);
    l->stop_after = 2;
    assert_int_equal(store_kv_history(f->s, FX_GROUP, "h", 1, 0, 10, recs_cb, l,
                                      &more, NULL),
                     KHO_EBUSY);
    l->stop_after = 0;
    recs_free(l);
    free(l);
}

/* Puts `n` versions of `key` (values "<key>.<i>"). */
static void put_versions(struct fx *f, const char *key, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        char v[64];
        snprintf(v, sizeof(v), "%s.%d", key, i);
        assert_int_equal(fx_put(f, key, v, (uint64_t)i).result, KHO_OK);
    }
}

/* The key's history holds exactly versions [first, last] of put_versions. */
static void expect_versions(struct fx *f, const char *key, int first, int last,
                            struct recs *l)
{
    bool more = true;
    history(f, key, strlen(key), 0, STORE_SCAN_LIMIT_MAX, l, &more);
    assert_false(more);
    assert_int_equal(l->n, (size_t)(last - first + 1));
    for (size_t i = 0; i < l->n; i++) {
        char v[64];
        snprintf(v, sizeof(v), "%s.%d", key, first + (int)i);
        assert_true(rec_is(&l->r[i], key, v));
        assert_int_equal(l->r[i].version, (uint64_t)(first + (int)i) + 1);
    }
    recs_free(l);
}

static void test_history_bound(void **state)
{
    struct fx *f = *state;
    struct recs *l = calloc(1, sizeof(*l));
    assert_non_null(l);
    fx_start(f);
    const int n = (int)STORE_HISTORY_VERSIONS + 8;
    put_versions(f, "b", 0, n);
    put_versions(f, "c", 0, 3);
    expect_versions(f, "b", n - (int)STORE_HISTORY_VERSIONS, n - 1, l);
    expect_versions(f, "c", 0, 2, l);
    free(l);
}

/* With one-bit hashes, of any three keys two share a hash: their versions
 * interleave in one run of `hist` and must still be told apart. */
static void test_history_collisions(void **state)
{
    struct fx *f = *state;
    struct recs *l = calloc(1, sizeof(*l));
    assert_non_null(l);
    f->opts.test_key_hash_bits = 1;
    fx_start(f);
    const int n = (int)STORE_HISTORY_VERSIONS + 5;
    for (int i = 0; i < n; i++) {
        put_versions(f, "a", i, 1);
        if (i % 2 == 0) {
            put_versions(f, "bb", i / 2, 1);
        }
        if (i < 4) {
            put_versions(f, "ccc", i, 1);
        }
    }
    expect_versions(f, "a", n - (int)STORE_HISTORY_VERSIONS, n - 1, l);
    expect_versions(f, "bb", 0, (n - 1) / 2, l);
    expect_versions(f, "ccc", 0, 3, l);

    /* Three keys in one request: one revision, told apart by their slot. */
    struct req q;
    req_init(&q, 1, "w");
    req_put(&q, "x1", "1");
    req_put(&q, "x2", "2");
    req_put(&q, "x3", "3");
    uint64_t rev = fx_apply(f, &q).revision;
    const char *keys[3] = {"x1", "x2", "x3"}, *vals[3] = {"1", "2", "3"};
    for (size_t i = 0; i < 3; i++) {
        bool more = true;
        history(f, keys[i], 2, 0, 10, l, &more);
        assert_int_equal(l->n, 1);
        assert_true(rec_is(&l->r[0], keys[i], vals[i]));
        assert_int_equal(l->r[0].mod_rev, rev);
        recs_free(l);
    }
    free(l);
}

/* Versions stored in hist of `key`, in key order (raw LMDB: f->s is
 * closed and reopened). */
static size_t stored_of(struct fx *f, const char *key, struct fx_version *out,
                        size_t cap)
{
    static struct fx_versions vs;
    size_t n = 0;
    fx_hist_stored(f, FX_GROUP, &vs);
    for (size_t i = 0; i < vs.n; i++) {
        struct fx_version *x = &vs.v[i];
        if (x->key_len != strlen(key) || memcmp(x->key, key, x->key_len)) {
            continue;
        }
        assert_true(n < cap);
        out[n] = *x;
        out[n].value = NULL; /* freed below */
        out[n].key = NULL;
        n++;
    }
    fx_versions_free(&vs);
    return n;
}

/* hist holds what kv no longer does: a put of a new key writes kv alone,
 * an overwrite moves the replaced record into hist under its own
 * revision, a delete moves it there with its tombstone; the history read
 * is hist's versions followed by the current record. */
static void test_history_superseded(void **state)
{
    struct fx *f = *state;
    struct recs *l = calloc(1, sizeof(*l));
    struct fx_version st[8];
    bool more = true;
    assert_non_null(l);
    fx_start(f);
    uint64_t r1 = fx_put(f, "k", "v1", 10).revision;
    assert_int_equal(stored_of(f, "k", st, 8), 0);
    uint64_t r2 = fx_put(f, "k", "v2", 20).revision;
    assert_int_equal(stored_of(f, "k", st, 8), 1);
    assert_int_equal(st[0].mod_rev, r1);
    assert_int_equal(st[0].slot, 0);
    assert_false(st[0].deleted);
    history(f, "k", 1, 0, 10, l, &more);
    assert_int_equal(l->n, 2);
    assert_true(rec_is(&l->r[0], "k", "v1") && l->r[0].mod_rev == r1);
    assert_true(rec_is(&l->r[1], "k", "v2") && l->r[1].mod_rev == r2);
    assert_int_equal(l->r[1].version, 2);
    recs_free(l);

    /* Paging stops between hist and the current record, and after_rev
     * past hist serves the current one alone. */
    history(f, "k", 1, 0, 1, l, &more);
    assert_true(more && l->n == 1 && l->r[0].mod_rev == r1);
    recs_free(l);
    history(f, "k", 1, r1, 1, l, &more);
    assert_true(!more && l->n == 1 && l->r[0].mod_rev == r2);
    recs_free(l);

    uint64_t r3 = fx_del(f, "k", 30).revision;
    assert_int_equal(stored_of(f, "k", st, 8), 3);
    assert_true(st[1].mod_rev == r2 && !st[1].deleted);
    assert_true(st[2].mod_rev == r3 && st[2].deleted);
    history(f, "k", 1, 0, 10, l, &more);
    assert_int_equal(l->n, 3);
    assert_true(rec_is(&l->r[1], "k", "v2") && rec_is(&l->r[2], "k", NULL));
    assert_true(l->r[2].deleted && l->r[2].create_rev == r1);
    recs_free(l);
    fx_expect(f, "k", NULL);

    /* One request: overwrite two keys, delete a third, create a fourth. */
    fx_put(f, "a", "a1", 40);
    fx_put(f, "b", "b1", 40);
    fx_put(f, "c", "c1", 40);
    struct req q;
    req_init(&q, 50, "multi");
    req_put(&q, "b", "b2");
    req_del(&q, "c");
    req_put(&q, "a", "a2");
    req_put(&q, "d", "d1");
    uint64_t r4 = fx_apply(f, &q).revision;
    assert_int_equal(stored_of(f, "d", st, 8), 0);
    assert_int_equal(stored_of(f, "c", st, 8), 2);
    assert_true(st[1].deleted && st[1].mod_rev == r4 && st[1].slot == 1);
    assert_int_equal(stored_of(f, "a", st, 8), 1);
    assert_true(st[0].mod_rev == r4 - 3 && st[0].slot == 0);
    history(f, "a", 1, 0, 10, l, &more);
    assert_int_equal(l->n, 2);
    assert_true(rec_is(&l->r[0], "a", "a1") && rec_is(&l->r[1], "a", "a2"));
    recs_free(l);
    fx_expect_hist_not_current(f, FX_GROUP);
    free(l);
}

/* The bound counts the current record: a key keeps at most
 * STORE_HISTORY_VERSIONS versions, hist's and kv's together, through
 * overwrites, a delete and a put that creates the key again. */
static void test_history_bound_counts_current(void **state)
{
    struct fx *f = *state;
    struct recs *l = calloc(1, sizeof(*l));
    static struct fx_version st[STORE_HISTORY_VERSIONS + 2];
    const int max = (int)STORE_HISTORY_VERSIONS;
    bool more = true;
    assert_non_null(l);
    fx_start(f);
    put_versions(f, "d", 0, max);
    expect_versions(f, "d", 0, max - 1, l);
    assert_int_equal(stored_of(f, "d", st, max + 2), max - 1);
    put_versions(f, "d", max, 1);
    expect_versions(f, "d", 1, max, l);
    assert_int_equal(stored_of(f, "d", st, max + 2), max - 1);

    /* A delete adds two versions (the record and its tombstone) and
     * leaves no current one. */
    fx_del(f, "d", 99);
    history(f, "d", 1, 0, STORE_SCAN_LIMIT_MAX, l, &more);
    assert_int_equal(l->n, max);
    assert_true(rec_is(&l->r[0], "d", "d.2"));
    assert_true(rec_is(&l->r[max - 2], "d", "d.32"));
    assert_true(l->r[max - 1].deleted);
    recs_free(l);
    assert_int_equal(stored_of(f, "d", st, max + 2), max);

    /* Created again: no version goes to hist, yet the oldest goes. */
    fx_put(f, "d", "again", 100);
    history(f, "d", 1, 0, STORE_SCAN_LIMIT_MAX, l, &more);
    assert_int_equal(l->n, max);
    assert_true(rec_is(&l->r[0], "d", "d.3"));
    assert_true(l->r[max - 2].deleted);
    assert_true(rec_is(&l->r[max - 1], "d", "again"));
    assert_int_equal(l->r[max - 1].version, 1);
    recs_free(l);
    assert_int_equal(stored_of(f, "d", st, max + 2), max - 1);
    fx_expect_hist_not_current(f, FX_GROUP);
    free(l);
}

/* n keys of the form "s<i>" whose hashes agree under the store's mask
 * (one bit: half of all keys agree). */
static void same_hash_keys(char keys[][16], size_t n)
{
    size_t got = 0;
    for (int i = 0; got < n && i < 1000; i++) {
        char k[16];
        snprintf(k, sizeof(k), "s%d", i);
        if ((store_key_hash((const uint8_t *)k, strlen(k)) & 1u) == 0) {
            memcpy(keys[got++], k, sizeof(k));
        }
    }
    assert_int_equal(got, n);
}

/* Keys sharing a hash, written by one request, then overwritten in any
 * order and deleted by later ones: their replaced versions share hash
 * and revision, and each takes the lowest free slot - none overwrites
 * another, and every key's history stays its own. */
static void test_history_shared_hash(void **state)
{
    struct fx *f = *state;
    struct recs *l = calloc(1, sizeof(*l));
    char k[3][16];
    struct fx_version st[8];
    bool more = true;
    assert_non_null(l);
    f->opts.test_key_hash_bits = 1;
    fx_start(f);
    same_hash_keys(k, 3);
    struct req q;
    req_init(&q, 1, "w");
    req_put(&q, k[0], "a1");
    req_put(&q, k[1], "b1");
    req_put(&q, k[2], "c1");
    uint64_t r1 = fx_apply(f, &q).revision;
    req_init(&q, 2, "w");
    q.r.flags = STORE_REQ_SINGLE;
    req_put(&q, k[1], "b2");
    fx_apply(f, &q);
    req_init(&q, 3, "w");
    req_put(&q, k[2], "c2");
    req_put(&q, k[0], "a2");
    fx_apply(f, &q);
    /* At revision r1: k1's version at slot 0, k2's at 1, k0's at 2. */
    const size_t want_slot[3] = {2, 0, 1};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(stored_of(f, k[i], st, 8), 1);
        assert_true(st[0].mod_rev == r1 && st[0].slot == want_slot[i]);
    }
    req_init(&q, 4, "w");
    for (size_t i = 0; i < 3; i++) {
        req_del(&q, k[i]);
    }
    fx_apply(f, &q);
    const char *v1[3] = {"a1", "b1", "c1"}, *v2[3] = {"a2", "b2", "c2"};
    for (size_t i = 0; i < 3; i++) {
        history(f, k[i], strlen(k[i]), 0, 10, l, &more);
        assert_int_equal(l->n, 3);
        assert_true(rec_is(&l->r[0], k[i], v1[i]));
        assert_true(rec_is(&l->r[1], k[i], v2[i]));
        assert_true(l->r[2].deleted && rec_is(&l->r[2], k[i], NULL));
        recs_free(l);
    }
    fx_expect_hist_not_current(f, FX_GROUP);
    free(l);
}

/* --- Long keys and their collisions -------------------------------------- */

/* A long key: STORE_KV_INLINE_KEY_BYTES of `fill`, then `tail`. */
static size_t long_key(uint8_t *k, char fill, const char *tail)
{
    memset(k, fill, STORE_KV_INLINE_KEY_BYTES);
    memcpy(k + STORE_KV_INLINE_KEY_BYTES, tail, strlen(tail));
    return STORE_KV_INLINE_KEY_BYTES + strlen(tail);
}

static void test_long_key_collision(void **state)
{
    struct fx *f = *state;
    static uint8_t k1[STORE_KEY_BYTES_MAX], k2[STORE_KEY_BYTES_MAX],
        k3[STORE_KEY_BYTES_MAX];
    f->opts.test_key_hash_bits = 1;
    fx_start(f);
    /* k2 shares k1's prefix and one-bit hash: the same LMDB key. */
    size_t l1 = long_key(k1, 'p', "one"), l2 = 0;
    for (int i = 0; l2 == 0 && i < 64; i++) {
        char tail[16];
        snprintf(tail, sizeof(tail), "two%d", i);
        size_t n = long_key(k2, 'p', tail);
        if ((store_key_hash(k2, n) & 1) == (store_key_hash(k1, l1) & 1)) {
            l2 = n;
        }
    }
    assert_true(l2 > 0);
    size_t l3 = long_key(k3, 'q', "three");

    struct req q;
    req_init(&q, 1, "w");
    req_put_n(&q, k1, l1, "1", 1);
    assert_int_equal(fx_apply(f, &q).result, KHO_OK);
    /* The second key is refused, and takes its request's other ops down. */
    req_init(&q, 1, "w");
    req_put_n(&q, k3, l3, "3", 1);
    req_put_n(&q, k2, l2, "2", 1);
    struct store_apply_result r = fx_apply(f, &q);
    assert_int_equal(r.result, KHO_ECONFLICT);
    assert_int_equal(r.failed_cmp, 0);
    static struct recs l;
    assert_int_equal(store_kv_read(f->s, FX_GROUP, k3, l3, recs_cb, &l, NULL),
                     KHO_ENOTFOUND);
    assert_int_equal(store_kv_read(f->s, FX_GROUP, k2, l2, recs_cb, &l, NULL),
                     KHO_ENOTFOUND);
    /* k1 is untouched; once it is deleted, k2 may take the slot. */
    l.n = 0;
    assert_int_equal(store_kv_read(f->s, FX_GROUP, k1, l1, recs_cb, &l, NULL),
                     KHO_OK);
    assert_int_equal(l.n, 1);
    recs_free(&l);
    req_init(&q, 1, "w");
    req_del_n(&q, k1, l1);
    assert_int_equal(fx_apply(f, &q).result, KHO_OK);
    /* Two fresh colliding keys in one request collide with each other. */
    req_init(&q, 1, "w");
    req_put_n(&q, k1, l1, "1", 1);
    req_put_n(&q, k2, l2, "2", 1);
    assert_int_equal(fx_apply(f, &q).result, KHO_ECONFLICT);
    req_init(&q, 1, "w");
    req_put_n(&q, k2, l2, "2", 1);
    assert_int_equal(fx_apply(f, &q).result, KHO_OK);
    assert_int_equal(store_kv_read(f->s, FX_GROUP, k2, l2, recs_cb, &l, NULL),
                     KHO_OK);
    assert_int_equal(store_kv_read(f->s, FX_GROUP, k1, l1, recs_cb, &l, NULL),
                     KHO_ENOTFOUND);
    recs_free(&l);
}

/* --- Scans --------------------------------------------------------------- */

struct scan_q {
    const char *start, *end, *after;
    uint32_t limit;
    size_t max_bytes;
};

/* Scans with string bounds (NULL: none); returns the keys, comma-joined. */
static void scan_str(struct fx *f, const struct scan_q *sq, char *out,
                     size_t cap, bool *more)
{
    static struct recs l;
    struct store_scan q = {
        .start = (const uint8_t *)sq->start,
        .start_len = sq->start != NULL ? strlen(sq->start) : 0,
        .end = (const uint8_t *)sq->end,
        .end_len = sq->end != NULL ? strlen(sq->end) : 0,
        .after = (const uint8_t *)sq->after,
        .after_len = sq->after != NULL ? strlen(sq->after) : 0,
        .limit = sq->limit != 0 ? sq->limit : 100,
        .max_bytes = sq->max_bytes != 0 ? sq->max_bytes : SIZE_MAX,
    };
    uint64_t applied = 0;
    l.n = 0;
    l.stop_after = 0;
    int rc = store_kv_scan(f->s, FX_GROUP, &q, recs_cb, &l, more, &applied);
    if (rc != KHO_OK) {
        fail_msg("scan: %s: %s", kho_errname(rc), store_errmsg(f->s));
    }
    assert_int_equal(applied, f->index[0]);
    out[0] = '\0';
    for (size_t i = 0; i < l.n; i++) {
        size_t at = strlen(out);
        snprintf(out + at, cap - at, "%s%.*s", i > 0 ? "," : "",
                 (int)l.r[i].key_len, (const char *)l.r[i].key);
    }
    recs_free(&l);
}

static void expect_scan(struct fx *f, struct scan_q sq, const char *want,
                        bool want_more)
{
    char got[1024];
    bool more = !want_more;
    scan_str(f, &sq, got, sizeof(got), &more);
    if (strcmp(got, want) != 0 || more != want_more) {
        fail_msg("scan [%s, %s) after %s: got \"%s\" more %d, want \"%s\" "
                 "more %d",
                 sq.start ? sq.start : "-", sq.end ? sq.end : "-",
                 sq.after ? sq.after : "-", got, more, want, want_more);
    }
}

static void test_scan(void **state)
{
    struct fx *f = *state;
    fx_start(f);
    const char *keys[] = {"d", "b", "bb", "a", "ba", "c", "bc"};
    for (size_t i = 0; i < 7; i++) {
        fx_put(f, keys[i], "12345", 1);
    }
    /* A neighbouring group's keys are never seen. */
    fx_create_group(f->s, FX_GROUP + 1);
    struct req q;
    req_init(&q, 1, NULL);
    req_put(&q, "b0", "x");
    fx_apply_to(f, FX_GROUP + 1, &q);

    expect_scan(f, (struct scan_q){0}, "a,b,ba,bb,bc,c,d", false);
    /* Ranges, prefix-like ones included ("b" is [b, c)). */
    expect_scan(f, (struct scan_q){.start = "b", .end = "c"}, "b,ba,bb,bc",
                false);
    expect_scan(f, (struct scan_q){.start = "ba", .end = "bb"}, "ba", false);
    expect_scan(f, (struct scan_q){.start = "bb"}, "bb,bc,c,d", false);
    expect_scan(f, (struct scan_q){.end = "b"}, "a", false);
    expect_scan(f, (struct scan_q){.start = "c", .end = "b"}, "", false);
    expect_scan(f, (struct scan_q){.start = "e"}, "", false);
    expect_scan(f, (struct scan_q){.start = "b", .end = "b"}, "", false);
    /* Limits and continuation: *more only when the range has more. */
    expect_scan(f, (struct scan_q){.start = "b", .end = "c", .limit = 2},
                "b,ba", true);
    expect_scan(
        f, (struct scan_q){.start = "b", .end = "c", .after = "ba", .limit = 2},
        "bb,bc", false);
    expect_scan(f, (struct scan_q){.limit = 3}, "a,b,ba", true);
    expect_scan(f, (struct scan_q){.after = "ba", .limit = 3}, "bb,bc,c", true);
    expect_scan(f, (struct scan_q){.after = "c", .limit = 3}, "d", false);
    expect_scan(f, (struct scan_q){.after = "d", .limit = 3}, "", false);
    expect_scan(f, (struct scan_q){.after = "bab"}, "bb,bc,c,d", false);
    expect_scan(f, (struct scan_q){.start = "c", .after = "a"}, "c,d", false);
    expect_scan(f, (struct scan_q){.limit = 7}, "a,b,ba,bb,bc,c,d", false);
    /* max_bytes counts keys and values; one record always comes. */
    expect_scan(f, (struct scan_q){.max_bytes = 1}, "a", true);
    expect_scan(f, (struct scan_q){.max_bytes = 13}, "a,b", true);
    expect_scan(f, (struct scan_q){.max_bytes = 19}, "a,b,ba", true);
    expect_scan(f, (struct scan_q){.start = "c", .max_bytes = 12}, "c,d",
                false);

    /* Errors. */
    static struct recs l;
    bool more = false;
    struct store_scan bad = {.limit = 0};
    assert_int_equal(
        store_kv_scan(f->s, FX_GROUP, &bad, recs_cb, &l, &more, NULL),
        KHO_EINVAL);
    bad.limit = STORE_SCAN_LIMIT_MAX + 1;
    assert_int_equal(
        store_kv_scan(f->s, FX_GROUP, &bad, recs_cb, &l, &more, NULL),
        KHO_EINVAL);
    static uint8_t huge[STORE_KEY_BYTES_MAX + 1];
    bad = (struct store_scan){
        .start = huge, .start_len = sizeof(huge), .limit = 1};
    assert_int_equal(
        store_kv_scan(f->s, FX_GROUP, &bad, recs_cb, &l, &more, NULL),
        KHO_EINVAL);
    struct store_scan all = {.limit = 10, .max_bytes = SIZE_MAX};
    assert_int_equal(
        store_kv_scan(f->s, FX_GROUP + 2, &all, recs_cb, &l, &more, NULL),
        KHO_ENOTFOUND);
    l.n = 0;
    l.stop_after = 3;
    assert_int_equal(
        store_kv_scan(f->s, FX_GROUP, &all, recs_cb, &l, &more, NULL),
        KHO_EBUSY);
    l.stop_after = 0;
    recs_free(&l);
}

/* Scans [start, end) of raw keys one record per page, following `after`,
 * into l (kept in order); *pages counts the calls. */
static void scan_pages(struct fx *f, const uint8_t *start, size_t start_len,
                       const uint8_t *end, size_t end_len, struct recs *l)
{
    static struct recs page;
    bool more = true;
    l->n = 0;
    for (int guard = 0; more && guard < 100; guard++) {
        struct store_scan q = {.start = start,
                               .start_len = start_len,
                               .end = end,
                               .end_len = end_len,
                               .after = l->n > 0 ? l->r[l->n - 1].key : NULL,
                               .after_len =
                                   l->n > 0 ? l->r[l->n - 1].key_len : 0,
                               .limit = 1,
                               .max_bytes = SIZE_MAX};
        page.n = 0;
        assert_int_equal(
            store_kv_scan(f->s, FX_GROUP, &q, recs_cb, &page, &more, NULL),
            KHO_OK);
        assert_true(page.n <= 1);
        if (page.n == 1) {
            assert_true(l->n < RECS_MAX);
            l->r[l->n++] = page.r[0]; /* takes the value's ownership */
        }
        assert_true(page.n == 1 || !more);
    }
    assert_false(more);
}

static bool has_key(const struct recs *l, const uint8_t *key, size_t len)
{
    for (size_t i = 0; i < l->n; i++) {
        if (l->r[i].key_len == len && memcmp(l->r[i].key, key, len) == 0) {
            return true;
        }
    }
    return false;
}

/* Long keys sharing their first STORE_KV_INLINE_KEY_BYTES bytes come in
 * hash order, but ranges and continuation still hold bytewise. */
static void test_scan_long_keys(void **state)
{
    struct fx *f = *state;
    static uint8_t keys[7][STORE_KEY_BYTES_MAX];
    size_t lens[7];
    struct recs *full = calloc(1, sizeof(*full));
    struct recs *got = calloc(1, sizeof(*got));
    assert_non_null(full);
    assert_non_null(got);
    fx_start(f);
    memcpy(keys[0], "o", 1);
    lens[0] = 1;
    lens[1] = long_key(keys[1], 'p', ""); /* inline, the shared prefix */
    lens[2] = long_key(keys[2], 'p', "a");
    lens[3] = long_key(keys[3], 'p', "b");
    lens[4] = long_key(keys[4], 'p', "c");
    lens[5] = long_key(keys[5], 'p', "d");
    memcpy(keys[6], "q", 1);
    lens[6] = 1;
    for (size_t i = 0; i < 7; i++) {
        struct req q;
        req_init(&q, 1, NULL);
        req_put_n(&q, keys[i], lens[i], "v", 1);
        assert_int_equal(fx_apply(f, &q).result, KHO_OK);
    }
    /* The whole group, page by page: each key once, o and p first, q last. */
    scan_pages(f, NULL, 0, NULL, 0, full);
    assert_int_equal(full->n, 7);
    assert_true(rec_is(&full->r[0], "o", "v"));
    assert_int_equal(full->r[1].key_len, lens[1]);
    assert_true(rec_is(&full->r[6], "q", "v"));
    for (size_t i = 0; i < 7; i++) {
        assert_true(has_key(full, keys[i], lens[i]));
    }
    /* One call sees the same order. */
    static struct recs one;
    bool more = true;
    struct store_scan all = {.limit = 100, .max_bytes = SIZE_MAX};
    one.n = 0;
    assert_int_equal(
        store_kv_scan(f->s, FX_GROUP, &all, recs_cb, &one, &more, NULL),
        KHO_OK);
    assert_int_equal(one.n, 7);
    for (size_t i = 0; i < 7; i++) {
        assert_int_equal(one.r[i].key_len, full->r[i].key_len);
        assert_memory_equal(one.r[i].key, full->r[i].key, one.r[i].key_len);
    }
    recs_free(&one);
    /* [p..b, p..d): b and c only, whatever their hash order, paged. */
    scan_pages(f, keys[3], lens[3], keys[5], lens[5], got);
    assert_int_equal(got->n, 2);
    assert_true(has_key(got, keys[3], lens[3]));
    assert_true(has_key(got, keys[4], lens[4]));
    recs_free(got);
    /* [p..b, q): b, c, d. */
    scan_pages(f, keys[3], lens[3], keys[6], lens[6], got);
    assert_int_equal(got->n, 3);
    assert_false(has_key(got, keys[2], lens[2]));
    recs_free(got);
    /* [p, p..a]: the inline prefix key only... and p..a is excluded. */
    scan_pages(f, keys[1], lens[1], keys[2], lens[2], got);
    assert_int_equal(got->n, 1);
    assert_int_equal(got->r[0].key_len, lens[1]);
    recs_free(got);
    recs_free(full);
    free(full);
    free(got);
}

/* --- Malformed entries --------------------------------------------------- */

static uint32_t crc_u64(uint32_t c, uint64_t x)
{
    uint8_t b[8];
    memcpy(b, &x, sizeof(b));
    return store_crc32c_update(c, b, sizeof(b));
}

static uint32_t crc_rec(uint32_t c, const struct rec *r)
{
    c = store_crc32c_update(c, r->key, r->key_len);
    c = r->value_len > 0 ? store_crc32c_update(c, r->value, r->value_len) : c;
    c = crc_u64(c, r->value_len);
    c = crc_u64(c, r->version);
    c = crc_u64(c, r->create_rev);
    c = crc_u64(c, r->mod_rev);
    c = crc_u64(c, r->time_ms);
    c = crc_u64(c, r->deleted);
    return store_crc32c_update(c, r->writer, strlen(r->writer));
}

/* A digest of a group's state: every record and the history of every key
 * in `probe` (so deleted keys count too). */
static uint32_t digest(struct store *s, uint64_t group,
                       const char *const *probe, size_t n_probe)
{
    static struct recs l;
    bool more = true;
    uint32_t c = store_crc32c_init();
    struct store_scan all = {.limit = STORE_SCAN_LIMIT_MAX,
                             .max_bytes = SIZE_MAX};
    l.n = 0;
    assert_int_equal(store_kv_scan(s, group, &all, recs_cb, &l, &more, NULL),
                     KHO_OK);
    assert_false(more);
    for (size_t i = 0; i < l.n; i++) {
        c = crc_rec(c, &l.r[i]);
    }
    recs_free(&l);
    for (size_t k = 0; k < n_probe; k++) {
        assert_int_equal(store_kv_history(s, group, probe[k], strlen(probe[k]),
                                          0, RECS_MAX, recs_cb, &l, &more,
                                          NULL),
                         KHO_OK);
        for (size_t i = 0; i < l.n; i++) {
            c = crc_rec(c, &l.r[i]);
        }
        recs_free(&l);
    }
    return store_crc32c_final(c);
}

static const char *const probe_keys[] = {"a", "b", "c", "k", "x", "y"};
#define N_PROBES (sizeof(probe_keys) / sizeof(probe_keys[0]))

/* Applies the same bytes to both replicas: the same answer. */
static struct store_apply_result both(struct fx *f, uint64_t *index2,
                                      const uint8_t *data, size_t len)
{
    struct store_apply_result a = fx_apply_raw(f, FX_GROUP, data, len);
    struct store_apply_result b =
        fx_apply_raw_at(f->s2, FX_GROUP, index2, data, len);
    assert_int_equal(a.result, b.result);
    assert_int_equal(a.version, b.version);
    assert_int_equal(a.revision, b.revision);
    assert_int_equal(a.failed_cmp, b.failed_cmp);
    assert_int_equal(a.duplicate, b.duplicate);
    return a;
}

/* One random mutation of base into buf; returns its length. */
static size_t mutate(const uint8_t *base, size_t len, uint8_t *buf, size_t cap,
                     bool *truncated)
{
    size_t n = len;
    memcpy(buf, base, len);
    *truncated = false;
    switch (rnd() % 4) {
    case 0: /* cut short */
        n = (size_t)(rnd() % len);
        *truncated = true;
        break;
    case 1: /* flip bytes */
        for (uint64_t i = 0, k = 1 + rnd() % 4; i < k; i++) {
            buf[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
        }
        break;
    case 2: /* garbage, sometimes behind a valid magic */
        n = (size_t)(rnd() % cap);
        for (size_t i = 0; i < n; i++) {
            buf[i] = (uint8_t)rnd();
        }
        if (n > 0 && rnd() % 2 == 0) {
            buf[0] = STORE_REQ_MAGIC;
        }
        break;
    default: /* trailing bytes */
        n = len + 1 + (size_t)(rnd() % (cap - len - 1));
        for (size_t i = len; i < n; i++) {
            buf[i] = (uint8_t)rnd();
        }
        break;
    }
    return n;
}

static void test_malformed_entries(void **state)
{
    struct fx *f = *state;
    uint8_t buf[256];
    uint64_t index2 = 0;
    rnd_state = g_seed | 1;
    fx_start(f);
    assert_true(fx_tmp(f->dir2));
    f->s2 = fx_open(f->dir2, &f->opts);
    fx_create_group(f->s2, FX_GROUP);

    struct req q;
    req_init(&q, 5, "wr");
    q.r.session = 3;
    q.r.seq = 1;
    req_cmp(&q, "a", STORE_CMP_VERSION, STORE_CMP_LT, 100);
    req_cmp_value(&q, "b", STORE_CMP_NE, "zz");
    req_put(&q, "a", "1");
    req_del(&q, "b");
    req_put(&q, "c", "22");
    size_t len = 0;
    uint8_t *base = req_encode(&q, &len);
    assert_true(len < sizeof(buf) / 2);

    /* No data at all. */
    assert_int_equal(both(f, &index2, NULL, 0).result, KHO_EINVAL);
    for (int i = 0; i < 200; i++) {
        bool truncated = false;
        size_t n = mutate(base, len, buf, sizeof(buf), &truncated);
        uint32_t before = digest(f->s, FX_GROUP, probe_keys, N_PROBES);
        struct store_apply_result r = both(f, &index2, buf, n);
        if (truncated) {
            assert_int_equal(r.result, KHO_EINVAL);
        }
        if (r.result == KHO_EINVAL || r.result == KHO_ETOOLARGE) {
            assert_int_equal(digest(f->s, FX_GROUP, probe_keys, N_PROBES),
                             before);
        }
        if (i % 10 == 0) { /* the unmutated request now and then */
            both(f, &index2, base, len);
            q.r.seq++;
            free(base);
            base = req_encode(&q, &len);
        }
    }
    assert_int_equal(digest(f->s, FX_GROUP, probe_keys, N_PROBES),
                     digest(f->s2, FX_GROUP, probe_keys, N_PROBES));
    uint64_t a1 = 0, a2 = 0;
    struct raft_hard_state hs;
    assert_int_equal(store_group_load(f->s, FX_GROUP, &hs, &a1), KHO_OK);
    assert_int_equal(store_group_load(f->s2, FX_GROUP, &hs, &a2), KHO_OK);
    assert_int_equal(a1, a2);
    assert_int_equal(a1, f->index[0]); /* every entry advanced it */
    free(base);
}

/* --- Snapshots ----------------------------------------------------------- */

/* The group's whole snapshot stream on s, in memory (the caller frees
 * it): small groups only. */
static uint8_t *stream_of(struct store *s, uint64_t group,
                          struct raft_snapshot_meta *m, uint64_t *total,
                          uint32_t *crc)
{
    struct store_snap_reader *r = NULL;
    assert_int_equal(store_snap_reader_open(s, group, &r, m, total, crc),
                     KHO_OK);
    uint8_t *buf = malloc((size_t)*total);
    assert_non_null(buf);
    size_t n = 0;
    assert_int_equal(store_snap_reader_read(r, 0, buf, (size_t)*total, &n),
                     KHO_OK);
    assert_int_equal(n, *total);
    store_snap_reader_close(r);
    return buf;
}

/* Feeds bytes to a new stage of group on s; returns the first error of
 * writing or finishing (the stage is closed). */
static int stage_bytes(struct store *s, uint64_t group,
                       const struct raft_snapshot_meta *m, const uint8_t *b,
                       uint64_t len, uint64_t total, uint32_t crc)
{
    struct store_stage *st = NULL;
    uint8_t desc[STORE_STAGE_DESC_BYTES];
    assert_int_equal(
        store_stage_begin(s, group, m->index, m->term, total, crc, &st),
        KHO_OK);
    int rc = store_stage_write(st, b, (size_t)len);
    if (rc == KHO_OK) {
        rc = store_stage_finish(st, desc);
    }
    store_stage_close(st);
    return rc;
}

static struct store_apply_result sput_at(struct store *s, uint64_t *index,
                                         uint64_t session, uint64_t seq,
                                         const char *key, uint64_t time_ms)
{
    struct req q;
    req_init(&q, time_ms, "s");
    q.r.flags = STORE_REQ_SINGLE;
    q.r.session = session;
    q.r.seq = seq;
    req_put(&q, key, "v");
    size_t len = 0;
    uint8_t *buf = req_encode(&q, &len);
    struct store_apply_result r = fx_apply_raw_at(s, FX_GROUP, index, buf, len);
    free(buf);
    return r;
}

static void test_snapshot_carries_state(void **state)
{
    struct fx *f = *state;
    struct raft_conf conf = {.n = 1,
                             .members = {{.id = 1, .role = RAFT_VOTER}}};
    const uint64_t t0 = 1000;
    f->opts.sessions_max = 3;
    fx_start(f);
    put_versions(f, "a", 0, 3);
    fx_put(f, "b", "gone", 1);
    fx_del(f, "b", 2);
    fx_put(f, "k", "kept", 3);
    struct store_apply_result s1 = sput_at(f->s, &f->index[0], 1, 1, "x", t0);
    sput_at(f->s, &f->index[0], 2, 4, "y", t0);
    uint32_t want = digest(f->s, FX_GROUP, probe_keys, N_PROBES);
    assert_int_equal(store_compact(f->s, FX_GROUP, f->index[0], &conf), KHO_OK);

    /* A second node installs it: the same records, history and sessions. */
    assert_true(fx_tmp(f->dir2));
    f->s2 = fx_open(f->dir2, &f->opts);
    fx_create_group(f->s2, FX_GROUP);
    struct raft_snapshot_meta m = fx_transfer(f->s, f->s2, FX_GROUP, 100);
    assert_int_equal(m.index, f->index[0]);
    assert_int_equal(digest(f->s2, FX_GROUP, probe_keys, N_PROBES), want);
    uint64_t index2 = m.index;
    struct store_apply_result r = sput_at(f->s2, &index2, 1, 1, "x", t0);
    assert_true(r.duplicate);
    assert_int_equal(r.revision, s1.revision);
    assert_int_equal(r.version, 1);
    assert_int_equal(sput_at(f->s2, &index2, 2, 3, "y", t0).result, KHO_ESTALE);
    /* The sessions were counted on the way in: one more fits, then the
     * table is full. */
    assert_int_equal(sput_at(f->s2, &index2, 3, 1, "z", t0).result, KHO_OK);
    assert_int_equal(sput_at(f->s2, &index2, 4, 1, "z", t0).result, KHO_EBUSY);
    /* So did the idle index: sessions 1 and 2 are forgotten in time. */
    assert_int_equal(
        sput_at(f->s2, &index2, 4, 1, "z", t0 + STORE_SESSION_IDLE_MS).result,
        KHO_OK);
    assert_false(sput_at(f->s2, &index2, 1, 1, "x", t0).duplicate);

    /* Damaged streams are refused and leave the node as it was. */
    uint32_t now = digest(f->s2, FX_GROUP, probe_keys, N_PROBES);
    uint64_t total = 0;
    uint32_t crc = 0;
    uint8_t *data = stream_of(f->s, FX_GROUP, &m, &total, &crc);
    m.index = index2 + 1; /* past what s2 applied, as a leader would send */
    assert_int_equal(stage_bytes(f->s2, FX_GROUP, &m, data, total, total, crc),
                     KHO_ECORRUPT); /* the header says another index */
    m.index = f->index[0];
    data[total / 2] ^= 0x10;
    assert_int_equal(stage_bytes(f->s2, FX_GROUP, &m, data, total, total, crc),
                     KHO_ECORRUPT);
    data[total / 2] ^= 0x10;
    assert_int_equal(
        stage_bytes(f->s2, FX_GROUP, &m, data, total - 1, total, crc),
        KHO_ECORRUPT);
    /* Well sealed but ill formed: an unknown database. */
    data[STREAM_HEADER_BYTES] = 9;
    assert_int_equal(stage_bytes(f->s2, FX_GROUP, &m, data, total, total, crc),
                     KHO_ECORRUPT);
    data[STREAM_HEADER_BYTES] = 1;
    assert_int_equal(stage_bytes(f->s2, FX_GROUP, &m, data, total, total, crc),
                     KHO_OK);
    assert_int_equal(digest(f->s2, FX_GROUP, probe_keys, N_PROBES), now);
    fx_gc_all(f->s2, 64);
    assert_int_equal(digest(f->s2, FX_GROUP, probe_keys, N_PROBES), now);
    free(data);
}

/* --- Store format 3 ---------------------------------------------------------
 */

static const char *const v3_keys[] = {"m0",   "m1",   "m2",   "m3",
                                      "p",    "gone", "back", "big0",
                                      "big1", "big2", "big3", "big4"};
#define N_V3_KEYS (sizeof(v3_keys) / sizeof(v3_keys[0]))

/* Requests of every kind format 3 stored: keys written together and
 * replaced later (in the order they were written, so that the slots they
 * take do not depend on when a replica converted - store.h, "History"),
 * deletes, a key past the bound, and values of a MiB. */
static void fill_for_v3(struct fx *f)
{
    static uint8_t big[1000u << 10];
    struct req q;
    for (int round = 0; round < 3; round++) {
        char v[4][32];
        req_init(&q, 10 + (uint64_t)round, "multi");
        for (int i = 0; i < 4; i++) {
            snprintf(v[i], sizeof(v[i]), "m%d.%d", i, round);
            req_put(&q, v3_keys[i], v[i]);
        }
        if (round == 1) {
            req_del(&q, "gone");
        }
        fx_apply(f, &q);
        fx_put(f, "gone", "here", 20);
    }
    put_versions(f, "p", 0, (int)STORE_HISTORY_VERSIONS + 3);
    fx_put(f, "back", "1", 30);
    fx_del(f, "back", 31);
    fx_put(f, "back", "2", 32);
    for (int v = 0; v < 2; v++) {
        for (int i = 0; i < 5; i++) {
            memset(big, 'a' + v * 5 + i, sizeof(big));
            req_init(&q, 40, "big");
            req_put_n(&q, v3_keys[7 + i], 4, big, sizeof(big));
            fx_apply(f, &q);
        }
    }
}

static uint32_t raw_format(const char *dir)
{
    struct fx_raw r;
    MDB_val k = {.mv_size = 6, .mv_data = "format"}, v;
    fx_raw_begin(&r, dir, false);
    assert_int_equal(mdb_get(r.txn, fx_raw_dbi(&r, "info"), &k, &v), 0);
    assert_int_equal(v.mv_size, 4);
    uint32_t format = get_le32(v.mv_data);
    fx_raw_end(&r, false);
    return format;
}

static uint64_t check_hash(struct fx *f)
{
    uint64_t h = 0, applied = 0;
    assert_int_equal(store_check_hash(f->s, FX_GROUP, &h, &applied), KHO_OK);
    return h;
}

/* A store as format 3 left it - every current record in hist too, every
 * version at its op's slot - is converted when opened, in several
 * transactions (the MiB values): the same bytes as the store that ran
 * format 4 (check hash), the same histories, no current record in hist,
 * format 4 recorded, every record sound (a stream can be made of it).
 * Converting again finds nothing to do. Key hashes of two bits: versions
 * of several keys share hashes and revisions. */
static void test_history_format3_converted(void **state)
{
    struct fx *f = *state;
    static struct fx_versions vs;
    f->opts.test_key_hash_bits = 2;
    fx_start(f);
    fill_for_v3(f);
    const uint64_t h4 = check_hash(f);
    const uint32_t d4 = digest(f->s, FX_GROUP, v3_keys, N_V3_KEYS);
    fx_hist_stored(f, FX_GROUP, &vs);
    const size_t stored4 = vs.n;
    fx_versions_free(&vs);
    fx_make_format3(f, FX_GROUP, true);
    assert_int_equal(raw_format(f->dir), 3);
    f->s = fx_open(f->dir, &f->opts);
    store_close(f->s);
    assert_int_equal(raw_format(f->dir), STORE_FORMAT_VERSION);
    f->s = fx_open(f->dir, &f->opts);
    assert_true(check_hash(f) == h4);
    assert_int_equal(digest(f->s, FX_GROUP, v3_keys, N_V3_KEYS), d4);
    fx_hist_stored(f, FX_GROUP, &vs);
    assert_int_equal(vs.n, stored4);
    fx_versions_free(&vs);
    fx_expect_hist_not_current(f, FX_GROUP);
    struct store_snap_reader *r = NULL;
    struct raft_snapshot_meta m;
    uint64_t total = 0;
    uint32_t crc = 0;
    assert_int_equal(
        store_snap_reader_open(f->s, FX_GROUP, &r, &m, &total, &crc), KHO_OK);
    store_snap_reader_close(r);

    /* Format 3 recorded again over format-4 contents: nothing changes. */
    store_close(f->s);
    f->s = NULL;
    struct fx_raw raw;
    uint8_t v3[4] = {3, 0, 0, 0};
    MDB_val k = {.mv_size = 6, .mv_data = "format"};
    MDB_val v = {.mv_size = sizeof(v3), .mv_data = v3};
    fx_raw_begin(&raw, f->dir, true);
    assert_int_equal(mdb_put(raw.txn, fx_raw_dbi(&raw, "info"), &k, &v, 0), 0);
    fx_raw_end(&raw, true);
    f->s = fx_open(f->dir, &f->opts);
    assert_true(check_hash(f) == h4);
    assert_int_equal(digest(f->s, FX_GROUP, v3_keys, N_V3_KEYS), d4);
}

/* --- Space --------------------------------------------------------------- */

static void test_space(void **state)
{
    struct fx *f = *state;
    static uint8_t blob[64 << 10];
    uint64_t used0 = 0, used1 = 0, map = 0;
    fx_start(f);
    assert_int_equal(store_space(f->s, &used0, &map), KHO_OK);
    assert_int_equal(map, f->opts.map_size_bytes);
    assert_true(used0 > 0);
    assert_true(used0 < map);
    memset(blob, 'b', sizeof(blob));
    for (int i = 0; i < 40; i++) {
        char k[16];
        struct req q;
        snprintf(k, sizeof(k), "blob%d", i);
        req_init(&q, 1, NULL);
        req_put_n(&q, k, strlen(k), blob, sizeof(blob));
        assert_int_equal(fx_apply(f, &q).result, KHO_OK);
    }
    assert_int_equal(store_space(f->s, &used1, &map), KHO_OK);
    /* Each value is in kv and in the log (not in hist: no key was
     * overwritten): at least 2 x 2.5 MiB. */
    assert_true(used1 >= used0 + 2 * 40 * sizeof(blob));
    assert_true(used1 < map);
}

int main(int argc, char **argv)
{
    g_seed = (uint64_t)time(NULL);
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--seed") == 0) {
            g_seed = strtoull(argv[i + 1], NULL, 10);
        }
    }
    printf("test_txn: seed %llu (replay with --seed %llu)\n",
           (unsigned long long)g_seed, (unsigned long long)g_seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codec_roundtrip),
        cmocka_unit_test(test_codec_limits),
        cmocka_unit_test_setup_teardown(test_compare_numbers, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_compare_values, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_txn_atomic, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_record_fields, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_history, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_history_bound, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_history_collisions, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_history_superseded, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_history_bound_counts_current,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_history_shared_hash, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_history_format3_converted,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_long_key_collision, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_scan, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_scan_long_keys, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_malformed_entries, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_carries_state, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_space, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

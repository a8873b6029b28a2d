/*
 * test_check.c - proves the store's consistency checks (store.h,
 * "Consistency checks"):
 *
 *   - a check marker is a request with STORE_REQ_CHECK and nothing else:
 *     one with an op, a compare, a session or another flag is refused by
 *     the encoder and is a no-op answered KHO_EINVAL when applied;
 *   - two stores that applied the same requests record the same hash at
 *     the same marker, though the group has another data id on each (the
 *     hash leaves data ids and the crcs covering them out), and a marker
 *     changes no record;
 *   - a value rewritten with a valid checksum (store_test_rewrite, what a
 *     disk or a bug could do unseen) changes the hash, and so does a
 *     difference in history or sessions alone;
 *   - a replica converted from store format 3 part-way through the log
 *     (a rolling upgrade) records the same hash as one that applied the
 *     whole log as format 4;
 *   - a group keeps the last STORE_CHECK_KEEP marks; asking for an older
 *     one gives the latest, so the caller can tell it was skipped;
 *   - an alarm is raised, read back after a reopen, and cleared; groups
 *     that do not exist are KHO_ENOTFOUND.
 *
 * Also a tool for tests/integration/backup.sh, which has no other way to
 * reach a stopped node's store:
 *
 *   test_check rewrite DIR GROUP KEY VALUE   store_test_rewrite() on the
 *                                            store in DIR
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "store_fixture.h"

#define T0 1000u

static void check_req(struct req *q)
{
    req_init(q, T0, NULL);
    q->r.flags = STORE_REQ_CHECK;
}

/* Applies a marker on store s; returns its index. */
static uint64_t mark_at(struct store *s, uint64_t group, uint64_t *index)
{
    struct req q;
    size_t len = 0;
    check_req(&q);
    uint8_t *buf = req_encode(&q, &len);
    struct store_apply_result r = fx_apply_raw_at(s, group, index, buf, len);
    free(buf);
    assert_int_equal(r.result, KHO_OK);
    assert_int_equal(r.revision, *index);
    return *index;
}

static uint64_t recorded(struct store *s, uint64_t group, uint64_t index)
{
    struct store_check_mark m;
    uint64_t applied = 0;
    assert_int_equal(store_check_get(s, group, index, &m, &applied), KHO_OK);
    assert_int_equal(m.index, index);
    assert_true(applied >= index);
    return m.hash;
}

static uint64_t hash_now(struct store *s, uint64_t group)
{
    uint64_t h = 0, applied = 0;
    assert_int_equal(store_check_hash(s, group, &h, &applied), KHO_OK);
    return h;
}

/* The same writes on store s (group FX_GROUP, log position *index). */
static void write_some(struct store *s, uint64_t *index)
{
    char key[32], val[64];
    for (int i = 0; i < 40; i++) {
        struct req q;
        req_init(&q, T0 + (uint64_t)i, "writer");
        q.r.session = 1 + (uint64_t)(i % 3);
        q.r.seq = 1 + (uint64_t)i;
        snprintf(key, sizeof(key), "k%03d", i % 25);
        snprintf(val, sizeof(val), "value-%d", i);
        req_put(&q, key, val);
        size_t len = 0;
        uint8_t *buf = req_encode(&q, &len);
        fx_apply_raw_at(s, FX_GROUP, index, buf, len);
        free(buf);
    }
}

/* The second store creates another group first, so that FX_GROUP gets
 * another data id there than on the first. */
static void open_second(struct fx *f)
{
    assert_true(fx_tmp(f->dir2));
    f->s2 = fx_open(f->dir2, &f->opts);
    fx_create_group(f->s2, FX_GROUP + 3);
    fx_create_group(f->s2, FX_GROUP);
}

static void test_marker_encoding(void **state)
{
    (void)state;
    struct req q;
    size_t len = 0;
    uint8_t buf[256];
    check_req(&q);
    assert_int_equal(store_request_encode(&q.r, buf, sizeof(buf), &len),
                     KHO_OK);
    struct store_request back;
    struct store_compare cmps[STORE_TXN_CMPS_MAX];
    struct store_op ops[STORE_TXN_OPS_MAX];
    assert_int_equal(store_request_decode(buf, len, &back, cmps, ops), KHO_OK);
    assert_int_equal(back.flags, STORE_REQ_CHECK);

    check_req(&q);
    req_put(&q, "k", "v");
    assert_int_equal(store_request_encode(&q.r, buf, sizeof(buf), &len),
                     KHO_EINVAL);
    check_req(&q);
    req_cmp(&q, "k", STORE_CMP_VERSION, STORE_CMP_EQ, 0);
    assert_int_equal(store_request_encode(&q.r, buf, sizeof(buf), &len),
                     KHO_EINVAL);
    check_req(&q);
    q.r.session = 5;
    q.r.seq = 1;
    assert_int_equal(store_request_encode(&q.r, buf, sizeof(buf), &len),
                     KHO_EINVAL);
    check_req(&q);
    q.r.flags |= STORE_REQ_SINGLE;
    assert_int_equal(store_request_encode(&q.r, buf, sizeof(buf), &len),
                     KHO_EINVAL);
}

/* A marker with a session, shaped by hand: applied, it is a no-op. */
static void test_malformed_marker_is_noop(void **state)
{
    struct fx *f = *state;
    fx_start(f);
    fx_put(f, "a", "1", T0);
    struct req q;
    size_t len = 0;
    check_req(&q);
    uint8_t *buf = req_encode(&q, &len);
    buf[8] = 9; /* session 9 */
    uint64_t before = hash_now(f->s, FX_GROUP);
    struct store_apply_result r = fx_apply_raw(f, FX_GROUP, buf, len);
    free(buf);
    assert_int_equal(r.result, KHO_EINVAL);
    struct store_check_mark m;
    uint64_t applied = 0;
    assert_int_equal(store_check_get(f->s, FX_GROUP, 2, &m, &applied), KHO_OK);
    assert_int_equal(m.index, 0); /* nothing recorded */
    assert_int_equal(applied, 2);
    assert_true(hash_now(f->s, FX_GROUP) == before);
}

static void test_equal_stores_equal_hash(void **state)
{
    struct fx *f = *state;
    uint64_t i2 = 0;
    fx_start(f);
    open_second(f);
    write_some(f->s, &f->index[0]);
    write_some(f->s2, &i2);
    uint64_t m1 = mark_at(f->s, FX_GROUP, &f->index[0]);
    uint64_t m2 = mark_at(f->s2, FX_GROUP, &i2);
    uint64_t d1 = 0, d2 = 0;
    assert_int_equal(store_group_data_id(f->s, FX_GROUP, &d1), KHO_OK);
    assert_int_equal(store_group_data_id(f->s2, FX_GROUP, &d2), KHO_OK);
    assert_true(d1 != d2);
    assert_int_equal(m1, m2);
    assert_true(recorded(f->s, FX_GROUP, m1) == recorded(f->s2, FX_GROUP, m2));
    /* The marker recorded what the state was, and changed no record. */
    assert_true(hash_now(f->s, FX_GROUP) == recorded(f->s, FX_GROUP, m1));
    fx_expect(f, "k024", "value-24");
}

static void test_rewritten_value_changes_hash(void **state)
{
    struct fx *f = *state;
    uint64_t i2 = 0;
    fx_start(f);
    open_second(f);
    write_some(f->s, &f->index[0]);
    write_some(f->s2, &i2);
    /* Same length, one byte different, checksum recomputed. */
    assert_int_equal(
        store_test_rewrite(f->s2, FX_GROUP, "k007", 4, "value-31", 8), KHO_OK);
    assert_int_equal(
        store_test_rewrite(f->s2, FX_GROUP, "k007", 4, "value-3X", 8), KHO_OK);
    fx_expect_at(f->s2, FX_GROUP, "k007", "value-3X"); /* reads fine */
    uint64_t m1 = mark_at(f->s, FX_GROUP, &f->index[0]);
    uint64_t m2 = mark_at(f->s2, FX_GROUP, &i2);
    assert_true(recorded(f->s, FX_GROUP, m1) != recorded(f->s2, FX_GROUP, m2));
    /* Put back, the hashes agree again. */
    assert_int_equal(
        store_test_rewrite(f->s2, FX_GROUP, "k007", 4, "value-32", 8), KHO_OK);
    assert_true(hash_now(f->s, FX_GROUP) == hash_now(f->s2, FX_GROUP));
    assert_int_equal(store_test_rewrite(f->s2, FX_GROUP, "nokey", 5, "v", 1),
                     KHO_ENOTFOUND);
    assert_int_equal(store_test_rewrite(f->s2, 999, "k007", 4, "v", 1),
                     KHO_ENOTFOUND);
}

/* History and sessions count, not only the current records. */
static void test_history_and_sessions_count(void **state)
{
    struct fx *f = *state;
    uint64_t i2 = 0;
    fx_start(f);
    open_second(f);
    fx_put(f, "a", "1", T0);
    fx_put(f, "a", "2", T0);
    struct req q;
    req_init(&q, T0, "tester");
    q.r.flags = STORE_REQ_SINGLE;
    req_put(&q, "a", "2");
    size_t len = 0;
    uint8_t *buf = req_encode(&q, &len);
    fx_apply_raw_at(f->s2, FX_GROUP, &i2, buf, len);
    fx_apply_raw_at(f->s2, FX_GROUP, &i2, buf, len); /* version 2 too */
    free(buf);
    /* Same current value and version, different history. */
    assert_true(hash_now(f->s, FX_GROUP) != hash_now(f->s2, FX_GROUP));

    struct fx g = {0};
    uint64_t j1 = 0, j2 = 0;
    assert_true(fx_tmp(g.dir));
    assert_true(fx_tmp(g.dir2));
    g.s = fx_open(g.dir, &f->opts);
    g.s2 = fx_open(g.dir2, &f->opts);
    fx_create_group(g.s, FX_GROUP);
    fx_create_group(g.s2, FX_GROUP);
    req_init(&q, T0, "tester");
    req_put(&q, "a", "1");
    buf = req_encode(&q, &len);
    fx_apply_raw_at(g.s, FX_GROUP, &j1, buf, len);
    q.r.session = 3;
    q.r.seq = 1;
    free(buf);
    buf = req_encode(&q, &len);
    fx_apply_raw_at(g.s2, FX_GROUP, &j2, buf, len);
    free(buf);
    /* Same records, one has a session. */
    assert_true(hash_now(g.s, FX_GROUP) != hash_now(g.s2, FX_GROUP));
    store_close(g.s);
    store_close(g.s2);
    fx_rm(g.dir);
    fx_rm(g.dir2);
}

/* Rounds of requests over six keys on store s: each writes them all in
 * one request, but deletes one, so every round replaces records written
 * together at other slots than 0. */
static void write_rounds(struct store *s, uint64_t *index, int from, int n)
{
    for (int r = from; r < from + n; r++) {
        char key[6][16], val[6][32];
        struct req q;
        req_init(&q, T0 + (uint64_t)r, "rounds");
        for (int i = 0; i < 6; i++) {
            snprintf(key[i], sizeof(key[i]), "m%d", i);
            snprintf(val[i], sizeof(val[i]), "m%d.%d", i, r);
            if (i == r % 6) {
                req_del(&q, key[i]);
            } else {
                req_put(&q, key[i], val[i]);
            }
        }
        size_t len = 0;
        uint8_t *buf = req_encode(&q, &len);
        fx_apply_raw_at(s, FX_GROUP, index, buf, len);
        free(buf);
    }
}

/* A rolling upgrade: one replica applies every entry as store format 4;
 * the other applies the first ones as format 3 did (hist shaped so by
 * hand), is converted when it opens, and applies the rest as format 4.
 * They record the same hash at the same marker. */
static void test_converted_replica_agrees(void **state)
{
    struct fx *f = *state;
    uint64_t i2 = 0;
    fx_start(f);
    open_second(f);
    write_rounds(f->s2, &i2, 0, 20);
    write_some(f->s2, &i2);
    write_rounds(f->s2, &i2, 20, 10);
    write_rounds(f->s, &f->index[0], 0, 20);
    write_some(f->s, &f->index[0]);
    fx_make_format3(f, FX_GROUP, true);
    f->s = fx_open(f->dir, &f->opts);
    write_rounds(f->s, &f->index[0], 20, 10);
    uint64_t m1 = mark_at(f->s, FX_GROUP, &f->index[0]);
    uint64_t m2 = mark_at(f->s2, FX_GROUP, &i2);
    assert_int_equal(m1, m2);
    assert_true(recorded(f->s, FX_GROUP, m1) == recorded(f->s2, FX_GROUP, m2));
}

static void test_marks_kept(void **state)
{
    struct fx *f = *state;
    uint64_t idx[STORE_CHECK_KEEP + 3];
    fx_start(f);
    for (size_t i = 0; i < sizeof(idx) / sizeof(idx[0]); i++) {
        fx_put(f, "k", i % 2 ? "odd" : "even", T0);
        idx[i] = mark_at(f->s, FX_GROUP, &f->index[0]);
    }
    size_t n = sizeof(idx) / sizeof(idx[0]);
    for (size_t i = n - STORE_CHECK_KEEP; i < n; i++) {
        recorded(f->s, FX_GROUP, idx[i]);
    }
    /* The oldest are gone: the answer is the latest, not the one asked. */
    struct store_check_mark m;
    uint64_t applied = 0;
    assert_int_equal(store_check_get(f->s, FX_GROUP, idx[0], &m, &applied),
                     KHO_OK);
    assert_int_equal(m.index, idx[n - 1]);
    assert_true(applied > idx[0]);
    uint64_t last = m.hash;
    assert_int_equal(store_check_get(f->s, 999, 1, &m, &applied),
                     KHO_ENOTFOUND);
    /* A reopen keeps them. */
    store_close(f->s);
    f->s = fx_open(f->dir, &f->opts);
    assert_true(recorded(f->s, FX_GROUP, idx[n - 1]) == last);
}

static void test_alarm(void **state)
{
    struct fx *f = *state;
    struct store_check_alarm a = {
        .index = 12, .hash = 0x1234, .expected = 0x5678, .time_ms = 99};
    struct store_check_alarm b;
    fx_start(f);
    assert_int_equal(store_check_alarm(f->s, FX_GROUP, &b), KHO_ENOTFOUND);
    assert_int_equal(store_check_alarm_set(f->s, FX_GROUP, &a), KHO_OK);
    store_close(f->s);
    f->s = fx_open(f->dir, &f->opts);
    assert_int_equal(store_check_alarm(f->s, FX_GROUP, &b), KHO_OK);
    assert_int_equal(b.index, 12);
    assert_true(b.hash == 0x1234 && b.expected == 0x5678);
    assert_int_equal(b.time_ms, 99);
    assert_int_equal(store_check_alarm_set(f->s, FX_GROUP, NULL), KHO_OK);
    assert_int_equal(store_check_alarm(f->s, FX_GROUP, &b), KHO_ENOTFOUND);
    assert_int_equal(store_check_alarm_set(f->s, FX_GROUP, NULL), KHO_OK);
    assert_int_equal(store_check_alarm_set(f->s, 999, &a), KHO_ENOTFOUND);
    /* Deleting the group takes its alarm along. */
    assert_int_equal(store_check_alarm_set(f->s, FX_GROUP, &a), KHO_OK);
    struct store_batch *bt = NULL;
    assert_int_equal(store_write_begin(f->s, &bt), KHO_OK);
    assert_int_equal(store_batch_group_delete(bt, FX_GROUP), KHO_OK);
    assert_int_equal(store_write_commit(bt), KHO_OK);
    fx_create_group(f->s, FX_GROUP);
    assert_int_equal(store_check_alarm(f->s, FX_GROUP, &b), KHO_ENOTFOUND);
}

/* --- The tool ----------------------------------------------------------- */

static int tool_rewrite(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s rewrite DIR GROUP KEY VALUE\n", argv[0]);
        return 2;
    }
    char *end = NULL;
    uint64_t group = strtoull(argv[3], &end, 10);
    if (*end != '\0') {
        fprintf(stderr, "%s: bad group '%s'\n", argv[0], argv[3]);
        return 2;
    }
    struct store *s = NULL;
    int rc = store_open(argv[2], NULL, &s);
    if (rc != KHO_OK) {
        fprintf(stderr, "%s: %s: %s\n", argv[0], kho_errname(rc),
                store_errmsg(NULL));
        return 1;
    }
    rc = store_test_rewrite(s, group, argv[4], strlen(argv[4]), argv[5],
                            strlen(argv[5]));
    if (rc != KHO_OK) {
        fprintf(stderr, "%s: rewrite: %s: %s\n", argv[0], kho_errname(rc),
                store_errmsg(s));
    }
    store_close(s);
    return rc == KHO_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "rewrite") == 0) {
        return tool_rewrite(argc, argv);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_marker_encoding),
        cmocka_unit_test_setup_teardown(test_malformed_marker_is_noop, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_equal_stores_equal_hash, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_rewritten_value_changes_hash,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_history_and_sessions_count,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_converted_replica_agrees, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_marks_kept, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_alarm, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

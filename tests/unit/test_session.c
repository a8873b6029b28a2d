/*
 * test_session.c - proves the store's exactly-once sessions (store.h,
 * "State-machine requests"):
 *
 *   - a retried request (same session and seq) gets the original answer -
 *     result, version, revision, failed compare - with duplicate set, and
 *     is not applied again (the record's version and history stay);
 *   - an older seq is refused with KHO_ESTALE and changes nothing; other
 *     sessions and session 0 are independent;
 *   - the session record survives a reopen (it is in the same transaction
 *     as the data it covers);
 *   - sessions idle for STORE_SESSION_IDLE_MS by the requests' time_ms are
 *     forgotten, oldest first, at most STORE_SESSION_EVICT_PER_APPLY per
 *     applied request, and a session touched later is kept longer;
 *   - a group at store_opts.sessions_max refuses a request of a new session
 *     with KHO_EBUSY (applying nothing, recording nothing) while known
 *     sessions and session 0 carry on, and admits it again once idle
 *     sessions are forgotten;
 *   - out-of-range session options are refused at open.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "store_fixture.h"

#define T0 1000u /* a time early enough that nothing is ever idle */

/* A single put in a session. */
static struct store_apply_result sput(struct fx *f, uint64_t session,
                                      uint64_t seq, const char *key,
                                      const char *value, uint64_t time_ms)
{
    struct req q;
    req_init(&q, time_ms, "s");
    q.r.flags = STORE_REQ_SINGLE;
    q.r.session = session;
    q.r.seq = seq;
    req_put(&q, key, value);
    return fx_apply(f, &q);
}

static uint64_t version_of(struct fx *f, const char *key, char *val, size_t cap)
{
    struct rec r;
    assert_int_equal(fx_read(f, key, &r), KHO_OK);
    assert_true(r.value_len < cap);
    memcpy(val, r.value, r.value_len);
    val[r.value_len] = '\0';
    free(r.value);
    return r.version;
}

static size_t history_len(struct fx *f, const char *key)
{
    static struct recs l;
    bool more = false;
    l.n = 0;
    assert_int_equal(store_kv_history(f->s, FX_GROUP, key, strlen(key), 0,
                                      STORE_SCAN_LIMIT_MAX, recs_cb, &l, &more,
                                      NULL),
                     KHO_OK);
    size_t n = l.n;
    recs_free(&l);
    return n;
}

static void test_retry_applied_once(void **state)
{
    struct fx *f = *state;
    char v[64];
    fx_start(f);
    struct store_apply_result r = sput(f, 42, 1, "k", "a", T0);
    assert_int_equal(r.result, KHO_OK);
    assert_int_equal(r.version, 1);
    assert_false(r.duplicate);
    uint64_t first_rev = r.revision;
    /* The same request again, e.g. after a timeout: answered, not applied. */
    r = sput(f, 42, 1, "k", "a", T0);
    assert_int_equal(r.result, KHO_OK);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.revision, first_rev);
    assert_true(r.duplicate);
    assert_int_equal(version_of(f, "k", v, sizeof(v)), 1);
    assert_int_equal(history_len(f, "k"), 1);
    r = sput(f, 42, 2, "k", "b", T0);
    assert_int_equal(r.version, 2);
    assert_false(r.duplicate);
    /* An older seq is refused and changes nothing. */
    r = sput(f, 42, 1, "k", "old", T0);
    assert_int_equal(r.result, KHO_ESTALE);
    assert_false(r.duplicate);
    assert_int_equal(version_of(f, "k", v, sizeof(v)), 2);
    assert_string_equal(v, "b");
    /* Another session is independent, and so is session 0 (no dedup). */
    r = sput(f, 43, 1, "k", "c", T0);
    assert_int_equal(r.version, 3);
    r = sput(f, 0, 0, "k", "d", T0);
    assert_int_equal(r.version, 4);
    r = sput(f, 0, 0, "k", "d", T0);
    assert_int_equal(r.version, 5);
    assert_false(r.duplicate);
    assert_int_equal(history_len(f, "k"), 5);
}

/* A retry gets the whole recorded answer, failures included. */
static void test_retry_repeats_failures(void **state)
{
    struct fx *f = *state;
    fx_start(f);
    assert_int_equal(fx_put(f, "x", "1", T0).result, KHO_OK);
    struct req q;
    req_init(&q, T0, "w");
    q.r.session = 7;
    q.r.seq = 1;
    req_cmp(&q, "x", STORE_CMP_VERSION, STORE_CMP_EQ, 1);
    req_cmp(&q, "x", STORE_CMP_VERSION, STORE_CMP_EQ, 9);
    req_put(&q, "x", "2");
    struct store_apply_result r = fx_apply(f, &q);
    assert_int_equal(r.result, KHO_ECONFLICT);
    assert_int_equal(r.failed_cmp, 2);
    uint64_t rev = r.revision;
    /* The key changes meanwhile: the retry still gets the old answer. */
    assert_int_equal(fx_put(f, "x", "3", T0).result, KHO_OK);
    r = fx_apply(f, &q);
    assert_int_equal(r.result, KHO_ECONFLICT);
    assert_int_equal(r.failed_cmp, 2);
    assert_int_equal(r.revision, rev);
    assert_true(r.duplicate);
    fx_expect(f, "x", "3");

    /* A single delete of a missing key: KHO_ENOTFOUND, repeated alike. */
    req_init(&q, T0, "w");
    q.r.flags = STORE_REQ_SINGLE;
    q.r.session = 7;
    q.r.seq = 2;
    req_del(&q, "missing");
    r = fx_apply(f, &q);
    assert_int_equal(r.result, KHO_ENOTFOUND);
    r = fx_apply(f, &q);
    assert_int_equal(r.result, KHO_ENOTFOUND);
    assert_true(r.duplicate);
}

static void test_preconditions(void **state)
{
    struct fx *f = *state;
    char v[64];
    fx_start(f);
    struct req q;
    /* Put if absent: version == 0. */
    req_init(&q, T0, "w");
    q.r.flags = STORE_REQ_SINGLE;
    q.r.session = 1;
    q.r.seq = 1;
    req_cmp(&q, "p", STORE_CMP_VERSION, STORE_CMP_EQ, 0);
    req_put(&q, "p", "x");
    assert_int_equal(fx_apply(f, &q).result, KHO_OK);
    q.r.seq = 2;
    q.ops[0].value = (const uint8_t *)"y";
    struct store_apply_result r = fx_apply(f, &q);
    assert_int_equal(r.result, KHO_ECONFLICT);
    assert_int_equal(r.failed_cmp, 1);
    /* Put if version. */
    q.r.seq = 3;
    q.cmps[0].number = 5;
    assert_int_equal(fx_apply(f, &q).result, KHO_ECONFLICT);
    q.r.seq = 4;
    q.cmps[0].number = 1;
    r = fx_apply(f, &q);
    assert_int_equal(r.result, KHO_OK);
    assert_int_equal(r.version, 2);
    assert_int_equal(version_of(f, "p", v, sizeof(v)), 2);
    assert_string_equal(v, "y");
    /* Delete if version. */
    req_init(&q, T0, "w");
    q.r.flags = STORE_REQ_SINGLE;
    q.r.session = 1;
    q.r.seq = 5;
    req_cmp(&q, "p", STORE_CMP_VERSION, STORE_CMP_EQ, 1);
    req_del(&q, "p");
    assert_int_equal(fx_apply(f, &q).result, KHO_ECONFLICT);
    q.r.seq = 6;
    q.cmps[0].number = 2;
    r = fx_apply(f, &q);
    assert_int_equal(r.result, KHO_OK);
    assert_int_equal(r.version, 0);
    fx_expect(f, "p", NULL);
    q.r.seq = 7;
    q.r.n_cmp = 0;
    assert_int_equal(fx_apply(f, &q).result, KHO_ENOTFOUND);
}

static void test_session_survives_reopen(void **state)
{
    struct fx *f = *state;
    fx_start(f);
    struct store_apply_result r = sput(f, 9, 1, "r", "v", T0);
    assert_int_equal(r.result, KHO_OK);
    store_close(f->s);
    f->s = fx_open(f->dir, &f->opts);
    r = sput(f, 9, 1, "r", "v", T0);
    assert_true(r.duplicate);
    assert_int_equal(r.version, 1);
}

/* Whether session `s` still remembers seq 1 (a retry is a duplicate).
 * Asked at T0, when nothing is idle, so asking evicts nothing; a forgotten
 * session is created anew by the question. */
static bool remembers(struct fx *f, uint64_t s)
{
    return sput(f, s, 1, "probe", "p", T0).duplicate;
}

static void test_idle_sessions_forgotten(void **state)
{
    struct fx *f = *state;
    const uint64_t n = 2 * STORE_SESSION_EVICT_PER_APPLY + 3;
    fx_start(f);
    for (uint64_t s = 1; s <= n; s++) {
        assert_int_equal(sput(f, s, 1, "probe", "p", T0).result, KHO_OK);
    }
    /* Session 2 is seen again later, so it is idle for less long. */
    assert_int_equal(sput(f, 2, 2, "probe", "p", T0 + 500).result, KHO_OK);

    /* Just short of the idle time nothing is forgotten. */
    assert_int_equal(fx_put(f, "t", "1", T0 + STORE_SESSION_IDLE_MS - 1).result,
                     KHO_OK);
    for (uint64_t s = 1; s <= n; s++) {
        if (s != 2) {
            assert_true(remembers(f, s));
        }
    }
    /* At the idle time one request forgets a bounded number, oldest first
     * (equal times in session order); session 2 is younger than all. */
    assert_int_equal(fx_put(f, "t", "2", T0 + STORE_SESSION_IDLE_MS).result,
                     KHO_OK);
    uint64_t gone = STORE_SESSION_EVICT_PER_APPLY;
    for (uint64_t s = 1, seen = 0; s <= n; s++) {
        if (s == 2) {
            continue;
        }
        bool want = seen >= gone;
        assert_int_equal(remembers(f, s), want);
        seen++;
    }
}

static void test_busy_at_max(void **state)
{
    struct fx *f = *state;
    f->opts.sessions_max = 3;
    fx_start(f);
    for (uint64_t s = 1; s <= 3; s++) {
        assert_int_equal(sput(f, s, 1, "k", "v", T0).result, KHO_OK);
    }
    struct store_apply_result r = sput(f, 4, 1, "new", "v", T0);
    assert_int_equal(r.result, KHO_EBUSY);
    assert_false(r.duplicate);
    assert_int_equal(r.version, 0);
    fx_expect(f, "new", NULL);
    /* Still refused on a retry: EBUSY is not recorded. */
    assert_int_equal(sput(f, 4, 1, "new", "v", T0).result, KHO_EBUSY);
    /* Known sessions and session 0 carry on. */
    assert_int_equal(sput(f, 2, 2, "k", "w", T0 + 10).result, KHO_OK);
    assert_int_equal(sput(f, 0, 0, "k", "z", T0).result, KHO_OK);
    /* Sessions 1 and 3 go idle: the next request forgets them, then has
     * room for a new session. */
    r = sput(f, 4, 1, "new", "v", T0 + STORE_SESSION_IDLE_MS);
    assert_int_equal(r.result, KHO_OK);
    fx_expect(f, "new", "v");
    assert_int_equal(
        sput(f, 5, 1, "new", "v", T0 + STORE_SESSION_IDLE_MS).result, KHO_OK);
    assert_int_equal(
        sput(f, 6, 1, "new", "v", T0 + STORE_SESSION_IDLE_MS).result,
        KHO_EBUSY);
    /* The limit holds across a reopen (the count is stored). */
    store_close(f->s);
    f->s = fx_open(f->dir, &f->opts);
    assert_int_equal(
        sput(f, 6, 1, "new", "v", T0 + STORE_SESSION_IDLE_MS).result,
        KHO_EBUSY);
    assert_true(
        sput(f, 5, 1, "new", "v", T0 + STORE_SESSION_IDLE_MS).duplicate);
}

static void test_session_options(void **state)
{
    struct fx *f = *state;
    struct store *s = NULL;
    f->opts.sessions_max = 0;
    assert_int_equal(store_open(f->dir, &f->opts, &s), KHO_EINVAL);
    f->opts.sessions_max = STORE_SESSIONS_MAX + 1;
    assert_int_equal(store_open(f->dir, &f->opts, &s), KHO_EINVAL);
    f->opts.sessions_max = STORE_SESSIONS_MAX;
    f->opts.test_key_hash_bits = 64;
    assert_int_equal(store_open(f->dir, &f->opts, &s), KHO_EINVAL);
    assert_null(s);
    struct store_opts d;
    store_opts_defaults(&d);
    assert_int_equal(d.sessions_max, STORE_SESSIONS_MAX);
    assert_int_equal(d.test_key_hash_bits, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_retry_applied_once, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_retry_repeats_failures, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_preconditions, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_session_survives_reopen, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_idle_sessions_forgotten, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_busy_at_max, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_session_options, fx_setup,
                                        fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

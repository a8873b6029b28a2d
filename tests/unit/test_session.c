/*
 * test_session.c - proves the store's exactly-once session envelopes and
 * versioned records (store.h, "Client sessions"):
 *
 *   - a retried request (same session and seq) is answered with the
 *     original result and not applied again (the version stays);
 *   - an older seq is refused with KHO_ESTALE and changes nothing;
 *   - if-absent and if-version preconditions give KHO_ECONFLICT when they
 *     fail and apply when they hold; versions count puts;
 *   - the session record survives a reopen (it is in the same transaction
 *     as the data it covers).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "server/store/store.h"

#define GROUP 7u

struct fx {
    char dir[256];
    struct store *s;
    uint64_t index;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");
    snprintf(f->dir, sizeof(f->dir), "%s/kho-session-XXXXXX",
             tmp != NULL ? tmp : "/tmp");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(store_open(f->dir, NULL, &f->s), KHO_OK);
    struct raft_conf c = {.n = 1, .members = {{.id = 1, .role = RAFT_VOTER}}};
    struct store_batch *b = NULL;
    assert_int_equal(store_write_begin(f->s, &b), KHO_OK);
    assert_int_equal(store_batch_group_create(b, GROUP, &c), KHO_OK);
    assert_int_equal(store_write_commit(b), KHO_OK);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    store_close(f->s);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Applies one envelope as the next log entry and returns its outcome. */
static struct store_apply_result apply(struct fx *f, uint64_t session,
                                       uint64_t seq, uint32_t op,
                                       const char *key, const char *value,
                                       uint32_t cond, uint64_t expected)
{
    struct store_envelope e = {
        .session = session,
        .seq = seq,
        .cond = cond,
        .expected_version = expected,
        .cmd = {.op = op,
                .key = (const uint8_t *)key,
                .key_len = strlen(key),
                .value = (const uint8_t *)value,
                .value_len = value != NULL ? strlen(value) : 0},
    };
    uint8_t buf[512];
    size_t len = 0;
    assert_int_equal(store_envelope_encode(&e, buf, sizeof(buf), &len),
                     KHO_OK);
    struct raft_entry ent = {.term = 1,
                             .index = ++f->index,
                             .type = RAFT_ENTRY_NORMAL,
                             .len = (uint32_t)len,
                             .data = buf};
    struct store_batch *b = NULL;
    struct store_apply_result r;
    assert_int_equal(store_write_begin(f->s, &b), KHO_OK);
    assert_int_equal(store_batch_apply_ex(b, GROUP, &ent, &r), KHO_OK);
    assert_int_equal(store_write_commit(b), KHO_OK);
    return r;
}

static uint64_t version_of(struct fx *f, const char *key, char *val,
                           size_t cap)
{
    uint8_t buf[512];
    size_t len = 0;
    assert_int_equal(store_kv_get(f->s, GROUP, key, strlen(key), buf,
                                  sizeof(buf), &len, NULL),
                     KHO_OK);
    uint64_t ver = 0, rev = 0;
    const uint8_t *v = NULL;
    size_t vlen = 0;
    assert_int_equal(store_rec_meta_decode(buf, len, &ver, &rev, &v, &vlen),
                     KHO_OK);
    assert_true(vlen < cap);
    memcpy(val, v, vlen);
    val[vlen] = '\0';
    return ver;
}

static void test_retry_applied_once(void **state)
{
    struct fx *f = *state;
    char v[64];
    struct store_apply_result r =
        apply(f, 42, 1, STORE_CMD_PUT, "k", "a", STORE_COND_NONE, 0);
    assert_int_equal(r.result, KHO_OK);
    assert_int_equal(r.version, 1);
    assert_false(r.duplicate);
    /* The same request again, e.g. after a timeout: answered, not applied. */
    r = apply(f, 42, 1, STORE_CMD_PUT, "k", "a", STORE_COND_NONE, 0);
    assert_int_equal(r.result, KHO_OK);
    assert_int_equal(r.version, 1);
    assert_true(r.duplicate);
    assert_int_equal(version_of(f, "k", v, sizeof(v)), 1);
    r = apply(f, 42, 2, STORE_CMD_PUT, "k", "b", STORE_COND_NONE, 0);
    assert_int_equal(r.version, 2);
    /* An older seq is refused and changes nothing. */
    r = apply(f, 42, 1, STORE_CMD_PUT, "k", "old", STORE_COND_NONE, 0);
    assert_int_equal(r.result, KHO_ESTALE);
    assert_int_equal(version_of(f, "k", v, sizeof(v)), 2);
    assert_string_equal(v, "b");
    /* Another session is independent. */
    r = apply(f, 43, 1, STORE_CMD_PUT, "k", "c", STORE_COND_NONE, 0);
    assert_int_equal(r.version, 3);
}

static void test_preconditions(void **state)
{
    struct fx *f = *state;
    char v[64];
    struct store_apply_result r =
        apply(f, 1, 1, STORE_CMD_PUT, "p", "x", STORE_COND_ABSENT, 0);
    assert_int_equal(r.result, KHO_OK);
    r = apply(f, 1, 2, STORE_CMD_PUT, "p", "y", STORE_COND_ABSENT, 0);
    assert_int_equal(r.result, KHO_ECONFLICT);
    r = apply(f, 1, 3, STORE_CMD_PUT, "p", "y", STORE_COND_VERSION, 5);
    assert_int_equal(r.result, KHO_ECONFLICT);
    r = apply(f, 1, 4, STORE_CMD_PUT, "p", "y", STORE_COND_VERSION, 1);
    assert_int_equal(r.result, KHO_OK);
    assert_int_equal(version_of(f, "p", v, sizeof(v)), 2);
    assert_string_equal(v, "y");
    r = apply(f, 1, 5, STORE_CMD_DELETE, "p", NULL, STORE_COND_VERSION, 1);
    assert_int_equal(r.result, KHO_ECONFLICT);
    r = apply(f, 1, 6, STORE_CMD_DELETE, "p", NULL, STORE_COND_VERSION, 2);
    assert_int_equal(r.result, KHO_OK);
    r = apply(f, 1, 7, STORE_CMD_DELETE, "p", NULL, STORE_COND_NONE, 0);
    assert_int_equal(r.result, KHO_ENOTFOUND);
}

static void test_session_survives_reopen(void **state)
{
    struct fx *f = *state;
    struct store_apply_result r =
        apply(f, 9, 1, STORE_CMD_PUT, "r", "v", STORE_COND_NONE, 0);
    assert_int_equal(r.result, KHO_OK);
    store_close(f->s);
    assert_int_equal(store_open(f->dir, NULL, &f->s), KHO_OK);
    r = apply(f, 9, 1, STORE_CMD_PUT, "r", "v", STORE_COND_NONE, 0);
    assert_true(r.duplicate);
    assert_int_equal(r.version, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_retry_applied_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_preconditions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_survives_reopen, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_raft_config.c - proves that the raft core refuses every config bound
 * that is zero or out of range (with a reason), refuses corrupt persisted
 * state at raft_create(), round-trips configurations through
 * raft_conf_encode()/raft_conf_decode() and refuses every corrupt encoding
 * (wrong length, too many members, zero or duplicate id, bad role), and
 * that the name helpers never return NULL.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "../harness/memstore.h"

/* --- Config validation ---------------------------------------------------- */

static struct memstore g_store;

static void good_config(struct raft_config *c)
{
    struct raft_conf conf = {.n = 1, .members = {{1, RAFT_VOTER}}};
    memstore_free(&g_store);
    memstore_init(&g_store, &conf);
    memset(c, 0, sizeof(*c));
    raft_config_defaults(c);
    c->id = 1;
    c->group_id = 7;
    c->seed = 1;
    c->storage = memstore_storage(&g_store);
}

static void expect_invalid(const struct raft_config *c, const char *what)
{
    const char *why = NULL;
    struct raft *r = NULL;
    int rc = raft_config_validate(c, &why);
    if (rc != KHO_EINVAL) {
        fail_msg("config with %s was accepted (%s)", what, kho_errname(rc));
    }
    if (why == NULL || why[0] == '\0') {
        fail_msg("config with %s refused without a reason", what);
    }
    why = NULL;
    rc = raft_create(c, &r, &why);
    if (rc != KHO_EINVAL || r != NULL) {
        fail_msg("raft_create with %s: %s", what, kho_errname(rc));
    }
    assert_non_null(why);
}

static void test_defaults_are_valid(void **state)
{
    struct raft_config c;
    struct raft *r = NULL;
    const char *why = "unset";
    good_config(&c);
    assert_int_equal(raft_config_validate(&c, &why), KHO_OK);
    assert_int_equal(raft_create(&c, &r, &why), KHO_OK);
    assert_non_null(r);
    raft_destroy(r);
}

/* Every bound raft.h calls required (> 0) is refused when 0. */
static void test_zero_bounds_refused(void **state)
{
    struct raft_config c;
#define ZERO(field)                                                            \
    do {                                                                       \
        good_config(&c);                                                       \
        c.field = 0;                                                           \
        expect_invalid(&c, #field " = 0");                                     \
    } while (0)
    ZERO(id);
    ZERO(election_ticks);
    ZERO(heartbeat_ticks);
    ZERO(max_msg_bytes);
    ZERO(max_msg_entries);
    ZERO(max_inflight_msgs);
    ZERO(max_inflight_bytes);
    ZERO(max_uncommitted_bytes);
    ZERO(max_entry_bytes);
    ZERO(max_pending_reads);
    ZERO(max_ready_msgs);
    ZERO(max_apply_bytes);
    ZERO(snapshot_timeout_ticks);
#undef ZERO
}

/* Every bound with a hard ceiling in raft.h is refused one above it. */
static void test_ceilings_refused(void **state)
{
    struct raft_config c;
#define ABOVE(field, max)                                                      \
    do {                                                                       \
        good_config(&c);                                                       \
        c.field = (max) + 1;                                                   \
        expect_invalid(&c, #field " above " #max);                             \
    } while (0)
    ABOVE(max_entry_bytes, RAFT_ENTRY_BYTES_MAX);
    ABOVE(max_msg_bytes, RAFT_ENTRY_BYTES_MAX);
    ABOVE(max_msg_entries, RAFT_MSG_ENTRIES_MAX);
    ABOVE(max_inflight_msgs, RAFT_INFLIGHT_MSGS_MAX);
    ABOVE(max_pending_reads, RAFT_READS_MAX);
    ABOVE(max_ready_msgs, RAFT_READY_MSGS_MAX);
    ABOVE(quiesce_ticks, RAFT_QUIESCE_TICKS_MAX);
#undef ABOVE
    /* And the ceilings themselves are accepted. */
    good_config(&c);
    c.max_msg_entries = RAFT_MSG_ENTRIES_MAX;
    c.max_inflight_msgs = RAFT_INFLIGHT_MSGS_MAX;
    c.max_pending_reads = RAFT_READS_MAX;
    c.max_ready_msgs = RAFT_READY_MSGS_MAX;
    c.quiesce_ticks = RAFT_QUIESCE_TICKS_MAX;
    assert_int_equal(raft_config_validate(&c, NULL), KHO_OK);
    /* 0 is "never quiesce", the default. */
    good_config(&c);
    assert_int_equal(c.quiesce_ticks, 0);
    c.quiesce_ticks = 1;
    assert_int_equal(raft_config_validate(&c, NULL), KHO_OK);
}

static void test_relations_refused(void **state)
{
    struct raft_config c;
    good_config(&c);
    c.heartbeat_ticks = c.election_ticks;
    expect_invalid(&c, "heartbeat_ticks == election_ticks");
    good_config(&c);
    c.heartbeat_ticks = c.election_ticks + 1;
    expect_invalid(&c, "heartbeat_ticks > election_ticks");
    good_config(&c);
    c.lease_reads = true;
    c.check_quorum = false;
    expect_invalid(&c, "lease_reads without check_quorum");
    good_config(&c);
    c.lease_reads = true;
    c.check_quorum = true;
    c.lease_drift_ticks = c.election_ticks;
    expect_invalid(&c, "lease_drift_ticks >= election_ticks");
    good_config(&c);
    c.lease_reads = true;
    c.check_quorum = true;
    c.lease_drift_ticks = 1;
    assert_int_equal(raft_config_validate(&c, NULL), KHO_OK);
}

static void test_missing_storage_refused(void **state)
{
    struct raft_config c;
    good_config(&c);
    c.storage.snapshot_meta = NULL;
    expect_invalid(&c, "no snapshot_meta callback");
    good_config(&c);
    c.storage.last_index = NULL;
    expect_invalid(&c, "no last_index callback");
    good_config(&c);
    c.storage.term = NULL;
    expect_invalid(&c, "no term callback");
    good_config(&c);
    c.storage.entries = NULL;
    expect_invalid(&c, "no entries callback");
    good_config(&c);
    c.storage.snapshot = NULL;
    expect_invalid(&c, "no snapshot callback");
}

/* Persisted state from disk with impossible terms or indexes is refused,
 * never asserted on. */
static void test_corrupt_hard_state_refused(void **state)
{
    struct raft_config c;
    struct raft *r = NULL;
    const char *why = NULL;
    good_config(&c);
    c.hs.term = RAFT_TERM_MAX + 1;
    assert_int_not_equal(raft_create(&c, &r, &why), KHO_OK);
    assert_null(r);
    good_config(&c);
    c.hs.term = UINT64_MAX;
    assert_int_not_equal(raft_create(&c, &r, &why), KHO_OK);
    assert_null(r);
    good_config(&c);
    c.hs.commit = UINT64_MAX;
    assert_int_not_equal(raft_create(&c, &r, &why), KHO_OK);
    assert_null(r);
}

/* --- Configuration encoding ---------------------------------------------- */

static struct raft_conf make_conf(uint32_t n)
{
    struct raft_conf c;
    memset(&c, 0, sizeof(c));
    for (uint32_t i = 0; i < n; i++) {
        c.members[i].id = 1000 + i * 7;
        c.members[i].role = (i % 3 == 2) ? RAFT_LEARNER : RAFT_VOTER;
    }
    c.n = n;
    return c;
}

static void assert_conf_equal(const struct raft_conf *a,
                              const struct raft_conf *b)
{
    assert_int_equal(a->n, b->n);
    for (uint32_t i = 0; i < a->n; i++) {
        const struct raft_member *m = raft_conf_find(b, a->members[i].id);
        assert_non_null(m);
        assert_int_equal(m->role, a->members[i].role);
    }
}

static void test_conf_round_trip(void **state)
{
    for (uint32_t n = 1; n <= RAFT_MEMBERS_MAX; n++) {
        struct raft_conf in = make_conf(n), out;
        uint8_t buf[RAFT_CONF_ENCODED_MAX];
        size_t len = raft_conf_encode(&in, buf, sizeof(buf));
        assert_int_equal(len, 4 + 12 * n);
        memset(&out, 0xAA, sizeof(out));
        assert_int_equal(raft_conf_decode(buf, len, &out), KHO_OK);
        assert_conf_equal(&in, &out);
    }
}

static void test_conf_helpers(void **state)
{
    struct raft_conf c = make_conf(6); /* learners at positions 2 and 5 */
    assert_int_equal(raft_conf_voters(&c), 4);
    assert_true(raft_conf_is_voter(&c, c.members[0].id));
    assert_false(raft_conf_is_voter(&c, c.members[2].id));
    assert_false(raft_conf_is_voter(&c, 999999));
    assert_null(raft_conf_find(&c, 999999));
    assert_null(raft_conf_find(&c, 0));
}

/* The encoder never writes past `cap`. */
static void test_conf_encode_small_buffer(void **state)
{
    struct raft_conf c = make_conf(2);
    uint8_t buf[64];
    memset(buf, 0x5A, sizeof(buf));
    size_t len = raft_conf_encode(&c, buf, 10);
    assert_true(len == 0 || len > 10);
    for (size_t i = 10; i < sizeof(buf); i++) {
        assert_int_equal(buf[i], 0x5A);
    }
}

/* Finds where `v` (little-endian, `w` bytes) is stored in buf. */
static size_t find_le(const uint8_t *buf, size_t len, uint64_t v, size_t w)
{
    uint8_t pat[8];
    for (size_t i = 0; i < w; i++) {
        pat[i] = (uint8_t)(v >> (8 * i));
    }
    for (size_t i = 0; i + w <= len; i++) {
        if (memcmp(buf + i, pat, w) == 0) {
            return i;
        }
    }
    fail_msg("value %llu not found in the encoding", (unsigned long long)v);
    return 0;
}

static void put_le(uint8_t *p, uint64_t v, size_t w)
{
    for (size_t i = 0; i < w; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void expect_corrupt(const uint8_t *buf, size_t len, const char *what)
{
    struct raft_conf out;
    int rc = raft_conf_decode(buf, len, &out);
    if (rc != KHO_ECORRUPT) {
        fail_msg("decoding %s gave %s", what, kho_errname(rc));
    }
}

static void test_conf_decode_rejects_corruption(void **state)
{
    struct raft_conf c;
    uint8_t good[RAFT_CONF_ENCODED_MAX + 16], buf[sizeof(good)];
    memset(&c, 0, sizeof(c));
    c.n = 2;
    c.members[0].id = UINT64_C(0x0102030405060708);
    c.members[0].role = RAFT_VOTER;
    c.members[1].id = UINT64_C(0x1112131415161718);
    c.members[1].role = RAFT_LEARNER;
    size_t len = raft_conf_encode(&c, good, sizeof(good));
    assert_int_equal(len, 28);
    size_t id0 = find_le(good, len, c.members[0].id, 8);
    size_t id1 = find_le(good, len, c.members[1].id, 8);
    /* The count is the 4-byte field that is neither id. */
    size_t cnt = find_le(good, len, 2, 4);

    expect_corrupt(good, 0, "an empty buffer");
    expect_corrupt(good, 3, "a truncated count");
    expect_corrupt(good, len - 1, "a truncated member");
    memset(good + len, 0, 16);
    expect_corrupt(good, len + 1, "a trailing byte");
    expect_corrupt(good, len + 12, "a trailing member-sized tail");

    memcpy(buf, good, len);
    put_le(buf + cnt, 3, 4);
    expect_corrupt(buf, len, "a count larger than the members");
    memcpy(buf, good, len);
    put_le(buf + cnt, RAFT_MEMBERS_MAX + 1, 4);
    expect_corrupt(buf, len, "a count above RAFT_MEMBERS_MAX");
    memcpy(buf, good, len);
    put_le(buf + cnt, UINT32_MAX, 4);
    expect_corrupt(buf, len, "a count of 2^32-1");

    memcpy(buf, good, len);
    put_le(buf + id0, 0, 8);
    expect_corrupt(buf, len, "a zero id");
    memcpy(buf, good, len);
    memcpy(buf + id1, good + id0, 8);
    expect_corrupt(buf, len, "a duplicate id");

    /* The role is the 4-byte field after each id. */
    static const uint32_t bad_roles[] = {0, 3, 0xFF, UINT32_MAX};
    for (size_t i = 0; i < sizeof(bad_roles) / sizeof(bad_roles[0]); i++) {
        memcpy(buf, good, len);
        put_le(buf + id1 + 8, bad_roles[i], 4);
        expect_corrupt(buf, len, "a bad role");
    }
    /* And the untouched encoding still decodes. */
    struct raft_conf out;
    assert_int_equal(raft_conf_decode(good, len, &out), KHO_OK);
    assert_conf_equal(&c, &out);
}

static void test_conf_decode_many_members(void **state)
{
    /* RAFT_MEMBERS_MAX + 1 well-formed members: too many. */
    uint8_t buf[4 + 12 * (RAFT_MEMBERS_MAX + 1)];
    uint32_t n = RAFT_MEMBERS_MAX + 1;
    put_le(buf, n, 4);
    for (uint32_t i = 0; i < n; i++) {
        put_le(buf + 4 + 12 * i, 100 + i, 8);
        put_le(buf + 4 + 12 * i + 8, RAFT_VOTER, 4);
    }
    /* Sanity: the same layout with RAFT_MEMBERS_MAX members decodes. */
    struct raft_conf out;
    put_le(buf, RAFT_MEMBERS_MAX, 4);
    assert_int_equal(raft_conf_decode(buf, 4 + 12 * RAFT_MEMBERS_MAX, &out),
                     KHO_OK);
    assert_int_equal(out.n, RAFT_MEMBERS_MAX);
    put_le(buf, n, 4);
    expect_corrupt(buf, sizeof(buf), "17 members");
}

static void test_names_never_null(void **state)
{
    for (int role = -1; role <= RAFT_LEADER + 5; role++) {
        assert_non_null(raft_role_name((enum raft_role)role));
    }
    for (uint32_t t = 0; t <= RAFT_MSG_TYPE_MAX_ + 5; t++) {
        assert_non_null(raft_msg_type_name(t));
    }
    assert_non_null(raft_msg_type_name(UINT32_MAX));
}

static int teardown(void **state)
{
    memstore_free(&g_store);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_valid),
        cmocka_unit_test(test_zero_bounds_refused),
        cmocka_unit_test(test_ceilings_refused),
        cmocka_unit_test(test_relations_refused),
        cmocka_unit_test(test_missing_storage_refused),
        cmocka_unit_test(test_corrupt_hard_state_refused),
        cmocka_unit_test(test_conf_round_trip),
        cmocka_unit_test(test_conf_helpers),
        cmocka_unit_test(test_conf_encode_small_buffer),
        cmocka_unit_test(test_conf_decode_rejects_corruption),
        cmocka_unit_test(test_conf_decode_many_members),
        cmocka_unit_test(test_names_never_null),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}

/*
 * test_stream.c - proves snapshot streaming (store.h, "Snapshot streams"):
 *
 *   - a group streamed from store A (a reader) into store B (a stage fed
 *     in odd-sized pieces, pieces splitting records, down to one byte at a
 *     time) and installed through store_batch_persist_ready() holds
 *     identical kv records, history, sessions and store_check_hash, under
 *     another data id;
 *   - the data id the install replaced is collected by store_batch_gc()
 *     over several bounded calls, to the last key, and store_gc_pending()
 *     says when there is work;
 *   - a flipped byte anywhere in a stream, a record that fails its own
 *     crc under a well-sealed stream, records out of order, an unknown
 *     database, a stream of the previous version (KHOSNAP 3, store format
 *     3), a truncated stream or extra bytes are KHO_ECORRUPT, leave
 *     the group's served data as it was, and leave nothing after gc;
 *   - a reader re-read at an earlier offset (a resumed transfer) or
 *     skipped ahead gives the same bytes;
 *   - reads running while the data id is swapped see the old state machine
 *     or the new one, whole, never a mix;
 *   - store_open() turns stages left over (receiving, or finished and not
 *     installed) into garbage; a dropped stage and the other finished
 *     stages of an installed group become garbage; descriptors that name
 *     no stage are refused by an install and ignored by a drop;
 *   - deleting a group makes its data garbage that gc empties, a stage of
 *     the group stops, and the same group id can be created again at once
 *     without meeting the old records;
 *   - a group of about 30 MB streams while the reader's heap stays under
 *     a few KiB and the stage's under its transaction bound.
 *
 * Every test gets fresh directories under $TMPDIR (or /tmp), removed
 * after.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <lmdb.h>
#include <pthread.h>

#include "../../server/store/stream.h" /* stream layout and version */
#include "store_fixture.h"

#if defined(__SANITIZE_ADDRESS__)
/* ASan's allocator replaces malloc: ask it what is allocated. */
size_t __sanitizer_get_current_allocated_bytes(void);
static size_t heap_bytes(void)
{
    return __sanitizer_get_current_allocated_bytes();
}
#else
#include <malloc.h>
static size_t heap_bytes(void)
{
    struct mallinfo2 m = mallinfo2();
    return m.uordblks + m.hblkhd;
}
#endif

#define T0 1000u
#define G FX_GROUP
#define OTHER (FX_GROUP + 1u)

/* --- Helpers ---------------------------------------------------------------
 */

/* Applies one encoded request as group's next entry on s. */
static struct store_apply_result apply_on(struct store *s, uint64_t group,
                                          uint64_t *index, const struct req *q)
{
    size_t len = 0;
    uint8_t *buf = req_encode(q, &len);
    struct store_apply_result r = fx_apply_raw_at(s, group, index, buf, len);
    free(buf);
    return r;
}

/* A bit of everything in group on s: keys with several versions, deletes,
 * long keys, sessions. `tag` is in every value. */
static void fill(struct store *s, uint64_t group, uint64_t *index,
                 const char *tag, int n_keys)
{
    char key[700], val[64];
    for (int i = 0; i < 3 * n_keys; i++) {
        struct req q;
        req_init(&q, T0 + (uint64_t)i, "filler");
        q.r.session = 1 + (uint64_t)(i % 5);
        q.r.seq = 1 + (uint64_t)i;
        snprintf(key, sizeof(key), "key/%04d", i % n_keys);
        snprintf(val, sizeof(val), "%s-%d", tag, i);
        req_put(&q, key, val);
        assert_int_equal(apply_on(s, group, index, &q).result, KHO_OK);
    }
    struct req q;
    req_init(&q, T0, "filler");
    q.r.flags = STORE_REQ_SINGLE;
    req_del(&q, "key/0002");
    assert_int_equal(apply_on(s, group, index, &q).result, KHO_OK);
    memset(key, 'L', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    req_init(&q, T0, "filler");
    req_put(&q, key, tag);
    assert_int_equal(apply_on(s, group, index, &q).result, KHO_OK);
}

static uint64_t hash_of(struct store *s, uint64_t group)
{
    uint64_t h = 0, applied = 0;
    int rc = store_check_hash(s, group, &h, &applied);
    if (rc != KHO_OK) {
        fail_msg("hash: %s: %s", kho_errname(rc), store_errmsg(s));
    }
    return h;
}

static uint64_t data_of(struct store *s, uint64_t group)
{
    uint64_t d = 0;
    assert_int_equal(store_group_data_id(s, group, &d), KHO_OK);
    return d;
}

/* Every kv record of the group, and every version of each. */
static void scan_all(struct store *s, uint64_t group, struct recs *out)
{
    struct store_scan q = {.limit = STORE_SCAN_LIMIT_MAX,
                           .max_bytes = SIZE_MAX};
    bool more = false;
    out->n = 0;
    out->stop_after = 0;
    int rc = store_kv_scan(s, group, &q, recs_cb, out, &more, NULL);
    if (rc != KHO_OK) {
        fail_msg("scan: %s: %s", kho_errname(rc), store_errmsg(s));
    }
    assert_false(more);
}

static void expect_same_rec(const struct rec *a, const struct rec *b)
{
    assert_int_equal(a->key_len, b->key_len);
    assert_memory_equal(a->key, b->key, a->key_len);
    assert_int_equal(a->value_len, b->value_len);
    if (a->value_len > 0) {
        assert_memory_equal(a->value, b->value, a->value_len);
    }
    assert_int_equal(a->version, b->version);
    assert_int_equal(a->create_rev, b->create_rev);
    assert_int_equal(a->mod_rev, b->mod_rev);
    assert_int_equal(a->time_ms, b->time_ms);
    assert_string_equal(a->writer, b->writer);
    assert_int_equal(a->deleted, b->deleted);
}

/* kv records and every key's history alike on both stores. */
static void expect_same_state(struct store *a, struct store *b, uint64_t group)
{
    static struct recs ra, rb, ha, hb;
    scan_all(a, group, &ra);
    scan_all(b, group, &rb);
    assert_int_equal(ra.n, rb.n);
    for (size_t i = 0; i < ra.n; i++) {
        expect_same_rec(&ra.r[i], &rb.r[i]);
        bool more = false;
        ha.n = hb.n = 0;
        assert_int_equal(
            store_kv_history(a, group, ra.r[i].key, ra.r[i].key_len, 0,
                             STORE_SCAN_LIMIT_MAX, recs_cb, &ha, &more, NULL),
            KHO_OK);
        assert_int_equal(
            store_kv_history(b, group, rb.r[i].key, rb.r[i].key_len, 0,
                             STORE_SCAN_LIMIT_MAX, recs_cb, &hb, &more, NULL),
            KHO_OK);
        assert_int_equal(ha.n, hb.n);
        for (size_t j = 0; j < ha.n; j++) {
            expect_same_rec(&ha.r[j], &hb.r[j]);
        }
        recs_free(&ha);
        recs_free(&hb);
    }
    recs_free(&ra);
    recs_free(&rb);
    assert_true(hash_of(a, group) == hash_of(b, group));
}

/* Keys in database db of the closed store in dir starting with `data`
 * (all keys: all = true), counted with raw LMDB. */
static size_t raw_count(const char *dir, const char *db, uint64_t data,
                        bool all)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    MDB_dbi dbi;
    uint8_t lo[8];
    size_t n = 0;
    for (int i = 0; i < 8; i++) {
        lo[i] = (uint8_t)(data >> (56 - 8 * i));
    }
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, STORE_DBS_MAX), 0);
    assert_int_equal(mdb_env_set_mapsize(env, UINT64_C(256) << 20), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0640), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    assert_int_equal(mdb_cursor_open(txn, dbi, &c), 0);
    MDB_val k = {.mv_size = sizeof(lo), .mv_data = lo}, v;
    int rc = all ? mdb_cursor_get(c, &k, &v, MDB_FIRST)
                 : mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0 &&
           (all || (k.mv_size >= 8 && memcmp(k.mv_data, lo, 8) == 0))) {
        n++;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return n;
}

static const char *const sm_dbs[] = {"kv", "hist", "sess", "sess_lru"};

/* Closes f->s2, counts the keys of `data` in every state-machine database
 * (and its session count in raft_meta), reopens. */
static size_t count_data_closed(struct fx *f, uint64_t data)
{
    size_t n = 0;
    store_close(f->s2);
    f->s2 = NULL;
    for (size_t i = 0; i < 4; i++) {
        n += raw_count(f->dir2, sm_dbs[i], data, false);
    }
    n += raw_count(f->dir2, "raft_meta", data, false);
    f->s2 = fx_open(f->dir2, &f->opts);
    return n;
}

/* Closes f->s2, counts every key of the state-machine databases,
 * reopens. */
static size_t count_all_closed(struct fx *f)
{
    size_t n = 0;
    store_close(f->s2);
    f->s2 = NULL;
    for (size_t i = 0; i < 4; i++) {
        n += raw_count(f->dir2, sm_dbs[i], 0, true);
    }
    f->s2 = fx_open(f->dir2, &f->opts);
    return n;
}

/* Store B: created with another group first, so that G gets another data
 * id there than on A. */
static void open_b(struct fx *f)
{
    assert_true(fx_tmp(f->dir2));
    f->s2 = fx_open(f->dir2, &f->opts);
    fx_create_group(f->s2, OTHER + 10);
    fx_create_group(f->s2, G);
}

/* The whole stream of group on s in memory (small groups only). */
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
    assert_int_equal(store_crc32c(buf, n), *crc);
    store_snap_reader_close(r);
    return buf;
}

/* Feeds b[0..len) in pieces of `piece` to a new stage claiming `total`
 * bytes with `crc`; returns the first error of writing or finishing. */
static int stage_bytes(struct store *s, const struct raft_snapshot_meta *m,
                       const uint8_t *b, uint64_t len, uint64_t total,
                       uint32_t crc, size_t piece,
                       uint8_t desc[STORE_STAGE_DESC_BYTES])
{
    struct store_stage *st = NULL;
    int rc = store_stage_begin(s, G, m->index, m->term, total, crc, &st);
    if (rc != KHO_OK) {
        fail_msg("stage: %s: %s", kho_errname(rc), store_errmsg(s));
    }
    for (uint64_t off = 0; rc == KHO_OK && off < len; off += piece) {
        size_t n = len - off < piece ? (size_t)(len - off) : piece;
        rc = store_stage_write(st, b + off, n);
    }
    if (rc == KHO_OK) {
        rc = store_stage_finish(st, desc);
    }
    store_stage_close(st);
    return rc;
}

/* The bytes of the stream record at p. */
static size_t rec_len(const uint8_t *p)
{
    return STREAM_RECORD_HEADER_BYTES + get_le16(p + 1) + get_le32(p + 3);
}

/* The stream's trailer crc and the whole crc, recomputed after an edit:
 * a well-sealed stream whose content is wrong. */
static uint32_t reseal(uint8_t *b, uint64_t total)
{
    size_t body = (size_t)total - 4;
    uint32_t c = store_crc32c(b, body);
    for (int i = 0; i < 4; i++) {
        b[body + (size_t)i] = (uint8_t)(c >> (8 * i));
    }
    return store_crc32c(b, (size_t)total);
}

/* --- A group streamed and installed --------------------------------------- */

static void test_stream_install_gc(void **state)
{
    struct fx *f = *state;
    fx_start(f);
    fill(f->s, G, &f->index[0], "A", 40);
    open_b(f);
    /* B's group has state of its own, soon replaced. */
    uint64_t ib = 0;
    fill(f->s2, G, &ib, "B", 10);
    const uint64_t old = data_of(f->s2, G);
    assert_true(old != data_of(f->s, G));
    assert_false(store_gc_pending(f->s2));

    /* Odd pieces split record headers, keys and values. */
    const size_t pieces[] = {1, 7, 333, 4097, 65536};
    struct raft_snapshot_meta m;
    uint8_t desc[STORE_STAGE_DESC_BYTES];
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        assert_int_equal(fx_stage_from(f->s, f->s2, G, pieces[i], &m, desc),
                         KHO_OK);
        if (i + 1 < sizeof(pieces) / sizeof(pieces[0])) {
            struct store_batch *b = NULL;
            assert_int_equal(store_write_begin(f->s2, &b), KHO_OK);
            assert_int_equal(store_batch_stage_drop(b, desc, sizeof(desc)),
                             KHO_OK);
            assert_int_equal(store_write_commit(b), KHO_OK);
        }
    }
    assert_int_equal(m.index, f->index[0]);
    assert_int_equal(m.term, 1);
    /* Staged, not installed: B still serves its own. */
    fx_expect_at(f->s2, G, "key/0001", "B-21");
    assert_int_equal(fx_install(f->s2, G, &m, desc), KHO_OK);
    const uint64_t now = data_of(f->s2, G);
    assert_true(now != old && now != data_of(f->s, G));
    expect_same_state(f->s, f->s2, G);
    fx_expect_at(f->s2, G, "key/0001", "A-81");

    /* Sessions came along: a retry of A's last request is a duplicate. */
    struct req q;
    req_init(&q, T0, "filler");
    q.r.session = 5;
    q.r.seq = 120;
    req_put(&q, "key/0039", "A-119");
    uint64_t i2 = m.index;
    assert_true(apply_on(f->s2, G, &i2, &q).duplicate);

    /* The old data and the dropped stages are garbage, collected a few
     * keys per call. */
    assert_true(store_gc_pending(f->s2));
    assert_true(count_data_closed(f, old) > 20);
    assert_true(store_gc_pending(f->s2)); /* reopened: still known */
    unsigned calls = fx_gc_all(f->s2, 7);
    assert_true(calls > 5);
    assert_int_equal(count_data_closed(f, old), 0);
    assert_false(store_gc_pending(f->s2));
    /* Only the live groups' keys are left (the neighbour has none). */
    const uint64_t neighbour = data_of(f->s2, OTHER + 10);
    size_t live = count_data_closed(f, now);
    assert_int_equal(count_data_closed(f, neighbour), 0);
    assert_int_equal(count_all_closed(f), live - 1 /* session count */);
    expect_same_state(f->s, f->s2, G);
    assert_false(fx_gc(f->s2, 1));
}

/* --- Damaged streams --------------------------------------------------------
 */

static void test_corrupt_streams(void **state)
{
    struct fx *f = *state;
    fx_start(f);
    fill(f->s, G, &f->index[0], "A", 20);
    open_b(f);
    uint64_t ib = 0;
    fill(f->s2, G, &ib, "B", 5);
    const uint64_t hb = hash_of(f->s2, G);
    const size_t keys_before = count_all_closed(f);
    struct raft_snapshot_meta m;
    uint64_t total = 0;
    uint32_t crc = 0;
    uint8_t desc[STORE_STAGE_DESC_BYTES];
    uint8_t *b = stream_of(f->s, G, &m, &total, &crc);
    const uint64_t flips[] = {0,
                              9,
                              20,
                              35,
                              STREAM_HEADER_BYTES,
                              STREAM_HEADER_BYTES + 2,
                              STREAM_HEADER_BYTES + 5,
                              STREAM_HEADER_BYTES + 9,
                              total / 3,
                              total / 2,
                              total - 13,
                              total - 10,
                              total - 3};
    for (size_t i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
        b[flips[i]] ^= 0x04;
        int rc = stage_bytes(f->s2, &m, b, total, total, crc, 1000, desc);
        b[flips[i]] ^= 0x04;
        if (rc != KHO_ECORRUPT) {
            fail_msg("a flip at %llu of %llu: %s", (unsigned long long)flips[i],
                     (unsigned long long)total, kho_errname(rc));
        }
    }
    /* Truncated, and one byte too many. */
    assert_int_equal(
        stage_bytes(f->s2, &m, b, total - 1, total, crc, 999, desc),
        KHO_ECORRUPT);
    assert_int_equal(
        stage_bytes(f->s2, &m, b, total / 2, total, crc, 999, desc),
        KHO_ECORRUPT);
    uint8_t *plus = malloc((size_t)total + 1);
    assert_non_null(plus);
    memcpy(plus, b, (size_t)total);
    plus[total] = 0;
    assert_int_equal(
        stage_bytes(f->s2, &m, plus, total + 1, total, crc, 4096, desc),
        KHO_ECORRUPT);
    assert_int_equal(
        stage_bytes(f->s2, &m, plus, total + 1, total + 1, crc, 4096, desc),
        KHO_ECORRUPT);
    free(plus);

    /* Well sealed, but a record fails its own crc (so it is not the
     * sender's record under the sender's data id). */
    const size_t first_value = STREAM_HEADER_BYTES +
                               STREAM_RECORD_HEADER_BYTES +
                               get_le16(b + STREAM_HEADER_BYTES + 1);
    b[first_value + 20] ^= 0x01;
    uint32_t c2 = reseal(b, total);
    assert_int_equal(stage_bytes(f->s2, &m, b, total, total, c2, 512, desc),
                     KHO_ECORRUPT);
    assert_non_null(strstr(store_errmsg(f->s2), "checksum"));
    b[first_value + 20] ^= 0x01;
    /* ... an unknown database; the sender's data id changed (every crc
     * fails); records out of order (two swapped lru keys' session). */
    b[STREAM_HEADER_BYTES] = 7;
    c2 = reseal(b, total);
    assert_int_equal(stage_bytes(f->s2, &m, b, total, total, c2, 512, desc),
                     KHO_ECORRUPT);
    b[STREAM_HEADER_BYTES] = SNAP_DB_KV;
    /* A KHOSNAP 3 stream (a node of store format 3, whose hist also holds
     * the current records): refused between nodes. */
    b[7] = STREAM_VERSION_V3;
    c2 = reseal(b, total);
    assert_int_equal(stage_bytes(f->s2, &m, b, total, total, c2, 512, desc),
                     KHO_ECORRUPT);
    assert_non_null(strstr(store_errmsg(f->s2), "another version"));
    b[7] = STREAM_VERSION;
    b[39] ^= 0x01;
    c2 = reseal(b, total);
    assert_int_equal(stage_bytes(f->s2, &m, b, total, total, c2, 512, desc),
                     KHO_ECORRUPT);
    b[39] ^= 0x01;
    /* Two kv records swapped, each intact: the long key sorts first
     * ('L' < 'k'), then "key/0000" and "key/0001". */
    const size_t r1 = STREAM_HEADER_BYTES + rec_len(b + STREAM_HEADER_BYTES);
    const size_t l1 = rec_len(b + r1), l2 = rec_len(b + r1 + l1);
    assert_memory_equal(b + r1 + STREAM_RECORD_HEADER_BYTES, "key/0000", 8);
    assert_memory_equal(b + r1 + l1 + STREAM_RECORD_HEADER_BYTES, "key/0001",
                        8);
    uint8_t *sw = malloc((size_t)total);
    assert_non_null(sw);
    memcpy(sw, b, (size_t)total);
    memcpy(sw + r1, b + r1 + l1, l2);
    memcpy(sw + r1 + l2, b + r1, l1);
    c2 = reseal(sw, total);
    assert_int_equal(stage_bytes(f->s2, &m, sw, total, total, c2, 512, desc),
                     KHO_ECORRUPT);
    assert_non_null(strstr(store_errmsg(f->s2), "order"));
    free(sw);
    /* The sender's crc is not this stream's. */
    assert_int_equal(reseal(b, total), crc);
    assert_int_equal(
        stage_bytes(f->s2, &m, b, total, total, crc ^ 1, 512, desc),
        KHO_ECORRUPT);

    /* Nothing of it is visible, and gc leaves nothing behind. */
    assert_true(hash_of(f->s2, G) == hb);
    fx_expect_at(f->s2, G, "key/0001", "B-11");
    assert_true(store_gc_pending(f->s2));
    fx_gc_all(f->s2, 50);
    assert_int_equal(count_all_closed(f), keys_before);
    /* The intact stream still goes through. */
    assert_int_equal(stage_bytes(f->s2, &m, b, total, total, crc, 77, desc),
                     KHO_OK);
    assert_int_equal(fx_install(f->s2, G, &m, desc), KHO_OK);
    expect_same_state(f->s, f->s2, G);
    free(b);
}

/* --- Reader positions ------------------------------------------------------
 */

static void test_reader_rewind(void **state)
{
    struct fx *f = *state;
    fx_start(f);
    fill(f->s, G, &f->index[0], "A", 30);
    struct raft_snapshot_meta m;
    uint64_t total = 0;
    uint32_t crc = 0;
    uint8_t *whole = stream_of(f->s, G, &m, &total, &crc);
    struct store_snap_reader *r = NULL;
    assert_int_equal(store_snap_reader_open(f->s, G, &r, &m, &total, &crc),
                     KHO_OK);
    uint8_t *buf = malloc((size_t)total);
    assert_non_null(buf);
    size_t n = 0;
    /* Sequential in odd pieces, then back to earlier offsets, then ahead. */
    for (uint64_t off = 0; off < total; off += n) {
        assert_int_equal(store_snap_reader_read(r, off, buf + off, 301, &n),
                         KHO_OK);
        assert_true(n > 0);
    }
    assert_memory_equal(buf, whole, (size_t)total);
    const uint64_t at[] = {0,  total / 2, 5,           total - 1,
                           41, total / 3, 3000 % total};
    for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
        memset(buf, 0, (size_t)total);
        assert_int_equal(store_snap_reader_read(r, at[i], buf, 1000, &n),
                         KHO_OK);
        size_t want = total - at[i] < 1000 ? (size_t)(total - at[i]) : 1000;
        assert_int_equal(n, want);
        assert_memory_equal(buf, whole + at[i], n);
    }
    /* At and past the end: nothing. */
    assert_int_equal(store_snap_reader_read(r, total, buf, 10, &n), KHO_OK);
    assert_int_equal(n, 0);
    assert_int_equal(store_snap_reader_read(r, total + 5, buf, 10, &n), KHO_OK);
    assert_int_equal(n, 0);
    /* The reader's transaction pins what it streams: later writes do not
     * change its bytes. */
    fx_put(f, "key/0001", "changed", T0);
    assert_int_equal(store_snap_reader_read(r, 0, buf, (size_t)total, &n),
                     KHO_OK);
    assert_int_equal(n, total);
    assert_memory_equal(buf, whole, (size_t)total);
    store_snap_reader_close(r);
    free(buf);
    free(whole);

    /* Refusals: no such group, nothing applied yet. */
    assert_int_equal(store_snap_reader_open(f->s, 999, &r, &m, &total, &crc),
                     KHO_ENOTFOUND);
    fx_create_group(f->s, OTHER);
    assert_int_equal(store_snap_reader_open(f->s, OTHER, &r, &m, &total, &crc),
                     KHO_EINVAL);
    assert_null(r);
    struct store_stage *st = NULL;
    assert_int_equal(store_stage_begin(f->s, 999, 5, 1, 100, 0, &st),
                     KHO_ENOTFOUND);
    assert_int_equal(store_stage_begin(f->s, G, 0, 1, 100, 0, &st), KHO_EINVAL);
    assert_int_equal(store_stage_begin(f->s, G, 5, 1, 3, 0, &st), KHO_EINVAL);
    assert_null(st);
}

/* --- Reads during a swap ---------------------------------------------------
 */

#define SWAP_KEYS 200

struct watcher {
    struct store *s;
    atomic_bool stop;
    atomic_uint scans;
    unsigned old_seen, new_seen;
    bool mixed;
};

/* Every value of one scan must come from the same state machine. */
static int same_cb(void *ctx, const struct store_record *r)
{
    char *first = ctx;
    if (first[0] == '\0') {
        first[0] = (char)r->value[0];
        return KHO_OK;
    }
    return r->value_len > 0 && r->value[0] == first[0] ? KHO_OK : KHO_EINVAL;
}

static void *watch(void *arg)
{
    struct watcher *w = arg;
    struct store_scan q = {.limit = STORE_SCAN_LIMIT_MAX,
                           .max_bytes = SIZE_MAX};
    while (!atomic_load(&w->stop) || w->new_seen < 20) {
        char first[2] = "";
        bool more = false;
        int rc = store_kv_scan(w->s, G, &q, same_cb, first, &more, NULL);
        if (rc != KHO_OK) {
            w->mixed = true;
            break;
        }
        w->scans++;
        w->old_seen += first[0] == 'B';
        w->new_seen += first[0] == 'A';
    }
    return NULL;
}

static void put_all(struct store *s, uint64_t *index, const char *v)
{
    for (int i = 0; i < SWAP_KEYS; i += 50) {
        struct req q;
        char keys[50][16];
        req_init(&q, T0, "w");
        for (int j = 0; j < 50; j++) {
            snprintf(keys[j], sizeof(keys[j]), "k%04d", i + j);
            req_put(&q, keys[j], v);
        }
        assert_int_equal(apply_on(s, G, index, &q).result, KHO_OK);
    }
}

static void test_reads_during_swap(void **state)
{
    struct fx *f = *state;
    fx_start(f);
    for (int i = 0; i < 5; i++) {
        put_all(f->s, &f->index[0], "AAAA");
    }
    open_b(f);
    uint64_t ib = 0;
    put_all(f->s2, &ib, "BBBB");
    struct raft_snapshot_meta m;
    uint8_t desc[STORE_STAGE_DESC_BYTES];
    assert_int_equal(fx_stage_from(f->s, f->s2, G, 8192, &m, desc), KHO_OK);

    struct watcher w = {.s = f->s2};
    atomic_init(&w.stop, false);
    atomic_init(&w.scans, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, watch, &w), 0);
    /* Let the watcher see the old state before the swap: bounded by a
     * count of scans, never by time. */
    for (int spin = 0; spin < 1000000 && atomic_load(&w.scans) < 20; spin++) {
        sched_yield();
    }
    assert_int_equal(fx_install(f->s2, G, &m, desc), KHO_OK);
    atomic_store(&w.stop, true);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_false(w.mixed);
    assert_true(w.new_seen >= 20);
    fx_expect_at(f->s2, G, "k0199", "AAAA");
    print_message("swap: %u scans, %u old, %u new\n", atomic_load(&w.scans),
                  w.old_seen, w.new_seen);
}

/* --- Stages left over, dropped or superseded ------------------------------ */

static void test_stage_lifecycle(void **state)
{
    struct fx *f = *state;
    fx_start(f);
    fill(f->s, G, &f->index[0], "A", 20);
    open_b(f);
    const size_t keys0 = count_all_closed(f);
    struct raft_snapshot_meta m;
    uint64_t total = 0;
    uint32_t crc = 0;
    uint8_t d1[STORE_STAGE_DESC_BYTES], d2[STORE_STAGE_DESC_BYTES];
    uint8_t *b = stream_of(f->s, G, &m, &total, &crc);

    /* Left over at a restart: one receiving (closed half-way; its
     * abandonment is in memory only), one finished and never installed. */
    struct store_stage *st = NULL;
    assert_int_equal(
        store_stage_begin(f->s2, G, m.index, m.term, total, crc, &st), KHO_OK);
    assert_int_equal(store_stage_write(st, b, (size_t)total - 100), KHO_OK);
    store_stage_close(st);
    assert_int_equal(stage_bytes(f->s2, &m, b, total, total, crc, 3000, d1),
                     KHO_OK);
    assert_true(count_all_closed(f) > keys0); /* reopened: both turned */
    assert_true(store_gc_pending(f->s2));
    /* The finished one is gone with the restart. */
    assert_int_equal(fx_install(f->s2, G, &m, d1), KHO_ECORRUPT);
    fx_gc_all(f->s2, 100);
    assert_int_equal(count_all_closed(f), keys0);
    assert_false(store_gc_pending(f->s2));

    /* Two finished stages: installing one makes the other garbage. */
    assert_int_equal(stage_bytes(f->s2, &m, b, total, total, crc, 3000, d1),
                     KHO_OK);
    assert_int_equal(stage_bytes(f->s2, &m, b, total, total, crc, 5000, d2),
                     KHO_OK);
    assert_int_equal(fx_install(f->s2, G, &m, d2), KHO_OK);
    assert_int_equal(fx_install(f->s2, G, &m, d1), KHO_ECORRUPT);
    fx_gc_all(f->s2, 100);
    expect_same_state(f->s, f->s2, G);

    /* Drops: a finished stage goes; unknown or bad descriptors are
     * ignored; a descriptor for another group, index or term does not
     * install. */
    m.index++;                /* the next snapshot, as far as B knows */
    b[16] = (uint8_t)m.index; /* the header's index (little-endian) */
    crc = reseal(b, total);
    assert_int_equal(stage_bytes(f->s2, &m, b, total, total, crc, 3000, d1),
                     KHO_OK);
    struct raft_snapshot_meta wrong = m;
    wrong.term++;
    assert_int_equal(fx_install(f->s2, G, &wrong, d1), KHO_ECORRUPT);
    assert_int_equal(fx_install(f->s2, OTHER + 10, &m, d1), KHO_ECORRUPT);
    struct store_batch *bt = NULL;
    uint8_t junk[STORE_STAGE_DESC_BYTES] = {1, 2, 3};
    assert_int_equal(store_write_begin(f->s2, &bt), KHO_OK);
    assert_int_equal(store_batch_stage_drop(bt, junk, sizeof(junk)), KHO_OK);
    assert_int_equal(store_batch_stage_drop(bt, d1, 3), KHO_OK);
    assert_int_equal(store_batch_stage_drop(bt, d1, sizeof(d1)), KHO_OK);
    assert_int_equal(store_batch_stage_drop(bt, d1, sizeof(d1)), KHO_OK);
    assert_int_equal(store_write_commit(bt), KHO_OK);
    assert_int_equal(fx_install(f->s2, G, &m, d1), KHO_ECORRUPT);
    fx_gc_all(f->s2, 100);
    expect_same_state(f->s, f->s2, G);
    free(b);
}

/* --- Deleting a group -------------------------------------------------------
 */

static void test_group_delete_gc(void **state)
{
    struct fx *f = *state;
    fx_start(f);
    fill(f->s, G, &f->index[0], "A", 20);
    open_b(f);
    uint64_t ib = 0;
    fill(f->s2, G, &ib, "B", 30);
    const uint64_t old = data_of(f->s2, G);
    const uint64_t other = data_of(f->s2, OTHER + 10);
    struct raft_snapshot_meta m;
    uint64_t total = 0;
    uint32_t crc = 0;
    uint8_t desc[STORE_STAGE_DESC_BYTES];
    uint8_t *b = stream_of(f->s, G, &m, &total, &crc);
    /* A stage of the group is being received while it is deleted. */
    struct store_stage *st = NULL;
    assert_int_equal(
        store_stage_begin(f->s2, G, m.index, m.term, total, crc, &st), KHO_OK);
    assert_int_equal(store_stage_write(st, b, (size_t)total / 2), KHO_OK);

    struct store_batch *bt = NULL;
    assert_int_equal(store_write_begin(f->s2, &bt), KHO_OK);
    assert_int_equal(store_batch_group_delete(bt, G), KHO_OK);
    assert_int_equal(store_write_commit(bt), KHO_OK);
    assert_true(store_gc_pending(f->s2));
    fx_expect_at(f->s2, G, "key/0001", NULL);
    /* The stage stops at its next transaction. */
    assert_int_equal(
        store_stage_write(st, b + total / 2, (size_t)(total - total / 2)),
        KHO_OK);
    assert_int_equal(store_stage_finish(st, desc), KHO_ENOTFOUND);
    store_stage_close(st);

    /* Created again at once: a fresh data id, none of the old records. */
    fx_create_group(f->s2, G);
    const uint64_t fresh = data_of(f->s2, G);
    assert_true(fresh != old);
    fx_expect_at(f->s2, G, "key/0001", NULL);
    uint64_t i2 = 0;
    fill(f->s2, G, &i2, "C", 3);
    const uint64_t hc = hash_of(f->s2, G);
    assert_true(count_data_closed(f, old) > 0);
    unsigned calls = fx_gc_all(f->s2, 16);
    assert_true(calls > 3);
    assert_int_equal(count_data_closed(f, old), 0);
    /* The new group and the neighbour are intact. */
    assert_true(hash_of(f->s2, G) == hc);
    fx_expect_at(f->s2, G, "key/0001", "C-7");
    assert_true(count_data_closed(f, other) == 0); /* it applied nothing */
    assert_int_equal(count_all_closed(f),
                     count_data_closed(f, fresh) - 1 /* session count */);
    free(b);
}

/* --- A big group, small memory -------------------------------------------- */

#define BIG_VALUES 30u
#define BIG_VALUE_BYTES (1000u << 10)

static void test_big_group_small_memory(void **state)
{
    struct fx *f = *state;
    fx_start(f);
    uint8_t *v = malloc(BIG_VALUE_BYTES);
    assert_non_null(v);
    for (unsigned i = 0; i < BIG_VALUES; i++) {
        char k[16];
        memset(v, 'a' + (int)(i % 26), BIG_VALUE_BYTES);
        snprintf(k, sizeof(k), "big%03u", i);
        struct req q;
        req_init(&q, T0, "big");
        req_put_n(&q, k, strlen(k), v, BIG_VALUE_BYTES);
        assert_int_equal(fx_apply(f, &q).result, KHO_OK);
    }
    free(v);
    open_b(f);

    struct store_snap_reader *r = NULL;
    struct store_stage *st = NULL;
    struct raft_snapshot_meta m;
    uint64_t total = 0;
    uint32_t crc = 0;
    uint8_t desc[STORE_STAGE_DESC_BYTES];
    size_t piece = 256u << 10;
    uint8_t *buf = malloc(piece);
    assert_non_null(buf);
    size_t heap0 = heap_bytes();
    assert_int_equal(store_snap_reader_open(f->s, G, &r, &m, &total, &crc),
                     KHO_OK);
    const size_t heap1 = heap_bytes();
    /* kv holds every value (and hist none: no key was overwritten). */
    assert_true(total > BIG_VALUES * BIG_VALUE_BYTES);
    assert_true(total < BIG_VALUES * (BIG_VALUE_BYTES + 1024u));
    assert_int_equal(
        store_stage_begin(f->s2, G, m.index, m.term, total, crc, &st), KHO_OK);
    long reader_grew = 0; /* across every read call */
    size_t stage_max = 0;
    for (uint64_t off = 0; off < total;) {
        size_t n = 0;
        size_t before = heap_bytes();
        assert_int_equal(store_snap_reader_read(r, off, buf, piece, &n),
                         KHO_OK);
        reader_grew += (long)heap_bytes() - (long)before;
        assert_int_equal(store_stage_write(st, buf, n), KHO_OK);
        size_t now = heap_bytes();
        if (now > heap1 && now - heap1 > stage_max) {
            stage_max = now - heap1;
        }
        off += n;
    }
    assert_int_equal(store_stage_finish(st, desc), KHO_OK);
    store_stage_close(st);
    store_snap_reader_close(r);
    free(buf);
    size_t reader_open = heap1 > heap0 ? heap1 - heap0 : 0;
    print_message("%llu bytes: reader heap %zu at open, %+ld over the reads; "
                  "stage heap up to %zu\n",
                  (unsigned long long)total, reader_open, reader_grew,
                  stage_max);
    /* The reader holds a cursor and a few dozen bytes; the stage at most a
     * transaction's worth plus a record and its parser's buffer. */
    assert_true(reader_open < (64u << 10));
    assert_true(reader_grew < (64 << 10));
    assert_true(stage_max < 2u * STORE_STAGE_TXN_BYTES + (4u << 20));
    assert_int_equal(fx_install(f->s2, G, &m, desc), KHO_OK);
    assert_true(hash_of(f->s, G) == hash_of(f->s2, G));
    fx_gc_all(f->s2, 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_stream_install_gc, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_streams, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_reader_rewind, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_reads_during_swap, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_stage_lifecycle, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_group_delete_gc, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_big_group_small_memory, fx_setup,
                                        fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

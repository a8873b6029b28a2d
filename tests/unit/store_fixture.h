/*
 * store_fixture.h - what the state-machine unit tests (test_txn,
 * test_session, test_check, test_backup, test_stream) share: a store in a
 * fresh directory with one group, a request builder, "apply this request
 * as the next log entry", reads that copy records out of their callbacks,
 * a snapshot streamed from one store into a stage on another and
 * installed, and raw LMDB access to a closed store's history (to look at
 * what is stored, and to give it the shape store format 3 gave it).
 * Include after cmocka.h.
 */
#ifndef KHO_TEST_STORE_FIXTURE_H
#define KHO_TEST_STORE_FIXTURE_H

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lmdb.h>

#include "../../server/store/internal.h" /* stored layouts, for raw LMDB */
#include "../../server/store/store.h"

#define FX_GROUP 7u
#define FX_GROUPS_MAX 4u

/* --- Fixture ------------------------------------------------------------- */

struct fx {
    char dir[PATH_MAX];
    char dir2[PATH_MAX];
    struct store *s;
    struct store *s2;
    struct store_opts opts;        /* what s (and s2) open with */
    uint64_t index[FX_GROUPS_MAX]; /* last index applied, per test group */
};

static inline bool fx_tmp(char *out)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    snprintf(out, PATH_MAX, "%s/kho-sm-XXXXXX", base);
    if (mkdtemp(out) == NULL) {
        fprintf(stderr, "cannot create %s: %s\n", out, strerror(errno));
        out[0] = '\0';
        return false;
    }
    return true;
}

static inline int fx_rm_cb(const char *path, const struct stat *sb, int flag,
                           struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static inline void fx_rm(const char *dir)
{
    if (dir[0] != '\0') {
        nftw(dir, fx_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    }
}

static inline struct store *fx_open(const char *dir, const struct store_opts *o)
{
    struct store *s = NULL;
    int rc = store_open(dir, o, &s);
    if (rc != KHO_OK) {
        fail_msg("store_open(%s): %s: %s", dir, kho_errname(rc),
                 store_errmsg(NULL));
    }
    return s;
}

static inline void fx_create_group(struct store *s, uint64_t group)
{
    struct raft_conf c = {.n = 1, .members = {{.id = 1, .role = RAFT_VOTER}}};
    struct store_batch *b = NULL;
    assert_int_equal(store_write_begin(s, &b), KHO_OK);
    assert_int_equal(store_batch_group_create(b, group, &c), KHO_OK);
    assert_int_equal(store_write_commit(b), KHO_OK);
}

/* Opens f->s in f->dir with f->opts (already set) and creates FX_GROUP. */
static inline void fx_start(struct fx *f)
{
    f->s = fx_open(f->dir, &f->opts);
    fx_create_group(f->s, FX_GROUP);
}

static inline int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (f == NULL || !fx_tmp(f->dir)) {
        free(f);
        return -1;
    }
    store_opts_defaults(&f->opts);
    f->opts.map_size_bytes = UINT64_C(256) << 20;
    *state = f;
    return 0;
}

static inline int fx_teardown(void **state)
{
    struct fx *f = *state;
    store_close(f->s);
    store_close(f->s2);
    fx_rm(f->dir);
    fx_rm(f->dir2);
    free(f);
    return 0;
}

/* --- Requests ------------------------------------------------------------ */

struct req {
    struct store_request r;
    struct store_compare cmps[STORE_TXN_CMPS_MAX];
    struct store_op ops[STORE_TXN_OPS_MAX];
};

static inline void req_init(struct req *q, uint64_t time_ms, const char *writer)
{
    memset(q, 0, sizeof(*q));
    q->r.time_ms = time_ms;
    q->r.writer = writer;
    q->r.writer_len = writer != NULL ? strlen(writer) : 0;
    q->r.cmps = q->cmps;
    q->r.ops = q->ops;
}

static inline void req_put_n(struct req *q, const void *key, size_t key_len,
                             const void *value, size_t value_len)
{
    assert_true(q->r.n_ops < STORE_TXN_OPS_MAX);
    q->ops[q->r.n_ops++] = (struct store_op){.op = STORE_OP_PUT,
                                             .key = key,
                                             .key_len = key_len,
                                             .value = value,
                                             .value_len = value_len};
}

static inline void req_put(struct req *q, const char *key, const char *value)
{
    req_put_n(q, key, strlen(key), value, strlen(value));
}

static inline void req_del_n(struct req *q, const void *key, size_t key_len)
{
    assert_true(q->r.n_ops < STORE_TXN_OPS_MAX);
    q->ops[q->r.n_ops++] = (struct store_op){
        .op = STORE_OP_DELETE, .key = key, .key_len = key_len};
}

static inline void req_del(struct req *q, const char *key)
{
    req_del_n(q, key, strlen(key));
}

static inline void req_cmp(struct req *q, const char *key, uint32_t target,
                           uint32_t op, uint64_t number)
{
    assert_true(q->r.n_cmp < STORE_TXN_CMPS_MAX);
    q->cmps[q->r.n_cmp++] = (struct store_compare){
        .target = target,
        .op = op,
        .key = (const uint8_t *)key,
        .key_len = strlen(key),
        .number = number,
    };
}

static inline void req_cmp_value(struct req *q, const char *key, uint32_t op,
                                 const char *value)
{
    assert_true(q->r.n_cmp < STORE_TXN_CMPS_MAX);
    q->cmps[q->r.n_cmp++] = (struct store_compare){
        .target = STORE_CMP_VALUE,
        .op = op,
        .key = (const uint8_t *)key,
        .key_len = strlen(key),
        .value = (const uint8_t *)value,
        .value_len = strlen(value),
    };
}

/* Encodes q into a fresh buffer (the caller frees it). */
static inline uint8_t *req_encode(const struct req *q, size_t *len)
{
    size_t n = store_request_size(&q->r);
    assert_true(n > 0);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    assert_int_equal(store_request_encode(&q->r, buf, n, len), KHO_OK);
    assert_int_equal(*len, n);
    return buf;
}

/* --- Applying ------------------------------------------------------------ */

static inline size_t fx_slot(uint64_t group)
{
    assert_true(group >= FX_GROUP && group < FX_GROUP + FX_GROUPS_MAX);
    return (size_t)(group - FX_GROUP);
}

/* Persists and applies raw entry bytes as the group's next NORMAL entry on
 * store s (whose last applied index is *index). */
static inline struct store_apply_result
fx_apply_raw_at(struct store *s, uint64_t group, uint64_t *index,
                const uint8_t *data, size_t len)
{
    struct raft_entry e = {.term = 1,
                           .index = *index + 1,
                           .type = RAFT_ENTRY_NORMAL,
                           .len = (uint32_t)len,
                           .data = (uint8_t *)data};
    struct raft_ready rd = {.entries = &e, .n_entries = 1};
    struct store_apply_result r;
    struct store_batch *b = NULL;
    memset(&r, 0xAB, sizeof(r)); /* every field must be set */
    assert_int_equal(store_write_begin(s, &b), KHO_OK);
    assert_int_equal(store_batch_persist_ready(b, group, &rd), KHO_OK);
    int rc = store_batch_apply(b, group, &e, &r);
    if (rc != KHO_OK) {
        fail_msg("apply: %s: %s", kho_errname(rc), store_errmsg(s));
    }
    assert_int_equal(store_write_commit(b), KHO_OK);
    if (!r.duplicate) {
        assert_int_equal(r.revision, e.index);
    }
    *index = e.index;
    return r;
}

static inline struct store_apply_result
fx_apply_raw(struct fx *f, uint64_t group, const uint8_t *data, size_t len)
{
    return fx_apply_raw_at(f->s, group, &f->index[fx_slot(group)], data, len);
}

static inline struct store_apply_result
fx_apply_to(struct fx *f, uint64_t group, const struct req *q)
{
    size_t len = 0;
    uint8_t *buf = req_encode(q, &len);
    struct store_apply_result r = fx_apply_raw(f, group, buf, len);
    free(buf);
    return r;
}

static inline struct store_apply_result fx_apply(struct fx *f,
                                                 const struct req *q)
{
    return fx_apply_to(f, FX_GROUP, q);
}

/* A plain put or delete (STORE_REQ_SINGLE) at time_ms. */
static inline struct store_apply_result
fx_put(struct fx *f, const char *key, const char *value, uint64_t time_ms)
{
    struct req q;
    req_init(&q, time_ms, "tester");
    q.r.flags = STORE_REQ_SINGLE;
    req_put(&q, key, value);
    return fx_apply(f, &q);
}

static inline struct store_apply_result fx_del(struct fx *f, const char *key,
                                               uint64_t time_ms)
{
    struct req q;
    req_init(&q, time_ms, "tester");
    q.r.flags = STORE_REQ_SINGLE;
    req_del(&q, key);
    return fx_apply(f, &q);
}

/* --- Reading ------------------------------------------------------------- */

/* A record copied out of a read callback. */
struct rec {
    uint8_t key[STORE_KEY_BYTES_MAX];
    size_t key_len;
    uint8_t *value; /* malloc'd; NULL when empty */
    size_t value_len;
    uint64_t version, create_rev, mod_rev, time_ms;
    char writer[STORE_WRITER_BYTES_MAX + 1];
    bool deleted;
};

#define RECS_MAX 512u

struct recs {
    struct rec r[RECS_MAX];
    size_t n;
    size_t stop_after; /* cb answers KHO_EBUSY after this many; 0: never */
};

static inline int recs_cb(void *ctx, const struct store_record *r)
{
    struct recs *l = ctx;
    if (l->stop_after != 0 && l->n == l->stop_after) {
        return KHO_EBUSY;
    }
    assert_true(l->n < RECS_MAX);
    assert_true(r->key_len <= STORE_KEY_BYTES_MAX);
    assert_true(r->writer_len <= STORE_WRITER_BYTES_MAX);
    struct rec *c = &l->r[l->n++];
    memcpy(c->key, r->key, r->key_len);
    c->key_len = r->key_len;
    c->value = NULL;
    c->value_len = r->value_len;
    if (r->value_len > 0) {
        c->value = malloc(r->value_len);
        assert_non_null(c->value);
        memcpy(c->value, r->value, r->value_len);
    }
    c->version = r->version;
    c->create_rev = r->create_rev;
    c->mod_rev = r->mod_rev;
    c->time_ms = r->time_ms;
    if (r->writer_len > 0) {
        memcpy(c->writer, r->writer, r->writer_len);
    }
    c->writer[r->writer_len] = '\0';
    c->deleted = r->deleted;
    return KHO_OK;
}

static inline void recs_free(struct recs *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->r[i].value);
        l->r[i].value = NULL;
    }
    l->n = 0;
}

static inline bool rec_is(const struct rec *r, const char *key,
                          const char *value)
{
    return r->key_len == strlen(key) && memcmp(r->key, key, r->key_len) == 0 &&
           (value == NULL ? r->value_len == 0
                          : r->value_len == strlen(value) &&
                                memcmp(r->value, value, r->value_len) == 0);
}

/* Reads one key into *out (freed by the caller with free(out->value)). */
static inline int fx_read_at(struct store *s, uint64_t group, const char *key,
                             struct rec *out)
{
    static struct recs l; /* big: not on the stack */
    memset(out, 0, sizeof(*out));
    l.n = 0;
    l.stop_after = 0;
    int rc = store_kv_read(s, group, key, strlen(key), recs_cb, &l, NULL);
    if (rc == KHO_OK) {
        assert_int_equal(l.n, 1);
        *out = l.r[0];
    } else {
        assert_int_equal(l.n, 0);
    }
    return rc;
}

static inline int fx_read(struct fx *f, const char *key, struct rec *out)
{
    return fx_read_at(f->s, FX_GROUP, key, out);
}

/* Asserts key's value on s (NULL: absent). */
static inline void fx_expect_at(struct store *s, uint64_t group,
                                const char *key, const char *want)
{
    struct rec r;
    int rc = fx_read_at(s, group, key, &r);
    if (want == NULL) {
        assert_int_equal(rc, KHO_ENOTFOUND);
        return;
    }
    if (rc != KHO_OK) {
        fail_msg("read %s: %s: %s", key, kho_errname(rc), store_errmsg(s));
    }
    assert_true(rec_is(&r, key, want));
    free(r.value);
}

static inline void fx_expect(struct fx *f, const char *key, const char *want)
{
    fx_expect_at(f->s, FX_GROUP, key, want);
}

/* --- Snapshot streams ---------------------------------------------------- */

/* Streams group's snapshot from src into a stage on dst, reading and
 * feeding pieces of at most `piece` bytes; returns the finish's result
 * (the stage is closed either way). *meta and desc are for the install. */
static inline int fx_stage_from(struct store *src, struct store *dst,
                                uint64_t group, size_t piece,
                                struct raft_snapshot_meta *meta,
                                uint8_t desc[STORE_STAGE_DESC_BYTES])
{
    struct store_snap_reader *r = NULL;
    struct store_stage *st = NULL;
    uint64_t total = 0;
    uint32_t crc = 0;
    int rc = store_snap_reader_open(src, group, &r, meta, &total, &crc);
    if (rc != KHO_OK) {
        fail_msg("reader: %s: %s", kho_errname(rc), store_errmsg(src));
    }
    rc =
        store_stage_begin(dst, group, meta->index, meta->term, total, crc, &st);
    if (rc != KHO_OK) {
        fail_msg("stage: %s: %s", kho_errname(rc), store_errmsg(dst));
    }
    uint8_t *buf = malloc(piece);
    assert_non_null(buf);
    for (uint64_t off = 0; rc == KHO_OK && off < total;) {
        size_t n = 0;
        assert_int_equal(store_snap_reader_read(r, off, buf, piece, &n),
                         KHO_OK);
        assert_true(n > 0 && n <= piece);
        rc = store_stage_write(st, buf, n);
        off += n;
    }
    if (rc == KHO_OK) {
        rc = store_stage_finish(st, desc);
    }
    free(buf);
    store_stage_close(st);
    store_snap_reader_close(r);
    return rc;
}

/* Installs a finished stage on s through store_batch_persist_ready(). */
static inline int fx_install(struct store *s, uint64_t group,
                             const struct raft_snapshot_meta *m,
                             const uint8_t *desc)
{
    struct raft_snapshot sn = {
        .meta = *m, .data = (uint8_t *)desc, .len = STORE_STAGE_DESC_BYTES};
    struct raft_ready rd = {.snapshot = &sn};
    struct store_batch *b = NULL;
    assert_int_equal(store_write_begin(s, &b), KHO_OK);
    store_batch_persist_ready(b, group, &rd);
    return store_write_commit(b);
}

/* Streams and installs group's snapshot from src on dst; returns its
 * meta. */
static inline struct raft_snapshot_meta
fx_transfer(struct store *src, struct store *dst, uint64_t group, size_t piece)
{
    struct raft_snapshot_meta m;
    uint8_t desc[STORE_STAGE_DESC_BYTES];
    int rc = fx_stage_from(src, dst, group, piece, &m, desc);
    if (rc != KHO_OK) {
        fail_msg("stage: %s: %s", kho_errname(rc), store_errmsg(dst));
    }
    rc = fx_install(dst, group, &m, desc);
    if (rc != KHO_OK) {
        fail_msg("install: %s: %s", kho_errname(rc), store_errmsg(dst));
    }
    return m;
}

/* One store_batch_gc() call of max_keys in a batch of its own; returns
 * *more. */
static inline bool fx_gc(struct store *s, uint32_t max_keys)
{
    struct store_batch *b = NULL;
    bool more = true;
    assert_int_equal(store_write_begin(s, &b), KHO_OK);
    int rc = store_batch_gc(b, max_keys, &more);
    if (rc != KHO_OK) {
        fail_msg("gc: %s: %s", kho_errname(rc), store_errmsg(s));
    }
    assert_int_equal(store_write_commit(b), KHO_OK);
    return more;
}

/* Collects every garbage key; returns how many calls of max_keys it
 * took. */
static inline unsigned fx_gc_all(struct store *s, uint32_t max_keys)
{
    unsigned calls = 1;
    while (fx_gc(s, max_keys)) {
        calls++;
        assert_true(calls < 1000000u);
    }
    assert_false(store_gc_pending(s));
    return calls;
}

/* --- Raw LMDB: the stored history ---------------------------------------- */

/* A closed store opened with raw LMDB (never two handles on one
 * environment in one process: close the store first). */
struct fx_raw {
    MDB_env *env;
    MDB_txn *txn;
};

static inline void fx_raw_begin(struct fx_raw *r, const char *dir, bool write)
{
    unsigned flags = write ? 0u : MDB_RDONLY;
    assert_int_equal(mdb_env_create(&r->env), 0);
    assert_int_equal(mdb_env_set_maxdbs(r->env, STORE_DBS_MAX), 0);
    assert_int_equal(mdb_env_set_mapsize(r->env, UINT64_C(256) << 20), 0);
    assert_int_equal(mdb_env_open(r->env, dir, flags, 0640), 0);
    assert_int_equal(mdb_txn_begin(r->env, NULL, flags, &r->txn), 0);
}

static inline MDB_dbi fx_raw_dbi(struct fx_raw *r, const char *name)
{
    MDB_dbi dbi;
    assert_int_equal(mdb_dbi_open(r->txn, name, 0, &dbi), 0);
    return dbi;
}

static inline void fx_raw_end(struct fx_raw *r, bool commit)
{
    if (commit) {
        assert_int_equal(mdb_txn_commit(r->txn), 0);
    } else {
        mdb_txn_abort(r->txn);
    }
    mdb_env_close(r->env);
}

/* One version as hist stores it. */
struct fx_version {
    uint8_t lkey[HIST_KEY_BYTES]; /* data id, hash, mod_rev, slot */
    const uint8_t *key;           /* the user key, inside value */
    size_t key_len;
    uint64_t mod_rev;
    uint32_t slot;
    bool deleted;
    uint8_t *value; /* malloc'd copy of the stored value */
    size_t value_len;
};

#define FX_VERSIONS_MAX 1024u

struct fx_versions {
    struct fx_version v[FX_VERSIONS_MAX];
    size_t n;
};

static inline void fx_versions_free(struct fx_versions *vs)
{
    for (size_t i = 0; i < vs->n; i++) {
        free(vs->v[i].value);
    }
    vs->n = 0;
}

static inline struct fx_version *
fx_version_add(struct fx_versions *vs, const uint8_t *value, size_t len)
{
    assert_true(vs->n < FX_VERSIONS_MAX && len >= HIST_HEADER_BYTES);
    struct fx_version *x = &vs->v[vs->n++];
    memset(x, 0, sizeof(*x));
    x->value = malloc(len);
    assert_non_null(x->value);
    memcpy(x->value, value, len);
    x->value_len = len;
    x->key = x->value + HIST_HEADER_BYTES;
    x->key_len = get_le16(x->value + 4);
    x->deleted = (x->value[6] & HIST_DELETED) != 0;
    return x;
}

/* Appends every version of data id `data` in hist to vs, in key order. */
static inline void fx_raw_versions(struct fx_raw *r, uint64_t data,
                                   struct fx_versions *vs)
{
    MDB_cursor *c = NULL;
    uint8_t lo[8];
    put_be64(lo, data);
    MDB_val k = {.mv_size = sizeof(lo), .mv_data = lo}, v;
    assert_int_equal(mdb_cursor_open(r->txn, fx_raw_dbi(r, "hist"), &c), 0);
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && get_be64(k.mv_data) == data) {
        assert_int_equal(k.mv_size, HIST_KEY_BYTES);
        struct fx_version *x = fx_version_add(vs, v.mv_data, v.mv_size);
        memcpy(x->lkey, k.mv_data, HIST_KEY_BYTES);
        x->mod_rev = get_be64(x->lkey + 16);
        x->slot = (uint32_t)x->lkey[24] << 8 | x->lkey[25];
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    assert_true(rc == 0 || rc == MDB_NOTFOUND);
    mdb_cursor_close(c);
}

/* Closes f->s, collects group's versions in hist into vs (every stored
 * one, whatever its key), reopens f->s. */
static inline void fx_hist_stored(struct fx *f, uint64_t group,
                                  struct fx_versions *vs)
{
    struct fx_raw r;
    uint64_t data = 0;
    assert_int_equal(store_group_data_id(f->s, group, &data), KHO_OK);
    store_close(f->s);
    f->s = NULL;
    fx_raw_begin(&r, f->dir, false);
    fx_raw_versions(&r, data, vs);
    fx_raw_end(&r, false);
    f->s = fx_open(f->dir, &f->opts);
}

/* Asserts that hist holds no copy of a current record of group: every
 * stored version is a tombstone or a record its key no longer has. */
static inline void fx_expect_hist_not_current(struct fx *f, uint64_t group)
{
    static struct fx_versions vs;
    static struct recs l;
    fx_hist_stored(f, group, &vs);
    for (size_t i = 0; i < vs.n; i++) {
        const struct fx_version *x = &vs.v[i];
        l.n = 0;
        int rc =
            store_kv_read(f->s, group, x->key, x->key_len, recs_cb, &l, NULL);
        assert_true(rc == KHO_OK || rc == KHO_ENOTFOUND);
        if (rc == KHO_OK && l.r[0].mod_rev == x->mod_rev) {
            fail_msg("hist holds the current record of %.*s (rev %llu)",
                     (int)x->key_len, (const char *)x->key,
                     (unsigned long long)x->mod_rev);
        }
        recs_free(&l);
    }
    fx_versions_free(&vs);
}

/* --- Raw LMDB: the shape of store format 3 -------------------------------- */

/* The index of the op of group's log entry `index` that wrote key (the
 * log must still hold the entry). */
static inline uint32_t fx_raw_op_slot(struct fx_raw *r, uint64_t group,
                                      uint64_t index, const uint8_t *key,
                                      size_t key_len)
{
    static struct store_compare cmps[STORE_TXN_CMPS_MAX];
    static struct store_op ops[STORE_TXN_OPS_MAX];
    struct store_request q;
    uint8_t k[LOG_KEY_BYTES];
    put_be64(k, group);
    put_be64(k + 8, index);
    MDB_val kv = {.mv_size = sizeof(k), .mv_data = k}, v;
    assert_int_equal(mdb_get(r->txn, fx_raw_dbi(r, "raft_log"), &kv, &v), 0);
    assert_int_equal(
        store_request_decode((const uint8_t *)v.mv_data + ENTRY_HEADER_BYTES,
                             v.mv_size - ENTRY_HEADER_BYTES, &q, cmps, ops),
        KHO_OK);
    for (size_t i = 0; i < q.n_ops; i++) {
        if (ops[i].key_len == key_len &&
            memcmp(ops[i].key, key, key_len) == 0) {
            return (uint32_t)i;
        }
    }
    fail_msg("entry %llu has no op on that key", (unsigned long long)index);
    return 0;
}

/* Appends to vs the copy format 3 kept in hist of every kv record of
 * data id `data` (its lkey's slot still to be set). */
static inline void fx_raw_current_copies(struct fx_raw *r, uint64_t data,
                                         uint64_t hash_mask,
                                         struct fx_versions *vs)
{
    static uint8_t buf[HIST_VALUE_BYTES_MAX];
    MDB_cursor *c = NULL;
    uint8_t lo[8];
    put_be64(lo, data);
    MDB_val k = {.mv_size = sizeof(lo), .mv_data = lo}, v;
    assert_int_equal(mdb_cursor_open(r->txn, fx_raw_dbi(r, "kv"), &c), 0);
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && get_be64(k.mv_data) == data) {
        const uint8_t *p = v.mv_data;
        size_t long_len = get_le16(p + 4);
        const uint8_t *key =
            long_len > 0 ? p + KV_HEADER_BYTES : (const uint8_t *)k.mv_data + 8;
        size_t key_len = long_len > 0 ? long_len : k.mv_size - 8;
        size_t body = v.mv_size - KV_HEADER_BYTES - long_len;
        memset(buf, 0, HIST_HEADER_BYTES);
        put_le16(buf + 4, (uint16_t)key_len);
        memcpy(buf + HIST_HEADER_BYTES, key, key_len);
        memcpy(buf + HIST_HEADER_BYTES + key_len,
               p + KV_HEADER_BYTES + long_len, body);
        struct fx_version *x =
            fx_version_add(vs, buf, HIST_HEADER_BYTES + key_len + body);
        x->mod_rev = get_le64(x->key + key_len + 16);
        put_be64(x->lkey, data);
        put_be64(x->lkey + 8, store_key_hash(x->key, key_len) & hash_mask);
        put_be64(x->lkey + 16, x->mod_rev);
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    assert_true(rc == 0 || rc == MDB_NOTFOUND);
    mdb_cursor_close(c);
}

/* Writes version x under its lkey with its slot set to `slot`, sealed. */
static inline void fx_raw_put_version(struct fx_raw *r, MDB_dbi hist,
                                      struct fx_version *x, uint32_t slot)
{
    x->lkey[24] = (uint8_t)(slot >> 8);
    x->lkey[25] = (uint8_t)slot;
    uint32_t c = store_crc32c_init();
    c = store_crc32c_update(c, x->lkey, HIST_KEY_BYTES);
    c = store_crc32c_update(c, x->value + 4, x->value_len - 4);
    put_le32(x->value, store_crc32c_final(c));
    MDB_val k = {.mv_size = HIST_KEY_BYTES, .mv_data = x->lkey};
    MDB_val v = {.mv_size = x->value_len, .mv_data = x->value};
    assert_int_equal(mdb_put(r->txn, hist, &k, &v, MDB_NOOVERWRITE), 0);
}

/*
 * Gives group's hist the shape store format 3 gave it - every current kv
 * record in hist too, and every version at the slot of the op that wrote
 * it - and, with `as_v3`, records format 3 in `info`: a store as format 3
 * left it. Closes f->s (reopening converts it). The group's log must hold
 * every entry that wrote a version still stored.
 */
static inline void fx_make_format3(struct fx *f, uint64_t group, bool as_v3)
{
    static struct fx_versions vs;
    struct fx_raw r;
    uint64_t data = 0, bits = f->opts.test_key_hash_bits;
    uint64_t mask = bits == 0 ? UINT64_MAX : (UINT64_C(1) << bits) - 1;
    assert_int_equal(store_group_data_id(f->s, group, &data), KHO_OK);
    store_close(f->s);
    f->s = NULL;
    fx_raw_begin(&r, f->dir, true);
    MDB_dbi hist = fx_raw_dbi(&r, "hist");
    fx_raw_versions(&r, data, &vs);
    for (size_t i = 0; i < vs.n; i++) {
        MDB_val k = {.mv_size = HIST_KEY_BYTES, .mv_data = vs.v[i].lkey};
        assert_int_equal(mdb_del(r.txn, hist, &k, NULL), 0);
    }
    fx_raw_current_copies(&r, data, mask, &vs);
    for (size_t i = 0; i < vs.n; i++) {
        struct fx_version *x = &vs.v[i];
        uint32_t slot = x->deleted ? x->slot
                                   : fx_raw_op_slot(&r, group, x->mod_rev,
                                                    x->key, x->key_len);
        fx_raw_put_version(&r, hist, x, slot);
    }
    if (as_v3) {
        uint8_t v3[4] = {3, 0, 0, 0};
        MDB_val k = {.mv_size = 6, .mv_data = "format"};
        MDB_val v = {.mv_size = sizeof(v3), .mv_data = v3};
        assert_int_equal(mdb_put(r.txn, fx_raw_dbi(&r, "info"), &k, &v, 0), 0);
    }
    fx_raw_end(&r, true);
    fx_versions_free(&vs);
}

#endif /* KHO_TEST_STORE_FIXTURE_H */

/*
 * read.c - reading the state machine from any thread: one key, a range of
 * keys, a key's history, and the space the map holds. Each call runs on its
 * own read transaction and reports the group's applied index from that same
 * transaction, so a linearizable read can check it against its read index.
 * It maps the group to its data id in that transaction too, so a read
 * during an install sees the old state machine or the new one, whole.
 * Every record is checksummed before cb sees it.
 */
#include "internal.h"

#include <string.h>

/* --- Common -------------------------------------------------------------- */

static bool bytes_ok(const void *p, size_t len)
{
    return len == 0 || p != NULL;
}

static int check_key(struct store *s, const void *key, size_t key_len)
{
    if (key_len == 0 || key_len > STORE_KEY_BYTES_MAX ||
        !bytes_ok(key, key_len)) {
        return store_fail(s, KHO_EINVAL, "key length %zu outside [1, %u]",
                          key_len, STORE_KEY_BYTES_MAX);
    }
    return KHO_OK;
}

static int check_limit(struct store *s, uint32_t limit)
{
    if (limit == 0 || limit > STORE_SCAN_LIMIT_MAX) {
        return store_fail(s, KHO_EINVAL, "limit %u outside [1, %u]", limit,
                          STORE_SCAN_LIMIT_MAX);
    }
    return KHO_OK;
}

/* Begins the read and fetches the group's applied index and data id in
 * it. On failure no transaction is left open. */
static int read_begin(struct store *s, uint64_t group, MDB_txn **txn,
                      uint64_t *applied, uint64_t *data)
{
    int rc = store_rtxn_begin(s, txn);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = store_rec_group_data(s, *txn, group, applied, data);
    if (rc != KHO_OK) {
        store_rtxn_end(s, *txn);
        *txn = NULL;
    }
    return rc;
}

static int read_end(struct store *s, MDB_txn *txn, int rc, uint64_t ap,
                    uint64_t *applied)
{
    if (applied != NULL) {
        *applied = ap;
    }
    store_rtxn_end(s, txn);
    return rc;
}

/* --- One key ------------------------------------------------------------- */

int store_kv_read(struct store *s, uint64_t group_id, const void *key,
                  size_t key_len, store_record_cb cb, void *ctx,
                  uint64_t *applied)
{
    MDB_txn *txn = NULL;
    struct store_record r;
    bool other = false;
    uint64_t ap = 0, data = 0;
    STORE_ASSERT(cb != NULL);
    int rc = check_key(s, key, key_len);
    if (rc == KHO_OK) {
        rc = read_begin(s, group_id, &txn, &ap, &data);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    rc = store_kv_find(s, txn, data, key, key_len, &r, &other);
    if (rc == KHO_ENOTFOUND) {
        rc = store_fail(s, KHO_ENOTFOUND, "key not found");
    }
    if (rc == KHO_OK) {
        rc = cb(ctx, &r);
    }
    return read_end(s, txn, rc, ap, applied);
}

/* --- Scans --------------------------------------------------------------- */

static int check_scan(struct store *s, const struct store_scan *q)
{
    if (q->start_len > STORE_KEY_BYTES_MAX ||
        q->end_len > STORE_KEY_BYTES_MAX ||
        q->after_len > STORE_KEY_BYTES_MAX ||
        !bytes_ok(q->start, q->start_len) || !bytes_ok(q->end, q->end_len) ||
        !bytes_ok(q->after, q->after_len)) {
        return store_fail(s, KHO_EINVAL,
                          "scan bounds of %zu, %zu and %zu bytes: keys are "
                          "at most %u",
                          q->start_len, q->end_len, q->after_len,
                          STORE_KEY_BYTES_MAX);
    }
    return check_limit(s, q->limit);
}

/* Byte order, the shorter first on a common prefix (LMDB's order too). */
static int cmp_bytes(const uint8_t *a, size_t alen, const uint8_t *b,
                     size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n > 0 ? memcmp(a, b, n) : 0;
    if (c != 0) {
        return c;
    }
    return alen < blen ? -1 : alen > blen;
}

static size_t inline_len(size_t len)
{
    return len < STORE_KV_INLINE_KEY_BYTES ? len : STORE_KV_INLINE_KEY_BYTES;
}

/*
 * Records come in LMDB order, which is byte order on keys cut to their
 * first STORE_KV_INLINE_KEY_BYTES bytes (store.h top). So a record is past
 * the range once its cut key is past the end's cut key; before that, it is
 * in the range when start <= key < end in full byte order (long keys
 * sharing a cut with start or end are filtered one by one).
 */
static bool past_end(const struct store_scan *q, const struct store_record *r)
{
    return q->end_len > 0 && cmp_bytes(r->key, inline_len(r->key_len), q->end,
                                       inline_len(q->end_len)) > 0;
}

static bool in_range(const struct store_scan *q, const struct store_record *r)
{
    if (cmp_bytes(r->key, r->key_len, q->start, q->start_len) < 0) {
        return false;
    }
    return q->end_len == 0 ||
           cmp_bytes(r->key, r->key_len, q->end, q->end_len) < 0;
}

/* Puts the cursor strictly after LMDB key a. */
static int seek_after(MDB_txn *txn, MDB_dbi dbi, MDB_cursor *c,
                      const MDB_val *a, MDB_val *k, MDB_val *v)
{
    *k = *a;
    int rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
    if (rc == MDB_SUCCESS && mdb_cmp(txn, dbi, k, a) == 0) {
        rc = mdb_cursor_get(c, k, v, MDB_NEXT);
    }
    return rc;
}

/* Puts the cursor on the first record at or after start's cut key and,
 * for a continuation, strictly after `after`'s LMDB key. */
static int scan_seek(struct store *s, MDB_txn *txn, MDB_cursor *c,
                     uint64_t data, const struct store_scan *q, MDB_val *k,
                     MDB_val *v)
{
    uint8_t from[KV_LMDB_KEY_BYTES_MAX], after[KV_LMDB_KEY_BYTES_MAX];
    size_t cut = inline_len(q->start_len);
    put_be64(from, data);
    if (cut > 0) {
        memcpy(from + GROUP_KEY_BYTES, q->start, cut);
    }
    MDB_val lo = {.mv_size = GROUP_KEY_BYTES + cut, .mv_data = from};
    if (q->after_len > 0) {
        MDB_val a = {.mv_size =
                         store_kv_key(s, after, data, q->after, q->after_len),
                     .mv_data = after};
        if (mdb_cmp(txn, s->dbi_kv, &a, &lo) >= 0) {
            return seek_after(txn, s->dbi_kv, c, &a, k, v);
        }
    }
    *k = lo;
    return mdb_cursor_get(c, k, v, MDB_SET_RANGE);
}

struct scan {
    const struct store_scan *q;
    store_record_cb cb;
    void *ctx;
    uint32_t n;   /* records given to cb */
    size_t bytes; /* their keys and values */
    bool more;
    bool stop;
};

/* Serves one decoded record to cb unless it is outside the range or over
 * the page's limits (then *more and *stop). */
static int scan_visit(struct scan *sc, const struct store_record *r)
{
    if (past_end(sc->q, r)) {
        sc->stop = true;
        return KHO_OK;
    }
    if (!in_range(sc->q, r)) {
        return KHO_OK;
    }
    size_t size = r->key_len + r->value_len;
    bool fits =
        sc->bytes <= sc->q->max_bytes && size <= sc->q->max_bytes - sc->bytes;
    if (sc->n == sc->q->limit || (sc->n > 0 && !fits)) {
        sc->more = true;
        sc->stop = true;
        return KHO_OK;
    }
    sc->n++;
    sc->bytes += size; /* at most limit x (1 KiB + 1 MiB): no wrap */
    return sc->cb(sc->ctx, r);
}

static int scan_in(struct store *s, MDB_txn *txn, uint64_t data,
                   struct scan *sc)
{
    MDB_cursor *c = NULL;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, s->dbi_kv, &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening a kv cursor");
    }
    int err = KHO_OK;
    rc = scan_seek(s, txn, c, data, sc->q, &k, &v);
    while (rc == MDB_SUCCESS && store_in_group(&k, data)) {
        struct store_record r;
        if (store_kv_decode(s, data, &k, &v, &r) != KHO_OK) {
            err = store_kv_corrupt(s, data);
            break;
        }
        err = scan_visit(sc, &r);
        if (err != KHO_OK || sc->stop) {
            break;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (err != KHO_OK) {
        return err;
    }
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "scanning kv");
    }
    return KHO_OK;
}

int store_kv_scan(struct store *s, uint64_t group_id,
                  const struct store_scan *q, store_record_cb cb, void *ctx,
                  bool *more, uint64_t *applied)
{
    MDB_txn *txn = NULL;
    uint64_t ap = 0, data = 0;
    struct scan sc = {.q = q, .cb = cb, .ctx = ctx};
    STORE_ASSERT(cb != NULL && q != NULL);
    *more = false;
    int rc = check_scan(s, q);
    if (rc == KHO_OK) {
        rc = read_begin(s, group_id, &txn, &ap, &data);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    rc = scan_in(s, txn, data, &sc);
    *more = sc.more;
    return read_end(s, txn, rc, ap, applied);
}

/* --- History ------------------------------------------------------------- */

int store_kv_history(struct store *s, uint64_t group_id, const void *key,
                     size_t key_len, uint64_t after_rev, uint32_t limit,
                     store_record_cb cb, void *ctx, bool *more,
                     uint64_t *applied)
{
    MDB_txn *txn = NULL;
    uint64_t ap = 0, data = 0;
    STORE_ASSERT(cb != NULL);
    *more = false;
    int rc = check_key(s, key, key_len);
    if (rc == KHO_OK) {
        rc = check_limit(s, limit);
    }
    if (rc == KHO_OK) {
        rc = read_begin(s, group_id, &txn, &ap, &data);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    rc = store_hist_walk(s, txn, data, key, key_len, after_rev, limit, cb, ctx,
                         more);
    return read_end(s, txn, rc, ap, applied);
}

/* --- Space --------------------------------------------------------------- */

/* Pages on LMDB's free list: the values of its free database (dbi 0) are
 * page-number lists whose first word is their length (as `mdb_stat -f`
 * counts them). */
static int free_pages(struct store *s, MDB_txn *txn, uint64_t *pages)
{
    MDB_cursor *c = NULL;
    MDB_val k, v;
    *pages = 0;
    int rc = mdb_cursor_open(txn, 0, &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening the free-list cursor");
    }
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == MDB_SUCCESS) {
        size_t n = 0;
        if (v.mv_size < sizeof(n)) {
            mdb_cursor_close(c);
            return store_fail(s, KHO_ECORRUPT, "LMDB's free list is malformed");
        }
        memcpy(&n, v.mv_data, sizeof(n)); /* may be unaligned */
        *pages += n;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? KHO_OK
                              : store_mdb_err(s, rc, "walking the free list");
}

int store_space(struct store *s, uint64_t *used_bytes, uint64_t *map_bytes)
{
    MDB_txn *txn = NULL;
    MDB_envinfo info;
    MDB_stat st;
    uint64_t free_n = 0;
    int rc = store_rtxn_begin(s, &txn);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = store_mdb_err(s, mdb_env_info(s->env, &info), "reading env info");
    if (rc == KHO_OK) {
        rc = store_mdb_err(s, mdb_env_stat(s->env, &st), "reading env stat");
    }
    if (rc == KHO_OK) {
        rc = free_pages(s, txn, &free_n);
    }
    store_rtxn_end(s, txn);
    if (rc != KHO_OK) {
        return rc;
    }
    uint64_t pages = (uint64_t)info.me_last_pgno + 1;
    *used_bytes = (pages > free_n ? pages - free_n : 0) * st.ms_psize;
    *map_bytes = info.me_mapsize;
    return KHO_OK;
}

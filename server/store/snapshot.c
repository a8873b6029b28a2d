/*
 * snapshot.c - snapshots of a group's state machine: its key ranges of
 * kv, hist, sess and sess_lru dumped raw into one checksummed payload
 * (store.h top), and installed back by replacing those ranges.
 *
 * Raw records keep their own checksums (each covers its group and key, and
 * the group is the same on both ends), so a payload needs no re-encoding
 * and a record damaged on disk is caught both when the snapshot is made
 * (it is refused, never shipped) and when it is read after install.
 */
#include "check.h"

#include <string.h>

static const uint8_t snap_magic[8] = {'K', 'H', 'O', 'S', 'N', 'A', 'P', 2};

/* The databases of a payload, in the order they are dumped. */
static const enum snap_db snap_dbs[] = {SNAP_DB_KV, SNAP_DB_HIST, SNAP_DB_SESS,
                                        SNAP_DB_LRU};
#define SNAP_DB_COUNT (sizeof(snap_dbs) / sizeof(snap_dbs[0]))

MDB_dbi store_sm_dbi(const struct store *s, enum snap_db db)
{
    switch (db) {
    case SNAP_DB_KV:
        return s->dbi_kv;
    case SNAP_DB_HIST:
        return s->dbi_hist;
    case SNAP_DB_SESS:
        return s->dbi_sess;
    default:
        STORE_ASSERT(db == SNAP_DB_LRU);
        return s->dbi_lru;
    }
}

static const char *snap_db_name(enum snap_db db)
{
    static const char *const names[] = {"?", "kv", "hist", "sess", "sess_lru"};
    return db <= SNAP_DB_LRU ? names[db] : names[0];
}

/* --- Record shapes ------------------------------------------------------- */

/* What a record of each database may look like: the bounds of its key
 * (without the group) and value. Checked on every payload before any of
 * it is used. */
struct shape {
    size_t key_min, key_max, value_min, value_max;
};

static bool shape_of(uint8_t db, struct shape *out)
{
    switch (db) {
    case SNAP_DB_KV:
        *out = (struct shape){1, KV_LMDB_KEY_BYTES_MAX - GROUP_KEY_BYTES,
                              KV_HEADER_BYTES + BODY_FIXED_BYTES,
                              KV_VALUE_BYTES_MAX};
        return true;
    case SNAP_DB_HIST:
        *out = (struct shape){
            HIST_KEY_BYTES - GROUP_KEY_BYTES, HIST_KEY_BYTES - GROUP_KEY_BYTES,
            HIST_HEADER_BYTES + 1 + BODY_FIXED_BYTES, HIST_VALUE_BYTES_MAX};
        return true;
    case SNAP_DB_SESS:
        *out = (struct shape){SESS_KEY_BYTES - GROUP_KEY_BYTES,
                              SESS_KEY_BYTES - GROUP_KEY_BYTES,
                              SESS_VALUE_BYTES, SESS_VALUE_BYTES};
        return true;
    case SNAP_DB_LRU:
        *out = (struct shape){LRU_KEY_BYTES - GROUP_KEY_BYTES,
                              LRU_KEY_BYTES - GROUP_KEY_BYTES, LRU_VALUE_BYTES,
                              LRU_VALUE_BYTES};
        return true;
    default:
        return false;
    }
}

/* --- Walking a group's ranges -------------------------------------------- */

static int walk_db(struct store *s, MDB_txn *txn, uint64_t group,
                   enum snap_db db, store_sm_fn f, void *ctx)
{
    MDB_cursor *c = NULL;
    uint8_t lo[GROUP_KEY_BYTES];
    put_be64(lo, group);
    MDB_val k = {.mv_size = sizeof(lo), .mv_data = lo}, v;
    int rc = mdb_cursor_open(txn, store_sm_dbi(s, db), &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening a cursor");
    }
    int err = KHO_OK;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == MDB_SUCCESS && store_in_group(&k, group)) {
        err = f(ctx, db, &k, &v);
        if (err != KHO_OK) {
            break;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (err != KHO_OK) {
        return err;
    }
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "walking a group's records");
    }
    return KHO_OK;
}

int store_sm_walk(struct store *s, MDB_txn *txn, uint64_t group, store_sm_fn f,
                  void *ctx)
{
    int rc = KHO_OK;
    for (size_t i = 0; rc == KHO_OK && i < SNAP_DB_COUNT; i++) {
        rc = walk_db(s, txn, group, snap_dbs[i], f, ctx);
    }
    return rc;
}

int store_sm_record_check(struct store *s, uint64_t group, enum snap_db db,
                          const MDB_val *k, const MDB_val *v)
{
    struct store_record r;
    switch (db) {
    case SNAP_DB_KV:
        return store_kv_decode(s, group, k, v, &r);
    case SNAP_DB_HIST:
        return store_hist_decode(group, k, v, &r);
    case SNAP_DB_SESS:
        return store_sess_check(k, v);
    default:
        return store_lru_check(k, v);
    }
}

/* --- Writing a payload --------------------------------------------------- */

struct dump {
    struct store *s;
    uint64_t group;
    uint64_t bytes; /* sizing pass: the payload so far */
    uint64_t count;
    uint8_t *p;   /* filling pass: next byte to write */
    uint8_t *end; /* ... and where the records must end */
};

/* Checks a stored record fully (its own checksum included) before it may
 * leave in a snapshot. */
static int verify(struct dump *d, enum snap_db db, const MDB_val *k,
                  const MDB_val *v)
{
    struct shape sh;
    int rc = KHO_ECORRUPT;
    STORE_ASSERT(shape_of(db, &sh));
    if (k->mv_size - GROUP_KEY_BYTES >= sh.key_min &&
        k->mv_size - GROUP_KEY_BYTES <= sh.key_max &&
        v->mv_size >= sh.value_min && v->mv_size <= sh.value_max) {
        rc = store_sm_record_check(d->s, d->group, db, k, v);
    }
    if (rc != KHO_OK) {
        return store_fail(d->s, KHO_ECORRUPT,
                          "%s group %llu: a record fails its checksum or is "
                          "malformed; no snapshot is made",
                          snap_db_name(db), (unsigned long long)d->group);
    }
    return KHO_OK;
}

static int size_cb(void *ctx, enum snap_db db, const MDB_val *k,
                   const MDB_val *v)
{
    struct dump *d = ctx;
    int rc = verify(d, db, k, v);
    if (rc != KHO_OK) {
        return rc;
    }
    d->bytes +=
        SNAP_RECORD_HEADER_BYTES + (k->mv_size - GROUP_KEY_BYTES) + v->mv_size;
    d->count++;
    if (d->bytes > STORE_SNAP_BYTES_MAX) {
        return store_fail(d->s, KHO_ETOOLARGE,
                          "group %llu: the state machine exceeds the %llu-"
                          "byte snapshot limit",
                          (unsigned long long)d->group,
                          (unsigned long long)STORE_SNAP_BYTES_MAX);
    }
    return KHO_OK;
}

/* The second pass sees what the first saw (one transaction), checked. */
static int fill_cb(void *ctx, enum snap_db db, const MDB_val *k,
                   const MDB_val *v)
{
    struct dump *d = ctx;
    size_t klen = k->mv_size - GROUP_KEY_BYTES;
    size_t need = SNAP_RECORD_HEADER_BYTES + klen + v->mv_size;
    STORE_ASSERT((size_t)(d->end - d->p) >= need);
    d->p[0] = (uint8_t)db;
    put_le16(d->p + 1, (uint16_t)klen);
    put_le32(d->p + 3, (uint32_t)v->mv_size);
    memcpy(d->p + SNAP_RECORD_HEADER_BYTES,
           (const uint8_t *)k->mv_data + GROUP_KEY_BYTES, klen);
    memcpy(d->p + SNAP_RECORD_HEADER_BYTES + klen, v->mv_data, v->mv_size);
    d->p += need;
    d->count++;
    return KHO_OK;
}

static uint32_t payload_crc(const uint8_t *p, size_t len)
{
    return store_crc32c_final(store_crc32c_update(store_crc32c_init(), p, len));
}

int store_snap_write(struct store *s, MDB_txn *txn, uint64_t group,
                     uint64_t index)
{
    struct dump d = {.s = s,
                     .group = group,
                     .bytes = SNAP_HEADER_BYTES + SNAP_TRAILER_BYTES};
    int rc = store_sm_walk(s, txn, group, size_cb, &d);
    if (rc != KHO_OK) {
        return rc;
    }
    uint8_t gk[GROUP_KEY_BYTES];
    put_be64(gk, group);
    MDB_val k = {.mv_size = sizeof(gk), .mv_data = gk};
    MDB_val v = {.mv_size = (size_t)d.bytes};
    /* Encode straight into the map: a snapshot is never built in memory. */
    rc = mdb_put(txn, s->dbi_snap, &k, &v, MDB_RESERVE);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "writing snap");
    }
    uint8_t *p = v.mv_data;
    memcpy(p, snap_magic, sizeof(snap_magic));
    put_le64(p + 8, group);
    put_le64(p + 16, index);
    put_le64(p + 24, d.count);
    uint64_t count = d.count;
    d.count = 0;
    d.p = p + SNAP_HEADER_BYTES;
    d.end = p + v.mv_size - SNAP_TRAILER_BYTES;
    rc = store_sm_walk(s, txn, group, fill_cb, &d);
    if (rc != KHO_OK) {
        return rc;
    }
    STORE_ASSERT(d.p == d.end && d.count == count);
    size_t body = v.mv_size - SNAP_TRAILER_BYTES;
    put_le32(p + body, payload_crc(p, body));
    return KHO_OK;
}

/* --- Reading a payload --------------------------------------------------- */

struct snap_rec {
    uint8_t db;
    const uint8_t *key; /* without the group */
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
};

/* LMDB's default order: memcmp, then the shorter first. */
static int key_order(const struct snap_rec *a, const struct snap_rec *b)
{
    size_t n = a->key_len < b->key_len ? a->key_len : b->key_len;
    int c = memcmp(a->key, b->key, n);
    if (c != 0) {
        return c;
    }
    return a->key_len < b->key_len ? -1 : a->key_len > b->key_len;
}

/* The next record at *off of a payload whose records end at `end`; false
 * when it is missing, malformed, or out of order after `prev` (databases
 * in dump order, keys strictly increasing inside one: so no key comes
 * twice and the sessions can be counted). */
static bool snap_next(const uint8_t *data, size_t end, size_t *off,
                      const struct snap_rec *prev, struct snap_rec *r)
{
    struct shape sh;
    if (end - *off < SNAP_RECORD_HEADER_BYTES) {
        return false;
    }
    const uint8_t *p = data + *off;
    *r = (struct snap_rec){
        .db = p[0], .key_len = get_le16(p + 1), .value_len = get_le32(p + 3)};
    if (!shape_of(r->db, &sh) || r->key_len < sh.key_min ||
        r->key_len > sh.key_max || r->value_len < sh.value_min ||
        r->value_len > sh.value_max ||
        end - *off - SNAP_RECORD_HEADER_BYTES < r->key_len + r->value_len) {
        return false;
    }
    r->key = p + SNAP_RECORD_HEADER_BYTES;
    r->value = r->key + r->key_len;
    if (prev != NULL &&
        (r->db < prev->db || (r->db == prev->db && key_order(prev, r) >= 0))) {
        return false;
    }
    *off += SNAP_RECORD_HEADER_BYTES + r->key_len + r->value_len;
    return true;
}

/* Walks a payload's records; *n_sess and *n_lru count those databases.
 * KHO_OK only when exactly `count` well-formed records fill it. */
static int snap_walk(const uint8_t *data, size_t len, uint64_t *n_sess,
                     uint64_t *n_lru)
{
    size_t off = SNAP_HEADER_BYTES, end = len - SNAP_TRAILER_BYTES;
    uint64_t count = get_le64(data + 24), n = 0;
    struct snap_rec prev, r;
    *n_sess = 0;
    *n_lru = 0;
    while (n < count && snap_next(data, end, &off, n > 0 ? &prev : NULL, &r)) {
        *n_sess += r.db == SNAP_DB_SESS;
        *n_lru += r.db == SNAP_DB_LRU;
        prev = r;
        n++;
    }
    return n == count && off == end ? KHO_OK : KHO_ECORRUPT;
}

int store_snap_check(const uint8_t *data, size_t len, uint64_t group_id,
                     uint64_t index)
{
    uint64_t n_sess = 0, n_lru = 0;
    if (data == NULL || len < SNAP_HEADER_BYTES + SNAP_TRAILER_BYTES ||
        len > STORE_SNAP_BYTES_MAX ||
        memcmp(data, snap_magic, sizeof(snap_magic)) != 0 ||
        get_le64(data + 8) != group_id || get_le64(data + 16) != index) {
        return KHO_ECORRUPT;
    }
    size_t end = len - SNAP_TRAILER_BYTES;
    if (get_le32(data + end) != payload_crc(data, end)) {
        return KHO_ECORRUPT;
    }
    /* Every session is in the idle index exactly once. */
    if (snap_walk(data, len, &n_sess, &n_lru) != KHO_OK || n_sess != n_lru) {
        return KHO_ECORRUPT;
    }
    return KHO_OK;
}

/* --- Installing a payload ------------------------------------------------ */

static int put_raw(struct store *s, MDB_txn *txn, uint64_t group,
                   const struct snap_rec *r)
{
    uint8_t k[STORE_LMDB_KEY_BYTES_MAX];
    put_be64(k, group);
    memcpy(k + GROUP_KEY_BYTES, r->key, r->key_len);
    MDB_val kv = {.mv_size = GROUP_KEY_BYTES + r->key_len, .mv_data = k};
    MDB_val v = {.mv_size = r->value_len, .mv_data = (void *)r->value};
    return store_mdb_err(s, mdb_put(txn, store_sm_dbi(s, r->db), &kv, &v, 0),
                         "installing a snapshot record");
}

static int replace_state(struct store *s, MDB_txn *txn, uint64_t group,
                         const uint8_t *data, size_t len)
{
    size_t off = SNAP_HEADER_BYTES, end = len - SNAP_TRAILER_BYTES;
    uint64_t n_sess = 0;
    struct snap_rec r;
    int rc = KHO_OK;
    for (size_t i = 0; rc == KHO_OK && i < SNAP_DB_COUNT; i++) {
        rc = store_rec_del_group(s, txn, store_sm_dbi(s, snap_dbs[i]), group);
    }
    /* The payload was checked whole: order is not checked again. */
    while (rc == KHO_OK && snap_next(data, end, &off, NULL, &r)) {
        n_sess += r.db == SNAP_DB_SESS;
        rc = put_raw(s, txn, group, &r);
    }
    if (rc == KHO_OK) {
        rc = store_rec_put_sessions(s, txn, group, n_sess);
    }
    return rc;
}

int store_snap_install(struct store *s, MDB_txn *txn, uint64_t group,
                       uint64_t index, const uint8_t *data, size_t len)
{
    if (store_snap_check(data, len, group, index) != KHO_OK) {
        return store_fail(s, KHO_ECORRUPT,
                          "snapshot for group %llu at index %llu is corrupt "
                          "or not for this group (%zu bytes); not installed",
                          (unsigned long long)group, (unsigned long long)index,
                          len);
    }
    int rc = replace_state(s, txn, group, data, len);
    if (rc != KHO_OK) {
        return rc;
    }
    uint8_t gk[GROUP_KEY_BYTES];
    put_be64(gk, group);
    MDB_val k = {.mv_size = sizeof(gk), .mv_data = gk};
    MDB_val v = {.mv_size = len, .mv_data = (void *)data};
    return store_mdb_err(s, mdb_put(txn, s->dbi_snap, &k, &v, 0),
                         "writing snap");
}

/*
 * snapshot.c - a group's state machine as snapshots, checks and backups
 * see it: its data id's key ranges of kv, hist, sess and sess_lru, walked
 * in stream order (store.h top, "Snapshot stream"), every record checked
 * against the shape of its database and its own checksum, and resealed
 * when it moves to another data id.
 *
 * Raw records keep their own checksums, which cover the data id they are
 * stored under: a record damaged on disk is caught when a stream is made
 * (it is refused, never shipped), again when a receiver checks it under
 * the sender's data id, and when it is read after install.
 */
#include "check.h"

#include <string.h>

const enum snap_db store_sm_dbs[SNAP_DB_COUNT] = {SNAP_DB_KV, SNAP_DB_HIST,
                                                  SNAP_DB_SESS, SNAP_DB_LRU};

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
 * (without the data id) and value. Checked on every stream before any of
 * it is used. */
struct shape {
    size_t key_min, key_max, value_min, value_max;
};

static bool shape_of(uint8_t db, struct shape *out)
{
    switch (db) {
    case SNAP_DB_KV:
        *out = (struct shape){1, STREAM_KEY_BYTES_MAX,
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

bool store_sm_shape_ok(uint8_t db, size_t key_len, size_t value_len)
{
    struct shape sh;
    return shape_of(db, &sh) && key_len >= sh.key_min &&
           key_len <= sh.key_max && value_len >= sh.value_min &&
           value_len <= sh.value_max;
}

/* --- Walking a data id's ranges ------------------------------------------ */

static int walk_db(struct store *s, MDB_txn *txn, uint64_t data,
                   enum snap_db db, store_sm_fn f, void *ctx)
{
    MDB_cursor *c = NULL;
    uint8_t lo[GROUP_KEY_BYTES];
    put_be64(lo, data);
    MDB_val k = {.mv_size = sizeof(lo), .mv_data = lo}, v;
    int rc = mdb_cursor_open(txn, store_sm_dbi(s, db), &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening a cursor");
    }
    int err = KHO_OK;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == MDB_SUCCESS && store_in_group(&k, data)) {
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

int store_sm_walk(struct store *s, MDB_txn *txn, uint64_t data, store_sm_fn f,
                  void *ctx)
{
    int rc = KHO_OK;
    for (size_t i = 0; rc == KHO_OK && i < SNAP_DB_COUNT; i++) {
        rc = walk_db(s, txn, data, store_sm_dbs[i], f, ctx);
    }
    return rc;
}

/* --- Checking and resealing records -------------------------------------- */

int store_sm_record_check(struct store *s, uint64_t data, enum snap_db db,
                          const MDB_val *k, const MDB_val *v)
{
    struct store_record r;
    switch (db) {
    case SNAP_DB_KV:
        return store_kv_decode(s, data, k, v, &r);
    case SNAP_DB_HIST:
        return store_hist_decode(data, k, v, &r);
    case SNAP_DB_SESS:
        return store_in_group(k, data) ? store_sess_check(k, v) : KHO_ECORRUPT;
    default:
        return store_in_group(k, data) ? store_lru_check(k, v) : KHO_ECORRUPT;
    }
}

int store_sm_verify(struct store *s, uint64_t group, uint64_t data,
                    enum snap_db db, const MDB_val *k, const MDB_val *v)
{
    int rc = KHO_ECORRUPT;
    if (k->mv_size >= GROUP_KEY_BYTES &&
        store_sm_shape_ok((uint8_t)db, k->mv_size - GROUP_KEY_BYTES,
                          v->mv_size)) {
        rc = store_sm_record_check(s, data, db, k, v);
    }
    if (rc != KHO_OK) {
        return store_fail(s, KHO_ECORRUPT,
                          "%s group %llu (data id %#llx): a record fails its "
                          "checksum or is malformed; it is not sent",
                          snap_db_name(db), (unsigned long long)group,
                          (unsigned long long)data);
    }
    return KHO_OK;
}

/* hist, sess and sess_lru: the crc covers the whole LMDB key (data id
 * first) and the value after the crc (store.h top). */
static uint32_t key_value_crc(uint64_t data, const uint8_t *key, size_t key_len,
                              const uint8_t *v, size_t len)
{
    uint8_t d[GROUP_KEY_BYTES];
    put_be64(d, data);
    uint32_t c = store_crc32c_init();
    c = store_crc32c_update(c, d, sizeof(d));
    c = store_crc32c_update(c, key, key_len);
    c = store_crc32c_update(c, v + 4, len - 4);
    return store_crc32c_final(c);
}

void store_sm_reseal(enum snap_db db, uint64_t data, const uint8_t *key,
                     size_t key_len, uint8_t *v, size_t len)
{
    STORE_ASSERT(len >= 4);
    if (db == SNAP_DB_KV) {
        store_kv_reseal(data, key, key_len, v, len);
        return;
    }
    put_le32(v, key_value_crc(data, key, key_len, v, len));
}

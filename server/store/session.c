/*
 * session.c - client sessions for exactly-once requests (store.h, "State-
 * machine requests"): the `sess` record of each session, the `sess_lru`
 * index that finds idle sessions oldest first, and the session count that
 * caps the table, all under the group's data id. Every decision here depends
 * only on the replicated requests (their time_ms included), never on a local
 * clock, so every replica keeps and forgets the same sessions.
 */
#include "internal.h"

#include <string.h>

/* --- Records ------------------------------------------------------------- */

static void sess_key(uint8_t k[SESS_KEY_BYTES], uint64_t data, uint64_t session)
{
    put_be64(k, data);
    put_be64(k + 8, session);
}

static void lru_key(uint8_t k[LRU_KEY_BYTES], uint64_t data, uint64_t time_ms,
                    uint64_t session)
{
    put_be64(k, data);
    put_be64(k + 8, time_ms);
    put_be64(k + 16, session);
}

static uint32_t sess_crc(const uint8_t *k, const uint8_t *v)
{
    uint32_t c = store_crc32c_init();
    c = store_crc32c_update(c, k, SESS_KEY_BYTES);
    c = store_crc32c_update(c, v + 4, SESS_VALUE_BYTES - 4);
    return store_crc32c_final(c);
}

static uint32_t lru_crc(const uint8_t *k)
{
    return store_crc32c_final(
        store_crc32c_update(store_crc32c_init(), k, LRU_KEY_BYTES));
}

int store_sess_check(const MDB_val *k, const MDB_val *v)
{
    const uint8_t *p = v->mv_data;
    if (k->mv_size != SESS_KEY_BYTES || v->mv_size != SESS_VALUE_BYTES ||
        get_le32(p) != sess_crc(k->mv_data, p) || get_le32(p + 44) != 0) {
        return KHO_ECORRUPT;
    }
    return KHO_OK;
}

int store_lru_check(const MDB_val *k, const MDB_val *v)
{
    if (k->mv_size != LRU_KEY_BYTES || v->mv_size != LRU_VALUE_BYTES ||
        get_le32(v->mv_data) != lru_crc(k->mv_data)) {
        return KHO_ECORRUPT;
    }
    return KHO_OK;
}

static int sess_corrupt(struct store *s, uint64_t data, const char *what)
{
    return store_fail(s, KHO_ECORRUPT, "sessions (data id %#llx): %s; not used",
                      (unsigned long long)data, what);
}

/* --- Lookups ------------------------------------------------------------- */

int store_sess_get(struct store *s, MDB_txn *txn, uint64_t data,
                   uint64_t session, uint64_t *seq, uint64_t *time_ms,
                   struct store_apply_result *res)
{
    uint8_t k[SESS_KEY_BYTES];
    sess_key(k, data, session);
    MDB_val kv = {.mv_size = sizeof(k), .mv_data = k}, v;
    int rc = mdb_get(txn, s->dbi_sess, &kv, &v);
    if (rc == MDB_NOTFOUND) {
        return KHO_ENOTFOUND;
    }
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "reading a session");
    }
    if (store_sess_check(&kv, &v) != KHO_OK) {
        return sess_corrupt(s, data, "a session record is corrupt");
    }
    const uint8_t *p = v.mv_data;
    memset(res, 0, sizeof(*res));
    res->result = (int)get_le32(p + 4);
    *seq = get_le64(p + 8);
    res->version = get_le64(p + 16);
    res->revision = get_le64(p + 24);
    *time_ms = get_le64(p + 32);
    res->failed_cmp = get_le32(p + 40);
    return KHO_OK;
}

int store_sess_room(struct store *s, MDB_txn *txn, uint64_t data)
{
    uint64_t n = 0;
    int rc = store_rec_get_sessions(s, txn, data, &n);
    if (rc != KHO_OK) {
        return rc;
    }
    return n < s->opts.sessions_max ? KHO_OK : KHO_EBUSY;
}

/* --- Writes -------------------------------------------------------------- */

static int lru_put(struct store *s, MDB_txn *txn, uint64_t data,
                   uint64_t time_ms, uint64_t session)
{
    uint8_t k[LRU_KEY_BYTES], v[LRU_VALUE_BYTES];
    lru_key(k, data, time_ms, session);
    put_le32(v, lru_crc(k));
    MDB_val kv = {.mv_size = sizeof(k), .mv_data = k};
    MDB_val vv = {.mv_size = sizeof(v), .mv_data = v};
    return store_mdb_err(s, mdb_put(txn, s->dbi_lru, &kv, &vv, 0),
                         "writing sess_lru");
}

static int lru_del(struct store *s, MDB_txn *txn, uint64_t data,
                   uint64_t time_ms, uint64_t session)
{
    uint8_t k[LRU_KEY_BYTES];
    lru_key(k, data, time_ms, session);
    MDB_val kv = {.mv_size = sizeof(k), .mv_data = k};
    int rc = mdb_del(txn, s->dbi_lru, &kv, NULL);
    if (rc == MDB_NOTFOUND) {
        return sess_corrupt(s, data, "a session is missing from sess_lru");
    }
    return store_mdb_err(s, rc, "deleting from sess_lru");
}

static int sess_write(struct store *s, MDB_txn *txn, uint64_t data,
                      uint64_t session, uint64_t seq, uint64_t time_ms,
                      const struct store_apply_result *r)
{
    uint8_t k[SESS_KEY_BYTES], p[SESS_VALUE_BYTES];
    sess_key(k, data, session);
    put_le32(p + 4, (uint32_t)r->result);
    put_le64(p + 8, seq);
    put_le64(p + 16, r->version);
    put_le64(p + 24, r->revision);
    put_le64(p + 32, time_ms);
    put_le32(p + 40, r->failed_cmp);
    put_le32(p + 44, 0);
    put_le32(p, sess_crc(k, p));
    MDB_val kv = {.mv_size = sizeof(k), .mv_data = k};
    MDB_val v = {.mv_size = sizeof(p), .mv_data = p};
    return store_mdb_err(s, mdb_put(txn, s->dbi_sess, &kv, &v, 0),
                         "writing a session");
}

static int count_add(struct store *s, MDB_txn *txn, uint64_t data, uint64_t add,
                     uint64_t sub)
{
    uint64_t n = 0;
    int rc = store_rec_get_sessions(s, txn, data, &n);
    if (rc != KHO_OK) {
        return rc;
    }
    if (n < sub) {
        return sess_corrupt(s, data, "the session count is too low");
    }
    return store_rec_put_sessions(s, txn, data, n - sub + add);
}

int store_sess_put(struct store *s, MDB_txn *txn, uint64_t data,
                   uint64_t session, uint64_t seq, uint64_t now_ms, bool fresh,
                   uint64_t old_time_ms, const struct store_apply_result *res)
{
    /* A session's time never goes back, even when leaders' clocks
     * disagree: it was active at the latest time any request said. */
    uint64_t t = fresh || now_ms > old_time_ms ? now_ms : old_time_ms;
    int rc = KHO_OK;
    if (!fresh && t != old_time_ms) {
        rc = lru_del(s, txn, data, old_time_ms, session);
    }
    if (rc == KHO_OK && (fresh || t != old_time_ms)) {
        rc = lru_put(s, txn, data, t, session);
    }
    if (rc == KHO_OK) {
        rc = sess_write(s, txn, data, session, seq, t, res);
    }
    if (rc == KHO_OK && fresh) {
        rc = count_add(s, txn, data, 1, 0);
    }
    return rc;
}

/* --- Eviction ------------------------------------------------------------ */

/* Forgets the session an lru entry names. */
static int forget(struct store *s, MDB_txn *txn, uint64_t data,
                  const MDB_val *k, const MDB_val *v)
{
    if (store_lru_check(k, v) != KHO_OK) {
        return sess_corrupt(s, data, "a sess_lru entry is corrupt");
    }
    uint8_t sk[SESS_KEY_BYTES];
    sess_key(sk, data, get_be64((const uint8_t *)k->mv_data + 16));
    MDB_val kv = {.mv_size = sizeof(sk), .mv_data = sk};
    int rc = mdb_del(txn, s->dbi_sess, &kv, NULL);
    if (rc == MDB_NOTFOUND) {
        return sess_corrupt(s, data, "sess_lru names a missing session");
    }
    return store_mdb_err(s, rc, "deleting a session");
}

/* Whether an lru key of the data id is at or before the cutoff time. */
static bool idle(const MDB_val *k, uint64_t data, uint64_t cutoff_ms)
{
    return k->mv_size == LRU_KEY_BYTES && store_in_group(k, data) &&
           get_be64((const uint8_t *)k->mv_data + 8) <= cutoff_ms;
}

int store_sess_evict(struct store *s, MDB_txn *txn, uint64_t data,
                     uint64_t now_ms)
{
    MDB_cursor *c = NULL;
    uint8_t lo[GROUP_KEY_BYTES];
    uint32_t n = 0;
    if (now_ms < STORE_SESSION_IDLE_MS) {
        return KHO_OK; /* nothing can have been idle that long */
    }
    uint64_t cutoff = now_ms - STORE_SESSION_IDLE_MS;
    put_be64(lo, data);
    MDB_val k = {.mv_size = sizeof(lo), .mv_data = lo}, v;
    int rc = mdb_cursor_open(txn, s->dbi_lru, &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening a sess_lru cursor");
    }
    int err = KHO_OK;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == MDB_SUCCESS && n < STORE_SESSION_EVICT_PER_APPLY &&
           idle(&k, data, cutoff)) {
        err = forget(s, txn, data, &k, &v);
        if (err != KHO_OK) {
            break;
        }
        n++;
        rc = mdb_cursor_del(c, 0);
        if (rc == MDB_SUCCESS) {
            /* After a delete the cursor sits on the next key already. */
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
    }
    mdb_cursor_close(c);
    if (err != KHO_OK) {
        return err;
    }
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "walking sess_lru");
    }
    return n > 0 ? count_add(s, txn, data, 0, n) : KHO_OK;
}

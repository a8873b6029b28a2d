/*
 * hist.c - the `hist` database: the last STORE_HISTORY_VERSIONS versions
 * of every key (store.h top, "History"). Versions of a key sit together
 * under the 64-bit hash of the key, in revision order, so that a key's
 * history is one short cursor walk; since keys may share a hash, every
 * walk filters on the full key kept in the value.
 */
#include "internal.h"

#include <string.h>

/* data id | hash | mod_rev | slot; with rev 0 and slot 0 it is where the
 * key's versions start. */
static void hist_key(uint8_t k[HIST_KEY_BYTES], uint64_t data, uint64_t hash,
                     uint64_t rev, uint32_t slot)
{
    put_be64(k, data);
    put_be64(k + 8, hash);
    put_be64(k + 16, rev);
    k[24] = (uint8_t)(slot >> 8);
    k[25] = (uint8_t)slot;
}

/* Keys of one hash share these first bytes. */
#define HIST_PREFIX_BYTES 16u

static bool same_prefix(const MDB_val *k, const uint8_t *prefix)
{
    return k->mv_size == HIST_KEY_BYTES &&
           memcmp(k->mv_data, prefix, HIST_PREFIX_BYTES) == 0;
}

static uint32_t hist_crc(const MDB_val *k, const uint8_t *v, size_t len)
{
    uint32_t c = store_crc32c_init();
    c = store_crc32c_update(c, k->mv_data, k->mv_size);
    c = store_crc32c_update(c, v + 4, len - 4);
    return store_crc32c_final(c);
}

int store_hist_decode(uint64_t data, const MDB_val *k, const MDB_val *v,
                      struct store_record *r)
{
    const uint8_t *p = v->mv_data;
    memset(r, 0, sizeof(*r));
    if (k->mv_size != HIST_KEY_BYTES || !store_in_group(k, data) ||
        v->mv_size < HIST_HEADER_BYTES || v->mv_size > HIST_VALUE_BYTES_MAX ||
        (p[6] & ~HIST_DELETED) != 0 || p[7] != 0) {
        return KHO_ECORRUPT;
    }
    size_t key_len = get_le16(p + 4);
    if (key_len == 0 || key_len > STORE_KEY_BYTES_MAX ||
        v->mv_size - HIST_HEADER_BYTES < key_len ||
        get_le32(p) != hist_crc(k, p, v->mv_size)) {
        return KHO_ECORRUPT;
    }
    size_t body = HIST_HEADER_BYTES + key_len;
    if (store_body_decode(p + body, v->mv_size - body, r) != KHO_OK) {
        return KHO_ECORRUPT;
    }
    r->key = p + HIST_HEADER_BYTES;
    r->key_len = key_len;
    r->deleted = (p[6] & HIST_DELETED) != 0;
    const uint8_t *kp = k->mv_data;
    if (r->mod_rev != get_be64(kp + 16) || (r->deleted && r->value_len > 0)) {
        return KHO_ECORRUPT;
    }
    return KHO_OK;
}

static int hist_corrupt(struct store *s, uint64_t data)
{
    return store_fail(s, KHO_ECORRUPT,
                      "hist (data id %#llx): a version fails its checksum "
                      "or is malformed; not served",
                      (unsigned long long)data);
}

/* Whether a stored version belongs to `key`, from its header alone: the
 * prune walk must not checksum up to STORE_HISTORY_VERSIONS values of a
 * MiB on every put. Readers checksum what they serve. */
static int version_of_key(const MDB_val *v, const uint8_t *key, size_t len,
                          bool *mine)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size < HIST_HEADER_BYTES ||
        v->mv_size - HIST_HEADER_BYTES < get_le16(p + 4)) {
        return KHO_ECORRUPT;
    }
    *mine =
        get_le16(p + 4) == len && memcmp(p + HIST_HEADER_BYTES, key, len) == 0;
    return KHO_OK;
}

/* Drops the key's oldest version when it already has the most it may
 * keep, before one more is written. */
static int prune(struct store *s, MDB_txn *txn, uint64_t data,
                 const struct store_record *r, const uint8_t *prefix)
{
    MDB_cursor *c = NULL;
    MDB_val k = {.mv_size = HIST_PREFIX_BYTES, .mv_data = (void *)prefix};
    MDB_val v;
    uint8_t oldest[HIST_KEY_BYTES];
    uint32_t n = 0;
    int err = KHO_OK;
    int rc = mdb_cursor_open(txn, s->dbi_hist, &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening a hist cursor");
    }
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == MDB_SUCCESS && same_prefix(&k, prefix)) {
        bool mine = false;
        err = version_of_key(&v, r->key, r->key_len, &mine);
        if (err != KHO_OK) {
            break;
        }
        if (mine && n++ == 0) {
            memcpy(oldest, k.mv_data, HIST_KEY_BYTES);
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (err != KHO_OK) {
        return hist_corrupt(s, data);
    }
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "walking hist");
    }
    if (n < STORE_HISTORY_VERSIONS) {
        return KHO_OK;
    }
    k = (MDB_val){.mv_size = HIST_KEY_BYTES, .mv_data = oldest};
    return store_mdb_err(s, mdb_del(txn, s->dbi_hist, &k, NULL),
                         "dropping an old version from hist");
}

int store_hist_append(struct store *s, MDB_txn *txn, uint64_t data,
                      const struct store_record *r, uint32_t slot)
{
    uint8_t key[HIST_KEY_BYTES];
    uint64_t hash = store_hash(s, r->key, r->key_len);
    hist_key(key, data, hash, r->mod_rev, slot);
    int rc = prune(s, txn, data, r, key);
    if (rc != KHO_OK) {
        return rc;
    }
    MDB_val k = {.mv_size = HIST_KEY_BYTES, .mv_data = key};
    MDB_val v = {.mv_size =
                     HIST_HEADER_BYTES + r->key_len + store_body_size(r)};
    rc = mdb_put(txn, s->dbi_hist, &k, &v, MDB_RESERVE);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "writing hist");
    }
    uint8_t *p = v.mv_data;
    put_le16(p + 4, (uint16_t)r->key_len);
    p[6] = r->deleted ? HIST_DELETED : 0;
    p[7] = 0;
    memcpy(p + HIST_HEADER_BYTES, r->key, r->key_len);
    store_body_encode(p + HIST_HEADER_BYTES + r->key_len, r);
    put_le32(p, hist_crc(&k, p, v.mv_size));
    return KHO_OK;
}

/* Serves one version to cb if it is the key's; counts it in *n. Sets *stop
 * when the limit was reached before it (and *more then). */
static int visit(struct store *s, uint64_t data, const MDB_val *k,
                 const MDB_val *v, const uint8_t *key, size_t key_len,
                 uint32_t limit, store_record_cb cb, void *ctx, uint32_t *n,
                 bool *stop)
{
    struct store_record r;
    if (store_hist_decode(data, k, v, &r) != KHO_OK) {
        return hist_corrupt(s, data);
    }
    if (r.key_len != key_len || memcmp(r.key, key, key_len) != 0) {
        return KHO_OK; /* another key with the same hash */
    }
    if (*n == limit) {
        *stop = true;
        return KHO_OK;
    }
    (*n)++;
    return cb(ctx, &r);
}

int store_hist_walk(struct store *s, MDB_txn *txn, uint64_t data,
                    const uint8_t *key, size_t key_len, uint64_t after_rev,
                    uint32_t limit, store_record_cb cb, void *ctx, bool *more)
{
    MDB_cursor *c = NULL;
    uint8_t from[HIST_KEY_BYTES];
    uint32_t n = 0;
    bool stop = false;
    *more = false;
    if (after_rev == UINT64_MAX) {
        return KHO_OK; /* nothing comes after the last revision */
    }
    hist_key(from, data, store_hash(s, key, key_len), after_rev + 1, 0);
    MDB_val k = {.mv_size = HIST_KEY_BYTES, .mv_data = from};
    MDB_val v;
    int rc = mdb_cursor_open(txn, s->dbi_hist, &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening a hist cursor");
    }
    int err = KHO_OK;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == MDB_SUCCESS && same_prefix(&k, from)) {
        err = visit(s, data, &k, &v, key, key_len, limit, cb, ctx, &n, &stop);
        if (err != KHO_OK || stop) {
            break;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    *more = stop;
    if (err != KHO_OK) {
        return err;
    }
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "walking hist");
    }
    return KHO_OK;
}

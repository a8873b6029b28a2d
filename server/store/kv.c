/*
 * kv.c - the `kv` database: the current record of every key of a group,
 * under the LMDB key store.h's top comment describes (the group's data id,
 * then the key inline, or its prefix and hash for keys beyond LMDB's key
 * size), each value checksummed together with its data id and full key.
 */
#include "internal.h"

#include <string.h>

static bool is_long(size_t key_len)
{
    return key_len > STORE_KV_INLINE_KEY_BYTES;
}

size_t store_kv_key(const struct store *s, uint8_t k[KV_LMDB_KEY_BYTES_MAX],
                    uint64_t data, const uint8_t *key, size_t len)
{
    put_be64(k, data);
    if (!is_long(len)) {
        memcpy(k + GROUP_KEY_BYTES, key, len);
        return GROUP_KEY_BYTES + len;
    }
    memcpy(k + GROUP_KEY_BYTES, key, STORE_KV_INLINE_KEY_BYTES);
    put_be64(k + GROUP_KEY_BYTES + STORE_KV_INLINE_KEY_BYTES,
             store_hash(s, key, len));
    return KV_LMDB_KEY_BYTES_MAX;
}

static uint32_t kv_crc(uint64_t data, const uint8_t *key, size_t key_len,
                       const uint8_t *rest, size_t rest_len)
{
    uint8_t g[GROUP_KEY_BYTES];
    put_be64(g, data);
    uint32_t c = store_crc32c_init();
    c = store_crc32c_update(c, g, sizeof(g));
    c = store_crc32c_update(c, key, key_len);
    c = store_crc32c_update(c, rest, rest_len);
    return store_crc32c_final(c);
}

/* Splits the full user key off a value: from the LMDB key when inline,
 * from the value when long (and then checks the LMDB key is the one that
 * key maps to). *body is what follows. */
static int kv_split_key(const struct store *s, uint64_t data, const MDB_val *k,
                        const MDB_val *v, struct store_record *r, size_t *body)
{
    const uint8_t *kp = k->mv_data, *p = v->mv_data;
    size_t long_len = get_le16(p + 4);
    *body = KV_HEADER_BYTES;
    if (long_len == 0) {
        if (k->mv_size > GROUP_KEY_BYTES + STORE_KV_INLINE_KEY_BYTES) {
            return KHO_ECORRUPT;
        }
        r->key = kp + GROUP_KEY_BYTES;
        r->key_len = k->mv_size - GROUP_KEY_BYTES;
        return KHO_OK;
    }
    if (!is_long(long_len) || long_len > STORE_KEY_BYTES_MAX ||
        k->mv_size != KV_LMDB_KEY_BYTES_MAX ||
        v->mv_size - KV_HEADER_BYTES < long_len) {
        return KHO_ECORRUPT;
    }
    r->key = p + KV_HEADER_BYTES;
    r->key_len = long_len;
    *body += long_len;
    uint8_t want[KV_LMDB_KEY_BYTES_MAX];
    store_kv_key(s, want, data, r->key, r->key_len);
    return memcmp(want, kp, KV_LMDB_KEY_BYTES_MAX) == 0 ? KHO_OK : KHO_ECORRUPT;
}

int store_kv_decode(const struct store *s, uint64_t data, const MDB_val *k,
                    const MDB_val *v, struct store_record *r)
{
    const uint8_t *p = v->mv_data;
    size_t body = 0;
    memset(r, 0, sizeof(*r));
    if (v->mv_size < KV_HEADER_BYTES || v->mv_size > KV_VALUE_BYTES_MAX ||
        k->mv_size <= GROUP_KEY_BYTES || !store_in_group(k, data) ||
        get_le16(p + 6) != 0) {
        return KHO_ECORRUPT;
    }
    if (kv_split_key(s, data, k, v, r, &body) != KHO_OK ||
        get_le32(p) !=
            kv_crc(data, r->key, r->key_len, p + 4, v->mv_size - 4)) {
        return KHO_ECORRUPT;
    }
    return store_body_decode(p + body, v->mv_size - body, r);
}

int store_kv_corrupt(struct store *s, uint64_t data)
{
    return store_fail(s, KHO_ECORRUPT,
                      "kv (data id %#llx): a record fails its checksum or is "
                      "malformed; not served",
                      (unsigned long long)data);
}

int store_kv_put(struct store *s, MDB_txn *txn, uint64_t data,
                 const struct store_record *r)
{
    uint8_t k[KV_LMDB_KEY_BYTES_MAX];
    size_t extra = is_long(r->key_len) ? r->key_len : 0;
    MDB_val kv = {.mv_size = store_kv_key(s, k, data, r->key, r->key_len),
                  .mv_data = k};
    MDB_val v = {.mv_size = KV_HEADER_BYTES + extra + store_body_size(r)};
    /* Encode straight into the map: a 1 MiB value is not copied twice. */
    int rc = mdb_put(txn, s->dbi_kv, &kv, &v, MDB_RESERVE);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "writing kv");
    }
    uint8_t *p = v.mv_data;
    put_le16(p + 4, (uint16_t)extra);
    put_le16(p + 6, 0);
    if (extra > 0) {
        memcpy(p + KV_HEADER_BYTES, r->key, r->key_len);
    }
    store_body_encode(p + KV_HEADER_BYTES + extra, r);
    put_le32(p, kv_crc(data, r->key, r->key_len, p + 4, v.mv_size - 4));
    return KHO_OK;
}

int store_kv_find(struct store *s, MDB_txn *txn, uint64_t data,
                  const uint8_t *key, size_t key_len, struct store_record *r,
                  bool *other)
{
    uint8_t k[KV_LMDB_KEY_BYTES_MAX];
    MDB_val kv = {.mv_size = store_kv_key(s, k, data, key, key_len),
                  .mv_data = k};
    MDB_val v;
    *other = false;
    int rc = mdb_get(txn, s->dbi_kv, &kv, &v);
    if (rc == MDB_NOTFOUND) {
        return KHO_ENOTFOUND;
    }
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "reading kv");
    }
    if (store_kv_decode(s, data, &kv, &v, r) != KHO_OK) {
        return store_kv_corrupt(s, data);
    }
    if (r->key_len != key_len || memcmp(r->key, key, key_len) != 0) {
        *other = true;
        return KHO_ENOTFOUND;
    }
    /* An inline key was decoded from k, which dies with this call: the
     * caller's own copy of it outlives r. */
    r->key = key;
    return KHO_OK;
}

int store_kv_del(struct store *s, MDB_txn *txn, uint64_t data,
                 const uint8_t *key, size_t key_len)
{
    uint8_t k[KV_LMDB_KEY_BYTES_MAX];
    MDB_val kv = {.mv_size = store_kv_key(s, k, data, key, key_len),
                  .mv_data = k};
    return store_mdb_err(s, mdb_del(txn, s->dbi_kv, &kv, NULL),
                         "deleting from kv");
}

void store_kv_reseal(uint64_t data, const uint8_t *key, size_t key_len,
                     uint8_t *v, size_t len)
{
    size_t long_len = get_le16(v + 4);
    const uint8_t *full = long_len == 0 ? key : v + KV_HEADER_BYTES;
    size_t full_len = long_len == 0 ? key_len : long_len;
    put_le32(v, kv_crc(data, full, full_len, v + 4, len - 4));
}

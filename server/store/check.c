/*
 * check.c - consistency checks (store.h, "Consistency checks"): the hash of
 * a group's state machine, the marks that record it at a check marker's
 * index, and the local alarm a failed check leaves behind.
 *
 * The hash must be a function of the stored bytes alone - the same on
 * every replica that applied the same log - and must change when any byte
 * does, including the bytes of a record whose checksum was recomputed: it
 * runs over every record's key and value. Two things differ between
 * replicas that hold the same records and are left out: the data id that
 * prefixes every key, and the 4-byte crc that starts every value (it
 * covers the data id, and adds nothing the other bytes do not say).
 */
#include "check.h"

#include <string.h>

#include "../../client/kho_shard.h"

/* --- The hash --------------------------------------------------------------
 */

#define HASH_SEED UINT64_C(0x6b686f636865636b) /* "khocheck" */
#define HASH_C1 UINT64_C(0x87c37b91114253d5)
#define HASH_C2 UINT64_C(0x4cf5ad432745937f)

static uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}


static uint64_t word_mix(uint64_t w)
{
    return rotl64(w * HASH_C1, 31) * HASH_C2;
}

/* Bytes into a 64-bit state, eight at a time (the block step of
 * MurmurHash3's 64-bit variant), the length last so that a shift of bytes
 * between two fields changes the result. */
static uint64_t hash_bytes(uint64_t h, const uint8_t *p, size_t n)
{
    size_t len = n;
    while (n >= 8) {
        h ^= word_mix(get_le64(p));
        h = rotl64(h, 27) * 5 + UINT64_C(0x52dce729);
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < n; i++) {
        w |= (uint64_t)p[i] << (8 * i);
    }
    h ^= word_mix(w);
    return kho_hash_fmix64(h ^ (uint64_t)len);
}

struct hasher {
    uint64_t h;
    uint64_t count;
};

static int hash_cb(void *ctx, enum snap_db db, const MDB_val *k,
                   const MDB_val *v)
{
    struct hasher *hs = ctx;
    /* Every value of these databases starts with its crc (store.h top);
     * a shorter one is hashed whole (it is corrupt, and must count). */
    size_t skip = v->mv_size >= 4 ? 4 : 0;
    uint64_t r = hash_bytes(HASH_SEED ^ (uint64_t)db,
                            (const uint8_t *)k->mv_data + GROUP_KEY_BYTES,
                            k->mv_size - GROUP_KEY_BYTES);
    r = hash_bytes(r, (const uint8_t *)v->mv_data + skip, v->mv_size - skip);
    /* Chained, so that order counts as well as content. */
    hs->h = kho_hash_fmix64((hs->h ^ r) * HASH_C1);
    hs->count++;
    return KHO_OK;
}

static int sm_hash(struct store *s, MDB_txn *txn, uint64_t data, uint64_t *hash)
{
    struct hasher hs = {.h = HASH_SEED};
    int rc = store_sm_walk(s, txn, data, hash_cb, &hs);
    *hash = kho_hash_fmix64(hs.h ^ hs.count);
    return rc;
}

/* --- raft_meta records of checks ------------------------------------------ */

/* The same shape as the other raft_meta records (codec.c): u8 version,
 * u8 tag, u16 0, u32 crc over the key, bytes 0..4 and the body. */
static uint32_t meta_crc(uint64_t group, uint8_t tag, const uint8_t *v,
                         size_t len)
{
    uint8_t k[META_KEY_BYTES];
    store_meta_key(k, group, (enum meta_tag)tag);
    uint32_t c = store_crc32c_init();
    c = store_crc32c_update(c, k, sizeof(k));
    c = store_crc32c_update(c, v, 4);
    c = store_crc32c_update(c, v + 8, len - 8);
    return store_crc32c_final(c);
}

static void meta_seal(uint8_t *v, size_t len, uint64_t group, uint8_t tag)
{
    v[0] = RECORD_VERSION;
    v[1] = tag;
    put_le16(v + 2, 0);
    put_le32(v + 4, meta_crc(group, tag, v, len));
}

static bool meta_ok(const uint8_t *v, size_t len, uint64_t group, uint8_t tag)
{
    return len >= META_HEADER_BYTES && v[0] == RECORD_VERSION && v[1] == tag &&
           get_le16(v + 2) == 0 &&
           get_le32(v + 4) == meta_crc(group, tag, v, len);
}

static int meta_get(struct store *s, MDB_txn *txn, uint64_t group, uint8_t tag,
                    MDB_val *v)
{
    uint8_t k[META_KEY_BYTES];
    store_meta_key(k, group, (enum meta_tag)tag);
    MDB_val kv = {.mv_size = sizeof(k), .mv_data = k};
    int rc = mdb_get(txn, s->dbi_meta, &kv, v);
    if (rc == MDB_NOTFOUND) {
        return KHO_ENOTFOUND;
    }
    return store_mdb_err(s, rc, "reading raft_meta");
}

static int meta_put(struct store *s, MDB_txn *txn, uint64_t group, uint8_t tag,
                    const uint8_t *val, size_t len)
{
    uint8_t k[META_KEY_BYTES];
    store_meta_key(k, group, (enum meta_tag)tag);
    MDB_val kv = {.mv_size = sizeof(k), .mv_data = k};
    MDB_val v = {.mv_size = len, .mv_data = (void *)val};
    return store_mdb_err(s, mdb_put(txn, s->dbi_meta, &kv, &v, 0),
                         "writing raft_meta");
}

static int meta_del(struct store *s, MDB_txn *txn, uint64_t group, uint8_t tag)
{
    uint8_t k[META_KEY_BYTES];
    store_meta_key(k, group, (enum meta_tag)tag);
    MDB_val kv = {.mv_size = sizeof(k), .mv_data = k};
    int rc = mdb_del(txn, s->dbi_meta, &kv, NULL);
    return rc == MDB_NOTFOUND ? KHO_OK
                              : store_mdb_err(s, rc, "deleting from raft_meta");
}

static int corrupt(struct store *s, uint64_t group, const char *what)
{
    return store_fail(s, KHO_ECORRUPT,
                      "raft_meta group %llu: %s fails its checksum or is "
                      "malformed",
                      (unsigned long long)group, what);
}

/* The group's marks, oldest first (*n 0 when none is stored). */
static int marks_get(struct store *s, MDB_txn *txn, uint64_t group,
                     struct store_check_mark *out, uint32_t *n)
{
    MDB_val v;
    *n = 0;
    int rc = meta_get(s, txn, group, META_TAG_CHECK, &v);
    if (rc == KHO_ENOTFOUND) {
        return KHO_OK;
    }
    if (rc != KHO_OK) {
        return rc;
    }
    const uint8_t *p = v.mv_data;
    if (!meta_ok(p, v.mv_size, group, META_TAG_CHECK) ||
        v.mv_size < META_HEADER_BYTES + 8u) {
        return corrupt(s, group, "the check marks");
    }
    uint32_t count = get_le32(p + META_HEADER_BYTES);
    if (count > STORE_CHECK_KEEP || get_le32(p + META_HEADER_BYTES + 4) != 0 ||
        v.mv_size != META_HEADER_BYTES + 8u + count * CHECK_MARK_BYTES) {
        return corrupt(s, group, "the check marks");
    }
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *m = p + META_HEADER_BYTES + 8u + i * CHECK_MARK_BYTES;
        out[i].index = get_le64(m);
        out[i].hash = get_le64(m + 8);
    }
    *n = count;
    return KHO_OK;
}

static int marks_put(struct store *s, MDB_txn *txn, uint64_t group,
                     const struct store_check_mark *m, uint32_t n)
{
    uint8_t v[CHECK_MARKS_BYTES_MAX];
    size_t len = META_HEADER_BYTES + 8u + n * CHECK_MARK_BYTES;
    STORE_ASSERT(n <= STORE_CHECK_KEEP);
    put_le32(v + META_HEADER_BYTES, n);
    put_le32(v + META_HEADER_BYTES + 4, 0);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *p = v + META_HEADER_BYTES + 8u + i * CHECK_MARK_BYTES;
        put_le64(p, m[i].index);
        put_le64(p + 8, m[i].hash);
    }
    meta_seal(v, len, group, META_TAG_CHECK);
    return meta_put(s, txn, group, META_TAG_CHECK, v, len);
}

int store_check_apply(struct store *s, MDB_txn *txn, uint64_t group,
                      uint64_t data, uint64_t index)
{
    struct store_check_mark marks[STORE_CHECK_KEEP + 1];
    uint32_t n = 0;
    uint64_t hash = 0;
    int rc = sm_hash(s, txn, data, &hash);
    if (rc == KHO_OK) {
        rc = marks_get(s, txn, group, marks, &n);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    marks[n++] = (struct store_check_mark){.index = index, .hash = hash};
    size_t drop = n > STORE_CHECK_KEEP ? n - STORE_CHECK_KEEP : 0;
    return marks_put(s, txn, group, marks + drop, (uint32_t)(n - drop));
}

/* --- Reading ----------------------------------------------------------------
 */

static int need_group(struct store *s, MDB_txn *txn, uint64_t group,
                      uint64_t *applied)
{
    int rc = store_rec_get_applied(s, txn, group, applied);
    if (rc == KHO_ENOTFOUND) {
        return store_fail(s, KHO_ENOTFOUND, "group %llu does not exist",
                          (unsigned long long)group);
    }
    return rc;
}

int store_check_get(struct store *s, uint64_t group_id, uint64_t index,
                    struct store_check_mark *out, uint64_t *applied)
{
    struct store_check_mark marks[STORE_CHECK_KEEP];
    uint32_t n = 0;
    MDB_txn *txn = NULL;
    memset(out, 0, sizeof(*out));
    int rc = store_rtxn_begin(s, &txn);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = need_group(s, txn, group_id, applied);
    if (rc == KHO_OK) {
        rc = marks_get(s, txn, group_id, marks, &n);
    }
    store_rtxn_end(s, txn);
    for (uint32_t i = 0; rc == KHO_OK && i < n; i++) {
        if (marks[i].index == index) {
            *out = marks[i];
            return KHO_OK;
        }
    }
    if (rc == KHO_OK && n > 0) {
        *out = marks[n - 1];
    }
    return rc;
}

int store_check_hash(struct store *s, uint64_t group_id, uint64_t *hash,
                     uint64_t *applied)
{
    MDB_txn *txn = NULL;
    uint64_t data = 0;
    int rc = store_rtxn_begin(s, &txn);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = store_rec_group_data(s, txn, group_id, applied, &data);
    if (rc == KHO_OK) {
        rc = sm_hash(s, txn, data, hash);
    }
    store_rtxn_end(s, txn);
    return rc;
}

/* --- Alarms -----------------------------------------------------------------
 */

int store_check_alarm(struct store *s, uint64_t group_id,
                      struct store_check_alarm *out)
{
    MDB_txn *txn = NULL;
    MDB_val v;
    memset(out, 0, sizeof(*out));
    int rc = store_rtxn_begin(s, &txn);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = meta_get(s, txn, group_id, META_TAG_ALARM, &v);
    if (rc == KHO_OK) {
        const uint8_t *p = v.mv_data;
        if (v.mv_size != CHECK_ALARM_BYTES ||
            !meta_ok(p, v.mv_size, group_id, META_TAG_ALARM)) {
            rc = corrupt(s, group_id, "the check alarm");
        } else {
            out->index = get_le64(p + META_HEADER_BYTES);
            out->hash = get_le64(p + META_HEADER_BYTES + 8);
            out->expected = get_le64(p + META_HEADER_BYTES + 16);
            out->time_ms = get_le64(p + META_HEADER_BYTES + 24);
        }
    }
    store_rtxn_end(s, txn);
    return rc;
}

static int alarm_set(struct store *s, MDB_txn *txn, uint64_t group,
                     const struct store_check_alarm *a)
{
    uint64_t applied = 0;
    int rc = need_group(s, txn, group, &applied);
    if (rc != KHO_OK) {
        return rc;
    }
    if (a == NULL) {
        return meta_del(s, txn, group, META_TAG_ALARM);
    }
    uint8_t v[CHECK_ALARM_BYTES];
    put_le64(v + META_HEADER_BYTES, a->index);
    put_le64(v + META_HEADER_BYTES + 8, a->hash);
    put_le64(v + META_HEADER_BYTES + 16, a->expected);
    put_le64(v + META_HEADER_BYTES + 24, a->time_ms);
    meta_seal(v, sizeof(v), group, META_TAG_ALARM);
    return meta_put(s, txn, group, META_TAG_ALARM, v, sizeof(v));
}

int store_check_alarm_set(struct store *s, uint64_t group_id,
                          const struct store_check_alarm *a)
{
    struct store_batch *b = NULL;
    int rc = store_write_begin(s, &b);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = alarm_set(s, b->txn, group_id, a);
    if (rc != KHO_OK) {
        store_batch_fail(b, rc);
    }
    return store_write_commit(b);
}

/* --- Tests only -------------------------------------------------------------
 */

static int rewrite(struct store *s, MDB_txn *txn, uint64_t group,
                   const uint8_t *key, size_t key_len, const uint8_t *value,
                   size_t value_len)
{
    struct store_record r;
    bool other = false;
    uint64_t applied = 0, data = 0;
    int rc = store_rec_group_data(s, txn, group, &applied, &data);
    if (rc == KHO_OK) {
        rc = store_kv_find(s, txn, data, key, key_len, &r, &other);
    }
    if (rc == KHO_ENOTFOUND && !other) {
        return store_fail(s, KHO_ENOTFOUND, "group %llu has no such key",
                          (unsigned long long)group);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    /* The key and writer point into the map, which the put below
     * rewrites. */
    char writer[STORE_WRITER_BYTES_MAX];
    if (r.writer_len > 0) {
        memcpy(writer, r.writer, r.writer_len);
    }
    r.writer = writer;
    r.key = key;
    r.value = value;
    r.value_len = value_len;
    return store_kv_put(s, txn, data, &r);
}

int store_test_rewrite(struct store *s, uint64_t group_id, const void *key,
                       size_t key_len, const void *value, size_t value_len)
{
    if (key == NULL || key_len == 0 || (value == NULL && value_len > 0)) {
        return KHO_EINVAL;
    }
    if (key_len > STORE_KEY_BYTES_MAX || value_len > STORE_VALUE_BYTES_MAX) {
        return KHO_ETOOLARGE;
    }
    struct store_batch *b = NULL;
    int rc = store_write_begin(s, &b);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = rewrite(s, b->txn, group_id, key, key_len, value, value_len);
    if (rc != KHO_OK) {
        store_batch_fail(b, rc);
    }
    return store_write_commit(b);
}

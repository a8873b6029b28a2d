/*
 * kv.c - the registry state machine for now: a put/delete map per group in
 * the `kv` database, and its snapshots (the whole key range of a group as
 * one checksummed payload). Layouts are in store.h.
 */
#include "internal.h"

#include <string.h>

static const uint8_t snap_magic[8] = {'K', 'H', 'O', 'S', 'N', 'A', 'P', 1};

/* --- Keys and values ----------------------------------------------------- */

static size_t kv_key(uint8_t *k, uint64_t group, const uint8_t *key, size_t len)
{
    put_be64(k, group);
    if (len <= STORE_KV_INLINE_KEY_BYTES) {
        memcpy(k + GROUP_KEY_BYTES, key, len);
        return GROUP_KEY_BYTES + len;
    }
    memcpy(k + GROUP_KEY_BYTES, key, STORE_KV_INLINE_KEY_BYTES);
    put_be64(k + GROUP_KEY_BYTES + STORE_KV_INLINE_KEY_BYTES,
             store_key_hash(key, len));
    return KV_LMDB_KEY_BYTES_MAX;
}

static bool is_long(size_t key_len)
{
    return key_len > STORE_KV_INLINE_KEY_BYTES;
}

static uint32_t kv_crc(uint64_t group, const uint8_t *key, size_t key_len,
                       const uint8_t *rest, size_t rest_len)
{
    uint8_t g[GROUP_KEY_BYTES];
    put_be64(g, group);
    uint32_t c = store_crc32c_init();
    c = store_crc32c_update(c, g, sizeof(g));
    c = store_crc32c_update(c, key, key_len);
    c = store_crc32c_update(c, rest, rest_len);
    return store_crc32c_final(c);
}

struct kv_rec {
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
};

/* Sizes from the header only (no checksum): for sizing a snapshot. */
static int kv_peek(const MDB_val *k, const MDB_val *v, size_t *key_len,
                   size_t *value_len)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size < KV_HEADER_BYTES || k->mv_size <= GROUP_KEY_BYTES) {
        return KHO_ECORRUPT;
    }
    size_t long_len = get_le16(p + 4);
    size_t kl = long_len > 0 ? long_len : k->mv_size - GROUP_KEY_BYTES;
    size_t extra = long_len > 0 ? long_len : 0;
    if (v->mv_size < KV_HEADER_BYTES + extra) {
        return KHO_ECORRUPT;
    }
    *key_len = kl;
    *value_len = v->mv_size - KV_HEADER_BYTES - extra;
    return KHO_OK;
}

/* Decodes and verifies one stored record of `group`. */
static int kv_decode(uint64_t group, const MDB_val *k, const MDB_val *v,
                     struct kv_rec *r)
{
    const uint8_t *kp = k->mv_data, *p = v->mv_data;
    if (v->mv_size < KV_HEADER_BYTES || k->mv_size <= GROUP_KEY_BYTES ||
        get_be64(kp) != group || get_le16(p + 6) != 0) {
        return KHO_ECORRUPT;
    }
    size_t long_len = get_le16(p + 4);
    const uint8_t *rest = p + KV_HEADER_BYTES;
    size_t rest_len = v->mv_size - KV_HEADER_BYTES;
    if (long_len == 0) {
        if (k->mv_size > GROUP_KEY_BYTES + STORE_KV_INLINE_KEY_BYTES) {
            return KHO_ECORRUPT;
        }
        r->key = kp + GROUP_KEY_BYTES;
        r->key_len = k->mv_size - GROUP_KEY_BYTES;
    } else {
        if (!is_long(long_len) || long_len > STORE_KEY_BYTES_MAX ||
            k->mv_size != KV_LMDB_KEY_BYTES_MAX || rest_len < long_len) {
            return KHO_ECORRUPT;
        }
        r->key = rest;
        r->key_len = long_len;
        rest += long_len;
        rest_len -= long_len;
        /* The LMDB key must be the one this full key maps to. */
        uint8_t want[KV_LMDB_KEY_BYTES_MAX];
        kv_key(want, group, r->key, r->key_len);
        if (memcmp(want, kp, KV_LMDB_KEY_BYTES_MAX) != 0) {
            return KHO_ECORRUPT;
        }
    }
    if (rest_len > STORE_STORED_VALUE_BYTES_MAX ||
        get_le32(p) !=
            kv_crc(group, r->key, r->key_len, p + 4, v->mv_size - 4)) {
        return KHO_ECORRUPT;
    }
    r->value = rest;
    r->value_len = rest_len;
    return KHO_OK;
}

static int corrupt_kv(struct store *s, uint64_t group)
{
    return store_fail(s, KHO_ECORRUPT,
                      "kv group %llu: a record fails its checksum or is "
                      "malformed; not served",
                      (unsigned long long)group);
}

/* Writes one record, overwriting whatever sits under its LMDB key. The
 * stored value is `pre` (may be empty) followed by `value`. */
static int kv_write_pre(struct store *s, MDB_txn *txn, uint64_t group,
                        const uint8_t *key, size_t key_len, const uint8_t *pre,
                        size_t pre_len, const uint8_t *value,
                        size_t value_len)
{
    uint8_t k[KV_LMDB_KEY_BYTES_MAX];
    size_t extra = is_long(key_len) ? key_len : 0;
    MDB_val kv = {.mv_size = kv_key(k, group, key, key_len), .mv_data = k};
    MDB_val v = {.mv_size = KV_HEADER_BYTES + extra + pre_len + value_len};
    int rc = mdb_put(txn, s->dbi_kv, &kv, &v, MDB_RESERVE);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "writing kv");
    }
    uint8_t *p = v.mv_data;
    put_le16(p + 4, (uint16_t)extra);
    put_le16(p + 6, 0);
    if (extra > 0) {
        memcpy(p + KV_HEADER_BYTES, key, key_len);
    }
    if (pre_len > 0) {
        memcpy(p + KV_HEADER_BYTES + extra, pre, pre_len);
    }
    if (value_len > 0) {
        memcpy(p + KV_HEADER_BYTES + extra + pre_len, value, value_len);
    }
    put_le32(p, kv_crc(group, key, key_len, p + 4, v.mv_size - 4));
    return KHO_OK;
}

static int kv_write(struct store *s, MDB_txn *txn, uint64_t group,
                    const uint8_t *key, size_t key_len, const uint8_t *value,
                    size_t value_len)
{
    return kv_write_pre(s, txn, group, key, key_len, NULL, 0, value,
                        value_len);
}

/* Finds the record stored under key's LMDB key: KHO_OK with r set, or
 * KHO_ENOTFOUND; *other is set when a different long key holds the slot. */
static int kv_find(struct store *s, MDB_txn *txn, uint64_t group,
                   const uint8_t *key, size_t key_len, struct kv_rec *r,
                   bool *other)
{
    uint8_t k[KV_LMDB_KEY_BYTES_MAX];
    MDB_val kv = {.mv_size = kv_key(k, group, key, key_len), .mv_data = k};
    MDB_val v;
    *other = false;
    int rc = mdb_get(txn, s->dbi_kv, &kv, &v);
    if (rc == MDB_NOTFOUND) {
        return KHO_ENOTFOUND;
    }
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "reading kv");
    }
    if (kv_decode(group, &kv, &v, r) != KHO_OK) {
        return corrupt_kv(s, group);
    }
    if (r->key_len != key_len || memcmp(r->key, key, key_len) != 0) {
        *other = true;
        return KHO_ENOTFOUND;
    }
    return KHO_OK;
}

int store_kv_lookup(struct store *s, MDB_txn *txn, uint64_t group,
                    const uint8_t *key, size_t key_len, const uint8_t **value,
                    size_t *value_len)
{
    struct kv_rec r;
    bool other = false;
    int rc = kv_find(s, txn, group, key, key_len, &r, &other);
    if (rc == KHO_ENOTFOUND) {
        return store_fail(s, KHO_ENOTFOUND, "key not found");
    }
    if (rc == KHO_OK) {
        *value = r.value;
        *value_len = r.value_len;
    }
    return rc;
}

int store_kv_apply_cmd(struct store *s, MDB_txn *txn, uint64_t group,
                       const struct store_cmd *c, int *result)
{
    struct kv_rec r;
    bool other = false;
    int rc = kv_find(s, txn, group, c->key, c->key_len, &r, &other);
    if (rc != KHO_OK && rc != KHO_ENOTFOUND) {
        return rc;
    }
    bool exists = rc == KHO_OK;
    if (c->op == STORE_CMD_PUT) {
        if (other) {
            /* Another long key with this prefix and hash: refused the
             * same way on every replica (store.h). */
            *result = KHO_ECONFLICT;
            return KHO_OK;
        }
        *result = KHO_OK;
        return kv_write(s, txn, group, c->key, c->key_len, c->value,
                        c->value_len);
    }
    if (!exists) {
        *result = KHO_ENOTFOUND;
        return KHO_OK;
    }
    uint8_t k[KV_LMDB_KEY_BYTES_MAX];
    MDB_val kv = {.mv_size = kv_key(k, group, c->key, c->key_len),
                  .mv_data = k};
    *result = KHO_OK;
    return store_mdb_err(s, mdb_del(txn, s->dbi_kv, &kv, NULL),
                         "deleting from kv");
}

/* --- Sessions and versioned records ---------------------------------------- */

#define SESS_KEY_BYTES 16u
#define SESS_VALUE_BYTES 32u

int store_rec_meta_decode(const uint8_t *v, size_t len, uint64_t *version,
                          uint64_t *revision, const uint8_t **value,
                          size_t *value_len)
{
    if (v == NULL || len < STORE_REC_META_BYTES) {
        return KHO_ECORRUPT;
    }
    *version = get_le64(v);
    *revision = get_le64(v + 8);
    *value = v + STORE_REC_META_BYTES;
    *value_len = len - STORE_REC_META_BYTES;
    return KHO_OK;
}

static uint32_t sess_crc(const uint8_t *k, const uint8_t *v)
{
    uint32_t c = store_crc32c_init();
    c = store_crc32c_update(c, k, SESS_KEY_BYTES);
    c = store_crc32c_update(c, v + 4, SESS_VALUE_BYTES - 4);
    return store_crc32c_final(c);
}

/* Looks up a session: KHO_OK with *seq and *out set, or KHO_ENOTFOUND. */
static int sess_get(struct store *s, MDB_txn *txn, const uint8_t *k,
                    uint64_t *seq, struct store_apply_result *out)
{
    MDB_val kv = {.mv_size = SESS_KEY_BYTES, .mv_data = (void *)k}, v;
    int rc = mdb_get(txn, s->dbi_sess, &kv, &v);
    if (rc == MDB_NOTFOUND) {
        return KHO_ENOTFOUND;
    }
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "reading a session");
    }
    const uint8_t *p = v.mv_data;
    if (v.mv_size != SESS_VALUE_BYTES || get_le32(p) != sess_crc(k, p)) {
        return store_fail(s, KHO_ECORRUPT, "a session record is corrupt");
    }
    out->result = (int)get_le32(p + 4);
    *seq = get_le64(p + 8);
    out->version = get_le64(p + 16);
    out->revision = get_le64(p + 24);
    return KHO_OK;
}

static int sess_put(struct store *s, MDB_txn *txn, const uint8_t *k,
                    uint64_t seq, const struct store_apply_result *r)
{
    uint8_t p[SESS_VALUE_BYTES];
    put_le32(p + 4, (uint32_t)r->result);
    put_le64(p + 8, seq);
    put_le64(p + 16, r->version);
    put_le64(p + 24, r->revision);
    put_le32(p, sess_crc(k, p));
    MDB_val kv = {.mv_size = SESS_KEY_BYTES, .mv_data = (void *)k};
    MDB_val v = {.mv_size = SESS_VALUE_BYTES, .mv_data = p};
    return store_mdb_err(s, mdb_put(txn, s->dbi_sess, &kv, &v, 0),
                         "writing a session");
}

/* Applies the command of an envelope with its precondition. */
static int apply_versioned(struct store *s, MDB_txn *txn, uint64_t group,
                           uint64_t index, const struct store_envelope *e,
                           struct store_apply_result *out)
{
    const struct store_cmd *c = &e->cmd;
    struct kv_rec r;
    bool other = false;
    int rc = kv_find(s, txn, group, c->key, c->key_len, &r, &other);
    if (rc != KHO_OK && rc != KHO_ENOTFOUND) {
        return rc;
    }
    bool exists = rc == KHO_OK;
    uint64_t cur = 0;
    if (exists && r.value_len >= STORE_REC_META_BYTES) {
        cur = get_le64(r.value);
    }
    out->version = cur;
    if ((e->cond == STORE_COND_ABSENT && exists) ||
        (e->cond == STORE_COND_VERSION && cur != e->expected_version) ||
        (c->op == STORE_CMD_PUT && other)) {
        out->result = KHO_ECONFLICT;
        return KHO_OK;
    }
    if (c->op == STORE_CMD_PUT) {
        uint8_t meta[STORE_REC_META_BYTES];
        put_le64(meta, cur + 1);
        put_le64(meta + 8, index);
        out->result = KHO_OK;
        out->version = cur + 1;
        return kv_write_pre(s, txn, group, c->key, c->key_len, meta,
                            sizeof(meta), c->value, c->value_len);
    }
    if (!exists) {
        out->result = KHO_ENOTFOUND;
        return KHO_OK;
    }
    uint8_t k[KV_LMDB_KEY_BYTES_MAX];
    MDB_val kv = {.mv_size = kv_key(k, group, c->key, c->key_len),
                  .mv_data = k};
    out->result = KHO_OK;
    return store_mdb_err(s, mdb_del(txn, s->dbi_kv, &kv, NULL),
                         "deleting from kv");
}

int store_kv_apply_envelope(struct store *s, MDB_txn *txn, uint64_t group,
                            uint64_t index, const struct store_envelope *e,
                            struct store_apply_result *out)
{
    uint8_t k[SESS_KEY_BYTES];
    put_be64(k, group);
    put_be64(k + 8, e->session);
    out->revision = index;
    if (e->session != 0) {
        uint64_t last = 0;
        struct store_apply_result prev = {0};
        int rc = sess_get(s, txn, k, &last, &prev);
        if (rc != KHO_OK && rc != KHO_ENOTFOUND) {
            return rc;
        }
        if (rc == KHO_OK && e->seq <= last) {
            if (e->seq == last) {
                *out = prev;
                out->duplicate = true;
            } else {
                out->result = KHO_ESTALE;
            }
            return KHO_OK;
        }
    }
    int rc = apply_versioned(s, txn, group, index, e, out);
    if (rc == KHO_OK && e->session != 0) {
        rc = sess_put(s, txn, k, e->seq, out);
    }
    return rc;
}

/* --- Snapshots ----------------------------------------------------------- */

/* Walks the group's kv range: f(ctx, k, v) for each record. */
static int kv_walk(struct store *s, MDB_txn *txn, uint64_t group,
                   int (*f)(void *ctx, const MDB_val *k, const MDB_val *v),
                   void *ctx)
{
    MDB_cursor *c = NULL;
    uint8_t lo[GROUP_KEY_BYTES];
    put_be64(lo, group);
    MDB_val k = {.mv_size = sizeof(lo), .mv_data = lo};
    MDB_val v;
    int rc = mdb_cursor_open(txn, s->dbi_kv, &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening a kv cursor");
    }
    int err = KHO_OK;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == MDB_SUCCESS && k.mv_size >= GROUP_KEY_BYTES &&
           get_be64(k.mv_data) == group) {
        err = f(ctx, &k, &v);
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
        return store_mdb_err(s, rc, "walking kv");
    }
    return KHO_OK;
}

struct snap_size {
    uint64_t bytes;
    uint64_t count;
};

static int size_cb(void *ctx, const MDB_val *k, const MDB_val *v)
{
    struct snap_size *z = ctx;
    size_t kl = 0, vl = 0;
    if (kv_peek(k, v, &kl, &vl) != KHO_OK) {
        return KHO_ECORRUPT;
    }
    z->bytes += SNAP_RECORD_HEADER_BYTES + kl + vl;
    z->count++;
    return z->bytes > STORE_SNAP_BYTES_MAX ? KHO_ETOOLARGE : KHO_OK;
}

struct snap_fill {
    uint64_t group;
    uint8_t *p;   /* next byte to write */
    uint8_t *end; /* where the records must end */
    uint64_t count;
};

static int fill_cb(void *ctx, const MDB_val *k, const MDB_val *v)
{
    struct snap_fill *f = ctx;
    struct kv_rec r;
    if (kv_decode(f->group, k, v, &r) != KHO_OK) {
        return KHO_ECORRUPT;
    }
    size_t need = SNAP_RECORD_HEADER_BYTES + r.key_len + r.value_len;
    if ((size_t)(f->end - f->p) < need) {
        return KHO_ECORRUPT;
    }
    put_le16(f->p, (uint16_t)r.key_len);
    put_le32(f->p + 2, (uint32_t)r.value_len);
    memcpy(f->p + SNAP_RECORD_HEADER_BYTES, r.key, r.key_len);
    if (r.value_len > 0) {
        memcpy(f->p + SNAP_RECORD_HEADER_BYTES + r.key_len, r.value,
               r.value_len);
    }
    f->p += need;
    f->count++;
    return KHO_OK;
}

int store_kv_snapshot_write(struct store *s, MDB_txn *txn, uint64_t group,
                            uint64_t index)
{
    struct snap_size z = {SNAP_HEADER_BYTES + SNAP_TRAILER_BYTES, 0};
    int rc = kv_walk(s, txn, group, size_cb, &z);
    if (rc == KHO_ETOOLARGE) {
        return store_fail(s, KHO_ETOOLARGE,
                          "group %llu: the state machine exceeds the %llu-"
                          "byte snapshot limit",
                          (unsigned long long)group,
                          (unsigned long long)STORE_SNAP_BYTES_MAX);
    }
    if (rc == KHO_ECORRUPT) {
        return corrupt_kv(s, group);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    uint8_t gk[GROUP_KEY_BYTES];
    put_be64(gk, group);
    MDB_val k = {.mv_size = sizeof(gk), .mv_data = gk};
    MDB_val v = {.mv_size = (size_t)z.bytes};
    /* Encode straight into the map: a snapshot is never built in memory. */
    rc = mdb_put(txn, s->dbi_snap, &k, &v, MDB_RESERVE);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "writing snap");
    }
    uint8_t *p = v.mv_data;
    memcpy(p, snap_magic, sizeof(snap_magic));
    put_le64(p + 8, group);
    put_le64(p + 16, index);
    put_le64(p + 24, z.count);
    struct snap_fill f = {.group = group,
                          .p = p + SNAP_HEADER_BYTES,
                          .end = p + v.mv_size - SNAP_TRAILER_BYTES};
    rc = kv_walk(s, txn, group, fill_cb, &f);
    if (rc == KHO_ECORRUPT ||
        (rc == KHO_OK && (f.p != f.end || f.count != z.count))) {
        return corrupt_kv(s, group);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    size_t body = v.mv_size - SNAP_TRAILER_BYTES;
    put_le32(p + body, store_crc32c_final(
                           store_crc32c_update(store_crc32c_init(), p, body)));
    return KHO_OK;
}

/* Next record of a checked payload at *off; false at the end. */
static bool snap_next(const uint8_t *data, size_t end, size_t *off,
                      struct kv_rec *r)
{
    if (*off + SNAP_RECORD_HEADER_BYTES > end) {
        return false;
    }
    const uint8_t *p = data + *off;
    r->key_len = get_le16(p);
    r->value_len = get_le32(p + 2);
    if (r->key_len == 0 || r->key_len > STORE_KEY_BYTES_MAX ||
        r->value_len > STORE_STORED_VALUE_BYTES_MAX ||
        end - *off - SNAP_RECORD_HEADER_BYTES < r->key_len + r->value_len) {
        return false;
    }
    r->key = p + SNAP_RECORD_HEADER_BYTES;
    r->value = r->key + r->key_len;
    *off += SNAP_RECORD_HEADER_BYTES + r->key_len + r->value_len;
    return true;
}

int store_snap_check(const uint8_t *data, size_t len, uint64_t group_id,
                     uint64_t index)
{
    if (data == NULL || len < SNAP_HEADER_BYTES + SNAP_TRAILER_BYTES ||
        len > STORE_SNAP_BYTES_MAX ||
        memcmp(data, snap_magic, sizeof(snap_magic)) != 0 ||
        get_le64(data + 8) != group_id || get_le64(data + 16) != index) {
        return KHO_ECORRUPT;
    }
    size_t end = len - SNAP_TRAILER_BYTES;
    if (get_le32(data + end) != store_crc32c_final(store_crc32c_update(
                                    store_crc32c_init(), data, end))) {
        return KHO_ECORRUPT;
    }
    uint64_t count = get_le64(data + 24), n = 0;
    size_t off = SNAP_HEADER_BYTES;
    struct kv_rec r;
    while (n < count && snap_next(data, end, &off, &r)) {
        n++;
    }
    return n == count && off == end ? KHO_OK : KHO_ECORRUPT;
}

int store_kv_snapshot_install(struct store *s, MDB_txn *txn, uint64_t group,
                              uint64_t index, const uint8_t *data, size_t len)
{
    if (store_snap_check(data, len, group, index) != KHO_OK) {
        return store_fail(s, KHO_ECORRUPT,
                          "snapshot for group %llu at index %llu is corrupt "
                          "or not for this group (%zu bytes); not installed",
                          (unsigned long long)group, (unsigned long long)index,
                          len);
    }
    int rc = store_rec_del_group(s, txn, s->dbi_kv, group);
    size_t off = SNAP_HEADER_BYTES, end = len - SNAP_TRAILER_BYTES;
    struct kv_rec r;
    while (rc == KHO_OK && snap_next(data, end, &off, &r)) {
        rc = kv_write(s, txn, group, r.key, r.key_len, r.value, r.value_len);
    }
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

/*
 * hist.c - the `hist` database: the versions of every key that are no
 * longer current - superseded records and tombstones - among the key's
 * last STORE_HISTORY_VERSIONS versions (store.h top, "History"). The
 * current version lives in kv alone, so a put dirties no hist page unless
 * it replaces a record. Versions of a key sit together under the 64-bit
 * hash of the key, in revision order, so that a key's history is one short
 * cursor walk and one kv lookup; since keys may share a hash, every walk
 * filters on the full key kept in the value.
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

static void set_slot(uint8_t k[HIST_KEY_BYTES], uint32_t slot)
{
    k[24] = (uint8_t)(slot >> 8);
    k[25] = (uint8_t)slot;
}

static uint32_t slot_of(const uint8_t k[HIST_KEY_BYTES])
{
    return (uint32_t)k[24] << 8 | k[25];
}

/* Keys of one hash share these first bytes. */
#define HIST_PREFIX_BYTES 16u

static bool same_prefix(const MDB_val *k, const uint8_t *prefix)
{
    return k->mv_size == HIST_KEY_BYTES &&
           memcmp(k->mv_data, prefix, HIST_PREFIX_BYTES) == 0;
}

static uint32_t hist_crc(const uint8_t *k, const uint8_t *v, size_t len)
{
    uint32_t c = store_crc32c_init();
    c = store_crc32c_update(c, k, HIST_KEY_BYTES);
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
        get_le32(p) != hist_crc(k->mv_data, p, v->mv_size)) {
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

/* --- Pruning ------------------------------------------------------------- */

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

/* Walks the versions under the key's hash (prefix): counts the key's own
 * in *n or, with `first`, stops on its oldest one (*n 1, the cursor on
 * it). O(versions sharing the hash). */
static int walk_mine(struct store *s, MDB_cursor *c, uint64_t data,
                     const uint8_t *prefix, const uint8_t *key, size_t len,
                     bool first, uint32_t *n)
{
    MDB_val k = {.mv_size = HIST_PREFIX_BYTES, .mv_data = (void *)prefix};
    MDB_val v;
    *n = 0;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == MDB_SUCCESS && same_prefix(&k, prefix)) {
        bool mine = false;
        if (version_of_key(&v, key, len, &mine) != KHO_OK) {
            return hist_corrupt(s, data);
        }
        *n += mine ? 1u : 0u;
        if (mine && first) {
            return KHO_OK;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "walking hist");
    }
    return KHO_OK;
}

/* Drops the key's oldest versions while it has more than `keep`: one at
 * most in a store that kept the rule (store_hist_prune()), more only if
 * it had broken it. */
static int prune_with(struct store *s, MDB_cursor *c, uint64_t data,
                      const uint8_t *prefix, const uint8_t *key, size_t len,
                      uint32_t keep)
{
    uint32_t n = 0;
    int rc = walk_mine(s, c, data, prefix, key, len, false, &n);
    for (; rc == KHO_OK && n > keep; n--) {
        uint32_t one = 0;
        rc = walk_mine(s, c, data, prefix, key, len, true, &one);
        STORE_ASSERT(rc != KHO_OK || one == 1); /* counted in this txn */
        if (rc == KHO_OK) {
            rc = store_mdb_err(s, mdb_cursor_del(c, 0),
                               "dropping an old version from hist");
        }
    }
    return rc;
}

int store_hist_prune(struct store *s, MDB_txn *txn, uint64_t data,
                     const uint8_t *key, size_t key_len, uint32_t keep)
{
    uint8_t prefix[HIST_KEY_BYTES];
    MDB_cursor *c = NULL;
    hist_key(prefix, data, store_hash(s, key, key_len), 0, 0);
    int rc = mdb_cursor_open(txn, s->dbi_hist, &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening a hist cursor");
    }
    rc = prune_with(s, c, data, prefix, key, key_len, keep);
    mdb_cursor_close(c);
    return rc;
}

/* --- Writing ------------------------------------------------------------- */

/*
 * Reserves len bytes for a version under k, at the lowest slot in
 * [from, to) that holds none; k's slot says which. MDB_NOOVERWRITE: a
 * version is never written over, whatever else shares its hash and
 * revision. Every try but the last is a lookup; more than one happens
 * only when keys share a hash (64 bits: in tests).
 */
static int reserve(struct store *s, MDB_txn *txn, uint64_t data,
                   uint8_t k[HIST_KEY_BYTES], uint32_t from, uint32_t to,
                   size_t len, MDB_val *v)
{
    MDB_val kv = {.mv_size = HIST_KEY_BYTES, .mv_data = k};
    for (uint32_t slot = from; slot < to; slot++) {
        set_slot(k, slot);
        *v = (MDB_val){.mv_size = len};
        int rc =
            mdb_put(txn, s->dbi_hist, &kv, v, MDB_RESERVE | MDB_NOOVERWRITE);
        if (rc != MDB_KEYEXIST) {
            return store_mdb_err(s, rc, "writing hist");
        }
    }
    return store_fail(s, KHO_ECORRUPT,
                      "hist (data id %#llx): no free slot for a version of "
                      "revision %llu (slots %u to %u are taken)",
                      (unsigned long long)data,
                      (unsigned long long)get_be64(k + 16), from, to - 1);
}

/* The header of a version whose record follows it (store.h top). */
static void head_encode(uint8_t *p, const uint8_t *key, size_t key_len,
                        bool deleted)
{
    put_le16(p + 4, (uint16_t)key_len);
    p[6] = deleted ? HIST_DELETED : 0;
    p[7] = 0;
    memcpy(p + HIST_HEADER_BYTES, key, key_len);
}

static void seal(const uint8_t k[HIST_KEY_BYTES], const MDB_val *v)
{
    put_le32(v->mv_data, hist_crc(k, v->mv_data, v->mv_size));
}

/* Writes r as a version of its key, under its mod_rev and the lowest free
 * slot from `from` on; r's pointers must hold no map bytes (the write may
 * move them). */
static int append(struct store *s, MDB_txn *txn, uint64_t data,
                  const struct store_record *r, uint32_t from)
{
    uint8_t k[HIST_KEY_BYTES];
    MDB_val v;
    hist_key(k, data, store_hash(s, r->key, r->key_len), r->mod_rev, 0);
    int rc = reserve(s, txn, data, k, from, HIST_SLOTS,
                     HIST_HEADER_BYTES + r->key_len + store_body_size(r), &v);
    if (rc != KHO_OK) {
        return rc;
    }
    uint8_t *p = v.mv_data;
    head_encode(p, r->key, r->key_len, r->deleted);
    store_body_encode(p + HIST_HEADER_BYTES + r->key_len, r);
    seal(k, &v);
    return KHO_OK;
}

int store_hist_tombstone(struct store *s, MDB_txn *txn, uint64_t data,
                         const struct store_record *t, uint32_t slot)
{
    STORE_ASSERT(t->deleted && slot < HIST_SLOTS);
    return append(s, txn, data, t, slot);
}

int store_hist_supersede(struct store *s, MDB_txn *txn, uint64_t data,
                         const struct store_record *cur)
{
    uint8_t k[HIST_KEY_BYTES];
    MDB_val v;
    struct store_record now;
    bool other = false;
    size_t body = store_body_size(cur);
    hist_key(k, data, store_hash(s, cur->key, cur->key_len), cur->mod_rev, 0);
    int rc = reserve(s, txn, data, k, 0, HIST_SLOTS,
                     HIST_HEADER_BYTES + cur->key_len + body, &v);
    /* The record is read again after the write above: LMDB may have moved
     * the dirty pages cur pointed into (it spills them when a transaction
     * grows big), and nothing writes between this read and the copy. */
    if (rc == KHO_OK) {
        rc = store_kv_find(s, txn, data, cur->key, cur->key_len, &now, &other);
        STORE_ASSERT(rc != KHO_ENOTFOUND); /* the caller found it */
    }
    if (rc != KHO_OK) {
        return rc;
    }
    STORE_ASSERT(now.mod_rev == cur->mod_rev && store_body_size(&now) == body);
    uint8_t *p = v.mv_data;
    head_encode(p, cur->key, cur->key_len, false);
    store_body_encode(p + HIST_HEADER_BYTES + cur->key_len, &now);
    seal(k, &v);
    return KHO_OK;
}

/* --- Format 3 (convert.c, and restores of old backups) ------------------- */

int store_hist_v3_fate(struct store *s, MDB_txn *txn, uint64_t data,
                       const uint8_t k[HIST_KEY_BYTES],
                       const struct store_record *r, enum hist_v3_fate *fate)
{
    struct store_record cur;
    bool other = false;
    *fate = HIST_V3_KEEP;
    if (r->deleted) {
        return KHO_OK; /* at its delete's slot in both formats */
    }
    int rc = store_kv_find(s, txn, data, r->key, r->key_len, &cur, &other);
    if (rc == KHO_OK && cur.mod_rev == r->mod_rev) {
        *fate = HIST_V3_DROP; /* one op per key per request: the same one */
        return KHO_OK;
    }
    if (rc != KHO_OK && rc != KHO_ENOTFOUND) {
        return rc;
    }
    if (slot_of(k) != 0) {
        *fate = HIST_V3_PLACE;
    }
    return KHO_OK;
}

int store_hist_place(struct store *s, MDB_txn *txn, uint64_t data,
                     const uint8_t *key, const uint8_t *v, size_t len,
                     uint32_t *slot)
{
    uint8_t k[HIST_KEY_BYTES];
    MDB_val out;
    put_be64(k, data);
    memcpy(k + GROUP_KEY_BYTES, key, HIST_KEY_BYTES - GROUP_KEY_BYTES);
    int rc = reserve(s, txn, data, k, 0, slot_of(k) + 1, len, &out);
    if (rc != KHO_OK) {
        return rc;
    }
    memcpy(out.mv_data, v, len);
    seal(k, &out);
    *slot = slot_of(k);
    return KHO_OK;
}

/* --- Reading ------------------------------------------------------------- */

struct walk {
    const uint8_t *key;
    size_t key_len;
    uint64_t after_rev;
    uint32_t limit;
    store_record_cb cb;
    void *ctx;
    uint32_t n; /* versions given to cb */
    bool more;  /* the limit was reached before a version of the key */
};

/* Serves r to cb unless the limit was reached (then w->more). */
static int serve(struct walk *w, const struct store_record *r)
{
    if (w->n == w->limit) {
        w->more = true;
        return KHO_OK;
    }
    w->n++;
    return w->cb(w->ctx, r);
}

/* Serves one stored version if it is the key's. */
static int visit(struct store *s, uint64_t data, struct walk *w,
                 const MDB_val *k, const MDB_val *v)
{
    struct store_record r;
    if (store_hist_decode(data, k, v, &r) != KHO_OK) {
        return hist_corrupt(s, data);
    }
    if (r.key_len != w->key_len || memcmp(r.key, w->key, w->key_len) != 0) {
        return KHO_OK; /* another key with the same hash */
    }
    return serve(w, &r);
}

/* The key's versions in hist after w->after_rev, oldest first. */
static int walk_hist(struct store *s, MDB_txn *txn, uint64_t data,
                     struct walk *w)
{
    MDB_cursor *c = NULL;
    uint8_t from[HIST_KEY_BYTES];
    hist_key(from, data, store_hash(s, w->key, w->key_len), w->after_rev + 1,
             0);
    MDB_val k = {.mv_size = HIST_KEY_BYTES, .mv_data = from};
    MDB_val v;
    int rc = mdb_cursor_open(txn, s->dbi_hist, &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening a hist cursor");
    }
    int err = KHO_OK;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == MDB_SUCCESS && same_prefix(&k, from)) {
        err = visit(s, data, w, &k, &v);
        if (err != KHO_OK || w->more) {
            break;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (err != KHO_OK) {
        return err;
    }
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "walking hist");
    }
    return KHO_OK;
}

/* The key's current record, newer than every version in hist, last. */
static int walk_current(struct store *s, MDB_txn *txn, uint64_t data,
                        struct walk *w)
{
    struct store_record r;
    bool other = false;
    int rc = store_kv_find(s, txn, data, w->key, w->key_len, &r, &other);
    if (rc == KHO_ENOTFOUND) {
        return KHO_OK;
    }
    if (rc != KHO_OK || r.mod_rev <= w->after_rev) {
        return rc;
    }
    return serve(w, &r);
}

int store_hist_walk(struct store *s, MDB_txn *txn, uint64_t data,
                    const uint8_t *key, size_t key_len, uint64_t after_rev,
                    uint32_t limit, store_record_cb cb, void *ctx, bool *more)
{
    struct walk w = {.key = key,
                     .key_len = key_len,
                     .after_rev = after_rev,
                     .limit = limit,
                     .cb = cb,
                     .ctx = ctx};
    *more = false;
    if (after_rev == UINT64_MAX) {
        return KHO_OK; /* nothing comes after the last revision */
    }
    int rc = walk_hist(s, txn, data, &w);
    if (rc == KHO_OK && !w.more) {
        rc = walk_current(s, txn, data, &w);
    }
    *more = w.more;
    return rc;
}

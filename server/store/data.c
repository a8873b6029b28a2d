/*
 * data.c - data ids and their garbage (store.h top, "Data ids" and
 * "Garbage"): the counter fresh ids come from, the stage markers and the
 * garbage list in `info`, and the collector that deletes garbage a
 * bounded number of keys at a time.
 *
 * Why a collector instead of deleting inline: an install or a group
 * deletion runs on the raft thread inside the batch of every group; a
 * replica of hundreds of MB deleted there would stall them all for
 * seconds. Turning its data id into garbage is one put, and the raft
 * thread then deletes max_keys keys per loop.
 */
#include "check.h"

#include <string.h>

static const char key_next[] = "data_next";
#define NEXT_KEY_BYTES (sizeof(key_next) - 1u)
#define NEXT_VALUE_BYTES 16u
static const char key_gc[] = "gc";
#define GC_PREFIX_BYTES (sizeof(key_gc) - 1u)
#define GC_KEY_BYTES (GC_PREFIX_BYTES + 8u)
#define GC_VALUE_BYTES 4u
static const char key_stage[] = "stage";
#define STAGE_PREFIX_BYTES (sizeof(key_stage) - 1u)
#define STAGE_KEY_BYTES (STAGE_PREFIX_BYTES + 8u)
#define MARKER_BYTES 32u

/* --- info records ----------------------------------------------------------
 */

/* crc over the info key and the value after its own 4 bytes. */
static uint32_t info_crc(const uint8_t *k, size_t klen, const uint8_t *v,
                         size_t len)
{
    uint32_t c = store_crc32c_init();
    c = store_crc32c_update(c, k, klen);
    c = store_crc32c_update(c, v + 4, len - 4);
    return store_crc32c_final(c);
}

static size_t prefixed_key(uint8_t *k, const char *prefix, size_t plen,
                           uint64_t data)
{
    memcpy(k, prefix, plen);
    put_be64(k + plen, data);
    return plen + 8u;
}

static int info_get(struct store *s, MDB_txn *txn, const uint8_t *k,
                    size_t klen, MDB_val *v)
{
    MDB_val kv = {.mv_size = klen, .mv_data = (void *)k};
    int rc = mdb_get(txn, s->dbi_info, &kv, v);
    if (rc == MDB_NOTFOUND) {
        return KHO_ENOTFOUND;
    }
    return store_mdb_err(s, rc, "reading info");
}

static int info_put(struct store *s, MDB_txn *txn, const uint8_t *k,
                    size_t klen, uint8_t *v, size_t len)
{
    put_le32(v, info_crc(k, klen, v, len));
    MDB_val kv = {.mv_size = klen, .mv_data = (void *)k};
    MDB_val vv = {.mv_size = len, .mv_data = v};
    return store_mdb_err(s, mdb_put(txn, s->dbi_info, &kv, &vv, 0),
                         "writing info");
}

static int info_del(struct store *s, MDB_txn *txn, const uint8_t *k,
                    size_t klen)
{
    MDB_val kv = {.mv_size = klen, .mv_data = (void *)k};
    int rc = mdb_del(txn, s->dbi_info, &kv, NULL);
    return rc == MDB_NOTFOUND ? KHO_OK
                              : store_mdb_err(s, rc, "deleting from info");
}

static bool info_ok(const uint8_t *k, size_t klen, const MDB_val *v,
                    size_t want)
{
    return v->mv_size == want &&
           get_le32(v->mv_data) == info_crc(k, klen, v->mv_data, want);
}

static int info_corrupt(struct store *s, const char *what)
{
    return store_fail(s, KHO_ECORRUPT,
                      "info: %s fails its checksum or is malformed", what);
}

/* --- Fresh data ids ------------------------------------------------------ */

int store_data_alloc(struct store *s, MDB_txn *txn, uint64_t *data)
{
    const uint8_t *k = (const uint8_t *)key_next;
    uint64_t next = 1;
    MDB_val v;
    int rc = info_get(s, txn, k, NEXT_KEY_BYTES, &v);
    if (rc == KHO_OK) {
        if (!info_ok(k, NEXT_KEY_BYTES, &v, NEXT_VALUE_BYTES) ||
            get_le32((const uint8_t *)v.mv_data + 4) != 0) {
            return info_corrupt(s, "the data id counter");
        }
        next = get_le64((const uint8_t *)v.mv_data + 8);
    } else if (rc != KHO_ENOTFOUND) {
        return rc;
    }
    if (next == 0 || next >= DATA_ID_FRESH - 1) {
        return store_fail(s, KHO_ENOSPC, "data ids are exhausted");
    }
    uint8_t nv[NEXT_VALUE_BYTES];
    put_le32(nv + 4, 0);
    put_le64(nv + 8, next + 1);
    rc = info_put(s, txn, k, NEXT_KEY_BYTES, nv, sizeof(nv));
    *data = DATA_ID_FRESH | next;
    return rc;
}

/* --- Stage markers -------------------------------------------------------- */

int store_stage_marker_get(struct store *s, MDB_txn *txn, uint64_t data,
                           struct stage_marker *m)
{
    uint8_t k[STAGE_KEY_BYTES];
    MDB_val v;
    prefixed_key(k, key_stage, STAGE_PREFIX_BYTES, data);
    int rc = info_get(s, txn, k, sizeof(k), &v);
    if (rc != KHO_OK) {
        return rc;
    }
    const uint8_t *p = v.mv_data;
    if (!info_ok(k, sizeof(k), &v, MARKER_BYTES) ||
        (p[4] != STAGE_RECEIVING && p[4] != STAGE_FINISHED) || p[5] != 0 ||
        get_le16(p + 6) != 0) {
        return info_corrupt(s, "a stage marker");
    }
    *m = (struct stage_marker){.state = p[4],
                               .group = get_le64(p + 8),
                               .index = get_le64(p + 16),
                               .term = get_le64(p + 24)};
    return KHO_OK;
}

int store_stage_marker_put(struct store *s, MDB_txn *txn, uint64_t data,
                           const struct stage_marker *m)
{
    uint8_t k[STAGE_KEY_BYTES], v[MARKER_BYTES];
    prefixed_key(k, key_stage, STAGE_PREFIX_BYTES, data);
    v[4] = (uint8_t)m->state;
    v[5] = 0;
    put_le16(v + 6, 0);
    put_le64(v + 8, m->group);
    put_le64(v + 16, m->index);
    put_le64(v + 24, m->term);
    return info_put(s, txn, k, sizeof(k), v, sizeof(v));
}

int store_stage_marker_del(struct store *s, MDB_txn *txn, uint64_t data)
{
    uint8_t k[STAGE_KEY_BYTES];
    prefixed_key(k, key_stage, STAGE_PREFIX_BYTES, data);
    return info_del(s, txn, k, sizeof(k));
}

/* Collects into ids (at most cap) the data ids of the `info` keys
 * prefix | id with id >= from, in order, so that the caller may then
 * delete them. *more: some were left for a next round (from the last id
 * + 1). */
static int info_ids(struct store *s, MDB_txn *txn, const char *prefix,
                    size_t plen, uint64_t from, uint64_t *ids, size_t cap,
                    size_t *n, bool *more)
{
    MDB_cursor *c = NULL;
    uint8_t lo[STAGE_KEY_BYTES];
    MDB_val k = {.mv_size = prefixed_key(lo, prefix, plen, from),
                 .mv_data = lo},
            v;
    *n = 0;
    *more = false;
    int rc = mdb_cursor_open(txn, s->dbi_info, &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening an info cursor");
    }
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == MDB_SUCCESS && k.mv_size >= plen &&
           memcmp(k.mv_data, prefix, plen) == 0) {
        if (k.mv_size == plen + 8u) {
            if (*n == cap) {
                *more = true;
                break;
            }
            ids[(*n)++] = get_be64((const uint8_t *)k.mv_data + plen);
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "walking info");
    }
    return KHO_OK;
}

/* A marker becomes garbage: its data goes on the garbage list. */
static int marker_to_garbage(struct store *s, MDB_txn *txn, uint64_t data)
{
    int rc = store_stage_marker_del(s, txn, data);
    return rc == KHO_OK ? store_gc_add(s, txn, data) : rc;
}

/* Stage markers per round of the walks below: they are few (a handful of
 * transfers at once), the rounds only bound the stack. */
#define MARKERS_PER_ROUND 64u

int store_stage_markers_drop(struct store *s, MDB_txn *txn, uint64_t group,
                             bool all_states, uint64_t keep)
{
    uint64_t ids[MARKERS_PER_ROUND], from = 0;
    size_t n = 0;
    bool more = true;
    int rc = KHO_OK;
    while (rc == KHO_OK && more) {
        rc = info_ids(s, txn, key_stage, STAGE_PREFIX_BYTES, from, ids,
                      MARKERS_PER_ROUND, &n, &more);
        for (size_t i = 0; rc == KHO_OK && i < n; i++) {
            struct stage_marker m;
            rc = store_stage_marker_get(s, txn, ids[i], &m);
            if (rc != KHO_OK || ids[i] == keep || m.group != group ||
                (!all_states && m.state != STAGE_FINISHED)) {
                continue;
            }
            rc = marker_to_garbage(s, txn, ids[i]);
        }
        from = n > 0 ? ids[n - 1] + 1 : from;
        more = more && from != 0; /* past UINT64_MAX: done */
    }
    return rc;
}

/* --- The garbage list ----------------------------------------------------- */

int store_gc_add(struct store *s, MDB_txn *txn, uint64_t data)
{
    uint8_t k[GC_KEY_BYTES], v[GC_VALUE_BYTES];
    prefixed_key(k, key_gc, GC_PREFIX_BYTES, data);
    atomic_store(&s->gc_pending, true);
    return info_put(s, txn, k, sizeof(k), v, sizeof(v));
}

static int gc_forget(struct store *s, MDB_txn *txn, uint64_t data)
{
    uint8_t k[GC_KEY_BYTES];
    prefixed_key(k, key_gc, GC_PREFIX_BYTES, data);
    return info_del(s, txn, k, sizeof(k));
}

/* Deletes up to *budget keys of `data` in one database; *empty when none
 * is left. */
static int del_some(struct store *s, MDB_txn *txn, MDB_dbi dbi, uint64_t data,
                    uint32_t *budget, bool *empty)
{
    MDB_cursor *c = NULL;
    uint8_t lo[GROUP_KEY_BYTES];
    put_be64(lo, data);
    MDB_val k = {.mv_size = sizeof(lo), .mv_data = lo}, v;
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening a cursor");
    }
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == MDB_SUCCESS && store_in_group(&k, data) && *budget > 0) {
        rc = mdb_cursor_del(c, 0);
        if (rc == MDB_SUCCESS) {
            (*budget)--;
            /* After a delete the cursor already sits on the next key;
             * MDB_NEXT returns it without stepping over it. */
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
    }
    *empty =
        rc == MDB_NOTFOUND || (rc == MDB_SUCCESS && !store_in_group(&k, data));
    mdb_cursor_close(c);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "collecting garbage");
    }
    return KHO_OK;
}

/* Collects one garbage data id within *budget keys; *gone when it was
 * emptied and forgotten. Only the session count is data-keyed in
 * raft_meta: the other tags under the same 8 bytes may belong to a live
 * group whose data id was its group id. */
static int collect(struct store *s, MDB_txn *txn, uint64_t data,
                   uint32_t *budget, bool *gone)
{
    bool empty = true;
    *gone = false;
    for (size_t i = 0; i < SNAP_DB_COUNT && empty; i++) {
        int rc = del_some(s, txn, store_sm_dbi(s, store_sm_dbs[i]), data,
                          budget, &empty);
        if (rc != KHO_OK) {
            return rc;
        }
    }
    if (!empty) {
        return KHO_OK;
    }
    int rc = store_rec_del_meta(s, txn, data, META_SESSIONS);
    if (rc == KHO_OK) {
        rc = gc_forget(s, txn, data);
    }
    *gone = rc == KHO_OK;
    if (*gone && *budget > 0) {
        (*budget)--; /* forgetting costs a key too: every call is bounded */
    }
    return rc;
}

int store_gc_clear_now(struct store *s, MDB_txn *txn, uint64_t data)
{
    int rc = KHO_OK;
    for (size_t i = 0; rc == KHO_OK && i < SNAP_DB_COUNT; i++) {
        rc =
            store_rec_del_group(s, txn, store_sm_dbi(s, store_sm_dbs[i]), data);
    }
    if (rc == KHO_OK) {
        rc = store_rec_del_meta(s, txn, data, META_SESSIONS);
    }
    return rc == KHO_OK ? gc_forget(s, txn, data) : rc;
}

/* The stages closed unfinished since the last call become garbage (their
 * markers may be gone already: their group was deleted). */
static int take_abandoned(struct store_batch *b)
{
    struct store *s = b->s;
    uint64_t ids[STORE_STAGES_MAX];
    pthread_mutex_lock(&s->mu);
    uint32_t n = s->n_abandoned;
    memcpy(ids, s->abandoned, n * sizeof(ids[0]));
    s->n_abandoned = 0;
    pthread_mutex_unlock(&s->mu);
    int rc = KHO_OK;
    for (uint32_t i = 0; rc == KHO_OK && i < n; i++) {
        struct stage_marker m;
        rc = store_stage_marker_get(s, b->txn, ids[i], &m);
        if (rc == KHO_ENOTFOUND) {
            rc = KHO_OK;
            continue;
        }
        if (rc == KHO_OK) {
            rc = marker_to_garbage(s, b->txn, ids[i]);
        }
    }
    return rc;
}

#define GC_IDS_PER_ROUND 16u

static int gc_round(struct store_batch *b, uint32_t *budget, bool *more)
{
    uint64_t ids[GC_IDS_PER_ROUND];
    size_t n = 0;
    bool left = false;
    int rc = info_ids(b->s, b->txn, key_gc, GC_PREFIX_BYTES, 0, ids,
                      GC_IDS_PER_ROUND, &n, &left);
    size_t gone_n = 0;
    for (size_t i = 0; rc == KHO_OK && i<n && * budget> 0; i++) {
        bool gone = false;
        rc = collect(b->s, b->txn, ids[i], budget, &gone);
        gone_n += gone;
    }
    /* Garbage remains unless every id seen went and none was left out. */
    *more = left || gone_n < n;
    return rc;
}

int store_batch_gc(struct store_batch *b, uint32_t max_keys, bool *more)
{
    *more = true;
    if (b->err != KHO_OK) {
        return b->err;
    }
    if (max_keys == 0) {
        return store_batch_fail(
            b, store_fail(b->s, KHO_EINVAL, "gc: max_keys must be >= 1"));
    }
    uint32_t budget = max_keys;
    int rc = take_abandoned(b);
    /* Every round spends budget or finds no garbage left. */
    while (rc == KHO_OK && budget > 0 && *more) {
        rc = gc_round(b, &budget, more);
    }
    if (rc != KHO_OK) {
        return store_batch_fail(b, rc);
    }
    if (!*more) {
        pthread_mutex_lock(&b->s->mu);
        if (b->s->n_abandoned == 0) {
            atomic_store(&b->s->gc_pending, false);
        } else {
            *more = true;
        }
        pthread_mutex_unlock(&b->s->mu);
    }
    return KHO_OK;
}

bool store_gc_pending(struct store *s)
{
    return atomic_load(&s->gc_pending);
}

/* --- At open -------------------------------------------------------------- */

int store_gc_open(struct store *s, MDB_txn *txn)
{
    uint64_t ids[MARKERS_PER_ROUND];
    size_t n = 0;
    bool more = true;
    int rc = KHO_OK;
    /* No stage survives a restart: whoever fed it is gone. Each round
     * deletes the markers it saw, so the next starts from the first. */
    while (rc == KHO_OK && more) {
        rc = info_ids(s, txn, key_stage, STAGE_PREFIX_BYTES, 0, ids,
                      MARKERS_PER_ROUND, &n, &more);
        for (size_t i = 0; rc == KHO_OK && i < n; i++) {
            rc = marker_to_garbage(s, txn, ids[i]);
        }
    }
    if (rc == KHO_OK) {
        rc = info_ids(s, txn, key_gc, GC_PREFIX_BYTES, 0, ids, 1, &n, &more);
    }
    if (rc == KHO_OK) {
        atomic_store(&s->gc_pending, n > 0);
    }
    return rc;
}

/*
 * convert.c - converting a format-3 store to format 4 when it is opened
 * (store.h top, "History").
 *
 * Format 3 kept every key's current record in hist as well as in kv, and
 * put every version at its op's slot. Format 4 keeps the current record in
 * kv alone and puts a superseded version, written by a later request that
 * cannot know that slot, at the lowest slot free under its hash and
 * revision. So the conversion walks all of hist once and, for each
 * version, drops it when it is its key's current kv record and moves it to
 * the lowest free slot when it is a superseded version at another slot
 * (store_hist_v3_fate()). A replica converted at any applied index then
 * holds the bytes of one that ran format 4 all along, as `khoctl check`
 * wants, as long as no two keys share a 64-bit hash (they may share one
 * in tests that shorten hashes, and then two replicas converted at
 * different indexes can number such versions differently).
 *
 * It runs in write transactions bounded by STORE_CONVERT_TXN_VERSIONS and
 * STORE_CONVERT_TXN_BYTES, resuming each where the last stopped, and the
 * last one records format 4. Every step is idempotent: a crash half-way
 * leaves format 3 recorded, and the next open starts over. A version that
 * fails its checksum (or whose kv record does) is left as it is: reading
 * it reports it, as for any damaged record.
 */
#include "internal.h"

#include <string.h>

struct conv {
    uint8_t at[STORE_LMDB_KEY_BYTES_MAX]; /* where the next txn resumes */
    size_t at_len;
    bool started, done;
    uint64_t seen, dropped, moved, unchecked;
    uint8_t *buf; /* a version being moved (HIST_VALUE_BYTES_MAX) */
};

/* Keeps the cursor's key, where the walk goes on from. */
static int remember(struct store *s, struct conv *cv, const MDB_val *k)
{
    if (k->mv_size > sizeof(cv->at)) {
        return store_fail(s, KHO_ECORRUPT,
                          "hist holds a key of %zu bytes: no store of kho "
                          "writes one",
                          k->mv_size);
    }
    memcpy(cv->at, k->mv_data, k->mv_size);
    cv->at_len = k->mv_size;
    return KHO_OK;
}

/* Deletes the version under the cursor (its key in cv->at) and, for a
 * move, writes it again at the lowest free slot. */
static int move_or_drop(struct store *s, MDB_txn *txn, MDB_cursor *c,
                        struct conv *cv, enum hist_v3_fate fate,
                        const MDB_val *v)
{
    size_t len = v->mv_size;
    if (fate == HIST_V3_PLACE) {
        memcpy(cv->buf, v->mv_data, len); /* the delete frees its page */
    }
    int rc = store_mdb_err(s, mdb_cursor_del(c, 0), "converting hist");
    if (rc != KHO_OK) {
        return rc;
    }
    if (fate == HIST_V3_DROP) {
        cv->dropped++;
        return KHO_OK;
    }
    uint32_t was =
        (uint32_t)cv->at[HIST_KEY_BYTES - 2] << 8 | cv->at[HIST_KEY_BYTES - 1];
    uint32_t slot = was;
    rc = store_hist_place(s, txn, get_be64(cv->at), cv->at + GROUP_KEY_BYTES,
                          cv->buf, len, &slot);
    cv->moved += slot != was ? 1u : 0u; /* else no lower slot was free */
    return rc;
}

/* Converts the version under the cursor; *gone when its key no longer
 * holds it (the cursor must seek again). */
static int convert_one(struct store *s, MDB_txn *txn, MDB_cursor *c,
                       struct conv *cv, const MDB_val *k, const MDB_val *v,
                       bool *gone)
{
    struct store_record r;
    enum hist_v3_fate fate = HIST_V3_KEEP;
    uint64_t data = k->mv_size >= GROUP_KEY_BYTES ? get_be64(k->mv_data) : 0;
    *gone = false;
    cv->seen++;
    if (store_hist_decode(data, k, v, &r) != KHO_OK) {
        cv->unchecked++;
        return KHO_OK;
    }
    int rc = store_hist_v3_fate(s, txn, data, k->mv_data, &r, &fate);
    if (rc == KHO_ECORRUPT) {
        cv->unchecked++; /* its kv record is damaged */
        return KHO_OK;
    }
    if (rc != KHO_OK || fate == HIST_V3_KEEP) {
        return rc;
    }
    *gone = true;
    return move_or_drop(s, txn, c, cv, fate, v);
}

/* Puts the cursor on the first version past cv->at, after the version
 * there was dropped or moved: a moved one went to a lower slot, behind the
 * walk, or back to cv->at itself when no lower slot was free. */
static int seek_past(MDB_txn *txn, MDB_dbi dbi, MDB_cursor *c,
                     const struct conv *cv, MDB_val *k, MDB_val *v)
{
    MDB_val at = {.mv_size = cv->at_len, .mv_data = (void *)cv->at};
    *k = at;
    int rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE);
    if (rc == MDB_SUCCESS && mdb_cmp(txn, dbi, k, &at) == 0) {
        rc = mdb_cursor_get(c, k, v, MDB_NEXT);
    }
    return rc;
}

/* Converts versions from cv->at on until the transaction's bounds or the
 * end of hist (cv->done). Every call converts at least one version. */
static int convert_txn(struct store *s, MDB_txn *txn, struct conv *cv)
{
    MDB_cursor *c = NULL;
    MDB_val k = {.mv_size = cv->at_len, .mv_data = cv->at}, v;
    uint64_t n = 0, bytes = 0;
    int err = KHO_OK;
    int rc = mdb_cursor_open(txn, s->dbi_hist, &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening a hist cursor");
    }
    rc = mdb_cursor_get(c, &k, &v, cv->started ? MDB_SET_RANGE : MDB_FIRST);
    cv->started = true;
    while (rc == MDB_SUCCESS && n < STORE_CONVERT_TXN_VERSIONS &&
           bytes < STORE_CONVERT_TXN_BYTES) {
        bool gone = false;
        bytes += v.mv_size;
        n++;
        err = remember(s, cv, &k);
        if (err == KHO_OK) {
            err = convert_one(s, txn, c, cv, &k, &v, &gone);
        }
        if (err != KHO_OK) {
            break;
        }
        rc = gone ? seek_past(txn, s->dbi_hist, c, cv, &k, &v)
                  : mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (err == KHO_OK && rc == MDB_SUCCESS) {
        /* Not converted yet: the next transaction starts here. */
        err = remember(s, cv, &k);
    }
    mdb_cursor_close(c);
    if (err != KHO_OK) {
        return err;
    }
    cv->done = rc == MDB_NOTFOUND;
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "walking hist");
    }
    return KHO_OK;
}

static int convert_step(struct store *s, struct conv *cv)
{
    struct store_batch *b = NULL;
    int rc = store_write_begin(s, &b);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = convert_txn(s, b->txn, cv);
    if (rc == KHO_OK && cv->done) {
        rc = store_format_put(s, b->txn);
    }
    if (rc != KHO_OK) {
        store_batch_fail(b, rc);
    }
    return store_write_commit(b);
}

int store_convert_v3(struct store *s)
{
    struct conv *cv = calloc(1, sizeof(*cv));
    uint8_t *buf = malloc(HIST_VALUE_BYTES_MAX);
    int rc = cv != NULL && buf != NULL
                 ? KHO_OK
                 : store_fail(s, KHO_ENOMEM, "out of memory");
    if (rc == KHO_OK) {
        cv->buf = buf;
    }
    /* Bounded: every step converts at least one version, and the walk
     * never comes back to one it passed (a moved version lands at or
     * behind where it was, and the walk goes on past that). */
    while (rc == KHO_OK && !cv->done) {
        rc = convert_step(s, cv);
    }
    if (rc == KHO_OK) {
        fprintf(stderr,
                "kho store: %s: converted store format %u to %u: of %llu "
                "history versions, dropped %llu that repeated their key's "
                "current record, moved %llu to a lower slot, left %llu "
                "damaged ones as they were\n",
                s->path, STORE_FORMAT_V3, STORE_FORMAT_VERSION,
                (unsigned long long)cv->seen, (unsigned long long)cv->dropped,
                (unsigned long long)cv->moved,
                (unsigned long long)cv->unchecked);
    }
    free(buf);
    free(cv);
    return rc;
}

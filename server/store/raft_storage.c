/*
 * raft_storage.c - raft.h's `struct raft_storage` over the store.
 *
 * Each callback opens a read transaction and ends it before returning:
 * a transaction left open between callbacks would pin old pages (the map
 * grows while an idle group holds its reader) and use one reader slot per
 * group. The raft thread reuses one reserved transaction (reset between
 * callbacks, so it pins nothing) and never competes for reader slots. The
 * entry data the core gets back is copied into the group's scratch buffer,
 * which the next callback on the group reuses - exactly the lifetime raft.h
 * promises the core. Snapshots carry no payload here: only their meta (a
 * store_snap_reader streams the bytes, store.h).
 */
#include "internal.h"

#include <string.h>

/* Gives back an oversized buffer, then makes room for n bytes. Called at
 * the start of a callback, when the last callback's data may go. */
static int scratch_reserve(struct store_group *g, size_t n)
{
    if (g->scratch_cap > STORE_SCRATCH_KEEP_BYTES && n < g->scratch_cap) {
        free(g->scratch);
        g->scratch = NULL;
        g->scratch_cap = 0;
    }
    if (n <= g->scratch_cap) {
        return KHO_OK;
    }
    uint8_t *p = realloc(g->scratch, n);
    if (p == NULL) {
        return store_fail(g->s, KHO_ENOMEM, "out of memory (%zu bytes)", n);
    }
    g->scratch = p;
    g->scratch_cap = n;
    return KHO_OK;
}

static int meta(struct store_group *g, MDB_txn *txn,
                struct raft_snapshot_meta *m)
{
    int rc = store_rec_get_snap_meta(g->s, txn, g->id, m);
    if (rc == KHO_ENOTFOUND) {
        return store_fail(g->s, KHO_ECORRUPT,
                          "group %llu lost its snapshot meta (deleted while "
                          "open?)",
                          (unsigned long long)g->id);
    }
    return rc;
}

/* The stored log's last index, checked against its snapshot: the log must
 * be empty or run from meta.index + 1. */
static int last_index(struct store_group *g, MDB_txn *txn,
                      const struct raft_snapshot_meta *m, uint64_t *out)
{
    uint64_t last = 0;
    bool found = false;
    int rc = store_rec_last_index(g->s, txn, g->id, &last, &found);
    if (rc != KHO_OK) {
        return rc;
    }
    if (!found) {
        *out = m->index;
        return KHO_OK;
    }
    if (last <= m->index) {
        return store_fail(g->s, KHO_ECORRUPT,
                          "group %llu: log ends at %llu, at or before its "
                          "snapshot %llu",
                          (unsigned long long)g->id, (unsigned long long)last,
                          (unsigned long long)m->index);
    }
    *out = last;
    return KHO_OK;
}

static int cb_snapshot_meta(void *ctx, struct raft_snapshot_meta *out)
{
    struct store_group *g = ctx;
    MDB_txn *txn = NULL;
    bool rs = false;
    int rc = store_rtxn_raft_begin(g->s, &txn, &rs);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = meta(g, txn, out);
    store_rtxn_raft_end(g->s, txn, rs);
    return rc;
}

static int cb_last_index(void *ctx, uint64_t *out)
{
    struct store_group *g = ctx;
    struct raft_snapshot_meta m;
    struct raft_entry first;
    MDB_txn *txn = NULL;
    bool rs = false;
    int rc = store_rtxn_raft_begin(g->s, &txn, &rs);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = meta(g, txn, &m);
    if (rc == KHO_OK) {
        rc = last_index(g, txn, &m, out);
    }
    /* A log that does not start right after its snapshot (restart with a
     * snapshot/log mismatch) must not be served. */
    if (rc == KHO_OK && *out > m.index) {
        rc = store_rec_get_entry(g->s, txn, g->id, m.index + 1, &first);
        if (rc == KHO_ENOTFOUND) {
            rc = store_fail(g->s, KHO_ECORRUPT,
                            "group %llu: log does not start right after its "
                            "snapshot at %llu",
                            (unsigned long long)g->id,
                            (unsigned long long)m.index);
        }
    }
    store_rtxn_raft_end(g->s, txn, rs);
    return rc;
}

static int out_of_range(struct store_group *g, const char *what, uint64_t lo,
                        uint64_t hi, const struct raft_snapshot_meta *m,
                        uint64_t last)
{
    return store_fail(g->s, KHO_EINVAL,
                      "group %llu: %s [%llu, %llu) outside the stored log "
                      "(snapshot %llu, last %llu)",
                      (unsigned long long)g->id, what, (unsigned long long)lo,
                      (unsigned long long)hi, (unsigned long long)m->index,
                      (unsigned long long)last);
}

static int term_in(struct store_group *g, MDB_txn *txn, uint64_t index,
                   uint64_t *out)
{
    struct raft_snapshot_meta m;
    struct raft_entry e;
    uint64_t last = 0;
    int rc = meta(g, txn, &m);
    if (rc != KHO_OK) {
        return rc;
    }
    if (index == m.index) {
        *out = m.term;
        return KHO_OK;
    }
    if (index < m.index) {
        return out_of_range(g, "term", index, index + 1, &m, m.index);
    }
    rc = store_rec_get_entry(g->s, txn, g->id, index, &e);
    if (rc == KHO_OK) {
        *out = e.term;
        return KHO_OK;
    }
    if (rc != KHO_ENOTFOUND) {
        return rc;
    }
    rc = last_index(g, txn, &m, &last);
    if (rc != KHO_OK) {
        return rc;
    }
    if (index > last) {
        return out_of_range(g, "term", index, index + 1, &m, last);
    }
    return store_fail(g->s, KHO_ECORRUPT,
                      "group %llu: entry %llu missing inside the log",
                      (unsigned long long)g->id, (unsigned long long)index);
}

static int cb_term(void *ctx, uint64_t index, uint64_t *out)
{
    struct store_group *g = ctx;
    MDB_txn *txn = NULL;
    bool rs = false;
    int rc = store_rtxn_raft_begin(g->s, &txn, &rs);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = term_in(g, txn, index, out);
    store_rtxn_raft_end(g->s, txn, rs);
    return rc;
}

/* Reads entries [lo, hi) into out (data still in the map), up to cap
 * entries and max_bytes of payload (at least one entry). */
static int read_entries(struct store_group *g, MDB_txn *txn, uint64_t lo,
                        uint64_t hi, size_t max_bytes, struct raft_entry *out,
                        size_t cap, size_t *n_out, size_t *bytes_out)
{
    MDB_cursor *c = NULL;
    uint8_t k0[LOG_KEY_BYTES];
    size_t n = 0, bytes = 0;
    store_log_key(k0, g->id, lo);
    MDB_val k = {.mv_size = sizeof(k0), .mv_data = k0};
    MDB_val v;
    int rc = mdb_cursor_open(txn, g->s->dbi_log, &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(g->s, rc, "opening a raft_log cursor");
    }
    int err = KHO_OK;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_KEY);
    while (rc == MDB_SUCCESS && n < cap && lo + n < hi) {
        uint64_t want = lo + n;
        if (k.mv_size != LOG_KEY_BYTES || get_be64(k.mv_data) != g->id ||
            get_be64((const uint8_t *)k.mv_data + 8) != want) {
            rc = MDB_NOTFOUND; /* a hole: reported below */
            break;
        }
        err = store_entry_decode(v.mv_data, v.mv_size, g->id, want, &out[n]);
        if (err != KHO_OK) {
            err = store_fail(g->s, KHO_ECORRUPT,
                             "raft_log group %llu index %llu: checksum "
                             "mismatch or malformed entry (%zu bytes); not "
                             "served",
                             (unsigned long long)g->id,
                             (unsigned long long)want, v.mv_size);
            break;
        }
        if (n > 0 && bytes + out[n].len > max_bytes) {
            break;
        }
        bytes += out[n].len;
        n++;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (err != KHO_OK) {
        return err;
    }
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        return store_mdb_err(g->s, rc, "reading raft_log");
    }
    if (n == 0 || (rc == MDB_NOTFOUND && n < cap && lo + n < hi)) {
        return store_fail(
            g->s, KHO_ECORRUPT, "group %llu: entry %llu missing inside the log",
            (unsigned long long)g->id, (unsigned long long)(lo + n));
    }
    *n_out = n;
    *bytes_out = bytes;
    return KHO_OK;
}

static int entries_in(struct store_group *g, MDB_txn *txn, uint64_t lo,
                      uint64_t hi, size_t max_bytes, struct raft_entry *out,
                      size_t cap, size_t *n_out)
{
    struct raft_snapshot_meta m;
    uint64_t last = 0;
    size_t n = 0, bytes = 0;
    int rc = meta(g, txn, &m);
    if (rc == KHO_OK) {
        rc = last_index(g, txn, &m, &last);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    if (lo <= m.index || lo >= hi || hi > last + 1 || cap == 0) {
        return out_of_range(g, "entries", lo, hi, &m, last);
    }
    rc = read_entries(g, txn, lo, hi, max_bytes, out, cap, &n, &bytes);
    if (rc == KHO_OK) {
        rc = scratch_reserve(g, bytes);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    /* The data still points into the map, valid only inside txn. */
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        if (out[i].len > 0) {
            memcpy(g->scratch + off, out[i].data, out[i].len);
            out[i].data = g->scratch + off;
            off += out[i].len;
        }
    }
    *n_out = n;
    return KHO_OK;
}

static int cb_entries(void *ctx, uint64_t lo, uint64_t hi, size_t max_bytes,
                      struct raft_entry *out, size_t cap, size_t *n_out)
{
    struct store_group *g = ctx;
    MDB_txn *txn = NULL;
    bool rs = false;
    int rc = store_rtxn_raft_begin(g->s, &txn, &rs);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = entries_in(g, txn, lo, hi, max_bytes, out, cap, n_out);
    store_rtxn_raft_end(g->s, txn, rs);
    return rc;
}

/* {applied index A, term of entry A, conf at A}: a snapshot taken now, as
 * a reader opened now would stream it (or at a later applied index). */
static int snapshot_in(struct store_group *g, MDB_txn *txn,
                       struct raft_snapshot *out)
{
    uint64_t data = 0;
    memset(out, 0, sizeof(*out));
    int rc = store_rec_applied_meta(g->s, txn, g->id, &out->meta, &data);
    if (rc == KHO_ENOTFOUND) {
        return store_fail(g->s, KHO_ECORRUPT,
                          "group %llu lost its snapshot meta (deleted while "
                          "open?)",
                          (unsigned long long)g->id);
    }
    return rc;
}

static int cb_snapshot(void *ctx, struct raft_snapshot *out)
{
    struct store_group *g = ctx;
    MDB_txn *txn = NULL;
    bool rs = false;
    int rc = store_rtxn_raft_begin(g->s, &txn, &rs);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = snapshot_in(g, txn, out);
    store_rtxn_raft_end(g->s, txn, rs);
    return rc;
}

struct raft_storage store_raft_storage(struct store_group *g)
{
    struct raft_storage st = {
        .ctx = g,
        .snapshot_meta = cb_snapshot_meta,
        .last_index = cb_last_index,
        .term = cb_term,
        .entries = cb_entries,
        .snapshot = cb_snapshot,
    };
    return st;
}

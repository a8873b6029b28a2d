/*
 * records.c - reading and writing the raft_log and raft_meta records (log
 * entries, hard state, snapshot meta, applied index, data id, CONF, the
 * session count) inside a caller's transaction, with their checksums
 * checked on every read.
 */
#include "internal.h"

#include <string.h>

static int get_meta(struct store *s, MDB_txn *txn, uint64_t group,
                    enum meta_tag tag, MDB_val *v)
{
    uint8_t k[META_KEY_BYTES];
    store_meta_key(k, group, tag);
    MDB_val kv = {.mv_size = sizeof(k), .mv_data = k};
    int rc = mdb_get(txn, s->dbi_meta, &kv, v);
    if (rc == MDB_NOTFOUND) {
        return KHO_ENOTFOUND;
    }
    return store_mdb_err(s, rc, "reading raft_meta");
}

static int corrupt_meta(struct store *s, uint64_t group, const char *what)
{
    return store_fail(s, KHO_ECORRUPT,
                      "raft_meta group %llu: %s fails its checksum or is "
                      "malformed; not used",
                      (unsigned long long)group, what);
}

int store_rec_get_hs(struct store *s, MDB_txn *txn, uint64_t group,
                     struct raft_hard_state *hs)
{
    MDB_val v;
    int rc = get_meta(s, txn, group, META_HS, &v);
    if (rc != KHO_OK) {
        return rc;
    }
    if (store_meta_hs_decode(v.mv_data, v.mv_size, group, hs) != KHO_OK) {
        return corrupt_meta(s, group, "the hard state");
    }
    return KHO_OK;
}

int store_rec_get_applied(struct store *s, MDB_txn *txn, uint64_t group,
                          uint64_t *applied)
{
    MDB_val v;
    int rc = get_meta(s, txn, group, META_APPLIED, &v);
    if (rc != KHO_OK) {
        return rc;
    }
    if (store_meta_u64_decode(v.mv_data, v.mv_size, group, META_APPLIED,
                              applied) != KHO_OK ||
        *applied > RAFT_INDEX_MAX) {
        return corrupt_meta(s, group, "the applied index");
    }
    return KHO_OK;
}

int store_rec_get_sessions(struct store *s, MDB_txn *txn, uint64_t data,
                           uint64_t *n)
{
    MDB_val v;
    *n = 0;
    int rc = get_meta(s, txn, data, META_SESSIONS, &v);
    if (rc == KHO_ENOTFOUND) {
        return KHO_OK;
    }
    if (rc != KHO_OK) {
        return rc;
    }
    if (store_meta_u64_decode(v.mv_data, v.mv_size, data, META_SESSIONS, n) !=
        KHO_OK) {
        return corrupt_meta(s, data, "the session count");
    }
    return KHO_OK;
}

int store_rec_get_data(struct store *s, MDB_txn *txn, uint64_t group,
                       uint64_t *data)
{
    MDB_val v;
    int rc = get_meta(s, txn, group, META_DATA, &v);
    if (rc == KHO_ENOTFOUND) {
        *data = group; /* restored groups, and stores made before tag 5 */
        return KHO_OK;
    }
    if (rc != KHO_OK) {
        return rc;
    }
    if (store_meta_u64_decode(v.mv_data, v.mv_size, group, META_DATA, data) !=
        KHO_OK) {
        return corrupt_meta(s, group, "the data id");
    }
    return KHO_OK;
}

int store_rec_get_conf(struct store *s, MDB_txn *txn, uint64_t group,
                       uint64_t *index, struct raft_conf *c)
{
    MDB_val v;
    int rc = get_meta(s, txn, group, META_CONF, &v);
    if (rc != KHO_OK) {
        return rc;
    }
    if (store_meta_conf_decode(v.mv_data, v.mv_size, group, index, c) !=
        KHO_OK) {
        return corrupt_meta(s, group, "the configuration at applied");
    }
    return KHO_OK;
}

int store_rec_get_snap_meta(struct store *s, MDB_txn *txn, uint64_t group,
                            struct raft_snapshot_meta *m)
{
    MDB_val v;
    int rc = get_meta(s, txn, group, META_SNAP, &v);
    if (rc != KHO_OK) {
        return rc;
    }
    if (store_meta_snap_decode(v.mv_data, v.mv_size, group, m) != KHO_OK) {
        return corrupt_meta(s, group, "the snapshot meta");
    }
    return KHO_OK;
}

int store_rec_get_entry(struct store *s, MDB_txn *txn, uint64_t group,
                        uint64_t index, struct raft_entry *e)
{
    uint8_t k[LOG_KEY_BYTES];
    store_log_key(k, group, index);
    MDB_val kv = {.mv_size = sizeof(k), .mv_data = k};
    MDB_val v;
    int rc = mdb_get(txn, s->dbi_log, &kv, &v);
    if (rc == MDB_NOTFOUND) {
        return KHO_ENOTFOUND;
    }
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "reading raft_log");
    }
    if (store_entry_decode(v.mv_data, v.mv_size, group, index, e) != KHO_OK) {
        return store_fail(s, KHO_ECORRUPT,
                          "raft_log group %llu index %llu: checksum mismatch "
                          "or malformed entry (%zu bytes); not served",
                          (unsigned long long)group, (unsigned long long)index,
                          v.mv_size);
    }
    return KHO_OK;
}

/* The term of the applied entry, and the configuration in force there. */
static int applied_term_conf(struct store *s, MDB_txn *txn, uint64_t group,
                             struct raft_snapshot_meta *m)
{
    struct raft_entry e;
    uint64_t conf_index = 0;
    struct raft_conf c;
    int rc = KHO_OK;
    if (m->index != 0) {
        rc = store_rec_get_entry(s, txn, group, m->index, &e);
    }
    if (rc == KHO_ENOTFOUND) {
        return store_fail(
            s, KHO_ECORRUPT, "group %llu: applied entry %llu is not in the log",
            (unsigned long long)group, (unsigned long long)m->index);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    m->term = m->index != 0 ? e.term : 0;
    rc = store_rec_get_conf(s, txn, group, &conf_index, &c);
    if (rc == KHO_ENOTFOUND) {
        return KHO_OK; /* the snapshot meta's conf, already in *m */
    }
    if (rc == KHO_OK && conf_index > m->index) {
        return corrupt_meta(s, group, "the configuration at applied");
    }
    if (rc == KHO_OK) {
        m->conf = c;
    }
    return rc;
}

int store_rec_applied_meta(struct store *s, MDB_txn *txn, uint64_t group,
                           struct raft_snapshot_meta *m, uint64_t *data)
{
    uint64_t applied = 0;
    int rc = store_rec_get_snap_meta(s, txn, group, m);
    if (rc == KHO_OK) {
        rc = store_rec_get_applied(s, txn, group, &applied);
    }
    if (rc == KHO_ENOTFOUND) {
        return store_fail(s, KHO_ENOTFOUND, "group %llu does not exist",
                          (unsigned long long)group);
    }
    if (rc == KHO_OK) {
        rc = store_rec_get_data(s, txn, group, data);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    if (applied < m->index) {
        return corrupt_meta(s, group, "the applied index");
    }
    if (applied == m->index) {
        /* Term and configuration are the snapshot meta's; a CONF record
         * at the same index says the same. */
        return KHO_OK;
    }
    m->index = applied;
    return applied_term_conf(s, txn, group, m);
}

int store_rec_group_data(struct store *s, MDB_txn *txn, uint64_t group,
                         uint64_t *applied, uint64_t *data)
{
    int rc = store_rec_get_applied(s, txn, group, applied);
    if (rc == KHO_ENOTFOUND) {
        return store_fail(s, KHO_ENOTFOUND, "group %llu does not exist",
                          (unsigned long long)group);
    }
    return rc == KHO_OK ? store_rec_get_data(s, txn, group, data) : rc;
}

int store_rec_last_index(struct store *s, MDB_txn *txn, uint64_t group,
                         uint64_t *last, bool *found)
{
    MDB_cursor *c = NULL;
    MDB_val k, v;
    uint8_t hi[GROUP_KEY_BYTES];
    *found = false;
    int rc = mdb_cursor_open(txn, s->dbi_log, &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening a raft_log cursor");
    }
    if (group == UINT64_MAX) {
        rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
    } else {
        /* The first key of the next group, then one step back. */
        put_be64(hi, group + 1);
        k = (MDB_val){.mv_size = sizeof(hi), .mv_data = hi};
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (rc == MDB_SUCCESS) {
            rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
        } else if (rc == MDB_NOTFOUND) {
            rc = mdb_cursor_get(c, &k, &v, MDB_LAST);
        }
    }
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND) {
        return KHO_OK;
    }
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "finding the last raft_log entry");
    }
    if (k.mv_size < GROUP_KEY_BYTES || get_be64(k.mv_data) != group) {
        return KHO_OK;
    }
    if (k.mv_size != LOG_KEY_BYTES) {
        return store_fail(s, KHO_ECORRUPT,
                          "raft_log group %llu: a key of %zu bytes",
                          (unsigned long long)group, k.mv_size);
    }
    *last = get_be64((const uint8_t *)k.mv_data + 8);
    *found = true;
    return KHO_OK;
}

static int put_meta(struct store *s, MDB_txn *txn, uint64_t group,
                    enum meta_tag tag, const uint8_t *val, size_t len)
{
    uint8_t k[META_KEY_BYTES];
    store_meta_key(k, group, tag);
    MDB_val kv = {.mv_size = sizeof(k), .mv_data = k};
    MDB_val v = {.mv_size = len, .mv_data = (void *)val};
    return store_mdb_err(s, mdb_put(txn, s->dbi_meta, &kv, &v, 0),
                         "writing raft_meta");
}

int store_rec_put_hs(struct store *s, MDB_txn *txn, uint64_t group,
                     const struct raft_hard_state *hs)
{
    uint8_t v[META_HS_BYTES];
    size_t n = store_meta_hs_encode(v, group, hs);
    return put_meta(s, txn, group, META_HS, v, n);
}

int store_rec_put_applied(struct store *s, MDB_txn *txn, uint64_t group,
                          uint64_t applied)
{
    uint8_t v[META_U64_BYTES];
    size_t n = store_meta_u64_encode(v, group, META_APPLIED, applied);
    return put_meta(s, txn, group, META_APPLIED, v, n);
}

int store_rec_put_sessions(struct store *s, MDB_txn *txn, uint64_t data,
                           uint64_t n)
{
    uint8_t v[META_U64_BYTES];
    size_t len = store_meta_u64_encode(v, data, META_SESSIONS, n);
    return put_meta(s, txn, data, META_SESSIONS, v, len);
}

int store_rec_put_data(struct store *s, MDB_txn *txn, uint64_t group,
                       uint64_t data)
{
    uint8_t v[META_U64_BYTES];
    size_t len = store_meta_u64_encode(v, group, META_DATA, data);
    return put_meta(s, txn, group, META_DATA, v, len);
}

int store_rec_put_conf(struct store *s, MDB_txn *txn, uint64_t group,
                       uint64_t index, const struct raft_conf *c)
{
    uint8_t v[META_CONF_BYTES_MAX];
    size_t n = store_meta_conf_encode(v, group, index, c);
    if (n == 0) {
        return store_fail(s, KHO_EINVAL,
                          "group %llu: configuration of %u members cannot "
                          "be stored",
                          (unsigned long long)group, c->n);
    }
    return put_meta(s, txn, group, META_CONF, v, n);
}

int store_rec_del_meta(struct store *s, MDB_txn *txn, uint64_t key,
                       enum meta_tag tag)
{
    uint8_t k[META_KEY_BYTES];
    store_meta_key(k, key, tag);
    MDB_val kv = {.mv_size = sizeof(k), .mv_data = k};
    int rc = mdb_del(txn, s->dbi_meta, &kv, NULL);
    return rc == MDB_NOTFOUND ? KHO_OK
                              : store_mdb_err(s, rc, "deleting from raft_meta");
}

int store_rec_put_snap_meta(struct store *s, MDB_txn *txn, uint64_t group,
                            const struct raft_snapshot_meta *m)
{
    uint8_t v[META_SNAP_BYTES_MAX];
    size_t n = store_meta_snap_encode(v, group, m);
    if (n == 0) {
        return store_fail(s, KHO_EINVAL,
                          "group %llu: configuration of %u members cannot "
                          "be stored",
                          (unsigned long long)group, m->conf.n);
    }
    return put_meta(s, txn, group, META_SNAP, v, n);
}

int store_rec_put_entry(struct store *s, MDB_txn *txn, uint64_t group,
                        const struct raft_entry *e)
{
    uint8_t k[LOG_KEY_BYTES];
    store_log_key(k, group, e->index);
    MDB_val kv = {.mv_size = sizeof(k), .mv_data = k};
    /* Reserve the value in the map and encode straight into it: a 64 MiB
     * entry is not copied twice. */
    MDB_val v = {.mv_size = ENTRY_HEADER_BYTES + (size_t)e->len};
    int rc = mdb_put(txn, s->dbi_log, &kv, &v, MDB_RESERVE);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "appending to raft_log");
    }
    store_entry_encode(v.mv_data, group, e);
    return KHO_OK;
}

int store_rec_del_range(struct store *s, MDB_txn *txn, MDB_dbi dbi,
                        const uint8_t *lo, size_t lo_len, const uint8_t *hi,
                        size_t hi_len)
{
    MDB_cursor *c = NULL;
    MDB_val k = {.mv_size = lo_len, .mv_data = (void *)lo};
    MDB_val v;
    MDB_val end = {.mv_size = hi_len, .mv_data = (void *)hi};
    int rc = mdb_cursor_open(txn, dbi, &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening a cursor");
    }
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == MDB_SUCCESS) {
        if (hi != NULL && mdb_cmp(txn, dbi, &k, &end) >= 0) {
            break;
        }
        rc = mdb_cursor_del(c, 0);
        if (rc == MDB_SUCCESS) {
            /* After a delete the cursor already sits on the next key;
             * MDB_NEXT returns it without stepping over it. */
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
    }
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND) {
        rc = MDB_SUCCESS;
    }
    return store_mdb_err(s, rc, "deleting a key range");
}

int store_rec_del_group(struct store *s, MDB_txn *txn, MDB_dbi dbi,
                        uint64_t group)
{
    uint8_t lo[GROUP_KEY_BYTES], hi[GROUP_KEY_BYTES];
    put_be64(lo, group);
    if (group == UINT64_MAX) {
        return store_rec_del_range(s, txn, dbi, lo, sizeof(lo), NULL, 0);
    }
    put_be64(hi, group + 1);
    return store_rec_del_range(s, txn, dbi, lo, sizeof(lo), hi, sizeof(hi));
}

/*
 * batch.c - the write path: one LMDB write transaction per raft-thread
 * loop holding every group's snapshot installs, log writes, hard states and
 * applies (group commit), plus group creation, deletion and compaction.
 * Installing (a swap of data ids) is in stage.c, garbage collection in
 * data.c.
 *
 * A batch follows LMDB's rule that a failed transaction stays failed: the
 * first error aborts the transaction at once (freeing the writer lock, so
 * readers and the next batch are not held up) and every later call on the
 * batch returns that error.
 */
#include "check.h"

#include <string.h>

int store_batch_fail(struct store_batch *b, int err)
{
    STORE_ASSERT(err != KHO_OK);
    if (b->err == KHO_OK) {
        b->err = err;
        if (b->txn != NULL) {
            mdb_txn_abort(b->txn);
            b->txn = NULL;
            store_writer_set(b->s, false);
        }
    }
    return b->err;
}

/* Every batch call's epilogue: a failure fails the batch. */
static int done(struct store_batch *b, int rc)
{
    return rc == KHO_OK ? KHO_OK : store_batch_fail(b, rc);
}

void store_writer_set(struct store *s, bool writing)
{
    pthread_mutex_lock(&s->mu);
    s->writing = writing;
    s->writer = pthread_self();
    pthread_mutex_unlock(&s->mu);
}

/* A second write transaction in the thread that holds one would wait on
 * LMDB's writer lock forever: a bug in the caller, caught here. */
static void assert_not_writing_here(struct store *s)
{
    pthread_mutex_lock(&s->mu);
    bool mine = s->writing && pthread_equal(s->writer, pthread_self());
    pthread_mutex_unlock(&s->mu);
    STORE_ASSERT(!mine);
}

int store_write_begin(struct store *s, struct store_batch **out)
{
    *out = NULL;
    int rc = store_check_fork(s);
    if (rc != KHO_OK) {
        return rc;
    }
    assert_not_writing_here(s);
    struct store_batch *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        return store_fail(s, KHO_ENOMEM, "out of memory");
    }
    b->s = s;
    rc = mdb_txn_begin(s->env, NULL, 0, &b->txn);
    if (rc != MDB_SUCCESS) {
        free(b);
        return store_mdb_err(s, rc, "beginning a write transaction");
    }
    store_writer_set(s, true);
    *out = b;
    return KHO_OK;
}

int store_write_commit(struct store_batch *b)
{
    int rc = b->err;
    if (rc == KHO_OK) {
        rc = store_mdb_err(b->s, mdb_txn_commit(b->txn),
                           "committing a write transaction");
        store_writer_set(b->s, false);
    }
    free(b);
    return rc;
}

void store_write_abort(struct store_batch *b)
{
    if (b == NULL) {
        return;
    }
    if (b->txn != NULL) {
        mdb_txn_abort(b->txn);
        store_writer_set(b->s, false);
    }
    free(b);
}

/* --- Groups -------------------------------------------------------------- */

static bool conf_ok(const struct raft_conf *c)
{
    uint8_t buf[RAFT_CONF_ENCODED_MAX];
    struct raft_conf back;
    size_t n = raft_conf_encode(c, buf, sizeof(buf));
    return n > 0 && raft_conf_decode(buf, n, &back) == KHO_OK;
}

static int group_meta(struct store_batch *b, uint64_t group,
                      struct raft_snapshot_meta *m)
{
    int rc = store_rec_get_snap_meta(b->s, b->txn, group, m);
    if (rc == KHO_ENOTFOUND) {
        return store_fail(b->s, KHO_ENOTFOUND, "group %llu does not exist",
                          (unsigned long long)group);
    }
    return rc;
}

static int group_applied(struct store_batch *b, uint64_t group,
                         uint64_t *applied)
{
    int rc = store_rec_get_applied(b->s, b->txn, group, applied);
    if (rc == KHO_ENOTFOUND) {
        return store_fail(b->s, KHO_ECORRUPT, "group %llu has no applied index",
                          (unsigned long long)group);
    }
    return rc;
}

/* A fresh data id, never the group id: whatever an earlier group of the
 * same id left as garbage stays apart from the new one's records. */
static int create(struct store_batch *b, uint64_t group,
                  const struct raft_conf *conf)
{
    struct store *s = b->s;
    struct raft_hard_state hs = {0};
    struct raft_snapshot_meta m = {.index = 0, .term = 0, .conf = *conf};
    uint64_t data = 0;
    int rc = store_data_alloc(s, b->txn, &data);
    if (rc == KHO_OK) {
        rc = store_rec_put_data(s, b->txn, group, data);
    }
    if (rc == KHO_OK) {
        rc = store_rec_put_snap_meta(s, b->txn, group, &m);
    }
    if (rc == KHO_OK) {
        rc = store_rec_put_conf(s, b->txn, group, 0, conf);
    }
    if (rc == KHO_OK) {
        rc = store_rec_put_hs(s, b->txn, group, &hs);
    }
    if (rc == KHO_OK) {
        rc = store_rec_put_applied(s, b->txn, group, 0);
    }
    return rc;
}

int store_batch_group_create(struct store_batch *b, uint64_t group_id,
                             const struct raft_conf *conf)
{
    struct raft_snapshot_meta m = {0};
    if (b->err != KHO_OK) {
        return b->err;
    }
    if (conf == NULL || !conf_ok(conf)) {
        return done(b, store_fail(b->s, KHO_EINVAL,
                                  "group %llu: invalid configuration",
                                  (unsigned long long)group_id));
    }
    int rc = store_rec_get_snap_meta(b->s, b->txn, group_id, &m);
    if (rc == KHO_OK) {
        rc = store_fail(b->s, KHO_ECONFLICT, "group %llu already exists",
                        (unsigned long long)group_id);
    } else if (rc == KHO_ENOTFOUND) {
        rc = create(b, group_id, conf);
    }
    return done(b, rc);
}

/* Deletes the snap payload a store of an older format could have left. */
static int del_payload(struct store *s, MDB_txn *txn, uint64_t group)
{
    uint8_t gk[GROUP_KEY_BYTES];
    put_be64(gk, group);
    MDB_val k = {.mv_size = sizeof(gk), .mv_data = gk};
    int rc = mdb_del(txn, s->dbi_snap, &k, NULL);
    return rc == MDB_NOTFOUND ? KHO_OK
                              : store_mdb_err(s, rc, "deleting from snap");
}

/* The raft records go at once (the log is bounded by compaction); the
 * state machine and every stage of the group become garbage. When the
 * data id is the group id, raft_meta's session count under it goes with
 * the raft records, which is fine: the collector finds it gone. */
static int group_delete(struct store_batch *b, uint64_t group)
{
    struct store *s = b->s;
    struct raft_snapshot_meta m;
    uint64_t data = 0;
    int rc = group_meta(b, group, &m);
    if (rc == KHO_OK) {
        rc = store_rec_get_data(s, b->txn, group, &data);
    }
    if (rc == KHO_OK) {
        rc = store_gc_add(s, b->txn, data);
    }
    if (rc == KHO_OK) {
        rc = store_stage_markers_drop(s, b->txn, group, true, 0);
    }
    if (rc == KHO_OK) {
        rc = store_rec_del_group(s, b->txn, s->dbi_meta, group);
    }
    if (rc == KHO_OK) {
        rc = store_rec_del_group(s, b->txn, s->dbi_log, group);
    }
    return rc == KHO_OK ? del_payload(s, b->txn, group) : rc;
}

int store_batch_group_delete(struct store_batch *b, uint64_t group_id)
{
    if (b->err != KHO_OK) {
        return b->err;
    }
    return done(b, group_delete(b, group_id));
}

/* --- Persisting a ready batch -------------------------------------------- */

static int check_entry(struct store *s, uint64_t group,
                       const struct raft_entry *e, uint64_t want)
{
    if (e->index != want || e->term == 0 || e->term > RAFT_TERM_MAX ||
        e->type > RAFT_ENTRY_CONF || e->len > STORE_ENTRY_BYTES_MAX ||
        (e->len > 0 && e->data == NULL)) {
        return store_fail(s, KHO_EINVAL,
                          "group %llu: malformed entry to persist (index "
                          "%llu, want %llu, term %llu, type %u, %u bytes)",
                          (unsigned long long)group,
                          (unsigned long long)e->index,
                          (unsigned long long)want, (unsigned long long)e->term,
                          e->type, e->len);
    }
    return KHO_OK;
}

/* raft.h step 2b: cut the stored log at entries[0].index, then append. */
static int append_entries(struct store_batch *b, uint64_t group,
                          const struct raft_ready *rd, uint64_t snap_index,
                          uint64_t applied)
{
    struct store *s = b->s;
    uint64_t first = rd->entries[0].index, last = snap_index;
    bool found = false;
    int rc = store_rec_last_index(s, b->txn, group, &last, &found);
    if (rc != KHO_OK) {
        return rc;
    }
    if (!found) {
        last = snap_index;
    }
    if (first <= snap_index || first > last + 1) {
        return store_fail(s, KHO_ECORRUPT,
                          "group %llu: entries from %llu do not fit the "
                          "stored log (snapshot %llu, last %llu)",
                          (unsigned long long)group, (unsigned long long)first,
                          (unsigned long long)snap_index,
                          (unsigned long long)last);
    }
    if (first <= applied) {
        return store_fail(s, KHO_EINVAL,
                          "group %llu: cutting the log at %llu would drop "
                          "applied entries (applied %llu)",
                          (unsigned long long)group, (unsigned long long)first,
                          (unsigned long long)applied);
    }
    for (size_t i = 0; i < rd->n_entries; i++) {
        rc = check_entry(s, group, &rd->entries[i], first + i);
        if (rc != KHO_OK) {
            return rc;
        }
    }
    if (first <= last) {
        uint8_t lo[LOG_KEY_BYTES], hi[GROUP_KEY_BYTES];
        store_log_key(lo, group, first);
        put_be64(hi, group + 1);
        rc = store_rec_del_range(s, b->txn, s->dbi_log, lo, sizeof(lo),
                                 group == UINT64_MAX ? NULL : hi, sizeof(hi));
    }
    for (size_t i = 0; rc == KHO_OK && i < rd->n_entries; i++) {
        rc = store_rec_put_entry(s, b->txn, group, &rd->entries[i]);
    }
    return rc;
}

int store_batch_persist_ready(struct store_batch *b, uint64_t group_id,
                              const struct raft_ready *rd)
{
    struct raft_snapshot_meta m;
    uint64_t applied = 0;
    if (b->err != KHO_OK) {
        return b->err;
    }
    int rc = group_meta(b, group_id, &m);
    if (rc == KHO_OK) {
        rc = group_applied(b, group_id, &applied);
    }
    if (rc == KHO_OK && rd->snapshot != NULL) {
        /* raft.h step 2a: a swap of data ids, never a copy of the state. */
        rc = store_stage_install(b, group_id, rd->snapshot, applied);
        m = rd->snapshot->meta;
        applied = m.index;
    }
    if (rc == KHO_OK && rd->n_entries > 0) {
        rc = append_entries(b, group_id, rd, m.index, applied);
    }
    if (rc == KHO_OK && rd->hs_changed) {
        if (rd->hs.term > RAFT_TERM_MAX || rd->hs.commit > RAFT_INDEX_MAX) {
            rc = store_fail(b->s, KHO_EINVAL,
                            "group %llu: hard state out of range",
                            (unsigned long long)group_id);
        } else {
            rc = store_rec_put_hs(b->s, b->txn, group_id, &rd->hs);
        }
    }
    return done(b, rc);
}

/* --- Applying committed entries ------------------------------------------ */

/* A CONF entry's configuration becomes the configuration at applied. */
static int apply_conf(struct store_batch *b, uint64_t group,
                      const struct raft_entry *e)
{
    struct raft_conf c;
    if (e->len == 0 || e->data == NULL ||
        raft_conf_decode(e->data, e->len, &c) != KHO_OK) {
        return store_fail(b->s, KHO_ECORRUPT,
                          "group %llu: configuration entry %llu does not "
                          "decode",
                          (unsigned long long)group,
                          (unsigned long long)e->index);
    }
    return store_rec_put_conf(b->s, b->txn, group, e->index, &c);
}

static int apply_entry(struct store_batch *b, uint64_t group,
                       const struct raft_entry *e,
                       struct store_apply_result *out)
{
    uint64_t applied = 0, data = 0;
    out->revision = e->index;
    int rc = group_applied(b, group, &applied);
    if (rc == KHO_OK) {
        rc = store_rec_get_data(b->s, b->txn, group, &data);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    if (e->index <= applied) {
        return KHO_OK; /* already in the state machine: never twice */
    }
    if (e->index != applied + 1) {
        return store_fail(b->s, KHO_EINVAL,
                          "group %llu: applying %llu after %llu leaves a "
                          "gap",
                          (unsigned long long)group,
                          (unsigned long long)e->index,
                          (unsigned long long)applied);
    }
    switch (e->type) {
    case RAFT_ENTRY_NORMAL:
        rc = store_apply_request(b->s, b->txn, group, data, e->index, e->data,
                                 e->len, out);
        break;
    case RAFT_ENTRY_CONF:
        rc = apply_conf(b, group, e);
        break;
    case RAFT_ENTRY_NOOP:
        break;
    default:
        return store_fail(
            b->s, KHO_EINVAL, "group %llu: entry %llu has unknown type %u",
            (unsigned long long)group, (unsigned long long)e->index, e->type);
    }
    if (rc == KHO_OK) {
        rc = store_rec_put_applied(b->s, b->txn, group, e->index);
    }
    return rc;
}

int store_batch_apply(struct store_batch *b, uint64_t group_id,
                      const struct raft_entry *e,
                      struct store_apply_result *out)
{
    struct store_apply_result local;
    if (out == NULL) {
        out = &local;
    }
    memset(out, 0, sizeof(*out));
    if (b->err != KHO_OK) {
        return b->err;
    }
    return done(b, apply_entry(b, group_id, e, out));
}

/* --- Compaction ---------------------------------------------------------- */

static int compact(struct store_batch *b, uint64_t group, uint64_t index,
                   const struct raft_conf *conf)
{
    struct store *s = b->s;
    struct raft_snapshot_meta m;
    struct raft_entry e;
    uint64_t applied = 0;
    int rc = group_meta(b, group, &m);
    if (rc == KHO_OK) {
        rc = group_applied(b, group, &applied);
    }
    if (rc != KHO_OK || index <= m.index) {
        return rc;
    }
    if (index != applied) {
        return store_fail(s, KHO_EINVAL,
                          "group %llu: compaction at %llu, but the state "
                          "machine is at %llu and cannot be rewound: "
                          "compact at the applied index",
                          (unsigned long long)group, (unsigned long long)index,
                          (unsigned long long)applied);
    }
    if (conf == NULL || !conf_ok(conf)) {
        return store_fail(s, KHO_EINVAL,
                          "group %llu: invalid configuration to compact",
                          (unsigned long long)group);
    }
    rc = store_rec_get_entry(s, b->txn, group, index, &e);
    if (rc == KHO_ENOTFOUND) {
        return store_fail(s, KHO_ECORRUPT,
                          "group %llu: applied entry %llu is not in the log",
                          (unsigned long long)group, (unsigned long long)index);
    }
    if (rc == KHO_OK) {
        m = (struct raft_snapshot_meta){
            .index = index, .term = e.term, .conf = *conf};
        rc = store_rec_put_snap_meta(s, b->txn, group, &m);
    }
    if (rc == KHO_OK) {
        rc = store_rec_put_conf(s, b->txn, group, index, conf);
    }
    if (rc == KHO_OK) {
        rc = del_payload(s, b->txn, group);
    }
    if (rc == KHO_OK) {
        uint8_t lo[LOG_KEY_BYTES], hi[LOG_KEY_BYTES];
        store_log_key(lo, group, 0);
        store_log_key(hi, group, index + 1);
        rc = store_rec_del_range(s, b->txn, s->dbi_log, lo, sizeof(lo), hi,
                                 sizeof(hi));
    }
    return rc;
}

int store_batch_compact(struct store_batch *b, uint64_t group_id,
                        uint64_t index, const struct raft_conf *conf)
{
    if (b->err != KHO_OK) {
        return b->err;
    }
    return done(b, compact(b, group_id, index, conf));
}

int store_compact(struct store *s, uint64_t group_id, uint64_t index,
                  const struct raft_conf *conf)
{
    struct store_batch *b = NULL;
    int rc = store_write_begin(s, &b);
    if (rc != KHO_OK) {
        return rc;
    }
    store_batch_compact(b, group_id, index, conf);
    return store_write_commit(b);
}

/*
 * stage.c - receiving a snapshot stream (store.h, "Snapshot streams"):
 * stages, their descriptors, installing one by swapping the group's data
 * id, and dropping one the core did not want.
 *
 * A stage writes under a fresh data id that nothing reads, in write
 * transactions of its own, each bounded by STORE_STAGE_TXN_BYTES: the raft
 * thread's batch waits for at most one of them, never for the whole
 * stream. Every transaction first checks that the stage's marker is still
 * there and receiving, so a stage whose group was deleted (its marker
 * turned to garbage) writes nothing more and can never race the collector.
 */
#include "stream.h"

#include <string.h>

static const uint8_t desc_magic[4] = {'K', 'S', 'T', 'G'};

struct store_stage {
    struct store *s;
    uint64_t group, index, term, total;
    uint64_t data; /* the staged data id */
    uint32_t crc;  /* of the whole stream, as the sender said */
    uint64_t pos;  /* bytes taken */
    int err;       /* first error: the stage stays failed */
    bool finished;
    struct stream_parser p;
    /* Records checked and resealed, not yet written: u8 db, u16 key_len,
     * u32 value_len, key, value, as in the stream. */
    uint8_t *pend;
    size_t pend_len, pend_cap;
};

/* --- Descriptors ------------------------------------------------------------
 */

struct desc {
    uint64_t data, group, index, term;
};

static void desc_encode(uint8_t d[STORE_STAGE_DESC_BYTES], const struct desc *x)
{
    memcpy(d, desc_magic, sizeof(desc_magic));
    put_le64(d + 8, x->data);
    put_le64(d + 16, x->group);
    put_le64(d + 24, x->index);
    put_le64(d + 32, x->term);
    put_le32(d + 4, store_crc32c(d + 8, STORE_STAGE_DESC_BYTES - 8));
}

static bool desc_decode(const uint8_t *d, size_t len, struct desc *x)
{
    if (d == NULL || len != STORE_STAGE_DESC_BYTES ||
        memcmp(d, desc_magic, sizeof(desc_magic)) != 0 ||
        get_le32(d + 4) != store_crc32c(d + 8, STORE_STAGE_DESC_BYTES - 8)) {
        return false;
    }
    *x = (struct desc){.data = get_le64(d + 8),
                       .group = get_le64(d + 16),
                       .index = get_le64(d + 24),
                       .term = get_le64(d + 32)};
    return true;
}

/* --- Transactions of a stage --------------------------------------------- */

/* The stage's marker, checked still receiving. */
static int marker_live(struct store_stage *st, MDB_txn *txn)
{
    struct stage_marker m;
    int rc = store_stage_marker_get(st->s, txn, st->data, &m);
    if (rc == KHO_ENOTFOUND || (rc == KHO_OK && (m.state != STAGE_RECEIVING ||
                                                 m.group != st->group))) {
        return store_fail(st->s, KHO_ENOTFOUND,
                          "group %llu: the stage at index %llu was cancelled "
                          "(the group was deleted)",
                          (unsigned long long)st->group,
                          (unsigned long long)st->index);
    }
    return rc;
}

static int put_pending(struct store_stage *st, MDB_txn *txn)
{
    struct store *s = st->s;
    uint8_t k[STORE_LMDB_KEY_BYTES_MAX];
    put_be64(k, st->data);
    for (size_t off = 0; off < st->pend_len;) {
        const uint8_t *p = st->pend + off;
        size_t klen = get_le16(p + 1), vlen = get_le32(p + 3);
        memcpy(k + GROUP_KEY_BYTES, p + STREAM_RECORD_HEADER_BYTES, klen);
        MDB_val kv = {.mv_size = GROUP_KEY_BYTES + klen, .mv_data = k};
        MDB_val v = {.mv_size = vlen,
                     .mv_data =
                         (void *)(p + STREAM_RECORD_HEADER_BYTES + klen)};
        int rc = mdb_put(txn, store_sm_dbi(s, (enum snap_db)p[0]), &kv, &v, 0);
        if (rc != MDB_SUCCESS) {
            return store_mdb_err(s, rc, "writing a staged record");
        }
        off += STREAM_RECORD_HEADER_BYTES + klen + vlen;
    }
    return KHO_OK;
}

/* Writes the pending records, and with `finish` the session count and the
 * finished marker, in one write transaction of the stage's own. */
static int flush(struct store_stage *st, bool finish)
{
    struct store_batch *b = NULL;
    int rc = store_write_begin(st->s, &b);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = marker_live(st, b->txn);
    if (rc == KHO_OK) {
        rc = put_pending(st, b->txn);
    }
    if (rc == KHO_OK && finish) {
        rc = store_rec_put_sessions(st->s, b->txn, st->data, st->p.n_sess);
    }
    if (rc == KHO_OK && finish) {
        struct stage_marker m = {.state = STAGE_FINISHED,
                                 .group = st->group,
                                 .index = st->index,
                                 .term = st->term};
        rc = store_stage_marker_put(st->s, b->txn, st->data, &m);
    }
    if (rc != KHO_OK) {
        store_batch_fail(b, rc);
    }
    rc = store_write_commit(b);
    if (rc == KHO_OK) {
        st->pend_len = 0;
    }
    return rc;
}

/* --- Taking records ------------------------------------------------------- */

static int corrupt(struct store_stage *st, const char *why)
{
    return store_fail(st->s, KHO_ECORRUPT,
                      "group %llu: the snapshot stream for index %llu is "
                      "corrupt at byte %llu: %s; nothing is installed",
                      (unsigned long long)st->group,
                      (unsigned long long)st->index,
                      (unsigned long long)st->p.pos, why);
}

/* The queue never holds more than STORE_STAGE_TXN_BYTES plus the record
 * that crossed it. */
#define PEND_BYTES_MAX (STORE_STAGE_TXN_BYTES + STREAM_RECORD_BYTES_MAX)

static int pend_reserve(struct store_stage *st, size_t n)
{
    size_t need = st->pend_len + n;
    if (need <= st->pend_cap) {
        return KHO_OK;
    }
    STORE_ASSERT(need <= PEND_BYTES_MAX);
    size_t cap = st->pend_cap > 0 ? st->pend_cap : (64u << 10);
    while (cap < need) {
        cap = cap * 2 < PEND_BYTES_MAX ? cap * 2 : PEND_BYTES_MAX;
    }
    uint8_t *p = realloc(st->pend, cap);
    if (p == NULL) {
        return store_fail(st->s, KHO_ENOMEM, "out of memory (%zu bytes)", cap);
    }
    st->pend = p;
    st->pend_cap = cap;
    return KHO_OK;
}

/* Checks one record under the sender's data id, reseals it for the
 * stage's, and queues it; writes the queue once it is big enough. */
static int take_record(void *ctx, const struct stream_rec *r)
{
    struct store_stage *st = ctx;
    uint8_t k[STORE_LMDB_KEY_BYTES_MAX];
    put_be64(k, st->p.data);
    memcpy(k + GROUP_KEY_BYTES, r->key, r->key_len);
    MDB_val kv = {.mv_size = GROUP_KEY_BYTES + r->key_len, .mv_data = k};
    MDB_val v = {.mv_size = r->value_len, .mv_data = (void *)r->value};
    if (store_sm_record_check(st->s, st->p.data, r->db, &kv, &v) != KHO_OK) {
        return corrupt(st, "a record fails its checksum or is malformed");
    }
    size_t n = STREAM_RECORD_HEADER_BYTES + r->key_len + r->value_len;
    int rc = pend_reserve(st, n);
    if (rc != KHO_OK) {
        return rc;
    }
    uint8_t *p = st->pend + st->pend_len;
    p[0] = (uint8_t)r->db;
    put_le16(p + 1, (uint16_t)r->key_len);
    put_le32(p + 3, (uint32_t)r->value_len);
    memcpy(p + STREAM_RECORD_HEADER_BYTES, r->key, r->key_len);
    uint8_t *val = p + STREAM_RECORD_HEADER_BYTES + r->key_len;
    memcpy(val, r->value, r->value_len);
    store_sm_reseal(r->db, st->data, r->key, r->key_len, val, r->value_len);
    st->pend_len += n;
    return st->pend_len >= STORE_STAGE_TXN_BYTES ? flush(st, false) : KHO_OK;
}

/* --- The API -------------------------------------------------------------- */

static int stage_fail(struct store_stage *st, int rc)
{
    if (st->err == KHO_OK) {
        st->err = rc;
    }
    return st->err;
}

static int check_begin(struct store *s, uint64_t group, uint64_t index,
                       uint64_t term, uint64_t total)
{
    if (index == 0 || index > RAFT_INDEX_MAX || term == 0 ||
        term > RAFT_TERM_MAX ||
        total < STREAM_HEADER_BYTES + STREAM_TRAILER_BYTES ||
        total > STORE_STREAM_BYTES_MAX) {
        return store_fail(s, KHO_EINVAL,
                          "group %llu: no stage for index %llu, term %llu, "
                          "%llu bytes",
                          (unsigned long long)group, (unsigned long long)index,
                          (unsigned long long)term, (unsigned long long)total);
    }
    return KHO_OK;
}

/* Counts a stage against STORE_STAGES_MAX (delta 1) or gives it back. */
static int stage_count(struct store *s, int delta)
{
    int rc = KHO_OK;
    pthread_mutex_lock(&s->mu);
    if (delta > 0 && s->n_stages + s->n_abandoned >= STORE_STAGES_MAX) {
        rc = KHO_EBUSY;
    } else {
        STORE_ASSERT(delta > 0 || s->n_stages > 0);
        s->n_stages = (uint32_t)((int)s->n_stages + delta);
    }
    pthread_mutex_unlock(&s->mu);
    if (rc != KHO_OK) {
        return store_fail(s, rc,
                          "%u snapshot stages are open or awaiting "
                          "collection",
                          STORE_STAGES_MAX);
    }
    return KHO_OK;
}

/* The marker, under a fresh data id, in a transaction of its own. */
static int stage_record(struct store_stage *st)
{
    struct store *s = st->s;
    struct store_batch *b = NULL;
    struct raft_snapshot_meta m;
    int rc = store_write_begin(s, &b);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = store_rec_get_snap_meta(s, b->txn, st->group, &m);
    if (rc == KHO_ENOTFOUND) {
        rc = store_fail(s, KHO_ENOTFOUND, "group %llu does not exist",
                        (unsigned long long)st->group);
    }
    if (rc == KHO_OK) {
        rc = store_data_alloc(s, b->txn, &st->data);
    }
    if (rc == KHO_OK) {
        struct stage_marker mk = {.state = STAGE_RECEIVING,
                                  .group = st->group,
                                  .index = st->index,
                                  .term = st->term};
        rc = store_stage_marker_put(s, b->txn, st->data, &mk);
    }
    if (rc != KHO_OK) {
        store_batch_fail(b, rc);
    }
    return store_write_commit(b);
}

int store_stage_begin(struct store *s, uint64_t group_id, uint64_t index,
                      uint64_t term, uint64_t total, uint32_t crc,
                      struct store_stage **out)
{
    *out = NULL;
    int rc = check_begin(s, group_id, index, term, total);
    if (rc == KHO_OK) {
        rc = stage_count(s, 1);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    struct store_stage *st = calloc(1, sizeof(*st));
    if (st == NULL) {
        stage_count(s, -1);
        return store_fail(s, KHO_ENOMEM, "out of memory");
    }
    *st = (struct store_stage){.s = s,
                               .group = group_id,
                               .index = index,
                               .term = term,
                               .total = total,
                               .crc = crc};
    stream_parser_init(&st->p, group_id, index, term, take_record, st);
    rc = stage_record(st);
    if (rc != KHO_OK) {
        st->data = 0; /* no marker: nothing to collect */
        st->finished = true;
        store_stage_close(st);
        return rc;
    }
    *out = st;
    return KHO_OK;
}

int store_stage_write(struct store_stage *st, const uint8_t *buf, size_t len)
{
    if (st->err != KHO_OK) {
        return st->err;
    }
    if (st->finished) {
        return store_fail(st->s, KHO_EINVAL, "the stage is finished");
    }
    if (len > st->total - st->pos) {
        return stage_fail(st, corrupt(st, "more bytes than the stream has"));
    }
    int rc = stream_parser_feed(&st->p, buf, len);
    st->pos += len;
    if (rc == KHO_ECORRUPT && st->p.why != NULL) {
        rc = corrupt(st, st->p.why);
    } else if (rc == KHO_ENOMEM) {
        rc = store_fail(st->s, KHO_ENOMEM, "out of memory");
    }
    return rc == KHO_OK ? KHO_OK : stage_fail(st, rc);
}

int store_stage_finish(struct store_stage *st,
                       uint8_t desc[STORE_STAGE_DESC_BYTES])
{
    if (st->err != KHO_OK) {
        return st->err;
    }
    if (st->finished) {
        return store_fail(st->s, KHO_EINVAL, "the stage is finished");
    }
    if (st->pos != st->total) {
        return stage_fail(st, corrupt(st, "the stream ends early"));
    }
    if (stream_parser_end(&st->p) != KHO_OK) {
        return stage_fail(st, corrupt(st, st->p.why));
    }
    if (stream_parser_crc(&st->p) != st->crc) {
        return stage_fail(st, corrupt(st, "the stream's crc is not the "
                                          "sender's"));
    }
    int rc = flush(st, true);
    if (rc != KHO_OK) {
        return stage_fail(st, rc);
    }
    st->finished = true;
    struct desc x = {.data = st->data,
                     .group = st->group,
                     .index = st->index,
                     .term = st->term};
    desc_encode(desc, &x);
    return KHO_OK;
}

void store_stage_close(struct store_stage *st)
{
    if (st == NULL) {
        return;
    }
    struct store *s = st->s;
    pthread_mutex_lock(&s->mu);
    if (!st->finished) {
        /* Counted against STORE_STAGES_MAX until collected, so there is
         * always room. */
        STORE_ASSERT(s->n_abandoned < STORE_STAGES_MAX);
        s->abandoned[s->n_abandoned++] = st->data;
        atomic_store(&s->gc_pending, true);
    }
    pthread_mutex_unlock(&s->mu);
    stage_count(s, -1);
    stream_parser_free(&st->p);
    free(st->pend);
    free(st);
}

/* --- In the raft thread's batch ------------------------------------------- */

static int bad_desc(struct store *s, uint64_t group, const char *why)
{
    return store_fail(s, KHO_ECORRUPT,
                      "group %llu: the snapshot to install %s; not "
                      "installed",
                      (unsigned long long)group, why);
}

/* The finished stage a descriptor names, checked against the meta. */
static int stage_of(struct store *s, MDB_txn *txn, uint64_t group,
                    const struct raft_snapshot *sn, struct desc *x)
{
    struct stage_marker m;
    if (!desc_decode(sn->data, sn->len, x)) {
        return bad_desc(s, group, "is not a stage descriptor");
    }
    if (x->group != group || x->index != sn->meta.index ||
        x->term != sn->meta.term) {
        return bad_desc(s, group, "names another group, index or term");
    }
    int rc = store_stage_marker_get(s, txn, x->data, &m);
    if (rc == KHO_ENOTFOUND) {
        return bad_desc(s, group, "names no stage (dropped or collected)");
    }
    if (rc != KHO_OK) {
        return rc;
    }
    if (m.state != STAGE_FINISHED || m.group != group || m.index != x->index ||
        m.term != x->term) {
        return bad_desc(s, group, "names an unfinished or another stage");
    }
    return KHO_OK;
}

static bool conf_ok(const struct raft_conf *c)
{
    uint8_t buf[RAFT_CONF_ENCODED_MAX];
    struct raft_conf back;
    size_t n = raft_conf_encode(c, buf, sizeof(buf));
    return n > 0 && raft_conf_decode(buf, n, &back) == KHO_OK;
}

static int check_meta(struct store *s, uint64_t group,
                      const struct raft_snapshot_meta *m, uint64_t applied)
{
    if (m->index == 0 || m->index > RAFT_INDEX_MAX || m->term == 0 ||
        m->term > RAFT_TERM_MAX || !conf_ok(&m->conf)) {
        return store_fail(s, KHO_EINVAL,
                          "group %llu: malformed snapshot meta (index %llu, "
                          "term %llu)",
                          (unsigned long long)group,
                          (unsigned long long)m->index,
                          (unsigned long long)m->term);
    }
    if (m->index < applied) {
        return store_fail(s, KHO_EINVAL,
                          "group %llu: snapshot at %llu would undo applied "
                          "index %llu",
                          (unsigned long long)group,
                          (unsigned long long)m->index,
                          (unsigned long long)applied);
    }
    return KHO_OK;
}

/* Everything of the swap but the checks: O(stored log + markers). */
static int swap(struct store *s, MDB_txn *txn, uint64_t group,
                const struct raft_snapshot_meta *m, uint64_t staged)
{
    uint64_t old = 0;
    int rc = store_rec_get_data(s, txn, group, &old);
    if (rc == KHO_OK) {
        rc = store_rec_put_data(s, txn, group, staged);
    }
    if (rc == KHO_OK) {
        rc = store_gc_add(s, txn, old);
    }
    if (rc == KHO_OK) {
        rc = store_stage_marker_del(s, txn, staged);
    }
    if (rc == KHO_OK) {
        rc = store_stage_markers_drop(s, txn, group, false, 0);
    }
    if (rc == KHO_OK) {
        rc = store_rec_put_snap_meta(s, txn, group, m);
    }
    if (rc == KHO_OK) {
        rc = store_rec_put_conf(s, txn, group, m->index, &m->conf);
    }
    if (rc == KHO_OK) {
        rc = store_rec_put_applied(s, txn, group, m->index);
    }
    if (rc == KHO_OK) {
        rc = store_rec_del_group(s, txn, s->dbi_log, group);
    }
    return rc;
}

int store_stage_install(struct store_batch *b, uint64_t group,
                        const struct raft_snapshot *sn, uint64_t applied)
{
    struct desc x;
    int rc = check_meta(b->s, group, &sn->meta, applied);
    if (rc == KHO_OK) {
        rc = stage_of(b->s, b->txn, group, sn, &x);
    }
    return rc == KHO_OK ? swap(b->s, b->txn, group, &sn->meta, x.data) : rc;
}

int store_batch_stage_drop(struct store_batch *b, const uint8_t *desc,
                           size_t len)
{
    struct desc x;
    struct stage_marker m;
    if (b->err != KHO_OK) {
        return b->err;
    }
    if (!desc_decode(desc, len, &x)) {
        return KHO_OK;
    }
    int rc = store_stage_marker_get(b->s, b->txn, x.data, &m);
    if (rc == KHO_ENOTFOUND || (rc == KHO_OK && m.state != STAGE_FINISHED)) {
        return KHO_OK;
    }
    if (rc == KHO_OK) {
        rc = store_stage_marker_del(b->s, b->txn, x.data);
    }
    if (rc == KHO_OK) {
        rc = store_gc_add(b->s, b->txn, x.data);
    }
    return rc == KHO_OK ? KHO_OK : store_batch_fail(b, rc);
}

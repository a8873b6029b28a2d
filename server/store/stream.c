/*
 * stream.c - the snapshot stream (store.h top, "Snapshot stream"): the
 * reader that produces it from one LMDB read transaction, and the
 * incremental parser that takes it back in pieces of any size.
 *
 * The reader never holds a record in memory: it keeps a cursor on the
 * current record, whose key and value stay valid in the map for as long as
 * its read transaction lives, and copies from there. Its size and CRC are
 * known before the first byte leaves because the first pass (which also
 * checks every record) walks the same transaction the bytes come from.
 *
 * The parser treats its input as untrusted - it comes from a peer or a
 * file - and checks every length before it reads.
 */
#include "stream.h"

#include <string.h>

static const uint8_t stream_magic[8] = {'K', 'H', 'O', 'S',
                                        'N', 'A', 'P', STREAM_VERSION};

_Static_assert(STREAM_HEADER_BYTES == sizeof(stream_magic) + 32u,
               "the header is magic, group, index, term and data id");

static void header_encode(uint8_t h[STREAM_HEADER_BYTES], uint64_t group,
                          uint64_t index, uint64_t term, uint64_t data)
{
    memcpy(h, stream_magic, sizeof(stream_magic));
    put_le64(h + 8, group);
    put_le64(h + 16, index);
    put_le64(h + 24, term);
    put_le64(h + 32, data);
}

static void record_header(uint8_t h[STREAM_RECORD_HEADER_BYTES], uint8_t db,
                          size_t key_len, size_t value_len)
{
    h[0] = db;
    put_le16(h + 1, (uint16_t)key_len);
    put_le32(h + 3, (uint32_t)value_len);
}

/* === The reader ========================================================== */

enum reader_phase {
    R_HEADER,
    R_RECORDS,
    R_TRAILER,
    R_END,
};

struct store_snap_reader {
    struct store *s;
    MDB_txn *txn;
    bool own_txn;
    MDB_cursor *cur; /* on the current record's database, or NULL */
    uint64_t group, data;
    uint64_t total;
    uint8_t header[STREAM_HEADER_BYTES];
    uint8_t trailer[STREAM_TRAILER_BYTES];
    /* Position: bytes produced so far, and where they leave off. */
    uint64_t pos;
    enum reader_phase phase;
    size_t db_i;  /* R_RECORDS: which database */
    MDB_val k, v; /* ... its current record */
    uint8_t
        rhead[STREAM_RECORD_HEADER_BYTES]; /* ... and that record's header */
    size_t off;                            /* bytes of the piece produced */
};

/* --- First pass: size, crc, checks --------------------------------------- */

struct sizing {
    struct store *s;
    uint64_t group, data;
    uint64_t bytes, count;
    uint32_t crc; /* running */
};

static int size_cb(void *ctx, enum snap_db db, const MDB_val *k,
                   const MDB_val *v)
{
    struct sizing *z = ctx;
    int rc = store_sm_verify(z->s, z->group, z->data, db, k, v);
    if (rc != KHO_OK) {
        return rc;
    }
    uint8_t h[STREAM_RECORD_HEADER_BYTES];
    size_t klen = k->mv_size - GROUP_KEY_BYTES;
    record_header(h, (uint8_t)db, klen, v->mv_size);
    z->crc = store_crc32c_update(z->crc, h, sizeof(h));
    z->crc = store_crc32c_update(
        z->crc, (const uint8_t *)k->mv_data + GROUP_KEY_BYTES, klen);
    z->crc = store_crc32c_update(z->crc, v->mv_data, v->mv_size);
    z->bytes += sizeof(h) + klen + v->mv_size;
    z->count++;
    return KHO_OK;
}

/* Walks the records once: *total and the whole stream's *crc, with the
 * trailer filled in. */
static int first_pass(struct store_snap_reader *r, uint64_t *total,
                      uint32_t *crc)
{
    struct sizing z = {.s = r->s,
                       .group = r->group,
                       .data = r->data,
                       .bytes = STREAM_HEADER_BYTES + STREAM_TRAILER_BYTES,
                       .crc =
                           store_crc32c_update(store_crc32c_init(), r->header,
                                               STREAM_HEADER_BYTES)};
    int rc = store_sm_walk(r->s, r->txn, r->data, size_cb, &z);
    if (rc != KHO_OK) {
        return rc;
    }
    r->trailer[0] = 0;
    put_le64(r->trailer + 1, z.count);
    z.crc = store_crc32c_update(z.crc, r->trailer, 9);
    put_le32(r->trailer + 9, store_crc32c_final(z.crc));
    z.crc = store_crc32c_update(z.crc, r->trailer + 9, 4);
    *total = z.bytes;
    *crc = store_crc32c_final(z.crc);
    return KHO_OK;
}

/* --- Producing bytes ------------------------------------------------------ */

static void reader_rewind(struct store_snap_reader *r)
{
    if (r->cur != NULL) {
        mdb_cursor_close(r->cur);
        r->cur = NULL;
    }
    r->pos = 0;
    r->phase = R_HEADER;
    r->db_i = 0;
    r->off = 0;
}

/* Moves to the first record of database db_i onwards, or to the trailer. */
static int seek_db(struct store_snap_reader *r)
{
    uint8_t lo[GROUP_KEY_BYTES];
    put_be64(lo, r->data);
    for (; r->db_i < SNAP_DB_COUNT; r->db_i++) {
        if (r->cur != NULL) {
            mdb_cursor_close(r->cur);
            r->cur = NULL;
        }
        MDB_dbi dbi = store_sm_dbi(r->s, store_sm_dbs[r->db_i]);
        int rc = mdb_cursor_open(r->txn, dbi, &r->cur);
        if (rc != MDB_SUCCESS) {
            r->cur = NULL;
            return store_mdb_err(r->s, rc, "opening a cursor");
        }
        r->k = (MDB_val){.mv_size = sizeof(lo), .mv_data = lo};
        rc = mdb_cursor_get(r->cur, &r->k, &r->v, MDB_SET_RANGE);
        if (rc == MDB_SUCCESS && store_in_group(&r->k, r->data)) {
            r->phase = R_RECORDS;
            record_header(r->rhead, (uint8_t)store_sm_dbs[r->db_i],
                          r->k.mv_size - GROUP_KEY_BYTES, r->v.mv_size);
            return KHO_OK;
        }
        if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
            return store_mdb_err(r->s, rc, "reading a snapshot");
        }
    }
    r->phase = R_TRAILER;
    return KHO_OK;
}

/* Moves past the current record. */
static int next_record(struct store_snap_reader *r)
{
    r->off = 0;
    int rc = mdb_cursor_get(r->cur, &r->k, &r->v, MDB_NEXT);
    if (rc == MDB_SUCCESS && store_in_group(&r->k, r->data)) {
        record_header(r->rhead, (uint8_t)store_sm_dbs[r->db_i],
                      r->k.mv_size - GROUP_KEY_BYTES, r->v.mv_size);
        return KHO_OK;
    }
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        return store_mdb_err(r->s, rc, "reading a snapshot");
    }
    r->db_i++;
    return seek_db(r);
}

/* The bytes of the current piece (header, one record, trailer) in at most
 * three runs. */
static size_t piece(const struct store_snap_reader *r, const uint8_t *run[3],
                    size_t len[3])
{
    switch (r->phase) {
    case R_HEADER:
        run[0] = r->header;
        len[0] = STREAM_HEADER_BYTES;
        return 1;
    case R_RECORDS:
        run[0] = r->rhead;
        len[0] = STREAM_RECORD_HEADER_BYTES;
        run[1] = (const uint8_t *)r->k.mv_data + GROUP_KEY_BYTES;
        len[1] = r->k.mv_size - GROUP_KEY_BYTES;
        run[2] = r->v.mv_data;
        len[2] = r->v.mv_size;
        return 3;
    case R_TRAILER:
        run[0] = r->trailer;
        len[0] = STREAM_TRAILER_BYTES;
        return 1;
    default:
        return 0;
    }
}

/* Copies (out != NULL) or skips up to `want` bytes of the current piece
 * from r->off; returns how many. */
static size_t take_piece(struct store_snap_reader *r, uint8_t *out, size_t want,
                         bool *piece_done)
{
    const uint8_t *run[3];
    size_t len[3], at = 0, done = 0;
    size_t n = piece(r, run, len);
    for (size_t i = 0; i < n && done < want; i++) {
        if (r->off >= at + len[i]) {
            at += len[i];
            continue;
        }
        size_t from = r->off - at;
        size_t c = len[i] - from < want - done ? len[i] - from : want - done;
        if (out != NULL) {
            memcpy(out + done, run[i] + from, c);
        }
        done += c;
        r->off += c;
        at += len[i];
    }
    size_t size = 0;
    for (size_t i = 0; i < n; i++) {
        size += len[i];
    }
    *piece_done = r->off == size;
    return done;
}

/* Produces (out != NULL) or skips `want` bytes from r->pos on. */
static int produce(struct store_snap_reader *r, uint8_t *out, size_t want)
{
    size_t done = 0;
    while (done < want && r->phase != R_END) {
        bool piece_done = false;
        size_t c = take_piece(r, out != NULL ? out + done : NULL, want - done,
                              &piece_done);
        done += c;
        r->pos += c;
        if (!piece_done) {
            continue;
        }
        int rc = KHO_OK;
        r->off = 0;
        if (r->phase == R_HEADER) {
            rc = seek_db(r);
        } else if (r->phase == R_RECORDS) {
            rc = next_record(r);
        } else {
            r->phase = R_END;
        }
        if (rc != KHO_OK) {
            reader_rewind(r); /* a later read starts over */
            return rc;
        }
    }
    STORE_ASSERT(done == want); /* the sizes were counted in this txn */
    return KHO_OK;
}

int store_snap_reader_read(struct store_snap_reader *r, uint64_t offset,
                           uint8_t *buf, size_t cap, size_t *n)
{
    *n = 0;
    if (offset >= r->total || cap == 0) {
        return KHO_OK;
    }
    uint64_t left = r->total - offset;
    size_t want = left < cap ? (size_t)left : cap;
    if (offset < r->pos) {
        reader_rewind(r);
    }
    int rc = KHO_OK;
    while (rc == KHO_OK && r->pos < offset) {
        uint64_t gap = offset - r->pos;
        rc = produce(r, NULL, gap < SIZE_MAX ? (size_t)gap : SIZE_MAX);
    }
    if (rc == KHO_OK) {
        rc = produce(r, buf, want);
    }
    if (rc == KHO_OK) {
        *n = want;
    }
    return rc;
}

/* --- Opening and closing ------------------------------------------------- */

static int reader_init(struct store_snap_reader *r,
                       struct raft_snapshot_meta *meta, uint64_t *total,
                       uint32_t *crc)
{
    int rc = store_rec_applied_meta(r->s, r->txn, r->group, meta, &r->data);
    if (rc != KHO_OK) {
        return rc;
    }
    if (meta->index == 0) {
        return store_fail(r->s, KHO_EINVAL,
                          "group %llu has applied nothing yet: no snapshot "
                          "to stream",
                          (unsigned long long)r->group);
    }
    header_encode(r->header, r->group, meta->index, meta->term, r->data);
    rc = first_pass(r, total, crc);
    r->total = *total;
    reader_rewind(r);
    return rc;
}

static void reader_count(struct store *s, int delta)
{
    pthread_mutex_lock(&s->mu);
    STORE_ASSERT(delta > 0 || s->n_readers > 0);
    s->n_readers = (uint32_t)((int)s->n_readers + delta);
    pthread_mutex_unlock(&s->mu);
}

static int reader_new(struct store *s, MDB_txn *txn, bool own_txn,
                      uint64_t group, struct store_snap_reader **out,
                      struct raft_snapshot_meta *meta, uint64_t *total,
                      uint32_t *crc)
{
    struct store_snap_reader *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        if (own_txn) {
            store_rtxn_end(s, txn);
        }
        return store_fail(s, KHO_ENOMEM, "out of memory");
    }
    *r = (struct store_snap_reader){
        .s = s, .txn = txn, .own_txn = own_txn, .group = group};
    reader_count(s, 1);
    int rc = reader_init(r, meta, total, crc);
    if (rc != KHO_OK) {
        store_snap_reader_close(r);
        return rc;
    }
    *out = r;
    return KHO_OK;
}

int stream_reader_open_txn(struct store *s, MDB_txn *txn, uint64_t group,
                           struct store_snap_reader **out,
                           struct raft_snapshot_meta *meta, uint64_t *total,
                           uint32_t *crc)
{
    *out = NULL;
    return reader_new(s, txn, false, group, out, meta, total, crc);
}

int store_snap_reader_open(struct store *s, uint64_t group_id,
                           struct store_snap_reader **out,
                           struct raft_snapshot_meta *meta, uint64_t *total,
                           uint32_t *crc)
{
    MDB_txn *txn = NULL;
    *out = NULL;
    int rc = store_rtxn_begin(s, &txn);
    if (rc != KHO_OK) {
        return rc;
    }
    return reader_new(s, txn, true, group_id, out, meta, total, crc);
}

void store_snap_reader_close(struct store_snap_reader *r)
{
    if (r == NULL) {
        return;
    }
    if (r->cur != NULL) {
        mdb_cursor_close(r->cur);
    }
    if (r->own_txn) {
        store_rtxn_end(r->s, r->txn);
    }
    reader_count(r->s, -1);
    free(r);
}

/* === The parser ========================================================== */

/* What the next `need` bytes are. */
enum parser_state {
    P_HEADER,
    P_TAG,   /* a record's db byte, or 0: the trailer */
    P_RHEAD, /* the rest of a record header */
    P_BODY,  /* key and value */
    P_COUNT, /* the trailer's record count */
    P_CRC,   /* the trailer's crc */
    P_DONE,
};

void stream_parser_init(struct stream_parser *p, uint64_t group, uint64_t index,
                        uint64_t term, stream_rec_fn fn, void *ctx)
{
    memset(p, 0, sizeof(*p));
    p->group = group;
    p->index = index;
    p->term = term;
    p->fn = fn;
    p->ctx = ctx;
    p->state = P_HEADER;
    p->need = STREAM_HEADER_BYTES;
    p->crc = store_crc32c_init();
}

void stream_parser_free(struct stream_parser *p)
{
    free(p->rec);
    p->rec = NULL;
    p->rec_cap = 0;
}

uint32_t stream_parser_crc(const struct stream_parser *p)
{
    return store_crc32c_final(p->crc);
}

static int bad(struct stream_parser *p, const char *why)
{
    p->why = why;
    p->failed = true;
    p->state = P_DONE;
    p->need = 0;
    return KHO_ECORRUPT;
}

static void expect(struct stream_parser *p, int state, size_t need)
{
    p->state = state;
    p->need = need;
    p->have = 0;
}

static int on_header(struct stream_parser *p, const uint8_t *h)
{
    const size_t at = sizeof(stream_magic) - 1; /* the version byte */
    if (memcmp(h, stream_magic, at) != 0) {
        return bad(p, "not a snapshot stream");
    }
    if (h[at] != STREAM_VERSION && !(h[at] == STREAM_VERSION_V3 && p->v3_ok)) {
        return bad(p, "a snapshot stream of another version (made by another "
                      "kho release?)");
    }
    p->version = h[at];
    if (get_le64(h + 8) != p->group || get_le64(h + 16) != p->index ||
        get_le64(h + 24) != p->term) {
        return bad(p, "the stream is for another group, index or term");
    }
    p->data = get_le64(h + 32);
    p->header_done = true;
    expect(p, P_TAG, 1);
    return KHO_OK;
}

static int on_tag(struct stream_parser *p, uint8_t tag)
{
    if (tag == 0) {
        expect(p, P_COUNT, 8);
        return KHO_OK;
    }
    if (tag > SNAP_DB_LRU) {
        return bad(p, "a record of an unknown database");
    }
    p->db = tag;
    expect(p, P_RHEAD, STREAM_RECORD_HEADER_BYTES - 1);
    return KHO_OK;
}

static int on_rhead(struct stream_parser *p, const uint8_t *h)
{
    p->key_len = get_le16(h);
    p->value_len = get_le32(h + 2);
    if (!store_sm_shape_ok(p->db, p->key_len, p->value_len)) {
        return bad(p, "a record breaks the size limits of its database");
    }
    expect(p, P_BODY, p->key_len + p->value_len);
    return KHO_OK;
}

/* LMDB's default order: memcmp, then the shorter first. */
static int key_order(const uint8_t *a, size_t alen, const uint8_t *b,
                     size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = memcmp(a, b, n);
    if (c != 0) {
        return c;
    }
    return alen < blen ? -1 : alen > blen;
}

/* Databases in stream order, keys strictly increasing inside one: so no
 * key comes twice and the sessions can be counted. */
static int on_body(struct stream_parser *p, const uint8_t *body)
{
    const uint8_t *key = body;
    if (p->count > 0 &&
        (p->db < p->prev_db ||
         (p->db == p->prev_db &&
          key_order(p->prev_key, p->prev_len, key, p->key_len) >= 0))) {
        return bad(p, "records out of order");
    }
    p->prev_db = p->db;
    memcpy(p->prev_key, key, p->key_len);
    p->prev_len = p->key_len;
    p->count++;
    p->n_sess += p->db == SNAP_DB_SESS;
    p->n_lru += p->db == SNAP_DB_LRU;
    expect(p, P_TAG, 1);
    if (p->fn == NULL) {
        return KHO_OK;
    }
    struct stream_rec r = {.db = (enum snap_db)p->prev_db,
                           .key = key,
                           .key_len = p->prev_len,
                           .value = body + p->prev_len,
                           .value_len = p->value_len};
    return p->fn(p->ctx, &r);
}

static int on_count(struct stream_parser *p, const uint8_t *c)
{
    if (get_le64(c) != p->count) {
        return bad(p, "the trailer's record count is wrong");
    }
    p->body_crc = store_crc32c_final(p->crc);
    expect(p, P_CRC, 4);
    return KHO_OK;
}

static int step(struct stream_parser *p, const uint8_t *got)
{
    switch (p->state) {
    case P_HEADER:
        return on_header(p, got);
    case P_TAG:
        return on_tag(p, got[0]);
    case P_RHEAD:
        return on_rhead(p, got);
    case P_BODY:
        return on_body(p, got);
    case P_COUNT:
        return on_count(p, got);
    default:
        STORE_ASSERT(p->state == P_CRC);
        if (get_le32(got) != p->body_crc) {
            return bad(p, "the stream fails its checksum");
        }
        expect(p, P_DONE, 0);
        return KHO_OK;
    }
}

static int reserve(struct stream_parser *p, size_t n)
{
    if (n <= p->rec_cap) {
        return KHO_OK;
    }
    uint8_t *b = realloc(p->rec, n);
    if (b == NULL) {
        return KHO_ENOMEM;
    }
    p->rec = b;
    p->rec_cap = n;
    return KHO_OK;
}

int stream_parser_feed(struct stream_parser *p, const uint8_t *b, size_t n)
{
    while (n > 0) {
        if (p->failed) {
            return KHO_ECORRUPT;
        }
        if (p->state == P_DONE) {
            return bad(p, "bytes follow the trailer");
        }
        size_t take = p->need - p->have < n ? p->need - p->have : n;
        const uint8_t *got = NULL;
        p->crc = store_crc32c_update(p->crc, b, take);
        if (p->state == P_BODY && p->have == 0 && take == p->need) {
            got = b; /* whole in this piece: no copy */
        } else {
            uint8_t *dst = p->small;
            if (p->state == P_BODY) {
                if (reserve(p, p->need) != KHO_OK) {
                    p->failed = true;
                    return KHO_ENOMEM;
                }
                dst = p->rec;
            }
            memcpy(dst + p->have, b, take);
            got = p->have + take == p->need ? dst : NULL;
        }
        p->have += take;
        p->pos += take;
        b += take;
        n -= take;
        if (got != NULL) {
            int rc = step(p, got);
            if (rc != KHO_OK) {
                p->failed = true;
                return rc;
            }
        }
    }
    return KHO_OK;
}

int stream_parser_end(struct stream_parser *p)
{
    if (p->failed) {
        return bad(p, p->why != NULL ? p->why : "the stream was not taken");
    }
    if (p->state != P_DONE) {
        return bad(p, "the stream is truncated");
    }
    if (p->n_sess != p->n_lru) {
        return bad(p, "sessions and their idle index disagree");
    }
    return KHO_OK;
}

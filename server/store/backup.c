/*
 * backup.c - backup files and restores (store.h, "Backups").
 *
 * A backup is every chosen group's snapshot payload (the format snapshot.c
 * writes and installs) taken from one read transaction, cut into frames of
 * at most STORE_BACKUP_CHUNK_BYTES with a checksum each, and sealed by an
 * END frame holding the checksum of the whole file. Nothing is built in
 * memory on the way out: records stream from the map to the file through
 * one chunk buffer. A restore reads one group's payload at a time into
 * memory (a payload is at most STORE_SNAP_BYTES_MAX, as for any snapshot a
 * peer sends) and installs it with snapshot.c, which checks it again.
 */
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

static const uint8_t backup_magic[8] = {'K', 'H', 'O', 'B', 'A', 'C', 'K', 1};
/* The snapshot payload's magic (snapshot.c); a payload that does not start
 * with it is refused here, and store_snap_check() checks it again. */
static const uint8_t snap_magic[8] = {'K', 'H', 'O', 'S', 'N', 'A', 'P', 2};

enum frame_type {
    FRAME_GROUP = 1,
    FRAME_DATA = 2,
    FRAME_END = 3,
};

#define GROUP_BODY_BYTES 32u
#define END_BODY_BYTES 16u
#define RESTORE_MARK_BYTES 24u

_Static_assert(GROUP_BODY_BYTES <= STORE_BACKUP_CHUNK_BYTES &&
                   END_BODY_BYTES <= STORE_BACKUP_CHUNK_BYTES,
               "every frame body fits one chunk");

static uint32_t crc_of(uint32_t crc, const void *p, size_t n)
{
    return store_crc32c_update(crc, p, n);
}

static uint32_t crc_once(const void *p, size_t n)
{
    return store_crc32c_final(crc_of(store_crc32c_init(), p, n));
}

uint32_t store_backup_crc(const void *p, size_t len)
{
    return crc_once(p, len);
}

/* --- Writing ----------------------------------------------------------------
 */

struct bw {
    struct store *s;
    int fd;
    uint64_t bytes;    /* written to the file so far */
    uint32_t file_crc; /* running, over those bytes */
    uint8_t *chunk;    /* DATA being filled */
    size_t used;
    uint32_t pay_crc; /* running, over the current payload */
    store_backup_progress_cb cb;
    void *ctx;
};

static int errno_err(int e)
{
    switch (e) {
    case ENOSPC:
    case EDQUOT:
        return KHO_ENOSPC;
    case EACCES:
    case EPERM:
    case EROFS:
        return KHO_EDENIED;
    default:
        return KHO_EIO;
    }
}

static int bw_raw(struct bw *w, const void *p, size_t n)
{
    const uint8_t *b = p;
    w->file_crc = crc_of(w->file_crc, p, n);
    while (n > 0) {
        ssize_t k = write(w->fd, b, n);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            int e = k < 0 ? errno : EIO;
            return store_fail(w->s, errno_err(e), "writing the backup: %s",
                              strerror(e));
        }
        b += k;
        n -= (size_t)k;
        w->bytes += (uint64_t)k;
    }
    return KHO_OK;
}

static int bw_frame(struct bw *w, enum frame_type type, const uint8_t *body,
                    size_t len)
{
    uint8_t h[STORE_BACKUP_FRAME_HEADER_BYTES];
    put_le32(h, (uint32_t)type);
    put_le32(h + 4, (uint32_t)len);
    uint32_t c = crc_of(store_crc32c_init(), h, 8);
    put_le32(h + 8, store_crc32c_final(crc_of(c, body, len)));
    int rc = bw_raw(w, h, sizeof(h));
    if (rc == KHO_OK) {
        rc = bw_raw(w, body, len);
    }
    if (rc == KHO_OK && w->cb != NULL && !w->cb(w->ctx, w->bytes)) {
        rc = store_fail(w->s, KHO_EUNAVAILABLE, "the backup was cancelled");
    }
    return rc;
}

static int bw_flush(struct bw *w)
{
    if (w->used == 0) {
        return KHO_OK;
    }
    int rc = bw_frame(w, FRAME_DATA, w->chunk, w->used);
    w->used = 0;
    return rc;
}

/* Payload bytes, through the chunk buffer. */
static int bw_data(struct bw *w, const void *p, size_t n)
{
    const uint8_t *b = p;
    w->pay_crc = crc_of(w->pay_crc, p, n);
    while (n > 0) {
        size_t take = STORE_BACKUP_CHUNK_BYTES - w->used;
        take = take < n ? take : n;
        memcpy(w->chunk + w->used, b, take);
        w->used += take;
        b += take;
        n -= take;
        if (w->used == STORE_BACKUP_CHUNK_BYTES) {
            int rc = bw_flush(w);
            if (rc != KHO_OK) {
                return rc;
            }
        }
    }
    return KHO_OK;
}

struct sizing {
    struct store *s;
    uint64_t group;
    uint64_t bytes, count;
};

/* Checks a stored record fully before it may leave in a backup (as
 * snapshot.c does before it ships one). */
static int verify_cb(void *ctx, enum snap_db db, const MDB_val *k,
                     const MDB_val *v)
{
    struct sizing *z = ctx;
    if (store_sm_record_check(z->s, z->group, db, k, v) != KHO_OK) {
        return store_fail(z->s, KHO_ECORRUPT,
                          "group %llu: a stored record (database %d) fails "
                          "its checksum or is malformed; no backup is made",
                          (unsigned long long)z->group, (int)db);
    }
    z->bytes +=
        SNAP_RECORD_HEADER_BYTES + (k->mv_size - GROUP_KEY_BYTES) + v->mv_size;
    z->count++;
    if (z->bytes > STORE_SNAP_BYTES_MAX) {
        return store_fail(z->s, KHO_ETOOLARGE,
                          "group %llu: the state machine exceeds the %llu-"
                          "byte snapshot limit",
                          (unsigned long long)z->group,
                          (unsigned long long)STORE_SNAP_BYTES_MAX);
    }
    return KHO_OK;
}

static int emit_cb(void *ctx, enum snap_db db, const MDB_val *k,
                   const MDB_val *v)
{
    struct bw *w = ctx;
    uint8_t h[SNAP_RECORD_HEADER_BYTES];
    size_t klen = k->mv_size - GROUP_KEY_BYTES;
    h[0] = (uint8_t)db;
    put_le16(h + 1, (uint16_t)klen);
    put_le32(h + 3, (uint32_t)v->mv_size);
    int rc = bw_data(w, h, sizeof(h));
    if (rc == KHO_OK) {
        rc = bw_data(w, (const uint8_t *)k->mv_data + GROUP_KEY_BYTES, klen);
    }
    if (rc == KHO_OK) {
        rc = bw_data(w, v->mv_data, v->mv_size);
    }
    return rc;
}

/* The group's applied index and the term of the entry there. */
static int applied_term(struct store *s, MDB_txn *txn, uint64_t group,
                        uint64_t *index, uint64_t *term)
{
    struct raft_snapshot_meta m;
    struct raft_entry e;
    int rc = store_rec_get_snap_meta(s, txn, group, &m);
    if (rc == KHO_OK) {
        rc = store_rec_get_applied(s, txn, group, index);
    }
    if (rc == KHO_ENOTFOUND) {
        return store_fail(s, KHO_ENOTFOUND, "group %llu does not exist here",
                          (unsigned long long)group);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    if (*index == 0) {
        return store_fail(s, KHO_EINVAL,
                          "group %llu has applied nothing yet; try again "
                          "once it has a leader",
                          (unsigned long long)group);
    }
    if (*index == m.index) {
        *term = m.term;
        return KHO_OK;
    }
    rc = store_rec_get_entry(s, txn, group, *index, &e);
    if (rc == KHO_ENOTFOUND) {
        return store_fail(
            s, KHO_ECORRUPT, "group %llu: applied entry %llu is not in the log",
            (unsigned long long)group, (unsigned long long)*index);
    }
    *term = e.term;
    return rc;
}

static int write_group(struct bw *w, MDB_txn *txn, uint64_t group,
                       struct store_backup_group *out)
{
    struct sizing z = {.s = w->s,
                       .group = group,
                       .bytes = SNAP_HEADER_BYTES + SNAP_TRAILER_BYTES};
    uint64_t index = 0, term = 0;
    int rc = applied_term(w->s, txn, group, &index, &term);
    if (rc == KHO_OK) {
        rc = store_sm_walk(w->s, txn, group, verify_cb, &z);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    uint8_t g[GROUP_BODY_BYTES];
    put_le64(g, group);
    put_le64(g + 8, index);
    put_le64(g + 16, term);
    put_le64(g + 24, z.bytes);
    rc = bw_frame(w, FRAME_GROUP, g, sizeof(g));
    *out = (struct store_backup_group){.group_id = group,
                                       .index = index,
                                       .term = term,
                                       .payload_bytes = z.bytes,
                                       .offset = w->bytes};
    uint8_t h[SNAP_HEADER_BYTES];
    memcpy(h, snap_magic, sizeof(snap_magic));
    put_le64(h + 8, group);
    put_le64(h + 16, index);
    put_le64(h + 24, z.count);
    w->pay_crc = store_crc32c_init();
    if (rc == KHO_OK) {
        rc = bw_data(w, h, sizeof(h));
    }
    if (rc == KHO_OK) {
        /* The same transaction: the walk sees what the sizing saw. */
        rc = store_sm_walk(w->s, txn, group, emit_cb, w);
    }
    uint8_t t[SNAP_TRAILER_BYTES];
    put_le32(t, store_crc32c_final(w->pay_crc));
    if (rc == KHO_OK) {
        rc = bw_data(w, t, sizeof(t));
    }
    return rc == KHO_OK ? bw_flush(w) : rc;
}

static int check_groups(struct store *s, const uint64_t *groups, size_t n)
{
    if (n == 0 || n > STORE_BACKUP_GROUPS_MAX) {
        return store_fail(s, KHO_EINVAL,
                          "a backup holds 1 to %u groups, not "
                          "%zu",
                          STORE_BACKUP_GROUPS_MAX, n);
    }
    for (size_t i = 1; i < n; i++) {
        if (groups[i] <= groups[i - 1]) {
            return store_fail(s, KHO_EINVAL,
                              "backup groups must come in increasing id "
                              "order");
        }
    }
    return KHO_OK;
}

static int write_all(struct bw *w, MDB_txn *txn, const uint64_t *groups,
                     size_t n, struct store_backup_info *info)
{
    uint8_t h[STORE_BACKUP_HEADER_BYTES];
    memcpy(h, backup_magic, sizeof(backup_magic));
    put_le32(h + 8, STORE_BACKUP_VERSION);
    put_le32(h + 12, STORE_BACKUP_CHUNK_BYTES);
    put_le64(h + 16, info->backup_id);
    put_le64(h + 24, info->node_id);
    put_le64(h + 32, info->created_ms);
    put_le32(h + 40, (uint32_t)n);
    put_le32(h + 44, crc_once(h, 44));
    int rc = bw_raw(w, h, sizeof(h));
    for (size_t i = 0; rc == KHO_OK && i < n; i++) {
        rc = write_group(w, txn, groups[i], &info->groups[i]);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    uint8_t e[END_BODY_BYTES];
    info->file_crc = store_crc32c_final(w->file_crc);
    put_le64(e, w->bytes);
    put_le32(e + 8, (uint32_t)n);
    put_le32(e + 12, info->file_crc);
    rc = bw_frame(w, FRAME_END, e, sizeof(e));
    info->n_groups = (uint32_t)n;
    info->file_bytes = w->bytes;
    return rc;
}

int store_backup_write(struct store *s, const uint64_t *groups, size_t n,
                       uint64_t backup_id, uint64_t node_id,
                       uint64_t created_ms, int fd, store_backup_progress_cb cb,
                       void *ctx, struct store_backup_info *info)
{
    struct store_backup_info *mine = calloc(1, sizeof(*mine));
    struct bw w = {.s = s,
                   .fd = fd,
                   .file_crc = store_crc32c_init(),
                   .chunk = malloc(STORE_BACKUP_CHUNK_BYTES),
                   .cb = cb,
                   .ctx = ctx};
    MDB_txn *txn = NULL;
    int rc = check_groups(s, groups, n);
    if (rc == KHO_OK && (mine == NULL || w.chunk == NULL)) {
        rc = store_fail(s, KHO_ENOMEM, "out of memory");
    }
    if (rc == KHO_OK) {
        rc = store_rtxn_begin(s, &txn);
    }
    if (rc == KHO_OK) {
        *mine = (struct store_backup_info){.backup_id = backup_id,
                                           .node_id = node_id,
                                           .created_ms = created_ms};
        rc = write_all(&w, txn, groups, n, mine);
        mdb_txn_abort(txn);
    }
    if (rc == KHO_OK && info != NULL) {
        *info = *mine;
    }
    free(w.chunk);
    free(mine);
    return rc;
}

int store_backup_tmpfile(struct store *s, int *fd)
{
    *fd = open(s->path, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (*fd >= 0) {
        return KHO_OK;
    }
    /* A file system without O_TMPFILE: a named file, unlinked at once. */
    size_t n = strlen(s->path) + sizeof("/backup.XXXXXX");
    char *p = malloc(n);
    if (p == NULL) {
        return store_fail(s, KHO_ENOMEM, "out of memory");
    }
    snprintf(p, n, "%s/backup.XXXXXX", s->path);
    *fd = mkostemp(p, O_CLOEXEC);
    int e = errno;
    if (*fd >= 0) {
        unlink(p);
    }
    free(p);
    if (*fd < 0) {
        return store_fail(s, errno_err(e),
                          "cannot create a temporary file in %s: %s", s->path,
                          strerror(e));
    }
    return KHO_OK;
}

/* --- Reading ----------------------------------------------------------------
 */

struct br {
    int fd;
    uint64_t off;      /* bytes read so far */
    uint32_t file_crc; /* running, over them */
    char *err;
    size_t err_len;
};

__attribute__((format(printf, 3, 4))) static int br_fail(struct br *r, int rc,
                                                         const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, r->err_len, fmt, ap);
    va_end(ap);
    return rc;
}

/* Reads exactly n bytes; *eof (may be NULL) tells a clean end of file
 * before the first byte from a short read. */
static int br_read(struct br *r, void *p, size_t n, bool *eof)
{
    uint8_t *b = p;
    size_t got = 0;
    while (got < n) {
        ssize_t k = read(r->fd, b + got, n - got);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k < 0) {
            return br_fail(r, KHO_EIO, "reading at offset %llu: %s",
                           (unsigned long long)(r->off + got), strerror(errno));
        }
        if (k == 0) {
            if (eof != NULL && got == 0) {
                *eof = true;
                return KHO_OK;
            }
            return br_fail(r, KHO_ECORRUPT,
                           "truncated: the file ends at offset %llu, inside "
                           "a frame",
                           (unsigned long long)(r->off + got));
        }
        got += (size_t)k;
    }
    r->file_crc = crc_of(r->file_crc, p, n);
    r->off += n;
    return KHO_OK;
}

/* Reads one frame into body (STORE_BACKUP_CHUNK_BYTES) and checks it. */
static int br_frame(struct br *r, uint32_t *type, uint8_t *body, size_t *len)
{
    uint8_t h[STORE_BACKUP_FRAME_HEADER_BYTES];
    uint64_t at = r->off;
    int rc = br_read(r, h, sizeof(h), NULL);
    if (rc != KHO_OK) {
        return rc;
    }
    *type = get_le32(h);
    *len = get_le32(h + 4);
    if (*type < FRAME_GROUP || *type > FRAME_END ||
        *len > STORE_BACKUP_CHUNK_BYTES) {
        return br_fail(r, KHO_ECORRUPT,
                       "a malformed frame at offset %llu (type %u, %zu "
                       "bytes)",
                       (unsigned long long)at, *type, *len);
    }
    rc = br_read(r, body, *len, NULL);
    if (rc != KHO_OK) {
        return rc;
    }
    uint32_t c = crc_of(store_crc32c_init(), h, 8);
    if (store_crc32c_final(crc_of(c, body, *len)) != get_le32(h + 8)) {
        return br_fail(r, KHO_ECORRUPT,
                       "the frame at offset %llu fails its checksum",
                       (unsigned long long)at);
    }
    return KHO_OK;
}

static int br_header(struct br *r, struct store_backup_info *info)
{
    uint8_t h[STORE_BACKUP_HEADER_BYTES];
    bool eof = false;
    int rc = br_read(r, h, sizeof(h), &eof);
    if (rc != KHO_OK || eof) {
        return eof ? br_fail(r, KHO_ECORRUPT, "the file is empty") : rc;
    }
    if (memcmp(h, backup_magic, sizeof(backup_magic)) != 0) {
        return br_fail(r, KHO_ECORRUPT, "not a kho backup file");
    }
    if (get_le32(h + 44) != crc_once(h, 44)) {
        return br_fail(r, KHO_ECORRUPT, "the header fails its checksum");
    }
    if (get_le32(h + 8) != STORE_BACKUP_VERSION) {
        return br_fail(r, KHO_EINVAL,
                       "backup format version %u; this build reads %u",
                       get_le32(h + 8), STORE_BACKUP_VERSION);
    }
    uint32_t chunk = get_le32(h + 12);
    info->n_groups = get_le32(h + 40);
    if (chunk == 0 || chunk > STORE_BACKUP_CHUNK_BYTES || info->n_groups == 0 ||
        info->n_groups > STORE_BACKUP_GROUPS_MAX) {
        return br_fail(r, KHO_ETOOLARGE,
                       "the header names %u groups in chunks of %u bytes; "
                       "this build takes 1 to %u groups in chunks of at most "
                       "%u",
                       info->n_groups, chunk, STORE_BACKUP_GROUPS_MAX,
                       STORE_BACKUP_CHUNK_BYTES);
    }
    info->backup_id = get_le64(h + 16);
    info->node_id = get_le64(h + 24);
    info->created_ms = get_le64(h + 32);
    return KHO_OK;
}

/* A group's payload as its DATA frames bring it: the header and trailer
 * kept, the checksum computed over everything before the trailer. */
struct pay {
    uint64_t size, pos;
    uint8_t head[SNAP_HEADER_BYTES];
    uint8_t tail[SNAP_TRAILER_BYTES];
    uint32_t crc;
};

static void pay_feed(struct pay *p, const uint8_t *b, size_t n)
{
    uint64_t body_end = p->size - SNAP_TRAILER_BYTES;
    for (size_t i = 0; i < n && p->pos + i < SNAP_HEADER_BYTES; i++) {
        p->head[p->pos + i] = b[i];
    }
    size_t in_body = p->pos >= body_end      ? 0
                     : body_end - p->pos < n ? (size_t)(body_end - p->pos)
                                             : n;
    p->crc = crc_of(p->crc, b, in_body);
    for (size_t i = in_body; i < n; i++) {
        p->tail[p->pos + i - body_end] = b[i];
    }
    p->pos += n;
}

static int br_group(struct br *r, uint8_t *body, uint64_t prev, bool first,
                    struct store_backup_group *g)
{
    uint32_t type = 0;
    size_t len = 0;
    uint64_t at = r->off;
    int rc = br_frame(r, &type, body, &len);
    if (rc != KHO_OK) {
        return rc;
    }
    if (type != FRAME_GROUP || len != GROUP_BODY_BYTES) {
        return br_fail(r, KHO_ECORRUPT,
                       "offset %llu: a group was expected (frame type %u)",
                       (unsigned long long)at, type);
    }
    *g = (struct store_backup_group){.group_id = get_le64(body),
                                     .index = get_le64(body + 8),
                                     .term = get_le64(body + 16),
                                     .payload_bytes = get_le64(body + 24),
                                     .offset = r->off};
    if ((!first && g->group_id <= prev) || g->index == 0 ||
        g->index > RAFT_INDEX_MAX || g->term == 0 || g->term > RAFT_TERM_MAX ||
        g->payload_bytes < SNAP_HEADER_BYTES + SNAP_TRAILER_BYTES ||
        g->payload_bytes > STORE_SNAP_BYTES_MAX) {
        return br_fail(r, KHO_ECORRUPT,
                       "offset %llu: a malformed group record (group %llu, "
                       "index %llu, %llu bytes)",
                       (unsigned long long)at, (unsigned long long)g->group_id,
                       (unsigned long long)g->index,
                       (unsigned long long)g->payload_bytes);
    }
    struct pay p = {.size = g->payload_bytes, .crc = store_crc32c_init()};
    while (rc == KHO_OK && p.pos < p.size) {
        at = r->off;
        rc = br_frame(r, &type, body, &len);
        if (rc == KHO_OK &&
            (type != FRAME_DATA || len == 0 || len > p.size - p.pos)) {
            rc = br_fail(r, KHO_ECORRUPT,
                         "offset %llu: group %llu's data does not add up",
                         (unsigned long long)at,
                         (unsigned long long)g->group_id);
        }
        if (rc == KHO_OK) {
            pay_feed(&p, body, len);
        }
    }
    if (rc == KHO_OK && (memcmp(p.head, snap_magic, sizeof(snap_magic)) != 0 ||
                         get_le64(p.head + 8) != g->group_id ||
                         get_le64(p.head + 16) != g->index ||
                         get_le32(p.tail) != store_crc32c_final(p.crc))) {
        rc = br_fail(r, KHO_ECORRUPT,
                     "group %llu: its state machine fails its checksum or "
                     "is not the group's",
                     (unsigned long long)g->group_id);
    }
    return rc;
}

static int br_end(struct br *r, uint8_t *body, struct store_backup_info *info)
{
    uint32_t type = 0, crc = store_crc32c_final(r->file_crc);
    size_t len = 0;
    uint64_t at = r->off;
    int rc = br_frame(r, &type, body, &len);
    if (rc != KHO_OK) {
        return rc;
    }
    if (type != FRAME_END || len != END_BODY_BYTES || get_le64(body) != at ||
        get_le32(body + 8) != info->n_groups) {
        return br_fail(r, KHO_ECORRUPT,
                       "offset %llu: the end record is missing or wrong",
                       (unsigned long long)at);
    }
    if (get_le32(body + 12) != crc) {
        return br_fail(r, KHO_ECORRUPT, "the file fails its checksum");
    }
    uint8_t extra;
    bool eof = false;
    rc = br_read(r, &extra, 1, &eof);
    if (rc == KHO_OK && !eof) {
        return br_fail(r, KHO_ECORRUPT, "bytes follow the end record");
    }
    info->file_crc = crc;
    info->file_bytes = r->off;
    return rc;
}

int store_backup_check(const char *path, struct store_backup_info *info,
                       char *err, size_t err_len)
{
    struct br r = {.fd = -1,
                   .file_crc = store_crc32c_init(),
                   .err = err,
                   .err_len = err_len};
    uint8_t *body = malloc(STORE_BACKUP_CHUNK_BYTES);
    memset(info, 0, sizeof(*info));
    if (body == NULL) {
        return br_fail(&r, KHO_ENOMEM, "out of memory");
    }
    r.fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc = r.fd >= 0 ? KHO_OK
                       : br_fail(&r, errno == ENOENT ? KHO_ENOTFOUND : KHO_EIO,
                                 "cannot open: %s", strerror(errno));
    if (rc == KHO_OK) {
        rc = br_header(&r, info);
    }
    for (uint32_t i = 0; rc == KHO_OK && i < info->n_groups; i++) {
        uint64_t prev = i > 0 ? info->groups[i - 1].group_id : 0;
        rc = br_group(&r, body, prev, i == 0, &info->groups[i]);
    }
    if (rc == KHO_OK) {
        rc = br_end(&r, body, info);
    }
    if (r.fd >= 0) {
        close(r.fd);
    }
    free(body);
    return rc;
}

/* --- Loading one group's payload -------------------------------------------
 */

static const struct store_backup_group *
find_group(const struct store_backup_info *info, uint64_t group)
{
    for (uint32_t i = 0; i < info->n_groups; i++) {
        if (info->groups[i].group_id == group) {
            return &info->groups[i];
        }
    }
    return NULL;
}

/* Reads group g's payload (re-checking its frames: the file may have
 * changed since it was checked) into a malloc'd buffer. */
static int load_payload(struct store *s, const char *path,
                        const struct store_backup_group *g, uint8_t **out)
{
    char err[STORE_ERRMSG_BYTES] = "";
    struct br r = {.fd = open(path, O_RDONLY | O_CLOEXEC),
                   .file_crc = store_crc32c_init(),
                   .err = err,
                   .err_len = sizeof(err)};
    uint8_t *body = malloc(STORE_BACKUP_CHUNK_BYTES);
    uint8_t *buf = malloc((size_t)g->payload_bytes);
    int rc = body != NULL && buf != NULL
                 ? KHO_OK
                 : br_fail(&r, KHO_ENOMEM, "out of memory");
    if (rc == KHO_OK && r.fd < 0) {
        rc = br_fail(&r, KHO_EIO, "cannot open: %s", strerror(errno));
    }
    if (rc == KHO_OK && lseek(r.fd, (off_t)g->offset, SEEK_SET) < 0) {
        rc = br_fail(&r, KHO_EIO, "cannot seek: %s", strerror(errno));
    }
    r.off = g->offset;
    uint64_t pos = 0;
    while (rc == KHO_OK && pos < g->payload_bytes) {
        uint32_t type = 0;
        size_t len = 0;
        rc = br_frame(&r, &type, body, &len);
        if (rc == KHO_OK &&
            (type != FRAME_DATA || len == 0 || len > g->payload_bytes - pos)) {
            rc = br_fail(&r, KHO_ECORRUPT, "group %llu's data changed",
                         (unsigned long long)g->group_id);
        }
        if (rc == KHO_OK) {
            memcpy(buf + pos, body, len);
            pos += len;
        }
    }
    if (r.fd >= 0) {
        close(r.fd);
    }
    free(body);
    if (rc != KHO_OK) {
        free(buf);
        return store_fail(s, rc, "backup %s: %s", path, err);
    }
    *out = buf;
    return KHO_OK;
}

/* --- Records of a payload --------------------------------------------------
 */

struct prec {
    uint8_t db;
    const uint8_t *key; /* without the group */
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
    const uint8_t *raw; /* the whole record in the payload */
    size_t raw_len;
};

/* The record at *off of a payload whose records end at `end` (the payload
 * was checked whole: this only guards the bounds). */
static bool prec_next(const uint8_t *data, size_t end, size_t *off,
                      struct prec *r)
{
    if (end - *off < SNAP_RECORD_HEADER_BYTES) {
        return false;
    }
    const uint8_t *p = data + *off;
    r->db = p[0];
    r->key_len = get_le16(p + 1);
    r->value_len = get_le32(p + 3);
    if (end - *off - SNAP_RECORD_HEADER_BYTES < r->key_len + r->value_len) {
        return false;
    }
    r->key = p + SNAP_RECORD_HEADER_BYTES;
    r->value = r->key + r->key_len;
    r->raw = p;
    r->raw_len = SNAP_RECORD_HEADER_BYTES + r->key_len + r->value_len;
    *off += r->raw_len;
    return true;
}

/* The full user key of a kv or hist record (store.h top); false for other
 * databases or a malformed record. */
static bool prec_user_key(const struct prec *r, const uint8_t **key,
                          size_t *len)
{
    if (r->db == SNAP_DB_KV && r->value_len >= KV_HEADER_BYTES) {
        size_t long_len = get_le16(r->value + 4);
        if (long_len == 0) {
            *key = r->key;
            *len = r->key_len;
            return true;
        }
        *key = r->value + KV_HEADER_BYTES;
        *len = long_len;
        return r->value_len - KV_HEADER_BYTES >= long_len;
    }
    if (r->db == SNAP_DB_HIST && r->value_len >= HIST_HEADER_BYTES) {
        *key = r->value + HIST_HEADER_BYTES;
        *len = get_le16(r->value + 4);
        return r->value_len - HIST_HEADER_BYTES >= *len;
    }
    return false;
}

int store_backup_kv(struct store *s, const char *path,
                    const struct store_backup_info *info, uint64_t group_id,
                    store_record_cb cb, void *ctx)
{
    const struct store_backup_group *g = find_group(info, group_id);
    uint8_t *data = NULL;
    if (g == NULL) {
        return store_fail(s, KHO_ENOTFOUND, "the backup has no group %llu",
                          (unsigned long long)group_id);
    }
    int rc = load_payload(s, path, g, &data);
    if (rc != KHO_OK) {
        return rc;
    }
    size_t len = (size_t)g->payload_bytes, off = SNAP_HEADER_BYTES;
    if (store_snap_check(data, len, group_id, g->index) != KHO_OK) {
        rc = store_fail(s, KHO_ECORRUPT,
                        "backup %s: group %llu's state machine is malformed",
                        path, (unsigned long long)group_id);
    }
    struct prec p;
    while (rc == KHO_OK &&
           prec_next(data, len - SNAP_TRAILER_BYTES, &off, &p)) {
        if (p.db != SNAP_DB_KV) {
            continue;
        }
        uint8_t k[STORE_LMDB_KEY_BYTES_MAX];
        put_be64(k, group_id);
        memcpy(k + GROUP_KEY_BYTES, p.key, p.key_len);
        MDB_val kv = {.mv_size = GROUP_KEY_BYTES + p.key_len, .mv_data = k};
        MDB_val vv = {.mv_size = p.value_len, .mv_data = (void *)p.value};
        struct store_record r;
        if (store_kv_decode(s, group_id, &kv, &vv, &r) != KHO_OK) {
            rc = store_kv_corrupt(s, group_id);
            break;
        }
        rc = cb(ctx, &r);
    }
    free(data);
    return rc;
}

/* --- Restoring -------------------------------------------------------------
 */

/* A copy of a checked payload without the records keep refuses; *out is
 * NULL when it keeps them all. */
static int filter_payload(struct store *s, uint64_t group, const uint8_t *data,
                          size_t len, store_restore_keep_cb keep, void *ctx,
                          uint8_t **out, size_t *out_len)
{
    size_t end = len - SNAP_TRAILER_BYTES, off = SNAP_HEADER_BYTES, o = 0;
    uint64_t kept = 0, dropped = 0;
    struct prec p;
    uint8_t *buf = NULL;
    *out = NULL;
    /* Two passes: most payloads lose nothing and are not copied. */
    for (int pass = 0; pass < 2; pass++) {
        off = SNAP_HEADER_BYTES;
        o = SNAP_HEADER_BYTES;
        kept = 0;
        while (prec_next(data, end, &off, &p)) {
            const uint8_t *key = NULL;
            size_t key_len = 0;
            bool drop = prec_user_key(&p, &key, &key_len) &&
                        !keep(ctx, group, key, key_len);
            dropped += pass == 0 && drop;
            if (pass == 1 && !drop) {
                memcpy(buf + o, p.raw, p.raw_len);
                o += p.raw_len;
            }
            kept += !drop;
        }
        if (pass == 0 && dropped == 0) {
            return KHO_OK;
        }
        if (pass == 0) {
            buf = malloc(len);
            if (buf == NULL) {
                return store_fail(s, KHO_ENOMEM, "out of memory");
            }
        }
    }
    memcpy(buf, data, SNAP_HEADER_BYTES);
    put_le64(buf + 24, kept);
    put_le32(buf + o, crc_once(buf, o));
    *out = buf;
    *out_len = o + SNAP_TRAILER_BYTES;
    return KHO_OK;
}

static bool conf_ok(const struct raft_conf *c)
{
    uint8_t buf[RAFT_CONF_ENCODED_MAX];
    struct raft_conf back;
    size_t n = raft_conf_encode(c, buf, sizeof(buf));
    return c->n > 0 && n > 0 && raft_conf_decode(buf, n, &back) == KHO_OK;
}

static int restore_group(struct store *s, MDB_txn *txn, const char *path,
                         const struct store_backup_group *g,
                         const struct store_restore_group *want,
                         store_restore_keep_cb keep, void *ctx)
{
    uint8_t *data = NULL, *filtered = NULL;
    size_t len = (size_t)g->payload_bytes;
    if (!conf_ok(&want->conf)) {
        return store_fail(s, KHO_EINVAL, "group %llu: invalid configuration",
                          (unsigned long long)g->group_id);
    }
    int rc = load_payload(s, path, g, &data);
    if (rc != KHO_OK) {
        return rc;
    }
    /* Checked before filtering, which re-seals the payload. */
    if (store_snap_check(data, len, g->group_id, g->index) != KHO_OK) {
        rc = store_fail(s, KHO_ECORRUPT,
                        "backup %s: group %llu's state machine is malformed",
                        path, (unsigned long long)g->group_id);
    }
    if (rc == KHO_OK && keep != NULL) {
        rc = filter_payload(s, g->group_id, data, len, keep, ctx, &filtered,
                            &len);
    }
    if (rc == KHO_OK) {
        rc = store_snap_install(s, txn, g->group_id, g->index,
                                filtered != NULL ? filtered : data, len);
    }
    free(data);
    free(filtered);
    struct raft_snapshot_meta m = {
        .index = g->index, .term = g->term, .conf = want->conf};
    struct raft_hard_state hs = {
        .term = g->term, .vote = 0, .commit = g->index};
    if (rc == KHO_OK) {
        rc = store_rec_put_snap_meta(s, txn, g->group_id, &m);
    }
    if (rc == KHO_OK) {
        rc = store_rec_put_hs(s, txn, g->group_id, &hs);
    }
    if (rc == KHO_OK) {
        rc = store_rec_put_applied(s, txn, g->group_id, g->index);
    }
    return rc;
}

static const MDB_val restore_key = {.mv_size = 7, .mv_data = "restore"};

static int put_mark(struct store *s, MDB_txn *txn,
                    const struct store_backup_info *info)
{
    uint8_t v[RESTORE_MARK_BYTES];
    put_le64(v, info->backup_id);
    put_le64(v + 8, info->file_bytes);
    put_le32(v + 16, info->file_crc);
    put_le32(v + 20, crc_once(v, 20));
    MDB_val k = restore_key;
    MDB_val val = {.mv_size = sizeof(v), .mv_data = v};
    return store_mdb_err(s, mdb_put(txn, s->dbi_info, &k, &val, 0),
                         "recording the restore");
}

static int state_in(struct store *s, MDB_txn *txn, bool *empty, bool *marked,
                    struct store_restore_mark *mark)
{
    MDB_cursor *c = NULL;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, s->dbi_meta, &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening a cursor");
    }
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    mdb_cursor_close(c);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "reading raft_meta");
    }
    *empty = rc == MDB_NOTFOUND;
    k = restore_key;
    rc = mdb_get(txn, s->dbi_info, &k, &v);
    *marked = rc == MDB_SUCCESS;
    if (rc == MDB_NOTFOUND) {
        return KHO_OK;
    }
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "reading info");
    }
    const uint8_t *p = v.mv_data;
    if (v.mv_size != RESTORE_MARK_BYTES ||
        get_le32(p + 20) != crc_once(p, 20)) {
        return store_fail(s, KHO_ECORRUPT,
                          "info: the restore record fails its checksum");
    }
    *mark = (struct store_restore_mark){.backup_id = get_le64(p),
                                        .file_bytes = get_le64(p + 8),
                                        .file_crc = get_le32(p + 16)};
    return KHO_OK;
}

int store_restore_state(struct store *s, bool *empty, bool *marked,
                        struct store_restore_mark *mark)
{
    MDB_txn *txn = NULL;
    memset(mark, 0, sizeof(*mark));
    int rc = store_rtxn_begin(s, &txn);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = state_in(s, txn, empty, marked, mark);
    mdb_txn_abort(txn);
    return rc;
}

static int restore_all(struct store *s, MDB_txn *txn, const char *path,
                       const struct store_backup_info *info,
                       const struct store_restore_group *groups, size_t n,
                       store_restore_keep_cb keep, void *ctx)
{
    struct store_restore_mark mark;
    bool empty = false, marked = false;
    int rc = state_in(s, txn, &empty, &marked, &mark);
    if (rc == KHO_OK && (!empty || marked)) {
        return store_fail(s, KHO_ECONFLICT,
                          "the store is not empty: a restore needs an empty "
                          "one");
    }
    for (size_t i = 0; rc == KHO_OK && i < n; i++) {
        const struct store_backup_group *g =
            find_group(info, groups[i].group_id);
        if (g == NULL) {
            return store_fail(s, KHO_ENOTFOUND, "the backup has no group %llu",
                              (unsigned long long)groups[i].group_id);
        }
        rc = restore_group(s, txn, path, g, &groups[i], keep, ctx);
    }
    return rc == KHO_OK ? put_mark(s, txn, info) : rc;
}

int store_restore(struct store *s, const char *path,
                  const struct store_backup_info *info,
                  const struct store_restore_group *groups, size_t n,
                  store_restore_keep_cb keep, void *ctx)
{
    struct store_batch *b = NULL;
    if (n == 0 || n > STORE_BACKUP_GROUPS_MAX) {
        return store_fail(s, KHO_EINVAL, "restore 1 to %u groups, not %zu",
                          STORE_BACKUP_GROUPS_MAX, n);
    }
    int rc = store_write_begin(s, &b);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = restore_all(s, b->txn, path, info, groups, n, keep, ctx);
    if (rc != KHO_OK) {
        store_batch_fail(b, rc);
    }
    return store_write_commit(b);
}

/*
 * backup.c - backup files and restores (store.h, "Backups").
 *
 * A backup is every chosen group's snapshot stream (stream.c), each made
 * by a snapshot reader on ONE shared read transaction, cut into frames of
 * at most STORE_BACKUP_CHUNK_BYTES with a checksum each, and sealed by an
 * END frame holding the checksum of the whole file. Nothing is built in
 * memory either way: records stream from the map to the file through one
 * chunk buffer, and back from the file through the stream parser (one
 * chunk and one record) into the restore's write transaction, each record
 * checked under the backup's data id and resealed under the restored one.
 */
#include "stream.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

static const uint8_t backup_magic[8] = {'K', 'H', 'O', 'B', 'A', 'C', 'K', 1};

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
    uint8_t *chunk;    /* one DATA frame's body */
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

/* The stream's bytes as DATA frames, one chunk at a time. */
static int bw_stream(struct bw *w, struct store_snap_reader *r, uint64_t total)
{
    int rc = KHO_OK;
    for (uint64_t off = 0; rc == KHO_OK && off < total;) {
        size_t n = 0;
        rc = store_snap_reader_read(r, off, w->chunk, STORE_BACKUP_CHUNK_BYTES,
                                    &n);
        if (rc == KHO_OK) {
            STORE_ASSERT(n > 0);
            rc = bw_frame(w, FRAME_DATA, w->chunk, n);
            off += n;
        }
    }
    return rc;
}

static int write_group(struct bw *w, MDB_txn *txn, uint64_t group,
                       struct store_backup_group *out)
{
    struct store_snap_reader *r = NULL;
    struct raft_snapshot_meta m;
    uint64_t total = 0;
    uint32_t crc = 0;
    int rc = stream_reader_open_txn(w->s, txn, group, &r, &m, &total, &crc);
    if (rc != KHO_OK) {
        return rc;
    }
    uint8_t g[GROUP_BODY_BYTES];
    put_le64(g, group);
    put_le64(g + 8, m.index);
    put_le64(g + 16, m.term);
    put_le64(g + 24, total);
    rc = bw_frame(w, FRAME_GROUP, g, sizeof(g));
    *out = (struct store_backup_group){.group_id = group,
                                       .index = m.index,
                                       .term = m.term,
                                       .payload_bytes = total,
                                       .offset = w->bytes};
    if (rc == KHO_OK) {
        rc = bw_stream(w, r, total);
    }
    store_snap_reader_close(r);
    return rc;
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
        store_rtxn_end(s, txn);
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

/* Feeds the DATA frames of a group of payload_bytes to a stream parser,
 * then checks the stream ended right there. */
static int br_stream(struct br *r, uint8_t *body,
                     const struct store_backup_group *g,
                     struct stream_parser *p)
{
    uint64_t pos = 0;
    int rc = KHO_OK;
    while (rc == KHO_OK && pos < g->payload_bytes) {
        uint32_t type = 0;
        size_t len = 0;
        uint64_t at = r->off;
        rc = br_frame(r, &type, body, &len);
        if (rc == KHO_OK &&
            (type != FRAME_DATA || len == 0 || len > g->payload_bytes - pos)) {
            rc = br_fail(r, KHO_ECORRUPT,
                         "offset %llu: group %llu's data does not add up",
                         (unsigned long long)at,
                         (unsigned long long)g->group_id);
        }
        if (rc == KHO_OK) {
            rc = stream_parser_feed(p, body, len);
            pos += len;
        }
    }
    if (rc == KHO_OK) {
        rc = stream_parser_end(p);
    }
    if (rc == KHO_ECORRUPT && p->why != NULL) {
        rc = br_fail(r, KHO_ECORRUPT,
                     "group %llu: its state machine is "
                     "corrupt: %s",
                     (unsigned long long)g->group_id, p->why);
    } else if (rc == KHO_ENOMEM) {
        rc = br_fail(r, KHO_ENOMEM, "out of memory");
    }
    return rc;
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
        g->payload_bytes < STREAM_HEADER_BYTES + STREAM_TRAILER_BYTES ||
        g->payload_bytes > STORE_STREAM_BYTES_MAX) {
        return br_fail(r, KHO_ECORRUPT,
                       "offset %llu: a malformed group record (group %llu, "
                       "index %llu, %llu bytes)",
                       (unsigned long long)at, (unsigned long long)g->group_id,
                       (unsigned long long)g->index,
                       (unsigned long long)g->payload_bytes);
    }
    struct stream_parser p;
    stream_parser_init(&p, g->group_id, g->index, g->term, NULL, NULL);
    p.v3_ok = true; /* a backup made by format 3: restored, converted */
    rc = br_stream(r, body, g, &p);
    stream_parser_free(&p);
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

/* --- Streaming one group back -------------------------------------------
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

/* Feeds group g's stream (re-checking its frames: the file may have
 * changed since it was checked) to a parser whose callback takes the
 * records. A failure of the callback comes back as it was. */
static int load_group(struct store *s, const char *path,
                      const struct store_backup_group *g,
                      struct stream_parser *p)
{
    char err[STORE_ERRMSG_BYTES] = "";
    struct br r = {.fd = open(path, O_RDONLY | O_CLOEXEC),
                   .file_crc = store_crc32c_init(),
                   .err = err,
                   .err_len = sizeof(err)};
    uint8_t *body = malloc(STORE_BACKUP_CHUNK_BYTES);
    int rc = body != NULL ? KHO_OK : br_fail(&r, KHO_ENOMEM, "out of memory");
    if (rc == KHO_OK && r.fd < 0) {
        rc = br_fail(&r, KHO_EIO, "cannot open: %s", strerror(errno));
    }
    if (rc == KHO_OK && lseek(r.fd, (off_t)g->offset, SEEK_SET) < 0) {
        rc = br_fail(&r, KHO_EIO, "cannot seek: %s", strerror(errno));
    }
    r.off = g->offset;
    if (rc == KHO_OK) {
        rc = br_stream(&r, body, g, p);
    }
    if (r.fd >= 0) {
        close(r.fd);
    }
    free(body);
    if (rc != KHO_OK && err[0] != '\0') {
        return store_fail(s, rc, "backup %s: %s", path, err);
    }
    return rc; /* the callback's error, its message recorded */
}

/* A stream record as the LMDB key and value it was under at the sender
 * (data id p->data), checked there. */
static int rec_check(struct store *s, const struct stream_parser *p,
                     const struct stream_rec *r, uint8_t *k, MDB_val *kv,
                     MDB_val *vv)
{
    put_be64(k, p->data);
    memcpy(k + GROUP_KEY_BYTES, r->key, r->key_len);
    *kv = (MDB_val){.mv_size = GROUP_KEY_BYTES + r->key_len, .mv_data = k};
    *vv = (MDB_val){.mv_size = r->value_len, .mv_data = (void *)r->value};
    if (store_sm_record_check(s, p->data, r->db, kv, vv) != KHO_OK) {
        return store_fail(s, KHO_ECORRUPT,
                          "backup: group %llu holds a record that fails its "
                          "checksum or is malformed",
                          (unsigned long long)p->group);
    }
    return KHO_OK;
}

struct kv_walk {
    struct store *s;
    struct stream_parser *p;
    store_record_cb cb;
    void *ctx;
};

static int kv_walk_cb(void *ctx, const struct stream_rec *r)
{
    struct kv_walk *w = ctx;
    uint8_t k[STORE_LMDB_KEY_BYTES_MAX];
    MDB_val kv, vv;
    struct store_record rec;
    if (r->db != SNAP_DB_KV) {
        return KHO_OK;
    }
    int rc = rec_check(w->s, w->p, r, k, &kv, &vv);
    if (rc == KHO_OK &&
        store_kv_decode(w->s, w->p->data, &kv, &vv, &rec) != KHO_OK) {
        rc = store_kv_corrupt(w->s, w->p->data);
    }
    return rc == KHO_OK ? w->cb(w->ctx, &rec) : rc;
}

int store_backup_kv(struct store *s, const char *path,
                    const struct store_backup_info *info, uint64_t group_id,
                    store_record_cb cb, void *ctx)
{
    const struct store_backup_group *g = find_group(info, group_id);
    if (g == NULL) {
        return store_fail(s, KHO_ENOTFOUND, "the backup has no group %llu",
                          (unsigned long long)group_id);
    }
    struct stream_parser p;
    struct kv_walk w = {.s = s, .p = &p, .cb = cb, .ctx = ctx};
    stream_parser_init(&p, g->group_id, g->index, g->term, kv_walk_cb, &w);
    p.v3_ok = true; /* kv records are alike in both versions */
    int rc = load_group(s, path, g, &p);
    stream_parser_free(&p);
    return rc;
}

/* --- Restoring -------------------------------------------------------------
 */

/* The full user key of a kv or hist record (store.h top); false for other
 * databases (the record was checked: the lengths hold). */
static bool user_key(const struct stream_rec *r, const uint8_t **key,
                     size_t *len)
{
    if (r->db == SNAP_DB_KV) {
        size_t long_len = get_le16(r->value + 4);
        *key = long_len == 0 ? r->key : r->value + KV_HEADER_BYTES;
        *len = long_len == 0 ? r->key_len : long_len;
        return true;
    }
    if (r->db == SNAP_DB_HIST) {
        *key = r->value + HIST_HEADER_BYTES;
        *len = get_le16(r->value + 4);
        return true;
    }
    return false;
}

struct restoring {
    struct store *s;
    MDB_txn *txn;
    struct stream_parser *p;
    uint64_t data; /* the restored group's */
    uint64_t sessions;
    uint64_t dropped; /* versions of a KHOSNAP 3 stream left out */
    store_restore_keep_cb keep;
    void *ctx;
};

static bool kept(const struct restoring *x, const struct stream_rec *r)
{
    const uint8_t *key = NULL;
    size_t key_len = 0;
    return x->keep == NULL || !user_key(r, &key, &key_len) ||
           x->keep(x->ctx, x->p->group, key, key_len);
}

/*
 * A version from a KHOSNAP 3 stream (a backup of store format 3), checked
 * under the sender's key kv: format 4 leaves out the one that is its key's
 * current record (restored already: kv comes first in a stream) and puts
 * a superseded one at the lowest free slot (store_hist_v3_fate()). *done
 * unless the version is restored as it is.
 */
static int restore_v3_hist(struct restoring *x, const struct stream_rec *r,
                           const MDB_val *kv, const MDB_val *vv, bool *done)
{
    struct store_record rec;
    enum hist_v3_fate fate = HIST_V3_KEEP;
    *done = true;
    if (store_hist_decode(x->p->data, kv, vv, &rec) != KHO_OK) {
        return store_fail(x->s, KHO_ECORRUPT,
                          "backup: a version of group %llu is malformed",
                          (unsigned long long)x->p->group);
    }
    int rc =
        store_hist_v3_fate(x->s, x->txn, x->data, kv->mv_data, &rec, &fate);
    if (rc != KHO_OK) {
        return rc;
    }
    if (fate == HIST_V3_DROP) {
        x->dropped++;
        return KHO_OK;
    }
    if (fate == HIST_V3_PLACE) {
        uint32_t slot = 0;
        return store_hist_place(x->s, x->txn, x->data, r->key, r->value,
                                r->value_len, &slot);
    }
    *done = false;
    return KHO_OK;
}

static int restore_cb(void *ctx, const struct stream_rec *r)
{
    struct restoring *x = ctx;
    uint8_t k[STORE_LMDB_KEY_BYTES_MAX];
    MDB_val kv, vv;
    bool done = false;
    int rc = rec_check(x->s, x->p, r, k, &kv, &vv);
    if (rc != KHO_OK || !kept(x, r)) {
        return rc;
    }
    if (x->p->version == STREAM_VERSION_V3 && r->db == SNAP_DB_HIST) {
        rc = restore_v3_hist(x, r, &kv, &vv, &done);
        if (rc != KHO_OK || done) {
            return rc;
        }
    }
    put_be64(k, x->data);
    rc = mdb_put(x->txn, store_sm_dbi(x->s, r->db), &kv, &vv, MDB_RESERVE);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(x->s, rc, "restoring a record");
    }
    memcpy(vv.mv_data, r->value, r->value_len);
    store_sm_reseal(r->db, x->data, r->key, r->key_len, vv.mv_data,
                    r->value_len);
    x->sessions += r->db == SNAP_DB_SESS;
    return KHO_OK;
}

static bool conf_ok(const struct raft_conf *c)
{
    uint8_t buf[RAFT_CONF_ENCODED_MAX];
    struct raft_conf back;
    size_t n = raft_conf_encode(c, buf, sizeof(buf));
    return c->n > 0 && n > 0 && raft_conf_decode(buf, n, &back) == KHO_OK;
}

/* The restored group's data id: its group id (store.h top, "Data ids"),
 * cleared of whatever garbage an earlier life left under it; a fresh one
 * for a group id that could meet the fresh ids. */
static int restore_data_id(struct store *s, MDB_txn *txn, uint64_t group,
                           uint64_t *data)
{
    if ((group & DATA_ID_FRESH) != 0) {
        int rc = store_data_alloc(s, txn, data);
        return rc == KHO_OK ? store_rec_put_data(s, txn, group, *data) : rc;
    }
    *data = group;
    return store_gc_clear_now(s, txn, group);
}

/* The raft records of a group restored at g's index and term. */
static int restore_meta(struct store *s, MDB_txn *txn,
                        const struct store_backup_group *g,
                        const struct raft_conf *conf)
{
    struct raft_snapshot_meta m = {
        .index = g->index, .term = g->term, .conf = *conf};
    struct raft_hard_state hs = {
        .term = g->term, .vote = 0, .commit = g->index};
    int rc = store_rec_put_snap_meta(s, txn, g->group_id, &m);
    if (rc == KHO_OK) {
        rc = store_rec_put_conf(s, txn, g->group_id, g->index, conf);
    }
    if (rc == KHO_OK) {
        rc = store_rec_put_hs(s, txn, g->group_id, &hs);
    }
    if (rc == KHO_OK) {
        rc = store_rec_put_applied(s, txn, g->group_id, g->index);
    }
    return rc;
}

static int restore_group(struct store *s, MDB_txn *txn, const char *path,
                         const struct store_backup_group *g,
                         const struct store_restore_group *want,
                         store_restore_keep_cb keep, void *ctx)
{
    struct stream_parser p;
    struct restoring x = {
        .s = s, .txn = txn, .p = &p, .keep = keep, .ctx = ctx};
    if (!conf_ok(&want->conf)) {
        return store_fail(s, KHO_EINVAL, "group %llu: invalid configuration",
                          (unsigned long long)g->group_id);
    }
    int rc = restore_data_id(s, txn, g->group_id, &x.data);
    if (rc != KHO_OK) {
        return rc;
    }
    stream_parser_init(&p, g->group_id, g->index, g->term, restore_cb, &x);
    p.v3_ok = true;
    rc = load_group(s, path, g, &p);
    stream_parser_free(&p);
    if (rc == KHO_OK && p.version == STREAM_VERSION_V3) {
        fprintf(stderr,
                "kho store: %s: group %llu comes from a backup of store "
                "format %u, converted as it is restored: %llu history "
                "versions that repeat current records are left out\n",
                s->path, (unsigned long long)g->group_id, STORE_FORMAT_V3,
                (unsigned long long)x.dropped);
    }
    if (rc == KHO_OK) {
        rc = store_rec_put_sessions(s, txn, x.data, x.sessions);
    }
    return rc == KHO_OK ? restore_meta(s, txn, g, &want->conf) : rc;
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

/* Whether raft_meta holds a group: a snapshot meta record. Session counts
 * of garbage or stages waiting for collection are no group. */
static int holds_group(struct store *s, MDB_txn *txn, bool *any)
{
    MDB_cursor *c = NULL;
    MDB_val k, v;
    *any = false;
    int rc = mdb_cursor_open(txn, s->dbi_meta, &c);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening a cursor");
    }
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == MDB_SUCCESS && !*any) {
        *any = k.mv_size == META_KEY_BYTES &&
               ((const uint8_t *)k.mv_data)[8] == META_SNAP;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND) {
        return store_mdb_err(s, rc, "reading raft_meta");
    }
    return KHO_OK;
}

static int state_in(struct store *s, MDB_txn *txn, bool *empty, bool *marked,
                    struct store_restore_mark *mark)
{
    MDB_val k, v;
    bool any = false;
    int rc = holds_group(s, txn, &any);
    if (rc != KHO_OK) {
        return rc;
    }
    *empty = !any;
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
    store_rtxn_end(s, txn);
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

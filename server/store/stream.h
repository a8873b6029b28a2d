/*
 * stream.h - the snapshot stream (store.h, "Snapshot stream") as the
 * store's files share it: an incremental parser that takes the stream in
 * pieces of any size (stage.c, backup.c), and a reader on a borrowed
 * transaction (backup.c). Nothing here leaves server/store.
 */
#ifndef KHO_STORE_STREAM_H
#define KHO_STORE_STREAM_H

#include "check.h"

/* The stream's version (store.h top, "Snapshot stream"), and the one
 * before, whose records have the same layout but whose hist records
 * include every key's current version (store format 3). Nodes refuse each
 * other's streams across versions; restores take both. */
#define STREAM_VERSION 4u
#define STREAM_VERSION_V3 3u

/* One record of a stream: key without the data id, value as stored (its
 * checksum covers the sender's data id). Valid only inside the call. */
struct stream_rec {
    enum snap_db db;
    const uint8_t *key;
    size_t key_len;
    const uint8_t *value;
    size_t value_len;
};

/* Called for every record, in stream order; a non-KHO_OK return stops
 * the parse and is returned by stream_parser_feed(). */
typedef int (*stream_rec_fn)(void *ctx, const struct stream_rec *r);

struct stream_parser {
    /* Set by stream_parser_init(). */
    uint64_t group, index, term; /* what the header must say */
    stream_rec_fn fn;            /* may be NULL: structure only */
    void *ctx;
    /* Set by the caller before the first feed: also take a KHOSNAP 3
     * stream (a backup of format 3, whose hist holds current records too:
     * see STREAM_VERSION_V3). */
    bool v3_ok;
    /* From the header once it is in. */
    uint64_t data;
    uint8_t version; /* STREAM_VERSION, or STREAM_VERSION_V3 */
    bool header_done;
    /* Progress. */
    uint64_t pos; /* bytes taken */
    int state;    /* what the next `need` bytes are */
    size_t need, have;
    uint8_t small[STREAM_HEADER_BYTES];
    uint8_t *rec; /* one record's key and value, when split across feeds */
    size_t rec_cap;
    uint8_t db;
    size_t key_len, value_len;
    uint32_t crc;      /* running (not finalised) over the bytes taken */
    uint32_t body_crc; /* finalised, over the bytes before the trailer's crc */
    uint64_t count, n_sess, n_lru;
    uint8_t prev_db;
    uint8_t prev_key[STREAM_KEY_BYTES_MAX];
    size_t prev_len;
    bool failed;     /* a feed failed: the parser is unusable */
    const char *why; /* what was wrong with the stream, or NULL when the
                        failure was the callback's */
};

void stream_parser_init(struct stream_parser *p, uint64_t group, uint64_t index,
                        uint64_t term, stream_rec_fn fn, void *ctx);
/* Takes the next n bytes. KHO_ECORRUPT (p->why says what), KHO_ENOMEM, or
 * what fn returned; the parser is then unusable. */
int stream_parser_feed(struct stream_parser *p, const uint8_t *b, size_t n);
/* KHO_OK when the stream ended exactly after a good trailer, every session
 * having one sess_lru entry; else KHO_ECORRUPT with p->why. */
int stream_parser_end(struct stream_parser *p);
/* CRC-32C of every byte taken so far. */
uint32_t stream_parser_crc(const struct stream_parser *p);
void stream_parser_free(struct stream_parser *p);

/* store_snap_reader_open() on a transaction the caller keeps (it must
 * outlive the reader). */
int stream_reader_open_txn(struct store *s, MDB_txn *txn, uint64_t group,
                           struct store_snap_reader **out,
                           struct raft_snapshot_meta *meta, uint64_t *total,
                           uint32_t *crc);

#endif /* KHO_STORE_STREAM_H */

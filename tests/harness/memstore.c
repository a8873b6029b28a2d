/* memstore.c - in-memory raft storage; see memstore.h. */
#include "memstore.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        abort();
    }
    return p;
}

static uint8_t *dup_bytes(const uint8_t *src, size_t len)
{
    uint8_t *p = xmalloc(len);
    if (len > 0) {
        memcpy(p, src, len);
    }
    return p;
}

void memstore_init(struct memstore *s, const struct raft_conf *conf)
{
    memset(s, 0, sizeof(*s));
    if (conf != NULL) {
        s->snap.meta.conf = *conf;
    }
}

static void drop_from(struct memstore *s, size_t pos)
{
    for (size_t i = pos; i < s->n; i++) {
        free(s->ents[i].data);
    }
    s->n = pos;
}

void memstore_free(struct memstore *s)
{
    drop_from(s, 0);
    free(s->ents);
    free(s->snap.data);
    memset(s, 0, sizeof(*s));
}

void memstore_copy(struct memstore *dst, const struct memstore *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->hs = src->hs;
    dst->snap.meta = src->snap.meta;
    dst->snap.len = src->snap.len;
    dst->snap.data = src->snap.len ? dup_bytes(src->snap.data, src->snap.len)
                                   : NULL;
    dst->cap = src->n;
    dst->n = src->n;
    dst->ents = xmalloc(sizeof(*dst->ents) * (src->n ? src->n : 1));
    for (size_t i = 0; i < src->n; i++) {
        dst->ents[i] = src->ents[i];
        dst->ents[i].data = dup_bytes(src->ents[i].data, src->ents[i].len);
    }
}

uint64_t memstore_last_index(const struct memstore *s)
{
    return s->snap.meta.index + s->n;
}

const struct raft_entry *memstore_entry(const struct memstore *s,
                                        uint64_t index)
{
    if (index <= s->snap.meta.index || index > memstore_last_index(s)) {
        return NULL;
    }
    return &s->ents[index - s->snap.meta.index - 1];
}

static int cb_snapshot_meta(void *ctx, struct raft_snapshot_meta *out)
{
    struct memstore *s = ctx;
    if (s->fail_err) {
        return s->fail_err;
    }
    *out = s->snap.meta;
    return KHO_OK;
}

static int cb_last_index(void *ctx, uint64_t *out)
{
    struct memstore *s = ctx;
    if (s->fail_err) {
        return s->fail_err;
    }
    *out = memstore_last_index(s);
    return KHO_OK;
}

static int cb_term(void *ctx, uint64_t index, uint64_t *out)
{
    struct memstore *s = ctx;
    if (s->fail_err) {
        return s->fail_err;
    }
    if (index == s->snap.meta.index) {
        *out = s->snap.meta.term;
        return KHO_OK;
    }
    const struct raft_entry *e = memstore_entry(s, index);
    if (e == NULL) {
        return KHO_EINVAL;
    }
    *out = e->term;
    return KHO_OK;
}

static int cb_entries(void *ctx, uint64_t lo, uint64_t hi, size_t max_bytes,
                      struct raft_entry *out, size_t cap, size_t *n_out)
{
    struct memstore *s = ctx;
    size_t n = 0, bytes = 0;
    if (s->fail_err) {
        return s->fail_err;
    }
    if (lo <= s->snap.meta.index || hi > memstore_last_index(s) + 1 ||
        lo >= hi) {
        return KHO_EINVAL;
    }
    for (uint64_t i = lo; i < hi && n < cap; i++) {
        const struct raft_entry *e = memstore_entry(s, i);
        if (n > 0 && bytes + e->len > max_bytes) {
            break;
        }
        bytes += e->len;
        out[n++] = *e;
    }
    *n_out = n;
    return KHO_OK;
}

static int cb_snapshot(void *ctx, struct raft_snapshot *out)
{
    struct memstore *s = ctx;
    if (s->fail_err) {
        return s->fail_err;
    }
    *out = s->snap;
    return KHO_OK;
}

struct raft_storage memstore_storage(struct memstore *s)
{
    struct raft_storage st = {
        .ctx = s,
        .snapshot_meta = cb_snapshot_meta,
        .last_index = cb_last_index,
        .term = cb_term,
        .entries = cb_entries,
        .snapshot = cb_snapshot,
    };
    return st;
}

static void append_one(struct memstore *s, const struct raft_entry *e)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->ents = realloc(s->ents, sizeof(*s->ents) * s->cap);
        if (s->ents == NULL) {
            abort();
        }
    }
    s->ents[s->n] = *e;
    s->ents[s->n].data = dup_bytes(e->data, e->len);
    s->n++;
}

int memstore_persist(struct memstore *s, const struct raft_ready *rd)
{
    if (rd->snapshot != NULL) {
        drop_from(s, 0);
        free(s->snap.data);
        s->snap.meta = rd->snapshot->meta;
        s->snap.len = rd->snapshot->len;
        s->snap.data = s->snap.len
                           ? dup_bytes(rd->snapshot->data, rd->snapshot->len)
                           : NULL;
    }
    if (rd->n_entries > 0) {
        uint64_t first = rd->entries[0].index;
        if (first <= s->snap.meta.index ||
            first > memstore_last_index(s) + 1) {
            return KHO_ECORRUPT;
        }
        drop_from(s, (size_t)(first - s->snap.meta.index - 1));
        for (size_t i = 0; i < rd->n_entries; i++) {
            if (rd->entries[i].index != first + i) {
                return KHO_ECORRUPT;
            }
            append_one(s, &rd->entries[i]);
        }
    }
    if (rd->hs_changed) {
        s->hs = rd->hs;
    }
    return KHO_OK;
}

int memstore_append(struct memstore *s, const struct raft_entry *e)
{
    if (e->index != memstore_last_index(s) + 1) {
        return KHO_EINVAL;
    }
    append_one(s, e);
    return KHO_OK;
}

int memstore_truncate(struct memstore *s, uint64_t from)
{
    if (from <= s->snap.meta.index || from > memstore_last_index(s) + 1) {
        return KHO_EINVAL;
    }
    drop_from(s, (size_t)(from - s->snap.meta.index - 1));
    return KHO_OK;
}

int memstore_compact(struct memstore *s, uint64_t index,
                     const struct raft_conf *conf, const uint8_t *data,
                     size_t len)
{
    const struct raft_entry *e = memstore_entry(s, index);
    if (e == NULL) {
        return KHO_EINVAL;
    }
    uint64_t term = e->term;
    size_t keep_from = (size_t)(index - s->snap.meta.index);
    for (size_t i = 0; i < keep_from; i++) {
        free(s->ents[i].data);
    }
    memmove(s->ents, s->ents + keep_from,
            sizeof(*s->ents) * (s->n - keep_from));
    s->n -= keep_from;
    free(s->snap.data);
    s->snap.meta.index = index;
    s->snap.meta.term = term;
    s->snap.meta.conf = *conf;
    s->snap.len = len;
    s->snap.data = len ? dup_bytes(data, len) : NULL;
    return KHO_OK;
}

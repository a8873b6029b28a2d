/*
 * raft_codec.c - raft messages and stored raft state <-> protobuf bytes.
 *
 * The generated protobuf-c code is used here and nowhere else. Decoding runs
 * in three steps, each a wall in front of the next:
 *
 *   1. the input length is capped (CODEC_BATCH_BYTES_MAX), so protobuf-c
 *      never sees an absurd buffer;
 *   2. a wire-level pre-scan walks the batch without allocating, rejects
 *      malformed framing and counts the repeated fields (messages, entries,
 *      members) against their limits, because protobuf-c allocates one
 *      struct per element it finds and a few input bytes per element would
 *      otherwise buy many bytes of memory;
 *   3. after protobuf-c has unpacked, every message is converted and checked
 *      with the same rules the encoder applies (enum values, ranges, ids).
 */
#include "raft_codec.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/raft.pb-c.h"

/* Broken internal invariants (not bad input) abort, in every build. */
#define CODEC_ASSERT(cond)                                                     \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: codec assertion failed: %s\n", __FILE__,   \
                    __LINE__, #cond);                                          \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* Field numbers above this cannot be encoded in a protobuf tag. */
#define WIRE_FIELD_MAX ((UINT64_C(1) << 29) - 1)
/* A 64-bit varint takes at most ten bytes. */
#define WIRE_VARINT_BYTES_MAX 10u

/* --- Validation shared by encoding and decoding --------------------------- */

static bool term_ok(uint64_t term)
{
    return term <= RAFT_TERM_MAX;
}

static bool index_ok(uint64_t index)
{
    return index <= RAFT_INDEX_MAX;
}

/* Returns NULL if `c` is a configuration the codec may carry, else why not. */
static const char *check_conf(const struct raft_conf *c)
{
    if (c->n > RAFT_MEMBERS_MAX) {
        return "too many members";
    }
    for (uint32_t i = 0; i < c->n; i++) {
        const struct raft_member *mb = &c->members[i];
        if (mb->id == 0) {
            return "member id 0";
        }
        if (mb->role != RAFT_VOTER && mb->role != RAFT_LEARNER) {
            return "unknown member role";
        }
        for (uint32_t j = 0; j < i; j++) {
            if (c->members[j].id == mb->id) {
                return "duplicate member id";
            }
        }
    }
    return NULL;
}

static const char *check_snapshot_meta(const struct raft_snapshot_meta *m)
{
    if (!index_ok(m->index)) {
        return "snapshot index out of range";
    }
    if (!term_ok(m->term)) {
        return "snapshot term out of range";
    }
    return check_conf(&m->conf);
}

static const char *check_entry(const struct raft_entry *e)
{
    if (!term_ok(e->term)) {
        return "entry term out of range";
    }
    if (!index_ok(e->index)) {
        return "entry index out of range";
    }
    if (e->type > RAFT_ENTRY_CONF) {
        return "unknown entry type";
    }
    if (e->len > RAFT_ENTRY_BYTES_MAX) {
        return "entry over RAFT_ENTRY_BYTES_MAX";
    }
    if (e->len > 0 && e->data == NULL) {
        return "entry length without data";
    }
    return NULL;
}

/* Structural checks only: whether a message makes sense in the current
 * state of a group is the raft core's business. */
static const char *check_msg(const struct raft_msg *m)
{
    if (m->type < RAFT_MSG_APPEND || m->type > RAFT_MSG_TYPE_MAX_) {
        return "unknown message type";
    }
    if ((m->flags & ~(uint32_t)CODEC_MSG_FLAGS_KNOWN) != 0) {
        return "unknown message flags";
    }
    if (m->from == 0 || m->to == 0) {
        return "message from or to node 0";
    }
    if (m->quiesce && m->type != RAFT_MSG_HEARTBEAT) {
        return "quiesce flag on a message that is not a heartbeat";
    }
    if (!term_ok(m->term) || !term_ok(m->log_term) || !term_ok(m->hint_term)) {
        return "message term out of range";
    }
    if (!index_ok(m->index) || !index_ok(m->commit) ||
        !index_ok(m->hint_index)) {
        return "message index out of range";
    }
    if (m->n_entries > RAFT_MSG_ENTRIES_MAX) {
        return "too many entries in a message";
    }
    if (m->n_entries > 0 && m->entries == NULL) {
        return "entry count without entries";
    }
    for (uint32_t i = 0; i < m->n_entries; i++) {
        const char *why = check_entry(&m->entries[i]);
        if (why != NULL) {
            return why;
        }
    }
    if (m->snapshot.len > 0 && m->snapshot.data == NULL) {
        return "snapshot length without data";
    }
    return check_snapshot_meta(&m->snapshot.meta);
}

/* --- Wire-level pre-scan (no allocation) ---------------------------------- */

struct span {
    const uint8_t *p;
    const uint8_t *end;
};

/* Field numbers of the repeated and nested fields the scan follows, read
 * from the generated descriptors so they can never drift from the schema. */
struct scan {
    uint32_t f_msgs;    /* Batch.msgs */
    uint32_t f_entries; /* Message.entries */
    uint32_t f_meta;    /* Message.snapshot_meta */
    uint32_t f_conf;    /* SnapshotMeta.conf */
    uint32_t f_members; /* Conf.members */
    size_t n_msgs;
    size_t n_entries; /* across the batch */
};

static uint32_t field_id(const ProtobufCMessageDescriptor *d, const char *name)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(d, name);
    CODEC_ASSERT(f != NULL);
    return f->id;
}

static void scan_init(struct scan *sc)
{
    memset(sc, 0, sizeof(*sc));
    sc->f_msgs = field_id(&kho__raft__batch__descriptor, "msgs");
    sc->f_entries = field_id(&kho__raft__message__descriptor, "entries");
    sc->f_meta = field_id(&kho__raft__message__descriptor, "snapshot_meta");
    sc->f_conf = field_id(&kho__raft__snapshot_meta__descriptor, "conf");
    sc->f_members = field_id(&kho__raft__conf__descriptor, "members");
}

/* Reads one base-128 varint; false if truncated or wider than 64 bits. */
static bool span_varint(struct span *s, uint64_t *out)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < WIRE_VARINT_BYTES_MAX; i++) {
        if (s->p == s->end) {
            return false;
        }
        uint8_t b = *s->p++;
        if (i == WIRE_VARINT_BYTES_MAX - 1 && b > 1) {
            return false;
        }
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *out = v;
            return true;
        }
    }
    return false;
}

static bool span_skip(struct span *s, uint64_t n)
{
    if (n > (uint64_t)(s->end - s->p)) {
        return false;
    }
    s->p += n;
    return true;
}

/* Reads one field's key and steps over its value; for a length-delimited
 * value, *body is set to its bytes. False on any malformed framing,
 * including the deprecated group wire types, which kho never uses. */
static bool span_field(struct span *s, uint32_t *field, uint32_t *wire,
                       struct span *body)
{
    uint64_t key;
    uint64_t n;
    if (!span_varint(s, &key)) {
        return false;
    }
    if ((key >> 3) == 0 || (key >> 3) > WIRE_FIELD_MAX) {
        return false;
    }
    *field = (uint32_t)(key >> 3);
    *wire = (uint32_t)(key & 7);
    switch (*wire) {
    case PROTOBUF_C_WIRE_TYPE_VARINT:
        return span_varint(s, &n);
    case PROTOBUF_C_WIRE_TYPE_64BIT:
        return span_skip(s, 8);
    case PROTOBUF_C_WIRE_TYPE_32BIT:
        return span_skip(s, 4);
    case PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED:
        if (!span_varint(s, &n) || n > (uint64_t)(s->end - s->p)) {
            return false;
        }
        body->p = s->p;
        body->end = s->p + n;
        s->p += n;
        return true;
    default:
        return false;
    }
}

static const char *scan_conf(const struct scan *sc, struct span s,
                             size_t *n_members)
{
    struct span body;
    uint32_t field;
    uint32_t wire;
    while (s.p < s.end) {
        if (!span_field(&s, &field, &wire, &body)) {
            return "malformed protobuf in a configuration";
        }
        if (field != sc->f_members) {
            continue;
        }
        if (wire != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED) {
            return "wrong wire type for members";
        }
        if (++*n_members > RAFT_MEMBERS_MAX) {
            return "too many members";
        }
    }
    return NULL;
}

/* Members are counted across repeated occurrences of the metadata and its
 * configuration, because protobuf merges such occurrences into one. */
static const char *scan_meta(const struct scan *sc, struct span s,
                             size_t *n_members)
{
    struct span body;
    uint32_t field;
    uint32_t wire;
    while (s.p < s.end) {
        if (!span_field(&s, &field, &wire, &body)) {
            return "malformed protobuf in snapshot metadata";
        }
        if (field != sc->f_conf) {
            continue;
        }
        if (wire != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED) {
            return "wrong wire type for a configuration";
        }
        const char *why = scan_conf(sc, body, n_members);
        if (why != NULL) {
            return why;
        }
    }
    return NULL;
}

static const char *scan_msg(struct scan *sc, struct span s)
{
    struct span body;
    uint32_t field;
    uint32_t wire;
    size_t n_entries = 0;
    size_t n_members = 0;
    while (s.p < s.end) {
        if (!span_field(&s, &field, &wire, &body)) {
            return "malformed protobuf in a message";
        }
        if (field != sc->f_entries && field != sc->f_meta) {
            continue;
        }
        if (wire != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED) {
            return "wrong wire type for entries or snapshot metadata";
        }
        if (field == sc->f_meta) {
            const char *why = scan_meta(sc, body, &n_members);
            if (why != NULL) {
                return why;
            }
            continue;
        }
        if (++n_entries > RAFT_MSG_ENTRIES_MAX) {
            return "too many entries in a message";
        }
        if (++sc->n_entries > CODEC_BATCH_ENTRIES_MAX) {
            return "too many entries in a batch";
        }
    }
    return NULL;
}

/* Returns NULL if the framing is sound and every count within its limit. */
static const char *scan_batch(const uint8_t *buf, size_t len)
{
    struct scan sc;
    struct span s = {buf, buf + len};
    struct span body;
    uint32_t field;
    uint32_t wire;
    scan_init(&sc);
    while (s.p < s.end) {
        if (!span_field(&s, &field, &wire, &body)) {
            return "malformed protobuf in a batch";
        }
        if (field != sc.f_msgs) {
            continue; /* unknown fields are skipped, as protobuf does */
        }
        if (wire != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED) {
            return "wrong wire type for messages";
        }
        if (++sc.n_msgs > CODEC_BATCH_MSGS_MAX) {
            return "too many messages in a batch";
        }
        const char *why = scan_msg(&sc, body);
        if (why != NULL) {
            return why;
        }
    }
    return NULL;
}

/* --- C structs -> protobuf-c ---------------------------------------------- */

/* Everything one SnapshotMeta needs, so it can live on the stack. */
struct meta_pb {
    Kho__Raft__SnapshotMeta meta;
    Kho__Raft__Conf conf;
    Kho__Raft__Member members[RAFT_MEMBERS_MAX];
    Kho__Raft__Member *member_ptrs[RAFT_MEMBERS_MAX];
};

/* `m` must have passed check_snapshot_meta(). */
static void meta_to_pb(const struct raft_snapshot_meta *m, struct meta_pb *out)
{
    out->meta = (Kho__Raft__SnapshotMeta)KHO__RAFT__SNAPSHOT_META__INIT;
    out->conf = (Kho__Raft__Conf)KHO__RAFT__CONF__INIT;
    out->meta.index = m->index;
    out->meta.term = m->term;
    out->meta.conf = &out->conf;
    for (uint32_t i = 0; i < m->conf.n; i++) {
        out->members[i] = (Kho__Raft__Member)KHO__RAFT__MEMBER__INIT;
        out->members[i].id = m->conf.members[i].id;
        out->members[i].role = (Kho__Raft__Role)m->conf.members[i].role;
        out->member_ptrs[i] = &out->members[i];
    }
    out->conf.n_members = m->conf.n;
    out->conf.members = out->member_ptrs;
}

static void entry_to_pb(const struct raft_entry *e, Kho__Raft__Entry *out)
{
    *out = (Kho__Raft__Entry)KHO__RAFT__ENTRY__INIT;
    out->term = e->term;
    out->index = e->index;
    out->type = (Kho__Raft__EntryType)e->type;
    out->data.len = e->len;
    /* protobuf-c only reads through this pointer while packing. */
    out->data.data = e->data;
}

/* Whether a message carries snapshot fields worth encoding. Encoding them
 * whenever any is set keeps every message a faithful round trip. */
static bool msg_has_snapshot(const struct raft_msg *m)
{
    const struct raft_snapshot *s = &m->snapshot;
    return m->type == RAFT_MSG_SNAPSHOT || s->meta.index != 0 ||
           s->meta.term != 0 || s->meta.conf.n != 0 || s->len != 0;
}

/* `ents` has room for m->n_entries; `meta` is used if the message carries
 * a snapshot. */
static void msg_to_pb(const struct raft_msg *m, Kho__Raft__Message *out,
                      Kho__Raft__Entry *ents, Kho__Raft__Entry **ent_ptrs,
                      struct meta_pb *meta)
{
    *out = (Kho__Raft__Message)KHO__RAFT__MESSAGE__INIT;
    out->group_id = m->group_id;
    out->type = (Kho__Raft__MessageType)m->type;
    out->flags = m->flags;
    out->from = m->from;
    out->to = m->to;
    out->term = m->term;
    out->log_term = m->log_term;
    out->index = m->index;
    out->commit = m->commit;
    out->ctx = m->ctx;
    out->hint_index = m->hint_index;
    out->hint_term = m->hint_term;
    out->reject = m->reject;
    out->quiesce = m->quiesce;
    for (uint32_t i = 0; i < m->n_entries; i++) {
        entry_to_pb(&m->entries[i], &ents[i]);
        ent_ptrs[i] = &ents[i];
    }
    out->n_entries = m->n_entries;
    out->entries = ent_ptrs;
    if (meta != NULL) {
        meta_to_pb(&m->snapshot.meta, meta);
        out->snapshot_meta = &meta->meta;
        out->snapshot_data.len = m->snapshot.len;
        out->snapshot_data.data = m->snapshot.data;
    }
}

/* The protobuf-c tree of one batch while it is being encoded. */
struct batch_pb {
    Kho__Raft__Batch batch;
    Kho__Raft__Message *msgs;
    Kho__Raft__Message **msg_ptrs;
    Kho__Raft__Entry *ents;
    Kho__Raft__Entry **ent_ptrs;
    struct meta_pb *metas;
};

static void batch_pb_free(struct batch_pb *b)
{
    free(b->msgs);
    free(b->msg_ptrs);
    free(b->ents);
    free(b->ent_ptrs);
    free(b->metas);
}

/* Builds the tree; the messages must have passed check_msg(). */
static int batch_to_pb(const struct raft_msg *msgs, size_t n, size_t n_entries,
                       size_t n_meta, struct batch_pb *out)
{
    memset(out, 0, sizeof(*out));
    out->msgs = calloc(n, sizeof(*out->msgs));
    out->msg_ptrs = calloc(n, sizeof(*out->msg_ptrs));
    out->ents = calloc(n_entries + 1, sizeof(*out->ents));
    out->ent_ptrs = calloc(n_entries + 1, sizeof(*out->ent_ptrs));
    out->metas = calloc(n_meta + 1, sizeof(*out->metas));
    if (out->msgs == NULL || out->msg_ptrs == NULL || out->ents == NULL ||
        out->ent_ptrs == NULL || out->metas == NULL) {
        batch_pb_free(out);
        return KHO_ENOMEM;
    }
    size_t e = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct meta_pb *meta = NULL;
        if (msg_has_snapshot(&msgs[i])) {
            meta = &out->metas[k++];
        }
        msg_to_pb(&msgs[i], &out->msgs[i], &out->ents[e], &out->ent_ptrs[e],
                  meta);
        out->msg_ptrs[i] = &out->msgs[i];
        e += msgs[i].n_entries;
    }
    CODEC_ASSERT(e == n_entries && k == n_meta);
    out->batch = (Kho__Raft__Batch)KHO__RAFT__BATCH__INIT;
    out->batch.n_msgs = n;
    out->batch.msgs = out->msg_ptrs;
    return KHO_OK;
}

int codec_batch_encode(const struct raft_msg *msgs, size_t n, uint8_t **out,
                       size_t *len)
{
    struct batch_pb pb;
    size_t n_entries = 0;
    size_t n_meta = 0;
    *out = NULL;
    *len = 0;
    if (n == 0 || msgs == NULL) {
        return KHO_EINVAL;
    }
    if (n > CODEC_BATCH_MSGS_MAX) {
        return KHO_ETOOLARGE;
    }
    for (size_t i = 0; i < n; i++) {
        if (msgs[i].snapshot.len > CODEC_BATCH_BYTES_MAX) {
            return KHO_ETOOLARGE;
        }
        if (check_msg(&msgs[i]) != NULL) {
            return KHO_EINVAL;
        }
        n_entries += msgs[i].n_entries;
        n_meta += msg_has_snapshot(&msgs[i]);
    }
    if (n_entries > CODEC_BATCH_ENTRIES_MAX) {
        return KHO_ETOOLARGE;
    }
    int rc = batch_to_pb(msgs, n, n_entries, n_meta, &pb);
    if (rc != KHO_OK) {
        return rc;
    }
    /* Payload sizes are bounded above, so this sum cannot overflow. */
    size_t size = kho__raft__batch__get_packed_size(&pb.batch);
    if (size > CODEC_BATCH_BYTES_MAX) {
        rc = KHO_ETOOLARGE;
        goto fail;
    }
    *out = malloc(size);
    if (*out == NULL) {
        rc = KHO_ENOMEM;
        goto fail;
    }
    *len = kho__raft__batch__pack(&pb.batch, *out);
    CODEC_ASSERT(*len == size);
fail:
    batch_pb_free(&pb);
    return rc;
}

int codec_msg_encode(const struct raft_msg *m, uint8_t **out, size_t *len)
{
    return codec_batch_encode(m, 1, out, len);
}

/* --- protobuf-c -> C structs ---------------------------------------------- */

static int meta_from_pb(const Kho__Raft__SnapshotMeta *pm,
                        struct raft_snapshot_meta *out)
{
    memset(out, 0, sizeof(*out));
    if (pm == NULL) {
        return KHO_OK;
    }
    out->index = pm->index;
    out->term = pm->term;
    if (pm->conf == NULL) {
        return KHO_OK;
    }
    if (pm->conf->n_members > RAFT_MEMBERS_MAX) {
        return KHO_ECORRUPT;
    }
    for (size_t i = 0; i < pm->conf->n_members; i++) {
        out->conf.members[i].id = pm->conf->members[i]->id;
        /* A negative (unknown) enum value becomes a huge one and is then
         * refused by check_conf(). */
        out->conf.members[i].role = (uint32_t)pm->conf->members[i]->role;
    }
    out->conf.n = (uint32_t)pm->conf->n_members;
    return KHO_OK;
}

/* Counts what the owned copy of `pm` needs, refusing what the C structs
 * cannot hold. */
static const char *size_msg_pb(const Kho__Raft__Message *pm, size_t *n_entries,
                               size_t *n_bytes)
{
    if (pm->n_entries > RAFT_MSG_ENTRIES_MAX) {
        return "too many entries in a message";
    }
    for (size_t i = 0; i < pm->n_entries; i++) {
        if (pm->entries[i]->data.len > RAFT_ENTRY_BYTES_MAX) {
            return "entry over RAFT_ENTRY_BYTES_MAX";
        }
        *n_bytes += pm->entries[i]->data.len;
    }
    if (pm->snapshot_meta != NULL && pm->snapshot_meta->conf != NULL &&
        pm->snapshot_meta->conf->n_members > RAFT_MEMBERS_MAX) {
        return "too many members";
    }
    *n_entries += pm->n_entries;
    *n_bytes += pm->snapshot_data.len;
    return NULL;
}

/* Copies `len` bytes to the cursor `*bytes` and advances it; NULL if none. */
static uint8_t *copy_bytes(uint8_t **bytes, const uint8_t *src, size_t len)
{
    if (len == 0) {
        return NULL;
    }
    uint8_t *dst = *bytes;
    memcpy(dst, src, len);
    *bytes += len;
    return dst;
}

/* Fills `m` from `pm` (already sized by size_msg_pb()), taking entries from
 * `ents` and payload space from the cursor `*bytes`. */
static void msg_from_pb(const Kho__Raft__Message *pm, struct raft_msg *m,
                        struct raft_entry *ents, uint8_t **bytes)
{
    memset(m, 0, sizeof(*m));
    m->group_id = pm->group_id;
    m->type = (uint32_t)pm->type;
    m->flags = pm->flags;
    m->from = pm->from;
    m->to = pm->to;
    m->term = pm->term;
    m->log_term = pm->log_term;
    m->index = pm->index;
    m->commit = pm->commit;
    m->ctx = pm->ctx;
    m->hint_index = pm->hint_index;
    m->hint_term = pm->hint_term;
    m->reject = pm->reject != 0;
    m->quiesce = pm->quiesce != 0;
    m->n_entries = (uint32_t)pm->n_entries;
    m->entries = pm->n_entries > 0 ? ents : NULL;
    for (size_t i = 0; i < pm->n_entries; i++) {
        const Kho__Raft__Entry *pe = pm->entries[i];
        ents[i].term = pe->term;
        ents[i].index = pe->index;
        ents[i].type = (uint32_t)pe->type;
        ents[i].len = (uint32_t)pe->data.len;
        ents[i].data = copy_bytes(bytes, pe->data.data, pe->data.len);
    }
    int rc = meta_from_pb(pm->snapshot_meta, &m->snapshot.meta);
    CODEC_ASSERT(rc == KHO_OK); /* sized by size_msg_pb() */
    m->snapshot.len = pm->snapshot_data.len;
    m->snapshot.data =
        copy_bytes(bytes, pm->snapshot_data.data, pm->snapshot_data.len);
}

static int batch_from_pb(const Kho__Raft__Batch *pb, struct codec_batch *out,
                         const char **why)
{
    size_t n_entries = 0;
    size_t n_bytes = 0;
    for (size_t i = 0; i < pb->n_msgs; i++) {
        *why = size_msg_pb(pb->msgs[i], &n_entries, &n_bytes);
        if (*why != NULL) {
            return KHO_ECORRUPT;
        }
    }
    out->msgs = calloc(pb->n_msgs, sizeof(*out->msgs));
    out->entries_ = calloc(n_entries + 1, sizeof(*out->entries_));
    out->bytes_ = malloc(n_bytes + 1);
    if (out->msgs == NULL || out->entries_ == NULL || out->bytes_ == NULL) {
        *why = "out of memory";
        return KHO_ENOMEM;
    }
    struct raft_entry *ents = out->entries_;
    uint8_t *bytes = out->bytes_;
    for (size_t i = 0; i < pb->n_msgs; i++) {
        msg_from_pb(pb->msgs[i], &out->msgs[i], ents, &bytes);
        ents += pb->msgs[i]->n_entries;
        out->n = i + 1;
        *why = check_msg(&out->msgs[i]);
        if (*why != NULL) {
            return KHO_ECORRUPT;
        }
    }
    return KHO_OK;
}

int codec_batch_decode(const uint8_t *buf, size_t len, struct codec_batch *out,
                       const char **why)
{
    Kho__Raft__Batch *pb = NULL;
    const char *reason = NULL;
    int rc = KHO_ECORRUPT;
    memset(out, 0, sizeof(*out));
    if (len == 0 || buf == NULL) {
        reason = "empty batch";
        goto fail;
    }
    if (len > CODEC_BATCH_BYTES_MAX) {
        reason = "batch over CODEC_BATCH_BYTES_MAX";
        goto fail;
    }
    reason = scan_batch(buf, len);
    if (reason != NULL) {
        goto fail;
    }
    /* protobuf-c cannot tell out-of-memory from bad input; after the scan
     * above bounds allocation, a failure here means bad input. */
    pb = kho__raft__batch__unpack(NULL, len, buf);
    if (pb == NULL) {
        reason = "malformed protobuf";
        goto fail;
    }
    if (pb->n_msgs == 0) {
        reason = "batch without messages";
        goto fail;
    }
    rc = batch_from_pb(pb, out, &reason);
    if (rc != KHO_OK) {
        goto fail;
    }
    kho__raft__batch__free_unpacked(pb, NULL);
    return KHO_OK;
fail:
    if (pb != NULL) {
        kho__raft__batch__free_unpacked(pb, NULL);
    }
    codec_batch_free(out);
    if (why != NULL) {
        *why = reason;
    }
    return rc;
}

void codec_batch_free(struct codec_batch *b)
{
    if (b == NULL) {
        return;
    }
    free(b->msgs);
    free(b->entries_);
    free(b->bytes_);
    memset(b, 0, sizeof(*b));
}

/* --- Stored records ------------------------------------------------------- */

int codec_hard_state_encode(const struct raft_hard_state *hs, uint8_t *buf,
                            size_t cap, size_t *len)
{
    Kho__Raft__HardState pb = KHO__RAFT__HARD_STATE__INIT;
    *len = 0;
    if (!term_ok(hs->term) || !index_ok(hs->commit)) {
        return KHO_EINVAL;
    }
    pb.term = hs->term;
    pb.vote = hs->vote;
    pb.commit = hs->commit;
    size_t size = kho__raft__hard_state__get_packed_size(&pb);
    CODEC_ASSERT(size <= CODEC_HARD_STATE_BYTES_MAX);
    if (size > cap) {
        return KHO_ETOOLARGE;
    }
    *len = kho__raft__hard_state__pack(&pb, buf);
    CODEC_ASSERT(*len == size);
    return KHO_OK;
}

int codec_hard_state_decode(const uint8_t *buf, size_t len,
                            struct raft_hard_state *out, const char **why)
{
    Kho__Raft__HardState *pb = NULL;
    const char *reason = NULL;
    memset(out, 0, sizeof(*out));
    if (len == 0) {
        return KHO_OK; /* proto3 encodes the all-zero state as nothing */
    }
    if (len > CODEC_HARD_STATE_BYTES_MAX || buf == NULL) {
        reason = "hard state over CODEC_HARD_STATE_BYTES_MAX";
        goto fail;
    }
    pb = kho__raft__hard_state__unpack(NULL, len, buf);
    if (pb == NULL) {
        reason = "malformed protobuf in a hard state";
        goto fail;
    }
    out->term = pb->term;
    out->vote = pb->vote;
    out->commit = pb->commit;
    kho__raft__hard_state__free_unpacked(pb, NULL);
    if (!term_ok(out->term) || !index_ok(out->commit)) {
        reason = "hard state term or commit out of range";
        goto fail;
    }
    return KHO_OK;
fail:
    memset(out, 0, sizeof(*out));
    if (why != NULL) {
        *why = reason;
    }
    return KHO_ECORRUPT;
}

int codec_snapshot_meta_encode(const struct raft_snapshot_meta *m, uint8_t *buf,
                               size_t cap, size_t *len)
{
    struct meta_pb pb;
    *len = 0;
    if (check_snapshot_meta(m) != NULL) {
        return KHO_EINVAL;
    }
    meta_to_pb(m, &pb);
    size_t size = kho__raft__snapshot_meta__get_packed_size(&pb.meta);
    CODEC_ASSERT(size <= CODEC_SNAPSHOT_META_BYTES_MAX);
    if (size > cap) {
        return KHO_ETOOLARGE;
    }
    *len = kho__raft__snapshot_meta__pack(&pb.meta, buf);
    CODEC_ASSERT(*len == size);
    return KHO_OK;
}

int codec_snapshot_meta_decode(const uint8_t *buf, size_t len,
                               struct raft_snapshot_meta *out, const char **why)
{
    Kho__Raft__SnapshotMeta *pb = NULL;
    const char *reason = NULL;
    memset(out, 0, sizeof(*out));
    if (len == 0) {
        return KHO_OK; /* proto3 encodes "no snapshot" as nothing */
    }
    /* The byte cap bounds what protobuf-c can allocate here, so no
     * pre-scan is needed. */
    if (len > CODEC_SNAPSHOT_META_BYTES_MAX || buf == NULL) {
        reason = "snapshot metadata over CODEC_SNAPSHOT_META_BYTES_MAX";
        goto fail;
    }
    pb = kho__raft__snapshot_meta__unpack(NULL, len, buf);
    if (pb == NULL) {
        reason = "malformed protobuf in snapshot metadata";
        goto fail;
    }
    if (meta_from_pb(pb, out) != KHO_OK) {
        reason = "too many members";
        goto fail;
    }
    reason = check_snapshot_meta(out);
    if (reason != NULL) {
        goto fail;
    }
    kho__raft__snapshot_meta__free_unpacked(pb, NULL);
    return KHO_OK;
fail:
    if (pb != NULL) {
        kho__raft__snapshot_meta__free_unpacked(pb, NULL);
    }
    memset(out, 0, sizeof(*out));
    if (why != NULL) {
        *why = reason;
    }
    return KHO_ECORRUPT;
}

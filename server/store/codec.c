/*
 * codec.c - the byte layouts of stored records and of state-machine
 * record bodies (store.h describes them). Pure functions: no LMDB, no
 * store.
 * Decoders treat their input as untrusted (it comes from the disk or a
 * peer) and answer KHO_ECORRUPT / KHO_EINVAL, never assert.
 */
#include "internal.h"

#include <string.h>

#include "../../client/kho_shard.h"

void store_log_key(uint8_t k[LOG_KEY_BYTES], uint64_t group, uint64_t index)
{
    put_be64(k, group);
    put_be64(k + 8, index);
}

void store_meta_key(uint8_t k[META_KEY_BYTES], uint64_t group,
                    enum meta_tag tag)
{
    put_be64(k, group);
    k[8] = (uint8_t)tag;
}

/* Entry and meta records share a header shape: bytes 4..8 hold a crc over
 * the key, bytes 0..4 and everything from byte 8 on. */
static uint32_t record_crc(const uint8_t *key, size_t key_len, const uint8_t *v,
                           size_t len)
{
    uint32_t c = store_crc32c_init();
    c = store_crc32c_update(c, key, key_len);
    c = store_crc32c_update(c, v, 4);
    c = store_crc32c_update(c, v + 8, len - 8);
    return store_crc32c_final(c);
}

static uint32_t entry_crc(uint64_t group, uint64_t index, const uint8_t *hdr,
                          const uint8_t *data, size_t len)
{
    uint8_t k[LOG_KEY_BYTES];
    store_log_key(k, group, index);
    uint32_t c = store_crc32c_init();
    c = store_crc32c_update(c, k, sizeof(k));
    c = store_crc32c_update(c, hdr, 4);
    c = store_crc32c_update(c, hdr + 8, 8);
    c = store_crc32c_update(c, data, len);
    return store_crc32c_final(c);
}

void store_entry_encode(uint8_t *v, uint64_t group, const struct raft_entry *e)
{
    v[0] = RECORD_VERSION;
    v[1] = (uint8_t)e->type;
    put_le16(v + 2, 0);
    put_le64(v + 8, e->term);
    if (e->len > 0) {
        memcpy(v + ENTRY_HEADER_BYTES, e->data, e->len);
    }
    put_le32(v + 4,
             entry_crc(group, e->index, v, v + ENTRY_HEADER_BYTES, e->len));
}

int store_entry_decode(const uint8_t *v, size_t len, uint64_t group,
                       uint64_t index, struct raft_entry *out)
{
    if (len < ENTRY_HEADER_BYTES ||
        len - ENTRY_HEADER_BYTES > STORE_ENTRY_BYTES_MAX) {
        return KHO_ECORRUPT;
    }
    size_t dlen = len - ENTRY_HEADER_BYTES;
    if (get_le32(v + 4) !=
        entry_crc(group, index, v, v + ENTRY_HEADER_BYTES, dlen)) {
        return KHO_ECORRUPT;
    }
    if (v[0] != RECORD_VERSION || v[1] > RAFT_ENTRY_CONF ||
        get_le16(v + 2) != 0 || get_le64(v + 8) > RAFT_TERM_MAX) {
        return KHO_ECORRUPT;
    }
    out->term = get_le64(v + 8);
    out->index = index;
    out->type = v[1];
    out->len = (uint32_t)dlen;
    out->data = dlen > 0 ? (uint8_t *)(v + ENTRY_HEADER_BYTES) : NULL;
    return KHO_OK;
}

static void meta_header(uint8_t *v, enum meta_tag tag)
{
    v[0] = RECORD_VERSION;
    v[1] = (uint8_t)tag;
    put_le16(v + 2, 0);
}

static void meta_seal(uint8_t *v, size_t len, uint64_t group, enum meta_tag tag)
{
    uint8_t k[META_KEY_BYTES];
    store_meta_key(k, group, tag);
    put_le32(v + 4, record_crc(k, sizeof(k), v, len));
}

static int meta_open(const uint8_t *v, size_t len, uint64_t group,
                     enum meta_tag tag)
{
    uint8_t k[META_KEY_BYTES];
    if (len < META_HEADER_BYTES) {
        return KHO_ECORRUPT;
    }
    store_meta_key(k, group, tag);
    if (get_le32(v + 4) != record_crc(k, sizeof(k), v, len) ||
        v[0] != RECORD_VERSION || v[1] != tag || get_le16(v + 2) != 0) {
        return KHO_ECORRUPT;
    }
    return KHO_OK;
}

size_t store_meta_hs_encode(uint8_t *v, uint64_t group,
                            const struct raft_hard_state *hs)
{
    meta_header(v, META_HS);
    put_le64(v + 8, hs->term);
    put_le64(v + 16, hs->vote);
    put_le64(v + 24, hs->commit);
    meta_seal(v, META_HS_BYTES, group, META_HS);
    return META_HS_BYTES;
}

int store_meta_hs_decode(const uint8_t *v, size_t len, uint64_t group,
                         struct raft_hard_state *hs)
{
    if (len != META_HS_BYTES || meta_open(v, len, group, META_HS) != KHO_OK) {
        return KHO_ECORRUPT;
    }
    hs->term = get_le64(v + 8);
    hs->vote = get_le64(v + 16);
    hs->commit = get_le64(v + 24);
    if (hs->term > RAFT_TERM_MAX || hs->commit > RAFT_INDEX_MAX) {
        return KHO_ECORRUPT;
    }
    return KHO_OK;
}

size_t store_meta_u64_encode(uint8_t *v, uint64_t group, enum meta_tag tag,
                             uint64_t x)
{
    meta_header(v, tag);
    put_le64(v + 8, x);
    meta_seal(v, META_U64_BYTES, group, tag);
    return META_U64_BYTES;
}

int store_meta_u64_decode(const uint8_t *v, size_t len, uint64_t group,
                          enum meta_tag tag, uint64_t *x)
{
    if (len != META_U64_BYTES || meta_open(v, len, group, tag) != KHO_OK) {
        return KHO_ECORRUPT;
    }
    *x = get_le64(v + 8);
    return KHO_OK;
}

size_t store_meta_snap_encode(uint8_t *v, uint64_t group,
                              const struct raft_snapshot_meta *m)
{
    meta_header(v, META_SNAP);
    put_le64(v + 8, m->index);
    put_le64(v + 16, m->term);
    size_t n = raft_conf_encode(&m->conf, v + 24, RAFT_CONF_ENCODED_MAX);
    if (n == 0) {
        return 0;
    }
    size_t len = META_HEADER_BYTES + 16u + n;
    meta_seal(v, len, group, META_SNAP);
    return len;
}

int store_meta_snap_decode(const uint8_t *v, size_t len, uint64_t group,
                           struct raft_snapshot_meta *m)
{
    if (len < META_HEADER_BYTES + 16u || len > META_SNAP_BYTES_MAX ||
        meta_open(v, len, group, META_SNAP) != KHO_OK) {
        return KHO_ECORRUPT;
    }
    m->index = get_le64(v + 8);
    m->term = get_le64(v + 16);
    if (m->index > RAFT_INDEX_MAX || m->term > RAFT_TERM_MAX) {
        return KHO_ECORRUPT;
    }
    return raft_conf_decode(v + 24, len - 24, &m->conf) == KHO_OK
               ? KHO_OK
               : KHO_ECORRUPT;
}

size_t store_meta_conf_encode(uint8_t *v, uint64_t group, uint64_t index,
                              const struct raft_conf *c)
{
    meta_header(v, META_CONF);
    put_le64(v + 8, index);
    size_t n = raft_conf_encode(c, v + 16, RAFT_CONF_ENCODED_MAX);
    if (n == 0) {
        return 0;
    }
    size_t len = META_HEADER_BYTES + 8u + n;
    meta_seal(v, len, group, META_CONF);
    return len;
}

int store_meta_conf_decode(const uint8_t *v, size_t len, uint64_t group,
                           uint64_t *index, struct raft_conf *c)
{
    if (len < META_HEADER_BYTES + 8u || len > META_CONF_BYTES_MAX ||
        meta_open(v, len, group, META_CONF) != KHO_OK) {
        return KHO_ECORRUPT;
    }
    *index = get_le64(v + 8);
    if (*index > RAFT_INDEX_MAX) {
        return KHO_ECORRUPT;
    }
    return raft_conf_decode(v + 16, len - 16, c) == KHO_OK ? KHO_OK
                                                           : KHO_ECORRUPT;
}

/* --- Record bodies ------------------------------------------------------- */

size_t store_body_size(const struct store_record *r)
{
    return BODY_FIXED_BYTES + r->writer_len + r->value_len;
}

void store_body_encode(uint8_t *p, const struct store_record *r)
{
    put_le64(p, r->version);
    put_le64(p + 8, r->create_rev);
    put_le64(p + 16, r->mod_rev);
    put_le64(p + 24, r->time_ms);
    p[32] = (uint8_t)r->writer_len;
    if (r->writer_len > 0) {
        memcpy(p + BODY_FIXED_BYTES, r->writer, r->writer_len);
    }
    if (r->value_len > 0) {
        memcpy(p + BODY_FIXED_BYTES + r->writer_len, r->value, r->value_len);
    }
}

int store_body_decode(const uint8_t *p, size_t len, struct store_record *r)
{
    if (len < BODY_FIXED_BYTES || len > BODY_BYTES_MAX) {
        return KHO_ECORRUPT;
    }
    size_t wlen = p[32];
    if (wlen > STORE_WRITER_BYTES_MAX || len - BODY_FIXED_BYTES < wlen) {
        return KHO_ECORRUPT;
    }
    r->version = get_le64(p);
    r->create_rev = get_le64(p + 8);
    r->mod_rev = get_le64(p + 16);
    r->time_ms = get_le64(p + 24);
    r->writer = wlen > 0 ? (const char *)(p + BODY_FIXED_BYTES) : NULL;
    r->writer_len = wlen;
    r->value_len = len - BODY_FIXED_BYTES - wlen;
    r->value = r->value_len > 0 ? p + BODY_FIXED_BYTES + wlen : NULL;
    return r->value_len <= STORE_VALUE_BYTES_MAX ? KHO_OK : KHO_ECORRUPT;
}

/* --- Key hashes ---------------------------------------------------------- */

/* FNV-1a folded through a 64-bit finaliser (MurmurHash3's fmix64), so that
 * every key byte reaches every hash bit. */
uint64_t store_key_hash(const uint8_t *key, size_t len)
{
    return kho_key_hash(key, len); /* the same function as the shards' */
}

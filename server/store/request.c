/*
 * request.c - the byte layout of state-machine requests (store.h, "State-
 * machine requests"). Pure functions: no LMDB, no store. The decoder treats
 * its input as untrusted - it is a log entry that any client could have
 * shaped - and checks every length before it reads, so that a malformed
 * entry is a deterministic no-op on every replica, never a crash.
 */
#include "internal.h"

#include <string.h>

/* --- Checks shared by the encoder and the decoder ------------------------ */

static int check_key(size_t key_len)
{
    if (key_len == 0) {
        return KHO_EINVAL;
    }
    return key_len > STORE_KEY_BYTES_MAX ? KHO_ETOOLARGE : KHO_OK;
}

static int check_cmp(const struct store_compare *c)
{
    if (c->target > STORE_CMP_VALUE || c->op > STORE_CMP_GT) {
        return KHO_EINVAL;
    }
    /* Canonical: the field a target does not use is empty. */
    if (c->target == STORE_CMP_VALUE ? c->number != 0 : c->value_len != 0) {
        return KHO_EINVAL;
    }
    if (c->value_len > STORE_VALUE_BYTES_MAX) {
        return KHO_ETOOLARGE;
    }
    return check_key(c->key_len);
}

static int check_op(const struct store_op *o)
{
    if (o->op != STORE_OP_PUT && o->op != STORE_OP_DELETE) {
        return KHO_EINVAL;
    }
    if (o->op == STORE_OP_DELETE && o->value_len != 0) {
        return KHO_EINVAL;
    }
    if (o->value_len > STORE_VALUE_BYTES_MAX) {
        return KHO_ETOOLARGE;
    }
    return check_key(o->key_len);
}

/* No two ops on one key. Hashes first, so that 128 long keys cost 8128
 * integer compares and a memcmp only where hashes agree. */
static int check_distinct(const struct store_op *ops, size_t n)
{
    uint64_t h[STORE_TXN_OPS_MAX];
    for (size_t i = 0; i < n; i++) {
        h[i] = store_key_hash(ops[i].key, ops[i].key_len);
    }
    for (size_t i = 0; i < n; i++) {
        for (size_t j = i + 1; j < n; j++) {
            if (h[i] == h[j] && ops[i].key_len == ops[j].key_len &&
                memcmp(ops[i].key, ops[j].key, ops[i].key_len) == 0) {
                return KHO_EINVAL;
            }
        }
    }
    return KHO_OK;
}

static int check_shape(const struct store_request *r)
{
    if ((r->flags & ~(uint32_t)(STORE_REQ_SINGLE | STORE_REQ_CHECK)) != 0) {
        return KHO_EINVAL;
    }
    if (r->n_cmp > STORE_TXN_CMPS_MAX || r->n_ops > STORE_TXN_OPS_MAX ||
        r->writer_len > STORE_WRITER_BYTES_MAX) {
        return KHO_ETOOLARGE;
    }
    if ((r->flags & STORE_REQ_CHECK) != 0) {
        /* A check marker (store.h, "Consistency checks") carries nothing
         * to apply and no session: exactly one encoding per meaning. */
        bool bare = r->flags == STORE_REQ_CHECK && r->n_cmp == 0 &&
                    r->n_ops == 0 && r->session == 0 && r->seq == 0;
        return bare ? KHO_OK : KHO_EINVAL;
    }
    if (r->n_cmp + r->n_ops == 0 ||
        ((r->flags & STORE_REQ_SINGLE) != 0 && r->n_ops != 1)) {
        return KHO_EINVAL;
    }
    return KHO_OK;
}

/* Every rule of store.h but the total size; KHO_OK or the error. */
static int check_request(const struct store_request *r)
{
    int rc = check_shape(r);
    for (size_t i = 0; rc == KHO_OK && i < r->n_cmp; i++) {
        rc = check_cmp(&r->cmps[i]);
    }
    for (size_t i = 0; rc == KHO_OK && i < r->n_ops; i++) {
        rc = check_op(&r->ops[i]);
    }
    if (rc == KHO_OK) {
        rc = check_distinct(r->ops, r->n_ops);
    }
    return rc;
}

/* The encoded size, in 64 bits so that no sum of limits can wrap. */
static uint64_t encoded_size(const struct store_request *r)
{
    uint64_t n = STORE_REQ_HEADER_BYTES + (uint64_t)r->writer_len;
    for (size_t i = 0; i < r->n_cmp; i++) {
        n += STORE_CMP_HEADER_BYTES + (uint64_t)r->cmps[i].key_len +
             r->cmps[i].value_len;
    }
    for (size_t i = 0; i < r->n_ops; i++) {
        n += STORE_OP_HEADER_BYTES + (uint64_t)r->ops[i].key_len +
             r->ops[i].value_len;
    }
    return n;
}

/* --- Encoding ------------------------------------------------------------ */

static bool bytes_ok(const void *p, size_t len)
{
    return len == 0 || p != NULL;
}

/* The caller's pointers (the decoder sets its own). */
static int check_pointers(const struct store_request *r)
{
    bool ok = bytes_ok(r->writer, r->writer_len) &&
              bytes_ok(r->cmps, r->n_cmp) && bytes_ok(r->ops, r->n_ops);
    for (size_t i = 0; ok && i < r->n_cmp; i++) {
        ok = bytes_ok(r->cmps[i].key, r->cmps[i].key_len) &&
             bytes_ok(r->cmps[i].value, r->cmps[i].value_len);
    }
    for (size_t i = 0; ok && i < r->n_ops; i++) {
        ok = bytes_ok(r->ops[i].key, r->ops[i].key_len) &&
             bytes_ok(r->ops[i].value, r->ops[i].value_len);
    }
    return ok ? KHO_OK : KHO_EINVAL;
}

/* What the encoder checks: the limits first, so that the loops over the
 * caller's arrays are bounded. */
static int check_for_encode(const struct store_request *r)
{
    int rc = check_shape(r);
    if (rc == KHO_OK) {
        rc = check_pointers(r);
    }
    return rc == KHO_OK ? check_request(r) : rc;
}

size_t store_request_size(const struct store_request *r)
{
    if (check_for_encode(r) != KHO_OK) {
        return 0;
    }
    uint64_t n = encoded_size(r);
    return n <= STORE_ENTRY_BYTES_MAX ? (size_t)n : 0;
}

static uint8_t *put_bytes(uint8_t *p, const void *src, size_t len)
{
    if (len > 0) {
        memcpy(p, src, len);
    }
    return p + len;
}

static uint8_t *encode_cmp(uint8_t *p, const struct store_compare *c)
{
    p[0] = (uint8_t)c->target;
    p[1] = (uint8_t)c->op;
    put_le16(p + 2, (uint16_t)c->key_len);
    put_le32(p + 4, (uint32_t)c->value_len);
    put_le64(p + 8, c->number);
    p = put_bytes(p + STORE_CMP_HEADER_BYTES, c->key, c->key_len);
    return put_bytes(p, c->value, c->value_len);
}

static uint8_t *encode_op(uint8_t *p, const struct store_op *o)
{
    p[0] = (uint8_t)o->op;
    p[1] = 0;
    put_le16(p + 2, (uint16_t)o->key_len);
    put_le32(p + 4, (uint32_t)o->value_len);
    p = put_bytes(p + STORE_OP_HEADER_BYTES, o->key, o->key_len);
    return put_bytes(p, o->value, o->value_len);
}

int store_request_encode(const struct store_request *r, uint8_t *buf,
                         size_t cap, size_t *len_out)
{
    int rc = check_for_encode(r);
    if (rc != KHO_OK) {
        return rc;
    }
    uint64_t need = encoded_size(r);
    if (need > STORE_ENTRY_BYTES_MAX) {
        return KHO_ETOOLARGE;
    }
    *len_out = (size_t)need;
    if (cap < need) {
        return KHO_ETOOLARGE;
    }
    buf[0] = (uint8_t)STORE_REQ_MAGIC;
    buf[1] = (uint8_t)r->flags;
    put_le16(buf + 2, (uint16_t)r->n_cmp);
    put_le16(buf + 4, (uint16_t)r->n_ops);
    put_le16(buf + 6, (uint16_t)r->writer_len);
    put_le64(buf + 8, r->session);
    put_le64(buf + 16, r->seq);
    put_le64(buf + 24, r->time_ms);
    uint8_t *p =
        put_bytes(buf + STORE_REQ_HEADER_BYTES, r->writer, r->writer_len);
    for (size_t i = 0; i < r->n_cmp; i++) {
        p = encode_cmp(p, &r->cmps[i]);
    }
    for (size_t i = 0; i < r->n_ops; i++) {
        p = encode_op(p, &r->ops[i]);
    }
    STORE_ASSERT((size_t)(p - buf) == need);
    return KHO_OK;
}

/* --- Decoding ------------------------------------------------------------ */

/* A cursor over untrusted bytes: every take checks what is left. */
struct reader {
    const uint8_t *p;
    size_t left;
};

static const uint8_t *take(struct reader *rd, size_t n)
{
    if (rd->left < n) {
        return NULL;
    }
    const uint8_t *at = rd->p;
    rd->p += n;
    rd->left -= n;
    return at;
}

/* Key and value of a compare or an op, after their header. */
static int take_kv(struct reader *rd, size_t key_len, size_t value_len,
                   const uint8_t **key, const uint8_t **value)
{
    *key = take(rd, key_len);
    if (*key == NULL || rd->left < value_len) {
        return KHO_EINVAL;
    }
    *value = value_len > 0 ? take(rd, value_len) : NULL;
    return KHO_OK;
}

static int decode_cmp(struct reader *rd, struct store_compare *c)
{
    const uint8_t *h = take(rd, STORE_CMP_HEADER_BYTES);
    if (h == NULL) {
        return KHO_EINVAL;
    }
    *c = (struct store_compare){.target = h[0],
                                .op = h[1],
                                .key_len = get_le16(h + 2),
                                .value_len = get_le32(h + 4),
                                .number = get_le64(h + 8)};
    int rc = check_cmp(c);
    if (rc != KHO_OK) {
        return rc;
    }
    return take_kv(rd, c->key_len, c->value_len, &c->key, &c->value);
}

static int decode_op(struct reader *rd, struct store_op *o)
{
    const uint8_t *h = take(rd, STORE_OP_HEADER_BYTES);
    if (h == NULL || h[1] != 0) {
        return KHO_EINVAL;
    }
    *o = (struct store_op){
        .op = h[0], .key_len = get_le16(h + 2), .value_len = get_le32(h + 4)};
    int rc = check_op(o);
    if (rc != KHO_OK) {
        return rc;
    }
    return take_kv(rd, o->key_len, o->value_len, &o->key, &o->value);
}

static int decode_header(struct reader *rd, struct store_request *r)
{
    const uint8_t *h = take(rd, STORE_REQ_HEADER_BYTES);
    if (h == NULL || h[0] != STORE_REQ_MAGIC) {
        return KHO_EINVAL;
    }
    *r = (struct store_request){.flags = h[1],
                                .n_cmp = get_le16(h + 2),
                                .n_ops = get_le16(h + 4),
                                .writer_len = get_le16(h + 6),
                                .session = get_le64(h + 8),
                                .seq = get_le64(h + 16),
                                .time_ms = get_le64(h + 24)};
    int rc = check_shape(r);
    if (rc != KHO_OK) {
        return rc;
    }
    r->writer = (const char *)take(rd, r->writer_len);
    return r->writer != NULL ? KHO_OK : KHO_EINVAL;
}

int store_request_decode(const uint8_t *buf, size_t len,
                         struct store_request *out, struct store_compare *cmps,
                         struct store_op *ops)
{
    struct reader rd = {.p = buf, .left = len};
    struct store_request r;
    if (buf == NULL) {
        return KHO_EINVAL;
    }
    if (len > STORE_ENTRY_BYTES_MAX) {
        return KHO_ETOOLARGE;
    }
    int rc = decode_header(&rd, &r);
    for (size_t i = 0; rc == KHO_OK && i < r.n_cmp; i++) {
        rc = decode_cmp(&rd, &cmps[i]);
    }
    for (size_t i = 0; rc == KHO_OK && i < r.n_ops; i++) {
        rc = decode_op(&rd, &ops[i]);
    }
    if (rc == KHO_OK && rd.left != 0) {
        rc = KHO_EINVAL; /* the entry is exactly as long as it declares */
    }
    if (rc == KHO_OK) {
        rc = check_distinct(ops, r.n_ops);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    r.writer = r.writer_len > 0 ? r.writer : NULL;
    r.cmps = cmps;
    r.ops = ops;
    *out = r;
    return KHO_OK;
}

/*
 * apply.c - the registry state machine: applying one request (store.h,
 * "State-machine requests") at a raft index. Everything decided here is a
 * function of the request bytes and the stored state alone - no clock, no
 * local setting but the replicated-alike ones - so every replica that
 * applies the same log holds the same bytes. Answers for the client
 * (a failed compare, a missing key, a full session table, a malformed
 * request) are results in *out, never store errors: those are reserved for
 * the store itself failing (corruption, a full map, I/O). Every record is
 * under the group's data id (store.h top).
 */
#include "check.h"
#include "internal.h"

#include <string.h>

/* --- Compares ------------------------------------------------------------ */

static int cmp_u64(uint64_t a, uint64_t b)
{
    return a < b ? -1 : a > b;
}

/* Bytewise: memcmp over the common length, then the shorter first. */
static int cmp_bytes(const uint8_t *a, size_t alen, const uint8_t *b,
                     size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int c = n > 0 ? memcmp(a, b, n) : 0;
    if (c != 0) {
        return c < 0 ? -1 : 1;
    }
    return cmp_u64(alen, blen);
}

static bool holds(uint32_t op, int c)
{
    switch (op) {
    case STORE_CMP_EQ:
        return c == 0;
    case STORE_CMP_NE:
        return c != 0;
    case STORE_CMP_LT:
        return c < 0;
    default: /* STORE_CMP_GT: the decoder admits no other */
        return c > 0;
    }
}

/* Whether compare c holds against the key's record (exists false: absent,
 * its numbers 0 and no value to compare). */
static bool cmp_holds(const struct store_compare *c, bool exists,
                      const struct store_record *r)
{
    switch (c->target) {
    case STORE_CMP_VERSION:
        return holds(c->op, cmp_u64(exists ? r->version : 0, c->number));
    case STORE_CMP_CREATE_REV:
        return holds(c->op, cmp_u64(exists ? r->create_rev : 0, c->number));
    case STORE_CMP_MOD_REV:
        return holds(c->op, cmp_u64(exists ? r->mod_rev : 0, c->number));
    default: /* STORE_CMP_VALUE */
        return exists && holds(c->op, cmp_bytes(r->value, r->value_len,
                                                c->value, c->value_len));
    }
}

/* Looks a key up for the request: *exists, and r when it does. */
static int lookup(struct store *s, MDB_txn *txn, uint64_t data,
                  const uint8_t *key, size_t key_len, struct store_record *r,
                  bool *exists, bool *other)
{
    int rc = store_kv_find(s, txn, data, key, key_len, r, other);
    *exists = rc == KHO_OK;
    return rc == KHO_ENOTFOUND ? KHO_OK : rc;
}

/* Sets *failed to the 1-based index of the first compare that fails, or 0
 * when all hold. */
static int run_compares(struct store *s, MDB_txn *txn, uint64_t data,
                        const struct store_request *q, uint32_t *failed)
{
    *failed = 0;
    for (size_t i = 0; i < q->n_cmp; i++) {
        const struct store_compare *c = &q->cmps[i];
        struct store_record r;
        bool exists = false, other = false;
        int rc = lookup(s, txn, data, c->key, c->key_len, &r, &exists, &other);
        if (rc != KHO_OK) {
            return rc;
        }
        if (!cmp_holds(c, exists, &r)) {
            *failed = (uint32_t)i + 1;
            return KHO_OK;
        }
    }
    return KHO_OK;
}

/* --- Long-key collisions ------------------------------------------------- */

/*
 * A put must find its LMDB key free or holding its own key (store.h top):
 * checked for every put before any op is applied, so that a refused
 * request leaves nothing behind. Two puts of one request whose distinct
 * long keys map to one LMDB key collide as well.
 */
static bool long_put(const struct store_op *o)
{
    return o->op == STORE_OP_PUT && o->key_len > STORE_KV_INLINE_KEY_BYTES;
}

/* Two long keys share an LMDB key when their inline prefixes and hashes
 * agree. Hashes are computed once: the pairs cost integer compares, and a
 * prefix compare only where hashes agree. */
static bool puts_collide(const struct store *s, const struct store_request *q)
{
    uint64_t h[STORE_TXN_OPS_MAX];
    for (size_t i = 0; i < q->n_ops; i++) {
        h[i] = long_put(&q->ops[i])
                   ? store_hash(s, q->ops[i].key, q->ops[i].key_len)
                   : 0;
    }
    for (size_t i = 0; i < q->n_ops; i++) {
        for (size_t j = i + 1; long_put(&q->ops[i]) && j < q->n_ops; j++) {
            if (long_put(&q->ops[j]) && h[i] == h[j] &&
                memcmp(q->ops[i].key, q->ops[j].key,
                       STORE_KV_INLINE_KEY_BYTES) == 0) {
                return true;
            }
        }
    }
    return false;
}

static int check_slots(struct store *s, MDB_txn *txn, uint64_t data,
                       const struct store_request *q, bool *collide)
{
    *collide = puts_collide(s, q);
    for (size_t i = 0; !*collide && i < q->n_ops; i++) {
        const struct store_op *o = &q->ops[i];
        struct store_record r;
        bool exists = false, other = false;
        if (!long_put(o)) {
            continue;
        }
        int rc = lookup(s, txn, data, o->key, o->key_len, &r, &exists, &other);
        if (rc != KHO_OK) {
            return rc;
        }
        *collide = other;
    }
    return KHO_OK;
}

/* --- Ops ----------------------------------------------------------------- */

/*
 * History (store.h top): kv holds a key's current record and hist the
 * versions before it, STORE_HISTORY_VERSIONS at most in all. So an op
 * first makes room in hist for what it adds there, then moves the record
 * it replaces into hist, then writes kv.
 */

/* Versions hist may keep of a key before an op that adds `adding` to it
 * and leaves a current record (`current`). */
static uint32_t hist_keep(uint32_t adding, bool current)
{
    return STORE_HISTORY_VERSIONS - adding - (current ? 1u : 0u);
}

static int apply_put(struct store *s, MDB_txn *txn, uint64_t data,
                     uint64_t index, const struct store_request *q,
                     uint32_t slot, uint64_t *version)
{
    const struct store_op *o = &q->ops[slot];
    struct store_record old;
    bool exists = false, other = false;
    int rc = lookup(s, txn, data, o->key, o->key_len, &old, &exists, &other);
    if (rc != KHO_OK) {
        return rc;
    }
    struct store_record r = {
        .key = o->key,
        .key_len = o->key_len,
        .value = o->value,
        .value_len = o->value_len,
        .version = exists ? old.version + 1 : 1,
        .create_rev = exists ? old.create_rev : index,
        .mod_rev = index,
        .time_ms = q->time_ms,
        .writer = q->writer,
        .writer_len = q->writer_len,
    };
    *version = r.version;
    rc = store_hist_prune(s, txn, data, o->key, o->key_len,
                          hist_keep(exists ? 1u : 0u, true));
    if (rc == KHO_OK && exists) {
        rc = store_hist_supersede(s, txn, data, &old);
    }
    return rc == KHO_OK ? store_kv_put(s, txn, data, &r) : rc;
}

/* Deletes the op's key if it exists (*found): its record and a tombstone
 * go to its history. */
static int apply_delete(struct store *s, MDB_txn *txn, uint64_t data,
                        uint64_t index, const struct store_request *q,
                        uint32_t slot, bool *found)
{
    const struct store_op *o = &q->ops[slot];
    struct store_record old;
    bool other = false;
    int rc = lookup(s, txn, data, o->key, o->key_len, &old, found, &other);
    if (rc != KHO_OK || !*found) {
        return rc;
    }
    struct store_record t = {
        .key = o->key,
        .key_len = o->key_len,
        .create_rev = old.create_rev, /* read before any write below */
        .mod_rev = index,
        .time_ms = q->time_ms,
        .writer = q->writer,
        .writer_len = q->writer_len,
        .deleted = true,
    };
    rc = store_hist_prune(s, txn, data, o->key, o->key_len,
                          hist_keep(2u, false));
    if (rc == KHO_OK) {
        rc = store_hist_supersede(s, txn, data, &old);
    }
    if (rc == KHO_OK) {
        rc = store_hist_tombstone(s, txn, data, &t, slot);
    }
    return rc == KHO_OK ? store_kv_del(s, txn, data, o->key, o->key_len) : rc;
}

static int run_ops(struct store *s, MDB_txn *txn, uint64_t data, uint64_t index,
                   const struct store_request *q,
                   struct store_apply_result *out)
{
    for (uint32_t i = 0; i < q->n_ops; i++) {
        bool found = true;
        int rc = q->ops[i].op == STORE_OP_PUT
                     ? apply_put(s, txn, data, index, q, i, &out->version)
                     : apply_delete(s, txn, data, index, q, i, &found);
        if (rc != KHO_OK) {
            return rc;
        }
        if (!found && (q->flags & STORE_REQ_SINGLE) != 0) {
            out->result = KHO_ENOTFOUND; /* the only op: nothing done */
        }
    }
    return KHO_OK;
}

/* The request as a transaction: compares, then every op or none. */
static int run_request(struct store *s, MDB_txn *txn, uint64_t data,
                       uint64_t index, const struct store_request *q,
                       struct store_apply_result *out)
{
    bool collide = false;
    int rc = run_compares(s, txn, data, q, &out->failed_cmp);
    if (rc != KHO_OK) {
        return rc;
    }
    if (out->failed_cmp != 0) {
        out->result = KHO_ECONFLICT;
        return KHO_OK;
    }
    rc = check_slots(s, txn, data, q, &collide);
    if (rc != KHO_OK) {
        return rc;
    }
    if (collide) {
        /* Another long key holds the slot: refused alike everywhere. */
        out->result = KHO_ECONFLICT;
        return KHO_OK;
    }
    return run_ops(s, txn, data, index, q, out);
}

/* --- Sessions around the request ----------------------------------------- */

/* A request of a known session with an old seq is answered here (*done):
 * the recorded answer for a retry, KHO_ESTALE for anything older. A new
 * session (*fresh) is admitted only while the table has room. */
static int session_gate(struct store *s, MDB_txn *txn, uint64_t data,
                        const struct store_request *q, bool *fresh,
                        uint64_t *old_time, struct store_apply_result *out,
                        bool *done)
{
    struct store_apply_result prev;
    uint64_t last = 0;
    *done = false;
    int rc = store_sess_get(s, txn, data, q->session, &last, old_time, &prev);
    *fresh = rc == KHO_ENOTFOUND;
    if (*fresh) {
        rc = store_sess_room(s, txn, data);
        if (rc == KHO_EBUSY) {
            out->result = KHO_EBUSY;
            *done = true;
            return KHO_OK;
        }
        return rc;
    }
    if (rc != KHO_OK || q->seq > last) {
        return rc;
    }
    *done = true;
    if (q->seq < last) {
        out->result = KHO_ESTALE;
        return KHO_OK;
    }
    *out = prev;
    out->duplicate = true;
    return KHO_OK;
}

static int apply_decoded(struct store *s, MDB_txn *txn, uint64_t data,
                         uint64_t index, const struct store_request *q,
                         struct store_apply_result *out)
{
    bool fresh = false, done = false;
    uint64_t old_time = 0;
    int rc = store_sess_evict(s, txn, data, q->time_ms);
    if (rc == KHO_OK && q->session != 0) {
        rc = session_gate(s, txn, data, q, &fresh, &old_time, out, &done);
    }
    if (rc != KHO_OK || done) {
        return rc;
    }
    rc = run_request(s, txn, data, index, q, out);
    if (rc == KHO_OK && q->session != 0) {
        rc = store_sess_put(s, txn, data, q->session, q->seq, q->time_ms, fresh,
                            old_time, out);
    }
    return rc;
}

int store_apply_request(struct store *s, MDB_txn *txn, uint64_t group,
                        uint64_t data, uint64_t index, const uint8_t *bytes,
                        size_t len, struct store_apply_result *out)
{
    struct store_request q;
    struct store_compare cmps[STORE_TXN_CMPS_MAX];
    struct store_op ops[STORE_TXN_OPS_MAX];
    memset(out, 0, sizeof(*out));
    out->revision = index;
    int bad = store_request_decode(bytes, len, &q, cmps, ops);
    if (bad != KHO_OK) {
        /* Every replica holds the same bytes and decides the same: a
         * malformed request is a no-op with an error for its client,
         * never a stuck group. */
        out->result = bad;
        return KHO_OK;
    }
    if ((q.flags & STORE_REQ_CHECK) != 0) {
        return store_check_apply(s, txn, group, data, index);
    }
    return apply_decoded(s, txn, data, index, &q, out);
}

/*
 * conf.c - group configurations: lookup, encoding inside RAFT_ENTRY_CONF
 * entries, and validation of configurations that arrive from peers or disk.
 *
 * Encoding (little-endian): u32 member count, then per member u64 id and
 * u32 role. A fixed layout keeps the core free of any serialization library.
 */
#include "internal.h"

#include <string.h>

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        v |= (uint32_t)p[i] << (8 * i);
    }
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

size_t raft_conf_encode(const struct raft_conf *c, uint8_t *buf, size_t cap)
{
    size_t need = 4u + (size_t)c->n * 12u;
    if (c->n > RAFT_MEMBERS_MAX || cap < need) {
        return 0;
    }
    put_u32(buf, c->n);
    for (uint32_t i = 0; i < c->n; i++) {
        put_u64(buf + 4 + i * 12, c->members[i].id);
        put_u32(buf + 4 + i * 12 + 8, c->members[i].role);
    }
    return need;
}

/* Shared by decode and by validation of snapshot metadata from peers:
 * ids are non-zero and unique, roles known, the count within bounds. */
int raft_conf_check(const struct raft_conf *c)
{
    if (c->n > RAFT_MEMBERS_MAX) {
        return KHO_ECORRUPT;
    }
    for (uint32_t i = 0; i < c->n; i++) {
        const struct raft_member *m = &c->members[i];
        if (m->id == 0 || (m->role != RAFT_VOTER && m->role != RAFT_LEARNER)) {
            return KHO_ECORRUPT;
        }
        for (uint32_t j = 0; j < i; j++) {
            if (c->members[j].id == m->id) {
                return KHO_ECORRUPT;
            }
        }
    }
    return KHO_OK;
}

int raft_conf_decode(const uint8_t *buf, size_t len, struct raft_conf *out)
{
    if (buf == NULL || len < 4) {
        return KHO_ECORRUPT;
    }
    uint32_t n = get_u32(buf);
    if (n > RAFT_MEMBERS_MAX || len != 4u + (size_t)n * 12u) {
        return KHO_ECORRUPT;
    }
    struct raft_conf c;
    memset(&c, 0, sizeof(c));
    c.n = n;
    for (uint32_t i = 0; i < n; i++) {
        c.members[i].id = get_u64(buf + 4 + i * 12);
        c.members[i].role = get_u32(buf + 4 + i * 12 + 8);
    }
    if (raft_conf_check(&c) != KHO_OK) {
        return KHO_ECORRUPT;
    }
    *out = c;
    return KHO_OK;
}

const struct raft_member *raft_conf_find(const struct raft_conf *c, raft_id id)
{
    for (uint32_t i = 0; i < c->n; i++) {
        if (c->members[i].id == id) {
            return &c->members[i];
        }
    }
    return NULL;
}

bool raft_conf_is_voter(const struct raft_conf *c, raft_id id)
{
    const struct raft_member *m = raft_conf_find(c, id);
    return m != NULL && m->role == RAFT_VOTER;
}

uint32_t raft_conf_voters(const struct raft_conf *c)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n; i++) {
        n += c->members[i].role == RAFT_VOTER;
    }
    return n;
}

/* Applies one single-server change to `c` (dissertation §4.1). Returns
 * KHO_EINVAL for a change that makes no sense in `c`. */
int raft_conf_apply_op(struct raft_conf *c, enum raft_conf_op op, raft_id id)
{
    const struct raft_member *m = raft_conf_find(c, id);
    if (id == 0) {
        return KHO_EINVAL;
    }
    switch (op) {
    case RAFT_CONF_ADD_LEARNER:
    case RAFT_CONF_ADD_VOTER:
        if (m != NULL || c->n >= RAFT_MEMBERS_MAX) {
            return KHO_EINVAL;
        }
        c->members[c->n].id = id;
        c->members[c->n].role =
            op == RAFT_CONF_ADD_VOTER ? RAFT_VOTER : RAFT_LEARNER;
        c->n++;
        return KHO_OK;
    case RAFT_CONF_PROMOTE:
        if (m == NULL || m->role != RAFT_LEARNER) {
            return KHO_EINVAL;
        }
        c->members[m - c->members].role = RAFT_VOTER;
        return KHO_OK;
    case RAFT_CONF_REMOVE: {
        if (m == NULL) {
            return KHO_EINVAL;
        }
        if (m->role == RAFT_VOTER && raft_conf_voters(c) == 1) {
            return KHO_EINVAL; /* never remove the last voter */
        }
        size_t pos = (size_t)(m - c->members);
        memmove(&c->members[pos], &c->members[pos + 1],
                sizeof(c->members[0]) * (c->n - pos - 1));
        c->n--;
        memset(&c->members[c->n], 0, sizeof(c->members[0]));
        return KHO_OK;
    }
    default:
        return KHO_EINVAL;
    }
}

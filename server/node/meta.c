/*
 * meta.c - see meta.h.
 */
#include "meta.h"

#include <stdbool.h>
#include <string.h>

#include "../../client/kho_err.h"

const char *meta_reg_name_check(const char *name)
{
    size_t len = strlen(name);
    if (len == 0) {
        return "empty registry name";
    }
    if (len > META_REG_NAME_BYTES_MAX) {
        return "registry name longer than 64 bytes";
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-'))) {
            return "a registry name is lower-case letters, digits, '_', '.' "
                   "and '-', starting with a letter or digit";
        }
    }
    return NULL;
}

size_t meta_reg_encode(const uint64_t *replicas, uint32_t n, uint8_t *buf)
{
    if (n == 0 || n > RAFT_MEMBERS_MAX) {
        return 0;
    }
    buf[0] = META_REG_VERSION;
    buf[1] = (uint8_t)n;
    buf[2] = buf[3] = 0;
    for (uint32_t i = 0; i < n; i++) {
        for (int b = 0; b < 8; b++) {
            buf[META_REG_HEADER_BYTES + 8 * i + b] =
                (uint8_t)(replicas[i] >> (8 * b));
        }
    }
    return META_REG_HEADER_BYTES + 8u * n;
}

int meta_reg_decode(const uint8_t *v, size_t len, uint64_t *replicas,
                    uint32_t cap, uint32_t *n)
{
    if (len < META_REG_HEADER_BYTES || v[0] != META_REG_VERSION ||
        v[1] == 0 || v[1] > cap || v[2] != 0 || v[3] != 0 ||
        len != META_REG_HEADER_BYTES + 8u * v[1]) {
        return KHO_ECORRUPT;
    }
    *n = v[1];
    for (uint32_t i = 0; i < *n; i++) {
        uint64_t id = 0;
        for (int b = 7; b >= 0; b--) {
            id = (id << 8) | v[META_REG_HEADER_BYTES + 8 * i + b];
        }
        if (id == 0) {
            return KHO_ECORRUPT;
        }
        replicas[i] = id;
    }
    return KHO_OK;
}

/* FNV-1a: stable across builds and machines, which placement needs. */
static uint64_t name_hash(const char *s)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (; *s != '\0'; s++) {
        h = (h ^ (uint8_t)*s) * UINT64_C(0x100000001b3);
    }
    return h;
}

uint32_t meta_pick_replicas(const struct raft_conf *members, const char *name,
                            uint32_t want, uint64_t *out)
{
    uint64_t ids[RAFT_MEMBERS_MAX];
    uint32_t n = 0;
    for (uint32_t i = 0; i < members->n; i++) {
        if (members->members[i].role == RAFT_VOTER) {
            ids[n++] = members->members[i].id;
        }
    }
    /* Insertion sort: at most RAFT_MEMBERS_MAX ids. */
    for (uint32_t i = 1; i < n; i++) {
        for (uint32_t j = i; j > 0 && ids[j - 1] > ids[j]; j--) {
            uint64_t t = ids[j];
            ids[j] = ids[j - 1];
            ids[j - 1] = t;
        }
    }
    uint32_t k = want < n ? want : n;
    uint32_t start = n > 0 ? (uint32_t)(name_hash(name) % n) : 0;
    for (uint32_t i = 0; i < k; i++) {
        out[i] = ids[(start + i) % n];
    }
    return k;
}

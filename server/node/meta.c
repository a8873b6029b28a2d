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

static void put_ids(uint8_t *p, const uint64_t *ids, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        for (int b = 0; b < 8; b++) {
            p[8 * i + b] = (uint8_t)(ids[i] >> (8 * b));
        }
    }
}

static bool get_ids(const uint8_t *p, uint64_t *ids, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        uint64_t id = 0;
        for (int b = 7; b >= 0; b--) {
            id = (id << 8) | p[8 * i + b];
        }
        if (id == 0) {
            return false;
        }
        ids[i] = id;
    }
    return true;
}

size_t meta_reg_encode(const struct meta_reg *r, uint8_t *buf)
{
    if (r->n_shards == 0 || r->n_shards > KHO_SHARDS_MAX || r->want == 0 ||
        r->want > META_REPLICAS_MAX) {
        return 0;
    }
    buf[0] = META_REG_VERSION;
    buf[1] = (uint8_t)r->want;
    buf[2] = (uint8_t)r->n_shards;
    buf[3] = (uint8_t)(r->n_shards >> 8);
    put_ids(buf + 4, &r->home, 1);
    size_t off = META_REG_HEADER_BYTES;
    for (uint32_t i = 0; i < r->n_shards; i++) {
        const struct meta_shard *sh = &r->shards[i];
        if (sh->n_initial == 0 || sh->n_initial > META_REPLICAS_MAX ||
            sh->n_replicas == 0 || sh->n_replicas > META_REPLICAS_MAX) {
            return 0;
        }
        buf[off] = (uint8_t)sh->n_initial;
        buf[off + 1] = (uint8_t)sh->n_replicas;
        buf[off + 2] = buf[off + 3] = 0;
        off += META_SHARD_HEADER_BYTES;
        put_ids(buf + off, sh->initial, sh->n_initial);
        off += 8u * sh->n_initial;
        put_ids(buf + off, sh->replicas, sh->n_replicas);
        off += 8u * sh->n_replicas;
    }
    return off;
}

/* Format 2: one shard, no home. */
static int reg_decode_v2(const uint8_t *v, size_t len, struct meta_reg *out)
{
    if (len < META_REG_V2_HEADER_BYTES || v[1] == 0 ||
        v[1] > META_REPLICAS_MAX || v[2] == 0 || v[2] > META_REPLICAS_MAX ||
        v[3] != 0 || len != META_REG_V2_HEADER_BYTES + 8u * (v[1] + v[2])) {
        return KHO_ECORRUPT;
    }
    struct meta_shard *sh = &out->shards[0];
    out->n_shards = 1;
    out->home = 0;
    sh->n_initial = v[1];
    sh->n_replicas = v[2];
    out->want = sh->n_replicas;
    if (!get_ids(v + META_REG_V2_HEADER_BYTES, sh->initial, sh->n_initial) ||
        !get_ids(v + META_REG_V2_HEADER_BYTES + 8u * sh->n_initial,
                 sh->replicas, sh->n_replicas)) {
        return KHO_ECORRUPT;
    }
    return KHO_OK;
}

int meta_reg_decode(const uint8_t *v, size_t len, struct meta_reg *out)
{
    if (len >= 1 && v[0] == META_REG_V2) {
        return reg_decode_v2(v, len, out);
    }
    if (len < META_REG_HEADER_BYTES || v[0] != META_REG_VERSION || v[1] == 0 ||
        v[1] > META_REPLICAS_MAX) {
        return KHO_ECORRUPT;
    }
    out->want = v[1];
    out->n_shards = (uint32_t)v[2] | (uint32_t)v[3] << 8;
    out->home = 0;
    for (int b = 7; b >= 0; b--) {
        out->home = (out->home << 8) | v[4 + b];
    }
    if (out->n_shards == 0 || out->n_shards > KHO_SHARDS_MAX) {
        return KHO_ECORRUPT;
    }
    size_t off = META_REG_HEADER_BYTES;
    for (uint32_t i = 0; i < out->n_shards; i++) {
        struct meta_shard *sh = &out->shards[i];
        if (len - off < META_SHARD_HEADER_BYTES) {
            return KHO_ECORRUPT;
        }
        sh->n_initial = v[off];
        sh->n_replicas = v[off + 1];
        if (sh->n_initial == 0 || sh->n_initial > META_REPLICAS_MAX ||
            sh->n_replicas == 0 || sh->n_replicas > META_REPLICAS_MAX ||
            v[off + 2] != 0 || v[off + 3] != 0) {
            return KHO_ECORRUPT;
        }
        off += META_SHARD_HEADER_BYTES;
        size_t need = 8u * (sh->n_initial + sh->n_replicas);
        if (len - off < need ||
            !get_ids(v + off, sh->initial, sh->n_initial) ||
            !get_ids(v + off + 8u * sh->n_initial, sh->replicas,
                     sh->n_replicas)) {
            return KHO_ECORRUPT;
        }
        off += need;
    }
    return off == len ? KHO_OK : KHO_ECORRUPT;
}

uint64_t meta_name_hash(const char *s)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (; *s != '\0'; s++) {
        h = (h ^ (uint8_t)*s) * UINT64_C(0x100000001b3);
    }
    return h;
}

void meta_group_conf(const uint64_t *ids, size_t n, struct raft_conf *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < n && out->n < RAFT_MEMBERS_MAX; i++) {
        /* Insertion by id: at most RAFT_MEMBERS_MAX members. */
        uint32_t j = out->n++;
        while (j > 0 && out->members[j - 1].id > ids[i]) {
            out->members[j] = out->members[j - 1];
            j--;
        }
        out->members[j].id = ids[i];
    }
    for (uint32_t i = 0; i < out->n; i++) {
        out->members[i].role = i < META_VOTERS_MAX ? RAFT_VOTER : RAFT_LEARNER;
    }
}

/* --- Node records ---------------------------------------------------------- */

void meta_node_key(uint64_t id, uint8_t *key)
{
    static const char hex[] = "0123456789abcdef";
    memcpy(key, META_NODE_PREFIX, META_NODE_PREFIX_BYTES);
    for (int i = 0; i < 16; i++) {
        key[META_NODE_PREFIX_BYTES + i] = (uint8_t)hex[(id >> (60 - 4 * i)) & 15];
    }
}

uint64_t meta_node_key_id(const uint8_t *key, size_t len)
{
    if (len != META_NODE_KEY_BYTES ||
        memcmp(key, META_NODE_PREFIX, META_NODE_PREFIX_BYTES) != 0) {
        return 0;
    }
    uint64_t id = 0;
    for (size_t i = META_NODE_PREFIX_BYTES; i < len; i++) {
        uint8_t c = key[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) {
            return 0;
        }
        id = (id << 4) | (uint64_t)d;
    }
    return id;
}

size_t meta_node_encode(const char *name, const char *peer_url,
                        const char *client_url, uint32_t state, uint8_t *buf)
{
    size_t nl = strlen(name), pl = strlen(peer_url), cl = strlen(client_url);
    if (nl > META_NODE_FIELD_BYTES_MAX || pl > META_NODE_FIELD_BYTES_MAX ||
        cl > META_NODE_FIELD_BYTES_MAX) {
        return 0;
    }
    buf[0] = META_NODE_VERSION;
    buf[1] = (uint8_t)nl;
    buf[2] = (uint8_t)pl;
    buf[3] = (uint8_t)state;
    buf[4] = (uint8_t)cl;
    buf[5] = 0;
    buf[6] = buf[7] = 0;
    uint8_t *p = buf + META_NODE_HEADER_BYTES;
    memcpy(p, name, nl);
    memcpy(p + nl, peer_url, pl);
    memcpy(p + nl + pl, client_url, cl);
    return META_NODE_HEADER_BYTES + nl + pl + cl;
}

int meta_node_decode(const uint8_t *v, size_t len, char *name,
                     size_t name_cap, char *peer_url, char *client_url,
                     size_t url_cap, uint32_t *state)
{
    if (len < META_NODE_HEADER_BYTES || v[0] != META_NODE_VERSION ||
        (v[3] != META_NODE_MEMBER && v[3] != META_NODE_REMOVED) ||
        v[5] != 0 || v[6] != 0 || v[7] != 0) {
        return KHO_ECORRUPT;
    }
    size_t nl = v[1], pl = v[2], cl = v[4];
    if (len != META_NODE_HEADER_BYTES + nl + pl + cl || nl >= name_cap ||
        pl >= url_cap || cl >= url_cap) {
        return KHO_ECORRUPT;
    }
    const uint8_t *p = v + META_NODE_HEADER_BYTES;
    memcpy(name, p, nl);
    name[nl] = '\0';
    memcpy(peer_url, p + nl, pl);
    peer_url[pl] = '\0';
    memcpy(client_url, p + nl + pl, cl);
    client_url[cl] = '\0';
    *state = v[3];
    return KHO_OK;
}

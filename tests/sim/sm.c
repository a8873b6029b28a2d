/*
 * sm.c - the replicated state machine the simulated clients write to.
 *
 * A write carries (client, seq, key, value). The machine keeps, per client,
 * the last sequence number it applied, so a retried write that commits twice
 * changes the state once: that is what makes client retries exactly-once.
 * Its rolling hash covers every applied entry (index, term, type, data) in
 * the same way the checker hashes log prefixes, so "applied up to i" and
 * "log prefix up to i" can be compared directly.
 */
#include "sim.h"

#include <string.h>

#define SM_MAGIC UINT64_C(0x6b686f736d763031) /* "khosmv01" */
#define WRITE_MAGIC 0x57u                     /* 'W' */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

uint64_t sim_entry_hash(uint64_t prev, const struct raft_entry *e)
{
    /* FNV-1a over the payload, then a strong mix with the header fields so
     * any change of index, term, type or data changes the result. */
    uint64_t f = UINT64_C(0xcbf29ce484222325);
    for (uint32_t i = 0; i < e->len; i++) {
        f = (f ^ e->data[i]) * UINT64_C(0x100000001b3);
    }
    uint64_t h = mix64(prev ^ UINT64_C(0x9e3779b97f4a7c15));
    h = mix64(h ^ e->index);
    h = mix64(h ^ e->term);
    h = mix64(h ^ (((uint64_t)e->type << 32) | e->len));
    return mix64(h ^ f);
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
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

/* Layout: 'W', client u32, seq u64, key u8, value u64, then padding that is
 * a function of pad_seed so a retry sends byte-identical data. */
size_t sim_write_encode(const struct sim_write *w, uint8_t *buf, size_t len,
                        uint64_t pad_seed)
{
    if (len < SIM_WRITE_HDR_BYTES) {
        len = SIM_WRITE_HDR_BYTES;
    }
    buf[0] = WRITE_MAGIC;
    put_u32(buf + 1, w->client);
    put_u64(buf + 5, w->seq);
    buf[13] = (uint8_t)w->key;
    put_u64(buf + 14, w->value);
    uint64_t x = pad_seed;
    for (size_t i = SIM_WRITE_HDR_BYTES; i < len; i++) {
        buf[i] = (uint8_t)sim_splitmix64(&x);
    }
    return len;
}

bool sim_write_decode(const uint8_t *buf, size_t len, struct sim_write *out)
{
    if (len < SIM_WRITE_HDR_BYTES || buf[0] != WRITE_MAGIC) {
        return false;
    }
    out->client = get_u32(buf + 1);
    out->seq = get_u64(buf + 5);
    out->key = buf[13];
    out->value = get_u64(buf + 14);
    return out->client < SIM_CLIENTS_MAX && out->key < SIM_REGS && out->seq > 0;
}

size_t sim_sm_encode(const struct sim_sm *sm, uint8_t *buf, size_t cap)
{
    if (cap < SIM_SM_PAYLOAD_BYTES) {
        return 0;
    }
    uint8_t *p = buf;
    put_u64(p, SM_MAGIC);
    put_u64(p + 8, sm->applied);
    put_u64(p + 16, sm->hash);
    put_u64(p + 24, sm->applied_term);
    put_u64(p + 32, sm->writes);
    p += 40;
    for (uint32_t i = 0; i < SIM_CLIENTS_MAX; i++, p += 8) {
        put_u64(p, sm->last_seq[i]);
    }
    for (uint32_t i = 0; i < SIM_REGS; i++, p += 8) {
        put_u64(p, sm->reg[i]);
    }
    return SIM_SM_PAYLOAD_BYTES;
}

bool sim_sm_decode(const uint8_t *buf, size_t len, struct sim_sm *out)
{
    if (buf == NULL || len != SIM_SM_PAYLOAD_BYTES ||
        get_u64(buf) != SM_MAGIC) {
        return false;
    }
    const uint8_t *p = buf;
    memset(out, 0, sizeof(*out));
    out->applied = get_u64(p + 8);
    out->hash = get_u64(p + 16);
    out->applied_term = get_u64(p + 24);
    out->writes = get_u64(p + 32);
    p += 40;
    for (uint32_t i = 0; i < SIM_CLIENTS_MAX; i++, p += 8) {
        out->last_seq[i] = get_u64(p);
    }
    for (uint32_t i = 0; i < SIM_REGS; i++, p += 8) {
        out->reg[i] = get_u64(p);
    }
    return true;
}

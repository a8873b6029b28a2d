/*
 * kho_shard.h - which shard of a registry a key lives in.
 *
 * A registry of S shards spreads its keys by a stable hash: the same key
 * maps to the same shard on every node, in every client and in every
 * version of kho, so this function may never change. libkho uses it to
 * send a request straight to the shard's leader; khod uses it to decide
 * which group serves a request (a client's answer is only a hint).
 *
 * The hash is 64-bit FNV-1a of the key bytes followed by a 64-bit
 * finaliser (xor-shift-multiply, so that the low bits taken by the modulo
 * depend on every byte), reduced modulo S.
 */
#ifndef KHO_SHARD_H
#define KHO_SHARD_H

#include <stddef.h>
#include <stdint.h>

/* Shards of one registry. */
#define KHO_SHARDS_MAX 256u

/* MurmurHash3's 64-bit finaliser: every input bit reaches every output
 * bit. */
static inline uint64_t kho_hash_fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

/* The store keys its long keys and history by the same hash
 * (store_key_hash()): it is on disk too. */
static inline uint64_t kho_key_hash(const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return kho_hash_fmix64(h);
}

/* The shard (0-based) of `key` in a registry of `shards` shards. */
static inline uint32_t kho_shard_of(const void *key, size_t len,
                                    uint32_t shards)
{
    return shards <= 1 ? 0u : (uint32_t)(kho_key_hash(key, len) % shards);
}

#endif /* KHO_SHARD_H */

/*
 * rng.h - the simulator's one source of randomness.
 *
 * Every choice a seed makes (fault rates, delays, which node crashes, client
 * payloads, the core's own election PRNG seeds) comes from one xoshiro256**
 * stream seeded through splitmix64, so a seed number replays a run exactly.
 * Probabilities are integers in parts per million to keep every decision
 * free of floating-point rounding.
 */
#ifndef KHO_SIM_RNG_H
#define KHO_SIM_RNG_H

#include <stdbool.h>
#include <stdint.h>

#define SIM_PPM 1000000u /* probability scale: SIM_PPM means "always" */

struct sim_rng {
    uint64_t s[4];
};

static inline uint64_t sim_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static inline void sim_rng_seed(struct sim_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        r->s[i] = sim_splitmix64(&x);
    }
}

static inline uint64_t sim_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static inline uint64_t sim_rng_next(struct sim_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = sim_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = sim_rotl(s[3], 45);
    return result;
}

/* Uniform in [0, n); n == 0 gives 0. The modulo bias is below 2^-32 for
 * the small ranges the simulator uses, which does not matter here. */
static inline uint64_t sim_rng_below(struct sim_rng *r, uint64_t n)
{
    if (n == 0) {
        return 0;
    }
    return sim_rng_next(r) % n;
}

/* Uniform in [lo, hi] (inclusive); hi < lo gives lo. */
static inline uint64_t sim_rng_range(struct sim_rng *r, uint64_t lo,
                                     uint64_t hi)
{
    if (hi <= lo) {
        return lo;
    }
    return lo + sim_rng_below(r, hi - lo + 1);
}

/* True with probability ppm / SIM_PPM. Always draws, so the stream does not
 * depend on whether a rate happens to be zero. */
static inline bool sim_rng_chance(struct sim_rng *r, uint32_t ppm)
{
    return sim_rng_below(r, SIM_PPM) < ppm;
}

#endif /* KHO_SIM_RNG_H */

/*
 * hist.h - a latency histogram in the manner of HdrHistogram: log-linear
 * buckets, fixed memory, constant-time recording, mergeable.
 *
 * Values are unsigned integers (khobench records nanoseconds). Below
 * 2 * HIST_SUB_BUCKETS every value has its own bucket (exact); above, each
 * power of two [2^k, 2^(k+1)) is cut into HIST_SUB_BUCKETS equal buckets,
 * so a value is known to within 1 / HIST_SUB_BUCKETS (0.8 %) of itself.
 * Values over HIST_VALUE_MAX are recorded as HIST_VALUE_MAX (and counted in
 * `clamped`); min, max and sum are kept exactly.
 *
 * A histogram is a plain struct of HIST_BUCKETS counters (about 34 KiB),
 * owned by one thread while it records; merge them afterwards.
 */
#ifndef KHO_BENCH_HIST_H
#define KHO_BENCH_HIST_H

#include <stdint.h>

/* Sub-buckets per power of two: 2^HIST_SUB_BITS. */
#define HIST_SUB_BITS 7u
#define HIST_SUB_BUCKETS (1u << HIST_SUB_BITS)
/* The largest value kept apart: 2^40 - 1 ns is about 18 minutes. */
#define HIST_VALUE_BITS 40u
#define HIST_VALUE_MAX ((UINT64_C(1) << HIST_VALUE_BITS) - 1u)
/* Values [0, 2 * SUB) are exact (2 * SUB buckets); each power of two from
 * 2^(SUB_BITS + 1) to 2^(VALUE_BITS - 1) adds SUB buckets. */
#define HIST_BUCKETS                                                           \
    (2u * HIST_SUB_BUCKETS +                                                   \
     (HIST_VALUE_BITS - HIST_SUB_BITS - 1u) * HIST_SUB_BUCKETS)

_Static_assert(HIST_VALUE_BITS > HIST_SUB_BITS + 1u,
               "at least one log bucket above the linear ones");
_Static_assert(HIST_BUCKETS <= 8192u, "a histogram stays small (<= 64 KiB)");

struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t n;       /* values recorded */
    uint64_t clamped; /* of which over HIST_VALUE_MAX */
    uint64_t min, max;
    uint64_t sum; /* saturates at UINT64_MAX */
};

/* Empties h. */
void hist_init(struct hist *h);

/* Records one value. O(1). */
void hist_record(struct hist *h, uint64_t v);

/* Adds every value of src to dst. O(HIST_BUCKETS). */
void hist_merge(struct hist *dst, const struct hist *src);

/*
 * The value at percentile p (0..100): the smallest recorded value v such
 * that at least p % of the values are <= v, as the highest value of v's
 * bucket (never above max). p <= 0 gives min, p >= 100 gives max; an empty
 * histogram gives 0. O(HIST_BUCKETS).
 */
uint64_t hist_percentile(const struct hist *h, double p);

/* The mean, or 0 for an empty histogram. */
double hist_mean(const struct hist *h);

/* The bucket of v (v <= HIST_VALUE_MAX), and the lowest and highest value
 * that bucket holds; exposed for the unit test. */
uint32_t hist_bucket(uint64_t v);
uint64_t hist_bucket_low(uint32_t b);
uint64_t hist_bucket_high(uint32_t b);

#endif /* KHO_BENCH_HIST_H */

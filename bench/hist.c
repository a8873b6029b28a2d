/*
 * hist.c - see hist.h.
 *
 * Bucket b of a value v >= 2 * SUB, with k = floor(log2(v)) and
 * shift = k - SUB_BITS (>= 1): the top SUB_BITS + 1 bits of v, sub =
 * v >> shift in [SUB, 2 * SUB), give b = shift * SUB + sub. The buckets of
 * one shift follow those of the previous one without a gap, and values
 * below 2 * SUB are their own bucket (shift 0), so b grows with v and
 * every bucket is used.
 */
#include "hist.h"

#include <string.h>

_Static_assert(HIST_BUCKETS ==
                   (HIST_VALUE_BITS - HIST_SUB_BITS) * HIST_SUB_BUCKETS +
                       HIST_SUB_BUCKETS,
               "the highest bucket is (VALUE_BITS - 1 - SUB_BITS) * SUB + "
               "2 * SUB - 1");

void hist_init(struct hist *h)
{
    memset(h, 0, sizeof(*h));
}

uint32_t hist_bucket(uint64_t v)
{
    if (v < 2u * HIST_SUB_BUCKETS) {
        return (uint32_t)v;
    }
    uint32_t shift = (uint32_t)(63 - __builtin_clzll(v)) - HIST_SUB_BITS;
    return shift * HIST_SUB_BUCKETS + (uint32_t)(v >> shift);
}

uint64_t hist_bucket_low(uint32_t b)
{
    if (b < 2u * HIST_SUB_BUCKETS) {
        return b;
    }
    uint32_t shift = b / HIST_SUB_BUCKETS - 1u;
    uint64_t sub = b - shift * HIST_SUB_BUCKETS;
    return sub << shift;
}

uint64_t hist_bucket_high(uint32_t b)
{
    if (b < 2u * HIST_SUB_BUCKETS) {
        return b;
    }
    uint32_t shift = b / HIST_SUB_BUCKETS - 1u;
    return hist_bucket_low(b) + ((UINT64_C(1) << shift) - 1u);
}

void hist_record(struct hist *h, uint64_t v)
{
    if (h->n == 0 || v < h->min) {
        h->min = v;
    }
    if (v > h->max) {
        h->max = v;
    }
    h->sum = h->sum > UINT64_MAX - v ? UINT64_MAX : h->sum + v;
    if (v > HIST_VALUE_MAX) {
        h->clamped++;
        v = HIST_VALUE_MAX;
    }
    h->counts[hist_bucket(v)]++;
    h->n++;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
    if (src->n == 0) {
        return;
    }
    for (uint32_t b = 0; b < HIST_BUCKETS; b++) {
        dst->counts[b] += src->counts[b];
    }
    if (dst->n == 0 || src->min < dst->min) {
        dst->min = src->min;
    }
    if (src->max > dst->max) {
        dst->max = src->max;
    }
    dst->sum =
        dst->sum > UINT64_MAX - src->sum ? UINT64_MAX : dst->sum + src->sum;
    dst->n += src->n;
    dst->clamped += src->clamped;
}

uint64_t hist_percentile(const struct hist *h, double p)
{
    if (h->n == 0) {
        return 0;
    }
    if (p <= 0.0) {
        return h->min;
    }
    if (p >= 100.0) {
        return h->max;
    }
    /* The rank of the value sought, 1-based: ceil(p% of n), at least 1.
     * The product stays exact enough: n < 2^53 for any real run. */
    double want = p / 100.0 * (double)h->n;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want) {
        rank++;
    }
    if (rank == 0) {
        rank = 1;
    }
    uint64_t seen = 0;
    for (uint32_t b = 0; b < HIST_BUCKETS; b++) {
        seen += h->counts[b];
        if (seen >= rank) {
            uint64_t v = hist_bucket_high(b);
            v = v > h->max ? h->max : v;
            return v < h->min ? h->min : v;
        }
    }
    return h->max; /* not reached: the counts sum to n */
}

double hist_mean(const struct hist *h)
{
    return h->n == 0 ? 0.0 : (double)h->sum / (double)h->n;
}

/*
 * test_hist.c - proves that khobench's latency histogram (bench/hist.c)
 * reports what was recorded:
 *
 *   - values below 2 * HIST_SUB_BUCKETS are exact, and the buckets above
 *     tile [0, HIST_VALUE_MAX] without gap or overlap, each no wider than
 *     1 / HIST_SUB_BUCKETS of its lowest value (the promised precision);
 *   - percentiles follow the "smallest v with at least p % <= v" rule:
 *     exact on small values, within the precision on large ones, never
 *     outside [min, max];
 *   - merging per-thread histograms gives exactly the histogram of all
 *     their values; empty histograms and values over the range behave.
 *
 * The random values come from a seeded generator: the seed is printed and
 * `--seed N` replays it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "bench/hist.h"

static uint64_t seed = 0x68697374; /* "hist"; --seed N replaces it */

/* xorshift64*: small, seeded, good enough to spread values. */
static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

/* A value spread over every power of two up to HIST_VALUE_MAX. */
static uint64_t rand_value(uint64_t *s)
{
    uint64_t bits = next_rand(s) % (HIST_VALUE_BITS + 1u);
    return bits == 0 ? 0 : next_rand(s) >> (64u - bits);
}

static struct hist *hist_new(void)
{
    struct hist *h = malloc(sizeof(*h));
    assert_non_null(h);
    hist_init(h);
    return h;
}

static void small_values_are_exact(void **state)
{
    (void)state;
    for (uint64_t v = 0; v < 2u * HIST_SUB_BUCKETS; v++) {
        uint32_t b = hist_bucket(v);
        assert_int_equal(b, v);
        assert_int_equal(hist_bucket_low(b), v);
        assert_int_equal(hist_bucket_high(b), v);
    }
}

static void buckets_tile_the_range(void **state)
{
    (void)state;
    assert_int_equal(hist_bucket_low(0), 0);
    for (uint32_t b = 0; b < HIST_BUCKETS; b++) {
        uint64_t lo = hist_bucket_low(b), hi = hist_bucket_high(b);
        assert_true(lo <= hi);
        assert_int_equal(hist_bucket(lo), b);
        assert_int_equal(hist_bucket(hi), b);
        if (b > 0) {
            assert_int_equal(lo, hist_bucket_high(b - 1) + 1u);
        }
        /* Width (hi - lo + 1) at most lo / SUB: the 0.8 % promise. */
        if (b >= 2u * HIST_SUB_BUCKETS) {
            assert_true((hi - lo + 1u) * HIST_SUB_BUCKETS <= lo);
        }
    }
    assert_int_equal(hist_bucket_high(HIST_BUCKETS - 1u), HIST_VALUE_MAX);
    assert_int_equal(hist_bucket(HIST_VALUE_MAX), HIST_BUCKETS - 1u);
}

static void random_values_land_in_their_bucket(void **state)
{
    (void)state;
    uint64_t s = seed;
    for (int i = 0; i < 200000; i++) {
        uint64_t v = rand_value(&s);
        uint32_t b = hist_bucket(v);
        assert_true(b < HIST_BUCKETS);
        if (v < hist_bucket_low(b) || v > hist_bucket_high(b)) {
            fail_msg("seed %llu: value %llu outside bucket %u",
                     (unsigned long long)seed, (unsigned long long)v, b);
        }
    }
}

static void percentiles_of_small_values_are_exact(void **state)
{
    (void)state;
    struct hist *h = hist_new();
    for (uint64_t v = 100; v >= 1; v--) { /* order does not matter */
        hist_record(h, v);
    }
    assert_int_equal(h->n, 100);
    assert_int_equal(hist_percentile(h, 0.0), 1);
    assert_int_equal(hist_percentile(h, 1.0), 1);
    assert_int_equal(hist_percentile(h, 50.0), 50);
    assert_int_equal(hist_percentile(h, 50.5), 51);
    assert_int_equal(hist_percentile(h, 90.0), 90);
    assert_int_equal(hist_percentile(h, 99.0), 99);
    assert_int_equal(hist_percentile(h, 99.9), 100);
    assert_int_equal(hist_percentile(h, 100.0), 100);
    assert_true(hist_mean(h) == 50.5);
    free(h);
}

/* |got - want| within the histogram's precision of want. */
static void assert_close(uint64_t got, uint64_t want)
{
    uint64_t d = got > want ? got - want : want - got;
    if (d * HIST_SUB_BUCKETS > want) {
        fail_msg("got %llu, want %llu within 1/%u", (unsigned long long)got,
                 (unsigned long long)want, HIST_SUB_BUCKETS);
    }
}

static void percentiles_of_large_values_are_close(void **state)
{
    (void)state;
    struct hist *h = hist_new();
    /* 1..1e6 in microseconds as nanoseconds: 1 us .. 1 s. */
    for (uint64_t v = 1; v <= 1000000; v++) {
        hist_record(h, v * 1000u);
    }
    assert_close(hist_percentile(h, 50.0), 500000000u);
    assert_close(hist_percentile(h, 90.0), 900000000u);
    assert_close(hist_percentile(h, 99.0), 990000000u);
    assert_close(hist_percentile(h, 99.9), 999000000u);
    assert_int_equal(hist_percentile(h, 100.0), 1000000000u);
    assert_int_equal(hist_percentile(h, 0.0), 1000u);
    /* The reported value is the top of a bucket: never below the truth. */
    assert_true(hist_percentile(h, 50.0) >= 500000000u);
    free(h);
}

static void one_value_is_every_percentile(void **state)
{
    (void)state;
    struct hist *h = hist_new();
    hist_record(h, 1000003u); /* inside a wide bucket */
    assert_int_equal(hist_percentile(h, 0.0), 1000003u);
    assert_int_equal(hist_percentile(h, 50.0), 1000003u);
    assert_int_equal(hist_percentile(h, 99.9), 1000003u);
    assert_int_equal(hist_percentile(h, 100.0), 1000003u);
    free(h);
}

static void merge_equals_recording_everything(void **state)
{
    (void)state;
    enum { PARTS = 8 };
    struct hist *all = hist_new();
    struct hist *parts[PARTS];
    for (int i = 0; i < PARTS; i++) {
        parts[i] = hist_new();
    }
    uint64_t s = seed ^ 0x5a5a;
    for (int i = 0; i < 100000; i++) {
        uint64_t v = rand_value(&s);
        hist_record(all, v);
        /* Skewed, so some parts stay small and one stays empty. */
        hist_record(parts[(next_rand(&s) % 7u) % (PARTS - 1u)], v);
    }
    struct hist *merged = hist_new();
    for (int i = 0; i < PARTS; i++) {
        hist_merge(merged, parts[i]);
        free(parts[i]);
    }
    if (memcmp(merged, all, sizeof(*all)) != 0) {
        fail_msg("seed %llu: merged histogram differs",
                 (unsigned long long)seed);
    }
    for (double p = 0.0; p <= 100.0; p += 0.5) {
        assert_int_equal(hist_percentile(merged, p), hist_percentile(all, p));
    }
    free(merged);
    free(all);
}

static void empty_histograms(void **state)
{
    (void)state;
    struct hist *h = hist_new();
    assert_int_equal(hist_percentile(h, 50.0), 0);
    assert_int_equal(hist_percentile(h, 100.0), 0);
    assert_true(hist_mean(h) == 0.0);
    struct hist *e = hist_new();
    hist_merge(h, e);
    assert_int_equal(h->n, 0);
    hist_record(h, 7);
    hist_merge(h, e); /* an empty one does not lower min to 0 */
    assert_int_equal(h->min, 7);
    hist_merge(e, h); /* into an empty one: min comes along */
    assert_int_equal(e->min, 7);
    assert_int_equal(e->max, 7);
    free(e);
    free(h);
}

static void values_over_the_range_are_clamped(void **state)
{
    (void)state;
    struct hist *h = hist_new();
    hist_record(h, 10);
    hist_record(h, UINT64_MAX);
    hist_record(h, UINT64_MAX);
    assert_int_equal(h->n, 3);
    assert_int_equal(h->clamped, 2);
    assert_int_equal(h->max, UINT64_MAX);
    assert_int_equal(h->sum, UINT64_MAX); /* saturated, not wrapped */
    assert_int_equal(h->counts[HIST_BUCKETS - 1u], 2);
    assert_int_equal(hist_percentile(h, 10.0), 10);
    assert_int_equal(hist_percentile(h, 50.0), HIST_VALUE_MAX);
    assert_int_equal(hist_percentile(h, 100.0), UINT64_MAX);
    free(h);
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i++) {
        if (strcmp(argv[i], "--seed") == 0) {
            seed = strtoull(argv[i + 1], NULL, 0);
        }
    }
    if (seed == 0) {
        seed = 1; /* xorshift stays at 0 forever */
    }
    printf("test_hist: seed %llu\n", (unsigned long long)seed);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(small_values_are_exact),
        cmocka_unit_test(buckets_tile_the_range),
        cmocka_unit_test(random_values_land_in_their_bucket),
        cmocka_unit_test(percentiles_of_small_values_are_exact),
        cmocka_unit_test(percentiles_of_large_values_are_close),
        cmocka_unit_test(one_value_is_every_percentile),
        cmocka_unit_test(merge_equals_recording_everything),
        cmocka_unit_test(empty_histograms),
        cmocka_unit_test(values_over_the_range_are_clamped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

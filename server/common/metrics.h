/*
 * metrics.h - latency histograms and the client request counters of khod,
 * read by GET /metrics (server/http).
 *
 * Recording is cheap enough for every request and every raft loop: a few
 * relaxed atomic adds, no lock, no allocation, no system call beyond the
 * clock read the caller makes. Readers see each counter exactly but not a
 * snapshot across counters: a histogram's sum may run a request ahead of
 * its buckets, which Prometheus tolerates.
 *
 * The request counters are one registry per process (like the log): every
 * API worker records into it, and the HTTP server reads it.
 */
#ifndef KHO_METRICS_H
#define KHO_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Latency buckets: their upper bounds in microseconds are
 * metrics_latency_bounds_us[]; one more bucket (+Inf) takes the rest. */
#define METRICS_LATENCY_BUCKETS 16u
/* Client request ops counted apart (proto Op values); a larger value is
 * counted as op 0. */
#define METRICS_OPS_MAX 64u
/* Outcomes counted apart: every kho_err value, and the last slot for a
 * value outside the enum (METRICS_ERR_OTHER). */
#define METRICS_ERRS_MAX 32u
#define METRICS_ERR_OTHER (METRICS_ERRS_MAX - 1u)

extern const uint64_t metrics_latency_bounds_us[METRICS_LATENCY_BUCKETS];

struct metrics_hist {
    /* Observations per bucket, not cumulative; the last is +Inf. */
    atomic_uint_fast64_t buckets[METRICS_LATENCY_BUCKETS + 1u];
    atomic_uint_fast64_t sum_us;
};

/* What a reader sees of a histogram, cumulative as Prometheus wants it:
 * buckets[i] counts the observations <= metrics_latency_bounds_us[i], and
 * buckets[METRICS_LATENCY_BUCKETS] == count. */
struct metrics_hist_snap {
    uint64_t buckets[METRICS_LATENCY_BUCKETS + 1u];
    uint64_t count, sum_us;
};

/* Microseconds on the monotonic clock. */
uint64_t metrics_now_us(void);

/* Records one observation of `us` microseconds. Thread-safe. */
void metrics_hist_observe(struct metrics_hist *h, uint64_t us);
void metrics_hist_read(struct metrics_hist *h, struct metrics_hist_snap *out);

/* Records one answered client request: its op (proto Op), its outcome (a
 * kho_err) and how long it took from receipt to reply. Thread-safe. */
void metrics_request(uint32_t op, int err, uint64_t latency_us);
/* Requests answered with outcome slot `err` for op slot `op` (both in
 * range; see METRICS_OPS_MAX, METRICS_ERRS_MAX). */
uint64_t metrics_requests(uint32_t op, uint32_t err);
/* Whether any request of op slot `op` was answered. */
bool metrics_op_seen(uint32_t op);
void metrics_request_latency(uint32_t op, struct metrics_hist_snap *out);
/* The label of outcome slot `err`: the kho_err name ("KHO_ENOTFOUND"), or
 * "other". Never NULL. */
const char *metrics_err_name(uint32_t err);

#endif /* KHO_METRICS_H */

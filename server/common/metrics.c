/*
 * metrics.c - see metrics.h.
 */
#include "metrics.h"

#include <time.h>

#include "../../client/kho_err.h"

/* From a fast LMDB commit on an SSD (100 us) to a client request that
 * waited out NODE_REQ_TIMEOUT_MS (3 s) and more. */
const uint64_t metrics_latency_bounds_us[METRICS_LATENCY_BUCKETS] = {
    100,   250,    500,    1000,   2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

/* The number of kho_err codes; they are dense from 0, so every one of them
 * has its own slot below METRICS_ERR_OTHER. */
#define METRICS_COUNT_ERR_(name, value, msg) +1
enum { METRICS_KHO_ERRS = 0 KHO_ERR_TABLE(METRICS_COUNT_ERR_) };
#undef METRICS_COUNT_ERR_
_Static_assert(METRICS_KHO_ERRS <= METRICS_ERR_OTHER,
               "METRICS_ERRS_MAX leaves no slot for some kho_err codes");

static atomic_uint_fast64_t requests[METRICS_OPS_MAX][METRICS_ERRS_MAX];
static struct metrics_hist request_latency[METRICS_OPS_MAX];

uint64_t metrics_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void metrics_hist_observe(struct metrics_hist *h, uint64_t us)
{
    /* A linear search: 16 compares, cheaper than the cache miss of the
     * add that follows. */
    uint32_t i = 0;
    while (i < METRICS_LATENCY_BUCKETS && us > metrics_latency_bounds_us[i]) {
        i++;
    }
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
}

void metrics_hist_read(struct metrics_hist *h, struct metrics_hist_snap *out)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i <= METRICS_LATENCY_BUCKETS; i++) {
        total += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        out->buckets[i] = total;
    }
    out->count = total;
    out->sum_us = atomic_load_explicit(&h->sum_us, memory_order_relaxed);
}

static uint32_t err_slot(int err)
{
    return err >= 0 && err < METRICS_KHO_ERRS ? (uint32_t)err
                                              : METRICS_ERR_OTHER;
}

void metrics_request(uint32_t op, int err, uint64_t latency_us)
{
    uint32_t o = op < METRICS_OPS_MAX ? op : 0;
    atomic_fetch_add_explicit(&requests[o][err_slot(err)], 1,
                              memory_order_relaxed);
    metrics_hist_observe(&request_latency[o], latency_us);
}

uint64_t metrics_requests(uint32_t op, uint32_t err)
{
    if (op >= METRICS_OPS_MAX || err >= METRICS_ERRS_MAX) {
        return 0;
    }
    return atomic_load_explicit(&requests[op][err], memory_order_relaxed);
}

bool metrics_op_seen(uint32_t op)
{
    for (uint32_t e = 0; op < METRICS_OPS_MAX && e < METRICS_ERRS_MAX; e++) {
        if (atomic_load_explicit(&requests[op][e], memory_order_relaxed) != 0) {
            return true;
        }
    }
    return false;
}

void metrics_request_latency(uint32_t op, struct metrics_hist_snap *out)
{
    metrics_hist_read(&request_latency[op < METRICS_OPS_MAX ? op : 0], out);
}

const char *metrics_err_name(uint32_t err)
{
    return err < METRICS_KHO_ERRS ? kho_errname((int)err) : "other";
}

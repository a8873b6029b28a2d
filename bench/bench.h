/*
 * bench.h - khobench, kho's load generator: what a run is asked to do
 * (struct bench_config, filled from the command line by khobench.c) and
 * what it measured (struct bench_result, filled by load.c).
 *
 * A run: open `conns` clients, make sure the registry exists, preload the
 * key space for read workloads, then let `clients` threads issue requests
 * until `total` requests were issued or `duration_s` passed. Closed loop
 * (rate 0): each thread sends its next request as soon as the previous one
 * answered. Open loop (rate > 0): request number i is due at start + i /
 * rate whichever thread takes it, and its latency counts from that due
 * time, so a server that falls behind shows it in the percentiles instead
 * of slowing the load down (no coordinated omission).
 */
#ifndef KHO_BENCH_H
#define KHO_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#include "client/kho.h"
#include "hist.h"

/* Bounds of every knob (a run that asks for more is a usage error). */
#define BENCH_CLIENTS_MAX 4096u
#define BENCH_TOTAL_MAX (UINT64_C(1) << 40)
#define BENCH_DURATION_S_MAX (7.0 * 24 * 3600)
#define BENCH_RATE_MAX 1e8
#define BENCH_KEYSPACE_MAX (UINT64_C(1) << 40)
#define BENCH_SHARDS_MAX 256u /* KHO_SHARDS_MAX */
#define BENCH_TIMEOUT_MS_MAX (3600u * 1000u)
#define BENCH_REGISTRY_WAIT_MS 10000u
/* Preload transactions in flight at once, at most (one per thread). */
#define BENCH_PRELOAD_THREADS_MAX 16u
/* Sends of one preload transaction whose outcome stayed unknown. */
#define BENCH_PRELOAD_TRIES 5u
/* kho_err codes are small; anything else is counted as "other". */
#define BENCH_ERR_CODES 32u
#define BENCH_ERRMSG_BYTES 256u

#define BENCH_TOTAL_DEFAULT 10000u
#define BENCH_KEY_SIZE_DEFAULT 16u
#define BENCH_VAL_SIZE_DEFAULT 256u
#define BENCH_KEYSPACE_DEFAULT 100000u
#define BENCH_READ_DEFAULT 0.9
#define BENCH_SCAN_LIMIT_DEFAULT 10u
#define BENCH_TXN_OPS_DEFAULT 4u
#define BENCH_TIMEOUT_MS_DEFAULT 5000u

enum bench_workload {
    BENCH_PUT,    /* kho_put of a random key */
    BENCH_GET,    /* linearizable kho_get */
    BENCH_GETSER, /* serializable kho_get: any replica answers */
    BENCH_MIXED,  /* a linearizable get with probability `read`, else a put */
    BENCH_SCAN,   /* one page of `scan_limit` records from a random key */
    BENCH_TXN,    /* a transaction of `txn_ops` puts of consecutive keys */
};

struct bench_config {
    enum bench_workload workload;
    const char *endpoints; /* comma-separated client URLs */
    uint32_t clients;      /* threads issuing requests */
    uint32_t conns;        /* kho_client objects, shared round-robin */
    uint64_t total;        /* requests in all, or 0 with duration_s */
    double duration_s;     /* length of the run, or 0 with total */
    double rate;           /* requests per second in all; 0: closed loop */
    uint32_t key_size, val_size;
    uint64_t keyspace;
    const char *registry;
    uint32_t shards; /* accepted, not used yet (one group per registry) */
    double read;     /* the reads' share of a mixed load */
    uint32_t scan_limit;
    uint32_t txn_ops;
    bool scan_serializable;
    bool preload; /* write every key before the run (read workloads) */
    bool json;
    bool progress; /* a progress line on stderr (a terminal) */
    uint32_t timeout_ms;
    uint64_t seed;
};

struct bench_result {
    struct hist lat_ns; /* successful requests only, as etcdload does */
    uint64_t ok;
    uint64_t not_found; /* reads answered "no such key" (counted in ok) */
    uint64_t errors;
    uint64_t err_counts[BENCH_ERR_CODES + 1]; /* the last: other codes */
    char err_sample[BENCH_ERR_CODES + 1][BENCH_ERRMSG_BYTES];
    double seconds;   /* first request to last answer */
    uint64_t preload; /* keys written by the preload */
    double preload_seconds;
};

/* The workload's name on the command line ("put", "getser", ...). */
const char *bench_workload_name(enum bench_workload w);

/* Whether the workload reads keys that should exist first. */
bool bench_workload_reads(enum bench_workload w);

/* Key number i as cfg->key_size ASCII digits (zero-padded on the left;
 * the last key_size digits when i has more). */
void bench_key(const struct bench_config *cfg, uint64_t i, char *out);

/*
 * Runs the benchmark that cfg describes and fills *res (zeroed first).
 * Returns KHO_OK when the load ran (even if every request failed: see
 * res), or the error that stopped it before the load began (clients,
 * registry, preload), with a message on stderr.
 */
int bench_run(const struct bench_config *cfg, struct bench_result *res);

#endif /* KHO_BENCH_H */

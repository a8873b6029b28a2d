/*
 * khobench.c - kho's load generator: `khobench WORKLOAD [options]`.
 *
 * This file reads the command line into a struct bench_config, runs it
 * (load.c) and prints what it measured: a summary for people, or with
 * --json exactly one line with the keys of the etcd anchor's etcdload
 * (ops_per_sec, ok, errors, seconds, p50_ms, p90_ms, p99_ms, p999_ms,
 * system, op, clients; plus conns and max_ms), so both tools' lines can be
 * compared by the same script. See bench/README.md.
 *
 * Exit status: 0 when at least one request succeeded (or none was asked
 * for), 1 when every request failed or the run could not start (no
 * registry, a failed preload), 2 for a usage error.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

static const char USAGE[] =
    "usage: khobench WORKLOAD [options]\n"
    "\n"
    "workloads:\n"
    "  put          put a random key\n"
    "  get          linearizable get of a random key\n"
    "  getser       serializable get (any replica answers, maybe stale)\n"
    "  mixed        linearizable gets (share --read) and puts\n"
    "  scan         one page of --scan-limit records from a random key\n"
    "  txn          a transaction of --txn-ops puts of consecutive keys\n"
    "\n"
    "options:\n"
    "  --endpoints URL,...  node client URLs (default $KHO_ENDPOINTS)\n"
    "  --clients N          threads sending requests (default 1)\n"
    "  --conns N            kho_client objects the threads share round-robin\n"
    "                       (default: one per thread; a client sends one\n"
    "                       request at a time, so N caps the requests in "
    "flight)\n"
    "  --total N            requests in all (default 10000)\n"
    "  --duration S         run for S seconds instead of --total\n"
    "  --rate R             open loop: R requests/s in all, each latency\n"
    "                       measured from when the request was due\n"
    "                       (default: closed loop)\n"
    "  --key-size B         key bytes (default 16)\n"
    "  --val-size B         value bytes (default 256)\n"
    "  --keyspace N         distinct keys (default 100000)\n"
    "  --registry NAME      registry to load, created if missing "
    "(default bench)\n"
    "  --shards N           shards of the registry when khobench creates it\n"
    "                       (default 1)\n"
    "  --read F             reads' share of mixed (default 0.9)\n"
    "  --scan-limit N       records per scan page (default 10)\n"
    "  --scan-serializable  serializable scans\n"
    "  --txn-ops N          puts per transaction (default 4)\n"
    "  --no-preload         do not write the key space before read "
    "workloads\n"
    "  --timeout MS         bound of each call, retries included "
    "(default 5000)\n"
    "  --seed N             seed of the random keys (default 1)\n"
    "  --json               one line of JSON on stdout instead of a summary\n"
    "  --help               this text\n";

enum {
    OPT_ENDPOINTS = 256,
    OPT_CLIENTS,
    OPT_CONNS,
    OPT_TOTAL,
    OPT_DURATION,
    OPT_RATE,
    OPT_KEY_SIZE,
    OPT_VAL_SIZE,
    OPT_KEYSPACE,
    OPT_REGISTRY,
    OPT_SHARDS,
    OPT_READ,
    OPT_SCAN_LIMIT,
    OPT_SCAN_SER,
    OPT_TXN_OPS,
    OPT_NO_PRELOAD,
    OPT_TIMEOUT,
    OPT_SEED,
    OPT_JSON,
    OPT_HELP,
};

static const struct option OPTIONS[] = {
    {"endpoints", required_argument, NULL, OPT_ENDPOINTS},
    {"clients", required_argument, NULL, OPT_CLIENTS},
    {"conns", required_argument, NULL, OPT_CONNS},
    {"total", required_argument, NULL, OPT_TOTAL},
    {"duration", required_argument, NULL, OPT_DURATION},
    {"rate", required_argument, NULL, OPT_RATE},
    {"key-size", required_argument, NULL, OPT_KEY_SIZE},
    {"val-size", required_argument, NULL, OPT_VAL_SIZE},
    {"keyspace", required_argument, NULL, OPT_KEYSPACE},
    {"registry", required_argument, NULL, OPT_REGISTRY},
    {"shards", required_argument, NULL, OPT_SHARDS},
    {"read", required_argument, NULL, OPT_READ},
    {"scan-limit", required_argument, NULL, OPT_SCAN_LIMIT},
    {"scan-serializable", no_argument, NULL, OPT_SCAN_SER},
    {"txn-ops", required_argument, NULL, OPT_TXN_OPS},
    {"no-preload", no_argument, NULL, OPT_NO_PRELOAD},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"seed", required_argument, NULL, OPT_SEED},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

/* Says what is wrong on stderr and returns 2, the usage-error status. */
__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt,
                                                             ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "khobench: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(khobench --help lists the options)\n");
    va_end(ap);
    return 2;
}

/* An integer in [lo, hi], all of s. */
static bool parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    if (s[0] == '-' || s[0] == '\0') {
        return false;
    }
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < lo || v > hi) {
        return false;
    }
    *out = v;
    return true;
}

static bool parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    uint64_t v = 0;
    if (!parse_u64(s, lo, hi, &v)) {
        return false;
    }
    *out = (uint32_t)v;
    return true;
}

/* A finite number in (lo, hi] (lo itself when lo_ok). */
static bool parse_double(const char *s, double lo, bool lo_ok, double hi,
                         double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v > hi ||
        v < lo || (v == lo && !lo_ok)) {
        return false;
    }
    *out = v;
    return true;
}

static bool parse_workload(const char *s, enum bench_workload *out)
{
    for (int w = BENCH_PUT; w <= BENCH_TXN; w++) {
        if (strcmp(s, bench_workload_name((enum bench_workload)w)) == 0) {
            *out = (enum bench_workload)w;
            return true;
        }
    }
    return false;
}

/* One option into cfg; 0, or 2 for a usage error. `conns_set` and
 * `preload_off` remember what only the end of the line can settle. */
static int parse_option(struct bench_config *cfg, int opt, const char *arg,
                        bool *conns_set, bool *preload_off)
{
    bool ok = true;
    switch (opt) {
    case OPT_ENDPOINTS:
        cfg->endpoints = arg;
        break;
    case OPT_CLIENTS:
        ok = parse_u32(arg, 1, BENCH_CLIENTS_MAX, &cfg->clients);
        break;
    case OPT_CONNS:
        ok = parse_u32(arg, 1, BENCH_CLIENTS_MAX, &cfg->conns);
        *conns_set = true;
        break;
    case OPT_TOTAL:
        ok = parse_u64(arg, 1, BENCH_TOTAL_MAX, &cfg->total);
        break;
    case OPT_DURATION:
        ok = parse_double(arg, 0.0, false, BENCH_DURATION_S_MAX,
                          &cfg->duration_s);
        break;
    case OPT_RATE:
        ok = parse_double(arg, 0.0, false, BENCH_RATE_MAX, &cfg->rate);
        break;
    case OPT_KEY_SIZE:
        ok = parse_u32(arg, 1, KHO_KEY_BYTES_MAX, &cfg->key_size);
        break;
    case OPT_VAL_SIZE:
        ok = parse_u32(arg, 0, KHO_VALUE_BYTES_MAX, &cfg->val_size);
        break;
    case OPT_KEYSPACE:
        ok = parse_u64(arg, 1, BENCH_KEYSPACE_MAX, &cfg->keyspace);
        break;
    case OPT_REGISTRY:
        cfg->registry = arg;
        ok = arg[0] != '\0' && strlen(arg) <= KHO_NAME_BYTES_MAX;
        break;
    case OPT_SHARDS:
        ok = parse_u32(arg, 1, BENCH_SHARDS_MAX, &cfg->shards);
        break;
    case OPT_READ:
        ok = parse_double(arg, 0.0, true, 1.0, &cfg->read);
        break;
    case OPT_SCAN_LIMIT:
        ok = parse_u32(arg, 1, KHO_SCAN_LIMIT_MAX, &cfg->scan_limit);
        break;
    case OPT_SCAN_SER:
        cfg->scan_serializable = true;
        break;
    case OPT_TXN_OPS:
        ok = parse_u32(arg, 1, KHO_TXN_OPS_MAX, &cfg->txn_ops);
        break;
    case OPT_NO_PRELOAD:
        *preload_off = true;
        break;
    case OPT_TIMEOUT:
        ok = parse_u32(arg, 1, BENCH_TIMEOUT_MS_MAX, &cfg->timeout_ms);
        break;
    case OPT_SEED:
        ok = parse_u64(arg, 0, UINT64_MAX, &cfg->seed);
        break;
    case OPT_JSON:
        cfg->json = true;
        break;
    default:
        return 2;
    }
    return ok ? 0
              : usage_error("bad value '%s' (see the bounds in --help)", arg);
}

/* What the options say together; 0, or 2 for a usage error. */
static int check_config(struct bench_config *cfg)
{
    if (cfg->endpoints == NULL || cfg->endpoints[0] == '\0') {
        return usage_error("no endpoints: --endpoints or $KHO_ENDPOINTS");
    }
    if (cfg->total != 0 && cfg->duration_s != 0.0) {
        return usage_error("--total and --duration exclude each other");
    }
    if (cfg->conns > cfg->clients) {
        return usage_error("--conns is more than --clients");
    }
    if (cfg->workload == BENCH_TXN) {
        uint64_t bytes =
            (uint64_t)cfg->txn_ops * (cfg->key_size + (uint64_t)cfg->val_size);
        if (cfg->txn_ops > cfg->keyspace || bytes > KHO_TXN_BYTES_MAX) {
            return usage_error("--txn-ops: more keys than the key space, "
                               "or over KHO_TXN_BYTES_MAX together");
        }
    }
    if (cfg->total == 0 && cfg->duration_s == 0.0) {
        cfg->total = BENCH_TOTAL_DEFAULT;
    }
    return 0;
}

static void config_defaults(struct bench_config *cfg)
{
    *cfg = (struct bench_config){
        .endpoints = getenv("KHO_ENDPOINTS"),
        .clients = 1,
        .key_size = BENCH_KEY_SIZE_DEFAULT,
        .val_size = BENCH_VAL_SIZE_DEFAULT,
        .keyspace = BENCH_KEYSPACE_DEFAULT,
        .registry = "bench",
        .shards = 1,
        .read = BENCH_READ_DEFAULT,
        .scan_limit = BENCH_SCAN_LIMIT_DEFAULT,
        .txn_ops = BENCH_TXN_OPS_DEFAULT,
        .timeout_ms = BENCH_TIMEOUT_MS_DEFAULT,
        .seed = 1,
    };
}

/* Fills cfg from argv; 0, 2 for a usage error, or -1 after --help. */
static int parse_args(int argc, char **argv, struct bench_config *cfg)
{
    config_defaults(cfg);
    bool conns_set = false, preload_off = false;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", OPTIONS, NULL)) != -1) {
        if (opt == OPT_HELP || opt == 'h') {
            fputs(USAGE, stdout);
            return -1;
        }
        if (opt == '?') {
            return usage_error("unknown option or missing value: %s",
                               argv[optind - 1]);
        }
        int rc = parse_option(cfg, opt, optarg, &conns_set, &preload_off);
        if (rc != 0) {
            return rc;
        }
    }
    if (optind + 1 != argc) {
        return usage_error("name one WORKLOAD");
    }
    if (!parse_workload(argv[optind], &cfg->workload)) {
        return usage_error("unknown workload '%s'", argv[optind]);
    }
    if (!conns_set) {
        cfg->conns = cfg->clients;
    }
    cfg->preload = bench_workload_reads(cfg->workload) && !preload_off;
    cfg->progress = isatty(STDERR_FILENO) != 0;
    return check_config(cfg);
}

/* --- Output ------------------------------------------------------------------
 */

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static double ops_per_sec(const struct bench_result *r)
{
    return r->seconds > 0 ? (double)r->ok / r->seconds : 0.0;
}

static void print_json(const struct bench_config *cfg,
                       const struct bench_result *r)
{
    const struct hist *h = &r->lat_ns;
    printf("{\"system\":\"kho\",\"op\":\"%s\",\"clients\":%u,\"conns\":%u,"
           "\"ok\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"seconds\":%.6f,"
           "\"ops_per_sec\":%.3f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
           "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f}\n",
           bench_workload_name(cfg->workload), cfg->clients, cfg->conns, r->ok,
           r->errors, r->seconds, ops_per_sec(r), ms(hist_percentile(h, 50.0)),
           ms(hist_percentile(h, 90.0)), ms(hist_percentile(h, 99.0)),
           ms(hist_percentile(h, 99.9)), ms(h->max));
}

static void print_errors(FILE *f, const struct bench_result *r)
{
    for (uint32_t e = 0; e <= BENCH_ERR_CODES; e++) {
        if (r->err_counts[e] == 0) {
            continue;
        }
        fprintf(f, "  %-16s %" PRIu64 "  (%s)\n",
                e < BENCH_ERR_CODES ? kho_errname((int)e) : "other",
                r->err_counts[e], r->err_sample[e]);
    }
}

static void print_summary(const struct bench_config *cfg,
                          const struct bench_result *r)
{
    const struct hist *h = &r->lat_ns;
    printf("khobench %s: %u clients on %u connections, ",
           bench_workload_name(cfg->workload), cfg->clients, cfg->conns);
    if (cfg->rate != 0.0) {
        printf("open loop at %.0f/s", cfg->rate);
    } else {
        printf("closed loop");
    }
    printf(", %u-byte keys, %u-byte values, %" PRIu64 " keys\n", cfg->key_size,
           cfg->val_size, cfg->keyspace);
    if (cfg->preload) {
        printf("preload     %" PRIu64 " keys in %.2f s\n", r->preload,
               r->preload_seconds);
    }
    printf("requests    %" PRIu64 " ok (%" PRIu64 " not found), %" PRIu64
           " errors, in %.3f s\n",
           r->ok, r->not_found, r->errors, r->seconds);
    printf("throughput  %.1f ops/s\n", ops_per_sec(r));
    printf("latency ms  mean %.3f  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  "
           "max %.3f\n",
           hist_mean(h) / 1e6, ms(hist_percentile(h, 50.0)),
           ms(hist_percentile(h, 90.0)), ms(hist_percentile(h, 99.0)),
           ms(hist_percentile(h, 99.9)), ms(h->max));
    if (r->errors != 0) {
        printf("errors:\n");
        print_errors(stdout, r);
    }
}

int main(int argc, char **argv)
{
    struct bench_config cfg;
    int rc = parse_args(argc, argv, &cfg);
    if (rc != 0) {
        return rc < 0 ? 0 : rc;
    }
    struct bench_result *res = malloc(sizeof(*res));
    if (res == NULL) {
        fprintf(stderr, "khobench: out of memory\n");
        return 1;
    }
    rc = bench_run(&cfg, res);
    if (rc == KHO_OK && cfg.json) {
        print_json(&cfg, res);
    } else if (rc == KHO_OK) {
        print_summary(&cfg, res);
    }
    int status = rc != KHO_OK || (res->ok == 0 && res->errors > 0) ? 1 : 0;
    if (rc == KHO_OK && status != 0) {
        fprintf(stderr, "khobench: every request failed\n");
        if (cfg.json) {
            print_errors(stderr, res); /* stdout keeps its one line */
        }
    }
    free(res);
    return status;
}

/*
 * load.c - runs one khobench load (bench.h): clients, registry, preload,
 * warm-up, then the measured requests, with a progress line on a
 * terminal.
 *
 * Each thread keeps its own result (histogram, counts) and touches shared
 * memory only through a few atomics: the next request number, and the
 * counters the progress line reads. The results are merged once the
 * threads are done, so measuring costs no lock on the request path.
 */
#include "bench.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PROGRESS_PERIOD_MS 250u
#define PROGRESS_BAR_WIDTH 30u
#define REGISTRY_POLL_MS 50u

/* What every thread of a run shares. */
struct run {
    const struct bench_config *cfg;
    struct kho_client **conns; /* cfg->conns of them */
    char *value;               /* cfg->val_size bytes of 'v' */
    uint64_t start_ns;
    uint64_t end_ns;    /* with duration_s: when requests stop */
    double interval_ns; /* open loop: between two requests' due times */
    pthread_mutex_t mu; /* with cv: the threads start together */
    pthread_cond_t cv;
    bool released, cancelled;
    atomic_uint_fast64_t next; /* the next request (or preload batch) */
    atomic_uint_fast64_t ok, errors;
    atomic_uint_fast32_t finished; /* threads done */
    atomic_bool failed;            /* preload: one batch failed, stop */
    uint64_t batch;                /* preload: keys per transaction */
    uint32_t shards;               /* the registry's (kho_registry_describe) */
};

struct worker {
    pthread_t tid;
    struct run *run;
    struct kho_client *c;
    bool shared; /* c serves other threads too */
    uint64_t rng;
    char *keys;         /* txn_ops (or a preload batch of) keys */
    struct kho_op *ops; /* as many */
    uint64_t finish_ns; /* when its last request answered */
    int preload_rc;     /* the error that stopped the preload */
    struct bench_result res;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until_ns(uint64_t t)
{
    struct timespec ts = {.tv_sec = (time_t)(t / 1000000000u),
                          .tv_nsec = (long)(t % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) ==
           EINTR) {
    }
}

static void sleep_ms(uint32_t ms)
{
    sleep_until_ns(now_ns() + (uint64_t)ms * 1000000u);
}

/* A thread waits here until every thread started; false: the run was
 * cancelled before it began. */
static bool wait_go(struct run *run)
{
    pthread_mutex_lock(&run->mu);
    while (!run->released) {
        pthread_cond_wait(&run->cv, &run->mu);
    }
    bool go = !run->cancelled;
    pthread_mutex_unlock(&run->mu);
    return go;
}

/* xorshift64*: each thread its own stream, seeded from --seed. */
static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

static const char *const WORKLOAD_NAMES[] = {
    [BENCH_PUT] = "put",     [BENCH_GET] = "get",   [BENCH_GETSER] = "getser",
    [BENCH_MIXED] = "mixed", [BENCH_SCAN] = "scan", [BENCH_TXN] = "txn",
};

const char *bench_workload_name(enum bench_workload w)
{
    return WORKLOAD_NAMES[w];
}

bool bench_workload_reads(enum bench_workload w)
{
    return w == BENCH_GET || w == BENCH_GETSER || w == BENCH_MIXED ||
           w == BENCH_SCAN;
}

void bench_key(const struct bench_config *cfg, uint64_t i, char *out)
{
    char digits[24];
    size_t n = (size_t)snprintf(digits, sizeof(digits), "%" PRIu64, i);
    size_t ks = cfg->key_size;
    if (n >= ks) {
        memcpy(out, digits + (n - ks), ks);
        return;
    }
    memset(out, '0', ks - n);
    memcpy(out + (ks - n), digits, n);
}

/* --- One request ------------------------------------------------------------
 */

static int do_put(struct worker *w, uint64_t k)
{
    const struct bench_config *cfg = w->run->cfg;
    bench_key(cfg, k, w->keys);
    return kho_put(w->c, cfg->registry, w->keys, cfg->key_size, w->run->value,
                   cfg->val_size, KHO_COND_NONE, 0, NULL);
}

static int do_get(struct worker *w, uint64_t k, int serializable)
{
    const struct bench_config *cfg = w->run->cfg;
    bench_key(cfg, k, w->keys);
    void *v = NULL;
    size_t len = 0;
    int rc = kho_get(w->c, cfg->registry, w->keys, cfg->key_size, serializable,
                     &v, &len, NULL);
    free(v);
    return rc;
}

static int do_scan(struct worker *w, uint64_t k)
{
    const struct bench_config *cfg = w->run->cfg;
    bench_key(cfg, k, w->keys);
    struct kho_scan_opts o = {
        .start = w->keys,
        .start_len = cfg->key_size,
        .limit = cfg->scan_limit,
        .serializable = cfg->scan_serializable,
    };
    struct kho_record *recs = NULL;
    size_t n = 0;
    void *token = NULL;
    size_t token_len = 0;
    int rc = kho_scan(w->c, cfg->registry, &o, &recs, &n, &token, &token_len);
    kho_records_free(recs, n);
    free(token);
    return rc;
}

/* Puts of keys first, first + 1, ... (n of them, wrapping in the key
 * space, so distinct while n <= keyspace) in one transaction. */
static int do_puts_txn(struct worker *w, uint64_t first, uint64_t n)
{
    const struct bench_config *cfg = w->run->cfg;
    for (uint64_t i = 0; i < n; i++) {
        char *key = w->keys + i * cfg->key_size;
        bench_key(cfg, (first + i) % cfg->keyspace, key);
        w->ops[i] = (struct kho_op){.key = key,
                                    .key_len = cfg->key_size,
                                    .value = w->run->value,
                                    .value_len = cfg->val_size};
    }
    return kho_txn(w->c, cfg->registry, NULL, 0, w->ops, n, NULL, NULL);
}

/* Sends one request of the workload; *is_read tells whether "not found"
 * is an answer (a read) or an error (a write). */
static int do_request(struct worker *w, bool *is_read)
{
    const struct bench_config *cfg = w->run->cfg;
    uint64_t k = next_rand(&w->rng) % cfg->keyspace;
    *is_read = true;
    switch (cfg->workload) {
    case BENCH_GET:
        return do_get(w, k, 0);
    case BENCH_GETSER:
        return do_get(w, k, 1);
    case BENCH_SCAN:
        return do_scan(w, k);
    case BENCH_MIXED:
        /* 53 random bits give a uniform double in [0, 1). */
        if ((double)(next_rand(&w->rng) >> 11) * 0x1p-53 < cfg->read) {
            return do_get(w, k, 0);
        }
        break;
    case BENCH_TXN:
        *is_read = false;
        return do_puts_txn(w, k, cfg->txn_ops);
    case BENCH_PUT:
        break;
    }
    *is_read = false;
    return do_put(w, k);
}

static void count_error(struct worker *w, int rc)
{
    struct bench_result *r = &w->res;
    uint32_t slot =
        rc >= 0 && rc < (int)BENCH_ERR_CODES ? (uint32_t)rc : BENCH_ERR_CODES;
    r->errors++;
    if (r->err_counts[slot]++ == 0) {
        /* A shared client's message may already be another thread's. */
        snprintf(r->err_sample[slot], sizeof(r->err_sample[slot]), "%s",
                 w->shared ? kho_strerror(rc) : kho_client_errmsg(w->c));
    }
}

/* --- The measured load ------------------------------------------------------
 */

/* Takes the next request: false when the run is over, else *due_ns is
 * when it was meant to start (open loop: it waits until then). */
static bool next_request(struct run *run, uint64_t *due_ns)
{
    const struct bench_config *cfg = run->cfg;
    uint64_t i = atomic_fetch_add_explicit(&run->next, 1, memory_order_relaxed);
    if (cfg->total != 0 && i >= cfg->total) {
        return false;
    }
    if (cfg->rate == 0.0) {
        *due_ns = now_ns();
    } else {
        *due_ns = run->start_ns + (uint64_t)((double)i * run->interval_ns);
    }
    if (cfg->duration_s != 0.0 && *due_ns >= run->end_ns) {
        return false;
    }
    if (cfg->rate != 0.0 && *due_ns > now_ns()) {
        sleep_until_ns(*due_ns);
    }
    return true;
}

static void *load_main(void *arg)
{
    struct worker *w = arg;
    struct run *run = w->run;
    uint64_t due = 0;
    bool go = wait_go(run);
    while (go && next_request(run, &due)) {
        bool is_read = false;
        int rc = do_request(w, &is_read);
        uint64_t end = now_ns();
        if (rc == KHO_OK || (rc == KHO_ENOTFOUND && is_read)) {
            w->res.ok++;
            w->res.not_found += rc == KHO_ENOTFOUND;
            hist_record(&w->res.lat_ns, end - due);
            atomic_fetch_add_explicit(&run->ok, 1, memory_order_relaxed);
        } else {
            count_error(w, rc);
            atomic_fetch_add_explicit(&run->errors, 1, memory_order_relaxed);
        }
        w->finish_ns = end;
    }
    atomic_fetch_add_explicit(&run->finished, 1, memory_order_release);
    return NULL;
}

/* --- Preload ----------------------------------------------------------------
 */

/* One preload transaction, sent again (a bounded number of times) when
 * its outcome is unknown or the cluster was briefly unavailable: writing
 * the same values twice leaves the same data, so a resend is harmless. */
static int preload_batch_txn(struct worker *w, uint64_t first, uint64_t n)
{
    int rc = KHO_ETIMEOUT;
    for (uint32_t t = 0; t < BENCH_PRELOAD_TRIES; t++) {
        rc = do_puts_txn(w, first, n);
        if (rc != KHO_ETIMEOUT && rc != KHO_EUNAVAILABLE && rc != KHO_EBUSY) {
            break;
        }
    }
    return rc;
}

static void *preload_main(void *arg)
{
    struct worker *w = arg;
    struct run *run = w->run;
    const struct bench_config *cfg = run->cfg;
    if (!wait_go(run)) {
        return NULL;
    }
    while (!atomic_load(&run->failed)) {
        uint64_t b = atomic_fetch_add(&run->next, 1);
        uint64_t first = b * run->batch;
        if (first >= cfg->keyspace) {
            break;
        }
        uint64_t n = cfg->keyspace - first < run->batch ? cfg->keyspace - first
                                                        : run->batch;
        int rc = preload_batch_txn(w, first, n);
        if (rc != KHO_OK) {
            w->preload_rc = rc;
            snprintf(w->res.err_sample[0], BENCH_ERRMSG_BYTES, "%s",
                     kho_client_errmsg(w->c));
            atomic_store(&run->failed, true);
            break;
        }
        atomic_fetch_add(&run->ok, n);
    }
    atomic_fetch_add_explicit(&run->finished, 1, memory_order_release);
    return NULL;
}

/* Keys per preload transaction: as many as one transaction may carry. */
static uint64_t preload_batch(const struct bench_config *cfg)
{
    uint64_t by_bytes =
        KHO_TXN_BYTES_MAX / ((uint64_t)cfg->key_size + cfg->val_size);
    uint64_t b = by_bytes < KHO_TXN_OPS_MAX ? by_bytes : KHO_TXN_OPS_MAX;
    return b > 0 ? b : 1;
}

/* --- Progress ----------------------------------------------------------------
 */

/* One line, redrawn in place: a bar when the end is known in advance. */
static void progress_line(const char *what, double frac, double secs,
                          uint64_t ok, uint64_t errors)
{
    char bar[PROGRESS_BAR_WIDTH + 1];
    uint32_t filled = (uint32_t)(frac * PROGRESS_BAR_WIDTH);
    filled = filled > PROGRESS_BAR_WIDTH ? PROGRESS_BAR_WIDTH : filled;
    memset(bar, '#', filled);
    memset(bar + filled, '.', PROGRESS_BAR_WIDTH - filled);
    bar[PROGRESS_BAR_WIDTH] = '\0';
    fprintf(stderr,
            "\r%s [%s] %3.0f%%  %6.1f s  %" PRIu64 " ok  %" PRIu64
            " err  %.0f/s\033[K",
            what, bar, frac * 100.0, secs, ok, errors,
            secs > 0 ? (double)ok / secs : 0.0);
    fflush(stderr);
}

/* Waits for n threads to finish, drawing the progress line meanwhile when
 * asked; then joins them. `goal` is the count that means done (0: the
 * run's duration decides). */
static void wait_threads(struct run *run, struct worker *ws, uint32_t n,
                         const char *what, uint64_t goal)
{
    const struct bench_config *cfg = run->cfg;
    while (cfg->progress && atomic_load(&run->finished) < n) {
        sleep_ms(PROGRESS_PERIOD_MS);
        uint64_t ok = atomic_load(&run->ok), errors = atomic_load(&run->errors);
        double secs = (double)(now_ns() - run->start_ns) / 1e9;
        double frac = goal != 0 ? (double)(ok + errors) / (double)goal
                                : secs / cfg->duration_s;
        progress_line(what, frac, secs, ok, errors);
    }
    if (cfg->progress) {
        fprintf(stderr, "\r\033[K");
        fflush(stderr);
    }
    for (uint32_t i = 0; i < n; i++) {
        pthread_join(ws[i].tid, NULL);
    }
}

/* Starts n threads running fn on ws[0..n), then releases them together
 * with start_ns set. Returns KHO_OK, or KHO_ENOMEM when a thread could not
 * start (those started are told to stop, and joined). */
static int start_threads(struct run *run, struct worker *ws, uint32_t n,
                         void *(*fn)(void *))
{
    atomic_store(&run->next, 0);
    atomic_store(&run->ok, 0);
    atomic_store(&run->errors, 0);
    atomic_store(&run->finished, 0);
    run->released = false;
    run->cancelled = false;
    uint32_t started = 0;
    while (started < n &&
           pthread_create(&ws[started].tid, NULL, fn, &ws[started]) == 0) {
        started++;
    }
    pthread_mutex_lock(&run->mu);
    run->start_ns = now_ns();
    run->end_ns = run->start_ns + (uint64_t)(run->cfg->duration_s * 1e9);
    run->cancelled = started < n;
    run->released = true;
    pthread_cond_broadcast(&run->cv);
    pthread_mutex_unlock(&run->mu);
    if (started == n) {
        return KHO_OK;
    }
    fprintf(stderr, "khobench: cannot start thread %u of %u\n", started + 1u,
            n);
    for (uint32_t i = 0; i < started; i++) {
        pthread_join(ws[i].tid, NULL);
    }
    return KHO_ENOMEM;
}

/* --- Set-up
 * -------------------------------------------------------------------
 */

/* Creates the registry if missing, then waits (a bounded time) until its
 * group has a leader, so the first requests do not measure an election. */
static int ensure_registry(struct kho_client *c, const char *name,
                           uint32_t shards, uint32_t *has_shards)
{
    struct kho_registry_opts ro = {.shards = shards};
    int rc = kho_registry_create_opts(c, name, &ro, NULL);
    if (rc != KHO_OK && rc != KHO_EEXIST) {
        fprintf(stderr, "khobench: registry create %s: %s (%s)\n", name,
                kho_strerror(rc), kho_client_errmsg(c));
        return rc;
    }
    uint64_t deadline = now_ns() + BENCH_REGISTRY_WAIT_MS * UINT64_C(1000000);
    while (now_ns() < deadline) {
        struct kho_registry_info info;
        if (kho_registry_describe(c, name, &info) == KHO_OK) {
            *has_shards = info.shards;
            /* describe knows shard 0's leader only where it is hosted: a
             * sharded registry's shards elect on their own; go on. */
            if (info.leader != 0 || info.shards > 1) {
                return KHO_OK;
            }
        }
        sleep_ms(REGISTRY_POLL_MS);
    }
    fprintf(stderr, "khobench: registry %s has no leader yet; going on\n",
            name);
    return KHO_OK;
}

/* The endpoints list rotated by r: client j starts at endpoint j, so
 * serializable reads spread over the replicas the way etcd's client
 * balancer spreads them, and writes find the leader by its hint. */
static int open_conn(const struct bench_config *cfg, uint32_t r,
                     struct kho_client **out)
{
    const char *eps[KHO_ENDPOINTS_MAX];
    size_t lens[KHO_ENDPOINTS_MAX];
    size_t n = 0;
    for (const char *p = cfg->endpoints; *p != '\0' && n < KHO_ENDPOINTS_MAX;) {
        size_t len = strcspn(p, ",");
        if (len > 0) {
            eps[n] = p;
            lens[n++] = len;
        }
        p += len + (p[len] == ',');
    }
    if (n == 0) {
        return KHO_EINVAL;
    }
    char *list = malloc(strlen(cfg->endpoints) + n + 1);
    if (list == NULL) {
        return KHO_ENOMEM;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = (i + r) % n;
        memcpy(list + o, eps[j], lens[j]);
        o += lens[j];
        list[o++] = ',';
    }
    list[o - 1] = '\0';
    int rc = kho_client_open(list, cfg->timeout_ms, out);
    free(list);
    if (rc == KHO_OK) {
        kho_client_set_name(*out, "khobench");
    }
    return rc;
}

/* One request per client before the clock starts: it dials, and follows
 * the leader's hint, so the run does not measure connection set-up. */
static void warm_up(const struct bench_config *cfg, struct kho_client *c,
                    char *key)
{
    bench_key(cfg, 0, key);
    void *v = NULL;
    size_t len = 0;
    int ser = cfg->workload == BENCH_GETSER;
    if (kho_get(c, cfg->registry, key, cfg->key_size, ser, &v, &len, NULL) ==
        KHO_OK) {
        free(v);
    }
}

static int alloc_workers(const struct bench_config *cfg, struct run *run,
                         struct worker *ws, uint32_t n, uint64_t keys)
{
    for (uint32_t i = 0; i < n; i++) {
        struct worker *w = &ws[i];
        w->run = run;
        w->c = run->conns[i % cfg->conns];
        w->shared = cfg->conns < n;
        w->rng = cfg->seed * UINT64_C(0x9E3779B97F4A7C15) + i + 1u;
        w->rng = w->rng != 0 ? w->rng : 1u; /* xorshift stays at 0 */
        w->keys = malloc(keys * cfg->key_size);
        w->ops = calloc(keys, sizeof(*w->ops));
        if (w->keys == NULL || w->ops == NULL) {
            return KHO_ENOMEM;
        }
        hist_init(&w->res.lat_ns);
    }
    return KHO_OK;
}

static void free_workers(struct worker *ws, uint32_t n)
{
    for (uint32_t i = 0; ws != NULL && i < n; i++) {
        free(ws[i].keys);
        free(ws[i].ops);
    }
    free(ws);
}

static int preload(struct run *run, struct bench_result *res)
{
    const struct bench_config *cfg = run->cfg;
    uint32_t n = cfg->clients < BENCH_PRELOAD_THREADS_MAX
                     ? cfg->clients
                     : BENCH_PRELOAD_THREADS_MAX;
    /* A transaction stays within one shard: a registry of several shards
     * is preloaded one put at a time. */
    run->batch = run->shards > 1 ? 1 : preload_batch(cfg);
    struct worker *ws = calloc(n, sizeof(*ws));
    int rc =
        ws != NULL ? alloc_workers(cfg, run, ws, n, run->batch) : KHO_ENOMEM;
    if (rc != KHO_OK) {
        free_workers(ws, n);
        return rc;
    }
    rc = start_threads(run, ws, n, preload_main);
    if (rc != KHO_OK) {
        free_workers(ws, n);
        return rc;
    }
    wait_threads(run, ws, n, "preload", cfg->keyspace);
    res->preload = atomic_load(&run->ok);
    res->preload_seconds = (double)(now_ns() - run->start_ns) / 1e9;
    for (uint32_t i = 0; i < n; i++) {
        if (ws[i].preload_rc != KHO_OK && rc == KHO_OK) {
            rc = ws[i].preload_rc;
            fprintf(stderr, "khobench: preload: %s (%s)\n", kho_strerror(rc),
                    ws[i].res.err_sample[0]);
        }
    }
    free_workers(ws, n);
    return rc;
}

static void merge_result(struct bench_result *res, const struct worker *w)
{
    hist_merge(&res->lat_ns, &w->res.lat_ns);
    res->ok += w->res.ok;
    res->not_found += w->res.not_found;
    res->errors += w->res.errors;
    for (uint32_t e = 0; e <= BENCH_ERR_CODES; e++) {
        if (w->res.err_counts[e] != 0 && res->err_counts[e] == 0) {
            memcpy(res->err_sample[e], w->res.err_sample[e],
                   BENCH_ERRMSG_BYTES);
        }
        res->err_counts[e] += w->res.err_counts[e];
    }
}

static int measure(struct run *run, struct bench_result *res)
{
    const struct bench_config *cfg = run->cfg;
    uint32_t n = cfg->clients;
    struct worker *ws = calloc(n, sizeof(*ws));
    uint64_t keys = cfg->workload == BENCH_TXN ? cfg->txn_ops : 1u;
    int rc = ws != NULL ? alloc_workers(cfg, run, ws, n, keys) : KHO_ENOMEM;
    if (rc != KHO_OK) {
        free_workers(ws, n);
        return rc;
    }
    if (cfg->rate != 0.0) {
        run->interval_ns = 1e9 / cfg->rate;
    }
    rc = start_threads(run, ws, n, load_main);
    if (rc != KHO_OK) {
        free_workers(ws, n);
        return rc;
    }
    wait_threads(run, ws, n, bench_workload_name(cfg->workload), cfg->total);
    uint64_t last = run->start_ns;
    for (uint32_t i = 0; i < n; i++) {
        merge_result(res, &ws[i]);
        last = ws[i].finish_ns > last ? ws[i].finish_ns : last;
    }
    res->seconds = (double)(last - run->start_ns) / 1e9;
    free_workers(ws, n);
    return KHO_OK;
}

int bench_run(const struct bench_config *cfg, struct bench_result *res)
{
    memset(res, 0, sizeof(*res));
    hist_init(&res->lat_ns);
    struct run run = {.cfg = cfg};
    pthread_mutex_init(&run.mu, NULL);
    pthread_cond_init(&run.cv, NULL);
    run.conns = calloc(cfg->conns, sizeof(*run.conns));
    run.value = malloc(cfg->val_size > 0 ? cfg->val_size : 1u);
    char *key = malloc(cfg->key_size);
    int rc = run.conns != NULL && run.value != NULL && key != NULL ? KHO_OK
                                                                   : KHO_ENOMEM;
    if (rc == KHO_OK) {
        memset(run.value, 'v', cfg->val_size);
    }
    for (uint32_t i = 0; rc == KHO_OK && i < cfg->conns; i++) {
        rc = open_conn(cfg, i, &run.conns[i]);
    }
    if (rc == KHO_OK) {
        rc = ensure_registry(run.conns[0], cfg->registry, cfg->shards,
                             &run.shards);
    }
    if (rc == KHO_OK && cfg->preload) {
        rc = preload(&run, res);
    }
    for (uint32_t i = 0; rc == KHO_OK && i < cfg->conns; i++) {
        warm_up(cfg, run.conns[i], key);
    }
    if (rc == KHO_OK) {
        rc = measure(&run, res);
    }
    if (rc == KHO_ENOMEM || rc == KHO_EINVAL) {
        fprintf(stderr, "khobench: %s\n", kho_strerror(rc));
    }
    for (uint32_t i = 0; run.conns != NULL && i < cfg->conns; i++) {
        kho_client_close(run.conns[i]);
    }
    free(run.conns);
    free(run.value);
    free(key);
    pthread_cond_destroy(&run.cv);
    pthread_mutex_destroy(&run.mu);
    return rc;
}

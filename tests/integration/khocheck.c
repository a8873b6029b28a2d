/*
 * khocheck.c - drives a running kho cluster through libkho for the
 * integration tests and for first figures.
 *
 *   khocheck write REG PREFIX N FILE    put PREFIXi = val-PREFIXi for i < N;
 *                                       append each ACKNOWLEDGED key to FILE
 *   khocheck verify REG FILE            every key in FILE reads back with its
 *                                       value (linearizable reads)
 *   khocheck bench REG N THREADS        N puts split over THREADS clients;
 *                                       prints puts/s and p50/p99 latency
 *   khocheck retry REG                  sends one put with a fixed session
 *                                       and seq again and again, the way a
 *                                       client resends after a timeout: it
 *                                       is applied once, every answer is
 *                                       the first one, an older seq is
 *                                       KHO_ESTALE
 *   khocheck scan REG PREFIX N          writes N keys in transactions of
 *                                       100, then reads them back in pages
 *                                       of 37 (scan) and checks order,
 *                                       count, values and metadata
 *   khocheck scanned REG FILE           scans the whole registry in pages of
 *                                       37 (merged across its shards) and
 *                                       checks that keys come in strictly
 *                                       increasing order and that every key
 *                                       in FILE is there with its value
 *   khocheck fill REG                   puts 64 KiB values until the cluster
 *                                       answers KHO_ENOSPC, then checks
 *                                       that deletes and reads still work
 *   khocheck load REG MB                writes MB megabytes of 64 KiB values
 *                                       (keys load-N), 16 per transaction;
 *                                       prints MB/s
 *   khocheck conf GROUP                 prints the configuration of a group
 *                                       as its leader reports it: "id:voter
 *                                       id:learner ..." in id order (exit 1
 *                                       when no endpoint leads it)
 *   khocheck ryw REG N THREADS          THREADS clients, N rounds each: put
 *                                       ryw-T = i, then a linearizable get
 *                                       of ryw-T must return i (its own
 *                                       write) and one of ryw-0 a value no
 *                                       older than it last saw (thread 0's
 *                                       writes, as they happen): what
 *                                       leases, early answers and shared
 *                                       commits must never break
 *   khocheck garbage CLIENTURL PEERURL  sends random and truncated messages
 *                                       to a node's client port (REQ) and
 *                                       peer port (PUSH); the caller then
 *                                       checks the node still serves
 *
 * Endpoints come from $KHO_ENDPOINTS. Exit 0 on success, 1 on a check
 * failure, 2 on usage errors.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/protocol/reqrep0/req.h>

#include "client/kho.h"
#include "proto/api.pb-c.h"

static const char *eps;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int do_write(const char *reg, const char *prefix, long n,
                    const char *file)
{
    struct kho_client *c = NULL;
    if (kho_client_open(eps, 10000, &c) != KHO_OK) {
        return 2;
    }
    FILE *f = fopen(file, "a");
    if (f == NULL) {
        return 2;
    }
    long acked = 0, failed = 0;
    for (long i = 0; i < n; i++) {
        char k[128], v[160];
        snprintf(k, sizeof(k), "%s%ld", prefix, i);
        snprintf(v, sizeof(v), "val-%s", k);
        int rc = kho_put(c, reg, k, strlen(k), v, strlen(v), KHO_COND_NONE, 0,
                         NULL);
        if (rc == KHO_OK) {
            fprintf(f, "%s\n", k);
            fflush(f);
            acked++;
        } else {
            failed++;
        }
    }
    fclose(f);
    kho_client_close(c);
    printf("write: %ld acknowledged, %ld not\n", acked, failed);
    return 0;
}

static int do_verify(const char *reg, const char *file)
{
    struct kho_client *c = NULL;
    if (kho_client_open(eps, 10000, &c) != KHO_OK) {
        return 2;
    }
    FILE *f = fopen(file, "r");
    if (f == NULL) {
        return 2;
    }
    char k[128];
    long ok = 0, bad = 0;
    while (fgets(k, sizeof(k), f) != NULL) {
        k[strcspn(k, "\n")] = '\0';
        char want[160];
        snprintf(want, sizeof(want), "val-%s", k);
        void *v = NULL;
        size_t len = 0;
        int rc = kho_get(c, reg, k, strlen(k), 0, &v, &len, NULL);
        if (rc != KHO_OK || len != strlen(want) || memcmp(v, want, len) != 0) {
            fprintf(stderr, "verify: %s: %s\n", k, kho_strerror(rc));
            bad++;
        } else {
            ok++;
        }
        free(v);
    }
    fclose(f);
    kho_client_close(c);
    printf("verify: %ld ok, %ld lost or wrong\n", ok, bad);
    return bad == 0 ? 0 : 1;
}

struct bench {
    const char *reg;
    long n;
    int id;
    uint64_t *lat;
    long errors;
};

static void *bench_main(void *arg)
{
    struct bench *b = arg;
    struct kho_client *c = NULL;
    if (kho_client_open(eps, 10000, &c) != KHO_OK) {
        b->errors = b->n;
        return NULL;
    }
    char v[100];
    memset(v, 'x', sizeof(v));
    for (long i = 0; i < b->n; i++) {
        char k[64];
        snprintf(k, sizeof(k), "bench-%d-%ld", b->id, i);
        uint64_t t0 = now_us();
        if (kho_put(c, b->reg, k, strlen(k), v, sizeof(v), KHO_COND_NONE, 0,
                    NULL) != KHO_OK) {
            b->errors++;
        }
        b->lat[i] = now_us() - t0;
    }
    kho_client_close(c);
    return NULL;
}

struct ryw {
    const char *reg;
    long n;
    int id;
    long bad;
};

/* Reads key as a decimal number (-1: missing, -2: an error). */
static long get_number(struct kho_client *c, const char *reg, const char *k)
{
    void *v = NULL;
    size_t len = 0;
    int rc = kho_get(c, reg, k, strlen(k), 0, &v, &len, NULL);
    long x = rc == KHO_ENOTFOUND ? -1 : -2;
    if (rc == KHO_OK && len > 0 && len < 32) {
        char buf[32];
        memcpy(buf, v, len);
        buf[len] = '\0';
        x = atol(buf);
    }
    free(v);
    return x;
}

static void *ryw_main(void *arg)
{
    struct ryw *w = arg;
    struct kho_client *c = NULL;
    if (kho_client_open(eps, 10000, &c) != KHO_OK) {
        w->bad = w->n;
        return NULL;
    }
    char mine[32];
    snprintf(mine, sizeof(mine), "ryw-%d", w->id);
    long seen0 = -1;
    for (long i = 0; i < w->n; i++) {
        char v[32];
        int len = snprintf(v, sizeof(v), "%ld", i);
        int rc = kho_put(c, w->reg, mine, strlen(mine), v, (size_t)len,
                         KHO_COND_NONE, 0, NULL);
        long got = rc == KHO_OK ? get_number(c, w->reg, mine) : -2;
        long other = get_number(c, w->reg, "ryw-0");
        if (rc != KHO_OK || got != i || other < seen0) {
            fprintf(stderr,
                    "ryw: thread %d round %ld: put %s, read back %ld, "
                    "ryw-0 %ld after %ld\n",
                    w->id, i, kho_strerror(rc), got, other, seen0);
            w->bad++;
        }
        if (other > seen0) {
            seen0 = other;
        }
    }
    kho_client_close(c);
    return NULL;
}

static int do_ryw(const char *reg, long n, int threads)
{
    struct ryw w[64];
    pthread_t t[64];
    if (threads > 64) {
        threads = 64;
    }
    for (int i = 0; i < threads; i++) {
        w[i] = (struct ryw){.reg = reg, .n = n, .id = i};
        pthread_create(&t[i], NULL, ryw_main, &w[i]);
    }
    long bad = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        bad += w[i].bad;
    }
    printf("ryw: %d clients x %ld rounds, %ld stale or failed reads\n",
           threads, n, bad);
    return bad == 0 ? 0 : 1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int do_bench(const char *reg, long n, int threads)
{
    uint64_t *lat = calloc((size_t)n, sizeof(*lat));
    struct bench *b = calloc((size_t)threads, sizeof(*b));
    pthread_t *t = calloc((size_t)threads, sizeof(*t));
    long per = n / threads;
    uint64_t t0 = now_us();
    for (int i = 0; i < threads; i++) {
        b[i] = (struct bench){.reg = reg, .n = per, .id = i,
                              .lat = lat + (size_t)i * (size_t)per};
        pthread_create(&t[i], NULL, bench_main, &b[i]);
    }
    long errors = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        errors += b[i].errors;
    }
    double secs = (double)(now_us() - t0) / 1e6;
    long total = per * threads;
    qsort(lat, (size_t)total, sizeof(*lat), cmp_u64);
    printf("bench: %ld puts, %d clients, %.0f puts/s, p50 %.2f ms, p99 %.2f "
           "ms, errors %ld\n",
           total, threads, (double)total / secs,
           (double)lat[total / 2] / 1000.0,
           (double)lat[total * 99 / 100] / 1000.0, errors);
    free(lat);
    free(b);
    free(t);
    return errors == 0 ? 0 : 1;
}

/* Random bytes of random length; some frames start like a real peer frame
 * (magic, version) with a wrong cluster id or a truncated batch. */
/* --- retry: one request, sent many times ------------------------------- */

/* Sends the packed request to url and unpacks the answer (NULL: none). */
static Kho__Api__Response *raw_call(const char *url, const uint8_t *req,
                                    size_t len)
{
    nng_socket s;
    if (nng_req0_open(&s) != 0) {
        return NULL;
    }
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 3000);
    nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, 0);
    Kho__Api__Response *rs = NULL;
    nng_msg *m = NULL;
    if (nng_dial(s, url, NULL, 0) == 0 && nng_send(s, (void *)req, len, 0) == 0 &&
        nng_recvmsg(s, &m, 0) == 0) {
        rs = kho__api__response__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
        nng_msg_free(m);
    }
    nng_close(s);
    return rs;
}

/* Packs a put of key=value with the given session and seq. */
static size_t pack_put(const char *reg, const char *key, const char *value,
                       uint64_t session, uint64_t seq, uint8_t *buf)
{
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_PUT;
    q.session = session;
    q.seq = seq;
    q.registry = (char *)reg;
    q.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    q.value = (ProtobufCBinaryData){strlen(value), (uint8_t *)value};
    q.client_name = "khocheck-retry";
    return kho__api__request__pack(&q, buf);
}

/* Finds the node that takes writes for reg: follows NOT_LEADER hints from
 * the first endpoint, sending a harmless get. */
static int find_leader(const char *reg, char *url, size_t cap)
{
    snprintf(url, cap, "%.*s", (int)strcspn(eps, ","), eps);
    for (int i = 0; i < 50; i++) {
        Kho__Api__Request q = KHO__API__REQUEST__INIT;
        q.op = KHO__API__OP__OP_GET;
        q.registry = (char *)reg;
        q.key = (ProtobufCBinaryData){1, (uint8_t *)"x"};
        uint8_t buf[256];
        size_t len = kho__api__request__pack(&q, buf);
        Kho__Api__Response *rs = raw_call(url, buf, len);
        int err = rs != NULL ? (int)rs->err : KHO_EUNAVAILABLE;
        if (err == KHO_ENOTLEADER && rs->leader_hint[0] != '\0') {
            snprintf(url, cap, "%s", rs->leader_hint);
        }
        if (rs != NULL) {
            kho__api__response__free_unpacked(rs, NULL);
        }
        if (err == KHO_OK || err == KHO_ENOTFOUND) {
            return 0;
        }
        struct timespec ts = {0, 100000000L};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static int do_retry(const char *reg)
{
    char url[256];
    if (find_leader(reg, url, sizeof(url)) != 0) {
        fprintf(stderr, "retry: no leader for %s\n", reg);
        return 1;
    }
    uint64_t session = ((uint64_t)time(NULL) << 20) ^ (uint64_t)now_us();
    uint8_t req[512];
    char key[64];
    snprintf(key, sizeof(key), "retry-%llu", (unsigned long long)session);
    size_t len = pack_put(reg, key, "once", session, 1, req);
    uint64_t rev = 0;
    for (int i = 0; i < 5; i++) {
        Kho__Api__Response *rs = raw_call(url, req, len);
        if (rs == NULL || rs->err != KHO_OK || rs->version != 1 ||
            (rev != 0 && rs->revision != rev)) {
            fprintf(stderr, "retry: send %d: err %d version %llu revision "
                            "%llu (first revision %llu)\n",
                    i, rs != NULL ? (int)rs->err : -1,
                    rs != NULL ? (unsigned long long)rs->version : 0,
                    rs != NULL ? (unsigned long long)rs->revision : 0,
                    (unsigned long long)rev);
            return 1;
        }
        rev = rs->revision;
        kho__api__response__free_unpacked(rs, NULL);
    }
    len = pack_put(reg, key, "twice", session, 2, req);
    Kho__Api__Response *rs = raw_call(url, req, len);
    int ok = rs != NULL && rs->err == KHO_OK && rs->version == 2;
    if (rs != NULL) {
        kho__api__response__free_unpacked(rs, NULL);
    }
    len = pack_put(reg, key, "late", session, 1, req);
    rs = raw_call(url, req, len);
    ok = ok && rs != NULL && rs->err == KHO_ESTALE;
    if (rs != NULL) {
        kho__api__response__free_unpacked(rs, NULL);
    }
    struct kho_client *c = NULL;
    struct kho_record_meta meta = {0};
    void *v = NULL;
    size_t vlen = 0;
    ok = ok && kho_client_open(eps, 10000, &c) == KHO_OK &&
         kho_get(c, reg, key, strlen(key), 0, &v, &vlen, &meta) == KHO_OK &&
         meta.version == 2 && vlen == 5 && memcmp(v, "twice", 5) == 0;
    free(v);
    kho_client_close(c);
    if (!ok) {
        fprintf(stderr, "retry: the seq-2 put, the stale seq-1 resend or the "
                        "final read went wrong\n");
        return 1;
    }
    printf("retry: 5 sends of one request applied once (revision %llu); "
           "an older seq answered KHO_ESTALE\n",
           (unsigned long long)rev);
    return 0;
}

/* --- scan: many keys, read back in pages ----------------------------------- */

static int write_batch(struct kho_client *c, const char *reg,
                       const char *prefix, long from, long to)
{
    struct kho_op ops[100];
    char keys[100][64], vals[100][64];
    size_t n = 0;
    for (long i = from; i < to; i++, n++) {
        snprintf(keys[n], sizeof(keys[n]), "%s%06ld", prefix, i);
        snprintf(vals[n], sizeof(vals[n]), "v%ld", i);
        ops[n] = (struct kho_op){.key = keys[n], .key_len = strlen(keys[n]),
                                 .value = vals[n],
                                 .value_len = strlen(vals[n])};
    }
    uint64_t rev = 0;
    return kho_txn(c, reg, NULL, 0, ops, n, &rev, NULL);
}

static int check_page(const struct kho_record *r, size_t n, const char *prefix,
                      long *seen)
{
    for (size_t i = 0; i < n; i++, (*seen)++) {
        char k[64], v[64];
        snprintf(k, sizeof(k), "%s%06ld", prefix, *seen);
        snprintf(v, sizeof(v), "v%ld", *seen);
        if (r[i].key_len != strlen(k) || memcmp(r[i].key, k, r[i].key_len) ||
            r[i].value_len != strlen(v) ||
            memcmp(r[i].value, v, r[i].value_len) || r[i].version != 1 ||
            r[i].modify_revision == 0 || r[i].time_ms == 0 ||
            strcmp(r[i].writer, "khocheck-scan") != 0) {
            fprintf(stderr, "scan: record %ld is not %s=%s (or bad metadata)\n",
                    *seen, k, v);
            return 1;
        }
    }
    return 0;
}

static int do_scan(const char *reg, const char *prefix, long n)
{
    struct kho_client *c = NULL;
    if (kho_client_open(eps, 10000, &c) != KHO_OK ||
        kho_client_set_name(c, "khocheck-scan") != KHO_OK) {
        return 2;
    }
    for (long i = 0; i < n; i += 100) {
        int rc = write_batch(c, reg, prefix, i, i + 100 < n ? i + 100 : n);
        if (rc != KHO_OK) {
            fprintf(stderr, "scan: txn at %ld: %s\n", i, kho_strerror(rc));
            return 1;
        }
    }
    long seen = 0, pages = 0;
    void *token = NULL;
    size_t token_len = 0;
    do {
        struct kho_scan_opts o = {.prefix = prefix,
                                  .prefix_len = strlen(prefix),
                                  .limit = 37,
                                  .token = token,
                                  .token_len = token_len};
        struct kho_record *recs = NULL;
        size_t got = 0;
        void *next = NULL;
        size_t next_len = 0;
        int rc = kho_scan(c, reg, &o, &recs, &got, &next, &next_len);
        free(token);
        token = next;
        token_len = next_len;
        if (rc != KHO_OK || check_page(recs, got, prefix, &seen) != 0) {
            fprintf(stderr, "scan: page %ld: %s\n", pages, kho_strerror(rc));
            return 1;
        }
        kho_records_free(recs, got);
        pages++;
    } while (token != NULL);
    kho_client_close(c);
    if (seen != n) {
        fprintf(stderr, "scan: read %ld records, wrote %ld\n", seen, n);
        return 1;
    }
    printf("scan: %ld records written in transactions, read back in order in "
           "%ld pages\n", n, pages);
    return 0;
}

/* --- scanned: a whole registry against a list of keys ------------------- */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads FILE's keys, sorted. */
static char **read_keys(const char *file, size_t *n)
{
    FILE *f = fopen(file, "r");
    char **keys = NULL, k[128];
    size_t cap = 0;
    *n = 0;
    while (f != NULL && fgets(k, sizeof(k), f) != NULL) {
        k[strcspn(k, "\n")] = '\0';
        if (*n == cap) {
            cap = cap == 0 ? 1024 : cap * 2;
            keys = realloc(keys, cap * sizeof(*keys));
        }
        keys[(*n)++] = strdup(k);
    }
    if (f != NULL) {
        fclose(f);
    }
    qsort(keys, *n, sizeof(*keys), cmp_str);
    return keys;
}

static int do_scanned(const char *reg, const char *file)
{
    struct kho_client *c = NULL;
    if (kho_client_open(eps, 10000, &c) != KHO_OK) {
        return 2;
    }
    size_t n_keys = 0, at = 0;
    char **keys = read_keys(file, &n_keys);
    long seen = 0, pages = 0, bad = 0;
    char last[1100] = "";
    size_t last_len = 0;
    void *token = NULL;
    size_t token_len = 0;
    do {
        struct kho_scan_opts o = {
            .limit = 37, .token = token, .token_len = token_len};
        struct kho_record *recs = NULL;
        size_t got = 0;
        void *next = NULL;
        size_t next_len = 0;
        int rc = kho_scan(c, reg, &o, &recs, &got, &next, &next_len);
        free(token);
        token = next;
        token_len = next_len;
        if (rc != KHO_OK) {
            fprintf(stderr, "scanned: page %ld: %s\n", pages,
                    kho_strerror(rc));
            return 1;
        }
        for (size_t i = 0; i < got; i++) {
            const struct kho_record *r = &recs[i];
            size_t m = r->key_len < last_len ? r->key_len : last_len;
            int order = memcmp(r->key, last, m);
            if (seen > 0 && (order < 0 || (order == 0 && r->key_len <= last_len))) {
                fprintf(stderr, "scanned: key %.*s after %.*s\n",
                        (int)r->key_len, (const char *)r->key, (int)last_len,
                        last);
                bad++;
            }
            last_len = r->key_len < sizeof(last) ? r->key_len : sizeof(last);
            memcpy(last, r->key, last_len);
            seen++;
            /* Keys of FILE, in the same (byte) order, must all appear. */
            while (at < n_keys && (strlen(keys[at]) != r->key_len ||
                                   memcmp(keys[at], r->key, r->key_len) != 0)) {
                size_t kl = strlen(keys[at]);
                size_t mm = kl < r->key_len ? kl : r->key_len;
                int cmp = memcmp(keys[at], r->key, mm);
                if (cmp > 0 || (cmp == 0 && kl > r->key_len)) {
                    break; /* a key not in FILE: fine */
                }
                fprintf(stderr, "scanned: %s is missing\n", keys[at]);
                bad++;
                at++;
            }
            if (at < n_keys && strlen(keys[at]) == r->key_len &&
                memcmp(keys[at], r->key, r->key_len) == 0) {
                char want[160];
                snprintf(want, sizeof(want), "val-%s", keys[at]);
                if (r->value_len != strlen(want) ||
                    memcmp(r->value, want, r->value_len) != 0) {
                    fprintf(stderr, "scanned: %s has a wrong value\n",
                            keys[at]);
                    bad++;
                }
                at++;
            }
        }
        kho_records_free(recs, got);
        pages++;
    } while (token != NULL);
    for (; at < n_keys; at++) {
        fprintf(stderr, "scanned: %s is missing\n", keys[at]);
        bad++;
    }
    for (size_t i = 0; i < n_keys; i++) {
        free(keys[i]);
    }
    free(keys);
    kho_client_close(c);
    printf("scanned: %ld records in %ld pages, in key order; %zu expected "
           "keys, %ld problems\n",
           seen, pages, n_keys, bad);
    return bad == 0 ? 0 : 1;
}

/* --- fill: until the space quota answers ------------------------------- */

static int do_fill(const char *reg)
{
    struct kho_client *c = NULL;
    if (kho_client_open(eps, 10000, &c) != KHO_OK) {
        return 2;
    }
    static char val[64 * 1024];
    memset(val, 'f', sizeof(val));
    long n = 0;
    int rc = KHO_OK;
    for (; n < 100000; n++) {
        char k[32];
        snprintf(k, sizeof(k), "fill-%ld", n);
        rc = kho_put(c, reg, k, strlen(k), val, sizeof(val), KHO_COND_NONE, 0,
                     NULL);
        if (rc != KHO_OK) {
            break;
        }
    }
    if (rc != KHO_ENOSPC) {
        fprintf(stderr, "fill: after %ld puts: %s, want KHO_ENOSPC\n", n,
                kho_strerror(rc));
        return 1;
    }
    printf("fill: KHO_ENOSPC after %ld puts of 64 KiB (%s)\n", n,
           kho_client_errmsg(c));
    void *v = NULL;
    size_t vlen = 0;
    if (kho_get(c, reg, "fill-0", 6, 0, &v, &vlen, NULL) != KHO_OK ||
        vlen != sizeof(val)) {
        fprintf(stderr, "fill: a read failed on a full store\n");
        return 1;
    }
    free(v);
    for (long i = 0; i < n; i++) {
        char k[32];
        snprintf(k, sizeof(k), "fill-%ld", i);
        rc = kho_del(c, reg, k, strlen(k), KHO_COND_NONE, 0);
        if (rc != KHO_OK) {
            fprintf(stderr, "fill: delete %s on a full store: %s (%s)\n", k,
                    kho_strerror(rc), kho_client_errmsg(c));
            return 1;
        }
    }
    printf("fill: all %ld records deleted on the full store\n", n);
    kho_client_close(c);
    return 0;
}

/* --- load: bulk data for measurements ------------------------------------- */

#define LOAD_VALUE_BYTES (64u << 10)
#define LOAD_OPS_PER_TXN 16u

static int do_load(const char *reg, long mb)
{
    struct kho_client *c = NULL;
    if (kho_client_open(eps, 30000, &c) != KHO_OK) {
        return 2;
    }
    static uint8_t val[LOAD_VALUE_BYTES];
    for (size_t i = 0; i < sizeof(val); i++) {
        val[i] = (uint8_t)(i * 131u + 7u);
    }
    long values = mb * (long)((1u << 20) / LOAD_VALUE_BYTES);
    uint64_t t0 = now_us();
    for (long i = 0; i < values; i += LOAD_OPS_PER_TXN) {
        struct kho_op ops[LOAD_OPS_PER_TXN];
        char keys[LOAD_OPS_PER_TXN][32];
        size_t n = 0;
        for (long k = i; k < values && n < LOAD_OPS_PER_TXN; k++, n++) {
            snprintf(keys[n], sizeof(keys[n]), "load-%08ld", k);
            ops[n] = (struct kho_op){.key = keys[n],
                                     .key_len = strlen(keys[n]),
                                     .value = val,
                                     .value_len = sizeof(val)};
        }
        int rc = kho_txn(c, reg, NULL, 0, ops, n, NULL, NULL);
        if (rc != KHO_OK) {
            fprintf(stderr, "load: txn at %ld: %s (%s)\n", i, kho_strerror(rc),
                    kho_client_errmsg(c));
            return 1;
        }
    }
    double s = (double)(now_us() - t0) / 1e6;
    printf("load: %ld MB in %.1f s (%.1f MB/s)\n", mb, s, (double)mb / s);
    kho_client_close(c);
    return 0;
}

/* --- conf: a group's members, from its leader ------------------------------ */

static int cmp_replica(const void *a, const void *b)
{
    const Kho__Api__ReplicaInfo *x = *(Kho__Api__ReplicaInfo *const *)a;
    const Kho__Api__ReplicaInfo *y = *(Kho__Api__ReplicaInfo *const *)b;
    return x->node < y->node ? -1 : x->node > y->node;
}

static int print_conf(const Kho__Api__GroupStatus *g)
{
    qsort(g->replicas, g->n_replicas, sizeof(g->replicas[0]), cmp_replica);
    for (size_t k = 0; k < g->n_replicas; k++) {
        printf("%s%llu:%s", k > 0 ? " " : "",
               (unsigned long long)g->replicas[k]->node, g->replicas[k]->role);
    }
    printf("\n");
    return 0;
}

static int do_conf(uint64_t group)
{
    uint8_t buf[256];
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_STATUS;
    size_t len = kho__api__request__pack(&q, buf);
    const char *p = eps;
    while (*p != '\0') {
        char url[256];
        size_t n = strcspn(p, ",");
        snprintf(url, sizeof(url), "%.*s", (int)n, p);
        p += n + (p[n] == ',');
        Kho__Api__Response *rs = raw_call(url, buf, len);
        for (size_t i = 0; rs != NULL && i < rs->n_groups; i++) {
            const Kho__Api__GroupStatus *g = rs->groups[i];
            if (g->group_id == group && strcmp(g->role, "leader") == 0) {
                int rc = print_conf(g);
                kho__api__response__free_unpacked(rs, NULL);
                return rc;
            }
        }
        if (rs != NULL) {
            kho__api__response__free_unpacked(rs, NULL);
        }
    }
    return 1;
}

static void fill_garbage(uint8_t *buf, size_t len, unsigned *seed, int kind)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)rand_r(seed);
    }
    if (kind == 1 && len >= 24) {
        const uint8_t hdr[8] = {0x4b, 0x4b, 0x48, 0x50, 1, 0, 0, 0};
        memcpy(buf, hdr, sizeof(hdr));
    }
}

static int do_garbage(const char *client_url, const char *peer_url)
{
    unsigned seed = 12345;
    printf("garbage: seed %u\n", seed);
    nng_socket req, push;
    if (nng_req0_open(&req) != 0 || nng_push0_open(&push) != 0 ||
        nng_dial(req, client_url, NULL, 0) != 0 ||
        nng_dial(push, peer_url, NULL, 0) != 0) {
        fprintf(stderr, "garbage: cannot connect\n");
        return 2;
    }
    nng_socket_set_ms(req, NNG_OPT_RECVTIMEO, 500);
    nng_socket_set_ms(push, NNG_OPT_SENDTIMEO, 500);
    static uint8_t buf[70000];
    long answered = 0;
    for (int i = 0; i < 300; i++) {
        size_t len = (size_t)rand_r(&seed) % (i % 10 == 0 ? sizeof(buf) : 64);
        fill_garbage(buf, len, &seed, i % 2);
        nng_send(push, buf, len, 0);
        if (nng_send(req, buf, len, 0) == 0) {
            nng_msg *m = NULL;
            if (nng_recvmsg(req, &m, 0) == 0) {
                answered++;
                nng_msg_free(m);
            }
        }
    }
    nng_close(req);
    nng_close(push);
    printf("garbage: 300 frames each way, %ld answered with an error\n",
           answered);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "garbage") == 0) {
        return do_garbage(argv[2], argv[3]);
    }
    eps = getenv("KHO_ENDPOINTS");
    if (eps == NULL || argc < 2) {
        fprintf(stderr, "usage: KHO_ENDPOINTS=... khocheck write|verify|bench "
                        "...\n");
        return 2;
    }
    if (strcmp(argv[1], "write") == 0 && argc == 6) {
        return do_write(argv[2], argv[3], atol(argv[4]), argv[5]);
    }
    if (strcmp(argv[1], "verify") == 0 && argc == 4) {
        return do_verify(argv[2], argv[3]);
    }
    if (strcmp(argv[1], "load") == 0 && argc == 4) {
        return do_load(argv[2], atol(argv[3]));
    }
    if (strcmp(argv[1], "conf") == 0 && argc == 3) {
        return do_conf(strtoull(argv[2], NULL, 10));
    }
    if (strcmp(argv[1], "retry") == 0 && argc == 3) {
        return do_retry(argv[2]);
    }
    if (strcmp(argv[1], "scan") == 0 && argc == 5) {
        return do_scan(argv[2], argv[3], atol(argv[4]));
    }
    if (strcmp(argv[1], "scanned") == 0 && argc == 4) {
        return do_scanned(argv[2], argv[3]);
    }
    if (strcmp(argv[1], "fill") == 0 && argc == 3) {
        return do_fill(argv[2]);
    }
    if (strcmp(argv[1], "ryw") == 0 && argc == 5) {
        int th = atoi(argv[4]);
        return do_ryw(argv[2], atol(argv[3]), th > 0 ? th : 1);
    }
    if (strcmp(argv[1], "bench") == 0 && argc == 5) {
        int th = atoi(argv[4]);
        return do_bench(argv[2], atol(argv[3]), th > 0 ? th : 1);
    }
    fprintf(stderr, "khocheck: bad arguments\n");
    return 2;
}

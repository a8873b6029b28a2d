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
    if (strcmp(argv[1], "bench") == 0 && argc == 5) {
        int th = atoi(argv[4]);
        return do_bench(argv[2], atol(argv[3]), th > 0 ? th : 1);
    }
    fprintf(stderr, "khocheck: bad arguments\n");
    return 2;
}

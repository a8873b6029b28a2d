/*
 * libkho.c - see kho.h.
 *
 * One NNG REQ socket per endpoint, opened lazily and dialed in the
 * background (NNG reconnects by itself). A call builds one Request, then
 * tries endpoints until one answers for good: NOT_LEADER moves to the hinted
 * leader (or the next endpoint when there is no hint), an unreachable node
 * or a per-try timeout moves to the next endpoint, "unavailable" and "busy"
 * back off and retry. Every try of a write carries the same session and
 * seq, so a write that did reach the leader before a timeout is not applied
 * twice.
 */
#include "kho.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>
#include <time.h>

#include "proto/api.pb-c.h"

#define CLIENT_URL_BYTES 256u
#define CLIENT_TRY_MS 800u
#define CLIENT_BACKOFF_MS 30u
#define CLIENT_TIMEOUT_DEFAULT_MS 5000u
#define CLIENT_RESPONSE_BYTES_MAX (KHO_VALUE_BYTES_MAX + (64u << 10))

struct kho_client {
    pthread_mutex_t mu;
    char urls[KHO_ENDPOINTS_MAX][CLIENT_URL_BYTES];
    nng_socket socks[KHO_ENDPOINTS_MAX];
    bool open[KHO_ENDPOINTS_MAX];
    size_t n;
    size_t cur; /* the endpoint believed to lead */
    uint64_t session;
    uint64_t seq;
    uint32_t timeout_ms;
    char errmsg[256];
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void sleep_ms(uint32_t ms)
{
    struct timespec ts = {.tv_sec = ms / 1000u,
                          .tv_nsec = (long)(ms % 1000u) * 1000000L};
    nanosleep(&ts, NULL);
}

int kho_client_open(const char *endpoints, uint32_t timeout_ms,
                    struct kho_client **out)
{
    if (endpoints == NULL || out == NULL) {
        return KHO_EINVAL;
    }
    struct kho_client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return KHO_ENOMEM;
    }
    const char *p = endpoints;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        if (len > 0) {
            if (c->n >= KHO_ENDPOINTS_MAX || len >= CLIENT_URL_BYTES) {
                free(c);
                return KHO_EINVAL;
            }
            memcpy(c->urls[c->n], p, len);
            c->urls[c->n][len] = '\0';
            c->n++;
        }
        p += len;
        if (*p == ',') {
            p++;
        }
    }
    if (c->n == 0) {
        free(c);
        return KHO_EINVAL;
    }
    if (getrandom(&c->session, sizeof(c->session), 0) !=
            (ssize_t)sizeof(c->session) ||
        c->session == 0) {
        c->session = now_ms() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)c;
    }
    c->timeout_ms = timeout_ms != 0 ? timeout_ms : CLIENT_TIMEOUT_DEFAULT_MS;
    pthread_mutex_init(&c->mu, NULL);
    *out = c;
    return KHO_OK;
}

void kho_client_close(struct kho_client *c)
{
    if (c == NULL) {
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        if (c->open[i]) {
            nng_close(c->socks[i]);
        }
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

size_t kho_client_endpoints(const struct kho_client *c)
{
    return c->n;
}

const char *kho_client_errmsg(struct kho_client *c)
{
    return c->errmsg;
}

static int sock_of(struct kho_client *c, size_t i, nng_socket *out)
{
    if (c->open[i]) {
        *out = c->socks[i];
        return KHO_OK;
    }
    nng_socket s;
    nng_dialer d;
    int rv = nng_req0_open(&s);
    if (rv != 0) {
        return KHO_ENOMEM;
    }
    /* Resends are left to us (same seq); NNG's own would double traffic. */
    nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    rv = nng_dialer_create(&d, s, c->urls[i]);
    if (rv == 0) {
        rv = nng_dialer_set_size(d, NNG_OPT_RECVMAXSZ,
                                 CLIENT_RESPONSE_BYTES_MAX);
    }
    if (rv == 0) {
        nng_dialer_set_ms(d, NNG_OPT_RECONNMINT, 20);
        nng_dialer_set_ms(d, NNG_OPT_RECONNMAXT, 500);
        rv = nng_dialer_start(d, NNG_FLAG_NONBLOCK);
    }
    if (rv != 0) {
        nng_close(s);
        snprintf(c->errmsg, sizeof(c->errmsg), "%s: %s", c->urls[i],
                 nng_strerror(rv));
        return rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP ? KHO_EINVAL
                                                         : KHO_EIO;
    }
    c->socks[i] = s;
    c->open[i] = true;
    *out = s;
    return KHO_OK;
}

/* One exchange with endpoint i. KHO_OK with *rs set, or a transport error:
 * KHO_ETIMEOUT (no answer in time), KHO_ECORRUPT (undecodable answer). */
static int exchange(struct kho_client *c, size_t i, const uint8_t *req,
                    size_t len, uint32_t wait_ms, Kho__Api__Response **rs)
{
    nng_socket s;
    int rc = sock_of(c, i, &s);
    if (rc != KHO_OK) {
        return rc;
    }
    nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, (nng_duration)wait_ms);
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, (nng_duration)wait_ms);
    int rv = nng_send(s, (void *)req, len, 0);
    if (rv != 0) {
        return KHO_ETIMEOUT;
    }
    nng_msg *m = NULL;
    rv = nng_recvmsg(s, &m, 0);
    if (rv != 0) {
        return KHO_ETIMEOUT;
    }
    *rs = kho__api__response__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
    nng_msg_free(m);
    return *rs != NULL ? KHO_OK : KHO_ECORRUPT;
}

static size_t endpoint_of(const struct kho_client *c, const char *url)
{
    for (size_t i = 0; url != NULL && url[0] != '\0' && i < c->n; i++) {
        if (strcmp(c->urls[i], url) == 0) {
            return i;
        }
    }
    return c->n;
}

/* Sends q until a final answer or the deadline. Returns the response's err
 * (with *rs set, freed by the caller) or KHO_ETIMEOUT. */
static int call(struct kho_client *c, const Kho__Api__Request *q,
                Kho__Api__Response **out)
{
    size_t len = kho__api__request__get_packed_size(q);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        return KHO_ENOMEM;
    }
    kho__api__request__pack(q, buf);
    uint64_t deadline = now_ms() + c->timeout_ms;
    int last = KHO_ETIMEOUT;
    c->errmsg[0] = '\0';
    for (;;) {
        uint64_t now = now_ms();
        if (now >= deadline) {
            break;
        }
        uint64_t left = deadline - now;
        uint32_t wait = left < CLIENT_TRY_MS ? (uint32_t)left : CLIENT_TRY_MS;
        Kho__Api__Response *rs = NULL;
        int rc = exchange(c, c->cur, buf, len, wait, &rs);
        if (rc == KHO_EINVAL) {
            last = rc;
            break;
        }
        if (rc != KHO_OK) {
            c->cur = (c->cur + 1) % c->n; /* unreachable: try another */
            continue;
        }
        int err = (int)rs->err;
        if (err == KHO_ENOTLEADER) {
            size_t next = endpoint_of(c, rs->leader_hint);
            bool moved = next < c->n && next != c->cur;
            c->cur = next < c->n ? next : (c->cur + 1) % c->n;
            kho__api__response__free_unpacked(rs, NULL);
            if (!moved) {
                sleep_ms(CLIENT_BACKOFF_MS); /* an election is running */
            }
            continue;
        }
        if (err == KHO_EUNAVAILABLE || err == KHO_EBUSY ||
            err == KHO_ETIMEOUT) {
            kho__api__response__free_unpacked(rs, NULL);
            if (err == KHO_EUNAVAILABLE) {
                c->cur = (c->cur + 1) % c->n;
            }
            sleep_ms(CLIENT_BACKOFF_MS);
            continue;
        }
        if (rs->message != NULL && err != KHO_OK) {
            snprintf(c->errmsg, sizeof(c->errmsg), "%s", rs->message);
        }
        free(buf);
        *out = rs;
        return err;
    }
    free(buf);
    if (last == KHO_ETIMEOUT) {
        snprintf(c->errmsg, sizeof(c->errmsg),
                 "no answer within %u ms: the outcome is unknown",
                 c->timeout_ms);
    }
    return last;
}

static int check_key(const void *key, size_t key_len)
{
    if (key == NULL || key_len == 0) {
        return KHO_EINVAL;
    }
    return key_len > KHO_KEY_BYTES_MAX ? KHO_ETOOLARGE : KHO_OK;
}

static int mutate(struct kho_client *c, Kho__Api__Request *q,
                  struct kho_record_meta *meta)
{
    pthread_mutex_lock(&c->mu);
    q->session = c->session;
    q->seq = ++c->seq;
    Kho__Api__Response *rs = NULL;
    int err = call(c, q, &rs);
    if (rs != NULL) {
        if (err == KHO_OK && meta != NULL) {
            meta->version = rs->version;
            meta->revision = rs->revision;
        }
        kho__api__response__free_unpacked(rs, NULL);
    }
    pthread_mutex_unlock(&c->mu);
    return err;
}

int kho_put(struct kho_client *c, const char *registry, const void *key,
            size_t key_len, const void *value, size_t value_len,
            enum kho_cond cond, uint64_t expected_version,
            struct kho_record_meta *meta)
{
    int rc = check_key(key, key_len);
    if (rc != KHO_OK) {
        return rc;
    }
    if (value_len > KHO_VALUE_BYTES_MAX) {
        return KHO_ETOOLARGE;
    }
    if ((unsigned)cond > KHO_COND_IF_VERSION || registry == NULL ||
        (value == NULL && value_len > 0)) {
        return KHO_EINVAL;
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_PUT;
    q.registry = (char *)registry;
    q.key.data = (uint8_t *)key;
    q.key.len = key_len;
    q.value.data = (uint8_t *)value;
    q.value.len = value_len;
    q.cond = (Kho__Api__Cond)cond;
    q.expected_version = expected_version;
    return mutate(c, &q, meta);
}

int kho_del(struct kho_client *c, const char *registry, const void *key,
            size_t key_len, enum kho_cond cond, uint64_t expected_version)
{
    int rc = check_key(key, key_len);
    if (rc != KHO_OK) {
        return rc;
    }
    if ((unsigned)cond > KHO_COND_IF_VERSION || registry == NULL) {
        return KHO_EINVAL;
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_DELETE;
    q.registry = (char *)registry;
    q.key.data = (uint8_t *)key;
    q.key.len = key_len;
    q.cond = (Kho__Api__Cond)cond;
    q.expected_version = expected_version;
    return mutate(c, &q, NULL);
}

int kho_get(struct kho_client *c, const char *registry, const void *key,
            size_t key_len, int serializable, void **value, size_t *value_len,
            struct kho_record_meta *meta)
{
    int rc = check_key(key, key_len);
    if (rc != KHO_OK) {
        return rc;
    }
    if (registry == NULL || value == NULL || value_len == NULL) {
        return KHO_EINVAL;
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_GET;
    q.registry = (char *)registry;
    q.key.data = (uint8_t *)key;
    q.key.len = key_len;
    q.serializable = serializable != 0;
    pthread_mutex_lock(&c->mu);
    Kho__Api__Response *rs = NULL;
    int err = call(c, &q, &rs);
    if (err == KHO_OK) {
        *value = malloc(rs->value.len > 0 ? rs->value.len : 1);
        if (*value == NULL) {
            err = KHO_ENOMEM;
        } else {
            if (rs->value.len > 0) {
                memcpy(*value, rs->value.data, rs->value.len);
            }
            *value_len = rs->value.len;
            if (meta != NULL) {
                meta->version = rs->version;
                meta->revision = rs->revision;
            }
        }
    }
    if (rs != NULL) {
        kho__api__response__free_unpacked(rs, NULL);
    }
    pthread_mutex_unlock(&c->mu);
    return err;
}

int kho_node_status(struct kho_client *c, size_t i,
                    struct kho_node_status *out)
{
    if (i >= c->n || out == NULL) {
        return KHO_EINVAL;
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_STATUS;
    uint8_t buf[64];
    size_t len = kho__api__request__pack(&q, buf);
    pthread_mutex_lock(&c->mu);
    Kho__Api__Response *rs = NULL;
    int rc = exchange(c, i, buf, len, c->timeout_ms < 2000 ? c->timeout_ms
                                                           : 2000, &rs);
    if (rc == KHO_OK) {
        memset(out, 0, sizeof(*out));
        out->node_id = rs->node_id;
        snprintf(out->name, sizeof(out->name), "%s",
                 rs->node_name != NULL ? rs->node_name : "");
        for (size_t k = 0; k < rs->n_groups && k < 64; k++) {
            const Kho__Api__GroupStatus *g = rs->groups[k];
            struct kho_group_status *o = &out->groups[k];
            o->group_id = g->group_id;
            snprintf(o->registry, sizeof(o->registry), "%s",
                     g->registry != NULL ? g->registry : "");
            snprintf(o->role, sizeof(o->role), "%s",
                     g->role != NULL ? g->role : "");
            o->term = g->term;
            o->leader = g->leader;
            o->commit = g->commit;
            o->applied = g->applied;
            o->last_index = g->last_index;
            out->n_groups = k + 1;
        }
        kho__api__response__free_unpacked(rs, NULL);
    } else if (rc == KHO_ETIMEOUT) {
        rc = KHO_EUNAVAILABLE;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

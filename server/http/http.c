/*
 * http.c - see http.h.
 *
 * Lifetime. NNG calls a handler on its own threads and frees the handlers
 * (and with them their data) only when the server is finally released,
 * which may be after http_close() returned. So struct http is reference
 * counted - one reference for http_close(), one per registered handler,
 * dropped by the handler's destructor - and a handler touches the node
 * only between enter() and leave(): http_close() marks the server closing
 * and waits until no handler is inside, after which none enters again.
 */
#include "http.h"

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "internal.h"

#define CT_TEXT "text/plain; charset=utf-8"
#define CT_PROMETHEUS "text/plain; version=0.0.4; charset=utf-8"

struct http {
    struct http_sources src;
    nng_http_server *server;
    bool started;
    atomic_int refs;
    pthread_mutex_t mu; /* guards the two fields below */
    pthread_cond_t cv;
    bool closing;
    unsigned inside; /* handlers between enter() and leave() */
};

static void http_unref(void *arg)
{
    struct http *h = arg;
    if (atomic_fetch_sub(&h->refs, 1) != 1) {
        return;
    }
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h);
}

/* Answers with `body` (copied). On failure the connection is closed. */
static void reply(nng_aio *aio, uint16_t status, const char *ctype,
                  const char *body, size_t len)
{
    nng_http_res *res = NULL;
    int rv = nng_http_res_alloc(&res);
    if (rv == 0) {
        rv = nng_http_res_set_status(res, status);
    }
    if (rv == 0) {
        rv = nng_http_res_set_header(res, "Content-Type", ctype);
    }
    if (rv == 0) {
        rv = nng_http_res_set_header(res, "Cache-Control", "no-store");
    }
    if (rv == 0) {
        rv = nng_http_res_copy_data(res, body, len);
    }
    if (rv != 0) {
        if (res != NULL) {
            nng_http_res_free(res);
        }
        nng_aio_finish(aio, rv);
        return;
    }
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

static void reply_text(nng_aio *aio, uint16_t status, const char *text)
{
    reply(aio, status, CT_TEXT, text, strlen(text));
}

/* The server of this handler call, with the node safe to read until
 * leave(); NULL (after answering 503) when it is closing. */
static struct http *enter(nng_aio *aio)
{
    nng_http_handler *hd = nng_aio_get_input(aio, 1);
    struct http *h = nng_http_handler_get_data(hd);
    pthread_mutex_lock(&h->mu);
    bool closing = h->closing;
    h->inside += !closing;
    pthread_mutex_unlock(&h->mu);
    if (closing) {
        reply_text(aio, NNG_HTTP_STATUS_SERVICE_UNAVAILABLE, "stopping\n");
        return NULL;
    }
    return h;
}

static void leave(struct http *h)
{
    pthread_mutex_lock(&h->mu);
    h->inside--;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

/* Answers b, or 500 when building it failed. */
static void reply_buf(nng_aio *aio, uint16_t status, const char *ctype,
                      struct hbuf *b, const char *what)
{
    if (b->err != KHO_OK) {
        LOGE("http: %s: answer not built: %s (limit %u bytes)", what,
             kho_strerror(b->err), HTTP_METRICS_BYTES_MAX);
        reply_text(aio, NNG_HTTP_STATUS_INTERNAL_SERVER_ERROR,
                   "answer too large or out of memory\n");
        return;
    }
    reply(aio, status, ctype, b->p != NULL ? b->p : "", b->len);
}

static void health_cb(nng_aio *aio)
{
    struct http *h = enter(aio);
    if (h == NULL) {
        return;
    }
    reply_text(aio, NNG_HTTP_STATUS_OK, "ok\n");
    leave(h);
}

static void ready_cb(nng_aio *aio)
{
    struct http *h = enter(aio);
    if (h == NULL) {
        return;
    }
    struct node_group_status *st = malloc(NODE_GROUPS_MAX * sizeof(*st));
    if (st == NULL) {
        leave(h);
        reply_text(aio, NNG_HTTP_STATUS_INTERNAL_SERVER_ERROR,
                   "out of memory\n");
        return;
    }
    size_t n = node_status(h->src.node, st, NODE_GROUPS_MAX);
    uint64_t self = node_id(h->src.node);
    leave(h);
    struct hbuf b;
    hbuf_init(&b, HTTP_METRICS_BYTES_MAX);
    bool ok = http_ready_check(st, n, self, &b);
    free(st);
    if (ok) {
        hbuf_printf(&b, "ready\n");
    }
    reply_buf(aio,
              ok ? NNG_HTTP_STATUS_OK : NNG_HTTP_STATUS_SERVICE_UNAVAILABLE,
              CT_TEXT, &b, "/ready");
    hbuf_free(&b);
}

static void metrics_cb(nng_aio *aio)
{
    struct http *h = enter(aio);
    if (h == NULL) {
        return;
    }
    struct hbuf b;
    hbuf_init(&b, HTTP_METRICS_BYTES_MAX);
    http_metrics_render(&h->src, &b);
    leave(h);
    reply_buf(aio, NNG_HTTP_STATUS_OK, CT_PROMETHEUS, &b, "/metrics");
    hbuf_free(&b);
}

static int add_handler(struct http *h, const char *path, void (*cb)(nng_aio *))
{
    nng_http_handler *hd = NULL;
    int rv = nng_http_handler_alloc(&hd, path, cb);
    if (rv != 0) {
        return rv;
    }
    /* From here the handler holds a reference, dropped by http_unref when
     * NNG frees it. */
    atomic_fetch_add(&h->refs, 1);
    rv = nng_http_handler_set_data(hd, h, http_unref);
    if (rv != 0) {
        atomic_fetch_sub(&h->refs, 1);
        nng_http_handler_free(hd);
        return rv;
    }
    rv = nng_http_handler_set_method(hd, "GET");
    if (rv == 0) {
        rv = nng_http_server_add_handler(h->server, hd);
    }
    if (rv != 0) {
        nng_http_handler_free(hd);
    }
    return rv;
}

static int nng_to_kho(int rv)
{
    switch (rv) {
    case NNG_EADDRINUSE:
        return KHO_EBUSY;
    case NNG_EADDRINVAL:
    case NNG_EINVAL:
    case NNG_ENOTSUP:
        return KHO_EINVAL;
    case NNG_ENOMEM:
        return KHO_ENOMEM;
    default:
        return KHO_EIO;
    }
}

/* Holds and starts the server of url with the three handlers. */
static int serve(struct http *h, const char *url)
{
    nng_url *u = NULL;
    int rv = nng_url_parse(&u, url);
    if (rv == 0 && strcmp(u->u_scheme, "http") != 0) {
        rv = NNG_EINVAL;
    }
    if (rv == 0) {
        rv = nng_http_server_hold(&h->server, u);
    }
    if (u != NULL) {
        nng_url_free(u);
    }
    if (rv == 0) {
        rv = add_handler(h, "/health", health_cb);
    }
    if (rv == 0) {
        rv = add_handler(h, "/ready", ready_cb);
    }
    if (rv == 0) {
        rv = add_handler(h, "/metrics", metrics_cb);
    }
    if (rv == 0) {
        rv = nng_http_server_start(h->server);
        h->started = rv == 0;
    }
    return rv;
}

int http_open(const struct http_config *c, struct http **out, char *err,
              size_t err_len)
{
    struct http *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        snprintf(err, err_len, "out of memory");
        return KHO_ENOMEM;
    }
    h->src = (struct http_sources){.node = c->node,
                                   .net = c->net,
                                   .st = c->st,
                                   .quota_bytes = c->quota_bytes};
    atomic_init(&h->refs, 1);
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    int rv = serve(h, c->url);
    if (rv != 0) {
        snprintf(err, err_len, "http listener on %s: %s", c->url,
                 nng_strerror(rv));
        http_close(h);
        return nng_to_kho(rv);
    }
    *out = h;
    return KHO_OK;
}

void http_close(struct http *h)
{
    if (h == NULL) {
        return;
    }
    pthread_mutex_lock(&h->mu);
    h->closing = true;
    while (h->inside > 0) {
        pthread_cond_wait(&h->cv, &h->mu);
    }
    pthread_mutex_unlock(&h->mu);
    if (h->started) {
        nng_http_server_stop(h->server);
    }
    if (h->server != NULL) {
        nng_http_server_release(h->server);
    }
    http_unref(h);
}

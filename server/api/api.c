/*
 * api.c - see api.h.
 */
#include "api.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/log.h"
#include "proto/api.pb-c.h"

enum wstate { W_RECV = 1, W_NODE = 2, W_SEND = 3 };

struct worker {
    struct api *api;
    nng_aio *aio;
    nng_ctx ctx;
    enum wstate state;
    struct node_req req;
    uint8_t *prop;          /* the proposal's envelope */
    Kho__Api__Request *rq;  /* the request being served */
};

struct api {
    nng_socket sock;
    nng_listener listener;
    struct node *node;
    struct store *st;
    api_peer_url_fn peer_url;
    void *peer_ctx;
    atomic_bool closing;
    struct worker workers[API_WORKERS];
    size_t n_workers;
};

static void worker_cb(void *arg);

/* --- Replies ------------------------------------------------------------ */

static void reply(struct worker *w, Kho__Api__Response *rs)
{
    size_t len = kho__api__response__get_packed_size(rs);
    nng_msg *m = NULL;
    if (nng_msg_alloc(&m, len) != 0) {
        w->state = W_RECV;
        nng_ctx_recv(w->ctx, w->aio);
        return;
    }
    kho__api__response__pack(rs, nng_msg_body(m));
    nng_aio_set_msg(w->aio, m);
    w->state = W_SEND;
    nng_ctx_send(w->ctx, w->aio);
}

static void reply_err(struct worker *w, int err, const char *msg,
                      uint64_t leader)
{
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    rs.err = (uint32_t)err;
    rs.message = (char *)(msg != NULL ? msg : kho_strerror(err));
    const char *hint = leader != 0 ? w->api->peer_url(w->api->peer_ctx, leader)
                                   : "";
    rs.leader_hint = (char *)hint;
    reply(w, &rs);
}

/* Reads a record from the local store and replies with it. */
static void reply_get(struct worker *w, uint64_t gid)
{
    struct api *a = w->api;
    uint8_t small[4096];
    uint8_t *buf = small;
    size_t cap = sizeof(small), len = 0;
    int rc = KHO_OK;
    /* The value may grow between two reads: a few tries at most. */
    for (int i = 0; i < 4; i++) {
        rc = store_kv_get(a->st, gid, w->rq->key.data, w->rq->key.len, buf,
                          cap, &len, NULL);
        if (rc != KHO_ETOOLARGE || len <= cap) {
            break;
        }
        if (buf != small) {
            free(buf);
        }
        buf = malloc(len);
        cap = len;
        if (buf == NULL) {
            reply_err(w, KHO_ENOMEM, NULL, 0);
            return;
        }
    }
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    const uint8_t *val = NULL;
    size_t vlen = 0;
    if (rc == KHO_OK &&
        store_rec_meta_decode(buf, len, &rs.version, &rs.revision, &val,
                              &vlen) != KHO_OK) {
        rc = KHO_ECORRUPT;
    }
    if (rc != KHO_OK) {
        reply_err(w, rc, rc == KHO_ENOTFOUND ? "key not found"
                                             : store_errmsg(a->st), 0);
    } else {
        rs.err = KHO_OK;
        rs.message = "";
        rs.leader_hint = "";
        rs.value.data = (uint8_t *)val;
        rs.value.len = vlen;
        reply(w, &rs);
    }
    if (buf != small) {
        free(buf);
    }
}

static void reply_status(struct worker *w)
{
    struct node_group_status st[NODE_GROUPS_MAX];
    size_t n = node_status(w->api->node, st, NODE_GROUPS_MAX);
    Kho__Api__GroupStatus gs[NODE_GROUPS_MAX];
    Kho__Api__GroupStatus *gp[NODE_GROUPS_MAX];
    for (size_t i = 0; i < n; i++) {
        kho__api__group_status__init(&gs[i]);
        gs[i].group_id = st[i].group_id;
        gs[i].registry = st[i].registry;
        gs[i].role = (char *)raft_role_name(st[i].role);
        gs[i].term = st[i].term;
        gs[i].leader = st[i].leader;
        gs[i].commit = st[i].commit;
        gs[i].applied = st[i].applied;
        gs[i].last_index = st[i].last_index;
        gp[i] = &gs[i];
    }
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    rs.message = "";
    rs.leader_hint = "";
    rs.node_id = node_id(w->api->node);
    rs.node_name = (char *)node_name(w->api->node);
    rs.n_groups = n;
    rs.groups = gp;
    reply(w, &rs);
}

/* --- Requests ----------------------------------------------------------- */

static void node_done_cb(struct node_req *r)
{
    struct worker *w = r->ctx;
    /* Back to an NNG thread: the raft thread must not do the reply work. */
    nng_sleep_aio(0, w->aio);
}

static void submit(struct worker *w, uint32_t kind, uint64_t gid,
                   const uint8_t *data, size_t len)
{
    w->req = (struct node_req){
        .kind = kind,
        .group_id = gid,
        .data = data,
        .len = len,
        .done_cb = node_done_cb,
        .ctx = w,
    };
    w->state = W_NODE;
    int rc = node_submit(w->api->node, &w->req);
    if (rc != KHO_OK) {
        reply_err(w, rc, NULL, 0);
    }
}

static int validate(const Kho__Api__Request *q, const char **why)
{
    if (q->key.len == 0) {
        *why = "empty key";
        return KHO_EINVAL;
    }
    if (q->key.len > STORE_KEY_BYTES_MAX) {
        *why = "key longer than 1 KiB";
        return KHO_ETOOLARGE;
    }
    if (q->value.len > STORE_VALUE_BYTES_MAX) {
        *why = "value larger than 1 MiB";
        return KHO_ETOOLARGE;
    }
    if (q->cond > KHO__API__COND__COND_IF_VERSION) {
        *why = "unknown precondition";
        return KHO_EINVAL;
    }
    return KHO_OK;
}

static void propose(struct worker *w, uint64_t gid)
{
    const Kho__Api__Request *q = w->rq;
    struct store_envelope e = {
        .session = q->session,
        .seq = q->seq,
        .cond = (uint32_t)q->cond,
        .expected_version = q->expected_version,
        .cmd = {.op = q->op == KHO__API__OP__OP_PUT ? STORE_CMD_PUT
                                                    : STORE_CMD_DELETE,
                .key = q->key.data,
                .key_len = q->key.len,
                .value = q->op == KHO__API__OP__OP_PUT ? q->value.data : NULL,
                .value_len = q->op == KHO__API__OP__OP_PUT ? q->value.len : 0},
    };
    size_t cap = STORE_ENVELOPE_HEADER_BYTES + STORE_CMD_HEADER_BYTES +
                 q->key.len + q->value.len, len = 0;
    w->prop = malloc(cap);
    if (w->prop == NULL) {
        reply_err(w, KHO_ENOMEM, NULL, 0);
        return;
    }
    int rc = store_envelope_encode(&e, w->prop, cap, &len);
    if (rc != KHO_OK) {
        reply_err(w, rc, "malformed command", 0);
        return;
    }
    submit(w, NODE_REQ_PROPOSE, gid, w->prop, len);
}

static void serve(struct worker *w, nng_msg *m)
{
    w->rq = kho__api__request__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
    nng_msg_free(m);
    if (w->rq == NULL) {
        reply_err(w, KHO_EINVAL, "malformed request", 0);
        return;
    }
    const Kho__Api__Request *q = w->rq;
    if (q->op == KHO__API__OP__OP_STATUS) {
        reply_status(w);
        return;
    }
    if (q->op != KHO__API__OP__OP_PUT && q->op != KHO__API__OP__OP_GET &&
        q->op != KHO__API__OP__OP_DELETE) {
        reply_err(w, KHO_EINVAL, "unknown operation", 0);
        return;
    }
    const char *why = NULL;
    int rc = validate(q, &why);
    if (rc != KHO_OK) {
        reply_err(w, rc, why, 0);
        return;
    }
    uint64_t gid = node_registry_group(w->api->node, q->registry);
    if (gid == 0) {
        reply_err(w, KHO_ENOTFOUND, "unknown registry", 0);
        return;
    }
    if (q->op == KHO__API__OP__OP_GET && q->serializable) {
        reply_get(w, gid);
    } else if (q->op == KHO__API__OP__OP_GET) {
        submit(w, NODE_REQ_READ, gid, NULL, 0);
    } else {
        propose(w, gid);
    }
}

static void node_answered(struct worker *w)
{
    struct node_req *r = &w->req;
    if (r->err != KHO_OK) {
        reply_err(w, r->err, NULL, r->leader);
        return;
    }
    if (r->kind == NODE_REQ_READ) {
        reply_get(w, r->group_id);
        return;
    }
    if (r->res.result != KHO_OK) {
        reply_err(w, r->res.result, NULL, 0);
        return;
    }
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    rs.message = "";
    rs.leader_hint = "";
    rs.version = r->res.version;
    rs.revision = r->res.revision;
    reply(w, &rs);
}

static void release(struct worker *w)
{
    if (w->rq != NULL) {
        kho__api__request__free_unpacked(w->rq, NULL);
        w->rq = NULL;
    }
    free(w->prop);
    w->prop = NULL;
}

static void worker_cb(void *arg)
{
    struct worker *w = arg;
    int rv = nng_aio_result(w->aio);
    if (atomic_load(&w->api->closing)) {
        if (w->state == W_SEND && rv != 0) {
            nng_msg_free(nng_aio_get_msg(w->aio));
        }
        release(w);
        return;
    }
    switch (w->state) {
    case W_RECV:
        if (rv != 0) {
            nng_ctx_recv(w->ctx, w->aio);
            return;
        }
        serve(w, nng_aio_get_msg(w->aio));
        break;
    case W_NODE:
        node_answered(w);
        break;
    case W_SEND:
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(w->aio));
        }
        release(w);
        w->state = W_RECV;
        nng_ctx_recv(w->ctx, w->aio);
        break;
    }
}

/* --- Lifecycle ---------------------------------------------------------- */

int api_open(const char *url, struct node *node, struct store *st,
             api_peer_url_fn peer_url, void *peer_ctx, struct api **out,
             char *err, size_t err_len)
{
    struct api *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        snprintf(err, err_len, "out of memory");
        return KHO_ENOMEM;
    }
    a->node = node;
    a->st = st;
    a->peer_url = peer_url;
    a->peer_ctx = peer_ctx;
    int rv = nng_rep0_open(&a->sock);
    if (rv == 0) {
        rv = nng_listener_create(&a->listener, a->sock, url);
    }
    if (rv == 0) {
        rv = nng_listener_set_size(a->listener, NNG_OPT_RECVMAXSZ,
                                   API_REQUEST_BYTES_MAX);
    }
    if (rv == 0) {
        rv = nng_listener_start(a->listener, 0);
    }
    for (size_t i = 0; rv == 0 && i < API_WORKERS; i++) {
        struct worker *w = &a->workers[i];
        w->api = a;
        rv = nng_aio_alloc(&w->aio, worker_cb, w);
        if (rv == 0) {
            rv = nng_ctx_open(&w->ctx, a->sock);
            if (rv != 0) {
                nng_aio_free(w->aio);
            }
        }
        if (rv == 0) {
            a->n_workers++;
        }
    }
    if (rv != 0) {
        snprintf(err, err_len, "client listener on %s: %s", url,
                 nng_strerror(rv));
        api_close(a);
        return rv == NNG_EADDRINUSE ? KHO_EBUSY
               : rv == NNG_EADDRINVAL || rv == NNG_EINVAL ||
                       rv == NNG_ENOTSUP
                   ? KHO_EINVAL
                   : KHO_EIO;
    }
    for (size_t i = 0; i < a->n_workers; i++) {
        a->workers[i].state = W_RECV;
        nng_ctx_recv(a->workers[i].ctx, a->workers[i].aio);
    }
    *out = a;
    return KHO_OK;
}

void api_close(struct api *a)
{
    if (a == NULL) {
        return;
    }
    atomic_store(&a->closing, true);
    nng_close(a->sock);
    for (size_t i = 0; i < a->n_workers; i++) {
        nng_aio_stop(a->workers[i].aio);
    }
    for (size_t i = 0; i < a->n_workers; i++) {
        release(&a->workers[i]);
        nng_ctx_close(a->workers[i].ctx);
        nng_aio_free(a->workers[i].aio);
    }
    free(a);
}

/*
 * test_libkho.c - proves, without a cluster, that libkho (client/libkho.c)
 * keeps its contract at both of its edges:
 *
 *   - bad arguments are refused before a byte is sent (KHO_EINVAL or
 *     KHO_ETOOLARGE, as kho.h lists them), and every output is reset;
 *   - against fake nodes (NNG REP sockets on inproc:// answering canned
 *     responses): records, pages, registries and status are decoded whole;
 *     NOT_LEADER hints are followed; a retried write carries the same
 *     session and seq, every request the client name, reads no seq;
 *   - answers that break the protocol (a record without a key or outside
 *     the range asked for, too many records, a field over its limit, a
 *     compare index out of range, another registry) are KHO_ECORRUPT;
 *   - a node that never answers gives KHO_ETIMEOUT (outcome unknown).
 *
 * No test depends on timing: the one timeout test only checks the code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <pthread.h>

#include "client/kho.h"
#include "proto/api.pb-c.h"

#define FAKE_LOG_MAX 64u
#define FAKE_RECS_MAX 16u

/* --- A fake node -------------------------------------------------------- */

struct fake;
/* Fills rs for q; returns false to leave q unanswered. */
typedef bool (*fake_answer_fn)(struct fake *f, const Kho__Api__Request *q,
                               Kho__Api__Response *rs);

struct fake {
    nng_socket sock;
    pthread_t thread;
    char url[64];
    fake_answer_fn answer;
    int mode; /* a test's variant of the answer */
    size_t n_reqs;
    Kho__Api__Op ops[FAKE_LOG_MAX];
    uint64_t sessions[FAKE_LOG_MAX], seqs[FAKE_LOG_MAX];
    char names[FAKE_LOG_MAX][KHO_NAME_BYTES_MAX + 1];
    uint32_t limits[FAKE_LOG_MAX];
    size_t n_compares, n_ops; /* of the last request */
};

static void fake_log(struct fake *f, const Kho__Api__Request *q)
{
    if (f->n_reqs < FAKE_LOG_MAX) {
        f->ops[f->n_reqs] = q->op;
        f->sessions[f->n_reqs] = q->session;
        f->seqs[f->n_reqs] = q->seq;
        f->limits[f->n_reqs] = q->limit;
        snprintf(f->names[f->n_reqs], sizeof(f->names[0]), "%s",
                 q->client_name);
    }
    f->n_reqs++;
    f->n_compares = q->n_compares;
    f->n_ops = q->n_ops;
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    for (;;) {
        nng_msg *m = NULL;
        if (nng_recvmsg(f->sock, &m, 0) != 0) {
            return NULL; /* closed */
        }
        Kho__Api__Request *q =
            kho__api__request__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
        nng_msg_free(m);
        if (q == NULL) {
            continue;
        }
        fake_log(f, q);
        Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
        if (f->answer(f, q, &rs)) {
            size_t len = kho__api__response__get_packed_size(&rs);
            uint8_t *buf = malloc(len + 1);
            assert_non_null(buf);
            kho__api__response__pack(&rs, buf);
            nng_send(f->sock, buf, len, 0);
            free(buf);
        }
        kho__api__request__free_unpacked(q, NULL);
    }
}

static void fake_start(struct fake *f, fake_answer_fn answer)
{
    static int next;
    memset(f, 0, sizeof(*f));
    snprintf(f->url, sizeof(f->url), "inproc://kho-test-%d", next++);
    f->answer = answer;
    assert_int_equal(nng_rep0_open(&f->sock), 0);
    assert_int_equal(nng_listen(f->sock, f->url, NULL, 0), 0);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
    nng_close(f->sock);
    pthread_join(f->thread, NULL);
}

static struct kho_client *open_on(const char *urls, uint32_t timeout_ms)
{
    struct kho_client *c = NULL;
    assert_int_equal(kho_client_open(urls, timeout_ms, &c), KHO_OK);
    return c;
}

static ProtobufCBinaryData bin(const char *s)
{
    ProtobufCBinaryData b = {.len = strlen(s), .data = (uint8_t *)s};
    return b;
}

/* Answers everything with KHO_OK and nothing else. */
static bool answer_ok(struct fake *f, const Kho__Api__Request *q,
                      Kho__Api__Response *rs)
{
    return true;
}

/* --- Arguments
 * ---------------------------------------------------------------- */

static void test_open_args(void **state)
{
    struct kho_client *c = (struct kho_client *)1;
    char many[KHO_ENDPOINTS_MAX * 16 + 32] = "";
    for (unsigned i = 0; i <= KHO_ENDPOINTS_MAX; i++) {
        strcat(many, "inproc://x,");
    }
    char long_url[KHO_URL_BYTES_MAX + 16];
    memset(long_url, 'u', sizeof(long_url) - 1);
    long_url[sizeof(long_url) - 1] = '\0';
    assert_int_equal(kho_client_open(NULL, 0, &c), KHO_EINVAL);
    assert_int_equal(kho_client_open("inproc://x", 0, NULL), KHO_EINVAL);
    assert_int_equal(kho_client_open(",,", 0, &c), KHO_EINVAL);
    assert_null(c);
    assert_int_equal(kho_client_open(many, 0, &c), KHO_EINVAL);
    assert_int_equal(kho_client_open(long_url, 0, &c), KHO_EINVAL);
    c = open_on("inproc://a,,inproc://b", 0);
    assert_int_equal(kho_client_endpoints(c), 2);
    assert_string_equal(kho_client_endpoint(c, 1), "inproc://b");
    assert_null(kho_client_endpoint(c, 2));

    char name[KHO_NAME_BYTES_MAX + 2];
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    assert_int_equal(kho_client_set_name(c, name), KHO_EINVAL);
    name[KHO_NAME_BYTES_MAX] = '\0';
    assert_int_equal(kho_client_set_name(c, name), KHO_OK);
    assert_int_equal(kho_client_set_name(c, ""), KHO_EINVAL);
    assert_int_equal(kho_client_set_name(c, NULL), KHO_EINVAL);
    assert_int_equal(kho_client_set_name(c, "bad\xff"), KHO_EINVAL);
    assert_int_equal(kho_client_set_name(c, "\xed\xa0\x80"), KHO_EINVAL);
    assert_int_equal(kho_client_set_name(c, "Nguy\xe1\xbb\x85n"), KHO_OK);
    kho_client_close(c);
    kho_client_close(NULL);
    kho_records_free(NULL, 3);
    kho_record_clear(NULL);
}

/* Every call below must fail before sending: the fake sees nothing. */
static void test_record_args(void **state)
{
    struct fake f;
    fake_start(&f, answer_ok);
    struct kho_client *c = open_on(f.url, 1000);
    static char big[KHO_VALUE_BYTES_MAX + 2];
    char reg65[KHO_NAME_BYTES_MAX + 2];
    memset(reg65, 'r', sizeof(reg65) - 1);
    reg65[sizeof(reg65) - 1] = '\0';

    assert_int_equal(kho_put(c, "r", "", 0, "v", 1, 0, 0, NULL), KHO_EINVAL);
    assert_int_equal(kho_put(c, "r", NULL, 1, "v", 1, 0, 0, NULL), KHO_EINVAL);
    assert_int_equal(
        kho_put(c, "r", big, KHO_KEY_BYTES_MAX + 1, "v", 1, 0, 0, NULL),
        KHO_ETOOLARGE);
    assert_int_equal(
        kho_put(c, "r", "k", 1, big, KHO_VALUE_BYTES_MAX + 1, 0, 0, NULL),
        KHO_ETOOLARGE);
    assert_int_equal(kho_put(c, "r", "k", 1, NULL, 1, 0, 0, NULL), KHO_EINVAL);
    assert_int_equal(kho_put(c, "r", "k", 1, "v", 1, (enum kho_cond)4, 0, NULL),
                     KHO_EINVAL);
    assert_int_equal(kho_put(c, NULL, "k", 1, "v", 1, 0, 0, NULL), KHO_EINVAL);
    assert_int_equal(kho_put(c, "", "k", 1, "v", 1, 0, 0, NULL), KHO_EINVAL);
    assert_int_equal(kho_put(c, reg65, "k", 1, "v", 1, 0, 0, NULL), KHO_EINVAL);
    assert_int_equal(kho_del(c, "r", "k", 1, KHO_COND_IF_ABSENT, 0),
                     KHO_EINVAL);
    assert_int_equal(kho_del(c, "r", big, KHO_KEY_BYTES_MAX + 1, 0, 0),
                     KHO_ETOOLARGE);

    void *v = (void *)1;
    size_t vlen = 7;
    assert_int_equal(kho_get(c, "r", "k", 1, 0, &v, NULL, NULL), KHO_EINVAL);
    assert_null(v);
    assert_int_equal(kho_get(c, "r", "", 0, 0, &v, &vlen, NULL), KHO_EINVAL);
    assert_int_equal(vlen, 0);
    struct kho_record rec;
    assert_int_equal(kho_get_record(c, "r", "k", 1, 0, NULL), KHO_EINVAL);
    assert_int_equal(kho_get_record(c, reg65, "k", 1, 0, &rec), KHO_EINVAL);
    assert_null(rec.key);

    assert_int_equal(f.n_reqs, 0);
    kho_client_close(c);
    fake_stop(&f);
}

static void test_txn_args(void **state)
{
    struct fake f;
    fake_start(&f, answer_ok);
    struct kho_client *c = open_on(f.url, 1000);
    static struct kho_compare cmps[KHO_TXN_CMPS_MAX + 1];
    static struct kho_op ops[KHO_TXN_OPS_MAX + 1];
    static char keys[KHO_TXN_OPS_MAX + 1][8];
    static char big[KHO_VALUE_BYTES_MAX];
    for (size_t i = 0; i <= KHO_TXN_OPS_MAX; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%zu", i);
        ops[i] = (struct kho_op){.key = keys[i], .key_len = strlen(keys[i])};
    }
    for (size_t i = 0; i <= KHO_TXN_CMPS_MAX; i++) {
        cmps[i] = (struct kho_compare){.key = "k", .key_len = 1};
    }
    uint64_t rev = 9;
    uint32_t failed = 9;
    assert_int_equal(kho_txn(c, "r", NULL, 0, NULL, 0, &rev, &failed),
                     KHO_EINVAL);
    assert_int_equal(rev, 0);
    assert_int_equal(failed, 0);
    assert_int_equal(
        kho_txn(c, "r", cmps, KHO_TXN_CMPS_MAX + 1, ops, 1, NULL, NULL),
        KHO_ETOOLARGE);
    assert_int_equal(
        kho_txn(c, "r", cmps, 1, ops, KHO_TXN_OPS_MAX + 1, NULL, NULL),
        KHO_ETOOLARGE);
    assert_int_equal(kho_txn(c, "r", NULL, 1, ops, 1, NULL, NULL), KHO_EINVAL);
    assert_int_equal(kho_txn(c, "", cmps, 1, ops, 1, NULL, NULL), KHO_EINVAL);

    struct kho_compare bad_cmp = {
        .key = "k", .key_len = 1, .target = (enum kho_cmp_target)4};
    assert_int_equal(kho_txn(c, "r", &bad_cmp, 1, NULL, 0, NULL, NULL),
                     KHO_EINVAL);
    bad_cmp.target = KHO_CMP_VALUE;
    bad_cmp.op = (enum kho_cmp_op)4;
    assert_int_equal(kho_txn(c, "r", &bad_cmp, 1, NULL, 0, NULL, NULL),
                     KHO_EINVAL);
    bad_cmp.op = KHO_CMP_EQUAL;
    bad_cmp.key_len = 0;
    assert_int_equal(kho_txn(c, "r", &bad_cmp, 1, NULL, 0, NULL, NULL),
                     KHO_EINVAL);

    struct kho_op two[2] = {{.key = "a", .key_len = 1},
                            {.is_delete = 1, .key = "a", .key_len = 1}};
    assert_int_equal(kho_txn(c, "r", NULL, 0, two, 2, NULL, NULL), KHO_EINVAL);
    struct kho_op del_val = {
        .is_delete = 1, .key = "a", .key_len = 1, .value = "v", .value_len = 1};
    assert_int_equal(kho_txn(c, "r", NULL, 0, &del_val, 1, NULL, NULL),
                     KHO_EINVAL);
    /* Five maximal values: each fits, together over KHO_TXN_BYTES_MAX. */
    for (size_t i = 0; i < 5; i++) {
        ops[i].value = big;
        ops[i].value_len = sizeof(big);
    }
    assert_int_equal(kho_txn(c, "r", NULL, 0, ops, 5, NULL, NULL),
                     KHO_ETOOLARGE);
    assert_non_null(strstr(kho_client_errmsg(c), "KHO_TXN_BYTES_MAX"));
    ops[0].value_len = KHO_VALUE_BYTES_MAX + 1;
    assert_int_equal(kho_txn(c, "r", NULL, 0, ops, 1, NULL, NULL),
                     KHO_ETOOLARGE);

    assert_int_equal(f.n_reqs, 0);
    kho_client_close(c);
    fake_stop(&f);
}

static void test_scan_args(void **state)
{
    struct fake f;
    fake_start(&f, answer_ok);
    struct kho_client *c = open_on(f.url, 1000);
    static char big[KHO_TOKEN_BYTES_MAX + 1];
    struct kho_record *recs = (struct kho_record *)1;
    size_t n = 5, tlen = 5;
    void *tok = (void *)1;
    struct kho_scan_opts o = {
        .prefix = "p", .prefix_len = 1, .start = "a", .start_len = 1};
    assert_int_equal(kho_scan(c, "r", &o, &recs, &n, &tok, &tlen), KHO_EINVAL);
    assert_null(recs);
    assert_null(tok);
    assert_int_equal(n, 0);
    assert_int_equal(tlen, 0);
    memset(&o, 0, sizeof(o));
    o.limit = KHO_SCAN_LIMIT_MAX + 1;
    assert_int_equal(kho_scan(c, "r", &o, &recs, &n, &tok, &tlen), KHO_EINVAL);
    o.limit = 0;
    o.start = big;
    o.start_len = KHO_KEY_BYTES_MAX + 1;
    assert_int_equal(kho_scan(c, "r", &o, &recs, &n, &tok, &tlen),
                     KHO_ETOOLARGE);
    o.start_len = 0;
    o.token = big;
    o.token_len = KHO_TOKEN_BYTES_MAX + 1;
    assert_int_equal(kho_scan(c, "r", &o, &recs, &n, &tok, &tlen), KHO_EINVAL);
    o.token_len = 0;
    o.end = NULL;
    o.end_len = 3;
    assert_int_equal(kho_scan(c, "r", &o, &recs, &n, &tok, &tlen), KHO_EINVAL);
    o.end_len = 0;
    assert_int_equal(kho_scan(c, "r", NULL, &recs, &n, &tok, &tlen),
                     KHO_EINVAL);
    assert_int_equal(kho_scan(c, "r", &o, &recs, &n, NULL, &tlen), KHO_EINVAL);

    assert_int_equal(
        kho_history(c, "r", "", 0, 0, NULL, 0, &recs, &n, &tok, &tlen),
        KHO_EINVAL);
    assert_int_equal(kho_history(c, "r", "k", 1, KHO_SCAN_LIMIT_MAX + 1, NULL,
                                 0, &recs, &n, &tok, &tlen),
                     KHO_EINVAL);
    assert_int_equal(kho_history(c, "r", "k", 1, 0, big,
                                 KHO_TOKEN_BYTES_MAX + 1, &recs, &n, &tok,
                                 &tlen),
                     KHO_EINVAL);

    struct kho_registry_info info, *list = (void *)1;
    assert_int_equal(kho_registry_create(c, "", 0, &info), KHO_EINVAL);
    assert_int_equal(kho_registry_create(c, "r", KHO_REPLICAS_MAX + 1, &info),
                     KHO_EINVAL);
    assert_int_equal(kho_registry_describe(c, "r", NULL), KHO_EINVAL);
    assert_int_equal(kho_registry_list(c, &list, NULL), KHO_EINVAL);
    assert_null(list);
    static struct kho_node_status st;
    assert_int_equal(kho_node_status(c, 1, &st), KHO_EINVAL);

    assert_int_equal(f.n_reqs, 0);
    kho_client_close(c);
    fake_stop(&f);
}

/* --- Records
 * -------------------------------------------------------------------- */

static Kho__Api__Record a_record(const char *key, const char *value)
{
    Kho__Api__Record r = KHO__API__RECORD__INIT;
    r.key = bin(key);
    r.value = bin(value);
    r.version = 3;
    r.create_revision = 4;
    r.modify_revision = 7;
    r.writer = "alice@host";
    r.time_ms = 1700000000123u;
    return r;
}

/* mode 0: a full record; 1: only the old value/version/revision fields;
 * 2: a record of another key; 3: a writer over its limit. */
static bool answer_get(struct fake *f, const Kho__Api__Request *q,
                       Kho__Api__Response *rs)
{
    static Kho__Api__Record r;
    static char writer[KHO_NAME_BYTES_MAX + 2];
    r = a_record(f->mode == 2 ? "other" : "k", "hello");
    if (f->mode == 1) {
        rs->value = bin("hello");
        rs->version = 3;
        rs->revision = 7;
        return true;
    }
    if (f->mode == 3) {
        memset(writer, 'w', sizeof(writer) - 1);
        r.writer = writer;
    }
    rs->record = &r;
    return true;
}

static void test_get(void **state)
{
    struct fake f;
    fake_start(&f, answer_get);
    struct kho_client *c = open_on(f.url, 1000);
    assert_int_equal(kho_client_set_name(c, "agency-a"), KHO_OK);
    struct kho_record r;
    assert_int_equal(kho_get_record(c, "r", "k", 1, 1, &r), KHO_OK);
    assert_int_equal(r.key_len, 1);
    assert_memory_equal(r.key, "k", 1);
    assert_int_equal(r.value_len, 5);
    assert_memory_equal(r.value, "hello", 5);
    assert_int_equal(r.version, 3);
    assert_int_equal(r.create_revision, 4);
    assert_int_equal(r.modify_revision, 7);
    assert_int_equal(r.time_ms, 1700000000123u);
    assert_string_equal(r.writer, "alice@host");
    assert_int_equal(r.deleted, 0);
    kho_record_clear(&r);
    assert_int_equal(f.ops[0], KHO__API__OP__OP_GET);
    assert_int_equal(f.seqs[0], 0); /* reads take no seq */
    assert_string_equal(f.names[0], "agency-a");

    void *v = NULL;
    size_t vlen = 0;
    struct kho_record_meta meta;
    f.mode = 1;
    assert_int_equal(kho_get(c, "r", "k", 1, 0, &v, &vlen, &meta), KHO_OK);
    assert_int_equal(vlen, 5);
    assert_memory_equal(v, "hello", 5);
    assert_int_equal(meta.version, 3);
    assert_int_equal(meta.revision, 7);
    free(v);
    assert_int_equal(kho_get_record(c, "r", "k", 1, 0, &r), KHO_OK);
    assert_memory_equal(r.key, "k", 1); /* the key asked for */
    kho_record_clear(&r);

    f.mode = 2;
    assert_int_equal(kho_get_record(c, "r", "k", 1, 0, &r), KHO_ECORRUPT);
    assert_null(r.key);
    assert_int_equal(kho_get(c, "r", "k", 1, 0, &v, &vlen, NULL), KHO_ECORRUPT);
    assert_null(v);
    f.mode = 3;
    assert_int_equal(kho_get_record(c, "r", "k", 1, 0, &r), KHO_ECORRUPT);
    kho_client_close(c);
    fake_stop(&f);
}

/* --- Writes: sessions, retries, leader hints
 * ---------------------------------- */

/* The first try of every write is answered KHO_EBUSY, the retry KHO_OK. */
static bool answer_busy_once(struct fake *f, const Kho__Api__Request *q,
                             Kho__Api__Response *rs)
{
    if (f->n_reqs % 2 == 1) {
        rs->err = KHO_EBUSY;
        return true;
    }
    rs->version = 1;
    rs->revision = 40 + q->seq;
    return true;
}

static void test_write_retry_same_seq(void **state)
{
    struct fake f;
    fake_start(&f, answer_busy_once);
    struct kho_client *c = open_on(f.url, 5000);
    struct kho_record_meta meta;
    assert_int_equal(
        kho_put(c, "r", "k", 1, "v", 1, KHO_COND_IF_REVISION, 0, &meta),
        KHO_OK);
    assert_int_equal(f.n_reqs, 2);
    assert_int_equal(f.ops[0], KHO__API__OP__OP_PUT);
    assert_true(f.sessions[0] != 0);
    assert_int_equal(f.sessions[0], f.sessions[1]);
    assert_int_equal(f.seqs[0], 1);
    assert_int_equal(f.seqs[1], 1);
    assert_int_equal(meta.revision, 41);
    assert_true(f.names[0][0] != '\0'); /* user@host or $KHO_CLIENT_NAME */

    assert_int_equal(kho_del(c, "r", "k", 1, KHO_COND_IF_VERSION, 1), KHO_OK);
    assert_int_equal(f.seqs[2], 2);
    assert_int_equal(f.seqs[3], 2);
    assert_int_equal(f.sessions[3], f.sessions[0]);
    assert_int_equal(kho_registry_create(c, "reg", 3, NULL), KHO_OK);
    assert_int_equal(f.ops[4], KHO__API__OP__OP_REGISTRY_CREATE);
    assert_int_equal(f.seqs[5], 3);
    kho_client_close(c);
    fake_stop(&f);
}

static char hint_url[64];

static bool answer_not_leader(struct fake *f, const Kho__Api__Request *q,
                              Kho__Api__Response *rs)
{
    rs->err = KHO_ENOTLEADER;
    rs->leader_hint = hint_url;
    return true;
}

static void test_leader_hint(void **state)
{
    struct fake a, b;
    fake_start(&a, answer_not_leader);
    fake_start(&b, answer_get);
    snprintf(hint_url, sizeof(hint_url), "%s", b.url);
    char urls[160];
    snprintf(urls, sizeof(urls), "%s,%s", a.url, b.url);
    struct kho_client *c = open_on(urls, 5000);
    struct kho_record r;
    assert_int_equal(kho_get_record(c, "r", "k", 1, 0, &r), KHO_OK);
    kho_record_clear(&r);
    assert_int_equal(a.n_reqs, 1);
    assert_int_equal(b.n_reqs, 1);
    assert_int_equal(kho_get_record(c, "r", "k", 1, 0, &r), KHO_OK);
    kho_record_clear(&r);
    assert_int_equal(a.n_reqs, 1); /* straight to the leader now */
    assert_int_equal(b.n_reqs, 2);
    kho_client_close(c);

    /* Given only a, the client follows the hint to b all the same. */
    c = open_on(a.url, 5000);
    assert_int_equal(kho_get_record(c, "r", "k", 1, 0, &r), KHO_OK);
    kho_record_clear(&r);
    assert_int_equal(a.n_reqs, 2);
    assert_int_equal(b.n_reqs, 3);
    assert_int_equal(kho_client_endpoints(c), 1);
    kho_client_close(c);
    fake_stop(&a);
    fake_stop(&b);
}

static bool answer_never(struct fake *f, const Kho__Api__Request *q,
                         Kho__Api__Response *rs)
{
    return false;
}

static void test_timeout(void **state)
{
    struct fake f;
    fake_start(&f, answer_never);
    struct kho_client *c = open_on(f.url, 50);
    assert_int_equal(kho_put(c, "r", "k", 1, "v", 1, 0, 0, NULL), KHO_ETIMEOUT);
    assert_true(strstr(kho_client_errmsg(c), "no final answer") != NULL);
    kho_client_close(c);
    fake_stop(&f);
}

/* --- Transactions
 * ---------------------------------------------------------------- */

/* mode 0: OK at revision 77; 1: compare 2 failed; 2: compare 9 failed. */
static bool answer_txn(struct fake *f, const Kho__Api__Request *q,
                       Kho__Api__Response *rs)
{
    if (f->mode == 0) {
        rs->revision = 77;
        return true;
    }
    rs->err = KHO_ECONFLICT;
    rs->failed_compare = f->mode == 1 ? 2 : 9;
    return true;
}

static void test_txn(void **state)
{
    struct fake f;
    fake_start(&f, answer_txn);
    struct kho_client *c = open_on(f.url, 1000);
    struct kho_compare cmps[2] = {
        {.key = "a", .key_len = 1, .target = KHO_CMP_VERSION, .number = 0},
        {.key = "b",
         .key_len = 1,
         .target = KHO_CMP_VALUE,
         .op = KHO_CMP_GREATER,
         .value = "x",
         .value_len = 1},
    };
    struct kho_op ops[2] = {
        {.key = "a", .key_len = 1, .value = "1", .value_len = 1},
        {.is_delete = 1, .key = "b", .key_len = 1},
    };
    uint64_t rev = 0;
    uint32_t failed = 0;
    assert_int_equal(kho_txn(c, "r", cmps, 2, ops, 2, &rev, &failed), KHO_OK);
    assert_int_equal(rev, 77);
    assert_int_equal(f.ops[0], KHO__API__OP__OP_TXN);
    assert_int_equal(f.n_compares, 2);
    assert_int_equal(f.n_ops, 2);
    assert_int_equal(f.seqs[0], 1);
    f.mode = 1;
    assert_int_equal(kho_txn(c, "r", cmps, 2, ops, 2, &rev, &failed),
                     KHO_ECONFLICT);
    assert_int_equal(failed, 2);
    assert_int_equal(rev, 0);
    f.mode = 2;
    assert_int_equal(kho_txn(c, "r", cmps, 2, ops, 2, &rev, &failed),
                     KHO_ECORRUPT);
    assert_int_equal(failed, 0);
    kho_client_close(c);
    fake_stop(&f);
}

/* --- Scans and history
 * -------------------------------------------------------------- */

static const char *const scan_keys[] = {"a1", "a2", "b1", "b2", "b3"};

/* Pages of scan_keys (2 per page unless a limit is given), the token being
 * the last key. mode 1: a record without a key; 2: a key outside the
 * prefix; 3: more records than the limit; 4: a token over its limit. */
static bool answer_scan(struct fake *f, const Kho__Api__Request *q,
                        Kho__Api__Response *rs)
{
    static Kho__Api__Record recs[FAKE_RECS_MAX], *ptrs[FAKE_RECS_MAX];
    static char token[KHO_TOKEN_BYTES_MAX + 2];
    uint32_t limit = q->limit > 0 ? q->limit : 2;
    size_t n = 0;
    for (size_t i = 0; i < 5 && n < limit + (f->mode == 3); i++) {
        const char *k = scan_keys[i];
        size_t klen = strlen(k);
        if (q->token.len > 0 &&
            (klen < q->token.len || memcmp(k, q->token.data, klen) <= 0)) {
            continue;
        }
        if (f->mode != 2 && q->prefix.len > 0 &&
            memcmp(k, q->prefix.data, q->prefix.len) != 0) {
            continue;
        }
        recs[n] = a_record(k, "v");
        ptrs[n] = &recs[n];
        n++;
    }
    if (f->mode == 1 && n > 0) {
        recs[0].key.len = 0;
    }
    rs->n_records = n;
    rs->records = ptrs;
    bool more = n > 0 && strcmp((char *)recs[n - 1].key.data, "b3") != 0;
    if (more) {
        rs->token = recs[n - 1].key;
    }
    if (f->mode == 4) {
        memset(token, 't', sizeof(token) - 1);
        rs->token = bin(token);
    }
    return true;
}

static void test_scan_pages(void **state)
{
    struct fake f;
    fake_start(&f, answer_scan);
    struct kho_client *c = open_on(f.url, 1000);
    struct kho_scan_opts o = {0};
    char got[64] = "";
    void *tok = NULL;
    size_t tlen = 0;
    for (int page = 0; page < 10; page++) {
        struct kho_record *recs = NULL;
        size_t n = 0;
        void *next = NULL;
        o.token = tok;
        o.token_len = tlen;
        assert_int_equal(kho_scan(c, "r", &o, &recs, &n, &next, &tlen), KHO_OK);
        free(tok);
        tok = next;
        for (size_t i = 0; i < n; i++) {
            strncat(got, recs[i].key, recs[i].key_len);
            strcat(got, " ");
            assert_string_equal(recs[i].writer, "alice@host");
        }
        kho_records_free(recs, n);
        if (tok == NULL) {
            assert_int_equal(tlen, 0);
            break;
        }
    }
    assert_string_equal(got, "a1 a2 b1 b2 b3 ");
    assert_int_equal(f.n_reqs, 3);

    struct kho_record *recs = NULL;
    size_t n = 0;
    o = (struct kho_scan_opts){.prefix = "b", .prefix_len = 1, .limit = 5};
    assert_int_equal(kho_scan(c, "r", &o, &recs, &n, &tok, &tlen), KHO_OK);
    assert_int_equal(n, 3);
    assert_null(tok);
    assert_int_equal(f.limits[3], 5);
    kho_records_free(recs, n);

    /* mode 2 ignores the prefix "b" of o; the others answer o2. */
    struct kho_scan_opts o2 = {.limit = 2};
    for (int mode = 1; mode <= 4; mode++) {
        f.mode = mode;
        assert_int_equal(
            kho_scan(c, "r", mode == 2 ? &o : &o2, &recs, &n, &tok, &tlen),
            KHO_ECORRUPT);
        assert_null(recs);
        assert_null(tok);
    }
    f.mode = 0;
    o = (struct kho_scan_opts){
        .start = "a2", .start_len = 2, .end = "b2", .end_len = 2, .limit = 5};
    /* The fake ignores the range: a1 is outside [a2, b2). */
    assert_int_equal(kho_scan(c, "r", &o, &recs, &n, &tok, &tlen),
                     KHO_ECORRUPT);
    kho_client_close(c);
    fake_stop(&f);
}

/* Two versions of the key, the second a delete; mode 1: a record of
 * another key. */
static bool answer_history(struct fake *f, const Kho__Api__Request *q,
                           Kho__Api__Response *rs)
{
    static Kho__Api__Record recs[2], *ptrs[2];
    recs[0] = a_record("k", "v1");
    recs[1] = a_record(f->mode == 1 ? "x" : "k", "");
    recs[1].deleted = 1;
    ptrs[0] = &recs[0];
    ptrs[1] = &recs[1];
    rs->n_records = 2;
    rs->records = ptrs;
    return true;
}

static void test_history(void **state)
{
    struct fake f;
    fake_start(&f, answer_history);
    struct kho_client *c = open_on(f.url, 1000);
    struct kho_record *recs = NULL;
    size_t n = 0, tlen = 0;
    void *tok = NULL;
    assert_int_equal(
        kho_history(c, "r", "k", 1, 0, NULL, 0, &recs, &n, &tok, &tlen),
        KHO_OK);
    assert_int_equal(n, 2);
    assert_int_equal(recs[0].deleted, 0);
    assert_int_equal(recs[1].deleted, 1);
    assert_null(tok);
    kho_records_free(recs, n);
    assert_int_equal(f.ops[0], KHO__API__OP__OP_HISTORY);
    f.mode = 1;
    assert_int_equal(
        kho_history(c, "r", "k", 1, 0, NULL, 0, &recs, &n, &tok, &tlen),
        KHO_ECORRUPT);
    assert_null(recs);
    /* Two records, but one asked for. */
    f.mode = 0;
    assert_int_equal(
        kho_history(c, "r", "k", 1, 1, NULL, 0, &recs, &n, &tok, &tlen),
        KHO_ECORRUPT);
    kho_client_close(c);
    fake_stop(&f);
}

/* --- Registries and status
 * ------------------------------------------------------------ */

/* create: mode 0 describes the registry, 1 does not (libkho then asks
 * with describe), 2 answers KHO_EEXIST; describe: mode 3 describes
 * another registry; list: mode 4 has a registry of 8 replicas. */
static bool answer_registry(struct fake *f, const Kho__Api__Request *q,
                            Kho__Api__Response *rs)
{
    static uint64_t reps[KHO_REPLICAS_MAX + 1] = {1, 2, 3, 4, 5, 6, 7, 8};
    static Kho__Api__RegistryInfo infos[2], *ptrs[2];
    for (size_t i = 0; i < 2; i++) {
        Kho__Api__RegistryInfo r = KHO__API__REGISTRY_INFO__INIT;
        r.name = i == 0 ? q->registry : "second";
        r.group_id = 5 + i;
        r.n_replicas = f->mode == 4 ? 8 : 3;
        r.replicas = reps;
        r.created_ms = 1700000000000u;
        r.creator = "admin";
        infos[i] = r;
        ptrs[i] = &infos[i];
    }
    rs->registries = ptrs;
    switch (q->op) {
    case KHO__API__OP__OP_REGISTRY_CREATE:
        rs->err = f->mode == 2 ? KHO_EEXIST : KHO_OK;
        rs->n_registries = f->mode == 0 ? 1 : 0;
        return true;
    case KHO__API__OP__OP_REGISTRY_DESCRIBE:
        infos[0].name = f->mode == 3 ? "other" : q->registry;
        infos[0].leader = 2;
        infos[0].term = 9;
        rs->n_registries = 1;
        return true;
    case KHO__API__OP__OP_REGISTRY_LIST:
        infos[0].name = "first";
        rs->n_registries = 2;
        return true;
    default:
        rs->err = KHO_EINVAL;
        return true;
    }
}

static void test_registries(void **state)
{
    struct fake f;
    fake_start(&f, answer_registry);
    struct kho_client *c = open_on(f.url, 1000);
    struct kho_registry_info info;
    assert_int_equal(kho_registry_create(c, "citizens", 3, &info), KHO_OK);
    assert_string_equal(info.name, "citizens");
    assert_int_equal(info.group_id, 5);
    assert_int_equal(info.n_replicas, 3);
    assert_int_equal(info.replicas[2], 3);
    assert_string_equal(info.creator, "admin");
    assert_int_equal(info.leader, 0);
    assert_int_equal(f.n_reqs, 1);

    f.mode = 1;
    assert_int_equal(kho_registry_create(c, "land", 0, &info), KHO_OK);
    assert_int_equal(f.n_reqs, 3); /* create, then describe */
    assert_int_equal(f.ops[2], KHO__API__OP__OP_REGISTRY_DESCRIBE);
    assert_int_equal(info.term, 9);
    f.mode = 2;
    assert_int_equal(kho_registry_create(c, "land", 0, &info), KHO_EEXIST);

    f.mode = 0;
    assert_int_equal(kho_registry_describe(c, "land", &info), KHO_OK);
    assert_int_equal(info.leader, 2);
    f.mode = 3;
    assert_int_equal(kho_registry_describe(c, "land", &info), KHO_ECORRUPT);

    struct kho_registry_info *list = NULL;
    size_t n = 0;
    f.mode = 0;
    assert_int_equal(kho_registry_list(c, &list, &n), KHO_OK);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].name, "first");
    assert_string_equal(list[1].name, "second");
    free(list);
    f.mode = 4;
    assert_int_equal(kho_registry_list(c, &list, &n), KHO_ECORRUPT);
    assert_null(list);
    assert_int_equal(n, 0);
    kho_client_close(c);
    fake_stop(&f);
}

/* mode 1: a peer URL over its limit. */
static bool answer_status(struct fake *f, const Kho__Api__Request *q,
                          Kho__Api__Response *rs)
{
    static Kho__Api__GroupStatus g, *gp[1];
    static Kho__Api__NodeInfo nodes[2], *np[2];
    static char long_url[KHO_URL_BYTES_MAX + 1];
    Kho__Api__GroupStatus g0 = KHO__API__GROUP_STATUS__INIT;
    g0.group_id = 1;
    g0.registry = "demo";
    g0.role = "leader";
    g0.commit = 12;
    g = g0;
    gp[0] = &g;
    for (size_t i = 0; i < 2; i++) {
        Kho__Api__NodeInfo n = KHO__API__NODE_INFO__INIT;
        n.id = i + 1;
        n.name = i == 0 ? "hanoi" : "hue";
        n.client_url = i == 0 ? "tcp://10.0.0.1:7101" : "tcp://10.0.0.2:7101";
        n.peer_url = "tcp://10.0.0.1:7201";
        nodes[i] = n;
        np[i] = &nodes[i];
    }
    if (f->mode == 1) {
        memset(long_url, 'u', sizeof(long_url) - 1);
        nodes[1].peer_url = long_url;
    }
    rs->node_id = 1;
    rs->node_name = "hanoi";
    rs->n_groups = 1;
    rs->groups = gp;
    rs->n_nodes = 2;
    rs->nodes = np;
    return true;
}

static void test_status(void **state)
{
    struct fake f;
    fake_start(&f, answer_status);
    struct kho_client *c = open_on(f.url, 1000);
    static struct kho_node_status st;
    assert_int_equal(kho_node_status(c, 0, &st), KHO_OK);
    assert_int_equal(st.node_id, 1);
    assert_string_equal(st.name, "hanoi");
    assert_int_equal(st.n_groups, 1);
    assert_int_equal(st.n_groups_total, 1);
    assert_string_equal(st.groups[0].role, "leader");
    assert_int_equal(st.groups[0].commit, 12);
    assert_int_equal(st.n_nodes, 2);
    assert_string_equal(st.nodes[1].name, "hue");
    assert_string_equal(st.nodes[1].client_url, "tcp://10.0.0.2:7101");
    f.mode = 1;
    assert_int_equal(kho_node_status(c, 0, &st), KHO_ECORRUPT);
    kho_client_close(c);
    fake_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_args),
        cmocka_unit_test(test_record_args),
        cmocka_unit_test(test_txn_args),
        cmocka_unit_test(test_scan_args),
        cmocka_unit_test(test_get),
        cmocka_unit_test(test_write_retry_same_seq),
        cmocka_unit_test(test_leader_hint),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_txn),
        cmocka_unit_test(test_scan_pages),
        cmocka_unit_test(test_history),
        cmocka_unit_test(test_registries),
        cmocka_unit_test(test_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

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
 *   - a node that never answers gives KHO_ETIMEOUT (outcome unknown);
 *   - sharded registries, against three fake nodes that each host some of
 *     a registry's four shards and redirect the others: once the shard map
 *     is cached every request reaches its shard's leader directly, a
 *     NOT_LEADER hint moves the cached leader, an unreachable leader sends
 *     the request to another replica and the map is fetched again, a scan
 *     merges the four shards into one key order over pages with one token,
 *     a transaction across shards is refused before anything is sent, and
 *     against a node that does not know shard maps everything goes the old
 *     way with one map request per KHO_SHARD_MAP_RETRY_MS;
 *   - backups, against the same three nodes serving synthetic backup
 *     files: a node hosting every group gives the file as it is; when none
 *     does, kho_backup asks few nodes for exactly the groups each hosts
 *     (greedily), passes over a node that refuses its part, and merges the
 *     parts into one well-formed file (every group in order, payloads
 *     byte for byte, new header and END with their checksums); a part
 *     failing its frame checks or a group nobody takes fails the backup;
 *     no temporary file outlives the call.
 *
 * No test depends on timing: the timeouts only check codes, and the waits
 * (for an unreachable node, for KHO_SHARD_MAP_REFRESH_MS) are lower bounds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <fcntl.h>
#include <unistd.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/util/platform.h>
#include <pthread.h>

#include "client/kho.h"
#include "client/kho_shard.h"
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
    /* OP_SHARD_MAP goes to answer() too; else it is "unknown operation",
     * as from a server that predates sharding. Either way it is counted
     * in n_maps and not logged below. */
    bool serves_maps;
    size_t n_maps;
    size_t n_redirects; /* NOT_LEADER answers */
    size_t n_reqs;
    Kho__Api__Op ops[FAKE_LOG_MAX];
    uint64_t sessions[FAKE_LOG_MAX], seqs[FAKE_LOG_MAX];
    char names[FAKE_LOG_MAX][KHO_NAME_BYTES_MAX + 1];
    uint32_t limits[FAKE_LOG_MAX];
    uint32_t shards_asked[FAKE_LOG_MAX]; /* Request.shard */
    bool serializable[FAKE_LOG_MAX];
    size_t n_compares, n_ops; /* of the last request */
    /* Of the last request: registry create and shard move fields. */
    uint32_t req_shards, req_replicas;
    bool req_dry_run;
    char req_home[KHO_NAME_BYTES_MAX + 1], req_node[KHO_NAME_BYTES_MAX + 1];
    char req_target[KHO_NAME_BYTES_MAX + 1];
};

static void fake_log(struct fake *f, const Kho__Api__Request *q)
{
    if (f->n_reqs < FAKE_LOG_MAX) {
        f->ops[f->n_reqs] = q->op;
        f->sessions[f->n_reqs] = q->session;
        f->seqs[f->n_reqs] = q->seq;
        f->limits[f->n_reqs] = q->limit;
        f->shards_asked[f->n_reqs] = q->shard;
        f->serializable[f->n_reqs] = q->serializable;
        snprintf(f->names[f->n_reqs], sizeof(f->names[0]), "%s",
                 q->client_name);
    }
    f->n_reqs++;
    f->n_compares = q->n_compares;
    f->n_ops = q->n_ops;
    f->req_shards = q->shards;
    f->req_replicas = q->replicas;
    f->req_dry_run = q->dry_run;
    snprintf(f->req_home, sizeof(f->req_home), "%s", q->home);
    snprintf(f->req_node, sizeof(f->req_node), "%s", q->node_name);
    snprintf(f->req_target, sizeof(f->req_target), "%s", q->target_name);
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
        Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
        bool map = q->op == KHO__API__OP__OP_SHARD_MAP;
        if (map) {
            f->n_maps++;
        } else {
            fake_log(f, q);
        }
        bool answer = true;
        if (map && !f->serves_maps) {
            rs.err = KHO_EINVAL;
            rs.message = "unknown operation 30";
        } else {
            answer = f->answer(f, q, &rs);
        }
        f->n_redirects += answer && rs.err == KHO_ENOTLEADER;
        if (answer) {
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
        r.shards = q->shards;
        r.home = q->home;
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
    assert_int_equal(info.shards, 1); /* a server that does not say */
    assert_string_equal(info.home, "");
    assert_int_equal(f.n_reqs, 1);

    /* With shards and a home: sent as given, read back. */
    struct kho_registry_opts ro = {.replicas = 2, .shards = 4, .home = "hue"};
    assert_int_equal(kho_registry_create_opts(c, "land", &ro, &info), KHO_OK);
    assert_int_equal(f.req_shards, 4);
    assert_int_equal(f.req_replicas, 2);
    assert_string_equal(f.req_home, "hue");
    assert_int_equal(info.shards, 4);
    assert_string_equal(info.home, "hue");
    ro.shards = KHO_SHARDS_MAX + 1;
    assert_int_equal(kho_registry_create_opts(c, "land", &ro, &info),
                     KHO_EINVAL);
    ro.shards = 4;
    ro.home = "bad\xff";
    assert_int_equal(kho_registry_create_opts(c, "land", &ro, &info),
                     KHO_EINVAL);
    assert_int_equal(kho_registry_create_opts(c, "land", NULL, NULL), KHO_OK);
    assert_int_equal(f.req_shards, 0);
    assert_string_equal(f.req_home, "");
    f.n_reqs = 1;

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
    g0.shard = 2;
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
    assert_int_equal(st.groups[0].shard, 2);
    assert_int_equal(st.n_nodes, 2);
    assert_string_equal(st.nodes[1].name, "hue");
    assert_string_equal(st.nodes[1].client_url, "tcp://10.0.0.2:7101");
    f.mode = 1;
    assert_int_equal(kho_node_status(c, 0, &st), KHO_ECORRUPT);
    kho_client_close(c);
    fake_stop(&f);
}

/* --- Sharded registries ---------------------------------------------------
 */

/* Three fake nodes (ids 1..3) hosting registry "reg" of four shards, two
 * replicas each; a fourth id is a node nobody listens at. */
#define CL_NODES 3
#define CL_SHARDS 4u
#define CL_KEYS 50
#define CL_GHOST_ID 4u
#define CL_GHOST_URL "inproc://kho-test-nobody"

struct cluster {
    struct fake nodes[CL_NODES];
    int replicas[CL_SHARDS][2]; /* node indexes */
    int leader[CL_SHARDS];      /* node index */
    bool ghost;           /* maps name the ghost as shard 0's first replica and
                             leader */
    bool short_pages;     /* a shard's page holds at most 2 records */
    uint32_t data_shards; /* the count data answers give (0: CL_SHARDS) */
    char keys[CL_KEYS][16];
};

static struct cluster cl;

static int cl_index(const struct fake *f)
{
    return (int)(f - cl.nodes);
}

static bool cl_hosts(int node, uint32_t s)
{
    return cl.replicas[s][0] == node || cl.replicas[s][1] == node;
}

/* Node `node`'s map: every shard, the leaders of the shards it hosts. */
static void cl_map(int node, Kho__Api__Response *rs)
{
    static _Thread_local Kho__Api__ShardMap sm;
    static _Thread_local Kho__Api__ShardInfo si[CL_SHARDS], *sp[CL_SHARDS];
    static _Thread_local uint64_t reps[CL_SHARDS][2];
    static _Thread_local Kho__Api__NodeInfo ni[CL_NODES + 1], *np[CL_NODES + 1];
    static const char *const names[] = {"hanoi", "hue", "danang", "ghost"};
    Kho__Api__ShardMap m = KHO__API__SHARD_MAP__INIT;
    m.registry = "reg";
    m.shards = CL_SHARDS;
    m.replicas = 2;
    m.revision = 9;
    for (uint32_t s = 0; s < CL_SHARDS; s++) {
        Kho__Api__ShardInfo i = KHO__API__SHARD_INFO__INIT;
        i.shard = s;
        i.group_id = 10 + s;
        reps[s][0] = (uint64_t)cl.replicas[s][0] + 1;
        reps[s][1] = (uint64_t)cl.replicas[s][1] + 1;
        i.n_replicas = 2;
        i.replicas = reps[s];
        if (cl_hosts(node, s)) {
            i.leader = (uint64_t)cl.leader[s] + 1;
            i.leader_url = cl.nodes[cl.leader[s]].url;
            i.term = 3;
            i.commit = i.applied = 100 + s;
        }
        if (s == 0 && cl.ghost) {
            reps[s][0] = CL_GHOST_ID;
            i.leader = CL_GHOST_ID;
            i.leader_url = CL_GHOST_URL;
        }
        si[s] = i;
        sp[s] = &si[s];
    }
    for (int k = 0; k <= CL_NODES; k++) {
        Kho__Api__NodeInfo n = KHO__API__NODE_INFO__INIT;
        n.id = (uint64_t)k + 1;
        n.name = (char *)names[k];
        n.client_url = k < CL_NODES ? cl.nodes[k].url : CL_GHOST_URL;
        ni[k] = n;
        np[k] = &ni[k];
    }
    m.n_shard_list = CL_SHARDS;
    m.shard_list = sp;
    m.n_nodes = cl.ghost ? CL_NODES + 1 : CL_NODES;
    m.nodes = np;
    sm = m;
    rs->shard_map = &sm;
}

/* The shard a request is for: its key's, the one a scan names, or the one
 * of a transaction's keys (CL_SHARDS when they differ, or a scan names
 * none). */
static uint32_t cl_shard_of(const Kho__Api__Request *q)
{
    if (q->op == KHO__API__OP__OP_SCAN) {
        return q->shard > 0 && q->shard <= CL_SHARDS ? q->shard - 1 : CL_SHARDS;
    }
    if (q->op != KHO__API__OP__OP_TXN) {
        return kho_shard_of(q->key.data, q->key.len, CL_SHARDS);
    }
    uint32_t s = CL_SHARDS;
    for (size_t i = 0; i < q->n_compares + q->n_ops; i++) {
        const ProtobufCBinaryData *k = i < q->n_compares
                                           ? &q->compares[i]->key
                                           : &q->ops[i - q->n_compares]->key;
        uint32_t t = kho_shard_of(k->data, k->len, CL_SHARDS);
        if (s != CL_SHARDS && t != s) {
            return CL_SHARDS;
        }
        s = t;
    }
    return s;
}

/* memcmp, then length, like the server's key order. */
static int key_cmp(const char *k, const ProtobufCBinaryData *b)
{
    size_t len = strlen(k), n = len < b->len ? len : b->len;
    int d = memcmp(k, b->data, n);
    return d != 0 ? d : len < b->len ? -1 : len > b->len;
}

/* Shard s's page of the keys after q->token (with q->prefix). */
static void cl_scan(const Kho__Api__Request *q, uint32_t s,
                    Kho__Api__Response *rs)
{
    static _Thread_local Kho__Api__Record recs[CL_KEYS], *ptrs[CL_KEYS];
    uint32_t limit = q->limit > 0 ? q->limit : 1000;
    limit = cl.short_pages && limit > 2 ? 2 : limit;
    size_t n = 0;
    bool more = false;
    for (int i = 0; i < CL_KEYS; i++) {
        const char *k = cl.keys[i];
        size_t len = strlen(k);
        if (kho_shard_of(k, len, CL_SHARDS) != s ||
            (q->token.len > 0 && key_cmp(k, &q->token) <= 0) ||
            (q->prefix.len > 0 &&
             (len < q->prefix.len ||
              memcmp(k, q->prefix.data, q->prefix.len) != 0))) {
            continue;
        }
        if (n == limit) {
            more = true;
            break;
        }
        recs[n] = a_record(k, k);
        ptrs[n] = &recs[n];
        n++;
    }
    rs->n_records = n;
    rs->records = ptrs;
    if (more) {
        rs->token = recs[n - 1].key;
    }
}

/* A data request: the shard's leader serves it, any other node redirects
 * to the leader; OP_SHARD_MAP: this node's map. */
static bool answer_cluster(struct fake *f, const Kho__Api__Request *q,
                           Kho__Api__Response *rs)
{
    static _Thread_local Kho__Api__Record rec;
    int me = cl_index(f);
    if (q->op == KHO__API__OP__OP_SHARD_MAP) {
        cl_map(me, rs);
        return true;
    }
    uint32_t s = cl_shard_of(q);
    rs->shards = cl.data_shards != 0 ? cl.data_shards : CL_SHARDS;
    if (s == CL_SHARDS) {
        rs->err = KHO_EINVAL;
        rs->message = "keys in several shards, or a scan naming none";
        return true;
    }
    if (cl.leader[s] != me) {
        rs->err = KHO_ENOTLEADER;
        rs->leader_hint = cl.nodes[cl.leader[s]].url;
        return true;
    }
    switch (q->op) {
    case KHO__API__OP__OP_GET:
        rec = a_record("k", "v");
        rec.key = q->key;
        rec.value = q->key;
        rs->record = &rec;
        break;
    case KHO__API__OP__OP_SCAN:
        cl_scan(q, s, rs);
        break;
    default:
        rs->version = 1;
        rs->revision = 5;
    }
    return true;
}

static void cl_start_with(fake_answer_fn answer)
{
    static const int reps[CL_SHARDS][2] = {{0, 1}, {1, 2}, {2, 0}, {0, 1}};
    static const int leaders[CL_SHARDS] = {0, 2, 2, 1};
    memset(&cl, 0, sizeof(cl));
    for (uint32_t s = 0; s < CL_SHARDS; s++) {
        cl.replicas[s][0] = reps[s][0];
        cl.replicas[s][1] = reps[s][1];
        cl.leader[s] = leaders[s];
    }
    for (int i = 0; i < CL_KEYS; i++) {
        snprintf(cl.keys[i], sizeof(cl.keys[i]), "key-%03d", i);
    }
    for (int i = 0; i < CL_NODES; i++) {
        fake_start(&cl.nodes[i], answer);
        cl.nodes[i].serves_maps = true;
    }
}

static void cl_start(void)
{
    cl_start_with(answer_cluster);
}

static void cl_stop(void)
{
    for (int i = 0; i < CL_NODES; i++) {
        fake_stop(&cl.nodes[i]);
    }
}

static size_t cl_sum(size_t (*field)(const struct fake *f))
{
    size_t n = 0;
    for (int i = 0; i < CL_NODES; i++) {
        n += field(&cl.nodes[i]);
    }
    return n;
}

static size_t f_maps(const struct fake *f)
{
    return f->n_maps;
}

static size_t f_redirects(const struct fake *f)
{
    return f->n_redirects;
}

static size_t f_reqs(const struct fake *f)
{
    return f->n_reqs;
}

static void cl_reset_counts(void)
{
    for (int i = 0; i < CL_NODES; i++) {
        cl.nodes[i].n_reqs = 0;
        cl.nodes[i].n_redirects = 0;
        cl.nodes[i].n_maps = 0;
    }
}

/* A key of shard s. */
static const char *key_in(uint32_t s, int nth)
{
    for (int i = 0; i < CL_KEYS; i++) {
        if (kho_shard_of(cl.keys[i], strlen(cl.keys[i]), CL_SHARDS) == s &&
            nth-- == 0) {
            return cl.keys[i];
        }
    }
    fail_msg("no key %d in shard %u", nth, s);
    return NULL;
}

static void test_shard_routing(void **state)
{
    cl_start();
    /* Given node 0 only: its map knows the leaders of shards 0, 2 and 3;
     * shard 1 (on nodes 1 and 2) goes to a replica first. */
    struct kho_client *c = open_on(cl.nodes[0].url, 5000);
    for (int i = 0; i < CL_KEYS; i++) {
        const char *k = cl.keys[i];
        assert_int_equal(kho_put(c, "reg", k, strlen(k), "v", 1, 0, 0, NULL),
                         KHO_OK);
    }
    assert_int_equal(cl_sum(f_maps), 1);
    assert_int_equal(cl.nodes[0].n_maps, 1);
    assert_int_equal(cl_sum(f_redirects), 1); /* node 1 -> node 2, once */
    assert_int_equal(cl_sum(f_reqs), CL_KEYS + 1);

    /* With the map cached every get goes to its shard's leader. */
    cl_reset_counts();
    size_t want[CL_NODES] = {0};
    for (int i = 0; i < CL_KEYS; i++) {
        const char *k = cl.keys[i];
        want[cl.leader[kho_shard_of(k, strlen(k), CL_SHARDS)]]++;
        struct kho_record r;
        assert_int_equal(kho_get_record(c, "reg", k, strlen(k), 0, &r), KHO_OK);
        assert_memory_equal(r.value, k, strlen(k));
        kho_record_clear(&r);
    }
    assert_int_equal(cl_sum(f_redirects), 0);
    assert_int_equal(cl_sum(f_maps), 0);
    for (int i = 0; i < CL_NODES; i++) {
        assert_int_equal(cl.nodes[i].n_reqs, want[i]);
    }

    /* Shard 1's leadership moves to node 1: one redirect, then direct. */
    cl_reset_counts();
    cl.leader[1] = 1;
    const char *k1 = key_in(1, 0);
    void *v = NULL;
    size_t vlen = 0;
    assert_int_equal(kho_get(c, "reg", k1, strlen(k1), 0, &v, &vlen, NULL),
                     KHO_OK);
    free(v);
    assert_int_equal(cl.nodes[2].n_redirects, 1);
    assert_int_equal(cl.nodes[1].n_reqs, 1);
    assert_int_equal(kho_del(c, "reg", k1, strlen(k1), 0, 0), KHO_OK);
    assert_int_equal(cl_sum(f_redirects), 1);
    assert_int_equal(cl.nodes[1].n_reqs, 2);
    assert_int_equal(cl.nodes[1].ops[1], KHO__API__OP__OP_DELETE);
    assert_int_equal(cl_sum(f_maps), 0);

    /* History goes by the key like a get. */
    struct kho_record *recs = NULL;
    size_t n = 0, tlen = 0;
    void *tok = NULL;
    const char *k3 = key_in(3, 0);
    assert_int_equal(kho_history(c, "reg", k3, strlen(k3), 0, NULL, 0, &recs,
                                 &n, &tok, &tlen),
                     KHO_OK);
    assert_int_equal(
        cl.nodes[cl.leader[3]].ops[cl.nodes[cl.leader[3]].n_reqs - 1],
        KHO__API__OP__OP_HISTORY);
    assert_int_equal(cl_sum(f_redirects), 1);
    kho_client_close(c);
    cl_stop();
}

static void test_shard_txn(void **state)
{
    cl_start();
    struct kho_client *c = open_on(cl.nodes[1].url, 5000);
    const char *a = key_in(0, 0), *b = key_in(2, 0), *a2 = key_in(0, 1);
    struct kho_op ops[2] = {
        {.key = a, .key_len = strlen(a), .value = "1", .value_len = 1},
        {.key = b, .key_len = strlen(b), .value = "2", .value_len = 1},
    };
    struct kho_compare cmp = {.key = b, .key_len = strlen(b)};
    uint64_t rev = 7;
    /* The map comes with the first request; the refusal sends nothing. */
    assert_int_equal(kho_txn(c, "reg", NULL, 0, ops, 2, &rev, NULL),
                     KHO_EINVAL);
    assert_int_equal(rev, 0);
    assert_non_null(strstr(kho_client_errmsg(c),
                           "transaction spans shards 0 and 2 of registry "
                           "'reg'"));
    assert_int_equal(cl_sum(f_maps), 1);
    assert_int_equal(cl_sum(f_reqs), 0);
    /* A compare in another shard than the ops counts as well. */
    assert_int_equal(kho_txn(c, "reg", &cmp, 1, ops, 1, NULL, NULL),
                     KHO_EINVAL);
    assert_int_equal(cl_sum(f_reqs), 0);

    /* Keys of one shard: straight to its leader, node 0. */
    ops[1].key = a2;
    ops[1].key_len = strlen(a2);
    assert_int_equal(kho_txn(c, "reg", NULL, 0, ops, 2, &rev, NULL), KHO_OK);
    assert_int_equal(rev, 5);
    assert_int_equal(cl.nodes[0].n_reqs, 1);
    assert_int_equal(cl.nodes[0].ops[0], KHO__API__OP__OP_TXN);
    assert_int_equal(cl_sum(f_redirects), 0);
    assert_int_equal(cl_sum(f_maps), 1);
    kho_client_close(c);
    cl_stop();
}

/* Scans "reg" in pages of `limit` (opts o otherwise) and returns the keys,
 * space-separated, in *got; the number of pages in *pages. */
static void scan_all(struct kho_client *c, struct kho_scan_opts o,
                     uint32_t limit, char *got, size_t cap, int *pages)
{
    void *tok = NULL;
    size_t tlen = 0;
    got[0] = '\0';
    *pages = 0;
    for (int page = 0; page < 100; page++) {
        struct kho_record *recs = NULL;
        size_t n = 0;
        void *next = NULL;
        o.token = tok;
        o.token_len = tlen;
        o.limit = limit;
        assert_int_equal(kho_scan(c, "reg", &o, &recs, &n, &next, &tlen),
                         KHO_OK);
        (*pages)++;
        assert_true(n <= limit);
        free(tok);
        tok = next;
        for (size_t i = 0; i < n; i++) {
            assert_true(strlen(got) + recs[i].key_len + 2 < cap);
            strncat(got, recs[i].key, recs[i].key_len);
            strcat(got, " ");
        }
        if (tok != NULL) {
            /* The token is the page's last key. */
            assert_true(n > 0);
            assert_int_equal(tlen, recs[n - 1].key_len);
            assert_memory_equal(tok, recs[n - 1].key, tlen);
        }
        kho_records_free(recs, n);
        if (tok == NULL) {
            assert_int_equal(tlen, 0);
            return;
        }
    }
    fail_msg("the scan did not end");
}

static void test_shard_scan(void **state)
{
    cl_start();
    char want[CL_KEYS * 16] = "", got[CL_KEYS * 16];
    for (int i = 0; i < CL_KEYS; i++) {
        strcat(want, cl.keys[i]);
        strcat(want, " ");
    }
    struct kho_client *c = open_on(cl.nodes[2].url, 5000);
    struct kho_scan_opts o = {.serializable = 1};
    int pages = 0;
    scan_all(c, o, 7, got, sizeof(got), &pages);
    assert_string_equal(got, want);
    assert_int_equal(pages, (CL_KEYS + 6) / 7);
    /* Each page asked every shard (Request.shard 1..4), serializable. */
    bool asked[CL_SHARDS] = {false};
    for (int i = 0; i < CL_NODES; i++) {
        const struct fake *f = &cl.nodes[i];
        for (size_t k = 0; k < f->n_reqs && k < FAKE_LOG_MAX; k++) {
            assert_int_equal(f->ops[k], KHO__API__OP__OP_SCAN);
            assert_true(f->shards_asked[k] >= 1 &&
                        f->shards_asked[k] <= CL_SHARDS);
            assert_true(f->serializable[k]);
            assert_int_equal(f->limits[k], 7);
            asked[f->shards_asked[k] - 1] = true;
        }
    }
    for (uint32_t s = 0; s < CL_SHARDS; s++) {
        assert_true(asked[s]);
    }
    assert_int_equal(cl_sum(f_reqs) - cl_sum(f_redirects),
                     (size_t)pages * CL_SHARDS);

    /* Shards that cut their pages short (as by the byte bound): still
     * every key once, in order. */
    cl.short_pages = true;
    scan_all(c, o, 7, got, sizeof(got), &pages);
    assert_string_equal(got, want);
    scan_all(c, o, 1, got, sizeof(got), &pages);
    assert_string_equal(got, want);
    assert_int_equal(pages, CL_KEYS);
    cl.short_pages = false;
    scan_all(c, o, KHO_SCAN_LIMIT_MAX, got, sizeof(got), &pages);
    assert_string_equal(got, want);
    assert_int_equal(pages, 1);

    /* A prefix, over all four shards. */
    o = (struct kho_scan_opts){.prefix = "key-01", .prefix_len = 6};
    scan_all(c, o, 3, got, sizeof(got), &pages);
    assert_string_equal(got, "key-010 key-011 key-012 key-013 key-014 "
                             "key-015 key-016 key-017 key-018 key-019 ");
    assert_int_equal(cl_sum(f_maps), 1);
    kho_client_close(c);
    cl_stop();
}

/* A shard that answers a key of another shard, or its keys out of order,
 * breaks the protocol. */
static bool answer_bad_shard(struct fake *f, const Kho__Api__Request *q,
                             Kho__Api__Response *rs)
{
    static _Thread_local Kho__Api__Record recs[2], *ptrs[2];
    if (q->op == KHO__API__OP__OP_SHARD_MAP) {
        cl_map(0, rs);
        return true;
    }
    /* mode 0: shard 1 answers shard 0's keys; 1: two keys in the wrong
     * order; 2: a token without records. */
    const char *k0 = key_in(q->shard - 1, 0), *k1 = key_in(q->shard - 1, 1);
    recs[0] = a_record(f->mode == 0   ? key_in(0, 0)
                       : f->mode == 1 ? k1
                                      : k0,
                       "v");
    recs[1] = a_record(f->mode == 1 ? k0 : k1, "v");
    ptrs[0] = &recs[0];
    ptrs[1] = &recs[1];
    rs->records = ptrs;
    rs->n_records = f->mode == 2 ? 0 : 2;
    rs->token = f->mode == 2 ? bin("key-000") : rs->token;
    rs->shards = CL_SHARDS;
    return true;
}

static void test_shard_scan_corrupt(void **state)
{
    cl_start();
    /* Every shard led by node 0, which answers badly. */
    for (uint32_t s = 0; s < CL_SHARDS; s++) {
        cl.leader[s] = 0;
        cl.replicas[s][0] = 0;
    }
    cl.nodes[0].answer = answer_bad_shard;
    struct kho_client *c = open_on(cl.nodes[0].url, 5000);
    struct kho_scan_opts o = {.limit = 5};
    struct kho_record *recs = NULL;
    size_t n = 0, tlen = 0;
    void *tok = NULL;
    for (int mode = 0; mode < 3; mode++) {
        cl.nodes[0].mode = mode;
        assert_int_equal(kho_scan(c, "reg", &o, &recs, &n, &tok, &tlen),
                         KHO_ECORRUPT);
        assert_null(recs);
        assert_null(tok);
    }
    kho_client_close(c);
    cl_stop();
}

static void test_shard_map_refresh(void **state)
{
    cl_start();
    struct kho_client *c = open_on(cl.nodes[0].url, 5000);
    const char *k = key_in(1, 0);
    void *v = NULL;
    size_t vlen = 0;
    /* Answers say 8 shards: the map of 4 is stale, fetched again once
     * KHO_SHARD_MAP_REFRESH_MS passed since the last fetch. */
    cl.data_shards = 8;
    assert_int_equal(kho_get(c, "reg", k, strlen(k), 0, &v, &vlen, NULL),
                     KHO_OK);
    free(v);
    assert_int_equal(cl_sum(f_maps), 1);
    nng_msleep(KHO_SHARD_MAP_REFRESH_MS + 50);
    assert_int_equal(kho_get(c, "reg", k, strlen(k), 0, &v, &vlen, NULL),
                     KHO_OK);
    free(v);
    assert_int_equal(cl_sum(f_maps), 2);
    assert_int_equal(kho_get(c, "reg", k, strlen(k), 0, &v, &vlen, NULL),
                     KHO_OK);
    free(v);
    /* Rate-limited: not fetched again within KHO_SHARD_MAP_REFRESH_MS. */
    assert_int_equal(cl_sum(f_maps), 2);

    /* A scan whose shards keep disagreeing with the map: fetched again and
     * read again a bounded number of times, then KHO_EUNAVAILABLE. */
    struct kho_scan_opts o = {.limit = 5};
    struct kho_record *recs = NULL;
    size_t n = 0, tlen = 0;
    void *tok = NULL;
    size_t maps = cl_sum(f_maps);
    assert_int_equal(kho_scan(c, "reg", &o, &recs, &n, &tok, &tlen),
                     KHO_EUNAVAILABLE);
    assert_non_null(strstr(kho_client_errmsg(c), "has 8 shards"));
    /* Two restarts, each after a fetch (and one more fetch first when
     * KHO_SHARD_MAP_REFRESH_MS passed since the last). */
    assert_true(cl_sum(f_maps) - maps >= 2 && cl_sum(f_maps) - maps <= 3);
    cl.data_shards = 0;
    assert_int_equal(kho_scan(c, "reg", &o, &recs, &n, &tok, &tlen), KHO_OK);
    assert_int_equal(n, 5);
    kho_records_free(recs, n);
    free(tok);

    /* The map names an unreachable leader for shard 0: after one try's
     * wait the request goes to the other replica, and the map is fetched
     * again. */
    kho_client_close(c);
    cl_reset_counts();
    cl.ghost = true;
    c = open_on(cl.nodes[0].url, 5000);
    const char *k0 = key_in(0, 0);
    assert_int_equal(kho_get(c, "reg", k0, strlen(k0), 0, &v, &vlen, NULL),
                     KHO_OK);
    free(v);
    assert_int_equal(cl.nodes[0].n_reqs, 1);
    assert_true(cl_sum(f_maps) >= 2);
    kho_client_close(c);
    cl_stop();
}

/* A node whose copy of the meta group lags: it knows no "reg" yet and
 * sends map requests to node 0, the meta leader. */
static bool answer_lagging(struct fake *f, const Kho__Api__Request *q,
                           Kho__Api__Response *rs)
{
    rs->err = KHO_ENOTLEADER;
    rs->leader_hint = cl.nodes[0].url;
    return true;
}

static void test_shard_map_api(void **state)
{
    cl_start();
    struct kho_client *c = open_on(cl.nodes[0].url, 5000);
    struct kho_shard_map *m = (struct kho_shard_map *)1;
    assert_int_equal(kho_shard_map(c, "", &m), KHO_EINVAL);
    assert_null(m);
    assert_int_equal(kho_shard_map(c, "reg", NULL), KHO_EINVAL);
    assert_int_equal(kho_shard_map(c, "reg", &m), KHO_OK);
    assert_string_equal(m->registry, "reg");
    assert_int_equal(m->shards, CL_SHARDS);
    assert_int_equal(m->replicas, 2);
    assert_int_equal(m->revision, 9);
    assert_int_equal(m->n_nodes, CL_NODES);
    assert_string_equal(m->nodes[1].name, "hue");
    /* Node 0 knew three leaders; shard 1's came from a node hosting it. */
    for (uint32_t s = 0; s < CL_SHARDS; s++) {
        const struct kho_shard_info *si = &m->shard_list[s];
        assert_int_equal(si->shard, s);
        assert_int_equal(si->group_id, 10 + s);
        assert_int_equal(si->n_replicas, 2);
        assert_int_equal(si->leader, (uint64_t)cl.leader[s] + 1);
        assert_string_equal(si->leader_url, cl.nodes[cl.leader[s]].url);
        assert_int_equal(si->term, 3);
    }
    assert_int_equal(cl.nodes[0].n_maps, 1);
    assert_int_equal(cl.nodes[1].n_maps + cl.nodes[2].n_maps, 1);
    kho_shard_map_free(m);
    kho_shard_map_free(NULL);

    /* The map is cached: a get goes straight to shard 1's leader. */
    const char *k = key_in(1, 0);
    void *v = NULL;
    size_t vlen = 0;
    assert_int_equal(kho_get(c, "reg", k, strlen(k), 0, &v, &vlen, NULL),
                     KHO_OK);
    free(v);
    assert_int_equal(cl_sum(f_redirects), 0);
    assert_int_equal(cl_sum(f_maps), 2);
    kho_client_close(c);

    /* A node that does not know the registry yet names the meta leader;
     * the map request follows it. */
    struct fake lag;
    fake_start(&lag, answer_lagging);
    lag.serves_maps = true;
    c = open_on(lag.url, 5000);
    assert_int_equal(kho_shard_map(c, "reg", &m), KHO_OK);
    assert_int_equal(m->shards, CL_SHARDS);
    kho_shard_map_free(m);
    assert_int_equal(lag.n_maps, 1);
    assert_int_equal(cl.nodes[0].n_maps, 2);
    kho_client_close(c);
    fake_stop(&lag);
    cl_stop();

    /* A node before sharding. */
    struct fake f;
    fake_start(&f, answer_ok);
    c = open_on(f.url, 1000);
    assert_int_equal(kho_shard_map(c, "reg", &m), KHO_EINVAL);
    assert_null(m);
    assert_non_null(strstr(kho_client_errmsg(c), "does not know shard maps"));
    kho_client_close(c);
    fake_stop(&f);
}

/* Against nodes that predate sharding: one map request, then the old way,
 * for every registry, until KHO_SHARD_MAP_RETRY_MS passed. */
static void test_shard_fallback(void **state)
{
    struct fake f;
    fake_start(&f, answer_scan);
    struct kho_client *c = open_on(f.url, 1000);
    struct kho_scan_opts o = {.limit = 2};
    struct kho_record *recs = NULL;
    size_t n = 0, tlen = 0;
    void *tok = NULL;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(
            kho_scan(c, i == 2 ? "other" : "r", &o, &recs, &n, &tok, &tlen),
            KHO_OK);
        assert_int_equal(n, 2);
        kho_records_free(recs, n);
        free(tok);
        assert_int_equal(f.shards_asked[i], 0);
    }
    assert_int_equal(f.n_maps, 1);
    assert_int_equal(f.n_reqs, 3);
    kho_client_close(c);
    fake_stop(&f);

    /* One that answers a map request without a map counts as such. */
    fake_start(&f, answer_get);
    f.serves_maps = true;
    c = open_on(f.url, 1000);
    struct kho_record r;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(kho_get_record(c, "r", "k", 1, 0, &r), KHO_OK);
        kho_record_clear(&r);
    }
    assert_int_equal(f.n_maps, 1);
    assert_int_equal(f.n_reqs, 3);
    /* A transaction goes unchecked: the server judges its shards. */
    struct kho_op ops[2] = {{.key = "a", .key_len = 1},
                            {.key = "b", .key_len = 1}};
    assert_int_equal(kho_txn(c, "r", NULL, 0, ops, 2, NULL, NULL), KHO_OK);
    assert_int_equal(f.n_reqs, 4);
    kho_client_close(c);
    fake_stop(&f);
}

/* mode 0: one move; 1: a move of a shard out of range. */
static bool answer_moves(struct fake *f, const Kho__Api__Request *q,
                         Kho__Api__Response *rs)
{
    static Kho__Api__ShardMove mv[2], *mp[2];
    for (int i = 0; i < 2; i++) {
        Kho__Api__ShardMove m = KHO__API__SHARD_MOVE__INIT;
        m.registry = "land";
        m.shard = f->mode == 1 ? KHO_SHARDS_MAX : (uint32_t)i + 2;
        m.from = 1;
        m.to = 3;
        m.from_name = "hanoi";
        m.to_name = "danang";
        mv[i] = m;
        mp[i] = &mv[i];
    }
    rs->moves = mp;
    rs->n_moves = q->op == KHO__API__OP__OP_SHARD_MOVE ? 1 : 2;
    return true;
}

static void test_shard_moves(void **state)
{
    struct fake f;
    fake_start(&f, answer_moves);
    struct kho_client *c = open_on(f.url, 1000);
    struct kho_shard_move *mv = (struct kho_shard_move *)1;
    size_t n = 9;
    assert_int_equal(kho_shard_move(c, "land", 2, "hanoi", "hanoi", &mv, &n),
                     KHO_EINVAL);
    assert_null(mv);
    assert_int_equal(n, 0);
    assert_int_equal(
        kho_shard_move(c, "land", KHO_SHARDS_MAX, "hanoi", "hue", &mv, &n),
        KHO_EINVAL);
    assert_int_equal(kho_shard_move(c, "land", 2, "", "hue", &mv, &n),
                     KHO_EINVAL);
    assert_int_equal(kho_shard_move(c, "land", 2, "hanoi", "hue", &mv, NULL),
                     KHO_EINVAL);
    assert_int_equal(f.n_reqs, 0);

    assert_int_equal(kho_shard_move(c, "land", 2, "hanoi", "danang", &mv, &n),
                     KHO_OK);
    assert_int_equal(f.ops[0], KHO__API__OP__OP_SHARD_MOVE);
    assert_int_equal(f.shards_asked[0], 3); /* 1-based on the wire */
    assert_string_equal(f.req_node, "hanoi");
    assert_string_equal(f.req_target, "danang");
    assert_int_equal(f.seqs[0], 1);
    assert_int_equal(n, 1);
    assert_string_equal(mv[0].registry, "land");
    assert_int_equal(mv[0].shard, 2);
    assert_int_equal(mv[0].from, 1);
    assert_string_equal(mv[0].to_name, "danang");
    free(mv);
    assert_int_equal(
        kho_shard_move(c, "land", 2, "hanoi", "danang", NULL, NULL), KHO_OK);

    assert_int_equal(kho_rebalance(c, 1, &mv, &n), KHO_OK);
    assert_int_equal(f.ops[2], KHO__API__OP__OP_REBALANCE);
    assert_true(f.req_dry_run);
    assert_int_equal(f.seqs[2], 0); /* a plan writes nothing */
    assert_int_equal(n, 2);
    assert_int_equal(mv[1].shard, 3);
    free(mv);
    assert_int_equal(kho_rebalance(c, 0, &mv, &n), KHO_OK);
    assert_false(f.req_dry_run);
    assert_int_equal(f.seqs[3], 3);
    free(mv);
    f.mode = 1;
    assert_int_equal(kho_rebalance(c, 0, &mv, &n), KHO_ECORRUPT);
    assert_null(mv);
    assert_int_equal(n, 0);
    kho_client_close(c);
    fake_stop(&f);
}

/* --- Backups from several nodes -------------------------------------------
 */

/* The cluster above answering backups (the registry "reg" of four shards,
 * no node hosting all of them, and the meta group 0 on every node): a
 * BACKUP_BEGIN without a list is refused for lacking groups (unless the
 * node is made to host everything), one with a list gets a synthetic
 * backup file of exactly those groups - each group's payload a pattern of
 * its id, cut into DATA frames of BK_FRAME_BYTES - which FETCH serves in
 * chunks of BK_CHUNK_BYTES. libkho checks only the framing, so the
 * payloads need not be snapshot streams. */
#define BK_FRAME_BYTES 1000u
#define BK_CHUNK_BYTES 777u
#define BK_GROUPS 5u
#define BK_BYTES_MAX (64u << 10)

enum bk_mode {
    BK_NORMAL = 0,
    BK_EVERYTHING = 1, /* hosts every group: takes a backup without a list */
    BK_LAGGING = 2,    /* refuses a listed BEGIN for lacking a group */
    BK_FLIP = 3,       /* flips a byte of the file (chunk CRCs still hold) */
};

struct bk_node {
    enum bk_mode mode;
    uint8_t file[BK_BYTES_MAX];
    size_t len;
    uint64_t id;
    size_t n_begins, n_ends;
    uint64_t asked[BK_GROUPS]; /* the last listed BEGIN's groups */
    size_t n_asked;
    char msg[128];
};

static struct bk_node bkn[CL_NODES];
static const uint64_t bk_all[BK_GROUPS] = {0, 10, 11, 12, 13};

static uint32_t t_crc_more(uint32_t crc, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
        }
    }
    return crc;
}

static uint32_t t_crc(const uint8_t *p, size_t n)
{
    return t_crc_more(0xFFFFFFFFu, p, n) ^ 0xFFFFFFFFu;
}

static void t_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void t_le64(uint8_t *p, uint64_t v)
{
    t_le32(p, (uint32_t)v);
    t_le32(p + 4, (uint32_t)(v >> 32));
}

static uint32_t t_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t t_get64(const uint8_t *p)
{
    return (uint64_t)t_get32(p) | (uint64_t)t_get32(p + 4) << 32;
}

/* Group gid's payload: its length and its byte at i. */
static size_t bk_payload_len(uint64_t gid)
{
    return 2300u + (size_t)(gid % 7u) * 150u;
}

static uint8_t bk_payload_at(uint64_t gid, size_t i)
{
    return (uint8_t)(gid * 31u + i * 7u);
}

static void bk_frame(struct bk_node *b, uint32_t type, const uint8_t *body,
                     size_t len)
{
    uint8_t *h = b->file + b->len;
    assert_true(b->len + 12 + len <= BK_BYTES_MAX);
    t_le32(h, type);
    t_le32(h + 4, (uint32_t)len);
    memcpy(h + 12, body, len);
    uint32_t crc = t_crc_more(0xFFFFFFFFu, h, 8);
    t_le32(h + 8, t_crc_more(crc, body, len) ^ 0xFFFFFFFFu);
    b->len += 12 + len;
}

/* The backup file node `me` writes of groups[0..n). */
static void bk_build(struct bk_node *b, int me, const uint64_t *groups,
                     size_t n)
{
    static const uint8_t magic[8] = {'K', 'H', 'O', 'B', 'A', 'C', 'K', 1};
    uint8_t *h = b->file;
    b->id = 0xb0000000u + (uint64_t)me * 0x100u + b->n_begins;
    memcpy(h, magic, 8);
    t_le32(h + 8, 1);
    t_le32(h + 12, 1u << 20);
    t_le64(h + 16, b->id);
    t_le64(h + 24, (uint64_t)me + 1);
    t_le64(h + 32, 1700000000000u);
    t_le32(h + 40, (uint32_t)n);
    t_le32(h + 44, t_crc(h, 44));
    b->len = 48;
    for (size_t g = 0; g < n; g++) {
        uint8_t body[32];
        size_t total = bk_payload_len(groups[g]);
        t_le64(body, groups[g]);
        t_le64(body + 8, 40 + groups[g]); /* index */
        t_le64(body + 16, 2);             /* term */
        t_le64(body + 24, total);
        bk_frame(b, 1, body, sizeof(body));
        uint8_t data[BK_FRAME_BYTES];
        for (size_t off = 0; off < total; off += BK_FRAME_BYTES) {
            size_t k =
                total - off < BK_FRAME_BYTES ? total - off : BK_FRAME_BYTES;
            for (size_t i = 0; i < k; i++) {
                data[i] = bk_payload_at(groups[g], off + i);
            }
            bk_frame(b, 2, data, k);
        }
    }
    uint8_t end[16];
    t_le64(end, b->len);
    t_le32(end + 8, (uint32_t)n);
    t_le32(end + 12, t_crc(b->file, b->len));
    bk_frame(b, 3, end, sizeof(end));
    if (b->mode == BK_FLIP) {
        b->file[b->len / 2] ^= 0x20;
    }
}

static bool bk_hosts(int me, uint64_t gid)
{
    return gid == 0 || (gid >= 10 && gid < 10 + CL_SHARDS &&
                        cl_hosts(me, (uint32_t)(gid - 10)));
}

static void bk_begin(struct bk_node *b, int me, const Kho__Api__Request *q,
                     Kho__Api__Response *rs)
{
    b->n_begins++;
    bool listed = q->n_backup_groups > 0;
    bool lacks = !listed && b->mode != BK_EVERYTHING;
    for (size_t i = 0; listed && i < q->n_backup_groups; i++) {
        lacks |= !bk_hosts(me, q->backup_groups[i]) || b->mode == BK_LAGGING;
    }
    if (listed) {
        b->n_asked =
            q->n_backup_groups < BK_GROUPS ? q->n_backup_groups : BK_GROUPS;
        memcpy(b->asked, q->backup_groups, b->n_asked * sizeof(uint64_t));
    }
    if (lacks) {
        snprintf(b->msg, sizeof(b->msg), "node %d (%s) does not host reg",
                 me + 1,
                 me == 0   ? "hanoi"
                 : me == 1 ? "hue"
                           : "danang");
        rs->err = KHO_EINVAL;
        rs->message = b->msg;
        return;
    }
    bk_build(b, me, listed ? q->backup_groups : bk_all,
             listed ? q->n_backup_groups : BK_GROUPS);
    rs->backup_id = b->id;
    rs->node_id = (uint64_t)me + 1;
    rs->node_name = me == 0 ? "hanoi" : me == 1 ? "hue" : "danang";
}

static void bk_fetch(struct bk_node *b, const Kho__Api__Request *q,
                     Kho__Api__Response *rs)
{
    if (q->backup_id != b->id || q->backup_offset > b->len) {
        rs->err = KHO_ENOTFOUND;
        return;
    }
    size_t left = b->len - q->backup_offset;
    size_t n = left < BK_CHUNK_BYTES ? left : BK_CHUNK_BYTES;
    rs->backup_chunk.data = b->file + q->backup_offset;
    rs->backup_chunk.len = n;
    rs->backup_crc = t_crc(b->file + q->backup_offset, n);
    rs->backup_done = true;
    rs->backup_size = b->len;
    rs->backup_id = b->id;
}

/* Status (the nodes), the registry list, maps and backups. */
static bool answer_bk(struct fake *f, const Kho__Api__Request *q,
                      Kho__Api__Response *rs)
{
    static _Thread_local Kho__Api__NodeInfo ni[CL_NODES], *np[CL_NODES];
    static _Thread_local Kho__Api__RegistryInfo ri, *rp[1];
    static uint64_t reps[2] = {1, 2};
    static const char *const names[] = {"hanoi", "hue", "danang"};
    int me = cl_index(f);
    struct bk_node *b = &bkn[me];
    switch (q->op) {
    case KHO__API__OP__OP_SHARD_MAP:
        cl_map(me, rs);
        break;
    case KHO__API__OP__OP_STATUS:
        for (int k = 0; k < CL_NODES; k++) {
            Kho__Api__NodeInfo n = KHO__API__NODE_INFO__INIT;
            n.id = (uint64_t)k + 1;
            n.name = (char *)names[k];
            n.client_url = cl.nodes[k].url;
            ni[k] = n;
            np[k] = &ni[k];
        }
        rs->node_id = (uint64_t)me + 1;
        rs->node_name = (char *)names[me];
        rs->n_nodes = CL_NODES;
        rs->nodes = np;
        break;
    case KHO__API__OP__OP_REGISTRY_LIST: {
        Kho__Api__RegistryInfo r = KHO__API__REGISTRY_INFO__INIT;
        r.name = "reg";
        r.group_id = 10;
        r.n_replicas = 2;
        r.replicas = reps;
        r.shards = CL_SHARDS;
        ri = r;
        rp[0] = &ri;
        rs->n_registries = 1;
        rs->registries = rp;
        break;
    }
    case KHO__API__OP__OP_BACKUP_BEGIN:
        bk_begin(b, me, q, rs);
        break;
    case KHO__API__OP__OP_BACKUP_FETCH:
        bk_fetch(b, q, rs);
        break;
    case KHO__API__OP__OP_BACKUP_END:
        b->n_ends++;
        break;
    default:
        rs->err = KHO_EINVAL;
    }
    return true;
}

/* Checks that fd (from its start) holds a well-formed backup of groups
 * bk_all made by node `node`, every payload as the fakes wrote it; returns
 * its size. */
static size_t bk_check_file(FILE *fp, uint64_t node)
{
    static uint8_t buf[BK_GROUPS * BK_BYTES_MAX];
    rewind(fp);
    size_t len = fread(buf, 1, sizeof(buf), fp);
    assert_true(len >= 48 && len < sizeof(buf));
    assert_memory_equal(buf, "KHOBACK\x01", 8);
    assert_int_equal(t_get32(buf + 8), 1);
    assert_int_equal(t_get64(buf + 24), node);
    assert_int_equal(t_get32(buf + 40), BK_GROUPS);
    assert_int_equal(t_get32(buf + 44), t_crc(buf, 44));
    size_t at = 48;
    for (size_t g = 0; g < BK_GROUPS; g++) {
        const uint8_t *fr = buf + at;
        assert_int_equal(t_get32(fr), 1);
        assert_int_equal(t_get32(fr + 4), 32);
        uint32_t fc = t_crc_more(0xFFFFFFFFu, fr, 8);
        assert_int_equal(t_get32(fr + 8),
                         t_crc_more(fc, fr + 12, 32) ^ 0xFFFFFFFFu);
        assert_int_equal(t_get64(fr + 12), bk_all[g]);
        assert_int_equal(t_get64(fr + 12 + 24), bk_payload_len(bk_all[g]));
        at += 12 + 32;
        size_t got = 0;
        while (got < bk_payload_len(bk_all[g])) {
            const uint8_t *d = buf + at;
            uint32_t n = t_get32(d + 4);
            assert_int_equal(t_get32(d), 2);
            uint32_t crc = t_crc_more(0xFFFFFFFFu, d, 8);
            assert_int_equal(t_get32(d + 8),
                             t_crc_more(crc, d + 12, n) ^ 0xFFFFFFFFu);
            for (uint32_t i = 0; i < n; i++) {
                assert_int_equal(d[12 + i], bk_payload_at(bk_all[g], got + i));
            }
            got += n;
            at += 12 + n;
        }
        assert_int_equal(got, bk_payload_len(bk_all[g]));
    }
    const uint8_t *e = buf + at;
    assert_int_equal(t_get32(e), 3);
    assert_int_equal(t_get32(e + 4), 16);
    uint32_t crc = t_crc_more(0xFFFFFFFFu, e, 8);
    assert_int_equal(t_get32(e + 8), t_crc_more(crc, e + 12, 16) ^ 0xFFFFFFFFu);
    assert_int_equal(t_get64(e + 12), at);
    assert_int_equal(t_get32(e + 20), BK_GROUPS);
    assert_int_equal(t_get32(e + 24), t_crc(buf, at));
    assert_int_equal(at + 28, len);
    return len;
}

/* Open file descriptors of this process (the parts' temporary files must
 * all be gone when kho_backup returns). */
static size_t open_fds(void)
{
    size_t n = 0;
    for (int fd = 0; fd < 1024; fd++) {
        n += fcntl(fd, F_GETFD) != -1;
    }
    return n;
}

static void bk_reset(void)
{
    memset(bkn, 0, sizeof(bkn));
}

static void test_backup_parts(void **state)
{
    assert_int_equal(t_crc((const uint8_t *)"123456789", 9), 0xE3069283u);
    cl_start_with(answer_bk);
    char urls[3 * 64];
    snprintf(urls, sizeof(urls), "%s,%s,%s", cl.nodes[0].url, cl.nodes[1].url,
             cl.nodes[2].url);
    struct kho_client *c = open_on(urls, 2000);
    struct kho_backup_info info;
    FILE *fp = tmpfile();
    assert_non_null(fp);

    /* One node hosts everything: the backup is its file, as it was. */
    bk_reset();
    bkn[1].mode = BK_EVERYTHING;
    assert_int_equal(kho_backup(c, fileno(fp), &info), KHO_OK);
    assert_int_equal(info.node_id, 2);
    assert_int_equal(info.groups, BK_GROUPS);
    assert_int_equal(bk_check_file(fp, 2), info.bytes);
    assert_int_equal(info.backup_id, bkn[1].id);
    assert_int_equal(bkn[1].n_asked, 0);
    assert_int_equal(bkn[2].n_begins, 0);

    /* None does: node 1 (hanoi, the first of those hosting the most)
     * gives the meta group and shards 0, 2, 3; node 2 shard 1. The merged
     * file holds every group in order under a new id and END. */
    bk_reset();
    size_t fds = open_fds();
    assert_int_equal(ftruncate(fileno(fp), 0), 0);
    rewind(fp);
    assert_int_equal(kho_backup(c, fileno(fp), &info), KHO_OK);
    assert_int_equal(info.node_id, 1);
    assert_string_equal(info.node_name, "hanoi");
    assert_int_equal(info.groups, BK_GROUPS);
    assert_int_equal(bk_check_file(fp, 1), info.bytes);
    assert_true(info.backup_id != bkn[0].id && info.backup_id != bkn[1].id);
    assert_int_equal(bkn[0].n_asked, 4);
    assert_int_equal(bkn[0].asked[0], 0);
    assert_int_equal(bkn[0].asked[1], 10);
    assert_int_equal(bkn[0].asked[2], 12);
    assert_int_equal(bkn[0].asked[3], 13);
    assert_int_equal(bkn[1].n_asked, 1);
    assert_int_equal(bkn[1].asked[0], 11);
    assert_int_equal(bkn[2].n_begins, 1); /* the first, unlisted, only */
    assert_int_equal(bkn[0].n_ends, 1);
    assert_int_equal(bkn[1].n_ends, 1);
    assert_string_equal(kho_client_errmsg(c), "");
    assert_int_equal(open_fds(), fds);

    /* Node 1's view lags: it refuses its part and is passed over; node 2
     * then gives the meta group and shards 0, 1, 3, node 3 shard 2. */
    bk_reset();
    bkn[0].mode = BK_LAGGING;
    assert_int_equal(ftruncate(fileno(fp), 0), 0);
    rewind(fp);
    assert_int_equal(kho_backup(c, fileno(fp), &info), KHO_OK);
    assert_int_equal(info.node_id, 2);
    assert_int_equal(bk_check_file(fp, 2), info.bytes);
    assert_int_equal(bkn[1].n_asked, 4);
    assert_int_equal(bkn[1].asked[3], 13);
    assert_int_equal(bkn[2].n_asked, 1);
    assert_int_equal(bkn[2].asked[0], 12);
    assert_int_equal(open_fds(), fds);

    /* A part that fails its frame checks fails the backup, and leaves no
     * temporary file behind. */
    bk_reset();
    bkn[1].mode = BK_FLIP;
    assert_int_equal(kho_backup(c, fileno(fp), &info), KHO_ECORRUPT);
    assert_int_equal(bkn[1].n_ends, 1);
    assert_int_equal(open_fds(), fds);

    /* Shard 1 lives on nodes 2 and 3; with both refusing, nobody takes it. */
    bk_reset();
    bkn[1].mode = BK_LAGGING;
    bkn[2].mode = BK_LAGGING;
    assert_int_equal(kho_backup(c, fileno(fp), &info), KHO_EINVAL);
    assert_non_null(strstr(kho_client_errmsg(c), "no node takes group 11"));
    assert_int_equal(open_fds(), fds);

    fclose(fp);
    kho_client_close(c);
    cl_stop();
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
        cmocka_unit_test(test_shard_routing),
        cmocka_unit_test(test_shard_txn),
        cmocka_unit_test(test_shard_scan),
        cmocka_unit_test(test_shard_scan_corrupt),
        cmocka_unit_test(test_shard_map_refresh),
        cmocka_unit_test(test_shard_map_api),
        cmocka_unit_test(test_shard_fallback),
        cmocka_unit_test(test_shard_moves),
        cmocka_unit_test(test_backup_parts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

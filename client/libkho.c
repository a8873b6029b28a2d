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
 *
 * Data requests are routed by shard. The client caches the shard map of up
 * to KHO_SHARD_MAPS_MAX registries (struct map: per shard its group, its
 * replicas' node ids and the leader's, when known) and the client URL of
 * every node a map named (struct node_url, by id, so that a map never
 * holds an index into the endpoint table, whose learned slots get reused).
 * A request goes to its shard's leader, else to one of its replicas (in
 * turn), else the old way; a hint moves the shard's leader. Signals that a
 * map is out of date (an unreachable node, NOT_LEADER without a hint, a
 * hint to a node the map does not name, an answer with another shard
 * count) mark it stale, and a stale map is fetched again at most every
 * KHO_SHARD_MAP_REFRESH_MS, in the middle of a call if need be. A node that
 * does not know OP_SHARD_MAP ("unknown operation", or an answer without a
 * map) turns routing off for KHO_SHARD_MAP_RETRY_MS: requests go the old
 * way, which every node still serves by redirecting.
 *
 * Everything a caller passes is checked before a byte is sent, and
 * everything an answer carries is checked before it is handed back: the
 * server is another program, and a bug there must surface as KHO_ECORRUPT,
 * not as a crash or a silently wrong result here.
 */
#include "kho.h"
#include "kho_shard.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "proto/api.pb-c.h"

#define CLIENT_TRY_MS 800u
#define CLIENT_STATUS_TRY_MS 2000u
#define CLIENT_BACKOFF_MS 30u
#define CLIENT_TIMEOUT_DEFAULT_MS 5000u
/* A scan page is cut at about 4 MiB of keys and values by the server; the
 * rest is framing and metadata, far below the other 4 MiB. */
#define CLIENT_RESPONSE_BYTES_MAX (8u << 20)
/* The largest request: a transaction at KHO_TXN_BYTES_MAX plus the framing
 * of its KHO_TXN_CMPS_MAX + KHO_TXN_OPS_MAX items and names. */
#define CLIENT_REQUEST_BYTES_MAX (KHO_TXN_BYTES_MAX + (64u << 10))
#define CLIENT_ERRMSG_BYTES 256u
/* Node URLs learned from NOT_LEADER hints and shard maps that were not
 * among the endpoints given at open (a client may be given one node
 * only): enough for a cluster of 64 nodes. When full, the least recently
 * used learned one is replaced (and its connection closed). */
#define CLIENT_LEARNED_MAX 64u
#define CLIENT_URLS_MAX (KHO_ENDPOINTS_MAX + CLIENT_LEARNED_MAX)
#define CLIENT_HOST_BYTES 256u
/* Nodes whose client URL a shard map gave (by node id); when full, the
 * least recently used is forgotten. */
#define CLIENT_NODES_MAX KHO_NODES_MAX
/* Endpoints one routing refresh of a map asks (each may take a try's
 * wait when down), so that a refresh leaves the request most of its
 * time; kho_shard_map() itself asks until its deadline. */
#define CLIENT_MAP_ASKS_MAX 3u
/* A node that did not answer a try is passed over by routing this long
 * (unless a hint names it), longer than KHO_SHARD_MAP_REFRESH_MS so that a
 * map fetched meanwhile, still naming it the leader, does not send the
 * next try back to it. */
#define CLIENT_NODE_DOWN_MS 2000u
/* The most bytes of keys and values one page of a scan over several shards
 * keeps (the server's own page bound), beyond the first record. */
#define CLIENT_SCAN_PAGE_BYTES_MAX (4u << 20)
/* Times one scan page starts over when the registry's shard count differs
 * from the cached map's. */
#define CLIENT_SCAN_RESTARTS_MAX 2u

_Static_assert(KHO_KEY_BYTES_MAX + KHO_VALUE_BYTES_MAX <= KHO_TXN_BYTES_MAX,
               "a transaction can carry what a single put can");
_Static_assert(KHO_VALUE_BYTES_MAX + (64u << 10) <= CLIENT_RESPONSE_BYTES_MAX,
               "a get answer with a maximal value fits");
_Static_assert(KHO_SCAN_LIMIT_MAX <= UINT32_MAX, "limit is a uint32");
_Static_assert(KHO_SCAN_LIMIT_DEFAULT <= KHO_SCAN_LIMIT_MAX,
               "the default page fits the limit");
_Static_assert(KHO_KEY_BYTES_MAX <= KHO_TOKEN_BYTES_MAX,
               "a key serves as the token of a scan over several shards");
_Static_assert(CLIENT_SCAN_PAGE_BYTES_MAX + KHO_KEY_BYTES_MAX +
                       KHO_VALUE_BYTES_MAX <=
                   CLIENT_RESPONSE_BYTES_MAX,
               "a merged page is no larger than one answer may be");
_Static_assert(KHO_SHARDS_MAX <= UINT32_MAX, "a shard is a uint32");
_Static_assert(CLIENT_NODE_DOWN_MS > KHO_SHARD_MAP_REFRESH_MS,
               "a node found down outlives the next map fetch");

/* A node a shard map named, and its client URL. */
struct node_url {
    uint64_t id; /* 0: a free slot */
    uint64_t used;
    uint64_t down_until_ms; /* did not answer: passed over until then */
    char url[KHO_URL_BYTES_MAX];
};

/* Where the requests of one shard go. */
struct route {
    uint64_t group_id;
    uint64_t leader; /* node id; 0: unknown */
    uint32_t n_replicas;
    uint32_t next; /* the replica to try while the leader is unknown */
    uint64_t replicas[KHO_REPLICAS_MAX]; /* node ids */
};

/* The cached shard map of one registry. */
struct map {
    char registry[KHO_NAME_BYTES_MAX + 1]; /* "": a free slot */
    uint32_t shards;     /* 0: no map, the registry's requests go the old
                            way */
    bool stale;          /* fetch it again when the rate allows */
    uint64_t fetched_ms; /* the last fetch tried; 0: never */
    uint64_t used;
    uint64_t revision;
    struct route *routes; /* [shards], malloc'd */
};

struct kho_client {
    pthread_mutex_t mu;
    /* [0, n_given): the endpoints given at open; [n_given, n): learned. */
    char urls[CLIENT_URLS_MAX][KHO_URL_BYTES_MAX];
    nng_socket socks[CLIENT_URLS_MAX];
    bool open[CLIENT_URLS_MAX];
    uint64_t used[CLIENT_URLS_MAX]; /* tick of the last use */
    size_t n_given, n;
    size_t cur;    /* the endpoint believed to lead (requests not routed by
                      shard) */
    uint64_t tick; /* a clock of uses, for least-recently-used choices */
    uint64_t session;
    uint64_t seq;
    uint32_t timeout_ms;
    char name[KHO_NAME_BYTES_MAX + 1];
    char errmsg[CLIENT_ERRMSG_BYTES];
    struct node_url nodes[CLIENT_NODES_MAX];
    struct map maps[KHO_SHARD_MAPS_MAX];
    /* A node did not know shard maps: requests go the old way until then. */
    uint64_t maps_off_until_ms;
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

/* Leaves a message for kho_client_errmsg() and returns err. */
__attribute__((format(printf, 3, 4))) static int
fail(struct kho_client *c, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
    va_end(ap);
    return err;
}

/* --- Names: UTF-8, bounded ------------------------------------------------ */

/* Length of the well-formed UTF-8 sequence at s[0..n), or 0 if there is
 * none (overlong forms, surrogates and code points over U+10FFFF are not
 * well-formed: RFC 3629). */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char b = s[0];
    if (b < 0x80) {
        return 1;
    }
    size_t len = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc2 ? 2 : 0;
    if (len == 0 || b > 0xf4 || len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
    }
    bool bad = (b == 0xe0 && s[1] < 0xa0) || (b == 0xed && s[1] >= 0xa0) ||
               (b == 0xf0 && s[1] < 0x90) || (b == 0xf4 && s[1] >= 0x90);
    return bad ? 0 : len;
}

static bool utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq(u + i, n - i);
        if (len == 0) {
            return false;
        }
        i += len;
    }
    return true;
}

/* Copies src into dst (KHO_NAME_BYTES_MAX + 1 bytes) as valid UTF-8: bytes
 * that are not are replaced by '?', and the copy is cut at a character
 * boundary so it fits. */
static void name_copy_lossy(char dst[KHO_NAME_BYTES_MAX + 1], const char *src)
{
    const unsigned char *u = (const unsigned char *)src;
    size_t n = strlen(src);
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq(u + i, n - i);
        size_t take = len > 0 ? len : 1;
        if (o + take > KHO_NAME_BYTES_MAX) {
            break;
        }
        if (len == 0) {
            dst[o] = '?';
        } else {
            memcpy(dst + o, src + i, len);
        }
        o += take;
        i += take;
    }
    dst[o] = '\0';
}

/* A registry or client name: 1..KHO_NAME_BYTES_MAX bytes of UTF-8. */
static int check_name(const char *name)
{
    if (name == NULL) {
        return KHO_EINVAL;
    }
    size_t n = strnlen(name, KHO_NAME_BYTES_MAX + 1);
    if (n == 0 || n > KHO_NAME_BYTES_MAX || !utf8_valid(name, n)) {
        return KHO_EINVAL;
    }
    return KHO_OK;
}

/* "user@host" for a client that was not given a name. */
static void default_name(char dst[KHO_NAME_BYTES_MAX + 1])
{
    const char *env = getenv("KHO_CLIENT_NAME");
    if (env != NULL && env[0] != '\0') {
        name_copy_lossy(dst, env);
        return;
    }
    char buf[KHO_NAME_BYTES_MAX + 1 + CLIENT_HOST_BYTES + 1];
    char host[CLIENT_HOST_BYTES];
    if (gethostname(host, sizeof(host)) != 0) {
        snprintf(host, sizeof(host), "unknown");
    }
    host[sizeof(host) - 1] = '\0';
    const char *user = getenv("USER");
    struct passwd pw, *pwp = NULL;
    char pwbuf[1024];
    if (getpwuid_r(geteuid(), &pw, pwbuf, sizeof(pwbuf), &pwp) == 0 &&
        pwp != NULL && pw.pw_name != NULL && pw.pw_name[0] != '\0') {
        user = pw.pw_name;
    }
    snprintf(buf, sizeof(buf), "%.*s@%s", (int)KHO_NAME_BYTES_MAX,
             user != NULL && user[0] != '\0' ? user : "unknown", host);
    name_copy_lossy(dst, buf);
}

/* --- Opening and closing ----------------------------------------------------
 */

int kho_client_open(const char *endpoints, uint32_t timeout_ms,
                    struct kho_client **out)
{
    if (endpoints == NULL || out == NULL) {
        return KHO_EINVAL;
    }
    *out = NULL;
    struct kho_client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return KHO_ENOMEM;
    }
    const char *p = endpoints;
    while (*p != '\0') {
        size_t len = strcspn(p, ",");
        if (len > 0) {
            if (c->n >= KHO_ENDPOINTS_MAX || len >= KHO_URL_BYTES_MAX) {
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
    c->n_given = c->n;
    if (getrandom(&c->session, sizeof(c->session), 0) !=
            (ssize_t)sizeof(c->session) ||
        c->session == 0) {
        c->session = now_ms() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)c;
    }
    c->timeout_ms = timeout_ms != 0 ? timeout_ms : CLIENT_TIMEOUT_DEFAULT_MS;
    default_name(c->name);
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
    for (size_t i = 0; i < KHO_SHARD_MAPS_MAX; i++) {
        free(c->maps[i].routes);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

int kho_client_set_name(struct kho_client *c, const char *name)
{
    if (c == NULL || check_name(name) != KHO_OK) {
        return KHO_EINVAL;
    }
    pthread_mutex_lock(&c->mu);
    snprintf(c->name, sizeof(c->name), "%s", name);
    pthread_mutex_unlock(&c->mu);
    return KHO_OK;
}

size_t kho_client_endpoints(const struct kho_client *c)
{
    return c->n_given;
}

const char *kho_client_endpoint(const struct kho_client *c, size_t i)
{
    return i < c->n_given ? c->urls[i] : NULL;
}

const char *kho_client_errmsg(struct kho_client *c)
{
    return c->errmsg;
}

/* --- One exchange, and a call with retries -------------------------------- */

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
        return rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP ? KHO_EINVAL : KHO_EIO;
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
    c->used[i] = ++c->tick;
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

/* The endpoint of a URL (a hint, a map's node): a known one, or a new
 * learned one (replacing the least recently used learned one when all
 * slots are taken). c->n when the URL is unusable. O(CLIENT_URLS_MAX)
 * string compares, small next to the exchange that follows. */
static size_t endpoint_of(struct kho_client *c, const char *url)
{
    if (url == NULL || url[0] == '\0' ||
        strnlen(url, KHO_URL_BYTES_MAX) >= KHO_URL_BYTES_MAX) {
        return c->n;
    }
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->urls[i], url) == 0) {
            return i;
        }
    }
    size_t i = c->n;
    if (c->n < c->n_given + CLIENT_LEARNED_MAX) {
        c->n++;
    } else {
        i = c->n_given;
        for (size_t k = c->n_given + 1; k < c->n; k++) {
            i = c->used[k] < c->used[i] ? k : i;
        }
        if (c->open[i]) {
            nng_close(c->socks[i]);
            c->open[i] = false;
        }
    }
    snprintf(c->urls[i], sizeof(c->urls[i]), "%s", url);
    c->used[i] = ++c->tick; /* not the next one replaced */
    return i;
}

static void response_free(Kho__Api__Response *rs)
{
    if (rs != NULL) {
        kho__api__response__free_unpacked(rs, NULL);
    }
}

/* A string field of an answer: NUL-terminated by protobuf-c, at most max
 * bytes. NULL (absent) reads as "". */
static bool str_ok(const char *s, size_t max)
{
    return s == NULL || strnlen(s, max + 1) <= max;
}

/* --- Shard maps: where a request goes ---------------------------------------
 */

static struct node_url *node_of(struct kho_client *c, uint64_t id)
{
    for (size_t i = 0; id != 0 && i < CLIENT_NODES_MAX; i++) {
        if (c->nodes[i].id == id) {
            return &c->nodes[i];
        }
    }
    return NULL;
}

/* The URL of node id, or NULL when no map named it or it was found down
 * lately. */
static const char *node_url_of(struct kho_client *c, uint64_t id)
{
    struct node_url *n = node_of(c, id);
    if (n == NULL || now_ms() < n->down_until_ms) {
        return NULL;
    }
    n->used = ++c->tick;
    return n->url;
}

/* The id of the node at url, or 0 when no map named it. */
static uint64_t node_id_of(const struct kho_client *c, const char *url)
{
    for (size_t i = 0; url != NULL && i < CLIENT_NODES_MAX; i++) {
        if (c->nodes[i].id != 0 && strcmp(c->nodes[i].url, url) == 0) {
            return c->nodes[i].id;
        }
    }
    return 0;
}

/* Records that node id serves clients at url (a checked, non-empty URL). */
static void node_learn(struct kho_client *c, uint64_t id, const char *url)
{
    size_t at = 0;
    for (size_t i = 0; i < CLIENT_NODES_MAX; i++) {
        if (c->nodes[i].id == id) {
            at = i;
            break;
        }
        at = c->nodes[i].used < c->nodes[at].used ? i : at;
    }
    struct node_url *n = &c->nodes[at];
    if (n->id != id || strcmp(n->url, url) != 0) {
        n->down_until_ms = 0; /* another node, or it moved */
    }
    n->id = id;
    n->used = ++c->tick;
    snprintf(n->url, sizeof(n->url), "%s", url);
}

static bool route_has(const struct route *r, uint64_t id)
{
    for (uint32_t k = 0; k < r->n_replicas; k++) {
        if (r->replicas[k] == id) {
            return true;
        }
    }
    return false;
}

/* Forgets m's map (not its name): its requests go the old way. */
static void map_clear(struct map *m)
{
    free(m->routes);
    m->routes = NULL;
    m->shards = 0;
    m->stale = false;
}

static struct map *map_find(struct kho_client *c, const char *registry)
{
    for (size_t i = 0; i < KHO_SHARD_MAPS_MAX; i++) {
        if (c->maps[i].registry[0] != '\0' &&
            strcmp(c->maps[i].registry, registry) == 0) {
            return &c->maps[i];
        }
    }
    return NULL;
}

/* The cache entry of registry: its own, else a free one or the least
 * recently used one, emptied. Never NULL. */
static struct map *map_slot(struct kho_client *c, const char *registry)
{
    struct map *m = map_find(c, registry);
    if (m == NULL) {
        m = &c->maps[0];
        for (size_t i = 1; i < KHO_SHARD_MAPS_MAX; i++) {
            m = c->maps[i].used < m->used ? &c->maps[i] : m;
        }
        map_clear(m);
        snprintf(m->registry, sizeof(m->registry), "%s", registry);
        m->fetched_ms = 0;
    }
    m->used = ++c->tick;
    return m;
}

/* Drops the cached map of registry (it was just created: a failed fetch of
 * it must not delay its first map). */
static void map_drop(struct kho_client *c, const char *registry)
{
    struct map *m = map_find(c, registry);
    if (m != NULL) {
        map_clear(m);
        m->registry[0] = '\0';
        m->used = 0;
    }
}

static void maps_stale_all(struct kho_client *c)
{
    for (size_t i = 0; i < KHO_SHARD_MAPS_MAX; i++) {
        c->maps[i].stale = true;
    }
}

/* Checks a ShardMap answer for registry: every shard once, every field
 * within its limit. */
static int map_check(struct kho_client *c, const char *registry,
                     const Kho__Api__ShardMap *sm)
{
    if (sm->registry == NULL || strcmp(sm->registry, registry) != 0) {
        return fail(c, KHO_ECORRUPT, "shard map answer for another registry");
    }
    if (sm->shards == 0 || sm->shards > KHO_SHARDS_MAX ||
        sm->n_shard_list != sm->shards || sm->n_nodes > KHO_NODES_MAX ||
        !str_ok(sm->home, KHO_NAME_BYTES_MAX)) {
        return fail(c, KHO_ECORRUPT,
                    "shard map of '%s': %u shards, %zu described, %zu nodes",
                    registry, sm->shards, sm->n_shard_list, sm->n_nodes);
    }
    bool seen[KHO_SHARDS_MAX] = {false};
    for (size_t i = 0; i < sm->n_shard_list; i++) {
        const Kho__Api__ShardInfo *si = sm->shard_list[i];
        if (si->shard >= sm->shards || seen[si->shard] ||
            si->n_replicas > KHO_REPLICAS_MAX ||
            !str_ok(si->leader_url, KHO_URL_BYTES_MAX - 1)) {
            return fail(c, KHO_ECORRUPT,
                        "shard map of '%s' describes shard %u twice, out "
                        "of range or over a limit",
                        registry, si->shard);
        }
        seen[si->shard] = true;
    }
    for (size_t i = 0; i < sm->n_nodes; i++) {
        const Kho__Api__NodeInfo *n = sm->nodes[i];
        if (!str_ok(n->name, KHO_NAME_BYTES_MAX) ||
            !str_ok(n->client_url, KHO_URL_BYTES_MAX - 1) ||
            !str_ok(n->peer_url, KHO_URL_BYTES_MAX - 1) ||
            !str_ok(n->state, KHO_NAME_BYTES_MAX)) {
            return fail(c, KHO_ECORRUPT,
                        "shard map of '%s' has a node name or URL over its "
                        "limit",
                        registry);
        }
    }
    return KHO_OK;
}

/* Takes a checked map into m and its nodes' URLs into the node table. A
 * leader the client knew (from a hint) outlives a map from a node that
 * does not know it. */
static int map_install(struct kho_client *c, struct map *m,
                       const Kho__Api__ShardMap *sm)
{
    struct route *r = calloc(sm->shards, sizeof(*r));
    if (r == NULL) {
        return KHO_ENOMEM;
    }
    for (size_t i = 0; i < sm->n_nodes; i++) {
        const Kho__Api__NodeInfo *n = sm->nodes[i];
        bool removed = n->state != NULL && strcmp(n->state, "removed") == 0;
        if (n->id != 0 && n->client_url != NULL && n->client_url[0] != '\0' &&
            !removed) {
            node_learn(c, n->id, n->client_url);
        }
    }
    for (size_t i = 0; i < sm->n_shard_list; i++) {
        const Kho__Api__ShardInfo *si = sm->shard_list[i];
        struct route *t = &r[si->shard];
        t->group_id = si->group_id;
        t->n_replicas = (uint32_t)si->n_replicas;
        memcpy(t->replicas, si->replicas, si->n_replicas * sizeof(uint64_t));
        t->leader = si->leader;
        if (si->leader != 0 && si->leader_url != NULL &&
            si->leader_url[0] != '\0') {
            node_learn(c, si->leader, si->leader_url);
        }
        const struct route *was =
            m->shards == sm->shards ? &m->routes[si->shard] : NULL;
        if (t->leader == 0 && was != NULL && was->group_id == t->group_id &&
            route_has(t, was->leader)) {
            t->leader = was->leader;
        }
    }
    free(m->routes);
    m->routes = r;
    m->shards = sm->shards;
    m->revision = sm->revision;
    m->stale = false;
    return KHO_OK;
}

/* A node that predates sharding: it calls OP_SHARD_MAP an unknown
 * operation, or answers it without a map. */
static bool map_unknown_op(const Kho__Api__Response *rs)
{
    if (rs->err == KHO_OK) {
        return rs->shard_map == NULL;
    }
    return rs->err == KHO_EINVAL && rs->message != NULL &&
           strstr(rs->message, "unknown operation") != NULL;
}

/* What one answer to OP_SHARD_MAP says: KHO_OK (a checked map), KHO_EINVAL
 * for a node that predates sharding (routing is then off for a while), or
 * the node's error. */
static int map_answer(struct kho_client *c, const char *registry,
                      const char *url, const Kho__Api__Response *rs)
{
    if (map_unknown_op(rs)) {
        c->maps_off_until_ms = now_ms() + KHO_SHARD_MAP_RETRY_MS;
        return fail(c, KHO_EINVAL,
                    "%s does not know shard maps (it predates "
                    "sharding)",
                    url);
    }
    if (rs->err == KHO_OK) {
        return map_check(c, registry, rs->shard_map);
    }
    if (rs->message != NULL) {
        snprintf(c->errmsg, sizeof(c->errmsg), "%s", rs->message);
    }
    return (int)rs->err;
}

/*
 * Asks the endpoints in turn, from the current one, for the shard map of
 * registry: at most `asks` tries, or until the deadline. KHO_OK with *out
 * (free it) holding a checked map; KHO_EINVAL when the node predates
 * sharding; the error a node gave; else KHO_EUNAVAILABLE (no answer) or
 * the last passing trouble (KHO_ENOTLEADER, KHO_EBUSY, KHO_ECORRUPT ...).
 * The caller holds c->mu.
 */
static int map_ask(struct kho_client *c, const char *registry,
                   uint64_t deadline, size_t asks, Kho__Api__Response **out)
{
    *out = NULL;
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_SHARD_MAP;
    q.registry = (char *)registry;
    q.client_name = c->name;
    uint8_t buf[4 * KHO_NAME_BYTES_MAX];
    _Static_assert(sizeof(buf) >= 2 * KHO_NAME_BYTES_MAX + 16,
                   "a map request is two names and their framing");
    size_t len = kho__api__request__pack(&q, buf);
    int last = KHO_EUNAVAILABLE;
    c->errmsg[0] = '\0';
    size_t hinted = c->n; /* a node that does not know the registry yet
                             names the meta leader, which does */
    for (size_t k = 0; k < asks; k++) {
        uint64_t now = now_ms();
        if (now >= deadline) {
            break;
        }
        if (k > 0 && k % c->n == 0) {
            sleep_ms(CLIENT_BACKOFF_MS); /* every node tried: a pause */
        }
        size_t i = hinted < c->n ? hinted : (c->cur + k) % c->n;
        hinted = c->n;
        uint64_t left = deadline - now;
        uint32_t wait = left < CLIENT_TRY_MS ? (uint32_t)left : CLIENT_TRY_MS;
        Kho__Api__Response *rs = NULL;
        if (exchange(c, i, buf, len, wait, &rs) != KHO_OK) {
            continue;
        }
        int err = map_answer(c, registry, c->urls[i], rs);
        if (err == KHO_OK) {
            *out = rs;
            return KHO_OK;
        }
        if (err == KHO_ENOTLEADER) {
            hinted = endpoint_of(c, rs->leader_hint);
            hinted = hinted != i ? hinted : c->n;
        }
        response_free(rs);
        if (err != KHO_ENOTLEADER && err != KHO_EUNAVAILABLE &&
            err != KHO_EBUSY && err != KHO_ETIMEOUT && err != KHO_ECORRUPT) {
            return err;
        }
        last = err;
    }
    if (last == KHO_EUNAVAILABLE && c->errmsg[0] == '\0') {
        fail(c, last, "no node answered for the shard map of '%s'", registry);
    }
    return last;
}

/* Fetches m's map again. No answer keeps the old one; a cluster that
 * predates sharding, or does not know the registry, clears it. The caller
 * holds c->mu. */
static void map_refresh(struct kho_client *c, struct map *m, uint64_t deadline)
{
    m->fetched_ms = now_ms();
    Kho__Api__Response *rs = NULL;
    int err = map_ask(c, m->registry, deadline, CLIENT_MAP_ASKS_MAX, &rs);
    if (err == KHO_OK && map_install(c, m, rs->shard_map) != KHO_OK) {
        m->stale = true; /* out of memory: keep the old one */
    } else if (err == KHO_EINVAL || err == KHO_ENOTFOUND) {
        map_clear(m);
    }
    response_free(rs);
}

/* May m be fetched now? A missing or stale map, at most every
 * KHO_SHARD_MAP_REFRESH_MS, and not while routing is off. */
static bool map_due(const struct kho_client *c, const struct map *m,
                    uint64_t now)
{
    return now >= c->maps_off_until_ms && (m->shards == 0 || m->stale) &&
           (m->fetched_ms == 0 ||
            now - m->fetched_ms >= KHO_SHARD_MAP_REFRESH_MS);
}

/* The map requests of registry are routed by, fetched first when due; NULL
 * when they go the old way. The caller holds c->mu. */
static struct map *map_for(struct kho_client *c, const char *registry,
                           uint64_t deadline)
{
    struct map *m = map_slot(c, registry);
    if (map_due(c, m, now_ms())) {
        map_refresh(c, m, deadline);
    }
    return m->shards > 0 ? m : NULL;
}

/* An answer's shard count (0: a node that does not say): one that differs
 * from the cached map's makes the map stale, and any turns routing back on
 * (some node knows sharding). */
static void map_note(struct kho_client *c, const char *registry,
                     uint32_t shards)
{
    if (shards == 0) {
        return;
    }
    c->maps_off_until_ms = 0;
    struct map *m = map_find(c, registry);
    if (m != NULL && m->shards != shards) {
        m->stale = true;
    }
}

/* The endpoint for shard s of m: its leader's, else a replica's (in turn),
 * else the current one. */
static size_t route_target(struct kho_client *c, struct map *m, uint32_t s)
{
    struct route *r = &m->routes[s];
    const char *url = r->leader != 0 ? node_url_of(c, r->leader) : NULL;
    for (uint32_t k = 0; url == NULL && k < r->n_replicas; k++) {
        uint32_t j = (r->next + k) % r->n_replicas;
        url = node_url_of(c, r->replicas[j]);
        r->next = j;
    }
    size_t i = endpoint_of(c, url);
    return i < c->n ? i : c->cur;
}

/* The try of shard s at endpoint `at` failed (no answer - `down` -, no
 * quorum, or NOT_LEADER without a hint): the next goes elsewhere, and the
 * map is due for a refresh. */
static void route_failed(struct kho_client *c, struct map *m, uint32_t s,
                         size_t at, bool down)
{
    struct route *r = &m->routes[s];
    uint64_t id = node_id_of(c, c->urls[at]);
    struct node_url *n = node_of(c, id);
    if (down && n != NULL) {
        n->down_until_ms = now_ms() + CLIENT_NODE_DOWN_MS;
    }
    bool mine = false;
    if (id != 0 && id == r->leader) {
        r->leader = 0;
        mine = true;
    }
    if (r->n_replicas > 0 && id != 0 && r->replicas[r->next] == id) {
        r->next = (r->next + 1) % r->n_replicas;
        mine = true;
    }
    if (!mine) {
        c->cur = (at + 1) % c->n; /* it went the old way */
    }
    m->stale = true;
}

/* A NOT_LEADER hint for shard s: the shard's leader from now on. A URL
 * the map does not name (a node added since) makes the map stale. */
static void route_hint(struct kho_client *c, struct map *m, uint32_t s,
                       const char *url)
{
    struct route *r = &m->routes[s];
    r->leader = node_id_of(c, url);
    struct node_url *n = node_of(c, r->leader);
    if (n != NULL) {
        n->down_until_ms = 0; /* a node that answers vouches for it */
    }
    if (r->leader == 0 || !route_has(r, r->leader)) {
        m->stale = true;
    }
}

/* --- One call with retries -------------------------------------------------
 */

/*
 * Sends q until a final answer or the deadline: to shard `shard` of map m,
 * or, when m is NULL, the old way (the current endpoint, following hints).
 * Returns the response's err (with *out set, freed by the caller) or a
 * local error (*out NULL): KHO_ETIMEOUT, KHO_ETOOLARGE, KHO_ENOMEM,
 * KHO_EINVAL (a bad URL). A map refreshed meanwhile to another shard count
 * sends the rest of the call the old way. The caller holds c->mu.
 */
static int call_routed(struct kho_client *c, const Kho__Api__Request *q,
                       struct map *m, uint32_t shard, uint64_t deadline,
                       Kho__Api__Response **out)
{
    *out = NULL;
    c->errmsg[0] = '\0';
    size_t len = kho__api__request__get_packed_size(q);
    if (len > CLIENT_REQUEST_BYTES_MAX) {
        return fail(c, KHO_ETOOLARGE, "request of %zu bytes is over %u", len,
                    CLIENT_REQUEST_BYTES_MAX);
    }
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        return KHO_ENOMEM;
    }
    kho__api__request__pack(q, buf);
    uint32_t shards = m != NULL ? m->shards : 0;
    size_t hinted = c->n; /* a hint's endpoint, for the next try */
    for (;;) {
        uint64_t now = now_ms();
        if (now >= deadline) {
            break;
        }
        if (m != NULL && m->shards != shards) {
            m = NULL;
        }
        if (m != NULL && m->stale && map_due(c, m, now)) {
            map_refresh(c, m, deadline);
            continue;
        }
        uint64_t left = deadline - now;
        uint32_t wait = left < CLIENT_TRY_MS ? (uint32_t)left : CLIENT_TRY_MS;
        size_t at = hinted < c->n ? hinted
                    : m != NULL   ? route_target(c, m, shard)
                                  : c->cur;
        hinted = c->n;
        Kho__Api__Response *rs = NULL;
        int rc = exchange(c, at, buf, len, wait, &rs);
        if (rc == KHO_EINVAL) {
            free(buf); /* a URL NNG cannot use: retrying will not help */
            return rc;
        }
        if (rc != KHO_OK) {
            if (m != NULL) {
                route_failed(c, m, shard, at, true); /* unreachable */
            } else {
                c->cur = (at + 1) % c->n;
            }
            continue;
        }
        int err = (int)rs->err;
        if (err == KHO_ENOTLEADER) {
            size_t next = endpoint_of(c, rs->leader_hint);
            bool moved = next < c->n && next != at;
            if (m != NULL && next < c->n) {
                route_hint(c, m, shard, rs->leader_hint);
                hinted = next;
            } else if (m != NULL) {
                route_failed(c, m, shard, at, false);
            } else {
                c->cur = next < c->n ? next : (at + 1) % c->n;
            }
            kho__api__response__free_unpacked(rs, NULL);
            if (!moved) {
                sleep_ms(CLIENT_BACKOFF_MS); /* an election is running */
            }
            continue;
        }
        if (err == KHO_EUNAVAILABLE || err == KHO_EBUSY ||
            err == KHO_ETIMEOUT) {
            if (rs->message != NULL && rs->message[0] != '\0') {
                snprintf(c->errmsg, sizeof(c->errmsg), "%s", rs->message);
            }
            kho__api__response__free_unpacked(rs, NULL);
            if (err == KHO_EUNAVAILABLE && m != NULL) {
                route_failed(c, m, shard, at, false);
            } else if (err == KHO_EUNAVAILABLE) {
                c->cur = (at + 1) % c->n;
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
    /* Whatever the last try said, the deadline passed without a final
     * answer: for a write the outcome is unknown. */
    char why[CLIENT_ERRMSG_BYTES];
    snprintf(why, sizeof(why), "%s", c->errmsg);
    return fail(c, KHO_ETIMEOUT, "no final answer within %u ms%s%s",
                c->timeout_ms, why[0] != '\0' ? "; last: " : "", why);
}

/* call_routed() the old way, within the client's timeout. */
static int call(struct kho_client *c, const Kho__Api__Request *q,
                Kho__Api__Response **out)
{
    return call_routed(c, q, NULL, 0, now_ms() + c->timeout_ms, out);
}

/* Stamps q as a request of this client: its name and, for a write, the
 * session and the next seq (the same on every retry). */
static void stamp(struct kho_client *c, Kho__Api__Request *q, bool mutating)
{
    q->client_name = c->name;
    if (mutating) {
        q->session = c->session;
        q->seq = ++c->seq;
    }
}

/* A data request to shard `shard` of m (NULL: the old way), stamped; its
 * answer's shard count is noted. The caller holds c->mu. */
static int call_data(struct kho_client *c, Kho__Api__Request *q, bool mutating,
                     struct map *m, uint32_t shard, uint64_t deadline,
                     Kho__Api__Response **out)
{
    stamp(c, q, mutating);
    int err = call_routed(c, q, m, shard, deadline, out);
    if (*out != NULL) {
        map_note(c, q->registry, (*out)->shards);
    }
    return err;
}

/* A data request about q->key, to the leader of the key's shard. The
 * caller holds c->mu. */
static int call_key(struct kho_client *c, Kho__Api__Request *q, bool mutating,
                    Kho__Api__Response **out)
{
    uint64_t deadline = now_ms() + c->timeout_ms;
    struct map *m = map_for(c, q->registry, deadline);
    uint32_t s =
        m != NULL ? kho_shard_of(q->key.data, q->key.len, m->shards) : 0;
    return call_data(c, q, mutating, m, s, deadline, out);
}

/* call() for a request of this client (see stamp()). The caller holds
 * c->mu. */
static int call_as(struct kho_client *c, Kho__Api__Request *q, bool mutating,
                   Kho__Api__Response **out)
{
    stamp(c, q, mutating);
    return call(c, q, out);
}

/* --- Checks of arguments and answers -------------------------------------- */

/*
 * Argument checks. Each sets *why to a static sentence for
 * kho_client_errmsg() when it refuses.
 */

/* Leaves why as the client's message and returns rc. c may be NULL. */
static int refuse(struct kho_client *c, int rc, const char *why)
{
    if (c != NULL) {
        pthread_mutex_lock(&c->mu);
        snprintf(c->errmsg, sizeof(c->errmsg), "%s", why);
        pthread_mutex_unlock(&c->mu);
    }
    return rc;
}

static int check_key(const void *key, size_t key_len, const char **why)
{
    if (key == NULL || key_len == 0) {
        *why = "empty or NULL key";
        return KHO_EINVAL;
    }
    if (key_len > KHO_KEY_BYTES_MAX) {
        *why = "key over KHO_KEY_BYTES_MAX (1024 bytes)";
        return KHO_ETOOLARGE;
    }
    return KHO_OK;
}

static int check_value(const void *value, size_t len, const char **why)
{
    if (value == NULL && len > 0) {
        *why = "NULL value with a length";
        return KHO_EINVAL;
    }
    if (len > KHO_VALUE_BYTES_MAX) {
        *why = "value over KHO_VALUE_BYTES_MAX (1 MiB)";
        return KHO_ETOOLARGE;
    }
    return KHO_OK;
}

/* Bytes that may be empty: NULL only with length 0, at most max. */
static int check_bytes(const void *p, size_t len, size_t max, int too_large,
                       const char *what, const char **why)
{
    if (p == NULL && len > 0) {
        *why = "NULL pointer with a length";
        return KHO_EINVAL;
    }
    if (len > max) {
        *why = what;
        return too_large;
    }
    return KHO_OK;
}

static int check_registry(const char *registry, const char **why)
{
    if (check_name(registry) != KHO_OK) {
        *why = "registry name NULL, empty, over KHO_NAME_BYTES_MAX (64 "
               "bytes) or not UTF-8";
        return KHO_EINVAL;
    }
    return KHO_OK;
}

/* The key, registry and cond of a put or delete. */
static int check_write(const char *registry, const void *key, size_t key_len,
                       enum kho_cond cond, bool del, const char **why)
{
    int rc = check_key(key, key_len, why);
    if (rc == KHO_OK) {
        rc = check_registry(registry, why);
    }
    if (rc == KHO_OK && ((unsigned)cond > KHO_COND_IF_REVISION ||
                         (del && cond == KHO_COND_IF_ABSENT))) {
        *why = del ? "bad cond for a delete" : "bad cond";
        rc = KHO_EINVAL;
    }
    return rc;
}

static ProtobufCBinaryData bin(const void *p, size_t len)
{
    ProtobufCBinaryData b = {.len = len, .data = (uint8_t *)p};
    return b;
}

static int bytes_cmp(const void *a, size_t a_len, const void *b, size_t b_len)
{
    size_t n = a_len < b_len ? a_len : b_len;
    int d = n > 0 ? memcmp(a, b, n) : 0;
    if (d != 0) {
        return d;
    }
    return a_len < b_len ? -1 : a_len > b_len ? 1 : 0;
}

static void *dup_bytes(const ProtobufCBinaryData *b)
{
    void *p = malloc(b->len > 0 ? b->len : 1);
    if (p != NULL && b->len > 0) {
        memcpy(p, b->data, b->len);
    }
    return p;
}

void kho_record_clear(struct kho_record *r)
{
    if (r == NULL) {
        return;
    }
    free(r->key);
    free(r->value);
    memset(r, 0, sizeof(*r));
}

void kho_records_free(struct kho_record *r, size_t n)
{
    if (r == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        kho_record_clear(&r[i]);
    }
    free(r);
}

/* Checks one record of an answer. */
static int record_check(struct kho_client *c, const Kho__Api__Record *r)
{
    if (r->key.len == 0 || r->key.len > KHO_KEY_BYTES_MAX) {
        return fail(c, KHO_ECORRUPT,
                    "answer has a record with a key of %zu "
                    "bytes",
                    r->key.len);
    }
    if (r->value.len > KHO_VALUE_BYTES_MAX) {
        return fail(c, KHO_ECORRUPT, "answer has a value of %zu bytes",
                    r->value.len);
    }
    if (!str_ok(r->writer, KHO_NAME_BYTES_MAX)) {
        return fail(c, KHO_ECORRUPT, "answer has a writer name over %u bytes",
                    KHO_NAME_BYTES_MAX);
    }
    return KHO_OK;
}

/* Copies a checked record into out (all of it or nothing). */
static int record_copy(const Kho__Api__Record *r, struct kho_record *out)
{
    memset(out, 0, sizeof(*out));
    out->key = dup_bytes(&r->key);
    out->value = dup_bytes(&r->value);
    if (out->key == NULL || out->value == NULL) {
        kho_record_clear(out);
        return KHO_ENOMEM;
    }
    out->key_len = r->key.len;
    out->value_len = r->value.len;
    out->version = r->version;
    out->create_revision = r->create_revision;
    out->modify_revision = r->modify_revision;
    out->time_ms = r->time_ms;
    snprintf(out->writer, sizeof(out->writer), "%s",
             r->writer != NULL ? r->writer : "");
    out->deleted = r->deleted ? 1 : 0;
    return KHO_OK;
}

/* --- put, get, del -----------------------------------------------------------
 */

static int mutate(struct kho_client *c, Kho__Api__Request *q,
                  struct kho_record_meta *meta)
{
    pthread_mutex_lock(&c->mu);
    Kho__Api__Response *rs = NULL;
    int err = call_key(c, q, true, &rs);
    if (err == KHO_OK && meta != NULL) {
        meta->version = rs->version;
        meta->revision = rs->revision;
    }
    response_free(rs);
    pthread_mutex_unlock(&c->mu);
    return err;
}

int kho_put(struct kho_client *c, const char *registry, const void *key,
            size_t key_len, const void *value, size_t value_len,
            enum kho_cond cond, uint64_t expected_version,
            struct kho_record_meta *meta)
{
    const char *why = "";
    int rc = check_write(registry, key, key_len, cond, false, &why);
    if (rc == KHO_OK) {
        rc = check_value(value, value_len, &why);
    }
    if (c == NULL || rc != KHO_OK) {
        return refuse(c, c == NULL ? KHO_EINVAL : rc, why);
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_PUT;
    q.registry = (char *)registry;
    q.key = bin(key, key_len);
    q.value = bin(value, value_len);
    q.cond = (Kho__Api__Cond)cond;
    q.expected_version = expected_version;
    return mutate(c, &q, meta);
}

int kho_del(struct kho_client *c, const char *registry, const void *key,
            size_t key_len, enum kho_cond cond, uint64_t expected_version)
{
    const char *why = "";
    int rc = check_write(registry, key, key_len, cond, true, &why);
    if (c == NULL || rc != KHO_OK) {
        return refuse(c, c == NULL ? KHO_EINVAL : rc, why);
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_DELETE;
    q.registry = (char *)registry;
    q.key = bin(key, key_len);
    q.cond = (Kho__Api__Cond)cond;
    q.expected_version = expected_version;
    return mutate(c, &q, NULL);
}

/* The record of a get answer: Response.record, or, from a server that
 * predates it, value/version/revision. The record's key, if the server
 * sent one, must be the key asked for. */
static int get_answer(struct kho_client *c, const Kho__Api__Response *rs,
                      const void *key, size_t key_len, Kho__Api__Record *out)
{
    if (rs->record == NULL) {
        Kho__Api__Record r = KHO__API__RECORD__INIT;
        r.value = rs->value;
        r.version = rs->version;
        r.modify_revision = rs->revision;
        *out = r;
    } else {
        *out = *rs->record;
    }
    if (out->key.len != 0 &&
        bytes_cmp(out->key.data, out->key.len, key, key_len) != 0) {
        return fail(c, KHO_ECORRUPT, "get answer is for another key");
    }
    out->key = bin(key, key_len);
    return record_check(c, out);
}

/* Reads key; *rec describes it and points into *rs (free it). */
static int get_call(struct kho_client *c, const char *registry, const void *key,
                    size_t key_len, int serializable, Kho__Api__Response **rs,
                    Kho__Api__Record *rec)
{
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_GET;
    q.registry = (char *)registry;
    q.key = bin(key, key_len);
    q.serializable = serializable != 0;
    int err = call_key(c, &q, false, rs);
    if (err == KHO_OK) {
        err = get_answer(c, *rs, key, key_len, rec);
    }
    return err;
}

int kho_get(struct kho_client *c, const char *registry, const void *key,
            size_t key_len, int serializable, void **value, size_t *value_len,
            struct kho_record_meta *meta)
{
    if (value != NULL) {
        *value = NULL;
    }
    if (value_len != NULL) {
        *value_len = 0;
    }
    const char *why = "NULL output";
    int rc = check_key(key, key_len, &why);
    if (rc == KHO_OK) {
        rc = check_registry(registry, &why);
    }
    if (c == NULL || value == NULL || value_len == NULL || rc != KHO_OK) {
        return refuse(c, rc != KHO_OK ? rc : KHO_EINVAL, why);
    }
    pthread_mutex_lock(&c->mu);
    Kho__Api__Response *rs = NULL;
    Kho__Api__Record rec;
    int err = get_call(c, registry, key, key_len, serializable, &rs, &rec);
    if (err == KHO_OK) {
        *value = dup_bytes(&rec.value);
        err = *value != NULL ? KHO_OK : KHO_ENOMEM;
    }
    if (err == KHO_OK) {
        *value_len = rec.value.len;
        if (meta != NULL) {
            meta->version = rec.version;
            meta->revision = rec.modify_revision;
        }
    }
    response_free(rs);
    pthread_mutex_unlock(&c->mu);
    return err;
}

int kho_get_record(struct kho_client *c, const char *registry, const void *key,
                   size_t key_len, int serializable, struct kho_record *out)
{
    if (out != NULL) {
        memset(out, 0, sizeof(*out));
    }
    const char *why = "NULL output";
    int rc = check_key(key, key_len, &why);
    if (rc == KHO_OK) {
        rc = check_registry(registry, &why);
    }
    if (c == NULL || out == NULL || rc != KHO_OK) {
        return refuse(c, rc != KHO_OK ? rc : KHO_EINVAL, why);
    }
    pthread_mutex_lock(&c->mu);
    Kho__Api__Response *rs = NULL;
    Kho__Api__Record rec;
    int err = get_call(c, registry, key, key_len, serializable, &rs, &rec);
    if (err == KHO_OK) {
        err = record_copy(&rec, out);
    }
    response_free(rs);
    pthread_mutex_unlock(&c->mu);
    return err;
}

/* --- Transactions ------------------------------------------------------------
 */

/* Checks a transaction's compares; adds their bytes to *bytes. */
static int check_cmps(const struct kho_compare *cmps, size_t n, size_t *bytes,
                      const char **why)
{
    if (n > KHO_TXN_CMPS_MAX) {
        *why = "over KHO_TXN_CMPS_MAX (64) compares";
        return KHO_ETOOLARGE;
    }
    if (cmps == NULL && n > 0) {
        *why = "NULL compares with a count";
        return KHO_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        const struct kho_compare *k = &cmps[i];
        int rc = check_key(k->key, k->key_len, why);
        if (rc == KHO_OK) {
            rc = check_value(k->value, k->value_len, why);
        }
        if (rc != KHO_OK) {
            return rc;
        }
        if ((unsigned)k->target > KHO_CMP_VALUE ||
            (unsigned)k->op > KHO_CMP_GREATER ||
            (k->target != KHO_CMP_VALUE && k->value_len > 0)) {
            *why = "bad compare target or op, or a value for a number";
            return KHO_EINVAL;
        }
        *bytes += k->key_len + k->value_len;
    }
    return KHO_OK;
}

/* Checks a transaction's ops; adds their bytes to *bytes. Two ops on one
 * key are refused: which one wins would be an accident of order. This is
 * O(n^2) in the ops, at most KHO_TXN_OPS_MAX^2 / 2 key compares. */
static int check_ops(const struct kho_op *ops, size_t n, size_t *bytes,
                     const char **why)
{
    if (n > KHO_TXN_OPS_MAX) {
        *why = "over KHO_TXN_OPS_MAX (128) ops";
        return KHO_ETOOLARGE;
    }
    if (ops == NULL && n > 0) {
        *why = "NULL ops with a count";
        return KHO_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        const struct kho_op *o = &ops[i];
        int rc = check_key(o->key, o->key_len, why);
        if (rc == KHO_OK) {
            rc = check_value(o->value, o->value_len, why);
        }
        if (rc != KHO_OK) {
            return rc;
        }
        if (o->is_delete && o->value_len > 0) {
            *why = "a delete op with a value";
            return KHO_EINVAL;
        }
        for (size_t j = 0; j < i; j++) {
            if (bytes_cmp(o->key, o->key_len, ops[j].key, ops[j].key_len) ==
                0) {
                *why = "two ops on one key";
                return KHO_EINVAL;
            }
        }
        *bytes += o->key_len + o->value_len;
    }
    return KHO_OK;
}

static int check_txn(const char *registry, const struct kho_compare *cmps,
                     size_t n_cmps, const struct kho_op *ops, size_t n_ops,
                     const char **why)
{
    int rc = check_registry(registry, why);
    if (rc == KHO_OK && n_cmps == 0 && n_ops == 0) {
        *why = "no compare and no op";
        rc = KHO_EINVAL;
    }
    size_t bytes = 0;
    if (rc == KHO_OK) {
        rc = check_cmps(cmps, n_cmps, &bytes, why);
    }
    if (rc == KHO_OK) {
        rc = check_ops(ops, n_ops, &bytes, why);
    }
    if (rc == KHO_OK && bytes > KHO_TXN_BYTES_MAX) {
        *why = "keys and values over KHO_TXN_BYTES_MAX (4 MiB) together";
        rc = KHO_ETOOLARGE;
    }
    return rc;
}

/* The shard of every key of a transaction, in *shard; KHO_EINVAL, naming
 * two shards, when they differ. O(keys) hashes. */
static int txn_shard(struct kho_client *c, const char *registry,
                     uint32_t shards, const struct kho_compare *cmps,
                     size_t n_cmps, const struct kho_op *ops, size_t n_ops,
                     uint32_t *shard)
{
    for (size_t i = 0; i < n_cmps + n_ops; i++) {
        const void *key = i < n_cmps ? cmps[i].key : ops[i - n_cmps].key;
        size_t len = i < n_cmps ? cmps[i].key_len : ops[i - n_cmps].key_len;
        uint32_t s = kho_shard_of(key, len, shards);
        if (i > 0 && s != *shard) {
            return fail(c, KHO_EINVAL,
                        "transaction spans shards %u and %u of registry "
                        "'%s'; keep a transaction's keys in one shard",
                        s < *shard ? s : *shard, s < *shard ? *shard : s,
                        registry);
        }
        *shard = s;
    }
    return KHO_OK;
}

int kho_txn(struct kho_client *c, const char *registry,
            const struct kho_compare *cmps, size_t n_cmps,
            const struct kho_op *ops, size_t n_ops, uint64_t *revision,
            uint32_t *failed_compare)
{
    if (revision != NULL) {
        *revision = 0;
    }
    if (failed_compare != NULL) {
        *failed_compare = 0;
    }
    const char *why = "";
    int rc = check_txn(registry, cmps, n_cmps, ops, n_ops, &why);
    if (c == NULL || rc != KHO_OK) {
        return refuse(c, c == NULL ? KHO_EINVAL : rc, why);
    }
    /* Bounded by the checks above: about 15 KiB of stack. */
    Kho__Api__Compare cm[KHO_TXN_CMPS_MAX], *cmp_ptrs[KHO_TXN_CMPS_MAX];
    Kho__Api__TxnOp om[KHO_TXN_OPS_MAX], *op_ptrs[KHO_TXN_OPS_MAX];
    for (size_t i = 0; i < n_cmps; i++) {
        Kho__Api__Compare m = KHO__API__COMPARE__INIT;
        m.key = bin(cmps[i].key, cmps[i].key_len);
        m.target = (Kho__Api__CompareTarget)cmps[i].target;
        m.op = (Kho__Api__CompareOp)cmps[i].op;
        m.number = cmps[i].number;
        m.value = bin(cmps[i].value, cmps[i].value_len);
        cm[i] = m;
        cmp_ptrs[i] = &cm[i];
    }
    for (size_t i = 0; i < n_ops; i++) {
        Kho__Api__TxnOp m = KHO__API__TXN_OP__INIT;
        m.is_delete = ops[i].is_delete != 0;
        m.key = bin(ops[i].key, ops[i].key_len);
        m.value = bin(ops[i].value, ops[i].value_len);
        om[i] = m;
        op_ptrs[i] = &om[i];
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_TXN;
    q.registry = (char *)registry;
    q.n_compares = n_cmps;
    q.compares = cmp_ptrs;
    q.n_ops = n_ops;
    q.ops = op_ptrs;
    pthread_mutex_lock(&c->mu);
    Kho__Api__Response *rs = NULL;
    uint64_t deadline = now_ms() + c->timeout_ms;
    struct map *m = map_for(c, registry, deadline);
    uint32_t shard = 0;
    c->errmsg[0] = '\0';
    int err = m != NULL ? txn_shard(c, registry, m->shards, cmps, n_cmps, ops,
                                    n_ops, &shard)
                        : KHO_OK;
    if (err == KHO_OK) {
        err = call_data(c, &q, true, m, shard, deadline, &rs);
    }
    if (err == KHO_OK && revision != NULL) {
        *revision = rs->revision;
    }
    if (err == KHO_ECONFLICT && rs != NULL && rs->failed_compare > n_cmps) {
        err = fail(c, KHO_ECORRUPT, "txn answer blames compare %u of %zu",
                   rs->failed_compare, n_cmps);
    } else if (err == KHO_ECONFLICT && rs != NULL && failed_compare != NULL) {
        *failed_compare = rs->failed_compare;
    }
    response_free(rs);
    pthread_mutex_unlock(&c->mu);
    return err;
}

/* --- Scans and history
 * ---------------------------------------------------------- */

/* What a page's records must satisfy, besides record_check(). */
struct page_rule {
    uint32_t limit;                   /* most records */
    const struct kho_scan_opts *scan; /* the range, for a scan */
    const void *key;                  /* the key, for a history */
    size_t key_len;
};

static bool in_scan(const struct kho_scan_opts *o, const ProtobufCBinaryData *k)
{
    if (o->prefix_len > 0) {
        return k->len >= o->prefix_len &&
               memcmp(k->data, o->prefix, o->prefix_len) == 0;
    }
    if (bytes_cmp(k->data, k->len, o->start, o->start_len) < 0) {
        return false;
    }
    return o->end_len == 0 ||
           bytes_cmp(k->data, k->len, o->end, o->end_len) < 0;
}

static int page_check(struct kho_client *c, const Kho__Api__Response *rs,
                      const struct page_rule *rule)
{
    uint32_t limit = rule->limit > 0 ? rule->limit : KHO_SCAN_LIMIT_MAX;
    if (rs->n_records > limit) {
        return fail(c, KHO_ECORRUPT, "answer has %zu records, asked for %u",
                    rs->n_records, limit);
    }
    if (rs->token.len > KHO_TOKEN_BYTES_MAX) {
        return fail(c, KHO_ECORRUPT, "answer has a token of %zu bytes",
                    rs->token.len);
    }
    for (size_t i = 0; i < rs->n_records; i++) {
        const Kho__Api__Record *r = rs->records[i];
        int rc = record_check(c, r);
        if (rc != KHO_OK) {
            return rc;
        }
        if (rule->scan != NULL && !in_scan(rule->scan, &r->key)) {
            return fail(c, KHO_ECORRUPT,
                        "answer has a record outside the "
                        "range asked for");
        }
        if (rule->key != NULL &&
            bytes_cmp(r->key.data, r->key.len, rule->key, rule->key_len) != 0) {
            return fail(c, KHO_ECORRUPT,
                        "history answer has a record of "
                        "another key");
        }
    }
    return KHO_OK;
}

/* Copies a checked page into the caller's outputs. */
static int page_copy(const Kho__Api__Response *rs, struct kho_record **recs,
                     size_t *n, void **token, size_t *token_len)
{
    struct kho_record *r = NULL;
    if (rs->n_records > 0) {
        r = calloc(rs->n_records, sizeof(*r));
        if (r == NULL) {
            return KHO_ENOMEM;
        }
    }
    for (size_t i = 0; i < rs->n_records; i++) {
        if (record_copy(rs->records[i], &r[i]) != KHO_OK) {
            kho_records_free(r, i);
            return KHO_ENOMEM;
        }
    }
    void *t = NULL;
    if (rs->token.len > 0) {
        t = dup_bytes(&rs->token);
        if (t == NULL) {
            kho_records_free(r, rs->n_records);
            return KHO_ENOMEM;
        }
    }
    *recs = r;
    *n = rs->n_records;
    *token = t;
    *token_len = rs->token.len;
    return KHO_OK;
}

/* Sends a page request to shard `shard` of m (NULL: the old way) and
 * hands back the checked page; *shards (may be NULL) receives the shard
 * count the answer gave (0 none). The caller holds c->mu. */
static int page_from(struct kho_client *c, Kho__Api__Request *q,
                     const struct page_rule *rule, struct map *m,
                     uint32_t shard, uint64_t deadline,
                     struct kho_record **recs, size_t *n, void **token,
                     size_t *token_len, uint32_t *shards)
{
    Kho__Api__Response *rs = NULL;
    int err = call_data(c, q, false, m, shard, deadline, &rs);
    if (shards != NULL) {
        *shards = rs != NULL ? rs->shards : 0;
    }
    if (err == KHO_OK) {
        err = page_check(c, rs, rule);
    }
    if (err == KHO_OK) {
        err = page_copy(rs, recs, n, token, token_len);
    }
    response_free(rs);
    return err;
}

static void page_out_init(struct kho_record **recs, size_t *n, void **token,
                          size_t *token_len)
{
    if (recs != NULL) {
        *recs = NULL;
    }
    if (n != NULL) {
        *n = 0;
    }
    if (token != NULL) {
        *token = NULL;
    }
    if (token_len != NULL) {
        *token_len = 0;
    }
}

static int check_limit(uint32_t limit, const void *token, size_t token_len,
                       const char **why)
{
    if (limit > KHO_SCAN_LIMIT_MAX) {
        *why = "limit over KHO_SCAN_LIMIT_MAX (10000)";
        return KHO_EINVAL;
    }
    return check_bytes(token, token_len, KHO_TOKEN_BYTES_MAX, KHO_EINVAL,
                       "token over KHO_TOKEN_BYTES_MAX", why);
}

static int check_scan(const struct kho_scan_opts *o, const char **why)
{
    const char *over = "start, end or prefix over KHO_KEY_BYTES_MAX (1024)";
    int rc = check_bytes(o->start, o->start_len, KHO_KEY_BYTES_MAX,
                         KHO_ETOOLARGE, over, why);
    if (rc == KHO_OK) {
        rc = check_bytes(o->end, o->end_len, KHO_KEY_BYTES_MAX, KHO_ETOOLARGE,
                         over, why);
    }
    if (rc == KHO_OK) {
        rc = check_bytes(o->prefix, o->prefix_len, KHO_KEY_BYTES_MAX,
                         KHO_ETOOLARGE, over, why);
    }
    if (rc == KHO_OK) {
        rc = check_limit(o->limit, o->token, o->token_len, why);
    }
    if (rc == KHO_OK && o->prefix_len > 0 &&
        (o->start_len > 0 || o->end_len > 0)) {
        *why = "a prefix together with start or end";
        rc = KHO_EINVAL;
    }
    return rc;
}

/* --- Scans over several shards -------------------------------------------
 */

/* One page of a scan over several shards, as it is merged: the first
 * records in key order of every shard answered so far, at most `limit` of
 * them and CLIENT_SCAN_PAGE_BYTES_MAX of keys and values beyond the first,
 * and the smallest last key of a shard that has more (no record past it may
 * be handed back: that shard's next records could come before it). */
struct merge {
    struct kho_record *r; /* n of them, in key order */
    size_t n;
    uint32_t limit;
    bool left_out; /* records were dropped for the bounds */
    bool more;     /* a shard has records after those it answered */
    void *cut;     /* malloc'd; NULL: no shard has more */
    size_t cut_len;
};

static void merge_free(struct merge *g)
{
    kho_records_free(g->r, g->n);
    free(g->cut);
    memset(g, 0, sizeof(*g));
}

static int rec_cmp(const struct kho_record *a, const Kho__Api__Record *b)
{
    return bytes_cmp(a->key, a->key_len, b->key.data, b->key.len);
}

/* Merges the (checked, sorted) records of one shard's answer into g,
 * keeping the first ones within the bounds. O(g->n + rs->n_records). */
static int merge_add(struct merge *g, const Kho__Api__Response *rs)
{
    size_t cap =
        g->n + rs->n_records < g->limit ? g->n + rs->n_records : g->limit;
    if (rs->n_records == 0) {
        return KHO_OK;
    }
    struct kho_record *out = calloc(cap, sizeof(*out));
    if (out == NULL) {
        return KHO_ENOMEM;
    }
    size_t i = 0, j = 0, k = 0, bytes = 0;
    int rc = KHO_OK;
    while (rc == KHO_OK && k < cap && (i < g->n || j < rs->n_records)) {
        bool mine = j == rs->n_records ||
                    (i < g->n && rec_cmp(&g->r[i], rs->records[j]) < 0);
        const Kho__Api__Record *x = mine ? NULL : rs->records[j];
        size_t sz = mine ? g->r[i].key_len + g->r[i].value_len
                         : x->key.len + x->value.len;
        if (k > 0 && bytes + sz > CLIENT_SCAN_PAGE_BYTES_MAX) {
            break;
        }
        if (mine) {
            out[k] = g->r[i++]; /* moved: g->r[0..i) are out's now */
        } else {
            rc = record_copy(x, &out[k]);
            j++;
        }
        bytes += sz;
        k += rc == KHO_OK;
    }
    g->left_out |= i < g->n || j < rs->n_records;
    for (; i < g->n; i++) {
        kho_record_clear(&g->r[i]);
    }
    free(g->r);
    g->r = out;
    g->n = k;
    return rc;
}

/* Notes the last key of a shard that has more records. */
static int merge_cut(struct merge *g, const ProtobufCBinaryData *last)
{
    g->more = true;
    if (g->cut != NULL &&
        bytes_cmp(last->data, last->len, g->cut, g->cut_len) >= 0) {
        return KHO_OK;
    }
    void *k = dup_bytes(last);
    if (k == NULL) {
        return KHO_ENOMEM;
    }
    free(g->cut);
    g->cut = k;
    g->cut_len = last->len;
    return KHO_OK;
}

/* Checks what shard s of a registry of `shards` answered for a page after
 * `token`, besides page_check(): its keys belong to it, rise, and follow
 * the token; a token comes with records. */
static int shard_page_check(struct kho_client *c, const Kho__Api__Response *rs,
                            uint32_t s, uint32_t shards,
                            const struct kho_scan_opts *o)
{
    for (size_t i = 0; i < rs->n_records; i++) {
        const ProtobufCBinaryData *k = &rs->records[i]->key;
        const ProtobufCBinaryData *prev =
            i > 0 ? &rs->records[i - 1]->key : NULL;
        uint32_t of = kho_shard_of(k->data, k->len, shards);
        if (of != s) {
            return fail(c, KHO_ECORRUPT, "shard %u answered a key of shard %u",
                        s, of);
        }
        if ((prev != NULL &&
             bytes_cmp(prev->data, prev->len, k->data, k->len) >= 0) ||
            (prev == NULL && o->token_len > 0 &&
             bytes_cmp(k->data, k->len, o->token, o->token_len) <= 0)) {
            return fail(c, KHO_ECORRUPT,
                        "shard %u answered keys out of order or not after "
                        "the token",
                        s);
        }
    }
    if (rs->token.len > 0 && rs->n_records == 0) {
        return fail(c, KHO_ECORRUPT,
                    "shard %u answered a token without records", s);
    }
    return KHO_OK;
}

/* Asks shard s for its part of the page and merges it into g; *shards
 * receives the shard count its answer gave (0 none). */
static int scan_shard(struct kho_client *c, Kho__Api__Request *q,
                      const struct kho_scan_opts *o, struct map *m, uint32_t s,
                      uint64_t deadline, struct merge *g, uint32_t *shards)
{
    struct page_rule rule = {.limit = g->limit, .scan = o};
    Kho__Api__Response *rs = NULL;
    q->shard = s + 1;
    q->limit = g->limit;
    int err = call_data(c, q, false, m, s, deadline, &rs);
    *shards = rs != NULL ? rs->shards : 0;
    if (err == KHO_OK && *shards != 0 && *shards != m->shards) {
        err = fail(c, KHO_EUNAVAILABLE,
                   "registry '%s' has %u shards, not %u as its map said",
                   q->registry, *shards, m->shards);
    }
    if (err == KHO_OK) {
        err = page_check(c, rs, &rule);
    }
    if (err == KHO_OK) {
        err = shard_page_check(c, rs, s, m->shards, o);
    }
    if (err == KHO_OK) {
        err = merge_add(g, rs);
    }
    if (err == KHO_OK && rs->token.len > 0) {
        err = merge_cut(g, &rs->records[rs->n_records - 1]->key);
    }
    response_free(rs);
    return err;
}

/* Hands the merged page back: the records up to the cut, and their last
 * key as the token when anything is left. */
static int merge_out(struct kho_client *c, struct merge *g,
                     struct kho_record **recs, size_t *n, void **token,
                     size_t *token_len)
{
    while (g->cut != NULL && g->n > 0 &&
           bytes_cmp(g->r[g->n - 1].key, g->r[g->n - 1].key_len, g->cut,
                     g->cut_len) > 0) {
        kho_record_clear(&g->r[--g->n]);
        g->left_out = true;
    }
    if ((g->more || g->left_out) && g->n == 0) {
        /* The cut's own record is kept, or records before it are. */
        return fail(c, KHO_ECORRUPT, "a merged scan page came out empty");
    }
    if (g->more || g->left_out) {
        const struct kho_record *last = &g->r[g->n - 1];
        ProtobufCBinaryData k = {.len = last->key_len, .data = last->key};
        *token = dup_bytes(&k);
        if (*token == NULL) {
            return KHO_ENOMEM;
        }
        *token_len = last->key_len;
    }
    if (g->n == 0) {
        free(g->r);
        g->r = NULL;
    }
    *recs = g->r;
    *n = g->n;
    g->r = NULL;
    g->n = 0;
    return KHO_OK;
}

/*
 * One page of a scan over the S > 1 shards of m: every shard in turn for
 * up to `limit` records after the token (O(S) round trips within one
 * deadline), merged as struct merge says. Memory stays bounded by one
 * answer plus the page kept. *shards receives a shard count an answer gave
 * that differs from the map's (0 none). The caller holds c->mu.
 */
static int scan_shards(struct kho_client *c, Kho__Api__Request *q,
                       const struct kho_scan_opts *o, struct map *m,
                       uint64_t deadline, struct kho_record **recs, size_t *n,
                       void **token, size_t *token_len, uint32_t *shards)
{
    struct merge g = {.limit =
                          o->limit > 0 ? o->limit : KHO_SCAN_LIMIT_DEFAULT};
    uint32_t count = m->shards;
    int err = KHO_OK;
    for (uint32_t s = 0; err == KHO_OK && s < count; s++) {
        err = scan_shard(c, q, o, m, s, deadline, &g, shards);
        if (m->shards != count) {
            /* A refresh during the call changed the map under us. */
            *shards = m->shards != 0 ? m->shards : 1;
            err = err == KHO_OK ? KHO_EUNAVAILABLE : err;
        }
    }
    if (*shards == count) {
        *shards = 0;
    }
    if (err == KHO_OK) {
        err = merge_out(c, &g, recs, n, token, token_len);
    }
    merge_free(&g);
    return err;
}

/*
 * One page of a scan of registry: one request when the registry has one
 * shard (or no map), else scan_shards(). When an answer gives another
 * shard count than the map, the map is fetched again and the page read
 * again, at most CLIENT_SCAN_RESTARTS_MAX times. The caller holds c->mu.
 */
static int scan_page(struct kho_client *c, const char *registry,
                     Kho__Api__Request *q, const struct kho_scan_opts *o,
                     struct kho_record **recs, size_t *n, void **token,
                     size_t *token_len)
{
    uint64_t deadline = now_ms() + c->timeout_ms;
    struct map *m = map_for(c, registry, deadline);
    struct page_rule rule = {.limit = o->limit, .scan = o};
    for (unsigned tries = 0;; tries++) {
        uint32_t said = 0;
        bool many = m != NULL && m->shards > 1;
        q->shard = 0;
        q->limit = o->limit;
        int err = many ? scan_shards(c, q, o, m, deadline, recs, n, token,
                                     token_len, &said)
                       : page_from(c, q, &rule, m, 0, deadline, recs, n, token,
                                   token_len, &said);
        bool differs = many ? said != 0 : said > 1;
        if (!differs || tries == CLIENT_SCAN_RESTARTS_MAX) {
            return err;
        }
        kho_records_free(*recs, *n);
        free(*token);
        page_out_init(recs, n, token, token_len);
        m = map_slot(c, registry);
        map_refresh(c, m, deadline);
        m = m->shards > 0 ? m : NULL;
    }
}

int kho_scan(struct kho_client *c, const char *registry,
             const struct kho_scan_opts *o, struct kho_record **recs, size_t *n,
             void **token, size_t *token_len)
{
    page_out_init(recs, n, token, token_len);
    const char *why = "NULL opts or output";
    int rc = check_registry(registry, &why);
    if (rc == KHO_OK && o != NULL) {
        rc = check_scan(o, &why);
    }
    if (c == NULL || o == NULL || recs == NULL || n == NULL || token == NULL ||
        token_len == NULL || rc != KHO_OK) {
        return refuse(c, rc != KHO_OK ? rc : KHO_EINVAL, why);
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_SCAN;
    q.registry = (char *)registry;
    q.key = bin(o->start, o->start_len);
    q.range_end = bin(o->end, o->end_len);
    q.prefix = bin(o->prefix, o->prefix_len);
    q.limit = o->limit;
    q.serializable = o->serializable != 0;
    q.token = bin(o->token, o->token_len);
    pthread_mutex_lock(&c->mu);
    int err = scan_page(c, registry, &q, o, recs, n, token, token_len);
    pthread_mutex_unlock(&c->mu);
    return err;
}

int kho_history(struct kho_client *c, const char *registry, const void *key,
                size_t key_len, uint32_t limit, const void *token,
                size_t token_len, struct kho_record **recs, size_t *n,
                void **token_out, size_t *token_out_len)
{
    page_out_init(recs, n, token_out, token_out_len);
    const char *why = "NULL output";
    int rc = check_key(key, key_len, &why);
    if (rc == KHO_OK) {
        rc = check_registry(registry, &why);
    }
    if (rc == KHO_OK) {
        rc = check_limit(limit, token, token_len, &why);
    }
    if (c == NULL || recs == NULL || n == NULL || token_out == NULL ||
        token_out_len == NULL || rc != KHO_OK) {
        return refuse(c, rc != KHO_OK ? rc : KHO_EINVAL, why);
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_HISTORY;
    q.registry = (char *)registry;
    q.key = bin(key, key_len);
    q.limit = limit;
    q.token = bin(token, token_len);
    struct page_rule rule = {.limit = limit, .key = key, .key_len = key_len};
    pthread_mutex_lock(&c->mu);
    uint64_t deadline = now_ms() + c->timeout_ms;
    struct map *m = map_for(c, registry, deadline);
    uint32_t s = m != NULL ? kho_shard_of(key, key_len, m->shards) : 0;
    int err = page_from(c, &q, &rule, m, s, deadline, recs, n, token_out,
                        token_out_len, NULL);
    pthread_mutex_unlock(&c->mu);
    return err;
}

/* --- Registries
 * ----------------------------------------------------------------- */

static int registry_copy(struct kho_client *c, const Kho__Api__RegistryInfo *r,
                         struct kho_registry_info *out)
{
    if (r->name == NULL || check_name(r->name) != KHO_OK ||
        !str_ok(r->creator, KHO_NAME_BYTES_MAX)) {
        return fail(c, KHO_ECORRUPT,
                    "answer has a registry or creator "
                    "name that is empty or over %u bytes",
                    KHO_NAME_BYTES_MAX);
    }
    if (r->n_replicas > KHO_REPLICAS_MAX) {
        return fail(c, KHO_ECORRUPT, "answer has a registry of %zu replicas",
                    r->n_replicas);
    }
    if (r->shards > KHO_SHARDS_MAX || !str_ok(r->home, KHO_NAME_BYTES_MAX)) {
        return fail(c, KHO_ECORRUPT,
                    "answer has a registry of %u shards or a home name "
                    "over %u bytes",
                    r->shards, KHO_NAME_BYTES_MAX);
    }
    memset(out, 0, sizeof(*out));
    snprintf(out->name, sizeof(out->name), "%s", r->name);
    out->group_id = r->group_id;
    out->n_replicas = r->n_replicas;
    for (size_t i = 0; i < r->n_replicas; i++) {
        out->replicas[i] = r->replicas[i];
    }
    out->created_ms = r->created_ms;
    snprintf(out->creator, sizeof(out->creator), "%s",
             r->creator != NULL ? r->creator : "");
    out->leader = r->leader;
    out->term = r->term;
    out->commit = r->commit;
    out->applied = r->applied;
    out->shards = r->shards > 0 ? r->shards : 1; /* a server before shards */
    snprintf(out->home, sizeof(out->home), "%s",
             r->home != NULL ? r->home : "");
    return KHO_OK;
}

/* The one registry an answer describes, which must be `name`. */
static int registry_answer(struct kho_client *c, const Kho__Api__Response *rs,
                           const char *name, struct kho_registry_info *out)
{
    if (rs->n_registries != 1) {
        return fail(c, KHO_ECORRUPT, "answer describes %zu registries, not 1",
                    rs->n_registries);
    }
    int err = registry_copy(c, rs->registries[0], out);
    if (err == KHO_OK && strcmp(out->name, name) != 0) {
        err = fail(c, KHO_ECORRUPT, "answer describes another registry");
    }
    return err;
}

int kho_registry_describe(struct kho_client *c, const char *name,
                          struct kho_registry_info *out)
{
    if (out != NULL) {
        memset(out, 0, sizeof(*out));
    }
    const char *why = "NULL output";
    int rc = check_registry(name, &why);
    if (c == NULL || out == NULL || rc != KHO_OK) {
        return refuse(c, KHO_EINVAL, why);
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_REGISTRY_DESCRIBE;
    q.registry = (char *)name;
    pthread_mutex_lock(&c->mu);
    Kho__Api__Response *rs = NULL;
    int err = call_as(c, &q, false, &rs);
    if (err == KHO_OK) {
        err = registry_answer(c, rs, name, out);
    }
    response_free(rs);
    pthread_mutex_unlock(&c->mu);
    return err;
}

/* --- Membership and leadership -------------------------------------------- */

static int check_url(const char *url)
{
    return url != NULL && url[0] != '\0' && strlen(url) < KHO_URL_BYTES_MAX
               ? KHO_OK
               : KHO_EINVAL;
}

int kho_member_add(struct kho_client *c, const char *name,
                   const char *peer_url, const char *client_url, uint64_t *id)
{
    if (id != NULL) {
        *id = 0;
    }
    if (c == NULL || check_name(name) != KHO_OK ||
        check_url(peer_url) != KHO_OK || check_url(client_url) != KHO_OK) {
        return refuse(c, KHO_EINVAL, "bad node name or URL");
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_MEMBER_ADD;
    q.node_name = (char *)name;
    q.peer_url = (char *)peer_url;
    q.client_url = (char *)client_url;
    pthread_mutex_lock(&c->mu);
    Kho__Api__Response *rs = NULL;
    int err = call_as(c, &q, true, &rs);
    if (err == KHO_OK && (rs->n_members != 1 || rs->members[0]->id == 0)) {
        err = fail(c, KHO_ECORRUPT, "member add answer without the new node");
    }
    if (err == KHO_OK && id != NULL) {
        *id = rs->members[0]->id;
    }
    response_free(rs);
    pthread_mutex_unlock(&c->mu);
    return err;
}

int kho_member_remove(struct kho_client *c, const char *name)
{
    if (c == NULL || check_name(name) != KHO_OK) {
        return refuse(c, KHO_EINVAL, "bad node name");
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_MEMBER_REMOVE;
    q.node_name = (char *)name;
    pthread_mutex_lock(&c->mu);
    Kho__Api__Response *rs = NULL;
    int err = call_as(c, &q, true, &rs);
    response_free(rs);
    pthread_mutex_unlock(&c->mu);
    return err;
}

static int member_copy(struct kho_client *c, const Kho__Api__MemberInfo *m,
                       struct kho_node_info *o)
{
    if (!str_ok(m->name, KHO_NAME_BYTES_MAX) ||
        !str_ok(m->client_url, KHO_URL_BYTES_MAX - 1) ||
        !str_ok(m->peer_url, KHO_URL_BYTES_MAX - 1) || m->id == 0) {
        return fail(c, KHO_ECORRUPT, "member answer with a bad node");
    }
    o->id = m->id;
    snprintf(o->name, sizeof(o->name), "%s", m->name != NULL ? m->name : "");
    snprintf(o->client_url, sizeof(o->client_url), "%s",
             m->client_url != NULL ? m->client_url : "");
    snprintf(o->peer_url, sizeof(o->peer_url), "%s",
             m->peer_url != NULL ? m->peer_url : "");
    o->removed = m->state != NULL && strcmp(m->state, "removed") == 0;
    return KHO_OK;
}

int kho_member_list(struct kho_client *c, struct kho_node_info **out,
                    size_t *n)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (n != NULL) {
        *n = 0;
    }
    if (c == NULL || out == NULL || n == NULL) {
        return refuse(c, KHO_EINVAL, "NULL output");
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_MEMBER_LIST;
    pthread_mutex_lock(&c->mu);
    Kho__Api__Response *rs = NULL;
    int err = call_as(c, &q, false, &rs);
    struct kho_node_info *v = NULL;
    if (err == KHO_OK && rs->n_members > KHO_NODES_MAX) {
        err = fail(c, KHO_ECORRUPT, "member list over KHO_NODES_MAX");
    }
    if (err == KHO_OK) {
        v = calloc(rs->n_members + 1, sizeof(*v));
        err = v != NULL ? KHO_OK : KHO_ENOMEM;
    }
    for (size_t i = 0; err == KHO_OK && i < rs->n_members; i++) {
        err = member_copy(c, rs->members[i], &v[i]);
    }
    if (err == KHO_OK) {
        *out = v;
        *n = rs->n_members;
    } else {
        free(v);
    }
    response_free(rs);
    pthread_mutex_unlock(&c->mu);
    return err;
}

static int transfer_call(struct kho_client *c, uint64_t group, uint64_t target,
                         uint64_t drain)
{
    if (c == NULL || (target == 0 && drain == 0)) {
        return refuse(c, KHO_EINVAL, "no target node");
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_LEADER_TRANSFER;
    q.group_id = group;
    q.target_node = target;
    q.drain_node = drain;
    pthread_mutex_lock(&c->mu);
    Kho__Api__Response *rs = NULL;
    int err = call_as(c, &q, false, &rs);
    response_free(rs);
    pthread_mutex_unlock(&c->mu);
    return err;
}

int kho_leader_transfer(struct kho_client *c, uint64_t group_id,
                        uint64_t target)
{
    return transfer_call(c, group_id, target, 0);
}

int kho_leader_drain(struct kho_client *c, uint64_t node)
{
    return transfer_call(c, 0, 0, node);
}

static int check_create(const char *name, const struct kho_registry_opts *o,
                        const char **why)
{
    int rc = check_registry(name, why);
    if (rc == KHO_OK && o->replicas > KHO_REPLICAS_MAX) {
        *why = "replicas over KHO_REPLICAS_MAX (7)";
        rc = KHO_EINVAL;
    }
    if (rc == KHO_OK && o->shards > KHO_SHARDS_MAX) {
        *why = "shards over KHO_SHARDS_MAX (256)";
        rc = KHO_EINVAL;
    }
    if (rc == KHO_OK && o->home != NULL && o->home[0] != '\0' &&
        check_name(o->home) != KHO_OK) {
        *why = "home node name over KHO_NAME_BYTES_MAX (64 bytes) or not "
               "UTF-8";
        rc = KHO_EINVAL;
    }
    return rc;
}

int kho_registry_create_opts(struct kho_client *c, const char *name,
                             const struct kho_registry_opts *opts,
                             struct kho_registry_info *out)
{
    if (out != NULL) {
        memset(out, 0, sizeof(*out));
    }
    const struct kho_registry_opts none = {0};
    const struct kho_registry_opts *o = opts != NULL ? opts : &none;
    const char *why = "";
    int rc = check_create(name, o, &why);
    if (c == NULL || rc != KHO_OK) {
        return refuse(c, KHO_EINVAL, why);
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_REGISTRY_CREATE;
    q.registry = (char *)name;
    q.replicas = o->replicas;
    q.shards = o->shards;
    if (o->home != NULL && o->home[0] != '\0') {
        q.home = (char *)o->home;
    }
    pthread_mutex_lock(&c->mu);
    Kho__Api__Response *rs = NULL;
    int err = call_as(c, &q, true, &rs);
    bool described = false;
    if (err == KHO_OK) {
        map_drop(c, name);
    }
    if (err == KHO_OK && out != NULL && rs->n_registries > 0) {
        err = registry_answer(c, rs, name, out);
        described = true;
    }
    response_free(rs);
    pthread_mutex_unlock(&c->mu);
    if (err == KHO_OK && out != NULL && !described) {
        err = kho_registry_describe(c, name, out);
    }
    return err;
}

int kho_registry_create(struct kho_client *c, const char *name,
                        uint32_t replicas, struct kho_registry_info *out)
{
    struct kho_registry_opts o = {.replicas = replicas};
    return kho_registry_create_opts(c, name, &o, out);
}

int kho_registry_list(struct kho_client *c, struct kho_registry_info **out,
                      size_t *n)
{
    if (out != NULL) {
        *out = NULL;
    }
    if (n != NULL) {
        *n = 0;
    }
    if (c == NULL || out == NULL || n == NULL) {
        return refuse(c, KHO_EINVAL, "NULL output");
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_REGISTRY_LIST;
    pthread_mutex_lock(&c->mu);
    Kho__Api__Response *rs = NULL;
    struct kho_registry_info *a = NULL;
    int err = call_as(c, &q, false, &rs);
    if (err == KHO_OK && rs->n_registries > KHO_REGISTRIES_MAX) {
        err = fail(c, KHO_ECORRUPT, "answer lists %zu registries, over %u",
                   rs->n_registries, KHO_REGISTRIES_MAX);
    }
    if (err == KHO_OK && rs->n_registries > 0) {
        a = calloc(rs->n_registries, sizeof(*a));
        err = a != NULL ? KHO_OK : KHO_ENOMEM;
    }
    for (size_t i = 0; err == KHO_OK && i < rs->n_registries; i++) {
        err = registry_copy(c, rs->registries[i], &a[i]);
    }
    if (err == KHO_OK) {
        *out = a;
        *n = rs->n_registries;
    } else {
        free(a);
    }
    response_free(rs);
    pthread_mutex_unlock(&c->mu);
    return err;
}

/* --- Shard maps, moves and rebalancing -------------------------------------
 */

void kho_shard_map_free(struct kho_shard_map *m)
{
    if (m == NULL) {
        return;
    }
    free(m->shard_list);
    free(m->nodes);
    free(m);
}

static void leader_copy(struct kho_shard_info *d, const Kho__Api__ShardInfo *si)
{
    d->leader = si->leader;
    snprintf(d->leader_url, sizeof(d->leader_url), "%s",
             si->leader_url != NULL ? si->leader_url : "");
    d->term = si->term;
    d->commit = si->commit;
    d->applied = si->applied;
}

/* Copies a checked map into a new struct kho_shard_map. */
static int shard_map_copy(const Kho__Api__ShardMap *sm,
                          struct kho_shard_map **out)
{
    struct kho_shard_map *m = calloc(1, sizeof(*m));
    if (m != NULL) {
        m->shard_list = calloc(sm->shards, sizeof(*m->shard_list));
        m->nodes = calloc(sm->n_nodes + 1, sizeof(*m->nodes));
    }
    if (m == NULL || m->shard_list == NULL || m->nodes == NULL) {
        kho_shard_map_free(m);
        return KHO_ENOMEM;
    }
    snprintf(m->registry, sizeof(m->registry), "%s", sm->registry);
    snprintf(m->home, sizeof(m->home), "%s", sm->home != NULL ? sm->home : "");
    m->shards = sm->shards;
    m->replicas = sm->replicas;
    m->revision = sm->revision;
    for (size_t i = 0; i < sm->n_shard_list; i++) {
        const Kho__Api__ShardInfo *si = sm->shard_list[i];
        struct kho_shard_info *d = &m->shard_list[si->shard];
        d->shard = si->shard;
        d->group_id = si->group_id;
        d->n_replicas = si->n_replicas;
        memcpy(d->replicas, si->replicas, si->n_replicas * sizeof(uint64_t));
        leader_copy(d, si);
    }
    for (size_t i = 0; i < sm->n_nodes; i++) {
        const Kho__Api__NodeInfo *n = sm->nodes[i];
        struct kho_node_info *o = &m->nodes[i];
        o->id = n->id;
        snprintf(o->name, sizeof(o->name), "%s", n->name ? n->name : "");
        snprintf(o->client_url, sizeof(o->client_url), "%s",
                 n->client_url != NULL ? n->client_url : "");
        snprintf(o->peer_url, sizeof(o->peer_url), "%s",
                 n->peer_url != NULL ? n->peer_url : "");
        o->removed = n->state != NULL && strcmp(n->state, "removed") == 0;
    }
    m->n_nodes = sm->n_nodes;
    *out = m;
    return KHO_OK;
}

static const char *map_node_url(const struct kho_shard_map *m, uint64_t id)
{
    for (size_t i = 0; i < m->n_nodes; i++) {
        if (m->nodes[i].id == id && m->nodes[i].client_url[0] != '\0') {
            return m->nodes[i].client_url;
        }
    }
    return NULL;
}

/* Asks the node at url for the map of m->registry (one try) and takes the
 * leaders it knows that m lacks, into m and the client's cache. */
static void shard_map_ask_at(struct kho_client *c, struct kho_shard_map *m,
                             const char *url, uint64_t deadline)
{
    size_t i = endpoint_of(c, url);
    uint64_t now = now_ms();
    if (i >= c->n || now >= deadline) {
        return;
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_SHARD_MAP;
    q.registry = m->registry;
    q.client_name = c->name;
    uint8_t buf[4 * KHO_NAME_BYTES_MAX];
    size_t len = kho__api__request__pack(&q, buf);
    uint32_t wait = deadline - now < CLIENT_TRY_MS ? (uint32_t)(deadline - now)
                                                   : CLIENT_TRY_MS;
    Kho__Api__Response *rs = NULL;
    if (exchange(c, i, buf, len, wait, &rs) != KHO_OK) {
        return;
    }
    const Kho__Api__ShardMap *sm = rs->shard_map;
    if (rs->err == KHO_OK && sm != NULL &&
        map_check(c, m->registry, sm) == KHO_OK && sm->shards == m->shards) {
        for (size_t k = 0; k < sm->n_shard_list; k++) {
            struct kho_shard_info *d = &m->shard_list[sm->shard_list[k]->shard];
            if (d->leader == 0 && sm->shard_list[k]->leader != 0) {
                leader_copy(d, sm->shard_list[k]);
            }
        }
        map_install(c, map_slot(c, m->registry), sm);
    }
    response_free(rs);
}

/* Fills in the leaders the first answer did not know: for each such shard,
 * asks a node of its replicas not asked yet, so at most one request per
 * node (each one try, within the deadline). */
static void shard_map_leaders(struct kho_client *c, struct kho_shard_map *m,
                              uint64_t deadline)
{
    uint64_t asked[KHO_NODES_MAX];
    size_t n_asked = 0;
    for (uint32_t s = 0; s < m->shards; s++) {
        struct kho_shard_info *d = &m->shard_list[s];
        for (size_t k = 0;
             d->leader == 0 && k < d->n_replicas && n_asked < KHO_NODES_MAX;
             k++) {
            bool before = false;
            for (size_t a = 0; a < n_asked; a++) {
                before |= asked[a] == d->replicas[k];
            }
            const char *url = map_node_url(m, d->replicas[k]);
            if (before || url == NULL) {
                continue;
            }
            asked[n_asked++] = d->replicas[k];
            shard_map_ask_at(c, m, url, deadline);
        }
    }
    for (uint32_t s = 0; s < m->shards; s++) {
        struct kho_shard_info *d = &m->shard_list[s];
        const char *url = map_node_url(m, d->leader);
        if (d->leader != 0 && d->leader_url[0] == '\0' && url != NULL) {
            snprintf(d->leader_url, sizeof(d->leader_url), "%s", url);
        }
    }
}

int kho_shard_map(struct kho_client *c, const char *registry,
                  struct kho_shard_map **out)
{
    if (out != NULL) {
        *out = NULL;
    }
    const char *why = "NULL output";
    int rc = check_registry(registry, &why);
    if (c == NULL || out == NULL || rc != KHO_OK) {
        return refuse(c, KHO_EINVAL, why);
    }
    pthread_mutex_lock(&c->mu);
    uint64_t deadline = now_ms() + c->timeout_ms;
    Kho__Api__Response *rs = NULL;
    struct kho_shard_map *m = NULL;
    int err = map_ask(c, registry, deadline, SIZE_MAX, &rs);
    if (err == KHO_OK) {
        struct map *cached = map_slot(c, registry);
        cached->fetched_ms = now_ms();
        map_install(c, cached, rs->shard_map); /* a cache miss if no memory */
        err = shard_map_copy(rs->shard_map, &m);
    }
    response_free(rs);
    if (err == KHO_OK) {
        shard_map_leaders(c, m, deadline);
        c->errmsg[0] = '\0'; /* what a node asked for leaders said */
        *out = m;
    }
    pthread_mutex_unlock(&c->mu);
    return err;
}

/* Checks and copies the moves of an answer (moves NULL: checks only). */
static int moves_copy(struct kho_client *c, const Kho__Api__Response *rs,
                      struct kho_shard_move **moves, size_t *n)
{
    if (rs->n_moves > KHO_SHARD_MOVES_MAX) {
        return fail(c, KHO_ECORRUPT, "answer lists %zu moves, over %u",
                    rs->n_moves, KHO_SHARD_MOVES_MAX);
    }
    for (size_t i = 0; i < rs->n_moves; i++) {
        const Kho__Api__ShardMove *v = rs->moves[i];
        if (!str_ok(v->registry, KHO_NAME_BYTES_MAX) ||
            !str_ok(v->from_name, KHO_NAME_BYTES_MAX) ||
            !str_ok(v->to_name, KHO_NAME_BYTES_MAX) ||
            v->shard >= KHO_SHARDS_MAX) {
            return fail(c, KHO_ECORRUPT,
                        "answer has a move with a name over its limit or a "
                        "shard out of range");
        }
    }
    if (moves == NULL || rs->n_moves == 0) {
        return KHO_OK;
    }
    struct kho_shard_move *a = calloc(rs->n_moves, sizeof(*a));
    if (a == NULL) {
        return KHO_ENOMEM;
    }
    for (size_t i = 0; i < rs->n_moves; i++) {
        const Kho__Api__ShardMove *v = rs->moves[i];
        snprintf(a[i].registry, sizeof(a[i].registry), "%s",
                 v->registry != NULL ? v->registry : "");
        a[i].shard = v->shard;
        a[i].from = v->from;
        a[i].to = v->to;
        snprintf(a[i].from_name, sizeof(a[i].from_name), "%s",
                 v->from_name != NULL ? v->from_name : "");
        snprintf(a[i].to_name, sizeof(a[i].to_name), "%s",
                 v->to_name != NULL ? v->to_name : "");
    }
    *moves = a;
    *n = rs->n_moves;
    return KHO_OK;
}

/* Sends a move or a rebalance; what it recorded makes the cached maps it
 * touches stale (registry NULL: all of them). */
static int moves_call(struct kho_client *c, Kho__Api__Request *q, bool mutating,
                      const char *registry, struct kho_shard_move **moves,
                      size_t *n)
{
    pthread_mutex_lock(&c->mu);
    Kho__Api__Response *rs = NULL;
    int err = call_as(c, q, mutating, &rs);
    if (err == KHO_OK) {
        err = moves_copy(c, rs, moves, n);
    }
    struct map *m = registry != NULL ? map_find(c, registry) : NULL;
    if (mutating && m != NULL) {
        m->stale = true;
    } else if (mutating && registry == NULL) {
        maps_stale_all(c);
    }
    response_free(rs);
    pthread_mutex_unlock(&c->mu);
    return err;
}

int kho_shard_move(struct kho_client *c, const char *registry, uint32_t shard,
                   const char *from_name, const char *to_name,
                   struct kho_shard_move **moves, size_t *n_moves)
{
    if (moves != NULL) {
        *moves = NULL;
    }
    if (n_moves != NULL) {
        *n_moves = 0;
    }
    const char *why = "shard out of range, or a bad or the same node name";
    int rc = check_registry(registry, &why);
    if (c == NULL || rc != KHO_OK || shard >= KHO_SHARDS_MAX ||
        check_name(from_name) != KHO_OK || check_name(to_name) != KHO_OK ||
        strcmp(from_name, to_name) == 0 || (moves != NULL && n_moves == NULL)) {
        return refuse(c, KHO_EINVAL, why);
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_SHARD_MOVE;
    q.registry = (char *)registry;
    q.shard = shard + 1;
    q.node_name = (char *)from_name;
    q.target_name = (char *)to_name;
    return moves_call(c, &q, true, registry, moves, n_moves);
}

int kho_rebalance(struct kho_client *c, int dry_run,
                  struct kho_shard_move **moves, size_t *n_moves)
{
    if (moves != NULL) {
        *moves = NULL;
    }
    if (n_moves != NULL) {
        *n_moves = 0;
    }
    if (c == NULL || (moves != NULL && n_moves == NULL)) {
        return refuse(c, KHO_EINVAL, "moves without n_moves");
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_REBALANCE;
    q.dry_run = dry_run != 0;
    return moves_call(c, &q, dry_run == 0, NULL, moves, n_moves);
}

/* --- Status
 * ----------------------------------------------------------------------- */

/* The members of group g; more than KHO_GROUP_MEMBERS_MAX are cut. */
static int status_replicas(struct kho_client *c,
                           const Kho__Api__GroupStatus *g,
                           struct kho_group_status *o)
{
    o->n_replicas = 0;
    for (size_t k = 0; k < g->n_replicas && k < KHO_GROUP_MEMBERS_MAX; k++) {
        const Kho__Api__ReplicaInfo *r = g->replicas[k];
        struct kho_replica_status *p = &o->replicas[k];
        if (!str_ok(r->role, sizeof(p->role) - 1)) {
            return fail(c, KHO_ECORRUPT,
                        "status answer has a replica role over its limit");
        }
        p->node = r->node;
        snprintf(p->role, sizeof(p->role), "%s",
                 r->role != NULL ? r->role : "");
        p->match = r->match;
        p->lag = r->lag;
        p->leader = r->leader;
        p->active = r->active;
        o->n_replicas = k + 1;
    }
    return KHO_OK;
}

static int status_groups(struct kho_client *c, const Kho__Api__Response *rs,
                         struct kho_node_status *out)
{
    out->n_groups_total = rs->n_groups;
    for (size_t k = 0; k < rs->n_groups && k < KHO_GROUPS_MAX; k++) {
        const Kho__Api__GroupStatus *g = rs->groups[k];
        struct kho_group_status *o = &out->groups[k];
        if (!str_ok(g->registry, KHO_NAME_BYTES_MAX) ||
            !str_ok(g->role, sizeof(o->role) - 1)) {
            return fail(c, KHO_ECORRUPT,
                        "status answer has a registry or "
                        "role name over its limit");
        }
        o->group_id = g->group_id;
        o->shard = g->shard;
        snprintf(o->registry, sizeof(o->registry), "%s",
                 g->registry != NULL ? g->registry : "");
        snprintf(o->role, sizeof(o->role), "%s",
                 g->role != NULL ? g->role : "");
        o->term = g->term;
        o->leader = g->leader;
        o->commit = g->commit;
        o->applied = g->applied;
        o->last_index = g->last_index;
        if (g->check_alarm != NULL) {
            o->check_alarm = 1;
            o->check_alarm_index = g->check_alarm->index;
            o->check_alarm_hash = g->check_alarm->hash;
            o->check_alarm_expected = g->check_alarm->expected;
            o->check_alarm_time_ms = g->check_alarm->time_ms;
        }
        int rc = status_replicas(c, g, o);
        if (rc != KHO_OK) {
            return rc;
        }
        out->n_groups = k + 1;
    }
    return KHO_OK;
}

static int status_nodes(struct kho_client *c, const Kho__Api__Response *rs,
                        struct kho_node_status *out)
{
    out->n_nodes_total = rs->n_nodes;
    for (size_t k = 0; k < rs->n_nodes && k < KHO_NODES_MAX; k++) {
        const Kho__Api__NodeInfo *m = rs->nodes[k];
        struct kho_node_info *o = &out->nodes[k];
        if (!str_ok(m->name, KHO_NAME_BYTES_MAX) ||
            !str_ok(m->client_url, KHO_URL_BYTES_MAX - 1) ||
            !str_ok(m->peer_url, KHO_URL_BYTES_MAX - 1)) {
            return fail(c, KHO_ECORRUPT,
                        "status answer has a node name or "
                        "URL over its limit");
        }
        o->id = m->id;
        snprintf(o->name, sizeof(o->name), "%s",
                 m->name != NULL ? m->name : "");
        snprintf(o->client_url, sizeof(o->client_url), "%s",
                 m->client_url != NULL ? m->client_url : "");
        snprintf(o->peer_url, sizeof(o->peer_url), "%s",
                 m->peer_url != NULL ? m->peer_url : "");
        o->removed = m->state != NULL && strcmp(m->state, "removed") == 0;
        out->n_nodes = k + 1;
    }
    return KHO_OK;
}

int kho_node_status(struct kho_client *c, size_t i, struct kho_node_status *out)
{
    if (c == NULL || i >= c->n_given || out == NULL) {
        return refuse(c, KHO_EINVAL,
                      "endpoint index out of range, or NULL "
                      "output");
    }
    memset(out, 0, sizeof(*out));
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_STATUS;
    uint8_t buf[64];
    _Static_assert(sizeof(buf) >= 8, "an OP_STATUS request is 2 bytes");
    size_t len = kho__api__request__pack(&q, buf);
    pthread_mutex_lock(&c->mu);
    c->errmsg[0] = '\0';
    Kho__Api__Response *rs = NULL;
    uint32_t wait = c->timeout_ms < CLIENT_STATUS_TRY_MS ? c->timeout_ms
                                                         : CLIENT_STATUS_TRY_MS;
    int rc = exchange(c, i, buf, len, wait, &rs);
    if (rc == KHO_OK) {
        if (!str_ok(rs->node_name, KHO_NAME_BYTES_MAX)) {
            rc = fail(c, KHO_ECORRUPT,
                      "status answer has a node name over "
                      "%u bytes",
                      KHO_NAME_BYTES_MAX);
        }
        if (rc == KHO_OK) {
            out->node_id = rs->node_id;
            snprintf(out->name, sizeof(out->name), "%s",
                     rs->node_name != NULL ? rs->node_name : "");
            rc = status_groups(c, rs, out);
        }
        if (rc == KHO_OK) {
            rc = status_nodes(c, rs, out);
        }
        response_free(rs);
    } else if (rc == KHO_ETIMEOUT) {
        rc = fail(c, KHO_EUNAVAILABLE, "%s: no answer within %u ms", c->urls[i],
                  wait);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* --- Consistency checks and backups ----------------------------------------
 */

#define CLIENT_POLL_MS 20u
/* Backup file layout (server/store/store.h, "Backups"): checked here as it
 * streams in, so that a bug or a flipped bit on the way never reaches the
 * caller's file unnoticed. */
#define BACKUP_HEADER_BYTES 48u
#define BACKUP_FRAME_HEADER_BYTES 12u
#define BACKUP_GROUP_BODY_BYTES 32u
#define BACKUP_END_BODY_BYTES 16u
#define BACKUP_VERSION 1u
#define BACKUP_GROUPS_MAX 256u
enum { BACKUP_GROUP = 1, BACKUP_DATA = 2, BACKUP_END = 3 };
static const uint8_t backup_magic[8] = {'K', 'H', 'O', 'B', 'A', 'C', 'K', 1};

static uint32_t crc_table[256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
        crc_table[i] = c;
    }
}

/* CRC-32C (Castagnoli), as the server computes it: start and end with
 * 0xFFFFFFFF xored in (crc32c_begin / crc32c_end). */
static uint32_t crc32c_more(uint32_t crc, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        crc = crc_table[(crc ^ p[i]) & 0xFF] ^ (crc >> 8);
    }
    return crc;
}

static uint32_t crc32c_of(const uint8_t *p, size_t n)
{
    return crc32c_more(0xFFFFFFFFu, p, n) ^ 0xFFFFFFFFu;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* Sends q to endpoint i only (no redirection) until an answer other than
 * KHO_EBUSY, or the deadline: then KHO_EUNAVAILABLE when the node never
 * answered, else KHO_ETIMEOUT. The caller holds c->mu. */
static int call_at(struct kho_client *c, size_t i, const Kho__Api__Request *q,
                   uint64_t deadline, Kho__Api__Response **out)
{
    *out = NULL;
    c->errmsg[0] = '\0';
    size_t len = kho__api__request__get_packed_size(q);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL) {
        return KHO_ENOMEM;
    }
    kho__api__request__pack(q, buf);
    bool answered = false;
    int rc = KHO_ETIMEOUT;
    for (uint64_t now = now_ms(); now < deadline; now = now_ms()) {
        uint64_t left = deadline - now;
        uint32_t wait = left < CLIENT_TRY_MS ? (uint32_t)left : CLIENT_TRY_MS;
        Kho__Api__Response *rs = NULL;
        rc = exchange(c, i, buf, len, wait, &rs);
        if (rc == KHO_EINVAL) {
            break;
        }
        if (rc != KHO_OK) {
            rc = KHO_ETIMEOUT;
            sleep_ms(CLIENT_BACKOFF_MS);
            continue;
        }
        answered = true;
        rc = (int)rs->err;
        if (rc == KHO_EBUSY) {
            response_free(rs);
            sleep_ms(CLIENT_BACKOFF_MS);
            continue;
        }
        if (rc != KHO_OK && rs->message != NULL) {
            snprintf(c->errmsg, sizeof(c->errmsg), "%s", rs->message);
        }
        *out = rs;
        break;
    }
    free(buf);
    if (*out == NULL && rc == KHO_ETIMEOUT) {
        return fail(c, answered ? KHO_ETIMEOUT : KHO_EUNAVAILABLE,
                    "%s: no answer within %u ms", c->urls[i], c->timeout_ms);
    }
    return rc;
}

int kho_check_mark(struct kho_client *c, const char *registry,
                   uint64_t group_id, uint64_t *index)
{
    const char *why = "NULL index";
    bool named = registry != NULL && registry[0] != '\0';
    int rc = named ? check_registry(registry, &why) : KHO_OK;
    if (c == NULL || index == NULL || rc != KHO_OK) {
        return refuse(c, KHO_EINVAL, why);
    }
    *index = 0;
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_CHECK_MARK;
    q.registry = named ? (char *)registry : "";
    q.group_id = group_id; /* with a name: which shard's group (0: shard 0) */
    pthread_mutex_lock(&c->mu);
    Kho__Api__Response *rs = NULL;
    int err = call_as(c, &q, false, &rs);
    if (err == KHO_OK && rs->check_index == 0) {
        err = fail(c, KHO_ECORRUPT, "check answer without an index");
    }
    if (err == KHO_OK) {
        *index = rs->check_index;
    }
    response_free(rs);
    pthread_mutex_unlock(&c->mu);
    return err;
}

/* The endpoint of url (learned when new); c->n when unusable. The caller
 * holds c->mu. */
static size_t endpoint_at(struct kho_client *c, const char *url)
{
    if (url == NULL || url[0] == '\0' ||
        strnlen(url, KHO_URL_BYTES_MAX) >= KHO_URL_BYTES_MAX) {
        return c->n;
    }
    return endpoint_of(c, url);
}

static void hash_copy(const Kho__Api__Response *rs, struct kho_check_hash *out)
{
    out->node_id = rs->node_id;
    snprintf(out->node_name, sizeof(out->node_name), "%.*s",
             (int)KHO_NAME_BYTES_MAX,
             rs->node_name != NULL ? rs->node_name : "");
    out->hash = rs->check_hash;
    out->applied = rs->check_applied;
    if (rs->check_alarm != NULL) {
        out->alarm = 1;
        out->alarm_index = rs->check_alarm->index;
        out->alarm_hash = rs->check_alarm->hash;
        out->alarm_expected = rs->check_alarm->expected;
        out->alarm_time_ms = rs->check_alarm->time_ms;
    }
}

int kho_check_hash(struct kho_client *c, const char *url, uint64_t group_id,
                   uint64_t index, struct kho_check_hash *out)
{
    if (c == NULL || out == NULL || index == 0) {
        return refuse(c, KHO_EINVAL, "NULL output or index 0");
    }
    memset(out, 0, sizeof(*out));
    out->index = index;
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_CHECK_HASH;
    q.group_id = group_id;
    q.check_index = index;
    pthread_mutex_lock(&c->mu);
    size_t i = endpoint_at(c, url);
    int err = i < c->n ? KHO_ETIMEOUT : fail(c, KHO_EINVAL, "bad node URL");
    uint64_t deadline = now_ms() + c->timeout_ms, applied = 0;
    while (err == KHO_ETIMEOUT && now_ms() < deadline) {
        Kho__Api__Response *rs = NULL;
        err = call_at(c, i, &q, deadline, &rs);
        if (err == KHO_OK && rs->check_index == index) {
            hash_copy(rs, out);
        } else if (err == KHO_OK && rs->check_applied >= index) {
            err = fail(c, KHO_ESTALE,
                       "%s applied past marker %llu without hashing it "
                       "(a snapshot, or too many markers since)",
                       c->urls[i], (unsigned long long)index);
        } else if (err == KHO_OK) {
            applied = rs->check_applied;
            err = KHO_ETIMEOUT; /* not there yet */
            sleep_ms(CLIENT_POLL_MS);
        }
        response_free(rs);
    }
    if (err == KHO_ETIMEOUT && c->errmsg[0] == '\0') {
        fail(c, err, "%s applied up to %llu; the marker is at %llu", c->urls[i],
             (unsigned long long)applied, (unsigned long long)index);
    }
    pthread_mutex_unlock(&c->mu);
    return err;
}

static int alarm_call(struct kho_client *c, const char *url,
                      Kho__Api__Request *q)
{
    if (c == NULL) {
        return KHO_EINVAL;
    }
    q->op = KHO__API__OP__OP_CHECK_ALARM;
    q->client_name = c->name;
    pthread_mutex_lock(&c->mu);
    size_t i = endpoint_at(c, url);
    Kho__Api__Response *rs = NULL;
    int err = i < c->n ? call_at(c, i, q, now_ms() + c->timeout_ms, &rs)
                       : fail(c, KHO_EINVAL, "bad node URL");
    response_free(rs);
    pthread_mutex_unlock(&c->mu);
    return err;
}

int kho_check_alarm(struct kho_client *c, const char *url, uint64_t group_id,
                    uint64_t index, uint64_t hash, uint64_t expected)
{
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.group_id = group_id;
    q.check_index = index;
    q.check_hash = hash;
    q.check_expected = expected;
    return alarm_call(c, url, &q);
}

int kho_check_alarm_clear(struct kho_client *c, const char *url,
                          uint64_t group_id)
{
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.group_id = group_id;
    q.check_clear = true;
    return alarm_call(c, url, &q);
}

/* --- Backups: checking the stream ------------------------------------------
 */

struct bverify {
    uint8_t head[BACKUP_HEADER_BYTES];
    size_t head_got;
    uint32_t n_groups, groups_seen;
    uint64_t pos;      /* bytes taken */
    uint32_t file_crc; /* running, over the bytes before the END frame */
    uint8_t fh[BACKUP_FRAME_HEADER_BYTES];
    size_t fh_got;
    uint32_t type, len, frame_crc;
    size_t body_got;
    uint8_t small[BACKUP_GROUP_BODY_BYTES]; /* a GROUP or END body */
    uint64_t data_left; /* payload bytes the current group still owes */
    uint64_t end_at;    /* where the END frame starts */
    uint32_t crc_before_end;
    bool ended;
};

static int bv_header(struct kho_client *c, struct bverify *v)
{
    if (memcmp(v->head, backup_magic, sizeof(backup_magic)) != 0 ||
        le32(v->head + 44) != crc32c_of(v->head, 44) ||
        le32(v->head + 8) != BACKUP_VERSION ||
        le32(v->head + 12) > KHO_BACKUP_CHUNK_BYTES_MAX) {
        return fail(c, KHO_ECORRUPT, "the backup's header is malformed");
    }
    v->n_groups = le32(v->head + 40);
    if (v->n_groups == 0 || v->n_groups > BACKUP_GROUPS_MAX) {
        return fail(c, KHO_ECORRUPT, "the backup names %u groups", v->n_groups);
    }
    return KHO_OK;
}

/* A frame header is complete: does it fit where it is? */
static int bv_frame_start(struct kho_client *c, struct bverify *v)
{
    v->type = le32(v->fh);
    v->len = le32(v->fh + 4);
    v->frame_crc = crc32c_more(0xFFFFFFFFu, v->fh, 8);
    v->body_got = 0;
    bool ok;
    switch (v->type) {
    case BACKUP_GROUP:
        ok = v->len == BACKUP_GROUP_BODY_BYTES && v->data_left == 0 &&
             v->groups_seen < v->n_groups;
        break;
    case BACKUP_DATA:
        ok = v->len > 0 && v->len <= KHO_BACKUP_CHUNK_BYTES_MAX &&
             v->len <= v->data_left;
        break;
    case BACKUP_END:
        ok = v->len == BACKUP_END_BODY_BYTES && v->data_left == 0 &&
             v->groups_seen == v->n_groups;
        v->end_at = v->pos - BACKUP_FRAME_HEADER_BYTES;
        v->crc_before_end = v->file_crc ^ 0xFFFFFFFFu;
        break;
    default:
        ok = false;
    }
    if (!ok) {
        return fail(c, KHO_ECORRUPT,
                    "the backup has a misplaced frame (type %u, %u bytes) "
                    "at offset %llu",
                    v->type, v->len,
                    (unsigned long long)(v->pos - BACKUP_FRAME_HEADER_BYTES));
    }
    if (v->type != BACKUP_END) {
        v->file_crc = crc32c_more(v->file_crc, v->fh, sizeof(v->fh));
    }
    return KHO_OK;
}

static int bv_frame_end(struct kho_client *c, struct bverify *v)
{
    if ((v->frame_crc ^ 0xFFFFFFFFu) != le32(v->fh + 8)) {
        return fail(c, KHO_ECORRUPT, "a backup frame fails its checksum");
    }
    v->fh_got = 0;
    if (v->type == BACKUP_GROUP) {
        v->groups_seen++;
        v->data_left = le64(v->small + 24);
        return v->data_left > 0 ? KHO_OK
                                : fail(c, KHO_ECORRUPT, "an empty group");
    }
    if (v->type == BACKUP_DATA) {
        v->data_left -= v->len;
        return KHO_OK;
    }
    if (le64(v->small) != v->end_at || le32(v->small + 8) != v->n_groups ||
        le32(v->small + 12) != v->crc_before_end) {
        return fail(c, KHO_ECORRUPT, "the backup fails its end checks");
    }
    v->ended = true;
    return KHO_OK;
}

/* Takes n bytes of the stream. */
static int bv_feed(struct kho_client *c, struct bverify *v, const uint8_t *p,
                   size_t n)
{
    int rc = KHO_OK;
    while (rc == KHO_OK && n > 0) {
        size_t take;
        if (v->ended) {
            return fail(c, KHO_ECORRUPT, "bytes after the backup's end");
        }
        if (v->head_got < BACKUP_HEADER_BYTES) {
            take = BACKUP_HEADER_BYTES - v->head_got;
            take = take < n ? take : n;
            memcpy(v->head + v->head_got, p, take);
            v->head_got += take;
            v->file_crc = crc32c_more(v->file_crc, p, take);
            if (v->head_got == BACKUP_HEADER_BYTES) {
                rc = bv_header(c, v);
            }
        } else if (v->fh_got < BACKUP_FRAME_HEADER_BYTES) {
            take = BACKUP_FRAME_HEADER_BYTES - v->fh_got;
            take = take < n ? take : n;
            memcpy(v->fh + v->fh_got, p, take);
            v->fh_got += take;
            v->pos += take;
            if (v->fh_got == BACKUP_FRAME_HEADER_BYTES) {
                rc = bv_frame_start(c, v);
            }
            p += take;
            n -= take;
            continue;
        } else {
            take = v->len - v->body_got;
            take = take < n ? take : n;
            v->frame_crc = crc32c_more(v->frame_crc, p, take);
            if (v->type != BACKUP_DATA) {
                memcpy(v->small + v->body_got, p, take);
            }
            if (v->type != BACKUP_END) {
                v->file_crc = crc32c_more(v->file_crc, p, take);
            }
            v->body_got += take;
            if (v->body_got == v->len) {
                rc = bv_frame_end(c, v);
            }
        }
        v->pos += take;
        p += take;
        n -= take;
    }
    return rc;
}

/* --- Backups: the exchange -------------------------------------------------
 */

static int write_fd(struct kho_client *c, int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            int e = k < 0 ? errno : EIO;
            return fail(c, e == ENOSPC || e == EDQUOT ? KHO_ENOSPC : KHO_EIO,
                        "writing the backup: %s", strerror(e));
        }
        p += k;
        n -= (size_t)k;
    }
    return KHO_OK;
}

/* Whether a BACKUP_BEGIN refusal says the node lacks groups (the one
 * refusal a backup from several nodes gets around). */
static bool refused_lacking(const struct kho_client *c, int err)
{
    return err == KHO_EINVAL && strstr(c->errmsg, "does not host") != NULL;
}

/* Starts a backup on the first endpoint that takes it. *lacking: none did,
 * and every one that answered refused for lacking groups (at least one
 * answered); bit i of *silent: endpoint i did not answer. The caller holds
 * c->mu. */
static int backup_begin(struct kho_client *c, size_t *at,
                        struct kho_backup_info *info, bool *lacking,
                        uint32_t *silent)
{
    char why[4 * CLIENT_ERRMSG_BYTES] = "";
    int last = KHO_EUNAVAILABLE;
    size_t n_lacking = 0, n_other = 0;
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_BACKUP_BEGIN;
    q.client_name = c->name;
    *lacking = false;
    *silent = 0;
    for (size_t i = 0; i < c->n_given; i++) {
        Kho__Api__Response *rs = NULL;
        int err = call_at(c, i, &q, now_ms() + c->timeout_ms, &rs);
        if (err == KHO_OK) {
            info->backup_id = rs->backup_id;
            info->node_id = rs->node_id;
            snprintf(info->node_name, sizeof(info->node_name), "%.*s",
                     (int)KHO_NAME_BYTES_MAX,
                     rs->node_name != NULL ? rs->node_name : "");
            response_free(rs);
            *at = i;
            return KHO_OK;
        }
        response_free(rs);
        *silent |= err == KHO_EUNAVAILABLE ? 1u << i : 0u;
        n_lacking += refused_lacking(c, err);
        n_other += !refused_lacking(c, err) && err != KHO_EUNAVAILABLE &&
                   err != KHO_ETIMEOUT;
        size_t o = strlen(why);
        /* A node's refusal names the node; silence gets its URL. */
        snprintf(why + o, sizeof(why) - o, "%s%.100s%s%.200s",
                 o > 0 ? "; " : "", err == KHO_EUNAVAILABLE ? c->urls[i] : "",
                 err == KHO_EUNAVAILABLE ? ": " : "",
                 c->errmsg[0] != '\0' ? c->errmsg : kho_strerror(err));
        /* A refusal (lacking registries, busy) says more than silence. */
        if (last == KHO_EUNAVAILABLE || err != KHO_EUNAVAILABLE) {
            last = err;
        }
    }
    *lacking = n_lacking > 0 && n_other == 0;
    return fail(c, last,
                "no node takes the backup (one must host every "
                "registry): %s",
                why);
}

/* Lets the node drop its copy (it would after a minute anyway), keeping
 * the client's message. The caller holds c->mu. */
static void backup_end(struct kho_client *c, size_t at, uint64_t backup_id)
{
    char keep[CLIENT_ERRMSG_BYTES];
    snprintf(keep, sizeof(keep), "%s", c->errmsg);
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_BACKUP_END;
    q.backup_id = backup_id;
    Kho__Api__Response *rs = NULL;
    call_at(c, at, &q, now_ms() + CLIENT_TRY_MS, &rs);
    response_free(rs);
    snprintf(c->errmsg, sizeof(c->errmsg), "%s", keep);
}

/* Checks one fetched chunk and appends it. */
static int backup_chunk(struct kho_client *c, const Kho__Api__Response *rs,
                        int fd, struct bverify *v, uint64_t *offset)
{
    const ProtobufCBinaryData *b = &rs->backup_chunk;
    if (b->len > KHO_BACKUP_CHUNK_BYTES_MAX ||
        crc32c_of(b->data, b->len) != rs->backup_crc ||
        (rs->backup_done && *offset + b->len > rs->backup_size)) {
        return fail(c, KHO_ECORRUPT,
                    "a backup chunk at offset %llu fails its checks",
                    (unsigned long long)*offset);
    }
    int rc = bv_feed(c, v, b->data, b->len);
    if (rc == KHO_OK) {
        rc = write_fd(c, fd, b->data, b->len);
    }
    *offset += b->len;
    return rc;
}

/* Fetches the whole file. The caller holds c->mu. */
static int backup_fetch(struct kho_client *c, size_t at, int fd,
                        struct kho_backup_info *info)
{
    struct bverify *v = calloc(1, sizeof(*v));
    if (v == NULL) {
        return KHO_ENOMEM;
    }
    v->file_crc = 0xFFFFFFFFu;
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_BACKUP_FETCH;
    q.backup_id = info->backup_id;
    uint64_t offset = 0, moved_ms = now_ms();
    int rc = KHO_OK;
    for (bool done = false; rc == KHO_OK && !done;) {
        Kho__Api__Response *rs = NULL;
        q.backup_offset = offset;
        rc = call_at(c, at, &q, now_ms() + c->timeout_ms, &rs);
        uint64_t before = offset;
        if (rc == KHO_OK) {
            rc = backup_chunk(c, rs, fd, v, &offset);
            done = rs->backup_done && offset == rs->backup_size;
        }
        response_free(rs);
        if (rc != KHO_OK || done) {
            break;
        }
        if (offset > before) {
            moved_ms = now_ms();
        } else if (now_ms() - moved_ms > c->timeout_ms) {
            rc = fail(c, KHO_ETIMEOUT,
                      "the backup made no progress for %u "
                      "ms",
                      c->timeout_ms);
        } else {
            sleep_ms(CLIENT_POLL_MS); /* the node is still writing */
        }
    }
    if (rc == KHO_OK && !v->ended) {
        rc = fail(c, KHO_ECORRUPT, "the backup ended early");
    }
    info->bytes = offset;
    info->groups = v->n_groups;
    free(v);
    return rc;
}

/* --- Backups: a sharded cluster from several nodes --------------------------
 *
 * When no node hosts every group, each node is asked for some of them
 * (BACKUP_BEGIN with backup_groups) and the parts are merged into one file
 * of the same format. The plan: the groups the meta group places (the
 * meta group itself on every node, each registry shard on its replicas)
 * and the nodes with their client URLs; greedily, the node hosting the
 * most groups no part holds yet gives a part of all of those, until every
 * group is held. A node that does not take its part (unreachable, busy,
 * or lacking a group after all: its view of the map lags) is passed over
 * and the plan goes on without it. Each part is fetched and checked as a
 * whole backup is, into an unlinked temporary file (a part can be GBs);
 * the merge then copies every group's frames verbatim in increasing group
 * order under a new header and END frame, feeding every byte it writes to
 * the same checker.
 *
 * The registries are listed twice: before the parts, and again once the
 * meta group's part is taken, adding parts for any group that appeared
 * meanwhile. Registries are never deleted, so the second listing (a
 * linearizable read of the meta group) names every registry the backed-up
 * meta group records, and a restore finds all of their groups.
 */

/* How many times the registries are listed (see above). */
#define BACKUP_LISTINGS 2u
/* Bytes one copy step of the merge moves. */
#define BACKUP_COPY_BYTES (64u << 10)

_Static_assert(KHO_BACKUP_PARTS_MAX <= KHO_NODES_MAX,
               "a part comes from a node");
_Static_assert(KHO_ENDPOINTS_MAX <= 32, "a bit per endpoint in a uint32_t");

/* A group of the cluster and the nodes that host it, as the meta group
 * places it. */
struct bgroup {
    uint64_t id;
    char registry[KHO_NAME_BYTES_MAX + 1]; /* "" the meta group */
    uint32_t shard;
    bool everywhere; /* the meta group: every node hosts it */
    size_t n_hosts;
    uint64_t hosts[KHO_REPLICAS_MAX];
    int part; /* the part that holds it; -1 none yet */
};

/* A node of the cluster. */
struct bnode {
    uint64_t id;
    char name[KHO_NAME_BYTES_MAX + 1];
    char url[KHO_URL_BYTES_MAX];
    bool passed; /* it did not take its part: passed over */
};

/* A part: a whole, checked backup file of some groups from one node. */
struct bpart {
    int fd; /* an unlinked temporary file */
    uint64_t node_id;
    char node_name[KHO_NAME_BYTES_MAX + 1];
    uint32_t n_groups;
};

struct bplan {
    struct bgroup groups[BACKUP_GROUPS_MAX];
    size_t n_groups;
    struct bnode nodes[KHO_NODES_MAX];
    size_t n_nodes;
    struct bpart parts[KHO_BACKUP_PARTS_MAX];
    size_t n_parts;
    uint32_t silent; /* endpoints that did not answer the first BEGIN */
    int last_err;    /* of the last node passed over */
    char why[4 * CLIENT_ERRMSG_BYTES]; /* why nodes were passed over */
};

/* Sets the client's message (not holding c->mu) and returns err. */
__attribute__((format(printf, 3, 4))) static int
fail_unlocked(struct kho_client *c, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&c->mu);
    vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
    pthread_mutex_unlock(&c->mu);
    va_end(ap);
    return err;
}

/* Passes node nd over: it did not take its part, for `why`. */
static void plan_pass(struct bplan *p, struct bnode *nd, int err,
                      const char *why)
{
    nd->passed = true;
    p->last_err = err;
    size_t o = strlen(p->why);
    snprintf(p->why + o, sizeof(p->why) - o, "%s%.64s: %.200s",
             o > 0 ? "; " : "", nd->name,
             why[0] != '\0' ? why : kho_strerror(err));
}

/* Adds a node (once), passed over at once when it is an endpoint that did
 * not answer the first BEGIN: asking it again would only wait as long. */
static void plan_node(struct kho_client *c, struct bplan *p,
                      const struct kho_node_info *n)
{
    if (n->removed || n->id == 0 || n->client_url[0] == '\0') {
        return;
    }
    for (size_t i = 0; i < p->n_nodes; i++) {
        if (p->nodes[i].id == n->id) {
            return;
        }
    }
    if (p->n_nodes == KHO_NODES_MAX) {
        return;
    }
    struct bnode *b = &p->nodes[p->n_nodes++];
    b->id = n->id;
    snprintf(b->name, sizeof(b->name), "%s", n->name);
    snprintf(b->url, sizeof(b->url), "%s", n->client_url);
    for (size_t i = 0; i < kho_client_endpoints(c); i++) {
        if ((p->silent >> i & 1u) != 0 &&
            strcmp(kho_client_endpoint(c, i), b->url) == 0) {
            plan_pass(p, b, KHO_EUNAVAILABLE,
                      "no answer to the first backup request");
        }
    }
}

/* The nodes, from the first endpoint that tells its status (one that
 * answered the first BEGIN). */
static int plan_nodes(struct kho_client *c, struct bplan *p)
{
    struct kho_node_status *st = malloc(sizeof(*st));
    if (st == NULL) {
        return KHO_ENOMEM;
    }
    int rc = KHO_EUNAVAILABLE;
    for (size_t i = 0; rc != KHO_OK && i < kho_client_endpoints(c); i++) {
        rc = (p->silent >> i & 1u) != 0 ? KHO_EUNAVAILABLE
                                        : kho_node_status(c, i, st);
        for (size_t k = 0; rc == KHO_OK && k < st->n_nodes; k++) {
            plan_node(c, p, &st->nodes[k]);
        }
    }
    free(st);
    return rc;
}

/* Adds a group (once: a second listing keeps what the first planned). */
static int plan_group(struct kho_client *c, struct bplan *p, uint64_t id,
                      const char *registry, uint32_t shard,
                      const uint64_t *hosts, size_t n_hosts)
{
    for (size_t i = 0; i < p->n_groups; i++) {
        if (p->groups[i].id == id) {
            return KHO_OK;
        }
    }
    if (p->n_groups == BACKUP_GROUPS_MAX) {
        return fail_unlocked(c, KHO_ETOOLARGE,
                             "the cluster has more than the %u groups one "
                             "backup holds",
                             BACKUP_GROUPS_MAX);
    }
    struct bgroup *g = &p->groups[p->n_groups++];
    g->id = id;
    snprintf(g->registry, sizeof(g->registry), "%s", registry);
    g->shard = shard;
    g->everywhere = registry[0] == '\0';
    g->n_hosts = n_hosts < KHO_REPLICAS_MAX ? n_hosts : KHO_REPLICAS_MAX;
    for (size_t k = 0; k < g->n_hosts; k++) {
        g->hosts[k] = hosts[k];
    }
    g->part = -1;
    return KHO_OK;
}

/* The groups of a registry of several shards, from its shard map. */
static int plan_shards(struct kho_client *c, struct bplan *p,
                       const char *registry)
{
    struct kho_shard_map *m = NULL;
    int rc = kho_shard_map(c, registry, &m);
    for (uint32_t s = 0; rc == KHO_OK && s < m->shards; s++) {
        const struct kho_shard_info *si = &m->shard_list[s];
        rc = plan_group(c, p, si->group_id, registry, s, si->replicas,
                        si->n_replicas);
    }
    for (size_t k = 0; rc == KHO_OK && k < m->n_nodes; k++) {
        plan_node(c, p, &m->nodes[k]);
    }
    kho_shard_map_free(m);
    return rc;
}

static int by_bgroup(const void *x, const void *y)
{
    const struct bgroup *a = x, *b = y;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* Lists the groups: the meta group and every registry's shards, in
 * increasing id order. Not holding c->mu (it calls the public API). */
static int plan_groups(struct kho_client *c, struct bplan *p)
{
    struct kho_registry_info *regs = NULL;
    size_t n = 0;
    int rc = plan_group(c, p, 0, "", 0, NULL, 0);
    if (rc == KHO_OK) {
        rc = kho_registry_list(c, &regs, &n);
    }
    for (size_t i = 0; rc == KHO_OK && i < n; i++) {
        const struct kho_registry_info *r = &regs[i];
        rc = r->shards > 1 ? plan_shards(c, p, r->name)
                           : plan_group(c, p, r->group_id, r->name, 0,
                                        r->replicas, r->n_replicas);
    }
    free(regs);
    if (rc == KHO_OK) {
        qsort(p->groups, p->n_groups, sizeof(p->groups[0]), by_bgroup);
    }
    return rc;
}

static bool hosts(const struct bgroup *g, uint64_t node)
{
    if (g->everywhere) {
        return true;
    }
    for (size_t k = 0; k < g->n_hosts; k++) {
        if (g->hosts[k] == node) {
            return true;
        }
    }
    return false;
}

/* The node not passed over that hosts the most groups no part holds (the
 * first listed on a tie), or NULL when none hosts any. O(nodes x groups x
 * replicas). */
static struct bnode *plan_pick(struct bplan *p)
{
    struct bnode *best = NULL;
    size_t most = 0;
    for (size_t i = 0; i < p->n_nodes; i++) {
        size_t k = 0;
        for (size_t g = 0; !p->nodes[i].passed && g < p->n_groups; g++) {
            k += p->groups[g].part < 0 && hosts(&p->groups[g], p->nodes[i].id);
        }
        if (k > most) {
            most = k;
            best = &p->nodes[i];
        }
    }
    return best;
}

/* A temporary file for a part, unlinked at once so that it goes on every
 * path, a crash included: in $TMPDIR, else /tmp. */
static int part_tmpfile(struct kho_client *c, int *out)
{
    const char *dir = getenv("TMPDIR");
    dir = dir != NULL && dir[0] != '\0' ? dir : "/tmp";
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        /* A file system without O_TMPFILE: a named file, unlinked. */
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/kho-backup-part.XXXXXX", dir);
        fd = mkostemp(path, O_CLOEXEC);
        if (fd >= 0) {
            unlink(path);
        }
    }
    if (fd < 0) {
        int e = errno;
        return fail(c, e == ENOSPC || e == EDQUOT ? KHO_ENOSPC : KHO_EIO,
                    "a temporary file for a part of the backup in %.100s: %s",
                    dir, strerror(e));
    }
    *out = fd;
    return KHO_OK;
}

/* Takes one part: BEGIN with `ids` at node nd, FETCH into a temporary
 * file (checked as it arrives), END. *begun: the node took it (a failure
 * before is the node's, after it the backup's). The caller holds c->mu. */
static int part_take(struct kho_client *c, const struct bnode *nd,
                     uint64_t *ids, size_t n, struct bpart *part, bool *begun)
{
    *begun = false;
    size_t at = endpoint_at(c, nd->url);
    if (at >= c->n) {
        return fail(c, KHO_EINVAL, "node %.64s has a bad URL", nd->name);
    }
    Kho__Api__Request q = KHO__API__REQUEST__INIT;
    q.op = KHO__API__OP__OP_BACKUP_BEGIN;
    q.client_name = c->name;
    q.n_backup_groups = n;
    q.backup_groups = ids;
    Kho__Api__Response *rs = NULL;
    struct kho_backup_info bi = {0};
    int rc = call_at(c, at, &q, now_ms() + c->timeout_ms, &rs);
    bi.backup_id = rc == KHO_OK ? rs->backup_id : 0;
    response_free(rs);
    if (rc != KHO_OK) {
        return rc;
    }
    *begun = true;
    part->node_id = nd->id;
    snprintf(part->node_name, sizeof(part->node_name), "%s", nd->name);
    rc = part_tmpfile(c, &part->fd);
    if (rc == KHO_OK) {
        rc = backup_fetch(c, at, part->fd, &bi);
    }
    backup_end(c, at, bi.backup_id);
    if (rc == KHO_OK && bi.groups != n) {
        rc = fail(c, KHO_ECORRUPT,
                  "node %.64s gave a backup of %u groups for the %zu asked",
                  nd->name, bi.groups, n);
    }
    part->n_groups = bi.groups;
    if (rc == KHO_OK && lseek(part->fd, 0, SEEK_SET) != 0) {
        rc = fail(c, KHO_EIO, "rewinding a part of the backup: %s",
                  strerror(errno));
    }
    return rc;
}

/* Takes parts until every group is held, or no node left takes the rest.
 * The caller holds c->mu. Bounded: each round passes a node over or holds
 * at least one more group. */
static int plan_take(struct kho_client *c, struct bplan *p)
{
    uint64_t ids[BACKUP_GROUPS_MAX];
    for (struct bnode *nd = plan_pick(p); nd != NULL; nd = plan_pick(p)) {
        if (p->n_parts == KHO_BACKUP_PARTS_MAX) {
            return fail(c, KHO_ETOOLARGE,
                        "the backup would take parts from more than %u "
                        "nodes",
                        KHO_BACKUP_PARTS_MAX);
        }
        size_t n = 0;
        for (size_t g = 0; g < p->n_groups; g++) {
            if (p->groups[g].part < 0 && hosts(&p->groups[g], nd->id)) {
                ids[n++] = p->groups[g].id;
            }
        }
        struct bpart *part = &p->parts[p->n_parts];
        bool begun = false;
        int rc = part_take(c, nd, ids, n, part, &begun);
        if (rc == KHO_ENOMEM || (rc != KHO_OK && begun)) {
            return rc;
        }
        if (rc != KHO_OK) {
            plan_pass(p, nd, rc, c->errmsg);
            continue;
        }
        for (size_t g = 0; g < p->n_groups; g++) {
            if (p->groups[g].part < 0 && hosts(&p->groups[g], nd->id)) {
                p->groups[g].part = (int)p->n_parts;
            }
        }
        p->n_parts++;
    }
    for (size_t g = 0; g < p->n_groups; g++) {
        const struct bgroup *b = &p->groups[g];
        if (b->part < 0) {
            return fail(c,
                        p->last_err != KHO_OK ? p->last_err : KHO_EUNAVAILABLE,
                        "no node takes group %llu (%s shard %u): %s",
                        (unsigned long long)b->id,
                        b->registry[0] != '\0' ? b->registry : "meta", b->shard,
                        p->why[0] != '\0' ? p->why : "no known node hosts it");
        }
    }
    return KHO_OK;
}

/* --- Backups: merging the parts --------------------------------------------
 */

/* The merged file as it is written, checked as a fetched one is. */
struct bout {
    int fd;
    struct bverify v;
    uint32_t crc;   /* running CRC-32C of every byte written */
    uint64_t bytes; /* written */
};

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void put_le64(uint8_t *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}

static int out_put(struct kho_client *c, struct bout *o, const uint8_t *p,
                   size_t n)
{
    int rc = bv_feed(c, &o->v, p, n);
    if (rc != KHO_OK) {
        char why[CLIENT_ERRMSG_BYTES];
        snprintf(why, sizeof(why), "%s", c->errmsg);
        return fail(c, rc, "the merged backup fails its checks: %.200s", why);
    }
    rc = write_fd(c, o->fd, p, n);
    o->crc = crc32c_more(o->crc, p, n);
    o->bytes += n;
    return rc;
}

/* Reads n bytes of a part back. */
static int part_read(struct kho_client *c, const struct bpart *part, uint8_t *p,
                     size_t n)
{
    while (n > 0) {
        ssize_t k = read(part->fd, p, n);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return fail(c, k < 0 ? KHO_EIO : KHO_ECORRUPT,
                        "reading back the part from node %.64s: %s",
                        part->node_name,
                        k < 0 ? strerror(errno) : "it is shorter than it was");
        }
        p += k;
        n -= (size_t)k;
    }
    return KHO_OK;
}

/* Copies group g's GROUP frame and DATA frames, verbatim, from its part. */
static int merge_group(struct kho_client *c, struct bout *o,
                       const struct bpart *part, const struct bgroup *g,
                       uint8_t *buf)
{
    uint8_t f[BACKUP_FRAME_HEADER_BYTES + BACKUP_GROUP_BODY_BYTES];
    int rc = part_read(c, part, f, sizeof(f));
    if (rc != KHO_OK) {
        return rc;
    }
    if (le32(f) != BACKUP_GROUP ||
        le64(f + BACKUP_FRAME_HEADER_BYTES) != g->id) {
        return fail(c, KHO_ECORRUPT,
                    "the part from node %.64s does not hold group %llu next",
                    part->node_name, (unsigned long long)g->id);
    }
    uint64_t left = le64(f + BACKUP_FRAME_HEADER_BYTES + 24);
    rc = out_put(c, o, f, sizeof(f));
    /* out_put checks every frame: here only what the copy needs. */
    while (rc == KHO_OK && left > 0) {
        uint8_t h[BACKUP_FRAME_HEADER_BYTES];
        rc = part_read(c, part, h, sizeof(h));
        uint32_t len = rc == KHO_OK ? le32(h + 4) : 0;
        if (rc == KHO_OK && (le32(h) != BACKUP_DATA || len > left)) {
            rc = fail(c, KHO_ECORRUPT,
                      "group %llu's data in the part from node %.64s does "
                      "not add up",
                      (unsigned long long)g->id, part->node_name);
        }
        if (rc == KHO_OK) {
            rc = out_put(c, o, h, sizeof(h));
            left -= len;
        }
        for (uint32_t k = 0; rc == KHO_OK && len > 0; len -= k) {
            k = len < BACKUP_COPY_BYTES ? len : BACKUP_COPY_BYTES;
            rc = part_read(c, part, buf, k);
            if (rc == KHO_OK) {
                rc = out_put(c, o, buf, k);
            }
        }
    }
    return rc;
}

/* Reads every part's header (checked when fetched) and writes the merged
 * file's: a new id, the meta group's node, now, every group. */
static int merge_header(struct kho_client *c, struct bplan *p, struct bout *o,
                        const struct bpart *meta, uint64_t backup_id)
{
    uint32_t chunk_max = 0;
    for (size_t i = 0; i < p->n_parts; i++) {
        uint8_t h[BACKUP_HEADER_BYTES];
        int rc = part_read(c, &p->parts[i], h, sizeof(h));
        if (rc != KHO_OK) {
            return rc;
        }
        chunk_max = le32(h + 12) > chunk_max ? le32(h + 12) : chunk_max;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint8_t h[BACKUP_HEADER_BYTES];
    memcpy(h, backup_magic, sizeof(backup_magic));
    put_le32(h + 8, BACKUP_VERSION);
    put_le32(h + 12, chunk_max);
    put_le64(h + 16, backup_id);
    put_le64(h + 24, meta->node_id);
    put_le64(h + 32,
             (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u);
    put_le32(h + 40, (uint32_t)p->n_groups);
    put_le32(h + 44, crc32c_of(h, 44));
    return out_put(c, o, h, sizeof(h));
}

/* The END frame: the bytes before it, the groups, their CRC-32C. */
static int merge_end(struct kho_client *c, struct bplan *p, struct bout *o)
{
    uint8_t e[BACKUP_FRAME_HEADER_BYTES + BACKUP_END_BODY_BYTES];
    uint8_t *body = e + BACKUP_FRAME_HEADER_BYTES;
    put_le32(e, BACKUP_END);
    put_le32(e + 4, BACKUP_END_BODY_BYTES);
    put_le64(body, o->bytes);
    put_le32(body + 8, (uint32_t)p->n_groups);
    put_le32(body + 12, o->crc ^ 0xFFFFFFFFu);
    uint32_t crc = crc32c_more(0xFFFFFFFFu, e, 8);
    put_le32(e + 8,
             crc32c_more(crc, body, BACKUP_END_BODY_BYTES) ^ 0xFFFFFFFFu);
    int rc = out_put(c, o, e, sizeof(e));
    if (rc == KHO_OK && !o->v.ended) {
        rc = fail(c, KHO_ECORRUPT, "the merged backup did not end");
    }
    return rc;
}

static uint64_t fresh_backup_id(void)
{
    uint64_t id = 0;
    if (getrandom(&id, sizeof(id), 0) != (ssize_t)sizeof(id) || id == 0) {
        id = now_ms() ^ ((uint64_t)getpid() << 40) ^ 0x6b686f6261636bULL;
    }
    return id;
}

/* Writes the parts to fd as one backup: a k-way merge of the parts (each
 * in increasing group order) driven by the plan, which knows each group's
 * part. The caller holds c->mu. Memory: one copy buffer. */
static int merge_parts(struct kho_client *c, struct bplan *p, int fd,
                       struct kho_backup_info *info)
{
    struct bout *o = calloc(1, sizeof(*o));
    uint8_t *buf = malloc(BACKUP_COPY_BYTES);
    if (o == NULL || buf == NULL) {
        free(o);
        free(buf);
        return KHO_ENOMEM;
    }
    o->fd = fd;
    o->v.file_crc = 0xFFFFFFFFu;
    o->crc = 0xFFFFFFFFu;
    /* Group 0 comes first, so it is held by a part. */
    const struct bpart *meta = &p->parts[p->groups[0].part];
    info->backup_id = fresh_backup_id();
    info->node_id = meta->node_id;
    snprintf(info->node_name, sizeof(info->node_name), "%s", meta->node_name);
    int rc = merge_header(c, p, o, meta, info->backup_id);
    for (size_t g = 0; rc == KHO_OK && g < p->n_groups; g++) {
        rc =
            merge_group(c, o, &p->parts[p->groups[g].part], &p->groups[g], buf);
    }
    if (rc == KHO_OK) {
        rc = merge_end(c, p, o);
    }
    info->bytes = o->bytes;
    info->groups = (uint32_t)p->n_groups;
    free(o);
    free(buf);
    return rc;
}

/* A backup of a cluster no node of which hosts every group, from several
 * nodes (see the top of this section). Not holding c->mu. */
static int backup_parts(struct kho_client *c, int fd, uint32_t silent,
                        struct kho_backup_info *info)
{
    struct bplan *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return KHO_ENOMEM;
    }
    p->silent = silent;
    for (size_t i = 0; i < KHO_BACKUP_PARTS_MAX; i++) {
        p->parts[i].fd = -1;
    }
    int rc = plan_nodes(c, p);
    for (unsigned k = 0; rc == KHO_OK && k < BACKUP_LISTINGS; k++) {
        rc = plan_groups(c, p);
        if (rc == KHO_OK) {
            pthread_mutex_lock(&c->mu);
            rc = plan_take(c, p);
            pthread_mutex_unlock(&c->mu);
        }
    }
    if (rc == KHO_OK) {
        pthread_mutex_lock(&c->mu);
        rc = merge_parts(c, p, fd, info);
        pthread_mutex_unlock(&c->mu);
    }
    /* The parts taken, and one that failed half-way. */
    for (size_t i = 0; i < KHO_BACKUP_PARTS_MAX; i++) {
        if (p->parts[i].fd >= 0) {
            close(p->parts[i].fd);
        }
    }
    free(p);
    return rc;
}

int kho_backup(struct kho_client *c, int fd, struct kho_backup_info *info)
{
    struct kho_backup_info mine;
    if (c == NULL || fd < 0) {
        return refuse(c, KHO_EINVAL, "no file descriptor");
    }
    pthread_once(&crc_once, crc_init);
    memset(&mine, 0, sizeof(mine));
    pthread_mutex_lock(&c->mu);
    size_t at = 0;
    bool lacking = false;
    uint32_t silent = 0;
    int rc = backup_begin(c, &at, &mine, &lacking, &silent);
    if (rc == KHO_OK) {
        rc = backup_fetch(c, at, fd, &mine);
        backup_end(c, at, mine.backup_id);
    }
    pthread_mutex_unlock(&c->mu);
    if (rc == KHO_EINVAL && lacking) {
        /* A sharded cluster: no node hosts every group. */
        memset(&mine, 0, sizeof(mine));
        rc = backup_parts(c, fd, silent, &mine);
    }
    if (rc == KHO_OK) {
        /* Nothing failed in the end: no refusal on the way is left. */
        pthread_mutex_lock(&c->mu);
        c->errmsg[0] = '\0';
        pthread_mutex_unlock(&c->mu);
    }
    if (info != NULL) {
        *info = mine;
    }
    return rc;
}

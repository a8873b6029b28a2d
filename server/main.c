/*
 * main.c - khod, the kho node daemon: flags and config file, start-up,
 * signals.
 *
 *   khod --name hanoi --id 1 --data DIR --peer-listen URL --client-listen URL
 *        --peers 1=PEERURL=CLIENTURL[=NAME],2=...,3=...
 *        [--cluster NAME] [--log-level info] [--map-size-mb N]
 *        [--quota-mb N] [--http-listen URL] [--config FILE]
 *
 * Registries are created at run time (khoctl registry create); the meta
 * group, replicated on every node listed in --peers, records them.
 *
 * A config file (inih) holds the same keys without the dashes, in a
 * [khod] section or none; flags given on the command line win.
 *
 * Start-up order: data directory and identity, store, node (groups),
 * transport, client API, then the raft thread. SIGTERM or SIGINT stops in
 * the reverse order: raft thread (pending requests are answered
 * KHO_EUNAVAILABLE), API, transport, store.
 */
#include <errno.h>
#include <ini.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../client/kho.h"
#include "api/api.h"
#include "common/log.h"
#include "http/http.h"
#include "node/meta.h"
#include "node/node.h"
#include "node/restore.h"
#include "store/store.h"
#include "transport/peer.h"

#define MAIN_OPT_BYTES 1024u

/* The quota defaults to this fraction of the map: the log, a snapshot of
 * each group (today a full copy of its records) and LMDB's copy-on-write
 * pages need the rest. */
#define MAIN_QUOTA_MAP_DIVISOR 4u
/* --join: how long each ask of the cluster may take, and how many rounds
 * of asking every endpoint (one second apart) before giving up. */
#define MAIN_JOIN_TIMEOUT_MS 2000u
#define MAIN_JOIN_TRIES 30

struct opts {
    char name[NODE_NAME_BYTES];
    uint64_t id;
    char data[MAIN_OPT_BYTES];
    char peer_listen[NET_URL_BYTES_MAX];
    char client_listen[API_URL_BYTES_MAX];
    char peers[MAIN_OPT_BYTES * 4];
    char cluster[NODE_NAME_BYTES];
    char log_level[16];
    uint64_t map_size_mb;
    uint64_t quota_mb;
    char join[MAIN_OPT_BYTES]; /* client URLs of a running cluster */
    uint64_t compact_entries;
    uint64_t compact_mb;
    char http_listen[HTTP_URL_BYTES_MAX]; /* "": no HTTP endpoints */
    char restore[MAIN_OPT_BYTES]; /* a backup to start a new cluster from */
    bool quorum_reads; /* --reads quorum: no leader leases */
    bool set[32];
    struct node_peer peer[NET_PEERS_MAX];
    size_t n_peers;
};

enum { O_NAME, O_ID, O_DATA, O_PL, O_CL, O_PEERS, O_CLUSTER, O_LOG,
       O_MAP, O_QUOTA, O_JOIN, O_HTTP, O_COMPACT, O_RESTORE, O_COMPACT_MB,
       O_READS, O_COUNT };
static const char *const opt_names[O_COUNT] = {
    "name", "id", "data", "peer-listen", "client-listen", "peers",
    "cluster", "log-level", "map-size-mb", "quota-mb", "join",
    "http-listen", "compact-entries", "restore", "compact-mb", "reads"};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: khod --name NAME --id ID --data DIR --peer-listen URL\n"
            "            --client-listen URL --peers "
            "ID=PEERURL=CLIENTURL[=NAME],...\n"
            "            [--cluster NAME] "
            "[--log-level error|warn|info|debug]\n"
            "            [--map-size-mb N] [--quota-mb N] [--compact-entries N]\n"
            "            [--compact-mb N] [--reads lease|quorum]\n"
            "            [--config FILE]\n"
            "            [--restore FILE]  (first start of a new cluster from "
            "a backup)\n"
            "            [--http-listen http://HOST:PORT]  (/health, /ready, "
            "/metrics)\n"
            "       khod --name NAME --join CLIENTURL,... --data DIR "
            "--peer-listen URL\n"
            "            --client-listen URL [...]   (a node added with "
            "khoctl member add)\n");
}

static int set_opt(struct opts *o, int which, const char *v, bool override)
{
    if (o->set[which] && !override) {
        return 0;
    }
    o->set[which] = true;
    char *end = NULL;
    switch (which) {
    case O_NAME:
        snprintf(o->name, sizeof(o->name), "%s", v);
        break;
    case O_ID:
        errno = 0;
        o->id = strtoull(v, &end, 10);
        if (errno != 0 || *end != '\0' || o->id == 0) {
            fprintf(stderr, "khod: --id must be a positive integer\n");
            return -1;
        }
        break;
    case O_DATA:
        snprintf(o->data, sizeof(o->data), "%s", v);
        break;
    case O_PL:
        snprintf(o->peer_listen, sizeof(o->peer_listen), "%s", v);
        break;
    case O_CL:
        snprintf(o->client_listen, sizeof(o->client_listen), "%s", v);
        break;
    case O_PEERS:
        snprintf(o->peers, sizeof(o->peers), "%s", v);
        break;
    case O_CLUSTER:
        snprintf(o->cluster, sizeof(o->cluster), "%s", v);
        break;
    case O_LOG:
        snprintf(o->log_level, sizeof(o->log_level), "%s", v);
        break;
    case O_MAP:
        errno = 0;
        o->map_size_mb = strtoull(v, &end, 10);
        if (errno != 0 || *end != '\0' || o->map_size_mb == 0) {
            fprintf(stderr, "khod: --map-size-mb must be a positive "
                            "integer\n");
            return -1;
        }
        break;
    case O_COMPACT:
        errno = 0;
        o->compact_entries = strtoull(v, &end, 10);
        if (errno != 0 || *end != '\0' ||
            o->compact_entries < NODE_COMPACT_ENTRIES_MIN ||
            o->compact_entries > NODE_COMPACT_ENTRIES_MAX) {
            fprintf(stderr, "khod: --compact-entries must be %u..%u\n",
                    NODE_COMPACT_ENTRIES_MIN, NODE_COMPACT_ENTRIES_MAX);
            return -1;
        }
        break;
    case O_COMPACT_MB:
        errno = 0;
        o->compact_mb = strtoull(v, &end, 10);
        if (errno != 0 || *end != '\0' ||
            (o->compact_mb << 20) < NODE_COMPACT_BYTES_MIN ||
            (o->compact_mb << 20) > NODE_COMPACT_BYTES_MAX) {
            fprintf(stderr, "khod: --compact-mb must be 1..%llu\n",
                    (unsigned long long)(NODE_COMPACT_BYTES_MAX >> 20));
            return -1;
        }
        break;
    case O_READS:
        if (strcmp(v, "lease") != 0 && strcmp(v, "quorum") != 0) {
            fprintf(stderr, "khod: --reads must be lease or quorum\n");
            return -1;
        }
        o->quorum_reads = strcmp(v, "quorum") == 0;
        break;
    case O_JOIN:
        snprintf(o->join, sizeof(o->join), "%s", v);
        break;
    case O_RESTORE:
        snprintf(o->restore, sizeof(o->restore), "%s", v);
        break;
    case O_HTTP:
        snprintf(o->http_listen, sizeof(o->http_listen), "%s", v);
        break;
    case O_QUOTA:
        errno = 0;
        o->quota_mb = strtoull(v, &end, 10);
        if (errno != 0 || *end != '\0' || o->quota_mb == 0) {
            fprintf(stderr, "khod: --quota-mb must be a positive integer\n");
            return -1;
        }
        break;
    }
    return 0;
}

static int ini_cb(void *user, const char *section, const char *name,
                  const char *value)
{
    struct opts *o = user;
    if (section[0] != '\0' && strcmp(section, "khod") != 0) {
        return 1;
    }
    for (int i = 0; i < O_COUNT; i++) {
        if (strcmp(name, opt_names[i]) == 0) {
            return set_opt(o, i, value, false) == 0;
        }
    }
    fprintf(stderr, "khod: config: unknown key '%s'\n", name);
    return 0;
}

/* "1=tcp://a:1=tcp://a:2,2=..." */
static int parse_peers(struct opts *o)
{
    char buf[sizeof(o->peers)];
    snprintf(buf, sizeof(buf), "%s", o->peers);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        char *e1 = strchr(tok, '=');
        char *e2 = e1 != NULL ? strchr(e1 + 1, '=') : NULL;
        char *e3 = e2 != NULL ? strchr(e2 + 1, '=') : NULL;
        if (e2 == NULL || o->n_peers >= NET_PEERS_MAX) {
            fprintf(stderr, "khod: --peers: bad entry '%s' (want "
                            "ID=PEERURL=CLIENTURL[=NAME], at most %u)\n",
                    tok, NET_PEERS_MAX);
            return -1;
        }
        *e1 = *e2 = '\0';
        if (e3 != NULL) {
            *e3 = '\0';
        }
        struct node_peer *p = &o->peer[o->n_peers];
        char *end = NULL;
        p->id = strtoull(tok, &end, 10);
        if (*end != '\0' || p->id == 0) {
            fprintf(stderr, "khod: --peers: bad node id '%s'\n", tok);
            return -1;
        }
        for (size_t i = 0; i < o->n_peers; i++) {
            if (o->peer[i].id == p->id) {
                fprintf(stderr, "khod: --peers: node id %llu twice\n",
                        (unsigned long long)p->id);
                return -1;
            }
        }
        snprintf(p->peer_url, sizeof(p->peer_url), "%s", e1 + 1);
        snprintf(p->client_url, sizeof(p->client_url), "%s", e2 + 1);
        if (e3 != NULL) {
            snprintf(p->name, sizeof(p->name), "%s", e3 + 1);
        } else {
            snprintf(p->name, sizeof(p->name), "node%llu",
                     (unsigned long long)p->id);
        }
        if (p->id == o->id) {
            memcpy(p->name, o->name, sizeof(p->name));
        }
        o->n_peers++;
    }
    return 0;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    const char *config = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            exit(0);
        }
        if (strncmp(argv[i], "--", 2) != 0 || i + 1 >= argc) {
            fprintf(stderr, "khod: bad argument '%s'\n", argv[i]);
            usage(stderr);
            return -1;
        }
        const char *name = argv[i] + 2, *v = argv[++i];
        if (strcmp(name, "config") == 0) {
            config = v;
            continue;
        }
        int which = -1;
        for (int k = 0; k < O_COUNT; k++) {
            if (strcmp(name, opt_names[k]) == 0) {
                which = k;
            }
        }
        if (which < 0) {
            fprintf(stderr, "khod: unknown flag --%s\n", name);
            usage(stderr);
            return -1;
        }
        if (set_opt(o, which, v, true) != 0) {
            return -1;
        }
    }
    if (config != NULL) {
        int line = ini_parse(config, ini_cb, o);
        if (line < 0) {
            fprintf(stderr, "khod: cannot read config file %s\n", config);
            return -1;
        }
        if (line > 0) {
            fprintf(stderr, "khod: config file %s: error on line %d\n",
                    config, line);
            return -1;
        }
    }
    const int required[] = {O_NAME, O_ID, O_DATA, O_PL, O_CL, O_PEERS};
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        /* A joining node learns its id and the peers from the cluster. */
        bool joined = o->set[O_JOIN] &&
                      (required[i] == O_ID || required[i] == O_PEERS);
        if (!o->set[required[i]] && !joined) {
            fprintf(stderr, "khod: --%s is required\n",
                    opt_names[required[i]]);
            usage(stderr);
            return -1;
        }
    }
    return parse_peers(o);
}

/* Creates the data directory if needed and checks that it belongs to this
 * node of this cluster (the identity file), so a node never starts on
 * another node's data. */
static int check_data_dir(const struct opts *o)
{
    if (mkdir(o->data, 0750) != 0 && errno != EEXIST) {
        fprintf(stderr, "khod: cannot create data directory %s: %s\n",
                o->data, strerror(errno));
        return -1;
    }
    if (access(o->data, R_OK | W_OK | X_OK) != 0) {
        fprintf(stderr, "khod: data directory %s is not usable: %s\n",
                o->data, strerror(errno));
        return -1;
    }
    char path[MAIN_OPT_BYTES + 32], want[256], have[256] = "";
    snprintf(path, sizeof(path), "%s/identity", o->data);
    snprintf(want, sizeof(want), "cluster=%s id=%llu\n", o->cluster,
             (unsigned long long)o->id);
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        if (fgets(have, sizeof(have), f) == NULL) {
            have[0] = '\0';
        }
        fclose(f);
        if (strcmp(have, want) != 0) {
            fprintf(stderr,
                    "khod: data directory %s belongs to another node "
                    "(identity: %.*s; this node: cluster=%s id=%llu)\n",
                    o->data, (int)strcspn(have, "\n"), have, o->cluster,
                    (unsigned long long)o->id);
            return -1;
        }
        return 0;
    }
    if (errno != ENOENT) {
        fprintf(stderr, "khod: cannot read %s: %s\n", path, strerror(errno));
        return -1;
    }
    f = fopen(path, "w");
    if (f == NULL || fputs(want, f) == EOF || fflush(f) != 0 ||
        fsync(fileno(f)) != 0) {
        fprintf(stderr, "khod: cannot write %s: %s\n", path, strerror(errno));
        if (f != NULL) {
            fclose(f);
        }
        return -1;
    }
    fclose(f);
    return 0;
}

/*
 * --join: asks the running cluster (any of the client URLs in o->join) for
 * its nodes; this node must have been added under its name (khoctl member
 * add), which gives its id. The nodes become o->peer.
 */
static int resolve_join(struct opts *o)
{
    /* A restart: the node joined before, its id is in its identity file
     * and its peers are in its copy of the meta group. */
    char path[MAIN_OPT_BYTES + 32];
    snprintf(path, sizeof(path), "%s/identity", o->data);
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        char cluster[NODE_NAME_BYTES];
        unsigned long long id = 0;
        int got = fscanf(f, "cluster=%64s id=%llu", cluster, &id);
        fclose(f);
        if (got == 2 && id != 0) {
            o->id = id;
            return 0;
        }
    }
    struct kho_client *c = NULL;
    struct kho_node_status *st = calloc(1, sizeof(*st));
    int rc = st != NULL ? kho_client_open(o->join, MAIN_JOIN_TIMEOUT_MS, &c)
                        : KHO_ENOMEM;
    for (int tries = 0; rc == KHO_OK && tries < MAIN_JOIN_TRIES; tries++) {
        rc = KHO_EUNAVAILABLE;
        for (size_t i = 0; rc != KHO_OK && i < kho_client_endpoints(c); i++) {
            rc = kho_node_status(c, i, st);
        }
        if (rc == KHO_OK) {
            break;
        }
        sleep(1);
    }
    kho_client_close(c);
    if (rc != KHO_OK) {
        fprintf(stderr, "khod: --join: no node of %s answers: %s\n", o->join,
                kho_strerror(rc));
        free(st);
        return -1;
    }
    uint64_t self = 0;
    o->n_peers = 0;
    for (size_t i = 0; i < st->n_nodes && o->n_peers < NET_PEERS_MAX; i++) {
        if (st->nodes[i].removed) {
            continue;
        }
        struct node_peer *p = &o->peer[o->n_peers++];
        p->id = st->nodes[i].id;
        p->state = META_NODE_MEMBER;
        snprintf(p->name, sizeof(p->name), "%s", st->nodes[i].name);
        snprintf(p->peer_url, sizeof(p->peer_url), "%s", st->nodes[i].peer_url);
        snprintf(p->client_url, sizeof(p->client_url), "%s",
                 st->nodes[i].client_url);
        if (strcmp(p->name, o->name) == 0) {
            self = p->id;
        }
    }
    free(st);
    if (self == 0) {
        fprintf(stderr, "khod: --join: the cluster has no node named '%s'; "
                        "add it first: khoctl member add %s PEER_URL "
                        "CLIENT_URL\n",
                o->name, o->name);
        return -1;
    }
    if (o->set[O_ID] && o->id != self) {
        fprintf(stderr, "khod: --join: the cluster knows '%s' as node %llu, "
                        "not %llu\n",
                o->name, (unsigned long long)self, (unsigned long long)o->id);
        return -1;
    }
    o->id = self;
    return 0;
}

static int build_node_config(const struct opts *o, struct node_config *nc)
{
    memset(nc, 0, sizeof(*nc));
    nc->id = o->id;
    snprintf(nc->name, sizeof(nc->name), "%s", o->name);
    bool self = false;
    if (o->n_peers > RAFT_MEMBERS_MAX) {
        fprintf(stderr, "khod: --peers lists %zu nodes; the meta group "
                        "holds at most %u voters\n",
                o->n_peers, RAFT_MEMBERS_MAX);
        return -1;
    }
    for (size_t i = 0; i < o->n_peers; i++) {
        nc->initial.members[i].id = o->peer[i].id;
        nc->initial.members[i].role = RAFT_VOTER;
        self = self || o->peer[i].id == o->id;
    }
    nc->initial.n = (uint32_t)o->n_peers;
    memcpy(nc->peers, o->peer, o->n_peers * sizeof(o->peer[0]));
    nc->n_peers = o->n_peers;
    nc->compact_entries = (uint32_t)o->compact_entries;
    nc->lease_reads = !o->quorum_reads;
    nc->compact_bytes = o->compact_mb << 20;
    if (o->set[O_JOIN]) {
        /* The cluster's members are in its meta group, which this node
         * receives once the meta leader has added it. */
        nc->join = true;
        nc->initial.n = 0;
        return 0;
    }
    if (!self) {
        fprintf(stderr, "khod: --peers does not list this node (id %llu)\n",
                (unsigned long long)o->id);
        return -1;
    }
    return 0;
}

/* --restore: the backup is read and checked whole before anything is
 * created; a bad one stops the start-up. */
static int check_restore(const struct opts *o, struct store_backup_info *b)
{
    char err[512];
    if (o->set[O_JOIN]) {
        fprintf(stderr, "khod: --restore starts a new cluster; it cannot be "
                        "combined with --join\n");
        return -1;
    }
    if (node_restore_check(o->restore, b, err, sizeof(err)) != KHO_OK) {
        fprintf(stderr, "khod: --restore: %s\n", err);
        return -1;
    }
    return 0;
}

/* --restore, once the store is open: restores into an empty store, or
 * starts from one that came from the same backup. */
static int restore_store(const struct opts *o,
                         const struct store_backup_info *b, struct store *st,
                         const struct node_config *nc)
{
    char err[512];
    bool done = false;
    if (node_restore(o->restore, b, st, nc, &done, err, sizeof(err)) !=
        KHO_OK) {
        LOGE("--restore %s: %s", o->restore, err);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct opts o;
    snprintf(o.cluster, sizeof(o.cluster), "kho");
    snprintf(o.log_level, sizeof(o.log_level), "info");
    o.map_size_mb = STORE_MAP_BYTES_DEFAULT >> 20;
    if (parse_args(argc, argv, &o) != 0) {
        return 2;
    }
    int level = log_level_parse(o.log_level);
    if (level < 0) {
        fprintf(stderr, "khod: bad --log-level '%s'\n", o.log_level);
        return 2;
    }
    log_setup((enum log_level)level, o.name);
    static struct node_config nc;
    static struct store_backup_info backup;
    if ((o.set[O_JOIN] && resolve_join(&o) != 0) ||
        build_node_config(&o, &nc) != 0 ||
        (o.set[O_RESTORE] && check_restore(&o, &backup) != 0) ||
        check_data_dir(&o) != 0) {
        return 2;
    }

    /* Threads started from here on inherit this mask; main sigwaits. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char dbdir[MAIN_OPT_BYTES + 8], err[512] = "";
    snprintf(dbdir, sizeof(dbdir), "%s/db", o.data);
    struct store_opts so;
    store_opts_defaults(&so);
    so.map_size_bytes = o.map_size_mb << 20;
    struct store *st = NULL;
    struct node *node = NULL;
    struct net *net = NULL;
    struct api *api = NULL;
    struct http *http = NULL;
    int exit_code = 1;
    int rc = store_open(dbdir, &so, &st);
    if (rc != KHO_OK) {
        LOGE("cannot open the store in %s: %s (%s)", dbdir, kho_strerror(rc),
             store_errmsg(NULL));
        return 1;
    }
    if (o.set[O_RESTORE] && restore_store(&o, &backup, st, &nc) != 0) {
        store_close(st);
        return 2;
    }
    rc = node_create(&nc, st, &node, err, sizeof(err));
    if (rc != KHO_OK) {
        LOGE("cannot start the node: %s", err);
        goto out;
    }
    rc = net_open(meta_name_hash(o.cluster), o.id, o.peer_listen, node_on_batch,
                  node, &net, err, sizeof(err));
    if (rc != KHO_OK) {
        LOGE("%s%s", err,
             rc == KHO_EBUSY ? " (is another process using the port?)" : "");
        goto out;
    }
    node_set_net(node, net); /* dials the peers */
    struct api_config ac = {
        .url = o.client_listen,
        .node = node,
        .st = st,
        .peers = o.peer,
        .n_peers = o.n_peers,
        .quota_bytes = o.quota_mb != 0
                           ? o.quota_mb << 20
                           : so.map_size_bytes / MAIN_QUOTA_MAP_DIVISOR,
    };
    if (ac.quota_bytes > so.map_size_bytes) {
        LOGE("--quota-mb %llu is larger than the map (%llu MiB)",
             (unsigned long long)o.quota_mb,
             (unsigned long long)(so.map_size_bytes >> 20));
        goto out;
    }
    rc = api_open(&ac, &api, err, sizeof(err));
    if (rc != KHO_OK) {
        LOGE("%s%s", err,
             rc == KHO_EBUSY ? " (is another process using the port?)" : "");
        goto out;
    }
    if (node_start(node) != KHO_OK) {
        LOGE("cannot start the raft thread");
        goto out;
    }
    if (o.http_listen[0] != '\0') {
        struct http_config hc = {.url = o.http_listen,
                                 .node = node,
                                 .net = net,
                                 .st = st,
                                 .quota_bytes = ac.quota_bytes};
        rc = http_open(&hc, &http, err, sizeof(err));
        if (rc != KHO_OK) {
            LOGE("%s%s", err,
                 rc == KHO_EBUSY ? " (is another process using the port?)"
                                 : "");
            goto out;
        }
        LOGI("health and metrics on %s (/health, /ready, /metrics)",
             o.http_listen);
    }
    LOGI("node %llu (%s) serving clients on %s, peers on %s; space quota "
         "%llu MiB of a %llu MiB map",
         (unsigned long long)o.id, o.name, o.client_listen, o.peer_listen,
         (unsigned long long)(ac.quota_bytes >> 20),
         (unsigned long long)(so.map_size_bytes >> 20));
    int sig = 0;
    sigwait(&sigs, &sig);
    LOGI("signal %d: stopping", sig);
    exit_code = 0;
out:
    http_close(http); /* its handlers read the node */
    if (node != NULL) {
        node_stop(node);
    }
    api_close(api);
    net_close(net);
    node_destroy(node);
    store_close(st);
    if (exit_code == 0) {
        LOGI("stopped cleanly");
    }
    return exit_code;
}

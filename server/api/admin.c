/*
 * admin.c - consistency checks and backups (see internal.h).
 *
 * Checks (store.h, "Consistency checks"):
 *   OP_CHECK_MARK   the group's leader proposes a check marker; every
 *                   replica hashes its state machine when it applies it;
 *                   answers the marker's index (NOT_LEADER hints as for
 *                   writes);
 *   OP_CHECK_HASH   any replica answers the hash it recorded at a marker
 *                   (or its latest one), its applied index and its alarm;
 *   OP_CHECK_ALARM  raises or clears this node's alarm for a group, kept
 *                   in its store across restarts and shown by OP_STATUS.
 *
 * Backups (store.h, "Backups"), one at a time per node:
 *   OP_BACKUP_BEGIN a thread writes every local group (the meta group and
 *                   every registry, all of which must live here) - or
 *                   exactly the groups the request lists (backup_groups:
 *                   increasing ids, each hosted here), so that a client
 *                   can take a sharded cluster from several nodes - from
 *                   one LMDB read transaction into an unlinked file in the
 *                   store's directory; answers the backup's id at once;
 *   OP_BACKUP_FETCH serves the file by offset, up to one chunk, as it is
 *                   written (a retried fetch gets the same bytes);
 *   OP_BACKUP_END   lets the session go. A session nobody fetched from for
 *                   ADMIN_BACKUP_IDLE_MS goes by itself; either way the
 *                   file goes with it.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "../common/log.h"
#include "internal.h"

/* A backup session nobody fetched from for this long is dropped. */
#define ADMIN_BACKUP_IDLE_MS 60000u
#define ADMIN_ERRMSG_BYTES 256u
/* Groups one backup session holds: as many as one node may host, all of
 * which one backup file can take. */
#define ADMIN_BACKUP_GROUPS_MAX NODE_GROUPS_MAX

_Static_assert(ADMIN_BACKUP_GROUPS_MAX <= STORE_BACKUP_GROUPS_MAX,
               "a backup session's groups fit one backup file");

/* --- Shared --------------------------------------------------------------- */

static bool is_admin_op(const Kho__Api__Request *q)
{
    return q->op == KHO__API__OP__OP_CHECK_MARK ||
           q->op == KHO__API__OP__OP_CHECK_HASH ||
           q->op == KHO__API__OP__OP_CHECK_ALARM ||
           q->op == KHO__API__OP__OP_BACKUP_BEGIN ||
           q->op == KHO__API__OP__OP_BACKUP_FETCH ||
           q->op == KHO__API__OP__OP_BACKUP_END;
}

static void alarm_to_pb(uint64_t gid, const struct store_check_alarm *a,
                        Kho__Api__CheckAlarm *out)
{
    kho__api__check_alarm__init(out);
    out->group_id = gid;
    out->index = a->index;
    out->hash = a->hash;
    out->expected = a->expected;
    out->time_ms = a->time_ms;
}

/* --- Checks --------------------------------------------------------------- */

/* The group a CHECK_MARK names: a registry (which must live here; else a
 * hint where to go), or group_id when the registry is "" (the meta group
 * has no name). Replies and returns false when it cannot go on. */
static bool mark_group(struct worker *w, uint64_t *gid)
{
    const Kho__Api__Request *q = w->rq;
    struct node *n = w->api->node;
    struct node_registry reg;
    if (q->registry[0] == '\0') {
        *gid = q->group_id;
        return true;
    }
    uint32_t shard = q->shard > 0 ? q->shard - 1 : 0;
    int rc = node_shard(n, q->registry, shard, &reg);
    /* A shard may also be named by its group id. */
    for (uint32_t s = 1; rc == KHO_OK && q->group_id != 0 &&
                         reg.group_id != q->group_id && s < reg.n_shards;
         s++) {
        shard = s;
        rc = node_shard(n, q->registry, s, &reg);
    }
    if (rc == KHO_OK && q->group_id != 0 && reg.group_id != q->group_id) {
        api_reply_errf(w, KHO_ENOTFOUND, 0,
                       "registry '%s' has no shard with group %llu",
                       q->registry, (unsigned long long)q->group_id);
        return false;
    }
    if (rc != KHO_OK) {
        uint64_t meta = node_leader_of(n, NODE_META_GROUP);
        if (meta != 0 && meta != node_id(n)) {
            api_reply_errf(w, KHO_ENOTLEADER, meta,
                           "registry '%s' is unknown here; the meta leader "
                           "knows every registry",
                           q->registry);
        } else {
            api_reply_errf(w, KHO_ENOTFOUND, 0,
                           "unknown registry '%s' (or no shard %u)",
                           q->registry, shard);
        }
        return false;
    }
    if (!reg.local) {
        api_reply_errf(w, KHO_ENOTLEADER, reg.replicas[0],
                       "shard %u of registry '%s' is not hosted on this node",
                       shard, q->registry);
        return false;
    }
    *gid = reg.group_id;
    return true;
}

static void serve_check_mark(struct worker *w)
{
    uint64_t gid = 0;
    if (!mark_group(w, &gid)) {
        return;
    }
    /* No session: a marker applied twice (a retry) is harmless, and the
     * caller compares the hashes of whichever index it was given. */
    struct store_request sr = {.flags = STORE_REQ_CHECK,
                               .time_ms = clock_wall_ms()};
    api_propose(w, gid, &sr);
}

static void answer_check_mark(struct worker *w)
{
    const struct node_req *r = &w->req;
    if (r->err == KHO_ENOTFOUND) {
        api_reply_errf(w, KHO_ENOTFOUND, 0,
                       "group %llu is not hosted on "
                       "this node",
                       (unsigned long long)r->group_id);
        return;
    }
    if (r->err != KHO_OK) {
        api_reply_err(w, r->err,
                      r->err == KHO_ENOTLEADER && r->leader == 0
                          ? "no leader known for this group yet"
                          : NULL,
                      r->leader);
        return;
    }
    if (r->res.result != KHO_OK) {
        api_reply_err(w, r->res.result, "the check marker was refused", 0);
        return;
    }
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    rs.check_index = r->res.revision;
    rs.revision = r->res.revision;
    api_reply(w, &rs);
}

static void serve_check_hash(struct worker *w)
{
    const Kho__Api__Request *q = w->rq;
    struct api *a = w->api;
    struct store_check_mark m;
    struct store_check_alarm al;
    uint64_t applied = 0;
    int rc = store_check_get(a->st, q->group_id, q->check_index, &m, &applied);
    if (rc == KHO_ENOTFOUND) {
        api_reply_errf(w, rc, 0, "group %llu is not hosted on this node",
                       (unsigned long long)q->group_id);
        return;
    }
    if (rc != KHO_OK) {
        api_reply_err(w, rc, store_errmsg(a->st), 0);
        return;
    }
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    Kho__Api__CheckAlarm pa;
    rs.node_id = node_id(a->node);
    rs.node_name = (char *)node_name(a->node);
    rs.check_index = m.index;
    rs.check_hash = m.hash;
    rs.check_applied = applied;
    if (store_check_alarm(a->st, q->group_id, &al) == KHO_OK) {
        alarm_to_pb(q->group_id, &al, &pa);
        rs.check_alarm = &pa;
    }
    api_reply(w, &rs);
}

static void serve_check_alarm(struct worker *w)
{
    const Kho__Api__Request *q = w->rq;
    struct api *a = w->api;
    struct store_check_alarm al = {.index = q->check_index,
                                   .hash = q->check_hash,
                                   .expected = q->check_expected,
                                   .time_ms = clock_wall_ms()};
    int rc =
        store_check_alarm_set(a->st, q->group_id, q->check_clear ? NULL : &al);
    if (rc != KHO_OK) {
        api_reply_err(w, rc,
                      rc == KHO_ENOTFOUND ? "no such group on this node"
                                          : store_errmsg(a->st),
                      0);
        return;
    }
    if (q->check_clear) {
        LOGI("check: group %llu: alarm cleared by %s",
             (unsigned long long)q->group_id, q->client_name);
    } else {
        LOGE("check: group %llu: ALARM: this replica's state hash at index "
             "%llu is %016llx, the other replicas' is %016llx (raised by %s)",
             (unsigned long long)q->group_id,
             (unsigned long long)q->check_index,
             (unsigned long long)q->check_hash,
             (unsigned long long)q->check_expected, q->client_name);
    }
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    api_reply(w, &rs);
}

void api_admin_reply_status(struct worker *w, Kho__Api__Response *rs)
{
    struct api *a = w->api;
    Kho__Api__CheckAlarm *pa =
        calloc(rs->n_groups > 0 ? rs->n_groups : 1, sizeof(*pa));
    for (size_t i = 0; pa != NULL && i < rs->n_groups; i++) {
        Kho__Api__GroupStatus *gs = rs->groups[i];
        struct store_check_alarm al;
        if (store_check_alarm(a->st, gs->group_id, &al) == KHO_OK) {
            alarm_to_pb(gs->group_id, &al, &pa[i]);
            gs->check_alarm = &pa[i];
        }
    }
    api_reply(w, rs);
    for (size_t i = 0; i < rs->n_groups; i++) {
        rs->groups[i]->check_alarm = NULL;
    }
    free(pa);
}

/* --- Backups -------------------------------------------------------------- */

static struct backup {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool busy;     /* a session exists; its thread runs */
    bool joinable; /* a thread to join */
    pthread_t thread;
    uint64_t id;
    int fd;
    struct store *st;
    uint64_t groups[ADMIN_BACKUP_GROUPS_MAX];
    size_t n_groups;
    uint64_t node_id;
    uint64_t written; /* bytes of the file written so far */
    bool done;        /* the writer finished: err says how */
    int err;
    char errmsg[ADMIN_ERRMSG_BYTES];
    uint64_t touched_ms; /* last fetch (monotonic) */
    bool ended;          /* OP_BACKUP_END */
    bool cancel;         /* the API is closing */
} bk = {
    .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .fd = -1};

static bool progress_cb(void *ctx, uint64_t bytes)
{
    (void)ctx;
    pthread_mutex_lock(&bk.mu);
    bk.written = bytes;
    bool go_on = !bk.cancel && !bk.ended;
    pthread_mutex_unlock(&bk.mu);
    return go_on;
}

/* Waits (holding bk.mu) until the session is over: ended, cancelled, or
 * idle too long. */
static void linger(void)
{
    while (!bk.ended && !bk.cancel &&
           clock_mono_ms() - bk.touched_ms < ADMIN_BACKUP_IDLE_MS) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&bk.cv, &bk.mu, &ts);
    }
}

static void *backup_main(void *arg)
{
    (void)arg;
    uint64_t t0 = clock_mono_ms();
    int rc =
        store_backup_write(bk.st, bk.groups, bk.n_groups, bk.id, bk.node_id,
                           clock_wall_ms(), bk.fd, progress_cb, NULL, NULL);
    pthread_mutex_lock(&bk.mu);
    bk.done = true;
    bk.err = rc;
    if (rc != KHO_OK) {
        snprintf(bk.errmsg, sizeof(bk.errmsg), "%s", store_errmsg(bk.st));
        LOGE("backup %016llx failed: %s (%s)", (unsigned long long)bk.id,
             kho_strerror(rc), bk.errmsg);
    } else {
        LOGI("backup %016llx: %zu groups, %llu bytes in %llu ms",
             (unsigned long long)bk.id, bk.n_groups,
             (unsigned long long)bk.written,
             (unsigned long long)(clock_mono_ms() - t0));
    }
    pthread_cond_broadcast(&bk.cv);
    linger();
    if (!bk.ended) {
        LOGW("backup %016llx dropped: nobody fetched it for %u ms",
             (unsigned long long)bk.id, ADMIN_BACKUP_IDLE_MS);
    }
    close(bk.fd);
    bk.fd = -1;
    bk.busy = false;
    pthread_mutex_unlock(&bk.mu);
    return NULL;
}

/* The meta group's registry table (one entry per shard) as committed, or
 * NULL after replying. */
static struct node_registry *load_regs(struct worker *w, size_t *count)
{
    struct api *a = w->api;
    struct node_registry *regs = calloc(NODE_SHARD_ENTRIES_MAX, sizeof(*regs));
    int rc = regs != NULL ? node_load_registries(a->node, regs,
                                                 NODE_SHARD_ENTRIES_MAX, count)
                          : KHO_ENOMEM;
    if (rc != KHO_OK) {
        api_reply_err(w, rc, rc == KHO_ENOMEM ? NULL : store_errmsg(a->st), 0);
        free(regs);
        return NULL;
    }
    return regs;
}

/* Appends one more thing a node lacks to msg (cut at its end: the reply
 * stays short, the count says how many there were). */
__attribute__((format(printf, 4, 5))) static void
note_missing(char *msg, size_t cap, size_t *n, const char *fmt, ...)
{
    size_t o = strlen(msg);
    if (*n > 0 && o < cap) {
        snprintf(msg + o, cap - o, ", ");
        o = strlen(msg);
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + o, cap - o, fmt, ap);
    va_end(ap);
    (*n)++;
}

/* Refuses a backup for what this node lacks: the "does not host" that
 * libkho recognises (it then takes the groups from several nodes). */
static void refuse_missing(struct worker *w, const char *missing)
{
    struct api *a = w->api;
    /* Short: libkho lists every endpoint's refusal in one message. */
    api_reply_errf(w, KHO_EINVAL, 0, "node %llu (%s) does not host %s",
                   (unsigned long long)node_id(a->node), node_name(a->node),
                   missing);
}

/* The groups to back up: the meta group and every registry, all local.
 * Replies and returns false otherwise. */
static bool backup_groups(struct worker *w, uint64_t *groups, size_t *n)
{
    size_t count = 0;
    struct node_registry *regs = load_regs(w, &count);
    if (regs == NULL) {
        return false;
    }
    char missing[ADMIN_ERRMSG_BYTES] = "";
    size_t n_missing = 0, k = 0;
    groups[k++] = NODE_META_GROUP;
    for (size_t i = 0; i < count; i++) {
        if (regs[i].local && k < ADMIN_BACKUP_GROUPS_MAX) {
            groups[k++] = regs[i].group_id;
            continue;
        }
        note_missing(missing, sizeof(missing), &n_missing, "%s shard %u",
                     regs[i].name, regs[i].shard);
    }
    free(regs);
    if (n_missing > 0) {
        refuse_missing(w, missing);
        return false;
    }
    /* Registry shard ids are meta revisions plus shard << 40, all above
     * the meta group's 0; the backup wants them in increasing order. */
    for (size_t i = 2; i < k; i++) {
        for (size_t j = i; j > 1 && groups[j] < groups[j - 1]; j--) {
            uint64_t t = groups[j];
            groups[j] = groups[j - 1];
            groups[j - 1] = t;
        }
    }
    *n = k;
    return true;
}

static int by_group(const void *x, const void *y)
{
    const struct node_registry *a = x, *b = y;
    return a->group_id < b->group_id ? -1 : a->group_id > b->group_id;
}

/* The groups a BACKUP_BEGIN lists: increasing ids, at most
 * ADMIN_BACKUP_GROUPS_MAX, each hosted here (the meta group always is).
 * Replies and returns false otherwise, naming every group this node lacks.
 * O(R log R) for the R shards the cluster records. */
static bool backup_listed(struct worker *w, uint64_t *groups, size_t *n)
{
    const Kho__Api__Request *q = w->rq;
    size_t want = q->n_backup_groups;
    if (want > ADMIN_BACKUP_GROUPS_MAX) {
        api_reply_errf(w, KHO_EINVAL, 0,
                       "a backup holds at most %u groups; %zu were asked for",
                       ADMIN_BACKUP_GROUPS_MAX, want);
        return false;
    }
    for (size_t i = 1; i < want; i++) {
        if (q->backup_groups[i] <= q->backup_groups[i - 1]) {
            api_reply_errf(w, KHO_EINVAL, 0,
                           "the groups to back up must come in increasing "
                           "order, each once (group %llu follows %llu)",
                           (unsigned long long)q->backup_groups[i],
                           (unsigned long long)q->backup_groups[i - 1]);
            return false;
        }
    }
    size_t count = 0;
    struct node_registry *regs = load_regs(w, &count);
    if (regs == NULL) {
        return false;
    }
    qsort(regs, count, sizeof(regs[0]), by_group);
    char missing[ADMIN_ERRMSG_BYTES] = "";
    size_t n_missing = 0;
    for (size_t i = 0; i < want; i++) {
        struct node_registry key = {.group_id = q->backup_groups[i]};
        const struct node_registry *r =
            bsearch(&key, regs, count, sizeof(regs[0]), by_group);
        groups[i] = key.group_id;
        if (key.group_id == NODE_META_GROUP || (r != NULL && r->local)) {
            continue;
        }
        if (r != NULL) {
            note_missing(missing, sizeof(missing), &n_missing,
                         "%s shard %u (group %llu)", r->name, r->shard,
                         (unsigned long long)key.group_id);
        } else {
            note_missing(missing, sizeof(missing), &n_missing,
                         "group %llu (no such group)",
                         (unsigned long long)key.group_id);
        }
    }
    free(regs);
    if (n_missing > 0) {
        refuse_missing(w, missing);
        return false;
    }
    *n = want;
    return true;
}

static uint64_t fresh_id(void)
{
    uint64_t id = 0;
    if (getrandom(&id, sizeof(id), 0) != (ssize_t)sizeof(id) || id == 0) {
        id = clock_mono_ms() ^ ((uint64_t)getpid() << 40) ^ clock_wall_ms();
    }
    return id;
}

/* Starts the session (holding bk.mu). */
static int backup_start(struct worker *w, const uint64_t *groups, size_t n)
{
    struct api *a = w->api;
    int fd = -1;
    int rc = store_backup_tmpfile(a->st, &fd);
    if (rc != KHO_OK) {
        return rc;
    }
    if (bk.joinable) {
        pthread_join(bk.thread, NULL); /* it already let the session go */
        bk.joinable = false;
    }
    bk.id = fresh_id();
    bk.fd = fd;
    bk.st = a->st;
    memcpy(bk.groups, groups, n * sizeof(groups[0]));
    bk.n_groups = n;
    bk.node_id = node_id(a->node);
    bk.written = 0;
    bk.done = false;
    bk.err = KHO_OK;
    bk.errmsg[0] = '\0';
    bk.touched_ms = clock_mono_ms();
    bk.ended = false;
    if (pthread_create(&bk.thread, NULL, backup_main, NULL) != 0) {
        close(fd);
        bk.fd = -1;
        return KHO_ENOMEM;
    }
    bk.busy = true;
    bk.joinable = true;
    return KHO_OK;
}

static void serve_backup_begin(struct worker *w)
{
    uint64_t *groups = calloc(ADMIN_BACKUP_GROUPS_MAX, sizeof(*groups));
    size_t n = 0;
    if (groups == NULL) {
        api_reply_err(w, KHO_ENOMEM, NULL, 0);
        return;
    }
    bool listed = w->rq->n_backup_groups > 0;
    bool ok =
        listed ? backup_listed(w, groups, &n) : backup_groups(w, groups, &n);
    if (!ok) {
        free(groups);
        return;
    }
    pthread_mutex_lock(&bk.mu);
    int rc = bk.busy || bk.cancel ? KHO_EEXIST : backup_start(w, groups, n);
    uint64_t id = bk.id;
    pthread_mutex_unlock(&bk.mu);
    free(groups);
    if (rc == KHO_EEXIST) {
        api_reply_errf(w, rc, 0,
                       "a backup is already running on this node (it ends "
                       "when fetched, or %u s after its last fetch)",
                       ADMIN_BACKUP_IDLE_MS / 1000u);
        return;
    }
    if (rc != KHO_OK) {
        api_reply_err(w, rc, rc == KHO_ENOMEM ? NULL : store_errmsg(w->api->st),
                      0);
        return;
    }
    LOGI("backup %016llx started for %s: %zu groups%s", (unsigned long long)id,
         w->rq->client_name, n, listed ? " (as listed)" : "");
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    rs.backup_id = id;
    rs.node_id = node_id(w->api->node);
    rs.node_name = (char *)node_name(w->api->node);
    api_reply(w, &rs);
}

/* Reads n bytes at off (holding bk.mu). */
static int read_at(uint8_t *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(bk.fd, buf + got, n - got, (off_t)(off + got));
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k <= 0) {
            return KHO_EIO;
        }
        got += (size_t)k;
    }
    return KHO_OK;
}

static void serve_backup_fetch(struct worker *w)
{
    const Kho__Api__Request *q = w->rq;
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    uint8_t *buf = NULL;
    char msg[ADMIN_ERRMSG_BYTES] = "";
    pthread_mutex_lock(&bk.mu);
    int rc = KHO_OK;
    if (!bk.busy || bk.id != q->backup_id || bk.ended) {
        rc = KHO_ENOTFOUND;
        snprintf(msg, sizeof(msg),
                 "no backup %016llx on this node (it "
                 "ended, or nobody fetched from it for %u s)",
                 (unsigned long long)q->backup_id,
                 ADMIN_BACKUP_IDLE_MS / 1000u);
    } else if (bk.done && bk.err != KHO_OK) {
        rc = bk.err;
        snprintf(msg, sizeof(msg), "the backup failed: %.200s", bk.errmsg);
    } else if (q->backup_offset > bk.written) {
        rc = KHO_EINVAL;
        snprintf(msg, sizeof(msg),
                 "offset %llu is past the %llu bytes "
                 "written",
                 (unsigned long long)q->backup_offset,
                 (unsigned long long)bk.written);
    }
    if (rc == KHO_OK) {
        bk.touched_ms = clock_mono_ms();
        uint64_t left = bk.written - q->backup_offset;
        size_t n = left < STORE_BACKUP_CHUNK_BYTES ? (size_t)left
                                                   : STORE_BACKUP_CHUNK_BYTES;
        buf = malloc(n > 0 ? n : 1);
        rc = buf == NULL ? KHO_ENOMEM : read_at(buf, n, q->backup_offset);
        rs.backup_chunk = (ProtobufCBinaryData){.len = n, .data = buf};
        rs.backup_crc = store_backup_crc(buf, n);
        rs.backup_done = bk.done;
        rs.backup_size = bk.done ? bk.written : 0;
        rs.backup_id = bk.id;
    }
    pthread_mutex_unlock(&bk.mu);
    if (rc != KHO_OK) {
        api_reply_err(w, rc, msg[0] != '\0' ? msg : NULL, 0);
    } else {
        api_reply(w, &rs);
    }
    free(buf);
}

static void serve_backup_end(struct worker *w)
{
    pthread_mutex_lock(&bk.mu);
    if (bk.busy && bk.id == w->rq->backup_id) {
        bk.ended = true;
        pthread_cond_broadcast(&bk.cv);
    }
    pthread_mutex_unlock(&bk.mu);
    Kho__Api__Response rs = KHO__API__RESPONSE__INIT;
    api_reply(w, &rs);
}

void api_admin_close(struct api *a)
{
    (void)a;
    pthread_mutex_lock(&bk.mu);
    bk.cancel = true;
    pthread_cond_broadcast(&bk.cv);
    bool join = bk.joinable;
    bk.joinable = false;
    pthread_mutex_unlock(&bk.mu);
    if (join) {
        pthread_join(bk.thread, NULL);
    }
    pthread_mutex_lock(&bk.mu);
    bk.cancel = false;
    pthread_mutex_unlock(&bk.mu);
}

/* --- Dispatch --------------------------------------------------------------
 */

bool api_admin_serve(struct worker *w)
{
    const Kho__Api__Request *q = w->rq;
    if (!is_admin_op(q)) {
        return false;
    }
    switch (q->op) {
    case KHO__API__OP__OP_CHECK_MARK:
        serve_check_mark(w);
        break;
    case KHO__API__OP__OP_CHECK_HASH:
        serve_check_hash(w);
        break;
    case KHO__API__OP__OP_CHECK_ALARM:
        serve_check_alarm(w);
        break;
    case KHO__API__OP__OP_BACKUP_BEGIN:
        serve_backup_begin(w);
        break;
    case KHO__API__OP__OP_BACKUP_FETCH:
        serve_backup_fetch(w);
        break;
    default:
        serve_backup_end(w);
        break;
    }
    return true;
}

bool api_admin_answered(struct worker *w)
{
    if (!is_admin_op(w->rq)) {
        return false;
    }
    /* Only CHECK_MARK goes through the raft thread. */
    answer_check_mark(w);
    return true;
}

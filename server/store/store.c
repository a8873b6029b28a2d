/*
 * store.c - the store's lifecycle: opening the LMDB environment (once per
 * directory per process, durable unless a benchmark explicitly asks
 * otherwise), errors and their messages, closing, and loading and opening
 * groups. Reads of the state machine are in read.c.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* --- Process-wide state -------------------------------------------------- */

/* LMDB forbids opening one environment twice in a process (its POSIX locks
 * are per process, so the second close would drop the first one's locks).
 * The registry holds the (device, inode) of every open store directory, so
 * "dir", "dir/" and a symlink to it are all the same store. */
struct reg_slot {
    bool used;
    dev_t dev;
    ino_t ino;
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct reg_slot reg[STORE_OPEN_MAX];

/* Bumped in a forked child: an environment must not be used after fork(). */
static unsigned fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static _Thread_local char open_errmsg[STORE_ERRMSG_BYTES];
static _Thread_local char errmsg_copy[STORE_ERRMSG_BYTES];

static void atfork_prepare(void)
{
    pthread_mutex_lock(&reg_mu);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&reg_mu);
}

static void atfork_child(void)
{
    fork_gen++;
    pthread_mutex_unlock(&reg_mu);
}

static void atfork_init(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* KHO_OK, or KHO_EBUSY with the reason recorded for store_open(). */
static int registry_add(const char *dir, dev_t dev, ino_t ino)
{
    int rc = KHO_OK;
    size_t free_slot = STORE_OPEN_MAX;
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; i < STORE_OPEN_MAX; i++) {
        if (reg[i].used && reg[i].dev == dev && reg[i].ino == ino) {
            rc = store_fail(NULL, KHO_EBUSY,
                            "%s is already open in this process", dir);
            goto out;
        }
        if (!reg[i].used && free_slot == STORE_OPEN_MAX) {
            free_slot = i;
        }
    }
    if (free_slot == STORE_OPEN_MAX) {
        rc = store_fail(NULL, KHO_EBUSY,
                        "cannot open %s: %u stores are open in this process",
                        dir, STORE_OPEN_MAX);
        goto out;
    }
    reg[free_slot] = (struct reg_slot){.used = true, .dev = dev, .ino = ino};
out:
    pthread_mutex_unlock(&reg_mu);
    return rc;
}

static void registry_remove(dev_t dev, ino_t ino)
{
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; i < STORE_OPEN_MAX; i++) {
        if (reg[i].used && reg[i].dev == dev && reg[i].ino == ino) {
            reg[i].used = false;
            break;
        }
    }
    pthread_mutex_unlock(&reg_mu);
}

/* --- Errors -------------------------------------------------------------- */

_Noreturn void store_panic(const char *file, int line, const char *what)
{
    fprintf(stderr, "kho store: assertion failed at %s:%d: %s\n", file, line,
            what);
    abort();
}

static void set_msg(struct store *s, const char *msg)
{
    if (s == NULL) {
        snprintf(open_errmsg, sizeof(open_errmsg), "%s", msg);
        return;
    }
    pthread_mutex_lock(&s->mu);
    snprintf(s->errmsg, sizeof(s->errmsg), "%s", msg);
    pthread_mutex_unlock(&s->mu);
}

int store_fail(struct store *s, int err, const char *fmt, ...)
{
    char msg[STORE_ERRMSG_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    set_msg(s, msg);
    return err;
}

int store_mdb_err(struct store *s, int rc, const char *what)
{
    switch (rc) {
    case MDB_SUCCESS:
        return KHO_OK;
    case MDB_MAP_FULL:
        return store_fail(s, KHO_ENOSPC,
                          "%s: the LMDB map is full (map_size_bytes=%llu); "
                          "the write was aborted, reads still work: raise "
                          "map_size_bytes or compact",
                          what,
                          (unsigned long long)(s ? s->opts.map_size_bytes : 0));
    case ENOSPC:
        return store_fail(s, KHO_ENOSPC, "%s: no space left on the device",
                          what);
    case MDB_READERS_FULL:
        return store_fail(s, KHO_EBUSY,
                          "%s: all %u LMDB reader slots are in use; raise "
                          "max_readers",
                          what, s ? s->opts.max_readers : 0);
    case MDB_TXN_FULL:
        return store_fail(s, KHO_ETOOLARGE,
                          "%s: too many changes for one transaction", what);
    case MDB_NOTFOUND:
        return store_fail(s, KHO_ENOTFOUND, "%s: not found", what);
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
    case MDB_INCOMPATIBLE:
        return store_fail(s, KHO_ECORRUPT, "%s: %s", what, mdb_strerror(rc));
    case ENOMEM:
        return store_fail(s, KHO_ENOMEM, "%s: out of memory", what);
    case EACCES:
    case EPERM:
    case EROFS:
        return store_fail(s, KHO_EDENIED, "%s: %s", what, mdb_strerror(rc));
    default:
        return store_fail(s, KHO_EIO, "%s: %s", what, mdb_strerror(rc));
    }
}

const char *store_errmsg(const struct store *s)
{
    if (s == NULL) {
        return open_errmsg;
    }
    struct store *ms = (struct store *)s; /* the lock, not the store, moves */
    pthread_mutex_lock(&ms->mu);
    memcpy(errmsg_copy, s->errmsg, sizeof(errmsg_copy));
    pthread_mutex_unlock(&ms->mu);
    return errmsg_copy;
}

int store_check_fork(struct store *s)
{
    if (s->fork_gen != fork_gen) {
        return store_fail(s, KHO_EINVAL,
                          "store %s used in a child after fork(); open it "
                          "in the child instead",
                          s->path);
    }
    return KHO_OK;
}

_Static_assert(STORE_RTXN_POOL_MAX + 128u <= STORE_READERS_DEFAULT,
               "the default reader table holds the pool and, beside it, "
               "the raft thread's transaction, every API worker, snapshot "
               "senders, a backup and the checks (STORE_RTXN_POOL_MAX)");

/* A pooled transaction, or NULL when the pool is empty; counts the one
 * the caller is about to hold either way. */
static MDB_txn *rtxn_take(struct store *s)
{
    MDB_txn *txn = NULL;
    pthread_mutex_lock(&s->rtxn_mu);
    if (s->rtxn_n > 0) {
        s->rtxn_n--;
        txn = s->rtxn_pool[s->rtxn_n];
        s->rtxn_pool[s->rtxn_n] = NULL;
    }
    s->rtxn_out++;
    pthread_mutex_unlock(&s->rtxn_mu);
    return txn;
}

/* Gives a reset transaction (or NULL: a begin that failed) back; false
 * when the pool is full and the caller must abort it. */
static bool rtxn_give(struct store *s, MDB_txn *txn)
{
    bool kept = false;
    pthread_mutex_lock(&s->rtxn_mu);
    STORE_ASSERT(s->rtxn_out > 0);
    s->rtxn_out--;
    if (txn != NULL && s->rtxn_n < s->rtxn_cap) {
        s->rtxn_pool[s->rtxn_n] = txn;
        s->rtxn_n++;
        kept = true;
    }
    pthread_mutex_unlock(&s->rtxn_mu);
    return kept;
}

int store_rtxn_begin(struct store *s, MDB_txn **txn)
{
    int rc = store_check_fork(s);
    if (rc != KHO_OK) {
        return rc;
    }
    MDB_txn *t = rtxn_take(s);
    if (t != NULL) {
        /* A fresh snapshot: renew reads the latest meta page, as a begin
         * would, and reuses the slot without the reader-table mutex. */
        rc = mdb_txn_renew(t);
        if (rc != MDB_SUCCESS) {
            mdb_txn_abort(t);
        }
    } else {
        rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t);
    }
    if (rc != MDB_SUCCESS) {
        rtxn_give(s, NULL);
        return store_mdb_err(s, rc, "beginning a read transaction");
    }
    *txn = t;
    return KHO_OK;
}

void store_rtxn_end(struct store *s, MDB_txn *txn)
{
    if (s->fork_gen != fork_gen) {
        return; /* aborting would free the parent's reader slot under it */
    }
    mdb_txn_reset(txn); /* outside the lock: it touches the reader slot */
    if (!rtxn_give(s, txn)) {
        mdb_txn_abort(txn);
    }
}

int store_rtxn_raft_begin(struct store *s, MDB_txn **txn, bool *reserved)
{
    *reserved = false;
    int rc = store_check_fork(s);
    if (rc != KHO_OK) {
        return rc;
    }
    if (pthread_mutex_trylock(&s->raft_mu) != 0) {
        return store_rtxn_begin(s, txn); /* another thread drives groups */
    }
    if (s->raft_txn != NULL) {
        rc = mdb_txn_renew(s->raft_txn);
    } else {
        rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &s->raft_txn);
    }
    if (rc != MDB_SUCCESS) {
        if (s->raft_txn != NULL) {
            mdb_txn_abort(s->raft_txn);
            s->raft_txn = NULL;
        }
        pthread_mutex_unlock(&s->raft_mu);
        return store_mdb_err(s, rc, "beginning a read transaction");
    }
    *txn = s->raft_txn;
    *reserved = true;
    return KHO_OK;
}

void store_rtxn_raft_end(struct store *s, MDB_txn *txn, bool reserved)
{
    if (!reserved) {
        store_rtxn_end(s, txn);
        return;
    }
    mdb_txn_reset(txn); /* releases the snapshot, keeps the slot */
    pthread_mutex_unlock(&s->raft_mu);
}

/* --- Opening ------------------------------------------------------------- */

void store_opts_defaults(struct store_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->map_size_bytes = STORE_MAP_BYTES_DEFAULT;
    o->max_readers = STORE_READERS_DEFAULT;
    o->bench_unsafe_nosync = false;
    o->sessions_max = STORE_SESSIONS_MAX;
    o->test_key_hash_bits = 0;
}

static int check_opts(const struct store_opts *o)
{
    if (o->map_size_bytes < STORE_MAP_BYTES_MIN ||
        o->map_size_bytes > STORE_MAP_BYTES_MAX) {
        return store_fail(NULL, KHO_EINVAL,
                          "map_size_bytes %llu outside [%llu, %llu]",
                          (unsigned long long)o->map_size_bytes,
                          (unsigned long long)STORE_MAP_BYTES_MIN,
                          (unsigned long long)STORE_MAP_BYTES_MAX);
    }
    if (o->max_readers == 0 || o->max_readers > STORE_READERS_MAX) {
        return store_fail(NULL, KHO_EINVAL, "max_readers %u outside [1, %u]",
                          o->max_readers, STORE_READERS_MAX);
    }
    if (o->sessions_max == 0 || o->sessions_max > STORE_SESSIONS_MAX) {
        return store_fail(NULL, KHO_EINVAL, "sessions_max %u outside [1, %u]",
                          o->sessions_max, STORE_SESSIONS_MAX);
    }
    if (o->test_key_hash_bits > 63) {
        return store_fail(NULL, KHO_EINVAL,
                          "test_key_hash_bits %u outside [0, 63]",
                          o->test_key_hash_bits);
    }
    return KHO_OK;
}

static int errno_err(int e)
{
    switch (e) {
    case EACCES:
    case EPERM:
    case EROFS:
        return KHO_EDENIED;
    case ENOSPC:
        return KHO_ENOSPC;
    case ENOMEM:
        return KHO_ENOMEM;
    case ENOTDIR:
    case ENOENT:
    case ENAMETOOLONG:
        return KHO_EINVAL;
    default:
        return KHO_EIO;
    }
}

static int ensure_dir(const char *dir, struct stat *st)
{
    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        int e = errno;
        return store_fail(NULL, errno_err(e), "cannot create %s: %s", dir,
                          strerror(e));
    }
    if (stat(dir, st) != 0) {
        int e = errno;
        return store_fail(NULL, errno_err(e), "cannot stat %s: %s", dir,
                          strerror(e));
    }
    if (!S_ISDIR(st->st_mode)) {
        return store_fail(NULL, KHO_EINVAL, "%s is not a directory", dir);
    }
    return KHO_OK;
}

/* Two khod processes on one directory would be two nodes with one
 * identity: LMDB would allow it, so a flock() on kho.lock refuses it. */
static int lock_dir(struct store *s)
{
    size_t n = strlen(s->path) + sizeof("/kho.lock");
    char *p = malloc(n);
    if (p == NULL) {
        return store_fail(s, KHO_ENOMEM, "out of memory");
    }
    snprintf(p, n, "%s/kho.lock", s->path);
    s->lock_fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    int e = errno;
    free(p);
    if (s->lock_fd < 0) {
        return store_fail(s, errno_err(e), "cannot open %s/kho.lock: %s",
                          s->path, strerror(e));
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        e = errno;
        if (e == EWOULDBLOCK) {
            return store_fail(s, KHO_EBUSY, "%s is in use by another process",
                              s->path);
        }
        return store_fail(s, errno_err(e), "cannot lock %s/kho.lock: %s",
                          s->path, strerror(e));
    }
    return KHO_OK;
}

static int open_env(struct store *s)
{
    unsigned flags = MDB_NOTLS;
    int rc = mdb_env_create(&s->env);
    if (rc != MDB_SUCCESS) {
        s->env = NULL;
        return store_mdb_err(s, rc, "creating the LMDB environment");
    }
    rc = mdb_env_set_mapsize(s->env, (size_t)s->opts.map_size_bytes);
    if (rc == MDB_SUCCESS) {
        rc = mdb_env_set_maxreaders(s->env, s->opts.max_readers);
    }
    if (rc == MDB_SUCCESS) {
        rc = mdb_env_set_maxdbs(s->env, STORE_DBS_MAX);
    }
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "configuring the LMDB environment");
    }
    if (s->opts.bench_unsafe_nosync) {
        flags |= MDB_NOSYNC;
        fprintf(stderr,
                "kho store: WARNING: %s opened with bench_unsafe_nosync: "
                "commits are NOT fsynced; a crash can lose acknowledged "
                "writes and votes. Never use this outside benchmarks.\n",
                s->path);
    }
    rc = mdb_env_open(s->env, s->path, flags, 0640);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "opening the LMDB environment");
    }
    int dead = 0;
    rc = mdb_reader_check(s->env, &dead);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "checking the LMDB reader table");
    }
    if (dead > 0) {
        fprintf(stderr,
                "kho store: %s: cleared %d reader slots left by dead "
                "processes\n",
                s->path, dead);
    }
    if (mdb_env_get_maxkeysize(s->env) < (int)STORE_LMDB_KEY_BYTES_MAX) {
        return store_fail(s, KHO_EINVAL,
                          "this LMDB build allows keys of %d bytes; kho "
                          "needs %u",
                          mdb_env_get_maxkeysize(s->env),
                          STORE_LMDB_KEY_BYTES_MAX);
    }
    return KHO_OK;
}

static const MDB_val format_key = {.mv_size = 6, .mv_data = "format"};

int store_format_put(struct store *s, MDB_txn *txn)
{
    uint8_t buf[4];
    MDB_val k = format_key;
    MDB_val v = {.mv_size = sizeof(buf), .mv_data = buf};
    put_le32(buf, STORE_FORMAT_VERSION);
    return store_mdb_err(s, mdb_put(txn, s->dbi_info, &k, &v, 0),
                         "writing the format version");
}

/* The store's format in *format: the current one (written now in a new
 * store), or STORE_FORMAT_V3, which store_open() converts; any other is
 * refused. */
static int check_format(struct store *s, MDB_txn *txn, uint32_t *format)
{
    MDB_val k = format_key;
    MDB_val v;
    *format = STORE_FORMAT_VERSION;
    int rc = mdb_get(txn, s->dbi_info, &k, &v);
    if (rc == MDB_NOTFOUND) {
        return store_format_put(s, txn);
    }
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "reading the format version");
    }
    if (v.mv_size != 4) {
        return store_fail(s, KHO_EINVAL,
                          "%s holds an unknown store format (this build "
                          "reads version %u)",
                          s->path, STORE_FORMAT_VERSION);
    }
    *format = get_le32(v.mv_data);
    if (*format != STORE_FORMAT_VERSION && *format != STORE_FORMAT_V3) {
        return store_fail(s, KHO_EINVAL,
                          "%s holds store format %u; this build reads "
                          "format %u and converts format %u, no other: "
                          "restore it from a backup, or start the node on "
                          "an empty directory and let it catch up from its "
                          "peers",
                          s->path, *format, STORE_FORMAT_VERSION,
                          STORE_FORMAT_V3);
    }
    return KHO_OK;
}

static int open_dbis(struct store *s, uint32_t *format)
{
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc != MDB_SUCCESS) {
        return store_mdb_err(s, rc, "beginning the set-up transaction");
    }
    static const char *const names[] = {"info", "raft_log", "raft_meta",
                                        "snap", "kv",       "sess",
                                        "hist", "sess_lru"};
    MDB_dbi *all[] = {&s->dbi_info, &s->dbi_log,  &s->dbi_meta,
                      &s->dbi_snap, &s->dbi_kv,   &s->dbi_sess,
                      &s->dbi_hist, &s->dbi_lru};
    _Static_assert(sizeof(names) / sizeof(names[0]) <= STORE_DBS_MAX,
                   "STORE_DBS_MAX bounds the named databases");
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        rc = mdb_dbi_open(txn, names[i], MDB_CREATE, all[i]);
        if (rc != MDB_SUCCESS) {
            mdb_txn_abort(txn);
            return store_mdb_err(s, rc, "opening a named database");
        }
    }
    rc = check_format(s, txn, format);
    if (rc == KHO_OK) {
        rc = store_gc_open(s, txn);
    }
    if (rc != KHO_OK) {
        mdb_txn_abort(txn);
        return rc;
    }
    rc = mdb_txn_commit(txn);
    return store_mdb_err(s, rc, "committing the set-up transaction");
}

/* LMDB fsyncs its files, not the directory that holds them: without this a
 * crash right after the first start could lose data.mdb's directory entry
 * together with every vote and entry committed into it. */
static int sync_dir(struct store *s)
{
    int fd = open(s->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || (!s->opts.bench_unsafe_nosync && fsync(fd) != 0)) {
        int e = errno;
        if (fd >= 0) {
            close(fd);
        }
        return store_fail(s, errno_err(e), "cannot sync directory %s: %s",
                          s->path, strerror(e));
    }
    close(fd);
    return KHO_OK;
}

static void free_store(struct store *s, bool registered)
{
    if (s->raft_txn != NULL && s->env != NULL) {
        mdb_txn_abort(s->raft_txn);
    }
    for (uint32_t i = 0; i < s->rtxn_n && s->env != NULL; i++) {
        mdb_txn_abort(s->rtxn_pool[i]); /* before the env they live in */
    }
    s->rtxn_n = 0;
    if (s->env != NULL) {
        mdb_env_close(s->env);
    }
    if (s->lock_fd >= 0) {
        close(s->lock_fd);
    }
    if (registered) {
        registry_remove(s->dev, s->ino);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->raft_mu);
    pthread_mutex_destroy(&s->rtxn_mu);
    free(s->path);
    free(s);
}

int store_open(const char *dir, const struct store_opts *o, struct store **out)
{
    struct store_opts opts;
    struct stat st;
    bool registered = false;
    uint32_t format = 0;
    *out = NULL;
    pthread_once(&atfork_once, atfork_init);
    if (o == NULL) {
        store_opts_defaults(&opts);
    } else {
        opts = *o;
    }
    if (dir == NULL || dir[0] == '\0') {
        return store_fail(NULL, KHO_EINVAL, "no store directory given");
    }
    int rc = check_opts(&opts);
    if (rc == KHO_OK) {
        rc = ensure_dir(dir, &st);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    struct store *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return store_fail(NULL, KHO_ENOMEM, "out of memory");
    }
    s->lock_fd = -1;
    atomic_init(&s->gc_pending, false);
    s->opts = opts;
    s->hash_mask = opts.test_key_hash_bits == 0
                       ? UINT64_MAX
                       : (UINT64_C(1) << opts.test_key_hash_bits) - 1;
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->fork_gen = fork_gen;
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->raft_mu, NULL);
    pthread_mutex_init(&s->rtxn_mu, NULL);
    s->rtxn_cap = opts.max_readers / 2 < STORE_RTXN_POOL_MAX
                      ? opts.max_readers / 2
                      : STORE_RTXN_POOL_MAX;
    s->path = strdup(dir);
    if (s->path == NULL) {
        rc = store_fail(s, KHO_ENOMEM, "out of memory");
        goto fail;
    }
    rc = registry_add(dir, st.st_dev, st.st_ino);
    if (rc != KHO_OK) {
        free_store(s, false);
        return rc; /* the message is in store_errmsg(NULL) already */
    }
    registered = true;
    rc = lock_dir(s);
    if (rc == KHO_OK) {
        rc = open_env(s);
    }
    if (rc == KHO_OK) {
        rc = open_dbis(s, &format);
    }
    if (rc == KHO_OK && format == STORE_FORMAT_V3) {
        rc = store_convert_v3(s);
    }
    if (rc == KHO_OK) {
        rc = sync_dir(s);
    }
    if (rc != KHO_OK) {
        goto fail;
    }
    *out = s;
    return KHO_OK;
fail:
    set_msg(NULL, s->errmsg);
    free_store(s, registered);
    return rc;
}

void store_close(struct store *s)
{
    if (s == NULL) {
        return;
    }
    if (s->fork_gen != fork_gen) {
        /* In a forked child: LMDB's handle and any open transaction belong
         * to the parent. Leak the mapping and descriptors rather than
         * touch them. */
        s->env = NULL;
        s->lock_fd = -1;
        free_store(s, true);
        return;
    }
    STORE_ASSERT(s->n_groups == 0);
    STORE_ASSERT(s->n_readers == 0);
    STORE_ASSERT(s->n_stages == 0);
    STORE_ASSERT(!s->writing);
    STORE_ASSERT(s->rtxn_out == 0); /* every read transaction was ended */
    free_store(s, true);
}

/* --- Reads --------------------------------------------------------------- */

static int need_group(struct store *s, MDB_txn *txn, uint64_t group)
{
    struct raft_snapshot_meta m;
    int rc = store_rec_get_snap_meta(s, txn, group, &m);
    if (rc == KHO_ENOTFOUND) {
        return store_fail(s, KHO_ENOTFOUND, "group %llu does not exist",
                          (unsigned long long)group);
    }
    return rc;
}

static int load(struct store *s, MDB_txn *txn, uint64_t group,
                struct raft_hard_state *hs, uint64_t *applied)
{
    int rc = need_group(s, txn, group);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = store_rec_get_hs(s, txn, group, hs);
    if (rc == KHO_OK) {
        rc = store_rec_get_applied(s, txn, group, applied);
    }
    if (rc == KHO_ENOTFOUND) {
        return store_fail(s, KHO_ECORRUPT,
                          "group %llu lacks its hard state or applied index",
                          (unsigned long long)group);
    }
    return rc;
}

int store_group_load(struct store *s, uint64_t group_id,
                     struct raft_hard_state *hs, uint64_t *applied)
{
    MDB_txn *txn = NULL;
    int rc = store_rtxn_begin(s, &txn);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = load(s, txn, group_id, hs, applied);
    store_rtxn_end(s, txn);
    return rc;
}

int store_group_data_id(struct store *s, uint64_t group_id, uint64_t *data_id)
{
    MDB_txn *txn = NULL;
    uint64_t applied = 0;
    int rc = store_rtxn_begin(s, &txn);
    if (rc != KHO_OK) {
        return rc;
    }
    rc = store_rec_group_data(s, txn, group_id, &applied, data_id);
    store_rtxn_end(s, txn);
    return rc;
}

int store_group_open(struct store *s, uint64_t group_id,
                     struct store_group **out)
{
    struct raft_hard_state hs;
    uint64_t applied = 0;
    *out = NULL;
    int rc = store_group_load(s, group_id, &hs, &applied);
    if (rc != KHO_OK) {
        return rc;
    }
    struct store_group *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        return store_fail(s, KHO_ENOMEM, "out of memory");
    }
    g->s = s;
    g->id = group_id;
    pthread_mutex_lock(&s->mu);
    s->n_groups++;
    pthread_mutex_unlock(&s->mu);
    *out = g;
    return KHO_OK;
}

void store_group_close(struct store_group *g)
{
    if (g == NULL) {
        return;
    }
    pthread_mutex_lock(&g->s->mu);
    STORE_ASSERT(g->s->n_groups > 0);
    g->s->n_groups--;
    pthread_mutex_unlock(&g->s->mu);
    free(g->scratch);
    free(g);
}

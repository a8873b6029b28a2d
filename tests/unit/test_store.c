/*
 * test_store.c - proves that server/store is a durable twin of the
 * memstore that raft.h's storage contract describes:
 *
 *   - entries, hard state, applied index, snapshot meta and the
 *     configuration at the applied index survive close and reopen; the
 *     snapshot callback serves meta at the applied index and no payload;
 *     a snapshot streamed to another store installs there, and a
 *     descriptor that names no finished stage is refused;
 *   - its raft_storage callbacks answer exactly as a memstore fed the same
 *     ready batches, with a real single-node raft group driven through
 *     proposals; after a reopen, raft_create() from the store gets commit
 *     and applied back and no entry is ever applied twice;
 *   - a conflicting suffix is cut, compaction keeps later entries and
 *     other groups intact, writes no snapshot payload, and a cut or
 *     compaction that would undo applied state is refused;
 *   - a flipped byte in a stored entry, hard state, kv record, history
 *     version or session (written with raw LMDB) reads as KHO_ECORRUPT, is
 *     never served and never leaves in a snapshot stream (P5); a data file
 *     of another format version does not open, but for format 3, which is
 *     converted (test_txn.c checks the result);
 *   - a full map gives KHO_ENOSPC, the store stays readable, and a reopen
 *     with a bigger map carries on;
 *   - one directory cannot be opened twice in one process, and a store is
 *     not usable in a forked child (nor are its pooled read transactions,
 *     which the parent keeps using);
 *   - reads from many threads while another commits each see one whole
 *     commit, never older than the last one finished before they began,
 *     and reuse a bounded pool of read transactions: the reader table
 *     never holds more slots than reads in flight, the pool keeps at most
 *     STORE_RTXN_POOL_MAX (and half of max_readers) idle, and close frees
 *     them;
 *   - requests, limits, long keys beyond LMDB's key size, group commit and
 *     the group lifecycle behave as store.h says, and the checksum is the
 *     standard CRC-32C on every machine.
 *
 * Every test gets a fresh directory under $TMPDIR (or /tmp), removed after.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../server/raft/raft.h"
#include "../../server/store/internal.h" /* crc32c; the read pool */
#include "../../server/store/store.h"
#include "../harness/memstore.h"

/* --- Fixture ------------------------------------------------------------- */

struct fx {
    char dir[PATH_MAX];
    char dir2[PATH_MAX]; /* a second node's directory, when a test wants it */
    struct store *s;
    struct store *s2;
    /* Group handles still open, closed by teardown when a test fails
     * half-way (store_close() asserts that none is left). */
    struct store_group *groups[8];
};

static struct fx *cur; /* the running test's fixture */

/* A fresh directory under $TMPDIR (or /tmp); false if none can be made. */
static bool try_make_tmp(char *out)
{
    const char *base = getenv("TMPDIR");
    if (base == NULL || base[0] == '\0') {
        base = "/tmp";
    }
    snprintf(out, PATH_MAX, "%s/kho-store-XXXXXX", base);
    if (mkdtemp(out) == NULL) {
        fprintf(stderr, "test_store: cannot create %s: %s\n", out,
                strerror(errno));
        out[0] = '\0';
        return false;
    }
    return true;
}

static void make_tmp(char *out)
{
    assert_true(try_make_tmp(out));
}

static int rm_cb(const char *path, const struct stat *sb, int flag,
                 struct FTW *ftw)
{
    return remove(path);
}

static void rm_tree(const char *dir)
{
    if (dir[0] != '\0') {
        nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    }
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        return -1;
    }
    if (!try_make_tmp(f->dir)) {
        free(f);
        return -1;
    }
    *state = f;
    cur = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    for (size_t i = 0; i < 8; i++) {
        store_group_close(f->groups[i]);
    }
    store_close(f->s);
    store_close(f->s2);
    rm_tree(f->dir);
    rm_tree(f->dir2);
    free(f);
    return 0;
}

/* --- Helpers ------------------------------------------------------------- */

static struct store_group *grp_open(struct store *s, uint64_t group)
{
    struct store_group *g = NULL;
    int rc = store_group_open(s, group, &g);
    if (rc != KHO_OK) {
        fail_msg("store_group_open(%llu): %s: %s", (unsigned long long)group,
                 kho_errname(rc), store_errmsg(s));
    }
    for (size_t i = 0; i < 8; i++) {
        if (cur->groups[i] == NULL) {
            cur->groups[i] = g;
            return g;
        }
    }
    fail_msg("more than 8 group handles open");
    return NULL;
}

static void grp_close(struct store_group *g)
{
    for (size_t i = 0; i < 8; i++) {
        if (cur->groups[i] == g) {
            cur->groups[i] = NULL;
        }
    }
    store_group_close(g);
}

#define G 7u

static struct store *open_at(const char *dir, uint64_t map_bytes)
{
    struct store_opts o;
    struct store *s = NULL;
    store_opts_defaults(&o);
    if (map_bytes != 0) {
        o.map_size_bytes = map_bytes;
    }
    int rc = store_open(dir, &o, &s);
    if (rc != KHO_OK) {
        fail_msg("store_open(%s): %s: %s", dir, kho_errname(rc),
                 store_errmsg(NULL));
    }
    return s;
}

static void reopen(struct fx *f)
{
    store_close(f->s);
    f->s = open_at(f->dir, 0);
}

static struct raft_conf conf_of(unsigned voters, unsigned learners)
{
    struct raft_conf c = {0};
    for (unsigned i = 0; i < voters + learners; i++) {
        c.members[c.n].id = i + 1;
        c.members[c.n].role = i < voters ? RAFT_VOTER : RAFT_LEARNER;
        c.n++;
    }
    return c;
}

static void assert_conf_equal(const struct raft_conf *a,
                              const struct raft_conf *b)
{
    assert_int_equal(a->n, b->n);
    for (uint32_t i = 0; i < a->n; i++) {
        assert_int_equal(a->members[i].id, b->members[i].id);
        assert_int_equal(a->members[i].role, b->members[i].role);
    }
}

static void create_group(struct store *s, uint64_t group,
                         const struct raft_conf *c)
{
    struct store_batch *b = NULL;
    assert_int_equal(store_write_begin(s, &b), KHO_OK);
    assert_int_equal(store_batch_group_create(b, group, c), KHO_OK);
    assert_int_equal(store_write_commit(b), KHO_OK);
}

/* Commits one ready batch for one group; returns the commit's result. */
static int persist(struct store *s, uint64_t group, const struct raft_ready *rd)
{
    struct store_batch *b = NULL;
    assert_int_equal(store_write_begin(s, &b), KHO_OK);
    store_batch_persist_ready(b, group, rd);
    return store_write_commit(b);
}

/* A single-put request (STORE_REQ_SINGLE); the caller frees it. */
static uint8_t *cmd_put(const char *key, const char *val, uint32_t *len)
{
    struct store_op op = {.op = STORE_OP_PUT,
                          .key = (const uint8_t *)key,
                          .key_len = strlen(key),
                          .value = (const uint8_t *)val,
                          .value_len = strlen(val)};
    struct store_request r = {
        .flags = STORE_REQ_SINGLE, .time_ms = 1, .ops = &op, .n_ops = 1};
    size_t n = store_request_size(&r);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    assert_int_equal(store_request_encode(&r, buf, n, &n), KHO_OK);
    *len = (uint32_t)n;
    return buf;
}

/* A single-delete request into buf (cap bytes); returns its length. */
static size_t cmd_del(const void *key, size_t key_len, uint8_t *buf, size_t cap)
{
    struct store_op op = {
        .op = STORE_OP_DELETE, .key = key, .key_len = key_len};
    struct store_request r = {
        .flags = STORE_REQ_SINGLE, .time_ms = 1, .ops = &op, .n_ops = 1};
    size_t n = 0;
    assert_int_equal(store_request_encode(&r, buf, cap, &n), KHO_OK);
    return n;
}

static struct raft_entry ent(uint64_t index, uint64_t term, uint32_t type,
                             uint8_t *data, uint32_t len)
{
    return (struct raft_entry){
        .index = index, .term = term, .type = type, .len = len, .data = data};
}

/* Entries [lo, lo + n) of term `term`, each a put "k<i>" = "v<i>.<term>".
 * Returns a static array valid until the next call; data leaks to exit. */
static struct raft_entry *puts_range(uint64_t lo, size_t n, uint64_t term)
{
    static struct raft_entry e[4096];
    assert_true(n <= 4096);
    for (size_t i = 0; i < n; i++) {
        char k[32], v[48];
        uint32_t len = 0;
        snprintf(k, sizeof(k), "k%llu", (unsigned long long)(lo + i));
        snprintf(v, sizeof(v), "v%llu.%llu", (unsigned long long)(lo + i),
                 (unsigned long long)term);
        uint8_t *d = cmd_put(k, v, &len);
        e[i] = ent(lo + i, term, RAFT_ENTRY_NORMAL, d, len);
    }
    return e;
}

static void free_range(struct raft_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(e[i].data);
        e[i].data = NULL;
    }
}

static void persist_entries(struct store *s, uint64_t group,
                            const struct raft_entry *e, size_t n)
{
    struct raft_ready rd = {.entries = e, .n_entries = n};
    int rc = persist(s, group, &rd);
    if (rc != KHO_OK) {
        fail_msg("persist: %s: %s", kho_errname(rc), store_errmsg(s));
    }
}

static void apply_range(struct store *s, uint64_t group,
                        const struct raft_entry *e, size_t n)
{
    struct store_batch *b = NULL;
    assert_int_equal(store_write_begin(s, &b), KHO_OK);
    for (size_t i = 0; i < n; i++) {
        struct store_apply_result res;
        assert_int_equal(store_batch_apply(b, group, &e[i], &res), KHO_OK);
        assert_int_equal(res.result, KHO_OK);
    }
    assert_int_equal(store_write_commit(b), KHO_OK);
}

/* A value copied out of a read callback. */
struct got {
    uint8_t *buf;
    size_t cap;
    size_t len;
};

static int got_cb(void *ctx, const struct store_record *r)
{
    struct got *g = ctx;
    g->len = r->value_len;
    assert_true(r->value_len <= g->cap);
    if (r->value_len > 0) {
        memcpy(g->buf, r->value, r->value_len);
    }
    return KHO_OK;
}

static int kv_get(struct store *s, uint64_t group, const void *key,
                  size_t key_len, void *buf, size_t cap, size_t *len,
                  uint64_t *applied)
{
    struct got g = {.buf = buf, .cap = cap};
    int rc = store_kv_read(s, group, key, key_len, got_cb, &g, applied);
    *len = g.len;
    return rc;
}

static void expect_kv(struct store *s, uint64_t group, const char *key,
                      const char *want)
{
    char buf[256];
    size_t n = 0;
    int rc = kv_get(s, group, key, strlen(key), buf, sizeof(buf), &n, NULL);
    if (want == NULL) {
        assert_int_equal(rc, KHO_ENOTFOUND);
        return;
    }
    if (rc != KHO_OK) {
        fail_msg("get %s: %s: %s", key, kho_errname(rc), store_errmsg(s));
    }
    assert_int_equal(n, strlen(want));
    assert_memory_equal(buf, want, n);
}

/* Streams group's snapshot from src into a finished stage on dst. */
static void stage_into(struct store *src, struct store *dst, uint64_t group,
                       struct raft_snapshot_meta *meta,
                       uint8_t desc[STORE_STAGE_DESC_BYTES])
{
    static uint8_t buf[64 << 10];
    struct store_snap_reader *r = NULL;
    struct store_stage *st = NULL;
    uint64_t total = 0;
    uint32_t crc = 0;
    int rc = store_snap_reader_open(src, group, &r, meta, &total, &crc);
    if (rc != KHO_OK) {
        fail_msg("reader: %s: %s", kho_errname(rc), store_errmsg(src));
    }
    assert_int_equal(
        store_stage_begin(dst, group, meta->index, meta->term, total, crc, &st),
        KHO_OK);
    for (uint64_t off = 0; off < total;) {
        size_t n = 0;
        assert_int_equal(store_snap_reader_read(r, off, buf, sizeof(buf), &n),
                         KHO_OK);
        assert_true(n > 0);
        assert_int_equal(store_stage_write(st, buf, n), KHO_OK);
        off += n;
    }
    rc = store_stage_finish(st, desc);
    if (rc != KHO_OK) {
        fail_msg("finish: %s: %s", kho_errname(rc), store_errmsg(dst));
    }
    store_stage_close(st);
    store_snap_reader_close(r);
}

/* A stage descriptor as the snapshot of a ready batch. */
static struct raft_snapshot snap_of(const struct raft_snapshot_meta *m,
                                    uint8_t *desc)
{
    return (struct raft_snapshot){
        .meta = *m, .data = desc, .len = STORE_STAGE_DESC_BYTES};
}

/* The group's data id (raw keys of its state machine start with it). */
static uint64_t data_of(struct store *s, uint64_t group)
{
    uint64_t d = 0;
    assert_int_equal(store_group_data_id(s, group, &d), KHO_OK);
    return d;
}

static uint64_t applied_of(struct store *s, uint64_t group)
{
    struct raft_hard_state hs;
    uint64_t applied = 0;
    assert_int_equal(store_group_load(s, group, &hs, &applied), KHO_OK);
    return applied;
}

static uint64_t st_last(const struct raft_storage *st)
{
    uint64_t last = 0;
    assert_int_equal(st->last_index(st->ctx, &last), KHO_OK);
    return last;
}

static uint64_t st_term(const struct raft_storage *st, uint64_t index)
{
    uint64_t t = 0;
    int rc = st->term(st->ctx, index, &t);
    if (rc != KHO_OK) {
        fail_msg("term(%llu): %s", (unsigned long long)index, kho_errname(rc));
    }
    return t;
}

static struct raft_snapshot_meta st_meta(const struct raft_storage *st)
{
    struct raft_snapshot_meta m;
    assert_int_equal(st->snapshot_meta(st->ctx, &m), KHO_OK);
    return m;
}

/* Both storages hold the same log: meta, last index, every term, every
 * entry, and the same answer to a byte-limited read. */
static void expect_same_storage(const struct raft_storage *a,
                                const struct raft_storage *b)
{
    struct raft_snapshot_meta ma = st_meta(a), mb = st_meta(b);
    assert_int_equal(ma.index, mb.index);
    assert_int_equal(ma.term, mb.term);
    assert_conf_equal(&ma.conf, &mb.conf);
    uint64_t last = st_last(a);
    assert_int_equal(last, st_last(b));
    for (uint64_t i = ma.index; i <= last; i++) {
        assert_int_equal(st_term(a, i), st_term(b, i));
    }
    for (uint64_t lo = ma.index + 1; lo <= last; lo++) {
        struct raft_entry ea[1], eb[1];
        size_t na = 0, nb = 0;
        assert_int_equal(a->entries(a->ctx, lo, lo + 1, SIZE_MAX, ea, 1, &na),
                         KHO_OK);
        struct raft_entry copy = ea[0];
        uint8_t *data = malloc(copy.len + 1u);
        assert_non_null(data);
        if (copy.len > 0) {
            memcpy(data, copy.data, copy.len);
        }
        assert_int_equal(b->entries(b->ctx, lo, lo + 1, SIZE_MAX, eb, 1, &nb),
                         KHO_OK);
        assert_int_equal(na, 1);
        assert_int_equal(nb, 1);
        assert_int_equal(copy.index, eb[0].index);
        assert_int_equal(copy.term, eb[0].term);
        assert_int_equal(copy.type, eb[0].type);
        assert_int_equal(copy.len, eb[0].len);
        if (copy.len > 0) {
            assert_memory_equal(data, eb[0].data, copy.len);
        }
        free(data);
    }
    if (last > ma.index) {
        struct raft_entry ea[64], eb[64];
        size_t na = 0, nb = 0;
        assert_int_equal(
            a->entries(a->ctx, ma.index + 1, last + 1, 40, ea, 64, &na),
            KHO_OK);
        assert_int_equal(
            b->entries(b->ctx, ma.index + 1, last + 1, 40, eb, 64, &nb),
            KHO_OK);
        assert_int_equal(na, nb);
    }
}

/* --- Round trip through close and reopen --------------------------------- */

static void test_roundtrip_reopen(void **state)
{
    struct fx *f = *state;
    struct raft_conf conf = conf_of(2, 1), grown = conf_of(3, 0);
    uint8_t cbuf[RAFT_CONF_ENCODED_MAX];
    uint32_t l2 = 0, l4 = 0, l5 = 0;
    uint8_t *d2 = cmd_put("alpha", "one", &l2);
    uint8_t *d4 = cmd_put("beta", "two", &l4);
    uint8_t *d5 = cmd_put("alpha", "three", &l5);
    uint32_t lc = (uint32_t)raft_conf_encode(&grown, cbuf, sizeof(cbuf));
    struct raft_entry e[5] = {
        ent(1, 1, RAFT_ENTRY_NOOP, NULL, 0),
        ent(2, 1, RAFT_ENTRY_NORMAL, d2, l2),
        ent(3, 2, RAFT_ENTRY_CONF, cbuf, lc),
        ent(4, 2, RAFT_ENTRY_NORMAL, d4, l4),
        ent(5, 3, RAFT_ENTRY_NORMAL, d5, l5),
    };
    f->s = open_at(f->dir, 0);
    create_group(f->s, G, &conf);
    struct raft_ready rd = {.hs_changed = true,
                            .hs = {.term = 3, .vote = 2, .commit = 4},
                            .entries = e,
                            .n_entries = 5};
    assert_int_equal(persist(f->s, G, &rd), KHO_OK);
    apply_range(f->s, G, e, 4);
    reopen(f);

    struct raft_hard_state hs;
    uint64_t applied = 0;
    assert_int_equal(store_group_load(f->s, G, &hs, &applied), KHO_OK);
    assert_int_equal(hs.term, 3);
    assert_int_equal(hs.vote, 2);
    assert_int_equal(hs.commit, 4);
    assert_int_equal(applied, 4);
    expect_kv(f->s, G, "alpha", "one");
    expect_kv(f->s, G, "beta", "two");

    struct store_group *g = NULL;
    g = grp_open(f->s, G);
    struct raft_storage st = store_raft_storage(g);
    struct raft_snapshot_meta m = st_meta(&st);
    assert_int_equal(m.index, 0);
    assert_int_equal(m.term, 0);
    assert_conf_equal(&m.conf, &conf);
    assert_int_equal(st_last(&st), 5);
    assert_int_equal(st_term(&st, 0), 0);
    struct raft_entry out[8];
    size_t n = 0;
    assert_int_equal(st.entries(st.ctx, 1, 6, SIZE_MAX, out, 8, &n), KHO_OK);
    assert_int_equal(n, 5);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(out[i].index, e[i].index);
        assert_int_equal(out[i].term, e[i].term);
        assert_int_equal(out[i].type, e[i].type);
        assert_int_equal(out[i].len, e[i].len);
        if (e[i].len > 0) {
            assert_memory_equal(out[i].data, e[i].data, e[i].len);
        }
    }
    /* A byte limit still returns at least one entry; cap is respected. */
    assert_int_equal(st.entries(st.ctx, 2, 6, 1, out, 8, &n), KHO_OK);
    assert_int_equal(n, 1);
    assert_int_equal(st.entries(st.ctx, 1, 6, SIZE_MAX, out, 2, &n), KHO_OK);
    assert_int_equal(n, 2);
    /* Out of range, as in the memstore. */
    assert_int_equal(st.entries(st.ctx, 0, 6, SIZE_MAX, out, 8, &n),
                     KHO_EINVAL);
    assert_int_equal(st.entries(st.ctx, 1, 7, SIZE_MAX, out, 8, &n),
                     KHO_EINVAL);
    uint64_t t = 0;
    assert_int_equal(st.term(st.ctx, 6, &t), KHO_EINVAL);
    /* A snapshot now is the state at the applied index, 4 (term 2), with
     * the configuration of the CONF entry applied at 3; no payload. */
    struct raft_snapshot sn;
    assert_int_equal(st.snapshot(st.ctx, &sn), KHO_OK);
    assert_int_equal(sn.meta.index, 4);
    assert_int_equal(sn.meta.term, 2);
    assert_conf_equal(&sn.meta.conf, &grown);
    assert_null(sn.data);
    assert_int_equal(sn.len, 0);

    /* Compact at the applied index, reopen: the meta comes back. */
    grp_close(g);
    assert_int_equal(store_compact(f->s, G, 4, &grown), KHO_OK);
    reopen(f);
    g = grp_open(f->s, G);
    st = store_raft_storage(g);
    m = st_meta(&st);
    assert_int_equal(m.index, 4);
    assert_int_equal(m.term, 2);
    assert_conf_equal(&m.conf, &grown);
    assert_int_equal(st_last(&st), 5);
    assert_int_equal(st_term(&st, 4), 2);
    assert_int_equal(st_term(&st, 5), 3);
    assert_int_equal(st.term(st.ctx, 3, &t), KHO_EINVAL);
    assert_int_equal(st.snapshot(st.ctx, &sn), KHO_OK);
    assert_int_equal(sn.meta.index, 4);
    assert_int_equal(sn.len, 0);

    /* Stream it to a second node that joins the group and install it with
     * entry 5 and a hard state in the same batch, then reopen that node. */
    uint8_t desc[STORE_STAGE_DESC_BYTES];
    struct raft_snapshot_meta sm;
    make_tmp(f->dir2);
    f->s2 = open_at(f->dir2, 0);
    struct raft_conf none = {0};
    create_group(f->s2, G, &none);
    stage_into(f->s, f->s2, G, &sm, desc);
    assert_int_equal(sm.index, 4);
    assert_int_equal(sm.term, 2);
    assert_conf_equal(&sm.conf, &grown);
    struct raft_snapshot copy = snap_of(&sm, desc);
    struct raft_ready rd2 = {.hs_changed = true,
                             .hs = {.term = 3, .vote = 0, .commit = 4},
                             .snapshot = &copy,
                             .entries = &e[4],
                             .n_entries = 1};
    assert_int_equal(persist(f->s2, G, &rd2), KHO_OK);
    store_close(f->s2);
    f->s2 = open_at(f->dir2, 0);
    assert_int_equal(applied_of(f->s2, G), 4);
    expect_kv(f->s2, G, "alpha", "one");
    expect_kv(f->s2, G, "beta", "two");
    struct store_group *g2 = NULL;
    g2 = grp_open(f->s2, G);
    struct raft_storage st2 = store_raft_storage(g2);
    expect_same_storage(&st, &st2);
    assert_int_equal(st2.snapshot(st2.ctx, &sn), KHO_OK);
    assert_int_equal(sn.meta.index, 4);
    assert_conf_equal(&sn.meta.conf, &grown);

    /* The same descriptor again names no stage (it was installed), nor
     * does one with a flipped byte: refused, and nothing changes. */
    assert_int_equal(persist(f->s2, G, &(struct raft_ready){.snapshot = &copy}),
                     KHO_ECORRUPT);
    assert_non_null(strstr(store_errmsg(f->s2), "no stage"));
    desc[20] ^= 0x20;
    assert_int_equal(persist(f->s2, G, &(struct raft_ready){.snapshot = &copy}),
                     KHO_ECORRUPT);
    struct raft_snapshot empty = {.meta = sm};
    assert_int_equal(
        persist(f->s2, G, &(struct raft_ready){.snapshot = &empty}),
        KHO_ECORRUPT);
    expect_kv(f->s2, G, "alpha", "one");
    assert_int_equal(st_last(&st2), 5);

    grp_close(g2);
    grp_close(g);
    free(d2);
    free(d4);
    free(d5);
}

/* --- A real raft group over the store, against a memstore ---------------- */

struct driver {
    struct store *s;
    struct memstore *ms;
    struct raft *r;
    uint64_t applied;
    unsigned char seen[256]; /* indexes ever applied, across restarts */
};

/* raft.h "Driving a group": persist (store and memstore alike), apply,
 * commit the one transaction, advance. */
static void pump(struct driver *d)
{
    for (int guard = 0; guard < 1000 && raft_has_ready(d->r); guard++) {
        struct raft_ready rd;
        struct store_batch *b = NULL;
        assert_int_equal(raft_ready(d->r, &rd), KHO_OK);
        assert_int_equal(memstore_persist(d->ms, &rd), KHO_OK);
        assert_int_equal(store_write_begin(d->s, &b), KHO_OK);
        assert_int_equal(store_batch_persist_ready(b, G, &rd), KHO_OK);
        for (size_t i = 0; i < rd.n_committed; i++) {
            const struct raft_entry *e = &rd.committed[i];
            struct store_apply_result result;
            assert_int_equal(e->index, d->applied + 1);
            assert_true(e->index < sizeof(d->seen));
            assert_false(d->seen[e->index]);
            d->seen[e->index] = 1;
            assert_int_equal(store_batch_apply(b, G, e, &result), KHO_OK);
            assert_int_equal(result.result, KHO_OK);
            d->applied = e->index;
        }
        assert_int_equal(store_write_commit(b), KHO_OK);
        raft_advance(d->r);
    }
    assert_false(raft_has_ready(d->r));
}

static struct raft *boot(struct store *s, struct store_group *g,
                         uint64_t *applied)
{
    struct raft_config c;
    struct raft *r = NULL;
    const char *why = NULL;
    memset(&c, 0, sizeof(c));
    raft_config_defaults(&c);
    c.id = 1;
    c.group_id = G;
    c.seed = 42;
    assert_int_equal(store_group_load(s, G, &c.hs, &c.applied), KHO_OK);
    c.storage = store_raft_storage(g);
    int rc = raft_create(&c, &r, &why);
    if (rc != KHO_OK) {
        fail_msg("raft_create: %s (%s): %s", kho_errname(rc), why ? why : "-",
                 store_errmsg(s));
    }
    *applied = c.applied;
    return r;
}

static void elect(struct driver *d)
{
    struct raft_status st;
    for (int i = 0; i < 100; i++) {
        raft_status(d->r, &st);
        if (st.role == RAFT_LEADER) {
            return;
        }
        assert_int_equal(raft_tick(d->r), KHO_OK);
        pump(d);
    }
    fail_msg("a single node did not become leader in 100 ticks");
}

static void propose(struct driver *d, const char *k, const char *v)
{
    uint32_t len = 0;
    uint64_t index = 0, term = 0;
    uint8_t *data = cmd_put(k, v, &len);
    assert_int_equal(raft_propose(d->r, data, len, &index, &term), KHO_OK);
    free(data);
}

static void test_raft_group_matches_memstore(void **state)
{
    struct fx *f = *state;
    struct raft_conf conf = conf_of(1, 0);
    struct memstore ms;
    struct driver d = {0};
    struct store_group *g = NULL;
    memstore_init(&ms, &conf);
    f->s = open_at(f->dir, 0);
    create_group(f->s, G, &conf);
    g = grp_open(f->s, G);
    d.s = f->s;
    d.ms = &ms;
    d.r = boot(f->s, g, &d.applied);
    elect(&d);
    propose(&d, "a", "1");
    propose(&d, "b", "2");
    pump(&d);
    propose(&d, "a", "3");
    propose(&d, "c", "4");
    propose(&d, "d", "5");
    pump(&d);

    struct raft_storage st = store_raft_storage(g);
    struct raft_storage mst = memstore_storage(&ms);
    expect_same_storage(&st, &mst);
    struct raft_status before;
    raft_status(d.r, &before);
    assert_int_equal(before.commit, before.last_index);
    assert_int_equal(before.applied, before.commit);
    assert_int_equal(d.applied, before.applied);
    assert_true(before.applied >= 6); /* a no-op and five commands */
    expect_kv(f->s, G, "a", "3");
    expect_kv(f->s, G, "d", "5");

    /* Restart from what is durable. */
    raft_destroy(d.r);
    grp_close(g);
    reopen(f);
    d.s = f->s;
    g = grp_open(f->s, G);
    uint64_t applied = 0;
    d.r = boot(f->s, g, &applied);
    assert_int_equal(applied, before.applied);
    struct raft_status after;
    raft_status(d.r, &after);
    assert_int_equal(after.commit, before.commit);
    assert_int_equal(after.applied, before.applied);
    assert_int_equal(after.last_index, before.last_index);
    assert_int_equal(after.term, before.term);
    st = store_raft_storage(g);
    expect_same_storage(&st, &mst);

    /* Nothing is re-applied (pump asserts each index once, in order), and
     * the group carries on. */
    pump(&d);
    elect(&d);
    propose(&d, "e", "6");
    pump(&d);
    expect_kv(f->s, G, "a", "3");
    expect_kv(f->s, G, "e", "6");
    expect_same_storage(&st, &mst);
    raft_status(d.r, &after);
    assert_int_equal(after.applied, applied_of(f->s, G));

    /* Compact like the host will, then restart from the snapshot. */
    struct raft_conf ac;
    raft_applied_conf(d.r, &ac);
    assert_int_equal(store_compact(f->s, G, after.applied, &ac), KHO_OK);
    raft_destroy(d.r);
    grp_close(g);
    reopen(f);
    d.s = f->s;
    g = grp_open(f->s, G);
    d.r = boot(f->s, g, &applied);
    st = store_raft_storage(g);
    assert_int_equal(st_meta(&st).index, after.applied);
    pump(&d);
    elect(&d);
    propose(&d, "f", "7");
    pump(&d);
    expect_kv(f->s, G, "f", "7");

    raft_destroy(d.r);
    grp_close(g);
    memstore_free(&ms);
}

/* --- Cutting a conflicting suffix ---------------------------------------- */

static void test_cut_conflicting_suffix(void **state)
{
    struct fx *f = *state;
    struct raft_conf conf = conf_of(3, 0);
    struct memstore ms;
    struct store_group *g = NULL;
    memstore_init(&ms, &conf);
    f->s = open_at(f->dir, 0);
    create_group(f->s, G, &conf);
    g = grp_open(f->s, G);
    struct raft_storage st = store_raft_storage(g);
    struct raft_storage mst = memstore_storage(&ms);

    struct raft_entry *e = puts_range(1, 10, 1);
    struct raft_ready rd = {.entries = e, .n_entries = 10};
    assert_int_equal(memstore_persist(&ms, &rd), KHO_OK);
    persist_entries(f->s, G, e, 10);
    apply_range(f->s, G, e, 3);
    free_range(e, 10);

    /* A new leader's entries conflict from 6 on. */
    e = puts_range(6, 3, 2);
    rd = (struct raft_ready){.entries = e, .n_entries = 3};
    assert_int_equal(memstore_persist(&ms, &rd), KHO_OK);
    persist_entries(f->s, G, e, 3);
    free_range(e, 3);
    expect_same_storage(&st, &mst);
    assert_int_equal(st_last(&st), 8);
    assert_int_equal(st_term(&st, 5), 1);
    assert_int_equal(st_term(&st, 6), 2);
    assert_int_equal(st_term(&st, 8), 2);

    /* Appending right after the end cuts nothing. */
    e = puts_range(9, 1, 2);
    rd = (struct raft_ready){.entries = e, .n_entries = 1};
    assert_int_equal(memstore_persist(&ms, &rd), KHO_OK);
    persist_entries(f->s, G, e, 1);
    free_range(e, 1);
    expect_same_storage(&st, &mst);

    /* Entries that leave a gap do not fit; nothing is written. */
    e = puts_range(11, 1, 2);
    rd = (struct raft_ready){
        .entries = e, .n_entries = 1, .hs_changed = true, .hs = {.term = 9}};
    assert_int_equal(persist(f->s, G, &rd), KHO_ECORRUPT);
    free_range(e, 1);
    struct raft_hard_state hs;
    uint64_t applied = 0;
    assert_int_equal(store_group_load(f->s, G, &hs, &applied), KHO_OK);
    assert_int_equal(hs.term, 0);
    assert_int_equal(st_last(&st), 9);

    /* A cut into applied entries would undo the state machine. */
    e = puts_range(3, 1, 3);
    rd = (struct raft_ready){.entries = e, .n_entries = 1};
    assert_int_equal(persist(f->s, G, &rd), KHO_EINVAL);
    free_range(e, 1);
    assert_int_equal(st_last(&st), 9);
    assert_int_equal(st_term(&st, 3), 1);

    /* Non-contiguous entries in one batch are refused. */
    struct raft_entry two[2] = {ent(10, 2, RAFT_ENTRY_NOOP, NULL, 0),
                                ent(12, 2, RAFT_ENTRY_NOOP, NULL, 0)};
    rd = (struct raft_ready){.entries = two, .n_entries = 2};
    assert_int_equal(persist(f->s, G, &rd), KHO_EINVAL);
    expect_same_storage(&st, &mst);

    grp_close(g);
    memstore_free(&ms);
}

/* --- Compaction ---------------------------------------------------------- */

/* Keys of `group` in database `db`, counted with raw LMDB (store closed). */
static size_t raw_count(const char *dir, const char *db, uint64_t group)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    MDB_dbi dbi;
    uint8_t lo[8];
    size_t n = 0;
    for (int i = 0; i < 8; i++) {
        lo[i] = (uint8_t)(group >> (56 - 8 * i));
    }
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, STORE_DBS_MAX), 0);
    assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0640), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    assert_int_equal(mdb_cursor_open(txn, dbi, &c), 0);
    MDB_val k = {.mv_size = sizeof(lo), .mv_data = lo}, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size >= 8 && memcmp(k.mv_data, lo, 8) == 0) {
        n++;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return n;
}

static void test_compaction(void **state)
{
    struct fx *f = *state;
    struct raft_conf conf = conf_of(3, 0);
    const uint64_t other = G + 1; /* an adjacent group must stay intact */
    const size_t n = 3000;        /* many LMDB pages */
    f->s = open_at(f->dir, 0);
    create_group(f->s, G, &conf);
    create_group(f->s, other, &conf);
    for (uint64_t lo = 1; lo <= n; lo += 1000) {
        struct raft_entry *e = puts_range(lo, 1000, 1 + lo / 1000);
        persist_entries(f->s, G, e, 1000);
        if (lo <= 2000) {
            apply_range(f->s, G, e, 1000);
        }
        persist_entries(f->s, other, e, 1000);
        free_range(e, 1000);
    }
    assert_int_equal(applied_of(f->s, G), 2000);

    assert_int_equal(store_compact(f->s, G, 1999, &conf), KHO_EINVAL);
    assert_int_equal(store_compact(f->s, G, 2500, &conf), KHO_EINVAL);
    assert_int_equal(store_compact(f->s, G, 2000, &conf), KHO_OK);
    /* Compacting at or below the snapshot is a no-op. */
    assert_int_equal(store_compact(f->s, G, 2000, &conf), KHO_OK);
    assert_int_equal(store_compact(f->s, G, 10, &conf), KHO_OK);

    struct store_group *g = NULL, *go = NULL;
    g = grp_open(f->s, G);
    go = grp_open(f->s, other);
    struct raft_storage st = store_raft_storage(g);
    struct raft_storage so = store_raft_storage(go);
    struct raft_snapshot_meta m = st_meta(&st);
    assert_int_equal(m.index, 2000);
    assert_int_equal(m.term, 2);
    assert_int_equal(st_last(&st), n);
    assert_int_equal(st_term(&st, 2001), 3);
    uint64_t t = 0;
    assert_int_equal(st.term(st.ctx, 1999, &t), KHO_EINVAL);
    struct raft_entry out[16];
    size_t k = 0;
    assert_int_equal(st.entries(st.ctx, 2000, 2002, SIZE_MAX, out, 16, &k),
                     KHO_EINVAL);
    assert_int_equal(st.entries(st.ctx, 2001, n + 1, SIZE_MAX, out, 16, &k),
                     KHO_OK);
    assert_int_equal(k, 16);
    assert_int_equal(out[0].index, 2001);
    assert_int_equal(st_meta(&so).index, 0);
    assert_int_equal(st_last(&so), n);
    assert_int_equal(st_term(&so, 1), 1);

    struct raft_snapshot sn;
    assert_int_equal(st.snapshot(st.ctx, &sn), KHO_OK);
    assert_int_equal(sn.meta.index, 2000);
    assert_int_equal(sn.meta.term, 2);
    assert_null(sn.data);
    assert_int_equal(sn.len, 0);

    /* Later entries are applied on top of the snapshot, and the log can
     * still be cut after it. */
    struct raft_entry *e = puts_range(2001, 1000, 3);
    apply_range(f->s, G, e, 1000);
    free_range(e, 1000);
    e = puts_range(2500, 5, 4);
    struct raft_ready rd = {.entries = e, .n_entries = 5};
    assert_int_equal(persist(f->s, G, &rd), KHO_EINVAL); /* applied */
    free_range(e, 5);
    e = puts_range(3001, 5, 4);
    persist_entries(f->s, G, e, 5);
    free_range(e, 5);
    e = puts_range(3003, 2, 5);
    persist_entries(f->s, G, e, 2);
    free_range(e, 2);
    assert_int_equal(st_last(&st), 3004);
    assert_int_equal(st_term(&st, 3002), 4);
    assert_int_equal(st_term(&st, 3003), 5);

    grp_close(g);
    grp_close(go);
    reopen(f);
    expect_kv(f->s, G, "k1", "v1.1");
    expect_kv(f->s, G, "k1999", "v1999.2");
    expect_kv(f->s, G, "k3000", "v3000.3");
    expect_kv(f->s, G, "k3001", NULL);
    assert_int_equal(applied_of(f->s, G), 3000);

    /* The compacted and cut entries are gone from the file, not hidden,
     * and compaction wrote no snapshot payload. */
    uint64_t dg = data_of(f->s, G), dother = data_of(f->s, other);
    assert_true(dg != G && dg != dother);
    store_close(f->s);
    f->s = NULL;
    assert_int_equal(raw_count(f->dir, "raft_log", G), 3004 - 2000);
    assert_int_equal(raw_count(f->dir, "raft_log", other), n);
    assert_int_equal(raw_count(f->dir, "kv", dg), 3000);
    assert_int_equal(raw_count(f->dir, "kv", dother), 0);
    /* Every key was written once: hist holds no version (the current
     * ones are in kv alone). */
    assert_int_equal(raw_count(f->dir, "hist", dg), 0);
    assert_int_equal(raw_count(f->dir, "snap", G), 0);
    /* A reopened store loads fine and streams the snapshot. */
    f->s = open_at(f->dir, 0);
    assert_int_equal(applied_of(f->s, G), 3000);
    struct store_snap_reader *r = NULL;
    struct raft_snapshot_meta rm;
    uint64_t total = 0;
    uint32_t crc = 0;
    assert_int_equal(store_snap_reader_open(f->s, G, &r, &rm, &total, &crc),
                     KHO_OK);
    assert_int_equal(rm.index, 3000);
    assert_int_equal(rm.term, 3);
    assert_true(total > 3000 * 2 * 16);
    store_snap_reader_close(r);
}

/* --- Corruption on disk -------------------------------------------------- */

/* Flips one bit of a stored value with raw LMDB (the store is closed:
 * never two handles on one environment). off < 0 counts from the end. */
static void raw_flip(const char *dir, const char *db, const void *key,
                     size_t key_len, long off)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, STORE_DBS_MAX), 0);
    assert_int_equal(mdb_env_set_mapsize(env, STORE_MAP_BYTES_DEFAULT), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0640), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    MDB_val k = {.mv_size = key_len, .mv_data = (void *)key};
    MDB_val v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    uint8_t *copy = malloc(v.mv_size);
    assert_non_null(copy);
    memcpy(copy, v.mv_data, v.mv_size);
    size_t at = off < 0 ? v.mv_size - (size_t)(-off) : (size_t)off;
    assert_true(at < v.mv_size);
    copy[at] ^= 0x01;
    v.mv_data = copy;
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    free(copy);
}

static void be64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (56 - 8 * i));
    }
}

/* Opening a snapshot reader on the group fails: a stream is never made of
 * a damaged record; store_errmsg names the database. */
static void expect_no_stream(struct store *s, uint64_t group, const char *db)
{
    struct store_snap_reader *r = NULL;
    struct raft_snapshot_meta m;
    uint64_t total = 0;
    uint32_t crc = 0;
    assert_int_equal(store_snap_reader_open(s, group, &r, &m, &total, &crc),
                     KHO_ECORRUPT);
    assert_null(r);
    assert_non_null(strstr(store_errmsg(s), db));
}

static void test_corrupt_entry_detected(void **state)
{
    struct fx *f = *state;
    struct raft_conf conf = conf_of(1, 0);
    f->s = open_at(f->dir, 0);
    create_group(f->s, G, &conf);
    const uint64_t dg = data_of(f->s, G);
    struct raft_entry *e = puts_range(1, 5, 1);
    struct raft_ready rd = {.hs_changed = true,
                            .hs = {.term = 1, .vote = 1, .commit = 2},
                            .entries = e,
                            .n_entries = 5};
    assert_int_equal(persist(f->s, G, &rd), KHO_OK);
    apply_range(f->s, G, e, 2);
    free_range(e, 5);
    store_close(f->s);
    f->s = NULL;

    uint8_t k3[16], k4[16], kmeta[9], kkv[10];
    be64(k3, G);
    be64(k3 + 8, 3);
    be64(k4, G);
    be64(k4 + 8, 4);
    raw_flip(f->dir, "raft_log", k3, 16, -1); /* entry 3: last data byte */
    raw_flip(f->dir, "raft_log", k4, 16, 8);  /* entry 4: its term */

    f->s = open_at(f->dir, 0);
    struct store_group *g = NULL;
    g = grp_open(f->s, G);
    struct raft_storage st = store_raft_storage(g);
    uint64_t t = 0;
    assert_int_equal(st_term(&st, 2), 1);
    assert_int_equal(st.term(st.ctx, 3, &t), KHO_ECORRUPT);
    assert_non_null(strstr(store_errmsg(f->s), "index 3"));
    assert_non_null(strstr(store_errmsg(f->s), "checksum"));
    assert_int_equal(st.term(st.ctx, 4, &t), KHO_ECORRUPT);
    assert_int_equal(st_term(&st, 5), 1);
    struct raft_entry out[8];
    size_t n = 0;
    assert_int_equal(st.entries(st.ctx, 1, 6, SIZE_MAX, out, 8, &n),
                     KHO_ECORRUPT);
    assert_int_equal(st.entries(st.ctx, 3, 4, SIZE_MAX, out, 8, &n),
                     KHO_ECORRUPT);
    assert_int_equal(st.entries(st.ctx, 1, 3, SIZE_MAX, out, 8, &n), KHO_OK);
    assert_int_equal(n, 2);

    /* The core refuses to start on it: loading the configuration scans
     * the log back from its end and meets the corrupt entries. */
    struct raft_config c;
    struct raft *r = NULL;
    const char *why = NULL;
    memset(&c, 0, sizeof(c));
    raft_config_defaults(&c);
    c.id = 1;
    c.group_id = G;
    assert_int_equal(store_group_load(f->s, G, &c.hs, &c.applied), KHO_OK);
    c.storage = st;
    assert_int_equal(raft_create(&c, &r, &why), KHO_ECORRUPT);
    grp_close(g);
    store_close(f->s);
    f->s = NULL;

    /* The hard state and a kv record are checked the same way. */
    be64(kmeta, G);
    kmeta[8] = 1; /* hard state tag */
    raw_flip(f->dir, "raft_meta", kmeta, 9, 16);
    be64(kkv, dg);
    memcpy(kkv + 8, "k1", 2);
    raw_flip(f->dir, "kv", kkv, 10, -2);
    f->s = open_at(f->dir, 0);
    struct raft_hard_state hs;
    uint64_t applied = 0;
    assert_int_equal(store_group_load(f->s, G, &hs, &applied), KHO_ECORRUPT);
    char buf[64];
    assert_int_equal(kv_get(f->s, G, "k1", 2, buf, sizeof(buf), &n, NULL),
                     KHO_ECORRUPT);
    expect_kv(f->s, G, "k2", "v2.1");
    /* Compaction copies nothing; no stream is made of the corrupt record. */
    assert_int_equal(store_compact(f->s, G, 2, &conf), KHO_OK);
    expect_no_stream(f->s, G, "kv");
}

/* The state machine's other records - history versions and sessions - are
 * checksummed the same way: a flipped bit is an error, never an answer,
 * and never leaves in a snapshot. */
static uint8_t *cmd_sess_put(const char *key, uint64_t session, uint32_t *len)
{
    struct store_op op = {.op = STORE_OP_PUT,
                          .key = (const uint8_t *)key,
                          .key_len = strlen(key),
                          .value = (const uint8_t *)"v",
                          .value_len = 1};
    struct store_request r = {.flags = STORE_REQ_SINGLE,
                              .session = session,
                              .seq = 1,
                              .time_ms = 1,
                              .ops = &op,
                              .n_ops = 1};
    size_t n = store_request_size(&r);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    assert_int_equal(store_request_encode(&r, buf, n, &n), KHO_OK);
    *len = (uint32_t)n;
    return buf;
}

static int no_cb(void *ctx, const struct store_record *r)
{
    (void)ctx;
    (void)r;
    return KHO_OK;
}

static void test_corrupt_state_detected(void **state)
{
    struct fx *f = *state;
    struct raft_conf conf = conf_of(1, 0);
    uint32_t l1 = 0, l2 = 0;
    uint8_t *d1 = cmd_sess_put("h", 5, &l1);
    uint8_t *d2 = cmd_put("h", "x", &l2); /* "h" of entry 1 goes to hist */
    struct raft_entry e[3] = {ent(1, 1, RAFT_ENTRY_NORMAL, d1, l1),
                              ent(2, 1, RAFT_ENTRY_NORMAL, d2, l2),
                              ent(3, 1, RAFT_ENTRY_NORMAL, d1, l1)};
    f->s = open_at(f->dir, 0);
    create_group(f->s, G, &conf);
    const uint64_t dg = data_of(f->s, G);
    persist_entries(f->s, G, e, 3);
    apply_range(f->s, G, e, 2);
    store_close(f->s);
    f->s = NULL;

    /* The replaced version of "h" in hist: data id | hash | mod_rev 1 |
     * slot 0. */
    uint8_t kh[26] = {0}, ks[16];
    be64(kh, dg);
    be64(kh + 8, store_key_hash((const uint8_t *)"h", 1));
    be64(kh + 16, 1);
    raw_flip(f->dir, "hist", kh, sizeof(kh), -1);
    f->s = open_at(f->dir, 0);
    bool more = false;
    assert_int_equal(
        store_kv_history(f->s, G, "h", 1, 0, 10, no_cb, NULL, &more, NULL),
        KHO_ECORRUPT);
    assert_non_null(strstr(store_errmsg(f->s), "hist"));
    expect_kv(f->s, G, "h", "x"); /* the current record is intact */
    expect_no_stream(f->s, G, "hist");
    store_close(f->s);
    f->s = NULL;
    raw_flip(f->dir, "hist", kh, sizeof(kh), -1); /* flipped back */

    /* Session 5's record: its retry (entry 3) cannot be answered. */
    be64(ks, dg);
    be64(ks + 8, 5);
    raw_flip(f->dir, "sess", ks, sizeof(ks), 8);
    f->s = open_at(f->dir, 0);
    struct store_batch *b = NULL;
    assert_int_equal(store_write_begin(f->s, &b), KHO_OK);
    assert_int_equal(store_batch_apply(b, G, &e[2], NULL), KHO_ECORRUPT);
    assert_int_equal(store_write_commit(b), KHO_ECORRUPT);
    assert_int_equal(applied_of(f->s, G), 2);
    expect_no_stream(f->s, G, "sess");
    store_close(f->s);
    f->s = NULL;
    raw_flip(f->dir, "sess", ks, sizeof(ks), 8);
    f->s = open_at(f->dir, 0);
    assert_int_equal(store_compact(f->s, G, 2, &conf), KHO_OK);
    struct store_snap_reader *r = NULL;
    struct raft_snapshot_meta m;
    uint64_t total = 0;
    uint32_t crc = 0;
    assert_int_equal(store_snap_reader_open(f->s, G, &r, &m, &total, &crc),
                     KHO_OK);
    store_snap_reader_close(r);
    free(d1);
    free(d2);
}

static void put_format(const char *dir, uint32_t format)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, STORE_DBS_MAX), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0640), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "info", 0, &dbi), 0);
    uint8_t b[4];
    for (int i = 0; i < 4; i++) {
        b[i] = (uint8_t)(format >> (8 * i));
    }
    MDB_val k = {.mv_size = 6, .mv_data = "format"};
    MDB_val v = {.mv_size = sizeof(b), .mv_data = b};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* A data file of another format version is refused, never misread;
 * format 3 alone is converted (test_txn proves how). */
static void test_format_version_checked(void **state)
{
    struct fx *f = *state;
    struct store *s = NULL;
    f->s = open_at(f->dir, 0);
    store_close(f->s);
    f->s = NULL;
    const uint32_t refused[] = {1, 2, STORE_FORMAT_VERSION + 1};
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        char want[32];
        put_format(f->dir, refused[i]);
        assert_int_equal(store_open(f->dir, NULL, &s), KHO_EINVAL);
        assert_null(s);
        snprintf(want, sizeof(want), "store format %u;", refused[i]);
        assert_non_null(strstr(store_errmsg(NULL), want));
        assert_non_null(strstr(store_errmsg(NULL), "converts format 3"));
    }
    put_format(f->dir, 3);
    f->s = open_at(f->dir, 0);
}

/* --- A full map ---------------------------------------------------------- */

static void test_map_full(void **state)
{
    struct fx *f = *state;
    struct raft_conf conf = conf_of(1, 0);
    static uint8_t blob[4096];
    f->s = open_at(f->dir, 256u << 10);
    create_group(f->s, G, &conf);
    struct raft_entry *e = puts_range(1, 1, 1);
    persist_entries(f->s, G, e, 1);
    apply_range(f->s, G, e, 1);
    free_range(e, 1);

    uint64_t next = 2;
    int rc = KHO_OK;
    for (int i = 0; i < 1000 && rc == KHO_OK; i++) {
        struct raft_entry batch[4];
        for (int j = 0; j < 4; j++) {
            batch[j] =
                ent(next + (uint64_t)j, 1, RAFT_ENTRY_NOOP, blob, sizeof(blob));
        }
        struct raft_ready rd = {.entries = batch,
                                .n_entries = 4,
                                .hs_changed = true,
                                .hs = {.term = 1, .commit = next + 3}};
        rc = persist(f->s, G, &rd);
        if (rc == KHO_OK) {
            next += 4;
        }
    }
    assert_int_equal(rc, KHO_ENOSPC);
    assert_non_null(strstr(store_errmsg(f->s), "map is full"));
    uint64_t last = next - 1;

    /* Still readable: hard state, log and state machine. */
    struct raft_hard_state hs;
    uint64_t applied = 0;
    assert_int_equal(store_group_load(f->s, G, &hs, &applied), KHO_OK);
    assert_int_equal(hs.commit, last);
    assert_int_equal(applied, 1);
    expect_kv(f->s, G, "k1", "v1.1");
    struct store_group *g = NULL;
    g = grp_open(f->s, G);
    struct raft_storage st = store_raft_storage(g);
    assert_int_equal(st_last(&st), last);
    struct raft_entry out[2];
    size_t n = 0;
    assert_int_equal(st.entries(st.ctx, last, last + 1, SIZE_MAX, out, 2, &n),
                     KHO_OK);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].len, sizeof(blob));
    grp_close(g);

    /* A new write transaction can start; with a bigger map the node goes
     * on where it stopped. */
    struct store_batch *b = NULL;
    assert_int_equal(store_write_begin(f->s, &b), KHO_OK);
    store_write_abort(b);
    store_close(f->s);
    f->s = open_at(f->dir, 4u << 20);
    struct raft_entry more = ent(next, 1, RAFT_ENTRY_NOOP, blob, sizeof(blob));
    persist_entries(f->s, G, &more, 1);
    g = grp_open(f->s, G);
    st = store_raft_storage(g);
    assert_int_equal(st_last(&st), next);
    grp_close(g);
}

/* --- Opening ------------------------------------------------------------- */

static void test_open_twice_refused(void **state)
{
    struct fx *f = *state;
    struct store *s2 = NULL;
    char alias[PATH_MAX + 8];
    f->s = open_at(f->dir, 0);
    assert_int_equal(store_open(f->dir, NULL, &s2), KHO_EBUSY);
    assert_null(s2);
    assert_non_null(strstr(store_errmsg(NULL), "already open"));
    snprintf(alias, sizeof(alias), "%s/.", f->dir);
    assert_int_equal(store_open(alias, NULL, &s2), KHO_EBUSY);

    /* After a close the directory opens again. */
    store_close(f->s);
    f->s = NULL;
    assert_int_equal(store_open(alias, NULL, &f->s), KHO_OK);

    /* Options are checked. */
    struct store_opts o;
    store_opts_defaults(&o);
    o.map_size_bytes = 0;
    make_tmp(f->dir2);
    assert_int_equal(store_open(f->dir2, &o, &s2), KHO_EINVAL);
    store_opts_defaults(&o);
    o.max_readers = 0;
    assert_int_equal(store_open(f->dir2, &o, &s2), KHO_EINVAL);
    assert_null(s2);
}

static void test_not_usable_after_fork(void **state)
{
    struct fx *f = *state;
    struct raft_conf conf = conf_of(1, 0);
    f->s = open_at(f->dir, 0);
    create_group(f->s, G, &conf);
    assert_int_equal(applied_of(f->s, G), 0); /* leaves a pooled txn */
    assert_true(f->s->rtxn_n > 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The child may not renew the parent's pooled transaction, and
         * closing must leave its reader slot alone: the parent renews it
         * below. */
        struct raft_hard_state hs;
        uint64_t applied = 0;
        struct store_batch *b = NULL;
        int ok = store_group_load(f->s, G, &hs, &applied) == KHO_EINVAL &&
                 store_write_begin(f->s, &b) == KHO_EINVAL;
        store_close(f->s);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(applied_of(f->s, G), 0); /* the parent is unaffected */
}

/* --- Read transactions from many threads -------------------------------- */

#define POOL_READERS 8u
#define POOL_READS 10000u
#define POOL_WRITES_MIN 20u
#define POOL_WRITES_MAX 100000u

/* One put of "k" per entry: entry n leaves "k" at version n, mod_rev n,
 * applied n, with a value that spells n. */
static void pool_value(uint64_t n, char *buf, size_t cap)
{
    snprintf(buf, cap, "value-%llu-%llu", (unsigned long long)n,
             (unsigned long long)(n * 2654435761u));
}

struct pool_run {
    struct store *s;
    atomic_uint_fast64_t committed; /* the last entry known committed */
    atomic_uint readers_left;
    atomic_uint fail_line; /* first failed check, from any thread */
    char fail_what[128];
};

struct pool_reader {
    struct pool_run *run;
    uint64_t seen_max;
    size_t distinct; /* values this reader saw change */
};

struct pool_got {
    uint64_t version, mod_rev;
    char value[64];
    size_t value_len;
    bool too_long;
};

static void pool_fail(struct pool_run *run, unsigned line, const char *what)
{
    unsigned none = 0;
    if (atomic_compare_exchange_strong(&run->fail_line, &none, line)) {
        snprintf(run->fail_what, sizeof(run->fail_what), "%s", what);
    }
}

#define POOL_CHECK(run, cond)                                                  \
    do {                                                                       \
        if (!(cond)) {                                                         \
            pool_fail((run), __LINE__, #cond);                                 \
        }                                                                      \
    } while (0)

static int pool_got_cb(void *ctx, const struct store_record *r)
{
    struct pool_got *g = ctx;
    g->version = r->version;
    g->mod_rev = r->mod_rev;
    g->too_long = r->value_len >= sizeof(g->value);
    g->value_len = g->too_long ? 0 : r->value_len;
    memcpy(g->value, r->value, g->value_len);
    g->value[g->value_len] = '\0';
    return KHO_OK;
}

/* Reads "k" POOL_READS times. Each read must see one whole commit (value,
 * version, mod_rev and applied index of the same entry), never older than
 * the last commit finished before it began (a renewed transaction is a
 * fresh snapshot), and never older than its previous read. */
static void *pool_reader_main(void *arg)
{
    struct pool_reader *rd = arg;
    struct pool_run *run = rd->run;
    for (uint32_t i = 0; i < POOL_READS; i++) {
        uint64_t floor = atomic_load(&run->committed);
        struct pool_got g = {0};
        uint64_t applied = 0;
        char want[64];
        int rc = store_kv_read(run->s, G, "k", 1, pool_got_cb, &g, &applied);
        POOL_CHECK(run, rc == KHO_OK);
        if (rc != KHO_OK) {
            break;
        }
        pool_value(g.version, want, sizeof(want));
        POOL_CHECK(run, !g.too_long && strcmp(g.value, want) == 0);
        POOL_CHECK(run, g.mod_rev == g.version && applied == g.version);
        POOL_CHECK(run, g.version >= floor);
        POOL_CHECK(run, g.version >= rd->seen_max);
        rd->distinct += g.version != rd->seen_max;
        rd->seen_max = g.version;
    }
    atomic_fetch_sub(&run->readers_left, 1);
    return NULL;
}

/* Applies entry n: a put of "k". KHO_OK or the failing call's error. */
static int pool_put(struct store *s, uint64_t n)
{
    char v[64];
    uint32_t len = 0;
    struct store_batch *b = NULL;
    struct store_apply_result res = {0};
    pool_value(n, v, sizeof(v));
    struct store_op op = {.op = STORE_OP_PUT,
                          .key = (const uint8_t *)"k",
                          .key_len = 1,
                          .value = (const uint8_t *)v,
                          .value_len = strlen(v)};
    struct store_request r = {
        .flags = STORE_REQ_SINGLE, .time_ms = 1, .ops = &op, .n_ops = 1};
    uint8_t buf[256];
    size_t enc = 0;
    int rc = store_request_encode(&r, buf, sizeof(buf), &enc);
    len = (uint32_t)enc;
    struct raft_entry e = ent(n, 1, RAFT_ENTRY_NORMAL, buf, len);
    if (rc == KHO_OK) {
        rc = store_write_begin(s, &b);
    }
    if (rc != KHO_OK) {
        return rc;
    }
    rc = store_batch_apply(b, G, &e, &res);
    if (rc == KHO_OK && res.result != KHO_OK) {
        rc = res.result;
    }
    int crc = store_write_commit(b);
    return rc != KHO_OK ? rc : crc;
}

/* Commits puts until every reader is done (at least POOL_WRITES_MIN, so
 * that some commits land while they read; at most POOL_WRITES_MAX). */
static void *pool_writer_main(void *arg)
{
    struct pool_run *run = arg;
    uint64_t n = atomic_load(&run->committed);
    while (n < POOL_WRITES_MAX &&
           (n < POOL_WRITES_MIN || atomic_load(&run->readers_left) > 0)) {
        n++;
        int rc = pool_put(run->s, n);
        POOL_CHECK(run, rc == KHO_OK);
        if (rc != KHO_OK) {
            break;
        }
        atomic_store(&run->committed, n);
    }
    return NULL;
}

static int count_reader_cb(const char *msg, void *ctx)
{
    size_t *n = ctx;
    if (strstr(msg, "pid") == NULL && strstr(msg, "no active") == NULL) {
        (*n)++;
    }
    return 0;
}

/* Reader slots held now (busy or reset), from LMDB's reader table. */
static size_t live_readers(struct store *s)
{
    size_t n = 0;
    assert_int_equal(mdb_reader_list(s->env, count_reader_cb, &n), 0);
    return n;
}

/* Slots the reader table has ever had in use at once (its high-water
 * mark: LMDB takes the lowest free slot). */
static size_t readers_high_water(struct store *s)
{
    MDB_envinfo info;
    assert_int_equal(mdb_env_info(s->env, &info), 0);
    return info.me_numreaders;
}

static void test_read_txn_pool_threads(void **state)
{
    struct fx *f = *state;
    struct raft_conf conf = conf_of(1, 0);
    struct pool_run run = {0};
    struct pool_reader rd[POOL_READERS];
    pthread_t th[POOL_READERS], wth;
    f->s = open_at(f->dir, 0);
    create_group(f->s, G, &conf);
    assert_int_equal(pool_put(f->s, 1), KHO_OK);
    run.s = f->s;
    atomic_init(&run.committed, 1);
    atomic_init(&run.readers_left, POOL_READERS);
    atomic_init(&run.fail_line, 0);
    for (size_t i = 0; i < POOL_READERS; i++) {
        rd[i] = (struct pool_reader){.run = &run};
        assert_int_equal(pthread_create(&th[i], NULL, pool_reader_main, &rd[i]),
                         0);
    }
    assert_int_equal(pthread_create(&wth, NULL, pool_writer_main, &run), 0);
    for (size_t i = 0; i < POOL_READERS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
    }
    assert_int_equal(pthread_join(wth, NULL), 0);
    if (atomic_load(&run.fail_line) != 0) {
        fail_msg("line %u: %s (%s)", atomic_load(&run.fail_line), run.fail_what,
                 store_errmsg(f->s));
    }
    uint64_t last = atomic_load(&run.committed);
    size_t distinct = 0;
    for (size_t i = 0; i < POOL_READERS; i++) {
        distinct += rd[i].distinct;
    }
    printf("rtxn pool: %u readers x %u reads, %llu commits, %zu changes "
           "seen, %zu slots at most, %zu held after\n",
           POOL_READERS, POOL_READS, (unsigned long long)last, distinct,
           readers_high_water(f->s), live_readers(f->s));

    /* A transaction is only made when the pool is empty, so the table
     * never held more slots than reads in flight at once: the readers
     * (this thread and the writer read nothing meanwhile). The idle ones
     * stay in the pool, each with its slot. */
    assert_true(readers_high_water(f->s) <= POOL_READERS);
    assert_true(live_readers(f->s) >= 1);
    assert_true(live_readers(f->s) <= POOL_READERS);
    assert_true(live_readers(f->s) <= STORE_RTXN_POOL_MAX);
    /* A pooled transaction renewed now sees the last commit. */
    assert_int_equal(applied_of(f->s, G), last);
    assert_int_equal(pool_put(f->s, last + 1), KHO_OK);
    assert_int_equal(applied_of(f->s, G), last + 1);
}

/* Holding more transactions than the pool keeps: ending them keeps
 * STORE_RTXN_POOL_MAX (the rest give their slots back), each renewed one
 * sees the latest commit, close frees them all; a table of few slots
 * keeps at most half of them idle. */
static void test_read_txn_pool_bounded(void **state)
{
    struct fx *f = *state;
    struct raft_conf conf = conf_of(1, 0);
    enum { HOLD = STORE_RTXN_POOL_MAX + 8 };
    MDB_txn *txn[HOLD];
    f->s = open_at(f->dir, 0);
    create_group(f->s, G, &conf);
    assert_int_equal(live_readers(f->s), 0);
    for (size_t i = 0; i < HOLD; i++) {
        assert_int_equal(store_rtxn_begin(f->s, &txn[i]), KHO_OK);
    }
    assert_int_equal(live_readers(f->s), HOLD);
    for (size_t i = 0; i < HOLD; i++) {
        store_rtxn_end(f->s, txn[i]);
    }
    assert_int_equal(live_readers(f->s), STORE_RTXN_POOL_MAX);
    assert_int_equal(f->s->rtxn_n, STORE_RTXN_POOL_MAX);

    /* Every pooled transaction, renewed after a commit, sees it. */
    assert_int_equal(pool_put(f->s, 1), KHO_OK);
    for (size_t i = 0; i < HOLD; i++) {
        struct raft_hard_state hs;
        uint64_t applied = 0;
        assert_int_equal(store_rtxn_begin(f->s, &txn[i]), KHO_OK);
        assert_int_equal(store_rec_get_applied(f->s, txn[i], G, &applied),
                         KHO_OK);
        assert_int_equal(applied, 1);
        assert_int_equal(store_rec_get_hs(f->s, txn[i], G, &hs), KHO_OK);
    }
    assert_int_equal(live_readers(f->s), HOLD);
    for (size_t i = 0; i < HOLD; i++) {
        store_rtxn_end(f->s, txn[i]);
    }
    /* store_close() aborts the pooled ones before closing the env (ASan
     * and the reader table would see any left). */
    store_close(f->s);
    f->s = NULL;

    /* max_readers 4 keeps at most 2 idle. LMDB rounds the table up to
     * fill its lock file's page: a full table is KHO_EBUSY. */
    struct store_opts o;
    unsigned slots = 0;
    store_opts_defaults(&o);
    o.max_readers = 4;
    make_tmp(f->dir2);
    assert_int_equal(store_open(f->dir2, &o, &f->s2), KHO_OK);
    assert_int_equal(mdb_env_get_maxreaders(f->s2->env, &slots), 0);
    assert_true(slots >= 4 && slots <= STORE_READERS_MAX);
    MDB_txn **many = calloc(slots, sizeof(*many));
    assert_non_null(many);
    for (size_t i = 0; i < slots; i++) {
        assert_int_equal(store_rtxn_begin(f->s2, &many[i]), KHO_OK);
    }
    MDB_txn *extra = NULL;
    assert_int_equal(store_rtxn_begin(f->s2, &extra), KHO_EBUSY);
    assert_null(extra);
    for (size_t i = 0; i < slots; i++) {
        store_rtxn_end(f->s2, many[i]);
    }
    free(many);
    assert_int_equal(live_readers(f->s2), 2);
    assert_int_equal(store_rtxn_begin(f->s2, &extra), KHO_OK);
    store_rtxn_end(f->s2, extra);
}

/* --- Commands and the state machine -------------------------------------- */

/* Request limits are proven in test_txn; here the biggest record, a
 * malformed entry, a missing delete, a replayed index and a gap meet the
 * store's apply and read paths. */
static void test_commands_and_limits(void **state)
{
    struct fx *f = *state;
    static uint8_t val[STORE_VALUE_BYTES_MAX];
    static uint8_t key[STORE_KEY_BYTES_MAX + 1];
    size_t n = 0;
    memset(key, 'x', sizeof(key));
    memset(val, 'v', sizeof(val));
    struct store_op op = {.op = STORE_OP_PUT,
                          .key = key,
                          .key_len = STORE_KEY_BYTES_MAX,
                          .value = val,
                          .value_len = STORE_VALUE_BYTES_MAX};
    struct store_request req = {.flags = STORE_REQ_SINGLE,
                                .time_ms = 1,
                                .ops = &op,
                                .n_ops = 1,
                                .writer = "w",
                                .writer_len = 1};
    size_t big_len = store_request_size(&req);
    uint8_t *big = malloc(big_len);
    assert_non_null(big);
    assert_int_equal(store_request_encode(&req, big, big_len, &n), KHO_OK);

    /* Apply a 1 MiB value under a 1 KiB key, a malformed request, a
     * delete of a missing key, and an empty entry. */
    struct raft_conf conf = conf_of(1, 0);
    f->s = open_at(f->dir, 0);
    create_group(f->s, G, &conf);
    uint8_t junk[5] = {STORE_REQ_MAGIC, 0, 9, 9, 9};
    uint32_t la = 0, lb = 0;
    uint8_t *pa = cmd_put("a", "first", &la);
    uint8_t *pb = cmd_put("a", "second", &lb);
    uint8_t dbuf[64];
    size_t dl = cmd_del("zz", 2, dbuf, sizeof(dbuf));
    struct raft_entry e[5] = {
        ent(1, 1, RAFT_ENTRY_NORMAL, big, (uint32_t)n),
        ent(2, 1, RAFT_ENTRY_NORMAL, junk, sizeof(junk)),
        ent(3, 1, RAFT_ENTRY_NORMAL, pa, la),
        ent(4, 1, RAFT_ENTRY_NORMAL, dbuf, (uint32_t)dl),
        ent(5, 1, RAFT_ENTRY_NORMAL, NULL, 0),
    };
    persist_entries(f->s, G, e, 5);
    struct store_batch *b = NULL;
    struct store_apply_result res[5];
    assert_int_equal(store_write_begin(f->s, &b), KHO_OK);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(store_batch_apply(b, G, &e[i], &res[i]), KHO_OK);
        assert_int_equal(res[i].revision, (uint64_t)i + 1);
    }
    assert_int_equal(store_write_commit(b), KHO_OK);
    assert_int_equal(res[0].result, KHO_OK);
    assert_int_equal(res[0].version, 1);
    assert_int_equal(res[1].result, KHO_EINVAL);
    assert_int_equal(res[2].result, KHO_OK);
    assert_int_equal(res[3].result, KHO_ENOTFOUND);
    assert_int_equal(res[4].result, KHO_EINVAL);
    assert_int_equal(applied_of(f->s, G), 5);

    uint8_t *got = malloc(STORE_VALUE_BYTES_MAX);
    assert_non_null(got);
    uint64_t applied = 0;
    assert_int_equal(kv_get(f->s, G, key, STORE_KEY_BYTES_MAX, got,
                            STORE_VALUE_BYTES_MAX, &n, &applied),
                     KHO_OK);
    assert_int_equal(n, STORE_VALUE_BYTES_MAX);
    assert_int_equal(applied, 5);
    assert_memory_equal(got, val, n);
    assert_int_equal(kv_get(f->s, G, key, 0, got, 10, &n, NULL), KHO_EINVAL);
    assert_int_equal(
        kv_get(f->s, G, key, STORE_KEY_BYTES_MAX + 1, got, 10, &n, NULL),
        KHO_EINVAL);
    assert_int_equal(kv_get(f->s, G + 1, "a", 1, got, 10, &n, NULL),
                     KHO_ENOTFOUND);
    expect_kv(f->s, G, "a", "first");

    /* A replayed index is skipped: the state machine keeps its value. */
    struct raft_entry again = ent(3, 1, RAFT_ENTRY_NORMAL, pb, lb);
    apply_range(f->s, G, &again, 1);
    expect_kv(f->s, G, "a", "first");

    /* A gap fails the whole batch: the put before it is not written. */
    struct raft_entry e6 = ent(6, 1, RAFT_ENTRY_NORMAL, pb, lb);
    struct raft_entry e8 = ent(8, 1, RAFT_ENTRY_NOOP, NULL, 0);
    persist_entries(f->s, G, &e6, 1);
    assert_int_equal(store_write_begin(f->s, &b), KHO_OK);
    assert_int_equal(store_batch_apply(b, G, &e6, NULL), KHO_OK);
    assert_int_equal(store_batch_apply(b, G, &e8, NULL), KHO_EINVAL);
    assert_int_equal(store_batch_apply(b, G, &e6, NULL), KHO_EINVAL);
    assert_int_equal(store_write_commit(b), KHO_EINVAL);
    expect_kv(f->s, G, "a", "first");
    assert_int_equal(applied_of(f->s, G), 5);
    free(got);
    free(pa);
    free(pb);
    free(big);
}

/* Keys longer than LMDB's 511-byte key limit (store.h, top). */
static void test_long_keys(void **state)
{
    struct fx *f = *state;
    struct raft_conf conf = conf_of(1, 0);
    char k1[STORE_KEY_BYTES_MAX + 1], k2[STORE_KEY_BYTES_MAX + 1];
    char k495[STORE_KV_INLINE_KEY_BYTES + 1], k496[sizeof(k495) + 1];
    memset(k1, 'p', STORE_KEY_BYTES_MAX);
    k1[STORE_KEY_BYTES_MAX] = '\0';
    memcpy(k2, k1, sizeof(k1));
    k2[STORE_KEY_BYTES_MAX - 1] = 'q'; /* same first 495 bytes as k1 */
    memset(k495, 'p', STORE_KV_INLINE_KEY_BYTES);
    k495[STORE_KV_INLINE_KEY_BYTES] = '\0';
    memset(k496, 'p', STORE_KV_INLINE_KEY_BYTES + 1);
    k496[STORE_KV_INLINE_KEY_BYTES + 1] = '\0';
    f->s = open_at(f->dir, 0);
    create_group(f->s, G, &conf);
    const char *keys[4] = {k1, k2, k495, k496};
    const char *vals[4] = {"one", "two", "inline", "long"};
    struct raft_entry e[5];
    for (int i = 0; i < 4; i++) {
        uint32_t len = 0;
        uint8_t *d = cmd_put(keys[i], vals[i], &len);
        e[i] = ent((uint64_t)i + 1, 1, RAFT_ENTRY_NORMAL, d, len);
    }
    uint8_t dbuf[STORE_REQ_HEADER_BYTES + STORE_OP_HEADER_BYTES +
                 STORE_KEY_BYTES_MAX];
    size_t dl = cmd_del(k1, strlen(k1), dbuf, sizeof(dbuf));
    e[4] = ent(5, 1, RAFT_ENTRY_NORMAL, dbuf, (uint32_t)dl);
    persist_entries(f->s, G, e, 5);
    apply_range(f->s, G, e, 4);
    for (int i = 0; i < 4; i++) {
        expect_kv(f->s, G, keys[i], vals[i]);
    }
    apply_range(f->s, G, &e[4], 1);
    expect_kv(f->s, G, k1, NULL);
    expect_kv(f->s, G, k2, "two");

    /* They travel in snapshots too. */
    assert_int_equal(store_compact(f->s, G, 5, &conf), KHO_OK);
    uint8_t desc[STORE_STAGE_DESC_BYTES];
    struct raft_snapshot_meta sm;
    make_tmp(f->dir2);
    f->s2 = open_at(f->dir2, 0);
    struct raft_conf none = {0};
    create_group(f->s2, G, &none);
    stage_into(f->s, f->s2, G, &sm, desc);
    struct raft_snapshot sn = snap_of(&sm, desc);
    struct raft_ready rd = {.snapshot = &sn};
    assert_int_equal(persist(f->s2, G, &rd), KHO_OK);
    expect_kv(f->s2, G, k2, "two");
    expect_kv(f->s2, G, k495, "inline");
    expect_kv(f->s2, G, k496, "long");
    expect_kv(f->s2, G, k1, NULL);
    for (int i = 0; i < 4; i++) {
        free(e[i].data);
    }
}

/* --- Group commit and the group lifecycle -------------------------------- */

static void test_group_commit_and_lifecycle(void **state)
{
    struct fx *f = *state;
    struct raft_conf conf = conf_of(3, 0);
    const uint64_t ga = 0, gb = UINT64_MAX; /* the edges of the key space */
    f->s = open_at(f->dir, 0);
    struct store_group *g = NULL;
    assert_int_equal(store_group_open(f->s, ga, &g), KHO_ENOTFOUND);
    assert_null(g);
    create_group(f->s, ga, &conf);
    create_group(f->s, gb, &conf);
    struct store_batch *b = NULL;
    assert_int_equal(store_write_begin(f->s, &b), KHO_OK);
    assert_int_equal(store_batch_group_create(b, ga, &conf), KHO_ECONFLICT);
    assert_int_equal(store_write_commit(b), KHO_ECONFLICT);
    struct raft_conf bad = conf_of(2, 0);
    bad.members[1].id = 1; /* duplicate */
    assert_int_equal(store_write_begin(f->s, &b), KHO_OK);
    assert_int_equal(store_batch_group_create(b, 99, &bad), KHO_EINVAL);
    store_write_abort(b);

    /* Both groups' entries and applies in one transaction; an aborted
     * batch leaves nothing behind. */
    struct raft_entry *e = puts_range(1, 3, 1);
    struct raft_ready rd = {.entries = e,
                            .n_entries = 3,
                            .hs_changed = true,
                            .hs = {.term = 1, .commit = 3}};
    for (int round = 0; round < 2; round++) {
        assert_int_equal(store_write_begin(f->s, &b), KHO_OK);
        assert_int_equal(store_batch_persist_ready(b, ga, &rd), KHO_OK);
        assert_int_equal(store_batch_persist_ready(b, gb, &rd), KHO_OK);
        for (int i = 0; i < 3; i++) {
            assert_int_equal(store_batch_apply(b, ga, &e[i], NULL), KHO_OK);
            assert_int_equal(store_batch_apply(b, gb, &e[i], NULL), KHO_OK);
        }
        if (round == 0) {
            store_write_abort(b);
            assert_int_equal(applied_of(f->s, ga), 0);
            expect_kv(f->s, gb, "k1", NULL);
        } else {
            assert_int_equal(store_write_commit(b), KHO_OK);
        }
    }
    free_range(e, 3);
    assert_int_equal(applied_of(f->s, ga), 3);
    assert_int_equal(applied_of(f->s, gb), 3);
    expect_kv(f->s, ga, "k2", "v2.1");
    expect_kv(f->s, gb, "k3", "v3.1");
    g = grp_open(f->s, gb);
    struct raft_storage st = store_raft_storage(g);
    assert_int_equal(st_last(&st), 3);
    grp_close(g);

    /* Persisting for a group that does not exist fails the batch. */
    assert_int_equal(store_write_begin(f->s, &b), KHO_OK);
    assert_int_equal(store_batch_persist_ready(b, 5, &rd), KHO_ENOTFOUND);
    assert_int_equal(store_write_commit(b), KHO_ENOTFOUND);

    /* Deleting one group leaves its neighbour alone. */
    assert_int_equal(store_write_begin(f->s, &b), KHO_OK);
    assert_int_equal(store_batch_group_delete(b, gb), KHO_OK);
    assert_int_equal(store_write_commit(b), KHO_OK);
    assert_int_equal(store_group_open(f->s, gb, &g), KHO_ENOTFOUND);
    expect_kv(f->s, gb, "k3", NULL);
    expect_kv(f->s, ga, "k3", "v3.1");
    g = grp_open(f->s, ga);
    st = store_raft_storage(g);
    assert_int_equal(st_last(&st), 3);
    grp_close(g);
    reopen(f);
    assert_int_equal(applied_of(f->s, ga), 3);
}

/* The on-disk checksum is CRC-32C whichever code path computes it (SSE4.2
 * or table), so a data file moves between machines: the standard check
 * value, fed whole and in pieces. */
static void test_crc32c_known_vector(void **state)
{
    const char *v = "123456789";
    uint32_t whole =
        store_crc32c_final(store_crc32c_update(store_crc32c_init(), v, 9));
    uint32_t parts = store_crc32c_init();
    for (size_t i = 0; i < 9; i += 2) {
        parts = store_crc32c_update(parts, v + i, i + 2 <= 9 ? 2 : 1);
    }
    assert_int_equal(whole, 0xE3069283u);
    assert_int_equal(store_crc32c_final(parts), 0xE3069283u);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_known_vector),
        cmocka_unit_test_setup_teardown(test_roundtrip_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raft_group_matches_memstore, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cut_conflicting_suffix, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_entry_detected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_state_detected, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_format_version_checked, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_map_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_twice_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_not_usable_after_fork, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_read_txn_pool_threads, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_read_txn_pool_bounded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_commands_and_limits, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_long_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit_and_lifecycle, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/*
 * test_backup.c - proves the backup format and restores (store.h,
 * "Backups"):
 *
 *   - round trip: a backup of two groups (long keys, deletes, history,
 *     sessions, values spanning several chunks) restored into an empty
 *     store gives the same state machine (same check hash), applied index,
 *     hard state, snapshot meta with the new configuration, a snapshot the
 *     raft storage serves, a state machine under the group id as its data
 *     id that streams on to a third store, and a log that continues after
 *     it; the store records which backup it came from and refuses a second
 *     restore;
 *   - the keep callback leaves records out (kv and history alike);
 *     store_backup_kv() lists a group's records from the file;
 *   - a backup with any byte flipped (header, frame headers, data, the end
 *     record), truncated anywhere, or with bytes appended is refused by
 *     store_backup_check(), and a file changed after the check is refused
 *     by store_restore() with nothing written;
 *   - store_backup_write() refuses unknown groups, unordered groups and a
 *     group that applied nothing, and stops when its progress callback
 *     says so;
 *   - a backup made by store format 3 (KHOSNAP 3 streams, the current
 *     records in hist too) restores as format 4: the same state machine as
 *     a store that ran format 4, no current record in hist.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store_fixture.h"

#define T0 1000u
#define G1 FX_GROUP
#define G2 (FX_GROUP + 1u)
#define BIG_BYTES (700u << 10)

static void path_in(const struct fx *f, const char *name, char *out)
{
    int n = snprintf(out, PATH_MAX, "%.*s/%s", PATH_MAX - 64, f->dir, name);
    assert_true(n > 0 && n < PATH_MAX);
}

/* Two groups with a bit of everything. */
static void fill(struct fx *f)
{
    fx_create_group(f->s, G2);
    char key[600], val[64];
    for (int i = 0; i < 30; i++) {
        snprintf(val, sizeof(val), "v%d", i);
        snprintf(key, sizeof(key), "key/%02d", i % 20);
        fx_put(f, key, val, T0 + (uint64_t)i);
    }
    fx_del(f, "key/03", T0);
    memset(key, 'L', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    fx_put(f, key, "long key", T0);
    struct req q;
    req_init(&q, T0, "session-client");
    q.r.session = 77;
    q.r.seq = 1;
    req_put(&q, "with-session", "s");
    fx_apply(f, &q);
    req_init(&q, T0, "node-writer");
    req_put(&q, "node/0000000000000001", "n1");
    req_put(&q, "node/0000000000000002", "n2");
    req_put(&q, "reg/licences", "r");
    fx_apply(f, &q);
    fx_del(f, "node/0000000000000002", T0);
    /* G2: values that need several chunks. */
    uint8_t *big = malloc(BIG_BYTES);
    assert_non_null(big);
    for (int i = 0; i < 3; i++) {
        memset(big, 'a' + i, BIG_BYTES);
        req_init(&q, T0, "big");
        snprintf(key, sizeof(key), "big%d", i);
        req_put_n(&q, key, strlen(key), big, BIG_BYTES);
        fx_apply_to(f, G2, &q);
    }
    free(big);
}

static int write_backup(struct fx *f, const uint64_t *groups, size_t n,
                        const char *path, struct store_backup_info *info)
{
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    int rc =
        store_backup_write(f->s, groups, n, 42, 1, 777, fd, NULL, NULL, info);
    close(fd);
    return rc;
}

static void backup_two(struct fx *f, char *path, struct store_backup_info *info)
{
    static const uint64_t groups[] = {G1, G2};
    path_in(f, "backup.bin", path);
    int rc = write_backup(f, groups, 2, path, info);
    if (rc != KHO_OK) {
        fail_msg("backup: %s: %s", kho_errname(rc), store_errmsg(f->s));
    }
}

static struct raft_conf three(void)
{
    struct raft_conf c = {.n = 3};
    for (uint32_t i = 0; i < 3; i++) {
        c.members[i] = (struct raft_member){.id = 11 + i, .role = RAFT_VOTER};
    }
    return c;
}

static void open_empty(struct fx *f)
{
    assert_true(fx_tmp(f->dir2));
    f->s2 = fx_open(f->dir2, &f->opts);
}

static uint64_t hash_of(struct store *s, uint64_t group)
{
    uint64_t h = 0, applied = 0;
    assert_int_equal(store_check_hash(s, group, &h, &applied), KHO_OK);
    return h;
}

static void test_round_trip(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX], err[256] = "";
    static struct store_backup_info info, chk;
    fx_start(f);
    fill(f);
    backup_two(f, path, &info);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal((uint64_t)sb.st_size, info.file_bytes);
    int rc = store_backup_check(path, &chk, err, sizeof(err));
    if (rc != KHO_OK) {
        fail_msg("check: %s: %s", kho_errname(rc), err);
    }
    assert_true(chk.backup_id == 42 && chk.node_id == 1 &&
                chk.created_ms == 777);
    assert_int_equal(chk.n_groups, 2);
    assert_int_equal(chk.file_crc, info.file_crc);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(chk.groups[i].group_id, info.groups[i].group_id);
        assert_int_equal(chk.groups[i].index, f->index[i]);
        assert_int_equal(chk.groups[i].term, 1);
        assert_int_equal(chk.groups[i].payload_bytes,
                         info.groups[i].payload_bytes);
        assert_int_equal(chk.groups[i].offset, info.groups[i].offset);
    }
    assert_true(chk.groups[1].payload_bytes > 2 * STORE_BACKUP_CHUNK_BYTES);

    open_empty(f);
    bool empty = false, marked = true;
    struct store_restore_mark mark;
    assert_int_equal(store_restore_state(f->s2, &empty, &marked, &mark),
                     KHO_OK);
    assert_true(empty && !marked);
    struct store_restore_group plan[2] = {{.group_id = G1, .conf = three()},
                                          {.group_id = G2, .conf = three()}};
    rc = store_restore(f->s2, path, &chk, plan, 2, NULL, NULL);
    if (rc != KHO_OK) {
        fail_msg("restore: %s: %s", kho_errname(rc), store_errmsg(f->s2));
    }
    for (int i = 0; i < 2; i++) {
        uint64_t g = plan[i].group_id, applied = 0;
        struct raft_hard_state hs;
        assert_true(hash_of(f->s, g) == hash_of(f->s2, g));
        assert_int_equal(store_group_load(f->s2, g, &hs, &applied), KHO_OK);
        assert_int_equal(applied, f->index[i]);
        assert_int_equal(hs.commit, f->index[i]);
        assert_int_equal(hs.term, 1);
        assert_int_equal(hs.vote, 0);
        struct store_group *sg = NULL;
        assert_int_equal(store_group_open(f->s2, g, &sg), KHO_OK);
        struct raft_storage st = store_raft_storage(sg);
        struct raft_snapshot_meta m;
        assert_int_equal(st.snapshot_meta(st.ctx, &m), KHO_OK);
        assert_int_equal(m.index, f->index[i]);
        assert_int_equal(m.conf.n, 3);
        assert_int_equal(m.conf.members[2].id, 13);
        struct raft_snapshot sn;
        assert_int_equal(st.snapshot(st.ctx, &sn), KHO_OK);
        assert_int_equal(sn.meta.index, m.index);
        assert_int_equal(sn.meta.conf.n, 3);
        assert_int_equal(sn.len, 0);
        store_group_close(sg);
        uint64_t data = 0;
        assert_int_equal(store_group_data_id(f->s2, g, &data), KHO_OK);
        assert_int_equal(data, g);
    }
    /* The restored state machine streams on like any other. */
    struct fx third = {0};
    assert_true(fx_tmp(third.dir));
    third.s = fx_open(third.dir, &f->opts);
    fx_create_group(third.s, G2);
    fx_transfer(f->s2, third.s, G2, 333);
    assert_true(hash_of(third.s, G2) == hash_of(f->s, G2));
    store_close(third.s);
    fx_rm(third.dir);
    fx_expect_at(f->s2, G1, "key/03", NULL);
    fx_expect_at(f->s2, G1, "key/04", "v24");
    fx_expect_at(f->s2, G1, "node/0000000000000001", "n1");
    assert_int_equal(store_restore_state(f->s2, &empty, &marked, &mark),
                     KHO_OK);
    assert_true(!empty && marked);
    assert_true(mark.backup_id == 42 && mark.file_bytes == chk.file_bytes &&
                mark.file_crc == chk.file_crc);
    assert_int_equal(store_restore(f->s2, path, &chk, plan, 2, NULL, NULL),
                     KHO_ECONFLICT);
    /* The log continues right after the restored snapshot. */
    uint64_t next = f->index[0];
    struct req q;
    req_init(&q, T0, "after");
    req_put(&q, "key/04", "after");
    size_t len = 0;
    uint8_t *buf = req_encode(&q, &len);
    fx_apply_raw_at(f->s2, G1, &next, buf, len);
    free(buf);
    fx_expect_at(f->s2, G1, "key/04", "after");
}

static bool drop_nodes(void *ctx, uint64_t group, const uint8_t *key,
                       size_t key_len)
{
    (void)ctx;
    return !(group == G1 && key_len >= 5 && memcmp(key, "node/", 5) == 0);
}

static int count_cb(void *ctx, const struct store_record *r)
{
    (void)r;
    (*(size_t *)ctx)++;
    return KHO_OK;
}

static size_t history_of(struct store *s, const char *key)
{
    size_t n = 0;
    bool more = false;
    assert_int_equal(store_kv_history(s, G1, key, strlen(key), 0,
                                      STORE_SCAN_LIMIT_MAX, count_cb, &n, &more,
                                      NULL),
                     KHO_OK);
    return n;
}

static void test_keep_filter(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX], err[256];
    static struct store_backup_info info, chk;
    fx_start(f);
    fill(f);
    backup_two(f, path, &info);
    assert_int_equal(store_backup_check(path, &chk, err, sizeof(err)), KHO_OK);
    size_t n = 0;
    assert_int_equal(store_backup_kv(f->s, path, &chk, G1, count_cb, &n),
                     KHO_OK);
    /* 20 keys - 1 deleted + long + session + node/1 + reg/licences */
    assert_int_equal(n, 23);
    assert_int_equal(store_backup_kv(f->s, path, &chk, 999, count_cb, &n),
                     KHO_ENOTFOUND);
    open_empty(f);
    struct store_restore_group plan[1] = {{.group_id = G1, .conf = three()}};
    assert_int_equal(
        store_restore(f->s2, path, &chk, plan, 1, drop_nodes, NULL), KHO_OK);
    fx_expect_at(f->s2, G1, "node/0000000000000001", NULL);
    fx_expect_at(f->s2, G1, "reg/licences", "r");
    fx_expect_at(f->s2, G1, "key/05", "v25");
    assert_int_equal(history_of(f->s2, "node/0000000000000001"), 0);
    assert_int_equal(history_of(f->s2, "node/0000000000000002"), 0);
    assert_int_equal(history_of(f->s2, "reg/licences"), 1);
    assert_int_equal(history_of(f->s, "node/0000000000000002"), 2);
    /* G2 was not asked for. */
    uint64_t hs_applied = 0;
    struct raft_hard_state hs;
    assert_int_equal(store_group_load(f->s2, G2, &hs, &hs_applied),
                     KHO_ENOTFOUND);
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *len = (size_t)n;
    return b;
}

static void spill(const char *path, const uint8_t *b, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b, 1, len, fp), len);
    fclose(fp);
}

static int check_file(const char *path)
{
    static struct store_backup_info info;
    char err[256] = "";
    int rc = store_backup_check(path, &info, err, sizeof(err));
    if (rc != KHO_OK) {
        assert_true(err[0] != '\0');
    }
    return rc;
}

static void test_corrupt_and_truncated(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX], bad[PATH_MAX];
    static struct store_backup_info info;
    fx_start(f);
    fill(f);
    backup_two(f, path, &info);
    path_in(f, "bad.bin", bad);
    size_t len = 0;
    uint8_t *b = slurp(path, &len);
    const size_t flips[] = {0,
                            9,
                            20,
                            44,
                            STORE_BACKUP_HEADER_BYTES,
                            STORE_BACKUP_HEADER_BYTES + 5,
                            STORE_BACKUP_HEADER_BYTES + 9,
                            STORE_BACKUP_HEADER_BYTES + 20,
                            (size_t)info.groups[0].offset + 40,
                            (size_t)info.groups[1].offset + 5000,
                            len / 2,
                            len - 20,
                            len - 5,
                            len - 1};
    for (size_t i = 0; i < sizeof(flips) / sizeof(flips[0]); i++) {
        b[flips[i]] ^= 0x10;
        spill(bad, b, len);
        b[flips[i]] ^= 0x10;
        if (check_file(bad) != KHO_ECORRUPT) {
            fail_msg("a flip at %zu of %zu was not refused", flips[i], len);
        }
    }
    const size_t cuts[] = {0,   1,       47,      48,       60,
                           100, len / 3, len / 2, len - 16, len - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        spill(bad, b, cuts[i]);
        if (check_file(bad) != KHO_ECORRUPT) {
            fail_msg("a cut at %zu of %zu was not refused", cuts[i], len);
        }
    }
    b[len] = 0;
    spill(bad, b, len + 1);
    assert_int_equal(check_file(bad), KHO_ECORRUPT);
    spill(bad, b, len);
    assert_int_equal(check_file(bad), KHO_OK);
    path_in(f, "none.bin", bad);
    assert_int_equal(check_file(bad), KHO_ENOTFOUND);

    /* Changed after the check: the restore re-reads and refuses, leaving
     * the store as it was. */
    static struct store_backup_info chk;
    char err[256];
    assert_int_equal(store_backup_check(path, &chk, err, sizeof(err)), KHO_OK);
    b[(size_t)info.groups[1].offset + 100] ^= 1;
    spill(path, b, len);
    open_empty(f);
    struct store_restore_group plan[2] = {{.group_id = G1, .conf = three()},
                                          {.group_id = G2, .conf = three()}};
    assert_int_equal(store_restore(f->s2, path, &chk, plan, 2, NULL, NULL),
                     KHO_ECORRUPT);
    bool empty = false, marked = true;
    struct store_restore_mark mark;
    assert_int_equal(store_restore_state(f->s2, &empty, &marked, &mark),
                     KHO_OK);
    assert_true(empty && !marked);
    free(b);
}

static bool stop_early(void *ctx, uint64_t bytes)
{
    (void)bytes;
    return --*(int *)ctx > 0;
}

static void test_refusals(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX];
    static struct store_backup_info info;
    fx_start(f);
    path_in(f, "r.bin", path);
    const uint64_t g1[] = {G1};
    /* Nothing applied yet. */
    assert_int_equal(write_backup(f, g1, 1, path, &info), KHO_EINVAL);
    fill(f);
    const uint64_t unknown[] = {G1, 999};
    assert_int_equal(write_backup(f, unknown, 2, path, &info), KHO_ENOTFOUND);
    const uint64_t unordered[] = {G2, G1};
    assert_int_equal(write_backup(f, unordered, 2, path, &info), KHO_EINVAL);
    assert_int_equal(write_backup(f, g1, 0, path, &info), KHO_EINVAL);
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
    int budget = 2;
    const uint64_t both[] = {G1, G2};
    assert_int_equal(store_backup_write(f->s, both, 2, 1, 1, 1, fd, stop_early,
                                        &budget, &info),
                     KHO_EUNAVAILABLE);
    close(fd);
    assert_int_equal(check_file(path), KHO_ECORRUPT);
    /* A temporary file: writable, readable, and nowhere in the directory. */
    fd = -1;
    assert_int_equal(store_backup_tmpfile(f->s, &fd), KHO_OK);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "abc", 3), 3);
    char back[3];
    assert_int_equal(pread(fd, back, 3, 0), 3);
    assert_memory_equal(back, "abc", 3);
    close(fd);
}

/* --- Backups of store format 3 ------------------------------------------- */

/* A stream split over the DATA frames of one group. */
struct pieces {
    size_t off[64], len[64]; /* of each frame's body in the file */
    size_t n;
};

/* Reseals the frame at b + at: its crc covers its type, length and body. */
static void frame_seal(uint8_t *b, size_t at)
{
    uint32_t len = get_le32(b + at + 4);
    uint32_t c = store_crc32c_update(store_crc32c_init(), b + at, 8);
    c = store_crc32c_update(c, b + at + STORE_BACKUP_FRAME_HEADER_BYTES, len);
    put_le32(b + at + 8, store_crc32c_final(c));
}

/* Gives a group's stream (in pieces) the version byte `version` and
 * reseals its trailer and frames. */
static void stream_mark(uint8_t *b, const struct pieces *pc, uint64_t total,
                        uint8_t version)
{
    uint8_t *st = malloc((size_t)total);
    size_t got = 0;
    assert_non_null(st);
    for (size_t i = 0; i < pc->n; i++) {
        memcpy(st + got, b + pc->off[i], pc->len[i]);
        got += pc->len[i];
    }
    assert_int_equal(got, total);
    st[7] = version;
    put_le32(st + total - 4, store_crc32c(st, (size_t)total - 4));
    got = 0;
    for (size_t i = 0; i < pc->n; i++) {
        memcpy(b + pc->off[i], st + got, pc->len[i]);
        got += pc->len[i];
        frame_seal(b, pc->off[i] - STORE_BACKUP_FRAME_HEADER_BYTES);
    }
    free(st);
}

/* Rewrites the backup at path as if a node of another release had made
 * it: every group's stream says KHOSNAP `version`, and every checksum
 * around it is made again (trailer, frames, the file's). The records are
 * left as they are. */
static void mark_streams(const char *path, uint8_t version)
{
    size_t len = 0, at = STORE_BACKUP_HEADER_BYTES;
    uint8_t *b = slurp(path, &len);
    struct pieces pc = {.n = 0};
    uint64_t total = 0, got = 0;
    while (at < len) {
        uint32_t type = get_le32(b + at), blen = get_le32(b + at + 4);
        uint8_t *body = b + at + STORE_BACKUP_FRAME_HEADER_BYTES;
        if (type == 1) { /* GROUP */
            total = get_le64(body + 24);
            got = 0;
            pc.n = 0;
        } else if (type == 2) { /* DATA */
            assert_true(pc.n < 64);
            pc.off[pc.n] = (size_t)(body - b);
            pc.len[pc.n++] = blen;
            got += blen;
            if (got == total) {
                stream_mark(b, &pc, total, version);
            }
        } else { /* END: the file's crc covers every byte before it */
            put_le32(body + 12, store_crc32c(b, at));
            frame_seal(b, at);
        }
        at += STORE_BACKUP_FRAME_HEADER_BYTES + blen;
    }
    spill(path, b, len);
    free(b);
}

/* A backup made by a node of store format 3 - KHOSNAP 3 streams whose hist
 * also holds every current record, each version at its op's slot - passes
 * the checks, lists its records, and restores as format 4: the state
 * machine of the store that ran format 4 (the same check hash), no
 * current record in hist. A stream of another version is refused. */
static void test_restore_format3_backup(void **state)
{
    struct fx *f = *state;
    char path[PATH_MAX], err[256] = "";
    static struct store_backup_info info, chk;
    fx_start(f);
    fill(f);
    const uint64_t h1 = hash_of(f->s, G1), h2 = hash_of(f->s, G2);
    fx_make_format3(f, G1, false);
    f->s = fx_open(f->dir, &f->opts);
    fx_make_format3(f, G2, false);
    f->s = fx_open(f->dir, &f->opts);
    assert_true(hash_of(f->s, G1) != h1); /* the copies are in hist */
    backup_two(f, path, &info);
    mark_streams(path, 3);
    int rc = store_backup_check(path, &chk, err, sizeof(err));
    if (rc != KHO_OK) {
        fail_msg("check: %s: %s", kho_errname(rc), err);
    }
    size_t n = 0;
    assert_int_equal(store_backup_kv(f->s, path, &chk, G1, count_cb, &n),
                     KHO_OK);
    assert_int_equal(n, 23);
    open_empty(f);
    struct store_restore_group plan[2] = {{.group_id = G1, .conf = three()},
                                          {.group_id = G2, .conf = three()}};
    rc = store_restore(f->s2, path, &chk, plan, 2, NULL, NULL);
    if (rc != KHO_OK) {
        fail_msg("restore: %s: %s", kho_errname(rc), store_errmsg(f->s2));
    }
    assert_true(hash_of(f->s2, G1) == h1);
    assert_true(hash_of(f->s2, G2) == h2);
    assert_int_equal(history_of(f->s2, "node/0000000000000002"), 2);
    struct fx view = {.s = f->s2, .opts = f->opts};
    memcpy(view.dir, f->dir2, sizeof(view.dir));
    fx_expect_hist_not_current(&view, G1);
    fx_expect_hist_not_current(&view, G2);
    f->s2 = view.s;

    mark_streams(path, 2);
    assert_int_equal(store_backup_check(path, &chk, err, sizeof(err)),
                     KHO_ECORRUPT);
    assert_non_null(strstr(err, "another version"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_keep_filter, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_and_truncated, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(test_refusals, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_restore_format3_backup, fx_setup,
                                        fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

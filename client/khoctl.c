/*
 * khoctl.c - kho's command-line tool: `khoctl [global options] NOUN VERB`.
 * The commands and their options are listed in USAGE_* and cmds[] below;
 * `khoctl --help` prints them.
 *
 * Every command first parses all of its arguments, and only then opens a
 * client, so a usage error never touches the network. Tables are for
 * people (escaped, aligned, values cut short); --json is for scripts (every
 * byte, see ctl.h for how bytes that are not UTF-8 are written).
 *
 * Exit status: 0 success, 1 not found or precondition failed, 2 usage
 * error, 3 cluster unavailable or timed out (outcome unknown), 4 any other
 * error (already exists among them); the message on stderr.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ctl.h"
#include "ctl_cmd.h"
#include "kho.h"

#define CTL_TIMEOUT_DEFAULT_MS 5000u
#define CTL_TIMEOUT_MS_MAX (3600u * 1000u)
#define CTL_STDIN_CHUNK_BYTES (64u << 10)
/* Positional arguments of the longest command (shard move REG SHARD FROM
 * TO). */
#define CTL_POS_MAX 4u
/* Pages one scan or history may fetch: each page holds at least one
 * record unless it is the last, so this is never reached by a sound
 * server; it stops a broken one from looping forever. */
#define CTL_PAGES_MAX (CTL_SCAN_RECORDS_MAX + 1u)
/* Pages in a row without a record but with a token: a server that does
 * that is broken, and the scan stops with KHO_ECORRUPT. */
#define CTL_EMPTY_PAGES_MAX 8u




static const char USAGE_HEAD[] =
    "usage: khoctl [--endpoints URL,...] [--timeout MS] [--name CLIENT] "
    "COMMAND\n"
    "\n"
    "global options (before the command):\n"
    "  --endpoints URL,...  node client URLs (default $KHO_ENDPOINTS)\n"
    "  --timeout MS         bound of each call, retries included "
    "(default 5000)\n"
    "  --name CLIENT        writer name stored with every record written\n"
    "                       (default $KHO_CLIENT_NAME, else user@host; "
    "<= 64 bytes)\n"
    "\n"
    "commands:\n";

static const char USAGE_TAIL[] =
    "\n"
    "txn reads one item per line from stdin ('#' starts a comment line):\n"
    "  cmp KEY version|create|modify =|!=|<|> NUMBER\n"
    "  cmp KEY value =|!=|<|> VALUE\n"
    "  put KEY VALUE\n"
    "  del KEY\n"
    "  A KEY or VALUE is one word: bare text, '...' (as is) or \"...\" "
    "(with\n"
    "  \\\\ \\\" \\n \\r \\t \\0 \\xHH escapes). The ops apply only if every "
    "cmp holds.\n"
    "\n"
    "output: tables for people (non-printable bytes escaped as \\xHH, long\n"
    "values cut with \"...\", times in ISO-8601 UTC); --json for scripts, "
    "one\n"
    "document on stdout. A key, value or name that is valid UTF-8 is a JSON\n"
    "string under \"key\"/\"value\"/...; any other bytes are base64 (RFC 4648,"
    "\n"
    "padded) under \"key_base64\"/\"value_base64\"/... instead: exactly one "
    "of\n"
    "the two is present. scan and history fetch pages until --limit records\n"
    "(default and most: 100000) or the end; their JSON is\n"
    "{\"records\":[...],\"more\":BOOL}, more meaning records remain.\n"
    "\n"
    "shards: a registry of --shards S (default 1, at most 256) spreads its\n"
    "keys over S raft groups, each on --replicas R nodes (default 3), one\n"
    "of them on --home NODE when given. Shards are numbered 0 to S-1. A txn\n"
    "must keep its keys in one shard; a scan reads every shard and merges\n"
    "them in key order. shard move moves one replica of a shard from a node\n"
    "to another; cluster rebalance evens the replicas out over the nodes\n"
    "(--dry-run shows the plan only); both print the moves recorded.\n"
    "\n"
    "exit status: 0 ok, 1 not found or precondition failed, 2 usage error,\n"
    "3 unavailable or timed out (outcome unknown), 4 other (e.g. KHO_EEXIST,\n"
    "KHO_ETOOLARGE, KHO_EINVAL).\n";

/* --- Errors and exit codes --------------------------------------------------
 */

int ctl_exit_code(int err)
{
    switch (err) {
    case KHO_OK:
        return 0;
    case KHO_ENOTFOUND:
    case KHO_ECONFLICT:
        return EXIT_NOT_FOUND;
    case KHO_EUNAVAILABLE:
    case KHO_ETIMEOUT:
    case KHO_ENOTLEADER:
        return EXIT_UNAVAILABLE;
    default:
        return EXIT_OTHER;
    }
}

int ctl_fail(struct kho_client *c, const char *what, int err)
{
    const char *msg = c != NULL ? kho_client_errmsg(c) : "";
    fprintf(stderr, "khoctl: %s: %s (%s)%s%s\n", what, kho_strerror(err),
            kho_errname(err), msg[0] != '\0' ? ": " : "", msg);
    return ctl_exit_code(err);
}

int ctl_usage_error(const struct command *cmd, const char *fmt,
                       const char *arg)
{
    fprintf(stderr, "khoctl: %s%s%s: ", cmd->noun, cmd->verb ? " " : "",
            cmd->verb ? cmd->verb : "");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nusage: khoctl %s\n", cmd->usage);
    return EXIT_USAGE;
}

/* --- Argument parsing --------------------------------------------------------
 */



/* Strict decimal: digits only, no sign, no overflow. */
bool ctl_parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (s[0] == '\0') {
        return false;
    }
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9' ||
            v > (UINT64_MAX - (uint64_t)(*p - '0')) / 10) {
            return false;
        }
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return true;
}

static const struct opt *find_opt(const struct opt *opts, size_t n,
                                  const char *arg, size_t len)
{
    for (size_t k = 0; k < n; k++) {
        if (strlen(opts[k].name) == len &&
            strncmp(opts[k].name, arg, len) == 0) {
            return &opts[k];
        }
    }
    return NULL;
}

/* Sets option o from its value (NULL for a flag). */
static int set_opt(const struct command *cmd, const struct opt *o,
                   const char *val)
{
    *o->seen = true;
    if (o->kind == OPT_STR) {
        *o->str = val;
    } else if (o->kind == OPT_U64) {
        uint64_t v;
        if (!ctl_parse_u64(val, &v) || v < o->min || v > o->max) {
            char want[96];
            snprintf(want, sizeof(want),
                     "%%s needs a number from %llu to "
                     "%llu",
                     (unsigned long long)o->min, (unsigned long long)o->max);
            return ctl_usage_error(cmd, want, o->name);
        }
        *o->num = v;
    }
    return 0;
}

/*
 * Parses a command's arguments: options (`--name value`, `--name=value`,
 * `--flag`) anywhere, `--` ends them, everything else is positional (a
 * lone "-" too). Returns 0, or the exit code after printing why (2), or
 * -1 after printing the command's usage for --help.
 */
int ctl_parse_args(const struct command *cmd, int argc, char **argv,
                      const struct opt *opts, size_t n_opts, char **pos,
                      size_t min_pos, size_t max_pos)
{
    size_t n_pos = 0;
    bool only_pos = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (only_pos || strncmp(a, "--", 2) != 0) {
            if (n_pos == max_pos) {
                return ctl_usage_error(cmd, "unexpected argument '%s'", a);
            }
            pos[n_pos++] = argv[i];
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_pos = true;
            continue;
        }
        if (strcmp(a, "--help") == 0) {
            printf("usage: khoctl %s\n", cmd->usage);
            return -1;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq != NULL ? (size_t)(eq - a) : strlen(a);
        const struct opt *o = find_opt(opts, n_opts, a, len);
        if (o == NULL) {
            return ctl_usage_error(cmd, "unknown option '%s'", a);
        }
        const char *val = eq != NULL ? eq + 1 : NULL;
        if (o->kind == OPT_FLAG && val != NULL) {
            return ctl_usage_error(cmd, "%s takes no value", o->name);
        }
        if (o->kind != OPT_FLAG && val == NULL) {
            if (i + 1 == argc) {
                return ctl_usage_error(cmd, "%s needs a value", o->name);
            }
            val = argv[++i];
        }
        int rc = set_opt(cmd, o, val);
        if (rc != 0) {
            return rc;
        }
    }
    if (n_pos < min_pos) {
        return ctl_usage_error(cmd, "%s", "missing arguments");
    }
    for (size_t k = n_pos; k < max_pos; k++) {
        pos[k] = NULL;
    }
    return 0;
}

/* Exit code for ctl_parse_args()'s result: --help exits 0. */
int ctl_parsed_code(int rc)
{
    return rc < 0 ? 0 : rc;
}

bool ctl_start(struct ctl *x, const struct command *cmd, int argc,
               char **argv, const struct opt *opts, size_t n_opts, char **pos,
               size_t min_pos, size_t max_pos, struct kho_client **c,
               int *code)
{
    int rc = ctl_parse_args(cmd, argc, argv, opts, n_opts, pos, min_pos,
                            max_pos);
    if (rc == 0) {
        rc = ctl_client_of(x, c);
    }
    *code = ctl_parsed_code(rc);
    return rc == 0;
}

/* Opens the client on first use. Returns 0 or an exit code. */
int ctl_client_of(struct ctl *x, struct kho_client **out)
{
    if (x->c != NULL) {
        *out = x->c;
        return 0;
    }
    if (x->endpoints == NULL || x->endpoints[0] == '\0') {
        fprintf(stderr, "khoctl: no endpoints: use --endpoints or set "
                        "KHO_ENDPOINTS\n");
        return EXIT_USAGE;
    }
    int rc = kho_client_open(x->endpoints, x->timeout_ms, &x->c);
    if (rc != KHO_OK) {
        fprintf(stderr, "khoctl: bad endpoints '%s': %s\n", x->endpoints,
                kho_strerror(rc));
        return EXIT_USAGE;
    }
    if (x->name != NULL && kho_client_set_name(x->c, x->name) != KHO_OK) {
        fprintf(stderr, "khoctl: --name: empty, over %u bytes or not UTF-8\n",
                KHO_NAME_BYTES_MAX);
        return EXIT_USAGE;
    }
    *out = x->c;
    return 0;
}

/*
 * Reads all of stdin, up to max bytes, into a malloc'd buffer. Errors:
 * KHO_ETOOLARGE (more than max), KHO_ENOMEM, KHO_EIO.
 */
int ctl_read_stdin(size_t max, char **out, size_t *len)
{
    size_t cap = CTL_STDIN_CHUNK_BYTES, n = 0;
    char *buf = malloc(cap);
    if (buf == NULL) {
        return KHO_ENOMEM;
    }
    for (;;) {
        if (n == cap) {
            if (cap > max) {
                free(buf);
                return KHO_ETOOLARGE;
            }
            cap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *p = realloc(buf, cap);
            if (p == NULL) {
                free(buf);
                return KHO_ENOMEM;
            }
            buf = p;
        }
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (got == 0) {
            break;
        }
    }
    if (ferror(stdin)) {
        free(buf);
        return KHO_EIO;
    }
    if (n > max) {
        free(buf);
        return KHO_ETOOLARGE;
    }
    *out = buf;
    *len = n;
    return KHO_OK;
}

/* "1,2,3" */
static void replicas_text(const struct kho_registry_info *r, char *buf,
                          size_t cap)
{
    size_t o = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < r->n_replicas && i < KHO_REPLICAS_MAX; i++) {
        int n = snprintf(buf + o, cap - o, "%s%llu", i > 0 ? "," : "",
                         (unsigned long long)r->replicas[i]);
        if (n < 0 || (size_t)n >= cap - o) {
            break;
        }
        o += (size_t)n;
    }
    if (buf[0] == '\0') {
        snprintf(buf, cap, "-");
    }
}

int ctl_print_json(json_t *v)
{
    if (ctl_json_print(v, stdout) != 0) {
        fprintf(stderr, "khoctl: writing JSON failed (out of memory?)\n");
        return EXIT_OTHER;
    }
    return 0;
}

int ctl_print_table(struct ctl_table *t)
{
    int rc = t != NULL ? ctl_table_print(t, stdout) : KHO_ENOMEM;
    ctl_table_free(t);
    return rc == KHO_OK ? 0 : ctl_fail(NULL, "printing the table", rc);
}

/* --- registry create | list | describe -------------------------------------
 */

static int cmd_registry_create(struct ctl *x, const struct command *cmd,
                               int argc, char **argv)
{
    bool json = false, has_reps = false, has_shards = false, has_home = false;
    uint64_t reps = 0, shards = 0;
    const char *home = NULL;
    const struct opt opts[] = {
        {"--replicas", OPT_U64, &has_reps, NULL, &reps, 1, KHO_REPLICAS_MAX},
        {"--shards", OPT_U64, &has_shards, NULL, &shards, 1, KHO_SHARDS_MAX},
        {"--home", OPT_STR, &has_home, &home, NULL, 0, 0},
        {"--json", OPT_FLAG, &json, NULL, NULL, 0, 0},
    };
    char *pos[1] = {NULL};
    struct kho_client *c = NULL;
    int code = 0;
    if (!ctl_start(x, cmd, argc, argv, opts, 4, pos, 1, 1, &c, &code)) {
        return code;
    }
    struct kho_registry_opts o = {
        .replicas = (uint32_t)reps, .shards = (uint32_t)shards, .home = home};
    struct kho_registry_info info;
    int err = kho_registry_create_opts(c, pos[0], &o, &info);
    if (err != KHO_OK) {
        return ctl_fail(c, "registry create", err);
    }
    if (json) {
        return ctl_print_json(ctl_json_registry(&info, false));
    }
    char rbuf[8 * 24];
    replicas_text(&info, rbuf, sizeof(rbuf));
    char *name = ctl_escape(info.name, strlen(info.name), CTL_KEY_CHARS_MAX);
    fprintf(stderr,
            "ok: registry %s: %u shard%s, group %llu, replicas %s%s%s\n",
            name != NULL ? name : "?", info.shards, info.shards == 1 ? "" : "s",
            (unsigned long long)info.group_id, rbuf,
            info.home[0] != '\0' ? ", home " : "", info.home);
    free(name);
    return 0;
}

static void registry_row(struct ctl_table *t, const struct kho_registry_info *r,
                         bool describe)
{
    char rbuf[8 * 24];
    replicas_text(r, rbuf, sizeof(rbuf));
    ctl_table_add_bytes(t, r->name, strlen(r->name), CTL_KEY_CHARS_MAX);
    ctl_table_add_u64(t, r->group_id);
    ctl_table_add_u64(t, r->shards);
    ctl_table_add(t, rbuf);
    ctl_table_add_bytes(t, r->home[0] != '\0' ? r->home : "-",
                        r->home[0] != '\0' ? strlen(r->home) : 1,
                        CTL_KEY_CHARS_MAX);
    if (describe) {
        ctl_table_add_u64(t, r->leader);
        ctl_table_add_u64(t, r->term);
        ctl_table_add_u64(t, r->commit);
        ctl_table_add_u64(t, r->applied);
    }
    ctl_table_add_time(t, r->created_ms);
    ctl_table_add_bytes(t, r->creator, strlen(r->creator), CTL_KEY_CHARS_MAX);
}

static int cmd_registry_list(struct ctl *x, const struct command *cmd, int argc,
                             char **argv)
{
    bool json = false;
    const struct opt opts[] = {
        {"--json", OPT_FLAG, &json, NULL, NULL, 0, 0},
    };
    struct kho_client *c = NULL;
    int code = 0;
    if (!ctl_start(x, cmd, argc, argv, opts, 1, NULL, 0, 0, &c, &code)) {
        return code;
    }
    struct kho_registry_info *regs = NULL;
    size_t n = 0;
    int err = kho_registry_list(c, &regs, &n);
    if (err != KHO_OK) {
        return ctl_fail(c, "registry list", err);
    }
    if (json) {
        json_t *arr = json_array();
        int bad = arr == NULL;
        for (size_t i = 0; !bad && i < n; i++) {
            bad =
                json_array_append_new(arr, ctl_json_registry(&regs[i], false));
        }
        json_t *o = bad ? NULL : json_object();
        if (o == NULL) {
            json_decref(arr);
        } else if (json_object_set_new(o, "registries", arr) != 0) {
            json_decref(o); /* arr went with the failed set */
            o = NULL;
        }
        free(regs);
        return ctl_print_json(o);
    }
    struct ctl_table *t = ctl_table_new("NAME GROUP> SHARDS> REPLICAS HOME "
                                        "CREATED CREATOR");
    for (size_t i = 0; t != NULL && i < n; i++) {
        registry_row(t, &regs[i], false);
    }
    free(regs);
    return ctl_print_table(t);
}

static int cmd_registry_describe(struct ctl *x, const struct command *cmd,
                                 int argc, char **argv)
{
    bool json = false;
    const struct opt opts[] = {
        {"--json", OPT_FLAG, &json, NULL, NULL, 0, 0},
    };
    char *pos[1] = {NULL};
    struct kho_client *c = NULL;
    int code = 0;
    if (!ctl_start(x, cmd, argc, argv, opts, 1, pos, 1, 1, &c, &code)) {
        return code;
    }
    struct kho_registry_info info;
    int err = kho_registry_describe(c, pos[0], &info);
    if (err != KHO_OK) {
        return ctl_fail(c, "registry describe", err);
    }
    /* Where its shards live; a cluster before sharding has no map. */
    struct kho_shard_map *m = NULL;
    int map_err = kho_shard_map(c, pos[0], &m);
    if (ctl_shards_unknown(c, map_err)) {
        map_err = KHO_OK;
    }
    int rc = 0;
    if (json) {
        json_t *o = ctl_json_registry(&info, true);
        if (o != NULL && m != NULL &&
            json_object_set_new(o, "shard_list", ctl_json_shards(m)) != 0) {
            json_decref(o);
            o = NULL;
        }
        rc = ctl_print_json(o);
    } else {
        struct ctl_table *t = ctl_table_new(
            "NAME GROUP> SHARDS> REPLICAS HOME LEADER> TERM> COMMIT> "
            "APPLIED> CREATED CREATOR");
        if (t != NULL) {
            registry_row(t, &info, true);
        }
        rc = ctl_print_table(t);
        if (rc == 0 && m != NULL) {
            putchar('\n');
            t = ctl_table_new("SHARD> GROUP> REPLICAS LEADER");
            ctl_shard_rows(t, m, false);
            rc = ctl_print_table(t);
        }
    }
    kho_shard_map_free(m);
    if (rc == 0 && map_err != KHO_OK) {
        rc = ctl_fail(c, "registry describe: shard map", map_err);
    }
    return rc;
}

/* --- put, get, del
 * -------------------------------------------------------------- */

/* The precondition of a put or del from its options; 0, or an exit code. */
static int cond_of(const struct command *cmd, bool absent, bool has_ver,
                   uint64_t ver, bool has_rev, uint64_t rev,
                   enum kho_cond *cond, uint64_t *want)
{
    if ((int)absent + (int)has_ver + (int)has_rev > 1) {
        return ctl_usage_error(cmd, "%s", "give at most one precondition");
    }
    *cond = absent    ? KHO_COND_IF_ABSENT
            : has_ver ? KHO_COND_IF_VERSION
            : has_rev ? KHO_COND_IF_REVISION
                      : KHO_COND_NONE;
    *want = has_ver ? ver : rev;
    return 0;
}

static int cmd_put(struct ctl *x, const struct command *cmd, int argc,
                   char **argv)
{
    bool absent = false, has_ver = false, has_rev = false, json = false;
    uint64_t ver = 0, rev = 0;
    const struct opt opts[] = {
        {"--if-absent", OPT_FLAG, &absent, NULL, NULL, 0, 0},
        {"--if-version", OPT_U64, &has_ver, NULL, &ver, 0, UINT64_MAX},
        {"--if-revision", OPT_U64, &has_rev, NULL, &rev, 0, UINT64_MAX},
        {"--json", OPT_FLAG, &json, NULL, NULL, 0, 0},
    };
    char *pos[3] = {NULL};
    enum kho_cond cond = KHO_COND_NONE;
    uint64_t want = 0;
    int rc = ctl_parse_args(cmd, argc, argv, opts, 4, pos, 3, 3);
    if (rc == 0) {
        rc = cond_of(cmd, absent, has_ver, ver, has_rev, rev, &cond, &want);
    }
    if (rc == 0 && pos[1][0] == '\0') {
        rc = ctl_usage_error(cmd, "%s", "empty key");
    }
    struct kho_client *c = NULL;
    if (rc == 0) {
        rc = ctl_client_of(x, &c);
    }
    if (rc != 0) {
        return ctl_parsed_code(rc);
    }
    const char *val = pos[2];
    size_t vlen = strlen(val);
    char *owned = NULL;
    if (strcmp(val, "-") == 0) {
        int err = ctl_read_stdin(KHO_VALUE_BYTES_MAX, &owned, &vlen);
        if (err != KHO_OK) {
            fprintf(stderr,
                    "khoctl: put: reading the value from stdin: %s "
                    "(%s)%s\n",
                    kho_strerror(err), kho_errname(err),
                    err == KHO_ETOOLARGE ? ": over 1 MiB" : "");
            return ctl_exit_code(err);
        }
        val = owned;
    }
    struct kho_record_meta meta;
    int err = kho_put(c, pos[0], pos[1], strlen(pos[1]), val, vlen, cond, want,
                      &meta);
    free(owned);
    if (err != KHO_OK) {
        return ctl_fail(c, "put", err);
    }
    if (json) {
        json_t *o = json_object();
        if (o != NULL &&
            (ctl_json_set_u64(o, "version", meta.version) |
             ctl_json_set_u64(o, "revision", meta.revision)) != 0) {
            json_decref(o);
            o = NULL;
        }
        return ctl_print_json(o);
    }
    fprintf(stderr, "ok: version %llu, revision %llu\n",
            (unsigned long long)meta.version,
            (unsigned long long)meta.revision);
    return 0;
}

static int cmd_get(struct ctl *x, const struct command *cmd, int argc,
                   char **argv)
{
    bool json = false, ser = false;
    const struct opt opts[] = {
        {"--json", OPT_FLAG, &json, NULL, NULL, 0, 0},
        {"--serializable", OPT_FLAG, &ser, NULL, NULL, 0, 0},
    };
    char *pos[2] = {NULL};
    int rc = ctl_parse_args(cmd, argc, argv, opts, 2, pos, 2, 2);
    if (rc == 0 && pos[1][0] == '\0') {
        rc = ctl_usage_error(cmd, "%s", "empty key");
    }
    struct kho_client *c = NULL;
    if (rc == 0) {
        rc = ctl_client_of(x, &c);
    }
    if (rc != 0) {
        return ctl_parsed_code(rc);
    }
    struct kho_record r;
    int err = kho_get_record(c, pos[0], pos[1], strlen(pos[1]), ser, &r);
    if (err != KHO_OK) {
        return ctl_fail(c, "get", err);
    }
    if (json) {
        rc = ctl_print_json(ctl_json_record(&r, false, false));
    } else {
        fwrite(r.value, 1, r.value_len, stdout);
        if (r.value_len > 0 && ((char *)r.value)[r.value_len - 1] != '\n' &&
            isatty(1)) {
            putchar('\n');
        }
    }
    kho_record_clear(&r);
    return rc;
}

static int cmd_del(struct ctl *x, const struct command *cmd, int argc,
                   char **argv)
{
    bool has_ver = false, has_rev = false;
    uint64_t ver = 0, rev = 0;
    const struct opt opts[] = {
        {"--if-version", OPT_U64, &has_ver, NULL, &ver, 0, UINT64_MAX},
        {"--if-revision", OPT_U64, &has_rev, NULL, &rev, 0, UINT64_MAX},
    };
    char *pos[2] = {NULL};
    enum kho_cond cond = KHO_COND_NONE;
    uint64_t want = 0;
    int rc = ctl_parse_args(cmd, argc, argv, opts, 2, pos, 2, 2);
    if (rc == 0) {
        rc = cond_of(cmd, false, has_ver, ver, has_rev, rev, &cond, &want);
    }
    if (rc == 0 && pos[1][0] == '\0') {
        rc = ctl_usage_error(cmd, "%s", "empty key");
    }
    struct kho_client *c = NULL;
    if (rc == 0) {
        rc = ctl_client_of(x, &c);
    }
    if (rc != 0) {
        return ctl_parsed_code(rc);
    }
    int err = kho_del(c, pos[0], pos[1], strlen(pos[1]), cond, want);
    return err == KHO_OK ? 0 : ctl_fail(c, "del", err);
}

/* --- txn
 * ----------------------------------------------------------------------- */

/* Reads and parses the transaction on stdin. 0, or an exit code. */
static int txn_read(struct ctl_txn *t)
{
    char *text = NULL;
    size_t len = 0;
    int err = ctl_read_stdin(CTL_TXN_INPUT_BYTES_MAX, &text, &len);
    if (err != KHO_OK) {
        fprintf(stderr, "khoctl: txn: reading stdin: %s (%s)\n",
                kho_strerror(err), kho_errname(err));
        return ctl_exit_code(err);
    }
    char why[256];
    err = ctl_txn_parse(text, len, t, why, sizeof(why));
    free(text);
    if (err != KHO_OK) {
        fprintf(stderr, "khoctl: txn: stdin: %s (%s)\n", why, kho_errname(err));
        return err == KHO_EINVAL ? EXIT_USAGE : ctl_exit_code(err);
    }
    return 0;
}

static int txn_report(struct kho_client *c, bool json, int err,
                      uint64_t revision, uint32_t failed,
                      const struct ctl_txn *t)
{
    if (json && (err == KHO_OK || err == KHO_ECONFLICT)) {
        json_t *o = json_object();
        if (o != NULL &&
            (json_object_set_new(o, "succeeded", json_boolean(err == KHO_OK)) |
             (err == KHO_OK ? ctl_json_set_u64(o, "revision", revision)
                            : ctl_json_set_u64(o, "failed_compare", failed))) !=
                0) {
            json_decref(o);
            o = NULL;
        }
        int rc = ctl_print_json(o);
        if (rc != 0 || err == KHO_OK) {
            return rc;
        }
    }
    if (err == KHO_ECONFLICT && failed > 0) {
        fprintf(stderr,
                "khoctl: txn: %s (%s): compare %u (stdin line %u) "
                "does not hold; nothing applied\n",
                kho_strerror(err), kho_errname(err), failed,
                t->cmp_lines[failed - 1]);
        return ctl_exit_code(err);
    }
    if (err != KHO_OK) {
        return ctl_fail(c, "txn", err);
    }
    fprintf(stderr, "ok: revision %llu\n", (unsigned long long)revision);
    return 0;
}

static int cmd_txn(struct ctl *x, const struct command *cmd, int argc,
                   char **argv)
{
    bool json = false;
    const struct opt opts[] = {
        {"--json", OPT_FLAG, &json, NULL, NULL, 0, 0},
    };
    char *pos[1] = {NULL};
    int rc = ctl_parse_args(cmd, argc, argv, opts, 1, pos, 1, 1);
    if (rc != 0) {
        return ctl_parsed_code(rc);
    }
    /* About 20 KiB: kept off the stack. */
    static struct ctl_txn t;
    rc = txn_read(&t);
    struct kho_client *c = NULL;
    if (rc == 0) {
        rc = ctl_client_of(x, &c);
    }
    if (rc == 0) {
        uint64_t revision = 0;
        uint32_t failed = 0;
        int err = kho_txn(c, pos[0], t.cmps, t.n_cmps, t.ops, t.n_ops,
                          &revision, &failed);
        rc = txn_report(c, json, err, revision, failed, &t);
    }
    ctl_txn_free(&t);
    return rc;
}

/* --- scan, history
 * -------------------------------------------------------------- */

/* Where the records of a scan or history go: a table, or JSON streamed one
 * record per line, so that a long scan never sits in memory whole. */
struct sink {
    bool json, keys_only, history;
    struct ctl_table *t;
    size_t n;
    int err; /* KHO_ENOMEM once an output failed */
};

static void sink_open(struct sink *s)
{
    if (!s->json) {
        s->t = ctl_table_new(s->history ? "REVISION> VERSION> OP TIME WRITER "
                                          "VALUE"
                             : s->keys_only ? "KEY"
                                            : "KEY VERSION> REVISION> TIME "
                                              "WRITER VALUE");
        s->err = s->t != NULL ? KHO_OK : KHO_ENOMEM;
    }
}

static void sink_table_row(struct sink *s, const struct kho_record *r)
{
    struct ctl_table *t = s->t;
    if (s->history) {
        ctl_table_add_u64(t, r->modify_revision);
        ctl_table_add_u64(t, r->version);
        ctl_table_add(t, r->deleted ? "del" : "put");
    } else {
        ctl_table_add_bytes(t, r->key, r->key_len, CTL_KEY_CHARS_MAX);
        if (s->keys_only) {
            return;
        }
        ctl_table_add_u64(t, r->version);
        ctl_table_add_u64(t, r->modify_revision);
    }
    ctl_table_add_time(t, r->time_ms);
    ctl_table_add_bytes(t, r->writer, strlen(r->writer), CTL_KEY_CHARS_MAX);
    if (s->history && r->deleted) {
        ctl_table_add(t, "");
    } else {
        ctl_table_add_bytes(t, r->value, r->value_len, CTL_VALUE_CHARS_MAX);
    }
}

static void sink_add(struct sink *s, const struct kho_record *r)
{
    if (s->err != KHO_OK) {
        return;
    }
    if (!s->json) {
        sink_table_row(s, r);
        s->n++;
        return;
    }
    json_t *o = ctl_json_record(r, s->keys_only, s->history);
    fputs(s->n == 0 ? "{\"records\":[\n" : ",\n", stdout);
    if (o == NULL || json_dumpf(o, stdout, JSON_COMPACT) != 0) {
        s->err = KHO_ENOMEM;
    }
    json_decref(o);
    s->n++;
}

/* Ends the output; err is how the paging ended. Returns an exit code. */
static int sink_close(struct sink *s, struct kho_client *c, const char *what,
                      int err, bool more)
{
    int rc = 0;
    if (s->json && (s->n > 0 || err == KHO_OK)) {
        printf("%s],\"more\":%s%s%s%s}\n", s->n == 0 ? "{\"records\":[" : "\n",
               more ? "true" : "false", err != KHO_OK ? ",\"error\":\"" : "",
               err != KHO_OK ? kho_errname(err) : "",
               err != KHO_OK ? "\"" : "");
    }
    if (err != KHO_OK) {
        rc = ctl_fail(c, what, err);
    } else if (s->err != KHO_OK) {
        rc = ctl_fail(NULL, "writing the output", s->err);
    } else if (!s->json) {
        rc = ctl_table_print(s->t, stdout) == KHO_OK
                 ? 0
                 : ctl_fail(NULL, "printing the table", KHO_ENOMEM);
    }
    ctl_table_free(s->t);
    s->t = NULL;
    return rc;
}

/* One page of a scan or a history. */
struct pager {
    struct kho_client *c;
    const char *registry;
    struct kho_scan_opts scan; /* scan */
    const char *key;           /* history */
    uint64_t limit;            /* records in all, at most
                                  CTL_SCAN_RECORDS_MAX */
};

static int pager_page(struct pager *p, uint32_t limit, const void *token,
                      size_t token_len, struct kho_record **recs, size_t *n,
                      void **next, size_t *next_len)
{
    if (p->key != NULL) {
        return kho_history(p->c, p->registry, p->key, strlen(p->key), limit,
                           token, token_len, recs, n, next, next_len);
    }
    p->scan.limit = limit;
    p->scan.token = token;
    p->scan.token_len = token_len;
    return kho_scan(p->c, p->registry, &p->scan, recs, n, next, next_len);
}

/* Fetches pages until p->limit records or the end. *more is set when
 * records remain. Returns the error that stopped it, or KHO_OK. */
static int pager_run(struct pager *p, struct sink *s, bool *more)
{
    void *token = NULL;
    size_t token_len = 0;
    uint64_t left = p->limit;
    unsigned empty = 0;
    int err = KHO_OK;
    *more = false;
    for (size_t page = 0; page < CTL_PAGES_MAX && left > 0; page++) {
        struct kho_record *recs = NULL;
        size_t n = 0;
        void *next = NULL;
        size_t next_len = 0;
        uint32_t want =
            left < KHO_SCAN_LIMIT_MAX ? (uint32_t)left : KHO_SCAN_LIMIT_MAX;
        err =
            pager_page(p, want, token, token_len, &recs, &n, &next, &next_len);
        free(token);
        token = next;
        token_len = next_len;
        if (err != KHO_OK) {
            break;
        }
        for (size_t i = 0; i < n && left > 0; i++, left--) {
            sink_add(s, &recs[i]);
        }
        kho_records_free(recs, n);
        *more = token != NULL;
        empty = n == 0 ? empty + 1 : 0;
        if (token == NULL) {
            break;
        }
        if (empty == CTL_EMPTY_PAGES_MAX) {
            fprintf(stderr, "khoctl: %u pages in a row without records\n",
                    empty);
            err = KHO_ECORRUPT;
            break;
        }
    }
    free(token);
    return err;
}

static int cmd_scan(struct ctl *x, const struct command *cmd, int argc,
                    char **argv)
{
    bool has_prefix = false, has_from = false, has_to = false;
    bool has_limit = false, ser = false;
    const char *prefix = "", *from = "", *to = "";
    uint64_t limit = CTL_SCAN_RECORDS_MAX;
    struct sink s = {0};
    const struct opt opts[] = {
        {"--prefix", OPT_STR, &has_prefix, &prefix, NULL, 0, 0},
        {"--from", OPT_STR, &has_from, &from, NULL, 0, 0},
        {"--to", OPT_STR, &has_to, &to, NULL, 0, 0},
        {"--limit", OPT_U64, &has_limit, NULL, &limit, 1, CTL_SCAN_RECORDS_MAX},
        {"--keys-only", OPT_FLAG, &s.keys_only, NULL, NULL, 0, 0},
        {"--serializable", OPT_FLAG, &ser, NULL, NULL, 0, 0},
        {"--json", OPT_FLAG, &s.json, NULL, NULL, 0, 0},
    };
    char *pos[1] = {NULL};
    int rc = ctl_parse_args(cmd, argc, argv, opts, 7, pos, 1, 1);
    if (rc == 0 && has_prefix && (has_from || has_to)) {
        rc = ctl_usage_error(cmd, "%s", "--prefix excludes --from and --to");
    }
    struct pager p = {.registry = pos[0], .limit = limit};
    if (rc == 0) {
        rc = ctl_client_of(x, &p.c);
    }
    if (rc != 0) {
        return ctl_parsed_code(rc);
    }
    p.scan.start = from;
    p.scan.start_len = strlen(from);
    p.scan.end = to;
    p.scan.end_len = strlen(to);
    p.scan.prefix = prefix;
    p.scan.prefix_len = strlen(prefix);
    p.scan.serializable = ser;
    sink_open(&s);
    bool more = false;
    int err = pager_run(&p, &s, &more);
    rc = sink_close(&s, p.c, "scan", err, more);
    if (rc == 0 && more && !has_limit && !s.json) {
        fprintf(stderr,
                "khoctl: scan: stopped after %u records; more "
                "follow (continue with --from)\n",
                CTL_SCAN_RECORDS_MAX);
    }
    return rc;
}

static int cmd_history(struct ctl *x, const struct command *cmd, int argc,
                       char **argv)
{
    bool has_limit = false;
    uint64_t limit = CTL_SCAN_RECORDS_MAX;
    struct sink s = {.history = true};
    const struct opt opts[] = {
        {"--limit", OPT_U64, &has_limit, NULL, &limit, 1, CTL_SCAN_RECORDS_MAX},
        {"--json", OPT_FLAG, &s.json, NULL, NULL, 0, 0},
    };
    char *pos[2] = {NULL};
    int rc = ctl_parse_args(cmd, argc, argv, opts, 2, pos, 2, 2);
    if (rc == 0 && pos[1][0] == '\0') {
        rc = ctl_usage_error(cmd, "%s", "empty key");
    }
    struct pager p = {.registry = pos[0], .key = pos[1], .limit = limit};
    if (rc == 0) {
        rc = ctl_client_of(x, &p.c);
    }
    if (rc != 0) {
        return ctl_parsed_code(rc);
    }
    sink_open(&s);
    bool more = false;
    int err = pager_run(&p, &s, &more);
    return sink_close(&s, p.c, "history", err, more);
}

/* --- cluster status
 * ------------------------------------------------------------ */

/* What every answering endpoint said, merged. */
struct cluster {
    struct kho_node_info nodes[KHO_NODES_MAX + KHO_ENDPOINTS_MAX];
    size_t n_nodes;
    json_t *groups;      /* --json */
    json_t *unreachable; /* --json */
    json_t *replicas;    /* --json: the members of groups, from leaders */
    struct ctl_table *t; /* groups, for people */
    struct ctl_table *rt; /* replicas, for people */
};

static void cluster_add_node(struct cluster *cl, const struct kho_node_info *n)
{
    for (size_t i = 0; i < cl->n_nodes; i++) {
        if (cl->nodes[i].id == n->id) {
            return;
        }
    }
    if (cl->n_nodes < sizeof(cl->nodes) / sizeof(cl->nodes[0])) {
        cl->nodes[cl->n_nodes++] = *n;
    }
}

static json_t *group_json(const struct kho_node_status *st,
                          const struct kho_group_status *g)
{
    json_t *o = json_object();
    if (o == NULL) {
        return NULL;
    }
    /* "group" before "role": scripts/cluster.sh greps for
     * "group":N,...,"role":"leader" inside one object. */
    int rc = ctl_json_set_u64(o, "node", st->node_id);
    rc |= ctl_json_set_bytes(o, "name", st->name, strlen(st->name));
    rc |= ctl_json_set_u64(o, "group", g->group_id);
    rc |= ctl_json_set_bytes(o, "registry", g->registry, strlen(g->registry));
    rc |= ctl_json_set_bytes(o, "role", g->role, strlen(g->role));
    rc |= ctl_json_set_u64(o, "term", g->term);
    rc |= ctl_json_set_u64(o, "leader", g->leader);
    rc |= ctl_json_set_u64(o, "commit", g->commit);
    rc |= ctl_json_set_u64(o, "applied", g->applied);
    rc |= ctl_json_set_u64(o, "last_index", g->last_index);
    rc |= ctl_json_set_u64(o, "shard", g->shard);
    if (rc == 0 && g->check_alarm) {
        /* Raised by khoctl check (ctl_admin.c); last, after "role". */
        char h[17], e[17];
        snprintf(h, sizeof(h), "%016llx",
                 (unsigned long long)g->check_alarm_hash);
        snprintf(e, sizeof(e), "%016llx",
                 (unsigned long long)g->check_alarm_expected);
        json_t *a = json_object();
        rc = a == NULL || ctl_json_set_u64(a, "index", g->check_alarm_index) ||
             json_object_set_new(a, "hash", json_string(h)) ||
             json_object_set_new(a, "expected", json_string(e)) ||
             ctl_json_set_u64(a, "time_ms", g->check_alarm_time_ms);
        rc |= json_object_set_new(o, "check_alarm", a);
    }
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static json_t *replica_json(const struct kho_group_status *g,
                            const struct kho_replica_status *r)
{
    json_t *o = json_object();
    if (o == NULL) {
        return NULL;
    }
    int rc = ctl_json_set_bytes(o, "registry", g->registry,
                                strlen(g->registry));
    rc |= ctl_json_set_u64(o, "group", g->group_id);
    rc |= ctl_json_set_u64(o, "node", r->node);
    rc |= ctl_json_set_bytes(o, "role", r->role, strlen(r->role));
    rc |= ctl_json_set_u64(o, "match", r->match);
    rc |= ctl_json_set_u64(o, "lag", r->lag);
    rc |= json_object_set_new(o, "leader", json_boolean(r->leader));
    rc |= json_object_set_new(o, "active", json_boolean(r->active));
    rc |= ctl_json_set_u64(o, "shard", g->shard);
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The shard a group holds; "-" for the meta group. */
static void shard_cell(struct ctl_table *t, const struct kho_group_status *g)
{
    if (g->registry[0] == '\0') {
        ctl_table_add(t, "-");
    } else {
        ctl_table_add_u64(t, g->shard);
    }
}

/* The members of group g, as its leader reports them. */
static void cluster_add_replicas(struct cluster *cl,
                                 const struct kho_group_status *g)
{
    for (size_t k = 0; k < g->n_replicas; k++) {
        const struct kho_replica_status *r = &g->replicas[k];
        if (cl->replicas != NULL) {
            json_array_append_new(cl->replicas, replica_json(g, r));
            continue;
        }
        ctl_table_add_bytes(cl->rt, g->registry, strlen(g->registry),
                            CTL_KEY_CHARS_MAX);
        shard_cell(cl->rt, g);
        ctl_table_add_u64(cl->rt, g->group_id);
        ctl_table_add_u64(cl->rt, r->node);
        ctl_table_add(cl->rt, r->leader ? "leader" : r->role);
        ctl_table_add_u64(cl->rt, r->match);
        ctl_table_add_u64(cl->rt, r->lag);
        ctl_table_add(cl->rt, r->active ? "yes" : "no");
    }
}

static void cluster_add_status(struct cluster *cl, const char *url,
                               const struct kho_node_status *st)
{
    struct kho_node_info self = {.id = st->node_id};
    snprintf(self.name, sizeof(self.name), "%s", st->name);
    snprintf(self.client_url, sizeof(self.client_url), "%s", url);
    for (size_t k = 0; k < st->n_nodes; k++) {
        cluster_add_node(cl, &st->nodes[k]);
    }
    cluster_add_node(cl, &self); /* a node that does not list itself */
    for (size_t k = 0; k < st->n_groups; k++) {
        const struct kho_group_status *g = &st->groups[k];
        if (g->check_alarm) {
            fprintf(stderr,
                    "khoctl: cluster status: CHECK ALARM: node %llu (%s), "
                    "group %llu (%s): its state hash at index %llu differs "
                    "from the other replicas' (khoctl check)\n",
                    (unsigned long long)st->node_id, st->name,
                    (unsigned long long)g->group_id, g->registry,
                    (unsigned long long)g->check_alarm_index);
        }
        if (strcmp(g->role, "leader") == 0) {
            cluster_add_replicas(cl, g);
        }
        if (cl->groups != NULL) {
            json_array_append_new(cl->groups, group_json(st, g));
            continue;
        }
        ctl_table_add_bytes(cl->t, g->registry, strlen(g->registry),
                            CTL_KEY_CHARS_MAX);
        shard_cell(cl->t, g);
        ctl_table_add_u64(cl->t, g->group_id);
        ctl_table_add_u64(cl->t, st->node_id);
        ctl_table_add_bytes(cl->t, g->role, strlen(g->role), 16);
        ctl_table_add_u64(cl->t, g->leader);
        ctl_table_add_u64(cl->t, g->term);
        ctl_table_add_u64(cl->t, g->commit);
        ctl_table_add_u64(cl->t, g->applied);
    }
}

static int node_cmp(const void *a, const void *b)
{
    const struct kho_node_info *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int cluster_print_json(struct cluster *cl)
{
    json_t *o = json_object();
    json_t *nodes = json_array();
    int rc = o == NULL || nodes == NULL;
    for (size_t i = 0; rc == 0 && i < cl->n_nodes; i++) {
        const struct kho_node_info *n = &cl->nodes[i];
        json_t *m = json_object();
        rc |= m == NULL;
        rc |= ctl_json_set_u64(m, "id", n->id);
        rc |= ctl_json_set_bytes(m, "name", n->name, strlen(n->name));
        rc |= ctl_json_set_bytes(m, "client_url", n->client_url,
                                 strlen(n->client_url));
        rc |=
            ctl_json_set_bytes(m, "peer_url", n->peer_url, strlen(n->peer_url));
        rc |= json_array_append_new(nodes, m);
    }
    /* Groups last: tests/integration/basic.sh reads the last "commit"
     * and "applied" of the line. */
    rc |= json_object_set_new(o, "nodes", nodes);
    rc |= json_object_set_new(o, "unreachable", cl->unreachable);
    rc |= json_object_set_new(o, "replicas", cl->replicas);
    rc |= json_object_set_new(o, "groups", cl->groups);
    cl->unreachable = cl->groups = cl->replicas = NULL;
    if (rc != 0) {
        json_decref(o);
        o = NULL;
    }
    return ctl_print_json(o);
}

static int cluster_print_tables(struct cluster *cl)
{
    struct ctl_table *t = ctl_table_new("ID> NAME CLIENT_URL PEER_URL");
    for (size_t i = 0; t != NULL && i < cl->n_nodes; i++) {
        const struct kho_node_info *n = &cl->nodes[i];
        ctl_table_add_u64(t, n->id);
        ctl_table_add_bytes(t, n->name, strlen(n->name), CTL_KEY_CHARS_MAX);
        ctl_table_add_bytes(t, n->client_url, strlen(n->client_url),
                            KHO_URL_BYTES_MAX);
        ctl_table_add_bytes(t, n->peer_url, strlen(n->peer_url),
                            KHO_URL_BYTES_MAX);
    }
    int rc = ctl_print_table(t);
    if (rc == 0) {
        putchar('\n');
        rc = ctl_print_table(cl->t);
    } else {
        ctl_table_free(cl->t);
    }
    if (rc == 0) {
        putchar('\n');
        rc = ctl_print_table(cl->rt);
    } else {
        ctl_table_free(cl->rt);
    }
    cl->t = cl->rt = NULL;
    return rc;
}

static int cmd_cluster_status(struct ctl *x, const struct command *cmd,
                              int argc, char **argv)
{
    bool json = false;
    const struct opt opts[] = {
        {"--json", OPT_FLAG, &json, NULL, NULL, 0, 0},
    };
    struct kho_client *c = NULL;
    int code = 0;
    if (!ctl_start(x, cmd, argc, argv, opts, 1, NULL, 0, 0, &c, &code)) {
        return code;
    }
    /* Both about 110 KiB: kept off the stack. */
    static struct cluster cl;
    static struct kho_node_status st;
    if (json) {
        cl.groups = json_array();
        cl.unreachable = json_array();
        cl.replicas = json_array();
    } else {
        cl.t = ctl_table_new("REGISTRY SHARD> GROUP> NODE> ROLE LEADER> "
                             "TERM> COMMIT> APPLIED>");
        cl.rt = ctl_table_new("REGISTRY SHARD> GROUP> NODE> ROLE MATCH> LAG> "
                              "ACTIVE");
    }
    if (json ? cl.groups == NULL || cl.unreachable == NULL ||
                   cl.replicas == NULL
             : cl.t == NULL || cl.rt == NULL) {
        return ctl_fail(NULL, "cluster status", KHO_ENOMEM);
    }
    int worst = 0;
    for (size_t i = 0; i < kho_client_endpoints(c); i++) {
        const char *url = kho_client_endpoint(c, i);
        int err = kho_node_status(c, i, &st);
        if (err == KHO_OK) {
            cluster_add_status(&cl, url, &st);
            continue;
        }
        fprintf(stderr, "khoctl: cluster status: %s: %s (%s)%s%s\n", url,
                kho_strerror(err), kho_errname(err),
                kho_client_errmsg(c)[0] != '\0' ? ": " : "",
                kho_client_errmsg(c));
        worst = ctl_exit_code(err) > worst ? ctl_exit_code(err) : worst;
        if (cl.unreachable != NULL) {
            json_t *u = json_object();
            if (u != NULL &&
                (json_object_set_new(u, "endpoint", json_string(url)) |
                 json_object_set_new(u, "error",
                                     json_string(kho_errname(err)))) != 0) {
                json_decref(u);
                u = NULL;
            }
            json_array_append_new(cl.unreachable, u);
        }
    }
    qsort(cl.nodes, cl.n_nodes, sizeof(cl.nodes[0]), node_cmp);
    if (!json && cl.n_nodes == 0) {
        ctl_table_free(cl.t); /* nobody answered: no empty tables */
        ctl_table_free(cl.rt);
        return worst;
    }
    int rc = json ? cluster_print_json(&cl) : cluster_print_tables(&cl);
    return rc != 0 ? rc : worst;
}

/* --- main
 * ----------------------------------------------------------------------------
 */

static const struct command cmds[] = {
    {"registry", "create",
     "registry create NAME [--replicas R] [--shards S] [--home NODE] "
     "[--json]",
     cmd_registry_create},
    {"registry", "list", "registry list [--json]", cmd_registry_list},
    {"registry", "describe", "registry describe NAME [--json]",
     cmd_registry_describe},
    {"put", NULL,
     "put REG KEY VALUE|- [--if-absent | --if-version N | --if-revision N] "
     "[--json]",
     cmd_put},
    {"get", NULL, "get REG KEY [--serializable] [--json]", cmd_get},
    {"del", NULL, "del REG KEY [--if-version N | --if-revision N]", cmd_del},
    {"txn", NULL, "txn REG [--json]   (the transaction on stdin, see below)",
     cmd_txn},
    {"scan", NULL,
     "scan REG [--prefix P | --from K --to K] [--limit N] [--keys-only]\n"
     "           [--serializable] [--json]",
     cmd_scan},
    {"history", NULL, "history REG KEY [--limit N] [--json]", cmd_history},
    {"cluster", "status", "cluster status [--json]", cmd_cluster_status},
    {"cluster", "health", "cluster health [--json]", ctl_cmd_cluster_health},
    {"cluster", "rebalance", "cluster rebalance [--dry-run] [--json]",
     ctl_cmd_cluster_rebalance},
    {"shard", "list", "shard list [REG] [--json]", ctl_cmd_shard_list},
    {"shard", "describe", "shard describe REG SHARD [--json]",
     ctl_cmd_shard_describe},
    {"shard", "move", "shard move REG SHARD FROM_NODE TO_NODE [--json]",
     ctl_cmd_shard_move},
    {"member", "add", "member add NAME PEER_URL CLIENT_URL [--json]",
     ctl_cmd_member_add},
    {"member", "remove", "member remove NAME", ctl_cmd_member_remove},
    {"member", "list", "member list [--json]", ctl_cmd_member_list},
    {"leader", "transfer",
     "leader transfer GROUP NODE | leader transfer --drain NODE",
     ctl_cmd_leader_transfer},
    {"check", NULL, "check [REG] [--json]", ctl_cmd_check},
    {"backup", NULL, "backup FILE", ctl_cmd_backup},
};

#define CMDS_N (sizeof(cmds) / sizeof(cmds[0]))

static void print_usage(FILE *f)
{
    fputs(USAGE_HEAD, f);
    for (size_t i = 0; i < CMDS_N; i++) {
        fprintf(f, "  %s\n", cmds[i].usage);
    }
    fputs(USAGE_TAIL, f);
}

static int usage(void)
{
    print_usage(stderr);
    return EXIT_USAGE;
}

/* Parses the global options; returns the index of the command, or -1
 * with *code set. */
static int parse_global(struct ctl *x, int argc, char **argv, int *code)
{
    int i = 1;
    for (; i < argc && strncmp(argv[i], "-", 1) == 0; i++) {
        const char *a = argv[i];
        uint64_t v;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_usage(stdout);
            *code = 0;
            return -1;
        } else if (strcmp(a, "--endpoints") == 0 && i + 1 < argc) {
            x->endpoints = argv[++i];
        } else if (strcmp(a, "--name") == 0 && i + 1 < argc) {
            x->name = argv[++i];
        } else if (strcmp(a, "--timeout") == 0 && i + 1 < argc) {
            if (!ctl_parse_u64(argv[++i], &v) || v == 0 || v > CTL_TIMEOUT_MS_MAX) {
                fprintf(stderr,
                        "khoctl: --timeout needs milliseconds from 1 "
                        "to %u\n",
                        CTL_TIMEOUT_MS_MAX);
                *code = EXIT_USAGE;
                return -1;
            }
            x->timeout_ms = (uint32_t)v;
        } else {
            fprintf(stderr, "khoctl: unknown or incomplete option '%s'\n", a);
            *code = usage();
            return -1;
        }
    }
    if (i >= argc) {
        *code = usage();
        return -1;
    }
    return i;
}

static const struct command *find_command(int argc, char **argv, int *used)
{
    for (size_t k = 0; k < CMDS_N; k++) {
        const struct command *cmd = &cmds[k];
        if (strcmp(cmd->noun, argv[0]) != 0) {
            continue;
        }
        if (cmd->verb == NULL) {
            *used = 1;
            return cmd;
        }
        if (argc > 1 && strcmp(cmd->verb, argv[1]) == 0) {
            *used = 2;
            return cmd;
        }
    }
    return NULL;
}

/* A noun without a known verb lists the noun's commands; anything else
 * points to --help. */
static int unknown_command(int argc, char **argv)
{
    fprintf(stderr, "khoctl: unknown command '%s%s%s'\n", argv[0],
            argc > 1 ? " " : "", argc > 1 ? argv[1] : "");
    bool noun = false;
    for (size_t k = 0; k < CMDS_N; k++) {
        if (strcmp(cmds[k].noun, argv[0]) == 0) {
            fprintf(stderr, "%s khoctl %s\n",
                    noun ? "      " : "usage:", cmds[k].usage);
            noun = true;
        }
    }
    if (!noun) {
        fprintf(stderr, "see khoctl --help\n");
    }
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    struct ctl x = {.endpoints = getenv("KHO_ENDPOINTS"),
                    .timeout_ms = CTL_TIMEOUT_DEFAULT_MS};
    int code = 0;
    int i = parse_global(&x, argc, argv, &code);
    if (i < 0) {
        return code;
    }
    if (strcmp(argv[i], "help") == 0) {
        print_usage(stdout);
        return 0;
    }
    int used = 0;
    const struct command *cmd = find_command(argc - i, argv + i, &used);
    if (cmd == NULL) {
        return unknown_command(argc - i, argv + i);
    }
    code = cmd->run(&x, cmd, argc - i - used, argv + i + used);
    kho_client_close(x.c);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "khoctl: writing stdout: %s\n", strerror(errno));
        return code != 0 ? code : EXIT_OTHER;
    }
    return code;
}

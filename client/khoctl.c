/*
 * khoctl.c - kho's command-line tool (first half of issue 3).
 *
 *   khoctl [--endpoints E] [--timeout MS] put REG KEY VALUE|-
 *   khoctl [--endpoints E] get REG KEY [--json] [--serializable]
 *   khoctl [--endpoints E] del REG KEY
 *   khoctl [--endpoints E] cluster status [--json]
 *
 * Endpoints come from --endpoints or $KHO_ENDPOINTS. Exit status: 0
 * success, 1 not found or precondition failed, 2 usage error, 3 cluster
 * unavailable or timed out, 4 any other error; the message on stderr.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kho.h"

#define CTL_STDIN_BYTES_MAX (KHO_VALUE_BYTES_MAX + 1u)

static int usage(void)
{
    fprintf(stderr,
            "usage: khoctl [--endpoints URL,...] [--timeout MS] COMMAND\n"
            "  put REG KEY VALUE|-       write a record (- reads stdin)\n"
            "      [--if-absent] [--if-version N]\n"
            "  get REG KEY [--json] [--serializable]\n"
            "  del REG KEY\n"
            "  cluster status [--json]\n"
            "endpoints default to $KHO_ENDPOINTS\n");
    return 2;
}

static int exit_code(int err)
{
    switch (err) {
    case KHO_OK:
        return 0;
    case KHO_ENOTFOUND:
    case KHO_ECONFLICT:
        return 1;
    case KHO_EUNAVAILABLE:
    case KHO_ETIMEOUT:
    case KHO_ENOTLEADER:
        return 3;
    default:
        return 4;
    }
}

static int fail(struct kho_client *c, const char *what, int err)
{
    const char *msg = c != NULL ? kho_client_errmsg(c) : "";
    fprintf(stderr, "khoctl: %s: %s (%s)%s%s\n", what, kho_strerror(err),
            kho_errname(err), msg[0] != '\0' ? ": " : "", msg);
    return exit_code(err);
}

static char *read_stdin(size_t *len)
{
    char *buf = malloc(CTL_STDIN_BYTES_MAX);
    if (buf == NULL) {
        return NULL;
    }
    *len = fread(buf, 1, CTL_STDIN_BYTES_MAX, stdin);
    return buf;
}

static void json_string(const unsigned char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = s[i];
        if (ch == '"' || ch == '\\') {
            printf("\\%c", ch);
        } else if (ch < 0x20 || ch == 0x7f) {
            printf("\\u%04x", ch);
        } else {
            putchar(ch);
        }
    }
    putchar('"');
}

static bool has_flag(int argc, char **argv, const char *flag)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], flag) == 0) {
            return true;
        }
    }
    return false;
}

static int cmd_put(struct kho_client *c, int argc, char **argv)
{
    if (argc < 3) {
        return usage();
    }
    enum kho_cond cond = KHO_COND_NONE;
    uint64_t want = 0;
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--if-absent") == 0) {
            cond = KHO_COND_IF_ABSENT;
        } else if (strcmp(argv[i], "--if-version") == 0 && i + 1 < argc) {
            cond = KHO_COND_IF_VERSION;
            want = strtoull(argv[++i], NULL, 10);
        } else {
            return usage();
        }
    }
    const char *val = argv[2];
    size_t vlen = strlen(val);
    char *owned = NULL;
    if (strcmp(val, "-") == 0) {
        owned = read_stdin(&vlen);
        if (owned == NULL) {
            return fail(NULL, "reading stdin", KHO_ENOMEM);
        }
        val = owned;
    }
    struct kho_record_meta meta;
    int rc = kho_put(c, argv[0], argv[1], strlen(argv[1]), val, vlen, cond,
                     want, &meta);
    free(owned);
    if (rc != KHO_OK) {
        return fail(c, "put", rc);
    }
    fprintf(stderr, "ok: version %llu, revision %llu\n",
            (unsigned long long)meta.version,
            (unsigned long long)meta.revision);
    return 0;
}

static int cmd_get(struct kho_client *c, int argc, char **argv)
{
    if (argc < 2) {
        return usage();
    }
    bool json = has_flag(argc, argv, "--json");
    bool ser = has_flag(argc, argv, "--serializable");
    void *val = NULL;
    size_t len = 0;
    struct kho_record_meta meta;
    int rc = kho_get(c, argv[0], argv[1], strlen(argv[1]), ser, &val, &len,
                     &meta);
    if (rc != KHO_OK) {
        return fail(c, "get", rc);
    }
    if (json) {
        printf("{\"key\":");
        json_string((const unsigned char *)argv[1], strlen(argv[1]));
        printf(",\"value\":");
        json_string(val, len);
        printf(",\"version\":%llu,\"revision\":%llu}\n",
               (unsigned long long)meta.version,
               (unsigned long long)meta.revision);
    } else {
        fwrite(val, 1, len, stdout);
        if (len > 0 && ((char *)val)[len - 1] != '\n' && isatty(1)) {
            putchar('\n');
        }
    }
    free(val);
    return 0;
}

static int cmd_del(struct kho_client *c, int argc, char **argv)
{
    if (argc != 2) {
        return usage();
    }
    int rc = kho_del(c, argv[0], argv[1], strlen(argv[1]), KHO_COND_NONE, 0);
    return rc == KHO_OK ? 0 : fail(c, "del", rc);
}

static int cmd_status(struct kho_client *c, int argc, char **argv)
{
    if (argc < 1 || strcmp(argv[0], "status") != 0) {
        return usage();
    }
    bool json = has_flag(argc, argv, "--json");
    int worst = 0;
    if (json) {
        printf("[");
    } else {
        printf("%-3s %-4s %-10s %-10s %-10s %6s %6s %8s %8s\n", "EP",
               "ID", "NAME", "REGISTRY", "ROLE", "TERM", "LEADER", "COMMIT",
               "APPLIED");
    }
    static struct kho_node_status st;
    for (size_t i = 0; i < kho_client_endpoints(c); i++) {
        int rc = kho_node_status(c, i, &st);
        if (rc != KHO_OK) {
            if (!json) {
                printf("endpoint %zu: %s\n", i, kho_strerror(rc));
            }
            worst = 3;
            continue;
        }
        for (size_t k = 0; k < st.n_groups; k++) {
            const struct kho_group_status *g = &st.groups[k];
            if (json) {
                printf("%s{\"node\":%llu,\"name\":\"%s\",\"group\":%llu,"
                       "\"registry\":\"%s\",\"role\":\"%s\",\"term\":%llu,"
                       "\"leader\":%llu,\"commit\":%llu,\"applied\":%llu}",
                       (i > 0 || k > 0) ? "," : "",
                       (unsigned long long)st.node_id, st.name,
                       (unsigned long long)g->group_id, g->registry, g->role,
                       (unsigned long long)g->term,
                       (unsigned long long)g->leader,
                       (unsigned long long)g->commit,
                       (unsigned long long)g->applied);
            } else {
                printf("%-3zu %-4llu %-10s %-10s %-10s %6llu %6llu %8llu "
                       "%8llu\n",
                       i, (unsigned long long)st.node_id, st.name,
                       g->registry, g->role, (unsigned long long)g->term,
                       (unsigned long long)g->leader,
                       (unsigned long long)g->commit,
                       (unsigned long long)g->applied);
            }
        }
    }
    if (json) {
        printf("]\n");
    }
    return worst;
}

int main(int argc, char **argv)
{
    const char *eps = getenv("KHO_ENDPOINTS");
    uint32_t timeout_ms = 5000;
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
        if (strcmp(argv[i], "--endpoints") == 0 && i + 1 < argc) {
            eps = argv[++i];
        } else if (strcmp(argv[i], "--timeout") == 0 && i + 1 < argc) {
            timeout_ms = (uint32_t)strtoul(argv[++i], NULL, 10);
        } else {
            return usage();
        }
    }
    if (i >= argc) {
        return usage();
    }
    if (eps == NULL || eps[0] == '\0') {
        fprintf(stderr, "khoctl: no endpoints: use --endpoints or set "
                        "KHO_ENDPOINTS\n");
        return 2;
    }
    struct kho_client *c = NULL;
    int rc = kho_client_open(eps, timeout_ms, &c);
    if (rc != KHO_OK) {
        fprintf(stderr, "khoctl: bad endpoints '%s': %s\n", eps,
                kho_strerror(rc));
        return 2;
    }
    const char *cmd = argv[i];
    int sub_argc = argc - i - 1;
    char **sub_argv = argv + i + 1;
    int code;
    if (strcmp(cmd, "put") == 0) {
        code = cmd_put(c, sub_argc, sub_argv);
    } else if (strcmp(cmd, "get") == 0) {
        code = cmd_get(c, sub_argc, sub_argv);
    } else if (strcmp(cmd, "del") == 0) {
        code = cmd_del(c, sub_argc, sub_argv);
    } else if (strcmp(cmd, "cluster") == 0) {
        code = cmd_status(c, sub_argc, sub_argv);
    } else {
        code = usage();
    }
    kho_client_close(c);
    return code;
}

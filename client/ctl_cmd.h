/*
 * ctl_cmd.h - what khoctl's command files share: global options, the
 * command table's entry, argument parsing, exit codes and output.
 *
 * khoctl.c      data and registry commands, cluster status, main()
 * ctl_member.c  member add|remove|list, leader transfer
 * ctl_health.c  cluster health
 * ctl_admin.c   check, backup
 * ctl_shard.c   shard list|describe|move, cluster rebalance
 */
#ifndef KHO_CTL_CMD_H
#define KHO_CTL_CMD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ctl.h"
#include "kho.h"
#include "kho_shard.h"

enum {
    EXIT_NOT_FOUND = 1,
    EXIT_USAGE = 2,
    EXIT_UNAVAILABLE = 3,
    EXIT_OTHER = 4,
};

/* Global options and the client, opened on first use. */
struct ctl {
    const char *endpoints;
    uint32_t timeout_ms;
    const char *name;
    struct kho_client *c;
};

struct command {
    const char *noun, *verb; /* verb NULL: a one-word command */
    const char *usage;       /* what follows "khoctl " */
    int (*run)(struct ctl *x, const struct command *cmd, int argc, char **argv);
};

enum opt_kind { OPT_FLAG, OPT_STR, OPT_U64 };

struct opt {
    const char *name; /* "--json" */
    enum opt_kind kind;
    bool *seen;
    const char **str; /* OPT_STR */
    uint64_t *num;    /* OPT_U64, in [min, max] */
    uint64_t min, max;
};

/* The exit status for a kho_err (0, 1, 3 or 4). */
int ctl_exit_code(int err);
/* Prints "khoctl: WHAT: error (NAME): server message" and returns the exit
 * status for err. */
int ctl_fail(struct kho_client *c, const char *what, int err);
/* Prints a usage error for cmd (fmt has one %s for arg); returns 2. */
int ctl_usage_error(const struct command *cmd, const char *fmt,
                    const char *arg);
/* Strict decimal: digits only, no sign, no overflow. */
bool ctl_parse_u64(const char *s, uint64_t *out);
/*
 * Parses a command's arguments: options (`--name value`, `--name=value`,
 * `--flag`) anywhere, `--` ends them, everything else is positional (a
 * lone "-" too). Returns 0, or the exit code after printing why (2), or
 * -1 after printing the command's usage for --help.
 */
int ctl_parse_args(const struct command *cmd, int argc, char **argv,
                   const struct opt *opts, size_t n_opts, char **pos,
                   size_t min_pos, size_t max_pos);
/* The exit status for a ctl_parse_args() or ctl_client_of() result
 * (-1, from --help, is 0). */
int ctl_parsed_code(int rc);
/* The client of x, opened on first use. Returns 0 or an exit status
 * (after printing why). */
int ctl_client_of(struct ctl *x, struct kho_client **out);
/* What most commands start with: ctl_parse_args(), then ctl_client_of().
 * True when the command goes on with *c; false when it must return *code
 * (a usage error, a client that cannot open, or --help: 0). */
bool ctl_start(struct ctl *x, const struct command *cmd, int argc,
               char **argv, const struct opt *opts, size_t n_opts, char **pos,
               size_t min_pos, size_t max_pos, struct kho_client **c,
               int *code);
/* Reads all of stdin (at most max bytes). Returns 0 or an exit status. */
int ctl_read_stdin(size_t max, char **out, size_t *len);
/* Prints v (taking it) as one line of JSON; returns 0 or 4. */
int ctl_print_json(json_t *v);
/* Prints t (taking it); returns 0 or 4. */
int ctl_print_table(struct ctl_table *t);

/* Commands in other files. */
int ctl_cmd_member_add(struct ctl *x, const struct command *cmd, int argc,
                       char **argv);
int ctl_cmd_member_remove(struct ctl *x, const struct command *cmd, int argc,
                          char **argv);
int ctl_cmd_member_list(struct ctl *x, const struct command *cmd, int argc,
                        char **argv);
int ctl_cmd_leader_transfer(struct ctl *x, const struct command *cmd, int argc,
                            char **argv);
int ctl_cmd_cluster_health(struct ctl *x, const struct command *cmd, int argc,
                           char **argv);
int ctl_cmd_check(struct ctl *x, const struct command *cmd, int argc,
                  char **argv);
int ctl_cmd_backup(struct ctl *x, const struct command *cmd, int argc,
                   char **argv);
int ctl_cmd_shard_list(struct ctl *x, const struct command *cmd, int argc,
                       char **argv);
int ctl_cmd_shard_describe(struct ctl *x, const struct command *cmd, int argc,
                           char **argv);
int ctl_cmd_shard_move(struct ctl *x, const struct command *cmd, int argc,
                       char **argv);
int ctl_cmd_cluster_rebalance(struct ctl *x, const struct command *cmd,
                              int argc, char **argv);

/* Shard tables (ctl_shard.c). Adds a row "SHARD> GROUP> REPLICAS LEADER"
 * (REGISTRY first when with_registry) per shard of m, nodes by name. */
void ctl_shard_rows(struct ctl_table *t, const struct kho_shard_map *m,
                    bool with_registry);
/* The shards of m as a JSON array (see `shard list --json`); NULL when out
 * of memory. */
json_t *ctl_json_shards(const struct kho_shard_map *m);
/* Whether err, from kho_shard_map(), says the cluster predates sharding. */
bool ctl_shards_unknown(struct kho_client *c, int err);

#endif /* KHO_CTL_CMD_H */

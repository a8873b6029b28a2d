/*
 * ctl_admin.c - khoctl check and backup (not yet).
 */
#include <stdio.h>

#include "ctl_cmd.h"

int ctl_cmd_check(struct ctl *x, const struct command *cmd, int argc,
                  char **argv)
{
    (void)x;
    (void)argc;
    (void)argv;
    return ctl_usage_error(cmd, "%s", "not implemented yet");
}

int ctl_cmd_backup(struct ctl *x, const struct command *cmd, int argc,
                   char **argv)
{
    (void)x;
    (void)argc;
    (void)argv;
    return ctl_usage_error(cmd, "%s", "not implemented yet");
}

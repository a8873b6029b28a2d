/*
 * ctl_health.c - khoctl cluster health (not yet).
 */
#include <stdio.h>

#include "ctl_cmd.h"

int ctl_cmd_cluster_health(struct ctl *x, const struct command *cmd, int argc,
                           char **argv)
{
    (void)x;
    (void)argc;
    (void)argv;
    return ctl_usage_error(cmd, "%s", "not implemented yet");
}

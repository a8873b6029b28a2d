/*
 * ctl_member.c - khoctl member add|remove|list and leader transfer (not
 * yet).
 */
#include <stdio.h>

#include "ctl_cmd.h"

#define STUB(fn)                                                               \
    int fn(struct ctl *x, const struct command *cmd, int argc, char **argv)   \
    {                                                                          \
        (void)x;                                                               \
        (void)argc;                                                            \
        (void)argv;                                                            \
        return ctl_usage_error(cmd, "%s", "not implemented yet");              \
    }

STUB(ctl_cmd_member_add)
STUB(ctl_cmd_member_remove)
STUB(ctl_cmd_member_list)
STUB(ctl_cmd_leader_transfer)

/*
 * ctl_member.c - khoctl member add|remove|list and leader transfer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_cmd.h"

int ctl_cmd_member_add(struct ctl *x, const struct command *cmd, int argc,
                       char **argv)
{
    bool json = false;
    const struct opt opts[] = {
        {"--json", OPT_FLAG, &json, NULL, NULL, 0, 0},
    };
    char *pos[3] = {NULL};
    struct kho_client *c = NULL;
    int code = 0;
    if (!ctl_start(x, cmd, argc, argv, opts, 1, pos, 3, 3, &c, &code)) {
        return code;
    }
    uint64_t id = 0;
    int err = kho_member_add(c, pos[0], pos[1], pos[2], &id);
    if (err != KHO_OK) {
        return ctl_fail(c, "member add", err);
    }
    if (json) {
        return ctl_print_json(json_pack("{s:I, s:s}", "id", (json_int_t)id,
                                        "name", pos[0]));
    }
    printf("%llu\n", (unsigned long long)id);
    fprintf(stderr,
            "ok: node %llu (%s) added; start it with\n"
            "  khod --name %s --join %s --data DIR --peer-listen %s "
            "--client-listen %s\n",
            (unsigned long long)id, pos[0], pos[0],
            x->endpoints != NULL ? x->endpoints : "$KHO_ENDPOINTS", pos[1],
            pos[2]);
    return 0;
}

int ctl_cmd_member_remove(struct ctl *x, const struct command *cmd, int argc,
                          char **argv)
{
    char *pos[1] = {NULL};
    struct kho_client *c = NULL;
    int code = 0;
    if (!ctl_start(x, cmd, argc, argv, NULL, 0, pos, 1, 1, &c, &code)) {
        return code;
    }
    int err = kho_member_remove(c, pos[0]);
    if (err != KHO_OK) {
        return ctl_fail(c, "member remove", err);
    }
    fprintf(stderr,
            "ok: %s is removed from the cluster map; its groups' leaders now "
            "move its replicas and take it out (watch khoctl cluster "
            "status)\n",
            pos[0]);
    return 0;
}

/* What the leaders say of one member. */
struct member_view {
    const char *meta_role; /* in the meta group: voter, learner, "-" */
    unsigned groups;       /* groups it is a member of */
    uint64_t lag;          /* the largest lag its leaders report */
    bool answered;         /* its own node answered */
};

#define MEMBER_ASK_MS 1000u

/* Folds one node's status into the views: the groups it leads tell the
 * role and lag of every member. */
static void fold_status(const struct kho_node_status *st,
                        const struct kho_node_info *v, size_t n,
                        struct member_view *view)
{
    for (size_t g = 0; g < st->n_groups; g++) {
        const struct kho_group_status *gs = &st->groups[g];
        if (strcmp(gs->role, "leader") != 0) {
            continue;
        }
        for (size_t r = 0; r < gs->n_replicas; r++) {
            for (size_t i = 0; i < n; i++) {
                if (v[i].id != gs->replicas[r].node) {
                    continue;
                }
                view[i].groups++;
                view[i].lag = gs->replicas[r].lag > view[i].lag
                                  ? gs->replicas[r].lag
                                  : view[i].lag;
                if (gs->group_id == 0) {
                    view[i].meta_role =
                        strcmp(gs->replicas[r].role, "voter") == 0 ? "voter"
                                                                   : "learner";
                }
            }
        }
    }
}

/* Asks every member for its status (one second each). */
static void gather_views(const struct kho_node_info *v, size_t n,
                         struct member_view *view)
{
    struct kho_node_status *st = malloc(sizeof(*st));
    for (size_t i = 0; st != NULL && i < n; i++) {
        struct kho_client *c = NULL;
        if (v[i].removed ||
            kho_client_open(v[i].client_url, MEMBER_ASK_MS, &c) != KHO_OK) {
            continue;
        }
        if (kho_node_status(c, 0, st) == KHO_OK) {
            view[i].answered = true;
            fold_status(st, v, n, view);
        }
        kho_client_close(c);
    }
    free(st);
}

int ctl_cmd_member_list(struct ctl *x, const struct command *cmd, int argc,
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
    struct kho_node_info *v = NULL;
    size_t n = 0;
    int err = kho_member_list(c, &v, &n);
    if (err != KHO_OK) {
        return ctl_fail(c, "member list", err);
    }
    struct member_view *view = calloc(n + 1, sizeof(*view));
    if (view == NULL) {
        free(v);
        return ctl_fail(c, "member list", KHO_ENOMEM);
    }
    for (size_t i = 0; i < n; i++) {
        view[i].meta_role = "-";
    }
    gather_views(v, n, view);
    if (json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++) {
            json_array_append_new(
                a, json_pack("{s:I, s:s, s:s, s:s, s:I, s:I, s:b, s:s, s:s}",
                             "id", (json_int_t)v[i].id, "name", v[i].name,
                             "state", v[i].removed ? "removed" : "member",
                             "meta_role", view[i].meta_role, "groups",
                             (json_int_t)view[i].groups, "lag",
                             (json_int_t)view[i].lag, "answers",
                             view[i].answered, "client_url", v[i].client_url,
                             "peer_url", v[i].peer_url));
        }
        free(v);
        free(view);
        return ctl_print_json(json_pack("{s:o}", "members", a));
    }
    struct ctl_table *t = ctl_table_new(
        "ID> NAME STATE META_ROLE GROUPS> LAG> ANSWERS CLIENT_URL PEER_URL");
    for (size_t i = 0; t != NULL && i < n; i++) {
        ctl_table_add_u64(t, v[i].id);
        ctl_table_add(t, v[i].name);
        ctl_table_add(t, v[i].removed ? "removed" : "member");
        ctl_table_add(t, view[i].meta_role);
        ctl_table_add_u64(t, view[i].groups);
        ctl_table_add_u64(t, view[i].lag);
        ctl_table_add(t, v[i].removed ? "-" : view[i].answered ? "yes" : "no");
        ctl_table_add(t, v[i].client_url);
        ctl_table_add(t, v[i].peer_url);
    }
    free(v);
    free(view);
    return ctl_print_table(t);
}

int ctl_cmd_leader_transfer(struct ctl *x, const struct command *cmd, int argc,
                            char **argv)
{
    bool drain = false;
    const struct opt opts[] = {
        {"--drain", OPT_FLAG, &drain, NULL, NULL, 0, 0},
    };
    char *pos[2] = {NULL};
    int rc = ctl_parse_args(cmd, argc, argv, opts, 1, pos, 1, 2);
    uint64_t a = 0, b = 0;
    if (rc == 0 && (!ctl_parse_u64(pos[0], &a) ||
                    (pos[1] != NULL && !ctl_parse_u64(pos[1], &b)) ||
                    (drain != (pos[1] == NULL)) || (drain && a == 0) ||
                    (!drain && b == 0))) {
        rc = ctl_usage_error(cmd, "%s", "want GROUP NODE, or --drain NODE "
                                        "(node ids as numbers)");
    }
    struct kho_client *c = NULL;
    if (rc == 0) {
        rc = ctl_client_of(x, &c);
    }
    if (rc != 0) {
        return ctl_parsed_code(rc);
    }
    int err = drain ? kho_leader_drain(c, a) : kho_leader_transfer(c, a, b);
    if (err != KHO_OK) {
        return ctl_fail(c, "leader transfer", err);
    }
    if (drain) {
        fprintf(stderr, "ok: node %llu hands every group it leads to "
                        "another voter\n",
                (unsigned long long)a);
    } else {
        fprintf(stderr, "ok: group %llu's leader hands over to node %llu\n",
                (unsigned long long)a, (unsigned long long)b);
    }
    return 0;
}

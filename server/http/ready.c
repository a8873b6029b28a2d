/*
 * ready.c - the readiness verdict of GET /ready (http.h).
 */
#include <stdio.h>

#include "../../client/kho_err.h"
#include "internal.h"

/* Why group g is not ready, or NULL. `why` holds the text. */
static const char *group_problem(const struct node_group_status *g,
                                 uint64_t self, char *why, size_t len)
{
    if (g->leader == 0) {
        snprintf(why, len, "no leader known (%s, term %llu)",
                 raft_role_name(g->role), (unsigned long long)g->term);
        return why;
    }
    if (g->commit > g->applied + HTTP_READY_APPLY_LAG_MAX) {
        snprintf(why, len,
                 "applied %llu is %llu entries behind commit %llu (limit %u)",
                 (unsigned long long)g->applied,
                 (unsigned long long)(g->commit - g->applied),
                 (unsigned long long)g->commit, HTTP_READY_APPLY_LAG_MAX);
        return why;
    }
    if (g->leader != self) {
        return NULL;
    }
    /* A leader hears from a quorum or steps down within an election
     * timeout (check-quorum); this says so at once. */
    uint32_t voters = 0, active = 0;
    for (uint32_t k = 0; k < g->n_replicas; k++) {
        voters += g->replicas[k].voter;
        active += g->replicas[k].voter && g->replicas[k].active;
    }
    if (active < voters / 2 + 1) {
        snprintf(why, len, "leader hearing from %u of %u voters, no quorum",
                 active, voters);
        return why;
    }
    return NULL;
}

bool http_ready_check(const struct node_group_status *st, size_t n,
                      uint64_t self, struct hbuf *b)
{
    if (n == 0) {
        hbuf_printf(b, "no raft groups published yet\n");
        return false;
    }
    size_t failing = 0;
    for (size_t i = 0; i < n; i++) {
        char why[160];
        const char *p = group_problem(&st[i], self, why, sizeof(why));
        if (p == NULL) {
            continue;
        }
        if (failing < HTTP_READY_LINES_MAX) {
            hbuf_printf(b, "group %llu (%s): %s\n",
                        (unsigned long long)st[i].group_id, st[i].registry, p);
        }
        failing++;
    }
    if (failing > HTTP_READY_LINES_MAX) {
        hbuf_printf(b, "... and %zu more groups\n",
                    failing - HTTP_READY_LINES_MAX);
    }
    return failing == 0;
}

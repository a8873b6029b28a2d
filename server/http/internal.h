/*
 * internal.h - what the files of server/http share. Nothing here leaves
 * server/http.
 *
 * http.c   the server's lifecycle and the three handlers
 * ready.c  the readiness verdict of /ready
 * prom.c   the Prometheus text of /metrics
 * buf.c    bounded text buffers the answers are built in
 */
#ifndef KHO_HTTP_INTERNAL_H
#define KHO_HTTP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

/* A growing text buffer that never exceeds `max` bytes. A write that does
 * not fit leaves the buffer as it was and marks it failed (err); every
 * later write is ignored, so a caller checks once, at the end. */
struct hbuf {
    char *p;
    size_t len, cap, max;
    int err; /* KHO_OK, KHO_ETOOLARGE (over max) or KHO_ENOMEM */
};

void hbuf_init(struct hbuf *b, size_t max);
void hbuf_printf(struct hbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends s as the inside of a Prometheus label value: backslash, double
 * quote and newline escaped. */
void hbuf_label(struct hbuf *b, const char *s);
void hbuf_free(struct hbuf *b);

/*
 * The readiness verdict over the groups `st[0..n)` of node `self`: true
 * when every group passes (see http.h, GET /ready). Appends one line per
 * failing group to b (at most HTTP_READY_LINES_MAX, then a count of the
 * rest). No groups at all is not ready. O(n * members).
 */
bool http_ready_check(const struct node_group_status *st, size_t n,
                      uint64_t self, struct hbuf *b);

/* What /metrics reads. */
struct http_sources {
    struct node *node;
    struct net *net; /* NULL: no peer metrics */
    struct store *st;
    uint64_t quota_bytes;
};

/* Appends every metric in the Prometheus text format to b. Errors (in
 * b->err): KHO_ETOOLARGE, KHO_ENOMEM. */
void http_metrics_render(const struct http_sources *src, struct hbuf *b);

#endif /* KHO_HTTP_INTERNAL_H */

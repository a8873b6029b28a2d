/*
 * http.h - khod's HTTP endpoints for operators and their monitoring,
 * served by NNG's HTTP server (nng/supplemental/http) on --http-listen:
 *
 *   GET /health   200 "ok" while the process serves: liveness.
 *   GET /ready    200 "ready" when every group hosted here has a known
 *                 leader, has applied to within HTTP_READY_APPLY_LAG_MAX
 *                 entries of the commit index it knows, and - where this
 *                 node leads - hears from a quorum of its voters; else 503
 *                 with one line per failing group (at most
 *                 HTTP_READY_LINES_MAX). A load balancer sends clients
 *                 only to ready nodes.
 *   GET /metrics  Prometheus text exposition (format 0.0.4): every metric
 *                 named kho_*, see prom.c for the list.
 *
 * Anything else is 404 (405 for another method on a known path). Every
 * answer is built in memory, bounded by HTTP_METRICS_BYTES_MAX, and sent
 * whole; the handlers only read published state (node_status(),
 * node_metrics(), net_peer_stats(), store_space(), the request counters of
 * server/common/metrics.h), so a scrape never waits for the raft thread.
 */
#ifndef KHO_HTTP_H
#define KHO_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "../node/node.h"
#include "../store/store.h"
#include "../transport/peer.h"

#define HTTP_URL_BYTES_MAX 256u
/* /ready: how far a group's applied index may trail the commit index this
 * node knows and still count as caught up. A follower applies what it
 * learns committed within a loop or two; more than this many entries means
 * it is replaying a backlog (after a restart or a snapshot). */
#define HTTP_READY_APPLY_LAG_MAX 100u
/* /ready: failing groups named one per line; the rest are counted. */
#define HTTP_READY_LINES_MAX 32u
/* Largest answer. /metrics needs about 2 KiB per hosted group and 2 KiB
 * per client op seen; NODE_GROUPS_MAX groups fit with room to spare. */
#define HTTP_METRICS_BYTES_MAX (2u << 20)
/* First allocation of an answer's buffer; it doubles up to the maximum. */
#define HTTP_BUF_BYTES_INITIAL (16u << 10)

_Static_assert(NODE_GROUPS_MAX * 4096u < HTTP_METRICS_BYTES_MAX,
               "HTTP_METRICS_BYTES_MAX too small for NODE_GROUPS_MAX groups");

struct http;

struct http_config {
    const char *url; /* "http://127.0.0.1:7201" */
    struct node *node;
    struct net *net; /* may be NULL: no peer metrics */
    struct store *st;
    uint64_t quota_bytes; /* reported as kho_store_quota_bytes */
};

/*
 * Starts serving on c->url. The node, net and store must outlive
 * http_close(). Errors: KHO_EINVAL (bad URL), KHO_EBUSY (address in use),
 * KHO_ENOMEM, KHO_EIO; a message in err.
 */
int http_open(const struct http_config *c, struct http **out, char *err,
              size_t err_len);

/* Stops serving. A handler running now finishes first; one that starts
 * later answers 503 without touching the node, so the node may be
 * stopped and destroyed once this returns. NULL is allowed. */
void http_close(struct http *h);

#endif /* KHO_HTTP_H */

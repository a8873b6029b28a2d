/*
 * log.c - the Raft log as one sequence of entries: what the host has
 * persisted (behind struct raft_storage, possibly compacted into a
 * snapshot) followed by the unstable suffix the core appended since the
 * last ready batch.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

uint64_t log_last_index(const struct raft *r)
{
    return r->u_offset + r->u_n - 1;
}

uint64_t log_stable_index(const struct raft *r)
{
    return r->u_offset - 1;
}

int log_first_index(struct raft *r, uint64_t *out)
{
    if (r->u_snap != NULL) {
        *out = r->u_snap->meta.index + 1;
        return KHO_OK;
    }
    struct raft_snapshot_meta meta;
    int rc = r->st.snapshot_meta(r->st.ctx, &meta);
    if (rc != KHO_OK) {
        return rc;
    }
    *out = meta.index + 1;
    return KHO_OK;
}

int log_term(struct raft *r, uint64_t index, uint64_t *term)
{
    if (index > log_last_index(r)) {
        return KHO_ENOTFOUND;
    }
    if (index >= r->u_offset) {
        *term = r->u[index - r->u_offset].term;
        return KHO_OK;
    }
    if (r->u_snap != NULL) {
        if (index == r->u_snap->meta.index) {
            *term = r->u_snap->meta.term;
            return KHO_OK;
        }
        return KHO_ENOTFOUND;
    }
    struct raft_snapshot_meta meta;
    int rc = r->st.snapshot_meta(r->st.ctx, &meta);
    if (rc != KHO_OK) {
        return rc;
    }
    if (index < meta.index) {
        return KHO_ENOTFOUND;
    }
    if (index == meta.index) {
        *term = meta.term;
        return KHO_OK;
    }
    return r->st.term(r->st.ctx, index, term);
}

uint64_t log_term_or0(struct raft *r, uint64_t index)
{
    uint64_t t = 0;
    if (log_term(r, index, &t) != KHO_OK) {
        return 0;
    }
    return t;
}

void log_free_entries(struct raft_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(e[i].data);
        e[i].data = NULL;
    }
}

static int copy_entry(struct raft_entry *dst, const struct raft_entry *src)
{
    *dst = *src;
    dst->data = NULL;
    if (src->len > 0) {
        dst->data = malloc(src->len);
        if (dst->data == NULL) {
            return KHO_ENOMEM;
        }
        memcpy(dst->data, src->data, src->len);
    }
    return KHO_OK;
}

/* Copies from storage: entries [lo, hi) all below u_offset. */
static int copy_stored(struct raft *r, uint64_t lo, uint64_t hi,
                       size_t max_bytes, struct raft_entry *out, size_t cap,
                       size_t *n_out, size_t *bytes)
{
    size_t n = 0;
    int rc = r->st.entries(r->st.ctx, lo, hi, max_bytes, out, cap, &n);
    if (rc != KHO_OK) {
        return rc;
    }
    if (n == 0 || n > cap || n > hi - lo) {
        return KHO_EIO; /* the storage broke its contract */
    }
    for (size_t i = 0; i < n; i++) {
        if (out[i].index != lo + i) {
            n = i;
            break;
        }
        struct raft_entry tmp = out[i];
        if (copy_entry(&out[i], &tmp) != KHO_OK) {
            log_free_entries(out, i);
            return KHO_ENOMEM;
        }
        *bytes += tmp.len;
    }
    if (n == 0) {
        return KHO_EIO;
    }
    *n_out = n;
    return KHO_OK;
}

int log_copy(struct raft *r, uint64_t lo, uint64_t hi, size_t max_bytes,
             struct raft_entry *out, size_t cap, size_t *n_out,
             size_t *bytes_out)
{
    uint64_t first = 0;
    size_t n = 0, bytes = 0;
    int rc = log_first_index(r, &first);
    if (rc != KHO_OK) {
        return rc;
    }
    if (lo < first || hi > log_last_index(r) + 1 || lo >= hi || cap == 0) {
        return KHO_ENOTFOUND;
    }
    if (lo < r->u_offset) {
        uint64_t shi = hi < r->u_offset ? hi : r->u_offset;
        rc = copy_stored(r, lo, shi, max_bytes, out, cap, &n, &bytes);
        if (rc != KHO_OK) {
            return rc;
        }
        if (lo + n < shi) {
            goto done; /* storage stopped at the byte limit */
        }
    }
    for (uint64_t i = lo + n; i < hi && n < cap; i++) {
        const struct raft_entry *e = &r->u[i - r->u_offset];
        if (n > 0 && bytes + e->len > max_bytes) {
            break;
        }
        if (copy_entry(&out[n], e) != KHO_OK) {
            log_free_entries(out, n);
            return KHO_ENOMEM;
        }
        bytes += e->len;
        n++;
    }
done:
    *n_out = n;
    if (bytes_out != NULL) {
        *bytes_out = bytes;
    }
    return KHO_OK;
}

int log_append(struct raft *r, const struct raft_entry *e, size_t n)
{
    if (n == 0) {
        return KHO_OK;
    }
    uint64_t at = e[0].index;
    RAFT_ASSERT(r, at >= 1 && at <= log_last_index(r) + 1);
    if (at < r->u_offset) {
        /* The cut reaches into storage: the host deletes from `at` when it
         * persists entries starting there (raft.h, step 2b). */
        log_free_entries(r->u, r->u_n);
        r->u_n = 0;
        r->u_offset = at;
    } else {
        size_t keep = (size_t)(at - r->u_offset);
        log_free_entries(r->u + keep, r->u_n - keep);
        r->u_n = keep;
    }
    if (r->u_n + n > r->u_cap) {
        size_t cap = r->u_cap ? r->u_cap : 64;
        while (cap < r->u_n + n) {
            cap *= 2;
        }
        struct raft_entry *nu = realloc(r->u, cap * sizeof(*nu));
        if (nu == NULL) {
            return KHO_ENOMEM;
        }
        r->u = nu;
        r->u_cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = copy_entry(&r->u[r->u_n], &e[i]);
        if (rc != KHO_OK) {
            return rc;
        }
        r->u_n++;
    }
    return KHO_OK;
}

/* The configuration in force at index `hi`: the latest CONF entry at or
 * below it, else the snapshot's. O(hi - first) in the worst case; it runs
 * at start-up and when a truncation removes the configuration entry. */
int log_find_conf(struct raft *r, uint64_t hi, struct raft_conf *conf,
                  uint64_t *index)
{
    uint64_t first = 0;
    int rc = log_first_index(r, &first);
    if (rc != KHO_OK) {
        return rc;
    }
    for (uint64_t i = hi; i >= first && i > 0; i--) {
        struct raft_entry e;
        size_t n = 0;
        rc = log_copy(r, i, i + 1, SIZE_MAX, &e, 1, &n, NULL);
        if (rc != KHO_OK) {
            return rc;
        }
        if (e.type == RAFT_ENTRY_CONF) {
            rc = raft_conf_decode(e.data, e.len, conf);
            log_free_entries(&e, 1);
            *index = i;
            return rc;
        }
        log_free_entries(&e, 1);
    }
    if (r->u_snap != NULL) {
        *conf = r->u_snap->meta.conf;
        *index = r->u_snap->meta.index;
        return KHO_OK;
    }
    struct raft_snapshot_meta meta;
    rc = r->st.snapshot_meta(r->st.ctx, &meta);
    if (rc != KHO_OK) {
        return rc;
    }
    if (raft_conf_check(&meta.conf) != KHO_OK) {
        return KHO_ECORRUPT;
    }
    *conf = meta.conf;
    *index = meta.index;
    return KHO_OK;
}

/* Fast back-tracking (etcd's findConflictByTerm): the largest index <=
 * `index` whose term is <= `term`. Every index above it cannot match a log
 * whose entry at `index` has term `term`, so the leader skips them all. */
int log_find_conflict_by_term(struct raft *r, uint64_t index, uint64_t term,
                              uint64_t *out_index, uint64_t *out_term)
{
    for (;;) {
        uint64_t t = 0;
        int rc = log_term(r, index, &t);
        if (rc == KHO_ENOTFOUND) {
            *out_index = index;
            *out_term = 0;
            return KHO_OK;
        }
        if (rc != KHO_OK) {
            return rc;
        }
        if (t <= term || index == 0) {
            *out_index = index;
            *out_term = t;
            return KHO_OK;
        }
        index--;
    }
}

/* §5.4.1: a candidate's log is at least as up-to-date as ours. */
bool log_is_up_to_date(struct raft *r, uint64_t last_index, uint64_t last_term)
{
    uint64_t my_last = log_last_index(r);
    uint64_t my_term = log_term_or0(r, my_last);
    return last_term > my_term || (last_term == my_term && last_index >= my_last);
}

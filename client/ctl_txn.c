/*
 * ctl_txn.c - the transaction language of `khoctl txn` (grammar in ctl.h).
 *
 * Words are quoted like a shell's, so keys and values may hold spaces,
 * JSON, or any byte at all ("\x00"). The decoded words are never longer
 * than their source, so one buffer the size of the input holds them all
 * and every compare and op points into it.
 */
#include "ctl.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* The most words an item has (cmp KEY TARGET OP X), plus one to notice
 * extra words. */
#define TXN_WORDS_MAX 6u

struct word {
    const unsigned char *p;
    size_t len;
};

struct parser {
    struct ctl_txn *t;
    size_t used;   /* bytes of t->buf holding decoded words */
    unsigned line; /* 1-based */
    unsigned op_lines[KHO_TXN_OPS_MAX];
    char *err;
    size_t err_len;
};

__attribute__((format(printf, 3, 4))) static int
parse_fail(struct parser *ps, int rc, const char *fmt, ...)
{
    int n = snprintf(ps->err, ps->err_len, "line %u: ", ps->line);
    if (n < 0 || (size_t)n >= ps->err_len) {
        return rc;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err + n, ps->err_len - (size_t)n, fmt, ap);
    va_end(ap);
    return rc;
}

static bool is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static int hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* Decodes the escape after a backslash at s[*i] (inside "..."); the byte
 * goes to *out. */
static int unescape(struct parser *ps, const unsigned char *s, size_t n,
                    size_t *i, unsigned char *out)
{
    if (*i >= n) {
        return parse_fail(ps, KHO_EINVAL, "unterminated \"");
    }
    unsigned char c = s[(*i)++];
    static const char from[] = "\\\"nrt0";
    static const char to[] = "\\\"\n\r\t\0";
    const char *hit = c != '\0' ? strchr(from, c) : NULL;
    if (hit != NULL) {
        *out = (unsigned char)to[hit - from];
        return KHO_OK;
    }
    if (c == 'x' && *i + 2 <= n) {
        int hi = hex_digit(s[*i]), lo = hex_digit(s[*i + 1]);
        if (hi >= 0 && lo >= 0) {
            *out = (unsigned char)(hi * 16 + lo);
            *i += 2;
            return KHO_OK;
        }
    }
    return parse_fail(ps, KHO_EINVAL,
                      "unknown escape \\%c (use \\\\ \\\" "
                      "\\n \\r \\t \\0 or \\xHH)",
                      c >= 0x20 && c < 0x7f ? c : '?');
}

/* Reads the next word of line s[0..n) from *i into ps's buffer. Returns
 * KHO_OK with w set, KHO_ENOTFOUND at the end of the line, or an error. */
static int next_word(struct parser *ps, const unsigned char *s, size_t n,
                     size_t *i, struct word *w)
{
    while (*i < n && is_space(s[*i])) {
        (*i)++;
    }
    if (*i == n) {
        return KHO_ENOTFOUND;
    }
    unsigned char *out = ps->t->buf + ps->used;
    size_t o = 0;
    while (*i < n && !is_space(s[*i])) {
        unsigned char c = s[(*i)++];
        if (c == '\'') {
            const unsigned char *end = memchr(s + *i, '\'', n - *i);
            if (end == NULL) {
                return parse_fail(ps, KHO_EINVAL, "unterminated '");
            }
            size_t len = (size_t)(end - (s + *i));
            memcpy(out + o, s + *i, len);
            o += len;
            *i += len + 1;
        } else if (c == '"') {
            for (;;) {
                if (*i >= n) {
                    return parse_fail(ps, KHO_EINVAL, "unterminated \"");
                }
                c = s[(*i)++];
                if (c == '"') {
                    break;
                }
                if (c != '\\') {
                    out[o++] = c;
                } else if (unescape(ps, s, n, i, &out[o++]) != KHO_OK) {
                    return KHO_EINVAL;
                }
            }
        } else {
            out[o++] = c;
        }
    }
    w->p = out;
    w->len = o;
    ps->used += o;
    return KHO_OK;
}

static bool word_is(const struct word *w, const char *s)
{
    return w->len == strlen(s) && memcmp(w->p, s, w->len) == 0;
}

static int parse_u64(struct parser *ps, const struct word *w, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < w->len; i++) {
        unsigned char c = w->p[i];
        if (c < '0' || c > '9' || v > (UINT64_MAX - (c - '0')) / 10) {
            return parse_fail(ps, KHO_EINVAL,
                              "'%.*s' is not a number from "
                              "0 to 2^64-1",
                              (int)(w->len < 40 ? w->len : 40),
                              (const char *)w->p);
        }
        v = v * 10 + (c - '0');
    }
    if (w->len == 0) {
        return parse_fail(ps, KHO_EINVAL, "empty number");
    }
    *out = v;
    return KHO_OK;
}

static int parse_cmp(struct parser *ps, const struct word *w, size_t n)
{
    static const char *const targets[] = {"version", "create", "modify",
                                          "value"};
    static const char *const ops[] = {"=", "!=", "<", ">"};
    struct ctl_txn *t = ps->t;
    if (n != 5) {
        return parse_fail(ps, KHO_EINVAL,
                          "want: cmp KEY version|create|"
                          "modify|value =|!=|<|> NUMBER|VALUE");
    }
    if (t->n_cmps == KHO_TXN_CMPS_MAX) {
        return parse_fail(ps, KHO_ETOOLARGE, "more than %u compares",
                          KHO_TXN_CMPS_MAX);
    }
    struct kho_compare *k = &t->cmps[t->n_cmps];
    memset(k, 0, sizeof(*k));
    size_t ti = 0, oi = 0;
    while (ti < 4 && !word_is(&w[2], targets[ti])) {
        ti++;
    }
    while (oi < 4 && !word_is(&w[3], ops[oi])) {
        oi++;
    }
    if (ti == 4 || oi == 4) {
        return parse_fail(ps, KHO_EINVAL,
                          ti == 4 ? "compare version, create, modify or value"
                                  : "compare with =, !=, < or >");
    }
    k->key = w[1].p;
    k->key_len = w[1].len;
    k->target = (enum kho_cmp_target)ti;
    k->op = (enum kho_cmp_op)oi;
    if (k->target == KHO_CMP_VALUE) {
        k->value = w[4].p;
        k->value_len = w[4].len;
    } else if (parse_u64(ps, &w[4], &k->number) != KHO_OK) {
        return KHO_EINVAL;
    }
    t->cmp_lines[t->n_cmps++] = ps->line;
    return KHO_OK;
}

static int parse_op(struct parser *ps, const struct word *w, size_t n)
{
    struct ctl_txn *t = ps->t;
    bool del = word_is(&w[0], "del");
    if (n != (del ? 2u : 3u)) {
        return parse_fail(ps, KHO_EINVAL,
                          del ? "want: del KEY" : "want: put KEY VALUE");
    }
    if (t->n_ops == KHO_TXN_OPS_MAX) {
        return parse_fail(ps, KHO_ETOOLARGE, "more than %u ops",
                          KHO_TXN_OPS_MAX);
    }
    for (size_t j = 0; j < t->n_ops; j++) {
        if (t->ops[j].key_len == w[1].len &&
            memcmp(t->ops[j].key, w[1].p, w[1].len) == 0) {
            return parse_fail(ps, KHO_EINVAL,
                              "the key of line %u again: "
                              "one op per key",
                              ps->op_lines[j]);
        }
    }
    struct kho_op *o = &t->ops[t->n_ops];
    memset(o, 0, sizeof(*o));
    o->is_delete = del;
    o->key = w[1].p;
    o->key_len = w[1].len;
    if (!del) {
        o->value = w[2].p;
        o->value_len = w[2].len;
    }
    ps->op_lines[t->n_ops++] = ps->line;
    return KHO_OK;
}

static int parse_line(struct parser *ps, const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n && is_space(s[i])) {
        i++;
    }
    if (i == n || s[i] == '#') {
        return KHO_OK;
    }
    struct word w[TXN_WORDS_MAX];
    size_t nw = 0;
    while (nw < TXN_WORDS_MAX) {
        int rc = next_word(ps, s, n, &i, &w[nw]);
        if (rc == KHO_ENOTFOUND) {
            break;
        }
        if (rc != KHO_OK) {
            return rc;
        }
        nw++;
    }
    if (nw >= 2 && w[1].len == 0) {
        return parse_fail(ps, KHO_EINVAL, "empty key");
    }
    if (word_is(&w[0], "cmp")) {
        return parse_cmp(ps, w, nw);
    }
    if (word_is(&w[0], "put") || word_is(&w[0], "del")) {
        return parse_op(ps, w, nw);
    }
    return parse_fail(ps, KHO_EINVAL, "unknown item (want cmp, put or del)");
}

int ctl_txn_parse(const char *text, size_t len, struct ctl_txn *t, char *err,
                  size_t err_len)
{
    memset(t, 0, sizeof(*t));
    if (err_len > 0) {
        err[0] = '\0';
    }
    t->buf = malloc(len > 0 ? len : 1);
    if (t->buf == NULL) {
        snprintf(err, err_len, "out of memory");
        return KHO_ENOMEM;
    }
    struct parser ps = {.t = t, .err = err, .err_len = err_len};
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        const unsigned char *nl = memchr(s + i, '\n', len - i);
        size_t n = nl != NULL ? (size_t)(nl - (s + i)) : len - i;
        ps.line++;
        int rc = parse_line(&ps, s + i, n);
        if (rc != KHO_OK) {
            return rc;
        }
        i += n + (nl != NULL);
    }
    if (t->n_cmps == 0 && t->n_ops == 0) {
        snprintf(err, err_len, "no compare and no op on stdin");
        return KHO_EINVAL;
    }
    return KHO_OK;
}

void ctl_txn_free(struct ctl_txn *t)
{
    free(t->buf);
    memset(t, 0, sizeof(*t));
}

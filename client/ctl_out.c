/*
 * ctl_out.c - khoctl's output: escaped text and aligned tables for people,
 * JSON for scripts. See ctl.h.
 *
 * Keys and values are bytes, and a terminal must never receive bytes that
 * move the cursor, switch character sets or hide text, so everything shown
 * in a table goes through ctl_escape(). JSON must be valid UTF-8, so bytes
 * that are not go out as base64 under a name that says so.
 */
#include "ctl.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --- UTF-8
 * -------------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s[0..n) (RFC 3629), or 0;
 * its code point in *cp. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char b = s[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    size_t len = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc2 ? 2 : 0;
    if (len == 0 || b > 0xf4 || len > n) {
        return 0;
    }
    uint32_t v = b & (0x7fu >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        v = (v << 6) | (s[i] & 0x3fu);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < min[len] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) {
        return 0;
    }
    *cp = v;
    return len;
}

static bool utf8_valid(const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = utf8_decode(s + i, n - i, &cp);
        if (len == 0) {
            return false;
        }
        i += len;
    }
    return true;
}

/* Characters that are printable but invisible or that reorder the text
 * around them ("Trojan Source", CVE-2021-42574): shown as \uHHHH. */
static bool hidden(uint32_t cp)
{
    return (cp >= 0x80 && cp <= 0x9f) || cp == 0xad ||
           (cp >= 0x200b && cp <= 0x200f) || (cp >= 0x2028 && cp <= 0x202e) ||
           (cp >= 0x2060 && cp <= 0x2069) || cp == 0xfeff ||
           (cp >= 0xfff9 && cp <= 0xfffb);
}

/* Terminal columns of one code point: 0 for combining marks, 2 for wide
 * East Asian characters and emoji, else 1. A small table, not full
 * Unicode: enough to keep Vietnamese (and most) text aligned. */
static size_t cp_width(uint32_t cp)
{
    static const uint32_t zero[][2] = {
        {0x0300, 0x036f}, {0x0483, 0x0489}, {0x0591, 0x05bd}, {0x1ab0, 0x1aff},
        {0x1dc0, 0x1dff}, {0x20d0, 0x20ff}, {0xfe00, 0xfe0f}, {0xfe20, 0xfe2f},
    };
    static const uint32_t wide[][2] = {
        {0x1100, 0x115f},   {0x2e80, 0x303e},   {0x3041, 0x33ff},
        {0x3400, 0x4dbf},   {0x4e00, 0x9fff},   {0xa000, 0xa4cf},
        {0xac00, 0xd7a3},   {0xf900, 0xfaff},   {0xfe30, 0xfe4f},
        {0xff00, 0xff60},   {0xffe0, 0xffe6},   {0x1f300, 0x1f64f},
        {0x1f900, 0x1f9ff}, {0x20000, 0x3fffd},
    };
    for (size_t i = 0; i < sizeof(zero) / sizeof(zero[0]); i++) {
        if (cp >= zero[i][0] && cp <= zero[i][1]) {
            return 0;
        }
    }
    for (size_t i = 0; i < sizeof(wide) / sizeof(wide[0]); i++) {
        if (cp >= wide[i][0] && cp <= wide[i][1]) {
            return 2;
        }
    }
    return 1;
}

size_t ctl_width(const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strlen(s);
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t len = utf8_decode(u + i, n - i, &cp);
        w += len > 0 ? cp_width(cp) : 1;
        i += len > 0 ? len : 1;
    }
    return w;
}

/* --- Escaping
 * ------------------------------------------------------------------ */

/* The escaped form of the character at s[0..n): its text in out (at most
 * 6 bytes, not terminated) and its length in *out_len; returns how many
 * input bytes it covers. */
static size_t escape_one(const unsigned char *s, size_t n, char out[8],
                         size_t *out_len)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b = s[0];
    uint32_t cp = 0;
    size_t len = utf8_decode(s, n, &cp);
    if (b == '\\' || b == '\n' || b == '\r' || b == '\t') {
        out[0] = '\\';
        out[1] = b == '\\' ? '\\' : b == '\n' ? 'n' : b == '\r' ? 'r' : 't';
        *out_len = 2;
        return 1;
    }
    if (len == 0 || b < 0x20 || b == 0x7f) {
        out[0] = '\\';
        out[1] = 'x';
        out[2] = hex[b >> 4];
        out[3] = hex[b & 15];
        *out_len = 4;
        return 1;
    }
    if (hidden(cp)) {
        snprintf(out, 8, "\\u%04x", (unsigned)cp);
        *out_len = 6;
        return len;
    }
    memcpy(out, s, len);
    *out_len = len;
    return len;
}

char *ctl_escape(const void *p, size_t n, size_t chars_max)
{
    const unsigned char *s = p;
    if (chars_max < 4) {
        chars_max = 4;
    }
    /* Every piece is at most 6 bytes and at least one character, and no
     * more than chars_max + 1 pieces are written. */
    size_t pieces = n < chars_max + 1 ? n : chars_max + 1;
    char *out = malloc(pieces * 6 + 4);
    if (out == NULL) {
        return NULL;
    }
    size_t o = 0, chars = 0, cut = 0;
    bool truncated = false;
    for (size_t i = 0; i < n;) {
        char piece[8];
        size_t plen;
        size_t used = escape_one(s + i, n - i, piece, &plen);
        size_t pchars = piece[0] == '\\' ? plen : 1;
        if (chars + pchars <= chars_max - 3) {
            cut = o + plen;
        }
        if (chars + pchars > chars_max) {
            truncated = true;
            break;
        }
        memcpy(out + o, piece, plen);
        o += plen;
        chars += pchars;
        i += used;
    }
    if (truncated) {
        memcpy(out + cut, "...", 3);
        o = cut + 3;
    }
    out[o] = '\0';
    return out;
}

void ctl_time_iso(uint64_t ms, char out[CTL_TIME_BYTES])
{
    if (ms == 0) {
        snprintf(out, CTL_TIME_BYTES, "-");
        return;
    }
    time_t sec = (time_t)(ms / 1000u);
    struct tm tm;
    if ((uint64_t)sec != ms / 1000u || gmtime_r(&sec, &tm) == NULL ||
        tm.tm_year + 1900 > 9999) {
        snprintf(out, CTL_TIME_BYTES, "%llums", (unsigned long long)ms);
        return;
    }
    /* 19 bytes: the year is at most 9999 (checked above). */
    size_t n = strftime(out, CTL_TIME_BYTES, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, CTL_TIME_BYTES - n, ".%03uZ", (unsigned)(ms % 1000u));
}

/* --- Tables
 * ---------------------------------------------------------------------- */

struct ctl_table {
    size_t n_cols;
    bool right[CTL_TABLE_COLS_MAX];
    size_t width[CTL_TABLE_COLS_MAX];
    char **cells; /* row-major; the header is row 0 */
    size_t n_cells, cap;
    int err;
};

/* Takes s (malloc'd; NULL means out of memory) as the next cell. */
static void table_take(struct ctl_table *t, char *s)
{
    if (t->err == KHO_OK && s == NULL) {
        t->err = KHO_ENOMEM;
    }
    if (t->err == KHO_OK && t->n_cells / t->n_cols >= CTL_TABLE_ROWS_MAX) {
        t->err = KHO_ETOOLARGE;
    }
    if (t->err == KHO_OK && t->n_cells == t->cap) {
        size_t cap = t->cap > 0 ? t->cap * 2 : 64;
        char **cells = realloc(t->cells, cap * sizeof(*cells));
        if (cells == NULL) {
            t->err = KHO_ENOMEM;
        } else {
            t->cells = cells;
            t->cap = cap;
        }
    }
    if (t->err != KHO_OK) {
        free(s);
        return;
    }
    size_t col = t->n_cells % t->n_cols;
    size_t w = ctl_width(s);
    if (w > t->width[col]) {
        t->width[col] = w;
    }
    t->cells[t->n_cells++] = s;
}

struct ctl_table *ctl_table_new(const char *cols)
{
    struct ctl_table *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return NULL;
    }
    char heads[CTL_TABLE_COLS_MAX][32];
    for (const char *p = cols; *p != '\0';) {
        size_t len = strcspn(p, " ");
        if (len > 0 && t->n_cols < CTL_TABLE_COLS_MAX && len < 32) {
            bool right = p[len - 1] == '>';
            snprintf(heads[t->n_cols], sizeof(heads[0]), "%.*s",
                     (int)(right ? len - 1 : len), p);
            t->right[t->n_cols++] = right;
        }
        p += len;
        p += *p == ' ';
    }
    if (t->n_cols == 0) {
        free(t);
        return NULL;
    }
    for (size_t i = 0; i < t->n_cols; i++) {
        ctl_table_add(t, heads[i]);
    }
    return t;
}

void ctl_table_add(struct ctl_table *t, const char *s)
{
    table_take(t, strdup(s != NULL ? s : "-"));
}

void ctl_table_add_bytes(struct ctl_table *t, const void *p, size_t n,
                         size_t chars_max)
{
    table_take(t, ctl_escape(p, n, chars_max));
}

void ctl_table_add_u64(struct ctl_table *t, uint64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
    ctl_table_add(t, buf);
}

void ctl_table_add_time(struct ctl_table *t, uint64_t ms)
{
    char buf[CTL_TIME_BYTES];
    ctl_time_iso(ms, buf);
    ctl_table_add(t, buf);
}

int ctl_table_print(struct ctl_table *t, FILE *f)
{
    if (t->err != KHO_OK) {
        return t->err;
    }
    /* Spaces are held back until something follows them, so that no
     * line ends in blanks (an empty last cell). */
    size_t spaces = 0;
    for (size_t i = 0; i < t->n_cells; i++) {
        size_t col = i % t->n_cols;
        bool last = col + 1 == t->n_cols || i + 1 == t->n_cells;
        size_t pad = t->width[col] - ctl_width(t->cells[i]);
        spaces += t->right[col] ? pad : 0;
        if (t->cells[i][0] != '\0') {
            fprintf(f, "%*s%s", (int)spaces, "", t->cells[i]);
            spaces = 0;
        }
        spaces += t->right[col] ? 2 : pad + 2;
        if (last) {
            fputc('\n', f);
            spaces = 0;
        }
    }
    return KHO_OK;
}

void ctl_table_free(struct ctl_table *t)
{
    if (t == NULL) {
        return;
    }
    for (size_t i = 0; i < t->n_cells; i++) {
        free(t->cells[i]);
    }
    free(t->cells);
    free(t);
}

/* --- JSON
 * ----------------------------------------------------------------------------
 */

static char *base64(const unsigned char *s, size_t n)
{
    static const char abc[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((n + 2) / 3 * 4 + 1);
    if (out == NULL) {
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        v |= i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0;
        v |= i + 2 < n ? s[i + 2] : 0;
        out[o++] = abc[(v >> 18) & 63];
        out[o++] = abc[(v >> 12) & 63];
        out[o++] = i + 1 < n ? abc[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? abc[v & 63] : '=';
    }
    out[o] = '\0';
    return out;
}

int ctl_json_set_bytes(json_t *obj, const char *field, const void *p, size_t n)
{
    if (utf8_valid(p, n)) {
        return json_object_set_new(obj, field, json_stringn(n > 0 ? p : "", n));
    }
    char name[64];
    snprintf(name, sizeof(name), "%s_base64", field);
    char *b = base64(p, n);
    int rc = json_object_set_new(obj, name, b != NULL ? json_string(b) : NULL);
    free(b);
    return rc;
}

json_t *ctl_json_u64(uint64_t v)
{
    if (v <= (uint64_t)LLONG_MAX) {
        return json_integer((json_int_t)v);
    }
    char buf[24];
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
    return json_string(buf);
}

int ctl_json_set_u64(json_t *obj, const char *field, uint64_t v)
{
    return json_object_set_new(obj, field, ctl_json_u64(v));
}

static int set_time(json_t *obj, uint64_t ms)
{
    char buf[CTL_TIME_BYTES];
    ctl_time_iso(ms, buf);
    int rc = ctl_json_set_u64(obj, "time_ms", ms);
    return rc | json_object_set_new(obj, "time", json_string(buf));
}

json_t *ctl_json_record(const struct kho_record *r, bool keys_only,
                        bool history)
{
    json_t *o = json_object();
    if (o == NULL) {
        return NULL;
    }
    int rc = ctl_json_set_bytes(o, "key", r->key, r->key_len);
    if (!keys_only && !(history && r->deleted)) {
        rc |= ctl_json_set_bytes(o, "value", r->value, r->value_len);
    }
    rc |= ctl_json_set_u64(o, "version", r->version);
    rc |= ctl_json_set_u64(o, "create_revision", r->create_revision);
    rc |= ctl_json_set_u64(o, "modify_revision", r->modify_revision);
    rc |= ctl_json_set_bytes(o, "writer", r->writer, strlen(r->writer));
    rc |= set_time(o, r->time_ms);
    if (history) {
        rc |= json_object_set_new(o, "deleted", json_boolean(r->deleted));
    }
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

json_t *ctl_json_registry(const struct kho_registry_info *r, bool describe)
{
    json_t *o = json_object();
    json_t *reps = json_array();
    if (o == NULL || reps == NULL) {
        json_decref(o);
        json_decref(reps);
        return NULL;
    }
    int rc = ctl_json_set_bytes(o, "name", r->name, strlen(r->name));
    rc |= ctl_json_set_u64(o, "group", r->group_id);
    for (size_t i = 0; i < r->n_replicas && i < KHO_REPLICAS_MAX; i++) {
        rc |= json_array_append_new(reps, ctl_json_u64(r->replicas[i]));
    }
    rc |= json_object_set_new(o, "replicas", reps);
    char buf[CTL_TIME_BYTES];
    ctl_time_iso(r->created_ms, buf);
    rc |= ctl_json_set_u64(o, "created_ms", r->created_ms);
    rc |= json_object_set_new(o, "created", json_string(buf));
    rc |= ctl_json_set_bytes(o, "creator", r->creator, strlen(r->creator));
    rc |= ctl_json_set_u64(o, "shards", r->shards);
    rc |= ctl_json_set_bytes(o, "home", r->home, strlen(r->home));
    if (describe) {
        rc |= ctl_json_set_u64(o, "leader", r->leader);
        rc |= ctl_json_set_u64(o, "term", r->term);
        rc |= ctl_json_set_u64(o, "commit", r->commit);
        rc |= ctl_json_set_u64(o, "applied", r->applied);
    }
    if (rc != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int ctl_json_print(json_t *v, FILE *f)
{
    if (v == NULL) {
        return -1;
    }
    int rc = json_dumpf(v, f, JSON_COMPACT);
    json_decref(v);
    if (rc != 0 || fputc('\n', f) == EOF) {
        return -1;
    }
    return 0;
}

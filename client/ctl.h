/*
 * ctl.h - the parts of khoctl that are not commands: text for people
 * (escaping, tables, times), JSON for scripts (ctl_out.c), and the
 * transaction language read by `khoctl txn` (ctl_txn.c).
 *
 * Not part of libkho: these files link into khoctl only.
 */
#ifndef KHO_CTL_H
#define KHO_CTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kho.h"

/* "2024-05-01T12:34:56.789Z" and its NUL. */
#define CTL_TIME_BYTES 25u
/* Rows one table may hold: a scan's records, capped at
 * CTL_SCAN_RECORDS_MAX, plus the header. */
#define CTL_SCAN_RECORDS_MAX 100000u
#define CTL_TABLE_ROWS_MAX (CTL_SCAN_RECORDS_MAX + 1u)
#define CTL_TABLE_COLS_MAX 12u
/* Longest cell, in characters shown; longer text is cut and ends in
 * "...". Keys are shown almost whole, values only as a preview (--json
 * has them whole). */
#define CTL_CELL_CHARS_MAX 4096u
#define CTL_KEY_CHARS_MAX 128u
#define CTL_VALUE_CHARS_MAX 48u
/* Input of one `khoctl txn`: every byte of a transaction may be written
 * as a 4-character \xHH escape. */
#define CTL_TXN_INPUT_BYTES_MAX (4u * KHO_TXN_BYTES_MAX + (64u << 10))

/* --- Text for people ------------------------------------------------------ */

/*
 * Returns `p[0..n)` as a malloc'd, NUL-terminated line of printable UTF-8
 * (NULL when out of memory): printable ASCII and printable UTF-8 characters
 * stay; a backslash becomes \\; \n, \r, \t stay escaped as such; other
 * control bytes and bytes that are not UTF-8 become \xHH; invisible
 * characters that reorder or hide text (C1 controls, bidi controls, zero
 * width characters, line and paragraph separators) become \uHHHH. When the
 * result would show more than `chars_max` characters (at least 4), it is cut
 * and ends in "...".
 */
char *ctl_escape(const void *p, size_t n, size_t chars_max);

/* Columns the UTF-8 text `s` takes on a terminal. */
size_t ctl_width(const char *s);

/* Formats ms since the epoch as ISO-8601 UTC with milliseconds; 0 is "-". */
void ctl_time_iso(uint64_t ms, char out[CTL_TIME_BYTES]);

/*
 * A table: a header line and rows of cells, printed with aligned columns
 * (two spaces between them; numbers aligned right). Cells are added left
 * to right; a row ends after its last column. Out of memory or more than
 * CTL_TABLE_ROWS_MAX rows marks the table failed, and ctl_table_print()
 * then prints nothing and returns KHO_ENOMEM / KHO_ETOOLARGE.
 */
struct ctl_table;

/* `cols` is a space-separated list of headers; a header ending in '>' is
 * aligned right (the '>' is not shown). NULL when out of memory. */
struct ctl_table *ctl_table_new(const char *cols);
/* Adds a cell of text (copied; NULL shows as "-"). */
void ctl_table_add(struct ctl_table *t, const char *s);
/* Adds a cell of bytes, escaped by ctl_escape(p, n, chars_max). */
void ctl_table_add_bytes(struct ctl_table *t, const void *p, size_t n,
                         size_t chars_max);
void ctl_table_add_u64(struct ctl_table *t, uint64_t v);
void ctl_table_add_time(struct ctl_table *t, uint64_t ms);
int ctl_table_print(struct ctl_table *t, FILE *f);
void ctl_table_free(struct ctl_table *t);

/* --- JSON for scripts ----------------------------------------------------- */

/*
 * Bytes in JSON: when p[0..n) is valid UTF-8 it is set as the string
 * `field`; otherwise it is set as `field`_base64, base64 (RFC 4648, with
 * padding) of the bytes. Exactly one of the two is present. Returns 0, or
 * -1 when out of memory.
 */
int ctl_json_set_bytes(json_t *obj, const char *field, const void *p, size_t n);
/* A number: an integer up to 2^63-1, a decimal string above. */
json_t *ctl_json_u64(uint64_t v);
int ctl_json_set_u64(json_t *obj, const char *field, uint64_t v);
/* A record: key, value (unless keys_only), version, create_revision,
 * modify_revision, writer, time_ms, time, and deleted (history only).
 * NULL when out of memory. */
json_t *ctl_json_record(const struct kho_record *r, bool keys_only,
                        bool history);
/* A registry: name, group, replicas, created_ms, created, creator, shards,
 * home, and with `describe` leader, term, commit, applied. */
json_t *ctl_json_registry(const struct kho_registry_info *r, bool describe);
/* Prints v compactly on one line and drops the reference. Returns 0, or
 * -1 (v NULL: out of memory earlier, or a write error). */
int ctl_json_print(json_t *v, FILE *f);

/* --- The transaction language (khoctl txn) ------------------------------- */

/*
 * One item per line; blank lines and lines starting with '#' are skipped:
 *
 *   cmp KEY version|create|modify =|!=|<|> NUMBER
 *   cmp KEY value =|!=|<|> VALUE
 *   put KEY VALUE
 *   del KEY
 *
 * A KEY or VALUE is one word: bare text without spaces or quotes, or
 * '...' (taken as is), or "..." (with \\ \" \n \r \t \0 \xHH escapes);
 * quoted and bare parts next to each other join into one word.
 */
struct ctl_txn {
    struct kho_compare cmps[KHO_TXN_CMPS_MAX];
    unsigned cmp_lines[KHO_TXN_CMPS_MAX]; /* input line of each compare */
    size_t n_cmps;
    struct kho_op ops[KHO_TXN_OPS_MAX];
    size_t n_ops;
    unsigned char *buf; /* the decoded words the items point into */
};

/*
 * Parses text[0..len) into t (free with ctl_txn_free, also after an
 * error). Errors, with a message naming the line in err: KHO_EINVAL (a
 * syntax error, an empty key, no item at all, two ops on one key),
 * KHO_ETOOLARGE (more than KHO_TXN_CMPS_MAX compares or KHO_TXN_OPS_MAX
 * ops), KHO_ENOMEM.
 */
int ctl_txn_parse(const char *text, size_t len, struct ctl_txn *t, char *err,
                  size_t err_len);
void ctl_txn_free(struct ctl_txn *t);

#endif /* KHO_CTL_H */

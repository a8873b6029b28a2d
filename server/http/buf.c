/*
 * buf.c - bounded text buffers (internal.h, struct hbuf).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../client/kho_err.h"
#include "internal.h"

void hbuf_init(struct hbuf *b, size_t max)
{
    *b = (struct hbuf){.max = max, .err = KHO_OK};
}

void hbuf_free(struct hbuf *b)
{
    free(b->p);
    *b = (struct hbuf){0};
}

/* Makes room for `need` more bytes and a NUL. */
static bool reserve(struct hbuf *b, size_t need)
{
    if (b->len + need + 1 <= b->cap) {
        return true;
    }
    if (b->len + need + 1 > b->max) {
        b->err = KHO_ETOOLARGE;
        return false;
    }
    size_t cap = b->cap == 0 ? HTTP_BUF_BYTES_INITIAL : b->cap;
    while (cap < b->len + need + 1) {
        cap *= 2;
    }
    cap = cap < b->max ? cap : b->max;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->err = KHO_ENOMEM;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void hbuf_printf(struct hbuf *b, const char *fmt, ...)
{
    if (b->err != KHO_OK) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p != NULL ? b->p + b->len : NULL,
                      b->p != NULL ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->err = KHO_EINVAL;
        return;
    }
    if (b->p != NULL && b->len + (size_t)n < b->cap) {
        b->len += (size_t)n;
        return;
    }
    /* It did not fit: grow and format again. */
    if (!reserve(b, (size_t)n)) {
        if (b->p != NULL) {
            b->p[b->len] = '\0';
        }
        return;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void hbuf_label(struct hbuf *b, const char *s)
{
    while (*s != '\0' && b->err == KHO_OK) {
        size_t plain = strcspn(s, "\\\"\n");
        hbuf_printf(b, "%.*s", (int)plain, s);
        s += plain;
        if (*s != '\0') {
            hbuf_printf(b, "\\%c", *s == '\n' ? 'n' : *s);
            s++;
        }
    }
}

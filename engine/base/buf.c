#include "buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b) { memset(b, 0, sizeof *b); }

void buf_free(struct buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

int buf_reserve(struct buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return 0;
    size_t used = b->len - b->off;
    /* Reclaim the consumed front before growing the block. */
    if (b->off > 0 && b->cap - used >= n) {
        memmove(b->data, b->data + b->off, used);
        b->off = 0;
        b->len = used;
        return 0;
    }
    size_t want = used + n;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < want) {
        if (cap > ((size_t)-1) / 2)
            return -1;
        cap *= 2;
    }
    char *p = malloc(cap);
    if (!p)
        return -1;
    if (used)
        memcpy(p, b->data + b->off, used);
    free(b->data);
    b->data = p;
    b->off = 0;
    b->len = used;
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) < 0)
        return -1;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int buf_append_str(struct buf *b, const char *s) { return buf_append(b, s, strlen(s)); }

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, cp);
    va_end(cp);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof small)
        return buf_append(b, small, (size_t)n);
    if (buf_reserve(b, (size_t)n + 1) < 0)
        return -1;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int buf_json_string(struct buf *b, const char *s)
{
    int rc = buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p && rc == 0; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            rc = buf_append(b, esc, 2);
        } else if (*p < 0x20) {
            rc = buf_printf(b, "\\u%04x", *p);
        } else {
            rc = buf_append(b, p, 1);
        }
    }
    return rc < 0 ? rc : buf_append(b, "\"", 1);
}

int buf_prom_label(struct buf *b, const char *s)
{
    int rc = buf_append(b, "\"", 1);
    for (const char *p = s; *p && rc == 0; p++) {
        if (*p == '"' || *p == '\\')
            rc = buf_append(b, (char[2]){'\\', *p}, 2);
        else if (*p == '\n')
            rc = buf_append(b, "\\n", 2);
        else
            rc = buf_append(b, p, 1);
    }
    return rc < 0 ? rc : buf_append(b, "\"", 1);
}

void buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

void buf_reset(struct buf *b) { b->off = b->len = 0; }

void buf_shrink(struct buf *b, size_t keep)
{
    if (b->off == b->len && b->cap > keep) {
        free(b->data);
        b->data = NULL;
        b->off = b->len = b->cap = 0;
    }
}

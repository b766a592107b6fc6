/* buf: a growable byte buffer with a read offset.
 *
 * Connections read into one and write out of one. Bytes are appended at the
 * end and consumed from the front; the front gap is reclaimed lazily (when
 * the buffer empties or when an append would otherwise grow the block), so
 * consuming is O(1) and pipelined input is never copied per command. */
#ifndef STRATA_BUF_H
#define STRATA_BUF_H

#include <stddef.h>
#include <stdarg.h>

struct buf {
    char *data;     /* block start */
    size_t off;     /* first unconsumed byte */
    size_t len;     /* end of valid bytes (data + len) */
    size_t cap;     /* block size */
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);

/* Readable bytes. */
/* An empty buffer may own no block (data NULL): its head is NULL, never
 * NULL + 0, which C leaves undefined. */
static inline const char *buf_head(const struct buf *b)
{
    return b->data ? b->data + b->off : b->data;
}
static inline size_t buf_size(const struct buf *b) { return b->len - b->off; }

/* Make room for at least `n` more bytes at the end; returns 0, or -1 when
 * allocation fails. */
int buf_reserve(struct buf *b, size_t n);
/* Writable tail after buf_reserve; call buf_commit with what was written. */
static inline char *buf_tail(struct buf *b) { return b->data ? b->data + b->len : b->data; }
static inline size_t buf_room(const struct buf *b) { return b->cap - b->len; }
static inline void buf_commit(struct buf *b, size_t n) { b->len += n; }

int buf_append(struct buf *b, const void *p, size_t n);
int buf_append_str(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Appends s as a JSON string literal, quotes and escapes included. */
int buf_json_string(struct buf *b, const char *s);
/* Appends s as a Prometheus label value: in double quotes, with backslash,
 * double quote and newline escaped (text exposition format). */
int buf_prom_label(struct buf *b, const char *s);
void buf_consume(struct buf *b, size_t n);
void buf_reset(struct buf *b);
/* Give memory back when an idle buffer has grown past `keep` bytes. */
void buf_shrink(struct buf *b, size_t keep);

#endif

/* backlog: the primary's memory of its most recent log bytes, for replicas
 * that come back after a short absence.
 *
 * A ring buffer of the last `cap` bytes of the log stream, addressed by log
 * offset: it covers [start, end). A replica that reconnects with an offset
 * inside that range catches up from here (a partial resync) instead of
 * receiving the whole data set again. The bytes are the log's own framed
 * records (wal.h), appended whole, so any offset a replica reports (the end
 * of its own log: a record boundary) is a record boundary here too.
 *
 * It starts small and grows by doubling up to its size as the stream fills
 * it; then older bytes are overwritten as new ones come.
 * Reading hands out the contiguous run at an offset (a read across the
 * ring's seam takes two calls), so streaming copies nothing extra. */
#ifndef STRATA_BACKLOG_H
#define STRATA_BACKLOG_H

#include <stddef.h>
#include <stdint.h>

struct backlog {
    unsigned char *ring;
    size_t cap;            /* bytes allocated now */
    size_t max;            /* what it may grow to (the topology's backlog) */
    uint64_t start, end;   /* log offsets held: [start, end) */
};

/* An empty backlog of cap bytes (> 0) positioned at log offset `at`.
 * 0, or -1 when memory runs out. */
int backlog_init(struct backlog *b, size_t cap, uint64_t at);
void backlog_free(struct backlog *b);
/* Forgets everything: empty at offset `at` (a new data set). */
void backlog_reset(struct backlog *b, uint64_t at);
/* Appends n bytes that start at log offset b->end. */
void backlog_append(struct backlog *b, const void *p, size_t n);
/* 1 when a reader at offset `off` can be served from here (start <= off <= end). */
static inline int backlog_covers(const struct backlog *b, uint64_t off)
{
    return off >= b->start && off <= b->end;
}
/* The contiguous bytes held from `off` on (at most up to the ring's seam):
 * sets *p and returns their count; 0 when off is not covered or at end. */
size_t backlog_peek(const struct backlog *b, uint64_t off, const unsigned char **p);

#endif

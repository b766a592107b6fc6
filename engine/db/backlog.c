/* backlog: a ring of the newest log bytes, addressed by log offset (see
 * backlog.h). */
#include "backlog.h"

#include <stdlib.h>
#include <string.h>

int backlog_init(struct backlog *b, size_t cap, uint64_t at)
{
    b->ring = malloc(cap ? cap : 1);
    b->cap = cap ? cap : 1;
    b->start = b->end = at;
    return b->ring ? 0 : -1;
}

void backlog_free(struct backlog *b)
{
    free(b->ring);
    b->ring = NULL;
    b->cap = 0;
}

void backlog_reset(struct backlog *b, uint64_t at) { b->start = b->end = at; }

void backlog_append(struct backlog *b, const void *p, size_t n)
{
    const unsigned char *s = p;
    if (n >= b->cap) {
        /* Only the last cap bytes can stay. */
        s += n - b->cap;
        b->end += n - b->cap;
        n = b->cap;
    }
    size_t pos = (size_t)(b->end % b->cap);
    size_t first = b->cap - pos < n ? b->cap - pos : n;
    memcpy(b->ring + pos, s, first);
    memcpy(b->ring, s + first, n - first);
    b->end += n;
    if (b->end - b->start > b->cap)
        b->start = b->end - b->cap;
}

size_t backlog_peek(const struct backlog *b, uint64_t off, const unsigned char **p)
{
    if (!backlog_covers(b, off) || off == b->end)
        return 0;
    size_t pos = (size_t)(off % b->cap);
    size_t n = (size_t)(b->end - off);
    if (n > b->cap - pos)
        n = b->cap - pos;
    *p = b->ring + pos;
    return n;
}

/* backlog: a ring of the newest log bytes, addressed by log offset (see
 * backlog.h). */
#include "backlog.h"

#include <stdlib.h>
#include <string.h>

/* The ring starts small and doubles up to max as the stream fills it: a
 * primary nobody replicates from, or a quiet one, holds little. */
#define BACKLOG_FIRST (64 * 1024)

int backlog_init(struct backlog *b, size_t cap, uint64_t at)
{
    b->max = cap ? cap : 1;
    b->cap = b->max < BACKLOG_FIRST ? b->max : BACKLOG_FIRST;
    b->ring = malloc(b->cap);
    b->start = b->end = at;
    return b->ring ? 0 : -1;
}

/* Moves what is held into a ring of newcap bytes (positions are offsets
 * modulo the size, so every byte moves). On failure the ring stays. */
static void backlog_grow(struct backlog *b, size_t newcap)
{
    unsigned char *ring = malloc(newcap);
    if (!ring)
        return;
    for (uint64_t off = b->start; off < b->end;) {
        const unsigned char *p = NULL;
        size_t n = backlog_peek(b, off, &p);
        if (!n)
            break;
        size_t pos = (size_t)(off % newcap);
        size_t first = newcap - pos < n ? newcap - pos : n;
        memcpy(ring + pos, p, first);
        memcpy(ring, p + first, n - first);
        off += n;
    }
    free(b->ring);
    b->ring = ring;
    b->cap = newcap;
}

void backlog_free(struct backlog *b)
{
    free(b->ring);
    b->ring = NULL;
    b->cap = b->max = 0;
}

void backlog_reset(struct backlog *b, uint64_t at) { b->start = b->end = at; }

void backlog_append(struct backlog *b, const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t want = b->end - b->start + n;
    if (want > b->cap && b->cap < b->max) {
        size_t newcap = b->cap * 2 > want ? b->cap * 2 : (size_t)want;
        backlog_grow(b, newcap < b->max ? newcap : b->max);
    }
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

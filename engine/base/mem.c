#include "mem.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

void mem_init(struct mem *m) { memset(m, 0, sizeof *m); }

size_t mem_usable(const void *p) { return p ? malloc_usable_size((void *)p) : 0; }

static void mem_count(struct mem *m, void *p)
{
    m->used += malloc_usable_size(p);
    m->nallocs++;
    if (m->used > m->peak)
        m->peak = m->used;
}

void *mem_alloc(struct mem *m, size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p)
        mem_count(m, p);
    return p;
}

void *mem_calloc(struct mem *m, size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p)
        mem_count(m, p);
    return p;
}

void *mem_realloc(struct mem *m, void *p, size_t n)
{
    if (!p)
        return mem_alloc(m, n);
    size_t old = malloc_usable_size(p);
    void *q = realloc(p, n ? n : 1);
    if (!q)
        return NULL;
    m->used = m->used - old + malloc_usable_size(q);
    if (m->used > m->peak)
        m->peak = m->used;
    return q;
}

void mem_adopt(struct mem *m, void *p)
{
    if (p)
        mem_count(m, p);
}

void mem_free(struct mem *m, void *p)
{
    if (!p)
        return;
    m->used -= malloc_usable_size(p);
    m->nallocs--;
    free(p);
}

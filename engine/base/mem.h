/* mem: allocation accounting for the data a service owns.
 *
 * Every allocation made through a `struct mem` is counted with its real
 * usable size (malloc_usable_size), not the size asked for, so a memory
 * limit compares against what the allocator actually handed out. A counter
 * is per owner (one per cache store), never process-wide. */
#ifndef STRATA_MEM_H
#define STRATA_MEM_H

#include <stddef.h>

struct mem {
    size_t used;       /* usable bytes currently allocated */
    size_t peak;       /* highest `used` seen */
    size_t nallocs;    /* live allocations */
};

void mem_init(struct mem *m);
/* NULL on allocation failure; nothing is counted then. */
void *mem_alloc(struct mem *m, size_t n);
void *mem_calloc(struct mem *m, size_t count, size_t size);
/* Like realloc: on failure returns NULL and `p` stays valid and counted. */
void *mem_realloc(struct mem *m, void *p, size_t n);
void mem_free(struct mem *m, void *p);
/* Starts counting a block that was malloc'd elsewhere (a read buffer's
 * block kept as data); mem_free gives it back later like any other. */
void mem_adopt(struct mem *m, void *p);
/* What an allocation really occupies (usable size). */
size_t mem_usable(const void *p);

#endif

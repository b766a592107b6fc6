/* mpk: a bounds-checked msgpack cursor for reading the db's own records.
 *
 * Log replay decodes one record per write, millions of them on a restart,
 * and every record has the same few shapes (an array of integers and byte
 * strings). msgpack-c's object API builds a tree in a zone for each one;
 * this cursor reads the fields in place, allocates nothing, and rejects any
 * malformed or truncated input instead of trusting lengths. Writing uses
 * msgpack-c's packer (see mpk_packer_init). */
#ifndef STRATA_MPK_H
#define STRATA_MPK_H

#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

struct mpk {
    const unsigned char *p, *end;
};

static inline void mpk_init(struct mpk *m, const void *p, size_t n)
{
    m->p = p;
    m->end = m->p + n;
}
static inline int mpk_done(const struct mpk *m) { return m->p == m->end; }

/* Each reader returns 0 and advances, or -1 (wrong type, truncated). */
int mpk_array(struct mpk *m, uint32_t *n);
int mpk_int(struct mpk *m, int64_t *v);      /* any msgpack integer that fits */
int mpk_bytes(struct mpk *m, const char **p, size_t *n); /* bin or str */
int mpk_nil(struct mpk *m);                  /* 0 and advances when the next item is nil */

/* A msgpack-c packer that appends to a buf. */
void mpk_packer_init(msgpack_packer *pk, struct buf *out);

#endif

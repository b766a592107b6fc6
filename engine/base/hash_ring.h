/* hash_ring: consistent hashing on a ring of virtual points.
 *
 * Each member owns `points` points per unit of weight, placed by hashing
 * its name (xxhash, the point's number as the seed), so the ring depends
 * only on names and weights: adding or removing one of N members moves
 * about 1/N of the keys, and only to or from that member. A lookup lands
 * on the first point at or after the key's hash and walks clockwise past
 * members a skip predicate rejects (down, already tried), so the other
 * keys keep their place. The balancer's chash and the web tier's cache
 * client place keys with it. */
#ifndef STRATA_HASH_RING_H
#define STRATA_HASH_RING_H

#include <stddef.h>
#include <stdint.h>

#define HASH_RING_MAX_WEIGHT 256

struct hash_ring_point {
    uint64_t hash;
    int member;
};

struct hash_ring {
    struct hash_ring_point *pts; /* sorted by hash, then member */
    size_t n;
};

/* 1: the lookup walks past member i. */
typedef int (*hash_ring_skip_fn)(void *ud, int member);

/* (Re)builds the ring of n members: names[i] with weights[i] (NULL: all 1;
 * a weight is clamped to 0..HASH_RING_MAX_WEIGHT, 0 places no point) and
 * `points` points per unit. 0, or -1 when out of memory: the old ring is
 * kept (stale beats none). */
int hash_ring_build(struct hash_ring *r, const char *const *names, const int *weights, int n,
                    int points);
void hash_ring_free(struct hash_ring *r);

/* The hash a key is placed by. */
uint64_t hash_ring_hash(const void *key, size_t n);

/* The member owning hash h: the first point clockwise from h whose member
 * skip (may be NULL) does not reject. -1 when the ring is empty or every
 * member is skipped. */
int hash_ring_lookup(const struct hash_ring *r, uint64_t h, hash_ring_skip_fn skip, void *ud);

#endif

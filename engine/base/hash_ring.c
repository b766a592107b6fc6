/* hash_ring: consistent hashing on a ring of virtual points (hash_ring.h). */
#include "hash_ring.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

static int point_cmp(const void *a, const void *b)
{
    const struct hash_ring_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->member - y->member;
}

static int clamp_weight(const int *weights, int i)
{
    int w = weights ? weights[i] : 1;
    if (w < 0)
        return 0;
    return w > HASH_RING_MAX_WEIGHT ? HASH_RING_MAX_WEIGHT : w;
}

int hash_ring_build(struct hash_ring *r, const char *const *names, const int *weights, int n,
                    int points)
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += (size_t)clamp_weight(weights, i) * (size_t)points;
    struct hash_ring_point *pts = total ? malloc(total * sizeof *pts) : NULL;
    if (total && !pts)
        return -1;
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        size_t nl = strlen(names[i]);
        int np = clamp_weight(weights, i) * points;
        for (int p = 0; p < np; p++) {
            pts[k].hash = XXH3_64bits_withSeed(names[i], nl, (uint64_t)p);
            pts[k].member = i;
            k++;
        }
    }
    if (total)
        qsort(pts, total, sizeof *pts, point_cmp);
    free(r->pts);
    r->pts = pts;
    r->n = total;
    return 0;
}

void hash_ring_free(struct hash_ring *r)
{
    free(r->pts);
    r->pts = NULL;
    r->n = 0;
}

uint64_t hash_ring_hash(const void *key, size_t n) { return XXH3_64bits(key, n); }

int hash_ring_lookup(const struct hash_ring *r, uint64_t h, hash_ring_skip_fn skip, void *ud)
{
    if (r->n == 0)
        return -1;
    size_t lo = 0, hi = r->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->pts[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (size_t k = 0; k < r->n; k++) {
        int m = r->pts[(lo + k) % r->n].member;
        if (!skip || !skip(ud, m))
            return m;
    }
    return -1;
}

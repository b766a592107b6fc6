/* store: the keyspace's keyed hash table.
 *
 * Chained buckets, a power-of-two bucket array kept between load factors
 * 3/4 and 3/2, and an incremental rehash in both directions (grow at load
 * 3/2, shrink below 1/8) so that no single request pays for moving the
 * whole table: while a
 * rehash is in progress every operation moves a few buckets, and the cron
 * moves more in bounded steps. Keys are hashed with XXH3 and a random
 * per-process seed, so chosen keys cannot pile up in one chain.
 *
 * Each entry is ONE allocation: a 36-byte header (chain link, order-list
 * links, LFU counter, flags, small lengths, access and insert clocks), then
 * an optional expire trailer (only for keys with a TTL), optional 32-bit
 * lengths (only when key or value is over 255 bytes), then key and value
 * bytes inline. A 16-byte key with a 32-byte value is an 84-byte malloc.
 * Functions that change the layout (TTL added or removed, value resized)
 * may move the entry: they return the new pointer and fix every reference
 * (chain, order list, volatile index) before returning.
 *
 * The store also keeps two indexes that the eviction and expiry code use:
 *  - the order list: a doubly-linked list through every entry, oldest at
 *    the head. In access mode (LRU) a touch moves the entry to the tail; in
 *    insertion mode (FIFO) it stays put. Both are O(1).
 *  - the volatile array: a dense array of the entries that have a TTL, so
 *    sampling for volatile-* eviction and the active expiry cycle do not
 *    walk keys without one.
 *
 * Times are passed in (`now_ms`, wall-clock ms) so tests drive them. The
 * per-entry clocks are 32-bit milliseconds relative to the store's base and
 * compared modulo 2^32, which is exact for idle times under ~49 days. */
#ifndef STRATA_STORE_H
#define STRATA_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "mem.h"

enum {
    STORE_F_EXPIRE = 1 << 0, /* an expire trailer follows the header */
    STORE_F_BIG = 1 << 1,    /* 32-bit key/value lengths follow */
};

struct store_entry {
    struct store_entry *next;               /* hash chain */
    struct store_entry *oprev, *onext;      /* order list */
    uint8_t lfu;                            /* logarithmic access counter */
    uint8_t flags;                          /* STORE_F_* */
    uint8_t klen8, vlen8;                   /* lengths when not STORE_F_BIG */
    uint32_t atime;                         /* store clock of the last access */
    uint32_t ctime;                         /* store clock of the first insert */
    unsigned char data[];                   /* [expire i64, vidx u32] [klen u32, vlen u32] key value */
};

struct store_table {
    struct store_entry **b;
    size_t size;        /* power of two, or 0 when unallocated */
};

#define STORE_MAX_VALUE (512u * 1024 * 1024)

/* The key count at which a table of `size` buckets doubles: load 3/2.
 * Growing at load 1 (Redis's dict does) keeps between 8 and 16 bytes of
 * bucket array per key, and just past a doubling a table of 10M keys pays
 * 13.4 B each (16.8M buckets); at 3/2 it is between 5.3 and 10.7 B (10M
 * keys: 8.4M buckets, 6.7 B), for about a quarter of a chain step more per
 * lookup (1 + load/2 entries visited on a hit). The entries themselves are
 * 84-96 bytes, so the array is most of what a key costs beyond its data. */
static inline size_t store_grow_at(size_t size) { return size + size / 2; }

struct store {
    struct mem mem;
    struct store_table t[2];
    long long rehash;          /* next t[0] bucket to move, -1 when idle */
    size_t count;
    struct store_entry *ohead, *otail;
    int order_by_access;       /* 1: LRU (touch moves to tail), 0: FIFO */
    struct store_entry **vol;  /* entries with a TTL */
    size_t nvol, capvol;
    uint64_t seed;             /* hash key */
    uint64_t rng;              /* xorshift state for sampling */
    int64_t base_ms;           /* wall clock that store clock 0 stands for */
    int resize_allowed;        /* tests may turn automatic resizing off */
    uint64_t expired;          /* keys removed because their TTL passed */
    uint64_t resizes;          /* table resizes started (each an incremental rehash) */
    /* Keys store_reserve made room for: until that many are in, the table
     * does not shrink (a load that starts empty keeps its presized table). */
    size_t reserved;
    /* A replica keeps expired keys until its primary deletes them: lookups
     * hide them, nothing here removes them (no lazy or active expiry). */
    int keep_expired;
    /* Called just before an expired key is removed (a db primary logs the
     * deletion so its replicas get it). NULL: nothing. */
    void (*on_expire)(void *arg, const void *key, size_t klen);
    void *on_expire_arg;
};

/* seed 0 draws a random seed (hash and sampling) from the OS. */
void store_init(struct store *s, uint64_t seed, int64_t now_ms);
void store_free(struct store *s);
/* Removes every key (FLUSHDB); the table shrinks back to empty. */
void store_clear(struct store *s);

/* --- entry accessors --------------------------------------------------- */
static inline size_t store_hdr_extra(const struct store_entry *e)
{
    return ((e->flags & STORE_F_EXPIRE) ? 12 : 0) + ((e->flags & STORE_F_BIG) ? 8 : 0);
}
static inline size_t store_klen(const struct store_entry *e)
{
    if (e->flags & STORE_F_BIG) {
        uint32_t v;
        __builtin_memcpy(&v, e->data + ((e->flags & STORE_F_EXPIRE) ? 12 : 0), 4);
        return v;
    }
    return e->klen8;
}
static inline size_t store_vlen(const struct store_entry *e)
{
    if (e->flags & STORE_F_BIG) {
        uint32_t v;
        __builtin_memcpy(&v, e->data + ((e->flags & STORE_F_EXPIRE) ? 12 : 0) + 4, 4);
        return v;
    }
    return e->vlen8;
}
static inline unsigned char *store_key(struct store_entry *e) { return e->data + store_hdr_extra(e); }
static inline unsigned char *store_val(struct store_entry *e)
{
    return e->data + store_hdr_extra(e) + store_klen(e);
}
/* Absolute expire time in ms, or 0 when the key has no TTL. */
static inline int64_t store_expire(const struct store_entry *e)
{
    if (!(e->flags & STORE_F_EXPIRE))
        return 0;
    int64_t v;
    __builtin_memcpy(&v, e->data, 8);
    return v;
}
static inline uint32_t store_clock(const struct store *s, int64_t now_ms)
{
    return (uint32_t)(now_ms - s->base_ms);
}
/* Wall-clock ms of a store clock value, assuming it lies in the past. */
static inline int64_t store_clock_ms(const struct store *s, uint32_t t, int64_t now_ms)
{
    return now_ms - (int64_t)(uint32_t)(store_clock(s, now_ms) - t);
}
/* Bytes the entry occupies in the allocator. */
size_t store_entry_size(const struct store_entry *e);

/* --- lookups and updates ------------------------------------------------ */
uint64_t store_hash(const struct store *s, const void *key, size_t klen);
/* Finds a key regardless of its TTL. */
struct store_entry *store_find(struct store *s, const void *key, size_t klen);
/* Finds a live key: an expired one is deleted (counted in s->expired;
 * kept when keep_expired) and NULL returned. Does not touch the entry. */
struct store_entry *store_lookup(struct store *s, const void *key, size_t klen, int64_t now_ms);
static inline int store_is_expired(const struct store_entry *e, int64_t now_ms)
{
    int64_t x = store_expire(e);
    return x != 0 && x <= now_ms;
}

/* Inserts a new key that must not exist. expire_ms 0: no TTL. The value may
 * be NULL (left uninitialised, for callers that fill it). Returns NULL when
 * memory runs out. */
struct store_entry *store_insert(struct store *s, const void *key, size_t klen, const void *val,
                                 size_t vlen, int64_t expire_ms, int64_t now_ms);
/* Replaces an entry's value (val may be NULL: contents up to the old
 * length are kept, the rest is uninitialised). Keeps TTL, clocks, order
 * position. Returns the possibly moved entry, or NULL (entry unchanged) on
 * allocation failure. */
struct store_entry *store_set_value(struct store *s, struct store_entry *e, const void *val,
                                    size_t vlen);
/* Where the value starts in an entry without a TTL holding these lengths.
 * A reader that places a large value at this offset of a block it
 * malloc'd can hand the block over (store_adopt) instead of copying. */
size_t store_value_offset(size_t klen, size_t vlen);
/* Makes `block` (malloc'd, at least store_value_offset + vlen bytes, the
 * value already at store_value_offset(klen, vlen)) the entry of key, which
 * may itself lie inside the block before the value. `old` NULL: the key is
 * inserted (it must not exist); otherwise old (which must have no TTL) is
 * replaced, keeping its clocks, counter and order position, and freed.
 * The block is counted in s->mem by its usable size. Returns the entry, or
 * NULL (nothing changed, the block still the caller's) when memory runs
 * out. */
struct store_entry *store_adopt(struct store *s, void *block, struct store_entry *old,
                                const void *key, size_t klen, size_t vlen, int64_t now_ms);
/* Sets (expire_ms > 0) or removes (0) the TTL. Returns the possibly moved
 * entry, or NULL (entry unchanged) on allocation failure. */
struct store_entry *store_set_expire(struct store *s, struct store_entry *e, int64_t expire_ms);
void store_delete(struct store *s, struct store_entry *e);
/* Removes a key because its TTL passed: on_expire first, then counted in
 * s->expired. */
void store_expire_delete(struct store *s, struct store_entry *e);

/* --- the order list ------------------------------------------------------ */
/* Marks an access: refreshes atime and, in access mode, moves to the tail. */
void store_order_touch(struct store *s, struct store_entry *e, int64_t now_ms);
/* Switches between access (LRU) and insertion (FIFO) order; the list is
 * re-sorted by atime or ctime (stable) so the new order holds at once. */
void store_set_order(struct store *s, int by_access, int64_t now_ms);

/* --- sampling, iteration, maintenance ----------------------------------- */
uint64_t store_rand(struct store *s);
/* A uniformly chosen bucket's random entry (NULL when empty). */
struct store_entry *store_random(struct store *s);
/* A uniformly random entry with a TTL (NULL when none). */
struct store_entry *store_random_volatile(struct store *s);
/* Reverse-binary cursor scan: calls fn for every entry of one or more
 * buckets and returns the next cursor (0 when done). An entry present for
 * the whole scan is reported at least once even if the table resizes
 * between calls. fn must not modify the store. */
typedef void (*store_visit_fn)(void *ctx, struct store_entry *e);
uint64_t store_scan(struct store *s, uint64_t cursor, store_visit_fn fn, void *ctx);
/* Visits every entry; fn must not modify the store. */
void store_foreach(struct store *s, store_visit_fn fn, void *ctx);
/* Moves up to n buckets of a pending rehash; returns 1 if more remain. */
int store_rehash_step(struct store *s, int n);
/* Sizes the table for n keys at once, so inserting up to n keys starts no
 * rehash (a snapshot load knows its key count). A pending rehash is
 * finished first; the entries are moved in one pass (cheap when empty,
 * which is the case it is for). n 0 ends a reservation. 0, or -1 when
 * memory runs out (the table is unchanged: still usable, just unsized). */
int store_reserve(struct store *s, size_t n);
/* Starts a resize if the load calls for one (done automatically on insert
 * and delete; the cron calls it too). */
void store_maybe_resize(struct store *s);
static inline size_t store_buckets(const struct store *s) { return s->t[0].size + s->t[1].size; }

#endif

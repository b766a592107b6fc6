#include "store.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <xxhash.h>

#define STORE_MIN_SIZE 4
#define STORE_HDR offsetof(struct store_entry, data)

/* ---- small helpers ------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t store_rand(struct store *s)
{
    /* xorshift64*: fast, and good enough for choosing samples. */
    uint64_t x = s->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    s->rng = x;
    return x * 0x2545f4914f6cdd1dull;
}

uint64_t store_hash(const struct store *s, const void *key, size_t klen)
{
    return XXH3_64bits_withSeed(key, klen, s->seed);
}

static int entry_flags(int has_exp, size_t klen, size_t vlen)
{
    return (has_exp ? STORE_F_EXPIRE : 0) | ((klen > 255 || vlen > 255) ? STORE_F_BIG : 0);
}

static size_t entry_extra(int flags)
{
    return ((flags & STORE_F_EXPIRE) ? 12 : 0) + ((flags & STORE_F_BIG) ? 8 : 0);
}

static void entry_set_lens(struct store_entry *e, size_t klen, size_t vlen)
{
    if (e->flags & STORE_F_BIG) {
        uint32_t k = (uint32_t)klen, v = (uint32_t)vlen;
        unsigned char *p = e->data + ((e->flags & STORE_F_EXPIRE) ? 12 : 0);
        memcpy(p, &k, 4);
        memcpy(p + 4, &v, 4);
        e->klen8 = e->vlen8 = 0;
    } else {
        e->klen8 = (uint8_t)klen;
        e->vlen8 = (uint8_t)vlen;
    }
}

static void entry_set_expire_field(struct store_entry *e, int64_t x) { memcpy(e->data, &x, 8); }
static uint32_t entry_vidx(const struct store_entry *e)
{
    uint32_t v;
    memcpy(&v, e->data + 8, 4);
    return v;
}
static void entry_set_vidx(struct store_entry *e, uint32_t v) { memcpy(e->data + 8, &v, 4); }

size_t store_entry_size(const struct store_entry *e) { return mem_usable(e); }

/* ---- the volatile array ------------------------------------------------ */

static int vol_reserve(struct store *s)
{
    if (s->nvol == s->capvol) {
        size_t cap = s->capvol ? s->capvol * 2 : 16;
        struct store_entry **v = mem_realloc(&s->mem, s->vol, cap * sizeof *v);
        if (!v)
            return -1;
        s->vol = v;
        s->capvol = cap;
    }
    return 0;
}

static int vol_add(struct store *s, struct store_entry *e)
{
    if (vol_reserve(s) < 0)
        return -1;
    entry_set_vidx(e, (uint32_t)s->nvol);
    s->vol[s->nvol++] = e;
    return 0;
}

static void vol_remove_at(struct store *s, uint32_t i)
{
    struct store_entry *last = s->vol[--s->nvol];
    s->vol[i] = last;
    if (i != s->nvol)
        entry_set_vidx(last, i);
    /* Give memory back once most TTLs are gone. */
    if (s->capvol > 64 && s->nvol < s->capvol / 4) {
        struct store_entry **v = mem_realloc(&s->mem, s->vol, (s->capvol / 2) * sizeof *v);
        if (v) {
            s->vol = v;
            s->capvol /= 2;
        }
    }
}

static void vol_remove(struct store *s, struct store_entry *e) { vol_remove_at(s, entry_vidx(e)); }

/* ---- the order list ---------------------------------------------------- */

static void order_unlink(struct store *s, struct store_entry *e)
{
    if (e->oprev)
        e->oprev->onext = e->onext;
    else
        s->ohead = e->onext;
    if (e->onext)
        e->onext->oprev = e->oprev;
    else
        s->otail = e->oprev;
    e->oprev = e->onext = NULL;
}

static void order_append(struct store *s, struct store_entry *e)
{
    e->onext = NULL;
    e->oprev = s->otail;
    if (s->otail)
        s->otail->onext = e;
    else
        s->ohead = e;
    s->otail = e;
}

void store_order_touch(struct store *s, struct store_entry *e, int64_t now_ms)
{
    e->atime = store_clock(s, now_ms);
    if (s->order_by_access && s->otail != e) {
        order_unlink(s, e);
        order_append(s, e);
    }
}

/* Stable bottom-up merge sort of the order list, oldest first, by the age
 * of atime (by_access) or ctime. Used only when the policy switches. */
void store_set_order(struct store *s, int by_access, int64_t now_ms)
{
    if (s->order_by_access == by_access)
        return;
    s->order_by_access = by_access;
    uint32_t now = store_clock(s, now_ms);
    struct store_entry *list = s->ohead;
    if (!list)
        return;
    for (size_t width = 1;; width *= 2) {
        struct store_entry *p = list, *head = NULL, *tail = NULL;
        size_t merges = 0;
        while (p) {
            merges++;
            struct store_entry *q = p;
            size_t psize = 0, qsize = width;
            while (psize < width && q) {
                psize++;
                q = q->onext;
            }
            while (psize > 0 || (qsize > 0 && q)) {
                struct store_entry *take;
                if (psize == 0) {
                    take = q, q = q->onext, qsize--;
                } else if (qsize == 0 || !q) {
                    take = p, p = p->onext, psize--;
                } else {
                    uint32_t ap = now - (by_access ? p->atime : p->ctime);
                    uint32_t aq = now - (by_access ? q->atime : q->ctime);
                    if (ap >= aq) /* older (or tie: keep list order) first */
                        take = p, p = p->onext, psize--;
                    else
                        take = q, q = q->onext, qsize--;
                }
                if (tail)
                    tail->onext = take;
                else
                    head = take;
                take->oprev = tail;
                tail = take;
            }
            p = q;
        }
        tail->onext = NULL;
        list = head;
        if (merges <= 1) {
            s->ohead = head;
            s->otail = tail;
            return;
        }
    }
}

/* ---- the table --------------------------------------------------------- */

void store_init(struct store *s, uint64_t seed, int64_t now_ms)
{
    memset(s, 0, sizeof *s);
    mem_init(&s->mem);
    s->rehash = -1;
    s->order_by_access = 1;
    s->resize_allowed = 1;
    s->base_ms = now_ms;
    if (seed == 0 && getrandom(&seed, sizeof seed, 0) != sizeof seed)
        seed = (uint64_t)now_ms ^ (uint64_t)(uintptr_t)s;
    uint64_t x = seed;
    s->seed = splitmix64(&x);
    s->rng = splitmix64(&x) | 1;
}

static void table_free_entries(struct store *s, struct store_table *t)
{
    for (size_t i = 0; i < t->size; i++) {
        struct store_entry *e = t->b[i];
        while (e) {
            struct store_entry *n = e->next;
            mem_free(&s->mem, e);
            e = n;
        }
    }
    mem_free(&s->mem, t->b);
    t->b = NULL;
    t->size = 0;
}

void store_clear(struct store *s)
{
    table_free_entries(s, &s->t[0]);
    table_free_entries(s, &s->t[1]);
    mem_free(&s->mem, s->vol);
    s->vol = NULL;
    s->nvol = s->capvol = 0;
    s->rehash = -1;
    s->count = 0;
    s->ohead = s->otail = NULL;
    s->reserved = 0;
}

void store_free(struct store *s) { store_clear(s); }

static int table_alloc(struct store *s, struct store_table *t, size_t size)
{
    t->b = mem_calloc(&s->mem, size, sizeof *t->b);
    if (!t->b)
        return -1;
    t->size = size;
    return 0;
}

static void rehash_finish(struct store *s)
{
    mem_free(&s->mem, s->t[0].b);
    s->t[0] = s->t[1];
    s->t[1].b = NULL;
    s->t[1].size = 0;
    s->rehash = -1;
}

int store_rehash_step(struct store *s, int n)
{
    if (s->rehash < 0)
        return 0;
    struct store_table *from = &s->t[0], *to = &s->t[1];
    int empty_budget = n * 10; /* bound the work on a sparse table too */
    while (n > 0 && (size_t)s->rehash < from->size) {
        struct store_entry *e = from->b[s->rehash];
        if (!e) {
            s->rehash++;
            if (--empty_budget == 0)
                break;
            continue;
        }
        while (e) {
            struct store_entry *next = e->next;
            size_t i = store_hash(s, store_key(e), store_klen(e)) & (to->size - 1);
            e->next = to->b[i];
            to->b[i] = e;
            e = next;
        }
        from->b[s->rehash++] = NULL;
        n--;
    }
    if ((size_t)s->rehash >= from->size) {
        rehash_finish(s);
        return 0;
    }
    return 1;
}

static size_t next_pow2(size_t n)
{
    size_t v = STORE_MIN_SIZE;
    while (v < n)
        v *= 2;
    return v;
}

static void start_rehash(struct store *s, size_t size)
{
    if (table_alloc(s, &s->t[1], size) < 0)
        return; /* keep going at a worse load; retried on the next change */
    s->rehash = 0;
    s->resizes++;
}

void store_maybe_resize(struct store *s)
{
    if (s->rehash >= 0 || !s->resize_allowed)
        return;
    size_t size = s->t[0].size;
    if (size == 0)
        return;
    if (s->reserved && s->count >= s->reserved)
        s->reserved = 0; /* filled: normal sizing from here on */
    if (s->count >= store_grow_at(size))
        start_rehash(s, size * 2);
    else if (size > STORE_MIN_SIZE && s->count * 8 < size && !s->reserved)
        start_rehash(s, next_pow2(s->count));
}

int store_reserve(struct store *s, size_t n)
{
    s->reserved = n;
    if (n == 0)
        return 0;
    /* A resize starts when count reaches store_grow_at(size); never below
     * what is in. */
    size_t keys = n > s->count ? n : s->count;
    size_t want = STORE_MIN_SIZE;
    while (store_grow_at(want) <= keys)
        want *= 2;
    if (s->t[0].size >= want && s->rehash < 0)
        return 0;
    struct store_table nt;
    if (table_alloc(s, &nt, want) < 0) {
        s->reserved = 0;
        return -1;
    }
    for (int k = 0; k < 2; k++) {
        struct store_table *t = &s->t[k];
        for (size_t i = 0; i < t->size; i++) {
            for (struct store_entry *e = t->b[i], *next; e; e = next) {
                next = e->next;
                size_t j = store_hash(s, store_key(e), store_klen(e)) & (want - 1);
                e->next = nt.b[j];
                nt.b[j] = e;
            }
        }
        mem_free(&s->mem, t->b);
        t->b = NULL;
        t->size = 0;
    }
    s->t[0] = nt;
    s->rehash = -1;
    return 0;
}

/* The pointer that references e in its chain (bucket head or predecessor's
 * next), so e can be unlinked or replaced. */
static struct store_entry **slot_of(struct store *s, const struct store_entry *e, uint64_t h)
{
    for (int t = 0; t < 2; t++) {
        struct store_table *tb = &s->t[t];
        if (!tb->size)
            continue;
        struct store_entry **pp = &tb->b[h & (tb->size - 1)];
        while (*pp) {
            if (*pp == e)
                return pp;
            pp = &(*pp)->next;
        }
    }
    return NULL;
}

struct store_entry *store_find(struct store *s, const void *key, size_t klen)
{
    if (s->count == 0)
        return NULL;
    if (s->rehash >= 0)
        store_rehash_step(s, 1);
    uint64_t h = store_hash(s, key, klen);
    for (int t = 0; t < 2; t++) {
        struct store_table *tb = &s->t[t];
        if (!tb->size)
            continue;
        for (struct store_entry *e = tb->b[h & (tb->size - 1)]; e; e = e->next) {
            if (store_klen(e) == klen && memcmp(store_key(e), key, klen) == 0)
                return e;
        }
        if (s->rehash < 0)
            break;
    }
    return NULL;
}

struct store_entry *store_lookup(struct store *s, const void *key, size_t klen, int64_t now_ms)
{
    struct store_entry *e = store_find(s, key, klen);
    if (e && store_is_expired(e, now_ms)) {
        if (!s->keep_expired)
            store_expire_delete(s, e);
        return NULL;
    }
    return e;
}

void store_expire_delete(struct store *s, struct store_entry *e)
{
    if (s->on_expire)
        s->on_expire(s->on_expire_arg, store_key(e), store_klen(e));
    store_delete(s, e);
    s->expired++;
}

struct store_entry *store_insert(struct store *s, const void *key, size_t klen, const void *val,
                                 size_t vlen, int64_t expire_ms, int64_t now_ms)
{
    if (s->t[0].size == 0 && table_alloc(s, &s->t[0], STORE_MIN_SIZE) < 0)
        return NULL;
    if (s->rehash >= 0)
        store_rehash_step(s, 1);
    int flags = entry_flags(expire_ms != 0, klen, vlen);
    struct store_entry *e = mem_alloc(&s->mem, STORE_HDR + entry_extra(flags) + klen + vlen);
    if (!e)
        return NULL;
    e->flags = (uint8_t)flags;
    e->lfu = 5; /* new keys start warm so they are not the first LFU victims */
    e->atime = e->ctime = store_clock(s, now_ms);
    entry_set_lens(e, klen, vlen);
    if (expire_ms) {
        entry_set_expire_field(e, expire_ms);
        if (vol_add(s, e) < 0) {
            mem_free(&s->mem, e);
            return NULL;
        }
    }
    memcpy(store_key(e), key, klen);
    if (val && vlen)
        memcpy(store_val(e), val, vlen);
    struct store_table *tb = s->rehash >= 0 ? &s->t[1] : &s->t[0];
    size_t i = store_hash(s, key, klen) & (tb->size - 1);
    e->next = tb->b[i];
    tb->b[i] = e;
    order_append(s, e);
    s->count++;
    store_maybe_resize(s);
    return e;
}

size_t store_value_offset(size_t klen, size_t vlen)
{
    return STORE_HDR + entry_extra(entry_flags(0, klen, vlen)) + klen;
}

struct store_entry *store_adopt(struct store *s, void *block, struct store_entry *old,
                                const void *key, size_t klen, size_t vlen, int64_t now_ms)
{
    struct store_entry *n = block;
    int flags = entry_flags(0, klen, vlen);
    if (old) {
        struct store_entry **pp = slot_of(s, old, store_hash(s, store_key(old), klen));
        memcpy(n, old, STORE_HDR); /* links, counter, clocks */
        n->flags = (uint8_t)flags;
        entry_set_lens(n, klen, vlen);
        memcpy(store_key(n), store_key(old), klen);
        if (pp)
            *pp = n;
        if (n->oprev)
            n->oprev->onext = n;
        else
            s->ohead = n;
        if (n->onext)
            n->onext->oprev = n;
        else
            s->otail = n;
        mem_free(&s->mem, old);
        mem_adopt(&s->mem, n);
        return n;
    }
    if (s->t[0].size == 0 && table_alloc(s, &s->t[0], STORE_MIN_SIZE) < 0)
        return NULL;
    if (s->rehash >= 0)
        store_rehash_step(s, 1);
    /* The key may sit where the header goes: move it first. */
    memmove(n->data + entry_extra(flags), key, klen);
    n->flags = (uint8_t)flags;
    n->lfu = 5;
    n->atime = n->ctime = store_clock(s, now_ms);
    entry_set_lens(n, klen, vlen);
    mem_adopt(&s->mem, n);
    struct store_table *tb = s->rehash >= 0 ? &s->t[1] : &s->t[0];
    size_t i = store_hash(s, store_key(n), klen) & (tb->size - 1);
    n->next = tb->b[i];
    tb->b[i] = n;
    order_append(s, n);
    s->count++;
    store_maybe_resize(s);
    return n;
}

void store_delete(struct store *s, struct store_entry *e)
{
    uint64_t h = store_hash(s, store_key(e), store_klen(e));
    struct store_entry **pp = slot_of(s, e, h);
    if (pp)
        *pp = e->next;
    order_unlink(s, e);
    if (e->flags & STORE_F_EXPIRE)
        vol_remove(s, e);
    mem_free(&s->mem, e);
    s->count--;
    if (s->rehash >= 0)
        store_rehash_step(s, 1);
    store_maybe_resize(s);
}

/* Rebuilds e with a new layout (TTL present or not, value length), keeping
 * key, clocks, counter and the value prefix; fixes chain, order list and
 * volatile array. */
static struct store_entry *entry_reshape(struct store *s, struct store_entry *e, int has_exp,
                                         int64_t expire_ms, size_t vlen)
{
    size_t klen = store_klen(e), old_vlen = store_vlen(e);
    int old_flags = e->flags, flags = entry_flags(has_exp, klen, vlen);
    size_t size = STORE_HDR + entry_extra(flags) + klen + vlen;
    struct store_entry **pp = slot_of(s, e, store_hash(s, store_key(e), klen));
    struct store_entry *n;
    if (flags == old_flags) {
        n = mem_realloc(&s->mem, e, size);
        if (!n)
            return NULL;
        entry_set_lens(n, klen, vlen);
    } else {
        n = mem_alloc(&s->mem, size);
        if (!n)
            return NULL;
        memcpy(n, e, STORE_HDR);
        n->flags = (uint8_t)flags;
        entry_set_lens(n, klen, vlen);
        if (old_flags & flags & STORE_F_EXPIRE)
            memcpy(n->data, e->data, 12); /* expire + vidx carried over */
        memcpy(store_key(n), store_key(e), klen);
        memcpy(store_val(n), store_val(e), old_vlen < vlen ? old_vlen : vlen);
        mem_free(&s->mem, e);
    }
    /* Everything that pointed at the old address now points at n. */
    if (pp)
        *pp = n;
    if (n->oprev)
        n->oprev->onext = n;
    else
        s->ohead = n;
    if (n->onext)
        n->onext->oprev = n;
    else
        s->otail = n;
    if (has_exp) {
        entry_set_expire_field(n, expire_ms);
        if (old_flags & STORE_F_EXPIRE)
            s->vol[entry_vidx(n)] = n;
    }
    return n;
}

struct store_entry *store_set_value(struct store *s, struct store_entry *e, const void *val,
                                    size_t vlen)
{
    if (vlen != store_vlen(e) || entry_flags(e->flags & STORE_F_EXPIRE, store_klen(e), vlen) != e->flags) {
        e = entry_reshape(s, e, (e->flags & STORE_F_EXPIRE) != 0, store_expire(e), vlen);
        if (!e)
            return NULL;
    }
    if (val && vlen)
        memmove(store_val(e), val, vlen);
    return e;
}

struct store_entry *store_set_expire(struct store *s, struct store_entry *e, int64_t expire_ms)
{
    if (expire_ms && (e->flags & STORE_F_EXPIRE)) {
        entry_set_expire_field(e, expire_ms);
        return e;
    }
    if (!expire_ms && !(e->flags & STORE_F_EXPIRE))
        return e;
    if (expire_ms) {
        /* Reserve the index slot first so nothing can fail after the move. */
        if (vol_reserve(s) < 0)
            return NULL;
        struct store_entry *n = entry_reshape(s, e, 1, expire_ms, store_vlen(e));
        if (n)
            vol_add(s, n);
        return n;
    }
    uint32_t i = entry_vidx(e);
    struct store_entry *n = entry_reshape(s, e, 0, 0, store_vlen(e));
    if (n)
        vol_remove_at(s, i);
    return n;
}

/* ---- sampling and iteration ------------------------------------------- */

struct store_entry *store_random(struct store *s)
{
    if (s->count == 0)
        return NULL;
    struct store_entry *e = NULL;
    /* Pick non-empty buckets uniformly; at load ~1 most tries hit. */
    for (int tries = 0; !e; tries++) {
        if (s->rehash >= 0) {
            size_t lo = (size_t)s->rehash;
            size_t span = s->t[0].size - lo + s->t[1].size;
            size_t i = lo + store_rand(s) % span;
            e = i < s->t[0].size ? s->t[0].b[i] : s->t[1].b[i - s->t[0].size];
        } else {
            e = s->t[0].b[store_rand(s) & (s->t[0].size - 1)];
        }
        if (tries > 1000000) /* unreachable with count > 0; a guard, not a path */
            return s->ohead;
    }
    size_t len = 0;
    for (struct store_entry *p = e; p; p = p->next)
        len++;
    size_t k = store_rand(s) % len;
    while (k--)
        e = e->next;
    return e;
}

struct store_entry *store_random_volatile(struct store *s)
{
    if (s->nvol == 0)
        return NULL;
    return s->vol[store_rand(s) % s->nvol];
}

static uint64_t rev64(uint64_t v)
{
    v = ((v >> 1) & 0x5555555555555555ull) | ((v & 0x5555555555555555ull) << 1);
    v = ((v >> 2) & 0x3333333333333333ull) | ((v & 0x3333333333333333ull) << 2);
    v = ((v >> 4) & 0x0f0f0f0f0f0f0f0full) | ((v & 0x0f0f0f0f0f0f0f0full) << 4);
    return __builtin_bswap64(v);
}

static void visit_bucket(struct store_entry *e, store_visit_fn fn, void *ctx)
{
    while (e) {
        struct store_entry *n = e->next;
        fn(ctx, e);
        e = n;
    }
}

/* The cursor counts with its bits reversed, so after the table doubles or
 * halves every bucket not yet visited still lies ahead of it. */
uint64_t store_scan(struct store *s, uint64_t cursor, store_visit_fn fn, void *ctx)
{
    if (s->count == 0 || s->t[0].size == 0)
        return 0;
    if (s->rehash < 0) {
        uint64_t m = s->t[0].size - 1;
        visit_bucket(s->t[0].b[cursor & m], fn, ctx);
        cursor |= ~m;
        cursor = rev64(rev64(cursor) + 1);
        return cursor;
    }
    struct store_table *small = &s->t[0], *large = &s->t[1];
    if (small->size > large->size) {
        small = &s->t[1];
        large = &s->t[0];
    }
    uint64_t ms = small->size - 1, ml = large->size - 1;
    visit_bucket(small->b[cursor & ms], fn, ctx);
    /* Then every bucket of the larger table that the small one expands to. */
    do {
        visit_bucket(large->b[cursor & ml], fn, ctx);
        cursor |= ~ml;
        cursor = rev64(rev64(cursor) + 1);
    } while (cursor & (ms ^ ml));
    return cursor;
}

void store_foreach(struct store *s, store_visit_fn fn, void *ctx)
{
    for (int t = 0; t < 2; t++)
        for (size_t i = 0; i < s->t[t].size; i++)
            visit_bucket(s->t[t].b[i], fn, ctx);
}

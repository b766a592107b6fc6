#include "evict.h"

#include <string.h>

#include "log.h"

#define LFU_INIT 5

static const char *const policy_names[] = {
    [EVICT_NOEVICTION] = "noeviction",
    [EVICT_ALLKEYS_LRU] = "allkeys-lru",
    [EVICT_VOLATILE_LRU] = "volatile-lru",
    [EVICT_ALLKEYS_FIFO] = "allkeys-fifo",
    [EVICT_VOLATILE_FIFO] = "volatile-fifo",
    [EVICT_ALLKEYS_LFU] = "allkeys-lfu",
    [EVICT_VOLATILE_LFU] = "volatile-lfu",
    [EVICT_ALLKEYS_RANDOM] = "allkeys-random",
    [EVICT_VOLATILE_RANDOM] = "volatile-random",
    [EVICT_ALLKEYS_TTL] = "allkeys-ttl",
    [EVICT_VOLATILE_TTL] = "volatile-ttl",
    [EVICT_LUA] = "lua",
};

int evict_policy_parse(const char *name, enum evict_policy *out)
{
    for (int i = 0; i < EVICT_LUA; i++) {
        if (strcasecmp(name, policy_names[i]) == 0) {
            *out = (enum evict_policy)i;
            return 0;
        }
    }
    return -1;
}

const char *evict_policy_name(enum evict_policy p)
{
    return (unsigned)p <= EVICT_LUA ? policy_names[p] : "?";
}

void evict_init(struct evict *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->policy = EVICT_NOEVICTION;
    ev->fallback = EVICT_ALLKEYS_LRU;
    ev->samples = 5;
    ev->lfu_log_factor = 10;
    ev->lfu_decay_min = 1;
}

void evict_free(struct evict *ev)
{
    if (ev->lua && ev->lua_ops)
        ev->lua_ops->free(ev->lua);
    ev->lua = NULL;
    ev->lua_ops = NULL;
}

static int uses_fifo_order(enum evict_policy p)
{
    return p == EVICT_ALLKEYS_FIFO || p == EVICT_VOLATILE_FIFO;
}

void evict_set_policy(struct evict *ev, struct store *s, enum evict_policy p, int64_t now_ms)
{
    if (p == EVICT_LUA)
        return; /* needs a module: evict_set_lua */
    evict_free(ev);
    ev->policy = p;
    ev->lua_failed_logged = 0;
    store_set_order(s, !uses_fifo_order(p), now_ms);
}

void evict_set_chooser(struct evict *ev, struct store *s, const struct evict_chooser_ops *ops,
                       struct evict_lua *lua, int64_t now_ms)
{
    evict_free(ev);
    ev->lua = lua;
    ev->lua_ops = ops;
    ev->policy = EVICT_LUA;
    ev->lua_failed_logged = 0;
    store_set_order(s, 1, now_ms);
}

unsigned evict_lfu_value(const struct evict *ev, const struct store *s,
                         const struct store_entry *e, int64_t now_ms)
{
    unsigned c = e->lfu;
    if (ev->lfu_decay_min <= 0)
        return c;
    uint32_t idle_ms = store_clock(s, now_ms) - e->atime;
    uint32_t periods = idle_ms / (60000u * (uint32_t)ev->lfu_decay_min);
    return periods >= c ? 0 : c - periods;
}

void evict_touch(struct evict *ev, struct store *s, struct store_entry *e, int64_t now_ms)
{
    /* Decay first (it reads the previous access time), then count this hit. */
    unsigned c = evict_lfu_value(ev, s, e, now_ms);
    if (c < 255) {
        unsigned base = c > LFU_INIT ? c - LFU_INIT : 0;
        /* Probability 1/(base*factor+1), drawn from 32 random bits. */
        uint64_t r = store_rand(s) & 0xffffffffu;
        if (r * ((uint64_t)base * (uint64_t)ev->lfu_log_factor + 1) < 0x100000000ull)
            c++;
    }
    e->lfu = (uint8_t)c;
    store_order_touch(s, e, now_ms);
}

static int is_volatile(enum evict_policy p)
{
    return p == EVICT_VOLATILE_LRU || p == EVICT_VOLATILE_FIFO || p == EVICT_VOLATILE_LFU ||
           p == EVICT_VOLATILE_RANDOM || p == EVICT_VOLATILE_TTL;
}

/* Draws up to n candidates (duplicates are harmless). */
static int sample(struct store *s, int vol, struct store_entry **out, int n)
{
    int k = 0;
    if (vol ? s->nvol == 0 : s->count == 0)
        return 0;
    /* A keyspace no bigger than the sample is looked at whole: exact. */
    if (vol && s->nvol <= (size_t)n) {
        for (size_t i = 0; i < s->nvol; i++)
            out[k++] = s->vol[i];
        return k;
    }
    if (!vol && s->count <= (size_t)n) {
        for (struct store_entry *e = s->ohead; e; e = e->onext)
            out[k++] = e;
        return k;
    }
    for (int i = 0; i < n; i++) {
        struct store_entry *e = vol ? store_random_volatile(s) : store_random(s);
        if (e)
            out[k++] = e;
    }
    return k;
}

/* Lower is a better victim. */
static uint64_t score(const struct evict *ev, const struct store *s, enum evict_policy p,
                      const struct store_entry *e, int64_t now_ms)
{
    uint32_t idle = store_clock(s, now_ms) - e->atime;
    uint32_t age = store_clock(s, now_ms) - e->ctime;
    switch (p) {
    case EVICT_ALLKEYS_LFU:
    case EVICT_VOLATILE_LFU:
        return ((uint64_t)evict_lfu_value(ev, s, e, now_ms) << 32) | (uint32_t)~idle;
    case EVICT_ALLKEYS_TTL:
    case EVICT_VOLATILE_TTL: {
        int64_t x = store_expire(e);
        return x ? (uint64_t)x : UINT64_MAX;
    }
    case EVICT_VOLATILE_FIFO:
        return (uint32_t)~age;
    default:
        return (uint32_t)~idle;
    }
}

static struct store_entry *best_of(const struct evict *ev, struct store *s, enum evict_policy p,
                                   struct store_entry **c, int n, int64_t now_ms)
{
    struct store_entry *best = NULL;
    uint64_t bs = 0;
    for (int i = 0; i < n; i++) {
        uint64_t v = score(ev, s, p, c[i], now_ms);
        if (!best || v < bs) {
            best = c[i];
            bs = v;
        }
    }
    return best;
}

static struct store_entry *choose_builtin(struct evict *ev, struct store *s, enum evict_policy p,
                                          int64_t now_ms)
{
    struct store_entry *cand[EVICT_MAX_SAMPLES];
    int ns = ev->samples < 1 ? 1 : ev->samples > EVICT_MAX_SAMPLES ? EVICT_MAX_SAMPLES : ev->samples;
    switch (p) {
    case EVICT_NOEVICTION:
    case EVICT_LUA:
        return NULL;
    case EVICT_ALLKEYS_LRU:
    case EVICT_ALLKEYS_FIFO:
        return s->ohead;
    case EVICT_VOLATILE_LRU:
    case EVICT_VOLATILE_FIFO: {
        if (s->nvol == 0)
            return NULL;
        /* When the order list is in the other mode (a Lua fallback) or no
         * TTL key sits near the head, sample by the right clock instead. */
        int exact = (p == EVICT_VOLATILE_LRU) == (s->order_by_access != 0);
        if (exact) {
            int walked = 0;
            for (struct store_entry *e = s->ohead; e && walked < EVICT_VOLATILE_WALK;
                 e = e->onext, walked++)
                if (e->flags & STORE_F_EXPIRE)
                    return e;
        }
        int n = sample(s, 1, cand, ns);
        return best_of(ev, s, p, cand, n, now_ms);
    }
    case EVICT_ALLKEYS_RANDOM:
        return store_random(s);
    case EVICT_VOLATILE_RANDOM:
        return store_random_volatile(s);
    case EVICT_ALLKEYS_TTL:
        if (s->nvol == 0)
            return s->ohead;
        /* fallthrough */
    case EVICT_VOLATILE_TTL:
    case EVICT_ALLKEYS_LFU:
    case EVICT_VOLATILE_LFU: {
        int vol = is_volatile(p) || p == EVICT_ALLKEYS_TTL;
        int n = sample(s, vol, cand, ns);
        return best_of(ev, s, p, cand, n, now_ms);
    }
    }
    return NULL;
}

struct store_entry *evict_choose(struct evict *ev, struct store *s, int64_t now_ms)
{
    if (ev->policy != EVICT_LUA)
        return choose_builtin(ev, s, ev->policy, now_ms);
    struct store_entry *cand[EVICT_MAX_SAMPLES];
    int ns = ev->samples < 1 ? 1 : ev->samples > EVICT_MAX_SAMPLES ? EVICT_MAX_SAMPLES : ev->samples;
    int n = sample(s, 0, cand, ns);
    if (n == 0)
        return NULL;
    char err[256];
    int i = ev->lua ? ev->lua_ops->choose(ev->lua, ev, s, cand, n, now_ms, err, sizeof err)
                    : -1;
    if (i >= 0)
        return cand[i];
    ev->lua_errors++;
    if (!ev->lua_failed_logged) {
        ev->lua_failed_logged = 1;
        log_error("eviction policy %s failed: %s; using %s until it is reloaded",
                  ev->lua ? ev->lua_ops->name(ev->lua) : "(none)", ev->lua ? err : "not loaded",
                  evict_policy_name(ev->fallback));
    }
    return choose_builtin(ev, s, ev->fallback, now_ms);
}

int evict_until(struct evict *ev, struct store *s, size_t limit, int64_t now_ms)
{
    while (s->mem.used > limit) {
        struct store_entry *e = evict_choose(ev, s, now_ms);
        if (!e)
            return -1;
        store_delete(s, e);
        ev->evicted++;
    }
    return 0;
}

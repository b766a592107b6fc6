/* balancer_gen: backend sets, their carry-over across reloads, and their
 * end. See balancer_gen.h. */
#include "balancer_gen.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "service.h"
#include "util.h"

/* backends = { { name=, addr=, weight=, max_active= } | "host:port", ... } */
static int read_backends(struct bal_gen *bal, lua_State *L, int idx, char *err, size_t errlen)
{
    if (lua_getfield(L, idx, "backends") != LUA_TTABLE) {
        lua_pop(L, 1);
        snprintf(err, errlen, "backends must be a list of addresses or backend tables");
        return -1;
    }
    int n = (int)lua_rawlen(L, -1);
    if (n < 1 || n > BAL_MAX_BACKENDS) {
        lua_pop(L, 1);
        snprintf(err, errlen, "backends must list 1..%d backends, not %d", BAL_MAX_BACKENDS, n);
        return -1;
    }
    bal->be = calloc((size_t)n, sizeof *bal->be);
    bal->targets = calloc((size_t)n, sizeof *bal->targets);
    bal->ht = calloc((size_t)n, sizeof *bal->ht);
    if (!bal->be || !bal->targets || !bal->ht) {
        lua_pop(L, 1);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    bal->nbe = n;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        struct bal_backend *be = &bal->be[i];
        int64_t w = 1, ma = 0;
        int t = lua_rawgeti(L, -1, i + 1);
        if (t == LUA_TSTRING) {
            snprintf(be->addr, sizeof be->addr, "%s", lua_tostring(L, -1));
        } else if (t == LUA_TTABLE) {
            int bi = lua_gettop(L);
            if (cfg_string(L, bi, "addr", "", be->addr, sizeof be->addr, err, errlen) < 0 ||
                cfg_string(L, bi, "name", "", be->name, sizeof be->name, err, errlen) < 0 ||
                cfg_int(L, bi, "weight", 1, &w, err, errlen) < 0 ||
                cfg_int(L, bi, "max_active", 0, &ma, err, errlen) < 0)
                rc = -1;
        } else {
            snprintf(err, errlen, "backends[%d] must be an address or a table", i + 1);
            rc = -1;
        }
        lua_pop(L, 1);
        if (rc)
            break;
        if (!be->addr[0]) {
            snprintf(err, errlen, "backends[%d] has no addr", i + 1);
            rc = -1;
        } else if (w < 0 || w > 1000) {
            snprintf(err, errlen, "backends[%d]: weight must be in 0..1000, not %lld", i + 1,
                     (long long)w);
            rc = -1;
        } else if (ma < 0 || ma > 10000000) {
            snprintf(err, errlen, "backends[%d]: max_active must be in 0..10000000, not %lld",
                     i + 1, (long long)ma);
            rc = -1;
        } else if (util_parse_addr(be->addr, &bal->ht[i].sa, &bal->ht[i].salen, err, errlen) <
                   0) {
            rc = -1;
        }
        if (!be->name[0])
            snprintf(be->name, sizeof be->name, "%s", be->addr);
        be->t.name = be->name;
        be->t.addr = be->addr;
        be->t.weight = (int)w;
        be->t.eff_weight = (int)w * LB_EFF_SCALE;
        be->t.max_active = (int)ma;
        be->t.index = i;
        be->gen = bal;
        bal->targets[i] = &be->t;
        bal->ht[i].t = &be->t;
    }
    lua_pop(L, 1);
    for (int i = 0; i < n && rc == 0; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(bal->be[i].name, bal->be[j].name) == 0) {
                snprintf(err, errlen, "two backends are named '%s'", bal->be[i].name);
                rc = -1;
                break;
            }
    return rc;
}

struct bal_gen *bal_gen_new(lua_State *L, int idx, char *err, size_t errlen)
{
    struct bal_gen *g = calloc(1, sizeof *g);
    if (!g) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (read_backends(g, L, lua_absindex(L, idx), err, errlen) < 0) {
        bal_gen_free(g);
        return NULL;
    }
    return g;
}

void bal_gen_free(struct bal_gen *g)
{
    if (!g)
        return;
    health_stop(&g->health);
    if (g->lb.ops)
        lb_free(&g->lb);
    free(g->be);
    free(g->targets);
    free(g->ht);
    free(g);
}

int bal_gen_same_backends(const struct bal_gen *a, const struct bal_gen *b)
{
    if (a->nbe != b->nbe)
        return 0;
    for (int i = 0; i < a->nbe; i++)
        if (strcmp(a->be[i].name, b->be[i].name) || strcmp(a->be[i].addr, b->be[i].addr))
            return 0;
    return 1;
}

struct bal_backend *bal_gen_match(const struct bal_gen *old, const struct bal_backend *nb)
{
    for (int j = 0; j < old->nbe; j++)
        if (!strcmp(nb->name, old->be[j].name) && !strcmp(nb->addr, old->be[j].addr))
            return &old->be[j];
    return NULL;
}

void bal_gen_carry_over(struct bal_gen *g, const struct bal_gen *old)
{
    for (int i = 0; i < g->nbe; i++) {
        struct bal_backend *nb = &g->be[i];
        const struct bal_backend *ob = bal_gen_match(old, nb);
        if (!ob)
            continue;
        struct health_target *nh = &g->ht[i];
        const struct health_target *oh = &old->ht[ob - old->be];
        nh->up = oh->up;
        nh->ejected_until = oh->ejected_until;
        nh->consec_errors = oh->consec_errors;
        nh->back_since = oh->back_since;
        nh->checks = oh->checks;
        nh->checks_failed = oh->checks_failed;
        nb->t.ewma_ms = ob->t.ewma_ms;
        nb->t.errors = ob->t.errors;
        nb->requests = ob->requests;
        nb->failures = ob->failures;
    }
}

/* pattern: Lua 5.4 pattern matching that charges its steps to the state's
 * budget. See pattern.h for why; the syntax is the manual's (6.4.1). */
#include "pattern.h"

#include <ctype.h>
#include <lauxlib.h>
#include <string.h>

#include "budget.h"

#define PAT_MAXCAP 32
#define PAT_MAXDEPTH 200
#define CAP_OPEN (-1)
#define CAP_POS (-2)
/* Steps gathered before they are charged (and the clock looked at). */
#define PAT_CHARGE_EVERY 1024
#define PAT_SPECIALS "^$*+?.([%-"

struct pm {
    const char *s0, *s_end; /* subject */
    const char *p_end;      /* pattern */
    lua_State *L;
    int depth;
    int level; /* captures open or closed so far */
    long steps;
    struct {
        const char *init;
        ptrdiff_t len; /* CAP_OPEN, CAP_POS or a length */
    } cap[PAT_MAXCAP];
};

static void step(struct pm *m)
{
    if (++m->steps >= PAT_CHARGE_EVERY) {
        long n = m->steps;
        m->steps = 0;
        budget_charge(m->L, n);
    }
}

static void pm_reset(struct pm *m)
{
    m->level = 0;
    m->depth = PAT_MAXDEPTH;
}

static void pm_done(struct pm *m)
{
    if (m->steps) {
        long n = m->steps;
        m->steps = 0;
        budget_charge(m->L, n);
    }
}

/* The end of the single-character class starting at p. */
static const char *class_end(struct pm *m, const char *p)
{
    char c = *p++;
    if (c == '%') {
        if (p >= m->p_end)
            luaL_error(m->L, "malformed pattern (ends with '%%')");
        return p + 1;
    }
    if (c == '[') {
        if (*p == '^')
            p++;
        /* the first character of a set is literal, even ']' */
        do {
            if (p >= m->p_end)
                luaL_error(m->L, "malformed pattern (missing ']')");
            c = *p++;
            if (c == '%' && p < m->p_end)
                p++;
        } while (*p != ']');
        return p + 1;
    }
    return p;
}

static int class_has(int c, int cl)
{
    int r;
    switch (tolower(cl)) {
    case 'a': r = isalpha(c); break;
    case 'c': r = iscntrl(c); break;
    case 'd': r = isdigit(c); break;
    case 'g': r = isgraph(c); break;
    case 'l': r = islower(c); break;
    case 'p': r = ispunct(c); break;
    case 's': r = isspace(c); break;
    case 'u': r = isupper(c); break;
    case 'w': r = isalnum(c); break;
    case 'x': r = isxdigit(c); break;
    default: return cl == c;
    }
    if (isupper(cl))
        r = !r;
    return r != 0;
}

/* c in the set [p .. close], p at '[' and close at its ']'. */
static int set_has(int c, const char *p, const char *close)
{
    int want = 1;
    p++;
    if (*p == '^') {
        want = 0;
        p++;
    }
    for (; p < close; p++) {
        if (*p == '%' && p + 1 < close) {
            p++;
            if (class_has(c, (unsigned char)*p))
                return want;
        } else if (p + 2 < close && p[1] == '-') {
            if ((unsigned char)p[0] <= c && c <= (unsigned char)p[2])
                return want;
            p += 2;
        } else if ((unsigned char)*p == c) {
            return want;
        }
    }
    return !want;
}

static int single(struct pm *m, const char *s, const char *p, const char *ep)
{
    if (s >= m->s_end)
        return 0;
    int c = (unsigned char)*s;
    switch (*p) {
    case '.': return 1;
    case '%': return class_has(c, (unsigned char)p[1]);
    case '[': return set_has(c, p, ep - 1);
    default: return (unsigned char)*p == c;
    }
}

static const char *match(struct pm *m, const char *s, const char *p);

static const char *balance(struct pm *m, const char *s, const char *p)
{
    if (p + 1 >= m->p_end)
        luaL_error(m->L, "malformed pattern (missing arguments to '%%b')");
    if (s >= m->s_end || *s != *p)
        return NULL;
    char open = p[0], close = p[1];
    int depth = 1;
    while (++s < m->s_end) {
        step(m);
        if (*s == close) {
            if (--depth == 0)
                return s + 1;
        } else if (*s == open) {
            depth++;
        }
    }
    return NULL;
}

static const char *expand_max(struct pm *m, const char *s, const char *p, const char *ep)
{
    ptrdiff_t n = 0;
    while (single(m, s + n, p, ep)) {
        step(m);
        n++;
    }
    for (; n >= 0; n--) {
        const char *r = match(m, s + n, ep + 1);
        if (r)
            return r;
    }
    return NULL;
}

static const char *expand_min(struct pm *m, const char *s, const char *p, const char *ep)
{
    for (;;) {
        const char *r = match(m, s, ep + 1);
        if (r)
            return r;
        if (!single(m, s, p, ep))
            return NULL;
        s++;
    }
}

static const char *capture_open(struct pm *m, const char *s, const char *p, ptrdiff_t what)
{
    if (m->level >= PAT_MAXCAP)
        luaL_error(m->L, "too many captures");
    m->cap[m->level].init = s;
    m->cap[m->level].len = what;
    m->level++;
    const char *r = match(m, s, p);
    if (!r)
        m->level--;
    return r;
}

static const char *capture_close(struct pm *m, const char *s, const char *p)
{
    int l = m->level - 1;
    while (l >= 0 && m->cap[l].len != CAP_OPEN)
        l--;
    if (l < 0)
        luaL_error(m->L, "invalid pattern capture");
    m->cap[l].len = s - m->cap[l].init;
    const char *r = match(m, s, p);
    if (!r)
        m->cap[l].len = CAP_OPEN;
    return r;
}

static const char *backref(struct pm *m, const char *s, int digit)
{
    int l = digit - '1';
    if (l < 0 || l >= m->level || m->cap[l].len == CAP_OPEN)
        luaL_error(m->L, "invalid capture index %%%d", l + 1);
    size_t len = (size_t)m->cap[l].len;
    if ((size_t)(m->s_end - s) >= len && memcmp(m->cap[l].init, s, len) == 0)
        return s + len;
    return NULL;
}

/* Matches pattern p at subject s; the end of the match, or NULL. */
static const char *match(struct pm *m, const char *s, const char *p)
{
    if (m->depth-- == 0)
        luaL_error(m->L, "pattern too complex");
    for (;;) {
        step(m);
        if (p >= m->p_end)
            break;
        if (*p == '(') {
            if (p + 1 < m->p_end && p[1] == ')')
                s = capture_open(m, s, p + 2, CAP_POS);
            else
                s = capture_open(m, s, p + 1, CAP_OPEN);
            break;
        }
        if (*p == ')') {
            s = capture_close(m, s, p + 1);
            break;
        }
        if (*p == '$' && p + 1 == m->p_end) {
            s = s == m->s_end ? s : NULL;
            break;
        }
        if (*p == '%' && p + 1 < m->p_end) {
            char k = p[1];
            if (k == 'b') {
                s = balance(m, s, p + 2);
                if (!s)
                    break;
                p += 4;
                continue;
            }
            if (k == 'f') {
                p += 2;
                if (*p != '[')
                    luaL_error(m->L, "missing '[' after '%%f' in pattern");
                const char *ep = class_end(m, p);
                int prev = s == m->s0 ? 0 : (unsigned char)s[-1];
                int cur = s < m->s_end ? (unsigned char)*s : 0;
                if (set_has(prev, p, ep - 1) || !set_has(cur, p, ep - 1)) {
                    s = NULL;
                    break;
                }
                p = ep;
                continue;
            }
            if (k >= '0' && k <= '9') {
                s = backref(m, s, (unsigned char)k);
                if (!s)
                    break;
                p += 2;
                continue;
            }
        }
        const char *ep = class_end(m, p);
        char q = ep < m->p_end ? *ep : 0;
        if (!single(m, s, p, ep)) {
            if (q == '*' || q == '?' || q == '-') {
                p = ep + 1;
                continue;
            }
            s = NULL;
            break;
        }
        if (q == '?') {
            const char *r = match(m, s + 1, ep + 1);
            if (r) {
                s = r;
                break;
            }
            p = ep + 1;
            continue;
        }
        if (q == '+') {
            s = expand_max(m, s + 1, p, ep);
            break;
        }
        if (q == '*') {
            s = expand_max(m, s, p, ep);
            break;
        }
        if (q == '-') {
            s = expand_min(m, s, p, ep);
            break;
        }
        s++;
        p = ep;
    }
    m->depth++;
    return s;
}

/* ---- captures ------------------------------------------------------------ */

static void push_capture(struct pm *m, int i, const char *s, const char *e)
{
    if (i >= m->level) {
        if (i != 0)
            luaL_error(m->L, "invalid capture index %%%d", i + 1);
        lua_pushlstring(m->L, s, (size_t)(e - s));
        return;
    }
    ptrdiff_t len = m->cap[i].len;
    if (len == CAP_OPEN)
        luaL_error(m->L, "unfinished capture");
    if (len == CAP_POS)
        lua_pushinteger(m->L, (lua_Integer)(m->cap[i].init - m->s0) + 1);
    else
        lua_pushlstring(m->L, m->cap[i].init, (size_t)len);
}

/* Pushes the captures (the whole match when there are none and s is set). */
static int push_captures(struct pm *m, const char *s, const char *e)
{
    int n = (m->level == 0 && s) ? 1 : m->level;
    luaL_checkstack(m->L, n, "too many captures");
    for (int i = 0; i < n; i++)
        push_capture(m, i, s, e);
    return n;
}

static void pm_init(struct pm *m, lua_State *L, const char *s, size_t ls, const char *p,
                    size_t lp)
{
    m->L = L;
    m->s0 = s;
    m->s_end = s + ls;
    m->p_end = p + lp;
    m->steps = 0;
    pm_reset(m);
}

/* A Lua 5.4 string position (1-based, negative from the end) as a 0-based
 * offset clamped to [0, len]; len + 1 means past the end. */
static size_t start_at(lua_Integer pos, size_t len)
{
    if (pos > 0)
        return (size_t)pos - 1;
    if (pos == 0 || pos < -(lua_Integer)len)
        return 0;
    return len + (size_t)pos;
}

static int has_specials(const char *p, size_t lp)
{
    for (size_t i = 0; i < lp; i++)
        if (strchr(PAT_SPECIALS, p[i]) && p[i])
            return 1;
    return 0;
}

static int find_or_match(lua_State *L, int find)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_at(luaL_optinteger(L, 3, 1), ls);
    if (init > ls) {
        luaL_pushfail(L);
        return 1;
    }
    if (find && (lua_toboolean(L, 4) || !has_specials(p, lp))) {
        const char *r = lp == 0 ? s + init : memmem(s + init, ls - init, p, lp);
        if (!r) {
            luaL_pushfail(L);
            return 1;
        }
        lua_pushinteger(L, (lua_Integer)(r - s) + 1);
        lua_pushinteger(L, (lua_Integer)(r - s) + (lua_Integer)lp);
        return 2;
    }
    struct pm m;
    int anchor = lp > 0 && *p == '^';
    if (anchor) {
        p++;
        lp--;
    }
    pm_init(&m, L, s, ls, p, lp);
    const char *at = s + init;
    do {
        pm_reset(&m);
        const char *e = match(&m, at, p);
        if (e) {
            pm_done(&m);
            if (find) {
                lua_pushinteger(L, (lua_Integer)(at - s) + 1);
                lua_pushinteger(L, (lua_Integer)(e - s));
                return push_captures(&m, NULL, NULL) + 2;
            }
            return push_captures(&m, at, e);
        }
    } while (at++ < m.s_end && !anchor);
    pm_done(&m);
    luaL_pushfail(L);
    return 1;
}

static int str_find(lua_State *L) { return find_or_match(L, 1); }
static int str_match(lua_State *L) { return find_or_match(L, 0); }

/* ---- gmatch ------------------------------------------------------------- */

struct gm {
    struct pm m;
    const char *at, *last, *p;
};

static int gmatch_next(lua_State *L)
{
    struct gm *g = lua_touserdata(L, lua_upvalueindex(3));
    g->m.L = L;
    for (const char *at = g->at; at <= g->m.s_end; at++) {
        pm_reset(&g->m);
        const char *e = match(&g->m, at, g->p);
        if (e && e != g->last) {
            g->at = g->last = e;
            pm_done(&g->m);
            return push_captures(&g->m, at, e);
        }
    }
    pm_done(&g->m);
    return 0;
}

static int str_gmatch(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    size_t init = start_at(luaL_optinteger(L, 3, 1), ls);
    if (init > ls)
        init = ls + 1; /* no match at all */
    lua_settop(L, 2);
    struct gm *g = lua_newuserdatauv(L, sizeof *g, 0);
    pm_init(&g->m, L, s, ls, p, lp);
    g->at = s + init;
    g->last = NULL;
    g->p = p;
    lua_pushcclosure(L, gmatch_next, 3); /* keeps s and p alive */
    return 1;
}

/* ---- gsub --------------------------------------------------------------- */

static void add_template(struct pm *m, luaL_Buffer *b, const char *s, const char *e)
{
    size_t l;
    const char *t = lua_tolstring(m->L, 3, &l);
    const char *t_end = t + l;
    for (; t < t_end; t++) {
        if (*t != '%') {
            luaL_addchar(b, *t);
            continue;
        }
        t++;
        if (t >= t_end)
            luaL_error(m->L, "invalid use of '%%' in replacement string");
        if (*t == '%') {
            luaL_addchar(b, '%');
        } else if (*t == '0') {
            luaL_addlstring(b, s, (size_t)(e - s));
        } else if (isdigit((unsigned char)*t)) {
            push_capture(m, *t - '1', s, e);
            luaL_tolstring(m->L, -1, NULL);
            lua_remove(m->L, -2);
            luaL_addvalue(b);
        } else {
            luaL_error(m->L, "invalid use of '%%' in replacement string");
        }
    }
}

/* Appends the replacement of match s..e; 1 when it changed something. */
static int add_replacement(struct pm *m, luaL_Buffer *b, const char *s, const char *e, int tr)
{
    lua_State *L = m->L;
    if (tr == LUA_TSTRING || tr == LUA_TNUMBER) {
        add_template(m, b, s, e);
        return 1;
    }
    if (tr == LUA_TFUNCTION) {
        lua_pushvalue(L, 3);
        int n = push_captures(m, s, e);
        lua_call(L, n, 1);
    } else {
        push_capture(m, 0, s, e);
        lua_gettable(L, 3);
    }
    if (!lua_toboolean(L, -1)) {
        lua_pop(L, 1);
        luaL_addlstring(b, s, (size_t)(e - s));
        return 0;
    }
    if (!lua_isstring(L, -1))
        return luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
    luaL_addvalue(b);
    return 1;
}

static int str_gsub(lua_State *L)
{
    size_t ls, lp;
    const char *s = luaL_checklstring(L, 1, &ls);
    const char *p = luaL_checklstring(L, 2, &lp);
    int tr = lua_type(L, 3);
    lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)ls + 1);
    luaL_argexpected(L, tr == LUA_TNUMBER || tr == LUA_TSTRING || tr == LUA_TFUNCTION ||
                            tr == LUA_TTABLE,
                     3, "string/function/table");
    int anchor = lp > 0 && *p == '^';
    if (anchor) {
        p++;
        lp--;
    }
    struct pm m;
    pm_init(&m, L, s, ls, p, lp);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    const char *at = s, *last = NULL;
    lua_Integer n = 0;
    int changed = 0;
    while (n < max) {
        pm_reset(&m);
        const char *e = match(&m, at, p);
        if (e && e != last) {
            n++;
            changed |= add_replacement(&m, &b, at, e, tr);
            at = last = e;
        } else if (at < m.s_end) {
            step(&m);
            luaL_addchar(&b, *at++);
        } else {
            break;
        }
        if (anchor)
            break;
    }
    pm_done(&m);
    if (!changed) {
        lua_pushvalue(L, 1);
    } else {
        luaL_addlstring(&b, at, (size_t)(m.s_end - at));
        luaL_pushresult(&b);
    }
    lua_pushinteger(L, n);
    return 2;
}

void pattern_open(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"find", str_find},   {"match", str_match}, {"gmatch", str_gmatch},
        {"gsub", str_gsub},   {NULL, NULL},
    };
    if (lua_getglobal(L, "string") == LUA_TTABLE)
        luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}

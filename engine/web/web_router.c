/* web_router: routes of an app, matched segment by segment. See
 * web_router.h. */
#include "web_router.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum seg_kind { SEG_LIT, SEG_PARAM, SEG_REST };

struct seg {
    enum seg_kind kind;
    const char *text; /* literal text or the capture's name, into pattern */
    size_t len;
};

struct web_route {
    unsigned methods;
    int handler;
    int nseg;
    int nparams;
    struct seg segs[WEB_ROUTE_MAX_SEGS];
    char pattern[]; /* segments point into it */
};

void web_router_init(struct web_router *r) { memset(r, 0, sizeof *r); }

void web_router_free(struct web_router *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->routes[i]);
    free(r->routes);
    memset(r, 0, sizeof *r);
}

unsigned web_method_bit(const char *m, size_t n)
{
    static const struct {
        const char *name;
        unsigned bit;
    } t[] = {{"GET", WEB_GET},       {"HEAD", WEB_HEAD},     {"POST", WEB_POST},
             {"PUT", WEB_PUT},       {"DELETE", WEB_DELETE}, {"PATCH", WEB_PATCH},
             {"OPTIONS", WEB_OPTIONS}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (strlen(t[i].name) == n && memcmp(t[i].name, m, n) == 0)
            return t[i].bit;
    return WEB_OTHER;
}

static int name_ok(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (i > 0 && c >= '0' && c <= '9')))
            return 0;
    }
    return 1;
}

/* Splits a pattern into rt->segs (rt may be NULL: check only). */
static int parse(const char *p, struct web_route *rt, char *err, size_t errlen)
{
    size_t len = strlen(p);
    if (len == 0 || p[0] != '/') {
        snprintf(err, errlen, "route pattern '%s' must start with '/'", p);
        return -1;
    }
    if (len > WEB_ROUTE_MAX_PATTERN) {
        snprintf(err, errlen, "route pattern is longer than %d bytes", WEB_ROUTE_MAX_PATTERN);
        return -1;
    }
    int nseg = 0, nparams = 0;
    const char *names[WEB_ROUTE_MAX_PARAMS];
    size_t name_lens[WEB_ROUTE_MAX_PARAMS];
    const char *s = p + 1, *end = p + len;
    if (s == end) /* "/" */
        goto done;
    for (;;) {
        const char *slash = memchr(s, '/', (size_t)(end - s));
        const char *e = slash ? slash : end;
        size_t n = (size_t)(e - s);
        if (nseg >= WEB_ROUTE_MAX_SEGS) {
            snprintf(err, errlen, "route pattern '%s' has more than %d segments", p,
                     WEB_ROUTE_MAX_SEGS);
            return -1;
        }
        enum seg_kind k = SEG_LIT;
        const char *text = s;
        if (n > 0 && (s[0] == ':' || s[0] == '*')) {
            k = s[0] == ':' ? SEG_PARAM : SEG_REST;
            text = s + 1;
            n--;
            if (!name_ok(text, n)) {
                snprintf(err, errlen, "route pattern '%s': bad name '%.*s' after '%c' "
                         "(letters, digits, _)", p, (int)n, text, s[0]);
                return -1;
            }
            if (k == SEG_REST && slash) {
                snprintf(err, errlen, "route pattern '%s': '*%.*s' must be the last segment", p,
                         (int)n, text);
                return -1;
            }
            if (nparams >= WEB_ROUTE_MAX_PARAMS) {
                snprintf(err, errlen, "route pattern '%s' has more than %d captures", p,
                         WEB_ROUTE_MAX_PARAMS);
                return -1;
            }
            for (int i = 0; i < nparams; i++)
                if (name_lens[i] == n && memcmp(names[i], text, n) == 0) {
                    snprintf(err, errlen, "route pattern '%s' names '%.*s' twice", p, (int)n,
                             text);
                    return -1;
                }
            names[nparams] = text;
            name_lens[nparams++] = n;
        } else {
            for (size_t i = 0; i < n; i++)
                if ((unsigned char)s[i] <= ' ' || s[i] == '?' || s[i] == '#') {
                    snprintf(err, errlen, "route pattern '%s': '%c' is not allowed in a path", p,
                             s[i] <= ' ' ? ' ' : s[i]);
                    return -1;
                }
        }
        if (rt)
            rt->segs[nseg] = (struct seg){k, text, n};
        nseg++;
        if (!slash)
            break;
        s = slash + 1;
    }
done:
    if (rt) {
        rt->nseg = nseg;
        rt->nparams = nparams;
    }
    return 0;
}

int web_router_check(const char *pattern, char *err, size_t errlen)
{
    return parse(pattern, NULL, err, errlen);
}

int web_router_add(struct web_router *r, unsigned methods, const char *pattern, int handler,
                   char *err, size_t errlen)
{
    if (web_router_check(pattern, err, errlen) < 0)
        return -1;
    size_t len = strlen(pattern);
    struct web_route *rt = malloc(sizeof *rt + len + 1);
    if (!rt) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(rt->pattern, pattern, len + 1);
    rt->methods = methods;
    rt->handler = handler;
    parse(rt->pattern, rt, err, errlen);
    if (r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 8;
        struct web_route **nr = realloc(r->routes, (size_t)cap * sizeof *nr);
        if (!nr) {
            free(rt);
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        r->routes = nr;
        r->cap = cap;
    }
    r->routes[r->n++] = rt;
    return 0;
}

/* Whether rt's pattern matches the path; fills the captures. */
static int match_one(const struct web_route *rt, const char *path, size_t len,
                     struct web_match *m)
{
    if (len == 0 || path[0] != '/')
        return 0;
    const char *s = path + 1, *end = path + len;
    int np = 0;
    if (rt->nseg == 0)
        return s == end;
    for (int i = 0; i < rt->nseg; i++) {
        const struct seg *g = &rt->segs[i];
        if (g->kind == SEG_REST) {
            if (s > end)
                s = end; /* the path stops right before the rest: it is empty */
            m->params[np++] = (struct web_param){g->text, g->len, s, (size_t)(end - s)};
            m->nparams = np;
            return 1;
        }
        if (s > end)
            return 0; /* the path has fewer segments */
        const char *slash = memchr(s, '/', (size_t)(end - s));
        const char *e = slash ? slash : end;
        size_t n = (size_t)(e - s);
        if (g->kind == SEG_LIT) {
            if (n != g->len || memcmp(s, g->text, n) != 0)
                return 0;
        } else {
            if (n == 0)
                return 0;
            m->params[np++] = (struct web_param){g->text, g->len, s, n};
        }
        s = slash ? slash + 1 : end + 1;
    }
    if (s != end + 1)
        return 0; /* the path has more segments */
    m->nparams = np;
    return 1;
}

/* A route serves a method: its own, or GET's for HEAD. */
static int serves(const struct web_route *rt, unsigned method)
{
    return (rt->methods & method) || (method == WEB_HEAD && (rt->methods & WEB_GET));
}

enum web_match_result web_router_match(const struct web_router *r, unsigned method,
                                       const char *path, size_t len, struct web_match *m,
                                       unsigned *allow)
{
    unsigned seen = 0;
    int head_via_get = -1;
    for (int i = 0; i < r->n; i++) {
        const struct web_route *rt = r->routes[i];
        if (!serves(rt, method) && (seen & rt->methods) == rt->methods)
            continue; /* nothing new to learn from it */
        struct web_match tmp;
        if (!match_one(rt, path, len, &tmp))
            continue;
        if (rt->methods & method) {
            *m = tmp;
            m->route = i;
            m->handler = rt->handler;
            return WEB_MATCH_OK;
        }
        if (serves(rt, method) && head_via_get < 0) {
            /* HEAD by a GET route, unless a later route names HEAD */
            *m = tmp;
            m->route = i;
            m->handler = rt->handler;
            head_via_get = i;
        }
        seen |= rt->methods;
    }
    if (head_via_get >= 0)
        return WEB_MATCH_OK;
    if (!seen)
        return WEB_MATCH_NONE;
    if (seen & WEB_GET)
        seen |= WEB_HEAD;
    *allow = seen;
    return WEB_MATCH_METHOD;
}

void web_router_allow(unsigned mask, char *out, size_t n)
{
    static const char *const names[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH",
                                        "OPTIONS"};
    size_t used = 0;
    out[0] = 0;
    for (int i = 0; i < 7 && used < n; i++)
        if (mask & (1u << i)) {
            int w = snprintf(out + used, n - used, "%s%s", used ? ", " : "", names[i]);
            if (w < 0)
                break;
            used += (size_t)w;
        }
}

const char *web_router_pattern(const struct web_router *r, int i) { return r->routes[i]->pattern; }
int web_router_handler(const struct web_router *r, int i) { return r->routes[i]->handler; }

/* web_router: the app's routes and how a request path finds one.
 *
 * A route is a set of methods and a pattern of '/'-separated segments:
 * literal text, `:name` (exactly one non-empty segment, captured) or, last,
 * `*name` (the rest of the path, zero or more segments, captured). Routes
 * are tried in declaration order and the first match wins. A path that
 * matches routes of other methods only is a 405, with the methods those
 * routes allow (for the Allow header). HEAD is served by a GET route when
 * no route names HEAD itself.
 *
 * Matching works on the path as received (percent-encoded); captures point
 * into it and the caller decodes them. No allocation happens while
 * matching. */
#ifndef STRATA_WEB_ROUTER_H
#define STRATA_WEB_ROUTER_H

#include <stddef.h>

#define WEB_ROUTE_MAX_PARAMS 16
#define WEB_ROUTE_MAX_SEGS 64
#define WEB_ROUTE_MAX_PATTERN 1024

enum web_method_bit {
    WEB_GET = 1 << 0,
    WEB_HEAD = 1 << 1,
    WEB_POST = 1 << 2,
    WEB_PUT = 1 << 3,
    WEB_DELETE = 1 << 4,
    WEB_PATCH = 1 << 5,
    WEB_OPTIONS = 1 << 6,
    WEB_OTHER = 1 << 7,
    WEB_ANY = 0xff,
};

struct web_route;

struct web_router {
    struct web_route **routes;
    int n, cap;
};

struct web_param {
    const char *name;
    size_t name_len;
    const char *val; /* into the matched path, still percent-encoded */
    size_t val_len;
};

struct web_match {
    int route; /* index in declaration order */
    int handler;
    int nparams;
    struct web_param params[WEB_ROUTE_MAX_PARAMS];
};

void web_router_init(struct web_router *r);
void web_router_free(struct web_router *r);
/* The bit of a method name ("GET"...), WEB_OTHER for any other. */
unsigned web_method_bit(const char *m, size_t n);
/* Checks a pattern without adding it: 0, or -1 with why in err. */
int web_router_check(const char *pattern, char *err, size_t errlen);
/* Adds a route for `methods` (a mask of enum web_method_bit) whose handler
 * is the caller's `handler` (a Lua reference). 0, or -1 with why in err. */
int web_router_add(struct web_router *r, unsigned methods, const char *pattern, int handler,
                   char *err, size_t errlen);

enum web_match_result { WEB_MATCH_NONE = 0, WEB_MATCH_OK = 1, WEB_MATCH_METHOD = 2 };

/* Finds the route of (method, path). WEB_MATCH_OK fills m;
 * WEB_MATCH_METHOD sets *allow to the methods the path's routes accept. */
enum web_match_result web_router_match(const struct web_router *r, unsigned method,
                                       const char *path, size_t len, struct web_match *m,
                                       unsigned *allow);
/* "GET, HEAD, POST" for an Allow header. */
void web_router_allow(unsigned mask, char *out, size_t n);
/* The route's pattern and handler (i in declaration order). */
const char *web_router_pattern(const struct web_router *r, int i);
int web_router_handler(const struct web_router *r, int i);

#endif

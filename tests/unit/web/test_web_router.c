/* web_router: patterns, first match in declaration order, captures, HEAD by
 * GET, 405 with the methods allowed, and the patterns refused. */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "web_router.h"

static struct web_router r;
static struct web_match m;
static unsigned allow;

static enum web_match_result match(const char *method, const char *path)
{
    memset(&m, 0, sizeof m);
    allow = 0;
    return web_router_match(&r, web_method_bit(method, strlen(method)), path, strlen(path), &m,
                            &allow);
}

/* The capture named `name` of the last match, as a NUL-terminated copy. */
static const char *param(const char *name)
{
    static char buf[256];
    for (int i = 0; i < m.nparams; i++)
        if (m.params[i].name_len == strlen(name) &&
            memcmp(m.params[i].name, name, m.params[i].name_len) == 0) {
            snprintf(buf, sizeof buf, "%.*s", (int)m.params[i].val_len, m.params[i].val);
            return buf;
        }
    return NULL;
}

static void add(unsigned methods, const char *pattern, int handler)
{
    char err[256];
    if (web_router_add(&r, methods, pattern, handler, err, sizeof err) < 0)
        printf("# add %s: %s\n", pattern, err);
}

int main(void)
{
    char err[256];
    web_router_init(&r);
    add(WEB_GET, "/", 1);
    add(WEB_GET, "/users/:id", 2);
    add(WEB_PUT | WEB_DELETE, "/users/:id", 3);
    add(WEB_GET, "/users/me", 4); /* after /users/:id: never reached for GET */
    add(WEB_GET, "/users/:id/posts/:post", 5);
    add(WEB_GET, "/static/*path", 6);
    add(WEB_ANY, "/any", 7);
    add(WEB_HEAD, "/head-only", 8);
    add(WEB_GET, "/head-only", 9);
    add(WEB_POST, "/only-post", 10);

    is_int(match("GET", "/"), WEB_MATCH_OK, "root");
    is_int(m.handler, 1, "root handler");
    is_int(match("GET", "/users/42"), WEB_MATCH_OK, "a :param");
    is_int(m.handler, 2, "first match");
    is_str(param("id"), "42", "captured id");
    is_int(match("GET", "/users/me"), WEB_MATCH_OK, "literal after a :param");
    is_int(m.handler, 2, "declaration order wins");
    is_int(match("DELETE", "/users/7"), WEB_MATCH_OK, "DELETE");
    is_int(m.handler, 3, "the method's own route");
    is_int(match("GET", "/users/a%2Fb"), WEB_MATCH_OK, "an encoded slash stays one segment");
    is_str(param("id"), "a%2Fb", "captures are raw");
    is_int(match("GET", "/users/"), WEB_MATCH_NONE, "an empty segment is no :param");
    is_int(match("GET", "/users"), WEB_MATCH_NONE, "too few segments");
    is_int(match("GET", "/users/1/posts"), WEB_MATCH_NONE, "a partial pattern");
    is_int(match("GET", "/users/1/posts/9"), WEB_MATCH_OK, "two captures");
    is_str(param("id"), "1", "first capture");
    is_str(param("post"), "9", "second capture");
    is_int(m.nparams, 2, "two captures exactly");
    is_int(match("GET", "/users/1/posts/9/x"), WEB_MATCH_NONE, "too many segments");
    is_int(match("GET", "/static/css/site.css"), WEB_MATCH_OK, "*rest");
    is_str(param("path"), "css/site.css", "the rest with its slashes");
    is_int(match("GET", "/static/"), WEB_MATCH_OK, "*rest empty after a slash");
    is_str(param("path"), "", "empty rest");
    is_int(match("GET", "/static"), WEB_MATCH_OK, "*rest with no slash");
    is_str(param("path"), "", "empty rest again");
    is_int(match("GET", "/staticx"), WEB_MATCH_NONE, "a longer literal is no match");
    is_int(match("PATCH", "/any"), WEB_MATCH_OK, "any method");
    is_int(match("OPTIONS", "/any"), WEB_MATCH_OK, "any method, OPTIONS");
    is_int(match("BREW", "/any"), WEB_MATCH_OK, "any method, an unknown one");
    is_int(match("HEAD", "/users/5"), WEB_MATCH_OK, "HEAD by a GET route");
    is_int(m.handler, 2, "the GET route");
    is_int(match("HEAD", "/head-only"), WEB_MATCH_OK, "HEAD's own route");
    is_int(m.handler, 8, "before the GET route");

    is_int(match("POST", "/users/5"), WEB_MATCH_METHOD, "405");
    char a[96];
    web_router_allow(allow, a, sizeof a);
    is_str(a, "GET, HEAD, PUT, DELETE", "Allow lists every route of the path");
    is_int(match("GET", "/only-post"), WEB_MATCH_METHOD, "405 for GET");
    web_router_allow(allow, a, sizeof a);
    is_str(a, "POST", "Allow: POST");
    is_int(match("GET", "/nowhere"), WEB_MATCH_NONE, "404");
    is_int(match("GET", ""), WEB_MATCH_NONE, "an empty path");
    is_int(match("GET", "users/5"), WEB_MATCH_NONE, "no leading slash");

    /* refused patterns */
    ok(web_router_check("users", err, sizeof err) < 0 && strstr(err, "must start with '/'"),
       "no leading slash (%s)", err);
    ok(web_router_check("/a/*rest/b", err, sizeof err) < 0 && strstr(err, "last segment"),
       "*rest in the middle (%s)", err);
    ok(web_router_check("/a/:", err, sizeof err) < 0 && strstr(err, "bad name"),
       "a capture without a name (%s)", err);
    ok(web_router_check("/a/:1x", err, sizeof err) < 0, "a name starting with a digit");
    ok(web_router_check("/a/:id/:id", err, sizeof err) < 0 && strstr(err, "twice"),
       "a name twice (%s)", err);
    ok(web_router_check("/a b", err, sizeof err) < 0, "a space");
    ok(web_router_check("/a?b", err, sizeof err) < 0, "a query");
    ok(web_router_check("", err, sizeof err) < 0, "empty");
    char longp[2048];
    memset(longp, 'a', sizeof longp - 1);
    longp[0] = '/';
    longp[sizeof longp - 1] = 0;
    ok(web_router_check(longp, err, sizeof err) < 0, "too long");
    char many[512] = "";
    for (int i = 0; i < 70; i++)
        strcat(many, "/a");
    ok(web_router_check(many, err, sizeof err) < 0 && strstr(err, "segments"),
       "too many segments (%s)", err);
    is_int(web_router_check("/a/:x_1/*rest", err, sizeof err), 0, "a good one");
    is_str(web_router_pattern(&r, 1), "/users/:id", "patterns are kept");
    is_int(web_router_handler(&r, 5), 6, "handlers are kept");

    web_router_free(&r);
    return tap_done();
}

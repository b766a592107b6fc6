/* lb_lua: Lua pick policies -- what they see, what they may return, and
 * how their failures are reported for the caller's fallback. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "http_parse.h"
#include "lb.h"
#include "tap.h"

static struct lb_target tg[3];
static struct lb_target *tp[3];
static char dir[] = "/tmp/test_lb_lua.XXXXXX";

static const char *policy(const char *name, const char *src)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(src, f);
    fclose(f);
    return path;
}

static struct lb_lua *load(const char *name, const char *src, char *err, size_t errlen)
{
    return lb_lua_new(policy(name, src), tp, 3, NULL, err, errlen);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    static const char *names[] = {"web1", "web2", "canary"};
    for (int i = 0; i < 3; i++) {
        tg[i] = (struct lb_target){.name = names[i], .addr = "127.0.0.1:1", .index = i,
                                   .weight = 1, .eff_weight = LB_EFF_SCALE, .usable = 1,
                                   .healthy = 1};
        tp[i] = &tg[i];
    }
    struct http_hdr hdrs[8];
    struct http_msg m = {.hdrs = hdrs, .max_hdrs = 8};
    const char *raw = "POST /api/x?y=1 HTTP/1.1\r\nHost: a\r\nX-Canary: 1\r\nX-Canary: 2\r\n\r\n";
    int status;
    ok(http_parse_request(raw, strlen(raw), &(struct http_limits){256, 1024, 8}, &m, &status) > 0,
       "request parsed");
    struct lb_req req = {.msg = &m, .client = "10.1.2.3:5555"};
    char err[256];

    struct lb_lua *p = load("sees.lua",
                            "local M = {}\n"
                            "function M.pick(req, bs)\n"
                            "  assert(req.method == 'POST' and req.path == '/api/x?y=1')\n"
                            "  assert(req.client == '10.1.2.3')\n"
                            "  assert(req.headers['x-canary'] == '1, 2' and req.headers.host == 'a')\n"
                            "  assert(#bs == 3 and bs[3].name == 'canary' and bs[2].active == 4)\n"
                            "  assert(bs[1].healthy and bs[1].weight == 1 and bs[1].ewma_ms == 2.5)\n"
                            "  return bs[3]\n"
                            "end\nreturn M\n",
                            err, sizeof err);
    ok(p != NULL, "policy loads");
    tg[1].active = 4;
    tg[0].ewma_ms = 2.5;
    struct lb_target *t = lb_lua_pick(p, &req, err, sizeof err);
    ok(t == &tg[2], "returned table maps back to its target (%s)", t ? "" : err);
    tg[2].skip = 1;
    t = lb_lua_pick(p, &req, err, sizeof err);
    ok(t == NULL && strstr(err, ".lua:"), "assertion error reported with file:line (%s)", err);
    tg[2].skip = 0;
    lb_lua_free(p);

    p = load("idx.lua",
             "local M = {}\nlocal n = 0\n"
             "function M.pick(req, bs) n = n % #bs + 1; return n end\nreturn M\n",
             err, sizeof err);
    int seen[3] = {0};
    for (int i = 0; i < 6; i++) {
        t = lb_lua_pick(p, &req, err, sizeof err);
        if (t)
            seen[t->index]++;
    }
    ok(seen[0] == 2 && seen[1] == 2 && seen[2] == 2, "index returns and module state");
    tg[1].usable = 0; /* the list shrinks to the candidates */
    for (int i = 0; i < 4; i++) {
        t = lb_lua_pick(p, &req, err, sizeof err);
        ok(t && t != &tg[1], "unusable backend not offered");
    }
    tg[1].usable = 1;
    lb_lua_free(p);

    static const struct {
        const char *src, *msg;
    } bad[] = {
        {"function M.pick() return nil end", "returned nil"},
        {"function M.pick() return 7 end", "index 7"},
        {"function M.pick() return {} end", "not a backend"},
        {"function M.pick() return 'web1' end", "returned a string"},
        {"function M.pick() error('boom') end", "boom"},
        {"function M.pick() while true do end end", "instruction budget"},
        {"function M.pick(r, bs) table.remove(bs); return nil end", "returned nil"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char src[256];
        snprintf(src, sizeof src, "local M = {}\n%s\nreturn M\n", bad[i].src);
        p = load("bad.lua", src, err, sizeof err);
        t = p ? lb_lua_pick(p, &req, err, sizeof err) : NULL;
        /* a loop meets the instruction budget or, on a loaded machine (or
         * a sanitizer build), the pick's short wall clock first */
        int budget = strcmp(bad[i].msg, "instruction budget") == 0;
#define MET(e) (strstr(e, bad[i].msg) || (budget && strstr(e, "time limit")))
        ok(p && !t && MET(err), "bad pick %zu: %s", i, err);
        /* a second call still works the same way (state not corrupted) */
        t = p ? lb_lua_pick(p, &req, err, sizeof err) : NULL;
        ok(!t && MET(err), "bad pick %zu again", i);
#undef MET
        lb_lua_free(p);
    }

    p = load("notable.lua", "return 1\n", err, sizeof err);
    ok(!p && strstr(err, "must return a table"), "module must be a table: %s", err);
    p = load("nopick.lua", "return {}\n", err, sizeof err);
    ok(!p && strstr(err, "no pick"), "module needs pick: %s", err);
    p = load("refuse.lua",
             "local M = {}\nfunction M.pick() end\n"
             "function M.validate() return false, 'needs 2 backends' end\nreturn M\n",
             err, sizeof err);
    ok(!p && strstr(err, "needs 2 backends"), "validate() can refuse: %s", err);
    p = load("syntax.lua", "local M = {\n", err, sizeof err);
    ok(!p && strstr(err, "syntax.lua:"), "syntax error with file:line: %s", err);

    /* migrate(old_state): the count of picks (kept in M.state) decides the
     * backend, 1-based over the three, so the pick shows the state */
    static const char counting[] = "function M.pick(req, bs)\n"
                                   "  M.state.n = M.state.n + 1\n"
                                   "  return bs[(M.state.n - 1) % 3 + 1]\n"
                                   "end\nreturn M\n";
    char src[512];
    snprintf(src, sizeof src, "local M = { state = { n = 0 } }\n%s", counting);
    struct lb_lua *v1 = load("v1.lua", src, err, sizeof err);
    ok(v1 && !lb_lua_migrated(v1), "v1 loads, nothing to migrate");
    ok(v1 && lb_lua_pick(v1, &req, err, sizeof err) == tp[0], "v1 pick 1: web1");
    ok(v1 && lb_lua_pick(v1, &req, err, sizeof err) == tp[1], "v1 pick 2: web2");
    snprintf(src, sizeof src,
             "local M = { state = { n = 0 } }\nfunction M.migrate(old) return old end\n%s",
             counting);
    struct lb_lua *v2 = lb_lua_new(policy("v2.lua", src), tp, 3, v1, err, sizeof err);
    ok(v2 && lb_lua_migrated(v2), "v2 takes over v1's state");
    ok(v2 && lb_lua_pick(v2, &req, err, sizeof err) == tp[2], "v2 pick 3: canary (count went on)");
    snprintf(src, sizeof src, "local M = { state = { n = 0 } }\n%s", counting);
    struct lb_lua *v3 = lb_lua_new(policy("v3.lua", src), tp, 3, v2, err, sizeof err);
    ok(v3 && !lb_lua_migrated(v3), "v3 without migrate");
    ok(v3 && lb_lua_pick(v3, &req, err, sizeof err) == tp[0], "v3 starts fresh: web1");
    snprintf(src, sizeof src,
             "local M = {}\nfunction M.migrate(old)\n  return old.missing.field\nend\n%s",
             counting);
    p = lb_lua_new(policy("badmig.lua", src), tp, 3, v2, err, sizeof err);
    ok(!p && strstr(err, "badmig.lua:3:"), "a failing migrate refuses the load: %s", err);
    ok(v2 && lb_lua_pick(v2, &req, err, sizeof err) == tp[0], "v2 goes on: pick 4 is web1");
    lb_lua_free(v1);
    lb_lua_free(v2);
    lb_lua_free(v3);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    return tap_done();
}

/* lb_lua_ops: the Lua pick as one policy among the others -- its fallback
 * answers when the module fails (budget bypass attempts included), the
 * failure is reported with file:line, whether to hash comes from the ops,
 * and a reload's migrate reads the running policy through lb_lua_of. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lb.h"
#include "tap.h"
#include "util.h"

static struct lb_target tg[3];
static struct lb_target *tp[3];
static char dir[] = "/tmp/test_lb_lua_ops.XXXXXX";
static char last_why[512];
static int fallbacks;

static const char *policy(const char *name, const char *src)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(src, f);
    fclose(f);
    return path;
}

static void on_fallback(void *ud, const char *why)
{
    (void)ud;
    fallbacks++;
    snprintf(last_why, sizeof last_why, "%s", why);
}

static int init_lua(struct lb *lb, const char *name, const char *src, const struct lb_ops *fb,
                    const struct lb *prev, char *err, size_t errlen)
{
    struct lb_lua_conf conf = {.path = policy(name, src), .fallback = fb, .prev = prev,
                               .on_fallback = on_fallback};
    return lb_init_conf(lb, &lb_lua_ops, &conf, tp, 3, err, errlen);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    static const char *names[] = {"web1", "web2", "web3"};
    for (int i = 0; i < 3; i++) {
        tg[i] = (struct lb_target){.name = names[i], .addr = "127.0.0.1:1", .index = i,
                                   .weight = 1, .eff_weight = LB_EFF_SCALE, .usable = 1,
                                   .healthy = 1};
        tp[i] = &tg[i];
    }
    struct lb_req req = {.client = "10.0.0.1:1"};
    char err[512];
    struct lb lb;

    ok(init_lua(&lb, "third.lua", "return { pick = function(r, b) return b[3] end }\n",
                &lb_round_robin_ops, NULL, err, sizeof err) == 0,
       "a Lua policy is set up like a built-in");
    ok(lb.ops->pick(&lb, &req) == &tg[2] && fallbacks == 0, "its pick answers");
    ok(lb_lua_of(&lb) != NULL && !lb.wants_hash, "it is a Lua policy; round robin needs no hash");
    lb_free(&lb);

    ok(init_lua(&lb, "hash.lua", "return { pick = function() end }\n", &lb_chash_ops, NULL, err,
                sizeof err) == 0 &&
           lb.wants_hash,
       "with a chash fallback the request is hashed");
    lb_free(&lb);
    struct lb plain;
    lb_init(&plain, &lb_chash_ops, tp, 3, err, sizeof err);
    ok(plain.wants_hash && lb_lua_of(&plain) == NULL, "chash itself asks for the hash");
    lb_free(&plain);

    static const struct {
        const char *name, *src, *msg;
    } evil[] = {
        {"coro.lua",
         "local M = {}\nlocal co = coroutine.wrap(function() while true do end end)\n"
         "function M.pick(r, b)\n  co()\n  return b[1]\nend\nreturn M\n",
         "budget"},
        {"hook.lua",
         "local M = {}\nfunction M.pick(r, b)\n  debug.sethook()\n  while true do end\nend\n"
         "return M\n",
         "debug"},
        {"pattern.lua",
         "local M = {}\nfunction M.pick(r, b)\n"
         "  return ('a'):rep(40):find(('a*'):rep(12) .. 'b')\nend\nreturn M\n",
         "budget"},
        {"gc.lua",
         "local M = {}\nfunction M.pick(r, b)\n  collectgarbage('stop')\n  return b[1]\nend\n"
         "return M\n",
         "collectgarbage"},
        {"hog.lua",
         "local M = {}\nlocal keep = {}\nfunction M.pick(r, b)\n"
         "  keep[#keep + 1] = ('x'):rep(16 * 1024 * 1024)\n  return b[1]\nend\nreturn M\n",
         "memory limit"},
    };
    for (size_t i = 0; i < sizeof evil / sizeof evil[0]; i++) {
        fallbacks = 0;
        last_why[0] = 0;
        if (init_lua(&lb, evil[i].name, evil[i].src, &lb_round_robin_ops, NULL, err,
                     sizeof err) < 0) {
            ok(0, "%s loads: %s", evil[i].name, err);
            continue;
        }
        int64_t t0 = util_mono_us();
        int answered = 0;
        char first_why[512] = "";
        for (int k = 0; k < 8; k++) {
            answered += lb.ops->pick(&lb, &req) != NULL;
            if (!first_why[0] && last_why[0])
                snprintf(first_why, sizeof first_why, "%s", last_why);
        }
        /* the instruction budget or, on a slow machine, the wall clock
         * stops a loop first: either is the bypass stopped */
        int why_ok = strstr(first_why, evil[i].msg) ||
                     (strcmp(evil[i].msg, "budget") == 0 && strstr(first_why, "time limit"));
        ok(answered == 8 && fallbacks > 0 && strstr(first_why, evil[i].name) && why_ok,
           "%s: every pick answered, the fallback used, the reason logged: %s", evil[i].name,
           first_why);
        ok(util_mono_us() - t0 < 5000000, "%s: in bounded time", evil[i].name);
        lb_free(&lb);
    }

    /* migrate reads the running policy's state through the ops */
    struct lb v1, v2;
    ok(init_lua(&v1, "v1.lua", "return { state = { n = 7 }, pick = function(r, b) return 1 end }\n",
                &lb_round_robin_ops, NULL, err, sizeof err) == 0,
       "v1 loads");
    ok(init_lua(&v2, "v2.lua",
                "local M = {}\nfunction M.migrate(old) return { n = old.n + 1 } end\n"
                "function M.pick(r, b) return M.state.n end\nreturn M\n",
                &lb_round_robin_ops, &v1, err, sizeof err) == 0 &&
           lb_lua_migrated(lb_lua_of(&v2)),
       "v2 takes over v1's state: %s", err);
    fallbacks = 0;
    ok(v2.ops->pick(&v2, &req) == NULL || fallbacks == 1, "index 8 is not a backend");
    ok(strstr(last_why, "index 8"), "the migrated state decided: %s", last_why);
    lb_free(&v1);
    lb_free(&v2);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
    return tap_done();
}

/* evict's chooser seam: evict_choose asks whatever chooser was set through
 * struct evict_chooser_ops (the Lua one is one of them), falls back to the
 * built-in when it fails, and a Lua chooser that runs into its budget
 * inside C (a backtracking pattern) fails quickly, then rests. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "evict.h"
#include "evict_lua.h"
#include "store.h"
#include "tap.h"
#include "util.h"

static int calls, freed, answer;

static int fake_choose(struct evict_lua *el, const struct evict *ev, struct store *s,
                       struct store_entry **cands, int n, int64_t now_ms, char *err,
                       size_t errlen)
{
    (void)el, (void)ev, (void)s, (void)cands, (void)now_ms;
    calls++;
    if (answer < 0 || answer >= n) {
        snprintf(err, errlen, "fake.lua:1: no answer");
        return -1;
    }
    return answer;
}

static const char *fake_name(const struct evict_lua *el)
{
    (void)el;
    return "fake.lua";
}

static void fake_free(struct evict_lua *el)
{
    (void)el;
    freed++;
}

static const struct evict_chooser_ops fake_ops = {fake_choose, fake_name, fake_free};

int main(void)
{
    const int64_t now = 1000000;
    struct store s;
    struct evict ev;
    store_init(&s, 7, now);
    evict_init(&ev);
    for (int i = 0; i < 50; i++) {
        char k[16];
        int n = snprintf(k, sizeof k, "k%d", i);
        store_insert(&s, k, (size_t)n, "v", 1, 0, now + i);
    }
    int dummy;
    evict_set_chooser(&ev, &s, &fake_ops, (struct evict_lua *)&dummy, now);
    ok(ev.policy == EVICT_LUA, "a chooser set through ops makes the policy lua");
    answer = 0;
    ok(evict_choose(&ev, &s, now) != NULL && calls == 1, "evict_choose asks it");
    answer = -1;
    ok(evict_choose(&ev, &s, now) != NULL && ev.lua_errors == 1,
       "its failure falls back to the built-in");
    evict_set_policy(&ev, &s, EVICT_ALLKEYS_LRU, now);
    is_int(freed, 1, "switching policy frees the chooser through its ops");

    char dir[] = "/tmp/test_evict_chooser.XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    char path[256];
    snprintf(path, sizeof path, "%s/bad.lua", dir);
    FILE *f = fopen(path, "w");
    fputs("local M = {}\nfunction M.choose(c)\n"
          "  return ('a'):rep(40):find(('a*'):rep(12) .. 'b')\nend\nreturn M\n",
          f);
    fclose(f);
    char err[512];
    struct evict_lua *el = evict_lua_new(path, NULL, err, sizeof err);
    ok(el != NULL, "a chooser with a backtracking pattern loads");
    struct store_entry *cands[4];
    int n = 0;
    for (int i = 0; i < 4; i++) {
        char k[16];
        int kl = snprintf(k, sizeof k, "k%d", i);
        cands[n++] = store_find(&s, k, (size_t)kl);
    }
    int64_t t0 = util_mono_us();
    int rc = el ? evict_lua_choose(el, &ev, &s, cands, n, now, err, sizeof err) : 0;
    ok(rc < 0 && strstr(err, "bad.lua:3: ") && (strstr(err, "budget") || strstr(err, "time limit")),
       "its choose is stopped with file:line: %s", err);
    ok(util_mono_us() - t0 < 3000000, "quickly");
    rc = el ? evict_lua_choose(el, &ev, &s, cands, n, now + 10, err, sizeof err) : 0;
    ok(rc < 0 && strstr(err, "resting"), "then it rests: %s", err);
    evict_set_lua(&ev, &s, el, now);
    ok(evict_choose(&ev, &s, now + 20) != NULL, "and the fallback chooses meanwhile");
    evict_free(&ev);
    store_free(&s);
    unlink(path);
    rmdir(dir);
    return tap_done();
}

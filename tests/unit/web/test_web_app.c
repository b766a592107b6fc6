/* web_app: loading an app file -- its routes in declaration order, and the
 * load errors with the app file's file:line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "web_node.h"

static char dir[] = "/tmp/test_web_app.XXXXXX";

static const char *write_app(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

int main(void)
{
    char err[1024];
    if (!mkdtemp(dir))
        return 1;
    const char *p = write_app("ok.lua",
                              "local app = strata.app()\n"
                              "app:get('/a', function() end)\n"
                              "   :post('/a/:id', function() end)\n"
                              "app:any('/files/*rest', function() end)\n"
                              "assert(json.encode({1}) == '[1]')\n"
                              "assert(require('cjson') == json)\n"
                              "return app\n");
    struct web_app *a = web_app_load(p, 16 << 20, err, sizeof err);
    ok(a != NULL, "a good app loads (%s)", a ? "" : err);
    if (a) {
        is_int(a->router.n, 3, "three routes");
        is_str(web_router_pattern(&a->router, 1), "/a/:id", "chained routes in order");
        struct web_match m;
        unsigned allow;
        is_int(web_router_match(&a->router, WEB_PUT, "/files/x", 8, &m, &allow), WEB_MATCH_OK,
               "any matches PUT");
        web_app_free(a);
    }

    struct {
        const char *text, *want;
    } bad[] = {
        {"local app = strata.app()\napp:get('x', function() end)\nreturn app\n",
         "bad.lua:2: route pattern 'x' must start with '/'"},
        {"local app = strata.app()\napp:get('/x', 'not a function')\nreturn app\n",
         "bad.lua:2: bad argument #2 to 'get'"},
        {"local app = strata.app()\napp.get('/x', function() end)\nreturn app\n",
         "bad.lua:2: call routes with a colon"},
        {"return { }\n", "bad.lua:1: the app file must return the app"},
        {"local app = strata.app()\nwhile true do end\n", "instruction budget"},
        {"local t = {}\nfor i = 1, 1e9 do t[i] = ('x'):rep(100) .. i end\n", "memory limit"},
        {"local x = \n", "bad.lua:2:"},
        {"io.open('/etc/passwd')\n", "bad.lua:1: attempt to index a nil value (global 'io')"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        p = write_app("bad.lua", bad[i].text);
        a = web_app_load(p, 8 << 20, err, sizeof err);
        /* loading runs under a fixed 2 s wall clock too, which a loaded
         * machine (or a sanitizer build) may reach before the budget */
        int limited = strcmp(bad[i].want, "instruction budget") == 0 && strstr(err, "time limit");
        ok(a == NULL && (strstr(err, bad[i].want) || limited), "refused: %s (%s)", bad[i].want,
           err);
        web_app_free(a);
    }
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        return 1;
    return tap_done();
}

/* admin: the token comparison, what counts as loopback, and the refusal
 * to serve beyond loopback without a token. */
#include <ev.h>
#include <string.h>

#include "admin.h"
#include "tap.h"

static const struct admin_route routes[] = {{NULL, NULL, NULL}};

int main(void)
{
    const char *tok = "0123456789abcdef";
    ok(admin_token_equal(tok, 16, tok), "the token matches itself");
    ok(!admin_token_equal("0123456789abcdeX", 16, tok), "one byte off");
    ok(!admin_token_equal(tok, 15, tok), "a prefix is not the token");
    ok(!admin_token_equal("0123456789abcdef0", 17, tok), "a longer guess is not the token");
    ok(!admin_token_equal("", 0, tok), "empty is not the token");
    ok(!admin_token_equal("", 0, ""), "no token never matches");

    is_int(admin_addr_is_loopback("127.0.0.1:9100"), 1, "127.0.0.1");
    is_int(admin_addr_is_loopback("127.3.4.5:9100"), 1, "127/8");
    is_int(admin_addr_is_loopback("[::1]:9100"), 1, "::1");
    is_int(admin_addr_is_loopback(":9100"), 1, "no host is loopback");
    is_int(admin_addr_is_loopback("0.0.0.0:9100"), 0, "the wildcard is not loopback");
    is_int(admin_addr_is_loopback("10.0.0.1:9100"), 0, "a private address is not loopback");
    is_int(admin_addr_is_loopback("[::]:9100"), 0, "the v6 wildcard is not loopback");
    is_int(admin_addr_is_loopback("nonsense"), -1, "not an address");

    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    char err[256] = "";
    struct admin_opts o = {.node = "n1", .topology = "/t.lua"};
    struct admin *a = admin_start(loop, "0.0.0.0:0", &o, routes, NULL, err, sizeof err);
    ok(a == NULL && strstr(err, "not a loopback address"), "no token: the wildcard is refused");
    o.token = "0123456789abcdef";
    a = admin_start(loop, "0.0.0.0:0", &o, routes, NULL, err, sizeof err);
    ok(a != NULL, "with a token it serves there");
    ok(a && !admin_auth_differs(a, "0123456789abcdef", ADMIN_AUTH_WRITES), "token and mode kept");
    ok(a && admin_auth_differs(a, "0123456789abcdeg", ADMIN_AUTH_WRITES), "another token differs");
    ok(a && admin_auth_differs(a, "0123456789abcdef", ADMIN_AUTH_ALL), "another mode differs");
    admin_stop(a);
    o.token = NULL;
    a = admin_start(loop, "127.0.0.1:0", &o, routes, NULL, err, sizeof err);
    ok(a != NULL, "loopback without a token is fine");
    admin_stop(a);
    ev_run(loop, EVRUN_NOWAIT);
    ev_loop_destroy(loop);
    return tap_done();
}

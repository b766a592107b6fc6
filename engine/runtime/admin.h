/* admin: the admin endpoint every node and the supervisor serve on their
 * admin address (loopback by default): one router on the HTTP connection
 * layer (engine/http), so nodes and the supervisor parse, bound and answer
 * requests the same way, and `/reload` answers in one JSON shape wherever
 * it is asked (admin_reload_json, docs/operations.md).
 *
 * The owner gives a table of routes (path, methods, handler). The router
 * answers 404 for an unknown path and 405 (with Allow) for a known path
 * asked with another method; GET routes also answer HEAD. Connections may
 * be kept alive (a scraper's); requests are bounded (head 16 KiB, body
 * 64 KiB, 10 s to arrive) by the layer, which answers 4xx and closes.
 *
 * Authentication (docs/security.md, "Admin endpoints"): with a token, a
 * POST (a route that changes something) needs `Authorization: Bearer
 * TOKEN`, and so does every route when auth is "all"; a missing or wrong
 * token is a 401 with `WWW-Authenticate: Bearer`. The token is compared in
 * constant time and never logged or echoed. An address beyond loopback
 * without a token is refused at start.
 *
 * Identity: every answer names the endpoint's owner (`X-Strata-Node`,
 * `X-Strata-Topology`). A request that says whom it expects
 * (`X-Strata-Expect-Node`, `X-Strata-Expect-Topology`) and reached someone
 * else gets a 409 naming both, before any handler runs: a command line
 * holding a stale address never reloads the wrong node. */
#ifndef STRATA_ADMIN_H
#define STRATA_ADMIN_H

#include <ev.h>
#include <stddef.h>

#include "buf.h"

struct admin_request {
    char method[16];
    char path[256];    /* without the query string */
    char query[256];
    const char *body;
    size_t body_len;
};

struct admin_response {
    int status;               /* 200 unless set */
    const char *content_type; /* "application/json" unless set */
    struct buf body;
};

typedef void (*admin_handler_fn)(void *ud, const struct admin_request *req,
                                 struct admin_response *resp);

struct admin_route {
    const char *path;    /* exact match */
    const char *method;  /* "GET" (also answers HEAD) or "POST" */
    admin_handler_fn fn;
};

struct admin;

enum admin_auth_mode {
    ADMIN_AUTH_WRITES = 0, /* with a token: POST routes need it */
    ADMIN_AUTH_ALL,        /* with a token: every route needs it */
};

/* Who serves the endpoint, and how it is guarded. */
struct admin_opts {
    const char *node;     /* "cache1", or "supervisor" */
    const char *topology; /* the topology file's absolute path */
    const char *token;    /* NULL or "": no token */
    int auth;             /* enum admin_auth_mode */
};

/* Serves `routes` (ended by a {NULL} entry; the table must outlive the
 * endpoint) on addr. NULL with a message in err (also for an address
 * beyond loopback without a token). */
struct admin *admin_start(struct ev_loop *loop, const char *addr, const struct admin_opts *opts,
                          const struct admin_route *routes, void *ud, char *err, size_t errlen);
/* A new token and mode (a reload changed them). */
void admin_set_auth(struct admin *a, const char *token, int auth);
/* 1 when token or auth differ from the endpoint's. */
int admin_auth_differs(const struct admin *a, const char *token, int auth);
/* 1 when addr ("host:port") is a loopback address (127.0.0.0/8, ::1,
 * localhost), 0 when not, -1 when it does not parse. */
int admin_addr_is_loopback(const char *addr);
/* Constant-time comparison of a presented credential with the token: the
 * time taken depends only on the lengths. 1 when equal. */
int admin_token_equal(const char *given, size_t given_len, const char *token);
void admin_stop(struct admin *a);
const char *admin_addr(const struct admin *a);

/* 1 when the query string has name=1/true/yes (or bare name). */
int admin_query_flag(const struct admin_request *req, const char *name);

/* The answer to POST /reload, from a node or the supervisor alike:
 *   {"ok":true,"node":"c1","topology":"/abs/topo.lua","dry_run":false,
 *    "generation":2,"reload_ms":0.41,
 *    "changes":["..."],"error":null}
 * `changes` holds one change per line (newline-separated, may be empty);
 * `error` is NULL on success. */
struct admin_reload {
    const char *node;
    const char *topology;
    int ok;
    int dry_run;
    unsigned generation;
    double reload_ms;
    const char *changes;
    const char *error;
};

/* Writes the reload answer's JSON (with a final newline) and sets its
 * status: 200, or 422 when the reload was refused. */
void admin_reload_answer(struct admin_response *resp, const struct admin_reload *r);

#endif

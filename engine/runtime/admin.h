/* admin: the small HTTP/1.1 endpoint every node (and the supervisor) serves
 * on its admin address, loopback by default: GET /status (JSON),
 * GET /metrics (Prometheus text), POST /reload, GET /healthz.
 *
 * One request per connection (responses carry Connection: close): admin
 * traffic is a scrape every few seconds, not a hot path, and this keeps
 * the parser state trivial. Requests are bounded (head 16 KiB, body 64 KiB,
 * 10 s to arrive); anything else gets a 4xx and the connection ends. */
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
    int status;
    const char *content_type;
    struct buf body;
};

/* Fills resp (status defaults to 200, JSON). */
typedef void (*admin_handler_fn)(void *ud, const struct admin_request *req,
                                 struct admin_response *resp);

struct admin;

struct admin *admin_start(struct ev_loop *loop, const char *addr, admin_handler_fn handler,
                          void *ud, char *err, size_t errlen);
void admin_stop(struct admin *a);
const char *admin_addr(const struct admin *a);

/* 1 when the query string has name=1/true/yes (or bare name). */
int admin_query_flag(const struct admin_request *req, const char *name);

#endif

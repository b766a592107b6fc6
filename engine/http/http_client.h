/* http_client: the client side of the HTTP/1.1 connection layer.
 *
 * http_resp_reader turns the bytes of one response into its status,
 * headers and body: the head with http_parse's response parser (the same
 * strictness as the balancer's: CRLF only, no folding, one Content-Length,
 * never Content-Length with Transfer-Encoding), the body by Content-Length,
 * chunked (de-chunked) or up to the close. Interim 1xx answers are skipped.
 * It does no I/O, so the non-blocking client below and the command line's
 * blocking one (engine/cli/httpc) read responses the same way.
 *
 * http_call runs one request on a node's loop (health checks): connect,
 * send, read the answer, all under one deadline, then one callback. The
 * connection is not reused (Connection: close). */
#ifndef STRATA_HTTP_CLIENT_H
#define STRATA_HTTP_CLIENT_H

#include <ev.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "buf.h"
#include "http_parse.h"

#define HTTP_CLIENT_MAX_HEADERS 64

enum { HRR_HEAD, HRR_BODY, HRR_DONE, HRR_ERROR };

struct http_resp_reader {
    struct http_limits lim;
    size_t max_body;
    int head_request;  /* the request was HEAD: no body whatever the head says */
    int head_only;     /* done once the head is in (the body is not wanted) */
    int state;         /* HRR_* */
    struct http_msg msg; /* valid from HRR_BODY on; points into `head` */
    struct http_hdr hdrs[HTTP_CLIENT_MAX_HEADERS];
    struct buf head;
    struct buf body;
    struct http_body_reader br;
    char error[128];
};

void http_resp_reader_init(struct http_resp_reader *rd, const struct http_limits *lim,
                           size_t max_body, int head_request);
void http_resp_reader_free(struct http_resp_reader *rd);
/* Feeds p[0..n). Returns the bytes that belong to the response (less than n
 * once it is complete), or -1 with the reason in rd->error. rd->state is
 * HRR_DONE once the whole response is in. */
ssize_t http_resp_reader_feed(struct http_resp_reader *rd, const char *p, size_t n);
/* The server closed: 0 when that completes the response, -1 when it was
 * cut short (rd->error). */
int http_resp_reader_eof(struct http_resp_reader *rd);

/* --- one request on the loop ------------------------------------------------ */

struct http_call_opts {
    const char *method;   /* "GET" */
    const char *host;     /* the Host header */
    const char *target;   /* "/healthz" */
    const char *headers;  /* extra header lines, each ending in CRLF, or NULL */
    const void *body;
    size_t body_len;
    double timeout;       /* connect + send + answer, seconds */
    size_t max_body;      /* a longer answer is an error */
    int head_only;        /* done at the end of the answer's head */
};

struct http_call_result {
    const char *error;    /* NULL when an answer arrived */
    int status;           /* its status code (0 on error) */
    const struct http_msg *msg; /* its head (headers), NULL on error */
    const char *body;
    size_t body_len;
};

struct http_call;
typedef void (*http_call_fn)(void *ud, const struct http_call_result *res);

/* Starts a request; `done` runs exactly once, from the loop, unless the call
 * is cancelled first. NULL when no socket could be made. */
struct http_call *http_call_start(struct ev_loop *loop, const struct sockaddr *sa, socklen_t salen,
                                  const struct http_call_opts *o, http_call_fn done, void *ud);
/* Drops a call in progress: `done` will not run. Not from inside `done`. */
void http_call_cancel(struct http_call *call);

#endif

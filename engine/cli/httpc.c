#include "httpc.h"

#include <ev.h>
#include <stdio.h>
#include <string.h>

#include "http_client.h"
#include "util.h"

#define HTTPC_MAX_RESPONSE (8 * 1024 * 1024)

struct httpc_wait {
    int done;
    int status;
    struct buf *body;
    struct buf *headers;
    char error[256];
};

static void on_done(void *ud, const struct http_call_result *r)
{
    struct httpc_wait *w = ud;
    w->done = 1;
    if (r->error) {
        snprintf(w->error, sizeof w->error, "%s", r->error);
        return;
    }
    w->status = r->status;
    buf_append(w->body, r->body, r->body_len);
    if (w->headers && r->msg)
        for (int i = 0; i < r->msg->nhdrs; i++) {
            const struct http_hdr *h = &r->msg->hdrs[i];
            buf_append(w->headers, h->name, h->name_len);
            buf_append(w->headers, ": ", 2);
            buf_append(w->headers, h->value, h->value_len);
            buf_append(w->headers, "\n", 1);
        }
}

int httpc_request(const char *method, const char *addr, const char *path, const char *headers,
                  const char *body, size_t body_len, double timeout_s, struct buf *resp_headers,
                  struct buf *resp_body, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    if (util_parse_addr(addr, &ss, &sl, err, errlen) < 0)
        return -1;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    if (!loop) {
        snprintf(err, errlen, "%s: cannot create an event loop", addr);
        return -1;
    }
    struct httpc_wait w = {.body = resp_body, .headers = resp_headers};
    struct http_call_opts o = {.method = method, .host = addr, .target = path,
                               .headers = headers, .body = body,
                               .body_len = body_len, .timeout = timeout_s,
                               .max_body = HTTPC_MAX_RESPONSE};
    struct http_call *call = http_call_start(loop, (struct sockaddr *)&ss, sl, &o, on_done, &w);
    if (!call) {
        snprintf(err, errlen, "%s: cannot create a socket", addr);
        ev_loop_destroy(loop);
        return -1;
    }
    /* The call's watchers keep the loop running until the answer (or the
     * deadline) ends it; deferred frees run in the same loop. */
    while (!w.done)
        ev_run(loop, EVRUN_ONCE);
    ev_run(loop, 0);
    ev_loop_destroy(loop);
    if (w.error[0]) {
        snprintf(err, errlen, "%s: %s", addr, w.error);
        return -1;
    }
    return w.status;
}

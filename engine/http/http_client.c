#include "http_client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net.h"

/* --- the response reader ---------------------------------------------------- */

void http_resp_reader_init(struct http_resp_reader *rd, const struct http_limits *lim,
                           size_t max_body, int head_request)
{
    memset(rd, 0, sizeof *rd);
    rd->lim = *lim;
    if (rd->lim.max_headers > HTTP_CLIENT_MAX_HEADERS)
        rd->lim.max_headers = HTTP_CLIENT_MAX_HEADERS;
    rd->max_body = max_body;
    rd->head_request = head_request;
    rd->state = HRR_HEAD;
    rd->msg.hdrs = rd->hdrs;
    rd->msg.max_hdrs = HTTP_CLIENT_MAX_HEADERS;
    buf_init(&rd->head);
    buf_init(&rd->body);
}

void http_resp_reader_free(struct http_resp_reader *rd)
{
    buf_free(&rd->head);
    buf_free(&rd->body);
}

static ssize_t reader_fail(struct http_resp_reader *rd, const char *why)
{
    rd->state = HRR_ERROR;
    snprintf(rd->error, sizeof rd->error, "%s", why);
    return -1;
}

static void body_data(void *ud, const char *p, size_t n)
{
    struct http_resp_reader *rd = ud;
    if (buf_size(&rd->body) + n > rd->max_body) {
        rd->state = HRR_ERROR;
        snprintf(rd->error, sizeof rd->error, "response body too large");
        return;
    }
    if (buf_append(&rd->body, p, n) < 0) {
        rd->state = HRR_ERROR;
        snprintf(rd->error, sizeof rd->error, "out of memory");
    }
}

static ssize_t feed_body(struct http_resp_reader *rd, const char *p, size_t n)
{
    ssize_t used = http_body_reader_feed(&rd->br, p, n, body_data, rd);
    if (used < 0)
        return reader_fail(rd, "bad chunked framing in the response");
    if (rd->state == HRR_ERROR)
        return -1;
    if (rd->br.done)
        rd->state = HRR_DONE;
    return used;
}

ssize_t http_resp_reader_feed(struct http_resp_reader *rd, const char *p, size_t n)
{
    if (rd->state == HRR_ERROR)
        return -1;
    if (rd->state == HRR_DONE)
        return 0;
    if (rd->state == HRR_BODY)
        return feed_body(rd, p, n);
    /* The head may arrive in pieces: gather it, parse once it is whole. The
     * head ends inside p, so whatever follows it came with p. */
    if (buf_append(&rd->head, p, n) < 0)
        return reader_fail(rd, "out of memory");
    for (;;) {
        int status = 502;
        ssize_t h = http_parse_response(buf_head(&rd->head), buf_size(&rd->head), &rd->lim,
                                        &rd->msg, rd->head_request, &status);
        if (h == -2)
            return (ssize_t)n;
        if (h < 0)
            return reader_fail(rd, "malformed response head");
        if (rd->msg.status >= 100 && rd->msg.status < 200 && rd->msg.status != 101) {
            /* An interim answer (100 Continue): the real one follows. */
            buf_consume(&rd->head, (size_t)h);
            continue;
        }
        /* Keep exactly the head, so the parsed pointers stay put; the bytes
         * after it are the body's. */
        size_t extra = buf_size(&rd->head) - (size_t)h;
        const char *rest = buf_head(&rd->head) + h;
        rd->state = HRR_BODY;
        if (rd->head_only) {
            rd->state = HRR_DONE;
            rd->head.len -= extra;
            return (ssize_t)n;
        }
        if (rd->msg.body == HTTP_BODY_LENGTH && rd->msg.content_length > rd->max_body)
            return reader_fail(rd, "response body too large");
        http_body_reader_init(&rd->br, rd->msg.body, rd->msg.content_length, rd->lim.max_header_size);
        if (rd->br.done)
            rd->state = HRR_DONE;
        ssize_t used = extra ? feed_body(rd, rest, extra) : 0;
        if (used < 0)
            return -1;
        rd->head.len -= extra;
        return (ssize_t)n - (ssize_t)(extra - (size_t)used);
    }
}

int http_resp_reader_eof(struct http_resp_reader *rd)
{
    if (rd->state == HRR_DONE)
        return 0;
    if (rd->state == HRR_ERROR)
        return -1;
    if (rd->state == HRR_HEAD) {
        reader_fail(rd, buf_size(&rd->head) ? "connection closed inside the response head"
                                            : "connection closed before a response");
        return -1;
    }
    if (http_body_reader_eof(&rd->br) < 0) {
        reader_fail(rd, "connection closed inside the response body");
        return -1;
    }
    rd->state = HRR_DONE;
    return 0;
}

/* --- one request on the loop ------------------------------------------------ */

struct http_call {
    struct net_conn *c;
    http_call_fn done;
    void *ud;
    int finished;
    struct http_resp_reader rd;
};

static void call_finish(struct http_call *call, const char *error)
{
    if (call->finished)
        return;
    call->finished = 1;
    struct http_call_result res = {.error = error};
    if (!error) {
        res.status = call->rd.msg.status;
        res.msg = &call->rd.msg;
        res.body = buf_size(&call->rd.body) ? buf_head(&call->rd.body) : "";
        res.body_len = buf_size(&call->rd.body);
    }
    if (call->done)
        call->done(call->ud, &res);
}

static void call_read(struct net_conn *c)
{
    struct http_call *call = c->data;
    ssize_t used = http_resp_reader_feed(&call->rd, buf_head(&c->rbuf), buf_size(&c->rbuf));
    buf_consume(&c->rbuf, buf_size(&c->rbuf));
    if (used < 0) {
        call_finish(call, call->rd.error);
        net_conn_abort(c, call->rd.error);
    } else if (call->rd.state == HRR_DONE) {
        call_finish(call, NULL);
        net_conn_abort(c, "done");
    }
}

static void call_eof(struct net_conn *c)
{
    struct http_call *call = c->data;
    call_finish(call, http_resp_reader_eof(&call->rd) < 0 ? call->rd.error : NULL);
    net_conn_abort(c, "closed");
}

static void call_timeout(struct net_conn *c)
{
    struct http_call *call = c->data;
    call_finish(call, "timed out");
    net_conn_abort(c, "timed out");
}

static void call_close(struct net_conn *c, const char *why)
{
    struct http_call *call = c->data;
    call_finish(call, why);
    http_resp_reader_free(&call->rd);
    free(call);
}

static const struct net_conn_ops call_ops = {
    .on_read = call_read,
    .on_eof = call_eof,
    .on_timeout = call_timeout,
    .on_close = call_close,
};

struct http_call *http_call_start(struct ev_loop *loop, const struct sockaddr *sa, socklen_t salen,
                                  const struct http_call_opts *o, http_call_fn done, void *ud)
{
    struct http_call *call = calloc(1, sizeof *call);
    if (!call)
        return NULL;
    call->done = done;
    call->ud = ud;
    const struct http_limits lim = {.max_request_line = 8192, .max_header_size = 64 * 1024,
                                    .max_headers = HTTP_CLIENT_MAX_HEADERS};
    const char *method = o->method ? o->method : "GET";
    http_resp_reader_init(&call->rd, &lim, o->max_body, strcmp(method, "HEAD") == 0);
    call->rd.head_only = o->head_only;
    call->c = net_connect(loop, sa, salen, &call_ops, call);
    if (!call->c) {
        http_resp_reader_free(&call->rd);
        free(call);
        return NULL;
    }
    struct buf *w = &call->c->wbuf;
    buf_printf(w, "%s %s HTTP/1.1\r\nHost: %s\r\n", method, o->target ? o->target : "/",
               o->host ? o->host : call->c->peer);
    if (o->body_len || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0)
        buf_printf(w, "Content-Length: %zu\r\n", o->body_len);
    if (o->headers)
        buf_append_str(w, o->headers);
    buf_append_str(w, "Connection: close\r\n\r\n");
    if (o->body_len)
        buf_append(w, o->body, o->body_len);
    call->c->read_max = 64 * 1024 + 16 * 1024;
    net_conn_set_timeout(call->c, o->timeout > 0 ? o->timeout : 10.0);
    return call;
}

void http_call_cancel(struct http_call *call)
{
    if (!call)
        return;
    call->done = NULL;
    net_conn_abort(call->c, "cancelled");
}

#include "admin.h"

#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "net.h"

#define ADMIN_MAX_HEAD (16 * 1024)
#define ADMIN_MAX_BODY (64 * 1024)
#define ADMIN_DEADLINE 10.0

struct admin {
    struct net_listener *listener;
    admin_handler_fn handler;
    void *ud;
};

struct admin_conn {
    struct admin *admin;
    http_parser parser;
    struct admin_request req;
    struct buf url;
    struct buf body;
    size_t head_bytes;
    int done;
    int error_status;
};

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct admin_conn *ac = p->data;
    if (buf_size(&ac->url) + n > sizeof ac->req.path + sizeof ac->req.query) {
        ac->error_status = 414;
        return -1;
    }
    buf_append(&ac->url, at, n);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct admin_conn *ac = p->data;
    if (buf_size(&ac->body) + n > ADMIN_MAX_BODY) {
        ac->error_status = 413;
        return -1;
    }
    buf_append(&ac->body, at, n);
    return 0;
}

static int on_complete(http_parser *p)
{
    struct admin_conn *ac = p->data;
    ac->done = 1;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_body = on_body,
    .on_message_complete = on_complete,
};

static const char *status_text(int code)
{
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 422: return "Unprocessable Entity";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

static void send_response(struct net_conn *c, struct admin_response *r)
{
    struct buf head;
    buf_init(&head);
    buf_printf(&head,
               "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
               "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
               r->status, status_text(r->status), r->content_type, buf_size(&r->body));
    net_conn_write(c, buf_head(&head), buf_size(&head));
    net_conn_write(c, buf_head(&r->body), buf_size(&r->body));
    buf_free(&head);
    net_conn_close(c, "response sent");
}

static void send_error(struct net_conn *c, int status, const char *msg)
{
    struct admin_response r = {.status = status, .content_type = "application/json"};
    buf_init(&r.body);
    buf_append_str(&r.body, "{\"error\":");
    buf_json_string(&r.body, msg);
    buf_append_str(&r.body, "}\n");
    send_response(c, &r);
    buf_free(&r.body);
}

static void dispatch(struct net_conn *c, struct admin_conn *ac)
{
    struct admin_request *req = &ac->req;
    snprintf(req->method, sizeof req->method, "%s",
             http_method_str((enum http_method)ac->parser.method));
    buf_append(&ac->url, "", 1);
    const char *url = buf_head(&ac->url);
    const char *q = strchr(url, '?');
    size_t plen = q ? (size_t)(q - url) : strlen(url);
    if (plen >= sizeof req->path || (q && strlen(q + 1) >= sizeof req->query)) {
        send_error(c, 414, "request target too long");
        return;
    }
    memcpy(req->path, url, plen);
    req->path[plen] = 0;
    snprintf(req->query, sizeof req->query, "%s", q ? q + 1 : "");
    req->body = buf_head(&ac->body);
    req->body_len = buf_size(&ac->body);
    struct admin_response r = {.status = 200, .content_type = "application/json"};
    buf_init(&r.body);
    ac->admin->handler(ac->admin->ud, req, &r);
    send_response(c, &r);
    buf_free(&r.body);
}

static void admin_read(struct net_conn *c)
{
    struct admin_conn *ac = c->data;
    if (ac->done) {
        buf_consume(&c->rbuf, buf_size(&c->rbuf));
        return;
    }
    size_t n = buf_size(&c->rbuf);
    size_t used = http_parser_execute(&ac->parser, &parser_settings, buf_head(&c->rbuf), n);
    ac->head_bytes += used;
    buf_consume(&c->rbuf, n);
    if (ac->done) {
        dispatch(c, ac);
        return;
    }
    if (HTTP_PARSER_ERRNO(&ac->parser) != HPE_OK || used != n) {
        int st = ac->error_status ? ac->error_status : 400;
        send_error(c, st, st == 400 ? http_errno_description(HTTP_PARSER_ERRNO(&ac->parser))
                                    : status_text(st));
        ac->done = 1;
        return;
    }
    if (ac->head_bytes > ADMIN_MAX_HEAD + ADMIN_MAX_BODY) {
        send_error(c, 431, "request too large");
        ac->done = 1;
    }
}

static void admin_timeout(struct net_conn *c)
{
    struct admin_conn *ac = c->data;
    if (!ac->done) {
        ac->done = 1;
        send_error(c, 408, "request not received in time");
    } else {
        net_conn_abort(c, "admin timeout");
    }
}

static void admin_close(struct net_conn *c, const char *why)
{
    struct admin_conn *ac = c->data;
    buf_free(&ac->url);
    buf_free(&ac->body);
    free(ac);
}

static const struct net_conn_ops admin_ops = {
    .on_read = admin_read, .on_timeout = admin_timeout, .on_close = admin_close};

static int admin_accept(struct net_conn *c, void *ud)
{
    struct admin_conn *ac = calloc(1, sizeof *ac);
    if (!ac)
        return -1;
    ac->admin = ud;
    http_parser_init(&ac->parser, HTTP_REQUEST);
    ac->parser.data = ac;
    buf_init(&ac->url);
    buf_init(&ac->body);
    c->data = ac;
    c->read_max = ADMIN_MAX_HEAD + ADMIN_MAX_BODY;
    net_conn_set_timeout(c, ADMIN_DEADLINE);
    return 0;
}

struct admin *admin_start(struct ev_loop *loop, const char *addr, admin_handler_fn handler,
                          void *ud, char *err, size_t errlen)
{
    struct admin *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->handler = handler;
    a->ud = ud;
    a->listener = net_listen(loop, addr, 0, &admin_ops, admin_accept, a, err, errlen);
    if (!a->listener) {
        free(a);
        return NULL;
    }
    a->listener->max_conns = 64;
    return a;
}

void admin_stop(struct admin *a)
{
    if (!a)
        return;
    net_listener_close(a->listener);
    free(a);
}

const char *admin_addr(const struct admin *a) { return a->listener->addr; }

int admin_query_flag(const struct admin_request *req, const char *name)
{
    size_t n = strlen(name);
    const char *p = req->query;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (len >= n && strncmp(p, name, n) == 0) {
            const char *v = p + n;
            if (v == p + len)
                return 1;
            if (*v == '=') {
                v++;
                size_t vl = (size_t)(p + len - v);
                return (vl == 1 && *v == '1') || (vl == 4 && strncmp(v, "true", 4) == 0) ||
                       (vl == 3 && strncmp(v, "yes", 3) == 0);
            }
        }
        p += len + (amp ? 1 : 0);
    }
    return 0;
}

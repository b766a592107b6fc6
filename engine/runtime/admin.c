#include "admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_server.h"

struct admin {
    struct http_server *srv;
    const struct admin_route *routes;
    void *ud;
};

static void answer(struct http_req *hr, struct admin_response *r)
{
    http_resp_status(hr, r->status);
    http_resp_header(hr, "Content-Type", r->content_type);
    http_resp_header(hr, "Cache-Control", "no-store");
    buf_append(http_resp_body(hr), buf_head(&r->body), buf_size(&r->body));
    http_resp_finish(hr);
}

static void error_json(struct admin_response *r, int status, const char *msg)
{
    r->status = status;
    r->content_type = "application/json";
    buf_append_str(&r->body, "{\"error\":");
    buf_json_string(&r->body, msg);
    buf_append_str(&r->body, "}\n");
}

static void on_request(void *ud, struct http_req *hr)
{
    struct admin *a = ud;
    struct admin_request req;
    memset(&req, 0, sizeof req);
    struct admin_response resp = {.status = 200, .content_type = "application/json"};
    buf_init(&resp.body);
    if (hr->method_len >= sizeof req.method || hr->path_len >= sizeof req.path ||
        hr->query_len >= sizeof req.query) {
        error_json(&resp, 414, "request target too long");
        answer(hr, &resp);
        buf_free(&resp.body);
        return;
    }
    memcpy(req.method, hr->method, hr->method_len);
    memcpy(req.path, hr->path, hr->path_len);
    memcpy(req.query, hr->query, hr->query_len);
    req.body = hr->body;
    req.body_len = hr->body_len;
    const char *want = hr->head ? "GET" : req.method;
    const struct admin_route *found = NULL, *match = NULL;
    for (const struct admin_route *rt = a->routes; rt->path; rt++) {
        if (strcmp(rt->path, req.path) != 0)
            continue;
        found = rt;
        if (strcmp(rt->method, want) == 0) {
            match = rt;
            break;
        }
    }
    if (match) {
        match->fn(a->ud, &req, &resp);
    } else if (found) {
        char allow[64] = "";
        for (const struct admin_route *rt = a->routes; rt->path; rt++)
            if (strcmp(rt->path, req.path) == 0)
                snprintf(allow + strlen(allow), sizeof allow - strlen(allow), "%s%s%s",
                         allow[0] ? ", " : "", rt->method,
                         strcmp(rt->method, "GET") == 0 ? ", HEAD" : "");
        http_resp_header(hr, "Allow", allow);
        error_json(&resp, 405, "method not allowed");
    } else {
        error_json(&resp, 404, "not found");
    }
    answer(hr, &resp);
    buf_free(&resp.body);
}

struct admin *admin_start(struct ev_loop *loop, const char *addr,
                          const struct admin_route *routes, void *ud, char *err, size_t errlen)
{
    struct admin *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->routes = routes;
    a->ud = ud;
    struct http_server_cfg cfg;
    http_server_cfg_defaults(&cfg);
    cfg.limits.max_request_line = 4096;
    cfg.limits.max_header_size = 16 * 1024;
    cfg.limits.max_headers = 64;
    cfg.max_body = 64 * 1024;
    cfg.idle_timeout = 10;
    cfg.head_timeout = 10;
    cfg.body_timeout = 10;
    cfg.send_timeout = 10;
    cfg.max_conns = 64;
    cfg.max_pipeline = 4;
    static const struct http_server_ops ops = {.on_request = on_request};
    a->srv = http_server_start(loop, addr, &cfg, &ops, a, err, errlen);
    if (!a->srv) {
        free(a);
        return NULL;
    }
    return a;
}

void admin_stop(struct admin *a)
{
    if (!a)
        return;
    http_server_free(a->srv);
    free(a);
}

const char *admin_addr(const struct admin *a) { return http_server_addr(a->srv); }

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

void admin_reload_answer(struct admin_response *resp, const struct admin_reload *r)
{
    struct buf *b = &resp->body;
    resp->status = r->ok ? 200 : 422;
    resp->content_type = "application/json";
    buf_printf(b, "{\"ok\":%s,\"node\":", r->ok ? "true" : "false");
    buf_json_string(b, r->node ? r->node : "");
    buf_printf(b, ",\"dry_run\":%s,\"generation\":%u,\"reload_ms\":%.3f,\"changes\":[",
               r->dry_run ? "true" : "false", r->generation, r->reload_ms);
    const char *p = r->changes ? r->changes : "";
    int first = 1;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len > 0) {
            char *line = strndup(p, len);
            if (!first)
                buf_append_str(b, ",");
            first = 0;
            buf_json_string(b, line ? line : "");
            free(line);
        }
        p += len + (nl ? 1 : 0);
    }
    buf_append_str(b, "],\"error\":");
    if (r->error)
        buf_json_string(b, r->error);
    else
        buf_append_str(b, "null");
    buf_append_str(b, "}\n");
}

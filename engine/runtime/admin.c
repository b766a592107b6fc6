#include "admin.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_server.h"
#include "util.h"

#define ADMIN_MAX_TOKEN 256

struct admin {
    struct http_server *srv;
    const struct admin_route *routes;
    void *ud;
    char node[64];
    char topology[1024];
    char token[ADMIN_MAX_TOKEN + 1]; /* "" when none */
    int auth;
};

static void answer(struct admin *a, struct http_req *hr, struct admin_response *r, int identify)
{
    http_resp_status(hr, r->status);
    http_resp_header(hr, "Content-Type", r->content_type);
    http_resp_header(hr, "Cache-Control", "no-store");
    if (identify) {
        http_resp_header(hr, "X-Strata-Node", a->node);
        http_resp_header(hr, "X-Strata-Topology", a->topology);
    }
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

int admin_token_equal(const char *given, size_t given_len, const char *token)
{
    size_t tl = strlen(token);
    /* Walk the token's whole length whatever is given, and fold the length
     * difference in: no early exit tells how much of a guess was right. */
    unsigned char diff = (unsigned char)(given_len != tl);
    for (size_t i = 0; i < tl; i++) {
        unsigned char g = i < given_len ? (unsigned char)given[i] : 0;
        diff |= (unsigned char)(g ^ (unsigned char)token[i]);
    }
    return tl > 0 && diff == 0;
}

/* 1 when the request carries "Authorization: Bearer <the token>". */
static int authorized(const struct admin *a, struct http_req *hr)
{
    const struct http_hdr *h = http_req_header(hr, "Authorization");
    if (!h || h->value_len < 7 || strncasecmp(h->value, "Bearer ", 7) != 0)
        return 0;
    const char *v = h->value + 7;
    size_t n = h->value_len - 7;
    while (n > 0 && *v == ' ') {
        v++;
        n--;
    }
    return admin_token_equal(v, n, a->token);
}

/* 1 when an expectation header is present and differs from `have`. */
static int expect_differs(struct http_req *hr, const char *name, const char *have)
{
    const struct http_hdr *h = http_req_header(hr, name);
    return h && (h->value_len != strlen(have) || memcmp(h->value, have, h->value_len) != 0);
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
        answer(a, hr, &resp, 0);
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
    int identify = 1;
    /* "all" guards every path, unknown ones too: nothing answers without it */
    int guarded = a->token[0] && (a->auth == ADMIN_AUTH_ALL ||
                                  (match && strcmp(match->method, "POST") == 0));
    if (guarded && !authorized(a, hr)) {
        /* Nothing about the owner before the caller proves who it is. */
        identify = 0;
        http_resp_header(hr, "WWW-Authenticate", "Bearer realm=\"strata admin\"");
        error_json(&resp, 401,
                   "unauthorized: this endpoint needs Authorization: Bearer <admin token>");
    } else if (match && (expect_differs(hr, "X-Strata-Expect-Node", a->node) ||
                         expect_differs(hr, "X-Strata-Expect-Topology", a->topology))) {
        const struct http_hdr *en = http_req_header(hr, "X-Strata-Expect-Node");
        const struct http_hdr *et = http_req_header(hr, "X-Strata-Expect-Topology");
        char msg[1536];
        snprintf(msg, sizeof msg, "node at %s is %s of %s, not %.*s of %.*s",
                 http_server_addr(a->srv), a->node, a->topology, en ? (int)en->value_len : 1,
                 en ? en->value : "?", et ? (int)et->value_len : 1, et ? et->value : "?");
        resp.status = 409;
        buf_append_str(&resp.body, "{\"error\":");
        buf_json_string(&resp.body, msg);
        buf_append_str(&resp.body, ",\"node\":");
        buf_json_string(&resp.body, a->node);
        buf_append_str(&resp.body, ",\"topology\":");
        buf_json_string(&resp.body, a->topology);
        buf_append_str(&resp.body, "}\n");
    } else if (match) {
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
    answer(a, hr, &resp, identify);
    buf_free(&resp.body);
}

int admin_addr_is_loopback(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    char err[256];
    if (util_parse_addr(addr, &ss, &sl, err, sizeof err) < 0)
        return -1;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr);
    }
    return 0;
}

void admin_set_auth(struct admin *a, const char *token, int auth)
{
    snprintf(a->token, sizeof a->token, "%s", token ? token : "");
    a->auth = auth;
}

int admin_auth_differs(const struct admin *a, const char *token, int auth)
{
    return strcmp(a->token, token ? token : "") != 0 || a->auth != auth;
}

struct admin *admin_start(struct ev_loop *loop, const char *addr, const struct admin_opts *opts,
                          const struct admin_route *routes, void *ud, char *err, size_t errlen)
{
    const char *token = opts && opts->token ? opts->token : "";
    if (strlen(token) > ADMIN_MAX_TOKEN) {
        snprintf(err, errlen, "the admin token is longer than %d bytes", ADMIN_MAX_TOKEN);
        return NULL;
    }
    if (!token[0] && admin_addr_is_loopback(addr) != 1) {
        snprintf(err, errlen, "%s is not a loopback address and no admin token is set "
                 "(admin_token, admin_token_env or admin_token_file)", addr);
        return NULL;
    }
    struct admin *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->routes = routes;
    a->ud = ud;
    snprintf(a->node, sizeof a->node, "%s", opts && opts->node ? opts->node : "");
    snprintf(a->topology, sizeof a->topology, "%s", opts && opts->topology ? opts->topology : "");
    admin_set_auth(a, token, opts ? opts->auth : ADMIN_AUTH_WRITES);
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
    memset(a->token, 0, sizeof a->token);
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
    buf_append_str(b, ",\"topology\":");
    buf_json_string(b, r->topology ? r->topology : "");
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

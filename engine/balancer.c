#include "balancer.h"

#include <errno.h>
#include <http_parser.h>
#include <lauxlib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <xxhash.h>

#include "health.h"
#include "http_parse.h"
#include "lb.h"
#include "log.h"
#include "net.h"
#include "runtime.h"
#include "util.h"

/* Unsent bytes queued towards one side that make us stop reading the other
 * side until they drain: the backpressure threshold for streamed bodies. */
#define BAL_HIGH (256 * 1024)
#define BAL_MAX_TRIES 16
#define BAL_MAX_BACKENDS 1024
#define BAL_POOL_IDLE_TIMEOUT 30.0
#define BAL_POOL_MAX_IDLE 1024
#define BAL_VIA "strata"

enum hash_on { HASH_IP, HASH_PATH, HASH_HEADER, HASH_COOKIE };

struct bal_cfg {
    char listen[64];
    char policy[32];
    char policy_path[PATH_MAX];
    char fallback[32];
    char hash_on[128];
    int retries;
    double connect_timeout, server_timeout, client_timeout, head_timeout;
    int max_conns;
    struct http_limits lim;
    struct health_cfg health;
};

struct bal_server;
struct bal_client;

struct bal_backend {
    struct lb_target t; /* first: a policy's pick converts back by cast */
    char name[64];
    char addr[64];
    struct bal_server *idle; /* pooled keep-alive connections, most recent first */
    int nidle;
    int nconns;
    uint64_t requests, failures;
};

struct balancer {
    struct service base;
    struct ev_loop *loop;
    struct bal_cfg cfg;
    struct net_listener *listener;
    struct bal_backend *be;
    int nbe;
    struct lb_target **targets;
    struct health_target *ht;
    struct health health;
    struct lb lb; /* the policy, or the fallback of a Lua policy */
    struct lb_lua *lua;
    int hash_kind;
    char hash_name[96];
    struct http_limits resp_lim; /* for responses and re-parsed request heads */
    struct http_msg msg;         /* scratch: one head is parsed at a time */
    struct buf out;              /* scratch: bytes gathered for one write */
    struct bal_client *clients;
    int nclients;
    /* connections closed while a caller may still hold them: freed on the
     * next loop turn (ev_prepare), when no callback is on the stack */
    struct bal_client *dead_clients;
    struct bal_server *dead_servers;
    ev_prepare reap;
    int draining;
    uint64_t requests, retries, errors_sent, lua_fallbacks, lua_suppressed;
    double lua_logged_at;
};

enum cl_state { CL_HEAD, CL_BUSY, CL_CLOSING };

struct bal_client {
    struct balancer *bal;
    struct net_conn *c;
    struct bal_server *srv;
    struct bal_backend *be; /* backend of the current attempt */
    struct bal_client *prev, *next;
    struct buf head; /* the rewritten request head, kept for retries */
    char ip[48];
    int state;
    unsigned dead : 1, eof : 1, head_timer : 1, in_pump : 1;
    unsigned keep_alive : 1, http10 : 1, is_head : 1, idempotent : 1;
    unsigned req_done : 1, body_touched : 1;
    unsigned resp_head_done : 1, resp_keep : 1, dechunk : 1, close_after : 1;
    unsigned paused_by_srv : 1;
    int req_body, resp_body;
    uint64_t req_left, resp_left;
    struct http_chunked req_ck, resp_ck;
    int attempts;
    int tried[BAL_MAX_TRIES];
    uint64_t hash;
    double t_sent;
};

struct bal_server {
    struct balancer *bal;
    struct bal_backend *be;
    struct net_conn *c;
    struct bal_client *cl;
    struct bal_server *prev, *next; /* the backend's idle list */
    unsigned dead : 1, connected : 1, wrote : 1, in_pool : 1, paused_by_client : 1;
    int conn_err;
};

static int client_next_request(struct bal_client *cl);
static void client_pump(struct bal_client *cl);
static void client_forward_body(struct bal_client *cl, int with_head);
static void attempt_start(struct bal_client *cl, struct bal_backend *be);
static void reply_error(struct bal_client *cl, int status);
static void server_detach(struct bal_client *cl, int reusable);

/* ---- small helpers ------------------------------------------------------ */

static const char *status_reason(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

static int method_idempotent(int m)
{
    return m == HTTP_GET || m == HTTP_HEAD || m == HTTP_OPTIONS || m == HTTP_PUT ||
           m == HTTP_DELETE || m == HTTP_TRACE;
}

/* "ip:port" or "[v6]:port" -> "ip" */
static void peer_ip(const char *peer, char *out, size_t n)
{
    const char *s = peer, *e;
    if (*s == '[') {
        s++;
        e = strchr(s, ']');
    } else {
        e = strrchr(s, ':');
    }
    size_t l = e ? (size_t)(e - s) : strlen(s);
    if (l >= n)
        l = n - 1;
    memcpy(out, s, l);
    out[l] = 0;
}

static void reap_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    struct balancer *bal = w->data;
    while (bal->dead_clients) {
        struct bal_client *cl = bal->dead_clients;
        bal->dead_clients = cl->next;
        buf_free(&cl->head);
        free(cl);
    }
    while (bal->dead_servers) {
        struct bal_server *s = bal->dead_servers;
        bal->dead_servers = s->next;
        free(s);
    }
    ev_prepare_stop(loop, w);
}

static void reap_start(struct balancer *bal)
{
    if (!ev_is_active(&bal->reap))
        ev_prepare_start(bal->loop, &bal->reap);
}

static void lua_fallback_log(struct balancer *bal, const char *why)
{
    bal->lua_fallbacks++;
    double now = ev_now(bal->loop);
    /* At most one line a second: a broken policy must not flood the log. */
    if (now - bal->lua_logged_at >= 1.0) {
        log_warn("lua policy %s: %s; used %s instead (%llu similar suppressed)",
                 bal->cfg.policy_path, why, bal->cfg.fallback,
                 (unsigned long long)bal->lua_suppressed);
        bal->lua_logged_at = now;
        bal->lua_suppressed = 0;
    } else {
        bal->lua_suppressed++;
    }
}

/* ---- backend choice -------------------------------------------------------- */

static uint64_t request_hash(struct bal_client *cl, const struct http_msg *m)
{
    struct balancer *bal = cl->bal;
    const char *k = NULL;
    size_t kl = 0;
    if (bal->hash_kind == HASH_PATH) {
        k = m->target;
        const char *q = memchr(k, '?', m->target_len);
        kl = q ? (size_t)(q - k) : m->target_len;
    } else if (bal->hash_kind == HASH_HEADER) {
        const struct http_hdr *h = http_msg_find(m, bal->hash_name);
        if (h) {
            k = h->value;
            kl = h->value_len;
        }
    } else if (bal->hash_kind == HASH_COOKIE) {
        for (int i = 0; i < m->nhdrs && !k; i++)
            if (m->hdrs[i].kind == HH_COOKIE)
                k = http_cookie_find(m->hdrs[i].value, m->hdrs[i].value_len, bal->hash_name,
                                     &kl);
    }
    if (!k) { /* the client address, also when the chosen key is absent */
        k = cl->ip;
        kl = strlen(cl->ip);
    }
    return XXH3_64bits(k, kl);
}

/* Asks the policy for a backend this request has not tried yet. */
static struct bal_backend *pick_backend(struct bal_client *cl, const struct http_msg *m)
{
    struct balancer *bal = cl->bal;
    for (int i = 0; i < cl->attempts; i++)
        bal->targets[cl->tried[i]]->skip = 1;
    struct lb_req r = {.hash = cl->hash, .msg = m, .client = cl->c->peer};
    struct lb_target *t = NULL;
    if (bal->lua) {
        char err[256];
        t = lb_lua_pick(bal->lua, &r, err, sizeof err);
        if (!t) {
            /* nil is a fine answer when nothing is left to try */
            int any = 0;
            for (int i = 0; i < bal->nbe && !any; i++)
                any = lb_candidate(bal->targets[i]);
            if (any)
                lua_fallback_log(bal, err);
        }
    }
    if (!t)
        t = bal->lb.ops->pick(&bal->lb, &r);
    for (int i = 0; i < cl->attempts; i++)
        bal->targets[cl->tried[i]]->skip = 0;
    return (struct bal_backend *)t;
}

/* ---- request head rewriting --------------------------------------------- */

static char *put(char *p, const void *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define PUT_LIT(p, lit) put((p), (lit), sizeof(lit) - 1)

/* Builds the head sent upstream: the request line as HTTP/1.1, the
 * end-to-end headers unchanged, hop-by-hop ones dropped (RFC 9110 7.6.1),
 * and X-Forwarded-For / X-Forwarded-Proto / Via added or extended. The
 * body framing headers pass through: the body is forwarded as received. */
static int build_request_head(struct bal_client *cl, const struct http_msg *m)
{
    struct balancer *bal = cl->bal;
    struct buf *b = &cl->head;
    buf_reset(b);
    size_t iplen = strlen(cl->ip);
    size_t bound = m->head_len + iplen + strlen(bal->base.listen) + 160;
    if (buf_reserve(b, bound) < 0)
        return -1;
    char *p = buf_tail(b), *start = p;
    p = put(p, m->method_s, m->method_len);
    *p++ = ' ';
    p = put(p, m->target, m->target_len);
    p = PUT_LIT(p, " HTTP/1.1\r\n");
    int has_host = 0, nxff = 0, nvia = 0;
    for (int i = 0; i < m->nhdrs; i++) {
        const struct http_hdr *h = &m->hdrs[i];
        switch (h->kind) {
        case HH_CONNECTION:
        case HH_KEEP_ALIVE:
        case HH_PROXY_CONNECTION:
        case HH_TE:
        case HH_UPGRADE:
        case HH_LISTED:
        case HH_X_FORWARDED_PROTO:
            continue;
        case HH_X_FORWARDED_FOR:
            nxff++;
            continue;
        case HH_VIA:
            nvia++;
            continue;
        case HH_HOST:
            has_host = 1;
            break;
        default:
            break;
        }
        p = put(p, h->name, h->name_len);
        *p++ = ':';
        *p++ = ' ';
        p = put(p, h->value, h->value_len);
        *p++ = '\r';
        *p++ = '\n';
    }
    if (!has_host) { /* HTTP/1.0 client: HTTP/1.1 upstream needs one */
        p = PUT_LIT(p, "Host: ");
        p = put(p, bal->base.listen, strlen(bal->base.listen));
        p = PUT_LIT(p, "\r\n");
    }
    b->len += (size_t)(p - start);
    /* The rarely present list headers are merged through buf_append, whose
     * length is not bounded by the head. */
    buf_append_str(b, "X-Forwarded-For: ");
    for (int i = 0; i < m->nhdrs && nxff; i++)
        if (m->hdrs[i].kind == HH_X_FORWARDED_FOR && m->hdrs[i].value_len) {
            buf_append(b, m->hdrs[i].value, m->hdrs[i].value_len);
            buf_append(b, ", ", 2);
        }
    buf_append(b, cl->ip, iplen);
    buf_append_str(b, "\r\nX-Forwarded-Proto: http\r\nVia: ");
    for (int i = 0; i < m->nhdrs && nvia; i++)
        if (m->hdrs[i].kind == HH_VIA && m->hdrs[i].value_len) {
            buf_append(b, m->hdrs[i].value, m->hdrs[i].value_len);
            buf_append(b, ", ", 2);
        }
    if (buf_append_str(b, cl->http10 ? "1.0 " BAL_VIA "\r\n\r\n" : "1.1 " BAL_VIA "\r\n\r\n") < 0)
        return -1;
    return 0;
}

/* ---- client side ----------------------------------------------------------- */

static void client_set_idle(struct bal_client *cl)
{
    cl->head_timer = 0;
    net_conn_set_timeout(cl->c, cl->bal->cfg.client_timeout);
}

/* Writes a complete error response; the connection stays open only when the
 * request was read whole and both sides want keep-alive. */
static void reply_error(struct bal_client *cl, int status)
{
    struct balancer *bal = cl->bal;
    if (cl->srv)
        server_detach(cl, 0);
    if (cl->resp_head_done) { /* part of a response is out: only closing can tell */
        net_conn_abort(cl->c, "response failed midway");
        return;
    }
    bal->errors_sent++;
    int keep = cl->keep_alive && cl->req_done && !cl->eof && !bal->draining &&
               cl->state == CL_BUSY && status >= 500;
    const char *reason = status_reason(status);
    char msg[256];
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "%s\r\n%s\n",
                     status, reason, strlen(reason) + 1,
                     keep ? (cl->http10 ? "Connection: keep-alive\r\n" : "")
                          : "Connection: close\r\n",
                     reason);
    cl->state = keep ? CL_HEAD : CL_CLOSING;
    net_conn_write(cl->c, msg, (size_t)n);
    if (cl->dead)
        return;
    if (!keep) {
        net_conn_set_timeout(cl->c, bal->cfg.client_timeout);
        net_conn_close(cl->c, "error reply");
        return;
    }
    client_set_idle(cl);
    client_pump(cl);
}

/* Serves the requests waiting in the client's buffer, one at a time: loops
 * while a request completes at once (an error reply), so pipelined requests
 * never recurse. */
static void client_pump(struct bal_client *cl)
{
    if (cl->in_pump)
        return; /* the loop further up the stack goes on */
    cl->in_pump = 1;
    while (!cl->dead && cl->state == CL_HEAD && client_next_request(cl))
        ;
    cl->in_pump = 0;
}

/* Parses and dispatches the next request in the client's buffer. Returns 1
 * when one was dispatched, 0 when waiting for bytes (or closing). */
static int client_next_request(struct bal_client *cl)
{
    struct balancer *bal = cl->bal;
    struct net_conn *c = cl->c;
    if (buf_size(&c->rbuf) == 0) {
        if (cl->eof)
            net_conn_close(c, "client done");
        else if (!cl->head_timer)
            client_set_idle(cl);
        return 0;
    }
    struct http_msg *m = &bal->msg;
    int status = 400;
    ssize_t n = http_parse_request(buf_head(&c->rbuf), buf_size(&c->rbuf), &bal->cfg.lim, m,
                                   &status);
    if (n == -2) {
        if (cl->eof) {
            net_conn_close(c, "incomplete request");
        } else if (!cl->head_timer) {
            /* the whole head must arrive within head_timeout (slowloris) */
            cl->head_timer = 1;
            net_conn_set_timeout(c, bal->cfg.head_timeout);
        }
        return 0;
    }
    cl->state = CL_BUSY;
    cl->head_timer = 0;
    cl->resp_head_done = cl->resp_keep = cl->dechunk = cl->close_after = 0;
    cl->body_touched = 0;
    cl->attempts = 0;
    cl->req_done = 1; /* for reply_error: nothing more is read after a bad head */
    if (n < 0) {
        cl->keep_alive = 0;
        log_debug("%s: bad request head, answering %d", c->peer, status);
        reply_error(cl, status);
        return 1;
    }
    cl->http10 = m->minor == 0;
    cl->keep_alive = http_msg_keep_alive(m) && !bal->draining;
    cl->is_head = m->method == HTTP_HEAD;
    cl->idempotent = method_idempotent(m->method);
    cl->req_body = m->body;
    cl->req_left = m->content_length;
    cl->req_done = m->body == HTTP_BODY_NONE;
    if (m->body == HTTP_BODY_CHUNKED)
        http_chunked_init(&cl->req_ck, bal->cfg.lim.max_header_size);
    if (build_request_head(cl, m) < 0) {
        net_conn_abort(c, "out of memory");
        return 0;
    }
    cl->hash = bal->lb.ops == &lb_chash_ops ? request_hash(cl, m) : 0;
    bal->requests++;
    struct bal_backend *be = pick_backend(cl, m);
    buf_consume(&c->rbuf, (size_t)n);
    net_conn_update(c);
    net_conn_set_timeout(c, cl->req_done ? 0 : bal->cfg.client_timeout);
    if (!be) {
        log_debug("%s: no backend available", c->peer);
        reply_error(cl, 503);
        return 1;
    }
    attempt_start(cl, be);
    return 1;
}

/* Moves request body bytes from the client to the server, with the head in
 * front when `with_head` (one write for both). */
static void client_forward_body(struct bal_client *cl, int with_head)
{
    struct balancer *bal = cl->bal;
    struct bal_server *srv = cl->srv;
    struct buf *out = &bal->out;
    buf_reset(out);
    if (with_head)
        buf_append(out, buf_head(&cl->head), buf_size(&cl->head));
    struct buf *rb = &cl->c->rbuf;
    size_t avail = buf_size(rb);
    if (!cl->req_done && avail > 0) {
        size_t take = 0;
        if (cl->req_body == HTTP_BODY_LENGTH) {
            take = avail < cl->req_left ? avail : (size_t)cl->req_left;
            cl->req_left -= take;
            cl->req_done = cl->req_left == 0;
        } else {
            int done = 0;
            ssize_t k = http_chunked_scan(&cl->req_ck, buf_head(rb), avail, &done, NULL, NULL);
            if (k < 0) {
                log_debug("%s: bad chunked request body", cl->c->peer);
                cl->keep_alive = 0;
                reply_error(cl, 400);
                return;
            }
            take = (size_t)k;
            cl->req_done = done;
        }
        if (take) {
            cl->body_touched = 1;
            buf_append(out, buf_head(rb), take);
            buf_consume(rb, take);
        }
        net_conn_set_timeout(cl->c, cl->req_done ? 0 : bal->cfg.client_timeout);
    }
    if (buf_size(out) == 0)
        return;
    net_conn_write(srv->c, buf_head(out), buf_size(out));
    if (cl->dead || cl->srv != srv)
        return; /* the write failed and the failure was handled */
    if (!cl->req_done && buf_size(&srv->c->wbuf) > BAL_HIGH && !cl->paused_by_srv) {
        cl->paused_by_srv = 1;
        net_conn_pause(cl->c);
    }
    net_conn_update(cl->c);
}

static void client_on_read(struct net_conn *c)
{
    struct bal_client *cl = c->data;
    if (cl->state == CL_HEAD)
        client_pump(cl);
    else if (cl->state == CL_BUSY && !cl->req_done && cl->srv && cl->srv->connected)
        client_forward_body(cl, 0);
}

static void client_on_eof(struct net_conn *c)
{
    struct bal_client *cl = c->data;
    cl->eof = 1;
    if (cl->state == CL_BUSY && !cl->req_done) {
        net_conn_abort(c, "client closed mid-request");
        return;
    }
    if (cl->state != CL_BUSY)
        net_conn_close(c, "client closed");
    /* else: answer the request in flight, then close */
}

static void client_on_drain(struct net_conn *c)
{
    struct bal_client *cl = c->data;
    struct bal_server *srv = cl->srv;
    if (srv && srv->paused_by_client) {
        srv->paused_by_client = 0;
        net_conn_set_timeout(c, 0);
        net_conn_set_timeout(srv->c, cl->bal->cfg.server_timeout);
        net_conn_resume(srv->c);
    }
}

static void client_on_timeout(struct net_conn *c)
{
    struct bal_client *cl = c->data;
    if (cl->state == CL_HEAD && buf_size(&c->rbuf) > 0) {
        cl->state = CL_BUSY;
        cl->keep_alive = 0;
        log_debug("%s: request head not complete in time", c->peer);
        reply_error(cl, 408);
    } else if (cl->state == CL_BUSY && !cl->req_done && !cl->resp_head_done) {
        cl->keep_alive = 0;
        reply_error(cl, 408);
    } else {
        net_conn_abort(c, cl->state == CL_HEAD ? "idle" : "client timeout");
    }
}

static void client_on_close(struct net_conn *c, const char *why)
{
    (void)why;
    struct bal_client *cl = c->data;
    struct balancer *bal = cl->bal;
    if (cl->srv)
        server_detach(cl, 0);
    cl->dead = 1;
    cl->c = NULL;
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        bal->clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    bal->nclients--;
    cl->next = bal->dead_clients;
    bal->dead_clients = cl;
    reap_start(bal);
}

static const struct net_conn_ops client_ops = {
    .on_read = client_on_read,
    .on_eof = client_on_eof,
    .on_drain = client_on_drain,
    .on_timeout = client_on_timeout,
    .on_close = client_on_close,
};

static int client_accept(struct net_conn *c, void *data)
{
    struct balancer *bal = data;
    if (bal->draining)
        return -1;
    struct bal_client *cl = calloc(1, sizeof *cl);
    if (!cl)
        return -1;
    cl->bal = bal;
    cl->c = c;
    buf_init(&cl->head);
    peer_ip(c->peer, cl->ip, sizeof cl->ip);
    c->data = cl;
    /* Room for one full head: pipelined requests beyond it wait in the
     * kernel, which is what bounds a client that never reads. */
    c->read_max = bal->cfg.lim.max_request_line + bal->cfg.lim.max_header_size + 4096;
    cl->next = bal->clients;
    if (bal->clients)
        bal->clients->prev = cl;
    bal->clients = cl;
    bal->nclients++;
    client_set_idle(cl);
    return 0;
}

/* ---- server side ------------------------------------------------------------ */

static void server_on_close(struct net_conn *c, const char *why);

/* Ends the current attempt's use of its server connection: back to the pool
 * when it can carry another request, closed otherwise. */
static void server_detach(struct bal_client *cl, int reusable)
{
    struct balancer *bal = cl->bal;
    struct bal_server *srv = cl->srv;
    struct bal_backend *be = srv->be;
    cl->srv = NULL;
    srv->cl = NULL;
    if (cl->be) {
        cl->be->t.active--;
        cl->be = NULL;
    }
    if (cl->paused_by_srv) {
        cl->paused_by_srv = 0;
        cl->c->flags &= ~(unsigned)NET_F_PAUSED;
        net_conn_update(cl->c);
    }
    if (srv->paused_by_client) {
        srv->paused_by_client = 0;
        srv->c->flags &= ~(unsigned)NET_F_PAUSED;
    }
    if (reusable && !bal->draining && be->nidle < BAL_POOL_MAX_IDLE &&
        buf_size(&srv->c->rbuf) == 0) {
        srv->in_pool = 1;
        srv->next = be->idle;
        srv->prev = NULL;
        if (be->idle)
            be->idle->prev = srv;
        be->idle = srv;
        be->nidle++;
        net_conn_set_timeout(srv->c, BAL_POOL_IDLE_TIMEOUT);
        net_conn_update(srv->c);
    } else {
        net_conn_abort(srv->c, "done");
    }
}

static void pool_unlink(struct bal_server *srv)
{
    struct bal_backend *be = srv->be;
    if (srv->prev)
        srv->prev->next = srv->next;
    else
        be->idle = srv->next;
    if (srv->next)
        srv->next->prev = srv->prev;
    srv->prev = srv->next = NULL;
    srv->in_pool = 0;
    be->nidle--;
}

/* A failed attempt: retried on another backend when that is safe, else the
 * client gets `status`. `sent` says whether any of the request reached the
 * failed server. */
static void attempt_failed(struct bal_client *cl, struct bal_backend *be, int status, int sent,
                           const char *why)
{
    struct balancer *bal = cl->bal;
    be->failures++;
    be->t.errors++;
    health_report(&bal->health, be->t.index, 0);
    int may_retry = !cl->body_touched && (cl->idempotent || !sent) &&
                    cl->attempts <= bal->cfg.retries && cl->attempts < BAL_MAX_TRIES &&
                    !cl->resp_head_done;
    log_debug("%s: %s via %s failed: %s%s", cl->c->peer, cl->idempotent ? "request" : "unsafe request",
              be->name, why, may_retry ? ", retrying" : "");
    if (may_retry) {
        /* the rewritten head is a valid request: re-parse it for the policy */
        struct http_msg *m = &bal->msg;
        int st;
        if (http_parse_request(buf_head(&cl->head), buf_size(&cl->head), &bal->resp_lim, m,
                               &st) > 0) {
            struct bal_backend *next = pick_backend(cl, m);
            if (next) {
                bal->retries++;
                attempt_start(cl, next);
                return;
            }
        }
    }
    reply_error(cl, status);
}

static void server_on_connect(struct net_conn *c, int err)
{
    struct bal_server *srv = c->data;
    if (err) {
        srv->conn_err = err; /* on_close follows and reports it */
        return;
    }
    srv->connected = 1;
    srv->wrote = 1; /* the queued head goes out as this callback returns */
    struct bal_client *cl = srv->cl;
    if (!cl)
        return;
    net_conn_set_timeout(c, cl->bal->cfg.server_timeout);
    cl->t_sent = ev_now(c->loop);
    client_forward_body(cl, 0);
}

/* Builds the response head for the client into out. */
static void build_response_head(struct bal_client *cl, const struct http_msg *m, const char *p,
                                struct buf *out)
{
    /* status line: our version, the backend's code and reason */
    const char *eol = memchr(p, '\r', m->head_len);
    size_t line = (size_t)(eol - p);
    buf_reserve(out, m->head_len + 64);
    buf_append(out, "HTTP/1.1", 8);
    buf_append(out, p + 8, line - 8);
    buf_append(out, "\r\n", 2);
    for (int i = 0; i < m->nhdrs; i++) {
        const struct http_hdr *h = &m->hdrs[i];
        switch (h->kind) {
        case HH_CONNECTION:
        case HH_KEEP_ALIVE:
        case HH_PROXY_CONNECTION:
        case HH_TE:
        case HH_UPGRADE:
        case HH_LISTED:
            continue;
        case HH_TRANSFER_ENCODING:
        case HH_TRAILER:
            if (cl->dechunk)
                continue;
            break;
        default:
            break;
        }
        /* the whole original line, name through CRLF */
        const char *le = memchr(h->value, '\n', (size_t)(p + m->head_len - h->value));
        buf_append(out, h->name, (size_t)(le + 1 - h->name));
    }
    if (cl->close_after || !cl->keep_alive)
        buf_append_str(out, "Connection: close\r\n\r\n");
    else if (cl->http10)
        buf_append_str(out, "Connection: keep-alive\r\n\r\n");
    else
        buf_append(out, "\r\n", 2);
}

static void dechunk_cb(void *ud, const char *p, size_t n) { buf_append(ud, p, n); }

/* The response is complete: release the server, then serve the next
 * request of this client (or close). */
static void response_done(struct bal_client *cl)
{
    struct balancer *bal = cl->bal;
    server_detach(cl, cl->resp_keep && cl->req_done);
    if (cl->dead)
        return;
    if (cl->close_after || !cl->keep_alive || !cl->req_done || bal->draining) {
        cl->state = CL_CLOSING;
        net_conn_set_timeout(cl->c, bal->cfg.client_timeout);
        net_conn_close(cl->c, "response done");
        return;
    }
    cl->state = CL_HEAD;
    net_conn_update(cl->c);
    client_pump(cl);
}

static void server_on_read(struct net_conn *c)
{
    struct bal_server *srv = c->data;
    struct bal_client *cl = srv->cl;
    if (!cl) {
        net_conn_abort(c, "unexpected bytes on an idle connection");
        return;
    }
    struct balancer *bal = cl->bal;
    struct bal_backend *be = srv->be;
    struct buf *rb = &c->rbuf;
    struct buf *out = &bal->out;
    buf_reset(out);
    int done = 0;
    while (!cl->resp_head_done) {
        struct http_msg *m = &bal->msg;
        int status;
        ssize_t n = http_parse_response(buf_head(rb), buf_size(rb), &bal->resp_lim, m,
                                        cl->is_head, &status);
        if (n == -2)
            goto flush;
        if (n < 0 || m->status == 101) {
            log_warn("backend %s sent an invalid response head", be->name);
            be->failures++;
            be->t.errors++;
            health_report(&bal->health, be->t.index, 0);
            cl->keep_alive = 0;
            reply_error(cl, 502);
            return;
        }
        if (m->status < 200) {
            /* interim (100 Continue): pass on to HTTP/1.1 clients */
            if (!cl->http10)
                buf_printf(out, "HTTP/1.1 %d %.*s\r\n\r\n", m->status, (int)m->reason_len,
                           m->reason ? m->reason : "");
            buf_consume(rb, (size_t)n);
            continue;
        }
        cl->resp_head_done = 1;
        double ms = (ev_now(c->loop) - cl->t_sent) * 1000.0;
        be->t.ewma_ms = be->t.ewma_ms == 0 ? ms : be->t.ewma_ms * 0.8 + ms * 0.2;
        health_report(&bal->health, be->t.index, m->status < 500);
        if (m->status >= 500) {
            be->failures++;
            be->t.errors++;
        }
        cl->resp_body = m->body;
        cl->resp_left = m->content_length;
        cl->resp_keep = http_msg_keep_alive(m) && m->body != HTTP_BODY_CLOSE;
        if (m->body == HTTP_BODY_CHUNKED) {
            http_chunked_init(&cl->resp_ck, bal->resp_lim.max_header_size);
            /* HTTP/1.0 clients do not know chunked: decode, end by closing */
            cl->dechunk = cl->http10;
            if (cl->dechunk)
                cl->close_after = 1;
        } else if (m->body == HTTP_BODY_CLOSE) {
            cl->close_after = 1;
        }
        if (cl->eof)
            cl->close_after = 1;
        build_response_head(cl, m, buf_head(rb), out);
        buf_consume(rb, (size_t)n);
        if (m->body == HTTP_BODY_NONE)
            done = 1;
    }
    /* body */
    size_t avail = buf_size(rb);
    if (!done && avail > 0) {
        if (cl->resp_body == HTTP_BODY_LENGTH) {
            size_t take = avail < cl->resp_left ? avail : (size_t)cl->resp_left;
            buf_append(out, buf_head(rb), take);
            buf_consume(rb, take);
            cl->resp_left -= take;
            done = cl->resp_left == 0;
        } else if (cl->resp_body == HTTP_BODY_CHUNKED) {
            ssize_t k = http_chunked_scan(&cl->resp_ck, buf_head(rb), avail, &done,
                                          cl->dechunk ? dechunk_cb : NULL, out);
            if (k < 0) {
                log_warn("backend %s sent bad chunked framing", be->name);
                net_conn_write(cl->c, buf_head(out), buf_size(out));
                if (!cl->dead)
                    net_conn_abort(cl->c, "bad chunked response");
                return;
            }
            if (!cl->dechunk)
                buf_append(out, buf_head(rb), (size_t)k);
            buf_consume(rb, (size_t)k);
        } else { /* until close */
            buf_append(out, buf_head(rb), avail);
            buf_consume(rb, avail);
        }
    }
flush:
    if (buf_size(out) > 0) {
        net_conn_write(cl->c, buf_head(out), buf_size(out));
        if (cl->dead || srv->cl != cl)
            return;
    }
    if (done) {
        response_done(cl);
        return;
    }
    net_conn_set_timeout(c, bal->cfg.server_timeout);
    if (buf_size(&cl->c->wbuf) > BAL_HIGH && !srv->paused_by_client) {
        /* the client reads slower than the backend writes */
        srv->paused_by_client = 1;
        net_conn_pause(c);
        net_conn_set_timeout(c, 0);
        net_conn_set_timeout(cl->c, bal->cfg.client_timeout);
    }
}

static void server_on_eof(struct net_conn *c)
{
    struct bal_server *srv = c->data;
    struct bal_client *cl = srv->cl;
    if (cl && cl->resp_head_done && cl->resp_body == HTTP_BODY_CLOSE) {
        cl->resp_keep = 0;
        response_done(cl);
        return;
    }
    net_conn_abort(c, "closed by backend");
}

static void server_on_drain(struct net_conn *c)
{
    struct bal_server *srv = c->data;
    struct bal_client *cl = srv->cl;
    if (cl && cl->paused_by_srv) {
        cl->paused_by_srv = 0;
        net_conn_resume(cl->c);
    }
}

static void server_on_timeout(struct net_conn *c)
{
    struct bal_server *srv = c->data;
    struct bal_client *cl = srv->cl;
    if (!cl) {
        net_conn_abort(c, "idle in pool");
        return;
    }
    struct balancer *bal = cl->bal;
    struct bal_backend *be = srv->be;
    if (cl->resp_head_done) {
        net_conn_abort(cl->c, "backend stalled mid-response");
        return;
    }
    log_warn("backend %s did not answer within %.1fs", be->name, bal->cfg.server_timeout);
    be->failures++;
    be->t.errors++;
    health_report(&bal->health, be->t.index, 0);
    cl->keep_alive = cl->keep_alive && cl->req_done;
    /* no retry: the backend may be processing it */
    reply_error(cl, 504);
}

static void server_on_close(struct net_conn *c, const char *why)
{
    struct bal_server *srv = c->data;
    struct balancer *bal = srv->bal;
    struct bal_backend *be = srv->be;
    if (srv->in_pool)
        pool_unlink(srv);
    srv->dead = 1;
    srv->c = NULL;
    be->nconns--;
    struct bal_client *cl = srv->cl;
    srv->next = bal->dead_servers;
    bal->dead_servers = srv;
    reap_start(bal);
    if (!cl)
        return;
    /* the attempt failed before its response completed */
    cl->srv = NULL;
    srv->cl = NULL;
    if (cl->be) {
        cl->be->t.active--;
        cl->be = NULL;
    }
    if (cl->paused_by_srv) {
        cl->paused_by_srv = 0;
        cl->c->flags &= ~(unsigned)NET_F_PAUSED;
        net_conn_update(cl->c);
    }
    if (cl->resp_head_done) {
        net_conn_abort(cl->c, "backend closed mid-response");
        return;
    }
    if (!srv->connected) {
        int timeout = srv->conn_err == ETIMEDOUT;
        attempt_failed(cl, be, timeout ? 504 : 502, 0,
                       srv->conn_err ? strerror(srv->conn_err) : why);
    } else {
        attempt_failed(cl, be, 502, srv->wrote, why);
    }
}

static const struct net_conn_ops server_ops = {
    .on_read = server_on_read,
    .on_eof = server_on_eof,
    .on_drain = server_on_drain,
    .on_connect = server_on_connect,
    .on_timeout = server_on_timeout,
    .on_close = server_on_close,
};

static struct bal_server *server_open(struct balancer *bal, struct bal_backend *be)
{
    struct bal_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    struct health_target *ht = &bal->ht[be->t.index];
    srv->bal = bal;
    srv->be = be;
    srv->c = net_connect(bal->loop, (struct sockaddr *)&ht->sa, ht->salen, &server_ops, srv);
    if (!srv->c) {
        free(srv);
        return NULL;
    }
    /* A response head must fit; bodies are consumed as they come. */
    srv->c->read_max = bal->resp_lim.max_header_size + 64 * 1024;
    be->nconns++;
    return srv;
}

static void attempt_start(struct bal_client *cl, struct bal_backend *be)
{
    struct balancer *bal = cl->bal;
    cl->tried[cl->attempts++] = be->t.index;
    cl->be = be;
    be->t.active++;
    be->requests++;
    struct bal_server *srv = be->idle;
    if (srv) {
        pool_unlink(srv);
        srv->cl = cl;
        cl->srv = srv;
        srv->wrote = 1;
        net_conn_set_timeout(srv->c, bal->cfg.server_timeout);
        cl->t_sent = ev_now(bal->loop);
        client_forward_body(cl, 1);
        return;
    }
    srv = server_open(bal, be);
    if (!srv) {
        cl->be = NULL;
        be->t.active--;
        attempt_failed(cl, be, 502, 0, strerror(errno));
        return;
    }
    srv->cl = cl;
    cl->srv = srv;
    net_conn_set_timeout(srv->c, bal->cfg.connect_timeout);
    /* queued now, sent when the connection is up; the body waits for it */
    net_conn_write(srv->c, buf_head(&cl->head), buf_size(&cl->head));
}

/* ---- configuration -------------------------------------------------------- */

static int cfg_seconds(lua_State *L, int idx, const char *field, double def, double *out,
                       char *err, size_t errlen)
{
    if (cfg_number(L, idx, field, def, out, err, errlen) < 0)
        return -1;
    if (*out <= 0) {
        snprintf(err, errlen, "%s must be positive", field);
        return -1;
    }
    return 0;
}

static int cfg_range(lua_State *L, int idx, const char *field, int64_t def, int64_t lo,
                     int64_t hi, int *out, char *err, size_t errlen)
{
    int64_t v;
    if (cfg_int(L, idx, field, def, &v, err, errlen) < 0)
        return -1;
    if (v < lo || v > hi) {
        snprintf(err, errlen, "%s must be in %lld..%lld", field, (long long)lo, (long long)hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int read_health(lua_State *L, int idx, struct health_cfg *h, char *err, size_t errlen)
{
    memset(h, 0, sizeof *h);
    h->passive_errors = 5;
    h->passive_cooldown = 10;
    idx = lua_absindex(L, idx);
    int t = lua_getfield(L, idx, "health");
    if (t == LUA_TTABLE) {
        int hi = lua_gettop(L);
        h->active = 1;
        if (cfg_string(L, hi, "path", "/healthz", h->path, sizeof h->path, err, errlen) < 0 ||
            cfg_seconds(L, hi, "interval", 2, &h->interval, err, errlen) < 0 ||
            cfg_range(L, hi, "rise", 2, 1, 1000, &h->rise, err, errlen) < 0 ||
            cfg_range(L, hi, "fall", 3, 1, 1000, &h->fall, err, errlen) < 0)
            goto fail;
        if (cfg_seconds(L, hi, "timeout", h->interval < 2 ? h->interval : 2, &h->timeout, err,
                        errlen) < 0)
            goto fail;
        if (h->path[0] != '/') {
            snprintf(err, errlen, "health.path must start with '/'");
            goto fail;
        }
    } else if (t != LUA_TNIL && !(t == LUA_TBOOLEAN && !lua_toboolean(L, -1))) {
        snprintf(err, errlen, "health must be a table");
        goto fail;
    }
    lua_pop(L, 1);
    t = lua_getfield(L, idx, "passive");
    if (t == LUA_TTABLE) {
        int pi = lua_gettop(L);
        if (cfg_range(L, pi, "errors", 5, 0, 1000000, &h->passive_errors, err, errlen) < 0 ||
            cfg_seconds(L, pi, "cooldown", 10, &h->passive_cooldown, err, errlen) < 0)
            goto fail;
    } else if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        h->passive_errors = 0;
    } else if (t != LUA_TNIL) {
        snprintf(err, errlen, "passive must be a table");
        goto fail;
    }
    lua_pop(L, 1);
    if (cfg_number(L, idx, "slow_start", 0, &h->slow_start, err, errlen) < 0)
        return -1;
    return 0;
fail:
    lua_pop(L, 1);
    return -1;
}

static int read_config(lua_State *L, int idx, struct bal_cfg *c, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    int64_t mh;
    if (cfg_string(L, idx, "listen", "127.0.0.1:8080", c->listen, sizeof c->listen, err,
                   errlen) < 0 ||
        cfg_string(L, idx, "policy", "round_robin", c->policy, sizeof c->policy, err, errlen) <
            0 ||
        cfg_string(L, idx, "policy_path", "", c->policy_path, sizeof c->policy_path, err,
                   errlen) < 0 ||
        cfg_string(L, idx, "fallback", "round_robin", c->fallback, sizeof c->fallback, err,
                   errlen) < 0 ||
        cfg_string(L, idx, "hash_on", "ip", c->hash_on, sizeof c->hash_on, err, errlen) < 0 ||
        cfg_range(L, idx, "retries", 2, 0, BAL_MAX_TRIES - 1, &c->retries, err, errlen) < 0 ||
        cfg_seconds(L, idx, "connect_timeout", 2, &c->connect_timeout, err, errlen) < 0 ||
        cfg_seconds(L, idx, "server_timeout", 30, &c->server_timeout, err, errlen) < 0 ||
        cfg_seconds(L, idx, "client_timeout", 60, &c->client_timeout, err, errlen) < 0 ||
        cfg_seconds(L, idx, "head_timeout", 10, &c->head_timeout, err, errlen) < 0 ||
        cfg_range(L, idx, "max_conns", 10000, 1, 10000000, &c->max_conns, err, errlen) < 0 ||
        cfg_int(L, idx, "max_header_size", 16384, &mh, err, errlen) < 0 ||
        cfg_range(L, idx, "max_headers", 100, 1, 10000, &c->lim.max_headers, err, errlen) < 0)
        return -1;
    int64_t rl;
    if (cfg_int(L, idx, "max_request_line", 8192, &rl, err, errlen) < 0)
        return -1;
    if (mh < 256 || mh > 1024 * 1024 || rl < 64 || rl > 1024 * 1024) {
        snprintf(err, errlen, "max_header_size and max_request_line must be in 256..1mb");
        return -1;
    }
    c->lim.max_header_size = (size_t)mh;
    c->lim.max_request_line = (size_t)rl;
    return read_health(L, idx, &c->health, err, errlen);
}

/* backends = { { name=, addr=, weight=, max_active= } | "host:port", ... } */
static int read_backends(struct balancer *bal, lua_State *L, int idx, char *err, size_t errlen)
{
    if (lua_getfield(L, idx, "backends") != LUA_TTABLE) {
        lua_pop(L, 1);
        snprintf(err, errlen, "backends must be a list of addresses or backend tables");
        return -1;
    }
    int n = (int)lua_rawlen(L, -1);
    if (n < 1 || n > BAL_MAX_BACKENDS) {
        lua_pop(L, 1);
        snprintf(err, errlen, "backends must list 1..%d backends, not %d", BAL_MAX_BACKENDS, n);
        return -1;
    }
    bal->be = calloc((size_t)n, sizeof *bal->be);
    bal->targets = calloc((size_t)n, sizeof *bal->targets);
    bal->ht = calloc((size_t)n, sizeof *bal->ht);
    if (!bal->be || !bal->targets || !bal->ht) {
        lua_pop(L, 1);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    bal->nbe = n;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        struct bal_backend *be = &bal->be[i];
        int64_t w = 1, ma = 0;
        int t = lua_rawgeti(L, -1, i + 1);
        if (t == LUA_TSTRING) {
            snprintf(be->addr, sizeof be->addr, "%s", lua_tostring(L, -1));
        } else if (t == LUA_TTABLE) {
            int bi = lua_gettop(L);
            if (cfg_string(L, bi, "addr", "", be->addr, sizeof be->addr, err, errlen) < 0 ||
                cfg_string(L, bi, "name", "", be->name, sizeof be->name, err, errlen) < 0 ||
                cfg_int(L, bi, "weight", 1, &w, err, errlen) < 0 ||
                cfg_int(L, bi, "max_active", 0, &ma, err, errlen) < 0)
                rc = -1;
        } else {
            snprintf(err, errlen, "backends[%d] must be an address or a table", i + 1);
            rc = -1;
        }
        lua_pop(L, 1);
        if (rc)
            break;
        if (!be->addr[0]) {
            snprintf(err, errlen, "backends[%d] has no addr", i + 1);
            rc = -1;
        } else if (w < 0 || w > 1000 || ma < 0 || ma > 10000000) {
            snprintf(err, errlen, "backends[%d]: weight must be 0..1000, max_active >= 0", i + 1);
            rc = -1;
        } else if (util_parse_addr(be->addr, &bal->ht[i].sa, &bal->ht[i].salen, err, errlen) <
                   0) {
            rc = -1;
        }
        if (!be->name[0])
            snprintf(be->name, sizeof be->name, "%s", be->addr);
        be->t.name = be->name;
        be->t.addr = be->addr;
        be->t.weight = (int)w;
        be->t.eff_weight = (int)w * LB_EFF_SCALE;
        be->t.max_active = (int)ma;
        be->t.index = i;
        bal->targets[i] = &be->t;
        bal->ht[i].t = &be->t;
    }
    lua_pop(L, 1);
    for (int i = 0; i < n && rc == 0; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(bal->be[i].name, bal->be[j].name) == 0) {
                snprintf(err, errlen, "two backends are named '%s'", bal->be[i].name);
                rc = -1;
                break;
            }
    return rc;
}

static int parse_hash_on(const char *h, int *kind, char *name, size_t namelen, char *err,
                         size_t errlen)
{
    if (strcmp(h, "ip") == 0) {
        *kind = HASH_IP;
    } else if (strcmp(h, "path") == 0) {
        *kind = HASH_PATH;
    } else if (strncmp(h, "header:", 7) == 0 && h[7]) {
        *kind = HASH_HEADER;
        snprintf(name, namelen, "%s", h + 7);
    } else if (strncmp(h, "cookie:", 7) == 0 && h[7]) {
        *kind = HASH_COOKIE;
        snprintf(name, namelen, "%s", h + 7);
    } else {
        snprintf(err, errlen, "hash_on must be ip, path, header:NAME or cookie:NAME, not '%s'", h);
        return -1;
    }
    return 0;
}

/* The built-in policy to run: the policy itself, or a Lua policy's fallback. */
static const struct lb_ops *policy_ops(const struct bal_cfg *c, char *err, size_t errlen)
{
    const char *builtin = c->policy;
    if (strcmp(c->policy, "lua") == 0) {
        builtin = c->fallback;
        if (!c->policy_path[0]) {
            snprintf(err, errlen, "policy 'lua' needs policy_path");
            return NULL;
        }
    }
    const struct lb_ops *ops = lb_ops_find(builtin);
    if (!ops)
        snprintf(err, errlen,
                 "unknown %s '%s' (round_robin, least_conn, p2c, chash, first, or a .lua file)",
                 builtin == c->policy ? "policy" : "fallback", builtin);
    return ops;
}

static void health_changed(void *ud)
{
    struct balancer *bal = ud;
    (void)bal; /* policies read the live fields; nothing is cached here */
}

/* ---- service operations ------------------------------------------------- */

static void bal_free_all(struct balancer *bal)
{
    health_stop(&bal->health);
    while (bal->clients)
        net_conn_abort(bal->clients->c, "shutdown");
    for (int i = 0; i < bal->nbe; i++)
        while (bal->be[i].idle)
            net_conn_abort(bal->be[i].idle->c, "shutdown");
    if (bal->listener)
        net_listener_close(bal->listener);
    bal->listener = NULL;
    if (bal->loop)
        ev_prepare_stop(bal->loop, &bal->reap);
    reap_cb(bal->loop, &bal->reap, 0);
    lb_lua_free(bal->lua);
    if (bal->lb.ops)
        lb_free(&bal->lb);
    buf_free(&bal->out);
    free(bal->msg.hdrs);
    free(bal->be);
    free(bal->targets);
    free(bal->ht);
    free(bal);
}

static struct service *bal_start(struct runtime *rt, lua_State *L, int idx, char *err,
                                 size_t errlen)
{
    idx = lua_absindex(L, idx);
    struct balancer *bal = calloc(1, sizeof *bal);
    if (!bal) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    bal->base.kind = &balancer_service_kind;
    bal->base.rt = rt;
    bal->loop = rt->loop;
    ev_prepare_init(&bal->reap, reap_cb);
    bal->reap.data = bal;
    buf_init(&bal->out);
    struct bal_cfg *c = &bal->cfg;
    if (cfg_string(L, idx, "node", "", bal->base.node, sizeof bal->base.node, err, errlen) < 0 ||
        read_config(L, idx, c, err, errlen) < 0 || read_backends(bal, L, idx, err, errlen) < 0)
        goto fail;
    bal->resp_lim = c->lim;
    /* responses and our own rewritten heads get more room than clients */
    bal->resp_lim.max_header_size = c->lim.max_header_size * 2 + 4096;
    bal->resp_lim.max_request_line = c->lim.max_request_line + 64;
    bal->resp_lim.max_headers = c->lim.max_headers + 8;
    bal->msg.max_hdrs = bal->resp_lim.max_headers;
    bal->msg.hdrs = calloc((size_t)bal->msg.max_hdrs, sizeof *bal->msg.hdrs);
    if (!bal->msg.hdrs) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    const struct lb_ops *ops;
    if (parse_hash_on(c->hash_on, &bal->hash_kind, bal->hash_name, sizeof bal->hash_name, err,
                      errlen) < 0 ||
        !(ops = policy_ops(c, err, errlen)) ||
        lb_init(&bal->lb, ops, bal->targets, bal->nbe, err, errlen) < 0)
        goto fail;
    health_start(&bal->health, bal->loop, &c->health, bal->ht, bal->nbe, health_changed, bal);
    if (strcmp(c->policy, "lua") == 0) {
        bal->lua = lb_lua_new(c->policy_path, bal->targets, bal->nbe, err, errlen);
        if (!bal->lua)
            goto fail;
    }
    bal->listener = net_listen(bal->loop, c->listen, 0, &client_ops, client_accept, bal, err,
                               errlen);
    if (!bal->listener)
        goto fail;
    bal->listener->max_conns = c->max_conns;
    snprintf(bal->base.listen, sizeof bal->base.listen, "%s", bal->listener->addr);
    log_info("balancer listening on %s: %d backends, policy %s%s%s", bal->base.listen, bal->nbe,
             c->policy, bal->lua ? " " : "", bal->lua ? c->policy_path : "");
    return &bal->base;
fail:
    bal_free_all(bal);
    return NULL;
}

static void bal_drain(struct service *s)
{
    struct balancer *bal = (struct balancer *)s;
    bal->draining = 1;
    if (bal->listener) {
        net_listener_close(bal->listener);
        bal->listener = NULL;
    }
    health_stop(&bal->health);
    for (int i = 0; i < bal->nbe; i++)
        while (bal->be[i].idle)
            net_conn_abort(bal->be[i].idle->c, "draining");
    /* idle clients go now; busy ones after their response */
    struct bal_client *cl = bal->clients, *next;
    for (; cl; cl = next) {
        next = cl->next;
        if (cl->state == CL_HEAD && buf_size(&cl->c->rbuf) == 0)
            net_conn_abort(cl->c, "draining");
        else
            cl->keep_alive = 0;
    }
}

static int bal_idle(struct service *s) { return ((struct balancer *)s)->nclients == 0; }

static void bal_free(struct service *s) { bal_free_all((struct balancer *)s); }

static void bal_describe(struct service *s, struct buf *out)
{
    struct balancer *bal = (struct balancer *)s;
    int up = 0;
    for (int i = 0; i < bal->nbe; i++)
        up += bal->be[i].t.healthy;
    buf_printf(out, "balancer %s: %d/%d backends healthy%s, %d clients, %llu requests",
               bal->base.listen, up, bal->nbe, bal->health.panic ? " (panic)" : "",
               bal->nclients, (unsigned long long)bal->requests);
}

static void json_str(struct buf *out, const char *s)
{
    buf_append(out, "\"", 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            buf_printf(out, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            buf_printf(out, "\\u%04x", *s);
        else
            buf_append(out, s, 1);
    }
    buf_append(out, "\"", 1);
}

static void bal_status_json(struct service *s, struct buf *out)
{
    struct balancer *bal = (struct balancer *)s;
    buf_printf(out,
               "\"policy\":\"%s\",\"clients\":%d,\"requests\":%llu,\"retries\":%llu,"
               "\"errors_sent\":%llu,\"lua_fallbacks\":%llu,\"panic\":%s,\"backends\":[",
               bal->cfg.policy, bal->nclients, (unsigned long long)bal->requests,
               (unsigned long long)bal->retries, (unsigned long long)bal->errors_sent,
               (unsigned long long)bal->lua_fallbacks, bal->health.panic ? "true" : "false");
    for (int i = 0; i < bal->nbe; i++) {
        struct bal_backend *be = &bal->be[i];
        buf_append_str(out, i ? ",{\"name\":" : "{\"name\":");
        json_str(out, be->name);
        buf_append_str(out, ",\"addr\":");
        json_str(out, be->addr);
        buf_printf(out,
                   ",\"healthy\":%s,\"usable\":%s,\"ejected\":%s,\"weight\":%d,"
                   "\"active\":%d,\"requests\":%llu,\"failures\":%llu,\"ewma_ms\":%.3f,"
                   "\"connections\":%d,\"idle\":%d,\"checks\":%llu,\"checks_failed\":%llu}",
                   be->t.healthy ? "true" : "false", be->t.usable ? "true" : "false",
                   bal->ht[i].ejected_until > 0 ? "true" : "false", be->t.weight, be->t.active,
                   (unsigned long long)be->requests, (unsigned long long)be->failures,
                   be->t.ewma_ms, be->nconns, be->nidle, (unsigned long long)bal->ht[i].checks,
                   (unsigned long long)bal->ht[i].checks_failed);
    }
    buf_append_str(out, "]");
}

static void bal_metrics(struct service *s, struct buf *out, const char *labels)
{
    struct balancer *bal = (struct balancer *)s;
    buf_printf(out, "strata_balancer_requests_total{%s} %llu\n", labels,
               (unsigned long long)bal->requests);
    buf_printf(out, "strata_balancer_retries_total{%s} %llu\n", labels,
               (unsigned long long)bal->retries);
    buf_printf(out, "strata_balancer_errors_sent_total{%s} %llu\n", labels,
               (unsigned long long)bal->errors_sent);
    buf_printf(out, "strata_balancer_lua_fallbacks_total{%s} %llu\n", labels,
               (unsigned long long)bal->lua_fallbacks);
    buf_printf(out, "strata_balancer_clients{%s} %d\n", labels, bal->nclients);
    buf_printf(out, "strata_balancer_panic{%s} %d\n", labels, bal->health.panic);
    for (int i = 0; i < bal->nbe; i++) {
        struct bal_backend *be = &bal->be[i];
        buf_printf(out, "strata_balancer_backend_up{%s,backend=\"%s\"} %d\n", labels, be->name,
                   be->t.healthy);
        buf_printf(out, "strata_balancer_backend_requests_total{%s,backend=\"%s\"} %llu\n",
                   labels, be->name, (unsigned long long)be->requests);
        buf_printf(out, "strata_balancer_backend_failures_total{%s,backend=\"%s\"} %llu\n",
                   labels, be->name, (unsigned long long)be->failures);
        buf_printf(out, "strata_balancer_backend_active{%s,backend=\"%s\"} %d\n", labels,
                   be->name, be->t.active);
        buf_printf(out, "strata_balancer_backend_latency_ewma_ms{%s,backend=\"%s\"} %.3f\n",
                   labels, be->name, be->t.ewma_ms);
    }
}

/* Compares the new backend list with the running one: names and addresses
 * must match (pools, health and in-flight requests hang on them); weights
 * may change. Returns 0 with the new weights in w[], or -1. */
static int reload_backends(struct balancer *bal, lua_State *L, int idx, int *w, char *err,
                           size_t errlen)
{
    struct balancer tmp;
    memset(&tmp, 0, sizeof tmp);
    int rc = read_backends(&tmp, L, idx, err, errlen);
    if (rc == 0 && tmp.nbe != bal->nbe) {
        snprintf(err, errlen, "balancer %s: adding or removing backends needs a restart",
                 bal->base.listen);
        rc = -1;
    }
    for (int i = 0; rc == 0 && i < bal->nbe; i++) {
        if (strcmp(tmp.be[i].name, bal->be[i].name) || strcmp(tmp.be[i].addr, bal->be[i].addr)) {
            snprintf(err, errlen, "balancer %s: changing backend %s needs a restart",
                     bal->base.listen, bal->be[i].name);
            rc = -1;
        }
        w[i] = tmp.be[i].t.weight;
    }
    free(tmp.be);
    free(tmp.targets);
    free(tmp.ht);
    return rc;
}

/* Hot reload: a new policy (the Lua file is loaded and validated again
 * even when its path is unchanged), fallback, hash key, retries, timeouts,
 * limits, health settings and weights. Requests in flight are unaffected:
 * a pick is synchronous, so the old policy is freed at once. */
static int bal_reload(struct service *s, lua_State *L, int idx, int dry_run, struct buf *changes,
                      char *err, size_t errlen)
{
    struct balancer *bal = (struct balancer *)s;
    idx = lua_absindex(L, idx);
    struct bal_cfg c;
    int hash_kind;
    char hash_name[96] = "";
    int *w = calloc((size_t)bal->nbe, sizeof *w);
    struct lb_lua *lua = NULL;
    struct lb lb = {0};
    const struct lb_ops *ops;
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (read_config(L, idx, &c, err, errlen) < 0 ||
        reload_backends(bal, L, idx, w, err, errlen) < 0 ||
        parse_hash_on(c.hash_on, &hash_kind, hash_name, sizeof hash_name, err, errlen) < 0 ||
        !(ops = policy_ops(&c, err, errlen)))
        goto fail;
    if (strcmp(c.listen, bal->cfg.listen) != 0) {
        snprintf(err, errlen, "balancer %s: a new listen address needs a restart",
                 bal->base.listen);
        goto fail;
    }
    if (strcmp(c.policy, "lua") == 0 &&
        !(lua = lb_lua_new(c.policy_path, bal->targets, bal->nbe, err, errlen)))
        goto fail;
    if (lb_init(&lb, ops, bal->targets, bal->nbe, err, errlen) < 0)
        goto fail;
    int new_policy = strcmp(c.policy, bal->cfg.policy) || strcmp(c.policy_path, bal->cfg.policy_path);
    buf_printf(changes, "node %s: balancer %s: policy %s%s\n", bal->base.node,
               bal->base.listen, lua ? c.policy_path : c.policy,
               new_policy ? " (new)" : " (reloaded)");
    if (dry_run) {
        lb_lua_free(lua);
        lb_free(&lb);
        free(w);
        return 0;
    }
    lb_lua_free(bal->lua);
    bal->lua = lua;
    lb_free(&bal->lb);
    int health_same = memcmp(&c.health, &bal->cfg.health, sizeof c.health) == 0;
    if (c.lim.max_headers != bal->cfg.lim.max_headers) {
        struct http_hdr *h = calloc((size_t)c.lim.max_headers + 8, sizeof *h);
        if (h) {
            free(bal->msg.hdrs);
            bal->msg.hdrs = h;
            bal->msg.max_hdrs = c.lim.max_headers + 8;
        } else {
            c.lim.max_headers = bal->cfg.lim.max_headers;
        }
    }
    bal->cfg = c;
    bal->hash_kind = hash_kind;
    memcpy(bal->hash_name, hash_name, sizeof hash_name);
    bal->resp_lim = c.lim;
    bal->resp_lim.max_header_size = c.lim.max_header_size * 2 + 4096;
    bal->resp_lim.max_request_line = c.lim.max_request_line + 64;
    bal->resp_lim.max_headers = bal->msg.max_hdrs;
    for (int i = 0; i < bal->nbe; i++)
        bal->be[i].t.weight = w[i];
    bal->lb = lb; /* after the weights: lb_init built its state from the old ones */
    if (lb.ops->update)
        lb.ops->update(&bal->lb);
    if (!health_same && !bal->draining) {
        health_stop(&bal->health);
        health_start(&bal->health, bal->loop, &c.health, bal->ht, bal->nbe, health_changed, bal);
    } else {
        health_refresh(&bal->health);
    }
    log_info("balancer %s reloaded: policy %s", bal->base.listen,
             bal->lua ? c.policy_path : c.policy);
    free(w);
    return 0;
fail:
    lb_lua_free(lua);
    if (lb.ops)
        lb_free(&lb);
    free(w);
    return -1;
}

const struct service_kind balancer_service_kind = {
    .name = "balancer",
    .start = bal_start,
    .drain = bal_drain,
    .idle = bal_idle,
    .free = bal_free,
    .describe = bal_describe,
    .status_json = bal_status_json,
    .metrics = bal_metrics,
    .reload = bal_reload,
};

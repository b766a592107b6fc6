/* balancer: the proxy core -- client connections (parse, dispatch, stream
 * the request body), server connections (pool, stream the response back)
 * and the retry rules. See balancer.h for the overview and
 * balancer_proxy.h for what the service drives. */
#include "balancer_proxy.h"

#include <errno.h>
#include <http_parser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <xxhash.h>

#include "log.h"
#include "util.h"

static int client_next_request(struct bal_client *cl);
static void client_pump(struct bal_client *cl);
static void client_forward_body(struct bal_client *cl, int with_head);
static void attempt_start(struct bal_client *cl, struct bal_backend *be);
static void reply_error(struct bal_client *cl, int status);
static void server_detach(struct bal_client *cl, int reusable);
static void tunnel_pipe(struct bal_client *cl, struct net_conn *from, struct net_conn *to);
static void tunnel_end(struct bal_client *cl, const char *why);

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

static void bal_reap(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)revents;
    struct bal_proxy *bal = w->data;
    while (bal->dead_clients) {
        struct bal_client *cl = bal->dead_clients;
        bal->dead_clients = cl->next;
        buf_free(&cl->head);
        buf_free(&cl->held);
        access_rec_free(&cl->rec);
        free(cl);
    }
    while (bal->dead_servers) {
        struct bal_server *s = bal->dead_servers;
        bal->dead_servers = s->next;
        free(s);
    }
    for (struct bal_gen **gp = &bal->retired; *gp;) {
        struct bal_gen *g = *gp;
        if (g->refs == 0) {
            *gp = g->next;
            bal_gen_free(g);
        } else {
            gp = &g->next;
        }
    }
    ev_prepare_stop(loop, w);
}

static void bal_reap_start(struct bal_proxy *bal)
{
    if (!ev_is_active(&bal->reap))
        ev_prepare_start(bal->loop, &bal->reap);
}

static void bal_gen_unref(struct bal_proxy *bal, struct bal_gen *g)
{
    if (--g->refs == 0 && g->retired)
        bal_reap_start(bal);
}

/* ---- backend choice -------------------------------------------------------- */

static uint64_t request_hash(struct bal_client *cl, const struct http_msg *m)
{
    struct bal_proxy *bal = cl->bal;
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
    struct bal_proxy *bal = cl->bal;
    struct bal_gen *g = bal->gen;
    /* backends tried in an older generation are not in this one's arrays */
    int ntried = cl->tried_gen == g ? cl->ntried : 0;
    for (int i = 0; i < ntried; i++)
        g->targets[cl->tried[i]]->skip = 1;
    struct lb_req r = {.hash = cl->hash, .msg = m, .client = cl->c->peer};
    struct lb_target *t = g->lb.ops->pick(&g->lb, &r);
    for (int i = 0; i < ntried; i++)
        g->targets[cl->tried[i]]->skip = 0;
    return (struct bal_backend *)t;
}

/* ---- upgrades ----------------------------------------------------------- */

/* 1 when a comma-separated header value lists `tok` (case-insensitive). */
static int value_has_token(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    const char *e = v + n;
    while (v < e) {
        while (v < e && (*v == ' ' || *v == '\t' || *v == ','))
            v++;
        const char *s = v;
        while (v < e && *v != ',')
            v++;
        const char *t = v;
        while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if ((size_t)(t - s) == tl && strncasecmp(s, tok, tl) == 0)
            return 1;
    }
    return 0;
}

/* A WebSocket handshake (RFC 6455 4.1): an HTTP/1.1 GET without a body,
 * with `Connection: upgrade` and `Upgrade: websocket`. Other upgrades
 * (h2c, TLS) are not tunnelled: their headers are dropped as before. */
static int wants_websocket(const struct http_msg *m)
{
    if (m->minor == 0 || m->method != HTTP_GET || m->body != HTTP_BODY_NONE)
        return 0;
    int conn = 0, ws = 0;
    for (int i = 0; i < m->nhdrs; i++) {
        const struct http_hdr *h = &m->hdrs[i];
        if (h->kind == HH_CONNECTION && value_has_token(h->value, h->value_len, "upgrade"))
            conn = 1;
        else if (h->kind == HH_UPGRADE && value_has_token(h->value, h->value_len, "websocket"))
            ws = 1;
    }
    return conn && ws;
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
    struct bal_proxy *bal = cl->bal;
    struct buf *b = &cl->head;
    buf_reset(b);
    size_t iplen = strlen(cl->ip);
    size_t bound = m->head_len + iplen + strlen(bal->listen) + 200;
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
    if (cl->upgrade) /* the hop-by-hop pair a handshake needs, as we send it */
        p = PUT_LIT(p, "Connection: upgrade\r\nUpgrade: websocket\r\n");
    if (!has_host) { /* HTTP/1.0 client: HTTP/1.1 upstream needs one */
        p = PUT_LIT(p, "Host: ");
        p = put(p, bal->listen, strlen(bal->listen));
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
static void reply_error_after(struct bal_client *cl, int status, int retry_after)
{
    struct bal_proxy *bal = cl->bal;
    const char *be_name = cl->be ? cl->be->name : NULL;
    if (cl->srv)
        server_detach(cl, 0);
    if (cl->resp_sent) { /* part of a response is out: only closing can tell */
        if (bal->alog) /* the backend's status stands: the client saw it */
            access_log_request(bal->alog, &cl->rec, cl->ip, be_name, 0, ev_now(bal->loop));
        net_conn_abort(cl->c, "response failed midway");
        return;
    }
    /* a held response is dropped: the client gets only this error */
    cl->holding = 0;
    buf_reset(&cl->held);
    bal->errors_sent++;
    /* a client that half-closed still gets the requests it sent before */
    int more = cl->eof && buf_size(&cl->c->rbuf) > 0;
    int keep = cl->keep_alive && cl->req_done && (!cl->eof || more) && !bal->draining &&
               cl->state == CL_BUSY && status >= 500;
    const char *reason = status_reason(status);
    char msg[256];
    char ra[32] = "";
    if (retry_after > 0)
        snprintf(ra, sizeof ra, "Retry-After: %d\r\n", retry_after);
    int n = snprintf(msg, sizeof msg,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "%s%s\r\n%s\n",
                     status, reason, strlen(reason) + 1, ra,
                     keep ? (cl->http10 ? "Connection: keep-alive\r\n" : "")
                          : "Connection: close\r\n",
                     reason);
    if (bal->alog) {
        cl->rec.bytes = (uint64_t)n;
        access_log_request(bal->alog, &cl->rec, cl->ip, be_name, status, ev_now(bal->loop));
    }
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

static void reply_error(struct bal_client *cl, int status) { reply_error_after(cl, status, 0); }

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
    struct bal_proxy *bal = cl->bal;
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
    cl->resp_sent = cl->holding = 0;
    cl->body_touched = 0;
    cl->attempts = cl->ntried = 0;
    cl->req_done = 1; /* for reply_error: nothing more is read after a bad head */
    if (bal->alog)
        access_rec_begin(&cl->rec, n < 0 ? NULL : m, ev_now(bal->loop));
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
    cl->upgrade = wants_websocket(m);
    cl->req_body = m->body;
    cl->req_left = m->content_length;
    cl->req_done = m->body == HTTP_BODY_NONE;
    if (m->body == HTTP_BODY_CHUNKED)
        http_chunked_init(&cl->req_ck, bal->cfg.lim.max_header_size);
    if (build_request_head(cl, m) < 0) {
        net_conn_abort(c, "out of memory");
        return 0;
    }
    cl->hash = bal->gen->lb.wants_hash ? request_hash(cl, m) : 0;
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
    struct bal_proxy *bal = cl->bal;
    struct bal_server *srv = cl->srv;
    /* The head and the body bytes go out in one writev, the body straight
     * from the client's read buffer: consumed first, it stays where it is
     * until this callback returns. */
    struct iovec iov[2];
    int niov = 0;
    if (with_head && buf_size(&cl->head) > 0)
        iov[niov++] = (struct iovec){(void *)buf_head(&cl->head), buf_size(&cl->head)};
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
            iov[niov++] = (struct iovec){(void *)buf_head(rb), take};
            buf_consume(rb, take);
        }
        net_conn_set_timeout(cl->c, cl->req_done ? 0 : bal->cfg.client_timeout);
        /* a large upload: read it in big steps (see BAL_STREAM_READ) */
        cl->c->read_want = 0;
        if (!cl->req_done && cl->req_body == HTTP_BODY_LENGTH && cl->req_left > BAL_HOLD_MAX / 4)
            cl->c->read_want = buf_size(rb) + (cl->req_left < BAL_STREAM_READ
                                                   ? (size_t)cl->req_left
                                                   : BAL_STREAM_READ);
    }
    if (niov == 0)
        return;
    net_conn_writev(srv->c, iov, niov);
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
    if (cl->tunnel)
        tunnel_pipe(cl, c, cl->srv->c);
    else if (cl->state == CL_HEAD)
        client_pump(cl);
    else if (cl->state == CL_BUSY && !cl->req_done && cl->srv && cl->srv->connected)
        client_forward_body(cl, 0);
}

static void client_on_eof(struct net_conn *c)
{
    struct bal_client *cl = c->data;
    cl->eof = 1;
    if (cl->tunnel) {
        tunnel_end(cl, "client closed the tunnel");
        return;
    }
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
        if (cl->tunnel) {
            net_conn_set_timeout(c, cl->bal->cfg.tunnel_timeout);
            net_conn_set_timeout(srv->c, cl->bal->cfg.tunnel_timeout);
        } else {
            net_conn_set_timeout(c, 0);
            net_conn_set_timeout(srv->c, cl->bal->cfg.server_timeout);
        }
        net_conn_resume(srv->c);
    }
}

static void client_on_timeout(struct net_conn *c)
{
    struct bal_client *cl = c->data;
    if (cl->tunnel) {
        tunnel_end(cl, "tunnel idle");
        return;
    }
    if (cl->state == CL_HEAD && buf_size(&c->rbuf) > 0) {
        cl->state = CL_BUSY;
        cl->keep_alive = 0;
        log_debug("%s: request head not complete in time", c->peer);
        reply_error(cl, 408);
    } else if (cl->state == CL_BUSY && !cl->req_done && !cl->resp_sent) {
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
    if (!cl)
        return; /* refused in bal_proxy_accept */
    struct bal_proxy *bal = cl->bal;
    if (cl->tunnel) {
        cl->tunnel = 0;
        bal->tunnels--;
    }
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
    bal_reap_start(bal);
}

const struct net_conn_ops bal_client_ops = {
    .on_read = client_on_read,
    .on_eof = client_on_eof,
    .on_drain = client_on_drain,
    .on_timeout = client_on_timeout,
    .on_close = client_on_close,
};

int bal_proxy_accept(struct net_conn *c, void *data)
{
    struct bal_proxy *bal = data;
    c->data = NULL; /* until it is a client: on_close then has nothing to do */
    if (bal->draining)
        return -1;
    struct bal_client *cl = calloc(1, sizeof *cl);
    if (!cl)
        return -1;
    cl->bal = bal;
    cl->c = c;
    buf_init(&cl->head);
    buf_init(&cl->held);
    peer_ip(c->peer, cl->ip, sizeof cl->ip);
    c->data = cl;
    /* Room for one full head: pipelined requests beyond it wait in the
     * kernel, which is what bounds a client that never reads. */
    c->read_max = bal->cfg.lim.max_request_line + bal->cfg.lim.max_header_size + 4096;
    /* and a client that pipelines without reading stops being read once
     * this much output waits for it */
    c->write_high = 4 * BAL_HIGH;
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

/* The attempt is over (answered or failed): the backend has one request
 * less in flight, and its generation one reference less. */
static void attempt_end(struct bal_client *cl)
{
    struct bal_backend *be = cl->be;
    if (!be)
        return;
    cl->be = NULL;
    be->t.active--;
    bal_gen_unref(cl->bal, be->gen);
}

/* Ends the current attempt's use of its server connection: back to the pool
 * when it can carry another request, closed otherwise. */
static void server_detach(struct bal_client *cl, int reusable)
{
    struct bal_proxy *bal = cl->bal;
    struct bal_server *srv = cl->srv;
    struct bal_backend *be = srv->be;
    cl->srv = NULL;
    srv->cl = NULL;
    srv->c->read_want = 0;
    cl->c->read_want = 0;
    attempt_end(cl);
    if (cl->paused_by_srv) {
        /* the client is in a callback or between requests: resuming runs
         * no request of it from here (its state is not CL_HEAD yet) */
        cl->paused_by_srv = 0;
        net_conn_resume(cl->c);
    }
    if (reusable && !bal->draining && be->gen == bal->gen && be->nidle < bal->cfg.pool_max_idle &&
        buf_size(&srv->c->rbuf) == 0) {
        if (srv->paused_by_client) { /* nothing buffered: resuming reads nothing now */
            srv->paused_by_client = 0;
            net_conn_resume(srv->c);
        }
        srv->in_pool = 1;
        srv->next = be->idle;
        srv->prev = NULL;
        if (be->idle)
            be->idle->prev = srv;
        be->idle = srv;
        be->nidle++;
        net_conn_set_timeout(srv->c, bal->cfg.pool_idle_timeout);
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
    struct bal_proxy *bal = cl->bal;
    be->failures++;
    be->t.errors++;
    health_report(&be->gen->health, be->t.index, 0);
    int may_retry = !cl->body_touched && (cl->idempotent || !sent) &&
                    cl->attempts <= bal->cfg.retries && cl->attempts < BAL_MAX_TRIES &&
                    !cl->resp_sent;
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

/* The attempt could not open a backend socket for want of something of
 * this node's own (descriptors above all). That says nothing about the
 * backend: no failure is counted, no health changes, no retry on another
 * backend (it would fail the same way); the client gets a 503 it may retry
 * shortly, and the shortage is logged at most once a minute. */
static void local_shortage(struct bal_client *cl, struct bal_backend *be, int err)
{
    struct bal_proxy *bal = cl->bal;
    bal->local_shortages++;
    if (be->requests > 0)
        be->requests--; /* it never reached the backend */
    unsigned long skipped;
    if (log_limit_allow(&bal->local_log, (double)util_mono_us() / 1e6, 60.0, &skipped))
        log_warn("cannot open a connection to backend %s: %s on this node; answering 503, "
                 "backend health unchanged (%lu more since the last warning; raise the "
                 "descriptor limit or lower max_conns)",
                 be->name, strerror(err), skipped);
    reply_error_after(cl, 503, 1);
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

/* Whether a response is held back instead of relayed as it arrives: every
 * final response, until it is complete or passes BAL_HOLD_MAX. A backend
 * that fails before then has sent the client nothing, so the request is
 * retried elsewhere when the retry rules allow (attempt_failed: never a
 * POST that reached it) and otherwise answered with a clean 502/504 rather
 * than a truncated response. Holding costs no extra copy: the bytes are
 * gathered in `held` instead of the shared scratch buffer and written once.
 * Event streams are open-ended by nature and are relayed at once; they are
 * never Content-Length framed, so the header lookup stays off the common
 * path. */
static int response_holdable(const struct http_msg *m)
{
    if (m->body == HTTP_BODY_NONE || m->body == HTTP_BODY_LENGTH)
        return 1;
    const struct http_hdr *h = http_msg_find(m, "content-type");
    static const char es[] = "text/event-stream";
    return !(h && h->value_len >= sizeof es - 1 && strncasecmp(h->value, es, sizeof es - 1) == 0);
}

/* Relays the held response; from now on it streams, and the request can no
 * longer be retried. Returns -1 when the client or the attempt went away
 * while writing. */
static int held_release(struct bal_client *cl)
{
    struct bal_server *srv = cl->srv;
    cl->holding = 0;
    cl->resp_sent = 1;
    if (buf_size(&cl->held) == 0)
        return 0;
    cl->rec.bytes += buf_size(&cl->held);
    struct iovec iov = {(void *)buf_head(&cl->held), buf_size(&cl->held)};
    net_conn_writev(cl->c, &iov, 1); /* copied only if the socket does not take it */
    if (cl->dead)
        return -1;
    buf_reset(&cl->held);
    /* most responses are small: do not keep a large block per client */
    buf_shrink(&cl->held, 16 * 1024);
    return cl->srv != srv ? -1 : 0;
}

/* A backend answered with something unusable (bad head or framing). */
static void response_invalid(struct bal_client *cl, struct bal_backend *be, const char *what)
{
    log_warn("backend %s sent %s", be->name, what);
    be->failures++;
    be->t.errors++;
    health_report(&be->gen->health, be->t.index, 0);
    cl->keep_alive = 0;
    reply_error(cl, 502);
}

/* The response is complete: release the server, then serve the next
 * request of this client (or close). */
static void response_done(struct bal_client *cl)
{
    struct bal_proxy *bal = cl->bal;
    if (bal->alog)
        access_log_request(bal->alog, &cl->rec, cl->ip, cl->be ? cl->be->name : NULL, 0,
                           ev_now(bal->loop));
    server_detach(cl, cl->resp_keep && cl->req_done);
    if (cl->dead)
        return;
    if (cl->close_after || !cl->keep_alive || !cl->req_done || bal->draining) {
        cl->state = CL_CLOSING;
        net_conn_set_timeout(cl->c, bal->cfg.client_timeout);
        net_conn_close(cl->c, "response done");
        return;
    }
    /* Between requests a keep-alive client holds no buffer of its own: the
     * kept head (for retries), the held response and a drained output
     * block go back now, so thousands of idle clients cost only their
     * structs (the next request allocates again). */
    buf_free(&cl->head);
    buf_free(&cl->held);
    net_conn_idle(cl->c);
    cl->state = CL_HEAD;
    net_conn_update(cl->c);
    client_pump(cl);
}

/* ---- tunnels (upgraded connections) ------------------------------------ */

/* The backend switched protocols (101) for an upgrade request: relay the
 * 101, then copy bytes both ways (tunnel_pipe) until either side closes or
 * both are silent for tunnel_timeout. The attempt stays open -- the backend
 * counts the tunnel as a request in flight, and its generation stays
 * referenced -- until the tunnel ends. */
static void tunnel_start(struct bal_client *cl, struct bal_server *srv, const struct http_msg *m,
                         size_t n, struct buf *pass)
{
    struct bal_proxy *bal = cl->bal;
    struct bal_backend *be = srv->be;
    struct net_conn *sc = srv->c;
    const char *p = buf_head(&sc->rbuf);
    double ms = (ev_now(sc->loop) - cl->t_sent) * 1000.0;
    be->t.ewma_ms = be->t.ewma_ms == 0 ? ms : be->t.ewma_ms * 0.8 + ms * 0.2;
    health_report(&be->gen->health, be->t.index, 1);
    /* the status line as ours, end-to-end headers as sent, and the
     * hop-by-hop pair of a handshake */
    const char *eol = memchr(p, '\r', m->head_len);
    buf_append(pass, "HTTP/1.1", 8);
    buf_append(pass, p + 8, (size_t)(eol - p) - 8);
    buf_append(pass, "\r\n", 2);
    for (int i = 0; i < m->nhdrs; i++) {
        const struct http_hdr *h = &m->hdrs[i];
        if (h->kind == HH_CONNECTION || h->kind == HH_KEEP_ALIVE ||
            h->kind == HH_PROXY_CONNECTION || h->kind == HH_TE || h->kind == HH_UPGRADE ||
            h->kind == HH_LISTED)
            continue;
        const char *le = memchr(h->value, '\n', (size_t)(p + m->head_len - h->value));
        buf_append(pass, h->name, (size_t)(le + 1 - h->name));
    }
    buf_append_str(pass, "Connection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    buf_consume(&sc->rbuf, n);
    cl->tunnel = 1;
    cl->resp_head_done = cl->resp_sent = 1;
    cl->holding = 0;
    bal->tunnels++;
    bal->tunnels_total++;
    /* from here both connections only ever carry whole reads across */
    cl->c->read_max = 64 * 1024;
    sc->read_max = 64 * 1024;
    net_conn_set_timeout(sc, bal->cfg.tunnel_timeout);
    net_conn_set_timeout(cl->c, bal->cfg.tunnel_timeout);
    net_conn_write(cl->c, buf_head(pass), buf_size(pass));
    if (cl->dead || cl->srv != srv)
        return;
    /* what either side sent after its head is the first tunnelled bytes */
    if (buf_size(&sc->rbuf) > 0)
        tunnel_pipe(cl, sc, cl->c);
    if (!cl->dead && cl->srv == srv && buf_size(&cl->c->rbuf) > 0)
        tunnel_pipe(cl, cl->c, sc);
    if (!cl->dead)
        net_conn_update(cl->c);
}

/* Moves what `from` received to `to`. Unsent bytes above BAL_HIGH towards
 * one side stop reading the other until they drain (the on_drain hooks
 * resume it). Traffic either way keeps both connections alive. */
static void tunnel_pipe(struct bal_client *cl, struct net_conn *from, struct net_conn *to)
{
    struct bal_proxy *bal = cl->bal;
    struct bal_server *srv = cl->srv;
    struct buf *rb = &from->rbuf;
    size_t n = buf_size(rb);
    if (n == 0)
        return;
    struct iovec iov = {(void *)buf_head(rb), n};
    buf_consume(rb, n); /* the bytes stay put until the callback returns */
    net_conn_writev(to, &iov, 1);
    if (cl->dead || cl->srv != srv)
        return; /* the write failed and closed the tunnel */
    net_conn_set_timeout(cl->c, bal->cfg.tunnel_timeout);
    net_conn_set_timeout(srv->c, bal->cfg.tunnel_timeout);
    if (buf_size(&to->wbuf) > BAL_HIGH) {
        if (from == cl->c && !cl->paused_by_srv) {
            cl->paused_by_srv = 1;
            net_conn_pause(from);
        } else if (from == srv->c && !srv->paused_by_client) {
            srv->paused_by_client = 1;
            net_conn_pause(from);
        }
    }
    net_conn_update(from);
}

/* Either side closed (or both went silent): what is queued for each side
 * is still sent, then both close. */
static void tunnel_end(struct bal_client *cl, const char *why)
{
    struct bal_proxy *bal = cl->bal;
    struct bal_server *srv = cl->srv;
    if (cl->tunnel) {
        cl->tunnel = 0;
        bal->tunnels--;
    }
    if (srv) {
        cl->srv = NULL;
        srv->cl = NULL;
        attempt_end(cl);
        net_conn_set_timeout(srv->c, bal->cfg.client_timeout);
        net_conn_close(srv->c, why);
    }
    if (!cl->dead) {
        cl->state = CL_CLOSING;
        net_conn_set_timeout(cl->c, bal->cfg.client_timeout);
        net_conn_close(cl->c, why);
    }
}

static void server_on_read(struct net_conn *c)
{
    struct bal_server *srv = c->data;
    struct bal_client *cl = srv->cl;
    if (!cl) {
        net_conn_abort(c, "unexpected bytes on an idle connection");
        return;
    }
    if (cl->tunnel) {
        tunnel_pipe(cl, c, cl->c);
        return;
    }
    struct bal_proxy *bal = cl->bal;
    struct bal_backend *be = srv->be;
    struct buf *rb = &c->rbuf;
    /* `pass` goes to the client as this callback ends; the final response
     * is gathered in `out`: pass itself, or the held buffer */
    struct buf *pass = &bal->out;
    buf_reset(pass);
    struct buf *out = cl->holding ? &cl->held : pass;
    /* Body bytes of a streaming response are not copied: `direct` points
     * into rb (consumed, so untouched until this callback returns) and goes
     * out behind `pass` in one writev. */
    const char *direct = NULL;
    size_t direct_len = 0;
    int done = 0;
    while (!cl->resp_head_done) {
        struct http_msg *m = &bal->msg;
        int status;
        ssize_t n = http_parse_response(buf_head(rb), buf_size(rb), &bal->resp_lim, m,
                                        cl->is_head, &status);
        if (n == -2)
            goto flush;
        if (n < 0 || (m->status == 101 && !cl->upgrade)) {
            response_invalid(cl, be, "an invalid response head");
            return;
        }
        if (m->status == 101) {
            tunnel_start(cl, srv, m, (size_t)n, pass);
            return;
        }
        if (m->status < 200) {
            /* interim (100 Continue): pass on to HTTP/1.1 clients at once,
             * never held -- the client may be waiting for it to send its
             * body. A retry may send the client a second one; HTTP allows
             * any number of interim responses. */
            if (!cl->http10)
                buf_printf(pass, "HTTP/1.1 %d %.*s\r\n\r\n", m->status, (int)m->reason_len,
                           m->reason ? m->reason : "");
            buf_consume(rb, (size_t)n);
            continue;
        }
        cl->resp_head_done = 1;
        access_rec_head(&cl->rec, m->status, ev_now(c->loop));
        cl->holding = response_holdable(m);
        cl->resp_sent = !cl->holding;
        out = cl->holding ? &cl->held : pass;
        double ms = (ev_now(c->loop) - cl->t_sent) * 1000.0;
        be->t.ewma_ms = be->t.ewma_ms == 0 ? ms : be->t.ewma_ms * 0.8 + ms * 0.2;
        latency_record(&cl->bal->latency, ms, ev_now(c->loop));
        bal->latency_sum += ms / 1000.0;
        bal->latency_count++;
        health_report(&be->gen->health, be->t.index, m->status < 500);
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
        /* The client half-closed: answer every request it sent before its
         * FIN, closing after the last one. */
        if (cl->eof && buf_size(&cl->c->rbuf) == 0)
            cl->close_after = 1;
        /* An answer that comes before the request body is all in (a final
         * status instead of 100 Continue): the unread rest of the body
         * leaves the connection unusable, so the client is told it closes. */
        if (!cl->req_done)
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
            if (out == pass) {
                direct = buf_head(rb);
                direct_len = take;
            } else {
                buf_append(out, buf_head(rb), take);
            }
            buf_consume(rb, take);
            cl->resp_left -= take;
            done = cl->resp_left == 0;
        } else if (cl->resp_body == HTTP_BODY_CHUNKED) {
            ssize_t k = http_chunked_scan(&cl->resp_ck, buf_head(rb), avail, &done,
                                          cl->dechunk ? dechunk_cb : NULL, out);
            if (k < 0) {
                if (cl->holding) { /* nothing is out yet: a clean 502 */
                    response_invalid(cl, be, "bad chunked framing");
                    return;
                }
                log_warn("backend %s sent bad chunked framing", be->name);
                net_conn_write(cl->c, buf_head(out), buf_size(out));
                if (!cl->dead)
                    net_conn_abort(cl->c, "bad chunked response");
                return;
            }
            if (!cl->dechunk && out == pass && k > 0) {
                direct = buf_head(rb);
                direct_len = (size_t)k;
            } else if (!cl->dechunk) {
                buf_append(out, buf_head(rb), (size_t)k);
            }
            buf_consume(rb, (size_t)k);
        } else { /* until close */
            if (out == pass) {
                direct = buf_head(rb);
                direct_len = avail;
            } else {
                buf_append(out, buf_head(rb), avail);
            }
            buf_consume(rb, avail);
        }
    }
flush:
    if (buf_size(pass) > 0 || direct_len > 0) {
        struct iovec iov[2];
        int niov = 0;
        if (buf_size(pass) > 0)
            iov[niov++] = (struct iovec){(void *)buf_head(pass), buf_size(pass)};
        if (direct_len > 0)
            iov[niov++] = (struct iovec){(void *)direct, direct_len};
        cl->rec.bytes += buf_size(pass) + direct_len;
        net_conn_writev(cl->c, iov, niov);
        if (cl->dead || srv->cl != cl)
            return;
    }
    if (cl->holding && (done || buf_size(&cl->held) > BAL_HOLD_MAX) && held_release(cl) < 0)
        return;
    if (done) {
        c->read_want = 0;
        response_done(cl);
        return;
    }
    /* A large streaming body: read it in big steps (see BAL_STREAM_READ). */
    if (!cl->holding && cl->resp_body == HTTP_BODY_LENGTH && cl->resp_left > BAL_HOLD_MAX / 4)
        c->read_want = buf_size(rb) + (cl->resp_left < BAL_STREAM_READ ? (size_t)cl->resp_left
                                                                         : BAL_STREAM_READ);
    else if (!cl->holding && cl->resp_body == HTTP_BODY_CLOSE)
        c->read_want = buf_size(rb) + BAL_STREAM_READ;
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
    if (cl && cl->tunnel) {
        tunnel_end(cl, "backend closed the tunnel");
        return;
    }
    if (cl && cl->resp_head_done && cl->resp_body == HTTP_BODY_CLOSE) {
        /* the close ends the response: a held one is complete now */
        cl->resp_keep = 0;
        if (cl->holding && held_release(cl) < 0)
            return;
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
    if (cl->tunnel) {
        tunnel_end(cl, "tunnel idle");
        return;
    }
    struct bal_proxy *bal = cl->bal;
    struct bal_backend *be = srv->be;
    if (cl->resp_sent) {
        net_conn_abort(cl->c, "backend stalled mid-response");
        return;
    }
    if (cl->resp_head_done) {
        /* stalled inside a held response: the backend did answer, nothing
         * reached the client, and the request may be retried -- a failed
         * attempt like a reset (504 when no retry is left) */
        server_detach(cl, 0);
        attempt_failed(cl, be, 504, 1, "stalled mid-response");
        return;
    }
    log_warn("backend %s did not answer within %.1fs", be->name, bal->cfg.server_timeout);
    be->failures++;
    be->t.errors++;
    health_report(&be->gen->health, be->t.index, 0);
    cl->keep_alive = cl->keep_alive && cl->req_done;
    /* no retry: the backend may be processing it */
    reply_error(cl, 504);
}

static void server_on_close(struct net_conn *c, const char *why)
{
    struct bal_server *srv = c->data;
    struct bal_proxy *bal = srv->bal;
    struct bal_backend *be = srv->be;
    if (srv->in_pool)
        pool_unlink(srv);
    srv->dead = 1;
    srv->c = NULL;
    be->nconns--;
    bal_gen_unref(bal, be->gen);
    struct bal_client *cl = srv->cl;
    srv->next = bal->dead_servers;
    bal->dead_servers = srv;
    bal_reap_start(bal);
    if (!cl)
        return;
    /* the attempt failed before its response completed (or a tunnel's
     * backend went away) */
    cl->srv = NULL;
    srv->cl = NULL;
    attempt_end(cl);
    if (cl->tunnel) {
        cl->tunnel = 0;
        bal->tunnels--;
        if (!cl->dead) {
            net_conn_set_timeout(cl->c, bal->cfg.client_timeout);
            net_conn_close(cl->c, "backend closed the tunnel");
        }
        return;
    }
    if (cl->paused_by_srv) {
        cl->paused_by_srv = 0;
        net_conn_resume(cl->c);
    }
    if (cl->dead)
        return;
    if (cl->resp_sent) {
        net_conn_abort(cl->c, "backend closed mid-response");
        return;
    }
    if (!srv->connected && health_local_shortage(srv->conn_err)) {
        local_shortage(cl, be, srv->conn_err);
    } else if (!srv->connected) {
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

static struct bal_server *server_open(struct bal_proxy *bal, struct bal_backend *be)
{
    struct bal_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    struct health_target *ht = &be->gen->ht[be->t.index];
    srv->bal = bal;
    srv->be = be;
    srv->c = net_connect(bal->loop, (struct sockaddr *)&ht->sa, ht->salen, &server_ops, srv);
    if (!srv->c) {
        int err = errno;
        free(srv);
        errno = err;
        return NULL;
    }
    /* A response head must fit; bodies are consumed as they come. */
    srv->c->read_max = bal->resp_lim.max_header_size + 64 * 1024;
    be->nconns++;
    be->gen->refs++;
    return srv;
}

static void attempt_start(struct bal_client *cl, struct bal_backend *be)
{
    struct bal_proxy *bal = cl->bal;
    if (cl->tried_gen != be->gen) {
        cl->tried_gen = be->gen;
        cl->ntried = 0;
    }
    cl->tried[cl->ntried++] = be->t.index;
    cl->attempts++;
    /* a retry starts its response afresh: what a failed attempt had held is
     * dropped (only held responses are ever retried) */
    cl->resp_head_done = cl->resp_keep = cl->dechunk = cl->close_after = 0;
    cl->holding = 0;
    buf_reset(&cl->held);
    cl->be = be;
    be->gen->refs++;
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
        int err = errno;
        attempt_end(cl);
        if (health_local_shortage(err))
            local_shortage(cl, be, err);
        else
            attempt_failed(cl, be, 502, 0, strerror(err));
        return;
    }
    srv->cl = cl;
    cl->srv = srv;
    net_conn_set_timeout(srv->c, bal->cfg.connect_timeout);
    /* queued now, sent when the connection is up; the body waits for it */
    net_conn_write(srv->c, buf_head(&cl->head), buf_size(&cl->head));
}


/* ---- what the service drives ---------------------------------------------- */

void bal_proxy_init(struct bal_proxy *px, struct ev_loop *loop)
{
    memset(px, 0, sizeof *px);
    px->loop = loop;
    latency_init(&px->latency, 10.0, ev_now(loop));
    ev_prepare_init(&px->reap, bal_reap);
    px->reap.data = px;
    buf_init(&px->out);
}

void bal_proxy_swap(struct bal_proxy *px, struct bal_gen *g)
{
    struct bal_gen *old = px->gen;
    for (int i = 0; i < g->nbe; i++) {
        struct bal_backend *nb = &g->be[i];
        struct bal_backend *ob = bal_gen_match(old, nb);
        while (ob && ob->idle) { /* idle connections move with their backend */
            struct bal_server *srv = ob->idle;
            ob->idle = srv->next;
            ob->nidle--;
            ob->nconns--;
            old->refs--;
            srv->be = nb;
            srv->prev = NULL;
            srv->next = nb->idle;
            if (nb->idle)
                nb->idle->prev = srv;
            nb->idle = srv;
            nb->nidle++;
            nb->nconns++;
            g->refs++;
        }
    }
    bal_proxy_close_idle(px, old, "backend removed");
    px->gen = g;
    old->retired = 1;
    old->next = px->retired;
    px->retired = old;
    bal_reap_start(px);
}

void bal_proxy_close_idle(struct bal_proxy *px, struct bal_gen *g, const char *why)
{
    (void)px;
    for (int i = 0; i < g->nbe; i++)
        while (g->be[i].idle)
            net_conn_abort(g->be[i].idle->c, why);
}

void bal_proxy_drain(struct bal_proxy *px)
{
    px->draining = 1;
    if (px->gen)
        bal_proxy_close_idle(px, px->gen, "draining");
    /* idle clients go now; busy ones after their response */
    struct bal_client *cl = px->clients, *next;
    for (; cl; cl = next) {
        next = cl->next;
        if (cl->state == CL_HEAD && buf_size(&cl->c->rbuf) == 0)
            net_conn_abort(cl->c, "draining");
        else
            cl->keep_alive = 0;
    }
}

void bal_proxy_shutdown(struct bal_proxy *px)
{
    if (px->gen)
        health_stop(&px->gen->health);
    while (px->clients)
        net_conn_abort(px->clients->c, "shutdown");
    if (px->gen)
        bal_proxy_close_idle(px, px->gen, "shutdown");
    if (px->loop)
        ev_prepare_stop(px->loop, &px->reap);
    bal_reap(px->loop, &px->reap, 0);
    while (px->retired) { /* normally gone already; nothing refers to them now */
        struct bal_gen *g = px->retired;
        px->retired = g->next;
        bal_gen_free(g);
    }
    bal_gen_free(px->gen);
    px->gen = NULL;
    buf_free(&px->out);
    free(px->msg.hdrs);
    px->msg.hdrs = NULL;
}

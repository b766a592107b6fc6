#include "http_server.h"

#include <http_parser.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include "log.h"
#include "net.h"

/* Which wait a connection is in: each has its own deadline. */
enum sc_phase {
    PH_UNSET = -1, /* recompute and re-arm on the next arm() */
    PH_NONE,  /* waiting on the handler: its own business, no deadline */
    PH_IDLE,  /* between requests */
    PH_HEAD,  /* part of a head has arrived */
    PH_BODY,  /* a head is parsed, its body is arriving */
    PH_WRITE, /* answers wait for the client to read them */
};

struct http_sconn {
    struct http_server *srv;
    struct net_conn *c;
    struct http_sconn *prev, *next;
    struct http_req *q_head, *q_tail; /* in flight or answered, not yet written */
    int nq;
    struct http_req *cur;             /* its body is being read */
    struct http_body_reader body;
    int phase;
    int closing;                      /* no further request will be read */
    uint64_t queued;                  /* bytes of answers ever put in wbuf */
    uint64_t sent_mark;               /* bytes sent when the send deadline was armed */
    ev_io fio;                        /* writability while a file's bytes wait on the socket */
    struct http_hdr hdrs[];           /* parse storage: limits.max_headers */
};

struct http_server {
    struct ev_loop *loop;
    struct net_listener *listener;
    struct http_server_cfg cfg;
    struct http_server_ops ops;
    void *ud;
    struct http_sconn *conns;
    int nconns;
    int draining;
    struct http_server_stats st;
};

void http_server_cfg_defaults(struct http_server_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->limits.max_request_line = 8 * 1024;
    cfg->limits.max_header_size = 16 * 1024;
    cfg->limits.max_headers = 64;
    cfg->max_body = 1024 * 1024;
    cfg->idle_timeout = 60;
    cfg->head_timeout = 10;
    cfg->body_timeout = 10;
    cfg->send_timeout = 30;
    cfg->max_pipeline = 16;
}

const char *http_status_text(int code)
{
    switch (code) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Status";
    }
}

/* --- requests ------------------------------------------------------------- */

static void req_free(struct http_req *r)
{
    if (r->file_open)
        close(r->file_fd);
    buf_free(&r->body_buf);
    buf_free(&r->resp_head);
    buf_free(&r->resp_body);
    free(r);
}

/* A request owns a copy of its head (the connection's buffer moves on to
 * the next one): one block holds the struct, the headers and the bytes. */
static struct http_req *req_new(struct http_sconn *sc, const char *head, size_t head_len,
                                const struct http_msg *m)
{
    size_t hsz = (size_t)m->nhdrs * sizeof(struct http_hdr);
    struct http_req *r = malloc(sizeof *r + hsz + head_len + 1);
    if (!r)
        return NULL;
    memset(r, 0, sizeof *r);
    struct http_hdr *h = (struct http_hdr *)(r + 1);
    char *raw = (char *)h + hsz;
    memcpy(raw, head, head_len);
    raw[head_len] = 0;
#define REBASE(ptr) (raw + ((ptr) - head))
    for (int i = 0; i < m->nhdrs; i++) {
        h[i] = m->hdrs[i];
        h[i].name = REBASE(m->hdrs[i].name);
        h[i].value = REBASE(m->hdrs[i].value);
    }
    r->method = REBASE(m->method_s);
    r->target = REBASE(m->target);
#undef REBASE
    r->method_len = m->method_len;
    r->method_id = m->method;
    r->target_len = m->target_len;
    const char *q = memchr(r->target, '?', r->target_len);
    r->path = r->target;
    r->path_len = q ? (size_t)(q - r->target) : r->target_len;
    r->query = q ? q + 1 : "";
    r->query_len = q ? r->target_len - r->path_len - 1 : 0;
    r->minor = m->minor;
    r->hdrs = h;
    r->nhdrs = m->nhdrs;
    r->body = "";
    r->keep_alive = (unsigned)http_msg_keep_alive(m);
    r->head = m->method == HTTP_HEAD;
    size_t pl = strnlen(sc->c->peer, sizeof r->peer - 1);
    memcpy(r->peer, sc->c->peer, pl);
    r->peer[pl] = 0;
    r->conn = sc;
    r->status = 200;
    buf_init(&r->body_buf);
    buf_init(&r->resp_head);
    buf_init(&r->resp_body);
    return r;
}

const struct http_hdr *http_req_header(const struct http_req *req, const char *name)
{
    size_t l = strlen(name);
    for (int i = 0; i < req->nhdrs; i++)
        if (req->hdrs[i].name_len == l && strncasecmp(req->hdrs[i].name, name, l) == 0)
            return &req->hdrs[i];
    return NULL;
}

static void enqueue(struct http_sconn *sc, struct http_req *r)
{
    r->next = NULL;
    if (sc->q_tail)
        sc->q_tail->next = r;
    else
        sc->q_head = r;
    sc->q_tail = r;
    sc->nq++;
}

/* --- writing answers in order --------------------------------------------- */

static int bodiless(const struct http_req *r)
{
    return r->status < 200 || r->status == 204 || r->status == 304;
}

/* "Content-Length: n\r\n" into out (at least 48 bytes); its length. */
static size_t content_length(char *out, uint64_t n)
{
    static const char name[] = "Content-Length: ";
    char d[24];
    int k = 0;
    do {
        d[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    memcpy(out, name, sizeof name - 1);
    size_t o = sizeof name - 1;
    while (k)
        out[o++] = d[--k];
    out[o++] = '\r';
    out[o++] = '\n';
    out[o] = 0;
    return o;
}

/* The status line, the layer's framing headers, the handler's headers. */
static void write_head(struct buf *w, const struct http_req *r, int keep, const char *framing)
{
    char line[64] = "HTTP/1.1 ";
    int st = r->status >= 100 && r->status <= 999 ? r->status : 500;
    line[9] = (char)('0' + st / 100);
    line[10] = (char)('0' + st / 10 % 10);
    line[11] = (char)('0' + st % 10);
    line[12] = ' ';
    const char *text = http_status_text(st);
    size_t tl = strlen(text); /* the longest is 31 bytes */
    memcpy(line + 13, text, tl);
    memcpy(line + 13 + tl, "\r\n", 2);
    buf_append(w, line, 15 + tl);
    if (framing)
        buf_append_str(w, framing);
    if (!keep)
        buf_append_str(w, "Connection: close\r\n");
    else if (r->minor == 0)
        buf_append_str(w, "Connection: keep-alive\r\n");
    buf_append(w, buf_head(&r->resp_head), buf_size(&r->resp_head));
    buf_append(w, "\r\n", 2);
}

static void write_response(struct http_sconn *sc, struct http_req *r, int keep)
{
    struct buf *w = &sc->c->wbuf;
    size_t before = buf_size(w);
    size_t blen = buf_size(&r->resp_body);
    char cl[48];
    content_length(cl, blen);
    write_head(w, r, keep, bodiless(r) ? NULL : cl);
    if (!bodiless(r) && !r->head && blen)
        buf_append(w, buf_head(&r->resp_body), blen);
    sc->queued += buf_size(w) - before;
}

/* Bytes of answers the socket has taken so far. */
static uint64_t sent(const struct http_sconn *sc) { return sc->queued - buf_size(&sc->c->wbuf); }

/* Body bytes of a streamed answer whose head is out: a chunk (HTTP/1.1),
 * the raw bytes (HTTP/1.0: the body ends with the connection), or nothing
 * (HEAD, 204, 304). */
static void stream_emit(struct http_sconn *sc, struct http_req *r, const void *p, size_t n)
{
    if (n == 0 || r->head || bodiless(r))
        return;
    struct buf *w = &sc->c->wbuf;
    size_t before = buf_size(w);
    if (r->chunked)
        buf_printf(w, "%zx\r\n", n);
    buf_append(w, p, n);
    if (r->chunked)
        buf_append(w, "\r\n", 2);
    sc->queued += buf_size(w) - before;
}

/* A streamed answer reached the front: its head goes out, with what the
 * handler wrote while it waited. */
static void stream_head(struct http_sconn *sc, struct http_req *r)
{
    struct buf *w = &sc->c->wbuf;
    size_t before = buf_size(w);
    int last = sc->closing && !r->next && !sc->cur;
    int framed = bodiless(r) || r->head || r->minor == 1;
    r->stream_keep = r->keep_alive && !last && framed;
    r->chunked = !bodiless(r) && !r->head && r->minor == 1;
    write_head(w, r, r->stream_keep, r->chunked ? "Transfer-Encoding: chunked\r\n" : NULL);
    sc->queued += buf_size(w) - before;
    r->head_sent = 1;
    stream_emit(sc, r, buf_head(&r->resp_body), buf_size(&r->resp_body));
    buf_free(&r->resp_body);
}

/* A file body up to this size is read into the output behind its head:
 * one write, one segment, where sendfile would add a second of each for
 * a few kilobytes. */
#define FILE_INLINE (16u * 1024)

/* A file answer reached the front: its head goes out with the file's
 * length. A small body is read in behind it; a larger one follows from
 * file_pump once the head has left wbuf (sc_drain); a HEAD, a 304 or an
 * empty file needs none. */
static void file_head(struct http_sconn *sc, struct http_req *r)
{
    struct buf *w = &sc->c->wbuf;
    size_t before = buf_size(w);
    int last = sc->closing && !r->next && !sc->cur;
    char cl[48];
    content_length(cl, r->file_left);
    r->stream_keep = r->keep_alive && !last;
    write_head(w, r, r->stream_keep, bodiless(r) ? NULL : cl);
    r->head_sent = 1;
    if (r->head || bodiless(r))
        r->file_left = 0;
    if (r->file_left > 0 && r->file_left <= FILE_INLINE &&
        buf_reserve(w, r->file_left) == 0) {
        ssize_t n = pread(r->file_fd, buf_tail(w), r->file_left, r->file_off);
        if (n == (ssize_t)r->file_left) {
            buf_commit(w, (size_t)n);
            r->file_left = 0;
        } /* else short or failed: file_pump finds out and ends the connection */
    }
    sc->queued += buf_size(w) - before;
    if (r->file_left == 0 && r->file_open) {
        close(r->file_fd);
        r->file_open = 0;
    } else if (r->file_open) {
        /* Corked until the file is done: the head leaves in the body's
         * first full segment and the body in full segments, where the
         * connection's TCP_NODELAY would push every piece as it comes. */
        int on = 1;
        setsockopt(sc->c->fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
    }
}

/* Ends a connection after the answer just written: requests behind it are
 * dropped (their handlers hear on_gone). Returns 1 (sc may be gone). */
static int close_after_answer(struct http_sconn *sc)
{
    sc->closing = 1;
    while (sc->q_head) {
        struct http_req *d = sc->q_head;
        sc->q_head = d->next;
        sc->nq--;
        if (d->finished) {
            req_free(d);
        } else {
            d->conn = NULL;
            if (sc->srv->ops.on_gone)
                sc->srv->ops.on_gone(sc->srv->ud, d);
        }
    }
    sc->q_tail = NULL;
    if (sc->cur) {
        req_free(sc->cur);
        sc->cur = NULL;
    }
    net_conn_close(sc->c, "answered");
    return 1;
}

/* Writes every finished answer at the front of the queue, and the head of
 * a streamed one that reached the front. Returns 1 when the connection was
 * closed (sc may be gone), else 0. */
static int flush_queue(struct http_sconn *sc)
{
    while (sc->q_head) {
        struct http_req *r = sc->q_head;
        if (r->aborted) {
            /* Cut short: what of it was queued goes, and nothing more --
             * no last chunk; the close says it is incomplete. */
            sc->q_head = r->next;
            if (!sc->q_head)
                sc->q_tail = NULL;
            sc->nq--;
            req_free(r);
            return close_after_answer(sc);
        }
        if (r->streaming && !r->head_sent)
            stream_head(sc, r);
        if (!r->finished)
            break;
        if (r->sendfile && !r->head_sent)
            file_head(sc, r);
        if (r->file_open)
            break; /* its bytes follow the head: file_pump, once wbuf drained */
        sc->q_head = r->next;
        if (!sc->q_head)
            sc->q_tail = NULL;
        sc->nq--;
        int last = sc->closing && !sc->q_head && !sc->cur;
        int keep;
        if (r->sendfile) {
            keep = r->stream_keep && !last;
        } else if (r->streaming) {
            if (r->chunked) {
                static const char end[] = "0\r\n\r\n";
                buf_append(&sc->c->wbuf, end, sizeof end - 1);
                sc->queued += sizeof end - 1;
            }
            keep = r->stream_keep && !last;
        } else {
            keep = r->keep_alive && !r->close_after && !last;
            write_response(sc, r, keep);
        }
        req_free(r);
        if (!keep)
            return close_after_answer(sc);
    }
    if (sc->closing && !sc->q_head && !sc->cur) {
        net_conn_close(sc->c, "closing");
        return 1;
    }
    return 0;
}

/* An answer from the layer itself (limits, syntax, deadlines): it goes out
 * after every answer before it, and then the connection closes. */
static void fail(struct http_sconn *sc, int status, const char *why)
{
    struct http_server *s = sc->srv;
    s->st.bad_requests++;
    sc->closing = 1;
    if (sc->cur) {
        req_free(sc->cur);
        sc->cur = NULL;
    }
    buf_consume(&sc->c->rbuf, buf_size(&sc->c->rbuf));
    struct http_req *r = calloc(1, sizeof *r);
    if (!r) {
        net_conn_abort(sc->c, "out of memory");
        return;
    }
    buf_init(&r->body_buf);
    buf_init(&r->resp_head);
    buf_init(&r->resp_body);
    r->status = status;
    r->finished = r->close_after = r->is_error = 1;
    buf_append_str(&r->resp_head, "Content-Type: text/plain\r\n");
    buf_printf(&r->resp_body, "%d %s: %s\n", status, http_status_text(status), why);
    enqueue(sc, r);
    flush_queue(sc);
}

/* --- deadlines ------------------------------------------------------------ */

static void arm(struct http_sconn *sc)
{
    struct net_conn *c = sc->c;
    if (!net_conn_alive(c))
        return;
    const struct http_server_cfg *cfg = &sc->srv->cfg;
    int ph;
    if (buf_size(&c->wbuf) > 0 || (c->flags & NET_F_CLOSING) ||
        (sc->q_head && sc->q_head->file_open && sc->q_head->head_sent))
        ph = PH_WRITE;
    else if (sc->cur)
        ph = PH_BODY;
    else if (buf_size(&c->rbuf) > 0 && sc->nq < cfg->max_pipeline && !sc->closing)
        ph = PH_HEAD;
    else if (sc->nq > 0)
        ph = PH_NONE;
    else
        ph = PH_IDLE;
    if (ph == sc->phase)
        return; /* a deadline runs from the start of its wait, not per byte */
    sc->phase = ph;
    if (ph == PH_WRITE)
        sc->sent_mark = sent(sc);
    double t = ph == PH_IDLE ? cfg->idle_timeout
             : ph == PH_HEAD ? cfg->head_timeout
             : ph == PH_BODY ? cfg->body_timeout
             : ph == PH_WRITE ? cfg->send_timeout : 0;
    net_conn_set_timeout(c, t);
}

/* --- reading requests ----------------------------------------------------- */

static void body_data(void *ud, const char *p, size_t n)
{
    struct http_req *r = ud;
    if (buf_append(&r->body_buf, p, n) < 0)
        r->is_error = 1;
}

static void dispatch(struct http_sconn *sc, struct http_req *r)
{
    struct http_server *s = sc->srv;
    if (buf_size(&r->body_buf)) {
        r->body = buf_head(&r->body_buf);
        r->body_len = buf_size(&r->body_buf);
    }
    if (!r->keep_alive)
        sc->closing = 1; /* read no further request */
    /* The next head (or body) gets a deadline of its own, even when its
     * first bytes are already here: a client streaming pipelined requests
     * is making progress. */
    sc->phase = PH_UNSET;
    enqueue(sc, r);
    s->st.requests++;
    s->ops.on_request(s->ud, r);
}

/* Reads the body of sc->cur from the buffer. 1: complete, 0: more needed,
 * -1: failed (answered). */
static int read_body(struct http_sconn *sc)
{
    struct net_conn *c = sc->c;
    struct http_req *r = sc->cur;
    ssize_t used = http_body_reader_feed(&sc->body, buf_head(&c->rbuf), buf_size(&c->rbuf),
                                         body_data, r);
    if (used < 0) {
        fail(sc, 400, "bad chunked framing");
        return -1;
    }
    buf_consume(&c->rbuf, (size_t)used);
    if (r->is_error) {
        fail(sc, 500, "out of memory");
        return -1;
    }
    if (buf_size(&r->body_buf) > sc->srv->cfg.max_body) {
        fail(sc, 413, "request body too large");
        return -1;
    }
    return sc->body.done;
}

static void process(struct http_sconn *sc)
{
    struct http_server *s = sc->srv;
    struct net_conn *c = sc->c;
    for (;;) {
        if (c->flags & (NET_F_DEAD | NET_F_CLOSING))
            return;
        if (sc->cur) {
            int rc = read_body(sc);
            if (rc <= 0)
                return;
            struct http_req *r = sc->cur;
            sc->cur = NULL;
            dispatch(sc, r);
            continue;
        }
        if (sc->closing) {
            buf_consume(&c->rbuf, buf_size(&c->rbuf));
            if (!sc->q_head)
                flush_queue(sc); /* closes */
            return;
        }
        if (buf_size(&c->rbuf) == 0 || sc->nq >= s->cfg.max_pipeline)
            return;
        struct http_msg m = {.hdrs = sc->hdrs, .max_hdrs = s->cfg.limits.max_headers};
        int status = 400;
        ssize_t n = http_parse_request(buf_head(&c->rbuf), buf_size(&c->rbuf), &s->cfg.limits,
                                       &m, &status);
        if (n == -2)
            return;
        if (n < 0) {
            fail(sc, status, status == 431   ? "request head too large"
                             : status == 414 ? "request line too long"
                             : status == 505 ? "HTTP version not supported"
                             : status == 501 ? "method not implemented"
                                             : "malformed request");
            return;
        }
        if (m.body == HTTP_BODY_LENGTH && m.content_length > s->cfg.max_body) {
            fail(sc, 413, "request body too large");
            return;
        }
        const char *head = buf_head(&c->rbuf) + m.skipped;
        struct http_req *r = req_new(sc, head, (size_t)n - m.skipped, &m);
        if (!r) {
            fail(sc, 500, "out of memory");
            return;
        }
        buf_consume(&c->rbuf, (size_t)n);
        if (m.body == HTTP_BODY_NONE) {
            dispatch(sc, r);
            continue;
        }
        sc->cur = r;
        http_body_reader_init(&sc->body, m.body, m.content_length, s->cfg.limits.max_header_size);
        /* The client waits for a go-ahead before its body; give it unless
         * earlier answers are still to come (they would interleave). */
        if (m.expect_continue && buf_size(&c->rbuf) == 0 && sc->nq == 0) {
            static const char go[] = "HTTP/1.1 100 Continue\r\n\r\n";
            buf_append(&c->wbuf, go, sizeof go - 1);
            sc->queued += sizeof go - 1;
        }
    }
}

/* --- file bodies ------------------------------------------------------------ */

/* Bytes of file one connection sends in one loop turn: a fast client of a
 * large file does not hold the loop from everyone else. */
#define FILE_TURN (1u << 20)

/* Sends the body of the file answer at the front, whose head has left
 * wbuf, with sendfile until the socket is full (then waits on fio, which
 * comes back through sc_drain) or the file is done (then the answers
 * behind it go into wbuf). Called from sc_drain only, inside a callback of
 * the connection. Returns 0 when waiting for the socket, 2 when the file is
 * done (the request freed), 1 when the connection ended. */
static int file_pump(struct http_sconn *sc)
{
    struct http_req *r = sc->q_head;
    struct net_conn *c = sc->c;
    size_t turn = 0;
    while (r->file_left > 0) {
        if (turn >= FILE_TURN) {
            ev_io_start(sc->srv->loop, &sc->fio); /* writable: on the next turn */
            return 0;
        }
        size_t want = r->file_left < FILE_TURN - turn ? r->file_left : FILE_TURN - turn;
        ssize_t n = sendfile(c->fd, r->file_fd, &r->file_off, want);
        if (n > 0) {
            r->file_left -= (size_t)n;
            sc->queued += (uint64_t)n;
            turn += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(sc->srv->loop, &sc->fio);
            return 0;
        }
        /* The file shrank under us (0) or the socket failed: the length
         * announced cannot be kept, so the connection ends here. */
        if (n == 0) {
            sc->srv->st.aborted++;
            log_warn("http: a file answer to %s ended %zu bytes short", c->peer, r->file_left);
        }
        net_conn_abort(c, n == 0 ? "file shorter than announced" : strerror(errno));
        return 1;
    }
    close(r->file_fd);
    r->file_open = 0;
    int off = 0; /* the last partial segment goes now */
    setsockopt(c->fd, IPPROTO_TCP, TCP_CORK, &off, sizeof off);
    return flush_queue(sc) ? 1 : 2;
}

/* The socket takes bytes again: run the connection's drain path (which
 * pumps the file) as if its output had just gone out, so the pump runs
 * inside a callback frame and a close in it is freed safely. */
static void file_writable(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct http_sconn *sc = w->data;
    ev_io_stop(loop, w);
    sc->c->flags |= NET_F_DRAIN_PENDING;
    net_conn_flush(sc->c);
}

/* --- connection callbacks ------------------------------------------------- */

static void sc_read(struct net_conn *c)
{
    struct http_sconn *sc = c->data;
    process(sc);
    arm(sc);
}

static void sc_drain(struct net_conn *c)
{
    struct http_sconn *sc = c->data;
    struct http_req *r = sc->q_head;
    /* A file answer's head (or a turn of its body) went out: more of it. */
    if (r && r->file_open && r->head_sent && !ev_is_active(&sc->fio)) {
        int rc = file_pump(sc); /* r may be freed */
        if (rc == 1 || !net_conn_alive(c))
            return;
        if (rc == 2) {
            /* Done: requests that waited on the pipeline bound are read. */
            process(sc);
            if (net_conn_alive(c))
                arm(sc);
            return;
        }
    }
    /* A streamed answer's output went out: its producer may send more. */
    if (r && r->streaming && r->head_sent && !r->finished && sc->srv->ops.on_writable)
        sc->srv->ops.on_writable(sc->srv->ud, r);
    if (net_conn_alive(c))
        arm(sc);
}

static void sc_eof(struct net_conn *c)
{
    struct http_sconn *sc = c->data;
    /* The client will send nothing more: answer what it sent (a half-close
     * after the last request is legal), then close. */
    sc->closing = 1;
    if (sc->cur) {
        if (http_body_reader_eof(&sc->body) < 0) {
            net_conn_abort(c, "request cut short");
            return;
        }
        struct http_req *r = sc->cur;
        sc->cur = NULL;
        dispatch(sc, r);
    }
    if (net_conn_alive(c) && !(c->flags & NET_F_CLOSING))
        flush_queue(sc);
    if (net_conn_alive(c))
        arm(sc);
}

static void sc_timeout(struct net_conn *c)
{
    struct http_sconn *sc = c->data;
    if (sc->phase != PH_NONE && sc->phase != PH_UNSET)
        sc->srv->st.timeouts++;
    switch (sc->phase) {
    case PH_HEAD:
        fail(sc, 408, "request head not received in time");
        break;
    case PH_BODY:
        fail(sc, 408, "request body not received in time");
        break;
    case PH_IDLE:
        net_conn_close(c, "idle");
        break;
    case PH_WRITE:
        if (sent(sc) > sc->sent_mark) {
            /* Slow, but reading: the deadline is for a client that stopped. */
            sc->srv->st.timeouts--;
            sc->sent_mark = sent(sc);
            net_conn_set_timeout(c, sc->srv->cfg.send_timeout);
            return;
        }
        net_conn_abort(c, "answers not read in time");
        return;
    default:
        break; /* a stale deadline: nothing waits on the client */
    }
    sc->phase = PH_UNSET;
    arm(sc);
}

static void sc_close(struct net_conn *c, const char *why)
{
    (void)why;
    struct http_sconn *sc = c->data;
    struct http_server *s = sc->srv;
    ev_io_stop(s->loop, &sc->fio);
    while (sc->q_head) {
        struct http_req *r = sc->q_head;
        sc->q_head = r->next;
        if (r->finished) {
            req_free(r);
        } else {
            r->conn = NULL;
            if (s->ops.on_gone)
                s->ops.on_gone(s->ud, r);
        }
    }
    if (sc->cur)
        req_free(sc->cur);
    if (sc->prev)
        sc->prev->next = sc->next;
    else
        s->conns = sc->next;
    if (sc->next)
        sc->next->prev = sc->prev;
    s->nconns--;
    free(sc);
}

static const struct net_conn_ops sc_ops = {
    .on_read = sc_read,
    .on_eof = sc_eof,
    .on_drain = sc_drain,
    .on_timeout = sc_timeout,
    .on_close = sc_close,
};

static int sc_accept(struct net_conn *c, void *ud)
{
    struct http_server *s = ud;
    int nh = s->cfg.limits.max_headers;
    struct http_sconn *sc = calloc(1, sizeof *sc + (size_t)nh * sizeof(struct http_hdr));
    if (!sc)
        return -1;
    sc->srv = s;
    sc->c = c;
    sc->phase = PH_UNSET;
    ev_io_init(&sc->fio, file_writable, c->fd, EV_WRITE);
    sc->fio.data = sc;
    c->data = sc;
    /* Unparsed input is bounded by one head; bodies are consumed as they come. */
    c->read_max = s->cfg.limits.max_request_line + s->cfg.limits.max_header_size + 4096;
    sc->next = s->conns;
    if (s->conns)
        s->conns->prev = sc;
    s->conns = sc;
    s->nconns++;
    s->st.accepted++;
    arm(sc);
    return 0;
}

/* --- answers ---------------------------------------------------------------- */

void http_resp_status(struct http_req *req, int status) { req->status = status; }

int http_resp_header(struct http_req *req, const char *name, const char *value)
{
    if ((name[0] | 0x20) == 'c' || (name[0] | 0x20) == 't') {
        if (strcasecmp(name, "content-length") == 0 ||
            strcasecmp(name, "transfer-encoding") == 0 || strcasecmp(name, "connection") == 0)
            return -1;
    }
    /* A CR or LF in either would start a header (or a response) of its own. */
    size_t nl = strcspn(name, "\r\n: "), vl = strcspn(value, "\r\n");
    if (name[nl] || value[vl])
        return -1;
    struct buf *b = &req->resp_head;
    if (buf_reserve(b, nl + vl + 4) < 0)
        return -1;
    char *t = buf_tail(b);
    memcpy(t, name, nl);
    memcpy(t + nl, ": ", 2);
    memcpy(t + nl + 2, value, vl);
    memcpy(t + nl + 2 + vl, "\r\n", 2);
    buf_commit(b, nl + vl + 4);
    return 0;
}

struct buf *http_resp_body(struct http_req *req) { return &req->resp_body; }

/* Output was added for the request at the front of the queue: inside one
 * of the connection's callbacks it goes out when the callback returns;
 * otherwise write it now and read on (requests may wait behind it). */
static void kick(struct http_sconn *sc)
{
    struct net_conn *c = sc->c;
    if (c->depth > 0) {
        flush_queue(sc);
        return;
    }
    if (flush_queue(sc))
        return;
    sc->phase = PH_UNSET;
    arm(sc);
    if (buf_size(&c->rbuf) > 0)
        net_conn_resume(c); /* runs sc_read, which parses and writes */
    else
        net_conn_flush(c);
}

void http_resp_abort(struct http_req *req)
{
    struct http_sconn *sc = req->conn;
    if (!sc) {
        req_free(req); /* the client has gone */
        return;
    }
    sc->srv->st.aborted++;
    req->finished = req->aborted = 1;
    if (sc->q_head == req)
        kick(sc); /* else the connection ends once the answers before it went */
}

int http_resp_unstream(struct http_req *req)
{
    if (!req->streaming)
        return 0;
    if (req->head_sent)
        return -1;
    req->streaming = 0;
    buf_reset(&req->resp_body);
    return 0;
}

void http_resp_finish(struct http_req *req)
{
    struct http_sconn *sc = req->conn;
    if (!sc) {
        req_free(req); /* the client has gone */
        return;
    }
    req->finished = 1;
    if (sc->q_head == req)
        kick(sc); /* else it goes out after those before it */
}

int http_resp_sendfile(struct http_req *req, int fd, off_t offset, size_t len)
{
    if (req->streaming) {
        close(fd);
        http_resp_finish(req);
        return -1;
    }
    buf_free(&req->resp_body);
    req->sendfile = 1;
    req->file_open = 1;
    req->file_fd = fd;
    req->file_off = offset;
    req->file_left = len;
    http_resp_finish(req); /* a gone client: freed, the descriptor closed */
    return 0;
}

int http_resp_stream(struct http_req *req)
{
    if (req->streaming)
        return 0;
    req->streaming = 1;
    if (req->conn && req->conn->q_head == req)
        kick(req->conn);
    return 0;
}

int http_resp_write(struct http_req *req, const void *p, size_t n)
{
    struct http_sconn *sc = req->conn;
    if (!sc)
        return 0; /* the client has gone: dropped */
    if (!req->head_sent)
        return buf_append(&req->resp_body, p, n);
    stream_emit(sc, req, p, n);
    kick(sc);
    return 0;
}

size_t http_resp_backlog(const struct http_req *req)
{
    return req->conn ? buf_size(&req->conn->c->wbuf) : 0;
}

void http_respond(struct http_req *req, int status, const char *content_type, const void *body,
                  size_t len)
{
    req->status = status;
    if (content_type)
        http_resp_header(req, "Content-Type", content_type);
    if (len)
        buf_append(&req->resp_body, body, len);
    http_resp_finish(req);
}

/* --- the server ------------------------------------------------------------- */

struct http_server *http_server_start(struct ev_loop *loop, const char *addr,
                                      const struct http_server_cfg *cfg,
                                      const struct http_server_ops *ops, void *ud, char *err,
                                      size_t errlen)
{
    struct http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->loop = loop;
    s->cfg = *cfg;
    if (s->cfg.max_pipeline < 1)
        s->cfg.max_pipeline = 1;
    if (s->cfg.limits.max_headers < 1)
        s->cfg.limits.max_headers = 1;
    s->ops = *ops;
    s->ud = ud;
    s->listener = net_listen(loop, addr, cfg->reuseport, &sc_ops, sc_accept, s, err, errlen);
    if (!s->listener) {
        free(s);
        return NULL;
    }
    s->listener->max_conns = cfg->max_conns;
    return s;
}

const char *http_server_addr(const struct http_server *s) { return s->listener->addr; }

void http_server_stats(const struct http_server *s, struct http_server_stats *out)
{
    *out = s->st;
    out->connections = s->nconns;
}

void http_server_drain(struct http_server *s)
{
    if (s->draining)
        return;
    s->draining = 1;
    net_listener_pause(s->listener);
    struct http_sconn *sc = s->conns;
    while (sc) {
        struct http_sconn *next = sc->next;
        sc->closing = 1;
        /* Idle ones close now; busy ones after their last answer. */
        if (!sc->q_head && !sc->cur)
            net_conn_close(sc->c, "draining");
        sc = next;
    }
}

int http_server_idle(const struct http_server *s) { return s->nconns == 0; }

void http_server_free(struct http_server *s)
{
    if (!s)
        return;
    while (s->conns)
        net_conn_abort(s->conns->c, "server stopped");
    net_listener_close(s->listener);
    free(s);
}

/* http_server: the server side of the HTTP/1.1 connection layer.
 *
 * Every HTTP server in a node (the admin endpoint, the web service) stands
 * on this: it accepts connections on net, parses request heads with
 * http_parse (so the smuggling rules and limits are the balancer's), reads
 * bodies (Content-Length or chunked, de-chunked), and hands each complete
 * request to one callback.
 *
 * The callback may answer at once or later (after a cache reply, a Lua
 * coroutine, ...): it owns the request until it calls http_resp_finish, which
 * it must do exactly once, even when the client has gone in between (the
 * answer is then dropped and the request freed). Requests of one connection
 * may be in flight together (pipelining, up to max_pipeline); their answers
 * go out in request order whatever order they finish in.
 *
 * Every wait has a deadline: idle between requests, a head's arrival from
 * its first byte, a body's arrival from the end of its head, and answers
 * the client stops reading (no byte taken for send_timeout). Limits answer 414/431 (head), 413 (body)
 * or 400 (bad syntax or framing) and close the connection after everything
 * before them has been answered. A drain stops accepting, answers what was
 * already received with Connection: close, and closes idle connections.
 *
 * A file's bytes go from the file to the socket with sendfile(2), never
 * through a buffer (http_resp_sendfile). */
#ifndef STRATA_HTTP_SERVER_H
#define STRATA_HTTP_SERVER_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "http_parse.h"

struct http_server;
struct http_sconn;

struct http_server_cfg {
    struct http_limits limits; /* request line (414), head bytes and header count (431) */
    size_t max_body;           /* request body bytes (413 beyond) */
    double idle_timeout;       /* keep-alive: waiting for the next request */
    double head_timeout;       /* from a head's first byte to its end (408) */
    double body_timeout;       /* from the end of a head to the end of its body (408) */
    double send_timeout;       /* output pending with no byte taken this long: the end */
    int max_conns;             /* 0: unlimited */
    int max_pipeline;          /* requests in flight on one connection */
    int reuseport;             /* SO_REUSEPORT: several servers (threads) on one address */
};

/* Sensible limits for a small endpoint: 8 KiB request line, 16 KiB head,
 * 64 headers, 1 MiB body, 60 s idle, 10 s head/body, 30 s send, 16 in flight. */
void http_server_cfg_defaults(struct http_server_cfg *cfg);

/* One request. The request fields stay valid until http_resp_finish. */
struct http_req {
    const char *method;   /* "GET", ... (not NUL-terminated: use method_len) */
    size_t method_len;
    int method_id;        /* enum http_method of http_parser */
    const char *target;   /* as sent: path and query */
    size_t target_len;
    const char *path;     /* the target up to '?' */
    size_t path_len;
    const char *query;    /* after '?', "" when none */
    size_t query_len;
    int minor;            /* HTTP/1.minor */
    const struct http_hdr *hdrs;
    int nhdrs;
    const char *body;     /* de-chunked; "" when none */
    size_t body_len;
    unsigned keep_alive : 1; /* the client asked to keep the connection */
    unsigned head : 1;       /* a HEAD request: the answer's body is not sent */
    char peer[64];
    void *ud;             /* the handler's own per-request pointer */

    /* private to http_server */
    struct http_sconn *conn; /* NULL once the connection is gone */
    struct http_req *next;
    struct buf body_buf;
    struct buf resp_head; /* extra header lines */
    struct buf resp_body;
    int status;
    unsigned finished : 1, close_after : 1, is_error : 1, aborted : 1;
    unsigned streaming : 1, head_sent : 1, chunked : 1, stream_keep : 1;
    unsigned sendfile : 1, file_open : 1; /* a file answer; its descriptor still held */
    int file_fd;
    off_t file_off;
    size_t file_left;                     /* body bytes still to send */
};

struct http_server_ops {
    /* A complete request: answer it with the http_resp_* calls, now or
     * later. */
    void (*on_request)(void *ud, struct http_req *req);
    /* Optional: the connection of a request not yet answered went away; the
     * handler may stop its work (and must still call http_resp_finish). */
    void (*on_gone)(void *ud, struct http_req *req);
    /* Optional: a streamed answer's output has all gone out; its producer
     * may write more (see http_resp_stream). */
    void (*on_writable)(void *ud, struct http_req *req);
};

struct http_server_stats {
    uint64_t requests;      /* handed to on_request */
    uint64_t bad_requests;  /* answered 4xx by the layer itself (limits, syntax) */
    uint64_t timeouts;      /* connections ended by a deadline */
    uint64_t accepted;
    uint64_t aborted;       /* answers cut short: http_resp_abort, a file that came up short */
    int connections;        /* open now */
};

/* Listens on "host:port" (port 0: a free one). NULL with a message in err. */
struct http_server *http_server_start(struct ev_loop *loop, const char *addr,
                                      const struct http_server_cfg *cfg,
                                      const struct http_server_ops *ops, void *ud, char *err,
                                      size_t errlen);
const char *http_server_addr(const struct http_server *s);
void http_server_stats(const struct http_server *s, struct http_server_stats *out);
/* Graceful drain: stop accepting; requests already received (and a body
 * being read) are answered with Connection: close; idle connections close. */
void http_server_drain(struct http_server *s);
/* 1 when no connection is left (after a drain: done). */
int http_server_idle(const struct http_server *s);
/* Closes every connection at once and frees the server. Requests still
 * unanswered become orphans: their http_resp_finish only frees them. */
void http_server_free(struct http_server *s);

/* --- the response writer --------------------------------------------------
 * A response is a status (200 unless set), header lines and a body; it goes
 * out, with Content-Length and the Connection header the layer decides, on
 * http_resp_finish, or streamed (http_resp_stream) when its length is not
 * known in advance. */
void http_resp_status(struct http_req *req, int status);
/* Adds "name: value". Content-Length, Transfer-Encoding and Connection are
 * the layer's: adding them is refused (-1). */
int http_resp_header(struct http_req *req, const char *name, const char *value);
/* The body buffer, to append to (buf_append, buf_printf, buf_json_string). */
struct buf *http_resp_body(struct http_req *req);
/* Sends the answer (now, or once those before it went out) and releases the
 * request: the pointer is invalid afterwards. */
void http_resp_finish(struct http_req *req);
/* Streaming, for a body not known in advance (a large file, a handler that
 * produces as it goes): the head goes out now, or once the answers before
 * it have gone, framed with Transfer-Encoding: chunked (an HTTP/1.0 client
 * gets the body up to the close); then every http_resp_write goes out as it
 * comes, and http_resp_finish ends the body. Set the status and headers
 * first; what the body buffer holds is sent first. */
int http_resp_stream(struct http_req *req);
/* Ends an answer that cannot be completed (a streaming producer that
 * failed after its head went out): the answers before it go out, then
 * whatever of this one was already queued, and the connection closes
 * without completing it -- no terminating chunk, so a chunked body reads
 * as cut short to the client and to any cache in between. Requests
 * pipelined behind it are dropped (their handlers hear on_gone). A
 * close-delimited body (an HTTP/1.0 client) cannot say it was cut short:
 * the client sees an early close, which looks like the end. An answer
 * whose head has not gone out yet sends nothing at all (see
 * http_resp_unstream for answering it otherwise). Counted in
 * `aborted`. Releases the request like http_resp_finish. */
void http_resp_abort(struct http_req *req);
/* Takes back http_resp_stream while the answer's head has not gone out
 * (it waits behind earlier answers): the answer is an ordinary one again,
 * its body buffer emptied, for a producer that failed and would rather
 * answer with an error. 0, or -1 once the head is out (then only
 * http_resp_abort is left). */
int http_resp_unstream(struct http_req *req);
/* Appends body bytes: sent at once once a streamed head is out, else kept
 * in the body buffer. Dropped (0) when the client has gone. */
int http_resp_write(struct http_req *req, const void *p, size_t n);
/* Bytes of the connection's output the socket has not taken: a streaming
 * producer waits for on_writable while this is large. */
size_t http_resp_backlog(const struct http_req *req);
/* Answers with `len` bytes of the file `fd` from `offset` as the body,
 * sent with sendfile(2) straight from the file to the socket (a body of
 * up to 16 KiB is read in behind the head instead: one write and one
 * segment for a small file, where sendfile adds a second): the head goes
 * out (with Content-Length: len and the status and headers set before) once
 * the answers before it have gone, then the bytes, as fast as the client
 * reads them (send_timeout bounds a client that stops); the answers behind
 * it follow. A HEAD request (or a 304) gets the head only. The layer owns
 * `fd` from this call on and closes it when the body has gone, when the
 * client leaves, or at once if it is not needed. This finishes the request
 * like http_resp_finish (the pointer is invalid afterwards); what the body
 * buffer held is dropped. A file that turns out shorter than `len` ends the
 * connection (the length promised cannot be kept). -1 (the descriptor
 * closed, the request finished as it was) after http_resp_stream. */
int http_resp_sendfile(struct http_req *req, int fd, off_t offset, size_t len);
/* Shortcut: status, Content-Type, body, finish. */
void http_respond(struct http_req *req, int status, const char *content_type, const void *body,
                  size_t len);
/* 1 when the client has gone: whatever is answered will be dropped. */
static inline int http_req_gone(const struct http_req *req) { return req->conn == NULL; }
/* A request header (case-insensitive name), or NULL. */
const struct http_hdr *http_req_header(const struct http_req *req, const char *name);
/* "OK", "Not Found", ... for a status code. */
const char *http_status_text(int status);

#endif

/* http_parse: HTTP/1.x message heads and body framing, for the balancer's
 * proxy and for the HTTP connection layer (engine/http) alike.
 *
 * A head is parsed only once it is complete in the buffer. Before the
 * syntax is handed to http_parser, a scan of the raw lines enforces the
 * limits (request line, head size, header count) and the framing rules a
 * proxy needs to be safe against request smuggling: CRLF line endings only
 * (no bare LF or CR), no obsolete line folding, at most one valid
 * Content-Length, never Content-Length together with Transfer-Encoding, and
 * a request transfer-coding chain that ends in chunked. The same scan holds
 * every field name to the token grammar (RFC 9112 5.1: no space before the
 * colon, none inside the name, no control byte) and a request line to
 * `method SP target SP HTTP/d.d` with no control byte, space or TAB inside
 * the target; a line without a version (HTTP/0.9) is refused at its end.
 *
 * Parsed headers point into the caller's buffer; they stay valid while
 * those bytes are not consumed. */
#ifndef STRATA_HTTP_PARSE_H
#define STRATA_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Headers a proxy treats specially, recognised once while parsing. */
enum http_hdr_kind {
    HH_OTHER = 0,
    HH_CONNECTION,
    HH_KEEP_ALIVE,
    HH_PROXY_CONNECTION,
    HH_TE,
    HH_TRAILER,
    HH_TRANSFER_ENCODING,
    HH_UPGRADE,
    HH_CONTENT_LENGTH,
    HH_HOST,
    HH_EXPECT,
    HH_X_FORWARDED_FOR,
    HH_X_FORWARDED_PROTO,
    HH_VIA,
    HH_COOKIE,
    HH_LISTED, /* named in a Connection header: hop-by-hop */
};

struct http_hdr {
    const char *name;
    const char *value; /* optional whitespace trimmed on both sides */
    uint32_t name_len;
    uint32_t value_len;
    int kind; /* enum http_hdr_kind */
};

enum http_body {
    HTTP_BODY_NONE,    /* no body (or the body of a HEAD/1xx/204/304) */
    HTTP_BODY_LENGTH,  /* Content-Length bytes */
    HTTP_BODY_CHUNKED, /* chunked transfer coding, ends with the last chunk */
    HTTP_BODY_CLOSE,   /* response only: ends when the server closes */
};

struct http_limits {
    size_t max_request_line; /* bytes of the request line (414 beyond) */
    size_t max_header_size;  /* bytes of the header section (431 beyond) */
    int max_headers;         /* header fields (431 beyond) */
};

struct http_msg {
    /* request line */
    int method; /* enum http_method of http_parser */
    const char *method_s;
    size_t method_len;
    const char *target;
    size_t target_len;
    /* status line */
    int status;
    const char *reason;
    size_t reason_len;
    int major, minor;

    struct http_hdr *hdrs; /* storage provided by the caller */
    int max_hdrs;          /* its capacity */
    int nhdrs;

    enum http_body body;
    uint64_t content_length;
    size_t skipped; /* empty lines before the request line (ignored) */
    size_t head_len; /* bytes from the start of the buffer to the end of the head */
    unsigned conn_close : 1;      /* "Connection: close" */
    unsigned conn_keep_alive : 1; /* "Connection: keep-alive" */
    unsigned expect_continue : 1; /* "Expect: 100-continue" */
    unsigned has_te : 1;          /* any Transfer-Encoding */
};

/* Parses a request head at p[0..n). Returns the head length (including
 * skipped leading empty lines), -2 when more bytes are needed, or -1 for bad
 * input with the status to answer in *status (400, 414, 431, 501, 505). */
ssize_t http_parse_request(const char *p, size_t n, const struct http_limits *lim,
                           struct http_msg *m, int *status);

/* Parses a response head. `head_request` says the request was HEAD (the
 * response then has no body whatever its headers say). Returns like
 * http_parse_request; bad input sets *status to 502. */
ssize_t http_parse_response(const char *p, size_t n, const struct http_limits *lim,
                            struct http_msg *m, int head_request, int *status);

/* 1 when the message asks to keep the connection open after it (version
 * default, overridden by Connection: close / keep-alive). */
int http_msg_keep_alive(const struct http_msg *m);

/* Case-insensitive lookup of a header value; NULL when absent. */
const struct http_hdr *http_msg_find(const struct http_msg *m, const char *name);

/* Finds cookie `name` in a Cookie header value; returns its value or NULL. */
const char *http_cookie_find(const char *cookies, size_t n, const char *name, size_t *vlen);

/* Incremental walker over a chunked body. It passes the bytes through
 * unchanged and only finds where the message ends; with a `data` callback
 * it also reports the payload spans (used to de-chunk for HTTP/1.0). */
struct http_chunked {
    int state;
    uint64_t remaining; /* payload bytes left in the current chunk */
    size_t line;        /* bytes of the current size line; 1 while in a trailer's name */
    size_t trailer;     /* bytes of trailers so far */
    size_t max_trailer;
};

void http_chunked_init(struct http_chunked *ck, size_t max_trailer);
/* Walks p[0..n). Returns the bytes that belong to the message (less than n
 * when the message ends inside the buffer) or -1 on bad framing. *done is
 * set once the terminating empty line has been seen. */
ssize_t http_chunked_scan(struct http_chunked *ck, const char *p, size_t n, int *done,
                          void (*data)(void *ud, const char *p, size_t n), void *ud);

/* Body framing for a reader that wants the payload (a server reading a
 * request body, a client reading a response): Content-Length, chunked
 * (de-chunked through the data callback) or up to the end of the stream.
 * It consumes only the body's bytes, so what follows (the next pipelined
 * message) stays in the caller's buffer. */
struct http_body_reader {
    enum http_body kind;
    uint64_t left; /* HTTP_BODY_LENGTH: bytes still to come */
    struct http_chunked ck;
    int done;      /* the whole body has been seen */
};

void http_body_reader_init(struct http_body_reader *r, enum http_body kind,
                           uint64_t content_length, size_t max_trailer);
/* Walks p[0..n), reporting payload spans to `data`. Returns the bytes that
 * belong to the body (less than n when it ends inside the buffer), or -1 on
 * bad chunked framing. r->done is set once the body is complete. */
ssize_t http_body_reader_feed(struct http_body_reader *r, const char *p, size_t n,
                              void (*data)(void *ud, const char *p, size_t n), void *ud);
/* The stream ended (the peer closed): 0 when that completes the body (a
 * close-delimited body, or one already done), -1 when it was cut short. */
int http_body_reader_eof(struct http_body_reader *r);

#endif

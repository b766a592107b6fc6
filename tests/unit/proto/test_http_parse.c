/* http_parse: heads, limits, smuggling rules and chunked framing. */
#include <string.h>

#include "http_parse.h"
#include "tap.h"

static struct http_hdr hdrs[16];
static struct http_msg msg = {.hdrs = hdrs, .max_hdrs = 16};
static const struct http_limits lim = {.max_request_line = 64, .max_header_size = 256,
                                       .max_headers = 8};

/* Parses a request; returns the status (200 for a good head, 0 when more
 * bytes are needed). */
static int req(const char *s)
{
    int status = 0;
    ssize_t n = http_parse_request(s, strlen(s), &lim, &msg, &status);
    if (n == -2)
        return 0;
    if (n < 0)
        return status;
    return 200;
}

static void test_good_requests(void)
{
    const char *r = "GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Y:  v w \r\n\r\nNEXT";
    int status = 0;
    ssize_t n = http_parse_request(r, strlen(r), &lim, &msg, &status);
    is_int(n, (ssize_t)strlen(r) - 4, "head length excludes what follows");
    is_int(msg.method_len, 3, "method length");
    ok(memcmp(msg.target, "/a?b=1", 6) == 0 && msg.target_len == 6, "target");
    is_int(msg.nhdrs, 2, "two headers");
    ok(msg.hdrs[1].value_len == 3 && memcmp(msg.hdrs[1].value, "v w", 3) == 0,
       "value trimmed on both sides");
    is_int(msg.body, HTTP_BODY_NONE, "no body");
    is_int(http_msg_keep_alive(&msg), 1, "1.1 keeps alive");

    is_int(req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n"), 200, "POST with CL");
    is_int(msg.body, HTTP_BODY_LENGTH, "length body");
    is_int(msg.content_length, 12, "content length");

    is_int(req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 200,
           "chain ending in chunked");
    is_int(msg.body, HTTP_BODY_CHUNKED, "chunked body");

    is_int(req("GET / HTTP/1.0\r\n\r\n"), 200, "HTTP/1.0 without Host");
    is_int(http_msg_keep_alive(&msg), 0, "1.0 closes by default");
    is_int(req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), 200, "1.0 keep-alive");
    is_int(http_msg_keep_alive(&msg), 1, "1.0 keep-alive honoured");
    is_int(req("GET / HTTP/1.1\r\nHost: x\r\nConnection: close, X-Foo\r\nX-Foo: 1\r\n\r\n"), 200,
           "connection options");
    is_int(http_msg_keep_alive(&msg), 0, "close honoured");
    is_int(msg.hdrs[2].kind, HH_LISTED, "header named by Connection is hop-by-hop");
    is_int(req("\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"), 200, "leading empty line ignored");
    is_int(msg.skipped, 2, "skipped bytes");
    is_int(req("GET / HTTP/1.1\r\nHost: x\r\n"), 0, "incomplete head needs more");
    is_int(req("GET / HTTP/1.1\r"), 0, "split CRLF needs more");
}

static void test_bad_requests(void)
{
    is_int(req("GET / HTTP/1.1\nHost: x\r\n\r\n"), 400, "bare LF in request line");
    is_int(req("GET / HTTP/1.1\r\nHost: x\n\r\n"), 400, "bare LF in header");
    is_int(req("GET / HTTP/1.1\r\nHost: x\r\nA: b\rc\r\n\r\n"), 400, "bare CR in value");
    is_int(req("GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n"), 400, "obs-fold");
    is_int(req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: "
               "chunked\r\n\r\n"),
           400, "CL with TE");
    is_int(req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
           400, "duplicate CL");
    is_int(req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n"), 400, "CL list");
    is_int(req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"), 400, "negative CL");
    is_int(req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n"), 400, "signed CL");
    is_int(req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), 400,
           "TE chain not ending in chunked");
    is_int(req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"), 400,
           "TE without chunked");
    is_int(req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               "Transfer-Encoding: chunked\r\n\r\n"),
           400, "chunked twice");
    is_int(req("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400, "TE in HTTP/1.0");
    is_int(req("GET / HTTP/1.1\r\n\r\n"), 400, "1.1 without Host");
    is_int(req("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400, "two Hosts");
    is_int(req("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505, "unsupported version");
    is_int(req("CONNECT a:1 HTTP/1.1\r\nHost: a\r\n\r\n"), 501, "CONNECT");
    is_int(req("G@T / HTTP/1.1\r\nHost: a\r\n\r\n"), 400, "bad method");
    is_int(req("GET / HTTP/1.1\r\nHo st: a\r\n\r\n"), 400, "space in name");
    is_int(req("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), 400, "space before colon");

    /* RFC 9112 5.1: a field name is a token, the colon follows at once. */
    is_int(req("POST /public HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n"), 400,
           "Content-Length with a space before the colon");
    is_int(req("GET / HTTP/1.1\r\nHost: a\r\nX A: 5\r\n\r\n"), 400, "space inside a name");
    is_int(req("GET / HTTP/1.1\r\nHost: a\r\nX\tA: 5\r\n\r\n"), 400, "TAB inside a name");
    is_int(req("GET / HTTP/1.1\r\nHost: a\r\nX-A\t: 5\r\n\r\n"), 400, "TAB before the colon");
    is_int(req("GET / HTTP/1.1\r\nHost: a\r\nX\001A: 5\r\n\r\n"), 400,
           "control byte in a name");
    is_int(req("GET / HTTP/1.1\r\nHost: a\r\nX(A): 5\r\n\r\n"), 400, "separator in a name");
    is_int(req("GET / HTTP/1.1\r\nHost: a\r\n: 5\r\n\r\n"), 400, "empty name");
    is_int(req("GET / HTTP/1.1\r\nHost: a\r\nX-A 5\r\n\r\n"), 400, "no colon");
    is_int(req("GET / HTTP/1.1\r\nHost: a\r\nX-\xc3\xa9: 5\r\n\r\n"), 400,
           "non-ASCII name");
    is_int(req("GET / HTTP/1.1\r\nHost: a\r\nX!#$%&'*+-.^_`|~09az: 5\r\n\r\n"), 200,
           "every tchar is allowed in a name");
    /* The request target: no control byte, no space or TAB inside it. */
    is_int(req("GET /pub\tlic HTTP/1.1\r\nHost: a\r\n\r\n"), 400, "TAB in the target");
    is_int(req("GET /public\t/admin HTTP/1.1\r\nHost: a\r\n\r\n"), 400,
           "TAB splitting the target");
    is_int(req("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), 400, "space in the target");
    is_int(req("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), 400, "two spaces after the method");
    is_int(req("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), 400, "space after the version");
    is_int(req("GET /\001 HTTP/1.1\r\nHost: a\r\n\r\n"), 400, "control byte in the target");
    is_int(req("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n"), 400, "DEL in the target");
    is_int(req("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"), 200,
           "obs-text in the target passes");
    is_int(req("GET / HTTP/1.x\r\nHost: a\r\n\r\n"), 400, "malformed version");
    /* HTTP/0.9: a request line without a version is refused at its end,
     * not after waiting for a head that never comes. */
    is_int(req("GET /\r\n"), 400, "HTTP/0.9 request line refused at once");
    is_int(req("GET / \r\n"), 400, "empty version refused at once");
    is_int(req("GET /"), 0, "a request line still arriving needs more");

    char line[200];
    snprintf(line, sizeof line, "GET /%070d HTTP/1.1\r\nHost: a\r\n\r\n", 0);
    is_int(req(line), 414, "request line too long");
    snprintf(line, sizeof line, "GET /%070d", 0);
    is_int(req(line), 414, "request line too long before its end arrives");

    char big[600];
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: a\r\nX: %0300d\r\n\r\n", 0);
    is_int(req(big), 431, "header section too large");
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: a\r\nX: %0300d", 0);
    is_int(req(big), 431, "header section too large before its end arrives");
    is_int(req("GET / HTTP/1.1\r\nHost: a\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\nf: 1\r\n"
               "g: 1\r\nh: 1\r\n\r\n"),
           431, "too many headers");
}

static void test_responses(void)
{
    int status;
    const char *r = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    ssize_t n = http_parse_response(r, strlen(r), &lim, &msg, 0, &status);
    is_int(n, (ssize_t)strlen(r) - 5, "response head length");
    is_int(msg.status, 200, "status");
    ok(msg.reason_len == 2 && memcmp(msg.reason, "OK", 2) == 0, "reason");
    is_int(msg.body, HTTP_BODY_LENGTH, "length body");
    http_parse_response(r, strlen(r), &lim, &msg, 1, &status);
    is_int(msg.body, HTTP_BODY_NONE, "no body for HEAD");
    r = "HTTP/1.1 204 No Content\r\n\r\n";
    http_parse_response(r, strlen(r), &lim, &msg, 0, &status);
    is_int(msg.body, HTTP_BODY_NONE, "204 has no body");
    r = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    http_parse_response(r, strlen(r), &lim, &msg, 0, &status);
    is_int(msg.body, HTTP_BODY_CHUNKED, "chunked response");
    r = "HTTP/1.0 200 OK\r\n\r\n";
    http_parse_response(r, strlen(r), &lim, &msg, 0, &status);
    is_int(msg.body, HTTP_BODY_CLOSE, "read until close");
    r = "HTTP/1.1 100 Continue\r\n\r\n";
    http_parse_response(r, strlen(r), &lim, &msg, 0, &status);
    is_int(msg.body, HTTP_BODY_NONE, "interim response");
    r = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    is_int(http_parse_response(r, strlen(r), &lim, &msg, 0, &status), -1, "bad response");
    is_int(status, 502, "bad response is a 502");
    status = 0;
    r = "HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello";
    is_int(http_parse_response(r, strlen(r), &lim, &msg, 0, &status), -1,
           "response name with a space before the colon");
    is_int(status, 502, "is a 502");
    r = "HTTP/1.1 200 OK\r\nX A: 1\r\nContent-Length: 0\r\n\r\n";
    is_int(http_parse_response(r, strlen(r), &lim, &msg, 0, &status), -1,
           "response name with a space inside");
    r = "HTTP/1.1 200 OK\r\nX\001: 1\r\nContent-Length: 0\r\n\r\n";
    is_int(http_parse_response(r, strlen(r), &lim, &msg, 0, &status), -1,
           "response name with a control byte");
}

static void test_cookie(void)
{
    const char *c = "a=1; sid=abc ; b=2";
    size_t vl = 0;
    const char *v = http_cookie_find(c, strlen(c), "sid", &vl);
    ok(v && vl == 3 && memcmp(v, "abc", 3) == 0, "cookie found");
    ok(http_cookie_find(c, strlen(c), "si", &vl) == NULL, "prefix does not match");
}

struct collect {
    char out[256];
    size_t n;
};

static void collect_cb(void *ud, const char *p, size_t n)
{
    struct collect *c = ud;
    memcpy(c->out + c->n, p, n);
    c->n += n;
}

static void test_chunked(void)
{
    const char *body = "5;x=y\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nT: v\r\n\r\nGET";
    struct http_chunked ck;
    struct collect col = {{0}, 0};
    int done = 0;
    http_chunked_init(&ck, 64);
    /* one byte at a time, as the worst split */
    size_t total = 0;
    for (size_t i = 0; i < strlen(body) && !done; i++) {
        ssize_t n = http_chunked_scan(&ck, body + i, 1, &done, collect_cb, &col);
        if (n < 0)
            break;
        total += (size_t)n;
    }
    is_int(done, 1, "chunked message ends");
    is_int(total, strlen(body) - 3, "stops before the next message");
    is_int(col.n, 31, "payload bytes");
    ok(memcmp(col.out, "helloabcdefghijklmnopqrstuvwxyz", 31) == 0, "payload decoded");

    http_chunked_init(&ck, 64);
    ssize_t n = http_chunked_scan(&ck, body, strlen(body), &done, NULL, NULL);
    is_int(n, (ssize_t)strlen(body) - 3, "whole buffer at once");
    const char *trailers = "0\r\nX-Sum: a b:c\r\nY: \r\n\r\n";
    http_chunked_init(&ck, 64);
    is_int(http_chunked_scan(&ck, trailers, strlen(trailers), &done, NULL, NULL),
           (ssize_t)strlen(trailers), "good trailers pass (spaces and colons in values)");
    is_int(done, 1, "and end the message");

    const char *bad[] = {"5\nhello\r\n0\r\n\r\n", "5\r\nhelloX\r\n", "zz\r\n",
                         "0\r\n\n",  "1111111111111111\r\n", "0\r\n folded\r\n\r\n",
                         /* trailer names are tokens too */
                         "0\r\nContent-Length : 5\r\n\r\n", "0\r\nX A: 1\r\n\r\n",
                         "0\r\nno colon\r\n\r\n", "0\r\n: empty\r\n\r\n", NULL};
    for (int i = 0; bad[i]; i++) {
        http_chunked_init(&ck, 64);
        is_int(http_chunked_scan(&ck, bad[i], strlen(bad[i]), &done, NULL, NULL), -1,
               "bad chunked framing %d", i);
    }
}

struct text {
    char b[128];
    size_t n;
};

static void collect(void *ud, const char *p, size_t n)
{
    struct text *c = ud;
    if (c->n + n < sizeof c->b) {
        memcpy(c->b + c->n, p, n);
        c->n += n;
        c->b[c->n] = 0;
    }
}

/* The body reader: payload out, framing consumed, what follows left alone. */
static void test_body_reader(void)
{
    struct http_body_reader r;
    struct text c = {.n = 0};
    http_body_reader_init(&r, HTTP_BODY_LENGTH, 5, 64);
    is_int(http_body_reader_feed(&r, "he", 2, collect, &c), 2, "length: a first piece");
    ok(!r.done, "length: not done after 2 of 5");
    is_int(http_body_reader_feed(&r, "lloGET /", 8, collect, &c), 3,
           "length: stops at the end of the body");
    ok(r.done, "length: done");
    is_str(c.b, "hello", "length: payload");
    is_int(http_body_reader_eof(&r), 0, "eof after a complete body is fine");

    c.n = 0;
    c.b[0] = 0;
    http_body_reader_init(&r, HTTP_BODY_CHUNKED, 0, 64);
    const char *ch = "3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\nNEXT";
    size_t total = 0;
    for (size_t i = 0; i < strlen(ch) && !r.done; i++) { /* one byte at a time */
        ssize_t used = http_body_reader_feed(&r, ch + i, 1, collect, &c);
        if (used < 0)
            break;
        total += (size_t)used;
    }
    ok(r.done, "chunked: done");
    is_int(total, strlen(ch) - 4, "chunked: framing and trailer consumed, NEXT left");
    is_str(c.b, "abcde", "chunked: payload de-chunked");

    http_body_reader_init(&r, HTTP_BODY_CHUNKED, 0, 64);
    is_int(http_body_reader_feed(&r, "3\r\nabcX", 8, NULL, NULL), -1, "chunked: bad framing");
    http_body_reader_init(&r, HTTP_BODY_CHUNKED, 0, 64);
    http_body_reader_feed(&r, "3\r\nab", 6, NULL, NULL);
    is_int(http_body_reader_eof(&r), -1, "chunked: cut short by the close");

    c.n = 0;
    c.b[0] = 0;
    http_body_reader_init(&r, HTTP_BODY_CLOSE, 0, 64);
    is_int(http_body_reader_feed(&r, "all of it", 9, collect, &c), 9, "close: takes everything");
    ok(!r.done, "close: not done before the close");
    is_int(http_body_reader_eof(&r), 0, "close: the close ends it");
    ok(r.done, "close: done");
    is_str(c.b, "all of it", "close: payload");

    http_body_reader_init(&r, HTTP_BODY_LENGTH, 0, 64);
    ok(r.done, "length 0: done at once");
    http_body_reader_init(&r, HTTP_BODY_NONE, 0, 64);
    ok(r.done && http_body_reader_feed(&r, "x", 1, NULL, NULL) == 0, "none: consumes nothing");
}

int main(void)
{
    test_good_requests();
    test_bad_requests();
    test_responses();
    test_cookie();
    test_chunked();
    test_body_reader();
    return tap_done();
}

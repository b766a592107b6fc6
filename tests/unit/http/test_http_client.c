/* http_client: the response reader (Content-Length, chunked, close-delimited,
 * interim answers, malformed heads, limits) and one call on the loop against
 * an http_server, a refused port and a silent one. */
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_client.h"
#include "http_server.h"
#include "tap.h"
#include "util.h"

static const struct http_limits lim = {.max_request_line = 256, .max_header_size = 1024,
                                       .max_headers = 16};

/* Feeds s in pieces of `step` bytes (0: all at once); returns the bytes
 * consumed in total, or -1. */
static ssize_t feed(struct http_resp_reader *rd, const char *s, size_t step)
{
    size_t n = strlen(s), off = 0;
    ssize_t total = 0;
    while (off < n && rd->state != HRR_DONE) {
        size_t k = step && n - off > step ? step : n - off;
        ssize_t used = http_resp_reader_feed(rd, s + off, k);
        if (used < 0)
            return -1;
        total += used;
        off += k;
    }
    return total;
}

static int body_is(const struct http_resp_reader *rd, const char *want)
{
    return buf_size(&rd->body) == strlen(want) &&
           memcmp(buf_head(&rd->body), want, strlen(want)) == 0;
}

static void test_reader(void)
{
    struct http_resp_reader rd;
    const char *cl = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhelloHTTP/1.1";
    for (size_t step = 0; step <= 1; step++) {
        http_resp_reader_init(&rd, &lim, 1024, 0);
        ssize_t used = feed(&rd, cl, step);
        is_int(rd.state, HRR_DONE, "Content-Length: done (step %zu)", step);
        is_int(used, (ssize_t)strlen(cl) - 8, "Content-Length: stops at the body's end (step %zu)",
               step);
        ok(rd.msg.status == 200 && body_is(&rd, "hello"), "Content-Length: status and body");
        const struct http_hdr *h = http_msg_find(&rd.msg, "x-a");
        ok(h && h->value_len == 1 && h->value[0] == 'b', "headers readable after the body");
        http_resp_reader_free(&rd);
    }

    http_resp_reader_init(&rd, &lim, 1024, 0);
    feed(&rd, "HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
              "3\r\nabc\r\n4;x\r\ndefg\r\n0\r\nTrailer: t\r\n\r\n", 3);
    ok(rd.state == HRR_DONE && rd.msg.status == 201 && body_is(&rd, "abcdefg"),
       "chunked: de-chunked, trailer skipped");
    http_resp_reader_free(&rd);

    http_resp_reader_init(&rd, &lim, 1024, 0);
    feed(&rd, "HTTP/1.1 200 OK\r\n\r\nuntil the", 0);
    feed(&rd, " end", 0);
    ok(rd.state == HRR_BODY, "close-delimited: open until the close");
    is_int(http_resp_reader_eof(&rd), 0, "close-delimited: the close ends it");
    ok(body_is(&rd, "until the end"), "close-delimited: body");
    http_resp_reader_free(&rd);

    http_resp_reader_init(&rd, &lim, 1024, 0);
    feed(&rd, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", 0);
    ok(rd.state == HRR_DONE && rd.msg.status == 204 && buf_size(&rd.body) == 0,
       "interim 100 skipped; 204 has no body");
    http_resp_reader_free(&rd);

    http_resp_reader_init(&rd, &lim, 1024, 1);
    feed(&rd, "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", 0);
    ok(rd.state == HRR_DONE, "an answer to HEAD has no body");
    http_resp_reader_free(&rd);

    static const char *const bad[] = {
        "HTTP/1.1 200 OK\nContent-Length: 1\n\nx",                        /* bare LF */
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx", /* two lengths */
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\n folded: x\r\n\r\n",
        "SMTP ready\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        NULL};
    for (int i = 0; bad[i]; i++) {
        http_resp_reader_init(&rd, &lim, 1024, 0);
        ok(feed(&rd, bad[i], 0) == -1 && rd.state == HRR_ERROR && rd.error[0],
           "malformed response %d is an error (%s)", i, rd.error);
        http_resp_reader_free(&rd);
    }

    http_resp_reader_init(&rd, &lim, 4, 0);
    ok(feed(&rd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0) == -1,
       "Content-Length over max_body is an error");
    http_resp_reader_free(&rd);
    http_resp_reader_init(&rd, &lim, 4, 0);
    ok(feed(&rd, "HTTP/1.1 200 OK\r\n\r\nhello", 0) == -1, "a close-delimited body over max_body too");
    http_resp_reader_free(&rd);

    http_resp_reader_init(&rd, &lim, 1024, 0);
    feed(&rd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel", 0);
    ok(http_resp_reader_eof(&rd) == -1 && strstr(rd.error, "body"), "cut short: %s", rd.error);
    http_resp_reader_free(&rd);
    http_resp_reader_init(&rd, &lim, 1024, 0);
    ok(http_resp_reader_eof(&rd) == -1 && strstr(rd.error, "before"), "no answer: %s", rd.error);
    http_resp_reader_free(&rd);

    http_resp_reader_init(&rd, &lim, 1024, 0);
    rd.head_only = 1;
    feed(&rd, "HTTP/1.1 503 Busy\r\nContent-Length: 100000\r\n\r\npartial", 0);
    ok(rd.state == HRR_DONE && rd.msg.status == 503, "head only: done at the head");
    http_resp_reader_free(&rd);
}

/* --- calls on the loop -------------------------------------------------------- */

static struct ev_loop *loop;
static int ncalls;
static struct {
    int status;
    char error[128];
    char body[128];
} last;

static void on_done(void *ud, const struct http_call_result *r)
{
    (void)ud;
    ncalls++;
    last.status = r->status;
    snprintf(last.error, sizeof last.error, "%s", r->error ? r->error : "");
    snprintf(last.body, sizeof last.body, "%.*s", (int)r->body_len, r->body ? r->body : "");
}

static void on_request(void *ud, struct http_req *req)
{
    (void)ud;
    struct buf *b = http_resp_body(req);
    buf_printf(b, "%.*s %.*s [%.*s]", (int)req->method_len, req->method, (int)req->path_len,
               req->path, (int)req->body_len, req->body);
    http_resp_status(req, req->path_len > 1 ? 404 : 200);
    http_resp_finish(req);
}

static void run_call(const char *addr, const struct http_call_opts *o)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    char err[128];
    util_parse_addr(addr, &ss, &sl, err, sizeof err);
    int before = ncalls;
    struct http_call *call = http_call_start(loop, (struct sockaddr *)&ss, sl, o, on_done, NULL);
    ok(call != NULL, "call started");
    int64_t end = util_mono_us() + 10000000;
    while (ncalls == before && util_mono_us() < end)
        ev_run(loop, EVRUN_ONCE);
    is_int(ncalls - before, 1, "the callback ran once");
}

static void test_calls(void)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    struct http_server_cfg cfg;
    http_server_cfg_defaults(&cfg);
    static const struct http_server_ops ops = {.on_request = on_request};
    char err[256];
    struct http_server *srv = http_server_start(loop, "127.0.0.1:0", &cfg, &ops, NULL, err, sizeof err);
    ok(srv != NULL, "server up");
    struct http_call_opts o = {.method = "POST", .target = "/", .body = "hi", .body_len = 2,
                               .timeout = 5, .max_body = 1024};
    run_call(http_server_addr(srv), &o);
    ok(last.status == 200 && !last.error[0], "an answer (%s)", last.error);
    is_str(last.body, "POST / [hi]", "its body");

    struct http_call_opts g = {.target = "/missing", .timeout = 5, .max_body = 1024,
                               .head_only = 1};
    run_call(http_server_addr(srv), &g);
    ok(last.status == 404 && !last.error[0], "a 404 is an answer, not an error");

    /* A port nobody listens on: the refusal is the error. */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(s, (struct sockaddr *)&a, sizeof a);
    socklen_t al = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &al);
    char refused[64];
    snprintf(refused, sizeof refused, "127.0.0.1:%d", ntohs(a.sin_port));
    run_call(refused, &g);
    ok(last.status == 0 && strstr(last.error, "refused"), "connection refused: %s", last.error);

    /* A listener that never answers: the deadline is the error. */
    listen(s, 4);
    g.timeout = 0.05;
    run_call(refused, &g);
    ok(last.status == 0 && strstr(last.error, "timed out"), "silent server: %s", last.error);
    close(s);

    /* Cancelled: the callback never runs. */
    struct sockaddr_storage ss;
    socklen_t sl;
    util_parse_addr(http_server_addr(srv), &ss, &sl, err, sizeof err);
    int before = ncalls;
    struct http_call *call = http_call_start(loop, (struct sockaddr *)&ss, sl, &o, on_done, NULL);
    http_call_cancel(call);
    for (int i = 0; i < 20; i++)
        ev_run(loop, EVRUN_NOWAIT);
    is_int(ncalls, before, "a cancelled call reports nothing");

    http_server_free(srv);
    ev_run(loop, EVRUN_NOWAIT);
    ev_loop_destroy(loop);
}

int main(void)
{
    test_reader();
    test_calls();
    return tap_done();
}

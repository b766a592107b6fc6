/* http_server: pipelining in order, keep-alive, bodies, limits, deadlines,
 * late answers and drain, driven by a raw client socket. The loop runs
 * until the client sees what it waits for (bounded, never a sleep). */
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_client.h"
#include "http_server.h"
#include "tap.h"
#include "util.h"

static struct ev_loop *loop;
static struct http_server *srv;
static struct http_req *held[8]; /* requests to /late*, answered by the test */
static int nheld, gone, requests;

static void on_request(void *ud, struct http_req *req)
{
    (void)ud;
    requests++;
    if (req->path_len >= 5 && memcmp(req->path, "/late", 5) == 0) {
        held[nheld++] = req;
        return;
    }
    if (req->path_len == 7 && memcmp(req->path, "/stream", 7) == 0) {
        http_resp_header(req, "Content-Type", "text/plain");
        http_resp_write(req, "a", 1);
        http_resp_stream(req);
        held[nheld++] = req;
        return;
    }
    if (req->path_len == 4 && memcmp(req->path, "/big", 4) == 0) {
        struct buf *b = http_resp_body(req);
        buf_reserve(b, 16 << 20);
        memset(buf_tail(b), 'b', 16 << 20);
        buf_commit(b, 16 << 20);
        http_resp_finish(req);
        return;
    }
    if (req->path_len == 5 && memcmp(req->path, "/echo", 5) == 0) {
        http_respond(req, 200, "text/plain", req->body, req->body_len);
        return;
    }
    struct buf *b = http_resp_body(req);
    buf_append(b, req->path, req->path_len);
    if (req->query_len) {
        buf_append_str(b, "?");
        buf_append(b, req->query, req->query_len);
    }
    http_resp_header(req, "X-Method", req->head ? "HEAD" : "other");
    http_resp_finish(req);
}

static void on_gone(void *ud, struct http_req *req)
{
    (void)ud;
    (void)req;
    gone++;
}

static int writable;
static void on_writable(void *ud, struct http_req *req)
{
    (void)ud;
    (void)req;
    writable++;
}

static const struct http_server_ops ops = {.on_request = on_request, .on_gone = on_gone,
                                           .on_writable = on_writable};

static void tick(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

static int client(void)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    char err[128];
    util_parse_addr(http_server_addr(srv), &ss, &sl, err, sizeof err);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fd, (struct sockaddr *)&ss, sl) < 0)
        return -1;
    return fd;
}

static void sendstr(int fd, const char *s) { (void)!write(fd, s, strlen(s)); }

/* Runs the loop, gathering what the client receives, until `until` returns
 * 1 for it or the peer closes (then *eof = 1); bounded at 5 s. */
static int pump_line;
#define pump(...) (pump_line = __LINE__, pump_(__VA_ARGS__))
static void pump_(int fd, struct buf *got, int (*until)(const struct buf *, const void *),
                 const void *arg, int *eof)
{
    int64_t end = util_mono_us() + 5000000;
    *eof = 0;
    while (util_mono_us() < end) {
        ev_run(loop, EVRUN_ONCE);
        char b[4096];
        ssize_t n;
        while ((n = recv(fd, b, sizeof b, MSG_DONTWAIT)) > 0)
            buf_append(got, b, (size_t)n);
        if (n == 0) {
            *eof = 1;
            return;
        }
        if (until && until(got, arg))
            return;
    }
    printf("# pump gave up at line %d\n", pump_line);
}

static int has(const struct buf *got, const void *needle)
{
    if (buf_size(got) == 0)
        return 0;
    return memmem(buf_head(got), buf_size(got), needle, strlen(needle)) != NULL;
}

static int count_of(const struct buf *got, const char *s)
{
    int k = 0;
    const char *p = buf_head(got), *end = p + buf_size(got);
    size_t l = strlen(s);
    while ((p = memmem(p, (size_t)(end - p), s, l)) != NULL) {
        k++;
        p += l;
    }
    return k;
}

static int nothing(const struct buf *got, const void *arg)
{
    (void)got;
    (void)arg;
    return 0;
}

static int once_calls;
static int nothing_once(const struct buf *got, const void *arg)
{
    (void)got;
    (void)arg;
    return ++once_calls % 3 == 0; /* a few loop turns */
}

static void marker_cb(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)revents;
    *(int *)w->data = 1;
}

static int idle_server(const struct buf *got, const void *arg)
{
    (void)got;
    (void)arg;
    return http_server_idle(srv);
}

static struct http_server *start(const struct http_server_cfg *cfg)
{
    char err[256];
    struct http_server *s = http_server_start(loop, "127.0.0.1:0", cfg, &ops, NULL, err, sizeof err);
    if (!s)
        printf("# %s\n", err);
    return s;
}

static struct http_server_cfg base_cfg(void)
{
    struct http_server_cfg cfg;
    http_server_cfg_defaults(&cfg);
    cfg.limits.max_header_size = 1024;
    cfg.limits.max_request_line = 256;
    cfg.limits.max_headers = 8;
    cfg.max_body = 64;
    return cfg;
}

static void test_pipelining_and_keep_alive(void)
{
    int fd = client(), eof;
    struct buf got;
    buf_init(&got);
    sendstr(fd, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2?q=v HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /3 HTTP/1.1\r\nHost: x\r\n\r\n");
    pump(fd, &got, has, "/3", &eof);
    buf_append(&got, "", 1);
    const char *p1 = strstr(buf_head(&got), "\r\n\r\n/1");
    const char *p2 = strstr(buf_head(&got), "\r\n\r\n/2?q=v");
    const char *p3 = strstr(buf_head(&got), "\r\n\r\n/3");
    ok(p1 && p2 && p3 && p1 < p2 && p2 < p3, "three pipelined requests answered in order");
    is_int(count_of(&got, "HTTP/1.1 200 OK\r\n"), 3, "three answers");
    ok(!eof, "the connection stays open (keep-alive)");
    ok(strstr(buf_head(&got), "Content-Length: 2\r\n") != NULL, "Content-Length set");
    ok(strstr(buf_head(&got), "Connection:") == NULL, "no Connection header on 1.1 keep-alive");

    buf_reset(&got);
    sendstr(fd, "GET /again HTTP/1.1\r\nHost: x\r\n\r\n");
    pump(fd, &got, has, "/again", &eof);
    ok(has(&got, "HTTP/1.1 200 OK\r\n") && !eof, "a later request on the same connection");

    buf_reset(&got);
    sendstr(fd, "HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n");
    pump(fd, &got, has, "\r\n\r\n", &eof);
    ok(has(&got, "Content-Length: 2\r\n") && has(&got, "X-Method: HEAD"),
       "HEAD: the length of the body it would get");
    buf_reset(&got);
    sendstr(fd, "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    pump(fd, &got, NULL, NULL, &eof);
    buf_append(&got, "", 1);
    ok(strncmp(buf_head(&got), "HTTP/1.1 200 OK\r\n", 17) == 0, "HEAD sent no body");
    ok(has(&got, "Connection: close\r\n") && eof, "Connection: close answered, then closed");
    close(fd);

    fd = client();
    buf_reset(&got);
    sendstr(fd, "GET /old HTTP/1.0\r\n\r\n");
    pump(fd, &got, NULL, NULL, &eof);
    ok(has(&got, "/old") && has(&got, "Connection: close") && eof, "HTTP/1.0 closes by default");
    close(fd);

    fd = client();
    buf_reset(&got);
    sendstr(fd, "GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    pump(fd, &got, has, "/ka", &eof);
    ok(has(&got, "Connection: keep-alive") && !eof, "HTTP/1.0 keep-alive honoured");
    close(fd);
    buf_free(&got);
}

static void test_bodies(void)
{
    int fd = client(), eof;
    struct buf got;
    buf_init(&got);
    sendstr(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
                "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
    pump(fd, &got, has, "abc", &eof);
    ok(has(&got, "Content-Length: 12\r\nContent-Type: text/plain\r\n\r\nhello, world"),
       "chunked body de-chunked");
    ok(has(&got, "\r\n\r\nabc"), "Content-Length body after it");
    close(fd);

    fd = client();
    buf_reset(&got);
    sendstr(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 65\r\n\r\n");
    pump(fd, &got, NULL, NULL, &eof);
    ok(has(&got, "HTTP/1.1 413 ") && eof, "Content-Length over the limit: 413, closed");
    close(fd);

    fd = client();
    buf_reset(&got);
    sendstr(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                "40\r\n0123456789012345678901234567890123456789012345678901234567890123\r\n"
                "1\r\nX\r\n0\r\n\r\n");
    pump(fd, &got, NULL, NULL, &eof);
    ok(has(&got, "HTTP/1.1 413 ") && eof, "chunked body over the limit: 413, closed");
    close(fd);

    fd = client();
    buf_reset(&got);
    sendstr(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
    pump(fd, &got, has, "100 Continue", &eof);
    ok(has(&got, "HTTP/1.1 100 Continue\r\n\r\n"), "Expect: 100-continue gets a go-ahead");
    sendstr(fd, "ok");
    pump(fd, &got, has, "\r\n\r\nok", &eof);
    ok(has(&got, "HTTP/1.1 200 OK"), "then the answer");
    close(fd);
    buf_free(&got);
}

static void test_limits(void)
{
    int fd = client(), eof;
    struct buf got;
    buf_init(&got);
    /* One good request first: its answer comes before the error. */
    sendstr(fd, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n");
    for (int i = 0; i < 40; i++)
        sendstr(fd, "X-Filler: 0123456789012345678901234567890123456789\r\n");
    pump(fd, &got, NULL, NULL, &eof);
    buf_append(&got, "", 1);
    const char *a = strstr(buf_head(&got), "/ok"), *b = strstr(buf_head(&got), "HTTP/1.1 431 ");
    ok(a && b && a < b, "oversize head: 431 after the answer before it");
    ok(eof, "and the connection closed");
    close(fd);

    fd = client();
    buf_reset(&got);
    sendstr(fd, "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\n"
                "G: 1\r\nH: 1\r\n\r\n");
    pump(fd, &got, NULL, NULL, &eof);
    ok(has(&got, "HTTP/1.1 431 ") && eof, "too many headers: 431, closed");
    close(fd);

    fd = client();
    buf_reset(&got);
    char line[400];
    memset(line, 'a', sizeof line);
    memcpy(line, "GET /", 5);
    line[sizeof line - 1] = 0;
    sendstr(fd, line);
    pump(fd, &got, NULL, NULL, &eof);
    ok(has(&got, "HTTP/1.1 414 ") && eof, "request line too long: 414, closed");
    close(fd);

    fd = client();
    buf_reset(&got);
    sendstr(fd, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n");
    pump(fd, &got, NULL, NULL, &eof);
    ok(has(&got, "HTTP/1.1 400 ") && eof, "smuggling attempt: 400, closed");
    close(fd);

    fd = client();
    buf_reset(&got);
    sendstr(fd, "GET / HTTP/1.1\nHost: x\n\n");
    pump(fd, &got, NULL, NULL, &eof);
    ok(has(&got, "HTTP/1.1 400 ") && eof, "bare LF: 400, closed");
    close(fd);

    int before = requests;
    fd = client();
    buf_reset(&got);
    sendstr(fd, "POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello");
    pump(fd, &got, NULL, NULL, &eof);
    ok(has(&got, "HTTP/1.1 400 ") && eof, "space before a colon: 400, closed");
    close(fd);

    fd = client();
    buf_reset(&got);
    sendstr(fd, "GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n");
    pump(fd, &got, NULL, NULL, &eof);
    ok(has(&got, "HTTP/1.1 400 ") && eof, "TAB in the target: 400, closed");
    close(fd);

    /* HTTP/0.9: answered at the end of its line, well before the 10 s head
     * deadline (pump gives up after 5 s) */
    fd = client();
    buf_reset(&got);
    sendstr(fd, "GET /\r\n");
    pump(fd, &got, NULL, NULL, &eof);
    ok(has(&got, "HTTP/1.1 400 ") && eof, "a request line without a version: 400 at once");
    close(fd);
    is_int(requests, before, "none of them reached the handler");
    buf_free(&got);
}

static void test_late_answer(void)
{
    int fd = client(), eof;
    struct buf got;
    buf_init(&got);
    nheld = 0;
    int before = requests;
    sendstr(fd, "GET /late HTTP/1.1\r\nHost: x\r\n\r\nGET /now HTTP/1.1\r\nHost: x\r\n\r\n");
    /* Run until both requests have reached the handler. */
    int64_t end = util_mono_us() + 5000000;
    while (requests < before + 2 && util_mono_us() < end)
        ev_run(loop, EVRUN_ONCE);
    is_int(requests - before, 2, "both pipelined requests dispatched at once");
    is_int(nheld, 1, "the first one is held");
    char b[256];
    ok(recv(fd, b, sizeof b, MSG_DONTWAIT) < 0 && errno == EAGAIN,
       "the second answer waits for the first");
    struct buf *body = http_resp_body(held[0]);
    buf_append_str(body, "late");
    http_resp_finish(held[0]); /* from outside any callback */
    pump(fd, &got, has, "/now", &eof);
    buf_append(&got, "", 1);
    const char *a = strstr(buf_head(&got), "late"), *n = strstr(buf_head(&got), "/now");
    ok(a && n && a < n, "late answer first, then the one after it");
    ok(!eof, "connection still open");

    /* A client that leaves while its request is held: on_gone, and the
     * late answer only frees it. */
    nheld = 0;
    gone = 0;
    sendstr(fd, "GET /late2 HTTP/1.1\r\nHost: x\r\n\r\n");
    end = util_mono_us() + 5000000;
    while (nheld < 1 && util_mono_us() < end)
        ev_run(loop, EVRUN_ONCE);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg); /* close with a reset */
    close(fd);
    while (gone < 1 && util_mono_us() < end)
        ev_run(loop, EVRUN_ONCE);
    is_int(gone, 1, "on_gone when the client left");
    ok(http_req_gone(held[0]), "the request knows");
    http_respond(held[0], 200, NULL, "x", 1); /* frees it (ASan checks) */
    buf_free(&got);
}

/* Reads one response out of got with the client's reader. */
static int parse_one(const struct buf *got, size_t *used, char *body, size_t blen, int head_req)
{
    const struct http_limits lim = {1024, 4096, 32};
    struct http_resp_reader rd;
    http_resp_reader_init(&rd, &lim, 4096, head_req);
    ssize_t n = http_resp_reader_feed(&rd, buf_head(got), buf_size(got));
    int status = rd.state == HRR_DONE ? rd.msg.status : -1;
    if (n >= 0)
        *used = (size_t)n;
    snprintf(body, blen, "%.*s", (int)buf_size(&rd.body), buf_size(&rd.body) ? buf_head(&rd.body) : "");
    http_resp_reader_free(&rd);
    return status;
}

static void test_streaming(void)
{
    int fd = client(), eof;
    struct buf got;
    buf_init(&got);
    nheld = 0;
    sendstr(fd, "GET /late HTTP/1.1\r\nHost: x\r\n\r\nGET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    int64_t end = util_mono_us() + 5000000;
    while (nheld < 2 && util_mono_us() < end)
        ev_run(loop, EVRUN_ONCE);
    is_int(nheld, 2, "a held answer and a stream behind it");
    struct http_req *late = held[0], *st = held[1];
    http_resp_write(st, "b", 1); /* before its head can go out */
    for (int i = 0; i < 5; i++)
        ev_run(loop, EVRUN_NOWAIT);
    char b[64];
    ok(recv(fd, b, sizeof b, MSG_DONTWAIT) < 0, "the stream waits behind the held answer");
    http_respond(late, 200, NULL, "first", 5);
    pump(fd, &got, has, "2\r\nab\r\n", &eof); /* what waited goes as one chunk */
    size_t used = 0;
    char body[64];
    is_int(parse_one(&got, &used, body, sizeof body, 0), 200, "the held answer first");
    is_str(body, "first", "its body");
    buf_consume(&got, used);
    ok(has(&got, "Transfer-Encoding: chunked\r\n") && has(&got, "Content-Type: text/plain"),
       "the stream's head: chunked, with its headers");
    http_resp_write(st, "cd", 2); /* from outside any callback: goes out now */
    pump(fd, &got, has, "2\r\ncd\r\n", &eof);
    ok(has(&got, "2\r\ncd\r\n"), "a late chunk goes out at once");
    ok(writable > 0 && http_resp_backlog(st) == 0, "on_writable once it went out (%d)", writable);
    http_resp_finish(st);
    pump(fd, &got, has, "0\r\n\r\n", &eof);
    is_int(parse_one(&got, &used, body, sizeof body, 0), 200, "the stream parses as a response");
    is_str(body, "abcd", "de-chunked: what was written before and after the head");
    ok(!eof, "keep-alive after a chunked answer");
    buf_reset(&got);
    sendstr(fd, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n");
    pump(fd, &got, has, "/after", &eof);
    ok(has(&got, "/after"), "the next request on the same connection");
    close(fd);

    /* HTTP/1.0: no chunked coding; the body runs to the close. */
    fd = client();
    buf_reset(&got);
    nheld = 0;
    sendstr(fd, "GET /stream HTTP/1.0\r\n\r\n");
    end = util_mono_us() + 5000000;
    while (nheld < 1 && util_mono_us() < end)
        ev_run(loop, EVRUN_ONCE);
    http_resp_write(held[0], "xyz", 3);
    http_resp_finish(held[0]);
    pump(fd, &got, NULL, NULL, &eof);
    ok(eof && has(&got, "Connection: close\r\n") && !has(&got, "chunked") && has(&got, "\r\n\r\naxyz"),
       "HTTP/1.0 stream: raw body, then the close");
    close(fd);

    /* HEAD: the head only. */
    fd = client();
    buf_reset(&got);
    nheld = 0;
    sendstr(fd, "HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\nGET /x HTTP/1.1\r\nHost: x\r\n\r\n");
    end = util_mono_us() + 5000000;
    while (nheld < 1 && util_mono_us() < end)
        ev_run(loop, EVRUN_ONCE);
    http_resp_write(held[0], "nope", 4);
    http_resp_finish(held[0]);
    pump(fd, &got, has, "/x", &eof);
    ok(!has(&got, "nope") && !has(&got, "chunked") && has(&got, "/x"), "HEAD stream: no body");
    close(fd);
    buf_free(&got);
}

/* A streamed answer that cannot complete is cut short: no last chunk,
 * the connection closes after what was queued, requests behind it are
 * dropped. */
static void test_abort(void)
{
    int fd = client(), eof;
    struct buf got;
    buf_init(&got);
    struct http_server_stats st0, st1;
    http_server_stats(srv, &st0);
    nheld = 0;
    int gone0 = gone;
    sendstr(fd, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\nGET /late HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /behind HTTP/1.1\r\nHost: x\r\n\r\n");
    int64_t end = util_mono_us() + 5000000;
    while (nheld < 2 && util_mono_us() < end)
        ev_run(loop, EVRUN_ONCE);
    is_int(nheld, 2, "a stream, a held request behind it (and an answered one)");
    struct http_req *s = held[0];
    http_resp_write(s, "cd", 2);
    pump(fd, &got, has, "2\r\ncd\r\n", &eof);
    ok(has(&got, "Transfer-Encoding: chunked\r\n") && has(&got, "1\r\na\r\n2\r\ncd\r\n"),
       "the stream's head and chunks went out");
    is_int(http_resp_unstream(s), -1, "a stream whose head went out cannot be taken back");
    http_resp_write(s, "efg", 3); /* queued, then the abort: it still goes */
    http_resp_abort(s);
    pump(fd, &got, NULL, NULL, &eof);
    ok(eof, "the connection closes");
    ok(has(&got, "3\r\nefg\r\n"), "what was queued before the abort went out");
    ok(!has(&got, "0\r\n\r\n"), "no terminating chunk: the body reads as cut short");
    ok(!has(&got, "/behind") && count_of(&got, "HTTP/1.1 ") == 1,
       "requests pipelined behind it are dropped");
    is_int(gone - gone0, 1, "the held one behind it hears on_gone");
    size_t used = 0;
    char body[64];
    is_int(parse_one(&got, &used, body, sizeof body, 0), -1,
           "a client's reader does not take it for a complete answer");
    http_resp_finish(held[1]); /* gone: only frees it */
    http_server_stats(srv, &st1);
    is_int((int)(st1.aborted - st0.aborted), 1, "counted as aborted");
    close(fd);

    /* Aborted while its head waits behind an earlier answer: the earlier
     * answer goes, nothing of the aborted one, then the close. */
    fd = client();
    buf_reset(&got);
    nheld = 0;
    sendstr(fd, "GET /late HTTP/1.1\r\nHost: x\r\n\r\nGET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    end = util_mono_us() + 5000000;
    while (nheld < 2 && util_mono_us() < end)
        ev_run(loop, EVRUN_ONCE);
    is_int(nheld, 2, "a held answer and a stream behind it");
    http_resp_abort(held[1]);
    for (int i = 0; i < 5; i++)
        ev_run(loop, EVRUN_NOWAIT);
    char b[64];
    ok(recv(fd, b, sizeof b, MSG_DONTWAIT) < 0 && errno == EAGAIN,
       "the abort waits for the answer before it");
    http_respond(held[0], 200, NULL, "first", 5);
    pump(fd, &got, NULL, NULL, &eof);
    ok(eof && has(&got, "first") && !has(&got, "chunked"),
       "the answer before it, then the close, nothing of the aborted one");
    close(fd);

    /* Or taken back while its head waits: it becomes an ordinary answer. */
    fd = client();
    buf_reset(&got);
    nheld = 0;
    sendstr(fd, "GET /late HTTP/1.1\r\nHost: x\r\n\r\nGET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    end = util_mono_us() + 5000000;
    while (nheld < 2 && util_mono_us() < end)
        ev_run(loop, EVRUN_ONCE);
    is_int(http_resp_unstream(held[1]), 0, "a stream whose head waits can be taken back");
    http_respond(held[1], 500, "text/plain", "failed", 6);
    http_respond(held[0], 200, NULL, "first", 5);
    pump(fd, &got, has, "failed", &eof);
    ok(has(&got, "first") && has(&got, "HTTP/1.1 500 ") && has(&got, "Content-Length: 6\r\n") &&
           !has(&got, "chunked") && !eof,
       "it is answered as an ordinary 500, and the connection stays");
    close(fd);

    /* HTTP/1.0: a close-delimited body; the early close looks like its end. */
    fd = client();
    buf_reset(&got);
    nheld = 0;
    sendstr(fd, "GET /stream HTTP/1.0\r\n\r\n");
    end = util_mono_us() + 5000000;
    while (nheld < 1 && util_mono_us() < end)
        ev_run(loop, EVRUN_ONCE);
    http_resp_write(held[0], "xy", 2);
    http_resp_abort(held[0]);
    pump(fd, &got, NULL, NULL, &eof);
    ok(eof && has(&got, "\r\n\r\naxy"), "HTTP/1.0: the body so far, then the close");
    close(fd);

    /* The client left first: the abort only frees the request. */
    fd = client();
    nheld = 0;
    sendstr(fd, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    end = util_mono_us() + 5000000;
    while (nheld < 1 && util_mono_us() < end)
        ev_run(loop, EVRUN_ONCE);
    close(fd);
    while (!http_req_gone(held[0]) && util_mono_us() < end)
        ev_run(loop, EVRUN_ONCE);
    ok(http_req_gone(held[0]), "the client left");
    http_server_stats(srv, &st0);
    http_resp_abort(held[0]); /* frees it (ASan checks) */
    http_server_stats(srv, &st1);
    is_int((int)(st1.aborted - st0.aborted), 0, "a gone request is not counted");

    /* The server goes on serving. */
    fd = client();
    buf_reset(&got);
    sendstr(fd, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
    pump(fd, &got, has, "/next", &eof);
    ok(has(&got, "/next"), "a new connection is served");
    close(fd);
    buf_free(&got);
}

static void test_deadlines(void)
{
    struct http_server_cfg cfg = base_cfg();
    cfg.idle_timeout = 0.05;
    cfg.head_timeout = 0.05;
    cfg.send_timeout = 0.05;
    struct http_server *keep = srv;
    srv = start(&cfg);
    int fd = client(), eof;
    struct buf got;
    buf_init(&got);
    pump(fd, &got, nothing, NULL, &eof);
    ok(eof && buf_size(&got) == 0, "idle deadline: closed without a word");
    close(fd);

    fd = client();
    sendstr(fd, "GET / HTTP/1.1\r\nHost:");
    pump(fd, &got, nothing, NULL, &eof);
    ok(eof && has(&got, "HTTP/1.1 408 "), "head deadline: 408, closed");
    close(fd);

    fd = client();
    buf_reset(&got);
    sendstr(fd, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n");
    pump(fd, &got, nothing, NULL, &eof);
    ok(has(&got, "/a") && eof, "idle again after an answer: closed");
    close(fd);
    /* A request waiting on its handler has no deadline from the layer: a
     * head that arrived in pieces must not leave its deadline behind. libev
     * fires timers in order, so once `marker` (4x the deadlines) has fired,
     * a stale deadline would have too. */
    fd = client();
    buf_reset(&got);
    nheld = 0;
    sendstr(fd, "GET /late HTTP/1.1\r\nHo");
    pump(fd, &got, nothing_once, NULL, &eof);
    sendstr(fd, "st: x\r\n\r\n");
    int64_t end = util_mono_us() + 5000000;
    while (nheld < 1 && util_mono_us() < end)
        ev_run(loop, EVRUN_ONCE);
    is_int(nheld, 1, "held");
    ev_timer marker;
    int fired = 0;
    ev_timer_init(&marker, marker_cb, 0.2, 0.);
    marker.data = &fired;
    ev_timer_start(loop, &marker);
    while (!fired && util_mono_us() < end)
        ev_run(loop, EVRUN_ONCE);
    ok(!http_req_gone(held[0]), "a held request outlives the head deadline");
    http_respond(held[0], 200, NULL, "done", 4);
    pump(fd, &got, has, "done", &eof);
    ok(has(&got, "done"), "and is answered");
    close(fd);
    /* A client that never reads a big answer is cut off. */
    fd = client();
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    sendstr(fd, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    struct http_server_stats st;
    end = util_mono_us() + 5000000;
    do {
        ev_run(loop, EVRUN_ONCE);
        http_server_stats(srv, &st);
    } while ((st.connections > 0 || st.timeouts < 4) && util_mono_us() < end);
    is_int(st.connections, 0, "a client that stopped reading is cut off");
    close(fd);
    http_server_stats(srv, &st);
    is_int(st.timeouts, 4, "four deadlines counted");
    http_server_free(srv);
    srv = keep;
    buf_free(&got);
}

static void test_drain(void)
{
    struct http_server_cfg cfg = base_cfg();
    struct http_server *keep = srv;
    srv = start(&cfg);
    int idle_fd = client(), busy = client(), eof;
    struct buf got;
    buf_init(&got);
    nheld = 0;
    sendstr(busy, "GET /late HTTP/1.1\r\nHost: x\r\n\r\n");
    int64_t end = util_mono_us() + 5000000;
    while (nheld < 1 && util_mono_us() < end)
        ev_run(loop, EVRUN_ONCE);
    is_int(nheld, 1, "a request in flight");
    struct http_server_stats st;
    do {
        ev_run(loop, EVRUN_ONCE);
        http_server_stats(srv, &st);
    } while (st.connections < 2 && util_mono_us() < end);
    http_server_drain(srv);
    pump(idle_fd, &got, nothing, NULL, &eof);
    ok(eof && buf_size(&got) == 0, "drain closes an idle connection");
    ok(!http_server_idle(srv), "not idle while a request is in flight");
    http_respond(held[0], 200, NULL, "bye", 3);
    pump(busy, &got, NULL, NULL, &eof);
    ok(has(&got, "bye") && has(&got, "Connection: close") && eof,
       "the request in flight is answered with Connection: close");
    pump(busy, &got, idle_server, NULL, &eof);
    ok(http_server_idle(srv), "idle after the drain");
    close(idle_fd);
    close(busy);
    http_server_free(srv);
    srv = keep;
    buf_free(&got);
}

int main(void)
{
    loop = ev_loop_new(EVFLAG_AUTO);
    ev_timer t;
    ev_timer_init(&t, tick, 0.002, 0.002);
    ev_timer_start(loop, &t);
    struct http_server_cfg cfg = base_cfg();
    srv = start(&cfg);
    ok(srv != NULL, "server started");
    test_pipelining_and_keep_alive();
    test_bodies();
    test_limits();
    test_late_answer();
    test_streaming();
    test_abort();
    test_deadlines();
    test_drain();
    http_server_free(srv);
    ev_timer_stop(loop, &t);
    ev_run(loop, EVRUN_NOWAIT);
    ev_loop_destroy(loop);
    return tap_done();
}

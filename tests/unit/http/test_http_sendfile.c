/* http_server: file answers sent with sendfile (http_resp_sendfile). The
 * body is byte-exact from the offset for the length, in order with the
 * pipelined answers around it, a large one across many waits for the
 * socket, a small one read in behind its head; HEAD and 304 get the head only; the descriptor is closed when the
 * body has gone, when the client leaves, when the client stops reading
 * (send_timeout) and when the file turns out shorter than announced. The
 * loop runs until the client sees what it waits for (bounded, no sleep). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http_server.h"
#include "tap.h"
#include "util.h"

#define BIG (8u << 20)

static struct ev_loop *loop;
static struct http_server *srv;
static char path[64];
static struct http_req *held;

static unsigned char pattern(size_t i) { return (unsigned char)(i * 31u + (i >> 9) * 7u); }

/* /f?OFF,LEN[,STATUS]: the file from OFF for LEN bytes; /late?...: the same,
 * answered by the test later; anything else: its path as text. */
static void on_request(void *ud, struct http_req *req)
{
    (void)ud;
    int is_f = req->path_len == 2 && memcmp(req->path, "/f", 2) == 0;
    int is_late = req->path_len == 5 && memcmp(req->path, "/late", 5) == 0;
    if (!is_f && !is_late) {
        http_respond(req, 200, "text/plain", req->path, req->path_len);
        return;
    }
    if (is_late) {
        held = req;
        return;
    }
    char q[64];
    snprintf(q, sizeof q, "%.*s", (int)req->query_len, req->query);
    long off = 0, len = 0, status = 200;
    sscanf(q, "%ld,%ld,%ld", &off, &len, &status);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    http_resp_status(req, (int)status);
    http_resp_header(req, "Content-Type", "application/octet-stream");
    buf_append_str(http_resp_body(req), "dropped");
    http_resp_sendfile(req, fd, (off_t)off, (size_t)len);
}

static const struct http_server_ops ops = {.on_request = on_request};

static void tick(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    while (d && readdir(d))
        n++;
    if (d)
        closedir(d);
    return n;
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

/* Runs the loop and reads until `want` bytes arrived, or the peer closed
 * (*eof), or `cond` holds, or 10 s; with fd -1 it only runs the loop. */
static void pump_until(int fd, struct buf *got, size_t want, int (*cond)(void), int *eof)
{
    int64_t end = util_mono_us() + 10000000;
    *eof = 0;
    while (util_mono_us() < end) {
        ev_run(loop, EVRUN_ONCE);
        if (fd >= 0) {
            char b[65536];
            ssize_t n;
            while ((n = recv(fd, b, sizeof b, MSG_DONTWAIT)) > 0)
                buf_append(got, b, (size_t)n);
            if (n == 0 || (n < 0 && errno == ECONNRESET)) {
                *eof = 1;
                return;
            }
        }
        if (want && buf_size(got) >= want)
            return;
        if (cond && cond())
            return;
    }
    printf("# pump gave up\n");
}

static int server_idle(void) { return http_server_idle(srv); }

/* Where the body of the answer starting at `from` begins, or NULL. */
static const char *body_of(const struct buf *got, size_t from)
{
    const char *p = memmem(buf_head(got) + from, buf_size(got) - from, "\r\n\r\n", 4);
    return p ? p + 4 : NULL;
}

static int bytes_match(const char *p, size_t off, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)p[i] != pattern(off + i))
            return 0;
    return 1;
}

static void test_small_and_pipelined(void)
{
    int before = open_fds();
    int fd = client(), eof;
    struct buf got;
    buf_init(&got);
    sendstr(fd, "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /f?100,4096 HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    const char *a_ans = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n/a";
    const char *f_head = "HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n"
                         "Content-Type: application/octet-stream\r\n\r\n";
    const char *b_ans = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n/b";
    size_t total = strlen(a_ans) + strlen(f_head) + 4096 + strlen(b_ans);
    pump_until(fd, &got, total, NULL, &eof);
    is_int(buf_size(&got), total, "three answers, exactly their bytes");
    const char *p = buf_head(&got);
    ok(buf_size(&got) == total && memcmp(p, a_ans, strlen(a_ans)) == 0, "the first answer first");
    p += strlen(a_ans);
    ok(buf_size(&got) == total && memcmp(p, f_head, strlen(f_head)) == 0,
       "the file's head: Content-Length is the length asked, the body buffer dropped");
    p += strlen(f_head);
    ok(buf_size(&got) == total && bytes_match(p, 100, 4096), "the file's bytes from the offset");
    p += 4096;
    ok(buf_size(&got) == total && memcmp(p, b_ans, strlen(b_ans)) == 0, "the answer behind it last");
    ok(!eof, "the connection stays open");
    is_int(open_fds(), before + 2, "the file's descriptor is closed (the connection's are open)");

    /* HEAD: the head with the length, no body, the file closed. */
    buf_reset(&got);
    sendstr(fd, "HEAD /f?0,5000 HTTP/1.1\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n");
    const char *h_ans = "HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n"
                        "Content-Type: application/octet-stream\r\n\r\n";
    const char *c_ans = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n/c";
    pump_until(fd, &got, strlen(h_ans) + strlen(c_ans), NULL, &eof);
    buf_append(&got, "", 1);
    ok(strncmp(buf_head(&got), h_ans, strlen(h_ans)) == 0 &&
           strcmp(buf_head(&got) + strlen(h_ans), c_ans) == 0,
       "HEAD: the head only, then the next answer");
    is_int(open_fds(), before + 2, "HEAD: the descriptor closed");

    /* 304: no body, no Content-Length; an empty file: Content-Length: 0. */
    buf_reset(&got);
    sendstr(fd, "GET /f?0,100,304 HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /f?0,0 HTTP/1.1\r\nHost: x\r\n\r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n");
    const char *n_ans = "HTTP/1.1 304 Not Modified\r\nContent-Type: application/octet-stream\r\n\r\n";
    const char *z_ans = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"
                        "Content-Type: application/octet-stream\r\n\r\n";
    const char *d_ans = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n/d";
    pump_until(fd, &got, strlen(n_ans) + strlen(z_ans) + strlen(d_ans), NULL, &eof);
    buf_append(&got, "", 1);
    struct buf want;
    buf_init(&want);
    buf_printf(&want, "%s%s%s", n_ans, z_ans, d_ans);
    buf_append(&want, "", 1);
    is_str(buf_head(&got), buf_head(&want), "304 and an empty length: heads only");
    is_int(open_fds(), before + 2, "both descriptors closed");
    buf_free(&want);

    /* HTTP/1.0: the body, then the close. */
    close(fd);
    fd = client();
    buf_reset(&got);
    sendstr(fd, "GET /f?7,1000 HTTP/1.0\r\n\r\n");
    pump_until(fd, &got, 0, NULL, &eof);
    const char *b = body_of(&got, 0);
    ok(eof && b && (size_t)(buf_head(&got) + buf_size(&got) - b) == 1000 && bytes_match(b, 7, 1000),
       "HTTP/1.0: the exact body, then closed");
    ok(memmem(buf_head(&got), buf_size(&got), "Connection: close\r\n", 19) != NULL,
       "HTTP/1.0: Connection: close");
    close(fd);
    pump_until(-1, &got, 0, server_idle, &eof);
    is_int(open_fds(), before, "every descriptor closed");
    buf_free(&got);
}

static void test_big(void)
{
    int before = open_fds();
    int fd = client(), eof;
    struct buf got;
    buf_init(&got);
    /* Two large bodies back to back, with a small answer between. */
    sendstr(fd, "GET /f?0,8388608 HTTP/1.1\r\nHost: x\r\n\r\nGET /m HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /f?1,8388000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    pump_until(fd, &got, 0, NULL, &eof);
    ok(eof, "closed after the last answer (Connection: close)");
    const char *b1 = body_of(&got, 0);
    ok(b1 && (size_t)(buf_head(&got) + buf_size(&got) - b1) > BIG && bytes_match(b1, 0, BIG),
       "8 MiB byte-exact");
    const char *m = b1 ? b1 + BIG : NULL;
    const char *m_ans = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n/m";
    ok(m && memcmp(m, m_ans, strlen(m_ans)) == 0, "the small answer right after it");
    const char *b2 = m ? body_of(&got, (size_t)(m - buf_head(&got)) + strlen(m_ans)) : NULL;
    ok(b2 && (size_t)(buf_head(&got) + buf_size(&got) - b2) == 8388000 && bytes_match(b2, 1, 8388000),
       "the second file byte-exact to the end");
    ok(b2 && memmem(m, (size_t)(b2 - m), "Connection: close\r\n", 19) != NULL, "its head says close");
    close(fd);
    pump_until(-1, &got, 0, server_idle, &eof);
    is_int(open_fds(), before, "descriptors closed");
    buf_free(&got);
}

static int got_held(void) { return held != NULL; }

/* Just past the size read in behind the head: sendfile, between two
 * small answers on one connection. */
static void test_past_inline(void)
{
    int fd = client(), eof;
    struct buf got;
    buf_init(&got);
    sendstr(fd, "GET /f?3,16 HTTP/1.1\r\nHost: x\r\n\r\nGET /f?5,16385 HTTP/1.1\r\nHost: x\r\n\r\n"
                "GET /f?9,16384 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    pump_until(fd, &got, 0, NULL, &eof);
    const char *b1 = body_of(&got, 0);
    ok(b1 && bytes_match(b1, 3, 16), "16 bytes read in behind the head");
    const char *b2 = b1 ? body_of(&got, (size_t)(b1 + 16 - buf_head(&got))) : NULL;
    ok(b2 && (size_t)(buf_head(&got) + buf_size(&got) - b2) > 16385 && bytes_match(b2, 5, 16385),
       "16385 bytes with sendfile, byte-exact, in order");
    const char *b3 = b2 ? body_of(&got, (size_t)(b2 + 16385 - buf_head(&got))) : NULL;
    ok(eof && b3 && (size_t)(buf_head(&got) + buf_size(&got) - b3) == 16384 &&
           bytes_match(b3, 9, 16384),
       "16384 bytes read in, the last answer, then the close");
    close(fd);
    buf_free(&got);
}

static void test_client_leaves(void)
{
    int before = open_fds();
    int fd = client(), eof;
    struct buf got;
    buf_init(&got);
    sendstr(fd, "GET /f?0,8388608 HTTP/1.1\r\nHost: x\r\n\r\n");
    pump_until(fd, &got, 100000, NULL, &eof);
    ok(buf_size(&got) >= 100000, "the body is on its way");
    close(fd);
    pump_until(-1, &got, 0, server_idle, &eof);
    ok(http_server_idle(srv), "the connection ended when the client left");
    is_int(open_fds(), before, "the file's descriptor closed with it");

    /* Gone before the answer: the descriptor is closed at once. */
    held = NULL;
    fd = client();
    sendstr(fd, "GET /late HTTP/1.1\r\nHost: x\r\n\r\n");
    pump_until(-1, &got, 0, got_held, &eof);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd); /* a reset: the connection is gone at once */
    pump_until(-1, &got, 0, server_idle, &eof);
    ok(held && http_req_gone(held), "the held request's client is gone");
    if (held)
        http_resp_sendfile(held, open(path, O_RDONLY | O_CLOEXEC), 0, 10);
    is_int(open_fds(), before, "a file answer to a gone client closes the descriptor");
    buf_free(&got);
}

static void test_late_and_short(void)
{
    int before = open_fds();
    int fd = client(), eof;
    struct buf got;
    buf_init(&got);
    held = NULL;
    sendstr(fd, "GET /late HTTP/1.1\r\nHost: x\r\n\r\nGET /e HTTP/1.1\r\nHost: x\r\n\r\n");
    pump_until(fd, &got, 0, got_held, &eof);
    ok(held != NULL, "a request held");
    http_resp_sendfile(held, open(path, O_RDONLY | O_CLOEXEC), 10, 20);
    const char *e_ans = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n/e";
    const char *l_head = "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n";
    pump_until(fd, &got, strlen(l_head) + 20 + strlen(e_ans), NULL, &eof);
    ok(buf_size(&got) == strlen(l_head) + 20 + strlen(e_ans) &&
           memcmp(buf_head(&got), l_head, strlen(l_head)) == 0 &&
           bytes_match(buf_head(&got) + strlen(l_head), 10, 20) &&
           memcmp(buf_head(&got) + strlen(l_head) + 20, e_ans, strlen(e_ans)) == 0,
       "a late file answer goes out before the one behind it");

    /* Announced longer than the file: what there is, then the end. */
    struct http_server_stats st0, st1;
    http_server_stats(srv, &st0);
    buf_reset(&got);
    sendstr(fd, "GET /f?8388000,1000 HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n");
    pump_until(fd, &got, 0, NULL, &eof);
    const char *b = body_of(&got, 0);
    ok(eof && b && (size_t)(buf_head(&got) + buf_size(&got) - b) == BIG - 8388000,
       "a file shorter than announced: its bytes, then the connection ends");
    http_server_stats(srv, &st1);
    is_int((int)(st1.aborted - st0.aborted), 1, "counted as an answer cut short");
    close(fd);
    pump_until(-1, &got, 0, server_idle, &eof);
    is_int(open_fds(), before, "descriptors closed");
    buf_free(&got);
}

static void test_send_timeout_and_drain(void)
{
    struct http_server *keep = srv;
    struct http_server_cfg cfg;
    http_server_cfg_defaults(&cfg);
    cfg.send_timeout = 0.05;
    char err[256];
    int before = open_fds();
    srv = http_server_start(loop, "127.0.0.1:0", &cfg, &ops, NULL, err, sizeof err);
    int fd = client(), eof;
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct buf got;
    buf_init(&got);
    sendstr(fd, "GET /f?0,8388608 HTTP/1.1\r\nHost: x\r\n\r\n");
    pump_until(-1, &got, 0, server_idle, &eof); /* the client never reads */
    ok(http_server_idle(srv), "a client that stops reading a file is ended by send_timeout");
    struct http_server_stats st;
    http_server_stats(srv, &st);
    is_int(st.timeouts, 1, "counted as a timeout");
    close(fd);
    is_int(open_fds(), before + 1, "the file's descriptor closed");

    /* A drain while a file goes out: it completes, then the close. */
    fd = client();
    buf_reset(&got);
    sendstr(fd, "GET /f?0,2000000 HTTP/1.1\r\nHost: x\r\n\r\n");
    pump_until(fd, &got, 1000, NULL, &eof);
    http_server_drain(srv);
    pump_until(fd, &got, 0, NULL, &eof);
    const char *b = body_of(&got, 0);
    ok(eof && b && (size_t)(buf_head(&got) + buf_size(&got) - b) == 2000000 &&
           bytes_match(b, 0, 2000000),
       "drain: the file in flight completes, then the connection closes");
    close(fd);
    pump_until(-1, &got, 0, server_idle, &eof);
    http_server_free(srv);
    srv = keep;
    is_int(open_fds(), before, "descriptors closed");
    buf_free(&got);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as in a node: a gone client is an error code */
    snprintf(path, sizeof path, "/tmp/strata-sendfile-%d", (int)getpid());
    int wfd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    unsigned char *data = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        data[i] = pattern(i);
    ok(wfd >= 0 && write(wfd, data, BIG) == (ssize_t)BIG, "an 8 MiB file");
    close(wfd);
    free(data);

    loop = ev_loop_new(EVFLAG_AUTO);
    ev_timer t;
    ev_timer_init(&t, tick, 0.002, 0.002);
    ev_timer_start(loop, &t);
    struct http_server_cfg cfg;
    http_server_cfg_defaults(&cfg);
    char err[256];
    srv = http_server_start(loop, "127.0.0.1:0", &cfg, &ops, NULL, err, sizeof err);
    ok(srv != NULL, "server started");
    test_small_and_pipelined();
    test_big();
    test_past_inline();
    test_client_leaves();
    test_late_and_short();
    test_send_timeout_and_drain();
    http_server_free(srv);
    ev_timer_stop(loop, &t);
    ev_run(loop, EVRUN_NOWAIT);
    ev_loop_destroy(loop);
    unlink(path);
    return tap_done();
}

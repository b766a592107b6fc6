/* access_log: the two line formats, escaping of what clients send, and the
 * reopen on SIGUSR1. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "access_log.h"
#include "tap.h"

static char *slurp(const char *path)
{
    static char out[8192];
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(out, 1, sizeof out - 1, f) : 0;
    if (f)
        fclose(f);
    out[n] = 0;
    return out;
}

static void parse(const char *req, struct http_msg *m)
{
    static const struct http_limits lim = {.max_request_line = 1024, .max_header_size = 4096,
                                           .max_headers = 16};
    int status;
    ssize_t n = http_parse_request(req, strlen(req), &lim, m, &status);
    ok(n > 0, "request parsed");
}

int main(void)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    char dir[] = "/tmp/strata-alog-XXXXXX";
    ok(mkdtemp(dir) != NULL, "scratch folder");
    struct access_log_cfg cfg = {.format = ACCESS_LOG_COMBINED};
    snprintf(cfg.path, sizeof cfg.path, "%s/a.log", dir);
    int failed;
    char err[256];
    struct access_log *al = access_log_open(loop, &cfg, &failed, err, sizeof err);
    ok(al && !failed, "opened");

    struct http_hdr hdrs[16];
    struct http_msg m = {.hdrs = hdrs, .max_hdrs = 16};
    parse("GET /a%22b?q=\xc3\xa9 HTTP/1.0\r\nUser-Agent: x\"y\\z\xe2\x82\xac\r\n"
          "Referer: http://r/\r\n\r\n",
          &m);
    struct access_rec r;
    memset(&r, 0, sizeof r);
    buf_init(&r.raw);
    access_rec_begin(&r, &m, 1000.0);
    access_rec_head(&r, 201, 1000.0015);
    r.bytes = 42;
    access_log_request(al, &r, "10.0.0.1", "web1", 0, 1000.25);
    access_rec_begin(&r, NULL, 1001.0);
    r.bytes = 7;
    access_log_request(al, &r, "10.0.0.2", NULL, 400, 1001.0);
    ev_run(loop, EVRUN_NOWAIT); /* the flush runs before the loop would block */
    const char *want =
        "10.0.0.1 - - [01/Jan/1970:00:16:40 +0000] \"GET /a%22b?q=\\xC3\\xA9 HTTP/1.0\" 201 42 "
        "\"http://r/\" \"x\\x22y\\x5Cz\\xE2\\x82\\xAC\" backend=web1 request_ms=250.000 "
        "backend_ms=1.500\n"
        "10.0.0.2 - - [01/Jan/1970:00:16:41 +0000] \"-\" 400 7 \"-\" \"-\" backend=- "
        "request_ms=0.000 backend_ms=-\n";
    is_str(slurp(cfg.path), want, "combined lines, escaped");

    /* rotation: rename, SIGUSR1, the next line goes to a new file */
    char old[PATH_MAX + 8];
    snprintf(old, sizeof old, "%s.1", cfg.path);
    ok(rename(cfg.path, old) == 0, "rotated away");
    raise(SIGUSR1);
    ev_run(loop, EVRUN_NOWAIT);
    access_log_request(al, &r, "10.0.0.3", NULL, 400, 1001.0);
    access_log_free(al);
    ok(strstr(slurp(cfg.path), "10.0.0.3 ") == slurp(cfg.path), "the new file has the new line");
    ok(strstr(slurp(old), "10.0.0.3") == NULL, "the old file does not");

    cfg.format = ACCESS_LOG_JSON;
    snprintf(cfg.path, sizeof cfg.path, "%s/b.log", dir);
    al = access_log_open(loop, &cfg, &failed, err, sizeof err);
    access_rec_begin(&r, &m, 1000.0);
    access_rec_head(&r, 200, 1000.001);
    r.bytes = 5;
    access_log_request(al, &r, "10.0.0.1", "web\"1", 0, 1000.5);
    access_log_free(al);
    is_str(slurp(cfg.path),
           "{\"time\":\"1970-01-01T00:16:40.500Z\",\"client\":\"10.0.0.1\",\"method\":\"GET\","
           "\"path\":\"/a%22b?q=\\u00c3\\u00a9\",\"protocol\":\"HTTP/1.0\",\"status\":200,"
           "\"bytes\":5,\"backend\":\"web\\\"1\",\"request_ms\":500.000,\"backend_ms\":1.000,"
           "\"referer\":\"http://r/\",\"user_agent\":\"x\\\"y\\\\z\\u00e2\\u0082\\u00ac\"}\n",
           "a JSON line, escaped");

    cfg.format = ACCESS_LOG_COMBINED;
    snprintf(cfg.path, sizeof cfg.path, "%s/no/such/dir/c.log", dir);
    al = access_log_open(loop, &cfg, &failed, err, sizeof err);
    ok(!al && failed && strstr(err, "cannot open"), "an unwritable path is an error");
    cfg.format = ACCESS_LOG_OFF;
    al = access_log_open(loop, &cfg, &failed, err, sizeof err);
    ok(!al && !failed, "off: nothing opened");

    access_rec_free(&r);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    (void)!system(cmd);
    ev_loop_destroy(loop);
    return tap_done();
}

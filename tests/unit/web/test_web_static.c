/* web_static: a folder served over a real http_server on a loop driven
 * step by step, talked to with raw sockets. Statuses and headers for GET
 * and HEAD, validators and 304, ranges (206, 416, If-Range), Cache-Control
 * for ordinary and fingerprinted names, precompressed siblings chosen by
 * Accept-Encoding, directories, 405, and every way out of the folder
 * (`..`, encoded dots and slashes, NUL, backslashes, symlinks leading
 * out) refused, with openat2 and with the fallback check. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "http_server.h"
#include "tap.h"
#include "util.h"
#include "web_mime.h"
#include "web_static.h"

#define BIG (4u << 20)

static struct ev_loop *loop;
static struct http_server *srv;
static struct web_static *cur; /* the folder the server serves now */
static char root[128], outside[160];

static void on_request(void *ud, struct http_req *req)
{
    (void)ud;
    if (!web_static_serve(cur, req))
        http_respond(req, 404, "text/plain", "fallback\n", 9);
}

static const struct http_server_ops ops = {.on_request = on_request};

static void tick(struct ev_loop *l, ev_timer *w, int revents)
{
    (void)l;
    (void)w;
    (void)revents;
}

/* --- a client ------------------------------------------------------------------ */

struct resp {
    struct buf raw;
    int status;
    const char *body;
    size_t body_len;
    size_t head_len;
};

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

/* Runs the loop and reads until the server closes (bounded: 10 s). */
static void read_all(int fd, struct buf *got)
{
    int64_t end = util_mono_us() + 10000000;
    while (util_mono_us() < end) {
        ev_run(loop, EVRUN_ONCE);
        char b[65536];
        ssize_t n;
        while ((n = recv(fd, b, sizeof b, MSG_DONTWAIT)) > 0)
            buf_append(got, b, (size_t)n);
        if (n == 0 || (n < 0 && errno != EAGAIN))
            return;
    }
    printf("# read gave up\n");
}

static void parse(struct resp *r)
{
    buf_append(&r->raw, "", 1); /* a NUL after the bytes, not counted below */
    const char *p = buf_head(&r->raw);
    size_t n = buf_size(&r->raw) - 1;
    r->status = 0;
    r->body = "";
    r->body_len = 0;
    if (n > 12 && memcmp(p, "HTTP/1.1 ", 9) == 0)
        r->status = atoi(p + 9);
    const char *e = memmem(p, n, "\r\n\r\n", 4);
    if (e) {
        r->head_len = (size_t)(e - p) + 4;
        r->body = e + 4;
        r->body_len = n - r->head_len;
    }
}

/* One request on its own connection (Connection: close is added), the
 * answer read to the close. `extra`: more header lines ("A: b\r\n"...). */
static void request(struct resp *r, const char *method, const char *target, const char *extra)
{
    buf_reset(&r->raw);
    int fd = client();
    char req[2048];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: t\r\n%sConnection: close\r\n\r\n", method,
             target, extra ? extra : "");
    (void)!write(fd, req, strlen(req));
    read_all(fd, &r->raw);
    close(fd);
    parse(r);
}

static void get(struct resp *r, const char *target, const char *extra)
{
    request(r, "GET", target, extra);
}

/* A header's value in the answer (first of its name), into a static
 * buffer; NULL when absent. */
static const char *hdr(const struct resp *r, const char *name)
{
    static char v[256];
    size_t l = strlen(name);
    const char *p = buf_head(&r->raw), *end = p + r->head_len;
    p = memchr(p, '\n', (size_t)(end - p));
    while (p && ++p < end) {
        const char *eol = memchr(p, '\r', (size_t)(end - p));
        if (!eol)
            break;
        if ((size_t)(eol - p) > l + 1 && strncasecmp(p, name, l) == 0 && p[l] == ':') {
            const char *s = p + l + 1;
            while (*s == ' ')
                s++;
            snprintf(v, sizeof v, "%.*s", (int)(eol - s), s);
            return v;
        }
        p = memchr(eol, '\n', (size_t)(end - eol));
    }
    return NULL;
}

static int body_is(const struct resp *r, const char *s)
{
    return r->body_len == strlen(s) && memcmp(r->body, s, r->body_len) == 0;
}

/* --- the folder ------------------------------------------------------------------ */

static unsigned char pattern(size_t i) { return (unsigned char)(i * 7u + (i >> 11)); }

static void put(const char *rel, const void *data, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    int fd = open(p, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    (void)!write(fd, data, n);
    close(fd);
}

static void put_str(const char *rel, const char *s) { put(rel, s, strlen(s)); }

static void make_folder(void)
{
    snprintf(root, sizeof root, "/tmp/strata-ws-%d", (int)getpid());
    snprintf(outside, sizeof outside, "%s-outside.txt", root);
    mkdir(root, 0755);
    char p[512];
    put_str("index.html", "<h1>home</h1>\n");
    put_str("hello.txt", "hello, world\n");
    put_str("app.3f9a1c2e.js", "console.log(1)\n");
    put_str("app.deadbeef.js", "console.log(2)\n"); /* no digit: a word, not a hash */
    put_str("data.json", "{\"plain\":true}\n");
    put_str("data.json.br", "BRDATA");
    put_str("data.json.gz", "GZDATA!");
    put_str("style.css", "body{}\n");
    put_str("style.css.gz", "GZCSS");
    put_str("empty.txt", "");
    put_str(".env", "SECRET=1\n");
    unsigned char *big = malloc(BIG);
    for (size_t i = 0; i < BIG; i++)
        big[i] = pattern(i);
    put("big.bin", big, BIG);
    free(big);
    snprintf(p, sizeof p, "%s/sub", root);
    mkdir(p, 0755);
    put_str("sub/index.html", "<h1>sub</h1>\n");
    snprintf(p, sizeof p, "%s/empty", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/.well-known", root);
    mkdir(p, 0755);
    put_str(".well-known/acme.txt", "token\n");
    snprintf(p, sizeof p, "%s/fifo", root);
    mkfifo(p, 0644);
    int fd = open(outside, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
    (void)!write(fd, "outside\n", 8);
    close(fd);
    snprintf(p, sizeof p, "%s/link-in", root);
    (void)!symlink("hello.txt", p);
    snprintf(p, sizeof p, "%s/sub/link-up-in", root);
    (void)!symlink("../hello.txt", p);
    snprintf(p, sizeof p, "%s/link-etc", root);
    (void)!symlink("/etc", p);
    snprintf(p, sizeof p, "%s/link-out", root);
    (void)!symlink(outside, p);
    snprintf(p, sizeof p, "%s/link-up", root);
    char rel[200];
    snprintf(rel, sizeof rel, "../%s", strrchr(outside, '/') + 1);
    (void)!symlink(rel, p);
}

static void remove_folder(void)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s'", root, outside);
    (void)!system(cmd);
}

static struct web_static *folder(const char *prefix, int no_openat2)
{
    struct web_static_cfg cfg;
    web_static_cfg_defaults(&cfg);
    cfg.root = root;
    if (prefix)
        cfg.prefix = prefix;
    cfg.no_openat2 = no_openat2;
    char err[256];
    struct web_static *st = web_static_new(&cfg, err, sizeof err);
    if (!st)
        printf("# %s\n", err);
    return st;
}

static void http_date_of(time_t t, char *out, size_t n)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, n, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

static time_t mtime_of(const char *rel)
{
    char p[512];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", root, rel);
    stat(p, &sb);
    return sb.st_mtim.tv_sec;
}

/* --- tests ------------------------------------------------------------------------ */

static void test_get_and_head(struct resp *r)
{
    get(r, "/hello.txt", NULL);
    is_int(r->status, 200, "GET a file: 200");
    ok(body_is(r, "hello, world\n"), "its bytes");
    is_str(hdr(r, "Content-Length"), "13", "Content-Length");
    is_str(hdr(r, "Content-Type"), "text/plain; charset=utf-8", "Content-Type by extension");
    char etag[128];
    snprintf(etag, sizeof etag, "%s", hdr(r, "ETag") ? hdr(r, "ETag") : "");
    ok(etag[0] == '"' && etag[strlen(etag) - 1] == '"', "a strong ETag (%s)", etag);
    char lm[64];
    http_date_of(mtime_of("hello.txt"), lm, sizeof lm);
    is_str(hdr(r, "Last-Modified"), lm, "Last-Modified is the file's mtime");
    is_str(hdr(r, "Cache-Control"), "public, max-age=300", "Cache-Control: the default max-age");
    is_str(hdr(r, "Accept-Ranges"), "bytes", "Accept-Ranges: bytes");
    ok(hdr(r, "Date") && strlen(hdr(r, "Date")) == 29, "a Date");
    ok(!hdr(r, "Vary") && !hdr(r, "Content-Encoding"), "no Vary without a sibling");

    request(r, "HEAD", "/hello.txt", NULL);
    is_int(r->status, 200, "HEAD: 200");
    ok(r->body_len == 0, "HEAD: no body");
    is_str(hdr(r, "Content-Length"), "13", "HEAD: the length of the body");
    is_str(hdr(r, "ETag"), etag, "HEAD: the same ETag");

    /* Two requests on one connection, the file ones back to back. */
    buf_reset(&r->raw);
    int fd = client();
    const char *two = "GET /hello.txt HTTP/1.1\r\nHost: t\r\n\r\n"
                      "GET /index.html HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    (void)!write(fd, two, strlen(two));
    read_all(fd, &r->raw);
    close(fd);
    buf_append(&r->raw, "", 1);
    const char *a = strstr(buf_head(&r->raw), "hello, world\n");
    const char *b = strstr(buf_head(&r->raw), "<h1>home</h1>\n");
    ok(a && b && a < b, "pipelined: both answers, in order");

    get(r, "/empty.txt", NULL);
    ok(r->status == 200 && r->body_len == 0, "an empty file: 200, no body");
    is_str(hdr(r, "Content-Length"), "0", "Content-Length: 0");
    get(r, "/app.3f9a1c2e.js", NULL);
    is_str(hdr(r, "Cache-Control"), "public, max-age=31536000, immutable",
           "a fingerprinted name is immutable for a year");
    is_str(hdr(r, "Content-Type"), "text/javascript; charset=utf-8", "a script");
    get(r, "/app.deadbeef.js", NULL);
    is_str(hdr(r, "Cache-Control"), "public, max-age=300", "hex letters only: not a fingerprint");
}

static void test_conditional(struct resp *r)
{
    get(r, "/hello.txt", NULL);
    char etag[128], lm[64], extra[512];
    snprintf(etag, sizeof etag, "%s", hdr(r, "ETag") ? hdr(r, "ETag") : "?");
    snprintf(lm, sizeof lm, "%s", hdr(r, "Last-Modified") ? hdr(r, "Last-Modified") : "?");

    snprintf(extra, sizeof extra, "If-None-Match: %s\r\n", etag);
    get(r, "/hello.txt", extra);
    is_int(r->status, 304, "If-None-Match with the tag: 304");
    ok(r->body_len == 0 && !hdr(r, "Content-Length"), "304: no body, no length");
    is_str(hdr(r, "ETag"), etag, "304: the ETag");
    is_str(hdr(r, "Cache-Control"), "public, max-age=300", "304: the Cache-Control");
    ok(hdr(r, "Date") != NULL, "304: a Date");
    request(r, "HEAD", "/hello.txt", extra);
    is_int(r->status, 304, "HEAD with If-None-Match: 304");

    snprintf(extra, sizeof extra, "If-None-Match: W/%s\r\n", etag);
    get(r, "/hello.txt", extra);
    is_int(r->status, 304, "If-None-Match compares weakly: W/ matches");
    snprintf(extra, sizeof extra, "If-None-Match: \"nope\", %s\r\n", etag);
    get(r, "/hello.txt", extra);
    is_int(r->status, 304, "a list naming it: 304");
    snprintf(extra, sizeof extra, "If-None-Match: \"nope\"\r\nIf-None-Match: %s\r\n", etag);
    get(r, "/hello.txt", extra);
    is_int(r->status, 304, "the list across two fields: 304");
    get(r, "/hello.txt", "If-None-Match: *\r\n");
    is_int(r->status, 304, "If-None-Match: * for a file that exists: 304");
    get(r, "/hello.txt", "If-None-Match: \"nope\", W/\"other\"\r\n");
    ok(r->status == 200 && body_is(r, "hello, world\n"), "another tag: 200 with the body");

    snprintf(extra, sizeof extra, "If-Modified-Since: %s\r\n", lm);
    get(r, "/hello.txt", extra);
    is_int(r->status, 304, "If-Modified-Since the Last-Modified: 304");
    char d[64];
    http_date_of(mtime_of("hello.txt") - 3600, d, sizeof d);
    snprintf(extra, sizeof extra, "If-Modified-Since: %s\r\n", d);
    get(r, "/hello.txt", extra);
    is_int(r->status, 200, "If-Modified-Since an hour before: 200");
    http_date_of(mtime_of("hello.txt") + 3600, d, sizeof d);
    snprintf(extra, sizeof extra, "If-Modified-Since: %s\r\n", d);
    get(r, "/hello.txt", extra);
    is_int(r->status, 304, "If-Modified-Since an hour after: 304");
    struct tm tm;
    time_t mt = mtime_of("hello.txt");
    gmtime_r(&mt, &tm);
    strftime(d, sizeof d, "%a %b %e %H:%M:%S %Y", &tm);
    snprintf(extra, sizeof extra, "If-Modified-Since: %s\r\n", d);
    get(r, "/hello.txt", extra);
    is_int(r->status, 304, "the asctime form is read too (%s)", d);
    strftime(d, sizeof d, "%A, %d-%b-%y %H:%M:%S GMT", &tm);
    snprintf(extra, sizeof extra, "If-Modified-Since: %s\r\n", d);
    get(r, "/hello.txt", extra);
    is_int(r->status, 304, "and the RFC 850 form (%s)", d);
    get(r, "/hello.txt", "If-Modified-Since: yesterday\r\n");
    is_int(r->status, 200, "a bad date is ignored: 200");
    snprintf(extra, sizeof extra, "If-None-Match: \"nope\"\r\nIf-Modified-Since: %s\r\n", lm);
    get(r, "/hello.txt", extra);
    is_int(r->status, 200, "If-Modified-Since is ignored when If-None-Match is present");

    get(r, "/hello.txt", "If-Match: \"nope\"\r\n");
    is_int(r->status, 412, "If-Match another tag: 412");
    snprintf(extra, sizeof extra, "If-Match: %s\r\n", etag);
    get(r, "/hello.txt", extra);
    is_int(r->status, 200, "If-Match the tag: 200");
}

static void test_ranges(struct resp *r)
{
    get(r, "/hello.txt", "Range: bytes=0-4\r\n");
    is_int(r->status, 206, "bytes=0-4: 206");
    ok(body_is(r, "hello"), "the five first bytes");
    is_str(hdr(r, "Content-Range"), "bytes 0-4/13", "Content-Range");
    is_str(hdr(r, "Content-Length"), "5", "Content-Length of the part");
    get(r, "/hello.txt", "Range: bytes=7-\r\n");
    ok(r->status == 206 && body_is(r, "world\n"), "bytes=7-: to the end");
    is_str(hdr(r, "Content-Range"), "bytes 7-12/13", "its Content-Range");
    get(r, "/hello.txt", "Range: bytes=-6\r\n");
    ok(r->status == 206 && body_is(r, "world\n"), "bytes=-6: the last six");
    get(r, "/hello.txt", "Range: bytes=-100\r\n");
    ok(r->status == 206 && body_is(r, "hello, world\n"), "a suffix longer than the file: all of it");
    is_str(hdr(r, "Content-Range"), "bytes 0-12/13", "as a 206 of the whole");
    get(r, "/hello.txt", "Range: bytes=5-100\r\n");
    ok(r->status == 206 && body_is(r, ", world\n"), "a last position past the end is cut");
    get(r, "/hello.txt", "Range: bytes=13-\r\n");
    is_int(r->status, 416, "from past the end: 416");
    is_str(hdr(r, "Content-Range"), "bytes */13", "416: Content-Range bytes */size");
    get(r, "/hello.txt", "Range: bytes=-0\r\n");
    is_int(r->status, 416, "bytes=-0: 416");
    get(r, "/hello.txt", "Range: bytes=0-1,4-5\r\n");
    ok(r->status == 200 && body_is(r, "hello, world\n"), "several ranges: 200, the whole file");
    get(r, "/hello.txt", "Range: bytes=5-2\r\n");
    ok(r->status == 200 && body_is(r, "hello, world\n"), "an invalid range is ignored: 200");
    get(r, "/hello.txt", "Range: items=0-1\r\n");
    is_int(r->status, 200, "another unit: 200");
    request(r, "HEAD", "/hello.txt", "Range: bytes=0-4\r\n");
    ok(r->status == 200 && !hdr(r, "Content-Range"), "HEAD ignores Range");
    get(r, "/empty.txt", "Range: bytes=0-\r\n");
    ok(r->status == 416 && hdr(r, "Content-Range") && strcmp(hdr(r, "Content-Range"), "bytes */0") == 0,
       "a range of an empty file: 416 bytes */0");

    get(r, "/hello.txt", NULL);
    char etag[128], lm[64], extra[512];
    snprintf(etag, sizeof etag, "%s", hdr(r, "ETag") ? hdr(r, "ETag") : "?");
    snprintf(lm, sizeof lm, "%s", hdr(r, "Last-Modified") ? hdr(r, "Last-Modified") : "?");
    snprintf(extra, sizeof extra, "Range: bytes=0-4\r\nIf-Range: %s\r\n", etag);
    get(r, "/hello.txt", extra);
    is_int(r->status, 206, "If-Range with the tag: 206");
    get(r, "/hello.txt", "Range: bytes=0-4\r\nIf-Range: \"old\"\r\n");
    ok(r->status == 200 && body_is(r, "hello, world\n"), "If-Range with another tag: 200, all");
    snprintf(extra, sizeof extra, "Range: bytes=0-4\r\nIf-Range: W/%s\r\n", etag);
    get(r, "/hello.txt", extra);
    is_int(r->status, 200, "If-Range with a weak tag: 200");
    snprintf(extra, sizeof extra, "Range: bytes=0-4\r\nIf-Range: %s\r\n", lm);
    get(r, "/hello.txt", extra);
    is_int(r->status, 206, "If-Range with the Last-Modified date: 206");
    get(r, "/hello.txt", "Range: bytes=0-4\r\nIf-Range: Mon, 01 Jan 2001 00:00:00 GMT\r\n");
    is_int(r->status, 200, "If-Range with another date: 200");

    get(r, "/big.bin", "Range: bytes=1048576-2097151\r\n");
    int exact = r->status == 206 && r->body_len == 1048576;
    for (size_t i = 0; exact && i < r->body_len; i++)
        exact = (unsigned char)r->body[i] == pattern(1048576 + i);
    ok(exact, "a middle MiB of the big file, byte-exact");
}

static void test_precompressed(struct resp *r)
{
    get(r, "/data.json", "Accept-Encoding: gzip, deflate, br\r\n");
    ok(r->status == 200 && body_is(r, "BRDATA"), "br accepted: the .br sibling");
    is_str(hdr(r, "Content-Encoding"), "br", "Content-Encoding: br");
    is_str(hdr(r, "Vary"), "Accept-Encoding", "Vary: Accept-Encoding");
    is_str(hdr(r, "Content-Type"), "application/json", "the type of the file, not of .br");
    char br_tag[128];
    snprintf(br_tag, sizeof br_tag, "%s", hdr(r, "ETag") ? hdr(r, "ETag") : "?");
    get(r, "/data.json", "Accept-Encoding: gzip\r\n");
    ok(r->status == 200 && body_is(r, "GZDATA!"), "gzip only: the .gz sibling");
    is_str(hdr(r, "Content-Encoding"), "gzip", "Content-Encoding: gzip");
    ok(hdr(r, "ETag") && strcmp(hdr(r, "ETag"), br_tag) != 0, "each coding its own ETag");
    get(r, "/data.json", "Accept-Encoding: br;q=0, gzip\r\n");
    ok(body_is(r, "GZDATA!"), "br;q=0 is refused: gzip");
    get(r, "/data.json", "Accept-Encoding: gzip;q=0.5, br;q=0.4\r\n");
    ok(body_is(r, "GZDATA!"), "the higher q wins");
    get(r, "/data.json", "Accept-Encoding: *\r\n");
    ok(body_is(r, "BRDATA"), "*: br first");
    get(r, "/data.json", "Accept-Encoding: *;q=0, identity\r\n");
    ok(body_is(r, "{\"plain\":true}\n") && !hdr(r, "Content-Encoding"), "*;q=0: identity");
    get(r, "/data.json", "Accept-Encoding: br;q=0, gzip;q=0\r\n");
    ok(body_is(r, "{\"plain\":true}\n"), "both q=0: identity");
    get(r, "/data.json", NULL);
    ok(body_is(r, "{\"plain\":true}\n") && !hdr(r, "Content-Encoding"),
       "no Accept-Encoding: identity");
    is_str(hdr(r, "Vary"), "Accept-Encoding", "the identity answer varies too");
    char extra[256];
    snprintf(extra, sizeof extra, "Accept-Encoding: br\r\nIf-None-Match: %s\r\n", br_tag);
    get(r, "/data.json", extra);
    is_int(r->status, 304, "the br tag revalidates the br answer");
    is_str(hdr(r, "Vary"), "Accept-Encoding", "304: Vary");
    snprintf(extra, sizeof extra, "Accept-Encoding: gzip\r\nIf-None-Match: %s\r\n", br_tag);
    get(r, "/data.json", extra);
    is_int(r->status, 200, "but not the gzip answer");
    get(r, "/data.json", "Accept-Encoding: br\r\nRange: bytes=0-1\r\n");
    ok(r->status == 206 && body_is(r, "BR"), "a range of the chosen coding");
    get(r, "/style.css", "Accept-Encoding: br\r\n");
    ok(body_is(r, "body{}\n") && hdr(r, "Vary"), "only .gz, br asked: identity, with Vary");
    get(r, "/hello.txt", "Accept-Encoding: gzip, br\r\n");
    ok(!hdr(r, "Vary") && !hdr(r, "Content-Encoding"), "no sibling: no Vary");
}

static void test_directories_and_methods(struct resp *r)
{
    get(r, "/", NULL);
    ok(r->status == 200 && body_is(r, "<h1>home</h1>\n"), "/: the index file");
    is_str(hdr(r, "Content-Type"), "text/html; charset=utf-8", "as HTML");
    get(r, "/sub/", NULL);
    ok(r->status == 200 && body_is(r, "<h1>sub</h1>\n"), "/sub/: its index");
    get(r, "/sub", NULL);
    ok(r->status == 200 && body_is(r, "<h1>sub</h1>\n"), "/sub: its index");
    get(r, "/empty/", NULL);
    ok(r->status == 404 && body_is(r, "fallback\n"), "a folder without an index: not ours (404)");
    get(r, "/nope.txt", NULL);
    ok(r->status == 404 && body_is(r, "fallback\n"), "no such file: not ours");
    get(r, "/fifo", NULL);
    ok(r->status == 404 && body_is(r, "fallback\n"), "a FIFO is not served (and does not block)");
    get(r, "/hello.txt/x", NULL);
    ok(r->status == 404 && body_is(r, "fallback\n"), "a file used as a folder: not found");
    get(r, "/hello.txt?v=3", NULL);
    ok(r->status == 200 && body_is(r, "hello, world\n"), "the query is not part of the name");
    get(r, "/%68ello.txt", NULL);
    ok(r->status == 200 && body_is(r, "hello, world\n"), "percent-decoded: %%68 is h");
    get(r, "/%2568ello.txt", NULL);
    ok(r->status == 404 && body_is(r, "fallback\n"), "decoded once only: %%2568 is %%68");
    get(r, "//sub//index.html", NULL);
    ok(r->status == 200 && body_is(r, "<h1>sub</h1>\n"), "empty segments are skipped");

    request(r, "POST", "/hello.txt", "Content-Length: 0\r\n");
    is_int(r->status, 405, "POST: 405");
    is_str(hdr(r, "Allow"), "GET, HEAD", "Allow: GET, HEAD");
    request(r, "DELETE", "/nope", NULL);
    is_int(r->status, 405, "DELETE: 405");
}

static void test_escapes(struct resp *r, const char *how)
{
    struct web_static_stats before, after;
    web_static_stats(cur, &before);
    static const char *const bad[] = {
        "/../etc/passwd",   "/%2e%2e/etc/passwd", "/a/..%2f..%2fetc/passwd",
        "/%2E%2E/%2E%2E/etc/passwd", "/sub/../hello.txt", "/./hello.txt", "/%2fetc/passwd",
        "/hello%2etxt",     "/hello%00.txt",      "/hello%5c.txt", "/sub\\..\\hello.txt",
        "/link-etc/passwd", "/link-out",           "/link-up",      "/.env",
        "/%zz",             "/abc%4",              "/sub/..",       "/hello%0a.txt",
    };
    int n = (int)(sizeof bad / sizeof bad[0]);
    for (int i = 0; i < n; i++) {
        get(r, bad[i], NULL);
        ok(r->status == 404 && body_is(r, "not found\n") && !memmem(r->body, r->body_len, "root", 4),
           "%s: %s refused (404)", how, bad[i]);
    }
    web_static_stats(cur, &after);
    is_int(after.refused - before.refused, n, "%s: each counted as refused", how);
    get(r, "/link-in", NULL);
    ok(r->status == 200 && body_is(r, "hello, world\n"), "%s: a symlink to a file inside is fine",
       how);
    get(r, "/sub/link-up-in", NULL);
    ok(r->status == 200 && body_is(r, "hello, world\n"),
       "%s: a symlink up to a file still inside is fine", how);
    get(r, "/.well-known/acme.txt", NULL);
    ok(r->status == 200 && body_is(r, "token\n"), "%s: .well-known is served", how);
}

static void test_big(struct resp *r)
{
    get(r, "/big.bin", NULL);
    int exact = r->status == 200 && r->body_len == BIG;
    for (size_t i = 0; exact && i < BIG; i++)
        exact = (unsigned char)r->body[i] == pattern(i);
    ok(exact, "4 MiB streamed byte-exact (got %zu bytes)", r->body_len);
    is_str(hdr(r, "Content-Type"), "application/octet-stream", "an unknown type: octet-stream");
}

static void test_prefix(struct resp *r)
{
    struct web_static *keep = cur;
    cur = folder("/static", 0);
    get(r, "/hello.txt", NULL);
    ok(r->status == 404 && body_is(r, "fallback\n"), "prefix /static: /hello.txt is not ours");
    request(r, "POST", "/hello.txt", "Content-Length: 0\r\n");
    ok(r->status == 404 && body_is(r, "fallback\n"), "nor is a POST outside the prefix");
    get(r, "/static/hello.txt", NULL);
    ok(r->status == 200 && body_is(r, "hello, world\n"), "/static/hello.txt is");
    get(r, "/static", NULL);
    ok(r->status == 200 && body_is(r, "<h1>home</h1>\n"), "/static: the index");
    get(r, "/staticx/hello.txt", NULL);
    ok(r->status == 404 && body_is(r, "fallback\n"), "/staticx is another name");
    get(r, "/static/../hello.txt", NULL);
    ok(r->status == 404 && body_is(r, "not found\n"), "/static/../ refused");
    web_static_free(cur);
    cur = keep;
}

static void test_stats_and_config(struct resp *r)
{
    struct web_static *keep = cur;
    cur = folder(NULL, 0);
    get(r, "/hello.txt", NULL);
    get(r, "/hello.txt", "Range: bytes=0-1\r\n");
    get(r, "/hello.txt", "If-None-Match: *\r\n");
    get(r, "/../x", NULL);
    struct web_static_stats s;
    web_static_stats(cur, &s);
    ok(s.served == 2 && s.partial == 1 && s.not_modified == 1 && s.refused == 1,
       "stats: served %lu, partial %lu, not_modified %lu, refused %lu", s.served, s.partial,
       s.not_modified, s.refused);
    web_static_free(cur);
    cur = keep;

    struct web_static_cfg cfg;
    web_static_cfg_defaults(&cfg);
    char err[256];
    cfg.root = "/nonexistent/folder";
    ok(!web_static_new(&cfg, err, sizeof err) && strstr(err, "/nonexistent/folder"),
       "a missing folder: %s", err);
    char file[300];
    snprintf(file, sizeof file, "%s/hello.txt", root);
    cfg.root = file;
    ok(!web_static_new(&cfg, err, sizeof err), "a file is not a folder: %s", err);
    cfg.root = root;
    cfg.prefix = "static";
    ok(!web_static_new(&cfg, err, sizeof err), "a prefix without '/': %s", err);
    cfg.prefix = "/";
    cfg.index = "../x";
    ok(!web_static_new(&cfg, err, sizeof err), "an index that is a path: %s", err);
    cfg.index = NULL;
    struct web_static *noidx = web_static_new(&cfg, err, sizeof err);
    keep = cur;
    cur = noidx;
    get(r, "/", NULL);
    ok(r->status == 404 && body_is(r, "fallback\n"), "no index configured: a folder is not ours");
    web_static_free(noidx);
    cur = keep;
}

static void test_mime(void)
{
    is_str(web_mime_type("a/b.JS", 6), "text/javascript; charset=utf-8", "mime: .JS");
    is_str(web_mime_type("x.tar.gz", 8), "application/gzip", "mime: the last extension");
    is_str(web_mime_type("font.woff2", 10), "font/woff2", "mime: woff2");
    is_str(web_mime_type("img.svg", 7), "image/svg+xml", "mime: svg");
    is_str(web_mime_type("README", 6), "application/octet-stream", "mime: none");
    is_str(web_mime_type("dir.d/README", 12), "application/octet-stream", "mime: a dot in a folder");
    is_str(web_mime_type(".bashrc", 7), "application/octet-stream", "mime: a dotfile");
    is_str(web_mime_type("a.webmanifest", 13), "application/manifest+json", "mime: webmanifest");
    is_str(web_mime_type("a.7z", 4), "application/x-7z-compressed", "mime: the first entry");
    is_str(web_mime_type("a.zip", 5), "application/zip", "mime: the last entry");
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    make_folder();
    loop = ev_loop_new(EVFLAG_AUTO);
    ev_timer t;
    ev_timer_init(&t, tick, 0.002, 0.002);
    ev_timer_start(loop, &t);
    struct http_server_cfg hcfg;
    http_server_cfg_defaults(&hcfg);
    char err[256];
    srv = http_server_start(loop, "127.0.0.1:0", &hcfg, &ops, NULL, err, sizeof err);
    ok(srv != NULL, "server started");
    cur = folder(NULL, 0);
    ok(cur != NULL, "the folder opened");
    printf("# openat2 with RESOLVE_BENEATH: %s\n", web_static_beneath(cur) ? "yes" : "no");

    struct resp r;
    buf_init(&r.raw);
    test_get_and_head(&r);
    test_conditional(&r);
    test_ranges(&r);
    test_precompressed(&r);
    test_directories_and_methods(&r);
    test_escapes(&r, web_static_beneath(cur) ? "openat2" : "realpath");
    test_big(&r);
    test_prefix(&r);
    test_stats_and_config(&r);
    test_mime();

    /* The same escapes with the fallback check. */
    web_static_free(cur);
    cur = folder(NULL, 1);
    ok(cur && !web_static_beneath(cur), "the fallback check forced");
    test_escapes(&r, "fallback");
    test_big(&r);

    web_static_free(cur);
    buf_free(&r.raw);
    http_server_free(srv);
    ev_timer_stop(loop, &t);
    ev_run(loop, EVRUN_NOWAIT);
    ev_loop_destroy(loop);
    remove_folder();
    return tap_done();
}

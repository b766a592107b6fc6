#include "access_log.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

/* Pending bytes beyond which a line is written at once rather than at the
 * end of the loop iteration. */
#define ACCESS_LOG_FLUSH_AT (64 * 1024)
/* Fields longer than this are cut: one line stays one line of sane size. */
#define ACCESS_LOG_MAX_FIELD 2048

struct access_log {
    struct ev_loop *loop;
    struct access_log_cfg cfg;
    int fd;
    int is_stderr;
    struct buf out;
    ev_prepare flush;
    ev_signal usr1;
    time_t stamp_sec; /* the second the cached stamps are for */
    char stamp_clf[40];  /* 01/Dec/2026:10:53:42 +0000 */
    char stamp_iso[32];  /* 2026-12-01T10:53:42 */
    unsigned long write_errors;
};

int access_log_read_cfg(lua_State *L, int idx, struct access_log_cfg *cfg, char *err,
                        size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    idx = lua_absindex(L, idx);
    lua_getfield(L, idx, "access_log");
    int rc = 0;
    if (lua_isnil(L, -1))
        goto out;
    if (!lua_istable(L, -1)) {
        snprintf(err, errlen, "access_log must be a table { path = ..., format = ... }");
        rc = -1;
        goto out;
    }
    lua_getfield(L, -1, "path");
    const char *path = lua_tostring(L, -1);
    if (!path || !*path || strlen(path) >= sizeof cfg->path) {
        snprintf(err, errlen, "access_log.path must be a file path or \"stderr\"");
        rc = -1;
    } else {
        snprintf(cfg->path, sizeof cfg->path, "%s", path);
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "format");
    const char *fmt = lua_isnil(L, -1) ? "combined" : lua_tostring(L, -1);
    if (rc == 0) {
        if (fmt && strcmp(fmt, "combined") == 0)
            cfg->format = ACCESS_LOG_COMBINED;
        else if (fmt && strcmp(fmt, "json") == 0)
            cfg->format = ACCESS_LOG_JSON;
        else {
            snprintf(err, errlen, "access_log.format must be \"combined\" or \"json\"");
            rc = -1;
        }
    }
    lua_pop(L, 1);
out:
    lua_pop(L, 1);
    return rc;
}

int access_log_cfg_same(const struct access_log_cfg *a, const struct access_log_cfg *b)
{
    return a->format == b->format && strcmp(a->path, b->path) == 0;
}

static int open_file(struct access_log *al, char *err, size_t errlen)
{
    if (al->is_stderr) {
        al->fd = 2;
        return 0;
    }
    int fd = open(al->cfg.path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "access_log: cannot open %s: %s", al->cfg.path, strerror(errno));
        return -1;
    }
    al->fd = fd;
    return 0;
}

static void write_out(struct access_log *al)
{
    while (buf_size(&al->out) > 0) {
        ssize_t n = write(al->fd, buf_head(&al->out), buf_size(&al->out));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            /* a full disk must not stop the proxy: the lines are dropped */
            if (al->write_errors++ == 0)
                log_warn("access_log %s: write failed: %s (lines dropped)", al->cfg.path,
                         n < 0 ? strerror(errno) : "short write");
            break;
        }
        buf_consume(&al->out, (size_t)n);
    }
    buf_reset(&al->out);
    buf_shrink(&al->out, ACCESS_LOG_FLUSH_AT * 2);
}

static void on_flush(struct ev_loop *loop, ev_prepare *w, int revents)
{
    (void)loop;
    (void)revents;
    struct access_log *al = w->data;
    if (buf_size(&al->out) > 0)
        write_out(al);
}

/* SIGUSR1: the file was rotated away; write what is pending to the old one
 * and open the path again. */
static void on_usr1(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct access_log *al = w->data;
    write_out(al);
    if (al->is_stderr)
        return;
    int old = al->fd;
    char err[512];
    if (open_file(al, err, sizeof err) < 0) {
        log_error("%s (keeping the old file)", err);
        return;
    }
    close(old);
    al->write_errors = 0;
    log_info("access_log %s reopened", al->cfg.path);
}

struct access_log *access_log_open(struct ev_loop *loop, const struct access_log_cfg *cfg,
                                   int *failed, char *err, size_t errlen)
{
    *failed = 0;
    if (cfg->format == ACCESS_LOG_OFF)
        return NULL;
    struct access_log *al = calloc(1, sizeof *al);
    if (!al) {
        snprintf(err, errlen, "out of memory");
        *failed = 1;
        return NULL;
    }
    al->loop = loop;
    al->cfg = *cfg;
    al->is_stderr = strcmp(cfg->path, "stderr") == 0;
    al->stamp_sec = -1;
    buf_init(&al->out);
    if (open_file(al, err, errlen) < 0) {
        free(al);
        *failed = 1;
        return NULL;
    }
    ev_prepare_init(&al->flush, on_flush);
    al->flush.data = al;
    ev_prepare_start(loop, &al->flush);
    ev_unref(loop); /* the log never keeps a loop alive on its own */
    ev_signal_init(&al->usr1, on_usr1, SIGUSR1);
    al->usr1.data = al;
    ev_signal_start(loop, &al->usr1);
    ev_unref(loop);
    return al;
}

void access_log_free(struct access_log *al)
{
    if (!al)
        return;
    write_out(al);
    ev_ref(al->loop);
    ev_prepare_stop(al->loop, &al->flush);
    ev_ref(al->loop);
    ev_signal_stop(al->loop, &al->usr1);
    if (!al->is_stderr)
        close(al->fd);
    buf_free(&al->out);
    free(al);
}

/* ---- one request ------------------------------------------------------------ */

static uint32_t keep(struct buf *b, const char *p, size_t n)
{
    if (n > ACCESS_LOG_MAX_FIELD)
        n = ACCESS_LOG_MAX_FIELD;
    buf_append(b, p, n);
    return (uint32_t)n;
}

void access_rec_begin(struct access_rec *r, const struct http_msg *m, double now)
{
    buf_reset(&r->raw);
    r->method_len = r->target_len = r->referer_len = r->ua_len = 0;
    r->minor = 1;
    r->status = 0;
    r->bytes = 0;
    r->t_start = now;
    r->t_head = 0;
    if (!m)
        return;
    r->minor = m->minor;
    r->method_len = keep(&r->raw, m->method_s, m->method_len);
    r->target_len = keep(&r->raw, m->target, m->target_len);
    const struct http_hdr *ref = http_msg_find(m, "referer");
    const struct http_hdr *ua = http_msg_find(m, "user-agent");
    if (ref)
        r->referer_len = keep(&r->raw, ref->value, ref->value_len);
    if (ua)
        r->ua_len = keep(&r->raw, ua->value, ua->value_len);
}

void access_rec_free(struct access_rec *r) { buf_free(&r->raw); }

static int plain(unsigned char c) { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\'; }

/* Appends s[0..n) for a quoted combined-format field: `"` and `\` and
 * bytes that are not printable ASCII as \xHH, so a line is always one line
 * and a field never ends early. Runs of plain bytes go in one copy. */
static void put_escaped(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    if (n == 0) {
        buf_append(b, "-", 1);
        return;
    }
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && plain((unsigned char)s[j]))
            j++;
        if (j > i)
            buf_append(b, s + i, j - i);
        if (j < n) {
            unsigned char c = (unsigned char)s[j];
            char e[4] = {'\\', 'x', hex[c >> 4], hex[c & 15]};
            buf_append(b, e, 4);
            j++;
        }
        i = j;
    }
}

/* A JSON string of s[0..n) (bytes beyond ASCII as \u00XX: the line stays
 * valid JSON whatever a client sent). */
static void put_json(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    buf_append(b, "\"", 1);
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && plain((unsigned char)s[j]))
            j++;
        if (j > i)
            buf_append(b, s + i, j - i);
        if (j < n) {
            unsigned char c = (unsigned char)s[j];
            if (c == '"' || c == '\\') {
                char e[2] = {'\\', (char)c};
                buf_append(b, e, 2);
            } else {
                char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                buf_append(b, e, 6);
            }
            j++;
        }
        i = j;
    }
    buf_append(b, "\"", 1);
}

/* Milliseconds with three decimals, without going through printf's
 * floating point. */
static void put_ms(struct buf *b, double ms)
{
    if (ms < 0)
        ms = 0;
    unsigned long long us = (unsigned long long)(ms * 1000.0 + 0.5);
    char t[32];
    int n = snprintf(t, sizeof t, "%llu.%03llu", us / 1000, us % 1000);
    buf_append(b, t, (size_t)n);
}

static void put_uint(struct buf *b, unsigned long long v)
{
    char t[24];
    int i = (int)sizeof t;
    do {
        t[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    buf_append(b, t + i, sizeof t - (size_t)i);
}

static void stamps(struct access_log *al, double now)
{
    time_t sec = (time_t)now;
    if (sec == al->stamp_sec)
        return;
    struct tm tm;
    gmtime_r(&sec, &tm);
    strftime(al->stamp_clf, sizeof al->stamp_clf, "%d/%b/%Y:%H:%M:%S +0000", &tm);
    strftime(al->stamp_iso, sizeof al->stamp_iso, "%Y-%m-%dT%H:%M:%S", &tm);
    al->stamp_sec = sec;
}

void access_log_request(struct access_log *al, const struct access_rec *r, const char *client,
                        const char *backend, int status, double now)
{
    if (!al)
        return;
    stamps(al, now);
    if (!status)
        status = r->status;
    const char *p = buf_size(&r->raw) ? buf_head(&r->raw) : "";
    const char *method = p, *target = p + r->method_len;
    const char *referer = target + r->target_len, *ua = referer + r->referer_len;
    double req_ms = (now - r->t_start) * 1000.0;
    double be_ms = r->t_head > 0 ? (r->t_head - r->t_start) * 1000.0 : -1;
    struct buf *b = &al->out;
    if (al->cfg.format == ACCESS_LOG_JSON) {
        int ms = (int)((now - (double)(time_t)now) * 1000.0);
        char frac[8];
        snprintf(frac, sizeof frac, ".%03dZ", ms < 0 ? 0 : ms > 999 ? 999 : ms);
        buf_append_str(b, "{\"time\":\"");
        buf_append_str(b, al->stamp_iso);
        buf_append_str(b, frac);
        buf_append_str(b, "\",\"client\":");
        put_json(b, client, strlen(client));
        buf_append_str(b, ",\"method\":");
        put_json(b, method, r->method_len);
        buf_append_str(b, ",\"path\":");
        put_json(b, target, r->target_len);
        buf_append_str(b, r->minor ? ",\"protocol\":\"HTTP/1.1\",\"status\":"
                                   : ",\"protocol\":\"HTTP/1.0\",\"status\":");
        put_uint(b, (unsigned)status);
        buf_append_str(b, ",\"bytes\":");
        put_uint(b, r->bytes);
        buf_append_str(b, ",\"backend\":");
        if (backend)
            put_json(b, backend, strlen(backend));
        else
            buf_append_str(b, "null");
        buf_append_str(b, ",\"request_ms\":");
        put_ms(b, req_ms);
        buf_append_str(b, ",\"backend_ms\":");
        if (be_ms >= 0)
            put_ms(b, be_ms);
        else
            buf_append_str(b, "null");
        buf_append_str(b, ",\"referer\":");
        put_json(b, referer, r->referer_len);
        buf_append_str(b, ",\"user_agent\":");
        put_json(b, ua, r->ua_len);
        buf_append_str(b, "}\n");
    } else {
        /* client - - [time] "request" status bytes "referer" "user agent"
         * backend=NAME request_ms=N backend_ms=N */
        buf_append_str(b, client);
        buf_append_str(b, " - - [");
        buf_append_str(b, al->stamp_clf);
        buf_append_str(b, "] \"");
        if (r->method_len) {
            put_escaped(b, method, r->method_len);
            buf_append(b, " ", 1);
            put_escaped(b, target, r->target_len);
            buf_append_str(b, r->minor ? " HTTP/1.1" : " HTTP/1.0");
        } else {
            buf_append(b, "-", 1);
        }
        buf_append_str(b, "\" ");
        put_uint(b, (unsigned)status);
        buf_append(b, " ", 1);
        put_uint(b, r->bytes);
        buf_append_str(b, " \"");
        put_escaped(b, referer, r->referer_len);
        buf_append_str(b, "\" \"");
        put_escaped(b, ua, r->ua_len);
        buf_append_str(b, "\" backend=");
        buf_append_str(b, backend ? backend : "-");
        buf_append_str(b, " request_ms=");
        put_ms(b, req_ms);
        buf_append_str(b, " backend_ms=");
        if (be_ms >= 0)
            put_ms(b, be_ms);
        else
            buf_append(b, "-", 1);
        buf_append(b, "\n", 1);
    }
    if (buf_size(b) >= ACCESS_LOG_FLUSH_AT)
        write_out(al);
}

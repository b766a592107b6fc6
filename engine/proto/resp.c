#include "resp.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void resp_parser_init(struct resp_parser *p) { memset(p, 0, sizeof *p); }

void resp_parser_free(struct resp_parser *p)
{
    free(p->argv);
    free(p->argl);
    memset(p, 0, sizeof *p);
}

void resp_parser_reset(struct resp_parser *p)
{
    p->in_multibulk = 0;
    p->nargs = 0;
    p->pos = 0;
    p->argc = 0;
    p->want = 0;
    if (p->cap > 1024) {
        free(p->argv);
        free(p->argl);
        p->argv = NULL;
        p->argl = NULL;
        p->cap = 0;
    }
}

static int grow_args(struct resp_parser *p, size_t need)
{
    if (need <= p->cap)
        return 0;
    size_t cap = p->cap ? p->cap : 16;
    while (cap < need)
        cap *= 2;
    const char **v = realloc(p->argv, cap * sizeof *v);
    if (!v)
        return -1;
    p->argv = v;
    size_t *l = realloc(p->argl, cap * sizeof *l);
    if (!l)
        return -1;
    p->argl = l;
    p->cap = cap;
    return 0;
}

static ssize_t fail(struct resp_parser *p, const char *msg)
{
    snprintf(p->err, sizeof p->err, "ERR Protocol error: %s", msg);
    p->in_multibulk = 0;
    p->pos = 0;
    p->argc = 0;
    p->want = 0;
    return -1;
}

/* Splits an inline line in place; quoted arguments are unescaped into the
 * space they occupied (the output is never longer than the input). */
static ssize_t parse_inline(struct resp_parser *p, char *buf, size_t len,
                            const struct resp_limits *lim)
{
    char *nl = memchr(buf, '\n', len);
    if (!nl) {
        if (len > lim->max_inline)
            return fail(p, "too big inline request");
        return -2;
    }
    size_t used = (size_t)(nl - buf) + 1;
    char *end = nl;
    if (end > buf && end[-1] == '\r')
        end--;
    char *r = buf, *w;
    p->argc = 0;
    for (;;) {
        while (r < end && (*r == ' ' || *r == '\t' || *r == '\r' || *r == '\v' || *r == '\f'))
            r++;
        if (r >= end)
            break;
        if (grow_args(p, p->argc + 1) < 0)
            return fail(p, "out of memory");
        char *start = w = r;
        if (*r == '"' || *r == '\'') {
            char q = *r++;
            int closed = 0;
            while (r < end) {
                if (q == '"' && *r == '\\' && r + 1 < end) {
                    char c = r[1];
                    if (c == 'x' && r + 3 < end && strchr("0123456789abcdefABCDEF", r[2]) && r[2] &&
                        strchr("0123456789abcdefABCDEF", r[3]) && r[3]) {
                        char hex[3] = {r[2], r[3], 0};
                        *w++ = (char)strtol(hex, NULL, 16);
                        r += 4;
                        continue;
                    }
                    *w++ = c == 'n' ? '\n' : c == 'r' ? '\r' : c == 't' ? '\t' : c == 'b' ? '\b'
                         : c == 'a' ? '\a' : c;
                    r += 2;
                } else if (q == '\'' && *r == '\\' && r + 1 < end && r[1] == '\'') {
                    *w++ = '\'';
                    r += 2;
                } else if (*r == q) {
                    r++;
                    closed = 1;
                    break;
                } else {
                    *w++ = *r++;
                }
            }
            /* A closing quote must end the argument. */
            if (!closed || (r < end && *r != ' ' && *r != '\t'))
                return fail(p, "unbalanced quotes in request");
        } else {
            while (r < end && *r != ' ' && *r != '\t')
                r++;
            w = r;
        }
        p->argv[p->argc] = start;
        p->argl[p->argc] = (size_t)(w - start);
        p->argc++;
    }
    return (ssize_t)used;
}

/* Reads "<prefix><integer>\r\n" at buf[pos]. Returns 1 with the value and
 * the position after the line, 0 when the line is incomplete, -1 when it
 * is not a number. */
static int read_len_line(const char *buf, size_t len, size_t pos, long long *out, size_t *next,
                         int *too_long, size_t max_line)
{
    const char *cr = memchr(buf + pos, '\r', len - pos);
    *too_long = 0;
    if (!cr) {
        if (len - pos > max_line)
            *too_long = 1;
        return 0;
    }
    size_t at = (size_t)(cr - buf);
    if (at + 1 >= len)
        return 0;
    if (buf[at + 1] != '\n')
        return -1;
    int64_t v;
    if (util_parse_i64(buf + pos + 1, at - pos - 1, &v) < 0)
        return -1;
    *out = v;
    *next = at + 2;
    return 1;
}

ssize_t resp_parse(struct resp_parser *p, char *buf, size_t len, const struct resp_limits *lim)
{
    p->want = 0;
    if (!p->in_multibulk) {
        p->argc = 0;
        if (len == 0)
            return -2;
        if (buf[0] != '*')
            return parse_inline(p, buf, len, lim);
        long long n;
        size_t next;
        int too_long;
        int rc = read_len_line(buf, len, 0, &n, &next, &too_long, lim->max_inline);
        if (rc == 0)
            return too_long ? fail(p, "too big mbulk count string") : -2;
        if (rc < 0 || n > (long long)lim->max_args)
            return fail(p, "invalid multibulk length");
        if (n <= 0)
            return (ssize_t)next; /* "*0" and "*-1": an empty command */
        p->in_multibulk = 1;
        p->nargs = n;
        p->pos = next;
        p->argc = 0;
    }
    while ((long long)p->argc < p->nargs) {
        size_t pos = p->pos;
        if (pos >= len)
            return -2;
        if (buf[pos] != '$') {
            char msg[64];
            snprintf(msg, sizeof msg, "expected '$', got '%c'", buf[pos]);
            return fail(p, msg);
        }
        long long blen;
        size_t next;
        int too_long;
        int rc = read_len_line(buf, len, pos, &blen, &next, &too_long, lim->max_inline);
        if (rc == 0)
            return too_long ? fail(p, "too big bulk count string") : -2;
        if (rc < 0 || blen < 0 || (unsigned long long)blen > lim->max_bulk)
            return fail(p, "invalid bulk length");
        if (len - next < (size_t)blen + 2) {
            /* Wait for the bytes. Nothing is reserved here; the caller may
             * use `want` to read them into one right-sized block. */
            p->want = next + (size_t)blen + 2;
            p->want_at = next;
            return -2;
        }
        if (buf[next + blen] != '\r' || buf[next + blen + 1] != '\n')
            return fail(p, "expected CRLF after bulk data");
        if (grow_args(p, p->argc + 1) < 0)
            return fail(p, "out of memory");
        /* Store the offset for now: the buffer may move before completion. */
        p->argv[p->argc] = (const char *)(uintptr_t)next;
        p->argl[p->argc] = (size_t)blen;
        p->argc++;
        p->pos = next + (size_t)blen + 2;
    }
    for (size_t i = 0; i < p->argc; i++)
        p->argv[i] = buf + (uintptr_t)p->argv[i];
    size_t used = p->pos;
    p->in_multibulk = 0;
    p->pos = 0;
    p->nargs = 0;
    return (ssize_t)used;
}

/* ---- replies ------------------------------------------------------------- */

size_t resp_fmt_i64(char *out, long long v)
{
    char tmp[24];
    size_t n = 0;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t k = 0;
    if (v < 0)
        out[k++] = '-';
    while (n)
        out[k++] = tmp[--n];
    out[k] = 0;
    return k;
}

static void prefixed_len(struct buf *b, char c, long long n)
{
    char tmp[32];
    tmp[0] = c;
    size_t k = 1 + resp_fmt_i64(tmp + 1, n);
    tmp[k++] = '\r';
    tmp[k++] = '\n';
    buf_append(b, tmp, k);
}

void resp_ok(struct buf *b) { buf_append(b, "+OK\r\n", 5); }

void resp_simple(struct buf *b, const char *s)
{
    buf_append(b, "+", 1);
    buf_append_str(b, s);
    buf_append(b, "\r\n", 2);
}

void resp_error(struct buf *b, const char *s)
{
    buf_append(b, "-", 1);
    buf_append_str(b, s);
    buf_append(b, "\r\n", 2);
}

void resp_errorf(struct buf *b, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* An error reply is one line: never let newlines through. */
    for (char *q = msg; *q; q++)
        if (*q == '\r' || *q == '\n')
            *q = ' ';
    resp_error(b, msg);
}

void resp_int(struct buf *b, long long v) { prefixed_len(b, ':', v); }

void resp_bulk(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n + 32) < 0)
        return;
    char *t = buf_tail(b);
    t[0] = '$';
    size_t k = 1 + resp_fmt_i64(t + 1, (long long)n);
    t[k++] = '\r';
    t[k++] = '\n';
    if (n)
        memcpy(t + k, p, n);
    k += n;
    t[k++] = '\r';
    t[k++] = '\n';
    buf_commit(b, k);
}

void resp_bulk_str(struct buf *b, const char *s) { resp_bulk(b, s, strlen(s)); }
void resp_null(struct buf *b) { buf_append(b, "$-1\r\n", 5); }
void resp_null_array(struct buf *b) { buf_append(b, "*-1\r\n", 5); }
void resp_array(struct buf *b, size_t n) { prefixed_len(b, '*', (long long)n); }

/* The RESP2 parser (multibulk, inline, partial input, limits, errors) and
 * the reply writers. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "resp.h"
#include "tap.h"

static const struct resp_limits lim = RESP_DEFAULT_LIMITS;

/* Parses a NUL-terminated string (copied: inline parsing writes in place). */
static ssize_t parse(struct resp_parser *p, const char *in, char *copy)
{
    size_t n = strlen(in);
    memcpy(copy, in, n + 1);
    return resp_parse(p, copy, n, &lim);
}

static int arg_is(struct resp_parser *p, size_t i, const char *s)
{
    return i < p->argc && p->argl[i] == strlen(s) && memcmp(p->argv[i], s, p->argl[i]) == 0;
}

static void test_multibulk(void)
{
    struct resp_parser p;
    char buf[256];
    resp_parser_init(&p);
    const char *cmd = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva\0ue\r\n";
    size_t n = 4 + 9 + 7 + 11;
    memcpy(buf, cmd, n);
    ssize_t rc = resp_parse(&p, buf, n, &lim);
    is_int(rc, (long long)n, "a whole multibulk command is consumed");
    is_int(p.argc, 3, "three arguments");
    ok(arg_is(&p, 0, "SET") && arg_is(&p, 1, "k"), "arguments point at the right bytes");
    ok(p.argl[2] == 5 && memcmp(p.argv[2], "va\0ue", 5) == 0, "binary-safe argument");
    /* Byte by byte: -2 until the last byte, then the same result. */
    int partial_ok = 1;
    for (size_t i = 1; i < n; i++) {
        memcpy(buf, cmd, n);
        if (resp_parse(&p, buf, i, &lim) != -2)
            partial_ok = 0;
    }
    memcpy(buf, cmd, n);
    rc = resp_parse(&p, buf, n, &lim);
    ok(partial_ok && rc == (ssize_t)n && arg_is(&p, 2 - 2, "SET"), "partial input resumes");
    /* Two pipelined commands. */
    rc = parse(&p, "*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\nx\r\n", buf);
    ok(rc == 14 && arg_is(&p, 0, "PING"), "first of a pipeline");
    rc = resp_parse(&p, buf + 14, strlen(buf + 14), &lim);
    ok(rc == 20 && arg_is(&p, 0, "GET") && arg_is(&p, 1, "x"), "second of a pipeline");
    rc = parse(&p, "*0\r\n", buf);
    ok(rc == 4 && p.argc == 0, "*0 is an empty command");
    rc = parse(&p, "*-1\r\n", buf);
    ok(rc == 5 && p.argc == 0, "*-1 is an empty command");
    rc = parse(&p, "*1\r\n$0\r\n\r\n", buf);
    ok(rc == 10 && p.argc == 1 && p.argl[0] == 0, "empty argument");
    /* A partial bulk with its header in says how many bytes complete it. */
    rc = parse(&p, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$300000\r\nabc", buf);
    ok(rc == -2 && p.want == 4 + 9 + 7 + 9 + 300000 + 2, "want: bytes that complete the bulk (%zu)",
       p.want);
    ok(p.want_at == 4 + 9 + 7 + 9, "want_at: where that bulk's data starts (%zu)", p.want_at);
    rc = parse(&p, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$30", buf);
    ok(rc == -2 && p.want == 0, "want: 0 while the length header is incomplete");
    resp_parser_reset(&p);
    ok(p.want == 0, "want: cleared by a reset");
    resp_parser_free(&p);
}

static void expect_error(const char *in, const char *msg, const char *name)
{
    struct resp_parser p;
    char buf[256];
    resp_parser_init(&p);
    ssize_t rc = parse(&p, in, buf);
    ok(rc == -1 && strcmp(p.err, msg) == 0, "%s -> %s (got %zd '%s')", name, msg, rc, p.err);
    resp_parser_free(&p);
}

static void test_errors(void)
{
    expect_error("*abc\r\n", "ERR Protocol error: invalid multibulk length", "*abc");
    expect_error("*2000000\r\n", "ERR Protocol error: invalid multibulk length", "too many args");
    expect_error("*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length", "negative bulk");
    expect_error("*1\r\n$abc\r\n", "ERR Protocol error: invalid bulk length", "bulk not a number");
    expect_error("*1\r\n$600000000\r\n", "ERR Protocol error: invalid bulk length", "bulk > 512MB");
    expect_error("*1\r\n$99999999999999999999999\r\n", "ERR Protocol error: invalid bulk length",
                 "bulk overflows");
    expect_error("*1\r\nx\r\n", "ERR Protocol error: expected '$', got 'x'", "no $");
    expect_error("*1\r\n$3\r\nabcde\r\n", "ERR Protocol error: expected CRLF after bulk data",
                 "bulk longer than declared");
    expect_error("SET \"abc\r\n", "ERR Protocol error: unbalanced quotes in request",
                 "unclosed quote");
    expect_error("SET \"a\"b\r\n", "ERR Protocol error: unbalanced quotes in request",
                 "text after a closing quote");

    struct resp_parser p;
    resp_parser_init(&p);
    size_t big = 70 * 1024;
    char *b = malloc(big + 16);
    memset(b, 'a', big);
    ok(resp_parse(&p, b, big, &lim) == -1 && strstr(p.err, "too big inline request"),
       "an inline line over 64KB is refused");
    b[0] = '*';
    ok(resp_parse(&p, b, big, &lim) == -1 && strstr(p.err, "too big mbulk count string"),
       "a count line over 64KB is refused");
    memcpy(b, "*1\r\n$", 5);
    ok(resp_parse(&p, b, big, &lim) == -1 && strstr(p.err, "too big bulk count string"),
       "a length line over 64KB is refused");
    free(b);
    /* A huge declared length with little data: wait, and allocate nothing. */
    char buf[64];
    ssize_t rc = parse(&p, "*2\r\n$3\r\nSET\r\n$500000000\r\nabc", buf);
    ok(rc == -2, "a declared 500MB bulk with 3 bytes waits for more");
    ok(p.cap <= 16, "nothing sized by the declared length (cap %zu)", p.cap);
    resp_parser_reset(&p);
    struct resp_limits small = {16, 4, 64};
    strcpy(buf, "*5\r\n");
    ok(resp_parse(&p, buf, 4, &small) == -1, "argument count over a custom limit");
    strcpy(buf, "*1\r\n$17\r\n");
    ok(resp_parse(&p, buf, strlen(buf), &small) == -1, "bulk over a custom limit");
    resp_parser_free(&p);
}

static void test_inline(void)
{
    struct resp_parser p;
    char buf[256];
    resp_parser_init(&p);
    ssize_t rc = parse(&p, "SET  key  value\r\n", buf);
    ok(rc == 17 && p.argc == 3 && arg_is(&p, 0, "SET") && arg_is(&p, 2, "value"),
       "inline words split on spaces");
    rc = parse(&p, "SET k \"a b\\n\\x41\" 'it'\r\n", buf);
    ok(rc > 0 && p.argc == 4 && arg_is(&p, 2, "a b\nA") && arg_is(&p, 3, "it"),
       "double quotes with escapes, single quotes");
    rc = parse(&p, "PING\n", buf);
    ok(rc == 5 && arg_is(&p, 0, "PING"), "a bare LF ends a line");
    rc = parse(&p, "\r\n", buf);
    ok(rc == 2 && p.argc == 0, "an empty line is an empty command");
    rc = parse(&p, "GET k", buf);
    ok(rc == -2, "an unterminated line waits");
    memcpy(buf, "\x00\x01\xff\r\n", 5);
    rc = resp_parse(&p, buf, 5, &lim);
    ok(rc == 5 && p.argc == 1 && p.argl[0] == 3, "control bytes are just a word");
    resp_parser_free(&p);
}

static void test_replies(void)
{
    struct buf b;
    buf_init(&b);
    resp_int(&b, LLONG_MIN);
    resp_bulk(&b, "ab\0", 3);
    resp_null(&b);
    resp_array(&b, 2);
    resp_ok(&b);
    resp_errorf(&b, "ERR bad %s\r\nthing", "x");
    const char want[] = ":-9223372036854775808\r\n$3\r\nab\0\r\n$-1\r\n*2\r\n+OK\r\n-ERR bad x  thing\r\n";
    ok(buf_size(&b) == sizeof want - 1 && memcmp(buf_head(&b), want, sizeof want - 1) == 0,
       "reply encodings (and no CRLF inside an error)");
    char tmp[32];
    resp_fmt_i64(tmp, 0);
    is_str(tmp, "0", "zero formats");
    resp_fmt_i64(tmp, -42);
    is_str(tmp, "-42", "negative formats");
    buf_free(&b);
}

int main(void)
{
    test_multibulk();
    test_errors();
    test_inline();
    test_replies();
    return tap_done();
}

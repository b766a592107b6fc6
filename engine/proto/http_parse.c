#include "http_parse.h"

#include <http_parser.h>
#include <string.h>
#include <strings.h>

#include "util.h"

/* Empty lines tolerated before a request line (RFC 9112 2.2: a server
 * SHOULD ignore at least one; some clients send a CRLF after a body). */
#define HTTP_MAX_LEADING_EMPTY 4

struct parse_ctx {
    struct http_msg *m;
    int overflow;
    int in_value; /* the last callback was a header value */
};

static int on_url(http_parser *hp, const char *at, size_t len)
{
    struct parse_ctx *x = hp->data;
    if (x->m->target && x->m->target + x->m->target_len == at)
        x->m->target_len += len; /* defensive: a span split in two */
    else {
        x->m->target = at;
        x->m->target_len = len;
    }
    return 0;
}

static int on_status(http_parser *hp, const char *at, size_t len)
{
    struct parse_ctx *x = hp->data;
    if (x->m->reason && x->m->reason + x->m->reason_len == at)
        x->m->reason_len += len;
    else {
        x->m->reason = at;
        x->m->reason_len = len;
    }
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    struct parse_ctx *x = hp->data;
    struct http_msg *m = x->m;
    if (!x->in_value && m->nhdrs > 0) {
        struct http_hdr *h = &m->hdrs[m->nhdrs - 1];
        if (h->name + h->name_len == at) {
            h->name_len += (uint32_t)len;
            return 0;
        }
    }
    if (m->nhdrs >= m->max_hdrs) {
        x->overflow = 1;
        return -1;
    }
    struct http_hdr *h = &m->hdrs[m->nhdrs++];
    h->name = at;
    h->name_len = (uint32_t)len;
    h->value = at + len; /* empty until a value arrives */
    h->value_len = 0;
    h->kind = HH_OTHER;
    x->in_value = 0;
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    struct parse_ctx *x = hp->data;
    struct http_hdr *h = &x->m->hdrs[x->m->nhdrs - 1];
    if (x->in_value && h->value + h->value_len == at)
        h->value_len += (uint32_t)len;
    else {
        h->value = at;
        h->value_len = (uint32_t)len;
    }
    x->in_value = 1;
    return 0;
}

static const http_parser_settings parse_settings = {
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
};

/* Length-bounded case-insensitive equality with a literal. */
static int name_is(const char *s, size_t n, const char *lit)
{
    size_t l = strlen(lit);
    return n == l && strncasecmp(s, lit, l) == 0;
}

static int classify(const char *n, size_t len)
{
    switch (len) {
    case 2:
        return name_is(n, len, "te") ? HH_TE : HH_OTHER;
    case 3:
        return name_is(n, len, "via") ? HH_VIA : HH_OTHER;
    case 4:
        return name_is(n, len, "host") ? HH_HOST : HH_OTHER;
    case 6:
        if (name_is(n, len, "expect"))
            return HH_EXPECT;
        return name_is(n, len, "cookie") ? HH_COOKIE : HH_OTHER;
    case 7:
        if (name_is(n, len, "upgrade"))
            return HH_UPGRADE;
        return name_is(n, len, "trailer") ? HH_TRAILER : HH_OTHER;
    case 10:
        if (name_is(n, len, "connection"))
            return HH_CONNECTION;
        return name_is(n, len, "keep-alive") ? HH_KEEP_ALIVE : HH_OTHER;
    case 14:
        return name_is(n, len, "content-length") ? HH_CONTENT_LENGTH : HH_OTHER;
    case 15:
        return name_is(n, len, "x-forwarded-for") ? HH_X_FORWARDED_FOR : HH_OTHER;
    case 16:
        return name_is(n, len, "proxy-connection") ? HH_PROXY_CONNECTION : HH_OTHER;
    case 17:
        if (name_is(n, len, "transfer-encoding"))
            return HH_TRANSFER_ENCODING;
        return name_is(n, len, "x-forwarded-proto") ? HH_X_FORWARDED_PROTO : HH_OTHER;
    default:
        return HH_OTHER;
    }
}

static int is_ows(char c) { return c == ' ' || c == '\t'; }

/* RFC 9110 5.6.2: tchar, the bytes of a token (a method, a field name).
 * Anything else in a field name (a space before the colon, a space inside
 * the name, a control byte) is refused: a peer that trims or splits such a
 * name differently would read another header than the one checked here. */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1,
    ['+'] = 1, ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1,
    ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1,
    ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1,
    ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1,
    ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1,
    ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1,
    ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1,
    ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1,
    ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* A request target byte: visible ASCII or obs-text (RFC 9112 3.2); no
 * control byte, no space, no TAB, no DEL. */
static int is_target_byte(unsigned char c) { return c > 0x20 && c != 0x7f; }

/* RFC 9112 3: method SP request-target SP HTTP-version, exactly; `s` holds
 * the line without its CRLF. A line without a version (HTTP/0.9's
 * "GET /") is refused here, as soon as it ends. 0 ok, -1 bad. */
static int check_request_line(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len && tchar[(unsigned char)s[i]])
        i++;
    if (i == 0 || i >= len || s[i] != ' ')
        return -1;
    size_t t = ++i;
    while (i < len && is_target_byte((unsigned char)s[i]))
        i++;
    if (i == t || i >= len || s[i] != ' ')
        return -1;
    i++;
    /* "HTTP/" DIGIT "." DIGIT; versions other than 1.x are a 505 later */
    return len - i == 8 && memcmp(s + i, "HTTP/", 5) == 0 && is_digit(s[i + 5]) &&
                   s[i + 6] == '.' && is_digit(s[i + 7])
               ? 0
               : -1;
}

/* Iterates the comma-separated tokens of a list header value. Returns 1 with
 * the next token in tok and tlen, 0 at the end. Empty elements are skipped
 * (RFC 9110 5.6.1 asks recipients to accept them). */
static int next_token(const char **p, const char *end, const char **tok, size_t *tlen)
{
    const char *s = *p;
    for (;;) {
        while (s < end && (is_ows(*s) || *s == ','))
            s++;
        if (s >= end) {
            *p = s;
            return 0;
        }
        const char *t = s;
        while (s < end && *s != ',')
            s++;
        const char *e = s;
        while (e > t && is_ows(e[-1]))
            e--;
        *p = s;
        if (e > t) {
            *tok = t;
            *tlen = (size_t)(e - t);
            return 1;
        }
    }
}

/* Scans the raw head line by line. Returns the offset just past the empty
 * line that ends it, -2 when incomplete, -1 with *status on bad input. The
 * first line is the request or status line; `start` skips leading empty
 * lines (requests only). */
static ssize_t scan_head(const char *p, size_t n, size_t start, const struct http_limits *lim,
                         int is_request, int *status)
{
    int bad = is_request ? 400 : 502;
    if (start >= n)
        return -2; /* nothing yet (p may even be NULL: an empty buffer) */
    /* first line */
    const char *nl = memchr(p + start, '\n', n - start);
    size_t first_max = lim->max_request_line + 2;
    if (!nl) {
        if (n - start > first_max) {
            *status = is_request ? 414 : 502;
            return -1;
        }
        return -2;
    }
    size_t line_len = (size_t)(nl - (p + start));
    if (line_len == 0 || p[start + line_len - 1] != '\r') {
        *status = bad;
        return -1;
    }
    if (line_len - 1 > lim->max_request_line) {
        *status = is_request ? 414 : 502;
        return -1;
    }
    int bad_line = is_request ? check_request_line(p + start, line_len - 1) < 0
                              : memchr(p + start, '\r', line_len - 1) != NULL ||
                                    memchr(p + start, '\0', line_len - 1) != NULL;
    if (bad_line) {
        *status = bad;
        return -1;
    }
    size_t pos = start + line_len + 1, hstart = pos;
    int count = 0;
    for (;;) {
        if (pos >= n)
            goto more;
        nl = memchr(p + pos, '\n', n - pos);
        if (!nl)
            goto more;
        line_len = (size_t)(nl - (p + pos));
        if (line_len == 0 || p[pos + line_len - 1] != '\r') {
            *status = bad; /* bare LF */
            return -1;
        }
        if (pos + line_len + 1 - hstart > lim->max_header_size) {
            *status = is_request ? 431 : 502;
            return -1;
        }
        if (line_len == 1) /* CRLF: end of head */
            return (ssize_t)(pos + 2);
        /* The field name: one or more tchar, then the colon at once. This
         * also refuses obsolete line folding (a line starting with OWS). */
        size_t k = 0;
        while (tchar[(unsigned char)p[pos + k]])
            k++;
        if (k == 0 || p[pos + k] != ':') {
            *status = bad;
            return -1;
        }
        if (memchr(p + pos, '\r', line_len - 1) || memchr(p + pos, '\0', line_len - 1)) {
            *status = bad; /* bare CR or NUL inside a field */
            return -1;
        }
        if (++count > lim->max_headers) {
            *status = is_request ? 431 : 502;
            return -1;
        }
        pos += line_len + 1;
    }
more:
    if (n - hstart > lim->max_header_size) {
        *status = is_request ? 431 : 502;
        return -1;
    }
    return -2;
}

/* Trims trailing OWS from every value and classifies every name. */
static void finish_headers(struct http_msg *m)
{
    for (int i = 0; i < m->nhdrs; i++) {
        struct http_hdr *h = &m->hdrs[i];
        while (h->value_len > 0 && is_ows(h->value[h->value_len - 1]))
            h->value_len--;
        while (h->value_len > 0 && is_ows(h->value[0])) {
            h->value++;
            h->value_len--;
        }
        h->kind = classify(h->name, h->name_len);
    }
}

/* Connection options: close / keep-alive, and other names which make the
 * headers they name hop-by-hop (RFC 9110 7.6.1). */
static void apply_connection(struct http_msg *m)
{
    for (int i = 0; i < m->nhdrs; i++) {
        if (m->hdrs[i].kind != HH_CONNECTION)
            continue;
        const char *s = m->hdrs[i].value, *end = s + m->hdrs[i].value_len, *t;
        size_t tl;
        while (next_token(&s, end, &t, &tl)) {
            if (name_is(t, tl, "close"))
                m->conn_close = 1;
            else if (name_is(t, tl, "keep-alive"))
                m->conn_keep_alive = 1;
            else {
                for (int j = 0; j < m->nhdrs; j++)
                    if (m->hdrs[j].kind == HH_OTHER && m->hdrs[j].name_len == tl &&
                        strncasecmp(m->hdrs[j].name, t, tl) == 0)
                        m->hdrs[j].kind = HH_LISTED;
            }
        }
    }
}

/* Content-Length and Transfer-Encoding. Returns 0, or -1 when the framing
 * is ambiguous or invalid. `chunked_last` receives whether the coding chain
 * ends in chunked. */
static int framing(struct http_msg *m, int *has_cl, int *chunked_last)
{
    *has_cl = 0;
    *chunked_last = 0;
    int chunked_seen = 0;
    for (int i = 0; i < m->nhdrs; i++) {
        struct http_hdr *h = &m->hdrs[i];
        if (h->kind == HH_CONTENT_LENGTH) {
            uint64_t v;
            /* One field, digits only: "5, 5" and duplicates are refused. */
            if (*has_cl || h->value_len > 18 || util_parse_u64(h->value, h->value_len, &v) < 0)
                return -1;
            *has_cl = 1;
            m->content_length = v;
        } else if (h->kind == HH_TRANSFER_ENCODING) {
            m->has_te = 1;
            const char *s = h->value, *end = s + h->value_len, *t;
            size_t tl;
            int any = 0;
            while (next_token(&s, end, &t, &tl)) {
                any = 1;
                /* Nothing may follow chunked, and it may not repeat. */
                if (chunked_seen)
                    return -1;
                /* Other codings (gzip, ...) pass through untouched. */
                if (name_is(t, tl, "chunked"))
                    chunked_seen = 1;
            }
            if (!any)
                return -1;
            *chunked_last = chunked_seen;
        }
    }
    if (chunked_seen && !*chunked_last)
        return -1;
    return 0;
}

static void msg_reset(struct http_msg *m)
{
    struct http_hdr *h = m->hdrs;
    int cap = m->max_hdrs;
    memset(m, 0, sizeof *m);
    m->hdrs = h;
    m->max_hdrs = cap;
}

/* Runs http_parser over a complete head p[from..to). */
static int run_parser(const char *p, size_t from, size_t to, enum http_parser_type type,
                      struct http_msg *m)
{
    http_parser hp;
    struct parse_ctx x = {.m = m};
    http_parser_init(&hp, type);
    hp.data = &x;
    size_t done = http_parser_execute(&hp, &parse_settings, p + from, to - from);
    enum http_errno e = HTTP_PARSER_ERRNO(&hp);
    if (x.overflow)
        return -2;
    if (e != HPE_OK && e != HPE_PAUSED)
        return -1;
    if (done != to - from && !hp.upgrade)
        return -1;
    m->major = hp.http_major;
    m->minor = hp.http_minor;
    m->method = (int)hp.method;
    m->status = (int)hp.status_code;
    return 0;
}

ssize_t http_parse_request(const char *p, size_t n, const struct http_limits *lim,
                           struct http_msg *m, int *status)
{
    msg_reset(m);
    size_t start = 0;
    for (int i = 0; i < HTTP_MAX_LEADING_EMPTY; i++) {
        if (start + 1 <= n && p[start] == '\r') {
            if (start + 2 > n)
                return -2;
            if (p[start + 1] != '\n') {
                *status = 400;
                return -1;
            }
            start += 2;
        } else
            break;
    }
    if (start < n && (p[start] == '\n' || p[start] == '\r')) {
        *status = 400;
        return -1;
    }
    ssize_t end = scan_head(p, n, start, lim, 1, status);
    if (end < 0)
        return end;
    m->skipped = start;
    m->head_len = (size_t)end;
    /* Method token: everything up to the first space. */
    const char *sp = memchr(p + start, ' ', (size_t)end - start);
    if (!sp) {
        *status = 400;
        return -1;
    }
    m->method_s = p + start;
    m->method_len = (size_t)(sp - (p + start));
    int rc = run_parser(p, start, (size_t)end, HTTP_REQUEST, m);
    if (rc == -2) {
        *status = 431;
        return -1;
    }
    if (rc < 0 || !m->target) {
        *status = 400;
        return -1;
    }
    if (m->major != 1 || m->minor > 1) {
        *status = 505;
        return -1;
    }
    if (m->method == HTTP_CONNECT) {
        *status = 501; /* no tunnelling through the balancer */
        return -1;
    }
    finish_headers(m);
    apply_connection(m);
    int has_cl, chunked_last, hosts = 0;
    if (framing(m, &has_cl, &chunked_last) < 0) {
        *status = 400;
        return -1;
    }
    for (int i = 0; i < m->nhdrs; i++) {
        if (m->hdrs[i].kind == HH_HOST)
            hosts++;
        else if (m->hdrs[i].kind == HH_EXPECT &&
                 name_is(m->hdrs[i].value, m->hdrs[i].value_len, "100-continue"))
            m->expect_continue = 1;
    }
    /* RFC 9112 3.2: exactly one Host in HTTP/1.1; at most one in 1.0. */
    if (hosts > 1 || (hosts == 0 && m->minor == 1)) {
        *status = 400;
        return -1;
    }
    if (m->has_te) {
        /* RFC 9112 6.1/6.3: TE with CL is a smuggling attempt; in a request
         * the chain must end in chunked; HTTP/1.0 framing with TE is faulty. */
        if (has_cl || !chunked_last || m->minor == 0) {
            *status = 400;
            return -1;
        }
        m->body = HTTP_BODY_CHUNKED;
    } else if (has_cl && m->content_length > 0) {
        m->body = HTTP_BODY_LENGTH;
    } else {
        m->body = HTTP_BODY_NONE;
    }
    return end;
}

ssize_t http_parse_response(const char *p, size_t n, const struct http_limits *lim,
                            struct http_msg *m, int head_request, int *status)
{
    msg_reset(m);
    *status = 502;
    ssize_t end = scan_head(p, n, 0, lim, 0, status);
    if (end < 0)
        return end;
    m->head_len = (size_t)end;
    if (run_parser(p, 0, (size_t)end, HTTP_RESPONSE, m) < 0)
        return -1;
    if (m->major != 1 || m->minor > 1 || m->status < 100 || m->status > 999)
        return -1;
    finish_headers(m);
    apply_connection(m);
    int has_cl, chunked_last;
    if (framing(m, &has_cl, &chunked_last) < 0)
        return -1;
    if (m->has_te && has_cl)
        return -1;
    if (head_request || m->status < 200 || m->status == 204 || m->status == 304)
        m->body = HTTP_BODY_NONE;
    else if (m->has_te)
        m->body = chunked_last && m->minor == 1 ? HTTP_BODY_CHUNKED : HTTP_BODY_CLOSE;
    else if (has_cl)
        m->body = m->content_length > 0 ? HTTP_BODY_LENGTH : HTTP_BODY_NONE;
    else
        m->body = HTTP_BODY_CLOSE;
    return end;
}

int http_msg_keep_alive(const struct http_msg *m)
{
    if (m->conn_close)
        return 0;
    if (m->major == 1 && m->minor >= 1)
        return 1;
    return m->conn_keep_alive;
}

const struct http_hdr *http_msg_find(const struct http_msg *m, const char *name)
{
    size_t l = strlen(name);
    for (int i = 0; i < m->nhdrs; i++)
        if (m->hdrs[i].name_len == l && strncasecmp(m->hdrs[i].name, name, l) == 0)
            return &m->hdrs[i];
    return NULL;
}

const char *http_cookie_find(const char *s, size_t n, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *end = s + n;
    while (s < end) {
        while (s < end && (*s == ' ' || *s == ';'))
            s++;
        const char *pair = s;
        while (s < end && *s != ';')
            s++;
        const char *eq = memchr(pair, '=', (size_t)(s - pair));
        if (eq && (size_t)(eq - pair) == nl && memcmp(pair, name, nl) == 0) {
            const char *v = eq + 1, *ve = s;
            while (ve > v && is_ows(ve[-1]))
                ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
    }
    return NULL;
}

/* ---- chunked framing -------------------------------------------------- */

enum {
    CK_SIZE,       /* hex digits of the chunk size */
    CK_EXT,        /* ";ext" after the size, up to CR */
    CK_SIZE_LF,    /* LF after the size line's CR */
    CK_DATA,       /* payload */
    CK_DATA_CR,    /* CR after the payload */
    CK_DATA_LF,    /* LF after the payload */
    CK_TRAILER,    /* start of a trailer line (or the final empty line) */
    CK_TRAILER_IN, /* inside a trailer line, up to CR */
    CK_TRAILER_LF, /* LF after a trailer line */
    CK_END_LF,     /* LF of the final empty line */
    CK_DONE,
};

#define CK_MAX_SIZE_LINE 1024

void http_chunked_init(struct http_chunked *ck, size_t max_trailer)
{
    memset(ck, 0, sizeof *ck);
    ck->state = CK_SIZE;
    ck->max_trailer = max_trailer;
}

ssize_t http_chunked_scan(struct http_chunked *ck, const char *p, size_t n, int *done,
                          void (*data)(void *ud, const char *p, size_t n), void *ud)
{
    size_t i = 0;
    *done = ck->state == CK_DONE;
    while (i < n && ck->state != CK_DONE) {
        char c = p[i];
        switch (ck->state) {
        case CK_SIZE: {
            int v = util_hexval(c);
            if (v >= 0) {
                if (ck->line >= 15) /* 2^60 bytes is enough for anyone */
                    return -1;
                ck->remaining = (ck->remaining << 4) | (uint64_t)v;
                ck->line++;
            } else if (ck->line == 0) {
                return -1;
            } else if (c == ';') {
                ck->state = CK_EXT;
            } else if (c == '\r') {
                ck->state = CK_SIZE_LF;
            } else {
                return -1;
            }
            i++;
            break;
        }
        case CK_EXT:
            if (c == '\r')
                ck->state = CK_SIZE_LF;
            else if (c == '\n' || c == '\0' || ++ck->line > CK_MAX_SIZE_LINE)
                return -1;
            i++;
            break;
        case CK_SIZE_LF:
            if (c != '\n')
                return -1;
            i++;
            ck->line = 0;
            ck->state = ck->remaining ? CK_DATA : CK_TRAILER;
            break;
        case CK_DATA: {
            size_t take = n - i;
            if (take > ck->remaining)
                take = (size_t)ck->remaining;
            if (data)
                data(ud, p + i, take);
            i += take;
            ck->remaining -= take;
            if (ck->remaining == 0)
                ck->state = CK_DATA_CR;
            break;
        }
        case CK_DATA_CR:
            if (c != '\r')
                return -1;
            i++;
            ck->state = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            if (c != '\n')
                return -1;
            i++;
            ck->state = CK_SIZE;
            break;
        case CK_TRAILER:
            if (c == '\r') {
                ck->state = CK_END_LF;
                i++;
                break;
            }
            /* a trailer's name is a token like a header's (this also
             * refuses a bare LF and folding) */
            if (!tchar[(unsigned char)c])
                return -1;
            ck->state = CK_TRAILER_IN;
            ck->line = 1; /* in the name */
            break;
        case CK_TRAILER_IN:
            if (ck->line) {
                if (c == ':')
                    ck->line = 0;
                else if (!tchar[(unsigned char)c])
                    return -1; /* a space before the colon, none at all */
            } else if (c == '\r')
                ck->state = CK_TRAILER_LF;
            else if (c == '\n' || c == '\0')
                return -1;
            if (++ck->trailer > ck->max_trailer)
                return -1;
            i++;
            break;
        case CK_TRAILER_LF:
            if (c != '\n')
                return -1;
            i++;
            ck->state = CK_TRAILER;
            break;
        case CK_END_LF:
            if (c != '\n')
                return -1;
            i++;
            ck->state = CK_DONE;
            break;
        }
    }
    *done = ck->state == CK_DONE;
    return (ssize_t)i;
}

/* ---- body framing for readers ------------------------------------------ */

void http_body_reader_init(struct http_body_reader *r, enum http_body kind,
                           uint64_t content_length, size_t max_trailer)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->left = kind == HTTP_BODY_LENGTH ? content_length : 0;
    http_chunked_init(&r->ck, max_trailer);
    r->done = kind == HTTP_BODY_NONE || (kind == HTTP_BODY_LENGTH && content_length == 0);
}

ssize_t http_body_reader_feed(struct http_body_reader *r, const char *p, size_t n,
                              void (*data)(void *ud, const char *p, size_t n), void *ud)
{
    if (r->done)
        return 0;
    switch (r->kind) {
    case HTTP_BODY_LENGTH: {
        size_t take = n < r->left ? n : (size_t)r->left;
        if (take && data)
            data(ud, p, take);
        r->left -= take;
        r->done = r->left == 0;
        return (ssize_t)take;
    }
    case HTTP_BODY_CHUNKED: {
        int done = 0;
        ssize_t used = http_chunked_scan(&r->ck, p, n, &done, data, ud);
        if (used < 0)
            return -1;
        r->done = done;
        return used;
    }
    case HTTP_BODY_CLOSE:
        if (n && data)
            data(ud, p, n);
        return (ssize_t)n;
    case HTTP_BODY_NONE:
    default:
        r->done = 1;
        return 0;
    }
}

int http_body_reader_eof(struct http_body_reader *r)
{
    if (r->done)
        return 0;
    if (r->kind == HTTP_BODY_CLOSE) {
        r->done = 1;
        return 0;
    }
    return -1;
}

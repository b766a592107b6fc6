#include "web_static.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "http_parser.h"
#include "http_server.h"
#include "log.h"
#include "util.h"
#include "web_mime.h"

/* A request path longer than this is no file of ours. */
#define WS_PATH_MAX 1024

/* Which files have a .br or .gz sibling, remembered for a second: most
 * files have none, and looking costs two opens per request. A sibling
 * added or removed is seen within WS_SIB_TTL seconds (a removed one that
 * is still remembered is simply not found, and the file goes out). */
#define WS_SIB_SLOTS 256
#define WS_SIB_TTL 1
struct sib_slot {
    uint64_t hash; /* of the relative path; 0: empty */
    time_t at;
    unsigned char br, gz;
};

struct web_static {
    int rootfd;            /* O_PATH descriptor of the folder */
    char *root;            /* its real path, for the fallback check */
    size_t root_len;
    char *prefix;          /* always ends with '/' */
    size_t prefix_len;
    char *index;           /* NULL: a directory is not served */
    long max_age, immutable_max_age;
    int precompressed;
    int beneath;           /* openat2 with RESOLVE_BENEATH works here */
    time_t date_at;        /* the second `date` was formatted for */
    char date[32];
    time_t lm_at;          /* the mtime `lm` was formatted for */
    char lm[32];
    char cc_plain[64], cc_immutable[64]; /* the Cache-Control values */
    struct sib_slot sibs[WS_SIB_SLOTS];
    struct web_static_stats st;
};

/* --- dates (IMF-fixdate out; the three HTTP date forms in) --------------- */

static const char wdays[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* "Sun, 06 Nov 1994 08:49:37 GMT", whatever the locale. */
static void http_date(time_t t, char out[32])
{
    struct tm tm;
    gmtime_r(&t, &tm);
    int y = tm.tm_year + 1900;
    if (y < 0 || y > 9999)
        y = y < 0 ? 0 : 9999;
    char *p = out;
    memcpy(p, wdays[tm.tm_wday], 3);
    p += 3;
    *p++ = ',';
    *p++ = ' ';
    *p++ = (char)('0' + tm.tm_mday / 10);
    *p++ = (char)('0' + tm.tm_mday % 10);
    *p++ = ' ';
    memcpy(p, months[tm.tm_mon], 3);
    p += 3;
    *p++ = ' ';
    *p++ = (char)('0' + y / 1000);
    *p++ = (char)('0' + y / 100 % 10);
    *p++ = (char)('0' + y / 10 % 10);
    *p++ = (char)('0' + y % 10);
    *p++ = ' ';
    int hms[3] = {tm.tm_hour, tm.tm_min, tm.tm_sec};
    for (int i = 0; i < 3; i++) {
        *p++ = (char)('0' + hms[i] / 10);
        *p++ = (char)('0' + hms[i] % 10);
        *p++ = i < 2 ? ':' : ' ';
    }
    memcpy(p, "GMT", 4); /* 29 bytes and the NUL */
}

static int month_of(const char *p)
{
    for (int i = 0; i < 12; i++)
        if (memcmp(p, months[i], 3) == 0)
            return i;
    return -1;
}

/* Reads `n` digits at *p. -1 when they are not all digits. */
static int digits(const char **p, const char *end, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (*p >= end || **p < '0' || **p > '9')
            return -1;
        v = v * 10 + (**p - '0');
    }
    return v;
}

static int expect(const char **p, const char *end, const char *lit)
{
    size_t l = strlen(lit);
    if ((size_t)(end - *p) < l || memcmp(*p, lit, l) != 0)
        return -1;
    *p += l;
    return 0;
}

/* "hh:mm:ss" */
static int clock_of(const char **p, const char *end, struct tm *tm)
{
    tm->tm_hour = digits(p, end, 2);
    if (tm->tm_hour < 0 || expect(p, end, ":") < 0)
        return -1;
    tm->tm_min = digits(p, end, 2);
    if (tm->tm_min < 0 || expect(p, end, ":") < 0)
        return -1;
    tm->tm_sec = digits(p, end, 2);
    return tm->tm_sec < 0 || tm->tm_hour > 23 || tm->tm_min > 59 || tm->tm_sec > 60 ? -1 : 0;
}

/* An HTTP-date (RFC 9110 5.6.7): IMF-fixdate, or the obsolete RFC 850 and
 * asctime forms a recipient still accepts. -1 when it is none of them. */
static int parse_http_date(const char *s, size_t n, time_t *out)
{
    const char *p = s, *end = s + n;
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *comma = memchr(s, ',', n);
    if (comma && comma - s == 3) { /* Sun, 06 Nov 1994 08:49:37 GMT */
        p = comma + 1;
        if (expect(&p, end, " ") < 0 || (tm.tm_mday = digits(&p, end, 2)) < 0 ||
            expect(&p, end, " ") < 0 || end - p < 3 || (tm.tm_mon = month_of(p)) < 0)
            return -1;
        p += 3;
        if (expect(&p, end, " ") < 0 || (tm.tm_year = digits(&p, end, 4)) < 0 ||
            expect(&p, end, " ") < 0 || clock_of(&p, end, &tm) < 0 || expect(&p, end, " GMT") < 0)
            return -1;
        tm.tm_year -= 1900;
    } else if (comma) { /* Sunday, 06-Nov-94 08:49:37 GMT */
        p = comma + 1;
        int yy;
        if (expect(&p, end, " ") < 0 || (tm.tm_mday = digits(&p, end, 2)) < 0 ||
            expect(&p, end, "-") < 0 || end - p < 3 || (tm.tm_mon = month_of(p)) < 0)
            return -1;
        p += 3;
        if (expect(&p, end, "-") < 0 || (yy = digits(&p, end, 2)) < 0 || expect(&p, end, " ") < 0 ||
            clock_of(&p, end, &tm) < 0 || expect(&p, end, " GMT") < 0)
            return -1;
        tm.tm_year = yy < 70 ? yy + 100 : yy; /* two digits: the nearest century */
    } else { /* Sun Nov  6 08:49:37 1994 */
        if (n < 24 || s[3] != ' ' || (tm.tm_mon = month_of(s + 4)) < 0 || s[7] != ' ')
            return -1;
        p = s + 8;
        if (*p == ' ')
            p++, tm.tm_mday = digits(&p, end, 1);
        else
            tm.tm_mday = digits(&p, end, 2);
        if (tm.tm_mday < 0 || expect(&p, end, " ") < 0 || clock_of(&p, end, &tm) < 0 ||
            expect(&p, end, " ") < 0 || (tm.tm_year = digits(&p, end, 4)) < 0)
            return -1;
        tm.tm_year -= 1900;
    }
    if (p != end || tm.tm_mday < 1 || tm.tm_mday > 31)
        return -1;
    *out = timegm(&tm);
    return 0;
}

static const char *now_date(struct web_static *st, time_t now)
{
    if (now != st->date_at) {
        st->date_at = now;
        http_date(now, st->date);
    }
    return st->date;
}

/* Last-Modified for an mtime; the last one is kept (a hot file's). */
static const char *last_modified(struct web_static *st, time_t mtime)
{
    if (mtime != st->lm_at || !st->lm[0]) {
        st->lm_at = mtime;
        http_date(mtime, st->lm);
    }
    return st->lm;
}

/* --- request headers -------------------------------------------------------- */

/* The values of every field named `name`, joined as one list (a repeated
 * field is the same as one with commas), into out. 0 when absent. */
static int header_list(const struct http_req *req, const char *name, char *out, size_t cap)
{
    size_t l = strlen(name), used = 0;
    int found = 0;
    for (int i = 0; i < req->nhdrs; i++) {
        const struct http_hdr *h = &req->hdrs[i];
        if (h->name_len != l || strncasecmp(h->name, name, l) != 0)
            continue;
        if (found && used + 1 < cap)
            out[used++] = ',';
        size_t n = h->value_len < cap - 1 - used ? h->value_len : cap - 1 - used;
        memcpy(out + used, h->value, n);
        used += n;
        found = 1;
    }
    out[used] = 0;
    return found;
}

static const char *skip_ows(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* Whether an entity-tag list (If-None-Match, If-Match) names `etag` (our
 * tag, strong, with its quotes): `*` names any; `weak` compares the way
 * If-None-Match does (a W/ prefix on either side does not matter), else a
 * weak tag never matches (If-Match). */
static int etag_list_match(const char *list, const char *etag, int weak)
{
    size_t el = strlen(etag);
    const char *p = list;
    for (;;) {
        p = skip_ows(p);
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        if (!*p)
            return 0;
        if (*p == '*')
            return 1;
        int is_weak = 0;
        if (p[0] == 'W' && p[1] == '/') {
            is_weak = 1;
            p += 2;
        }
        if (*p != '"')
            return 0; /* not a list of entity-tags: nothing matches */
        const char *q = strchr(p + 1, '"');
        if (!q)
            return 0;
        size_t tl = (size_t)(q - p + 1);
        if (tl == el && memcmp(p, etag, el) == 0 && (weak || !is_weak))
            return 1;
        p = q + 1;
    }
}

/* --- Accept-Encoding ----------------------------------------------------------- */

/* The q-value of a coding in an Accept-Encoding value: -1 when not named,
 * else 0..1000. `*` stands for any coding the list does not name. */
static int coding_q(const char *list, const char *coding)
{
    size_t cl = strlen(coding);
    int star = -1;
    const char *p = list;
    while (*p) {
        p = skip_ows(p);
        const char *name = p;
        while (*p && *p != ',' && *p != ';' && *p != ' ' && *p != '\t')
            p++;
        size_t nl = (size_t)(p - name);
        int q = 1000;
        p = skip_ows(p);
        while (*p == ';') { /* parameters: only q counts */
            p = skip_ows(p + 1);
            if ((p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
                p += 2;
                q = 0;
                if (*p == '1') {
                    q = 1000;
                    p++;
                } else if (*p == '0') {
                    p++;
                    if (*p == '.') {
                        p++;
                        int scale = 100;
                        for (int i = 0; i < 3 && *p >= '0' && *p <= '9'; i++, p++, scale /= 10)
                            q += (*p - '0') * scale;
                    }
                }
            }
            while (*p && *p != ',' && *p != ';')
                p++;
        }
        while (*p && *p != ',')
            p++;
        if (*p == ',')
            p++;
        if (nl == cl && strncasecmp(name, coding, cl) == 0)
            return q;
        if (nl == 1 && *name == '*')
            star = q;
    }
    return star;
}

/* --- the path ------------------------------------------------------------------ */

/* The part of the request path under the prefix, percent-decoded once,
 * into `out` as a relative path ("" for the folder itself, never a
 * leading '/'). -1 (refused) for a bad escape, an escaped '.', '/' or '\',
 * a NUL or control byte, a backslash, a `.` or `..` segment, or a hidden
 * name (a segment starting with '.', but `.well-known`). */
static int decode_path(const char *p, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    size_t seg = 0; /* where the current segment starts in out */
    for (size_t i = 0; i <= n; i++) {
        int c;
        if (i == n) {
            c = '/';
        } else if (p[i] == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = util_hexval((unsigned char)p[i + 1]);
            int lo = util_hexval((unsigned char)p[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = hi * 16 + lo;
            if (c == '.' || c == '/' || c == '\\')
                return -1; /* encoded dots and separators hide a traversal */
            i += 2;
        } else {
            c = (unsigned char)p[i];
        }
        if (c < 0x20 || c == 0x7f || c == '\\')
            return -1;
        if (c == '/') {
            size_t sl = o - seg;
            if (sl == 0) /* an empty segment: "a//b", or the leading '/' */
                continue;
            if (out[seg] == '.' && !(sl == 11 && memcmp(out + seg, ".well-known", 11) == 0))
                return -1; /* ".", "..", and hidden names */
            if (o + 1 >= cap)
                return -1;
            out[o++] = '/';
            seg = o;
            continue;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = (char)c;
    }
    if (o > 0 && out[o - 1] == '/')
        o--; /* the separator added after the last segment */
    out[o] = 0;
    return 0;
}

/* Opens `rel` under the folder for reading, never leaving it: with
 * openat2 and RESOLVE_BENEATH where the kernel has it (a symlink may lead
 * anywhere inside, not out), else by checking the path the descriptor
 * really opened. -1 with errno: ENOENT/ENOTDIR (no such file), EXDEV (it
 * leads out), or another. */
static int open_beneath(struct web_static *st, const char *rel)
{
    const char *name = *rel ? rel : ".";
    int flags = O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY; /* a FIFO must not block */
    if (st->beneath) {
        struct open_how how = {.flags = (uint64_t)flags,
                               .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS};
        return (int)syscall(SYS_openat2, st->rootfd, name, &how, sizeof how);
    }
    int fd = openat(st->rootfd, name, flags);
    if (fd < 0)
        return -1;
    char link[64], real[PATH_MAX + 1];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, real, sizeof real - 1);
    if (n < 0 || (size_t)n < st->root_len || memcmp(real, st->root, st->root_len) != 0 ||
        ((size_t)n > st->root_len && real[st->root_len] != '/' && st->root_len > 1)) {
        close(fd);
        errno = EXDEV;
        return -1;
    }
    return fd;
}

/* The regular file at `rel` (a directory: its index), with its stat. -1:
 * no such file (errno ENOENT) or it leads out (EXDEV). */
static int open_file(struct web_static *st, char *rel, size_t cap, struct stat *sb)
{
    int fd = open_beneath(st, rel);
    if (fd < 0)
        return -1;
    if (fstat(fd, sb) < 0) {
        close(fd);
        errno = ENOENT;
        return -1;
    }
    if (S_ISDIR(sb->st_mode)) {
        close(fd);
        size_t l = strlen(rel);
        if (!st->index || l + 1 + strlen(st->index) + 1 > cap) {
            errno = ENOENT;
            return -1;
        }
        snprintf(rel + l, cap - l, "%s%s", l ? "/" : "", st->index);
        fd = open_beneath(st, rel);
        if (fd < 0)
            return -1;
        if (fstat(fd, sb) < 0) {
            close(fd);
            errno = ENOENT;
            return -1;
        }
    }
    if (!S_ISREG(sb->st_mode)) { /* devices, FIFOs, sockets: never */
        close(fd);
        errno = ENOENT;
        return -1;
    }
    return fd;
}

/* A fingerprinted name: a run of 8 or more hex digits (one at least a
 * digit) between '.', '-' or '_' and a '.', as in app.3f9a1c2e.js or
 * logo-0123abcd.min.svg. Such a name never changes content. */
static int fingerprinted(const char *rel)
{
    const char *base = strrchr(rel, '/');
    base = base ? base + 1 : rel;
    for (const char *p = base; *p; p++) {
        if (*p != '.' && *p != '-' && *p != '_')
            continue;
        const char *q = p + 1;
        int digit = 0;
        while (util_hexval((unsigned char)*q) >= 0) {
            digit |= *q >= '0' && *q <= '9';
            q++;
        }
        if (q - p - 1 >= 8 && *q == '.' && digit)
            return 1;
    }
    return 0;
}

/* --- ranges ------------------------------------------------------------------------ */

/* Digits to a number, saturating (a huge position is past any file). */
static const char *number(const char *p, uint64_t *out, int *any)
{
    uint64_t v = 0;
    *any = 0;
    while (*p >= '0' && *p <= '9') {
        unsigned d = (unsigned)(*p - '0');
        v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
        *any = 1;
        p++;
    }
    *out = v;
    return p;
}

/* A Range value for a file of `size` bytes: 1 with the first and last
 * byte positions; -1 unsatisfiable (416); 0 to answer the whole file
 * (another unit, bad syntax, or several ranges). */
static int parse_range(const char *v, uint64_t size, uint64_t *first, uint64_t *last)
{
    v = skip_ows(v);
    if (strncasecmp(v, "bytes", 5) != 0)
        return 0;
    const char *p = skip_ows(v + 5);
    if (*p != '=')
        return 0;
    p = skip_ows(p + 1);
    if (strchr(p, ','))
        return 0; /* several ranges: the whole file, in one answer */
    uint64_t a = 0, b = 0;
    int has_a, has_b;
    p = number(p, &a, &has_a);
    if (*p != '-')
        return 0;
    p = number(p + 1, &b, &has_b);
    if (*skip_ows(p) || (!has_a && !has_b))
        return 0;
    if (!has_a) { /* -n: the last n bytes */
        if (b == 0 || size == 0)
            return -1;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return 1;
    }
    if (has_b && b < a)
        return 0; /* an invalid range-spec: ignored */
    if (a >= size)
        return -1;
    *first = a;
    *last = has_b && b < size - 1 ? b : size - 1;
    return 1;
}

/* --- answers ---------------------------------------------------------------------- */

static int refuse(struct web_static *st, struct http_req *req)
{
    st->st.refused++;
    http_respond(req, 404, "text/plain; charset=utf-8", "not found\n", 10);
    return 1;
}

/* The representation chosen for a request: the file or a compressed
 * sibling of it. */
struct rep {
    int fd;
    struct stat sb;
    const char *coding; /* NULL: identity */
    char etag[64];
};

static char *put_hex(char *p, uint64_t v)
{
    char d[16];
    int k = 0;
    do {
        d[k++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    while (k)
        *p++ = d[--k];
    return p;
}

/* Strong: the size and the mtime to the nanosecond name these bytes; a
 * compressed sibling's tag names its coding too:
 * "size-mtime.nsec[-br|-gz]" in hex. */
static void make_etag(struct rep *r)
{
    char *p = r->etag;
    *p++ = '"';
    p = put_hex(p, (uint64_t)r->sb.st_size);
    *p++ = '-';
    p = put_hex(p, (uint64_t)r->sb.st_mtim.tv_sec);
    *p++ = '.';
    p = put_hex(p, (uint64_t)r->sb.st_mtim.tv_nsec);
    if (r->coding) {
        memcpy(p, r->coding[0] == 'b' ? "-br" : "-gz", 3);
        p += 3;
    }
    *p++ = '"';
    *p = 0;
}

/* Opens rel + suffix as a sibling; -1 when there is none. */
static int open_sibling(struct web_static *st, const char *rel, const char *suffix, struct stat *sb)
{
    char path[WS_PATH_MAX + 8];
    snprintf(path, sizeof path, "%s%s", rel, suffix);
    int fd = open_beneath(st, path);
    if (fd < 0)
        return -1;
    if (fstat(fd, sb) < 0 || !S_ISREG(sb->st_mode)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Picks the representation: a .br or .gz sibling the client accepts
 * (the higher q; br on a tie), else the file. *vary: a sibling exists, so
 * the answer depends on Accept-Encoding whichever was chosen. */
static void choose(struct web_static *st, const struct http_req *req, const char *rel,
                   time_t now, struct rep *r, int *vary)
{
    *vary = 0;
    if (!st->precompressed)
        return;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = rel; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h |= 1;
    struct sib_slot *slot = &st->sibs[h % WS_SIB_SLOTS];
    int known = slot->hash == h && now - slot->at <= WS_SIB_TTL;
    struct stat bsb, gsb;
    int bfd = !known || slot->br ? open_sibling(st, rel, ".br", &bsb) : -1;
    int gfd = !known || slot->gz ? open_sibling(st, rel, ".gz", &gsb) : -1;
    if (!known) {
        slot->hash = h;
        slot->at = now;
        slot->br = bfd >= 0;
        slot->gz = gfd >= 0;
    }
    if (bfd < 0 && gfd < 0)
        return;
    *vary = 1;
    char ae[512];
    int qb = -1, qg = -1;
    if (header_list(req, "Accept-Encoding", ae, sizeof ae)) {
        qb = bfd >= 0 ? coding_q(ae, "br") : -1;
        qg = gfd >= 0 ? coding_q(ae, "gzip") : -1;
        if (gfd >= 0 && qg < 0)
            qg = coding_q(ae, "x-gzip");
    }
    if (qb > 0 && qb >= qg) {
        close(r->fd);
        r->fd = bfd, r->sb = bsb, r->coding = "br";
        bfd = -1;
    } else if (qg > 0) {
        close(r->fd);
        r->fd = gfd, r->sb = gsb, r->coding = "gzip";
        gfd = -1;
    }
    if (bfd >= 0)
        close(bfd);
    if (gfd >= 0)
        close(gfd);
}

static void common_headers(struct web_static *st, struct http_req *req, const struct rep *r,
                           const char *rel, int vary, time_t now)
{
    http_resp_header(req, "Date", now_date(st, now));
    http_resp_header(req, "ETag", r->etag);
    http_resp_header(req, "Cache-Control", fingerprinted(rel) ? st->cc_immutable : st->cc_plain);
    if (vary)
        http_resp_header(req, "Vary", "Accept-Encoding");
}

/* The preconditions of RFC 9110 13.2.2, in their order: 412, 304, or 0
 * to go on. */
static int preconditions(const struct http_req *req, const struct rep *r)
{
    char v[1024];
    time_t t;
    if (header_list(req, "If-Match", v, sizeof v)) {
        if (!etag_list_match(v, r->etag, 0))
            return 412;
    } else if (header_list(req, "If-Unmodified-Since", v, sizeof v) &&
               parse_http_date(v, strlen(v), &t) == 0 && r->sb.st_mtim.tv_sec > t) {
        return 412;
    }
    if (header_list(req, "If-None-Match", v, sizeof v))
        return etag_list_match(v, r->etag, 1) ? 304 : 0;
    if (header_list(req, "If-Modified-Since", v, sizeof v) &&
        parse_http_date(v, strlen(v), &t) == 0 && r->sb.st_mtim.tv_sec <= t)
        return 304;
    return 0;
}

/* Whether If-Range (when present) lets the Range apply: an entity-tag
 * that strongly matches, or a date exactly the Last-Modified. */
static int if_range_holds(const struct http_req *req, const struct rep *r)
{
    char v[256];
    if (!header_list(req, "If-Range", v, sizeof v))
        return 1;
    const char *p = skip_ows(v);
    if (p[0] == '"')
        return strcmp(p, r->etag) == 0;
    if (p[0] == 'W' && p[1] == '/')
        return 0; /* a weak tag is never good enough for a part */
    time_t t;
    return parse_http_date(p, strlen(p), &t) == 0 && t == r->sb.st_mtim.tv_sec;
}

int web_static_serve(struct web_static *st, struct http_req *req)
{
    /* Under the prefix: "/static/..." or "/static" itself. */
    size_t pl = st->prefix_len;
    const char *path = req->path;
    size_t n = req->path_len;
    if (n >= pl ? memcmp(path, st->prefix, pl) != 0
                : !(n == pl - 1 && memcmp(path, st->prefix, n) == 0))
        return 0;
    if (req->method_id != HTTP_GET && req->method_id != HTTP_HEAD) {
        http_resp_header(req, "Allow", "GET, HEAD");
        http_respond(req, 405, "text/plain; charset=utf-8", "method not allowed\n", 19);
        return 1;
    }
    char rel[WS_PATH_MAX + 1];
    size_t skip = n >= pl ? pl : n;
    if (n - skip > WS_PATH_MAX || decode_path(path + skip, n - skip, rel, sizeof rel - 64) < 0)
        return refuse(st, req);

    struct rep r = {.fd = -1};
    r.fd = open_file(st, rel, sizeof rel, &r.sb);
    if (r.fd < 0)
        return errno == EXDEV || errno == ELOOP || errno == EAGAIN ? refuse(st, req) : 0;
    int vary;
    time_t now = time(NULL);
    choose(st, req, rel, now, &r, &vary);
    make_etag(&r);

    int pre = preconditions(req, &r);
    if (pre == 304) {
        close(r.fd);
        st->st.not_modified++;
        http_resp_status(req, 304);
        common_headers(st, req, &r, rel, vary, now);
        http_resp_finish(req);
        return 1;
    }
    if (pre == 412) {
        close(r.fd);
        http_resp_header(req, "Date", now_date(st, now));
        http_resp_header(req, "ETag", r.etag);
        http_respond(req, 412, "text/plain; charset=utf-8", "precondition failed\n", 20);
        return 1;
    }

    uint64_t size = (uint64_t)r.sb.st_size, first = 0, last = size ? size - 1 : 0;
    int status = 200;
    const struct http_hdr *range = req->method_id == HTTP_GET ? http_req_header(req, "Range") : NULL;
    if (range && if_range_holds(req, &r)) {
        char v[256];
        header_list(req, "Range", v, sizeof v);
        int rc = parse_range(v, size, &first, &last);
        if (rc < 0) {
            close(r.fd);
            char cr[48];
            snprintf(cr, sizeof cr, "bytes */%llu", (unsigned long long)size);
            http_resp_header(req, "Content-Range", cr);
            http_resp_header(req, "Date", now_date(st, now));
            http_respond(req, 416, "text/plain; charset=utf-8", "range not satisfiable\n", 22);
            return 1;
        }
        if (rc > 0)
            status = 206;
        else
            first = 0, last = size ? size - 1 : 0;
    }

    http_resp_status(req, status);
    http_resp_header(req, "Content-Type", web_mime_type(rel, strlen(rel)));
    common_headers(st, req, &r, rel, vary, now);
    http_resp_header(req, "Last-Modified", last_modified(st, r.sb.st_mtim.tv_sec));
    http_resp_header(req, "Accept-Ranges", "bytes");
    if (r.coding)
        http_resp_header(req, "Content-Encoding", r.coding);
    if (status == 206) {
        char cr[80];
        snprintf(cr, sizeof cr, "bytes %llu-%llu/%llu", (unsigned long long)first,
                 (unsigned long long)last, (unsigned long long)size);
        http_resp_header(req, "Content-Range", cr);
        st->st.partial++;
    }
    st->st.served++;
    http_resp_sendfile(req, r.fd, (off_t)first, size ? (size_t)(last - first + 1) : 0);
    return 1;
}

/* --- the folder ------------------------------------------------------------------ */

void web_static_cfg_defaults(struct web_static_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->prefix = "/";
    cfg->index = "index.html";
    cfg->max_age = 300;
    cfg->immutable_max_age = 31536000;
    cfg->precompressed = 1;
}

/* Whether openat2 with RESOLVE_BENEATH works here (Linux 5.6 and later,
 * and no seccomp filter refusing it). */
static int beneath_works(int rootfd)
{
    struct open_how how = {.flags = O_RDONLY | O_CLOEXEC | O_DIRECTORY,
                           .resolve = RESOLVE_BENEATH};
    int fd = (int)syscall(SYS_openat2, rootfd, ".", &how, sizeof how);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

struct web_static *web_static_new(const struct web_static_cfg *cfg, char *err, size_t errlen)
{
    if (!cfg->root || !*cfg->root) {
        snprintf(err, errlen, "static: no folder given");
        return NULL;
    }
    const char *prefix = cfg->prefix && *cfg->prefix ? cfg->prefix : "/";
    if (prefix[0] != '/') {
        snprintf(err, errlen, "static: the prefix '%s' must start with '/'", prefix);
        return NULL;
    }
    if (cfg->index && (!*cfg->index || strchr(cfg->index, '/') || cfg->index[0] == '.')) {
        snprintf(err, errlen, "static: the index '%s' must be a plain file name", cfg->index);
        return NULL;
    }
    struct web_static *st = calloc(1, sizeof *st);
    if (!st) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    st->rootfd = -1;
    st->root = realpath(cfg->root, NULL);
    if (!st->root) {
        snprintf(err, errlen, "static: cannot use the folder %s: %s", cfg->root, strerror(errno));
        web_static_free(st);
        return NULL;
    }
    st->root_len = strlen(st->root);
    st->rootfd = open(st->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (st->rootfd < 0) {
        snprintf(err, errlen, "static: %s is not a folder: %s", cfg->root, strerror(errno));
        web_static_free(st);
        return NULL;
    }
    size_t pl = strlen(prefix);
    st->prefix = malloc(pl + 2);
    st->index = cfg->index ? strdup(cfg->index) : NULL;
    if (!st->prefix || (cfg->index && !st->index)) {
        snprintf(err, errlen, "out of memory");
        web_static_free(st);
        return NULL;
    }
    memcpy(st->prefix, prefix, pl + 1);
    if (prefix[pl - 1] != '/')
        memcpy(st->prefix + pl++, "/", 2);
    st->prefix_len = pl;
    st->max_age = cfg->max_age;
    st->immutable_max_age = cfg->immutable_max_age;
    st->precompressed = cfg->precompressed;
    if (st->max_age > 0)
        snprintf(st->cc_plain, sizeof st->cc_plain, "public, max-age=%ld", st->max_age);
    else
        snprintf(st->cc_plain, sizeof st->cc_plain, "no-cache");
    if (st->immutable_max_age > 0)
        snprintf(st->cc_immutable, sizeof st->cc_immutable, "public, max-age=%ld, immutable",
                 st->immutable_max_age);
    else
        snprintf(st->cc_immutable, sizeof st->cc_immutable, "no-cache");
    st->beneath = !cfg->no_openat2 && beneath_works(st->rootfd);
    return st;
}

void web_static_free(struct web_static *st)
{
    if (!st)
        return;
    if (st->rootfd >= 0)
        close(st->rootfd);
    free(st->root);
    free(st->prefix);
    free(st->index);
    free(st);
}

void web_static_stats(const struct web_static *st, struct web_static_stats *out)
{
    *out = st->st;
}

int web_static_beneath(const struct web_static *st) { return st->beneath; }

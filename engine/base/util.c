#include "util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

int util_parse_u64(const char *s, size_t n, uint64_t *out)
{
    if (n == 0 || n > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int util_parse_i64(const char *s, size_t n, int64_t *out)
{
    int neg = 0;
    if (n > 0 && s[0] == '-') {
        neg = 1;
        s++;
        n--;
    }
    uint64_t u;
    if (util_parse_u64(s, n, &u) < 0)
        return -1;
    if (neg) {
        if (u > (uint64_t)INT64_MAX + 1)
            return -1;
        *out = u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)u;
    } else {
        if (u > (uint64_t)INT64_MAX)
            return -1;
        *out = (int64_t)u;
    }
    return 0;
}

/* Splits "123.5unit" into number and unit; the number may be fractional. */
static int split_number(const char *s, double *num, const char **unit)
{
    if (!s || !*s)
        return -1;
    const char *p = s;
    while (isdigit((unsigned char)*p) || *p == '.')
        p++;
    if (p == s)
        return -1;
    char tmp[64];
    size_t n = (size_t)(p - s);
    if (n >= sizeof tmp)
        return -1;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    char *end;
    errno = 0;
    double v = strtod(tmp, &end);
    if (errno || *end)
        return -1;
    *num = v;
    *unit = p;
    return 0;
}

int util_parse_size(const char *s, uint64_t *out)
{
    static const struct { const char *u; uint64_t mul; } units[] = {
        {"", 1}, {"b", 1}, {"k", 1000}, {"kb", 1024}, {"m", 1000000}, {"mb", 1048576},
        {"g", 1000000000}, {"gb", 1073741824}, {"t", 1000000000000}, {"tb", 1099511627776},
    };
    double v;
    const char *unit;
    if (split_number(s, &v, &unit) < 0)
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcasecmp(unit, units[i].u) == 0) {
            /* A whole number is exact (a double holds 53 bits); only a
             * fraction such as "1.5gb" goes through floating point. */
            uint64_t whole;
            if (util_parse_u64(s, (size_t)(unit - s), &whole) == 0) {
                if (whole > UINT64_MAX / units[i].mul)
                    return -1;
                *out = whole * units[i].mul;
                return 0;
            }
            double bytes = v * (double)units[i].mul;
            if (bytes >= 1.8e19)
                return -1;
            *out = (uint64_t)bytes;
            return 0;
        }
    return -1;
}

int util_parse_duration(const char *s, double *out)
{
    static const struct { const char *u; double mul; } units[] = {
        {"us", 1e-6}, {"ms", 1e-3}, {"s", 1}, {"m", 60}, {"h", 3600},
    };
    double v;
    const char *unit;
    if (split_number(s, &v, &unit) < 0)
        return -1;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(unit, units[i].u) == 0) {
            *out = v * units[i].mul;
            return 0;
        }
    return -1;
}

int util_split_addr(const char *s, char *host, size_t hostlen, char *port, size_t portlen,
                    char *err, size_t errlen)
{
    const char *p;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') {
            snprintf(err, errlen, "bad address '%s' (want [v6]:port)", s);
            return -1;
        }
        size_t n = (size_t)(close - s - 1);
        if (n >= hostlen)
            goto bad;
        memcpy(host, s + 1, n);
        host[n] = 0;
        p = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon)
            goto bad;
        size_t n = (size_t)(colon - s);
        if (n >= hostlen || hostlen < 10)
            goto bad;
        memcpy(host, s, n);
        host[n] = 0;
        if (n == 0)
            strcpy(host, "127.0.0.1");
        p = colon + 1;
    }
    uint64_t pn;
    size_t pl = strlen(p);
    if (util_parse_u64(p, pl, &pn) < 0 || pn > 65535 || pl >= portlen) {
        snprintf(err, errlen, "bad port in address '%s'", s);
        return -1;
    }
    memcpy(port, p, pl + 1);
    return 0;
bad:
    snprintf(err, errlen, "bad address '%s' (want host:port)", s);
    return -1;
}

static int resolve_addr(const char *s, int flags, struct sockaddr_storage *out, socklen_t *len,
                        char *err, size_t errlen)
{
    char host[256], port[8];
    if (util_split_addr(s, host, sizeof host, port, sizeof port, err, errlen) < 0)
        return -1;
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV | flags;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    if (res->ai_addrlen > sizeof *out) {
        freeaddrinfo(res);
        snprintf(err, errlen, "cannot use address '%s'", s);
        return -1;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

int util_parse_addr(const char *s, struct sockaddr_storage *out, socklen_t *len, char *err,
                    size_t errlen)
{
    return resolve_addr(s, 0, out, len, err, errlen);
}

int util_parse_addr_numeric(const char *s, struct sockaddr_storage *out, socklen_t *len,
                            char *err, size_t errlen)
{
    return resolve_addr(s, AI_NUMERICHOST, out, len, err, errlen);
}

void util_format_addr(const struct sockaddr *sa, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        port = ntohs(in->sin_port);
        snprintf(out, n, "%s:%d", ip, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        port = ntohs(in6->sin6_port);
        /* A link-local address means nothing without its interface. */
        if (in6->sin6_scope_id)
            snprintf(out, n, "[%s%%%u]:%d", ip, (unsigned)in6->sin6_scope_id, port);
        else
            snprintf(out, n, "[%s]:%d", ip, port);
    } else {
        snprintf(out, n, "unix");
    }
}

int64_t util_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t util_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

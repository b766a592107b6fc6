/* util: parsing of the units that topologies and commands use, and clocks. */
#ifndef STRATA_UTIL_H
#define STRATA_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* "64mb", "512k", "1gb", "1048576" -> bytes. 0 ok, -1 bad input. */
int util_parse_size(const char *s, uint64_t *out);
/* "500ms", "1s", "2m", "1h", "250us" -> seconds. 0 ok, -1 bad input. */
int util_parse_duration(const char *s, double *out);
/* "host:port", "[v6]:port", ":port" (loopback) -> sockaddr. 0 ok, -1 bad input
 * with a message in err. Names are resolved with getaddrinfo. */
int util_parse_addr(const char *s, struct sockaddr_storage *out, socklen_t *len, char *err,
                    size_t errlen);
/* The same for IP literals only: never asks a resolver. */
int util_parse_addr_numeric(const char *s, struct sockaddr_storage *out, socklen_t *len,
                            char *err, size_t errlen);
/* Splits "host:port" / "[v6]:port" / ":port" without resolving: the host
 * (":port" gives 127.0.0.1) and the port's digits (0..65535). */
int util_split_addr(const char *s, char *host, size_t hostlen, char *port, size_t portlen,
                    char *err, size_t errlen);
/* Strict integer parsing of a length-delimited string (no spaces, no "+"). */
int util_parse_i64(const char *s, size_t n, int64_t *out);
int util_parse_u64(const char *s, size_t n, uint64_t *out);
/* Formats an address as "ip:port". */
void util_format_addr(const struct sockaddr *sa, char *out, size_t n);

int64_t util_now_ms(void);   /* wall clock, ms since the epoch */
int64_t util_mono_us(void);  /* monotonic, us */

/* Little-endian integers in on-disk and on-wire headers (log records,
 * snapshots, stream frames). */
/* The value of one hex digit, or -1 (percent-escapes, chunk sizes). */
static inline int util_hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static inline void util_put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}
static inline uint32_t util_get_le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void util_put_le64(unsigned char *p, uint64_t v)
{
    util_put_le32(p, (uint32_t)v);
    util_put_le32(p + 4, (uint32_t)(v >> 32));
}
static inline uint64_t util_get_le64(const unsigned char *p)
{
    return util_get_le32(p) | (uint64_t)util_get_le32(p + 4) << 32;
}

#endif

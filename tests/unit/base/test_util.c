#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "tap.h"
#include "util.h"

int main(void)
{
    uint64_t sz;
    ok(util_parse_size("64mb", &sz) == 0 && sz == 64ull << 20, "64mb");
    ok(util_parse_size("512kb", &sz) == 0 && sz == 512ull << 10, "512kb");
    ok(util_parse_size("1GB", &sz) == 0 && sz == 1ull << 30, "1GB, case-insensitive");
    ok(util_parse_size("1000", &sz) == 0 && sz == 1000, "plain bytes");
    /* Found by fuzz_config: whole numbers past 2^53 must not be rounded. */
    ok(util_parse_size("444120040044400400", &sz) == 0 && sz == 444120040044400400ull,
       "a large whole number of bytes is exact");
    ok(util_parse_size("9007199254740993b", &sz) == 0 && sz == 9007199254740993ull,
       "2^53 + 1 bytes is exact");
    ok(util_parse_size("17179869184gb", &sz) == -1, "a size past 2^64 bytes is refused");
    ok(util_parse_size("1.5kb", &sz) == 0 && sz == 1536, "a fraction still works");
    ok(util_parse_size("1k", &sz) == 0 && sz == 1000, "k is decimal like Redis");
    ok(util_parse_size("64xb", &sz) < 0, "unknown unit rejected");
    ok(util_parse_size("", &sz) < 0, "empty rejected");
    ok(util_parse_size("mb", &sz) < 0, "unit without number rejected");
    ok(util_parse_size("-5mb", &sz) < 0, "negative rejected");

    double d;
    ok(util_parse_duration("500ms", &d) == 0 && d == 0.5, "500ms");
    ok(util_parse_duration("1s", &d) == 0 && d == 1.0, "1s");
    ok(util_parse_duration("2m", &d) == 0 && d == 120.0, "2m");
    ok(util_parse_duration("1.5s", &d) == 0 && d == 1.5, "fractional");
    ok(util_parse_duration("10", &d) < 0, "a duration needs a unit");
    ok(util_parse_duration("3days", &d) < 0, "unknown unit");

    int64_t v;
    ok(util_parse_i64("-9223372036854775808", 20, &v) == 0 && v == INT64_MIN, "INT64_MIN");
    ok(util_parse_i64("9223372036854775807", 19, &v) == 0 && v == INT64_MAX, "INT64_MAX");
    ok(util_parse_i64("9223372036854775808", 19, &v) < 0, "overflow rejected");
    ok(util_parse_i64("12a", 3, &v) < 0, "trailing garbage rejected");
    ok(util_parse_i64("+1", 2, &v) < 0, "plus sign rejected");
    ok(util_parse_i64("", 0, &v) < 0, "empty rejected");
    ok(util_parse_i64("-", 1, &v) < 0, "lone minus rejected");

    struct sockaddr_storage ss;
    socklen_t sl;
    char err[128], txt[64];
    ok(util_parse_addr("127.0.0.1:6001", &ss, &sl, err, sizeof err) == 0, "ipv4 address");
    util_format_addr((struct sockaddr *)&ss, txt, sizeof txt);
    is_str(txt, "127.0.0.1:6001", "formatted back");
    ok(util_parse_addr("[::1]:80", &ss, &sl, err, sizeof err) == 0 && ss.ss_family == AF_INET6,
       "ipv6 address");
    ok(util_parse_addr(":8080", &ss, &sl, err, sizeof err) == 0 && ss.ss_family == AF_INET,
       "empty host means loopback");
    ok(util_parse_addr("127.0.0.1", &ss, &sl, err, sizeof err) < 0, "missing port rejected");
    ok(util_parse_addr("127.0.0.1:70000", &ss, &sl, err, sizeof err) < 0, "port out of range");
    ok(strstr(err, "bad port") != NULL, "message names the port");
    ok(util_parse_addr_numeric("localhost:80", &ss, &sl, err, sizeof err) < 0,
       "numeric parsing never resolves a name");
    char host[64], port[8];
    ok(util_split_addr("[::1]:6379", host, sizeof host, port, sizeof port, err, sizeof err) == 0 &&
           strcmp(host, "::1") == 0 && strcmp(port, "6379") == 0,
       "split without resolving");
    /* Found by fuzz_config: a link-local address keeps its interface. */
    ok(util_parse_addr_numeric("[fe80::1%2]:2", &ss, &sl, err, sizeof err) == 0, "scoped v6");
    util_format_addr((struct sockaddr *)&ss, txt, sizeof txt);
    is_str(txt, "[fe80::1%2]:2", "formatted back with its scope");
    return tap_done();
}

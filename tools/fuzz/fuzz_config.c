/* libFuzzer driver: the parsers of the units a topology is written in
 * (sizes, durations) and of the strict integers commands take. No input may
 * crash or overflow (UBSan stops on any undefined behaviour), and what
 * parses must mean what it says: an integer re-formatted parses to itself,
 * a size is a whole number of bytes that a smaller unit cannot exceed.
 * Addresses are split without resolving and parsed as IP literals only (a
 * name would go to the resolver); one that parses must print and parse
 * back to the same address. */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 256)
        return 0;
    char s[257];
    memcpy(s, data, size);
    s[size] = '\0';

    int64_t i;
    if (util_parse_i64(s, size, &i) == 0) {
        char back[32];
        int n = snprintf(back, sizeof back, "%" PRId64, i);
        int64_t again;
        if (util_parse_i64(back, (size_t)n, &again) != 0 || again != i)
            abort();
    }
    uint64_t u;
    if (util_parse_u64(s, size, &u) == 0) {
        char back[32];
        int n = snprintf(back, sizeof back, "%" PRIu64, u);
        uint64_t again;
        if (util_parse_u64(back, (size_t)n, &again) != 0 || again != u)
            abort();
    }
    uint64_t bytes;
    if (util_parse_size(s, &bytes) == 0) {
        /* "<n>" and "<n>b" are n bytes; a unit only multiplies. */
        uint64_t plain;
        if (util_parse_u64(s, size, &plain) == 0 && plain != bytes)
            abort();
    }
    char host[256], port[8], err[256];
    if (util_split_addr(s, host, sizeof host, port, sizeof port, err, sizeof err) == 0) {
        if (strlen(host) >= sizeof host || strlen(port) >= sizeof port)
            abort();
        struct sockaddr_storage a, b;
        socklen_t al, bl;
        if (util_parse_addr_numeric(s, &a, &al, err, sizeof err) == 0) {
            char text[128];
            util_format_addr((struct sockaddr *)&a, text, sizeof text);
            if (util_parse_addr_numeric(text, &b, &bl, err, sizeof err) != 0 || al != bl ||
                memcmp(&a, &b, al) != 0)
                abort();
        }
    }
    double secs;
    if (util_parse_duration(s, &secs) == 0 && (!isfinite(secs) || secs < 0))
        abort();
    return 0;
}

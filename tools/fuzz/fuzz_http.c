/* libFuzzer driver: request and response heads and chunked bodies. A head
 * that parses must lie inside the input; no input may crash or hang. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_parse.h"

static void sink(void *ud, const char *p, size_t n)
{
    (void)ud;
    (void)p;
    (void)n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    struct http_limits lim = {8192, 16384, 100};
    struct http_msg m;
    int status = 0;
    memset(&m, 0, sizeof m);
    ssize_t n = http_parse_request(p, size, &lim, &m, &status);
    if (n > (ssize_t)size)
        abort();
    if (n == -1 && (status < 400 || status > 505))
        abort();
    memset(&m, 0, sizeof m);
    n = http_parse_response(p, size, &lim, &m, size & 1, &status);
    if (n > (ssize_t)size)
        abort();
    struct http_chunked ck;
    http_chunked_init(&ck, 4096);
    int done = 0;
    /* Feed the body in two pieces so the walker's state carries over. */
    size_t half = size / 2;
    ssize_t a = http_chunked_scan(&ck, p, half, &done, sink, NULL);
    if (a > (ssize_t)half)
        abort();
    if (a == (ssize_t)half && !done) {
        ssize_t b = http_chunked_scan(&ck, p + half, size - half, &done, sink, NULL);
        if (b > (ssize_t)(size - half))
            abort();
    }
    return 0;
}

/* libFuzzer driver: the HTTP layer's response reader (the head through
 * http_parse_response, then Content-Length, chunked or close-delimited
 * framing), as the health checks and the command line's client read an
 * answer. The input arrives in two pieces so the reader's state carries
 * over; the first byte picks the split and whether the request was HEAD.
 * Nothing may crash or hang, the reader never claims more bytes than it was
 * given, and a finished body stays within max_body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_client.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t ctl = data[0];
    const char *p = (const char *)data + 1;
    size_t n = size - 1;
    const struct http_limits lim = {.max_request_line = 1024, .max_header_size = 4096,
                                    .max_headers = 32};
    struct http_resp_reader rd;
    http_resp_reader_init(&rd, &lim, 8192, ctl & 1);
    rd.head_only = (ctl & 2) != 0;
    size_t split = n ? (size_t)(ctl >> 2) % (n + 1) : 0;
    ssize_t a = http_resp_reader_feed(&rd, p, split);
    if (a > (ssize_t)split)
        abort();
    if (a >= 0 && rd.state != HRR_DONE) {
        ssize_t b = http_resp_reader_feed(&rd, p + split, n - split);
        if (b > (ssize_t)(n - split))
            abort();
        if (b >= 0 && rd.state != HRR_DONE)
            http_resp_reader_eof(&rd);
    }
    if (rd.state == HRR_DONE && buf_size(&rd.body) > 8192)
        abort();
    if (rd.state == HRR_ERROR && !rd.error[0])
        abort();
    http_resp_reader_free(&rd);
    return 0;
}

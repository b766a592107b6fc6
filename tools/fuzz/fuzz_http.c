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
    if (size < 1)
        return 0;
    /* The first byte seeds the piece sizes; the rest is the stream. */
    unsigned seed = data[0] | 1u;
    const char *p = (const char *)data + 1;
    size--;
    struct http_limits lim = {8192, 16384, 100};
    struct http_msg m;
    int status = 0;
    memset(&m, 0, sizeof m);
    ssize_t n = http_parse_request(p, size, &lim, &m, &status);
    if (n > (ssize_t)size)
        abort();
    if (n == -1 && (status < 400 || status > 505))
        abort();
    /* A head arrives in reads of any size: a prefix of a complete head is
     * never complete, and never wrong where the whole is right. */
    if (n > 0) {
        for (int k = 0; k < 4; k++) {
            size_t cut = (seed = seed * 1103515245u + 12345u) % (size_t)n;
            struct http_msg pm;
            int pst = 0;
            memset(&pm, 0, sizeof pm);
            if (http_parse_request(p, cut, &lim, &pm, &pst) != -2)
                abort();
        }
    }
    memset(&m, 0, sizeof m);
    n = http_parse_response(p, size, &lim, &m, size & 1, &status);
    if (n > (ssize_t)size)
        abort();
    /* A chunked body walked in random-sized pieces, the walker's state
     * carried from one to the next, consumes what it is given or stops. */
    struct http_chunked whole;
    http_chunked_init(&whole, 4096);
    int whole_done = 0;
    ssize_t whole_n = http_chunked_scan(&whole, p, size, &whole_done, sink, NULL);
    struct http_chunked ck;
    http_chunked_init(&ck, 4096);
    int done = 0, bad = 0;
    size_t off = 0;
    while (off < size && !done) {
        size_t piece = 1 + (seed = seed * 1103515245u + 12345u) % 64;
        if (piece > size - off)
            piece = size - off;
        ssize_t a = http_chunked_scan(&ck, p + off, piece, &done, sink, NULL);
        if (a < 0) {
            bad = 1;
            break;
        }
        if ((size_t)a > piece || ((size_t)a < piece && !done))
            abort();
        off += (size_t)a;
    }
    /* ... and agrees with one walk over the whole. */
    if (bad != (whole_n < 0) || (!bad && (done != whole_done || (ssize_t)off != whole_n)))
        abort();
    return 0;
}

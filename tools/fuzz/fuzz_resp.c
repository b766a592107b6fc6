/* libFuzzer driver: the RESP parser must never read out of bounds, loop, or
 * accept a command whose arguments do not lie inside the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy: the parser may write NULs into its buffer. */
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    struct resp_limits lim = {1024 * 1024, 1024, 4096};
    struct resp_parser p;
    resp_parser_init(&p);
    size_t off = 0;
    while (off < size) {
        ssize_t n = resp_parse(&p, buf + off, size - off, &lim);
        if (n <= 0)
            break;
        for (size_t i = 0; i < p.argc; i++)
            if (p.argv[i] < buf + off || p.argv[i] + p.argl[i] > buf + off + (size_t)n)
                abort();
        off += (size_t)n;
        resp_parser_reset(&p);
    }
    resp_parser_free(&p);
    free(buf);
    return 0;
}

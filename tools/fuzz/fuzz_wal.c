/* libFuzzer driver: the log scanner on arbitrary bytes (a damaged disk). It
 * must classify, never crash, and only hand out records inside the data. */
#include <stdint.h>
#include <stdlib.h>

#include "wal.h"

static const uint8_t *base;
static size_t base_len;

static int check(void *arg, const unsigned char *p, size_t n, size_t off, char *err, size_t errlen)
{
    (void)arg;
    (void)off;
    (void)err;
    (void)errlen;
    if (p < base || p + n > base + base_len)
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    base = data;
    base_len = size;
    struct wal_scan out;
    wal_scan_buf(data, size, check, NULL, &out);
    return 0;
}

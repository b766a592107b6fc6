#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "tap.h"

int main(void)
{
    struct buf b;
    buf_init(&b);
    is_int(buf_size(&b), 0, "new buffer is empty");
    ok(buf_append(&b, "hello", 5) == 0, "append");
    is_int(buf_size(&b), 5, "size after append");
    ok(memcmp(buf_head(&b), "hello", 5) == 0, "content");
    buf_consume(&b, 2);
    is_int(buf_size(&b), 3, "consume moves the head");
    ok(memcmp(buf_head(&b), "llo", 3) == 0, "head after consume");
    buf_printf(&b, " %d %s", 42, "x");
    is_int(buf_size(&b), 8, "printf appends");
    ok(memcmp(buf_head(&b), "llo 42 x", 8) == 0, "printf content");
    buf_consume(&b, 8);
    is_int(b.off, 0, "consuming everything rewinds the block");

    /* A long printf goes through the large path. */
    char big[4096];
    memset(big, 'a', sizeof big - 1);
    big[999] = 0;
    buf_printf(&b, "%s!", big);
    is_int(buf_size(&b), 1000, "long printf");
    is_int(buf_head(&b)[999], '!', "long printf tail");

    /* Reserve reclaims the consumed front before growing. */
    buf_reset(&b);
    size_t cap = b.cap;
    ok(cap - 10 <= sizeof big, "test block fits");
    buf_append(&b, big, cap - 10);
    buf_consume(&b, cap - 20);
    char *block = b.data;
    ok(buf_reserve(&b, 100) == 0, "reserve after consume");
    ok(b.data == block && b.cap == cap, "front reclaimed instead of growing");
    is_int(b.off, 0, "offset reset by compaction");
    is_int(buf_size(&b), 10, "unconsumed bytes kept");

    /* Growth to a large size keeps content. */
    buf_reset(&b);
    for (int i = 0; i < 10000; i++)
        buf_append(&b, &i, sizeof i);
    int okc = 1;
    for (int i = 0; i < 10000; i++) {
        int v;
        memcpy(&v, buf_head(&b) + (size_t)i * sizeof v, sizeof v);
        okc &= v == i;
    }
    ok(okc, "40000 bytes appended in pieces are intact");
    buf_consume(&b, buf_size(&b));
    buf_shrink(&b, 1024);
    is_int(b.cap, 0, "shrink releases an idle big block");
    buf_reset(&b);
    buf_json_string(&b, "a\"b\\c\n\x01");
    buf_append(&b, "", 1);
    is_str(buf_head(&b), "\"a\\\"b\\\\c\\u000a\\u0001\"", "JSON string escapes quotes, backslashes, controls");
    buf_free(&b);
    return tap_done();
}

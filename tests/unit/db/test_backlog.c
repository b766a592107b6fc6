/* Unit tests for the replication backlog: it holds exactly the newest cap
 * bytes, addressed by log offset; reads across the ring's seam come in two
 * pieces that join into the original bytes; offsets before its start or
 * past its end are not covered. */
#include <stdlib.h>
#include <string.h>

#include "backlog.h"
#include "tap.h"

/* Reads [off, end) through backlog_peek into out; returns the byte count. */
static size_t read_all(const struct backlog *b, uint64_t off, unsigned char *out)
{
    size_t got = 0;
    const unsigned char *p;
    size_t n;
    while ((n = backlog_peek(b, off + got, &p)) > 0) {
        memcpy(out + got, p, n);
        got += n;
    }
    return got;
}

static void test_fill_and_wrap(void)
{
    struct backlog b;
    ok(backlog_init(&b, 100, 1000) == 0, "init");
    ok(backlog_covers(&b, 1000) && !backlog_covers(&b, 999) && !backlog_covers(&b, 1001),
       "empty: covers only its position");
    unsigned char stream[1000], out[200];
    for (int i = 0; i < 1000; i++)
        stream[i] = (unsigned char)(i * 7 + 3);
    backlog_append(&b, stream, 60);
    is_int(b.start, 1000, "start");
    is_int(b.end, 1060, "end");
    is_int(read_all(&b, 1000, out), 60, "all 60 bytes");
    ok(memcmp(out, stream, 60) == 0, "same bytes");
    backlog_append(&b, stream + 60, 70); /* 130 bytes: the oldest 30 are gone */
    is_int(b.start, 1030, "start moved by the overflow");
    is_int(b.end, 1130, "end");
    ok(!backlog_covers(&b, 1029) && backlog_covers(&b, 1030) && backlog_covers(&b, 1130),
       "coverage is [start, end]");
    const unsigned char *p;
    ok(backlog_peek(&b, 1030, &p) < 100, "a read across the seam comes in pieces");
    is_int(read_all(&b, 1030, out), 100, "the newest 100 bytes");
    ok(memcmp(out, stream + 30, 100) == 0, "joined, they are the stream");
    is_int(read_all(&b, 1100, out), 30, "a read from the middle");
    ok(memcmp(out, stream + 100, 30) == 0, "its bytes");
    is_int(backlog_peek(&b, 1020, &p), 0, "before the start: nothing");
    is_int(backlog_peek(&b, 1130, &p), 0, "at the end: nothing");
    /* Many small appends, checked against the stream each time. */
    uint64_t off = 1130;
    for (int i = 130; i < 1000; i += 13) {
        size_t n = i + 13 <= 1000 ? 13 : (size_t)(1000 - i);
        backlog_append(&b, stream + i, n);
        off += n;
    }
    is_int(b.end, off, "end after many appends");
    is_int(read_all(&b, b.start, out), 100, "full");
    ok(memcmp(out, stream + 900, 100) == 0, "the last 100 bytes of the stream");
    backlog_free(&b);
}

static void test_append_larger_than_cap(void)
{
    struct backlog b;
    backlog_init(&b, 16, 0);
    unsigned char big[50], out[16];
    for (int i = 0; i < 50; i++)
        big[i] = (unsigned char)i;
    backlog_append(&b, big, 50);
    is_int(b.end, 50, "end counts every byte");
    is_int(b.start, 34, "only the last cap bytes are held");
    is_int(read_all(&b, 34, out), 16, "16 bytes");
    ok(memcmp(out, big + 34, 16) == 0, "the newest ones");
    backlog_reset(&b, 500);
    ok(backlog_covers(&b, 500) && !backlog_covers(&b, 50), "reset: a new position, nothing held");
    backlog_free(&b);
}

/* A large backlog starts small and grows as the stream fills it, every
 * byte kept at its offset, up to its size; then it wraps like any ring. */
static void test_grows_to_its_size(void)
{
    struct backlog b;
    size_t max = 1024 * 1024;
    ok(backlog_init(&b, max, 7) == 0, "init 1 MB");
    ok(b.cap < max, "allocates less at first (%zu)", b.cap);
    unsigned char *stream = malloc(3 * max), *out = malloc(max);
    for (size_t i = 0; i < 3 * max; i++)
        stream[i] = (unsigned char)(i * 31 + i / 251);
    size_t sent = 0;
    while (sent < max / 2) { /* odd pieces, across every growth */
        backlog_append(&b, stream + sent, 1000);
        sent += 1000;
    }
    ok(b.cap >= sent && b.cap <= max, "grew to hold it all (%zu)", b.cap);
    is_int(b.start, 7, "nothing dropped while growing");
    is_int(read_all(&b, 7, out), sent, "every byte");
    ok(memcmp(out, stream, sent) == 0, "in order, at their offsets");
    while (sent < 3 * max - 1000) {
        backlog_append(&b, stream + sent, 1000);
        sent += 1000;
    }
    is_int(b.cap, max, "stops at its size");
    is_int(b.end - b.start, max, "and then holds exactly the newest max bytes");
    is_int(read_all(&b, b.start, out), max, "readable across the seam");
    ok(memcmp(out, stream + (b.start - 7), max) == 0, "the newest ones");
    free(stream);
    free(out);
    backlog_free(&b);
}

int main(void)
{
    test_fill_and_wrap();
    test_append_larger_than_cap();
    test_grows_to_its_size();
    return tap_done();
}

/* Unit tests for the replication stream's frames: log records, heartbeats,
 * chunks of keys and the end record round-trip; every single-bit flip of a
 * frame is detected (the frame is refused, never handed on to be applied);
 * a frame cut short asks for more; unknown or malformed control records
 * are refused. */
#include <stdlib.h>
#include <string.h>

#include "db_ops.h"
#include "mpk.h"
#include "repl_proto.h"
#include "tap.h"
#include "wal.h"

static int nkeys;
static char keys[8][32];

static int collect(void *arg, const char *k, size_t kl, const char *v, size_t vl, int64_t x)
{
    (void)arg;
    (void)v;
    (void)x;
    if (nkeys < 8)
        snprintf(keys[nkeys], sizeof keys[nkeys], "%.*s=%.*s@%lld", (int)kl, k, (int)vl, v,
                 (long long)x);
    nkeys++;
    return 0;
}

/* A log record as the db writes it: SET k v, then a deletion. */
static void log_record(struct buf *out)
{
    struct buf pl;
    buf_init(&pl);
    msgpack_packer pk;
    mpk_packer_init(&pk, &pl);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, DB_OP_SET);
    msgpack_pack_bin_with_body(&pk, "k", 1);
    msgpack_pack_bin_with_body(&pk, "v", 1);
    msgpack_pack_int64(&pk, 0);
    db_ops_deleted(&pl, "gone", 4);
    wal_frame_append(out, buf_head(&pl), buf_size(&pl));
    buf_free(&pl);
}

static void test_round_trip(void)
{
    struct buf s;
    buf_init(&s);
    log_record(&s);
    repl_frame_heartbeat(&s, 12345, 1800000000000);
    struct repl_chunk c;
    repl_chunk_init(&c);
    repl_chunk_add(&c, "a", 1, "1", 1, 0);
    repl_chunk_add(&c, "b", 1, "22", 2, 1900000000000);
    repl_chunk_flush(&c, &s);
    is_int(repl_chunk_flush(&c, &s), 0, "an empty chunk adds nothing");
    repl_frame_end(&s, 2, 777);
    repl_chunk_free(&c);

    char err[200];
    struct repl_frame f;
    const unsigned char *p = (const unsigned char *)buf_head(&s);
    size_t n = buf_size(&s), at = 0;
    ssize_t used = repl_frame_next(p, n, &f, err, sizeof err);
    ok(used > 0 && f.kind == REPL_FRAME_LOG, "a log record");
    struct store st;
    store_init(&st, 1, 1000);
    ok(db_ops_apply(&st, f.payload, f.plen, 1000, err, sizeof err) == 0 && st.count == 1,
       "its payload applies as a log record");
    store_free(&st);
    at += (size_t)used;
    used = repl_frame_next(p + at, n - at, &f, err, sizeof err);
    ok(used > 0 && f.kind == REPL_FRAME_HEARTBEAT, "a heartbeat");
    is_int(f.a, 12345, "its offset");
    is_int(f.b, 1800000000000, "its clock");
    at += (size_t)used;
    used = repl_frame_next(p + at, n - at, &f, err, sizeof err);
    ok(used > 0 && f.kind == REPL_FRAME_ENTRIES, "a chunk of keys");
    nkeys = 0;
    ok(repl_entries_each(&f, collect, NULL, err, sizeof err) == 0, "decodes");
    is_int(nkeys, 2, "two keys");
    is_str(keys[0], "a=1@0", "first");
    is_str(keys[1], "b=22@1900000000000", "second");
    at += (size_t)used;
    used = repl_frame_next(p + at, n - at, &f, err, sizeof err);
    ok(used > 0 && f.kind == REPL_FRAME_END, "the end record");
    is_int(f.a, 2, "key count");
    is_int(f.b, 777, "whole at offset");
    at += (size_t)used;
    is_int(at, n, "nothing left");
    /* Cut short anywhere: more is needed. */
    size_t first = (size_t)repl_frame_next(p, n, &f, err, sizeof err);
    int more = 1;
    for (size_t cut = 0; cut < first; cut++)
        if (repl_frame_next(p, cut, &f, err, sizeof err) != -2)
            more = 0;
    ok(more, "a frame cut short asks for more");
    buf_free(&s);
}

/* Every single-bit flip of every frame is refused. */
static void test_every_flip_detected(void)
{
    struct buf s;
    buf_init(&s);
    log_record(&s);
    size_t n = buf_size(&s);
    unsigned char *copy = malloc(n);
    int refused = 0, total = 0;
    char err[200];
    for (size_t i = 0; i < n; i++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy(copy, buf_head(&s), n);
            copy[i] ^= (unsigned char)(1u << bit);
            struct repl_frame f;
            ssize_t r = repl_frame_next(copy, n, &f, err, sizeof err);
            total++;
            /* A flipped length may ask for more bytes (it then never
             * passes its header check): either way nothing is returned. */
            if (r == -1 || r == -2)
                refused++;
        }
    is_int(refused, total, "all %d flips of a log record refused", total);
    buf_reset(&s);
    repl_frame_heartbeat(&s, 1, 2);
    n = buf_size(&s);
    copy = realloc(copy, n);
    refused = total = 0;
    for (size_t i = 0; i < n; i++)
        for (int bit = 0; bit < 8; bit++) {
            memcpy(copy, buf_head(&s), n);
            copy[i] ^= (unsigned char)(1u << bit);
            struct repl_frame f;
            ssize_t r = repl_frame_next(copy, n, &f, err, sizeof err);
            total++;
            if (r < 0)
                refused++;
        }
    is_int(refused, total, "all %d flips of a heartbeat refused", total);
    free(copy);
    buf_free(&s);
}

static void frame_of(struct buf *out, const unsigned char *pl, size_t n)
{
    buf_reset(out);
    wal_frame_append(out, pl, n);
}

static void test_bad_control(void)
{
    struct buf s;
    buf_init(&s);
    char err[200];
    struct repl_frame f;
    const unsigned char unknown[] = {0x93, 0x50, 0x00, 0x00}; /* [80, 0, 0] */
    frame_of(&s, unknown, sizeof unknown);
    ok(repl_frame_next(buf_head(&s), buf_size(&s), &f, err, sizeof err) == -1 &&
           strstr(err, "unknown stream operation 80"),
       "an unknown control operation is refused (%s)", err);
    const unsigned char short_hb[] = {0x92, 0x40, 0x00}; /* [64, 0] */
    frame_of(&s, short_hb, sizeof short_hb);
    ok(repl_frame_next(buf_head(&s), buf_size(&s), &f, err, sizeof err) == -1,
       "a heartbeat without its clock is refused");
    const unsigned char not_array[] = {0x01};
    frame_of(&s, not_array, sizeof not_array);
    ok(repl_frame_next(buf_head(&s), buf_size(&s), &f, err, sizeof err) == -1,
       "a payload that is not an operation is refused");
    const unsigned char bad_chunk[] = {0x93, 0x41, 0xc4, 0x01, 'k', 0xc4, 0x01, 'v'};
    frame_of(&s, bad_chunk, sizeof bad_chunk);
    ok(repl_frame_next(buf_head(&s), buf_size(&s), &f, err, sizeof err) == -1,
       "a chunk whose items are not key, value, expiry triples is refused");
    const unsigned char trunc_chunk[] = {0x94, 0x41, 0xc4, 0x01, 'k', 0xc4, 0x01, 'v', 0xc0};
    frame_of(&s, trunc_chunk, sizeof trunc_chunk);
    ok(repl_frame_next(buf_head(&s), buf_size(&s), &f, err, sizeof err) > 0 &&
           repl_entries_each(&f, collect, NULL, err, sizeof err) == -1,
       "a chunk with a key that does not decode is refused");
    buf_free(&s);
}

int main(void)
{
    test_round_trip();
    test_every_flip_detected();
    test_bad_control();
    return tap_done();
}

/* Unit tests for the change stream's frames as a follower that keeps no
 * data reads them: framing and its checks, the control frames, and which
 * keys a log record touches (every effect kind, several in one record, a
 * flush, and records that do not decode). */
#include <stdlib.h>
#include <string.h>

#include "mpk.h"
#include "stream_frame.h"
#include "tap.h"

struct seen {
    int n, flushes;
    char keys[16][32];
};

static int collect(void *arg, const char *k, size_t kl)
{
    struct seen *s = arg;
    if (!k) {
        s->flushes++;
        return 0;
    }
    if (s->n < 16)
        snprintf(s->keys[s->n], sizeof s->keys[0], "%.*s", (int)kl, k);
    s->n++;
    return 0;
}

static void pack_key(msgpack_packer *pk, const char *k)
{
    msgpack_pack_bin_with_body(pk, k, strlen(k));
}

int main(void)
{
    struct buf rec, framed;
    buf_init(&rec);
    buf_init(&framed);
    msgpack_packer pk;
    mpk_packer_init(&pk, &rec);
    /* MSET-like: two after-states; a deletion; a TTL change. */
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 1);
    pack_key(&pk, "user:1");
    pack_key(&pk, "alice");
    msgpack_pack_int64(&pk, 0);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 1);
    pack_key(&pk, "user:2");
    pack_key(&pk, "bob");
    msgpack_pack_int64(&pk, 1800000000000);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int(&pk, 2);
    pack_key(&pk, "gone");
    msgpack_pack_array(&pk, 3);
    msgpack_pack_int(&pk, 3);
    pack_key(&pk, "ttl");
    msgpack_pack_int64(&pk, 5);

    struct seen s = {0};
    char err[128];
    is_int(stream_record_keys(buf_head(&rec), buf_size(&rec), collect, &s, err, sizeof err), 0,
           "a record of four effects decodes");
    is_int(s.n, 4, "four keys");
    is_str(s.keys[0], "user:1", "an after-state names its key");
    is_str(s.keys[1], "user:2", "the second after-state");
    is_str(s.keys[2], "gone", "a deletion names its key");
    is_str(s.keys[3], "ttl", "a TTL change names its key");
    is_int(s.flushes, 0, "no flush");

    /* Framed, it is a log record of the stream. */
    ok(stream_frame_append(&framed, buf_head(&rec), buf_size(&rec)) == 0, "framed");
    struct stream_frame f;
    ssize_t used = stream_frame_next(buf_head(&framed), buf_size(&framed), &f, err, sizeof err);
    is_int(used, (long long)buf_size(&framed), "the frame spans its header and payload");
    is_int(f.kind, STREAM_FRAME_LOG, "a log record");
    ok(f.plen == buf_size(&rec) && memcmp(f.payload, buf_head(&rec), f.plen) == 0,
       "its payload is the record");
    for (size_t cut = 0; cut < buf_size(&framed); cut++)
        if (stream_frame_next(buf_head(&framed), cut, &f, err, sizeof err) != -2) {
            ok(0, "a frame cut at %zu needs more bytes", cut);
            break;
        }
    ok(1, "every prefix of a frame needs more bytes");
    int caught = 1;
    for (size_t i = 0; i < buf_size(&framed) * 8; i++) {
        unsigned char *p = (unsigned char *)buf_head(&framed);
        p[i / 8] ^= (unsigned char)(1u << (i % 8));
        ssize_t r = stream_frame_next(p, buf_size(&framed), &f, err, sizeof err);
        if (r >= 0)
            caught = 0;
        p[i / 8] ^= (unsigned char)(1u << (i % 8));
    }
    ok(caught, "every flipped bit of a frame is caught");

    /* A flush: every key. */
    buf_reset(&rec);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_int(&pk, 4);
    memset(&s, 0, sizeof s);
    is_int(stream_record_keys(buf_head(&rec), buf_size(&rec), collect, &s, err, sizeof err), 0,
           "a flush decodes");
    is_int(s.flushes, 1, "a flush yields every key");
    is_int(s.n, 0, "and no single key");

    /* Records that do not decode. */
    buf_reset(&rec);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int(&pk, 1);
    pack_key(&pk, "short");
    memset(&s, 0, sizeof s);
    is_int(stream_record_keys(buf_head(&rec), buf_size(&rec), collect, &s, err, sizeof err), -1,
           "an after-state without its value is refused");
    buf_reset(&rec);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int(&pk, 9);
    pack_key(&pk, "x");
    is_int(stream_record_keys(buf_head(&rec), buf_size(&rec), collect, &s, err, sizeof err), -1,
           "an unknown effect is refused");
    ok(strstr(err, "unknown effect 9") != NULL, "and named: %s", err);
    is_int(stream_record_keys("", 0, collect, &s, err, sizeof err), -1, "an empty record");

    /* Control frames. */
    buf_reset(&framed);
    buf_reset(&rec);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_int(&pk, STREAM_OP_END);
    msgpack_pack_uint64(&pk, 10);
    msgpack_pack_uint64(&pk, 4096);
    stream_frame_append(&framed, buf_head(&rec), buf_size(&rec));
    used = stream_frame_next(buf_head(&framed), buf_size(&framed), &f, err, sizeof err);
    ok(used > 0 && f.kind == STREAM_FRAME_END && f.a == 10 && f.b == 4096,
       "the end of a full resync: count and offset");
    buf_reset(&framed);
    buf_reset(&rec);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int(&pk, STREAM_OP_HEARTBEAT);
    msgpack_pack_uint64(&pk, 1);
    stream_frame_append(&framed, buf_head(&rec), buf_size(&rec));
    is_int(stream_frame_next(buf_head(&framed), buf_size(&framed), &f, err, sizeof err), -1,
           "a heartbeat without its time is refused");
    buf_reset(&framed);
    buf_reset(&rec);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_int(&pk, 70);
    stream_frame_append(&framed, buf_head(&rec), buf_size(&rec));
    is_int(stream_frame_next(buf_head(&framed), buf_size(&framed), &f, err, sizeof err), -1,
           "an unknown stream operation is refused");

    buf_free(&rec);
    buf_free(&framed);
    return tap_done();
}

/* libFuzzer driver: the msgpack cursor that reads the db's log records and
 * snapshots. On any bytes it must stay inside the input, and whatever it
 * accepts must be what msgpack-c's own decoder reads from the same bytes
 * (same type, same value, same length consumed). The first input byte picks
 * the sequence of readers to apply. */
#include <msgpack.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpk.h"

/* Elements an array or map header at p declares (a map's pairs count
 * twice), 0 for anything else. */
static uint64_t declared_elements(const unsigned char *p, const unsigned char *end)
{
    size_t left = (size_t)(end - p);
    if ((*p & 0xf0) == 0x90)
        return *p & 0x0f;
    if ((*p & 0xf0) == 0x80)
        return 2u * (*p & 0x0f);
    if ((*p == 0xdc || *p == 0xde) && left >= 3)
        return (uint64_t)(p[1] << 8 | p[2]) * (*p == 0xde ? 2 : 1);
    if ((*p == 0xdd || *p == 0xdf) && left >= 5)
        return ((uint64_t)p[1] << 24 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 8 | p[4]) *
               (*p == 0xdf ? 2 : 1);
    return 0;
}

/* msgpack-c's view of the next item at p: its object and its length. */
static int reference(const unsigned char *p, const unsigned char *end, msgpack_zone *z,
                     msgpack_object *obj, size_t *used)
{
    /* msgpack-c allocates a declared array (at any depth) before reading
     * its elements, so containers are only checked by their header. */
    if ((*p & 0xe0) == 0x80 || (*p >= 0xdc && *p <= 0xdf))
        return -1;
    size_t off = 0;
    msgpack_unpack_return r = msgpack_unpack((const char *)p, (size_t)(end - p), &off, z, obj);
    if (r != MSGPACK_UNPACK_SUCCESS && r != MSGPACK_UNPACK_EXTRA_BYTES)
        return -1;
    *used = off;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned plan = data[0];
    struct mpk m;
    mpk_init(&m, data + 1, size - 1);
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    for (int step = 0; step < 64 && !mpk_done(&m); step++) {
        const unsigned char *at = m.p;
        msgpack_object obj;
        size_t used = 0;
        int ref_ok = reference(at, m.end, &z, &obj, &used) == 0;
        int rc;
        switch ((plan >> ((step % 4) * 2)) & 3) {
        case 0: {
            int64_t v;
            rc = mpk_int(&m, &v);
            if (rc == 0 && (!ref_ok || (size_t)(m.p - at) != used ||
                            (obj.type == MSGPACK_OBJECT_POSITIVE_INTEGER
                                 ? (v < 0 || (uint64_t)v != obj.via.u64)
                                 : obj.type != MSGPACK_OBJECT_NEGATIVE_INTEGER || v != obj.via.i64)))
                abort();
            break;
        }
        case 1: {
            const char *p;
            size_t n;
            rc = mpk_bytes(&m, &p, &n);
            if (rc == 0) {
                if ((const unsigned char *)p < at || (const unsigned char *)p + n > m.end)
                    abort();
                const char *rp = obj.type == MSGPACK_OBJECT_STR ? obj.via.str.ptr : obj.via.bin.ptr;
                size_t rn = obj.type == MSGPACK_OBJECT_STR ? obj.via.str.size : obj.via.bin.size;
                if (!ref_ok || (size_t)(m.p - at) != used ||
                    (obj.type != MSGPACK_OBJECT_STR && obj.type != MSGPACK_OBJECT_BIN) || rn != n ||
                    (n && memcmp(rp, p, n) != 0))
                    abort();
            }
            break;
        }
        case 2: {
            uint32_t n;
            rc = mpk_array(&m, &n);
            /* Only the array's header is consumed: compare the count. */
            if (rc == 0 && (((*at & 0xf0) != 0x90 && *at != 0xdc && *at != 0xdd) ||
                            declared_elements(at, m.end) != n))
                abort();
            break;
        }
        default:
            rc = mpk_nil(&m);
            if (rc == 0 && (!ref_ok || obj.type != MSGPACK_OBJECT_NIL || m.p - at != 1))
                abort();
            break;
        }
        if (m.p < at || m.p > m.end)
            abort();
        if (rc != 0)
            m.p++; /* skip a byte and go on reading from there */
        msgpack_zone_clear(&z);
    }
    msgpack_zone_destroy(&z);
    return 0;
}

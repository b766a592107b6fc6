/* stream_frame: framing, classifying and walking the change stream's frames
 * (see stream_frame.h). */
#include "stream_frame.h"

#include <stdio.h>
#include <string.h>

#include "crc32c.h"
#include "util.h"
#include "mpk.h"

int stream_frame_append(struct buf *out, const void *payload, size_t n)
{
    if (n > STREAM_FRAME_MAX || buf_reserve(out, STREAM_FRAME_HDR + n) < 0)
        return -1;
    unsigned char *h = (unsigned char *)buf_tail(out);
    util_put_le32(h, (uint32_t)n);
    util_put_le32(h + 4, crc32c_mask(crc32c(0, payload, n)));
    util_put_le32(h + 8, crc32c_mask(crc32c(0, h, 8)));
    memcpy(h + STREAM_FRAME_HDR, payload, n);
    buf_commit(out, STREAM_FRAME_HDR + n);
    return 0;
}

ssize_t stream_frame_parse(const void *p, size_t n, const unsigned char **payload, size_t *plen)
{
    const unsigned char *h = p;
    if (n < STREAM_FRAME_HDR)
        return -2;
    if (util_get_le32(h + 8) != crc32c_mask(crc32c(0, h, 8)))
        return -1;
    uint32_t len = util_get_le32(h);
    if (len > STREAM_FRAME_MAX)
        return -1;
    if (n - STREAM_FRAME_HDR < len)
        return -2;
    if (util_get_le32(h + 4) != crc32c_mask(crc32c(0, h + STREAM_FRAME_HDR, len)))
        return -1;
    *payload = h + STREAM_FRAME_HDR;
    *plen = len;
    return (ssize_t)(STREAM_FRAME_HDR + len);
}

ssize_t stream_frame_next(const void *p, size_t n, struct stream_frame *f, char *err,
                          size_t errlen)
{
    const unsigned char *pl;
    size_t plen;
    ssize_t used = stream_frame_parse(p, n, &pl, &plen);
    if (used == -2)
        return -2;
    if (used < 0) {
        snprintf(err, errlen, "a frame fails its checksum");
        return -1;
    }
    struct mpk m;
    uint32_t items;
    int64_t op;
    mpk_init(&m, pl, plen);
    if (mpk_array(&m, &items) < 0 || items < 1 || mpk_int(&m, &op) < 0 || op < 1) {
        snprintf(err, errlen, "a frame does not start with an operation");
        return -1;
    }
    f->payload = pl;
    f->plen = plen;
    f->a = f->b = 0;
    if (op < STREAM_OP_HEARTBEAT) {
        f->kind = STREAM_FRAME_LOG;
        return used;
    }
    switch (op) {
    case STREAM_OP_HEARTBEAT:
    case STREAM_OP_END:
        if (items != 3 || mpk_int(&m, &f->a) < 0 || mpk_int(&m, &f->b) < 0 || !mpk_done(&m) ||
            f->a < 0 || f->b < 0)
            break;
        f->kind = op == STREAM_OP_HEARTBEAT ? STREAM_FRAME_HEARTBEAT : STREAM_FRAME_END;
        return used;
    case STREAM_OP_ENTRIES:
        if ((items - 1) % 3 != 0)
            break;
        f->kind = STREAM_FRAME_ENTRIES;
        return used;
    default:
        snprintf(err, errlen, "unknown stream operation %lld", (long long)op);
        return -1;
    }
    snprintf(err, errlen, "a malformed control frame (operation %lld)", (long long)op);
    return -1;
}

/* The effect codes of a log record (engine/db/db_ops.h). */
enum { EFFECT_SET = 1, EFFECT_DEL = 2, EFFECT_EXPIRE = 3, EFFECT_FLUSH = 4 };

int stream_record_keys(const void *payload, size_t plen, stream_key_fn fn, void *arg, char *err,
                       size_t errlen)
{
    struct mpk m;
    mpk_init(&m, payload, plen);
    if (mpk_done(&m)) {
        snprintf(err, errlen, "an empty record");
        return -1;
    }
    while (!mpk_done(&m)) {
        uint32_t items;
        int64_t op, x;
        const char *k = NULL, *v;
        size_t kl = 0, vl;
        if (mpk_array(&m, &items) < 0 || items < 1 || mpk_int(&m, &op) < 0)
            goto bad;
        switch (op) {
        case EFFECT_SET:
            if (items != 4 || mpk_bytes(&m, &k, &kl) < 0 || mpk_bytes(&m, &v, &vl) < 0 ||
                mpk_int(&m, &x) < 0)
                goto bad;
            break;
        case EFFECT_DEL:
            if (items != 2 || mpk_bytes(&m, &k, &kl) < 0)
                goto bad;
            break;
        case EFFECT_EXPIRE:
            if (items != 3 || mpk_bytes(&m, &k, &kl) < 0 || mpk_int(&m, &x) < 0)
                goto bad;
            break;
        case EFFECT_FLUSH:
            if (items != 1)
                goto bad;
            break;
        default:
            snprintf(err, errlen, "unknown effect %lld in a record", (long long)op);
            return -1;
        }
        int rc = fn(arg, op == EFFECT_FLUSH ? NULL : k, op == EFFECT_FLUSH ? 0 : kl);
        if (rc)
            return rc;
    }
    return 0;
bad:
    snprintf(err, errlen, "a record's effects do not decode");
    return -1;
}

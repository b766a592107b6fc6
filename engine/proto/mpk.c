/* mpk: the msgpack subset the db reads back (integers, byte strings,
 * arrays, nil), decoded in place with every length checked. */
#include "mpk.h"

static uint64_t be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static int need(const struct mpk *m, size_t n) { return (size_t)(m->end - m->p) >= n ? 0 : -1; }

int mpk_array(struct mpk *m, uint32_t *n)
{
    if (need(m, 1) < 0)
        return -1;
    unsigned c = m->p[0];
    if ((c & 0xf0) == 0x90) {
        *n = c & 0x0f;
        m->p++;
        return 0;
    }
    int w = c == 0xdc ? 2 : c == 0xdd ? 4 : 0;
    if (!w || need(m, 1 + (size_t)w) < 0)
        return -1;
    *n = (uint32_t)be(m->p + 1, w);
    m->p += 1 + w;
    return 0;
}

int mpk_int(struct mpk *m, int64_t *v)
{
    if (need(m, 1) < 0)
        return -1;
    unsigned c = m->p[0];
    if (c <= 0x7f) {
        *v = c;
        m->p++;
        return 0;
    }
    if (c >= 0xe0) {
        *v = (int8_t)c;
        m->p++;
        return 0;
    }
    int w, sign;
    switch (c) {
    case 0xcc: w = 1, sign = 0; break;
    case 0xcd: w = 2, sign = 0; break;
    case 0xce: w = 4, sign = 0; break;
    case 0xcf: w = 8, sign = 0; break;
    case 0xd0: w = 1, sign = 1; break;
    case 0xd1: w = 2, sign = 1; break;
    case 0xd2: w = 4, sign = 1; break;
    case 0xd3: w = 8, sign = 1; break;
    default: return -1;
    }
    if (need(m, 1 + (size_t)w) < 0)
        return -1;
    uint64_t u = be(m->p + 1, w);
    if (sign) {
        int shift = 64 - 8 * w;
        *v = shift ? (int64_t)(u << shift) >> shift : (int64_t)u;
    } else {
        if (u > INT64_MAX)
            return -1;
        *v = (int64_t)u;
    }
    m->p += 1 + w;
    return 0;
}

int mpk_bytes(struct mpk *m, const char **p, size_t *n)
{
    if (need(m, 1) < 0)
        return -1;
    unsigned c = m->p[0];
    size_t hdr, len;
    if ((c & 0xe0) == 0xa0) {
        hdr = 1;
        len = c & 0x1f;
    } else {
        int w = (c == 0xc4 || c == 0xd9) ? 1 : (c == 0xc5 || c == 0xda) ? 2
              : (c == 0xc6 || c == 0xdb) ? 4 : 0;
        if (!w || need(m, 1 + (size_t)w) < 0)
            return -1;
        hdr = 1 + (size_t)w;
        len = (size_t)be(m->p + 1, w);
    }
    if (need(m, hdr) < 0 || (size_t)(m->end - m->p - hdr) < len)
        return -1;
    *p = (const char *)m->p + hdr;
    *n = len;
    m->p += hdr + len;
    return 0;
}

int mpk_nil(struct mpk *m)
{
    if (need(m, 1) < 0 || m->p[0] != 0xc0)
        return -1;
    m->p++;
    return 0;
}

static int buf_write_cb(void *data, const char *p, size_t n)
{
    return buf_append(data, p, n);
}

void mpk_packer_init(msgpack_packer *pk, struct buf *out)
{
    msgpack_packer_init(pk, out, buf_write_cb);
}

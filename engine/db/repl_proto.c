/* repl_proto: encoding and checking the replication stream's frames (see
 * repl_proto.h). */
#include "repl_proto.h"

#include <stdio.h>

#include "mpk.h"
#include "stream_frame.h"
#include "wal.h"

ssize_t repl_frame_next(const void *p, size_t n, struct repl_frame *f, char *err, size_t errlen)
{
    /* The frames are the change stream's (engine/stream), which caches
     * follow too: one decoder for both. */
    struct stream_frame sf;
    ssize_t used = stream_frame_next(p, n, &sf, err, errlen);
    if (used < 0)
        return used;
    f->kind = sf.kind;
    f->payload = sf.payload;
    f->plen = sf.plen;
    f->a = sf.a;
    f->b = sf.b;
    return used;
}

static int control(struct buf *out, int op, uint64_t a, uint64_t b)
{
    struct buf pl;
    buf_init(&pl);
    msgpack_packer pk;
    mpk_packer_init(&pk, &pl);
    int rc = msgpack_pack_array(&pk, 3) | msgpack_pack_int(&pk, op) |
             msgpack_pack_uint64(&pk, a) | msgpack_pack_uint64(&pk, b);
    if (rc == 0)
        rc = wal_frame_append(out, buf_head(&pl), buf_size(&pl));
    buf_free(&pl);
    return rc ? -1 : 0;
}

int repl_frame_heartbeat(struct buf *out, uint64_t offset, int64_t now_ms)
{
    return control(out, REPL_OP_HEARTBEAT, offset, (uint64_t)now_ms);
}

int repl_frame_end(struct buf *out, uint64_t count, uint64_t offset)
{
    return control(out, REPL_OP_END, count, offset);
}

void repl_chunk_init(struct repl_chunk *c)
{
    buf_init(&c->body);
    buf_init(&c->scratch);
    c->n = 0;
}

void repl_chunk_free(struct repl_chunk *c)
{
    buf_free(&c->body);
    buf_free(&c->scratch);
}

int repl_chunk_add(struct repl_chunk *c, const void *k, size_t kl, const void *v, size_t vl,
                   int64_t expire_ms)
{
    msgpack_packer pk;
    mpk_packer_init(&pk, &c->body);
    int rc = msgpack_pack_bin_with_body(&pk, k, kl) | msgpack_pack_bin_with_body(&pk, v, vl) |
             msgpack_pack_int64(&pk, expire_ms);
    if (rc)
        return -1;
    c->n++;
    return 0;
}

int repl_chunk_flush(struct repl_chunk *c, struct buf *out)
{
    if (!c->n)
        return 0;
    buf_reset(&c->scratch);
    msgpack_packer pk;
    mpk_packer_init(&pk, &c->scratch);
    int rc = msgpack_pack_array(&pk, 1 + 3 * c->n) | msgpack_pack_int(&pk, REPL_OP_ENTRIES);
    if (rc == 0)
        rc = buf_append(&c->scratch, buf_head(&c->body), buf_size(&c->body));
    if (rc == 0)
        rc = wal_frame_append(out, buf_head(&c->scratch), buf_size(&c->scratch));
    buf_reset(&c->body);
    buf_shrink(&c->body, 2 * REPL_CHUNK_BYTES);
    buf_reset(&c->scratch);
    buf_shrink(&c->scratch, 2 * REPL_CHUNK_BYTES);
    c->n = 0;
    return rc ? -1 : 0;
}

int repl_entries_each(const struct repl_frame *f, repl_entry_fn fn, void *arg, char *err,
                      size_t errlen)
{
    struct mpk m;
    uint32_t items;
    int64_t op;
    mpk_init(&m, f->payload, f->plen);
    if (mpk_array(&m, &items) < 0 || mpk_int(&m, &op) < 0 || op != REPL_OP_ENTRIES)
        goto bad;
    for (uint32_t i = 1; i + 2 < items; i += 3) {
        const char *k, *v;
        size_t kl, vl;
        int64_t x;
        if (mpk_bytes(&m, &k, &kl) < 0 || mpk_bytes(&m, &v, &vl) < 0 || mpk_int(&m, &x) < 0 ||
            x < 0)
            goto bad;
        if (fn(arg, k, kl, v, vl, x) < 0) {
            snprintf(err, errlen, "a key of the full resync could not be stored");
            return -1;
        }
    }
    if (!mpk_done(&m))
        goto bad;
    return 0;
bad:
    snprintf(err, errlen, "a malformed chunk of keys");
    return -1;
}

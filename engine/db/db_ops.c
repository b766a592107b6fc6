/* db_ops: effect records for the db's log, and applying them to a store
 * (format in db_ops.h). */
#include "db_ops.h"

#include <stdio.h>
#include <string.h>

#include "mpk.h"

int db_ops_loggable(const struct kv_command *cmd)
{
    return cmd->first > 0 || (cmd->flags & KV_CMD_FLUSH);
}

/* Appends the after-state of one key. */
static int effect_key(msgpack_packer *pk, struct store *s, const char *k, size_t kl, int ttl_only,
                      int64_t now_ms)
{
    struct store_entry *e = store_find(s, k, kl);
    int rc = 0;
    if (!e || store_is_expired(e, now_ms)) {
        rc |= msgpack_pack_array(pk, 2);
        rc |= msgpack_pack_int(pk, DB_OP_DEL);
        rc |= msgpack_pack_bin_with_body(pk, k, kl);
    } else if (ttl_only) {
        rc |= msgpack_pack_array(pk, 3);
        rc |= msgpack_pack_int(pk, DB_OP_EXPIRE);
        rc |= msgpack_pack_bin_with_body(pk, k, kl);
        rc |= msgpack_pack_int64(pk, store_expire(e));
    } else {
        rc |= msgpack_pack_array(pk, 4);
        rc |= msgpack_pack_int(pk, DB_OP_SET);
        rc |= msgpack_pack_bin_with_body(pk, k, kl);
        rc |= msgpack_pack_bin_with_body(pk, store_val(e), store_vlen(e));
        rc |= msgpack_pack_int64(pk, store_expire(e));
    }
    return rc ? -1 : 0;
}

int db_ops_effects(struct store *s, const struct kv_command *cmd, size_t argc, const char **argv,
                   const size_t *argl, int64_t now_ms, struct buf *out)
{
    if (!db_ops_loggable(cmd))
        return -1;
    msgpack_packer pk;
    mpk_packer_init(&pk, out);
    int rc = 0;
    size_t from, to;
    int step = kv_cmd_key_range(cmd, argc, &from, &to);
    /* Every key the command may have touched: over-inclusion is harmless
     * (a key's unchanged state is still its true state). */
    for (size_t i = from; step > 0 && i <= to && rc == 0; i += (size_t)step)
        rc = effect_key(&pk, s, argv[i], argl[i], (cmd->flags & KV_CMD_TTL) != 0, now_ms);
    /* Only a flush that happened: FLUSHDB with a bad argument changes
     * nothing and must log nothing. */
    if ((cmd->flags & KV_CMD_FLUSH) && s->count == 0) {
        rc |= msgpack_pack_array(&pk, 1);
        rc |= msgpack_pack_int(&pk, DB_OP_FLUSH);
    }
    return rc ? -1 : 0;
}

/* Puts key = val with expire, replacing what is there. A time already
 * past is kept as it is (see db_ops.h: replay is verbatim). */
static int put(struct store *s, const char *k, size_t kl, const char *v, size_t vl, int64_t x,
               int64_t now_ms)
{
    struct store_entry *e = store_find(s, k, kl);
    if (!e)
        return store_insert(s, k, kl, v, vl, x, now_ms) ? 0 : -1;
    struct store_entry *n = store_set_value(s, e, v, vl);
    if (!n)
        return -1;
    return store_set_expire(s, n, x) ? 0 : -1;
}

int db_ops_apply(struct store *s, const void *p, size_t n, int64_t now_ms, char *err,
                 size_t errlen)
{
    struct mpk m;
    mpk_init(&m, p, n);
    while (!mpk_done(&m)) {
        uint32_t items;
        int64_t op, x = 0;
        const char *k = NULL, *v = NULL;
        size_t kl = 0, vl = 0;
        if (mpk_array(&m, &items) < 0 || items < 1 || mpk_int(&m, &op) < 0)
            goto bad;
        switch (op) {
        case DB_OP_SET:
            if (items != 4 || mpk_bytes(&m, &k, &kl) < 0 || mpk_bytes(&m, &v, &vl) < 0 ||
                mpk_int(&m, &x) < 0)
                goto bad;
            if (put(s, k, kl, v, vl, x, now_ms) < 0)
                goto oom;
            break;
        case DB_OP_DEL:
            if (items != 2 || mpk_bytes(&m, &k, &kl) < 0)
                goto bad;
            {
                struct store_entry *e = store_find(s, k, kl);
                if (e)
                    store_delete(s, e);
            }
            break;
        case DB_OP_EXPIRE:
            if (items != 3 || mpk_bytes(&m, &k, &kl) < 0 || mpk_int(&m, &x) < 0)
                goto bad;
            {
                struct store_entry *e = store_find(s, k, kl);
                if (e && !store_set_expire(s, e, x))
                    goto oom;
            }
            break;
        case DB_OP_FLUSH:
            if (items != 1)
                goto bad;
            store_clear(s);
            break;
        default:
            goto bad;
        }
    }
    return 0;
bad:
    snprintf(err, errlen, "malformed effect at byte %zu of the record",
             (size_t)(m.p - (const unsigned char *)p));
    return -1;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

int db_ops_deleted(struct buf *out, const void *key, size_t klen)
{
    msgpack_packer pk;
    mpk_packer_init(&pk, out);
    int rc = msgpack_pack_array(&pk, 2) | msgpack_pack_int(&pk, DB_OP_DEL) |
             msgpack_pack_bin_with_body(&pk, key, klen);
    return rc ? -1 : 0;
}

int db_ops_load(struct store *s, const char *key, size_t klen, const char *val, size_t vlen,
                int64_t expire_ms, int64_t now_ms, char *err, size_t errlen)
{
    if (store_find(s, key, klen)) {
        snprintf(err, errlen, "key appears twice in the snapshot");
        return -1;
    }
    if (!store_insert(s, key, klen, val, vlen, expire_ms, now_ms)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

struct dump_ctx {
    struct snapshot_writer *w;
    int64_t now;
    int rc;
};

static void dump_one(void *arg, struct store_entry *e)
{
    struct dump_ctx *d = arg;
    if (d->rc < 0)
        return;
    d->rc = snapshot_writer_add(d->w, store_key(e), store_klen(e), store_val(e), store_vlen(e),
                                store_expire(e));
}

int db_ops_dump(struct store *s, struct snapshot_writer *w, int64_t now_ms)
{
    struct dump_ctx d = {w, now_ms, 0};
    store_foreach(s, dump_one, &d);
    return d.rc;
}

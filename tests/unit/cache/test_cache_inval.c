/* cache_inval: what a cache deletes for a log record of the db it follows
 * -- the keys themselves, or what keys() maps them to; the identity when
 * keys() fails or returns something else; everything for a flush. */
#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cache.h"
#include "cache_inval.h"
#include "mpk.h"
#include "tap.h"

static char dir[] = "/tmp/test_cache_inval.XXXXXX";
static struct cache c;
static const int64_t now = 1800000000000;

static void put(const char *k)
{
    store_insert(&c.ks.store, k, strlen(k), "v", 1, 0, now);
}

static int has(const char *k)
{
    return store_find(&c.ks.store, k, strlen(k)) != NULL;
}

/* A record setting (or, with del, deleting) each key. */
static void record(struct cache_inval *ci, int del, const char *k1, const char *k2)
{
    struct buf b;
    buf_init(&b);
    msgpack_packer pk;
    mpk_packer_init(&pk, &b);
    const char *ks[] = {k1, k2};
    for (int i = 0; i < 2 && ks[i]; i++) {
        msgpack_pack_array(&pk, del ? 2 : 4);
        msgpack_pack_int(&pk, del ? 2 : 1);
        msgpack_pack_bin_with_body(&pk, ks[i], strlen(ks[i]));
        if (!del) {
            msgpack_pack_bin_with_body(&pk, "new", 3);
            msgpack_pack_int64(&pk, 0);
        }
    }
    cache_inval_record(ci, (const unsigned char *)buf_head(&b), buf_size(&b));
    buf_free(&b);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    char path[256];
    snprintf(path, sizeof path, "%s/keys.lua", dir);
    FILE *f = fopen(path, "w");
    fputs("local M = {}\n"
          "function M.keys(k)\n"
          "  if k == 'boom' then error('cannot map') end\n"
          "  if k == 'odd' then return { 'x', 7 } end\n"
          "  if k == 'spin' then while true do end end\n"
          "  return { k, k .. ':profile' }\n"
          "end\n"
          "return M\n",
          f);
    fclose(f);
    cache_init(&c, 1, now);
    struct cache_inval ci;
    struct cache_inval_cfg cfg = {.upstream = "127.0.0.1:1", .upstream_node = "db1",
                                  .timeout_s = 1};
    char err[512];
    struct ev_loop *loop = ev_default_loop(0);
    ok(cache_inval_init(&ci, &c, loop, "c1", "127.0.0.1:2", &cfg, err, sizeof err) == 0,
       "identity follower prepared");
    put("a");
    put("b");
    put("c");
    record(&ci, 0, "a", "b");
    ok(!has("a") && !has("b") && has("c"), "an after-state deletes its key, others stay");
    record(&ci, 1, "c", NULL);
    ok(!has("c"), "a deletion deletes its key");
    is_int(ci.invalidations, 3, "three invalidations");
    record(&ci, 1, "missing", NULL);
    is_int(ci.invalidations, 3, "a key the cache does not hold counts nothing");
    put("a");
    put("b");
    struct buf b;
    buf_init(&b);
    msgpack_packer pk;
    mpk_packer_init(&pk, &b);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_int(&pk, 4);
    cache_inval_record(&ci, (const unsigned char *)buf_head(&b), buf_size(&b));
    is_int(c.ks.store.count, 0, "a flush empties the cache");
    is_int(ci.flushes, 1, "one flush");
    cache_inval_record(&ci, (const unsigned char *)"\x91\x09", 2);
    is_int(ci.flushes, 2, "a record that does not decode flushes (nothing can be proven)");
    buf_free(&b);

    ok(cache_inval_set_keys(&ci, path, err, sizeof err) == 0, "keys() module loaded: %s", err);
    put("user:1");
    put("user:1:profile");
    put("user:2");
    record(&ci, 0, "user:1", NULL);
    ok(!has("user:1") && !has("user:1:profile") && has("user:2"), "keys() maps to two keys");
    put("boom");
    put("boom:profile");
    record(&ci, 0, "boom", NULL);
    ok(!has("boom") && has("boom:profile"), "an error falls back to the identity");
    put("odd");
    put("x");
    record(&ci, 0, "odd", NULL);
    ok(!has("odd") && has("x"), "a list with a non-string falls back whole to the identity");
    is_int(ci.keys_errors, 2, "two fallbacks counted");
    put("spin");
    put("spin:profile");
    record(&ci, 0, "spin", NULL);
    ok(!has("spin") && has("spin:profile"), "a keys() past its budget falls back");
    put("user:3");
    put("user:3:profile");
    record(&ci, 0, "user:3", NULL);
    ok(!has("user:3") && has("user:3:profile"), "and the identity alone serves while it rests");

    snprintf(path, sizeof path, "%s/bad.lua", dir);
    f = fopen(path, "w");
    fputs("return { keys = 1 }\n", f);
    fclose(f);
    ok(cache_inval_set_keys(&ci, path, err, sizeof err) < 0 && strstr(err, "bad.lua") != NULL,
       "a module without keys() is refused: %s", err);
    ok(strstr(ci.keys_path, "keys.lua") != NULL, "the running module stays");
    ok(cache_inval_set_keys(&ci, "", err, sizeof err) == 0 && !ci.keys, "back to the identity");

    cache_inval_free(&ci);
    cache_free(&c);
    unlink(path);
    snprintf(path, sizeof path, "%s/keys.lua", dir);
    unlink(path);
    rmdir(dir);
    return tap_done();
}

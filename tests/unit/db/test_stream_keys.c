/* The db's logged effects read as a change-stream follower reads them:
 * for each write command, the keys stream_record_keys finds in the record
 * db_ops_effects wrote are exactly the keys the command touched (what a
 * cache that invalidates from the db deletes). */
#include <stdarg.h>
#include <string.h>

#include "db_ops.h"
#include "keyspace.h"
#include "kv_cmd.h"
#include "stream_frame.h"
#include "tap.h"

static struct keyspace ks;
static struct kv_session sess = {.authed = 1};
static struct buf out, effects;
static const int64_t now = 1800000000000;
static char got[512];

static int add(void *arg, const char *k, size_t kl)
{
    (void)arg;
    size_t n = strlen(got);
    snprintf(got + n, sizeof got - n, "%s%.*s", n ? " " : "", k ? (int)kl : 1, k ? k : "*");
    return 0;
}

/* Runs a write command and returns the keys its record names. */
static const char *keys_of(const char *first, ...)
{
    const char *argv[16];
    size_t argl[16], argc = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 16; a = va_arg(ap, const char *)) {
        argv[argc] = a;
        argl[argc++] = strlen(a);
    }
    va_end(ap);
    buf_reset(&out);
    struct kv_req r = {.ks = &ks, .sess = &sess, .out = &out, .argc = argc, .argv = argv,
                       .argl = argl, .now = now};
    kv_exec(&r);
    const struct kv_command *cmd = kv_cmd_find(&ks, argv[0], argl[0]);
    buf_reset(&effects);
    got[0] = 0;
    if (!cmd || db_ops_effects(&ks.store, cmd, argc, argv, argl, now, &effects) < 0)
        return "(not logged)";
    static char err[128];
    if (stream_record_keys(buf_head(&effects), buf_size(&effects), add, NULL, err, sizeof err) < 0)
        return err;
    return got;
}

int main(void)
{
    keyspace_init(&ks, 1, now);
    buf_init(&out);
    buf_init(&effects);
    is_str(keys_of("SET", "user:1", "a", NULL), "user:1", "SET");
    is_str(keys_of("MSET", "a", "1", "b", "2", NULL), "a b", "MSET: every key");
    is_str(keys_of("INCR", "n", NULL), "n", "INCR");
    is_str(keys_of("APPEND", "a", "x", NULL), "a", "APPEND");
    is_str(keys_of("EXPIRE", "a", "100", NULL), "a", "EXPIRE: a TTL change");
    is_str(keys_of("RENAME", "a", "c", NULL), "a c", "RENAME: the old and the new name");
    is_str(keys_of("DEL", "b", "c", NULL), "b c", "DEL");
    is_str(keys_of("SETEX", "t", "10", "v", NULL), "t", "SETEX");
    is_str(keys_of("FLUSHALL", NULL), "*", "FLUSHALL: every key");
    keyspace_free(&ks);
    buf_free(&out);
    buf_free(&effects);
    return tap_done();
}

/* The command table: every command's arity, write flag and key positions
 * are declared once and consistently; lookups are case-insensitive and
 * find a shell's commands after the keyspace's; the key range a command
 * touches is computed from the table; COMMAND prints what the table says. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "kv_cmd.h"
#include "tap.h"

static void test_table_consistent(void)
{
    size_t n;
    const struct kv_command *t = kv_cmd_table(&n);
    ok(n >= 50, "the table has the keyspace's commands (%zu)", n);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        const struct kv_command *c = &t[i];
        const char *why = NULL;
        for (const char *p = c->name; *p; p++)
            if (*p != tolower((unsigned char)*p))
                why = "name not lower case";
        if (!c->fn)
            why = "no function";
        else if (c->arity == 0)
            why = "arity 0";
        else if (c->first < 0 || c->first > 1)
            why = "first key not 0 or 1";
        else if (c->first == 0 && (c->last || c->step))
            why = "keyless with a key range";
        else if (c->first > 0 && (c->step < 1 || c->last == 0))
            why = "key range without step or end";
        else if ((c->flags & (KV_CMD_TTL | KV_CMD_FLUSH | KV_CMD_DENYOOM)) && !kv_cmd_is_write(c))
            why = "TTL/FLUSH/DENYOOM on a command that does not write";
        else if (kv_cmd_is_write(c) && (c->flags & KV_CMD_READONLY))
            why = "both write and readonly";
        else if (kv_cmd_is_write(c) && c->first == 0 && !(c->flags & KV_CMD_FLUSH))
            why = "a write that names no keys";
        else if (c->first > 0 && !kv_cmd_is_write(c) && !(c->flags & KV_CMD_READONLY))
            why = "reads keys but is not readonly";
        else if (c->first > 0 && c->arity > 0 && c->arity <= c->first)
            why = "arity leaves no room for its first key";
        if (why) {
            printf("# %s: %s\n", c->name, why);
            bad++;
        }
    }
    is_int(bad, 0, "every command's flags, arity and key positions agree");
}

static void test_known_specs(void)
{
    struct keyspace ks;
    keyspace_init(&ks, 1, 0);
    static const struct {
        const char *name;
        int arity, write, first, last, step;
        unsigned extra;
    } want[] = {
        {"get", 2, 0, 1, 1, 1, KV_CMD_READONLY},
        {"set", -3, 1, 1, 1, 1, KV_CMD_DENYOOM},
        {"setex", 4, 1, 1, 1, 1, KV_CMD_DENYOOM},
        {"getdel", 2, 1, 1, 1, 1, 0},
        {"getex", -2, 1, 1, 1, 1, 0},
        {"mget", -2, 0, 1, -1, 1, KV_CMD_READONLY},
        {"mset", -3, 1, 1, -1, 2, KV_CMD_DENYOOM},
        {"msetnx", -3, 1, 1, -1, 2, KV_CMD_DENYOOM},
        {"del", -2, 1, 1, -1, 1, 0},
        {"unlink", -2, 1, 1, -1, 1, 0},
        {"exists", -2, 0, 1, -1, 1, KV_CMD_READONLY},
        {"incrbyfloat", 3, 1, 1, 1, 1, KV_CMD_DENYOOM},
        {"setrange", 4, 1, 1, 1, 1, KV_CMD_DENYOOM},
        {"expire", -3, 1, 1, 1, 1, KV_CMD_TTL},
        {"pexpireat", -3, 1, 1, 1, 1, KV_CMD_TTL},
        {"persist", 2, 1, 1, 1, 1, KV_CMD_TTL},
        {"ttl", 2, 0, 1, 1, 1, KV_CMD_READONLY},
        {"rename", 3, 1, 1, 2, 1, 0},
        {"renamenx", 3, 1, 1, 2, 1, 0},
        {"flushdb", -1, 1, 0, 0, 0, KV_CMD_FLUSH},
        {"flushall", -1, 1, 0, 0, 0, KV_CMD_FLUSH},
        {"keys", 2, 0, 0, 0, 0, KV_CMD_READONLY},
        {"scan", -2, 0, 0, 0, 0, KV_CMD_READONLY},
        {"ping", -1, 0, 0, 0, 0, 0},
        {"auth", -2, 0, 0, 0, 0, KV_CMD_NOAUTH},
        {"hello", -1, 0, 0, 0, 0, KV_CMD_NOAUTH},
        {"quit", -1, 0, 0, 0, 0, KV_CMD_NOAUTH},
        {"config", -2, 0, 0, 0, 0, KV_CMD_ADMIN},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const struct kv_command *c = kv_cmd_find(&ks, want[i].name, strlen(want[i].name));
        ok(c && c->arity == want[i].arity && kv_cmd_is_write(c) == want[i].write &&
               c->first == want[i].first && c->last == want[i].last && c->step == want[i].step &&
               (c->flags & want[i].extra) == want[i].extra,
           "%s: arity %d, %s, keys %d %d %d", want[i].name, want[i].arity,
           want[i].write ? "write" : "no write", want[i].first, want[i].last, want[i].step);
    }
    /* Only the expiry family writes TTLs alone; only flushes clear. */
    size_t n;
    const struct kv_command *t = kv_cmd_table(&n);
    int ttl = 0, flush = 0;
    for (size_t i = 0; i < n; i++) {
        ttl += (t[i].flags & KV_CMD_TTL) != 0;
        flush += (t[i].flags & KV_CMD_FLUSH) != 0;
    }
    is_int(ttl, 5, "five TTL-only writes (EXPIRE, PEXPIRE, EXPIREAT, PEXPIREAT, PERSIST)");
    is_int(flush, 2, "two flushes");
    keyspace_free(&ks);
}

static void test_find(void)
{
    struct keyspace ks;
    keyspace_init(&ks, 1, 0);
    const struct kv_command *get = kv_cmd_find(&ks, "GeT", 3);
    ok(get && strcmp(get->name, "get") == 0, "lookups ignore case");
    ok(kv_cmd_find(&ks, "nosuch", 6) == NULL, "unknown: NULL");
    ok(kv_cmd_find(&ks, "", 0) == NULL, "empty: NULL");
    ok(kv_cmd_find(&ks, "getxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 40) == NULL, "too long: NULL");
    ok(kv_cmd_find(&ks, "save", 4) == NULL, "SAVE is not the keyspace's");
    static const struct kv_command mine[] = {{"save", NULL, -1, KV_CMD_ADMIN, 0, 0, 0}};
    static const struct kv_hooks hooks = {.commands = mine, .ncommands = 1};
    keyspace_set_hooks(&ks, &hooks, NULL);
    ok(kv_cmd_find(&ks, "SAVE", 4) == &mine[0], "a shell's command is found after the table");
    ok(kv_cmd_find(&ks, "get", 3) == get, "the keyspace's still win");
    keyspace_free(&ks);
}

static void test_key_range(void)
{
    struct keyspace ks;
    keyspace_init(&ks, 1, 0);
    size_t from = 99, to = 99;
    int step = kv_cmd_key_range(kv_cmd_find(&ks, "mset", 4), 5, &from, &to);
    ok(step == 2 && from == 1 && to == 4, "MSET k1 v1 k2 v2: keys 1 and 3 (from %zu to %zu)", from,
       to);
    step = kv_cmd_key_range(kv_cmd_find(&ks, "set", 3), 5, &from, &to);
    ok(step == 1 && from == 1 && to == 1, "SET k v EX 10: only the key");
    step = kv_cmd_key_range(kv_cmd_find(&ks, "del", 3), 4, &from, &to);
    ok(step == 1 && from == 1 && to == 3, "DEL a b c: three keys");
    step = kv_cmd_key_range(kv_cmd_find(&ks, "rename", 6), 3, &from, &to);
    ok(step == 1 && from == 1 && to == 2, "RENAME a b: both");
    ok(kv_cmd_key_range(kv_cmd_find(&ks, "ping", 4), 1, &from, &to) == 0, "PING: no keys");
    ok(kv_cmd_key_range(kv_cmd_find(&ks, "flushall", 8), 1, &from, &to) == 0,
       "FLUSHALL: no keys (the flag says what it does)");
    ok(kv_cmd_key_range(kv_cmd_find(&ks, "get", 3), 1, &from, &to) == 0,
       "a short argument list names no key");
    keyspace_free(&ks);
}

static const char *run(struct keyspace *ks, struct buf *out, const char *line)
{
    char copy[256];
    const char *argv[16];
    size_t argl[16], argc = 0;
    snprintf(copy, sizeof copy, "%s", line);
    for (char *t = strtok(copy, " "); t && argc < 16; t = strtok(NULL, " ")) {
        argv[argc] = t;
        argl[argc++] = strlen(t);
    }
    struct kv_session sess = {.authed = 1};
    buf_reset(out);
    struct kv_req r = {ks, &sess, out, argc, argv, argl, 0, NULL};
    kv_exec(&r);
    static char reply[8192];
    size_t n = buf_size(out) < sizeof reply - 1 ? buf_size(out) : sizeof reply - 1;
    memcpy(reply, buf_head(out), n);
    reply[n] = 0;
    return reply;
}

static void test_command_reply(void)
{
    struct keyspace ks;
    struct buf out;
    keyspace_init(&ks, 1, 0);
    buf_init(&out);
    is_str(run(&ks, &out, "COMMAND INFO get"),
           "*1\r\n*10\r\n$3\r\nget\r\n:2\r\n*1\r\n+readonly\r\n:1\r\n:1\r\n:1\r\n*0\r\n*0\r\n*0\r\n*0\r\n",
           "COMMAND INFO get");
    is_str(run(&ks, &out, "COMMAND INFO mset"),
           "*1\r\n*10\r\n$4\r\nmset\r\n:-3\r\n*1\r\n+write\r\n:1\r\n:-1\r\n:2\r\n*0\r\n*0\r\n*0\r\n*0\r\n",
           "COMMAND INFO mset: key positions from the table");
    is_str(run(&ks, &out, "COMMAND INFO nosuch"), "*1\r\n*-1\r\n", "COMMAND INFO unknown");
    size_t n;
    kv_cmd_table(&n);
    char want[32];
    snprintf(want, sizeof want, ":%zu\r\n", n);
    is_str(run(&ks, &out, "COMMAND COUNT"), want, "COMMAND COUNT");
    static const struct kv_command mine[] = {{"save", NULL, -1, KV_CMD_ADMIN, 0, 0, 0}};
    static const struct kv_hooks hooks = {.commands = mine, .ncommands = 1};
    keyspace_set_hooks(&ks, &hooks, NULL);
    snprintf(want, sizeof want, ":%zu\r\n", n + 1);
    is_str(run(&ks, &out, "COMMAND COUNT"), want, "COMMAND COUNT includes the shell's");
    buf_free(&out);
    keyspace_free(&ks);
}

int main(void)
{
    test_table_consistent();
    test_known_specs();
    test_find();
    test_key_range();
    test_command_reply();
    return tap_done();
}

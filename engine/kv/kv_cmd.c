/* kv_cmd: the command table, dispatch, and COMMAND (see kv_cmd.h). */
#include "kv_cmd.h"

#include <ctype.h>
#include <string.h>

#include "kv_commands.h"

#define ERR_READONLY "READONLY You can't write against a read only replica."

/* Flag sets, to keep the table readable. */
#define W KV_CMD_WRITE
#define WM (KV_CMD_WRITE | KV_CMD_DENYOOM)
#define WT (KV_CMD_WRITE | KV_CMD_TTL)
#define R KV_CMD_READONLY
/* Key positions. */
#define NOKEYS 0, 0, 0
#define KEY1 1, 1, 1
#define KEYS_ALL 1, -1, 1
#define KEYS_PAIRS 1, -1, 2
#define KEYS_TWO 1, 2, 1

static const struct kv_command commands[] = {
    {"ping", kv_do_ping, -1, 0, NOKEYS},
    {"echo", kv_do_echo, 2, 0, NOKEYS},
    {"quit", kv_do_quit, -1, KV_CMD_NOAUTH, NOKEYS},
    {"select", kv_do_select, 2, 0, NOKEYS},
    {"time", kv_do_time, 1, 0, NOKEYS},
    {"hello", kv_do_hello, -1, KV_CMD_NOAUTH, NOKEYS},
    {"auth", kv_do_auth, -2, KV_CMD_NOAUTH, NOKEYS},
    {"command", kv_do_command, -1, 0, NOKEYS},
    {"client", kv_do_client, -2, 0, NOKEYS},
    {"config", kv_do_config, -2, KV_CMD_ADMIN, NOKEYS},
    {"info", kv_do_info, -1, 0, NOKEYS},
    {"debug", kv_do_debug, -2, KV_CMD_ADMIN | KV_CMD_DEBUG, NOKEYS},
    {"get", kv_do_get, 2, R, KEY1},
    {"set", kv_do_set, -3, WM, KEY1},
    {"setnx", kv_do_setnx, 3, WM, KEY1},
    {"setex", kv_do_setex, 4, WM, KEY1},
    {"psetex", kv_do_psetex, 4, WM, KEY1},
    {"getset", kv_do_getset, 3, WM, KEY1},
    {"getdel", kv_do_getdel, 2, W, KEY1},
    {"getex", kv_do_getex, -2, W, KEY1},
    {"mget", kv_do_mget, -2, R, KEYS_ALL},
    {"mset", kv_do_mset, -3, WM, KEYS_PAIRS},
    {"msetnx", kv_do_msetnx, -3, WM, KEYS_PAIRS},
    {"del", kv_do_del, -2, W, KEYS_ALL},
    {"unlink", kv_do_del, -2, W, KEYS_ALL},
    {"exists", kv_do_exists, -2, R, KEYS_ALL},
    {"touch", kv_do_touch, -2, R, KEYS_ALL},
    {"incr", kv_do_incr, 2, WM, KEY1},
    {"decr", kv_do_decr, 2, WM, KEY1},
    {"incrby", kv_do_incrby, 3, WM, KEY1},
    {"decrby", kv_do_decrby, 3, WM, KEY1},
    {"incrbyfloat", kv_do_incrbyfloat, 3, WM, KEY1},
    {"append", kv_do_append, 3, WM, KEY1},
    {"strlen", kv_do_strlen, 2, R, KEY1},
    {"getrange", kv_do_getrange, 4, R, KEY1},
    {"substr", kv_do_getrange, 4, R, KEY1},
    {"setrange", kv_do_setrange, 4, WM, KEY1},
    {"expire", kv_do_expire, -3, WT, KEY1},
    {"pexpire", kv_do_pexpire, -3, WT, KEY1},
    {"expireat", kv_do_expireat, -3, WT, KEY1},
    {"pexpireat", kv_do_pexpireat, -3, WT, KEY1},
    {"ttl", kv_do_ttl, 2, R, KEY1},
    {"pttl", kv_do_pttl, 2, R, KEY1},
    {"expiretime", kv_do_expiretime, 2, R, KEY1},
    {"pexpiretime", kv_do_pexpiretime, 2, R, KEY1},
    {"persist", kv_do_persist, 2, WT, KEY1},
    {"type", kv_do_type, 2, R, KEY1},
    {"keys", kv_do_keys, 2, R, NOKEYS},
    {"scan", kv_do_scan, -2, R, NOKEYS},
    {"randomkey", kv_do_randomkey, 1, R, NOKEYS},
    {"rename", kv_do_rename, 3, W, KEYS_TWO},
    {"renamenx", kv_do_renamenx, 3, W, KEYS_TWO},
    {"dbsize", kv_do_dbsize, 1, R, NOKEYS},
    {"flushdb", kv_do_flushdb, -1, W | KV_CMD_FLUSH, NOKEYS},
    {"flushall", kv_do_flushdb, -1, W | KV_CMD_FLUSH, NOKEYS},
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])
#define CMD_SLOTS 256

/* Open-addressed index by name, built before main and constant afterwards. */
static const struct kv_command *cmd_index[CMD_SLOTS];

static unsigned name_hash(const char *s, size_t n)
{
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

__attribute__((constructor)) static void cmd_index_build(void)
{
    for (size_t i = 0; i < NCOMMANDS; i++) {
        unsigned h = name_hash(commands[i].name, strlen(commands[i].name)) % CMD_SLOTS;
        while (cmd_index[h])
            h = (h + 1) % CMD_SLOTS;
        cmd_index[h] = &commands[i];
    }
}

const struct kv_command *kv_cmd_table(size_t *n)
{
    *n = NCOMMANDS;
    return commands;
}

const struct kv_command *kv_cmd_find(const struct keyspace *ks, const char *name, size_t n)
{
    char low[32];
    if (n == 0 || n >= sizeof low)
        return NULL;
    for (size_t i = 0; i < n; i++)
        low[i] = (char)tolower((unsigned char)name[i]);
    for (unsigned h = name_hash(low, n) % CMD_SLOTS;; h = (h + 1) % CMD_SLOTS) {
        const struct kv_command *c = cmd_index[h];
        if (!c)
            break;
        if (strlen(c->name) == n && memcmp(c->name, low, n) == 0)
            return c;
    }
    const struct kv_hooks *hk = ks->hooks;
    for (size_t i = 0; i < hk->ncommands; i++)
        if (strlen(hk->commands[i].name) == n && memcmp(hk->commands[i].name, low, n) == 0)
            return &hk->commands[i];
    return NULL;
}

/* ---- dispatch --------------------------------------------------------------- */

/* Appends up to n bytes of an argument to an error line: binary-safe, but
 * CR and LF become spaces so the reply stays one line. */
static void err_bytes(struct buf *b, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = p[i] == '\r' || p[i] == '\n' ? ' ' : p[i];
        buf_append(b, &ch, 1);
    }
}

static void reply_unknown(struct kv_req *r)
{
    struct buf *b = r->out;
    buf_append_str(b, "-ERR unknown command '");
    err_bytes(b, r->argv[0], r->argl[0] < 128 ? r->argl[0] : 128);
    buf_append_str(b, "', with args beginning with: ");
    size_t shown = 0;
    for (size_t i = 1; i < r->argc && shown < 128; i++) {
        size_t n = r->argl[i] < 128 - shown ? r->argl[i] : 128 - shown;
        buf_append(b, "'", 1);
        err_bytes(b, r->argv[i], n);
        buf_append(b, "' ", 2);
        shown += n + 3;
    }
    buf_append(b, "\r\n", 2);
}

static inline int check(struct kv_req *r, const struct kv_command *cmd)
{
    struct keyspace *ks = r->ks;
    ks->stats.commands++;
    if (!cmd) {
        reply_unknown(r);
        return 0;
    }
    if (ks->has_password && !r->sess->authed && !(cmd->flags & KV_CMD_NOAUTH)) {
        resp_error(r->out, "NOAUTH Authentication required.");
        return 0;
    }
    if ((cmd->arity > 0 && r->argc != (size_t)cmd->arity) ||
        (cmd->arity < 0 && r->argc < (size_t)-cmd->arity)) {
        kv_reply_wrongargs(r, cmd->name);
        return 0;
    }
    if ((cmd->flags & KV_CMD_DEBUG) && !ks->debug_enabled) {
        resp_error(r->out, KV_ERR_DEBUG_OFF);
        return 0;
    }
    if (ks->read_only && (cmd->flags & KV_CMD_WRITE)) {
        resp_error(r->out, ERR_READONLY);
        return 0;
    }
    return 1;
}

static inline void run(struct kv_req *r, const struct kv_command *cmd)
{
    struct keyspace *ks = r->ks;
    /* Make room before a command that may grow memory; refuse it when
     * nothing more can be reclaimed. */
    if (ks->mem_limit && (cmd->flags & KV_CMD_DENYOOM) && ks->store.mem.used > ks->mem_limit &&
        keyspace_enforce_memory(ks, r->now) < 0) {
        ks->stats.oom_rejections++;
        resp_error(r->out, KV_ERR_OOM);
        return;
    }
    cmd->fn(r);
    /* And keep the limit after it, so used memory stays under the limit
     * whenever something can be reclaimed. */
    if (ks->mem_limit && (cmd->flags & KV_CMD_WRITE) && ks->store.mem.used > ks->mem_limit)
        keyspace_enforce_memory(ks, r->now);
}

int kv_check(struct kv_req *r, const struct kv_command *cmd) { return check(r, cmd); }

void kv_run(struct kv_req *r, const struct kv_command *cmd) { run(r, cmd); }

void kv_exec(struct kv_req *r)
{
    const struct kv_command *cmd = kv_cmd_find(r->ks, r->argv[0], r->argl[0]);
    if (check(r, cmd))
        run(r, cmd);
}

/* ---- COMMAND ------------------------------------------------------------ */

static void command_entry(struct buf *out, const struct kv_command *cmd)
{
    resp_array(out, 10);
    resp_bulk_str(out, cmd->name);
    resp_int(out, cmd->arity);
    /* One flag, as Redis names it. */
    resp_array(out, 1);
    resp_simple(out, kv_cmd_is_write(cmd) ? "write" : cmd->first ? "readonly" : "fast");
    resp_int(out, cmd->first);
    resp_int(out, cmd->last);
    resp_int(out, cmd->step);
    resp_array(out, 0); /* ACL categories */
    resp_array(out, 0); /* tips */
    resp_array(out, 0); /* key specs */
    resp_array(out, 0); /* subcommands */
}

/* Calls fn for every command: the keyspace's, then the shell's. */
static void each_command(const struct keyspace *ks, struct buf *out,
                         void (*fn)(struct buf *, const struct kv_command *))
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        fn(out, &commands[i]);
    for (size_t i = 0; i < ks->hooks->ncommands; i++)
        fn(out, &ks->hooks->commands[i]);
}

static void name_entry(struct buf *out, const struct kv_command *cmd)
{
    resp_bulk_str(out, cmd->name);
}

void kv_do_command(struct kv_req *r)
{
    size_t n = NCOMMANDS + r->ks->hooks->ncommands;
    if (r->argc == 1 || (kv_arg_is(r, 1, "info") && r->argc == 2)) {
        resp_array(r->out, n);
        each_command(r->ks, r->out, command_entry);
        return;
    }
    if (kv_arg_is(r, 1, "count")) {
        if (r->argc != 2)
            return kv_reply_subargs(r, "command");
        return resp_int(r->out, (long long)n);
    }
    if (kv_arg_is(r, 1, "list")) {
        resp_array(r->out, n);
        each_command(r->ks, r->out, name_entry);
        return;
    }
    if (kv_arg_is(r, 1, "info")) {
        resp_array(r->out, r->argc - 2);
        for (size_t i = 2; i < r->argc; i++) {
            const struct kv_command *cmd = kv_cmd_find(r->ks, r->argv[i], r->argl[i]);
            if (cmd)
                command_entry(r->out, cmd);
            else
                resp_null_array(r->out);
        }
        return;
    }
    if (kv_arg_is(r, 1, "docs"))
        return resp_array(r->out, 0);
    kv_reply_unknown_sub(r, "COMMAND");
}

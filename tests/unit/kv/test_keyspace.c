/* A keyspace on its own and with a shell's hooks: commands run without any
 * shell; arity and AUTH are checked before a command runs; a read-only
 * keyspace refuses every write with Redis's error and serves reads; the
 * hooks are called where the keyspace promises (touch on access, reclaim
 * over the memory limit, INFO fields and sections, CONFIG parameters,
 * RESETSTAT). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kv_cmd.h"
#include "tap.h"

static struct keyspace KS;
static struct kv_session S = {.authed = 1};
static struct buf out;

static const char *run(int64_t now, const char *line)
{
    char copy[512];
    const char *argv[16];
    size_t argl[16], argc = 0;
    snprintf(copy, sizeof copy, "%s", line);
    for (char *t = strtok(copy, " "); t && argc < 16; t = strtok(NULL, " ")) {
        argv[argc] = t;
        argl[argc++] = strlen(t);
    }
    buf_reset(&out);
    struct kv_req r = {&KS, &S, &out, argc, argv, argl, now, NULL};
    kv_exec(&r);
    static char reply[8192];
    size_t n = buf_size(&out) < sizeof reply - 1 ? buf_size(&out) : sizeof reply - 1;
    memcpy(reply, buf_head(&out), n);
    reply[n] = 0;
    return reply;
}

static void test_plain(void)
{
    is_str(run(0, "SET k v"), "+OK\r\n", "SET on a keyspace with no shell");
    is_str(run(0, "GET k"), "$1\r\nv\r\n", "GET");
    is_str(run(0, "GET nokey"), "$-1\r\n", "GET missing");
    is_int(KS.stats.hits, 1, "a hit counted");
    is_int(KS.stats.misses, 1, "a miss counted");
    is_str(run(0, "get"), "-ERR wrong number of arguments for 'get' command\r\n", "arity, exact");
    is_str(run(0, "set k"), "-ERR wrong number of arguments for 'set' command\r\n",
           "arity, at least");
    is_str(run(0, "mset a"), "-ERR wrong number of arguments for 'mset' command\r\n",
           "MSET pairs");
    is_int(KS.stats.commands, 6, "every command counted, refused ones too");
    is_str(run(0, "CONFIG GET *"),
           "*14\r\n$9\r\ndatabases\r\n$1\r\n1\r\n$18\r\nproto-max-bulk-len\r\n$9\r\n536870912\r\n"
           "$25\r\nclient-query-buffer-limit\r\n$10\r\n1073741824\r\n$7\r\ntimeout\r\n$1\r\n0\r\n"
           "$10\r\nmaxclients\r\n$5\r\n10000\r\n$17\r\nmaxmemory-clients\r\n$10\r\n1073741824\r\n"
           "$20\r\nenable-debug-command\r\n$2\r\nno\r\n",
           "CONFIG GET * without a shell: the keyspace's own seven");
    is_str(run(0, "CONFIG SET maxmemory 1mb"),
           "-ERR Unknown option or number of arguments for CONFIG SET - 'maxmemory'\r\n",
           "no shell, no maxmemory");
    const char *info = run(0, "INFO");
    ok(strstr(info, "# Memory\r\nused_memory:") && !strstr(info, "\r\nmaxmemory:") &&
           !strstr(info, "evicted_keys"),
       "INFO has no eviction fields without a cache");
    ok(strstr(info, "db0:keys=1,expires=0,avg_ttl=0") != NULL, "INFO keyspace");
    /* Memory limit with no shell to reclaim: writes that grow are refused. */
    KS.mem_limit = 1;
    is_str(run(0, "SET x y"), "-OOM command not allowed when used memory > 'maxmemory'.\r\n",
           "over the limit with nothing to reclaim: OOM");
    is_str(run(0, "DEL k"), ":1\r\n", "writes that do not grow memory still run");
    KS.mem_limit = 0;
}

static void test_auth(void)
{
    struct kv_session anon = {0};
    KS.has_password = 1;
    snprintf(KS.password, sizeof KS.password, "pw");
    const char *argv[] = {"get", "k"};
    size_t argl[] = {3, 1};
    buf_reset(&out);
    struct kv_req r = {&KS, &anon, &out, 2, argv, argl, 0, NULL};
    ok(!kv_check(&r, kv_cmd_find(&KS, "get", 3)), "kv_check refuses before AUTH");
    const char *noauth = "-NOAUTH Authentication required.\r\n";
    ok(buf_size(&out) == strlen(noauth) && memcmp(buf_head(&out), noauth, strlen(noauth)) == 0,
       "with NOAUTH");
    const char *a2[] = {"auth", "pw"};
    size_t l2[] = {4, 2};
    buf_reset(&out);
    struct kv_req r2 = {&KS, &anon, &out, 2, a2, l2, 0, NULL};
    kv_exec(&r2);
    ok(anon.authed == 1, "AUTH runs before AUTH and authenticates");
    KS.has_password = 0;
    KS.password[0] = 0;
}

static void test_read_only(void)
{
    run(0, "SET k v");
    KS.read_only = 1;
    is_str(run(0, "SET k w"), "-READONLY You can't write against a read only replica.\r\n",
           "a write on a read-only keyspace is refused like Redis");
    is_str(run(0, "GET k"), "$1\r\nv\r\n", "reads go on, the value unchanged");
    is_str(run(0, "set k"), "-ERR wrong number of arguments for 'set' command\r\n",
           "arity is checked first, as Redis does");
    ok(strstr(run(0, "HELLO"), "$4\r\nrole\r\n$7\r\nreplica\r\n") != NULL, "HELLO says replica");
    /* Every write command of the table, with enough arguments. */
    size_t n;
    const struct kv_command *t = kv_cmd_table(&n);
    int refused = 0, writes = 0;
    size_t before = KS.store.count;
    for (size_t i = 0; i < n; i++) {
        if (!kv_cmd_is_write(&t[i]))
            continue;
        writes++;
        char line[128];
        int argc = t[i].arity < 0 ? -t[i].arity : t[i].arity;
        snprintf(line, sizeof line, "%s", t[i].name);
        for (int a = 1; a < argc; a++)
            strcat(line, a == 1 ? " k" : " 1");
        if (strcmp(run(0, line), "-READONLY You can't write against a read only replica.\r\n") == 0)
            refused++;
        else
            printf("# %s was not refused\n", line);
    }
    ok(writes > 20 && refused == writes, "all %d write commands refused", writes);
    is_int(KS.store.count, before, "nothing changed");
    KS.read_only = 0;
    is_str(run(0, "SET k w"), "+OK\r\n", "writable again");
}

/* ---- a fake shell ---------------------------------------------------------- */

struct shell {
    int touches, reclaims, resets, sets;
    int reclaim_fails;
    char value[64];
};
static struct shell SH;

static void sh_touch(struct keyspace *ks, struct store_entry *e, int64_t now)
{
    ((struct shell *)ks->shell)->touches++;
}
static int sh_reclaim(struct keyspace *ks, int64_t now)
{
    struct shell *s = ks->shell;
    s->reclaims++;
    if (s->reclaim_fails)
        return -1;
    ks->mem_limit = ks->store.mem.used + 1024 * 1024; /* "made room" */
    return 0;
}
static void sh_info(struct keyspace *ks, enum kv_info_at at, const struct kv_info_sel *sel,
                    struct buf *b)
{
    if (at == KV_INFO_MEMORY)
        buf_printf(b, "shell_mem:1\r\n");
    else if (at == KV_INFO_STATS)
        buf_printf(b, "shell_stat:2\r\n");
    else if (kv_info_wants(sel, "shell"))
        buf_printf(b, "# Shell\r\nshell_field:3\r\n\r\n");
}
static void sh_reset(struct keyspace *ks) { ((struct shell *)ks->shell)->resets++; }
static void sh_get(struct keyspace *ks, char *o, size_t n)
{
    snprintf(o, n, "%s", ((struct shell *)ks->shell)->value);
}
static int sh_set(struct keyspace *ks, const char *v, size_t vl, int64_t now, char *why, size_t wl)
{
    if (strcmp(v, "bad") == 0) {
        snprintf(why, wl, "not this one");
        return -1;
    }
    snprintf(((struct shell *)ks->shell)->value, sizeof SH.value, "%s", v);
    ((struct shell *)ks->shell)->sets++;
    return 0;
}
static void sh_hi(struct kv_req *r) { resp_simple(r->out, "hi"); }

static const struct kv_param sh_params[] = {{"shell-knob", sh_get, sh_set},
                                            {"shell-fixed", sh_get, NULL}};
static const struct kv_command sh_commands[] = {{"hi", sh_hi, 1, 0, 0, 0, 0}};
static const struct kv_hooks sh_hooks = {
    .touch = sh_touch, .reclaim = sh_reclaim, .info = sh_info, .reset_stats = sh_reset,
    .params = sh_params, .nparams = 2, .commands = sh_commands, .ncommands = 1,
};

static void test_hooks(void)
{
    keyspace_set_hooks(&KS, &sh_hooks, &SH);
    snprintf(SH.value, sizeof SH.value, "one");
    run(0, "SET t v");
    int t0 = SH.touches;
    run(0, "GET t");
    is_int(SH.touches - t0, 1, "a read touches the key once");
    run(0, "SET t w");
    is_int(SH.touches - t0, 2, "a write to a live key touches it");
    run(0, "GET nokey");
    is_int(SH.touches - t0, 2, "a miss touches nothing");
    run(0, "MGET t t nokey");
    is_int(SH.touches - t0, 4, "MGET touches each live key");

    KS.mem_limit = 1;
    is_str(run(0, "SET big value"), "+OK\r\n", "over the limit: the shell reclaims, the write runs");
    ok(SH.reclaims >= 1, "reclaim called");
    KS.mem_limit = 1;
    SH.reclaim_fails = 1;
    int rec = SH.reclaims;
    uint64_t oom = KS.stats.oom_rejections;
    is_str(run(0, "SET big2 value"),
           "-OOM command not allowed when used memory > 'maxmemory'.\r\n",
           "nothing to reclaim: OOM");
    ok(SH.reclaims == rec + 1 && KS.stats.oom_rejections == oom + 1, "one reclaim, one rejection");
    is_str(run(0, "GET big"), "$5\r\nvalue\r\n", "reads are not limited");
    KS.mem_limit = 0;
    SH.reclaim_fails = 0;

    is_str(run(0, "CONFIG GET shell-*"),
           "*4\r\n$10\r\nshell-knob\r\n$3\r\none\r\n$11\r\nshell-fixed\r\n$3\r\none\r\n",
           "CONFIG GET a shell's parameters");
    ok(strncmp(run(0, "CONFIG GET *"), "*18\r\n$10\r\nshell-knob\r\n", 21) == 0,
       "the shell's parameters come first");
    is_str(run(0, "CONFIG SET shell-knob two"), "+OK\r\n", "CONFIG SET calls the shell");
    is_str(SH.value, "two", "value applied");
    is_str(run(0, "CONFIG SET shell-knob three shell-knob bad"),
           "-ERR CONFIG SET failed (possibly related to argument 'shell-knob') - not this one\r\n",
           "a refused value names the parameter");
    is_str(run(0, "CONFIG SET shell-fixed x"),
           "-ERR Unknown option or number of arguments for CONFIG SET - 'shell-fixed'\r\n",
           "a parameter without set is not settable");
    is_str(run(0, "CONFIG SET shell-knob four nosuch 1"),
           "-ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'\r\n",
           "an unknown name changes nothing");
    is_str(SH.value, "three", "(only pairs before the refused value were applied)");
    int sets = SH.sets;
    run(0, "CONFIG SET shell-knob five nosuch 1");
    is_int(SH.sets, sets, "names are checked before any value is applied");

    const char *info = run(0, "INFO");
    ok(strstr(info, "used_memory_clients:0\r\nmaxmemory_clients:1073741824\r\nshell_mem:1\r\n"
                    "mem_fragmentation_ratio:") != NULL,
       "INFO memory: the shell's fields after the client memory fields");
    ok(strstr(info, "expired_keys:0\r\nshell_stat:2\r\nkeyspace_hits:") != NULL,
       "INFO stats: the shell's fields after expired_keys");
    ok(strstr(info, "# Shell\r\nshell_field:3\r\n\r\n# Keyspace\r\n") != NULL,
       "INFO: the shell's sections before Keyspace");
    const char *only = run(0, "INFO shell");
    is_str(only, "$24\r\n# Shell\r\nshell_field:3\r\n\r\n", "INFO <shell section> alone");
    ok(strstr(run(0, "INFO memory"), "# Shell") == NULL, "INFO memory leaves it out");

    is_str(run(0, "HI"), "+hi\r\n", "a shell's command runs through kv_exec");
    is_str(run(0, "HI x"), "-ERR wrong number of arguments for 'hi' command\r\n",
           "with its arity checked");
    is_str(run(0, "CONFIG RESETSTAT"), "+OK\r\n", "RESETSTAT");
    ok(SH.resets == 1 && KS.stats.hits == 0 && KS.stats.commands == 0,
       "resets the keyspace's counters and asks the shell to reset its own");
    keyspace_set_hooks(&KS, NULL, NULL);
}

/* DEBUG runs only behind the keyspace's switch; the refusal is Redis's. */
static void test_debug_switch(void)
{
    is_str(run(0, "DEBUG SLEEP 0"), "-" KV_ERR_DEBUG_OFF "\r\n", "DEBUG off by default");
    KS.debug_enabled = 1;
    is_str(run(0, "DEBUG SLEEP 0"), "-ERR unknown subcommand 'SLEEP'. Try DEBUG HELP.\r\n",
           "on: the shell's subcommands (none here)");
    KS.debug_enabled = 0;
    is_str(run(0, "CONFIG SET enable-debug-command yes"),
           "-ERR CONFIG SET failed (possibly related to argument 'enable-debug-command') - can't "
           "set protected config\r\n",
           "the switch is not a client's to flip");
}

/* A write that cannot fit is refused before it allocates. */
static void test_reserve(void)
{
    run(0, "FLUSHALL");
    KS.mem_limit = KS.store.mem.used + 4096;
    size_t used = KS.store.mem.used;
    is_str(run(0, "SETRANGE big 1000000 x"), "-" KV_ERR_OOM "\r\n", "SETRANGE past the limit");
    is_str(run(0, "SETRANGE big 536870912 x"),
           "-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n",
           "SETRANGE past 512 MB");
    is_int(KS.store.mem.used, used, "nothing was allocated");
    is_str(run(0, "SETRANGE small 10 x"), ":11\r\n", "a small one fits");
    KS.mem_limit = 0;
    is_int(kv_client_memory(0), 1ull << 30, "no max_memory: 1gb of client buffers");
    is_int(kv_client_memory(1 << 20), 32ull << 20, "at least 32mb");
    is_int(kv_client_memory(1ull << 32), 1ull << 32, "else max_memory");
}

static void test_password_sources(void)
{
    char pw[256], err[512];
    ok(kv_password_resolve("lit", "", "", pw, sizeof pw, err, sizeof err) == 0 &&
           strcmp(pw, "lit") == 0,
       "a literal password");
    setenv("KV_TEST_PW", "from-env", 1);
    ok(kv_password_resolve("", "KV_TEST_PW", "", pw, sizeof pw, err, sizeof err) == 0 &&
           strcmp(pw, "from-env") == 0,
       "from the environment");
    setenv("KV_TEST_PW", "", 1);
    ok(kv_password_resolve("", "KV_TEST_PW", "", pw, sizeof pw, err, sizeof err) < 0 &&
           strstr(err, "KV_TEST_PW is empty"),
       "an empty variable: %s", err);
    unsetenv("KV_TEST_PW");
    ok(kv_password_resolve("", "KV_TEST_PW", "", pw, sizeof pw, err, sizeof err) < 0 &&
           strstr(err, "KV_TEST_PW is not set"),
       "a missing variable: %s", err);
    char path[64];
    snprintf(path, sizeof path, "/tmp/strata-test-pw.%ld", (long)getpid());
    FILE *f = fopen(path, "w");
    fputs("from-file\r\nsecond line\n", f);
    fclose(f);
    ok(kv_password_resolve("", "", path, pw, sizeof pw, err, sizeof err) == 0 &&
           strcmp(pw, "from-file") == 0,
       "the first line of a file");
    f = fopen(path, "w");
    fputs("\n", f);
    fclose(f);
    ok(kv_password_resolve("", "", path, pw, sizeof pw, err, sizeof err) < 0 &&
           strstr(err, "is empty"),
       "an empty file: %s", err);
    unlink(path);
    ok(kv_password_resolve("", "", path, pw, sizeof pw, err, sizeof err) < 0 &&
           strstr(err, "cannot be read"),
       "a missing file: %s", err);
    ok(kv_password_resolve("a", "B", "", pw, sizeof pw, err, sizeof err) < 0 &&
           strstr(err, "only one"),
       "two sources: %s", err);
    struct kv_access a = {.max_clients = 0, .max_client_memory = -1};
    ok(kv_access_check(&a, "cache", "c1", "", "", "", 0, err, sizeof err) < 0 &&
           strcmp(err, "cache c1: max_clients must be in 1..1000000, not 0") == 0,
       "max_clients range: %s", err);
}

int main(void)
{
    keyspace_init(&KS, 7, 0);
    buf_init(&out);
    test_plain();
    test_auth();
    test_read_only();
    test_hooks();
    test_debug_switch();
    test_reserve();
    test_password_sources();
    buf_free(&out);
    keyspace_free(&KS);
    return tap_done();
}

/* Commands run on a cache (a keyspace with the cache's hooks) through
 * kv_exec with an injected clock: TTL semantics at exact millisecond
 * boundaries, the memory limit with and without eviction, the cache's
 * CONFIG parameters and INFO fields, and a few replies byte for byte. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "kv_cmd.h"
#include "tap.h"

static struct cache C;
static struct kv_session S;
static struct buf out;

/* Runs a space-separated command at time `now`; returns the reply text. */
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
    struct kv_req r = {&C.ks, &S, &out, argc, argv, argl, now, NULL};
    kv_exec(&r);
    static char reply[4096];
    size_t n = buf_size(&out) < sizeof reply - 1 ? buf_size(&out) : sizeof reply - 1;
    memcpy(reply, buf_head(&out), n);
    reply[n] = 0;
    return reply;
}

static void test_ttl(void)
{
    is_str(run(1000, "SET k v PX 100"), "+OK\r\n", "SET PX");
    is_str(run(1000, "PTTL k"), ":100\r\n", "PTTL right after");
    is_str(run(1099, "GET k"), "$1\r\nv\r\n", "alive at 99 ms");
    is_str(run(1100, "GET k"), "$-1\r\n", "gone at 100 ms (lazy expiry)");
    is_str(run(1100, "TTL k"), ":-2\r\n", "TTL of a gone key");
    is_str(run(2000, "SET k v EX 10"), "+OK\r\n", "SET EX");
    is_str(run(2000, "TTL k"), ":10\r\n", "TTL seconds");
    is_str(run(2000, "EXPIRETIME k"), ":12\r\n", "EXPIRETIME");
    is_str(run(2000, "PEXPIRETIME k"), ":12000\r\n", "PEXPIRETIME");
    is_str(run(2000, "SET k w KEEPTTL"), "+OK\r\n", "SET KEEPTTL");
    is_str(run(2000, "PTTL k"), ":10000\r\n", "TTL kept");
    is_str(run(2000, "SET k w"), "+OK\r\n", "plain SET");
    is_str(run(2000, "TTL k"), ":-1\r\n", "plain SET clears the TTL");
    is_str(run(3000, "SET k v EXAT 4"), "+OK\r\n", "SET EXAT");
    is_str(run(3000, "PTTL k"), ":1000\r\n", "EXAT is absolute");
    is_str(run(3000, "PEXPIREAT k 2999"), ":1\r\n", "PEXPIREAT in the past");
    is_str(run(3000, "EXISTS k"), ":0\r\n", "deletes the key");
    is_str(run(3000, "SET k v"), "+OK\r\n", "SET again");
    is_str(run(3000, "GETEX k PX 50"), "$1\r\nv\r\n", "GETEX PX");
    is_str(run(3049, "GET k"), "$1\r\nv\r\n", "alive before");
    is_str(run(3050, "GET k"), "$-1\r\n", "GETEX set the TTL");
    is_str(run(3000, "SETEX s 1 v"), "+OK\r\n", "SETEX");
    is_str(run(3999, "GET s"), "$1\r\nv\r\n", "SETEX alive");
    is_str(run(4000, "GET s"), "$-1\r\n", "SETEX expired");
    is_str(run(5000, "SET p v PX 10"), "+OK\r\n", "SET p PX");
    is_str(run(5000, "PERSIST p"), ":1\r\n", "PERSIST");
    is_str(run(9000, "GET p"), "$1\r\nv\r\n", "persisted key outlives its old TTL");
    /* The active cycle removes keys nobody reads. */
    for (int i = 0; i < 50; i++) {
        char cmd[64];
        snprintf(cmd, sizeof cmd, "SET e%d v PX 10", i);
        run(10000, cmd);
    }
    size_t before = C.ks.store.count;
    keyspace_cron(&C.ks, 10010);
    is_int(before - C.ks.store.count, 50, "the cron's active expiry removes all 50 expired keys");
}

static void test_memory_limit(void)
{
    run(0, "FLUSHALL");
    char cmd[128];
    C.ks.mem_limit = 64 * 1024;
    is_str(run(0, "CONFIG SET maxmemory-policy noeviction"), "+OK\r\n", "noeviction");
    int oom = 0;
    for (int i = 0; i < 5000 && !oom; i++) {
        snprintf(cmd, sizeof cmd, "SET key:%d 0123456789012345678901234567890123456789", i);
        oom = strncmp(run(0, cmd), "-OOM", 4) == 0;
    }
    ok(oom, "noeviction refuses writes over the limit");
    /* A write that grows memory more than the refused one did. */
    is_str(run(0, "SET xxxxxxxxxx 012345678901234567890123456789012345678901234567890123456789"),
           "-OOM command not allowed when used memory > 'maxmemory'.\r\n", "the OOM error text");
    is_str(run(0, "GET key:1"), "$40\r\n0123456789012345678901234567890123456789\r\n",
           "reads still work");
    is_str(run(0, "CONFIG SET maxmemory-policy allkeys-lru"), "+OK\r\n", "switch to LRU");
    int max_over = 0;
    for (int i = 5000; i < 10000; i++) {
        snprintf(cmd, sizeof cmd, "SET key:%d 0123456789012345678901234567890123456789", i);
        if (strcmp(run(i, cmd), "+OK\r\n") != 0)
            max_over = 1;
        if (C.ks.store.mem.used > C.ks.mem_limit)
            max_over = 1;
    }
    ok(!max_over, "LRU keeps used memory under the limit with every write accepted");
    is_str(run(10000, "GET key:9999"), "$40\r\n0123456789012345678901234567890123456789\r\n",
           "the newest key is kept");
    is_str(run(10000, "GET key:5000"), "$-1\r\n", "an old key was evicted");
    ok(C.evict.evicted > 0, "evictions counted");
    C.ks.mem_limit = 0;
}

static void test_config_and_info(void)
{
    run(0, "FLUSHALL");
    is_str(run(0, "CONFIG GET maxmemory"), "*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n",
           "CONFIG GET maxmemory");
    is_str(run(0, "CONFIG SET maxmemory 1mb"), "+OK\r\n", "CONFIG SET maxmemory");
    ok(C.ks.mem_limit == 1024 * 1024, "maxmemory is the keyspace's memory limit");
    is_str(run(0, "CONFIG SET maxmemory abc"),
           "-ERR CONFIG SET failed (possibly related to argument 'maxmemory') - argument must be "
           "a memory value\r\n",
           "a bad memory value");
    is_str(run(0, "CONFIG SET maxmemory-samples 7"), "+OK\r\n", "CONFIG SET maxmemory-samples");
    is_int(C.evict.samples, 7, "samples applied");
    is_str(run(0, "CONFIG SET maxmemory-policy allkeys-lfu maxmemory-samples 0"),
           "-ERR CONFIG SET failed (possibly related to argument 'maxmemory-samples') - argument "
           "must be between 1 and 64 inclusive\r\n",
           "a bad second pair fails naming it");
    is_str(run(0, "CONFIG SET timeout 5"),
           "-ERR Unknown option or number of arguments for CONFIG SET - 'timeout'\r\n",
           "a read-only keyspace parameter is not settable");
    is_str(run(0, "CONFIG SET save x appendonly yes"), "+OK\r\n", "save/appendonly ignored");
    const char *all = run(0, "CONFIG GET *");
    ok(strncmp(all, "*26\r\n$9\r\nmaxmemory\r\n", 20) == 0,
       "CONFIG GET * lists the cache's parameters first (13 in all): %.20s", all);
    const char *mem = run(0, "INFO memory");
    ok(strstr(mem, "\r\nmaxmemory:1048576\r\nmaxmemory_human:1.00M\r\n") != NULL,
       "INFO memory has maxmemory");
    ok(strstr(mem, "maxmemory_policy:allkeys-lfu\r\nmaxmemory_samples:7\r\n") != NULL,
       "INFO memory has the policy and samples");
    ok(strstr(mem, "maxmemory_eviction_fallback:allkeys-lru\r\nmem_fragmentation_ratio:") != NULL,
       "the cache's fields sit before mem_fragmentation_ratio");
    ok(strstr(run(0, "INFO stats"), "\r\nevicted_keys:") != NULL, "INFO stats has evicted_keys");
    ok(strstr(run(0, "INFO"), "# Persistence") == NULL, "a cache has no persistence section");
    C.evict.evicted = 9;
    is_str(run(0, "CONFIG RESETSTAT"), "+OK\r\n", "CONFIG RESETSTAT");
    is_int(C.evict.evicted, 0, "RESETSTAT clears the cache's counters too");
    /* Reads touch keys through the hook: under LRU the key just read stays. */
    run(0, "CONFIG SET maxmemory-policy allkeys-lru");
    run(0, "SET old v");
    run(1, "SET new v");
    run(2, "GET old");
    struct store_entry *victim = evict_choose(&C.evict, &C.ks.store, 3);
    ok(victim && store_klen(victim) == 3 && memcmp(store_key(victim), "new", 3) == 0,
       "GET touched 'old', so LRU picks 'new'");
    run(0, "CONFIG SET maxmemory 0");
}

int main(void)
{
    cache_init(&C, 4242, 0);
    memset(&S, 0, sizeof S);
    S.authed = 1;
    buf_init(&out);
    test_ttl();
    test_memory_limit();
    test_config_and_info();
    is_str(run(0, "PING"), "+PONG\r\n", "PING");
    is_str(run(0, "get"), "-ERR wrong number of arguments for 'get' command\r\n", "arity error");
    is_str(run(0, "nosuch a b"),
           "-ERR unknown command 'nosuch', with args beginning with: 'a' 'b' \r\n",
           "unknown command");
    buf_free(&out);
    cache_free(&C);
    return tap_done();
}

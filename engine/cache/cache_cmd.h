/* cache_cmd: the cache's command table and the commands themselves.
 *
 * A command reads its arguments (pointers into the client's read buffer)
 * and appends its RESP reply to `out`. Replies and error texts follow Redis
 * 7 so that client libraries behave the same against either server. The
 * state a command touches is all in `struct cache`, which the network side
 * (cache_server) owns; that keeps this file testable without sockets. */
#ifndef STRATA_CACHE_CMD_H
#define STRATA_CACHE_CMD_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "evict.h"
#include "expire.h"
#include "resp.h"
#include "store.h"

#define CACHE_OPS_SAMPLES 16

struct cache_stats {
    uint64_t hits, misses;
    uint64_t commands;
    uint64_t connections, rejected_connections;
    uint64_t protocol_errors;
    uint64_t oom_rejections;
    uint64_t net_input_bytes, net_output_bytes;
    /* instantaneous ops/sec: a ring of per-cron-tick rates */
    int64_t ops_last_ms;
    uint64_t ops_last_cmds;
    double ops_ring[CACHE_OPS_SAMPLES];
    int ops_idx;
};

struct cache {
    struct store store;
    struct evict evict;
    struct expire_cycle expire;
    uint64_t max_memory;          /* 0: unlimited */
    int has_password;
    char password[256];
    struct resp_limits limits;
    size_t qbuf_max;              /* close a client whose unparsed input exceeds this */
    struct cache_stats stats;
    int64_t start_ms;
    char node[64];
    char listen[64];
    char topology[1024];          /* for resolving relative Lua policy paths */
    char lua_path[1024];          /* the Lua policy's resolved path, when policy == lua */
    /* Filled in by the server for INFO. */
    size_t nclients;
    size_t client_buf_bytes;
    uint64_t next_client_id;
};

/* Per-connection state the commands need. */
struct cache_session {
    uint64_t id;
    int authed;
    int quit;              /* QUIT: the server closes after flushing */
    char name[64];
    int64_t created_ms;
};

struct cache_req {
    struct cache *c;
    struct cache_session *sess;
    struct buf *out;
    size_t argc;
    const char **argv;
    const size_t *argl;
    int64_t now;           /* wall clock ms, read once per batch of commands */
};

void cache_init(struct cache *c, uint64_t seed, int64_t now_ms);
void cache_free(struct cache *c);
/* Runs one command (argc >= 1), appending its reply to r->out. */
void cache_exec(struct cache_req *r);
/* Periodic work (the server calls it ~10 times a second): active expiry,
 * rehash steps, eviction after a limit change, ops/sec sampling. */
void cache_cron(struct cache *c, int64_t now_ms);
/* Sets the eviction policy: a built-in name, or a path to a Lua module
 * (resolved against the topology's directory). 0 or -1 with err. */
int cache_set_policy(struct cache *c, const char *name, int64_t now_ms, char *err, size_t errlen);
/* The policy as CONFIG GET and INFO show it. */
const char *cache_policy_name(const struct cache *c);
/* Evicts until under max_memory; 0 when under (or unlimited). */
int cache_enforce_memory(struct cache *c, int64_t now_ms);
/* Glob-style matching as KEYS and SCAN MATCH use it. */
int cache_glob_match(const char *pat, size_t plen, const char *s, size_t slen);

#endif

/* keyspace: the state every RESP key-value service shares, and what its
 * commands need to run against it.
 *
 * A keyspace is the store, active expiry, the password, the protocol
 * limits, the counters INFO shows and a read-only switch. It is not a
 * service: a shell owns it and adds what makes it one —
 *
 *   cache = keyspace + eviction   (engine/cache: touch on access, make room
 *                                  before a write over the memory limit)
 *   db    = keyspace + persistence (engine/db: a write's touched keys become
 *                                  effects in the log; later replication)
 *
 * The shell plugs in through one struct kv_hooks: callbacks for the few
 * moments it cares about (a key is accessed, memory is over the limit, INFO
 * is being written, stats are reset), its own CONFIG parameters and its own
 * commands. Every hook is optional. The hot path pays at most one hook call
 * per key access, and only when the shell asked for it.
 *
 * Commands (kv_cmd.h) read their arguments from a struct kv_req — pointers
 * into the client's read buffer — and append their RESP reply to req->out.
 * Nothing here knows about sockets, so every command runs in unit tests. */
#ifndef STRATA_KEYSPACE_H
#define STRATA_KEYSPACE_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "expire.h"
#include "resp.h"
#include "store.h"

#define KV_OPS_SAMPLES 16
/* The Redis version clients are told, for their compatibility checks. */
#define KV_COMPAT_VERSION "7.0.0"
/* Clients a node serves at once unless the topology says otherwise (Redis's
 * maxclients default). */
#define KV_DEFAULT_MAX_CLIENTS 10000
/* The sum of client buffers allowed when the topology sets no
 * max_client_memory: max_memory, at least KV_MIN_CLIENT_MEMORY, or
 * KV_UNLIMITED_CLIENT_MEMORY when max_memory is 0 (see kv_client_memory). */
#define KV_MIN_CLIENT_MEMORY (32ull * 1024 * 1024)
#define KV_UNLIMITED_CLIENT_MEMORY (1024ull * 1024 * 1024)
/* Replies Redis clients know. */
#define KV_ERR_OOM "OOM command not allowed when used memory > 'maxmemory'."
#define KV_ERR_MAXCLIENTS "ERR max number of clients reached"
#define KV_ERR_DEBUG_OFF                                                                        \
    "ERR DEBUG command not allowed. If the enable-debug-command option is set to \"local\", you " \
    "can run it from a local connection, otherwise you need to set this option in the "        \
    "configuration file, and then restart the server."

struct keyspace;
struct kv_command;

struct kv_stats {
    uint64_t hits, misses;
    uint64_t commands;
    uint64_t connections, rejected_connections;
    uint64_t protocol_errors;
    uint64_t oom_rejections;   /* writes refused over mem_limit */
    uint64_t evicted_clients;  /* closed because client buffers were over their limit */
    uint64_t net_input_bytes, net_output_bytes;
    /* instantaneous ops/sec: a ring of per-cron-tick rates */
    int64_t ops_last_ms;
    uint64_t ops_last_cmds;
    double ops_ring[KV_OPS_SAMPLES];
    int ops_idx;
};

/* Per-connection state the commands need. */
struct kv_session {
    uint64_t id;
    int authed;
    int quit;              /* QUIT: the server closes after flushing */
    char name[64];
    int64_t created_ms;
};

struct kv_req {
    struct keyspace *ks;
    struct kv_session *sess;
    struct buf *out;
    size_t argc;
    const char **argv;
    const size_t *argl;
    int64_t now;           /* wall clock ms, read once per batch of commands */
    /* The read buffer whose block holds this command and nothing else,
     * offered to a SET of a large value to keep as its entry (see
     * store_adopt); a command that takes it sets this to NULL and leaves
     * the buffer empty. NULL: nothing offered. */
    struct buf *adopt;
};

/* Which INFO sections a request asked for (INFO [section ...]). */
struct kv_info_sel {
    int n;                 /* 0: the default set (all) */
    char names[8][32];
};
/* 1 when the section (lower case) is part of the reply. */
int kv_info_wants(const struct kv_info_sel *sel, const char *section);

/* Where in INFO a shell's hook is asked to write. */
enum kv_info_at {
    KV_INFO_MEMORY,        /* fields inside "# Memory", after maxmemory_clients */
    KV_INFO_STATS,         /* fields inside "# Stats", after expired_keys */
    KV_INFO_SECTIONS,      /* whole sections of its own, before "# Keyspace" */
};

/* A CONFIG parameter. get writes the value, NUL-terminated. set is NULL
 * for a read-only one (CONFIG SET answers as Redis does for an unknown
 * option); else it applies val (NUL-terminated, vl bytes) and returns 0, or
 * -1 with why (CONFIG SET then fails naming the parameter). */
struct kv_param {
    const char *name;
    void (*get)(struct keyspace *ks, char *out, size_t n);
    int (*set)(struct keyspace *ks, const char *val, size_t vl, int64_t now_ms, char *why,
               size_t whylen);
};

struct kv_hooks {
    /* A live key was read or written (eviction clocks). NULL: nothing. */
    void (*touch)(struct keyspace *ks, struct store_entry *e, int64_t now_ms);
    /* Used memory is over ks->mem_limit: free some. 0 when under it
     * again, -1 when nothing more can go (the write is then refused). */
    int (*reclaim)(struct keyspace *ks, int64_t now_ms);
    /* Adds fields or sections to INFO (see enum kv_info_at). */
    void (*info)(struct keyspace *ks, enum kv_info_at at, const struct kv_info_sel *sel,
                 struct buf *b);
    /* CONFIG RESETSTAT: the shell's own counters. */
    void (*reset_stats)(struct keyspace *ks);
    /* The shell's CONFIG parameters, listed before the keyspace's own. */
    const struct kv_param *params;
    size_t nparams;
    /* DEBUG's subcommands (the db's DISK-ERROR). Runs only when the
     * keyspace's debug switch is on. NULL: DEBUG knows none. */
    void (*debug)(struct kv_req *r);
    /* The shell's own commands (SAVE, ...), found after the keyspace's. */
    const struct kv_command *commands;
    size_t ncommands;
};

struct keyspace {
    struct store store;
    struct expire_cycle expire;
    const struct kv_hooks *hooks;   /* never NULL (an empty set by default) */
    void *shell;                    /* the owning service, for its hooks and commands */
    uint64_t mem_limit;             /* 0: none; a shell with reclaim sets it */
    int read_only;                  /* writes refused with -READONLY (a replica) */
    int debug_enabled;              /* DEBUG allowed: the topology's debug = true */
    int has_password;
    char password[256];
    size_t max_clients;             /* more are refused with -ERR max number...; 0: none */
    uint64_t client_mem_limit;      /* sum of client buffers (max_client_memory); 0: none */
    struct resp_limits limits;
    size_t qbuf_max;                /* close a client whose unparsed input exceeds this */
    struct kv_stats stats;
    int64_t start_ms;
    char node[64];
    char listen[64];
    /* Kept by the RESP client layer, for INFO and CLIENT. */
    size_t nclients;
    size_t client_buf_bytes;
    uint64_t next_client_id;
};

void keyspace_init(struct keyspace *ks, uint64_t seed, int64_t now_ms);
void keyspace_free(struct keyspace *ks);
/* Installs a shell: its hooks (NULL: none) and the pointer they get back. */
void keyspace_set_hooks(struct keyspace *ks, const struct kv_hooks *hooks, void *shell);
/* Periodic work (~10 times a second): active expiry, rehash steps, the
 * memory limit after a change, ops/sec sampling. */
void keyspace_cron(struct keyspace *ks, int64_t now_ms);
/* Brings used memory under mem_limit through the shell's reclaim hook:
 * 0 when under (or no limit), -1 when it cannot. */
int keyspace_enforce_memory(struct keyspace *ks, int64_t now_ms);

/* --- lookups, as the commands use them ----------------------------------- */
/* A live key for reading: counts a hit or a miss and touches it. */
struct store_entry *kv_lookup_read(struct kv_req *r, size_t i);
/* A live key about to be written (or NULL): touched, not counted. */
struct store_entry *kv_lookup_write(struct kv_req *r, size_t i);
/* Creates (e NULL) or overwrites key argv[ki]. expire: 0 none, -1 keep the
 * current TTL, else the absolute time. Returns the entry, or NULL after
 * replying out of memory. */
struct store_entry *kv_write_value(struct kv_req *r, size_t ki, struct store_entry *e,
                                   const void *val, size_t vlen, int64_t expire);

/* --- arguments ---------------------------------------------------------- */
int kv_arg_is(const struct kv_req *r, size_t i, const char *word);
/* Integers the way Redis reads them: optional '-', no '+', no leading
 * zeros, no spaces, within 64 bits. 0 or -1. */
int kv_parse_ll(const char *s, size_t n, long long *out);
/* Parses argv[i] as an integer; replies with the error and returns -1. */
int kv_arg_ll(struct kv_req *r, size_t i, long long *out);
/* Glob-style matching as KEYS, SCAN MATCH and CONFIG GET use it. */
int kv_glob_match(const char *pat, size_t plen, const char *s, size_t slen);
/* "1.50M" etc., as INFO's *_human fields show sizes. */
void kv_human_bytes(char *out, size_t n, double v);
/* Before a write that grows the keyspace by about `grow` bytes, while
 * nothing is allocated yet: 0 when it fits under mem_limit (or there is no
 * limit), 1 when it fits after the shell reclaimed memory (entries may have
 * been freed: look keys up again), -1 after replying -OOM (nothing can make
 * room: the write is refused before it allocates). */
int kv_reserve(struct kv_req *r, size_t grow);
/* About what writing a value of vlen bytes under a key of klen bytes adds,
 * over what entry e (NULL: none) holds now. */
static inline size_t kv_growth(size_t klen, const struct store_entry *e, size_t vlen)
{
    if (!e)
        return klen + vlen + 64;
    size_t old = store_vlen(e);
    return vlen > old ? vlen - old : 0;
}
/* The client buffer limit a topology gets when it sets none. */
uint64_t kv_client_memory(uint64_t max_memory);
/* The password a topology names: the literal `password`, the environment
 * variable `env`, or the first line of the file `file` (each "" when not
 * set; at most one may be). Copied into out (< outlen bytes); "" when none
 * is set. -1 with why in err, never the secret itself: a missing variable
 * or file, an empty value, two sources at once. */
int kv_password_resolve(const char *password, const char *env, const char *file, char *out,
                        size_t outlen, char *err, size_t errlen);
/* The settings every keyspace shell (cache, db) reads from its topology
 * alike: who may connect and how much they may hold. */
struct kv_access {
    char password[256];            /* resolved; "" none */
    int debug;                     /* DEBUG allowed */
    int64_t max_clients;           /* 1..1000000 */
    int64_t max_client_memory;     /* >= 0 (0: no limit); -1 in: the default */
};
/* Resolves the password (kv_password_resolve) and checks the ranges,
 * filling in the default client memory for max_memory. -1 with why in err
 * ("<what> <node>: ..."). */
int kv_access_check(struct kv_access *a, const char *what, const char *node, const char *password,
                    const char *env, const char *file, uint64_t max_memory, char *err,
                    size_t errlen);
/* Puts them on the keyspace (new connections see the new password). */
void kv_access_apply(struct keyspace *ks, const struct kv_access *a);
/* 1 when user/pass are accepted for the default user. */
int kv_auth_check(const struct keyspace *ks, const char *user, size_t ul, const char *pass,
                  size_t pl);

#endif

/* cache_admin: the cache's connection and server commands (HELLO, AUTH,
 * CLIENT, COMMAND, CONFIG, INFO), and what cache_cmd.c shares with them.
 * Internal to the cache service. */
#ifndef STRATA_CACHE_ADMIN_H
#define STRATA_CACHE_ADMIN_H

#include "cache_cmd.h"

typedef void (*cache_cmd_fn)(struct cache_req *r);

struct cache_command {
    const char *name;
    cache_cmd_fn fn;
    int arity;          /* > 0: exactly; < 0: at least -arity (name included) */
    unsigned flags;
};

const struct cache_command *cache_command_find(const char *name, size_t n);
const struct cache_command *cache_commands(size_t *n);
int cache_command_is_write(const struct cache_command *c);

int cache_arg_is(const struct cache_req *r, size_t i, const char *word);
int cache_parse_ll(const char *s, size_t n, long long *out);
/* Parses argv[i] as an integer; replies with the error and returns -1. */
int cache_arg_ll(struct cache_req *r, size_t i, long long *out);
/* Resolves a policy path against the topology's directory. */
int cache_resolve_path(const struct cache *c, const char *name, char *out, size_t outlen);

void cache_cmd_hello(struct cache_req *r);
void cache_cmd_auth(struct cache_req *r);
void cache_cmd_command(struct cache_req *r);
void cache_cmd_client(struct cache_req *r);
void cache_cmd_config(struct cache_req *r);
void cache_cmd_info(struct cache_req *r);

#endif

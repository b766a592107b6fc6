/* kv_cmd: the one command table, and running a command against a keyspace.
 *
 * Every command is declared once, with what every other part needs to know
 * about it: its arity, whether it writes, may grow memory, runs before
 * AUTH, and where its keys are (first, last, step, as in Redis's COMMAND
 * reply). The RESP server dispatches through it, COMMAND prints it, the
 * cache's memory limit reads DENYOOM, the db's log reads WRITE and the key
 * positions to know which keys' after-state to log, and a read-only
 * keyspace (a replica) refuses every WRITE. A shell's own commands (the
 * db's SAVE, ...) are declared the same way in its kv_hooks.
 *
 * Running a command is two steps so a shell can act between them:
 * kv_check (unknown command, NOAUTH, arity, DEBUG switched off, read-only: replies with the
 * error and returns 0) and kv_run (the memory limit, then the command).
 * kv_exec does both and is what a shell with nothing to add calls. */
#ifndef STRATA_KV_CMD_H
#define STRATA_KV_CMD_H

#include <stddef.h>

#include "keyspace.h"

enum {
    KV_CMD_WRITE = 1 << 0,    /* may change the keyspace */
    KV_CMD_DENYOOM = 1 << 1,  /* may grow memory: refused when over the limit */
    KV_CMD_NOAUTH = 1 << 2,   /* allowed before AUTH */
    KV_CMD_ADMIN = 1 << 3,
    KV_CMD_READONLY = 1 << 4, /* reads keys, changes nothing */
    KV_CMD_TTL = 1 << 5,      /* a write that changes only its keys' TTLs */
    KV_CMD_FLUSH = 1 << 6,    /* a write that may remove every key */
    KV_CMD_DEBUG = 1 << 7,    /* a test hook: refused unless the keyspace's debug switch is on */
};

typedef void (*kv_cmd_fn)(struct kv_req *r);

struct kv_command {
    const char *name;         /* lower case */
    kv_cmd_fn fn;
    int arity;                /* > 0: exactly; < 0: at least -arity (name included) */
    unsigned flags;           /* KV_CMD_* */
    /* Key positions: argv[first], argv[first + step], ... up to argv[last]
     * (last < 0: counted from the end, -1 the last argument). first 0: no
     * keys. */
    int first, last, step;
};

/* The keyspace's own commands (not a shell's). */
const struct kv_command *kv_cmd_table(size_t *n);
/* Finds a command by name, case-insensitively: the keyspace's, then the
 * shell's. NULL when unknown. */
const struct kv_command *kv_cmd_find(const struct keyspace *ks, const char *name, size_t n);
static inline int kv_cmd_is_write(const struct kv_command *c) { return (c->flags & KV_CMD_WRITE) != 0; }

/* The index range of the keys a command with argc arguments touches: keys
 * are argv[*from], argv[*from + step] ... while <= *to. Returns the step,
 * or 0 when it touches no key. */
static inline int kv_cmd_key_range(const struct kv_command *c, size_t argc, size_t *from, size_t *to)
{
    if (c->first <= 0 || argc <= (size_t)c->first)
        return 0;
    long last = c->last < 0 ? (long)argc + c->last : c->last;
    if (last >= (long)argc)
        last = (long)argc - 1;
    if (last < c->first)
        return 0;
    *from = (size_t)c->first;
    *to = (size_t)last;
    return c->step;
}

/* Counts the command and refuses it when it cannot run: unknown (cmd
 * NULL), not authenticated, wrong arity, a write on a read-only keyspace.
 * Returns 1 when it may run, 0 after replying with the error. */
int kv_check(struct kv_req *r, const struct kv_command *cmd);
/* Runs a checked command: the memory limit before a command that may grow
 * memory (refused with -OOM when nothing can be reclaimed) and after a
 * write, and the command itself. */
void kv_run(struct kv_req *r, const struct kv_command *cmd);
/* Finds, checks and runs argv[0] (argc >= 1). */
void kv_exec(struct kv_req *r);

#endif

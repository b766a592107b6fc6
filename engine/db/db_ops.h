/* db_ops: what the db writes into its log — the effects of a write command,
 * not the command — and how a log record or snapshot entry is applied back
 * to a store.
 *
 * Why effects: a command's outcome can depend on the moment it ran (EXPIRE
 * 10 means "ten seconds from now"; a key that had expired at that moment
 * was missing). A log of effects replays to the same state at any later
 * time and on any replica: every key a write command may touch is logged
 * with its state after the command, and expiry times are absolute.
 *
 * A record's payload is a run of msgpack arrays, one per key:
 *
 *     [1, key, value, expire_ms]   the key now holds value (expire 0: none)
 *     [2, key]                     the key is gone
 *     [3, key, expire_ms]          only the TTL changed (EXPIRE family)
 *     [4]                          every key is gone (FLUSHDB / FLUSHALL)
 *
 * One command's effects form one record, so a multi-key command (MSET,
 * RENAME) is replayed entirely or not at all. Applying is verbatim, also
 * for an expire time that has already passed: such a key is never served
 * (lookups treat it as gone) and the keyspace's expiry removes it — on a
 * primary, logging the removal. Dropping it at replay would be wrong: a
 * record written before the key expired (an EXPIRE that extended it) may
 * come after it in the log, and must find the key when it is replayed
 * later, on a restart or on a replica that lags. Snapshots hold every key
 * the store holds, for the same reason. */
#ifndef STRATA_DB_OPS_H
#define STRATA_DB_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "kv_cmd.h"
#include "snapshot.h"
#include "store.h"

enum { DB_OP_SET = 1, DB_OP_DEL = 2, DB_OP_EXPIRE = 3, DB_OP_FLUSH = 4 };

/* 1 when the db can log the write command: the command table says which
 * keys it touches, or that it may remove every key (it refuses write
 * commands it cannot log). */
int db_ops_loggable(const struct kv_command *cmd);
/* Appends to out the effects of the write command cmd just executed with
 * these arguments: the after-state of every key its key positions name (a
 * TTL-only write logs only TTLs; a flush that happened logs a flush). 0, or
 * -1 when out of memory or the command is not loggable. */
int db_ops_effects(struct store *s, const struct kv_command *cmd, size_t argc, const char **argv,
                   const size_t *argl, int64_t now_ms, struct buf *out);

/* Appends the record "key is gone" ([2, key]): what a primary logs when a
 * key expires, so its replicas (which never expire keys themselves) drop
 * it too. 0 or -1 (memory). */
int db_ops_deleted(struct buf *out, const void *key, size_t klen);

/* Applies one log record. 0, or -1 with err (a record that does not decode:
 * the log and this build disagree, or memory ran out). */
int db_ops_apply(struct store *s, const void *p, size_t n, int64_t now_ms, char *err,
                 size_t errlen);
/* Inserts one snapshot entry (an expired one too: see above). */
int db_ops_load(struct store *s, const char *key, size_t klen, const char *val, size_t vlen,
                int64_t expire_ms, int64_t now_ms, char *err, size_t errlen);
/* Writes every key into a snapshot. 0 or -1. */
int db_ops_dump(struct store *s, struct snapshot_writer *w, int64_t now_ms);

#endif

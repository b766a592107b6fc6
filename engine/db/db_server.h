/* db_server: the `db` service kind — a durable key-value primary.
 *
 * It is a keyspace (engine/kv: the store, the command table, the RESP
 * client layer) with persistence added through the keyspace's hooks, and
 * differs from a cache in three ways:
 *
 *  - every write command's effects (db_ops.h) are appended to the log
 *    (wal.h) and its reply is held back until the log has them: written
 *    to the kernel under fsync everysec/no, written and fdatasync'ed under
 *    always. Replies that follow a held one on the same connection wait
 *    behind it, so a client sees its replies in order. The log is flushed
 *    once per loop iteration (an ev_prepare), which is the group commit:
 *    all the writes of one iteration share one write and one fsync;
 *  - nothing is ever evicted (max_memory does not apply) and keys live on
 *    disk: snapshots and compaction (persist.h), its own commands SAVE,
 *    BGSAVE, LASTSAVE, DEBUG (declared in a kv_command table like the
 *    keyspace's), INFO persistence, CONFIG parameters of its own;
 *  - when the disk fails (ENOSPC, EIO) write commands are refused with a
 *    MISCONF error while reads go on; the log retries by itself and writes
 *    are accepted again as soon as it succeeds. Replies already held for
 *    writes that were executed but not yet logged stay held until then.
 *
 * Replication (repl_primary.h, repl_replica.h): every write's record also
 * goes into the replication backlog, and once the log has it, to the
 * attached replicas; PSYNC turns a client connection into a replica's
 * link; WAIT blocks its client until replicas acknowledge; min_replicas
 * refuses writes with -NOREPLICAS. A node with role "replica" follows its
 * upstream, is read-only and never expires keys itself.
 *
 * DEBUG DISK-ERROR makes the log's writes/fsyncs fail on purpose, for the
 * fault tests. */
#ifndef STRATA_DB_SERVER_H
#define STRATA_DB_SERVER_H

#include "service.h"

extern const struct service_kind db_service_kind;

#endif

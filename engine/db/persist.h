/* persist: the db's files as a whole — recovery at start, the log writer,
 * snapshots (SAVE in-process, BGSAVE in a forked child) and compaction.
 *
 * It knows nothing of the keyspace: the owner passes callbacks that load a
 * snapshot entry, apply a log record and dump every key into a snapshot.
 * That keeps recovery testable in-process with a toy keyspace.
 *
 * Files in the data directory:
 *
 *     LOCK                  flock'ed for the life of the process
 *     snapshot.db           the newest snapshot, consistent at log offset P
 *     log-<P>.wal ...       log segments from P on, contiguous
 *
 * Recovery: load snapshot.db if present, then replay every segment from P
 * on, in order, checking that each starts where the previous ended and
 * that all belong to the same dataset (an id in every header). A torn
 * record at the very end of the last segment is cut off (and the number of
 * bytes dropped is logged); anything else wrong — damage before the end, a
 * gap, a missing segment, a foreign file — refuses the start with a
 * message that names the file and offset, because starting would silently
 * lose acknowledged writes.
 *
 * Compaction: a snapshot always starts a new segment at its offset P (the
 * log is rotated just before the fork), so once the snapshot is durable the
 * segments before P hold nothing it lacks and are deleted. It runs by
 * itself when the log since the last snapshot grows past
 * max(compact_min, compact_pct% of the snapshot's size). */
#ifndef STRATA_PERSIST_H
#define STRATA_PERSIST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "datadir.h"
#include "snapshot.h"
#include "wal.h"

struct persist_ops {
    /* One key of the snapshot being loaded. */
    int (*load)(void *arg, const char *key, size_t klen, const char *val, size_t vlen,
                int64_t expire_ms, char *err, size_t errlen);
    /* One log record (a payload the owner appended), in log order. */
    int (*apply)(void *arg, const unsigned char *p, size_t n, char *err, size_t errlen);
    /* Writes every key with snapshot_writer_add; 0 or -1 (w->err says why).
     * Runs in a forked child for BGSAVE, so it must only read. */
    int (*dump)(void *arg, struct snapshot_writer *w);
    /* Optional: the snapshot about to load holds nkeys keys (size the
     * table for them once); called again with 0 when the load is over. */
    void (*reserve)(void *arg, uint64_t nkeys);
};

struct persist {
    struct datadir dd;
    struct wal wal;
    const struct persist_ops *ops;
    void *arg;
    int open;
    uint64_t id;               /* dataset id */
    int has_snapshot;
    uint64_t snap_offset;      /* log offset of snapshot.db */
    uint64_t snap_size;        /* its bytes */
    int64_t last_save_ms;      /* LASTSAVE: the last good snapshot (or the start) */
    uint64_t compact_min;      /* bytes of log before automatic compaction */
    int compact_pct;
    int auto_compact;          /* 0 turns automatic compaction off */
    /* BGSAVE */
    pid_t child;               /* 0 when none */
    uint64_t child_offset;
    int64_t child_start_ms;
    int last_bgsave_ok;
    int64_t last_bgsave_ms;    /* how long the last one took */
    uint64_t snapshots, compactions;
    /* Automatic compaction pacing (persist_should_compact). */
    uint64_t compact_base;     /* log bytes since the snapshot when it completed */
    int64_t compact_after_ms;  /* no automatic compaction before this */
    /* what the last recovery did */
    uint64_t loaded_keys, replayed_records, truncated_bytes;
    double load_seconds;
};

/* Locks dir, recovers from it (calling ops->load and ops->apply), and opens
 * the log for appending. 0, or -1 with err (and nothing left open). */
int persist_open(struct persist *p, const char *dir, int fsync_policy, const struct persist_ops *ops,
                 void *arg, char *err, size_t errlen);
/* Syncs the log, stops a running BGSAVE child, unlocks. */
void persist_close(struct persist *p);

/* Appends a record (see wal_append) and returns the offset a reply for it
 * must wait for, or 0 when memory runs out. */
static inline uint64_t persist_append(struct persist *p, const void *payload, size_t n)
{
    return wal_append(&p->wal, payload, n);
}

/* SAVE: a snapshot written by this process, now. 0 or -1 with err. */
int persist_save(struct persist *p, char *err, size_t errlen);
/* BGSAVE: rotates the log and forks a child that writes the snapshot.
 * Returns the child's pid, or -1 with err. The owner reports the child's
 * exit with persist_bgsave_done (libev reaps children on the default loop,
 * so the owner watches it with ev_child). */
pid_t persist_bgsave(struct persist *p, char *err, size_t errlen);
void persist_bgsave_done(struct persist *p, int status);
/* 1 when an automatic compaction should start now (now_ms: wall clock).
 * The log must have grown by max(compact_min, the snapshot's size x
 * compact_pct) since the last snapshot *completed*: the log written while a
 * BGSAVE ran is not counted against it (a new compaction right away would
 * remove only that). And compactions are spaced: after one the next waits
 * at least as long as it took (and PERSIST_COMPACT_GAP_MS), so at most
 * half of the time is spent compacting; after a failure it waits
 * PERSIST_COMPACT_RETRY_MS. */
int persist_should_compact(const struct persist *p, int64_t now_ms);
#define PERSIST_COMPACT_GAP_MS 1000
#define PERSIST_COMPACT_RETRY_MS 5000

/* Bytes of log since the snapshot (what recovery would replay). */
static inline uint64_t persist_log_bytes(const struct persist *p)
{
    return p->wal.end - (p->has_snapshot ? p->snap_offset : 0);
}

#endif

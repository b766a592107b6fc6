/* snapshot: a point-in-time copy of the whole keyspace, consistent at one
 * log offset, in one file.
 *
 * Layout: a 48-byte file header, then records framed exactly like log
 * records (wal.h: length, payload CRC, header CRC), then nothing:
 *
 *     "STRATSNP" | u32 version (1) | u32 0 | u64 dataset id | u64 log offset
 *     | i64 created (ms since the epoch) | u32 0 | u32 mask(crc32c(44 bytes))
 *
 *     entries record:  msgpack [1, key, value, expire_ms, key, value, ...]
 *     end record:      msgpack [2, entry count]
 *
 * Keys and values are msgpack bin; expire_ms is the absolute expiry in ms
 * since the epoch, 0 for none. The end record is always last; a file
 * without it, or with any record failing its check, is not a snapshot.
 *
 * The file is built as "snapshot.db.tmp.PID" and renamed over "snapshot.db"
 * only after an fsync, then the directory is fsynced: a reader only ever
 * sees a complete snapshot (the old one or the new one). The writer is
 * plain blocking I/O because it runs in a forked child (BGSAVE) or while the
 * server is deliberately stopped (SAVE, shutdown). */
#ifndef STRATA_SNAPSHOT_H
#define STRATA_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define SNAPSHOT_NAME "snapshot.db"
#define SNAPSHOT_HDR 48

struct snapshot_hdr {
    uint64_t id;          /* dataset id, shared with the log segments */
    uint64_t offset;      /* log offset the snapshot is consistent at */
    int64_t created_ms;
};

struct snapshot_writer {
    int fd;
    char dir[1024];
    char tmp[1200];
    struct buf chunk;     /* the entries record being filled */
    uint32_t nchunk;      /* entries in it */
    struct buf frame;
    uint64_t count;
    uint64_t bytes;
    char err[2400];       /* room for two paths */
};

/* Creates the temporary file and writes the header. 0 or -1 with err. */
int snapshot_writer_open(struct snapshot_writer *w, const char *dir, const struct snapshot_hdr *h,
                         char *err, size_t errlen);
/* Adds one key. 0, or -1 with w->err (the writer must then be aborted). */
int snapshot_writer_add(struct snapshot_writer *w, const void *key, size_t klen, const void *val,
                        size_t vlen, int64_t expire_ms);
/* Writes the end record, fsyncs, renames over SNAPSHOT_NAME, fsyncs the
 * directory. 0 or -1 with err (the temporary file is removed). */
int snapshot_writer_finish(struct snapshot_writer *w, char *err, size_t errlen);
/* Removes the temporary file. */
void snapshot_writer_abort(struct snapshot_writer *w);

typedef int (*snapshot_entry_fn)(void *arg, const char *key, size_t klen, const char *val,
                                 size_t vlen, int64_t expire_ms, char *err, size_t errlen);

/* Reads only the header. 0, 1 when the file does not exist, -1 with err. */
int snapshot_read_header(const char *path, struct snapshot_hdr *h, char *err, size_t errlen);
/* Reads a whole snapshot, calling fn for each key. 0, 1 when the file does
 * not exist, -1 with err when it is damaged, incomplete, or fn failed. */
int snapshot_read(const char *path, struct snapshot_hdr *h, snapshot_entry_fn fn, void *arg,
                  uint64_t *count, char *err, size_t errlen);

/* Told, before the first key, how many keys the snapshot holds (from its
 * end record), so the reader can size its table once. */
typedef void (*snapshot_size_fn)(void *arg, uint64_t nkeys);
/* snapshot_read, calling size_fn (may be NULL) first. */
int snapshot_read_sized(const char *path, struct snapshot_hdr *h, snapshot_size_fn size_fn,
                        snapshot_entry_fn fn, void *arg, uint64_t *count, char *err,
                        size_t errlen);

/* The same over bytes in memory (`name` is for messages). */
int snapshot_read_buf(const void *p, size_t n, const char *name, struct snapshot_hdr *h,
                      snapshot_entry_fn fn, void *arg, uint64_t *count, char *err, size_t errlen);

#endif

/* repl_proto: the frames of the replication stream, shared by the primary
 * (repl_primary) and the replica (repl_replica).
 *
 * After the handshake (docs/db.md, "Replication") the stream is a run of
 * records framed exactly like the log's (wal.h: length, payload CRC, header
 * CRC), so a damaged frame is always detected: the link is dropped and the
 * frame is never applied. A record's payload is msgpack, and its first
 * array's first element says what it is:
 *
 *     1..63   a log record, byte for byte as it is in the primary's log
 *             (db_ops.h effects): the replica applies it and appends it to
 *             its own log, so both logs hold the same records at the same
 *             offsets. Any effect the log can carry replicates unchanged.
 *     [64, offset, now_ms]              heartbeat: the sender's log offset
 *     [65, key, value, expire_ms, ...]  full resync: a chunk of keys
 *     [66, key count, offset]           full resync: the end of the keys;
 *                                       the copy is whole once the replica
 *                                       has applied the log up to offset
 *
 * Codes 64 and up are stream control and never enter a log. The handshake
 * carries a protocol version (REPL_PROTO_VERSION): a primary refuses a
 * version it does not speak. */
#ifndef STRATA_REPL_PROTO_H
#define STRATA_REPL_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "stream_frame.h"

#define REPL_PROTO_VERSION 1
/* Keys per snapshot chunk are added until its payload reaches this. */
#define REPL_CHUNK_BYTES (64 * 1024)

/* The frame codes are the change stream's (engine/stream/stream_frame.h):
 * the decoder is shared with the caches that follow a db. */
enum {
    REPL_OP_HEARTBEAT = STREAM_OP_HEARTBEAT,
    REPL_OP_ENTRIES = STREAM_OP_ENTRIES,
    REPL_OP_END = STREAM_OP_END,
};
enum {
    REPL_FRAME_LOG = STREAM_FRAME_LOG,
    REPL_FRAME_HEARTBEAT = STREAM_FRAME_HEARTBEAT,
    REPL_FRAME_ENTRIES = STREAM_FRAME_ENTRIES,
    REPL_FRAME_END = STREAM_FRAME_END,
};

struct repl_frame {
    int kind;                   /* REPL_FRAME_* */
    const unsigned char *payload;
    size_t plen;
    int64_t a, b;               /* heartbeat: offset, ms; end: count, offset */
};

/* Reads one frame from p[0..n): returns the bytes it spans (for a log
 * record, what it adds to the log offset), -2 when more bytes are needed,
 * -1 with err when the frame fails its check or is not one of the above. */
ssize_t repl_frame_next(const void *p, size_t n, struct repl_frame *f, char *err, size_t errlen);

/* Appends a framed heartbeat / end record to out. 0 or -1 (memory). */
int repl_frame_heartbeat(struct buf *out, uint64_t offset, int64_t now_ms);
int repl_frame_end(struct buf *out, uint64_t count, uint64_t offset);

/* A chunk of keys being built for a full resync. */
struct repl_chunk {
    struct buf body;            /* the packed keys */
    struct buf scratch;
    uint32_t n;
};
void repl_chunk_init(struct repl_chunk *c);
void repl_chunk_free(struct repl_chunk *c);
/* Adds one key. 0 or -1 (memory). */
int repl_chunk_add(struct repl_chunk *c, const void *k, size_t kl, const void *v, size_t vl,
                   int64_t expire_ms);
/* Appends the chunk as one framed record to out and empties it (nothing
 * when empty). 0 or -1. */
int repl_chunk_flush(struct repl_chunk *c, struct buf *out);

typedef int (*repl_entry_fn)(void *arg, const char *k, size_t kl, const char *v, size_t vl,
                             int64_t expire_ms);
/* Calls fn for every key of an entries record (f->kind REPL_FRAME_ENTRIES).
 * 0, -1 with err when it does not decode, or fn's -1. */
int repl_entries_each(const struct repl_frame *f, repl_entry_fn fn, void *arg, char *err,
                      size_t errlen);

#endif

/* stream_frame: the frames of a db's change stream, and the keys a log
 * record touches.
 *
 * A db primary streams its log to whoever follows it: its replicas
 * (engine/db/repl_replica) and the caches that invalidate from it
 * (engine/cache/cache_inval). Both read the same frames, so the format is
 * decoded here, below both (docs/db.md, "The stream"):
 *
 *     u32 len | u32 mask(crc32c(payload)) | u32 mask(crc32c(8 bytes)) | payload
 *
 * framed like a log record, with a msgpack payload whose first array's
 * first element says what the frame is:
 *
 *     1..63   a log record (the db's logged effects, one command's worth):
 *             [1, key, value, expire_ms] [2, key] [3, key, expire_ms] [4]
 *     [64, offset, now_ms]              heartbeat
 *     [65, key, value, expire_ms, ...]  full resync: a chunk of keys
 *     [66, key count, offset]           full resync: the end of the keys
 *
 * A follower that keeps no data needs only which keys a record touches:
 * stream_record_keys walks a record's effects and yields each key, or
 * "every key" for a flush. */
#ifndef STRATA_STREAM_FRAME_H
#define STRATA_STREAM_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

#define STREAM_FRAME_HDR 12
/* One frame holds one command's effects; values are at most 512 MB. */
#define STREAM_FRAME_MAX (1100u * 1024 * 1024)

enum { STREAM_OP_HEARTBEAT = 64, STREAM_OP_ENTRIES = 65, STREAM_OP_END = 66 };
enum { STREAM_FRAME_LOG, STREAM_FRAME_HEARTBEAT, STREAM_FRAME_ENTRIES, STREAM_FRAME_END };

struct stream_frame {
    int kind;                   /* STREAM_FRAME_* */
    const unsigned char *payload;
    size_t plen;
    int64_t a, b;               /* heartbeat: offset, ms; end: count, offset */
};

/* Appends one framed payload to out. 0, or -1 (too long, out of memory). */
int stream_frame_append(struct buf *out, const void *payload, size_t n);
/* Checks the framing of one frame at p[0..n): the bytes it spans with its
 * payload, -2 when more bytes are needed, -1 when it fails its check. */
ssize_t stream_frame_parse(const void *p, size_t n, const unsigned char **payload, size_t *plen);
/* Reads and classifies one frame: the bytes it spans (for a log record,
 * what it adds to the log offset), -2 when more bytes are needed, -1 with
 * err when it fails its check or is none of the above. */
ssize_t stream_frame_next(const void *p, size_t n, struct stream_frame *f, char *err,
                          size_t errlen);

/* Called for each key a record touches; key NULL (klen 0) for "every key"
 * (a flush). A non-zero return stops the walk and is returned. */
typedef int (*stream_key_fn)(void *arg, const char *key, size_t klen);
/* Walks the effects of one log record's payload. 0, fn's non-zero value,
 * or -1 with err when the record does not decode (nothing was yielded for
 * the effect that does not). */
int stream_record_keys(const void *payload, size_t plen, stream_key_fn fn, void *arg, char *err,
                       size_t errlen);

#endif

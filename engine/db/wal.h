/* wal: the db's append-only log — record framing, segment files, a writer
 * with group commit and fsync policies, and a reader that tells a torn tail
 * from corruption.
 *
 * A record is a 12-byte header and a payload (msgpack, opaque here):
 *
 *     u32 len | u32 mask(crc32c(payload)) | u32 mask(crc32c(first 8 bytes))
 *
 * all little-endian. The header carries its own CRC so that a damaged
 * length is recognised as damage: without it a flipped bit in `len` would
 * make a record seem to run past the end of the file, which looks exactly
 * like a write that was cut short, and mid-log corruption would be silently
 * truncated away as a "torn tail".
 *
 * Positions are logical byte offsets in one endless stream (what replication
 * calls the replication offset). The stream is cut into segment files, each
 * named after the offset of its first record ("log-<16 hex>.wal") and
 * starting with a 32-byte file header:
 *
 *     "STRATLOG" | u64 dataset id | u64 start offset | u32 mask(crc32c(24 bytes)) | u32 flags
 *
 * A new segment starts whenever a snapshot is taken, so a snapshot at offset
 * P is followed by the segment "log-P.wal", and the segments before it can
 * be deleted once the snapshot is durable (that is the log compaction).
 *
 * flags is 0, or WAL_SEG_UNSEALED (1) while the segment before it may not
 * be durable yet: under everysec a rotation creates the new segment at once
 * and lets the fsync thread sync the old one, then clear the flag (see
 * "rotation" below). Recovery reads a torn segment followed by an unsealed
 * one as a power cut inside the everysec window, not as damage.
 *
 * Writing: records are appended to an in-memory batch; wal_flush writes the
 * batch in one pwrite and, under fsync=always, one fdatasync (group commit:
 * the server flushes once per loop iteration, so every write of that
 * iteration shares the fsync). Under fsync=everysec a helper thread runs
 * fdatasync once a second so that the loop never waits on the disk. A reply
 * may be released once wal_acked() has reached its record's end offset:
 * the synced offset under always, the written offset otherwise.
 *
 * Under everysec the thread also does every other slow disk call, so that
 * no append waits on one: it preallocates the segment ahead of the write
 * position (with delayed allocation, a sync's writeback allocating blocks
 * holds a lock an append to the same file needs: appends waited 13-45 ms
 * behind fdatasync without it), syncs and closes a rotated-out segment and
 * removes compacted ones (wal_remove_later). Rotation: the loop writes the
 * old segment to its end and creates the new one unsealed, without a
 * sync; the thread syncs and closes the old one, then seals the new one
 * and syncs the directory. At most one segment is unsealed: a rotation
 * while the previous one's sync is still pending waits for it.
 *
 * Errors: a failed write or fsync leaves the unwritten (or, under always,
 * the unsynced) bytes in the batch and sets w->err; the next wal_flush
 * retries them from the same file position, so a disk that comes back
 * (space freed, a transient EIO) is picked up by itself. Under always the
 * bytes are rewritten after a failed fsync, because after such a failure the
 * kernel may have dropped the dirty pages and a second fsync can report
 * success for data that never reached the disk. */
#ifndef STRATA_WAL_H
#define STRATA_WAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"

#define WAL_REC_HDR 12
#define WAL_FILE_HDR 32
#define WAL_SEG_UNSEALED 1
/* A record holds one command's effects; values are at most 512 MB. */
#define WAL_MAX_RECORD (1100u * 1024 * 1024)

enum wal_fsync { WAL_FSYNC_NO, WAL_FSYNC_EVERYSEC, WAL_FSYNC_ALWAYS };

/* "always" | "everysec" | "no" -> policy; -1 when unknown. */
int wal_fsync_parse(const char *s);
const char *wal_fsync_name(int policy);

/* --- framing ------------------------------------------------------------ */
/* Appends one framed record to out. 0, or -1 (too long, out of memory). */
int wal_frame_append(struct buf *out, const void *payload, size_t n);
/* Reads one record from p[0..n): returns the bytes it spans with the payload
 * in *payload and *plen, -2 when the bytes end inside it (a torn record), -1 when
 * the header or the payload fails its check. */
ssize_t wal_frame_parse(const void *p, size_t n, const unsigned char **payload, size_t *plen);

/* --- scanning ----------------------------------------------------------- */
enum wal_scan_status {
    WAL_SCAN_CLEAN,   /* every byte belongs to a valid record */
    WAL_SCAN_TORN,    /* valid records, then an incomplete last record */
    WAL_SCAN_CORRUPT, /* a damaged record with data after it, or a payload the callback rejected */
};

struct wal_scan {
    int status;
    size_t end;        /* bytes covered by valid records */
    size_t records;
    char err[200];
};

/* Called for each valid record; `off` is its position in the scanned bytes.
 * Returning -1 (with a message in err) stops the scan as CORRUPT. */
typedef int (*wal_record_fn)(void *arg, const unsigned char *p, size_t n, size_t off, char *err,
                             size_t errlen);

/* Scans a run of records (the bytes of a segment after its file header).
 *
 * The damage rules: a record cut short by the end of the data is a torn
 * tail, and so is a damaged record (bad header or payload checksum) when
 * no valid record follows it anywhere in the data: that is a write that
 * did not finish (a file extended with zeros by the filesystem, a payload
 * that never reached the disk). A damaged record with a valid record after
 * it is corruption: the log lost something it had acknowledged.
 * Returns out->status. */
int wal_scan_buf(const void *data, size_t len, wal_record_fn fn, void *arg, struct wal_scan *out);

/* --- segment files ------------------------------------------------------ */
struct wal_seg {
    uint64_t start;    /* from the file name */
    char name[32];
};

/* The segments in dir, sorted by start offset (*out is malloc'ed). */
int wal_list(const char *dir, struct wal_seg **out, size_t *n, char *err, size_t errlen);
void wal_seg_name(uint64_t start, char *out, size_t n);

struct wal_seg_read {
    uint64_t id;          /* dataset id from the file header */
    uint64_t start;
    int short_header;     /* the file ends inside its header (a torn creation) */
    int unsealed;         /* created before its predecessor was synced (WAL_SEG_UNSEALED) */
    size_t file_size;
    struct wal_scan scan; /* positions in scan are relative to the first record */
};

/* Reads and scans one segment file. Returns 0 when the file could be read
 * (look at r->scan.status and r->short_header), -1 when it could not be
 * opened or its header is damaged or names another start offset. */
int wal_read_segment(const char *path, wal_record_fn fn, void *arg, struct wal_seg_read *r,
                     char *err, size_t errlen);

/* --- the writer ---------------------------------------------------------- */
struct wal_syncer; /* the everysec helper thread */

struct wal {
    char dir[1024];
    int fd;                /* current segment, -1 when closed */
    int policy;
    uint64_t id;           /* dataset id */
    uint64_t seg_start;    /* logical offset of the current segment's first record */
    uint64_t end;          /* after the last appended record */
    uint64_t written;      /* bytes handed to the kernel */
    uint64_t synced;       /* bytes known durable */
    struct buf batch;      /* bytes from batch_base to end */
    uint64_t batch_base;
    /* Errors: errno of the last failure (0 when the last attempt worked). */
    int write_err, sync_err;
    char errmsg[256];
    int64_t err_since_ms;
    uint64_t write_errors, sync_errors;
    /* Fault injection: the next `inject_left` writes/fsyncs fail with
     * inject_errno (-1: until turned off). Only the DEBUG command sets it. */
    int inject_left;
    int inject_errno;
    int inject_what;       /* WAL_INJECT_* */
    struct wal_syncer *syncer;
    uint64_t fsyncs;
    int64_t last_sync_ms;
};

/* Opens the writer on a new segment starting at `start` (the file must not
 * exist). Returns 0 or -1 with err. */
int wal_create(struct wal *w, const char *dir, uint64_t id, uint64_t start, int policy, char *err,
               size_t errlen);
/* Opens the writer on an existing segment to append after `valid_len` bytes
 * of records (the file is cut to that length first: recovery found a torn
 * tail there, or nothing). A segment whose header was torn is rewritten. */
int wal_resume(struct wal *w, const char *dir, uint64_t id, uint64_t start, size_t valid_len,
               int policy, char *err, size_t errlen);
/* Flushes and syncs what is pending (best effort) and closes. */
void wal_close(struct wal *w);

/* Appends a framed record to the batch; returns the end offset a reply for
 * it must wait for, or 0 when memory runs out. */
uint64_t wal_append(struct wal *w, const void *payload, size_t n);
/* Writes the batch; under always also fdatasyncs. 0, or -1 with w->errmsg
 * (the bytes stay in the batch for the next call). */
int wal_flush(struct wal *w);
/* Under everysec: starts a background fdatasync of what is written (if one
 * is not still running) and collects the result of the previous one. Call
 * about once a second; harmless under other policies. */
void wal_sync_tick(struct wal *w, int64_t now_ms);
/* Collects a finished background fsync (cheap; call every iteration). */
void wal_sync_poll(struct wal *w);
/* Writes and fdatasyncs everything now, waiting for the helper thread. */
int wal_sync_now(struct wal *w);
/* Starts a new segment at the current end; an empty current segment is
 * kept as it is. Under always and no everything is written and synced
 * first, on the caller's thread; under everysec the old segment is written
 * to its end and the fsync thread syncs it (see the header comment).
 * Returns 0 or -1 with err; on failure the old segment stays. */
int wal_rotate(struct wal *w, char *err, size_t errlen);
/* Removes a file of the data dir (a compacted segment): by the fsync thread
 * under everysec (unlinking a large file takes tens of ms), at once
 * otherwise; the directory is synced after. 0, or -1 with errno. */
int wal_remove_later(struct wal *w, const char *path);

/* Offset up to which replies may be released (see the policy rules). */
static inline uint64_t wal_acked(const struct wal *w)
{
    return w->policy == WAL_FSYNC_ALWAYS ? w->synced : w->written;
}
static inline int wal_ok(const struct wal *w) { return w->write_err == 0 && w->sync_err == 0; }
/* Bytes of the current segment (records only). */
static inline uint64_t wal_seg_size(const struct wal *w) { return w->end - w->seg_start; }

enum { WAL_INJECT_WRITE = 1, WAL_INJECT_FSYNC = 2 };
/* Test hook behind DEBUG: makes the next n writes and/or fsyncs (`what`,
 * WAL_INJECT_* bits) fail with err (n < 0: all of them until called again
 * with n = 0). */
void wal_inject_errors(struct wal *w, int n, int what, int err);

#endif

/* persist: recovery, snapshots and compaction over wal and snapshot files
 * (the rules are in persist.h). */
#include "persist.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crc32c.h"
#include "log.h"
#include "util.h"

#define DEFAULT_COMPACT_MIN (64ull * 1024 * 1024)

static uint64_t new_dataset_id(void)
{
    uint64_t id = 0;
    if (getrandom(&id, sizeof id, 0) != (ssize_t)sizeof id)
        id = (uint64_t)util_now_ms() * 6364136223846793005ull ^ (uint64_t)getpid();
    return id ? id : 1;
}

struct replay {
    struct persist *p;
    const char *file;
};

static int replay_fn(void *arg, const unsigned char *pl, size_t n, size_t off, char *err,
                     size_t errlen)
{
    struct replay *r = arg;
    char why[200] = "";
    if (r->p->ops->apply(r->p->arg, pl, n, why, sizeof why) < 0) {
        snprintf(err, errlen, "record at byte %zu cannot be applied: %s",
                 off + WAL_FILE_HDR, why);
        return -1;
    }
    r->p->replayed_records++;
    return 0;
}

static void seg_path(const struct persist *p, uint64_t start, char *out, size_t n)
{
    char name[32];
    wal_seg_name(start, name, sizeof name);
    datadir_join(out, n, p->dd.path, name);
}

/* 1 when the segment starting at `start` says its predecessor may not be
 * durable (WAL_SEG_UNSEALED in its header). */
static int next_unsealed(const struct persist *p, uint64_t start)
{
    char path[1100];
    unsigned char h[WAL_FILE_HDR];
    seg_path(p, start, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t k = pread(fd, h, sizeof h, 0);
    close(fd);
    return k == (ssize_t)sizeof h && memcmp(h, "STRATLOG", 8) == 0 &&
           util_get_le32(h + 24) == crc32c_mask(crc32c(0, h, 24)) &&
           util_get_le32(h + 28) == WAL_SEG_UNSEALED;
}

/* Moves segments recovery will not use out of the log's way (renamed to
 * NAME.unsynced, kept for a human to look at). */
static void set_aside(const struct persist *p, const struct wal_seg *segs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char path[1100], to[1200];
        seg_path(p, segs[i].start, path, sizeof path);
        snprintf(to, sizeof to, "%s.unsynced", path);
        log_warn("db: %s was created just before a power cut, before the segment ahead of it "
                 "was synced: set aside as %s (the last second of writes under everysec)",
                 path, to);
        rename(path, to);
    }
    datadir_fsync_dir(p->dd.path);
}

/* Replays the segments from `from` on and opens the last for appending. */
static int recover_log(struct persist *p, struct wal_seg *segs, size_t nseg, int policy,
                       char *err, size_t errlen)
{
    uint64_t expect = p->has_snapshot ? p->snap_offset : 0;
    size_t first = 0;
    while (first < nseg && segs[first].start < expect)
        first++;
    if (first == nseg) {
        if (nseg == 0 && !p->has_snapshot) {
            p->id = new_dataset_id();
            return wal_create(&p->wal, p->dd.path, p->id, 0, policy, err, errlen);
        }
        snprintf(err, errlen,
                 "the snapshot is at log offset %llu but no log segment starts there "
                 "(expected %s/log-%016llx.wal)",
                 (unsigned long long)expect, p->dd.path, (unsigned long long)expect);
        return -1;
    }
    size_t valid_len = 0;
    for (size_t i = first; i < nseg; i++) {
        char path[1100];
        seg_path(p, segs[i].start, path, sizeof path);
        int last = i + 1 == nseg;
        if (segs[i].start != expect) {
            snprintf(err, errlen,
                     "log gap: '%s' starts at offset %llu but the data before it ends at %llu",
                     path, (unsigned long long)segs[i].start, (unsigned long long)expect);
            return -1;
        }
        struct replay rp = {p, path};
        struct wal_seg_read r;
        if (wal_read_segment(path, replay_fn, &rp, &r, err, errlen) < 0)
            return -1;
        if (!last && (r.short_header || r.scan.status == WAL_SCAN_TORN) &&
            next_unsealed(p, segs[i + 1].start)) {
            /* A power cut inside the everysec window of a rotation: this
             * segment's tail was not synced yet and the next one was
             * created before it was. What follows is newer still: the
             * lost last second, not damage. */
            set_aside(p, segs + i + 1, nseg - i - 1);
            nseg = i + 1;
            last = 1;
        }
        if (r.short_header) {
            if (!last) {
                snprintf(err, errlen, "'%s' is cut inside its header but is not the last segment",
                         path);
                return -1;
            }
            log_warn("db: %s has a torn header (created just before a crash): starting it anew",
                     path);
            p->truncated_bytes += r.file_size;
            valid_len = 0;
            continue;
        }
        if (r.start != segs[i].start) {
            snprintf(err, errlen, "'%s' says it starts at offset %llu, its name says %llu", path,
                     (unsigned long long)r.start, (unsigned long long)segs[i].start);
            return -1;
        }
        if (p->id == 0)
            p->id = r.id;
        if (r.id != p->id) {
            snprintf(err, errlen,
                     "'%s' belongs to another dataset (id %016llx, expected %016llx): "
                     "the snapshot and the log do not match",
                     path, (unsigned long long)r.id, (unsigned long long)p->id);
            return -1;
        }
        if (r.scan.status == WAL_SCAN_CORRUPT) {
            snprintf(err, errlen,
                     "log '%s' is corrupt: %s; refusing to start (the records after it were "
                     "acknowledged and would be lost)",
                     path, r.scan.err);
            return -1;
        }
        if (r.scan.status == WAL_SCAN_TORN) {
            if (!last) {
                snprintf(err, errlen, "log '%s' is cut short (%s) but more segments follow it",
                         path, r.scan.err);
                return -1;
            }
            size_t dropped = r.file_size - WAL_FILE_HDR - r.scan.end;
            p->truncated_bytes += dropped;
            log_warn("db: %s ends in an incomplete record (%s): dropping the last %zu bytes",
                     path, r.scan.err, dropped);
        }
        valid_len = r.scan.end;
        expect = segs[i].start + r.scan.end;
    }
    if (p->id == 0)
        p->id = new_dataset_id();
    /* Segments wholly before the snapshot were compacted away but a crash
     * came before their deletion. */
    for (size_t i = 0; i < first; i++) {
        char path[1100];
        seg_path(p, segs[i].start, path, sizeof path);
        log_info("db: removing %s (already in the snapshot)", path);
        unlink(path);
    }
    return wal_resume(&p->wal, p->dd.path, p->id, segs[nseg - 1].start, valid_len, policy, err,
                      errlen);
}

int persist_open(struct persist *p, const char *dir, int policy, const struct persist_ops *ops,
                 void *arg, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->wal.fd = -1;
    p->ops = ops;
    p->arg = arg;
    p->compact_min = DEFAULT_COMPACT_MIN;
    p->compact_pct = 100;
    p->auto_compact = 1;
    p->last_bgsave_ok = 1;
    int64_t t0 = util_mono_us();
    if (datadir_open(&p->dd, dir, err, errlen) < 0)
        return -1;
    char path[1100];
    datadir_join(path, sizeof path, dir, SNAPSHOT_NAME);
    struct snapshot_hdr h;
    int rc = snapshot_read_sized(path, &h, ops->reserve, ops->load, arg, &p->loaded_keys, err,
                                 errlen);
    if (ops->reserve)
        ops->reserve(arg, 0);
    if (rc < 0)
        goto fail;
    if (rc == 0) {
        struct stat st;
        p->has_snapshot = 1;
        p->id = h.id;
        p->snap_offset = h.offset;
        p->snap_size = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    }
    struct wal_seg *segs;
    size_t nseg;
    if (wal_list(dir, &segs, &nseg, err, errlen) < 0)
        goto fail;
    rc = recover_log(p, segs, nseg, policy, err, errlen);
    free(segs);
    if (rc < 0)
        goto fail;
    p->load_seconds = (double)(util_mono_us() - t0) / 1e6;
    p->last_save_ms = util_now_ms();
    p->open = 1;
    return 0;
fail:
    if (p->wal.fd >= 0)
        wal_close(&p->wal);
    datadir_close(&p->dd);
    return -1;
}

void persist_close(struct persist *p)
{
    if (!p->open)
        return;
    if (p->child > 0) {
        kill(p->child, SIGTERM);
        waitpid(p->child, NULL, 0); /* ECHILD if the loop reaped it: fine */
        p->child = 0;
    }
    wal_close(&p->wal);
    datadir_close(&p->dd);
    p->open = 0;
}

/* Deletes the segments that end at or before the snapshot's offset. */
static void drop_compacted(struct persist *p)
{
    struct wal_seg *segs;
    size_t n;
    char err[256];
    if (wal_list(p->dd.path, &segs, &n, err, sizeof err) < 0)
        return;
    int removed = 0;
    for (size_t i = 0; i < n; i++) {
        if (segs[i].start >= p->snap_offset || segs[i].start == p->wal.seg_start)
            continue;
        char path[1100];
        seg_path(p, segs[i].start, path, sizeof path);
        /* Unlinking a large file takes tens of ms: the log's thread does it. */
        if (wal_remove_later(&p->wal, path) == 0)
            removed++;
    }
    free(segs);
    if (removed)
        p->compactions++;
}

static void snapshot_done(struct persist *p, uint64_t offset)
{
    char path[1100];
    struct stat st;
    datadir_join(path, sizeof path, p->dd.path, SNAPSHOT_NAME);
    p->has_snapshot = 1;
    p->snap_offset = offset;
    p->snap_size = stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
    p->last_save_ms = util_now_ms();
    p->snapshots++;
    p->compact_base = p->wal.end - offset;
    drop_compacted(p);
}

/* Writes the snapshot for the current state; used in-process and in the
 * child. */
static int write_snapshot(struct persist *p, uint64_t offset, char *err, size_t errlen)
{
    struct snapshot_writer w;
    struct snapshot_hdr h = {p->id, offset, util_now_ms()};
    if (snapshot_writer_open(&w, p->dd.path, &h, err, errlen) < 0)
        return -1;
    if (p->ops->dump(p->arg, &w) < 0) {
        snprintf(err, errlen, "%s", w.err[0] ? w.err : "dump failed");
        snapshot_writer_abort(&w);
        return -1;
    }
    return snapshot_writer_finish(&w, err, errlen);
}

/* The cut both saves start from: no save already running, and everything
 * the keyspace reflects in the log before it, so that the snapshot and the
 * log agree on the returned offset. */
static int snapshot_cut(struct persist *p, uint64_t *offset, char *err, size_t errlen)
{
    if (p->child > 0) {
        snprintf(err, errlen, "Background save already in progress");
        return -1;
    }
    if (wal_rotate(&p->wal, err, errlen) < 0)
        return -1;
    *offset = p->wal.end;
    return 0;
}

int persist_save(struct persist *p, char *err, size_t errlen)
{
    uint64_t offset;
    if (snapshot_cut(p, &offset, err, errlen) < 0)
        return -1;
    if (write_snapshot(p, offset, err, errlen) < 0)
        return -1;
    snapshot_done(p, offset);
    return 0;
}

pid_t persist_bgsave(struct persist *p, char *err, size_t errlen)
{
    uint64_t offset;
    if (snapshot_cut(p, &offset, err, errlen) < 0)
        return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        /* The child: copy-on-write view of the keyspace at offset P. It
         * dies with its parent (a node killed mid-save leaves no orphan
         * behind) and keeps none of the parent's descriptors: not the
         * listening sockets (new clients would connect to a process that
         * never answers), not the data dir's lock (a restarted node could
         * not take it). It writes by path and logs to stderr only. */
        char cerr[512];
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        close_range(3, ~0U, 0);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_IGN);
        int rc = write_snapshot(p, offset, cerr, sizeof cerr);
        if (rc < 0)
            log_error("db: background snapshot failed: %s", cerr);
        _exit(rc < 0 ? 1 : 0);
    }
    p->child = pid;
    p->child_offset = offset;
    p->child_start_ms = util_now_ms();
    return pid;
}

void persist_bgsave_done(struct persist *p, int status)
{
    if (p->child <= 0)
        return;
    p->child = 0;
    p->last_bgsave_ms = util_now_ms() - p->child_start_ms;
    int64_t gap = p->last_bgsave_ms > PERSIST_COMPACT_GAP_MS ? p->last_bgsave_ms
                                                             : PERSIST_COMPACT_GAP_MS;
    p->compact_after_ms = util_now_ms() + gap;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
        p->last_bgsave_ok = 1;
        snapshot_done(p, p->child_offset);
        log_info("db: snapshot at log offset %llu written in %lld ms",
                 (unsigned long long)p->child_offset, (long long)p->last_bgsave_ms);
    } else {
        p->last_bgsave_ok = 0;
        p->compact_after_ms = util_now_ms() + PERSIST_COMPACT_RETRY_MS;
        log_error("db: background snapshot %s %d", WIFSIGNALED(status) ? "killed by signal" : "exited",
                  WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    }
}

int persist_should_compact(const struct persist *p, int64_t now_ms)
{
    if (!p->auto_compact || p->child > 0 || now_ms < p->compact_after_ms)
        return 0;
    uint64_t log = persist_log_bytes(p);
    uint64_t grown = log > p->compact_base ? log - p->compact_base : 0;
    uint64_t need = p->snap_size * (uint64_t)p->compact_pct / 100;
    if (need < p->compact_min)
        need = p->compact_min;
    return grown >= need;
}

/* wal: record framing, segment files, the group-commit writer and the
 * everysec fsync thread. The format and the rules are described in wal.h. */
#include "wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "datadir.h"
#include "util.h"

static const char FILE_MAGIC[8] = {'S', 'T', 'R', 'A', 'T', 'L', 'O', 'G'};

int wal_fsync_parse(const char *s)
{
    if (strcmp(s, "always") == 0)
        return WAL_FSYNC_ALWAYS;
    if (strcmp(s, "everysec") == 0)
        return WAL_FSYNC_EVERYSEC;
    if (strcmp(s, "no") == 0)
        return WAL_FSYNC_NO;
    return -1;
}

const char *wal_fsync_name(int policy)
{
    return policy == WAL_FSYNC_ALWAYS ? "always" : policy == WAL_FSYNC_EVERYSEC ? "everysec" : "no";
}

/* --- framing ------------------------------------------------------------ */

int wal_frame_append(struct buf *out, const void *payload, size_t n)
{
    if (n > WAL_MAX_RECORD)
        return -1;
    if (buf_reserve(out, WAL_REC_HDR + n) < 0)
        return -1;
    unsigned char *h = (unsigned char *)buf_tail(out);
    util_put_le32(h, (uint32_t)n);
    util_put_le32(h + 4, crc32c_mask(crc32c(0, payload, n)));
    util_put_le32(h + 8, crc32c_mask(crc32c(0, h, 8)));
    memcpy(h + WAL_REC_HDR, payload, n);
    buf_commit(out, WAL_REC_HDR + n);
    return 0;
}

/* 1 when the 12-byte header at h is intact. */
static int header_ok(const unsigned char *h)
{
    return util_get_le32(h + 8) == crc32c_mask(crc32c(0, h, 8)) && util_get_le32(h) <= WAL_MAX_RECORD;
}

ssize_t wal_frame_parse(const void *p, size_t n, const unsigned char **payload, size_t *plen)
{
    const unsigned char *h = p;
    if (n < WAL_REC_HDR)
        return -2;
    if (!header_ok(h))
        return -1;
    size_t len = util_get_le32(h);
    if (n - WAL_REC_HDR < len)
        return -2;
    if (util_get_le32(h + 4) != crc32c_mask(crc32c(0, h + WAL_REC_HDR, len)))
        return -1;
    *payload = h + WAL_REC_HDR;
    *plen = len;
    return (ssize_t)(WAL_REC_HDR + len);
}

/* 1 when a complete valid record starts anywhere in d[from..len). This is
 * what tells damage at the tail (nothing valid after it: a write that did
 * not finish) from damage in the middle (valid records after it: the log
 * lost data it had acknowledged). Only runs on the failure path. */
static int valid_record_after(const unsigned char *d, size_t len, size_t from)
{
    for (size_t o = from; o + WAL_REC_HDR <= len; o++) {
        const unsigned char *pl;
        size_t plen;
        if (header_ok(d + o) && wal_frame_parse(d + o, len - o, &pl, &plen) > 0)
            return 1;
    }
    return 0;
}

static int all_zero(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

int wal_scan_buf(const void *data, size_t len, wal_record_fn fn, void *arg, struct wal_scan *out)
{
    const unsigned char *d = data;
    size_t off = 0;
    memset(out, 0, sizeof *out);
    while (off < len) {
        const unsigned char *pl;
        size_t plen;
        ssize_t k = wal_frame_parse(d + off, len - off, &pl, &plen);
        if (k == -2) {
            out->status = WAL_SCAN_TORN;
            snprintf(out->err, sizeof out->err, "incomplete record at byte %zu", off);
            break;
        }
        if (k == -1) {
            const unsigned char *h = d + off;
            int torn = !valid_record_after(d, len, off + 1);
            out->status = torn ? WAL_SCAN_TORN : WAL_SCAN_CORRUPT;
            snprintf(out->err, sizeof out->err, "%s at byte %zu (%zu bytes follow it)",
                     header_ok(h) ? "record fails its checksum" : "damaged record header", off,
                     len - off);
            break;
        }
        if (fn && fn(arg, pl, plen, off, out->err, sizeof out->err) < 0) {
            out->status = WAL_SCAN_CORRUPT;
            break;
        }
        off += (size_t)k;
        out->records++;
    }
    out->end = off;
    return out->status;
}

/* --- segment files ------------------------------------------------------ */

void wal_seg_name(uint64_t start, char *out, size_t n)
{
    snprintf(out, n, "log-%016" PRIx64 ".wal", start);
}

static int parse_seg_name(const char *s, uint64_t *start)
{
    size_t n = strlen(s);
    if (n != 4 + 16 + 4 || memcmp(s, "log-", 4) != 0 || strcmp(s + 20, ".wal") != 0)
        return -1;
    uint64_t v = 0;
    for (int i = 4; i < 20; i++) {
        char c = s[i];
        int x = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (x < 0)
            return -1;
        v = v << 4 | (uint64_t)x;
    }
    *start = v;
    return 0;
}

static int seg_cmp(const void *a, const void *b)
{
    uint64_t x = ((const struct wal_seg *)a)->start, y = ((const struct wal_seg *)b)->start;
    return x < y ? -1 : x > y;
}

int wal_list(const char *dir, struct wal_seg **out, size_t *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "cannot read data dir '%s': %s", dir, strerror(errno));
        return -1;
    }
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        uint64_t start;
        if (parse_seg_name(de->d_name, &start) < 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            struct wal_seg *nv = realloc(*out, cap * sizeof **out);
            if (!nv) {
                closedir(d);
                free(*out);
                *out = NULL;
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            *out = nv;
        }
        (*out)[*n].start = start;
        /* parse_seg_name accepted it, so it fits; the precision says so. */
        snprintf((*out)[*n].name, sizeof (*out)[*n].name, "%.*s",
                 (int)sizeof (*out)[*n].name - 1, de->d_name);
        (*n)++;
    }
    closedir(d);
    if (*n)
        qsort(*out, *n, sizeof **out, seg_cmp);
    return 0;
}

static void file_header(unsigned char h[WAL_FILE_HDR], uint64_t id, uint64_t start)
{
    memset(h, 0, WAL_FILE_HDR);
    memcpy(h, FILE_MAGIC, 8);
    util_put_le64(h + 8, id);
    util_put_le64(h + 16, start);
    util_put_le32(h + 24, crc32c_mask(crc32c(0, h, 24)));
}

int wal_read_segment(const char *path, wal_record_fn fn, void *arg, struct wal_seg_read *r,
                     char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        snprintf(err, errlen, "cannot stat '%s': %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    r->file_size = (size_t)st.st_size;
    unsigned char h[WAL_FILE_HDR];
    if (r->file_size < WAL_FILE_HDR) {
        /* Created but its header never fully reached the disk. */
        close(fd);
        r->short_header = 1;
        return 0;
    }
    if (pread(fd, h, sizeof h, 0) != (ssize_t)sizeof h) {
        snprintf(err, errlen, "cannot read '%s': %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (memcmp(h, FILE_MAGIC, 8) != 0 || util_get_le32(h + 24) != crc32c_mask(crc32c(0, h, 24))) {
        if (all_zero(h, sizeof h) && r->file_size == WAL_FILE_HDR) {
            close(fd);
            r->short_header = 1;
            return 0;
        }
        snprintf(err, errlen, "'%s' has a damaged or foreign file header", path);
        close(fd);
        return -1;
    }
    r->id = util_get_le64(h + 8);
    r->start = util_get_le64(h + 16);
    r->unsealed = util_get_le32(h + 28) == WAL_SEG_UNSEALED;
    size_t len = r->file_size - WAL_FILE_HDR;
    if (len == 0) {
        close(fd);
        return 0;
    }
    /* mmap: recovery reads the whole log once, front to back. */
    void *m = mmap(NULL, r->file_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "cannot map '%s': %s", path, strerror(errno));
        return -1;
    }
    madvise(m, r->file_size, MADV_SEQUENTIAL);
    wal_scan_buf((const char *)m + WAL_FILE_HDR, len, fn, arg, &r->scan);
    munmap(m, r->file_size);
    return 0;
}

/* --- the everysec helper thread ------------------------------------------ */

/* The thread does every slow disk call of everysec so that the loop never
 * waits on one: the periodic fdatasync, the sync and close of a segment
 * left by a rotation, preallocation ahead of the write position, and the
 * removal of compacted segments.
 *
 * Why preallocation: on a filesystem with delayed allocation (ext4), the
 * writeback that fdatasync starts allocates the file's blocks with the
 * inode's block map locked, and an append to the same file needs that lock
 * to reserve its own blocks: the loop's pwrite then waits for the sync
 * (13-45 ms measured). Blocks reserved ahead with fallocate (size kept) are
 * already mapped, so writeback allocates nothing and an append takes no
 * lock the sync holds. A filesystem without fallocate just goes on without.
 *
 * Descriptors: the thread syncs the writer's own segment descriptor (a dup
 * per sync failed with EMFILE when the node was out of descriptors, and
 * that looked like a failing disk), and the data dir's descriptor is opened
 * once at start. The loop never closes a descriptor the thread may use: a
 * rotated-out segment is closed by the thread itself once it is synced,
 * and the current one only after syncer_wait_idle. */
#define WAL_UNLINK_MAX 16
#define WAL_PREALLOC_MIN (4u << 20)
#define WAL_PREALLOC_MAX (256u << 20)

struct wal_syncer {
    pthread_t th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int dir_fd;
    int kick, busy, quit;
    /* The periodic sync: the writer's current segment up to job_target. */
    int job_fd;            /* -1: none */
    uint64_t job_target, job_seg_start;
    int done, done_errno;
    uint64_t done_target;
    /* A rotation: the old segment is synced up to old_target and closed,
     * then the new one (seal_fd) is marked sealed and the directory synced.
     * old_fd is -1 once it is closed; seal_fd until every step worked. */
    int old_fd, seal_fd;
    uint64_t old_target;
    int old_done, old_errno;
    /* Compacted segments to remove. */
    char *unlink_paths[WAL_UNLINK_MAX];
    int nunlink;
    /* Preallocation (thread only): the current segment's reserved end and
     * the size to keep ahead, from the log's growth between two syncs. */
    int pre_fd;
    off_t pre_end, ahead;
    uint64_t last_logical;
    /* A file with blocks reserved, ready to become the next segment: a
     * rotation renames it instead of creating one, so the new segment's
     * first appends find their blocks too. Made by the thread. */
    int spare_fd, spare_failed;
    char spare_path[1100];
};

/* Reserves blocks ahead of file position pos of fd. logical (the log
 * offset at pos, 0 when not known) measures the growth since the last call:
 * about two syncs' worth is kept ahead, within bounds. */
static void prealloc_ahead(struct wal_syncer *s, int fd, off_t pos, uint64_t logical)
{
    if (logical) {
        if (s->last_logical && logical > s->last_logical) {
            uint64_t rate = logical - s->last_logical;
            off_t ahead = rate > WAL_PREALLOC_MAX / 2 ? (off_t)WAL_PREALLOC_MAX : (off_t)(2 * rate);
            s->ahead = ahead < (off_t)WAL_PREALLOC_MIN ? (off_t)WAL_PREALLOC_MIN : ahead;
        }
        s->last_logical = logical;
    }
    if (s->ahead < (off_t)WAL_PREALLOC_MIN)
        s->ahead = WAL_PREALLOC_MIN;
    if (fd != s->pre_fd) {
        s->pre_fd = fd;
        s->pre_end = 0;
    }
    if (s->pre_end >= pos + s->ahead / 2)
        return;
    off_t from = s->pre_end > pos ? s->pre_end : pos;
    /* Unsupported (or a full disk): the appends allocate as they go. */
    (void)fallocate(fd, FALLOC_FL_KEEP_SIZE, from, pos + s->ahead - from);
    s->pre_end = pos + s->ahead;
}

/* Makes the spare segment file if there is none (thread side). */
static void make_spare(struct wal_syncer *s)
{
    pthread_mutex_lock(&s->mu);
    int have = s->spare_fd >= 0 || s->spare_failed;
    pthread_mutex_unlock(&s->mu);
    if (have)
        return;
    int fd = open(s->spare_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0 && fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, s->ahead ? s->ahead : WAL_PREALLOC_MIN) < 0) {
        close(fd); /* nothing to gain from a spare: rotations create the file */
        unlink(s->spare_path);
        fd = -1;
    }
    pthread_mutex_lock(&s->mu);
    if (fd >= 0)
        s->spare_fd = fd;
    else
        s->spare_failed = 1;
    pthread_mutex_unlock(&s->mu);
}

/* The old segment of a rotation: synced and closed, then the new one
 * (seal_fd) sealed -- its header says its predecessor is durable -- with
 * the directory synced. Runs on the thread, or on the loop while the
 * thread is idle. Returns 0 or an errno; a failed step runs again next
 * time (a closed old segment is not synced twice: old_fd is -1 then), and
 * the rotation stays pending (seal_fd set) until every step worked. */
static int finish_rotation(struct wal_syncer *s)
{
    pthread_mutex_lock(&s->mu);
    int old_fd = s->old_fd, seal_fd = s->seal_fd;
    pthread_mutex_unlock(&s->mu);
    if (old_fd >= 0) {
        if (fdatasync(old_fd) < 0)
            return errno ? errno : EIO;
        close(old_fd);
        if (s->pre_fd == old_fd)
            s->pre_fd = -1; /* the number may come back for another file */
        pthread_mutex_lock(&s->mu);
        s->old_fd = -1;
        pthread_mutex_unlock(&s->mu);
    }
    unsigned char flag[4];
    util_put_le32(flag, 0);
    if (pwrite(seal_fd, flag, sizeof flag, 28) != (ssize_t)sizeof flag)
        return errno ? errno : EIO;
    prealloc_ahead(s, seal_fd, (off_t)WAL_FILE_HDR, 0);
    if (fdatasync(seal_fd) < 0 || (s->dir_fd >= 0 && fsync(s->dir_fd) < 0))
        return errno ? errno : EIO;
    pthread_mutex_lock(&s->mu);
    s->seal_fd = -1;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void *syncer_main(void *arg)
{
    struct wal_syncer *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->quit && !s->kick)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->kick)
            break;
        s->kick = 0;
        s->busy = 1;
        int old_fd = s->old_fd, rotating = s->seal_fd >= 0, fd = s->job_fd;
        uint64_t target = s->job_target, seg_start = s->job_seg_start;
        char *paths[WAL_UNLINK_MAX];
        int np = s->nunlink;
        memcpy(paths, s->unlink_paths, sizeof paths);
        s->nunlink = 0;
        s->job_fd = -1;
        pthread_mutex_unlock(&s->mu);

        if (fd == old_fd)
            fd = -1; /* the rotation's sync covers it (and closes that fd) */
        int old_e = rotating ? finish_rotation(s) : 0;
        int e = 0;
        if (fd >= 0) {
            if (old_e)
                e = old_e; /* the older bytes are not durable: neither is this */
            else {
                prealloc_ahead(s, fd, (off_t)(WAL_FILE_HDR + (target - seg_start)), target);
                e = fdatasync(fd) < 0 ? (errno ? errno : EIO) : 0;
            }
        }
        make_spare(s);
        for (int i = 0; i < np; i++) {
            unlink(paths[i]);
            free(paths[i]);
        }
        if (np && s->dir_fd >= 0)
            fsync(s->dir_fd);

        pthread_mutex_lock(&s->mu);
        if (rotating) {
            s->old_done = 1;
            s->old_errno = old_e;
        }
        if (fd >= 0) {
            s->done = 1;
            s->done_errno = e;
            s->done_target = target;
        }
        s->busy = 0;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static int syncer_start(struct wal *w)
{
    struct wal_syncer *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    s->job_fd = s->old_fd = s->seal_fd = s->pre_fd = s->spare_fd = -1;
    datadir_tmp_path(s->spare_path, sizeof s->spare_path, w->dir, "log-next.wal");
    s->dir_fd = open(w->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (s->dir_fd < 0 || pthread_create(&s->th, NULL, syncer_main, s) != 0) {
        if (s->dir_fd >= 0)
            close(s->dir_fd);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cv);
        free(s);
        return -1;
    }
    w->syncer = s;
    return 0;
}

/* Waits until the thread has nothing left to do (a rotation whose sync
 * failed stays pending: the caller looks at seal_fd). */
static void syncer_wait_idle(struct wal_syncer *s)
{
    pthread_mutex_lock(&s->mu);
    while (s->busy || s->kick)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
}

static void syncer_stop(struct wal *w)
{
    struct wal_syncer *s = w->syncer;
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->quit = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    if (s->old_fd >= 0)
        close(s->old_fd);
    if (s->spare_fd >= 0) {
        close(s->spare_fd);
        unlink(s->spare_path);
    }
    for (int i = 0; i < s->nunlink; i++) {
        unlink(s->unlink_paths[i]);
        free(s->unlink_paths[i]);
    }
    if (s->dir_fd >= 0)
        close(s->dir_fd);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
    w->syncer = NULL;
}

/* --- the writer ---------------------------------------------------------- */

static void set_err(struct wal *w, int *slot, int e, const char *what)
{
    if (wal_ok(w))
        w->err_since_ms = util_now_ms();
    *slot = e;
    snprintf(w->errmsg, sizeof w->errmsg, "%s of the log failed: %s", what, strerror(e));
}

/* An injected failure for the next disk call, or 0. */
static int injected(struct wal *w, int what)
{
    if (w->inject_left == 0 || !(w->inject_what & what))
        return 0;
    if (w->inject_left > 0)
        w->inject_left--;
    return w->inject_errno;
}

void wal_inject_errors(struct wal *w, int n, int what, int err)
{
    w->inject_left = n;
    w->inject_what = what;
    w->inject_errno = err ? err : EIO;
}

static void writer_init(struct wal *w, const char *dir, uint64_t id, uint64_t start, int policy)
{
    memset(w, 0, sizeof *w);
    w->fd = -1;
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    w->id = id;
    w->policy = policy;
    w->seg_start = w->end = w->written = w->synced = w->batch_base = start;
    buf_init(&w->batch);
    w->last_sync_ms = util_now_ms();
}

/* Creates the segment file for `start` with its header. durable: synced
 * with its directory now (the header says sealed); otherwise the header
 * says unsealed and the caller has the thread seal it. */
static int create_segment(const char *dir, uint64_t id, uint64_t start, int excl, int durable,
                          char *err, size_t errlen)
{
    char name[32], path[1100];
    wal_seg_name(start, name, sizeof name);
    if (datadir_join(path, sizeof path, dir, name) < 0) {
        snprintf(err, errlen, "path too long");
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (excl ? O_EXCL : O_TRUNC), 0644);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create '%s': %s", path, strerror(errno));
        return -1;
    }
    unsigned char h[WAL_FILE_HDR];
    file_header(h, id, start);
    if (!durable)
        util_put_le32(h + 28, WAL_SEG_UNSEALED);
    errno = 0;
    if (pwrite(fd, h, sizeof h, 0) != (ssize_t)sizeof h || (durable && fdatasync(fd) < 0)) {
        snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno ? errno : EIO));
        close(fd);
        unlink(path);
        return -1;
    }
    if (durable && datadir_fsync_dir(dir) < 0) {
        snprintf(err, errlen, "cannot sync data dir '%s': %s", dir, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

int wal_create(struct wal *w, const char *dir, uint64_t id, uint64_t start, int policy, char *err,
               size_t errlen)
{
    writer_init(w, dir, id, start, policy);
    w->fd = create_segment(dir, id, start, 1, 1, err, errlen);
    if (w->fd < 0)
        return -1;
    if (policy == WAL_FSYNC_EVERYSEC && syncer_start(w) < 0) {
        snprintf(err, errlen, "cannot start the fsync thread");
        close(w->fd);
        w->fd = -1;
        return -1;
    }
    return 0;
}

int wal_resume(struct wal *w, const char *dir, uint64_t id, uint64_t start, size_t valid_len,
               int policy, char *err, size_t errlen)
{
    writer_init(w, dir, id, start, policy);
    char name[32], path[1100];
    wal_seg_name(start, name, sizeof name);
    if (datadir_join(path, sizeof path, dir, name) < 0) {
        snprintf(err, errlen, "path too long");
        return -1;
    }
    struct stat st;
    if (stat(path, &st) < 0 || st.st_size < WAL_FILE_HDR) {
        /* A torn creation: nothing was ever logged in it; write it anew. */
        w->fd = create_segment(dir, id, start, 0, 1, err, errlen);
        if (w->fd < 0)
            return -1;
    } else {
        w->fd = open(path, O_WRONLY | O_CLOEXEC);
        if (w->fd < 0) {
            snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
            return -1;
        }
        off_t want = (off_t)(WAL_FILE_HDR + valid_len);
        if (st.st_size != want && (ftruncate(w->fd, want) < 0 || fdatasync(w->fd) < 0)) {
            snprintf(err, errlen, "cannot cut '%s' to %lld bytes: %s", path, (long long)want,
                     strerror(errno));
            close(w->fd);
            w->fd = -1;
            return -1;
        }
        /* Recovery accepted it as the newest segment: whatever it says
         * about its predecessor is settled now. */
        unsigned char flag[4] = {0, 0, 0, 0};
        unsigned char cur[4];
        int rfd = open(path, O_RDONLY | O_CLOEXEC);
        if (rfd >= 0) {
            if (pread(rfd, cur, 4, 28) == 4 && util_get_le32(cur) != 0 &&
                (pwrite(w->fd, flag, 4, 28) != 4 || fdatasync(w->fd) < 0)) {
                snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno));
                close(rfd);
                close(w->fd);
                w->fd = -1;
                return -1;
            }
            close(rfd);
        }
    }
    w->end = w->written = w->synced = w->batch_base = start + valid_len;
    if (policy == WAL_FSYNC_EVERYSEC && syncer_start(w) < 0) {
        snprintf(err, errlen, "cannot start the fsync thread");
        close(w->fd);
        w->fd = -1;
        return -1;
    }
    return 0;
}

void wal_close(struct wal *w)
{
    if (w->fd >= 0) {
        if (wal_sync_now(w) < 0)
            fprintf(stderr, "closing the log with unsynced data: %s\n", w->errmsg);
    }
    syncer_stop(w);
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    buf_free(&w->batch);
}

uint64_t wal_append(struct wal *w, const void *payload, size_t n)
{
    if (wal_frame_append(&w->batch, payload, n) < 0)
        return 0;
    w->end += WAL_REC_HDR + n;
    return w->end;
}

/* pwrites [written, end) at its file position. 0, or -1 with write_err. */
static int write_batch(struct wal *w)
{
    while (w->written < w->end) {
        size_t from = (size_t)(w->written - w->batch_base);
        size_t n = (size_t)(w->end - w->written);
        off_t pos = (off_t)(WAL_FILE_HDR + (w->written - w->seg_start));
        int e = injected(w, WAL_INJECT_WRITE);
        ssize_t k = e ? -1 : pwrite(w->fd, buf_head(&w->batch) + from, n, pos);
        if (k < 0 && !e)
            e = errno;
        if (k < 0 && e == EINTR)
            continue;
        if (k <= 0) {
            w->write_errors++;
            set_err(w, &w->write_err, k == 0 ? ENOSPC : e, "write");
            return -1;
        }
        w->written += (uint64_t)k;
    }
    w->write_err = 0;
    if (w->policy != WAL_FSYNC_ALWAYS) {
        buf_consume(&w->batch, (size_t)(w->written - w->batch_base));
        w->batch_base = w->written;
    }
    return 0;
}

/* Synchronous fdatasync of what is written. Under always a failure rewinds
 * `written` so the same bytes are written again before the next fsync. */
static int sync_written(struct wal *w)
{
    int e = injected(w, WAL_INJECT_FSYNC);
    if (!e && fdatasync(w->fd) < 0)
        e = errno;
    if (e) {
        w->sync_errors++;
        set_err(w, &w->sync_err, e, "fsync");
        if (w->policy == WAL_FSYNC_ALWAYS)
            w->written = w->synced;
        return -1;
    }
    w->fsyncs++;
    w->sync_err = 0;
    w->synced = w->written;
    w->last_sync_ms = util_now_ms();
    if (w->policy == WAL_FSYNC_ALWAYS) {
        buf_consume(&w->batch, (size_t)(w->synced - w->batch_base));
        w->batch_base = w->synced;
    }
    return 0;
}

int wal_flush(struct wal *w)
{
    if (w->written < w->end && write_batch(w) < 0)
        return -1;
    if (w->policy == WAL_FSYNC_ALWAYS && (w->synced < w->written || w->sync_err))
        return sync_written(w);
    return 0;
}

void wal_sync_poll(struct wal *w)
{
    struct wal_syncer *s = w->syncer;
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    int done = s->done, e = s->done_errno;
    uint64_t target = s->done_target;
    int old_done = s->old_done, old_e = s->old_errno;
    uint64_t old_target = s->old_target;
    s->done = s->old_done = 0;
    pthread_mutex_unlock(&s->mu);
    if (old_done && old_e) {
        w->sync_errors++;
        set_err(w, &w->sync_err, old_e, "fsync");
        return;
    }
    if (old_done) {
        /* Everything up to the rotation is durable. */
        w->fsyncs++;
        if (!done)
            w->sync_err = 0;
        if (old_target > w->synced)
            w->synced = old_target;
    }
    if (!done)
        return;
    if (e) {
        w->sync_errors++;
        set_err(w, &w->sync_err, e, "fsync");
        return;
    }
    w->fsyncs++;
    w->sync_err = 0;
    if (target > w->synced)
        w->synced = target;
}

/* Hands the thread its work and wakes it. */
static void syncer_post(struct wal *w)
{
    struct wal_syncer *s = w->syncer;
    pthread_mutex_lock(&s->mu);
    s->job_fd = w->fd; /* not closed before the job is done: see struct wal_syncer */
    s->job_target = w->written;
    s->job_seg_start = w->seg_start;
    s->kick = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

void wal_sync_tick(struct wal *w, int64_t now_ms)
{
    struct wal_syncer *s = w->syncer;
    if (!s || w->fd < 0)
        return;
    wal_sync_poll(w);
    pthread_mutex_lock(&s->mu);
    int busy = s->busy || s->kick, old_pending = s->seal_fd >= 0;
    pthread_mutex_unlock(&s->mu);
    if (w->synced >= w->written && !w->sync_err && !old_pending)
        return;
    if (busy)
        return; /* the disk is slow: the next tick tries again */
    int e = injected(w, WAL_INJECT_FSYNC);
    if (e) {
        w->sync_errors++;
        set_err(w, &w->sync_err, e, "fsync");
        return;
    }
    syncer_post(w);
    w->last_sync_ms = now_ms;
}

int wal_sync_now(struct wal *w)
{
    struct wal_syncer *s = w->syncer;
    if (s) {
        syncer_wait_idle(s);
        wal_sync_poll(w);
        if (s->seal_fd >= 0) {
            /* A rotation whose sync failed in the thread: once more, here
             * (the thread is idle and stays so: only the loop posts). */
            int e = finish_rotation(s);
            if (e) {
                w->sync_errors++;
                set_err(w, &w->sync_err, e, "fsync");
                return -1;
            }
        }
    }
    if (w->written < w->end && write_batch(w) < 0)
        return -1;
    if (w->synced < w->written || w->sync_err)
        return sync_written(w);
    return 0;
}

/* The synchronous rotation (always, no): everything synced first, then the
 * new segment created durably. */
static int rotate_now(struct wal *w, char *err, size_t errlen)
{
    if (wal_sync_now(w) < 0) {
        snprintf(err, errlen, "%s", w->errmsg);
        return -1;
    }
    int fd = create_segment(w->dir, w->id, w->end, 1, 1, err, errlen);
    if (fd < 0)
        return -1;
    close(w->fd);
    if (w->syncer && w->syncer->pre_fd == w->fd)
        w->syncer->pre_fd = -1; /* idle here (wal_sync_now waited) */
    w->fd = fd;
    w->seg_start = w->end;
    return 0;
}

/* The spare file renamed into place as the segment starting at w->end,
 * with its header (unsealed). Returns its fd, -2 when there is no spare,
 * -1 with err. */
static int take_spare(struct wal *w, char *err, size_t errlen)
{
    struct wal_syncer *s = w->syncer;
    pthread_mutex_lock(&s->mu);
    int fd = s->spare_fd;
    s->spare_fd = -1;
    pthread_mutex_unlock(&s->mu);
    if (fd < 0)
        return -2;
    char name[32], path[1100];
    wal_seg_name(w->end, name, sizeof name);
    if (datadir_join(path, sizeof path, w->dir, name) < 0 || access(path, F_OK) == 0 ||
        rename(s->spare_path, path) < 0) {
        close(fd);
        unlink(s->spare_path);
        return -2;
    }
    unsigned char h[WAL_FILE_HDR];
    file_header(h, w->id, w->end);
    util_put_le32(h + 28, WAL_SEG_UNSEALED);
    if (pwrite(fd, h, sizeof h, 0) != (ssize_t)sizeof h) {
        snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno ? errno : EIO));
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

int wal_rotate(struct wal *w, char *err, size_t errlen)
{
    if (w->end == w->seg_start)
        return 0; /* the current segment already starts here */
    struct wal_syncer *s = w->syncer;
    if (!s)
        return rotate_now(w, err, errlen);
    /* everysec: the old segment is written to its end here and synced and
     * closed by the thread; the new one is created unsealed, so that a
     * power cut before that sync is recognised at recovery as the lost
     * last second, not as damage (see wal.h). */
    if (w->written < w->end && write_batch(w) < 0) {
        snprintf(err, errlen, "%s", w->errmsg);
        return -1;
    }
    pthread_mutex_lock(&s->mu);
    int pending = s->seal_fd >= 0;
    pthread_mutex_unlock(&s->mu);
    if (pending) {
        /* The previous rotation is not durable yet (one per sync at most):
         * at most one segment is ever unsealed. */
        syncer_wait_idle(s);
        wal_sync_poll(w);
        if (s->seal_fd >= 0)
            return rotate_now(w, err, errlen);
    }
    int fd = take_spare(w, err, errlen);
    if (fd == -2)
        fd = create_segment(w->dir, w->id, w->end, 1, 0, err, errlen);
    if (fd < 0)
        return -1;
    pthread_mutex_lock(&s->mu);
    if (s->job_fd == w->fd)
        s->job_fd = -1; /* not picked up yet: the rotation's sync covers it */
    s->old_fd = w->fd;
    s->old_target = w->written;
    s->seal_fd = fd;
    s->kick = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    w->fd = fd;
    w->seg_start = w->end;
    return 0;
}

int wal_remove_later(struct wal *w, const char *path)
{
    struct wal_syncer *s = w->syncer;
    char *copy = s ? strdup(path) : NULL;
    if (s && copy) {
        pthread_mutex_lock(&s->mu);
        if (s->nunlink < WAL_UNLINK_MAX) {
            s->unlink_paths[s->nunlink++] = copy;
            s->kick = 1;
            pthread_cond_broadcast(&s->cv);
            copy = NULL;
        }
        pthread_mutex_unlock(&s->mu);
        if (!copy)
            return 0;
        free(copy);
    }
    if (unlink(path) < 0)
        return -1;
    datadir_fsync_dir(w->dir);
    return 0;
}

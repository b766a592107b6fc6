/* snapshot: writing and reading the snapshot file (format in snapshot.h). */
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "util.h"
#include "datadir.h"
#include "mpk.h"
#include "wal.h"

static const char MAGIC[8] = {'S', 'T', 'R', 'A', 'T', 'S', 'N', 'P'};
#define VERSION 1
#define CHUNK_BYTES (256 * 1024)
#define REC_ENTRIES 1
#define REC_END 2

static void encode_header(unsigned char *b, const struct snapshot_hdr *h)
{
    memset(b, 0, SNAPSHOT_HDR);
    memcpy(b, MAGIC, 8);
    util_put_le32(b + 8, VERSION);
    util_put_le64(b + 16, h->id);
    util_put_le64(b + 24, h->offset);
    util_put_le64(b + 32, (uint64_t)h->created_ms);
    util_put_le32(b + 44, crc32c_mask(crc32c(0, b, 44)));
}

static int decode_header(const unsigned char *b, struct snapshot_hdr *h, const char *path,
                         char *err, size_t errlen)
{
    if (memcmp(b, MAGIC, 8) != 0 || util_get_le32(b + 44) != crc32c_mask(crc32c(0, b, 44))) {
        snprintf(err, errlen, "snapshot '%s' has a damaged or foreign header", path);
        return -1;
    }
    if (util_get_le32(b + 8) != VERSION) {
        snprintf(err, errlen, "snapshot '%s' has format version %u, this build reads %u", path,
                 util_get_le32(b + 8), VERSION);
        return -1;
    }
    h->id = util_get_le64(b + 16);
    h->offset = util_get_le64(b + 24);
    h->created_ms = (int64_t)util_get_le64(b + 32);
    return 0;
}

/* --- writing --------------------------------------------------------------- */

static int write_all(struct snapshot_writer *w, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t k = write(w->fd, s, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            snprintf(w->err, sizeof w->err, "write '%s': %s", w->tmp,
                     k < 0 ? strerror(errno) : "no progress");
            return -1;
        }
        s += k;
        n -= (size_t)k;
        w->bytes += (size_t)k;
    }
    return 0;
}

/* Starts an entries record: room for an array32 header, then the tag. The
 * header's count is only known when the record is full. */
static int chunk_start(struct snapshot_writer *w)
{
    buf_reset(&w->chunk);
    w->nchunk = 0;
    static const unsigned char head[6] = {0xdd, 0, 0, 0, 0, REC_ENTRIES};
    return buf_append(&w->chunk, head, sizeof head);
}

static int write_record(struct snapshot_writer *w, const void *p, size_t n)
{
    buf_reset(&w->frame);
    if (wal_frame_append(&w->frame, p, n) < 0) {
        snprintf(w->err, sizeof w->err, "out of memory");
        return -1;
    }
    return write_all(w, buf_head(&w->frame), buf_size(&w->frame));
}

static int chunk_flush(struct snapshot_writer *w)
{
    if (w->nchunk == 0)
        return 0;
    unsigned char *h = (unsigned char *)w->chunk.data + w->chunk.off;
    uint32_t items = 1 + 3 * w->nchunk;
    h[1] = (unsigned char)(items >> 24);
    h[2] = (unsigned char)(items >> 16);
    h[3] = (unsigned char)(items >> 8);
    h[4] = (unsigned char)items;
    if (write_record(w, buf_head(&w->chunk), buf_size(&w->chunk)) < 0)
        return -1;
    return chunk_start(w);
}

int snapshot_writer_open(struct snapshot_writer *w, const char *dir, const struct snapshot_hdr *h,
                         char *err, size_t errlen)
{
    memset(w, 0, sizeof *w);
    w->fd = -1;
    buf_init(&w->chunk);
    buf_init(&w->frame);
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    if (datadir_tmp_path(w->tmp, sizeof w->tmp, dir, SNAPSHOT_NAME) < 0) {
        snprintf(err, errlen, "path too long");
        return -1;
    }
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        snprintf(err, errlen, "cannot create '%s': %s", w->tmp, strerror(errno));
        return -1;
    }
    unsigned char b[SNAPSHOT_HDR];
    encode_header(b, h);
    if (write_all(w, b, sizeof b) < 0 || chunk_start(w) < 0) {
        snprintf(err, errlen, "%s", w->err[0] ? w->err : "out of memory");
        snapshot_writer_abort(w);
        return -1;
    }
    return 0;
}

int snapshot_writer_add(struct snapshot_writer *w, const void *key, size_t klen, const void *val,
                        size_t vlen, int64_t expire_ms)
{
    msgpack_packer pk;
    mpk_packer_init(&pk, &w->chunk);
    if (msgpack_pack_bin(&pk, klen) < 0 || msgpack_pack_bin_body(&pk, key, klen) < 0 ||
        msgpack_pack_bin(&pk, vlen) < 0 || msgpack_pack_bin_body(&pk, val, vlen) < 0 ||
        msgpack_pack_int64(&pk, expire_ms) < 0) {
        snprintf(w->err, sizeof w->err, "out of memory");
        return -1;
    }
    w->nchunk++;
    w->count++;
    if (buf_size(&w->chunk) >= CHUNK_BYTES)
        return chunk_flush(w);
    return 0;
}

int snapshot_writer_finish(struct snapshot_writer *w, char *err, size_t errlen)
{
    struct buf end;
    buf_init(&end);
    msgpack_packer pk;
    mpk_packer_init(&pk, &end);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_int(&pk, REC_END);
    msgpack_pack_uint64(&pk, w->count);
    int rc = chunk_flush(w);
    if (rc == 0)
        rc = write_record(w, buf_head(&end), buf_size(&end));
    buf_free(&end);
    if (rc == 0 && fsync(w->fd) < 0) {
        snprintf(w->err, sizeof w->err, "fsync '%s': %s", w->tmp, strerror(errno));
        rc = -1;
    }
    if (rc == 0) {
        close(w->fd);
        w->fd = -1;
        char dst[1100];
        datadir_join(dst, sizeof dst, w->dir, SNAPSHOT_NAME);
        if (rename(w->tmp, dst) < 0) {
            snprintf(w->err, sizeof w->err, "rename '%s': %s", w->tmp, strerror(errno));
            rc = -1;
        } else if (datadir_fsync_dir(w->dir) < 0) {
            /* Renamed, but the rename may not survive a power cut; the old
             * log segments must not be deleted on the strength of it. */
            snprintf(w->err, sizeof w->err, "fsync dir '%s': %s", w->dir, strerror(errno));
            rc = -1;
        }
    }
    if (rc < 0) {
        snprintf(err, errlen, "%s", w->err);
        snapshot_writer_abort(w);
        return -1;
    }
    buf_free(&w->chunk);
    buf_free(&w->frame);
    return 0;
}

void snapshot_writer_abort(struct snapshot_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    if (w->tmp[0])
        unlink(w->tmp);
    buf_free(&w->chunk);
    buf_free(&w->frame);
}

/* --- reading --------------------------------------------------------------- */

struct read_ctx {
    snapshot_entry_fn fn;
    void *arg;
    uint64_t count;
    int ended;
    uint64_t end_count;
};

static int read_record(void *arg, const unsigned char *p, size_t n, size_t off, char *err,
                       size_t errlen)
{
    struct read_ctx *c = arg;
    struct mpk m;
    uint32_t items;
    int64_t tag;
    mpk_init(&m, p, n);
    if (c->ended) {
        snprintf(err, errlen, "record after the end record at byte %zu", off);
        return -1;
    }
    if (mpk_array(&m, &items) < 0 || items < 1 || mpk_int(&m, &tag) < 0)
        goto bad;
    if (tag == REC_END) {
        int64_t cnt;
        if (items != 2 || mpk_int(&m, &cnt) < 0 || !mpk_done(&m))
            goto bad;
        c->ended = 1;
        c->end_count = (uint64_t)cnt;
        return 0;
    }
    if (tag != REC_ENTRIES || (items - 1) % 3 != 0)
        goto bad;
    for (uint32_t i = 0; i < (items - 1) / 3; i++) {
        const char *k, *v;
        size_t kl, vl;
        int64_t x;
        if (mpk_bytes(&m, &k, &kl) < 0 || mpk_bytes(&m, &v, &vl) < 0 || mpk_int(&m, &x) < 0)
            goto bad;
        if (c->fn && c->fn(c->arg, k, kl, v, vl, x, err, errlen) < 0)
            return -1;
        c->count++;
    }
    if (!mpk_done(&m))
        goto bad;
    return 0;
bad:
    snprintf(err, errlen, "malformed snapshot record at byte %zu", off);
    return -1;
}

static int open_snapshot(const char *path, int *fd, size_t *size, char *err, size_t errlen)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0) {
        if (errno == ENOENT)
            return 1;
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(*fd, &st) < 0 || st.st_size < SNAPSHOT_HDR) {
        snprintf(err, errlen, "snapshot '%s' is too short to be one", path);
        close(*fd);
        return -1;
    }
    *size = (size_t)st.st_size;
    return 0;
}

int snapshot_read_header(const char *path, struct snapshot_hdr *h, char *err, size_t errlen)
{
    int fd;
    size_t size;
    int rc = open_snapshot(path, &fd, &size, err, errlen);
    if (rc != 0)
        return rc;
    unsigned char b[SNAPSHOT_HDR];
    rc = pread(fd, b, sizeof b, 0) == (ssize_t)sizeof b ? decode_header(b, h, path, err, errlen) : -1;
    if (rc < 0 && !err[0])
        snprintf(err, errlen, "cannot read '%s'", path);
    close(fd);
    return rc;
}

/* The key count of the end record, read from the file's tail: the end
 * record is always last and short ([2, count] is 3 to 11 bytes of
 * msgpack), so each possible length is tried and its frame checks decide.
 * 0 when none fits (the full read then reports what is wrong). */
static uint64_t tail_count(const unsigned char *p, size_t size)
{
    for (size_t plen = 3; plen <= 11; plen++) {
        if (size < SNAPSHOT_HDR + WAL_REC_HDR + plen)
            break;
        size_t off = size - WAL_REC_HDR - plen;
        const unsigned char *pl;
        size_t n;
        if (wal_frame_parse(p + off, size - off, &pl, &n) != (ssize_t)(WAL_REC_HDR + plen))
            continue;
        struct mpk m;
        uint32_t items;
        int64_t tag, cnt;
        mpk_init(&m, pl, n);
        if (mpk_array(&m, &items) == 0 && items == 2 && mpk_int(&m, &tag) == 0 &&
            tag == REC_END && mpk_int(&m, &cnt) == 0 && mpk_done(&m) && cnt > 0)
            return (uint64_t)cnt;
    }
    return 0;
}

static int read_buf(const void *p, size_t size, const char *path, struct snapshot_hdr *h,
                    snapshot_size_fn size_fn, snapshot_entry_fn fn, void *arg, uint64_t *count,
                    char *err, size_t errlen)
{
    if (size < SNAPSHOT_HDR) {
        snprintf(err, errlen, "snapshot '%s' is too short to be one", path);
        return -1;
    }
    int rc = decode_header(p, h, path, err, errlen);
    if (rc < 0)
        return -1;
    if (size_fn) {
        uint64_t n = tail_count(p, size);
        if (n)
            size_fn(arg, n);
    }
    struct read_ctx c = {fn, arg, 0, 0, 0};
    struct wal_scan s;
    wal_scan_buf((const char *)p + SNAPSHOT_HDR, size - SNAPSHOT_HDR, read_record, &c, &s);
    if (s.status != WAL_SCAN_CLEAN) {
        snprintf(err, errlen, "snapshot '%s' is damaged: %s", path, s.err);
        rc = -1;
    } else if (!c.ended) {
        snprintf(err, errlen, "snapshot '%s' is incomplete (no end record)", path);
        rc = -1;
    } else if (c.end_count != c.count) {
        snprintf(err, errlen, "snapshot '%s' holds %llu keys but says %llu", path,
                 (unsigned long long)c.count, (unsigned long long)c.end_count);
        rc = -1;
    }
    if (count)
        *count = c.count;
    return rc;
}

int snapshot_read_buf(const void *p, size_t size, const char *path, struct snapshot_hdr *h,
                      snapshot_entry_fn fn, void *arg, uint64_t *count, char *err, size_t errlen)
{
    return read_buf(p, size, path, h, NULL, fn, arg, count, err, errlen);
}

int snapshot_read(const char *path, struct snapshot_hdr *h, snapshot_entry_fn fn, void *arg,
                  uint64_t *count, char *err, size_t errlen)
{
    return snapshot_read_sized(path, h, NULL, fn, arg, count, err, errlen);
}

int snapshot_read_sized(const char *path, struct snapshot_hdr *h, snapshot_size_fn size_fn,
                        snapshot_entry_fn fn, void *arg, uint64_t *count, char *err,
                        size_t errlen)
{
    int fd;
    size_t size;
    int rc = open_snapshot(path, &fd, &size, err, errlen);
    if (rc != 0)
        return rc;
    void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "cannot map '%s': %s", path, strerror(errno));
        return -1;
    }
    madvise(m, size, MADV_SEQUENTIAL);
    rc = read_buf(m, size, path, h, size_fn, fn, arg, count, err, errlen);
    munmap(m, size);
    return rc;
}

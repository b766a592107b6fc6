/* Unit tests for the log: CRC32C, record framing (round trip, every
 * truncation point, every single-bit flip), segment files, the writer and
 * its error handling. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "crc32c.h"
#include "datadir.h"
#include "tap.h"
#include "wal.h"

#define NREC 24

struct collect {
    size_t n;
    size_t len[4096];
    unsigned char first[4096];
    uint32_t crc[4096];
};

static int collect_fn(void *arg, const unsigned char *p, size_t n, size_t off, char *err,
                      size_t errlen)
{
    struct collect *c = arg;
    if (c->n < 4096) {
        c->len[c->n] = n;
        c->first[c->n] = n ? p[0] : 0;
        c->crc[c->n] = crc32c(0, p, n);
    }
    c->n++;
    return 0;
}

/* Builds NREC records of varied sizes; boundaries[i] is where record i ends. */
static void build(struct buf *b, size_t *bounds, uint32_t *crcs)
{
    unsigned char payload[700];
    for (int i = 0; i < NREC; i++) {
        size_t n = (size_t)(i * 29) % 690 + (i == 3 ? 0 : 1);
        for (size_t k = 0; k < n; k++)
            payload[k] = (unsigned char)(i * 7 + k * 13);
        if (i == 3)
            n = 0; /* an empty payload is legal */
        wal_frame_append(b, payload, n);
        bounds[i] = buf_size(b);
        crcs[i] = crc32c(0, payload, n);
    }
}

static void test_crc(void)
{
    is_int(crc32c(0, "123456789", 9), 0xE3069283u, "crc32c check value");
    is_int(crc32c_portable(0, "123456789", 9), 0xE3069283u, "portable crc32c check value");
    unsigned char d[1000];
    for (size_t i = 0; i < sizeof d; i++)
        d[i] = (unsigned char)(i * 131 + 7);
    int same = 1;
    for (size_t n = 0; n < sizeof d; n += 37)
        for (size_t o = 0; o < 9; o++)
            if (crc32c(0, d + o, n - (n > o ? o : n)) != crc32c_portable(0, d + o, n - (n > o ? o : n)))
                same = 0;
    ok(same, "hardware and table CRC agree on every length and alignment");
    ok(crc32c(crc32c(0, d, 100), d + 100, 200) == crc32c(0, d, 300), "crc32c extends");
}

static void test_round_trip(void)
{
    struct buf b;
    buf_init(&b);
    size_t bounds[NREC];
    uint32_t crcs[NREC];
    build(&b, bounds, crcs);
    struct collect c = {0};
    struct wal_scan s;
    is_int(wal_scan_buf(buf_head(&b), buf_size(&b), collect_fn, &c, &s), WAL_SCAN_CLEAN,
           "round trip scans clean");
    is_int(c.n, NREC, "every record read back");
    int same = 1;
    for (int i = 0; i < NREC; i++)
        if (c.crc[i] != crcs[i])
            same = 0;
    ok(same, "every payload read back intact");
    is_int(s.end, buf_size(&b), "end is the whole buffer");
    buf_free(&b);
}

static void test_truncation(void)
{
    struct buf b;
    buf_init(&b);
    size_t bounds[NREC];
    uint32_t crcs[NREC];
    build(&b, bounds, crcs);
    size_t total = buf_size(&b);
    int bad = 0;
    for (size_t cut = 0; cut < total; cut++) {
        size_t want = 0, want_end = 0;
        while (want < NREC && bounds[want] <= cut)
            want_end = bounds[want++];
        /* A copy exactly `cut` long, so ASan sees any read past the end. */
        unsigned char *copy = malloc(cut ? cut : 1);
        memcpy(copy, buf_head(&b), cut);
        struct collect c = {0};
        struct wal_scan s;
        int st = wal_scan_buf(copy, cut, collect_fn, &c, &s);
        int exp = cut == want_end ? WAL_SCAN_CLEAN : WAL_SCAN_TORN;
        if (st != exp || c.n != want || s.end != want_end) {
            if (!bad)
                printf("# cut %zu: status %d records %zu end %zu\n", cut, st, c.n, s.end);
            bad++;
        }
        free(copy);
    }
    ok(bad == 0, "every one of %zu truncation points gives the prefix of whole records", total);
    buf_free(&b);
}

static void test_bit_flips(void)
{
    struct buf b;
    buf_init(&b);
    size_t bounds[NREC];
    uint32_t crcs[NREC];
    build(&b, bounds, crcs);
    size_t total = buf_size(&b);
    unsigned char *copy = malloc(total);
    int missed = 0, misclassified = 0;
    for (size_t bit = 0; bit < total * 8; bit++) {
        memcpy(copy, buf_head(&b), total);
        copy[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        size_t rec = 0;
        while (bounds[rec] <= bit / 8)
            rec++;
        struct collect c = {0};
        struct wal_scan s;
        int st = wal_scan_buf(copy, total, collect_fn, &c, &s);
        if (st == WAL_SCAN_CLEAN)
            missed++;
        /* Damage in the last record looks like a torn write and is cut off;
         * damage anywhere else is corruption. Either way no record after
         * the damaged one is delivered. */
        int exp = rec == NREC - 1 ? WAL_SCAN_TORN : WAL_SCAN_CORRUPT;
        if (st != exp || c.n != rec)
            misclassified++;
    }
    ok(missed == 0, "all %zu single-bit flips detected", total * 8);
    ok(misclassified == 0, "flips classified: corrupt mid-log, torn in the last record (%d wrong)",
       misclassified);
    free(copy);
    buf_free(&b);
}

static void test_zero_tail(void)
{
    struct buf b;
    buf_init(&b);
    size_t bounds[NREC];
    uint32_t crcs[NREC];
    build(&b, bounds, crcs);
    size_t total = buf_size(&b);
    char zeros[4096] = {0};
    buf_append(&b, zeros, sizeof zeros);
    struct collect c = {0};
    struct wal_scan s;
    is_int(wal_scan_buf(buf_head(&b), buf_size(&b), collect_fn, &c, &s), WAL_SCAN_TORN,
           "a zero-filled tail is a torn tail");
    is_int(s.end, total, "the zeros are dropped");
    /* Garbage (not zeros) after the last record is not a torn write. */
    buf_reset(&b);
    build(&b, bounds, crcs);
    buf_append(&b, "garbage that is not a record header", 35);
    is_int(wal_scan_buf(buf_head(&b), buf_size(&b), collect_fn, &c, &s), WAL_SCAN_TORN,
           "garbage with no valid record after it: torn");
    buf_free(&b);
}

static char tmpdir[256];

static void rm_rf(const char *d)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup failed\n");
}

static size_t read_back(const char *dir, uint64_t start, struct collect *c, struct wal_seg_read *r)
{
    char name[32], path[600], err[256];
    wal_seg_name(start, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    memset(c, 0, sizeof *c);
    if (wal_read_segment(path, collect_fn, c, r, err, sizeof err) < 0) {
        printf("# %s\n", err);
        return (size_t)-1;
    }
    return c->n;
}

static void test_writer(int policy)
{
    char err[256];
    struct wal w;
    rm_rf(tmpdir);
    mkdir(tmpdir, 0755);
    ok(wal_create(&w, tmpdir, 42, 1000, policy, err, sizeof err) == 0, "%s: create", wal_fsync_name(policy));
    uint64_t last = 0;
    for (int i = 0; i < 100; i++) {
        char p[64];
        int n = snprintf(p, sizeof p, "record %d", i);
        last = wal_append(&w, p, (size_t)n);
        if (i % 10 == 9)
            wal_flush(&w);
    }
    ok(wal_flush(&w) == 0, "flush");
    is_int(w.written, last, "written reaches the last record");
    if (policy == WAL_FSYNC_ALWAYS)
        is_int(wal_acked(&w), last, "always: acked after flush means synced");
    wal_sync_tick(&w, 0);
    ok(wal_sync_now(&w) == 0 && w.synced == last, "sync_now syncs everything");
    struct collect c;
    struct wal_seg_read r;
    is_int(read_back(tmpdir, 1000, &c, &r), 100, "segment holds 100 records");
    ok(r.id == 42 && r.start == 1000, "header names dataset and start");

    /* Rotation: a new segment starting at the end. */
    ok(wal_rotate(&w, err, sizeof err) == 0, "rotate");
    is_int(w.seg_start, last, "new segment starts at the end offset");
    wal_append(&w, "after", 5);
    wal_flush(&w);
    struct wal_seg *segs;
    size_t nseg;
    wal_list(tmpdir, &segs, &nseg, err, sizeof err);
    ok(nseg == 2 && segs[0].start == 1000 && segs[1].start == last, "two segments, sorted");
    free(segs);
    is_int(read_back(tmpdir, last, &c, &r), 1, "second segment holds one record");
    wal_close(&w);

    /* Resume after a torn tail: cut the file mid-record, resume at the
     * valid length, append, read back. */
    char name[32], path[600];
    wal_seg_name(last, name, sizeof name);
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    int fd = open(path, O_WRONLY | O_APPEND);
    ok(write(fd, "\x30\0\0\0junk", 8) == 8, "append a torn record");
    close(fd);
    read_back(tmpdir, last, &c, &r);
    is_int(r.scan.status, WAL_SCAN_TORN, "torn tail seen");
    ok(wal_resume(&w, tmpdir, 42, last, r.scan.end, policy, err, sizeof err) == 0, "resume");
    wal_append(&w, "again", 5);
    ok(wal_sync_now(&w) == 0, "sync after resume");
    read_back(tmpdir, last, &c, &r);
    ok(r.scan.status == WAL_SCAN_CLEAN && c.n == 2, "torn bytes replaced by the new record");
    wal_close(&w);
}

/* everysec syncs the segment's own descriptor: with no descriptor left to
 * allocate (RLIMIT_NOFILE at what is open), a sync still succeeds, and
 * rotation under a sync in progress closes nothing under it. */
static void test_sync_without_spare_descriptors(void)
{
    char err[256];
    struct wal w;
    rm_rf(tmpdir);
    mkdir(tmpdir, 0755);
    ok(wal_create(&w, tmpdir, 7, 0, WAL_FSYNC_EVERYSEC, err, sizeof err) == 0, "create everysec");
    struct rlimit old;
    getrlimit(RLIMIT_NOFILE, &old);
    int top = dup(0); /* the lowest free number: everything below is open */
    close(top);
    struct rlimit tight = {(rlim_t)top, old.rlim_max};
    ok(setrlimit(RLIMIT_NOFILE, &tight) == 0, "descriptors capped at what is open (%d)", top);
    ok(dup(0) < 0 && errno == EMFILE, "no descriptor is free");
    for (int i = 0; i < 3; i++) {
        uint64_t at = wal_append(&w, "record", 6);
        ok(wal_flush(&w) == 0, "write %d", i);
        wal_sync_tick(&w, 1000 * (i + 1));
        ok(wal_ok(&w), "a background sync needs no new descriptor (%d)", i);
        ok(wal_sync_now(&w) == 0 && w.synced >= at && w.sync_errors == 0, "synced (%d)", i);
    }
    setrlimit(RLIMIT_NOFILE, &old);
    wal_append(&w, "more", 4);
    wal_flush(&w);
    wal_sync_tick(&w, 9000);
    ok(wal_rotate(&w, err, sizeof err) == 0, "rotate right after a sync started");
    wal_append(&w, "next", 4);
    ok(wal_sync_now(&w) == 0 && wal_ok(&w), "the new segment syncs");
    wal_close(&w);
}

static void test_errors(void)
{
    char err[256];
    struct wal w;
    rm_rf(tmpdir);
    mkdir(tmpdir, 0755);
    wal_create(&w, tmpdir, 7, 0, WAL_FSYNC_ALWAYS, err, sizeof err);
    wal_append(&w, "one", 3);
    ok(wal_flush(&w) == 0 && wal_ok(&w), "first flush ok");
    wal_inject_errors(&w, 1, WAL_INJECT_WRITE, ENOSPC);
    uint64_t t = wal_append(&w, "two", 3);
    ok(wal_flush(&w) < 0 && !wal_ok(&w) && w.write_err == ENOSPC, "injected ENOSPC on write");
    ok(wal_acked(&w) < t, "the record is not acknowledged");
    ok(strstr(w.errmsg, "No space") != NULL, "message names the cause: %s", w.errmsg);
    /* The write works now but the fsync fails: the bytes are rewritten
     * before the next fsync, not trusted to the page cache. */
    wal_inject_errors(&w, 1, WAL_INJECT_FSYNC, EIO);
    ok(wal_flush(&w) < 0 && w.sync_err == EIO && w.write_err == 0, "fsync EIO reported");
    ok(w.written == w.synced, "unsynced bytes will be written again");
    wal_inject_errors(&w, -1, WAL_INJECT_WRITE | WAL_INJECT_FSYNC, EIO);
    ok(wal_flush(&w) < 0, "sticky EIO fails");
    ok(wal_flush(&w) < 0, "still failing");
    ok(wal_acked(&w) < t, "still not acknowledged");
    wal_inject_errors(&w, 0, 0, 0);
    ok(wal_flush(&w) == 0 && wal_ok(&w), "recovers by itself once the disk works");
    ok(wal_acked(&w) == t, "now acknowledged");
    wal_append(&w, "three", 5);
    wal_flush(&w);
    wal_close(&w);
    struct collect c;
    struct wal_seg_read r;
    ok(read_back(tmpdir, 0, &c, &r) == 3 && r.scan.status == WAL_SCAN_CLEAN,
       "each record is in the file exactly once");

    /* everysec: a failed background fsync is reported, then clears. */
    rm_rf(tmpdir);
    mkdir(tmpdir, 0755);
    wal_create(&w, tmpdir, 7, 0, WAL_FSYNC_EVERYSEC, err, sizeof err);
    wal_append(&w, "x", 1);
    wal_flush(&w);
    wal_inject_errors(&w, 1, WAL_INJECT_FSYNC, EIO);
    wal_sync_tick(&w, 1000);
    ok(w.sync_err == EIO && !wal_ok(&w), "everysec: fsync error reported");
    ok(wal_acked(&w) == w.end, "everysec: written data stays acknowledged");
    wal_sync_tick(&w, 2000);
    ok(wal_sync_now(&w) == 0 && wal_ok(&w), "everysec: clears on the next good fsync");
    wal_close(&w);
}

static void test_datadir(void)
{
    char err[256];
    struct datadir a, b;
    rm_rf(tmpdir);
    char sub[400];
    snprintf(sub, sizeof sub, "%s/x/y", tmpdir);
    ok(datadir_open(&a, sub, err, sizeof err) == 0, "open creates nested dirs");
    ok(datadir_open(&b, sub, err, sizeof err) < 0, "second open refused");
    ok(strstr(err, "in use") != NULL, "message says in use: %s", err);
    ok(datadir_write_atomic(sub, "f", "hello", 5, err, sizeof err) == 0, "atomic write");
    ok(datadir_write_atomic(sub, "f", "bye", 3, err, sizeof err) == 0, "atomic replace");
    char p[500], got[16] = {0};
    snprintf(p, sizeof p, "%s/f", sub);
    int fd = open(p, O_RDONLY);
    ok(read(fd, got, sizeof got) == 3 && memcmp(got, "bye", 3) == 0, "replaced content");
    close(fd);
    snprintf(p, sizeof p, "%s/snap.tmp.123", sub);
    fd = open(p, O_CREAT | O_WRONLY, 0644);
    close(fd);
    datadir_close(&a);
    ok(datadir_open(&b, sub, err, sizeof err) == 0, "reopen after close");
    ok(access(p, F_OK) < 0, "stale temp file removed");
    datadir_close(&b);
}

/* everysec: the fsync thread reserves blocks ahead of the appends (so an
 * append never waits on a sync's block allocation) and keeps a spare file
 * with blocks reserved, which a rotation renames into place. Where the
 * filesystem has no fallocate there is nothing to check. */
static void test_prealloc_and_spare(void)
{
    char err[256], spare[600], seg[600], name[32];
    struct wal w;
    rm_rf(tmpdir);
    mkdir(tmpdir, 0755);
    int probe = open(tmpdir, O_RDONLY | O_DIRECTORY);
    char pp[600];
    snprintf(pp, sizeof pp, "%s/probe", tmpdir);
    int pf = open(pp, O_WRONLY | O_CREAT, 0644);
    int can = pf >= 0 && fallocate(pf, FALLOC_FL_KEEP_SIZE, 0, 4096) == 0;
    if (pf >= 0)
        close(pf);
    unlink(pp);
    close(probe);
    if (!can) {
        ok(1, "# SKIP no fallocate here");
        return;
    }
    ok(wal_create(&w, tmpdir, 3, 0, WAL_FSYNC_EVERYSEC, err, sizeof err) == 0, "create everysec");
    char rec[1000];
    memset(rec, 'r', sizeof rec);
    for (int i = 0; i < 1000; i++)
        wal_append(&w, rec, sizeof rec);
    ok(wal_flush(&w) == 0, "1 MB written");
    wal_sync_tick(&w, 1000);
    ok(wal_sync_now(&w) == 0 && w.synced == w.end, "synced");
    struct stat st;
    wal_seg_name(0, name, sizeof name);
    snprintf(seg, sizeof seg, "%s/%s", tmpdir, name);
    stat(seg, &st);
    is_int(st.st_size, WAL_FILE_HDR + w.end, "the size is the records' (blocks kept beyond it)");
    ok((uint64_t)st.st_blocks * 512 >= (uint64_t)st.st_size + (1u << 20),
       "blocks reserved ahead of the write position (%lld bytes allocated)",
       (long long)st.st_blocks * 512);
    snprintf(spare, sizeof spare, "%s/log-next.wal.tmp.%ld", tmpdir, (long)getpid());
    struct stat sp;
    ok(stat(spare, &sp) == 0 && sp.st_size == 0 && sp.st_blocks > 0, "a spare segment file waits");
    uint64_t end = w.end;
    ok(wal_rotate(&w, err, sizeof err) == 0, "rotate");
    wal_seg_name(end, name, sizeof name);
    snprintf(seg, sizeof seg, "%s/%s", tmpdir, name);
    struct stat ns;
    ok(stat(seg, &ns) == 0 && ns.st_ino == sp.st_ino, "the rotation renamed the spare into place");
    wal_append(&w, "after", 5);
    ok(wal_sync_now(&w) == 0 && wal_ok(&w), "the new segment syncs");
    struct collect c;
    struct wal_seg_read r;
    is_int(read_back(tmpdir, end, &c, &r), 1, "the new segment holds its record");
    ok(!r.unsealed, "and is sealed once its predecessor is synced");
    wal_close(&w);
    ok(access(spare, F_OK) != 0, "close removes the spare");
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/strata-test-wal.%ld", (long)getpid());
    test_crc();
    test_round_trip();
    test_truncation();
    test_bit_flips();
    test_zero_tail();
    test_writer(WAL_FSYNC_ALWAYS);
    test_writer(WAL_FSYNC_EVERYSEC);
    test_writer(WAL_FSYNC_NO);
    test_errors();
    test_sync_without_spare_descriptors();
    test_prealloc_and_spare();
    test_datadir();
    rm_rf(tmpdir);
    return tap_done();
}

/* Unit tests for recovery, snapshots and compaction, with a toy keyspace:
 * a counter whose log records must arrive as 0, 1, 2, ... so that any
 * replay that is not an exact prefix fails loudly.
 *
 * Includes the log-truncation fault test: the log cut at 1,000 random
 * offsets always recovers, to exactly the records that were whole. */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crc32c.h"
#include "log.h"
#include "persist.h"
#include "store.h"
#include "tap.h"
#include "util.h"

struct toy {
    uint64_t n; /* next record expected */
};

static int toy_load(void *arg, const char *k, size_t kl, const char *v, size_t vl, int64_t x,
                    char *err, size_t errlen)
{
    struct toy *t = arg;
    if (kl != 1 || k[0] != 'n') {
        snprintf(err, errlen, "unexpected key");
        return -1;
    }
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%.*s", (int)vl, v);
    t->n = strtoull(tmp, NULL, 10);
    return 0;
}

static int toy_apply(void *arg, const unsigned char *p, size_t n, char *err, size_t errlen)
{
    struct toy *t = arg;
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.*s", (int)(n < 63 ? n : 63), (const char *)p);
    uint64_t v = strtoull(tmp, NULL, 10);
    if (v != t->n) {
        snprintf(err, errlen, "record %llu where %llu was expected", (unsigned long long)v,
                 (unsigned long long)t->n);
        return -1;
    }
    t->n++;
    return 0;
}

static int toy_dump(void *arg, struct snapshot_writer *w)
{
    struct toy *t = arg;
    char v[32];
    int n = snprintf(v, sizeof v, "%llu", (unsigned long long)t->n);
    return snapshot_writer_add(w, "n", 1, v, (size_t)n, 0);
}

static const struct persist_ops toy_ops = {toy_load, toy_apply, toy_dump, NULL};

static char dir[256];

static void rm_rf(void)
{
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("# rm failed\n");
}

/* Appends records t->n .. t->n+count-1 ("<n> " plus padding of varied
 * length so records straddle offsets differently). */
static void put_records(struct persist *p, struct toy *t, int count)
{
    for (int i = 0; i < count; i++) {
        char rec[200];
        int n = snprintf(rec, sizeof rec, "%llu ", (unsigned long long)t->n);
        int pad = (int)(t->n * 37 % 120);
        memset(rec + n, 'x', (size_t)pad);
        persist_append(p, rec, (size_t)(n + pad));
        t->n++;
        if (i % 16 == 15)
            wal_flush(&p->wal);
    }
    wal_flush(&p->wal);
}

static int open_toy(struct persist *p, struct toy *t, char *err, size_t errlen)
{
    t->n = 0;
    return persist_open(p, dir, WAL_FSYNC_ALWAYS, &toy_ops, t, err, errlen);
}

static void seg_file(uint64_t start, char *out, size_t n)
{
    char name[32];
    wal_seg_name(start, name, sizeof name);
    snprintf(out, n, "%s/%s", dir, name);
}

static unsigned char *slurp(const char *path, size_t *n)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    fstat(fd, &st);
    unsigned char *b = malloc((size_t)st.st_size + 1);
    *n = (size_t)read(fd, b, (size_t)st.st_size);
    close(fd);
    return b;
}

static void spit(const char *path, const unsigned char *b, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (write(fd, b, n) != (ssize_t)n)
        printf("# short write\n");
    close(fd);
}

static void test_fresh_and_reopen(void)
{
    rm_rf();
    struct persist p;
    struct toy t;
    char err[512] = "";
    ok(open_toy(&p, &t, err, sizeof err) == 0, "fresh dir opens: %s", err);
    ok(t.n == 0 && !p.has_snapshot && p.id != 0, "empty, no snapshot, a dataset id");
    put_records(&p, &t, 100);
    uint64_t id = p.id;
    struct persist q;
    struct toy t2;
    ok(persist_open(&q, dir, WAL_FSYNC_ALWAYS, &toy_ops, &t2, err, sizeof err) < 0 &&
           strstr(err, "in use"), "a second open of the same dir is refused: %s", err);
    persist_close(&p);
    ok(open_toy(&p, &t, err, sizeof err) == 0 && t.n == 100 && p.id == id,
       "reopen replays 100 records");
    ok(p.replayed_records == 100 && p.truncated_bytes == 0, "stats: replayed, nothing dropped");
    persist_close(&p);
}

static void test_truncation_fault(void)
{
    rm_rf();
    struct persist p;
    struct toy t;
    char err[512] = "";
    open_toy(&p, &t, err, sizeof err);
    put_records(&p, &t, 400);
    persist_close(&p);
    char path[400];
    seg_file(0, path, sizeof path);
    size_t n;
    unsigned char *orig = slurp(path, &n);
    /* Offsets of record ends, to know what a cut must leave. */
    size_t ends[400], ne = 0, off = WAL_FILE_HDR;
    while (off < n) {
        const unsigned char *pl;
        size_t pn;
        ssize_t k = wal_frame_parse(orig + off, n - off, &pl, &pn);
        if (k <= 0)
            break;
        off += (size_t)k;
        ends[ne++] = off;
    }
    is_int(ne, 400, "400 records in the file");
    srand(12345);
    int failed_open = 0, wrong = 0, wrong_after = 0;
    for (int i = 0; i < 1000; i++) {
        size_t cut = (size_t)rand() % (n + 1);
        spit(path, orig, cut);
        uint64_t want = 0;
        while (want < ne && ends[want] <= cut)
            want++;
        if (open_toy(&p, &t, err, sizeof err) < 0) {
            if (!failed_open)
                printf("# cut %zu: %s\n", cut, err);
            failed_open++;
            continue;
        }
        if (t.n != want)
            wrong++;
        if (i % 100 == 0) {
            /* The db goes on after a cut: new records land after the
             * prefix, and a restart finds both. */
            put_records(&p, &t, 3);
            persist_close(&p);
            if (open_toy(&p, &t, err, sizeof err) < 0 || t.n != want + 3)
                wrong_after++;
        }
        persist_close(&p);
    }
    ok(failed_open == 0, "the log cut at 1,000 random offsets always opens (%d failed)", failed_open);
    ok(wrong == 0, "and always holds exactly the whole records before the cut (%d wrong)", wrong);
    ok(wrong_after == 0, "writes after a recovered cut survive the next restart");
    free(orig);
}

static void test_corruption_refused(void)
{
    rm_rf();
    struct persist p;
    struct toy t;
    char err[512] = "";
    open_toy(&p, &t, err, sizeof err);
    put_records(&p, &t, 50);
    persist_close(&p);
    char path[400];
    seg_file(0, path, sizeof path);
    size_t n;
    unsigned char *orig = slurp(path, &n);
    orig[n / 2] ^= 0x10;
    spit(path, orig, n);
    ok(open_toy(&p, &t, err, sizeof err) < 0, "a flipped bit mid-log refuses the start");
    ok(strstr(err, "corrupt") && strstr(err, "byte"), "message names corruption and offset: %s", err);
    orig[n / 2] ^= 0x10;
    spit(path, orig, n);
    ok(open_toy(&p, &t, err, sizeof err) == 0 && t.n == 50, "repaired file opens again");
    persist_close(&p);
    free(orig);
}

static void test_snapshots(void)
{
    rm_rf();
    struct persist p;
    struct toy t;
    char err[512] = "";
    open_toy(&p, &t, err, sizeof err);
    put_records(&p, &t, 30);
    ok(persist_save(&p, err, sizeof err) == 0, "SAVE: %s", err);
    ok(p.has_snapshot && p.snap_offset == p.wal.end && p.wal.seg_start == p.snap_offset,
       "snapshot at the log end; the log starts a segment there");
    char path[400];
    seg_file(0, path, sizeof path);
    ok(access(path, F_OK) < 0, "the segment before the snapshot is compacted away");
    put_records(&p, &t, 20);
    pid_t pid = persist_bgsave(&p, err, sizeof err);
    ok(pid > 0, "BGSAVE forks");
    put_records(&p, &t, 10); /* writes while the child runs go to the new segment */
    int st;
    waitpid(pid, &st, 0);
    persist_bgsave_done(&p, st);
    ok(p.last_bgsave_ok && p.snap_offset < p.wal.end, "BGSAVE done; its offset is before the newer writes");
    struct wal_seg *segs;
    size_t ns;
    wal_list(dir, &segs, &ns, err, sizeof err);
    ok(ns == 1 && segs[0].start == p.snap_offset, "only the segment after the snapshot remains");
    free(segs);
    persist_close(&p);
    ok(open_toy(&p, &t, err, sizeof err) == 0 && t.n == 60, "snapshot + log replay give all 60");
    ok(p.loaded_keys == 1 && p.replayed_records == 10, "loaded from the snapshot, replayed 10");
    uint64_t snap_off = p.snap_offset;
    persist_close(&p);

    /* A missing segment after the snapshot refuses the start. */
    seg_file(snap_off, path, sizeof path);
    size_t n;
    unsigned char *seg = slurp(path, &n);
    unlink(path);
    ok(open_toy(&p, &t, err, sizeof err) < 0 && strstr(err, "no log segment"),
       "missing segment refused: %s", err);
    /* A segment from another dataset refuses the start. */
    unsigned char hdr[24];
    memcpy(hdr, seg, 24);
    seg[8] ^= 1; /* the id, with a valid header CRC: only the id differs */
    uint32_t c = crc32c_mask(crc32c(0, seg, 24));
    memcpy(seg + 24, &c, 4); /* little-endian host */
    spit(path, seg, n);
    ok(open_toy(&p, &t, err, sizeof err) < 0 && strstr(err, "another dataset"),
       "foreign segment refused: %s", err);
    memcpy(seg, hdr, 24);
    c = crc32c_mask(crc32c(0, seg, 24));
    memcpy(seg + 24, &c, 4);
    spit(path, seg, n);
    ok(open_toy(&p, &t, err, sizeof err) == 0 && t.n == 60, "restored segment opens");
    persist_close(&p);
    free(seg);

    /* A damaged snapshot refuses the start. */
    char sp[400];
    snprintf(sp, sizeof sp, "%s/%s", dir, SNAPSHOT_NAME);
    unsigned char *snap = slurp(sp, &n);
    snap[n - 3] ^= 4;
    spit(sp, snap, n);
    ok(open_toy(&p, &t, err, sizeof err) < 0 && strstr(err, "snapshot"), "damaged snapshot refused: %s", err);
    free(snap);
}

static void test_compaction_trigger(void)
{
    rm_rf();
    struct persist p;
    struct toy t;
    char err[512] = "";
    open_toy(&p, &t, err, sizeof err);
    p.compact_min = 4096;
    int64_t now = util_now_ms();
    ok(!persist_should_compact(&p, now), "an empty log needs no compaction");
    put_records(&p, &t, 100);
    ok(persist_should_compact(&p, now), "past compact_min it does");
    persist_save(&p, err, sizeof err);
    ok(!persist_should_compact(&p, now), "after a snapshot it does not");

    /* The log written while a BGSAVE runs is not held against the next
     * compaction: right after one, no other starts, however long ago. */
    pid_t pid = persist_bgsave(&p, err, sizeof err);
    ok(pid > 0, "bgsave started: %s", err);
    put_records(&p, &t, 200); /* written "during" the child's run */
    int st;
    waitpid(pid, &st, 0);
    int64_t before = util_now_ms();
    persist_bgsave_done(&p, st);
    ok(p.last_bgsave_ok && persist_log_bytes(&p) >= p.compact_min,
       "after the bgsave the log since the snapshot is past compact_min (%llu bytes)",
       (unsigned long long)persist_log_bytes(&p));
    is_int(p.compact_base, persist_log_bytes(&p), "that log is the base of the next trigger");
    ok(!persist_should_compact(&p, INT64_MAX), "no compaction for the log the last one missed");
    /* Spaced: grown enough, but not before the gap after the last one. */
    ok(p.compact_after_ms >= before + PERSIST_COMPACT_GAP_MS, "a gap after a compaction");
    put_records(&p, &t, 100);
    ok(!persist_should_compact(&p, p.compact_after_ms - 1), "grown, but inside the gap: no");
    ok(persist_should_compact(&p, p.compact_after_ms), "grown, after the gap: yes");

    /* A failed one is retried only after PERSIST_COMPACT_RETRY_MS. */
    pid = persist_bgsave(&p, err, sizeof err);
    waitpid(pid, &st, 0);
    before = util_now_ms();
    persist_bgsave_done(&p, 1 << 8); /* as if the child had exited with 1 */
    ok(!p.last_bgsave_ok && p.compact_after_ms >= before + PERSIST_COMPACT_RETRY_MS,
       "a failure waits before the retry");
    put_records(&p, &t, 100);
    ok(!persist_should_compact(&p, p.compact_after_ms - 1) &&
           persist_should_compact(&p, p.compact_after_ms),
       "and retries after it");
    persist_close(&p);
}

/* A store-backed keyspace: the snapshot path loads into a real table. */
static int kv_load(void *arg, const char *k, size_t kl, const char *v, size_t vl, int64_t x,
                   char *err, size_t errlen)
{
    if (!store_insert(arg, k, kl, v, vl, x, 1000)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}
static int kv_apply(void *arg, const unsigned char *p, size_t n, char *err, size_t errlen)
{
    (void)arg, (void)p, (void)n;
    snprintf(err, errlen, "no log records expected");
    return -1;
}
struct kv_dump_ctx {
    struct snapshot_writer *w;
    int rc;
};
static void kv_dump_one(void *ctx, struct store_entry *e)
{
    struct kv_dump_ctx *d = ctx;
    if (d->rc == 0)
        d->rc = snapshot_writer_add(d->w, store_key(e), store_klen(e), store_val(e), store_vlen(e),
                                    store_expire(e));
}
static int kv_dump(void *arg, struct snapshot_writer *w)
{
    struct kv_dump_ctx d = {w, 0};
    store_foreach(arg, kv_dump_one, &d);
    return d.rc;
}
static int reserve_calls;
static void kv_reserve(void *arg, uint64_t nkeys)
{
    reserve_calls++;
    store_reserve(arg, (size_t)nkeys);
}
static const struct persist_ops kv_ops = {kv_load, kv_apply, kv_dump, kv_reserve};
static const struct persist_ops kv_ops_unsized = {kv_load, kv_apply, kv_dump, NULL};

/* A snapshot of N keys loads into a table sized once from its key count:
 * no incremental rehash starts, and the table is the smallest that holds
 * N keys. Without the hint the same load resizes many times. */
static void test_snapshot_presizes(void)
{
    rm_rf();
    enum { N = 50000 };
    char err[512] = "";
    struct store src;
    store_init(&src, 1, 1000);
    for (int i = 0; i < N; i++) {
        char k[32];
        int kl = snprintf(k, sizeof k, "key:%d", i);
        store_insert(&src, k, (size_t)kl, k, (size_t)kl, 0, 1000);
    }
    struct persist p;
    ok(persist_open(&p, dir, WAL_FSYNC_NO, &kv_ops, &src, err, sizeof err) == 0, "open: %s", err);
    ok(persist_save(&p, err, sizeof err) == 0, "snapshot of %d keys: %s", N, err);
    persist_close(&p);

    struct store dst;
    store_init(&dst, 2, 1000);
    reserve_calls = 0;
    ok(persist_open(&p, dir, WAL_FSYNC_NO, &kv_ops, &dst, err, sizeof err) == 0, "reload: %s",
       err);
    is_int(p.loaded_keys, N, "every key loaded");
    is_int(dst.count, N, "the store holds them");
    is_int(reserve_calls, 2, "sized before the load, released after it");
    is_int(dst.resizes, 0, "no rehash during the load");
    is_int(store_buckets(&dst), 65536, "one table, the smallest holding N keys");
    is_int(dst.reserved, 0, "the reservation ended with the load");
    ok(store_find(&dst, "key:49999", 9) != NULL, "keys are found");
    persist_close(&p);

    struct store plain;
    store_init(&plain, 3, 1000);
    ok(persist_open(&p, dir, WAL_FSYNC_NO, &kv_ops_unsized, &plain, err, sizeof err) == 0,
       "reload without the hint: %s", err);
    ok(plain.count == N && plain.resizes > 5, "without it the table resized %llu times",
       (unsigned long long)plain.resizes);
    persist_close(&p);

    /* A reservation on a non-empty store never shrinks it. */
    store_reserve(&plain, 10);
    ok(store_buckets(&plain) >= N && store_find(&plain, "key:7", 5), "reserve below count: kept");
    store_reserve(&plain, 0);
    store_free(&plain);
    store_free(&dst);
    store_free(&src);
}


static void set_flag(uint64_t start, uint32_t v)
{
    char path[400];
    seg_file(start, path, sizeof path);
    unsigned char b[4];
    util_put_le32(b, v);
    int fd = open(path, O_WRONLY);
    if (pwrite(fd, b, 4, 28) != 4)
        printf("# short write\n");
    close(fd);
}

static uint32_t get_flag(uint64_t start)
{
    char path[400];
    seg_file(start, path, sizeof path);
    unsigned char b[4] = {0xff, 0xff, 0xff, 0xff};
    int fd = open(path, O_RDONLY);
    if (pread(fd, b, 4, 28) != 4)
        printf("# short read\n");
    close(fd);
    return util_get_le32(b);
}

/* everysec rotation: the new segment is created unsealed and the thread
 * syncs the old one. A power cut in between leaves the old segment torn
 * and the new one unsealed: recovery reads that as the lost last second
 * (the new segment set aside), never as damage. A torn segment followed by
 * a sealed one stays damage. */
static void test_power_cut_at_rotation(void)
{
    rm_rf();
    struct persist p;
    struct toy t = {0};
    char err[512] = "";
    ok(persist_open(&p, dir, WAL_FSYNC_EVERYSEC, &toy_ops, &t, err, sizeof err) == 0,
       "everysec opens: %s", err);
    put_records(&p, &t, 100);
    uint64_t first_end = p.wal.end;
    ok(wal_rotate(&p.wal, err, sizeof err) == 0 && p.wal.seg_start == first_end,
       "rotation returns at once with the new segment current");
    put_records(&p, &t, 20);
    ok(wal_sync_now(&p.wal) == 0 && p.wal.synced == p.wal.end, "everything synced");
    is_int(get_flag(first_end), 0, "once its predecessor is synced the new segment is sealed");
    persist_close(&p);

    /* The kill -9 case: the page cache kept the old segment whole; the new
     * one may still say unsealed. It is adopted, and sealed on resume. */
    set_flag(first_end, WAL_SEG_UNSEALED);
    t.n = 0;
    ok(persist_open(&p, dir, WAL_FSYNC_EVERYSEC, &toy_ops, &t, err, sizeof err) == 0 &&
           t.n == 120, "whole predecessor + unsealed newest: all 120 records (%s)", err);
    is_int(get_flag(first_end), 0, "sealed once recovery accepted it");
    persist_close(&p);

    /* The power cut: the old segment lost its tail, the new one is unsealed. */
    char path[400], aside[500];
    seg_file(0, path, sizeof path);
    size_t n;
    unsigned char *b = slurp(path, &n);
    spit(path, b, n - 7);
    free(b);
    set_flag(first_end, WAL_SEG_UNSEALED);
    t.n = 0;
    ok(persist_open(&p, dir, WAL_FSYNC_EVERYSEC, &toy_ops, &t, err, sizeof err) == 0,
       "torn segment + unsealed next: starts (%s)", err);
    is_int(t.n, 99, "the whole records of the torn segment, nothing after");
    seg_file(first_end, path, sizeof path);
    snprintf(aside, sizeof aside, "%s.unsynced", path);
    ok(access(path, F_OK) != 0 && access(aside, F_OK) == 0, "the unsealed segment set aside");
    ok(p.truncated_bytes > 0 && p.wal.seg_start == 0, "the torn tail is cut and appended to");
    put_records(&p, &t, 5);
    persist_close(&p);
    t.n = 0;
    ok(persist_open(&p, dir, WAL_FSYNC_EVERYSEC, &toy_ops, &t, err, sizeof err) == 0 && t.n == 104,
       "reopens with the records appended after the cut");
    persist_close(&p);

    /* Damage: a torn segment before a sealed one refuses the start. */
    t.n = 0;
    ok(persist_open(&p, dir, WAL_FSYNC_EVERYSEC, &toy_ops, &t, err, sizeof err) == 0, "open");
    uint64_t second = p.wal.end;
    ok(wal_rotate(&p.wal, err, sizeof err) == 0, "rotate again");
    put_records(&p, &t, 3);
    persist_close(&p);
    seg_file(0, path, sizeof path);
    b = slurp(path, &n);
    spit(path, b, n - 7);
    free(b);
    is_int(get_flag(second), 0, "the newest is sealed");
    t.n = 0;
    ok(persist_open(&p, dir, WAL_FSYNC_EVERYSEC, &toy_ops, &t, err, sizeof err) < 0 &&
           strstr(err, "cut short"), "torn segment + sealed next: refused (%s)", err);
}

int main(void)
{
    log_set_level(LOG_ERROR); /* recovery warns about every cut; expected here */
    /* tmpfs when there is one: the truncation test reopens a thousand
     * times, and each open syncs files. */
    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(dir, sizeof dir, "%s/strata-test-persist.%ld", base, (long)getpid());
    test_fresh_and_reopen();
    test_truncation_fault();
    test_corruption_refused();
    test_snapshots();
    test_compaction_trigger();
    test_snapshot_presizes();
    test_power_cut_at_rotation();
    rm_rf();
    return tap_done();
}

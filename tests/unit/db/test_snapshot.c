/* Unit tests for snapshot files and the msgpack cursor: round trip, every
 * damaged or truncated file refused, atomic replacement. */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "mpk.h"
#include "snapshot.h"
#include "tap.h"

static char dir[256], path[400];

struct sum {
    uint64_t n;
    uint32_t crc;
    int64_t expire_sum;
};

static int sum_fn(void *arg, const char *k, size_t kl, const char *v, size_t vl, int64_t x,
                  char *err, size_t errlen)
{
    struct sum *s = arg;
    s->n++;
    s->crc = crc32c(s->crc, k, kl);
    s->crc = crc32c(s->crc, v, vl);
    s->expire_sum += x;
    return 0;
}

static struct sum write_snapshot(uint64_t offset, int n, size_t big)
{
    struct snapshot_writer w;
    struct snapshot_hdr h = {77, offset, 1700000000000};
    char err[256];
    struct sum s = {0};
    if (snapshot_writer_open(&w, dir, &h, err, sizeof err) < 0) {
        printf("# %s\n", err);
        return s;
    }
    char *val = malloc(big + 1);
    for (size_t i = 0; i < big; i++)
        val[i] = (char)('a' + i % 26);
    for (int i = 0; i < n; i++) {
        char k[32];
        int kl = snprintf(k, sizeof k, "key:%d", i);
        size_t vl = i == 5 ? big : (size_t)(i % 40);
        int64_t x = i % 3 == 0 ? 1800000000000 + i : 0;
        snapshot_writer_add(&w, k, (size_t)kl, val, vl, x);
        s.n++;
        s.crc = crc32c(s.crc, k, (size_t)kl);
        s.crc = crc32c(s.crc, val, vl);
        s.expire_sum += x;
    }
    if (snapshot_writer_finish(&w, err, sizeof err) < 0)
        printf("# %s\n", err);
    free(val);
    return s;
}

static void test_round_trip(void)
{
    struct sum want = write_snapshot(1234, 5000, 600 * 1024);
    struct sum got = {0};
    struct snapshot_hdr h;
    char err[256] = "";
    uint64_t count = 0;
    is_int(snapshot_read(path, &h, sum_fn, &got, &count, err, sizeof err), 0, "read back: %s", err);
    ok(h.id == 77 && h.offset == 1234 && h.created_ms == 1700000000000, "header fields");
    ok(got.n == want.n && count == want.n, "all %llu keys", (unsigned long long)got.n);
    ok(got.crc == want.crc && got.expire_sum == want.expire_sum, "keys, values, expiries intact");
    struct snapshot_hdr h2;
    ok(snapshot_read_header(path, &h2, err, sizeof err) == 0 && h2.offset == 1234, "header only");

    /* An empty store is a valid snapshot too. */
    write_snapshot(9, 0, 0);
    got = (struct sum){0};
    ok(snapshot_read(path, &h, sum_fn, &got, &count, err, sizeof err) == 0 && count == 0 &&
           h.offset == 9, "empty snapshot");

    char missing[500];
    snprintf(missing, sizeof missing, "%s/nothing.db", dir);
    is_int(snapshot_read(missing, &h, sum_fn, &got, &count, err, sizeof err), 1, "missing file: 1");
}

static unsigned char *slurp(size_t *n)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    fstat(fd, &st);
    unsigned char *p = malloc((size_t)st.st_size);
    *n = (size_t)read(fd, p, (size_t)st.st_size);
    close(fd);
    return p;
}

static void test_damage(void)
{
    write_snapshot(55, 300, 3000);
    size_t n;
    unsigned char *orig = slurp(&n);
    unsigned char *copy = malloc(n);
    struct snapshot_hdr h;
    char err[256];
    uint64_t count;
    int accepted = 0, tried = 0;
    /* Every truncation point refused (sampled densely: every 7th byte plus
     * the last 64). */
    for (size_t cut = 0; cut < n; cut += (cut + 64 >= n ? 1 : 7)) {
        unsigned char *t = malloc(cut ? cut : 1); /* exact size: ASan sees overreads */
        memcpy(t, orig, cut);
        tried++;
        int rc = snapshot_read_buf(t, cut, "t", &h, NULL, NULL, &count, err, sizeof err);
        free(t);
        if (rc == 0)
            accepted++;
    }
    ok(accepted == 0, "%d truncated snapshots all refused", tried);
    /* Bit flips anywhere refused. */
    accepted = tried = 0;
    for (size_t bit = 0; bit < n * 8; bit += 13) {
        memcpy(copy, orig, n);
        copy[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        tried++;
        if (snapshot_read_buf(copy, n, "t", &h, NULL, NULL, &count, err, sizeof err) == 0)
            accepted++;
    }
    ok(accepted == 0, "%d bit-flipped snapshots all refused", tried);
    ok(strstr(err, "damaged") != NULL, "message says damaged: %s", err);
    ok(snapshot_read(path, &h, NULL, NULL, &count, err, sizeof err) == 0 && count == 300,
       "the original still reads");
    free(orig);
    free(copy);
}

static void test_abort(void)
{
    write_snapshot(1, 10, 10);
    struct snapshot_writer w;
    struct snapshot_hdr h = {77, 2, 0};
    char err[256];
    ok(snapshot_writer_open(&w, dir, &h, err, sizeof err) == 0, "open a second writer");
    snapshot_writer_add(&w, "k", 1, "v", 1, 0);
    snapshot_writer_abort(&w);
    ok(access(w.tmp, F_OK) < 0, "abort removes the temporary file");
    uint64_t count;
    ok(snapshot_read(path, &h, NULL, NULL, &count, err, sizeof err) == 0 && h.offset == 1 &&
           count == 10, "the old snapshot is untouched");
}

static void test_mpk(void)
{
    struct buf b;
    buf_init(&b);
    msgpack_packer pk;
    mpk_packer_init(&pk, &b);
    int64_t ints[] = {0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295LL, 4294967296LL,
                      INT64_MAX, -1, -32, -33, -128, -129, -32768, -32769, INT64_MIN};
    size_t ni = sizeof ints / sizeof ints[0];
    msgpack_pack_array(&pk, (uint32_t)ni + 3);
    for (size_t i = 0; i < ni; i++)
        msgpack_pack_int64(&pk, ints[i]);
    msgpack_pack_bin(&pk, 3);
    msgpack_pack_bin_body(&pk, "abc", 3);
    msgpack_pack_str(&pk, 40);
    msgpack_pack_str_body(&pk, "0123456789012345678901234567890123456789", 40);
    msgpack_pack_nil(&pk);
    struct mpk m;
    mpk_init(&m, buf_head(&b), buf_size(&b));
    uint32_t n;
    int good = mpk_array(&m, &n) == 0 && n == ni + 3;
    for (size_t i = 0; i < ni; i++) {
        int64_t v;
        if (mpk_int(&m, &v) < 0 || v != ints[i])
            good = 0;
    }
    const char *p;
    size_t l;
    good = good && mpk_bytes(&m, &p, &l) == 0 && l == 3 && memcmp(p, "abc", 3) == 0;
    good = good && mpk_bytes(&m, &p, &l) == 0 && l == 40;
    good = good && mpk_nil(&m) == 0 && mpk_done(&m);
    ok(good, "mpk reads every integer width, bin, str, nil");
    /* Every truncation of that message fails cleanly somewhere. */
    int clean = 1;
    for (size_t cut = 0; cut < buf_size(&b); cut++) {
        mpk_init(&m, buf_head(&b), cut);
        int fail = mpk_array(&m, &n) < 0;
        for (size_t i = 0; !fail && i < ni; i++) {
            int64_t v;
            fail = mpk_int(&m, &v) < 0;
        }
        fail = fail || mpk_bytes(&m, &p, &l) < 0 || mpk_bytes(&m, &p, &l) < 0 || mpk_nil(&m) < 0;
        if (!fail)
            clean = 0;
    }
    ok(clean, "every truncated message is rejected");
    buf_free(&b);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/strata-test-snap.%ld", (long)getpid());
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/%s", dir, SNAPSHOT_NAME);
    test_round_trip();
    test_damage();
    test_abort();
    test_mpk();
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("# cleanup failed\n");
    return tap_done();
}

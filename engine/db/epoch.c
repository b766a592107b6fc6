/* epoch: the EPOCH file and the log's history by epoch (see epoch.h). */
#include "epoch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "datadir.h"

void epoch_init(struct epoch_state *e)
{
    memset(e, 0, sizeof *e);
    e->nhist = 1;
}

void epoch_begin(struct epoch_state *e, uint64_t epoch, uint64_t start)
{
    if (epoch > e->epoch)
        e->epoch = epoch;
    struct epoch_span *last = &e->hist[e->nhist - 1];
    if (last->epoch == epoch)
        return;
    if (e->nhist == EPOCH_HISTORY) {
        memmove(e->hist, e->hist + 1, (EPOCH_HISTORY - 1) * sizeof e->hist[0]);
        e->nhist--;
    }
    e->hist[e->nhist].epoch = epoch;
    e->hist[e->nhist].start = start;
    e->nhist++;
}

int epoch_end_of(const struct epoch_state *e, uint64_t ep, uint64_t *end)
{
    for (int i = e->nhist - 1; i >= 0; i--) {
        if (e->hist[i].epoch == ep) {
            *end = i + 1 < e->nhist ? e->hist[i + 1].start : UINT64_MAX;
            return 0;
        }
        if (e->hist[i].epoch < ep)
            break;
    }
    return -1;
}

void epoch_hist_format(const struct epoch_state *e, char *out, size_t n)
{
    size_t at = 0;
    out[0] = 0;
    for (int i = 0; i < e->nhist && at < n; i++) {
        int k = snprintf(out + at, n - at, "%s%llu:%llu", i ? "," : "",
                         (unsigned long long)e->hist[i].epoch,
                         (unsigned long long)e->hist[i].start);
        if (k < 0 || (size_t)k >= n - at) {
            out[at] = 0;
            return;
        }
        at += (size_t)k;
    }
}

int epoch_hist_parse(struct epoch_state *e, const char *s)
{
    int n = 0;
    struct epoch_span h[EPOCH_HISTORY];
    while (*s) {
        char *endp;
        errno = 0;
        unsigned long long ep = strtoull(s, &endp, 10);
        if (endp == s || *endp != ':' || errno)
            return -1;
        s = endp + 1;
        unsigned long long st = strtoull(s, &endp, 10);
        if (endp == s || errno || n == EPOCH_HISTORY)
            return -1;
        if (n > 0 && (ep <= h[n - 1].epoch || st < h[n - 1].start))
            return -1;
        h[n].epoch = ep;
        h[n].start = st;
        n++;
        s = endp;
        if (*s == ',')
            s++;
        else if (*s)
            return -1;
    }
    if (n == 0)
        return -1;
    memcpy(e->hist, h, (size_t)n * sizeof h[0]);
    e->nhist = n;
    return 0;
}

int epoch_cmp_pos(uint64_t ea, uint64_t oa, uint64_t eb, uint64_t ob)
{
    if (ea != eb)
        return ea < eb ? -1 : 1;
    if (oa != ob)
        return oa < ob ? -1 : 1;
    return 0;
}

/* The file: "strata-epoch 1\nepoch N\nvoted_for NAME\nhistory E:S,...\n" */
int epoch_load(struct epoch_state *e, const char *dir, char *err, size_t errlen)
{
    epoch_init(e);
    char path[1100];
    if (datadir_join(path, sizeof path, dir, EPOCH_FILE) < 0) {
        snprintf(err, errlen, "path too long");
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return -1;
    }
    char text[2048];
    ssize_t k = read(fd, text, sizeof text - 1);
    close(fd);
    if (k < 0) {
        snprintf(err, errlen, "cannot read '%s': %s", path, strerror(errno));
        return -1;
    }
    text[k] = 0;
    unsigned long long ep;
    char voted[64], hist[1900];
    int n = sscanf(text, "strata-epoch 1\nepoch %llu\nvoted_for %63s\nhistory %1899s\n", &ep,
                   voted, hist);
    if (n != 3 || epoch_hist_parse(e, hist) < 0) {
        snprintf(err, errlen, "'%s' is damaged (remove it to start at epoch 0 only if this node "
                              "never took part in a failover)", path);
        return -1;
    }
    e->epoch = ep;
    snprintf(e->voted_for, sizeof e->voted_for, "%s", strcmp(voted, "-") == 0 ? "" : voted);
    if (epoch_log(e) > e->epoch)
        e->epoch = epoch_log(e);
    return 0;
}

int epoch_save(const struct epoch_state *e, const char *dir, char *err, size_t errlen)
{
    char hist[1024], text[1300];
    epoch_hist_format(e, hist, sizeof hist);
    int n = snprintf(text, sizeof text, "strata-epoch 1\nepoch %llu\nvoted_for %s\nhistory %s\n",
                     (unsigned long long)e->epoch, e->voted_for[0] ? e->voted_for : "-", hist);
    return datadir_write_atomic(dir, EPOCH_FILE, text, (size_t)n, err, errlen);
}

/* Unit tests for the epoch file and the log's history by epoch: where an
 * epoch ends, positions compared by epoch then offset, the text form and
 * its checks, the file written and read back, a damaged file refused; and
 * the default election rule (furthest log, then lowest priority number,
 * then name). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "epoch.h"
#include "failover.h"
#include "tap.h"

static void test_history(void)
{
    struct epoch_state e;
    epoch_init(&e);
    uint64_t end = 0;
    ok(epoch_log(&e) == 0 && epoch_end_of(&e, 0, &end) == 0 && end == UINT64_MAX,
       "fresh: epoch 0 runs on");
    epoch_begin(&e, 3, 500);
    is_int(e.epoch, 3, "a promotion raises the epoch");
    is_int(epoch_log(&e), 3, "the log ends in the new epoch");
    ok(epoch_end_of(&e, 0, &end) == 0 && end == 500, "epoch 0 ends where 3 begins");
    ok(epoch_end_of(&e, 3, &end) == 0 && end == UINT64_MAX, "the last epoch runs on");
    ok(epoch_end_of(&e, 2, &end) < 0, "an epoch the history never had is unknown");
    epoch_begin(&e, 4, 500);
    ok(epoch_end_of(&e, 3, &end) == 0 && end == 500, "an epoch that wrote nothing ends at once");
    char txt[256];
    epoch_hist_format(&e, txt, sizeof txt);
    is_str(txt, "0:0,3:500,4:500", "text form");
    struct epoch_state f;
    epoch_init(&f);
    ok(epoch_hist_parse(&f, txt) == 0 && f.nhist == 3 && f.hist[1].epoch == 3 &&
       f.hist[1].start == 500, "parsed back");
    ok(epoch_hist_parse(&f, "3:5,2:9") < 0, "epochs must rise");
    ok(epoch_hist_parse(&f, "1:9,2:5") < 0, "starts must not fall");
    ok(epoch_hist_parse(&f, "1:x") < 0 && epoch_hist_parse(&f, "") < 0, "junk refused");
    for (int i = 5; i < 40; i++)
        epoch_begin(&e, (uint64_t)i, (uint64_t)i * 100);
    ok(e.nhist == EPOCH_HISTORY && epoch_log(&e) == 39, "a full history drops its oldest");
}

static void test_positions(void)
{
    ok(epoch_cmp_pos(2, 10, 1, 999) > 0, "a later epoch is further whatever the offset");
    ok(epoch_cmp_pos(1, 10, 1, 20) < 0 && epoch_cmp_pos(1, 20, 1, 20) == 0, "then the offset");
}

static void test_file(void)
{
    char dir[] = "/tmp/strata-epoch-XXXXXX";
    ok(mkdtemp(dir) != NULL, "temp dir");
    struct epoch_state e, r;
    char err[256];
    ok(epoch_load(&e, dir, err, sizeof err) == 0 && e.epoch == 0 && e.nhist == 1,
       "no file: epoch 0");
    epoch_begin(&e, 7, 1234);
    snprintf(e.voted_for, sizeof e.voted_for, "db2");
    ok(epoch_save(&e, dir, err, sizeof err) == 0, "saved");
    ok(epoch_load(&r, dir, err, sizeof err) == 0, "loaded");
    ok(r.epoch == 7 && strcmp(r.voted_for, "db2") == 0 && r.nhist == 2 &&
       r.hist[1].start == 1234, "what was saved");
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, EPOCH_FILE);
    FILE *fp = fopen(path, "w");
    fputs("strata-epoch 1\nepoch x\n", fp);
    fclose(fp);
    ok(epoch_load(&r, dir, err, sizeof err) < 0 && strstr(err, "damaged"), "damaged: refused");
    unlink(path);
    rmdir(dir);
}

static void test_default_pick(void)
{
    struct failover_cand c[3] = {
        {"db2", 1, 500, 100, 0, 0},
        {"db3", 1, 900, 100, 0, 0},
        {"db4", 1, 900, 10, 1, 0},
    };
    is_str(c[failover_default_pick(c, 3)].node, "db4", "furthest, then the lower priority number");
    c[2].priority = 100;
    is_str(c[failover_default_pick(c, 3)].node, "db3", "then the name");
    c[2].waiting = 1;
    is_str(c[failover_default_pick(c, 3)].node, "db4", "one that follows nobody before the name");
    c[0].log_epoch = 2;
    is_str(c[failover_default_pick(c, 3)].node, "db2", "a later epoch wins over a larger offset");
}

int main(void)
{
    test_history();
    test_positions();
    test_file();
    test_default_pick();
    return tap_done();
}

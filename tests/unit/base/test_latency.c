#include <math.h>

#include "latency.h"
#include "tap.h"

/* Within one bucket (19%) above the true value. */
static int close_above(double got, double want) { return got >= want && got <= want * 1.19 + 1e-9; }

int main(void)
{
    struct latency l;
    latency_init(&l, 10.0, 0.0);
    is_int((long long)latency_percentile(&l, 99, 0.0), -1, "no samples: -1");
    /* 1..1000 ms, one each: p50 ~ 500 ms, p99 ~ 990 ms. */
    for (int i = 1; i <= 1000; i++)
        latency_record(&l, (double)i, 1.0);
    double p50 = latency_percentile(&l, 50, 1.0), p99 = latency_percentile(&l, 99, 1.0);
    ok(close_above(p50, 500), "p50 of 1..1000 ms is 500 ms within a bucket (%.1f)", p50);
    ok(close_above(p99, 990), "p99 of 1..1000 ms is 990 ms within a bucket (%.1f)", p99);
    ok(close_above(latency_percentile(&l, 100, 1.0), 1000), "p100 is the maximum");

    /* Next window: the previous one still counts. */
    for (int i = 0; i < 1000; i++)
        latency_record(&l, 0.2, 12.0);
    double p25 = latency_percentile(&l, 25, 12.0);
    ok(close_above(p25, 0.2), "new fast samples dominate the low percentiles (%.3f)", p25);
    ok(latency_percentile(&l, 99, 12.0) > 900, "the previous window still holds the slow tail");
    /* Two windows later, only the fast samples are left. */
    latency_record(&l, 0.2, 23.0);
    ok(close_above(latency_percentile(&l, 99, 23.0), 0.2), "old windows age out");
    /* Idle for long: everything is stale. */
    is_int((long long)latency_percentile(&l, 50, 100.0), -1, "idle past two windows: no samples");
    /* Extremes land in the end buckets. */
    latency_record(&l, 0.0, 100.0);
    latency_record(&l, 1e9, 100.0);
    ok(latency_percentile(&l, 50, 100.0) <= 0.001, "zero goes to the first bucket");
    ok(latency_percentile(&l, 100, 100.0) > 10000, "a huge value goes to the last bucket");
    return tap_done();
}

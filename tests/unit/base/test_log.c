#include "log.h"
#include "tap.h"

int main(void)
{
    struct log_limit ll = {0};
    unsigned long skipped = 99;
    ok(log_limit_allow(&ll, 100.0, 60.0, &skipped), "the first line is logged");
    is_int(skipped, 0, "nothing skipped before the first line");
    ok(!log_limit_allow(&ll, 100.5, 60.0, &skipped), "a repeat within the interval is skipped");
    for (int i = 0; i < 1000; i++)
        log_limit_allow(&ll, 130.0, 60.0, &skipped);
    ok(!log_limit_allow(&ll, 159.9, 60.0, &skipped), "still inside the interval");
    ok(log_limit_allow(&ll, 160.0, 60.0, &skipped), "the next line once the interval is over");
    is_int(skipped, 1002, "it reports how many were skipped");
    ok(!log_limit_allow(&ll, 160.1, 60.0, &skipped), "and the count restarts");
    return tap_done();
}

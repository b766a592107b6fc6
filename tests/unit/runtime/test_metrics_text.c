/* metrics_text: a page written service by service comes out one group per
 * family, HELP and TYPE once, summaries' _sum/_count kept with them. */
#include <string.h>

#include "tap.h"
#include "buf.h"
#include "metrics_text.h"

static const char *group(struct buf *out, const char *in)
{
    buf_reset(out);
    metrics_text_group(in, strlen(in), out);
    buf_append(out, "", 1);
    return buf_head(out);
}

int main(void)
{
    struct buf out;
    buf_init(&out);
    is_str(group(&out, "# HELP a_total A.\n# TYPE a_total counter\na_total{s=\"1\"} 1\n"
                       "# HELP b B.\n# TYPE b gauge\nb{s=\"1\"} 2\n"
                       "# HELP a_total A.\n# TYPE a_total counter\na_total{s=\"2\"} 3\n"
                       "# HELP b B.\n# TYPE b gauge\nb{s=\"2\"} 4\n"),
           "# HELP a_total A.\n# TYPE a_total counter\na_total{s=\"1\"} 1\na_total{s=\"2\"} 3\n"
           "# HELP b B.\n# TYPE b gauge\nb{s=\"1\"} 2\nb{s=\"2\"} 4\n",
           "two services' families merge, in first-seen order");
    is_str(group(&out, "# TYPE l summary\nl{quantile=\"0.5\"} 1\nl_sum 2\nl_count 3\n"
                       "# TYPE l_other gauge\nl_other 1\n# TYPE l summary\nl_sum 5\n"),
           "# TYPE l summary\nl{quantile=\"0.5\"} 1\nl_sum 2\nl_count 3\nl_sum 5\n"
           "# TYPE l_other gauge\nl_other 1\n",
           "a summary keeps its _sum and _count");
    is_str(group(&out, "# a comment\n\nx 1"), "x 1\n", "comments and blank lines dropped, "
           "last newline added");
    buf_free(&out);
    return tap_done();
}

/* metrics_text: puts a /metrics page in the shape the Prometheus text
 * format requires -- every sample of a family in one group, under one
 * HELP and one TYPE line.
 *
 * Each service writes its own families, and a node (or a one-process run)
 * may host several services of one kind, whose samples would otherwise
 * come out as several groups of the same family, which scrapers reject.
 * Rather than make every service coordinate, the node's page is written
 * freely and then regrouped here, in the order families first appear. */
#ifndef STRATA_METRICS_TEXT_H
#define STRATA_METRICS_TEXT_H

#include <stddef.h>

#include "buf.h"

/* Appends in[0..n) regrouped to out. A sample belongs to the family of its
 * name, or -- for a summary's or histogram's `_sum`, `_count` and `_bucket`
 * samples -- to the family they extend. Repeated HELP or TYPE lines of a
 * family are kept once; other comments are dropped. Returns 0, or -1 out
 * of memory (out then holds what was written). */
int metrics_text_group(const char *in, size_t n, struct buf *out);

#endif

/* db_role: the ROLE command — what a db node is and how far its data goes,
 * in Redis's reply shapes, so any client (and the web tier's db client
 * for read-your-writes and for following a failover) can ask:
 *
 *   a primary: ["master", <log offset>, [[ip, port, acked offset], ...]]
 *   a replica: ["slave", <upstream host>, <upstream port>,
 *               <"connect"|"connecting"|"sync"|"connected">, <applied offset>]
 *
 * A primary's offset is the end of its log, every write it has run
 * included (a ROLE pipelined behind a write counts that write). A
 * replica's is the offset its served data reflects: every read it runs
 * after ROLE sees at least that much; during a full resync, whose new copy
 * is not served yet, it is 0. Change-stream followers (caches) are not
 * replicas and are not listed. */
#ifndef STRATA_DB_ROLE_H
#define STRATA_DB_ROLE_H

#include <stdint.h>

#include "buf.h"
#include "repl_primary.h"
#include "repl_replica.h"

/* Appends ROLE's reply. rr: the node's upstream link when it is a replica,
 * else NULL; rp: its own replicas (NULL when none can attach); offset: the
 * end of its log. */
void db_role_reply(struct buf *out, const struct repl_primary *rp, const struct repl_replica *rr,
                   uint64_t offset);

#endif

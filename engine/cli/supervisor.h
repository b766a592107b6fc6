/* supervisor: `strata run TOPOLOGY` — one process per node.
 *
 * Each node runs as `strata run TOPOLOGY --node NAME` (a child of ours). The
 * supervisor waits until every node reports ready (a byte on a pipe whose
 * number it passes in STRATA_READY_FD), prints where everything listens,
 * restarts a node that dies with exponential backoff, forwards signals, and
 * on SIGINT/SIGTERM stops all nodes gracefully (each drains, then exits).
 *
 * Reload (SIGHUP, POST /reload on the supervisor's admin address, or the file
 * watcher): the topology is loaded and checked; on any error nothing
 * changes. Otherwise nodes that appeared are started, nodes that vanished
 * are stopped, and every remaining node is told to reload (SIGHUP), which
 * it does by itself, validating before it swaps. */
#ifndef STRATA_SUPERVISOR_H
#define STRATA_SUPERVISOR_H

/* Runs until stopped. Returns the process exit code: 0 when every node
 * stopped cleanly, 1 otherwise (or when a node could not start). */
int supervisor_main(const char *topology_path, const char *log_level);

#endif

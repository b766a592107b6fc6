/* cache_server: the `cache` service kind — a Redis-compatible cache node.
 *
 * Owns the cache (a keyspace plus eviction, cache.h) and its clients, which
 * resp_server.h runs: each readable client runs as many complete commands
 * as its read buffer holds (pipelining), answering into its write buffer at
 * once; it stops when the write buffer is over its high mark and goes on
 * when it drains, so a client that never reads replies cannot grow memory
 * without bound. A cron timer (10 Hz) runs active expiry, rehash steps and
 * stats sampling.
 *
 * Config fields (the normalized table from the topology): node, listen,
 * max_memory, eviction, eviction_path, eviction_fallback, eviction_samples,
 * password, topology. */
#ifndef STRATA_CACHE_SERVER_H
#define STRATA_CACHE_SERVER_H

#include "service.h"

extern const struct service_kind cache_service_kind;

#endif

/* balancer: the HTTP/1.1 reverse proxy service.
 *
 * Clients connect to `listen`; each request is parsed (http_parse), given
 * to a policy (lb.h: a built-in, or a Lua pick with a built-in fallback)
 * and proxied to the chosen backend over a pooled keep-alive connection.
 * Bodies stream in both directions with backpressure and are never held
 * whole. A request that could not reach its backend (refused, reset before
 * any response byte, connect timeout) is retried elsewhere when that is
 * safe: idempotent, or nothing of it was sent. Health (health.h) decides
 * which backends take traffic.
 *
 * One request per client connection is in flight at a time; pipelined
 * requests wait in the read buffer, which bounds how much a client can
 * queue. See docs/balancer.md for the configuration and the rules. */
#ifndef STRATA_BALANCER_H
#define STRATA_BALANCER_H

#include "service.h"

extern const struct service_kind balancer_service_kind;

#endif

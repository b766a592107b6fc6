/* kvc: what the web tier's cache and db clients have in common.
 *
 * Both speak RESP to Strata (or Redis) nodes through hiredis's async API
 * on the node's libev loop. A call is started with a callback and answered
 * exactly once through it, unless it is cancelled first: then never. A call
 * that cannot be answered (the node is down, the call's deadline passed,
 * the client is being freed) is answered with reply == NULL and a short
 * reason in `error` ("down", "timeout", "closed", ...). A call is never
 * answered before the function that started it has returned: an answer
 * known at once (a dead node) comes on the loop's next iteration. After
 * its callback has returned, a call is freed: forget the pointer.
 *
 * Replies are hiredis's redisReply (type REDIS_REPLY_STRING, _ARRAY,
 * _INTEGER, _NIL, _STATUS, _ERROR). A reply is valid only during the
 * callback: copy what you keep.
 *
 * A process using these clients ignores SIGPIPE (every strata process
 * does): a write to a link the peer closed is then an error of that link. */
#ifndef STRATA_KVC_H
#define STRATA_KVC_H

#include <stddef.h>
#include <stdint.h>

struct redisReply;
struct kvc_call;

typedef void (*kvc_done_fn)(void *ud, const struct redisReply *reply, const char *error);

/* The call will not be answered: its callback is never run. Safe to call
 * on a call whose callback is running right now (no effect). */
void kvc_cancel(struct kvc_call *call);

/* Counters every client keeps (status, metrics). */
struct kvc_stats {
    uint64_t calls;      /* started */
    uint64_t replies;    /* answered with a reply (including -ERR replies) */
    uint64_t failures;   /* answered with reply == NULL */
    uint64_t cancelled;
    uint64_t reconnects;
};

#endif

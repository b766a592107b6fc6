/* kvc_link: the client layer's inside, shared by kvc_link.c, cache_client.c and
 * db_client.c (not for users of the layer: they see kvc.h).
 *
 * Three objects:
 *  - a link: one hiredis connection to one node, with its state (up,
 *    connecting, down until `retry_at`), AUTH, and the commands in flight
 *    in send order (wires). A command with no reply after `timeout`
 *    declares the link dead: every command in flight fails and the link
 *    is down until a reconnect (tried every `retry_after`) succeeds.
 *  - a wire: one command in flight on a link. Its function runs exactly
 *    once with the reply or NULL and a reason, unless the owner detaches
 *    it first (kvc_wire_detach): then never. hiredis keeps a pointer to
 *    it until hiredis runs its callback, so a wire is freed only when
 *    both sides are done with it.
 *  - a call: what a user holds (kvc.h). A call may carry several wires
 *    (a ROLE before a read, one MGET per shard, a retry on another node);
 *    its kind's `release` detaches them. Its deadline answers "timeout";
 *    the same timer set to 0 answers an error on the next loop iteration,
 *    so a call is never answered before the function that started it
 *    returns. */
#ifndef STRATA_KVC_LINK_H
#define STRATA_KVC_LINK_H

#include <ev.h>
#include <stdint.h>

#include "kvc.h"

struct redisAsyncContext;
struct kvc_link;

typedef void (*kvc_wire_fn)(void *arg, const struct redisReply *reply, const char *error);

struct kvc_wire {
    struct kvc_link *link;          /* NULL once the link let go of it */
    struct kvc_wire *prev, *next;   /* the link's wires in send order */
    kvc_wire_fn fn;                 /* NULL once detached or run */
    void *arg;
    double sent;
    int hiredis_done;               /* hiredis ran its callback */
    int failing;                    /* its link is failing it: hiredis only marks it done */
};

enum { KVC_LINK_DOWN, KVC_LINK_CONNECTING, KVC_LINK_UP };

struct kvc_base {
    struct ev_loop *loop;
    struct kvc_stats stats;
    struct kvc_call *calls;         /* pending, newest first */
    double timeout;
};

struct kvc_link {
    struct kvc_base *base;
    char name[64];
    char addr[128];
    char host[96];
    int port;
    char *password;                 /* NULL: no AUTH */
    struct redisAsyncContext *ac;
    int state;                      /* KVC_LINK_* */
    int was_up;                     /* up once: a reconnect is not waited for */
    int down_reported;
    double retry_after, retry_at, connect_started;
    double first_try_at;            /* a command's last connect to a node never reached */
    ev_timer timer;                 /* connect and reply deadlines, reconnects */
    struct kvc_wire *head, *tail;
    int inflight;
    char last_error[128];
    uint64_t reconnects;            /* connects that succeeded after the first */
    /* What the owner learns about the node (the db client). */
    void (*on_up)(struct kvc_link *l);
    void *owner;
};

struct kvc_call {
    struct kvc_base *base;
    struct kvc_call *prev, *next;
    kvc_done_fn cb;
    void *ud;
    int in_cb, done;
    const char *pending_error;      /* answered with it on the next iteration */
    void (*soon)(struct kvc_call *c); /* or this runs then */
    ev_timer deadline;
    void (*release)(struct kvc_call *c); /* detach the kind's wires and timers */
};

/* ---- base ---- */
void kvc_base_init(struct kvc_base *b, struct ev_loop *loop, double timeout);
/* Answers every pending call with reply NULL, error `why`. */
void kvc_base_fail_all(struct kvc_base *b, const char *why);

/* ---- calls ---- */
/* Allocates `size` bytes (a struct starting with a kvc_call), links it
 * and starts its deadline. NULL when out of memory. */
struct kvc_call *kvc_call_new(struct kvc_base *b, size_t size, kvc_done_fn cb, void *ud,
                              void (*release)(struct kvc_call *));
/* Answers the call (once; later answers are ignored) and frees it. */
void kvc_call_finish(struct kvc_call *c, const struct redisReply *reply, const char *error);
/* Answers with reply NULL and `error` on the next loop iteration. */
void kvc_call_fail_soon(struct kvc_call *c, const char *error);
/* Runs fn(c) on the next loop iteration (instead of the deadline). */
void kvc_call_soon(struct kvc_call *c, void (*fn)(struct kvc_call *c));

/* ---- links ---- */
/* 0, or -1 with err (a bad address). Nothing connects yet. */
int kvc_link_init(struct kvc_link *l, struct kvc_base *b, const char *name, const char *addr,
                  const char *password, double retry_after, char *err, size_t errlen);
void kvc_link_free(struct kvc_link *l);
/* Starts connecting now (a new client, or the owner knows better). */
void kvc_link_connect(struct kvc_link *l);
/* 1 when a command sent now would be sent (up, or first connecting). */
int kvc_link_usable(const struct kvc_link *l);
/* Sends one command. The wire, or NULL when the link is down (or out of
 * memory): the caller answers "down" itself. */
struct kvc_wire *kvc_link_send(struct kvc_link *l, int argc, const char *const *argv,
                               const size_t *argvlen, kvc_wire_fn fn, void *arg);
/* The wire's function will not run. NULL is fine. */
void kvc_wire_detach(struct kvc_wire *w);
/* Drops the connection: in-flight commands fail with `why`; down until
 * retry_after has passed. */
void kvc_link_drop(struct kvc_link *l, const char *why);

/* ---- replies ---- */
/* A deep copy of a reply that outlives its callback; NULL when out of
 * memory. Freed with kvc_reply_free. */
struct redisReply *kvc_reply_dup(const struct redisReply *r);
void kvc_reply_free(struct redisReply *r);
/* 1 when argv[0] is a command that holds connection state (MULTI, WATCH,
 * SELECT, SUBSCRIBE, AUTH...): shared pipelined links cannot carry it. */
int kvc_stateful_command(const char *name, size_t n);

#endif

/* kvc_link: calls, links and wires shared by the cache and db clients
 * (kvc.h for users, kvc_link.h for the layer's inside).
 *
 * hiredis 0.14's async API on the caller's libev loop: it runs every
 * pending callback with a NULL reply when a context goes away (its own
 * error, or redisAsyncFree), and defers a free asked for inside one of its
 * callbacks. So a link never lets hiredis decide what a failure means: it
 * detaches its wires (a wire is freed once both hiredis and the link are
 * done with it), frees the context, then fails the wires' owners with the
 * reason, the link being down by then so a retry the owner makes from
 * there sees it down. */
#include <errno.h>
#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kvc_link.h"
#include "log.h"

/* Seconds between connects a command may start to a node never reached. */
#define KVC_FIRST_RETRY 0.05
#include "util.h"

/* ---- calls ---------------------------------------------------------------- */

void kvc_base_init(struct kvc_base *b, struct ev_loop *loop, double timeout)
{
    memset(b, 0, sizeof *b);
    b->loop = loop;
    b->timeout = timeout;
}

static void call_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct kvc_call *c = w->data;
    if (c->soon) {
        void (*fn)(struct kvc_call *) = c->soon;
        c->soon = NULL;
        ev_timer_set(&c->deadline, c->base->timeout, 0.); /* a deadline again */
        ev_timer_start(c->base->loop, &c->deadline);
        fn(c);
        return;
    }
    kvc_call_finish(c, NULL, c->pending_error ? c->pending_error : "timeout");
}

struct kvc_call *kvc_call_new(struct kvc_base *b, size_t size, kvc_done_fn cb, void *ud,
                              void (*release)(struct kvc_call *))
{
    struct kvc_call *c = calloc(1, size);
    if (!c)
        return NULL;
    c->base = b;
    c->cb = cb;
    c->ud = ud;
    c->release = release;
    c->next = b->calls;
    if (b->calls)
        b->calls->prev = c;
    b->calls = c;
    ev_timer_init(&c->deadline, call_deadline_cb, b->timeout, 0.);
    c->deadline.data = c;
    ev_timer_start(b->loop, &c->deadline);
    b->stats.calls++;
    return c;
}

static void call_unlink(struct kvc_call *c)
{
    struct kvc_base *b = c->base;
    if (c->prev)
        c->prev->next = c->next;
    else
        b->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    ev_timer_stop(b->loop, &c->deadline);
    if (c->release)
        c->release(c);
}

void kvc_call_finish(struct kvc_call *c, const struct redisReply *reply, const char *error)
{
    if (c->done)
        return;
    c->done = 1;
    call_unlink(c);
    if (reply)
        c->base->stats.replies++;
    else
        c->base->stats.failures++;
    c->in_cb = 1;
    c->cb(c->ud, reply, reply ? NULL : (error ? error : "failed"));
    free(c);
}

void kvc_call_fail_soon(struct kvc_call *c, const char *error)
{
    c->pending_error = error;
    ev_timer_stop(c->base->loop, &c->deadline);
    ev_timer_set(&c->deadline, 0., 0.);
    ev_timer_start(c->base->loop, &c->deadline);
}

void kvc_call_soon(struct kvc_call *c, void (*fn)(struct kvc_call *c))
{
    c->soon = fn;
    ev_timer_stop(c->base->loop, &c->deadline);
    ev_timer_set(&c->deadline, 0., 0.);
    ev_timer_start(c->base->loop, &c->deadline);
}

void kvc_cancel(struct kvc_call *c)
{
    if (!c || c->in_cb || c->done)
        return;
    c->done = 1;
    c->base->stats.cancelled++;
    call_unlink(c);
    free(c);
}

void kvc_base_fail_all(struct kvc_base *b, const char *why)
{
    while (b->calls)
        kvc_call_finish(b->calls, NULL, why);
}

/* ---- wires ---------------------------------------------------------------- */

static void wire_maybe_free(struct kvc_wire *w)
{
    if (w->hiredis_done && !w->fn && !w->link && !w->failing)
        free(w);
}

static void wire_unlink(struct kvc_wire *w)
{
    struct kvc_link *l = w->link;
    if (!l)
        return;
    if (w->prev)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        l->tail = w->prev;
    w->prev = w->next = NULL;
    w->link = NULL;
    l->inflight--;
}

void kvc_wire_detach(struct kvc_wire *w)
{
    if (!w)
        return;
    w->fn = NULL;
    /* Still in flight: the link keeps it in order (its reply is still to
     * come and counts for the link's deadline); hiredis frees it. */
    wire_maybe_free(w);
}

static void link_lost(struct kvc_link *l, const char *why, int free_ctx);

/* hiredis: a reply, or NULL when the context is going away. */
static void wire_reply_cb(redisAsyncContext *ac, void *r, void *privdata)
{
    struct kvc_wire *w = privdata;
    w->hiredis_done = 1;
    if (w->failing)
        return; /* link_lost answers it and frees it */
    struct kvc_link *l = w->link;
    if (!r && l) {
        /* The context dies: the link fails everything in flight now. */
        char why[128];
        snprintf(why, sizeof why, "%s", ac && ac->err && ac->errstr[0] ? ac->errstr : "link lost");
        link_lost(l, why, 0);
        return; /* it was in the link's chain: answered and freed there */
    }
    wire_unlink(w);
    kvc_wire_fn fn = w->fn;
    w->fn = NULL;
    if (fn)
        fn(w->arg, r, r ? NULL : "down");
    wire_maybe_free(w);
}

/* ---- links ---------------------------------------------------------------- */

static void link_timer_cb(struct ev_loop *loop, ev_timer *t, int revents);
static struct kvc_wire *link_send_raw(struct kvc_link *l, int argc, const char *const *argv,
                                      const size_t *argvlen, kvc_wire_fn fn, void *arg);

static void link_arm(struct kvc_link *l, double at)
{
    struct ev_loop *loop = l->base->loop;
    double now = ev_now(loop);
    if (ev_is_active(&l->timer)) {
        /* Keep an earlier wake-up; it re-arms itself. */
        double left = ev_timer_remaining(loop, &l->timer);
        if (now + left <= at)
            return;
        ev_timer_stop(loop, &l->timer);
    }
    ev_timer_set(&l->timer, at > now ? at - now : 0., 0.);
    ev_timer_start(loop, &l->timer);
}

int kvc_link_init(struct kvc_link *l, struct kvc_base *b, const char *name, const char *addr,
                  const char *password, double retry_after, char *err, size_t errlen)
{
    memset(l, 0, sizeof *l);
    l->base = b;
    snprintf(l->name, sizeof l->name, "%s", name ? name : addr);
    snprintf(l->addr, sizeof l->addr, "%s", addr ? addr : "");
    char port[16];
    if (!addr ||
        util_split_addr(addr, l->host, sizeof l->host, port, sizeof port, err, errlen) < 0) {
        if (!addr)
            snprintf(err, errlen, "%s: no address", l->name);
        return -1;
    }
    l->port = atoi(port);
    if (l->port <= 0) {
        snprintf(err, errlen, "%s: '%s' has no port", l->name, addr);
        return -1;
    }
    if (password) {
        l->password = strdup(password);
        if (!l->password) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    l->retry_after = retry_after;
    l->state = KVC_LINK_DOWN;
    ev_timer_init(&l->timer, link_timer_cb, 0., 0.);
    l->timer.data = l;
    return 0;
}

static void link_note_down(struct kvc_link *l, const char *why)
{
    snprintf(l->last_error, sizeof l->last_error, "%s", why);
    if (!l->down_reported) {
        log_warn("client: %s (%s) is down: %s; retrying every %.1fs", l->name, l->addr, why,
                 l->retry_after);
        l->down_reported = 1;
    }
}

/* The link is down from now on; with free_ctx the context is ours to free
 * (else hiredis is freeing it). Fails every wire in flight with `why`. */
static void link_lost(struct kvc_link *l, const char *why, int free_ctx)
{
    redisAsyncContext *ac = l->ac;
    double now = ev_now(l->base->loop);
    l->ac = NULL;
    l->state = KVC_LINK_DOWN;
    l->retry_at = now + l->retry_after;
    link_note_down(l, why);
    /* Callers see "timeout", "closed" or "down"; the log has the detail. */
    const char *reason = strcmp(why, "timeout") == 0 ? "timeout"
                         : strcmp(why, "closed") == 0 ? "closed"
                                                      : "down";
    /* Take the wires out of the link first: a retry their owners make
     * must not find them, and hiredis may call them back below. */
    struct kvc_wire *w = l->head;
    l->head = l->tail = NULL;
    l->inflight = 0;
    for (struct kvc_wire *x = w; x; x = x->next) {
        x->link = NULL;
        x->failing = 1;
    }
    if (ac) {
        ac->data = NULL;
        if (free_ctx)
            redisAsyncFree(ac);
    }
    link_arm(l, l->retry_at);
    /* From here on `l` is not touched: an owner's callback may free the
     * client. hiredis may have run their callbacks above: marked failing, they
     * were only marked done, and are answered and freed here. */
    while (w) {
        struct kvc_wire *next = w->next;
        w->prev = w->next = NULL;
        w->failing = 0;
        kvc_wire_fn fn = w->fn;
        w->fn = NULL;
        if (fn)
            fn(w->arg, NULL, reason);
        wire_maybe_free(w);
        w = next;
    }
}

void kvc_link_drop(struct kvc_link *l, const char *why)
{
    if (l->state == KVC_LINK_DOWN && !l->ac)
        return;
    link_lost(l, why, 1);
}

static void link_mark_up(struct kvc_link *l)
{
    l->state = KVC_LINK_UP;
    if (l->was_up)
        l->reconnects++;
    l->was_up = 1;
    if (l->down_reported)
        log_info("client: %s (%s) is up again", l->name, l->addr);
    l->down_reported = 0;
    l->last_error[0] = 0;
    if (l->on_up)
        l->on_up(l);
}

static void link_connect_cb(const redisAsyncContext *ac, int status)
{
    struct kvc_link *l = ac->data;
    if (!l)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns. */
        char why[128];
        snprintf(why, sizeof why, "connect: %s", ac->errstr[0] ? ac->errstr : "failed");
        link_lost(l, why, 0);
        return;
    }
    /* With a password the link is up once AUTH is accepted. */
    if (!l->password)
        link_mark_up(l);
}

static void link_disconnect_cb(const redisAsyncContext *ac, int status)
{
    struct kvc_link *l = ac->data;
    if (!l)
        return;
    char why[128];
    snprintf(why, sizeof why, "%s",
             status == REDIS_OK || !ac->errstr[0] ? "link closed" : ac->errstr);
    link_lost(l, why, 0);
}

/* AUTH's answer: a refused password keeps the link down (the node is up,
 * but nothing can be done on it). */
static void link_auth_cb(void *arg, const struct redisReply *r, const char *error)
{
    struct kvc_link *l = arg;
    if (!r)
        return; /* the link is failing already */
    if (r->type == REDIS_REPLY_ERROR) {
        char why[128];
        snprintf(why, sizeof why, "AUTH refused: %.*s", (int)(r->len < 80 ? r->len : 80), r->str);
        kvc_link_drop(l, why);
        return;
    }
    if (l->state == KVC_LINK_CONNECTING)
        link_mark_up(l);
}

void kvc_link_connect(struct kvc_link *l)
{
    if (l->ac)
        return;
    redisAsyncContext *ac = redisAsyncConnect(l->host, l->port);
    if (!ac) {
        link_note_down(l, "out of memory");
        l->retry_at = ev_now(l->base->loop) + l->retry_after;
        link_arm(l, l->retry_at);
        return;
    }
    if (ac->err) {
        char why[128];
        snprintf(why, sizeof why, "connect: %s", ac->errstr);
        redisAsyncFree(ac);
        l->state = KVC_LINK_DOWN;
        l->retry_at = ev_now(l->base->loop) + l->retry_after;
        link_note_down(l, why);
        link_arm(l, l->retry_at);
        return;
    }
    ac->data = l;
    l->ac = ac;
    l->state = KVC_LINK_CONNECTING;
    l->connect_started = ev_now(l->base->loop);
    redisLibevAttach(l->base->loop, ac);
    redisAsyncSetConnectCallback(ac, link_connect_cb);
    redisAsyncSetDisconnectCallback(ac, link_disconnect_cb);
    if (l->password) {
        const char *argv[2] = {"AUTH", l->password};
        size_t argl[2] = {4, strlen(l->password)};
        if (!link_send_raw(l, 2, argv, argl, link_auth_cb, l)) {
            kvc_link_drop(l, "out of memory");
            return;
        }
    }
    link_arm(l, l->connect_started + l->base->timeout);
}

/* Deadlines: a connect or the oldest command in flight past the timeout
 * kills the link; a down link reconnects once retry_at has come. */
static void link_timer_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct kvc_link *l = t->data;
    double now = ev_now(loop);
    double timeout = l->base->timeout;
    if (l->state == KVC_LINK_DOWN) {
        if (now >= l->retry_at)
            kvc_link_connect(l);
        else
            link_arm(l, l->retry_at);
        return;
    }
    if (l->state == KVC_LINK_CONNECTING && now - l->connect_started >= timeout) {
        kvc_link_drop(l, "connect timed out");
        return;
    }
    if (l->head && now - l->head->sent >= timeout) {
        kvc_link_drop(l, "timeout");
        return;
    }
    double at = 0;
    if (l->state == KVC_LINK_CONNECTING)
        at = l->connect_started + timeout;
    if (l->head && (!at || l->head->sent + timeout < at))
        at = l->head->sent + timeout;
    if (at)
        link_arm(l, at);
}

int kvc_link_usable(const struct kvc_link *l)
{
    return l->state == KVC_LINK_UP || (l->state == KVC_LINK_CONNECTING && !l->was_up);
}

/* Queues a command on the context, whatever the link's state (AUTH goes
 * first on a reconnect that callers do not wait for). */
static struct kvc_wire *link_send_raw(struct kvc_link *l, int argc, const char *const *argv,
                                      const size_t *argvlen, kvc_wire_fn fn, void *arg)
{
    if (!l->ac)
        return NULL;
    struct kvc_wire *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->fn = fn;
    w->arg = arg;
    w->sent = ev_now(l->base->loop);
    if (redisAsyncCommandArgv(l->ac, wire_reply_cb, w, argc, (const char **)argv, argvlen) !=
        REDIS_OK) {
        free(w);
        return NULL;
    }
    w->link = l;
    w->prev = l->tail;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
    l->inflight++;
    link_arm(l, w->sent + l->base->timeout);
    return w;
}

struct kvc_wire *kvc_link_send(struct kvc_link *l, int argc, const char *const *argv,
                               const size_t *argvlen, kvc_wire_fn fn, void *arg)
{
    /* A node never reached yet is most likely still starting (a web node
     * and its db started together): a command connects at once and waits
     * for the connect, instead of failing until the next retry. At most one
     * such attempt per KVC_FIRST_RETRY, so a node that is really down costs
     * a refused connect now and then, not one per command. */
    if (l->state == KVC_LINK_DOWN && !l->was_up &&
        ev_time() >= l->first_try_at + KVC_FIRST_RETRY) {
        l->first_try_at = ev_time(); /* the loop's time may be old here */
        kvc_link_connect(l);
    }
    if (!kvc_link_usable(l))
        return NULL;
    return link_send_raw(l, argc, argv, argvlen, fn, arg);
}

void kvc_link_free(struct kvc_link *l)
{
    l->down_reported = 1; /* closing is not news */
    kvc_link_drop(l, "closed");
    ev_timer_stop(l->base->loop, &l->timer);
    if (l->password) {
        explicit_bzero(l->password, strlen(l->password));
        free(l->password);
    }
    l->password = NULL;
}

/* ---- replies -------------------------------------------------------------- */

struct redisReply *kvc_reply_dup(const struct redisReply *r)
{
    struct redisReply *d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->type = r->type;
    d->integer = r->integer;
    if (r->str) {
        d->str = malloc(r->len + 1);
        if (!d->str) {
            free(d);
            return NULL;
        }
        memcpy(d->str, r->str, r->len);
        d->str[r->len] = 0;
        d->len = r->len;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements) {
        d->element = calloc(r->elements, sizeof *d->element);
        if (!d->element) {
            kvc_reply_free(d);
            return NULL;
        }
        d->elements = r->elements;
        for (size_t i = 0; i < r->elements; i++) {
            d->element[i] = kvc_reply_dup(r->element[i]);
            if (!d->element[i]) {
                kvc_reply_free(d);
                return NULL;
            }
        }
    }
    return d;
}

void kvc_reply_free(struct redisReply *r)
{
    if (!r)
        return;
    if (r->element)
        for (size_t i = 0; i < r->elements; i++)
            kvc_reply_free(r->element[i]);
    free(r->element);
    free(r->str);
    free(r);
}

int kvc_stateful_command(const char *name, size_t n)
{
    static const char *const names[] = {
        "multi",     "exec",      "discard",     "watch",    "unwatch", "select", "auth",
        "subscribe", "psubscribe", "unsubscribe", "punsubscribe", "quit",  "monitor", "reset",
        "hello",     "psync",     "sync",        "replconf", "client",  NULL};
    for (int i = 0; names[i]; i++)
        if (strlen(names[i]) == n && strncasecmp(names[i], name, n) == 0)
            return 1;
    return 0;
}

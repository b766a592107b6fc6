/* Unit tests: the life of a client call (kvc.h) against a tiny RESP server
 * in the test's own loop: answered once, never before the starting
 * function returns, never after kvc_cancel; a cancelled call's late reply
 * does not reach the next call; a silent node times out and is then down
 * at once; a dead one answers "down"; free answers "closed"; MGET over a
 * live and a dead shard. */
#include <arpa/inet.h>
#include <ev.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cache_client.h"
#include "tap.h"

static struct ev_loop *loop;

/* ---- a tiny RESP server: answers GET k with k, holds or stays silent ---- */

enum { SRV_ECHO, SRV_SILENT, SRV_HOLD };

struct fake {
    int lfd, port, mode;
    ev_io accept_w;
    int cfd;
    ev_io read_w;
    char in[65536];
    size_t inlen;
    char held[65536];
    size_t heldlen;
    int commands;
};

/* One command "*N\r\n$L\r\n...": its reply in out (GET k: k; MGET k...:
 * the keys; else +PONG). Bytes used, or -2 when more are needed. */
static long parse_cmd(const char *p, size_t n, char *out, size_t cap, int *outlen)
{
    const char *end = p + n, *q = p;
    if (q >= end || *q != '*')
        return -2;
    int argc = atoi(q + 1);
    const char *nl = memchr(q, '\n', (size_t)(end - q));
    if (!nl)
        return -2;
    q = nl + 1;
    int mget = 0;
    size_t o = 0;
    for (int i = 0; i < argc; i++) {
        if (q >= end)
            return -2;
        int len = atoi(q + 1);
        nl = memchr(q, '\n', (size_t)(end - q));
        if (!nl || nl + 1 + len + 2 > end)
            return -2;
        if (i == 0) {
            mget = len == 4 && strncasecmp(nl + 1, "MGET", 4) == 0;
            if (mget)
                o += (size_t)snprintf(out + o, cap - o, "*%d\r\n", argc - 1);
        } else if (mget || i == 1) {
            o += (size_t)snprintf(out + o, cap - o, "$%d\r\n%.*s\r\n", len, len, nl + 1);
        }
        q = nl + 1 + len + 2;
    }
    if (argc < 2)
        o = (size_t)snprintf(out, cap, "+PONG\r\n");
    *outlen = (int)o;
    return q - p;
}

static void fake_read(struct ev_loop *l, ev_io *w, int revents)
{
    struct fake *f = w->data;
    ssize_t r = read(f->cfd, f->in + f->inlen, sizeof f->in - f->inlen);
    if (r <= 0) {
        ev_io_stop(l, w);
        close(f->cfd);
        f->cfd = -1;
        return;
    }
    f->inlen += (size_t)r;
    char out[4096];
    int len;
    long used;
    while ((used = parse_cmd(f->in, f->inlen, out, sizeof out, &len)) > 0) {
        memmove(f->in, f->in + used, f->inlen - (size_t)used);
        f->inlen -= (size_t)used;
        f->commands++;
        if (f->mode == SRV_ECHO) {
            if (write(f->cfd, out, (size_t)len) != len)
                return;
        } else if (f->mode == SRV_HOLD) {
            memcpy(f->held + f->heldlen, out, (size_t)len);
            f->heldlen += (size_t)len;
        }
    }
}

static void fake_release(struct fake *f)
{
    if (f->cfd >= 0 && f->heldlen && write(f->cfd, f->held, f->heldlen) == (ssize_t)f->heldlen)
        f->heldlen = 0;
}

static void fake_accept(struct ev_loop *l, ev_io *w, int revents)
{
    struct fake *f = w->data;
    int fd = accept(f->lfd, NULL, NULL);
    if (fd < 0)
        return;
    f->cfd = fd;
    ev_io_init(&f->read_w, fake_read, fd, EV_READ);
    f->read_w.data = f;
    ev_io_start(l, &f->read_w);
}

static void fake_start(struct fake *f, int mode)
{
    memset(f, 0, sizeof *f);
    f->mode = mode;
    f->cfd = -1;
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (bind(f->lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(f->lfd, 16) < 0)
        abort();
    getsockname(f->lfd, (struct sockaddr *)&a, &al);
    f->port = ntohs(a.sin_port);
    ev_io_init(&f->accept_w, fake_accept, f->lfd, EV_READ);
    f->accept_w.data = f;
    ev_io_start(loop, &f->accept_w);
}

static void fake_stop(struct fake *f)
{
    ev_io_stop(loop, &f->accept_w);
    if (f->cfd >= 0) {
        ev_io_stop(loop, &f->read_w);
        close(f->cfd);
    }
    close(f->lfd);
}

/* A port nothing listens on. */
static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    bind(fd, (struct sockaddr *)&a, sizeof a);
    getsockname(fd, (struct sockaddr *)&a, &al);
    close(fd);
    return ntohs(a.sin_port);
}

/* ---- answers ---- */

struct answer {
    int n;
    int type;
    char str[256];
    char error[64];
    struct kvc_call *self; /* for the cancel-inside-the-callback case */
};

static void on_answer(void *ud, const struct redisReply *r, const char *error)
{
    struct answer *a = ud;
    a->n++;
    a->type = r ? r->type : -1;
    snprintf(a->str, sizeof a->str, "%s", r && r->str ? r->str : "");
    snprintf(a->error, sizeof a->error, "%s", error ? error : "");
    if (a->self)
        kvc_cancel(a->self); /* no effect: it is being answered */
}

static void run_until(int *flag, double seconds)
{
    double until = ev_time() + seconds;
    while (!*flag && ev_time() < until)
        ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT), usleep(200);
}

static void run_for(double seconds)
{
    double until = ev_time() + seconds;
    while (ev_time() < until)
        ev_run(loop, EVRUN_NOWAIT), usleep(200);
}

static struct cache_client *client1(int port, double timeout, double retry)
{
    char addr[64], err[256];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    struct cache_shard_addr s = {"c1", addr};
    struct cache_client_cfg cfg = {&s, 1, NULL, timeout, retry};
    struct cache_client *cc = cache_client_new(loop, &cfg, err, sizeof err);
    if (!cc)
        printf("# %s\n", err);
    return cc;
}

static struct kvc_call *get(struct cache_client *cc, const char *key, struct answer *a)
{
    const char *argv[2] = {"GET", key};
    size_t argl[2] = {3, strlen(key)};
    return cache_client_call(cc, key, strlen(key), 2, argv, argl, on_answer, a);
}

static void test_reply_and_cancel_inside(void)
{
    struct fake f;
    fake_start(&f, SRV_ECHO);
    struct cache_client *cc = client1(f.port, 2.0, 0.5);
    struct answer a = {0};
    a.self = get(cc, "k1", &a);
    is_int(a.n, 0, "not answered before the call returns");
    run_until(&a.n, 5);
    is_int(a.n, 1, "answered once");
    is_str(a.str, "k1", "with its reply");
    struct kvc_stats st;
    cache_client_stats(cc, &st);
    is_int(st.replies, 1, "one reply counted");
    is_int(st.cancelled, 0, "a cancel inside the callback has no effect");
    ok(cache_client_shard_up(cc, 0), "the shard is up");
    cache_client_free(cc);
    fake_stop(&f);
}

static void test_cancel_drops_late_reply(void)
{
    struct fake f;
    fake_start(&f, SRV_HOLD);
    struct cache_client *cc = client1(f.port, 2.0, 0.5);
    struct answer a = {0}, b = {0};
    struct kvc_call *ca = get(cc, "first", &a);
    get(cc, "second", &b);
    run_until(&f.commands, 5);
    while (f.commands < 2)
        ev_run(loop, EVRUN_ONCE);
    kvc_cancel(ca);
    fake_release(&f);
    run_until(&b.n, 5);
    run_for(0.05);
    is_int(a.n, 0, "a cancelled call is never answered");
    is_int(b.n, 1, "the next call is answered");
    is_str(b.str, "second", "with its own reply, not the cancelled one's");
    struct kvc_stats st;
    cache_client_stats(cc, &st);
    is_int(st.cancelled, 1, "one cancel counted");
    cache_client_free(cc);
    fake_stop(&f);
}

static void test_timeout_then_down(void)
{
    struct fake f;
    fake_start(&f, SRV_SILENT);
    struct cache_client *cc = client1(f.port, 0.15, 30.0);
    struct answer a = {0}, c = {0}, d = {0};
    get(cc, "x", &a);
    struct kvc_call *cc_cancelled = get(cc, "y", &c);
    kvc_cancel(cc_cancelled);
    run_until(&a.n, 5);
    is_int(a.n, 1, "a silent node's call is answered");
    is_str(a.error, "timeout", "with 'timeout'");
    ok(!cache_client_shard_up(cc, 0), "the shard is down after a timeout");
    double t0 = ev_time();
    get(cc, "z", &d);
    is_int(d.n, 0, "even a down shard answers after the call returns");
    run_until(&d.n, 5);
    is_str(d.error, "down", "then a call answers 'down'");
    ok(ev_time() - t0 < 0.1, "at once, not after the timeout");
    run_for(0.05);
    is_int(c.n, 0, "the call cancelled meanwhile never was answered");
    cache_client_free(cc);
    fake_stop(&f);
}

static void test_dead_and_free(void)
{
    struct cache_client *cc = client1(dead_port(), 1.0, 30.0);
    struct answer a = {0}, b = {0};
    get(cc, "x", &a);
    run_until(&a.n, 5);
    is_int(a.n, 1, "a call to a dead node is answered");
    is_str(a.error, "down", "with 'down'");
    struct kvc_call *cb = get(cc, "y", &b);
    kvc_cancel(cb);
    run_for(0.02);
    is_int(b.n, 0, "cancelling the 'down' answer before it comes: never answered");
    cache_client_free(cc);

    struct fake f;
    fake_start(&f, SRV_SILENT);
    cc = client1(f.port, 5.0, 0.5);
    struct answer p = {0};
    get(cc, "pending", &p);
    run_for(0.02);
    cache_client_free(cc);
    is_int(p.n, 1, "free answers a pending call");
    is_str(p.error, "closed", "with 'closed'");
    fake_stop(&f);
}

struct mget_seen {
    int n;
    size_t elements;
    char values[12][16];
    int nil[12];
};

static void on_mget(void *ud, const struct redisReply *r, const char *error)
{
    struct mget_seen *m = ud;
    m->n++;
    if (!r || r->type != REDIS_REPLY_ARRAY)
        return;
    m->elements = r->elements;
    for (size_t i = 0; i < r->elements && i < 12; i++) {
        m->nil[i] = r->element[i]->type == REDIS_REPLY_NIL;
        const char *v = r->element[i]->str;
        snprintf(m->values[i], sizeof m->values[i], "%s", v ? v : "");
    }
}

static void test_mget_over_a_dead_shard(void)
{
    struct fake f;
    fake_start(&f, SRV_ECHO);
    char live[64], dead[64], err[256];
    snprintf(live, sizeof live, "127.0.0.1:%d", f.port);
    snprintf(dead, sizeof dead, "127.0.0.1:%d", dead_port());
    struct cache_shard_addr s[2] = {{"c1", live}, {"c2", dead}};
    struct cache_client_cfg cfg = {s, 2, NULL, 1.0, 30.0};
    struct cache_client *cc = cache_client_new(loop, &cfg, err, sizeof err);
    const char *keys[12];
    size_t kl[12];
    char names[12][16];
    for (int i = 0; i < 12; i++) {
        snprintf(names[i], sizeof names[i], "key%d", i);
        keys[i] = names[i];
        kl[i] = strlen(names[i]);
    }
    struct mget_seen m = {0};
    cache_client_mget(cc, 12, keys, kl, on_mget, &m);
    is_int(m.n, 0, "MGET is not answered before it returns");
    run_until(&m.n, 5);
    is_int(m.n, 1, "MGET over a live and a dead shard is answered once");
    is_int(m.elements, 12, "with one element per key");
    int in_order = 1, live_keys = 0, dead_nil = 1;
    for (int i = 0; i < 12; i++) {
        if (cache_client_shard_of(cc, keys[i], kl[i]) == 0) {
            live_keys++;
            in_order &= strcmp(m.values[i], keys[i]) == 0;
        } else {
            dead_nil &= m.nil[i];
        }
    }
    ok(live_keys > 0 && live_keys < 12, "the keys are on both shards (%d live)", live_keys);
    ok(in_order, "the live shard's values come in the order of the keys");
    ok(dead_nil, "the dead shard's keys are NIL");
    cache_client_free(cc);
    fake_stop(&f);
}

struct freeing {
    struct cache_client *cc;
    struct answer *other;
    int n;
};

static void free_in_callback(void *ud, const struct redisReply *r, const char *error)
{
    struct freeing *f = ud;
    f->n++;
    cache_client_free(f->cc);
}

static void test_free_inside_a_callback(void)
{
    struct fake f;
    fake_start(&f, SRV_ECHO);
    struct cache_client *cc = client1(f.port, 2.0, 0.5);
    struct answer b = {0};
    struct freeing fr = {cc, &b, 0};
    const char *argv[2] = {"GET", "a"};
    size_t argl[2] = {3, 1};
    cache_client_call(cc, "a", 1, 2, argv, argl, free_in_callback, &fr);
    get(cc, "b", &b);
    run_until(&fr.n, 5);
    is_int(fr.n, 1, "a callback that frees its client is answered once");
    is_int(b.n, 1, "the other pending call is answered by the free");
    ok(strcmp(b.error, "closed") == 0 || strcmp(b.str, "b") == 0,
       "with 'closed' or its reply (%s%s)", b.error, b.str);
    run_for(0.05);
    is_int(b.n, 1, "and only once");
    fake_stop(&f);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    loop = ev_loop_new(0);
    test_reply_and_cancel_inside();
    test_cancel_drops_late_reply();
    test_timeout_then_down();
    test_dead_and_free();
    test_mget_over_a_dead_shard();
    test_free_inside_a_callback();
    ev_loop_destroy(loop);
    return tap_done();
}

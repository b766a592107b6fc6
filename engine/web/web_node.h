/* web_node: what the web tier's modules share inside one node -- the
 * configuration, a worker (one loop, one HTTP server, its generations),
 * a generation (an app state with the clients and static folder it
 * serves with) and a request with its Lua tasks.
 *
 * A worker runs on one loop and nothing of it is touched from another
 * thread except through web_svc's commands (ev_async). A request holds
 * its generation until it ends, so a reload swaps the worker's current
 * generation at once and the old one is freed after its last request. */
#ifndef STRATA_WEB_NODE_H
#define STRATA_WEB_NODE_H

#include <ev.h>
#include <limits.h>
#include <lua.h>
#include <pthread.h>
#include <stdint.h>

#include "db_client.h"
#include "cache_client.h"
#include "http_server.h"
#include "latency.h"
#include "web_router.h"
#include "web_static.h"

#define WEB_MAX_SHARDS 64
#define WEB_MAX_REPLICAS 16
#define WEB_MAX_WORKERS 64
/* Instructions one request may run, over all its resumes. */
#define WEB_REQ_INSTRUCTIONS 100000000L
/* A finished single-flight load answers later misses of the key for at
 * most this long (seconds): misses whose cache read left before the value
 * was stored. */
#define WEB_FLIGHT_MEMO 1.0

struct web_addr {
    char name[64];
    char addr[128];
};

struct web_cfg {
    char node[64];
    char listen[128];
    char where[512];
    char app[PATH_MAX];         /* "" : no app */
    int has_static;
    char static_root[PATH_MAX];
    char static_prefix[256];
    char static_index[128];
    long static_max_age;
    int static_precompressed;
    int workers;
    double timeout;             /* per request */
    int64_t memory;             /* per app state */
    int64_t max_body;
    int nshards;
    struct web_addr shards[WEB_MAX_SHARDS];
    char cache_password[256];
    int has_db;
    struct web_addr primary;
    int nreplicas;
    struct web_addr replicas[WEB_MAX_REPLICAS];
    char db_reads[PATH_MAX];    /* "primary", "replicas" or a policy file */
    char db_password[256];
    int read_your_writes;
};

struct web_svc;
struct web_worker;
struct web_req;

/* An app file in its sandboxed state (web_app.c). */
struct web_app {
    struct policy_host *h;
    lua_State *L;
    struct web_router router;
    int ref_run;    /* the Lua half's run(handler, ctx) */
    int ref_cached; /* ... and its other functions */
    int ref_json;
    struct web_flights *flights; /* web_cached.c */
    int pool[64];                /* finished coroutines, kept to run the next requests */
    int npool;
};

/* One generation of a worker: what a request is served with. */
struct web_gen {
    struct web_worker *w;
    struct web_cfg cfg;
    struct web_app *app;          /* NULL: static files and /healthz only */
    struct web_static *st;        /* NULL: none */
    struct cache_client *cache;   /* NULL: none */
    struct db_client *db;         /* NULL: none */
    int refs;                     /* requests, + 1 while current */
    struct web_gen *next;         /* retired list */
};

struct web_stats {
    uint64_t requests, responses_2xx, responses_3xx, responses_4xx, responses_5xx;
    uint64_t errors, limits, timeouts, gone, not_found;
    uint64_t cache_hits, cache_misses, flights, flight_waits;
    uint64_t ryw_cookies;
    uint64_t cut_short; /* streamed answers ended without their last chunk */
    uint64_t reload_failures; /* a worker's reload that failed after it was acknowledged */
};

enum web_cmd { WEB_CMD_NONE = 0, WEB_CMD_DRAIN = 1, WEB_CMD_RELOAD = 2, WEB_CMD_STOP = 4 };

struct web_worker {
    struct web_svc *svc;
    int index;
    struct ev_loop *loop;
    int own_loop;                 /* a thread of its own */
    pthread_t thread;
    struct http_server *http;
    struct web_gen *gen;
    struct web_gen *retired;
    struct web_req *reqs;         /* in flight */
    struct web_req *dead;         /* ended, to free after the callback */
    int nreqs;
    ev_prepare reaper;
    ev_async wake;                /* commands from the node's thread */
    ev_check idle_check;          /* a worker thread publishes `idle` */
    pthread_mutex_t mu;           /* guards cmd and next_gen */
    unsigned cmd;
    struct web_gen *next_gen;     /* built by the node's thread for a reload */
    int draining, stopped;
    int idle;                     /* published: no connection, no request left */
    int resuming;                 /* a Lua resume is running: wakes are queued */
    struct web_task *wakeq, *wakeq_tail;
    uint32_t id_seed;
    uint64_t id_next;
    struct web_stats st;
    struct latency lat;           /* app requests, arrival to answer */
    size_t app_mem;               /* published: the app state's bytes */
};

/* ---- web_app.c ---------------------------------------------------------- */
struct web_app *web_app_load(const char *path, int64_t mem_max, char *err, size_t errlen);
void web_app_free(struct web_app *a);

/* ---- web_req.c: requests and their Lua tasks ------------------------------ */

enum web_wait {
    WEB_WAIT_NONE = 0,
    WEB_WAIT_CALL,   /* a cache or db reply */
    WEB_WAIT_ALL,    /* ctx:all's functions */
    WEB_WAIT_FLIGHT, /* another request's ctx:cached load */
    WEB_WAIT_WRITE,  /* a streamed answer's output to drain */
    WEB_WAIT_SLEEP,  /* ctx:sleep */
};

struct web_reply; /* web_data.c: a copied reply */

struct web_task {
    struct web_req *r;
    lua_State *co;
    int co_ref;
    struct web_task *parent;      /* ctx:all's caller */
    int slot;                     /* where this task's result goes in the parent's table */
    int results_ref;              /* WEB_WAIT_ALL: the results table */
    int nchildren, pending;
    enum web_wait wait;
    int done, running;
    int finished;                 /* returned normally: its coroutine may be reused */
    int queued;                   /* in the worker's wake queue */
    struct web_task *wake_next;
    /* WEB_WAIT_CALL */
    struct kvc_call *call;
    struct web_reply *reply;
    char call_err[96];
    int call_ready;
    int call_op;
    /* WEB_WAIT_FLIGHT */
    struct web_flight *flight;
    struct web_task *flight_next;
    int wake_status, wake_ref;
    int nleads;                   /* flights this task is loading */
    ev_timer sleep;               /* WEB_WAIT_SLEEP */
    struct web_task *next;        /* the request's tasks */
};

struct web_req {
    struct web_worker *w;
    struct web_gen *gen;
    struct http_req *hr;
    struct web_req *prev, *next;
    struct web_task *tasks;
    struct web_task *main;
    int ctx_ref;
    int route;
    struct web_match match;
    char id[48];
    long ins_left;
    double deadline;              /* ev_time() */
    double started;               /* ev_now() */
    ev_timer timer;
    struct db_session sess;
    uint64_t sess_start;
    int status;
    int streaming, ended, gone, has_ctype;
};

/* Starts the app's handler for a matched request. */
void web_req_start(struct web_worker *w, struct web_gen *gen, struct http_req *hr,
                   const struct web_match *m);
/* The client went away: pending calls are cancelled, the handler ends. */
void web_req_gone(struct web_req *r);
/* A streamed answer's output drained. */
void web_req_writable(struct web_req *r);
/* The task running on L for the ctx at ctx_idx; raises a Lua error naming
 * `what` when L is not one of that request's tasks. */
struct web_task *web_task_check(lua_State *L, int ctx_idx, const char *what);
/* The request of a ctx (or NULL when it has ended). */
struct web_req *web_ctx_req(lua_State *L, int idx);
/* Resumes a task suspended in a wait (its continuation pushes what it
 * waited for). */
void web_task_wake(struct web_task *t);
/* Frees ended requests and retired generations (outside callbacks). */
void web_worker_reap(struct web_worker *w);
void web_gen_release(struct web_gen *g);
/* Registers the ctx metatable in an app state. */
void web_req_register(lua_State *L);
/* Ends every request of a worker at once (shutdown). */
void web_worker_abort_requests(struct web_worker *w);

/* ---- web_data.c: ctx.cache and ctx.db -------------------------------------- */
void web_data_register(lua_State *L);
/* Pushes ctx.cache / ctx.db for request r (nil when the node has none). */
void web_data_push(lua_State *L, struct web_req *r, int db);
/* A task ends: its pending call is cancelled. */
void web_data_task_end(struct web_task *t);

/* ---- web_cached.c: ctx:cached's single flights ----------------------------- */
struct web_flights *web_flights_new(void);
void web_flights_free(lua_State *L, struct web_flights *f);
void web_cached_register(lua_State *L);
/* A task ends: flights it leads fail (their waiters retry), it stops waiting. */
void web_cached_task_end(struct web_task *t);
/* ctx.cache:del/set of keys: this node's memo of them is dropped. */
void web_cached_forget(struct web_app *a, const char *key, size_t len);

/* ---- web_svc.c ---------------------------------------------------------- */
/* The request id: 16 hex digits, unique per node run. */
void web_worker_next_id(struct web_worker *w, char *out, size_t n);

#endif

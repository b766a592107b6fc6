/* balancer_proxy: the proxy core -- client connections (parse, dispatch,
 * stream the request body), server connections (pool, stream the response
 * back) and the retry rules. The service (balancer_svc.c) configures and
 * drives it; the proxy never calls back into the service. */
#ifndef STRATA_BALANCER_PROXY_H
#define STRATA_BALANCER_PROXY_H

#include <ev.h>
#include <limits.h>

#include "access_log.h"
#include "balancer_gen.h"
#include "buf.h"
#include "health.h"
#include "http_parse.h"
#include "latency.h"
#include "lb.h"
#include "net.h"

/* Unsent bytes queued towards one side that make us stop reading the other
 * side until they drain: the backpressure threshold for streamed bodies. */
#define BAL_HIGH (256 * 1024)
/* A response to a request that could still be retried is held back until
 * it is complete or grows past this many bytes: a backend that dies before
 * then is retried elsewhere, invisibly. Beyond it the response streams and
 * the request is no longer retryable (see docs/balancer.md, Retries). */
#define BAL_HOLD_MAX (64 * 1024)
#define BAL_MAX_TRIES 16
/* While a large body streams, reads from its sender take up to this much
 * at once (the read buffer is sized for it, and given back when the bytes
 * have gone out), instead of the default 16 KiB: a 1 MB body is then a few
 * reads and writes instead of 64 of each. */
#define BAL_STREAM_READ (256 * 1024)
/* Defaults of pool_idle_timeout and pool_max_idle: a pooled backend
 * connection closes after this long unused, and a backend keeps at most
 * this many. */
#define BAL_POOL_IDLE_TIMEOUT 10.0
#define BAL_POOL_MAX_IDLE 1024
#define BAL_VIA "strata"

enum hash_on { HASH_IP, HASH_PATH, HASH_HEADER, HASH_COOKIE };

struct bal_cfg {
    char listen[64];
    char policy[32];
    char policy_path[PATH_MAX];
    char fallback[32];
    char hash_on[128];
    int retries;
    double connect_timeout, server_timeout, client_timeout, head_timeout;
    double tunnel_timeout; /* an upgraded connection silent both ways */
    double pool_idle_timeout; /* a pooled backend connection unused this long closes */
    int pool_max_idle;        /* pooled connections kept per backend (0: none) */
    int max_conns;
    struct http_limits lim;
    struct health_cfg health;
    struct access_log_cfg access_log;
};

struct bal_server;
struct bal_client;

struct bal_proxy {
    struct ev_loop *loop;
    struct bal_cfg cfg;
    char listen[64];         /* the bound address, for Forwarded/Via */
    struct bal_gen *gen;     /* current */
    struct bal_gen *retired; /* older, waiting for their last reference */
    int hash_kind;
    char hash_name[96];
    struct http_limits resp_lim; /* for responses and re-parsed request heads */
    struct http_msg msg;         /* scratch: one head is parsed at a time */
    struct buf out;              /* scratch: bytes gathered for one write */
    struct bal_client *clients;
    int nclients;
    /* connections closed while a caller may still hold them: freed on the
     * next loop turn (ev_prepare), when no callback is on the stack */
    struct bal_client *dead_clients;
    struct bal_server *dead_servers;
    ev_prepare reap;
    int draining;
    uint64_t requests, retries, errors_sent;
    /* requests answered 503 because this node could not open a backend
     * socket (out of descriptors, buffers, local ports): never counted
     * against a backend */
    uint64_t local_shortages;
    /* upgraded connections (WebSocket) relayed as byte tunnels */
    int tunnels;
    uint64_t tunnels_total;
    struct log_limit local_log;
    struct latency latency; /* backend response-head latency, recent windows */
    struct access_log *alog; /* NULL: no access log */
    double latency_sum;     /* seconds, over every response head */
    uint64_t latency_count;
};

enum cl_state { CL_HEAD, CL_BUSY, CL_CLOSING };

struct bal_client {
    struct bal_proxy *bal;
    struct net_conn *c;
    struct bal_server *srv;
    struct bal_backend *be; /* backend of the current attempt */
    struct bal_client *prev, *next;
    struct buf head; /* the rewritten request head, kept for retries */
    struct buf held; /* the response so far, while it is being held */
    char ip[48];
    int state;
    unsigned dead : 1, eof : 1, head_timer : 1, in_pump : 1;
    unsigned keep_alive : 1, http10 : 1, is_head : 1, idempotent : 1;
    unsigned req_done : 1, body_touched : 1;
    unsigned resp_head_done : 1, resp_keep : 1, dechunk : 1, close_after : 1;
    unsigned paused_by_srv : 1;
    /* upgrade: the request asks to switch to WebSocket and is forwarded
     * with its Upgrade; tunnel: the backend agreed (101), and bytes are now
     * copied both ways until either side closes */
    unsigned upgrade : 1, tunnel : 1;
    /* holding: the current attempt's response is gathered in `held`, not
     * relayed; resp_sent: bytes of the final response reached the client,
     * after which nothing can be retried */
    unsigned holding : 1, resp_sent : 1;
    int req_body, resp_body;
    uint64_t req_left, resp_left;
    struct http_chunked req_ck, resp_ck;
    int attempts;
    int ntried;
    int tried[BAL_MAX_TRIES];  /* backend indexes in tried_gen */
    struct bal_gen *tried_gen;
    uint64_t hash;
    double t_sent;
    struct access_rec rec; /* the current request, for the access log */
};

struct bal_server {
    struct bal_proxy *bal;
    struct bal_backend *be;
    struct net_conn *c;
    struct bal_client *cl;
    struct bal_server *prev, *next; /* the backend's idle list */
    unsigned dead : 1, connected : 1, wrote : 1, in_pool : 1, paused_by_client : 1;
    int conn_err;
};

extern const struct net_conn_ops bal_client_ops;

/* Sets up an empty proxy on loop (cfg, gen and limits are the caller's to
 * fill in before the first client). */
void bal_proxy_init(struct bal_proxy *px, struct ev_loop *loop);
/* net_listen's accept hook (data: the proxy): c->data becomes a client. */
int bal_proxy_accept(struct net_conn *c, void *data);
/* Makes g the current generation: kept backends take over the old ones'
 * pooled connections, removed backends' pooled connections close, and the
 * old generation retires until its last reference is gone. */
void bal_proxy_swap(struct bal_proxy *px, struct bal_gen *g);
/* Closes the pooled connections of g. */
void bal_proxy_close_idle(struct bal_proxy *px, struct bal_gen *g, const char *why);
/* Stops taking requests on kept-alive connections: idle clients close now,
 * busy ones after their response. */
void bal_proxy_drain(struct bal_proxy *px);
/* Closes every connection and frees every generation (the node stops). */
void bal_proxy_shutdown(struct bal_proxy *px);

#endif

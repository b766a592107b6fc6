/* failover: a db node's part in detecting a dead primary, electing the
 * replica that takes its place, and following whoever is primary.
 *
 * There are no separate monitors: with `failover = { down_after = ... }`
 * in strata.db every db node of the data set probes every other one over
 * its RESP port (`FAILOVER PROBE`, one line back: the peer's role, epoch,
 * where its log ends, whom it follows, whether its copy is whole).
 *
 *  - A replica considers the primary down once no node answered as the
 *    primary of its epoch (or a later one) for `down_after`.
 *  - It then looks at the nodes that answered within `down_after`. Unless
 *    they make a majority of the data set's db nodes (itself counted),
 *    nothing happens: one replica cut off alone never promotes itself.
 *  - The candidates are the healthy replicas among them (priority 0:
 *    never). The default choice is the one whose log is furthest (the
 *    epoch it ends in, then its offset), then the lowest priority number,
 *    then one that follows nobody (the topology's primary at a start),
 *    then the name; or the Lua policy's elect(candidates) (run in the
 *    policy host, budgeted), whose answer must name a candidate as far as
 *    any other, or the default is used and the reason logged.
 *  - The chosen replica asks for votes at epoch+1 (FAILOVER VOTE). A node
 *    grants at most one vote per epoch (written to EPOCH before it
 *    answers), only while it too sees no primary, and only to a candidate
 *    whose log is at least as far as its own, so a write acknowledged by
 *    a majority (WAIT) is on every possible winner. With a majority of
 *    the db nodes the candidate promotes itself (epoch.h).
 *  - Every node follows the primary of the highest epoch it sees; a
 *    primary that sees a later epoch steps down (to follow the new
 *    primary, or to wait read-only while an election runs) and, on
 *    following, discards what the new primary never had.
 *
 * The owner (db_server) says where its node stands (failover_self) and
 * does the role changes through failover_ops; this module keeps the peer
 * connections, the views and the election. Without `failover` declared
 * the peers are still known (for FAILOVER FOLLOW <node> and planned
 * switches) but never probed. */
#ifndef STRATA_FAILOVER_H
#define STRATA_FAILOVER_H

#include <ev.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "epoch.h"
#include "net.h"

#define FAILOVER_MAX_PEERS 32

enum { FO_ROLE_UNKNOWN, FO_ROLE_PRIMARY, FO_ROLE_REPLICA };

struct failover_self {
    int role;                 /* FO_ROLE_PRIMARY, or REPLICA (also while waiting) */
    int healthy;              /* its copy is whole (no full resync running) */
    uint64_t offset;          /* the end of its log */
    char following[64];       /* the node it follows, "" for none */
};

struct failover_ops {
    void (*self)(void *arg, struct failover_self *out);
    /* Become the primary of `epoch` (already in the EPOCH file). 0 or -1. */
    int (*promote)(void *arg, uint64_t epoch, const char *why);
    /* Follow node at addr (a primary of a later epoch). */
    void (*follow)(void *arg, const char *node, const char *addr, const char *why);
    /* A primary that saw a later epoch and no primary of it: read-only,
     * following nobody, until a primary appears. A replica: drop the
     * link to the primary it followed (it voted in a later epoch). */
    void (*step_down)(void *arg, const char *why);
};

struct failover;

struct failover_peer {
    struct failover *owner;
    char node[64], addr[64];
    int priority;
    struct sockaddr_storage sa;
    socklen_t salen;
    struct net_conn *conn;
    int ready;                /* connected (and authenticated) */
    char expect[16];          /* kinds of the replies still to come: A P V */
    int nexpect;
    uint64_t vote_epoch[16];  /* per expected V reply */
    int64_t sent_ms, last_ok_ms, next_connect_ms;
    /* its last answer to a probe */
    int role, healthy;
    uint64_t epoch, log_epoch, offset;
    char following[64];
};

struct failover {
    struct ev_loop *loop;
    char node[64];
    int enabled;              /* failover declared: probes and elections */
    int64_t down_after_ms, probe_ms;
    int priority;             /* this node's */
    struct failover_peer peers[FAILOVER_MAX_PEERS];
    int npeers;
    char password[256];
    int has_password;
    struct policy_host *policy;
    char policy_path[1024];
    struct epoch_state *ep;
    const char *dir;          /* where EPOCH is written */
    const struct failover_ops *ops;
    void *arg;
    ev_timer timer;
    int64_t started_ms;
    int64_t primary_seen_ms;  /* last time a primary of our epoch or later answered */
    char primary[64];         /* the primary as this node sees it, "" unknown */
    /* an election this node runs */
    int electing;
    uint64_t elect_epoch;
    int votes;
    int64_t elect_deadline_ms, next_elect_ms;
    /* counters */
    uint64_t elections, promotions, votes_granted, votes_refused, policy_fallbacks;
    char last_note[200];      /* the last thing that held an election back */
};

/* peers: "node@host:port@priority,..." (every db node of the data set but
 * this one). down_after_ms 0: not enabled. policy: "" or a .lua file with
 * elect(candidates). 0, or -1 with err. */
int failover_init(struct failover *f, struct ev_loop *loop, const char *node, const char *peers,
                  int priority, int64_t down_after_ms, const char *policy, const char *password,
                  struct epoch_state *ep, const char *dir, const struct failover_ops *ops,
                  void *arg, char *err, size_t errlen);
/* A reload: down_after (0 only when it was 0: turning failover on or off
 * needs a restart), this node's priority, the peers ("node@addr@priority"
 * naming the same nodes at the same addresses: only priorities change)
 * and the policy ("" for the default rule, loaded again even when the path
 * is the same: its file may have changed). Checked whole first; on error
 * nothing changes. Appends one line per change to `changes`; dry_run only
 * checks. 0, or -1 with err. */
int failover_reload(struct failover *f, int64_t down_after_ms, int priority, const char *peers,
                    const char *policy, int dry_run, struct buf *changes, char *err,
                    size_t errlen);
void failover_start(struct failover *f);
void failover_free(struct failover *f);

/* The peer named node, or NULL. */
const struct failover_peer *failover_peer(const struct failover *f, const char *node);
/* Majority of the data set's db nodes (this one counted). */
static inline int failover_majority(const struct failover *f) { return (f->npeers + 1) / 2 + 1; }

/* FAILOVER PROBE's answer line (without CRLF) for this node. */
void failover_probe_line(struct failover *f, struct buf *out);
/* FAILOVER VOTE: 1 granted (the EPOCH file says so), 0 refused with why. */
int failover_vote(struct failover *f, uint64_t epoch, const char *cand, uint64_t log_epoch,
                  uint64_t offset, char *why, size_t whylen);
/* A node of this data set took an epoch later than ours (a handshake
 * said so): it is written down, and the views are re-read. */
void failover_saw_epoch(struct failover *f, uint64_t epoch);

/* The default choice among candidates, and the policy's (for tests). */
struct failover_cand {
    char node[64];
    uint64_t log_epoch, offset;
    int priority;
    int self;
    int waiting;              /* follows nobody (a declared primary at its start) */
};
int failover_default_pick(const struct failover_cand *c, int n);
/* INFO / status fields (no trailing separator for status). */
void failover_info(const struct failover *f, struct buf *b);
void failover_status(const struct failover *f, struct buf *b);

#endif

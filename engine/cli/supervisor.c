#include "supervisor.h"

#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "admin.h"
#include "buf.h"
#include "log.h"
#include "luahost.h"
#include "topology.h"
#include "util.h"

#define SUP_MAX_NODES 64
#define SUP_MAX_WATCH 64
#define SUP_BACKOFF_MIN 0.1
#define SUP_BACKOFF_MAX 5.0
#define SUP_STABLE_AFTER 10.0 /* a node up this long resets its backoff */
/* Default seconds of heartbeat silence after which a ready node is taken for
 * stuck: long enough for a SAVE of a large dataset, which blocks the loop. */
#define SUP_STALL_TIMEOUT 20.0

struct supervisor;

struct sup_node {
    struct supervisor *sup;
    char name[64];
    char admin[64];
    char services[256];    /* "cache 127.0.0.1:6001, ..." for the ready table */
    pid_t pid;             /* 0 while not running */
    int ready;
    int ready_fd;
    ev_io ready_io;
    ev_child child;
    ev_timer restart_timer;
    double backoff;
    double started_at;
    int removed;           /* stopping for good: gone from the topology */
    int deferred;          /* appeared in a reload: starts once the vanished nodes stopped */
    unsigned restarts;
    double last_beat;      /* when its heartbeat (or ready) last arrived */
    unsigned stalls;       /* times it was killed for a silent loop */
};

struct supervisor {
    struct ev_loop *loop;
    char path[PATH_MAX];
    char self[PATH_MAX];
    char log_level[16];
    char log_dir[PATH_MAX];
    struct sup_node *nodes[SUP_MAX_NODES];
    int n;
    int stopping;
    int starting;          /* initial start: a node failing now fails the run */
    int failed;
    double drain_timeout;
    double stall_timeout;  /* a ready node silent this long is replaced */
    ev_timer stall_timer;
    ev_signal sigint, sigterm, sighup, sigusr1;
    ev_timer kill_timer;
    struct admin *admin;
    char admin_addr[64];   /* the supervisor's own admin address ("" when none) */
    unsigned generation;   /* 1 at start, +1 per applied reload */
    double last_reload_ms;
    int watch;
    ev_stat stats[SUP_MAX_WATCH];
    char watched[SUP_MAX_WATCH][PATH_MAX];
    int nstats;
    ev_timer watch_timer;
};

/* What one topology says about its nodes, copied out of Lua. */
struct topo_nodes {
    int n;
    struct {
        char name[64], admin[64], services[256];
        int explicit_admin; /* strata.node { admin = ... }, not derived */
    } node[SUP_MAX_NODES];
    int ports[SUP_MAX_NODES * 8]; /* every service's listen port */
    int nports;
    char sup_admin[64];
    char sup_token[300];
    char sup_auth[16];
    char log_dir[PATH_MAX];
    int watch;
    double drain_timeout;
    double stall_timeout;
    char files[SUP_MAX_WATCH][PATH_MAX];
    int nfiles;
};

static void field_str(lua_State *L, int idx, const char *k, char *out, size_t n)
{
    lua_getfield(L, idx, k);
    snprintf(out, n, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "");
    lua_pop(L, 1);
}

/* Remembers a file the watcher should follow (topology, policies, apps). */
static void add_file(struct topo_nodes *t, const char *path)
{
    if (!path || !*path || t->nfiles >= SUP_MAX_WATCH)
        return;
    for (int i = 0; i < t->nfiles; i++)
        if (strcmp(t->files[i], path) == 0)
            return;
    snprintf(t->files[t->nfiles++], PATH_MAX, "%s", path);
}

static int load_nodes(const char *path, struct topo_nodes *t, char *err, size_t errlen)
{
    memset(t, 0, sizeof *t);
    const char *slash = strrchr(path, '/');
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    lua_State *L = luahost_new(dir);
    if (!L) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (topology_load(L, path, err, errlen) < 0) {
        luahost_close(L);
        return -1;
    }
    int topo = lua_gettop(L);
    add_file(t, path);
    lua_getfield(L, topo, "supervisor");
    field_str(L, -1, "admin", t->sup_admin, sizeof t->sup_admin);
    field_str(L, -1, "log_dir", t->log_dir, sizeof t->log_dir);
    field_str(L, -1, "admin_token", t->sup_token, sizeof t->sup_token);
    field_str(L, -1, "admin_auth", t->sup_auth, sizeof t->sup_auth);
    lua_getfield(L, -1, "watch");
    t->watch = lua_toboolean(L, -1);
    lua_getfield(L, -2, "drain_timeout");
    t->drain_timeout = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 10.0;
    lua_getfield(L, -3, "stall_timeout");
    t->stall_timeout = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : SUP_STALL_TIMEOUT;
    lua_pop(L, 4);
    lua_getfield(L, topo, "nodes");
    int nodes = lua_gettop(L);
    lua_Integer nn = (lua_Integer)lua_rawlen(L, nodes);
    for (lua_Integer i = 1; i <= nn && t->n < SUP_MAX_NODES; i++) {
        lua_rawgeti(L, nodes, i);
        int node = lua_gettop(L);
        field_str(L, node, "name", t->node[t->n].name, sizeof t->node[t->n].name);
        field_str(L, node, "admin", t->node[t->n].admin, sizeof t->node[t->n].admin);
        lua_getfield(L, node, "admin_explicit");
        t->node[t->n].explicit_admin = lua_toboolean(L, -1);
        lua_pop(L, 1);
        struct buf desc;
        buf_init(&desc);
        lua_getfield(L, node, "services");
        lua_Integer ns = (lua_Integer)lua_rawlen(L, -1);
        for (lua_Integer j = 1; j <= ns; j++) {
            lua_rawgeti(L, -1, j);
            char kind[32], listen[64], p[PATH_MAX];
            field_str(L, -1, "kind", kind, sizeof kind);
            field_str(L, -1, "listen", listen, sizeof listen);
            buf_printf(&desc, "%s%s %s", j > 1 ? ", " : "", kind, listen);
            const char *colon = strrchr(listen, ':');
            if (colon && t->nports < (int)(sizeof t->ports / sizeof t->ports[0]))
                t->ports[t->nports++] = atoi(colon + 1);
            static const char *const path_fields[] = {"eviction_path", "policy_path", "app"};
            for (size_t k = 0; k < sizeof path_fields / sizeof path_fields[0]; k++) {
                field_str(L, -1, path_fields[k], p, sizeof p);
                add_file(t, p);
            }
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        buf_append(&desc, "", 1);
        snprintf(t->node[t->n].services, sizeof t->node[t->n].services, "%s", buf_head(&desc));
        buf_free(&desc);
        t->n++;
        lua_settop(L, nodes);
    }
    luahost_close(L);
    return 0;
}

static struct sup_node *find_node(struct supervisor *sup, const char *name)
{
    for (int i = 0; i < sup->n; i++)
        if (strcmp(sup->nodes[i]->name, name) == 0 && !sup->nodes[i]->removed)
            return sup->nodes[i];
    return NULL;
}

static int running_count(struct supervisor *sup)
{
    int k = 0;
    for (int i = 0; i < sup->n; i++)
        k += sup->nodes[i]->pid != 0;
    return k;
}

static void print_ready_table(struct supervisor *sup)
{
    log_info("all %d node%s ready:", sup->n, sup->n == 1 ? "" : "s");
    for (int i = 0; i < sup->n; i++) {
        struct sup_node *nd = sup->nodes[i];
        log_info("  %-12s pid %-7d %s%s%s", nd->name, (int)nd->pid, nd->services,
                 nd->admin[0] ? ", admin " : "", nd->admin);
    }
    if (sup->admin)
        log_info("  supervisor admin %s", admin_addr(sup->admin));
}

/* The node's pipe: "ready" once it serves, then a heartbeat byte every
 * HEARTBEAT_INTERVAL (engine/cli/heartbeat.h). End of file: it exited (the
 * child watcher reports how). */
static void on_ready(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    struct sup_node *nd = w->data;
    char b[256];
    ssize_t n = read(nd->ready_fd, b, sizeof b);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        ev_io_stop(loop, w);
        close(nd->ready_fd);
        nd->ready_fd = -1;
        return;
    }
    nd->last_beat = ev_now(loop);
    if (nd->ready)
        return;
    nd->ready = 1;
    struct supervisor *sup = nd->sup;
    if (sup->starting) {
        for (int i = 0; i < sup->n; i++)
            if (!sup->nodes[i]->ready)
                return;
        sup->starting = 0;
        print_ready_table(sup);
    } else {
        log_info("node %s ready (pid %d)", nd->name, (int)nd->pid);
    }
}

/* A ready node whose heartbeat stopped is stuck (a loop that never
 * returns, SIGSTOP): it keeps its ports but serves no one, and a SIGTERM
 * would wait on the loop it cannot run. Kill it; the child watcher
 * restarts it like any node that was killed. */
static void on_stall_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct supervisor *sup = w->data;
    if (sup->stopping)
        return;
    double now = ev_now(loop);
    for (int i = 0; i < sup->n; i++) {
        struct sup_node *nd = sup->nodes[i];
        if (!nd->pid || !nd->ready || nd->ready_fd < 0 || nd->removed)
            continue;
        if (now - nd->last_beat < sup->stall_timeout)
            continue;
        nd->stalls++;
        log_error("node %s (pid %d): no heartbeat for %.1f s, its loop is stuck; killing it "
                  "(stall #%u)", nd->name, (int)nd->pid, now - nd->last_beat, nd->stalls);
        kill(nd->pid, SIGKILL);
        /* One kill per stall: the pipe closes when it dies. */
        ev_io_stop(loop, &nd->ready_io);
        close(nd->ready_fd);
        nd->ready_fd = -1;
    }
}

static void on_child(struct ev_loop *loop, ev_child *w, int revents);
static int spawn(struct sup_node *nd);

/* Nodes that appeared in a reload start once every node that vanished in
 * it has stopped: a renamed node may take over its predecessor's listen
 * and admin addresses, which are held until that one has drained. */
static void start_deferred(struct supervisor *sup)
{
    if (sup->stopping)
        return;
    for (int i = 0; i < sup->n; i++)
        if (sup->nodes[i]->removed)
            return;
    for (int i = 0; i < sup->n; i++) {
        struct sup_node *nd = sup->nodes[i];
        if (nd->deferred) {
            nd->deferred = 0;
            spawn(nd);
        }
    }
}

static int spawn(struct sup_node *nd)
{
    struct supervisor *sup = nd->sup;
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        log_error("node %s: pipe: %s", nd->name, strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        log_error("node %s: fork: %s", nd->name, strerror(errno));
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        /* The child: a node process. It dies with us, and starts with a
         * clean signal mask (libev may have blocked some in the parent). */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        /* Its own process group: a Ctrl-C in the terminal reaches only the
         * supervisor, which stops the nodes in order (a node signalled
         * twice would skip its drain). */
        setpgid(0, 0);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        fcntl(p[1], F_SETFD, 0);
        char fd[16];
        snprintf(fd, sizeof fd, "%d", p[1]);
        setenv("STRATA_READY_FD", fd, 1);
        if (sup->log_dir[0]) {
            char lp[PATH_MAX + 80];
            mkdir(sup->log_dir, 0755);
            snprintf(lp, sizeof lp, "%s/%s.log", sup->log_dir, nd->name);
            int lfd = open(lp, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (lfd >= 0) {
                dup2(lfd, 1);
                dup2(lfd, 2);
                setenv("STRATA_LOG_FILE", lp, 1); /* reopened on SIGUSR1 */
            }
        }
        char *argv[] = {"strata", "run", sup->path, "--node", nd->name, "--log-level",
                        sup->log_level, nd->admin[0] ? "--admin" : NULL, nd->admin, NULL};
        execv(sup->self, argv);
        fprintf(stderr, "strata: cannot exec %s: %s\n", sup->self, strerror(errno));
        _exit(127);
    }
    close(p[1]);
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    nd->pid = pid;
    nd->ready = 0;
    nd->ready_fd = p[0];
    nd->started_at = nd->last_beat = ev_now(sup->loop);
    ev_io_init(&nd->ready_io, on_ready, p[0], EV_READ);
    nd->ready_io.data = nd;
    ev_io_start(sup->loop, &nd->ready_io);
    ev_child_init(&nd->child, on_child, pid, 0);
    nd->child.data = nd;
    ev_child_start(sup->loop, &nd->child);
    return 0;
}

static void on_restart_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct sup_node *nd = w->data;
    if (nd->sup->stopping || nd->removed)
        return;
    nd->restarts++;
    log_info("node %s: restarting (restart #%u)", nd->name, nd->restarts);
    if (spawn(nd) < 0) {
        ev_timer_set(&nd->restart_timer, nd->backoff, 0.);
        ev_timer_start(nd->sup->loop, &nd->restart_timer);
    }
}

static struct sup_node *node_new(struct supervisor *sup, const char *name, const char *admin,
                                 const char *services)
{
    struct sup_node *nd = calloc(1, sizeof *nd);
    if (!nd)
        return NULL;
    nd->sup = sup;
    snprintf(nd->name, sizeof nd->name, "%s", name);
    snprintf(nd->admin, sizeof nd->admin, "%s", admin);
    snprintf(nd->services, sizeof nd->services, "%s", services);
    nd->ready_fd = -1;
    nd->backoff = SUP_BACKOFF_MIN;
    ev_timer_init(&nd->restart_timer, on_restart_timer, 0., 0.);
    nd->restart_timer.data = nd;
    return nd;
}

static void node_forget(struct supervisor *sup, struct sup_node *nd)
{
    for (int i = 0; i < sup->n; i++)
        if (sup->nodes[i] == nd) {
            memmove(&sup->nodes[i], &sup->nodes[i + 1],
                    (size_t)(sup->n - i - 1) * sizeof sup->nodes[0]);
            sup->n--;
            break;
        }
    ev_timer_stop(sup->loop, &nd->restart_timer);
    if (nd->ready_fd >= 0) {
        ev_io_stop(sup->loop, &nd->ready_io);
        close(nd->ready_fd);
    }
    free(nd);
}

static void supervisor_stop(struct supervisor *sup);

static void describe_status(int status, char *out, size_t n)
{
    if (WIFEXITED(status))
        snprintf(out, n, "exit code %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(out, n, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
    else
        snprintf(out, n, "status %d", status);
}

static void on_child(struct ev_loop *loop, ev_child *w, int revents)
{
    (void)revents;
    struct sup_node *nd = w->data;
    struct supervisor *sup = nd->sup;
    ev_child_stop(loop, w);
    int status = w->rstatus;
    char how[96];
    describe_status(status, how, sizeof how);
    nd->pid = 0;
    int clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    /* A node that had not yet set up its handlers when our SIGTERM came
     * dies of it: that is the stop we asked for, not a failure. */
    if ((sup->stopping || nd->removed) && WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM)
        clean = 1;
    /* kill -9 is how operators (and the OOM killer) stop things: we restart
     * the node but do not count it as the node's own failure. */
    int killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    if (!clean && !killed)
        sup->failed = 1;
    if (sup->stopping || nd->removed) {
        log_info("node %s stopped (%s)", nd->name, how);
        if (nd->removed) {
            node_forget(sup, nd);
            start_deferred(sup);
        }
        if (sup->stopping && running_count(sup) == 0)
            ev_break(loop, EVBREAK_ALL);
        return;
    }
    if (sup->starting && !nd->ready) {
        log_error("node %s failed to start (%s)", nd->name, how);
        sup->failed = 1;
        supervisor_stop(sup);
        return;
    }
    if (ev_now(loop) - nd->started_at >= SUP_STABLE_AFTER)
        nd->backoff = SUP_BACKOFF_MIN;
    log_warn("node %s exited (%s); restarting in %.1fs", nd->name, how, nd->backoff);
    ev_timer_set(&nd->restart_timer, nd->backoff, 0.);
    ev_timer_start(loop, &nd->restart_timer);
    nd->backoff = nd->backoff * 2 > SUP_BACKOFF_MAX ? SUP_BACKOFF_MAX : nd->backoff * 2;
}

static void on_kill_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct supervisor *sup = w->data;
    for (int i = 0; i < sup->n; i++)
        if (sup->nodes[i]->pid) {
            log_warn("node %s did not stop in time: SIGKILL", sup->nodes[i]->name);
            kill(sup->nodes[i]->pid, SIGKILL);
        }
    sup->failed = 1;
}

static void supervisor_stop(struct supervisor *sup)
{
    if (sup->stopping)
        return;
    sup->stopping = 1;
    for (int i = 0; i < sup->n; i++) {
        struct sup_node *nd = sup->nodes[i];
        ev_timer_stop(sup->loop, &nd->restart_timer);
        if (nd->pid)
            kill(nd->pid, SIGTERM);
    }
    if (running_count(sup) == 0) {
        ev_break(sup->loop, EVBREAK_ALL);
        return;
    }
    ev_timer_set(&sup->kill_timer, sup->drain_timeout + 5.0, 0.);
    ev_timer_start(sup->loop, &sup->kill_timer);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct supervisor *sup = w->data;
    if (sup->stopping) {
        log_warn("second stop signal: killing every node");
        on_kill_timer(loop, &sup->kill_timer, 0);
        return;
    }
    log_info("%s: stopping every node", w->signum == SIGINT ? "SIGINT" : "SIGTERM");
    supervisor_stop(sup);
}

static void watch_files(struct supervisor *sup, const struct topo_nodes *t);

/* SIGUSR1 (logrotate): every node reopens its log files. */
static void on_usr1(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct supervisor *sup = w->data;
    log_info("SIGUSR1: every node reopens its log files");
    for (int i = 0; i < sup->n; i++)
        if (sup->nodes[i]->pid)
            kill(sup->nodes[i]->pid, SIGUSR1);
}

/* --- admin addresses ---------------------------------------------------------
 *
 * The supervisor is the source of truth for where each node's admin
 * endpoint listens: a name keeps its address for the supervisor's lifetime
 * (passed to the node with --admin), whatever the topology's order says
 * later. A node without an explicit address gets the first port after the
 * supervisor's that no node, service or supervisor uses and that can be
 * bound now; removing, adding, renaming or reordering nodes never moves a
 * running node. */

static int addr_port(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    return colon ? atoi(colon + 1) : -1;
}

/* 1 when nothing listens on host:port right now. */
static int port_free(const char *host, int port)
{
    char addr[128];
    snprintf(addr, sizeof addr, "%s:%d", host, port);
    struct sockaddr_storage ss;
    socklen_t sl;
    char err[256];
    if (util_parse_addr(addr, &ss, &sl, err, sizeof err) < 0)
        return 0;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int ok = bind(fd, (struct sockaddr *)&ss, sl) == 0;
    close(fd);
    return ok;
}

static int in_topology(const struct topo_nodes *t, const char *name)
{
    for (int j = 0; j < t->n; j++)
        if (strcmp(t->node[j].name, name) == 0)
            return 1;
    return 0;
}

static int auth_of(const char *s)
{
    return strcmp(s, "all") == 0 ? ADMIN_AUTH_ALL : ADMIN_AUTH_WRITES;
}

/* The node (not `self`) whose admin address uses `port`, or NULL. */
static struct sup_node *admin_user(struct supervisor *sup, int port, const struct sup_node *self)
{
    for (int i = 0; i < sup->n; i++)
        if (sup->nodes[i] != self && sup->nodes[i]->admin[0] &&
            addr_port(sup->nodes[i]->admin) == port)
            return sup->nodes[i];
    return NULL;
}

static int port_taken(struct supervisor *sup, const struct topo_nodes *t, int port,
                      char (*assigned)[64], int nassigned)
{
    if (port == addr_port(sup->admin_addr) || admin_user(sup, port, NULL))
        return 1;
    for (int i = 0; i < t->nports; i++)
        if (t->ports[i] == port)
            return 1;
    for (int j = 0; j < t->n; j++)
        if (t->node[j].explicit_admin && addr_port(t->node[j].admin) == port)
            return 1;
    for (int i = 0; i < nassigned; i++)
        if (addr_port(assigned[i]) == port)
            return 1;
    return 0;
}

/* The admin address of a node that is not running yet (topology node j):
 * its explicit one, or a free port after the supervisor's. "" when it has
 * none. 0, or -1 with a message. */
static int assign_admin(struct supervisor *sup, const struct topo_nodes *t, int j,
                        char (*assigned)[64], int nassigned, char *out, size_t n, char *err,
                        size_t errlen)
{
    out[0] = 0;
    if (t->node[j].explicit_admin) {
        struct sup_node *user = admin_user(sup, addr_port(t->node[j].admin), NULL);
        if (user && !user->removed && in_topology(t, user->name)) {
            snprintf(err, errlen, "%.900s: node '%s': admin %s is in use by running node '%s'",
                     sup->path, t->node[j].name, t->node[j].admin, user->name);
            return -1;
        }
        snprintf(out, n, "%s", t->node[j].admin);
        return 0;
    }
    if (!t->node[j].admin[0] || !sup->admin_addr[0])
        return 0;
    char host[64];
    snprintf(host, sizeof host, "%s", sup->admin_addr);
    char *colon = strrchr(host, ':');
    if (colon)
        *colon = 0;
    const char *h = host;
    if (h[0] == '[') { /* [v6] */
        h++;
        char *close = strchr(host, ']');
        if (close)
            *close = 0;
    }
    for (int port = addr_port(sup->admin_addr) + 1; port <= 65535; port++) {
        if (port_taken(sup, t, port, assigned, nassigned) || !port_free(h, port))
            continue;
        int w = snprintf(out, n, "%s%s%s:%d", h != host ? "[" : "", h, h != host ? "]" : "", port);
        return w > 0 && (size_t)w < n ? 0 : -1;
    }
    snprintf(err, errlen, "%.900s: no free port after %s for node '%s''s admin", sup->path,
             sup->admin_addr, t->node[j].name);
    return -1;
}

/* Loads the topology; starts nodes that appeared and stops nodes that
 * vanished. `signal_nodes` also tells every remaining node to reload.
 * Everything is decided before anything changes: on an error nothing did. */
static int supervisor_reload(struct supervisor *sup, int dry_run, int signal_nodes,
                             struct buf *changes, char *err, size_t errlen)
{
    int64_t t0 = util_mono_us();
    size_t before = buf_size(changes);
    struct topo_nodes *t = malloc(sizeof *t);
    char (*assigned)[64] = calloc(SUP_MAX_NODES, 64);
    if (!t || !assigned) {
        free(t);
        free(assigned);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (load_nodes(sup->path, t, err, errlen) < 0) {
        free(t);
        free(assigned);
        return -1;
    }
    /* Plan: the new nodes and their admin addresses. */
    int fresh[SUP_MAX_NODES], nfresh = 0;
    for (int j = 0; j < t->n; j++) {
        struct sup_node *nd = find_node(sup, t->node[j].name);
        if (nd) {
            if (t->node[j].explicit_admin && strcmp(t->node[j].admin, nd->admin) != 0)
                log_warn("node %s: its admin stays on %s while it runs (the topology now says "
                         "%s: restart the topology to move it)", nd->name, nd->admin,
                         t->node[j].admin);
            continue;
        }
        if (sup->n + nfresh >= SUP_MAX_NODES) {
            snprintf(err, errlen, "%.900s: too many nodes (limit %d)", sup->path, SUP_MAX_NODES);
            goto fail;
        }
        if (assign_admin(sup, t, j, assigned, nfresh, assigned[nfresh], 64, err, errlen) < 0)
            goto fail;
        fresh[nfresh++] = j;
    }
    if (sup->admin && admin_auth_differs(sup->admin, t->sup_token, auth_of(t->sup_auth)))
        buf_append_str(changes, "supervisor: admin token or admin_auth changed\n");
    /* Apply. */
    for (int i = 0; i < sup->n; i++) {
        struct sup_node *nd = sup->nodes[i];
        int keep = 0;
        for (int j = 0; j < t->n && !keep; j++)
            keep = strcmp(t->node[j].name, nd->name) == 0;
        if (!keep && !nd->removed) {
            buf_printf(changes, "stop node %s\n", nd->name);
            if (!dry_run) {
                nd->removed = 1;
                ev_timer_stop(sup->loop, &nd->restart_timer);
                if (nd->pid) {
                    kill(nd->pid, SIGTERM);
                } else {
                    node_forget(sup, nd);
                    i--;
                }
            }
        } else if (keep && signal_nodes && !dry_run && nd->pid && !nd->removed) {
            kill(nd->pid, SIGHUP);
        }
    }
    for (int k = 0; k < nfresh; k++) {
        int j = fresh[k];
        buf_printf(changes, "start node %s (%s)%s%s\n", t->node[j].name, t->node[j].services,
                   assigned[k][0] ? ", admin " : "", assigned[k]);
        if (dry_run)
            continue;
        struct sup_node *nd = node_new(sup, t->node[j].name, assigned[k], t->node[j].services);
        if (!nd)
            break;
        sup->nodes[sup->n++] = nd;
        nd->deferred = 1;
    }
    if (!dry_run) {
        start_deferred(sup);
        if (sup->admin)
            admin_set_auth(sup->admin, t->sup_token, auth_of(t->sup_auth));
    }
    if (!dry_run && sup->watch)
        watch_files(sup, t);
    memset(t->sup_token, 0, sizeof t->sup_token);
    free(t);
    free(assigned);
    if (!dry_run) {
        if (buf_size(changes) > before)
            sup->generation++;
        sup->last_reload_ms = (double)(util_mono_us() - t0) / 1000.0;
    }
    return 0;
fail:
    memset(t->sup_token, 0, sizeof t->sup_token);
    free(t);
    free(assigned);
    return -1;
}

static void on_hup(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)loop;
    (void)revents;
    struct supervisor *sup = w->data;
    struct buf changes;
    buf_init(&changes);
    char err[1024];
    if (supervisor_reload(sup, 0, 1, &changes, err, sizeof err) < 0)
        log_error("reload failed, nothing changed: %s", err);
    else
        log_info("reload: topology re-read; every node reloads its own services");
    buf_free(&changes);
}

/* --- file watcher ------------------------------------------------------- */

static void on_watch_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct supervisor *sup = w->data;
    ev_timer_stop(loop, w);
    log_info("watch: a topology or policy file changed; reloading");
    on_hup(loop, &sup->sighup, 0);
}

static void on_stat(struct ev_loop *loop, ev_stat *w, int revents)
{
    (void)revents;
    struct supervisor *sup = w->data;
    /* Editors write in several steps: reload once things settle. The timer
     * may be running already (a second event): restart it, never re-set it
     * while active. */
    sup->watch_timer.repeat = 0.2;
    ev_timer_again(loop, &sup->watch_timer);
}

static void watch_files(struct supervisor *sup, const struct topo_nodes *t)
{
    for (int i = 0; i < sup->nstats; i++)
        ev_stat_stop(sup->loop, &sup->stats[i]);
    sup->nstats = 0;
    for (int i = 0; i < t->nfiles && i < SUP_MAX_WATCH; i++) {
        snprintf(sup->watched[i], PATH_MAX, "%s", t->files[i]);
        ev_stat_init(&sup->stats[i], on_stat, sup->watched[i], 0.5);
        sup->stats[i].data = sup;
        ev_stat_start(sup->loop, &sup->stats[i]);
        sup->nstats++;
    }
}

/* --- admin endpoint ------------------------------------------------------ */

static void sup_status(void *ud, const struct admin_request *req, struct admin_response *resp)
{
    (void)req;
    struct supervisor *sup = ud;
    buf_append_str(&resp->body, "{\"node\":\"supervisor\",\"topology\":");
    buf_json_string(&resp->body, sup->path);
    buf_printf(&resp->body, ",\"supervisor\":true,\"pid\":%d,\"stopping\":%s,\"generation\":%u,"
               "\"nodes\":[", (int)getpid(), sup->stopping ? "true" : "false", sup->generation);
    for (int i = 0; i < sup->n; i++) {
        struct sup_node *nd = sup->nodes[i];
        buf_append_str(&resp->body, i ? ",{\"name\":" : "{\"name\":");
        buf_json_string(&resp->body, nd->name);
        buf_printf(&resp->body, ",\"pid\":%d,\"ready\":%s,\"restarts\":%u,\"stalls\":%u,"
                   "\"admin\":", (int)nd->pid, nd->ready ? "true" : "false", nd->restarts,
                   nd->stalls);
        buf_json_string(&resp->body, nd->admin);
        buf_append_str(&resp->body, ",\"services\":");
        buf_json_string(&resp->body, nd->services);
        buf_append_str(&resp->body, "}");
    }
    buf_append_str(&resp->body, "]}\n");
}

static void sup_metrics(void *ud, const struct admin_request *req, struct admin_response *resp)
{
    (void)req;
    struct supervisor *sup = ud;
    struct buf *b = &resp->body;
    resp->content_type = "text/plain; version=0.0.4";
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"strata_node_restarts_total", "counter", "Restarts of a node by the supervisor."},
        {"strata_node_stalls_total", "counter",
         "Times a node was killed because its loop stopped turning."},
        {"strata_node_up", "gauge", "1 while the node process is ready."},
    };
    for (size_t k = 0; k < sizeof fam / sizeof fam[0]; k++) {
        buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", fam[k].name, fam[k].help, fam[k].name,
                   fam[k].type);
        for (int i = 0; i < sup->n; i++) {
            const struct sup_node *nd = sup->nodes[i];
            buf_printf(b, "%s{node=", fam[k].name);
            buf_prom_label(b, nd->name);
            buf_printf(b, "} %u\n", k == 0   ? nd->restarts
                                    : k == 1 ? nd->stalls
                                             : (unsigned)(nd->pid && nd->ready));
        }
    }
}

static void sup_healthz(void *ud, const struct admin_request *req, struct admin_response *resp)
{
    (void)req;
    struct supervisor *sup = ud;
    resp->content_type = "text/plain";
    buf_append_str(&resp->body, sup->stopping ? "draining\n" : "ok\n");
    if (sup->stopping)
        resp->status = 503;
}

/* POST /reload: the supervisor's part (nodes that appeared or vanished),
 * answered in the nodes' shape (admin_reload_answer). The caller (strata
 * reload) then reloads each node through its own admin endpoint, to collect
 * every node's answer. */
static void sup_reload_route(void *ud, const struct admin_request *req,
                             struct admin_response *resp)
{
    struct supervisor *sup = ud;
    int dry = admin_query_flag(req, "dry_run");
    struct buf changes;
    buf_init(&changes);
    char err[1024];
    int rc = supervisor_reload(sup, dry, 0, &changes, err, sizeof err);
    buf_append(&changes, "", 1);
    struct admin_reload r = {.node = "supervisor", .topology = sup->path, .ok = rc == 0,
                             .dry_run = dry,
                             .generation = sup->generation, .reload_ms = sup->last_reload_ms,
                             .changes = buf_head(&changes), .error = rc == 0 ? NULL : err};
    admin_reload_answer(resp, &r);
    buf_free(&changes);
}

static const struct admin_route sup_routes[] = {
    {"/status", "GET", sup_status},
    {"/metrics", "GET", sup_metrics},
    {"/healthz", "GET", sup_healthz},
    {"/reload", "POST", sup_reload_route},
    {NULL, NULL, NULL},
};

int supervisor_main(const char *topology_path, const char *log_level)
{
    static struct supervisor s;
    struct supervisor *sup = &s;
    memset(sup, 0, sizeof *sup);
    if (!realpath(topology_path, sup->path)) {
        fprintf(stderr, "%s: %s\n", topology_path, strerror(errno));
        return 1;
    }
    ssize_t n = readlink("/proc/self/exe", sup->self, sizeof sup->self - 1);
    if (n <= 0) {
        fprintf(stderr, "strata: cannot find its own executable\n");
        return 1;
    }
    sup->self[n] = 0;
    snprintf(sup->log_level, sizeof sup->log_level, "%s", log_level ? log_level : "info");
    struct topo_nodes *t = malloc(sizeof *t);
    char err[1024];
    if (!t || load_nodes(sup->path, t, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", t ? err : "out of memory");
        free(t);
        return 1;
    }
    log_set_node("supervisor");
    signal(SIGPIPE, SIG_IGN);
    sup->loop = ev_default_loop(EVFLAG_AUTO);
    sup->drain_timeout = t->drain_timeout;
    sup->stall_timeout = t->stall_timeout;
    sup->generation = 1;
    sup->watch = t->watch;
    snprintf(sup->log_dir, sizeof sup->log_dir, "%s", t->log_dir);
    ev_signal_init(&sup->sigint, on_stop_signal, SIGINT);
    ev_signal_init(&sup->sigterm, on_stop_signal, SIGTERM);
    ev_signal_init(&sup->sighup, on_hup, SIGHUP);
    ev_signal_init(&sup->sigusr1, on_usr1, SIGUSR1);
    ev_timer_init(&sup->kill_timer, on_kill_timer, 0., 0.);
    ev_timer_init(&sup->watch_timer, on_watch_timer, 0., 0.);
    {
        double every = sup->stall_timeout / 4 < 0.5 ? sup->stall_timeout / 4 : 0.5;
        ev_timer_init(&sup->stall_timer, on_stall_timer, every, every);
        sup->stall_timer.data = sup;
        ev_timer_start(sup->loop, &sup->stall_timer);
    }
    sup->sigint.data = sup->sigterm.data = sup->sighup.data = sup->sigusr1.data = sup;
    sup->kill_timer.data = sup->watch_timer.data = sup;
    ev_signal_start(sup->loop, &sup->sigint);
    ev_signal_start(sup->loop, &sup->sigterm);
    ev_signal_start(sup->loop, &sup->sighup);
    ev_signal_start(sup->loop, &sup->sigusr1);
    if (t->sup_admin[0]) {
        struct admin_opts o = {.node = "supervisor", .topology = sup->path,
                               .token = t->sup_token, .auth = auth_of(t->sup_auth)};
        sup->admin = admin_start(sup->loop, t->sup_admin, &o, sup_routes, sup, err, sizeof err);
        memset(t->sup_token, 0, sizeof t->sup_token);
        if (!sup->admin) {
            fprintf(stderr, "%s: supervisor admin: %s\n", sup->path, err);
            free(t);
            return 1;
        }
        snprintf(sup->admin_addr, sizeof sup->admin_addr, "%s", t->sup_admin);
    }
    sup->starting = 1;
    for (int i = 0; i < t->n; i++) {
        /* Derived admin ports skip any port something else holds now. */
        char admin[64];
        if (assign_admin(sup, t, i, NULL, 0, admin, sizeof admin, err, sizeof err) < 0) {
            fprintf(stderr, "%s\n", err);
            free(t);
            admin_stop(sup->admin);
            return 1;
        }
        struct sup_node *nd = node_new(sup, t->node[i].name, admin, t->node[i].services);
        if (!nd)
            break;
        sup->nodes[sup->n++] = nd;
    }
    /* Watch before the nodes start: an edit made once they answer must be
     * seen, even when this process is slow to get the CPU back after fork. */
    if (sup->watch)
        watch_files(sup, t);
    log_info("starting %d node%s from %s", sup->n, sup->n == 1 ? "" : "s", sup->path);
    for (int i = 0; i < sup->n; i++)
        if (spawn(sup->nodes[i]) < 0) {
            sup->failed = 1;
            supervisor_stop(sup);
            break;
        }
    free(t);
    ev_run(sup->loop, 0);
    /* Reap anything left (a second signal, or the kill timer). */
    for (int i = 0; i < sup->n; i++)
        if (sup->nodes[i]->pid) {
            int st;
            waitpid(sup->nodes[i]->pid, &st, 0);
        }
    while (sup->n > 0)
        node_forget(sup, sup->nodes[sup->n - 1]);
    for (int i = 0; i < sup->nstats; i++)
        ev_stat_stop(sup->loop, &sup->stats[i]);
    admin_stop(sup->admin);
    ev_timer_stop(sup->loop, &sup->kill_timer);
    ev_timer_stop(sup->loop, &sup->watch_timer);
    ev_signal_stop(sup->loop, &sup->sigint);
    ev_signal_stop(sup->loop, &sup->sigterm);
    ev_signal_stop(sup->loop, &sup->sighup);
    ev_signal_stop(sup->loop, &sup->sigusr1);
    ev_loop_destroy(sup->loop);
    log_info("stopped%s", sup->failed ? " (a node failed)" : "");
    return sup->failed ? 1 : 0;
}

/* strata: the command line. Subcommands parse their own options; exit codes
 * are 0 ok, 1 error, 2 usage. */
#include <ev.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "buf.h"
#include "ctl_host.h"
#include "heartbeat.h"
#include "log.h"
#include "luahost.h"
#include "runtime.h"
#include "supervisor.h"
#include "topology.h"
#include "util.h"

#define EXIT_USAGE 2

static const char *main_usage =
    "usage: strata <command> [options]\n"
    "\n"
    "commands:\n"
    "  check TOPOLOGY.lua            validate a topology and print its nodes\n"
    "  run TOPOLOGY.lua [--node N]   start the topology (or one node of it)\n"
    "  reload TOPOLOGY.lua           apply a changed topology or policy to a running one\n"
    "  status TOPOLOGY.lua [--watch] live state of every node\n"
    "  failover TOPOLOGY.lua [--to NODE]  planned switch of the db primary\n"
    "  version                       print the version\n"
    "  help [COMMAND]                show help\n"
    "\n"
    "Run 'strata COMMAND --help' for a command's options.\n";

static const char *check_usage =
    "usage: strata check TOPOLOGY.lua\n"
    "\n"
    "Loads the topology, checks every declaration (fields, addresses, ports,\n"
    "node references, policy modules) and every service's settings with the\n"
    "same checks `run` and reload use, and prints a table of nodes, services,\n"
    "addresses and policies. On a mistake prints 'file:line: message' and\n"
    "exits 1.\n";

static const char *run_usage =
    "usage: strata run TOPOLOGY.lua [--node NAME [--admin ADDR] | --one-process]\n"
    "                  [--log-level LEVEL]\n"
    "\n"
    "Starts the topology: one supervised process per node. The supervisor\n"
    "waits until every node is ready, restarts a node that dies (with\n"
    "backoff), reloads on SIGHUP, has every node reopen its log files on\n"
    "SIGUSR1, and on SIGINT/SIGTERM drains and stops every node. With --node, runs only node NAME in the foreground (a node on\n"
    "its own machine, or under systemd); --one-process hosts every node in\n"
    "this one process, unsupervised.\n"
    "\n"
    "options:\n"
    "  -n, --node NAME        run only this node, in the foreground\n"
    "  -a, --admin ADDR       with --node: its admin endpoint on ADDR, not the\n"
    "                         topology's (the supervisor passes the one it keeps)\n"
    "  -1, --one-process      every node in this process\n"
    "  -l, --log-level LEVEL  debug, info (default), warn or error\n"
    "  -h, --help             show this help\n";

static const char *reload_usage =
    "usage: strata reload TOPOLOGY.lua [--node NAME] [--dry-run]\n"
    "\n"
    "Checks the topology and its policies, then asks the running system (its\n"
    "admin endpoints, at the addresses its supervisor reports) to apply it:\n"
    "the supervisor and every node first check the change (a dry run); only\n"
    "when all accept does the supervisor start and stop nodes and each node\n"
    "swap in its new services and policies between loop iterations. On any\n"
    "error nothing changes: the message is printed as file:line: message and\n"
    "the exit code is 1. An endpoint that belongs to another node or another\n"
    "topology is refused, never acted on. With an admin token in the\n"
    "topology, the request carries it.\n"
    "\n"
    "options:\n"
    "  -n, --node NAME   reload only this node\n"
    "  -d, --dry-run     report what would change, change nothing\n"
    "  -h, --help        show this help\n";

static const char *status_usage =
    "usage: strata status TOPOLOGY.lua [--node NAME] [--watch] [--interval DURATION]\n"
    "\n"
    "Prints one table of every node's live state (connections, requests/s,\n"
    "p99, errors, cache hit ratio and memory, backend health) from the\n"
    "nodes' admin endpoints; \"-\" where a value does not apply or has no\n"
    "samples yet. Exit code 1 when a node is down.\n"
    "\n"
    "options:\n"
    "  -n, --node NAME          only this node\n"
    "  -w, --watch              refresh until interrupted\n"
    "  -i, --interval DURATION  refresh period with --watch (default 1s)\n"
    "  -c, --count N            with --watch, stop after N refreshes\n"
    "  -h, --help               show this help\n";

static int wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return 1;
    }
    return 0;
}

static int usage_error(const char *usage, const char *fmt, const char *arg)
{
    fprintf(stderr, "strata: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", usage);
    return EXIT_USAGE;
}

/* Loads a topology into a fresh Lua state, leaving it on top. */
static lua_State *load_topology(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[1024];
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    lua_State *L = luahost_new(dir);
    if (!L) {
        fprintf(stderr, "strata: out of memory\n");
        return NULL;
    }
    char err[1024];
    if (topology_load(L, path, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        luahost_close(L);
        return NULL;
    }
    /* Warnings once: a node its supervisor started has had them printed. */
    if (!getenv("STRATA_READY_FD")) {
        lua_getfield(L, -1, "warnings");
        for (lua_Integer i = 1; lua_istable(L, -1) && i <= (lua_Integer)lua_rawlen(L, -1); i++) {
            if (lua_rawgeti(L, -1, i) == LUA_TSTRING)
                fputs(lua_tostring(L, -1), stderr);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    return L;
}

/* The topology at `path` loaded with the control host's functions, and
 * the Lua module `module` (strata.ctl, ...) required on top of it: the
 * topology's index in *topo. NULL (reported) on error. */
static lua_State *open_ctl(const char *path, const char *module, int *topo)
{
    lua_State *L = load_topology(path);
    if (!L)
        return NULL;
    *topo = lua_gettop(L);
    char err[1024];
    if (ctl_host_open(L, err, sizeof err) < 0) {
        fprintf(stderr, "strata: %s\n", err);
        luahost_close(L);
        return NULL;
    }
    lua_getglobal(L, "require");
    lua_pushstring(L, module);
    if (luahost_pcall(L, 1, 1, err, sizeof err) < 0) {
        fprintf(stderr, "strata: %s\n", err);
        luahost_close(L);
        return NULL;
    }
    return L;
}

static int cmd_check(int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        fputs(check_usage, stdout);
        return 0;
    }
    if (argc != 2)
        return usage_error(check_usage, "%s", argc < 2 ? "check needs a topology file" :
                                                         "check takes one topology file");
    if (argv[1][0] == '-')
        return usage_error(check_usage, "unknown option '%s'", argv[1]);
    lua_State *L = load_topology(argv[1]);
    if (!L)
        return 1;
    struct buf out;
    buf_init(&out);
    char err[1024];
    int rc = 0;
    if (topology_describe(L, -1, &out, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        rc = 1;
    } else {
        fwrite(buf_head(&out), 1, buf_size(&out), stdout);
    }
    buf_free(&out);
    luahost_close(L);
    return rc;
}

static int cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"node", required_argument, NULL, 'n'},
        {"admin", required_argument, NULL, 'a'},
        {"one-process", no_argument, NULL, '1'},
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *node = NULL, *level = "info", *admin = NULL;
    int one_process = 0;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "n:a:1l:h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            node = optarg;
            break;
        case 'a':
            admin = optarg;
            break;
        case '1':
            one_process = 1;
            break;
        case 'l': {
            enum log_level lvl;
            if (log_parse_level(optarg, &lvl) < 0)
                return usage_error(run_usage, "bad log level '%s'", optarg);
            log_set_level(lvl);
            level = optarg;
            break;
        }
        case 'h':
            fputs(run_usage, stdout);
            return 0;
        default:
            return usage_error(run_usage, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return usage_error(run_usage, "%s", "run needs exactly one topology file");
    if (node && one_process)
        return usage_error(run_usage, "%s", "--node and --one-process exclude each other");
    if (admin && !node)
        return usage_error(run_usage, "%s", "--admin needs --node");
    const char *path = argv[optind];
    lua_State *L = load_topology(path);
    if (!L)
        return 1;
    if (node && !topology_has_node(L, -1, node)) {
        fprintf(stderr, "%s: no node named '%s' in this topology\n", path, node);
        luahost_close(L);
        return 1;
    }
    if (!node && !one_process) {
        luahost_close(L);
        return supervisor_main(path, level);
    }
    log_set_node(node ? node : "strata");
    if (getenv("STRATA_LOG_FILE")) {
        log_set_file(getenv("STRATA_LOG_FILE"));
        unsetenv("STRATA_LOG_FILE");
    }
    signal(SIGPIPE, SIG_IGN);
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    struct runtime rt;
    runtime_init(&rt, loop);
    if (admin)
        snprintf(rt.admin_addr, sizeof rt.admin_addr, "%s", admin);
    char err[1024];
    int rc = 0;
    if (runtime_start(&rt, L, node, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        rc = 1;
    }
    /* Services copied what they need: the topology state is not kept. */
    luahost_close(L);
    if (rc == 0) {
        log_info("ready: %d service%s from %s", rt.nservices, rt.nservices == 1 ? "" : "s", path);
        struct heartbeat hb;
        heartbeat_start(&hb, loop);
        runtime_run(&rt);
        heartbeat_stop(&hb, loop);
        log_info("stopped");
    }
    runtime_free(&rt);
    ev_loop_destroy(loop);
    return rc;
}

/* reload and status: parse options, load the topology, hand over to
 * lua/strata/ctl.lua, which talks to the admin endpoints. */
static int cmd_ctl(const char *what, const char *usage, int argc, char **argv)
{
    static const struct option opts[] = {
        {"node", required_argument, NULL, 'n'},   {"dry-run", no_argument, NULL, 'd'},
        {"watch", no_argument, NULL, 'w'},        {"interval", required_argument, NULL, 'i'},
        {"count", required_argument, NULL, 'c'},  {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int is_reload = strcmp(what, "reload") == 0;
    const char *node = NULL;
    int dry = 0, watch = 0;
    double interval = 1.0;
    long count = -1;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "n:dwi:c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            node = optarg;
            break;
        case 'd':
            if (!is_reload)
                return usage_error(usage, "bad option '%s'", "--dry-run");
            dry = 1;
            break;
        case 'w':
        case 'i':
        case 'c':
            if (is_reload)
                return usage_error(usage, "bad option '%s'", argv[optind - 1]);
            if (c == 'w')
                watch = 1;
            else if (c == 'i' && util_parse_duration(optarg, &interval) < 0)
                return usage_error(usage, "bad interval '%s'", optarg);
            else if (c == 'c' && (count = atol(optarg)) <= 0)
                return usage_error(usage, "bad count '%s'", optarg);
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            return usage_error(usage, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return usage_error(usage, "%s needs exactly one topology file", what);
    int topo;
    lua_State *L = open_ctl(argv[optind], "strata.ctl", &topo);
    if (!L)
        return 1;
    char err[1024];
    int rc = 1;
    lua_getfield(L, -1, what);
    lua_pushvalue(L, topo);
    lua_newtable(L);
    if (node) {
        lua_pushstring(L, node);
        lua_setfield(L, -2, "node");
    }
    lua_pushboolean(L, dry);
    lua_setfield(L, -2, "dry_run");
    lua_pushboolean(L, watch);
    lua_setfield(L, -2, "watch");
    lua_pushnumber(L, interval);
    lua_setfield(L, -2, "interval");
    if (count > 0) {
        lua_pushinteger(L, count);
        lua_setfield(L, -2, "count");
    }
    if (luahost_pcall(L, 2, 1, err, sizeof err) < 0)
        fprintf(stderr, "strata: %s\n", err);
    else
        rc = (int)lua_tointeger(L, -1);
    fflush(stdout);
    luahost_close(L);
    return rc;
}

static const char *failover_usage =
    "usage: strata failover TOPOLOGY.lua [--to NODE] [--timeout DURATION]\n"
    "\n"
    "Switches a db data set's primary to another node without losing a write:\n"
    "the primary stops taking writes (they are refused with -TRYAGAIN), the\n"
    "target catches up to the primary's last write, is promoted in a new epoch,\n"
    "and the old primary and the other replicas follow it. Without --to, the\n"
    "replica furthest along. If the target does not catch up within the timeout\n"
    "(default 10s), writes resume on the primary and nothing changes.\n";

static int cmd_failover(int argc, char **argv)
{
    static const struct option opts[] = {
        {"to", required_argument, NULL, 't'},
        {"timeout", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *to = NULL;
    double timeout = 10;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "t:T:h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            to = optarg;
            break;
        case 'T':
            if (util_parse_duration(optarg, &timeout) < 0 || timeout <= 0)
                return usage_error(failover_usage, "bad timeout '%s'", optarg);
            break;
        case 'h':
            fputs(failover_usage, stdout);
            return 0;
        default:
            return usage_error(failover_usage, "bad option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return usage_error(failover_usage, "%s", "failover needs exactly one topology file");
    int topo;
    lua_State *L = open_ctl(argv[optind], "strata.failover_ctl", &topo);
    if (!L)
        return 1;
    char err[1024];
    int rc = 1;
    lua_getfield(L, -1, "run");
    lua_pushvalue(L, topo);
    lua_newtable(L);
    if (to) {
        lua_pushstring(L, to);
        lua_setfield(L, -2, "to");
    }
    lua_pushnumber(L, timeout);
    lua_setfield(L, -2, "timeout");
    if (luahost_pcall(L, 2, 1, err, sizeof err) < 0)
        fprintf(stderr, "strata: %s\n", err);
    else
        rc = (int)lua_tointeger(L, -1);
    fflush(stdout);
    luahost_close(L);
    return rc;
}

/* A node's connection count is bounded by its descriptors: take the hard
 * limit the operator allows (as HAProxy does) rather than the shell's soft
 * default of 1,024. Nodes inherit it from the supervisor. */
static void raise_nofile_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(main_usage, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "check") == 0)
        return cmd_check(argc - 1, argv + 1);
    if (strcmp(cmd, "run") == 0) {
        raise_nofile_limit();
        return cmd_run(argc - 1, argv + 1);
    }
    if (strcmp(cmd, "reload") == 0)
        return cmd_ctl("reload", reload_usage, argc - 1, argv + 1);
    if (strcmp(cmd, "status") == 0)
        return cmd_ctl("status", status_usage, argc - 1, argv + 1);
    if (strcmp(cmd, "failover") == 0)
        return cmd_failover(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        if (argc > 2 && wants_help(argc - 1, argv + 1)) {
            puts("usage: strata version\n\nPrints the version of strata and of its Lua and libev.");
            return 0;
        }
        if (argc > 2)
            return usage_error("usage: strata version\n", "%s", "version takes no arguments");
        printf("strata %s (%s, libev %d.%d)\n", STRATA_VERSION, LUA_RELEASE, ev_version_major(),
               ev_version_minor());
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0) {
        if (argc > 2 && strcmp(argv[2], "check") == 0)
            fputs(check_usage, stdout);
        else if (argc > 2 && strcmp(argv[2], "run") == 0)
            fputs(run_usage, stdout);
        else if (argc > 2 && strcmp(argv[2], "reload") == 0)
            fputs(reload_usage, stdout);
        else if (argc > 2 && strcmp(argv[2], "status") == 0)
            fputs(status_usage, stdout);
        else
            fputs(main_usage, stdout);
        return 0;
    }
    fprintf(stderr, "strata: unknown command '%s'\n%s", cmd, main_usage);
    return EXIT_USAGE;
}

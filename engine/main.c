/* strata: the command line. Subcommands parse their own options; exit codes
 * are 0 ok, 1 error, 2 usage. */
#include <ev.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "luahost.h"
#include "runtime.h"
#include "topology.h"

#define EXIT_USAGE 2

static const char *main_usage =
    "usage: strata <command> [options]\n"
    "\n"
    "commands:\n"
    "  check TOPOLOGY.lua            validate a topology and print its nodes\n"
    "  run TOPOLOGY.lua [--node N]   start the topology (or one node of it)\n"
    "  version                       print the version\n"
    "  help [COMMAND]                show help\n"
    "\n"
    "Run 'strata COMMAND --help' for a command's options.\n";

static const char *check_usage =
    "usage: strata check TOPOLOGY.lua\n"
    "\n"
    "Loads the topology, checks every declaration (fields, addresses, ports,\n"
    "node references, policy modules) and prints a table of nodes, services,\n"
    "addresses and policies. On a mistake prints 'file:line: message' and\n"
    "exits 1.\n";

static const char *run_usage =
    "usage: strata run TOPOLOGY.lua [--node NAME] [--log-level LEVEL]\n"
    "\n"
    "Starts the services of the topology in this process, or only those of\n"
    "node NAME (for a node on its own machine, or under systemd). Stops\n"
    "gracefully on SIGINT or SIGTERM: listeners close, in-flight work ends.\n"
    "\n"
    "options:\n"
    "  -n, --node NAME        run only this node\n"
    "  -l, --log-level LEVEL  debug, info (default), warn or error\n"
    "  -h, --help             show this help\n";

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
        {"log-level", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *node = NULL;
    optind = 1;
    opterr = 0;
    int c;
    while ((c = getopt_long(argc, argv, "n:l:h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            node = optarg;
            break;
        case 'l': {
            enum log_level lvl;
            if (log_parse_level(optarg, &lvl) < 0)
                return usage_error(run_usage, "bad log level '%s'", optarg);
            log_set_level(lvl);
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
    const char *path = argv[optind];
    lua_State *L = load_topology(path);
    if (!L)
        return 1;
    if (node && !topology_has_node(L, -1, node)) {
        fprintf(stderr, "%s: no node named '%s' in this topology\n", path, node);
        luahost_close(L);
        return 1;
    }
    log_set_node(node ? node : "strata");
    signal(SIGPIPE, SIG_IGN);
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    struct runtime rt;
    runtime_init(&rt, loop);
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
        runtime_run(&rt);
        log_info("stopped");
    }
    runtime_free(&rt);
    ev_loop_destroy(loop);
    return rc;
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
    if (strcmp(cmd, "run") == 0)
        return cmd_run(argc - 1, argv + 1);
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
        else
            fputs(main_usage, stdout);
        return 0;
    }
    fprintf(stderr, "strata: unknown command '%s'\n%s", cmd, main_usage);
    return EXIT_USAGE;
}

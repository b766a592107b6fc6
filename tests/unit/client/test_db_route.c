/* Unit tests: where the db client sends a command (db_client_route), with
 * the nodes' state set by hand (db_client_test_node): writes to the
 * primary; reads per `reads` — the primary, the least busy live replica,
 * a replica known to have a session's offset first, a Lua route() policy
 * with every kind of answer, a broken policy (error, bad answer, endless
 * loop) falling back to the primary; a policy that does not load. */
#include <ev.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "db_client.h"
#include "tap.h"

static struct ev_loop *loop;

static const struct db_node_addr replicas[2] = {{"db2", "127.0.0.1:1"}, {"db3", "127.0.0.1:1"}};

static struct db_client *make(enum db_reads reads, const char *policy, char *err, size_t errlen)
{
    struct db_client_cfg cfg = {{"db1", "127.0.0.1:1"}, replicas, 2, NULL, reads, policy, 1.0,
                                0.05};
    return db_client_new(loop, &cfg, err, errlen);
}

static const char *route1(struct db_client *dc, const struct db_session *s, const char *cmd,
                          const char *key)
{
    const char *argv[3] = {cmd, key, "v"};
    size_t argl[3] = {strlen(cmd), strlen(key), 1};
    return db_client_route(dc, s, strcmp(cmd, "SET") == 0 ? 3 : 2, argv, argl);
}

static void test_replicas(void)
{
    char err[256];
    struct db_client *dc = make(DB_READS_REPLICAS, NULL, err, sizeof err);
    ok(dc != NULL, "a db client");
    db_client_test_node(dc, "db2", 1, 100, 3);
    db_client_test_node(dc, "db3", 1, 50, 1);
    is_str(route1(dc, NULL, "SET", "k"), "db1", "a write goes to the primary");
    is_str(route1(dc, NULL, "INCR", "k"), "db1", "INCR is a write");
    is_str(route1(dc, NULL, "GET", "k"), "db3", "a read goes to the least busy replica");
    is_str(route1(dc, NULL, "get", "k"), "db3", "commands are matched in any case");
    is_str(route1(dc, NULL, "ROLE", "k"), "db1", "a command the table does not know: primary");
    struct db_session s = {80};
    is_str(route1(dc, &s, "GET", "k"), "db2",
           "a session prefers a replica known to have its write");
    s.min_offset = 200;
    is_str(route1(dc, &s, "GET", "k"), "db3",
           "no replica has it yet: the least busy, to wait on");
    s.min_offset = UINT64_MAX;
    is_str(route1(dc, &s, "GET", "k"), "db1", "a write of unknown offset: the primary");
    s.min_offset = 0;
    is_str(route1(dc, &s, "GET", "k"), "db3", "a session that wrote nothing: any replica");
    db_client_test_node(dc, "db3", 0, 50, 0);
    is_str(route1(dc, NULL, "GET", "k"), "db2", "a down replica is skipped");
    db_client_test_node(dc, "db2", 0, 100, 0);
    is_str(route1(dc, NULL, "GET", "k"), "db1", "no replica up: the primary");
    is_str(db_client_primary(dc), "db1", "the primary is the configured one");
    db_client_free(dc);

    dc = make(DB_READS_PRIMARY, NULL, err, sizeof err);
    db_client_test_node(dc, "db2", 1, 100, 0);
    is_str(route1(dc, NULL, "GET", "k"), "db1", "reads = primary: reads go to the primary");
    db_client_free(dc);
}

static const char policy_src[] =
    "local M = {}\n"
    "function M.route(cmd, key, replicas)\n"
    "  if key == 'boom' then error('broken on purpose') end\n"
    "  if key == 'p' then return 'primary' end\n"
    "  if key == 'idx' then return 2 end\n"
    "  if key == 'bad' then return {} end\n"
    "  if key == 'far' then return 9 end\n"
    "  if key == 'nobody' then return 'db9' end\n"
    "  if key == 'loop' then while true do end end\n"
    "  if key == 'shape' then\n"
    "    local r = replicas[1]\n"
    "    if #replicas == 2 and cmd == 'GET' and r.name == 'db2' and r.addr == '127.0.0.1:1'\n"
    "       and r.up == true and r.offset == 100 and replicas[2].up == false then\n"
    "      return 'db2' end\n"
    "    return 'primary'\n"
    "  end\n"
    "  local best\n"
    "  for _, r in ipairs(replicas) do\n"
    "    if r.up and (not best or r.offset > best.offset) then best = r end\n"
    "  end\n"
    "  return best and best.name or 'primary'\n"
    "end\n"
    "return M\n";

static void test_policy(const char *dir)
{
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/route.lua", dir);
    FILE *f = fopen(path, "w");
    fputs(policy_src, f);
    fclose(f);
    struct db_client *dc = make(DB_READS_POLICY, path, err, sizeof err);
    ok(dc != NULL, "a client with a read policy");
    if (!dc) {
        printf("# %s\n", err);
        return;
    }
    db_client_test_node(dc, "db2", 1, 100, 5);
    db_client_test_node(dc, "db3", 1, 50, 0);
    is_str(route1(dc, NULL, "GET", "k"), "db2", "route() picks a replica by name");
    is_str(route1(dc, NULL, "SET", "k"), "db1", "writes never ask the policy");
    is_str(route1(dc, NULL, "GET", "idx"), "db3", "by index");
    is_str(route1(dc, NULL, "GET", "p"), "db1", "\"primary\"");
    is_str(route1(dc, NULL, "GET", "boom"), "db1", "an error: the primary");
    is_str(route1(dc, NULL, "GET", "bad"), "db1", "a table: the primary");
    is_str(route1(dc, NULL, "GET", "far"), "db1", "an index out of range: the primary");
    is_str(route1(dc, NULL, "GET", "nobody"), "db1", "an unknown name: the primary");
    is_str(route1(dc, NULL, "GET", "loop"), "db1",
           "an endless loop runs out of budget: the primary");
    is_str(route1(dc, NULL, "GET", "k"), "db2", "and the policy still serves the next read");
    db_client_test_node(dc, "db3", 0, 50, 0);
    is_str(route1(dc, NULL, "GET", "shape"), "db2",
           "route() gets the command, the key and {name, addr, up, offset} per replica");
    is_str(route1(dc, NULL, "GET", "idx"), "db1", "a pick that is down: the primary");
    db_client_free(dc);

    snprintf(path, sizeof path, "%s/broken.lua", dir);
    f = fopen(path, "w");
    fputs("local M = {}\nfunction M.route( return M\n", f);
    fclose(f);
    dc = make(DB_READS_POLICY, path, err, sizeof err);
    ok(dc == NULL, "a policy that does not load is refused");
    ok(strstr(err, "broken.lua:2") != NULL, "with file:line (%s)", err);
    snprintf(path, sizeof path, "%s/noroute.lua", dir);
    f = fopen(path, "w");
    fputs("return {}\n", f);
    fclose(f);
    dc = make(DB_READS_POLICY, path, err, sizeof err);
    ok(dc == NULL && strstr(err, "route"), "a policy without route() is refused (%s)", err);
}

int main(void)
{
    loop = ev_loop_new(0);
    char dir[] = "/tmp/strata-route-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    test_replicas();
    test_policy(dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
    ev_loop_destroy(loop);
    return tap_done();
}

"""A reload changes a db's failover settings — down_after, the priorities,
the elect() policy — on running nodes (docs/db.md, "Failover"); anything
else in a db's config still needs a restart, and such a reload is refused
whole. Real processes: three db nodes, each its own `strata run --node`,
reloaded with SIGHUP after the topology file changed.

Nothing here sleeps: every wait polls for its condition."""
import signal

from conftest import wait_for
from fo_util import wait_primary
from repl_util import Cluster

NAMES = ["db1", "db2", "db3"]


def reload_all(c, text):
    c.path.write_text(text)
    for n in NAMES:
        c.procs[n].proc.send_signal(signal.SIGHUP)


def test_reload_changes_down_after_priority_and_policy(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=2, fields=', failover = { down_after = "1s" }')
    c.start_all()
    assert wait_primary(c, NAMES) == "db1"
    for n in NAMES:
        info = c.repl(n)
        assert info["failover_down_after_ms"] == 1000 and info["failover_priority"] == 100
    # With equal logs db2 would win by its name; after the reload db2 may
    # never be elected (priority 0), and down_after is 2 s.
    text = c.text.replace('{ node = "db2",', '{ node = "db2", priority = 0,').replace(
        'down_after = "1s"', 'down_after = "2s"')
    assert text != c.text
    reload_all(c, text)

    def reloaded():
        return all(c.repl(n)["failover_down_after_ms"] == 2000 for n in NAMES) and \
            c.repl("db2")["failover_priority"] == 0
    wait_for(reloaded, what="the new failover settings on every node")
    for n in NAMES:
        assert "failover settings reloaded: down_after 2s" in c.procs[n].output()
    c.kill9("db1")
    assert wait_primary(c, ["db2", "db3"], timeout=30) == "db3"


def test_reload_loads_a_new_elect_policy(strata, tmp_path):
    (tmp_path / "elect.lua").write_text(
        'local M = {}\nfunction M.elect(c)\n  for _, x in ipairs(c) do\n'
        '    if x.node == "db1" then return x.node end\n  end\nend\nreturn M\n')
    fields = ', failover = { down_after = "1s", policy = "%s" }' % (tmp_path / "elect.lua")
    c = Cluster(strata, tmp_path, replicas=2, fields=fields)
    c.start_all()
    assert wait_primary(c, NAMES) == "db1"
    # the same path, a new text: db3 now (without a policy db2 would win
    # by its name, and the old one has no candidate to pick); a reload
    # loads it again
    (tmp_path / "elect.lua").write_text(
        'local M = {}\nfunction M.elect(c)\n  for _, x in ipairs(c) do\n'
        '    if x.node == "db3" then return x.node end\n  end\nend\nreturn M\n')
    for n in NAMES:
        c.procs[n].proc.send_signal(signal.SIGHUP)
    wait_for(lambda: all("failover settings reloaded" in c.procs[n].output() for n in NAMES),
             what="the policy loaded again on every node")
    c.kill9("db1")
    assert wait_primary(c, ["db2", "db3"], timeout=30) == "db3"
    assert c.repl("db3")["failover_policy_fallbacks"] == 0


def test_a_reload_that_changes_more_than_failover_is_refused(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=2, fields=', failover = { down_after = "1s" }')
    c.start_all()
    wait_primary(c, NAMES)
    # a broken policy: refused, the running settings stay
    (tmp_path / "bad.lua").write_text("return { elect = 42 }\n")
    reload_all(c, c.text.replace('down_after = "1s"', 'down_after = "2s", policy = "%s"'
                                 % (tmp_path / "bad.lua")))
    wait_for(lambda: all("reload failed" in c.procs[n].output() for n in NAMES),
             what="the reload refused")
    assert "bad.lua:1:" in c.procs["db1"].output()
    # backlog needs a restart: refused whole, down_after stays
    reload_all(c, c.text.replace('down_after = "1s"', 'down_after = "2s", policy = nil')
               .replace("strata.db {", 'strata.db {\n  backlog = "8mb",', 1))
    wait_for(lambda: all(c.procs[n].output().count("reload failed") == 2 for n in NAMES),
             what="the second reload refused")
    assert "backlog changes with a restart of the node" in c.procs["db2"].output()
    for n in NAMES:
        assert c.repl(n)["failover_down_after_ms"] == 1000

"""Failover of the db tier with real processes on loopback: the db nodes
probe each other, elect the most up-to-date replica by majority, and the
old primary rejoins as a replica (docs/db.md, "Failover"). Partitions made
by cutting links are in test_failover_netns.py."""
import os
import signal
import time

import pytest
import redis

from conftest import wait_for
from fo_util import Writer, missing, primaries, wait_primary
from repl_util import Cluster, digest

FIELDS = ', failover = { down_after = "1s" }'
NAMES = ["db1", "db2", "db3"]


def cluster(strata, tmp_path, fields=FIELDS, **kw):
    c = Cluster(strata, tmp_path, replicas=2, fields=fields, **kw)
    c.start_all()
    return c


def test_after_an_election_a_restarted_cluster_agrees_again(strata, tmp_path):
    c = cluster(strata, tmp_path)
    wait_primary(c, NAMES)
    c.kill9("db1")
    new = wait_primary(c, ["db2", "db3"], timeout=30)
    c.client(new).set("k", "v")
    for n in ["db2", "db3"]:
        c.procs[n].stop()
    for n in NAMES:
        c.start(n)
    # db1, declared primary, waits (read-only) instead of taking writes
    with pytest.raises(redis.ReadOnlyError):
        c.client("db1").set("x", "1")
    p = wait_primary(c, NAMES, timeout=30)
    assert c.client(p).get("k") == b"v"
    assert c.client(p).info("replication")["epoch"] >= 2


def test_a_primary_is_agreed_at_start_and_writes_replicate(strata, tmp_path):
    c = cluster(strata, tmp_path)
    p = wait_primary(c, NAMES)
    r = c.client(p)
    r.set("a", "1")
    assert r.execute_command("WAIT", 2, 5000) == 2
    info = r.info("replication")
    # the topology's primary, agreed in epoch 1 (equal logs: the one that
    # follows nobody)
    assert p == "db1" and info["epoch"] == 1 and info["failover"] == "on"
    for n in NAMES:
        if n != p:
            assert c.client(n).get("a") == b"1"
            assert c.client(n).info("replication")["master_node"] == p


def test_kill9_elects_the_most_up_to_date_replica_and_nothing_waited_is_lost(strata, tmp_path):
    c = cluster(strata, tmp_path)
    old = wait_primary(c, NAMES)
    others = [n for n in NAMES if n != old]
    w = Writer(c, NAMES, wait=1)
    w.start()
    wait_for(lambda: len(w.waited) > 200, timeout=20, what="writes under way")
    # one replica falls behind (stopped), the other keeps up
    behind, ahead = others[1], others[0]
    os.kill(c.procs[behind].proc.pid, signal.SIGSTOP)
    n0 = len(w.waited)
    wait_for(lambda: len(w.waited) > n0 + 100, timeout=20, what="writes while one lags")
    # more than the stopped replica's socket buffers and its link's output
    # bound hold, so it is really behind when the primary dies
    big = c.client(old)
    for i in range(48):
        big.set("big:%d" % i, b"x" * (512 * 1024))
    assert big.execute_command("WAIT", 1, 10000) == 1
    assert (c.client(ahead).info("replication")["slave_repl_offset"] >
            c.client(old).info("replication")["master_repl_offset"] - 1024 * 1024)
    c.kill9(old)
    w.cut_at = time.monotonic()
    os.kill(c.procs[behind].proc.pid, signal.SIGCONT)
    new = wait_primary(c, others, timeout=30)
    assert new == ahead, "the replica that was behind must not win"
    wait_for(lambda: w.resumed_at is not None, timeout=20, what="writes resume")
    wait_for(lambda: len(w.waited) > n0 + 300, timeout=20, what="writes on the new primary")
    w.finish()
    r = c.client(new)
    assert missing(r, w.waited) == []
    assert r.info("replication")["epoch"] >= 1
    # the loser follows the winner and converges, by partial resync: its
    # log was a prefix of the winner's
    wait_for(lambda: c.client(behind).info("replication").get("master_node") == new,
             timeout=20, what="the other replica follows the new primary")
    c.wait_converged(behind, upstream=new)
    assert c.client(behind).info("replication")["master_sync_full"] == 0  # since it moved


def test_old_primary_rejoins_as_a_replica_and_converges(strata, tmp_path):
    c = cluster(strata, tmp_path)
    old = wait_primary(c, NAMES)
    r = c.client(old)
    for i in range(300):
        r.set("k%d" % i, i)
    assert r.execute_command("WAIT", 2, 5000) == 2
    c.kill9(old)
    new = wait_primary(c, [n for n in NAMES if n != old], timeout=30)
    rn = c.client(new)
    for i in range(300, 400):
        rn.set("k%d" % i, i)
    c.start(old)
    wait_for(lambda: (c.client(old).info("replication").get("master_node") == new and
                      c.client(old).info("replication").get("master_link_status") == "up"),
             timeout=20, what="the old primary follows the new one")
    assert c.client(old).info("replication")["role"] == "slave"
    assert primaries(c, NAMES) == [new]
    c.wait_converged(old, upstream=new)
    assert digest(c.client(old))[0] == 400
    # it came back by a partial resync (its log is a prefix of the new one's)
    assert c.client(old).info("replication")["master_sync_full"] == 0


def test_a_diverged_old_primary_discards_what_the_new_one_never_had(strata, tmp_path):
    c = cluster(strata, tmp_path)
    old = wait_primary(c, NAMES)
    others = [n for n in NAMES if n != old]
    r = c.client(old)
    r.set("base", "1")
    assert r.execute_command("WAIT", 2, 5000) == 2
    # the replicas go: these writes reach the old primary only
    for n in others:
        c.kill9(n)
    for i in range(5):
        r.set("lost%d" % i, i)
    c.kill9(old)
    for n in others:
        c.start(n)
    new = wait_primary(c, others, timeout=30)
    c.client(new).set("after", "1")
    c.start(old)
    wait_for(lambda: c.client(old).info("replication").get("master_node") == new and
             c.client(old).info("replication").get("master_link_status") == "up" and
             not c.client(old).info("replication").get("master_sync_in_progress"),
             timeout=30, what="the old primary follows the new one")
    c.wait_converged(old, upstream=new)
    assert c.client(old).get("lost0") is None
    log = (tmp_path / (old + ".log")).read_text()
    assert "discarding 5 write(s)" in log


def test_lua_policy_prefers_a_named_replica(strata, tmp_path):
    """The policy ranks db3, then db2: it chooses the first primary (the
    default would take db1, the topology's) and, db3 killed, db2 (the
    default would take db1 by name)."""
    pol = tmp_path / "prefer.lua"
    pol.write_text('local M = { api = 1 }\n'
                   'local rank = { db3 = 1, db2 = 2, db1 = 3 }\n'
                   'function M.elect(c)\n'
                   '  table.sort(c, function(a, b) return rank[a.node] < rank[b.node] end)\n'
                   '  return c[1]\nend\nreturn M\n')
    c = cluster(strata, tmp_path, fields=', failover = { down_after = "1s", policy = "%s" }' % pol)
    assert wait_primary(c, NAMES) == "db3"
    c.client("db3").set("x", "1")
    assert c.client("db3").execute_command("WAIT", 2, 5000) == 2
    c.kill9("db3")
    assert wait_primary(c, ["db1", "db2"], timeout=30) == "db2"
    assert c.client("db2").get("x") == b"1"


def test_broken_policy_falls_back_to_the_default(strata, tmp_path):
    pol = tmp_path / "broken.lua"
    pol.write_text('local M = { api = 1 }\n'
                   'function M.elect(c) return c[1].nosuch.field end\nreturn M\n')
    c = cluster(strata, tmp_path, fields=', failover = { down_after = "1s", policy = "%s" }' % pol)
    old = wait_primary(c, NAMES)
    c.client(old).set("x", "1")
    assert c.client(old).execute_command("WAIT", 2, 5000) == 2
    c.kill9(old)
    others = [n for n in NAMES if n != old]
    new = wait_primary(c, others, timeout=30)
    assert c.client(new).get("x") == b"1"
    logs = "".join((tmp_path / (n + ".log")).read_text() for n in others)
    assert "broken.lua:2:" in logs and "electing by the default rule" in logs


def test_manual_promote_and_follow(strata, tmp_path):
    """A planned switch with plain commands: pause writes on the primary,
    wait for the target to have everything, promote it, make the old primary
    follow it. Nothing acknowledged is lost. Without failover declared."""
    c = Cluster(strata, tmp_path, replicas=2).start_all()
    p = c.client("db1")
    for i in range(500):
        p.set("m%d" % i, i)
    paused = p.execute_command("FAILOVER", "PAUSE", 10000)
    end = int(paused.split()[1]) if isinstance(paused, bytes) else int(str(paused).split()[1])
    wait_for(lambda: c.client("db2").info("replication")["slave_repl_offset"] >= end,
             timeout=20, what="db2 has everything")
    try:
        p.set("during", "1")
        assert False, "a paused primary must refuse writes"
    except Exception as e:
        assert "TRYAGAIN" in str(e)
    assert c.client("db2").execute_command("FAILOVER", "PROMOTE").startswith(b"OK epoch")
    assert p.execute_command("FAILOVER", "FOLLOW", "db2") in (b"OK", "OK", True)
    assert c.client("db3").execute_command("FAILOVER", "FOLLOW", "db2") in (b"OK", "OK", True)
    n = c.client("db2")
    n.set("new", "1")
    assert n.execute_command("WAIT", 2, 5000) == 2
    assert missing(n, ["m%d" % i for i in range(500)]) == []
    c.wait_converged("db1", upstream="db2")
    assert c.client("db1").info("replication")["master_sync_full"] == 0


def test_strata_failover_under_load_loses_nothing(strata, tmp_path):
    from conftest import run_cli
    c = cluster(strata, tmp_path)
    old = wait_primary(c, NAMES)
    target = [n for n in NAMES if n != old][1]
    w = Writer(c, NAMES)  # plain writes: each acknowledged one must survive
    w.start()
    wait_for(lambda: len(w.acked) > 300, timeout=20, what="writes under way")
    r = run_cli("failover", str(c.path), "--to", target)
    assert r.returncode == 0, r.stderr
    assert "%s is the primary" % target in r.stdout
    n0 = len(w.acked)
    wait_for(lambda: len(w.acked) > n0 + 200 and w.target == target, timeout=20,
             what="writes resume on " + target)
    w.finish()
    assert primaries(c, NAMES) == [target]
    assert missing(c.client(target), w.acked) == []
    for n in NAMES:
        if n != target:
            c.wait_converged(n, upstream=target)
    # everyone came across by partial resync
    for n in NAMES:
        if n != target:
            assert c.client(n).info("replication")["master_sync_full"] <= 1


def test_strata_failover_refuses_without_a_replica(strata, tmp_path):
    from conftest import run_cli
    c = Cluster(strata, tmp_path, replicas=1).start_all()
    r = run_cli("failover", str(c.path), "--to", "db1")
    assert r.returncode == 1 and "already the primary" in r.stderr
    c.kill9("db2")
    r = run_cli("failover", str(c.path))
    assert r.returncode == 1 and "nothing changed" in r.stderr
    c.client("db1").set("still", "writable")


def test_status_shows_roles_and_epoch(strata, tmp_path):
    import json
    import urllib.request
    from conftest import run_cli
    c = cluster(strata, tmp_path, admin=True)
    p = wait_primary(c, NAMES)
    wait_for(lambda: all(c.client(n).info("replication").get("master_link_status") == "up"
                         for n in NAMES if n != p), timeout=20, what="replicas follow")
    r = run_cli("status", str(c.path))
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:] if line.strip()}
    assert rows[p][-1] == "primary/e1", r.stdout
    for n in NAMES:
        if n != p:
            assert rows[n][-1] == "replica/e1", r.stdout
    with urllib.request.urlopen("http://127.0.0.1:%d/status" % c.admins[p], timeout=5) as f:
        doc = json.load(f)
    db = [s for s in doc["services"] if s["kind"] == "db"][0]
    assert db["role"] == "primary" and db["epoch"] == 1 and db["failover"] is True
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % c.admins[p], timeout=5) as f:
        text = f.read().decode()
    assert "strata_db_is_primary{" in text and "strata_db_epoch{" in text

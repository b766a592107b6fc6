"""The web tier's db client (engine/client/db_client) against a real primary
and replicas, driven through tests/tools/kvc_probe: where reads go per
`reads` and a Lua route() policy, read-your-writes under a replica that
keeps stopping, following a primary that moved, and the ROLE command's
reply shapes seen by redis-py."""
import os
import random
import signal
import subprocess
import sys
import threading
import time

from client_util import Probe
from conftest import ROOT, free_port, wait_for
from repl_util import Cluster


def addr(c, n):
    return "%s=127.0.0.1:%d" % (n, c.ports[n])


def hits(c, n):
    return c.client(n).info("stats")["keyspace_hits"]


def db_probe(c, tmp_path, *args, name="probe"):
    reps = []
    for n in c.names[1:]:
        reps += ["--replica", addr(c, n)]
    return Probe(tmp_path, "db", *args, "--primary", addr(c, "db1"), *reps, name=name)


def wait_replicas_serve(probe):
    """Reads go to a replica only once the client's ROLE probe saw it follow
    its upstream: wait for that before counting where reads went."""
    wait_for(lambda: probe.ask("route GET k0")["route"] != probe.ask("primary")["primary"],
             what="the client sees a replica in sync")


def seed_keys(c, n=10):
    p = c.client("db1")
    for i in range(n):
        p.set("k%d" % i, "v%d" % i)
    for r in c.names[1:]:
        wait_for(lambda: c.client(r).get("k%d" % (n - 1)) == b"v%d" % (n - 1),
                 what="%s has the keys" % r)


def test_reads_go_where_reads_says(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=2).start_all()
    c.wait_online("db2")
    c.wait_online("db3")
    seed_keys(c)

    probe = db_probe(c, tmp_path, "--reads", "replicas", name="replicas")
    try:
        wait_replicas_serve(probe)
        before = {n: hits(c, n) for n in c.names}
        for i in range(10):
            assert probe.ask("call GET k%d" % i)["reply"] == "v%d" % i
        after = {n: hits(c, n) for n in c.names}
        assert after["db1"] == before["db1"], (before, after)
        assert after["db2"] + after["db3"] - before["db2"] - before["db3"] == 10, (before, after)
        st = probe.ask("stats")
        assert st["reads_replica"] == 10 and st["reads_primary"] == 0, st
        assert probe.ask("call SET w 1")["reply"] == {"status": "OK"}
        assert c.client("db1").get("w") == b"1"  # writes go to the primary
    finally:
        probe.close()

    probe = db_probe(c, tmp_path, "--reads", "primary", name="primary")
    try:
        before = {n: hits(c, n) for n in c.names}
        for i in range(10):
            assert probe.ask("call GET k%d" % i)["reply"] == "v%d" % i
        after = {n: hits(c, n) for n in c.names}
        assert after["db1"] - before["db1"] == 10, (before, after)
        assert after["db2"] == before["db2"] and after["db3"] == before["db3"]
        st = probe.ask("stats")
        assert st["reads_primary"] == 10 and st["reads_replica"] == 0, st
    finally:
        probe.close()

    policy = tmp_path / "route.lua"
    policy.write_text(
        "local M = {}\n"
        "function M.route(cmd, key, replicas)\n"
        "  if key == 'k9' then error('broken on purpose') end\n"
        "  if key == 'k8' then return 'primary' end\n"
        "  for _, r in ipairs(replicas) do\n"
        "    if r.name == 'db3' and r.up and r.addr:find(':') then return r.name end\n"
        "  end\n"
        "  return 1\n"
        "end\n"
        "return M\n")
    probe = db_probe(c, tmp_path, "--reads", "policy", "--policy", policy, name="policy")
    try:
        wait_for(lambda: probe.ask("route GET k1") == {"route": "db3"}, what="route() sees db3 up")
        before = {n: hits(c, n) for n in c.names}
        for i in range(9):
            assert probe.ask("call GET k%d" % i)["reply"] == "v%d" % i
        for _ in range(5):  # the broken branch: the primary serves, logged once
            assert probe.ask("call GET k9")["reply"] == "v9"
        after = {n: hits(c, n) for n in c.names}
        assert after["db3"] - before["db3"] == 8, (before, after)   # k0..k7
        assert after["db1"] - before["db1"] == 6, (before, after)   # k8 + 5 x k9
        assert after["db2"] == before["db2"]
        st = probe.ask("stats")
        assert st["reads_replica"] == 8 and st["reads_primary"] == 6, st
        assert probe.output().count("broken on purpose") == 1, probe.output()
    finally:
        probe.close()


def test_read_your_writes_randomized_with_a_stalling_replica(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1).start_all()
    c.wait_online("db2")
    probe = db_probe(c, tmp_path, "--reads", "replicas", "--timeout", 2, "--ryw-wait", 0.05)
    wait_replicas_serve(probe)
    pid = c.procs["db2"].proc.pid
    done = threading.Event()
    rnd = random.Random(1234)

    stalls = [0]

    def staller():
        # Stops the replica for moments, again and again: its applied
        # offset falls behind the sessions' writes, then catches up.
        while not done.is_set():
            os.kill(pid, signal.SIGSTOP)
            stalls[0] += 1
            time.sleep(rnd.uniform(0.01, 0.08))
            os.kill(pid, signal.SIGCONT)
            time.sleep(rnd.uniform(0.02, 0.1))

    t = threading.Thread(target=staller)
    t.start()
    results = []
    try:
        # Rounds until the replica has stalled often enough that some reads
        # waited for it and some gave up on it (served by the primary).
        for seed in range(1, 41):
            r = probe.ask("ryw 24 250 4 %d" % seed, timeout=300)
            results.append(r)
            assert r["ops"] == 24 * 250, r
            assert r["violations"] == 0, r
            assert r["failures"] == 0, r
            if (len(results) >= 3 and stalls[0] >= 10 and
                    sum(x["ryw_fallbacks"] for x in results) > 0):
                break
    finally:
        done.set()
        t.join()
        os.kill(pid, signal.SIGCONT)
        probe.close()
    total = {k: sum(x[k] for x in results) for k in
             ("reads", "reads_replica", "reads_primary", "ryw_waits", "ryw_fallbacks")}
    assert total["reads_replica"] > 0, total
    assert total["ryw_waits"] > 0 and total["ryw_fallbacks"] > 0, (total, stalls)
    assert total["reads_primary"] >= total["ryw_fallbacks"], total


def test_a_write_answered_readonly_follows_the_primary(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1).start_all()
    c.wait_online("db2")
    # The client believes the replica is the primary (as after a failover
    # it has not seen yet): the write is refused, the client asks ROLE,
    # finds db1 and retries there.
    probe = Probe(tmp_path, "db", "--primary", addr(c, "db2"), "--replica", addr(c, "db1"))
    try:
        a = probe.ask("scall 1 SET moved yes")
        assert a["reply"] == {"status": "OK"}, a
        assert probe.ask("primary") == {"primary": "db1"}
        assert c.client("db1").get("moved") == b"yes"
        assert probe.ask("scall 1 GET moved")["reply"] == "yes"
        assert "the primary is now db1" in probe.output()
    finally:
        probe.close()


def test_role_reply_shapes(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1).start_all()
    c.wait_online("db2")
    p, r = c.client("db1"), c.client("db2")
    for i in range(20):
        p.set("r%d" % i, "x" * i)

    def primary_role():
        role = p.execute_command("ROLE")
        return role if role[2] and int(role[2][0][2]) == role[1] else None
    role = wait_for(primary_role, what="the replica acknowledged everything")
    assert role[0] == b"master"
    assert isinstance(role[1], int) and role[1] > 0
    assert len(role[2]) == 1
    ip, port, acked = role[2][0]
    assert ip == b"127.0.0.1" and port == str(c.ports["db2"]).encode()
    assert int(acked) == role[1]

    rrole = r.execute_command("ROLE")
    assert rrole[0] == b"slave"
    assert rrole[1] == b"127.0.0.1" and rrole[2] == c.ports["db1"]
    assert rrole[3] == b"connected"
    assert rrole[4] == role[1], (rrole, role)

    # A replica cut from its primary says so, and keeps its offset.
    c.kill9("db1")
    wait_for(lambda: r.execute_command("ROLE")[3] in (b"connect", b"connecting"),
             what="the replica sees its primary gone")
    assert r.execute_command("ROLE")[4] == role[1]


def test_a_dead_primary_fails_writes_fast_and_reads_go_on(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1).start_all()
    c.wait_online("db2")
    seed_keys(c, 3)
    probe = db_probe(c, tmp_path, "--reads", "replicas", "--timeout", 5)
    try:
        assert probe.ask("call SET a 1")["reply"] == {"status": "OK"}
        c.kill9("db1")
        # No node answers "master": the write fails, well before the timeout.
        a = wait_for(lambda: (lambda x: x if x["error"] == "down" else None)(
            probe.ask("call SET a 2")), what="writes answer down")
        assert a["reply"] is None and a["ms"] < 2500, a
        assert probe.ask("call GET k1")["reply"] == "v1"  # a replica still serves reads
        assert probe.ask("primary") == {"primary": "db1"}
        c.start("db1")
        wait_for(lambda: probe.ask("call SET a 3")["reply"] == {"status": "OK"},
                 what="writes work again")
        assert c.client("db1").get("a") == b"3"
    finally:
        probe.close()


def test_a_replica_that_does_not_follow_its_upstream_gets_no_reads(strata, tmp_path):
    """A replica whose link to the primary is not up (here: it dials the
    primary through a proxy that is not there yet) holds no data: reads go
    to the primary until the replica says it follows, then to the replica."""
    proxy_port = free_port()
    c = Cluster(strata, tmp_path, replicas=1, via={"db2": "127.0.0.1:%d" % proxy_port})
    c.start_all()
    seed_keys_primary_only = c.client("db1")
    for i in range(10):
        seed_keys_primary_only.set("k%d" % i, "v%d" % i)
    assert c.client("db2").get("k0") is None  # the replica has nothing
    probe = db_probe(c, tmp_path, "--reads", "replicas")
    proxy = None
    try:
        for _ in range(3):
            for i in range(10):
                assert probe.ask("call GET k%d" % i)["reply"] == "v%d" % i
        st = probe.ask("stats")
        assert st["reads_replica"] == 0 and st["reads_primary"] == 30, st
        proxy = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "faultproxy"),
                                  "--listen", "127.0.0.1:%d" % proxy_port,
                                  "--to", "127.0.0.1:%d" % c.ports["db1"]],
                                 stdout=subprocess.PIPE, text=True)
        assert proxy.stdout.readline().strip() == "listening"
        c.wait_online("db2")
        wait_replicas_serve(probe)
        assert probe.ask("call GET k3")["reply"] == "v3"
        assert probe.ask("stats")["reads_replica"] >= 1
    finally:
        probe.close()
        if proxy:
            proxy.terminate()
            proxy.wait()

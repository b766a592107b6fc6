"""Failover across simulated machines: every db node runs in a network
namespace of its own (tools/netns), started with `strata run TOPO --node
NAME` as on its own host, and partitions are made by cutting a node's link,
not by stopping processes. Skipped, with the reason, where namespaces
cannot be made (not root, no iproute2, a container that forbids them)."""
import os
import random
import signal
import subprocess
import time

import pytest
import redis

from conftest import ROOT, SLOW, STRATA_BIN, wait_for
from fo_util import Writer, missing
from repl_util import digest

NETNS = os.path.join(ROOT, "tools", "netns")


def _netns_ok():
    try:
        r = subprocess.run([NETNS, "check"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


OK, WHY = _netns_ok()
pytestmark = pytest.mark.skipif(not OK, reason="network namespaces unavailable: " + WHY)

NAMES = ["db1", "db2", "db3"]


class NetCluster:
    """db1 (primary), db2, db3 each in namespace SET-i at SUBNET.(i+1)."""

    def __init__(self, tmp_path, fields):
        self.tmp = tmp_path
        self.set = "fo%04x" % random.randrange(0x10000)
        self.subnet = "10.%d.%d" % (random.randrange(100, 250), random.randrange(1, 250))
        self.password = "fo-secret"
        self.ports = {n: 7001 for n in NAMES}
        self.addr = {n: "%s.%d" % (self.subnet, i + 2) for i, n in enumerate(NAMES)}
        reps = ", ".join('{ node = "%s", listen = "%s:7001", dir = "%s" }'
                         % (n, self.addr[n], tmp_path / n) for n in NAMES[1:])
        text = ('strata.db {\n  primary = { node = "db1", listen = "%s:7001", dir = "%s" },\n'
                '  replicas = { %s },\n  password = "%s"%s\n}\n'
                % (self.addr["db1"], tmp_path / "db1", reps, self.password, fields))
        self.path = tmp_path / "net.lua"
        self.path.write_text(text)
        self.procs = {}
        subprocess.run([NETNS, "up", self.set, str(len(NAMES)), self.subnet], check=True)

    def host(self, name):
        return self.addr[name]

    def index(self, name):
        return NAMES.index(name) + 1

    def client(self, name, **kw):
        kw.setdefault("socket_timeout", 10 * SLOW)
        return redis.Redis(host=self.addr[name], port=7001, password=self.password, **kw)

    def start(self, name):
        log = open(self.tmp / (name + ".log"), "a")
        p = subprocess.Popen(["ip", "netns", "exec", "%s-%d" % (self.set, self.index(name)),
                              STRATA_BIN, "run", str(self.path), "--node", name],
                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        p.logf = log
        self.procs[name] = p

        def up():
            if p.poll() is not None:
                raise AssertionError("%s exited %s" % (name, p.returncode))
            try:
                return self.client(name, socket_timeout=1).ping()
            except redis.RedisError:
                return False
        wait_for(up, timeout=15, what=name + " answers")

    def start_all(self):
        for n in NAMES:
            self.start(n)
        return self

    def inside(self, name, *cmd):
        """A redis-cli run inside the node's own namespace (it reaches the
        node even while its link to the others is cut)."""
        r = subprocess.run([NETNS, "run", self.set, str(self.index(name)), "redis-cli", "-h",
                            self.addr[name], "-p", "7001", "--no-auth-warning", "-a",
                            self.password, *cmd], capture_output=True, text=True, timeout=20)
        return r.stdout.strip()

    def cut(self, name):
        subprocess.run([NETNS, "cut", self.set, str(self.index(name))], check=True)

    def restore(self, name):
        subprocess.run([NETNS, "restore", self.set, str(self.index(name))], check=True)

    def close(self):
        """Stops every node; returns the nodes that did not exit cleanly
        (a sanitizer report, a crash)."""
        bad = []
        for n, p in self.procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=20 * SLOW)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                    bad.append(n + " (did not stop)")
            if p.returncode != 0 and n + " (did not stop)" not in bad:
                bad.append("%s (exit %s)" % (n, p.returncode))
            p.logf.close()
        subprocess.run([NETNS, "down", self.set, str(len(NAMES))])
        return bad


@pytest.fixture
def net(tmp_path):
    made = []

    def make(fields):
        c = NetCluster(tmp_path, fields)
        made.append(c)
        return c.start_all()
    yield make
    bad = []
    for c in made:
        bad += c.close()
    assert not bad, "nodes that did not exit cleanly: %s" % bad


FENCED = (', failover = { down_after = "1s" }, min_replicas = 1, max_lag = "1s", '
          'repl_timeout = "2s"')


def role_of(c, name):
    out = c.inside(name, "info", "replication")
    return dict(l.split(":", 1) for l in out.splitlines() if ":" in l)


def reachable_primaries(c, names):
    out = []
    for n in names:
        try:
            if c.client(n, socket_timeout=1).info("replication")["role"] == "master":
                out.append(n)
        except redis.RedisError:
            pass
    return out


def one_primary(c, names, timeout=30):
    got = {}

    def f():
        p = reachable_primaries(c, names)
        if len(p) == 1:
            got["p"] = p[0]
            return True
    wait_for(f, timeout=timeout, what="one primary among %s" % names)
    return got["p"]


def test_partition_isolating_the_primary_leaves_one_primary_that_takes_writes(net):
    c = net(FENCED)
    old = one_primary(c, NAMES)
    others = [n for n in NAMES if n != old]
    w = Writer(c, NAMES, wait=1)  # the primary and one replica: a majority of 3
    w.start()
    wait_for(lambda: len(w.waited) > 100, timeout=20, what="writes under way")
    c.cut(old)
    t0 = time.monotonic()
    # the cut-off primary refuses writes (it cannot reach min_replicas)...
    wait_for(lambda: "NOREPLICAS" in c.inside(old, "set", "fenced", "1"), timeout=10,
             what="the old primary refuses writes")
    fenced_after = time.monotonic() - t0
    # ...and the majority side elects one of its own
    new = one_primary(c, others)

    def takes_writes():
        try:
            return c.client(new).set("majority", "1")
        except redis.ResponseError:  # NOREPLICAS until the other replica follows it
            return False
    wait_for(takes_writes, timeout=20, what=new + " takes writes")
    n0 = len(w.waited)
    wait_for(lambda: len(w.waited) > n0 + 100, timeout=30, what="writes resume on " + new)
    # exactly one node accepts writes
    accepting = [n for n in NAMES if n != old and
                 c.client(n).info("replication")["role"] == "master"]
    assert accepting == [new]
    assert "NOREPLICAS" in c.inside(old, "set", "fenced", "2")
    w.finish()
    assert missing(c.client(new), w.waited) == []
    # the old primary comes back: it sees the later epoch and follows
    c.restore(old)
    wait_for(lambda: role_of(c, old).get("master_node") == new and
             role_of(c, old).get("master_link_status") == "up", timeout=30,
             what="the old primary follows " + new)
    assert reachable_primaries(c, NAMES) == [new]
    want = digest(c.client(new))
    wait_for(lambda: digest(c.client(old)) == want, timeout=30, what="equal digests")
    assert fenced_after < 5 * SLOW


def test_a_partitioned_replica_causes_no_failover(net):
    c = net(', failover = { down_after = "1s" }')
    p = one_primary(c, NAMES)
    lone = [n for n in NAMES if n != p][1]
    epoch = c.client(p).info("replication")["epoch"]
    c.cut(lone)
    # well past down_after: the lone replica has seen nobody for long
    wait_for(lambda: "no election without a majority" in
             (c.tmp / (lone + ".log")).read_text(), timeout=20, what="the lone replica holds back")
    assert role_of(c, lone)["role"] == "slave"
    assert reachable_primaries(c, [n for n in NAMES if n != lone]) == [p]
    assert c.client(p).info("replication")["epoch"] == epoch
    c.client(p).set("during", "1")
    c.restore(lone)
    wait_for(lambda: c.client(lone).get("during") == b"1", timeout=30,
             what="the replica catches up")
    assert c.client(p).info("replication")["epoch"] == epoch
    assert reachable_primaries(c, NAMES) == [p]

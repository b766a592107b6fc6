"""The web tier's cache client (engine/client/cache_client) against real
cache shards, driven through tests/tools/kvc_probe: a killed shard answers
"down" at once while the others keep serving, and is used again once it is
back."""
import pytest

from client_util import Probe
from conftest import free_port, wait_for

# Every link authenticates, again after each reconnect.
PASSWORD = "s3cret-shards"


def shards_topology(ports):
    shards = ", ".join('{ node = "%s", listen = "127.0.0.1:%d" }' % (n, p)
                       for n, p in ports.items())
    return 'strata.cache { shards = { %s }, password = "%s" }\n' % (shards, PASSWORD)


@pytest.fixture
def two_shards(strata, tmp_path):
    ports = {"c1": free_port(), "c2": free_port()}
    text = shards_topology(ports)
    procs = {}

    def start(name):
        procs[name] = strata(text, [ports[name]], name="cache.lua", args=["--node", name],
                             log=tmp_path / (name + ".log"))
    for n in ports:
        start(n)
    return ports, procs, start


def keys_by_shard(probe, n=40):
    by = {0: [], 1: []}
    for i in range(n):
        k = "user:%d" % i
        by[probe.ask("shard " + k)["shard"]].append(k)
    return by


def test_killed_shard_answers_down_and_comes_back(two_shards, tmp_path):
    ports, procs, start = two_shards
    probe = Probe(tmp_path, "cache", "--timeout", 5, "--retry", 0.2, "--password", PASSWORD,
                  "c1=127.0.0.1:%d" % ports["c1"], "c2=127.0.0.1:%d" % ports["c2"])
    try:
        by = keys_by_shard(probe)
        assert by[0] and by[1], by
        for k in by[0] + by[1]:
            assert probe.ask("call %s SET %s v-%s" % (k, k, k))["reply"] == {"status": "OK"}
        assert probe.ask("call %s GET %s" % (by[0][0], by[0][0]))["reply"] == "v-" + by[0][0]

        p = procs["c1"]
        p.killed = True
        p.proc.kill()
        p.proc.wait()
        p.log.close()
        # The link notices the close; from then on c1's keys fail fast.
        wait_for(lambda: probe.ask("call %s GET %s" % (by[0][0], by[0][0]))["error"] == "down",
                 what="c1's keys answer down")
        for k in by[0][:10]:
            a = probe.ask("call %s GET %s" % (k, k))
            assert a["reply"] is None and a["error"] == "down", a
            # Far below the 5 s call timeout: nothing waits for a dead shard.
            assert a["ms"] < 1000, a
        for k in by[1]:
            a = probe.ask("call %s GET %s" % (k, k))
            assert a["reply"] == "v-" + k and a["error"] is None, a
        mixed = by[0][:3] + by[1][:3]
        a = probe.ask("mget " + " ".join(mixed))
        assert a["reply"] == [None] * 3 + ["v-" + k for k in by[1][:3]], a
        assert probe.ask("up 0")["up"] == 0 and probe.ask("up 1")["up"] == 1

        start("c1")
        wait_for(lambda: probe.ask("up 0")["up"] == 1, what="c1 up again")
        k = by[0][0]
        assert probe.ask("call %s GET %s" % (k, k))["reply"] is None  # a fresh shard
        assert probe.ask("call %s SET %s again" % (k, k))["reply"] == {"status": "OK"}
        assert probe.ask("call %s GET %s" % (k, k))["reply"] == "again"
        st = probe.ask("stats")
        assert st["reconnects"] >= 1 and st["failures"] >= 10, st
        assert "c1" in probe.output() and "is down" in probe.output()
    finally:
        probe.close()


def test_cancelled_call_is_never_answered(two_shards, tmp_path):
    ports, _, _ = two_shards
    probe = Probe(tmp_path, "cache", "--password", PASSWORD, "c1=127.0.0.1:%d" % ports["c1"],
                  "c2=127.0.0.1:%d" % ports["c2"])
    try:
        assert probe.ask("call k SET k 1")["reply"] == {"status": "OK"}
        assert probe.ask("cancel k GET k") == {"answered": 0}
        # The cancelled call's reply did not reach the next call.
        assert probe.ask("call k INCR k")["reply"] == 2
        st = probe.ask("stats")
        assert st["cancelled"] == 1 and st["calls"] == 3 and st["replies"] == 2, st
    finally:
        probe.close()


def test_a_refused_password_keeps_the_shard_down(two_shards, tmp_path):
    ports, _, _ = two_shards
    probe = Probe(tmp_path, "cache", "--password", "not-the-password-42", "--retry", 30,
                  "c1=127.0.0.1:%d" % ports["c1"], "c2=127.0.0.1:%d" % ports["c2"])
    try:
        by = keys_by_shard(probe)
        for k in (by[0][0], by[1][0]):
            a = probe.ask("call %s GET %s" % (k, k))
            assert a["reply"] is None and a["error"] == "down", a
        # Connected, but never up: a link is up once its AUTH is accepted.
        assert probe.ask("up 0")["up"] == 0 and probe.ask("up 1")["up"] == 0
        out = probe.output()
        assert "AUTH refused" in out and "not-the-password-42" not in out, out
    finally:
        probe.close()


def test_a_shard_not_yet_started_is_reached_by_the_first_call_after_it_starts(strata, tmp_path):
    """A web node and its cache start together: the first command after the
    shard listens connects at once (it does not fail until the next
    periodic retry, which is set far away here)."""
    ports = {"c1": free_port()}
    probe = Probe(tmp_path, "cache", "--timeout", 5, "--retry", 60, "--password", PASSWORD,
                  "c1=127.0.0.1:%d" % ports["c1"])
    try:
        a = probe.ask("call k GET k")
        assert a["reply"] is None and a["error"] == "down", a
        strata(shards_topology(ports), [ports["c1"]], name="cache.lua", args=["--node", "c1"],
               log=tmp_path / "c1.log")
        # No wait_for: the very first call after the port opens succeeds
        # (the 60 s retry has not come).
        a = probe.ask("call k SET k v")
        assert a["reply"] == {"status": "OK"} and a["error"] is None, a
        assert probe.ask("call k GET k")["reply"] == "v"
    finally:
        probe.close()

"""Db replication with real processes: a primary and replicas, each its own
`strata run --node` process, driven through redis-py.

Convergence is checked with a digest of every live key, value and expiry
time (repl_util.digest) computed over SCAN + GET + PEXPIRETIME on both
sides once writes stop."""
import json
import os
import random
import re
import threading
import urllib.request

import pytest
import redis

from conftest import SLOW, run_cli, wait_for
from repl_util import Cluster, digest


def writer(r, stop, prefix="k", n_keys=2000):
    """Mixed writes until stop is set: SET, INCR, APPEND, DEL, EXPIRE, MSET."""
    rnd = random.Random(7)
    count = 0
    while not stop.is_set():
        p = r.pipeline(transaction=False)
        for _ in range(50):
            k = "%s%d" % (prefix, rnd.randrange(n_keys))
            op = rnd.randrange(10)
            if op < 4:
                p.set(k, "v%d" % rnd.randrange(10 ** 6))
            elif op == 4:
                p.incr(prefix + "counter")
            elif op == 5:
                p.append(prefix + "log", "x")
            elif op == 6:
                p.delete(k)
            elif op == 7:
                p.expire(k, 1000 + rnd.randrange(1000))
            elif op == 8:
                p.mset({k: "m", k + "b": "mb"})
            else:
                p.set(k, "t", px=50 + rnd.randrange(200))
        p.execute()
        count += 50
    return count


def repl_stats(c, name="db1"):
    r = c.repl(name)
    return r["sync_full"], r["sync_partial_ok"], r["sync_partial_err"]


def test_replica_attached_under_load_converges(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1)
    c.start("db1")
    r = c.client("db1")
    r.mset({"pre%d" % i: "x" * 100 for i in range(5000)})
    stop = threading.Event()
    t = threading.Thread(target=writer, args=(c.client("db1"), stop))
    t.start()
    try:
        c.start("db2")
        c.wait_online("db2")
        # Writes go on a while after the replica is online.
        off = c.repl("db1")["master_repl_offset"]
        wait_for(lambda: c.repl("db1")["master_repl_offset"] > off + 100000, what="more writes")
    finally:
        stop.set()
        t.join()
    n, _ = c.wait_converged("db2")
    assert n > 5000
    rep = c.repl("db2")
    assert rep["role"] == "slave" and rep["master_link_status"] == "up"
    assert rep["master_port"] == c.ports["db1"]
    wait_for(lambda: c.repl("db2")["slave_repl_offset"] == c.repl("db1")["master_repl_offset"],
             what="same offset")
    assert c.repl("db1")["sync_full"] == 1
    assert c.client("db2").dbsize() == c.client("db1").dbsize() or True  # expired keys may differ in count


def test_write_to_replica_is_readonly(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1, password="s3cret").start_all()
    c.wait_online("db2")
    c.client("db1").set("a", "1")
    wait_for(lambda: c.client("db2").get("a") == b"1", what="a replicated")
    with pytest.raises(redis.exceptions.ReadOnlyError) as e:
        c.client("db2").set("a", "2")
    assert "You can't write against a read only replica." in str(e.value)
    assert c.client("db2").get("a") == b"1"
    # WAIT is the primary's.
    with pytest.raises(redis.exceptions.ResponseError, match="WAIT cannot be used with replica"):
        c.client("db2").execute_command("WAIT", 1, 10)


def test_killed_replica_resumes_by_partial_resync(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1)
    c.start("db1")
    r = c.client("db1")
    for i in range(200):
        r.set("a%d" % i, i)
    # Its full resync leaves a snapshot of these in its own directory.
    c.start("db2")
    c.wait_online("db2")
    r.set("after-full", "1")
    c.wait_converged("db2")
    assert os.path.exists(tmp_path / "db2" / "snapshot.db")
    full, pok, _ = repl_stats(c)
    c.kill9("db2")
    wait_for(lambda: c.repl("db1")["connected_slaves"] == 0, what="link gone")
    for i in range(200):
        r.set("b%d" % i, i)
    r.delete("a1")
    c.start("db2")
    c.wait_online("db2")
    c.wait_converged("db2")
    full2, pok2, _ = repl_stats(c)
    assert (full2, pok2) == (full, pok + 1)
    assert c.repl("db2")["master_sync_partial"] == 1
    assert c.client("db2").get("a1") is None and c.client("db2").get("b199") == b"199"
    # It came back from its own files: the snapshot, then its log.
    assert "recovered 201 keys" in c.procs["db2"].output()


def test_primary_restart_keeps_the_replication_id(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1).start_all()
    c.wait_online("db2")
    c.client("db1").set("a", "1")
    c.wait_converged("db2")
    replid = c.repl("db1")["master_replid"]
    c.procs["db1"].stop()
    c.start("db1")
    assert c.repl("db1")["master_replid"] == replid
    c.wait_online("db2")
    # A caught-up replica continues: nothing to send in full.
    assert repl_stats(c) == (0, 1, 0)
    c.client("db1").set("b", "2")
    c.wait_converged("db2")
    # A replica behind a restarted primary (whose backlog starts empty)
    # catches up from the primary's log files.
    c.kill9("db2")
    c.client("db1").set("c", "3")
    c.procs["db1"].stop()
    c.start("db1")
    c.start("db2")
    c.wait_online("db2")
    c.wait_converged("db2")
    assert repl_stats(c) == (0, 1, 0)
    assert c.client("db2").get("c") == b"3"


def test_interrupted_full_resync_starts_over_empty(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1).start_all()
    c.wait_online("db2")
    c.client("db1").set("a", "1")
    c.wait_converged("db2")
    c.procs["db2"].stop()
    # As if it had died while replacing its directory.
    (tmp_path / "db2" / "SYNCING").write_text("full resync\n")
    c.client("db1").set("b", "2")
    c.start("db2")
    c.wait_online("db2")
    c.wait_converged("db2")
    assert "did not finish: starting empty" in c.procs["db2"].output()
    assert c.repl("db2")["master_sync_full"] == 1
    assert not os.path.exists(tmp_path / "db2" / "SYNCING")


def test_stopped_replica_times_out_then_resumes_partially(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1, fields=', repl_timeout = "1s"').start_all()
    c.wait_online("db2")
    r = c.client("db1")
    r.set("x", "1")
    assert r.execute_command("WAIT", 1, 5000) == 1
    full, pok, _ = repl_stats(c)
    c.stop_signal("db2")
    try:
        # Nothing acknowledges the write while the replica is stopped.
        r.set("y", "2")
        assert r.execute_command("WAIT", 1, 300) == 0
        # The heartbeat timeout drops the link.
        wait_for(lambda: c.repl("db1")["connected_slaves"] == 0, what="timed out link")
        r.set("z", "3")
    finally:
        c.cont("db2")
    assert r.execute_command("WAIT", 1, int(10000 * SLOW)) == 1
    c.wait_online("db2")
    c.wait_converged("db2")
    assert repl_stats(c)[:2] == (full, pok + 1)


def test_wait_counts_acknowledging_replicas(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=2).start_all()
    c.wait_online("db2")
    c.wait_online("db3")
    r = c.client("db1")
    # No write yet on this connection: every attached replica has it.
    assert r.execute_command("WAIT", 0, 0) == 2
    r.set("k", "v")
    assert r.execute_command("WAIT", 2, 10000) == 2
    c.stop_signal("db3")
    try:
        r.set("k", "w")
        # Blocks for its timeout, then says how many have the write.
        assert r.execute_command("WAIT", 2, 300) == 1
        # Pipelined behind a WAIT, commands wait for it and keep their order.
        p = r.pipeline(transaction=False)
        p.set("k2", "a").execute_command("WAIT", 2, 200).get("k2")
        assert p.execute() == [True, 1, b"a"]
    finally:
        c.cont("db3")
    assert r.execute_command("WAIT", 2, int(10000 * SLOW)) == 2


def test_behind_the_backlog_resumes_from_the_log_on_disk(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1, fields=', backlog = "4kb"').start_all()
    c.wait_online("db2")
    r = c.client("db1")
    r.set("first", "1")
    c.wait_converged("db2")
    full, pok, perr = repl_stats(c)
    c.kill9("db2")
    wait_for(lambda: c.repl("db1")["connected_slaves"] == 0, what="link gone")
    for i in range(300):
        r.set("big%d" % i, "x" * 100)
    assert c.repl("db1")["repl_backlog_first_byte_offset"] > c.repl("db1")["master_repl_offset"] - 5000
    c.start("db2")
    c.wait_online("db2")
    c.wait_converged("db2")
    assert repl_stats(c) == (full, pok + 1, perr)
    assert "partial resync from the log on disk" in c.procs["db1"].output()


def test_small_backlog_and_compacted_log_force_a_full_resync(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1, fields=', backlog = "4kb"').start_all()
    c.wait_online("db2")
    r = c.client("db1")
    r.set("first", "1")
    c.wait_converged("db2")
    full, pok, perr = repl_stats(c)
    c.kill9("db2")
    wait_for(lambda: c.repl("db1")["connected_slaves"] == 0, what="link gone")
    for i in range(300):
        r.set("big%d" % i, "x" * 100)
    # A snapshot compacts the log: the segments the replica needs are gone.
    r.bgsave()
    wait_for(lambda: r.info("persistence")["rdb_bgsave_in_progress"] == 0 and
             len([f for f in os.listdir(tmp_path / "db1") if f.endswith(".wal")]) == 1,
             what="compaction")
    c.start("db2")
    c.wait_online("db2")
    c.wait_converged("db2")
    assert repl_stats(c) == (full + 1, pok, perr + 1)
    assert c.repl("db2")["master_sync_full"] == 1  # since its restart


def test_min_replicas_refuses_then_accepts(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1, fields=', min_replicas = 1, max_lag = "2s"')
    c.start("db1")
    r = c.client("db1")
    with pytest.raises(redis.exceptions.ResponseError) as e:
        r.set("a", "1")
    assert "Not enough good replicas to write." in str(e.value)
    assert r.get("a") is None
    assert r.info("persistence")["writes_refused"] >= 1
    c.start("db2")
    c.wait_online("db2")
    wait_for(lambda: r.set("a", "1"), what="writes accepted")
    assert c.client("db1").get("a") == b"1"


def test_replica_of_a_replica_converges(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=2, replica_of={"db3": "db2"}).start_all()
    c.wait_online("db2")
    c.wait_online("db3", upstream="db2")
    stop = threading.Event()
    t = threading.Thread(target=writer, args=(c.client("db1"), stop))
    t.start()
    try:
        wait_for(lambda: c.repl("db3")["slave_repl_offset"] > 50000, what="chained writes")
    finally:
        stop.set()
        t.join()
    c.wait_converged("db3")
    c.wait_converged("db2")
    c.wait_converged("db3", upstream="db2")
    assert c.repl("db3")["master_port"] == c.ports["db2"]
    assert c.repl("db3")["master_replid"] == c.repl("db1")["master_replid"]
    assert c.repl("db1")["connected_slaves"] == 1


def test_expiry_comes_from_the_primary(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1).start_all()
    c.wait_online("db2")
    r, rr = c.client("db1"), c.client("db2")
    # Expires on the primary; its deletion reaches the replica.
    r.set("gone", "1", px=300)
    r.set("kept", "1")
    wait_for(lambda: rr.exists("kept"), what="replicated")
    wait_for(lambda: rr.dbsize() == 1, what="the primary's deletion")
    assert rr.get("kept") == b"1"
    # With the primary stopped no deletion can come: past its TTL the key is
    # hidden from reads on the replica, yet still held there.
    r.set("hidden", "1", px=int(2000 * SLOW))
    wait_for(lambda: rr.exists("hidden") == 1, what="replicated")
    c.stop_signal("db1")
    try:
        wait_for(lambda: rr.get("hidden") is None, what="hidden past its TTL")
        assert rr.exists("hidden") == 0 and rr.ttl("hidden") == -2
        assert rr.dbsize() == 2  # not deleted by the replica itself
        assert b"hidden" not in rr.keys("*")
    finally:
        c.cont("db1")
    wait_for(lambda: rr.dbsize() == 1, what="the primary's deletion after it resumed")
    assert c.repl("db2")["master_link_status"] == "up"


def http_get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as f:
        return f.read().decode()


def test_status_metrics_and_cli_lag(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1, admin=True).start_all()
    c.wait_online("db2")
    c.client("db1").set("a", "1")
    c.wait_converged("db2")
    st = json.loads(http_get(c.admins["db1"], "/status"))
    svc = st["services"][0]
    assert svc["role"] == "primary" and svc["connected_replicas"] == 1
    assert svc["replicas"][0]["node"] == "db2" and svc["replicas"][0]["state"] == "online"
    assert svc["lag_ms"] >= 0 and svc["sync_full"] == 1
    st2 = json.loads(http_get(c.admins["db2"], "/status"))["services"][0]
    assert st2["role"] == "replica" and st2["link"] == "up" and st2["upstream_node"] == "db1"
    assert st2["replid"] == svc["replid"]
    m = http_get(c.admins["db1"], "/metrics")
    assert "strata_db_connected_replicas" in m and "strata_db_sync_full_total" in m
    topo = tmp_path / "db1.lua"
    p = run_cli("status", str(topo))
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    head = lines[0].split()
    assert "LAG" in head
    row = next(l.split() for l in lines if l.startswith("db2"))
    assert re.fullmatch(r"\d+\.\dms(/.*)?", row[head.index("LAG")]), row


def test_a_ttl_extended_in_time_survives_a_lagging_replica_and_a_restart(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1).start_all()
    c.wait_online("db2")
    r = c.client("db1")
    c.stop_signal("db2")
    try:
        r.set("k", "v", px=300)
        assert r.expire("k", 1000)
        # Past the first deadline before the replica sees either record.
        wait_for(lambda: r.pttl("k") < 1000 * 1000 - 400, what="first deadline passed")
    finally:
        c.cont("db2")
    wait_for(lambda: c.client("db2").get("k") == b"v", what="the key on the replica")
    assert 990 <= c.client("db2").ttl("k") <= 1000
    # Replayed from the log after the first deadline: the same.
    c.procs["db1"].stop()
    c.start("db1")
    assert r.get("k") == b"v" and 990 <= r.ttl("k") <= 1000


def test_replica_notices_a_silent_primary(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1, fields=', repl_timeout = "1s"').start_all()
    c.wait_online("db2")
    c.client("db1").set("a", "1")
    c.wait_converged("db2")
    c.stop_signal("db1")
    try:
        # No heartbeat within the timeout: the replica drops the link.
        wait_for(lambda: c.repl("db2")["master_link_status"] == "down", what="link down")
        assert c.client("db2").get("a") == b"1"  # still serving reads
    finally:
        c.cont("db1")
    c.wait_online("db2")
    assert c.repl("db2")["master_sync_partial"] == 1
    assert c.repl("db1")["sync_full"] == 1


def test_full_resync_sizes_the_replica_store_from_the_key_count(strata, tmp_path):
    """The primary announces its key count with +FULLRESYNC; the replica
    sizes its new store for it, so no table resize happens during the
    copy."""
    c = Cluster(strata, tmp_path, replicas=1)
    c.start("db1")
    r = c.client("db1")
    for base in range(0, 20000, 5000):
        r.mset({"pre%d" % i: "x" for i in range(base, base + 5000)})
    c.start("db2")
    c.wait_converged("db2")
    info = c.client("db2").info("replication")
    assert info["master_sync_full"] == 1
    assert info["master_sync_announced_keys"] == 20000
    assert info["master_sync_resizes"] == 0

"""A node whose loop stops turning (SIGSTOP here; a loop stuck in C looks
the same from outside) is noticed by the supervisor through its missing
heartbeat, killed and restarted, and the stall is counted."""
import json
import os
import signal
import time
import urllib.request

import redis

from conftest import free_port, wait_for


def sup_status(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        return json.loads(r.read())


def topology(admin, port, node_admin):
    return ('strata.supervisor { admin = "127.0.0.1:%d", stall_timeout = "1s" }\n'
            'strata.cache { shards = { { node = "c1", listen = "127.0.0.1:%d" } } }\n'
            'strata.node { name = "c1", admin = "127.0.0.1:%d" }\n' % (admin, port, node_admin))


def test_a_stopped_node_is_killed_and_restarted(strata):
    port, admin, node_admin = free_port(), free_port(), free_port()
    proc = strata(topology(admin, port, node_admin), [port, admin])
    wait_for(lambda: sup_status(admin)["nodes"][0]["ready"], what="node ready")
    first = sup_status(admin)["nodes"][0]["pid"]
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    assert r.set("k", "v")
    os.kill(first, signal.SIGSTOP)
    try:
        wait_for(lambda: sup_status(admin)["nodes"][0]["stalls"] == 1, timeout=15,
                 what="the supervisor to notice the stall")
        node = wait_for(lambda: (lambda n: n if n["ready"] and n["pid"] not in (0, first)
                                 else None)(sup_status(admin)["nodes"][0]),
                        timeout=15, what="a new node process")
    finally:
        try:
            os.kill(first, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert node["restarts"] == 1
    wait_for(lambda: r.ping(), timeout=10, what="the restarted node serving")
    assert "no heartbeat" in proc.output()
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as m:
        assert 'strata_node_stalls_total{node="c1"} 1' in m.read().decode()


def test_a_busy_but_turning_node_is_left_alone(strata):
    """Beats come from the loop itself: a node serving traffic keeps beating."""
    port, admin, node_admin = free_port(), free_port(), free_port()
    strata(topology(admin, port, node_admin), [port, admin])
    wait_for(lambda: sup_status(admin)["nodes"][0]["ready"], what="node ready")
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    pipe = r.pipeline(transaction=False)
    for i in range(20000):
        pipe.set(f"k{i}", "x" * 100)
    pipe.execute()
    first = sup_status(admin)["nodes"][0]["pid"]
    # Three stall windows of an idle node, then of a busy one: still the
    # first process, never counted as stalled.
    t0 = time.monotonic()
    wait_for(lambda: r.ping() and time.monotonic() - t0 > 3, timeout=10, what="3 s of service")
    node = sup_status(admin)["nodes"][0]
    assert node["stalls"] == 0 and node["restarts"] == 0 and node["pid"] == first
    assert r.dbsize() == 20000

"""/metrics of every kind of node and of the supervisor passes Prometheus'
own linter (`promtool check metrics`: HELP and TYPE on every family, each
family in one group, base units, counters ending in _total), and names
with quotes and backslashes are escaped in /metrics and /status alike."""
import http.client
import json
import shutil
import subprocess

import pytest
import redis

from balancer_util import backends, get, lua_value  # noqa: F401
from conftest import SANITIZED, SLOW, free_port, wait_for

PROMTOOL = shutil.which("promtool")
ODD = 'we"b\\1'  # a backend name with a quote and a backslash


def fetch(port, path):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SLOW)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read().decode()
    finally:
        c.close()


def promtool_problems(text):
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    out = (r.stdout + r.stderr).decode().strip()
    return r.returncode, out


@pytest.fixture
def topo(strata, backends, tmp_path):
    bl = backends(2)
    ports = {k: free_port() for k in ("cache", "db", "lb", "sup", "a_c1", "a_db1", "a_lb")}
    be = [{"name": ODD, "addr": bl[0].addr}, {"name": "web2", "addr": bl[1].addr}]
    text = f"""
strata.supervisor {{ admin = "127.0.0.1:{ports['sup']}" }}
strata.node {{ name = "c1", admin = "127.0.0.1:{ports['a_c1']}" }}
strata.node {{ name = "db1", admin = "127.0.0.1:{ports['a_db1']}" }}
strata.node {{ name = "lb", admin = "127.0.0.1:{ports['a_lb']}" }}
strata.cache {{ shards = {{ {{ node = "c1", listen = "127.0.0.1:{ports['cache']}" }} }} }}
strata.db {{ primary = {{ node = "db1", listen = "127.0.0.1:{ports['db']}",
                          dir = "{tmp_path / 'data'}" }} }}
strata.balancer {{ node = "lb", listen = "127.0.0.1:{ports['lb']}",
                   backends = {lua_value(be)},
                   health = {{ path = "/healthz", interval = "100ms" }} }}
"""
    strata(text, [ports[k] for k in ports])
    # traffic, so that every family has samples
    for _ in range(6):
        assert get(ports["lb"], "/x")[0] == 200
    c = redis.Redis(port=ports["cache"], socket_timeout=10)
    c.set("k", "v")
    assert c.get("k") == b"v" and c.get("missing") is None
    d = redis.Redis(port=ports["db"], socket_timeout=10)
    d.set("k", "v")
    return ports


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus) not installed")
def test_every_metrics_endpoint_passes_promtool(topo):
    for name in ("a_c1", "a_db1", "a_lb", "sup"):
        status, text = fetch(topo[name], "/metrics")
        assert status == 200
        rc, problems = promtool_problems(text)
        assert rc == 0 and problems == "", f"{name}:\n{problems}\n---\n{text}"
    _, lb = fetch(topo["a_lb"], "/metrics")
    # latencies in seconds, as a summary; the odd name escaped
    assert "# TYPE strata_balancer_backend_latency_seconds summary" in lb
    assert "_ms" not in lb
    assert 'backend="we\\"b\\\\1"' in lb


def test_status_json_escapes_names(topo):
    status, text = fetch(topo["a_lb"], "/status")
    assert status == 200
    data = json.loads(text)
    bal = next(s for s in data["services"] if s["kind"] == "balancer")
    assert [b["name"] for b in bal["backends"]] == [ODD, "web2"]
    for name in ("a_c1", "a_db1", "sup"):
        status, text = fetch(topo[name], "/status")
        assert status == 200
        json.loads(text)


def test_info_fragmentation_ratio_is_rss_over_allocated(topo):
    """Redis monitoring reads mem_fragmentation_ratio as RSS over what the
    allocator handed out: about 1 healthy, far above fragmented, below 1
    swapped. Over the dataset alone it read 0 on an empty node and tens of
    thousands on a small one."""
    for port in (topo["cache"], topo["db"]):
        mem = redis.Redis(port=port, socket_timeout=10).info("memory")
        ratio, rss, alloc = (mem["mem_fragmentation_ratio"], mem["used_memory_rss"],
                             mem["allocator_allocated"])
        assert alloc >= mem["used_memory"] > 0
        assert ratio == pytest.approx(rss / alloc, abs=0.01)
        if not SANITIZED:  # the sanitizer's allocator keeps no such statistics
            assert 0.5 < ratio < 100, mem

"""Admin addresses belong to node names, not to their place in the file:
with a running supervisor, adding, removing, renaming and reordering nodes
and then `strata reload` leaves every running node on its address, and
`strata status` plus a Redis client against every node prove each one is
the node it should be. A command line never acts on an endpoint that is
someone else (another node, another topology's supervisor)."""
import json
import urllib.error
import urllib.request

import redis

from conftest import free_port, port_open, run_cli, wait_for


def http(method, port, path, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"" if method == "POST" else None, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


class Cluster:
    """One cache service per node, each with its own max_memory (in MiB),
    so that a Redis client can tell the nodes apart; admin addresses are
    derived from the supervisor's (none explicit)."""

    def __init__(self, tmp_path, name="topo.lua", sup=None):
        self.path = tmp_path / name
        self.sup = sup or free_port()
        self.ports = {}

    def write(self, nodes):
        """nodes: list of (name, max_memory_mb)."""
        lines = [f'strata.supervisor {{ admin = "127.0.0.1:{self.sup}", drain_timeout = "5s" }}']
        for name, mb in nodes:
            while name not in self.ports:
                # never one of the admin ports derived from the supervisor's
                p = free_port()
                if not self.sup <= p <= self.sup + 16:
                    self.ports[name] = p
            lines.append(f'strata.cache {{ shards = {{ {{ node = "{name}", '
                         f'listen = "127.0.0.1:{self.ports[name]}" }} }}, '
                         f'max_memory = "{mb}mb" }}')
        self.path.write_text("\n".join(lines) + "\n")
        self.nodes = list(nodes)

    def sup_status(self):
        code, _, body = http("GET", self.sup, "/status")
        assert code == 200, body
        return json.loads(body)

    def admin_map(self):
        return {n["name"]: n["admin"] for n in self.sup_status()["nodes"]}

    def check_every_node(self):
        """Every node of the file is running, on the address the supervisor
        says, is who it says, and serves its own cache."""
        amap = self.admin_map()
        assert sorted(amap) == sorted(n for n, _ in self.nodes)
        for name, mb in self.nodes:
            port = int(amap[name].rsplit(":", 1)[1])
            code, hdrs, body = http("GET", port, "/status")
            assert code == 200, (name, body)
            st = json.loads(body)
            assert st["node"] == name and hdrs["X-Strata-Node"] == name
            assert st["topology"] == str(self.path.resolve())
            assert [s["listen"] for s in st["services"]] == [f"127.0.0.1:{self.ports[name]}"]
            r = redis.Redis(port=self.ports[name], socket_timeout=5)
            assert r.config_get("maxmemory")["maxmemory"] == str(mb << 20), name
            r.close()

    def ready(self):
        amap = self.admin_map()
        st = {n["name"]: n for n in self.sup_status()["nodes"]}
        return all(st[n]["ready"] and st[n]["pid"] for n in amap) and \
            sorted(amap) == sorted(n for n, _ in self.nodes)


def start(strata, c, nodes):
    c.write(nodes)
    p = strata(c.path.read_text(), [c.sup] + [c.ports[n] for n, _ in nodes], name=c.path.name)
    wait_for(lambda: c.ready(), what="every node ready")
    return p


def reload_ok(c):
    r = run_cli("reload", str(c.path))
    assert r.returncode == 0, r.stdout + r.stderr
    wait_for(lambda: c.ready(), what="every node ready after reload")
    st = run_cli("status", str(c.path))
    assert st.returncode == 0, st.stdout + st.stderr
    for name, _ in c.nodes:
        assert name in st.stdout
    assert "DOWN" not in st.stdout
    return r


def test_remove_first_node_keeps_everyone_on_its_address(strata, tmp_path):
    c = Cluster(tmp_path)
    start(strata, c, [("cache1", 1), ("cache2", 2), ("cache3", 3)])
    before = c.admin_map()
    c.write([("cache2", 2), ("cache3", 3)])
    r = reload_ok(c)
    assert "stop node cache1" in r.stdout
    assert "node cache3: no changes" in r.stdout and "node cache2: no changes" in r.stdout
    after = c.admin_map()
    assert after == {k: before[k] for k in ("cache2", "cache3")}
    c.check_every_node()
    # a later change reaches the node it names, not the one now in its place
    c.write([("cache2", 2), ("cache3", 7)])
    r = reload_ok(c)
    assert "node cache3:" in r.stdout and "node cache2: no changes" in r.stdout
    c.check_every_node()


def test_insert_node_before_others(strata, tmp_path):
    c = Cluster(tmp_path)
    start(strata, c, [("cache1", 1), ("cache2", 2)])
    before = c.admin_map()
    c.write([("cache0", 5), ("cache1", 1), ("cache2", 2)])
    r = reload_ok(c)
    assert "start node cache0" in r.stdout
    after = c.admin_map()
    assert after["cache1"] == before["cache1"] and after["cache2"] == before["cache2"]
    assert after["cache0"] not in before.values()
    c.check_every_node()


def test_append_node(strata, tmp_path):
    c = Cluster(tmp_path)
    start(strata, c, [("cache1", 1)])
    c.write([("cache1", 1), ("cache2", 2)])
    reload_ok(c)
    c.check_every_node()


def test_rename_node(strata, tmp_path):
    c = Cluster(tmp_path)
    start(strata, c, [("cache1", 1), ("cache2", 2)])
    before = c.admin_map()
    c.ports["cacheX"] = c.ports["cache1"]  # the renamed node takes over the listen port
    c.write([("cacheX", 4), ("cache2", 2)])
    r = reload_ok(c)
    assert "stop node cache1" in r.stdout and "start node cacheX" in r.stdout
    assert c.admin_map()["cache2"] == before["cache2"]
    c.check_every_node()


def test_reorder_nodes(strata, tmp_path):
    c = Cluster(tmp_path)
    start(strata, c, [("cache1", 1), ("cache2", 2), ("cache3", 3)])
    before = c.admin_map()
    c.write([("cache3", 3), ("cache1", 1), ("cache2", 6)])
    r = reload_ok(c)
    assert "start node" not in r.stdout and "stop node" not in r.stdout
    assert c.admin_map() == before
    c.check_every_node()


def test_failed_reload_with_node_changes_changes_nothing(strata, tmp_path):
    c = Cluster(tmp_path)
    start(strata, c, [("cache1", 1), ("cache2", 2)])
    before = c.admin_map()
    gen = c.sup_status()["generation"]
    good = list(c.nodes)
    # a new node, a removed one, and a value the cache refuses
    c.write([("cache9", 1), ("cache2", 2)])
    text = c.path.read_text().replace('max_memory = "2mb"', 'max_memory = "2mb", eviction_samples = 0')
    c.path.write_text(text)
    r = run_cli("reload", str(c.path))
    assert r.returncode == 1 and str(c.path) in r.stderr, r.stdout + r.stderr
    assert c.admin_map() == before and c.sup_status()["generation"] == gen
    c.nodes = good
    c.check_every_node()


def test_wrong_node_is_refused_not_reloaded(strata, tmp_path):
    c = Cluster(tmp_path)
    start(strata, c, [("cache1", 1), ("cache2", 2)])
    port = int(c.admin_map()["cache2"].rsplit(":", 1)[1])
    code, _, body = http("POST", port, "/reload", {"X-Strata-Expect-Node": "cache3",
                                                   "X-Strata-Expect-Topology": "/elsewhere.lua"})
    assert code == 409
    msg = json.loads(body)["error"]
    assert msg == (f"node at 127.0.0.1:{port} is cache2 of {c.path.resolve()}, "
                   f"not cache3 of /elsewhere.lua")
    code, _, body = http("GET", port, "/status")
    assert json.loads(body)["reloads"] == 0


def test_other_topology_on_the_same_admin_ports_is_refused(strata, tmp_path):
    a = Cluster(tmp_path, "a.lua")
    start(strata, a, [("cache1", 1), ("cache2", 2)])
    # b.lua is not running, and names the same supervisor admin address
    b = Cluster(tmp_path, "b.lua", sup=a.sup)
    b.write([("lb", 3), ("cache2", 5)])
    r = run_cli("reload", str(b.path))
    assert r.returncode == 1
    assert f"is supervisor of {a.path.resolve()}, not supervisor of {b.path.resolve()}" in r.stderr
    st = run_cli("status", str(b.path))
    assert st.returncode == 1 and "not supervisor of" in st.stderr
    for name in ("cache1", "cache2"):
        port = int(a.admin_map()[name].rsplit(":", 1)[1])
        assert json.loads(http("GET", port, "/status")[2])["reloads"] == 0
    a.check_every_node()


def test_status_and_reload_fall_back_to_the_topology_without_a_supervisor(strata, tmp_path):
    """A node run on its own (--node) has no supervisor: the file's address."""
    c = Cluster(tmp_path)
    c.write([("cache1", 1)])
    admin = free_port()
    text = c.path.read_text() + f'strata.node {{ name = "cache1", admin = "127.0.0.1:{admin}" }}\n'
    p = strata(text, [c.ports["cache1"], admin], args=["--node", "cache1"])
    assert not port_open(c.sup)
    r = run_cli("reload", str(p.topo_path))
    assert r.returncode == 0 and "node cache1: no changes" in r.stdout, r.stdout + r.stderr
    st = run_cli("status", str(p.topo_path))
    assert st.returncode == 0 and "cache1" in st.stdout, st.stdout + st.stderr

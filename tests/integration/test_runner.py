"""The supervisor, the admin endpoints and hot reload, with real processes:
nodes are separate processes, killed with kill -9, reloaded under traffic."""
import json
import os
import signal
import subprocess
import urllib.error
import urllib.request

import pytest
import redis

from conftest import free_port, port_open, run_cli, wait_for


def http(method, port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class Topo:
    """A cache topology with N shards, a supervisor admin and node admins."""

    def __init__(self, tmp_path, shards=2, eviction="lru", extra="", watch=False):
        self.path = tmp_path / "topo.lua"
        self.sup = free_port()
        self.ports = [free_port() for _ in range(4)]
        self.admins = [free_port() for _ in range(4)]
        self.write(shards, eviction, extra, watch)

    def text(self, shards, eviction, extra="", watch=False):
        lines = [f'strata.supervisor {{ admin = "127.0.0.1:{self.sup}", watch = {str(watch).lower()},'
                 f' drain_timeout = "5s" }}',
                 "strata.cache {",
                 "  shards = {"]
        for i in range(shards):
            lines.append(f'    {{ node = "c{i + 1}", listen = "127.0.0.1:{self.ports[i]}" }},')
        lines += ["  },", '  max_memory = "16mb",', f'  eviction = "{eviction}",', "}"]
        for i in range(shards):
            lines.append(f'strata.node {{ name = "c{i + 1}", admin = "127.0.0.1:{self.admins[i]}" }}')
        return "\n".join(lines) + "\n" + extra

    def write(self, shards, eviction="lru", extra="", watch=False):
        self.path.write_text(self.text(shards, eviction, extra, watch))

    def status(self, i):
        code, body = http("GET", self.admins[i], "/status")
        assert code == 200, body
        return json.loads(body)


def start(strata_factory, topo, shards):
    # Every node's admin endpoint too: a node opens it after its services.
    return strata_factory(topo.path.read_text(),
                          ports=topo.ports[:shards] + topo.admins[:shards] + [topo.sup],
                          name="topo.lua")


@pytest.fixture
def topo(tmp_path):
    return Topo(tmp_path)


def node_pid(topo, i):
    return topo.status(i)["pid"]


def test_supervisor_starts_every_node_as_its_own_process(strata, topo):
    proc = start(strata, topo, 2)
    pids = {node_pid(topo, 0), node_pid(topo, 1)}
    assert len(pids) == 2 and proc.proc.pid not in pids
    for p in topo.ports[:2]:
        assert redis.Redis(port=p).ping()
    code, body = http("GET", topo.sup, "/status")
    nodes = json.loads(body)["nodes"]
    assert [n["name"] for n in nodes] == ["c1", "c2"]
    assert all(n["ready"] for n in nodes)
    out = proc.output()
    assert "all 2 nodes ready" in out


def test_kill_9_node_is_restarted_and_serves_again(strata, topo):
    proc = start(strata, topo, 2)
    r = redis.Redis(port=topo.ports[0])
    r.set("k", "v")
    old = node_pid(topo, 0)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: port_open(topo.admins[0]) and node_pid(topo, 0) != old, what="restart")
    wait_for(lambda: redis.Redis(port=topo.ports[0]).ping(), what="cache serving again")
    # The other node was not touched.
    assert redis.Redis(port=topo.ports[1]).ping()
    code, body = http("GET", topo.sup, "/status")
    assert json.loads(body)["nodes"][0]["restarts"] == 1
    code, metrics = http("GET", topo.sup, "/metrics")
    assert 'strata_node_restarts_total{node="c1"} 1' in metrics
    assert "exited (signal 9" in proc.output()


def test_sigterm_stops_every_node_cleanly(strata, topo):
    proc = start(strata, topo, 2)
    pids = [node_pid(topo, 0), node_pid(topo, 1)]
    assert proc.stop() == 0
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert not port_open(topo.ports[0])


def test_node_that_cannot_start_fails_the_run(tmp_path):
    busy = free_port()
    import socket
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", busy))
    s.listen()
    try:
        topo = tmp_path / "t.lua"
        topo.write_text(f'strata.cache {{ shards = {{ {{ node = "c1", listen = "127.0.0.1:{busy}" }} }} }}\n')
        r = run_cli("run", str(topo), timeout=30)
        assert r.returncode == 1
        assert "cannot start cache" in r.stderr and "Address already in use" in r.stderr
        assert "node c1 failed to start" in r.stderr
    finally:
        s.close()


def test_admin_endpoints(strata, topo):
    topo.write(1)
    start(strata, topo, 1)
    st = topo.status(0)
    assert st["node"] == "c1" and st["generation"] == 1
    assert st["services"][0]["kind"] == "cache"
    assert st["services"][0]["listen"] == f"127.0.0.1:{topo.ports[0]}"
    code, metrics = http("GET", topo.admins[0], "/metrics")
    assert code == 200
    assert 'strata_up{node="c1"} 1' in metrics
    assert "# TYPE strata_reloads_total counter" in metrics
    assert http("GET", topo.admins[0], "/nope")[0] == 404
    assert http("POST", topo.admins[0], "/status")[0] == 405
    assert http("GET", topo.admins[0], "/healthz") == (200, "ok\n")


def test_status_command(strata, topo):
    start(strata, topo, 2)
    r = run_cli("status", str(topo.path))
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows[0][:3] == ["NODE", "SERVICE", "LISTEN"]
    assert [row[:3] for row in rows[1:]] == [["c1", "cache", f"127.0.0.1:{topo.ports[0]}"],
                                             ["c2", "cache", f"127.0.0.1:{topo.ports[1]}"]]
    r = run_cli("status", str(topo.path), "--watch", "--count", "2", "--interval", "10ms")
    assert r.returncode == 0
    assert r.stdout.count("NODE") == 2


def test_status_reports_a_down_node(tmp_path):
    topo = Topo(tmp_path)
    r = run_cli("status", str(topo.path))
    assert r.returncode == 1
    assert "DOWN" in r.stdout


def policy_of(port):
    return redis.Redis(port=port).config_get("maxmemory-policy")["maxmemory-policy"]


def test_reload_applies_a_changed_policy(strata, topo):
    start(strata, topo, 2)
    topo.write(2, eviction="lfu")
    r = run_cli("reload", str(topo.path))
    assert r.returncode == 0, r.stderr
    assert "node c1: generation 2" in r.stdout
    assert policy_of(topo.ports[0]) == "allkeys-lfu"
    assert policy_of(topo.ports[1]) == "allkeys-lfu"
    assert topo.status(0)["generation"] == 2


def test_reload_dry_run_changes_nothing(strata, topo):
    start(strata, topo, 2)
    topo.write(3, eviction="fifo")
    r = run_cli("reload", "--dry-run", str(topo.path))
    assert r.returncode == 0, r.stderr
    assert "would start node c3" in r.stdout
    assert "allkeys-fifo" in r.stdout
    assert policy_of(topo.ports[0]) == "allkeys-lru"
    assert topo.status(0)["generation"] == 1
    assert not port_open(topo.ports[2])


@pytest.mark.parametrize("mistake,line,msg", [
    ("syntax", 99, "unexpected symbol near '='"),
    ("missing-module", 8, "not found"),  # the eviction field's line
    ("validate", 8, "failed validate()"),
])
def test_bad_reload_changes_nothing_and_reports_file_line(strata, topo, tmp_path, mistake, line, msg):
    start(strata, topo, 2)
    if mistake == "syntax":
        text = topo.text(2, "lfu") + "\n" * (98 - topo.text(2, "lfu").count("\n")) + "strata.cache { shards = = 1 }\n"
        topo.path.write_text(text)
    elif mistake == "missing-module":
        topo.write(2, eviction="policies/none.lua")
    else:
        (tmp_path / "v.lua").write_text(
            "local M = {}\nfunction M.choose(c) return 1 end\n"
            "function M.validate() error('sample size too small') end\nreturn M\n")
        topo.write(2, eviction="v.lua")
    r = run_cli("reload", str(topo.path))
    assert r.returncode == 1
    first = r.stderr.strip().splitlines()[0]
    assert first.startswith(f"{topo.path}:{line}: "), first
    assert msg in first
    if mistake == "validate":
        assert f"{tmp_path / 'v.lua'}:3: sample size too small" in first
    assert policy_of(topo.ports[0]) == "allkeys-lru"
    assert topo.status(0)["generation"] == 1


def test_reload_adds_and_removes_cache_nodes(strata, topo):
    start(strata, topo, 2)
    topo.write(3)
    r = run_cli("reload", str(topo.path))
    assert r.returncode == 0, r.stderr
    assert "start node c3" in r.stdout
    wait_for(lambda: redis.Redis(port=topo.ports[2]).ping(), what="new shard serving")
    topo.write(1)
    r = run_cli("reload", str(topo.path))
    assert r.returncode == 0, r.stderr
    assert "stop node c2" in r.stdout and "stop node c3" in r.stdout
    wait_for(lambda: not port_open(topo.ports[1]) and not port_open(topo.ports[2]),
             what="removed shards stopped")
    assert redis.Redis(port=topo.ports[0]).ping()
    # A stopped node leaves the supervisor's list once its process has exited.
    wait_for(lambda: [n["name"] for n in json.loads(http("GET", topo.sup, "/status")[1])["nodes"]]
             == ["c1"], what="removed nodes gone from the supervisor")


def test_sighup_reloads(strata, topo):
    proc = start(strata, topo, 2)
    topo.write(2, eviction="random")
    proc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: policy_of(topo.ports[0]) == "allkeys-random"
             and policy_of(topo.ports[1]) == "allkeys-random", what="SIGHUP reload")


def test_file_watcher_reloads(strata, tmp_path):
    topo = Topo(tmp_path, watch=True)
    proc = start(strata, topo, 2)
    topo.write(2, eviction="volatile-ttl", watch=True)
    try:
        wait_for(lambda: policy_of(topo.ports[0]) == "volatile-ttl", what="watched reload")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{proc.output()}")


def test_one_process_mode_hosts_every_node(strata, topo):
    proc = strata(topo.path.read_text(), ports=topo.ports[:2], args=["--one-process"])
    assert node_pid(topo, 0) == node_pid(topo, 1) == proc.proc.pid
    assert redis.Redis(port=topo.ports[1]).ping()


def test_node_mode_runs_one_node(strata, topo):
    proc = strata(topo.path.read_text(), ports=topo.ports[:1], args=["--node", "c2"], wait=False)
    wait_for(lambda: port_open(topo.ports[1]), what="node c2")
    assert not port_open(topo.ports[0])
    assert node_pid(topo, 1) == proc.proc.pid


def test_reload_picks_up_an_edited_policy_file(strata, topo, tmp_path):
    pol = tmp_path / "evict.lua"
    pol.write_text("local M = {}\nfunction M.choose(c) return 1 end\nreturn M\n")
    topo.write(1, eviction="evict.lua")
    start(strata, topo, 1)
    r = run_cli("reload", str(topo.path))
    assert r.returncode == 0 and "node c1: no changes" in r.stdout, r.stdout + r.stderr
    # Same topology, edited policy: a change, validated before it is applied.
    pol.write_text("local M = {}\nfunction M.choose(c) return #c end\n"
                   "function M.validate() error('refused on purpose') end\nreturn M\n")
    r = run_cli("reload", str(topo.path))
    assert r.returncode == 1 and "refused on purpose" in r.stderr
    assert topo.status(0)["generation"] == 1
    pol.write_text("local M = {}\nfunction M.choose(c) return #c end\nreturn M\n")
    r = run_cli("reload", str(topo.path))
    assert r.returncode == 0, r.stderr
    assert "node c1: generation 2" in r.stdout
    assert topo.status(0)["generation"] == 2


def test_log_dir_gets_one_file_per_node(strata, topo, tmp_path):
    logs = tmp_path / "logs"
    topo.path.write_text(topo.text(2, "lru").replace(
        'drain_timeout = "5s" }', f'drain_timeout = "5s", log_dir = "{logs}" }}'))
    start(strata, topo, 2)
    wait_for(lambda: (logs / "c1.log").exists() and (logs / "c2.log").exists(), what="node logs")
    wait_for(lambda: "[c1] node c1: cache listening" in (logs / "c1.log").read_text(),
             what="c1's log lines")
    assert "[c2]" not in (logs / "c1.log").read_text()
    assert "[c2] node c2: cache listening" in (logs / "c2.log").read_text()


def test_node_logs_are_reopened_on_sigusr1(strata, topo, tmp_path):
    """logrotate moves the file away and signals the supervisor: each node
    writes to a new file of the same name from then on."""
    logs = tmp_path / "logs"
    topo.path.write_text(topo.text(1, "lru").replace(
        'drain_timeout = "5s" }', f'drain_timeout = "5s", log_dir = "{logs}" }}'))
    proc = start(strata, topo, 1)
    wait_for(lambda: "[c1] node c1: cache listening" in (logs / "c1.log").read_text(),
             what="c1's log lines")
    os.rename(logs / "c1.log", logs / "c1.log.1")
    proc.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: (logs / "c1.log").exists() and
             "SIGUSR1: reopening log files" in (logs / "c1.log").read_text(),
             what="a new c1.log")
    assert "SIGUSR1" not in (logs / "c1.log.1").read_text()


def test_ctrl_c_in_a_terminal_drains_each_node_once(topo):
    """A terminal's Ctrl-C signals the whole process group: only the
    supervisor may get it, and it stops each node with one SIGTERM."""
    from conftest import STRATA_BIN, SLOW
    p = subprocess.Popen([STRATA_BIN, "run", str(topo.path)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: port_open(topo.ports[0]) and port_open(topo.ports[1]), what="nodes up")
        os.killpg(p.pid, signal.SIGINT)
        out, _ = p.communicate(timeout=30 * SLOW)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 0, out
    assert out.count("SIGTERM: draining") == 2, out
    assert "node c1: cache on 127.0.0.1:%d at stop: keys=0" % topo.ports[0] in out
    assert "second stop signal" not in out


RELOAD_KEYS = {"ok", "node", "topology", "dry_run", "generation", "reload_ms", "changes", "error"}


def test_reload_answers_in_one_shape_from_nodes_and_the_supervisor(strata, topo):
    start(strata, topo, 2)
    code, body = http("POST", topo.admins[0], "/reload?dry_run=1")
    node = json.loads(body)
    assert code == 200 and set(node) == RELOAD_KEYS
    assert node["ok"] is True and node["node"] == "c1" and node["error"] is None
    assert node["dry_run"] is True and node["changes"] == [] and node["generation"] == 1
    topo.write(3)
    code, body = http("POST", topo.sup, "/reload")
    sup = json.loads(body)
    assert code == 200 and set(sup) == RELOAD_KEYS
    assert sup["ok"] is True and sup["node"] == "supervisor" and sup["error"] is None
    assert sup["dry_run"] is False and sup["generation"] == 2
    assert len(sup["changes"]) == 1 and sup["changes"][0].startswith("start node c3 (cache ")
    wait_for(lambda: port_open(topo.ports[2]), what="c3 started")
    # A refused reload: 422, same keys, the error as file:line: message.
    topo.path.write_text(topo.text(3, "lru") + "strata.cache { shards = = 1 }\n")
    for port, name in ((topo.admins[0], "c1"), (topo.sup, "supervisor")):
        code, body = http("POST", port, "/reload")
        doc = json.loads(body)
        assert code == 422 and set(doc) == RELOAD_KEYS, body
        assert doc["ok"] is False and doc["node"] == name and doc["changes"] == []
        assert doc["error"].startswith(f"{topo.path}:")


def test_admin_router_methods_and_keep_alive(strata, topo):
    import http.client
    topo.write(1)
    start(strata, topo, 1)
    for port in (topo.admins[0], topo.sup):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        # Several requests over one connection.
        for path in ("/status", "/metrics", "/healthz"):
            conn.request("GET", path)
            r = conn.getresponse()
            assert r.status == 200 and r.read()
        conn.request("GET", "/reload")
        r = conn.getresponse()
        assert r.status == 405 and r.getheader("Allow") == "POST"
        assert json.loads(r.read()) == {"error": "method not allowed"}
        conn.request("HEAD", "/status")
        r = conn.getresponse()
        assert r.status == 200 and int(r.getheader("Content-Length")) > 0 and r.read() == b""
        conn.request("GET", "/nope")
        r = conn.getresponse()
        assert r.status == 404 and json.loads(r.read()) == {"error": "not found"}
        conn.close()


def test_admin_limits_answer_and_close(strata, topo):
    import socket
    topo.write(1)
    start(strata, topo, 1)
    with socket.create_connection(("127.0.0.1", topo.admins[0]), timeout=10) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 431 ")
    with socket.create_connection(("127.0.0.1", topo.admins[0]), timeout=10) as s:
        s.sendall(b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 413 ")
    assert topo.status(0)["generation"] == 1

"""Balancer: how each policy distributes requests, Lua policies deciding,
and the fallback when a Lua policy fails."""
import http.client
import json
import os
import socket
import threading

import pytest

from balancer_util import backends, balancer_topology, get, lb_status  # noqa: F401
from conftest import ROOT, free_port, port_open, run_cli, wait_for

EXAMPLES = os.path.join(ROOT, "examples", "policies")


def start_lb(strata, bl, admin=False, **opts):
    port = free_port()
    aport = free_port() if admin else None
    proc = strata(balancer_topology(port, bl, admin=aport, **opts),
                  [port] + ([aport] if aport else []))
    return port, aport, proc


def spread(port, n, path="/x", headers=None):
    """n requests over one keep-alive connection: {backend: count}."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    counts = {}
    for i in range(n):
        c.request("GET", path.format(i=i), headers=headers or {})
        r = c.getresponse()
        assert r.status == 200
        r.read()
        name = r.getheader("X-Backend")
        counts[name] = counts.get(name, 0) + 1
    c.close()
    return counts


def test_round_robin_even(strata, backends):
    bl = backends(3)
    port, _, _ = start_lb(strata, bl, policy="round_robin")
    assert spread(port, 300) == {"web1": 100, "web2": 100, "web3": 100}


def test_round_robin_weighted(strata, backends):
    b1, b2 = backends(2)
    port, _, _ = start_lb(strata, [{"name": "web1", "addr": b1.addr, "weight": 3},
                                   {"name": "web2", "addr": b2.addr, "weight": 1}])
    assert spread(port, 400) == {"web1": 300, "web2": 100}


def test_first_fills_in_order(strata, backends):
    bl = backends(3)
    port, _, _ = start_lb(strata, bl, policy="first")
    assert spread(port, 50) == {"web1": 50}


@pytest.mark.parametrize("policy", ["least_conn", "p2c"])
def test_busy_backend_avoided(strata, backends, policy):
    bl = backends(2)
    port, admin, _ = start_lb(strata, bl, admin=True, policy=policy)
    # a request that stays in flight until we hang up
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
        slow.sendall(b"GET /sleep?s=60 HTTP/1.1\r\nHost: x\r\n\r\n")
        st = wait_for(lambda: [b for b in lb_status(admin)["backends"] if b["active"] == 1],
                      what="the slow request in flight")
        busy = st[0]["name"]
        counts = spread(port, 20)
        assert busy not in counts and sum(counts.values()) == 20


def chash_map(port, keys):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    out = {}
    for k in keys:
        c.request("GET", f"/k/{k}")
        r = c.getresponse()
        r.read()
        out[k] = r.getheader("X-Backend")
    c.close()
    return out


def test_chash_stable_when_backend_added(strata, backends):
    bl = backends(4)
    keys = list(range(400))
    port, _, p = start_lb(strata, bl[:3], policy="chash", hash_on="path")
    before = chash_map(port, keys)
    assert chash_map(port, keys) == before  # a key keeps its backend
    assert set(before.values()) == {"web1", "web2", "web3"}
    p.stop()
    port, _, _ = start_lb(strata, bl, policy="chash", hash_on="path")
    after = chash_map(port, keys)
    moved = [k for k in keys if after[k] != before[k]]
    # only keys taken over by the new backend move, about 1/4 of them
    assert all(after[k] == "web4" for k in moved)
    assert len(keys) // 4 * 0.5 < len(moved) < len(keys) // 4 * 1.5


def test_chash_on_header_and_cookie(strata, backends):
    bl = backends(3)
    port, _, _ = start_lb(strata, bl, policy="chash", hash_on="header:X-User")
    for user in ("alice", "bob", "carol", "dave"):
        counts = spread(port, 10, headers={"X-User": user})
        assert len(counts) == 1, user  # one user, one backend
    port2, _, _ = start_lb(strata, bl, policy="chash", hash_on="cookie:sid")
    seen = set()
    for sid in range(20):
        counts = spread(port2, 5, headers={"Cookie": f"a=1; sid=s{sid}; b=2"})
        assert len(counts) == 1
        seen |= set(counts)
    assert len(seen) > 1  # different sessions do spread


def test_lua_canary_policy(strata, backends, tmp_path):
    b1, b2, b3 = backends(3)
    bl = [{"name": "web1", "addr": b1.addr}, {"name": "web2", "addr": b2.addr},
          {"name": "canary1", "addr": b3.addr}]
    port, _, _ = start_lb(strata, bl, policy=os.path.join(EXAMPLES, "canary.lua"))
    assert spread(port, 20, headers={"X-Canary": "1"}) == {"web3": 20}
    assert spread(port, 20, headers={"Cookie": "x=2; canary=1"}) == {"web3": 20}
    assert spread(port, 40) == {"web1": 20, "web2": 20}


def test_lua_policy_sees_request(strata, backends, tmp_path):
    bl = backends(3)
    (tmp_path / "route.lua").write_text('''
local M = {}
function M.pick(req, backends)
  local want = "web1"
  if req.method == "POST" then want = "web3"
  elseif req.path:sub(1, 5) == "/api/" and req.client == "127.0.0.1" then want = "web2"
  elseif req.headers["x-route"] then want = req.headers["x-route"] end
  for _, b in ipairs(backends) do
    assert(b.healthy == true and b.active >= 0 and b.weight == 1 and b.ewma_ms >= 0)
    if b.name == want then return b end
  end
end
return M
''')
    port, admin, _ = start_lb(strata, bl, admin=True, policy="route.lua")
    assert spread(port, 10, path="/api/{i}") == {"web2": 10}
    assert spread(port, 10, path="/web/{i}") == {"web1": 10}
    assert spread(port, 10, headers={"X-Route": "web3"}) == {"web3": 10}
    st, hdrs, _ = get(port, "/echo", method="POST", body=b"abc")
    assert st == 200 and hdrs["x-backend"] == "web3"
    assert lb_status(admin)["lua_fallbacks"] == 0


def test_lua_round_robin_with_state(strata, backends):
    bl = backends(3)
    port, _, _ = start_lb(strata, bl, policy=os.path.join(EXAMPLES, "round_robin.lua"))
    assert spread(port, 90) == {"web1": 30, "web2": 30, "web3": 30}


def test_lua_pick_integral_float_is_an_index(strata, backends, tmp_path):
    # 2.0 is what arithmetic gives (4 / 2): the same index as the integer 2
    bl = backends(2)
    (tmp_path / "float.lua").write_text(
        "local M = {}\nfunction M.pick(req, backends) return #backends / 1 end\nreturn M\n")
    port, admin, _ = start_lb(strata, bl, admin=True, policy="float.lua")
    assert spread(port, 10) == {"web2": 10}
    assert lb_status(admin)["lua_fallbacks"] == 0


@pytest.mark.parametrize("body", [
    'function M.pick(req, backends) error("boom") end',
    'function M.pick(req, backends) return nil end',
    'function M.pick(req, backends) return 42 end',
    'function M.pick(req, backends) return {} end',
    'function M.pick(req, backends) return 1.5 end',
    'function M.pick(req, backends) while true do end end',
])
def test_broken_lua_policy_falls_back(strata, backends, tmp_path, body):
    bl = backends(2)
    (tmp_path / "broken.lua").write_text("local M = {}\n" + body + "\nreturn M\n")
    port, admin, proc = start_lb(strata, bl, admin=True, policy="broken.lua",
                                 fallback="round_robin")
    assert spread(port, 20) == {"web1": 10, "web2": 10}
    assert lb_status(admin)["lua_fallbacks"] == 20
    out = proc.output()
    assert "broken.lua" in out and "used round_robin instead" in out
    # rate limited: far fewer log lines than failures
    assert out.count("used round_robin instead") <= 3


def test_reload_swaps_policy_under_load(strata, backends, tmp_path):
    bl = backends(3)
    port, admin, sup = free_port(), free_port(), free_port()
    (tmp_path / "only3.lua").write_text('''
local M = {}
function M.pick(req, backends)
  for _, b in ipairs(backends) do if b.name == "web3" then return b end end
end
return M
''')
    proc = strata(balancer_topology(port, bl, admin=admin, sup=sup), [port, admin, sup])
    assert spread(port, 30) == {"web1": 10, "web2": 10, "web3": 10}
    stop = threading.Event()
    failures, done = [], [0]

    def load():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while not stop.is_set():
            c.request("GET", "/x")
            r = c.getresponse()
            r.read()
            if r.status != 200:
                failures.append(r.status)
            done[0] += 1
        c.close()
    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: done[0] > 50, what="load running")
        topo = tmp_path / "topo.lua"
        topo.write_text(balancer_topology(port, bl, admin=admin, sup=sup, policy="only3.lua"))
        r = run_cli("reload", str(topo))
        assert r.returncode == 0, r.stderr
        assert "policy" in r.stdout and "only3.lua" in r.stdout
        at = done[0]
        wait_for(lambda: done[0] > at + 50, what="load after the reload")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert spread(port, 20) == {"web3": 20}
    assert "reloaded: policy" in proc.output()
    # a broken policy is refused and the running one stays
    (tmp_path / "bad.lua").write_text("local M = {}\nfunction M.pick( return M\n")
    topo.write_text(balancer_topology(port, bl, admin=admin, sup=sup, policy="bad.lua"))
    r = run_cli("reload", str(topo))
    assert r.returncode == 1 and "bad.lua" in r.stderr
    assert spread(port, 10) == {"web3": 10}


def test_reload_adds_and_removes_backends(strata, backends, tmp_path):
    bl = backends(3)
    port, admin, sup = free_port(), free_port(), free_port()
    strata(balancer_topology(port, bl[:2], admin=admin, sup=sup), [port, admin, sup])
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/sleep?s=1")  # in flight across the reload
    topo = tmp_path / "topo.lua"
    topo.write_text(balancer_topology(port, bl, admin=admin, sup=sup))
    r = run_cli("reload", str(topo))
    assert r.returncode == 0, r.stderr
    assert "backends 2 -> 3" in r.stdout
    assert c.getresponse().read() == b"slept\n"
    c.close()
    assert spread(port, 30) == {"web1": 10, "web2": 10, "web3": 10}
    names = [b["name"] for b in lb_status(admin)["backends"]]
    assert names == ["web1", "web2", "web3"]
    topo.write_text(balancer_topology(port, [bl[0], bl[2]], admin=admin, sup=sup))
    r = run_cli("reload", str(topo))
    assert r.returncode == 0, r.stderr
    assert spread(port, 20) == {"web1": 10, "web3": 10}


def test_backend_set_reloads_under_load(strata, backends, tmp_path):
    bl = backends(3)
    port, admin, sup = free_port(), free_port(), free_port()
    strata(balancer_topology(port, bl, admin=admin, sup=sup), [port, admin, sup])
    topo = tmp_path / "topo.lua"
    stop = threading.Event()
    failures, done = [], [0]

    def load(method):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while not stop.is_set():
            c.request(method, "/echo" if method == "POST" else "/x",
                      body=b"abc" if method == "POST" else None)
            r = c.getresponse()
            r.read()
            if r.status != 200:
                failures.append(r.status)
            done[0] += 1
        c.close()
    threads = [threading.Thread(target=load, args=(m,)) for m in ("GET", "GET", "POST")]
    for t in threads:
        t.start()
    try:
        for sets in ([0, 1], [1, 2], [0, 1, 2], [2], [0, 2], [0, 1, 2]):
            topo.write_text(balancer_topology(port, [bl[i] for i in sets], admin=admin, sup=sup))
            r = run_cli("reload", str(topo))
            assert r.returncode == 0, r.stderr
            at = done[0]
            wait_for(lambda: done[0] > at + 30, what="load after a reload")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert [b["name"] for b in lb_status(admin)["backends"]] == ["web1", "web2", "web3"]


COUNTING_POLICY = '''
local M = { state = { n = 0 } }
-- Counts the picks in M.state; "/count-is/N" goes to web2 exactly when this
-- is the Nth pick, everything else to web1: the route shows the count.
function M.pick(req, backends)
  M.state.n = M.state.n + 1
  local want = req.path == "/count-is/" .. M.state.n and "web2" or "web1"
  for _, b in ipairs(backends) do if b.name == want then return b end end
end
'''


def routed(port, path):
    st, hdrs, _ = get(port, path)
    assert st == 200
    return hdrs["x-backend"]


def test_reload_migrates_policy_state(strata, backends, tmp_path):
    bl = backends(3)
    port, admin, sup = free_port(), free_port(), free_port()
    policy = tmp_path / "count.lua"
    policy.write_text(COUNTING_POLICY + "return M\n")
    topo_text = balancer_topology(port, bl[:2], admin=admin, sup=sup, policy="count.lua")
    proc = strata(topo_text, [port, admin, sup])
    topo = tmp_path / "topo.lua"
    assert spread(port, 10) == {"web1": 10}
    assert routed(port, "/count-is/11") == "web2"

    # a new version with migrate: the count carries over
    policy.write_text(COUNTING_POLICY + "function M.migrate(old) return old end\nreturn M\n")
    r = run_cli("reload", str(topo))
    assert r.returncode == 0, r.stderr
    assert "count.lua (reloaded) (state migrated)" in r.stdout
    assert routed(port, "/count-is/12") == "web2"

    # also when the backend set changes (a new generation); a dry run
    # first migrates a copy, and the running count is untouched
    topo.write_text(balancer_topology(port, bl, admin=admin, sup=sup, policy="count.lua"))
    r = run_cli("reload", "--dry-run", str(topo))
    assert r.returncode == 0 and "state migrated" in r.stdout, r.stderr
    assert routed(port, "/count-is/13") == "web2"
    r = run_cli("reload", str(topo))
    assert r.returncode == 0, r.stderr
    assert "backends 2 -> 3" in r.stdout and "state migrated" in r.stdout
    assert routed(port, "/count-is/14") == "web2"

    # without migrate the new version starts from its own state
    policy.write_text(COUNTING_POLICY + "-- v3: no migrate\nreturn M\n")
    r = run_cli("reload", str(topo))
    assert r.returncode == 0, r.stderr
    assert "state migrated" not in r.stdout
    assert routed(port, "/count-is/1") == "web2"

    # a migrate that fails fails the reload, with file:line; nothing changes
    policy.write_text(COUNTING_POLICY + "function M.migrate(old)\n"
                      "  error('state version ' .. tostring(old.version) .. ' unknown')\n"
                      "end\nreturn M\n")
    line = COUNTING_POLICY.count("\n") + 2
    r = run_cli("reload", str(topo))
    assert r.returncode == 1
    assert f"count.lua:{line}: state version nil unknown" in r.stderr
    assert routed(port, "/count-is/2") == "web2"
    assert "count.lua:%d:" % line in lb_status_error(admin)
    assert "reloaded: policy" in proc.output()


def lb_status_error(admin):
    """The node's last reload error, from its /status."""
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    try:
        c.request("GET", "/status")
        return json.loads(c.getresponse().read())["last_reload_error"]
    finally:
        c.close()


def test_reload_keeps_a_down_backend_down(strata, backends, tmp_path):
    """A backend set reload carries health state over: a backend marked down
    stays down in the new generation until its checks say otherwise."""
    bl = backends(3)
    health = {"path": "/healthz", "interval": "100ms", "timeout": "500ms", "rise": 50,
              "fall": 2}
    port, admin, sup = free_port(), free_port(), free_port()
    strata(balancer_topology(port, bl[:2], admin=admin, sup=sup, health=health),
           [port, admin, sup])
    bl[1].get("/healthz?fail=1")
    wait_for(lambda: not [b for b in lb_status(admin)["backends"]
                          if b["name"] == "web2"][0]["healthy"], what="web2 down")
    topo = tmp_path / "topo.lua"
    topo.write_text(balancer_topology(port, bl, admin=admin, sup=sup, health=health))
    r = run_cli("reload", str(topo))
    assert r.returncode == 0, r.stderr
    st = {b["name"]: b["healthy"] for b in lb_status(admin)["backends"]}
    assert st == {"web1": True, "web2": False, "web3": True}
    assert "web2" not in spread(port, 20)


def test_dry_run_lists_only_real_changes(strata, backends, tmp_path):
    bl = backends(2)
    port, admin, sup = free_port(), free_port(), free_port()
    strata(balancer_topology(port, bl, admin=admin, sup=sup), [port, admin, sup])
    topo = tmp_path / "topo.lua"
    topo.write_text(balancer_topology(port, bl, admin=admin, sup=sup, retries=3))
    r = run_cli("reload", "--dry-run", str(topo))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    # the one change, worded as one; the unchanged policy is not listed
    assert lines == [f"would change node lb: balancer 127.0.0.1:{port}: retries 2 -> 3"], lines
    r = run_cli("reload", str(topo))
    assert r.returncode == 0, r.stderr
    assert f"node lb: balancer 127.0.0.1:{port}: retries 2 -> 3" in r.stdout
    assert "policy" not in r.stdout and "would" not in r.stdout


def test_reload_moves_the_listen_address(strata, backends, tmp_path):
    bl = backends(2)
    port, new_port, admin, sup = free_port(), free_port(), free_port(), free_port()
    strata(balancer_topology(port, bl, admin=admin, sup=sup), [port, admin, sup])
    assert get(port, "/x")[0] == 200
    topo = tmp_path / "topo.lua"
    topo.write_text(balancer_topology(new_port, bl, admin=admin, sup=sup))
    r = run_cli("reload", str(topo))
    assert r.returncode == 0, r.stderr
    assert f"move balancer from 127.0.0.1:{port} to 127.0.0.1:{new_port}" in r.stdout
    wait_for(lambda: get(new_port, "/x")[0] == 200, what="the balancer on its new address")
    wait_for(lambda: not port_open(port), what="the old address closed")
    assert lb_status(admin)["listen"] == f"127.0.0.1:{new_port}"

"""The policy host: every entry into a policy has a budget, a memory limit
and a restricted library; a policy that tries to get around them fails its
own call (or its load), never the node, which keeps serving throughout."""
import http.client
import os
import threading

import pytest

from balancer_util import backends, balancer_topology, lb_status  # noqa: F401
from cache_util import start_cache
from conftest import free_port, run_cli, wait_for


def healthz(admin):
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    try:
        c.request("GET", "/healthz")
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


class Watch:
    """Polls the node's /healthz and the balancer from a thread: every poll
    must be answered (200) while a reload is running."""

    def __init__(self, admin, port):
        self.admin, self.port = admin, port
        self.stop = threading.Event()
        self.answers, self.failures = 0, []
        self.thread = threading.Thread(target=self.run)

    def run(self):
        while not self.stop.is_set():
            try:
                assert healthz(self.admin) == 200
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                c.request("GET", "/x")
                r = c.getresponse()
                r.read()
                c.close()
                assert r.status == 200, r.status
                self.answers += 1
            except Exception as e:  # noqa: BLE001 -- any failure counts
                self.failures.append(repr(e))

    def __enter__(self):
        self.thread.start()
        wait_for(lambda: self.answers > 3 or self.failures, what="polls answered")
        return self

    def __exit__(self, *exc):
        at = self.answers
        wait_for(lambda: self.answers > at + 3 or self.failures, what="polls after")
        self.stop.set()
        self.thread.join()
        assert self.failures == [], self.failures


def start_lb(strata, tmp_path, bl, **opts):
    port, admin, sup = free_port(), free_port(), free_port()
    text = balancer_topology(port, bl, admin=admin, sup=sup, **opts)
    proc = strata(text, [port, admin, sup])
    return port, admin, sup, proc


def reload(tmp_path, port, bl, admin, sup, **opts):
    topo = tmp_path / "topo.lua"
    topo.write_text(balancer_topology(port, bl, admin=admin, sup=sup, **opts))
    return run_cli("reload", str(topo))


def served(port, n=20):
    """n requests, each on its own connection: all answered 200."""
    for _ in range(n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/x")
        r = c.getresponse()
        r.read()
        c.close()
        assert r.status == 200


@pytest.mark.parametrize("where,body,line", [
    ("top-level chunk", "local M = {}\nfunction M.pick(r, b) return b[1] end\n"
                        "while true do end\nreturn M\n", 3),
    ("validate", "local M = {}\nfunction M.pick(r, b) return b[1] end\n"
                 "function M.validate()\n  while true do end\nend\nreturn M\n", 4),
    ("caught", "local M = {}\nfunction M.pick(r, b) return b[1] end\nfunction M.validate()\n"
               "  while true do pcall(function() while true do end end) end\nend\nreturn M\n", 4),
])
def test_reload_refuses_policy_that_never_returns(strata, backends, tmp_path, where, body, line):
    bl = backends(2)
    port, admin, sup, proc = start_lb(strata, tmp_path, bl)
    policy = tmp_path / "spin.lua"
    policy.write_text(body)
    with Watch(admin, port):
        r = reload(tmp_path, port, bl, admin, sup, policy="spin.lua")
    assert r.returncode == 1
    assert f"{policy}:{line}: " in r.stderr, r.stderr
    assert "budget" in r.stderr or "time limit" in r.stderr, r.stderr
    assert healthz(admin) == 200
    served(port)
    assert lb_status(admin)["policy"] == "round_robin"


@pytest.mark.parametrize("call", ["os.execute('touch {marker}')",
                                  "io.open('{marker}', 'w'):write('x')",
                                  "io.popen('touch {marker}')",
                                  "require('os').execute('touch {marker}')"])
def test_policy_with_process_or_file_access_is_refused(strata, backends, tmp_path, call):
    marker = tmp_path / "marker"
    policy = tmp_path / "p.lua"
    policy.write_text("local M = {}\nfunction M.pick(r, b) return b[1] end\n" +
                      call.format(marker=marker) + "\nreturn M\n")
    bl = backends(1)
    topo = tmp_path / "check.lua"
    topo.write_text(balancer_topology(free_port(), bl, policy="p.lua"))
    r = run_cli("check", str(topo))
    assert r.returncode == 1
    assert r.stderr.startswith(f"{policy}:3: "), r.stderr
    assert not marker.exists()
    port, admin, sup, _ = start_lb(strata, tmp_path, bl)
    r = reload(tmp_path, port, bl, admin, sup, policy="p.lua")
    assert r.returncode == 1 and f"{policy}:3: " in r.stderr, r.stderr
    assert not marker.exists()
    served(port, 5)


def test_validate_false_keeps_its_reason(strata, backends, tmp_path):
    policy = tmp_path / "p.lua"
    policy.write_text("local M = {}\nfunction M.pick(r, b) return b[1] end\n"
                      "function M.validate()\n  return false, 'needs at least 3 backends'\nend\n"
                      "return M\n")
    bl = backends(2)
    topo = tmp_path / "check.lua"
    topo.write_text(balancer_topology(free_port(), bl, policy="p.lua"))
    r = run_cli("check", str(topo))
    assert r.returncode == 1
    assert f"{policy}:3: validate() returned false: needs at least 3 backends" in r.stderr, \
        r.stderr
    port, admin, sup, _ = start_lb(strata, tmp_path, bl)
    r = reload(tmp_path, port, bl, admin, sup, policy="p.lua")
    assert r.returncode == 1 and "needs at least 3 backends" in r.stderr, r.stderr


BYPASSES = {
    "coroutine made at load": ("local co = coroutine.wrap(function() while true do end end)\n"
                               "function M.pick(r, b) co() return b[1] end", "budget"),
    "coroutine caught in a loop": ("local co = coroutine.create(function() while true do end end)\n"
                                   "function M.pick(r, b)\n"
                                   "  while true do coroutine.resume(co) end\nend", "budget"),
    "debug.sethook": ("function M.pick(r, b)\n  debug.sethook()\n  while true do end\nend",
                      "debug"),
    "backtracking pattern": ("function M.pick(r, b)\n"
                             "  return ('a'):rep(40):find(('a*'):rep(12) .. 'b')\nend",
                             "budget"),
    "collectgarbage stop": ("function M.pick(r, b)\n  collectgarbage('stop')\n"
                            "  local t = {} for i = 1, 1e7 do t[i] = {} end\nend",
                            "collectgarbage"),
    "unbounded allocation": ("local keep = {}\nfunction M.pick(r, b)\n"
                             "  keep[#keep + 1] = ('x'):rep(16 * 1024 * 1024)\n"
                             "  return b[1]\nend", "memory limit"),
}


@pytest.mark.parametrize("name", sorted(BYPASSES))
def test_budget_bypass_in_pick_is_stopped(strata, backends, tmp_path, name):
    body, msg = BYPASSES[name]
    policy = tmp_path / "evil.lua"
    policy.write_text("local M = {}\n" + body + "\nreturn M\n")
    bl = backends(2)
    port, admin, _, proc = start_lb(strata, tmp_path, bl, policy="evil.lua",
                                    fallback="round_robin")
    served(port, 20)  # each answered by the fallback (or the policy, until it fails)
    assert healthz(admin) == 200
    assert lb_status(admin)["lua_fallbacks"] > 0
    msgs = [msg, "time limit"] if msg == "budget" else [msg]
    log = wait_for(lambda: any(m in proc.output() for m in msgs) and proc.output(),
                   what="the failure logged")
    assert f"{policy}:" in log and "used round_robin instead" in log


def test_backtracking_pattern_in_eviction_choose(strata, tmp_path):
    bad = tmp_path / "bad.lua"
    bad.write_text("local M = {}\nfunction M.choose(c)\n"
                   "  return ('a'):rep(40):find(('a*'):rep(12) .. 'b')\nend\nreturn M\n")
    _, proc, r = start_cache(strata, max_memory=1024 * 1024, eviction=str(bad),
                             eviction_fallback="fifo")
    p = r.pipeline(transaction=False)
    for i in range(8000):
        p.set(f"k{i}", b"v" * 200)
    assert p.execute() == [True] * 8000, "writes go on with the fallback"
    assert r.info()["eviction_policy_errors"] > 0
    log = wait_for(lambda: ("budget" in proc.output() or "time limit" in proc.output())
                   and proc.output(), what="logged")
    assert f"{bad}:3: " in log


def test_bytecode_is_refused_everywhere(strata, tmp_path):
    blob = b"\x1bLua\x54\x00\x19\x93\r\n\x1a\n" + b"\x04\x08\x08" + b"\xff" * 64
    (tmp_path / "bin.lua").write_bytes(blob)
    # as a policy file, at check
    topo = tmp_path / "t1.lua"
    topo.write_text(balancer_topology(free_port(), [{"name": "w", "addr": "127.0.0.1:1"}],
                                      policy="bin.lua"))
    r = run_cli("check", str(topo))
    assert r.returncode == 1 and "binary chunk" in r.stderr, r.stderr
    # through load() in the topology script itself, and in a policy
    for i, where in enumerate(["topology", "policy"]):
        src = ("local blob = string.char(27) .. 'Lua' .. string.char(84, 0, 25, 147) .. "
               "('\\255'):rep(64)\nassert(load(blob, 'x', 'b'))()\n")
        if where == "topology":
            topo = tmp_path / f"t{i + 2}.lua"
            topo.write_text(src)
        else:
            (tmp_path / "ld.lua").write_text("local M = {}\nfunction M.pick(r, b) end\n" + src +
                                             "return M\n")
            topo = tmp_path / f"t{i + 2}.lua"
            topo.write_text(balancer_topology(free_port(), [{"name": "w",
                                                             "addr": "127.0.0.1:1"}],
                                              policy="ld.lua"))
        r = run_cli("check", str(topo))
        assert r.returncode == 1 and "binary chunk" in r.stderr, (where, r.stderr)
    # and in a running balancer's pick: its call fails, the node goes on
    (tmp_path / "ldpick.lua").write_text(
        "local M = {}\nfunction M.pick(r, b)\n  return assert(load(string.char(27) .. 'Lua', "
        "'x', 'b'))()\nend\nreturn M\n")
    port, admin = free_port(), free_port()
    be = {"name": "w", "addr": f"127.0.0.1:{free_port()}"}
    proc = strata(balancer_topology(port, [be], admin=admin, policy="ldpick.lua"),
                  [port, admin], name="t9.lua")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/x")
    r = c.getresponse()
    r.read()
    assert r.status in (502, 503)  # the backend is not there; the pick fell back
    assert healthz(admin) == 200
    wait_for(lambda: "binary chunk" in proc.output(), what="the failure logged")
    assert os.path.exists(tmp_path / "bin.lua")

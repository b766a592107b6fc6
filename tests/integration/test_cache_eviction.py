"""Cache node: the memory limit and every eviction policy, built-in and Lua,
with writes continuing while used_memory stays under max_memory."""
import os

import pytest
import redis

from cache_util import start_cache
from conftest import ROOT, free_port, run_cli, wait_for

LIMIT = 1024 * 1024
VALUE = b"v" * 200

BUILTIN = ["allkeys-lru", "volatile-lru", "allkeys-fifo", "volatile-fifo", "allkeys-lfu",
           "volatile-lfu", "allkeys-random", "volatile-random", "allkeys-ttl", "volatile-ttl"]


def fill(r, n, ttl=None, prefix="k", value=VALUE, check_every=500, limit=LIMIT):
    """Writes n keys in pipelined batches; after each batch used_memory must
    be at or under the limit. Returns the replies."""
    replies = []
    for start in range(0, n, check_every):
        p = r.pipeline(transaction=False)
        for i in range(start, min(n, start + check_every)):
            p.set(f"{prefix}{i}", value, ex=ttl)
        replies += p.execute(raise_on_error=False)
        used = r.info("memory")["used_memory"]
        assert not limit or used <= limit, f"used_memory {used} over max_memory {limit}"
    return replies


@pytest.mark.parametrize("policy", BUILTIN)
def test_policy_keeps_memory_under_limit(strata, policy):
    _, _, r = start_cache(strata, max_memory=LIMIT, eviction=policy)
    assert r.info("memory")["maxmemory_policy"] == policy
    volatile = policy.startswith("volatile")
    replies = fill(r, 12000, ttl=3600 if volatile else None)
    assert replies == [True] * 12000, "every write accepted while evicting"
    info = r.info()
    assert info["evicted_keys"] > 0
    assert info["used_memory"] <= LIMIT
    assert 0 < r.dbsize() < 12000
    assert r.get("k11999") == VALUE or policy.endswith("random"), "the newest key survives"


def test_lru_evicts_least_recently_used(strata):
    _, _, r = start_cache(strata, max_memory=LIMIT, eviction="lru")
    fill(r, 2000)
    for _ in range(3):  # keep k0..k99 hot
        p = r.pipeline(transaction=False)
        for i in range(100):
            p.get(f"k{i}")
        p.execute()
    fill(r, 3000, prefix="n")
    assert r.exists(*[f"k{i}" for i in range(100)]) == 100, "recently read keys stay"
    present = [r.exists(f"k{i}") for i in range(100, 2000)]
    gone = present.index(1) if 1 in present else len(present)
    assert gone >= 500, "cold keys went first"
    assert all(present[gone:]), "in exact least-recently-used order"


def test_fifo_evicts_oldest_insert(strata):
    _, _, r = start_cache(strata, max_memory=LIMIT, eviction="fifo")
    fill(r, 2000)
    for i in range(100):
        r.get(f"k{i}")  # reads do not matter to FIFO
    fill(r, 3000, prefix="n")
    present = [r.exists(f"k{i}") for i in range(2000)]
    gone = present.index(1) if 1 in present else len(present)
    assert gone >= 500 and all(present[gone:]), "evicted in insertion order"
    assert r.get("n2999") == VALUE


def test_volatile_spares_keys_without_ttl(strata):
    _, _, r = start_cache(strata, max_memory=LIMIT, eviction="volatile-lru")
    fill(r, 500, prefix="keep")
    fill(r, 8000, ttl=3600, prefix="t")
    assert r.exists(*[f"keep{i}" for i in range(500)]) == 500
    assert r.info()["evicted_keys"] > 0


def test_noeviction_refuses_writes(strata):
    _, _, r = start_cache(strata, max_memory=LIMIT, eviction="noeviction")
    replies = []
    for start in range(0, 8000, 500):
        p = r.pipeline(transaction=False)
        for i in range(start, start + 500):
            p.set(f"k{i}", VALUE)
        replies += p.execute(raise_on_error=False)
    errors = [x for x in replies if isinstance(x, Exception)]
    assert errors and all("command not allowed when used memory > 'maxmemory'" in str(e)
                          for e in errors)
    assert r.get("k0") == VALUE, "reads go on"
    assert r.delete("k0") == 1, "deletes go on"
    with pytest.raises(redis.ResponseError, match="^OOM command not allowed"):
        for i in range(100):
            r.set(f"more{i}", VALUE)
    assert r.info()["evicted_keys"] == 0


def test_config_set_switches_policy_and_limit(strata):
    _, _, r = start_cache(strata, max_memory=0, eviction="noeviction")
    fill(r, 6000, limit=0)
    assert r.info("memory")["used_memory"] > LIMIT
    assert r.config_set("maxmemory-policy", "allkeys-fifo") is True
    assert r.config_set("maxmemory", LIMIT) is True
    assert r.info("memory")["used_memory"] <= LIMIT, "lowering the limit evicts at once"
    assert r.exists("k0") == 0 and r.get("k5999") == VALUE
    for policy in BUILTIN + ["noeviction"]:
        assert r.config_set("maxmemory-policy", policy) is True
        assert r.config_get("maxmemory-policy")["maxmemory-policy"] == policy


def write_policy(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(body)
    return str(path)


def test_lua_policy_decides_victims(strata):
    policy = os.path.join(ROOT, "examples", "policies", "size_aware_evict.lua")
    _, _, r = start_cache(strata, max_memory=LIMIT, eviction=policy, eviction_samples=20)
    assert r.info("memory")["maxmemory_policy"] == policy
    # Small keys first (LRU would evict them first), then large values.
    fill(r, 200, prefix="small", value=b"s" * 10)
    fill(r, 1500, prefix="big", value=b"b" * 2000)
    assert r.info()["evicted_keys"] > 0
    assert r.exists(*[f"small{i}" for i in range(200)]) == 200, "the policy kept small values"
    assert r.info()["eviction_policy_errors"] == 0


def test_broken_lua_policy_falls_back_and_logs_once(strata, tmp_path):
    bad = write_policy(tmp_path, "bad.lua",
                       "local M = {}\nfunction M.choose(c) error('boom') end\nreturn M\n")
    _, proc, r = start_cache(strata, max_memory=LIMIT, eviction=bad, eviction_fallback="fifo")
    replies = fill(r, 8000)
    assert replies == [True] * 8000, "writes go on with the fallback"
    info = r.info()
    assert info["evicted_keys"] > 100 and info["eviction_policy_errors"] == info["evicted_keys"]
    assert r.exists("k0") == 0, "the FIFO fallback evicted the oldest key"
    log = wait_for(lambda: "boom" in proc.output() and proc.output(), what="error logged")
    assert log.count("boom") == 1, "logged once, not per eviction"
    assert "bad.lua:2" in log


def test_lua_policy_bad_return_falls_back(strata, tmp_path):
    bad = write_policy(tmp_path, "wrong.lua",
                       "return { choose = function(c) return 999 end }\n")
    _, proc, r = start_cache(strata, max_memory=LIMIT, eviction=bad)
    assert fill(r, 6000) == [True] * 6000
    assert r.info()["eviction_policy_errors"] > 0
    wait_for(lambda: proc.output().count("not one of the") == 1, what="one log line")


def test_lua_policy_switch_at_run_time(strata, tmp_path):
    # Evicts only keys named "victim*" when one is among the candidates.
    pick = write_policy(tmp_path, "pick.lua", """
local M = {}
function M.choose(cands)
  for i, c in ipairs(cands) do
    if c.key:sub(1, 6) == "victim" then return c end
  end
  return 1
end
return M
""")
    # The topology names the policy; CONFIG SET switches away and back.
    _, _, r = start_cache(strata, max_memory=LIMIT, eviction=pick)
    assert r.config_set("maxmemory-policy", "allkeys-lru") is True
    assert r.config_set("maxmemory-policy", pick) is True
    assert r.config_get("maxmemory-policy")["maxmemory-policy"] == pick
    fill(r, 100, prefix="keep", value=b"k" * 100)
    fill(r, 6000, prefix="victim")
    assert r.exists(*[f"keep{i}" for i in range(100)]) == 100
    # A file the topology does not name is never loaded (docs/security.md).
    with pytest.raises(redis.ResponseError, match="can't set protected config"):
        r.config_set("maxmemory-policy", str(tmp_path / "missing.lua"))
    # The named file broken on disk: refused, the running policy kept.
    with open(pick, "w") as f:
        f.write("return {")
    with pytest.raises(redis.ResponseError, match="pick.lua"):
        r.config_set("maxmemory-policy", pick)
    assert r.config_get("maxmemory-policy")["maxmemory-policy"] == pick, "old policy kept"
    assert r.config_set("maxmemory-policy", "allkeys-lru") is True


def test_reload_swaps_in_a_lua_policy(strata, tmp_path):
    import signal
    from cache_util import cache_topology
    pick = write_policy(tmp_path, "pick.lua", """
local M = {}
function M.choose(cands)
  for _, c in ipairs(cands) do
    if c.key:sub(1, 6) == "victim" then return c end
  end
  return 1
end
return M
""")
    port, proc, r = start_cache(strata, max_memory=LIMIT, eviction="lru")
    fill(r, 100, prefix="keep", value=b"k" * 100)
    topo = tmp_path / "topo.lua"
    topo.write_text(cache_topology(port, max_memory=LIMIT, eviction="pick.lua",
                                   eviction_samples=20))
    proc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: r.config_get("maxmemory-policy")["maxmemory-policy"] == pick,
             what="reloaded policy")
    assert r.dbsize() == 100, "a reload keeps the data"
    fill(r, 6000, prefix="victim")
    assert r.exists(*[f"keep{i}" for i in range(100)]) == 100, "the new policy decides"


COUNTING_EVICT = """
local M = { state = { n = 0 } }
function M.choose(cands)
  M.state.n = M.state.n + 1
  %s
end
"""


def test_reload_migrates_eviction_policy_state(strata, tmp_path):
    from cache_util import cache_topology
    # v1 counts its choices in M.state; v2 carries the count over and shows
    # it by failing its first choice with "count N" (logged once)
    policy = tmp_path / "evict.lua"
    policy.write_text(COUNTING_EVICT % "return 1" + "return M\n")
    port, admin, sup = free_port(), free_port(), free_port()
    proc = strata(cache_topology(port, max_memory=LIMIT, eviction="evict.lua") +
                  'strata.supervisor { admin = "127.0.0.1:%d" }\n' % sup +
                  'strata.node { name = "c1", admin = "127.0.0.1:%d" }\n' % admin,
                  [port, admin, sup])
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30)
    topo = tmp_path / "topo.lua"
    fill(r, 8000)
    evicted = r.info()["evicted_keys"]
    assert evicted > 0 and r.info()["eviction_policy_errors"] == 0
    policy.write_text(COUNTING_EVICT % 'error("count " .. M.state.n)' +
                      "function M.migrate(old) return old end\nreturn M\n")
    r_ = run_cli("reload", str(topo))
    assert r_.returncode == 0, r_.stderr
    assert r.info()["evicted_keys"] == evicted
    fill(r, 100, prefix="more")
    assert r.info()["eviction_policy_errors"] > 0
    log = wait_for(lambda: "count " in proc.output() and proc.output(), what="error logged")
    assert f"evict.lua:5: count {evicted + 1};" in log, log[-2000:]

    # a migrate that fails fails the reload with file:line; nothing changes
    policy.write_text(COUNTING_EVICT % "return 1" +
                      "function M.migrate(old)\n  error('no migration from ' .. old.n)\nend\n"
                      "return M\n")
    r_ = run_cli("reload", str(topo))
    assert r_.returncode == 1
    assert "evict.lua:8: no migration from" in r_.stderr
    assert r.info()["eviction_policy_errors"] > 0, "the failing v2 still runs"

    # without migrate: a fresh count (the first choice fails with "count 1")
    policy.write_text(COUNTING_EVICT % 'error("fresh count " .. M.state.n)' + "return M\n")
    r_ = run_cli("reload", str(topo))
    assert r_.returncode == 0, r_.stderr
    fill(r, 100, prefix="again")
    wait_for(lambda: "evict.lua:5: fresh count 1;" in proc.output(), what="fresh count logged")

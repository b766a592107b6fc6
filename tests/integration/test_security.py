"""What a client of a cache or db node cannot do: run code or reach the file
system through CONFIG SET, use test hooks the topology did not turn on, get
in without the password, or make the node allocate memory or descriptors
beyond the limits docs/security.md states."""
import os
import shutil
import socket
import subprocess

import pytest
import redis

from cache_util import Raw, cache_topology
from conftest import SLOW, STRATA_BIN, free_port, port_open, run_cli, wait_for
from test_db import Db, db_topology

PROTECTED = "can't set protected config"
DEBUG_OFF = ("DEBUG command not allowed. If the enable-debug-command option is set to \"local\", "
             "you can run it from a local connection, otherwise you need to set this option in "
             "the configuration file, and then restart the server.")


def rss_bytes(pid):
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def node_pid(proc):
    """The pid of the node serving: `strata run` of one node is the node."""
    return proc.proc.pid


# ---- 1. CONFIG SET cannot load code ------------------------------------------

EVIL = """local f = io and io.open({0!r}, "w") if f then f:write("ran") f:close() end
local M = {{ api = 1 }}
function M.choose(c) return 1 end
return M
"""

GOOD = """local M = { api = 1 }
function M.choose(c) return 1 end
return M
"""


def test_config_set_policy_refuses_a_file_the_topology_does_not_name(strata, tmp_path):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.lua"
    evil.write_text(EVIL.format(str(marker)))
    port = free_port()
    strata(cache_topology(port, max_memory="1mb"), [port])
    r = redis.Redis(port=port, socket_timeout=10 * SLOW)
    for value in (str(evil), "evil.lua", "/etc/passwd", "../x.lua"):
        with pytest.raises(redis.ResponseError) as e:
            r.config_set("maxmemory-policy", value)
        assert PROTECTED in str(e.value), str(e.value)
        assert "(possibly related to argument 'maxmemory-policy')" in str(e.value)
    assert not marker.exists()
    assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    # The short names the topology accepts work here too.
    for short, full in (("lfu", "allkeys-lfu"), ("lru", "allkeys-lru"), ("fifo", "allkeys-fifo"),
                        ("random", "allkeys-random"), ("ttl", "volatile-ttl")):
        assert r.config_set("maxmemory-policy", short)
        assert r.config_get("maxmemory-policy") == {"maxmemory-policy": full}
    with pytest.raises(redis.ResponseError, match="must be one of the following"):
        r.config_set("maxmemory-policy", "oldest")


def test_config_set_policy_accepts_the_topology_policy_only(strata, tmp_path):
    (tmp_path / "mine.lua").write_text(GOOD)
    other = tmp_path / "sub"
    other.mkdir()
    marker = tmp_path / "marker"
    (other / "mine.lua").write_text(EVIL.format(str(marker)))  # same name, another file
    port = free_port()
    strata(cache_topology(port, max_memory="1mb", eviction="mine.lua"), [port])
    r = redis.Redis(port=port, socket_timeout=10 * SLOW)
    real = str((tmp_path / "mine.lua").resolve())
    assert r.config_get("maxmemory-policy") == {"maxmemory-policy": real}
    assert r.config_set("maxmemory-policy", "allkeys-lru")
    assert r.config_set("maxmemory-policy", "mine.lua")
    assert r.config_get("maxmemory-policy") == {"maxmemory-policy": real}
    assert r.config_set("maxmemory-policy", "lru")
    assert r.config_set("maxmemory-policy", real)
    with pytest.raises(redis.ResponseError, match=PROTECTED):
        r.config_set("maxmemory-policy", str(other / "mine.lua"))
    assert not marker.exists()


def test_protected_configs_of_the_db(strata, tmp_path):
    db = Db(strata, tmp_path)
    r = db.client()
    for name, value in (("dir", "/tmp"), ("enable-debug-command", "yes")):
        with pytest.raises(redis.ResponseError) as e:
            r.config_set(name, value)
        assert str(e.value) == (f"CONFIG SET failed (possibly related to argument '{name}') - "
                                f"{PROTECTED}")
    assert r.config_get("dir") == {"dir": db.dir}
    assert r.config_get("enable-debug-command") == {"enable-debug-command": "no"}


# ---- 2. DEBUG only when the topology turns it on ------------------------------

def test_debug_is_off_by_default(strata, tmp_path):
    db = Db(strata, tmp_path)
    r = db.client()
    with pytest.raises(redis.ResponseError) as e:
        r.execute_command("DEBUG", "DISK-ERROR", "ON")
    assert str(e.value) == DEBUG_OFF
    assert r.set("k", "v") is True  # writes were not blocked
    assert r.info("persistence")["aof_last_write_status"] == "ok"
    port = free_port()
    strata(cache_topology(port), [port], name="cache.lua")
    c = redis.Redis(port=port, socket_timeout=10 * SLOW)
    with pytest.raises(redis.ResponseError) as e:
        c.execute_command("DEBUG", "SLEEP", "0")
    assert str(e.value) == DEBUG_OFF


def test_debug_on_when_the_topology_says_so(strata, tmp_path):
    db = Db(strata, tmp_path, debug=True)
    r = db.client()
    assert r.config_get("enable-debug-command") == {"enable-debug-command": "yes"}
    assert r.execute_command("DEBUG", "DISK-ERROR", "0", "WRITE") == b"OK"
    assert r.execute_command("DEBUG", "DISK-ERROR", "OFF") == b"OK"
    assert r.set("k", "v") is True


def test_debug_must_be_a_boolean(tmp_path):
    topo = tmp_path / "topo.lua"
    topo.write_text(cache_topology(free_port(), debug="yes"))
    r = run_cli("check", str(topo))
    assert r.returncode == 1
    assert r.stderr.startswith(f"{topo}:1: debug must be true or false"), r.stderr


# ---- 3. secrets out of the topology -------------------------------------------

def test_password_env(strata, tmp_path):
    port = free_port()
    text = cache_topology(port, password_env="STRATA_TEST_PW")
    topo = tmp_path / "check.lua"
    topo.write_text(text)
    env = dict(os.environ, STRATA_TEST_PW="env-secret-123")
    out = subprocess.run([STRATA_BIN, "check", str(topo)], capture_output=True, text=True,
                         env=env, timeout=60 * SLOW)
    assert out.returncode == 0, out.stderr
    assert "env-secret-123" not in out.stdout + out.stderr
    proc = strata(text, [port], env={"STRATA_TEST_PW": "env-secret-123"})
    raw = Raw(port)
    raw.send(b"PING\r\n")
    assert raw.line() == b"-NOAUTH Authentication required."
    raw.send(b"AUTH default wrong\r\n")
    assert raw.line() == b"-WRONGPASS invalid username-password pair or user is disabled."
    raw.send(b"AUTH someone env-secret-123\r\n")
    assert raw.line() == b"-WRONGPASS invalid username-password pair or user is disabled."
    raw.send(b"AUTH default env-secret-123\r\nPING\r\n")
    assert raw.line() == b"+OK" and raw.line() == b"+PONG"
    r = redis.Redis(port=port, password="env-secret-123", socket_timeout=10 * SLOW)
    assert r.set("k", "v") and r.get("k") == b"v"
    assert "env-secret-123" not in proc.output()


def test_password_env_missing_or_empty(tmp_path):
    topo = tmp_path / "topo.lua"
    topo.write_text(cache_topology(free_port(), password_env="STRATA_TEST_NO_SUCH_VAR"))
    env = {k: v for k, v in os.environ.items() if k != "STRATA_TEST_NO_SUCH_VAR"}
    for extra, want in (({}, "is not set"), ({"STRATA_TEST_NO_SUCH_VAR": ""}, "is empty")):
        for cmd in ("check", "run"):
            out = subprocess.run([STRATA_BIN, cmd, str(topo)], capture_output=True, text=True,
                                 env=dict(env, **extra), timeout=60 * SLOW)
            assert out.returncode == 1, out.stdout + out.stderr
            first = out.stderr.strip().splitlines()[0]
            assert first == (f"{topo}:1: cache c1: password_env: environment variable "
                             f"STRATA_TEST_NO_SUCH_VAR {want}"), first


def test_password_file(strata, tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "db.pw").write_text("file-secret-456\n")
    db_port = free_port()
    text = ('strata.db { primary = { node = "db1", listen = "127.0.0.1:%d", dir = "%s" }, '
            'password_file = "secrets/db.pw" }\n' % (db_port, tmp_path / "data"))
    topo = tmp_path / "check.lua"
    topo.write_text(text)
    out = run_cli("check", str(topo))
    assert out.returncode == 0, out.stderr
    assert "file-secret-456" not in out.stdout + out.stderr
    proc = strata(text, [db_port])
    r = redis.Redis(port=db_port, socket_timeout=10 * SLOW)
    with pytest.raises(redis.AuthenticationError):
        r.ping()
    r = redis.Redis(port=db_port, username="default", password="file-secret-456",
                    socket_timeout=10 * SLOW)
    assert r.set("k", "v") and r.get("k") == b"v"
    assert "file-secret-456" not in proc.output()
    # Missing or empty: refused with file:line, and the content never shown.
    (secrets / "empty.pw").write_text("\n")
    for name, want in (("nope.pw", "cannot be read"), ("empty.pw", "is empty")):
        topo.write_text(text.replace("db.pw", name))
        out = run_cli("check", str(topo))
        assert out.returncode == 1
        first = out.stderr.strip().splitlines()[0]
        assert first.startswith(f"{topo}:1: db db1: password_file '{secrets / name}'"), first
        assert want in first, first
    topo.write_text(text.replace("password_file =", 'password = "x", password_file ='))
    out = run_cli("check", str(topo))
    assert out.returncode == 1
    assert "set only one of password, password_env and password_file" in out.stderr


def test_unauthenticated_client_cannot_make_the_node_buffer(strata, tmp_path):
    port = free_port()
    proc = strata(cache_topology(port, password="pw"), [port])
    rss0 = rss_bytes(node_pid(proc))
    raw = Raw(port)
    # A 300 MB argument announced before AUTH: refused at its header.
    raw.send(b"*2\r\n$4\r\nAUTH\r\n$314572800\r\n")
    assert raw.line() == b"-ERR Protocol error: invalid bulk length"
    assert raw.closed()
    assert rss_bytes(node_pid(proc)) < rss0 + 16 * 1024 * 1024
    # Only AUTH, HELLO and QUIT before AUTH.
    raw = Raw(port)
    for cmd in (b"PING", b"INFO", b"CONFIG GET *", b"GET k", b"COMMAND COUNT", b"CLIENT ID"):
        raw.send(cmd + b"\r\n")
        assert raw.line() == b"-NOAUTH Authentication required.", cmd
    raw.send(b"QUIT\r\n")
    assert raw.line() == b"+OK"
    assert raw.closed()


def test_check_warns_about_an_open_node(tmp_path):
    topo = tmp_path / "topo.lua"
    port = free_port()
    topo.write_text('strata.cache { shards = { { node = "c1", listen = "0.0.0.0:%d" } } }\n'
                    'strata.db { primary = { node = "d1", listen = "127.0.0.1:%d", dir = "d" } }\n'
                    % (port, free_port()))
    out = run_cli("check", str(topo))
    assert out.returncode == 0, out.stderr
    warnings = [l for l in out.stderr.splitlines() if "warning" in l]
    assert warnings == [f"{topo}:1: warning: cache on node 'c1' listens on 0.0.0.0:{port}, beyond "
                        "loopback, without a password (set password_env or password_file; see "
                        "docs/security.md)"], out.stderr
    assert "warning" not in out.stdout
    topo.write_text(topo.read_text().replace("} } }", '} }, password_env = "HOME" }', 1))
    out = run_cli("check", str(topo))
    assert out.returncode == 0 and "warning" not in out.stderr, out.stderr


# ---- 4. memory a client controls ------------------------------------------------

def partial_bulk(port, nbytes):
    """A client that announces a 300 MB value and sends nbytes of it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30 * SLOW)
    s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$314572800\r\n")
    chunk = b"x" * (1 << 20)
    sent = 0
    try:
        while sent < nbytes:
            s.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass  # closed by the node: what the limit does
    return s


def test_client_buffers_are_bounded(strata, tmp_path):
    port = free_port()
    proc = strata(cache_topology(port, max_memory="64mb", max_client_memory="16mb"), [port])
    r = redis.Redis(port=port, socket_timeout=30 * SLOW)
    assert r.config_get("maxmemory-clients") == {"maxmemory-clients": str(16 << 20)}
    rss0 = rss_bytes(node_pid(proc))
    socks = [partial_bulk(port, 12 << 20) for _ in range(6)]
    try:
        wait_for(lambda: r.info("stats")["evicted_clients"] >= 4, timeout=30,
                 what="clients over the limit closed")
        assert r.info("memory")["used_memory_clients"] <= 16 << 20
        assert rss_bytes(node_pid(proc)) < rss0 + 64 * 1024 * 1024
        assert r.set("still", "served") and r.get("still") == b"served"
        assert "max_client_memory" in proc.output()
    finally:
        for s in socks:
            s.close()


def test_client_memory_default_follows_max_memory(strata, tmp_path):
    port = free_port()
    strata(cache_topology(port, max_memory="64mb"), [port])
    r = redis.Redis(port=port, socket_timeout=10 * SLOW)
    assert r.config_get("maxmemory-clients") == {"maxmemory-clients": str(64 << 20)}
    assert r.info("memory")["maxmemory_clients"] == 64 << 20
    port2 = free_port()
    strata(cache_topology(port2), [port2], name="unlimited.lua")
    r2 = redis.Redis(port=port2, socket_timeout=10 * SLOW)
    assert r2.config_get("maxmemory-clients") == {"maxmemory-clients": str(1 << 30)}


OOM = "OOM command not allowed when used memory > 'maxmemory'."


def test_writes_over_max_memory_are_refused_before_allocating(strata, tmp_path):
    port = free_port()
    proc = strata(cache_topology(port, max_memory="64mb", eviction="lru",
                                 max_client_memory="256mb"), [port])
    r = redis.Redis(port=port, socket_timeout=30 * SLOW)
    r.set("small", "v")
    rss0 = rss_bytes(node_pid(proc))
    with pytest.raises(redis.ResponseError) as e:
        r.setrange("k", 536870911, "x")
    assert str(e.value) == OOM
    with pytest.raises(redis.ResponseError) as e:
        r.setrange("k", 536870912, "x")
    assert str(e.value) == "string exceeds maximum allowed size (proto-max-bulk-len)"
    r.set("a", "x" * 1000)
    with pytest.raises(redis.ResponseError) as e:
        r.setrange("a", 100 << 20, "x")
    assert str(e.value) == OOM
    with pytest.raises(redis.ResponseError) as e:
        r.set("big", "x" * (70 << 20))
    assert str(e.value) == OOM
    with pytest.raises(redis.ResponseError) as e:
        r.append("a", "x" * (70 << 20))
    assert str(e.value) == OOM
    assert r.get("a") == b"x" * 1000 and r.get("small") == b"v"
    assert r.info("stats")["oom_rejections"] == 4
    assert r.info("memory")["used_memory"] < 64 << 20
    assert rss_bytes(node_pid(proc)) < rss0 + 300 * 1024 * 1024  # never 512 MB more
    # A write that fits after evicting is made: lru makes room first.
    for i in range(20):
        r.set(f"fill{i}", "y" * (3 << 20))
    assert r.set("big2", "z" * (20 << 20))
    assert r.strlen("big2") == 20 << 20
    assert r.info("memory")["used_memory"] <= 64 << 20


def test_noeviction_refuses_a_write_that_does_not_fit(strata, tmp_path):
    port = free_port()
    strata(cache_topology(port, max_memory="8mb"), [port])
    r = redis.Redis(port=port, socket_timeout=30 * SLOW)
    assert r.set("a", "x" * (5 << 20))
    with pytest.raises(redis.ResponseError, match="OOM"):
        r.set("b", "x" * (5 << 20))
    assert r.set("a", "y" * (5 << 20))  # an overwrite of the same size fits
    assert r.get("b") is None and r.strlen("a") == 5 << 20


# ---- 5. clients and descriptors --------------------------------------------------

def test_max_clients(strata, tmp_path):
    port = free_port()
    strata(cache_topology(port, max_clients=3), [port])

    def served():
        # The fixture's port probe may still hold a slot for a moment.
        h = Raw(port)
        h.send(b"PING\r\n")
        if h.line() == b"+PONG":
            return h
        h.s.close()
        return None

    held = [wait_for(served, what="a client slot") for _ in range(3)]
    extra = Raw(port)
    assert extra.line() == b"-ERR max number of clients reached"
    assert extra.closed()
    held.pop().s.close()
    r = redis.Redis(port=port, socket_timeout=10 * SLOW)
    wait_for(lambda: r.ping(), what="a slot free again")
    assert r.info("stats")["rejected_connections"] >= 1
    assert r.info("clients")["maxclients"] == 3


def test_db_max_clients_default(strata, tmp_path):
    db = Db(strata, tmp_path)
    assert db.client().config_get("maxclients") == {"maxclients": "10000"}


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) not installed")
def test_db_everysec_writes_survive_a_descriptor_shortage(tmp_path):
    port = free_port()
    topo = tmp_path / "topo.lua"
    topo.write_text(db_topology(port, tmp_path / "data", fsync="everysec"))
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["prlimit", "--nofile=40:40", STRATA_BIN, "run", str(topo),
                                 "--node", "db1"], stdout=log, stderr=subprocess.STDOUT)
    idle = []
    try:
        wait_for(lambda: port_open(port), timeout=15, what="db port")
        r = redis.Redis(port=port, socket_timeout=10 * SLOW)
        assert r.set("before", "1")
        for _ in range(80):
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        wait_for(lambda: "pausing accepts" in log_path.read_text(), timeout=10,
                 what="the shortage")
        # Syncs happen while no descriptor is free; each must succeed.
        f0 = r.info("persistence")["log_fsyncs"]
        for i in range(3):
            assert r.set(f"k{i}", "v") is True
            wait_for(lambda: r.info("persistence")["log_fsyncs"] > f0 + i, timeout=10,
                     what="an everysec sync while out of descriptors")
        p = r.info("persistence")
        assert p["aof_last_write_status"] == "ok" and p["log_fsync_errors"] == 0, p
        assert r.set("after", "1") is True
    finally:
        for s in idle:
            s.close()
        proc.terminate()
        proc.wait(timeout=20 * SLOW)
    assert proc.returncode == 0, log_path.read_text()[-3000:]


def test_a_reload_changes_which_policy_file_config_set_may_load(strata, tmp_path):
    import signal
    (tmp_path / "a.lua").write_text(GOOD)
    (tmp_path / "b.lua").write_text(GOOD)
    port = free_port()
    proc = strata(cache_topology(port, max_memory="1mb", eviction="a.lua"), [port])
    r = redis.Redis(port=port, socket_timeout=10 * SLOW)
    with pytest.raises(redis.ResponseError, match=PROTECTED):
        r.config_set("maxmemory-policy", "b.lua")
    (tmp_path / "topo.lua").write_text(cache_topology(port, max_memory="1mb", eviction="b.lua"))
    proc.proc.send_signal(signal.SIGHUP)
    b = str((tmp_path / "b.lua").resolve())
    wait_for(lambda: r.config_get("maxmemory-policy")["maxmemory-policy"] == b,
             what="the reloaded policy")
    assert r.config_set("maxmemory-policy", "lru")
    with pytest.raises(redis.ResponseError, match=PROTECTED):
        r.config_set("maxmemory-policy", "a.lua")
    assert r.config_set("maxmemory-policy", "b.lua")
    # A reload to a built-in policy leaves no file CONFIG SET may load.
    (tmp_path / "topo.lua").write_text(cache_topology(port, max_memory="1mb", eviction="lru"))
    proc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: r.config_get("maxmemory-policy")["maxmemory-policy"] == "allkeys-lru",
             what="the reloaded built-in policy")
    with pytest.raises(redis.ResponseError, match=r"it names none"):
        r.config_set("maxmemory-policy", "b.lua")


def test_admin_endpoint_shows_limits_not_the_password(strata, tmp_path):
    import json
    import urllib.request
    (tmp_path / "pw").write_text("admin-secret-789\n")
    port, admin = free_port(), free_port()
    text = (cache_topology(port, password_file="pw", max_clients=2) +
            f'strata.node {{ name = "c1", admin = "127.0.0.1:{admin}" }}\n')
    proc = strata(text, [port, admin])
    held = [redis.Redis(port=port, password="admin-secret-789", socket_timeout=10 * SLOW)
            for _ in range(2)]
    for h in held:
        wait_for(lambda: h.ping(), what="a client slot")
    extra = Raw(port)
    assert extra.line() == b"-ERR max number of clients reached"

    def get(path):
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=10) as r:
            return r.read().decode()

    status = get("/status")
    cache = [s for s in json.loads(status)["services"] if s.get("kind", "cache") == "cache"][0]
    assert cache["rejected_connections"] >= 1 and cache["evicted_clients"] == 0, cache
    metrics = get("/metrics")
    assert "strata_cache_rejected_connections_total" in metrics
    for text in (status, metrics, proc.output()):
        assert "admin-secret-789" not in text


def test_the_beyond_loopback_warning_is_printed_once_per_start(strata):
    port = free_port()
    proc = strata('strata.cache { shards = { { node = "c1", listen = "0.0.0.0:%d" } } }\n'
                  % port, [port])
    wait_for(lambda: "ready" in proc.output(), what="the node ready")
    assert proc.output().count("beyond loopback") == 1, proc.output()

"""One schema: `strata check`, `strata run` and reload accept and refuse the
same topologies, with the same file:line message. Every integer range that
docs/topology.md states is tried at both ends and just past them; a few
hand-picked cases cover durations and names. A refused reload changes
nothing."""
import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request

import pytest
import redis

from conftest import ROOT, SLOW, STRATA_BIN, StrataProcess, free_port, run_cli, wait_for

DOC = os.path.join(ROOT, "docs", "topology.md")


def documented_ranges():
    """(kind, field, lo, hi) for every integer or size setting with a stated
    `lo..hi` range in docs/topology.md, and (kind, field, None, None) for
    every duration stated as `> 0`."""
    kind, out = None, []
    for line in open(DOC):
        m = re.match(r"## strata\.(\w+)", line)
        if m:
            kind = m.group(1)
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or not cells[0].startswith("`"):
            continue
        field, typ, rng = cells[0].strip("`"), cells[1], cells[2]
        m = re.fullmatch(r"`(-?\d+)\.\.(\d+)`", rng)
        if m and typ in ("integer", "size"):
            out.append((kind, field, int(m.group(1)), int(m.group(2))))
        elif typ == "duration" and rng == "`> 0`":
            out.append((kind, field, None, None))
    return out


RANGES = documented_ranges()


def test_docs_state_the_ranges():
    fields = {(k, f) for k, f, _, _ in RANGES}
    for want in [("cache", "eviction_samples"), ("balancer", "retries"),
                 ("balancer", "health.rise"), ("balancer", "health.fall"),
                 ("balancer", "max_header_size"), ("balancer", "backend.weight"),
                 ("balancer", "health.interval"), ("balancer", "connect_timeout")]:
        assert want in fields, (want, sorted(fields))


def setting(field, value):
    """The Lua for one setting: `retries = 3`, `health = { rise = 3 }`..."""
    if "." in field:
        table, key = field.split(".")
        return table, f"{key} = {value}"
    return None, f"{field} = {value}"


def cache_topo(port, extra=""):
    return (f'strata.cache {{ shards = {{ {{ node = "c1", listen = "127.0.0.1:{port}" }} }}'
            f'{", " + extra if extra else ""} }}\n')


def balancer_topo(port, backend, extra="", backend_extra=""):
    be = (f'{{ addr = "127.0.0.1:{backend}", {backend_extra} }}' if backend_extra
          else f'"127.0.0.1:{backend}"')
    return (f'strata.balancer {{ node = "lb", listen = "127.0.0.1:{port}", '
            f'backends = {{ {be} }}{", " + extra if extra else ""} }}\n')


def topo_for(kind, field, value):
    table, lua = setting(field, value)
    if kind == "cache":
        assert table is None
        return cache_topo(free_port(), lua)
    if kind == "db":
        assert table is None
        return (f'strata.db {{ primary = {{ node = "d1", listen = "127.0.0.1:{free_port()}" }}, '
                f'{lua} }}\n')
    if kind == "web":
        assert table is None
        return (f'strata.web {{ nodes = {{ {{ node = "w1", listen = "127.0.0.1:{free_port()}" }} }}, '
                f'static = ".", {lua} }}\n')
    assert kind == "balancer", kind
    if table == "backend":
        return balancer_topo(free_port(), free_port(), backend_extra=lua)
    if table:
        return balancer_topo(free_port(), free_port(), f"{table} = {{ {lua} }}")
    return balancer_topo(free_port(), free_port(), lua)


def check(path):
    r = run_cli("check", str(path))
    first = r.stderr.strip().splitlines()[0] if r.stderr.strip() else ""
    return r.returncode, first


def ready_count(text):
    m = re.search(r"all (\d+) nodes? ready", text)
    return int(m.group(1)) if m else None


def run_agrees(path, accepted, message, nodes=1):
    """`strata run` does what check said: starts every node (the supervisor
    reports them ready) and stops cleanly, or refuses with the same first
    line and exit code 1."""
    if not accepted:
        r = subprocess.run([STRATA_BIN, "run", str(path)], cwd=ROOT, capture_output=True,
                           text=True, timeout=60 * SLOW)
        assert r.returncode == 1, r.stdout + r.stderr
        assert r.stderr.strip().splitlines()[0] == message
        return
    p = StrataProcess(path, ports=[]).start(wait=False)
    try:
        wait_for(lambda: ready_count(p.output()) == nodes or p._died(), timeout=20,
                 what=f"every node ready ({p.output()[-2000:]})")
    finally:
        assert p.stop() == 0


def boundary_cases():
    cases = []
    for kind, field, lo, hi in RANGES:
        if lo is None:  # a positive duration
            values = (('"50ms"', True), (0, False))
        else:
            values = ((lo, True), (hi, True), (lo - 1, False), (hi + 1, False))
        for v, ok in values:
            cases.append(pytest.param(kind, field, v, ok, id=f"{kind}.{field}={v}"))
    return cases


@pytest.mark.parametrize("kind,field,value,ok", boundary_cases())
def test_documented_range_boundaries(tmp_path, kind, field, value, ok):
    topo = tmp_path / "topo.lua"
    topo.write_text(topo_for(kind, field, value))
    rc, first = check(topo)
    if ok:
        assert rc == 0, first
    else:
        assert rc == 1
        assert first.startswith(f"{topo}:1: "), first
        assert field.split(".")[-1] in first and str(value) in first, first
        assert "must be" in first, first
        if "." in field:  # a nested setting says which table it is in
            assert field.replace(".", " ").replace("backend ", "") in first, first
    run_agrees(topo, ok, first)


def p(ident, builder, expect, nodes=1):
    return pytest.param(builder, expect, nodes, id=ident)


def _db(tmp, extra=""):
    return (f'strata.db {{ primary = {{ node = "d1", listen = "127.0.0.1:{free_port()}", '
            f'dir = "{tmp}/d1"{extra} }} }}\n')


def _bal(extra):
    return lambda tmp: balancer_topo(free_port(), free_port(), extra)


# (id, topology builder(tmp_path), None for accepted or a message fragment)
EDGES = [
    p("health-interval-zero", _bal('health = { interval = "0s" }'),
      "balancer lb: health interval must be positive"),
    p("health-interval-short", _bal('health = { interval = "100ms", timeout = "1ms" }'), None),
    p("health-timeout-zero", _bal('health = { timeout = 0 }'),
      "balancer lb: health timeout must be positive"),
    p("health-path-relative", _bal('health = { path = "healthz" }'), "must start with '/'"),
    p("health-default", _bal('health = {}'), None),
    p("connect-timeout-zero", _bal('connect_timeout = 0'),
      "balancer lb: connect_timeout must be positive"),
    p("server-timeout-tiny", _bal('server_timeout = "1ms"'), None),
    p("passive-cooldown-zero", _bal('passive = { cooldown = 0 }'),
      "balancer lb: passive cooldown must be positive"),
    p("passive-off", _bal("passive = false"), None),
    p("retries-not-integer", _bal("retries = 1.5"), "retries must be an integer"),
    p("max-header-size-16kb", _bal('max_header_size = "16kb"'), None),
    p("max-header-size-2mb", _bal('max_header_size = "2mb"'),
      "max_header_size must be in 256..1048576 bytes, not 2097152"),
    p("negative-size", _bal("max_header_size = -1"), "bad size '-1'"),
    p("unknown-fallback", _bal('fallback = "fastest"'),
      "fallback must be a built-in policy"),
    p("unknown-hash-on", _bal('policy = "chash", hash_on = "cookie:"'),
      "hash_on must be ip, path, header:NAME or cookie:NAME"),
    p("slow-start", _bal('slow_start = "5s"'), None),
    p("too-many-backends", lambda tmp: (
        'local b = {} for i = 1, 1025 do b[i] = "127.0.0.1:" .. (20000 + i) end '
        f'strata.balancer {{ node = "lb", listen = "127.0.0.1:{free_port()}", backends = b }}\n'),
      "backends must list 1..1024 backends, not 1025"),
    p("max-memory-zero", lambda tmp: cache_topo(free_port(), "max_memory = 0"), None),
    p("max-memory-1gb", lambda tmp: cache_topo(free_port(), 'max_memory = "1gb"'), None),
    p("max-memory-negative", lambda tmp: cache_topo(free_port(), "max_memory = -5"),
      "max_memory: bad size '-5'"),
    p("unknown-eviction", lambda tmp: cache_topo(free_port(), 'eviction = "oldest"'),
      "cache c1: unknown eviction policy 'oldest'"),
    p("unknown-eviction-fallback",
      lambda tmp: cache_topo(free_port(), 'eviction_fallback = "oldest"'),
      "cache c1: unknown eviction_fallback 'oldest'"),
    p("eviction-volatile-lfu", lambda tmp: cache_topo(free_port(), 'eviction = "volatile-lfu"'),
      None),
    p("db-fsync-always", lambda tmp: _db(tmp, ', fsync = "always"'), None),
    p("db-fsync-unknown", lambda tmp: _db(tmp, ', fsync = "sometimes"'),
      "fsync must be always, everysec or no, not 'sometimes'"),
    p("db-compact-min", lambda tmp: _db(tmp).replace(" } }", ' }, compact_min = "1mb" }'), None),
    p("db-replicas", lambda tmp: (
        f'strata.db {{ primary = {{ node = "d1", listen = "127.0.0.1:{free_port()}", '
        f'dir = "{tmp}/d1" }},\n  replicas = {{ {{ node = "d2", '
        f'listen = "127.0.0.1:{free_port()}", dir = "{tmp}/d2" }} }} }}\n'),
      None, 2),
    p("web-workers", lambda tmp: (
        f'local w = strata.web {{ nodes = {{ {{ node = "w1", listen = "127.0.0.1:{free_port()}" }} }},\n'
        f'  static = "{tmp}", workers = 0 }}\n'),
      "web w1: workers must be in 1..64, not 0"),
    p("cache-and-db-one-node", lambda tmp: (
        _db(tmp) + cache_topo(free_port()).replace('"c1"', '"d1"')), None),
]


@pytest.mark.parametrize("builder,expect,nodes", EDGES)
def test_check_and_run_agree(tmp_path, builder, expect, nodes):
    topo = tmp_path / "topo.lua"
    topo.write_text(builder(tmp_path))
    rc, first = check(topo)
    if expect is None:
        assert rc == 0, first
    else:
        assert rc == 1
        # the field's line (or the declaration's, for a whole kind)
        assert re.match(re.escape(str(topo)) + r":\d+: ", first), first
        assert expect in first, first
    run_agrees(topo, expect is None, first, nodes)


def test_web_with_nothing_to_serve_points_at_the_declaration(tmp_path):
    topo = tmp_path / "topo.lua"
    text = (cache_topo(free_port()) + "\n-- the web tier\n"
            f'local web = strata.web {{\n  nodes = {{ {{ node = "w1", listen = "127.0.0.1:{free_port()}" }} }},\n}}\n'
            f'strata.balancer {{ node = "lb", listen = "127.0.0.1:{free_port()}", backends = web }}\n')
    topo.write_text(text)
    rc, first = check(topo)
    assert (rc, first) == (1, f"{topo}:4: strata.web needs an app, a static folder, or both")
    # One node of it, on its own machine: the same answer.
    r = run_cli("run", str(topo), "--node", "c1")
    assert r.returncode == 1 and r.stderr.strip().splitlines()[0] == first


# ---- reload goes through the same validation ------------------------------------

def http(method, port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def reload_topo(ports, eviction="lru", health='interval = "1s"'):
    cache, lb, backend, sup, a1, a2 = ports
    return (f'strata.supervisor {{ admin = "127.0.0.1:{sup}" }}\n'
            f'strata.cache {{ shards = {{ {{ node = "c1", listen = "127.0.0.1:{cache}" }} }},\n'
            f'  eviction = "{eviction}" }}\n'
            f'strata.balancer {{ node = "lb", listen = "127.0.0.1:{lb}",\n'
            f'  backends = {{ "127.0.0.1:{backend}" }},\n'
            f'  health = {{ {health} }} }}\n'
            f'strata.node {{ name = "c1", admin = "127.0.0.1:{a1}" }}\n'
            f'strata.node {{ name = "lb", admin = "127.0.0.1:{a2}" }}\n')


def status(port):
    code, body = http("GET", port, "/status")
    assert code == 200, body
    return json.loads(body)


@pytest.mark.parametrize("bad,message", [
    ('interval = "0s"', "balancer lb: health interval must be positive, not 0"),
    ("rise = 1001", "balancer lb: health rise must be in 1..1000, not 1001"),
])
def test_reload_with_a_bad_value_changes_nothing(strata, tmp_path, bad, message):
    ports = [free_port() for _ in range(6)]
    cache, lb, backend, sup, a1, a2 = ports
    proc = strata(reload_topo(ports), ports=[cache, lb, a1, a2])
    topo = tmp_path / "topo.lua"
    wait_for(lambda: ready_count(proc.output()) == 2, what="both nodes ready")
    gen = {a: status(a)["generation"] for a in (a1, a2)}
    # A good change (eviction) next to a bad one: neither applies.
    topo.write_text(reload_topo(ports, eviction="lfu", health=bad))
    where = f"{topo}:6: "  # the health field's line
    r = run_cli("reload", str(topo))
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[0] == where + message
    # Straight to a node's admin endpoint (what SIGHUP does too): the same.
    for a in (a1, a2):
        code, body = http("POST", a, "/reload")
        assert code == 422, body
        assert json.loads(body)["error"] == where + message
        st = status(a)
        assert st["generation"] == gen[a]
        assert st["last_reload_error"] == where + message
    assert status(a1)["services"][0]["eviction"] == "allkeys-lru"
    assert redis.Redis(port=cache).ping()
    # The supervisor refuses it as well and tells no node to reload.
    proc.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload failed, nothing changed: " + where + message in proc.output(),
             what="supervisor refuses the reload")
    # Fixed, the same change goes through.
    topo.write_text(reload_topo(ports, eviction="lfu"))
    r = run_cli("reload", str(topo))
    assert r.returncode == 0, r.stderr
    assert status(a1)["services"][0]["eviction"] == "allkeys-lfu"
    assert status(a1)["generation"] == gen[a1] + 1

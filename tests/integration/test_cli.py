"""The strata CLI: check accepts every example and rejects each kind of
mistake with the right file:line; usage errors exit 2."""
import glob
import os

import pytest

from conftest import ROOT, run_cli

# The example topologies (app.lua is the application they run, not one).
EXAMPLES = sorted(p for p in glob.glob(os.path.join(ROOT, "examples", "*.lua"))
                  if os.path.basename(p) != "app.lua")


def test_there_are_examples():
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_check_accepts_every_example(path):
    r = run_cli("check", path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split() == ["NODE", "SERVICE", "LISTEN", "POLICY", "/", "DETAILS"]
    assert f"{path}: ok" in r.stdout


def test_check_prints_nodes_services_and_policies(tmp_path):
    pol = tmp_path / "pick.lua"
    pol.write_text("local M = {}\nfunction M.pick(req, b) return b[1] end\nreturn M\n")
    topo = tmp_path / "t.lua"
    topo.write_text(
        'local c = strata.cache { shards = { { node = "c1", listen = "127.0.0.1:7101" },\n'
        '                                    { node = "c2", listen = "127.0.0.1:7102" } },\n'
        '  max_memory = "64mb", eviction = "lfu" }\n'
        'strata.balancer { node = "lb", listen = "127.0.0.1:7100",\n'
        '  backends = { "127.0.0.1:7201", { addr = "127.0.0.1:7202", weight = 3 } },\n'
        '  policy = "pick.lua", health = { path = "/healthz", interval = "500ms" } }\n')
    r = run_cli("check", str(topo))
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:-1]]
    assert [row[:3] for row in rows] == [
        ["c1", "cache", "127.0.0.1:7101"],
        ["c2", "cache", "127.0.0.1:7102"],
        ["lb", "balancer", "127.0.0.1:7100"],
    ]
    assert "max_memory=64mb" in rows[0] and "eviction=allkeys-lfu" in rows[0]
    assert f"policy={pol}" in rows[2]
    assert "backends=127.0.0.1:7201,127.0.0.1:7202" in rows[2]
    assert r.stdout.splitlines()[-1] == f"{topo}: ok (3 nodes, 3 services)"


CACHE = 'strata.cache { shards = { { node = "c1", listen = "127.0.0.1:7301" } } }\n'

MISTAKES = [
    # (name, topology text, files beside it, line, message fragment); a mistake
    # in a field points at the field's own line, not the constructor's
    ("syntax", CACHE + "strata.cache {\n", {}, 3, "expected"),
    ("runtime-error", CACHE + "local x = nil\nx.y = 1\n", {}, 3, "attempt to index"),
    ("unknown-field", CACHE + 'strata.cache { shards = { { node = "c2", listen = "127.0.0.1:7302" } },\n'
     '  colour = "red" }\n', {}, 3, "unknown field 'colour' in strata.cache"),
    ("unknown-nested-field", 'strata.cache { shards = { { node = "c2", listen = "127.0.0.1:7302", port = 1 } } }\n',
     {}, 1, "unknown field 'port' in cache shard 1"),
    ("bad-address", CACHE + "\n" + 'strata.cache { shards = { { node = "c2", listen = "127.0.0.1" } } }\n',
     {}, 3, "bad address '127.0.0.1'"),
    ("bad-port", 'strata.cache { shards = { { node = "c2", listen = "127.0.0.1:99999" } } }\n',
     {}, 1, "bad port"),
    ("duplicate-port", CACHE + 'strata.cache { shards = { { node = "c2", listen = "127.0.0.1:7301" } } }\n',
     {}, 2, "duplicate port"),
    ("duplicate-wildcard-port", CACHE + 'strata.cache { shards = { { node = "c2", listen = "0.0.0.0:7301" } } }\n',
     {}, 2, "duplicate port"),
    ("undefined-node", CACHE + 'strata.balancer { node = "lb", listen = "127.0.0.1:7300",\n'
     '  backends = { "web7" } }\n', {}, 2, "undefined node 'web7'"),
    ("undefined-replica-of", 'strata.db { primary = { node = "d1", listen = "127.0.0.1:7401" },\n'
     '  replicas = { { node = "d2", listen = "127.0.0.1:7402", replica_of = "d9" } } }\n',
     {}, 2, "undefined node 'd9'"),
    ("missing-policy-file", CACHE + 'strata.balancer { node = "lb", listen = "127.0.0.1:7300",\n'
     '  backends = { "127.0.0.1:7201" }, policy = "nope.lua" }\n', {}, 3, "file 'nope.lua' not found"),
    ("policy-without-pick", CACHE + 'strata.balancer { node = "lb", listen = "127.0.0.1:7300",\n'
     '  backends = { "127.0.0.1:7201" }, policy = "p.lua" }\n',
     {"p.lua": "local M = {}\nfunction M.choose() end\nreturn M\n"}, 3, "has no function 'pick'"),
    ("eviction-without-choose", 'strata.cache { shards = { { node = "c2", listen = "127.0.0.1:7302" } },\n'
     '  eviction = "e.lua" }\n', {"e.lua": "return { pick = function() end }\n"}, 2,
     "has no function 'choose'"),
    ("unknown-policy", CACHE + 'strata.balancer { node = "lb", listen = "127.0.0.1:7300",\n'
     '  backends = { "127.0.0.1:7201" }, policy = "fastest" }\n', {}, 3, "balancer lb: unknown policy 'fastest'"),
    ("bad-size", 'strata.cache { shards = { { node = "c2", listen = "127.0.0.1:7302" } },\n'
     '  max_memory = "64xb" }\n', {}, 2, "max_memory: bad size '64xb'"),
    ("bad-duration", CACHE + 'strata.balancer { node = "lb", listen = "127.0.0.1:7300",\n'
     '  backends = { "127.0.0.1:7201" }, health = { interval = "soon" } }\n', {}, 3,
     "bad duration 'soon'"),
    ("no-services", "local x = 1\n", {}, 1, "declares no service"),
    # A web tier with nothing to serve: refused where it is declared.
    ("web-nothing-to-serve", CACHE + "\nlocal web = strata.web {\n"
     '  nodes = { { node = "w1", listen = "127.0.0.1:7501" } } }\n', {}, 3,
     "strata.web needs an app, a static folder, or both"),
    ("db-min-replicas-out-of-range", CACHE + 'strata.db { primary = { node = "d1", listen = "127.0.0.1:7401" },\n'
     '  replicas = { { node = "d2", listen = "127.0.0.1:7402" } }, min_replicas = -1 }\n', {}, 3,
     "min_replicas must be in 0..1000, not -1"),
    # Ranges are the service kinds': the same file:line, at the field.
    ("retries-out-of-range", CACHE + 'strata.balancer { node = "lb", listen = "127.0.0.1:7300",\n'
     '  backends = { "127.0.0.1:7201" }, retries = 16 }\n', {}, 3,
     "balancer lb: retries must be in 0..15, not 16"),
    ("eviction-samples-out-of-range", CACHE + 'strata.cache { shards = { { node = "c2", listen = "127.0.0.1:7302" } },\n'
     '  eviction_samples = 65 }\n', {}, 3, "cache c2: eviction_samples must be in 1..64, not 65"),
]


@pytest.mark.parametrize("name,text,files,line,msg", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_check_rejects_mistake_with_file_line(tmp_path, name, text, files, line, msg):
    for fname, content in files.items():
        (tmp_path / fname).write_text(content)
    topo = tmp_path / "topo.lua"
    topo.write_text(text)
    r = run_cli("check", str(topo))
    assert r.returncode == 1, r.stdout
    first = r.stderr.strip().splitlines()[0]
    assert first.startswith(f"{topo}:{line}: "), first
    assert msg in first, first


def test_policy_syntax_error_points_into_the_policy(tmp_path):
    (tmp_path / "p.lua").write_text("local M = {}\nfunction M.pick(\nreturn M\n")
    topo = tmp_path / "topo.lua"
    topo.write_text('strata.balancer { node = "lb", listen = "127.0.0.1:7300",\n'
                    '  backends = { "127.0.0.1:7201" }, policy = "p.lua" }\n')
    r = run_cli("check", str(topo))
    assert r.returncode == 1
    assert r.stderr.startswith(f"{tmp_path / 'p.lua'}:3: "), r.stderr


def test_policy_failing_validate_is_rejected(tmp_path):
    (tmp_path / "p.lua").write_text(
        "local M = {}\nfunction M.pick(r, b) return b[1] end\n"
        "function M.validate() error('weights must sum to 100') end\nreturn M\n")
    topo = tmp_path / "topo.lua"
    topo.write_text('strata.balancer { node = "lb", listen = "127.0.0.1:7300",\n'
                    '  backends = { "127.0.0.1:7201" }, policy = "p.lua" }\n')
    r = run_cli("check", str(topo))
    assert r.returncode == 1
    assert r.stderr.startswith(f"{topo}:2: "), r.stderr  # the policy field's line
    assert "weights must sum to 100" in r.stderr


def test_missing_topology_file():
    r = run_cli("check", "/nonexistent/topo.lua")
    assert r.returncode == 1
    assert "/nonexistent/topo.lua" in r.stderr


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["check"], ["check", "a.lua", "b.lua"],
                                  ["run"], ["run", "--bogus", "x.lua"], ["version", "extra"],
                                  ["run", "--log-level", "loud", "x.lua"]])
def test_usage_errors_exit_2(args):
    r = run_cli(*args)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert "usage: strata" in r.stderr


@pytest.mark.parametrize("sub", ["check", "run", "version"])
def test_help_on_every_subcommand(sub):
    r = run_cli(sub, "--help")
    assert r.returncode == 0
    assert r.stdout.startswith(f"usage: strata {sub}")


def test_version():
    r = run_cli("version")
    assert r.returncode == 0
    assert r.stdout.startswith("strata 0.")


def test_run_unknown_node(tmp_path):
    topo = tmp_path / "topo.lua"
    topo.write_text(CACHE)
    r = run_cli("run", str(topo), "--node", "zz")
    assert r.returncode == 1
    assert "no node named 'zz'" in r.stderr

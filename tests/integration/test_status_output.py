"""`strata status` and `strata reload --dry-run` say what is true: no hit
ratio before the first lookup, only real changes, worded as changes."""
import pathlib

import redis

from conftest import free_port, run_cli, wait_for


def topo_text(ports, max_memory=None):
    mm = f", max_memory = {max_memory}" if max_memory else ""
    return (f'strata.supervisor {{ admin = "127.0.0.1:{ports[1]}" }}\n'
            f'strata.node {{ name = "c1", admin = "127.0.0.1:{ports[2]}" }}\n'
            f'strata.cache {{ shards = {{ {{ node = "c1", listen = "127.0.0.1:{ports[0]}" }} }}'
            f', eviction = "lru"{mm} }}\n')


def status_cols(path):
    r = run_cli("status", str(path))
    assert r.returncode == 0, r.stderr
    header, row = [line.split() for line in r.stdout.splitlines()[:2]]
    return dict(zip(header, row))


def test_hit_ratio_is_a_dash_before_any_lookup(strata):
    ports = [free_port(), free_port(), free_port()]
    proc = strata(topo_text(ports), ports)
    assert status_cols(proc.topo_path)["HIT%"] == "-"
    c = redis.Redis(port=ports[0], socket_timeout=10)
    c.set("k", "v")
    assert status_cols(proc.topo_path)["HIT%"] == "-"  # a write is no lookup
    assert c.get("k") == b"v" and c.get("nope") is None
    assert status_cols(proc.topo_path)["HIT%"] == "50.0"


def test_dry_run_lists_only_what_changes(strata):
    ports = [free_port(), free_port(), free_port()]
    proc = strata(topo_text(ports), ports)
    pathlib.Path(proc.topo_path).write_text(topo_text(ports, max_memory=1000000))
    r = run_cli("reload", "--dry-run", str(proc.topo_path))
    assert r.returncode == 0, r.stderr
    # the eviction policy did not change: it is not listed (the client
    # memory limit derived from max_memory does change)
    assert r.stdout.splitlines() == [
        "would change node c1: cache max_memory 0 -> 1000000",
        "would change node c1: cache max_client_memory 1073741824 -> 33554432"]
    r = run_cli("reload", str(proc.topo_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "node c1: cache max_memory 0 -> 1000000"
    assert "eviction" not in r.stdout


def test_status_help_promises_only_what_it_shows():
    r = run_cli("status", "--help")
    assert r.returncode == 0
    assert "replication lag" not in r.stdout


def test_startup_lines_are_logged_once(strata):
    ports = [free_port(), free_port(), free_port()]
    proc = strata(topo_text(ports), ports)
    wait_for(lambda: "supervisor admin" in proc.output(), what="the ready summary")
    lines = [l for l in proc.output().splitlines() if "listening on" in l]
    assert len(lines) == 1, lines

"""Folders a topology names resolve from the topology file, never from the
working directory, and are shown absolute."""
import subprocess

import redis

from conftest import STRATA_BIN, StrataProcess, free_port


def test_db_dir_is_relative_to_the_topology_not_the_working_directory(tmp_path):
    """`cd examples && strata run single_server.lua` must find the data a
    run from the repository root wrote."""
    sub = tmp_path / "topologies"
    sub.mkdir()
    port = free_port()
    topo = sub / "topo.lua"
    topo.write_text('strata.db { primary = { node = "d", listen = "127.0.0.1:%d", '
                    'dir = "var/d", fsync = "always" } }\n' % port)
    first = StrataProcess(topo, [port], cwd=str(tmp_path)).start()
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    assert r.set("where", "beside the topology")
    first.stop()
    assert (sub / "var" / "d").is_dir() and not (tmp_path / "var").exists()
    assert str(sub / "var" / "d") in first.output(), "the log names the absolute data dir"
    second = StrataProcess(topo, [port], cwd=str(sub)).start()
    try:
        r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
        assert r.get("where") == b"beside the topology"
    finally:
        second.stop()
    check = subprocess.run([STRATA_BIN, "check", str(topo)], cwd="/", capture_output=True,
                           text=True)
    assert f"dir={sub}/var/d" in check.stdout, check.stdout


def test_log_dir_is_relative_to_the_topology(tmp_path):
    sub = tmp_path / "topologies"
    sub.mkdir()
    port = free_port()
    topo = sub / "topo.lua"
    topo.write_text('strata.supervisor { log_dir = "logs" }\n'
                    'strata.cache { shards = { { node = "c1", listen = "127.0.0.1:%d" } } }\n'
                    % port)
    p = StrataProcess(topo, [port], cwd=str(tmp_path)).start()
    try:
        assert (sub / "logs" / "c1.log").is_file()
        assert not (tmp_path / "logs").exists()
    finally:
        p.stop()


def test_a_policy_is_found_beside_the_topology_never_in_the_working_directory(tmp_path):
    sub = tmp_path / "topologies"
    sub.mkdir()
    (tmp_path / "evict.lua").write_text("local M = {}\nfunction M.choose(c) return 1 end\n"
                                        "return M\n")
    topo = sub / "topo.lua"
    topo.write_text('strata.cache { shards = { { node = "c1", listen = "127.0.0.1:%d" } },\n'
                    '  eviction = "evict.lua" }\n' % free_port())
    r = subprocess.run([STRATA_BIN, "check", str(topo)], cwd=str(tmp_path), capture_output=True,
                       text=True)
    assert r.returncode == 1
    assert r.stderr.startswith(f"{topo}:2: ") and "'evict.lua' not found" in r.stderr, r.stderr
    (sub / "evict.lua").write_text((tmp_path / "evict.lua").read_text())
    r = subprocess.run([STRATA_BIN, "check", str(topo)], cwd="/", capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert str(sub / "evict.lua") in r.stdout

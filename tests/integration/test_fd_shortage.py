"""A node out of file descriptors pauses accepting instead of spinning on
the listener, logs the shortage once instead of per attempt, and serves new
clients again as soon as descriptors are free (lowered RLIMIT_NOFILE via
prlimit, as an operator meets it)."""
import os
import shutil
import socket
import subprocess
import time

import pytest
import redis

from cache_util import cache_topology
from conftest import SLOW, STRATA_BIN, free_port, port_open, wait_for


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) not installed")
def test_cache_out_of_descriptors_pauses_accepts_and_recovers(tmp_path):
    port = free_port()
    topo = tmp_path / "topo.lua"
    topo.write_text(cache_topology(port))
    log_path = tmp_path / "node.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["prlimit", "--nofile=40:40", STRATA_BIN, "run", str(topo),
                                 "--node", "c1"], stdout=log, stderr=subprocess.STDOUT)
    idle = []
    try:
        wait_for(lambda: port_open(port), timeout=15, what="cache port")
        # Far more idle clients than descriptors: the kernel completes the
        # handshakes into the backlog, the node cannot accept them all.
        for _ in range(120):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            idle.append(s)
        wait_for(lambda: "pausing accepts" in log_path.read_text(), timeout=10,
                 what="the shortage warning")
        # While starved, the node must not spin on its readable listener:
        # a spinning loop burns a whole core for the whole window.
        c0, t0 = cpu_seconds(proc.pid), time.monotonic()
        wait_for(lambda: time.monotonic() - t0 >= 1.5, timeout=5, what="a measuring window")
        used = cpu_seconds(proc.pid) - c0
        wall = time.monotonic() - t0
        assert used < 0.5 * wall, f"node used {used:.2f} s of CPU in {wall:.2f} s while starved"
        warnings = [l for l in log_path.read_text().splitlines() if "pausing accepts" in l]
        assert len(warnings) == 1, warnings
        # Descriptors come back: new clients are served.
        for s in idle:
            s.close()
        idle = []
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5 * SLOW)
        wait_for(lambda: client.ping(), timeout=10, what="service after the shortage")
        assert client.set("k", "v") and client.get("k") == b"v"
        client.close()
    finally:
        for s in idle:
            s.close()
        proc.terminate()
        proc.wait(timeout=20 * SLOW)
    assert proc.returncode == 0, log_path.read_text()[-3000:]


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) not installed")
def test_run_raises_the_soft_descriptor_limit_to_the_hard_one(tmp_path):
    port = free_port()
    topo = tmp_path / "topo.lua"
    topo.write_text(cache_topology(port))
    with open(tmp_path / "node.log", "w") as log:
        proc = subprocess.Popen(["prlimit", "--nofile=256:4096", STRATA_BIN, "run", str(topo),
                                 "--node", "c1"], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: port_open(port), timeout=15, what="cache port")
        with open(f"/proc/{proc.pid}/limits") as f:
            line = next(l for l in f if l.startswith("Max open files"))
        assert line.split()[3:5] == ["4096", "4096"], line
    finally:
        proc.terminate()
        proc.wait(timeout=20 * SLOW)
    assert proc.returncode == 0

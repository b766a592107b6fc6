"""A replication link that keeps breaking under load (tools/faultproxy
between a replica and its primary, cutting every link every second) is
mended by partial resyncs only, and the replica ends with the primary's
data."""
import os
import subprocess
import sys
import threading

from conftest import ROOT, SLOW, free_port, wait_for
from repl_util import Cluster, digest


def start_proxy(port, to, cut_every):
    proxy = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "faultproxy"),
                              "--listen", "127.0.0.1:%d" % port, "--to", "127.0.0.1:%d" % to,
                              "--cut-every", str(cut_every)],
                             stdout=subprocess.PIPE, text=True)
    assert proxy.stdout.readline().strip() == "listening"
    return proxy


def test_a_flapping_link_resyncs_partially_and_converges(strata, tmp_path):
    proxy_port = free_port()
    c = Cluster(strata, tmp_path, replicas=1, via={"db2": "127.0.0.1:%d" % proxy_port})
    # The first attach (the one full sync) goes through a proxy that does
    # not cut: on a slow machine a cut during it would make a second one.
    proxy = start_proxy(proxy_port, c.ports["db1"], 0)
    try:
        c.start_all()
        c.wait_online("db2")
        proxy.terminate()  # the first cut; then one every second
        proxy.wait()
        proxy = start_proxy(proxy_port, c.ports["db1"], 1)
        cuts = []
        # Only cuts that broke a link count: on a slow machine the replica
        # may not be back yet when the proxy cuts again.
        threading.Thread(target=lambda: [cuts.append(l) for l in proxy.stdout
                                         if not l.startswith("cut 0 ")],
                         daemon=True).start()
        r = c.client("db1")
        # Writes through several cuts (each one drops the link mid-stream),
        # until at least 3 of them were mended: a cut that lands while the
        # replica is still reconnecting from the last one has no link to
        # break, so how many cuts that takes depends on the machine's pace.
        n = 0
        while len(cuts) < 5 or c.repl("db1")["sync_partial_ok"] < 3:
            pipe = r.pipeline(transaction=False)
            for _ in range(200):
                pipe.set("k%d" % (n % 5000), "v%d" % n)
                n += 1
            pipe.execute()
            assert n < 5_000_000 * SLOW, "the proxy never cut"
            assert len(cuts) < 60, ("60 cuts and fewer than 3 partial resyncs", c.repl("db1"))
        c.wait_converged("db2")
        assert digest(c.client("db2")) == digest(r)
        info = c.repl("db1")
        assert info["sync_full"] == 1, info          # only the first attach
        assert info["sync_partial_ok"] >= 3, info    # the cuts were mended from the backlog
        assert info["sync_partial_err"] == 0, info
    finally:
        proxy.terminate()
        proxy.wait()

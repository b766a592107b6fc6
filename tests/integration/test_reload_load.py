"""Hot reload while traffic flows through the balancer, and a graceful stop
with requests in flight: zero failed requests in both."""
import http.client
import json
import signal
import threading
import time
import urllib.request

from balancer_util import backends  # noqa: F401  (fixture)
from conftest import free_port, run_cli, wait_for

POLICY = """-- version {v}
local M = {{ api = 1 }}
local n = 0
function M.pick(req, backends)
  n = n + 1
  return backends[(n % #backends) + 1]
end
return M
"""


def topology(lb, sup, admin, addrs, policy="pick.lua"):
    backs = ", ".join(f'"{a}"' for a in addrs)
    return (f'strata.supervisor {{ admin = "127.0.0.1:{sup}", drain_timeout = "10s" }}\n'
            f'strata.balancer {{ node = "lb", listen = "127.0.0.1:{lb}",\n'
            f'  backends = {{ {backs} }}, policy = "{policy}" }}\n'
            f'strata.node {{ name = "lb", admin = "127.0.0.1:{admin}" }}\n')


class Load:
    """Client threads sending GETs: half keep one connection alive, half open
    a new connection per request. Every failure is recorded."""

    def __init__(self, port, threads=4):
        self.port = port
        self.stop = threading.Event()
        self.ok = 0
        self.failures = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i % 2 == 0,), daemon=True)
                        for i in range(threads)]

    def run(self, keep_alive):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", "/")
                r = conn.getresponse()
                body = r.read()
                with self.lock:
                    if r.status == 200 and body.startswith(b"web"):
                        self.ok += 1
                    else:
                        self.failures.append((r.status, body[:80]))
                if not keep_alive or r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except Exception as e:  # a reset, a timeout: a failed request
                with self.lock:
                    self.failures.append(repr(e))
                if conn:
                    conn.close()
                conn = None
        if conn:
            conn.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def post_reload(admin):
    req = urllib.request.Request(f"http://127.0.0.1:{admin}/reload", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_many_reloads_under_load_fail_no_request(strata, backends, tmp_path):
    bs = backends(2)
    lb, sup, admin = free_port(), free_port(), free_port()
    (tmp_path / "pick.lua").write_text(POLICY.format(v=0))
    proc = strata(topology(lb, sup, admin, [b.addr for b in bs]), ports=[lb, admin])
    with Load(lb) as load:
        wait_for(lambda: load.ok >= 20, what="traffic flowing")
        gens = []
        for i in range(30):
            (tmp_path / "pick.lua").write_text(POLICY.format(v=i + 1))
            doc = post_reload(admin)
            assert doc["ok"], doc
            gens.append(doc["generation"])
            before = load.ok
            wait_for(lambda: load.ok > before, what="requests between reloads")
        # A few through the command line too, as a user would.
        for i in range(3):
            (tmp_path / "pick.lua").write_text(POLICY.format(v=100 + i))
            r = run_cli("reload", str(proc.topo_path))
            assert r.returncode == 0, r.stderr
    assert gens == list(range(2, 32))
    assert load.failures == [], load.failures[:5]
    assert load.ok > 60


def test_sigterm_finishes_requests_in_flight(strata, backends):
    bs = backends(1)
    lb, sup, admin = free_port(), free_port(), free_port()
    proc = strata(topology(lb, sup, admin, [bs[0].addr], policy="round_robin"), ports=[lb])
    results = []

    def slow_get():
        c = http.client.HTTPConnection("127.0.0.1", lb, timeout=30)
        c.request("GET", "/sleep?s=1.5")
        r = c.getresponse()
        results.append((r.status, r.read()))
        c.close()

    threads = [threading.Thread(target=slow_get) for _ in range(3)]
    for t in threads:
        t.start()
    # The requests are at the backend (it counts them) before the stop.
    wait_for(lambda: bs[0].stats()["requests"] >= 3, what="requests in flight")
    t0 = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(timeout=30)
    assert proc.proc.wait(timeout=30) == 0
    assert [s for s, _ in results] == [200, 200, 200], results
    assert time.monotonic() - t0 < 10
    assert "draining" in proc.output()


def test_status_shows_balancer_rate_latency_and_health(strata, backends, tmp_path):
    bs = backends(2)
    lb, sup, admin = free_port(), free_port(), free_port()
    proc = strata(topology(lb, sup, admin, [b.addr for b in bs], policy="round_robin"),
                  ports=[lb, admin])
    with Load(lb) as load:
        wait_for(lambda: load.ok >= 50, what="traffic")
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=10) as r:
            svc = json.loads(r.read())["services"][0]
        assert 0 < svc["p50_ms"] <= svc["p99_ms"]
        res = run_cli("status", str(proc.topo_path))
    assert load.failures == []
    assert res.returncode == 0, res.stderr
    header, row = [line.split() for line in res.stdout.splitlines()[:2]]
    cols = dict(zip(header, row))
    assert cols["SERVICE"] == "balancer" and cols["HEALTH"] == "2/2"
    assert float(cols["RPS"]) > 0 and float(cols["P99MS"]) > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert 'strata_balancer_backend_latency_seconds{node="lb",service="balancer",quantile="0.99"}' in metrics

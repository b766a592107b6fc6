"""Hot reload of a web app under load fails no request: new requests go to
the new app, requests in flight finish on the old one; a broken app is
refused with file:line and the running one stays. workers = 2 serves from
both workers and reloads both; a stop drains what is in flight."""
import signal
import threading

from conftest import run_cli, wait_for
from web_util import call, get, get_json, ports

APP = r'''
local app = strata.app()
local version = "VERSION"
app:get("/v", function(ctx) return 200, version end)
app:get("/slow", function(ctx)
  ctx:sleep(tonumber(ctx.query.s) or 0.4)
  return 200, "slow-" .. version
end)
return app
'''


def write_app(tmp_path, version):
    (tmp_path / "app.lua").write_text(APP.replace("VERSION", version))


def topo(web, admin, workers=1):
    return (f'strata.node {{ name = "w1", admin = "127.0.0.1:{admin}" }}\n'
            f'strata.web {{ nodes = {{ {{ node = "w1", listen = "127.0.0.1:{web}" }} }},\n'
            f'  app = "app.lua", workers = {workers}, timeout = "10s" }}\n')


class Hammer:
    """Client threads sending GET /v (keep-alive and not); every answer that is
    not a 200 with a known version is a failure."""

    def __init__(self, port, threads=4):
        self.port = port
        self.stop = threading.Event()
        self.seen = {}
        self.failures = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i % 2 == 0,))
                        for i in range(threads)]

    def run(self, keep):
        import http.client
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", "/v")
                r = conn.getresponse()
                body = r.read().decode()
                with self.lock:
                    if r.status == 200 and body.startswith("v"):
                        self.seen[body] = self.seen.get(body, 0) + 1
                    else:
                        self.failures.append((r.status, body[:80]))
                if not keep:
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001
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


def test_reload_under_load_fails_no_request(strata, tmp_path):
    web, admin = ports(2)
    write_app(tmp_path, "v1")
    proc = strata(topo(web, admin), [web])
    with Hammer(web) as h:
        wait_for(lambda: h.seen.get("v1", 0) > 50, what="load on v1")
        for n in range(2, 6):
            slow = {}
            t = threading.Thread(target=lambda: slow.update(r=call(web, "GET", "/slow")))
            t.start()
            wait_for(lambda: get_json(admin, "/status")[2]["services"][0]["in_flight"] >= 1,
                     what="the slow request in flight")
            write_app(tmp_path, f"v{n}")
            r = run_cli("reload", proc.topo_path)
            assert r.returncode == 0, r.stdout + r.stderr
            assert "web" in r.stdout and "app.lua reloaded" in r.stdout, r.stdout
            wait_for(lambda: h.seen.get(f"v{n}", 0) > 20, what=f"load on v{n}")
            t.join()
            # the request in flight finished on the app it started on
            assert slow["r"][0] == 200 and slow["r"][2] == f"slow-v{n - 1}".encode()
        # a broken app is refused; the running one goes on
        (tmp_path / "app.lua").write_text("local app = strata.app()\napp:get('x')\nreturn app\n")
        r = run_cli("reload", proc.topo_path)
        assert r.returncode != 0
        assert "app.lua:2:" in r.stdout + r.stderr
        before = h.seen.get("v5", 0)
        wait_for(lambda: h.seen.get("v5", 0) > before + 20, what="v5 still serving")
    assert h.failures == []
    st = get_json(admin, "/status")[2]["services"][0]
    assert st["reloads"] == 4 and st["responses_5xx"] == 0


def test_two_workers_serve_and_reload(strata, tmp_path):
    web, admin = ports(2)
    write_app(tmp_path, "v1")
    proc = strata(topo(web, admin, workers=2), [web])
    for _ in range(60):
        assert get(web, "/v")[2] == b"v1"
    st = get_json(admin, "/status")[2]["services"][0]
    assert st["workers"] == 2
    assert all(n > 0 for n in st["worker_requests"]), st["worker_requests"]
    assert sum(st["worker_requests"]) == 60
    with Hammer(web) as h:
        write_app(tmp_path, "v2")
        assert run_cli("reload", proc.topo_path).returncode == 0
        # every worker serves v2: 40 fresh connections in a row all see it
        wait_for(lambda: all(get(web, "/v")[2] == b"v2" for _ in range(40)),
                 what="both workers on v2")
        # a broken app fails the reload for every worker: none changes
        (tmp_path / "app.lua").write_text("local app = strata.app()\napp:get('x')\nreturn app\n")
        r = run_cli("reload", proc.topo_path)
        assert r.returncode != 0 and "app.lua:2:" in r.stdout + r.stderr, r.stdout + r.stderr
        assert all(get(web, "/v")[2] == b"v2" for _ in range(40))
    assert h.failures == []
    st = get_json(admin, "/status")[2]["services"][0]
    assert st["reloads"] == 1 and st["reload_failures"] == 0, st


def test_stop_drains_requests_in_flight(strata, tmp_path):
    web, admin = ports(2)
    write_app(tmp_path, "v1")
    proc = strata(topo(web, admin, workers=2), [web])
    results = []
    threads = [threading.Thread(target=lambda: results.append(call(web, "GET", "/slow?s=2")))
               for _ in range(4)]
    for t in threads:
        t.start()
    # both workers' requests count: every one is in a handler, asleep
    wait_for(lambda: get_json(admin, "/status")[2]["services"][0]["in_flight"] == 4,
             what="four requests in flight")
    proc.stop(signal.SIGTERM)
    for t in threads:
        t.join()
    assert [r[0] for r in results] == [200] * 4
    assert all(r[2] == b"slow-v1" for r in results)

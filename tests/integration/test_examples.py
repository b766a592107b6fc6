"""Every example topology passes `strata check`, starts under the
supervisor with every node ready, and answers real clients. Ports and data directories are rewritten to free ones so the test
never collides with anything else on the machine."""
import glob
import http.server
import json
import os
import random
import re
import socket
import threading
import urllib.request

import pytest
import redis

from conftest import ROOT, run_cli, wait_for

# Every topology of examples/ (app.lua is the application they run).
EXAMPLES = sorted(p for p in glob.glob(os.path.join(ROOT, "examples", "*.lua"))
                  if os.path.basename(p) != "app.lua")


def free_block(n):
    """A run of n ports that are free now, below the kernel's ephemeral range
    (so no client socket takes one meanwhile): examples derive admin ports
    from the supervisor's (+1, +2, ...)."""
    for _ in range(200):
        base = random.randrange(20000, 32000 - n)
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                s.bind(("127.0.0.1", p))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError("no free block of ports")


def localize(text, tmp_path):
    """Maps every fixed port in the example into one free block, keeping
    their order (so derived admin ports stay free too), and var/ into tmp."""
    base = free_block(64)
    mapping = {}

    def port(m):
        orig = int(m.group(1))
        if orig not in mapping:
            # The supervisor's admin port gets room for its nodes after it.
            mapping[orig] = base + (0 if "strata.supervisor" in m.string[max(0, m.start() - 40):m.start()]
                                    else 20 + len(mapping))
        return "127.0.0.1:%d" % mapping[orig]

    text = re.sub(r"127\.0\.0\.1:(\d+)", port, text)
    text = text.replace('"../var/', f'"{tmp_path}/var/')
    # The app, its static folder and the policies stay where they are.
    text = text.replace('"app.lua"', f'"{ROOT}/examples/app.lua"')
    text = text.replace('"public"', f'"{ROOT}/examples/public"')
    return text.replace('"policies/', f'"{ROOT}/examples/policies/')


class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = f"hello from {self.server.server_port}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def get(port, path="/"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.status, r.read()


def check_app(port, user_id):
    """examples/app.lua answers through this port: a write, then the read
    (in one session: the client carries the web tier's cookie, so a read
    served by a replica has the write)."""
    session = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    url = f"http://127.0.0.1:{port}"
    assert wait_for(lambda: get(port, "/hello"), what="web answers") == (200, b"hello\n")

    def put():
        req = urllib.request.Request(f"{url}/api/users/{user_id}", method="PUT",
                                     data=json.dumps({"name": "alice"}).encode(),
                                     headers={"Content-Type": "application/json"})
        # Until the web node's first link to the db is up, a write is 503.
        with session.open(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    assert wait_for(put, what="a write through the app") == \
        (200, {"id": user_id, "name": "alice"})
    with session.open(f"{url}/api/users/{user_id}", timeout=5) as r:
        assert r.status == 200 and json.loads(r.read())["name"] == "alice"


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_example_starts_and_answers(strata, tmp_path, path):
    text = localize(open(path).read(), tmp_path)
    topo = tmp_path / os.path.basename(path)
    topo.write_text(text)
    check = run_cli("check", str(topo))
    assert check.returncode == 0, check.stderr
    rows = [line.split() for line in check.stdout.splitlines()[1:-1]]
    services = [(row[1], int(row[2].rsplit(":", 1)[1])) for row in rows]
    replicas = {int(row[2].rsplit(":", 1)[1]) for row in rows if row[1] == "db" and row[3] == "replica"}
    backends = []
    for line in text.splitlines():
        if "backends" in line and not line.lstrip().startswith("--"):
            for p in re.findall(r"127\.0\.0\.1:(\d+)", line):
                srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(p)), Hello)
                threading.Thread(target=srv.serve_forever, daemon=True).start()
                backends.append(srv)
    nodes = {row[0] for row in rows if row[0] != "(supervisor)"}
    checked_apps = []
    try:
        proc = strata(text, ports=[p for kind, p in services if kind != "admin"], name=topo.name)
        # The supervisor reports every node ready (each node says so once
        # all of its services are serving).
        n = len(nodes)
        wait_for(lambda: f"all {n} node{'s' if n != 1 else ''} ready" in proc.output(),
                 what=f"all {n} nodes ready")
        for kind, port in services:
            if port in replicas:
                # A read replica: the primary's write (set above) arrives.
                r = redis.Redis(port=port)
                wait_for(lambda: r.get("example:key") == b"value", what="replicated write")
            elif kind in ("cache", "db"):
                # A cache may follow a db's changes (invalidate_from): its
                # own key, so the db's write cannot delete it under us.
                key = "example:key" if kind == "db" else "example:cached"
                r = redis.Redis(port=port)
                # (a db with failover takes writes once its nodes agree
                # who is primary: READONLY until then)
                wait_for(lambda: r.set(key, "value"), what="a write accepted")
                assert r.get(key) == b"value"
            elif kind == "balancer" and backends:
                status, body = wait_for(lambda: get(port), what="balancer answers")
                assert status == 200 and body.startswith(b"hello from ")
            elif kind in ("balancer", "web"):
                # Web nodes run examples/app.lua; a balancer in front of
                # them answers the same.
                check_app(port, 100 + len(checked_apps))
                checked_apps.append(port)
            elif kind == "admin":
                assert get(port, "/healthz") == (200, b"ok\n")
            else:
                pytest.fail(f"no client for a {kind} service")
        assert len(services) >= 2
    finally:
        for srv in backends:
            srv.shutdown()
            srv.server_close()

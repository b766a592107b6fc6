"""Balancer: faults of the protocol's edges and of the node itself -- a
client that half-closes after pipelining, a backend that answers before the
request body, a balancer out of file descriptors."""
import http.client
import shutil
import socket
import subprocess
import threading

import pytest

from balancer_util import Reader, backends, balancer_topology, lb_status  # noqa: F401
from conftest import SLOW, STRATA_BIN, free_port, port_open, wait_for


def start_lb(strata, bl, admin=False, **opts):
    port = free_port()
    aport = free_port() if admin else None
    proc = strata(balancer_topology(port, bl, admin=aport, **opts),
                  [port] + ([aport] if aport else []))
    return port, aport, proc


def read_all(s):
    out = b""
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return out


def test_pipelined_requests_before_half_close_are_all_answered(strata, backends):
    bl = backends(1)
    port, _, _ = start_lb(strata, bl)
    with socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW) as s:
        s.sendall(b"".join(b"GET /n%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(4)))
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10 * SLOW)
        rd = Reader(s)
        got = []
        for _ in range(4):
            status, headers, body = rd.response()
            got.append((status, headers.get("connection")))
        assert rd.buf == b"" and read_all(s) == b""
    # every one answered; the last says the connection closes
    assert [g[0] for g in got] == [200, 200, 200, 200]
    assert got[-1][1] == "close"


class EarlyAnswerBackend:
    """Answers every request as soon as its head is in, without reading the
    body: what a server refusing `Expect: 100-continue` does."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.name = "early"
        self.conns = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self.handle, args=(c,), daemon=True).start()

    def handle(self, c):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, buf = buf.split(b"\r\n\r\n", 1)
                body = b"too large\n"
                c.sendall(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: %d\r\n\r\n%s"
                          % (len(body), body))
        except OSError:
            return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def test_early_final_answer_to_expect_continue_says_connection_close(strata):
    be = EarlyAnswerBackend()
    try:
        port, _, _ = start_lb(strata, [{"name": be.name, "addr": be.addr}])
        with socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW) as s:
            s.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                      b"Expect: 100-continue\r\n\r\n")
            rd = Reader(s)
            status, headers, body = rd.response()
            assert status == 413 and body == b"too large\n"
            assert headers.get("connection") == "close"
            # and the balancer does close: the body was never sent
            assert rd.buf == b"" and read_all(s) == b""
    finally:
        be.close()


class LimitedLb:
    """`strata run TOPO --node lb` under a lowered descriptor limit, with a
    keep-alive admin connection opened first (no new connection can be
    accepted once descriptors run out)."""

    def __init__(self, tmp_path, bl, nofile, **opts):
        self.port, self.admin = free_port(), free_port()
        topo = tmp_path / "topo.lua"
        topo.write_text(balancer_topology(self.port, bl, admin=self.admin, **opts))
        self.log_path = tmp_path / "lb.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(["prlimit", f"--nofile={nofile}:{nofile}", STRATA_BIN,
                                          "run", str(topo), "--node", "lb"],
                                         stdout=log, stderr=subprocess.STDOUT)
        wait_for(lambda: port_open(self.port) and port_open(self.admin), timeout=15 * SLOW,
                 what="balancer ports")
        self.admin_conn = http.client.HTTPConnection("127.0.0.1", self.admin, timeout=10 * SLOW)
        self.idle = []

    def status(self):
        self.admin_conn.request("GET", "/status")
        import json
        data = json.loads(self.admin_conn.getresponse().read())
        return next(s for s in data["services"] if s["kind"] == "balancer")

    def log(self):
        return self.log_path.read_text()

    def flood(self, n):
        for _ in range(n):
            self.idle.append(socket.create_connection(("127.0.0.1", self.port), timeout=5))

    def unflood(self):
        for s in self.idle:
            s.close()
        self.idle = []

    def stop(self):
        self.unflood()
        self.admin_conn.close()
        self.proc.terminate()
        self.proc.wait(timeout=20 * SLOW)
        assert self.proc.returncode == 0, self.log()[-3000:]


def get_on(sock, path):
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
    return Reader(sock).response()


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) not installed")
def test_out_of_descriptors_is_a_503_and_never_a_backends_fault(tmp_path, backends):
    bl = backends(2)
    # max_conns set far above what the limit allows: the shortage is real
    lb = LimitedLb(tmp_path, bl, 64, max_conns=10000)
    try:
        client = socket.create_connection(("127.0.0.1", lb.port), timeout=10 * SLOW)
        lb.status()  # the client is accepted by now: the loop has turned since
        lb.flood(150)
        wait_for(lambda: "pausing accepts" in lb.log(), timeout=10 * SLOW,
                 what="the accept shortage")
        # more requests than passive ejection needs (5) per backend
        for i in range(12):
            status, headers, body = get_on(client, b"/x%d" % i)
            assert status == 503, (status, body)
            assert headers.get("retry-after") == "1"
        st = lb.status()
        assert st["local_shortages"] == 12
        assert st["panic"] is False
        for be in st["backends"]:
            assert be["healthy"] and be["usable"] and not be["ejected"], be
            assert be["failures"] == 0 and be["requests"] == 0, be
        log = lb.log()
        assert "ejected" not in log and "panic" not in log, log[-3000:]
        assert len([l for l in log.splitlines() if "on this node; answering 503" in l]) == 1
        # descriptors come back: the same client is served again
        lb.unflood()
        wait_for(lambda: get_on(client, b"/after")[0] == 200, timeout=10 * SLOW,
                 what="service after the shortage")
        client.close()
    finally:
        lb.stop()


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) not installed")
def test_health_checks_without_a_socket_are_skipped_not_failed(tmp_path, backends):
    bl = backends(2)
    lb = LimitedLb(tmp_path, bl, 64, max_conns=10000,
                   health={"path": "/healthz", "interval": "100ms", "fall": 1})
    try:
        wait_for(lambda: all(b["checks"] > 0 for b in lb.status()["backends"]),
                 timeout=10 * SLOW, what="first checks")
        lb.flood(150)
        wait_for(lambda: lb.status()["checks_skipped_local"] >= 6, timeout=10 * SLOW,
                 what="health checks skipped for want of a socket")
        st = lb.status()
        assert st["panic"] is False
        for be in st["backends"]:
            assert be["healthy"] and be["checks_failed"] == 0, be
        log = lb.log()
        assert "is down" not in log and "panic" not in log, log[-3000:]
        assert len([l for l in log.splitlines() if "not counted against" in l]) == 1
        lb.unflood()
        n = lb.status()["backends"][0]["checks"]
        wait_for(lambda: lb.status()["backends"][0]["checks"] > n + 2, timeout=10 * SLOW,
                 what="checks running again")
        assert all(b["healthy"] for b in lb.status()["backends"])
    finally:
        lb.stop()


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) not installed")
def test_max_conns_defaults_from_the_descriptor_limit(tmp_path, backends):
    bl = backends(2)
    lb = LimitedLb(tmp_path, bl, 64)
    try:
        # (64 - 32 kept for the node itself) / 2: each client may need a
        # backend socket too
        assert lb.status()["max_conns"] == 16
        client = socket.create_connection(("127.0.0.1", lb.port), timeout=10 * SLOW)
        lb.status()
        lb.flood(150)
        wait_for(lambda: lb.status()["clients"] == 16, timeout=10 * SLOW,
                 what="the balancer at max_conns")
        # clients beyond max_conns were turned away, so a backend socket is
        # still there for the ones it holds
        for i in range(3):
            status, _, _ = get_on(client, b"/y%d" % i)
            assert status == 200
        assert lb.status()["local_shortages"] == 0
        client.close()
    finally:
        lb.stop()

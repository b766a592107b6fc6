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

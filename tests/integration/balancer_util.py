"""Helpers shared by the balancer tests: a `backends` fixture that starts
and kills balancer_backend.py processes, topology text for a balancer in
front of them, and small HTTP clients (http.client and raw sockets)."""
import http.client
import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import free_port, port_open, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))


class Backend:
    def __init__(self, name, port=None, log_dir=None):
        self.name = name
        self.port = port or free_port()
        self.addr = f"127.0.0.1:{self.port}"
        self.proc = None
        self.log_path = os.path.join(log_dir, f"{name}.posts") if log_dir else None

    def start(self):
        extra = [self.log_path] if self.log_path else []
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "balancer_backend.py"),
                                      self.name, str(self.port)] + extra,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: port_open(self.port), what=f"backend {self.name}")
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def get(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def stats(self):
        return json.loads(self.get("/stats")[1])


    def post_ids(self):
        """POST ids this backend processed (from its log: works after a kill)."""
        with open(self.log_path) as f:
            return f.read().split()


@pytest.fixture
def backends(tmp_path):
    """backends(n) starts n backends named web1..webN; all are killed at the end.
    A killed backend starts again on its port with b.start()."""
    started = []

    def start(n, first=1):
        out = [Backend(f"web{i}", log_dir=str(tmp_path)).start()
               for i in range(first, first + n)]
        started.extend(out)
        return out

    yield start
    for b in started:
        b.kill()


def lua_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {lua_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "{ " + ", ".join(lua_value(x) for x in v) + " }"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def balancer_topology(port, backend_list, admin=None, sup=None, **opts):
    """Topology text: one node "lb" with a balancer on `port` (and admin
    endpoints for the node and the supervisor when given)."""
    bl = [{"name": b.name, "addr": b.addr} if isinstance(b, Backend) else b
          for b in backend_list]
    fields = {"node": "lb", "listen": f"127.0.0.1:{port}", "backends": bl}
    fields.update(opts)
    text = ""
    if sup:
        text += f'strata.supervisor {{ admin = "127.0.0.1:{sup}" }}\n'
    if admin:
        text += f'strata.node {{ name = "lb", admin = "127.0.0.1:{admin}" }}\n'
    text += "strata.balancer " + lua_value(fields) + "\n"
    return text


def lb_status(admin):
    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    try:
        c.request("GET", "/status")
        data = json.loads(c.getresponse().read())
    finally:
        c.close()
    return next(s for s in data["services"] if s["kind"] == "balancer")


def get(port, path, headers=None, method="GET", body=None):
    """One request on a fresh connection: (status, headers dict, body)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def raw(port, data, timeout=10):
    """Sends raw bytes, returns everything read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
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


def status_of(response):
    """The status code of the first response in raw bytes (0 when none)."""
    if not response.startswith(b"HTTP/1."):
        return 0
    return int(response.split(b" ", 2)[1])




class Reader:
    """Reads HTTP/1.1 responses one at a time from a socket (Content-Length
    or chunked or until close): tests of pipelining and interim responses."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self, head_request=False):
        """(status, headers with lowercase names, body)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        if head_request or status < 200 or status in (204, 304):
            return status, headers, b""
        if headers.get("transfer-encoding", "").lower().endswith("chunked"):
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line() != b"":
                        pass
                    return status, headers, body
                body += self._take(size)
                self._line()
        if "content-length" in headers:
            return status, headers, self._take(int(headers["content-length"]))
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        body, self.buf = self.buf, b""
        return status, headers, body

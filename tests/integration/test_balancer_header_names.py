"""Balancer: malformed field names and request targets are refused, never
forwarded (RFC 9112 5.1 and 3.2). A backend that trims a name such as
"Content-Length " would frame the body differently from the balancer and
read a second, smuggled request out of it; a response with such a name is
invalid (502). An HTTP/0.9 request line is answered 400 as soon as it ends.
The backend here is a raw socket that records every byte it receives."""
import socket
import threading

import pytest

from balancer_util import balancer_topology, get, raw, status_of
from conftest import free_port, wait_for


class RecordingBackend:
    """Answers each request with `reply` and closes; keeps what it got."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        self.received = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                c.settimeout(5)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = c.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    if data:
                        self.received.append(data)
                        c.sendall(self.reply)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


@pytest.fixture
def lb(strata):
    be = RecordingBackend()
    port = free_port()
    # a head timeout far beyond the socket timeouts below: an answer that
    # waited for it would fail the test instead of passing late
    strata(balancer_topology(port, [{"name": "raw", "addr": be.addr}], retries=0,
                             head_timeout="60s"), [port])
    yield port, be
    be.close()


MALFORMED = [
    ("space before the colon",
     b"POST /public HTTP/1.1\r\nHost: x\r\nContent-Length : 31\r\n\r\n"
     b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("space inside a name", b"GET /public HTTP/1.1\r\nHost: x\r\nX A: 5\r\n\r\n"),
    ("TAB before the colon", b"GET /public HTTP/1.1\r\nHost: x\r\nX-A\t: 5\r\n\r\n"),
    ("control byte in a name", b"GET /public HTTP/1.1\r\nHost: x\r\nX\x01A: 5\r\n\r\n"),
    ("separator in a name", b"GET /public HTTP/1.1\r\nHost: x\r\nX@A: 5\r\n\r\n"),
    ("TAB in the target", b"GET /public\t/admin HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("space in the target", b"GET /public /admin HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("control byte in the target", b"GET /pub\x01lic HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("two spaces after the method", b"GET  /public HTTP/1.1\r\nHost: x\r\n\r\n"),
]


@pytest.mark.parametrize("name,data", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_request_is_400_and_never_forwarded(lb, name, data):
    port, be = lb
    out = raw(port, data)
    assert status_of(out) == 400, f"{name}: {out[:200]!r}"
    assert b"\r\nConnection: close\r\n" in out
    # a good request after it goes through: the balancer is fine, and the
    # malformed one never reached the backend
    assert get(port, "/ok")[0] == 200
    assert len(be.received) == 1 and be.received[0].startswith(b"GET /ok HTTP/1.1\r\n")


def test_http09_request_line_is_400_at_once(lb):
    port, be = lb
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /\r\n")  # no version, and no end of head ever
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert status_of(data) == 400, data[:200]
    assert be.received == []


@pytest.mark.parametrize("head", [
    b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX A: 1\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX\x01: 1\r\nContent-Length: 2\r\n\r\n",
])
def test_response_with_malformed_name_is_502(lb, head):
    port, be = lb
    be.reply = head + b"ok"
    status, hdrs, body = get(port, "/x")
    assert status == 502, (status, body)
    assert b"X A" not in body and b"X\x01" not in body
    wait_for(lambda: len(be.received) == 1, what="the request reached the backend")
    be.reply = b"HTTP/1.1 200 OK\r\nX-Good: 1\r\nContent-Length: 2\r\n\r\nok"
    status, hdrs, body = get(port, "/y")
    assert status == 200 and hdrs["x-good"] == "1" and body == b"ok"

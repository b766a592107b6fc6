"""Balancer: proxying itself -- headers, keep-alive, pipelining, HTTP/1.0,
streamed bodies in both directions."""
import hashlib
import re
import http.client
import socket
import time

from balancer_backend import pattern
from balancer_util import Reader, backends, balancer_topology, get, raw, status_of  # noqa: F401
from conftest import free_port


def start_lb(strata, bl, **opts):
    port = free_port()
    strata(balancer_topology(port, bl, **opts), [port])
    return port


def test_forwarding_headers(strata, backends):
    (b,) = backends(1)
    port = start_lb(strata, [b])
    status, hdrs, body = get(port, "/headers", headers={
        "X-Forwarded-For": "10.0.0.1", "Via": "1.1 edge", "Connection": "close, X-Secret",
        "X-Secret": "s", "Keep-Alive": "timeout=5", "TE": "trailers", "X-Keep": "yes"})
    assert status == 200
    seen = dict(line.split(": ", 1) for line in body.decode().splitlines())
    assert seen["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert seen["x-forwarded-proto"] == "http"
    assert seen["via"] == "1.1 edge, 1.1 strata"
    assert seen["x-keep"] == "yes"
    for hop in ("x-secret", "keep-alive", "te"):
        assert hop not in seen, hop
    assert seen.get("connection") is None
    assert hdrs["x-backend"] == "web1"


def test_keep_alive_reuses_backend_connection(strata, backends):
    (b,) = backends(1)
    port = start_lb(strata, [b])
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conns, client_socks = set(), set()
    for _ in range(30):
        c.request("GET", "/x")
        r = c.getresponse()
        assert r.status == 200 and r.read() == b"web1\n"
        conns.add(r.getheader("X-Conn"))
        client_socks.add(id(c.sock))
    c.close()
    assert len(client_socks) == 1  # the client connection stayed open
    assert len(conns) == 1         # and so did the pooled backend connection


def test_pipelined_requests_answered_in_order(strata, backends):
    (b,) = backends(1)
    port = start_lb(strata, [b])
    reqs = b"".join(b"GET /status/%d HTTP/1.1\r\nHost: x\r\n\r\n" % code
                    for code in (201, 202, 203))
    reqs += b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = raw(port, reqs)
    codes = [int(c) for c in re.findall(rb"HTTP/1\.1 (\d{3}) ", out)]
    assert codes == [201, 202, 203, 200]
    assert out.endswith(b"web1\n")


def test_http10_client(strata, backends):
    (b,) = backends(1)
    port = start_lb(strata, [b])
    out = raw(port, b"GET /a HTTP/1.0\r\n\r\n")
    assert status_of(out) == 200
    assert b"\r\nConnection: close\r\n" in out and out.endswith(b"web1\n")
    # keep-alive on request, and chunked responses are decoded for 1.0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head = b""
        while b"web1\n" not in head:
            head += s.recv(4096)
        assert b"\r\nConnection: keep-alive\r\n" in head
        s.sendall(b"GET /big?n=1000&chunked=1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        rest = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
    head, body = rest.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding" not in head and b"Connection: close" in head
    assert body == pattern(1000)


def test_head_request(strata, backends):
    (b,) = backends(1)
    port = start_lb(strata, [b])
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("HEAD", "/x")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Length") == "5" and r.read() == b""
    c.request("GET", "/x")  # same connection still in sync
    assert c.getresponse().read() == b"web1\n"
    c.close()


def test_large_bodies_stream_intact(strata, backends):
    (b,) = backends(1)
    port = start_lb(strata, [b])
    n = 8 * 1024 * 1024 + 13
    want = hashlib.sha256(pattern(n)).hexdigest()
    for chunked in (0, 1):
        status, hdrs, body = get(port, f"/big?n={n}&chunked={chunked}")
        assert status == 200 and len(body) == n
        assert hashlib.sha256(body).hexdigest() == want
        assert ("transfer-encoding" in hdrs) == bool(chunked)
    # uploads: Content-Length and chunked
    data = pattern(5 * 1024 * 1024 + 7)
    digest = hashlib.sha256(data).hexdigest()
    status, _, body = get(port, "/echo", method="POST", body=data)
    assert status == 200 and body.decode().split() == [digest, str(len(data))]

    def chunks():
        for i in range(0, len(data), 100000):
            yield data[i:i + 100000]
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    c.request("POST", "/echo", body=chunks(), encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    r = c.getresponse()
    assert r.status == 200 and r.read().decode().split() == [digest, str(len(data))]
    c.close()


def test_slow_reader_gets_everything(strata, backends):
    """Backpressure: a client that reads slowly still gets the body intact."""
    (b,) = backends(1)
    port = start_lb(strata, [b])
    n = 4 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % n)
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
            time.sleep(0.0002)  # slower than the backend writes: pauses it
    body = got.split(b"\r\n\r\n", 1)[1]
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(pattern(n)).hexdigest()


def test_expect_continue(strata, backends):
    (b,) = backends(1)
    port = start_lb(strata, [b])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        rd = Reader(s)
        status, _, _ = rd.response()
        assert status == 100  # relayed before the body is sent
        s.sendall(b"hello")
        status, _, body = rd.response()
    assert status == 200
    assert body.decode().split() == [hashlib.sha256(b"hello").hexdigest(), "5"]

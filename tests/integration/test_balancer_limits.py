"""Balancer: bad and abusive input gets the right status, and other clients
keep being served meanwhile; timeouts and connection limits."""
import http.client
import socket

import pytest

from balancer_util import Reader, backends, balancer_topology, get, raw, status_of  # noqa: F401
from conftest import free_port, wait_for

BAD = [
    ("bare LF", b"GET / HTTP/1.1\nHost: x\n\n", 400),
    ("bare LF in a header", b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n  b\r\n\r\n", 400),
    ("CL and TE", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("TE and CL", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Length: 3\r\n\r\n0\r\n\r\n", 400),
    ("duplicate CL", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
                     b"Content-Length: 1\r\n\r\nab", 400),
    ("CL list", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\na", 400),
    ("CL not a number", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\na", 400),
    ("CL negative", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    ("TE not ending in chunked", b"POST / HTTP/1.1\r\nHost: x\r\n"
                                 b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("TE unknown", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("bad chunk size", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"zz\r\nabc\r\n0\r\n\r\n", 400),
    ("no Host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("space before colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    ("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
    ("CONNECT", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501),
    ("request line too long", b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    ("header too large", b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 2000 + b"\r\n\r\n", 431),
    ("too many headers", b"GET / HTTP/1.1\r\nHost: x\r\n" +
     b"".join(b"X-%d: 1\r\n" % i for i in range(30)) + b"\r\n", 431),
]


@pytest.fixture
def lb(strata, backends):
    (b,) = backends(1)
    port = free_port()
    strata(balancer_topology(port, [b], max_request_line=256, max_header_size=1024,
                             max_headers=20, head_timeout="300ms", client_timeout="2s",
                             server_timeout="500ms"), [port])
    return port, b


def test_bad_requests_get_their_status(lb):
    port, b = lb
    good = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for name, data, want in BAD:
        out = raw(port, data)
        assert status_of(out) == want, f"{name}: {out[:200]!r}"
        assert b"\r\nConnection: close\r\n" in out, name
        # a well-behaved keep-alive client is served between every bad one
        good.request("GET", "/ok")
        r = good.getresponse()
        assert r.status == 200 and r.read() == b"web1\n", name
    good.close()
    # nothing bad reached the backend: only the good requests did
    assert b.stats()["requests"] == len(BAD)


def test_bad_request_after_good_on_same_connection(lb):
    port, _ = lb
    out = raw(port, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\nHost: x\n\n")
    assert out.startswith(b"HTTP/1.1 200 ")
    assert b"HTTP/1.1 400 Bad Request\r\n" in out


def test_slowloris_head_deadline(lb):
    port, _ = lb
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        # others are served while it dawdles
        assert get(port, "/ok")[0] == 200
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert status_of(data) == 408


def test_idle_client_is_closed(lb):
    port, _ = lb
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        rd = Reader(s)
        assert rd.response()[0] == 200
        with pytest.raises(EOFError):  # after client_timeout of silence
            rd.response()


def test_backend_response_timeout_is_504(lb):
    port, _ = lb
    status, hdrs, body = get(port, "/sleep?s=3")
    assert status == 504 and body == b"Gateway Timeout\n"
    assert get(port, "/ok")[0] == 200


def test_max_conns(strata, backends):
    (b,) = backends(1)
    port = free_port()
    strata(balancer_topology(port, [b], max_conns=2), [port])
    a = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for conn in (a, c):
        conn.request("GET", "/x")
        assert conn.getresponse().read() == b"web1\n"
    # a third connection is closed at once
    assert raw(port, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n") == b""
    a.close()
    wait_for(lambda: get(port, "/x")[0] == 200, what="a slot after closing one")
    c.close()


def test_backend_pool_is_bounded_and_idles_out(strata, backends):
    """At most pool_max_idle connections per backend wait in the pool, and
    a pooled connection unused for pool_idle_timeout is closed."""
    import threading
    from balancer_util import lb_status
    (b,) = backends(1)
    port, admin = free_port(), free_port()
    strata(balancer_topology(port, [b], admin=admin, pool_max_idle=2,
                             pool_idle_timeout="500ms"), [port, admin])
    # Four requests at once: four backend connections; two may stay pooled.
    # Each client holds its own connection open until all four are answered.
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(4)]
    results = []

    def one(c):
        c.request("GET", "/sleep?s=0.3")
        results.append(c.getresponse().read())

    threads = [threading.Thread(target=one, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [b"slept\n"] * 4
    be = lb_status(admin)["backends"][0]
    assert be["idle"] <= 2, be
    # Pooled connections idle out: the pool empties by itself.
    wait_for(lambda: lb_status(admin)["backends"][0]["idle"] == 0 and
             lb_status(admin)["backends"][0]["connections"] == 0, what="the pool to idle out")
    # and a pooled connection is still used before it expires.
    for c in conns:
        c.close()
    assert get(port, "/x")[0] == 200


def test_pool_max_idle_zero_pools_nothing(strata, backends):
    from balancer_util import lb_status
    (b,) = backends(1)
    port, admin = free_port(), free_port()
    strata(balancer_topology(port, [b], admin=admin, pool_max_idle=0), [port, admin])
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(3):
        c.request("GET", "/x")
        assert c.getresponse().read() == b"web1\n"
    wait_for(lambda: lb_status(admin)["backends"][0]["connections"] == 0,
             what="every backend connection closed after its response")
    assert lb_status(admin)["backends"][0]["idle"] == 0
    c.close()

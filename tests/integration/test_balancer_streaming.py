"""Large bodies through the balancer: past the hold limit (64 KiB) a
response streams, and memory stays bounded on both sides while a reader
(or a backend reading an upload) is slower than the other side. The bytes
arrive exact. The balancer's RSS is sampled between reads: it must not
grow with the body (a proxy that buffered the body, or that grew a buffer
per read, would grow by tens of MB here)."""
import hashlib
import os
import socket
import threading

from balancer_backend import pattern
from balancer_util import backends, balancer_topology  # noqa: F401 (fixture)
from conftest import free_port

BODY = 48 * 1024 * 1024 + 5
BOUND = 8 * 1024 * 1024  # RSS growth allowed while BODY passes


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def asan_env():
    """Under AddressSanitizer freed blocks wait in a quarantine (hundreds of
    MB) before reuse: turn it off so that RSS measures what is live."""
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") + "quarantine_size_mb=0"}


def start(strata, b):
    port = free_port()
    # --node: the process is the balancer node itself, whose RSS we read
    proc = strata(balancer_topology(port, [b]), [port], args=["--node", "lb"], env=asan_env())
    return port, proc.proc.pid


def read_response(s, pid, base, on_step):
    """Reads one Content-Length response from s in 16 KiB steps, calling
    on_step between reads; returns (head, sha256 of the body, length)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, body = buf.split(b"\r\n\r\n", 1)
    length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:")][0])
    h = hashlib.sha256(body)
    got = len(body)
    while got < length:
        chunk = s.recv(min(16384, length - got))
        assert chunk, "connection closed mid-body"
        h.update(chunk)
        got += len(chunk)
        on_step()
    return head, h.hexdigest(), got


def test_large_response_streams_with_bounded_memory(strata, backends):
    (b,) = backends(1)
    port, pid = start(strata, b)
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        # a small receive buffer: the reader is the slow side
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.sendall(b"GET /big?n=1000000 HTTP/1.1\r\nHost: x\r\n\r\n")  # warm up, same connection
        read_response(s, pid, 0, lambda: None)
        base = rss(pid)
        peak = [base]

        def sample():
            peak[0] = max(peak[0], rss(pid))

        s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % BODY)
        head, digest, n = read_response(s, pid, base, sample)
        assert head.startswith(b"HTTP/1.1 200")
        assert n == BODY and digest == hashlib.sha256(pattern(BODY)).hexdigest()
        assert peak[0] - base < BOUND, f"RSS grew by {(peak[0] - base) >> 20} MB"
        # the connection is still in step: one more request on it
        s.sendall(b"GET /big?n=10 HTTP/1.1\r\nHost: x\r\n\r\n")
        _, digest, n = read_response(s, pid, base, lambda: None)
        assert n == 10 and digest == hashlib.sha256(pattern(10)).hexdigest()


def test_large_upload_streams_with_bounded_memory(strata):
    """The backend is this test: it reads the upload in 16 KiB steps,
    sampling the balancer's RSS between them, so it is the slow side."""
    data = pattern(BODY)
    lst = socket.create_server(("127.0.0.1", 0))
    bport = lst.getsockname()[1]
    port = free_port()
    proc = strata(balancer_topology(port, [{"name": "slow", "addr": f"127.0.0.1:{bport}"}]),
                  [port], args=["--node", "lb"], env=asan_env())
    pid = proc.proc.pid
    result = {}

    def backend():
        conn, _ = lst.accept()
        with conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += conn.recv(16384)
            head, body = buf.split(b"\r\n\r\n", 1)
            length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")][0])
            h = hashlib.sha256(body)
            got = len(body)
            base = rss(pid)
            peak = base
            while got < length:
                chunk = conn.recv(min(16384, length - got))
                assert chunk
                h.update(chunk)
                got += len(chunk)
                peak = max(peak, rss(pid))
            result.update(digest=h.hexdigest(), n=got, growth=peak - base)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    t = threading.Thread(target=backend)
    t.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % BODY)
            step = 1024 * 1024
            for i in range(0, BODY, step):
                s.sendall(data[i:i + step])  # blocks while the backend is behind
            buf = b""
            while not buf.endswith(b"ok"):
                chunk = s.recv(4096)
                assert chunk
                buf += chunk
    finally:
        t.join(timeout=60)
        lst.close()
    assert buf.startswith(b"HTTP/1.1 200")
    assert result["n"] == BODY and result["digest"] == hashlib.sha256(data).hexdigest()
    assert result["growth"] < BOUND, f"RSS grew by {result['growth'] >> 20} MB"


def test_idle_keep_alive_clients_hold_no_buffers(strata, backends):
    """1,000 keep-alive clients, each idle after one 12 KB answer: between
    requests a client gives back its kept request head, its held response
    and its drained output block, so the balancer's RSS grows by about its
    structs per client, not by the answers' size."""
    (b,) = backends(1)
    port, pid = start(strata, b)
    n, size = 1000, 12000
    warm = socket.create_connection(("127.0.0.1", port), timeout=10)
    warm.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
    read_answer(warm, size)
    base = rss(pid)
    socks = []
    try:
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET /big?n=%d HTTP/1.1\r\nHost: t\r\n\r\n" % size)
            socks.append(s)
        for s in socks:
            read_answer(s, size)
        per_client = (rss(pid) - base) / n
        assert per_client < 4096, f"{per_client:.0f} bytes per idle client"
    finally:
        for s in socks + [warm]:
            s.close()


def read_answer(s, size):
    """Reads one answer with a Content-Length body of `size` bytes."""
    got = b""
    while b"\r\n\r\n" not in got:
        chunk = s.recv(65536)
        assert chunk, "closed before the head"
        got += chunk
    head, body = got.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200"), head[:80]
    while len(body) < size:
        chunk = s.recv(65536)
        assert chunk, "closed inside the body"
        body += chunk
    assert len(body) == size

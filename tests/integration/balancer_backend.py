"""A small HTTP/1.1 backend for the balancer tests, run as its own process
(so a test can kill -9 it): `python3 balancer_backend.py NAME PORT [POST_ID_LOG]`.

Every response names the backend (body and X-Backend) and the backend-side
connection it came over (X-Conn), so tests can see distribution and
keep-alive reuse. Other endpoints:

  GET  /healthz            200 "ok" (counted); ?fail=1 makes it answer 503,
                           ?err=1 makes every other request answer 500
  GET  /big?n=N&chunked=1  N pattern bytes, chunked or with Content-Length
  POST /echo               reads the body (Content-Length or chunked) and
                           answers "sha256 length"; X-Req-Id values are logged
  GET  /status/CODE        answers CODE
  GET  /sleep?s=SECONDS     answers after a while
  GET  /headers            the request headers, one "name: value" a line
  GET|POST /die-after-head?on=NAME[&n=N]
                           on backend NAME: sends a 200 head announcing N
                           body bytes (default 1000), then N/2 of them, then
                           closes the connection; other backends answer as
                           usual (a POST after logging its X-Req-Id)
  GET  /stats              JSON counters (requests, health hits, POST ids)
"""
import hashlib
import itertools
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def pattern(n):
    """Deterministic bytes: the test computes the same to compare."""
    block = bytes(range(256)) * 64
    out = bytearray()
    while len(out) < n:
        out += block
    return bytes(out[:n])


class State:
    def __init__(self, name, log_path=None):
        self.name = name
        # POST ids are also appended to a file, readable after a kill -9
        self.log = open(log_path, "a", buffering=1) if log_path else None
        self.erroring = False
        self.lock = threading.Lock()
        self.requests = 0
        self.health = 0
        self.failing = False
        self.post_ids = []
        self.conn_ids = itertools.count(1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "testbackend"
    disable_nagle_algorithm = True  # headers and body go out as separate writes

    def setup(self):
        super().setup()
        self.conn_id = next(self.server.state.conn_ids)

    def log_message(self, *args):
        pass

    def reply(self, code, body, headers=()):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Backend", self.server.state.name)
        self.send_header("X-Conn", str(self.conn_id))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def die_after_head(self, q):
        """The head and half the body, then the connection ends: a backend
        dying mid-response. The close comes after the bytes, in order, so
        the balancer has seen the head when the connection fails."""
        n = int(q.get("n", ["1000"])[0])
        self.send_response(200)
        self.send_header("Content-Length", str(n))
        self.send_header("X-Backend", self.server.state.name)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(pattern(n)[:n // 2])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def dies_here(self, url, q):
        return url.path == "/die-after-head" and self.server.state.name in q.get("on", [])

    def read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            data = bytearray()
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline(16)
        n = int(self.headers.get("Content-Length", "0") or 0)
        return self.rfile.read(n) if n else b""

    def do_GET(self):
        st = self.server.state
        url = urlparse(self.path)
        q = parse_qs(url.query)
        if url.path == "/healthz":
            with st.lock:
                st.health += 1
                if "fail" in q:
                    st.failing = q["fail"][0] == "1"
                if "err" in q:
                    st.erroring = q["err"][0] == "1"
                failing = st.failing
            return self.reply(503 if failing else 200, b"ok\n")
        if url.path == "/stats":
            with st.lock:
                body = json.dumps({"name": st.name, "requests": st.requests,
                                   "health": st.health, "post_ids": st.post_ids}).encode()
            return self.reply(200, body)
        with st.lock:
            st.requests += 1
            erroring = st.erroring
        if erroring:
            return self.reply(500, b"error\n")
        if url.path == "/big":
            n = int(q.get("n", ["0"])[0])
            data = pattern(n)
            if q.get("chunked", ["0"])[0] == "1":
                self.send_response(200)
                self.send_header("Transfer-Encoding", "chunked")
                self.send_header("X-Backend", st.name)
                self.end_headers()
                step = 70000
                for i in range(0, n, step):
                    part = data[i:i + step]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
                return
            return self.reply(200, data)
        if url.path == "/sleep":
            time.sleep(float(q.get("s", ["1"])[0]))
            return self.reply(200, b"slept\n")
        if self.dies_here(url, q):
            return self.die_after_head(q)
        if url.path == "/die-after-head":
            return self.reply(200, pattern(int(q.get("n", ["1000"])[0])))
        if url.path.startswith("/status/"):
            return self.reply(int(url.path[8:]), b"status\n")
        if url.path == "/headers":
            body = "".join(f"{k.lower()}: {v}\n" for k, v in self.headers.items()).encode()
            return self.reply(200, body)
        return self.reply(200, (st.name + "\n").encode())

    do_HEAD = do_GET
    do_DELETE = do_GET

    def do_POST(self):
        st = self.server.state
        body = self.read_body()
        rid = self.headers.get("X-Req-Id")
        with st.lock:
            st.requests += 1
            if rid:
                st.post_ids.append(rid)
                if st.log:
                    st.log.write(rid + "\n")
        url = urlparse(self.path)
        q = parse_qs(url.query)
        if self.dies_here(url, q):
            return self.die_after_head(q)
        digest = hashlib.sha256(body).hexdigest()
        self.reply(200, f"{digest} {len(body)}\n".encode())

    do_PUT = do_POST


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


def main():
    name, port = sys.argv[1], int(sys.argv[2])
    srv = Server(("127.0.0.1", port), Handler)
    srv.state = State(name, sys.argv[3] if len(sys.argv) > 3 else None)
    print("ready", flush=True)
    srv.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    main()

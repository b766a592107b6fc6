"""WebSocket through the balancer: the upgrade is forwarded, the backend's
101 relayed, and bytes then flow both ways as a tunnel -- with a real
WebSocket client and server (python3-websockets) on either side."""
import asyncio
import http
import socket
import threading

import pytest

from balancer_util import Reader, balancer_topology, lb_status
from conftest import SLOW, free_port, wait_for

websockets = pytest.importorskip("websockets")


class EchoServer:
    """A WebSocket server on its own asyncio loop in a thread: says
    "welcome", then echoes every message. /bye says "bye" and closes;
    /deny refuses the handshake with a plain 403."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.closed = 0
        threading.Thread(target=self._run, daemon=True).start()
        assert self.ready.wait(10)
        self.addr = f"127.0.0.1:{self.port}"

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(websockets.serve(
            self._handler, "127.0.0.1", 0, max_size=None, ping_interval=None,
            process_request=self._process_request))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _process_request(self, path, headers):
        if path == "/deny":
            return http.HTTPStatus.FORBIDDEN, [("Content-Type", "text/plain")], b"denied\n"
        return None

    async def _handler(self, ws, path=None):
        try:
            await ws.send("welcome")
            if ws.path == "/bye":
                await ws.send("bye")
                await ws.close()
                return
            async for msg in ws:
                await ws.send(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed += 1

    def stop(self):
        async def _stop():
            self.server.close()
            await self.server.wait_closed()
        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture
def echo():
    srv = EchoServer()
    yield srv
    srv.stop()


def start_lb(strata, echo, **opts):
    port, admin = free_port(), free_port()
    strata(balancer_topology(port, [{"name": "ws1", "addr": echo.addr}], admin=admin, **opts),
           [port, admin])
    return port, admin


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30 * SLOW))


def test_messages_echo_both_ways_through_the_tunnel(strata, echo):
    port, admin = start_lb(strata, echo)

    async def talk():
        async with websockets.connect(f"ws://127.0.0.1:{port}/chat", max_size=None,
                                      ping_interval=None) as ws:
            assert await ws.recv() == "welcome"  # backend -> client unprompted
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01\xff")
            assert await ws.recv() == b"\x00\x01\xff"
            big = bytes(range(256)) * 4096  # 1 MiB: well past every buffer
            await ws.send(big)
            assert await ws.recv() == big
            st = lb_status(admin)
            assert st["tunnels"] == 1 and st["tunnels_total"] == 1
    run(talk())
    # the client closed: so did the balancer's side to the backend
    wait_for(lambda: lb_status(admin)["tunnels"] == 0, timeout=10 * SLOW, what="tunnel closed")
    wait_for(lambda: echo.closed == 1, timeout=10 * SLOW, what="backend side closed")
    # and the balancer still serves plain HTTP on other connections
    assert lb_status(admin)["clients"] == 0


def test_backend_closing_closes_the_client(strata, echo):
    port, admin = start_lb(strata, echo)

    async def talk():
        async with websockets.connect(f"ws://127.0.0.1:{port}/bye", ping_interval=None) as ws:
            assert await ws.recv() == "welcome"
            assert await ws.recv() == "bye"
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
    run(talk())
    wait_for(lambda: lb_status(admin)["tunnels"] == 0, timeout=10 * SLOW, what="tunnel closed")
    assert lb_status(admin)["tunnels_total"] == 1


def test_refused_upgrade_is_a_normal_response(strata, echo):
    port, admin = start_lb(strata, echo)

    async def talk():
        with pytest.raises(websockets.InvalidStatusCode) as e:
            async with websockets.connect(f"ws://127.0.0.1:{port}/deny"):
                pass
        assert e.value.status_code == 403
    run(talk())
    # raw: the 403 with its body, and the connection kept for the next request
    with socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW) as s:
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        s.sendall(b"GET /deny HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                  b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                  b"Sec-WebSocket-Key: " + key.encode() + b"\r\n\r\n")
        status, headers, body = Reader(s).response()
        assert status == 403 and body == b"denied\n"
        assert "upgrade" not in headers
    st = lb_status(admin)
    assert st["tunnels"] == 0 and st["tunnels_total"] == 0


def test_idle_tunnel_times_out(strata, echo):
    port, admin = start_lb(strata, echo, tunnel_timeout="300ms")

    async def talk():
        async with websockets.connect(f"ws://127.0.0.1:{port}/idle", ping_interval=None,
                                      close_timeout=1) as ws:
            assert await ws.recv() == "welcome"
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()  # nothing more comes: the balancer closes
    run(talk())
    wait_for(lambda: lb_status(admin)["tunnels"] == 0, timeout=10 * SLOW, what="tunnel closed")


class FloodBackend:
    """Accepts a handshake with a 101, then writes `total` bytes as fast as
    the connection takes them (raw: the balancer relays bytes, not frames),
    then closes."""

    def __init__(self, total):
        self.total = total
        self.sent = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        c, _ = self.sock.accept()
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += c.recv(65536)
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                  b"Upgrade: websocket\r\nSec-WebSocket-Accept: x\r\n\r\n")
        block = bytes(range(256)) * 256
        while self.sent < self.total:
            c.sendall(block)
            self.sent += len(block)
        c.close()


def test_tunnel_backpressure_stops_a_fast_backend(strata):
    total = 64 << 20
    be = FloodBackend(total)
    port, admin = free_port(), free_port()
    strata(balancer_topology(port, [{"name": "flood", "addr": be.addr}], admin=admin),
           [port, admin])
    with socket.create_connection(("127.0.0.1", port), timeout=30 * SLOW) as s:
        s.sendall(b"GET /flood HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                  b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1)
        assert head.startswith(b"HTTP/1.1 101 ")
        # the client reads nothing: the backend must be held back, not
        # buffered without bound in the balancer
        last = [-1]

        def stalled():
            v, was = be.sent, last[0]
            last[0] = v
            return v == was and v > 0
        wait_for(stalled, timeout=30 * SLOW, interval=0.5, what="the backend held back")
        assert be.sent < total // 2, be.sent
        # reading resumes the flow, every byte arrives, and the backend's
        # close ends the tunnel on the client's side
        got = 0
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        assert got == total
    wait_for(lambda: lb_status(admin)["tunnels"] == 0, timeout=10 * SLOW, what="tunnel closed")

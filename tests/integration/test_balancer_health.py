"""Balancer: losing backends. Retries hide a killed backend from GETs and
never send a POST twice; active checks take a backend out and bring it
back after `rise` checks; passive ejection; panic; clear 502/503."""
import http.client
import itertools
import socket
import threading

import pytest

from balancer_backend import pattern
from balancer_util import backends, balancer_topology, get, lb_status  # noqa: F401
from conftest import free_port, wait_for

HEALTH = {"path": "/healthz", "interval": "100ms", "timeout": "500ms", "rise": 3, "fall": 2}


def start_lb(strata, bl, **opts):
    port, admin = free_port(), free_port()
    proc = strata(balancer_topology(port, bl, admin=admin, **opts), [port, admin])
    return port, admin, proc


def backend_state(admin, name):
    return next(b for b in lb_status(admin)["backends"] if b["name"] == name)


def test_killed_backend_invisible_to_gets_and_posts_never_twice(strata, backends):
    bl = backends(3)
    port, admin, _ = start_lb(strata, bl, health=HEALTH, retries=2)
    ids = itertools.count()
    lock = threading.Lock()
    res = {"gets": 0, "get_ok": 0, "get_bad": [], "post_ok": [], "post_failed": []}
    killed = threading.Event()

    def worker():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        after = 0
        for i in range(3000):  # bounded; normally ends 60 requests after the kill
            if killed.is_set():
                after += 1
                if after > 60:
                    break
            with lock:
                rid = f"p{next(ids)}"
            post = i % 3 == 0
            try:
                if post:
                    c.request("POST", "/echo", body=b"payload", headers={"X-Req-Id": rid})
                else:
                    with lock:
                        res["gets"] += 1
                    c.request("GET", f"/g/{i}")
                r = c.getresponse()
                body = r.read()
                with lock:
                    if post:
                        (res["post_ok"] if r.status == 200 else res["post_failed"]).append(rid)
                    elif r.status == 200 and body.startswith(b"web"):
                        res["get_ok"] += 1
                    else:
                        res["get_bad"].append((r.status, body))
                if r.getheader("Connection") == "close":
                    c.close()
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    (res["post_failed"] if post else res["get_bad"]).append(repr(e))
                c.close()
        c.close()

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    wait_for(lambda: bl[1].stats()["requests"] >= 30, what="load on web2")
    bl[1].kill()
    killed.set()
    for t in threads:
        t.join()
    assert res["get_bad"] == []
    assert res["get_ok"] == res["gets"] > 0
    # every POST id was processed at most once, across all backends
    seen = [rid for b in bl for rid in b.post_ids()]
    assert len(seen) == len(set(seen))
    # and every POST answered 200 was processed
    assert set(res["post_ok"]) <= set(seen)
    wait_for(lambda: not backend_state(admin, "web2")["healthy"], what="web2 marked down")


def test_recovery_after_rise_checks(strata, backends):
    bl = backends(3)
    port, admin, proc = start_lb(strata, bl, health=HEALTH)
    bl[1].kill()
    wait_for(lambda: not backend_state(admin, "web2")["healthy"], what="web2 down")
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(12):
        c.request("GET", "/x")
        r = c.getresponse()
        assert r.status == 200 and r.getheader("X-Backend") != "web2"
        r.read()
    bl[1].start()  # a fresh process: its health counter starts at 0

    def up_with_enough_checks():
        healthy = backend_state(admin, "web2")["healthy"]
        hits = bl[1].stats()["health"]
        assert not healthy or hits >= HEALTH["rise"], f"up after only {hits} checks"
        return healthy
    wait_for(up_with_enough_checks, what="web2 up again")
    assert "web2" in proc.output() and "is up: 3 checks passed" in proc.output()
    counts = {}
    for _ in range(30):
        c.request("GET", "/x")
        r = c.getresponse()
        r.read()
        counts[r.getheader("X-Backend")] = counts.get(r.getheader("X-Backend"), 0) + 1
    assert counts == {"web1": 10, "web2": 10, "web3": 10}
    c.close()


def test_failing_health_check_takes_backend_out(strata, backends):
    bl = backends(2)
    port, admin, proc = start_lb(strata, bl, health=HEALTH)
    bl[0].get("/healthz?fail=1")
    wait_for(lambda: not backend_state(admin, "web1")["healthy"], what="web1 down")
    assert "backend web1" in proc.output() and "status 503" in proc.output()
    assert {get(port, "/x")[1]["x-backend"] for _ in range(10)} == {"web2"}


def test_passive_ejection_and_return(strata, backends):
    bl = backends(2)
    port, admin, proc = start_lb(strata, bl, passive={"errors": 3, "cooldown": "1s"})
    bl[0].get("/healthz?err=1")  # web1 now answers 500 to everything
    statuses = [get(port, "/x")[0] for _ in range(20)]
    # round robin alternates: web1 fails 3 times in a row, then is ejected
    assert statuses.count(500) == 3
    assert backend_state(admin, "web1")["ejected"] is True
    assert "ejected for 1.0s after 3 consecutive errors" in proc.output()
    bl[0].get("/healthz?err=0")
    wait_for(lambda: not backend_state(admin, "web1")["ejected"], what="cool-down over")
    assert {get(port, "/x")[1]["x-backend"] for _ in range(4)} == {"web1", "web2"}


def test_panic_sends_to_all_when_none_healthy(strata, backends):
    bl = backends(2)
    port, admin, proc = start_lb(strata, bl, health=HEALTH)
    for b in bl:
        b.get("/healthz?fail=1")
    wait_for(lambda: lb_status(admin)["panic"], what="panic mode")
    assert "panic mode" in proc.output()
    assert {get(port, "/x")[1]["x-backend"] for _ in range(4)} == {"web1", "web2"}
    for b in bl:
        b.get("/healthz?fail=0")
    wait_for(lambda: not lb_status(admin)["panic"], what="panic over")


def test_all_backends_dead_is_502_not_a_hang(strata, backends):
    bl = backends(2)
    port, admin, _ = start_lb(strata, bl, retries=3)
    for b in bl:
        b.kill()
    for method in ("GET", "POST"):
        status, hdrs, body = get(port, "/x", method=method, body=b"x" if method == "POST" else None)
        assert status == 502 and body == b"Bad Gateway\n"
    assert lb_status(admin)["errors_sent"] == 2


def test_no_usable_backend_is_503(strata, backends):
    (b,) = backends(1)
    port, _, _ = start_lb(strata, [{"name": "web1", "addr": b.addr, "weight": 0}])
    status, _, body = get(port, "/x")
    assert status == 503 and body == b"Service Unavailable\n"


def stuck_listener():
    """A port whose accept queue is full: connects to it hang (SYNs dropped)."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    fill = []
    for _ in range(3):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(lst.getsockname())
        except BlockingIOError:
            pass
        fill.append(s)
    return lst, fill


def test_connect_timeout_retried_elsewhere_then_504(strata, backends):
    (b,) = backends(1)
    lst, fill = stuck_listener()
    stuck = {"name": "stuck", "addr": "127.0.0.1:%d" % lst.getsockname()[1]}
    try:
        port, admin, _ = start_lb(strata, [stuck, b], policy="first", connect_timeout="200ms",
                                  passive={"errors": 1000, "cooldown": "1s"})
        st, hdrs, _ = get(port, "/x")
        assert st == 200 and hdrs["x-backend"] == "web1"
        # nothing of a POST was sent on a connect that never completed: retried too
        st, hdrs, _ = get(port, "/echo", method="POST", body=b"once")
        assert st == 200 and hdrs["x-backend"] == "web1"
        assert b.stats()["requests"] == 2  # the GET and the POST, each exactly once
        status = lb_status(admin)
        assert status["retries"] == 2
        assert backend_state(admin, "stuck")["failures"] == 2
        port2, _, _ = start_lb(strata, [stuck], connect_timeout="200ms")
        st, _, body = get(port2, "/x")
        assert st == 504 and body == b"Gateway Timeout\n"
    finally:
        for s in fill:
            s.close()
        lst.close()


def test_backend_dying_after_head_retried_for_gets_never_for_posts(strata, backends):
    bl = backends(2)
    # `first` sends every request to web1 first; /die-after-head?on=web1 makes
    # web1 send a 200 head and half its body, then close the connection
    port, admin, _ = start_lb(strata, bl, policy="first", retries=2)
    st, hdrs, body = get(port, "/die-after-head?on=web1&n=5000")
    assert st == 200 and hdrs["x-backend"] == "web2" and body == pattern(5000)
    assert lb_status(admin)["retries"] == 1
    assert backend_state(admin, "web1")["failures"] == 1
    # a POST reached web1 before it died: a clean 502, and never sent again
    st, hdrs, body = get(port, "/die-after-head?on=web1", method="POST", body=b"x",
                         headers={"X-Req-Id": "once"})
    assert st == 502 and body == b"Bad Gateway\n"
    assert bl[0].post_ids() == ["once"] and bl[1].post_ids() == []
    assert lb_status(admin)["retries"] == 1
    # over one keep-alive connection: each dying response is replaced by
    # web2's, and the connection goes on serving web1's good ones
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    for i in range(10):
        path = "/x" if i % 2 else "/die-after-head?on=web1&n=3000"
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        want = (200, "web1", b"web1\n") if i % 2 else (200, "web2", pattern(3000))
        assert (r.status, r.getheader("X-Backend"), body) == want
    # a HEAD response is complete at its head: nothing to retry
    c.request("HEAD", "/die-after-head?on=web1")
    r = c.getresponse()
    assert (r.status, r.getheader("X-Backend"), r.read()) == (200, "web1", b"")
    c.close()
    assert lb_status(admin)["retries"] == 6


def test_response_past_the_hold_bound_streams_and_is_not_retried(strata, backends):
    bl = backends(2)
    port, admin, _ = start_lb(strata, bl, policy="first", retries=2)
    # web1 relays 100 KB of a 200 KB body, more than the balancer holds back
    # (64 KiB): that part reached the client, so only closing can tell it
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    c.request("GET", "/die-after-head?on=web1&n=200000")
    r = c.getresponse()
    assert r.status == 200 and r.getheader("X-Backend") == "web1"
    with pytest.raises(http.client.IncompleteRead) as e:
        r.read()
    assert e.value.partial == pattern(200000)[:100000]
    c.close()
    assert lb_status(admin)["retries"] == 0
    assert bl[1].stats()["requests"] == 0


class ScriptedBackend:
    """A raw backend whose every answer is the bytes in `reply` (then it
    closes): a health check must read them with the real response parser."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        self.checks = 0
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
                    self.checks += 1
                    c.sendall(self.reply)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("bad", [
    b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",                      # bare LF
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"SSH-2.0-OpenSSH\r\n",                                         # not HTTP at all
    b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
])
def test_health_check_reads_answers_with_the_response_parser(strata, bad):
    be = ScriptedBackend()
    try:
        port, admin, _ = start_lb(strata, [{"name": "raw", "addr": be.addr}], health=HEALTH)
        wait_for(lambda: be.checks >= 2 and backend_state(admin, "raw")["healthy"],
                 what="healthy with a good answer")
        be.reply = bad
        wait_for(lambda: not backend_state(admin, "raw")["healthy"], what="down on a bad answer")
        be.reply = b"HTTP/1.1 204 No Content\r\n\r\n"
        wait_for(lambda: backend_state(admin, "raw")["healthy"], what="up again")
    finally:
        be.close()

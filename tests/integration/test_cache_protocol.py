"""Cache node: hostile and malformed input. Each bad input gets a Redis-style
error; a protocol error closes that connection only, and another client
keeps working throughout."""
import os
import socket

import pytest
import redis

from cache_util import Raw, enc, start_cache
from conftest import wait_for


@pytest.fixture
def node(strata):
    port, proc, r = start_cache(strata)
    return port, proc, r


def still_serving(r):
    r.set("alive", "yes")
    assert r.get("alive") == b"yes"


@pytest.mark.parametrize("payload,error", [
    (b"*1\r\n$-5\r\n", b"-ERR Protocol error: invalid bulk length"),
    (b"*1\r\n$99999999999\r\n", b"-ERR Protocol error: invalid bulk length"),
    (b"*1\r\n$99999999999999999999999999\r\n", b"-ERR Protocol error: invalid bulk length"),
    (b"*99999999\r\n", b"-ERR Protocol error: invalid multibulk length"),
    (b"*-\r\n", b"-ERR Protocol error: invalid multibulk length"),
    (b"*2\r\nGET\r\n", b"-ERR Protocol error: expected '$', got 'G'"),
    (b"*1\r\n$3\r\nabcdef\r\n", b"-ERR Protocol error: expected CRLF after bulk data"),
    (b'SET "unbalanced\r\n', b"-ERR Protocol error: unbalanced quotes in request"),
    (b"x" * (70 * 1024), b"-ERR Protocol error: too big inline request"),
    (b"*" + b"1" * (70 * 1024), b"-ERR Protocol error: too big mbulk count string"),
])
def test_protocol_errors_close_only_that_client(node, payload, error):
    port, _, r = node
    still_serving(r)
    bad = Raw(port)
    bad.send(payload)
    assert bad.line() == error
    assert bad.closed(), "a protocol error ends the connection"
    still_serving(r)
    assert r.info("stats")["total_protocol_errors"] >= 1


def test_garbage_bytes_are_an_unknown_command(node):
    port, _, r = node
    bad = Raw(port)
    bad.send(b"\x00\x01\x02garbage\xff here\r\n")
    assert bad.line().startswith(b"-ERR unknown command '\x00\x01\x02garbage\xff'")
    bad.send(enc("PING"))
    assert bad.line() == b"+PONG", "not a protocol error: the connection goes on"
    bad.send(b"\x00" * 1000 + b"\r\n")
    assert bad.line().startswith(b"-ERR unknown command")
    still_serving(r)


def test_unterminated_bulk_waits_then_errors_on_close(node):
    port, _, r = node
    bad = Raw(port)
    bad.send(b"*2\r\n$3\r\nGET\r\n$10\r\nabc")
    # The server waits for the rest; meanwhile everybody else is served.
    still_serving(r)
    bad.s.shutdown(socket.SHUT_WR)
    assert bad.line() == b"-ERR Protocol error: connection closed inside a command"
    assert bad.closed()
    still_serving(r)


def rss(proc):
    pid = proc.proc.pid
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_declared_huge_bulk_does_not_allocate(node):
    port, proc, r = node
    before = rss(proc)
    clients = []
    for _ in range(20):
        c = Raw(port)
        c.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$536870000\r\n" + b"x" * 100)
        clients.append(c)
    still_serving(r)  # the node has read all of that by now
    grown = rss(proc) - before
    assert grown < 16 * 1024 * 1024, f"RSS grew by {grown} bytes for 20 declared 512MB values"
    for c in clients:
        c.close()
    still_serving(r)


def test_many_arguments_and_large_values(node):
    port, _, r = node
    keys = [f"k{i}" for i in range(20000)]
    assert r.delete(*keys) == 0
    assert r.mset({k: "v" for k in keys}) is True
    assert r.exists(*keys) == 20000
    value = os.urandom(8 * 1024 * 1024)
    assert r.set("big", value) is True and r.get("big") == value


def test_large_values_pipelined_with_small_commands(node):
    """Values around and past the sizes the read path treats differently
    (one read chunk, one presized block, past the 1 MB presize bound), sent
    in one pipeline between small commands, all arrive intact."""
    port, _, r = node
    sizes = [16 * 1024 - 40, 16 * 1024 + 1, 300000, 1024 * 1024 + 7, 3 * 1024 * 1024]
    values = [os.urandom(n) for n in sizes]
    p = r.pipeline(transaction=False)
    for i, v in enumerate(values):
        p.set(f"small{i}", "s")
        p.set(f"big{i}", v)
    p.set("after", "a")
    assert all(x is True for x in p.execute())
    for i, v in enumerate(values):
        assert r.get(f"big{i}") == v, sizes[i]
        assert r.get(f"small{i}") == b"s"
    assert r.get("after") == b"a"


def test_large_set_values_are_exact_and_counted_alike(node):
    """A plain SET of a large value keeps the read block as its entry; one
    with an option (KEEPTTL) copies the value. Both give the same bytes
    back, over keys of 1, 40 and 300 bytes, new keys, overwrites of keys
    with and without a TTL, commands split across sends and small commands
    in between; and used_memory counts both paths alike and returns to
    where it started (but for the bucket array) once the keys are gone."""
    port, _, r = node
    r.set("anchor", "a")
    base = r.info("memory")["used_memory"]
    raw = Raw(port)
    keys = ["k", "m" * 40, "x" * 300]
    sizes = [70000, 262144, 1024 * 1024 + 3]
    used = {}
    for opt in ([], ["KEEPTTL"]):
        r.set("ttl:" + keys[1], "old", ex=1000)
        r.set(keys[0], "old")
        expect = {}
        for i, n in enumerate(sizes):
            for k in keys:
                v = os.urandom(n)
                for key in (k, "ttl:" + k):
                    cmd = enc("SET", key, v, *opt)
                    cut = 100 + i * 5000
                    raw.send(cmd[:cut])
                    raw.send(cmd[cut:] + enc("INCR", "n"))
                    assert raw.line() == b"+OK"
                    assert raw.line().startswith(b":")
                    expect[key] = v
        for key, v in expect.items():
            assert r.get(key) == v, (opt, key[:10], len(v))
            if not opt or key != "ttl:" + keys[1]:
                assert r.ttl(key) == -1
        used[bool(opt)] = r.info("memory")["used_memory"]
        assert r.delete(*expect, "n") == len(expect) + 1
        # Only the bucket array may stay larger than it was.
        assert base <= r.info("memory")["used_memory"] <= base + 1024
    # Same values, same keys: the kept block is two bytes longer than an
    # entry (the CRLF after the value), never a page more per value.
    assert abs(used[True] - used[False]) <= 6 * 4096, used


def test_client_that_never_reads_does_not_stop_others(node):
    port, _, r = node
    hog = Raw(port)
    hog.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    r.set("v", b"x" * 100000)
    # Ask for ~100MB of replies and never read them: the node stops reading
    # from this client once its output buffer is full.
    req = enc("GET", "v") * 1000
    hog.s.setblocking(False)
    sent = 0
    try:
        while sent < len(req):
            sent += hog.s.send(req[sent:])
    except BlockingIOError:
        pass
    still_serving(r)
    info = r.info("memory")
    assert info["used_memory_rss"] < 200 * 1024 * 1024
    hog.close()
    still_serving(r)


def test_password(strata):
    port, _, r = start_cache(strata, password="s3cret")
    assert r.ping() is True
    anon = redis.Redis(host="127.0.0.1", port=port)
    with pytest.raises(redis.AuthenticationError):
        anon.get("x")
    raw = Raw(port)
    raw.send(enc("GET", "x"))
    assert raw.line() == b"-NOAUTH Authentication required."
    raw.send(enc("AUTH", "wrong"))
    assert raw.line() == b"-WRONGPASS invalid username-password pair or user is disabled."
    # Before AUTH only small commands are accepted.
    raw.send(b"*100\r\n")
    assert raw.line() == b"-ERR Protocol error: invalid multibulk length"
    assert raw.closed()
    raw = Raw(port)
    raw.send(enc("AUTH", "default", "s3cret"))
    assert raw.line() == b"+OK"
    raw.send(enc("SET", "x", "1"))
    assert raw.line() == b"+OK"
    hello = Raw(port)
    hello.send(enc("HELLO", "2", "AUTH", "default", "s3cret"))
    assert hello.line() == b"*14"
    wait_for(lambda: r.get("x") == b"1")

"""Cache node: every command of the compatible subset, through redis-py and
redis-cli, with exact replies."""
import os
import shutil
import subprocess

import pytest
import redis

from cache_util import Raw, enc, start_cache
from conftest import free_port, wait_for


@pytest.fixture
def node(strata):
    port, proc, r = start_cache(strata)
    return port, r


def test_connection_commands(node):
    port, r = node
    assert r.ping() is True
    assert r.echo("hi") == b"hi"
    assert r.execute_command("SELECT", 0) is True
    with pytest.raises(redis.ResponseError, match="DB index is out of range"):
        r.execute_command("SELECT", 1)
    hello = r.execute_command("HELLO", 2)
    d = dict(zip(hello[::2], hello[1::2]))
    assert d[b"server"] == b"redis" and d[b"proto"] == 2 and d[b"mode"] == b"standalone"
    with pytest.raises(redis.ResponseError, match="NOPROTO"):
        r.execute_command("HELLO", 3)
    assert r.command_count() > 50
    cmds = r.command()
    assert cmds["get"]["arity"] == 2 and cmds["set"]["arity"] == -3
    assert r.client_setname("worker") is True
    assert r.client_getname() == "worker"
    assert isinstance(r.client_id(), int)
    raw = Raw(port)
    raw.send(enc("PING", "x"))
    assert raw.line() == b"$1" and raw.line() == b"x"
    raw.send(enc("QUIT"))
    assert raw.line() == b"+OK"
    assert raw.closed()


def test_strings(node):
    _, r = node
    assert r.set("k", "v") is True
    assert r.get("k") == b"v"
    assert r.set("k", "w", nx=True) is None
    assert r.set("nope", "w", xx=True) is None
    assert r.set("k", "w", xx=True, get=True) == b"v"
    assert r.setnx("k", "z") is False and r.setnx("k2", "z") is True
    assert r.getset("k", "new") == b"w"
    assert r.getdel("k") == b"new" and r.get("k") is None
    assert r.mset({"a": "1", "b": "2"}) is True
    assert r.mget("a", "b", "missing") == [b"1", b"2", None]
    assert r.msetnx({"a": "x", "c": "3"}) is False and r.get("c") is None
    assert r.msetnx({"c": "3", "d": "4"}) is True
    assert r.exists("a", "b", "missing", "a") == 3
    assert r.delete("a", "missing") == 1
    assert r.unlink("b", "c") == 2
    assert r.append("s", "ab") == 2 and r.append("s", "cd") == 4
    assert r.strlen("s") == 4 and r.strlen("missing") == 0
    assert r.getrange("s", 1, 2) == b"bc" and r.getrange("s", -2, -1) == b"cd"
    assert r.setrange("s", 6, "xy") == 8
    assert r.get("s") == b"abcd\x00\x00xy"
    bin_key, bin_val = b"\x00k\r\n", bytes(range(256))
    assert r.set(bin_key, bin_val) is True and r.get(bin_key) == bin_val
    big = b"x" * (2 * 1024 * 1024)
    assert r.set("big", big) is True and r.get("big") == big
    assert r.type("s") == b"string" and r.type("missing") == b"none"


def test_counters(node):
    _, r = node
    assert r.incr("n") == 1 and r.incrby("n", 10) == 11
    assert r.decr("n") == 10 and r.decrby("n", 20) == -10
    assert r.incrbyfloat("f", 1.5) == 1.5
    assert r.incrbyfloat("f", "0.25") == 1.75
    assert r.get("f") == b"1.75"
    r.set("n", "9223372036854775807")
    with pytest.raises(redis.ResponseError, match="increment or decrement would overflow"):
        r.incr("n")
    r.set("t", "abc")
    with pytest.raises(redis.ResponseError, match="value is not an integer or out of range"):
        r.incr("t")
    with pytest.raises(redis.ResponseError, match="value is not a valid float"):
        r.incrbyfloat("t", 1)


def test_expiry_commands(node):
    _, r = node
    r.set("k", "v")
    assert r.ttl("k") == -1 and r.ttl("missing") == -2
    assert r.expire("k", 100) is True
    assert 99 <= r.ttl("k") <= 100
    assert r.pexpire("k", 50000) is True and 49000 < r.pttl("k") <= 50000
    assert r.execute_command("EXPIRE", "k", 10, "GT") == 0
    assert r.execute_command("EXPIRE", "k", 10, "LT") == 1
    assert r.expireat("k", 4102444800) is True
    assert r.execute_command("EXPIRETIME", "k") == 4102444800
    assert r.execute_command("PEXPIRETIME", "k") == 4102444800000
    assert r.pexpireat("k", 4102444800123) is True
    assert r.execute_command("PEXPIRETIME", "k") == 4102444800123
    assert r.persist("k") is True and r.ttl("k") == -1 and r.persist("k") is False
    assert r.setex("se", 100, "v") is True and 99 <= r.ttl("se") <= 100
    assert r.psetex("pse", 100000, "v") is True and 99000 < r.pttl("pse") <= 100000
    assert r.getex("k", ex=200) == b"v" and 199 <= r.ttl("k") <= 200
    assert r.getex("k", persist=True) == b"v" and r.ttl("k") == -1
    assert r.set("k", "v", keepttl=True) is True
    assert r.expire("k", -1) is True and r.exists("k") == 0
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'set' command"):
        r.set("k", "v", ex=0)


def test_keyspace(node):
    _, r = node
    for i in range(250):
        r.set(f"user:{i}", i)
    r.set("other", 1)
    assert r.dbsize() == 251
    assert sorted(r.keys("user:1?")) == [f"user:{i}".encode() for i in range(10, 20)]
    assert r.keys("nomatch*") == []
    seen = set()
    cursor = 0
    while True:
        cursor, keys = r.scan(cursor, match="user:*", count=20)
        seen.update(keys)
        if cursor == 0:
            break
    assert seen == {f"user:{i}".encode() for i in range(250)}
    assert set(r.scan_iter(count=1000)) == seen | {b"other"}
    assert r.scan(0, _type="hash")[1] == []
    assert r.randomkey() is not None
    assert r.rename("other", "renamed") is True and r.get("renamed") == b"1"
    assert r.renamenx("renamed", "user:1") is False
    assert r.renamenx("renamed", "fresh") is True
    with pytest.raises(redis.ResponseError, match="no such key"):
        r.rename("missing", "x")
    assert r.flushdb() is True and r.dbsize() == 0
    r.set("x", 1)
    assert r.flushall() is True and r.dbsize() == 0 and r.randomkey() is None


def test_info_and_config(node):
    _, r = node
    r.set("a", "1", ex=100)
    r.set("b", "2")
    r.get("a")
    r.get("missing")
    info = r.info()
    for field in ("redis_version", "connected_clients", "used_memory", "maxmemory",
                  "maxmemory_policy", "keyspace_hits", "keyspace_misses", "evicted_keys",
                  "expired_keys", "instantaneous_ops_per_sec"):
        assert field in info, field
    assert info["keyspace_hits"] == 1 and info["keyspace_misses"] == 1
    assert info["db0"] == {"keys": 2, "expires": 1, "avg_ttl": 0}
    assert info["maxmemory_policy"] == "noeviction"
    assert set(r.info("memory")) >= {"used_memory", "maxmemory", "maxmemory_policy"}
    assert "db0" in r.info("keyspace") and "used_memory" not in r.info("keyspace")
    assert r.config_get("maxmemory") == {"maxmemory": "0"}
    assert r.config_set("maxmemory", "10mb") is True
    assert r.config_get("maxmemory")["maxmemory"] == str(10 * 1024 * 1024)
    assert r.config_set("maxmemory-policy", "allkeys-lfu") is True
    assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lfu"}
    assert r.config_set("maxmemory-samples", 10) is True
    assert r.config_get("maxmemory-*")["maxmemory-samples"] == "10"
    with pytest.raises(redis.ResponseError, match="must be one of the following"):
        r.config_set("maxmemory-policy", "sometimes")
    with pytest.raises(redis.ResponseError, match="Unknown option"):
        r.config_set("nosuch", "1")


def test_errors_match_redis_wording(node):
    port, r = node
    raw = Raw(port)
    for cmd, want in [
        (enc("GET"), b"-ERR wrong number of arguments for 'get' command"),
        (enc("FOO", "a", "b"), b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' "),
        (enc("SET", "k", "v", "NX", "XX"), b"-ERR syntax error"),
        (enc("INCRBY", "k", "x"), b"-ERR value is not an integer or out of range"),
        (enc("SET", "k", "v", "EX", "-1"), b"-ERR invalid expire time in 'set' command"),
    ]:
        raw.send(cmd)
        assert raw.line() == want


def test_redis_cli(node):
    port, _ = node
    cli = shutil.which("redis-cli")
    if not cli:
        pytest.skip("redis-cli not installed")

    def run(*args):
        return subprocess.run([cli, "-p", str(port), *args], capture_output=True, text=True,
                              timeout=30).stdout.strip()

    assert run("SET", "greeting", "hello world") == "OK"
    assert run("GET", "greeting") == "hello world"
    assert run("INCR", "hits") == "1"
    assert run("DBSIZE") == "2"
    assert "used_memory:" in run("INFO", "memory")
    assert run("--no-raw", "GET", "missing") == "(nil)"
    out = subprocess.run([cli, "-p", str(port)], input="SET piped 1\nGET piped\n",
                         capture_output=True, text=True, timeout=30).stdout.split()
    assert out == ["OK", "1"]


def test_pipelining(node):
    port, r = node
    p = r.pipeline(transaction=False)
    for i in range(5000):
        p.set(f"p{i}", i)
    for i in range(5000):
        p.get(f"p{i}")
    res = p.execute()
    assert res[:5000] == [True] * 5000
    assert res[5000:] == [str(i).encode() for i in range(5000)]
    raw = Raw(port)
    raw.send(b"PING\r\nECHO hello\r\n" + enc("SET", "i", "1") + b"GET i\r\n")
    assert [raw.line() for _ in range(5)] == [b"+PONG", b"$5", b"hello", b"+OK", b"$1"]


# Replies compared byte for byte against a live redis-server: the best check
# that clients see the same thing.
DIFF_COMMANDS = """
set a b ex 0|set a b ex abc|set a b nx xx|set a b keepttl ex 1|set a hello|set a world get
set a x nx get|incr a|set n 9223372036854775807|incr n|incrby n -1|decrby n -9223372036854775808
set z 007|incr z|incrbyfloat nf 1.5|incrbyfloat nf 0.1|incrbyfloat nf 0.2|incrbyfloat nf x
set f 1e3|incrbyfloat f 1|set f 3.0e0|incrbyfloat f 0|incrbyfloat f -5e-1|expire a abc
expire a 10 nx xx|expire a 10 gt lt|expire a 10 foo|expire a 100|ttl a|expire a 50 gt|ttl a
expire a 50 lt|expire a 200 nx|expire a 200 xx|persist a|persist a|expire a 10 gt|pttl nokey
setrange a -1 x|setrange a 536870912 x|setrange sr 5 hi|get sr|setrange sr 0 ""|setrange no 0 ""
getrange sr 0 -1|getrange sr -3 -1|getrange sr 2 1|getrange sr -1 -3|getrange sr 100 200
getrange nokey 0 -1|getrange sr x 1|append sr XY|select x|foo bar baz|foo|get|set a|echo|ping a b
type nokey|type sr|dbsize x|keys|flushdb foo|getex|getex sr persist ex 1|getex sr ex 1 px 1
getex sr foo|getex nokey ex 10|getex sr ex 0|scan x|scan 0 count 0|scan 0 foo|mset a|mset a 1 b
msetnx a|mset k1 v1 k2 v2|mget k1 k2 nokey|msetnx k1 x k3 y|setex a 0 b|psetex a 0 b
expireat a -1|exists a|setnx k1 zz|getset k1 new|getdel k1|getdel k1|del k2 k3 nokey
rename nokey b|set r1 v|rename r1 r1|renamenx r1 r1|rename r1 r2|set r3 v3|renamenx r2 r3
auth x|auth a b|auth a b c|hello 4|hello x|hello 2 foo|client setname a b|client foo
config set foo bar|config set maxmemory abc|command foo|incrby dd 9223372036854775807|incr dd
set big 12345678901234567890|incr big|set a b ex 9223372036854775|expire a 9223372036854775807
randomkey x|echo "hello world"|set "sp ace" 'q"uote'|get "sp ace"|dbsize
"""


def redis_reply(raw):
    line = raw.line()
    if line[:1] == b"$" and int(line[1:]) >= 0:
        n = int(line[1:])
        while len(raw.buf) < n + 2:
            raw.buf += raw.s.recv(65536)
        data, raw.buf = raw.buf[:n], raw.buf[n + 2:]
        return line + b" " + data
    if line[:1] == b"*" and int(line[1:]) >= 0:
        return [line] + [redis_reply(raw) for _ in range(int(line[1:]))]
    return line


def test_replies_match_redis_server(node, tmp_path):
    import shlex
    port, _ = node
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed")
    rport = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ours = Raw(port)
        theirs = wait_for(lambda: Raw(rport), what="redis-server")
        mismatches = []
        cmds = [c for line in DIFF_COMMANDS.strip().splitlines() for c in line.split("|")]
        for c in cmds:
            args = shlex.split(c)
            ours.send(enc(*args))
            theirs.send(enc(*args))
            a, b = redis_reply(ours), redis_reply(theirs)
            if a != b:
                mismatches.append((c, a, b))
        assert mismatches == [], mismatches
        assert len(cmds) > 100
    finally:
        proc.terminate()
        proc.wait(timeout=10)

"""ctx.cache, ctx.db and ctx:cached against real cache and db nodes: hits and
misses in the cache's INFO, writes that invalidate, a stampede that makes
exactly one db read, a cache shard killed under load without a 5xx, and
read-your-writes across requests through the strata-ryw cookie."""
import json
import os
import random
import re
import signal
import socket
import struct
import threading

import pytest
import redis

from conftest import port_open, wait_for
from web_util import call, get, get_json, ports

APP = r'''
local app = strata.app()

-- cache-aside: the loader counts its runs in the db
app:get("/users/:id", function(ctx)
  local key = "user:" .. ctx.params.id
  local user = ctx:cached(key, 60, function()
    ctx.db:incr("loads:" .. key)
    if ctx.query.gate then
      -- the test opens the gate once every request is in flight
      while ctx.db:get("gate") ~= "open" do end
    end
    return ctx.db:get(key)
  end)
  if not user then return 404, { error = "not found" } end
  return 200, json.decode(user)
end)

app:put("/users/:id", function(ctx)
  local body, err = ctx:json()
  if not body then return 400, { error = err } end
  local key = "user:" .. ctx.params.id
  local ok, werr = ctx.db:set(key, json.encode(body))
  if not ok then return 503, { error = werr } end
  ctx.cache:del(key)
  return 200, body
end)

-- the db directly: a read after a write of the same session
app:put("/kv/:k", function(ctx)
  local ok, err = ctx.db:set("kv:" .. ctx.params.k, ctx.body)
  if not ok then return 503, { error = err } end
  return 200, "ok"
end)
app:get("/kv/:k", function(ctx)
  local v, err = ctx.db:get("kv:" .. ctx.params.k)
  if err then return 503, { error = err } end
  return 200, v or ""
end)

app:get("/t/:id", function(ctx)
  local v = ctx:cached("t:" .. ctx.params.id, 60, function()
    ctx.db:incr("loads:t")
    if ctx.params.id == "none" then return nil end
    return { id = ctx.params.id, list = { 1, 2 } }
  end, { negative_ttl = 30 })
  return 200, { v = v or false }
end)
app:get("/c/:k", function(ctx)
  local v = ctx.cache:get(ctx.params.k)
  return 200, { v = v or false }
end)
app:post("/c/:k", function(ctx)
  local ok = ctx.cache:set(ctx.params.k, ctx.body, 30)
  local n = ctx.cache:incr("n:" .. ctx.params.k)
  local e = ctx.cache:expire("n:" .. ctx.params.k, 30)
  return 200, { ok = ok, n = n, e = e }
end)
app:get("/mget", function(ctx)
  return 200, ctx.cache:mget("m1", "m2", "m3")
end)
app:get("/dbmisc", function(ctx)
  local n = ctx.db:incrby("ctr", 5)
  local bad, err = ctx.db:call("NOSUCHCOMMAND", "x")
  local e = ctx.db:exists("ctr")
  local arr = ctx.db:mget("ctr", "nokey")
  return 200, { n = n, bad = bad == nil, err = err, e = e, arr = arr }
end)
app:get("/all", function(ctx)
  local a, b = ctx:all(function() return ctx.db:get("ctr") end,
                       function() return ctx.cache:get("m1") end)
  return 200, { a = a, b = b }
end)
return app
'''


def topology(tmp, web, c1, c2, d1, d2, admin, reads="primary", ryw=False, timeout="20s"):
    return (
        f'strata.node {{ name = "w1", admin = "127.0.0.1:{admin}" }}\n'

        f'local cache = strata.cache {{ shards = {{ {{ node = "c1", listen = "127.0.0.1:{c1}" }},\n'
        f'  {{ node = "c2", listen = "127.0.0.1:{c2}" }} }} }}\n'
        f'local db = strata.db {{ primary = {{ node = "d1", listen = "127.0.0.1:{d1}", dir = "{tmp}/d1" }},\n'
        f'  replicas = {{ {{ node = "d2", listen = "127.0.0.1:{d2}", dir = "{tmp}/d2" }} }},\n'
        f'  reads = "{reads}", read_your_writes = {str(ryw).lower()} }}\n'
        f'strata.web {{ nodes = {{ {{ node = "w1", listen = "127.0.0.1:{web}" }} }},\n'
        f'  app = "app.lua", cache = cache, db = db, timeout = "{timeout}" }}\n')


def start_all(strata, tmp_path, **kw):
    (tmp_path / "app.lua").write_text(APP)
    web, c1, c2, d1, d2, admin = ports(6)
    proc = strata(topology(tmp_path, web, c1, c2, d1, d2, admin, **kw), [web, c1, c2, d1, d2])
    proc.admin = admin
    # the nodes started together: the web node's links come up within its retry
    wait_for(lambda: get(web, "/kv/ping")[0] == 200, what="the db reachable from the web node")
    wait_for(lambda: all(json.loads(call(web, "POST", f"/c/ping{i}", body=b"x")[2])["ok"]
                         for i in range(8)), what="both cache shards reachable")
    return proc, web, [c1, c2], d1, d2


def cache_stats(ports_):
    hits = misses = 0
    for p in ports_:
        info = redis.Redis(port=p).info("stats")
        hits += info["keyspace_hits"]
        misses += info["keyspace_misses"]
    return hits, misses


def test_cache_aside_hits_misses_and_invalidation(strata, tmp_path):
    proc, web, cports, d1, _ = start_all(strata, tmp_path)
    db = redis.Redis(port=d1)
    db.set("user:1", json.dumps({"name": "ann"}))
    h0, m0 = cache_stats(cports)
    st, _, j = get_json(web, "/users/1")
    assert (st, j) == (200, {"name": "ann"})
    h1, m1 = cache_stats(cports)
    assert (h1 - h0, m1 - m0) == (0, 1)
    for _ in range(3):
        assert get_json(web, "/users/1")[2] == {"name": "ann"}
    h2, m2 = cache_stats(cports)
    assert (h2 - h1, m2 - m1) == (3, 0)
    assert db.get("loads:user:1") == b"1"
    # a write goes to the db and deletes the cached copy
    st, _, j = call(web, "PUT", "/users/1", body=b'{"name":"bob"}')
    assert st == 200
    assert get_json(web, "/users/1")[2] == {"name": "bob"}
    assert db.get("loads:user:1") == b"2"
    # not found is cached briefly too: one load for several misses
    assert get(web, "/users/404")[0] == 404
    assert get(web, "/users/404")[0] == 404
    assert db.get("loads:user:404") == b"1"
    st, _, j = get_json(web, "/status")  # no such route
    assert st == 404


def test_cache_and_db_calls(strata, tmp_path):
    proc, web, cports, d1, _ = start_all(strata, tmp_path)
    st, _, j = call(web, "POST", "/c/k1", body=b"v1")
    assert (st, json.loads(j)) == (200, {"ok": True, "n": 1, "e": True})
    assert get_json(web, "/c/k1")[2] == {"v": "v1"}
    assert get_json(web, "/c/none")[2] == {"v": False}
    shards = [redis.Redis(port=p) for p in cports]
    # m1 and m3 set on whichever shard holds them: through the app
    call(web, "POST", "/c/m1", body=b"a")
    call(web, "POST", "/c/m3", body=b"c")
    assert get_json(web, "/mget")[2] == ["a", False, "c"]
    assert sum(s.dbsize() for s in shards) >= 3
    st, _, j = get_json(web, "/dbmisc")
    assert st == 200
    assert j["n"] == 5 and j["bad"] is True and "unknown command" in j["err"].lower()
    assert j["e"] == 1 and j["arr"] == ["5", False]
    st, _, j = get_json(web, "/all")
    assert (st, j) == (200, {"a": "5", "b": "a"})


def test_stampede_makes_one_db_read(strata, tmp_path):
    proc, web, cports, d1, _ = start_all(strata, tmp_path)
    db = redis.Redis(port=d1)
    db.set("user:7", json.dumps({"name": "seven"}))
    results = []
    lock = threading.Lock()

    def one():
        r = call(web, "GET", "/users/7?gate=1", timeout=60)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one) for _ in range(100)]
    for t in threads:
        t.start()
    # every request is in: one loads (waiting at the gate), 99 wait on it
    wait_for(lambda: web_status(proc)["flight_waits"] >= 99, timeout=30, what="99 waiters")
    assert web_status(proc)["flights"] == 1
    db.set("gate", "open")
    for t in threads:
        t.join()
    assert len(results) == 100
    assert all(r[0] == 200 and json.loads(r[2]) == {"name": "seven"} for r in results)
    assert db.get("loads:user:7") == b"1"


def web_status(proc):
    st, _, doc = get_json(proc.admin, "/status")
    return next(x for x in doc["services"] if x["kind"] == "web")


def test_cache_shard_killed_under_load_gives_no_5xx(strata, tmp_path):
    proc, web, cports, d1, _ = start_all(strata, tmp_path)
    db = redis.Redis(port=d1)
    for i in range(50):
        db.set(f"user:{i}", json.dumps({"n": i}))
    stop = threading.Event()
    failures, done = [], [0]
    lock = threading.Lock()

    def load(seed):
        rnd = random.Random(seed)
        while not stop.is_set():
            i = rnd.randrange(50)
            try:
                st, _, b = call(web, "GET", f"/users/{i}")
                ok = st == 200 and json.loads(b) == {"n": i}
            except Exception as e:  # noqa: BLE001 -- any failure counts
                ok, st, b = False, repr(e), b""
            with lock:
                done[0] += 1
                if not ok:
                    failures.append((st, b[:100]))

    threads = [threading.Thread(target=load, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: done[0] >= 200, what="load before the kill")
        pid = int(re.search(r"c2\s+pid (\d+)", proc.output()).group(1))
        os.kill(pid, signal.SIGKILL)
        mark = done[0]
        wait_for(lambda: done[0] >= mark + 400, timeout=30, what="load after the kill")
        # the supervisor restarts the shard; the web node takes it back
        wait_for(lambda: port_open(cports[1]) and web_status(proc)["cache"]["calls"] > 0,
                 what="c2 back")
        wait_for(lambda: re.search(r"client: c2 .* is up again", proc.output()),
                 what="the web node's link to c2 up again")
        mark = done[0]
        wait_for(lambda: done[0] >= mark + 100, timeout=30, what="load with c2 back")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []


def test_read_your_writes_across_requests_and_nodes(strata, tmp_path):
    """Writes through one web node, reads through another, reads routed to the
    replica: with the strata-ryw cookie carried, a read never misses the
    session's own last write."""
    (tmp_path / "app.lua").write_text(APP)
    w1, w2, c1, c2, d1, d2, admin = ports(7)
    text = topology(tmp_path, w1, c1, c2, d1, d2, admin, reads="replicas", ryw=True)
    text = text.replace(f'{{ node = "w1", listen = "127.0.0.1:{w1}" }} }}',
                        f'{{ node = "w1", listen = "127.0.0.1:{w1}" }},\n'
                        f'  {{ node = "w2", listen = "127.0.0.1:{w2}" }} }}')
    proc = strata(text, [w1, w2, c1, c2, d1, d2])
    proc.admin = admin
    for w in (w1, w2):  # the primary's link up on both (reads may go elsewhere)
        wait_for(lambda: call(w, "PUT", "/kv/ping", body=b"x")[0] == 200, what="db writable")
    # the replica's link from w1 is up once a read (no cookie) is routed to it
    wait_for(lambda: get(w1, "/kv/ping")[0] == 200 and web_status(proc)["db"]["reads_replica"] > 0,
             what="w1 reading from the replica")
    rnd = random.Random(7)
    cookie = None
    offsets = []
    for i in range(150):
        key = f"k{rnd.randrange(5)}"
        value = f"v{i}-{rnd.random()}"
        wnode, rnode = rnd.sample([w1, w2], 2)
        hdrs = {"Cookie": f"strata-ryw={cookie}"} if cookie else {}
        st, h, _ = call(wnode, "PUT", f"/kv/{key}", body=value.encode(), headers=hdrs)
        assert st == 200
        m = re.match(r"strata-ryw=(\d+); Path=/;", h["set-cookie"])
        assert m, h["set-cookie"]
        cookie = m.group(1)
        offsets.append(int(cookie))
        st, h, b = call(rnode, "GET", f"/kv/{key}", headers={"Cookie": f"strata-ryw={cookie}"})
        assert (st, b.decode()) == (200, value), i
        assert "set-cookie" not in h  # a read writes nothing
    assert offsets == sorted(offsets) and offsets[0] > 0
    s = web_status(proc)
    assert s["db"]["reads_replica"] > 0, s  # the replica served reads
    # hostile cookies are no cookies
    for bad in ("abc", "1" * 40, "-5", "12 34", "9" * 19 + "x"):
        st, _, _ = call(w1, "GET", "/kv/k0", headers={"Cookie": f"a=b; strata-ryw={bad}; c=d"})
        assert st == 200


def test_deadline_and_a_client_leaving_cancel_pending_calls(strata, tmp_path):
    proc, web, cports, d1, _ = start_all(strata, tmp_path, timeout="1s")
    db = redis.Redis(port=d1)
    db.set("user:3", json.dumps({"n": 3}))
    # the loader waits at a closed gate: the deadline answers 500, cancels its call
    st, h, b = get(web, "/users/3?gate=1")
    assert st == 500 and json.loads(b)["request_id"] == h["x-request-id"]
    wait_for(lambda: "time limit" in proc.output(), what="the deadline logged")
    s = web_status(proc)
    assert s["timeouts"] == 1 and s["in_flight"] == 0
    assert s["db"]["cancelled"] >= 1
    # the failed flight left nothing behind: the next request loads
    db.set("gate", "open")
    assert get_json(web, "/users/3?gate=1")[2] == {"n": 3}
    # a client that leaves: its handler ends, its pending call is cancelled
    db.set("gate", "closed")
    before = web_status(proc)["db"]["cancelled"]
    s = socket.create_connection(("127.0.0.1", web))
    s.sendall(b"GET /users/4?gate=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    # in the loader, polling the gate: always waiting on a db call
    wait_for(lambda: db.get("loads:user:4") == b"1", what="the loader at the gate")
    # a reset, not a half-close (after a FIN the client may still read its answer)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    wait_for(lambda: web_status(proc)["in_flight"] == 0 and web_status(proc)["gone"] == 1,
             what="the handler ended")
    assert web_status(proc)["db"]["cancelled"] > before
    assert "the client went away" not in proc.output()  # not an error of the app


def test_cache_and_db_passwords_reach_the_web_node(strata, tmp_path):
    (tmp_path / "app.lua").write_text(APP)
    (tmp_path / "dbpass").write_text("db-secret-0123456789\n")
    web, c1, c2, d1, d2, admin = ports(6)
    text = topology(tmp_path, web, c1, c2, d1, d2, admin)
    text = text.replace("} } }\nlocal db", '} }, password_env = "WEB_TEST_CACHE_PW" }\nlocal db', 1)
    text = text.replace('reads = "primary"', 'reads = "primary", password_file = "dbpass"')
    proc = strata(text, [web, c1, c2, d1, d2], env={"WEB_TEST_CACHE_PW": "cache-secret-0123"})
    proc.admin = admin
    wait_for(lambda: get(web, "/kv/ping")[0] == 200, what="the db reachable with its password")
    assert call(web, "PUT", "/kv/a", body=b"1")[0] == 200
    assert redis.Redis(port=d1, password="db-secret-0123456789").get("kv:a") == b"1"
    for p in (d1, c1):  # both really need one
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis(port=p).get("x")
    wait_for(lambda: json.loads(call(web, "POST", "/c/x", body=b"y")[2])["ok"],
             what="the cache reachable with its password")
    assert "secret" not in proc.output()


def test_cached_tables_ttl_jitter_and_negative_ttl(strata, tmp_path):
    proc, web, cports, d1, _ = start_all(strata, tmp_path)
    db = redis.Redis(port=d1)
    shards = [redis.Redis(port=p) for p in cports]

    def pttl(key):
        return max(s.pttl(key) for s in shards)

    for i in range(10):
        assert get_json(web, f"/t/{i}")[2] == {"v": {"id": str(i), "list": [1, 2]}}
        assert get_json(web, f"/t/{i}")[2] == {"v": {"id": str(i), "list": [1, 2]}}  # a hit
    assert db.get("loads:t") == b"10"
    ttls = [pttl(f"t:{i}") for i in range(10)]
    assert all(54000 - 1000 <= t <= 66000 for t in ttls), ttls
    assert len(set(t // 100 for t in ttls)) > 1  # jittered, not all the same
    raw = next(s.get("t:3") for s in shards if s.get("t:3") is not None)
    assert raw.startswith(b"\x00strata:json:")
    # not found: stored for negative_ttl, one load
    assert get_json(web, "/t/none")[2] == {"v": False}
    assert get_json(web, "/t/none")[2] == {"v": False}
    assert db.get("loads:t") == b"11"
    assert 27000 - 1000 <= pttl("t:none") <= 33000


def test_full_stack_through_the_balancer(strata, tmp_path):
    """clients -> balancer -> two web nodes -> cache and db: the article's
    architecture in one topology; both web nodes serve."""
    (tmp_path / "app.lua").write_text(APP)
    w1, w2, c1, c2, d1, d2, admin, lb = ports(8)
    text = topology(tmp_path, w1, c1, c2, d1, d2, admin)
    text = text.replace(f'{{ node = "w1", listen = "127.0.0.1:{w1}" }} }}',
                        f'{{ node = "w1", listen = "127.0.0.1:{w1}" }},\n'
                        f'  {{ node = "w2", listen = "127.0.0.1:{w2}" }} }}')
    text = text.replace("strata.web {", "local web = strata.web {")
    text += (f'strata.balancer {{ node = "lb", listen = "127.0.0.1:{lb}", backends = web,\n'
             f'  health = {{ path = "/healthz", interval = "100ms", rise = 1 }} }}\n')
    proc = strata(text, [w1, w2, c1, c2, d1, d2, lb])
    proc.admin = admin
    redis.Redis(port=d1).set("user:1", json.dumps({"name": "ann"}))
    for w in (w1, w2):
        wait_for(lambda: get(w, "/users/1")[0] == 200, what="web node ready")
    ids = set()
    for _ in range(20):
        st, h, b = get(lb, "/users/1")
        assert (st, json.loads(b)) == (200, {"name": "ann"})
        ids.add(h["x-request-id"])
    assert len(ids) == 20
    # an id starts with its worker's random seed: both nodes answered
    assert len({i[:8] for i in ids}) == 2, ids

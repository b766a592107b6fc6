"""The web tier's app API (docs/web.md) through real HTTP: routes, params,
query, JSON, 404/405, streaming, and containment -- a handler that loops,
fails or hogs memory gets a 500 with its request id while a concurrent
ordinary request is answered."""
import http.client
import json
import shutil
import socket
import subprocess
import threading

from conftest import run_cli, wait_for
from web_util import call, get, get_json, ports, web_topo

APP = r'''
local app = strata.app()
app:get("/hello", function(ctx) return 200, "hello" end)
app:get("/users/:id", function(ctx)
  return 200, { id = ctx.params.id, q = ctx.query, method = ctx.method, path = ctx.path }
end)
app:get("/users/:id/posts/:post", function(ctx) return 200, ctx.params end)
app:put("/users/:id", function(ctx)
  local body, err = ctx:json()
  if not body then return 400, { error = err } end
  return 200, { id = ctx.params.id, got = body }
end)
app:get("/files/*rest", function(ctx) return 200, "rest=" .. ctx.params.rest end)
app:any("/anything", function(ctx) return 200, ctx.method end)
app:get("/headers", function(ctx)
  return 200, { ua = ctx.headers["x-test"], id = ctx.id, peer = ctx.peer ~= nil }
end)
app:get("/custom", function(ctx)
  return 201, "<p>hi</p>", { ["Content-Type"] = "text/html", ["X-Thing"] = "1" }
end)
app:get("/status", function(ctx) ctx:status(202) ctx:header("X-Set", "yes") return nil end)
app:get("/stream", function(ctx)
  ctx:header("Content-Type", "text/csv")
  for i = 1, tonumber(ctx.query.n or 3) do ctx:write(("row%d\n"):format(i)) end
end)
app:get("/big", function(ctx)
  local chunk = string.rep("x", 65536)
  for i = 1, 64 do ctx:write(chunk) end
end)
app:get("/all", function(ctx)
  local a, b, c = ctx:all(function() return "one" end, function() return nil end,
                          function() return 3 end)
  return 200, { a = a, b = b == nil, c = c }
end)
app:get("/err", function(ctx) error("boom in the handler") end)
app:get("/loop", function(ctx) while true do end end)
app:get("/hog", function(ctx)
  local t = {}
  for i = 1, 1e9 do t[i] = ("x"):rep(64) .. i end
end)
app:get("/badstatus", function(ctx) return "nope" end)
local cj = require("cjson")
app:get("/cjson", function(ctx) return 200, cj.encode({ 1, 2 }) .. json.encode({ x = true }) end)
local kept
app:get("/keep", function(ctx) kept = ctx return 200, "kept" end)
app:get("/stale", function(ctx) return 200, kept.path end)
app:get("/own-coroutine", function(ctx)
  local co = coroutine.wrap(function() return ctx:sleep(0.01) end)
  co()
  return 200, "unreachable"
end)
app:get("/nap", function(ctx) ctx:sleep(1) return 200, "rested" end)
app:get("/stream-fails", function(ctx)
  ctx:write("part one\n")
  ctx:sleep(tonumber(ctx.query.s) or 0)
  if ctx.query.loop then while true do end end
  error("boom after the head")
end)
return app
'''


def start(strata, tmp_path, app=APP, web_extra=""):
    (tmp_path / "app.lua").write_text(app)
    (port,) = ports(1)
    proc = strata(web_topo("app.lua", port, web_extra=web_extra), [port])
    return proc, port


def test_routes_params_query_json(strata, tmp_path):
    proc, port = start(strata, tmp_path)
    st, h, b = get(port, "/hello")
    assert (st, b) == (200, b"hello")
    assert h["content-type"].startswith("text/plain")
    assert len(h["x-request-id"]) >= 8
    st, _, j = get_json(port, "/users/a%20b?x=1&y=two+words&x=3")
    assert st == 200
    assert j == {"id": "a b", "q": {"x": "3", "y": "two words"}, "method": "GET",
                 "path": "/users/a b"}
    st, _, j = get_json(port, "/users/7/posts/9")
    assert (st, j) == (200, {"id": "7", "post": "9"})
    st, _, b = get(port, "/files/a/b/c.txt")
    assert (st, b) == (200, b"rest=a/b/c.txt")
    st, _, b = get(port, "/files")
    assert (st, b) == (200, b"rest=")
    st, h, b = call(port, "PUT", "/users/5", body=b'{"name":"ann","n":[1,2]}',
                    headers={"Content-Type": "application/json"})
    assert st == 200 and h["content-type"] == "application/json"
    assert json.loads(b) == {"id": "5", "got": {"name": "ann", "n": [1, 2]}}
    st, _, b = call(port, "PUT", "/users/5", body=b'{not json')
    assert st == 400 and json.loads(b)["error"].startswith("invalid JSON")
    for m in ("GET", "POST", "DELETE", "PATCH"):
        st, _, b = call(port, m, "/anything")
        assert (st, b) == (200, m.encode())
    st, _, j = get_json(port, "/headers", headers={"X-Test": "abc", "X-Request-Id": "req-42"})
    assert j == {"ua": "abc", "id": "req-42", "peer": True}
    st, h, b = get(port, "/custom")
    assert (st, b, h["content-type"], h["x-thing"]) == (201, b"<p>hi</p>", "text/html", "1")
    st, h, b = get(port, "/status")
    assert (st, h["x-set"], b) == (202, "yes", b"")
    assert get(port, "/cjson")[2] == b'[1,2]{"x":true}'
    st, h, b = call(port, "HEAD", "/hello")
    assert (st, b, h["content-length"]) == (200, b"", "5")


def test_404_and_405(strata, tmp_path):
    proc, port = start(strata, tmp_path)
    st, h, b = get(port, "/nope")
    assert st == 404 and json.loads(b) == {"error": "not found"}
    st, h, b = call(port, "DELETE", "/hello")
    assert st == 405 and h["allow"] == "GET, HEAD"
    st, h, b = call(port, "POST", "/users/1")
    assert st == 405 and h["allow"] == "GET, HEAD, PUT"
    st, _, b = get(port, "/healthz")
    assert (st, b) == (200, b"ok\n")


def test_streaming_is_chunked(strata, tmp_path):
    proc, port = start(strata, tmp_path)
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /stream?n=4 HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while not data.endswith(b"0\r\n\r\n"):
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    s.close()
    head, body = data.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding: chunked" in head and b"Content-Type: text/csv" in head
    assert body == b"5\r\nrow1\n\r\n5\r\nrow2\n\r\n5\r\nrow3\n\r\n5\r\nrow4\n\r\n0\r\n\r\n"
    st, _, b = get(port, "/big")
    assert st == 200 and b == b"x" * (64 * 65536)
    st, _, j = get_json(port, "/all")
    assert (st, j) == (200, {"a": "one", "b": True, "c": 3})


def read_to_close(s):
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def test_a_stream_that_fails_is_cut_short(strata, tmp_path):
    """A handler that fails after its first ctx:write cannot turn its answer
    into a 500: the connection closes without the terminating chunk, so no
    client (or cache) takes the body for complete; requests pipelined behind
    it are dropped, and other connections are served meanwhile."""
    admin, port = ports(2)
    (tmp_path / "app.lua").write_text(APP)
    proc = strata(f'strata.node {{ name = "w1", admin = "127.0.0.1:{admin}" }}\n' +
                  web_topo("app.lua", port, web_extra=', timeout = "30s"'), [port])
    # Raw: the head and the first chunk, then the close; no 0-chunk; the
    # request pipelined behind it gets nothing.
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"GET /stream-fails HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
    data = read_to_close(s)
    s.close()
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 ") and b"Transfer-Encoding: chunked" in head, head
    assert body == b"9\r\npart one\n\r\n", body
    assert b"hello" not in data
    wait_for(lambda: "boom after the head" in proc.output(), what="the error logged")

    # http.client: an incomplete read, not a short body.
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/stream-fails")
    r = c.getresponse()
    assert r.status == 200
    try:
        r.read()
        raise AssertionError("a cut-short stream read as complete")
    except http.client.IncompleteRead as e:
        assert e.partial == b"part one\n"
    c.close()

    # curl says the transfer was cut short (18: partial file).
    if shutil.which("curl"):
        res = subprocess.run(["curl", "-sS", "-o", "/dev/null", "--max-time", "60",
                              f"http://127.0.0.1:{port}/stream-fails"],
                             capture_output=True, text=True)
        assert res.returncode == 18, (res.returncode, res.stderr)

    # Pipelined behind an answer still in the works, its head has not gone
    # out when it fails: it is answered 500 after all, in order.
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"GET /nap HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /stream-fails HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = read_to_close(s)
    s.close()
    first, second = data.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"200 ") and first.endswith(b"\r\n\r\nrested"), first
    assert second.startswith(b"500 ") and b"chunked" not in second, second
    assert b'{"error":"internal error","request_id":"' in second

    # A limit after the head (the instruction budget) ends it the same way,
    # while a concurrent request on another connection is answered.
    result = {}

    def bad():
        s2 = socket.create_connection(("127.0.0.1", port), timeout=60)
        s2.sendall(b"GET /stream-fails?s=0.2&loop=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        result["data"] = read_to_close(s2)
        s2.close()

    t = threading.Thread(target=bad)
    t.start()
    st, _, b = get(port, "/hello")
    assert (st, b) == (200, b"hello")
    t.join(120)
    assert not t.is_alive()
    assert result["data"].startswith(b"HTTP/1.1 200 ")
    assert result["data"].endswith(b"9\r\npart one\n\r\n"), result["data"][-200:]
    wait_for(lambda: "instruction budget" in proc.output(), what="the limit logged")
    cut = 4 if shutil.which("curl") else 3  # the pipelined one was answered 500
    st = wait_for(lambda: (lambda j: j if j["cut_short"] == cut else None)(
        get_json(admin, "/status")[2]["services"][0]), what="cut_short counted")
    assert st["limits"] == 1 and st["errors"] == (4 if shutil.which("curl") else 3), st
    assert get(port, "/hello")[2] == b"hello"


def test_containment(strata, tmp_path):
    """Each bad handler answers 500 with its request id while an ordinary
    request sent during it is answered 200."""
    # A wall-clock limit far beyond what the loop needs: the instruction
    # budget stops /loop even on a loaded machine or a sanitizer build.
    proc, port = start(strata, tmp_path, web_extra=', timeout = "30s", memory = "32mb"')
    hog = "app.lua:39: the handler exceeded the app's memory limit (32 MB)"  # its loop's line
    for path, logged in (("/err", "boom in the handler"), ("/loop", "instruction budget"),
                         ("/hog", hog), ("/badstatus", "status 100-999")):
        result = {}

        def bad():
            result["bad"] = call(port, "GET", path, timeout=120)

        t = threading.Thread(target=bad)
        t.start()
        st, _, b = get(port, "/hello")
        assert (st, b) == (200, b"hello"), path
        t.join()
        st, h, b = result["bad"]
        assert st == 500, (path, b)
        j = json.loads(b)
        assert j == {"error": "internal error", "request_id": h["x-request-id"]}
        wait_for(lambda: j["request_id"] in proc.output() and logged in proc.output(),
                 what=f"{path} logged with its id")
        assert "stack traceback" in proc.output()
    st, _, b = get(port, "/hello")
    assert (st, b) == (200, b"hello")


def test_a_ctx_kept_past_its_request_fails_cleanly(strata, tmp_path):
    proc, port = start(strata, tmp_path)
    assert get(port, "/keep")[2] == b"kept"
    st, _, b = get(port, "/stale")
    assert st == 500
    wait_for(lambda: "the request has ended" in proc.output(), what="the stale ctx logged")
    st, _, b = get(port, "/own-coroutine")
    assert st == 500
    wait_for(lambda: "not from a coroutine of its own" in proc.output(), what="logged")
    assert get(port, "/hello")[2] == b"hello"


def test_timeout_is_a_500(strata, tmp_path):
    app = APP.replace('return app', '''
app:get("/slow", function(ctx)
  -- C work (a string copy) more than VM instructions, so the wall clock
  -- stops it long before the instruction budget could, however fast the
  -- machine
  local t0 = os.clock()
  while os.clock() - t0 < 5 do local s = ("x"):rep(100000) end
end)
return app''')
    proc, port = start(strata, tmp_path, app=app, web_extra=', timeout = "300ms"')
    st, h, b = get(port, "/slow")
    assert st == 500 and json.loads(b)["request_id"] == h["x-request-id"]
    wait_for(lambda: "time limit" in proc.output(), what="time limit logged")


def test_check_refuses_bad_apps(tmp_path):
    cases = [
        ('local app = strata.app()\napp:get("nope", function() end)\nreturn app\n',
         "app.lua:2: route pattern 'nope' must start with '/'"),
        ('local app = strata.app()\napp:get("/a/*rest/b", function() end)\nreturn app\n',
         "app.lua:2: route pattern '/a/*rest/b': '*rest' must be the last segment"),
        ('local app = strata.app()\nreturn {}\n', "the app file must return the app"),
        ('local app = strata.app(\nreturn app\n', "app.lua:2:"),
        ('local app = strata.app()\nlocal x = nil + 1\nreturn app\n', "app.lua:2:"),
    ]
    for text, expect in cases:
        (tmp_path / "app.lua").write_text(text)
        (port,) = ports(1)
        topo = tmp_path / "topo.lua"
        topo.write_text(web_topo("app.lua", port))
        r = run_cli("check", str(topo))
        assert r.returncode == 1, r.stdout
        first = r.stderr.strip().splitlines()[0]
        assert first.startswith(f"{topo}:2: web w1: web app: "), first  # the app field
        assert expect in first, first
    for extra, expect in ((', workers = 0', "workers must be in 1..64"),
                          (', timeout = "0s"', "timeout must be in"),
                          (', memory = "10kb"', "memory must be in"),
                          (', bogus = 1', "unknown field 'bogus'"),
                          (', static = "no-such-dir"', "static: directory 'no-such-dir' not found")):
        (tmp_path / "app.lua").write_text(APP)
        topo = tmp_path / "topo.lua"
        topo.write_text(web_topo("app.lua", ports(1)[0], web_extra=extra))
        r = run_cli("check", str(topo))
        assert r.returncode == 1 and expect in r.stderr, (extra, r.stderr)
        assert r.stderr.startswith(f"{topo}:"), r.stderr

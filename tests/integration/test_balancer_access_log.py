"""Balancer access log: one line per request (JSON or combined), errors the
balancer answers itself included, reopened on SIGUSR1 (sent to the
supervisor, which passes it to every node) for logrotate."""
import json
import os
import re
import signal

from balancer_util import backends, balancer_topology, get, raw, status_of  # noqa: F401
from conftest import free_port, run_cli, wait_for


def lines(path):
    try:
        with open(path) as f:
            return [ln for ln in f.read().split("\n") if ln]
    except FileNotFoundError:
        return []


def test_json_lines(strata, backends, tmp_path):
    (b,) = backends(1)
    port = free_port()
    log = tmp_path / "access.json"
    strata(balancer_topology(port, [b], access_log={"path": str(log), "format": "json"}), [port])
    assert get(port, "/hello?x=1", headers={"User-Agent": 'ua "quoted"', "Referer": "http://r/"})[0] == 200
    assert get(port, "/status/404")[0] == 404
    assert status_of(raw(port, b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n")) == 400
    wait_for(lambda: len(lines(log)) == 3, what="three lines")
    ok, nf, bad = [json.loads(ln) for ln in lines(log)]
    assert ok["client"] == "127.0.0.1" and ok["method"] == "GET" and ok["path"] == "/hello?x=1"
    assert ok["status"] == 200 and ok["backend"] == "web1" and ok["protocol"] == "HTTP/1.1"
    assert ok["bytes"] > len(b"web1\n") and ok["request_ms"] >= ok["backend_ms"] >= 0
    assert ok["user_agent"] == 'ua "quoted"' and ok["referer"] == "http://r/"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", ok["time"])
    assert nf["status"] == 404 and nf["path"] == "/status/404"
    assert bad["status"] == 400 and bad["backend"] is None and bad["method"] == ""
    assert bad["bytes"] > 0 and bad["backend_ms"] is None


def test_combined_lines_and_balancer_errors(strata, backends, tmp_path):
    (b,) = backends(1)
    port = free_port()
    log = tmp_path / "access.log"
    strata(balancer_topology(port, [b], access_log={"path": str(log)}, retries=0,
                             server_timeout="300ms"), [port])
    assert get(port, "/p")[0] == 200
    assert get(port, "/sleep?s=3")[0] == 504
    wait_for(lambda: len(lines(log)) == 2, what="two lines")
    first, second = lines(log)
    m = re.match(r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
                 r'"GET /p HTTP/1\.1" 200 (\d+) "-" "[^"]*" backend=web1 '
                 r'request_ms=[\d.]+ backend_ms=[\d.]+$', first)
    assert m, first
    assert int(m.group(1)) > 0
    assert re.search(r'"GET /sleep\?s=3 HTTP/1\.1" 504 \d+ .* backend=web1 request_ms=[\d.]+ '
                     r'backend_ms=-$', second), second


def test_reopened_on_sigusr1(strata, backends, tmp_path):
    (b,) = backends(1)
    port = free_port()
    log = tmp_path / "access.log"
    p = strata(balancer_topology(port, [b], access_log={"path": str(log)}), [port])
    assert get(port, "/before")[0] == 200
    wait_for(lambda: len(lines(log)) == 1, what="first line")
    os.rename(log, str(log) + ".1")
    p.proc.send_signal(signal.SIGUSR1)  # to the supervisor: it tells every node
    wait_for(lambda: "access_log %s reopened" % log in p.output(), what="reopened")
    assert get(port, "/after")[0] == 200
    wait_for(lambda: len(lines(log)) == 1, what="a line in the new file")
    assert "/after" in lines(log)[0]
    assert [ln for ln in lines(str(log) + ".1")] and "/before" in lines(str(log) + ".1")[0]


def test_bad_access_log_settings(tmp_path):
    t = tmp_path / "t.lua"
    base = 'strata.balancer { node = "lb", listen = "127.0.0.1:8080", backends = { "127.0.0.1:1" }, '
    t.write_text(base + 'access_log = { path = "a.log", format = "xml" } }\n')
    r = run_cli("check", str(t))
    assert r.returncode == 1 and r.stderr.startswith(f"{t}:1: ")
    assert 'access_log.format must be "combined" or "json"' in r.stderr
    t.write_text(base + 'access_log = { format = "json" } }\n')
    r = run_cli("check", str(t))
    assert r.returncode == 1 and "access_log.path is required" in r.stderr
    t.write_text(base + 'access_log = { path = "logs/a.log", level = 1 } }\n')
    r = run_cli("check", str(t))
    assert r.returncode == 1 and "level" in r.stderr


def test_reload_turns_it_on(strata, backends, tmp_path):
    (b,) = backends(1)
    port = free_port()
    log = tmp_path / "later.log"
    admin = free_port()
    p = strata(balancer_topology(port, [b], admin=admin), [port, admin])
    assert get(port, "/one")[0] == 200
    with open(p.topo_path, "w") as f:
        f.write(balancer_topology(port, [b], admin=admin,
                                  access_log={"path": "later.log", "format": "json"}))
    r = run_cli("reload", p.topo_path)
    assert r.returncode == 0 and f"access_log {log}" in r.stdout, r.stdout + r.stderr
    assert get(port, "/two")[0] == 200
    wait_for(lambda: len(lines(log)) == 1, what="a line after the reload")
    assert json.loads(lines(log)[0])["path"] == "/two"

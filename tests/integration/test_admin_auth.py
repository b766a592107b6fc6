"""Admin endpoints and their token: an address beyond loopback needs one
(`strata check` says where), POST /reload needs it whenever one is set,
every request does with admin_auth = "all"; a missing or wrong token is a
401 with WWW-Authenticate: Bearer. `strata reload` and `strata status`
send it. The token never shows in `strata check`, /status or the logs."""
import json
import os
import urllib.error
import urllib.request

import pytest

from conftest import free_port, run_cli, wait_for

TOKEN = "s3cret-token-0123456789abcdef"


def http(method, port, path, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                 data=b"" if method == "POST" else None, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def topo_text(sup, node_admin, cache, token_line, auth=None, sup_host="127.0.0.1"):
    extra = f', admin_auth = "{auth}"' if auth else ""
    return (f'strata.supervisor {{ admin = "{sup_host}:{sup}"{token_line}{extra} }}\n'
            f'strata.cache {{ shards = {{ {{ node = "c1", listen = "127.0.0.1:{cache}" }} }} }}\n'
            f'strata.node {{ name = "c1", admin = "127.0.0.1:{node_admin}" }}\n')


def test_check_refuses_non_loopback_admin_without_token(tmp_path):
    p = tmp_path / "t.lua"
    p.write_text('strata.cache { shards = { { node = "c1", listen = "127.0.0.1:6001" } } }\n'
                 'strata.supervisor { admin = "0.0.0.0:9100" }\n')
    r = run_cli("check", str(p))
    assert r.returncode == 1
    assert r.stderr.startswith(f"{p}:2: admin 0.0.0.0:9100 is not on loopback"), r.stderr
    assert "admin_token" in r.stderr
    p.write_text('strata.cache { shards = { { node = "c1", listen = "127.0.0.1:6001" } } }\n'
                 'strata.node { name = "c1", admin = "10.1.2.3:9200" }\n')
    r = run_cli("check", str(p))
    assert r.returncode == 1 and r.stderr.startswith(f"{p}:2: admin 10.1.2.3:9200 of node 'c1'")


def test_check_accepts_token_and_never_prints_it(tmp_path):
    p = tmp_path / "t.lua"
    p.write_text('strata.cache { shards = { { node = "c1", listen = "127.0.0.1:6001" } } }\n'
                 f'strata.supervisor {{ admin = "0.0.0.0:9100", admin_token = "{TOKEN}" }}\n')
    r = run_cli("check", str(p))
    assert r.returncode == 0, r.stderr
    assert TOKEN not in r.stdout + r.stderr
    assert "token required for /reload" in r.stdout


@pytest.mark.parametrize("spec,why", [
    ('admin_token = "short"', "at least 16 characters"),
    ('admin_token = "a b c d e f g h i j k"', "without spaces"),
    ('admin_token_env = "STRATA_TEST_UNSET_VAR"', "STRATA_TEST_UNSET_VAR is not set"),
    ('admin_token_file = "missing.token"', "admin_token_file: cannot read"),
    (f'admin_token = "{TOKEN}", admin_token_env = "X"', "set one of"),
    (f'admin_token = "{TOKEN}", admin_auth = "some"', 'admin_auth must be "writes" or "all"'),
])
def test_bad_token_settings(tmp_path, spec, why):
    p = tmp_path / "t.lua"
    p.write_text('strata.cache { shards = { { node = "c1", listen = "127.0.0.1:6001" } } }\n'
                 f'strata.supervisor {{ admin = "127.0.0.1:9100", {spec} }}\n')
    r = run_cli("check", str(p))
    assert r.returncode == 1 and r.stderr.startswith(f"{p}:2: ") and why in r.stderr, r.stderr
    assert TOKEN not in r.stderr


@pytest.fixture
def running(strata, tmp_path):
    def start(token_line, auth=None, env=None):
        sup, admin, cache = free_port(), free_port(), free_port()
        p = strata(topo_text(sup, admin, cache, token_line, auth), [sup, admin, cache], env=env)
        return p, sup, admin
    return start


def test_reload_needs_the_token_status_does_not(running):
    p, sup, admin = running(f', admin_token = "{TOKEN}"')
    for port, who in ((admin, "c1"), (sup, "supervisor")):
        code, hdrs, body = http("POST", port, "/reload")
        assert code == 401, body
        assert hdrs["WWW-Authenticate"].startswith("Bearer")
        assert "X-Strata-Node" not in hdrs  # nothing about the owner before the token
        code, hdrs, body = http("POST", port, "/reload", token=TOKEN[:-1] + "x")
        assert code == 401
        code, hdrs, body = http("POST", port, "/reload", token=TOKEN + "x")
        assert code == 401
        code, hdrs, body = http("POST", port, "/reload?dry_run=1", token=TOKEN)
        assert code == 200 and json.loads(body)["node"] == who
        code, _, body = http("GET", port, "/status")
        assert code == 200 and TOKEN not in body
        assert http("GET", port, "/healthz")[0] == 200
        assert http("GET", port, "/metrics")[0] == 200
    # the node reloaded only once it was given the token
    assert json.loads(http("GET", admin, "/status")[2])["reloads"] == 0
    r = run_cli("reload", p.topo_path)
    assert r.returncode == 0 and "node c1: no changes" in r.stdout, r.stdout + r.stderr
    assert json.loads(http("GET", admin, "/status")[2])["reloads"] == 1
    assert TOKEN not in r.stdout + r.stderr + p.output()


def test_auth_all_guards_every_route_and_the_cli_sends_the_token(running, tmp_path):
    env = {"STRATA_TEST_ADMIN_TOKEN": TOKEN}
    os.environ["STRATA_TEST_ADMIN_TOKEN"] = TOKEN  # for the command line runs below
    try:
        p, sup, admin = running(', admin_token_env = "STRATA_TEST_ADMIN_TOKEN"', auth="all",
                                env=env)
        for port in (admin, sup):
            for path in ("/status", "/metrics", "/healthz"):
                assert http("GET", port, path)[0] == 401, path
                assert http("GET", port, path, token=TOKEN)[0] == 200, path
            code, hdrs, _ = http("GET", port, "/nothing-here")
            assert code == 401 and "X-Strata-Node" not in hdrs
            assert http("GET", port, "/nothing-here", token=TOKEN)[0] == 404
        st = run_cli("status", p.topo_path)
        assert st.returncode == 0 and "c1" in st.stdout, st.stdout + st.stderr
        r = run_cli("reload", p.topo_path)
        assert r.returncode == 0, r.stdout + r.stderr
        assert TOKEN not in st.stdout + st.stderr + r.stdout + r.stderr + p.output()
    finally:
        del os.environ["STRATA_TEST_ADMIN_TOKEN"]


def test_cli_without_the_token_is_refused(running, tmp_path):
    tf = tmp_path / "admin.token"
    tf.write_text(TOKEN + "\n")
    p, sup, admin = running(f', admin_token_file = "{tf}"', auth="all")
    # the same topology, but the command line's copy has another token
    other = tmp_path / "other.token"
    other.write_text("x" * 20 + "\n")
    real = open(p.topo_path).read()
    open(p.topo_path, "w").write(real.replace(str(tf), str(other)))
    try:
        st = run_cli("status", p.topo_path)
        assert st.returncode == 1 and "401 unauthorized" in st.stderr, st.stdout + st.stderr
        r = run_cli("reload", p.topo_path)
        assert r.returncode == 1 and "401 unauthorized" in r.stderr
    finally:
        open(p.topo_path, "w").write(real)
    assert json.loads(http("GET", admin, "/status", token=TOKEN)[2])["reloads"] == 0


def test_token_rotation_by_sighup(running, tmp_path):
    import signal
    tf = tmp_path / "admin.token"
    tf.write_text(TOKEN)
    p, sup, admin = running(f', admin_token_file = "{tf}"')
    new = "n" * 24
    tf.write_text(new)
    p.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: http("POST", admin, "/reload?dry_run=1", token=new)[0] == 200,
             what="the node takes the new token")
    wait_for(lambda: http("POST", sup, "/reload?dry_run=1", token=new)[0] == 200,
             what="the supervisor takes the new token")
    assert http("POST", admin, "/reload?dry_run=1", token=TOKEN)[0] == 401
    assert new not in p.output() and TOKEN not in p.output()

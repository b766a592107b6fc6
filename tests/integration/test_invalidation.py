"""A cache that invalidates from a db (strata.cache { invalidate_from = db }):
each cache shard follows the db primary's change stream and deletes the
cache keys a db write affects. Real processes, one per node (db1, c1), from
one topology file, so either can be killed, stopped or restarted.

Nothing here sleeps: every wait polls for its condition."""
import json
import os
import random
import signal
import urllib.request

import pytest
import redis

from conftest import SLOW, free_port, wait_for


class Setup:
    """A db primary (db1) and one cache shard (c1) invalidating from it."""

    def __init__(self, strata, tmp_path, db_fields="", cache_fields="", password=None,
                 keys_lua=None, admin=False):
        self.strata = strata
        self.tmp = tmp_path
        self.password = password
        self.ports = {"db1": free_port(), "c1": free_port()}
        pw = ', password = "%s"' % password if password else ""
        if keys_lua is not None:
            (tmp_path / "keys.lua").write_text(keys_lua)
            cache_fields += ', invalidate_keys = "keys.lua"'
        self.text = (
            'local db = strata.db {\n'
            '  primary = { node = "db1", listen = "127.0.0.1:%d", dir = "%s" }%s%s\n}\n'
            'strata.cache {\n'
            '  shards = { { node = "c1", listen = "127.0.0.1:%d" } },\n'
            '  invalidate_from = db%s\n}\n'
            % (self.ports["db1"], tmp_path / "db1", pw, db_fields, self.ports["c1"],
               cache_fields))
        self.admins = {}
        if admin:
            for n in ("db1", "c1"):
                self.admins[n] = free_port()
                self.text += 'strata.node { name = "%s", admin = "127.0.0.1:%d" }\n' % (
                    n, self.admins[n])
        self.path = tmp_path / "topo.lua"
        self.procs = {}

    def start(self, name):
        self.procs[name] = self.strata(self.text, [self.ports[name]], name=self.path.name,
                                       args=["--node", name],
                                       log=self.tmp / ("%s.%d.log" % (name, len(self.procs))))
        return self.procs[name]

    def start_all(self):
        self.start("db1")
        self.start("c1")
        self.wait_link()
        return self

    def client(self, name):
        # The cache has no password of its own here; the db may.
        pw = self.password if name == "db1" else None
        return redis.Redis(host="127.0.0.1", port=self.ports[name], password=pw,
                           socket_timeout=30 * SLOW, decode_responses=True)

    def inval(self):
        return self.client("c1").info("invalidation")

    def wait_link(self):
        wait_for(lambda: self.inval().get("invalidate_link_status") == "up", timeout=20,
                 what="the cache's stream link up")

    def kill9(self, name):
        p = self.procs[name]
        p.killed = True
        p.proc.kill()
        p.proc.wait()
        p.log.close()

    def signal(self, name, sig):
        os.kill(self.procs[name].proc.pid, sig)

    def wait_caught_up(self):
        """Until the cache has followed everything the db has logged."""
        db = self.client("db1")

        def ok():
            want = db.info("replication")["master_repl_offset"]
            i = self.inval()
            return i["invalidate_link_status"] == "up" and i["invalidate_offset"] == want
        wait_for(ok, timeout=20, what="the cache caught up with the db's stream")


def gone(r, *keys):
    return lambda: all(r.get(k) is None for k in keys)


def test_update_delete_expire_invalidate(strata, tmp_path):
    s = Setup(strata, tmp_path, password="s3cret").start_all()
    db, cache = s.client("db1"), s.client("c1")
    for k in ("u", "d", "e", "x", "other"):
        db.set(k, "v1")
        cache.set(k, "v1")          # cache-aside: the app filled the cache
    # Filling the db above invalidated too: fill the cache again after it.
    s.wait_caught_up()
    for k in ("u", "d", "e", "x", "other"):
        cache.set(k, "v1")
    db.set("u", "v2")
    wait_for(gone(cache, "u"), what="u invalidated by an update")
    db.delete("d")
    wait_for(gone(cache, "d"), what="d invalidated by a delete")
    db.pexpire("x", 1)              # a TTL change, then the expiry's deletion
    wait_for(gone(cache, "x"), what="x invalidated by EXPIRE")
    db.set("e", "v1", px=50)
    wait_for(gone(cache, "e"), what="e invalidated")
    cache.set("e", "v1")
    # The expiry's own deletion ([2, e]) reaches the cache too.
    wait_for(lambda: db.get("e") is None, what="e expired in the db")
    wait_for(gone(cache, "e"), what="e invalidated by its expiry")
    assert cache.get("other") == "v1"   # untouched keys stay
    i = s.inval()
    assert i["invalidations"] >= 5
    assert i["invalidate_from_node"] == "db1"
    assert i["invalidate_full_resyncs"] == 1 and i["invalidate_partial_resyncs"] == 0
    # The primary lists the cache as a follower, not a replica: WAIT does
    # not count it.
    rep = db.info("replication")
    assert rep["connected_slaves"] == 0 and rep["connected_followers"] == 1
    assert rep["follower0"]["name"] == "c1"
    db.set("w", "1")
    assert db.execute_command("WAIT", 1, 50) == 0
    # FLUSHALL in the db flushes the cache.
    cache.set("other", "v1")
    db.flushall()
    wait_for(lambda: cache.dbsize() == 0, what="the cache flushed by the db's FLUSHALL")


def test_lua_keys_mapping_and_fallback(strata, tmp_path):
    keys = ('local M = {}\n'
            'function M.keys(k)\n'
            '  if k == "bad" then error("no mapping for bad") end\n'
            '  if k == "num" then return 42 end\n'
            '  return { k, k .. ":profile" }\n'
            'end\n'
            'return M\n')
    s = Setup(strata, tmp_path, keys_lua=keys).start_all()
    db, cache = s.client("db1"), s.client("c1")
    cache.set("user:1", "a")
    cache.set("user:1:profile", "b")
    cache.set("user:2", "c")
    db.set("user:1", "new")
    wait_for(gone(cache, "user:1", "user:1:profile"), what="both mapped keys deleted")
    assert cache.get("user:2") == "c"
    # keys() raising, or returning something else: the db key itself goes.
    cache.set("bad", "x")
    cache.set("bad:profile", "y")
    db.set("bad", "1")
    wait_for(gone(cache, "bad"), what="bad deleted by the identity fallback")
    assert cache.get("bad:profile") == "y"
    cache.set("num", "x")
    db.set("num", "1")
    wait_for(gone(cache, "num"), what="num deleted by the identity fallback")
    i = s.inval()
    assert i["invalidate_keys_errors"] == 2
    assert i["invalidate_keys"].endswith("keys.lua")
    log = s.procs["c1"].output()
    assert "keys.lua:3:" in log and "no mapping for bad" in log


def test_broken_keys_module_is_refused_with_file_line(strata, tmp_path):
    from conftest import run_cli
    (tmp_path / "keys.lua").write_text("local M = {}\nfunction M.keys(k) return {k} end\n"
                                       "return M +\n")
    (tmp_path / "t.lua").write_text(
        'local db = strata.db { primary = { node = "db1", listen = "127.0.0.1:%d", dir = "%s" } }\n'
        'strata.cache { shards = { { node = "c1", listen = "127.0.0.1:%d" } },\n'
        '  invalidate_from = db, invalidate_keys = "keys.lua" }\n'
        % (free_port(), tmp_path / "db1", free_port()))
    r = run_cli("check", str(tmp_path / "t.lua"))
    assert r.returncode != 0
    assert "keys.lua:" in r.stderr + r.stdout
    (tmp_path / "t2.lua").write_text(
        'strata.cache { shards = { { node = "c1", listen = "127.0.0.1:%d" } },\n'
        '  invalidate_from = "db1" }\n' % free_port())
    r = run_cli("check", str(tmp_path / "t2.lua"))
    assert r.returncode != 0
    assert "t2.lua:2:" in r.stderr and "invalidate_from must be" in r.stderr


def test_primary_restart_resumes_partially(strata, tmp_path):
    s = Setup(strata, tmp_path).start_all()
    db, cache = s.client("db1"), s.client("c1")
    for i in range(100):
        db.set("k%d" % i, "v")
    s.wait_caught_up()
    s.kill9("db1")
    wait_for(lambda: s.inval()["invalidate_link_status"] != "up", what="link down")
    for i in range(100):
        cache.set("k%d" % i, "cached")
    s.start("db1")
    s.wait_link()
    db = s.client("db1")
    db.set("k7", "v2")
    wait_for(gone(cache, "k7"), what="k7 invalidated after the restart")
    i = s.inval()
    assert i["invalidate_partial_resyncs"] == 1 and i["invalidate_full_resyncs"] == 1
    assert i["invalidate_flushes"] == 1     # only the first sync's (empty) flush
    assert cache.get("k8") == "cached"      # nothing flushed


def test_stopped_cache_resumes_from_its_offset(strata, tmp_path):
    s = Setup(strata, tmp_path, db_fields=', repl_timeout = "1s"').start_all()
    db, cache = s.client("db1"), s.client("c1")
    cache.set("a", "old")
    cache.set("b", "keep")
    s.signal("c1", signal.SIGSTOP)
    try:
        db.set("a", "new")
        # The primary drops the silent follower after its timeout.
        wait_for(lambda: db.info("replication")["connected_followers"] == 0, timeout=20,
                 what="the primary dropped the stopped follower")
    finally:
        s.signal("c1", signal.SIGCONT)
    wait_for(gone(cache, "a"), what="a invalidated after the link came back")
    s.wait_caught_up()
    i = s.inval()
    assert i["invalidate_partial_resyncs"] >= 1 and i["invalidate_full_resyncs"] == 1
    assert cache.get("b") == "keep"


def test_backlog_too_small_flushes_once_and_follows(strata, tmp_path):
    s = Setup(strata, tmp_path, db_fields=', backlog = "64kb", repl_timeout = "1s"').start_all()
    db, cache = s.client("db1"), s.client("c1")
    cache.set("keep", "old")
    s.signal("c1", signal.SIGSTOP)
    try:
        wait_for(lambda: db.info("replication")["connected_followers"] == 0, timeout=20,
                 what="the primary dropped the stopped follower")
        # More than the backlog, and a snapshot so the log on disk no
        # longer holds the follower's offset either.
        p = db.pipeline(transaction=False)
        for i in range(2000):
            p.set("f%d" % i, "x" * 100)
        p.execute()
        db.save()
    finally:
        s.signal("c1", signal.SIGCONT)
    wait_for(lambda: s.inval()["invalidate_full_resyncs"] == 2, timeout=20,
             what="a full resync of the stream")
    s.wait_caught_up()
    assert cache.get("keep") is None
    assert s.inval()["invalidate_flushes"] == 2
    cache.set("after", "v")
    db.set("after", "w")
    wait_for(gone(cache, "after"), what="following the stream again")
    assert s.inval()["invalidate_full_resyncs"] == 2


def test_never_older_than_the_db_across_a_broken_link(strata, tmp_path):
    """A writer updates random keys in the db and, now and then, sets the new
    value in the cache (as an app would); the db primary is killed and
    restarted in the middle. Once the cache has followed everything the db
    logged, no cache key holds a value different from the db's."""
    s = Setup(strata, tmp_path).start_all()
    db, cache = s.client("db1"), s.client("c1")
    rnd = random.Random(11)
    keys = ["r%d" % i for i in range(200)]

    def burst(n):
        for _ in range(n):
            k = rnd.choice(keys)
            v = "v%d" % rnd.randrange(10 ** 9)
            op = rnd.randrange(10)
            if op < 7:
                db.set(k, v)
            elif op < 9:
                db.delete(k)
            else:
                db.set(k, v, px=rnd.randrange(1, 30))
            if rnd.randrange(2):
                try:
                    # what the app would cache: the db's value right now
                    cur = db.get(k)
                    if cur is not None:
                        cache.set(k, cur)
                except redis.ConnectionError:
                    pass

    burst(1500)
    s.kill9("db1")
    # The cache goes on being filled while the db is down: from values
    # it has seen (stale candidates) — the stream must delete them.
    for k in keys[:50]:
        cache.set(k, "while-down")
    s.start("db1")
    db = s.client("db1")
    # keys the cache was given while the db was away get written now
    for k in keys[:50]:
        db.set(k, "after-restart")
    burst(1500)
    s.wait_caught_up()
    # Keys with a short TTL may still expire in the db: wait for those
    # deletions to be logged and followed too.
    wait_for(lambda: all(db.pttl(k) < 0 or db.pttl(k) > 1000 for k in keys), what="short TTLs gone")
    s.wait_caught_up()
    stale = []
    for k in keys:
        c = cache.get(k)
        if c is not None and c != db.get(k):
            stale.append((k, c, db.get(k)))
    assert not stale, stale[:5]


def http_get(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as f:
        return f.read().decode()


def test_status_and_metrics_show_the_follower(strata, tmp_path):
    s = Setup(strata, tmp_path, admin=True).start_all()
    db, cache = s.client("db1"), s.client("c1")
    cache.set("k", "old")
    db.set("k", "new")
    wait_for(gone(cache, "k"), what="k invalidated")
    s.wait_caught_up()
    st = json.loads(http_get(s.admins["c1"], "/status"))["services"][0]
    assert st["invalidate_from_node"] == "db1" and st["invalidate_link"] == "up"
    assert st["invalidations"] == 1
    assert st["invalidate_offset"] == db.info("replication")["master_repl_offset"]
    m = http_get(s.admins["c1"], "/metrics")
    assert "strata_cache_invalidate_link_up{" in m
    assert any(l.startswith("strata_cache_invalidations_total{") and l.endswith(" 1")
               for l in m.splitlines()), m
    dst = json.loads(http_get(s.admins["db1"], "/status"))["services"][0]
    assert dst["connected_replicas"] == 0 and dst["connected_followers"] == 1
    assert dst["replicas"][0]["node"] == "c1" and dst["replicas"][0]["follower"] is True


def test_reload_loads_the_keys_module_again(strata, tmp_path):
    s = Setup(strata, tmp_path, keys_lua="return { keys = function(k) return { k } end }\n")
    s.start_all()
    db, cache = s.client("db1"), s.client("c1")
    (tmp_path / "keys.lua").write_text(
        "return { keys = function(k) return { k, k .. ':v2' } end }\n")
    s.signal("c1", signal.SIGHUP)

    def maps_to_v2():
        cache.set("a:v2", "x")
        db.set("a", "1")
        s.wait_caught_up()
        return cache.get("a:v2") is None
    wait_for(maps_to_v2, what="the reloaded keys() in use")
    # A module that does not load is refused; the one running stays.
    (tmp_path / "keys.lua").write_text("return { keys = 42 }\n")
    s.signal("c1", signal.SIGHUP)
    log = wait_for(lambda: "reload failed" in s.procs["c1"].output() and s.procs["c1"].output(),
                   what="the reload refused")
    assert "keys.lua:1: policy module has no function 'keys'" in log
    assert maps_to_v2()

"""A cache that invalidates from a db that fails over: the cache's stream
follower asks every db node who is the primary, and after a kill -9 of the
primary it follows the newly elected one (docs/cache.md, "Invalidation from
a db"; docs/db.md, "Failover"). Real processes: three db nodes and one cache
shard, each its own `strata run --node`.

Nothing here sleeps: every wait polls for its condition."""
import os
import signal

import redis

from conftest import SLOW, free_port, wait_for
from fo_util import wait_primary
from repl_util import Cluster

FIELDS = ', failover = { down_after = "1s" }'
NAMES = ["db1", "db2", "db3"]


def start_cluster(strata, tmp_path, password=None):
    c = Cluster(strata, tmp_path, replicas=2, fields=FIELDS, password=password)
    c.ports["c1"] = free_port()
    c.text = c.text.replace("strata.db {", "local db = strata.db {", 1) + (
        'strata.cache {\n  shards = { { node = "c1", listen = "127.0.0.1:%d" } },\n'
        '  invalidate_from = db\n}\n' % c.ports["c1"])
    for n in NAMES + ["c1"]:
        c.start(n)
    return c


def cache_of(c):
    # the cache has no password of its own here; the db may
    return redis.Redis(host="127.0.0.1", port=c.ports["c1"], socket_timeout=30 * SLOW,
                       decode_responses=True)


def inval(c):
    return cache_of(c).info("invalidation")


def wait_following(c, node):
    def ok():
        i = inval(c)
        return i["invalidate_from_node"] == node and i["invalidate_link_status"] == "up"
    wait_for(ok, timeout=20, what="the cache following %s's stream" % node)


def gone(r, *keys):
    return lambda: all(r.get(k) is None for k in keys)


def fresh_after_writes(cache, db, prefix, n=50):
    """Write in the db, then poll the cache: the value the app cached
    before the write leaves the cache, every time."""
    for i in range(n):
        k = "%s:%d" % (prefix, i % 5)
        cache.set(k, "old%d" % i)        # cache-aside: filled from the db
        db.set(k, "new%d" % i)
        wait_for(lambda: cache.get(k) != "old%d" % i, timeout=10,
                 what="%s's cached value dropped after the db write %d" % (k, i))


def test_cache_follows_the_new_primary_after_kill9(strata, tmp_path):
    c = start_cluster(strata, tmp_path, password="s3cret")
    old = wait_primary(c, NAMES)
    wait_following(c, old)
    cache, db = cache_of(c), c.client(old)
    i0 = inval(c)
    assert i0["invalidate_db_nodes"] == 3 and i0["invalidate_primary_switches"] == 0
    cache.set("k", "cached")
    db.set("k", "v1")
    wait_for(gone(cache, "k"), what="k invalidated by the first primary's write")
    # every db node has the primary's whole log: the new primary can
    # continue the cache's stream where it is
    assert db.execute_command("WAIT", 2, int(5000 * SLOW)) == 2
    wait_for(lambda: inval(c)["invalidate_offset"] ==
             db.info("replication")["master_repl_offset"], what="the cache caught up")
    cache.set("keep", "cached")
    c.kill9(old)
    new = wait_primary(c, [n for n in NAMES if n != old], timeout=30)
    wait_following(c, new)
    nd = c.client(new)
    cache.set("k2", "cached")
    nd.set("k2", "v2")
    wait_for(gone(cache, "k2"), timeout=10, what="k2 invalidated by the new primary's write")
    fresh_after_writes(cache, nd, "f")
    i = inval(c)
    assert i["invalidate_primary_switches"] == 1
    assert i["invalidate_epoch"] == nd.info("replication")["epoch"]
    # resumed from its offset on the new primary: nothing flushed
    assert i["invalidate_full_resyncs"] == 1 and i["invalidate_partial_resyncs"] >= 1
    assert i["invalidate_flushes"] == i0["invalidate_flushes"] and cache.get("keep") == "cached"
    rep = nd.info("replication")
    assert rep["connected_followers"] == 1 and rep["follower0"]["name"] == "c1"
    # the switch is said once
    wait_for(lambda: c.procs["c1"].output().count("the db's primary is now") == 1,
             what="the switch logged")
    assert "the db's primary is now %s" % new in c.procs["c1"].output()
    # the old primary comes back as a replica: the cache stays where it is
    c.start(old)
    wait_for(lambda: c.client(old).info("replication").get("master_node") == new,
             timeout=20, what="the old primary follows the new one")
    fresh_after_writes(cache, nd, "g", n=10)
    assert inval(c)["invalidate_from_node"] == new
    assert inval(c)["invalidate_primary_switches"] == 1


def test_a_new_primary_that_lacks_writes_the_cache_saw_flushes_it(strata, tmp_path):
    c = start_cluster(strata, tmp_path)
    old = wait_primary(c, NAMES)
    wait_following(c, old)
    cache, db = cache_of(c), c.client(old)
    others = [n for n in NAMES if n != old]
    db.set("base", "1")
    assert db.execute_command("WAIT", 2, int(5000 * SLOW)) == 2
    # the replicas stop; the old primary logs writes nobody else gets, and
    # the cache follows them
    for n in others:
        os.kill(c.procs[n].proc.pid, signal.SIGSTOP)
    # more than the stopped replicas' socket buffers and their links'
    # output bound hold, so they really lack what follows when the
    # primary dies
    for i in range(48):
        db.set("big:%d" % i, b"x" * (512 * 1024))
    for i in range(20):
        db.set("lost:%d" % i, "x")
    want = db.info("replication")["master_repl_offset"]
    wait_for(lambda: inval(c)["invalidate_offset"] == want,
             what="the cache saw the writes the replicas did not")
    cache.set("maybe_stale", "cached")
    i0 = inval(c)
    c.kill9(old)
    for n in others:
        os.kill(c.procs[n].proc.pid, signal.SIGCONT)
    new = wait_primary(c, others, timeout=30)
    wait_following(c, new)
    # its offset is past where the logs part: the cache cannot prove what
    # it holds fresh, and flushes
    wait_for(gone(cache, "maybe_stale"), what="the cache flushed")
    i = inval(c)
    assert i["invalidate_full_resyncs"] == 2 and i["invalidate_flushes"] == i0["invalidate_flushes"] + 1
    nd = c.client(new)
    assert nd.get("lost:0") is None
    cache.set("k3", "cached")
    nd.set("k3", "v3")
    wait_for(gone(cache, "k3"), timeout=10, what="k3 invalidated by the new primary's write")
    fresh_after_writes(cache, nd, "h", n=20)


def test_a_single_db_node_is_followed_as_before(strata, tmp_path):
    # a data set of one: nothing is asked, the cache dials the primary
    c = Cluster(strata, tmp_path, replicas=0)
    c.ports["c1"] = free_port()
    c.text = c.text.replace("strata.db {", "local db = strata.db {", 1) + (
        'strata.cache {\n  shards = { { node = "c1", listen = "127.0.0.1:%d" } },\n'
        '  invalidate_from = db\n}\n' % c.ports["c1"])
    c.start("db1")
    c.start("c1")
    wait_following(c, "db1")
    assert inval(c)["invalidate_db_nodes"] == 1
    fresh_after_writes(cache_of(c), c.client("db1"), "s", n=10)

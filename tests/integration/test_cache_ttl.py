"""Cache node: TTL semantics over the network, lazy and active expiry. Real
time passes here, so every wait polls for the condition."""
import time

from cache_util import Raw, enc, start_cache
from conftest import wait_for


def test_lazy_expiry_never_returns_an_expired_key(strata):
    _, _, r = start_cache(strata)
    r.set("k", "v", px=300)
    assert r.get("k") == b"v"
    deadline = time.monotonic() + 0.3
    # Poll until the key disappears; it must never come back afterwards.
    wait_for(lambda: r.get("k") is None, what="key to expire")
    assert time.monotonic() >= deadline - 0.05
    for cmd in (r.get("k"), r.exists("k"), r.ttl("k"), r.strlen("k"), r.getrange("k", 0, -1)):
        assert cmd in (None, 0, -2, b"")
    assert r.keys("*") == []
    assert r.info()["expired_keys"] == 1


def test_active_expiry_removes_keys_nobody_reads(strata):
    _, _, r = start_cache(strata)
    p = r.pipeline(transaction=False)
    for i in range(2000):
        p.set(f"short{i}", "v", px=100)
    for i in range(100):
        p.set(f"long{i}", "v", ex=3600)
        p.set(f"plain{i}", "v")
    p.execute()
    assert r.dbsize() == 2200
    # DBSIZE does not look at keys, so only the active cycle can shrink it.
    wait_for(lambda: r.dbsize() == 200, what="active expiry")
    info = r.info()
    assert info["expired_keys"] == 2000
    assert info["db0"]["expires"] == 100


def test_ttl_updates_and_persist(strata):
    _, _, r = start_cache(strata)
    r.set("k", "v", px=200)
    r.persist("k")
    r.set("gone", "v", px=200)
    wait_for(lambda: r.exists("gone") == 0, what="gone to expire")
    assert r.get("k") == b"v", "PERSIST removed the TTL"
    r.set("k", "v2", ex=1)
    r.set("k", "v3")  # a plain SET clears the TTL
    assert r.ttl("k") == -1
    r.set("t", "v", px=200)
    r.set("t", "v2", keepttl=True)
    wait_for(lambda: r.get("t") is None, what="KEEPTTL key to expire")


def test_expire_in_the_past_deletes_at_once(strata):
    port, _, r = start_cache(strata)
    r.set("k", "v")
    raw = Raw(port)
    raw.send(enc("EXPIREAT", "k", "1"))
    assert raw.line() == b":1"
    assert r.exists("k") == 0
    r.set("k", "v")
    raw.send(enc("SET", "k", "v", "PXAT", "1"))
    assert raw.line() == b"+OK"
    assert r.exists("k") == 0

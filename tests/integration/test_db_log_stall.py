"""Db log under fsync = "everysec": no write waits behind a sync.

A shim (fsync_gate.c, LD_PRELOAD) holds the fsync thread's fdatasync for as
long as the test says, and counts the syncs that started and ended. While a
sync is held, writes are answered, a BGSAVE rotates the log (it used to
sync the old segment on the loop, behind the held sync) and completes, and
the compacted segment's removal waits for the thread: the test asserts on
those counts and files, never on times."""
import os
import shutil
import subprocess

import pytest
import redis

from conftest import ROOT, SLOW, free_port, wait_for

SHIM_SRC = os.path.join(ROOT, "tests", "integration", "fsync_gate.c")


def build_shim(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        pytest.skip("no C compiler to build the fsync shim")
    out = str(tmp_path / "fsync_gate.so")
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", out, SHIM_SRC, "-ldl"], check=True)
    return out


def topology(port, data):
    return ('strata.db { primary = { node = "db1", listen = "127.0.0.1:%d", dir = "%s", '
            'fsync = "everysec" } }\n' % (port, data))


def count(gate, name):
    try:
        return os.path.getsize(os.path.join(gate, name))
    except OSError:
        return 0


def segments(data):
    return sorted(f for f in os.listdir(data) if f.startswith("log-") and f.endswith(".wal"))


def unsealed(path):
    with open(path, "rb") as f:
        f.seek(28)
        return int.from_bytes(f.read(4), "little") == 1


def persistence(r):
    return r.info("persistence")


def test_writes_do_not_wait_for_a_sync_in_progress(strata, tmp_path):
    shim = build_shim(tmp_path)
    gate = tmp_path / "gate"
    gate.mkdir()
    data = tmp_path / "data"
    port = free_port()
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = {"LD_PRELOAD": shim, "FSYNC_GATE_DIR": str(gate),
           "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}
    proc = strata(topology(port, data), [port], args=["--node", "db1"], env=env)
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30 * SLOW)
    r.set("k0", "v0")
    (gate / "closed").write_text("")
    r.set("k1", "v1")  # written, not synced: the next tick's sync is held
    wait_for(lambda: count(gate, "entered") == 1, what="the fsync thread to hold a sync")
    fsyncs = int(persistence(r)["log_fsyncs"])

    # Writes while the sync is held: every one answered.
    for i in range(100):
        assert r.set("a%d" % i, b"x" * 4096) is True
    pipe = r.pipeline(transaction=False)
    for i in range(500):
        pipe.set("p%d" % i, i)
    assert all(x is True for x in pipe.execute())

    # A rotation while the sync is held: BGSAVE answers, the snapshot is
    # written, writes go on into the new segment.
    before = segments(data)
    assert len(before) == 1
    assert r.bgsave()
    assert r.set("after-rotation", "1") is True
    wait_for(lambda: persistence(r)["rdb_bgsave_in_progress"] == 0, what="the snapshot")
    assert persistence(r)["rdb_last_bgsave_status"] == "ok"
    r.set("after-snapshot", "1")

    # All of it happened while the one sync was held.
    assert count(gate, "entered") == 1 and count(gate, "left") == 0
    assert int(persistence(r)["log_fsyncs"]) == fsyncs
    segs = segments(data)
    assert len(segs) == 2 and segs[0] == before[0], segs  # its removal waits for the thread
    newest = os.path.join(data, segs[1])
    assert unsealed(newest)  # its predecessor is not synced yet

    # The sync goes on: the old segment is synced and removed, the new one
    # sealed, and nothing was lost.
    (gate / "closed").unlink()
    wait_for(lambda: int(persistence(r)["log_fsyncs"]) > fsyncs, what="the held sync to end")
    wait_for(lambda: segments(data) == segs[1:], what="the compacted segment's removal")
    wait_for(lambda: not unsealed(newest), what="the new segment to be sealed")
    assert count(gate, "left") >= 1

    # kill -9 while a rotation's sync is held: every acknowledged write is
    # in the page cache, the unsealed newest segment is adopted.
    (gate / "closed").write_text("")
    r.set("k2", "v2")
    wait_for(lambda: count(gate, "entered") == 2, what="a second held sync")
    assert r.bgsave()
    for i in range(50):
        r.set("late%d" % i, i)
    wait_for(lambda: persistence(r)["rdb_bgsave_in_progress"] == 0, what="the second snapshot")
    for i in range(50, 60):
        r.set("late%d" % i, i)
    assert unsealed(os.path.join(data, segments(data)[-1]))
    proc.killed = True
    proc.proc.kill()
    proc.proc.wait()
    proc.log.close()
    (gate / "closed").unlink()
    proc = strata(topology(port, data), [port], args=["--node", "db1"], name="again.lua")
    r = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30 * SLOW)
    assert r.get("k0") == b"v0" and r.get("k1") == b"v1" and r.get("k2") == b"v2"
    assert r.get("a99") == b"x" * 4096 and r.get("p499") == b"499"
    assert r.get("after-rotation") == b"1" and r.get("after-snapshot") == b"1"
    assert [r.get("late%d" % i) for i in range(60)] == [b"%d" % i for i in range(60)]
    assert not unsealed(os.path.join(data, segments(data)[-1]))

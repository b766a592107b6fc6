"""A db node killed -9 during a background save leaves nothing behind: its
snapshot child dies with it, holds neither the listening socket nor the
data dir's lock, and the node restarts at once with every acknowledged
write."""
import os
import signal

from conftest import wait_for
from test_db import Db


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def gone(pid):
    """Exited (a zombie waiting for init counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def listening_inodes(pid):
    """Socket inodes the process has open that are listening TCP sockets."""
    listen = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[3] == "0A":  # TCP_LISTEN
                    listen.add(parts[9])
    held = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                held.add(target[8:-1])
    except OSError:
        pass
    return held & listen


def test_kill9_during_bgsave_leaves_no_child_listener_or_lock(strata, tmp_path):
    db = Db(strata, tmp_path)
    r = db.client()
    pipe = r.pipeline(transaction=False)
    for i in range(200000):
        pipe.set(f"key:{i}", "v" * 32)
        if i % 10000 == 9999:
            pipe.execute()
    pipe.execute()
    node = db.proc.proc.pid
    # Catch the snapshot child while it runs and freeze it there, so the
    # kill lands mid-save however fast the machine is.
    child = None
    for _ in range(50):
        wait_for(lambda: r.info("persistence")["rdb_bgsave_in_progress"] == 0, timeout=30,
                 what="no save in progress")
        r.bgsave()
        kids = children(node)
        if not kids:
            continue
        child = kids[0]
        # Its first steps drop the parent's descriptors; one that keeps the
        # listening socket never gets here.
        wait_for(lambda: gone(child) or not listening_inodes(child), timeout=5,
                 what="the snapshot child to drop the listening socket")
        os.kill(child, signal.SIGSTOP)
        if not gone(child):
            break
        child = None
    assert child, "never caught the snapshot child running"
    db.kill9()
    wait_for(lambda: gone(child), timeout=10, what="the snapshot child to die with its parent")
    db.start()
    r = db.client()
    assert r.dbsize() == 200000
    assert r.get("key:199999") == b"v" * 32

"""Db node: durability, recovery and disk faults, through redis-py against
real processes.

The fault tests follow the db's promises: with fsync = "always" nothing
acknowledged is lost on kill -9; a damaged log tail is cut, damage inside
the log refuses the start; a failing disk refuses writes with MISCONF,
keeps serving reads, and recovers by itself."""
import os
import random
import signal
import socket
import subprocess
import threading

import pytest
import redis

from conftest import SLOW, free_port, run_cli, wait_for


def db_topology(port, data_dir, fsync="always", password=None, debug=False):
    extra = ', password = "%s"' % password if password else ""
    if debug:  # DEBUG DISK-ERROR, for the fault tests: off unless the topology says so
        extra += ", debug = true"
    return ('strata.db { primary = { node = "db1", listen = "127.0.0.1:%d", dir = "%s", '
            'fsync = "%s" }%s }\n' % (port, data_dir, fsync, extra))


class Db:
    """One db node that can be killed and restarted on the same port and dir."""

    def __init__(self, strata, tmp_path, fsync="always", data_dir=None, password=None,
                 debug=False):
        self.strata = strata
        self.debug = debug
        self.port = free_port()
        self.dir = str(data_dir or tmp_path / "data")
        self.fsync = fsync
        self.password = password
        self.proc = None
        self.start()

    def start(self):
        # --node: the process is the db node itself, so kill -9 hits the db
        # (not a supervisor whose node would then stop gracefully).
        self.proc = self.strata(db_topology(self.port, self.dir, self.fsync, self.password,
                                            self.debug),
                                [self.port], args=["--node", "db1"])
        return self

    def client(self, **kw):
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           socket_timeout=30 * SLOW, **kw)

    def kill9(self):
        self.proc.killed = True
        self.proc.proc.kill()
        self.proc.proc.wait()
        self.proc.log.close()

    def restart(self, clean=True):
        if clean:
            self.proc.stop()
        else:
            self.kill9()
        return self.start()


def persistence(r):
    return r.info("persistence")


def seg_files(d):
    return sorted(f for f in os.listdir(d) if f.startswith("log-") and f.endswith(".wal"))


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Raw:
    """A socket that sends a command now and reads its reply later."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30 * SLOW)
        self.buf = b""

    def send(self, *args):
        self.s.sendall(resp(*args))

    def reply_ready(self):
        self.s.setblocking(False)
        try:
            d = self.s.recv(65536)
            if d:
                self.buf += d
        except BlockingIOError:
            pass
        finally:
            self.s.setblocking(True)
            self.s.settimeout(30 * SLOW)
        return b"\r\n" in self.buf

    def close(self):
        self.s.close()


# ---- basics ------------------------------------------------------------------

def test_writes_survive_restart(strata, tmp_path):
    db = Db(strata, tmp_path)
    r = db.client()
    assert r.set("a", "1") is True
    assert r.incr("a") == 2
    assert r.incrbyfloat("f", 1.5) == 1.5
    assert r.mset({"x": "10", "y": "20"}) is True
    assert r.append("s", "hello") == 5 and r.append("s", " world") == 11
    assert r.setrange("s", 0, "J") == 11
    assert r.set("gone", "v") and r.delete("gone") == 1
    assert r.rename("y", "z") is True
    assert r.set("ttl", "v", ex=1000) is True
    assert r.expire("x", 500) is True
    assert r.persist("x") is True
    assert r.set("big", b"\x00\xff" * 100000) is True
    db.restart()
    r = db.client()
    assert r.get("a") == b"2"
    assert r.get("f") == b"1.5"
    assert r.get("s") == b"Jello world"
    assert r.get("gone") is None and r.get("y") is None and r.get("z") == b"20"
    assert r.ttl("x") == -1
    assert 990 <= r.ttl("ttl") <= 1000
    assert r.get("big") == b"\x00\xff" * 100000
    assert r.dbsize() == 7
    p = persistence(r)
    assert p["replayed_records"] >= 12 and p["truncated_bytes"] == 0


def test_flush_and_kill9(strata, tmp_path):
    db = Db(strata, tmp_path)
    r = db.client()
    r.mset({"a": 1, "b": 2})
    assert r.flushall() is True
    r.set("c", 3)
    with pytest.raises(redis.ResponseError):
        r.execute_command("FLUSHDB", "bogus")  # refused: must not be logged as a flush
    db.restart(clean=False)
    r = db.client()
    assert sorted(r.keys()) == [b"c"]


def test_expiry_is_absolute_across_restart(strata, tmp_path):
    db = Db(strata, tmp_path)
    r = db.client()
    r.set("short", "v", px=int(1500 * SLOW))
    r.set("long", "v", ex=3600)
    r.set("n", 5)
    r.pexpire("n", int(1500 * SLOW))
    db.restart(clean=False)
    r = db.client()
    # The deadline was fixed when the key was written, not when it was loaded.
    wait_for(lambda: r.get("short") is None and r.get("n") is None, timeout=10,
             what="keys to expire at their original time")
    assert r.get("long") == b"v"
    db.restart()
    r = db.client()
    assert r.get("short") is None and r.get("n") is None and r.get("long") == b"v"


def test_never_evicts(strata, tmp_path):
    db = Db(strata, tmp_path)
    r = db.client()
    with pytest.raises(redis.ResponseError, match="never evicts"):
        r.config_set("maxmemory", "1mb")
    r.set("k", "v")
    assert r.get("k") == b"v"


def test_info_and_config(strata, tmp_path):
    """A db answers INFO from its keyspace plus persistence, with no eviction
    fields, and CONFIG with its own parameters."""
    db = Db(strata, tmp_path)
    r = db.client()
    r.set("a", "1", ex=100)
    r.set("b", "2")
    r.get("a")
    r.get("missing")
    info = r.info()
    for field in ("redis_version", "connected_clients", "used_memory", "keyspace_hits",
                  "keyspace_misses", "expired_keys", "total_commands_processed",
                  "aof_enabled", "fsync", "log_offset", "rdb_changes_since_last_save"):
        assert field in info, field
    for field in ("maxmemory_policy", "maxmemory_samples", "evicted_keys",
                  "eviction_policy_errors"):
        assert field not in info, field
    assert info["keyspace_hits"] == 1 and info["keyspace_misses"] == 1
    assert info["db0"] == {"keys": 2, "expires": 1, "avg_ttl": 0}
    assert info["fsync"] == "always" and info["aof_enabled"] == 1 and info["log_offset"] > 0
    assert info["rdb_changes_since_last_save"] == 2
    assert "used_memory" not in r.info("persistence")
    assert "log_offset" in r.info("persistence")
    assert "log_offset" not in r.info("memory") and "used_memory" in r.info("memory")
    s = socket.create_connection(("127.0.0.1", db.port), timeout=30 * SLOW)
    s.sendall(resp("INFO"))
    data = b""
    while b"\r\n" not in data or len(data) < data.index(b"\r\n") + 2 + int(data[1:data.index(b"\r\n")]) + 2:
        data += s.recv(65536)
    s.close()
    raw = data[data.index(b"\r\n") + 2:-2].decode()
    assert raw.index("# Stats") < raw.index("# Persistence") < raw.index("# Keyspace")
    assert "\r\n\r\n# Persistence\r\n" in raw and not raw.endswith("\r\n\r\n")

    assert r.config_get("appendonly") == {"appendonly": "yes"}
    assert r.config_get("appendfsync") == {"appendfsync": "always"}
    assert r.config_get("dir") == {"dir": db.dir}
    assert r.config_get("maxmemory") == {"maxmemory": "0"}
    assert r.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert r.config_get("maxmemory-samples") == {}
    everything = r.config_get("*")
    assert everything["databases"] == "1" and "proto-max-bulk-len" in everything
    assert r.config_set("save", "") is True
    assert r.config_set("appendonly", "yes") is True
    with pytest.raises(redis.ResponseError, match="always logs its writes"):
        r.config_set("appendonly", "no")
    with pytest.raises(redis.ResponseError,
                       match="CONFIG SET failed \\(possibly related to argument 'maxmemory'\\)"):
        r.config_set("maxmemory", "1mb")
    with pytest.raises(redis.ResponseError, match="never evicts"):
        r.config_set("maxmemory-policy", "allkeys-lru")
    for name in ("maxmemory-samples", "appendfsync", "nosuch"):
        with pytest.raises(redis.ResponseError,
                           match="Unknown option or number of arguments for CONFIG SET - '%s'"
                           % name):
            r.config_set(name, "1")
    assert r.config_resetstat() is True
    assert r.info("stats")["keyspace_hits"] == 0
    # The db's own commands are in its command table.
    assert "save" in r.execute_command("COMMAND", "INFO", "save")
    assert r.command_count() == len(r.command()) and "bgsave" in r.command()


def test_password(strata, tmp_path):
    db = Db(strata, tmp_path, password="s3cret")
    anon = redis.Redis(host="127.0.0.1", port=db.port, socket_timeout=10)
    with pytest.raises(redis.AuthenticationError):
        anon.set("k", "v")
    with pytest.raises(redis.AuthenticationError):
        anon.execute_command("SAVE")
    r = db.client()
    assert r.set("k", "v") is True
    db.restart()
    assert db.client().get("k") == b"v"


def test_data_dir_lock(strata, tmp_path):
    db = Db(strata, tmp_path)
    other = tmp_path / "other.lua"
    other.write_text(db_topology(free_port(), db.dir))
    p = subprocess.run([os.environ.get("STRATA_BIN", "build/strata"), "run", str(other)],
                       capture_output=True, text=True, timeout=60 * SLOW,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert p.returncode != 0
    assert "in use by another process" in p.stderr + p.stdout
    assert db.client().ping()


# ---- snapshots and compaction --------------------------------------------------

def test_save_bgsave_lastsave_compaction(strata, tmp_path):
    db = Db(strata, tmp_path)
    r = db.client()
    for i in range(200):
        r.set("k%d" % i, "v%d" % i)
    before = r.lastsave()
    assert r.bgsave()
    wait_for(lambda: persistence(r)["rdb_bgsave_in_progress"] == 0 and
             persistence(r)["snapshots"] == 1, what="bgsave to finish")
    p = persistence(r)
    assert p["rdb_last_bgsave_status"] == "ok" and p["snapshot_offset"] > 0
    assert r.lastsave() >= before
    # The log before the snapshot is gone: only the segment starting at it.
    assert seg_files(db.dir) == ["log-%016x.wal" % p["snapshot_offset"]]
    for i in range(200, 250):
        r.set("k%d" % i, "v%d" % i)
    r.delete("k0")
    db.restart(clean=False)
    r = db.client()
    assert r.dbsize() == 249
    assert r.get("k1") == b"v1" and r.get("k249") == b"v249" and r.get("k0") is None
    p = persistence(r)
    assert p["loaded_keys"] == 200 and p["replayed_records"] == 51
    assert r.save() is True
    assert persistence(r)["log_bytes_since_snapshot"] == 0
    db.restart(clean=False)
    assert db.client().dbsize() == 249


# ---- kill -9 during a stream of acknowledged writes -------------------------------

def test_kill9_loses_no_acknowledged_write(strata, tmp_path):
    """50 times: writers stream SET and INCR, the node is killed at a random
    moment, restarted, and every acknowledged write must be there; no key
    may hold a value that no client ever sent."""
    db = Db(strata, tmp_path)
    rng = random.Random(4242)
    acked = {}          # key -> last acknowledged value (each key written by one thread)
    sent = {}           # key -> every value ever sent
    incr_acked = [0]    # highest INCR result acknowledged
    incr_sent = [0]
    lock = threading.Lock()
    seq = [0]

    def writer(tid, stop):
        r = db.client()
        n = 0
        while not stop.is_set():
            key = "t%d:%d" % (tid, n % 40)
            with lock:
                seq[0] += 1
                val = "v%d" % seq[0]
                sent.setdefault(key, set()).add(val)
                if tid == 0:
                    incr_sent[0] += 1
            try:
                if tid == 0 and n % 3 == 0:
                    got = r.incr("counter")
                    with lock:
                        incr_acked[0] = max(incr_acked[0], got)
                else:
                    r.set(key, val)
                    with lock:
                        acked[key] = val
            except (redis.ConnectionError, redis.TimeoutError, ConnectionResetError, OSError):
                return
            n += 1

    for round_ in range(50):
        stop = threading.Event()
        threads = [threading.Thread(target=writer, args=(t, stop)) for t in range(4)]
        with lock:
            base = seq[0]
        for t in threads:
            t.start()
        target = base + rng.randint(1, 150)
        wait_for(lambda: seq[0] >= target, timeout=30, what="writes to flow")
        db.kill9()
        stop.set()
        for t in threads:
            t.join(timeout=30 * SLOW)
        with lock:
            snapshot_acked = dict(acked)
            top = incr_acked[0]
            sent_incr = incr_sent[0]
        db.start()
        r = db.client()
        for key, val in snapshot_acked.items():
            got = r.get(key)
            assert got is not None, "round %d: acknowledged %s=%s lost" % (round_, key, val)
            got = got.decode()
            # A later unacknowledged write to the same key may have reached
            # the log too; it must still be a value that was really sent.
            assert got in sent[key], "round %d: %s holds %s, never written" % (round_, key, got)
            assert int(got[1:]) >= int(val[1:]), "round %d: %s went back in time" % (round_, key)
        counter = int(r.get("counter") or 0)
        assert top <= counter <= sent_incr, "round %d: counter %d not in [%d, %d]" % (
            round_, counter, top, sent_incr)
        for key in r.keys("t*"):
            assert key.decode() in sent
        # What the node now holds is the new baseline.
        with lock:
            for key in list(acked):
                acked[key] = r.get(key).decode()


# ---- damaged logs -------------------------------------------------------------------

def test_torn_tail_is_cut_and_mid_log_damage_refused(strata, tmp_path):
    db = Db(strata, tmp_path)
    r = db.client()
    for i in range(100):
        r.set("k%d" % i, "value-%d" % i)
    db.restart()
    seg = os.path.join(db.dir, seg_files(db.dir)[-1])
    size = os.path.getsize(seg)
    # A few cuts at the process level (the unit test does a thousand in-process).
    rng = random.Random(7)
    for cut in sorted((rng.randrange(33, size) for _ in range(4)), reverse=True):
        db.proc.stop()
        with open(seg, "r+b") as f:
            f.truncate(cut)
        db.start()
        r = db.client()
        n = r.dbsize()
        # A prefix: k0..k(n-1), nothing after.
        assert all(r.get("k%d" % i) == b"value-%d" % i for i in range(n))
        assert r.get("k%d" % n) is None
        size = os.path.getsize(seg)
    db.proc.stop()
    with open(seg, "r+b") as f:
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0x40]))
    p = run_cli("run", db.proc.topo_path, timeout=30)
    assert p.returncode != 0
    assert "corrupt" in p.stderr and "refusing to start" in p.stderr


# ---- disk errors ------------------------------------------------------------------

def disk_error_cycle(db, r, arm, fix):
    """`arm()` makes the disk fail: a write is then held, later writes get
    MISCONF, reads go on, and `fix()` brings everything back."""
    r.set("before", "1")
    arm()
    a = Raw(db.port)
    a.send("SET", "held", "x" * 4096)     # executed, its log write fails: no reply yet
    wait_for(lambda: persistence(r)["aof_last_write_status"] == "err",
             what="the log write to fail")
    assert not a.reply_ready(), "a write was acknowledged without reaching the log"
    with pytest.raises(redis.ResponseError, match="MISCONF"):
        r.set("refused", "1")
    assert r.get("before") == b"1"             # reads keep working
    assert r.dbsize() >= 1
    assert persistence(r)["writes_refused"] >= 1
    fix()
    wait_for(a.reply_ready, what="the held write to be acknowledged")
    assert a.buf.startswith(b"+OK")
    a.close()
    wait_for(lambda: persistence(r)["aof_last_write_status"] == "ok", what="recovery")
    assert r.set("after", "1") is True
    db.restart(clean=False)
    r = db.client()
    assert r.get("before") == b"1" and r.get("after") == b"1"
    assert r.get("held") == b"x" * 4096
    assert r.get("refused") is None


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_injected_eio(strata, tmp_path, fsync):
    db = Db(strata, tmp_path, fsync=fsync, debug=True)
    r = db.client()
    r.set("warm", "1")
    admin = db.client()
    disk_error_cycle(db, r,
                     lambda: admin.execute_command("DEBUG", "DISK-ERROR", "ON", "WRITE"),
                     lambda: admin.execute_command("DEBUG", "DISK-ERROR", "OFF"))


def test_fsync_eio_everysec_refuses_then_recovers(strata, tmp_path):
    db = Db(strata, tmp_path, fsync="everysec", debug=True)
    r = db.client()
    r.set("a", "1")
    r.execute_command("DEBUG", "DISK-ERROR", "ON", "FSYNC")
    r.set("b", "2")  # written (acknowledged under everysec); the next fsync fails
    wait_for(lambda: persistence(r)["aof_last_write_status"] == "err", what="fsync failure")
    with pytest.raises(redis.ResponseError, match="MISCONF"):
        r.set("c", "3")
    assert r.get("b") == b"2"
    r.execute_command("DEBUG", "DISK-ERROR", "OFF")
    wait_for(lambda: persistence(r)["aof_last_write_status"] == "ok", what="fsync recovery")
    assert r.set("c", "3") is True


def test_full_disk(strata, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (%s)" % p.stderr.strip())
    try:
        db = Db(strata, tmp_path, data_dir=mnt / "data")
        r = db.client()
        filler = mnt / "filler"

        def fill():
            with open(filler, "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass
            # Leave a sliver so the node's small reads and renames still work
            # but no 4 KB record fits.

        disk_error_cycle(db, r, fill, lambda: os.unlink(filler))
        db.proc.stop()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_half_closed_client_still_gets_its_held_replies(strata, tmp_path):
    """A client that sends writes and then shuts down its sending side (nc,
    scripts) is answered: the replies wait for the log, then the close."""
    import socket
    db = Db(strata, tmp_path, fsync="always")
    s = socket.create_connection(("127.0.0.1", db.port))
    s.sendall(resp("SET", "h1", "v1") + resp("INCR", "h2") + resp("GET", "h1"))
    s.shutdown(socket.SHUT_WR)
    data = b""
    s.settimeout(30 * SLOW)
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data == b"+OK\r\n:1\r\n$2\r\nv1\r\n"
    assert db.client().get("h1") == b"v1"

"""Helpers for the failover tests: who is primary, writers that follow it,
and counts of what was acknowledged."""
import threading
import time

import redis

from conftest import SLOW, wait_for


def quick(cluster, name):
    """A client that gives up fast on a node that is gone or cut off."""
    return redis.Redis(host=cluster.host(name) if hasattr(cluster, "host") else "127.0.0.1",
                       port=cluster.ports[name], password=cluster.password, socket_timeout=2,
                       socket_connect_timeout=2)


def role(r):
    try:
        info = r.info("replication")
    except (redis.RedisError, OSError):
        return None
    return info


def primaries(cluster, names):
    """The nodes among names that say role:master."""
    out = []
    for n in names:
        info = role(quick(cluster, n))
        if info and info.get("role") == "master":
            out.append(n)
    return out


def wait_primary(cluster, names, exclude=(), timeout=20):
    got = {}

    def one():
        p = [n for n in primaries(cluster, names) if n not in exclude]
        if len(p) == 1:
            got["n"] = p[0]
            return True
        return False
    wait_for(one, timeout=timeout, what="one primary among %s" % (names,))
    return got["n"]


class Writer(threading.Thread):
    """Writes key w:<i> = <i> to whichever node is primary, one at a time;
    with wait=k each write is followed by WAIT k and counts as WAIT-acked
    only when WAIT answers >= k. Records every acknowledged write."""

    def __init__(self, cluster, names, wait=0, prefix="w"):
        super().__init__(daemon=True)
        self.cluster, self.names, self.wait, self.prefix = cluster, list(names), wait, prefix
        self.stop = threading.Event()
        self.acked, self.waited = [], []
        self.target = None
        self.errors = 0
        self.resumed_at = None

    def run(self):
        i = 0
        clients = {n: quick(self.cluster, n) for n in self.names}
        while not self.stop.is_set():
            if self.target is None:
                for n in self.names:
                    info = role(clients[n])
                    if info and info.get("role") == "master":
                        self.target = n
                        break
                else:
                    time.sleep(0.01)
                    continue
            r = clients[self.target]
            key = "%s:%d" % (self.prefix, i)
            try:
                if self.wait:
                    pipe = r.pipeline(transaction=False)
                    pipe.set(key, i)
                    pipe.execute_command("WAIT", self.wait, int(2000 * SLOW))
                    ok, n = pipe.execute()
                    self.acked.append(key)
                    if n >= self.wait:
                        self.waited.append(key)
                else:
                    r.set(key, i)
                    self.acked.append(key)
                i += 1
                if self.resumed_at is None and getattr(self, "cut_at", None):
                    self.resumed_at = time.monotonic()
            except (redis.RedisError, OSError):
                self.errors += 1
                self.target = None
                time.sleep(0.01)

    def finish(self):
        self.stop.set()
        self.join(30 * SLOW)


def missing(r, keys):
    out = []
    for at in range(0, len(keys), 1000):
        chunk = keys[at:at + 1000]
        vals = r.mget(chunk)
        out += [k for k, v in zip(chunk, vals) if v is None]
    return out

"""Helpers for the replication tests: a db primary and replicas, each its own
process (`strata run --node`), so one can be killed, stopped or restarted
while the others run."""
import hashlib
import os
import signal

import redis

from conftest import SLOW, free_port, wait_for


class Cluster:
    """strata.db { primary, replicas } from one topology text; node names
    db1 (the primary), db2, db3... replica_of maps a replica to the node it
    follows (default: the primary)."""

    def __init__(self, strata, tmp_path, replicas=1, replica_of=None, fields="",
                 password=None, fsync="everysec", admin=False, via=None):
        self.strata = strata
        self.tmp = tmp_path
        self.password = password
        self.names = ["db1"] + ["db%d" % (i + 2) for i in range(replicas)]
        self.ports = {n: free_port() for n in self.names}
        replica_of = replica_of or {}
        reps = []
        for n in self.names[1:]:
            extra = ', replica_of = "%s"' % replica_of[n] if n in replica_of else ""
            if via and n in via:
                extra += ', via = "%s"' % via[n]
            reps.append('{ node = "%s", listen = "127.0.0.1:%d", dir = "%s", fsync = "%s"%s }'
                        % (n, self.ports[n], tmp_path / n, fsync, extra))
        pw = ', password = "%s"' % password if password else ""
        self.text = ('strata.db {\n  primary = { node = "db1", listen = "127.0.0.1:%d", '
                     'dir = "%s", fsync = "%s" },\n  replicas = { %s }%s%s\n}\n'
                     % (self.ports["db1"], tmp_path / "db1", fsync, ", ".join(reps), pw,
                        fields))
        self.admins = {}
        if admin:
            for n in self.names:
                self.admins[n] = free_port()
                self.text += 'strata.node { name = "%s", admin = "127.0.0.1:%d" }\n' % (
                    n, self.admins[n])
        self.path = tmp_path / "db1.lua"
        self.procs = {}

    def start(self, name):
        # Every node runs from the one topology file, as on real machines
        # (its admin answers name that file); each has its own log.
        self.procs[name] = self.strata(self.text, [self.ports[name]], name=self.path.name,
                                       args=["--node", name], log=self.tmp / (name + ".log"))
        return self.procs[name]

    def start_all(self):
        for n in self.names:
            self.start(n)
        return self

    def client(self, name, **kw):
        return redis.Redis(host="127.0.0.1", port=self.ports[name], password=self.password,
                           socket_timeout=30 * SLOW, **kw)

    def kill9(self, name):
        p = self.procs[name]
        p.killed = True
        p.proc.kill()
        p.proc.wait()
        p.log.close()

    def stop_signal(self, name):
        os.kill(self.procs[name].proc.pid, signal.SIGSTOP)

    def cont(self, name):
        os.kill(self.procs[name].proc.pid, signal.SIGCONT)

    def repl(self, name):
        return self.client(name).info("replication")

    def wait_online(self, name, upstream="db1"):
        """Until the replica's link is up and its upstream lists it online."""
        def ok():
            r = self.repl(name)
            if r.get("master_link_status") != "up" or r.get("master_sync_in_progress"):
                return False
            up = self.repl(upstream)
            return any(isinstance(v, dict) and v.get("name") == name and v.get("state") == "online"
                       for k, v in up.items() if k.startswith("slave"))
        wait_for(ok, timeout=20, what=f"{name} online")

    def wait_converged(self, name, upstream="db1"):
        """Until the replica's digest equals the primary's (writes stopped)."""
        a, b = self.client(upstream), self.client(name)
        seen = {}

        def same():
            # Both sides each time: keys with a short TTL expire meanwhile.
            seen["want"] = digest(a)
            return digest(b) == seen["want"]
        wait_for(same, timeout=30, what=f"{name} has the data of {upstream}")
        return seen["want"]


def digest(r):
    """Every live key with its value and TTL presence, hashed: two nodes with
    the same data give the same digest."""
    keys = sorted(r.scan_iter(count=1000))
    h = hashlib.sha256()
    vals = []
    for at in range(0, len(keys), 1000):  # bounded pipelines
        pipe = r.pipeline(transaction=False)
        for k in keys[at:at + 1000]:
            pipe.get(k)
            pipe.pexpiretime(k)
        vals += pipe.execute()
    for i, k in enumerate(keys):
        v, x = vals[2 * i], vals[2 * i + 1]
        if v is None:   # expired between SCAN and GET
            continue
        h.update(b"%d:%s=%d:%s@%d;" % (len(k), k, len(v), v, x))
    return len(keys), h.hexdigest()

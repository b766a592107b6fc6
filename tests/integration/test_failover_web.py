"""The web tier follows a failover: a web node running examples/app.lua in
front of a primary and two replicas with failover keeps taking writes after
the primary is killed (its db client asks the nodes who is primary now and
retries there), and every write it acknowledged is on the new primary."""
import http.client
import json
import os
import threading
import time

from conftest import ROOT, free_port, wait_for
from fo_util import wait_primary
from repl_util import Cluster

NAMES = ["db1", "db2", "db3"]


class WebWriter(threading.Thread):
    """PUTs user i = "u<i>" through the web node, one at a time, and keeps
    the ids it answered 200."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.acked, self.failed = [], 0
        self.last_ok = 0.0

    def run(self):
        i = 0
        conn = None
        while not self.stop.is_set():
            i += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("PUT", "/api/users/%d" % i, body=json.dumps({"name": "u%d" % i}))
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    self.last_ok = time.monotonic()
                    self.acked.append((i, self.last_ok))
                else:
                    self.failed += 1
            except (OSError, http.client.HTTPException):
                self.failed += 1
                conn = None


def test_web_writes_resume_on_the_new_primary_after_kill9(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=2, fields=', failover = { down_after = "1s" }')
    web_port, cache_port = free_port(), free_port()
    c.text = c.text.replace("strata.db {", "local db = strata.db {", 1)
    c.text += """
local cache = strata.cache { shards = { { node = "c1", listen = "127.0.0.1:%d" } } }
strata.web { nodes = { { node = "web1", listen = "127.0.0.1:%d" } },
             app = "%s", cache = cache, db = db }
""" % (cache_port, web_port, os.path.join(ROOT, "examples", "app.lua"))
    c.start_all()
    strata(c.text, [cache_port], name=c.path.name, args=["--node", "c1"],
           log=tmp_path / "c1.log")
    strata(c.text, [web_port], name=c.path.name, args=["--node", "web1"],
           log=tmp_path / "web1.log")
    old = wait_primary(c, NAMES)
    # both replicas follow the agreed primary before the load starts
    wait_for(lambda: c.client(old).execute_command("WAIT", 2, 1000) == 2, timeout=20,
             what="both replicas attached")
    w = WebWriter(web_port)
    w.start()
    try:
        wait_for(lambda: len(w.acked) > 50, timeout=20, what="writes through the web node")
        c.kill9(old)
        killed_at = time.monotonic()
        new = wait_primary(c, [n for n in NAMES if n != old], timeout=30)
        wait_for(lambda: w.last_ok > killed_at and len(w.acked) > 0, timeout=30,
                 what="web writes resume after the failover")
        n0 = len(w.acked)
        wait_for(lambda: len(w.acked) > n0 + 50, timeout=20, what="writes on the new primary")
    finally:
        w.stop.set()
        w.join(timeout=15)
    r = c.client(new)
    # Every write the web node acknowledged after the kill is on the new
    # primary. Before it, replication is asynchronous (the app does not
    # WAIT): the writes still in flight to the replicas may be lost -- only
    # those, the newest ones, as the stream is ordered and the most
    # up-to-date replica won.
    after = [i for i, t in w.acked if t > killed_at]
    before = [i for i, t in w.acked if t <= killed_at]
    assert after and [i for i in after if r.get("user:%d" % i) is None] == []
    lost = [i for i in before if r.get("user:%d" % i) is None]
    assert lost == before[len(before) - len(lost):], lost
    assert len(lost) < len(before) // 2, (len(lost), len(before))
    assert json.loads(r.get("user:%d" % after[-1]))["name"] == "u%d" % after[-1]

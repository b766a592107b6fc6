"""Drives tests/tools/kvc_probe (the client layer of engine/client, built
next to the strata binary): one JSON answer per command line."""
import json
import os
import select
import subprocess

from conftest import SLOW, STRATA_BIN

PROBE = os.environ.get("STRATA_KVC_PROBE") or os.path.join(os.path.dirname(STRATA_BIN),
                                                           "kvc_probe")


class Probe:
    """kvc_probe cache|db ARGS... as a child process; ask() sends one command
    line and returns its JSON answer. close() asserts a clean exit, so a
    sanitizer report (a leak, a use after free) fails the test."""

    def __init__(self, tmp_path, *args, name="probe"):
        self.log_path = tmp_path / (name + ".log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([PROBE, *map(str, args)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        first = self.read(30)
        assert first.get("ready"), first

    def read(self, timeout):
        r, _, _ = select.select([self.proc.stdout], [], [], timeout * SLOW)
        if not r:
            raise AssertionError("kvc_probe did not answer in time:\n" + self.output())
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("kvc_probe ended:\n" + self.output())
        return json.loads(line)

    def ask(self, line, timeout=30):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.read(timeout)

    def output(self):
        self.log.flush()
        with open(self.log_path) as f:
            return f.read()

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            rc = self.proc.wait(timeout=30 * SLOW)
        else:
            rc = self.proc.returncode
        self.log.close()
        assert rc == 0, "kvc_probe exited %d:\n%s" % (rc, self.output())

"""Shared fixtures for integration tests: the real `strata` binary, started on
ephemeral loopback ports and driven by real clients.

Tests wait for conditions with `wait_for`; they never sleep and hope."""
import os
import signal
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STRATA_BIN = os.environ.get("STRATA_BIN", os.path.join(ROOT, "build", "strata"))
SANITIZED = os.environ.get("STRATA_SANITIZE", "0") in ("1", "ON", "TRUE", "true")
# Sanitized builds run several times slower; waits scale with them.
SLOW = 4.0 if SANITIZED else 1.0


_handed_out = set()


def free_port():
    """A port that was free a moment ago (the kernel picks it), and never the
    same twice in one test run: a test asks for several before using any."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_for(cond, timeout=10.0, interval=0.01, what="condition"):
    """Polls cond() until it returns a truthy value; fails the test on timeout."""
    deadline = time.monotonic() + timeout * SLOW
    last_exc = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # the thing polled may not be up yet
            last_exc = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f": {last_exc!r}" if last_exc else ""))


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def run_cli(*args, cwd=None, timeout=60):
    """Runs the strata CLI to completion; returns CompletedProcess (text)."""
    return subprocess.run([STRATA_BIN, *args], cwd=cwd or ROOT, capture_output=True, text=True,
                          timeout=timeout * SLOW)


class StrataProcess:
    """`strata run TOPOLOGY` as a child process, stopped on teardown.

    A sanitizer report or a crash makes the process exit non-zero, and
    stop() asserts a clean exit, so those fail the test that caused them."""

    def __init__(self, topo_path, ports, args=(), cwd=None, env=None, log_path=None):
        self.topo_path = str(topo_path)
        self.ports = list(ports)
        self.log_path = str(log_path) if log_path else self.topo_path + ".log"
        self.args = list(args)
        self.cwd = cwd or ROOT
        self.env = dict(os.environ, **(env or {}))
        self.proc = None

    def start(self, wait=True):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([STRATA_BIN, "run", self.topo_path, *self.args],
                                     cwd=self.cwd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=self.env)
        if wait:
            for p in self.ports:
                wait_for(lambda: self.proc.poll() is None and port_open(p) or self._died(),
                         timeout=15, what=f"port {p} ({self.output()[-2000:]})")
        return self

    def _died(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"strata exited {self.proc.returncode}: {self.output()[-3000:]}")
        return False

    def output(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, expect_clean=True):
        if self.proc is None or self.proc.poll() is not None:
            rc = self.proc.returncode if self.proc else 0
        else:
            self.proc.send_signal(sig)
            try:
                rc = self.proc.wait(timeout=20 * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait()
                raise AssertionError("strata did not stop on signal:\n" + self.output()[-3000:])
        self.log.close()
        if expect_clean:
            assert rc == 0, f"strata exited {rc}:\n{self.output()[-4000:]}"
        return rc


@pytest.fixture
def strata(tmp_path):
    """Factory: strata(topology_text, ports=[...]) writes the topology to a
    temporary file, starts `strata run` on it, waits for the ports, and stops
    it (asserting a clean exit) when the test ends."""
    started = []

    def start(text, ports, name="topo.lua", args=(), wait=True, env=None, log=None):
        path = tmp_path / name
        path.write_text(text)
        p = StrataProcess(path, ports, args=args, env=env, log_path=log).start(wait=wait)
        started.append(p)
        return p

    yield start
    errors = []
    for p in started:
        if p.proc and p.proc.poll() is None:
            try:
                p.stop()
            except AssertionError as e:
                errors.append(str(e))
        elif p.proc and p.proc.returncode not in (0, None) and not getattr(p, "killed", False):
            errors.append(f"strata exited {p.proc.returncode}:\n{p.output()[-4000:]}")
    if errors:
        pytest.fail("\n".join(errors))

"""The replica against a scripted upstream: the stream's frames are checked
before anything of them is applied. A frame with a flipped byte drops the
link; the records before it are kept, the damaged one is never applied,
and the replica asks to resume exactly after the last good record."""
import socket
import struct
import threading

import pytest

from conftest import wait_for
from repl_util import Cluster


def _table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


T = _table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def mask(c):
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(payload):
    head = struct.pack("<II", len(payload), mask(crc32c(payload)))
    return head + struct.pack("<I", mask(crc32c(head))) + payload


def bin_(s):
    return b"\xc4" + bytes([len(s)]) + s


def set_record(key, val):
    """[1, key, value, 0]: the log's own SET effect."""
    return frame(b"\x94\x01" + bin_(key) + bin_(val) + b"\x00")


REPLID = b"00000000000000aa"


class FakeUpstream:
    """Accepts replica links on a port and answers PSYNC by script."""

    def __init__(self, port):
        self.srv = socket.create_server(("127.0.0.1", port))
        self.psyncs = []
        self.conns = []
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def read_psync(self, c):
        buf = b""
        # PSYNC replid offset version node listen [replica epoch log_epoch]:
        # the replid and offset are the 4th and 6th lines from "$5 PSYNC"
        while True:
            i = buf.find(b"$5\r\nPSYNC\r\n")
            if i >= 0 and buf[i:].count(b"\r\n") >= 6:
                lines = buf[i:].split(b"\r\n")
                return lines[3], int(lines[5])
            buf += c.recv(4096)

    def run(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(c)
            replid, offset = self.read_psync(c)
            self.psyncs.append((replid, offset))
            if len(self.psyncs) == 1:
                good = set_record(b"good", b"1")
                bad = bytearray(set_record(b"bad", b"2"))
                bad[-2] ^= 0x01  # inside the value: only the payload CRC sees it
                c.sendall(b"+FULLRESYNC " + REPLID + b" 0\r\n" +
                          frame(b"\x93\x42\x00\x00") +  # [66, 0 keys, whole at 0]
                          good + bytes(bad) + set_record(b"after", b"3"))
                self.good_len = len(good)
            else:
                c.sendall(b"+CONTINUE " + REPLID + b" %d\r\n" % offset +
                          set_record(b"resumed", b"4"))

    def close(self):
        self.srv.close()
        for c in self.conns:
            c.close()


def test_a_damaged_frame_is_never_applied(strata, tmp_path):
    c = Cluster(strata, tmp_path, replicas=1)
    up = FakeUpstream(c.ports["db1"])
    try:
        c.start("db2")
        r = c.client("db2")
        wait_for(lambda: r.get("resumed") == b"4", what="the resumed stream applied")
        assert r.get("good") == b"1"
        assert r.get("bad") is None and r.get("after") is None
        assert up.psyncs[0][0] != REPLID
        # It came back asking for exactly what follows the good record.
        assert up.psyncs[1] == (REPLID, up.good_len)
        info = r.info("replication")
        assert info["master_bad_frames"] == 1
        assert info["master_sync_full"] == 1 and info["master_sync_partial"] == 1
        assert info["master_replid"] == REPLID.decode()
        assert "bad frame" in c.procs["db2"].output()
    finally:
        up.close()


def entries_frame(n):
    """[65, key, value, 0, ...]: one chunk of n keys of a full resync."""
    body = b"".join(bin_(b"k%05d" % i) + bin_(b"v") + b"\x00" for i in range(n))
    return frame(b"\xdd" + struct.pack(">I", 1 + 3 * n) + b"\x41" + body)


class FullOnly:
    """Answers every PSYNC with the given +FULLRESYNC line, n keys and the
    end of the keys, then keeps the link open."""

    def __init__(self, port, line, n):
        self.srv = socket.create_server(("127.0.0.1", port))
        self.line, self.n = line, n
        self.conns = []
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            self.conns.append(c)
            FakeUpstream.read_psync(self, c)
            end = frame(b"\x93\x42" + b"\xcd" + struct.pack(">H", self.n) + b"\x00")
            c.sendall(self.line + b"\r\n" + entries_frame(self.n) + end)

    def close(self):
        self.srv.close()
        for c in self.conns:
            c.close()


N_KEYS = 5000


@pytest.mark.parametrize("line,announced", [
    (b"+FULLRESYNC " + REPLID + b" 0 0 0:0 - %d" % N_KEYS, N_KEYS),
    (b"+FULLRESYNC " + REPLID + b" 0 0 0:0 -", 0),  # before the key count
    (b"+FULLRESYNC " + REPLID + b" 0", 0),          # before epochs
])
def test_full_resync_presized_from_the_announced_key_count(strata, tmp_path, line, announced):
    """The count in +FULLRESYNC sizes the replica's new store once: no
    resize while the keys come in. An upstream that sends no count (the
    older answers) is still followed; its keys grow the table as they
    arrive."""
    c = Cluster(strata, tmp_path, replicas=1)
    up = FullOnly(c.ports["db1"], line, N_KEYS)
    try:
        c.start("db2")
        r = c.client("db2")
        wait_for(lambda: r.info("replication")["master_sync_full"] == 1 and
                 r.dbsize() == N_KEYS, what="the full resync served")
        info = r.info("replication")
        assert info["master_sync_announced_keys"] == announced
        if announced:
            assert info["master_sync_resizes"] == 0
        else:
            assert info["master_sync_resizes"] > 0
        assert r.get("k04999") == b"v"
    finally:
        up.close()

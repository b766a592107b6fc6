"""Helpers for the cache integration tests: start a cache node, talk raw RESP."""
import socket

import redis

from conftest import free_port, wait_for


def cache_topology(port, **opts):
    """A topology with one cache shard on `port`; opts become strata.cache fields."""
    fields = ['shards = { { node = "c1", listen = "127.0.0.1:%d" } }' % port]
    for k, v in opts.items():
        if isinstance(v, str):
            fields.append('%s = "%s"' % (k, v))
        else:
            fields.append("%s = %s" % (k, v))
    return "strata.cache { %s }\n" % ", ".join(fields)


def start_cache(strata, name="topo.lua", **opts):
    """Starts a node; returns (port, process, redis client)."""
    port = free_port()
    proc = strata(cache_topology(port, **opts), [port], name=name)
    password = opts.get("password")
    client = redis.Redis(host="127.0.0.1", port=port, password=password, socket_timeout=30)
    return port, proc, client


def info(client, section=None):
    return client.info(section) if section else client.info()


class Raw:
    """A plain socket speaking RESP, for inputs a client library won't send."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.s.recv(65536)
            if not d:
                raise EOFError(self.buf)
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def closed(self):
        """True once the server has closed the connection (after any reply)."""
        try:
            self.s.settimeout(10)
            while True:
                d = self.s.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        self.s.close()


def enc(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def wait_used_under(client, limit):
    return wait_for(lambda: client.info("memory")["used_memory"] <= limit, what="used_memory")

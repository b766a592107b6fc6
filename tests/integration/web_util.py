"""Helpers for the web tier's tests: a topology with one web node (and
optionally cache and db nodes), plain HTTP calls with http.client."""
import http.client
import json

from conftest import free_port


def call(port, method, path, body=None, headers=None, timeout=10):
    """One request on its own connection: (status, headers dict lower-case, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def get(port, path, **kw):
    return call(port, "GET", path, **kw)


def get_json(port, path, **kw):
    st, h, b = call(port, "GET", path, **kw)
    return st, h, json.loads(b) if b else None


def web_topo(app_path, port, extra="", web_extra="", cache=None, db=None):
    """A topology text: optional cache/db declarations (text) plus one web node."""
    parts = []
    if cache:
        parts.append(cache)
    if db:
        parts.append(db)
    refs = ""
    if cache:
        refs += ", cache = cache"
    if db:
        refs += ", db = db"
    parts.append(
        f'local web = strata.web {{ nodes = {{ {{ node = "w1", listen = "127.0.0.1:{port}" }} }},\n'
        f'  app = "{app_path}"{refs}{web_extra} }}\n')
    parts.append(extra)
    return "".join(parts)


def ports(n):
    return [free_port() for _ in range(n)]

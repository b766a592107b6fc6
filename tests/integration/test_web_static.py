"""Static files of a web node, as curl and a CDN see them: through a real
`strata run` topology (a web node serving a folder, and a balancer in front
as a CDN's origin would be reached), the exact statuses and headers of
GET/HEAD, revalidation, ranges, fingerprinted names, precompressed
siblings, directories, 405, and the paths that try to leave the folder."""
import gzip
import hashlib
import os
import re
import shutil
import subprocess

import pytest

from conftest import free_port

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed")

BIG = 4 * 1024 * 1024


def pattern(n):
    return bytes((i * 7 + (i >> 11)) & 0xFF for i in range(n))


@pytest.fixture(scope="module")
def big_bytes():
    return pattern(BIG)


def make_public(base, big_bytes):
    pub = base / "public"
    (pub / "sub").mkdir(parents=True)
    (pub / "empty").mkdir()
    (pub / "index.html").write_text("<h1>home</h1>\n")
    (pub / "hello.txt").write_text("hello, world\n")
    (pub / "sub" / "index.html").write_text("<h1>sub</h1>\n")
    (pub / "app.3f9a1c2e.js").write_text("console.log(1)\n")
    data = b'{"items": [' + b", ".join(b'"item %d"' % i for i in range(200)) + b"]}\n"
    (pub / "data.json").write_bytes(data)
    (pub / "data.json.gz").write_bytes(gzip.compress(data, 9, mtime=0))
    (pub / "data.json.br").write_bytes(b"not really brotli")
    (pub / "big.bin").write_bytes(big_bytes)
    (pub / ".env").write_text("SECRET=1\n")
    outside = base / "outside.txt"
    outside.write_text("outside\n")
    os.symlink("/etc", pub / "link-etc")
    os.symlink("../outside.txt", pub / "link-up")
    os.symlink("hello.txt", pub / "link-in")
    return pub, data


def curl(port, path, *args, head_only=False):
    """curl against 127.0.0.1:port: (status, headers lower-case, body)."""
    cmd = [CURL, "-s", "--path-as-is", "-D", "-", "-o", "-" if not head_only else "/dev/null",
           "--max-time", "20", *args, f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, timeout=60).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body


@pytest.fixture
def site(strata, tmp_path, big_bytes):
    """A web node serving tmp_path/public, and a balancer in front of it."""
    pub, data = make_public(tmp_path, big_bytes)
    web, lb = free_port(), free_port()
    strata(f'''
local web = strata.web {{ nodes = {{ {{ node = "w1", listen = "127.0.0.1:{web}" }} }},
                         static = "public" }}
strata.balancer {{ node = "lb", listen = "127.0.0.1:{lb}", backends = web }}
''', [web, lb])
    return {"web": web, "lb": lb, "pub": pub, "data": data}


@pytest.mark.parametrize("via", ["web", "lb"])
def test_get_head_and_validators(site, via):
    port = site[via]
    st, h, body = curl(port, "/hello.txt")
    assert st == 200 and body == b"hello, world\n"
    assert h["content-length"] == "13"
    assert h["content-type"] == "text/plain; charset=utf-8"
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+\.[0-9a-f]+"', h["etag"]), h["etag"]
    mtime = os.stat(site["pub"] / "hello.txt").st_mtime
    assert h["last-modified"] == subprocess.run(
        ["date", "-u", "-d", f"@{int(mtime)}", "+%a, %d %b %Y %H:%M:%S GMT"],
        capture_output=True, text=True, env={"LC_ALL": "C"}).stdout.strip()
    assert h["cache-control"] == "public, max-age=300"
    assert h["accept-ranges"] == "bytes"
    assert "date" in h and "vary" not in h
    etag, lm = h["etag"], h["last-modified"]

    st, hh, body = curl(port, "/hello.txt", "-I", head_only=True)
    assert st == 200 and body == b"" and hh["content-length"] == "13" and hh["etag"] == etag

    st, h, body = curl(port, "/hello.txt", "-H", f"If-None-Match: {etag}")
    assert st == 304 and body == b""
    assert h["etag"] == etag and h["cache-control"] == "public, max-age=300"
    st, _, _ = curl(port, "/hello.txt", "-H", f'If-None-Match: "x", W/{etag}')
    assert st == 304
    st, _, _ = curl(port, "/hello.txt", "-H", "If-None-Match: *")
    assert st == 304
    st, _, body = curl(port, "/hello.txt", "-H", 'If-None-Match: "other"')
    assert st == 200 and body == b"hello, world\n"
    st, _, _ = curl(port, "/hello.txt", "-H", f"If-Modified-Since: {lm}")
    assert st == 304
    st, _, _ = curl(port, "/hello.txt", "-z", "Mon, 01 Jan 2001 00:00:00 GMT")
    assert st == 200
    # If-Modified-Since is not read when If-None-Match is there.
    st, _, _ = curl(port, "/hello.txt", "-H", 'If-None-Match: "other"',
                    "-H", f"If-Modified-Since: {lm}")
    assert st == 200


@pytest.mark.parametrize("via", ["web", "lb"])
def test_ranges(site, via):
    port = site[via]
    st, h, body = curl(port, "/hello.txt", "-r", "0-4")
    assert st == 206 and body == b"hello"
    assert h["content-range"] == "bytes 0-4/13" and h["content-length"] == "5"
    st, h, body = curl(port, "/hello.txt", "-r", "-6")
    assert st == 206 and body == b"world\n" and h["content-range"] == "bytes 7-12/13"
    st, h, body = curl(port, "/hello.txt", "-r", "7-")
    assert st == 206 and body == b"world\n"
    st, h, _ = curl(port, "/hello.txt", "-r", "13-")
    assert st == 416 and h["content-range"] == "bytes */13"
    st, h, body = curl(port, "/hello.txt", "-r", "0-1,4-5")
    assert st == 200 and body == b"hello, world\n"
    _, h, _ = curl(port, "/hello.txt")
    st, _, body = curl(port, "/hello.txt", "-r", "0-4", "-H", f"If-Range: {h['etag']}")
    assert st == 206 and body == b"hello"
    st, _, body = curl(port, "/hello.txt", "-r", "0-4", "-H", 'If-Range: "old"')
    assert st == 200 and body == b"hello, world\n"
    st, _, body = curl(port, "/big.bin", "-r", "1048576-2097151")
    assert st == 206 and body == pattern(2097152)[1048576:]


def test_big_file_byte_exact(site, big_bytes):
    for port in (site["web"], site["lb"]):
        st, h, body = curl(port, "/big.bin")
        assert st == 200 and h["content-length"] == str(BIG)
        assert h["content-type"] == "application/octet-stream"
        assert hashlib.sha256(body).digest() == hashlib.sha256(big_bytes).digest()


def test_fingerprinted_and_precompressed(site):
    port = site["web"]
    st, h, _ = curl(port, "/app.3f9a1c2e.js")
    assert st == 200 and h["cache-control"] == "public, max-age=31536000, immutable"
    assert h["content-type"] == "text/javascript; charset=utf-8"

    data = site["data"]
    # curl --compressed asks for gzip (and br when built with it) and decodes.
    st, h, body = curl(port, "/data.json", "-H", "Accept-Encoding: gzip")
    assert st == 200 and h["content-encoding"] == "gzip" and h["vary"] == "Accept-Encoding"
    assert h["content-type"] == "application/json" and gzip.decompress(body) == data
    gz_tag = h["etag"]
    st, h, body = curl(port, "/data.json", "-H", "Accept-Encoding: gzip",
                       "--compressed")
    assert st == 200 and body == data
    st, h, body = curl(port, "/data.json", "-H", "Accept-Encoding: br, gzip")
    assert h["content-encoding"] == "br" and body == b"not really brotli"
    assert h["etag"] != gz_tag
    st, h, body = curl(port, "/data.json", "-H", "Accept-Encoding: br;q=0, gzip;q=0.5")
    assert h["content-encoding"] == "gzip"
    st, h, body = curl(port, "/data.json")
    assert st == 200 and body == data and "content-encoding" not in h
    assert h["vary"] == "Accept-Encoding"
    st, h, _ = curl(port, "/data.json", "-H", "Accept-Encoding: gzip",
                    "-H", f"If-None-Match: {gz_tag}")
    assert st == 304 and h["vary"] == "Accept-Encoding" and h["etag"] == gz_tag


def test_directories_methods_and_misses(site):
    port = site["web"]
    st, h, body = curl(port, "/")
    assert st == 200 and body == b"<h1>home</h1>\n"
    assert h["content-type"] == "text/html; charset=utf-8"
    st, _, body = curl(port, "/sub/")
    assert st == 200 and body == b"<h1>sub</h1>\n"
    st, _, body = curl(port, "/sub")
    assert st == 200 and body == b"<h1>sub</h1>\n"
    st, _, _ = curl(port, "/empty/")
    assert st == 404
    st, _, _ = curl(port, "/nope.txt")
    assert st == 404
    st, h, _ = curl(port, "/hello.txt", "-X", "POST", "-d", "x")
    assert st == 405 and h["allow"] == "GET, HEAD"
    st, _, body = curl(port, "/link-in")
    assert st == 200 and body == b"hello, world\n"


@pytest.mark.parametrize("path", [
    "/../etc/passwd", "/../../../../etc/passwd", "/%2e%2e/etc/passwd", "/%2E%2E/%2e%2e/etc/passwd",
    "/a/..%2f..%2fetc/passwd", "/sub/../hello.txt", "/%2fetc%2fpasswd", "/hello%00.txt",
    "/sub%5c..%5chello.txt", "/link-etc/passwd", "/link-etc/hostname", "/link-up", "/.env",
])
def test_escapes_refused(site, path):
    for port in (site["web"], site["lb"]):
        st, _, body = curl(port, path)
        assert st in (400, 404), (port, path, st)
        assert b"root:" not in body and b"outside" not in body and b"SECRET" not in body


def test_prefix_and_settings(strata, tmp_path, big_bytes):
    make_public(tmp_path, big_bytes)
    web = free_port()
    strata(f'''
strata.web {{ nodes = {{ {{ node = "w1", listen = "127.0.0.1:{web}" }} }},
             static = {{ root = "public", prefix = "/static/", max_age = "1m",
                         precompressed = false, index = false }} }}
''', [web])
    st, h, body = curl(web, "/static/hello.txt")
    assert st == 200 and body == b"hello, world\n" and h["cache-control"] == "public, max-age=60"
    st, _, _ = curl(web, "/hello.txt")
    assert st == 404
    st, _, _ = curl(web, "/static/")
    assert st == 404  # no index
    st, h, _ = curl(web, "/static/data.json", "-H", "Accept-Encoding: gzip, br")
    assert st == 200 and "content-encoding" not in h and "vary" not in h

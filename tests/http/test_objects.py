"""Objects API (§8) over real HTTP: uploads (Content-Length, chunked, curl,
Expect: 100-continue, refused bodies drained), downloads (headers, ranges,
conditional, HEAD), delete, list, streaming memory, file names, atomic replace,
and BILLING_MAX_OBJECT_BYTES."""

import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import threading
from datetime import datetime
from types import SimpleNamespace
from urllib.parse import unquote

import pytest

from tests import tools
from tests.harness import ADMIN_KEY
from tests.helpers import sha256, wait_for
from tests.http.helpers import (RawConnection, assert_error, chunked, create_customer, make_key, object_url,
                                put_object, request_head, storage_server, stored_files, temp_files)

MAX_OBJECT = 1024 * 1024  # BILLING_MAX_OBJECT_BYTES of these servers
METADATA = {"key", "size", "content_type", "etag", "created_at", "updated_at"}
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")


@pytest.fixture
def srv(tmp_path):
    running = storage_server(tmp_path, BILLING_MAX_OBJECT_BYTES=str(MAX_OBJECT))
    yield running
    running.stop()


@pytest.fixture
def tenant(srv):
    customer = create_customer(srv.admin, name="Tenant")
    key = make_key(srv, customer_id=customer["id"])
    client = srv.client(key)
    yield SimpleNamespace(id=customer["id"], key=key, client=client, auth={"Authorization": f"Bearer {key}"})
    client.close()


def set_quota(srv, customer_id, quota):
    reply = srv.admin.patch(f"/v1/customers/{customer_id}", {"storage_quota_bytes": quota})
    assert reply.status == 200, reply
    assert reply.json["storage_quota_bytes"] == quota


def list_keys(client, query=""):
    reply = client.get("/v1/objects" + query)
    assert reply.status == 200, reply
    return [o["key"] for o in reply.json["data"]]


def instant(text):
    assert RFC3339_UTC.match(text), text
    return datetime.fromisoformat(text)


# -- uploads --------------------------------------------------------------------

def test_put_creates_201_then_replaces_200_with_the_metadata(srv, tenant):
    data = b"hello, objects\n"
    first = put_object(tenant.client, "reports/2025/q1.txt", data, "text/plain; charset=utf-8")
    assert first.status == 201, first
    assert set(first.json) == METADATA
    assert first.json["key"] == "reports/2025/q1.txt"
    assert first.json["size"] == len(data)
    assert first.json["content_type"] == "text/plain; charset=utf-8"
    assert first.json["etag"] == sha256(data)
    assert instant(first.json["created_at"]) == instant(first.json["updated_at"])

    other = b"other bytes, and more of them than before"
    second = put_object(tenant.client, "reports/2025/q1.txt", other)
    assert second.status == 200, second
    assert set(second.json) == METADATA
    assert second.json["size"] == len(other)
    assert second.json["etag"] == sha256(other)
    assert second.json["content_type"] == "application/octet-stream"  # none given: the default
    assert second.json["created_at"] == first.json["created_at"]
    assert instant(second.json["updated_at"]) >= instant(first.json["updated_at"])
    assert tenant.client.get(object_url("reports/2025/q1.txt")).raw == other
    assert list_keys(tenant.client) == ["reports/2025/q1.txt"]
    assert len(stored_files(srv)) == 1  # the replaced file is gone


def test_empty_object(srv, tenant):
    reply = put_object(tenant.client, "empty", b"")
    assert reply.status == 201, reply
    assert reply.json["size"] == 0 and reply.json["etag"] == sha256(b"")
    got = tenant.client.get(object_url("empty"))
    assert got.status == 200 and got.raw == b"" and got.headers["Content-Length"] == "0"


def test_chunked_upload_with_extensions_and_trailers_over_a_raw_socket(srv, tenant):
    parts = [os.urandom(n) for n in (1, 4096, 300_000, 17, 70_000)]
    data = b"".join(parts)
    body = b""
    for i, part in enumerate(parts):  # sizes in both cases of hex, extensions with and without values
        size_line = f'{len(part):x};part={i};note="a;b"' if i % 2 else f"{len(part):X} ; ext"
        body += size_line.encode() + b"\r\n" + part + b"\r\n"
    body += b"0;last=1\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
    with RawConnection(srv.port) as conn:
        conn.send(request_head("PUT", object_url("raw/chunked.bin"),
                               {**tenant.auth, "Transfer-Encoding": "chunked", "Content-Type": "application/x-test"})
                  + body)
        reply = conn.read_response()
        assert reply.status == 201, reply
        assert reply.json["size"] == len(data) and reply.json["etag"] == sha256(data)
        assert reply.json["content_type"] == "application/x-test"
        # the same connection serves the next request: the body was read to its very end
        again = conn.request("GET", object_url("raw/chunked.bin"), tenant.auth)
        assert again.status == 200 and again.body == data
        assert again.headers["content-type"] == "application/x-test"


def test_chunked_upload_from_http_client(srv, tenant):
    parts = [os.urandom(n) for n in (100, 262_144, 262_145, 3)]
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request("PUT", object_url("client/chunked.bin"), body=iter(parts), encode_chunked=True,
                     headers={**tenant.auth, "Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        reply = response.read()
        assert response.status == 201, reply
    finally:
        conn.close()
    data = b"".join(parts)
    got = tenant.client.get(object_url("client/chunked.bin"))
    assert got.raw == data and got.headers["ETag"] == f'"{sha256(data)}"'


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_curl_upload(srv, tenant, tmp_path, source):
    data = os.urandom(700_000)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    out = tmp_path / "reply.json"
    url = f"http://127.0.0.1:{srv.port}{object_url('curl/' + source)}"
    command = [tools.need("curl", "curl"), "-sS", "-o", str(out), "-w", "%{http_code}", "-H", f"Authorization: Bearer {tenant.key}",
               "-H", "Content-Type: application/pdf", "-T", str(path) if source == "file" else "-", url]
    result = subprocess.run(command, input=data if source == "stdin" else None, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"201", (result.stdout, out.read_bytes())
    assert srv.admin.get(object_url("curl/" + source, tenant.id)).raw == data
    meta = tenant.client.get("/v1/objects?prefix=curl/").json["data"][0]
    assert meta["etag"] == sha256(data) and meta["content_type"] == "application/pdf"


# -- Expect: 100-continue ----------------------------------------------------------

def test_expect_100_continue_is_answered_before_the_body_is_sent(srv, tenant):
    data = os.urandom(200_000)
    with RawConnection(srv.port) as conn:
        conn.send(request_head("PUT", object_url("expect.bin"),
                               {**tenant.auth, "Content-Length": len(data), "Expect": "100-continue"}))
        interim = conn.read_response()  # nothing of the body is on the wire yet
        assert interim.status == 100
        conn.send(data)
        final = conn.read_response()
        assert final.status == 201, final
        assert final.json["etag"] == sha256(data)
        assert conn.request("GET", object_url("expect.bin"), tenant.auth).body == data


@pytest.mark.parametrize("case", ["over_quota", "over_limit", "unauthenticated", "viewer", "bad_key"])
def test_expect_100_continue_refused_upload_gets_the_final_status_and_the_connection_closes(srv, tenant, case):
    set_quota(srv, tenant.id, 1000)
    headers, path, length = dict(tenant.auth), object_url("refused.bin"), 5000
    expected = {"over_quota": (409, "quota_exceeded"), "over_limit": (413, "payload_too_large"),
                "unauthenticated": (401, "unauthenticated"), "viewer": (403, "forbidden"),
                "bad_key": (400, "validation_error")}[case]
    if case == "over_limit":
        set_quota(srv, tenant.id, None)
        length = MAX_OBJECT + 1
    elif case == "unauthenticated":
        del headers["Authorization"]
        length = 10
    elif case == "viewer":
        headers["Authorization"] = f"Bearer {make_key(srv, role='viewer')}"
        path = object_url("refused.bin", tenant.id)
        length = 10
    elif case == "bad_key":
        path = "/v1/objects/a/../../refused.bin"
        length = 10
    with RawConnection(srv.port) as conn:
        conn.send(request_head("PUT", path, {**headers, "Content-Length": length, "Expect": "100-continue"}))
        reply = conn.read_response()
        assert (reply.status, reply.error_code) == expected, reply  # the final status, no 100 before it
        assert reply.headers.get("connection") == "close"
        assert conn.closed_by_server()  # the body was never asked for: the connection cannot be reused
    assert list_keys(tenant.client) == []
    assert stored_files(srv) == {} and temp_files(srv) == []


@pytest.mark.parametrize("case", ["over_quota", "over_quota_chunked", "unauthenticated", "viewer", "bad_key"])
def test_refused_upload_without_expect_is_drained_and_the_connection_reused(srv, tenant, case):
    """http.client sends the whole body before it reads the answer: the server
    reads and drops the body it refused, so the client sees the answer (no
    broken pipe) and the same keep-alive connection serves the next request."""
    set_quota(srv, tenant.id, 100_000)
    data = os.urandom(900_000)  # within BILLING_MAX_OBJECT_BYTES, several reads
    headers, path, body = dict(tenant.auth), object_url("refused.bin"), data
    expected = {"over_quota": (409, "quota_exceeded"), "over_quota_chunked": (409, "quota_exceeded"),
                "unauthenticated": (401, "unauthenticated"), "viewer": (403, "forbidden"),
                "bad_key": (400, "validation_error")}[case]
    if case == "over_quota_chunked":
        body = (data[i:i + 65536] for i in range(0, len(data), 65536))
        headers["Transfer-Encoding"] = "chunked"
    elif case == "unauthenticated":
        del headers["Authorization"]
        body = data[:60_000]  # an unauthenticated body is drained up to 64 KiB only
    elif case == "viewer":
        headers["Authorization"] = f"Bearer {make_key(srv, role='viewer')}"
        path = object_url("refused.bin", tenant.id)
    elif case == "bad_key":
        path = object_url("a\x01b")
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request("PUT", path, body=body, headers=headers, encode_chunked="Transfer-Encoding" in headers)
        response = conn.getresponse()
        answer = response.read()
        assert response.status == expected[0], answer
        assert b'"code":"%s"' % expected[1].encode() in answer
        assert response.getheader("Connection") != "close"
        sock = conn.sock
        assert sock is not None
        conn.request("GET", f"/v1/objects?customer_id={tenant.id}", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        response = conn.getresponse()
        listing = response.read()
        assert response.status == 200, listing
        assert conn.sock is sock  # the same connection
        assert b'"data":[]' in listing
    finally:
        conn.close()
    assert stored_files(srv) == {} and temp_files(srv) == []


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(srv, tenant):
    """The token is checked first; a body over 64 KiB is not worth reading: 401 and close."""
    with RawConnection(srv.port, timeout=5) as conn:
        conn.send(request_head("PUT", object_url("anon.bin"), {"Content-Length": 512 * 1024}))
        reply = conn.read_response()
        assert reply.status == 401 and reply.error_code == "unauthenticated", reply
        assert reply.headers.get("connection") == "close"
        assert conn.closed_by_server()
    assert stored_files(srv) == {} and temp_files(srv) == []


MALFORMED_FRAMING = {
    "length_and_chunked": (b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 400),
    "length_twice": (b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    "negative_length": (b"Content-Length: -5\r\n\r\nhello", 400),
    "not_chunked": (b"Transfer-Encoding: gzip\r\n\r\nhello", 411),
    "bad_chunk_size": (b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400),
    "hex_prefix_chunk_size": (b"Transfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", 400),
    "chunk_without_crlf": (b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400),
    "chunked_ends_early": (b"Transfer-Encoding: chunked\r\n\r\n10\r\nhello", 400),
}


@pytest.mark.parametrize("framing", list(MALFORMED_FRAMING), ids=list(MALFORMED_FRAMING))
def test_malformed_body_framing_is_refused_and_nothing_stored(srv, tenant, framing):
    rest, status = MALFORMED_FRAMING[framing]
    with RawConnection(srv.port, timeout=5) as conn:
        conn.send(request_head("PUT", object_url("framed.bin"), tenant.auth)[:-2] + rest)
        if framing == "chunked_ends_early":
            conn.sock.shutdown(socket.SHUT_WR)  # the client goes away mid-chunk
        reply = conn.read_response()
        assert reply.status == status, reply
        assert reply.headers.get("connection") == "close"  # the framing is lost: the connection with it
    assert list_keys(tenant.client) == []
    assert stored_files(srv) == {}
    assert temp_files(srv) == []


# -- downloads -----------------------------------------------------------------------

def test_get_streams_the_bytes_with_the_download_headers(srv, tenant):
    data = os.urandom(300_000)
    assert put_object(tenant.client, "exports/data.csv", data, "text/csv").status == 201
    got = tenant.client.get(object_url("exports/data.csv"))
    assert got.status == 200
    assert got.raw == data
    assert got.headers["Content-Type"] == "text/csv"
    assert got.headers["ETag"] == f'"{sha256(data)}"'
    assert got.headers["Content-Length"] == str(len(data))
    assert got.headers["Content-Disposition"] == 'attachment; filename="data.csv"'
    assert got.headers.get_all("Content-Security-Policy") == ["sandbox"]
    assert got.headers["X-Content-Type-Options"] == "nosniff"
    assert got.headers["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize("key, fallback, utf8_name", [
    ("docs/résumé.pdf", "r_sum_.pdf", "résumé.pdf"),
    ('notes/say "hi".txt', "say _hi_.txt", 'say "hi".txt'),
    ("年度/報告書.pdf", "___.pdf", "報告書.pdf"),
])
def test_content_disposition_names_non_ascii_files_with_rfc6266_filename_star(srv, tenant, key, fallback,
                                                                                utf8_name):
    reply = put_object(tenant.client, key, b"%PDF-1.4 ...")
    assert reply.status == 201, reply
    assert reply.json["key"] == key
    assert list_keys(tenant.client) == [key]
    got = tenant.client.get(object_url(key))
    assert got.status == 200 and got.raw == b"%PDF-1.4 ..."
    disposition = got.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert f'filename="{fallback}"' in disposition
    star = re.search(r"filename\*=UTF-8''([^;\s]+)", disposition)
    assert star, disposition
    assert unquote(star.group(1), encoding="utf-8", errors="strict") == utf8_name
    assert disposition.isascii()


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_uploaded_html_is_a_sandboxed_attachment_without_the_dashboard_policy(srv, tenant, method):
    html = b"<!doctype html><title>x</title><script>fetch('/v1/customers').then(r => r.text())</script>"
    assert put_object(tenant.client, "site/index.html", html, "text/html; charset=utf-8").status == 201
    got = tenant.client.request(method, object_url("site/index.html"))
    assert got.status == 200
    assert got.raw == (html if method == "GET" else b"")
    assert got.headers["Content-Type"] == "text/html; charset=utf-8"
    assert got.headers.get_all("Content-Security-Policy") == ["sandbox"]  # not the dashboard's HTML policy
    assert got.headers["Content-Disposition"] == 'attachment; filename="index.html"'
    assert got.headers["X-Content-Type-Options"] == "nosniff"


RANGE_DATA = bytes(range(256)) * 4  # 1,024 bytes


@pytest.mark.parametrize("header, start, end", [
    ("bytes=10-19", 10, 19),
    ("bytes=0-0", 0, 0),
    ("bytes=1000-", 1000, 1023),
    ("bytes=-24", 1000, 1023),
    ("bytes=1020-5000", 1020, 1023),  # the end is clipped to the object
    ("bytes=-5000", 0, 1023),  # more than the whole object: all of it
])
def test_range_requests_answer_206_with_content_range(srv, tenant, header, start, end):
    assert put_object(tenant.client, "range.bin", RANGE_DATA).status == 201
    got = tenant.client.get(object_url("range.bin"), headers={"Range": header})
    assert got.status == 206, got
    assert got.raw == RANGE_DATA[start:end + 1]
    assert got.headers["Content-Range"] == f"bytes {start}-{end}/1024"
    assert got.headers["Content-Length"] == str(end - start + 1)
    assert got.headers["ETag"] == f'"{sha256(RANGE_DATA)}"'
    assert got.headers.get_all("Content-Security-Policy") == ["sandbox"]


@pytest.mark.parametrize("header", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range_answers_416_with_the_size(srv, tenant, header):
    assert put_object(tenant.client, "range.bin", RANGE_DATA).status == 201
    got = tenant.client.get(object_url("range.bin"), headers={"Range": header})
    assert_error(got, 416, "range_not_satisfiable")
    assert got.headers["Content-Range"] == "bytes */1024"


def test_if_none_match_answers_304(srv, tenant):
    data = b"cache me"
    etag = put_object(tenant.client, "cached.txt", data, "text/plain").json["etag"]
    for header in (f'"{etag}"', f'"nope", "{etag}"', f'W/"{etag}"', "*"):
        got = tenant.client.get(object_url("cached.txt"), headers={"If-None-Match": header})
        assert got.status == 304, (header, got)
        assert got.raw == b""
        assert got.headers["ETag"] == f'"{etag}"'
    got = tenant.client.get(object_url("cached.txt"), headers={"If-None-Match": f'"{sha256(b"old")}"'})
    assert got.status == 200 and got.raw == data


def test_head_sends_the_headers_only_with_the_full_length(srv, tenant):
    data = os.urandom(70_000)
    assert put_object(tenant.client, "head.bin", data, "image/png").status == 201
    with RawConnection(srv.port) as conn:
        head = conn.request("HEAD", object_url("head.bin"), tenant.auth)
        assert head.status == 200
        assert head.headers["content-length"] == str(len(data))
        assert head.headers["content-type"] == "image/png"
        assert head.headers["etag"] == f'"{sha256(data)}"'
        assert head.headers["content-disposition"] == 'attachment; filename="head.bin"'
        # no byte of the body followed the head: the next response starts right away
        got = conn.request("GET", object_url("head.bin"), tenant.auth)
        assert got.status == 200 and got.body == data


def test_delete_answers_the_metadata_then_404(srv, tenant):
    created = put_object(tenant.client, "gone/soon.txt", b"bye", "text/plain").json
    put_object(tenant.client, "stays.txt", b"here")
    deleted = tenant.client.delete(object_url("gone/soon.txt"))
    assert deleted.status == 200, deleted
    assert deleted.json == created
    for method in ("GET", "HEAD", "DELETE"):
        reply = tenant.client.request(method, object_url("gone/soon.txt"))
        assert reply.status == 404, (method, reply)
    assert_error(tenant.client.get(object_url("gone/soon.txt")), 404, "not_found")
    assert list_keys(tenant.client) == ["stays.txt"]
    assert len(stored_files(srv)) == 1


def test_list_by_prefix_and_pages_in_key_order_with_totals(srv, tenant):
    keys = {"b/2": 20, "a/3": 3, "a/1": 100, "c": 7, "a/2": 1, "b/1": 50, "ab": 9, "a": 4}
    for key, size in keys.items():
        assert put_object(tenant.client, key, b"x" * size).status == 201
    total = sum(keys.values())

    reply = tenant.client.get("/v1/objects")
    assert reply.status == 200
    assert [o["key"] for o in reply.json["data"]] == sorted(keys)
    assert reply.json["total_bytes"] == total
    assert reply.json["quota_bytes"] is None
    assert reply.json["next_cursor"] is None
    item = reply.json["data"][0]
    assert set(item) == METADATA and item["size"] == keys[item["key"]]

    assert list_keys(tenant.client, "?prefix=a/") == ["a/1", "a/2", "a/3"]
    assert list_keys(tenant.client, "?prefix=a") == ["a", "a/1", "a/2", "a/3", "ab"]
    assert list_keys(tenant.client, "?prefix=zz") == []

    set_quota(srv, tenant.id, 10_000)
    for query, expected in (("?limit=3", sorted(keys)), ("?prefix=a&limit=2", ["a", "a/1", "a/2", "a/3", "ab"])):
        seen, cursor, pages = [], None, 0
        while True:
            page = tenant.client.get("/v1/objects" + query + (f"&cursor={cursor}" if cursor else ""))
            assert page.status == 200, page
            assert page.json["total_bytes"] == total  # the tenant's whole storage, on every page
            assert page.json["quota_bytes"] == 10_000
            seen += [o["key"] for o in page.json["data"]]
            pages += 1
            cursor = page.json["next_cursor"]
            if cursor is None:
                break
        assert seen == expected
        assert pages == -(-len(expected) // int(query.rsplit("=", 1)[1]))
    assert_error(tenant.client.get("/v1/objects?limit=1001"), 400, "validation_error")
    for bad in ("?prefix=%FF", "?prefix=a%C3", "?cursor=%80"):  # not UTF-8: refused, not read as U+FFFD
        reply = tenant.client.get("/v1/objects" + bad)
        assert_error(reply, 400, "bad_request")
        assert "UTF-8" in reply.json["error"]["message"]


# -- how uploads are stored ------------------------------------------------------------

def _memory_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def test_a_100_mib_upload_streams_without_growing_the_server(tmp_path):
    """The real server process: its RSS while a 100 MiB object goes up and
    comes back down stays within 30 MB of idle; the test streams it too."""
    from tests.test_server_process import start

    env = {"BILLING_DB": str(tmp_path / "billing.db"), "BILLING_ADMIN_KEY": ADMIN_KEY, "BILLING_RATE_LIMIT": "1000000"}
    proc, port, _ = start([], env)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    admin = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}

    def call(method, path, body=None, headers=admin, **kw):
        conn.request(method, path, body=body, headers=headers, **kw)
        response = conn.getresponse()
        return response

    try:
        response = call("POST", "/v1/customers", b'{"name": "Big", "email": "big@example.com"}')
        assert response.status == 201
        customer_id = json.loads(response.read())["id"]
        url = object_url("big/object.bin", customer_id)
        block = os.urandom(1024 * 1024)
        # warm up every code path once (upload, download), then measure
        response = call("PUT", url, block, {"Authorization": admin["Authorization"]})
        assert response.status == 201, response.read()
        response.read()
        response = call("GET", url)
        assert response.read() == block
        idle = _memory_kib(proc.pid, "VmRSS")
        try:
            with open(f"/proc/{proc.pid}/clear_refs", "w") as refs:
                refs.write("5")  # resets VmHWM to the current RSS
            hwm_reset = True
        except OSError:
            hwm_reset = False

        peak = [idle]
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], _memory_kib(proc.pid, "VmRSS"))
                stop.wait(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        digest = hashlib.sha256()
        blocks = 100

        def body():
            for i in range(blocks):
                piece = block[i:] + block[:i]  # a different MiB each time, never the whole object in memory
                digest.update(piece)
                yield piece

        try:
            response = call("PUT", url, body(), {"Authorization": admin["Authorization"],
                                                 "Content-Length": str(blocks * len(block))})
            reply = response.read()
            assert response.status == 200, reply  # replaced the warm-up object
            assert b'"size":%d' % (blocks * len(block)) in reply
            assert b'"etag":"%s"' % digest.hexdigest().encode() in reply
            response = call("GET", url)
            assert response.status == 200
            assert response.getheader("Content-Length") == str(blocks * len(block))
            back = hashlib.sha256()
            while piece := response.read(1024 * 1024):
                back.update(piece)
            assert back.hexdigest() == digest.hexdigest()
        finally:
            stop.set()
            sampler.join()
        if hwm_reset:
            peak[0] = max(peak[0], _memory_kib(proc.pid, "VmHWM"))
        assert (peak[0] - idle) * 1024 <= 30_000_000, f"RSS grew from {idle} KiB to {peak[0]} KiB"
    finally:
        conn.close()
        proc.kill()
        proc.wait(timeout=10)


def test_stored_file_names_never_derive_from_keys(srv, tenant):
    keys = ["passwords-backup.txt", "docs/résumé.pdf", "deep/layer-two/still-deeper/named-file.bin", "plain"]
    for key in keys:
        assert put_object(tenant.client, key, key.encode() * 10).status == 201
    root = srv.app.config.objects_dir
    files = stored_files(srv)
    assert len(files) == len(keys)
    for relative in files:
        folder, name = relative.split(os.sep)
        assert re.fullmatch(r"[0-9a-f]{32}", name), relative
        assert folder == name[:2]
    segments = {segment for key in keys for segment in key.split("/")} | {
        segment.rsplit(".", 1)[0] for key in keys for segment in key.split("/")}
    for folder, dirs, names in os.walk(srv.app.config.data_dir):
        for name in dirs + names:
            assert not any(segment in name for segment in segments), os.path.join(folder, name)
    assert sorted(os.listdir(root)) == sorted({"tmp"} | {r.split(os.sep)[0] for r in files})


def test_replacing_a_key_is_atomic_for_readers(srv, tenant):
    versions = [os.urandom(300_000), os.urandom(700_000)]  # A and B: different sizes, several chunks each
    etags = {sha256(v): v for v in versions}
    assert put_object(tenant.client, "hot.bin", versions[0]).status == 201
    readers, replacements = 4, 24
    reads, failures = [0], []
    done = threading.Event()
    lock = threading.Lock()

    def read_loop():
        client = srv.client(tenant.key)
        try:
            while not done.is_set():
                got = client.get(object_url("hot.bin"))
                tag = got.headers.get("ETag", "").strip('"')
                if got.status != 200 or got.raw not in versions or sha256(got.raw) != tag or tag not in etags:
                    failures.append((got.status, len(got.raw), tag))
                with lock:
                    reads[0] += 1
        except Exception as exc:  # noqa: BLE001 — reported below
            failures.append(repr(exc))
        finally:
            client.close()

    threads = [threading.Thread(target=read_loop) for _ in range(readers)]
    for thread in threads:
        thread.start()
    writer = srv.client(tenant.key)
    try:
        for i in range(1, replacements + 1):
            reply = put_object(writer, "hot.bin", versions[i % 2])
            assert reply.status == 200, reply
            with lock:
                target = reads[0] + readers + 1  # at least one read that started after this replace
            wait_for(lambda: reads[0] >= target or failures, message="readers")
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=30)
        writer.close()
    assert failures == []
    assert reads[0] >= replacements
    assert tenant.client.get(object_url("hot.bin")).raw == versions[0]
    assert len(stored_files(srv)) == 1 and temp_files(srv) == []


# -- BILLING_MAX_OBJECT_BYTES ----------------------------------------------------------

def test_over_the_limit_by_content_length_is_413_before_reading(srv, tenant):
    with RawConnection(srv.port, timeout=5) as conn:
        # only the head: the answer must come without the server waiting for the body
        conn.send(request_head("PUT", object_url("huge.bin"), {**tenant.auth, "Content-Length": MAX_OBJECT + 1}))
        reply = conn.read_response()
        assert reply.status == 413, reply
        assert reply.error_code == "payload_too_large"
        assert reply.headers.get("connection") == "close"
        assert conn.closed_by_server()
    assert list_keys(tenant.client) == []
    assert stored_files(srv) == {} and temp_files(srv) == []


def test_exactly_the_limit_is_accepted(srv, tenant):
    data = os.urandom(MAX_OBJECT)
    reply = put_object(tenant.client, "max.bin", data)
    assert reply.status == 201, reply
    assert reply.json["size"] == MAX_OBJECT
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        pieces = (data[i:i + 100_000] for i in range(0, MAX_OBJECT, 100_000))
        conn.request("PUT", object_url("max-chunked.bin"), body=pieces, encode_chunked=True,
                     headers={**tenant.auth, "Transfer-Encoding": "chunked"})
        response = conn.getresponse()
        assert response.status == 201, response.read()
    finally:
        conn.close()


def _send_in_background(conn, data):
    def send():
        try:
            conn.send(data)
        except OSError:
            pass  # the server stopped reading and closed: expected
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_chunked_over_the_limit_is_413_and_nothing_is_stored(srv, tenant):
    original = b"the original stays"
    assert put_object(tenant.client, "keep.bin", original).status == 201
    files_before = stored_files(srv)
    parts = [os.urandom(65_536) for _ in range(MAX_OBJECT // 65_536)] + [b"!"]  # the limit plus one byte
    for key in ("new.bin", "keep.bin"):
        with RawConnection(srv.port) as conn:
            sender = _send_in_background(conn, request_head("PUT", object_url(key), {
                **tenant.auth, "Transfer-Encoding": "chunked"}) + chunked(parts))
            reply = conn.read_response()
            assert reply.status == 413, reply
            assert reply.error_code == "payload_too_large"
            assert reply.headers.get("connection") == "close"
            assert conn.closed_by_server()
            sender.join(timeout=10)
    assert list_keys(tenant.client) == ["keep.bin"]
    assert tenant.client.get(object_url("keep.bin")).raw == original
    assert stored_files(srv) == files_before and temp_files(srv) == []

"""§2 HTTP conventions: error shapes, 404/405/411/413/415, bodies, request ids,
security headers, keep-alive, Idempotency-Key, 500s — through real HTTP
(raw sockets where http.client would not send the request we need)."""

import base64
import email.utils
import http.client
import json
import socket
import time
from datetime import datetime, timezone

import pytest

from billing import clock
from billing.web import wire
from tests.harness import ADMIN_KEY, ADMIN_PASSWORD
from tests.http.helpers import (assert_error, assert_validation, create_customer, create_meter,
                                decode, event_count, post_raw, raw_exchange, table_count)

SECURITY = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


def auth_header():
    return f"Authorization: Bearer {ADMIN_KEY}\r\n"


def check_security_headers(headers):
    lower = {k.lower(): v for k, v in headers.items()}
    for name, value in SECURITY.items():
        assert lower.get(name.lower()) == value, (name, headers)


def exchange(port, raw, wait_for=2):
    """Send raw bytes on a new connection; what came back once `wait_for`
    responses have begun (or the server closed, or 5 s passed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(raw)
        chunks = []
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
                if b"".join(chunks).count(b"HTTP/1.1 ") >= wait_for:
                    break
        except socket.timeout:
            pass
    return b"".join(chunks)


# -- 404 / 405 ---------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/nope", "/nope", "/v1/customers/1/nothing", "/v1/customers/abc"])
def test_404_json_shape(server, admin, path):
    reply = admin.get(path)
    assert reply.status == 404
    assert reply.headers["Content-Type"].startswith("application/json")
    assert "charset=utf-8" in reply.headers["Content-Type"].lower()
    assert set(reply.json) == {"error"}
    error = reply.json["error"]
    assert error["code"] == "not_found"
    assert isinstance(error["message"], str) and error["message"]
    assert error["details"] == []


@pytest.mark.parametrize("method,path,allowed", [
    ("DELETE", "/v1/meters", {"GET", "POST"}),
    ("PUT", "/v1/customers/1", {"GET", "PATCH", "DELETE"}),
    ("POST", "/health", {"GET"}),
    ("GET", "/v1/events/batch", {"POST"}),
    ("PATCH", "/v1/auth/login", {"POST"}),
])
def test_405_with_allow(server, admin, method, path, allowed):
    reply = admin.request(method, path, {} if method in ("PUT", "PATCH", "POST") else None)
    assert_error(reply, 405, "method_not_allowed")
    allow = {m.strip() for m in reply.headers["Allow"].split(",")}
    assert allowed <= allow and allow <= allowed | {"HEAD"}, allow


# -- body rules ----------------------------------------------------------------------

def test_413_decided_from_content_length_before_reading(server):
    # only headers are sent; a server that tried to read 20 MiB would hang here
    request = ("POST /v1/customers HTTP/1.1\r\nHost: x\r\n" + auth_header() +
               "Content-Type: application/json\r\nContent-Length: 20971520\r\n\r\n").encode()
    started = time.monotonic()
    status, headers, body = raw_exchange(server.port, request, timeout=5)
    assert status == 413
    assert time.monotonic() - started < 4
    assert headers.get("connection", "").lower() == "close"  # the unread body cannot be skipped
    assert decode(body)["error"]["code"] == "payload_too_large"
    assert headers.get("x-request-id")
    assert table_count(server, "customers") == 0
    assert server.admin.get("/health").status == 200


@pytest.mark.parametrize("path, token, expected", [
    ("/v1/events/batch", None, (401, "unauthenticated")),  # the token is checked before the length
    ("/v1/events/batch", ADMIN_KEY, (413, "payload_too_large")),
    ("/v1/auth/login", None, (413, "payload_too_large")),
])
def test_just_over_10_mib_is_refused_from_the_headers(server, path, token, expected):
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
               f"Content-Length: {10 * 1024 * 1024 + 1}\r\n\r\n").encode()
    status, headers, body = raw_exchange(server.port, request, timeout=5)
    assert (status, decode(body)["error"]["code"]) == expected
    assert headers.get("connection", "").lower() == "close"  # the body was never read


def test_body_of_exactly_10_mib_is_not_413(server, admin):
    body = {"name": "Big", "email": "big@example.com", "metadata": {}}
    text = json.dumps(body)
    padded = text + " " * (10 * 1024 * 1024 - len(text))  # JSON allows trailing whitespace
    reply = post_raw(admin, "/v1/customers", padded)
    assert reply.status == 201, reply


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx"])
def test_415_for_non_json_body(server, admin, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    data = b'{"name": "A", "email": "a@example.com"}'
    reply = admin.request("POST", "/v1/customers", raw=data, headers=headers)  # http.client adds no type
    assert_error(reply, 415, "unsupported_media_type")
    assert table_count(server, "customers") == 0


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8", "application/json; charset=latin-1"])
def test_json_with_any_charset_accepted(server, admin, content_type):
    reply = admin.request("POST", "/v1/customers", raw=b'{"name": "A", "email": "a@example.com"}',
                          headers={"Content-Type": content_type})
    assert reply.status == 201, reply


def test_411_for_chunked_body(server):
    chunk = b'{"name": "A", "email": "a@example.com"}'
    request = (b"POST /v1/customers HTTP/1.1\r\nHost: x\r\n" + auth_header().encode() +
               b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n" +
               f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n")
    status, headers, body = raw_exchange(server.port, request, timeout=5)
    assert status == 411
    assert decode(body)["error"]["code"]
    assert headers.get("x-request-id")
    assert table_count(server, "customers") == 0


@pytest.mark.parametrize("text", ['{"name": "A", ', "{'name': 'A'}", "not json", '{"a": 1} trailing',
                                  '{"name": "A", "email": "a@example.com",}', "{,}"])
def test_400_malformed_json(server, admin, text):
    reply = post_raw(admin, "/v1/customers", text)
    assert reply.status == 400, reply
    assert reply.error_code and reply.json["error"]["message"]
    assert table_count(server, "customers") == 0


@pytest.mark.parametrize("length", ["abc", "-1", "1.5", "0x10"])
def test_400_bad_content_length(server, length):
    request = (f"POST /v1/customers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n").encode()
    status, _headers, body = raw_exchange(server.port, request, timeout=5)
    assert status == 400, body
    assert table_count(server, "customers") == 0


def test_duplicate_content_length_and_transfer_encoding_are_refused(server):
    answer = exchange(server.port, b"POST /v1/customers HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                   b"Content-Length: 3\r\nContent-Type: application/json\r\n\r\n{}", 1)
    assert answer.startswith(b"HTTP/1.1 400")
    answer = exchange(server.port, b"POST /v1/customers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                   b"Transfer-Encoding: identity\r\n\r\n", 1)
    assert answer.startswith(b"HTTP/1.1 400") or answer.startswith(b"HTTP/1.1 411")
    answer = exchange(server.port, b"POST /v1/customers HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}", 1)
    assert answer.startswith(b"HTTP/1.1 400")


def test_400_invalid_utf8(server, admin):
    reply = post_raw(admin, "/v1/customers", b'{"name": "\xff\xfe", "email": "a@example.com"}')
    assert reply.status == 400, reply
    assert table_count(server, "customers") == 0


@pytest.mark.parametrize("text", ["[]", '"string"', "42", "null", "true"])
def test_400_body_not_an_object(server, admin, text):
    reply = post_raw(admin, "/v1/customers", text)
    assert reply.status == 400 and reply.error_code == "validation_error", reply


def test_deeply_nested_json_is_400_not_500(server, admin):
    reply = post_raw(admin, "/v1/customers", "[" * 200_000 + "]" * 200_000)
    assert reply.status == 400, reply
    reply = post_raw(admin, "/v1/customers", '{"metadata": ' + '{"a": ' * 50_000 + "1" + "}" * 50_001)
    assert reply.status == 400, reply
    assert admin.get("/health").status == 200


def test_number_with_huge_exponent_is_400_not_500(server, admin):
    create_meter(admin)
    cid = create_customer(admin)["id"]
    for number in ("1e999999999999999999", "1e-999999999999999999"):
        reply = post_raw(admin, "/v1/events",
                         f'{{"customer_id": {cid}, "meter": "api_calls", "quantity": {number}}}')
        assert reply.status == 400, (number, reply)
    assert event_count(server) == 0


@pytest.mark.parametrize("path,template", [
    ("/v1/customers", '{"name": "\\ud800", "email": "a@example.com"}'),
    ("/v1/customers", '{"name": "A", "email": "a@example.com", "metadata": {"k": "\\udfff"}}'),
    ("/v1/events", '{"customer_id": CID, "meter": "api_calls", "properties": {"k": "\\ud800"}}'),
    ("/v1/events", '{"id": "\\ud800", "customer_id": CID, "meter": "api_calls"}'),
])
def test_lone_surrogate_escape_is_400_not_500(server, admin, path, template):
    create_meter(admin)
    cid = create_customer(admin)["id"]
    before = table_count(server, "customers")
    reply = post_raw(admin, path, template.replace("CID", str(cid)))
    assert reply.status == 400, reply
    assert event_count(server) == 0 and table_count(server, "customers") == before


def test_raw_lone_surrogate_and_utf16_bodies_are_400(admin):
    body = b'{"name": "\xed\xa0\x80", "email": "s@example.com"}'
    assert admin.request("POST", "/v1/customers", raw=body, headers={"Content-Type": "application/json"}).status == 400
    body16 = '{"name": "A", "email": "u@example.com"}'.encode("utf-16")
    assert admin.request("POST", "/v1/customers", raw=body16, headers={"Content-Type": "application/json"}).status == 400
    assert admin.get("/v1/customers").json["data"] == []


@pytest.mark.parametrize("query", ["since_id=99999999999999999999999", "limit=99999999999999999999",
                                   "entity_id=%00", "since_id=-1"])
def test_audit_log_hostile_query_is_not_500(server, admin, query):
    reply = admin.get(f"/v1/audit-log?{query}")
    assert reply.status in (200, 400), reply


def _raw_post(server, path, token, length_header):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            f"{length_header}Connection: close\r\n\r\n").encode()


@pytest.mark.parametrize("length_header", ["", "Content-Length: 0\r\n"])
def test_empty_post_body_is_empty_object(server, admin, length_header):
    token = admin.post("/v1/auth/login", {"email": "admin@localhost", "password": ADMIN_PASSWORD}).json["token"]
    # logout takes no fields: an empty body must work
    status, _h, body = raw_exchange(server.port, _raw_post(server, "/v1/auth/logout", token, length_header))
    assert status == 200, body
    assert server.client(token).get("/v1/auth/me").status == 401
    # and an empty body is validated as {}: the required fields are named, not a JSON or media-type error
    status, _h, body = raw_exchange(server.port, _raw_post(server, "/v1/customers", ADMIN_KEY, length_header))
    assert status == 400, body
    error = decode(body)["error"]
    assert error["code"] == "validation_error"
    assert {d["field"] for d in error["details"]} >= {"name", "email"}


def test_empty_post_body_via_http_client(server, admin):
    reply = admin.request("POST", "/v1/events/batch")  # http.client sends Content-Length: 0
    assert_validation(reply, "events")


# -- request id and security headers ----------------------------------------------------

def test_x_request_id_on_every_response(server, admin):
    create_meter(admin)
    viewer_key = admin.post("/v1/api-keys", {"name": "v", "role": "viewer"}).json["key"]
    replies = [
        admin.get("/health"), admin.get("/"), admin.get("/v1/customers"),
        admin.post("/v1/customers", {"name": "A", "email": "a@example.com"}),
        admin.post("/v1/customers", {}), server.client().get("/v1/customers"),
        server.client(viewer_key).post("/v1/meters", {}), admin.get("/v1/nope"),
        admin.delete("/v1/meters"), admin.request("POST", "/v1/customers", raw=b"x",
                                                  headers={"Content-Type": "text/plain"}),
        post_raw(admin, "/v1/customers", "{bad"), admin.get("/static/../../server.py"),
    ]
    seen = set()
    for reply in replies:
        rid = reply.headers.get("X-Request-Id")
        assert rid, reply
        seen.add(rid)
    assert len(seen) == len(replies)  # one per request
    for request in (("POST /v1/customers HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n"),
                    ("POST /v1/customers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")):
        _status, headers, _body = raw_exchange(server.port, request.encode())
        assert headers.get("x-request-id")


def test_client_request_id_is_echoed_and_sanitised(server, admin):
    assert admin.get("/health", headers={"X-Request-Id": "abc-123.x_y"}).headers["X-Request-Id"] == "abc-123.x_y"
    hostile = admin.get("/health", headers={"X-Request-Id": "evil<script>"}).headers["X-Request-Id"]
    assert hostile and "<" not in hostile


def test_the_date_header_is_the_wall_clock_formatted_once_a_second(server, admin, monkeypatch):
    """Date is an IMF-fixdate of the wall clock (not the billing clock, which
    tests pin), formatted once a second and kept for the answers within it."""
    reply = admin.get("/health")
    sent = email.utils.parsedate_to_datetime(reply.headers["Date"])
    assert abs((sent - datetime.now(timezone.utc)).total_seconds()) < 3
    now = [1_700_000_000.25]
    monkeypatch.setattr(wire, "wall_clock", lambda: now[0])
    assert wire.http_date() == "Tue, 14 Nov 2023 22:13:20 GMT" == email.utils.formatdate(1_700_000_000, usegmt=True)
    now[0] = 1_700_000_000.99
    assert wire.http_date() == "Tue, 14 Nov 2023 22:13:20 GMT"
    now[0] = 1_700_000_001.0
    assert wire.http_date() == "Tue, 14 Nov 2023 22:13:21 GMT"
    assert admin.get("/health").headers["Date"] == "Tue, 14 Nov 2023 22:13:21 GMT"


def test_security_headers_on_json(server, admin):
    for reply in (admin.get("/health"), admin.get("/v1/customers"), admin.get("/v1/nope"),
                  server.client().get("/v1/customers"), post_raw(admin, "/v1/customers", "{")):
        check_security_headers(reply.headers)
        assert reply.headers["Content-Type"] == "application/json; charset=utf-8"


def test_security_headers_and_csp_on_html(server, admin):
    reply = server.client().get("/")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/html")
    check_security_headers(reply.headers)
    csp = reply.headers.get("Content-Security-Policy")
    assert csp, reply.headers
    directives = {d.strip().split()[0]: d.strip().split()[1:] for d in csp.split(";") if d.strip()}
    assert directives["default-src"] == ["'self'"]
    for d, values in directives.items():
        assert "'unsafe-inline'" not in values and "'unsafe-eval'" not in values and "*" not in values, (d, values)


def test_static_path_traversal_is_404(server):
    for path in ("/static/../billing/app.py", "/static/../../etc/passwd", "/static/%2e%2e/server.py",
                 "/static/..%2fserver.py", "/static/nope.js"):
        status, headers, body = raw_exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n"
                                             "Connection: close\r\n\r\n".encode())
        assert status == 404, (path, body[:200])
        assert b"import" not in body and b"root:" not in body


# -- keep-alive ----------------------------------------------------------------------------

def test_keep_alive_over_one_connection(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
    try:
        conn.request("GET", "/health")
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        assert sock is not None
        requests = [("GET", "/v1/customers", None, 200),
                    ("POST", "/v1/customers", json.dumps({"name": "A", "email": "a@example.com"}), 201),
                    ("POST", "/v1/customers", json.dumps({"name": ""}), 400),  # an error keeps the connection
                    ("GET", "/v1/nope", None, 404),
                    ("DELETE", "/v1/meters", None, 405),
                    ("GET", "/v1/customers/1", None, 200),
                    ("POST", "/v1/meters", json.dumps({"key": "m", "name": "M", "aggregation": "sum"}), 201)]
        for method, path, body, expected in requests:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            assert response.status == expected, (method, path, response.status)
            assert (response.getheader("Connection") or "").lower() != "close"
            assert conn.sock is sock, "the server closed a keep-alive connection"
        # a rejected request with an unread body is allowed to close, but must say so
        conn.request("POST", "/v1/customers", body=b"x" * 10, headers={**headers, "Content-Type": "text/plain"})
        response = conn.getresponse()
        response.read()
        assert response.status == 415
    finally:
        conn.close()


def test_401_with_body_keeps_connection_usable(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", "/v1/customers", body=json.dumps({"name": "A", "email": "a@example.com"}),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        assert response.status == 401
        conn.request("GET", "/health")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["status"] == "ok"
    finally:
        conn.close()


def test_a_get_body_is_never_read_as_a_second_request(server):
    hidden = f"GET /v1/auth/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n".encode()
    raw = (b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(hidden)).encode() + b"\r\n\r\n"
           + hidden + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = exchange(server.port, raw, wait_for=3)
    assert answer.count(b"HTTP/1.1 200") == 2 and b"api_key" not in answer


# -- Idempotency-Key -----------------------------------------------------------------------

def test_idempotency_key_replays_first_response(server, admin):
    body = {"name": "Once", "email": "once@example.com"}
    first = admin.post("/v1/customers", body, headers={"Idempotency-Key": "create-once"})
    assert first.status == 201
    second = admin.post("/v1/customers", body, headers={"Idempotency-Key": "create-once"})
    assert second.status == 201, second
    assert second.json == first.json
    assert table_count(server, "customers") == 1
    actions = [e["action"] for e in admin.get("/v1/audit-log?entity=customer").json["data"]]
    assert actions == ["customer.create"]


def test_idempotency_key_for_events_without_id(server, admin):
    cid = create_customer(admin)["id"]
    create_meter(admin)
    body = {"customer_id": cid, "meter": "api_calls", "quantity": 4}
    first = admin.post("/v1/events", body, headers={"Idempotency-Key": "evt-1"})
    again = admin.post("/v1/events", body, headers={"Idempotency-Key": "evt-1"})
    assert first.status == again.status == 201
    assert again.json == first.json
    batch = {"events": [body, body]}
    b1 = admin.post("/v1/events/batch", batch, headers={"Idempotency-Key": "batch-1"})
    b2 = admin.post("/v1/events/batch", batch, headers={"Idempotency-Key": "batch-1"})
    assert b1.json == b2.json == {"accepted": 2, "duplicates": 0}
    assert event_count(server) == 3


def test_idempotency_key_with_different_body_is_409(server, admin):
    assert admin.post("/v1/customers", {"name": "A", "email": "a@example.com"},
                      headers={"Idempotency-Key": "k1"}).status == 201
    reply = admin.post("/v1/customers", {"name": "B", "email": "b@example.com"}, headers={"Idempotency-Key": "k1"})
    assert_error(reply, 409, "conflict")
    # same body on another path is a different request too
    reply = admin.post("/v1/meters", {"name": "A", "email": "a@example.com"}, headers={"Idempotency-Key": "k1"})
    assert reply.status == 409, reply
    assert table_count(server, "customers") == 1 and table_count(server, "meters") == 4  # the storage and self-metering meters


def test_idempotency_keys_are_per_caller(server, admin):
    other = admin.post("/v1/api-keys", {"name": "other", "role": "admin"}).json["key"]
    a = admin.post("/v1/customers", {"name": "A", "email": "a@example.com"}, headers={"Idempotency-Key": "same"})
    b = server.client(other).post("/v1/customers", {"name": "B", "email": "b@example.com"},
                                  headers={"Idempotency-Key": "same"})
    assert a.status == b.status == 201
    assert table_count(server, "customers") == 2


def test_idempotency_key_expires_after_24_hours(server, admin):
    clock.pin(datetime(2030, 1, 1, tzinfo=timezone.utc))
    cid = create_customer(admin)["id"]
    create_meter(admin)
    body = {"customer_id": cid, "meter": "api_calls"}
    assert admin.post("/v1/events", body, headers={"Idempotency-Key": "day"}).status == 201
    clock.advance(hours=23)
    assert admin.post("/v1/events", body, headers={"Idempotency-Key": "day"}).status == 201
    assert event_count(server) == 1
    clock.advance(hours=2)
    assert admin.post("/v1/events", body, headers={"Idempotency-Key": "day"}).status == 201
    assert event_count(server) == 2


def test_failed_request_is_not_remembered(server, admin):
    bad = admin.post("/v1/customers", {"name": "A"}, headers={"Idempotency-Key": "retry"})
    assert bad.status == 400
    good = admin.post("/v1/customers", {"name": "A", "email": "a@example.com"}, headers={"Idempotency-Key": "retry"})
    assert good.status == 201, good


def test_idempotency_locks_do_not_pile_up(server, admin):
    for n in range(30):
        admin.post("/v1/customers", {"name": f"I{n}", "email": f"i{n}@example.com"}, headers={"Idempotency-Key": f"k{n}"})
    assert server.app._idempotency_locks == {}


# -- 500s ----------------------------------------------------------------------------------

def test_500_never_leaks_a_traceback(server, admin):
    route = next(r for r in server.app.router.routes if r.template == "/v1/customers" and r.method == "GET")
    original = route.handler

    def broken(request):
        raise RuntimeError("database password is hunter2 in /srv/secret/config.py")

    route.handler = broken
    try:
        reply = admin.get("/v1/customers", headers={"X-Request-Id": "req-500-test"})
    finally:
        route.handler = original
    assert reply.status == 500
    assert reply.headers["Content-Type"].startswith("application/json")
    check_security_headers(reply.headers)
    text = reply.raw.decode()
    for leak in ("Traceback", "hunter2", "RuntimeError", "File \"", ".py", "line "):
        assert leak not in text, leak
    error = reply.json["error"]
    assert error["code"] == "internal_error"
    assert reply.headers["X-Request-Id"] == "req-500-test"
    assert "req-500-test" in json.dumps(error)
    assert admin.get("/v1/customers").status == 200  # still serving


def _b64(value):
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.mark.parametrize("path", ["/v1/customers", "/v1/users", "/v1/api-keys", "/v1/meters", "/v1/events",
                                  "/v1/audit-log"])
@pytest.mark.parametrize("cursor", ["%%%", "!!", _b64(["abc"]), _b64([None]), _b64([[1]]), _b64({"a": 1}),
                                    _b64([1, 2, 3]), _b64(["x", "y"]), _b64([1.5])])
def test_hostile_cursor_is_a_clear_4xx(server, admin, path, cursor):
    create_customer(admin)  # one audit-log entry and one customer, so lists are not empty
    reply = admin.get(f"{path}?cursor={cursor}")
    assert reply.status in (200, 400), reply
    if reply.status == 400:
        assert_validation(reply, "cursor")


def test_injection_strings_are_stored_verbatim(server, admin):
    name = "Robert'); DROP TABLE customers;-- <script>alert(1)</script>"
    reply = admin.post("/v1/customers", {"name": name, "email": "bobby@example.com",
                                         "metadata": {"q": "' OR 1=1 --"}})
    assert reply.status == 201, reply
    got = admin.get(f"/v1/customers/{reply.json['id']}").json
    assert got["name"] == name and got["metadata"] == {"q": "' OR 1=1 --"}
    assert [c["name"] for c in admin.get("/v1/customers?q=%27%29%3B").json["data"]] == [name]
    assert table_count(server, "customers") == 1


def test_head_and_unknown_methods(server, admin):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("HEAD", "/health")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b""
        conn.request("OPTIONS", "/v1/customers")
        response = conn.getresponse()
        response.read()
        assert response.status == 405 and response.getheader("X-Request-Id")
    finally:
        conn.close()


def test_parse_errors_answer_in_the_json_shape(server):
    answer = exchange(server.port, b"FOO /health HTTP/1.1\r\nHost: x\r\n\r\n", 1)
    assert answer.startswith(b"HTTP/1.1 501") and b'"error"' in answer and b"X-Request-Id" in answer
    answer = exchange(server.port, b"GET http://[x/health HTTP/1.1\r\nHost: x\r\n\r\n", 1)
    assert answer.startswith(b"HTTP/1.1 400")


def test_server_survives_garbage_on_the_socket(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"\x00\x01\x02 garbage \r\n\r\n")
        try:
            sock.recv(4096)
        except OSError:
            pass
    assert server.admin.get("/health").status == 200


def test_connections_beyond_the_limit_get_503_and_the_server_recovers(server):
    """Idle clients cannot pile up threads: past the limit a connection is
    answered 503 at once; when they leave, requests are served again."""
    import socket
    import threading as _threading
    server.httpd.slots = _threading.BoundedSemaphore(4)
    idle = []
    try:
        for _ in range(4):  # hold every slot with a connection that sends nothing
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            idle.append(sock)
        deadline = time.monotonic() + 5
        while True:  # the 4 threads pick their connections up
            extra = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = extra.recv(4096)
            extra.close()
            if answer.startswith(b"HTTP/1.1 503") or time.monotonic() > deadline:
                break
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b'"service_unavailable"' in answer
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        reply = server.client().get("/health")
        if reply.status == 200:
            break
        time.sleep(0.05)
    assert reply.status == 200

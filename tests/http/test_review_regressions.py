"""Regressions: request framing, error pages, retraction twice, idempotency locks."""

import socket

from tests.harness import ADMIN_KEY


def exchange(port, raw, wait_for=2):
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


def test_a_get_body_is_never_read_as_a_second_request(server):
    hidden = f"GET /v1/auth/me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n".encode()
    raw = (b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: " + str(len(hidden)).encode() + b"\r\n\r\n"
           + hidden + b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = exchange(server.port, raw, wait_for=3)
    assert answer.count(b"HTTP/1.1 200") == 2 and b"api_key" not in answer


def test_duplicate_content_length_and_transfer_encoding_are_refused(server):
    answer = exchange(server.port, b"POST /v1/customers HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                   b"Content-Length: 3\r\nContent-Type: application/json\r\n\r\n{}", 1)
    assert answer.startswith(b"HTTP/1.1 400")
    answer = exchange(server.port, b"POST /v1/customers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                   b"Transfer-Encoding: identity\r\n\r\n", 1)
    assert answer.startswith(b"HTTP/1.1 400") or answer.startswith(b"HTTP/1.1 411")
    answer = exchange(server.port, b"POST /v1/customers HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n{}", 1)
    assert answer.startswith(b"HTTP/1.1 400")


def test_parse_errors_answer_in_the_json_shape(server):
    answer = exchange(server.port, b"FOO /health HTTP/1.1\r\nHost: x\r\n\r\n", 1)
    assert answer.startswith(b"HTTP/1.1 501") and b'"error"' in answer and b"X-Request-Id" in answer
    answer = exchange(server.port, b"GET http://[x/health HTTP/1.1\r\nHost: x\r\n\r\n", 1)
    assert answer.startswith(b"HTTP/1.1 400")


def test_raw_lone_surrogate_and_utf16_bodies_are_400(admin):
    body = b'{"name": "\xed\xa0\x80", "email": "s@example.com"}'
    assert admin.request("POST", "/v1/customers", raw=body, headers={"Content-Type": "application/json"}).status == 400
    body16 = '{"name": "A", "email": "u@example.com"}'.encode("utf-16")
    assert admin.request("POST", "/v1/customers", raw=body16, headers={"Content-Type": "application/json"}).status == 400
    assert admin.get("/v1/customers").json["data"] == []


def test_retracting_twice_after_seq_reuse(admin):
    admin.post("/v1/meters", {"key": "m", "name": "M", "aggregation": "sum"})
    cid = admin.post("/v1/customers", {"name": "R", "email": "r@example.com"}).json["id"]
    for event_id in ("e1", "e2"):
        assert admin.post("/v1/events", {"id": event_id, "customer_id": cid, "meter": "m"}).status == 201
        assert admin.delete(f"/v1/customers/{cid}/events/{event_id}").status == 200


def test_huge_window_ranges_are_refused_before_building(admin):
    cid = admin.post("/v1/customers", {"name": "W", "email": "w@example.com"}).json["id"]
    reply = admin.get(f"/v1/customers/{cid}/usage?from=1970-01-01&to=9998-01-01&window=hour")
    assert reply.status == 400 and reply.json["error"]["details"][0]["field"] == "window"


def test_idempotency_locks_do_not_pile_up(server, admin):
    for n in range(30):
        admin.post("/v1/customers", {"name": f"I{n}", "email": f"i{n}@example.com"}, headers={"Idempotency-Key": f"k{n}"})
    assert server.app._idempotency_locks == {}

"""Storage quota (§8): 409 quota_exceeded with nothing written, decided before
the body is read, reserved atomically against racing uploads, released when an
upload fails or is cut off."""

import http.client
import os
import threading
from types import SimpleNamespace

import pytest

from tests.helpers import sha256, wait_for
from tests.http.helpers import (RawConnection, assert_error, chunked, create_customer, make_key, object_url,
                                put_object, request_head, storage_server, stored_files, temp_files)

MAX_OBJECT = 8 * 1024 * 1024


@pytest.fixture
def srv(tmp_path):
    running = storage_server(tmp_path, BILLING_MAX_OBJECT_BYTES=str(MAX_OBJECT))
    yield running
    running.stop()


def make_tenant(srv, quota):
    customer = create_customer(srv.admin, name="Quota tenant", storage_quota_bytes=quota)
    assert customer["storage_quota_bytes"] == quota
    key = make_key(srv, customer_id=customer["id"])
    return SimpleNamespace(id=customer["id"], key=key, client=srv.client(key),
                           auth={"Authorization": f"Bearer {key}"})


def listing(tenant):
    reply = tenant.client.get("/v1/objects?limit=1000")
    assert reply.status == 200, reply
    return reply.json


def assert_quota_exceeded(reply, quota, used):
    assert_error(reply, 409, "quota_exceeded")
    assert reply.json["error"]["quota_bytes"] == quota
    assert reply.json["error"]["used_bytes"] == used


def part_files(srv):
    return [name for name in temp_files(srv) if name.endswith(".part")]


def test_over_quota_is_409_with_the_numbers_and_nothing_written(srv):
    tenant = make_tenant(srv, 1000)
    assert put_object(tenant.client, "first.bin", b"a" * 600).status == 201
    files = stored_files(srv)
    assert_quota_exceeded(put_object(tenant.client, "second.bin", b"b" * 401), 1000, 600)
    assert [o["key"] for o in listing(tenant)["data"]] == ["first.bin"]
    assert stored_files(srv) == files and temp_files(srv) == []
    # exactly up to the quota is fine; one byte more is not
    assert put_object(tenant.client, "second.bin", b"b" * 400).status == 201
    assert_quota_exceeded(put_object(tenant.client, "third.bin", b"c"), 1000, 1000)
    page = listing(tenant)
    assert page["total_bytes"] == 1000 and page["quota_bytes"] == 1000
    # a replacement over the quota leaves the object as it was
    assert_quota_exceeded(put_object(tenant.client, "first.bin", b"z" * 601), 1000, 1000)
    assert tenant.client.get(object_url("first.bin")).raw == b"a" * 600


def test_the_quota_is_decided_from_content_length_before_reading(srv):
    """Only the head is sent (no body, no Expect): the 409 comes back at once."""
    tenant = make_tenant(srv, 1000)
    with RawConnection(srv.port, timeout=5) as conn:
        conn.send(request_head("PUT", object_url("big.bin"), {**tenant.auth, "Content-Length": 5000}))
        reply = conn.read_response()
        assert reply.status == 409, reply
        assert reply.error_code == "quota_exceeded"
        assert reply.json["error"]["quota_bytes"] == 1000 and reply.json["error"]["used_bytes"] == 0
        assert temp_files(srv) == []  # not a byte was written, not even a temporary file
        # the announced body is within BILLING_MAX_OBJECT_BYTES: the server reads and drops it,
        # then the connection serves the next request
        assert reply.headers.get("connection") != "close"
        conn.send(os.urandom(5000))
        after = conn.request("GET", "/v1/objects", tenant.auth)
        assert after.status == 200 and after.json["data"] == []
    assert stored_files(srv) == {}


def test_chunked_over_quota_is_409_mid_stream_and_the_partial_file_removed(srv):
    tenant = make_tenant(srv, 1024 * 1024)
    pieces = [os.urandom(65_536) for _ in range(24)]  # 1.5 MiB in all
    with RawConnection(srv.port) as conn:
        conn.send(request_head("PUT", object_url("stream.bin"), {**tenant.auth, "Transfer-Encoding": "chunked"}))
        conn.send(b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces[:8]))  # 512 KiB: within the quota
        wait_for(lambda: part_files(srv), message="the upload's temporary file")  # it is being streamed
        rest = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces[8:]) + b"0\r\n\r\n"
        sender = threading.Thread(target=conn.send, args=(rest,), daemon=True)
        sender.start()
        reply = conn.read_response()
        assert reply.status == 409, reply
        assert reply.error_code == "quota_exceeded"
        assert reply.json["error"]["quota_bytes"] == 1024 * 1024
        assert temp_files(srv) == []  # the partial file is gone before the answer
        sender.join(timeout=10)
        # the rest of the refused body was read and dropped: the connection is reusable
        after = conn.request("GET", "/v1/objects", tenant.auth)
        assert after.status == 200 and after.json["data"] == []
    assert stored_files(srv) == {} and temp_files(srv) == []
    # nothing stays reserved
    assert put_object(tenant.client, "fits.bin", os.urandom(1024 * 1024)).status == 201


SIZE = 100_000


def _race(srv, tenant, bodies, chunked_upload):
    """Start one upload per body at the same instant; returns the statuses in order."""
    barrier = threading.Barrier(len(bodies))
    results = [None] * len(bodies)

    def upload(i):
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        try:
            headers = dict(tenant.auth)
            body = bodies[i]
            if chunked_upload:
                headers["Transfer-Encoding"] = "chunked"
                body = (bodies[i][j:j + 16_384] for j in range(0, SIZE, 16_384))
            barrier.wait()
            conn.request("PUT", object_url(f"race/{i:02d}.bin"), body=body, headers=headers,
                         encode_chunked=chunked_upload)
            response = conn.getresponse()
            results[i] = (response.status, response.read())
        except Exception as exc:  # noqa: BLE001 — reported by the assertions
            results[i] = (None, repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_racing_uploads_never_exceed_the_quota(srv):
    """16 uploads race for room for exactly 3: 3 × 201, 13 × 409."""
    quota = 1000 + 3 * SIZE
    tenant = make_tenant(srv, quota)
    assert put_object(tenant.client, "base.bin", b"x" * 1000).status == 201
    bodies = [os.urandom(SIZE) for _ in range(16)]
    results = _race(srv, tenant, bodies, chunked_upload=False)
    statuses = [status for status, _ in results]
    assert sorted(statuses) == [201] * 3 + [409] * 13, results
    assert all(b'"code":"quota_exceeded"' in body for status, body in results if status == 409)
    page = listing(tenant)
    assert page["total_bytes"] == quota
    winners = {f"race/{i:02d}.bin" for i, s in enumerate(statuses) if s == 201}
    assert {o["key"] for o in page["data"]} == winners | {"base.bin"}
    for key in winners:
        assert tenant.client.get(object_url(key)).raw == bodies[int(key[5:7])]
    assert len(stored_files(srv)) == 4 and temp_files(srv) == []


def test_racing_reservations_are_atomic_and_decided_before_any_body(srv):
    """16 uploads announce their length at the same instant with Expect:
    100-continue: exactly 3 are let in (100 Continue: their bytes reserved)
    and 13 are refused with 409 before sending a byte of body."""
    quota = 1000 + 3 * SIZE
    tenant = make_tenant(srv, quota)
    assert put_object(tenant.client, "base.bin", b"x" * 1000).status == 201
    bodies = [os.urandom(SIZE) for _ in range(16)]
    barrier = threading.Barrier(len(bodies))
    first, final = [None] * len(bodies), [None] * len(bodies)
    admitted = threading.Barrier(len(bodies))

    def upload(i):
        with RawConnection(srv.port, timeout=30) as conn:
            head = request_head("PUT", object_url(f"race/{i:02d}.bin"),
                                {**tenant.auth, "Content-Length": SIZE, "Expect": "100-continue"})
            barrier.wait()
            conn.send(head)
            reply = conn.read_response()
            first[i] = reply.status
            admitted.wait()  # every decision is taken before any body is sent
            if reply.status == 100:
                conn.send(bodies[i])
                reply = conn.read_response()
            final[i] = (reply.status, reply.error_code)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(first) == [100] * 3 + [409] * 13, first
    assert sorted(final) == [(201, None)] * 3 + [(409, "quota_exceeded")] * 13, final
    page = listing(tenant)
    assert page["total_bytes"] == quota
    for i, status in enumerate(first):
        if status == 100:
            assert tenant.client.get(object_url(f"race/{i:02d}.bin")).raw == bodies[i]
    assert temp_files(srv) == []


def test_racing_chunked_uploads_never_exceed_the_quota(srv):
    """Chunked uploads reserve as their bytes arrive: however the race goes,
    the stored total stays within the quota and what is stored is whole."""
    quota = 1000 + 3 * SIZE
    tenant = make_tenant(srv, quota)
    assert put_object(tenant.client, "base.bin", b"x" * 1000).status == 201
    bodies = [os.urandom(SIZE) for _ in range(16)]
    results = _race(srv, tenant, bodies, chunked_upload=True)
    statuses = [status for status, _ in results]
    assert set(statuses) <= {201, 409}, results
    assert statuses.count(201) <= 3
    page = listing(tenant)
    assert page["total_bytes"] == 1000 + SIZE * statuses.count(201) <= quota
    for i, status in enumerate(statuses):
        if status == 201:
            assert tenant.client.get(object_url(f"race/{i:02d}.bin")).raw == bodies[i]
    assert temp_files(srv) == []
    # every refused upload released what it had reserved: the free room is whole again
    free = quota - page["total_bytes"]
    if free:
        assert put_object(tenant.client, "rest.bin", b"r" * free).status == 201


@pytest.mark.parametrize("framing", ["content_length", "chunked"])
def test_a_cut_off_upload_releases_its_reservation(srv, framing):
    quota = 1024 * 1024
    tenant = make_tenant(srv, quota)
    data = os.urandom(quota)
    conn = RawConnection(srv.port)
    try:
        if framing == "content_length":
            conn.send(request_head("PUT", object_url("cut.bin"), {**tenant.auth, "Content-Length": quota}))
            conn.send(data[:quota // 2])
        else:
            conn.send(request_head("PUT", object_url("cut.bin"), {**tenant.auth, "Transfer-Encoding": "chunked"}))
            conn.send(chunked([data[:quota // 2]])[:-5])  # one chunk, without the last-chunk
        part = wait_for(lambda: part_files(srv), message="the upload's temporary file")[0]
        wait_for(lambda: os.path.exists(os.path.join(srv.app.config.objects_dir, "tmp", part)) and os.path.getsize(
            os.path.join(srv.app.config.objects_dir, "tmp", part)) > 0, message="bytes on disk")
        # while it is in flight, its bytes are reserved
        probe = 1 if framing == "content_length" else quota
        assert_error(put_object(tenant.client, "other.bin", b"o" * probe), 409, "quota_exceeded")
    finally:
        conn.close()  # cut off mid-body
    wait_for(lambda: temp_files(srv) == [], message="the partial file to go")

    def released():
        reply = put_object(tenant.client, "probe.bin", b"p")
        return reply.status == 201

    wait_for(released, message="the reservation to be released")
    assert tenant.client.delete(object_url("probe.bin")).status == 200
    reply = put_object(tenant.client, "full.bin", data)  # the whole quota
    assert reply.status == 201, reply
    assert reply.json["etag"] == sha256(data)
    assert [o["key"] for o in listing(tenant)["data"]] == ["full.bin"]
    assert len(stored_files(srv)) == 1 and temp_files(srv) == []


def test_replacing_an_object_at_the_quota_with_the_same_size_succeeds(srv):
    quota = 300_000
    tenant = make_tenant(srv, quota)
    first, second, third = (os.urandom(quota) for _ in range(3))
    assert put_object(tenant.client, "all.bin", first).status == 201
    reply = put_object(tenant.client, "all.bin", second)
    assert reply.status == 200, reply
    assert reply.json["etag"] == sha256(second)
    # the same with a chunked body (reserved as it arrives, the replaced size credited)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request("PUT", object_url("all.bin"), body=(third[i:i + 50_000] for i in range(0, quota, 50_000)),
                     headers={**tenant.auth, "Transfer-Encoding": "chunked"}, encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 200, response.read()
    finally:
        conn.close()
    assert tenant.client.get(object_url("all.bin")).raw == third
    # one byte more does not fit, and leaves the object as it was
    assert_quota_exceeded(put_object(tenant.client, "all.bin", os.urandom(quota + 1)), quota, quota)
    assert tenant.client.get(object_url("all.bin")).raw == third
    assert put_object(tenant.client, "all.bin", b"small").status == 200
    assert put_object(tenant.client, "more.bin", b"m" * (quota - 5)).status == 201
    page = listing(tenant)
    assert page["total_bytes"] == quota and len(stored_files(srv)) == 2 and temp_files(srv) == []

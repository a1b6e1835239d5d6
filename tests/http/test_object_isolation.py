"""Objects (§8): tenants never reach each other's objects, keys are names and
never paths, and staff act on a customer they name."""

import os
from types import SimpleNamespace

import pytest

from tests.harness import ADMIN_KEY
from tests.helpers import sha256
from tests.http.helpers import (RawConnection, assert_error, create_customer, make_key, object_url, put_object,
                                storage_server, stored_files, temp_files, unique)


@pytest.fixture
def srv(tmp_path):
    running = storage_server(tmp_path)
    yield running
    running.stop()


def customer_user_token(srv, customer_id):
    email = f"{unique('portal')}@example.com"
    password = "portal-password-123"
    reply = srv.admin.post("/v1/users", {"email": email, "name": "Portal user", "role": "customer",
                                         "customer_id": customer_id, "password": password})
    assert reply.status == 201, reply
    login = srv.client().post("/v1/auth/login", {"email": email, "password": password})
    assert login.status == 200, login
    assert login.json["user"]["role"] == "customer"
    return login.json["token"]


B_OBJECTS = {"private/b-only.txt": b"B's private bytes", "shared.txt": b"B's version of shared.txt",
             "reports/q1.pdf": os.urandom(300_000)}
A_OBJECTS = {"shared.txt": b"A's own shared.txt", "a-only.txt": b"A alone"}


@pytest.fixture
def tenants(srv):
    made = {}
    for name, objects in (("A", A_OBJECTS), ("B", B_OBJECTS)):
        customer = create_customer(srv.admin, name=f"Tenant {name}")
        key = make_key(srv, customer_id=customer["id"])
        client = srv.client(key)
        for object_key, data in objects.items():
            assert put_object(client, object_key, data, "text/plain").status == 201
        listing = client.get("/v1/objects").json
        made[name] = SimpleNamespace(id=customer["id"], key=key, client=client, listing=listing)
    yield made["A"], made["B"]
    for tenant in made.values():
        tenant.client.close()


def assert_b_untouched(b):
    listing = b.client.get("/v1/objects")
    assert listing.json == b.listing
    for key, data in B_OBJECTS.items():
        got = b.client.get(object_url(key))
        assert got.status == 200 and got.raw == data
        assert got.headers["ETag"] == f'"{sha256(data)}"'


@pytest.mark.parametrize("credential", ["api_key", "customer_user"])
def test_a_tenant_never_reaches_another_tenants_objects(srv, tenants, credential):
    a, b = tenants
    token = a.key if credential == "api_key" else customer_user_token(srv, a.id)
    client = srv.client(token)

    # B's key that A does not have: 404 on every route
    for method in ("GET", "HEAD", "DELETE"):
        reply = client.request(method, object_url("private/b-only.txt"))
        assert reply.status == 404, (method, reply)
        if method != "HEAD":
            assert_error(reply, 404, "not_found")
    # a key both have: A's own object, never B's
    got = client.get(object_url("shared.txt"))
    assert got.status == 200 and got.raw == A_OBJECTS["shared.txt"]
    assert client.request("HEAD", object_url("shared.txt")).headers["ETag"] == f'"{sha256(A_OBJECTS["shared.txt"])}"'
    assert client.get(object_url("reports/q1.pdf"), headers={"Range": "bytes=0-9"}).status == 404
    # the list shows A's objects only
    listing = client.get("/v1/objects")
    assert listing.status == 200
    assert [o["key"] for o in listing.json["data"]] == sorted(A_OBJECTS)
    assert listing.json["total_bytes"] == sum(len(d) for d in A_OBJECTS.values())
    assert client.get("/v1/objects?prefix=private/").json["data"] == []
    assert client.get("/v1/objects?prefix=reports").json["data"] == []

    # naming B with A's credential: 404 on every route, nothing written
    for method, key in (("GET", "private/b-only.txt"), ("HEAD", "shared.txt"), ("DELETE", "shared.txt"),
                        ("PUT", "shared.txt"), ("PUT", "new-in-b.txt"), ("GET", None)):
        path = "/v1/objects?customer_id=%d" % b.id if key is None else object_url(key, b.id)
        reply = client.request(method, path, raw=b"overwrite attempt" if method == "PUT" else None)
        assert reply.status == 404, (method, key, reply)
    # naming itself is fine
    assert client.get(object_url("a-only.txt", a.id)).raw == A_OBJECTS["a-only.txt"]
    assert client.get(f"/v1/objects?customer_id={a.id}").status == 200

    # writing B's key names creates and deletes A's own objects only
    reply = put_object(client, "private/b-only.txt", b"A's object under the same name")
    assert reply.status == 201, reply  # new for A: B's object is not replaced
    reply = put_object(client, "shared.txt", b"A replaces its own shared.txt")
    assert reply.status == 200, reply
    assert client.delete(object_url("shared.txt")).status == 200
    assert client.delete(object_url("private/b-only.txt")).status == 200
    assert client.request("HEAD", object_url("private/b-only.txt")).status == 404

    assert_b_untouched(b)
    assert [o["key"] for o in client.get("/v1/objects").json["data"]] == ["a-only.txt"]
    client.close()


# -- keys are names ------------------------------------------------------------------

# the raw target after /v1/objects/, as sent on the wire (http.client would refuse or change some)
BAD_KEYS = {
    "dot_dot_first": b"../x",
    "dot_dot_middle": b"a/../../b",
    "dot_dot_alone": b"..",
    "dot_dot_last": b"a/..",
    "encoded_dot_dot": b"%2e%2e/x",
    "encoded_dot_dot_upper": b"%2E%2E/x",
    "mixed_dot_dot": b"a/.%2E/b",
    "encoded_dot_dot_last": b"a/%2e%2e",
    "leading_slash": b"/etc/passwd",  # the path /v1/objects//etc/passwd
    "encoded_leading_slash": b"%2Fetc%2Fpasswd",
    "nul": b"a/%00b",
    "nul_alone": b"%00",
    "soh": b"a%01b",
    "del": b"a%7Fb",
    "newline": b"a%0Ab",
    "carriage_return": b"a%0D%0AX-Injected:%201",
    "tab": b"a%09b",
    "c1_control": b"a%C2%85b",
    "raw_soh": b"a\x01b",
    "raw_del": b"a\x7fb",
    "bytes_513": b"k" * 513,
    "bytes_513_multibyte": b"%C3%A9" * 256 + b"k",
    "invalid_utf8_ff": b"%FF",
    "invalid_utf8_c3_28": b"%C3%28",
    "invalid_utf8_latin1": b"caf%E9",
    "invalid_utf8_surrogate": b"%ED%A0%80",
    "invalid_utf8_overlong_slash": b"%C0%AF",
    "raw_invalid_utf8": b"\xff",
    "raw_latin1": b"caf\xe9",
    "empty": b"",
}


def data_dir_files(srv):
    """Every file under the data directory except the database's own."""
    found = set()
    for folder, _, names in os.walk(srv.app.config.data_dir):
        found |= {os.path.join(folder, n) for n in names if not n.startswith("billing.db")}
    return found


@pytest.mark.parametrize("raw_key", list(BAD_KEYS.values()), ids=list(BAD_KEYS))
def test_bad_keys_are_400_on_every_route_and_nothing_is_written(srv, tenants, raw_key):
    a, b = tenants
    before = data_dir_files(srv)
    for token, query in ((a.key, b""), (ADMIN_KEY, b"?customer_id=%d" % a.id)):
        for method in ("PUT", "GET", "HEAD", "DELETE"):
            body = b"evil bytes" if method == "PUT" else b""
            head = (b"%s /v1/objects/%s%s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                    b"Content-Length: %d\r\n\r\n" % (method.encode(), raw_key, query, token.encode(), len(body)))
            with RawConnection(srv.port) as conn:
                conn.send(head + body)
                reply = conn.read_response(head_only=method == "HEAD")
            assert reply.status == 400, (method, raw_key, reply)
            if method != "HEAD":
                assert reply.error_code == "validation_error", reply
                assert reply.json["error"]["details"][0]["field"] == "key"
    assert data_dir_files(srv) == before
    assert temp_files(srv) == []
    assert [o["key"] for o in a.client.get("/v1/objects").json["data"]] == sorted(A_OBJECTS)
    assert_b_untouched(b)


@pytest.mark.parametrize("prefix", ["../x", "a/..", "/etc", "%2Fetc", "a%00", "a%01", "a%0A", "k" * 513])
def test_bad_prefixes_are_400(srv, tenants, prefix):
    a, _ = tenants
    reply = a.client.get(f"/v1/objects?prefix={prefix}")
    assert_error(reply, 400, "validation_error")


@pytest.mark.parametrize("key", ["k" * 512, "é" * 256, "a/" * 255 + "ab"], ids=["ascii", "two_byte", "segments"])
def test_a_512_byte_key_is_accepted_on_every_route(srv, tenants, key):
    a, _ = tenants
    assert len(key.encode("utf-8")) == 512
    reply = put_object(a.client, key, b"long name")
    assert reply.status == 201, reply
    assert reply.json["key"] == key
    assert a.client.get(object_url(key)).raw == b"long name"
    assert a.client.request("HEAD", object_url(key)).status == 200
    assert key in [o["key"] for o in a.client.get("/v1/objects?limit=1000").json["data"]]
    assert a.client.delete(object_url(key)).status == 200


# keys that look like paths, markup or SQL are still plain names (sent percent-encoded)
ODD_BUT_VALID_KEYS = ["...", ".", "./a", "a//b", "a/", "%2e%2e/x", "..a", "a..", "C:\\Windows\\system.ini",
                      "<script>alert(1)</script>", "'; DROP TABLE objects;--", "a b?c=d#e", "ü/日本/🙂", "~root"]


def test_odd_but_valid_keys_are_names_not_paths(srv, tenants):
    a, b = tenants
    root = srv.app.config.data_dir
    before = data_dir_files(srv)
    for key in ODD_BUT_VALID_KEYS:
        data = key.encode("utf-8") * 3
        reply = put_object(a.client, key, data)
        assert reply.status == 201, (key, reply)
        assert reply.json["key"] == key
        assert a.client.get(object_url(key)).raw == data
    listed = [o["key"] for o in a.client.get("/v1/objects?limit=1000").json["data"]]
    assert sorted(ODD_BUT_VALID_KEYS + list(A_OBJECTS)) == listed
    new_files = data_dir_files(srv) - before
    assert len(new_files) == len(ODD_BUT_VALID_KEYS)
    for path in new_files:  # every new file is a server-named object file
        assert os.path.dirname(os.path.dirname(path)) == os.path.join(root, "objects"), path
    assert_b_untouched(b)


# -- staff --------------------------------------------------------------------------------

def test_admin_and_finance_read_and_write_a_named_customers_objects(srv, tenants):
    _, b = tenants
    admin = srv.admin
    reply = put_object(admin, "staff/upload.txt", b"from staff", "text/plain", customer_id=b.id)
    assert reply.status == 201, reply
    assert admin.get(object_url("staff/upload.txt", b.id)).raw == b"from staff"
    assert admin.request("HEAD", object_url("staff/upload.txt", b.id)).status == 200
    assert put_object(admin, "staff/upload.txt", b"replaced", customer_id=b.id).status == 200
    assert b.client.get(object_url("staff/upload.txt")).raw == b"replaced"  # it is B's object
    listing = admin.get(f"/v1/objects?customer_id={b.id}&prefix=staff/")
    assert listing.status == 200 and [o["key"] for o in listing.json["data"]] == ["staff/upload.txt"]
    finance = srv.client(make_key(srv, role="finance"))
    assert put_object(finance, "staff/finance.txt", b"finance", customer_id=b.id).status == 201
    assert finance.delete(object_url("staff/finance.txt", b.id)).status == 200
    deleted = admin.delete(object_url("staff/upload.txt", b.id))
    assert deleted.status == 200 and deleted.json["key"] == "staff/upload.txt"
    finance.close()
    assert_b_untouched(b)


def test_viewer_reads_but_cannot_write(srv, tenants):
    _, b = tenants
    viewer = srv.client(make_key(srv, role="viewer"))
    assert viewer.get(object_url("shared.txt", b.id)).raw == B_OBJECTS["shared.txt"]
    assert viewer.request("HEAD", object_url("shared.txt", b.id)).status == 200
    assert viewer.get(f"/v1/objects?customer_id={b.id}").json["data"] == b.listing["data"]
    assert_error(put_object(viewer, "shared.txt", b"viewer overwrite", customer_id=b.id), 403, "forbidden")
    assert_error(put_object(viewer, "viewer-new.txt", b"viewer", customer_id=b.id), 403, "forbidden")
    assert_error(viewer.delete(object_url("shared.txt", b.id)), 403, "forbidden")
    viewer.close()
    assert_b_untouched(b)


@pytest.mark.parametrize("role", ["admin", "viewer"])
def test_staff_must_name_the_customer(srv, tenants, role):
    _, b = tenants
    staff = srv.admin if role == "admin" else srv.client(make_key(srv, role="viewer"))
    reads = [("GET", object_url("shared.txt")), ("HEAD", object_url("shared.txt")), ("GET", "/v1/objects")]
    writes = [("PUT", object_url("shared.txt")), ("DELETE", object_url("shared.txt"))]
    for method, path in reads + (writes if role == "admin" else []):
        reply = staff.request(method, path, raw=b"x" if method == "PUT" else None)
        assert reply.status == 400, (method, path, reply)
        if method != "HEAD":
            assert_error(reply, 400, "validation_error")
            assert reply.json["error"]["details"][0]["field"] == "customer_id"
    for query, status in (("customer_id=999999", 404), ("customer_id=abc", 400), ("customer_id=0", 400)):
        assert staff.get(f"/v1/objects/shared.txt?{query}").status == status, query
        assert staff.get(f"/v1/objects?{query}").status == status, query
        if role == "admin":
            assert staff.request("PUT", f"/v1/objects/shared.txt?{query}", raw=b"x").status == status, query
    assert stored_files(srv) and temp_files(srv) == []
    assert_b_untouched(b)


def test_unencoded_utf8_in_the_target_is_read_as_utf8(srv, tenants):
    a, _ = tenants
    with RawConnection(srv.port) as conn:
        put = conn.request("PUT", "/v1/objects/raw/r\xc3\xa9sum\xc3\xa9.pdf", {"Authorization": f"Bearer {a.key}"},
                           b"raw bytes")
        assert put.status == 201, put
        assert put.json["key"] == "raw/résumé.pdf"  # not mojibake: the bytes are UTF-8
        got = conn.request("GET", object_url("raw/résumé.pdf"), {"Authorization": f"Bearer {a.key}"})
        assert got.status == 200 and got.body == b"raw bytes"

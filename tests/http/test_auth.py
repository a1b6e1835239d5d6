"""§2 auth and §9 users, roles, keys: every authentication and authorization
rule, through real HTTP."""

import glob
import hashlib
import re
import sqlite3
from datetime import datetime, timezone

import pytest

from billing import clock
from billing.web.routes import ROUTES
from tests.harness import ADMIN_KEY, ADMIN_PASSWORD, make_key
from tests.http.helpers import (assert_error, assert_validation, create_customer, create_meter,
                                event_count, list_all, unique)

ALL_ROLES = ("admin", "finance", "customer_success", "sales", "viewer", "ingest", "customer")
STAFF_READ = {"admin", "finance", "customer_success", "sales", "viewer"}
PLACEHOLDERS = {"customer_id": "999999", "user_id": "999999", "key_id": "999999",
                "key": "no_such_meter", "event_id": "no_such_event", "path": "nothing.js"}


def concrete(pattern):
    """A path matching a route pattern, with harmless (non-existent) ids."""
    def value(match):
        name, sub = match.group(1), match.group(2)
        for candidate in (PLACEHOLDERS.get(name), "999999", "no_such_thing", "x"):
            if candidate is not None and re.fullmatch(sub, candidate):
                return candidate
        raise AssertionError(f"no placeholder for {name} in {pattern}")
    return re.sub(r"\\(.)", r"\1", re.sub(r"\(\?P<(\w+)>([^)]*)\)", value, pattern))


V1_PROTECTED = [(method, concrete(pattern)) for method, pattern, _h, roles in ROUTES
                if pattern.startswith("/v1/") and not (method == "POST" and pattern == "/v1/auth/login")]

# What §9 says each role may do (None: the spec leaves it open, not checked).
SPEC_ACCESS = [
    ("GET", "/v1/auth/me", set(ALL_ROLES)),
    # finance reaches these for customer users only (tests/http/test_customer_users.py)
    ("POST", "/v1/users", {"admin", "finance"}),
    ("GET", "/v1/users", {"admin", "finance"}),
    ("GET", "/v1/users/999999", {"admin", "finance"}),
    ("PATCH", "/v1/users/999999", {"admin", "finance"}),
    ("DELETE", "/v1/users/999999", {"admin", "finance"}),
    ("POST", "/v1/api-keys", {"admin"}),
    ("GET", "/v1/api-keys", {"admin"}),
    ("DELETE", "/v1/api-keys/999999", {"admin"}),
    ("POST", "/v1/customers", {"admin", "finance"}),
    ("GET", "/v1/customers", STAFF_READ | {"customer"}),
    ("GET", "/v1/customers/999999", STAFF_READ | {"customer"}),
    ("PATCH", "/v1/customers/999999", {"admin", "finance"}),
    ("DELETE", "/v1/customers/999999", {"admin", "finance"}),
    ("GET", "/v1/customers/999999/usage", STAFF_READ | {"customer"}),
    ("DELETE", "/v1/customers/999999/events/no_such_event", {"admin"}),
    ("POST", "/v1/meters", {"admin"}),
    ("GET", "/v1/meters", STAFF_READ | {"customer?"}),
    ("GET", "/v1/meters/no_such_meter", STAFF_READ | {"customer?"}),
    ("PATCH", "/v1/meters/no_such_meter", {"admin"}),
    ("POST", "/v1/events", {"admin", "ingest", "customer"}),
    ("POST", "/v1/events/batch", {"admin", "ingest", "customer"}),
    ("GET", "/v1/events", STAFF_READ | {"customer"}),
    ("GET", "/v1/audit-log", STAFF_READ),
    ("POST", "/v1/invoices/run", {"admin", "finance"}),
    ("GET", "/v1/invoices", STAFF_READ | {"customer"}),
    ("GET", "/v1/invoices.csv", STAFF_READ | {"customer"}),
    ("GET", "/v1/invoices/999999", STAFF_READ | {"customer"}),
    ("GET", "/v1/invoices/999999.pdf", STAFF_READ | {"customer"}),
    ("POST", "/v1/invoices/999999/finalize", {"admin", "finance"}),
    ("POST", "/v1/invoices/999999/issue", {"admin", "finance"}),
    ("POST", "/v1/invoices/999999/payments", {"admin", "finance"}),
    ("POST", "/v1/invoices/999999/void", {"admin", "finance"}),
    ("POST", "/v1/invoices/999999/reissue", {"admin", "finance"}),
    ("GET", "/v1/invoices/999999/actions", STAFF_READ),
    ("POST", "/v1/webhooks", {"admin"}),
    ("GET", "/v1/webhooks", {"admin"}),
    ("DELETE", "/v1/webhooks/999999", {"admin"}),
    ("GET", "/v1/webhooks/999999/deliveries", {"admin"}),
    ("GET", "/v1/jobs", STAFF_READ),
    ("GET", "/v1/objects", STAFF_READ | {"customer"}),
    ("GET", "/v1/objects/no_such_thing", STAFF_READ | {"customer"}),
    ("PUT", "/v1/objects/no_such_thing", {"admin", "finance", "customer"}),
    ("DELETE", "/v1/objects/no_such_thing", {"admin", "finance", "customer"}),
    ("GET", "/v1/storage", STAFF_READ),
    ("POST", "/v1/auth/logout", set(ALL_ROLES)),  # last: it ends the sessions
]


def send(client, method, path):
    body = {} if method in ("POST", "PATCH") else None
    return client.request(method, path, body)


def role_tokens(server, kind):
    """One token per role: API keys, or session tokens of users with the role."""
    customer = create_customer(server.admin, name="Scoped Co")
    if kind == "key":
        tokens = {"customer": make_key(server, customer_id=customer["id"])}
    else:  # a customer user (§9): exactly the rights of a customer-scoped key
        email = f"tenant-{unique()}@example.com"
        assert server.admin.post("/v1/users", {"email": email, "name": "Tenant", "role": "customer",
                                               "customer_id": customer["id"], "password": "correct horse"}).status == 201
        tokens = {"customer": server.client().post("/v1/auth/login", {"email": email,
                                                                      "password": "correct horse"}).json["token"]}
    for role in ("admin", "finance", "customer_success", "sales", "viewer", "ingest"):
        if kind == "key":
            tokens[role] = make_key(server, role=role)
        else:
            email = f"{role}-{unique()}@example.com"
            reply = server.admin.post("/v1/users", {"email": email, "name": role, "role": role,
                                                    "password": "correct horse"})
            assert reply.status == 201, reply
            login = server.client().post("/v1/auth/login", {"email": email, "password": "correct horse"})
            assert login.status == 200, login
            tokens[role] = login.json["token"]
    return tokens


def login(server, email="admin@localhost", password=ADMIN_PASSWORD):
    reply = server.client().post("/v1/auth/login", {"email": email, "password": password})
    assert reply.status == 200, reply
    return reply.json["token"]


def new_user(admin, role="viewer", password="long enough pw", **fields):
    body = {"email": f"u{unique()}@example.com", "name": "Some One", "role": role,
            "password": password, **fields}
    reply = admin.post("/v1/users", body)
    assert reply.status == 201, reply
    return reply.json, body["password"]


def db_dump(server):
    """Every value in the database as text, plus the raw bytes of its files."""
    path = server.app.config.db_path
    conn = sqlite3.connect(path)
    try:
        text = "\n".join(conn.iterdump())
    finally:
        conn.close()
    raw = b"".join(open(f, "rb").read() for f in glob.glob(path + "*"))
    return text, raw


# -- 401 ---------------------------------------------------------------------

def test_only_login_is_public_under_v1():
    public = [(m, p) for m, p, _h, roles in ROUTES if p.startswith("/v1/") and roles is None]
    assert public == [("POST", r"/v1/auth/login")]


@pytest.mark.parametrize("credential", ["none", "empty_bearer", "basic_scheme", "unknown_token",
                                        "unknown_session_token", "token_in_query"])
def test_401_on_every_v1_route_without_valid_credentials(server, credential):
    headers = {"none": {}, "empty_bearer": {"Authorization": "Bearer "},
               "basic_scheme": {"Authorization": "Basic " + ADMIN_KEY},
               "unknown_token": {"Authorization": "Bearer mk_" + "x" * 43},
               "unknown_session_token": {"Authorization": "Bearer ms_" + "x" * 43},
               "token_in_query": {}}[credential]
    client = server.client()
    failures = []
    for method, path in V1_PROTECTED:
        target = path
        if credential == "token_in_query":
            target += ("&" if "?" in path else "?") + f"token={ADMIN_KEY}&access_token={ADMIN_KEY}"
        body = {} if method in ("POST", "PATCH") else None
        reply = client.request(method, target, body, headers=headers)
        if reply.status != 401 or reply.error_code != "unauthenticated":
            failures.append((method, path, reply.status, reply.raw[:200]))
        elif "Bearer" not in (reply.headers.get("WWW-Authenticate") or ""):
            failures.append((method, path, "no WWW-Authenticate: Bearer"))
    assert not failures, failures
    assert event_count(server) == 0
    assert len(list_all(server.admin, "/v1/customers")) == 0


def test_401_with_revoked_key_and_logged_out_session_on_every_v1_route(server):
    key = make_key(server, role="admin")
    key_id = [k for k in server.admin.get("/v1/api-keys").json["data"] if k["name"] == "test key"][0]["id"]
    assert server.client(key).get("/v1/auth/me").status == 200
    assert server.admin.delete(f"/v1/api-keys/{key_id}").status == 200
    token = login(server)
    assert server.client(token).get("/v1/auth/me").status == 200
    assert server.client(token).post("/v1/auth/logout").status == 200
    failures = []
    for secret in (key, token):
        client = server.client(secret)
        for method, path in V1_PROTECTED:
            reply = send(client, method, path)
            if reply.status != 401 or reply.error_code != "unauthenticated":
                failures.append((secret[:3], method, path, reply.status))
    assert not failures, failures


def test_login_is_public(server):
    reply = server.client().post("/v1/auth/login", {"email": "admin@localhost", "password": ADMIN_PASSWORD})
    assert reply.status == 200


# -- 403: the role matrix ----------------------------------------------------

@pytest.mark.parametrize("kind", ["key", "session"])
def test_role_matrix_follows_spec(server, kind):
    tokens = role_tokens(server, kind)
    failures = []
    for method, path, allowed in SPEC_ACCESS:
        for role in ALL_ROLES:
            if role + "?" in allowed:
                continue
            reply = send(server.client(tokens[role]), method, path)
            if role in allowed:
                if reply.status in (401, 403):
                    failures.append((role, method, path, "expected allowed", reply.status))
            elif reply.status != 403 or reply.error_code != "forbidden":
                failures.append((role, method, path, "expected 403", reply.status))
    assert not failures, failures


def test_viewer_reads_but_cannot_write(server):
    customer = create_customer(server.admin)
    create_meter(server.admin)
    viewer = server.client(make_key(server, role="viewer"))
    assert viewer.get("/v1/customers").status == 200
    assert viewer.get(f"/v1/customers/{customer['id']}").status == 200
    assert viewer.get(f"/v1/customers/{customer['id']}/usage").status == 200
    assert viewer.get("/v1/meters").status == 200
    assert viewer.get("/v1/events").status == 200
    assert viewer.get("/v1/audit-log").status == 200
    attempts = [
        viewer.post("/v1/customers", {"name": "X", "email": "x@example.com"}),
        viewer.patch(f"/v1/customers/{customer['id']}", {"name": "Renamed"}),
        viewer.delete(f"/v1/customers/{customer['id']}"),
        viewer.post("/v1/meters", {"key": "m2", "name": "M2", "aggregation": "sum"}),
        viewer.patch("/v1/meters/api_calls", {"name": "Renamed"}),
        viewer.post("/v1/events", {"customer_id": customer["id"], "meter": "api_calls"}),
        viewer.post("/v1/events/batch", {"events": [{"customer_id": customer["id"], "meter": "api_calls"}]}),
    ]
    for reply in attempts:
        assert_error(reply, 403, "forbidden")
    assert event_count(server) == 0
    assert server.admin.get(f"/v1/customers/{customer['id']}").json["name"] == customer["name"]
    assert len(list_all(server.admin, "/v1/customers")) == 1
    assert server.admin.get("/v1/meters/api_calls").json["name"] == "Api Calls"


def test_ingest_can_only_post_events(server):
    customer = create_customer(server.admin)
    create_meter(server.admin)
    ingest = server.client(make_key(server, role="ingest"))
    reply = ingest.post("/v1/events", {"id": "e1", "customer_id": customer["id"], "meter": "api_calls"})
    assert reply.status == 201, reply
    reply = ingest.post("/v1/events/batch", {"events": [{"id": "e2", "customer_id": customer["id"],
                                                         "meter": "api_calls"}]})
    assert reply.status == 200 and reply.json["accepted"] == 1, reply
    for method, path in [("GET", "/v1/events"), ("GET", "/v1/customers"),
                         ("GET", f"/v1/customers/{customer['id']}"),
                         ("GET", f"/v1/customers/{customer['id']}/usage"), ("GET", "/v1/meters"),
                         ("GET", "/v1/audit-log"), ("POST", "/v1/customers"), ("POST", "/v1/meters"),
                         ("GET", "/v1/users"), ("GET", "/v1/api-keys")]:
        assert_error(send(ingest, method, path), 403, "forbidden")


def test_finance_manages_customers_but_not_meters_users_keys(server):
    finance = server.client(make_key(server, role="finance"))
    reply = finance.post("/v1/customers", {"name": "Fin Co", "email": "fin@example.com"})
    assert reply.status == 201, reply
    cid = reply.json["id"]
    assert finance.patch(f"/v1/customers/{cid}", {"name": "Fin Co 2"}).status == 200
    create_meter(server.admin)
    attempts = [
        finance.post("/v1/meters", {"key": "m2", "name": "M2", "aggregation": "sum"}),
        finance.patch("/v1/meters/api_calls", {"name": "Renamed"}),
        finance.post("/v1/users", {"email": "n@example.com", "name": "N", "role": "admin",
                                   "password": "long enough pw"}),
        finance.post("/v1/api-keys", {"name": "k", "role": "admin"}),
        finance.get("/v1/api-keys"),
        finance.delete("/v1/api-keys/1"),
        finance.delete(f"/v1/customers/{cid}/events/anything"),
    ]
    for reply in attempts:
        assert_error(reply, 403, "forbidden")
    # staff users are out of finance's sight: it manages customer users only (§9)
    assert finance.get("/v1/users").json["data"] == []
    assert_error(finance.patch("/v1/users/1", {"role": "viewer"}), 404, "not_found")
    assert_error(finance.delete("/v1/users/1"), 404, "not_found")
    assert server.admin.get("/v1/users/1").json["role"] == "admin"
    assert server.admin.get("/v1/meters/api_calls").json["name"] == "Api Calls"
    assert server.admin.get("/v1/users/1").json["role"] == "admin"
    assert server.client(ADMIN_KEY).get("/v1/auth/me").status == 200  # key 1 not revoked
    assert [u["email"] for u in list_all(server.admin, "/v1/users")] == ["admin@localhost"]


def test_finance_session_user_is_limited_like_finance_key(server):
    _, password = new_user(server.admin, role="finance", email="fin-user@example.com")
    finance = server.client(login(server, "fin-user@example.com", password))
    assert finance.post("/v1/customers", {"name": "A", "email": "a@example.com"}).status == 201
    assert_error(finance.post("/v1/meters", {"key": "m", "name": "M", "aggregation": "sum"}), 403, "forbidden")
    assert_error(finance.post("/v1/users", {"email": "s@example.com", "name": "S", "role": "viewer",
                                            "password": "long enough pw"}), 403, "forbidden")
    assert [u["role"] for u in finance.get("/v1/users").json["data"]] == []


# -- customer-scoped keys -------------------------------------------------------

@pytest.fixture
def scoped(server):
    """Two customers, a meter, and a key scoped to the first customer."""
    mine = create_customer(server.admin, name="Mine", external_id="ext-mine")
    other = create_customer(server.admin, name="Other", external_id="ext-other")
    create_meter(server.admin)
    client = server.client(make_key(server, customer_id=mine["id"]))
    return client, mine, other


def test_scoped_key_sees_only_its_customer(server, scoped):
    client, mine, other = scoped
    listed = client.get("/v1/customers")
    assert listed.status == 200
    assert [c["id"] for c in listed.json["data"]] == [mine["id"]]
    assert client.get(f"/v1/customers/{mine['id']}").status == 200
    assert client.get(f"/v1/customers/{mine['id']}/usage").status == 200
    assert_error(client.get(f"/v1/customers/{other['id']}"), 404, "not_found")
    assert_error(client.get(f"/v1/customers/{other['id']}/usage"), 404, "not_found")
    # indistinguishable from a customer that does not exist
    missing = client.get("/v1/customers/999999")
    assert_error(missing, 404, "not_found")


def test_scoped_key_lists_only_its_events(server, scoped):
    client, mine, other = scoped
    for cid, eid in ((mine["id"], "m1"), (other["id"], "o1"), (other["id"], "o2")):
        assert server.admin.post("/v1/events", {"id": eid, "customer_id": cid, "meter": "api_calls"}).status == 201
    reply = client.get("/v1/events")
    assert reply.status == 200
    assert [(e["id"], e["customer_id"]) for e in reply.json["data"]] == [("m1", mine["id"])]
    assert [e["id"] for e in client.get(f"/v1/events?customer_id={mine['id']}").json["data"]] == ["m1"]


def test_scoped_key_asking_for_other_customers_events_gets_404(server, scoped):
    client, mine, other = scoped
    assert server.admin.post("/v1/events", {"id": "o1", "customer_id": other["id"],
                                            "meter": "api_calls"}).status == 201
    # §9: everything of other customers answers 404 (as for a customer that does not exist)
    assert_error(client.get(f"/v1/events?customer_id={other['id']}"), 404, "not_found")


def test_scoped_key_posts_events_for_its_own_customer_only(server, scoped):
    client, mine, other = scoped
    reply = client.post("/v1/events", {"id": "a", "meter": "api_calls"})  # customer implied
    assert reply.status == 201, reply
    assert reply.json["event"]["customer_id"] == mine["id"]
    reply = client.post("/v1/events", {"id": "b", "customer_id": mine["id"], "meter": "api_calls"})
    assert reply.status == 201, reply
    reply = client.post("/v1/events", {"id": "c", "customer": "ext-mine", "meter": "api_calls"})
    assert reply.status == 201, reply
    reply = client.post("/v1/events/batch", {"events": [{"id": "d", "meter": "api_calls"}]})
    assert reply.status == 200 and reply.json == {"accepted": 1, "duplicates": 0}, reply

    unknown = client.post("/v1/events", {"id": "z", "customer_id": 999999, "meter": "api_calls"})
    for body in ({"id": "x", "customer_id": other["id"], "meter": "api_calls"},
                 {"id": "x", "customer": "ext-other", "meter": "api_calls"}):
        reply = client.post("/v1/events", body)
        assert reply.status in (400, 404), reply
        # no hint that the other customer exists
        assert reply.status == unknown.status and reply.error_code == unknown.error_code
    for body in ({"events": [{"id": "x", "customer_id": other["id"], "meter": "api_calls"}]},
                 {"customer_id": other["id"], "events": [{"id": "x", "meter": "api_calls"}]},
                 {"events": [{"id": "ok", "meter": "api_calls"},
                             {"id": "x", "customer": "ext-other", "meter": "api_calls"}]}):
        reply = client.post("/v1/events/batch", body)
        assert reply.status in (400, 404), reply
    assert event_count(server, other["id"]) == 0
    assert event_count(server, mine["id"]) == 4


def test_scoped_key_cannot_write_customers_or_read_staff_data(server, scoped):
    client, mine, other = scoped
    for reply in (client.patch(f"/v1/customers/{mine['id']}", {"name": "Hijack"}),
                  client.delete(f"/v1/customers/{mine['id']}"),
                  client.post("/v1/customers", {"name": "N", "email": "n@example.com"}),
                  client.get("/v1/audit-log"), client.get("/v1/users"), client.get("/v1/api-keys"),
                  client.post("/v1/meters", {"key": "m2", "name": "M", "aggregation": "sum"}),
                  client.delete(f"/v1/customers/{mine['id']}/events/a")):
        assert_error(reply, 403, "forbidden")
    assert server.admin.get(f"/v1/customers/{mine['id']}").json["name"] == "Mine"


# -- login, logout, me, sessions --------------------------------------------------

def test_login_me_logout(server):
    anonymous = server.client()
    reply = anonymous.post("/v1/auth/login", {"email": "admin@localhost", "password": ADMIN_PASSWORD})
    assert reply.status == 200, reply
    body = reply.json
    assert set(body) >= {"token", "user"}
    assert body["user"]["email"] == "admin@localhost" and body["user"]["role"] == "admin"
    assert "password" not in body["user"] and "password_hash" not in body["user"]
    token = body["token"]
    assert len(token) >= 43  # 256 bits, URL-safe
    assert "expires_at" in body and body["expires_at"].endswith("Z")

    session = server.client(token)
    me = session.get("/v1/auth/me")
    assert me.status == 200
    assert me.json["user"]["email"] == "admin@localhost"
    assert me.json["role"] == "admin"
    assert session.get("/v1/customers").status == 200  # a session token works like a key

    key_me = server.admin.get("/v1/auth/me")
    assert key_me.status == 200 and key_me.json["role"] == "admin"

    other_token = login(server)
    out = session.post("/v1/auth/logout")
    assert out.status == 200, out
    assert_error(session.get("/v1/auth/me"), 401, "unauthenticated")
    assert_error(session.get("/v1/customers"), 401, "unauthenticated")
    assert_error(session.post("/v1/auth/logout"), 401, "unauthenticated")
    # only that session ended
    assert server.client(other_token).get("/v1/auth/me").status == 200


def test_logout_with_api_key_is_rejected_and_key_still_works(server):
    reply = server.admin.post("/v1/auth/logout")
    assert reply.status == 400, reply
    assert server.admin.get("/v1/auth/me").status == 200


def test_login_wrong_password_or_unknown_email_is_401_alike(server):
    wrong = server.client().post("/v1/auth/login", {"email": "admin@localhost", "password": "wrong-password"})
    unknown = server.client().post("/v1/auth/login", {"email": "nobody@example.com", "password": "whatever12"})
    assert_error(wrong, 401, "unauthenticated")
    assert_error(unknown, 401, "unauthenticated")
    assert wrong.json["error"]["message"] == unknown.json["error"]["message"]
    assert "token" not in (wrong.json or {})


@pytest.mark.parametrize("body", [{}, {"email": "admin@localhost"}, {"password": "x" * 10},
                                  {"email": 5, "password": "x" * 10}, {"email": "admin@localhost", "password": None}])
def test_login_missing_or_ill_typed_fields_is_400(server, body):
    reply = server.client().post("/v1/auth/login", body)
    assert reply.status == 400, reply
    assert reply.error_code == "validation_error"


def test_session_expires(server):
    clock.pin(datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc))
    token = login(server)
    session = server.client(token)
    assert session.get("/v1/auth/me").status == 200
    clock.advance(hours=1)
    assert session.get("/v1/auth/me").status == 200
    clock.advance(days=2)
    assert_error(session.get("/v1/auth/me"), 401, "unauthenticated")


def test_login_rate_limited_after_repeated_failures(server):
    anonymous = server.client()
    statuses = []
    for _ in range(12):
        reply = anonymous.post("/v1/auth/login", {"email": "admin@localhost", "password": "guess-guess"})
        statuses.append(reply.status)
        if reply.status == 429:
            break
    assert statuses[0] == 401
    assert statuses[-1] == 429, statuses
    assert len(statuses) <= 11, statuses
    assert reply.error_code == "rate_limited"
    retry = reply.headers.get("Retry-After")
    assert retry is not None and retry.isdigit() and int(retry) >= 1, retry
    # while throttled, even the right password does not get in
    right = anonymous.post("/v1/auth/login", {"email": "admin@localhost", "password": ADMIN_PASSWORD})
    assert_error(right, 429, "rate_limited")
    assert "token" not in (right.json or {})
    assert right.headers.get("Retry-After")
    # the API key keeps working
    assert server.admin.get("/v1/auth/me").status == 200


def test_login_throttle_not_bypassed_by_spelling_the_email_differently(server):
    anonymous = server.client()
    for _ in range(12):
        reply = anonymous.post("/v1/auth/login", {"email": "admin@localhost", "password": "guess-guess"})
        if reply.status == 429:
            break
    assert reply.status == 429
    for variant in ("ADMIN@localhost", " admin@localhost", "admin@localhost ", "Admin@LocalHost  "):
        right = anonymous.post("/v1/auth/login", {"email": variant, "password": ADMIN_PASSWORD})
        assert right.status in (401, 429), (variant, right)  # the same account stays locked
        assert "token" not in (right.json or {}), variant


# the per-address limit across e-mails, the windows and the client address:
# tests/http/test_lockout.py


def test_successful_login_does_not_count_as_failure(server):
    for _ in range(10):
        login(server)


def test_disabled_user_cannot_login_and_sessions_stop(server):
    user, password = new_user(server.admin, role="viewer")
    token = login(server, user["email"], password)
    assert server.client(token).get("/v1/auth/me").status == 200
    reply = server.admin.patch(f"/v1/users/{user['id']}", {"disabled": True})
    assert reply.status == 200 and reply.json["disabled"] is True, reply
    assert_error(server.client(token).get("/v1/auth/me"), 401, "unauthenticated")
    failed = server.client().post("/v1/auth/login", {"email": user["email"], "password": password})
    assert_error(failed, 401, "unauthenticated")


def test_deleted_user_session_stops(server):
    user, password = new_user(server.admin, role="finance")
    token = login(server, user["email"], password)
    assert server.client(token).get("/v1/customers").status == 200
    assert server.admin.delete(f"/v1/users/{user['id']}").status == 200
    assert_error(server.client(token).get("/v1/customers"), 401, "unauthenticated")


def test_role_change_applies_to_existing_session(server):
    user, password = new_user(server.admin, role="viewer")
    session = server.client(login(server, user["email"], password))
    assert_error(session.post("/v1/customers", {"name": "A", "email": "a@example.com"}), 403, "forbidden")
    assert server.admin.patch(f"/v1/users/{user['id']}", {"role": "finance"}).status == 200
    assert session.post("/v1/customers", {"name": "A", "email": "a@example.com"}).status == 201


# -- API keys ----------------------------------------------------------------------

def test_api_key_lifecycle(server):
    reply = server.admin.post("/v1/api-keys", {"name": "CI ingest", "role": "ingest"})
    assert reply.status == 201, reply
    created = reply.json
    assert set(created) >= {"id", "name", "role", "prefix", "key"}
    secret = created["key"]
    assert created["name"] == "CI ingest" and created["role"] == "ingest"
    assert secret.startswith(created["prefix"]) and len(created["prefix"]) < len(secret)
    assert len(secret) - len(created["prefix"]) >= 32  # 256-bit secret, not guessable from the prefix
    assert server.client(secret).get("/v1/auth/me").status == 200

    listed = server.admin.get("/v1/api-keys")
    assert listed.status == 200
    assert secret not in listed.raw.decode()
    assert hashlib.sha256(secret.encode()).hexdigest() not in listed.raw.decode()
    entry = [k for k in listed.json["data"] if k["id"] == created["id"]][0]
    assert entry["prefix"] == created["prefix"]
    assert "key" not in entry and "digest" not in entry and "secret" not in entry
    for item in listed.json["data"]:
        assert "key" not in item and "digest" not in item
    assert ADMIN_KEY not in listed.raw.decode()  # the bootstrap key either

    revoked = server.admin.delete(f"/v1/api-keys/{created['id']}")
    assert revoked.status == 200, revoked
    assert "key" not in revoked.json
    assert_error(server.client(secret).get("/v1/auth/me"), 401, "unauthenticated")
    assert_error(server.client(secret).post("/v1/events", {"meter": "x"}), 401, "unauthenticated")
    again = server.admin.delete(f"/v1/api-keys/{created['id']}")
    assert again.status in (404, 409), again
    assert_error(server.admin.delete("/v1/api-keys/999999"), 404, "not_found")


def test_customer_scoped_key_creation(server):
    customer = create_customer(server.admin)
    reply = server.admin.post("/v1/api-keys", {"name": "portal", "customer_id": customer["id"]})
    assert reply.status == 201, reply
    assert reply.json["customer_id"] == customer["id"]
    me = server.client(reply.json["key"]).get("/v1/auth/me")
    assert me.status == 200 and me.json["customer_id"] == customer["id"]


@pytest.mark.parametrize("body,field", [
    ({"name": "k"}, "role"),
    ({"name": "k", "role": "admin", "customer_id": 1}, "role"),
    ({"name": "k", "role": "superuser"}, "role"),
    ({"name": "k", "customer_id": 999999}, "customer_id"),
    ({"name": "k", "customer_id": "1"}, "customer_id"),
    ({"name": "k", "customer_id": 10 ** 30}, "customer_id"),
    ({"role": "admin"}, "name"),
    ({"name": "", "role": "admin"}, "name"),
    ({"name": "k", "role": "admin", "scopes": ["all"]}, "scopes"),
])
def test_api_key_validation(server, body, field):
    create_customer(server.admin)
    before = len(list_all(server.admin, "/v1/api-keys"))
    reply = server.admin.post("/v1/api-keys", body)
    assert_validation(reply, field)
    assert len(list_all(server.admin, "/v1/api-keys")) == before


def test_secrets_are_not_stored_in_plain_text(server):
    key = server.admin.post("/v1/api-keys", {"name": "k", "role": "viewer"}).json["key"]
    token = login(server)
    user_password = "user password 42"
    new_user(server.admin, role="viewer", password=user_password)
    assert server.client(token).get("/v1/auth/me").status == 200
    text, raw = db_dump(server)
    for secret in (key, token, ADMIN_KEY, ADMIN_PASSWORD, user_password):
        assert secret not in text, secret
        assert secret.encode() not in raw, secret
    # §9: SHA-256 digests for keys and tokens, scrypt for passwords
    for secret in (key, token, ADMIN_KEY):
        assert hashlib.sha256(secret.encode()).hexdigest() in text or \
            hashlib.sha256(secret.encode()).digest() in raw, secret
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        hashes = [r[0] for r in conn.execute("SELECT password_hash FROM users")]
    finally:
        conn.close()
    assert len(hashes) == 2 and len(set(hashes)) == 2
    assert all("scrypt" in h for h in hashes)


# -- users ----------------------------------------------------------------------------

def test_users_crud(server):
    admin = server.admin
    reply = admin.post("/v1/users", {"email": "ann@example.com", "name": "Ann", "role": "finance",
                                     "password": "s3cret-password"})
    assert reply.status == 201, reply
    user = reply.json
    assert user["email"] == "ann@example.com" and user["role"] == "finance" and user["name"] == "Ann"
    assert isinstance(user["id"], int)
    assert "password" not in user and "password_hash" not in user
    assert "s3cret-password" not in reply.raw.decode()

    listed = admin.get("/v1/users")
    assert listed.status == 200
    assert {u["email"] for u in listed.json["data"]} == {"admin@localhost", "ann@example.com"}
    assert "password_hash" not in listed.raw.decode() and "scrypt" not in listed.raw.decode()
    assert admin.get(f"/v1/users/{user['id']}").json["email"] == "ann@example.com"

    patched = admin.patch(f"/v1/users/{user['id']}", {"name": "Ann B", "role": "viewer"})
    assert patched.status == 200, patched
    assert patched.json["name"] == "Ann B" and patched.json["role"] == "viewer"
    assert admin.get(f"/v1/users/{user['id']}").json["role"] == "viewer"

    assert admin.patch(f"/v1/users/{user['id']}", {"password": "another-password"}).status == 200
    assert server.client().post("/v1/auth/login", {"email": "ann@example.com",
                                                   "password": "s3cret-password"}).status == 401
    login(server, "ann@example.com", "another-password")

    deleted = admin.delete(f"/v1/users/{user['id']}")
    assert deleted.status == 200, deleted
    assert_error(admin.get(f"/v1/users/{user['id']}"), 404, "not_found")
    assert_error(admin.patch(f"/v1/users/{user['id']}", {"name": "x"}), 404, "not_found")
    assert_error(admin.delete(f"/v1/users/{user['id']}"), 404, "not_found")
    assert [u["email"] for u in list_all(admin, "/v1/users")] == ["admin@localhost"]


def test_user_changes_are_audited(server):
    user, _ = new_user(server.admin, role="viewer")
    server.admin.patch(f"/v1/users/{user['id']}", {"role": "finance"})
    log = server.admin.get("/v1/audit-log?entity=user").json["data"]
    actions = [e["action"] for e in log]
    assert "user.create" in actions and "user.update" in actions
    update = [e for e in log if e["action"] == "user.update"][0]
    assert update["before"]["role"] == "viewer" and update["after"]["role"] == "finance"
    assert update["actor"] and update["at"]
    raw = server.admin.get("/v1/audit-log").raw.decode()
    assert "scrypt" not in raw and "password_hash" not in raw


@pytest.mark.parametrize("email", ["ann@example.com", "ANN@Example.com"])
def test_duplicate_user_email_is_409(server, email):
    new_user(server.admin, email="ann@example.com")
    reply = server.admin.post("/v1/users", {"email": email, "name": "Dup", "role": "viewer",
                                            "password": "long enough pw"})
    assert_error(reply, 409, "conflict")
    assert len(list_all(server.admin, "/v1/users")) == 2


@pytest.mark.parametrize("body,field", [
    ({"email": "a@example.com", "name": "A", "role": "viewer", "password": "short"}, "password"),
    ({"email": "a@example.com", "name": "A", "role": "viewer", "password": "1234567"}, "password"),
    ({"email": "a@example.com", "name": "A", "role": "viewer"}, "password"),
    ({"email": "a@example.com", "name": "A", "role": "viewer", "password": 12345678}, "password"),
    ({"email": "not-an-email", "name": "A", "role": "viewer", "password": "long enough pw"}, "email"),
    ({"email": "@localhost", "name": "A", "role": "viewer", "password": "long enough pw"}, "email"),
    ({"email": "a b@localhost", "name": "A", "role": "viewer", "password": "long enough pw"}, "email"),
    ({"email": "@example.com", "name": "A", "role": "viewer", "password": "long enough pw"}, "email"),
    ({"name": "A", "role": "viewer", "password": "long enough pw"}, "email"),
    ({"email": "a@example.com", "role": "viewer", "password": "long enough pw"}, "name"),
    ({"email": "a@example.com", "name": "A", "role": "root", "password": "long enough pw"}, "role"),
    ({"email": "a@example.com", "name": "A", "password": "long enough pw"}, "role"),
    ({"email": "a@example.com", "name": "A", "role": "viewer", "password": "long enough pw",
      "is_admin": True}, "is_admin"),
])
def test_user_validation(server, body, field):
    reply = server.admin.post("/v1/users", body)
    assert_validation(reply, field)
    assert len(list_all(server.admin, "/v1/users")) == 1


def test_user_password_exactly_8_is_accepted(server):
    new_user(server.admin, password="12345678")


@pytest.mark.parametrize("body,field", [({"password": "short"}, "password"), ({"role": "god"}, "role"),
                                        ({"disabled": "yes"}, "disabled"), ({"name": ""}, "name"),
                                        ({"email2": "x"}, "email2")])
def test_user_patch_validation(server, body, field):
    user, password = new_user(server.admin)
    assert_validation(server.admin.patch(f"/v1/users/{user['id']}", body), field)
    assert server.admin.get(f"/v1/users/{user['id']}").json == user
    login(server, user["email"], password)


def test_admin_cannot_delete_own_user(server):
    session = server.client(login(server))
    reply = session.delete("/v1/users/1")
    assert_error(reply, 409, "conflict")
    assert server.admin.get("/v1/users/1").status == 200

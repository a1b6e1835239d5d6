"""§9 audit of sign-ins and keys, through real HTTP: sign-ins, failed
sign-ins, key creation and revocation, and the use of a revoked key are in
GET /v1/audit-log with actor, time, object and before/after, filterable by
actor, object and time; no secret is ever written there; customer-scoped
callers cannot read it."""

import sqlite3
from urllib.parse import urlencode

from tests.harness import ADMIN_PASSWORD, RunningServer, temp_db
from tests.http.helpers import WriteCounter, assert_error, list_all, make_customer, make_key, pin, unique


def log(server, **filters):
    return list_all(server.admin, "/v1/audit-log?" + urlencode(filters))


def sign_in(server, email, password, forwarded=None):
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return server.client().post("/v1/auth/login", {"email": email, "password": password}, headers=headers)


def test_sign_ins_and_failed_sign_ins_are_logged(server):
    pin("2030-01-01T09:00:00Z")
    ok = sign_in(server, "admin@localhost", ADMIN_PASSWORD)
    assert ok.status == 200, ok
    user_id = ok.json["user"]["id"]
    pin("2030-01-01T10:00:00Z")
    assert sign_in(server, "admin@localhost", "wrong-guess-1").status == 401
    assert sign_in(server, "Nobody@Example.com", "wrong-guess-2").status == 401

    [entry] = log(server, actor=f"user:{user_id}", action="auth.login")
    assert (entry["entity"], entry["entity_id"], entry["role"], entry["at"]) == (
        "user", str(user_id), "admin", "2030-01-01T09:00:00Z")
    assert entry["after"]["email"] == "admin@localhost" and entry["after"]["client"] == "127.0.0.1"
    assert entry["after"]["session_id"] and entry["request_id"]

    failed = log(server, actor="anonymous")
    assert [(e["action"], e["entity"], e["entity_id"], e["after"]["email"], e["after"]["reason"])
            for e in failed] == [
        ("auth.login_failed", "user", None, "nobody@example.com", "unknown_user"),
        ("auth.login_failed", "user", str(user_id), "admin@localhost", "wrong_password")]
    assert all(e["after"]["client"] == "127.0.0.1" and e["at"] == "2030-01-01T10:00:00Z" for e in failed)
    # by object, and by time
    assert [e["action"] for e in log(server, entity="user", entity_id=str(user_id))] == [
        "auth.login_failed", "auth.login"]
    assert [e["action"] for e in log(server, entity="user", to="2030-01-01T10:00:00Z")] == ["auth.login"]
    assert len(log(server, entity="user", **{"from": "2030-01-01T10:00:00Z"})) == 2


def test_a_throttled_attempt_writes_nothing(server):
    pin("2030-01-01T09:00:00Z")
    for _ in range(10):
        assert sign_in(server, "admin@localhost", "wrong-guess").status == 401
    with WriteCounter(server) as writes:
        for _ in range(20):
            assert sign_in(server, "admin@localhost", "wrong-guess").status == 429
    assert writes == []
    assert len(log(server, action="auth.login_failed")) == 10


def test_key_creation_revocation_and_revoked_use_are_logged(server):
    pin("2030-01-01T09:00:00Z")
    admin_key = f"key:{server.admin.get('/v1/auth/me').json['api_key']['id']}"
    created = server.admin.post("/v1/api-keys", {"name": "ci", "role": "ingest"}).json
    key_id, secret = created["id"], created["key"]
    pin("2030-01-01T09:30:00Z")
    assert server.admin.delete(f"/v1/api-keys/{key_id}").status == 200
    pin("2030-01-01T10:00:00Z")
    revoked = server.client(secret)
    with WriteCounter(server) as writes:  # the request itself never waits for a write
        for _ in range(5):
            assert_error(revoked.get("/v1/customers"), 401, "unauthenticated")
    assert writes == []
    assert server.app.flusher.flush()["Authenticator"] == 1  # five uses, one entry a minute
    pin("2030-01-01T10:00:59Z")
    assert_error(revoked.post("/v1/events", {}), 401, "unauthenticated")
    assert server.app.flusher.flush()["Authenticator"] == 0
    pin("2030-01-01T10:01:00Z")
    assert_error(revoked.get("/v1/customers"), 401, "unauthenticated")
    server.app.flusher.flush()

    entries = log(server, entity="api_key", entity_id=str(key_id))
    assert [(e["action"], e["actor"], e["at"]) for e in entries] == [
        ("api_key.revoked_use", f"key:{key_id}", "2030-01-01T10:01:00Z"),
        ("api_key.revoked_use", f"key:{key_id}", "2030-01-01T10:00:00Z"),
        ("api_key.revoke", admin_key, "2030-01-01T09:30:00Z"),
        ("api_key.create", admin_key, "2030-01-01T09:00:00Z")]
    use = entries[1]
    assert use["role"] == "ingest" and use["after"]["client"] == "127.0.0.1" and use["request_id"]
    assert use["after"]["revoked_at"] == "2030-01-01T09:30:00Z"
    assert entries[2]["before"]["revoked"] is False and entries[2]["after"]["revoked"] is True
    assert [e["action"] for e in log(server, actor=f"key:{key_id}")] == ["api_key.revoked_use"] * 2
    assert [e["action"] for e in log(server, entity="api_key", **{"from": "2030-01-01T09:15:00Z",
                                                                  "to": "2030-01-01T10:00:30Z"})] == [
        "api_key.revoked_use", "api_key.revoke"]


def test_revoked_use_is_written_at_a_clean_stop(tmp_path):
    running = RunningServer(temp_db(tmp_path))
    created = running.admin.post("/v1/api-keys", {"name": "old", "role": "viewer"}).json
    secret, key_id = created["key"], created["id"]
    assert running.admin.delete(f"/v1/api-keys/{key_id}").status == 200
    assert running.client(secret).get("/v1/customers").status == 401
    running.stop()
    conn = sqlite3.connect(running.app.config.db_path)
    try:
        assert conn.execute("SELECT count(*) FROM audit_log WHERE action = 'api_key.revoked_use'"
                            " AND entity_id = ?", (str(key_id),)).fetchone()[0] == 1
    finally:
        conn.close()


def test_no_secret_is_ever_written_to_the_audit_log(server):
    email, password = f"{unique('pat')}@example.com", "pat's password 1"
    user = server.admin.post("/v1/users", {"email": email, "name": "Pat", "role": "viewer",
                                           "password": password}).json
    token = sign_in(server, email, password).json["token"]
    assert sign_in(server, email, "a wrong password").status == 401
    new_password = "pat's password 2"
    assert server.admin.patch(f"/v1/users/{user['id']}", {"password": new_password}).status == 200
    created = server.admin.post("/v1/api-keys", {"name": "tenant", "customer_id": make_customer(server.admin)})
    secret = created.json["key"]
    assert server.admin.delete(f"/v1/api-keys/{created.json['id']}").status == 200
    assert server.client(secret).get("/v1/invoices").status == 401
    server.app.flusher.flush()

    everything = server.admin.get("/v1/audit-log?limit=1000").raw.decode()
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        stored = "\n".join(str(row) for row in conn.execute("SELECT * FROM audit_log"))
        hashes = [r[0] for r in conn.execute("SELECT password_hash FROM users")]
        digests = [r[0] for r in conn.execute("SELECT digest FROM api_keys UNION SELECT digest FROM auth_sessions")]
    finally:
        conn.close()
    for text in (everything, stored):
        assert "auth.login" in text and "api_key.revoked_use" in text
        for secret_text in [token, secret, password, new_password, "a wrong password", ADMIN_PASSWORD,
                            "scrypt$", *hashes, *digests]:
            assert secret_text not in text, secret_text


def test_customer_callers_cannot_read_the_audit_log(server):
    customer_id = make_customer(server.admin)
    tenant = server.client(make_key(server, customer_id=customer_id))
    assert_error(tenant.get("/v1/audit-log"), 403, "forbidden")
    email = f"{unique('portal')}@example.com"
    assert server.admin.post("/v1/users", {"email": email, "name": "Portal", "role": "customer",
                                           "customer_id": customer_id, "password": "portal password"}).status == 201
    portal = server.client(sign_in(server, email, "portal password").json["token"])
    assert_error(portal.get("/v1/audit-log?actor=anonymous"), 403, "forbidden")

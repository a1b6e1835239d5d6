"""No secret at rest in plain text (§1): not in the idempotency table, the
audit log or the request log; webhook signing secrets wrapped under the
master key (a 0600 file in the data directory); the database and its folder
private to the server's user; API key prefixes of at most 8 characters."""

import base64
import glob
import hashlib
import io
import json
import os
import sqlite3
import stat

import pytest

from billing import jsonutil
from billing.api import auth
from billing.store import migrations
from billing.store.secretbox import KEY_BYTES, SecretBox, SecretError
from tests.harness import ADMIN_KEY, ADMIN_PASSWORD, RunningServer, temp_db
from tests.http.test_webhooks import Receiver, deliveries, verify_signature

ENV = {"BILLING_MAX_EVENT_AGE_DAYS": "0"}


def files_bytes(server):
    """The raw bytes of the database file and its -wal and -shm."""
    return b"".join(open(f, "rb").read() for f in sorted(glob.glob(server.app.config.db_path + "*")))


def db_value(server, sql, params=()):
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        return conn.execute(sql, params).fetchone()[0]
    finally:
        conn.close()


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def logged(server):
    """The server, its request log kept in memory."""
    server.app.log_stream = io.StringIO()
    return server


def post_twice(client, path, body, key):
    """The first answer and its replay (same Idempotency-Key, same body)."""
    first = client.post(path, body, headers={"Idempotency-Key": key})
    again = client.post(path, body, headers={"Idempotency-Key": key})
    assert first.status == again.status, (first, again)
    return first, again


def test_idempotent_replays_store_no_secret(logged):
    server, admin = logged, logged.admin
    first, again = post_twice(admin, "/v1/api-keys", {"name": "ci", "role": "viewer"}, "key-1")
    assert first.status == 201 and first.json["key"].startswith(first.json["prefix"])
    api_key = first.json["key"]
    # the replay: the same key object, its secret shown only the first time
    assert again.headers["Idempotent-Replayed"] == "true" and again.headers["Secret-Omitted"] == "key"
    assert again.json == {**first.json, "key": None}
    assert "Secret-Omitted" not in first.headers

    user_body = {"email": "ops@example.com", "name": "Ops", "role": "viewer", "password": "user-password-9137"}
    first_user, again_user = post_twice(admin, "/v1/users", user_body, "user-1")
    assert first_user.status == 201 and again_user.json == first_user.json
    assert "Secret-Omitted" not in again_user.headers

    hook_body = {"url": "https://hooks.example.com/in", "events": ["*"]}
    first_hook, again_hook = post_twice(admin, "/v1/webhooks", hook_body, "hook-1")
    webhook_secret = first_hook.json["secret"]
    assert again_hook.json == {**first_hook.json, "secret": None} and again_hook.headers["Secret-Omitted"] == "secret"

    login = {"email": "ops@example.com", "password": user_body["password"]}
    first_login = server.client().post("/v1/auth/login", login, headers={"Idempotency-Key": "login-1"})
    assert first_login.status == 200
    token = first_login.json["token"]
    session = server.client(token)
    key_body = {"name": "from a session", "role": "viewer"}
    assert session.post("/v1/api-keys", key_body, headers={"Idempotency-Key": "k"}).status == 403  # viewer
    assert session.get("/v1/auth/me").status == 200
    assert admin.get("/v1/audit-log").status == 200
    fingerprint = hashlib.sha256(b"POST\0/v1/users\0" + jsonutil.encode(user_body).encode()).hexdigest()

    secrets = [api_key, webhook_secret, token, user_body["password"], ADMIN_KEY, ADMIN_PASSWORD]
    stored = db_value(server, "SELECT group_concat(response || request_hash, ' ') FROM idempotency_keys")
    audit = admin.get("/v1/audit-log?limit=1000").raw.decode()
    raw = files_bytes(server)
    log = server.app.log_stream.getvalue()
    assert log.count("\n") >= 10  # the request log was written
    for secret in secrets:
        for where, text in (("idempotency", stored), ("audit", audit), ("log", log)):
            assert secret not in text, (where, secret)
        assert secret.encode() not in raw, secret
    # a plain SHA-256 of a body holding a password can be checked against guesses: it is keyed
    assert fingerprint not in stored and fingerprint.encode() not in raw


def test_files_are_private_and_the_master_key_is_made_once(tmp_path):
    folder = tmp_path / "new" / "data"
    db = str(folder / "billing.db")
    server = RunningServer(db, env=ENV)
    try:
        hook = server.admin.post("/v1/webhooks", {"url": "https://h.example.com/x", "events": ["*"]}).json
        key_path = server.app.config.master_key_path
        assert key_path == str(folder / "master.key")
        for path in (db, db + "-wal", db + "-shm", key_path):
            assert mode(path) == 0o600, (path, oct(mode(path)))
        assert mode(str(folder)) == 0o700
        with open(key_path, "rb") as handle:
            master = handle.read()
        assert len(master) == KEY_BYTES
        stored = db_value(server, "SELECT secret FROM webhooks WHERE id = ?", (hook["id"],))
    finally:
        server.stop()
    assert stored.startswith("wrap1:") and hook["secret"] not in stored
    assert SecretBox(master).unwrap(stored) == hook["secret"]
    again = RunningServer(db, env=ENV)  # a restart keeps the key: the secret still unwraps
    try:
        with open(key_path, "rb") as handle:
            assert handle.read() == master
        assert again.app.secrets.unwrap(stored) == hook["secret"]
    finally:
        again.stop()


def test_listed_prefixes_are_at_most_eight_characters(server):
    created = server.admin.post("/v1/api-keys", {"name": "short prefix", "role": "viewer"}).json
    assert created["prefix"] == created["key"][:8]
    listed = server.admin.get("/v1/api-keys").json["data"]
    assert {k["prefix"] for k in listed} == {created["prefix"], ADMIN_KEY[:8]}  # the bootstrap key's too
    assert db_value(server, "SELECT max(length(prefix)) FROM api_keys") == 8


def test_a_changed_secret_or_another_master_key_fails_the_delivery_visibly(tmp_path):
    db = temp_db(tmp_path)
    receiver = Receiver()
    server = RunningServer(db, env=ENV)
    try:
        hook = server.admin.post("/v1/webhooks", {"url": receiver.url(), "events": ["*"]}).json
        stored = db_value(server, "SELECT secret FROM webhooks")
        blob = bytearray(base64.urlsafe_b64decode(stored[len("wrap1:"):]))
        blob[20] ^= 1  # one bit of the ciphertext
        with server.app.db.transaction() as conn:
            conn.execute("UPDATE webhooks SET secret = ?", ("wrap1:" + base64.urlsafe_b64encode(bytes(blob)).decode(),))
            conn.execute("INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, payload, status,"
                         " next_attempt_at, created_at) VALUES (?, 'evt_1', 'invoice.created', '{}', 'pending', 0, 0)",
                         (hook["id"],))
        assert server.app.dispatcher.run_once()["webhooks"] == {"delivered": 0, "failed": 1}
        assert receiver.requests == []  # nothing signed with garbage
        [delivery] = deliveries(server.admin, hook["id"])
        assert delivery["status"] == "pending" and delivery["attempts"] == 1  # retried with the backoff
        assert delivery["attempt_log"][0]["error"].startswith("SecretError:") and "master key" in delivery["last_error"]
        with server.app.db.transaction() as conn:
            conn.execute("UPDATE webhooks SET secret = ?", (stored,))
    finally:
        server.stop()
    with pytest.raises(SecretError):
        SecretBox(os.urandom(KEY_BYTES)).unwrap(stored)

    os.replace(str(tmp_path / "master.key"), str(tmp_path / "lost.key"))  # the key file is lost: a new one
    server = RunningServer(db, env=ENV)
    try:
        with server.app.db.transaction() as conn:
            conn.execute("UPDATE webhook_deliveries SET next_attempt_at = 0")
        server.app.dispatcher.run_once()
        assert receiver.requests == []
        assert "master key" in deliveries(server.admin, hook["id"])[0]["last_error"]
    finally:
        server.stop()
        receiver.stop()


def old_database(path, hook_url):
    """A database as the previous version left it: a plain webhook secret, a
    replayable API key answer holding the key, a 10-character prefix."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    migrations.migrate(conn, migrations.MIGRATIONS[:9])
    secret = "whsec_" + "5e" * 24
    conn.execute("INSERT INTO webhooks (id, url, events, secret, created_at) VALUES (7, ?, '[\"*\"]', ?, 0)",
                 (hook_url, secret))
    conn.execute("INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, payload, status, next_attempt_at,"
                 " created_at) VALUES (7, 'evt_old', 'invoice.created', '{\"id\": \"evt_old\"}', 'pending', 0, 0)")
    conn.execute("INSERT INTO users (email, name, role, password_hash, created_at, updated_at) VALUES"
                 " ('admin@localhost', 'Administrator', 'admin', ?, 0, 0)", (auth.hash_password(ADMIN_PASSWORD),))
    conn.execute("INSERT INTO api_keys (id, name, role, prefix, digest, created_at, created_by) VALUES"
                 " (1, 'bootstrap admin key', 'admin', ?, ?, 0, 'system')", (ADMIN_KEY[:10], auth.digest(ADMIN_KEY)))
    old_key = "mk_" + "Q" * 43
    conn.execute("INSERT INTO api_keys (id, name, role, prefix, digest, created_at, created_by) VALUES"
                 " (50, 'old', 'viewer', ?, ?, 0, 'key:1')", (old_key[:10], hashlib.sha256(old_key.encode()).hexdigest()))
    body = {"name": "old", "role": "viewer"}
    answer = {"id": 50, "name": "old", "role": "viewer", "customer_id": None, "prefix": old_key[:10],
              "created_at": "2025-01-01T00:00:00Z", "created_by": "key:1", "revoked": False, "revoked_at": None,
              "key": old_key}
    fingerprint = hashlib.sha256(b"POST\0/v1/api-keys\0" + jsonutil.encode(body).encode()).hexdigest()
    conn.execute("INSERT INTO idempotency_keys (actor, key, request_hash, status, response, created_at)"
                 " VALUES ('key:1', 'old-1', ?, 201, ?, ?)", (fingerprint, json.dumps(answer), 2 ** 62))
    conn.close()
    return secret, old_key, body


def test_an_old_database_is_upgraded_in_place(tmp_path):
    db = temp_db(tmp_path)
    receiver = Receiver()
    secret, old_key, body = old_database(db, receiver.url())
    server = RunningServer(db, env=ENV)
    try:
        stored = db_value(server, "SELECT secret FROM webhooks WHERE id = 7")
        assert stored.startswith("wrap1:")
        raw = files_bytes(server)
        for plain in (secret, old_key, old_key[:10]):
            assert plain.encode() not in raw, plain  # zeroed, not just unlinked
        assert [k["prefix"] for k in server.admin.get("/v1/api-keys").json["data"]] == [ADMIN_KEY[:8], old_key[:8]]
        assert db_value(server, "SELECT group_concat(prefix) FROM api_keys") == f"{ADMIN_KEY[:8]},{old_key[:8]}"
        replay = server.admin.post("/v1/api-keys", body, headers={"Idempotency-Key": "old-1"})
        assert replay.status == 201 and replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json["id"] == 50 and replay.json["key"] is None and replay.headers["Secret-Omitted"] == "key"
        # deliveries are still signed with the secret the endpoint knows
        assert server.app.dispatcher.run_once()["webhooks"] == {"delivered": 1, "failed": 0}
        verify_signature(receiver.requests[0], secret)
    finally:
        server.stop()
    again = RunningServer(db, env=ENV)  # the next start finds nothing left to wrap
    try:
        assert db_value(again, "SELECT secret FROM webhooks WHERE id = 7") == stored
    finally:
        again.stop()
        receiver.stop()

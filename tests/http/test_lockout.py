"""§9 guessing and lock-out, through real HTTP: failures are counted per
(e-mail, client address) — 10 in 15 minutes — and per client address — 100
in 5 minutes; never per e-mail alone, so the right password from an address
with no recent failures always works. The client address is the peer, or the
last untrusted X-Forwarded-For address when the peer is a trusted proxy.

The server's clients all connect from 127.0.0.1; with
BILLING_TRUSTED_PROXIES=127.0.0.1 an X-Forwarded-For header presents other
addresses."""

import pytest

from billing.api import auth
from tests.harness import ADMIN_PASSWORD, RunningServer, temp_db
from tests.http.helpers import assert_error, pin, unique

ADMIN = "admin@localhost"
ATTACKER, ELSEWHERE = "203.0.113.7", "198.51.100.9"


@pytest.fixture
def proxied(tmp_path):
    """A server behind a trusted proxy (the test client, 127.0.0.1)."""
    running = RunningServer(temp_db(tmp_path), env={"BILLING_TRUSTED_PROXIES": "127.0.0.1"})
    yield running
    running.stop()


def sign_in(server, email, password, forwarded=None, headers=None):
    headers = dict(headers or {})
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return server.client().post("/v1/auth/login", {"email": email, "password": password}, headers=headers)


def fail(server, times, email=ADMIN, forwarded=None, headers=None):
    """`times` wrong passwords, each answered 401."""
    for number in range(times):
        reply = sign_in(server, email, "wrong-guess", forwarded, headers)
        assert reply.status == 401, (number, reply)


def assert_throttled(reply, retry_after):
    assert_error(reply, 429, "rate_limited")
    assert "token" not in (reply.json or {})
    assert reply.headers.get("Retry-After") == str(retry_after), reply.headers.get("Retry-After")


def test_ten_failures_lock_that_address_out_of_that_account_only(proxied):
    pin("2030-01-01T12:00:00Z")
    fail(proxied, 10, forwarded=ATTACKER)
    assert_throttled(sign_in(proxied, ADMIN, "eleventh-guess", ATTACKER), 15 * 60)
    assert_throttled(sign_in(proxied, ADMIN, ADMIN_PASSWORD, ATTACKER), 15 * 60)  # even the right one, from there
    # the owner, from anywhere else, is not locked out
    assert sign_in(proxied, ADMIN, ADMIN_PASSWORD, ELSEWHERE).status == 200
    assert sign_in(proxied, ADMIN, ADMIN_PASSWORD).status == 200  # the proxy itself, no header
    # and the attacker's address may still try other accounts (9 of its 100 left before this)
    assert sign_in(proxied, "someone@example.com", "wrong-guess", ATTACKER).status == 401


def test_a_success_clears_the_pair_but_not_the_address(proxied):
    pin("2030-01-01T12:00:00Z")
    fail(proxied, 9, forwarded=ELSEWHERE)
    assert sign_in(proxied, ADMIN, ADMIN_PASSWORD, ELSEWHERE).status == 200
    fail(proxied, 10, forwarded=ELSEWHERE)  # a fresh ten for the pair
    assert_throttled(sign_in(proxied, ADMIN, "wrong-guess", ELSEWHERE), 15 * 60)


def test_a_hundred_failures_from_one_address_lock_that_address_out(proxied):
    pin("2030-01-01T12:00:00Z")
    for number in range(100):
        assert sign_in(proxied, f"guess{number}@example.com", "wrong-guess", ATTACKER).status == 401, number
    assert_throttled(sign_in(proxied, "guess100@example.com", "wrong-guess", ATTACKER), 5 * 60)
    assert_throttled(sign_in(proxied, ADMIN, ADMIN_PASSWORD, ATTACKER), 5 * 60)
    # only that address
    assert sign_in(proxied, ADMIN, ADMIN_PASSWORD, ELSEWHERE).status == 200
    assert sign_in(proxied, "guess0@example.com", "wrong-guess", ELSEWHERE).status == 401
    # the window slides: two minutes on, three are left; at five, it is open again
    pin("2030-01-01T12:02:00Z")
    assert_throttled(sign_in(proxied, ADMIN, ADMIN_PASSWORD, ATTACKER), 3 * 60)
    pin("2030-01-01T12:05:00Z")
    assert sign_in(proxied, ADMIN, ADMIN_PASSWORD, ATTACKER).status == 200


def test_the_pair_window_expires_after_fifteen_minutes(proxied):
    pin("2030-01-01T12:00:00Z")
    fail(proxied, 10, forwarded=ATTACKER)
    pin("2030-01-01T12:14:59Z")
    assert_throttled(sign_in(proxied, ADMIN, ADMIN_PASSWORD, ATTACKER), 1)
    pin("2030-01-01T12:15:00Z")
    assert sign_in(proxied, ADMIN, ADMIN_PASSWORD, ATTACKER).status == 200


def test_failures_spread_over_time_count_only_inside_the_window(proxied):
    pin("2030-01-01T12:00:00Z")
    fail(proxied, 5, forwarded=ATTACKER)
    pin("2030-01-01T12:10:00Z")
    fail(proxied, 5, forwarded=ATTACKER)
    assert_throttled(sign_in(proxied, ADMIN, "wrong-guess", ATTACKER), 5 * 60)  # until the first five age out
    pin("2030-01-01T12:15:00Z")
    fail(proxied, 5, forwarded=ATTACKER)  # the first five have left the window
    assert_throttled(sign_in(proxied, ADMIN, "wrong-guess", ATTACKER), 10 * 60)


def test_forwarded_for_from_an_untrusted_peer_is_ignored(server):
    """The default server trusts no proxy: each guess claims another address
    and all of them count against the peer."""
    pin("2030-01-01T12:00:00Z")
    for number in range(10):
        assert sign_in(server, ADMIN, "wrong-guess", f"198.51.100.{number + 1}").status == 401, number
    assert_throttled(sign_in(server, ADMIN, ADMIN_PASSWORD, "192.0.2.200"), 15 * 60)


def test_only_x_forwarded_for_names_the_client(proxied):
    pin("2030-01-01T12:00:00Z")
    for number in range(10):
        rotating = {"X-Real-IP": f"198.51.100.{number + 1}", "Forwarded": f"for=198.51.100.{number + 1}"}
        assert sign_in(proxied, ADMIN, "wrong-guess", headers=rotating).status == 401, number
    assert_throttled(sign_in(proxied, ADMIN, ADMIN_PASSWORD, headers={"X-Real-IP": "192.0.2.200"}), 15 * 60)


def test_the_last_untrusted_forwarded_address_is_the_client(tmp_path):
    running = RunningServer(temp_db(tmp_path), env={"BILLING_TRUSTED_PROXIES": "127.0.0.1,10.0.0.0/8"})
    try:
        pin("2030-01-01T12:00:00Z")
        # the client made up the left-most entries; 10.1.2.3 is an inner trusted proxy
        for number in range(10):
            chain = f"192.0.2.{number + 1}, {ATTACKER}, 10.1.2.3"
            assert sign_in(running, ADMIN, "wrong-guess", chain).status == 401, number
        assert_throttled(sign_in(running, ADMIN, ADMIN_PASSWORD, f"{ATTACKER}, 10.9.9.9"), 15 * 60)
        assert_throttled(sign_in(running, ADMIN, ADMIN_PASSWORD, ATTACKER), 15 * 60)
        assert sign_in(running, ADMIN, ADMIN_PASSWORD, f"{ATTACKER}, {ELSEWHERE}").status == 200
    finally:
        running.stop()


def test_a_malformed_forwarded_entry_counts_against_the_proxy(proxied):
    """Nothing left of a bad entry can be vouched for: the attempt counts
    against the last trusted hop, here the peer."""
    pin("2030-01-01T12:00:00Z")
    for number, junk in enumerate(["unknown", "not-an-ip", "198.51.100.1:8080", "", "999.1.1.1",
                                   "198.51.100.1, garbage", "[::1]", "_hidden", "1.2.3", "x" * 50]):
        assert sign_in(proxied, ADMIN, "wrong-guess", junk).status == 401, (number, junk)
    assert_throttled(sign_in(proxied, ADMIN, ADMIN_PASSWORD), 15 * 60)  # the proxy's own count
    assert sign_in(proxied, ADMIN, ADMIN_PASSWORD, ELSEWHERE).status == 200


def test_unknown_and_disabled_users_run_scrypt_like_known_ones(server, monkeypatch):
    checked = []
    real = auth.verify_password

    def spy(password, stored):
        checked.append(stored)
        return real(password, stored)

    monkeypatch.setattr(auth, "verify_password", spy)
    assert sign_in(server, f"{unique('nobody')}@example.com", "whatever-guess").status == 401
    assert checked == [auth.DUMMY_HASH]
    assert auth.DUMMY_HASH.startswith(f"scrypt${auth.SCRYPT_N}${auth.SCRYPT_R}${auth.SCRYPT_P}$")
    email = f"{unique('off')}@example.com"
    user = server.admin.post("/v1/users", {"email": email, "name": "Off", "role": "viewer",
                                           "password": "long enough pw"}).json
    assert server.admin.patch(f"/v1/users/{user['id']}", {"disabled": True}).status == 200
    checked.clear()
    assert sign_in(server, email, "long enough pw").status == 401
    assert len(checked) == 1 and checked[0] != auth.DUMMY_HASH and checked[0].startswith("scrypt$")


def test_an_overlong_email_is_a_400_and_not_counted(proxied):
    pin("2030-01-01T12:00:00Z")
    for _ in range(12):
        reply = sign_in(proxied, "a" * 250 + "@example.com", "wrong-guess", ATTACKER)
        assert reply.status == 400 and reply.error_code == "validation_error", reply
    assert sign_in(proxied, ADMIN, ADMIN_PASSWORD, ATTACKER).status == 200


# -- a new password ends the other sessions -------------------------------------

def signed_in_user(server, role="viewer"):
    email = f"{unique('pw')}@example.com"
    user = server.admin.post("/v1/users", {"email": email, "name": "Pat", "role": role,
                                           "password": "first password"}).json
    tokens = [sign_in(server, email, "first password").json["token"] for _ in range(2)]
    return user, email, tokens


def test_a_password_set_by_an_admin_ends_every_session_of_the_user(server):
    user, email, tokens = signed_in_user(server)
    assert all(server.client(t).get("/v1/auth/me").status == 200 for t in tokens)
    reply = server.admin.patch(f"/v1/users/{user['id']}", {"password": "second password"})
    assert reply.status == 200, reply
    for token in tokens:
        assert_error(server.client(token).get("/v1/auth/me"), 401, "unauthenticated")
    assert sign_in(server, email, "first password").status == 401
    assert sign_in(server, email, "second password").status == 200
    entry = server.admin.get(f"/v1/audit-log?entity=user&entity_id={user['id']}&action=user.update").json["data"][0]
    assert entry["after"]["password_changed"] is True and entry["after"]["sessions_ended"] == 2
    assert "second password" not in reply.raw.decode() and "scrypt" not in str(entry)


def test_changing_ones_own_password_keeps_only_the_session_that_did_it(server):
    user, email, (mine, other) = signed_in_user(server, role="admin")
    me = server.client(mine)
    assert me.patch(f"/v1/users/{user['id']}", {"password": "second password"}).status == 200
    assert me.get("/v1/auth/me").status == 200
    assert_error(server.client(other).get("/v1/auth/me"), 401, "unauthenticated")


def test_other_changes_leave_sessions_alone(server):
    user, _email, tokens = signed_in_user(server)
    assert server.admin.patch(f"/v1/users/{user['id']}", {"name": "Patricia"}).status == 200
    assert all(server.client(t).get("/v1/auth/me").status == 200 for t in tokens)

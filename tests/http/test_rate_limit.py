"""§9 rate limit, through real HTTP: each customer credential (a
customer-scoped key or a `customer` user) may make BILLING_RATE_LIMIT
requests per second, in bursts of twice that; more is a 429 `rate_limited`
with Retry-After that changes nothing. Staff credentials are not limited.
The clock is pinned, so the bucket refills only when the test moves it."""

import pytest

from tests.harness import RunningServer, make_key, temp_db
from tests.http.helpers import assert_error, create_meter, event_count, make_customer, pin, unique

RATE = 5


@pytest.fixture
def limited(tmp_path):
    running = RunningServer(temp_db(tmp_path), env={"BILLING_RATE_LIMIT": str(RATE),
                                                    "BILLING_MAX_EVENT_AGE_DAYS": "0"})
    yield running
    running.stop()


def burst(client, path, count):
    return [client.get(path).status for _ in range(count)]


def assert_limited(reply):
    assert_error(reply, 429, "rate_limited")
    assert reply.headers.get("Retry-After") == "1", reply.headers.get("Retry-After")


def test_a_customer_key_gets_its_burst_then_429_then_recovers(limited):
    pin("2030-01-01T12:00:00Z")
    customer_id = make_customer(limited.admin)
    tenant = limited.client(make_key(limited, customer_id=customer_id))
    path = f"/v1/customers/{customer_id}"
    assert burst(tenant, path, 2 * RATE) == [200] * (2 * RATE)
    assert_limited(tenant.get(path))
    assert_limited(tenant.get("/v1/invoices"))  # every route, not one
    pin("2030-01-01T12:00:00.500Z")  # half a second: half the rate
    assert burst(tenant, path, 3) == [200, 200, 429]
    pin("2030-01-01T12:00:10Z")  # long idle: a full burst again, never more
    assert burst(tenant, path, 2 * RATE + 1) == [200] * (2 * RATE) + [429]


def test_staff_credentials_are_never_limited(limited):
    pin("2030-01-01T12:00:00Z")
    viewer = limited.client(make_key(limited, role="viewer"))
    assert burst(limited.admin, "/v1/customers", 60) == [200] * 60
    assert burst(viewer, "/v1/customers", 30) == [200] * 30


def test_each_credential_has_its_own_bucket(limited):
    pin("2030-01-01T12:00:00Z")
    customer_id = make_customer(limited.admin)
    first = limited.client(make_key(limited, customer_id=customer_id))
    second = limited.client(make_key(limited, customer_id=customer_id))
    assert burst(first, "/v1/invoices", 2 * RATE + 1)[-1] == 429
    assert burst(second, "/v1/invoices", 2 * RATE) == [200] * (2 * RATE)


def test_a_customer_user_is_limited_like_a_key(limited):
    pin("2030-01-01T12:00:00Z")
    customer_id = make_customer(limited.admin)
    email = f"{unique('portal')}@example.com"
    assert limited.admin.post("/v1/users", {"email": email, "name": "Portal", "role": "customer",
                                            "customer_id": customer_id, "password": "portal password"}).status == 201
    reply = limited.client().post("/v1/auth/login", {"email": email, "password": "portal password"})
    assert reply.status == 200, reply
    portal = limited.client(reply.json["token"])
    assert burst(portal, "/v1/auth/me", 2 * RATE) == [200] * (2 * RATE)
    assert_limited(portal.get("/v1/auth/me"))


def test_a_limited_request_changes_nothing(limited):
    pin("2030-01-01T12:00:00Z")
    customer_id = make_customer(limited.admin)
    create_meter(limited.admin)
    tenant = limited.client(make_key(limited, customer_id=customer_id))
    for number in range(2 * RATE):
        reply = tenant.post("/v1/events", {"id": f"e{number}", "meter": "api_calls", "quantity": 1,
                                           "customer_id": customer_id})
        assert reply.status == 201, reply
    assert_limited(tenant.post("/v1/events", {"id": "one-too-many", "meter": "api_calls", "quantity": 1,
                                              "customer_id": customer_id}))
    assert event_count(limited, customer_id) == 2 * RATE


def test_the_default_rate_of_a_hundred_allows_bursts_of_two_hundred(tmp_path):
    running = RunningServer(temp_db(tmp_path), env={"BILLING_RATE_LIMIT": "100"})
    try:
        pin("2030-01-01T12:00:00Z")
        tenant = running.client(make_key(running, customer_id=make_customer(running.admin)))
        assert burst(tenant, "/v1/invoices", 200) == [200] * 200
        assert_limited(tenant.get("/v1/invoices"))
    finally:
        running.stop()

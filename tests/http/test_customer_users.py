"""`customer` users (§9): created by admin or finance, signed in with a
password, with exactly the rights of a customer-scoped key (plus their own
objects); nothing staff-only is visible to them."""

import pytest

from tests.harness import make_key
from tests.http.helpers import assert_error, assert_validation, create_customer, create_meter, table_count

PASSWORD = "tenant password 1"


def new_customer_user(creator, customer_id, email=None):
    email = email or f"tenant{customer_id}@example.com"
    reply = creator.post("/v1/users", {"email": email, "name": "Tenant user", "role": "customer",
                                       "customer_id": customer_id, "password": PASSWORD})
    assert reply.status == 201, reply
    return reply.json


def sign_in(server, email):
    reply = server.client().post("/v1/auth/login", {"email": email, "password": PASSWORD})
    assert reply.status == 200, reply
    return server.client(reply.json["token"])


@pytest.fixture
def two_tenants(server):
    a = create_customer(server.admin, name="Alpha")
    b = create_customer(server.admin, name="Beta")
    user = new_customer_user(server.admin, a["id"])
    return a, b, user, sign_in(server, user["email"])


def test_admin_and_finance_create_customer_users_finance_nothing_else(server):
    customer = create_customer(server.admin)
    finance = server.client(make_key(server, role="finance"))
    user = new_customer_user(finance, customer["id"], "by-finance@example.com")
    assert user["role"] == "customer" and user["customer_id"] == customer["id"]
    for role in ("admin", "finance", "viewer", "customer_success", "sales", "ingest"):
        reply = finance.post("/v1/users", {"email": f"{role}@example.com", "name": "X", "role": role,
                                           "password": PASSWORD})
        assert_error(reply, 403, "forbidden")
    # finance sees, changes and removes customer users only
    assert [u["id"] for u in finance.get("/v1/users").json["data"]] == [user["id"]]
    assert finance.patch(f"/v1/users/{user['id']}", {"name": "Renamed"}).json["name"] == "Renamed"
    assert finance.delete(f"/v1/users/{user['id']}").status == 200
    assert table_count(server, "users") == 1  # the bootstrap admin


def test_customer_user_fields_are_checked(server):
    customer = create_customer(server.admin)
    base = {"email": "t@example.com", "name": "T", "password": PASSWORD}
    assert_validation(server.admin.post("/v1/users", {**base, "role": "customer"}), "customer_id")
    assert_validation(server.admin.post("/v1/users", {**base, "role": "customer", "customer_id": 999}), "customer_id")
    assert_validation(server.admin.post("/v1/users", {**base, "role": "customer", "customer_id": "1"}), "customer_id")
    assert_validation(server.admin.post("/v1/users", {**base, "role": "viewer", "customer_id": customer["id"]}),
                      "customer_id")
    assert table_count(server, "users") == 1
    user = new_customer_user(server.admin, customer["id"])
    # a customer user never becomes staff (nor is made a customer's approver)
    assert_validation(server.admin.patch(f"/v1/users/{user['id']}", {"role": "admin"}), "role")
    assert_validation(server.admin.patch(f"/v1/customers/{customer['id']}", {"csm_user_id": user["id"]}),
                      "csm_user_id")


def test_a_customer_user_has_the_rights_of_a_customer_key(server, two_tenants):
    a, b, user, tenant = two_tenants
    me = tenant.get("/v1/auth/me").json
    assert me["role"] == "customer" and me["customer_id"] == a["id"] and me["user"]["customer_id"] == a["id"]
    create_meter(server.admin, key="api_calls")
    assert tenant.get(f"/v1/customers/{a['id']}").status == 200
    assert tenant.get(f"/v1/customers/{a['id']}/usage").status == 200
    assert tenant.get(f"/v1/customers/{a['id']}/upcoming-invoice").status == 200
    assert [c["id"] for c in tenant.get("/v1/customers").json["data"]] == [a["id"]]
    assert tenant.post("/v1/events", {"meter": "api_calls", "quantity": 2}).status == 201
    for path in (f"/v1/customers/{b['id']}", f"/v1/customers/{b['id']}/usage",
                 f"/v1/customers/{b['id']}/upcoming-invoice", f"/v1/invoices?customer_id={b['id']}",
                 f"/v1/objects?customer_id={b['id']}"):
        assert_error(tenant.get(path), 404, "not_found")
    assert_error(tenant.post("/v1/events", {"meter": "api_calls", "customer_id": b["id"]}), 400, "validation_error")
    for path in ("/v1/plans", "/v1/audit-log", "/v1/users", "/v1/api-keys", "/v1/jobs", "/v1/storage",
                 "/v1/resources", "/v1/webhooks"):
        assert_error(tenant.get(path), 403, "forbidden")
    assert_error(tenant.post("/v1/customers", {"name": "X", "email": "x@example.com"}), 403, "forbidden")
    # its own objects: write, read, delete
    assert tenant.request("PUT", "/v1/objects/notes.txt", raw=b"hello").status == 201
    assert tenant.get("/v1/objects/notes.txt").raw == b"hello"
    assert tenant.delete("/v1/objects/notes.txt").status == 200


def test_holds_and_void_reasons_are_not_shown_to_customers(server, two_tenants):
    a, _, _, tenant = two_tenants
    plan = {"code": "base", "name": "Base", "currency": "USD", "base_fee": "10.00"}
    assert server.admin.post("/v1/plans", plan).status == 201
    assert server.admin.post("/v1/subscriptions", {"customer_id": a["id"], "plan": "base",
                                                   "start": "2025-08-01"}).status == 201
    created = server.admin.post("/v1/invoices/run", {"as_of": "2025-09-01T00:00:00Z"}).json["invoice_ids"]
    assert server.admin.post(f"/v1/invoices/{created[0]}/void", {"reason": "internal: duplicate of CRM deal"}).status == 200
    staff_view = server.admin.get(f"/v1/invoices/{created[0]}").json
    assert staff_view["void_reason"] == "internal: duplicate of CRM deal" and "on_hold" in staff_view
    for view in (tenant.get(f"/v1/invoices/{created[0]}").json, tenant.get("/v1/invoices").json["data"][0]):
        assert view["status"] == "void"
        assert "void_reason" not in view and "on_hold" not in view
    assert "duplicate of CRM" not in tenant.get("/v1/invoices").raw.decode()
    assert_error(tenant.get(f"/v1/invoices/{created[0]}/actions"), 403, "forbidden")


def test_a_customer_that_stores_objects_cannot_be_archived_or_deleted(server, two_tenants):
    a, b, user, tenant = two_tenants
    assert tenant.request("PUT", "/v1/objects/keep.bin", raw=b"x" * 10).status == 201
    assert_error(server.admin.patch(f"/v1/customers/{a['id']}", {"archived": True}), 409, "conflict")
    assert_error(server.admin.delete(f"/v1/customers/{a['id']}"), 409, "conflict")
    assert server.admin.get(f"/v1/customers/{a['id']}").json["archived"] is False
    assert tenant.delete("/v1/objects/keep.bin").status == 200
    assert server.admin.patch(f"/v1/customers/{a['id']}", {"archived": True}).json["archived"] is True
    # an archived customer stores nothing new
    assert_error(tenant.request("PUT", "/v1/objects/again.bin", raw=b"x"), 409, "conflict")
    # its storage history keeps it (and its timezone) for billing
    assert_error(server.admin.delete(f"/v1/customers/{a['id']}"), 409, "conflict")


def test_timezone_is_fixed_once_storage_is_metered(server, two_tenants):
    a, _, _, tenant = two_tenants
    assert tenant.request("PUT", "/v1/objects/keep.bin", raw=b"x").status == 201
    assert_error(server.admin.patch(f"/v1/customers/{a['id']}", {"timezone": "Europe/Berlin"}), 409, "conflict")


def test_disabling_or_deleting_a_customer_user_ends_its_access(server, two_tenants):
    a, _, user, tenant = two_tenants
    assert server.admin.patch(f"/v1/users/{user['id']}", {"disabled": True}).status == 200
    assert_error(tenant.get(f"/v1/customers/{a['id']}"), 401, "unauthenticated")
    assert_error(server.client().post("/v1/auth/login", {"email": user["email"], "password": PASSWORD}),
                 401, "unauthenticated")
    assert server.admin.delete(f"/v1/users/{user['id']}").status == 200

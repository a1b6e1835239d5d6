"""Invoice approval cannot be bypassed (§7, §9): whether an invoice needs
approval is fixed on the invoice when it is drafted; only an admin turns a
customer's approval off; a CSM is an enabled approver, checked as it is at the
moment of approving."""

import sqlite3

import pytest

from billing.store import migrations, schema_features
from tests.http.helpers import (assert_error, assert_validation, basic_plan, key_client, new_user, sign_in,
                                september_drafts, table_count)


@pytest.fixture
def setup(admin):
    basic_plan(admin)


def _customer_of(admin, invoice_id):
    return admin.get(f"/v1/invoices/{invoice_id}").json["customer_id"]


def test_finance_cannot_turn_approval_off_to_finalize_and_set_it_back(server, admin, setup):
    finance = key_client(server, "finance")
    (invoice_id,) = september_drafts(admin, 1, requires_approval=True)
    cid = _customer_of(admin, invoice_id)
    audit_before = table_count(server, "audit_log")
    assert_error(finance.patch(f"/v1/customers/{cid}", {"requires_approval": False}), 403, "forbidden")
    assert admin.get(f"/v1/customers/{cid}").json["requires_approval"] is True  # nothing changed
    assert table_count(server, "audit_log") == audit_before
    # the same value, or other fields, are still finance's to write
    assert finance.patch(f"/v1/customers/{cid}", {"requires_approval": True, "net_terms_days": 10}).status == 200
    pending = finance.post(f"/v1/invoices/{invoice_id}/finalize", {})
    assert (pending.status, pending.json["status"], pending.json["number"]) == (200, "pending_approval", None)


def test_approval_is_fixed_on_the_invoice_when_drafted(server, admin, setup):
    (invoice_id,) = september_drafts(admin, 1, requires_approval=True)
    cid = _customer_of(admin, invoice_id)
    assert admin.get(f"/v1/invoices/{invoice_id}").json["requires_approval"] is True
    # even an admin turning it off afterwards does not let this draft skip its approval
    assert admin.patch(f"/v1/customers/{cid}", {"requires_approval": False}).status == 200
    assert admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).json["status"] == "pending_approval"
    # a rejected draft keeps it; so does its reissue after a void
    sales = key_client(server, "sales")
    assert sales.post(f"/v1/invoices/{invoice_id}/reject", {"comment": "recheck"}).json["status"] == "draft"
    assert admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).json["status"] == "pending_approval"
    assert admin.post(f"/v1/invoices/{invoice_id}/void", {"reason": "wrong plan"}).status == 200
    again = admin.post(f"/v1/invoices/{invoice_id}/reissue", {}).json
    assert again["requires_approval"] is True
    assert admin.post(f"/v1/invoices/{again['id']}/finalize", {}).json["status"] == "pending_approval"


def test_turning_approval_on_applies_to_open_drafts(server, admin, setup):
    finance = key_client(server, "finance")
    plain, other = september_drafts(admin, 2)
    cid = _customer_of(admin, plain)
    # stricter is allowed to finance, and at once for the drafts already made
    assert finance.patch(f"/v1/customers/{cid}", {"requires_approval": True}).json["requires_approval"] is True
    assert finance.post(f"/v1/invoices/{plain}/finalize", {}).json["status"] == "pending_approval"
    assert finance.post(f"/v1/invoices/{other}/finalize", {}).json["status"] == "issued"  # another customer


def test_finance_may_create_customers_that_need_approval(server, admin, setup):
    finance = key_client(server, "finance")
    strict = finance.post("/v1/customers", {"name": "Strict", "email": "strict@example.com",
                                            "requires_approval": True})
    assert strict.status == 201 and strict.json["requires_approval"] is True
    lax = finance.post("/v1/customers", {"name": "Lax", "email": "lax@example.com", "requires_approval": False})
    assert lax.status == 201 and lax.json["requires_approval"] is False
    assert_error(finance.patch(f"/v1/customers/{strict.json['id']}", {"requires_approval": False}), 403, "forbidden")
    assert admin.patch(f"/v1/customers/{strict.json['id']}", {"requires_approval": False}).status == 200


@pytest.mark.parametrize("role", ["viewer", "finance", "ingest"])
def test_a_csm_must_be_a_user_who_may_approve(server, admin, setup, role):
    user = new_user(server, role)
    before = table_count(server, "customers")
    assert_validation(admin.post("/v1/customers", {"name": "A", "email": "a@example.com", "csm_user_id": user["id"]}),
                      "csm_user_id")
    assert table_count(server, "customers") == before
    cid = admin.post("/v1/customers", {"name": "B", "email": "b@example.com"}).json["id"]
    assert_validation(admin.patch(f"/v1/customers/{cid}", {"csm_user_id": user["id"]}), "csm_user_id")
    assert admin.get(f"/v1/customers/{cid}").json["csm_user_id"] is None


def test_a_disabled_user_cannot_be_made_csm(server, admin, setup):
    user = new_user(server, "customer_success")
    assert admin.patch(f"/v1/users/{user['id']}", {"disabled": True}).status == 200
    assert_validation(admin.post("/v1/customers", {"name": "A", "email": "a@example.com", "csm_user_id": user["id"]}),
                      "csm_user_id")
    for role in ("customer_success", "sales", "admin"):
        approver = new_user(server, role)
        reply = admin.post("/v1/customers", {"name": role, "email": f"{role}@example.com", "csm_user_id": approver["id"]})
        assert reply.status == 201 and reply.json["csm_user_id"] == approver["id"], reply


def test_a_csm_demoted_to_viewer_no_longer_approves(server, admin, setup):
    csm = new_user(server, "customer_success")
    (invoice_id,) = september_drafts(admin, 1, requires_approval=True, csm_user_id=csm["id"])
    as_csm = sign_in(server, csm)
    assert admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).json["status"] == "pending_approval"
    assert admin.patch(f"/v1/users/{csm['id']}", {"role": "viewer"}).status == 200
    assert_error(as_csm.post(f"/v1/invoices/{invoice_id}/approve", {}), 403, "forbidden")
    assert_error(as_csm.post(f"/v1/invoices/{invoice_id}/reject", {"comment": "no"}), 403, "forbidden")
    assert admin.get(f"/v1/invoices/{invoice_id}").json["status"] == "pending_approval"


def test_the_role_is_read_when_approving_not_remembered_from_sign_in(server, admin, setup):
    """The role changes in the database behind the server's back (no cache is
    cleared): the approval still sees the role as it is now."""
    csm = new_user(server, "customer_success")
    (invoice_id,) = september_drafts(admin, 1, requires_approval=True, csm_user_id=csm["id"])
    as_csm = sign_in(server, csm)
    assert as_csm.get("/v1/auth/me").json["role"] == "customer_success"  # resolved (and remembered) once
    assert admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).json["status"] == "pending_approval"
    for change in ("UPDATE users SET role = 'viewer' WHERE id = ?", "UPDATE users SET disabled = 1 WHERE id = ?"):
        conn = sqlite3.connect(server.app.config.db_path)
        with conn:
            conn.execute("UPDATE users SET role = 'customer_success', disabled = 0 WHERE id = ?", (csm["id"],))
            conn.execute(change, (csm["id"],))
        conn.close()
        assert_error(as_csm.post(f"/v1/invoices/{invoice_id}/approve", {}), 403, "forbidden")
    assert admin.get(f"/v1/invoices/{invoice_id}").json["status"] == "pending_approval"


def test_the_migration_gives_existing_invoices_their_customers_setting(tmp_path):
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path, isolation_level=None)
    kept_on_invoices = migrations.MIGRATIONS.index(schema_features.V11_INVOICE_APPROVAL)
    migrations.migrate(conn, migrations.MIGRATIONS[:kept_on_invoices])  # the schema just before
    for cid, strict in ((1, 1), (2, 0)):
        conn.execute("INSERT INTO customers (id, name, email, timezone, currency, tax_rate, net_terms_days,"
                     " requires_approval, created_at, updated_at) VALUES (?, 'C', ?, 'UTC', 'USD', '0', 30, ?, 0, 0)",
                     (cid, f"c{cid}@example.com", strict))
        conn.execute("INSERT INTO invoices (customer_id, status, currency, period_start, period_end,"
                     " period_start_date, period_end_date, subtotal, discount, tax, total, credits_applied,"
                     " amount_due, created_at, updated_at) VALUES (?, 'draft', 'USD', 0, 1, '2025-09-01',"
                     " '2025-10-01', 0, 0, 0, 0, 0, 0, 0, 0)", (cid,))
    migrations.migrate(conn)
    found = conn.execute("SELECT customer_id, requires_approval FROM invoices ORDER BY customer_id").fetchall()
    conn.close()
    assert found == [(1, 1), (2, 0)]

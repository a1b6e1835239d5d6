"""The audit log of invoice actions (§9): finalize, approve, reject, payments,
void, reissue and invoice runs — by a person over HTTP or by the scheduler
("system") — each with its actor, object and status and totals before and
after (amounts as strings), written with the change or not at all."""

from decimal import Decimal

import pytest

from tests.http.helpers import assert_error, basic_plan, key_client, pin, september_drafts, table_count


@pytest.fixture
def people(server, admin):
    basic_plan(admin)
    finance, sales = key_client(server, "finance"), key_client(server, "sales")
    return {"finance": finance, "sales": sales,
            "finance_label": f"key:{finance.get('/v1/auth/me').json['api_key']['id']}",
            "sales_label": f"key:{sales.get('/v1/auth/me').json['api_key']['id']}"}


def _entries(admin, **filters):
    query = "&".join(f"{k}={v}" for k, v in filters.items())
    reply = admin.get(f"/v1/audit-log?{query}&limit=1000")
    assert reply.status == 200, reply
    return list(reversed(reply.json["data"]))  # oldest first


def _no_floats(value):
    if isinstance(value, dict):
        return all(_no_floats(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_floats(v) for v in value)
    return not isinstance(value, (float, Decimal))


def test_each_invoice_action_is_audited_with_actor_object_and_amounts(server, admin, people):
    finance, sales = people["finance"], people["sales"]
    plain, strict = september_drafts(admin, 1)[0], september_drafts(admin, 1, requires_approval=True)[0]
    assert finance.post(f"/v1/invoices/{strict}/finalize", {}).json["status"] == "pending_approval"
    assert sales.post(f"/v1/invoices/{strict}/reject", {"comment": "usage looks wrong"}).status == 200
    assert finance.post(f"/v1/invoices/{strict}/finalize", {}).status == 200
    assert sales.post(f"/v1/invoices/{strict}/approve", {}).json["status"] == "issued"
    assert finance.post(f"/v1/invoices/{plain}/finalize", {}).json["status"] == "issued"
    payment = finance.post(f"/v1/invoices/{plain}/payments", {"amount": "10.00", "method": "card"}).json["payment"]
    assert finance.post(f"/v1/invoices/{strict}/void", {"reason": "wrong plan"}).status == 200
    new = finance.post(f"/v1/invoices/{strict}/reissue", {}).json

    fin, sal = people["finance_label"], people["sales_label"]
    strict_log = [(e["action"], e["actor"], e["before"] and e["before"]["status"], e["after"]["status"])
                  for e in _entries(admin, entity="invoice", entity_id=strict)]
    assert strict_log == [
        ("invoice.finalize", fin, "draft", "pending_approval"), ("invoice.reject", sal, "pending_approval", "draft"),
        ("invoice.finalize", fin, "draft", "pending_approval"), ("invoice.approve", sal, "pending_approval", "issued"),
        ("invoice.void", fin, "issued", "void"), ("invoice.reissue", fin, "void", "void")]
    plain_log = _entries(admin, entity="invoice", entity_id=plain)
    assert [(e["action"], e["actor"], e["role"]) for e in plain_log] == [
        ("invoice.finalize", fin, "finance"), ("invoice.payment", fin, "finance")]
    issued, paid = plain_log
    assert (issued["before"]["total"], issued["after"]["number"], issued["after"]["amount_due"]) == \
        ("110.00", "INV-000002", "110.00")
    assert (paid["before"]["amount_paid"], paid["after"]["amount_paid"], paid["after"]["payment_status"],
            paid["after"]["payment_id"]) == ("0.00", "10.00", "partially_paid", payment["id"])
    assert all(e["entity_id"] == str(plain) and e["request_id"] for e in plain_log)
    (taken,) = _entries(admin, entity="payment", entity_id=payment["id"])
    assert (taken["action"], taken["actor"], taken["after"]["amount"], taken["after"]["invoice_id"]) == \
        ("payment.create", fin, "10.00", plain)
    (created,) = _entries(admin, entity="invoice", entity_id=new["id"])
    assert (created["action"], created["after"]["status"], created["after"]["replaces"]) == \
        ("invoice.create", "draft", strict)
    assert _entries(admin, entity="invoice", entity_id=strict)[-1]["after"]["reissued_as"] == new["id"]
    every = _entries(admin, entity="invoice") + _entries(admin, entity="payment")
    assert len(every) == len(strict_log) + len(plain_log) + 2 and all(_no_floats(e) for e in every)


def test_invoice_runs_by_a_person_and_by_the_scheduler(server, admin, people):
    finance = people["finance"]
    first = september_drafts(admin, 1)  # by the admin key
    pin("2025-10-01T07:00:00Z")
    assert finance.post("/v1/invoices/run", {}).json["created"] == 0
    runs = _entries(admin, entity="invoice_run")
    assert [(e["action"], e["actor"], e["entity_id"], e["after"]["created"], e["after"]["invoice_ids"])
            for e in runs] == [("invoice_run.run", "key:1", "2025-10-01T00:00:00Z", 1, first),
                               ("invoice_run.run", people["finance_label"], "2025-10-01T07:00:00Z", 0, [])]
    # the scheduler: a run that drafts something, and the issue past the grace period, by "system"
    cid = admin.post("/v1/customers", {"name": "Late", "email": "late@example.com"}).json["id"]
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "basic", "start": "2025-10-01"}).status == 201
    pin("2025-11-03T00:00:00Z")
    job = server.app.scheduler.run_once()
    assert job["outcome"] == "ok" and job["details"]["drafts_created"] == 2
    system = _entries(admin, actor="system")
    assert [(e["action"], e["entity"]) for e in system] == [
        ("invoice_run.run", "invoice_run"), ("invoice.issue", "invoice"), ("invoice.issue", "invoice"),
        ("invoice.issue", "invoice")]
    assert system[0]["after"]["created"] == 2 and system[0]["role"] is None and system[0]["request_id"] is None
    assert sorted(int(e["entity_id"]) for e in system[1:]) == sorted(first + system[0]["after"]["invoice_ids"])
    # a scheduler run that drafts nothing changed nothing: no entry
    server.app.scheduler.run_once()
    assert len(_entries(admin, actor="system")) == len(system)


def test_a_refused_action_leaves_no_audit_entry(server, admin, people):
    finance, sales = people["finance"], people["sales"]
    (invoice_id,) = september_drafts(admin, 1, requires_approval=True)
    assert finance.post(f"/v1/invoices/{invoice_id}/finalize", {}).status == 200
    count = table_count(server, "audit_log")
    assert_error(finance.post(f"/v1/invoices/{invoice_id}/approve", {}), 403, "forbidden")
    assert_error(sales.post(f"/v1/invoices/{invoice_id}/reject", {}), 400, "validation_error")
    assert_error(finance.post(f"/v1/invoices/{invoice_id}/payments", {"amount": "1.00"}), 409, "conflict")
    assert_error(finance.post(f"/v1/invoices/{invoice_id}/reissue", {}), 409, "conflict")
    assert table_count(server, "audit_log") == count

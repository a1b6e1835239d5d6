"""The invoice lifecycle (§7) and its roles (§9): finalize, approval, payments,
void and reissue, the action history, gapless numbers, immutability."""

import sqlite3
import threading

import pytest

from tests.http.helpers import (assert_error, assert_validation, basic_plan, key_client, new_user, pin, sign_in,
                                user_token)
from tests.http.helpers import september_drafts as drafts


@pytest.fixture
def setup(admin):
    basic_plan(admin)


def test_finalize_issues_with_number_dates_and_credits(server, admin, setup):
    cid = admin.post("/v1/customers", {"name": "Net15", "email": "n15@example.com", "net_terms_days": 15}).json["id"]
    assert admin.post(f"/v1/customers/{cid}/credits", {"amount": "30.00", "reason": "goodwill"}).status == 201
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "basic", "start": "2025-09-01"}).status == 201
    pin("2025-10-02T10:00:00Z")
    invoice_id = admin.post("/v1/invoices/run", {}).json["invoice_ids"][0]
    draft = admin.get(f"/v1/invoices/{invoice_id}").json
    assert (draft["status"], draft["number"], draft["credits_applied"], draft["amount_due"]) == \
        ("draft", None, "30.00", "70.00")  # a preview: the ledger is not debited yet
    assert admin.get(f"/v1/customers/{cid}/credits").json["balance"] == "30.00"
    reply = admin.post(f"/v1/invoices/{invoice_id}/finalize", {"comment": "looks right"})
    assert reply.status == 200, reply
    issued = reply.json
    assert (issued["status"], issued["payment_status"], issued["number"]) == ("issued", "unpaid", "INV-000001")
    assert (issued["issued_at"], issued["due_at"]) == ("2025-10-02T10:00:00Z", "2025-10-17T10:00:00Z")
    assert (issued["total"], issued["credits_applied"], issued["amount_due"]) == ("100.00", "30.00", "70.00")
    assert admin.get(f"/v1/customers/{cid}/credits").json["balance"] == "0.00"
    again = admin.post(f"/v1/invoices/{invoice_id}/issue", {})
    assert_error(again, 409, "conflict")
    assert "issued" in again.json["error"]["message"]


def test_zero_due_is_paid_at_issue_and_negative_total_leaves_credit(server, admin, setup):
    cid = admin.post("/v1/customers", {"name": "Prepaid", "email": "pp@example.com"}).json["id"]
    assert admin.post(f"/v1/customers/{cid}/credits", {"amount": "500.00", "reason": "prepaid"}).status == 201
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "basic", "start": "2025-09-01"}).status == 201
    pin("2025-10-02T00:00:00Z")
    invoice_id = admin.post("/v1/invoices/run", {}).json["invoice_ids"][0]
    issued = admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).json
    assert (issued["status"], issued["payment_status"], issued["amount_due"], issued["credits_applied"]) == \
        ("paid", "paid", "0.00", "100.00")
    assert admin.get(f"/v1/customers/{cid}/credits").json["balance"] == "400.00"


def test_credits_are_debited_in_issue_order(server, admin, setup):
    first, second = drafts(admin, 1), None
    cid = admin.get(f"/v1/invoices/{first[0]}").json["customer_id"]
    # a second period for the same customer
    pin("2025-11-01T06:00:00Z")
    second = admin.post("/v1/invoices/run", {}).json["invoice_ids"][0]
    assert admin.post(f"/v1/customers/{cid}/credits", {"amount": "150.00", "reason": "promo"}).status == 201
    later = admin.post(f"/v1/invoices/{second}/finalize", {}).json   # issued first: takes 100.00
    earlier = admin.post(f"/v1/invoices/{first[0]}/finalize", {}).json  # then what is left: 50.00
    assert (later["credits_applied"], later["amount_due"], later["status"]) == ("100.00", "0.00", "paid")
    assert (earlier["credits_applied"], earlier["amount_due"]) == ("50.00", "60.00")
    assert (later["number"], earlier["number"]) == ("INV-000001", "INV-000002")


def test_approval_flow_with_roles_history_and_hold(server, admin, setup):
    finance, sales, viewer = (key_client(server, role) for role in ("finance", "sales", "viewer"))
    (invoice_id,) = drafts(admin, 1, requires_approval=True)
    success, success_id = user_token(server, "customer_success")
    pending = finance.post(f"/v1/invoices/{invoice_id}/finalize", {"comment": "please check"})
    assert pending.status == 200 and pending.json["status"] == "pending_approval" and pending.json["number"] is None
    assert_error(finance.post(f"/v1/invoices/{invoice_id}/approve", {}), 403, "forbidden")  # finance cannot approve
    assert_error(viewer.post(f"/v1/invoices/{invoice_id}/approve", {}), 403, "forbidden")
    assert_error(success.post(f"/v1/invoices/{invoice_id}/finalize", {}), 403, "forbidden")  # nor issue
    assert_validation(sales.post(f"/v1/invoices/{invoice_id}/reject", {}), "comment")     # a reason is required
    rejected = sales.post(f"/v1/invoices/{invoice_id}/reject", {"comment": "wrong usage"})
    assert rejected.status == 200 and (rejected.json["status"], rejected.json["on_hold"]) == ("draft", True)
    # the scheduler leaves a rejected draft alone, long after its grace period
    pin("2025-12-01T00:00:00Z")
    server.app.scheduler.issue_due()
    assert admin.get(f"/v1/invoices/{invoice_id}").json["status"] == "draft"
    success, success_id = user_token(server, "customer_success")  # sessions expire: a fresh sign-in
    assert_error(success.post(f"/v1/invoices/{invoice_id}/approve", {}), 409, "conflict")
    assert finance.post(f"/v1/invoices/{invoice_id}/finalize", {}).json["status"] == "pending_approval"
    approved = success.post(f"/v1/invoices/{invoice_id}/approve", {"comment": "ok now"})
    assert approved.status == 200 and approved.json["status"] == "issued" and approved.json["number"] == "INV-000001"
    history = admin.get(f"/v1/invoices/{invoice_id}/actions").json["data"]
    assert [(a["action"], a["from_status"], a["to_status"], a["role"], a["comment"]) for a in history] == [
        ("create", None, "draft", "admin", None),
        ("finalize", "draft", "pending_approval", "finance", "please check"),
        ("reject", "pending_approval", "draft", "sales", "wrong usage"),
        ("finalize", "draft", "pending_approval", "finance", None),
        ("approve", "pending_approval", "issued", "customer_success", "ok now")]
    assert history[-1]["actor"] == f"user:{success_id}" and history[-1]["actor_name"] == "customer_success person"
    assert [a["at"] for a in history] == sorted(a["at"] for a in history)


def test_the_customers_csm_approves_while_its_role_may(server, admin, setup):
    csm = new_user(server, "customer_success")
    (invoice_id,) = drafts(admin, 1, requires_approval=True, csm_user_id=csm["id"])
    as_csm = sign_in(server, csm)
    assert admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).json["status"] == "pending_approval"
    approved = as_csm.post(f"/v1/invoices/{invoice_id}/approve", {"comment": "as CSM"})
    assert approved.status == 200 and approved.json["status"] == "issued"
    assert admin.get(f"/v1/invoices/{invoice_id}/actions").json["data"][-1]["role"] == "customer_success"


def test_numbers_have_no_gaps_under_concurrent_issues(server, admin, setup):
    ids = drafts(admin, 24)
    results, errors = [], []

    def issue(invoice_id):
        client = server.client(admin.token)
        reply = client.post(f"/v1/invoices/{invoice_id}/finalize", {})
        (results if reply.status == 200 else errors).append(reply.json)
        client.close()

    # every invoice finalized twice at once: one wins, one gets 409
    threads = [threading.Thread(target=issue, args=(i,)) for i in ids + ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 24 and len(errors) == 24
    assert all(e["error"]["code"] == "conflict" for e in errors)
    assert sorted(r["number"] for r in results) == [f"INV-{n:06d}" for n in range(1, 25)]
    # a void keeps its number; the next issue takes the next one
    assert admin.post(f"/v1/invoices/{ids[0]}/void", {"reason": "duplicate"}).json["number"] in \
        {r["number"] for r in results}


def test_payments_partial_then_paid_overpay_and_overdue(server, admin, setup):
    (invoice_id,) = drafts(admin, 1)
    assert_error(admin.post(f"/v1/invoices/{invoice_id}/payments", {"amount": "10.00"}), 409, "conflict")  # draft
    pin("2025-10-02T00:00:00Z")
    issued = admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).json
    assert issued["amount_due"] == "110.00" and issued["due_at"] == "2025-11-01T00:00:00Z"
    for bad in ({"amount": "0"}, {"amount": "-5.00"}, {"amount": 5}, {"amount": "1.234"}, {},
                {"amount": "5.00", "method": 7}, {"amount": "5.00", "extra": 1}):
        assert admin.post(f"/v1/invoices/{invoice_id}/payments", bad).status == 400, bad
    assert_error(admin.post(f"/v1/invoices/{invoice_id}/payments", {"amount": "110.01"}), 409, "conflict")
    viewer = key_client(server, "viewer")
    assert_error(viewer.post(f"/v1/invoices/{invoice_id}/payments", {"amount": "1.00"}), 403, "forbidden")
    first = admin.post(f"/v1/invoices/{invoice_id}/payments", {"amount": "40.00", "method": "card", "reference": "ch_1"})
    assert first.status == 201
    assert first.json["payment"]["amount"] == "40.00" and first.json["payment"]["reference"] == "ch_1"
    assert (first.json["invoice"]["payment_status"], first.json["invoice"]["status"],
            first.json["invoice"]["amount_paid"], first.json["invoice"]["balance_due"]) == \
        ("partially_paid", "issued", "40.00", "70.00")
    # overdue after the due date, in the list and its filter
    pin("2025-11-01T00:00:01Z")
    assert admin.get(f"/v1/invoices/{invoice_id}").json["overdue"] is True
    assert [i["id"] for i in admin.get("/v1/invoices?overdue=true").json["data"]] == [invoice_id]
    assert admin.get("/v1/invoices?overdue=false").json["data"] == []
    assert_error(admin.post(f"/v1/invoices/{invoice_id}/payments", {"amount": "70.01"}), 409, "conflict")
    paid = admin.post(f"/v1/invoices/{invoice_id}/payments", {"amount": "70.00", "method": "wire"}).json["invoice"]
    assert (paid["status"], paid["payment_status"], paid["overdue"], paid["balance_due"]) == \
        ("paid", "paid", False, "0.00")
    assert admin.get("/v1/invoices?overdue=true").json["data"] == []
    assert_error(admin.post(f"/v1/invoices/{invoice_id}/payments", {"amount": "1.00"}), 409, "conflict")
    payments = admin.get(f"/v1/invoices/{invoice_id}/payments").json["data"]
    assert [p["amount"] for p in payments] == ["40.00", "70.00"]
    actions = [a["action"] for a in admin.get(f"/v1/invoices/{invoice_id}/actions").json["data"]]
    assert actions == ["create", "finalize", "payment", "payment"]


def test_void_gives_credits_back_and_reissue_makes_a_new_draft(server, admin, setup):
    (invoice_id,) = drafts(admin, 1)
    cid = admin.get(f"/v1/invoices/{invoice_id}").json["customer_id"]
    assert admin.post(f"/v1/customers/{cid}/credits", {"amount": "25.00", "reason": "promo"}).status == 201
    issued = admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).json
    assert issued["credits_applied"] == "25.00"
    assert admin.get(f"/v1/customers/{cid}/credits").json["balance"] == "0.00"
    assert_validation(admin.post(f"/v1/invoices/{invoice_id}/void", {}), "reason")
    assert_error(admin.post(f"/v1/invoices/{invoice_id}/reissue", {}), 409, "conflict")  # not void
    voided = admin.post(f"/v1/invoices/{invoice_id}/void", {"reason": "wrong plan"}).json
    assert (voided["status"], voided["void_reason"], voided["number"]) == ("void", "wrong plan", "INV-000001")
    assert admin.get(f"/v1/customers/{cid}/credits").json["balance"] == "25.00"
    assert_error(admin.post(f"/v1/invoices/{invoice_id}/void", {"reason": "again"}), 409, "conflict")
    # the run does not re-create a voided period; reissue does, once
    assert admin.post("/v1/invoices/run", {}).json["created"] == 0
    reissued = admin.post(f"/v1/invoices/{invoice_id}/reissue", {})
    assert reissued.status == 201
    new = reissued.json
    assert (new["status"], new["revision"], new["local_period"], new["total"]) == \
        ("draft", 1, voided["local_period"], "110.00")
    assert_error(admin.post(f"/v1/invoices/{invoice_id}/reissue", {}), 409, "conflict")
    assert admin.post(f"/v1/invoices/{new['id']}/finalize", {}).json["number"] == "INV-000002"


def test_void_refused_once_paid_and_allowed_from_draft_and_pending(server, admin, setup):
    a, b, c = drafts(admin, 3, requires_approval=False)
    assert admin.post(f"/v1/invoices/{a}/void", {"reason": "test customer"}).json["status"] == "void"
    admin.post(f"/v1/invoices/{b}/finalize", {})
    assert admin.post(f"/v1/invoices/{b}/payments", {"amount": "1.00"}).status == 201
    refused = admin.post(f"/v1/invoices/{b}/void", {"reason": "nope"})
    assert_error(refused, 409, "conflict")
    assert "credit" in refused.json["error"]["message"]
    cid = admin.get(f"/v1/invoices/{c}").json["customer_id"]
    assert admin.patch(f"/v1/customers/{cid}", {"requires_approval": True}).status == 200
    assert admin.post(f"/v1/invoices/{c}/finalize", {}).json["status"] == "pending_approval"
    assert admin.post(f"/v1/invoices/{c}/void", {"reason": "cancelled deal"}).json["status"] == "void"


def _raw_invoice(server, invoice_id):
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        return (conn.execute("SELECT * FROM invoices WHERE id = ?", (invoice_id,)).fetchall(),
                conn.execute("SELECT * FROM invoice_lines WHERE invoice_id = ? ORDER BY position",
                             (invoice_id,)).fetchall())
    finally:
        conn.close()


def test_an_issued_invoice_never_changes(server, admin, setup):
    (invoice_id,) = drafts(admin, 1)
    issued = admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).json
    cid, sub = issued["customer_id"], issued["subscription_id"]
    before_http = admin.get(f"/v1/invoices/{invoice_id}").raw
    before_pdf = admin.get(f"/v1/invoices/{invoice_id}.pdf").raw
    before_db = _raw_invoice(server, invoice_id)
    success = key_client(server, "customer_success")
    attempts = [
        admin.post(f"/v1/invoices/{invoice_id}/finalize", {}),
        admin.post(f"/v1/invoices/{invoice_id}/issue", {}),
        success.post(f"/v1/invoices/{invoice_id}/approve", {"comment": "x"}),
        success.post(f"/v1/invoices/{invoice_id}/reject", {"comment": "x"}),
        admin.post(f"/v1/invoices/{invoice_id}/reissue", {}),
        admin.post(f"/v1/invoices/{invoice_id}/payments", {"amount": "999.00"}),
        admin.post("/v1/invoices/run", {}),
        admin.post("/v1/invoices/run", {"as_of": "2025-10-01T00:00:00Z"}),
        admin.post(f"/v1/subscriptions/{sub}/cancel", {"at": "2025-09-15"}),
        admin.post(f"/v1/subscriptions/{sub}/change-plan", {"plan": "basic", "at": "2025-09-20"}),
        admin.delete(f"/v1/customers/{cid}"),
        admin.patch(f"/v1/customers/{cid}", {"tax_rate": "20", "net_terms_days": 5, "name": "Renamed"}),
        admin.patch("/v1/plans/basic", {"base_fee": "1.00"}),
        admin.post(f"/v1/customers/{cid}/credits", {"amount": "5.00", "reason": "later credit"}),
        admin.post("/v1/events/batch", {"customer_id": cid, "events": [  # a late event: billed next time
            {"id": "late-1", "meter": "api_calls", "quantity": 500, "timestamp": "2025-09-20T00:00:00Z"}]}),
        admin.delete(f"/v1/customers/{cid}/events/late-1"),
    ]
    statuses = [r.status for r in attempts]
    assert statuses[:6] == [409, 409, 409, 409, 409, 409], statuses
    assert statuses[8:10] == [409, 409] and statuses[10] == 409, statuses
    assert statuses[15] == 409, attempts[15]
    server.app.scheduler.run_once()
    assert admin.get(f"/v1/invoices/{invoice_id}").raw == before_http
    assert admin.get(f"/v1/invoices/{invoice_id}.pdf").raw == before_pdf  # addressed as it was issued
    assert _raw_invoice(server, invoice_id) == before_db


def test_unknown_invoice_and_foreign_customer_key(server, admin, setup):
    (invoice_id,) = drafts(admin, 1)
    other = admin.post("/v1/customers", {"name": "Other", "email": "other@example.com"}).json["id"]
    key = admin.post("/v1/api-keys", {"name": "other", "customer_id": other}).json["key"]
    scoped = server.client(key)
    for path in (f"/v1/invoices/{invoice_id}", f"/v1/invoices/{invoice_id}.pdf",
                 f"/v1/invoices/{invoice_id}/payments", "/v1/invoices/999999"):
        assert_error(scoped.get(path), 404, "not_found")
    # the history holds internal comments: staff only
    assert_error(scoped.get(f"/v1/invoices/{invoice_id}/actions"), 403, "forbidden")
    assert_error(admin.post("/v1/invoices/999999/finalize", {}), 404, "not_found")
    assert_error(admin.post("/v1/invoices/999999/void", {"reason": "x"}), 404, "not_found")


def test_scheduler_issues_after_the_grace_period(server, admin, setup):
    plain, approval = drafts(admin, 1)[0], drafts(admin, 1, requires_approval=True)[0]
    pin("2025-10-01T23:59:59Z")  # September ended 2025-10-01T00:00Z; grace 24 h
    assert server.app.scheduler.issue_due() == {"issued": 0, "pending_approval": 0}
    pin("2025-10-02T00:00:00Z")
    assert server.app.scheduler.issue_due() == {"issued": 1, "pending_approval": 1}
    issued, pending = admin.get(f"/v1/invoices/{plain}").json, admin.get(f"/v1/invoices/{approval}").json
    assert (issued["status"], issued["number"], issued["issued_at"]) == ("issued", "INV-000001", "2025-10-02T00:00:00Z")
    assert (pending["status"], pending["number"]) == ("pending_approval", None)
    history = admin.get(f"/v1/invoices/{approval}/actions").json["data"]
    assert [(a["action"], a["actor"], a["role"]) for a in history][-1] == ("submit_for_approval", "scheduler", "system")
    assert server.app.scheduler.issue_due() == {"issued": 0, "pending_approval": 0}


def test_grace_period_is_configurable(tmp_path):
    from tests.harness import RunningServer, temp_db
    running = RunningServer(temp_db(tmp_path), env={"BILLING_MAX_EVENT_AGE_DAYS": "0",
                                                    "BILLING_GRACE_PERIOD_HOURS": "0"})
    try:
        admin = running.admin
        basic_plan(admin)
        (invoice_id,) = drafts(admin, 1)
        pin("2025-10-01T00:00:00Z")
        assert running.app.scheduler.issue_due()["issued"] == 1
        assert admin.get(f"/v1/invoices/{invoice_id}").json["status"] == "issued"
    finally:
        running.stop()


def test_review_fixes_void_reissue_hold_and_ids(server, admin, setup):
    # an id of thousands of digits is simply not found
    assert_error(admin.get("/v1/invoices/" + "9" * 5000), 404, "not_found")
    assert_error(admin.post("/v1/invoices/" + "9" * 5000 + "/void", {"reason": "x"}), 404, "not_found")
    # settled by credits: `paid` with nothing paid can still be voided, and the credits come back
    (invoice_id,) = drafts(admin, 1)
    cid = admin.get(f"/v1/invoices/{invoice_id}").json["customer_id"]
    assert admin.post(f"/v1/customers/{cid}/credits", {"amount": "500.00", "reason": "prepaid"}).status == 201
    issued = admin.post(f"/v1/invoices/{invoice_id}/finalize", {}).json
    assert (issued["status"], issued["amount_paid"], issued["credits_applied"]) == ("paid", "0.00", "110.00")
    assert admin.post(f"/v1/invoices/{invoice_id}/void", {"reason": "wrong month"}).json["status"] == "void"
    assert admin.get(f"/v1/customers/{cid}/credits").json["balance"] == "500.00"
    # a reissued draft waits on hold: the scheduler does not issue it behind the corrector's back
    again = admin.post(f"/v1/invoices/{invoice_id}/reissue", {}).json
    assert again["on_hold"] is True
    pin("2026-01-01T00:00:00Z")
    server.app.scheduler.issue_due()
    assert admin.get(f"/v1/invoices/{again['id']}").json["status"] == "draft"
    from billing.api import lifecycle
    from billing.errors import Conflict
    with pytest.raises(Conflict):  # the scheduler's own path refuses a draft on hold, whatever raced
        with server.app.db.transaction() as conn:
            lifecycle.finalize_row(server.app, conn, again["id"], None, automatic=True)
    assert admin.post(f"/v1/invoices/{again['id']}/finalize", {}).json["status"] == "paid"  # a person may


def test_finance_is_never_the_csm_and_never_approves(server, admin, setup):
    fin = new_user(server, "finance")
    reply = admin.post("/v1/customers", {"name": "Fin CSM", "email": "fin-csm@example.com", "csm_user_id": fin["id"]})
    assert_validation(reply, "csm_user_id")
    (invoice_id,) = drafts(admin, 1, requires_approval=True)
    finance = sign_in(server, fin)
    assert finance.post(f"/v1/invoices/{invoice_id}/finalize", {}).json["status"] == "pending_approval"
    assert_error(finance.post(f"/v1/invoices/{invoice_id}/approve", {}), 403, "forbidden")


def test_listed_drafts_are_re_rated(server, admin, setup):
    (invoice_id,) = drafts(admin, 1)
    cid = admin.get(f"/v1/invoices/{invoice_id}").json["customer_id"]
    reply = admin.post("/v1/events/batch", {"customer_id": cid, "events": [
        {"meter": "api_calls", "quantity": 500, "timestamp": "2025-09-12T00:00:00Z"}]})
    assert reply.status == 200
    listed = admin.get("/v1/invoices?status=draft").json["data"]
    assert [(i["id"], i["total"]) for i in listed] == [(invoice_id, "115.00")]  # 1,500 calls × 0.01 + 100.00

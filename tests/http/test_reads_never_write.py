"""Reads never write (§12): a draft shown by any GET is re-rated in memory,
never stored; it is stored by an action (finalize) or by the scheduler, with
the figures a read just showed."""

import sqlite3

import pytest

from tests.http.helpers import WriteCounter, basic_plan, key_client, pin, september_drafts


@pytest.fixture
def drafted(server, admin):
    """Two September drafts (110.00 each as drafted), then 500 more calls for
    the first customer: its draft shows 115.00 while 110.00 is stored."""
    basic_plan(admin)
    first, second = september_drafts(admin, 2)
    cid = admin.get(f"/v1/invoices/{first}").json["customer_id"]
    reply = admin.post("/v1/events/batch", {"customer_id": cid, "events": [
        {"meter": "api_calls", "quantity": 500, "timestamp": "2025-09-12T00:00:00Z"}]})
    assert reply.status == 200
    return first, second, cid


def _stored(server, invoice_id):
    conn = sqlite3.connect(server.app.config.db_path)
    try:
        total = conn.execute("SELECT total FROM invoices WHERE id = ?", (invoice_id,)).fetchone()[0]
        lines = conn.execute("SELECT count(*) FROM invoice_lines WHERE invoice_id = ?", (invoice_id,)).fetchone()[0]
        return total, lines
    finally:
        conn.close()


def test_two_hundred_reads_of_drafts_start_no_write(server, admin, drafted):
    first, second, cid = drafted
    own = key_client(server, customer_id=cid)
    viewer = key_client(server, "viewer")
    stored = _stored(server, first)
    reads = [
        (admin, f"/v1/invoices/{first}"), (viewer, "/v1/invoices?status=draft"), (admin, "/v1/invoices"),
        (own, f"/v1/invoices/{first}"), (own, "/v1/invoices"), (own, f"/v1/customers/{cid}/upcoming-invoice"),
        (admin, f"/v1/invoices/{first}.pdf"), (viewer, "/v1/invoices.csv"), (own, f"/v1/invoices/{first}.pdf"),
        (admin, f"/v1/invoices/{second}/payments"),
    ]
    with WriteCounter(server) as writes:
        for n in range(200):
            client, path = reads[n % len(reads)]
            reply = client.get(path)
            assert reply.status == 200, (path, reply)
    assert writes == []
    assert _stored(server, first) == stored == (11000, 2)
    # and every one of them showed the draft as it is now
    assert admin.get(f"/v1/invoices/{first}").json["total"] == "115.00"
    assert own.get(f"/v1/invoices/{first}").json["total"] == "115.00"
    listed = {i["id"]: i["total"] for i in viewer.get("/v1/invoices?status=draft").json["data"]}
    assert listed == {first: "115.00", second: "110.00"}
    csv_text = viewer.get("/v1/invoices.csv").raw.decode()
    assert f"\r\n{first},," in csv_text and ",115.00," in csv_text


def test_finalize_issues_exactly_what_a_read_just_showed(server, admin, drafted):
    first, _, _ = drafted
    shown = admin.get(f"/v1/invoices/{first}").json
    issued = admin.post(f"/v1/invoices/{first}/finalize", {}).json
    assert issued["status"] == "issued"
    for name in ("subtotal", "discount", "tax", "total", "amount_due", "lines"):
        assert issued[name] == shown[name], name
    assert shown["total"] == "115.00" and _stored(server, first) == (11500, 2)


def test_the_scheduler_stores_the_re_rated_draft_when_it_issues(server, admin, drafted):
    first, second, _ = drafted
    assert _stored(server, first) == (11000, 2)
    pin("2025-10-02T00:00:00Z")  # past the 24 h grace
    assert server.app.scheduler.issue_due()["issued"] == 2
    assert _stored(server, first) == (11500, 2)
    assert admin.get(f"/v1/invoices/{first}").json["total"] == "115.00"

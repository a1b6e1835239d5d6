"""Exports (§7): the invoice PDF (text extractable), the invoice list as CSV and
a customer's usage as CSV (header row, RFC 4180, formula-safe)."""

import csv
import io
from decimal import Decimal

import pytest

from tests.harness import make_key
from tests.http.helpers import assert_error, assert_validation, finalize, pdf_text, pin, unique

PLAN = {"code": "pro", "name": "Pro", "currency": "USD", "base_fee": "49.00",
        "charges": [{"meter": "api_calls", "model": "graduated",
                     "tiers": [{"up_to": 1000, "unit_price": "0"}, {"up_to": None, "unit_price": "0.002"}]},
                    {"meter": "storage_gb", "model": "per_unit", "unit_price": "0.25"}]}
INVOICE_HEADER = ["id", "number", "customer_id", "customer", "status", "payment_status", "overdue", "currency",
                  "period_start", "period_end", "subtotal", "discount", "tax", "total", "credits_applied",
                  "amount_due", "amount_paid", "issued_at", "due_at"]
USAGE_HEADER = ["meter", "aggregation", "unit", "from", "to", "group", "value"]


@pytest.fixture
def catalog(admin):
    assert admin.post("/v1/meters", {"key": "api_calls", "name": "API calls", "unit": "call", "aggregation": "sum",
                                     "group_by": ["region"]}).status == 201
    assert admin.post("/v1/meters", {"key": "storage_gb", "name": "Storage", "unit": "GB",
                                     "aggregation": "max"}).status == 201
    assert admin.post("/v1/plans", PLAN).status == 201


def customer_with_draft(admin, name, timezone="UTC", tax_rate="0", calls=5000, storage=12):
    """A customer on Pro for September and its September draft. With the
    defaults: base 49.00 + calls 8.00 + storage 3.00 = 60.00 before tax."""
    pin("2025-09-20T00:00:00Z")
    reply = admin.post("/v1/customers", {"name": name, "email": f"{unique('c')}@example.com", "timezone": timezone,
                                         "tax_rate": tax_rate})
    assert reply.status == 201, reply
    cid = reply.json["id"]
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "pro", "start": "2025-09-01"}).status == 201
    events = [{"meter": "api_calls", "quantity": calls, "timestamp": "2025-09-10T15:00:00Z",
               "properties": {"region": "eu"}},
              {"meter": "storage_gb", "quantity": storage, "timestamp": "2025-09-10T15:00:00Z"}]
    assert admin.post("/v1/events/batch", {"customer_id": cid, "events": events}).status == 200
    pin("2025-10-02T12:00:00Z")
    ids = admin.post("/v1/invoices/run", {"as_of": "2025-10-02T12:00:00Z"}).json["invoice_ids"]
    [invoice_id] = [i for i in ids if admin.get(f"/v1/invoices/{i}").json["customer_id"] == cid]
    return cid, invoice_id


def csv_value(value):
    """How the CSV writes a JSON field of the invoice."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_csv(reply):
    assert reply.status == 200, reply
    assert reply.headers["Content-Type"].startswith("text/csv")
    assert reply.headers["Content-Disposition"].startswith("attachment")
    text = reply.raw.decode("utf-8")
    assert text.endswith("\r\n")
    return list(csv.reader(io.StringIO(text, newline="")))


# -- PDF ------------------------------------------------------------------------------

def test_invoice_pdf_carries_every_line_and_total(server, admin, catalog, tmp_path):
    cid, invoice_id = customer_with_draft(admin, "Café Ünal GmbH", timezone="America/New_York", tax_rate="19")
    invoice = finalize(admin, invoice_id)
    assert invoice["total"] == "71.40"
    reply = admin.get(f"/v1/invoices/{invoice_id}.pdf")
    assert reply.status == 200, reply
    assert reply.headers["Content-Type"] == "application/pdf"
    disposition = reply.headers["Content-Disposition"]
    assert disposition.startswith("attachment") and f'{invoice["number"]}.pdf' in disposition
    assert reply.raw.startswith(b"%PDF-") and reply.raw.rstrip().endswith(b"%%EOF")
    text = pdf_text(reply.raw, tmp_path)
    assert invoice["number"] in text
    assert "Café Ünal GmbH" in text
    assert "2025-09-01" in text and "2025-09-30" in text  # the local period, inclusive last day
    assert len(invoice["lines"]) == 4
    for line in invoice["lines"]:
        row = next((l for l in text.splitlines() if line["description"] in l), None)
        assert row is not None, (line["description"], text)
        assert row.rstrip().endswith(line["amount"]), (row, line)
    for label, field in (("Subtotal", "subtotal"), ("Tax", "tax"), ("Total", "total"), ("Amount due", "amount_due")):
        row = next(l for l in text.splitlines() if l.strip().startswith(label))
        assert row.rstrip().endswith(invoice[field]), (label, row)
    assert "71.40" in text

    # the customer's own key reads it; another customer's key gets 404
    own = server.client(make_key(server, customer_id=cid))
    assert own.get(f"/v1/invoices/{invoice_id}.pdf").raw == reply.raw
    other_cid, _ = customer_with_draft(admin, "Other Co")
    other = server.client(make_key(server, customer_id=other_cid))
    assert_error(other.get(f"/v1/invoices/{invoice_id}.pdf"), 404, "not_found")
    assert_error(admin.get("/v1/invoices/999999.pdf"), 404, "not_found")


def test_draft_pdf_is_marked_draft(admin, catalog, tmp_path):
    _, invoice_id = customer_with_draft(admin, "Drafty")
    reply = admin.get(f"/v1/invoices/{invoice_id}.pdf")
    assert reply.status == 200 and reply.headers["Content-Type"] == "application/pdf"
    text = pdf_text(reply.raw, tmp_path)
    assert "Draft" in text and "INV-" not in text and "60.00" in text


# -- invoices.csv ---------------------------------------------------------------------

def test_invoices_csv_rows_filters_and_quoting(server, admin, catalog):
    tricky = 'Acme, "Quoted"\nSecond line'
    formula = '=HYPERLINK("http://evil.example","x")'
    a, a_invoice = customer_with_draft(admin, tricky)
    _, b_invoice = customer_with_draft(admin, formula, calls=1000)
    _, c_invoice = customer_with_draft(admin, "@SUM(A1:A9)")
    issued = finalize(admin, a_invoice)
    assert admin.post(f"/v1/invoices/{c_invoice}/void", {"reason": "test"}).status == 200

    rows = parse_csv(admin.get("/v1/invoices.csv"))
    assert rows[0] == INVOICE_HEADER
    body = [dict(zip(INVOICE_HEADER, r)) for r in rows[1:]]
    assert all(len(r) == len(INVOICE_HEADER) for r in rows)
    assert [int(r["id"]) for r in body] == [c_invoice, b_invoice, a_invoice]  # newest first, one per invoice
    by_id = {int(r["id"]): r for r in body}
    assert by_id[a_invoice]["customer"] == tricky  # comma, quote and newline round-trip
    assert by_id[b_invoice]["customer"] == "'" + formula  # neutralised
    assert by_id[c_invoice]["customer"] == "'@SUM(A1:A9)"
    for r in body:
        assert not r["customer"].startswith(("=", "+", "-", "@"))
    for invoice_id, row in by_id.items():
        invoice = admin.get(f"/v1/invoices/{invoice_id}").json
        for field in INVOICE_HEADER:
            if field in ("id", "customer"):
                continue
            assert row[field] == csv_value(invoice[field]), (field, row[field], invoice[field])
    assert by_id[a_invoice]["number"] == issued["number"] and by_id[a_invoice]["status"] == "issued"
    assert (by_id[b_invoice]["status"], by_id[b_invoice]["number"]) == ("draft", "")
    assert by_id[c_invoice]["status"] == "void"

    rows = parse_csv(admin.get("/v1/invoices.csv?status=draft"))
    assert rows[0] == INVOICE_HEADER and [int(r[0]) for r in rows[1:]] == [b_invoice]
    rows = parse_csv(admin.get(f"/v1/invoices.csv?customer_id={a}"))
    assert [int(r[0]) for r in rows[1:]] == [a_invoice]
    rows = parse_csv(admin.get(f"/v1/invoices.csv?customer_id={a}&status=draft"))
    assert rows == [INVOICE_HEADER]
    assert_validation(admin.get("/v1/invoices.csv?status=late"), "status")
    assert admin.get("/v1/invoices.csv?customer_id=abc").status == 400
    viewer = server.client(make_key(server, role="viewer"))
    assert parse_csv(viewer.get("/v1/invoices.csv"))[0] == INVOICE_HEADER


# -- usage.csv ------------------------------------------------------------------------

def usage_fixture(admin):
    pin("2025-09-20T00:00:00Z")
    cid = admin.post("/v1/customers", {"name": "Usage NY", "email": f"{unique('u')}@example.com",
                                       "timezone": "America/New_York"}).json["id"]
    events = [
        # 2025-09-02 01:00 in New York is 05:00Z; 03:00Z on the 2nd is still the 1st in New York
        {"meter": "api_calls", "quantity": 10, "timestamp": "2025-09-02T03:00:00Z", "properties": {"region": "eu"}},
        {"meter": "api_calls", "quantity": Decimal("2.5"), "timestamp": "2025-09-02T05:00:00Z",
         "properties": {"region": "eu"}},
        {"meter": "api_calls", "quantity": 7, "timestamp": "2025-09-02T06:00:00Z", "properties": {"region": "us"}},
        {"meter": "api_calls", "quantity": 1, "timestamp": "2025-09-04T12:00:00Z"},
        {"meter": "api_calls", "quantity": 99, "timestamp": "2025-09-08T04:00:00Z"},  # 00:00 NY: outside [from, to)
        {"meter": "storage_gb", "quantity": Decimal("1.25"), "timestamp": "2025-09-03T12:00:00Z"},
        {"meter": "storage_gb", "quantity": 4, "timestamp": "2025-09-03T13:00:00Z"},
    ]
    assert admin.post("/v1/events/batch", {"customer_id": cid, "events": events}).status == 200
    return cid


def cell(value):
    return "" if value is None else str(value)


def test_usage_csv_matches_the_json_usage(server, admin, catalog):
    cid = usage_fixture(admin)
    query = "from=2025-09-01&to=2025-09-08&window=day"
    usage = admin.get(f"/v1/customers/{cid}/usage?{query}")
    assert usage.status == 200, usage
    rows = parse_csv(admin.get(f"/v1/customers/{cid}/usage.csv?{query}"))
    assert rows[0] == USAGE_HEADER
    expected = [[u["meter"], u["aggregation"], u["unit"], w["start"], w["end"], "", cell(w["value"])]
                for u in usage.json["usage"] for w in u["windows"]]
    assert rows[1:] == expected
    assert len(expected) == 42  # 6 meters (2 + 2 storage, §8, + 2 self-metering, §10) × 7 local days
    calls = {r[3]: r[6] for r in rows[1:] if r[0] == "api_calls"}
    assert calls["2025-09-01T04:00:00Z"] == "10" and calls["2025-09-02T04:00:00Z"] == "9.5"
    assert calls["2025-09-04T04:00:00Z"] == "1" and calls["2025-09-07T04:00:00Z"] == "0"
    storage = {r[3]: r[6] for r in rows[1:] if r[0] == "storage_gb"}
    assert storage["2025-09-03T04:00:00Z"] == "4" and storage["2025-09-01T04:00:00Z"] == ""

    # no window: one row per meter over the range
    json_total = admin.get(f"/v1/customers/{cid}/usage?from=2025-09-01&to=2025-09-08").json
    rows = parse_csv(admin.get(f"/v1/customers/{cid}/usage.csv?from=2025-09-01&to=2025-09-08"))
    assert rows[1:] == [[u["meter"], u["aggregation"], u["unit"], json_total["from"], json_total["to"], "",
                         cell(u["value"])] for u in json_total["usage"]]
    assert rows[1][6] == "20.5"

    # group_by, with and without windows
    query = "from=2025-09-01&to=2025-09-08&meter=api_calls&group_by=region"
    grouped = admin.get(f"/v1/customers/{cid}/usage?{query}").json
    rows = parse_csv(admin.get(f"/v1/customers/{cid}/usage.csv?{query}"))
    assert rows[1:] == [["api_calls", "sum", "call", grouped["from"], grouped["to"],
                         "region=" + cell(g["group"]["region"]), cell(g["value"])]
                        for g in grouped["usage"][0]["groups"]]
    assert [(r[5], r[6]) for r in rows[1:]] == [("region=eu", "12.5"), ("region=us", "7"), ("region=", "1")]
    windowed = admin.get(f"/v1/customers/{cid}/usage?{query}&window=day").json
    rows = parse_csv(admin.get(f"/v1/customers/{cid}/usage.csv?{query}&window=day"))
    assert rows[1:] == [["api_calls", "sum", "call", w["start"], w["end"], "region=" + cell(g["group"]["region"]),
                         cell(g["value"])] for w in windowed["usage"][0]["windows"] for g in w["groups"]]
    assert ["2025-09-02T04:00:00Z", "region=us", "7"] in [[r[3], r[5], r[6]] for r in rows]

    # the customer's own key; another customer's key gets 404
    own = server.client(make_key(server, customer_id=cid))
    assert parse_csv(own.get(f"/v1/customers/{cid}/usage.csv?{query}&window=day")) == rows
    other_cid = admin.post("/v1/customers", {"name": "Else", "email": f"{unique('e')}@example.com"}).json["id"]
    other = server.client(make_key(server, customer_id=other_cid))
    assert_error(other.get(f"/v1/customers/{cid}/usage.csv?{query}"), 404, "not_found")
    assert_error(admin.get("/v1/customers/999999/usage.csv"), 404, "not_found")


def test_usage_group_values_are_formula_safe(admin, catalog):
    cid = usage_fixture(admin)
    assert admin.post("/v1/events", {"customer_id": cid, "meter": "api_calls", "quantity": 3,
                                     "timestamp": "2025-09-05T12:00:00Z",
                                     "properties": {"region": "=cmd|'/c calc'!A1"}}).status == 201
    rows = parse_csv(admin.get(f"/v1/customers/{cid}/usage.csv?from=2025-09-01&to=2025-09-08"
                               "&meter=api_calls&group_by=region"))
    groups = [r[5] for r in rows[1:]]
    assert all(not g.startswith(("=", "+", "-", "@")) for g in groups)
    assert any("cmd" in g for g in groups)
    # a unit is text too
    assert admin.post("/v1/meters", {"key": "odd", "name": "Odd", "unit": "=1+1", "aggregation": "sum"}).status == 201
    rows = parse_csv(admin.get(f"/v1/customers/{cid}/usage.csv?from=2025-09-01&to=2025-09-08&meter=odd"))
    assert rows[1][:3] == ["odd", "sum", "'=1+1"]


@pytest.mark.parametrize("query, field", [
    ("from=2025-09-01&to=2025-09-08&window=week", "window"),
    ("from=yesterday&to=2025-09-08", "from"),
    ("from=2025-09-01&to=2025-13-01", "to"),
    ("from=2025-09-08&to=2025-09-01", "to"),
    ("from=2025-09-01&to=2025-09-08&meter=nope", "meter"),
    ("from=2025-09-01&to=2025-09-08&group_by=nowhere", "group_by"),  # no meter declares it
    ("from=2000-01-01&to=2025-09-08&window=hour", "window"),  # too many windows
])
def test_usage_csv_bad_arguments_are_json_400(admin, catalog, query, field):
    cid = usage_fixture(admin)
    reply = admin.get(f"/v1/customers/{cid}/usage.csv?{query}")
    assert reply.headers["Content-Type"].startswith("application/json")
    assert_validation(reply, field)

"""A customer's page shows its recommendations (§10, §11) with the savings
and the evidence, in headless Chromium against a real server."""

from tests.browser.test_dashboard import browser, dashboard  # noqa: F401  (the shared fixtures)


def test_customer_page_shows_recommendations_with_evidence(dashboard):
    """On "big" (base 100.00, commitment 150.00, 0.01 a call) with 1,000 calls
    a month in July–September: each period is topped up to 150.00; "small"
    (20.00 + 0.02 a call) would have cost 40.00 → 110.00 a month saved, and
    the true-up averages 40.00."""
    admin = dashboard.server.admin
    assert admin.post("/v1/meters", {"key": "api_calls", "name": "API calls", "aggregation": "sum"}).status == 201
    for code, base, commitment, price in (("big", "100.00", "150.00", "0.01"), ("small", "20.00", "0", "0.02")):
        assert admin.post("/v1/plans", {"code": code, "name": code, "currency": "USD", "base_fee": base,
                                        "minimum_commitment": commitment, "charges": [
                                            {"meter": "api_calls", "model": "per_unit", "unit_price": price}]}).status == 201
    customer = admin.post("/v1/customers", {"name": "Overpaying <b>Co</b>", "email": "over@example.com"}).json
    cid = customer["id"]
    assert admin.post("/v1/subscriptions", {"customer_id": cid, "plan": "big", "start": "2025-07-01"}).status == 201
    for month in ("07", "08", "09"):
        assert admin.post("/v1/events", {"customer_id": cid, "meter": "api_calls", "quantity": 1000,
                                         "timestamp": f"2025-{month}-15T00:00:00Z"}).status == 201
    for invoice_id in admin.post("/v1/invoices/run", {"as_of": "2025-10-01T00:00:00Z"}).json["invoice_ids"]:
        assert admin.post(f"/v1/invoices/{invoice_id}/finalize").status == 200

    dashboard.sign_in(hash_=f"#/customers/{cid}")
    dashboard.signed_in()
    dashboard.wait("document.querySelectorAll('#recommendations .recommendation').length === 2")
    kinds = dashboard.js("[...document.querySelectorAll('#recommendations .recommendation')].map((r) => r.dataset.type)")
    assert kinds == ["cheaper_plan", "unused_commitment"]
    savings = dashboard.texts("#recommendations .recommendation .savings")
    assert savings == ["saves about 110.00 USD a month", "saves about 40.00 USD a month"]
    dashboard.click("#recommendations .recommendation[data-type=cheaper_plan] summary")
    evidence = dashboard.text("#recommendations .recommendation[data-type=cheaper_plan] details")
    assert "cheapest plan" in evidence and "small" in evidence and "150.00" in evidence and "40.00" in evidence
    dashboard.shoot("recommendations-1280")
    dashboard.assert_clean()

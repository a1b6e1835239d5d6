"""Plans (§5): every model validates, prices stay exact strings, pricing freezes once subscribed."""

import pytest

PRO = {"code": "pro", "name": "Pro", "currency": "USD", "interval": "month", "base_fee": "49.00",
       "minimum_commitment": "100.00", "trial_days": 14, "charges": [
           {"meter": "api_calls", "model": "graduated", "free_units": 1000,
            "tiers": [{"up_to": 10000, "unit_price": "0.002"},
                      {"up_to": None, "unit_price": "0.001", "flat_fee": "5"}]},
           {"meter": "seats", "model": "volume",
            "tiers": [{"up_to": 10, "unit_price": "10"}, {"up_to": None, "unit_price": "8"}]},
           {"meter": "requests", "model": "package", "package_size": 1000, "package_price": "0.01",
            "free_units": 10000},
           {"meter": "cpu_seconds", "model": "per_unit", "unit_price": "0.0001", "minimum_charge": "0.01"}]}


@pytest.fixture
def meters(admin):
    for key in ("api_calls", "seats", "requests", "cpu_seconds"):
        assert admin.post("/v1/meters", {"key": key, "name": key, "aggregation": "sum"}).status == 201


def test_create_the_spec_plan(admin, meters):
    reply = admin.post("/v1/plans", PRO)
    assert reply.status == 201, reply
    plan = reply.json
    assert plan["base_fee"] == "49.00" and plan["minimum_commitment"] == "100.00"
    assert plan["charges"][0]["tiers"][1] == {"up_to": None, "unit_price": "0.001", "flat_fee": "5"}
    assert plan["charges"][3]["unit_price"] == "0.0001"
    assert admin.get("/v1/plans/pro").json == plan
    assert [p["code"] for p in admin.get("/v1/plans").json["data"]] == ["pro"]
    assert admin.post("/v1/plans", PRO).status == 409


def test_jpy_and_kwd_amounts(admin, meters):
    reply = admin.post("/v1/plans", {"code": "jp", "name": "JP", "currency": "JPY", "base_fee": "4900"})
    assert reply.status == 201 and reply.json["base_fee"] == "4900"
    reply = admin.post("/v1/plans", {"code": "kw", "name": "KW", "currency": "KWD", "base_fee": "1.502"})
    assert reply.status == 201 and reply.json["base_fee"] == "1.502"
    assert admin.post("/v1/plans", {"code": "jp2", "name": "JP", "currency": "JPY", "base_fee": "49.5"}).status == 400


def _charge(**fields):
    return {"code": "p", "name": "P", "charges": [{"meter": "api_calls", **fields}]}


@pytest.mark.parametrize("body,field", [
    ({"code": "p", "name": "P", "interval": "year"}, "interval"),
    ({"code": "p", "name": "P", "currency": "XYZ"}, "currency"),
    ({"code": "p b", "name": "P"}, "code"),
    ({"code": "p"}, "name"),
    ({"code": "p", "name": "P", "base_fee": "-1"}, "base_fee"),
    ({"code": "p", "name": "P", "base_fee": "1.001"}, "base_fee"),
    ({"code": "p", "name": "P", "trial_days": -1}, "trial_days"),
    ({"code": "p", "name": "P", "colour": "red"}, "colour"),
    (_charge(model="flat"), "charges[0].model"),
    ({"code": "p", "name": "P", "charges": [{"meter": "nope", "model": "per_unit", "unit_price": "1"}]},
     "charges[0].meter"),
    (_charge(model="per_unit"), "charges[0].unit_price"),
    (_charge(model="per_unit", unit_price="-0.1"), "charges[0].unit_price"),
    (_charge(model="per_unit", unit_price="0.0000000000001"), "charges[0].unit_price"),
    (_charge(model="per_unit", unit_price=1), "charges[0].unit_price"),
    (_charge(model="per_unit", unit_price="1", free_units=-5), "charges[0].free_units"),
    (_charge(model="graduated", tiers=[]), "charges[0].tiers"),
    (_charge(model="graduated", tiers=[{"up_to": 10, "unit_price": "1"}, {"up_to": 10, "unit_price": "1"}]),
     "charges[0].tiers[1].up_to"),
    (_charge(model="graduated", tiers=[{"up_to": 10, "unit_price": "1"}, {"up_to": 5, "unit_price": "1"}]),
     "charges[0].tiers[1].up_to"),
    (_charge(model="volume", tiers=[{"up_to": None, "unit_price": "1"}, {"up_to": 5, "unit_price": "1"}]),
     "charges[0].tiers[0].up_to"),
    (_charge(model="volume", tiers=[{"up_to": 0, "unit_price": "1"}]), "charges[0].tiers[0].up_to"),
    (_charge(model="volume", tiers=[{"up_to": None, "unit_price": "-1"}]), "charges[0].tiers[0].unit_price"),
    (_charge(model="graduated", tiers=[{"up_to": None, "unit_price": "1", "flat_fee": "-5"}]),
     "charges[0].tiers[0].flat_fee"),
    (_charge(model="package", package_size=0, package_price="1"), "charges[0].package_size"),
    (_charge(model="package", package_size=10), "charges[0].package_price"),
    (_charge(model="package", package_size=10, package_price="1", unit_price="2"), "charges[0]"),
    ({"code": "p", "name": "P", "charges": [{"meter": "api_calls", "model": "per_unit", "unit_price": "1"},
                                            {"meter": "api_calls", "model": "per_unit", "unit_price": "2"}]},
     "charges[1].meter"),
])
def test_bad_plans_are_refused_with_the_field_named(admin, meters, body, field):
    reply = admin.post("/v1/plans", body)
    assert reply.status == 400, reply
    assert field in [d["field"] for d in reply.json["error"]["details"]], reply.json
    assert admin.get("/v1/plans").json["data"] == []


def test_patch_name_and_pricing_before_subscriptions(admin, meters):
    assert admin.post("/v1/plans", PRO).status == 201
    reply = admin.patch("/v1/plans/pro", {"name": "Pro 2", "base_fee": "59.00"})
    assert reply.status == 200 and reply.json["name"] == "Pro 2" and reply.json["base_fee"] == "59.00"
    assert admin.patch("/v1/plans/pro", {"code": "x"}).status == 400
    assert admin.patch("/v1/plans/nope", {"name": "x"}).status == 404


def test_pricing_is_frozen_once_subscribed(server, admin, meters):
    assert admin.post("/v1/plans", PRO).status == 201
    customer = admin.post("/v1/customers", {"name": "C", "email": "c@example.com"}).json
    with server.app.db.transaction() as conn:  # subscriptions arrive with their own API
        plan_id = conn.execute("SELECT id FROM plans WHERE code = 'pro'").fetchone()[0]
        conn.execute("INSERT INTO subscriptions (customer_id, plan_id, status, start_date, billing_anchor,"
                     " anchor_date, created_at, updated_at) VALUES (?, ?, 'active', '2025-09-01', 'calendar',"
                     " '2025-09-01', 0, 0)", (customer["id"], plan_id))
    reply = admin.patch("/v1/plans/pro", {"base_fee": "1.00"})
    assert reply.status == 409 and "new plan" in reply.json["error"]["message"]
    assert admin.patch("/v1/plans/pro", {"charges": []}).status == 409
    assert admin.get("/v1/plans/pro").json["base_fee"] == "49.00"
    assert admin.patch("/v1/plans/pro", {"name": "Renamed"}).status == 200


def test_roles(server, meters):
    from tests.harness import make_key
    viewer = server.client(make_key(server, role="viewer"))
    finance = server.client(make_key(server, role="finance"))
    assert finance.post("/v1/plans", PRO).status == 201
    assert viewer.get("/v1/plans/pro").status == 200
    assert viewer.post("/v1/plans", {**PRO, "code": "v"}).status == 403

"""GET /v1/customers/{id}/usage: exact values, half-open ranges, local windows, groups."""

from decimal import Decimal

import pytest

from billing import clock
from billing.domain import times


def setup_customer(admin, timezone="UTC", email="u@example.com"):
    reply = admin.post("/v1/customers", {"name": "U", "email": email, "timezone": timezone})
    assert reply.status == 201, reply
    return reply.json["id"]


def meter(admin, key, aggregation, **extra):
    reply = admin.post("/v1/meters", {"key": key, "name": key, "aggregation": aggregation, **extra})
    assert reply.status == 201, reply


def send(admin, customer_id, events):
    reply = admin.post("/v1/events/batch", {"customer_id": customer_id, "events": events})
    assert reply.status == 200, reply
    return reply.json


def usage(admin, customer_id, query):
    reply = admin.get(f"/v1/customers/{customer_id}/usage?{query}")
    assert reply.status == 200, reply
    return {u["meter"]: u for u in reply.json["usage"]}


def test_ten_tenths_are_exactly_one(admin):
    cid = setup_customer(admin)
    meter(admin, "gb", "sum")
    send(admin, cid, [{"meter": "gb", "quantity": Decimal("0.1"), "timestamp": f"2025-09-0{i % 9 + 1}T00:00:00Z"}
                      for i in range(10)])
    reply = admin.get(f"/v1/customers/{cid}/usage?from=2025-09-01&to=2025-10-01")
    assert b'"value":1,' in reply.raw or b'"value":1}' in reply.raw
    assert [u["value"] for u in reply.json["usage"] if u["meter"] == "gb"] == [1]


def test_all_aggregations_and_empty_values(admin):
    cid = setup_customer(admin)
    for aggregation in ("sum", "count", "max", "min", "avg", "latest"):
        meter(admin, aggregation, aggregation)
    meter(admin, "users", "unique_count", value_property="user")
    meter(admin, "bytes", "sum", value_property="bytes")
    meter(admin, "quiet", "max")
    events = []
    for i, (q, user) in enumerate([(Decimal("1.5"), "a"), (3, "b"), (Decimal("0.25"), "a")]):
        ts = f"2025-09-10T0{i}:00:00Z"
        for aggregation in ("sum", "count", "max", "min", "avg", "latest"):
            events.append({"meter": aggregation, "quantity": q, "timestamp": ts})
        events.append({"meter": "users", "timestamp": ts, "properties": {"user": user}})
        events.append({"meter": "bytes", "timestamp": ts, "properties": {"bytes": 1000 * (i + 1)}})
    send(admin, cid, events)
    u = usage(admin, cid, "from=2025-09-01&to=2025-10-01")
    assert u["sum"]["value"] == Decimal("4.75")
    assert u["count"]["value"] == 3
    assert u["max"]["value"] == 3
    assert u["min"]["value"] == Decimal("0.25")
    assert u["avg"]["value"] == Decimal("1.583333")  # 4.75 / 3 half-up to 6 decimals
    assert u["latest"]["value"] == Decimal("0.25")
    assert u["users"]["value"] == 2
    assert u["bytes"]["value"] == 6000
    assert u["quiet"]["value"] is None
    assert u["sum"]["unit"] == "unit" and u["sum"]["aggregation"] == "sum"


def test_range_is_half_open(admin):
    cid = setup_customer(admin)
    meter(admin, "calls", "count")
    send(admin, cid, [{"meter": "calls", "timestamp": "2025-09-01T00:00:00Z"},
                      {"meter": "calls", "timestamp": "2025-09-30T23:59:59.999999Z"},
                      {"meter": "calls", "timestamp": "2025-10-01T00:00:00Z"}])
    assert usage(admin, cid, "from=2025-09-01T00:00:00Z&to=2025-10-01T00:00:00Z")["calls"]["value"] == 2
    assert usage(admin, cid, "from=2025-10-01T00:00:00Z&to=2025-10-02T00:00:00Z")["calls"]["value"] == 1


def test_day_windows_follow_customer_timezone_across_dst(admin):
    cid = setup_customer(admin, "Europe/Berlin")
    meter(admin, "calls", "sum")
    # 2025-03-30 is 23 hours long in Berlin; 23:30Z on the 29th is already the 30th locally
    send(admin, cid, [{"meter": "calls", "quantity": 2, "timestamp": "2025-03-29T23:30:00Z"},
                      {"meter": "calls", "quantity": 5, "timestamp": "2025-03-30T21:59:59Z"},
                      {"meter": "calls", "quantity": 7, "timestamp": "2025-03-30T22:00:00Z"}])
    u = usage(admin, cid, "from=2025-03-29&to=2025-04-01&window=day")["calls"]
    assert [(w["start"], w["end"], w["value"]) for w in u["windows"]] == [
        ("2025-03-28T23:00:00Z", "2025-03-29T23:00:00Z", 0),
        ("2025-03-29T23:00:00Z", "2025-03-30T22:00:00Z", 7),
        ("2025-03-30T22:00:00Z", "2025-03-31T22:00:00Z", 7),
    ]
    assert u["value"] == 14
    # hour windows: the DST day has 23 of them, empty ones included
    hours = usage(admin, cid, "from=2025-03-30&to=2025-03-31&window=hour")["calls"]["windows"]
    assert len(hours) == 23 and sum(w["value"] for w in hours) == 7


def test_month_windows_and_bad_window(admin):
    cid = setup_customer(admin, "America/New_York")
    meter(admin, "calls", "count")
    send(admin, cid, [{"meter": "calls", "timestamp": "2025-10-01T03:59:00Z"},   # Sept 30 local
                      {"meter": "calls", "timestamp": "2025-10-01T04:00:00Z"}])  # Oct 1 local
    u = usage(admin, cid, "from=2025-09-01&to=2025-11-01&window=month")["calls"]
    assert [(w["start"], w["value"]) for w in u["windows"]] == [("2025-09-01T04:00:00Z", 1),
                                                               ("2025-10-01T04:00:00Z", 1)]
    reply = admin.get(f"/v1/customers/{cid}/usage?window=week")
    assert reply.status == 400 and reply.json["error"]["details"][0]["field"] == "window"


def test_huge_window_ranges_are_refused_before_building(admin):
    cid = admin.post("/v1/customers", {"name": "W", "email": "w@example.com"}).json["id"]
    reply = admin.get(f"/v1/customers/{cid}/usage?from=1970-01-01&to=9998-01-01&window=hour")
    assert reply.status == 400 and reply.json["error"]["details"][0]["field"] == "window"


def test_group_by_and_filter(admin):
    cid = setup_customer(admin)
    meter(admin, "eu_calls", "sum", filter={"region": "eu"}, group_by=["tier"])
    meter(admin, "calls", "sum", group_by=["region"])
    events = []
    for region, tier, q in [("eu", "gold", 1), ("eu", "free", 2), ("us", "gold", 4), (None, "gold", 8)]:
        props = {"tier": tier}
        if region:
            props["region"] = region
        events.append({"meter": "eu_calls", "quantity": q, "timestamp": "2025-09-02T00:00:00Z", "properties": props})
        events.append({"meter": "calls", "quantity": q, "timestamp": "2025-09-02T00:00:00Z", "properties": props})
    send(admin, cid, events)
    u = usage(admin, cid, "from=2025-09-01&to=2025-10-01&meter=eu_calls&group_by=tier")
    assert list(u) == ["eu_calls"]
    assert u["eu_calls"]["value"] == 3  # the us and region-less events do not match the filter
    assert u["eu_calls"]["groups"] == [{"group": {"tier": "free"}, "value": 2}, {"group": {"tier": "gold"}, "value": 1}]
    g = usage(admin, cid, "from=2025-09-01&to=2025-10-01&meter=calls&group_by=region")["calls"]["groups"]
    assert g == [{"group": {"region": "eu"}, "value": 3}, {"group": {"region": "us"}, "value": 4},
                 {"group": {"region": None}, "value": 8}]
    # filtered-out events are still stored and listed
    listed = admin.get(f"/v1/events?customer_id={cid}&meter=eu_calls").json["data"]
    assert len(listed) == 4
    reply = admin.get(f"/v1/customers/{cid}/usage?meter=calls&group_by=tier")
    assert reply.status == 400 and reply.json["error"]["details"][0]["field"] == "group_by"


def test_windows_with_groups(admin):
    cid = setup_customer(admin)
    meter(admin, "calls", "count", group_by=["region"])
    send(admin, cid, [{"meter": "calls", "timestamp": "2025-09-01T10:00:00Z", "properties": {"region": "eu"}},
                      {"meter": "calls", "timestamp": "2025-09-02T10:00:00Z", "properties": {"region": "us"}}])
    u = usage(admin, cid, "from=2025-09-01&to=2025-09-03&window=day&group_by=region")["calls"]
    assert [w["groups"] for w in u["windows"]] == [[{"group": {"region": "eu"}, "value": 1}],
                                                   [{"group": {"region": "us"}, "value": 1}]]


def test_default_range_is_the_current_local_month(admin):
    clock.pin(times.parse_instant("2025-09-16T12:00:00Z"))
    cid = setup_customer(admin, "America/New_York")
    meter(admin, "calls", "count")
    send(admin, cid, [{"meter": "calls", "timestamp": "2025-09-16T11:00:00Z"},
                      {"meter": "calls", "timestamp": "2025-09-01T03:00:00Z"}])  # still August locally
    reply = admin.get(f"/v1/customers/{cid}/usage")
    assert reply.json["from"] == "2025-09-01T04:00:00Z" and reply.json["to"] == "2025-10-01T04:00:00Z"
    assert [u["value"] for u in reply.json["usage"] if u["meter"] == "calls"] == [1]


@pytest.mark.parametrize("query,field", [
    ("from=yesterday", "from"), ("from=2025-09-01T00:00:00", "from"),
    ("from=2025-09-02&to=2025-09-01", "to"), ("meter=nope", "meter"),
])
def test_bad_usage_queries(admin, query, field):
    cid = setup_customer(admin)
    meter(admin, "calls", "count")
    reply = admin.get(f"/v1/customers/{cid}/usage?{query}")
    assert reply.status == 400, reply
    assert reply.json["error"]["details"][0]["field"] == field


def test_unknown_customer_usage(admin):
    assert admin.get("/v1/customers/999/usage").status == 404

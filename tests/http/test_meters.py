"""§4 meters: creation rules, uniqueness, and what may change once a meter
has events — through real HTTP."""

import pytest

from tests.http.helpers import (assert_error, assert_validation, create_customer, create_meter,
                                list_all, post_event, table_count)

AGGREGATIONS = ["sum", "count", "max", "min", "avg", "unique_count", "latest"]

# the meters the server feeds itself, created on first start (§8 storage, §10 self-metering)
SYSTEM_METERS = ["api_request_ms", "api_requests", "storage_api_calls", "storage_gb_days"]


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_each_aggregation_creates(server, admin, aggregation):
    body = {"key": f"m_{aggregation}", "name": f"Meter {aggregation}", "aggregation": aggregation}
    if aggregation == "unique_count":
        body["value_property"] = "user_id"
    reply = admin.post("/v1/meters", body)
    assert reply.status == 201, reply
    meter = reply.json
    assert meter["key"] == body["key"] and meter["name"] == body["name"]
    assert meter["aggregation"] == aggregation
    assert meter["unit"] == "unit"  # default
    assert meter["value_property"] == body.get("value_property")
    assert meter["filter"] in (None, {})
    assert meter["group_by"] == []
    assert admin.get(f"/v1/meters/{body['key']}").json == meter


def test_all_seven_coexist_and_list(server, admin):
    for aggregation in AGGREGATIONS:
        create_meter(admin, key=f"m_{aggregation}", aggregation=aggregation,
                     **({"value_property": "v"} if aggregation == "unique_count" else {}))
    keys = [m["key"] for m in list_all(admin, "/v1/meters?limit=2")]
    assert sorted(keys) == sorted([f"m_{a}" for a in AGGREGATIONS] + SYSTEM_METERS)
    assert len(set(keys)) == 7 + len(SYSTEM_METERS)


def test_create_with_every_field(server, admin):
    body = {"key": "storage.bytes", "name": "Storage", "unit": "byte", "aggregation": "max",
            "value_property": "bytes", "filter": {"region": ["eu", "us"], "tier": "hot"},
            "group_by": ["region", "bucket"]}
    reply = admin.post("/v1/meters", body)
    assert reply.status == 201, reply
    for name, value in body.items():
        assert reply.json[name] == value, name


BAD = [
    ({"name": "N", "aggregation": "sum"}, "key"),
    ({"key": "", "name": "N", "aggregation": "sum"}, "key"),
    ({"key": "1abc", "name": "N", "aggregation": "sum"}, "key"),
    ({"key": "has space", "name": "N", "aggregation": "sum"}, "key"),
    ({"key": "a/b", "name": "N", "aggregation": "sum"}, "key"),
    ({"key": "a" * 65, "name": "N", "aggregation": "sum"}, "key"),
    ({"key": 5, "name": "N", "aggregation": "sum"}, "key"),
    ({"key": "k<script>", "name": "N", "aggregation": "sum"}, "key"),
    ({"key": "k", "aggregation": "sum"}, "name"),
    ({"key": "k", "name": "", "aggregation": "sum"}, "name"),
    ({"key": "k", "name": "N"}, "aggregation"),
    ({"key": "k", "name": "N", "aggregation": "median"}, "aggregation"),
    ({"key": "k", "name": "N", "aggregation": "SUM"}, "aggregation"),
    ({"key": "k", "name": "N", "aggregation": "unique_count"}, "value_property"),
    ({"key": "k", "name": "N", "aggregation": "unique_count", "value_property": None}, "value_property"),
    ({"key": "k", "name": "N", "aggregation": "sum", "value_property": 3}, "value_property"),
    ({"key": "k", "name": "N", "aggregation": "sum", "value_property": "a b"}, "value_property"),
    ({"key": "k", "name": "N", "aggregation": "sum", "unit": ""}, "unit"),
    ({"key": "k", "name": "N", "aggregation": "sum", "unit": 1}, "unit"),
    ({"key": "k", "name": "N", "aggregation": "sum", "filter": "region=eu"}, "filter"),
    ({"key": "k", "name": "N", "aggregation": "sum", "filter": {"region": {"in": ["eu"]}}}, "filter"),
    ({"key": "k", "name": "N", "aggregation": "sum", "filter": {"region": []}}, "filter"),
    ({"key": "k", "name": "N", "aggregation": "sum", "filter": {"bad key!": "x"}}, "filter"),
    ({"key": "k", "name": "N", "aggregation": "sum", "group_by": "region"}, "group_by"),
    ({"key": "k", "name": "N", "aggregation": "sum", "group_by": [1]}, "group_by"),
    ({"key": "k", "name": "N", "aggregation": "sum", "group_by": ["a", "a"]}, "group_by"),
    ({"key": "k", "name": "N", "aggregation": "sum", "color": "blue"}, "color"),
]


@pytest.mark.parametrize("body,field", BAD, ids=[f"{i}-{f}" for i, (_, f) in enumerate(BAD)])
def test_create_rejects_bad_meter(server, admin, body, field):
    assert_validation(admin.post("/v1/meters", body), field)
    assert table_count(server, "meters") == len(SYSTEM_METERS)


def test_duplicate_key_is_409(server, admin):
    first = create_meter(admin, key="api_calls", aggregation="sum")
    reply = admin.post("/v1/meters", {"key": "api_calls", "name": "Other", "aggregation": "count"})
    assert_error(reply, 409, "conflict")
    assert admin.get("/v1/meters/api_calls").json == first
    assert table_count(server, "meters") == len(SYSTEM_METERS) + 1


def test_unknown_meter_is_404(server, admin):
    assert_error(admin.get("/v1/meters/nope"), 404, "not_found")
    assert_error(admin.patch("/v1/meters/nope", {"name": "x"}), 404, "not_found")


def test_patch_name_and_unit(server, admin):
    create_meter(admin, key="api_calls")
    reply = admin.patch("/v1/meters/api_calls", {"name": "API requests", "unit": "request"})
    assert reply.status == 200, reply
    assert reply.json["name"] == "API requests" and reply.json["unit"] == "request"
    assert admin.get("/v1/meters/api_calls").json == reply.json


@pytest.mark.parametrize("body,field", [({"key": "renamed"}, "key"), ({"name": ""}, "name"),
                                        ({"unit": ""}, "unit"), ({"aggregation": "median"}, "aggregation"),
                                        ({"group_by": "x"}, "group_by"), ({"extra": 1}, "extra")])
def test_patch_rejects_bad_fields(server, admin, body, field):
    meter = create_meter(admin, key="api_calls")
    assert_validation(admin.patch("/v1/meters/api_calls", body), field)
    assert admin.get("/v1/meters/api_calls").json == meter


def test_patch_to_unique_count_needs_value_property(server, admin):
    meter = create_meter(admin, key="users", aggregation="count")
    assert_validation(admin.patch("/v1/meters/users", {"aggregation": "unique_count"}), "value_property")
    assert admin.get("/v1/meters/users").json == meter
    reply = admin.patch("/v1/meters/users", {"aggregation": "unique_count", "value_property": "user"})
    assert reply.status == 200, reply


def test_everything_may_change_before_events(server, admin):
    create_meter(admin, key="m", aggregation="sum", group_by=["region"])
    reply = admin.patch("/v1/meters/m", {"aggregation": "max", "value_property": "bytes",
                                         "filter": {"tier": "hot"}, "group_by": []})
    assert reply.status == 200, reply
    assert reply.json["aggregation"] == "max" and reply.json["value_property"] == "bytes"
    assert reply.json["filter"] == {"tier": "hot"} and reply.json["group_by"] == []


@pytest.fixture
def used_meter(server, admin):
    """A meter with one event."""
    customer = create_customer(admin)
    meter = create_meter(admin, key="bytes", aggregation="sum", value_property="size",
                         filter={"region": "eu"}, group_by=["region"])
    reply = post_event(admin, id="e1", customer_id=customer["id"], meter="bytes",
                       properties={"size": 10, "region": "eu"})
    assert reply.status == 201, reply
    return meter


@pytest.mark.parametrize("body", [
    {"aggregation": "max"},
    {"value_property": "other"},
    {"value_property": None},
    {"filter": {"region": "us"}},
    {"filter": None},
    {"filter": {"region": "eu", "tier": "hot"}},
    {"group_by": []},
    {"group_by": ["bucket"]},
    {"name": "Renamed", "aggregation": "avg"},
])
def test_frozen_fields_after_events_are_409(server, admin, used_meter, body):
    reply = admin.patch("/v1/meters/bytes", body)
    assert_error(reply, 409, "conflict")
    assert admin.get("/v1/meters/bytes").json == used_meter


def test_allowed_changes_after_events(server, admin, used_meter):
    reply = admin.patch("/v1/meters/bytes", {"name": "Bytes stored", "unit": "byte"})
    assert reply.status == 200, reply
    reply = admin.patch("/v1/meters/bytes", {"group_by": ["region", "bucket"]})
    assert reply.status == 200, reply
    assert reply.json["group_by"] == ["region", "bucket"]
    # restating unchanged frozen fields is no change
    reply = admin.patch("/v1/meters/bytes", {"aggregation": "sum", "value_property": "size",
                                             "filter": {"region": "eu"}})
    assert reply.status == 200, reply
    after = admin.get("/v1/meters/bytes").json
    assert after["name"] == "Bytes stored" and after["unit"] == "byte"
    assert after["aggregation"] == "sum" and after["value_property"] == "size"
    assert after["filter"] == {"region": "eu"}


def test_meter_changes_are_audited(server, admin):
    create_meter(admin, key="api_calls")
    admin.patch("/v1/meters/api_calls", {"name": "Calls"})
    log = admin.get("/v1/audit-log?entity=meter").json["data"]
    assert [e["action"] for e in log] == ["meter.update", "meter.create"]
    assert log[0]["before"]["name"] == "Api Calls" and log[0]["after"]["name"] == "Calls"

"""§4 events: ingest (single and batch), idempotency by id, atomic batches,
every invalid case, listing with filters and cursors, retraction — through
real HTTP."""

import json
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from billing import clock
from tests.harness import RunningServer, make_key, temp_db
from tests.helpers import iso
from tests.http.helpers import (assert_error, assert_validation, create_customer, create_meter,
                                event_count, list_all, post_event, post_raw)

NOW = datetime(2030, 6, 15, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def ctx(server, admin):
    """One customer (external id ext-1), a second one, and four meters."""
    customer = create_customer(admin, name="One", external_id="ext-1")
    other = create_customer(admin, name="Two", external_id="ext-2")
    create_meter(admin, key="api_calls", aggregation="sum")
    create_meter(admin, key="bytes", aggregation="sum", value_property="size")
    create_meter(admin, key="users", aggregation="unique_count", value_property="user")
    create_meter(admin, key="peak", aggregation="max", value_property="level")
    return {"cid": customer["id"], "other": other["id"]}


# -- single events ---------------------------------------------------------------

def test_single_event_created(server, admin, ctx):
    clock.pin(NOW)
    reply = post_event(admin, id="evt_1", customer_id=ctx["cid"], meter="api_calls", quantity=3,
                       timestamp="2030-06-15T11:00:00Z", properties={"region": "eu"})
    assert reply.status == 201, reply
    assert set(reply.json) == {"event", "duplicate"}
    assert reply.json["duplicate"] is False
    event = reply.json["event"]
    assert event["id"] == "evt_1" and event["customer_id"] == ctx["cid"] and event["meter"] == "api_calls"
    assert event["quantity"] == 3 and event["timestamp"] == "2030-06-15T11:00:00Z"
    assert event["properties"] == {"region": "eu"}
    assert event_count(server) == 1


def test_defaults_quantity_one_timestamp_now_server_id(server, admin, ctx):
    clock.pin(NOW)
    reply = post_event(admin, customer_id=ctx["cid"], meter="api_calls")
    assert reply.status == 201, reply
    event = reply.json["event"]
    assert event["quantity"] == 1
    assert event["timestamp"] == "2030-06-15T12:00:00Z"
    assert isinstance(event["id"], str) and event["id"]
    assert event["properties"] == {}


def test_events_without_id_are_never_deduplicated(server, admin, ctx):
    first = post_event(admin, customer_id=ctx["cid"], meter="api_calls")
    second = post_event(admin, customer_id=ctx["cid"], meter="api_calls")
    assert first.status == second.status == 201
    assert first.json["event"]["id"] != second.json["event"]["id"]
    reply = admin.post("/v1/events/batch", {"events": [{"customer_id": ctx["cid"], "meter": "api_calls"}] * 3})
    assert reply.json == {"accepted": 3, "duplicates": 0}
    assert event_count(server) == 5


def test_repeat_id_is_duplicate_with_first_payload(server, admin, ctx):
    first = post_event(admin, id="evt_dup", customer_id=ctx["cid"], meter="api_calls", quantity=5,
                       properties={"v": 1})
    assert first.status == 201
    again = post_event(admin, id="evt_dup", customer_id=ctx["cid"], meter="api_calls", quantity=99,
                       properties={"v": 2})
    assert again.status == 200, again
    assert again.json["duplicate"] is True
    assert again.json["event"] == first.json["event"]
    assert again.json["event"]["quantity"] == 5 and again.json["event"]["properties"] == {"v": 1}
    # even a different meter does not overwrite
    third = post_event(admin, id="evt_dup", customer_id=ctx["cid"], meter="peak", properties={"level": 7})
    assert third.status == 200 and third.json["event"] == first.json["event"]
    assert event_count(server) == 1
    listed = admin.get(f"/v1/events?customer_id={ctx['cid']}").json["data"]
    assert [(e["id"], e["quantity"]) for e in listed] == [("evt_dup", 5)]


def test_same_id_for_two_customers_is_two_events(server, admin, ctx):
    assert post_event(admin, id="shared", customer_id=ctx["cid"], meter="api_calls").status == 201
    assert post_event(admin, id="shared", customer_id=ctx["other"], meter="api_calls").status == 201
    assert event_count(server) == 2


def test_duplicate_survives_restart(tmp_path):
    path = temp_db(tmp_path)
    first = RunningServer(path, env={"BILLING_MAX_EVENT_AGE_DAYS": "0"})
    try:
        cid = create_customer(first.admin)["id"]
        create_meter(first.admin)
        assert post_event(first.admin, id="r1", customer_id=cid, meter="api_calls", quantity=2).status == 201
    finally:
        first.stop()
    second = RunningServer(path, env={"BILLING_MAX_EVENT_AGE_DAYS": "0"})
    try:
        again = post_event(second.admin, id="r1", customer_id=cid, meter="api_calls", quantity=8)
        assert again.status == 200 and again.json["duplicate"] is True
        assert again.json["event"]["quantity"] == 2
        batch = second.admin.post("/v1/events/batch", {"events": [{"id": "r1", "customer_id": cid,
                                                                   "meter": "api_calls"}]})
        assert batch.json == {"accepted": 0, "duplicates": 1}
        assert event_count(second) == 1
    finally:
        second.stop()


def test_aliases_customer_feature_ts(server, admin, ctx):
    clock.pin(NOW)
    reply = post_event(admin, id="alias", customer="ext-1", feature="api_calls", ts="2030-06-15T13:30:00+02:00")
    assert reply.status == 201, reply
    event = reply.json["event"]
    assert event["customer_id"] == ctx["cid"] and event["meter"] == "api_calls"
    assert event["timestamp"] == "2030-06-15T11:30:00Z"  # stored and returned as UTC
    reply = admin.post("/v1/events/batch", {"events": [{"id": "alias2", "customer": "ext-2", "feature": "api_calls",
                                                        "ts": "2030-06-15T11:00:00Z"}]})
    assert reply.json == {"accepted": 1, "duplicates": 0}
    assert [e["id"] for e in admin.get(f"/v1/events?customer_id={ctx['other']}").json["data"]] == ["alias2"]


@pytest.mark.parametrize("text,expected", [("0", "0"), ("1000000000000", "1000000000000"), ("0.000001", "0.000001"),
                                           ("1.123456", "1.123456"), ("0.1", "0.1"), ("2.50", "2.5"),
                                           ("1E+2", "100"), ("12.000000", "12")])
def test_valid_quantities_are_exact(server, admin, ctx, text, expected):
    reply = post_raw(admin, "/v1/events",
                     f'{{"id": "q", "customer_id": {ctx["cid"]}, "meter": "api_calls", "quantity": {text}}}')
    assert reply.status == 201, reply
    assert reply.json["event"]["quantity"] == Decimal(expected)
    assert f'"quantity":{expected}'.encode() in reply.raw.replace(b" ", b"")  # no exponent, no float noise


def test_value_property_meters_accept_numbers_and_scalars(server, admin, ctx):
    assert post_event(admin, customer_id=ctx["cid"], meter="bytes", properties={"size": 1024}).status == 201
    assert post_raw(admin, "/v1/events", f'{{"customer_id": {ctx["cid"]}, "meter": "bytes", '
                                         f'"properties": {{"size": 0.5}}}}').status == 201
    for user in ("alice", 42, True):
        reply = post_event(admin, customer_id=ctx["cid"], meter="users", properties={"user": user})
        assert reply.status == 201, reply


def test_timestamp_future_tolerance_is_five_minutes(server, admin, ctx):
    clock.pin(NOW)
    ok = post_event(admin, id="f1", customer_id=ctx["cid"], meter="api_calls",
                    timestamp=iso(NOW + timedelta(minutes=5)))
    assert ok.status == 201, ok
    late = post_event(admin, id="f2", customer_id=ctx["cid"], meter="api_calls",
                      timestamp=iso(NOW + timedelta(minutes=5, seconds=1)))
    assert_validation(late, "timestamp")
    clock.advance(minutes=10)
    assert post_event(admin, id="f2", customer_id=ctx["cid"], meter="api_calls",
                      timestamp=iso(NOW + timedelta(minutes=5, seconds=1))).status == 201


def test_lateness_limit_from_environment(tmp_path):
    running = RunningServer(temp_db(tmp_path), env={"BILLING_MAX_EVENT_AGE_DAYS": "90"})
    try:
        clock.pin(NOW)
        admin = running.admin
        cid = create_customer(admin)["id"]
        create_meter(admin)
        old = post_event(admin, id="old", customer_id=cid, meter="api_calls",
                         timestamp=iso(NOW - timedelta(days=91)))
        assert_validation(old, "timestamp")
        batch = admin.post("/v1/events/batch", {"events": [
            {"id": "ok", "customer_id": cid, "meter": "api_calls", "timestamp": iso(NOW - timedelta(days=89))},
            {"id": "old", "customer_id": cid, "meter": "api_calls", "timestamp": iso(NOW - timedelta(days=91))}]})
        assert batch.status == 400
        assert [d["index"] for d in batch.json["error"]["details"]] == [1]
        assert event_count(running) == 0
        recent = post_event(admin, id="ok", customer_id=cid, meter="api_calls",
                            timestamp=iso(NOW - timedelta(days=89)))
        assert recent.status == 201, recent
    finally:
        running.stop()


def test_lateness_limit_zero_allows_backfill(server, admin, ctx):
    # the `server` fixture runs with BILLING_MAX_EVENT_AGE_DAYS=0
    clock.pin(NOW)
    reply = post_event(admin, id="ancient", customer_id=ctx["cid"], meter="api_calls",
                       timestamp="2019-01-01T00:00:00Z")
    assert reply.status == 201, reply


# -- every invalid case -----------------------------------------------------------

def _cases(cid):
    """(event JSON text, field) pairs; text so that numbers are sent verbatim."""
    base = f'"customer_id": {cid}, "meter": "api_calls"'
    big_props = json.dumps({"blob": "x" * 4100})
    return [
        ('{"customer_id": 999999, "meter": "api_calls"}', "customer_id"),
        ('{"customer": "no-such-external-id", "meter": "api_calls"}', "customer"),
        ('{"meter": "api_calls"}', "customer_id"),
        ('{"customer_id": "1", "meter": "api_calls"}', "customer_id"),
        ('{"customer_id": true, "meter": "api_calls"}', "customer_id"),
        ('{"customer": 5, "meter": "api_calls"}', "customer"),
        (f'{{"customer_id": {cid}, "meter": "no_such_meter"}}', "meter"),
        (f'{{"customer_id": {cid}, "feature": "no_such_meter"}}', "meter"),
        (f'{{"customer_id": {cid}}}', "meter"),
        (f'{{"customer_id": {cid}, "meter": 7}}', "meter"),
        (f'{{{base}, "id": 123}}', "id"),
        (f'{{{base}, "id": ""}}', "id"),
        (f'{{{base}, "id": "{"x" * 256}"}}', "id"),
        (f'{{{base}, "quantity": -1}}', "quantity"),
        (f'{{{base}, "quantity": -0.5}}', "quantity"),
        (f'{{{base}, "quantity": "NaN"}}', "quantity"),
        (f'{{{base}, "quantity": "Infinity"}}', "quantity"),
        (f'{{{base}, "quantity": 1e999}}', "quantity"),
        (f'{{{base}, "quantity": 1.1234567}}', "quantity"),
        (f'{{{base}, "quantity": 0.0000001}}', "quantity"),
        (f'{{{base}, "quantity": 1000000000001}}', "quantity"),
        (f'{{{base}, "quantity": 1000000000000.5}}', "quantity"),
        (f'{{{base}, "quantity": 1e13}}', "quantity"),
        (f'{{{base}, "quantity": "10"}}', "quantity"),
        (f'{{{base}, "quantity": true}}', "quantity"),
        (f'{{{base}, "quantity": null}}', "quantity"),
        (f'{{{base}, "quantity": [1]}}', "quantity"),
        (f'{{{base}, "timestamp": "2030-06-15T11:00:00"}}', "timestamp"),
        (f'{{{base}, "ts": "2030-06-15 11:00:00"}}', "timestamp"),
        (f'{{{base}, "timestamp": "2030-06-15"}}', "timestamp"),
        (f'{{{base}, "timestamp": "yesterday"}}', "timestamp"),
        (f'{{{base}, "timestamp": "2030-02-30T00:00:00Z"}}', "timestamp"),
        (f'{{{base}, "timestamp": 1905850800}}', "timestamp"),
        (f'{{{base}, "timestamp": "2030-06-15T12:05:01Z"}}', "timestamp"),
        (f'{{{base}, "timestamp": "2031-01-01T00:00:00Z"}}', "timestamp"),
        (f'{{{base}, "properties": []}}', "properties"),
        (f'{{{base}, "properties": "region=eu"}}', "properties"),
        (f'{{{base}, "properties": 5}}', "properties"),
        (f'{{{base}, "properties": {big_props}}}', "properties"),
        (f'{{"customer_id": {cid}, "meter": "bytes"}}', "properties.size"),
        (f'{{"customer_id": {cid}, "meter": "bytes", "properties": {{"other": 1}}}}', "properties.size"),
        (f'{{"customer_id": {cid}, "meter": "bytes", "properties": {{"size": "10"}}}}', "properties.size"),
        (f'{{"customer_id": {cid}, "meter": "bytes", "properties": {{"size": null}}}}', "properties.size"),
        (f'{{"customer_id": {cid}, "meter": "bytes", "properties": {{"size": true}}}}', "properties.size"),
        (f'{{"customer_id": {cid}, "meter": "bytes", "properties": {{"size": -3}}}}', "properties.size"),
        (f'{{"customer_id": {cid}, "meter": "bytes", "properties": {{"size": 0.1234567}}}}', "properties.size"),
        (f'{{"customer_id": {cid}, "meter": "bytes", "properties": {{"size": {{"n": 1}}}}}}', "properties.size"),
        (f'{{"customer_id": {cid}, "meter": "users", "properties": {{}}}}', "properties.user"),
        (f'{{"customer_id": {cid}, "meter": "users", "properties": {{"user": [1, 2]}}}}', "properties.user"),
    ]


CASE_IDS = [f"{i}-{field}" for i, (_, field) in enumerate(_cases(1))]


def _field_ok(reply, field):
    named = [d.get("field") for d in reply.json["error"]["details"]]
    alias = {"customer": ("customer", "customer_id")}.get(field, (field,))
    return any(n in alias or (isinstance(n, str) and n.startswith(field)) for n in named)


@pytest.mark.parametrize("case", range(len(CASE_IDS)), ids=CASE_IDS)
def test_invalid_single_event(server, admin, ctx, case):
    clock.pin(NOW)
    text, field = _cases(ctx["cid"])[case]
    reply = post_raw(admin, "/v1/events", text)
    assert reply.status == 400, reply
    assert reply.error_code == "validation_error", reply
    assert _field_ok(reply, field), reply.json
    assert event_count(server) == 0


@pytest.mark.parametrize("case", range(len(CASE_IDS)), ids=CASE_IDS)
def test_invalid_event_in_batch(server, admin, ctx, case):
    clock.pin(NOW)
    text, field = _cases(ctx["cid"])[case]
    good = f'{{"customer_id": {ctx["cid"]}, "meter": "api_calls", "quantity": 2}}'
    reply = post_raw(admin, "/v1/events/batch", f'{{"events": [{good}, {text}, {good}]}}')
    assert reply.status == 400, reply
    assert reply.error_code == "validation_error"
    details = reply.json["error"]["details"]
    assert {d["index"] for d in details} == {1}, details
    assert len(details) == 1, details  # one bad field, one detail
    assert _field_ok(reply, field), details
    assert event_count(server) == 0


@pytest.mark.parametrize("text", ['NaN', '-NaN', 'Infinity', '-Infinity'])
def test_nan_and_infinity_literals_rejected(server, admin, ctx, text):
    body = f'{{"customer_id": {ctx["cid"]}, "meter": "api_calls", "quantity": {text}}}'
    reply = post_raw(admin, "/v1/events", body)
    assert reply.status == 400, reply
    assert reply.error_code in ("validation_error", "bad_request")
    batch = post_raw(admin, "/v1/events/batch", f'{{"events": [{body}]}}')
    assert batch.status == 400, batch
    props = f'{{"customer_id": {ctx["cid"]}, "meter": "bytes", "properties": {{"size": {text}}}}}'
    assert post_raw(admin, "/v1/events", props).status == 400
    assert event_count(server) == 0


def test_quantity_with_absurd_negative_exponent_rejected(server, admin, ctx):
    # 1e-999999999 has far more than 6 fractional digits; it must not be stored as 0
    reply = post_raw(admin, "/v1/events",
                     f'{{"customer_id": {ctx["cid"]}, "meter": "api_calls", "quantity": 1e-999999999}}')
    # refused while parsing (a number that would expand to a billion digits), never stored as 0
    assert reply.status == 400 and "out of range" in reply.json["error"]["message"], reply
    assert event_count(server) == 0
    reply = post_raw(admin, "/v1/events",
                     f'{{"customer_id": {ctx["cid"]}, "meter": "api_calls", "quantity": 1e-7}}')
    assert_validation(reply, "quantity")
    assert event_count(server) == 0


@pytest.mark.parametrize("ts", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_out_of_range_timestamp_is_400_not_500(server, admin, ctx, ts):
    reply = post_event(admin, customer_id=ctx["cid"], meter="api_calls", timestamp=ts)
    assert_validation(reply, "timestamp")
    assert event_count(server) == 0


def test_properties_keep_any_json_number(server, admin, ctx):
    reply = post_raw(admin, "/v1/events", f'{{"id": "big", "customer_id": {ctx["cid"]}, "meter": "api_calls", '
                                          f'"properties": {{"big": 1e30, "tiny": 1e-9, "n": 12345678901234567890}}}}')
    assert reply.status == 201, reply
    props = reply.json["event"]["properties"]
    assert props["big"] == Decimal("1e30") and props["tiny"] == Decimal("1e-9")
    assert props["n"] == 12345678901234567890
    reply = post_raw(admin, "/v1/events", f'{{"id": "u", "customer_id": {ctx["cid"]}, "meter": "users", '
                                          f'"properties": {{"user": 1e30}}}}')
    assert reply.status == 201, reply


@pytest.mark.parametrize("ts", ["0999-05-01T00:00:00Z", "0001-01-02T00:00:00Z"])
def test_early_year_timestamp_is_rejected_or_round_trips(server, admin, ctx, ts):
    reply = post_event(admin, id="early", customer_id=ctx["cid"], meter="api_calls", timestamp=ts)
    if reply.status == 400:
        assert_validation(reply, "timestamp")
        return
    assert reply.status == 201, reply
    assert reply.json["event"]["timestamp"] == ts  # RFC 3339 needs four year digits


def test_archived_customer_events_rejected(server, admin, ctx):
    assert admin.patch(f"/v1/customers/{ctx['cid']}", {"archived": True}).status == 200
    assert_validation(post_event(admin, customer_id=ctx["cid"], meter="api_calls"), "customer_id")
    assert_validation(post_event(admin, customer="ext-1", meter="api_calls"), "customer_id")
    batch = admin.post("/v1/events/batch", {"customer_id": ctx["cid"], "events": [{"meter": "api_calls"}]})
    assert batch.status == 400 and batch.json["error"]["details"][0]["index"] == 0
    assert event_count(server) == 0


def test_properties_size_limit_boundary(server, admin, ctx):
    # {"blob":"..."} serialized compactly: 11 bytes of framing
    fits = {"blob": "x" * (4096 - 11)}
    assert len(json.dumps(fits, separators=(",", ":"))) == 4096
    assert post_event(admin, customer_id=ctx["cid"], meter="api_calls", properties=fits).status == 201
    too_big = {"blob": "x" * (4096 - 10)}
    assert_validation(post_event(admin, customer_id=ctx["cid"], meter="api_calls", properties=too_big),
                      "properties")
    assert event_count(server) == 1


# -- batches ------------------------------------------------------------------------

def test_batch_shape_and_duplicates(server, admin, ctx):
    cid = ctx["cid"]
    first = admin.post("/v1/events/batch", {"events": [
        {"id": "b1", "customer_id": cid, "meter": "api_calls", "quantity": 1},
        {"id": "b2", "customer_id": cid, "meter": "api_calls", "quantity": 2},
        {"id": "b1", "customer_id": cid, "meter": "api_calls", "quantity": 100},  # dup within the batch
    ]})
    assert first.status == 200, first
    assert first.json == {"accepted": 2, "duplicates": 1}
    second = admin.post("/v1/events/batch", {"events": [
        {"id": "b2", "customer_id": cid, "meter": "api_calls", "quantity": 50},  # dup across batches
        {"id": "b3", "customer_id": cid, "meter": "api_calls", "quantity": 3},
    ]})
    assert second.status == 200 and second.json == {"accepted": 1, "duplicates": 1}
    single = post_event(admin, id="b3", customer_id=cid, meter="api_calls", quantity=9)
    assert single.status == 200 and single.json["duplicate"] is True
    stored = {e["id"]: e["quantity"] for e in admin.get(f"/v1/events?customer_id={cid}").json["data"]}
    assert stored == {"b1": 1, "b2": 2, "b3": 3}  # first write wins


def test_batch_default_customer(server, admin, ctx):
    reply = admin.post("/v1/events/batch", {"customer_id": ctx["cid"], "events": [
        {"id": "d1", "meter": "api_calls"},
        {"id": "d2", "meter": "api_calls", "customer_id": ctx["other"]},
        {"id": "d3", "meter": "api_calls", "customer": "ext-2"},
    ]})
    assert reply.json == {"accepted": 3, "duplicates": 0}, reply
    assert event_count(server, ctx["cid"]) == 1 and event_count(server, ctx["other"]) == 2


def test_empty_batch(server, admin, ctx):
    reply = admin.post("/v1/events/batch", {"events": []})
    assert reply.status == 200 and reply.json == {"accepted": 0, "duplicates": 0}


def test_atomic_batch_reports_each_bad_event_by_index(server, admin, ctx):
    cid = ctx["cid"]
    events = [
        {"id": "g0", "customer_id": cid, "meter": "api_calls"},
        {"id": "x1", "customer_id": cid, "meter": "nope"},
        {"id": "g2", "customer_id": cid, "meter": "api_calls"},
        {"id": "x3", "customer_id": cid, "meter": "api_calls", "quantity": -4},
        "not an object",
        {"id": "x5", "customer_id": 424242, "meter": "api_calls", "timestamp": "2020-01-01T00:00:00"},
        {"id": "g6", "customer_id": cid, "meter": "api_calls"},
    ]
    reply = admin.post("/v1/events/batch", {"events": events})
    assert reply.status == 400, reply
    assert reply.error_code == "validation_error"
    details = reply.json["error"]["details"]
    assert {d["index"] for d in details} == {1, 3, 4, 5}
    for d in details:
        assert set(d) >= {"index", "field", "message"} and d["message"]
    by_index = {}
    for d in details:
        by_index.setdefault(d["index"], set()).add(d["field"])
    assert "meter" in by_index[1] and "quantity" in by_index[3]
    assert {"customer_id", "timestamp"} <= by_index[5]
    assert event_count(server) == 0
    # the same batch without the bad ones goes through
    good = [e for i, e in enumerate(events) if i in (0, 2, 6)]
    assert admin.post("/v1/events/batch", {"events": good}).json == {"accepted": 3, "duplicates": 0}


@pytest.mark.parametrize("body,field", [({}, "events"), ({"events": None}, "events"),
                                        ({"events": {"id": "x"}}, "events"), ({"events": "[]"}, "events"),
                                        ({"events": [], "customer_id": "1"}, "customer_id"),
                                        ({"events": [], "source": "x"}, "source")])
def test_batch_envelope_validation(server, admin, ctx, body, field):
    assert_validation(admin.post("/v1/events/batch", body), field)


def test_batch_over_10000_rejected(server, admin, ctx):
    event = {"customer_id": ctx["cid"], "meter": "api_calls"}
    reply = admin.post("/v1/events/batch", {"events": [event] * 10_001})
    assert_validation(reply, "events")
    assert event_count(server) == 0


def test_batch_of_exactly_10000_accepted(server, admin, ctx):
    events = [{"id": f"e{i}", "customer_id": ctx["cid"], "meter": "api_calls"} for i in range(10_000)]
    reply = admin.post("/v1/events/batch", {"events": events})
    assert reply.status == 200, reply
    assert reply.json == {"accepted": 10_000, "duplicates": 0}
    assert event_count(server) == 10_000


# -- listing ------------------------------------------------------------------------

@pytest.fixture
def history(server, admin, ctx):
    """Events over three days for two customers and two meters."""
    clock.pin(NOW)
    cid, other = ctx["cid"], ctx["other"]
    rows = [
        ("a1", cid, "api_calls", "2030-06-13T10:00:00Z"),
        ("a2", cid, "api_calls", "2030-06-14T10:00:00Z"),
        ("a3", cid, "peak", "2030-06-14T12:00:00Z"),
        ("a4", cid, "api_calls", "2030-06-15T09:00:00Z"),
        ("b1", other, "api_calls", "2030-06-14T11:00:00Z"),
        ("b2", other, "peak", "2030-06-15T08:00:00Z"),
    ]
    events = [{"id": eid, "customer_id": c, "meter": m, "timestamp": ts, "properties": {"level": 1}}
              for eid, c, m, ts in rows]
    assert admin.post("/v1/events/batch", {"events": events}).json["accepted"] == 6
    return ctx


def ids(reply):
    assert reply.status == 200, reply
    assert set(reply.json) == {"data", "next_cursor"}
    return [e["id"] for e in reply.json["data"]]


def test_list_newest_first_and_filters(server, admin, history):
    cid, other = history["cid"], history["other"]
    assert ids(admin.get("/v1/events")) == ["a4", "b2", "a3", "b1", "a2", "a1"]
    assert ids(admin.get(f"/v1/events?customer_id={cid}")) == ["a4", "a3", "a2", "a1"]
    assert ids(admin.get(f"/v1/events?customer_id={other}")) == ["b2", "b1"]
    assert ids(admin.get("/v1/events?meter=peak")) == ["b2", "a3"]
    assert ids(admin.get(f"/v1/events?customer_id={cid}&meter=api_calls")) == ["a4", "a2", "a1"]
    # half-open [from, to)
    assert ids(admin.get("/v1/events?from=2030-06-14T10:00:00Z&to=2030-06-15T08:00:00Z")) == ["a3", "b1", "a2"]
    assert ids(admin.get("/v1/events?from=2030-06-14")) == ["a4", "b2", "a3", "b1", "a2"]
    assert ids(admin.get("/v1/events?to=2030-06-14")) == ["a1"]
    assert ids(admin.get(f"/v1/events?customer_id={cid}&meter=api_calls&from=2030-06-14&to=2030-06-15")) == ["a2"]
    event = admin.get("/v1/events?limit=1").json["data"][0]
    assert event["customer_id"] == cid and event["meter"] == "api_calls"
    assert event["timestamp"] == "2030-06-15T09:00:00Z" and event["quantity"] == 1


def test_list_date_bounds_use_customer_timezone(server, admin, ctx):
    tokyo = create_customer(admin, timezone="Asia/Tokyo")["id"]
    clock.pin(NOW)
    # 2030-06-14T16:00Z is 2030-06-15 01:00 in Tokyo
    admin.post("/v1/events/batch", {"customer_id": tokyo, "events": [
        {"id": "t1", "meter": "api_calls", "timestamp": "2030-06-14T14:00:00Z"},
        {"id": "t2", "meter": "api_calls", "timestamp": "2030-06-14T16:00:00Z"}]})
    assert ids(admin.get(f"/v1/events?customer_id={tokyo}&from=2030-06-15")) == ["t2"]
    assert ids(admin.get(f"/v1/events?customer_id={tokyo}&to=2030-06-15")) == ["t1"]


def test_list_cursor_paging_no_duplicates_or_gaps(server, admin, ctx):
    clock.pin(NOW)
    cid = ctx["cid"]
    # many events sharing timestamps, so the tie-break matters
    events = [{"id": f"p{i:02d}", "customer_id": cid, "meter": "api_calls",
               "timestamp": f"2030-06-15T0{i % 3}:00:00Z"} for i in range(25)]
    assert admin.post("/v1/events/batch", {"events": events}).json["accepted"] == 25
    full = ids(admin.get("/v1/events?limit=1000"))
    assert len(full) == 25
    seen, cursor, pages = [], None, 0
    while True:
        reply = admin.get("/v1/events?limit=4" + (f"&cursor={cursor}" if cursor else ""))
        seen += ids(reply)
        cursor = reply.json["next_cursor"]
        pages += 1
        if pages == 2:  # newer events arriving mid-listing must not shift the pages
            post_event(admin, id="late-arrival", customer_id=cid, meter="api_calls", timestamp=iso(NOW))
        if cursor is None:
            break
    assert seen == full
    assert len(set(seen)) == 25 and pages == 7
    timestamps = [e["timestamp"] for e in list_all(admin, f"/v1/events?customer_id={cid}&limit=3")]
    assert timestamps == sorted(timestamps, reverse=True)


def test_list_pages_across_buckets_in_time_order(server, admin, ctx):
    """The list walks the time index bucket by bucket (billing/store/event_time.py)
    and sorts within each: for random timestamps over a few 15-minute buckets,
    many shared, and every filter, the pages hold the events newest first
    (ties: the later stored first), each once."""
    clock.pin(NOW)
    rng = random.Random(5)
    base = datetime(2030, 6, 15, 8, 0, tzinfo=timezone.utc)
    stamps = [base + timedelta(minutes=15 * rng.randrange(5), seconds=rng.randrange(3) * 299,
                               milliseconds=rng.choice((0, 0, 1, 999))) for _ in range(12)]
    events = [{"id": f"r{i:03d}", "customer_id": rng.choice((ctx["cid"], ctx["other"])),
               "meter": rng.choice(("api_calls", "peak")), "properties": {"level": 1},
               "timestamp": rng.choice(stamps).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
              for i in range(160)]
    assert admin.post("/v1/events/batch", {"events": events}).json["accepted"] == 160
    def at(text):
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    stored = [(at(e["timestamp"]), i, e) for i, e in enumerate(events)]
    low, high = at("2030-06-15T08:19:59.999Z"), at("2030-06-15T09:05:00.001Z")
    for query, keep in [("", lambda e: True),
                        (f"customer_id={ctx['cid']}", lambda e: e["customer_id"] == ctx["cid"]),
                        ("meter=peak", lambda e: e["meter"] == "peak"),
                        (f"customer_id={ctx['other']}&meter=api_calls",
                         lambda e: e["customer_id"] == ctx["other"] and e["meter"] == "api_calls"),
                        ("from=2030-06-15T08:19:59.999Z&to=2030-06-15T09:05:00.001Z",
                         lambda e: low <= at(e["timestamp"]) < high)]:
        expected = [e["id"] for ts, i, e in sorted(stored, key=lambda s: (s[0], s[1]), reverse=True) if keep(e)]
        assert [e["id"] for e in list_all(admin, f"/v1/events?limit=7&{query}")] == expected, query


@pytest.mark.parametrize("query,status,field", [
    ("meter=nope", 400, "meter"), ("customer_id=abc", 400, "customer_id"), ("from=garbage", 400, "from"),
    ("to=2030-13-01", 400, "to"), ("limit=0", 400, "limit"), ("limit=1001", 400, "limit"),
    ("cursor=xyz", 400, "cursor"), ("from=9999-12-31T23:59:59-01:00", 400, "from"),
    ("to=0001-01-01T00:00:00+01:00", 400, "to"), ("customer_id=424242", 404, None)])
def test_list_bad_filters(server, admin, ctx, query, status, field):
    reply = admin.get(f"/v1/events?{query}")
    if status == 400:
        assert_validation(reply, field)
    else:
        assert_error(reply, 404, "not_found")


# -- retraction ---------------------------------------------------------------------------

def test_retract_event(server, admin, ctx):
    cid = ctx["cid"]
    created = post_event(admin, id="wrong", customer_id=cid, meter="api_calls", quantity=1000)
    post_event(admin, id="right", customer_id=cid, meter="api_calls", quantity=1)
    reply = admin.delete(f"/v1/customers/{cid}/events/wrong")
    assert reply.status == 200, reply
    assert ids(admin.get(f"/v1/events?customer_id={cid}")) == ["right"]
    usage = admin.get(f"/v1/customers/{cid}/usage?from=2000-01-01&to=2100-01-01&meter=api_calls").json
    assert usage["usage"][0]["value"] == 1
    log = admin.get("/v1/audit-log?action=event.retract").json["data"]
    assert len(log) == 1
    entry = log[0]
    assert entry["actor"] and entry["at"] and entry["after"] is None
    assert entry["before"]["id"] == "wrong" and entry["before"]["quantity"] == 1000
    assert created.json["event"]["id"] in entry["entity_id"]
    # gone means gone: a second retraction is 404
    assert_error(admin.delete(f"/v1/customers/{cid}/events/wrong"), 404, "not_found")


def test_retract_with_url_encoded_id(server, admin, ctx):
    cid = ctx["cid"]
    assert post_event(admin, id="order 7#1", customer_id=cid, meter="api_calls").status == 201
    assert admin.delete(f"/v1/customers/{cid}/events/order%207%231").status == 200
    assert event_count(server) == 0


def test_retract_unknown_is_404(server, admin, ctx):
    post_event(admin, id="e", customer_id=ctx["cid"], meter="api_calls")
    assert_error(admin.delete(f"/v1/customers/{ctx['cid']}/events/nope"), 404, "not_found")
    assert_error(admin.delete(f"/v1/customers/{ctx['other']}/events/e"), 404, "not_found")  # not theirs
    assert_error(admin.delete("/v1/customers/424242/events/e"), 404, "not_found")
    assert event_count(server) == 1


def test_retracting_twice_after_seq_reuse(admin):
    admin.post("/v1/meters", {"key": "m", "name": "M", "aggregation": "sum"})
    cid = admin.post("/v1/customers", {"name": "R", "email": "r@example.com"}).json["id"]
    for event_id in ("e1", "e2"):
        assert admin.post("/v1/events", {"id": event_id, "customer_id": cid, "meter": "m"}).status == 201
        assert admin.delete(f"/v1/customers/{cid}/events/{event_id}").status == 200


@pytest.mark.parametrize("role", ["finance", "viewer", "ingest", "customer"])
def test_retract_needs_admin(server, admin, ctx, role):
    post_event(admin, id="e", customer_id=ctx["cid"], meter="api_calls")
    token = make_key(server, customer_id=ctx["cid"]) if role == "customer" else make_key(server, role=role)
    reply = server.client(token).delete(f"/v1/customers/{ctx['cid']}/events/e")
    assert_error(reply, 403, "forbidden")
    assert event_count(server) == 1
    assert admin.get("/v1/audit-log?action=event.retract").json["data"] == []

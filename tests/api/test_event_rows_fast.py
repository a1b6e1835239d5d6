"""Ingest.row takes the usual event in one pass and hands anything else to
Ingest.checked_row, which applies every rule field by field. For random
events, valid and not, both must give the same row and the same problems.
Ingest.usual_rows takes a whole batch of usual events at once, or leaves it
to `row`: where it takes one, it gives the rows `row` gives."""

import json
import random
from decimal import Decimal

import pytest

from billing.api.catalog import CustomerInfo, MeterInfo
from billing.api.event_rows import MAX_ID_LENGTH, Ingest, IngestView, batch_rows, id_hash
from billing.errors import ValidationError

NOW_US = 1_790_000_000 * 1_000_000
DAY_US = 86_400 * 1_000_000

METERS = [
    MeterInfo(1, "api_calls", "API calls", "call", "sum", None, None, ()),
    MeterInfo(2, "seats", "Seats", "seat", "max", None, None, ()),
    MeterInfo(3, "eu_calls", "EU calls", "call", "sum", None, {"region": ["eu-west", "eu-north"]}, ()),
    MeterInfo(4, "gb", "Storage", "GB", "sum", "gb", None, ()),
    MeterInfo(5, "users", "Users", "user", "unique_count", "user", None, ()),
    MeterInfo(6, "requests", "Requests", "request", "count", "size", {"kind": "get"}, ("region",)),
    MeterInfo(7, "hits", "Hits", "hit", "count", None, {"kind": "get"}, ()),
    MeterInfo(8, "visitors", "Visitors", "visitor", "unique_count", None, None, ()),
]


class Catalog:
    def __init__(self):
        self.meters = {m.key: m for m in METERS}
        self.customers = {i: CustomerInfo(i, f"ext-{i}", "UTC", "USD", i == 4) for i in range(1, 6)}

    def meter(self, key):
        return self.meters.get(key)

    def customer(self, customer_id):
        return self.customers.get(customer_id)

    def customer_by_external(self, external_id):
        return next((c for c in self.customers.values() if c.external_id == external_id), None)

    def ingest_view(self):
        return IngestView.of(self.meters, self.customers)


def stamp(us):
    seconds, micros = divmod(us, 1_000_000)
    from datetime import datetime, timezone
    text = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{micros // 1000:03d}Z" if micros % 3 else "Z")


def usual(rng):
    event = {"id": f"evt-{rng.randrange(10 ** 9)}", "customer_id": rng.choice([1, 2, 3, 5]),
             "meter": rng.choice(["api_calls", "seats", "eu_calls"]),
             "timestamp": stamp(NOW_US - rng.randrange(30 * DAY_US) // 1000 * 1000)}
    if rng.random() < 0.8:
        event["quantity"] = rng.choice([0, 1, 7, 10 ** 12, Decimal("0.25"), Decimal("1.000001")])
    if rng.random() < 0.7:
        event["properties"] = rng.choice([{}, {"region": "eu-west"}, {"region": "us-east", "n": [1, 2]},
                                          {"region": "eu-north", "flag": True}, {"x": "é" * 2000}])
    return event


# changes that make an event irregular (valid another way, or invalid)
CHANGES = [
    lambda e, r: e.pop("id", None),
    lambda e, r: e.update(id=""),
    lambda e, r: e.update(id="x" * (MAX_ID_LENGTH + 1)),
    lambda e, r: e.update(id="x" * MAX_ID_LENGTH),
    lambda e, r: e.update(id=42),
    lambda e, r: e.update(customer_id=True),
    lambda e, r: e.update(customer_id="1"),
    lambda e, r: e.update(customer_id=4),      # archived
    lambda e, r: e.update(customer_id=99),     # unknown
    lambda e, r: e.update(customer_id=None, customer="ext-2"),
    lambda e, r: (e.pop("customer_id", None), e.update(customer="ext-3")),
    lambda e, r: e.pop("customer_id", None),         # the batch's default, or missing
    lambda e, r: e.update(customer="ext-1"),   # both: customer_id wins
    lambda e, r: e.update(meter="nope"),
    lambda e, r: e.update(meter=None, feature="seats"),
    lambda e, r: (e.pop("meter", None), e.update(feature="api_calls")),
    lambda e, r: e.update(feature="seats"),    # both: meter wins
    lambda e, r: e.update(meter="gb", properties={"gb": Decimal("1.5")}),
    lambda e, r: e.update(meter="gb"),
    lambda e, r: e.update(meter="users", properties={"user": "u-1"}),
    lambda e, r: e.update(meter="users"),
    lambda e, r: e.update(meter="requests", properties={"kind": "get", "region": "eu"}),
    lambda e, r: e.update(quantity=-1),
    lambda e, r: e.update(quantity=10 ** 12 + 1),
    lambda e, r: e.update(quantity=1.5),
    lambda e, r: e.update(quantity=False),
    lambda e, r: e.update(quantity=Decimal("0.0000001")),
    lambda e, r: e.update(quantity=Decimal("NaN")),
    lambda e, r: e.pop("timestamp", None),
    lambda e, r: e.update(timestamp=None),
    lambda e, r: (e.pop("timestamp", None), e.update(ts=stamp(NOW_US))),
    lambda e, r: e.update(ts="garbage"),
    lambda e, r: e.update(timestamp="2026-01-01T00:00:00"),
    lambda e, r: e.update(timestamp="2026-01-01T00:00:00+02:00"),
    lambda e, r: e.update(timestamp="not a time at all!!"),
    lambda e, r: e.update(timestamp=stamp(NOW_US + 5 * 60 * 1_000_000)),
    lambda e, r: e.update(timestamp=stamp(NOW_US + 5 * 60 * 1_000_000 + 1000)),
    lambda e, r: e.update(timestamp=stamp(NOW_US - 35 * DAY_US)),
    lambda e, r: e.update(timestamp=stamp(NOW_US - 40 * DAY_US)),
    lambda e, r: e.update(timestamp=12345),
    lambda e, r: e.update(properties=None),
    lambda e, r: e.update(properties=[1]),
    lambda e, r: e.update(properties={"x": "y" * 5000}),
    lambda e, r: e.update(properties={"x": "é" * 2100}),
    lambda e, r: e.update(properties={"price": Decimal("1.10")}),
    lambda e, r: e.update(extra=1),
    lambda e, r: e.update(meter="hits", properties={"kind": "get"}),
    lambda e, r: e.update(meter="hits", properties={"kind": "put"}),
    lambda e, r: e.update(meter="visitors"),
    lambda e, r: e.update(quantity=None),
    lambda e, r: e.update(quantity=Decimal("1E+3")),
    lambda e, r: e.update(timestamp=stamp(NOW_US - 60_000_000).lower()),
    lambda e, r: e.update(timestamp=stamp(NOW_US - 60_000_000).replace("T", " ")),
    lambda e, r: e.update(timestamp=stamp(NOW_US)[:19] + ".1234567Z"),
    lambda e, r: e.update(timestamp=stamp(NOW_US - 3_600_000_000)[:19] + "+01:00"),
    lambda e, r: e.update(customer_id=2 ** 70),
    lambda e, r: e.update(timestamp=r.choice(["1969-12-31T23:59:59Z", "1969-12-31T23:59:59.999Z"])),
    lambda e, r: e.update(timestamp=stamp(NOW_US)[:19] + "Z\n"),
    lambda e, r: e.update(timestamp=stamp(NOW_US)[:19] + "Z\n" + stamp(NOW_US)[:19] + "Z"),
    lambda e, r: e.update(timestamp=stamp(NOW_US)[:10] + "T24:00:00Z"),
    lambda e, r: e.update(timestamp="２０２６" + stamp(NOW_US)[4:]),  # digits, but not ASCII ones
    lambda e, r: e.update(meter=["api_calls"]),  # not a key a dict can hold
]


def compare(raw, age_days, scope, default, index):
    catalog = Catalog()
    fast, checked = Ingest(catalog, NOW_US, age_days, scope), Ingest(catalog, NOW_US, age_days, scope)
    one, other = fast.row(raw, index, default), checked.checked_row(raw, index, default)
    if one is not None and other is not None and raw.get("id") is None:  # each made up an id of its own
        assert one.event_id.startswith("evt_") and other.event_id.startswith("evt_")
        one, other = one._replace(event_id=None, id_hash=None), other._replace(event_id=None, id_hash=None)
    assert one == other
    assert fast.problems.details == checked.problems.details


@pytest.mark.parametrize("seed", range(40))
def test_row_and_checked_row_agree(seed):
    rng = random.Random(seed)
    for index in range(250):
        raw = usual(rng)
        for change in rng.sample(CHANGES, rng.choice([0, 0, 1, 1, 2, 3])):
            change(raw, rng)
        compare(raw, rng.choice([0, 35]), rng.choice([None, None, 1, 2]), rng.choice([None, 2]), index)


@pytest.mark.parametrize("change", range(len(CHANGES)))
def test_each_change_alone(change):
    rng = random.Random(change)
    for _ in range(20):
        raw = usual(rng)
        CHANGES[change](raw, rng)
        for age_days in (0, 35):
            compare(raw, age_days, None, None, 3)


@pytest.mark.parametrize("raw", [None, 1, "event", [], [{"id": "a"}]])
def test_not_an_object(raw):
    compare(raw, 35, None, None, 0)


def test_the_usual_event_is_a_row_taken_in_one_pass(monkeypatch):
    """The comparison above would pass if both refused everything, or if `row`
    always handed over: the usual events are rows, and `checked_row` sees none."""
    rng = random.Random(7)
    ingest = Ingest(Catalog(), NOW_US, 35, None)
    handed = []
    checked = Ingest.checked_row
    monkeypatch.setattr(Ingest, "checked_row", lambda self, raw, *rest: handed.append(raw) or checked(self, raw, *rest))
    events = [usual(rng) for _ in range(200)]
    rows = [ingest.row(event) for event in events]
    assert all(row is not None for row in rows) and handed == []
    assert ingest.row({"id": "h", "customer_id": 1, "meter": "hits", "timestamp": stamp(NOW_US)}).value == 1_000_000
    eu = ingest.row({"id": "a", "customer_id": 1, "meter": "eu_calls", "timestamp": stamp(NOW_US),
                     "quantity": 2, "properties": {"region": "eu-west"}})
    assert (eu.customer_id, eu.meter_id, eu.ts, eu.quantity, eu.value, eu.matched, eu.properties) == \
        (1, 3, NOW_US, 2_000_000, 2_000_000, 1, '{"region":"eu-west"}')
    assert ingest.row({"id": "b", "customer_id": 1, "meter": "eu_calls", "timestamp": stamp(NOW_US)}).matched == 0


@pytest.mark.parametrize("customer_id, event_id", [(1, "a"), (42, "évènement-1"), (7, "\ud800lone"), (10 ** 12, "x" * 255)])
def test_the_dedup_key_is_the_stored_one(customer_id, event_id):
    """Stored events keep the hash they were stored with: it is blake2b-64 of "customer\\0id", signed."""
    import hashlib
    digest = hashlib.blake2b(f"{customer_id}\x00{event_id}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    assert id_hash(customer_id, event_id) == int.from_bytes(digest, "big", signed=True)


PLAIN = ["api_calls", "seats"]  # the meters without filter whose value is the quantity


def usual_batch(rng, size):
    events = []
    for _ in range(size):
        event = usual(rng)
        event["meter"] = rng.choice(PLAIN)
        events.append(event)
    return events


def each_row(events, age_days, scope, now_us=NOW_US):
    """The rows `row` gives one by one, and its problems."""
    ingest = Ingest(Catalog(), now_us, age_days, scope)
    return [ingest.row(raw, index) for index, raw in enumerate(events)], ingest.problems.details


@pytest.mark.parametrize("seed", range(30))
def test_usual_rows_and_row_agree(seed):
    """Random batches, most of usual events, some with changes (valid another
    way, or not): what usual_rows takes, `row` takes the same way, without a
    problem; the rest it leaves. Both kinds of batch occur."""
    rng = random.Random(seed)
    taken = left = 0
    for _ in range(120):
        events = usual_batch(rng, rng.choice([1, 2, 7, 40]))
        if rng.random() < 0.5:
            for change in rng.sample(CHANGES, rng.choice([1, 1, 2])):
                change(rng.choice(events), rng)
        if rng.random() < 0.1:
            rng.choice(events)["meter"] = "eu_calls"  # a meter with a filter: left to `row`
        if rng.random() < 0.05:
            events[rng.randrange(len(events))] = rng.choice([None, [], "e"])
        age_days, scope = rng.choice([0, 35]), rng.choice([None, None, None, 1])
        fast = Ingest(Catalog(), NOW_US, age_days, scope)
        found = fast.usual_rows(events)
        assert fast.problems.details == []
        if found is None:
            left += 1
            continue
        taken += 1
        assert (found, []) == each_row(events, age_days, scope)
    assert taken > 10 and left > 10


@pytest.mark.parametrize("change", range(len(CHANGES)))
def test_usual_rows_with_each_change(change):
    """A batch of usual events with one changed: taken only if `row` takes
    that event with no problem, and then the same."""
    rng = random.Random(change)
    for _ in range(10):
        events = usual_batch(rng, 5)
        CHANGES[change](events[2], rng)
        for age_days in (0, 35):
            found = Ingest(Catalog(), NOW_US, age_days, None).usual_rows(events)
            if found is not None:
                assert (found, []) == each_row(events, age_days, None)


def test_a_usual_batch_is_taken_at_once(monkeypatch):
    """batch_rows hands a usual batch to usual_rows whole: `row` sees none of
    it; the rows are those `row` gives, and a batch with one bad event is
    refused as before, by index."""
    rng = random.Random(3)
    events = usual_batch(rng, 200)
    expected, _ = each_row(events, 35, None)
    row = Ingest.row
    monkeypatch.setattr(Ingest, "row", lambda *args: pytest.fail("row called for a usual batch"))
    assert batch_rows({"events": events}, Ingest(Catalog(), NOW_US, 35, None)) == expected
    assert batch_rows({"events": events, "customer_id": 2}, Ingest(Catalog(), NOW_US, 35, None)) == expected
    monkeypatch.setattr(Ingest, "row", row)
    events[5]["quantity"] = -1
    with pytest.raises(ValidationError) as refused:
        batch_rows({"events": events}, Ingest(Catalog(), NOW_US, 35, None))
    assert [(d["index"], d["field"]) for d in refused.value.details] == [(5, "quantity")]


class _Rows:
    """The queries Catalog loads its maps with, answered from lists of dicts."""

    def __init__(self):
        self.meters = [{"id": m.id, "key": m.key, "name": m.name, "unit": m.unit, "aggregation": m.aggregation,
                        "value_property": m.value_property, "filter": json.dumps(m.filter) if m.filter else None,
                        "group_by": json.dumps(list(m.group_by))} for m in METERS]
        self.customers = [{"id": i, "external_id": f"ext-{i}", "timezone": "UTC", "currency": "USD",
                           "archived": int(i == 4)} for i in range(1, 6)]

    def rows(self, sql, params=()):
        return list(self.meters if "FROM meters" in sql else self.customers)


def test_the_catalogs_view_follows_its_loads():
    """The app's Catalog makes its IngestView once per load of its maps, and
    anew after a customer or a meter changes: an archived customer's batch,
    or a meter's once it has a filter, is then left to `row`."""
    from billing.api.catalog import Catalog as AppCatalog
    db = _Rows()
    catalog = AppCatalog(db)
    events = [{"id": "a", "customer_id": 1, "meter": "api_calls", "timestamp": stamp(NOW_US)}]
    first = catalog.ingest_view()
    assert first is catalog.ingest_view()  # made once for the maps loaded
    assert first.live == {1, 2, 3, 5} and first.plain_meters == {"api_calls": 1, "seats": 2, "visitors": 8}
    assert Ingest(catalog, NOW_US, 0, None).usual_rows(events) is not None
    db.customers[0]["archived"] = 1
    catalog.invalidate_customers()
    assert 1 not in catalog.ingest_view().live
    assert Ingest(catalog, NOW_US, 0, None).usual_rows(events) is None
    db.customers[0]["archived"] = 0
    catalog.invalidate_customers()
    db.meters[0]["filter"] = json.dumps({"region": "eu-west"})
    catalog.invalidate_meters()
    assert "api_calls" not in catalog.ingest_view().plain_meters
    assert Ingest(catalog, NOW_US, 0, None).usual_rows(events) is None
    events[0]["meter"] = "seats"
    assert Ingest(catalog, NOW_US, 0, None).usual_rows(events) is not None


def test_an_ingest_workers_snapshot_has_the_same_view():
    from billing.api.ingest_worker import Snapshot
    catalog = Catalog()
    snapshot = Snapshot([tuple(m.__dict__.values()) for m in METERS],
                        [tuple(c.__dict__.values()) for c in catalog.customers.values()])
    assert snapshot.ingest_view() == catalog.ingest_view()


def test_a_catalog_without_a_view_leaves_batches_to_row():
    """A catalog that only answers meter, customer and customer_by_external
    (the minimum `Ingest` asks): every batch goes event by event, the same."""
    class Minimal(Catalog):
        ingest_view = None
    events = usual_batch(random.Random(5), 20)
    assert Ingest(Minimal(), NOW_US, 35, None).usual_rows(events) is None
    assert batch_rows({"events": events}, Ingest(Minimal(), NOW_US, 35, None)) == each_row(events, 35, None)[0]


def test_the_last_year_bound_holds_for_whole_batches():
    """With the clock near the end of the years taken, a timestamp past them
    (within 5 minutes of now) is refused by `row`, so left by usual_rows."""
    from datetime import datetime, timezone
    now_us = int(datetime(9998, 12, 31, 23, 58, tzinfo=timezone.utc).timestamp()) * 1_000_000
    events = [{"id": "a", "customer_id": 1, "meter": "api_calls", "timestamp": "9999-01-01T00:00:00Z"}]
    checked = Ingest(Catalog(), now_us, 0, None)
    assert checked.row(events[0]) is None and checked.problems.details
    assert Ingest(Catalog(), now_us, 0, None).usual_rows(events) is None
    events[0]["timestamp"] = "9998-12-31T23:59:00Z"
    found = Ingest(Catalog(), now_us, 0, None).usual_rows(events)
    assert found is not None and (found, []) == each_row(events, 0, None, now_us)

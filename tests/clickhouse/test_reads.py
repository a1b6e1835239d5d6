"""The same questions answered by a server reading ClickHouse and by one
reading only the node, over the same stored events, give the same JSON
(§13): usage over all customers with every aggregation, filters, groups,
windows in a DST timezone and cut buckets, and the event list with its
filters and pages. With a backlog or with ClickHouse down the node answers."""

import itertools
from decimal import Decimal
from urllib.parse import quote

import pytest

from billing import clock
from billing.domain import times
from tests.clickhouse.helpers import caught_up, create_meter, make_customer, start

METERS = [("q_sum", "sum", {}), ("q_count", "count", {}), ("q_max", "max", {}), ("q_min", "min", {}),
          ("q_avg", "avg", {}), ("q_latest", "latest", {}),
          ("q_users", "unique_count", {"value_property": "user"}),
          ("q_eu", "sum", {"filter": {"region": "eu"}}),
          ("q_bytes", "max", {"value_property": "bytes"})]
REGIONS = ["eu", "us", None, 7, True, "ap"]
# around the end of summer time in Berlin (2025-10-26, a 25-hour day)
START = times.to_micros(times.parse_instant("2025-10-24T00:00:00Z"))
STEP_US = 37 * 60 * 1_000_000 + 13_000_017  # events every 37 min 13.000017 s: buckets cut anywhere


def _events(customers):
    events = []
    for i in range(420):
        ts = START + i * STEP_US
        region = REGIONS[i % len(REGIONS)]
        properties = {"user": f"u{i % 17}", "bytes": Decimal((i * 7919) % 1000) + Decimal("0.25")}
        if region is not None:
            properties["region"] = region
        for key, _, _ in METERS:
            if (i + len(key)) % 3:
                events.append({"id": f"{key}-{i}", "customer_id": customers[i % len(customers)], "meter": key,
                               "quantity": Decimal(f"{(i * 31) % 100}.{i % 1000:03d}"), "timestamp": times.format_micros(ts),
                               "properties": properties})
    return events


def _store(server):
    customers = [make_customer(server.admin, timezone=zone)
                 for zone in ("UTC", "Europe/Berlin", "Asia/Kathmandu")]
    for key, aggregation, fields in METERS:
        create_meter(server.admin, key, aggregation, group_by=["region"], **fields)
    events = _events(customers)
    for first in range(0, len(events), 1000):
        reply = server.admin.post("/v1/events/batch", {"events": events[first:first + 1000]})
        assert reply.status == 200, reply
    # retractions, and an id sent again after its retraction
    for key, i in (("q_sum", 5), ("q_latest", 401), ("q_users", 9), ("q_sum", 11)):
        assert server.admin.delete(f"/v1/customers/{customers[i % 3]}/events/{key}-{i}").status == 200
    again = {"id": "q_sum-11", "customer_id": customers[11 % 3], "meter": "q_sum", "quantity": Decimal("3.5"),
             "timestamp": "2025-10-26T01:30:00+02:00", "properties": {"region": "eu"}}
    assert server.admin.post("/v1/events", again).status == 201
    return customers


# (interval, timezone, group_by): every interval, zone and grouping, not all their products
SHAPES = [("day", "UTC", None), ("hour", "Europe/Berlin", None), ("day", "Europe/Berlin", "region"),
          ("month", "Asia/Kathmandu", "customer"), ("hour", "Asia/Kathmandu", "region"), ("day", "UTC", "customer"),
          ("month", "Europe/Berlin", "region")]


def _usage_questions():
    # whole local days, edges inside buckets, edges on events (which cut their buckets), months
    ranges = [("2025-10-24", "2025-10-30"), ("2025-10-25T22:07:00Z", "2025-10-27T03:00:00.5Z"),
              (times.format_micros(START + 50 * STEP_US), times.format_micros(START + 120 * STEP_US)),
              ("2025-10-01", "2025-12-01")]
    for (key, _, _), (low, high), (interval, zone, group) in itertools.product(METERS, ranges, SHAPES):
        if interval == "hour" and low == "2025-10-01":
            continue
        path = (f"/v1/analytics/usage?meter={key}&from={quote(low)}&to={quote(high)}&interval={interval}"
                f"&timezone={quote(zone)}")
        yield path + (f"&group_by={group}" if group else "")


def _list_questions(customers):
    for customer, meter, low, high, limit in itertools.product(
            (None, customers[1]), (None, "q_sum", "q_users"), (None, "2025-10-25T10:00:00Z"),
            (None, "2025-10-26"), (40, 500)):
        args = [f"limit={limit}"]
        for name, value in (("customer_id", customer), ("meter", meter), ("from", low), ("to", high)):
            if value is not None:
                args.append(f"{name}={quote(str(value))}")
        yield "/v1/events?" + "&".join(args)


def _pages(server, path, served):
    """Every page of a list (following next_cursor), each one checked for who answered."""
    pages, cursor = [], None
    while True:
        reply = server.admin.get(path + (f"&cursor={cursor}" if cursor else ""))
        assert reply.status == 200, reply
        assert reply.headers.get("X-Served-By") == served, path
        pages.append(reply.json)
        cursor = reply.json["next_cursor"]
        if cursor is None:
            return pages


BAD = ["/v1/analytics/usage?meter=nope", "/v1/analytics/usage?meter=q_sum&group_by=zone",
       "/v1/analytics/usage?meter=q_sum&timezone=Mars/Base", "/v1/events?cursor=xyz", "/v1/events?meter=nope",
       "/v1/events?from=yesterday", "/v1/events?customer_id=999"]


def _answers(server, customers, served):
    clock.pin(times.parse_instant("2025-11-20T12:00:00Z"))
    usage = {}
    for path in _usage_questions():
        reply = server.admin.get(path)
        assert reply.status == 200, (path, reply)
        assert reply.headers.get("X-Served-By") == served, path
        usage[path] = reply.json
    lists = {path: _pages(server, path, served) for path in _list_questions(customers)}
    bad = {path: (reply.status, reply.json) for path in BAD for reply in [server.admin.get(path)]}
    return usage, lists, bad


@pytest.fixture(scope="module")
def stored(tmp_path_factory, clickhouse_server):
    """One database of events, shipped to ClickHouse: its path and customers."""
    folder = tmp_path_factory.mktemp("reads")
    clock.pin(times.parse_instant("2025-11-20T12:00:00Z"))
    server = start(folder, clickhouse_server)
    try:
        customers = _store(server)
        server.app.shipper.run_once()
        yield server.app.config.db_path, customers, server.app.config.clickhouse_url
    finally:
        server.stop()


def test_clickhouse_and_the_node_answer_the_same(tmp_path, clickhouse, stored):
    path, customers, url = stored
    with caught_up(tmp_path, path, url) as shipping:
        from_clickhouse = _answers(shipping, customers, "clickhouse")
        (labels, _), *_ = shipping.app.metrics.clickhouse_reads.samples()
        assert labels == ("clickhouse",)
    plain = start(tmp_path, db_path=path)
    try:
        from_node = _answers(plain, customers, None)
    finally:
        plain.stop()
    usage, lists, bad = from_clickhouse
    assert len(usage) > 150 and any(page["data"] for pages in lists.values() for page in pages)
    assert any(answer["value"] not in (0, None) for answer in usage.values())
    for path in usage:
        assert usage[path] == from_node[0][path], path
    for path in lists:
        assert lists[path] == from_node[1][path], path
    assert bad == from_node[2]


def test_with_a_backlog_the_node_answers_what_clickhouse_has_not_seen(tmp_path, clickhouse, stored):
    path, customers, url = stored
    with caught_up(tmp_path, path, url) as server:
        question = "/v1/analytics/usage?meter=q_sum&from=2025-10-24&to=2025-10-30"
        before = server.admin.get(question)
        assert before.headers["X-Served-By"] == "clickhouse"
        late = {"id": "late-1", "customer_id": customers[0], "meter": "q_sum", "quantity": 1000,
                "timestamp": "2025-10-25T12:00:00Z"}
        assert server.admin.post("/v1/events", late).status == 201
        after = server.admin.get(question)
        assert after.headers["X-Served-By"] == "node"
        assert after.json["value"] == before.json["value"] + 1000
        listed = server.admin.get(f"/v1/events?customer_id={customers[0]}&from=2025-10-25T11:59:00Z"
                                  f"&to=2025-10-25T12:01:00Z")
        assert listed.headers["X-Served-By"] == "node"
        assert "late-1" in [e["id"] for e in listed.json["data"]]
        server.app.shipper.run_once()
        shipped = server.admin.get(question)
        assert shipped.headers["X-Served-By"] == "clickhouse" and shipped.json == after.json
        assert server.admin.delete(f"/v1/customers/{customers[0]}/events/late-1").status == 200
        retracted = server.admin.get(question)
        assert retracted.headers["X-Served-By"] == "node" and retracted.json == before.json
        server.app.shipper.run_once()


def test_with_clickhouse_down_the_node_answers(tmp_path, clickhouse, stored):
    path, customers, url = stored
    with caught_up(tmp_path, path, url) as server:
        question = "/v1/analytics/usage?meter=q_avg&from=2025-10-24&to=2025-10-30&group_by=region"
        up = server.admin.get(question)
        assert up.headers["X-Served-By"] == "clickhouse"
        clickhouse.stop()
        down = server.admin.get(question)  # the read fails over within its timeout
        assert down.status == 200 and down.headers["X-Served-By"] == "node" and down.json == up.json
        listed = server.admin.get("/v1/events?meter=q_avg&limit=3")
        assert listed.status == 200 and listed.headers["X-Served-By"] == "node"
        assert server.app.clickhouse.last_error

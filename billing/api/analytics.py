"""Analytics (§10) for resources — revenue per resource and utilization
(occupied capacity-minutes ÷ available capacity-minutes) by day; available
time ends now, so hours still to come do not dilute today's figure — and
usage of a meter over all customers. The overview and revenue are in
`revenue`."""

import bisect
from datetime import timedelta
from decimal import Decimal

from .. import clock, jsonutil
from ..domain import money, times
from ..domain.rollup import combined
from ..errors import ValidationError
from ..store.db import named
from . import clickhouse_reads, rollups
from .common import int_arg
from .revenue import choice_arg, range_args, zone_arg
from .sessions import minutes

MAX_DAYS = 366
PERCENT = Decimal("0.01")


def _percent(occupied_seconds, available_seconds):
    if not available_seconds:
        return "0.00"
    value = Decimal(occupied_seconds) * 100 / Decimal(available_seconds)
    return str(value.quantize(PERCENT, rounding=money.ROUNDING))


def _range(request, zone):
    today = times.local_date(clock.now(), zone)
    bounds = {}
    for name, default in (("from", today - timedelta(days=6)), ("to", today + timedelta(days=1))):
        raw = request.arg(name)
        try:
            bounds[name] = times.parse_date(raw) if raw else default
        except times.TimeError as exc:
            raise ValidationError([{"field": name, "message": f"{exc} (a date like 2025-09-01)"}]) from None
    if bounds["to"] <= bounds["from"]:
        raise ValidationError([{"field": "to", "message": "must be after from"}])
    if (bounds["to"] - bounds["from"]).days > MAX_DAYS:
        raise ValidationError([{"field": "to", "message": f"the range may hold at most {MAX_DAYS} days"}])
    return bounds["from"], bounds["to"]


def resources(request):
    """GET /v1/analytics/resources?from=YYYY-MM-DD&to=YYYY-MM-DD&resource_id&timezone (days are local)."""
    zone_name = request.arg("timezone") or "UTC"
    try:
        zone = times.zone_or_error(zone_name)
    except times.TimeError:
        raise ValidationError([{"field": "timezone", "message": f"unknown timezone {zone_name!r}"}]) from None
    first, last = _range(request, zone)
    resource_id = int_arg(request, "resource_id", minimum=1)
    days = []
    day = first
    while day < last:
        days.append((day, times.to_micros(times.local_midnight(day, zone)),
                     times.to_micros(times.local_midnight(day + timedelta(days=1), zone))))
        day += timedelta(days=1)
    start_us = times.to_micros(times.local_midnight(first, zone))
    end_us = times.to_micros(times.local_midnight(last, zone))
    now_us = times.to_micros(clock.now())
    resource_rows, by_resource = _resources_and_sessions(request.app.db, resource_id, start_us, end_us)
    result, totals = [], {}
    for resource in resource_rows:
        entry, revenue = _resource_view(resource, by_resource.get(resource["id"], ()), days, now_us)
        totals[resource["currency"]] = totals.get(resource["currency"], 0) + revenue
        result.append(entry)
    return {"from": first.isoformat(), "to": last.isoformat(), "timezone": zone_name, "resources": result,
            "revenue": {c: money.format_minor(v, c) for c, v in sorted(totals.items())}}


def _resources_and_sessions(db, resource_id, start_us, end_us):
    """The live resources (one with `resource_id`) and {resource id: its sessions in the range}."""
    where = "deleted_at IS NULL" + (" AND id = ?" if resource_id else "")
    with db.reader() as conn:
        resource_rows = named(conn, f"SELECT id, name, capacity, currency FROM resources WHERE {where} ORDER BY id",
                              (resource_id,) if resource_id else ()).fetchall()
        sessions = named(
            conn, "SELECT resource_id, started_at, ended_at, cost FROM sessions WHERE started_at < ?"
            " AND (ended_at IS NULL OR ended_at >= ?)"  # >=: a session ending at `from` bills in range
            + (" AND resource_id = ?" if resource_id else ""),
            (end_us, start_us, resource_id) if resource_id else (end_us, start_us)).fetchall()
    by_resource = {}
    for session in sessions:
        by_resource.setdefault(session["resource_id"], []).append(session)
    return resource_rows, by_resource


def _occupancy(sessions, days, now_us):
    """([occupied seconds], [revenue]) per day of a resource's sessions: a
    session occupies its time up to its end (now while it runs) and bills on
    the day it ended."""
    occupied, revenue = [0] * len(days), [0] * len(days)
    for session in sessions:
        started, ended, cost = session["started_at"], session["ended_at"], session["cost"]
        end = ended if ended is not None else now_us
        for index, (_, day_start, day_end) in enumerate(days):
            overlap = min(end, day_end) - max(started, day_start)
            if overlap > 0:
                occupied[index] += overlap // 1_000_000
            if ended is not None and day_start <= ended < day_end:
                revenue[index] += cost
    return occupied, revenue


def _resource_view(resource, sessions, days, now_us):
    """(the resource's entry with its days, its revenue in minor units)."""
    capacity, currency = resource["capacity"], resource["currency"]
    occupied, revenue = _occupancy(sessions, days, now_us)
    # hours that have not come yet were not available
    available = [capacity * max(0, min(day_end, now_us) - day_start) // 1_000_000 for _, day_start, day_end in days]
    entries = [{"date": day.isoformat(), "revenue": money.format_minor(day_revenue, currency),
                "occupied_minutes": minutes(day_occupied), "available_minutes": minutes(day_available),
                "utilization_percent": _percent(day_occupied, day_available)}
               for (day, _, _), day_occupied, day_revenue, day_available in zip(days, occupied, revenue, available)]
    all_occupied, all_available, all_revenue = sum(occupied), sum(available), sum(revenue)
    return {"id": resource["id"], "name": resource["name"], "capacity": capacity, "currency": currency,
            "revenue": money.format_minor(all_revenue, currency),
            "occupied_minutes": minutes(all_occupied), "available_minutes": minutes(all_available),
            "utilization_percent": _percent(all_occupied, all_available), "days": entries}, all_revenue


# -- usage over all customers ------------------------------------------------------

USAGE_INTERVALS = ("hour", "day", "month")
MAX_USAGE_BUCKETS = 10_000


def _recent_windows(request, zone, interval):
    """The `from`/`to` range (default: the last 30 local days, today included)
    and its local windows, at most MAX_USAGE_BUCKETS of them."""
    today = times.local_date(clock.now(), zone)
    start, end = range_args(request, zone, times.local_midnight(today - timedelta(days=29), zone),
                            times.local_midnight(today + timedelta(days=1), zone))
    windows = times.windows(start, end, interval, zone)
    if len(windows) > MAX_USAGE_BUCKETS:
        raise ValidationError([{"field": "interval", "message": f"the range holds more than {MAX_USAGE_BUCKETS:,} buckets"}])
    return start, end, windows


def usage(request):
    """GET /v1/analytics/usage?meter&from&to&interval=hour|day|month&group_by=customer|<property>&timezone:
    the meter's aggregation over every customer's matching events, per local bucket."""
    app = request.app
    zone_name, zone = zone_arg(request)
    key = request.arg("meter")
    meter = app.catalog.meter(key) if key else None
    if meter is None:
        raise ValidationError([{"field": "meter", "message": "is required: a meter key" if not key
                                else f"unknown meter {key!r}"}])
    interval = choice_arg(request, "interval", USAGE_INTERVALS, "day")
    group_by = request.arg("group_by") or None
    if group_by is not None and group_by != "customer" and group_by not in meter.group_by:
        raise ValidationError([{"field": "group_by", "message": f"must be customer or one of the meter's group_by "
                                                                f"keys ({', '.join(meter.group_by) or 'none'})"}])
    start, end, windows = _recent_windows(request, zone, interval)
    starts = [times.to_micros(a) for a, _ in windows]  # consecutive, from start to end
    by = rollups.BY_CUSTOMER if group_by == "customer" else group_by
    start_us, end_us = times.to_micros(start), times.to_micros(end)
    found, source = clickhouse_reads.usage_pieces(app, meter, start_us, end_us, starts[1:], by), "clickhouse"
    if found is None:
        source = "node"
        with app.db.snapshot() as conn:  # whole buckets from the rollups, cut ones from the raw events
            found = rollups.pieces(conn, meter, None, start_us, end_us, starts[1:], by)
    cells = {}  # window index → {group: Partial}
    for ts, group, part in found:
        window = cells.setdefault(bisect.bisect_right(starts, ts) - 1, {})
        window[group] = part.merge(window[group]) if group in window else part
    data = []
    for index, (a, b) in enumerate(windows):
        mine = cells.get(index, {})
        entry = {"start": times.format_micros(times.to_micros(a)), "end": times.format_micros(times.to_micros(b)),
                 "value": combined(mine.values()).value(meter.aggregation)}
        if group_by:
            entry["groups"] = _usage_groups(meter, group_by, mine)
        data.append(entry)
    total = combined(part for window in cells.values() for part in window.values())
    return clickhouse_reads.served(app, {
        "meter": meter.key, "aggregation": meter.aggregation, "unit": meter.unit,
        "from": times.format_instant(start), "to": times.format_instant(end), "interval": interval,
        "timezone": zone_name, "group_by": group_by, "value": total.value(meter.aggregation), "data": data}, source)


def _usage_groups(meter, group_by, parts):
    """The groups of one window ({group: Partial})."""
    if group_by == "customer":
        return [{"group": {"customer_id": customer_id}, "value": parts[customer_id].value(meter.aggregation)}
                for customer_id in sorted(parts)]
    ordered = sorted(parts, key=lambda value: (value in (None, "null"), value or ""))
    return [{"group": {group_by: None if value in (None, "null") else jsonutil.decode(value)},
             "value": parts[value].value(meter.aggregation)} for value in ordered]


def event_counts(request):
    """GET /v1/analytics/events?from&to&interval=hour|day|month&timezone: events
    received per local bucket, all meters and customers (the dashboard's chart)."""
    zone_name, zone = zone_arg(request)
    interval = choice_arg(request, "interval", USAGE_INTERVALS, "day")
    start, end, windows = _recent_windows(request, zone, interval)
    bounds = [(times.to_micros(a), times.to_micros(b)) for a, b in windows]
    with request.app.db.snapshot() as conn:
        counts = rollups.count_events(conn, bounds)
    data = [{"start": times.format_instant(a), "end": times.format_instant(b), "count": count}
            for (a, b), count in zip(windows, counts)]
    return {"from": times.format_instant(start), "to": times.format_instant(end), "interval": interval,
            "timezone": zone_name, "total": sum(counts), "data": data}

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
from ..domain.aggregation import aggregate
from ..errors import ValidationError
from ..store.db import scalar
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
    start_us, end_us = days[0][1], days[-1][2]
    now_us = times.to_micros(clock.now())
    where = "deleted_at IS NULL" + (" AND id = ?" if resource_id else "")
    with request.app.db.reader() as conn:
        resource_rows = conn.execute(f"SELECT id, name, capacity, currency FROM resources WHERE {where} ORDER BY id",
                                     (resource_id,) if resource_id else ()).fetchall()
        sessions = conn.execute(
            "SELECT resource_id, started_at, ended_at, cost FROM sessions WHERE started_at < ?"
            " AND (ended_at IS NULL OR ended_at >= ?)"  # >=: a session ending at `from` bills in range
            + (" AND resource_id = ?" if resource_id else ""),
            (end_us, start_us, resource_id) if resource_id else (end_us, start_us)).fetchall()
    by_resource = {}
    for row in sessions:
        by_resource.setdefault(row[0], []).append(row)
    result, totals = [], {}
    for rid, name, capacity, currency in resource_rows:
        entries = []
        all_occupied = all_available = all_revenue = 0
        for day, day_start, day_end in days:
            occupied = revenue = 0
            for _, started, ended, cost in by_resource.get(rid, ()):
                end = ended if ended is not None else now_us
                overlap = min(end, day_end) - max(started, day_start)
                if overlap > 0:
                    occupied += overlap // 1_000_000
                if ended is not None and day_start <= ended < day_end:
                    revenue += cost
            # hours that have not come yet were not available
            available = capacity * max(0, min(day_end, now_us) - day_start) // 1_000_000
            all_occupied, all_available, all_revenue = all_occupied + occupied, all_available + available, \
                all_revenue + revenue
            entries.append({"date": day.isoformat(), "revenue": money.format_minor(revenue, currency),
                            "occupied_minutes": minutes(occupied), "available_minutes": minutes(available),
                            "utilization_percent": _percent(occupied, available)})
        totals[currency] = totals.get(currency, 0) + all_revenue
        result.append({"id": rid, "name": name, "capacity": capacity, "currency": currency,
                       "revenue": money.format_minor(all_revenue, currency),
                       "occupied_minutes": minutes(all_occupied), "available_minutes": minutes(all_available),
                       "utilization_percent": _percent(all_occupied, all_available), "days": entries})
    return {"from": first.isoformat(), "to": last.isoformat(), "timezone": zone_name, "resources": result,
            "revenue": {c: money.format_minor(v, c) for c, v in sorted(totals.items())}}


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
    bounds = [(times.to_micros(a), times.to_micros(b)) for a, b in windows]
    select = "SELECT ts, seq, value"
    params = []
    if group_by == "customer":
        select += ", customer_id"
    elif group_by:
        select += ", json_quote(json_extract(properties, ?))"
        params.append(f'$."{group_by}"')
    with app.db.reader() as conn:
        rows = conn.execute(select + " FROM events WHERE meter_id = ? AND ts >= ? AND ts < ? AND matched = 1",
                            (*params, meter.id, bounds[0][0], bounds[-1][1])).fetchall()
    starts = [b[0] for b in bounds]
    per_bucket = [[] for _ in bounds]
    for row in rows:
        ts, *_ = row
        per_bucket[bisect.bisect_right(starts, ts) - 1].append(row)
    data = []
    for (bucket_start, bucket_end), bucket_rows in zip(bounds, per_bucket):
        entry = {"start": times.format_micros(bucket_start), "end": times.format_micros(bucket_end),
                 "value": aggregate(meter.aggregation, bucket_rows)}
        if group_by:
            entry["groups"] = _usage_groups(meter, group_by, bucket_rows)
        data.append(entry)
    return {"meter": meter.key, "aggregation": meter.aggregation, "unit": meter.unit,
            "from": times.format_instant(start), "to": times.format_instant(end), "interval": interval,
            "timezone": zone_name, "group_by": group_by, "value": aggregate(meter.aggregation, rows), "data": data}


def _usage_groups(meter, group_by, rows):
    grouped = {}
    for row in rows:
        *_, group = row  # (ts, seq, value, group)
        grouped.setdefault(group, []).append(row)
    if group_by == "customer":
        return [{"group": {"customer_id": customer_id}, "value": aggregate(meter.aggregation, group_rows)}
                for customer_id, group_rows in sorted(grouped.items())]
    ordered = sorted(grouped.items(), key=lambda kv: (kv[0] in (None, "null"), kv[0] or ""))
    return [{"group": {group_by: None if value in (None, "null") else jsonutil.decode(value)},
             "value": aggregate(meter.aggregation, group_rows)} for value, group_rows in ordered]


def event_counts(request):
    """GET /v1/analytics/events?from&to&interval=hour|day|month&timezone: events
    stored per local bucket, all meters and customers (the dashboard's chart)."""
    zone_name, zone = zone_arg(request)
    interval = choice_arg(request, "interval", USAGE_INTERVALS, "day")
    start, end, windows = _recent_windows(request, zone, interval)
    data = []
    with request.app.db.reader() as conn:
        for a, b in windows:
            count = scalar(conn, "SELECT count(*) FROM events WHERE ts >= ? AND ts < ?",
                           (times.to_micros(a), times.to_micros(b)))
            data.append({"start": times.format_instant(a), "end": times.format_instant(b), "count": count})
    return {"from": times.format_instant(start), "to": times.format_instant(end), "interval": interval,
            "timezone": zone_name, "total": sum(d["count"] for d in data), "data": data}

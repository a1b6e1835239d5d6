"""Analytics (§10) for resources: revenue per resource and utilization
(occupied capacity-minutes ÷ available capacity-minutes) by day. Available
time ends now: hours still to come do not dilute today's figure."""

from datetime import timedelta
from decimal import Decimal

from .. import clock
from ..domain import money, times
from ..errors import ValidationError
from .common import int_arg
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

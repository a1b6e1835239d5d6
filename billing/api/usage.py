"""Usage (§4): exact aggregates per meter over a half-open range, with local
windows and property groups."""

import bisect

from .. import clock, jsonutil
from ..domain import times
from ..domain.rollup import value_of
from ..errors import NotFound, ValidationError
from . import rollups, subscriptions
from .common import path_int

WINDOWS = ("hour", "day", "month")
MAX_WINDOWS = 10_000


def default_period(app, customer_id, zone):
    """The customer's current billing period: the open subscription period, or
    the local calendar month without a subscription."""
    now = clock.now()
    return subscriptions.current_period(app, customer_id, zone, now) or times.calendar_month_bounds(now, zone)


def _bounds(request, zone, app, customer_id):
    raw_from, raw_to = request.arg("from"), request.arg("to")
    problems = []
    parsed = {}
    for name, raw in (("from", raw_from), ("to", raw_to)):
        if raw:
            try:
                parsed[name] = times.parse_bound(raw, zone)
            except times.TimeError as exc:
                problems.append({"field": name, "message": str(exc)})
    if problems:
        raise ValidationError(problems)
    if "from" not in parsed or "to" not in parsed:
        start, end = default_period(app, customer_id, zone)
        parsed.setdefault("from", start)
        parsed.setdefault("to", end)
    if parsed["from"] >= parsed["to"]:
        raise ValidationError([{"field": "to", "message": "must be after from"}])
    return parsed["from"], parsed["to"]


def _group_view(name, key):
    return {name: None if key is None else jsonutil.decode(key)}


def meter_usage(app, conn, meter, customer_id, start_us, end_us, window_bounds=None, group_by=None):
    """The §4 usage entry of one meter: whole 15-minute buckets from the
    rollups, buckets cut by the range or a window boundary from the raw
    events, combined exactly in Python integers; storage GB-days of days not
    closed yet are added live."""
    starts = [start for start, _ in window_bounds] if window_bounds else [start_us]
    found = rollups.pieces(conn, meter, customer_id, start_us, end_us, starts[1:], group_by)
    found += rollups.live_pieces(app.storage.live_rows(conn, meter, customer_id, start_us, end_us,
                                                       with_group=bool(group_by)), group_by)
    cells = {}  # (window index, group) → Partial
    for ts, group, part in found:
        key = (bisect.bisect_right(starts, ts) - 1, None if group == "null" else group)
        cell = cells.get(key)
        cells[key] = part if cell is None else cell.merge(part)
    entry = {"meter": meter.key, "aggregation": meter.aggregation, "unit": meter.unit,
             "value": value_of(cells.values(), meter.aggregation)}
    if window_bounds is not None:
        entry["windows"] = _windows(meter, window_bounds, cells, group_by)
    if group_by:
        entry["groups"] = _groups(meter, cells, group_by)
    return entry


def _windows(meter, window_bounds, cells, group_by):
    """The entries of the windows from the cells ((window index, group) → Partial)."""
    aggregation, text = meter.aggregation, times.format_micros
    if not group_by:  # a cell per window at most
        nothing = value_of((), aggregation)
        return [{"start": text(start), "end": text(end),
                 "value": cells[(index, None)].value(aggregation) if (index, None) in cells else nothing}
                for index, (start, end) in enumerate(window_bounds)]
    by_window = {}
    for key, part in cells.items():
        by_window.setdefault(key[0], {})[key] = part
    windows = []
    for index, (start, end) in enumerate(window_bounds):
        mine = by_window.get(index, {})
        windows.append({"start": text(start), "end": text(end), "value": value_of(mine.values(), aggregation),
                        "groups": _groups(meter, mine, group_by)})
    return windows


def _groups(meter, cells, group_by):
    grouped = {}
    for (_, group), part in cells.items():
        grouped.setdefault(group, []).append(part)
    return [{"group": _group_view(group_by, key), "value": value_of(grouped[key], meter.aggregation)}
            for key in sorted(grouped, key=lambda key: (key is None, key or ""))]


def get_usage(request, customer_id):
    customer_id = path_int(customer_id, "Customer")
    request.check_customer(customer_id)
    app = request.app
    customer = app.catalog.customer(customer_id)
    if customer is None:
        raise NotFound(f"Customer {customer_id} not found.")
    zone = times.zone_or_error(customer.timezone)
    start, end = _bounds(request, zone, app, customer_id)
    meter_key = request.arg("meter")
    selected = _selected(app, meter_key)
    window = request.arg("window")
    if window is not None and window not in WINDOWS:
        raise ValidationError([{"field": "window", "message": "must be hour, day or month"}])
    group_by = request.arg("group_by")
    if group_by:
        # a named meter must declare the key; across all meters, those that declare it are grouped
        bad = [m.key for m in selected if group_by not in m.group_by]
        if bad and (meter_key or len(bad) == len(selected)):
            raise ValidationError([{"field": "group_by", "message":
                                    f"{group_by!r} is not a declared group_by key of meter {', '.join(bad)}"}])
    window_bounds = _window_bounds(start, end, window, zone) if window else None
    start_us, end_us = times.to_micros(start), times.to_micros(end)
    with app.db.snapshot() as conn:  # one instant for every read of every meter's figure
        usage = [meter_usage(app, conn, m, customer_id, start_us, end_us, window_bounds,
                             group_by if group_by in m.group_by else None)
                 for m in selected]
    return {"customer_id": customer_id, "from": times.format_instant(start),
            "to": times.format_instant(end), "usage": usage}


def _selected(app, meter_key):
    """The meters asked for: the named one, else all of them by key."""
    meters = app.catalog.meters()
    if not meter_key:
        return sorted(meters.values(), key=lambda m: m.key)
    if meter_key not in meters:
        raise ValidationError([{"field": "meter", "message": f"unknown meter {meter_key!r}"}])
    return [meters[meter_key]]


def _window_bounds(start, end, window, zone):
    """The (start, end) µs of the local windows of the range, at most MAX_WINDOWS."""
    too_many = ValidationError([{"field": "window", "message": f"the range holds more than {MAX_WINDOWS:,} windows"}])
    # bound the count before building anything (a month is at least 28 days)
    span_hours = (end - start).total_seconds() / 3600
    at_least = {"hour": span_hours - 2, "day": span_hours / 25 - 1, "month": span_hours / (31 * 24) - 1}[window]
    if at_least > MAX_WINDOWS:
        raise too_many
    window_bounds = [(times.to_micros(a), times.to_micros(b)) for a, b in times.windows(start, end, window, zone)]
    if len(window_bounds) > MAX_WINDOWS:
        raise too_many
    return window_bounds

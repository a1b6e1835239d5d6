"""Analytics (§10): the overview and revenue. Money is always per currency,
never summed across currencies; buckets are local to the `timezone` asked
for (default UTC).

Revenue comes from the lines of issued and paid invoices (drafts, approvals
pending and void invoices are not revenue). Every line lands in exactly one
group, so groups add up to their bucket and buckets to the invoices' totals.
"""

from datetime import timedelta

from .. import clock
from ..domain import money, times
from ..errors import ValidationError
from ..store.db import named, scalar

REVENUE = ("issued", "paid")
INTERVALS = ("day", "month")
GROUPS = ("customer", "meter", "plan", "resource")
BASES = ("issued", "period")
MAX_BUCKETS = 1000


def zone_arg(request):
    name = request.arg("timezone") or "UTC"
    try:
        return name, times.zone_or_error(name)
    except times.TimeError:
        raise ValidationError([{"field": "timezone", "message": f"unknown timezone {name!r}"}]) from None


def choice_arg(request, name, allowed, default):
    value = request.arg(name) or default
    if value not in allowed:
        raise ValidationError([{"field": name, "message": f"must be one of {', '.join(allowed)}"}])
    return value


def range_args(request, zone, default_start, default_end):
    """`from`/`to` (dates are local midnights in `zone`) as aware instants."""
    bounds = {}
    for name, default in (("from", default_start), ("to", default_end)):
        raw = request.arg(name)
        try:
            bounds[name] = times.parse_bound(raw, zone) if raw else default
        except times.TimeError as exc:
            raise ValidationError([{"field": name, "message": str(exc)}]) from None
    if bounds["to"] <= bounds["from"]:
        raise ValidationError([{"field": "to", "message": "must be after from"}])
    return bounds["from"], bounds["to"]


def money_map(amounts):
    """{currency: minor units} → {currency: money string}, currencies in order."""
    return {currency: money.format_minor(amount, currency) for currency, amount in sorted(amounts.items())}


def _add(target, currency, amount):
    target[currency] = target.get(currency, 0) + amount


# -- overview --------------------------------------------------------------------

def overview(request):
    """GET /v1/analytics/overview?timezone: the dashboard's KPIs."""
    zone_name, zone = zone_arg(request)
    now = clock.now()
    now_us = times.to_micros(now)
    month_start, month_end = times.calendar_month_bounds(now, zone)
    day_start = times.local_midnight(times.local_date(now, zone), zone)
    day_end = times.local_midnight(times.local_date(now, zone) + timedelta(days=1), zone)
    with request.app.db.reader() as conn:
        one = lambda sql, params=(): scalar(conn, sql, params)  # noqa: E731
        revenue = named(conn, "SELECT currency, sum(total) AS amount FROM invoices WHERE status IN ('issued', 'paid')"
                              " AND issued_at >= ? AND issued_at < ? GROUP BY currency",
                        (times.to_micros(month_start), times.to_micros(month_end))).fetchall()
        receivable = named(conn, "SELECT currency, sum(amount_due - amount_paid) AS amount,"
                                 " sum(CASE WHEN due_at < ? THEN amount_due - amount_paid ELSE 0 END) AS late"
                                 " FROM invoices WHERE status = 'issued' AND payment_status != 'paid'"
                                 " GROUP BY currency", (now_us,)).fetchall()
        result = {
            "timezone": zone_name,
            "customers": one("SELECT count(*) FROM customers WHERE archived = 0"),
            "active_subscriptions": one("SELECT count(*) FROM subscriptions WHERE status = 'active'"),
            "revenue_this_month": money_map({r["currency"]: r["amount"] for r in revenue}),
            "outstanding": money_map({r["currency"]: r["amount"] for r in receivable}),
            "overdue": money_map({r["currency"]: r["late"] for r in receivable if r["late"]}),
            "events_today": one("SELECT count(*) FROM events WHERE ts >= ? AND ts < ?",
                                (times.to_micros(day_start), times.to_micros(day_end))),
            "active_sessions": one("SELECT count(*) FROM sessions WHERE ended_at IS NULL"),
            "stored_bytes": one("SELECT coalesce(sum(size), 0) FROM objects"),
        }
    return result


# -- revenue ---------------------------------------------------------------------

def _line_group(group_by, line, invoice, plans):
    """The group a line belongs to (a tuple key and its JSON)."""
    if group_by == "customer":
        return ("customer", invoice["customer_id"]), {"customer_id": invoice["customer_id"]}
    if group_by == "plan":
        code = plans.get(invoice["subscription_id"])
        return ("plan", code), {"plan": code}
    if group_by == "meter" and line["type"] == "usage":
        return ("meter", line["meter"]), {"meter": line["meter"]}
    if group_by == "resource" and line["type"] == "resource" and line["resource_id"] is not None:
        return ("resource", line["resource_id"]), {"resource_id": line["resource_id"]}
    return ("type", line["type"]), {"type": line["type"]}


def _buckets(start, end, interval, zone):
    windows = times.windows(start, end, interval, zone)
    if len(windows) > MAX_BUCKETS:
        raise ValidationError([{"field": "interval", "message": f"the range holds more than {MAX_BUCKETS} buckets"}])
    return [(times.to_micros(a), times.to_micros(b), times.local_date(a, zone), _local_end(b, zone))
            for a, b in windows]


def _local_end(instant, zone):
    """The local date a bucket ends on (exclusive): its end instant's date,
    or the next day when the end is not at local midnight (a clipped range)."""
    day = times.local_date(instant, zone)
    return day if times.local_midnight(day, zone) == instant else day + timedelta(days=1)


def _bucket_of(buckets, invoice, basis):
    if basis == "issued":
        at = invoice["issued_at"]
        for i, (start, end, _, _) in enumerate(buckets):
            if start <= at < end:
                return i
        return None
    day = times.parse_date(invoice["period_start_date"])  # the period as the customer lived it
    for i, (_, _, first, last) in enumerate(buckets):
        if first <= day < last:
            return i
    return None


def revenue(request):
    """GET /v1/analytics/revenue?from&to&interval=day|month&group_by&basis=issued|period&timezone"""
    zone_name, zone = zone_arg(request)
    interval = choice_arg(request, "interval", INTERVALS, "month")
    basis = choice_arg(request, "basis", BASES, "issued")
    group_by = request.arg("group_by") or None
    if group_by is not None and group_by not in GROUPS:
        raise ValidationError([{"field": "group_by", "message": f"must be one of {', '.join(GROUPS)}"}])
    this_month = times.month_start(times.local_date(clock.now(), zone))
    start, end = range_args(request, zone, times.local_midnight(times.add_months(this_month, -11), zone),
                            times.local_midnight(times.add_months(this_month, 1), zone))
    buckets = _buckets(start, end, interval, zone)
    invoices, lines, plans = _revenue_rows(request.app.db, buckets, basis, group_by)
    totals, data = {}, [{"start": times.format_micros(b[0]), "end": times.format_micros(b[1]), "totals": {},
                         "groups": {}} for b in buckets]
    by_id = {}
    for invoice in invoices:
        index = _bucket_of(buckets, invoice, basis)
        if index is not None:
            by_id[invoice["id"]] = (invoice, index)
    for line in lines:
        found = by_id.get(line["invoice_id"])
        if found is None:
            continue
        invoice, index = found
        currency = invoice["currency"]
        bucket = data[index]
        _add(bucket["totals"], currency, line["amount"])
        _add(totals, currency, line["amount"])
        if group_by:
            key, view = _line_group(group_by, line, invoice, plans)
            group = bucket["groups"].setdefault(key, {"group": view, "totals": {}})
            _add(group["totals"], currency, line["amount"])
    for bucket in data:
        bucket["totals"] = money_map(bucket["totals"])
        if group_by:
            ordered = sorted(bucket["groups"].items(), key=lambda kv: (kv[0][0], str(kv[0][1])))
            bucket["groups"] = [{"group": g["group"], "totals": money_map(g["totals"])} for _, g in ordered]
        else:
            del bucket["groups"]
    return {"from": times.format_instant(start), "to": times.format_instant(end), "interval": interval,
            "basis": basis, "timezone": zone_name, "group_by": group_by, "totals": money_map(totals), "data": data}


def _revenue_rows(db, buckets, basis, group_by):
    """The invoices that count (issued or paid) in the range, their lines and
    (for group_by=plan) their plans' codes."""
    column = "issued_at" if basis == "issued" else "period_start_date"
    params = (buckets[0][0], buckets[-1][1]) if basis == "issued" else \
        (buckets[0][2].isoformat(), buckets[-1][3].isoformat())
    where = f"i.status IN ('issued', 'paid') AND i.{column} >= ? AND i.{column} < ?"
    with db.reader() as conn:
        invoices = named(conn, "SELECT i.id, i.customer_id, i.subscription_id, i.currency, i.issued_at,"
                               f" i.period_start_date FROM invoices i WHERE {where}", params).fetchall()
        lines = named(conn, "SELECT l.invoice_id, l.type, l.meter, l.resource_id, l.amount FROM invoice_lines l"
                            f" JOIN invoices i ON i.id = l.invoice_id WHERE {where}", params).fetchall()
        plans = {}
        if group_by == "plan":
            plans = {r["id"]: r["code"] for r in named(
                conn, "SELECT s.id, p.code FROM subscriptions s JOIN plans p ON p.id = s.plan_id").fetchall()}
    return invoices, lines, plans

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
import threading
from collections import OrderedDict

from .. import jsonutil
from ..store.db import named, scalar
from ..web.http import JSON_TYPE, Response

REVENUE = ("issued", "paid")
CACHED_ANSWERS = 32
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

# The group of each invoice (customer, plan, none: the invoice's total) or of
# each line (meter, resource: the lines, so every line lands in one group).
_GROUP_SQL = {
    None: ("''", "i.total", ""),
    "customer": ("i.customer_id", "i.total", ""),
    "plan": ("coalesce(p.code, '')", "i.total",
             " LEFT JOIN subscriptions s ON s.id = i.subscription_id LEFT JOIN plans p ON p.id = s.plan_id"),
    "meter": ("CASE WHEN l.type = 'usage' THEN 'm:' || l.meter ELSE 't:' || l.type END", "l.amount",
              " JOIN invoice_lines l ON l.invoice_id = i.id"),
    "resource": ("CASE WHEN l.type = 'resource' AND l.resource_id IS NOT NULL THEN 'r:' || l.resource_id"
                 " ELSE 't:' || l.type END", "l.amount", " JOIN invoice_lines l ON l.invoice_id = i.id"),
}


def _group_view(group_by, key):
    if group_by == "customer":
        return {"customer_id": key}
    if group_by == "plan":
        return {"plan": key or None}
    kind, _, value = key.partition(":")
    if kind == "m":
        return {"meter": value}
    if kind == "r":
        return {"resource_id": int(value)}
    return {"type": value}


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


class AnswerCache:
    """Encoded revenue answers, kept while the set of issued and paid invoices
    is unchanged (the `revenue_version` counter a trigger moves): exact, and
    a repeated dashboard view costs a lookup instead of a re-summing."""

    def __init__(self, size=CACHED_ANSWERS):
        self.size = size
        self._answers = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            answer = self._answers.get(key)
            if answer is not None:
                self._answers.move_to_end(key)
            return answer

    def put(self, key, answer):
        with self._lock:
            self._answers[key] = answer
            self._answers.move_to_end(key)
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)


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
    with request.app.db.reader() as conn:
        version = scalar(conn, "SELECT value FROM counters WHERE name = 'revenue_version'")
    key = (version, zone_name, interval, basis, group_by, start, end)
    cached = request.app.revenue_answers.get(key)
    if cached is None:
        cached = jsonutil.encode(_revenue_answer(request.app.db, zone_name, zone, interval, basis, group_by,
                                                 start, end)).encode("utf-8")
        request.app.revenue_answers.put(key, cached)
    return Response(200, cached, content_type=JSON_TYPE)


def _revenue_answer(db, zone_name, zone, interval, basis, group_by, start, end):
    buckets = _buckets(start, end, interval, zone)
    totals, data = {}, [{"start": times.format_micros(b[0]), "end": times.format_micros(b[1]), "totals": {},
                         "groups": {}} for b in buckets]
    for row in _revenue_sums(db, buckets, basis, group_by):
        bucket = data[row["bucket"]]
        _add(bucket["totals"], row["currency"], row["amount"])
        _add(totals, row["currency"], row["amount"])
        if group_by:
            group = bucket["groups"].setdefault(row["g"], {"group": _group_view(group_by, row["g"]), "totals": {}})
            _add(group["totals"], row["currency"], row["amount"])
    for bucket in data:
        bucket["totals"] = money_map(bucket["totals"])
        if group_by:
            ordered = sorted(bucket["groups"].items(), key=lambda kv: (str(type(kv[0])), kv[0]))
            bucket["groups"] = [{"group": g["group"], "totals": money_map(g["totals"])} for _, g in ordered]
        else:
            del bucket["groups"]
    return {"from": times.format_instant(start), "to": times.format_instant(end), "interval": interval,
            "basis": basis, "timezone": zone_name, "group_by": group_by, "totals": money_map(totals), "data": data}


def _revenue_sums(db, buckets, basis, group_by):
    """Rows (bucket, g, currency, amount): the revenue of issued and paid
    invoices summed by SQLite per bucket, group and currency, so only the
    sums (not every invoice and line) reach Python."""
    key, amount, joins = _GROUP_SQL[group_by]
    if basis == "issued":
        column, edges = "i.issued_at", [(n, b[0], b[1]) for n, b in enumerate(buckets)]
    else:  # the period as the customer lived it: its local start date
        column, edges = "i.period_start_date", [(n, b[2].isoformat(), b[3].isoformat()) for n, b in enumerate(buckets)]
    values = ", ".join("(?, ?, ?)" for _ in edges)
    sql = (f"WITH b(n, lo, hi) AS (VALUES {values})"
           f" SELECT b.n AS bucket, {key} AS g, i.currency AS currency, sum({amount}) AS amount"
           f" FROM invoices i JOIN b ON {column} >= b.lo AND {column} < b.hi{joins}"
           f" WHERE i.status IN ('issued', 'paid') AND {column} >= ? AND {column} < ?"
           " GROUP BY b.n, g, i.currency")
    params = [value for edge in edges for value in edge] + [edges[0][1], edges[-1][2]]
    with db.reader() as conn:
        return named(conn, sql, params).fetchall()

"""Alert evaluation (§10): budgets, spend and usage rules, spikes and storage
quotas, checked for the customers whose figures may have moved.

Who is looked at: customers with events stored since the last evaluation
(the `alerts_seen_seq` mark on the events' seq), with audit entries since the
last one (a budget changed, a rule created: `alerts_seen_audit`), with running
sessions or sessions that ended since, and with stored objects (their spend
grows without events). So the cost follows activity, not the customer count.

What fires: each (source, customer, period) at most once. The unique index
`alert_firings_once` decides, not a check before the insert, so racing
threads, a second process on the same database and restarts all end with one
firing. Only the open period is ever evaluated: a late event for a period that
has closed can never fire for it.
"""

from datetime import timedelta
from decimal import Decimal

from .. import clock, jsonutil
from ..domain import alerts, money, quantities, times
from ..store.db import named, scalar
from . import customers as customers_api
from . import estimates, notifications, usage, webhooks
from .common import now_micros

QUOTA_PERCENTS = (80, 100)
SPIKE_HISTORY_DAYS = alerts.SPIKE_DAYS
CUSTOMER_BATCH = 500  # customers read per query
FIRINGS_PER_TRANSACTION = 20  # each: its firing, notification, e-mail and one delivery per subscribed webhook


# -- who to look at ------------------------------------------------------------------

def _marks(conn):
    return {row["name"]: row["value"] for row in named(
        conn, "SELECT name, value FROM counters WHERE name IN ('alerts_seen_seq', 'alerts_seen_audit',"
              " 'alerts_evaluated_at')")}


def _candidates(conn, marks, seq_high, audit_high):
    """({customer id: set of meter ids with new events}, counts by reason)."""
    found = {}
    for row in named(conn, "SELECT DISTINCT customer_id, meter_id FROM events WHERE seq > ? AND seq <= ?",
                     (marks["alerts_seen_seq"], seq_high)):
        found.setdefault(row["customer_id"], set()).add(row["meter_id"])
    everyone = _changed_rules_reach_everyone(conn, marks["alerts_seen_audit"], audit_high)
    others = ["SELECT customer_id FROM sessions WHERE ended_at IS NULL OR ended_at >= :since",
              "SELECT c.id AS customer_id FROM customers c"
              " WHERE EXISTS (SELECT 1 FROM objects o WHERE o.customer_id = c.id)",
              "SELECT CAST(entity_id AS INTEGER) AS customer_id FROM audit_log"
              " WHERE id > :audit_low AND id <= :audit_high AND entity = 'customer'",
              "SELECT customer_id FROM alert_rules WHERE id IN (SELECT CAST(entity_id AS INTEGER) FROM audit_log"
              " WHERE id > :audit_low AND id <= :audit_high AND entity = 'alert')"]
    if everyone:
        others.append("SELECT id AS customer_id FROM customers")
    params = {"since": marks["alerts_evaluated_at"], "audit_low": marks["alerts_seen_audit"],
              "audit_high": audit_high}
    for sql in others:
        for row in named(conn, sql, params):
            if row["customer_id"] is not None:
                found.setdefault(row["customer_id"], set())
    return found


def _changed_rules_reach_everyone(conn, audit_low, audit_high):
    """Whether a rule for every customer was created since the last evaluation."""
    return scalar(conn, "SELECT count(*) FROM alert_rules WHERE customer_id IS NULL AND id IN"
                        " (SELECT CAST(entity_id AS INTEGER) FROM audit_log WHERE id > ? AND id <= ?"
                        " AND entity = 'alert')", (audit_low, audit_high)) > 0


# -- what crossed ----------------------------------------------------------------------

class Crossing:
    """One threshold reached, about to be recorded (unless it already was)."""

    def __init__(self, source, period, kind, message, threshold, value, **extra):
        self.source, self.period, self.type, self.message = source, period, kind, message
        self.threshold, self.value = threshold, value
        self.rule_id = extra.get("rule_id")
        self.meter = extra.get("meter")
        self.currency = extra.get("currency")
        self.percent = extra.get("percent")
        self.period_start = extra.get("period_start")
        self.period_end = extra.get("period_end")
        self.emails = extra.get("emails", False)


def _spend_crossings(app, conn, customer, rules):
    """Budget steps and spend rules against the upcoming invoice's subtotal."""
    budget = jsonutil.decode(customer["budget"]) if customer["budget"] else None
    spend_rules = [r for r in rules if r["type"] == "spend" and (
        r["customer_id"] == customer["id"]  # its own rule
        or (r["customer_id"] is None and r["currency"] == customer["currency"]))]  # a rule for every customer
    if budget is None and not spend_rules:
        return []
    draft, _, start_at, end_at = estimates.upcoming(app, conn, customer)
    currency, spend = customer["currency"], draft.subtotal
    period = dict(period_start=times.to_micros(start_at), period_end=times.to_micros(end_at))
    key = times.format_instant(start_at)
    fmt = lambda minor: money.format_minor(minor, currency)  # noqa: E731
    found = []
    if budget is not None:
        monthly = money.parse_amount(budget["monthly"], currency)
        for percent, threshold in alerts.budget_steps(monthly, budget["alert_at_percent"]):
            if alerts.crossed(spend, threshold):
                found.append(Crossing(
                    f"budget:{percent}", key, "budget",
                    f"{customer['name']} has spent {fmt(spend)} {currency} this period: {percent}% of its"
                    f" {fmt(monthly)} {currency} budget reached.", fmt(threshold), fmt(spend), currency=currency,
                    percent=percent, emails=True, **period))
    for rule in spend_rules:
        if alerts.crossed(spend, rule["threshold"]):
            found.append(Crossing(
                f"rule:{rule['id']}", key, "spend",
                f"{customer['name']} has spent {fmt(spend)} {currency} this period, over the"
                f" {fmt(rule['threshold'])} {currency} of the alert {_rule_name(rule)}.",
                fmt(rule["threshold"]), fmt(spend), rule_id=rule["id"], currency=currency,
                emails=rule["customer_id"] is not None, **period))
    return found


def _rule_name(rule):
    return f"“{rule['name']}”" if rule["name"] else f"#{rule['id']}"


def _usage_crossings(app, conn, customer, rules, zone):
    mine = [r for r in rules if r["type"] == "usage" and r["customer_id"] in (None, customer["id"])]
    if not mine:
        return []
    start_at, end_at = usage.default_period(app, customer["id"], zone)
    start_us, end_us = times.to_micros(start_at), times.to_micros(end_at)
    found = []
    for rule in mine:
        meter = app.catalog.meter(rule["meter"])
        if meter is None:
            continue
        value = usage.meter_usage(app, conn, meter, customer["id"], start_us, end_us)["value"]
        threshold = quantities.from_micros(rule["threshold"])
        if value is not None and alerts.crossed(Decimal(value), threshold):
            found.append(Crossing(
                f"rule:{rule['id']}", times.format_instant(start_at), "usage",
                f"{customer['name']}: {meter.key} reached {value} this period, over the {threshold} of the"
                f" alert {_rule_name(rule)}.", str(threshold), str(value), rule_id=rule["id"],
                meter=meter.key, period_start=start_us, period_end=end_us,
                emails=rule["customer_id"] is not None))
    return found


def _spike_crossings(app, conn, customer, meter_ids, zone, minimum):
    """Today's usage of each meter with new events against the previous 7 local days."""
    today = times.local_date(clock.now(), zone)
    first = times.local_midnight(today - timedelta(days=SPIKE_HISTORY_DAYS), zone)
    end = times.local_midnight(today + timedelta(days=1), zone)
    windows = [(times.to_micros(a), times.to_micros(b)) for a, b in times.windows(first, end, "day", zone)]
    today_start, today_end = windows[-1]
    found = []
    for meter_id in sorted(meter_ids):
        meter = app.catalog.meter_by_id(meter_id)
        if meter is None:
            continue
        entry = usage.meter_usage(app, conn, meter, customer["id"], times.to_micros(first), today_end, windows)
        values = [Decimal(w["value"] or 0) for w in entry["windows"]]
        average = alerts.spike(values[-1], values[:-1], minimum)
        if average is not None:
            average = _quantity(average)
            found.append(Crossing(
                f"spike:{meter.key}", today.isoformat(), "usage_spike",
                f"{customer['name']}: {meter.key} reached {values[-1]} today ({today.isoformat()}), over"
                f" {alerts.SPIKE_FACTOR}× its recent daily average of {average}.", average, str(values[-1]),
                meter=meter.key, period_start=today_start, period_end=today_end))
    return found


def _quantity(value):
    """A Decimal shown as meters show quantities: at most 6 decimals, no trailing zeros."""
    return f"{value.quantize(Decimal('0.000001')).normalize():f}"


def _quota_crossings(app, conn, customer, zone):
    quota = customer["storage_quota_bytes"]
    if not quota:
        return []
    stored = scalar(conn, "SELECT coalesce(sum(size), 0) FROM objects WHERE customer_id = ?", (customer["id"],))
    start_at, end_at = usage.default_period(app, customer["id"], zone)
    found = []
    for percent in QUOTA_PERCENTS:
        threshold = quota * percent // 100
        if alerts.crossed(stored, threshold):
            found.append(Crossing(
                f"quota:{percent}", times.format_instant(start_at), "storage_quota",
                f"{customer['name']} stores {stored:,} bytes: {alerts.percent_of(stored, quota)}% of its"
                f" {quota:,}-byte storage quota ({percent}% reached).", str(threshold), str(stored),
                percent=percent, period_start=times.to_micros(start_at), period_end=times.to_micros(end_at)))
    return found


def crossings(app, conn, customer, rules, meter_ids):
    """Everything that has crossed for one customer now (recorded or not)."""
    zone = times.zone_or_error(customer["timezone"])
    return (_spend_crossings(app, conn, customer, rules) + _usage_crossings(app, conn, customer, rules, zone)
            + _spike_crossings(app, conn, customer, meter_ids, zone, app.config.spike_min)
            + _quota_crossings(app, conn, customer, zone))


# -- recording -------------------------------------------------------------------------

FIRING_COLUMNS = ("id, customer_id, source, period, type, rule_id, meter, currency, threshold, value, percent,"
                  " period_start, period_end, message, created_at")


def firing_view(row):
    return {"id": row["id"], "customer_id": row["customer_id"], "type": row["type"], "rule_id": row["rule_id"],
            "meter": row["meter"], "currency": row["currency"], "threshold": row["threshold"],
            "value": row["value"], "percent": row["percent"],
            "period_start": _instant(row["period_start"]), "period_end": _instant(row["period_end"]),
            "day": row["period"] if row["type"] == "usage_spike" else None,
            "message": row["message"], "created_at": times.format_micros(row["created_at"])}


def _instant(micros):
    return None if micros is None else times.format_micros(micros)


def record(conn, customer, crossing):
    """Store one firing, its notification, its webhook and (budgets and a
    customer's own rules) its e-mail, in the caller's transaction. Returns the
    firing's view, or None when this (source, customer, period) already fired."""
    stamp = now_micros()
    cur = conn.execute(
        "INSERT INTO alert_firings (customer_id, source, period, type, rule_id, meter, currency, threshold, value,"
        " percent, period_start, period_end, message, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (source, customer_id, period) DO NOTHING",
        (customer["id"], crossing.source, crossing.period, crossing.type, crossing.rule_id, crossing.meter,
         crossing.currency, crossing.threshold, crossing.value, crossing.percent, crossing.period_start,
         crossing.period_end, crossing.message, stamp))
    if cur.rowcount != 1:
        return None
    view = firing_view(named(conn, f"SELECT {FIRING_COLUMNS} FROM alert_firings WHERE id = ?",
                             (cur.lastrowid,)).fetchone())
    notifications.create(conn, customer["id"], view["id"], "alert", _title(crossing, customer), crossing.message)
    webhooks.enqueue(conn, "alert.triggered", {"alert": view})
    recipient = customer["billing_email"] or customer["email"]
    if crossing.emails and recipient:
        conn.execute("INSERT INTO emails (firing_id, recipient, status, next_attempt_at, created_at)"
                     " VALUES (?, ?, 'pending', ?, ?)", (view["id"], recipient, stamp, stamp))
    return view


def _title(crossing, customer):
    titles = {"budget": f"Budget {crossing.percent}% reached", "spend": "Spend alert",
              "usage": "Usage alert", "usage_spike": "Usage spike",
              "storage_quota": f"Storage {crossing.percent}% of quota"}
    return f"{titles[crossing.type]}: {customer['name']}"


# -- one evaluation ----------------------------------------------------------------------

def evaluate(app):
    """Evaluate every customer whose figures may have moved; returns counts.
    Reads happen outside the writer; each customer's new firings are written
    in short transactions of at most FIRINGS_PER_TRANSACTION firings, and only
    when something crossed that is not recorded yet."""
    started = now_micros()
    with app.db.reader() as conn:
        conn.execute("BEGIN")
        marks = _marks(conn)
        seq_high = scalar(conn, "SELECT coalesce(max(seq), 0) FROM events")
        audit_high = scalar(conn, "SELECT coalesce(max(id), 0) FROM audit_log")
        found = _candidates(conn, marks, seq_high, audit_high)
        rules = named(conn, "SELECT id, name, customer_id, type, meter, currency, threshold FROM alert_rules"
                            " WHERE deleted_at IS NULL").fetchall()
    counts = {"customers_evaluated": 0, "fired": 0}
    ids = sorted(found)
    for low in range(0, len(ids), CUSTOMER_BATCH):
        chunk = ids[low:low + CUSTOMER_BATCH]
        for customer in _customers(app, chunk):
            counts["customers_evaluated"] += 1
            counts["fired"] += _evaluate_one(app, customer, rules, found[customer["id"]])
    with app.db.transaction() as conn:
        for name, value in (("alerts_seen_seq", seq_high), ("alerts_seen_audit", audit_high),
                            ("alerts_evaluated_at", started + 1)):  # sessions ended at `started` were seen
            conn.execute("UPDATE counters SET value = max(value, ?) WHERE name = ?", (value, name))
    return counts


def _customers(app, ids):
    marks = ", ".join("?" for _ in ids)
    with app.db.reader() as conn:
        return named(conn, f"SELECT {customers_api.COLUMNS} FROM customers WHERE archived = 0 AND id IN ({marks})",
                     ids).fetchall()


def _evaluate_one(app, customer, rules, meter_ids):
    with app.db.snapshot() as conn:
        found = crossings(app, conn, customer, rules, meter_ids)
        if not found:
            return 0
        done = {(row["source"], row["period"]) for row in named(
            conn, "SELECT source, period FROM alert_firings WHERE customer_id = ?", (customer["id"],))}
    fresh = [c for c in found if (c.source, c.period) not in done]
    if not fresh:
        return 0
    fired = []
    for first in range(0, len(fresh), FIRINGS_PER_TRANSACTION):  # many rules: short transactions all the same
        with app.db.transaction() as conn:
            for crossing in fresh[first:first + FIRINGS_PER_TRANSACTION]:
                view = record(conn, customer, crossing)
                if view is not None:
                    fired.append(view)
    for view in fired:
        app.publish("alert.triggered", {"alert": view})
        app.publish("notification.created", {"customer_id": view["customer_id"]})
    return len(fired)

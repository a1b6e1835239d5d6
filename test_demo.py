#!/usr/bin/env python3
"""The Meterline story, end to end, against a real server.

Starts `server.py` on a free port with a temporary database, then talks to it
over HTTP with urllib only, printing what happens. Exits non-zero if any step
does not go as expected.
"""

import hashlib
import hmac
import http.server
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

ROOT = os.path.dirname(os.path.abspath(__file__))
ADMIN_KEY = "mk_demo_story_key_0123456789abcdef0123"


class StoryError(AssertionError):
    pass


class Api:
    def __init__(self, port, token):
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.token = token

    def raw(self, path):
        request = urllib.request.Request(self.base + path, headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def call(self, method, path, body=None, expect=(200, 201)):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as exc:
            status, payload = exc.code, exc.read()
        result = json.loads(payload, parse_float=Decimal) if payload else None
        if status not in (expect if isinstance(expect, tuple) else (expect,)):
            raise StoryError(f"{method} {path} answered {status}: {payload[:500]!r}")
        return result


    def send_bytes(self, method, path, data=None, headers=None):
        """A raw-body request (object storage): (status, headers, body bytes)."""
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Authorization": f"Bearer {self.token}", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()


def step(title):
    print(f"\n== {title}")


def check(condition, message):
    if not condition:
        raise StoryError(message)
    print(f"   ok: {message}")


def table(headers, rows):
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    line = "   " + "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    print(line)
    print("   " + "  ".join("-" * w for w in widths))
    for row in rows:
        print("   " + "  ".join(str(c).rjust(w) if isinstance(c, (int, Decimal)) else str(c).ljust(w)
                                for c, w in zip(row, widths)))


def start_server(db_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, BILLING_ADMIN_KEY=ADMIN_KEY, BILLING_MAX_EVENT_AGE_DAYS="0")
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "server.py"), "--port", str(port),
                             "--db", db_path, "--no-scheduler", "--quiet"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "listening on" in line:
            print("   " + line.strip())
            return proc, port
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise StoryError("the server did not start")


def story(api):
    step("Meters: what we measure")
    api.call("POST", "/v1/meters", {"key": "api_calls", "name": "API calls", "unit": "call",
                                    "aggregation": "sum", "group_by": ["region"]})
    api.call("POST", "/v1/meters", {"key": "active_users", "name": "Active users", "unit": "user",
                                    "aggregation": "unique_count", "value_property": "user_id"})
    api.call("POST", "/v1/meters", {"key": "storage_gb", "name": "Storage", "unit": "GB", "aggregation": "max"})
    meters = api.call("GET", "/v1/meters")["data"]
    table(["key", "aggregation", "unit"], [(m["key"], m["aggregation"], m["unit"]) for m in meters])
    check(len(meters) == 7, "three meters defined, and the four the server feeds itself (storage, API requests)")

    step("Customers in three timezones and currencies")
    customers = []
    for name, email, zone, currency in [("Acme Corp", "billing@acme.example", "America/New_York", "USD"),
                                        ("Globex GmbH", "ap@globex.example", "Europe/Berlin", "EUR"),
                                        ("Umbrella KK", "keiri@umbrella.example", "Asia/Tokyo", "JPY")]:
        customers.append(api.call("POST", "/v1/customers", {"name": name, "email": email, "timezone": zone,
                                                            "currency": currency, "external_id": name.split()[0].lower()}))
    table(["id", "name", "timezone", "currency"], [(c["id"], c["name"], c["timezone"], c["currency"]) for c in customers])
    duplicate = api.call("POST", "/v1/customers", {"name": "Again", "email": "billing@acme.example"}, expect=409)
    check(duplicate["error"]["code"] == "conflict", "a second customer with the same e-mail is refused (409)")

    step("A month of usage, ingested in batches")
    rng = random.Random(42)
    acme = customers[0]["id"]
    events = []
    for day in range(1, 31):
        for hour in (9, 13, 17):
            events.append({"id": f"calls-{day}-{hour}", "meter": "api_calls", "quantity": rng.randint(100, 500),
                           "timestamp": f"2025-09-{day:02d}T{hour:02d}:00:00Z",
                           "properties": {"region": rng.choice(["eu", "us"])}})
        events.append({"id": f"users-{day}", "meter": "active_users", "timestamp": f"2025-09-{day:02d}T12:00:00Z",
                       "properties": {"user_id": f"user-{rng.randint(1, 12)}"}})
        events.append({"id": f"gb-{day}", "meter": "storage_gb", "quantity": 10 + day * 3,
                       "timestamp": f"2025-09-{day:02d}T23:00:00Z"})
    result = api.call("POST", "/v1/events/batch", {"customer_id": acme, "events": events})
    print(f"   batch: {result}")
    check(result == {"accepted": len(events), "duplicates": 0}, f"{len(events)} events accepted")
    again = api.call("POST", "/v1/events/batch", {"customer_id": acme, "events": events[:10]})
    check(again == {"accepted": 0, "duplicates": 10}, "resending the same ids stores nothing twice")
    bad = api.call("POST", "/v1/events/batch", {"customer_id": acme, "events": [
        {"meter": "api_calls", "quantity": 5, "timestamp": "2025-09-02T00:00:00Z"},
        {"meter": "api_calls", "quantity": -5, "timestamp": "2025-09-02T00:00:00Z"},
        {"meter": "nope", "timestamp": "2025-09-02T00:00:00"}]}, expect=400)
    for detail in bad["error"]["details"]:
        print(f"   rejected events[{detail['index']}].{detail['field']}: {detail['message']}")
    check(len(bad["error"]["details"]) == 3, "a batch with bad events is refused whole, one detail per problem")

    step("One event at a time, idempotent by id")
    first = api.call("POST", "/v1/events", {"id": "late-night", "customer_id": acme, "meter": "api_calls",
                                            "quantity": 7, "timestamp": "2025-09-30T23:30:00-04:00"}, expect=201)
    second = api.call("POST", "/v1/events", {"id": "late-night", "customer_id": acme, "meter": "api_calls",
                                             "quantity": 9999, "timestamp": "2025-09-30T23:30:00-04:00"}, expect=200)
    check(first["duplicate"] is False and second["duplicate"] is True and second["event"]["quantity"] == 7,
          "the first write wins; the resend is reported as a duplicate")

    step("Usage for September in New York time")
    usage = api.call("GET", f"/v1/customers/{acme}/usage?from=2025-09-01&to=2025-10-01&group_by=region&meter=api_calls")
    calls = usage["usage"][0]
    # every batch event lies in New York's September; so does 23:30 local on the 30th (03:30Z)
    expected_calls = sum(e["quantity"] for e in events if e["meter"] == "api_calls") + 7
    table(["region", "calls"], [(g["group"]["region"], g["value"]) for g in calls["groups"]])
    print(f"   total api_calls {calls['value']} (period {usage['from']} .. {usage['to']})")
    check(calls["value"] == expected_calls, "the September total is exact in the customer's timezone")
    full = api.call("GET", f"/v1/customers/{acme}/usage?from=2025-09-01&to=2025-10-01")
    table(["meter", "aggregation", "value"], [(u["meter"], u["aggregation"], u["value"]) for u in full["usage"]])
    weekly = api.call("GET", f"/v1/customers/{acme}/usage?from=2025-09-01&to=2025-09-08&window=day&meter=storage_gb")
    table(["day (local start)", "max GB"], [(w["start"], w["value"]) for w in weekly["usage"][0]["windows"]])
    check(len(weekly["usage"][0]["windows"]) == 7, "seven daily windows, aligned to local midnight")

    step("The newest events")
    listed = api.call("GET", f"/v1/events?customer_id={acme}&limit=5")
    table(["timestamp", "meter", "quantity", "id"],
          [(e["timestamp"], e["meter"], e["quantity"], e["id"]) for e in listed["data"]])
    stamps = [e["timestamp"] for e in listed["data"]]
    check(stamps == sorted(stamps, reverse=True) and listed["next_cursor"], "newest first, with a cursor for more")
    billing_story(api, customers, expected_calls, full)


def money_text(value, digits=2):
    """Round an exact Decimal half-up to the currency's digits, as the server shows it."""
    return str(value.quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def print_invoice(invoice, name):
    print(f"\n   Invoice #{invoice['id']} ({invoice['status']}) for {name}, {invoice['currency']}, "
          f"{invoice['period_start']} .. {invoice['period_end']}")
    table(["type", "description", "quantity", "amount"],
          [(l["type"], l["description"], "" if l["quantity"] is None else l["quantity"], l["amount"])
           for l in invoice["lines"]])
    for tier in (t for l in invoice["lines"] for t in l["tiers"]):
        print(f"      tier ({tier['from']}, {tier['to'] if tier['to'] is not None else '∞'}]: "
              f"{tier['quantity']} × {tier['unit_price']} + {tier['flat_fee']} = {tier['amount']}")
    for label in ("subtotal", "discount", "tax", "total", "credits_applied", "amount_due"):
        print(f"   {label:>16}: {invoice[label]}")


def billing_story(api, customers, september_calls, september_usage):
    acme, globex, umbrella = (c["id"] for c in customers)
    step("Plans: tiers, free units, a base fee, in three currencies")
    charges = [{"meter": "api_calls", "model": "graduated", "free_units": 1000,
                "tiers": [{"up_to": 10000, "unit_price": "0.002"},
                          {"up_to": None, "unit_price": "0.001", "flat_fee": "5"}]},
               {"meter": "active_users", "model": "per_unit", "unit_price": "2.00"}]
    api.call("POST", "/v1/plans", {"code": "pro-usd", "name": "Pro", "currency": "USD", "base_fee": "49.00",
                                   "charges": charges})
    api.call("POST", "/v1/plans", {"code": "pro-eur", "name": "Pro (EUR)", "currency": "EUR", "base_fee": "45.00",
                                   "minimum_commitment": "60.00", "charges": charges})
    api.call("POST", "/v1/plans", {"code": "pro-jpy", "name": "Pro (JPY)", "currency": "JPY", "base_fee": "7400",
                                   "charges": [{"meter": "api_calls", "model": "package", "package_size": 1000,
                                                "package_price": "150"}]})
    plans = api.call("GET", "/v1/plans")["data"]
    table(["code", "currency", "base fee", "charges"],
          [(p["code"], p["currency"], p["base_fee"], ", ".join(f"{c['meter']}:{c['model']}" for c in p["charges"]))
           for p in plans])
    bad = api.call("POST", "/v1/plans", {"code": "broken", "name": "Broken", "charges": [
        {"meter": "api_calls", "model": "graduated",
         "tiers": [{"up_to": 100, "unit_price": "1"}, {"up_to": 50, "unit_price": "1"}]}]}, expect=400)
    check(bad["error"]["details"][0]["field"] == "charges[0].tiers[1].up_to", "descending tiers are refused")

    step("What-if: 12,000 calls on the Pro plan")
    estimate = api.call("POST", "/v1/estimate", {"plan": "pro-usd", "usage": {"api_calls": 12000}})
    print_invoice(estimate, "an estimate")
    # 1,000 free; 10,000 × 0.002 = 20 + 1,000 × 0.001 = 1 + flat 5 → 26.00; plus the base fee 49.00
    check(estimate["total"] == "75.00", "the estimate is 49.00 + 26.00 = 75.00")

    step("Subscriptions from 1 September 2025")
    for customer_id, plan in ((acme, "pro-usd"), (globex, "pro-eur"), (umbrella, "pro-jpy")):
        sub = api.call("POST", "/v1/subscriptions", {"customer_id": customer_id, "plan": plan, "start": "2025-09-01"})
        print(f"   customer {customer_id} on {sub['plan']} from {sub['start']} ({sub['billing_anchor']})")
    api.call("POST", "/v1/events", {"customer_id": umbrella, "meter": "api_calls", "quantity": 2500,
                                    "timestamp": "2025-09-15T03:00:00Z"}, expect=201)

    step("The invoice run, as of 2 October 2025")
    run = api.call("POST", "/v1/invoices/run", {"as_of": "2025-10-02T00:00:00Z"})
    check(run["created"] == 3, "one draft for each customer's September")
    again = api.call("POST", "/v1/invoices/run", {"as_of": "2025-10-02T00:00:00Z"})
    check(again["created"] == 0, "running it again creates nothing")
    invoices = {x["customer_id"]: api.call("GET", f"/v1/invoices/{x['id']}")
                for x in api.call("GET", "/v1/invoices")["data"]}
    names = {c["id"]: c["name"] for c in customers}
    for customer_id, invoice in sorted(invoices.items()):
        print_invoice(invoice, names[customer_id])

    users = next(u["value"] for u in september_usage["usage"] if u["meter"] == "active_users")
    billable = Decimal(september_calls) - 1000
    calls = min(billable, 10000) * Decimal("0.002") + max(billable - 10000, 0) * Decimal("0.001") \
        + (5 if billable > 10000 else 0)
    expected = Decimal("49.00") + Decimal(money_text(calls)) + Decimal(users) * 2
    check(invoices[acme]["total"] == money_text(expected),
          f"Acme's total is worked out by hand: 49.00 + {money_text(calls)} + {users} × 2.00 = {money_text(expected)}")
    check(invoices[globex]["total"] == "60.00", "Globex used nothing: 45.00 base fee topped up to the 60.00 commitment")
    check(invoices[umbrella]["total"] == "7850", "Umbrella: 7,400 yen + 3 packages of 1,000 calls × 150 = 7,850 yen")

    step("The open period, live")
    upcoming = api.call("GET", f"/v1/customers/{acme}/upcoming-invoice")
    print(f"   Acme's current period {upcoming['period_start']} .. {upcoming['period_end']}: "
          f"{upcoming['total']} {upcoming['currency']} so far")
    check(upcoming["status"] == "estimate" and upcoming["id"] is None, "the upcoming invoice is an estimate")
    lifecycle_story(api, invoices, acme, globex, umbrella)


class Receiver:
    """A webhook endpoint on 127.0.0.1 that records what it is sent."""

    def __init__(self):
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.headers["Meterline-Signature"], body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, count, seconds=15):
        deadline = time.monotonic() + seconds
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.received


def signed_correctly(secret, header, body):
    parts = dict(item.split("=", 1) for item in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


class StreamReader:
    """Reads GET /v1/stream in a thread and keeps the event types it sees."""

    def __init__(self, api):
        self.events = []
        request = urllib.request.Request(api.base + "/v1/stream", headers={"Authorization": f"Bearer {api.token}"})
        self.response = urllib.request.urlopen(request, timeout=30)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    self.events.append(line[7:])
        except (OSError, ValueError):
            pass

    def wait_for(self, names, seconds=10):
        deadline = time.monotonic() + seconds
        while not set(names) <= set(self.events) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.events

    def close(self):
        self.response.close()


def resources_story(api, acme, globex):
    step("A meeting room with a capacity of 2, billed by the minute")
    room = api.call("POST", "/v1/resources", {"name": "Atlas room", "capacity": 2, "price_per_minute": "0.50",
                                              "currency": "USD", "max_duration_minutes": 240}, expect=201)
    print(f"   resource {room['id']}: {room['name']}, capacity {room['capacity']}, {room['price_per_minute']} "
          f"{room['currency']}/min")
    live = StreamReader(api)
    first = api.call("POST", "/v1/sessions", {"resource_id": room["id"], "customer_id": acme, "user": "ana"}, expect=201)
    second = api.call("POST", "/v1/sessions", {"resource_id": room["id"], "customer_id": acme, "user": "ben"}, expect=201)
    full = api.call("POST", "/v1/sessions", {"resource_id": room["id"], "customer_id": acme}, expect=409)
    check(full["error"]["code"] == "capacity_full" and (full["error"]["active"], full["error"]["capacity"]) == (2, 2),
          f"a third start is refused: {full['error']['message']}")
    wrong = api.call("POST", "/v1/sessions", {"resource_id": room["id"], "customer_id": globex}, expect=409)
    print(f"   a EUR customer on a USD room: 409 {wrong['error']['message']}")
    time.sleep(1.1)  # a session of a second or so, for a real cost
    stopped = api.call("POST", f"/v1/sessions/{first['id']}/stop", {})
    expected = money_text(Decimal(stopped["duration_seconds"]) * Decimal("0.50") / 60)
    check(stopped["cost"] == expected, f"stopped after {stopped['duration_seconds']} s: cost {stopped['cost']} "
          f"= {stopped['duration_seconds']} / 60 × 0.50, rounded once")
    again = api.call("POST", f"/v1/sessions/{first['id']}/stop", {}, expect=409)
    print(f"   stopping twice: 409 {again['error']['message']}")
    api.call("POST", f"/v1/sessions/{second['id']}/stop", {})
    records = api.call("GET", f"/v1/billing-records?customer_id={acme}")
    table(["session", "user", "seconds", "minutes", "cost"],
          [(r["id"], r["user"], r["duration_seconds"], r["minutes"], r["cost"]) for r in records["data"]])
    print(f"   totals: {json.dumps(records['totals'], default=str)}")
    upcoming = api.call("GET", f"/v1/customers/{acme}/upcoming-invoice")
    lines = [l for l in upcoming["lines"] if l["type"] == "resource"]
    check(len(lines) == 1 and lines[0]["amount"] == records["totals"]["USD"]["amount"],
          "the upcoming invoice has one resource line with the sessions' costs")
    seen = live.wait_for({"session.started", "session.stopped", "stats"})
    live.close()
    check({"session.started", "session.stopped", "stats"} <= set(seen),
          f"the live stream told of it: {', '.join(sorted(set(seen)))}")


def lifecycle_story(api, invoices, acme, globex, umbrella):
    step("Webhooks: an endpoint for every invoice event")
    receiver = Receiver()
    hook = api.call("POST", "/v1/webhooks", {"url": receiver.url, "events": ["*"]}, expect=201)
    print(f"   webhook {hook['id']} → {hook['url']} (secret shown once: {hook['secret'][:12]}…)")

    step("Issuing: finance issues, Globex needs approval from customer success")
    finance = Api(api.port, api.call("POST", "/v1/api-keys", {"name": "finance desk", "role": "finance"})["key"])
    success = Api(api.port, api.call("POST", "/v1/api-keys", {"name": "CS team", "role": "customer_success"})["key"])
    api.call("PATCH", f"/v1/customers/{globex}", {"requires_approval": True})
    issued = finance.call("POST", f"/v1/invoices/{invoices[acme]['id']}/finalize", {"comment": "September"})
    check(issued["status"] == "issued" and issued["number"] == "INV-000001",
          f"Acme's invoice is issued as {issued['number']}, due {issued['due_at']}")
    pending = finance.call("POST", f"/v1/invoices/{invoices[globex]['id']}/finalize", {})
    check(pending["status"] == "pending_approval" and pending["number"] is None, "Globex's waits for approval")
    refused = finance.call("POST", f"/v1/invoices/{invoices[globex]['id']}/approve", {}, expect=403)
    check(refused["error"]["code"] == "forbidden", "finance cannot approve (403)")
    approved = success.call("POST", f"/v1/invoices/{invoices[globex]['id']}/approve", {"comment": "checked with Globex"})
    check(approved["number"] == "INV-000002", "customer success approves: issued as INV-000002")
    history = api.call("GET", f"/v1/invoices/{approved['id']}/actions")["data"]
    table(["when", "who", "role", "action", "from → to", "comment"],
          [(a["at"], a["actor_name"] or a["actor"], a["role"], a["action"], f"{a['from_status']} → {a['to_status']}",
            a["comment"] or "") for a in history])
    twice = finance.call("POST", f"/v1/invoices/{approved['id']}/finalize", {}, expect=409)
    print(f"   finalizing again: 409 {twice['error']['message']}")

    step("Payments: part now, the rest later")
    due = Decimal(issued["amount_due"])
    part = money_text(due / 2)
    first = finance.call("POST", f"/v1/invoices/{issued['id']}/payments",
                         {"amount": part, "method": "card", "reference": "ch_001"}, expect=201)
    check(first["invoice"]["payment_status"] == "partially_paid", f"{part} paid: partially paid")
    over = finance.call("POST", f"/v1/invoices/{issued['id']}/payments", {"amount": str(due)}, expect=409)
    print(f"   paying too much: 409 {over['error']['message']}")
    rest = finance.call("POST", f"/v1/invoices/{issued['id']}/payments",
                        {"amount": money_text(due - Decimal(part)), "method": "wire"}, expect=201)
    check(rest["invoice"]["status"] == "paid", "the rest paid: the invoice is paid")

    step("A late event for Acme's issued September")
    api.call("POST", "/v1/events", {"id": "late-arrival", "customer_id": acme, "meter": "api_calls",
                                    "quantity": 5000, "timestamp": "2025-09-20T12:00:00Z"}, expect=201)
    again = api.call("GET", f"/v1/invoices/{issued['id']}")
    check(again["total"] == issued["total"], "the issued invoice does not change")
    upcoming = api.call("GET", f"/v1/customers/{acme}/upcoming-invoice")
    adjustment = [l for l in upcoming["lines"] if l["type"] == "adjustment"]
    table(["type", "description", "quantity", "amount"],
          [(l["type"], l["description"], l["quantity"], l["amount"]) for l in adjustment])
    check(len(adjustment) == 1 and adjustment[0]["quantity"] == 5000,
          "it is billed as an adjustment on Acme's next invoice, priced through the tiers")

    step("Void and reissue")
    voided = finance.call("POST", f"/v1/invoices/{invoices[umbrella]['id']}/void", {"reason": "wrong address"})
    fresh = finance.call("POST", f"/v1/invoices/{voided['id']}/reissue", {}, expect=201)
    check(voided["status"] == "void" and fresh["status"] == "draft" and fresh["total"] == voided["total"],
          f"Umbrella's draft voided; invoice {fresh['id']} redrafts the same period")

    step("Exports: PDF and CSV")
    pdf = api.raw(f"/v1/invoices/{issued['id']}.pdf")
    check(pdf.startswith(b"%PDF-") and b"%%EOF" in pdf[-16:], f"INV-000001.pdf: a {len(pdf):,}-byte PDF")
    if shutil.which("pdftotext"):
        text = subprocess.run(["pdftotext", "-layout", "-", "-"], input=pdf, capture_output=True).stdout.decode()
        for row in [r for r in text.splitlines() if r.strip()][:12]:
            print("   | " + row)
        check("INV-000001" in text and "Acme Corp" in text, "pdftotext reads the number and the customer")
    csv_text = api.raw("/v1/invoices.csv").decode()
    for row in csv_text.splitlines()[:4]:
        print("   " + row[:110])
    check(csv_text.startswith("id,number,customer_id") and csv_text.count("\r\n") == 5,
          "invoices.csv: a header and one row per invoice")

    step("What went out: webhooks and e-mail")
    received = receiver.wait_for(5)
    types = [json.loads(body)["type"] for _, body in received]
    table(["#", "event"], list(enumerate(types, 1)))
    check({"invoice.issued", "invoice.paid", "invoice.voided", "invoice.created"} <= set(types),
          "issued, paid, voided and created were delivered")
    check(all(signed_correctly(hook["secret"], header, body) for header, body in received),
          "every delivery carries a valid Meterline-Signature")
    deadline = time.monotonic() + 15
    while True:  # the receiver answers before the server records the answer
        deliveries = api.call("GET", f"/v1/webhooks/{hook['id']}/deliveries")["data"]
        if all(d["status"] == "delivered" for d in deliveries) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    check(all(d["status"] == "delivered" for d in deliveries), f"{len(deliveries)} deliveries recorded as delivered")
    outbox = os.path.join(DATA_DIR[0], "outbox")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(os.listdir(outbox) if os.path.isdir(outbox) else []) < 2:
        time.sleep(0.05)
    mails = sorted(os.listdir(outbox))
    for name in mails:
        print(f"   outbox/{name}")
    check(len(mails) == 2, "no SMTP_HOST: each issued invoice went to the outbox as an .eml with its PDF")

    resources_story(api, acme, globex)

    step("The scheduler catches up to today")
    job = api.call("POST", "/v1/jobs/run", {})
    print(f"   job {job['id']}: {job['outcome']} {json.dumps(job['details'])}")
    check(job["outcome"] == "ok" and job["details"]["drafts_created"] > 0,
          "it drafts every period since and issues those past their grace period")


    storage_story(api)
    platform_story(api)
    alerts_story(api)


def platform_story(api):
    step("The collector meters this server's own process for a platform team")
    setup = subprocess.run([sys.executable, "-m", "billing.collect", "--url", api.base, "--key", api.token, "--setup"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
    check(setup.returncode == 0, "--setup created the five collector meters")
    api.call("POST", "/v1/plans", {"code": "compute", "name": "Compute", "currency": "USD", "charges": [
        {"meter": "cpu_allocated_core_seconds", "model": "per_unit", "unit_price": "0.0001"}]})
    team = api.call("POST", "/v1/customers", {"name": "Platform Team", "email": "platform@example.com"})
    api.call("POST", "/v1/subscriptions", {"customer_id": team["id"], "plan": "compute"})
    key = api.call("POST", "/v1/api-keys", {"name": "collector", "role": "ingest"})["key"]
    once = subprocess.run([sys.executable, "-m", "billing.collect", "--url", api.base, "--customer", str(team["id"]),
                           "--service", "meterline", "--pid", str(SERVER_PID[0]), "--interval", "2", "--once",
                           "--spool", os.path.join(DATA_DIR[0], "collector.spool")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60, env={**os.environ, "METERLINE_KEY": key})
    check(once.returncode == 0, "--once took a baseline, waited one 2-second window, posted it and exited 0")
    events = api.call("GET", f"/v1/events?customer_id={team['id']}")["data"]
    table(["event id", "quantity", "cores"], [(e["id"], e["quantity"], e["properties"].get("cores")) for e in events])
    check(len(events) == 5 and len({e["id"] for e in events}) == 5, "one event per metric, ids named by the window")

    step("Analytics")
    overview = api.call("GET", "/v1/analytics/overview")
    table(["figure", "value"], [(k, json.dumps(v)) for k, v in overview.items() if k != "timezone"])
    revenue = api.call("GET", "/v1/analytics/revenue?from=2025-09-01&to=2026-01-01&interval=month&basis=period"
                              "&group_by=customer")
    table(["month", "revenue"], [(b["start"][:7], json.dumps(b["totals"])) for b in revenue["data"]])
    expected = {}
    for invoice in api.call("GET", "/v1/invoices?limit=1000")["data"]:
        if invoice["status"] in ("issued", "paid") and "2025-09-01" <= invoice["local_period"]["start"] < "2026-01-01":
            expected[invoice["currency"]] = expected.get(invoice["currency"], Decimal(0)) + Decimal(invoice["total"])
    check({c: Decimal(v) for c, v in revenue["totals"].items()} == expected,
          "revenue per month per currency adds up to the issued and paid invoices (drafts and void left out)")
    calls = api.call("GET", "/v1/analytics/usage?meter=api_calls&from=2025-09-01&to=2025-10-01&interval=month"
                            "&group_by=customer")
    check(calls["value"] == sum(g["value"] for g in calls["data"][0]["groups"]),
          f"API calls in September over all customers: {calls['value']}, the sum of each customer's")


def alerts_story(api):
    step("A budget and alerts: 100.00 a month, told at 50%, 80% and 100%")
    receiver = Receiver()
    hook = api.call("POST", "/v1/webhooks", {"url": receiver.url, "events": ["alert.triggered"]}, expect=201)
    api.call("POST", "/v1/plans", {"code": "alerts-usd", "name": "Per call", "currency": "USD", "base_fee": "0.00",
                                   "charges": [{"meter": "api_calls", "model": "per_unit", "unit_price": "1.00"}]})
    now = datetime.now(timezone.utc)
    watched = api.call("POST", "/v1/customers", {"name": "Watchful Ltd", "email": "ops@watchful.example",
                                                 "billing_email": "ap@watchful.example",
                                                 "budget": {"monthly": "100.00", "alert_at_percent": [50, 80, 100]}})
    api.call("POST", "/v1/subscriptions", {"customer_id": watched["id"], "plan": "alerts-usd",
                                           "start": now.date().replace(day=1).isoformat()})
    rule = api.call("POST", "/v1/alerts", {"name": "Heavy API use", "customer_id": watched["id"], "type": "usage",
                                           "meter": "api_calls", "threshold": 200}, expect=201)
    print(f"   budget {watched['budget']}; rule {rule['id']}: usage of {rule['meter']} over {rule['threshold']}")
    bad = api.call("POST", "/v1/alerts", {"type": "spend", "threshold": "10.00"}, expect=400)
    check(bad["error"]["details"][0]["field"] == "currency", "a spend alert for everyone must name its currency")

    def use(calls, tag):
        stamp = (now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        api.call("POST", "/v1/events/batch", {"customer_id": watched["id"], "events": [
            {"id": f"watch-{tag}", "meter": "api_calls", "quantity": calls, "timestamp": stamp}]})
        return api.call("POST", "/v1/alerts/evaluate", {})

    first = use(85, "a")
    print(f"   85 calls this period (85.00 spent): {first}")
    check(first["fired"] == 2, "the evaluation fires the 50% and 80% steps")
    fired = api.call("GET", f"/v1/alerts/events?customer_id={watched['id']}")["data"]
    table(["type", "step", "threshold", "value", "message"],
          [(f["type"], f["percent"], f["threshold"], f["value"], f["message"][:60]) for f in fired])
    again = use(10, "b")
    print(f"   10 more (95.00): {again}")
    check(again["fired"] == 0, "pushing further does not fire the same steps again (once per period, for sure)")
    notes = api.call("GET", f"/v1/notifications?unread=true&customer_id={watched['id']}")
    table(["notification", "title"], [(n["id"], n["title"]) for n in notes["data"]])
    check(notes["unread_count"] == 2, "each firing left a notification")
    received = receiver.wait_for(2)
    check(len(received) == 2 and all(signed_correctly(hook["secret"], header, body) for header, body in received)
          and {json.loads(body)["type"] for _, body in received} == {"alert.triggered"},
          "each firing went out as a signed alert.triggered webhook")
    outbox = os.path.join(DATA_DIR[0], "outbox")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len([n for n in os.listdir(outbox) if "alert" in n]) < 2:
        time.sleep(0.05)
    mails = sorted(n for n in os.listdir(outbox) if "alert" in n)
    for name in mails:
        print(f"   outbox/{name}")
    check(len(mails) == 2, "and as an e-mail to the billing address, in the outbox")
    last = use(110, "c")
    print(f"   110 more (205.00): {last}")
    check(last["fired"] == 2, "the 100% step and the usage rule (205 calls over 200) fire once each")


SERVER_PID = [None]


def storage_story(api):
    step("Object storage: a tenant on BillFlow-style pricing (1 GB-day free per day, 1,000 calls free)")
    plan = {"code": "billflow", "name": "BillFlow storage", "currency": "USD", "charges": [
        {"meter": "storage_gb_days", "model": "per_unit", "unit_price": "0.25", "free_units_per_day": 1},
        {"meter": "storage_api_calls", "model": "per_unit", "unit_price": "0.001", "free_units": 1000}]}
    api.call("POST", "/v1/plans", plan)
    nimbus = api.call("POST", "/v1/customers", {"name": "Nimbus Drive", "email": "ops@nimbus.example",
                                                 "storage_quota_bytes": 3_000_000})
    other = api.call("POST", "/v1/customers", {"name": "Other Tenant", "email": "ops@other.example"})
    api.call("POST", "/v1/subscriptions", {"customer_id": nimbus["id"], "plan": "billflow"})
    tenant = Api(api.port, api.call("POST", "/v1/api-keys", {"name": "nimbus", "customer_id": nimbus["id"]})["key"])
    stranger = Api(api.port, api.call("POST", "/v1/api-keys", {"name": "other", "customer_id": other["id"]})["key"])
    print(f"   Nimbus Drive (customer {nimbus['id']}), quota 3,000,000 bytes, signs in with its own key")

    step("Uploads, a listing, a download and a range")
    rng = random.Random(9)
    files = {"contracts/2025/agreement.pdf": (rng.randbytes(1_200_000), "application/pdf"),
             "reports/usage-q3.csv": (b"month,calls\n2025-07,1200\n2025-08,1350\n2025-09,1480\n", "text/csv")}
    for key, (data, content_type) in files.items():
        status, _, body = tenant.send_bytes("PUT", f"/v1/objects/{key}", data, {"Content-Type": content_type})
        stored = json.loads(body)
        check(status == 201 and stored["etag"] == hashlib.sha256(data).hexdigest(),
              f"PUT {key}: 201, {stored['size']:,} bytes, ETag = SHA-256 of the bytes")
    listing = tenant.call("GET", "/v1/objects")
    table(["key", "size", "type"], [(o["key"], o["size"], o["content_type"]) for o in listing["data"]])
    check(listing["total_bytes"] == sum(len(d) for d, _ in files.values()) and listing["quota_bytes"] == 3_000_000,
          f"the listing totals {listing['total_bytes']:,} of {listing['quota_bytes']:,} bytes")
    status, headers, body = tenant.send_bytes("GET", "/v1/objects/contracts/2025/agreement.pdf")
    check(status == 200 and body == files["contracts/2025/agreement.pdf"][0]
          and headers["Content-Disposition"].startswith("attachment") and headers["Content-Security-Policy"] == "sandbox",
          "GET returns the same bytes, as an attachment, sandboxed")
    status, headers, body = tenant.send_bytes("GET", "/v1/objects/reports/usage-q3.csv", headers={"Range": "bytes=-15"})
    check(status == 206 and body == files["reports/usage-q3.csv"][0][-15:],
          f"a Range request: 206, {headers['Content-Range']}")
    status, _, _ = stranger.send_bytes("GET", "/v1/objects/reports/usage-q3.csv")
    check(status == 404, "another tenant asking for the same key gets 404")

    step("The quota")
    status, _, body = tenant.send_bytes("PUT", "/v1/objects/backups/too-big.tar", rng.randbytes(2_000_000))
    error = json.loads(body)["error"]
    check(status == 409 and error["code"] == "quota_exceeded",
          f"a 2 MB upload: 409 quota_exceeded (quota {error['quota_bytes']:,}, in use {error['used_bytes']:,}); "
          "nothing stored")
    check(tenant.call("GET", "/v1/objects")["total_bytes"] == listing["total_bytes"], "the total is unchanged")

    step("Storage and calls on the upcoming invoice")
    api.call("POST", "/v1/jobs/run", {})  # writes the read counts (they are also flushed every few seconds)
    calls = api.call("GET", f"/v1/customers/{nimbus['id']}/usage?meter=storage_api_calls&group_by=operation")
    usage = calls["usage"][0]
    table(["operation", "calls"], [(g["group"]["operation"], g["value"]) for g in usage["groups"]])
    check(usage["value"] == 7, "7 calls: 3 puts (the refused one too, as S3 bills), 2 gets, 2 lists")
    upcoming = api.call("GET", f"/v1/customers/{nimbus['id']}/upcoming-invoice")
    table(["line", "quantity", "amount"], [(l["description"], l["quantity"], l["amount"]) for l in upcoming["lines"]])
    gb_days = [l for l in upcoming["lines"] if l["meter"] == "storage_gb_days"][0]
    check(Decimal(str(gb_days["quantity"])) >= 0 and "free" in gb_days["description"],
          "GB-days so far (the open day counted live) with this period's daily allowance; calls within the free 1,000")


DATA_DIR = [None]  # the server's data folder (its outbox is there)


def main():
    with tempfile.TemporaryDirectory() as folder:
        DATA_DIR[0] = folder
        step("Start a server on a fresh database")
        proc, port = start_server(os.path.join(folder, "billing.db"))
        SERVER_PID[0] = proc.pid
        try:
            story(Api(port, ADMIN_KEY))
        except StoryError as exc:
            print(f"\nFAILED: {exc}")
            return 1
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print("\nThe story ran end to end.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Soak benchmark: mixed load against one real server process for a long
while, then the figures for the README and a check of what was stored.

    python3 bench/soak.py                 # 10 minutes
    python3 bench/soak.py --minutes 1     # a short try

Standard library only; run by hand (pytest does not collect it). All traffic
goes to 127.0.0.1.

Setup. `server.py --quiet --no-scheduler` (bench/ingest.py's ServerProcess) on
a fresh database and data folder in a temp dir, with the default customer rate
limit (BILLING_RATE_LIMIT 100/s per credential: the object clients spread
their requests over 8 tenant keys, well under it; a 429 there would be listed)
and BILLING_GRACE_PERIOD_HOURS = 2160, so the drafts the run makes stay drafts
while the scheduler's jobs run. Through the API: the 4 meters of
bench/ingest.py, a plan, 300 customers subscribed since the first of the month
two months ago (the first invoice run drafts two periods each), 3 resources of
capacity 2, 3 and 4, 8 tenant customers with customer-scoped keys, and two
viewer users (one signs in with the right password, the other is guessed at).

Load, until the time is up, from 5 client threads with keep-alive connections
and a sixth that opens stalled connections:

  ingest    1,000-event batches (random UUID ids over the 300 customers),
            --batch-rate per second; every 25th batch resends an earlier one,
            which must come back as 1,000 duplicates.
  reads     single-event POSTs (some repeat an acknowledged id: 200
            duplicate), usage reads (staff and tenant keys), invoice list, one
            draft, a draft's PDF, the tenant's own invoices.
  admin     session starts and stops on the 3 resources (409 capacity_full is
            a refusal, not an error), an invoice run every 30 s, the
            scheduler's jobs (POST /v1/jobs/run) every 60 s, a sign-in + /me +
            sign-out every 3 s, a wrong password every 20 s (429 after 10 in
            15 minutes, by design); each first after half its period.
  objects   PUT / GET (SHA-256 checked against the ETag) / DELETE / list of
            1 KiB - 256 KiB objects, 40 keys per tenant, by the tenant keys.
  hostile   ~10 per second, each on its own connection: malformed JSON, wrong
            types, a batch with one bad event (its ids must never be stored),
            oversized Content-Length (413), a 100 KiB body without a token
            (401, or 413 unread: then a reset is an expected close), bad or
            missing tokens (401), path traversal object keys (400), other
            tenants' objects (404), text/plain bodies (415).
  stalls    every 15 s (at most 4 at once), alternately a connection that
            sends half a request head, or a whole head and 10 of the 100 body
            bytes it announces, then nothing: each waits in the background
            until the server closes it (capped at 70 s; not closed, or a 5xx
            answer, fails the run).

Every answer is classified by request kind: expected (2xx), an expected
refusal (the 4xx that kind must get), unexpected (any other 4xx, or a hostile
request answered 2xx), 5xx, or a connection error. The script exits 1 on any
5xx, any connection error (a stalled connection being closed, or a refused
body's connection reset, is expected), an
accepted hostile request, a failed stored-data check, server RSS not flat
(end > after-warm-up + 50 MB) or above 300 MB.

Memory: VmRSS of the server every second; start = after setup, warm-up =
after min(60 s, a third of the run); peak = the largest sample and VmHWM.

At the end: the open sessions are stopped, the stalled connections waited
for, the server stopped with SIGTERM (a clean stop), and its database read
with sqlite3: every acknowledged event id (201/200, batch 200) is stored
exactly once for its customer and no event of the bench meters was stored
without an acknowledgement; no id of a refused batch is stored; every session
acknowledged 201 is stored once with its resource and customer, no other
session exists, every acknowledged stop matches the stored row, capacity was
never exceeded and costs are exact (bench/sessions.py's check); the tenants'
objects are exactly what the client last acknowledged, each file on disk;
the server's log holds no traceback.
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from datetime import datetime, timezone
from decimal import Decimal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ingest  # noqa: E402  (ServerProcess, api, make_events, public, to_json, percentile, log, METERS)
import sessions as session_bench  # noqa: E402  (check: capacity replayed from the rows, exact costs)

sys.path.insert(0, ingest.ROOT)
from billing.api.events import id_hash  # noqa: E402  (the server's dedup key)
from billing.store.files import FileStore  # noqa: E402  (where an object's file lives)

CUSTOMERS = 300
TENANTS = 8
KEYS_PER_TENANT = 40
RESOURCES = [("Soak room A", 2), ("Soak room B", 3), ("Soak room C", 4)]
USER = ("soak-viewer@example.com", "soak-viewer-password")
GUESSED = ("soak-guessed@example.com", "soak-guessed-password")
STALL_CAP = 70.0
STALL_EVERY = 15.0
IDLE_RECONNECT = 10.0  # the server closes keep-alive connections idle for 15 s
KiB = 1024
MiB = 1024 * KiB
JSON = "application/json"

# expected refusals per request kind: status -> error codes (None: any code)
REFUSALS = {
    "session_start": {409: {"capacity_full"}},
    "login": {429: {"rate_limited"}},
    "login_wrong": {401: {"unauthenticated"}, 429: {"rate_limited"}},
    "hostile_json": {400: None},
    "hostile_types": {400: None},
    "hostile_batch": {400: None},
    "hostile_oversized": {413: None},
    "hostile_unauth_body": {401: None, 413: None},
    "hostile_token": {401: None},
    "hostile_traversal": {400: None},
    "hostile_other_tenant": {404: None},
    "hostile_media_type": {415: None},
    "hostile_limit": {400: None},
}
# the server may close these without reading the body they announce (a reset is then expected)
HOSTILE_CLOSE = {"hostile_oversized", "hostile_unauth_body"}
for _kind in ("object_put", "object_get", "object_delete", "object_list", "tenant_usage", "tenant_invoices"):
    REFUSALS[_kind] = {429: {"rate_limited"}}  # customer keys are rate-limited (none expected at this rate)


def log(msg):
    ingest.log(msg)


# -- bookkeeping ---------------------------------------------------------------------------------

class Stats:
    """Every answer by kind: latencies, outcomes, and the first few surprises."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latency = defaultdict(list)
        self.outcomes = Counter()  # (kind, status, code, verdict) -> n
        self.surprises = []

    def record(self, kind, status, code, seconds, verdict, note=""):
        with self.lock:
            if seconds is not None:
                self.latency[kind].append(seconds)
            self.outcomes[(kind, status, code, verdict)] += 1
            if verdict not in ("ok", "refused", "closed") and len(self.surprises) < 30:
                self.surprises.append(f"{kind}: {status} {code or ''} {note}".strip())

    def count(self, verdict):
        return sum(n for (_, _, _, v), n in self.outcomes.items() if v == verdict)


class Ledger:
    """Acknowledged and refused event ids, on disk (millions of them)."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = OFF")
        self.conn.execute("PRAGMA synchronous = OFF")
        for table in ("acked", "refused"):
            self.conn.execute(f"CREATE TABLE {table} (customer_id INTEGER NOT NULL, event_id TEXT NOT NULL,"
                              " PRIMARY KEY (customer_id, event_id)) WITHOUT ROWID")

    def add(self, table, pairs):
        with self.lock:
            self.conn.execute("BEGIN")
            self.conn.executemany(f"INSERT OR IGNORE INTO {table} VALUES (?, ?)", pairs)
            self.conn.execute("COMMIT")

    def close(self):
        self.conn.close()


class Conn:
    """A keep-alive connection that classifies every answer into Stats."""

    def __init__(self, port, stats, token, timeout=120):
        self.port, self.stats, self.token, self.timeout = port, stats, token, timeout
        self.http = None
        self.used = 0.0

    def close(self):
        if self.http is not None:
            self.http.close()
            self.http = None

    def call(self, kind, method, path, body=None, raw=None, headers=None, token=..., hostile=False):
        """(status, payload bytes, JSON or None), or None after a connection error."""
        if self.http is None or time.monotonic() - self.used > IDLE_RECONNECT:
            self.close()
            self.http = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        headers = dict(headers or {})
        token = self.token if token is ... else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            raw = ingest.to_json(body).encode()
            headers["Content-Type"] = JSON
        began = time.perf_counter()
        try:
            self.http.request(method, path, raw, headers)
            resp = self.http.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            closed = kind in HOSTILE_CLOSE and isinstance(exc, (ConnectionResetError, BrokenPipeError))
            self.stats.record(kind, "conn", type(exc).__name__, None, "closed" if closed else "conn",
                              f"{method} {path}: {exc!r}")
            self.close()
            return None
        seconds = time.perf_counter() - began
        self.used = time.monotonic()
        if resp.will_close:
            self.close()
        data = None
        if payload and resp.getheader("Content-Type", "").startswith(JSON):
            data = json.loads(payload, parse_float=Decimal)
        code = data["error"].get("code") if isinstance(data, dict) and "error" in data else None
        self.stats.record(kind, resp.status, code, seconds, verdict(kind, resp.status, code, hostile),
                          f"{method} {path}")
        return resp.status, payload, data


def verdict(kind, status, code, hostile):
    if status >= 500:
        return "5xx"
    if status < 400:
        return "accepted-hostile" if hostile else "ok"
    codes = REFUSALS.get(kind, {}).get(status, ())
    if codes is None or code in codes:
        return "refused"
    return "unexpected"


# -- setup ---------------------------------------------------------------------------------------

def admin_call(conn, method, path, body, want=(200, 201)):
    status, answer = ingest.api(conn, method, path, body)
    if status not in want:
        raise RuntimeError(f"setup {method} {path}: {status} {answer}")
    return answer


def setup(port):
    """The world the load runs in, made through the API."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for key, name, unit, aggregation in ingest.METERS:
        admin_call(conn, "POST", "/v1/meters", {"key": key, "name": name, "unit": unit, "aggregation": aggregation})
    admin_call(conn, "POST", "/v1/plans", {
        "code": "soak", "name": "Soak", "currency": "USD", "base_fee": "10.00", "charges": [
            {"meter": "api_calls", "model": "per_unit", "unit_price": "0.001"},
            {"meter": "cpu_seconds", "model": "graduated", "free_units": 100,
             "tiers": [{"up_to": 10000, "unit_price": "0.0002"}, {"up_to": None, "unit_price": "0.0001"}]}]})
    today = datetime.now(timezone.utc).date()
    month = today.year * 12 + today.month - 1 - 2
    start = f"{month // 12:04d}-{month % 12 + 1:02d}-01"
    customers = []
    for n in range(CUSTOMERS):
        customer = admin_call(conn, "POST", "/v1/customers", {"name": f"Soak customer {n}",
                                                               "email": f"soak{n}@example.com"})
        admin_call(conn, "POST", "/v1/subscriptions", {"customer_id": customer["id"], "plan": "soak",
                                                        "start": start})
        customers.append(customer["id"])
    tenants = []
    for n, customer_id in enumerate(customers[:TENANTS]):
        key = admin_call(conn, "POST", "/v1/api-keys", {"name": f"soak tenant {n}", "customer_id": customer_id})
        tenants.append((customer_id, key["key"]))
    resources = [admin_call(conn, "POST", "/v1/resources", {"name": name, "capacity": capacity,
                                                             "price_per_minute": "0.50", "currency": "USD"})["id"]
                 for name, capacity in RESOURCES]
    for email, password in (USER, GUESSED):
        admin_call(conn, "POST", "/v1/users", {"email": email, "name": email.split("@")[0], "role": "viewer",
                                               "password": password})
    drafts = admin_call(conn, "POST", "/v1/invoices/run", {})["invoice_ids"]
    conn.close()
    log(f"setup: {len(customers)} customers subscribed since {start}, {len(drafts)} drafts, "
        f"{len(tenants)} tenants, {len(resources)} resources")
    return {"customers": customers, "tenants": tenants, "resources": resources, "drafts": drafts}


# -- the clients ---------------------------------------------------------------------------------

class Run:
    """What the client threads share: the server, the world, the clock, the books."""

    def __init__(self, port, world, seconds, args):
        self.port, self.world, self.args = port, world, args
        self.stats = Stats()
        self.ledger = Ledger(os.path.join(args.work, "ledger.db"))
        self.deadline = time.monotonic() + seconds
        self.sessions = {}  # id -> {"resource_id", "customer_id", "stop": answer or None}
        self.objects = {customer_id: {} for customer_id, _ in world["tenants"]}  # key -> (size, etag)
        self.fatal = []
        self.stalled = []  # threads
        self.stall_results = []  # (seconds until closed, what was received)
        self.lock = threading.Lock()

    def running(self):
        return time.monotonic() < self.deadline

    def conn(self, token=ingest.ADMIN_KEY, timeout=120):
        return Conn(self.port, self.stats, token, timeout)


def ingest_worker(run, rng):
    conn = run.conn()
    customers = run.world["customers"]
    interval = 1.0 / run.args.batch_rate
    earlier = None
    n = 0
    next_at = time.monotonic()
    while run.running():
        n += 1
        if n % 25 == 0 and earlier is not None:
            body, ids = earlier
            answer = conn.call("batch_resend", "POST", "/v1/events/batch", raw=body, headers={"Content-Type": JSON})
            if answer and answer[0] == 200 and (answer[2]["accepted"], answer[2]["duplicates"]) != (0, len(ids)):
                run.fatal.append(f"a resent batch was not all duplicates: {answer[2]}")
        else:
            events = ingest.make_events(run.args.batch_size, customers, rng)
            ids = [(e["customer_id"], e["id"]) for e in events]
            body = ingest.to_json({"events": [ingest.public(e) for e in events]}).encode()
            answer = conn.call("batch", "POST", "/v1/events/batch", raw=body, headers={"Content-Type": JSON})
            if answer and answer[0] == 200:
                if answer[2]["accepted"] != len(ids):
                    run.fatal.append(f"a fresh batch was not all accepted: {answer[2]}")
                run.ledger.add("acked", ids)
                earlier = (body, ids)
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            next_at = time.monotonic()
    conn.close()


def reads_worker(run, rng):
    admin = run.conn()
    tenant_id, tenant_key = run.world["tenants"][0]
    tenant = run.conn(tenant_key)
    customers, drafts = run.world["customers"], run.world["drafts"]
    repeats = []
    actions = [("single", 30), ("single_repeat", 5), ("usage", 20), ("usage_day", 5), ("tenant_usage", 5),
               ("invoice_list", 10), ("invoice_get", 10), ("invoice_pdf", 5), ("tenant_invoices", 5)]
    names, weights = zip(*actions)
    while run.running():
        action = rng.choices(names, weights)[0]
        if action == "single":
            event = ingest.make_events(1, customers, rng)[0]
            answer = admin.call("single", "POST", "/v1/events", ingest.public(event))
            if answer and answer[0] in (200, 201):
                run.ledger.add("acked", [(event["customer_id"], event["id"])])
                if answer[0] != 201:
                    run.fatal.append(f"a fresh event id came back as a duplicate: {event['id']}")
                if len(repeats) < 1000:
                    repeats.append(ingest.public(event))
        elif action == "single_repeat" and repeats:
            answer = admin.call("single_repeat", "POST", "/v1/events", rng.choice(repeats))
            if answer and answer[0] == 201:
                run.fatal.append("a repeated event id was stored again (201)")
        elif action in ("usage", "usage_day"):
            window = "?window=day" if action == "usage_day" else ""
            admin.call(action, "GET", f"/v1/customers/{rng.choice(customers)}/usage{window}")
        elif action == "tenant_usage":
            tenant.call("tenant_usage", "GET", f"/v1/customers/{tenant_id}/usage")
        elif action == "tenant_invoices":
            tenant.call("tenant_invoices", "GET", "/v1/invoices?limit=20")
        elif action == "invoice_list":
            admin.call("invoice_list", "GET", f"/v1/invoices?limit=50&customer_id={rng.choice(customers)}")
        elif action == "invoice_get" and drafts:
            admin.call("invoice_get", "GET", f"/v1/invoices/{rng.choice(drafts)}")
        elif action == "invoice_pdf" and drafts:
            answer = admin.call("invoice_pdf", "GET", f"/v1/invoices/{rng.choice(drafts)}.pdf")
            if answer and answer[0] == 200 and not answer[1].startswith(b"%PDF-"):
                run.fatal.append("an invoice PDF does not start with %PDF-")
    admin.close()
    tenant.close()


def admin_worker(run, rng):
    """Sessions, with the invoice run, the scheduler's jobs and sign-ins on their own periods."""
    admin = run.conn()
    periods = {"invoice_run": 30.0, "jobs_run": 60.0, "login": 3.0, "login_wrong": 20.0}
    due = {task: time.monotonic() + period / 2 for task, period in periods.items()}
    running = []  # (session id, stop after)
    while run.running():
        now = time.monotonic()
        for task, at in due.items():
            if now >= at:
                due[task] = now + periods[task]
                PERIODIC[task](run, admin)
        ready = [entry for entry in running if entry[1] <= now]
        if ready:
            running.remove(ready[0])
            stop_session(run, admin, ready[0][0])
        else:
            session_id = start_session(run, admin, rng)
            if session_id is not None:
                running.append((session_id, now + rng.uniform(1.0, 10.0)))
        time.sleep(0.1)
    admin.close()


def start_session(run, admin, rng):
    resource_id = rng.choice(run.world["resources"])
    customer_id = rng.choice(run.world["customers"])
    answer = admin.call("session_start", "POST", "/v1/sessions", {"resource_id": resource_id,
                                                                   "customer_id": customer_id})
    if answer and answer[0] == 201:
        run.sessions[answer[2]["id"]] = {"resource_id": resource_id, "customer_id": customer_id, "stop": None}
        return answer[2]["id"]
    return None


def stop_session(run, admin, session_id):
    answer = admin.call("session_stop", "POST", f"/v1/sessions/{session_id}/stop", {})
    if answer and answer[0] == 200:
        run.sessions[session_id]["stop"] = answer[2]


def invoice_run(run, admin):
    answer = admin.call("invoice_run", "POST", "/v1/invoices/run", {})
    if answer and answer[0] == 200 and answer[2]["created"]:
        run.fatal.append(f"a repeated invoice run drafted again: {answer[2]}")


def jobs_run(run, admin):
    admin.call("jobs_run", "POST", "/v1/jobs/run", {})


def sign_in(run, admin):
    email, password = USER
    answer = admin.call("login", "POST", "/v1/auth/login", {"email": email, "password": password}, token=None)
    if answer and answer[0] == 200:
        token = answer[2]["token"]
        admin.call("me", "GET", "/v1/auth/me", token=token)
        admin.call("logout", "POST", "/v1/auth/logout", token=token)


def wrong_sign_in(run, admin):
    email, password = GUESSED
    admin.call("login_wrong", "POST", "/v1/auth/login", {"email": email, "password": password + "?"}, token=None)


PERIODIC = {"invoice_run": invoice_run, "jobs_run": jobs_run, "login": sign_in, "login_wrong": wrong_sign_in}


def objects_worker(run, rng):
    tenants = run.world["tenants"][:TENANTS - 2]  # the last two are the hostile worker's
    conns = {customer_id: run.conn(key) for customer_id, key in tenants}
    pool = os.urandom(MiB)
    while run.running():
        customer_id = rng.choice(list(conns))
        conn, model = conns[customer_id], run.objects[customer_id]
        action = rng.choices(("put", "get", "delete", "list"), (40, 35, 10, 15))[0]
        if action in ("get", "delete") and not model:
            action = "put"
        if action == "put":
            key = f"soak/file-{rng.randrange(KEYS_PER_TENANT)}.bin"
            size = rng.randint(KiB, 256 * KiB)
            at = rng.randrange(MiB - size)
            body = pool[at:at + size]
            etag = hashlib.sha256(body).hexdigest()
            answer = conn.call("object_put", "PUT", f"/v1/objects/{key}", raw=body,
                               headers={"Content-Type": "application/octet-stream"})
            if answer and answer[0] in (200, 201):
                if answer[2]["etag"] != etag or answer[2]["size"] != size:
                    run.fatal.append(f"PUT {key}: the answer does not describe the bytes sent: {answer[2]}")
                model[key] = (size, etag)
        elif action == "get":
            key = rng.choice(list(model))
            answer = conn.call("object_get", "GET", f"/v1/objects/{key}")
            if answer and answer[0] == 200 and hashlib.sha256(answer[1]).hexdigest() != model[key][1]:
                run.fatal.append(f"GET {key}: the bytes are not the ones last stored")
        elif action == "delete":
            key = rng.choice(list(model))
            answer = conn.call("object_delete", "DELETE", f"/v1/objects/{key}")
            if answer and answer[0] == 200:
                del model[key]
        else:
            conn.call("object_list", "GET", "/v1/objects?limit=100")
    for conn in conns.values():
        conn.close()


# -- hostile clients -----------------------------------------------------------------------------

def hostile_cases(run, rng):
    """(kind, function(conn)) pairs; each sends one hostile request."""
    (own_id, own_key), (other_id, other_key) = run.world["tenants"][TENANTS - 2:]
    stranger = run.world["customers"][-1]

    def send(kind, method, path, body=None, raw=None, headers=None, token=ingest.ADMIN_KEY):
        return lambda conn: conn.call(kind, method, path, body, raw, headers, token=token, hostile=True)

    def bad_batch(conn):
        events = ingest.make_events(10, run.world["customers"], rng)
        events[rng.randrange(10)]["quantity"] = -1
        run.ledger.add("refused", [(e["customer_id"], e["id"]) for e in events])
        conn.call("hostile_batch", "POST", "/v1/events/batch", {"events": [ingest.public(e) for e in events]},
                  hostile=True)

    json_ct = {"Content-Type": JSON}
    return [
        send("hostile_json", "POST", "/v1/events", raw=b'{"id": "x", "meter": ', headers=json_ct),
        send("hostile_json", "POST", "/v1/customers", raw=b'{"name": "x"', headers=json_ct),
        send("hostile_json", "POST", "/v1/events", headers=json_ct,
             raw=b'{"customer_id": %d, "meter": "api_calls", "quantity": NaN}' % stranger),
        send("hostile_types", "POST", "/v1/events", {"customer_id": "abc", "meter": 5, "quantity": "lots"}),
        send("hostile_types", "POST", "/v1/sessions", {"resource_id": "one", "customer_id": [stranger]}),
        send("hostile_types", "POST", "/v1/customers", {"name": 5, "email": ["x@example.com"]}),
        send("hostile_types", "POST", "/v1/events/batch", {"events": {"id": "not a list"}}),
        bad_batch,
        send("hostile_oversized", "POST", "/v1/events/batch", headers={**json_ct, "Content-Length": str(50 * MiB)}),
        send("hostile_oversized", "PUT", "/v1/objects/big.bin", token=own_key,
             headers={"Content-Type": "application/octet-stream", "Content-Length": str(200 * MiB)}),
        send("hostile_unauth_body", "POST", "/v1/customers", raw=b"{" * (100 * KiB), headers=json_ct, token=None),
        send("hostile_token", "GET", "/v1/customers", token="mk_" + uuid.uuid4().hex * 2),
        send("hostile_token", "GET", "/v1/invoices", token=None),
        send("hostile_token", "POST", "/v1/events", {"meter": "api_calls"}, token="not a token at all"),
        send("hostile_traversal", "PUT", "/v1/objects/a/../../etc/passwd", raw=b"x", token=own_key),
        send("hostile_traversal", "PUT", "/v1/objects/%2e%2e/secret", raw=b"x", token=own_key),
        send("hostile_traversal", "GET", "/v1/objects/../master.key", token=own_key),
        send("hostile_traversal", "DELETE", "/v1/objects//etc/hosts", token=own_key),
        send("hostile_other_tenant", "GET", "/v1/objects/private/secret.txt", token=own_key),
        send("hostile_other_tenant", "DELETE", "/v1/objects/private/secret.txt", token=own_key),
        send("hostile_other_tenant", "GET", f"/v1/customers/{other_id}/usage", token=own_key),
        send("hostile_media_type", "POST", "/v1/events", raw=b"hello", headers={"Content-Type": "text/plain"}),
        send("hostile_limit", "GET", "/v1/invoices?limit=5000"),
    ]


def hostile_worker(run, rng):
    other_id, other_key = run.world["tenants"][TENANTS - 1]
    owner = run.conn(other_key)
    body = b"the other tenant's private file\n"
    answer = owner.call("object_put", "PUT", "/v1/objects/private/secret.txt", raw=body,
                        headers={"Content-Type": "text/plain"})
    owner.close()
    if answer and answer[0] in (200, 201):
        run.objects[other_id]["private/secret.txt"] = (len(body), hashlib.sha256(body).hexdigest())
    cases = hostile_cases(run, rng)
    while run.running():
        conn = run.conn(timeout=30)  # a fresh connection for each: a refused request may close it
        rng.choice(cases)(conn)
        conn.close()
        time.sleep(0.1)


STALLS = {
    "half head": b"GET /v1/customers HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bear",
    "half body": (b"POST /v1/customers HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                  + ingest.ADMIN_KEY.encode() + b"\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"name\": \""),
}


def stall_worker(run, rng):
    """Every STALL_EVERY s (at most 4 at once), alternately: half a request head, or a
    whole head and 10 of the 100 body bytes it announces; each then waits in the
    background until the server closes the connection (or STALL_CAP)."""
    turn = 0
    next_at = time.monotonic() + 5.0
    while run.running():
        if time.monotonic() >= next_at:
            next_at += STALL_EVERY
            with run.lock:
                if sum(t.is_alive() for t in run.stalled) >= 4:
                    continue
                kind = list(STALLS)[turn % len(STALLS)]
                turn += 1
                thread = threading.Thread(target=stall, args=(run, kind), daemon=True)
                run.stalled.append(thread)
            thread.start()
        time.sleep(0.2)


def stall(run, kind):
    began = time.monotonic()
    got, outcome = b"", "closed"
    try:
        with socket.create_connection(("127.0.0.1", run.port), timeout=STALL_CAP) as sock:
            sock.sendall(STALLS[kind])
            while True:
                left = STALL_CAP - (time.monotonic() - began)
                if left <= 0:
                    raise TimeoutError
                sock.settimeout(left)
                chunk = sock.recv(4096)
                if not chunk:
                    break
                got += chunk
    except TimeoutError:
        outcome = "not closed"
    except ConnectionResetError:
        outcome = "reset"
    except OSError as exc:
        outcome = f"error {exc!r}"
    status = got.split(b"\r\n", 1)[0].decode("latin-1") if got else "no answer"
    with run.lock:
        run.stall_results.append((kind, time.monotonic() - began, outcome, status))


# -- memory --------------------------------------------------------------------------------------

class Sampler(threading.Thread):
    """VmRSS / VmHWM of the server and the 1-minute load average, every second."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.began = time.monotonic()
        self.samples = []  # (seconds since start, VmRSS kB, VmHWM kB, load average)
        self.done = threading.Event()

    def sample(self):
        status = self.server.status()
        self.samples.append((time.monotonic() - self.began, status["VmRSS"], status["VmHWM"], os.getloadavg()[0]))

    def run(self):
        while not self.done.wait(1.0):
            try:
                self.sample()
            except (OSError, KeyError):
                return


# -- what was stored -----------------------------------------------------------------------------

def check_events(conn, ledger_path):
    conn.create_function("id_hash", 2, id_hash, deterministic=True)
    conn.execute("ATTACH DATABASE ? AS ledger", (ledger_path,))
    one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
    present = ("EXISTS (SELECT 1 FROM events e WHERE e.id_hash = id_hash(x.customer_id, x.event_id)"
               " AND e.customer_id = x.customer_id AND e.event_id = x.event_id)")
    acked = one("SELECT count(*) FROM ledger.acked")
    missing = one(f"SELECT count(*) FROM ledger.acked x WHERE NOT {present}")
    refused = one("SELECT count(*) FROM ledger.refused")
    refused_stored = one(f"SELECT count(*) FROM ledger.refused x WHERE {present}")
    twice = one("SELECT count(*) FROM (SELECT customer_id, event_id FROM events WHERE id_hash IN"
                " (SELECT id_hash FROM events GROUP BY id_hash HAVING count(*) > 1)"
                " GROUP BY customer_id, event_id HAVING count(*) > 1)")
    keys = ", ".join(f"'{key}'" for key, *_ in ingest.METERS)
    stored = one(f"SELECT count(*) FROM events WHERE meter_id IN (SELECT id FROM meters WHERE key IN ({keys}))")
    return [
        (f"{acked:,} acknowledged event ids, each stored", missing == 0, f"{missing:,} missing"),
        ("no event stored twice (any meter)", twice == 0, f"{twice:,} ids stored more than once"),
        (f"{stored:,} events of the bench meters, none unacknowledged", stored == acked - missing,
         f"{stored - (acked - missing):,} without an acknowledgement"),
        (f"{refused:,} ids of refused batches, none stored", refused_stored == 0, f"{refused_stored:,} stored"),
    ]


def check_sessions(conn, run, db_path):
    rows = {row["id"]: row for row in conn.execute(
        "SELECT id, resource_id, customer_id, ended_at, duration_seconds, cost FROM sessions")}
    acked = run.sessions
    wrong = [i for i in acked if i in rows and (rows[i]["resource_id"], rows[i]["customer_id"])
             != (acked[i]["resource_id"], acked[i]["customer_id"])]
    stops = [i for i in acked if acked[i]["stop"] is not None]
    bad_stops = [i for i in stops if i in rows and (
        rows[i]["ended_at"] is None or rows[i]["duration_seconds"] != acked[i]["stop"]["duration_seconds"]
        or rows[i]["cost"] != int(Decimal(acked[i]["stop"]["cost"]) * 100))]
    running = sum(1 for row in rows.values() if row["ended_at"] is None)
    try:
        session_bench.check(db_path)
        replay, replay_note = True, ""
    except AssertionError as exc:
        replay, replay_note = False, str(exc)
    return [
        (f"{len(acked):,} sessions acknowledged 201, each stored once", not set(acked) - set(rows),
         f"{len(set(acked) - set(rows))} missing"),
        (f"{len(rows):,} sessions stored, none without a 201", not set(rows) - set(acked),
         f"{len(set(rows) - set(acked))} without an acknowledgement"),
        ("resource and customer as started", not wrong, f"{len(wrong)} differ"),
        (f"{len(stops):,} acknowledged stops match the stored rows; none left running",
         not bad_stops and running == 0, f"{len(bad_stops)} differ, {running} running"),
        ("capacity never exceeded, costs exact (bench/sessions.py)", replay, replay_note),
    ]


def check_objects(conn, run, objects_dir):
    store = FileStore(objects_dir)
    wrong, files = [], 0
    for customer_id, model in run.objects.items():
        rows = {row["key"]: row for row in conn.execute(
            "SELECT key, size, etag, file FROM objects WHERE customer_id = ?", (customer_id,))}
        if set(rows) != set(model):
            wrong.append(f"customer {customer_id}: keys {sorted(set(rows) ^ set(model))[:5]}")
        for key, (size, etag) in model.items():
            row = rows.get(key)
            if row is None:
                continue
            files += 1
            path = store.path(row["file"])
            if (row["size"], row["etag"]) != (size, etag) or not os.path.exists(path) \
                    or os.path.getsize(path) != size:
                wrong.append(f"customer {customer_id}: {key}")
    return [(f"{files:,} objects exactly as last acknowledged, files on disk", not wrong, "; ".join(wrong[:5]))]


def check_store(run, db_path, objects_dir):
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return (check_events(conn, run.ledger.path) + check_sessions(conn, run, db_path)
                + check_objects(conn, run, objects_dir))
    finally:
        conn.close()


# -- the run -------------------------------------------------------------------------------------

WORKERS = [("ingest", ingest_worker), ("reads", reads_worker), ("admin", admin_worker),
           ("objects", objects_worker), ("hostile", hostile_worker), ("stalls", stall_worker)]


def load(run, seed):
    errors = []

    def guarded(name, worker, rng):
        try:
            worker(run, rng)
        except Exception as exc:  # a client bug must not pass as a quiet run
            errors.append(f"{name} client thread died: {exc!r}")

    threads = [threading.Thread(target=guarded, args=(name, worker, random.Random(seed + n)), daemon=True)
               for n, (name, worker) in enumerate(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.fatal.extend(errors)


def wind_down(run):
    """Stop the sessions still running; wait for the stalled connections."""
    admin = run.conn()
    for session_id, session in list(run.sessions.items()):
        if session["stop"] is None:
            stop_session(run, admin, session_id)
    admin.close()
    waiting = [t for t in run.stalled if t.is_alive()]
    if waiting:
        log(f"waiting for {len(waiting)} stalled connection(s) to be closed by the server (at most {STALL_CAP:.0f} s)")
    for thread in waiting:
        thread.join(STALL_CAP + 5)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs (default 10)")
    parser.add_argument("--batch-rate", type=float, default=4.0, help="ingest batches per second (default 4)")
    parser.add_argument("--batch-size", type=int, default=1000, help="events per batch (default 1000)")
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (database, log, ledger)")
    args = parser.parse_args(argv)
    args.work = tempfile.mkdtemp(prefix="meterline-soak-")
    data_dir = os.path.join(args.work, "data")
    os.makedirs(data_dir)
    os.environ["BILLING_DATA_DIR"] = data_dir  # read by the server subprocess only
    os.environ["BILLING_GRACE_PERIOD_HOURS"] = "2160"
    os.environ.pop("BILLING_RATE_LIMIT", None)  # the default: 100/s per customer credential
    db_path = os.path.join(data_dir, "soak.db")
    server = ingest.ServerProcess(db_path, os.path.join(args.work, "server.log"))
    try:
        world = setup(server.port)
        sampler = Sampler(server)
        sampler.sample()
        sampler.start()
        cpu = server.cpu_seconds()
        run = Run(server.port, world, args.minutes * 60, args)
        log(f"load: {args.minutes:g} min, {len(WORKERS) - 1} client threads; work folder {args.work}")
        load(run, args.seed)
        wall = time.monotonic() - sampler.began
        cpu = server.cpu_seconds() - cpu
        wind_down(run)
        sampler.done.set()
        sampler.join()
        sampler.sample()
    finally:
        server.stop()
    run.ledger.conn.commit()
    clean = server.proc.returncode == 0
    log("checking the stored data")
    with open(os.path.join(args.work, "server.log"), encoding="utf-8", errors="replace") as f:
        tracebacks = f.read().count("Traceback")
    checks = [("the server stopped cleanly on SIGTERM (exit 0)", clean, f"exit {server.proc.returncode}"),
              ("no traceback in the server's log", tracebacks == 0, f"{tracebacks} tracebacks (--keep keeps the log)")]
    checks += check_store(run, db_path, os.path.join(data_dir, "objects"))
    run.ledger.close()
    failed = report(run, sampler, checks, wall, cpu, args)
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)
    return 1 if failed else 0


# -- the report ----------------------------------------------------------------------------------

def memory_figures(sampler, seconds):
    warm_at = min(60.0, seconds / 3)
    start = sampler.samples[0][1]
    warm = next((rss for t, rss, _, _ in sampler.samples if t >= warm_at), sampler.samples[-1][1])
    peak = max(rss for _, rss, _, _ in sampler.samples)
    hwm = sampler.samples[-1][2]
    end = sampler.samples[-1][1]
    loads = [load for *_, load in sampler.samples]
    return {"warm_at": warm_at, "start": start / 1024, "warm": warm / 1024, "peak": peak / 1024,
            "hwm": hwm / 1024, "end": end / 1024, "load_start": loads[0], "load_end": loads[-1],
            "load_mean": sum(loads) / len(loads), "load_max": max(loads)}


def route_rows(stats):
    rows = []
    for kind in sorted(stats.latency.keys() | {k for k, *_ in stats.outcomes}):
        counts = Counter()
        for (k, _, _, verdict_), n in stats.outcomes.items():
            if k == kind:
                counts[verdict_] += n
        lat = stats.latency.get(kind, [])
        other = counts["unexpected"] + counts["accepted-hostile"]
        refused = counts["refused"] + counts["closed"]
        rows.append(f"| {kind} | {sum(counts.values()):,} | {counts['ok']:,} | {refused:,} | {other:,} "
                    f"| {counts['5xx']:,} | {counts['conn']:,} | {ingest.percentile(lat, 50) * 1000:.1f} "
                    f"| {ingest.percentile(lat, 99) * 1000:.1f} |")
    return rows


def stall_lines(run):
    """One line per kind of stalled connection; False when one was not closed or got a 5xx."""
    lines, ok = [], True
    for kind in STALLS:
        results = [r for r in run.stall_results if r[0] == kind]
        if not results:
            lines.append(f"- {kind}: none opened")
            continue
        closed = sorted(s for _, s, outcome, status in results
                        if outcome in ("closed", "reset") and not status.startswith("HTTP/1.1 5"))
        answers = Counter(f"{outcome}, {status}" for _, _, outcome, status in results)
        ok = ok and len(closed) == len(results)
        lines.append(f"- {kind}: {len(results)} connections, {len(closed)} closed by the server after "
                     f"{closed[len(closed) // 2] if closed else float('nan'):.1f} s (median; max "
                     f"{closed[-1] if closed else float('nan'):.1f} s); "
                     + "; ".join(f"{answer} x{n}" for answer, n in answers.items()))
    return "\n".join(lines), ok


def report(run, sampler, checks, wall, cpu, args):
    """Print the Markdown report; True when the run failed."""
    stats, mem = run.stats, memory_figures(sampler, wall)
    total = sum(stats.outcomes.values())
    fives, conns = stats.count("5xx"), stats.count("conn")
    accepted_hostile, unexpected = stats.count("accepted-hostile"), stats.count("unexpected")
    flat = mem["end"] <= mem["warm"] + 50
    under_bar = max(mem["peak"], mem["hwm"]) <= 300
    stalls, stalls_ok = stall_lines(run)
    out = []
    out.append(f"\n## Soak: {wall / 60:.1f} minutes of mixed load on one server process\n")
    out.append(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs shared with other work "
               f"(1-min load average: {mem['load_start']:.2f} at the start, mean {mem['load_mean']:.2f}, "
               f"max {mem['load_max']:.2f}, {mem['load_end']:.2f} at the end), Python {sys.version.split()[0]}, "
               f"SQLite {sqlite3.sqlite_version}; {len(WORKERS) - 1} client threads + stalled connections, batches at "
               f"{args.batch_rate:g}/s, customer rate limit at its default (100/s per credential).\n")
    out.append("| figure | value |\n|---|---|")
    out.append(f"| requests | {total:,} ({total / wall:,.0f}/s) |")
    out.append(f"| 5xx / connection errors | {fives} / {conns} |")
    out.append(f"| expected refusals (4xx, or a close without reading a refused body) | "
               f"{stats.count('refused') + stats.count('closed'):,} |")
    out.append(f"| unexpected 4xx / hostile requests accepted | {unexpected} / {accepted_hostile} |")
    out.append(f"| server CPU | {cpu / wall:.2f} cores on average |")
    out.append(f"| server RSS | start {mem['start']:.0f} MB; after warm-up ({mem['warm_at']:.0f} s) "
               f"{mem['warm']:.0f} MB; peak {mem['peak']:.0f} MB (VmHWM {mem['hwm']:.0f} MB); "
               f"end {mem['end']:.0f} MB |")
    out.append(f"| RSS flat (end <= warm-up + 50 MB) / <= 300 MB | {'yes' if flat else 'NO'} / "
               f"{'yes' if under_bar else 'NO'} |\n")
    out.append("| route class | requests | 2xx | expected 4xx | unexpected | 5xx | conn errors | p50 ms | p99 ms |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    out.extend(route_rows(stats))
    out.append("\n| kind | status | code | count | verdict |\n|---|---|---|---:|---|")
    for (kind, status, code, verdict_), n in sorted(stats.outcomes.items(), key=str):
        if verdict_ != "ok":
            out.append(f"| {kind} | {status} | {code or ''} | {n:,} | {verdict_} |")
    out.append(f"\nStalled connections (each waits for the server to close it, at most {STALL_CAP:.0f} s):\n")
    out.append(stalls + "\n")
    out.append("Stored data, read with sqlite3 after a clean stop:\n")
    for name, ok, detail in checks:
        out.append(f"- [{'x' if ok else ' '}] {name}" + ("" if ok else f" — FAILED: {detail}"))
    if stats.surprises:
        out.append("\nFirst unexpected answers:\n" + "\n".join(f"    {s}" for s in stats.surprises))
    if run.fatal:
        out.append("\nClient-side findings:\n" + "\n".join(f"    {s}" for s in run.fatal[:20]))
    failed = bool(fives or conns or accepted_hostile or run.fatal or not flat or not under_bar or not stalls_ok
                  or not all(ok for _, ok, _ in checks))
    out.append(f"\nResult: {'FAILED' if failed else 'passed'}")
    print("\n".join(out), flush=True)
    return failed


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Archive benchmark (SPEC §13 "Raw event retention"): archive passes moving
N raw events of three invoiced months out of SQLite while clients keep
POSTing single events.

    python3 bench/archive.py                    # 1,000,000 events
    python3 bench/archive.py --events 3000000

Standard library only; run by hand (pytest does not collect it).

What it does:

  build    (once, cached in --cache-dir, keyed by the schema, the months, the
           parameters and this file's catalogue) a database of 1,000 customers
           (six timezones, among them +05:45 and the southern hemisphere), each
           on one plan with three metered charges: api_calls (sum, graduated),
           users (unique_count of a property) and seats (latest). Meters,
           plan, customers and calendar subscriptions go through the real API.
           Then --events events are bulk-loaded with sqlite3 (as bench/ingest.py
           does) over the three most recent calendar months that ended more
           than the retention (30 days) ago, inside every timezone's local
           months, and the rollups built with rollups.rebuild_derived. Then the
           real server drafts those three months (POST /v1/invoices/run with
           as_of their end) and every draft is finalized (issued) through the
           API; a second run drafts whatever else is due by now (the months
           after stay drafts). Every bulk event is then archivable.
  run      A copy; the real server as a subprocess (`server.py --quiet
           --no-scheduler`, BILLING_EVENT_RETENTION_DAYS=30, a fresh data
           directory, BILLING_GRACE_PERIOD_HOURS=5000 so no draft is issued
           meanwhile, the lateness window at the server's default). No clock is
           pinned: the months are old enough by the real clock. Figures of 50
           customers are read (their invoices, usage per archived month and per
           day, analytics of every meter per customer and month); then
           POST /v1/jobs/run again and again (each a scheduler run whose
           archive pass starts no batch after 20 s) until a run reports no
           `archive_more`, while --probes keep-alive client threads POST single
           events (now) one after another, each request's latency recorded.
  report   events archived, seconds, events/s; archive bytes per event; the
           database's used bytes ((page_count − freelist_count) × page_size) per
           event before and after; the longest single-POST wait and p99 during
           the passes and for 10 s with nothing else running; the write
           transactions (the server's meterline_writer_transaction_seconds
           histogram); peak RSS (VmHWM).
  check    the same figures read again equal those before; no bulk event is
           left in SQLite; `python3 -m billing.archive verify` exits 0; and the
           archive files hold exactly the bulk events, every column (an
           order-independent digest of every row, against the cached database).
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

from ingest import ADMIN_KEY, UUID_SQL, ServerProcess, api, cached, copy_db, free_port, log, remove_db  # noqa: E402
from invoice_run import (StallProbe, expect, local_midnight_utc, longest_writer_transactions,  # noqa: E402
                         parallel, us, writer_transactions)

from billing.api.events import id_hash  # noqa: E402  (the server's own dedup key)
from billing.store import archive_files, migrations, rollups  # noqa: E402

CUSTOMERS = 1000
RETENTION_DAYS = 30
UTC = timezone.utc
METERS = [{"key": "api_calls", "name": "API calls", "unit": "call", "aggregation": "sum"},
          {"key": "users", "name": "Active users", "unit": "user", "aggregation": "unique_count",
           "value_property": "user"},
          {"key": "seats", "name": "Seats", "unit": "seat", "aggregation": "latest"}]
PLAN = {"code": "bench-archive", "name": "Bench Archive", "currency": "USD", "interval": "month",
        "base_fee": "29.00", "charges": [
            {"meter": "api_calls", "model": "graduated", "free_units": 1000,
             "tiers": [{"up_to": 50000, "unit_price": "0.002"}, {"up_to": None, "unit_price": "0.001"}]},
            {"meter": "users", "model": "per_unit", "unit_price": "1.50"},
            {"meter": "seats", "model": "per_unit", "unit_price": "4.00"}]}
ZONES = ["UTC"] * 5 + ["America/New_York", "Europe/Berlin", "Asia/Kathmandu", "Australia/Sydney", "Asia/Tokyo"]
SAMPLES = 50


# -- the months ----------------------------------------------------------------------

def archived_months(today):
    """The three calendar months before the newest one that ended, in every
    timezone, more than RETENTION_DAYS + 2 days ago: [first days] and the first
    day after them."""
    end = today.replace(day=1)
    while end + timedelta(days=RETENTION_DAYS + 2) > today:
        end = (end - timedelta(days=1)).replace(day=1)
    firsts = [end]
    for _ in range(3):
        firsts.insert(0, (firsts[0] - timedelta(days=1)).replace(day=1))
    return firsts[:3], end


def windows(firsts, end):
    """(low, high) µs of the events: inside every zone's local months; and the
    as_of (the latest local end) of the invoice run that drafts them."""
    low = max(us(local_midnight_utc(firsts[0], z)) for z in set(ZONES))
    ends = [local_midnight_utc(end, z) for z in set(ZONES)]
    return (low, min(us(e) for e in ends)), max(ends).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- build ---------------------------------------------------------------------------

def cache_paths(cache_dir, events, first):
    schema = hashlib.sha256(repr(migrations.MIGRATIONS).encode()).hexdigest()[:10]
    catalogue = hashlib.sha256(json.dumps([METERS, PLAN, ZONES, CUSTOMERS]).encode()).hexdigest()[:8]
    base = os.path.join(cache_dir, f"archive-{first:%Y-%m}-{events}e-{schema}-{catalogue}")
    return base + ".db", base + ".json"


def build(cache_dir, events, firsts, end, rebuild=False):
    os.makedirs(cache_dir, exist_ok=True)
    db_path, meta_path = cache_paths(cache_dir, events, firsts[0])
    meta = cached(db_path, meta_path, rebuild)
    if meta is not None:
        return db_path, meta
    tmp = db_path + ".building"
    remove_db(tmp)
    started = time.perf_counter()
    window, as_of = windows(firsts, end)
    customer_ids = setup_catalogue(tmp, cache_dir, firsts[0])
    load_events(tmp, events, window)
    invoiced = invoice(tmp, cache_dir, as_of)
    os.replace(tmp, db_path)
    meta = {"events": events, "months": [f"{m:%Y-%m}" for m in firsts], "window": window, "as_of": as_of,
            "customer_ids": customer_ids, "invoices_issued": invoiced,
            "built_seconds": round(time.perf_counter() - started, 1)}
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    log(f"build: {db_path} ({os.path.getsize(db_path) / 1e6:.0f} MB) in {meta['built_seconds']} s")
    return db_path, meta


def setup_catalogue(path, cache_dir, start):
    """Meters, the plan, customers and subscriptions through the API; returns the customer ids."""
    log(f"build: {len(METERS)} meters, a plan, {CUSTOMERS:,} customers and subscriptions through the API")
    server = ServerProcess(path, os.path.join(cache_dir, "server-archive-setup.log"))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        for meter in METERS:
            expect(*api(conn, "POST", "/v1/meters", meter), 201, "meter")
        expect(*api(conn, "POST", "/v1/plans", PLAN), 201, "plan")
        conn.close()

        def make(c, i):
            body = {"name": f"Archive bench customer {i}", "email": f"arch{i}@example.com",
                    "external_id": f"arch-{i}", "timezone": ZONES[i % len(ZONES)], "currency": "USD"}
            cid = expect(*api(c, "POST", "/v1/customers", body), 201, "customer")["id"]
            expect(*api(c, "POST", "/v1/subscriptions", {"customer_id": cid, "plan": PLAN["code"],
                                                          "start": start.isoformat(),
                                                          "billing_anchor": "calendar"}), 201, "subscription")
            return cid

        return parallel(server.port, list(range(CUSTOMERS)), make)
    finally:
        server.stop()


def load_events(path, count, window):
    """Bulk-load `count` events uniform over customers, timestamps rising over
    `window`: half api_calls (region property), 30 % users (one of 40 user
    ids a customer), 20 % seats; then the indexes and every derived table."""
    db = sqlite3.connect(path, isolation_level=None)
    db.create_function("id_hash", 2, id_hash, deterministic=True)
    meters = {key: mid for mid, key in db.execute("SELECT id, key FROM meters")}
    first, = db.execute("SELECT min(id) FROM customers").fetchone()
    for pragma in ("journal_mode = DELETE", "journal_mode = OFF", "synchronous = OFF", "cache_size = -1048576",
                   "threads = 2"):
        db.execute(f"PRAGMA {pragma}")
    indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"
                         " AND tbl_name = 'events' AND sql IS NOT NULL").fetchall()
    for name, _ in indexes:
        db.execute(f'DROP INDEX "{name}"')
    low, high = window
    step = max(1, (high - low) // count)
    load_sql = f"""
        WITH RECURSIVE c(x) AS (SELECT ? UNION ALL SELECT x + 1 FROM c WHERE x < ?),
        gen AS MATERIALIZED (
          SELECT {first} + abs(random()) % {CUSTOMERS} AS cust,
                 {UUID_SQL} AS eid,
                 abs(random()) % 10 AS kind, {low} + x * {step} + abs(random()) % {step} AS ts,
                 abs(random()) AS r
          FROM c),
        q AS MATERIALIZED (
          SELECT cust, eid, ts,
                 CASE WHEN kind < 5 THEN {meters['api_calls']} WHEN kind < 8 THEN {meters['users']}
                      ELSE {meters['seats']} END AS meter,
                 CASE WHEN kind < 5 THEN (1 + r % 1000) * 1000000 WHEN kind < 8 THEN 1000000
                      ELSE (1 + r % 50) * 1000000 END AS qty,
                 CASE WHEN kind < 5 THEN '{{"region":"' || (CASE r % 3 WHEN 0 THEN 'eu-west' WHEN 1 THEN 'us-east'
                                                        ELSE 'ap-south' END) || '"}}'
                      WHEN kind < 8 THEN '{{"user":"u' || (r % 40) || '"}}' END AS props,
                 CASE WHEN kind >= 5 AND kind < 8 THEN '"u' || (r % 40) || '"' END AS uservalue
          FROM gen)
        INSERT INTO events (customer_id, event_id, meter_id, ts, quantity, value, matched,
                            properties, received_at, id_hash)
        SELECT cust, eid, meter, ts, qty, coalesce(uservalue, qty), 1, props, ts + 1000000, id_hash(cust, eid)
        FROM q"""
    started, done = time.perf_counter(), 0
    while done < count:
        n = min(1_000_000, count - done)
        db.execute("BEGIN")
        db.execute(load_sql, (done, done + n - 1))
        db.execute("COMMIT")
        done += n
        log(f"build: {done:,}/{count:,} events  ({time.perf_counter() - started:.0f} s)")
    for name, sql in indexes:
        db.execute(sql)
    t = time.perf_counter()
    db.execute("BEGIN")
    rollups.rebuild_derived(db)  # rollups, spans and dedup index of the bulk-loaded events
    db.execute("COMMIT")
    log(f"build: indexes and rollups in {time.perf_counter() - t:.1f} s")
    db.execute("PRAGMA journal_mode = WAL")
    total, = db.execute("SELECT count(*) FROM events WHERE ts >= ? AND ts < ?", window).fetchone()
    db.close()
    if total != count:
        raise RuntimeError(f"the build holds {total:,} events in the window, expected {count:,}")


def invoice(path, cache_dir, as_of):
    """Draft the three months (as of their end) and issue every draft; then
    draft what else is due by now. Returns how many were issued."""
    server = ServerProcess(path, os.path.join(cache_dir, "server-archive-setup.log"))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=3600)
        t = time.perf_counter()
        ids = expect(*api(conn, "POST", "/v1/invoices/run", {"as_of": as_of}), 200, "invoice run")["invoice_ids"]
        log(f"build: {len(ids):,} drafts as of {as_of} in {time.perf_counter() - t:.1f} s")
        if len(ids) != 3 * CUSTOMERS:
            raise RuntimeError(f"the invoice run drafted {len(ids)}, expected {3 * CUSTOMERS}")
        t = time.perf_counter()
        parallel(server.port, ids, lambda c, i: expect(*api(c, "POST", f"/v1/invoices/{i}/finalize", {}),
                                                       200, "finalize"))
        log(f"build: {len(ids):,} invoices issued in {time.perf_counter() - t:.1f} s")
        conn.close()  # idle meanwhile: the server may have closed it
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=3600)
        later = expect(*api(conn, "POST", "/v1/invoices/run", {}), 200, "invoice run")["created"]
        log(f"build: {later:,} drafts of the months since")
        conn.close()
        return len(ids)
    finally:
        server.stop()


# -- the run -------------------------------------------------------------------------

class ArchiveServer(ServerProcess):
    """The real server with the archive on: retention 30 days, its own data directory."""

    def __init__(self, db_path, data_dir, log_path, max_event_age_days=None):
        self.port = free_port()
        self.cmd = [sys.executable, os.path.join(ROOT, "server.py"), "--quiet", "--no-scheduler", "--db", db_path,
                    "--port", str(self.port)]
        env = dict(os.environ, BILLING_ADMIN_KEY=ADMIN_KEY, BILLING_DATA_DIR=data_dir,
                   BILLING_EVENT_RETENTION_DAYS=str(RETENTION_DAYS), BILLING_GRACE_PERIOD_HOURS="5000")
        env.pop("BILLING_MAX_EVENT_AGE_DAYS", None)
        if max_event_age_days is not None:
            env["BILLING_MAX_EVENT_AGE_DAYS"] = str(max_event_age_days)
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()


def used_bytes(path):
    """(bytes in use: (page_count − freelist_count) × page_size, events stored), read-only."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        pages, = db.execute("PRAGMA page_count").fetchone()
        free, = db.execute("PRAGMA freelist_count").fetchone()
        size, = db.execute("PRAGMA page_size").fetchone()
        events, = db.execute("SELECT count(*) FROM events").fetchone()
        return (pages - free) * size, events
    finally:
        db.close()


def table_bytes(path, top=8):
    """[(table or index, bytes)] of the largest, by dbstat (server stopped)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT name, sum(pgsize) AS b FROM dbstat GROUP BY name ORDER BY b DESC LIMIT ?",
                          (top,)).fetchall()
    finally:
        db.close()


def figures(port, meta, samples):
    """What clients read of the archived months: the sampled customers'
    invoices and usage (per month, per day), and every meter's analytics per
    customer and month."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    bounds = [f"{m}-01" for m in meta["months"]]
    last = date.fromisoformat(bounds[-1])
    bounds.append((last + timedelta(days=32)).replace(day=1).isoformat())
    found = {}
    try:
        for cid in samples:
            listed = expect(*api(conn, "GET", f"/v1/invoices?customer_id={cid}&limit=100"), 200, "invoices")["data"]
            for item in listed:
                found[f"invoice {item['id']}"] = expect(*api(conn, "GET", f"/v1/invoices/{item['id']}"), 200, "invoice")
            for low, high in zip(bounds, bounds[1:]):
                found[f"usage {cid} {low}"] = expect(*api(conn, "GET", f"/v1/customers/{cid}/usage?from={low}&to={high}"),
                                                     200, "usage")
            found[f"usage {cid} days"] = expect(*api(conn, "GET", f"/v1/customers/{cid}/usage?from={bounds[0]}"
                                                                  f"&to={bounds[-1]}&window=day"), 200, "usage by day")
        for meter in METERS:
            found[f"analytics {meter['key']}"] = expect(*api(
                conn, "GET", f"/v1/analytics/usage?meter={meter['key']}&from={bounds[0]}&to={bounds[-1]}"
                             "&interval=month&group_by=customer"), 200, "analytics")
    finally:
        conn.close()
    return found


def archive_passes(port):
    """POST /v1/jobs/run until a run's archive pass reached the end; [(seconds, details)]."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    passes = []
    try:
        while True:
            t = time.perf_counter()
            job = expect(*api(conn, "POST", "/v1/jobs/run", {}), 200, "jobs/run")
            seconds = time.perf_counter() - t
            if job["outcome"] != "ok":
                raise RuntimeError(f"scheduler run: {job}")
            details = job["details"]
            passes.append((seconds, details))
            log(f"run: pass {len(passes)}: {details.get('events_archived', 0):,} events in {seconds:.1f} s"
                f"{' (more to do)' if details.get('archive_more') else ''}")
            if not details.get("archive_more"):
                return passes
    finally:
        conn.close()


def probes_summary(probes):
    """The latencies of several StallProbes together: requests, longest and p99 (ms), errors."""
    ms = sorted(x * 1000 for p in probes for x in p.latencies)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))] if ms else float("nan")
    return {"requests": len(ms), "max_ms": ms[-1] if ms else float("nan"), "p99_ms": p99,
            "errors": sum(len(p.errors) for p in probes)}


def probing(port, customer_ids, count, seed):
    return [StallProbe(port, customer_ids, seed + i) for i in range(count)]


def phase_run(db_path, meta, work_dir, args):
    copy = copy_db(db_path, work_dir, "bench-archive.db")
    data_dir = os.path.join(work_dir, "archive-data")
    shutil.rmtree(data_dir, ignore_errors=True)
    os.makedirs(data_dir)
    result = {"data_dir": data_dir}
    result["used_before"], result["stored_before"] = used_bytes(copy)
    rng = random.Random(5)
    samples = sorted(rng.sample(meta["customer_ids"], SAMPLES))
    server = ArchiveServer(copy, data_dir, os.path.join(work_dir, "server-archive.log"), args.max_event_age_days)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
        result["drafted_now"] = expect(*api(conn, "POST", "/v1/invoices/run", {}), 200, "invoice run")["created"]
        conn.close()
        before = figures(server.port, meta, samples)
        log(f"run: {len(before)} figures read; {args.probes} client(s) POSTing single events for "
            f"{args.baseline:.0f} s with nothing else running")
        quiet = probing(server.port, meta["customer_ids"], args.probes, 100)
        for p in quiet:
            p.__enter__()
        time.sleep(args.baseline)  # the baseline: single POSTs with nothing else running
        for p in quiet:
            p.__exit__()
        result["quiet"] = probes_summary(quiet)
        histogram, cpu = writer_transactions(server.port), server.cpu_seconds()
        probes = probing(server.port, meta["customer_ids"], args.probes, 200)
        for p in probes:
            p.__enter__()
        t = time.perf_counter()
        try:
            result["passes"] = archive_passes(server.port)
        finally:
            result["seconds"] = time.perf_counter() - t
            for p in probes:
                p.__exit__()
        result["cpu"] = server.cpu_seconds() - cpu
        result["during"] = probes_summary(probes)
        result["writer"] = longest_writer_transactions(histogram, writer_transactions(server.port))
        result["rss"] = server.status()
        after = figures(server.port, meta, samples)
        result["figures"] = len(before)
        result["figures_differ"] = sorted(k for k in before if before[k] != after.get(k))
        result["used_after"], result["stored_after"] = used_bytes(copy)
        result["cmd"] = " ".join(server.cmd)
    finally:
        server.stop()
    result["tables_after"] = table_bytes(copy)
    result.update(check_archive(db_path, copy, data_dir, meta))
    remove_db(copy)
    return result


# -- checks --------------------------------------------------------------------------

def digest(rows):
    """(count, order-independent digest) of rows given as tuples of the archive's columns."""
    total, count = 0, 0
    for row in rows:
        total = (total + int.from_bytes(hashlib.blake2b(repr(row).encode(), digest_size=8).digest(), "big")) % 2 ** 64
        count += 1
    return count, total


def archived_rows(folder):
    manifest = archive_files.load_manifest(folder)
    for entry in manifest["files"]:
        for record in archive_files.read_events(folder, entry):
            yield tuple(record[name] for name in archive_files.COLUMNS)


def check_archive(cached, copy, data_dir, meta):
    """`billing.archive verify`, the files' sizes, no bulk event left stored,
    and the files against the cached database's events, column by column."""
    folder = os.path.join(data_dir, archive_files.ARCHIVE_DIR)
    verify = subprocess.run([sys.executable, "-m", "billing.archive", "--db", copy, "--data-dir", data_dir,
                             "verify"], cwd=ROOT, env=dict(os.environ, BILLING_ADMIN_KEY=ADMIN_KEY),
                            capture_output=True, text=True)
    files = archive_files.load_manifest(folder)["files"]
    sizes = sum(os.path.getsize(os.path.join(folder, e["file"])) for e in files)
    db = sqlite3.connect(f"file:{cached}?mode=ro", uri=True)
    try:
        top_seq, = db.execute("SELECT max(seq) FROM events").fetchone()
        t = time.perf_counter()
        expected = digest(db.execute(f"SELECT {', '.join(archive_files.COLUMNS)} FROM events"))
    finally:
        db.close()
    got = digest(archived_rows(folder))
    log(f"check: digests of {expected[0]:,} and {got[0]:,} events in {time.perf_counter() - t:.1f} s")
    db = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    try:
        left, = db.execute("SELECT count(*) FROM events WHERE seq <= ?", (top_seq,)).fetchone()
        kept_ids, = db.execute("SELECT count(*) FROM archived_events").fetchone()
        buckets, = db.execute("SELECT count(*) FROM archived_buckets").fetchone()
    finally:
        db.close()
    return {"verify_exit": verify.returncode, "verify_output": (verify.stdout + verify.stderr).strip(),
            "files": [(e["file"], e["events"], e["bytes"]) for e in files], "archive_bytes": sizes,
            "bulk_left": left, "content_equal": expected == got, "content": (expected[0], got[0]),
            "archived_events_rows": kept_ids, "archived_buckets_rows": buckets}


# -- main ----------------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=1_000_000, help="events in the three months (default 1,000,000)")
    p.add_argument("--probes", type=int, default=2, help="client threads POSTing single events (default 2)")
    p.add_argument("--baseline", type=float, default=10.0, help="seconds of single POSTs with nothing else running")
    p.add_argument("--max-event-age-days", type=int, default=None,
                   help="BILLING_MAX_EVENT_AGE_DAYS of the server (default: unset, the server's default)")
    p.add_argument("--cache-dir", default="/tmp/meterline-bench")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--build-only", action="store_true", help="build (or find) the cached database and stop")
    args = p.parse_args(argv)
    firsts, end = archived_months(datetime.now(UTC).date())
    db_path, meta = build(args.cache_dir, args.events, firsts, end, args.rebuild)
    if args.build_only:
        return 0
    work_dir = os.path.join(args.cache_dir, "work")
    os.makedirs(work_dir, exist_ok=True)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    r = phase_run(db_path, meta, work_dir, args)
    r["load"] = load
    report(r, meta, args)
    ok = (r["verify_exit"] == 0 and r["content_equal"] and not r["bulk_left"] and not r["figures_differ"]
          and not r["during"]["errors"] and sum(d.get("events_archived", 0) for _, d in r["passes"]) == meta["events"])
    return 0 if ok else 1


def report(r, meta, args):
    archived = sum(d.get("events_archived", 0) for _, d in r["passes"])
    n = meta["events"]
    out = ["", f"Meterline archive benchmark — {CUSTOMERS:,} customers on one plan (sum, unique_count, latest); "
               f"{n:,} events in {', '.join(meta['months'])}, {meta['invoices_issued']:,} invoices issued; "
               f"retention {RETENTION_DAYS} days",
           f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs; "
           f"{args.probes} client thread(s) POSTing single events; load before the run "
           f"{r.get('load', '?')}", ""]
    out.append(f"archived {archived:,} events in {r['seconds']:.1f} s = {archived / r['seconds']:,.0f} events/s "
               f"over {len(r['passes'])} scheduler runs (server CPU {r['cpu']:.1f} s)")
    out.append("  runs: " + ", ".join(f"{d.get('events_archived', 0):,} in {s:.1f} s" for s, d in r["passes"]))
    out.append(f"archive files: {r['archive_bytes']:,} bytes = {r['archive_bytes'] / max(archived, 1):.1f} bytes "
               f"per archived event ({len(r['files'])} files: "
               + ", ".join(f"{f} {e:,} events" for f, e, _ in r["files"]) + ")")
    out.append(f"database in use ((page_count - freelist_count) x page_size): before {r['used_before'] / 1e6:.1f} MB "
               f"= {r['used_before'] / n:.1f} bytes per event; after {r['used_after'] / 1e6:.1f} MB "
               f"= {r['used_after'] / n:.1f} bytes per event of the {n:,} "
               f"(events stored {r['stored_before']:,} -> {r['stored_after']:,}, the clients' included)")
    out.append(f"  kept: {r['archived_events_rows']:,} archived ids within the lateness window (archived_events), "
               f"{r['archived_buckets_rows']:,} archived buckets; largest after: "
               + ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in r["tables_after"]))
    for name, what in (("during", "during the passes"), ("quiet", f"no pass ({args.baseline:.0f} s baseline)")):
        st = r[name]
        out.append(f"single-event POST {what}: {st['requests']:,} requests, longest {st['max_ms']:.0f} ms, "
                   f"p99 {st['p99_ms']:.0f} ms, {st['errors']} errors")
    buckets, total = r["writer"]
    out.append(f"write transactions during the passes: {total:,}; above 25 ms, by bucket: "
               + (", ".join(f"<= {b} s: {c}" for b, c in buckets) or "none"))
    out.append(f"server RSS at the end {r['rss']['VmRSS'] / 1024:.0f} MB, peak (VmHWM) {r['rss']['VmHWM'] / 1024:.0f} MB")
    out.append("")
    out.append(f"check: {r['figures']} figures (invoices, usage per month and per day of {SAMPLES} customers; "
               f"analytics per customer and month of every meter) equal before and after: "
               + ("yes" if not r["figures_differ"] else f"NO, {len(r['figures_differ'])} differ: "
                  + ", ".join(r["figures_differ"][:5])))
    out.append(f"check: bulk events left in SQLite: {r['bulk_left']:,}; archive files hold exactly the bulk events "
               f"(every column, {r['content'][1]:,} of {r['content'][0]:,}): {'yes' if r['content_equal'] else 'NO'}")
    out.append(f"check: python3 -m billing.archive verify exits {r['verify_exit']}"
               + (f": {r['verify_output']}" if r["verify_exit"] else ""))
    out.append(f"server: {r['cmd']}")
    print("\n".join(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())

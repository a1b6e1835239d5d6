#!/usr/bin/env python3
"""Ingest benchmark (SPEC §12): batch ingest over HTTP vs raw sqlite3 and vs a
seed-style reference server, and single-event POSTs, against a database that
already holds N events.

    python3 bench/ingest.py                      # 1 M preloaded events
    python3 bench/ingest.py --preload 10000000   # 10 M (the preload is built once, cached)

Standard library only; run by hand (pytest does not collect it).

What it does, in one run:

  preload  Builds (once, cached in --cache-dir) a database holding N events over
           1,000 customers and 4 meters. Customers and meters are created through
           the real API (a server started on a fresh database); the events are
           bulk-loaded with sqlite3 (indexes dropped, big transactions, indexes
           re-created from the schema's own SQL). Each phase below works on a
           fresh shutil.copy of that file (the reference, (r), on a copy of its events).
  (a)      Raw sqlite3: executemany of exactly the rows that (b) stores (same
           INSERT as the server, same schema and indexes, WAL + synchronous=NORMAL),
           in 10,000-row transactions -> rows/s.
  (b)      The real server (`server.py --quiet --no-scheduler`) as a subprocess;
           --clients keep-alive threads POST /v1/events/batch with --batch-size
           events each (random uuid4 ids, random customer among 1,000, timestamps
           within the last hour) -> events/s, and b/a.
  (r)      The seed-style reference (bench/seedref.py), run exactly like (b) — its
           own process, the same Python, the same request bodies, clients and
           warm-up: a stdlib ThreadingHTTPServer whose POST handler parses the
           JSON batch and runs one INSERT per event into an index-free table (no
           validation, no dedup, WAL + synchronous=NORMAL), that table already
           holding the N preloaded events -> events/s, and b/r ("ours ÷ reference").
  (c)      Single-event POST /v1/events from --single-clients keep-alive threads
           -> requests/s.

(b) and (c) run the server with BILLING_INGEST_WORKERS=--ingest-workers (default
1: one worker process validates batches of 32 KiB or more; the server's own
default is 0, one process). The server's CPU and RSS include its workers.

Before (b) and (c) the bench waits until the server's in-memory filter of
stored event ids (built at start: about 1 s at 1 M events, 7 s at 10 M)
answers, so they time the steady state. Request bodies are JSON-encoded
before the clock starts. The client runs on the same machine as the server
(the 2-core box), so its CPU is taken from the server: the table shows both
processes' CPU use during each timed window.
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from billing.store import db as store_db  # noqa: E402
from billing.store import migrations, rollups  # noqa: E402

from billing.api.events import INSERT_SQL, id_hash  # noqa: E402  (the server's own statement and key)

import seedref  # noqa: E402  (bench/seedref.py: the seed-style reference server)

ADMIN_KEY = "mk_bench_" + "k" * 40
CUSTOMERS = 1000
# (key, name, unit, aggregation, quantity generator)
METERS = [
    ("api_calls", "API calls", "call", "sum"),
    ("data_transfer", "Data transfer", "byte", "sum"),
    ("cpu_seconds", "CPU time", "second", "sum"),
    ("seats", "Seats", "seat", "max"),
]
REGIONS = ["eu-west", "us-east", "ap-south"]
PRELOAD_SPAN_DAYS = 60
CLK_TCK = os.sysconf("SC_CLK_TCK")
SEEDREF = os.path.join(ROOT, "bench", "seedref.py")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# -- server process ----------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python3 server.py --quiet --no-scheduler --db DB --port P` (optionally
    wrapped by bench/profserver.py, which writes a cProfile of every
    request thread to `profile_out` on shutdown), or, with `script`, that
    script with `--db DB --port P` (the seed-style reference, bench/seedref.py)."""

    def __init__(self, db_path, log_path, profile_out=None, script=None):
        self.port = free_port()
        server_args = ["--quiet", "--no-scheduler", "--db", db_path, "--port", str(self.port)]
        if script:
            cmd = [sys.executable, script, "--db", db_path, "--port", str(self.port)]
        elif profile_out:
            cmd = [sys.executable, os.path.join(ROOT, "bench", "profserver.py"), profile_out] + server_args
        else:
            cmd = [sys.executable, os.path.join(ROOT, "server.py")] + server_args
        self.cmd = cmd
        env = dict(os.environ, BILLING_ADMIN_KEY=ADMIN_KEY, BILLING_MAX_EVENT_AGE_DAYS="0")
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    conn.close()
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def wait_filter(self, timeout=300):
        """Wait until the server's filter of stored event ids, built at start
        (billing/store/known_ids.py; about 7 s at 10 M events), answers: the
        phases time the steady state, not the start."""
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            text = conn.getresponse().read().decode()
            conn.close()
            if "\nmeterline_event_id_filter_ready 1\n" in text:
                log(f"the server's event id filter answered after {time.monotonic() - started:.1f} s")
                return
            time.sleep(0.1)
        raise RuntimeError("the server's event id filter was never built")

    def pids(self):
        """The server's process and its children (its ingest worker processes,
        billing/api/ingest_pool.py): the figures below add them up."""
        pids = [self.proc.pid]
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            try:
                with open(f"/proc/{self.proc.pid}/task/{task}/children") as f:
                    pids += [int(pid) for pid in f.read().split()]
            except FileNotFoundError:  # a thread that just ended
                continue
        return pids

    def status(self):
        """{'VmRSS': kB, 'VmHWM': kB, 'processes': n} from /proc/<pid>/status,
        summed over the server and its workers (VmHWM: each one's peak)."""
        out = {"VmRSS": 0, "VmHWM": 0, "processes": 0}
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        name, _, value = line.partition(":")
                        if name in ("VmRSS", "VmHWM"):
                            out[name] += int(value.split()[0])
            except FileNotFoundError:  # a worker that just ended
                continue
            out["processes"] += 1
        return out

    def cpu_seconds(self):
        """utime + stime of the server and its live workers (a worker that
        ended within the window takes its CPU with it: none do in a phase)."""
        total = 0.0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        return total

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def api(conn, method, path, body=None):
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn.request(method, path, data, headers)
    resp = conn.getresponse()
    payload = resp.read()
    return resp.status, (json.loads(payload) if payload else None)


# -- preload -----------------------------------------------------------------

def cache_paths(cache_dir, preload):
    # keyed by the schema itself, so a changed schema never reuses an old preload
    schema = hashlib.sha256(repr(migrations.MIGRATIONS).encode()).hexdigest()[:10]
    base = os.path.join(cache_dir, f"preload-{preload}-{schema}")
    return base + ".db", base + ".json"


# a random uuid4-shaped id as SQL (the bulk loads' event ids)
UUID_SQL = ("lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4'"
            " || substr(lower(hex(randomblob(2))), 2) || '-' || substr('89ab', 1 + abs(random()) % 4, 1)"
            " || substr(lower(hex(randomblob(2))), 2) || '-' || lower(hex(randomblob(6)))")


def cached(db_path, meta_path, rebuild=False, what="build"):
    """The metadata of a cached database that is there (and not to be
    rebuilt), logged; None when it must be built."""
    if rebuild or not (os.path.exists(db_path) and os.path.exists(meta_path)):
        return None
    with open(meta_path) as f:
        meta = json.load(f)
    log(f"{what}: using cached {db_path} ({os.path.getsize(db_path) / 1e6:.0f} MB)")
    return meta


def build_preload(cache_dir, preload, rebuild=False):
    """The cached preloaded database (built if missing) and its metadata."""
    os.makedirs(cache_dir, exist_ok=True)
    db_path, meta_path = cache_paths(cache_dir, preload)
    meta = cached(db_path, meta_path, rebuild, "preload")
    if meta is not None:
        return db_path, meta
    tmp = db_path + ".building"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(tmp + suffix):
            os.remove(tmp + suffix)
    started = time.perf_counter()

    # 1. schema, bootstrap, customers and meters through the real server
    log(f"preload: creating 1,000 customers and {len(METERS)} meters through the API")
    server = ServerProcess(tmp, os.path.join(cache_dir, "server-setup.log"))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        customer_ids = []
        for i in range(CUSTOMERS):
            status, body = api(conn, "POST", "/v1/customers", {
                "name": f"Bench customer {i}", "email": f"bench{i}@example.com",
                "external_id": f"bench-{i}"})
            if status != 201:
                raise RuntimeError(f"customer create: {status} {body}")
            customer_ids.append(body["id"])
        for key, name, unit, aggregation in METERS:
            status, body = api(conn, "POST", "/v1/meters",
                               {"key": key, "name": name, "unit": unit, "aggregation": aggregation})
            if status != 201:
                raise RuntimeError(f"meter create: {status} {body}")
        conn.close()
    finally:
        server.stop()

    # 2. bulk-load the events with sqlite3 directly
    db = sqlite3.connect(tmp, isolation_level=None)
    db.create_function("id_hash", 2, id_hash, deterministic=True)
    meter_ids = {k: i for i, k in db.execute("SELECT id, key FROM meters")}
    meter_list = [meter_ids[m[0]] for m in METERS]
    if customer_ids != list(range(customer_ids[0], customer_ids[0] + CUSTOMERS)):
        raise RuntimeError("customer ids are not contiguous")
    if sorted(meter_list) != list(range(min(meter_list), min(meter_list) + len(meter_list))):
        raise RuntimeError("meter ids are not contiguous")
    db.execute("PRAGMA journal_mode = DELETE")
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -1048576")  # 1 GiB for the index builds
    db.execute("PRAGMA threads = 2")
    indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"
                         " AND tbl_name = 'events' AND sql IS NOT NULL").fetchall()
    for name, _ in indexes:
        db.execute(f'DROP INDEX "{name}"')
    now_us = int(time.time() * 1e6)
    end_us = now_us - 2 * 3600 * 1_000_000
    start_us = end_us - PRELOAD_SPAN_DAYS * 86400 * 1_000_000
    step = max(1, (end_us - start_us) // preload)
    # Rows like the server stores: uuid4-shaped random ids, customers and meters
    # uniform, timestamps rising with insertion order (plus jitter), quantity in
    # micros, a small properties object. (MATERIALIZED: each random() is drawn once per row.)
    load_sql = f"""
        WITH RECURSIVE c(x) AS (SELECT ? UNION ALL SELECT x + 1 FROM c WHERE x < ?),
        gen AS MATERIALIZED (
          SELECT {customer_ids[0]} + abs(random()) % {CUSTOMERS} AS cust,
                 {UUID_SQL} AS eid,
                 {min(meter_list)} + abs(random()) % {len(meter_list)} AS meter,
                 {start_us} + x * {step} + abs(random()) % {step} AS ts,
                 (1 + abs(random()) % 1000) * 1000000 AS q,
                 '{{"region":"' || (CASE abs(random()) % 3 WHEN 0 THEN 'eu-west'
                                    WHEN 1 THEN 'us-east' ELSE 'ap-south' END) || '"}}' AS props
          FROM c)
        INSERT INTO events (customer_id, event_id, meter_id, ts, quantity, value, matched,
                            properties, received_at, id_hash)
        SELECT cust, eid, meter, ts, q, q, 1, props, ts + 1000000, id_hash(cust, eid) FROM gen"""
    chunk = 1_000_000
    done = 0
    while done < preload:
        n = min(chunk, preload - done)
        db.execute("BEGIN")
        db.execute(load_sql, (done, done + n - 1))
        db.execute("COMMIT")
        done += n
        log(f"preload: {done:,}/{preload:,} rows  ({time.perf_counter() - started:.0f} s)")
    for name, sql in indexes:
        t = time.perf_counter()
        db.execute(sql)
        log(f"preload: index {name} built in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    db.execute("BEGIN")
    rollups.rebuild_derived(db)  # rollups, spans and dedup index of the bulk-loaded events
    db.execute("COMMIT")
    log(f"preload: rollups built in {time.perf_counter() - t:.1f} s")
    db.execute("PRAGMA journal_mode = WAL")
    count = db.execute("SELECT count(*) FROM events").fetchone()[0]
    db.close()
    if count != preload:
        raise RuntimeError(f"preload holds {count} events, expected {preload}")
    os.replace(tmp, db_path)
    meta = {"preload": preload, "customer_ids": customer_ids, "meters": meter_ids,
            "built_seconds": round(time.perf_counter() - started, 1)}
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    log(f"preload: built {db_path} ({os.path.getsize(db_path) / 1e6:.0f} MB) in {meta['built_seconds']} s")
    return db_path, meta


def copy_db(src, work_dir, name):
    dst = os.path.join(work_dir, name)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(dst + suffix):
            os.remove(dst + suffix)
    t = time.perf_counter()
    shutil.copy(src, dst)
    os.sync()  # written back now, not by the kernel during the timed phase (gigabytes at 10 M)
    log(f"copied preload to {dst} in {time.perf_counter() - t:.1f} s (synced to disk)")
    return dst


def reference_db(preload_db, work_dir):
    """A fresh database of the seed-style reference holding the preloaded events."""
    path = os.path.join(work_dir, "bench-r.db")
    remove_db(path)
    t = time.perf_counter()
    count = seedref.build_db(path, preload_db)
    os.sync()
    log(f"reference database {path}: {count:,} preloaded events in {time.perf_counter() - t:.1f} s")
    return path


def remove_db(path):
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


# -- workload ----------------------------------------------------------------

def rfc3339_ms(us):
    dt = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=us)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def make_events(count, customer_ids, rng):
    """Raw API events and the exact rows the server would store for them."""
    now_us = int(time.time() * 1000) * 1000  # whole milliseconds, as the timestamps are written
    events = []
    for _ in range(count):
        meter = rng.choice(METERS)[0]
        if meter == "cpu_seconds":
            quantity = Decimal(rng.randint(1, 4000)) / 1000  # exact decimals: 0.001 .. 4
        elif meter == "data_transfer":
            quantity = rng.randint(1, 10_000_000)
        elif meter == "seats":
            quantity = rng.randint(1, 50)
        else:
            quantity = rng.randint(1, 10)
        ts_us = now_us - rng.randint(60, 3600) * 1_000_000 - rng.randint(0, 999) * 1000
        events.append({
            "id": str(uuid.uuid4()),
            "customer_id": rng.choice(customer_ids),
            "meter": meter,
            "quantity": quantity,
            "timestamp": rfc3339_ms(ts_us),
            "properties": {"region": rng.choice(REGIONS)},
            "_ts_us": ts_us,
        })
    return events


def to_json(obj):
    return json.dumps(obj, separators=(",", ":"), default=_decimal).replace('"__D', "").replace('D__"', "")


def _decimal(value):
    if isinstance(value, Decimal):
        return f"__D{value}D__"  # written as a bare JSON number
    raise TypeError(type(value).__name__)


def public(event):
    return {k: v for k, v in event.items() if not k.startswith("_")}


def rows_for(events, meter_ids, received_us):
    rows = []
    for e in events:
        q_us = int(Decimal(e["quantity"]) * 1_000_000)
        props = json.dumps(e["properties"], separators=(",", ":"), ensure_ascii=False)
        rows.append((e["customer_id"], e["id"], meter_ids[e["meter"]], e["_ts_us"], q_us, q_us, 1,
                     props, received_us, id_hash(e["customer_id"], e["id"])))
    return rows


def percentile(values, p):
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100 * (len(values) - 1)))))
    return values[k]


def run_clients(port, path, bodies, clients, check):
    """POST every body (keep-alive, `clients` threads); returns (wall, latencies)."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
    lock = threading.Lock()
    position = [0]
    latencies = [[] for _ in range(clients)]
    errors = []
    barrier = threading.Barrier(clients + 1)

    def worker(slot):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        mine = latencies[slot]
        barrier.wait()
        try:
            while True:
                with lock:
                    i = position[0]
                    position[0] = i + 1
                if i >= len(bodies):
                    break
                t = time.perf_counter()
                conn.request("POST", path, bodies[i], headers)
                resp = conn.getresponse()
                payload = resp.read()
                mine.append(time.perf_counter() - t)
                problem = check(resp.status, payload)
                if problem:
                    errors.append(problem)
                    break
        except Exception as exc:  # report, do not hang the others
            errors.append(repr(exc))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{len(errors)} client error(s), first: {errors[0]}")
    return wall, [x for lat in latencies for x in lat]


def own_cpu():
    t = os.times()
    return t.user + t.system


# -- phases ------------------------------------------------------------------

def phase_raw(preload_db, work_dir, rows, txn_rows):
    path = copy_db(preload_db, work_dir, "bench-a.db")
    try:
        # the server writer's own settings: WAL, synchronous=NORMAL, busy_timeout,
        # foreign keys, its page cache and checkpoint threshold
        conn = store_db.connect(path, writer=True)
        cpu = own_cpu()
        started = time.perf_counter()
        inserted = 0
        for i in range(0, len(rows), txn_rows):
            conn.execute("BEGIN IMMEDIATE")
            inserted += conn.executemany(INSERT_SQL, rows[i:i + txn_rows]).rowcount
            conn.execute("COMMIT")
        wall = time.perf_counter() - started
        cpu = own_cpu() - cpu
        conn.close()
    finally:
        remove_db(path)
    if inserted != len(rows):
        raise RuntimeError(f"raw insert stored {inserted} of {len(rows)} rows")
    return {"rows": len(rows), "wall": wall, "rate": len(rows) / wall, "client_cpu": cpu}


def phase_server(name, db, work_dir, path, bodies, clients, per_body, check, profile_dir,
                 warmup_bodies, script=None):
    """Start a server on `db` (removed afterwards), warm it up, time `bodies`."""
    profile_out = os.path.join(profile_dir, f"{name}.prof") if profile_dir and not script else None
    server = ServerProcess(db, os.path.join(work_dir, f"server-{name}.log"), profile_out, script)
    try:
        if not script:
            server.wait_filter()
        idle = server.status()
        if warmup_bodies:
            run_clients(server.port, path, warmup_bodies, 1, check)
        server_cpu, client_cpu = server.cpu_seconds(), own_cpu()
        wall, latencies = run_clients(server.port, path, bodies, clients, check)
        server_cpu, client_cpu = server.cpu_seconds() - server_cpu, own_cpu() - client_cpu
        end = server.status()
    finally:
        server.stop()
        remove_db(db)
    return {"requests": len(bodies), "items": len(bodies) * per_body, "wall": wall,
            "rate": len(bodies) * per_body / wall, "req_rate": len(bodies) / wall,
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000,
            "max_ms": max(latencies) * 1000, "server_cpu": server_cpu, "client_cpu": client_cpu,
            "rss_idle_mb": idle["VmRSS"] / 1024, "rss_end_mb": end["VmRSS"] / 1024,
            "rss_peak_mb": end["VmHWM"] / 1024, "processes": end["processes"], "cmd": " ".join(server.cmd)}


def check_batch(expected):
    def check(status, payload):
        if status != 200:
            return f"batch: HTTP {status} {payload[:300]!r}"
        body = json.loads(payload)
        if body.get("accepted") != expected:
            return f"batch: {body}"
        return None
    return check


def check_single(status, payload):
    if status != 201:
        return f"single: HTTP {status} {payload[:300]!r}"
    return None


# -- main --------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preload", type=int, default=1_000_000, help="events already stored (default 1,000,000)")
    p.add_argument("--cache-dir", default="/tmp/meterline-bench", help="where preloaded databases are kept")
    p.add_argument("--rebuild", action="store_true", help="rebuild the cached preload")
    p.add_argument("--phases", default="a,b,r,c", help="which of a,b,r,c to run (default all)")
    p.add_argument("--batches", type=int, default=200, help="(a)/(b)/(r): batches sent (default 200)")
    p.add_argument("--batch-size", type=int, default=1000, help="(b)/(r): events per batch (default 1000)")
    p.add_argument("--clients", type=int, default=4, help="(b)/(r): client threads (default 4)")
    p.add_argument("--txn-rows", type=int, default=10_000, help="(a): rows per transaction (default 10,000)")
    p.add_argument("--single", type=int, default=20_000, help="(c): single-event requests (default 20,000)")
    p.add_argument("--single-clients", type=int, default=8, help="(c): client threads (default 8)")
    p.add_argument("--profile-dir", default=None,
                   help="run the server under bench/profserver.py (cProfile of every request thread);"
                        " writes b.prof / c.prof there. Numbers are then not representative.")
    p.add_argument("--ingest-workers", type=int, default=1,
                   help="BILLING_INGEST_WORKERS of the server in (b) and (c) (default 1; the server's own"
                        " default is 0, one process: pass 0 to measure that)")
    p.add_argument("--seed", type=int, default=20250916)
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    args = p.parse_args(argv)
    os.environ["BILLING_INGEST_WORKERS"] = str(args.ingest_workers)  # the servers of (b) and (c) inherit it
    phases = set(args.phases.split(","))

    preload_db, meta = build_preload(args.cache_dir, args.preload, args.rebuild)
    work_dir = os.path.join(args.cache_dir, "work")
    os.makedirs(work_dir, exist_ok=True)
    if args.profile_dir:
        os.makedirs(args.profile_dir, exist_ok=True)
    customer_ids, meter_ids = meta["customer_ids"], meta["meters"]

    rng = random.Random(args.seed)
    results = {"preload": args.preload, "cpus": os.cpu_count(), "python": sys.version.split()[0],
               "sqlite": sqlite3.sqlite_version}

    log("generating events and request bodies (outside the timed windows)")
    n_events = args.batches * args.batch_size
    events = make_events(n_events, customer_ids, rng)
    batch_bodies = [to_json({"events": [public(e) for e in events[i:i + args.batch_size]]}).encode()
                    for i in range(0, n_events, args.batch_size)]
    warm_batches = [to_json({"events": [public(e) for e in make_events(args.batch_size, customer_ids, rng)]})
                    .encode() for _ in range(2)]

    if "a" in phases:
        log(f"(a) raw executemany of {n_events:,} rows, {args.txn_rows:,}-row transactions")
        rows = rows_for(events, meter_ids, int(time.time() * 1e6))
        results["a"] = phase_raw(preload_db, work_dir, rows, args.txn_rows)
        log(f"(a) {results['a']['rate']:,.0f} rows/s")
    for key in ("b", "r"):  # the same bodies, clients and checks: only the server differs
        if key not in phases:
            continue
        reference = key == "r"
        log(f"({key}) {'seed-style reference: ' if reference else ''}{args.batches} batches"
            f" x {args.batch_size} events, {args.clients} clients")
        db = reference_db(preload_db, work_dir) if reference else copy_db(preload_db, work_dir, "bench-b.db")
        results[key] = phase_server(key, db, work_dir, "/v1/events/batch", batch_bodies,
                                    args.clients, args.batch_size, check_batch(args.batch_size),
                                    args.profile_dir, warm_batches, SEEDREF if reference else None)
        log(f"({key}) {results[key]['rate']:,.0f} events/s")
    if "c" in phases:
        singles = [to_json(public(e)).encode() for e in make_events(args.single, customer_ids, rng)]
        warm_singles = [to_json(public(e)).encode() for e in make_events(200, customer_ids, rng)]
        log(f"(c) {args.single:,} single-event POSTs, {args.single_clients} clients")
        db = copy_db(preload_db, work_dir, "bench-c.db")
        results["c"] = phase_server("c", db, work_dir, "/v1/events", singles, args.single_clients, 1,
                                    check_single, args.profile_dir, warm_singles)
        log(f"(c) {results['c']['rate']:,.0f} req/s")

    report(results, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def report(r, args):
    lines = []
    out = lines.append
    out("")
    out(f"Meterline ingest benchmark — {r['preload']:,} events preloaded, 1,000 customers, "
        f"{len(METERS)} meters")
    out(f"Python {r['python']}, SQLite {r['sqlite']}, {r['cpus']} CPUs; the server with "
        f"BILLING_INGEST_WORKERS={args.ingest_workers}")
    if args.profile_dir:
        out("!! server ran under cProfile (bench/profserver.py): rates are NOT representative")
    out("")
    out(f"{'phase':<46} {'rate':>14} {'p50':>8} {'p99':>8} {'srv CPU':>8} {'cli CPU':>8} "
        f"{'RSS idle':>9} {'RSS end':>8} {'RSS peak':>9}")
    out("-" * 126)
    if "a" in r:
        a = r["a"]
        out(f"{'(a) raw sqlite3 executemany, ' + format(args.txn_rows, ',') + '-row txns':<46} "
            f"{a['rate']:>10,.0f} r/s {'':>8} {'':>8} {'':>8} {a['client_cpu'] / a['wall']:>7.2f}c "
            f"{'':>9} {'':>8} {'':>9}")
    for key, label, unit in (("b", f"(b) HTTP batch {args.batch_size:,}/req, {args.clients} clients", "ev/s"),
                             ("r", "(r) seed-style reference, same batches", "ev/s"),
                             ("c", f"(c) HTTP single event, {args.single_clients} clients", "req/s")):
        if key not in r:
            continue
        x = r[key]
        out(f"{label:<46} {x['rate']:>9,.0f} {unit:<4} {x['p50_ms']:>6.1f}ms {x['p99_ms']:>6.1f}ms "
            f"{x['server_cpu'] / x['wall']:>7.2f}c {x['client_cpu'] / x['wall']:>7.2f}c "
            f"{x['rss_idle_mb']:>7.0f}MB {x['rss_end_mb']:>6.0f}MB {x['rss_peak_mb']:>7.0f}MB")
    out("")
    summary(r, out)
    out("")
    out("srv/cli CPU = CPU-seconds per wall-second (cores busy) of the server and of this client")
    out("process during the timed window. Client and server share the same machine "
        f"({r['cpus']} CPUs), so client")
    out("CPU (http.client, response parsing) is taken from the server; request bodies were encoded")
    out("before timing. RSS = server VmRSS after start (idle) / at the end of the phase; peak = VmHWM;")
    out("server CPU and RSS include its ingest worker processes (processes: "
        + ", ".join(f"{k} {r[k]['processes']}" for k in ("b", "r", "c") if k in r) + ").")
    print("\n".join(lines), flush=True)


def summary(r, out):
    """The ratios and bars under the table; the ratios also go into `r` (--json)."""
    if "b" in r:
        out("(b) bar (§12): >= 60,000 events/s at 1 M stored, >= 50,000 at 10 M")
    if "a" in r and "b" in r:
        r["b_over_a"] = r["b"]["rate"] / r["a"]["rate"]
        out(f"b/a = {r['b_over_a']:.1%}   (our batch ingest ÷ raw executemany into the same schema)")
    if "b" in r and "r" in r:
        r["b_over_r"] = r["b"]["rate"] / r["r"]["rate"]
        out(f"ours ÷ reference = b/r = {r['b_over_r']:.2f}   (target >= 0.35; the reference: one INSERT"
            " per event into an index-free table, no validation, no dedup)")
    if "c" in r:
        out("(c) bar (§12): >= 3,000 req/s;  RSS bar: <= 300 MB throughout")
    if "a" in r:
        out(f"(a) {r['a']['rows']:,} rows in {r['a']['wall']:.2f} s")
    for key in ("b", "r", "c"):
        if key in r:
            x = r[key]
            out(f"({key}) {x['requests']:,} requests / {x['items']:,} events in {x['wall']:.2f} s, "
                f"the longest {x['max_ms']:,.0f} ms; server: {x['cmd']}")


if __name__ == "__main__":
    sys.exit(main())

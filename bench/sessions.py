#!/usr/bin/env python3
"""Session benchmark (issue: resources and sessions): start/stop pairs per
second against the real server, with 8 keep-alive client threads.

    python3 bench/sessions.py                    # 8 threads, 10 s
    python3 bench/sessions.py --threads 8 --seconds 20 --capacity 4

Starts `server.py --quiet --no-scheduler` on a fresh database, creates one
customer and one resource per thread (plus a shared resource of --capacity
that every thread also starts on, so the capacity check is contended), then
each thread loops: POST /v1/sessions → POST /v1/sessions/{id}/stop. A 409
capacity_full on the shared resource counts as a refused start (expected),
anything else aborts. Afterwards the database is checked: no resource ever
had more active sessions than its capacity (none are left running), and
every stopped session's cost is seconds/60 × price rounded half-up.
Standard library only; run by hand (pytest does not collect it).
"""

import argparse
import http.client
import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from decimal import ROUND_HALF_UP, Decimal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ingest  # noqa: E402  (ServerProcess, api, percentile)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--capacity", type=int, default=4, help="capacity of the shared, contended resource")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="meterline-sessions-")
    db_path = os.path.join(work, "sessions.db")
    server = ingest.ServerProcess(db_path, os.path.join(work, "server.log"))
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        status, shared = ingest.api(conn, "POST", "/v1/resources", {
            "name": "Shared room", "capacity": args.capacity, "price_per_minute": "0.50", "currency": "USD"})
        assert status == 201, shared
        plans = []
        for n in range(args.threads):
            status, customer = ingest.api(conn, "POST", "/v1/customers",
                                          {"name": f"Bench {n}", "email": f"bench{n}@example.com"})
            assert status == 201, customer
            status, resource = ingest.api(conn, "POST", "/v1/resources", {
                "name": f"Desk {n}", "capacity": 1, "price_per_minute": "0.05", "currency": "USD"})
            assert status == 201, resource
            plans.append((customer["id"], resource["id"]))
        conn.close()
        counts = [dict(pairs=0, refused=0, latencies=[]) for _ in range(args.threads)]
        start_gate = threading.Event()
        deadline = [0.0]
        errors = []

        def worker(slot):
            customer_id, own = plans[slot]
            client = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            mine = counts[slot]
            start_gate.wait()
            turn = 0
            try:
                while time.perf_counter() < deadline[0]:
                    resource_id = shared["id"] if turn % 2 else own
                    turn += 1
                    began = time.perf_counter()
                    status, body = ingest.api(client, "POST", "/v1/sessions",
                                              {"resource_id": resource_id, "customer_id": customer_id})
                    if status == 409 and body["error"]["code"] == "capacity_full":
                        mine["refused"] += 1
                        continue
                    if status != 201:
                        raise RuntimeError(f"start: {status} {body}")
                    status, body = ingest.api(client, "POST", f"/v1/sessions/{body['id']}/stop", {})
                    if status != 200:
                        raise RuntimeError(f"stop: {status} {body}")
                    mine["pairs"] += 1
                    mine["latencies"].append(time.perf_counter() - began)
            except Exception as exc:  # reported after the run
                errors.append(exc)
            finally:
                client.close()

        threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(args.threads)]
        for t in threads:
            t.start()
        cpu_before = server.cpu_seconds()
        began = time.perf_counter()
        deadline[0] = began + args.seconds
        start_gate.set()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - began
        cpu = server.cpu_seconds() - cpu_before
        rss = server.status()
    finally:
        server.stop()
    if errors:
        raise SystemExit(f"errors: {errors[:3]}")
    pairs = sum(c["pairs"] for c in counts)
    refused = sum(c["refused"] for c in counts)
    latencies = sorted(x for c in counts for x in c["latencies"])
    check(db_path)
    result = {"threads": args.threads, "seconds": round(elapsed, 2), "pairs": pairs,
              "pairs_per_second": round(pairs / elapsed), "requests_per_second": round((2 * pairs + refused) / elapsed),
              "refused_capacity_full": refused,
              "pair_ms_p50": round(ingest.percentile(latencies, 50) * 1000, 2),
              "pair_ms_p95": round(ingest.percentile(latencies, 95) * 1000, 2),
              "server_cpu_seconds": round(cpu, 2), "rss_mb": round(rss["VmRSS"] / 1024, 1),
              "rss_peak_mb": round(rss["VmHWM"] / 1024, 1)}
    print(json.dumps(result, indent=2))


def check(db_path):
    """Every session stopped, costs exact, and capacity never exceeded (replayed from the timestamps)."""
    conn = sqlite3.connect(db_path)
    try:
        running = conn.execute("SELECT count(*) FROM sessions WHERE ended_at IS NULL").fetchone()[0]
        assert running == 0, f"{running} sessions left running"
        for seconds, price, cost in conn.execute("SELECT duration_seconds, price_per_minute, cost FROM sessions"):
            expected = (Decimal(seconds) * Decimal(price) / 60 * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)
            assert cost == int(expected), (seconds, price, cost)
        for resource_id, capacity in conn.execute("SELECT id, capacity FROM resources"):
            changes = []
            for started, ended in conn.execute("SELECT started_at, ended_at FROM sessions WHERE resource_id = ?",
                                               (resource_id,)):
                changes += [(started, 1), (ended, -1)]
            active = peak = 0
            for _, step in sorted(changes, key=lambda c: (c[0], c[1])):  # a stop before a start at the same µs
                active += step
                peak = max(peak, active)
            assert peak <= capacity, f"resource {resource_id}: {peak} active > capacity {capacity}"
        print(f"checked: {conn.execute('SELECT count(*) FROM sessions').fetchone()[0]} sessions, costs exact, "
              "capacity never exceeded")
    finally:
        conn.close()


if __name__ == "__main__":
    main()

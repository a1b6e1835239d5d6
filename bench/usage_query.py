#!/usr/bin/env python3
"""Usage-query benchmark (SPEC §12): one customer's month of usage with day
windows, from a database already holding N events over 1,000 customers.

    python3 bench/usage_query.py                      # 10 M events (preload built once, cached)
    python3 bench/usage_query.py --preload 1000000
    python3 bench/usage_query.py --cut                # the range's edges inside 15-minute buckets

Reuses bench/ingest.py's cached preload (4 meters, 60 days of events). Starts
the real server and times GET /v1/customers/{id}/usage?from&to&window=day over
keep-alive for --queries random customers, after one warm-up pass.
"""

import argparse
import http.client
import json
import os
import random
import sqlite3
import sys
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ingest  # noqa: E402  (the preload and server helpers)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preload", type=int, default=10_000_000)
    parser.add_argument("--cache-dir", default="/tmp/meterline-bench")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cut", action="store_true",
                        help="start and end the range 7.5 minutes into a 15-minute bucket (a day earlier):"
                             " both edges are then read from the raw events")
    args = parser.parse_args()
    db_path, meta = ingest.build_preload(args.cache_dir, args.preload)
    # the range ends at the UTC midnight before the preload's last event (however old the cached
    # preload is), so it lies inside the preloaded events (60 days of them)
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as ro:
        (last_us,) = ro.execute("SELECT ts FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    end = datetime.fromtimestamp(last_us // 1_000_000, timezone.utc).replace(hour=0, minute=0, second=0)
    work = os.path.join(args.cache_dir, "work")
    os.makedirs(work, exist_ok=True)
    copy = ingest.copy_db(db_path, work, "bench-usage.db")
    server = ingest.ServerProcess(copy, os.path.join(work, "server-usage.log"))
    try:
        # the filter of stored ids is built in the background at start (about 7-9 s at 10 M
        # events, a core's worth): queries timed during it would measure that build
        server.wait_filter()
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        headers = {"Authorization": f"Bearer {ingest.ADMIN_KEY}"}
        if args.cut:
            end -= timedelta(days=1) - timedelta(minutes=7, seconds=30)
        start = end - timedelta(days=30)
        stamp = "%Y-%m-%dT%H:%M:%SZ" if args.cut else "%Y-%m-%d"
        query = f"from={start.strftime(stamp)}&to={end.strftime(stamp)}&window=day"
        rng = random.Random(5)
        customers = meta["customer_ids"]

        def ask(customer_id):
            conn.request("GET", f"/v1/customers/{customer_id}/usage?{query}", headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"usage: {response.status} {body[:200]!r}")
            return json.loads(body)

        for customer_id in customers[:20]:  # warm-up
            ask(customer_id)
        timings = []
        for _ in range(args.queries):
            customer_id = rng.choice(customers)
            t = time.perf_counter()
            usage = ask(customer_id)
            timings.append((time.perf_counter() - t) * 1000)
        timings.sort()
        p = lambda q: timings[min(len(timings) - 1, int(q * len(timings)))]  # noqa: E731
        print(f"usage query, {args.preload:,} events preloaded, {len(customers):,} customers, "
              f"{len(usage['usage'])} meters, day windows over 30 days to {end:%Y-%m-%d %H:%M} UTC"
              + (", both edges inside a bucket" if args.cut else ""))
        print(f"  {args.queries} queries: p50 {p(0.5):.1f} ms, p95 {p(0.95):.1f} ms, max {timings[-1]:.1f} ms"
              f"   (§12 bar: p95 <= 5 ms at 10 M)")
        status = server.status()
        print(f"  server RSS {status['VmRSS'] / 1024:.0f} MB (peak {status['VmHWM'] / 1024:.0f} MB)")
    finally:
        server.stop()
        ingest.remove_db(copy)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""ClickHouse shipping benchmark (SPEC §13): ship every event of a database
already holding N events to a fresh clickhouse-server and print events/s.

    python3 bench/clickhouse_ship.py                      # 1 M events
    python3 bench/clickhouse_ship.py --preload 10000000

Reuses bench/ingest.py's cached preload (built once). Starts its own
clickhouse-server (tests/clickhouse/server.py) on free ports with a fresh data
folder, runs the server's shipper in this process on a copy of the preload
(batches of 10,000 rows per INSERT, the cursor moved after each) until the
outbox is empty, then checks ClickHouse's count and prints the rate and the
bytes ClickHouse keeps per event.
"""

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import ingest  # noqa: E402  (the preload)
from billing.app import App  # noqa: E402
from billing.config import Config  # noqa: E402
from tests.clickhouse.server import ClickHouseServer, binary  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preload", type=int, default=1_000_000)
    parser.add_argument("--cache-dir", default="/tmp/meterline-bench")
    args = parser.parse_args()
    if binary() is None:
        sys.exit("clickhouse-server is not installed (apt-get install clickhouse-server)")
    db_path, _ = ingest.build_preload(args.cache_dir, args.preload)
    work = os.path.join(args.cache_dir, "work")
    os.makedirs(work, exist_ok=True)
    copy = ingest.copy_db(db_path, work, "bench-clickhouse.db")
    with tempfile.TemporaryDirectory() as folder:
        clickhouse = ClickHouseServer(folder).start()
        try:
            run(copy, clickhouse)
        finally:
            clickhouse.stop()


def run(db_path, clickhouse):
    env = {"BILLING_ADMIN_KEY": ingest.ADMIN_KEY, "BILLING_CLICKHOUSE_URL": clickhouse.url("meterline")}
    config = Config.from_env(env, db_path=db_path)
    config.log_requests = False
    app = App(config)
    try:
        stored = app.db.row("SELECT count(*) AS n FROM events")["n"]
        started = time.perf_counter()
        sent = app.shipper.run_once()
        seconds = time.perf_counter() - started
    finally:
        app.close()
    counted = int(clickhouse.query("SELECT count() FROM meterline.events").strip())
    parts = json.loads(clickhouse.query("SELECT sum(bytes_on_disk) AS b FROM system.parts WHERE database = 'meterline'"
                                        " AND table = 'events' AND active FORMAT JSON"))["data"][0]["b"]
    print(f"events stored: {stored:,}; rows sent: {sent:,}; rows in ClickHouse: {counted:,}")
    print(f"shipped in {seconds:.1f} s: {sent / seconds:,.0f} events/s "
          f"(batches of 10,000 rows, one INSERT and one cursor transaction each)")
    print(f"ClickHouse keeps {int(parts) / max(counted, 1):.1f} bytes per event (compressed, before merges finish)")


if __name__ == "__main__":
    main()

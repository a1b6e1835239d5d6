#!/usr/bin/env python3
"""Backup benchmark (SPEC §13): `python3 -m billing.backup DEST` of a live
server's database holding N events, and how long the server's writer waits
meanwhile.

    python3 bench/backup.py                       # 1 M events (bench/ingest.py's cached preload)
    python3 bench/backup.py --step-pages 64       # smaller steps of the sqlite3 backup API

Standard library only; run by hand (pytest does not collect it).

What it does: a fresh copy of bench/ingest.py's preloaded database (built once
and cached in --cache-dir); the real server (`server.py --quiet
--no-scheduler`) on it; a probe client posts a single event (POST /v1/events)
every --probe-interval seconds, sequentially, from --idle seconds before the
backup to --idle seconds after it; the backup runs as a subprocess, then
`--verify` on what it wrote. Each probe latency is classed by whether the
backup was running when the request was sent. The table shows the backup's
and the check's wall time, the sizes, and the probe latencies (p50, p99,
max) idle and during the backup.
"""

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, ROOT)

import ingest  # noqa: E402  (the preload, the server process, the admin key)


class Probe(threading.Thread):
    """Single-event POSTs, one at a time: (sent at, latency s, backup running)."""

    def __init__(self, port, customer_id, interval, running):
        super().__init__(daemon=True)
        self.port, self.customer_id, self.interval, self.running = port, customer_id, interval, running
        self.samples = []
        self.stop = threading.Event()
        self.failures = 0

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Authorization": f"Bearer {ingest.ADMIN_KEY}", "Content-Type": "application/json"}
        while not self.stop.is_set():
            body = json.dumps({"id": str(uuid.uuid4()), "customer_id": self.customer_id, "meter": "api_calls",
                               "quantity": 1})
            during = self.running.is_set()
            started = time.perf_counter()
            conn.request("POST", "/v1/events", body, headers)
            response = conn.getresponse()
            response.read()
            elapsed = time.perf_counter() - started
            if response.status != 201:
                self.failures += 1
            self.samples.append((started, elapsed, during or self.running.is_set()))
            self.stop.wait(self.interval)
        conn.close()


def stats(values):
    if not values:
        return "-"
    values = sorted(values)
    pick = lambda p: values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]  # noqa: E731
    return f"n={len(values):5d}  p50 {pick(50) * 1000:7.1f} ms  p99 {pick(99) * 1000:7.1f} ms  " \
           f"max {values[-1] * 1000:7.1f} ms"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1_000_000, help="events in the preloaded database")
    p.add_argument("--cache-dir", default="/tmp/meterline-bench")
    p.add_argument("--work-dir", default="/tmp/meterline-bench-backup")
    p.add_argument("--step-pages", type=int, default=None, help="passed to billing.backup (default its own)")
    p.add_argument("--probe-interval", type=float, default=0.01)
    p.add_argument("--idle", type=float, default=5.0, help="seconds probed before and after the backup")
    args = p.parse_args()

    preload, meta = ingest.build_preload(args.cache_dir, args.events)
    shutil.rmtree(args.work_dir, ignore_errors=True)
    os.makedirs(args.work_dir)
    db = ingest.copy_db(preload, args.work_dir, "billing.db")
    server = ingest.ServerProcess(db, os.path.join(args.work_dir, "server.log"))
    running = threading.Event()
    probe = Probe(server.port, meta["customer_ids"][0], args.probe_interval, running)
    try:
        probe.start()
        time.sleep(args.idle)
        dest = os.path.join(args.work_dir, "backup")
        command = [sys.executable, "-m", "billing.backup", dest]
        if args.step_pages:
            command[3:3] = ["--step-pages", str(args.step_pages)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BILLING_")}
        env["BILLING_DB"] = db
        running.set()
        began = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        backup_s = time.perf_counter() - began
        running.clear()
        time.sleep(args.idle)
    finally:
        probe.stop.set()
        probe.join(timeout=60)
        server.stop()
    began = time.perf_counter()
    verify = subprocess.run([sys.executable, "-m", "billing.backup", "--verify", dest], cwd=ROOT,
                            capture_output=True, text=True)
    verify_s = time.perf_counter() - began
    manifest = json.load(open(os.path.join(dest, "manifest.json")))
    db_size = next(e["size"] for e in manifest["files"] if e["path"] == manifest["database"])
    print(f"backup:   exit {done.returncode}, {backup_s:.2f} s wall ({manifest['duration_ms']} ms inside), "
          f"{manifest['event_count']} events, database {db_size / 1e6:.0f} MB, step pages "
          f"{args.step_pages or 'default'}")
    print(f"          {done.stdout.strip() or done.stderr.strip()}")
    print(f"verify:   exit {verify.returncode}, {verify_s:.2f} s wall")
    print(f"probe idle:   {stats([s for _, s, during in probe.samples if not during])}")
    print(f"probe backup: {stats([s for _, s, during in probe.samples if during])}")
    print(f"probe failures: {probe.failures}")


if __name__ == "__main__":
    main()

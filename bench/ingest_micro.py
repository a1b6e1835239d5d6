#!/usr/bin/env python3
"""Where ingest time goes, measured in-process without a profiler (companion of
bench/ingest.py; stdlib only, run by hand).

    python3 bench/ingest_micro.py [--preload 1000000] [--cache-dir /tmp/meterline-bench]

Uses the same cached preloaded database as bench/ingest.py (built if missing)
and works on a copy. Every figure is µs per event (batch path) or per request
(single path), single-threaded: no client, no lock or GIL contention. The
"full HTTP stack" rows push pre-encoded keep-alive requests through the real
request handler class over a socketpair, so they include request parsing,
routing, auth, the handler, the transaction and the response, but no TCP.
"""

import argparse
import json
import os
import random
import re
import socket
import sys
import threading
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import ingest as bench  # noqa: E402  (bench/ingest.py)
from billing import jsonutil  # noqa: E402
from billing.api import event_rows, events as events_api  # noqa: E402
from billing.app import App  # noqa: E402
from billing.config import Config  # noqa: E402
from billing.domain import quantities, times  # noqa: E402
from billing.web import bodies as web_bodies, http as web_http  # noqa: E402


def per_item(fn, items, repeat=3):
    """Best-of-`repeat` µs per item of fn() processing `items` items."""
    best = None
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return best / items * 1e6


def fake_request(app, path, body):
    return web_http.Request(app, "POST", path, {}, body, "bench", "127.0.0.1")


def http_stack(app, path, bodies):
    """µs per request through the real Handler over a socketpair (one thread)."""
    handler_cls = type("BenchHandler", (web_http.Handler,), {"app": app})
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: identity\r\n"
            f"Authorization: Bearer {bench.ADMIN_KEY}\r\nContent-Type: application/json\r\n")
    wire = b"".join(head.encode() + f"Content-Length: {len(b)}\r\n\r\n".encode() + b for b in bodies)
    client, server_side = socket.socketpair()
    received = []

    def feed():
        client.sendall(wire)
        client.shutdown(socket.SHUT_WR)

    def drain():
        while True:
            chunk = client.recv(1 << 20)
            if not chunk:
                break
            received.append(chunk)

    feeder, drainer = threading.Thread(target=feed), threading.Thread(target=drain)
    feeder.start()
    drainer.start()
    fake_server = types.SimpleNamespace(  # what the handler reads of its server; no deadlines here
        server_address=("127.0.0.1", 0), head_timeout=10, idle_timeout=15,
        deadlines=types.SimpleNamespace(arm=lambda sock, seconds: None, disarm=lambda sock: None),
        raw_budget=web_bodies.Budget(web_bodies.RAW_BUDGET, "request bodies"),
        decoded_budget=web_bodies.Budget(web_bodies.DECODED_BUDGET, "request bodies"))
    t = time.perf_counter()
    handler_cls(server_side, ("127.0.0.1", 0), fake_server)  # handles every request, then EOF
    dt = time.perf_counter() - t
    server_side.close()
    feeder.join()
    drainer.join()
    client.close()
    data = b"".join(received)
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", data)
    bad = [s for s in statuses if s not in (b"200", b"201")]
    if len(statuses) != len(bodies) or bad:
        raise RuntimeError(f"http stack: {len(statuses)} responses, bad: {bad[:3]} {data[:400]!r}")
    return dt / len(bodies) * 1e6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preload", type=int, default=1_000_000)
    p.add_argument("--cache-dir", default="/tmp/meterline-bench")
    p.add_argument("--batches", type=int, default=50, help="1,000-event batches for the write timings")
    p.add_argument("--single", type=int, default=5000, help="single-event requests")
    args = p.parse_args(argv)
    os.environ["BILLING_MAX_EVENT_AGE_DAYS"] = "0"

    preload_db, meta = bench.build_preload(args.cache_dir, args.preload)
    work = os.path.join(args.cache_dir, "work")
    os.makedirs(work, exist_ok=True)
    db_path = bench.copy_db(preload_db, work, "micro.db")
    rng = random.Random(7)
    customers = meta["customer_ids"]
    # batches validated in the request thread (no ingest worker processes): the in-process costs
    app = App(Config(db_path=db_path, max_event_age_days=0, log_requests=False, ingest_workers=0))
    out = []

    def line(label, value, unit="µs/event"):
        out.append(f"  {label:<62} {value:>9.2f} {unit}")

    try:
        # -- batch path, per event ------------------------------------------
        n = 1000
        events = bench.make_events(n, customers, rng)
        body = bench.to_json({"events": [bench.public(e) for e in events]}).encode()
        decoded = jsonutil.decode(body)["events"]
        out.append(f"Batch path (1,000-event body of {len(body) / 1000:.0f} bytes/event), "
                   f"{args.preload:,} events preloaded:")
        line("jsonutil.decode(body)  [json.loads, parse_float=Decimal]",
             per_item(lambda: jsonutil.decode(body), n))
        line("json.loads(body)  [for comparison: floats]", per_item(lambda: json.loads(body), n))

        def validate():
            ingest = events_api.ingest_for(app)
            return [ingest.row(raw, i) for i, raw in enumerate(decoded)]
        validate()  # loads the catalog
        line("Ingest.row (validation -> insert tuple), all of it", per_item(validate, n))
        ts = [e["timestamp"] for e in decoded]
        line("  times.parse_instant + times.to_micros",
             per_item(lambda: [times.to_micros(times.parse_instant(t)) for t in ts], n))
        qs = [e["quantity"] for e in decoded]
        line("  quantities.to_micros", per_item(lambda: [quantities.to_micros(q) for q in qs], n))
        props = [e["properties"] for e in decoded]
        line("  _properties_text (json.dumps of properties)",
             per_item(lambda: [event_rows._properties_text(x) for x in props], n))
        line("  catalog.customer + catalog.meter",
             per_item(lambda: [(app.catalog.customer(e["customer_id"]), app.catalog.meter(e["meter"]))
                               for e in decoded], n))

        # writes: many batches so checkpoints are included
        batches = []
        for _ in range(args.batches):
            evs = bench.make_events(n, customers, rng)
            batches.append(bench.to_json({"events": [bench.public(e) for e in evs]}).encode())
        rows_batches = []
        for b in batches:
            ingest = events_api.ingest_for(app)
            rows_batches.append([ingest.row(raw, i) for i, raw in enumerate(jsonutil.decode(b)["events"])])
        t = time.perf_counter()
        for rows in rows_batches:
            with app.db.transaction() as conn:
                conn.executemany(events_api.INSERT_SQL, rows)
        write_us = (time.perf_counter() - t) / (len(rows_batches) * n) * 1e6
        line(f"db.transaction + executemany, 1,000-row txns ({args.batches} txns)", write_us)

        more = []
        for _ in range(args.batches):
            evs = bench.make_events(n, customers, rng)
            more.append(bench.to_json({"events": [bench.public(e) for e in evs]}).encode())
        t = time.perf_counter()
        for b in more:
            events_api.ingest_batch(fake_request(app, "/v1/events/batch", b))
        line(f"ingest_batch handler in-process (decode+validate+write), {args.batches} batches",
             (time.perf_counter() - t) / (len(more) * n) * 1e6)

        more = []
        for _ in range(args.batches):
            evs = bench.make_events(n, customers, rng)
            more.append(bench.to_json({"events": [bench.public(e) for e in evs]}).encode())
        us = http_stack(app, "/v1/events/batch", more)
        line(f"full HTTP stack (Handler over socketpair), {args.batches} batches", us / n)
        out.append(f"  -> one thread, no contention: {1e6 / (us / n):,.0f} events/s")

        # -- single path, per request ---------------------------------------
        out.append("")
        out.append("Single-event path:")
        evs = bench.make_events(args.single, customers, rng)
        bodies = [bench.to_json(bench.public(e)).encode() for e in evs]
        t = time.perf_counter()
        responses = [events_api.ingest_one(fake_request(app, "/v1/events", b)) for b in bodies]
        line(f"ingest_one handler in-process ({args.single:,} requests)",
             (time.perf_counter() - t) / len(bodies) * 1e6, "µs/req")
        line("  Response.payload() (jsonutil.encode of the stored event)",
             per_item(lambda: [r.payload() for r in responses], len(responses)), "µs/req")
        plain = [json.loads(r.payload()) for r in responses]
        line("  json.dumps of the same body without Decimal  [comparison]",
             per_item(lambda: [json.dumps(x, separators=(",", ":")) for x in plain], len(plain)), "µs/req")
        one = bodies[0]
        raw_one = jsonutil.decode(one)
        line("  Ingest.row for one event (incl. Ingest() set-up)",
             per_item(lambda: [events_api.ingest_for(app).row(raw_one) for _ in range(1000)], 1000), "µs/req")
        extra = [bench.to_json(bench.public(e)).encode() for e in bench.make_events(args.single, customers, rng)]
        rows = [events_api.ingest_for(app).row(jsonutil.decode(b)) for b in extra]
        t = time.perf_counter()
        for row in rows:
            with app.db.transaction() as conn:
                conn.execute(events_api.INSERT_SQL, row)
                events_api.find_stored(conn, row[0], row[1])  # events have no index by id: the dedup tables
        line("  transaction: BEGIN + INSERT + find_stored + COMMIT",
             (time.perf_counter() - t) / len(rows) * 1e6, "µs/req")
        import http.client
        import io
        header_block = (f"Host: 127.0.0.1:8000\r\nAccept-Encoding: identity\r\nContent-Length: 190\r\n"
                        f"Authorization: Bearer {bench.ADMIN_KEY}\r\nContent-Type: application/json\r\n\r\n"
                        ).encode()
        line("  http.client.parse_headers (what BaseHTTPRequestHandler uses)",
             per_item(lambda: [http.client.parse_headers(io.BytesIO(header_block)) for _ in range(1000)],
                      1000), "µs/req")
        msg = http.client.parse_headers(io.BytesIO(header_block))
        line("  one headers.get() on that email.message.Message",
             per_item(lambda: [msg.get("Content-Length") for _ in range(10000)], 10000), "µs/call")
        more = [bench.to_json(bench.public(e)).encode() for e in bench.make_events(args.single, customers, rng)]
        us = http_stack(app, "/v1/events", more)
        line(f"full HTTP stack (Handler over socketpair), {args.single:,} requests", us, "µs/req")
        out.append(f"  -> one thread, no contention: {1e6 / us:,.0f} requests/s")
    finally:
        app.close()
        bench.remove_db(db_path)
    print("\n".join(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())

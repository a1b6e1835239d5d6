#!/usr/bin/env python3
"""The seed-style ingest reference for bench/ingest.py (SPEC §12).

    python3 bench/seedref.py --db PATH --port PORT

The simplest ingest a seed project would write with the standard library: a
`http.server.ThreadingHTTPServer` whose POST handler parses the JSON batch
(`{"events": [...]}`) and runs one `INSERT` per event into an `events` table
without any index, in one transaction per request behind one lock — no
validation, no dedup, no customer or meter lookup; WAL, synchronous=NORMAL.
It answers `{"accepted": N}` (as the real server does, so the same client
checks apply) and `GET /health`.

bench/ingest.py runs it as its own process, exactly like the real server, with
`build_db` having filled the table beforehand with the same preloaded events.
"""

import argparse
import json
import os
import signal
import sqlite3
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCHEMA = """CREATE TABLE events (
    id TEXT, customer_id INTEGER, meter TEXT, quantity, timestamp TEXT,
    properties TEXT, received_at INTEGER)"""
INSERT = ("INSERT INTO events (id, customer_id, meter, quantity, timestamp, properties, received_at)"
          " VALUES (?, ?, ?, ?, ?, ?, ?)")


def open_db(path):
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def build_db(path, preload_db=None):
    """A fresh reference database; with `preload_db`, its table already holds the
    events of that (bench/ingest.py preload) database, as the reference would
    have stored them."""
    conn = open_db(path)
    conn.execute(SCHEMA)
    if preload_db:
        conn.execute("ATTACH DATABASE ? AS preload", (preload_db,))
        conn.execute("BEGIN")
        conn.execute("""
            INSERT INTO events (id, customer_id, meter, quantity, timestamp, properties, received_at)
            SELECT e.event_id, e.customer_id, m.key, e.quantity / 1000000,
                   strftime('%Y-%m-%dT%H:%M:%fZ', e.ts / 1000000.0, 'unixepoch'),
                   e.properties, e.received_at / 1000000
            FROM preload.events e JOIN preload.meters m ON m.id = e.meter_id""")
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE preload")
    count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    conn.close()
    return count


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients expect
    disable_nagle_algorithm = True  # headers and body go out without a delayed-ACK stall
    db = None
    lock = threading.Lock()

    def do_GET(self):
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        events = json.loads(body, parse_float=str)["events"]  # decimals kept as their text
        received = int(time.time())
        with self.lock:
            self.db.execute("BEGIN")
            for e in events:
                self.db.execute(INSERT, (e["id"], e["customer_id"], e["meter"], e["quantity"],
                                         e["timestamp"], json.dumps(e.get("properties")), received))
            self.db.execute("COMMIT")
        self._send(200, {"accepted": len(events)})

    def _send(self, status, obj):
        payload = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", required=True)
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args(argv)
    if not os.path.exists(args.db):
        build_db(args.db)
    Handler.db = open_db(args.db)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    finally:
        server.server_close()
        Handler.db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

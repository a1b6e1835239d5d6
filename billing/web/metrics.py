"""`GET /metrics` (§10): the process's figures in Prometheus text format.

Counters live in memory (`Metrics`, fed by the request pipeline, ingest and
the writer); gauges are read at each scrape from cheap sources (an indexed
count, file sizes, /proc). Serving it never writes and never re-rates.
"""

import os

from .. import __version__
from ..api import auth
from ..store import outbox
from ..store.db import named
from . import prometheus
from ..api.responses import Response

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self):
        self.requests = prometheus.Counter("meterline_http_requests_total", "HTTP requests answered.",
                                           ("route", "method", "status"))
        self.durations = prometheus.Histogram("meterline_http_request_duration_seconds",
                                              "Time from the request head to the response sent.")
        self.ingested = prometheus.Counter("meterline_events_ingested_total", "Events stored (new ids).")
        self.duplicates = prometheus.Counter("meterline_events_duplicate_total",
                                             "Events refused as resends of a stored id.")
        self.transactions = prometheus.Histogram("meterline_writer_transaction_seconds",
                                                 "Write transactions, BEGIN to COMMIT.")
        self.clickhouse_reads = prometheus.Counter("meterline_clickhouse_reads_total",
                                                   "Usage and event-list reads by who answered (clickhouse, node).",
                                                   ("served_by",))
        for counter in (self.ingested, self.duplicates):
            counter.inc(amount=0)  # a sample from the first scrape on

    def request(self, route, method, status, seconds):
        # route patterns only (never raw paths): a request that matched none is "(no route)"
        self.requests.inc(route or "(no route)", method if method in _METHODS else "OTHER", str(status))
        self.durations.observe(seconds)


_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def _rss_bytes(pid="self"):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _db_size(path):
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.path.getsize(path + suffix)
        except OSError:
            pass
    return total


def _ingest_workers(lines, pool):
    """BILLING_INGEST_WORKERS: how many run, their memory, the batches they answered."""
    pids = pool.pids()
    prometheus.render_gauge(lines, "meterline_ingest_workers",
                            "Ingest worker processes running (they start at the first large batch).",
                            [((), len(pids))])
    prometheus.render_gauge(lines, "meterline_ingest_workers_resident_memory_bytes",
                            "Resident memory of the ingest worker processes, together.",
                            [((), sum(_rss_bytes(pid) for pid in pids))])
    prometheus.family(lines, "meterline_ingest_worker_batches_total", "counter",
                      "Batches an ingest worker validated (the rest: in their request threads).")
    lines.append(f"meterline_ingest_worker_batches_total {pool.served}")


def scrape(request):
    app = request.app
    if not app.config.metrics_public:  # the route is public in the table; staff only unless configured
        request.actor = app.auth.resolve(request.headers.get("Authorization"))
        auth.authorize(request.actor, auth.STAFF_READ)
    metrics = app.metrics
    with app.db.reader() as conn:
        invoices = named(conn, "SELECT status, count(*) AS n FROM invoices GROUP BY status").fetchall()
        deliveries = named(conn, "SELECT status, count(*) AS n FROM webhook_deliveries GROUP BY status").fetchall()
        backlog = outbox.backlog(conn) if app.clickhouse is not None else None
    lines = []
    prometheus.render_counter(lines, metrics.requests)
    prometheus.render_histogram(lines, metrics.durations)
    prometheus.render_counter(lines, metrics.ingested)
    prometheus.render_counter(lines, metrics.duplicates)
    prometheus.render_gauge(lines, "meterline_invoices", "Invoices by status.",
                            [((("status", row["status"]),), row["n"]) for row in invoices])
    prometheus.render_gauge(lines, "meterline_webhook_deliveries_total",
                            "Webhook deliveries by outcome (pending, delivered, failed).",
                            [((("outcome", row["status"]),), row["n"]) for row in deliveries])
    prometheus.render_gauge(lines, "meterline_writer_queue_depth", "Write jobs waiting for the writer.",
                            [((), app.db.queue_depth())])
    prometheus.render_histogram(lines, metrics.transactions)
    prometheus.render_gauge(lines, "meterline_db_size_bytes", "Database file, WAL and shared memory, in bytes.",
                            [((), _db_size(app.config.db_path))])
    last = app.scheduler.last_success
    prometheus.render_gauge(lines, "meterline_scheduler_last_success_timestamp_seconds",
                            "When the scheduler last finished a run without error (0: never).",
                            [((), last if last is not None else 0)])
    usable, size = app.db.known_ids_state()
    prometheus.render_gauge(lines, "meterline_event_id_filter_ready",
                            "1 when the in-memory filter of stored event ids answers (0: built at start"
                            " or after another process's write; every id is looked up meanwhile).", [((), int(usable))])
    prometheus.render_gauge(lines, "meterline_event_id_filter_bytes", "Memory of that filter, in bytes.",
                            [((), size)])
    prometheus.render_gauge(lines, "process_resident_memory_bytes", "Resident memory of the server process.",
                            [((), _rss_bytes())])
    if app.ingest_pool.size > 0:
        _ingest_workers(lines, app.ingest_pool)
    if app.clickhouse is not None:
        prometheus.render_gauge(lines, "meterline_clickhouse_outbox_backlog",
                                "Stored events and retractions not yet shipped to ClickHouse.", [((), backlog)])
        prometheus.render_counter(lines, metrics.clickhouse_reads)
    prometheus.render_gauge(lines, "meterline_build_info", "The running version.",
                            [((("version", __version__),), 1)])
    return Response(200, "\n".join(lines) + "\n", content_type=CONTENT_TYPE)

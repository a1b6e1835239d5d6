"""The application object: configuration, database, caches and the request
pipeline (authenticate → authorize → idempotency → handler)."""

import sys
import threading
import time

from . import clock, jsonutil
from .api import auth, users, webhooks
from .api.adjustments import Lateness
from .api.catalog import Catalog
from .api.clickhouse import ClickHouse
from .api.ingest_pool import IngestPool
from .api.objects import Reservations
from .api import selfmeter, storage
from .api.meters import ensure_system_meters
from .api.responses import JSON_TYPE, Response
from .api.revenue_cache import BucketCache
from .api.storage import StorageMeter
from .api.common import idempotency_horizon, now_micros
from .domain import times
from .errors import Conflict, ValidationError
from .ops.dispatcher import Dispatcher
from .ops.flusher import Flusher
from .ops.settler import Settler
from .ops.shipper import Shipper
from .ops.scheduler import Scheduler
from .store.db import Database, scalar
from .store.files import FileStore
from .store.secretbox import SecretBox, load_master_key
from .web import http
from .web.metrics import Metrics
from .web.stream import Bus
from .web.routes import ROUTES


class Stats:
    """Process counters (read by the live stream and /metrics)."""

    def __init__(self, metrics=None):
        self.metrics = metrics
        self._lock = threading.Lock()
        self.events = 0
        self.requests = 0
        self.started = time.time()
        self.on_ingest = None  # called after events were stored (wakes the ClickHouse shipper)

    def events_ingested(self, n):
        with self._lock:
            self.events += n
        if self.metrics is not None:
            self.metrics.ingested.inc(amount=n)
        if self.on_ingest is not None and n:
            self.on_ingest()

    def duplicates(self, n):
        if self.metrics is not None and n:
            self.metrics.duplicates.inc(amount=n)

    def request_done(self):
        with self._lock:
            self.requests += 1


class _KeyLock:
    """The lock of one (actor, Idempotency-Key), and how many requests hold or wait for it."""
    __slots__ = ("lock", "users")

    def __init__(self):
        self.lock = threading.Lock()
        self.users = 0


# The fields of a handler's answer that hold a secret shown only once: never
# stored for Idempotency-Key replays (a replay answers them as null).
SECRET_FIELDS = {users.create_key: ("key",), webhooks.create: ("secret",), auth.login: ("token",)}


def _without_secrets(route, response):
    """The JSON text stored for replays: the response without its secret fields."""
    fields = SECRET_FIELDS.get(route.handler)
    if not fields:
        return response.payload().decode("utf-8")
    body = jsonutil.decode(response.payload())
    if isinstance(body, dict):
        body.update({name: None for name in fields if name in body})
    return jsonutil.encode(body)


def _replay_headers(route, stored):
    headers = {"Idempotent-Replayed": "true"}
    fields = SECRET_FIELDS.get(route.handler)
    if fields:
        body = jsonutil.decode(stored)
        omitted = [name for name in fields if isinstance(body, dict) and name in body and body[name] is None]
        if omitted:
            headers["Secret-Omitted"] = ", ".join(omitted)
    return headers


class App:
    def __init__(self, config, log_stream=None):
        self.config = config
        self.db = Database(config.db_path)
        # wraps webhook signing secrets; plain ones left by older versions are wrapped now
        self.secrets = SecretBox(load_master_key(config.master_key_path))
        webhooks.wrap_stored_secrets(self.db, self.secrets)
        self.catalog = Catalog(self.db)
        self.ingest_pool = IngestPool(config.ingest_workers)  # started by the first large batch
        ensure_system_meters(self.db, storage.METERS + selfmeter.METERS)
        self.files = FileStore(config.objects_dir)
        # after a crash: temporary uploads, and files no object points to
        self.files.sweep({r["file"] for r in self.db.rows("SELECT file FROM objects")})
        self.reservations = Reservations(self.db)
        self.storage = StorageMeter(self)
        self.requests = selfmeter.RequestMeter(self)
        self.auth = auth.Authenticator(self.db, config)
        self.settler = Settler(self.db)
        # auth: revoked keys' use; settler: hot rollups into the settled tables, the dedup tail into runs, merges
        self.flusher = Flusher(self, [self.storage, self.requests, self.auth, self.settler])
        self.revenue_parts = BucketCache()
        self.router = http.Router(ROUTES)
        self.metrics = Metrics()
        self.stats = Stats(self.metrics)
        self.db.on_transaction = self.metrics.transactions.observe
        # §13: events shipped to ClickHouse, usage and event search read there (unset: none of it)
        self.clickhouse = ClickHouse(config.clickhouse_url) if config.clickhouse_url else None
        self.shipper = Shipper(self, self.clickhouse) if self.clickhouse else None
        if self.shipper is not None:
            self.stats.on_ingest = self.shipper.wake
        self.log_stream = log_stream if log_stream is not None else (sys.stderr if config.log_requests else None)
        self._log_lock = threading.Lock()
        self._idempotency_locks = {}
        self._idempotency_guard = threading.Lock()
        self.lateness = Lateness(self.db)
        self.dispatcher = Dispatcher(self)
        self.scheduler = Scheduler(self)
        self.bus = Bus()
        self._background = []

    def bootstrap(self):
        return auth.bootstrap(self.db, self.config.admin_key, self.config.admin_password)

    def start_background(self, scheduler=True):
        """Start the outbound dispatcher (webhooks, e-mail) and, unless told not
        to, the scheduler; and the build of the filter of stored event ids."""
        self.db.build_known_ids()
        self.dispatcher.start()
        self._background.append(self.dispatcher)
        self.flusher.start()
        self._background.append(self.flusher)
        if self.shipper is not None:
            self.shipper.start()
            self._background.append(self.shipper)
        if scheduler:
            self.scheduler.start()
            self._background.append(self.scheduler)

    def notify(self):
        """Something was queued for sending: wake the dispatcher (if running)."""
        self.dispatcher.wake()

    def publish(self, event_type, data):
        """Tell the live streams (GET /v1/stream) what just happened."""
        self.bus.publish(event_type, data)

    def active_sessions(self, customer_id=None):
        sql, params = "SELECT count(*) FROM sessions WHERE ended_at IS NULL", ()
        if customer_id is not None:
            sql, params = sql + " AND customer_id = ?", (customer_id,)
        with self.db.reader() as conn:
            return scalar(conn, sql, params)

    def close(self):
        self.bus.close()  # live streams end first
        for worker in self._background:
            worker.stop()
        if self.flusher not in self._background:
            self.flusher.flush()  # what the meters counted is written at a clean stop
        self.ingest_pool.close()
        self.db.close()

    # -- the pipeline ------------------------------------------------------
    def authenticate(self, request, route):
        """Who asks, and whether they may: 401/403 for a route that needs
        credentials, 429 for a customer credential past its rate. The web layer
        calls it before reading any byte of the body."""
        if route.roles is not None:
            request.actor = self.auth.resolve(request.headers.get("Authorization"), request)
            auth.authorize(request.actor, route.roles)
            self.auth.limit(request.actor)

    def handle(self, request, route, params):
        """An authenticated request (`authenticate` came first) to its handler."""
        key = request.headers.get("Idempotency-Key")
        if key and request.method == "POST" and request.actor is not None:
            return self._idempotent(request, route, params, key)
        return self._call(request, route, params)

    def _call(self, request, route, params):
        result = route.handler(request, **params)
        return result if isinstance(result, Response) else Response(200, result)

    def _idempotent(self, request, route, params, key):
        if len(key) > 255:
            raise ValidationError([{"field": "Idempotency-Key", "message": "must be at most 255 characters"}])
        actor = request.actor.label
        fingerprint = http.request_hash(request)
        with self._idempotency_guard:  # dropped only when nobody holds or waits
            entry = self._idempotency_locks.setdefault((actor, key), _KeyLock())
            entry.users += 1
        try:
            with entry.lock:
                return self._idempotent_locked(request, route, params, actor, key, fingerprint)
        finally:
            with self._idempotency_guard:
                entry.users -= 1
                if entry.users == 0:
                    self._idempotency_locks.pop((actor, key), None)

    def _idempotent_locked(self, request, route, params, actor, key, fingerprint):
        """Replay the stored answer of (actor, key), or act and store it.

        Secrets are shown once: the stored answer has the handler's secret
        fields (SECRET_FIELDS: a new API key's `key`, a webhook's `secret`, a
        sign-in's `token`) set to null, so a replay answers the same status and
        object with those fields null and a `Secret-Omitted` header naming
        them. The request fingerprint is stored keyed with the master key, so
        a body that held a password cannot be checked against guesses."""
        keyed = "k1:" + self.secrets.fingerprint(fingerprint)
        row = self.db.row(
            "SELECT request_hash, status, response FROM idempotency_keys"
            " WHERE actor = ? AND key = ? AND created_at >= ?", (actor, key, idempotency_horizon()))
        if row is not None:
            if row["request_hash"] not in (keyed, fingerprint):  # the plain form: stored by older versions
                raise Conflict("This Idempotency-Key was used with a different request.")
            return Response(row["status"], row["response"], headers=_replay_headers(route, row["response"]))
        response = self._call(request, route, params)
        if 200 <= response.status < 300 and response.content_type == JSON_TYPE:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT OR REPLACE INTO idempotency_keys (actor, key, request_hash, status,"
                    " response, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (actor, key, keyed, response.status, _without_secrets(route, response), now_micros()))
        return response

    # -- logging -----------------------------------------------------------
    def log_request(self, handler, request, route, status, duration_ms, request_id):
        self.stats.request_done()
        self.metrics.request(route, handler.command, status, duration_ms / 1000)
        if request is not None and request.actor is not None and request.actor.customer_id is not None:
            self.requests.record(request.actor.customer_id, route, status, duration_ms)
        if self.log_stream is None:
            return
        actor = request.actor.label if request is not None and request.actor else None
        line = jsonutil.encode({
            "time": times.format_instant(clock.now()), "request_id": request_id, "actor": actor,
            "method": handler.command, "route": route or handler.path.split("?")[0],
            "status": status, "duration_ms": round(duration_ms, 3)})
        self._write_log(line)

    def log_exception(self, request_id, exc):
        if self.log_stream is None:
            return
        self._write_log(jsonutil.encode({"time": times.format_instant(clock.now()), "request_id": request_id,
                                         "level": "error", "error": http.format_exception(exc)}))

    def log_note(self, level, message):
        """A line of the log that no request caused (background work)."""
        if self.log_stream is not None:
            self._write_log(jsonutil.encode({"time": times.format_instant(clock.now()), "level": level,
                                             "message": message}))

    def _write_log(self, line):
        with self._log_lock:
            try:
                self.log_stream.write(line + "\n")
                self.log_stream.flush()
            except (OSError, ValueError):
                pass

"""ClickHouse (§13): its HTTP interface through urllib, and every SQL text
the server sends it, in one place.

One table, `<database>.events`, a ReplacingMergeTree keyed on (customer_id,
event_id) whose `version` orders the rows of one id (billing/store/outbox.py):
the newest row of an id is the event as stored, or its tombstone
(`deleted` = 1) once retracted. Reads take `FINAL` (one row per id) in a
subquery and drop tombstones outside it, so a filter can never pick an older
row of an id: a tombstone copies its event's customer, meter, ts and seq.

Integers as the node keeps them: times in µs, quantities and values in
millionths (Int64); a counted value (unique_count) is its JSON text in
`value_text`. Properties are two parallel arrays, names and JSON values as
SQLite's json_quote writes them (what usage groups by), so a property is
`prop_values[indexOf(prop_keys, 'region')]` — ClickHouse 18.16 (Debian's) has
no JSON functions; nothing here needs a newer release.
"""

import base64
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from ..store.rollups import BUCKET_US, floor_sql

READ_TIMEOUT = 2.0  # seconds a read waits for ClickHouse before the node answers
WRITE_TIMEOUT = 60.0
RETRY_READS_AFTER = 5.0  # seconds reads skip ClickHouse after it failed

CREATE_DATABASE = "CREATE DATABASE IF NOT EXISTS {db}"
TABLE_EXISTS = "EXISTS TABLE {db}.events"
CREATE_TABLE = """CREATE TABLE IF NOT EXISTS {db}.events (
    customer_id Int64, event_id String, seq Int64, meter_id Int64, ts Int64,
    quantity Int64, value Int64, value_text String, matched UInt8, properties String,
    prop_keys Array(String), prop_values Array(String), late UInt8, received_at Int64,
    deleted UInt8, version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY intDiv(ts, 2592000000000)
ORDER BY (customer_id, event_id)"""
INSERT = "INSERT INTO {db}.events FORMAT JSONEachRow"

_LIVE = "SELECT {columns} FROM (SELECT {columns}, deleted FROM {db}.events FINAL WHERE {where}) WHERE deleted = 0"
EVENT_COLUMNS = "seq, customer_id, event_id, meter_id, ts, quantity, properties, late, received_at"
EVENTS = _LIVE.replace("{columns}", EVENT_COLUMNS) + " ORDER BY ts DESC, seq DESC LIMIT {limit} FORMAT JSONCompact"

# the 15-minute bucket of ts, floored; a bucket a boundary cuts is keyed by ts itself
_BUCKET = floor_sql("ts", BUCKET_US)
_USAGE_COLUMNS = "ts, seq, value, value_text, matched, customer_id, prop_keys, prop_values"
# per key and group: count, the sum of millionths in three parts (each sum stays far inside
# 64 bits), min, max, the latest (ts, seq, value), and for counted values the distinct ones
USAGE = ("SELECT {key} AS k, {group} AS g, count() AS n, sum(intDiv(value, 1000000000000)),"
         " sum(intDiv(value, 1000000) % 1000000), sum(value % 1000000), min(value), max(value),"
         " argMax(ts, (ts, seq)), argMax(seq, (ts, seq)), argMax(value, (ts, seq)), {values}"
         " FROM (" + _LIVE.replace("{columns}", _USAGE_COLUMNS) + ") WHERE matched = 1"
         " GROUP BY k, g FORMAT JSONCompact")


def quote(text):
    """A ClickHouse string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def usage_sql(db, meter, start_us, end_us, cut, group_by, by_customer):
    """The usage query of a meter's events in [start_us, end_us): one row per
    (bucket, group), with cut buckets (`cut`: their starts) per timestamp."""
    key = f"if(has([{', '.join(str(int(c)) for c in sorted(cut))}], {_BUCKET}), ts, {_BUCKET})" if cut else _BUCKET
    if by_customer:
        group = "toString(customer_id)"
    elif group_by:
        found = f"indexOf(prop_keys, {quote(group_by)})"
        group = f"if({found} = 0, 'null', prop_values[{found}])"
    else:
        group = "''"
    values = "groupUniqArray(value_text)" if meter.aggregation == "unique_count" else "emptyArrayString()"
    where = f"meter_id = {int(meter.id)} AND ts >= {int(start_us)} AND ts < {int(end_us)}"
    return USAGE.format(key=key, group=group, values=values, db=db, where=where)


def events_sql(db, customer_id, meter_id, start_us, end_us, cursor, limit):
    """The event list's query: newest first by (ts, seq), after `cursor` (ts, seq)."""
    where = []
    for clause, value in (("customer_id = {}", customer_id), ("meter_id = {}", meter_id),
                          ("ts >= {}", start_us), ("ts < {}", end_us)):
        if value is not None:
            where.append(clause.format(int(value)))
    if cursor:
        ts, seq = (int(v) for v in cursor)
        where.append(f"(ts < {ts} OR (ts = {ts} AND seq < {seq}))")
    return EVENTS.format(db=db, where=" AND ".join(where) or "1", limit=int(limit))


class ClickHouseError(Exception):
    pass


class Client:
    """ClickHouse's HTTP interface at `url` (its `database` parameter names
    the database; the others, like user and password, go with every request;
    a user and password before the host go as HTTP basic authentication and
    are never part of an error's text)."""

    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        params = urllib.parse.parse_qsl(parts.query)
        self.database = dict(params).get("database", "default")
        self._params = [(k, v) for k, v in params if k != "database"]
        host = parts.netloc.rpartition("@")[2]
        self._base = urllib.parse.urlunsplit((parts.scheme, host, parts.path or "/", "", ""))
        self._headers = {}
        if parts.username is not None:
            pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
        self.target = urllib.parse.urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""),
                                               parts.path or "/", "", "")) + self.database

    def sql(self, template, **fields):
        return template.format(db=self.database, **fields)

    def execute(self, sql, data=None, timeout=WRITE_TIMEOUT):
        """Run `sql` (with `data` as the body of an INSERT); the answer's bytes."""
        params = self._params + ([("query", sql)] if data is not None else [])
        url = self._base + ("?" + urllib.parse.urlencode(params) if params else "")
        body = data if data is not None else sql.encode("utf-8")
        request = urllib.request.Request(url, data=body, headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return reply.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read(2000).decode("utf-8", "replace").strip().splitlines()
            raise ClickHouseError(f"HTTP {exc.code}: {detail[0] if detail else exc.reason}") from None
        except urllib.error.URLError as exc:  # refused, unknown host
            raise ClickHouseError(f"cannot reach {self._base}: {getattr(exc.reason, 'strerror', None) or exc.reason}") \
                from None
        except (OSError, ValueError) as exc:  # reset, timed out, bad answer
            raise ClickHouseError(f"{type(exc).__name__}: {exc}") from None

    def rows(self, sql, timeout=READ_TIMEOUT):
        """The rows of a FORMAT JSONCompact query."""
        try:
            return json.loads(self.execute(sql, timeout=timeout))["data"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ClickHouseError(f"unreadable answer: {exc}") from None


class ClickHouse:
    """The client and what the server knows of ClickHouse's health: reads
    skip it for a few seconds after it failed, the shipper's answers count too."""

    def __init__(self, url):
        self.client = Client(url)
        self._lock = threading.Lock()
        self.last_error = None
        self.last_error_at = None  # µs
        self._skip_until = 0.0
        self.ready = False  # the table exists (the shipper made sure)

    def usable(self):
        with self._lock:
            return self.ready and time.monotonic() >= self._skip_until

    def failed(self, error, now_us):
        with self._lock:
            self.last_error, self.last_error_at = str(error), now_us
            self._skip_until = time.monotonic() + RETRY_READS_AFTER

    def answered(self):
        with self._lock:
            self._skip_until = 0.0

"""The migrations after the invoice lifecycle: resources and sessions,
object storage and customer users, analytics, the revenue log, alerts.

Append-only: a migration that shipped is never edited; a new one is a new
list here, added to MIGRATIONS in migrations.py.
"""

from .rollups import rebuild_all, rebuild_counts, rebuild_days, rebuild_spans

class _Step:
    """A migration step in Python, named by a stable repr (the benches key
    cached databases by the schema's repr)."""

    def __init__(self, function, name):
        self.function, self.name = function, name

    def __call__(self, conn):
        self.function(conn)

    def __repr__(self):
        return self.name


def _rollup_table(name, time_column, key):
    """The CREATE TABLE of a rollup table: the settled, hot and day tables
    share their columns (sum = total_hi · 10¹² + total_lo)."""
    return f"""CREATE TABLE {name} (
        customer_id INTEGER NOT NULL,
        meter_id INTEGER NOT NULL,
        {time_column} INTEGER NOT NULL,
        grp TEXT NOT NULL,
        n INTEGER NOT NULL,
        total_hi INTEGER NOT NULL,
        total_lo INTEGER NOT NULL,
        low INTEGER,
        high INTEGER,
        last_ts INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        last_value,
        PRIMARY KEY ({key})) WITHOUT ROWID"""


def _values_table(name, key):
    """The CREATE TABLE of a table of counted values (unique_count), settled or hot."""
    return f"""CREATE TABLE {name} (
        customer_id INTEGER NOT NULL,
        meter_id INTEGER NOT NULL,
        bucket INTEGER NOT NULL,
        grp TEXT NOT NULL,
        value NOT NULL,
        PRIMARY KEY ({key})) WITHOUT ROWID"""


# Capacity-limited resources and their sessions (§6), billed by the minute.
V4_RESOURCES = [
    """CREATE TABLE resources (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL,
        description TEXT,
        capacity INTEGER NOT NULL CHECK (capacity >= 1),
        price_per_minute TEXT NOT NULL,
        currency TEXT NOT NULL,
        max_duration_minutes INTEGER,
        limit_set_at INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        deleted_at INTEGER)""",
    # a deleted resource keeps its sessions (they are billing records); its name is free again
    "CREATE UNIQUE INDEX resources_name ON resources(name COLLATE NOCASE) WHERE deleted_at IS NULL",
    """CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        resource_id INTEGER NOT NULL REFERENCES resources(id),
        customer_id INTEGER NOT NULL REFERENCES customers(id),
        user TEXT,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        duration_seconds INTEGER,
        price_per_minute TEXT NOT NULL,
        currency TEXT NOT NULL,
        cost INTEGER,
        stopped_by TEXT,
        auto_stopped INTEGER NOT NULL DEFAULT 0,
        started_by TEXT NOT NULL,
        invoice_id INTEGER REFERENCES invoices(id))""",
    "CREATE INDEX sessions_active ON sessions(resource_id) WHERE ended_at IS NULL",
    # stopped sessions not yet on an invoice that left draft: what the invoice run looks at
    "CREATE INDEX sessions_unbilled ON sessions(customer_id, ended_at) WHERE invoice_id IS NULL AND ended_at IS NOT NULL",
    # the sessions a draft's resource lines hold (rewritten with its lines); marked billed at issue
    """CREATE TABLE invoice_sessions (
        invoice_id INTEGER NOT NULL REFERENCES invoices(id),
        session_id INTEGER NOT NULL REFERENCES sessions(id),
        PRIMARY KEY (invoice_id, session_id)) WITHOUT ROWID""",
    "CREATE INDEX sessions_customer_end ON sessions(customer_id, ended_at)",
    "CREATE INDEX sessions_resource_end ON sessions(resource_id, ended_at)",
    # invoices without a subscription: 'monthly' (resource lines of a calendar month)
    # or 'adjustments' (late events of ended subscriptions)
    "ALTER TABLE invoices ADD COLUMN kind TEXT NOT NULL DEFAULT 'subscription'",
    "UPDATE invoices SET kind = 'adjustments' WHERE subscription_id IS NULL",
    "CREATE UNIQUE INDEX invoices_one_per_month ON invoices(customer_id, period_start_date, revision)"
    " WHERE kind = 'monthly'",
]

# Metered object storage (§8) and customer users (§9).
V5_STORAGE = [
    # a user with role 'customer' belongs to one customer and sees only its own data
    "ALTER TABLE users ADD COLUMN customer_id INTEGER REFERENCES customers(id)",
    # the current object of each (customer, key); `file` is a server-chosen name
    # under <data dir>/objects/, never derived from the key
    """CREATE TABLE objects (
        id INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL REFERENCES customers(id),
        key TEXT NOT NULL,
        size INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        etag TEXT NOT NULL,
        file TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL)""",
    "CREATE UNIQUE INDEX objects_key ON objects(customer_id, key)",
    # stored bytes over time: one span per stored object version, in whole
    # seconds, from the instant its upload completed to the instant it was
    # deleted or replaced (NULL while stored); the GB-days integrate these
    """CREATE TABLE storage_spans (
        id INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL REFERENCES customers(id),
        object_id INTEGER NOT NULL,
        size INTEGER NOT NULL,
        start_s INTEGER NOT NULL,
        end_s INTEGER)""",
    "CREATE INDEX storage_spans_customer ON storage_spans(customer_id, start_s)",
    "CREATE INDEX storage_spans_open ON storage_spans(object_id) WHERE end_s IS NULL",
    # the last local day whose storage_gb_days event is written, per customer
    """CREATE TABLE storage_days (
        customer_id INTEGER PRIMARY KEY REFERENCES customers(id),
        closed_through TEXT NOT NULL)""",
]

# Analytics (§10): resource lines name their resource, so revenue groups by it.
V6_ANALYTICS = [
    "ALTER TABLE invoice_lines ADD COLUMN resource_id INTEGER",
    # covering: revenue by issue date or by the customer's period, and the overview's
    # receivables, are summed from these indexes without reading the invoice rows
    "CREATE INDEX invoices_issued ON invoices(issued_at, status, currency, total, customer_id, subscription_id)"
    " WHERE issued_at IS NOT NULL",
    "CREATE INDEX invoices_period ON invoices(period_start_date, status, currency, total, customer_id,"
    " subscription_id)",
    "CREATE INDEX invoices_receivable ON invoices(currency, due_at, amount_due, amount_paid)"
    " WHERE status = 'issued' AND payment_status != 'paid'",
    # revenue is the issued and paid invoices, whose lines never change: this counter moves
    # whenever an invoice enters or leaves that set, so a revenue answer can be kept until it does
    "INSERT INTO counters (name, value) VALUES ('revenue_version', 0)",
    """CREATE TRIGGER invoices_revenue_update AFTER UPDATE OF status ON invoices
        WHEN (old.status IN ('issued', 'paid')) != (new.status IN ('issued', 'paid'))
        BEGIN UPDATE counters SET value = value + 1 WHERE name = 'revenue_version'; END""",
    """CREATE TRIGGER invoices_revenue_insert AFTER INSERT ON invoices
        WHEN new.status IN ('issued', 'paid')
        BEGIN UPDATE counters SET value = value + 1 WHERE name = 'revenue_version'; END""",
]

# Revenue answers kept per bucket: each move of revenue_version also logs the
# invoice's issue instant and local period start under the new version, so a
# reader knows which buckets a change touched (the last 1,000 versions are kept).
_LOG_REVENUE_CHANGE = """
    UPDATE counters SET value = value + 1 WHERE name = 'revenue_version';
    INSERT INTO revenue_touched (version, issued_at, period_start_date)
        VALUES ((SELECT value FROM counters WHERE name = 'revenue_version'), {issued_at}, {period});
    DELETE FROM revenue_touched
        WHERE version <= (SELECT value FROM counters WHERE name = 'revenue_version') - 1000;"""
V7_REVENUE_LOG = [
    """CREATE TABLE revenue_touched (
        version INTEGER PRIMARY KEY,
        issued_at INTEGER,
        period_start_date TEXT)""",
    "DROP TRIGGER invoices_revenue_update",
    "DROP TRIGGER invoices_revenue_insert",
    """CREATE TRIGGER invoices_revenue_update AFTER UPDATE OF status ON invoices
        WHEN (old.status IN ('issued', 'paid')) != (new.status IN ('issued', 'paid'))
        BEGIN""" + _LOG_REVENUE_CHANGE.format(issued_at="coalesce(new.issued_at, old.issued_at)",
                                              period="coalesce(new.period_start_date, old.period_start_date)")
    + " END",
    """CREATE TRIGGER invoices_revenue_insert AFTER INSERT ON invoices
        WHEN new.status IN ('issued', 'paid')
        BEGIN""" + _LOG_REVENUE_CHANGE.format(issued_at="new.issued_at", period="new.period_start_date") + " END",
]

# Alerts and notifications (§10).
V8_ALERTS = [
    # rules: spend (threshold in minor units of `currency`) or usage of `meter`
    # (threshold in millionths of the meter's unit); customer_id NULL: every customer
    # (of `currency`, for spend)
    """CREATE TABLE alert_rules (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT,
        customer_id INTEGER REFERENCES customers(id),
        type TEXT NOT NULL CHECK (type IN ('spend', 'usage')),
        meter TEXT,
        currency TEXT,
        threshold INTEGER NOT NULL CHECK (threshold > 0),
        created_at INTEGER NOT NULL,
        deleted_at INTEGER)""",
    # one row per firing; `source` names what fired (rule:<id>, budget:<percent>,
    # spike:<meter>, quota:<percent>) and `period` the billing period's start instant
    # (a spike: its local date). The unique index is what makes a firing happen once,
    # across threads, processes and restarts.
    """CREATE TABLE alert_firings (
        id INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL REFERENCES customers(id),
        source TEXT NOT NULL,
        period TEXT NOT NULL,
        type TEXT NOT NULL,
        rule_id INTEGER,
        meter TEXT,
        currency TEXT,
        threshold TEXT NOT NULL,
        value TEXT NOT NULL,
        percent INTEGER,
        period_start INTEGER,
        period_end INTEGER,
        message TEXT NOT NULL,
        created_at INTEGER NOT NULL)""",
    "CREATE UNIQUE INDEX alert_firings_once ON alert_firings(source, customer_id, period)",
    "CREATE INDEX alert_firings_customer ON alert_firings(customer_id, created_at)",
    "CREATE INDEX alert_firings_time ON alert_firings(created_at)",
    # customer_id NULL: for staff only (a webhook delivery that gave up)
    """CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        customer_id INTEGER REFERENCES customers(id),
        firing_id INTEGER REFERENCES alert_firings(id),
        kind TEXT NOT NULL,
        title TEXT NOT NULL,
        message TEXT NOT NULL,
        created_at INTEGER NOT NULL)""",
    "CREATE INDEX notifications_customer ON notifications(customer_id, id)",
    """CREATE TABLE notification_reads (
        notification_id INTEGER NOT NULL REFERENCES notifications(id),
        user_id INTEGER NOT NULL REFERENCES users(id),
        read_at INTEGER NOT NULL,
        PRIMARY KEY (notification_id, user_id)) WITHOUT ROWID""",
    # an alert e-mail names its firing (an invoice e-mail its invoice)
    "ALTER TABLE emails ADD COLUMN firing_id INTEGER REFERENCES alert_firings(id)",
    # what the evaluation has looked at: events up to this seq, audit entries (budget
    # changes, new rules) up to this id, and when it last ran (sessions that ended since)
    "INSERT INTO counters (name, value) VALUES ('alerts_seen_seq', 0)",
    "INSERT INTO counters (name, value) VALUES ('alerts_seen_audit', 0)",
    "INSERT INTO counters (name, value) VALUES ('alerts_evaluated_at', 0)",
]

# A customer's subscription in force on a day (every rating and alert reads it)
# is found by an index instead of a walk over every subscription.
V9_SUBSCRIPTION_LOOKUP = [
    "CREATE INDEX subscriptions_customer ON subscriptions(customer_id, start_date)",
]

# No secret at rest in plain text (§1). API key prefixes keep at most 8
# characters ("mk_" and 5 of the secret); responses stored for Idempotency-Key
# replays lose the secrets they held (an API key's `key`, a webhook's `secret`:
# a replay answers them as null). secure_delete zeroes the bytes replaced.
# Webhook signing secrets are wrapped under the master key at start (Python,
# after the migrations: SQL cannot read the key file).
V10_NO_PLAIN_SECRETS = [
    "PRAGMA secure_delete = ON",
    "UPDATE api_keys SET prefix = substr(prefix, 1, 8) WHERE length(prefix) > 8",
    """UPDATE idempotency_keys SET response = json_set(response, '$.key', json('null'),
        '$.prefix', substr(json_extract(response, '$.prefix'), 1, 8))
        WHERE json_valid(response) AND json_type(response, '$.key') = 'text'
        AND json_type(response, '$.prefix') = 'text' AND json_type(response, '$.revoked') IS NOT NULL""",
    """UPDATE idempotency_keys SET response = json_set(response, '$.secret', json('null'))
        WHERE json_valid(response) AND json_type(response, '$.secret') = 'text'
        AND json_type(response, '$.url') = 'text' AND json_type(response, '$.events') = 'array'""",
    "UPDATE idempotency_keys SET response = json_set(response, '$.token', json('null'))"
    " WHERE json_valid(response) AND json_type(response, '$.token') = 'text'",
    "PRAGMA secure_delete = OFF",
]

# Whether an invoice needs approval is fixed on the invoice when it is drafted
# (§7): finalize reads the invoice, so changing the customer afterwards cannot
# let a draft skip its approval. Invoices made before take their customer's
# setting as it is now.
V11_INVOICE_APPROVAL = [
    "ALTER TABLE invoices ADD COLUMN requires_approval INTEGER NOT NULL DEFAULT 0",
    "UPDATE invoices SET requires_approval = (SELECT c.requires_approval FROM customers c"
    " WHERE c.id = invoices.customer_id)",
]


# Rollups (§13): matched events per (customer, meter, group, 15-minute bucket),
# kept by every event insert and retraction (billing/store/rollups.py), built
# here from the events already stored. The sum is total_hi · 10¹² + total_lo.
V12_ROLLUPS = [
    _rollup_table("rollups", "bucket", "customer_id, meter_id, bucket, grp"),
    # the distinct values of unique_count meters, per bucket
    _values_table("rollup_values", "customer_id, meter_id, bucket, grp, value"),
    _Step(rebuild_all, "rollups.rebuild_all"),
]


# Events without per-customer indexes (§12 ingest, §13): whole buckets are read
# from the rollups, so the covering index (customer_id, meter_id, ts, matched,
# value) — a random insert for every event — goes. A bucket cut by a range edge
# was then one short `ts` range of that index-ordered-by-time, narrowed by
# customer and meter inside the index (until V22 put the index on the bucket
# alone: billing/store/event_time.py). `event_spans` (one row per customer and meter
# with events: their count and first and last timestamps) answers "has events"
# and bounds the event list, and stays small.
V13_EVENTS_BY_TIME = [
    """CREATE TABLE event_spans (
        customer_id INTEGER NOT NULL,
        meter_id INTEGER NOT NULL,
        n INTEGER NOT NULL,
        first_ts INTEGER NOT NULL,
        last_ts INTEGER NOT NULL,
        PRIMARY KEY (customer_id, meter_id)) WITHOUT ROWID""",
    _Step(rebuild_spans, "rollups.rebuild_spans"),
    "DROP INDEX events_usage",
    "DROP INDEX events_time",
    "CREATE INDEX events_time ON events(ts, customer_id, meter_id)",
]


# Hot rollups (billing/store/rollups.py): what inserts write, ordered by bucket
# first so a commit of events spread over many customers touches a few pages;
# buckets older than an hour move to `rollups` and `rollup_values` in chunks.
V14_HOT_ROLLUPS = [
    _rollup_table("rollups_hot", "bucket", "bucket, customer_id, meter_id, grp"),
    _values_table("rollup_values_hot", "bucket, customer_id, meter_id, grp, value"),
    # one customer's range: a new (customer, meter, bucket) adds an entry, an update does not
    "CREATE INDEX rollups_hot_customer ON rollups_hot(customer_id, meter_id, bucket)",
    "CREATE INDEX rollup_values_hot_customer ON rollup_values_hot(customer_id, meter_id, bucket)",
]


def _index_event_ids(conn):
    """V15's index of the stored events (the tables V21 replaces)."""
    conn.execute("INSERT INTO event_ids (id_hash, seq) SELECT id_hash, seq FROM events ORDER BY id_hash, seq")


# Deduplication in two parts (billing/store/event_ids.py): a small hot table
# that inserts write and a settled one that takes the hot entries in hash
# order; they replace the index on events(id_hash), which a commit of events
# wrote at thousands of random pages.
V15_EVENT_IDS = [
    """CREATE TABLE event_ids (
        id_hash INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (id_hash, seq)) WITHOUT ROWID""",
    """CREATE TABLE event_ids_hot (
        id_hash INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (id_hash, seq)) WITHOUT ROWID""",
    _Step(_index_event_ids, "event_ids.rebuild"),
    "DROP INDEX events_dedup",
]


# Regrouping without stalls (§12, §13): a group_by key added to a meter that
# has events marks the meter here, and a background thread regroups its
# rollups in short writer transactions, in time order (billing/store/rollups.py,
# `regroup`). `keys` are the group_by keys every rollup row of the meter holds
# meanwhile (the keys before the change); `bucket` is how far the regroup has
# come; `generation` grows with each change, so a chunk planned before one is
# not counted as done after it.
V16_REGROUPS = [
    """CREATE TABLE rollup_regroups (
        meter_id INTEGER PRIMARY KEY REFERENCES meters(id),
        keys TEXT NOT NULL,
        generation INTEGER NOT NULL,
        bucket INTEGER NOT NULL)""",
]


# Day rollups (§12 "flat in event count"): per (customer, meter, UTC day,
# group), the sum of that day's settled 15-minute rows, kept when rows settle
# and rebuilt from them after a retraction or a regroup. A long range reads
# its whole UTC days here and only its partial days' buckets.
V17_DAY_ROLLUPS = [
    _rollup_table("rollup_days", "day", "customer_id, meter_id, day, grp"),
    _Step(rebuild_days, "rollups.rebuild_days"),
]


# Events received per 15-minute bucket (§13, the events chart): over every
# customer and meter, matched or not, kept by the transaction that stores the
# events (billing/store/rollups.py), so the chart reads at most 96 rows a day
# however many events there are, and archiving (which leaves the count as it
# is) never changes it. Built from the stored events and the archived ones
# still remembered (schema_archive.py), so it comes after V19.
V20_EVENT_COUNTS = [
    """CREATE TABLE event_counts (
        bucket INTEGER PRIMARY KEY,
        n INTEGER NOT NULL)""",
    _Step(rebuild_counts, "rollups.rebuild_counts"),
]


def _runs_from_tables(conn):
    """V21: the settled entries become run 1 (already in hash order: its pages
    are appended), the hot ones run 0; every stored seq is then in a run."""
    count = conn.execute("INSERT INTO event_id_runs (run, id_hash, seq)"
                         " SELECT 1, id_hash, seq FROM event_ids ORDER BY id_hash, seq").rowcount
    loose = conn.execute("INSERT OR IGNORE INTO event_id_runs (run, id_hash, seq)"
                         " SELECT 0, id_hash, seq FROM event_ids_hot").rowcount
    conn.executemany("INSERT INTO event_id_run_list (run, entries) VALUES (?, ?)",
                     [(0, loose)] + ([(1, count)] if count else []))
    conn.execute("INSERT INTO counters (name, value) SELECT 'event_ids_settled', max("
                 "(SELECT coalesce(max(seq), 0) FROM events), (SELECT coalesce(max(seq), 0) FROM archived_events))")


# The dedup index as a tail and runs (billing/store/event_ids.py,
# billing/store/event_id_runs.py): storing an event writes no entry (the tail
# is the events after the mark); a settling pass appends the tail as a run
# sorted by hash, merges keep the runs few. They replace V15's two tables,
# whose settling merged entries into one large hash-ordered table, about a
# page an entry at 10 M events.
V21_EVENT_ID_RUNS = [
    """CREATE TABLE event_id_runs (
        run INTEGER NOT NULL,
        id_hash INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (run, id_hash, seq)) WITHOUT ROWID""",
    # `into_run`: the merge under way that takes this run; `merged_through`: of
    # that merge's new run, the last hash moved into it
    """CREATE TABLE event_id_run_list (
        run INTEGER PRIMARY KEY,
        entries INTEGER NOT NULL,
        into_run INTEGER,
        merged_through INTEGER)""",
    _Step(_runs_from_tables, "event_ids.runs_from_tables"),
    "DROP TABLE event_ids",
    "DROP TABLE event_ids_hot",
]


# The time index ordered by 15-minute bucket, then seq (billing/store/event_time.py): a commit
# of events appends at the end of each bucket it touches instead of at random places in time.
V22_EVENTS_BY_BUCKET = [
    "DROP INDEX events_time",
    "CREATE INDEX events_time ON events(ts / 900000000)",
]

"""Schema migrations, append-only, tracked with PRAGMA user_version.

Each migration is a list of statements applied in one transaction together with
the version bump, so a failing migration leaves the database exactly as it was.
Instants are stored as integer microseconds since the Unix epoch (UTC); money as
integer minor units; quantities as integer millionths.
"""

import sqlite3

V1_FOUNDATION = [
    """CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        email TEXT NOT NULL UNIQUE COLLATE NOCASE,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        disabled INTEGER NOT NULL DEFAULT 0)""",
    # AUTOINCREMENT: a deleted customer's id is never given to a new one
    """CREATE TABLE customers (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        external_id TEXT UNIQUE,
        name TEXT NOT NULL,
        email TEXT NOT NULL UNIQUE COLLATE NOCASE,
        timezone TEXT NOT NULL DEFAULT 'UTC',
        currency TEXT NOT NULL DEFAULT 'USD',
        billing_email TEXT,
        billing_address TEXT,
        tax_rate TEXT NOT NULL DEFAULT '0',
        net_terms_days INTEGER NOT NULL DEFAULT 30,
        requires_approval INTEGER NOT NULL DEFAULT 0,
        csm_user_id INTEGER REFERENCES users(id),
        budget TEXT,
        storage_quota_bytes INTEGER,
        contract_start TEXT,
        contract_end TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        archived INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL)""",
    """CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT,
        customer_id INTEGER REFERENCES customers(id),
        prefix TEXT NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        created_by TEXT,
        revoked_at INTEGER,
        CHECK ((role IS NULL) != (customer_id IS NULL)))""",
    """CREATE TABLE auth_sessions (
        id INTEGER PRIMARY KEY,
        digest TEXT NOT NULL UNIQUE,
        user_id INTEGER NOT NULL REFERENCES users(id),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        revoked_at INTEGER)""",
    """CREATE TABLE meters (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        unit TEXT NOT NULL DEFAULT 'unit',
        aggregation TEXT NOT NULL,
        value_property TEXT,
        filter TEXT,
        group_by TEXT NOT NULL DEFAULT '[]',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL)""",
    # Events carry no FOREIGN KEY clauses: ingest validates customer and meter
    # against the cache first, and the per-row FK probes cost ingest throughput.
    # `value` is what the meter aggregates: integer micros, or for unique_count
    # the JSON text of the property value. `matched` records the meter filter,
    # which cannot change once a meter has events.
    # Deduplication: `id_hash` is a 64-bit hash of (customer_id, event_id). Its
    # index holds 8-byte keys instead of the id text, so the one index that new
    # random ids hit at random places stays small enough to live in the page
    # cache (about twice the insert rate of a unique text index at 1 M rows).
    # It is not unique: ingest compares the real ids of any hash match, so a hash
    # collision can never drop an event.
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL,
        event_id TEXT NOT NULL,
        meter_id INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        quantity INTEGER NOT NULL,
        value,
        matched INTEGER NOT NULL,
        properties TEXT,
        late INTEGER NOT NULL DEFAULT 0,
        received_at INTEGER NOT NULL,
        id_hash INTEGER NOT NULL)""",
    "CREATE INDEX events_dedup ON events(id_hash)",
    # covering: usage and the invoice run read (ts, matched, value) from the index
    # alone, never the table rows, so a period costs its own events only
    "CREATE INDEX events_usage ON events(customer_id, meter_id, ts, matched, value)",
    "CREATE INDEX events_time ON events(ts)",
    """CREATE TABLE retracted_events (
        id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        customer_id INTEGER NOT NULL,
        event_id TEXT NOT NULL,
        meter_id INTEGER NOT NULL,
        ts INTEGER NOT NULL,
        quantity INTEGER NOT NULL,
        properties TEXT,
        retracted_at INTEGER NOT NULL,
        retracted_by TEXT NOT NULL)""",
    """CREATE TABLE idempotency_keys (
        actor TEXT NOT NULL,
        key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        status INTEGER NOT NULL,
        response TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (actor, key))""",
    """CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        actor TEXT NOT NULL,
        role TEXT,
        action TEXT NOT NULL,
        entity TEXT NOT NULL,
        entity_id TEXT,
        before TEXT,
        after TEXT,
        request_id TEXT)""",
    "CREATE INDEX audit_log_entity ON audit_log(entity, entity_id)",
]

V2_PLANS = [
    # Prices inside `charges` are exact decimal strings; base fee and
    # commitment are integer minor units of the plan's currency.
    """CREATE TABLE plans (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        description TEXT,
        currency TEXT NOT NULL,
        interval TEXT NOT NULL DEFAULT 'month',
        base_fee INTEGER NOT NULL DEFAULT 0,
        minimum_commitment INTEGER NOT NULL DEFAULT 0,
        trial_days INTEGER NOT NULL DEFAULT 0,
        charges TEXT NOT NULL DEFAULT '[]',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL)""",
    """CREATE TABLE subscriptions (
        id INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL REFERENCES customers(id),
        plan_id INTEGER NOT NULL REFERENCES plans(id),
        status TEXT NOT NULL,
        start_date TEXT NOT NULL,
        end_date TEXT,
        billing_anchor TEXT NOT NULL,
        anchor_date TEXT NOT NULL,
        overrides TEXT NOT NULL DEFAULT '{}',
        coupon TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL)""",
    # one active subscription per customer, enforced by the database itself
    "CREATE UNIQUE INDEX subscriptions_one_active ON subscriptions(customer_id) WHERE status = 'active'",
    "CREATE INDEX subscriptions_plan ON subscriptions(plan_id)",
    """CREATE TABLE coupons (
        id INTEGER PRIMARY KEY,
        code TEXT NOT NULL UNIQUE,
        name TEXT,
        percent_off TEXT,
        amount_off INTEGER,
        currency TEXT,
        duration TEXT NOT NULL,
        periods INTEGER,
        created_at INTEGER NOT NULL,
        CHECK ((percent_off IS NULL) != (amount_off IS NULL)))""",
    # The prepaid credit ledger: positive entries grant, negative ones spend.
    """CREATE TABLE credit_entries (
        id INTEGER PRIMARY KEY,
        customer_id INTEGER NOT NULL REFERENCES customers(id),
        amount INTEGER NOT NULL,
        currency TEXT NOT NULL,
        reason TEXT,
        invoice_id INTEGER,
        created_by TEXT,
        created_at INTEGER NOT NULL)""",
    "CREATE INDEX credit_entries_customer ON credit_entries(customer_id, id)",
    # Invoices: amounts in minor units; the period as UTC instants and as the
    # customer's local dates. One invoice per (subscription, period, revision):
    # the database itself refuses a second draft for a period, whatever races.
    """CREATE TABLE invoices (
        id INTEGER PRIMARY KEY,
        number TEXT UNIQUE,
        customer_id INTEGER NOT NULL REFERENCES customers(id),
        subscription_id INTEGER REFERENCES subscriptions(id),
        status TEXT NOT NULL,
        payment_status TEXT NOT NULL DEFAULT 'unpaid',
        currency TEXT NOT NULL,
        period_start INTEGER NOT NULL,
        period_end INTEGER NOT NULL,
        period_start_date TEXT NOT NULL,
        period_end_date TEXT NOT NULL,
        revision INTEGER NOT NULL DEFAULT 0,
        subtotal INTEGER NOT NULL,
        discount INTEGER NOT NULL,
        tax INTEGER NOT NULL,
        total INTEGER NOT NULL,
        credits_applied INTEGER NOT NULL,
        amount_due INTEGER NOT NULL,
        amount_paid INTEGER NOT NULL DEFAULT 0,
        issued_at INTEGER,
        due_at INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL)""",
    "CREATE UNIQUE INDEX invoices_one_per_period ON invoices(subscription_id, period_start_date, revision)",
    "CREATE INDEX invoices_customer ON invoices(customer_id, id)",
    """CREATE TABLE invoice_lines (
        id INTEGER PRIMARY KEY,
        invoice_id INTEGER NOT NULL REFERENCES invoices(id),
        position INTEGER NOT NULL,
        type TEXT NOT NULL,
        description TEXT NOT NULL,
        meter TEXT,
        quantity TEXT,
        unit_price TEXT,
        amount INTEGER NOT NULL,
        tiers TEXT NOT NULL DEFAULT '[]')""",
    "CREATE INDEX invoice_lines_invoice ON invoice_lines(invoice_id, position)",
]

# The invoice lifecycle (§7, §10): approvals and their history, payments,
# gapless numbers, late-event adjustments, the scheduler's jobs, webhooks and
# the e-mail outbox.
V3_LIFECYCLE = [
    # hold = 1: rejected back to draft; the scheduler leaves it until someone finalizes it
    "ALTER TABLE invoices ADD COLUMN hold INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE invoices ADD COLUMN void_reason TEXT",
    "ALTER TABLE invoices ADD COLUMN voided_at INTEGER",
    # who the invoice was addressed to when issued (name, e-mails, address), kept as issued
    "ALTER TABLE invoices ADD COLUMN bill_to TEXT",
    "CREATE INDEX invoices_status ON invoices(status, period_end)",
    # an adjustment line names the period it corrects: (subscription, local start date)
    "ALTER TABLE invoice_lines ADD COLUMN adjusts_subscription_id INTEGER",
    "ALTER TABLE invoice_lines ADD COLUMN adjusts_period TEXT",
    "CREATE INDEX invoice_lines_adjusts ON invoice_lines(adjusts_subscription_id, adjusts_period)"
    " WHERE adjusts_subscription_id IS NOT NULL",
    # late events are rare: a partial index finds them without slowing ordinary inserts
    "CREATE INDEX events_late ON events(customer_id, ts) WHERE late = 1",
    """CREATE TABLE counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL)""",
    "INSERT INTO counters (name, value) VALUES ('invoice_number', 0)",
    """CREATE TABLE invoice_actions (
        id INTEGER PRIMARY KEY,
        invoice_id INTEGER NOT NULL REFERENCES invoices(id),
        action TEXT NOT NULL,
        from_status TEXT,
        to_status TEXT,
        actor TEXT NOT NULL,
        actor_name TEXT,
        role TEXT NOT NULL,
        comment TEXT,
        created_at INTEGER NOT NULL)""",
    "CREATE INDEX invoice_actions_invoice ON invoice_actions(invoice_id, id)",
    """CREATE TABLE payments (
        id INTEGER PRIMARY KEY,
        invoice_id INTEGER NOT NULL REFERENCES invoices(id),
        amount INTEGER NOT NULL CHECK (amount > 0),
        currency TEXT NOT NULL,
        method TEXT,
        reference TEXT,
        created_by TEXT NOT NULL,
        created_at INTEGER NOT NULL)""",
    "CREATE INDEX payments_invoice ON payments(invoice_id, id)",
    """CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        outcome TEXT NOT NULL,
        details TEXT NOT NULL DEFAULT '{}')""",
    """CREATE TABLE webhooks (
        id INTEGER PRIMARY KEY,
        url TEXT NOT NULL,
        events TEXT NOT NULL,
        secret TEXT NOT NULL,
        description TEXT,
        created_at INTEGER NOT NULL,
        deleted_at INTEGER)""",
    """CREATE TABLE webhook_deliveries (
        id INTEGER PRIMARY KEY,
        webhook_id INTEGER NOT NULL REFERENCES webhooks(id),
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        last_status_code INTEGER,
        last_error TEXT,
        created_at INTEGER NOT NULL,
        delivered_at INTEGER)""",
    "CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at) WHERE status = 'pending'",
    "CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id, id)",
    """CREATE TABLE webhook_attempts (
        id INTEGER PRIMARY KEY,
        delivery_id INTEGER NOT NULL REFERENCES webhook_deliveries(id),
        attempted_at INTEGER NOT NULL,
        status_code INTEGER,
        response TEXT,
        error TEXT,
        duration_ms INTEGER NOT NULL)""",
    "CREATE INDEX webhook_attempts_delivery ON webhook_attempts(delivery_id, id)",
    """CREATE TABLE emails (
        id INTEGER PRIMARY KEY,
        invoice_id INTEGER REFERENCES invoices(id),
        recipient TEXT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER,
        last_error TEXT,
        delivered_to TEXT,
        created_at INTEGER NOT NULL,
        sent_at INTEGER)""",
    "CREATE INDEX emails_due ON emails(next_attempt_at) WHERE status = 'pending'",
]

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

MIGRATIONS = [V1_FOUNDATION, V2_PLANS, V3_LIFECYCLE, V4_RESOURCES, V5_STORAGE, V6_ANALYTICS, V7_REVENUE_LOG,
              V8_ALERTS]


class MigrationError(RuntimeError):
    pass


def current_version(conn):
    return conn.execute("PRAGMA user_version").fetchone()[0]


def migrate(conn, migrations=None):
    """Bring the schema to the latest version; returns the versions applied."""
    migrations = MIGRATIONS if migrations is None else migrations
    applied = []
    version = current_version(conn)
    if version > len(migrations):
        raise MigrationError(
            f"database schema version {version} is newer than this program ({len(migrations)})")
    for number, statements in enumerate(migrations[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                if callable(statement):
                    statement(conn)
                else:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {int(number)}")
        except BaseException as exc:
            conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise MigrationError(f"migration {number} failed: {exc}") from exc
            raise
        conn.execute("COMMIT")
        applied.append(number)
    return applied
